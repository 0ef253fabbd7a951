// The cloudcutter step and the doctor, run as a user runs them (flash.ts in a child process) against
// the fake tools of test/fakes.ts and the real cloudcutter API files served on 127.0.0.1:
//   - doctor: one table of ✓/✗ checks, a fix under each ✗, exit 0 only when all pass, busy ports
//     named with their holder (and never killed), the exact git clone command for a missing checkout;
//   - `--only cloudcutter --yes`: exactly `-p <device slug> -f <kickstart file>` (plus `-w` only with
//     --wifi-iface), run in the checkout, with the API's device and profile JSON written beside it;
//   - every scripted cloudcutter failure: its diagnosis, the retry command and a log of what it printed;
//   - a retry with --from cloudcutter that leaves the config step alone;
//   - the profile API cache (offline with a cache works, without one is a clear error);
//   - the Wi-Fi password never shows in what flash.ts prints or logs.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { makeFakeWorld, CLOUDCUTTER_MESSAGES, chipMismatchLine, type FakeWorld, type FakeWorldOptions, type CloudcutterOutcome } from './fakes.ts';
import { runFlash, serveDir, tempDir, WIFI_ENV, CLOUDCUTTER_API_FIXTURES, type RunResult } from './helpers.ts';
import { BENCH_TIME_SCALE, startBench } from './workbench.ts';
import { freeUdpPort, startSimPlug } from './sim/plug.ts';
import { kickstartFileName, type Mcu } from './firmware-files.ts';
import { CLOUDCUTTER_DIAGNOSES } from '../flash.ts';

// What each recipe resolves to in the API fixtures: the recipe names a profile by its menu label, the
// profile file lists its devices, and flash.ts hands cloudcutter the first one (flash mode does the same).
const RECIPES = {
  '23A': { recipe: 'recipes/23A.yaml', mcu: 'bk7231n' as Mcu, chip: 'BK7231N', device: 'minoston-mp22wp-outdoor-plug', profile: 'oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00' },
  '21D': { recipe: 'recipes/21D.yaml', mcu: 'bk7231t' as Mcu, chip: 'BK7231T', device: 'kmc-30153-smart-plug-mini', profile: 'oem-bk7231s-rnd-switch-1.0.7-sdk-2.0.0-30.06' },
};
const R23A = RECIPES['23A'];
const isRoot = process.getuid?.() === 0;

let api: Awaited<ReturnType<typeof serveDir>>;
before(async () => {
  api = await serveDir(CLOUDCUTTER_API_FIXTURES);
});
after(async () => {
  await api.close();
});

/** The parts of the API's device and profile JSON the tests look into. */
interface ApiJson { firmware?: { chip?: string }; profiles?: { slug: string }[]; [key: string]: unknown }

function fixture(rel: string): ApiJson {
  return JSON.parse(fs.readFileSync(path.join(CLOUDCUTTER_API_FIXTURES, rel), 'utf8'));
}

/** A fresh fake world (Docker answering unless the test says otherwise) and its own config dir and cache. */
async function world(opts: FakeWorldOptions = {}): Promise<{ w: FakeWorld; out: string; env: NodeJS.ProcessEnv }> {
  const w = await makeFakeWorld({ timeScale: BENCH_TIME_SCALE, ...opts, docker: opts.docker ?? { daemon: true } });
  const env: NodeJS.ProcessEnv = {
    ...w.env,
    ...WIFI_ENV,
    FLASH_CLOUDCUTTER_API: api.url,
    XDG_CACHE_HOME: path.join(w.dir, 'cache'),
    // A retry after a failed cloudcutter run first looks for Kickstart by mDNS: keep that on loopback, on a port of
    // this world's own.
    FLASH_MDNS_INTERFACE: '127.0.0.1',
    FLASH_MDNS_PORT: String(await freeUdpPort()),
  };
  return { w, out: path.join(w.dir, 'esphome'), env };
}

/** Switches what the world's fake cloudcutter does on its next run (it reads world.json on every start). */
function setOutcome(w: FakeWorld, outcome: CloudcutterOutcome): void {
  const file = path.join(w.dir, 'world.json');
  const settings = JSON.parse(fs.readFileSync(file, 'utf8'));
  settings.cloudcutter.outcome = outcome;
  fs.writeFileSync(file, JSON.stringify(settings, null, 2));
}

