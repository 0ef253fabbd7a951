// The final firmware (test/sim/esphome-device.ts) against a board on virtual time: what ESPHome does with the
// configs flash.ts generates, down to the unkind parts. A button shorter than its delayed_on filter is not a press;
// the reading at boot fires no trigger; a wall switch's every flip toggles its relay, a bounce does not; the hbridge
// switch pulses a coil at every boot and queues a change made during a pulse; a restored state reaches the flash only
// at the minute's sync; the tuya component at a wrong baud rate gets no datapoint at all; 2025.5.0's tuya select
// shows datapoint 1; bl0942 reads with ESPHome's references.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EsphomeDevice, type Board, type BoardPinMode, type UartPeer } from './sim/esphome-device.ts';
import { ManualClock } from './sim/uart-line.ts';
import { createTuyaMcu, type TuyaDatapoint } from './sim/tuyamcu.ts';
import { createBl0942, resolveBl0942Refs, BL0942_ESPHOME_REFS } from './sim/uart-chips.ts';

/** A board on virtual time: pins with modes and levels, inputs pulled to GND by hand, UART peers on P10/P11. */
function board(peers: UartPeer[] = []) {
  const clock = new ManualClock();
  const modes = new Map<string, BoardPinMode>();
  const out = new Map<string, boolean>();
  const grounded = new Set<string>();
  const writes: [number, string, boolean][] = []; // level changes of outputs: [ms, pin, high]
  const b: Board = {
    clock,
    pinMode: (pin, mode) => void modes.set(pin, mode),
    write(pin, high) {
      if (modes.get(pin) === 'OUTPUT' && out.get(pin) !== high) writes.push([clock.now(), pin, high]);
      out.set(pin, high);
    },
    read(pin) {
      if (modes.get(pin) === 'OUTPUT') return out.get(pin) ?? false;
      return !grounded.has(pin) && modes.get(pin) === 'INPUT_PULLUP';
    },
    uart: (rx, tx) => ({ heard: rx === 'P10' ? peers : [], hearing: tx === 'P11' ? peers : [] }),
  };
  return { b, clock, writes, out, grounded };
}

function boot(config: Record<string, unknown>, o: { peers?: UartPeer[]; flash?: Map<string, unknown>;
  version?: string } = {}) {
  const x = board(o.peers);
  const dev = new EsphomeDevice({ esphome: { name: 'sim-test' }, ...config }, x.b, { name: 'sim-test',
    friendlyName: 'Sim Test', flash: o.flash ?? new Map(), esphomeVersion: o.version ?? '2025.5.1' });
  dev.start();
  /** A finger on the pin (or a wall switch closing it) for `ms`; undefined: it stays. */
  const ground = (pin: string, ms?: number) => {
    x.grounded.add(pin);
    dev.inputsChanged();
    if (ms === undefined) return;
    x.clock.advance(ms);
    x.grounded.delete(pin);
    dev.inputsChanged();
  };
  const release = (pin: string) => {
    x.grounded.delete(pin);
    dev.inputsChanged();
  };
  return { ...x, dev, ground, release };
}

const RELAY = { platform: 'gpio', id: 'relay_1', name: 'Relay', restore_mode: 'RESTORE_DEFAULT_OFF', pin: 'P24' };
const BUTTON = { platform: 'gpio', id: 'button_1', pin: { number: 'P8', mode: 'INPUT_PULLUP', inverted: true },
  filters: [{ delayed_on: '50ms' }], on_press: [{ 'switch.toggle': 'relay_1' }] };

