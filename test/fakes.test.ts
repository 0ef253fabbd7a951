// The fake outside tools (test/fakes.ts) behave like the real ones for what flash.ts runs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  makeFakeWorld, writeCloudcutterProfile, CLOUDCUTTER_MESSAGES, CLOUDCUTTER_LINES, chipMismatchLine,
  type FakeWorld, type FakeWorldOptions,
} from './fakes.ts';
import { makeUF2, makeUG, readUF2Payload, FAMILY_ID, kickstartFileName } from './firmware-files.ts';

const API = path.join(import.meta.dirname, 'fixtures', 'cloudcutter-api');
const readJson = (rel: string) => JSON.parse(fs.readFileSync(path.join(API, rel), 'utf8'));
const N_DEVICE = 'minoston-mp22wp-outdoor-plug';
const N_PROFILE = 'profiles/oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00.json';
const T_DEVICE = 'kmc-30153-smart-plug-mini';
const T_PROFILE = 'profiles/oem-bk7231s-rnd-switch-1.0.7-sdk-2.0.0-30.06.json';
const KS_N = kickstartFileName('bk7231n');
const KS_T = kickstartFileName('bk7231t');

interface Ran { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs a command in the world. killAfter.when is tested against stdout + stderr as they arrive. */
function run(world: FakeWorld, cmd: string, args: string[], o: { cwd?: string; input?: string; killAfter?: { ms: number; signal: NodeJS.Signals } | { when: RegExp; signal: NodeJS.Signals }; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: o.cwd ?? world.dir, env: world.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const kill = (sig: NodeJS.Signals) => { if (!killed) { killed = true; child.kill(sig); } };
    const check = () => { if (o.killAfter && 'when' in o.killAfter && o.killAfter.when.test(stdout + stderr)) kill(o.killAfter.signal); };
    child.stdout.on('data', (d) => { stdout += d; check(); });
    child.stderr.on('data', (d) => { stderr += d; check(); });
    child.on('error', reject);
    if (o.killAfter && 'ms' in o.killAfter) { const k = o.killAfter; setTimeout(() => kill(k.signal), k.ms); }
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 8000);
    child.stdin.on('error', () => { /* the child may exit before reading its input */ });
    child.stdin.end(o.input ?? '');
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

/** Lines without the \r of lines printed inside `docker run -ti`. */
const lines = (s: string) => s.replace(/\r/g, '').split('\n');

function indexOfLine(all: string[], pred: string | RegExp, from = 0): number {
  for (let i = from; i < all.length; i++) if (typeof pred === 'string' ? all[i].startsWith(pred) : pred.test(all[i])) return i;
  return -1;
}

/** Asserts the predicates match lines in this order. */
function assertInOrder(out: string, preds: (string | RegExp)[]) {
  const all = lines(out);
  let at = 0;
  for (const p of preds) {
    const i = indexOfLine(all, p, at);
    assert.ok(i >= 0, `expected a line ${p} after line ${at} in:\n${out}`);
    at = i + 1;
  }
}

async function withWorld(opts: FakeWorldOptions, fn: (w: FakeWorld) => Promise<void>) {
  const w = await makeFakeWorld(opts);
  try {
    await fn(w);
  } finally {
    await w.cleanup();
  }
}

/** A world whose checkout holds the device + profile flash.ts writes for a 23A (BK7231N) plug. */
async function cloudcutterWorld(opts: FakeWorldOptions = {}, chip: 'n' | 't' = 'n') {
  const w = await makeFakeWorld(opts);
  if (w.cloudcutter) {
    if (chip === 'n') writeCloudcutterProfile(w.cloudcutter, N_DEVICE, readJson(`devices/${N_DEVICE}.json`), readJson(N_PROFILE));
    else writeCloudcutterProfile(w.cloudcutter, T_DEVICE, readJson(`devices/${T_DEVICE}.json`), readJson(T_PROFILE));
  }
  return w;
}

const flashArgs = (slug = N_DEVICE, fw = KS_N, extra: string[] = ['-w', 'wlan1']) => ['./tuya-cloudcutter.sh', '-p', slug, '-f', fw, ...extra];

/** A stand-in for test/sim's control API: records POST /_sim/flash-kickstart. */
async function fakeSim(mac = 'D8:1F:12:AA:BB:CC') {
  const posts: unknown[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/_sim/flash-kickstart') {
        posts.push(JSON.parse(body || '{}'));
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, mac }));
      } else res.writeHead(404).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { url, posts, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

const ESPHOME_YAML = (board: string, extra = '') => `substitutions:
  device_name: status-plug-01
  friendly_name: Status Plug 01
  board: ${board}
  relay_pin: P24
  default_state: RESTORE_DEFAULT_OFF

esphome:
  name: "\${device_name}"
  friendly_name: "\${friendly_name}"

bk72xx:
  board: \${board}

logger:
api:
  encryption:
    key: !secret api_encryption_key
ota:
  - platform: esphome
    password: !secret ota_password
wifi:
  ssid: !secret wifi_ssid
  password: !secret wifi_password

switch:
  - platform: gpio
    name: "\${friendly_name}"
    id: switch_1
    restore_mode: "\${default_state}"
    pin: \${relay_pin}
${extra}`;
const SECRETS = 'wifi_ssid: HomeNet\nwifi_password: "correct horse"\napi_encryption_key: "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28="\nota_password: abc123\n';

function esphomeDir(w: FakeWorld, board: string, extra = '', secrets = SECRETS): string {
  const d = path.join(w.dir, 'esphome');
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'status-plug-01.yaml'), ESPHOME_YAML(board, extra));
  if (secrets) fs.writeFileSync(path.join(d, 'secrets.yaml'), secrets);
  return d;
}