/** `flash.ts RECIPE --only config` then `--only cloudcutter`, the way the "done when" runs it. */
async function configure(recipe: string, out: string, env: NodeJS.ProcessEnv): Promise<void> {
  const r = await runFlash([recipe, '--only', 'config', '--yes', '--out', out], { env });
  assert.equal(r.code, 0, r.stdout + r.stderr);
}

function cutArgs(recipe: string, w: FakeWorld, out: string, ...extra: string[]): string[] {
  return [recipe, '--only', 'cloudcutter', '--yes', '--cloudcutter', w.cloudcutter!, '--out', out, ...extra];
}

/** The cloudcutter logs a run left in <out>/.flash/logs/. */
function cloudcutterLogs(out: string): string[] {
  const dir = path.join(out, '.flash', 'logs');
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => /^cloudcutter-.*\.log$/.test(f)).map((f) => path.join(dir, f));
}

/** What tuya-cloudcutter.sh was started with. As root flash.ts runs it directly, otherwise through sudo. */
function cloudcutterCalls(w: FakeWorld) {
  const calls = w.calls('tuya-cloudcutter.sh');
  if (!isRoot) assert.deepEqual(w.calls('sudo').filter((c) => c.argv[0] === './tuya-cloudcutter.sh').map((c) => c.argv.slice(1)), calls.map((c) => c.argv));
  return calls;
}

interface Row { ok: boolean; name: string; detail: string; fix?: string }

/** The doctor's table: one row per check (✓/✗, name, detail), with the `fix:` line printed under a ✗. */
function doctorTable(stdout: string): Map<string, Row> {
  const rows = new Map<string, Row>();
  let last: Row | undefined;
  for (const line of stdout.split('\n')) {
    const row = line.match(/^ {2}([✓✗]) (\S+(?: \S+)*) {2,}(.*)$/);
    if (row) {
      last = { ok: row[1] === '✓', name: row[2], detail: row[3] };
      rows.set(last.name, last);
      continue;
    }
    const fix = line.match(/^\s+fix: (.*)$/);
    if (fix && last) last.fix = fix[1];
  }
  return rows;
}

const CHECKS = ['Linux', 'Docker', 'Wi-Fi adapter', 'sudo', 'cloudcutter checkout', 'cloudcutter profile', 'Kickstart firmware',
  'free ports', 'ESPHome'];

