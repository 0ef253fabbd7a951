// What the device tests share: every fixture device that yields a recipe, the recipe flash.ts generates for it, a
// bench wired as its device file says, and the pin check's lines read back. devices.test.ts flashes a few kinds end to
// end with every pin checked, devices-pins.test.ts checks the pins of every generated recipe, devices-full.test.ts
// flashes every other one end to end (three files, so they run beside each other).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { startBench, runInProcess, type Bench } from './workbench.ts';
import { wiringFromDevice, type Wiring } from './sim/plug.ts';
import { generateRecipe } from '../flash.ts';
import { fixtureDevices, fixtureProfile, tempDir } from './helpers.ts';

/** Every fixture device that yields a recipe, with what the generator makes of it. */
export const GENERATED = fixtureDevices().flatMap((device) => {
  const got = generateRecipe(device, fixtureProfile(device));
  return got.ok ? [{ slug: device.slug, device, got, recipe: YAML.parse(got.recipe) }] : [];
});
export const generatedFor = (slug: string) => GENERATED.find((g) => g.slug === slug)!;
/**
 * ESPHome on the workbench: 2025.5.1, a release every generated recipe can use (2025.5.0 sends every TuyaMCU select
 * to datapoint 1, and the check step refuses it for them).
 */
export const ESPHOME = { version: '2025.5.1' };

/** A generated recipe and its template written to a fresh directory; returns the recipe's file. */
export function writeGenerated(g: (typeof GENERATED)[number], prefix: string): string {
  const dir = tempDir(prefix);
  fs.writeFileSync(path.join(dir, `${g.slug}.yaml`), g.got.recipe);
  fs.writeFileSync(path.join(dir, `${g.slug}.esphome.yaml`), g.got.template);
  return path.join(dir, `${g.slug}.yaml`);
}

/**
 * A bench whose simulated device is wired as the device file says, on the recipe's chip, and the recipe written
 * by flash.ts's own recipe command (what a user runs) into a directory of its own.
 */
export async function benchFor(slug: string, wiring?: (w: Wiring) => Wiring): Promise<Bench & { file: string; recipe: any }> {
  const g = generatedFor(slug);
  const w = wiringFromDevice(g.device);
  const b = await startBench({ mcu: g.recipe.mcu, uniqueName: true, sim: { wiring: wiring ? wiring(w) : w },
    fakes: { esphome: ESPHOME } });
  const dir = tempDir('flash-recipes-');
  const r = await runInProcess(['recipe', slug, '--recipes', dir, '--yes'], b.env);
  assert.equal(r.code, 0, r.out);
  const file = path.join(dir, `${slug}.yaml`);
  return Object.assign(b, { file, recipe: YAML.parse(fs.readFileSync(file, 'utf8')) });
}

/** An entity's state on the simulated device once it has one (the BL0942 is polled after boot). */
export function stateOf(device: NonNullable<Bench['sim']['device']>, name: string, timeoutMs = 30_000):
  Promise<unknown> {
  const now = device.entity(name)?.state();
  if (now !== undefined) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const check = (e: { name: string; state(): unknown }) => {
      if (e.name !== name || e.state() === undefined) return;
      done();
      resolve(e.state());
    };
    const timer = setTimeout(() => (done(), reject(new Error(`${name} had no state within ${timeoutMs} ms`))),
      timeoutMs);
    const done = () => (clearTimeout(timer), device.events.off('state', check));
    device.events.on('state', check);
  });
}

/** The pin check's result lines: function -> [✓/✗, what was seen]. */
export function pinLines(out: string): Record<string, [string, string]> {
  const lines = [...out.matchAll(/^\s*([✓✗·]) (\w+)\s+(P\d+)\s+(.*)$/gm)];
  return Object.fromEntries(lines.map((m) => [m[2], [m[1], m[4]]]));
}

/**
 * The kinds of device devices.test.ts flashes end to end with every pin checked, and what it then expects of each
 * (devices-full.test.ts flashes every other generated recipe).
 */
export const FLOWS: [string, string, (b: Bench & { recipe: any }, out: string) => void | Promise<void>][] = [
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