describe('fake world', { concurrency: true }, () => {
  test('PATH: the fakes first, then only the system dirs of node/bash/coreutils/script; calls are logged in order', async () => {
    await withWorld({}, async (w) => {
      const dirs = w.env.PATH!.split(':');
      assert.equal(dirs[0], w.bin);
      assert.ok(!dirs.includes('/usr/local/bin'), w.env.PATH);
      assert.deepEqual(fs.readdirSync(w.bin).sort(), ['docker', 'esphome', 'nmcli', 'ss', 'sudo']);
      const r = await run(w, 'bash', ['-c', 'command -v docker nmcli esphome ss sudo node script']);
      assert.equal(r.code, 0, r.stderr);
      for (const t of ['docker', 'nmcli', 'esphome', 'ss', 'sudo']) assert.ok(r.stdout.includes(path.join(w.bin, t)), r.stdout);
      await run(w, 'nmcli', ['device'], { cwd: w.cloudcutter });
      await run(w, 'ss', ['-lnt']);
      assert.deepEqual(w.calls(), [
        { tool: 'nmcli', argv: ['device'], cwd: w.cloudcutter },
        { tool: 'ss', argv: ['-lnt'], cwd: w.dir },
      ]);
      assert.deepEqual(w.calls('ss').map((c) => c.argv), [['-lnt']]);
    });
  });

  test('a switched-off tool is really missing (even if the system has one); the checkout looks like a real one', async () => {
    await withWorld({ docker: false, esphome: false, nmcli: false, sudo: false, cloudcutter: false }, async (w) => {
      const r = await run(w, 'bash', ['-c', 'for t in docker esphome nmcli sudo; do command -v $t || echo "no $t"; done']);
      assert.equal(r.stdout, 'no docker\nno esphome\nno nmcli\nno sudo\n');
      assert.equal(w.cloudcutter, undefined);
    });
    await withWorld({}, async (w) => {
      const cc = w.cloudcutter!;
      for (const f of ['tuya-cloudcutter.sh', 'common.sh', 'common_run.sh', 'safety_checks.sh', 'src/get_input.py', 'device-profiles/schema', 'configured-devices'])
        assert.ok(fs.existsSync(path.join(cc, f)), f);
      assert.deepEqual(fs.readFileSync(path.join(cc, 'custom-firmware', KS_N)), makeUG({ chip: 'bk7231n' }));
      assert.deepEqual(fs.readFileSync(path.join(cc, 'custom-firmware', KS_T)), makeUG({ chip: 'bk7231t' }));
    });
  });

  test('sudo records its argv and runs the rest: sudo -n true, sudo nmcli; a sudo needing a password', async () => {
    await withWorld({}, async (w) => {
      assert.equal((await run(w, 'sudo', ['-n', 'true'])).code, 0);
      const r = await run(w, 'sudo', ['nmcli', '-t', '-f', 'DEVICE', 'device']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^wlan1$/m);
      assert.deepEqual(w.calls().map((c) => [c.tool, c.argv]), [
        ['sudo', ['-n', 'true']],
        ['sudo', ['nmcli', '-t', '-f', 'DEVICE', 'device']],
        ['nmcli', ['-t', '-f', 'DEVICE', 'device']],
      ]);
      assert.equal((await run(w, 'sudo', ['no-such-command'])).stderr, 'sudo: no-such-command: command not found\n');
    });
    await withWorld({ sudo: { needsPassword: true } }, async (w) => {
      const r = await run(w, 'sudo', ['-n', 'true']);
      assert.deepEqual([r.code, r.stderr], [1, 'sudo: a password is required\n']);
    });
  });
});

