// The fake esphome's config checks for TuyaMCU devices, UART energy chips and latching relays
// (test/fakes/esphome-config.mjs): valid configs pass, and each mistake is refused with ESPHome's own message, at the
// version that has (or lacks) the platform.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { makeFakeWorld } from './fakes.ts';

type ConfigError = { domain: string; path: (string | number)[]; msg: string; key?: string; value?: unknown };
type Validate = (config: unknown, opts?: { version?: string }) => { errors: ConfigError[]; chip?: string };
// A plain .mjs (no declaration file): imported by URL, typed here.
const { validateConfig } = await import(new URL('./fakes/esphome-config.mjs', import.meta.url).href) as
  { validateConfig: Validate };

const BASE = `
esphome:
  name: test-device
bk72xx:
  board: cb2s
`;

/** A text edit that must change something (a refusal whose edit missed would pass for nothing). */
const edit = (text: string, from: string | RegExp, to: string) => {
  const out = text.replace(from, to);
  assert.notEqual(out, text, `the edit ${from} -> ${to} changed nothing`);
  return out;
};

/** The errors ESPHome would print for this YAML (on the given version), as [domain, message] pairs. */
function refusals(yaml: string, version?: string): [string, string][] {
  const { errors } = validateConfig(YAML.parse(BASE + yaml), version ? { version } : {});
  return errors.map((e) => [e.domain, e.msg]);
}

const TUYA_MCU = `
logger:
  baud_rate: 0
uart:
  id: tuya_uart
  rx_pin: RX1
  tx_pin: TX1
  baud_rate: 9600
tuya:
  uart_id: tuya_uart
switch:
  - platform: tuya
    id: relay
    name: Relay
    switch_datapoint: 1
    restore_mode: RESTORE_DEFAULT_OFF
sensor:
  - platform: tuya
    name: Temperature
    sensor_datapoint: 2
    unit_of_measurement: "°C"
    device_class: temperature
    state_class: measurement
    accuracy_decimals: 1
    filters:
      - multiply: 0.1
number:
  - platform: tuya
    name: Target
    number_datapoint: 3
    min_value: 5
    max_value: 35
    step: 0.5
    multiply: 10
    datapoint_hidden:
      datapoint_type: int
      initial_value: 20
select:
  - platform: tuya
    name: Mode
    enum_datapoint: 4
    optimistic: true
    options:
      0: Auto
      1: Manual
      2: Holiday
text_sensor:
  - platform: tuya
    name: Fault
    sensor_datapoint: 5
binary_sensor:
  - platform: tuya
    name: Window
    sensor_datapoint: 6
    on_state:
      - switch.toggle: relay
`;

const BL0942_PLUG = `
uart:
  id: energy_uart
  rx_pin: RX1
  tx_pin: TX1
  baud_rate: 4800
  stop_bits: 1
sensor:
  - platform: bl0942
    uart_id: energy_uart
    update_interval: 10s
    line_frequency: 50Hz
    reset: false
    voltage_reference: 15968
    current_reference: 124180
    voltage:
      name: Voltage
    current:
      name: Current
    power:
      name: Power
      filters:
        multiply: -1
    energy:
      name: Energy
    frequency:
      name: Frequency
      accuracy_decimals: 2
switch:
  - platform: gpio
    id: relay_1
    name: Relay
    pin: P24
binary_sensor:
  - platform: gpio
    id: wall_switch
    pin:
      number: P26
      mode:
        input: true
        pullup: true
    filters:
      - delayed_on_off: 50ms
    on_state:
      - switch.toggle: relay_1
`;

const HBRIDGE = `
switch:
  - platform: hbridge
    id: relay
    name: Relay
    on_pin: P24
    off_pin: P26
    pulse_length: 60ms
    wait_time: 30ms
    restore_mode: RESTORE_DEFAULT_OFF
`;

