// `flash.ts recipe DEVICE`: from a device in cloudcutter's list to a recipe and template on disk, checked like any
// recipe; a choice when several devices match or the device has several firmware versions; a clear refusal (and
// nothing written) for what cannot be a recipe; never an overwrite behind the user's back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CLOUDCUTTER_API_FIXTURES, FLASH, WIFI_ENV, listFiles, runFlash, serveDir, tempDir } from './helpers.ts';
import { runInProcess } from './workbench.ts';
import { virtualUser } from './virtual-user.ts';
import YAML from 'yaml';
import { matchDevices, loadRecipe } from '../flash.ts';

let api: Awaited<ReturnType<typeof serveDir>>;
let env: NodeJS.ProcessEnv;
before(async () => {
  // The fixtures, plus a device that comes with two stock firmware versions.
  const dir = tempDir('flash-api-');
  fs.cpSync(CLOUDCUTTER_API_FIXTURES, dir, { recursive: true });
  const device = JSON.parse(fs.readFileSync(path.join(dir, 'devices', 'minoston-mp22wp-outdoor-plug.json'), 'utf8'));
  const older = JSON.parse(fs.readFileSync(path.join(dir, 'profiles', 'oem-bk7231n-plug-1.1.4-sdk-2.3.1-40.00.json'), 'utf8'));
  device.profiles.push({ slug: older.slug, name: older.name, type: older.type, sub_name: older.sub_name, icon: older.icon });
  fs.writeFileSync(path.join(dir, 'devices', 'minoston-mp22wp-outdoor-plug.json'), JSON.stringify(device));
  api = await serveDir(dir);
  env = { ...WIFI_ENV, FLASH_CLOUDCUTTER_API: api.url, XDG_CACHE_HOME: tempDir() };
});
after(() => api.close());

test('one device by slug: recipe and template written, checked, paths printed whole with the command that flashes it', async () => {
  const dir = path.join(tempDir(), 'my-recipes');
  const r = await runFlash(['recipe', 'ledvance-smartplus-eu-multi-socket-power-strip', '--recipes', dir, '--yes'], { env });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const recipeFile = path.join(dir, 'ledvance-smartplus-eu-multi-socket-power-strip.yaml');
  const templateFile = path.join(dir, 'ledvance-smartplus-eu-multi-socket-power-strip.esphome.yaml');
  assert.deepEqual(listFiles(dir), [path.basename(templateFile), path.basename(recipeFile)].sort());
  assert.ok(r.stdout.includes(`recipe    ${recipeFile}`) && r.stdout.includes(`template  ${templateFile}`), r.stdout);
  assert.match(r.stdout, /: relays, buttons, energy metering, Wi-Fi LED\n/);
  assert.match(r.stdout, /relay1 P14, relay2 P6, relay3 P8, relay4 P9, button_all P11, cf P26, cf1 P24, sel P1, status_led P10/);
  assert.match(r.stdout, new RegExp(`npx tsx .*flash\\.ts .*ledvance-smartplus-eu-multi-socket-power-strip\\.yaml --check-pins`));
  const { recipe } = loadRecipe(recipeFile);
  assert.equal(recipe.mcu, 'bk7231t');
  assert.equal(recipe.cloudcutter.device, 'ledvance-smartplus-eu-multi-socket-power-strip');
  // The editor schema line points at recipes/recipe.schema.json from wherever the recipe is.
  const schema = /\$schema=(\S+)/.exec(fs.readFileSync(recipeFile, 'utf8'))![1];
  assert.ok(fs.existsSync(path.resolve(dir, schema)), schema);
  // It goes through the rest of flash.ts like a hand-written recipe: the whole plan in a dry run.
  const plan = await runFlash([recipeFile, '--dry-run', '--out', path.join(dir, 'esphome')], { env });
  assert.equal(plan.code, 0, plan.stdout + plan.stderr);
  assert.match(plan.stdout, /\[\d\/\d\] cloudcutter/);
});

