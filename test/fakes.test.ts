// The fake outside tools (test/fakes.ts) behave like the real ones for what flash.ts runs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  makeFakeWorld, writeCloudcutterProfile, CLOUDCUTTER_MESSAGES, CLOUDCUTTER_LINES, chipMismatchLine, portQuestion,
  type FakeWorld, type FakeWorldOptions,
} from './fakes.ts';
import { makeUF2, makeUG, readUF2Payload, FAMILY_ID, kickstartFileName } from './firmware-files.ts';
import { startSimPlug, type SimPlug, type SimPlugOptions } from './sim/plug.ts';
import YAML from 'yaml';
import { renderDeviceConfig, substitutionsFor, type Recipe } from '../flash.ts';
import { MSG, decode, noiseSession } from './api-client.ts';

const API = path.join(import.meta.dirname, 'fixtures', 'cloudcutter-api');
const readJson = (rel: string) => JSON.parse(fs.readFileSync(path.join(API, rel), 'utf8'));
const N_DEVICE = 'minoston-mp22wp-outdoor-plug';
const N_PROFILE = 'profiles/oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00.json';
const T_DEVICE = 'kmc-30153-smart-plug-mini';
const T_PROFILE = 'profiles/oem-bk7231s-rnd-switch-1.0.7-sdk-2.0.0-30.06.json';
const KS_N = kickstartFileName('bk7231n');
const KS_T = kickstartFileName('bk7231t');
/** Worlds here run at 1/100 of real time (a 3 s scan takes 30 ms) unless a test says otherwise. */
const FAST = 0.01;
/** Keys for cloudcutter's questions on a stock Ubuntu: S(kip) systemd-resolved on port 53, n(o) to stop AppArmor. */
const UBUNTU_KEYS = 'Sn';

interface Ran { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs a command in the world. killAfter.when is tested against stdout + stderr as they arrive. */
interface RunOpts {
  cwd?: string;
  input?: string;
  killAfter?: { ms: number; signal: NodeJS.Signals } | { when: RegExp; signal: NodeJS.Signals };
  /** SIGKILL after this long (default 30 s): a failure, unless `killedByTimeout` says it is what the test expects. */
  timeoutMs?: number;
  killedByTimeout?: boolean;
  /** Called once when the output first matches (a user reacting to what the tool says); kill ends the child. */
  on?: [RegExp, (kill: (sig: NodeJS.Signals) => void) => void][];
  /** Keep stdin open after the input (a terminal nobody types on). */
  holdStdin?: boolean;
}

function run(world: FakeWorld, cmd: string, args: string[], o: RunOpts = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: o.cwd ?? world.dir, env: world.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const pending = [...(o.on ?? [])];
    const kill = (sig: NodeJS.Signals) => { if (!killed) { killed = true; child.kill(sig); } };
    const check = () => {
      if (o.killAfter && 'when' in o.killAfter && o.killAfter.when.test(stdout + stderr)) kill(o.killAfter.signal);
      for (const h of [...pending]) if (h[0].test(stdout + stderr)) { pending.splice(pending.indexOf(h),
        1); h[1](kill); }
    };
    child.stdout.on('data', (d) => { stdout += d; check(); });
    child.stderr.on('data', (d) => { stderr += d; check(); });
    child.on('error', reject);
    if (o.killAfter && 'ms' in o.killAfter) { const k = o.killAfter; setTimeout(() => kill(k.signal), k.ms); }
    // A run that never ends is a failure, not whatever it printed until then.
    let timedOut = false;
    const timer = setTimeout(() => (timedOut = true, child.kill('SIGKILL')), o.timeoutMs ?? 30_000);
    child.stdin.on('error', () => { /* the child may exit before reading its input */ });
    if (o.holdStdin) child.stdin.write(o.input ?? '');
    else child.stdin.end(o.input ?? '');
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      child.stdin.destroy();
      if (timedOut && !o.killedByTimeout) reject(new Error(`${cmd} ${args.join(' ')}: killed after ${o.timeoutMs ?? 30_000} ms, ` +
        `still running:\n${stdout}${stderr}`));
      else resolve({ code, signal, stdout, stderr });
    });
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
  const w = await makeFakeWorld({ timeScale: FAST, ...opts });
  try {
    await fn(w);
  } finally {
    await w.cleanup();
  }
}

/** A world whose checkout holds the device + profile flash.ts writes for a 23A (BK7231N) plug. */
async function cloudcutterWorld(opts: FakeWorldOptions = {}, chip: 'n' | 't' = 'n') {
  // piped stdin here, not a terminal: tests that are not about the TTY let `docker run -ti` pass
  const cc = opts.cloudcutter === false ? false : { requireTty: false, ...(opts.cloudcutter ?? {}) };
  const w = await makeFakeWorld({ timeScale: FAST, ...opts, cloudcutter: cc });
  if (w.cloudcutter) {
    if (chip === 'n') writeCloudcutterProfile(w.cloudcutter, N_DEVICE, readJson(`devices/${N_DEVICE}.json`), readJson(N_PROFILE));
    else writeCloudcutterProfile(w.cloudcutter, T_DEVICE, readJson(`devices/${T_DEVICE}.json`), readJson(T_PROFILE));
  }
  return w;
}

const flashArgs = (slug = N_DEVICE, fw = KS_N, extra: string[] = ['-w', 'wlan1']) => ['./tuya-cloudcutter.sh', '-p', slug, '-f', fw, ...extra];

/** The simulated plug on the stock firmware (no mDNS), at the tests' time scale. */
async function stockPlug(o: Partial<SimPlugOptions> = {}): Promise<SimPlug> {
  return startSimPlug({ mcu: 'bk7231n', phase: 'tuya', mdnsInterface: false, timeScale: FAST, ...o });
}

/** `sudo ./tuya-cloudcutter.sh …` in the checkout, answering Ubuntu's questions unless told otherwise. */
const cloudcutter = (w: FakeWorld, args = flashArgs(), o: RunOpts = {}) =>
  run(w, 'sudo', args, { cwd: w.cloudcutter, input: UBUNTU_KEYS, timeoutMs: 60_000, ...o });

