// Everything knowable is checked before anything happens, flash.ts runs from anywhere like a tool, and
// what it says at the end of a run is true: what was written, what is done, what comes next.
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { makeFakeWorld } from './fakes.ts';
import { CLOUDCUTTER_API_FIXTURES, FLASH, ROOT, WIFI_ENV, copyRecipes, listFiles, runFlash, serveDir, tempDir } from './helpers.ts';
import { runInProcess, startChild } from './workbench.ts';
import { virtualUser } from './virtual-user.ts';
import { matchProfiles, wifiProblem, type ProfileEntry } from '../flash.ts';

/** A fake world with the API fixtures served, and an empty place for the config dir. */
async function bench() {
  const api = await serveDir(CLOUDCUTTER_API_FIXTURES);
  const w = await makeFakeWorld({ docker: { daemon: true } });
  const out = path.join(w.dir, 'esphome');
  const env = { ...w.env, ...WIFI_ENV, FLASH_CLOUDCUTTER_API: api.url, XDG_CACHE_HOME: path.join(w.dir, 'cache') };
  return { w, out, env, args: ['--out', out, '--cloudcutter', w.cloudcutter!], close: async () => (await api.close(), await w.cleanup()) };
}

test('--check-pins --yes is refused before anything is touched, naming the flag to drop', async () => {
  const b = await bench();
  try {
    const r = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--check-pins'], { env: b.env });
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /bad input \(nothing was written\)/);
    assert.match(r.stderr, /command line: --check-pins: the pins step asks you about the plug, and --yes means nobody answers/);
    assert.match(r.stderr, /fix: drop --yes \(or --check-pins\)/);
    assert.deepEqual(listFiles(b.out), []);
    assert.deepEqual(b.w.calls(), [], 'no tool was run');
  } finally {
    await b.close();
  }
});

test('a profile label cloudcutter does not have: exit 2 in --dry-run and before a run writes anything, with the line', async () => {
  const b = await bench();
  const dir = copyRecipes();
  const recipe = path.join(dir, '23A.yaml');
  fs.writeFileSync(recipe, fs.readFileSync(recipe, 'utf8').replace('1.1.8 - BK7231N / oem_bk7231n_plug', '1.1.9 - BK7231N / oem_bk7231n_plug'));
  try {
    for (const extra of [['--dry-run'], ['--yes']]) {
      const r = await runFlash([recipe, ...b.args, ...extra], { env: b.env });
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /bad input \(nothing was written\)/);
      assert.match(r.stderr, /23A\.yaml:7: cloudcutter\.profile: "1\.1\.9 - BK7231N \/ oem_bk7231n_plug" is not a profile in cloudcutter's list/);
      assert.match(r.stderr, /fix: did you mean: .*1\.1\.8 - BK7231N \/ oem_bk7231n_plug/);
      assert.deepEqual(listFiles(b.out), [], `${extra}: nothing written`);
    }
    assert.equal(b.w.calls('tuya-cloudcutter.sh').length, 0);
    // doctor shows the same mistake in its table (and exits 1 like any failed check).
    const d = await runFlash(['doctor', recipe, ...b.args], { env: b.env });
    assert.equal(d.code, 1);
    assert.match(d.stdout, /✗ cloudcutter profile .*23A\.yaml:7: cloudcutter\.profile: "1\.1\.9/);
  } finally {
    await b.close();
  }
});

test('a Wi-Fi password ESPHome would refuse is bad input before anything is written: environment or secrets.yaml', async () => {
  const b = await bench();
  try {
    const short = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'config'], { env: { ...b.env, FLASH_WIFI_PASSWORD: 'seven77' } });
    assert.equal(short.code, 2, short.stdout + short.stderr);
    assert.match(short.stderr, /environment: FLASH_WIFI_PASSWORD: WPA password must be at least 8 characters long/);
    assert.ok(!short.stderr.includes('seven77'), 'the password itself is not printed');
    assert.deepEqual(listFiles(b.out), []);

    const long = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'config'], { env: { ...b.env, FLASH_WIFI_SSID: 'x'.repeat(33) } });
    assert.equal(long.code, 2);
    assert.match(long.stderr, /FLASH_WIFI_SSID: "x{33}" is 33 bytes: a Wi-Fi name has at most 32/);

    fs.mkdirSync(b.out);
    fs.writeFileSync(path.join(b.out, 'secrets.yaml'), 'wifi_ssid: "HomeNet"\nwifi_password: "pw"\n', { mode: 0o600 });
    const inFile = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'config'], { env: b.env });
    assert.equal(inFile.code, 2);
    assert.match(inFile.stderr, /secrets\.yaml:2: wifi_password: WPA password must be at least 8 characters long/);
    assert.deepEqual(listFiles(b.out), ['secrets.yaml']);
  } finally {
    await b.close();
  }
  assert.equal(wifiProblem('wifi_password', 'a'.repeat(63)), undefined);
  assert.equal(wifiProblem('wifi_password', 'ab'.repeat(32)), undefined, '64 hex digits are a raw key');
  assert.match(wifiProblem('wifi_password', 'x'.repeat(64))!, /8 to 63/);
  assert.match(wifiProblem('wifi_ssid', 'ü'.repeat(17))!, /34 bytes/);
});

