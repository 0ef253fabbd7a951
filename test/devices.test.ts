// Devices beyond the Status plug, end to end: `flash.ts recipe DEVICE` writes a recipe from cloudcutter's device
// file, and that recipe flashes a simulated device wired as the same file says (relays, buttons, LEDs, PWM light
// channels, an I2C LED driver), with the pin check driving each pin and the virtual user saying what it saw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import YAML from 'yaml';
import { startBench, runInProcess } from './workbench.ts';
import { ESPHOME, FLOWS, benchFor, generatedFor, pinLines, writeGenerated } from './devices.ts';

for (const [what, slug, expect] of FLOWS) {
  test(`${what} (${slug}): recipe generated, flashed, every pin checked, verified`, async () => {
    const b = await benchFor(slug);
    try {
      const r = await runInProcess([b.file, ...b.args, '--check-pins'], b.env, b.user);
      assert.equal(r.code, 0, r.out);
      const steps = [...r.out.matchAll(/^\[\d\/\d\] (\w+)/gm)].map((m) => m[1]);
      assert.deepEqual(steps, ['check', 'config', 'compile', 'cloudcutter', 'kickstart', 'pins', 'upload', 'verify']);
      assert.equal(b.world.calls('tuya-cloudcutter.sh')[0].argv[1], slug);
      assert.equal(b.sim.phase, 'final');
      assert.equal(b.sim.uploads.at(-1)?.result, 'Update Successful!');
      const seen = pinLines(r.out);
      for (const fn of Object.keys(b.recipe.pins)) assert.ok(seen[fn], `the pin check said nothing of ${fn}`);
      assert.ok(!Object.values(seen).some(([mark]) => mark === '✗'), r.out);
      await expect(b, r.out);
    } finally {
      await b.close();
    }
  });
}

test('a bulb whose red and green are swapped: the pin check puts them right in the recipe, the next run passes',
  async () => {
    const slug = 'abie-g99631-05-rgbw-led-lamp';
    // The recipe says red P24, green P9; this bulb is wired the other way round.
    const b = await benchFor(slug, (w) => ({ ...w, channels: { ...w.channels, P24: 'green', P9: 'red' } }));
    try {
      const first = await runInProcess([b.file, ...b.args, '--check-pins'], b.env, b.user);
      assert.equal(first.code, 1, first.out);
      assert.match(first.out, /the recipe now has red: P9, green: P24/);
      assert.equal(b.sim.uploads.length, 0, 'nothing uploaded with the wrong pins');
      assert.deepEqual(YAML.parse(fs.readFileSync(b.file, 'utf8')).pins.red, 'P9');
      const again = /run again[^:]*: (npx tsx flash\.ts .*)$/m.exec(first.out)?.[1];
      assert.ok(again?.includes('--check-pins'), first.out);
      const second = await runInProcess([b.file, ...b.args, '--check-pins'], b.env, b.user);
      assert.equal(second.code, 0, second.out);
      assert.deepEqual(pinLines(second.out).red, ['✓', 'red']);
      assert.equal(b.sim.phase, 'final');
    } finally {
      await b.close();
    }
  });

test('the check step refuses an ESPHome that cannot run the recipe: too old for an hbridge switch, 2025.5.0 for a ' +
  'TuyaMCU select', async () => {
  for (const [slug, version, says] of [
    ['tongou-to-q-sy1-jwt-din-rail-switch-with-energy-meter', '2024.10.3',
      /2024\.10\.3 cannot do a latching relay \(the hbridge switch\): it needs ESPHome 2024\.12\.0 or later/],
    ['moes-ms-105-dimmer-switch', '2025.5.0', /2025\.5\.0 cannot do a TuyaMCU select: it needs any release but 2025\.5\.0/],
  ] as const) {
    const g = generatedFor(slug);
    const file = writeGenerated(g, 'flash-esphome-');
    const b = await startBench({ mcu: g.recipe.mcu, uniqueName: true, fakes: { esphome: { version } } });
    try {
      const r = await runInProcess([file, ...b.args, '--yes', '--only', 'check'], b.env);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, says);
      assert.match(r.out, /pipx upgrade esphome/);
    } finally {
      await b.close();
    }
  }
});