describe('fake tuya-cloudcutter.sh', { concurrency: true }, () => {
  test('success: the real progress lines in order, combined.json written, the sim turned into Kickstart', async () => {
    const sim = await fakeSim();
    const w = await cloudcutterWorld({ cloudcutter: { simUrl: sim.url } });
    try {
      const r = await run(w, 'sudo', flashArgs(), { cwd: w.cloudcutter });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assertInOrder(r.stdout, [
        CLOUDCUTTER_LINES.buildingImage, CLOUDCUTTER_LINES.loading, CLOUDCUTTER_LINES.safetyStart, 'Checking UDP port 53... Available.',
        `Selected Device Slug: ${N_DEVICE}`, 'Selected Profile: oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00', `Selected Firmware: ${KS_N}`,
        CLOUDCUTTER_LINES.placeInApMode, 'Scanning for open Tuya SmartLife AP', 'Found access point name: "SmartLife-1A2B", trying to connect...',
        /^Device 'wlan1' successfully activated with '[0-9a-f-]{36}'\.$/, 'Using AuthKey: ', 'output=/work/configured-devices/',
        CLOUDCUTTER_LINES.powerCycle, 'Scanning for open Tuya SmartLife AP', 'Found access point name: "A-1A2B", trying to connect...',
        CLOUDCUTTER_LINES.joiningFlashAp, CLOUDCUTTER_LINES.flashing, 'Using WLAN adapter: wlan1', `[Firmware Upload] /files/${KS_N} send complete`,
        'Firmware update progress: 4%', 'Firmware update progress: 100%', CLOUDCUTTER_LINES.nearlyComplete, CLOUDCUTTER_LINES.complete,
        'Device MAC address: d8:1f:12:aa:bb:cc',
      ]);
      assert.ok(r.stdout.includes('Using AuthKey: ') && /Using AuthKey: \w{16}\r\n/.test(r.stdout), 'lines from inside docker -ti end in \\r\\n');
      assert.deepEqual(sim.posts, [{ chip: 'bk7231n', firmware: KS_N }]);
      const combined = JSON.parse(fs.readFileSync(path.join(w.cloudcutter!, 'device-profiles', N_DEVICE, 'combined.json'), 'utf8'));
      assert.deepEqual(Object.keys(combined), ['slug', 'device', 'profile']);
      assert.equal(combined.slug, N_DEVICE);
      assert.equal(combined.profile.firmware.chip, 'BK7231N');
      assert.deepEqual(w.calls().slice(0, 2).map((c) => [c.tool, c.argv, c.cwd]), [
        ['sudo', flashArgs(), w.cloudcutter], ['tuya-cloudcutter.sh', flashArgs().slice(1), w.cloudcutter]]);
      // the plug's Kickstart AP is now visible, and the real script's connections were left behind
      const list = await run(w, 'nmcli', ['-t', '-f', 'SSID,SECURITY', 'device', 'wifi', 'list', 'ifname', 'wlan1']);
      assert.match(list.stdout, /^kickstart-bk7231n:$/m);
      const cons = await run(w, 'nmcli', ['-t', '-f', 'NAME', 'connection', 'show']);
      assert.deepEqual(cons.stdout.trim().split('\n'), ['Wired connection 1', 'SmartLife-1A2B', 'A-1A2B']);
    } finally {
      await sim.close();
      await w.cleanup();
    }
  });

  for (const outcome of ['exploit', 'chip', 'ap', 'docker', 'adapter', 'ota'] as const) {
    test(`outcome ${outcome}: the real failure text in its real place, exit 1`, async () => {
      const w = await cloudcutterWorld({ cloudcutter: { outcome } });
      try {
        const r = await run(w, 'sudo', flashArgs(), { cwd: w.cloudcutter });
        assert.equal(r.code, 1, r.stdout + r.stderr);
        const expected = outcome === 'chip' ? [chipMismatchLine(KS_N, 'bk7231n')] : CLOUDCUTTER_MESSAGES[outcome];
        const before: Record<typeof outcome, string> = {
          exploit: CLOUDCUTTER_LINES.powerCycle, chip: CLOUDCUTTER_LINES.safetyDone, ap: CLOUDCUTTER_LINES.placeInApMode,
          docker: CLOUDCUTTER_LINES.buildingImage, adapter: '', ota: CLOUDCUTTER_LINES.flashing,
        };
        assertInOrder(r.stdout, [before[outcome], ...expected].filter(Boolean));
        const after: Record<typeof outcome, string | undefined> = {
          exploit: CLOUDCUTTER_LINES.joiningFlashAp, chip: CLOUDCUTTER_LINES.placeInApMode, ap: CLOUDCUTTER_LINES.exploitStart,
          docker: CLOUDCUTTER_LINES.loading, adapter: CLOUDCUTTER_LINES.buildingImage, ota: CLOUDCUTTER_LINES.progress,
        };
        assert.ok(!r.stdout.includes(after[outcome]!), `${outcome} must stop before "${after[outcome]}"`);
        assert.ok(!r.stdout.includes(CLOUDCUTTER_LINES.mac));
      } finally {
        await w.cleanup();
      }
    });
  }

  test('the exact failure texts of the real script', () => {
    assert.equal(CLOUDCUTTER_MESSAGES.exploit[0], '[!] The profile you selected did not result in a successful exploit.');
    assert.equal(chipMismatchLine('x.ug.bin', 'bk7231n'), 'The firmware file supplied (x.ug.bin) is not valid for the chosen profile type of BK7231N');
    assert.deepEqual(CLOUDCUTTER_MESSAGES.ap, ['Error, could not connect to SSID.', 'Failed to connect, please run this script again']);
    assert.equal(CLOUDCUTTER_MESSAGES.docker[0], 'Failed to build Docker image, stopping script');
    assert.equal(CLOUDCUTTER_MESSAGES.adapter[0], "[!] Unable to auto-detect wifi adapter.  Please use the '-w' argument to pass in a wifi adapter.");
    assert.equal(CLOUDCUTTER_MESSAGES.ota[0], 'Oh no, something went wrong with updating firmware! Try again I guess...');
  });

  test('no offline profile: "does not exist in the API" (no network here), then "Failed to choose a profile"', async () => {
    await withWorld({}, async (w) => {
      const r = await run(w, 'sudo', flashArgs('no-such-device'), { cwd: w.cloudcutter });
      assert.equal(r.code, 1);
      assert.ok(!r.stdout.includes(CLOUDCUTTER_MESSAGES.profile[0]), 'no dir: no "Custom device" line');
      assertInOrder(r.stdout, [CLOUDCUTTER_LINES.loading, 'The specified device does not exist in the API.',
        'API request to https://tuya-cloudcutter.github.io/api/devices/no-such-device.json timed out.', 'Failed to choose a profile, please run this script again']);
      // a dir with only the device JSON (no JSON with a "firmware" key) is not enough
      writeCloudcutterProfile(w.cloudcutter!, 'half', readJson(`devices/${N_DEVICE}.json`), { name: 'no firmware key' });
      const r2 = await run(w, 'sudo', flashArgs('half'), { cwd: w.cloudcutter });
      assert.equal(r2.code, 1);
      assertInOrder(r2.stdout, [CLOUDCUTTER_MESSAGES.profile[0], CLOUDCUTTER_MESSAGES.profile[1], CLOUDCUTTER_MESSAGES.profile[3]]);
      // any *.json file names work: the keys decide ("profiles" = device, "firmware" = profile)
      const d = path.join(w.cloudcutter!, 'device-profiles', 'any-names');
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'a.json'), JSON.stringify(readJson(N_PROFILE)));
      fs.writeFileSync(path.join(d, 'b.json'), JSON.stringify(readJson(`devices/${N_DEVICE}.json`)));
      fs.writeFileSync(path.join(d, 'notes.txt'), 'ignored');
      assert.equal((await run(w, 'sudo', flashArgs('any-names'), { cwd: w.cloudcutter })).code, 0);
      // invalid JSON
      fs.writeFileSync(path.join(d, 'c.json'), '{"profiles": [');
      const r3 = await run(w, 'sudo', flashArgs('any-names'), { cwd: w.cloudcutter });
      assert.equal(r3.code, 1);
      assert.match(r3.stdout, /^File \/work\/device-profiles\/any-names\/c\.json does not contain valid JSON\. Please update your file and try again\.\r$/m);
    });
  });

  test('firmware: missing file = Python traceback; chip checked like validate_firmware_file_internal; a UF2 is extracted', async () => {
    const uf2 = makeUF2({ familyId: FAMILY_ID.bk7231n, payload: Buffer.from('esphome'), minBlocks: 4 });
    const w = await cloudcutterWorld({ cloudcutter: { firmware: [
      { name: KS_T, data: makeUG({ chip: 'bk7231t' }) },
      { name: 'custom.ug.bin', data: makeUG({ chip: null }) },
      { name: 'firmware.uf2', data: uf2 },
      { name: 'small_bk7231n.bin', data: makeUG({ chip: 'bk7231n' }).subarray(0, 300) },
    ] } });
    try {
      const cwd = w.cloudcutter;
      const missing = await run(w, 'sudo', flashArgs(N_DEVICE, 'nope.ug.bin'), { cwd });
      assert.equal(missing.code, 1);
      assert.match(missing.stdout, /^FileNotFoundError: \[Errno 2\] No such file or directory: '\/work\/custom-firmware\/nope\.ug\.bin'\r$/m);
      const wrongChip = await run(w, 'sudo', flashArgs(N_DEVICE, KS_T), { cwd });
      assert.equal(wrongChip.code, 1);
      assert.ok(lines(wrongChip.stdout).includes(chipMismatchLine(KS_T, 'bk7231n')), wrongChip.stdout);
      const noChip = await run(w, 'sudo', flashArgs(N_DEVICE, 'custom.ug.bin'), { cwd });
      assert.equal(noChip.code, 1);
      assertInOrder(noChip.stdout, ["!!! Can't verify chip type of UG file 'custom.ug.bin' - make sure that BK7231T or BK7231N is present in the filename!", chipMismatchLine('custom.ug.bin', 'bk7231n')]);
      const short = await run(w, 'sudo', flashArgs(N_DEVICE, 'small_bk7231n.bin'), { cwd });
      assertInOrder(short.stdout, ["!!! Unrecognized file type - 'small_bk7231n.bin' is not a UG, UF2, or RTL8720CF OTA file."]);
      const ok = await run(w, 'sudo', flashArgs(N_DEVICE, 'firmware.uf2'), { cwd });
      assert.equal(ok.code, 0, ok.stdout);
      assertInOrder(ok.stdout, ["Extracting UF2 package as 'firmware.uf2-bk7231n-extracted.ug.bin'", 'Selected Firmware: firmware.uf2-bk7231n-extracted.ug.bin']);
      assert.ok(fs.existsSync(path.join(cwd!, 'custom-firmware', 'firmware.uf2-bk7231n-extracted.ug.bin')));
    } finally {
      await w.cleanup();
    }
  });

  test('options: -s with -f exits 1 first; -t takes no value (real getopts string), so "-t 30" breaks the run', async () => {
    const w = await cloudcutterWorld();
    try {
      const both = await run(w, 'sudo', [...flashArgs(), '-s', 'HomeNet', 'pw'], { cwd: w.cloudcutter });
      assert.equal(both.code, 1);
      assert.deepEqual(lines(both.stdout).filter(Boolean), [...CLOUDCUTTER_MESSAGES.detachAndFlash]);
      const t = await run(w, 'sudo', [...flashArgs(), '-t', '30'], { cwd: w.cloudcutter });
      assert.equal(t.code, 1);
      assertInOrder(t.stdout, [CLOUDCUTTER_LINES.flashing, "cloudcutter update_firmware: error: argument flash_timeout: invalid int value: ''", CLOUDCUTTER_MESSAGES.ota[0]]);
      const h = await run(w, 'sudo', ['./tuya-cloudcutter.sh', '-h'], { cwd: w.cloudcutter });
      assert.equal(h.code, 0);
      assert.match(h.stdout, /^ {2}-p TEXT {11}Device profile name, AKA Device Slug \(optional\)$/m);
      const bad = await run(w, 'sudo', ['./tuya-cloudcutter.sh', '-x', ...flashArgs().slice(1)], { cwd: w.cloudcutter });
      assert.equal(bad.code, 0);
      assert.equal(lines(bad.stderr)[0], './tuya-cloudcutter.sh: illegal option -- x');
    } finally {
      await w.cleanup();
    }
  });

  test('safety checks: a busy port asks, no answer aborts; "y" goes on; an adapter without AP mode only warns', async () => {
    const busy = [{ proto: 'udp' as const, port: 53, process: 'dnsmasq', pid: 812 }];
    const w = await cloudcutterWorld({ ss: { busy }, nmcli: { apMode: false } });
    try {
      const r = await run(w, 'sudo', flashArgs(), { cwd: w.cloudcutter });
      assert.equal(r.code, 1);
      assertInOrder(r.stdout, ['[!] WARNING: Selected wifi AP support: no', 'Checking UDP port 53... Occupied by dnsmasq with PID 812.',
        'Port 53 is needed to resolve DNS queries', 'Aborting due to occupied port']);
      // one key for the AP warning's "Press any key", then "y" (bash `read -n 1` takes one character each)
      const yes = await run(w, 'sudo', flashArgs(), { cwd: w.cloudcutter, input: ' y' });
      assert.equal(yes.code, 0, yes.stdout);
      assertInOrder(yes.stdout, ['Attempting to terminate dnsmasq', 'Checking UDP port 67... Available.', CLOUDCUTTER_LINES.complete]);
    } finally {
      await w.cleanup();
    }
  });

  test('adapter detection like common.sh: no wifi device and no -w fails; an unknown -w only warns', async () => {
    const w = await cloudcutterWorld({ nmcli: { wifiIface: '' } });
    try {
      const r = await run(w, 'sudo', flashArgs(N_DEVICE, KS_N, []), { cwd: w.cloudcutter });
      assert.equal(r.code, 1);
      assert.deepEqual(lines(r.stdout).filter(Boolean), [...CLOUDCUTTER_MESSAGES.adapter]);
      const r2 = await run(w, 'sudo', flashArgs(N_DEVICE, KS_N, ['-w', 'wlan9']), { cwd: w.cloudcutter });
      assert.equal(r2.code, 0, r2.stdout);
      assert.equal(lines(r2.stdout)[0], '[!] WARNING: Selected wifi AP support: ');
      assert.match(r2.stderr, /^Error: Device 'wlan9' not found\.$/m);
    } finally {
      await w.cleanup();
    }
  });

  test('no docker command at all: the image build fails like the real script', async () => {
    const w = await cloudcutterWorld({ docker: false });
    try {
      const r = await run(w, 'sudo', flashArgs(), { cwd: w.cloudcutter });
      assert.equal(r.code, 1);
      assertInOrder(r.stdout, [CLOUDCUTTER_LINES.buildingImage, CLOUDCUTTER_MESSAGES.docker[0]]);
      assert.match(r.stderr, /docker: command not found/);
    } finally {
      await w.cleanup();
    }
  });

  test('run from the wrong directory: bash errors, then the firmware failure', async () => {
    const w = await cloudcutterWorld();
    try {
      const r = await run(w, 'sudo', [path.join(w.cloudcutter!, 'tuya-cloudcutter.sh'), '-p', N_DEVICE, '-f', KS_N], { cwd: w.dir });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /tuya-cloudcutter\.sh: line 71: common\.sh: No such file or directory/);
      assert.ok(lines(r.stdout).includes(CLOUDCUTTER_MESSAGES.ota[0]));
    } finally {
      await w.cleanup();
    }
  });

  test('no-ap: scans forever like the real script; Ctrl+C ends it (killed by SIGINT)', async () => {
    const w = await cloudcutterWorld({ cloudcutter: { outcome: 'no-ap' } });
    try {
      const r = await run(w, 'sudo', flashArgs(), { cwd: w.cloudcutter, killAfter: { when: /Scanning for open Tuya SmartLife AP\n\.\./, signal: 'SIGINT' } });
      assert.equal(r.signal, 'SIGINT');
      assert.ok(!r.stdout.includes(CLOUDCUTTER_LINES.found));
    } finally {
      await w.cleanup();
    }
  });
});