test('several devices match: listed and refused with --yes; chosen from a list with a person there', async () => {
  const dir = tempDir();
  const r = await runFlash(['recipe', 'ledvance', 'plug', '--recipes', dir, '--yes'], { env });
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /3 devices match "ledvance plug": .*ledvance-smartplus-ac31267-outdoor-plug-v1\.1\.8/);
  assert.match(r.stderr, /fix: add words, or give the slug/);
  assert.deepEqual(listFiles(dir), []);

  const user = virtualUser(undefined, { overrides: {
    recipe_device: (q) => q.choices!.find((c) => c.includes('ac31267'))!,
  } });
  const chosen = await runInProcess(['recipe', 'ledvance plug', '--recipes', dir], env, user);
  assert.equal(chosen.code, 0, chosen.out);
  assert.deepEqual(user.asked.map((q) => q.id), ['recipe_device']);
  assert.ok(fs.existsSync(path.join(dir, 'ledvance-smartplus-ac31267-outdoor-plug-v1.1.8.yaml')));
});

test('a device with two stock firmware versions: the user says which; --yes takes the first and names the other', async () => {
  const dir = tempDir();
  const user = virtualUser(undefined, { overrides: { recipe_profile: '1.1.4 - BK7231N / oem_bk7231n_plug' } });
  const asked = await runInProcess(['recipe', 'minoston-mp22wp-outdoor-plug', '--recipes', dir], env, user);
  assert.equal(asked.code, 0, asked.out);
  const text = fs.readFileSync(path.join(dir, 'minoston-mp22wp-outdoor-plug.yaml'), 'utf8');
  assert.match(text, /profile: 1\.1\.4 - BK7231N \/ oem_bk7231n_plug/);
  assert.match(text, /other stock firmware cloudcutter knows for it: 1\.1\.8 - BK7231N \/ oem_bk7231n_plug/);

  const other = tempDir();
  const unattended = await runFlash(['recipe', 'minoston-mp22wp-outdoor-plug', '--recipes', other, '--yes'], { env });
  assert.equal(unattended.code, 0, unattended.stderr);
  assert.match(fs.readFileSync(path.join(other, 'minoston-mp22wp-outdoor-plug.yaml'), 'utf8'), /profile: 1\.1\.8 - BK7231N/);
});

