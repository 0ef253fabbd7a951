// `flash.ts recipe`'s generator on every real cloudcutter device file in test/fixtures: each one either yields a
// recipe and template that parse, pass flash.ts's own recipe checks and use only substitutions the recipe defines,
// or is refused with a reason naming the key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { generateRecipe, loadRecipe, checkTemplate, renderDeviceConfig, substitutionsFor, SECRET_TAG }
  from '../flash.ts';
import { fixtureDevices, fixtureProfile, tempDir } from './helpers.ts';
import { makeFakeWorld } from './fakes.ts';


const devices = fixtureDevices();
const profileOf = fixtureProfile;

type Parsed = { recipe: any; template: any; text: string };
/** What each fixture must become: a check of the generated files, or the refusal's key and wording. */
const EXPECT: Record<string, ((p: Parsed) => void) | { key?: string; says: RegExp }> = {
  '3stone-ebe-baw550-16w-rgbct-bulb-v1.3.20': (p) => {
    // cmod rgbcw with cwtype 1, but no w_pin: the whites are one brightness channel, an RGBW light.
    pinsAre(p, { red: 'P6', green: 'P26', blue: 'P24', brightness: 'P8' });
    lightIs(p, 'rgbw', { white: 'output_brightness' });
    assert.match(comments(p), /cmod is "rgbcw", but only r_pin g_pin b_pin c_pin are wired/);
  },
  'abie-g99631-05-rgbw-led-lamp': (p) => {
    pinsAre(p, { red: 'P24', green: 'P9', blue: 'P8', cold: 'P6', warm: 'P26', ir_receiver: 'P16' });
    assert.deepEqual(p.template.remote_receiver.pin, { number: '${ir_receiver_pin}', mode: 'INPUT_PULLUP',
      inverted: true });
    lightIs(p, 'rgbww', { cold_white: 'output_cold', warm_white: 'output_warm' });
    assert.equal(p.recipe.substitutions.pwm_frequency, '10000Hz');
    assert.equal(p.recipe.substitutions.board, 'wb3l');
    assert.match(p.recipe.text, /ctrl_pin=14/);
  },
  'aldi-lightway-smart-al2017-tgts-downlight': (p) => {
    // A CCT light's two whites are brightness and colour temperature.
    pinsAre(p, { brightness: 'P8', color_temp: 'P7' });
    lightIs(p, 'color_temperature', { brightness: 'output_brightness', color_temperature: 'output_color_temp' });
  },
  'alusso-gu10-rgbct-bulb-v1.3.1': (p) => {
    pinsAre(p, { clock: 'P26', data: 'P24' });
    lightIs(p, 'rgbww', {});
    // Tuya channels count from 0, ESPHome's BP5758D outputs from 1.
    assert.deepEqual(outputsBy(p, 'bp5758d'), { output_red: [2, 20], output_green: [1, 20], output_blue: [3, 20],
      output_cold: [5, 14], output_warm: [4, 14] });
  },
  'amico-g1-tp120-9-a19-rgbct-bulb': (p) => {
    pinsAre(p, { clock: 'P7', data: 'P8' });
    assert.deepEqual(p.template.sm2135, { clock_pin: '${clock_pin}', data_pin: '${data_pin}', rgb_current: '10mA',
      cw_current: '60mA' });
    assert.deepEqual(outputsBy(p, 'sm2135'), { output_red: [2], output_green: [1], output_blue: [0], output_cold: [4],
      output_warm: [3] });
  },
  'anko-io04055-sunset-lamp-v1.1.6': (p) => {
    pinsAre(p, { red: 'P9', green: 'P24', blue: 'P26', button: 'P1' });
    lightIs(p, 'rgb', {});
    assert.equal(p.template.binary_sensor[0].on_press[0]['light.toggle'], 'light_1');
    assert.match(p.recipe.ap_mode, /6 times/);
  },
  'arlec-ald092cha-cct-downlight': (p) => {
    pinsAre(p, { cold: 'P6', warm: 'P24' });
    lightIs(p, 'cwww', { cold_white: 'output_cold', warm_white: 'output_warm' });
  },
  'arlec-ald095ha-rgbct-downlight': (p) => {
    // ehccur/ehwcur are register codes: 10 + 5 × code mA.
    assert.deepEqual(p.template.sm2135, { clock_pin: '${clock_pin}', data_pin: '${data_pin}', rgb_current: '15mA',
      cw_current: '35mA', separate_modes: false });
  },
  'arlec-gld130ha': (p) => {
    assert.deepEqual(p.template.sm2135, { clock_pin: '${clock_pin}', data_pin: '${data_pin}', rgb_current: '10mA',
      cw_current: '35mA', separate_modes: false });
  },
  'arlec-pc191ha-smart-plug-bk7231t-v1.3.5': (p) => {
    pinsAre(p, { relay: 'P6', led1: 'P26', button: 'P11', status_led: 'P10', cf: 'P7', cf1: 'P8', sel: 'P24' });
    switchesAre(p, [false]);
    energyIs(p, 'BL0937', true);
    assert.equal(p.template.status_led.pin, '${status_led_pin}'); // netled1_lv 1: active high
    assert.deepEqual(p.template.switch[0].on_turn_on, [{ 'light.turn_on': 'led_1' }]);
    assert.equal(p.template.binary_sensor[0].pin.inverted, true);
    assert.equal(p.template.binary_sensor[0].pin.mode, 'INPUT_PULLUP');
  },
  'avatto-n-wot10-eu-plug-v1.0.11': { says: /no pin configuration.*--check-pins/ },
  'brilliant-21892-c37-e14-rgbct-candelabra-bulb-v2.9.16': (p) => {
    assert.deepEqual(p.template.bp1658cj, { clock_pin: '${clock_pin}', data_pin: '${data_pin}',
      max_power_color_channels: 3, max_power_white_channels: 3 });
    assert.deepEqual(outputsBy(p, 'bp1658cj'), { output_red: [2], output_green: [1], output_blue: [0], output_cold: [3],
      output_warm: [4] });
  },
  'brilliant-rgb-b22-bulb': (p) => {
    pinsAre(p, { red: 'P6', green: 'P26', blue: 'P24', cold: 'P8' });
    lightIs(p, 'rgbw', { white: 'output_cold' });
  },
  'cree-cma19-60w-al-9ack-1221-60w-rgbct-bulb-wb8p-v1.0.9': (p) => {
    lightIs(p, 'rgbct', { white_brightness: 'output_brightness', color_temperature: 'output_color_temp' });
    assert.equal(p.recipe.substitutions.board, 'generic-bk7231t-qfn32-tuya'); // WB8P has no LibreTiny board
  },
  'kmc-30153-smart-plug-mini': (p) => {
    pinsAre(p, { relay: 'P26', button: 'P11', status_led: 'P6' });
    assert.equal(p.recipe.cloudcutter.profile, '1.0.7 - BK7231T / oem_bk7231s_rnd_switch');
    assert.equal(p.template.status_led.pin.inverted, true);
  },
  'ledvance-smartplus-ac31267-outdoor-plug-v1.1.8': (p) => {
    pinsAre(p, { relay: 'P24', button: 'P6', status_led: 'P7' });
    assert.equal(p.recipe.mcu, 'bk7231t');
    assert.equal(p.recipe.substitutions.board, 'wb2s');
    assert.match(p.recipe.ap_mode, /Long press the power\/reset button/);
  },
  'ledvance-smartplus-ac33908-dimmable-bulb-v1.1.4': (p) => {
    pinsAre(p, { cold: 'P7' });
    lightIs(p, 'monochromatic', { output: 'output_cold' });
    assert.equal(p.recipe.substitutions.pwm_frequency, '600Hz');
    assert.equal(p.recipe.substitutions.default_state, 'RESTORE_DEFAULT_ON'); // pmemory 1
  },
  'ledvance-smartplus-eu-multi-socket-power-strip': (p) => {
    pinsAre(p, { relay1: 'P14', relay2: 'P6', relay3: 'P8', relay4: 'P9', button_all: 'P11', status_led: 'P10',
      cf: 'P26', cf1: 'P24', sel: 'P1' });
    switchesAre(p, [false, false, false, false]);
    energyIs(p, 'BL0937', true);
    const toggle = p.template.binary_sensor[0].on_press[0].if;
    assert.equal(toggle.condition.or.length, 4);
  },
  'lightinginside-b11-rgbct-candleabra-bulb-v1.3.21': (p) => {
    pinsAre(p, { clock: 'P6', data: 'P24' });
    assert.deepEqual(p.template.sm2235, { clock_pin: '${clock_pin}', data_pin: '${data_pin}',
      max_power_color_channels: 3, max_power_white_channels: 5 });
  },
  'lonsonho-x802a-l-2-gang-switch': (p) => {
    pinsAre(p, { relay1: 'P9', relay2: 'P8', led1: 'P14', led2: 'P26', button1: 'P1', button2: 'P10' });
    switchesAre(p, [false, false]);
    assert.equal(p.template.switch[1].name, '${friendly_name} 2');
    assert.equal(p.template.binary_sensor[1].on_press[0]['switch.toggle'], 'relay_2');
  },
  'lsc-3008407-led-light-strip-v1.0.14': (p) => {
    pinsAre(p, { cold: 'P24', warm: 'P9', button: 'P7' });
    lightIs(p, 'cwww', { cold_white: 'output_cold', warm_white: 'output_warm' });
    assert.match(comments(p), /only c_pin w_pin are wired: mapped as ESPHome's cwww light \(the colours are driven/);
    assert.equal(p.template.binary_sensor[0].on_press[0]['light.toggle'], 'light_1'); // the strip's only key
  },
  'lsc-3008407-led-light-strip-v1.0.15': (p) => {
    pinsAre(p, { cold: 'P9', key1: 'P24', key2: 'P22', key3: 'P7' });
    lightIs(p, 'monochromatic', { output: 'output_cold' });
    // Several keys: shown to Home Assistant, not bound to an action of flash.ts's choosing.
    assert.deepEqual(p.template.binary_sensor.map((b: any) => b.name), ['Key 1', 'Key 2', 'Key 3']);
  },
  'minoston-mp22wp-outdoor-plug': (p) => {
    pinsAre(p, { relay: 'P24', button: 'P8', status_led: 'P7' });
    // netled_reuse 1: the Wi-Fi LED also shows the relay, so it is a status_led light the relay switches.
    assert.equal(p.template.light[0].platform, 'status_led');
    assert.deepEqual(p.template.switch[0].on_turn_on, [{ 'light.turn_on': 'status_light' }]);
    assert.equal(p.recipe.cloudcutter.profile, '1.1.8 - BK7231N / oem_bk7231n_plug');
  },
  'nedis-wifip110fwt-smart-plug': (p) => {
    pinsAre(p, { relay: 'P26', button: 'P9', energy_rx: 'P10', energy_tx: 'P11', status_led: 'P6' });
    bl0942Is(p);
  },
  'philips-spp4311wf-37-smart-wall-tap': (p) => {
    pinsAre(p, { relay1: 'P6', relay2: 'P26', relay3: 'P24', button_all: 'P11', status_led: 'P10' });
    switchesAre(p, [false, false, false]);
  },
  'tuya-generic-10a-relay-v1.1.0': { key: 'firmware.chip', says: /RTL8720CF, not a Beken BK7231T\/N/ },
  'tuya-generic-2-ch-smart-relay': (p) => {
    pinsAre(p, { relay1: 'P6', relay2: 'P9', button1: 'P11', button2: 'P10', status_led: 'P1' });
    assert.match(p.recipe.text, /backlit_io_pin=7/);
  },
  'tuya-generic-lspa9-plug-v1.1.8': (p) => {
    pinsAre(p, { relay: 'P26', button: 'P10', status_led: 'P8', cf: 'P7', cf1: 'P6', sel: 'P24' });
    energyIs(p, 'BL0937', true);
    assert.equal(p.recipe.substitutions.current_resistor, '0.001'); // resistor 1 (mΩ)
    assert.equal(p.recipe.substitutions.voltage_divider, 1600);
  },
  'tuya-generic-rh-m601-power-strip-with-monitoring-v1.3.5': (p) => {
    switchesAre(p, Array(7).fill(false));
    bl0942Is(p);
  },
  'tuya-generic-sk20-star-projector-v2.0.2': (p) => {
    pinsAre(p, { red: 'P6', green: 'P7', blue: 'P8', button: 'P14' });
    lightIs(p, 'rgb', {});
    assert.match(p.recipe.text, /l_pin=24.*m_pin=26/s);
  },
  'woox-r4967-smart-switch-v1.1.6': (p) => {
    pinsAre(p, { relay: 'P24', button: 'P10', button_all: 'P6', status_led: 'P7' });
    assert.equal(p.recipe.substitutions.board, 'generic-bk7231t-qfn32-tuya'); // no module key
  },
  'cree-cmtp80-al-8ack-wh-kit-smart-tape-light-strip': (p) => {
    // A strip controller's four keys are shown (k2pin_pin…k4pin_pin beside key_pin), and its infrared receiver read.
    pinsAre(p, { red: 'P7', green: 'P8', blue: 'P6', cold: 'P26', warm: 'P24', key1: 'P14', key2: 'P16', key3: 'P15',
      key4: 'P17', ir_receiver: 'P28' });
    lightIs(p, 'rgbww', {});
    assert.deepEqual(p.template.binary_sensor.map((b: any) => b.name), ['Key 1', 'Key 2', 'Key 3', 'Key 4']);
    assert.equal(p.template.remote_receiver.dump, 'all');
  },
  'deta-6920ha-double-touch-outlet-v1.1.4': (p) => {
    pinsAre(p, { relay1: 'P6', relay2: 'P26', button1: 'P7', button2: 'P24', energy_rx: 'P10', status_led: 'P8' });
    // The HLW8032 sends the CSE7766's frames: 4800 baud, even parity, nothing to send it.
    assert.deepEqual(p.template.uart, { id: 'energy_uart', rx_pin: '${energy_rx_pin}', baud_rate: 4800,
      parity: 'EVEN' });
    const cse = p.template.sensor.find((s: any) => s.platform === 'cse7766');
    assert.deepEqual(cse.voltage.filters, [{ multiply: '${hlw8032_voltage_divider}' }]);
    assert.equal(p.recipe.substitutions.hlw8032_voltage_divider, 1.88);
  },
  'earu-eampdw-ty63-circuit-breaker': (p) => {
    tuyaMcuIs(p, 9600);
    // Every bool, value and enum datapoint is an entity; strings and raw ones are shown; scale becomes a filter.
    assert.deepEqual(datapoints(p), ['number:number_datapoint:101', 'number:number_datapoint:102',
      'number:number_datapoint:103', 'number:number_datapoint:104', 'number:number_datapoint:14',
      'sensor:sensor_datapoint:1', 'sensor:sensor_datapoint:13', 'sensor:sensor_datapoint:9',
      'switch:switch_datapoint:105', 'switch:switch_datapoint:106', 'switch:switch_datapoint:11',
      'switch:switch_datapoint:12', 'switch:switch_datapoint:16', 'text_sensor:sensor_datapoint:19',
      'text_sensor:sensor_datapoint:6', 'text_sensor:sensor_datapoint:7', 'text_sensor:sensor_datapoint:8']);
    const energy = p.template.sensor.find((s: any) => s.sensor_datapoint === 1);
    assert.deepEqual([energy.accuracy_decimals, energy.filters], [2, [{ multiply: 0.01 }]]);
    const limit = p.template.number.find((n: any) => n.number_datapoint === 14);
    assert.deepEqual([limit.min_value, limit.max_value, limit.step, limit.multiply], [0, 9999.99, 0.01, 100]);
    assert.match(p.recipe.text, /^# {7}1 value ro 0…99999999 ×0\.01 → sensor "Datapoint 1"$/m);
  },
  'lsc-3202086-xxl-led-strip-v1.0.18': (p) => {
    pinsAre(p, { cold: 'P9', warm: 'P24', button: 'P7' });
    lightIs(p, 'cwww', {});
    assert.match(comments(p), /the colours are driven some other way/);
  },
  'moes-bht-006gaw-thermostat-v2.0.2': (p) => {
    tuyaMcuIs(p, 9600);
    // A thermostat: switch, set and current temperature make one climate entity; the rest are entities of their own.
    assert.deepEqual(p.template.climate, [{ platform: 'tuya', name: '${friendly_name}', switch_datapoint: 1,
      target_temperature_datapoint: 2, current_temperature_datapoint: 3, supports_heat: true,
      visual: { min_temperature: 10, max_temperature: 70 } }]);
    assert.ok(datapoints(p).includes('select:enum_datapoint:4'));
    assert.deepEqual(p.template.select[0].options, { 0: '0', 1: '1' });
  },
  'moes-ms-105-dimmer-switch': (p) => {
    tuyaMcuIs(p, 9600);
    assert.deepEqual(p.template.light, [{ platform: 'tuya', id: 'light_1', name: '${friendly_name}',
      switch_datapoint: 1, dimmer_datapoint: 2, min_value_datapoint: 3, min_value: 10, max_value: 1000 }]);
    assert.deepEqual(p.template.select[0].options, { 0: 'LED', 1: 'incandescent', 2: 'halogen' });
    assert.equal(p.recipe.substitutions.default_state, 'RESTORE_DEFAULT_OFF');
  },
  'nous-a1-smart-plug': (p) => {
    pinsAre(p, { relay: 'P26', button: 'P9', energy_rx: 'P10', energy_tx: 'P11', status_led: 'P6' });
    bl0942Is(p);
  },
  'tongou-to-q-sy1-jwt-din-rail-switch-with-energy-meter': (p) => {
    // A latching relay pulsed on two pins: ESPHome's hbridge switch, rl1_drvtime as the pulse.
    pinsAre(p, { relay_on: 'P24', relay_off: 'P26', led1: 'P9', button: 'P17', energy_rx: 'P10', energy_tx: 'P11',
      status_led: 'P15' });
    const relay = p.template.switch[0];
    assert.deepEqual([relay.platform, relay.on_pin, relay.off_pin, relay.pulse_length, relay.restore_mode],
      ['hbridge', '${relay_on_pin}', '${relay_off_pin}', '${relay_pulse}', '${default_state}']);
    assert.equal(p.recipe.substitutions.relay_pulse, '60ms');
    bl0942Is(p);
  },
  'treatlife-ds02f-fan-controller': (p) => {
    tuyaMcuIs(p, 115200);
    assert.deepEqual(p.template.fan, [{ platform: 'tuya', name: '${friendly_name}', switch_datapoint: 1,
      speed_datapoint: 3, speed_count: 4 }]);
    const tenths = p.template.number.find((n: any) => n.number_datapoint === 101);
    assert.deepEqual([tenths.max_value, tenths.step, tenths.multiply], [0.2, 0.1, 10]);
  },
  'treatlife-sl10-a19-rgbct-bulb-bk7231n-v1.3.21': (p) => {
    // cmod rgbcw without w_pin: an RGBW light, and the recipe says what cmod claimed.
    pinsAre(p, { red: 'P7', green: 'P8', blue: 'P9', cold: 'P24' });
    lightIs(p, 'rgbw', { white: 'output_cold' });
    assert.match(comments(p), /cmod is "rgbcw", but only r_pin g_pin b_pin c_pin are wired/);
  },
  'tuya-generic-mini-smart-switch': (p) => {
    pinsAre(p, { relay: 'P24', button_all: 'P8', wall_switch: 'P26', status_led: 'P7' });
    // A wall switch stays where it is put: every change toggles the relay, not a press.
    const wall = p.template.binary_sensor.find((b: any) => b.id === 'wall_switch_1');
    assert.deepEqual(wall.on_state, [{ 'switch.toggle': 'relay_1' }]);
    assert.equal(wall.on_press, undefined);
    assert.deepEqual(wall.pin, { number: '${wall_switch_pin}', mode: 'INPUT_PULLUP', inverted: true });
  },
  'tuya-generic-mod003-2-channel-smart-relay': (p) => {
    pinsAre(p, { relay1: 'P9', relay2: 'P17', button_all: 'P8', wall_switch1: 'P24', wall_switch2: 'P26',
      status_led: 'P7' });
    assert.deepEqual(p.template.binary_sensor.filter((b: any) => b.on_state).map((b: any) => b.on_state),
      [[{ 'switch.toggle': 'relay_1' }], [{ 'switch.toggle': 'relay_2' }]]);
  },
  'tuya-generic-temperature-and-humidity-sensor-v1.0.10': (p) => {
    tuyaMcuIs(p, 9600);
    // A read-only enum shows its label.
    const battery = p.template.text_sensor.find((s: any) => s.sensor_datapoint === 3);
    assert.deepEqual(battery.filters, [{ map: ['0 -> low', '1 -> middle', '2 -> high'] }]);
    assert.deepEqual(p.template.sensor.find((s: any) => s.sensor_datapoint === 1).filters, [{ multiply: 0.1 }]);
  },
  'xenon-pa301-power-strip': (p) => {
    pinsAre(p, { relay1: 'P8', relay2: 'P6', relay3: 'P24', relay4: 'P26', relay5: 'P14', button_all: 'P7',
      status_led: 'P21' });
    switchesAre(p, [true, true, true, true, false]); // rl1–4_lv 0: active low
    assert.match(p.recipe.text, /total_led_pin=10/);
  },
};

function pinsAre(p: Parsed, pins: Record<string, string>) {
  assert.deepEqual(p.recipe.pins, pins);
}
function switchesAre(p: Parsed, inverted: boolean[]) {
  assert.deepEqual(p.template.switch.map((s: any) => s.pin?.inverted === true), inverted);
  assert.ok(p.template.switch.every((s: any) => s.platform === 'gpio' && s.restore_mode === '${default_state}'));
}
function energyIs(p: Parsed, model: string, selInverted: boolean) {
  const hlw = p.template.sensor.find((s: any) => s.platform === 'hlw8012');
  assert.equal(hlw.model, model);
  assert.deepEqual(hlw.sel_pin, selInverted ? { number: '${sel_pin}', inverted: true } : '${sel_pin}');
  assert.equal(hlw.voltage_divider, '${voltage_divider}');
}
/** The recipe's comments as one text: a remark wraps over several comment lines. */
function comments(p: Parsed): string {
  return p.recipe.text.split('\n').filter((l: string) => l.startsWith('#')).map((l: string) => l.replace(/^#\s*/, ''))
    .join(' ');
}
function bl0942Is(p: Parsed) {
  // UART1 at 4800 baud; ESPHome's reference values named so they can be calibrated.
  assert.deepEqual(p.template.uart, { id: 'energy_uart', rx_pin: '${energy_rx_pin}', tx_pin: '${energy_tx_pin}',
    baud_rate: 4800, stop_bits: 1 });
  const bl = p.template.sensor.find((s: any) => s.platform === 'bl0942');
  assert.equal(bl.uart_id, 'energy_uart');
  assert.equal(bl.voltage_reference, '${bl0942_voltage_reference}');
  assert.equal(p.recipe.substitutions.bl0942_current_reference, 251213.46469622);
  assert.deepEqual(Object.keys(bl).filter((k) => ['voltage', 'current', 'power', 'energy', 'frequency'].includes(k)),
    ['voltage', 'current', 'power', 'energy', 'frequency']);
}
function tuyaMcuIs(p: Parsed, baud: number) {
  pinsAre(p, { uart_rx: 'P10', uart_tx: 'P11' });
  assert.equal(p.recipe.substitutions.tuya_baud_rate, baud);
  assert.deepEqual(p.template.uart, { id: 'tuya_uart', rx_pin: '${uart_rx_pin}', tx_pin: '${uart_tx_pin}',
    baud_rate: '${tuya_baud_rate}' });
  assert.deepEqual(p.template.tuya, { uart_id: 'tuya_uart' });
  assert.equal(p.template.logger, null); // the logger is on UART2: UART1 is the MCU's
  assert.match(p.recipe.text, /Nothing here to check pin by pin/);
}
/** Every entity of the template that names a datapoint: `domain:key:id`. */
function datapoints(p: Parsed): string[] {
  return Object.entries(p.template).flatMap(([domain, items]) => (Array.isArray(items) ? items : [])
    .filter((i: any) => i.platform === 'tuya').flatMap((i: any) => Object.entries(i)
      .filter(([k]) => k.endsWith('_datapoint')).map(([k, v]) => `${domain}:${k}:${v}`))).sort();
}
function lightIs(p: Parsed, platform: string, keys: Record<string, string>) {
  const light = p.template.light.find((l: any) => l.id === 'light_1');
  assert.equal(light.platform, platform);
  for (const [k, v] of Object.entries(keys)) assert.equal(light[k], v, k);
  assert.equal(light.restore_mode, '${default_state}');
}
function outputsBy(p: Parsed, platform: string) {
  return Object.fromEntries(p.template.output.filter((o: any) => o.platform === platform)
    .map((o: any) => [o.id, o.current === undefined ? [o.channel] : [o.channel, o.current]]));
}

for (const device of devices) {
  test(device.slug, () => {
    const expect = EXPECT[device.slug];
    assert.ok(expect, `no expectation written for ${device.slug}`);
    const got = generateRecipe(device, profileOf(device));
    if (typeof expect !== 'function') {
      assert.equal(got.ok, false, `${device.slug} should be refused`);
      if (got.ok) return;
      assert.match(got.reason, expect.says);
      assert.equal(got.key, expect.key);
      return;
    }
    assert.ok(got.ok, got.ok ? '' : `refused: ${got.reason} (${got.key})`);
    if (!got.ok) return;
    const recipe = YAML.parse(got.recipe);
    const template = YAML.parse(got.template, { customTags: [SECRET_TAG] });
    for (const line of [...got.recipe.split('\n'), ...got.template.split('\n')]) assert.ok(line.length <= 120, line);

    // The recipe format: the fields flash.ts reads, pins as Pn, a valid ESPHome device name.
    assert.equal(recipe.kickstart, 'auto');
    assert.equal(recipe.esphome, `${device.slug}.esphome.yaml`);
    assert.equal(recipe.cloudcutter.device, device.slug);
    assert.match(recipe.substitutions.device_name, /^[a-z0-9-]{1,31}$/);
    for (const pin of Object.values(recipe.pins)) assert.match(String(pin), /^P\d+$/);
    // flash.ts's own checks, as for any recipe: the schema, the board's pins, the template's substitutions.
    const dir = tempDir('flash-generated-');
    fs.writeFileSync(path.join(dir, `${device.slug}.yaml`), got.recipe);
    fs.writeFileSync(path.join(dir, `${device.slug}.esphome.yaml`), got.template);
    const loaded = loadRecipe(path.join(dir, `${device.slug}.yaml`)).recipe;
    checkTemplate(got.template, `${device.slug}.esphome.yaml`, substitutionsFor(loaded), {});

    // The template: every ${name} it uses is a recipe substitution or a pin; !secret for the secrets.
    const defined = new Set([...Object.keys(recipe.substitutions), ...Object.keys(recipe.pins).map((f) => `${f}_pin`)]);
    const usedNames = [...got.template.matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]);
    for (const name of usedNames) assert.ok(defined.has(name), `template uses \${${name}}, not in the recipe`);
    for (const fn of Object.keys(recipe.pins)) assert.ok(usedNames.includes(`${fn}_pin`), `pin ${fn} unused`);
    assert.equal(template.api.encryption.key, '!secret api_encryption_key');
    assert.equal(template.wifi.ap.password, '!secret ap_password');
    assert.equal(template.bk72xx.board, '${board}');

    expect({ recipe: { ...recipe, text: got.recipe }, template, text: got.template });
  });
}

test('a relay on a pin the module lacks, and a light channel on a relay\'s pin, are refused naming the key', () => {
  const d = devices.find((x) => x.slug === 'minoston-mp22wp-outdoor-plug')!;
  const cfg = d.device_configuration!;
  const lacks = generateRecipe({ ...d, device_configuration: { ...cfg, rl1_pin: 9 } }, profileOf(d));
  assert.deepEqual(lacks.ok ? {} : { key: lacks.key, ok: /P9, which the CB2S module does not have/.test(lacks.reason) },
    { key: 'rl1_pin', ok: true });
  const twice = generateRecipe({ ...d, device_configuration: { ...cfg, cmod: 'c', c_pin: 24 } }, profileOf(d));
  assert.deepEqual(twice.ok ? {} : { key: twice.key, reason: twice.reason },
    { key: 'c_pin', reason: 'P24 is used twice: by rl1_pin and by c_pin' });
});

test('a button or key on a pin something else has is left out, and the recipe says so', () => {
  const d = devices.find((x) => x.slug === 'minoston-mp22wp-outdoor-plug')!;
  const got = generateRecipe({ ...d, device_configuration: { ...d.device_configuration, bt1_pin: 24 } }, profileOf(d));
  assert.ok(got.ok);
  if (!got.ok) return;
  assert.equal(YAML.parse(got.recipe).pins.button, undefined);
  assert.match(got.recipe, /^# {3}bt1_pin left out: P24 is rl1_pin's$/m);
});

test('an unknown dmod is refused naming dmod', () => {
  const d = devices.find((x) => x.slug === 'amico-g1-tp120-9-a19-rgbct-bulb')!;
  const got = generateRecipe({ ...d, device_configuration: { ...d.device_configuration, dmod: 1 } }, profileOf(d));
  assert.equal(got.ok ? '' : got.key, 'dmod');
});

test('every generated recipe renders a config the (strict) fake esphome accepts', async () => {
  const w = await makeFakeWorld({ timeScale: 0.01 });
  try {
    const dir = path.join(w.dir, 'generated');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'secrets.yaml'), 'wifi_ssid: HomeNet\nwifi_password: "correct horse"\n'
      + 'api_encryption_key: "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28="\nota_password: abc123\n'
      + 'ap_password: "kickstart-ap"\n');
    const made = devices.map((d) => ({ d, got: generateRecipe(d, profileOf(d)) }));
    const configs = made.flatMap(({ d, got }) => {
      if (!got.ok) return [];
      fs.writeFileSync(path.join(dir, `${d.slug}.recipe.yaml`), got.recipe);
      fs.writeFileSync(path.join(dir, `${d.slug}.esphome.yaml`), got.template);
      const recipe = loadRecipe(path.join(dir, `${d.slug}.recipe.yaml`)).recipe;
      const file = path.join(dir, `${d.slug}.yaml`);
      fs.writeFileSync(file, renderDeviceConfig(substitutionsFor(recipe), got.template, `${d.slug}.yaml`, recipe.model));
      return [{ slug: d.slug, file }];
    });
    assert.ok(configs.length >= 20, `only ${configs.length} recipes generated`);
    const run = promisify(execFile);
    const refused: string[] = [];
    for (const { slug, file } of configs) {
      const r = await run('esphome', ['config', file], { env: w.env, cwd: dir }).catch((e) => e);
      if (!/Configuration is valid!/.test(`${r.stdout}${r.stderr}`)) refused.push(`${slug}:\n${r.stdout}${r.stderr}`);
    }
    assert.deepEqual(refused, []);
  } finally {
    await w.cleanup();
  }
});

test('the generated fixtures the fake tools are tested with are what flash.ts generates today', () => {
  const dir = path.join(import.meta.dirname, 'fixtures', 'generated');
  const files = fs.readdirSync(dir).filter((f) => !f.endsWith('.esphome.yaml'));
  assert.ok(files.length > 0);
  for (const f of files) {
    const slug = f.replace(/\.yaml$/, '');
    const device = devices.find((d) => d.slug === slug)!;
    const got = generateRecipe(device, profileOf(device));
    assert.ok(got.ok, slug);
    if (!got.ok) continue;
    assert.equal(fs.readFileSync(path.join(dir, f), 'utf8'), got.recipe, `${f}: regenerate it with flash.ts recipe`);
    assert.equal(fs.readFileSync(path.join(dir, `${slug}.esphome.yaml`), 'utf8'), got.template, `${slug}.esphome.yaml`);
  }
});