test('a button: shorter than delayed_on is no press, a longer one toggles once; held at boot it toggles nothing',
  () => {
    const x = boot({ switch: [RELAY], binary_sensor: [BUTTON] });
    const relay = x.dev.entity('Relay')!;
    assert.equal(relay.state(), false);
    x.ground('P8', 30);
    x.clock.advance(200);
    assert.equal(relay.state(), false, 'a 30 ms press does not get through the 50 ms filter');
    x.ground('P8', 60);
    assert.equal(relay.state(), true);
    assert.deepEqual(x.writes.filter(([, pin]) => pin === 'P24').map(([ms, , h]) => [ms, h]), [[280, true]]);
    assert.equal(x.dev.entities().some((e) => e.domain === 'binary_sensor'), false, 'an id without a name: internal');
    // Held while the device boots: the first reading is its initial state, which fires no trigger.
    const held = board();
    held.grounded.add('P8');
    const dev = new EsphomeDevice({ switch: [RELAY], binary_sensor: [BUTTON] }, held.b,
      { name: 'x', flash: new Map() });
    dev.start();
    held.clock.advance(500);
    assert.equal(dev.entity('Relay')!.state(), false);
    assert.deepEqual(dev.unsupported, []);
    dev.stop();
  });

test('a wall switch: every flip (either way) toggles its relay 50 ms later; a 20 ms bounce does nothing', () => {
  const x = boot({ switch: [RELAY], binary_sensor: [{ platform: 'gpio', id: 'wall_switch_1', name: 'Wall switch',
    pin: { number: 'P26', mode: 'INPUT_PULLUP', inverted: true }, filters: [{ delayed_on_off: '50ms' }],
    on_state: [{ 'switch.toggle': 'relay_1' }] }] });
  const relay = x.dev.entity('Relay')!;
  const input = x.dev.entity('Wall switch')!;
  assert.equal(input.state(), undefined, 'the filter delays the boot reading too');
  x.clock.advance(50);
  assert.deepEqual([relay.state(), input.state()], [false, false]);
  x.ground('P26');
  x.clock.advance(49);
  assert.equal(relay.state(), false);
  x.clock.advance(1);
  assert.deepEqual([relay.state(), input.state()], [true, true]);
  x.release('P26');
  x.clock.advance(100);
  assert.deepEqual([relay.state(), input.state()], [false, false], 'flipped back: toggled again');
  x.ground('P26', 20);
  x.clock.advance(100);
  assert.equal(relay.state(), false, 'contact bounce');
});

test('hbridge: a coil pulse at every boot; a toggle pulses the on pin for pulse_length; a change meanwhile waits',
  () => {
    const HB = { platform: 'hbridge', id: 'relay_1', name: 'Relay', restore_mode: 'RESTORE_DEFAULT_OFF',
      on_pin: 'P24', off_pin: 'P26', pulse_length: '60ms', wait_time: '30ms' };
    const x = boot({ switch: [HB], binary_sensor: [BUTTON] });
    // Booting with the relay thought off: the off coil is pulsed anyway (relay state unknown).
    x.clock.advance(100);
    assert.deepEqual(x.writes, [[0, 'P26', true], [60, 'P26', false]]);
    x.writes.length = 0;
    const relay = x.dev.entity('Relay')!;
    x.ground('P8', 60);
    assert.equal(relay.state(), true, 'published when the pulse starts (not optimistic)');
    // Toggled back while the on pulse still runs: the off pulse comes after the pulse and the wait time.
    x.ground('P8', 60);
    x.clock.advance(300);
    assert.deepEqual(x.writes, [[150, 'P24', true], [210, 'P24', false], [240, 'P26', true], [300, 'P26', false]]);
    assert.equal(relay.state(), false);
    assert.deepEqual(x.dev.unsupported, []);
  });

test('restore_mode: a state reaches the flash at the minute\'s sync or a safe reboot; a power cut loses it', () => {
  const flash = new Map<string, unknown>();
  const first = boot({ switch: [RELAY], binary_sensor: [BUTTON] }, { flash });
  first.ground('P8', 60);
  assert.equal(first.dev.entity('Relay')!.state(), true);
  first.clock.advance(30_000);
  first.dev.stop(); // the power goes
  const second = boot({ switch: [RELAY], binary_sensor: [BUTTON] }, { flash });
  assert.equal(second.dev.entity('Relay')!.state(), false, 'switched on 30 s before the power cut: not saved');
  second.ground('P8', 60);
  second.clock.advance(60_000);
  assert.deepEqual([...flash], [['switch:relay', true]]);
  second.dev.stop();
  const third = boot({ switch: [RELAY], binary_sensor: [BUTTON] }, { flash });
  assert.equal(third.dev.entity('Relay')!.state(), true, 'restored');
  assert.equal(third.out.get('P24'), true);
  third.ground('P8', 60);
  third.dev.stop({ sync: true }); // OTA or the restart button: preferences written first
  assert.deepEqual([...flash], [['switch:relay', false]]);
});