test('what cannot be a recipe is refused with the reason, naming the key, and nothing is written', async () => {
  const dir = tempDir();
  const cases: [string, RegExp][] = [
    ['avatto-n-wot10-eu-plug-v1.0.11', /no recipe: it has no pin configuration \(device_configuration\) and no TuyaMCU/],
    ['tuya-generic-10a-relay-v1.1.0', /firmware\.chip: no recipe: its chip is RTL8720CF, not a Beken BK7231T\/N/],
  ];
  for (const [slug, says] of cases) {
    const r = await runFlash(['recipe', slug, '--recipes', dir, '--yes'], { env });
    assert.equal(r.code, 2, `${slug}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, says, slug);
    assert.match(r.stderr, /nothing was written/);
  }
  assert.deepEqual(listFiles(dir), []);
  const none = await runFlash(['recipe', 'ledvanse', 'outdor', '--recipes', dir, '--yes'], { env });
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no device in cloudcutter's list matches "ledvanse outdor"[\s\S]*did you mean one of these\?\n\s+LEDVANCE SmartPlus AC31267 Outdoor Plug/);
});

test('an existing recipe is never overwritten with --yes, and only when the user says so otherwise', async () => {
  const dir = tempDir();
  assert.equal((await runFlash(['recipe', 'kmc-30153-smart-plug-mini', '--recipes', dir, '--yes'], { env })).code, 0);
  const file = path.join(dir, 'kmc-30153-smart-plug-mini.yaml');
  fs.appendFileSync(file, '# my own notes\n');
  const before = fs.readFileSync(file, 'utf8');
  const r = await runFlash(['recipe', 'kmc-30153-smart-plug-mini', '--recipes', dir, '--yes'], { env });
  // Nobody to ask: the question's answer is its default, said as such, and nothing is written.
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /exists\. Overwrite it\? → no \(--yes: nobody is asked\)/);
  assert.match(r.stdout, /nothing was written: move \S+ away, or write elsewhere with --recipes DIR/);
  const user = virtualUser(undefined);
  const kept = await runInProcess(['recipe', 'kmc-30153-smart-plug-mini', '--recipes', dir], env, user);
  assert.equal(kept.code, 1, kept.out);
  assert.deepEqual(user.asked.map((q) => [q.id, q.default]), [['recipe_overwrite', false]]);
  assert.equal(fs.readFileSync(file, 'utf8'), before);
});

test('offline after the first look: the list and device files come from the cache', async () => {
  const cache = tempDir();
  const dir = tempDir();
  const online = await runFlash(['recipe', 'woox-r4967-smart-switch-v1.1.6', '--recipes', dir, '--yes'],
    { env: { ...env, XDG_CACHE_HOME: cache } });
  assert.equal(online.code, 0, online.stderr);
  fs.rmSync(dir, { recursive: true });
  const offline = await runFlash(['recipe', 'woox-r4967-smart-switch-v1.1.6', '--recipes', dir, '--yes'],
    { env: { ...env, XDG_CACHE_HOME: cache, FLASH_CLOUDCUTTER_API: 'http://127.0.0.1:1' } });
  assert.equal(offline.code, 0, offline.stdout + offline.stderr);
  assert.match(offline.stdout, /using the copy cached/);
  assert.ok(fs.existsSync(path.join(dir, 'woox-r4967-smart-switch-v1.1.6.yaml')));
});

test('matching devices: every word, any order, any case; a slug alone is that device', () => {
  const list = JSON.parse(fs.readFileSync(path.join(CLOUDCUTTER_API_FIXTURES, 'devices.json'), 'utf8'));
  assert.deepEqual(matchDevices(list, ['PLUG', 'ledvance']).map((d) => d.slug).sort(),
    ['ledvance-smartplus-ac31267-outdoor-plug-v1.1.8', 'ledvance-smartplus-plug-ch', 'ledvance-smartplus-plug-eu']);
  assert.deepEqual(matchDevices(list, ['ledvance-smartplus-plug-eu']).map((d) => d.slug), ['ledvance-smartplus-plug-eu']);
  assert.ok(FLASH);
});

test('a device file on disk (one cloudcutter does not list yet, or edited): the same recipe, offline', async () => {
  const dir = tempDir();
  const device = JSON.parse(fs.readFileSync(path.join(CLOUDCUTTER_API_FIXTURES, 'devices',
    'tuya-generic-mini-smart-switch.json'), 'utf8'));
  device.slug = 'my-edited-switch';
  device.device_configuration.onoff1 = 23; // the user moved the wall-switch input
  const file = path.join(tempDir(), 'my-edited-switch.json');
  fs.writeFileSync(file, JSON.stringify(device));
  // No profile API at all: the chip comes from the profile's label in the device file.
  const r = await runFlash(['recipe', file, '--recipes', dir, '--yes'],
    { env: { ...env, FLASH_CLOUDCUTTER_API: 'http://127.0.0.1:1' } });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const { recipe } = loadRecipe(path.join(dir, 'my-edited-switch.yaml'));
  assert.equal(recipe.mcu, 'bk7231n');
  assert.equal(recipe.pins.wall_switch, 'P23');
  assert.equal(recipe.cloudcutter.profile, '1.2.1 - BK7231N / oem_bk7231n_control_switch');
  assert.match(r.stdout, /wall switch inputs/);
});

test('--profile picks the stock firmware for a device file; a profile cloudcutter does not have is bad input', async () => {
  const dir = tempDir();
  const file = path.join(CLOUDCUTTER_API_FIXTURES, 'devices', 'minoston-mp22wp-outdoor-plug.json');
  const r = await runFlash(['recipe', file, '--recipes', dir, '--yes', '--profile',
    'oem-bk7231n-plug-1.1.4-sdk-2.3.1-40.00'], { env });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(fs.readFileSync(path.join(dir, 'minoston-mp22wp-outdoor-plug.yaml'), 'utf8'),
    /profile: 1\.1\.4 - BK7231N \/ oem_bk7231n_plug/);
  const bad = await runFlash(['recipe', file, '--recipes', tempDir(), '--yes', '--profile', '9.9.9 - BK7231N / nope'],
    { env });
  assert.equal(bad.code, 2, bad.stdout + bad.stderr);
  assert.match(bad.stderr, /--profile: "9\.9\.9 - BK7231N \/ nope" is not a profile in cloudcutter's list/);
});

test('a TuyaMCU device: no pins to check, so the next command is the flash itself', async () => {
  const dir = tempDir();
  const r = await runFlash(['recipe', 'moes-ms-105-dimmer-switch', '--recipes', dir, '--yes'], { env });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /: TuyaMCU\n/);
  assert.match(r.stdout, /Nothing to check pin by pin/);
  assert.doesNotMatch(r.stdout, /--check-pins/);
});

// The plug's own wiring, as the tools around Tuya devices hand it over: a flash dump, the storage JSON bk7231tools
// prints, Tuya's user_param_key text. Each gives the recipe `recipe SLUG` gives for the same configuration.
test('a flash dump, a storage JSON and a user_param_key: the same recipe as the device\'s slug gives', async () => {
  const { tuyaFlashImage, typicalTuyaValues } = await import('./sim/tuya-storage.ts');
  const device = JSON.parse(fs.readFileSync(path.join(CLOUDCUTTER_API_FIXTURES, 'devices',
    'ledvance-smartplus-eu-multi-socket-power-strip.json'), 'utf8'));
  const name = 'LEDVANCE SmartPlus EU Multi Socket Power Strip';
  const profile = '1.3.5 - BK7231T / oem_bk7231s_dltj';
  const values = typicalTuyaValues(device.device_configuration);
  const files = tempDir();
  const dump = tuyaFlashImage({ chip: 'bk7231t', values });
  fs.writeFileSync(path.join(files, 'strip.bin'), dump.read(0, 0x200000));
  fs.writeFileSync(path.join(files, 'strip_storage.json'), JSON.stringify({ gw_bi: { uuid: 'SECRET-uuid' },
    user_param_key: device.device_configuration, gw_wsm: { ssid: 'SECRET-net', passwd: 'SECRET-pass' } }, null, '\t'));
  fs.writeFileSync(path.join(files, 'upk.txt'), values.user_param_key);

  const bySlug = tempDir();
  assert.equal((await runFlash(['recipe', device.slug, '--recipes', bySlug, '--yes'], { env })).code, 0);
  const expected = readGenerated(bySlug, device.slug);
  for (const file of ['strip.bin', 'strip_storage.json', 'upk.txt']) {
    const dir = tempDir();
    const r = await runFlash(['recipe', path.join(files, file), '--profile', profile, '--name', name, '--recipes', dir,
      '--yes'], { env });
    assert.equal(r.code, 0, `${file}: ${r.stdout}${r.stderr}`);
    const got = readGenerated(dir, 'ledvance-smartplus-eu-multi');
    assert.deepEqual(got.recipe, { ...expected.recipe, cloudcutter: { profile } }, file);
    assert.equal(got.template, expected.template, file);
    assert.doesNotMatch(r.stdout + r.stderr + fs.readFileSync(got.file, 'utf8'), /SECRET|SIMAUTHKEY|correct horse/);
  }
  // Without --profile the recipe could not run cloudcutter: said, and nothing written.
  const none = tempDir();
  const missing = await runFlash(['recipe', path.join(files, 'strip.bin'), '--recipes', none, '--yes'], { env });
  assert.equal(missing.code, 2, missing.stdout + missing.stderr);
  assert.match(missing.stderr, /--profile: the flash dump strip\.bin .*does not say which stock firmware/);
  assert.match(missing.stderr, /profiles bk7231t/);
  assert.deepEqual(listFiles(none), []);
});

test('a dump whose storage is erased, and a file that is none of the shapes, are refused saying why', async () => {
  const files = tempDir();
  fs.writeFileSync(path.join(files, 'erased.bin'), Buffer.alloc(0x200000, 0xff));
  fs.writeFileSync(path.join(files, 'notes.txt'), 'my plug has a relay on P24\n');
  for (const [file, says] of [['erased.bin', /a flash dump without Tuya's storage: no Tuya storage in it/],
    ['notes.txt', /not a device file, flash dump, storage JSON or user_param_key/]] as const) {
    const r = await runFlash(['recipe', path.join(files, file), '--profile', 'oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00',
      '--recipes', tempDir(), '--yes'], { env });
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, says);
  }
});

/** A written recipe (as data, its header comments aside) and its template (from its first line that is not a
 *  comment). */
function readGenerated(dir: string, slug: string): { file: string; recipe: any; template: string } {
  const file = path.join(dir, `${slug}.yaml`);
  const recipe = YAML.parse(fs.readFileSync(file, 'utf8'));
  delete recipe.esphome;
  const template = fs.readFileSync(path.join(dir, `${slug}.esphome.yaml`), 'utf8').replace(/^(#.*\n)+/, '');
  return { file, recipe, template };
}