describe('fake esphome: TuyaMCU, UART energy chips, latching relays', { concurrency: true }, () => {
  test('a TuyaMCU device (uart on RX1/TX1, tuya, one entity of each kind) is valid', () => {
    assert.deepEqual(refusals(TUYA_MCU), []);
    // the one uart and the one tuya are found without naming them
    assert.deepEqual(refusals(edit(edit(TUYA_MCU, '  uart_id: tuya_uart\n', '  {}\n'), '  id: tuya_uart\n', '')), []);
  });

  test('a BL0942 plug (polled on RX1/TX1 at 4800) with a wall switch toggling the relay is valid', () => {
    assert.deepEqual(refusals(BL0942_PLUG), []);
  });

  test('an HLW8032 read as a CSE7766: an RX-only uart at 4800 baud, even parity', () => {
    const hlw = `
uart:
  rx_pin: RX1
  baud_rate: 4800
  parity: EVEN
sensor:
  - platform: cse7766
    voltage:
      name: Voltage
      filters:
        - multiply: 1.88
    current:
      name: Current
    power:
      name: Power
    energy:
      name: Energy
`;
    assert.deepEqual(refusals(hlw), []);
    assert.deepEqual(refusals(edit(edit(hlw, '  parity: EVEN\n', ''), '4800', '9600')), [
      ['uart', 'Component cse7766 requires baud rate 4800 for the uart referenced by uart_id.'],
      ['uart', 'Component cse7766 requires parity EVEN for the uart referenced by uart_id.'],
    ]);
    // a cv.Required(msg=...) message is printed as written, without a period
    assert.deepEqual(refusals(edit(hlw, '  rx_pin: RX1\n', '  tx_pin: TX1\n')), [
      ['uart', 'Component cse7766 requires uart referenced by uart_id to declare a rx_pin'],
    ]);
    // ESPHome's own hlw8032 platform only from 2025.12.0
    const own = edit(edit(hlw, 'platform: cse7766', 'platform: hlw8032'), / {4}energy:\n.*\n/, '');
    assert.deepEqual(refusals(own, '2025.12.0'), []);
    assert.deepEqual(refusals(own, '2025.11.3'), [['sensor.hlw8032', "Platform not found: 'sensor.hlw8032'."]]);
  });

  test('the hbridge switch is there from 2024.12.0 and not before', () => {
    assert.deepEqual(refusals(HBRIDGE), []);
    assert.deepEqual(refusals(HBRIDGE, '2024.12.0'), []);
    assert.deepEqual(refusals(HBRIDGE, '2024.10.2'), [['switch.hbridge', "Platform not found: 'switch.hbridge'."]]);
    assert.deepEqual(refusals(edit(HBRIDGE, '    off_pin: P26\n', '')),
      [['switch.hbridge', "'off_pin' is a required option for [switch.hbridge]."]]);
    assert.deepEqual(refusals(edit(HBRIDGE, 'off_pin: P26', 'off_pin: P24')), [
      ['switch.hbridge', 'Pin 24 is used in multiple places.'],
      ['switch.hbridge', 'Pin 24 is used in multiple places.'],
    ]);
  });

  test('the world\'s esphome.version decides, through the fake esphome itself', async () => {
    const w = await makeFakeWorld({ esphome: { delayMs: 10, version: '2024.10.2' } });
    try {
      const file = path.join(w.dir, 'relay.yaml');
      fs.writeFileSync(file, BASE + HBRIDGE);
      const r = await promisify(execFile)('esphome', ['config', file], { env: w.env, cwd: w.dir })
        .then((ok) => ({ code: 0, ...ok }), (e: { code: number; stdout: string; stderr: string }) => e);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.ok(r.stdout.startsWith('Failed config\n\nswitch.hbridge: [source'), r.stdout);
      assert.ok(r.stdout.includes("\n  Platform not found: 'switch.hbridge'.\n"), r.stdout);
    } finally {
      await w.cleanup();
    }
  });

  test('refusals in ESPHome\'s words', () => {
    const twoBuses = edit(edit(TUYA_MCU, /^uart:\n(?: {2}.*\n)+/m, 'uart:\n  - id: tuya_uart\n    rx_pin: RX1\n' +
      '    tx_pin: TX1\n    baud_rate: 9600\n  - id: other_uart\n    rx_pin: RX2\n    baud_rate: 9600\n'),
    '  uart_id: tuya_uart\n', '  {}\n');
    /** [what, YAML, expected [domain, message] pairs, version] */
    const cases: [string, string, [string, string][], string?][] = [
      ['no uart', edit(edit(TUYA_MCU, /^uart:\n(?: {2}.*\n)+/m, ''), '  uart_id: tuya_uart\n', '  {}\n'),
        [['tuya', 'Component tuya requires component uart.']]],
      ['no tuya', edit(TUYA_MCU, /^tuya:\n.*\n/m, ''), ['switch', 'sensor', 'number', 'select', 'text_sensor',
        'binary_sensor'].map((d) => [`${d}.tuya`, `Component ${d}.tuya requires component tuya.`])],
      ['no switch_datapoint', edit(TUYA_MCU, '    switch_datapoint: 1\n', ''),
        [['switch.tuya', "'switch_datapoint' is a required option for [switch.tuya]."]]],
      ['no options', edit(TUYA_MCU, / {4}options:\n(?: {6}.*\n)+/, ''),
        [['select.tuya', "'options' is a required option for [select.tuya]."]]],
      ['options as a list', edit(TUYA_MCU, / {4}options:\n(?: {6}.*\n)+/, '    options: [Auto, Manual]\n'),
        [['select.tuya', 'expected a dictionary.']]],
      ['option number', edit(TUYA_MCU, '      2: Holiday', '      256: Holiday'),
        [['select.tuya', '[256] is an invalid option for [options].']]],
      ['baud rate', edit(TUYA_MCU, 'baud_rate: 9600', 'baud_rate: fast'),
        [['uart', 'Expected integer, but cannot parse fast as an integer.']]],
      ['no pins', edit(TUYA_MCU, '  rx_pin: RX1\n  tx_pin: TX1\n', ''),
        [['uart', 'Must contain at least one of tx_pin, rx_pin, port.']]],
      ['parity', edit(TUYA_MCU, 'baud_rate: 9600', 'baud_rate: 9600\n  parity: MARK'),
        [['uart', "Unknown value 'MARK', valid options are 'NONE', 'EVEN', 'ODD'."]]],
      ['stop bits', edit(TUYA_MCU, 'baud_rate: 9600', 'baud_rate: 9600\n  stop_bits: 3'),
        [['uart', "Unknown value '3', valid options are '1', '2'."]]],
      ['reserved id', edit(TUYA_MCU, /tuya_uart/g, 'uart1'),
        [['uart', "ID 'uart1' is reserved internally and cannot be used."],
          ['tuya', "ID 'uart1' is reserved internally and cannot be used."]]],
      ['uart_id', edit(TUYA_MCU, '  uart_id: tuya_uart', '  uart_id: mcu_uart'),
        [['tuya', "Couldn't find ID 'mcu_uart'. Please check you have defined an ID with that name in your " +
          'configuration. These IDs look similar: "tuya_uart".']]],
      ['two buses', twoBuses, [['tuya', "Too many candidates found for 'uart_id' type 'uart::UARTComponent' Some are " +
        "'tuya_uart', 'other_uart'."]]],
      ['multiply on a sensor', edit(TUYA_MCU, '    filters:\n      - multiply: 0.1\n', '    multiply: 0.1\n'),
        [['sensor.tuya', '[multiply] is an invalid option for [sensor.tuya]. Please check the indentation.']]],
      ['filter', edit(TUYA_MCU, '- multiply: 0.1', '- scale: 0.1'),
        [['sensor.tuya', "Unable to find filter with the name 'scale'."]]],
      ['min max', edit(TUYA_MCU, 'max_value: 35', 'max_value: 5'),
        [['number.tuya', 'max_value must be greater than min_value.']]],
      ['hidden type', edit(TUYA_MCU, 'datapoint_type: int', 'datapoint_type: float'),
        [['number.tuya', "Unknown value 'float', valid options are 'int', 'uint', 'enum'."]]],
      ['int_datapoint before 2025.5.0', edit(TUYA_MCU, 'enum_datapoint: 4', 'int_datapoint: 4'),
        [['select.tuya', '[int_datapoint] is an invalid option for [select.tuya]. Did you mean [enum_datapoint]?'],
          ['select.tuya', "'enum_datapoint' is a required option for [select.tuya]."]], '2025.4.2'],
      ['enum and int datapoint', edit(TUYA_MCU, 'enum_datapoint: 4', 'enum_datapoint: 4\n    int_datapoint: 4'),
        [['select.tuya', 'Cannot specify more than one of enum_datapoint, int_datapoint.']]],
      ['datapoint range', edit(TUYA_MCU, 'sensor_datapoint: 5', 'sensor_datapoint: 300'),
        [['text_sensor.tuya', 'value must be at most 255.']]],
      ['logger port', edit(TUYA_MCU, 'logger:\n  baud_rate: 0\n', 'logger:\n  hardware_uart: UART0\n'),
        [['logger', "Unknown value 'UART0', did you mean 'UART2', 'UART1'?."]]],
      ['wall switch filter', edit(BL0942_PLUG, 'delayed_on_off: 50ms', 'delayed_on_off: 50'),
        [['binary_sensor.gpio', "Don't know what '50' means as it has no time *unit*! Did you mean '50s'?."]]],
      ['line frequency', edit(BL0942_PLUG, 'line_frequency: 50Hz', 'line_frequency: 55Hz'),
        [['sensor.bl0942', "Unknown value '55', valid options are '50', '60'."]]],
      ['bl0942 without uart', edit(BL0942_PLUG, /^uart:\n(?: {2}.*\n)+/m, ''),
        [['sensor.bl0942', 'Component sensor.bl0942 requires component uart.']]],
    ];
    for (const [what, yaml, expected, version] of cases) assert.deepEqual(refusals(yaml, version), expected, what);
  });

  test('tuya light, fan, climate and cover: their required keys and rules', () => {
    const tuya = 'uart:\n  rx_pin: RX1\n  tx_pin: TX1\n  baud_rate: 115200\ntuya:\n';
    const light = `${tuya}light:\n  - platform: tuya\n    name: Dimmer\n    switch_datapoint: 1\n` +
      '    dimmer_datapoint: 2\n    min_value_datapoint: 3\n    max_value: 1000\n';
    assert.deepEqual(refusals(light), []);
    assert.deepEqual(refusals(edit(light, / {4}(switch|dimmer|min_value)_datapoint: \d\n/g, '')),
      [['light.tuya', 'Must contain at least one of dimmer_datapoint, switch_datapoint, color_datapoint.']]);
    assert.deepEqual(refusals(`${light}    color_datapoint: 5\n`),
      [['light.tuya', "some but not all values in the same group of inclusion 'color'."]]);
    const fan = `${tuya}fan:\n  - platform: tuya\n    name: Fan\n    switch_datapoint: 1\n    speed_datapoint: 3\n` +
      '    speed_count: 4\n';
    assert.deepEqual(refusals(fan), []);
    assert.deepEqual(refusals(edit(fan, 'speed_count: 4', 'speed_count: 300')),
      [['fan.tuya', 'value must be at most 256.']]);
    const climate = `${tuya}climate:\n  - platform: tuya\n    name: Thermostat\n    switch_datapoint: 1\n` +
      '    target_temperature_datapoint: 2\n    current_temperature_datapoint: 3\n    temperature_multiplier: 0.5\n';
    assert.deepEqual(refusals(climate), []);
    const target = edit(climate, '    temperature_multiplier: 0.5', '    target_temperature_multiplier: 0.5');
    assert.deepEqual(refusals(target),
      [['climate.tuya', 'current_temperature_multiplier required if using target_temperature_multiplier.']]);
    assert.deepEqual(refusals(`${climate}    active_state:\n      datapoint: 4\n      cooling_value: 2\n`),
      [['climate.tuya', "Device does not support cooling, but cooling_value or cooling_state_pin specified. Please " +
        "add 'supports_cool: true' to your configuration."]]);
    const cover = `${tuya}cover:\n  - platform: tuya\n    name: Blind\n    position_datapoint: 2\n` +
      '    control_datapoint: 1\n';
    assert.deepEqual(refusals(cover), []);
    assert.deepEqual(refusals(edit(cover, '    position_datapoint: 2\n', '')),
      [['cover.tuya', "'position_datapoint' is a required option for [cover.tuya]."]]);
    assert.deepEqual(refusals(`${cover}    min_value: 100\n    max_value: 0\n`),
      [['cover.tuya', 'min_value (100) cannot be greater than max_value (0).']]);
  });
});