const DIMMER_DPS: TuyaDatapoint[] = [
  { id: 1, type: 'bool', value: false }, { id: 2, type: 'value', value: 500, min: 10, max: 1000 },
  { id: 4, type: 'enum', value: 0, range: ['LED', 'incandescent', 'halogen'] },
  { id: 6, type: 'value', value: 3600, min: 0, max: 86400 },
];
const DIMMER_CONFIG = (baud: number) => ({
  uart: [{ id: 'tuya_uart', rx_pin: 'P10', tx_pin: 'P11', baud_rate: baud }], tuya: { uart_id: 'tuya_uart' },
  light: [{ platform: 'tuya', id: 'light_1', name: 'Dimmer', switch_datapoint: 1, dimmer_datapoint: 2,
    min_value: 10, max_value: 1000 }],
  number: [{ platform: 'tuya', name: 'Datapoint 6', number_datapoint: 6, min_value: 0, max_value: 86400, step: 1 }],
  select: [{ platform: 'tuya', name: 'Datapoint 4', enum_datapoint: 4, options: { 0: 'LED', 1: 'incandescent',
    2: 'halogen' } }],
});

test('tuya: entities take the MCU\'s datapoints; a knob turned reports at once; 2025.5.0\'s select shows dp 1',
  () => {
    const mcuOf = (clock: ManualClock) => createTuyaMcu({ clock, baud: 9600,
      datapoints: DIMMER_DPS.map((d) => ({ ...d })) });
    const x = board();
    const mcu = mcuOf(x.clock);
    const dev = new EsphomeDevice(DIMMER_CONFIG(9600), { ...x.b, uart: (rx, tx) => ({ heard: rx === 'P10' ? [mcu] : [],
      hearing: tx === 'P11' ? [mcu] : [] }) }, { name: 'dimmer', flash: new Map(), esphomeVersion: '2025.5.1' });
    const states = () => Object.fromEntries(dev.entities().map((e) => [e.name, e.state()]));
    assert.deepEqual(states(), { Dimmer: { on: false, brightness: 1, colorMode: 2 }, 'Datapoint 6': undefined,
      'Datapoint 4': undefined }, 'before the MCU has said anything');
    dev.start();
    x.clock.advance(1000);
    assert.deepEqual(states(), { Dimmer: { on: false, brightness: 0.5, colorMode: 2 }, 'Datapoint 6': 3600,
      'Datapoint 4': 'LED' });
    mcu.setDatapoint(1, true);
    mcu.setDatapoint(4, 2);
    x.clock.advance(100);
    assert.deepEqual(states().Dimmer, { on: true, brightness: 0.5, colorMode: 2 });
    assert.equal(states()['Datapoint 4'], 'halogen');
    dev.stop();
    mcu.close();

    // ESPHome 2025.5.0: the select listens to datapoint 1 (the dimmer's switch) instead of 4.
    const y = board();
    const mcu2 = mcuOf(y.clock);
    mcu2.setDatapoint(1, true);
    const buggy = new EsphomeDevice(DIMMER_CONFIG(9600), { ...y.b, uart: (rx, tx) => ({ heard: rx === 'P10' ? [mcu2]
      : [], hearing: tx === 'P11' ? [mcu2] : [] }) }, { name: 'dimmer', flash: new Map(), esphomeVersion: '2025.5.0' });
    buggy.start();
    y.clock.advance(1000);
    assert.equal(buggy.entity('Datapoint 4')!.state(), 'incandescent', 'dp 1 is true: option 1');
    buggy.stop();
    mcu2.close();
  });

