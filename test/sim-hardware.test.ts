// The simulated board's new hardware, as unkind as the real one: a latching relay that moves only on a long enough
// pulse of one coil side and keeps its place without power, wall switches that stay where they are flipped, the
// wiring read from cloudcutter's device files (latching relays, wall switches, keys, the reset button, UART energy
// chips, a TuyaMCU and its datapoints). flash.ts's pin check against it: test/sim-user.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LatchingRelay, LATCH_MIN_PULSE_MS } from './sim/board.ts';
import { ManualClock } from './sim/uart-line.ts';
import {
  PIN_OPTIONS, startSimPlug, wiringFromDevice, wiringFromTuya, type SimPlug, type SimPlugOptions, type Wiring,
} from './sim/plug.ts';
import { fixtureDevices } from './helpers.ts';

const device = (slug: string) => fixtureDevices().find((d) => d.slug === slug)!;

async function withSim(o: Partial<SimPlugOptions>, fn: (sim: SimPlug) => Promise<void>): Promise<void> {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, bootMs: 20, ...o });
  try {
    await fn(sim);
  } finally {
    await sim.close();
  }
}

/** Kickstart's pin scanner by HTTP, as flash.ts drives it. */
async function scan(sim: SimPlug, pin: string, mode: string): Promise<void> {
  const option = PIN_OPTIONS.find((o) => o.split(' / ')[0] === pin)!;
  for (const [id, value] of [['-__pin', option], ['-__pin_mode', mode]]) {
    const r = await fetch(`${sim.url}/select/${id}/set?option=${encodeURIComponent(value)}`, { method: 'POST' });
    assert.equal(r.status, 200);
  }
}
const pinState = async (sim: SimPlug) =>
  ((await (await fetch(`${sim.url}/text_sensor/-__pin_state`)).json()) as { state: string }).state;

test('latching relay: a pulse of one side moves it; too short, both sides or holding on do nothing more', () => {
  const clock = new ManualClock();
  const moves: boolean[] = [];
  const relay = new LatchingRelay({ clock, onChange: (closed) => moves.push(closed) });
  assert.equal(LATCH_MIN_PULSE_MS, 15);
  // A pulse shorter than the set time: the armature does not get there.
  relay.drive(true, false);
  clock.advance(LATCH_MIN_PULSE_MS - 1);
  relay.drive(false, false);
  clock.advance(100);
  assert.deepEqual([relay.closed, moves], [false, []]);
  // Long enough: it closes while the pulse is still on; holding the side on for a second changes nothing more.
  relay.drive(true, false);
  clock.advance(LATCH_MIN_PULSE_MS);
  assert.equal(relay.closed, true);
  clock.advance(1000);
  relay.drive(false, false);
  assert.deepEqual(moves, [true]);
  // Setting a set relay again is silent (no click); both sides at once is no current through the coil.
  relay.drive(true, false);
  clock.advance(100);
  relay.drive(false, false);
  relay.drive(true, true);
  clock.advance(100);
  relay.drive(false, false);
  assert.deepEqual([relay.closed, moves], [true, [true]]);
  // The reset side opens it.
  relay.drive(false, true);
  clock.advance(100);
  relay.drive(false, false);
  assert.deepEqual([relay.closed, moves], [false, [true, false]]);
  relay.close();
  assert.equal(clock.pending, 0);
});