test('`profiles WORDS` lists the labels and slugs a recipe may name', async () => {
  const api = await serveDir(CLOUDCUTTER_API_FIXTURES);
  try {
    const env = { FLASH_CLOUDCUTTER_API: api.url, XDG_CACHE_HOME: tempDir() };
    const r = await runFlash(['profiles', 'bk7231n', 'plug', '1.1.8'], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /1\.1\.8 - BK7231N \/ oem_bk7231n_plug +oem-bk7231n-plug-1\.1\.8-sdk-2\.3\.1-40\.00/);
    assert.ok(!/BK7231T/.test(r.stdout), 'only what matches every word');
    const none = await runFlash(['profiles', 'esp32'], { env });
    assert.equal(none.code, 1);
    assert.match(none.stdout, /no profile matches esp32/);
  } finally {
    await api.close();
  }
  const list: ProfileEntry[] = JSON.parse(fs.readFileSync(path.join(CLOUDCUTTER_API_FIXTURES, 'profiles.json'), 'utf8'));
  const t = matchProfiles(list, ['BK7231T', 'rnd_switch']);
  assert.ok(t.length > 1 && t.every((p) => p.name.includes('BK7231T') && p.sub_name!.includes('rnd_switch')));
});

test('--only config says what it did and how to go on, not that the plug is done', async () => {
  const b = await bench();
  try {
    const r = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'config'], { env: b.env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /✓ config done for status-plug-01\./);
    assert.ok(!/status-plug-01 (runs ESPHome|done\.)/.test(r.stdout), r.stdout);
    assert.match(r.stdout, /To go on from here: npx tsx flash\.ts recipes\/23A\.yaml +--out /);
  } finally {
    await b.close();
  }
});

test('--only upload with no known address fails as the upload step, naming --device-ip', async () => {
  const b = await bench();
  try {
    const r = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'upload'], { env: b.env });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /✗ upload failed: the plug's address is not known yet/);
    assert.match(r.stderr, /--device-ip IP/);
  } finally {
    await b.close();
  }
});

test('Ctrl+C before any step finished does not point at a journal that does not exist', async () => {
  const b = await bench();
  const w = await makeFakeWorld({ esphome: { delayMs: 20_000 } });
  try {
    fs.mkdirSync(b.out);
    // A config to compile, without the config step (that one would start the journal).
    fs.writeFileSync(path.join(b.out, 'status-plug-01.yaml'), 'esphome:\n  name: status-plug-01\nbk72xx:\n  board: cb2s\n');
    const run = startChild(['recipes/23A.yaml', '--out', b.out, '--only', 'compile', '--yes'], { ...w.env, ...WIFI_ENV });
    await run.waitFor(/esphome compile/);
    run.child.kill('SIGINT');
    assert.equal(await run.exited, 130);
    assert.match(run.output(), /■ stopped \(SIGINT\) during the compile step/);
    assert.match(run.output(), /No step had finished: run the same command again to start/);
    assert.ok(!fs.existsSync(path.join(b.out, '.flash', 'status-plug-01.json')));
  } finally {
    await w.cleanup();
    await b.close();
  }
});