test('tuya at a wrong baud rate: "Initialization failed at init_state 0", every datapoint entity without a state',
  () => {
    const clock = new ManualClock();
    const mcu = createTuyaMcu({ clock, baud: 9600, datapoints: DIMMER_DPS });
    const x = board([mcu]);
    const dev = new EsphomeDevice(DIMMER_CONFIG(115200), { ...x.b, clock }, { name: 'dimmer', flash: new Map() });
    let failed = false;
    dev.events.on('tuya', (what) => (failed ||= what === 'failed'));
    dev.start();
    clock.advance(20_000);
    assert.ok(dev.logs.includes('[E][tuya]: Initialization failed at init_state 0'), dev.logs.join('\n'));
    assert.equal(mcu.received.length, 0, 'not one frame got through');
    assert.deepEqual(dev.entities().map((e) => e.state()), [{ on: false, brightness: 1, colorMode: 2 }, undefined,
      undefined]);
    // Twice in 20 s: the component never gives up, it tries again at the next heartbeat.
    assert.equal(dev.logs.filter((l) => /Initialization failed/.test(l)).length, 2);
    dev.stop();
    mcu.close();
    assert.equal(clock.pending, 0, 'nothing left running');
  });

test('bl0942: setup, then a poll at once and every update_interval; readings are register / ESPHome reference', () => {
  const clock = new ManualClock();
  // A board true to the datasheet for ESPHome's voltage and current references (its power reference is derived).
  const boardRefs = resolveBl0942Refs({ voltage: BL0942_ESPHOME_REFS.voltage, current: BL0942_ESPHOME_REFS.current });
  const chip = createBl0942({ clock, volts: 230, amps: 0.5, watts: 110, hz: 50, board: boardRefs });
  const x = board([chip]);
  const sensors = { voltage: { name: 'Voltage' }, current: { name: 'Current' }, power: { name: 'Power' },
    energy: { name: 'Energy' }, frequency: { name: 'Frequency' } };
  const uart = [{ id: 'energy_uart', rx_pin: 'P10', tx_pin: 'P11', baud_rate: 4800, stop_bits: 1 }];
  const read = (refs: Record<string, number>) => {
    const bl0942 = { platform: 'bl0942', uart_id: 'energy_uart', update_interval: '10s', ...refs, ...sensors };
    const dev = new EsphomeDevice({ uart, sensor: [bl0942] }, { ...x.b, clock }, { name: 'meter', flash: new Map() });
    const published: string[] = [];
    dev.onState((e) => published.push(e.name));
    dev.start();
    clock.advance(1000);
    const first = Object.fromEntries(dev.entities().map((e) => [e.name, e.state() as number]));
    clock.advance(10_000);
    dev.stop();
    return { first, published };
  };
  // The generated config: ESPHome's voltage and current references, so power and energy ones are derived from them.
  const { first, published } = read({ voltage_reference: 15873.35944299, current_reference: 251213.46469622 });
  assert.ok(Math.abs(first.Voltage - 230) < 0.01 && Math.abs(first.Current - 0.5) < 0.001, JSON.stringify(first));
  assert.ok(Math.abs(first.Power - 110) < 0.1, JSON.stringify(first));
  assert.ok(Math.abs(first.Frequency - 50) < 0.01, JSON.stringify(first));
  assert.equal(published.filter((n) => n === 'Voltage').length, 2, 'at boot and 10 s later');
  assert.deepEqual(chip.commands.slice(0, 5).map((c) => [c.op, c.register, c.value]), [['write', 0x1d, 0x55],
    ['write', 0x1c, 0x5a5a5a], ['write', 0x19, 0x8f], ['write', 0x1d, 0], ['read', 0x19, undefined]]);
  // No references at all: ESPHome's own four defaults, which do not agree with each other: power reads ~4.5 % high.
  const defaults = read({}).first;
  assert.ok(Math.abs(defaults.Power / 110 - boardRefs.power / BL0942_ESPHOME_REFS.power) < 0.001,
    JSON.stringify(defaults));
  assert.ok(Math.abs(defaults.Voltage - 230) < 0.01, JSON.stringify(defaults));
  chip.close();
});
