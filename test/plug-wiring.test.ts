// The plug's own wiring, read from Tuya's storage on its flash once Kickstart runs (only the part the storage lies
// in), and held against the recipe before anything else is sent to the plug: the same goes on; a difference stops,
// writes the plug's version beside the recipe and, with a person there, offers to use it; no storage goes on with the
// recipe's pins; a resumed run does not read it again; and a recipe whose pins are to come from the plug gets them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { startBench, runInProcess, journalOf } from './workbench.ts';
import { copyRecipes, fixtureDevices, fixtureProfile, tempDir } from './helpers.ts';
import { SEED_WIRING, wiringFromDevice } from './sim/plug.ts';
import { typicalTuyaValues } from './sim/tuya-storage.ts';
import { TUYA_STORAGE_WINDOW, generateRecipe, tuyaKeyDifferences } from '../flash.ts';

/** The Status 23A, but a board revision whose relay moved from P24 to P26. */
const MOVED = { ...SEED_WIRING.bk7231n, relay: 'P26' };

test('the plug\'s wiring is the recipe\'s: said in one line, and read only where the storage lies', async () => {
  const b = await startBench({ uniqueName: true });
  try {
    const r = await runInProcess(['recipes/23A.yaml', ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    // A hand-written recipe names its LEDs its own way: they are compared by what they are.
    assert.match(r.out, /✓ the plug's own wiring \(Tuya's storage on its flash\) is the recipe's: button P8, relay P24/);
    const read = b.sim.flashReads.reduce((n, [, length]) => n + length, 0);
    assert.equal(read, TUYA_STORAGE_WINDOW.length, 'only the 192 KiB the storage lies in, not the 2 MiB flash');
    assert.equal((journalOf(b).facts as Record<string, any>).plugWiring?.found, true);
  } finally {
    await b.close();
  }
});

test('a plug wired differently: stop before anything is sent, name each difference, write the plug\'s version ' +
  'beside; the run resumed with --check-pins does not read the flash again and lets the pin check decide', async () => {
  const dir = copyRecipes();
  const recipe = path.join(dir, '23A.yaml');
  const before = fs.readFileSync(recipe, 'utf8');
  const b = await startBench({ uniqueName: true, sim: { wiring: MOVED } });
  try {
    const r = await runInProcess([recipe, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /the plug's own wiring \(Tuya's storage on its flash\) differs from the recipe:\n\s+relay: recipe P24, plug P26/);
    assert.equal(b.sim.uploads.length, 0, 'nothing uploaded');
    assert.equal(fs.readFileSync(recipe, 'utf8'), before, '--yes never touches the recipe');
    const plugVersion = path.join(dir, '23A.plug.yaml');
    assert.equal(YAML.parse(fs.readFileSync(plugVersion, 'utf8')).pins.relay, 'P26');
    assert.match(r.out, /kickstart failed: the plug is wired differently from .*23A\.yaml \(relay: recipe P24, plug P26\)/);
    // The way on: the plug's version, or the pin check deciding.
    assert.match(r.out, /use the plug's version: npx tsx flash\.ts .*23A\.plug\.yaml/);
    assert.match(r.out, /prove the recipe's pins on the plug: .*--check-pins/);
    const reads = b.sim.flashReads.length;
    const again = await runInProcess([recipe, ...b.args, '--check-pins'], b.env, b.user);
    assert.equal(b.sim.flashReads.length, reads, 'the journal had what was read');
    assert.match(again.out, /--check-pins: the pin check tries the recipe's pins on the plug; what you see decides/);
    // The recipe's relay pin switches nothing on this board: the pin check says so.
    assert.equal(again.code, 1, again.out);
    assert.match(again.out, /relay \(P24\): nothing/);
  } finally {
    await b.close();
  }
});

test('with a person there, the plug\'s wiring can become the recipe: the run goes on with it to a verified plug',
  async () => {
    const dir = copyRecipes();
    const recipe = path.join(dir, '23A.yaml');
    const b = await startBench({ uniqueName: true, sim: { wiring: MOVED },
      answers: { plug_wiring: (q) => q.choices![0] } });
    try {
      const r = await runInProcess([recipe, ...b.args], b.env, b.user);
      assert.equal(r.code, 0, r.out);
      assert.equal(YAML.parse(fs.readFileSync(recipe, 'utf8')).pins.relay, 'P26');
      assert.ok(fs.existsSync(`${recipe}.orig`), 'the old recipe is kept');
      // Built anew with the plug's pins: the flashed relay is the one on P26.
      assert.equal(b.sim.phase, 'final');
      await b.sim.waitForDevice();
      const relay = b.sim.device!.entities().find((e) => e.domain === 'switch');
      assert.ok(relay, 'the relay is an entity of the flashed firmware');
      assert.match(r.out, /runs ESPHome: done\./);
    } finally {
      await b.close();
    }
  });

test('a plug whose storage is gone: said, and the run goes on with the recipe\'s pins', async () => {
  const b = await startBench({ uniqueName: true, sim: { storage: null } });
  try {
    const r = await runInProcess(['recipes/23A.yaml', ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /· the plug's own wiring: no Tuya storage on its flash \(no Tuya storage in it/);
  } finally {
    await b.close();
  }
});

test('a plug nobody listed: `recipe --profile --name` writes a recipe whose pins the run reads from the plug', async () => {
  const dir = tempDir('flash-recipes-');
  const b = await startBench({ uniqueName: true });
  try {
    const made = await runInProcess(['recipe', '--profile', '1.1.8 - BK7231N / oem_bk7231n_plug', '--name',
      'Kitchen Plug', '--recipes', dir, '--yes'], b.env);
    assert.equal(made.code, 0, made.out);
    const recipe = path.join(dir, 'kitchen-plug.yaml');
    assert.equal(YAML.parse(fs.readFileSync(recipe, 'utf8')).wiring, 'from the plug');
    // The plan says the compile waits for the pins.
    const plan = await runInProcess([recipe, ...b.args, '--dry-run'], b.env);
    assert.equal(plan.code, 0, plan.out);
    assert.deepEqual([...plan.out.matchAll(/^\[\d\/\d\] (\w+)/gm)].map((m) => m[1]),
      ['check', 'cloudcutter', 'kickstart', 'config', 'compile', 'upload', 'verify']);
    const r = await runInProcess([recipe, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    const written = YAML.parse(fs.readFileSync(recipe, 'utf8'));
    assert.deepEqual(written.pins, { relay: 'P24', led1: 'P7', button: 'P8', status_led: 'P6' });
    assert.equal(written.wiring, undefined);
    assert.ok(fs.existsSync(path.join(dir, written.esphome)));
    assert.match(r.out, /the pins come from the plug: .*kitchen-plug\.yaml now has the plug's wiring/);
    assert.equal(b.sim.final?.name, b.name);
  } finally {
    await b.close();
  }
});

test('a generated recipe keeps the Tuya keys it was made from, and is held against the plug\'s key by key: a level ' +
  'that differs stops the run though every pin is the same', async () => {
  const device = fixtureDevices().find((d) => d.slug === 'minoston-mp22wp-outdoor-plug')!;
  const made = generateRecipe(device, fixtureProfile(device));
  assert.ok(made.ok);
  const dir = tempDir('flash-recipes-');
  const recipe = path.join(dir, `${made.slug}.yaml`);
  fs.writeFileSync(recipe, made.recipe);
  fs.writeFileSync(path.join(dir, `${made.slug}.esphome.yaml`), made.template);
  assert.deepEqual(YAML.parse(made.recipe).tuya.rl1_lv, 1);
  // This plug's relay is driven active low: same pins, another level.
  const keys = { ...device.device_configuration, rl1_lv: 0 };
  const b = await startBench({ uniqueName: true, mcu: 'bk7231n',
    sim: { wiring: wiringFromDevice(device), storage: typicalTuyaValues(keys) } });
  try {
    const r = await runInProcess([recipe, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /differs from the recipe:\n\s+rl1_lv: recipe 1, plug 0\n/);
    assert.equal(b.sim.uploads.length, 0, 'nothing uploaded');
  } finally {
    await b.close();
  }
});

test('key by key: only the keys of the wiring count, and a level not written is active high', () => {
  assert.deepEqual(tuyaKeyDifferences({ rl1_pin: 24, rl1_lv: 1, pmemory: 1, cmod: 'rgbcw' },
    { rl1_pin: 26, pmemory: 0, cmod: 'rgbc', bt1_pin: 8 }),
  ['bt1_pin: recipe none, plug 8', 'cmod: recipe rgbcw, plug rgbc', 'rl1_pin: recipe 24, plug 26']);
});