/** A port nobody listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

describe('doctor', { concurrency: true }, () => {
  test('Docker daemon down, no Wi-Fi adapter and a busy port: exit 1, each ✗ with a fix, the holder named and left running', async () => {
    // A real process stands in for dnsmasq, so "never kills it" is checked on a live pid.
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    const { w, env } = await world({
      docker: { daemon: false },
      nmcli: { wifiIface: '' },
      ss: { busy: [{ proto: 'udp', port: 53, process: 'dnsmasq', pid: holder.pid! }, { proto: 'tcp', port: 1883, process: 'mosquitto', pid: 4711 }] },
    });
    try {
      // And offline: nothing answers for the profile API, and nothing is cached yet.
      const r = await runFlash(['doctor', R23A.recipe, '--cloudcutter', w.cloudcutter!], { env: { ...env, FLASH_CLOUDCUTTER_API: 'http://127.0.0.1:1' } });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const table = doctorTable(r.stdout);
      assert.deepEqual([...table.keys()], CHECKS, 'one table with every check of the issue');

      const docker = table.get('Docker')!;
      assert.equal(docker.ok, false);
      assert.match(docker.detail, /daemon is not answering/);
      assert.match(docker.fix ?? '', /systemctl start docker/);

      const wifi = table.get('Wi-Fi adapter')!;
      assert.equal(wifi.ok, false);
      assert.match(wifi.detail, /no Wi-Fi adapter/);
      assert.match(wifi.fix ?? '', /AP mode/);

      const ports = table.get('free ports')!;
      assert.equal(ports.ok, false);
      assert.match(ports.detail, new RegExp(`53/udp held by dnsmasq \\(pid ${holder.pid}\\)`));
      assert.match(ports.detail, /1883\/tcp held by mosquitto \(pid 4711\)/);
      assert.match(ports.fix ?? '', /dnsmasq/);

      // Every ✗ has its fix; the others are ✓ in this world.
      for (const row of table.values()) if (!row.ok) assert.ok(row.fix, `${row.name} has a fix line`);
      const profile = table.get('cloudcutter profile')!;
      assert.match(profile.detail, /cannot fetch http:\/\/127\.0\.0\.1:1\/profiles\.json .* no cached copy/);
      assert.match(profile.fix ?? '', /internet once .* FLASH_CLOUDCUTTER_API/);
      assert.deepEqual([...table.values()].filter((k) => !k.ok).map((k) => k.name), ['Docker', 'Wi-Fi adapter', 'cloudcutter profile', 'free ports']);
      assert.match(r.stdout, /4 checks failed/);

      // Nothing was stopped or killed: the holder still runs, and no tool got a kill/stop command.
      assert.equal(holder.exitCode, null);
      assert.equal(holder.signalCode, null);
      process.kill(holder.pid!, 0);
      for (const call of w.calls()) assert.ok(!call.argv.some((a) => /^(kill|pkill|killall|stop)$/.test(a)), `${call.tool} ${call.argv.join(' ')}`);
    } finally {
      holder.kill();
      await w.cleanup();
    }
  });

  test('a Wi-Fi adapter without AP mode is ✗ with a fix', async () => {
    const { w, env } = await world({ nmcli: { apMode: false } });
    try {
      const r = await runFlash(['doctor', R23A.recipe, '--cloudcutter', w.cloudcutter!], { env });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const wifi = doctorTable(r.stdout).get('Wi-Fi adapter')!;
      assert.equal(wifi.ok, false);
      assert.match(wifi.detail, /wlan1: AP mode not supported/);
      assert.match(wifi.fix ?? '', /AP: yes/);
    } finally {
      await w.cleanup();
    }
  });

  test('no cloudcutter checkout: the fix is the exact git clone command for that directory', async () => {
    const { w, env } = await world({ cloudcutter: false });
    // A space in the path: the command must still be one a user can paste.
    const missing = path.join(w.dir, 'my tools', 'tuya-cloudcutter');
    try {
      const r = await runFlash(['doctor', R23A.recipe, '--cloudcutter', missing], { env });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const row = doctorTable(r.stdout).get('cloudcutter checkout')!;
      assert.equal(row.ok, false);
      assert.match(row.detail, /no tuya-cloudcutter\.sh in/);
      assert.equal(row.fix, `git clone --depth 1 https://github.com/tuya-cloudcutter/tuya-cloudcutter.git '${missing}'`);
      // The shell splits it into git's arguments with the directory as one word.
      const words = execFileSync('bash', ['-c', `set -- ${row.fix}; printf '%s\\0' "$@"`], { encoding: 'utf8' }).split('\0').slice(0, -1);
      assert.deepEqual(words, ['git', 'clone', '--depth', '1', 'https://github.com/tuya-cloudcutter/tuya-cloudcutter.git', missing]);
      assert.equal(fs.existsSync(missing), false, 'doctor clones nothing itself');
      assert.equal(doctorTable(r.stdout).get('Kickstart firmware')!.ok, false);
    } finally {
      await w.cleanup();
    }
  });

  test('everything ready: every check ✓ and exit 0', async () => {
    const { w, env } = await world();
    try {
      const r = await runFlash(['doctor', R23A.recipe, '--cloudcutter', w.cloudcutter!], { env });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const table = doctorTable(r.stdout);
      assert.deepEqual([...table.keys()], CHECKS);
      for (const row of table.values()) assert.ok(row.ok, `${row.name}: ${row.detail}`);
      assert.match(table.get('Docker')!.detail, /answering/);
      assert.match(table.get('Wi-Fi adapter')!.detail, /wlan1 supports AP mode/);
      assert.match(table.get('Kickstart firmware')!.detail, new RegExp(`${kickstartFileName('bk7231n')} \\(BK7231N\\)`));
      // The recipe names no device: the one cloudcutter is given for the profile is no news to the user.
      assert.equal(table.get('cloudcutter profile')!.detail,
        '1.1.8 - BK7231N / oem_bk7231n_plug (oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00)');
      // Tests run as root here: then no sudo is needed at all; otherwise the fake sudo is there.
      assert.match(table.get('sudo')!.detail, isRoot ? /running as root/ : /available/);
      assert.match(r.stdout, /✓ ready/);
    } finally {
      await w.cleanup();
    }
  });
});

describe('--only cloudcutter --yes', { concurrency: true }, () => {
  const cases = [
    { name: '23A without --wifi-iface', ...R23A, iface: undefined },
    { name: '23A with --wifi-iface wlan1', ...R23A, iface: 'wlan1' },
    { name: '21D without --wifi-iface', ...RECIPES['21D'], iface: undefined },
  ];
  for (const k of cases) {
    // Without --wifi-iface, -w names the adapter the check found with AP mode (the world's only one, wlan1).
    test(`${k.name}: exactly -p ${k.device} -f <${k.chip} Kickstart> -w wlan1, in the checkout, with the API's ${k.chip} profile written`, async () => {
      const { w, out, env } = await world();
      try {
        await configure(k.recipe, out, env);
        const r = await runFlash(cutArgs(k.recipe, w, out, ...(k.iface ? ['--wifi-iface', k.iface] : [])), { env });
        assert.equal(r.code, 0, r.stdout + r.stderr);

        const calls = cloudcutterCalls(w);
        assert.deepEqual(calls.map((c) => c.argv), [['-p', k.device, '-f', kickstartFileName(k.mcu), '-w', 'wlan1']]);
        assert.equal(calls[0].cwd, w.cloudcutter);

        // The files cloudcutter reads for `-p` are the API's, unchanged.
        const dir = path.join(w.cloudcutter!, 'device-profiles', k.device);
        const device = JSON.parse(fs.readFileSync(path.join(dir, 'device.json'), 'utf8'));
        const profile = JSON.parse(fs.readFileSync(path.join(dir, 'profile.json'), 'utf8'));
        assert.deepEqual(device, fixture(`devices/${k.device}.json`));
        assert.deepEqual(profile, fixture(`profiles/${k.profile}.json`));
        assert.equal(profile.firmware?.chip, k.chip);
        assert.ok(device.profiles?.some((p) => p.slug === k.profile), 'the device lists the profile');

        assert.match(r.stdout, new RegExp(`Kickstart flashed.*kickstart-${k.mcu}`));
        const journal = JSON.parse(fs.readFileSync(path.join(out, '.flash', 'status-plug-01.json'), 'utf8'));
        assert.ok(journal.steps.cloudcutter, 'the journal lists cloudcutter done');
      } finally {
        await w.cleanup();
      }
    });
  }
});

// Which diagnosis each scripted failure must get: picked by hand from its meaning, not by the
// regexes flash.ts uses, so a table entry matching the wrong message fails here.
const FAILURES: { outcome: CloudcutterOutcome; what: RegExp; printed: (chip: string) => string[] }[] = [
  { outcome: 'exploit', what: /exploit did not work/, printed: () => [...CLOUDCUTTER_MESSAGES.exploit] },
  { outcome: 'chip', what: /different chip/, printed: (chip) => [chipMismatchLine(kickstartFileName('bk7231n'), chip)] },
  { outcome: 'ap', what: /access point/, printed: () => [...CLOUDCUTTER_MESSAGES.ap] },
  { outcome: 'docker', what: /Docker could not build/, printed: () => [...CLOUDCUTTER_MESSAGES.docker] },
  { outcome: 'adapter', what: /no Wi-Fi adapter/, printed: () => [CLOUDCUTTER_MESSAGES.adapter[0]] },
  { outcome: 'ota', what: /sending it the firmware failed/, printed: () => [...CLOUDCUTTER_MESSAGES.ota] },
];

describe('each scripted cloudcutter failure', { concurrency: true }, () => {
  for (const f of FAILURES) {
    test(`'${f.outcome}': exit 1, its diagnosis, the --from cloudcutter retry command, and cloudcutter's output in the log`, async () => {
      const { w, out, env } = await world({ cloudcutter: { outcome: f.outcome } });
      try {
        const r = await runFlash(cutArgs(R23A.recipe, w, out), { env });
        const all = r.stdout + r.stderr;
        assert.equal(r.code, 1, all);
        assert.equal(cloudcutterCalls(w).length, 1, 'cloudcutter ran once (--yes: no retry now)');

        const entries = CLOUDCUTTER_DIAGNOSES.filter((d) => f.what.test(d.what));
        assert.equal(entries.length, 1, `one diagnosis means ${f.what}`);
        const d = entries[0];
        assert.ok(all.includes(`✗ ${d.what}`), `diagnosis "${d.what}" in:\n${all}`);
        assert.ok(r.stderr.includes(`cloudcutter failed: ${d.what}`), r.stderr);
        // The fix, with {tryOther} spelled out as the recipes for the other chip.
        const [before, afterOther] = d.fix.split('{tryOther}');
        assert.ok(all.includes(`what to do: ${before}`), `fix "${d.fix}" in:\n${all}`);
        if (afterOther !== undefined) {
          assert.match(all, /the other MCU \(BK7231T\): try recipe \S*recipes\/21D\.yaml or \S*recipes\/21G\.yaml/);
          assert.ok(all.includes(afterOther), afterOther);
        }
        if (f.outcome === 'chip') assert.match(all, /recipes\/21[DG]\.yaml/, 'a chip mismatch names a recipe for the other chip');

        assert.match(r.stderr, new RegExp(`then retry from this step: npx tsx flash\\.ts recipes/23A\\.yaml --from cloudcutter --out ${out.replace(/[.]/g, '\\.')}`));

        // The log holds what cloudcutter printed, and the output says where it is.
        const logs = cloudcutterLogs(out);
        assert.equal(logs.length, 1, 'one log for one run');
        const log = fs.readFileSync(logs[0], 'utf8');
        for (const line of f.printed('BK7231N')) assert.ok(log.includes(line), `log holds "${line}":\n${log}`);
        assert.ok(all.includes(`full log: ${logs[0]}`));
      } finally {
        await w.cleanup();
      }
    });
  }
});

describe('retry', { concurrency: true }, () => {
  test('after a failed cloudcutter run, --from cloudcutter succeeds without redoing config', async () => {
    // The whole rest of the flow runs after cloudcutter (--from), so this uses the workbench's
    // simulated plug; flash.ts still runs as a child process, as the user would retry it.
    const b = await startBench({ fakes: { cloudcutter: { outcome: 'ap' } } });
    try {
      const env = { ...b.env, FLASH_DISCOVERY_TIMEOUT_MS: '8000', FLASH_VERIFY_TIMEOUT_MS: '8000' };
      const c0 = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--only', 'config'], { env });
      assert.equal(c0.code, 0, c0.stdout + c0.stderr);
      const configFiles = ['status-plug-01.yaml', 'secrets.yaml', '.gitignore'].map((f) => path.join(b.out, f));
      const mtimes = configFiles.map((f) => fs.statSync(f).mtimeMs);
      const secrets = fs.readFileSync(path.join(b.out, 'secrets.yaml'));
      const journalFile = path.join(b.out, '.flash', 'status-plug-01.json');
      const configDone = JSON.parse(fs.readFileSync(journalFile, 'utf8')).steps.config;

      const failed = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--from', 'cloudcutter'], { env, reader: b.user });
      assert.equal(failed.code, 1, failed.stdout + failed.stderr);
      assert.match(failed.stderr, /--from cloudcutter/);
      assert.equal(JSON.parse(fs.readFileSync(journalFile, 'utf8')).steps.cloudcutter, undefined, 'a failed step is not done');

      // The user puts the plug in AP mode properly this time.
      setOutcome(b.world, 'success');
      const retried = await runFlash(['recipes/23A.yaml', ...b.args, '--yes', '--from', 'cloudcutter'], { env, reader: b.user });
      assert.equal(retried.code, 0, retried.stdout + retried.stderr);
      const steps = [...retried.stdout.matchAll(/^\[\d\/\d\] (\w+)/gm)].map((m) => m[1]);
      assert.deepEqual(steps, ['check', 'cloudcutter', 'kickstart', 'upload', 'verify']);
      assert.equal(b.world.calls('tuya-cloudcutter.sh').length, 2);
      assert.equal(b.sim.phase, 'final');

      // Config untouched: same files, same secrets, same journal entry.
      assert.deepEqual(configFiles.map((f) => fs.statSync(f).mtimeMs), mtimes);
      assert.ok(fs.readFileSync(path.join(b.out, 'secrets.yaml')).equals(secrets), 'secrets.yaml byte-identical');
      const journal = JSON.parse(fs.readFileSync(journalFile, 'utf8'));
      assert.deepEqual(journal.steps.config, configDone);
      assert.ok(journal.steps.cloudcutter, 'the journal lists cloudcutter done');
      assert.equal(journal.started, undefined);
    } finally {
      await b.close();
    }
  });

  test('a Kickstart plug of another run on the LAN does not make the retry skip cloudcutter', async () => {
    // After cloudcutter said it failed (here: it never got onto the plug's AP), this plug is still on
    // Tuya firmware. Another plug already on Kickstart (say, one left from an earlier run) must not be
    // taken for it: no MAC is known yet, so flash.ts cannot tell them apart by mDNS.
    const { w, out, env } = await world({ cloudcutter: { outcome: 'ap' } });
    const other = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsPort: Number(env.FLASH_MDNS_PORT) });
    try {
      const failed = await runFlash(cutArgs(R23A.recipe, w, out), { env });
      assert.equal(failed.code, 1, failed.stdout + failed.stderr);
      setOutcome(w, 'success');
      const retried = await runFlash(cutArgs(R23A.recipe, w, out), { env });
      assert.equal(retried.code, 0, retried.stdout + retried.stderr);
      assert.equal(cloudcutterCalls(w).length, 2, `cloudcutter ran again:\n${retried.stdout}`);
    } finally {
      await other.close();
      await w.cleanup();
    }
  });

  test('the printed retry command keeps the run\'s --cloudcutter and --wifi-iface', async () => {
    // A user who passed --cloudcutter DIR and pastes the retry command would otherwise be pointed at
    // ./tuya-cloudcutter (and, with --yes, have a new clone made there).
    const { w, out, env } = await world({ cloudcutter: { outcome: 'docker' } });
    try {
      const r = await runFlash(cutArgs(R23A.recipe, w, out, '--wifi-iface', 'wlan1'), { env });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const retry = r.stderr.match(/retry from this step: (npx tsx flash\.ts .*)/)?.[1] ?? '';
      assert.match(retry, /--from cloudcutter/);
      assert.ok(retry.includes(`--cloudcutter ${w.cloudcutter}`), retry);
      assert.ok(retry.includes('--wifi-iface wlan1'), retry);
    } finally {
      await w.cleanup();
    }
  });
});

describe('profile API cache', { concurrency: true }, () => {
  test('fetched once, the profile is written from the cache when the API is unreachable', async () => {
    const { w, out, env } = await world();
    try {
      const first = await runFlash(cutArgs(R23A.recipe, w, out), { env });
      assert.equal(first.code, 0, first.stdout + first.stderr);
      const cache = path.join(env.XDG_CACHE_HOME!, 'flash.ts', 'cloudcutter-api');
      for (const rel of ['profiles.json', `profiles/${R23A.profile}.json`, `devices/${R23A.device}.json`])
        assert.deepEqual(JSON.parse(fs.readFileSync(path.join(cache, rel), 'utf8')), fixture(rel), `cached ${rel}`);

      // Offline: the profile dir is gone too, so it can only come from the cache.
      const dir = path.join(w.cloudcutter!, 'device-profiles', R23A.device);
      fs.rmSync(dir, { recursive: true });
      const offline = { ...env, FLASH_CLOUDCUTTER_API: `http://127.0.0.1:${await closedPort()}` };
      const second = await runFlash(cutArgs(R23A.recipe, w, out), { env: offline });
      assert.equal(second.code, 0, second.stdout + second.stderr);
      assert.match(second.stdout, /using the copy cached/);
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'device.json'), 'utf8')), fixture(`devices/${R23A.device}.json`));
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'profile.json'), 'utf8')), fixture(`profiles/${R23A.profile}.json`));
      assert.equal(cloudcutterCalls(w).length, 2);
    } finally {
      await w.cleanup();
    }
  });

  test('a connection the API server closes unanswered is tried again: the profile still arrives', async () => {
    const { w, out, env } = await world();
    const flaky = await serveDir(CLOUDCUTTER_API_FIXTURES, { drop: 1 });
    try {
      const r = await runFlash(cutArgs(R23A.recipe, w, out), { env: { ...env, FLASH_CLOUDCUTTER_API: flaky.url } });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(flaky.requests[0], flaky.requests[1], 'the dropped request was asked again');
      assert.doesNotMatch(r.stdout, /offline\?|using the copy cached/);
      const dir = path.join(w.cloudcutter!, 'device-profiles', R23A.device);
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'profile.json'), 'utf8')),
        fixture(`profiles/${R23A.profile}.json`));
    } finally {
      await flaky.close();
      await w.cleanup();
    }
  });

  test('offline with an empty cache: exit 1 saying what failed and that it needs the internet once or a mirror', async () => {
    const { w, out, env } = await world();
    try {
      const apiUrl = `http://127.0.0.1:${await closedPort()}`;
      const r = await runFlash(cutArgs(R23A.recipe, w, out), { env: { ...env, FLASH_CLOUDCUTTER_API: apiUrl } });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`cloudcutter failed: cannot fetch ${apiUrl}/profiles\\.json \\(.+\\) and there is no cached copy`));
      assert.match(r.stderr, /connect this machine to the internet/);
      assert.match(r.stderr, /FLASH_CLOUDCUTTER_API/);
      assert.doesNotMatch(r.stdout + r.stderr, /unexpected error|at .*flash\.ts:\d+/, 'no stack trace');
      assert.deepEqual(cloudcutterCalls(w), [], 'cloudcutter was not started');
      assert.equal(fs.existsSync(path.join(w.cloudcutter!, 'device-profiles', R23A.device)), false);
    } finally {
      await w.cleanup();
    }
  });
});

describe('secrets', { concurrency: true }, () => {
  const password = WIFI_ENV.FLASH_WIFI_PASSWORD;

  /** Every file flash.ts wrote under <out>/.flash (journal, logs). */
  function flashFiles(out: string): string[] {
    return (fs.readdirSync(path.join(out, '.flash'), { recursive: true }) as string[]).map((f) => path.join(out, '.flash', String(f))).filter((f) => fs.statSync(f).isFile());
  }

  test('the Wi-Fi password is in secrets.yaml only: not in the output, the cloudcutter logs, the journal or any command line', async () => {
    const { w, out, env } = await world();
    try {
      const runs: RunResult[] = [];
      runs.push(await runFlash([R23A.recipe, '--only', 'config', '--yes', '--out', out], { env }));
      runs.push(await runFlash(cutArgs(R23A.recipe, w, out), { env }));
      setOutcome(w, 'ota');
      runs.push(await runFlash(cutArgs(R23A.recipe, w, out, '--wifi-iface', 'wlan1'), { env }));
      assert.deepEqual(runs.map((r) => r.code), [0, 0, 1]);
      assert.ok(fs.readFileSync(path.join(out, 'secrets.yaml'), 'utf8').includes(password), 'the password did get to secrets.yaml');

      for (const r of runs) assert.ok(!(r.stdout + r.stderr).includes(password), 'output');
      assert.equal(cloudcutterLogs(out).length, 2);
      for (const f of flashFiles(out)) assert.ok(!fs.readFileSync(f, 'utf8').includes(password), f);
      for (const call of w.calls()) assert.ok(!call.argv.join(' ').includes(password), `${call.tool} argv`);
    } finally {
      await w.cleanup();
    }
  });

  test('a secret that cloudcutter itself prints is redacted in the output and in the log', async () => {
    // flash.ts promises that anything it prints or logs passes through redact(). Here the checkout's
    // script (in this test's temp world) echoes the password before doing the fake's usual run.
    const { w, out, env } = await world();
    try {
      await configure(R23A.recipe, out, env);
      const script = path.join(w.cloudcutter!, 'tuya-cloudcutter.sh');
      const fake = fs.readFileSync(script, 'utf8').replace(/^#!.*\n/, '');
      fs.writeFileSync(script, `#!/usr/bin/env bash\necho 'PSK: ${password}'\n${fake}`, { mode: 0o755 });
      const r = await runFlash(cutArgs(R23A.recipe, w, out), { env });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const log = fs.readFileSync(cloudcutterLogs(out)[0], 'utf8');
      assert.match(log, /PSK: \*\*\*/, 'the line is kept, the value replaced');
      assert.ok(!log.includes(password), 'log');
      assert.ok(!(r.stdout + r.stderr).includes(password), 'output');
    } finally {
      await w.cleanup();
    }
  });
});