test('runnable from anywhere: by its path and through a link (as npm link installs it), from another directory',
  async () => {
    assert.ok(fs.statSync(FLASH).mode & 0o100, 'flash.ts is executable');
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    // As npm writes it into package-lock.json: `npm install` leaves the lock as it is.
    assert.equal(pkg.bin['flash.ts'], 'flash.ts');
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8'));
    assert.deepEqual(lock.packages[''].bin, pkg.bin);
    const elsewhere = tempDir();
    const link = path.join(tempDir(), 'flash.ts');
    fs.symlinkSync(FLASH, link);
    for (const command of [FLASH, link]) {
      const r = spawnSync(command, ['--version'], { cwd: elsewhere, encoding: 'utf8', env: { ...process.env, PATH: '/usr/bin:/bin:' + path.dirname(process.execPath) } });
      assert.equal(r.status, 0, `${command}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), pkg.version, 'the version is package.json\'s');
    }
  });

test('a recipe elsewhere, run from a third directory: paths printed whole, an absolute template path', async () => {

  // A recipe elsewhere whose template is named by absolute path, run from a third directory.
  const dir = copyRecipes();
  const recipe = path.join(dir, '23A.yaml');
  const template = path.join(tempDir(), 'my-template.esphome.yaml');
  fs.copyFileSync(path.join(dir, 'status-plug.esphome.yaml'), template);
  fs.writeFileSync(recipe, fs.readFileSync(recipe, 'utf8').replace('esphome: status-plug.esphome.yaml', `esphome: ${template}`));
  const cwd = tempDir();
  const r = await runFlash([recipe, '--only', 'config', '--yes'], { cwd, env: WIFI_ENV });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const config = path.join(cwd, 'esphome', 'status-plug-01.yaml');
  assert.ok(fs.existsSync(config), 'writes ./esphome where it runs');
  assert.ok(r.stdout.includes(`created ${config}`), `the path is printed whole:\n${r.stdout}`);
  // From elsewhere, the command to go on runs flash.ts by its path: npx finds tsx only in flash.ts's own folder.
  assert.match(r.stdout, new RegExp(`To go on from here: ${FLASH.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} `));
});

test('--only check runs the checks, even for a plug whose every step is done', async () => {
  const b = await bench();
  try {
    // A journal that says every step is done: --only check still checks this machine.
    const journal = path.join(b.out, '.flash', 'status-plug-01.json');
    const first = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'check'], { env: b.env });
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /\[1\/1\] check/);
    assert.match(first.stdout, /✓ Docker\s+daemon .* answering/);
    assert.ok(b.w.calls('docker').length > 0, 'docker was asked');
    fs.mkdirSync(path.dirname(journal), { recursive: true });
    const done = Object.fromEntries(['config', 'compile', 'cloudcutter', 'kickstart', 'upload', 'verify']
      .map((s) => [s, { inputs: 'x', at: '2026-01-01T00:00:00Z' }]));
    fs.writeFileSync(journal, JSON.stringify({ steps: done, facts: {} }));
    const again = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'check'], { env: b.env });
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.doesNotMatch(again.stdout, /every step is already done/);
    assert.match(again.stdout, /✓ Wi-Fi adapter/);
  } finally {
    await b.close();
  }
});

test('a first run on a bare machine: every check is shown before the clone is offered, and only a missing checkout ' +
  'is offered one', async () => {
  const api = await serveDir(CLOUDCUTTER_API_FIXTURES);
  // No Docker, no NetworkManager, no checkout.
  const bare = await makeFakeWorld({ docker: false, nmcli: false, cloudcutter: false });
  try {
    const env = { ...bare.env, ...WIFI_ENV, FLASH_CLOUDCUTTER_API: api.url, XDG_CACHE_HOME: path.join(bare.dir, 'c') };
    const checkout = path.join(bare.dir, 'tuya-cloudcutter');
    const user = virtualUser(undefined);
    const r = await runInProcess(['recipes/23A.yaml', '--only', 'check', '--cloudcutter', checkout], env, user);
    user.stop();
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /✗ Docker/);
    assert.match(r.out, /✗ cloudcutter checkout/);
    assert.deepEqual(user.asked.map((q) => q.id), [], 'no clone offered while Docker is missing too');
  } finally {
    await bare.cleanup();
  }
  // Everything else ready: the clone is offered, after the table that shows why.
  const ready = await makeFakeWorld({ docker: { daemon: true }, cloudcutter: false });
  try {
    const env = { ...ready.env, ...WIFI_ENV, FLASH_CLOUDCUTTER_API: api.url, XDG_CACHE_HOME: path.join(ready.dir, 'c') };
    const checkout = path.join(ready.dir, 'tuya-cloudcutter');
    const user = virtualUser(undefined, { overrides: { clone_cloudcutter: false } });
    const r = await runInProcess(['recipes/23A.yaml', '--only', 'check', '--cloudcutter', checkout], env, user);
    user.stop();
    assert.equal(r.code, 1, r.out);
    assert.deepEqual(user.asked.map((q) => q.id), ['clone_cloudcutter']);
    assert.ok(r.out.indexOf('✗ cloudcutter checkout') < r.out.indexOf('Clone it now?'), r.out);
  } finally {
    await ready.cleanup();
    await api.close();
  }
});