const nmcliOut = async (w: FakeWorld, args: string[]) => (await run(w, 'nmcli', args)).stdout;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readStateOf = (w: FakeWorld) => JSON.parse(fs.readFileSync(path.join(w.dir, 'state.json'), 'utf8'));

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
  test('with the sim: dots until the user puts the plug in AP mode (twice), the real lines in order, flashed at ' +
    '"send complete"', async () => {
    const sim = await stockPlug({ mac: 'C8478C0A1B2C', tuyaMac: 'D81F12AABBCC', kickstartBootMs: 20000 });
    const w = await cloudcutterWorld({ simUrl: sim.url });
    try {
      const seen: Record<string, unknown> = {};
      const r = await cloudcutter(w, flashArgs(), {
        timeoutMs: 60_000,
        on: [
          [/Scanning for open Tuya SmartLife AP\n\.\.\./,
            () => { seen.apBeforeUser = sim.tuyaAp; void sim.enterApMode(); }],
          [/Power cycle and place your device in AP/,
            () => { seen.apAfterExploit = sim.tuyaAp; void sim.enterApMode(); }],
          [/send complete/, () => { seen.phaseAtSend = sim.phase; }],
          [/Firmware update progress: 4%/, () => { seen.phaseAfterSend = sim.phase; }],
        ],
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assertInOrder(r.stdout, [
        CLOUDCUTTER_LINES.buildingImage, CLOUDCUTTER_LINES.loading, CLOUDCUTTER_LINES.safetyStart,
        'Checking UDP port 53... Occupied by systemd-resolve with PID 612.', 'Port 53 is needed to resolve DNS queries',
        'Skipping...',
        ...CLOUDCUTTER_LINES.apparmor, CLOUDCUTTER_LINES.safetyDone,
        `Selected Device Slug: ${N_DEVICE}`, 'Selected Profile: oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00', `Selected Firmware: ${KS_N}`,
        CLOUDCUTTER_LINES.placeInApMode, 'Scanning for open Tuya SmartLife AP', /^\.{3,}$/,
        'Found access point name: "SmartLife-BBCC", trying to connect...',
        /^Device 'wlan1' successfully activated with '[0-9a-f-]{36}'\.$/, CLOUDCUTTER_LINES.connected,
        CLOUDCUTTER_LINES.exploitStart,
        'Using AuthKey: ', 'output=/work/configured-devices/', CLOUDCUTTER_LINES.powerCycle,
        'Scanning for open Tuya SmartLife AP',
        'Found access point name: "A-BBCC", trying to connect...', CLOUDCUTTER_LINES.joiningFlashAp,
        "Configured device to connect to 'cloudcutterflash'",
        CLOUDCUTTER_LINES.flashing, CLOUDCUTTER_LINES.waitForDevice, 'Using WLAN adapter: wlan1', 'wlan1: AP-ENABLED',
        CLOUDCUTTER_LINES.stuckHint,
        `Processing endpoint /files/${KS_N}`, `[Firmware Upload] /files/${KS_N} send complete, request range: bytes=0-`,
        'Firmware update progress: 4%', 'Firmware update progress: 100%', CLOUDCUTTER_LINES.nearlyComplete, CLOUDCUTTER_LINES.complete,
        CLOUDCUTTER_LINES.pleaseWait, 'Device MAC address: d8:1f:12:aa:bb:cc',
      ]);
      assert.ok(/Using AuthKey: \w{16}\r\n/.test(r.stdout), 'lines from inside docker -ti end in \\r\\n');
      // the plug was in AP mode only because the user put it there, and left it after the exploit
      assert.deepEqual([seen.apBeforeUser, seen.apAfterExploit], [null, null]);
      // "send complete": the plug reboots into Kickstart, whose AP comes up only after its reboot
      assert.equal(seen.phaseAtSend, 'off');
      assert.equal(seen.phaseAfterSend, 'off');
      await sim.waitForPhase('kickstart-ap', 2000);
      assert.match(r.stdout, /Device MAC address: d8:1f:12:aa:bb:cc/,
        "cloudcutter prints Tuya's MAC, not Kickstart's (C8478C0A1B2C)");
      const combined = JSON.parse(fs.readFileSync(path.join(w.cloudcutter!, 'device-profiles', N_DEVICE, 'combined.json'), 'utf8'));
      assert.deepEqual(Object.keys(combined), ['slug', 'device', 'profile']);
      assert.deepEqual(w.calls().slice(0, 2).map((c) => [c.tool, c.argv, c.cwd]), [
        ['sudo', flashArgs(), w.cloudcutter], ['tuya-cloudcutter.sh', flashArgs().slice(1), w.cloudcutter]]);
      // the script's connections stay behind; the adapter is NetworkManager's again and finds Kickstart's AP
      assert.deepEqual((await nmcliOut(w, ['-t', '-f', 'NAME', 'connection', 'show'])).trim().split('\n'),
        ['Wired connection 1', 'SmartLife-BBCC', 'A-BBCC']);
      assert.doesNotMatch(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /unmanaged/);
      assert.match(await nmcliOut(w, ['-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan', 'yes', 'ifname',
        'wlan1']), /^kickstart-bk7231n$/m);
    } finally {
      await sim.close();
      await w.cleanup();
    }
  });

  test('with the sim and no user: the AP scan prints a dot per scan forever; Ctrl+C ends it', async () => {
    const sim = await stockPlug();
    const w = await cloudcutterWorld({ simUrl: sim.url });
    try {
      const r = await cloudcutter(w, flashArgs(), { killAfter: { when: /Scanning for open Tuya SmartLife AP\n\.{20}/,
        signal: 'SIGINT' } });
      assert.equal(r.signal, 'SIGINT');
      assert.ok(!r.stdout.includes(CLOUDCUTTER_LINES.found));
      assert.equal(sim.tuyaAp, null);
    } finally {
      await sim.close();
      await w.cleanup();
    }
  });

  test('time: the Docker build comes first (first build ~63 s, then cached), the AP-mode instructions only when ' +
    'scanning starts', async () => {
    const scale = 0.02;
    const w = await cloudcutterWorld({ timeScale: scale, cloudcutter: { imageBuilt: false, outcome: 'no-ap' } });
    try {
      let built = 0;
      const t0 = Date.now();
      const untilScanning = { killAfter: { when: /Scanning for open Tuya SmartLife AP\n\./,
        signal: 'SIGINT' as const } };
      const first = await cloudcutter(w, flashArgs(), { ...untilScanning, on: [[/Successfully built/,
        () => { built = Date.now() - t0; }]] });
      // output can only come late, never early: a lower bound holds under any load
      assert.ok(built >= 63000 * scale, `the first build took ${built} ms`);
      assertInOrder(first.stdout, [CLOUDCUTTER_LINES.buildingImage, CLOUDCUTTER_LINES.builtImage,
        CLOUDCUTTER_LINES.loading,
        CLOUDCUTTER_LINES.safetyDone, `Selected Firmware: ${KS_N}`, CLOUDCUTTER_LINES.placeInApMode,
        CLOUDCUTTER_LINES.scanning]);
      assert.match(first.stderr, /RUN pip install --upgrade pipenv/);
      assert.ok(readStateOf(w).images.includes('cloudcutter:latest'));
      const again = await cloudcutter(w, flashArgs(), untilScanning);
      assert.match(again.stderr, /#5 CACHED/);
      assert.doesNotMatch(again.stderr, /pip install/);
    } finally {
      await w.cleanup();
    }
  });

  test('no terminal: `docker run -ti` refuses ("the input device is not a TTY"), the profile step fails; under ' +
    'script(1) it goes on', async () => {
    const w = await cloudcutterWorld({ cloudcutter: { requireTty: true, outcome: 'no-ap' } });
    try {
      const r = await cloudcutter(w);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^the input device is not a TTY$/m);
      assertInOrder(r.stdout, [CLOUDCUTTER_LINES.loading, 'Failed to choose a profile, please run this script again']);
      assert.ok(!r.stdout.includes(CLOUDCUTTER_LINES.safetyStart));
      const cmd = ['sudo', ...flashArgs()].join(' ');
      const tty = await run(w, 'script', ['-q', '-e', '-c', cmd, '/dev/null'], {
        cwd: w.cloudcutter, input: UBUNTU_KEYS, killAfter: { when: /Scanning for open Tuya SmartLife AP/,
          signal: 'SIGKILL' },
      });
      assert.ok(!tty.stdout.includes(CLOUDCUTTER_LINES.notATty), tty.stdout);
      // on a terminal `read -p` shows its prompt: the port question, word for word
      assert.ok(tty.stdout.includes(portQuestion('systemd-resolve')), tty.stdout);
      assert.ok(tty.stdout.includes(CLOUDCUTTER_LINES.apparmorQuestion));
    } finally {
      await w.cleanup();
    }
  });

  test('stock Ubuntu: port 53 (systemd-resolved) asks, Enter aborts, S skips, y stops the service; AppArmor asks too',
    async () => {
    const w = await cloudcutterWorld({ cloudcutter: { outcome: 'no-ap' } });
    try {
      const busy = await portHolders(w);
      assert.match(busy, /127\.0\.0\.53%lo:53/);
      const enter = await cloudcutter(w, flashArgs(), { input: '\n' });
      assertInOrder(enter.stdout, ['Checking UDP port 53... Occupied by systemd-resolve with PID 612.',
        'Port 53 is needed to resolve DNS queries',
        ...CLOUDCUTTER_MESSAGES.portBusy]);
      assert.equal(enter.code, 1);
      const scan = { killAfter: { when: /Scanning for open Tuya SmartLife AP/, signal: 'SIGINT' as const } };
      const skip = await cloudcutter(w, flashArgs(), { input: 'Sn', ...scan });
      assertInOrder(skip.stdout, ['Skipping...', 'Checking UDP port 67... Available.', ...CLOUDCUTTER_LINES.apparmor,
        CLOUDCUTTER_LINES.safetyDone]);
      assert.ok(!skip.stdout.includes(CLOUDCUTTER_LINES.apparmorOff));
      assert.deepEqual(readStateOf(w).stopped, []);
      const yes = await cloudcutter(w, flashArgs(), { input: 'yy', ...scan });
      assertInOrder(yes.stdout, ['Attempting to stop systemd-resolved.service', 'Checking UDP port 67... Available.',
        CLOUDCUTTER_LINES.apparmorOff]);
      assert.deepEqual(readStateOf(w).stopped, ['systemd-resolved.service', 'apparmor']);
      assert.equal(await portHolders(w), '', 'systemd-resolved is gone (and with it the host\'s DNS)');
      const free = await cloudcutter(w, flashArgs(), { input: 'n', ...scan });
      assertInOrder(free.stdout, ['Checking UDP port 53... Available.']);
    } finally {
      await w.cleanup();
    }

    async function portHolders(x: FakeWorld) {
      return (await run(x, 'ss', ['-H', '-lnp', '-A', 'udp', 'sport = :53'])).stdout;
    }
  });

  test('hangAfterSend (upstream #816): after "send complete" no end, no exit; SIGTERM ends it and gives the ' +
    'adapter back', async () => {
    const w = await cloudcutterWorld({ cloudcutter: { hangAfterSend: true } });
    try {
      let during = '';
      const r = await cloudcutter(w, flashArgs(), {
        on: [[/Firmware update progress: 94%/, (kill) => {
          void sleep(300).then(() => nmcliOut(w, ['-t', '-f', 'DEVICE,STATE',
            'device'])).then((o) => { during = o; kill('SIGTERM'); });
        }]],
        timeoutMs: 60_000,
      });
      assert.equal(r.signal, 'SIGTERM', r.stdout);
      assert.ok(r.stdout.includes(CLOUDCUTTER_LINES.sendComplete));
      assert.ok(!r.stdout.includes(CLOUDCUTTER_LINES.nearlyComplete) && !r.stdout.includes(CLOUDCUTTER_LINES.mac));
      assert.match(during, /^wlan1:unmanaged$/m, 'hostapd holds the adapter while cloudcutter runs');
      assert.doesNotMatch(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /unmanaged/);
      assert.ok(readStateOf(w).air.every((a: { to: number | null }) => a.to !== null),
        "'cloudcutterflash' is off the air");
    } finally {
      await w.cleanup();
    }
  });

  test('while hostapd runs: its adapter is unmanaged (no scan, no connect), a second adapter sees ' +
    'cloudcutterflash; Ctrl+C hands it back', async () => {
    const w = await cloudcutterWorld({ nmcli: { wifi: [{ iface: 'wlan0', apMode: false, connectedTo: 'HomeNet' },
      { iface: 'wlan1' }] },
      cloudcutter: { hangAfterSend: true } });
    try {
      const checks: Promise<unknown>[] = [];
      let results: string[] = [];
      const r = await cloudcutter(w, flashArgs(), {
        on: [[/wlan1: AP-ENABLED/, (kill) => { checks.push(Promise.all([
          nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']),
          nmcliOut(w, ['-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan', 'yes', 'ifname', 'wlan1']),
          run(w, 'nmcli', ['device', 'wifi', 'connect', 'cloudcutterflash', 'ifname',
            'wlan1']).then((x) => `${x.code} ${x.stderr}`),
          run(w, 'nmcli', ['device', 'wifi', 'rescan', 'ifname', 'wlan1']).then((x) => `${x.code} ${x.stderr}`),
          nmcliOut(w, ['-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan', 'yes', 'ifname', 'wlan0']),
        ]).then((x) => { results = x; kill('SIGINT'); })); }]],
        timeoutMs: 60_000,
      });
      await Promise.all(checks);
      assert.equal(r.signal, 'SIGINT', r.stdout);
      const [devices, list1, connect1, rescan1, list0] = results;
      assert.match(devices, /^wlan1:unmanaged$/m);
      assert.equal(list1, '');
      assert.equal(connect1, "10 Error: No network with SSID 'cloudcutterflash' found.\n");
      assert.equal(rescan1, '1 Error: Scanning not allowed while unavailable.\n');
      assert.match(list0, /^cloudcutterflash$/m);
      assert.doesNotMatch(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /unmanaged/);
    } finally {
      await w.cleanup();
    }
  });

  test('two adapters, no -w: it takes the first Wi-Fi line of `nmcli device` (the connected internal one), warns ' +
    'and waits for a key', async () => {
    const w = await cloudcutterWorld({ nmcli: { wifi: [{ iface: 'wlan1', apMode: true }, { iface: 'wlan0',
      apMode: false, connectedTo: 'HomeNet' }] },
      cloudcutter: { outcome: 'no-ap' } });
    try {
      // common.sh:5: nmcli device status | grep " wifi " | head -n1 | awk '{print $1}'
      const firstWifi = (await nmcliOut(w, ['device'])).split('\n').filter((l) => / wifi /.test(l))[0].split(/\s+/)[0];
      assert.equal(firstWifi, 'wlan0');
      const waiting = await cloudcutter(w, flashArgs(N_DEVICE, KS_N, []), {
        input: '', holdStdin: true, on: [[/AP support is manditory/, (kill) => setTimeout(() => kill('SIGINT'),
          500)]] });
      assertInOrder(waiting.stdout, ['[!] WARNING: Selected wifi AP support: no', 'AP support is manditory']);
      assert.ok(!waiting.stdout.includes(CLOUDCUTTER_LINES.buildingImage), 'it waits for a key before anything else');
    } finally {
      await w.cleanup();
    }
  });

  for (const outcome of ['exploit', 'chip', 'ap', 'docker', 'adapter', 'ota'] as const) {
    test(`outcome ${outcome}: the real failure text in its real place, exit 1`, async () => {
      const w = await cloudcutterWorld({ cloudcutter: { outcome } });
      try {
        const r = await cloudcutter(w);
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
    await withWorld({ cloudcutter: { requireTty: false } }, async (w) => {
      const r = await cloudcutter(w, flashArgs('no-such-device'));
      assert.equal(r.code, 1);
      assert.ok(!r.stdout.includes(CLOUDCUTTER_MESSAGES.profile[0]), 'no dir: no "Custom device" line');
      assertInOrder(r.stdout, [CLOUDCUTTER_LINES.loading, 'The specified device does not exist in the API.',
        'API request to https://tuya-cloudcutter.github.io/api/devices/no-such-device.json timed out.', 'Failed to choose a profile, please run this script again']);
      // a dir with only the device JSON (no JSON with a "firmware" key) is not enough
      writeCloudcutterProfile(w.cloudcutter!, 'half', readJson(`devices/${N_DEVICE}.json`), { name: 'no firmware key' });
      const r2 = await cloudcutter(w, flashArgs('half'));
      assert.equal(r2.code, 1);
      assertInOrder(r2.stdout, [CLOUDCUTTER_MESSAGES.profile[0], CLOUDCUTTER_MESSAGES.profile[1], CLOUDCUTTER_MESSAGES.profile[3]]);
      // any *.json file names work: the keys decide ("profiles" = device, "firmware" = profile)
      const d = path.join(w.cloudcutter!, 'device-profiles', 'any-names');
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'a.json'), JSON.stringify(readJson(N_PROFILE)));
      fs.writeFileSync(path.join(d, 'b.json'), JSON.stringify(readJson(`devices/${N_DEVICE}.json`)));
      fs.writeFileSync(path.join(d, 'notes.txt'), 'ignored');
      assert.equal((await cloudcutter(w, flashArgs('any-names'))).code, 0);
      // invalid JSON
      fs.writeFileSync(path.join(d, 'c.json'), '{"profiles": [');
      const r3 = await cloudcutter(w, flashArgs('any-names'));
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
      const missing = await cloudcutter(w, flashArgs(N_DEVICE, 'nope.ug.bin'));
      assert.equal(missing.code, 1);
      assert.match(missing.stdout, /^FileNotFoundError: \[Errno 2\] No such file or directory: '\/work\/custom-firmware\/nope\.ug\.bin'\r$/m);
      const wrongChip = await cloudcutter(w, flashArgs(N_DEVICE, KS_T));
      assert.equal(wrongChip.code, 1);
      assert.ok(lines(wrongChip.stdout).includes(chipMismatchLine(KS_T, 'bk7231n')), wrongChip.stdout);
      const noChip = await cloudcutter(w, flashArgs(N_DEVICE, 'custom.ug.bin'));
      assert.equal(noChip.code, 1);
      assertInOrder(noChip.stdout, ["!!! Can't verify chip type of UG file 'custom.ug.bin' - make sure that BK7231T or BK7231N is present in the filename!", chipMismatchLine('custom.ug.bin', 'bk7231n')]);
      const short = await cloudcutter(w, flashArgs(N_DEVICE, 'small_bk7231n.bin'));
      assertInOrder(short.stdout, ["!!! Unrecognized file type - 'small_bk7231n.bin' is not a UG, UF2, or RTL8720CF OTA file."]);
      const ok = await cloudcutter(w, flashArgs(N_DEVICE, 'firmware.uf2'));
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
      const both = await cloudcutter(w, [...flashArgs(), '-s', 'HomeNet', 'pw']);
      assert.equal(both.code, 1);
      assert.deepEqual(lines(both.stdout).filter(Boolean), [...CLOUDCUTTER_MESSAGES.detachAndFlash]);
      const t = await cloudcutter(w, [...flashArgs(), '-t', '30']);
      assert.equal(t.code, 1);
      assertInOrder(t.stdout, [CLOUDCUTTER_LINES.flashing, "cloudcutter update_firmware: error: argument flash_timeout: invalid int value: ''", CLOUDCUTTER_MESSAGES.ota[0]]);
      const h = await cloudcutter(w, ['./tuya-cloudcutter.sh', '-h']);
      assert.equal(h.code, 0);
      assert.match(h.stdout, /^ {2}-p TEXT {11}Device profile name, AKA Device Slug \(optional\)$/m);
      const bad = await cloudcutter(w, ['./tuya-cloudcutter.sh', '-x', ...flashArgs().slice(1)]);
      assert.equal(bad.code, 0);
      assert.equal(lines(bad.stderr)[0], './tuya-cloudcutter.sh: illegal option -- x');
    } finally {
      await w.cleanup();
    }
  });

  test('safety checks: a busy port asks, no answer aborts; "y" kills a process without a unit; an adapter without ' +
    'AP mode warns', async () => {
    const busy = [{ proto: 'udp' as const, port: 53, process: 'dnsmasq', pid: 812 }];
    const w = await cloudcutterWorld({ ss: { busy }, nmcli: { apMode: false } });
    try {
      const r = await cloudcutter(w, flashArgs(), { input: '' });
      assert.equal(r.code, 1);
      assertInOrder(r.stdout, ['[!] WARNING: Selected wifi AP support: no', 'Checking UDP port 53... Occupied by dnsmasq with PID 812.',
        'Port 53 is needed to resolve DNS queries', 'Aborting due to occupied port']);
      // one key for the AP warning's "Press any key", then "y", then "n" for AppArmor (`read -n 1`: one character each)
      // No plug here: once the checks are done it scans for one until stopped.
      const yes = await cloudcutter(w, flashArgs(), { input: ' yn', killAfter: { when: /Scanning for open/,
        signal: 'SIGINT' } });
      assertInOrder(yes.stdout, ['Attempting to terminate dnsmasq', 'Checking UDP port 67... Available.',
        CLOUDCUTTER_LINES.safetyDone]);
      assert.deepEqual(readStateOf(w).stopped, ['dnsmasq (pid 812)']);
    } finally {
      await w.cleanup();
    }
  });

  test('firewalld and an active ufw are stopped without asking; the rtl8192cu blacklist file asks', async () => {
    const w = await cloudcutterWorld({ host: { firewalld: true, ufw: 'active', blacklistRtl8192cu: true,
      apparmor: false }, ss: { busy: [] },
      cloudcutter: { outcome: 'no-ap' } });
    try {
      const r = await cloudcutter(w, flashArgs(), { input: 'y', killAfter: { when: /Scanning for open/,
        signal: 'SIGINT' } });
      assertInOrder(r.stdout, ['Checking TCP port 8886... Available.', 'Attempting to stop firewalld.service',
        'When done, enable with: sudo systemctl start firewalld.service',
        'Firewall stopped and disabled on system startup',
        'When done, enable with: sudo ufw enable', ...CLOUDCUTTER_LINES.blacklist, CLOUDCUTTER_LINES.safetyDone]);
      assert.ok(!r.stdout.includes(CLOUDCUTTER_LINES.apparmor[0]));
      assert.deepEqual(readStateOf(w).stopped, ['firewalld.service', 'ufw', 'blacklist-rtl8192cu.conf']);
    } finally {
      await w.cleanup();
    }
  });

  test('adapter detection like common.sh: no wifi device and no -w fails; an unknown -w only warns', async () => {
    const w = await cloudcutterWorld({ nmcli: { wifiIface: '' } });
    try {
      const r = await cloudcutter(w, flashArgs(N_DEVICE, KS_N, []));
      assert.equal(r.code, 1);
      assert.deepEqual(lines(r.stdout).filter(Boolean), [...CLOUDCUTTER_MESSAGES.adapter]);
      const r2 = await cloudcutter(w, flashArgs(N_DEVICE, KS_N, ['-w', 'wlan9']), { input: ' Sn',
        killAfter: { when: /AP\n\.{5}/, signal: 'SIGINT' } });
      assert.equal(lines(r2.stdout)[0], '[!] WARNING: Selected wifi AP support: ');
      assert.match(r2.stderr, /^Error: Device 'wlan9' not found\.$/m);
      assert.ok(!r2.stdout.includes(CLOUDCUTTER_LINES.found), 'an adapter that is not there finds nothing, forever');
    } finally {
      await w.cleanup();
    }
  });

  test('no docker command at all: the image build fails like the real script', async () => {
    const w = await cloudcutterWorld({ docker: false });
    try {
      const r = await cloudcutter(w);
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
      const r = await cloudcutter(w, flashArgs(), { killAfter: { when: /Scanning for open Tuya SmartLife AP\n\.\./,
        signal: 'SIGINT' } });
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

  test('wifi connect (with --wait) to a listed network, list, disconnect, connection delete; an SSID not listed',
    async () => {
    const networks = [{ ssid: 'HomeNet', security: 'WPA2', bssid: '3C:84:6A:11:22:33' }, { ssid: 'OpenCafe',
      security: '', bssid: '3C:84:6A:44:55:66', gateway: '10.0.0.1' }];
    await withWorld({ nmcli: { networks } }, async (w) => {
      const c = await run(w, 'nmcli', ['--wait', '60', 'device', 'wifi', 'connect', 'OpenCafe', 'ifname', 'wlan1']);
      assert.equal(c.code, 0, c.stderr);
      assert.match(c.stdout, /^Device 'wlan1' successfully activated with '[0-9a-f-]{36}'\.\n$/);
      assert.match(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE,CONNECTION', 'device']), /^wlan1:connected:OpenCafe$/m);
      assert.match(await nmcliOut(w, ['-t', '-f', 'IP4.GATEWAY', 'connection', 'show', 'OpenCafe']),
        /^IP4.GATEWAY:10\.0\.0\.1$/m);
      assert.match(await nmcliOut(w, ['device', 'wifi', 'list', 'ifname', 'wlan1']),
        /^IN-USE +BSSID +SSID .*\n {8}3C:84:6A:11:22:33 +HomeNet /);
      assert.match(await nmcliOut(w, ['-t', '-f', 'IN-USE,SSID', 'device', 'wifi', 'list', 'ifname', 'wlan1']),
        /^\*:OpenCafe$/m);
      const del = await run(w, 'nmcli', ['connection', 'delete', 'id', 'OpenCafe']);
      assert.match(del.stdout, /^Connection 'OpenCafe' \([0-9a-f-]{36}\) successfully deleted\.\n$/);
      assert.match(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /^wlan1:disconnected$/m);
      const again = await run(w, 'nmcli', ['connection', 'delete', 'OpenCafe']);
      assert.deepEqual([again.code, again.stderr], [10,
        "Error: unknown connection 'OpenCafe'.\nError: cannot delete unknown connection(s): 'OpenCafe'.\n"]);
      assert.equal((await run(w, 'nmcli', ['device', 'disconnect', 'wlan1'])).code, 6);
      const none = await run(w, 'nmcli', ['device', 'wifi', 'connect', 'kickstart-bk7231n', 'ifname', 'wlan1']);
      assert.deepEqual([none.code, none.stderr], [10, "Error: No network with SSID 'kickstart-bk7231n' found.\n"]);
      const other = await run(w, 'nmcli', ['device', 'wifi', 'connect', 'OpenCafe', 'ifname', 'wlan9']);
      assert.deepEqual([other.code, other.stderr], [1, "Error: Device 'wlan9' is not a Wi-Fi device.\n"]);
    });
    await withWorld({ nmcli: { connectFails: true } }, async (w) => {
      const c = await run(w, 'nmcli', ['device', 'wifi', 'connect', 'HomeNet', 'ifname', 'wlan1']);
      assert.deepEqual([c.code, c.stderr], [10, "Error: No network with SSID 'HomeNet' found.\n"]);
    });
  });

  test('device order like nmcli: active first (default route first, lo after), then disconnected; two adapters',
    async () => {
    await withWorld({ nmcli: { wifi: [{ iface: 'wlan1', apMode: true }, { iface: 'wlan0', apMode: false,
      connectedTo: 'HomeNet' }] } }, async (w) => {
      assert.equal(await nmcliOut(w, ['-t', '-f', 'DEVICE,TYPE,STATE,CONNECTION', 'device']),
        'eth0:ethernet:connected:Wired connection 1\nwlan0:wifi:connected:HomeNet\n' +
        'lo:loopback:connected (externally):lo\nwlan1:wifi:disconnected:\n');
      assert.match(await nmcliOut(w, ['device', 'status']),
        /^DEVICE +TYPE +STATE +CONNECTION +\neth0 .*\nwlan0 +wifi +connected +HomeNet/);
      assert.equal(await nmcliOut(w, ['-t', '-f', 'WIFI-PROPERTIES.AP', 'device', 'show', 'wlan0']),
        'WIFI-PROPERTIES.AP:no\n');
      assert.equal(await nmcliOut(w, ['-t', '-f', 'WIFI-PROPERTIES.AP', 'device', 'show', 'wlan1']),
        'WIFI-PROPERTIES.AP:yes\n');
    });
    await withWorld({ nmcli: { ethIface: '', wifi: [{ iface: 'wlan1' }, { iface: 'wlan0' }] } }, async (w) => {
      assert.equal(await nmcliOut(w, ['-t', '-f', 'DEVICE', 'device']), 'lo\nwlan0\nwlan1\n', 'same state: by name');
    });
  });

  test('scans: the list is what the last scan saw; --rescan yes waits for a new one; connect never rescans; stale ' +
    'entries linger', async () => {
    const sim = await stockPlug({ tuyaMac: 'D81F12AABBCC', apModeMs: 1000 });
    // connected to HomeNet: NetworkManager does not scan it by itself, only when asked
    const w = await makeFakeWorld({ timeScale: FAST, simUrl: sim.url, nmcli: { wifi: [{ iface: 'wlan1',
      connectedTo: 'HomeNet' }] } });
    try {
      const list = (rescan: string) => run(w, 'nmcli', ['-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan',
        rescan, 'ifname', 'wlan1']);
      await list('yes');
      await sim.enterApMode();
      assert.equal(sim.tuyaAp, 'SmartLife-BBCC');
      // on the air, but no scan has seen it yet
      assert.doesNotMatch((await list('no')).stdout, /SmartLife-BBCC/);
      const none = await run(w, 'nmcli', ['device', 'wifi', 'connect', 'SmartLife-BBCC', 'ifname', 'wlan1']);
      assert.deepEqual([none.code, none.stderr], [10, "Error: No network with SSID 'SmartLife-BBCC' found.\n"]);
      await sleep(30_000 * FAST + 100);
      const auto = await run(w, 'nmcli', ['-t', '-f', 'SSID', 'device', 'wifi', 'list', 'ifname', 'wlan1']);
      assert.match(auto.stdout, /^SmartLife-BBCC$/m, 'the default (--rescan auto) rescans a list older than 30 s');
      const t0 = Date.now();
      const fresh = await list('yes');
      assert.ok(Date.now() - t0 >= 3000 * FAST, '--rescan yes waits for a scan (3 s real)');
      assert.match(fresh.stdout, /^SmartLife-BBCC$/m);
      assert.match((await list('no')).stdout, /^SmartLife-BBCC$/m);
      // the AP goes away (the exploit froze the plug): the list still shows it for a while
      await fetch(`${sim.url}/_sim/exploit`, { method: 'POST', body: '{}' });
      assert.match((await list('no')).stdout, /^SmartLife-BBCC$/m);
      const stale = await run(w, 'nmcli', ['device', 'wifi', 'connect', 'SmartLife-BBCC', 'ifname', 'wlan1']);
      assert.deepEqual([stale.code, stale.stderr], [4,
        'Error: Connection activation failed: The Wi-Fi network could not be found.\n']);
      // `device wifi rescan` only starts one: a list right after it still shows the old scan
      assert.equal((await run(w, 'nmcli', ['device', 'wifi', 'rescan', 'ifname', 'wlan1'])).code, 0);
      await sleep(2 * 3000 * FAST + 100);
      await list('yes');
      await sleep(100);
      // seen in neither of the last two scans and older than 180 s (scaled): gone
      await sleep(180_000 * FAST);
      assert.doesNotMatch((await list('yes')).stdout, /SmartLife-BBCC/);
    } finally {
      await sim.close();
      await w.cleanup();
    }
  });

  test("the Kickstart AP is on the air only once the sim is in its AP phase; --rescan auto trusts a list younger " +
    "than 30 s", async () => {
    // real time: 30 s of slack for "younger than 30 s", whatever the load
    const sim = await stockPlug({ kickstartBootMs: 6000, timeScale: 1 });
    const w = await makeFakeWorld({ timeScale: 1, simUrl: sim.url, nmcli: { wifi: [{ iface: 'wlan1',
      connectedTo: 'HomeNet' }] } });
    try {
      const ssids = async (rescan?: string) => (await run(w, 'nmcli', ['-t', '-f', 'SSID', 'device', 'wifi', 'list',
        ...(rescan ? ['--rescan', rescan] : []), 'ifname', 'wlan1'], { timeoutMs: 20_000 })).stdout;
      sim.flashKickstart();
      assert.equal(sim.phase, 'off');
      assert.doesNotMatch(await ssids('yes'), /kickstart/);
      await sim.waitForPhase('kickstart-ap', 10_000);
      assert.doesNotMatch(await ssids('no'), /kickstart/);
      const scans = () => readStateOf(w).nm.devices.wlan1.scans.length;
      const before = scans();
      assert.doesNotMatch(await ssids(), /kickstart/, 'the default (auto) trusts a list younger than 30 s');
      assert.equal(scans(), before, 'and asks for no scan');
      assert.match(await ssids('yes'), /^kickstart-bk7231n$/m);
    } finally {
      await sim.close();
      await w.cleanup();
    }
  });

  test('managed no: no APs, no scans, no connects; managed yes: unavailable, then disconnected with an empty list ' +
    'until a scan', async () => {
    const scale = 1;
    await withWorld({ timeScale: scale }, async (w) => {
      assert.equal((await run(w, 'nmcli', ['device', 'set', 'wlan1', 'managed', 'no'])).code, 0);
      assert.match(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /^wlan1:unmanaged$/m);
      assert.match(await nmcliOut(w, ['-t', '-f', 'GENERAL.STATE', 'device', 'show', 'wlan1']),
        /^GENERAL.STATE:10 \(unmanaged\)$/m);
      const list = await run(w, 'nmcli', ['-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan', 'yes', 'ifname',
        'wlan1']);
      assert.deepEqual([list.code, list.stdout], [0, '']);
      const rescan = await run(w, 'nmcli', ['device', 'wifi', 'rescan', 'ifname', 'wlan1']);
      assert.deepEqual([rescan.code, rescan.stderr], [1, 'Error: Scanning not allowed while unavailable.\n']);
      assert.equal((await run(w, 'nmcli', ['device', 'wifi', 'connect', 'HomeNet', 'password', 'x', 'ifname',
        'wlan1'])).code, 10);
      await run(w, 'nmcli', ['device', 'set', 'wlan1', 'managed', 'yes']);
      // unavailable for a second (the supplicant interface comes up), then disconnected
      assert.match(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /^wlan1:(unavailable|disconnected)$/m);
      assert.equal(await nmcliOut(w, ['-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan', 'no', 'ifname',
        'wlan1']), '');
      await sleep((1000 + 3000) * scale + 50);
      assert.match(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /^wlan1:disconnected$/m);
      assert.match(await nmcliOut(w, ['-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan', 'no', 'ifname',
        'wlan1']), /^HomeNet$/m,
        'NetworkManager scans a disconnected device by itself');
    });
  });

  test('radio off drops every Wi-Fi connection; on: the saved network comes back by itself after a scan', async () => {
    await withWorld({ nmcli: { wifi: [{ iface: 'wlan0', connectedTo: 'HomeNet' }] } }, async (w) => {
      await run(w, 'nmcli', ['radio', 'wifi', 'off']);
      assert.equal(await nmcliOut(w, ['radio', 'wifi']), 'disabled\n');
      assert.match(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE', 'device']), /^wlan0:unavailable$/m);
      await run(w, 'nmcli', ['radio', 'wifi', 'on']);
      await sleep((1000 + 3000 + 3000) * FAST + 50);
      assert.match(await nmcliOut(w, ['-t', '-f', 'DEVICE,STATE,CONNECTION', 'device']), /^wlan0:connected:HomeNet$/m);
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
        run(w, 'docker', ['run', '--rm', '--name', 'esphome-term', ...base], { killAfter: { when: started, signal: 'SIGTERM' }, timeoutMs: 1500,
          killedByTimeout: true }),
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
  test('version; compile: UF2 with the family of the board (substitutions resolved), payload {name, friendly_name, ' +
    'board, api_key, esphome_version, config}', async () => {
    await withWorld({}, async (w) => {
      assert.equal((await run(w, 'esphome', ['version'])).stdout, 'Version: 2025.5.0\n');
      for (const [board, chip] of [['generic-bk7231t-qfn32-tuya', 'bk7231t'], ['generic-bk7231n-qfn32-tuya', 'bk7231n']] as const) {
        const d = esphomeDir(w, board);
        const r = await run(w, 'esphome', ['compile', path.join(d, 'status-plug-01.yaml')]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assertInOrder(r.stderr, ['INFO ESPHome 2025.5.0', 'INFO Reading configuration', 'INFO Generating C++ source...', 'INFO Compiling app...', 'INFO Successfully compiled program.']);
        assert.match(r.stdout, new RegExp(`^Processing status-plug-01 \\(board: ${board};`, 'm'));
        const uf2 = fs.readFileSync(path.join(d, '.esphome/build/status-plug-01/.pioenvs/status-plug-01/firmware.uf2'));
        const info = { name: 'status-plug-01', friendly_name: 'Status Plug 01', board,
          api_key: 'aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=', esphome_version: '2025.5.0' };
        const payload = JSON.parse(readUF2Payload(uf2).toString());
        assert.deepEqual(uf2, makeUF2({ familyId: FAMILY_ID[chip], payload: Buffer.from(JSON.stringify(payload)),
          minBlocks: 400 }), 'the same bytes test/firmware-files.ts makes');
        const { config, ...head } = payload;
        assert.deepEqual(head, info);
        // The substituted config the simulated device runs, without the Wi-Fi, OTA and API secrets.
        assert.equal(config.esphome.name, 'status-plug-01');
        assert.equal(config.switch[0].pin, 'P24');
        assert.deepEqual([config.wifi, config.ota, config.api.encryption], [undefined, undefined, undefined]);
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
        // libretiny/gpio.py: "P99" is translated to 99 first; only a name that is not P<n> is looked up by name
        ['generic-bk7231n-qfn32-tuya', 'status_led:\n  pin: P99\n', SECRETS,
          /Pin number '99' is not usable for board generic-bk7231n-qfn32-tuya\./],
        ['generic-bk7231n-qfn32-tuya', 'status_led:\n  pin: PA5\n', SECRETS,
          /Cannot resolve pin name 'PA5' for board generic-bk7231n-qfn32-tuya\./],
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

// What `flash.ts recipe` writes for a plug, a 4-gang strip with metering, a PWM rgbww bulb and an I2C (SM2135) bulb.
const GENERATED = path.join(import.meta.dirname, 'fixtures', 'generated');
const PLUG = 'minoston-mp22wp-outdoor-plug';
const STRIP = 'ledvance-smartplus-eu-multi-socket-power-strip';
const PWM_BULB = 'abie-g99631-05-rgbw-led-lamp';
const I2C_BULB = 'amico-g1-tp120-9-a19-rgbct-bulb';
const GENERATED_SECRETS = `${SECRETS}ap_password: "kickstart-ap"\n`;

/**
 * A generated recipe's config as flash.ts renders it (its substitutions, the board and <fn>_pin in front of the
 * template), optionally edited, written with secrets.yaml beside it. Returns the file.
 */
function generatedConfig(w: FakeWorld, slug: string, name = slug, edit = (text: string) => text): string {
  const recipe = YAML.parse(fs.readFileSync(path.join(GENERATED, `${slug}.yaml`), 'utf8')) as Recipe;
  const template = fs.readFileSync(path.join(GENERATED, recipe.esphome), 'utf8');
  const text = renderDeviceConfig(substitutionsFor(recipe), template, `${slug}.yaml`, recipe.model);
  const edited = edit(text);
  const d = path.join(w.dir, 'generated');
  fs.mkdirSync(d, { recursive: true });
  // written once: configs checked in parallel read it while the next one is being written
  if (!fs.existsSync(path.join(d, 'secrets.yaml'))) fs.writeFileSync(path.join(d, 'secrets.yaml'), GENERATED_SECRETS);
  const file = path.join(d, `${name}.yaml`);
  fs.writeFileSync(file, edited);
  return file;
}

/** Where the fake esphome builds a generated config (named after its device_name). */
function buildDir(slug: string): string {
  const recipe = YAML.parse(fs.readFileSync(path.join(GENERATED, `${slug}.yaml`), 'utf8')) as Recipe;
  const name = recipe.substitutions.device_name;
  return `.esphome/build/${name}/.pioenvs/${name}`;
}

/** A text edit that must change something (a refusal test whose edit missed would pass for nothing). */
const replace = (from: string | RegExp, to: string) => (text: string) => {
  const out = text.replace(from, to);
  assert.notEqual(out, text, `the edit ${from} -> ${to} changed nothing`);
  return out;
};

describe('fake esphome: generated configs', { concurrency: true }, () => {
  test('a plug, a 4-gang strip with metering, a PWM rgbww and an I2C bulb pass `esphome config`; compile writes ' +
    'the UF2 of the board\'s chip with the ESPHome version in it', async () => {
    await withWorld({ esphome: { delayMs: 10, version: '2025.10.1' } }, async (w) => {
      const results = await Promise.all([PLUG, STRIP, PWM_BULB, I2C_BULB].map(async (slug) =>
        [slug, await run(w, 'esphome', ['config', generatedConfig(w, slug)])] as const));
      for (const [slug, r] of results) {
        assert.equal(r.code, 0, `${slug}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, /INFO Configuration is valid!/);
      }
      for (const [slug, chip] of [[PLUG, 'bk7231n'], [STRIP, 'bk7231t']] as const) {
        const r = await run(w, 'esphome', ['compile', generatedConfig(w, slug)]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const uf2 = fs.readFileSync(path.join(w.dir, 'generated', buildDir(slug), 'firmware.uf2'));
        assert.equal(uf2.readUInt32LE(28), FAMILY_ID[chip], `${slug}: the board's chip`);
        assert.equal(JSON.parse(readUF2Payload(uf2).toString()).esphome_version, '2025.10.1');
      }
      // uploaded to the simulated plug, the firmware reports that version over its encrypted API
      const uf2 = fs.readFileSync(path.join(w.dir, 'generated', buildDir(STRIP), 'firmware.uf2'));
      const sim = await startSimPlug({ mcu: 'bk7231t', phase: 'kickstart-lan', mdnsInterface: false, rebootMs: 50 });
      try {
        const form = new FormData();
        form.append('update', new Blob([uf2]), 'firmware.uf2');
        assert.equal(await (await fetch(`${sim.url}/update`, { method: 'POST', body: form })).text(), 'Update Successful!');
        await sim.waitForPhase('final', 3000);
        const key = Buffer.from(/api_encryption_key: "(.*)"/.exec(SECRETS)![1], 'base64');
        const { session } = await noiseSession(sim.apiPort, key);
        assert.ok(session, 'the key the firmware was built with');
        session.msg(MSG.HelloRequest);
        await session.next();
        session.msg(MSG.DeviceInfoRequest);
        const info = decode((await session.next())!.body);
        assert.deepEqual([info[2], info[4]], ['ledvance-smartplus-eu-multi', '2025.10.1'], 'name, esphome_version');
        session.conn.end();
      } finally {
        await sim.close();
      }
    });
  });

  test('boards: each its own pins; wb2l-m1 builds for BK7231N, wa2 for BK7231Q (a UF2 no T/N plug takes)',
    async () => {
      await withWorld({ esphome: { delayMs: 10 } }, async (w) => {
        const onBoard = (board: string, relay = 'P24') => (t: string) =>
          replace('board: "cb2s"', `board: "${board}"`)(t).replace('relay_pin: "P24"', `relay_pin: "${relay}"`);
        const family = async (board: string, relay?: string) => {
          const r = await run(w, 'esphome', ['compile', generatedConfig(w, PLUG, board, onBoard(board, relay))]);
          assert.equal(r.code, 0, r.stdout + r.stderr);
          return fs.readFileSync(path.join(w.dir, 'generated', buildDir(PLUG), 'firmware.uf2')).readUInt32LE(28);
        };
        assert.equal(await family('wb2l-m1'), FAMILY_ID.bk7231n);
        assert.equal(await family('wa2', 'P6'), 0xafe81d49, 'LibreTiny family BK7231Q');
        const wa2 = await run(w, 'esphome', ['config', generatedConfig(w, PLUG, 'wa2-p24', onBoard('wa2'))]);
        assert.equal(wa2.code, 2);
        const message = "\n  \n  Pin number '24' is not usable for board wa2.\n  pin: P24\n";
        assert.ok(wa2.stdout.includes(message), wa2.stdout);
      });
    });

  test('refusals in ESPHome\'s words, exit 2, "Failed config" on stdout', async () => {
    const SM2135_HUB = /^sm2135:\n(?: {2}.*\n)+/m;
    /** The I2C bulb on another driver: its hub (with `extra` lines) and its outputs' platform. */
    const driver = (chip: string, extra = '') => (t: string) =>
      replace(SM2135_HUB, `${chip}:\n  data_pin: P8\n  clock_pin: P7\n${extra}`)(t)
        .replace(/platform: sm2135/g, `platform: ${chip}`);
    /** [name, generated config, edit, domain of the error, ESPHome's message] */
    const cases: [string, string, (t: string) => string, string, string][] = [
      // pins per board (libretiny/gpio.py _lookup_pin)
      ['pin9', PLUG, replace('relay_pin: "P24"', 'relay_pin: "P9"'), 'switch.gpio',
        "Pin number '9' is not usable for board cb2s."],
      ['pinname', PLUG, replace('relay_pin: "P24"', 'relay_pin: "PWM3"'), 'switch.gpio',
        "Cannot resolve pin name 'PWM3' for board cb2s."],
      // one pin, two uses, whatever the key (pins.py): a button on CF, clock on data, two light channels
      ['cf-button', STRIP, replace('button_all_pin: "P11"', 'button_all_pin: "P26"'), 'binary_sensor.gpio',
        'Pin 26 is used in multiple places.'],
      ['clock-data', I2C_BULB, replace('data_pin: "P8"', 'data_pin: "P7"'), 'sm2135',
        'Pin 7 is used in multiple places.'],
      ['2-channels', PWM_BULB, replace('green_pin: "P9"', 'green_pin: "P24"'), 'output.libretiny_pwm',
        'Pin 24 is used in multiple places.'],
      ['allow-once', PLUG, replace('      number: ${status_led_pin}', '      number: ${status_led_pin}\n' +
        '      allow_other_uses: true'), 'light.status_led', 'Pin 7 incorrectly sets allow_other_uses: true.'],
      // hlw8012 (hlw8012/sensor.py)
      ['no-sel', STRIP, replace(/ {4}sel_pin:\n.*\n.*\n/, ''), 'sensor.hlw8012',
        "'sel_pin' is a required option for [sensor.hlw8012]."],
      ['bl0942', STRIP, replace('model: BL0937', 'model: BL0942'), 'sensor.hlw8012',
        "Unknown value 'BL0942', did you mean 'BL0937'?."],
      ['divider', STRIP, replace('voltage_divider: "1600"', 'voltage_divider: "1.6k"'), 'sensor.hlw8012',
        'expected float.'],
      ['ohms', STRIP, replace('current_resistor: "0.001"', 'current_resistor: "0.001 ohms"'), 'sensor.hlw8012',
        'Invalid resistance suffix ohms.'],
      // lights (<platform>/light.py, light/__init__.py, the ID pass in config.py)
      ['no-warm', PWM_BULB, replace('    warm_white: output_warm\n', ''), 'light.rgbww',
        "'warm_white' is a required option for [light.rgbww]."],
      ['no-such-id', PWM_BULB, replace('    red: output_red', '    red: output_r'), 'light.rgbww',
        "Couldn't find ID 'output_r'. Please check you have defined an ID with that name in your configuration. " +
        'These IDs look similar: "output_red", "output_warm", "output_green".'],
      ['binary-output', PWM_BULB, (t) => replace('    cold_white: output_cold', '    cold_white: led_output')(
        replace('output:\n', 'output:\n  - platform: gpio\n    id: led_output\n    pin: P1\n')(t)), 'light.rgbww',
      "ID 'led_output' of type gpio::GPIOBinaryOutput doesn't inherit from output::FloatOutput. Please double check " +
        'your ID is pointing to the correct value.'],
      ['ct-order', PWM_BULB, replace('color_temperature: "6500 K"', 'color_temperature: "2000 K"'), 'light.rgbww',
        'Color temperature of the cold white channel must be colder than that of the warm white channel.'],
      ['disabled', PWM_BULB, replace('default_state: "RESTORE_DEFAULT_ON"', 'default_state: "DISABLED"'), 'light.rgbww',
        "Unknown value 'DISABLED', valid options are 'RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF', " +
        "'ALWAYS_ON', 'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON', 'RESTORE_AND_OFF', " +
        "'RESTORE_AND_ON'."],
      ['no-led-pin', PLUG, replace(/ {4}pin:\n {6}number: \$\{status_led_pin\}\n {6}inverted: true\n/, ''),
        'light.status_led', 'Must contain at least one of pin, output.'],
      ['platform', PWM_BULB, replace('platform: rgbww', 'platform: rgbcw'), 'light.rgbcw',
        "Platform not found: 'light.rgbcw'."],
      // outputs and LED driver hubs (libretiny_pwm/output.py, sm2135, bp5758d, sm10bit_base)
      ['pwm-id', PWM_BULB, replace('    id: output_blue\n', ''), 'output.libretiny_pwm',
        "'id' is a required option for [output.libretiny_pwm]."],
      ['rgb-current', I2C_BULB, replace('rgb_current: 10mA', 'rgb_current: 50mA'), 'sm2135',
        "Unknown value '50mA', did you mean '45mA', '40mA', '35mA'?."],
      ['cw-current', I2C_BULB, replace('cw_current: 60mA', 'cw_current: 65mA'), 'sm2135',
        "Unknown value '65mA', did you mean '60mA', '55mA', '50mA'?."],
      ['no-hub', I2C_BULB, replace(SM2135_HUB, ''), 'output.sm2135',
        "Couldn't find any component that can be used for 'sm2135::SM2135'. Are you missing a hub declaration?."],
      ['hub-pin', I2C_BULB, replace('  data_pin: ${data_pin}\n', ''), 'sm2135',
        "'data_pin' is a required option for [sm2135]."],
      ['bp5758d-channel', I2C_BULB, driver('bp5758d'), 'output.bp5758d', 'value must be at least 1.'],
      ['bp5758d-current', I2C_BULB, (t) => driver('bp5758d')(t).replace(/channel: (\d)/g, (_m, c: string) =>
        `channel: ${Number(c) + 1}`).replace('    channel: 1', '    channel: 1\n    current: 95'), 'output.bp5758d',
      'value must be at most 90.'],
      ['sm2235-power', I2C_BULB, driver('sm2235', '  max_power_white_channels: 16\n'), 'sm2235',
        'value must be at most 15.'],
      ['sm2335-hub', I2C_BULB, (t) => driver('sm2235')(t).replace(/platform: sm2235/g, 'platform: sm2335'),
        'output.sm2335', "Couldn't find any component that can be used for 'sm2335::SM2335'. Are you missing a hub " +
        'declaration?.'],
      // binary_sensor.gpio pins and filters (libretiny/gpio.py, pins.py, binary_sensor/__init__.py)
      ['mode', PLUG, replace('mode: INPUT_PULLUP', 'mode: INPUT_OUTPUT_OPEN_DRAIN'), 'binary_sensor.gpio',
        'This pin mode is not supported.'],
      ['mode-name', PLUG, replace('mode: INPUT_PULLUP', 'mode: INPUT_PULUP'), 'binary_sensor.gpio',
        'Unknown pin mode INPUT_PULUP.'],
      ['delay-unit', PLUG, replace('delayed_on: 50ms', 'delayed_on: 50'), 'binary_sensor.gpio',
        "Don't know what '50' means as it has no time *unit*! Did you mean '50s'?."],
      ['filter', PLUG, replace('delayed_on: 50ms', 'debounce: 50ms'), 'binary_sensor.gpio',
        "Unable to find filter with the name 'debounce'."],
      // top level and IDs (config.py, config_validation.py validate_id_name)
      ['component', PLUG, (t) => `${t}\nrelay:\n  pin: P6\n`, 'relay', 'Component not found: relay.'],
      ['id-dash', PLUG, replace('id: relay_1', 'id: relay-1'), 'switch.gpio',
        'Dashes are not supported in IDs, please use underscores instead.'],
      ['id-taken', PLUG, (t) => `${replace(/button_1/g, 'button')(t)}\nbutton:\n  - platform: restart\n` +
        '    name: Restart\n', 'binary_sensor.gpio',
      "ID 'button' conflicts with the name of an esphome integration, please use another ID name."],
      ['redefined', STRIP, replace('    id: relay_2', '    id: relay_1'), 'switch.gpio',
        'ID relay_1 redefined! Check switch->0->id.'],
    ];
    await withWorld({ esphome: { delayMs: 10 } }, async (w) => {
      const results = await Promise.all(cases.map(async ([name, slug, edit, domain, message]) =>
        ({ name, domain, message, r: await run(w, 'esphome', ['config', generatedConfig(w, slug, name, edit)]) })));
      for (const { name, domain, message, r } of results) {
        assert.equal(r.code, 2, `${name}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout, /^Failed config\n\n/, name);
        const header = `${domain.replace(/\./g, '\\.')}: \\[source .*/${name}\\.yaml:\\d+\\]`;
        const block = new RegExp(`^${header}\\n {2}\\n {2}(.*)$`, 'gm');
        const messages = [...r.stdout.matchAll(block)].map((m) => m[1]);
        assert.ok(messages.includes(message), `${name}: ${JSON.stringify(messages)}\n${r.stdout}`);
        assert.doesNotMatch(r.stderr, /Configuration is valid/, name);
      }
    });
  });

  test('what ESPHome allows passes: every LibreTiny pin mode on a button, the binary_sensor filters, ' +
    'allow_other_uses on both uses, one colour temperature only, mireds, a hub as a list', async () => {
    const modes = ['INPUT', 'INPUT_PULLDOWN', 'OUTPUT', 'OUTPUT_OPEN_DRAIN']; // and INPUT_PULLUP, as generated
    const edits: [string, string, (t: string) => string][] = [
      ...modes.map((m) => [`mode-${m}`, PLUG, replace('mode: INPUT_PULLUP', `mode: ${m}`)] as [string, string,
        (t: string) => string]),
      ['filters', PLUG, replace('      - delayed_on: 50ms', '      - invert:\n      - delayed_on: 10ms\n' +
        '      - delayed_off: 20ms\n      - delayed_on_off:\n          time_on: 10ms\n          time_off: 1s\n' +
        '      - settle: 100ms\n      - invert')],
      ['shared-pin', PLUG, (t) => `${replace('      number: ${status_led_pin}',
        '      number: ${status_led_pin}\n      allow_other_uses: true')(t)}\noutput:\n  - platform: gpio\n` +
        '    id: extra\n    pin:\n      number: P7\n      allow_other_uses: true\n'],
      // rgbww/light.py passes has_none_or_all_keys one list, so the check never fires: one temperature is enough
      ['one-ct', PWM_BULB, replace('    warm_white_color_temperature: ${warm_white_color_temperature}\n', '')],
      ['mireds', PWM_BULB, replace('color_temperature: "6500 K"', 'color_temperature: "153 mireds"')],
      // MULTI_CONF hubs take a list too
      ['hub-list', I2C_BULB, replace(/^sm2135:\n(?: {2}.*\n)+/m, 'sm2135:\n  - id: hub\n    clock_pin: ${clock_pin}\n' +
        '    data_pin: ${data_pin}\n    rgb_current: 10mA\n    cw_current: 60mA\n')],
    ];
    await withWorld({ esphome: { delayMs: 10 } }, async (w) => {
      const results = await Promise.all(edits.map(async ([name, slug, edit]) =>
        [name, await run(w, 'esphome', ['config', generatedConfig(w, slug, name, edit)])] as const));
      for (const [name, r] of results) assert.equal(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
    });
  });

  test('stages as in config.py: unknown IDs only once the schemas pass, pin reuse only once the IDs resolve',
    async () => {
      await withWorld({ esphome: { delayMs: 10 } }, async (w) => {
        const both = (t: string) =>
          replace('    red: output_red', '    red: output_r')(replace('green_pin: "P9"', 'green_pin: "P24"')(t));
        const ids = await run(w, 'esphome', ['config', generatedConfig(w, PWM_BULB, 'ids-first', both)]);
        assert.equal(ids.code, 2);
        assert.match(ids.stdout, /Couldn't find ID 'output_r'/);
        assert.doesNotMatch(ids.stdout, /used in multiple places/);
        const schema = (t: string) => `${both(t)}\nxyz:\n`;
        const first = await run(w, 'esphome', ['config', generatedConfig(w, PWM_BULB, 'schema-first', schema)]);
        assert.match(first.stdout, /Component not found: xyz\./);
        assert.doesNotMatch(first.stdout, /Couldn't find ID/);
      });
    });
});

describe('fake ss', { concurrency: true }, () => {
  test('default world (stock Ubuntu): systemd-resolved on 127.0.0.53%lo:53 and 127.0.0.54:53, UDP and TCP',
    async () => {
    await withWorld({}, async (w) => {
      const rows = (await run(w, 'ss', ['-H', '-lntup'])).stdout.trim().split('\n');
      assert.equal(rows.length, 4);
      assert.match(rows[0], /^udp +UNCONN +0 +0 +127\.0\.0\.54:53 +0\.0\.0\.0:\* +/);
      assert.match(rows[0], / users:\(\("systemd-resolve",pid=612,fd=19\)\)$/);
      assert.match(rows[1], /^udp +UNCONN +0 +0 +127\.0\.0\.53%lo:53 +0\.0\.0\.0:\*/);
      assert.match(rows[2], /^tcp +LISTEN +0 +4096 +127\.0\.0\.53%lo:53 +0\.0\.0\.0:\*/);
      assert.match(rows[3], /^tcp +LISTEN +0 +4096 +127\.0\.0\.54:53 /);
      // what safety_checks.sh runs: one PID per port
      const q = await run(w, 'ss', ['-lnp', '-A', 'udp', 'sport = :53']);
      assert.match(q.stdout, /^State +Recv-Q +Send-Q +Local Address:Port +Peer Address:PortProcess\n/);
      assert.deepEqual([...new Set(q.stdout.match(/pid=\d+/g))], ['pid=612']);
    });
  });

  test('busy ports in ss format with users:((…)); filters; nothing without -l', async () => {
    const busy = [
      { proto: 'tcp' as const, port: 80, process: 'nginx', pid: 1200 },
      { proto: 'udp' as const, port: 53, process: 'dnsmasq', pid: 612 },
    ];
    await withWorld({ ss: { busy } }, async (w) => {
      const r = await run(w, 'ss', ['-H', '-l', '-n', '-t', '-u', '-p']);
      const rows = r.stdout.trim().split('\n');
      assert.equal(rows.length, 2);
      assert.match(rows[0], /^udp +UNCONN +0 +0 +0\.0\.0\.0:53 +0\.0\.0\.0:\* +users:\(\("dnsmasq",pid=612,fd=4\)\)$/);
      assert.match(rows[1], /^tcp +LISTEN +0 +4096 +0\.0\.0\.0:80 +0\.0\.0\.0:\* +/);
      assert.match(rows[1], / users:\(\("nginx",pid=1200,fd=3\)\)$/);
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
