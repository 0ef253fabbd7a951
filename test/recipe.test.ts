// Bad recipes and bad flags: each must exit 2, name the file, line and field, say how to fix it,
// and write nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { copyRecipes, listFiles, runFlash, tempDir, WIFI_ENV, ROOT } from './helpers.ts';
import { loadRecipe, recipeJsonSchemaText, nearest } from '../flash.ts';

interface BadCase {
  name: string;
  recipe?: string; // which recipe to start from (default 23A)
  edit?: (text: string) => string;
  args?: string[];
  template?: (text: string) => string;
  field: string; // must appear in the message
  says: RegExp; // what the message must say
  line?: number; // the line it must point at
  file?: RegExp;
}

const swap = (from: string | RegExp, to: string) => (t: string) => {
  const out = t.replace(from, to);
  assert.notEqual(out, t, `edit ${from} did not apply`);
  return out;
};

const CASES: BadCase[] = [
  { name: 'missing file', args: ['recipes/NOPE.yaml'], field: '', says: /recipe file not found[\s\S]*fix: recipes in .*23A\.yaml/, file: /NOPE\.yaml/ },
  { name: 'YAML syntax error', edit: swap('mcu: bk7231n', 'mcu: [bk7231n'), field: '', says: /YAML syntax error/, line: 5 },
  // The misspelt key is also a missing required key: said once, as the rename that fixes both.
  { name: 'unknown key, nearest suggested', edit: swap('substitutions:', 'substitution:'), field: 'substitution', says: /^(?![\s\S]*missing required key "substitutions")[\s\S]*unknown key "substitution"[\s\S]*did you mean "substitutions"/, line: 17 },
  // Substitutions take any key: a misspelt device_name shows as the missing one, with the rename.
  { name: 'misspelt device_name', edit: swap('  device_name:', '  device_nme:'), field: 'substitutions.device_name', says: /missing required key "device_name"[\s\S]*did you mean "device_name"\? \(rename "device_nme:" to "device_name:"\)/, line: 18 },
  { name: 'unknown nested key', edit: swap('  profile:', '  profiel:'), field: 'cloudcutter.profiel', says: /did you mean "profile"/, line: 7 },
  { name: 'missing required key', edit: swap(/^model: .*\n/m, ''), field: 'model', says: /missing required key "model"[\s\S]*add: model: /, line: 3 },
  { name: 'missing device_name', edit: swap(/^  device_name: .*\n/m, ''), field: 'substitutions.device_name', says: /missing required key "device_name"/ },
  { name: 'MCU not bk7231t/n', edit: swap('mcu: bk7231n', 'mcu: esp8266'), field: 'mcu', says: /"esp8266" is not a valid mcu[\s\S]*bk7231t, bk7231n/, line: 4 },
  { name: 'board not matching the MCU', edit: swap('  device_name:', '  board: generic-bk7231t-qfn32-tuya\n  device_name:'), field: 'substitutions.board', says: /BK7231T, but mcu is bk7231n[\s\S]*generic-bk7231n-qfn32-tuya/, line: 18 },
  { name: 'unknown board', edit: swap('  device_name:', '  board: esp32dev\n  device_name:'), field: 'substitutions.board', says: /this board is unknown/ },
  { name: 'pin that is not a BK7231 pin', edit: swap('relay: P24', 'relay: P99'), field: 'pins.relay', says: /"P99" is not a BK7231 pin[\s\S]*P0 P1 P6/, line: 14 },
  { name: 'one pin for two functions', edit: swap('button: P8', 'button: P24'), field: 'pins.relay', says: /pin P24 is used for both button and relay/, line: 14 },
  { name: 'device_name with capitals', edit: swap('device_name: status-plug-01', 'device_name: Status Plug'), field: 'substitutions.device_name', says: /not a valid ESPHome device name[\s\S]*e\.g\. status-plug/, line: 18 },
  { name: 'device_name over 31 chars', edit: swap('device_name: status-plug-01', `device_name: ${'a'.repeat(32)}`), field: 'substitutions.device_name', says: /at most 31/ },
  { name: 'default_state outside the restore modes', edit: swap('RESTORE_DEFAULT_OFF', 'SOMETIMES'), field: 'substitutions.default_state', says: /"SOMETIMES" is not a valid default_state[\s\S]*RESTORE_DEFAULT_OFF, RESTORE_DEFAULT_ON, ALWAYS_OFF, ALWAYS_ON/, line: 21 },
  { name: 'cloudcutter profile for the other chip', edit: swap('1.1.8 - BK7231N / oem_bk7231n_plug', '1.0.7 - BK7231T / oem_bk7231s_rnd_switch'), field: 'cloudcutter.profile', says: /is for a BK7231T, but mcu is bk7231n/, line: 7 },
  { name: 'kickstart file for the other chip', edit: swap('kickstart: auto', 'kickstart: ESPHome-Kickstart-v25.05.28_bk7231t_app.ota.ug.bin'), field: 'kickstart', says: /firmware for the BK7231T, but mcu is bk7231n/, line: 5 },
  { name: 'neither profile nor device', edit: swap(/^  profile: .*\n/m, '  {}\n'), field: 'cloudcutter', says: /give cloudcutter.profile, cloudcutter.device, or both/, line: 7 },
  { name: 'template uses an undefined substitution', template: swap('"mdi:${main_icon}"', '"mdi:${main_icon}-${colour}"'), field: 'substitutions.colour', says: /uses \$\{colour\}, which the recipe does not define/, file: /status-plug\.esphome\.yaml:\d+/ },
  { name: '--set key the template does not use', args: ['--set', 'colour=red'], field: 'colour', says: /does not use "colour"[\s\S]*settable here: .*device_name/ },
  { name: '--set with an invalid value', args: ['--set', 'device_name=My Plug'], field: 'substitutions.device_name', says: /--set device_name: substitutions\.device_name: "My Plug" is not a valid ESPHome device name/ },
  { name: '--set a pin to a non-pin', args: ['--set', 'relay_pin=GPIO5'], field: 'pins.relay', says: /"GPIO5" is not a BK7231 pin/ },
  { name: 'unknown step', args: ['--only', 'confg'], field: '--only', says: /"confg" is not a step[\s\S]*did you mean config/ },
  { name: 'unknown flag', args: ['--frobnicate'], field: '', says: /Unknown option '--frobnicate'/ },
  { name: 'misspelt flag', args: ['--dryrun'], field: '--dryrun', says: /Unknown option '--dryrun'[\s\S]*did you mean --dry-run\?/ },
  { name: 'a pin written as GPIO24', edit: swap('relay: P24', 'relay: GPIO24'), field: 'pins.relay', says: /"GPIO24" is not a BK7231 pin[\s\S]*did you mean P24\?/, line: 14 },
  { name: 'a pin written as a bare number', args: ['--set', 'relay_pin=24'], field: 'pins.relay', says: /"24" is not a BK7231 pin[\s\S]*did you mean P24\?/ },
];

