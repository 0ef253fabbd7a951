// Devices beyond the Status plug, end to end: `flash.ts recipe DEVICE` writes a recipe from cloudcutter's device
// file, and that recipe flashes a simulated device wired as the same file says (relays, buttons, LEDs, PWM light
// channels, an I2C LED driver), with the pin check driving each pin and the virtual user saying what it saw.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { startBench, startChild, runInProcess, type Bench } from './workbench.ts';
import { startSimPlug, wiringFromDevice, type Wiring } from './sim/plug.ts';
import { virtualUser } from './virtual-user.ts';
import { generateRecipe, type DeviceFile } from '../flash.ts';
import { fixtureDevices, fixtureProfile, tempDir } from './helpers.ts';

/** Every fixture device that yields a recipe, with what the generator makes of it. */
const GENERATED = fixtureDevices().flatMap((device) => {
  const got = generateRecipe(device, fixtureProfile(device));
  return got.ok ? [{ slug: device.slug, device, got, recipe: YAML.parse(got.recipe) }] : [];
});
const generatedFor = (slug: string) => GENERATED.find((g) => g.slug === slug)!;
const wiringOf = (device: DeviceFile) => wiringFromDevice(device);
/**
 * ESPHome on the workbench: 2025.5.1, a release every generated recipe can use (2025.5.0 sends every TuyaMCU select
 * to datapoint 1, and the check step refuses it for them).
 */
const ESPHOME = { version: '2025.5.1' };

/** A generated recipe and its template written to a fresh directory; returns the recipe's file. */
function writeGenerated(g: (typeof GENERATED)[number], prefix: string): string {
  const dir = tempDir(prefix);
  fs.writeFileSync(path.join(dir, `${g.slug}.yaml`), g.got.recipe);
  fs.writeFileSync(path.join(dir, `${g.slug}.esphome.yaml`), g.got.template);
  return path.join(dir, `${g.slug}.yaml`);
}

/**
 * A bench whose simulated device is wired as the device file says, on the recipe's chip, and the recipe written
 * by flash.ts's own recipe command (what a user runs) into a directory of its own.
 */
async function benchFor(slug: string, wiring?: (w: Wiring) => Wiring): Promise<Bench & { file: string; recipe: any }> {
  const g = generatedFor(slug);
  const w = wiringOf(g.device);
  const b = await startBench({ mcu: g.recipe.mcu, uniqueName: true, sim: { wiring: wiring ? wiring(w) : w },
    fakes: { esphome: ESPHOME } });
  const dir = tempDir('flash-recipes-');
  const r = await runInProcess(['recipe', slug, '--recipes', dir, '--yes'], b.env);
  assert.equal(r.code, 0, r.out);
  const file = path.join(dir, `${slug}.yaml`);
  return Object.assign(b, { file, recipe: YAML.parse(fs.readFileSync(file, 'utf8')) });
}

/** An entity's state on the simulated device once it has one (the BL0942 is polled after boot). */
function stateOf(device: NonNullable<Bench['sim']['device']>, name: string): Promise<unknown> {
  const now = device.entity(name)?.state();
  if (now !== undefined) return Promise.resolve(now);
  return new Promise((resolve) => device.events.on('state', (e: { name: string; state(): unknown }) => {
    if (e.name === name && e.state() !== undefined) resolve(e.state());
  }));
}

/** The pin check's result lines: function -> [✓/✗, what was seen]. */
function pinLines(out: string): Record<string, [string, string]> {
  const lines = [...out.matchAll(/^\s*([✓✗·]) (\w+)\s+(P\d+)\s+(.*)$/gm)];
  return Object.fromEntries(lines.map((m) => [m[2], [m[1], m[4]]]));
}