test('wiring from device files: latching relays, wall switches, keys, reset button, UART energy chips, TuyaMCU', () => {
  const tongou = wiringFromTuya(device('tongou-to-q-sy1-jwt-din-rail-switch-with-energy-meter').device_configuration);
  assert.deepEqual(tongou.latching, { 1: { set: 'P24', reset: 'P26', driveMs: 60 } });
  assert.equal(tongou.relays, undefined, 'no rl1_pin: the relay is only the latching one');
  assert.deepEqual(tongou.energyChip, { chip: 'BL0942', rx: 'P10', tx: 'P11' });
  assert.deepEqual(tongou.buttons, { P17: 1 });
  const mini = wiringFromTuya(device('tuya-generic-mini-smart-switch').device_configuration);
  assert.deepEqual([mini.wallSwitches, mini.buttons, mini.relays], [{ P26: 1 }, { P8: 0 }, { P24: 1 }]);
  assert.deepEqual(wiringFromTuya(device('tuya-generic-mod003-2-channel-smart-relay').device_configuration)
    .wallSwitches, { P24: 1, P26: 2 });
  const cree = wiringFromTuya(device('cree-cmtp80-al-8ack-wh-kit-smart-tape-light-strip').device_configuration);
  assert.deepEqual([cree.keys, cree.buttons], [{ P14: 1, P16: 2, P15: 3, P17: 4 }, { P14: 1, P16: 2, P15: 3, P17: 4 }]);
  assert.deepEqual(wiringFromTuya(device('deta-6920ha-double-touch-outlet-v1.1.4').device_configuration).energyChip,
    { chip: 'HLW8032', rx: 'P10' });
  assert.deepEqual(wiringFromTuya(device('nous-a1-smart-plug').device_configuration).energyChip,
    { chip: 'BL0942', rx: 'P10', tx: 'P11' });
  // Keys Tuya writes into other configurations: the energy chip's own UART pins, active-low coils, a reset button.
  assert.deepEqual(wiringFromTuya({ chip_type: 3, ele_rx: 1, ele_tx: 0, rl_on1_pin: 6, rl_on1_lv: 0, rl_off1_pin: 7,
    rl_off1_lv: 0, bt1_pin: 8, reset_pin: 9 }), {
    buttons: { P8: 1, P9: 2 }, button: 'P8', resetButton: 'P9', latching: { 1: { set: 'P6', reset: 'P7' } },
    energyChip: { chip: 'BL0942', rx: 'P1', tx: 'P0' }, activeLow: ['P6', 'P7'],
  });
  // A touch switch naming its relay pin as the "on" pin too: an ordinary relay, nothing latching.
  assert.equal(wiringFromTuya({ rl1_pin: 6, rl_on1_pin: 6, rl_off1_pin: 7 }).latching, undefined);

  // TuyaMCU devices: the baud rate cloudcutter gives, every datapoint of the schema at a value its MCU accepts.
  const dimmer = wiringFromDevice(device('moes-ms-105-dimmer-switch'));
  assert.equal(dimmer.tuyaMcu?.baud, 9600);
  assert.deepEqual(dimmer.tuyaMcu?.datapoints.map((d) => [d.id, d.type, d.value]),
    [[1, 'bool', false], [2, 'value', 505], [3, 'value', 505], [4, 'enum', 0], [6, 'value', 43200]]);
  assert.equal(wiringFromDevice(device('treatlife-ds02f-fan-controller')).tuyaMcu?.baud, 115200);
  const sensor = wiringFromDevice(device('tuya-generic-temperature-and-humidity-sensor-v1.0.10')).tuyaMcu!;
  // A battery sensor on Tuya's low-power firmware: its MCU speaks the low-power protocol, with no heartbeat.
  assert.deepEqual(sensor.options, { ignoreCommands: [0x00] });
  assert.equal(dimmer.tuyaMcu?.options, undefined);
  for (const d of sensor.datapoints.filter((x) => x.type === 'value')) {
    assert.ok((d.value as number) >= d.min! && (d.value as number) <= d.max!, `datapoint ${d.id}: ${d.value}`);
  }
  assert.deepEqual(sensor.datapoints.find((d) => d.id === 1), { id: 1, type: 'value', mode: 'ro', value: 200,
    min: -200, max: 600, scale: 1 });
  const breaker = wiringFromDevice(device('earu-eampdw-ty63-circuit-breaker')).tuyaMcu!;
  assert.deepEqual(breaker.datapoints.find((d) => d.id === 6)?.value, Buffer.alloc(8));
  assert.deepEqual(breaker.datapoints.find((d) => d.id === 9), { id: 9, type: 'bitmap', mode: 'ro', value: 0,
    length: 4 });
  assert.equal(wiringFromDevice(device('moes-ms-105-dimmer-switch'), { baud: 115200 }).tuyaMcu?.baud, 115200);
  assert.equal(wiringFromDevice(device('nous-a1-smart-plug')).tuyaMcu, undefined, 'not a TuyaMCU device');
});

test('Kickstart drives a latching relay: a held pin sets it once, the reset pin opens it, power does not', async () => {
  const wiring: Wiring = { latching: { 1: { set: 'P24', reset: 'P26' } }, leds: { P9: 'blue' } };
  await withSim({ wiring }, async (sim) => {
    assert.deepEqual(sim.hardware.relays, { 1: false });
    await scan(sim, 'P24', 'OUTPUT_HIGH');
    await sim.waitForHardware((hw) => hw.relays[1]);
    await scan(sim, 'P24', 'OUTPUT_LOW');
    assert.equal(sim.hardware.relays[1], true, 'latched: the set pin let go, the contacts stay');
    // The other side, pulsed the way flash.ts does (OUTPUT_HIGH, INPUT).
    await scan(sim, 'P26', 'OUTPUT_HIGH');
    await sim.waitForHardware((hw) => !hw.relays[1]);
    await scan(sim, 'P26', 'INPUT');
    await scan(sim, 'P24', 'OUTPUT_HIGH');
    await sim.waitForHardware((hw) => hw.relays[1]);
    // Power off with the set pin held: the coil loses its drive, the contacts keep their place.
    sim.powerCycle();
    assert.equal(sim.phase, 'off');
    assert.deepEqual(sim.hardware.relays, { 1: true }, 'kept without power');
    await sim.waitForPhase('kickstart-lan');
    assert.deepEqual(sim.hardware.relays, { 1: true }, 'and after the reboot, with every pin an input again');
  });
});

test('a wall switch flip reads as a change on Kickstart\'s pin state (either way); flipSwitch checks the pin',
  async () => {
    await withSim({ wiring: { wallSwitches: { P26: 1, P24: 2 }, closedSwitches: ['P24'] } }, async (sim) => {
      assert.deepEqual(sim.hardware.switches, { 1: false, 2: true });
      await scan(sim, 'P26', 'INPUT_PULLUP');
      assert.equal(await pinState(sim), 'HIGH', 'open: the pull-up');
      sim.flipSwitch('P26');
      assert.equal(await pinState(sim), 'LOW', 'closed to GND');
      await scan(sim, 'P24', 'INPUT_PULLUP');
      assert.equal(await pinState(sim), 'LOW', 'switch 2 rests closed');
      const r = await fetch(`${sim.url}/_sim/flip?pin=P24`, { method: 'POST' });
      assert.equal(r.status, 200);
      assert.equal(await pinState(sim), 'HIGH');
      assert.deepEqual(sim.hardware.switches, { 1: true, 2: false });
      assert.throws(() => sim.flipSwitch('P6'), /no wall switch on P6 \(wall switches: P26, P24\)/);
      assert.equal((await fetch(`${sim.url}/_sim/flip?pin=P6`, { method: 'POST' })).status, 409);
      // A position is mechanical: a power cycle keeps it.
      sim.powerCycle();
      await sim.waitForPhase('kickstart-lan');
      assert.deepEqual(sim.hardware.switches, { 1: true, 2: false });
    });
  });