describe('fake nmcli', { concurrency: true }, () => {
  test('device list, AP mode yes/no in terse and multiline form, unknown device and command', async () => {
    await withWorld({}, async (w) => {
      const list = await run(w, 'nmcli', ['-t', '-f', 'DEVICE,TYPE,STATE', 'device']);
      assert.deepEqual([list.code, list.stdout], [0, 'eth0:ethernet:connected\nlo:loopback:connected (externally)\nwlan1:wifi:disconnected\n']);
      const status = await run(w, 'nmcli', ['device', 'status']);
      assert.match(status.stdout, /^wlan1 +wifi +disconnected +-- +$/m);
      assert.deepEqual((await run(w, 'nmcli', ['-t', '-f', 'WIFI-PROPERTIES.AP', 'device', 'show', 'wlan1'])).stdout, 'WIFI-PROPERTIES.AP:yes\n');
      const ml = await run(w, 'nmcli', ['-f', 'wifi-properties', 'dev', 'show', 'wlan1']);
      assert.match(ml.stdout, /^WIFI-PROPERTIES\.AP: {21}yes$/m);
      assert.equal((await run(w, 'nmcli', ['-f', 'wifi-properties', 'device', 'show', 'eth0'])).stdout, '');
      const none = await run(w, 'nmcli', ['-t', '-f', 'WIFI-PROPERTIES.AP', 'device', 'show', 'wlan9']);
      assert.deepEqual([none.code, none.stderr], [10, "Error: Device 'wlan9' not found.\n"]);
      const bad = await run(w, 'nmcli', ['device', 'frobnicate']);
      assert.deepEqual([bad.code, bad.stderr], [2, "Error: argument 'frobnicate' not understood. Try passing --help instead.\n"]);
    });
    await withWorld({ nmcli: { apMode: false, wifiIface: 'wlx00c0ca123456' } }, async (w) => {
      assert.equal((await run(w, 'nmcli', ['-t', '-f', 'WIFI-PROPERTIES.AP', 'device', 'show', 'wlx00c0ca123456'])).stdout, 'WIFI-PROPERTIES.AP:no\n');
      assert.match((await run(w, 'nmcli', ['-f', 'wifi-properties', 'device', 'show', 'wlx00c0ca123456'])).stdout, /^WIFI-PROPERTIES\.AP: +no$/m);
    });
  });

  test('wifi connect (with --wait), list, disconnect, connection delete; a failing connect', async () => {
    await withWorld({}, async (w) => {
      const c = await run(w, 'nmcli', ['--wait', '60', 'device', 'wifi', 'connect', 'kickstart-bk7231n', 'ifname', 'wlan1']);
      assert.equal(c.code, 0, c.stderr);
      assert.match(c.stdout, /^Device 'wlan1' successfully activated with '[0-9a-f-]{36}'\.\n$/);
      assert.match((await run(w, 'nmcli', ['-t', '-f', 'DEVICE,STATE,CONNECTION', 'device'])).stdout, /^wlan1:connected:kickstart-bk7231n$/m);
      assert.match((await run(w, 'nmcli', ['device', 'wifi', 'list', 'ifname', 'wlan1'])).stdout, /^IN-USE +BSSID +SSID .*\n {8}3C:84:6A:11:22:33 +HomeNet /);
      const del = await run(w, 'nmcli', ['connection', 'delete', 'id', 'kickstart-bk7231n']);
      assert.match(del.stdout, /^Connection 'kickstart-bk7231n' \([0-9a-f-]{36}\) successfully deleted\.\n$/);
      assert.match((await run(w, 'nmcli', ['-t', '-f', 'DEVICE,STATE', 'device'])).stdout, /^wlan1:disconnected$/m);
      const again = await run(w, 'nmcli', ['connection', 'delete', 'kickstart-bk7231n']);
      assert.deepEqual([again.code, again.stderr], [10, "Error: unknown connection 'kickstart-bk7231n'.\nError: cannot delete unknown connection(s): 'kickstart-bk7231n'.\n"]);
      const disc = await run(w, 'nmcli', ['device', 'disconnect', 'wlan1']);
      assert.equal(disc.code, 6);
      assert.equal((await run(w, 'nmcli', ['device', 'set', 'wlan1', 'managed', 'yes'])).code, 0);
    });
    await withWorld({ nmcli: { connectFails: true } }, async (w) => {
      const c = await run(w, 'nmcli', ['device', 'wifi', 'connect', 'kickstart-bk7231n', 'ifname', 'wlan1']);
      assert.deepEqual([c.code, c.stderr], [10, "Error: No network with SSID 'kickstart-bk7231n' found.\n"]);
    });
  });
});