test('every bad input exits 2 with file, line, field and a fix, and writes nothing', async () => {
  const results = await Promise.all(
    CASES.map(async (cs) => {
      const dir = copyRecipes();
      const recipe = path.join(dir, `${cs.recipe ?? '23A'}.yaml`);
      if (cs.edit) fs.writeFileSync(recipe, cs.edit(fs.readFileSync(recipe, 'utf8')));
      const tpl = path.join(dir, 'status-plug.esphome.yaml');
      if (cs.template) fs.writeFileSync(tpl, cs.template(fs.readFileSync(tpl, 'utf8')));
      const out = path.join(tempDir(), 'esphome');
      const args = cs.args?.[0]?.startsWith('recipes/') ? [path.join(dir, path.basename(cs.args[0])), ...cs.args.slice(1)] : [recipe, ...(cs.args ?? [])];
      const r = await runFlash([args[0], '--only', 'config', '--yes', '--out', out, ...args.slice(1)], { env: WIFI_ENV });
      return { cs, r, out, recipe };
    }),
  );
  for (const { cs, r, out, recipe } of results) {
    const msg = `${cs.name}:\n${r.stderr}${r.stdout}`;
    assert.equal(r.code, 2, msg);
    assert.match(r.stderr, /bad input/, msg);
    assert.match(r.stderr, cs.says, msg);
    if (cs.field) assert.ok(r.stderr.includes(cs.field), `${msg}\n(expected field ${cs.field})`);
    if (cs.line) assert.ok(r.stderr.includes(`${path.basename(recipe)}:${cs.line}:`), `${msg}\n(expected line ${cs.line})`);
    if (cs.file) assert.match(r.stderr, cs.file, msg);
    if (!cs.args?.some((a) => a.startsWith('--') && a !== '--set')) assert.match(r.stderr, /fix: /, msg);
    assert.deepEqual(listFiles(out), [], `${cs.name}: wrote ${listFiles(out)}`);
    assert.ok(!fs.existsSync(out), `${cs.name}: created ${out}`);
  }
});

test('the shipped recipes are valid and match the device page', () => {
  const t = loadRecipe(path.join(ROOT, 'recipes/21D.yaml')).recipe;
  assert.equal(t.mcu, 'bk7231t');
  assert.deepEqual(t.pins, { button: 'P6', relay: 'P24', state_led: 'P7', status_led: 'P8' });
  assert.equal(t.cloudcutter.profile, '1.0.7 - BK7231T / oem_bk7231s_rnd_switch');
  assert.deepEqual(loadRecipe(path.join(ROOT, 'recipes/21G.yaml')).recipe.pins, t.pins);
  const n = loadRecipe(path.join(ROOT, 'recipes/23A.yaml')).recipe;
  assert.equal(n.mcu, 'bk7231n');
  assert.deepEqual(n.pins, { button: 'P8', relay: 'P24', state_led: 'P7', status_led: 'P6' });
  assert.equal(n.cloudcutter.profile, '1.1.8 - BK7231N / oem_bk7231n_plug');
  assert.match(n.ap_mode, /5 s.*fast.*slowly/s);
});

test('recipes/recipe.schema.json is what `flash.ts schema` prints, and recipes point at it', async () => {
  const onDisk = fs.readFileSync(path.join(ROOT, 'recipes/recipe.schema.json'), 'utf8');
  assert.equal(onDisk, recipeJsonSchemaText(), 'recipe.schema.json is stale: run npm run schema');
  const r = await runFlash(['schema']);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, onDisk);
  for (const f of ['21D', '21G', '23A'])
    assert.match(fs.readFileSync(path.join(ROOT, `recipes/${f}.yaml`), 'utf8'), /^# yaml-language-server: \$schema=recipe\.schema\.json$/m);
  const schema = JSON.parse(onDisk);
  assert.deepEqual(schema.properties.mcu.enum, ['bk7231t', 'bk7231n']);
  assert.equal(schema.additionalProperties, false);
});

test('nearest() suggests only close names', () => {
  assert.equal(nearest('substitution', ['substitutions', 'pins']), 'substitutions');
  assert.equal(nearest('zzzzzz', ['substitutions', 'pins']), undefined);
});