const flows: [string, string, (b: Bench & { recipe: any }, out: string) => void | Promise<void>][] = [
  ['a 4-socket strip with energy metering', 'ledvance-smartplus-eu-multi-socket-power-strip', (b, out) => {
    const seen = pinLines(out);
    for (const relay of ['relay1', 'relay2', 'relay3', 'relay4'])
      assert.deepEqual(seen[relay], ['✓', 'the relay clicked']);
    assert.deepEqual(seen.button_all, ['✓', 'press seen']);
    assert.equal(seen.cf[0], '·'); // the energy chip's pins are named, not driven
    assert.equal(b.sim.final?.name, b.name);
  }],
  ['a 2-gang wall switch with two buttons and two LEDs', 'lonsonho-x802a-l-2-gang-switch', (_b, out) => {
    const seen = pinLines(out);
    assert.deepEqual(seen.relay1, ['✓', 'the relay clicked']);
    assert.deepEqual(seen.relay2, ['✓', 'the relay clicked']);
    assert.deepEqual(seen.led1, ['✓', 'a blue LED']);
    assert.deepEqual(seen.button1, ['✓', 'press seen']);
    assert.deepEqual(seen.button2, ['✓', 'press seen']);
  }],
  ['an RGBWW bulb on PWM', 'abie-g99631-05-rgbw-led-lamp', (b, out) => {
    const seen = pinLines(out);
    assert.deepEqual(Object.fromEntries(['red', 'green', 'blue', 'cold', 'warm'].map((c) => [c, seen[c]])), {
      red: ['✓', 'red'], green: ['✓', 'green'], blue: ['✓', 'blue'], cold: ['✓', 'cold white'],
      warm: ['✓', 'warm white'] });
    assert.equal(b.recipe.mcu, 'bk7231t'); // a WB3L module
  }],
  ['an RGBCT bulb on an SM2135 LED driver', 'amico-g1-tp120-9-a19-rgbct-bulb', (_b, out) => {
    const seen = pinLines(out);
    assert.equal(seen.clock[0], '·');
    assert.equal(seen.data[0], '·');
  }],
  ['a DIN-rail switch with a latching relay and a BL0942', 'tongou-to-q-sy1-jwt-din-rail-switch-with-energy-meter',
    (b, out) => {
      const seen = pinLines(out);
      // Each coil pin pulsed once, the relay heard to click; the energy chip's serial lines left alone.
      assert.deepEqual([seen.relay_on, seen.relay_off], [['✓', 'the relay clicked'], ['✓', 'the relay clicked']]);
      assert.equal(seen.energy_rx[0], '·');
      assert.equal(seen.energy_tx[0], '·');
      // The flashed firmware pulses the relay and reads the BL0942 as ESPHome does.
      const device = b.sim.device!;
      assert.deepEqual(device.unsupported, []);
      return stateOf(device, 'Voltage').then((volts) =>
        assert.ok(typeof volts === 'number' && volts > 200 && volts < 260, `voltage ${volts}`));
    }],
  ['a relay module with a wall-switch input', 'tuya-generic-mini-smart-switch', (b, out) => {
    assert.deepEqual(pinLines(out).wall_switch, ['✓', 'flip seen']);
    // In the flashed firmware a flip of the wall switch toggles the relay, in either position.
    const pin = Object.keys(b.sim.wiring.wallSwitches ?? {})[0];
    const before = b.sim.hardware.relays[1];
    b.sim.flipSwitch(pin);
    return b.sim.waitForHardware((h) => h.relays[1] !== before);
  }],
  ['a TuyaMCU dimmer', 'moes-ms-105-dimmer-switch', (b, out) => {
    assert.match(out, /nothing here can be checked pin by pin \(the device's own MCU drives its hardware\)/);
    assert.match(out, /✓ the MCU answered: /);
    assert.deepEqual(b.sim.device!.unsupported, []);
  }],
];

for (const [what, slug, expect] of flows) {
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

// Every device file that yields a recipe: its pin check, on a device wired as the file says and already on
// Kickstart, drives each relay, LED and light channel and sees each button pressed.
for (const g of GENERATED) {
  const { slug, got, recipe } = g;
  test(`pin check of the generated ${slug} recipe on its simulated device`, async () => {
    const file = writeGenerated(g, 'flash-pins-');
    const sim = await startSimPlug({ mcu: recipe.mcu, phase: 'kickstart-lan', mdnsInterface: false,
      wiring: wiringOf(g.device) });
    const user = virtualUser(sim);
    try {
      const r = await runInProcess([file, '--only', 'pins', '--check-pins', '--device-ip', `127.0.0.1:${sim.port}`,
        '--out', path.join(path.dirname(file), 'esphome')], { NO_COLOR: '1' }, user);
      assert.equal(r.code, 0, r.out);
      const seen = pinLines(r.out);
      for (const [fn, pin] of Object.entries(recipe.pins as Record<string, string>)) {
        assert.ok(seen[fn], `the pin check said nothing of ${fn} on ${pin}:\n${r.out}`);
        const [mark, saw] = seen[fn];
        if (mark === '·') continue; // metering, LED-driver bus, colour temperature: named, not driven
        assert.equal(mark, '✓', `${fn} on ${pin}: ${saw}`);
        if (/^relay/.test(fn)) assert.equal(saw, 'the relay clicked');
        if (/^button/.test(fn)) assert.equal(saw, 'press seen');
      }
      // An LED driver's bus cannot be checked pin by pin: the run says so rather than that all is well.
      const checked = Object.values(seen).some(([mark]) => mark === '✓');
      assert.match(r.out, checked ? /✓ every pin does what the recipe says/
        : /nothing here can be checked pin by pin/);
      const checkable = Object.keys(recipe.pins).some((fn) => !/^(clock|data|uart_rx|uart_tx)$/.test(fn));
      assert.equal(checked, checkable, r.out);
    } finally {
      user.stop();
      await sim.close();
    }
  });
}

// Every other device file that yields a recipe, flashed end to end (with --yes: its pins were checked above), each
// flash.ts in a process of its own so several run at once, each on its own simulated device and fake tools.
const flashedAbove = new Set(flows.map(([, slug]) => slug));
describe('full flow of every other generated recipe', { concurrency: 3 }, () => {
  for (const g of GENERATED.filter((x) => !flashedAbove.has(x.slug))) {
    test(g.slug, async () => {
      const file = writeGenerated(g, 'flash-recipes-');
      const b = await startBench({ mcu: g.recipe.mcu, uniqueName: true, sim: { wiring: wiringOf(g.device) },
        fakes: { esphome: ESPHOME }, env: g.got.mapping.kinds.includes('TuyaMCU') ? { FLASH_MCU_TIMEOUT_MS: '8000' } : {} });
      try {
        const run = startChild([file, ...b.args, '--yes'], b.env, b.user);
        const code = await run.exited;
        // A battery sensor's MCU speaks Tuya's low-power protocol: ESPHome runs, the MCU stays silent, and verify
        // says so (the recipe warned).
        if (/lowpower/.test(g.device.profiles[0].slug)) {
          assert.equal(code, 1, run.output());
          assert.match(run.output(), /runs ESPHome, but its MCU reported nothing within/);
          assert.match(g.got.recipe, /low-power serial protocol/);
          return;
        }
        assert.equal(code, 0, run.output());
        assert.deepEqual([...run.output().matchAll(/^\[\d\/\d\] (\w+)/gm)].map((m) => m[1]),
          ['check', 'config', 'compile', 'cloudcutter', 'kickstart', 'upload', 'verify']);
        assert.equal(b.sim.phase, 'final');
        assert.equal(b.sim.final?.name, b.name);
        assert.match(run.output(), new RegExp(`✓ ${b.name} runs ESPHome: done\\.`));
      } finally {
        await b.close();
      }
    });
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