describe('fake docker', { concurrency: true }, () => {
  test('no daemon: docker info fails with the real text; with --format it exits 0 and prints nothing useful (docker/cli#5900)', async () => {
    await withWorld({}, async (w) => {
      const info = await run(w, 'docker', ['info']);
      assert.equal(info.code, 1);
      assert.match(info.stderr, /^ERROR: Cannot connect to the Docker daemon at unix:\/\/\/var\/run\/docker\.sock\. Is the docker daemon running\?$/m);
      const f = await run(w, 'docker', ['info', '--format', '{{.ServerVersion}}']);
      assert.deepEqual([f.code, f.stdout], [0, '\n']);
      assert.match(f.stderr, /Cannot connect to the Docker daemon/);
      const r = await run(w, 'docker', ['run', '--rm', 'ghcr.io/esphome/esphome', 'version']);
      assert.equal(r.code, 125);
      assert.equal((await run(w, 'docker', ['image', 'inspect', 'ghcr.io/esphome/esphome'])).code, 1);
    });
    await withWorld({ docker: { daemon: true } }, async (w) => {
      assert.deepEqual((await run(w, 'docker', ['info', '--format', '{{.ServerVersion}}'])).stdout, '28.1.1\n');
      const inspect = await run(w, 'docker', ['image', 'inspect', 'ghcr.io/esphome/esphome']);
      assert.equal(inspect.code, 0);
      assert.deepEqual(JSON.parse(inspect.stdout)[0].RepoTags, ['ghcr.io/esphome/esphome:latest']);
    });
  });

  test('docker run ... compile NAME.yaml compiles in HOSTDIR (/config); a relative -v source is a named volume', async () => {
    await withWorld({ docker: { daemon: true } }, async (w) => {
      const d = esphomeDir(w, 'generic-bk7231n-qfn32-tuya');
      const r = await run(w, 'docker', ['run', '--rm', '-v', `${d}:/config`, 'ghcr.io/esphome/esphome', 'compile', 'status-plug-01.yaml']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stderr, /^INFO Reading configuration status-plug-01\.yaml\.\.\.$/m);
      assert.match(r.stdout, /^Creating cache directory \/config\/\.esphome\/platformio$/m);
      const uf2 = fs.readFileSync(path.join(d, '.esphome/build/status-plug-01/.pioenvs/status-plug-01/firmware.uf2'));
      assert.equal(uf2.readUInt32LE(28), FAMILY_ID.bk7231n);
      const rel = await run(w, 'docker', ['run', '--rm', '-v', 'esphome:/config', 'ghcr.io/esphome/esphome', 'compile', 'status-plug-01.yaml'], { cwd: w.dir });
      assert.equal(rel.code, 2);
      assert.match(rel.stderr, /ERROR Error while reading config: Invalid YAML syntax:\n\nError reading file \/config\/status-plug-01\.yaml: \[Errno 2\] No such file or directory/);
    });
  });

  test('signals: SIGINT stops a docker run compile (exit 1); SIGTERM is ignored by PID 1 unless --init', async () => {
    // A compile far longer than the test: each run must end by its signal, never by finishing first
    // (a busy machine once let a 3 s compile end before `docker stop` reached it).
    await withWorld({ docker: { daemon: true }, esphome: { delayMs: 60_000 } }, async (w) => {
      const d = esphomeDir(w, 'generic-bk7231t-qfn32-tuya');
      const base = ['-v', `${d}:/config`, 'ghcr.io/esphome/esphome', 'compile', 'status-plug-01.yaml'];
      const started = /INFO Compiling app\.\.\./;
      const [int, term, init] = await Promise.all([
        run(w, 'docker', ['run', '--rm', ...base], { killAfter: { when: started, signal: 'SIGINT' } }),
        run(w, 'docker', ['run', '--rm', '--name', 'esphome-term', ...base], { killAfter: { when: started, signal: 'SIGTERM' }, timeoutMs: 1500 }),
        run(w, 'docker', ['run', '--rm', '--init', ...base], { killAfter: { when: started, signal: 'SIGTERM' } }),
      ]);
      assert.equal(int.code, 1);
      assert.equal(term.signal, 'SIGKILL', 'SIGTERM did not stop it: the test timeout had to');
      assert.equal(init.code, 143);
      // docker stop NAME: SIGTERM is ignored by PID 1, so it ends with SIGKILL: exit 137
      const named = run(w, 'docker', ['run', '--rm', '--name', 'esphome-compile', ...base]);
      let stop: Ran | undefined;
      for (let i = 0; i < 40; i++) {
        stop = await run(w, 'docker', ['stop', 'esphome-compile']);
        if (stop.code === 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual([stop!.code, stop!.stdout], [0, 'esphome-compile\n']);
      assert.equal((await named).code, 137);
    });
  });
});

describe('fake esphome', { concurrency: true }, () => {
  test('version; compile: UF2 with the family of the board (substitutions resolved), payload {name, friendly_name, board, api_key}', async () => {
    await withWorld({}, async (w) => {
      assert.equal((await run(w, 'esphome', ['version'])).stdout, 'Version: 2025.5.0\n');
      for (const [board, chip] of [['generic-bk7231t-qfn32-tuya', 'bk7231t'], ['generic-bk7231n-qfn32-tuya', 'bk7231n']] as const) {
        const d = esphomeDir(w, board);
        const r = await run(w, 'esphome', ['compile', path.join(d, 'status-plug-01.yaml')]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assertInOrder(r.stderr, ['INFO ESPHome 2025.5.0', 'INFO Reading configuration', 'INFO Generating C++ source...', 'INFO Compiling app...', 'INFO Successfully compiled program.']);
        assert.match(r.stdout, new RegExp(`^Processing status-plug-01 \\(board: ${board};`, 'm'));
        const uf2 = fs.readFileSync(path.join(d, '.esphome/build/status-plug-01/.pioenvs/status-plug-01/firmware.uf2'));
        const info = { name: 'status-plug-01', friendly_name: 'Status Plug 01', board, api_key: 'aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=' };
        assert.deepEqual(uf2, makeUF2({ familyId: FAMILY_ID[chip], payload: Buffer.from(JSON.stringify(info)), minBlocks: 400 }), 'the same bytes test/firmware-files.ts makes');
        assert.deepEqual(JSON.parse(readUF2Payload(uf2).toString()), info);
      }
      assert.deepEqual(w.calls('esphome').map((c) => c.argv[0]), ['version', 'compile', 'compile']);
    });
  });

  test('-s overrides a substitution; the build dir is named after esphome.name, not the file; familyOverride', async () => {
    await withWorld({ esphome: { familyOverride: 0x12345678, delayMs: 10 } }, async (w) => {
      const d = esphomeDir(w, 'generic-bk7231n-qfn32-tuya');
      const r = await run(w, 'esphome', ['-s', 'device_name', 'status-plug-02', 'compile', path.join(d, 'status-plug-01.yaml')]);
      assert.equal(r.code, 0, r.stderr);
      const uf2 = fs.readFileSync(path.join(d, '.esphome/build/status-plug-02/.pioenvs/status-plug-02/firmware.uf2'));
      assert.equal(uf2.readUInt32LE(28), 0x12345678);
    });
  });

  test('failures: compile error exit 1; missing secret, unknown board, bad pin, pin reuse, bad restore_mode exit 2', async () => {
    await withWorld({ esphome: { fail: true, delayMs: 10 } }, async (w) => {
      const d = esphomeDir(w, 'generic-bk7231n-qfn32-tuya');
      const r = await run(w, 'esphome', ['compile', path.join(d, 'status-plug-01.yaml')]);
      assert.equal(r.code, 1);
      assert.match(r.stdout, /\[FAILED\]/);
      assert.ok(!fs.existsSync(path.join(d, '.esphome/build/status-plug-01/.pioenvs/status-plug-01/firmware.uf2')));
    });
    await withWorld({ esphome: { delayMs: 10 } }, async (w) => {
      const cases: [string, string, string, RegExp][] = [
        ['generic-bk7231n-qfn32-tuya', '', 'wifi_ssid: x\n', /^ERROR Error while reading config: Invalid YAML syntax:\n\nSecret 'api_encryption_key' not defined\n {2}in ".*status-plug-01\.yaml", line 18, column 10$/m],
        ['generic-bk7231x-qfn32-tuya', '', SECRETS, /This board is unknown, if you are sure you want to compile with this board selection, override with option 'family'/],
        ['generic-bk7231n-qfn32-tuya', 'status_led:\n  pin: P99\n', SECRETS, /Cannot resolve pin name 'P99' for board generic-bk7231n-qfn32-tuya\./],
        ['generic-bk7231n-qfn32-tuya', 'status_led:\n  pin: 99\n', SECRETS, /Pin number '99' is not usable for board generic-bk7231n-qfn32-tuya\./],
        ['generic-bk7231n-qfn32-tuya', 'status_led:\n  pin:\n    number: P24\n    inverted: true\n', SECRETS, /Pin 24 is used in multiple places/],
        ['generic-bk7231n-qfn32-tuya', '  - platform: gpio\n    name: x\n    pin: P26\n    restore_mode: SOMETIMES\n', SECRETS, /Unknown value 'SOMETIMES', valid options are 'RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF'/],
      ];
      for (const [board, extra, secrets, re] of cases) {
        const d = esphomeDir(w, board, extra, secrets);
        const r = await run(w, 'esphome', ['compile', path.join(d, 'status-plug-01.yaml')]);
        assert.equal(r.code, 2, `${re}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout + r.stderr, re);
      }
      fs.rmSync(path.join(w.dir, 'esphome', 'secrets.yaml'));
      const noSecrets = await run(w, 'esphome', ['config', path.join(w.dir, 'esphome', 'status-plug-01.yaml')]);
      assert.equal(noSecrets.code, 2);
      assert.match(noSecrets.stderr, /Error reading file .*secrets\.yaml: \[Errno 2\] No such file or directory/);
    });
  });

  test('Ctrl+C during compile: exit 1 at once (KeyboardInterrupt); SIGTERM: killed by the signal', async () => {
    // The compile would take a minute: ending well before that means the signal stopped it.
    await withWorld({ esphome: { delayMs: 60_000 } }, async (w) => {
      const d = esphomeDir(w, 'generic-bk7231n-qfn32-tuya');
      const file = path.join(d, 'status-plug-01.yaml');
      const t0 = Date.now();
      const [int, term] = await Promise.all([
        run(w, 'esphome', ['compile', file], { killAfter: { when: /INFO Compiling app/, signal: 'SIGINT' } }),
        run(w, 'esphome', ['compile', file], { killAfter: { when: /INFO Compiling app/, signal: 'SIGTERM' } }),
      ]);
      assert.equal(int.code, 1);
      assert.equal(term.signal, 'SIGTERM');
      assert.ok(Date.now() - t0 < 30_000);
      assert.ok(!fs.existsSync(path.join(d, '.esphome/build/status-plug-01/.pioenvs/status-plug-01/firmware.uf2')));
    });
  });

  test('upload FILE --device IP: records and succeeds when the build exists', async () => {
    await withWorld({ esphome: { delayMs: 10 } }, async (w) => {
      const d = esphomeDir(w, 'generic-bk7231n-qfn32-tuya');
      const file = path.join(d, 'status-plug-01.yaml');
      const before = await run(w, 'esphome', ['upload', file, '--device', '192.168.1.50']);
      assert.equal(before.code, 1);
      assert.match(before.stderr, /FileNotFoundError/);
      assert.equal((await run(w, 'esphome', ['compile', file])).code, 0);
      const r = await run(w, 'esphome', ['upload', file, '--device', '192.168.1.50']);
      assert.equal(r.code, 0, r.stderr);
      assertInOrder(r.stderr, ['INFO Connecting to 192.168.1.50', 'INFO Uploading ', 'INFO OTA successful', 'INFO Successfully uploaded program.']);
      assert.deepEqual(w.calls('esphome').at(-1)!.argv, ['upload', file, '--device', '192.168.1.50']);
    });
  });
});

describe('fake ss', { concurrency: true }, () => {
  test('busy ports in ss format with users:((…)); filters; nothing without -l', async () => {
    const busy = [
      { proto: 'udp' as const, port: 53, process: 'systemd-resolve', pid: 612 },
      { proto: 'tcp' as const, port: 80, process: 'nginx', pid: 1200 },
    ];
    await withWorld({ ss: { busy } }, async (w) => {
      const r = await run(w, 'ss', ['-H', '-l', '-n', '-t', '-u', '-p']);
      const rows = r.stdout.trim().split('\n');
      assert.equal(rows.length, 2);
      assert.match(rows[0], /^udp +UNCONN +0 +0 +127\.0\.0\.53%lo:53 +0\.0\.0\.0:\* +users:\(\("systemd-resolve",pid=612,fd=3\)\)$/);
      assert.match(rows[1], /^tcp +LISTEN +0 +4096 +0\.0\.0\.0:80 +0\.0\.0\.0:\* +users:\(\("nginx",pid=1200,fd=4\)\)$/);
      assert.equal((await run(w, 'ss', ['-lntupH'])).stdout, r.stdout);
      const head = await run(w, 'ss', ['-lntp']);
      assert.match(head.stdout, /^State +Recv-Q +Send-Q +Local Address:Port +Peer Address:PortProcess\n/);
      assert.equal(head.stdout.trim().split('\n').length, 2);
      const q = await run(w, 'ss', ['-lnp', '-A', 'udp', 'sport = :53']);
      assert.match(q.stdout, /pid=612/);
      assert.equal((await run(w, 'ss', ['-lnp', '-A', 'udp', 'sport = :67'])).stdout.split('\n').length, 2);
      assert.equal((await run(w, 'ss', ['-H', '-ntu'])).stdout, '');
    });
  });
});
