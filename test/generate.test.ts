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
  '3stone-ebe-baw550-16w-rgbct-bulb-v1.3.20': {
    key: 'cmod', says: /needs r_pin g_pin b_pin c_pin w_pin but w_pin is missing: .* does not wire every channel/ },
  'abie-g99631-05-rgbw-led-lamp': (p) => {
    pinsAre(p, { red: 'P24', green: 'P9', blue: 'P8', cold: 'P6', warm: 'P26' });
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
  'lsc-3008407-led-light-strip-v1.0.14': { key: 'cmod', says: /r_pin g_pin b_pin are missing.*SPI/ },
  'lsc-3008407-led-light-strip-v1.0.15': { key: 'cmod', says: /rgbc.*r_pin g_pin b_pin are missing/ },
  'minoston-mp22wp-outdoor-plug': (p) => {
    pinsAre(p, { relay: 'P24', button: 'P8', status_led: 'P7' });
    // netled_reuse 1: the Wi-Fi LED also shows the relay, so it is a status_led light the relay switches.
    assert.equal(p.template.light[0].platform, 'status_led');
    assert.deepEqual(p.template.switch[0].on_turn_on, [{ 'light.turn_on': 'status_light' }]);
    assert.equal(p.recipe.cloudcutter.profile, '1.1.8 - BK7231N / oem_bk7231n_plug');
  },
  'nedis-wifip110fwt-smart-plug': { key: 'chip_type', says: /chip_type 3: .*BL0942 on the UART/ },
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
  'tuya-generic-rh-m601-power-strip-with-monitoring-v1.3.5': { key: 'chip_type', says: /BL0942/ },
  'tuya-generic-sk20-star-projector-v2.0.2': (p) => {
    pinsAre(p, { red: 'P6', green: 'P7', blue: 'P8', button: 'P14' });
    lightIs(p, 'rgb', {});
    assert.match(p.recipe.text, /l_pin=24.*m_pin=26/s);
  },
  'woox-r4967-smart-switch-v1.1.6': (p) => {
    pinsAre(p, { relay: 'P24', button: 'P10', button_all: 'P6', status_led: 'P7' });
    assert.equal(p.recipe.substitutions.board, 'generic-bk7231t-qfn32-tuya'); // no module key
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

test('a pin the module lacks, and a pin used twice, are refused naming the key', () => {
  const d = devices.find((x) => x.slug === 'minoston-mp22wp-outdoor-plug')!;
  const cfg = d.device_configuration!;
  const lacks = generateRecipe({ ...d, device_configuration: { ...cfg, rl1_pin: 9 } }, profileOf(d));
  assert.deepEqual(lacks.ok ? {} : { key: lacks.key, ok: /P9, which the CB2S module does not have/.test(lacks.reason) },
    { key: 'rl1_pin', ok: true });
  const twice = generateRecipe({ ...d, device_configuration: { ...cfg, bt1_pin: 24 } }, profileOf(d));
  assert.deepEqual(twice.ok ? {} : { key: twice.key, reason: twice.reason },
    { key: 'bt1_pin', reason: 'P24 is used twice: by rl1_pin and by bt1_pin' });
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
