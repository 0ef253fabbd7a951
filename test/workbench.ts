// A whole workbench without hardware: a simulated plug (still on Tuya firmware), fake cloudcutter,
// sudo, nmcli, docker, esphome and ss on PATH, the real cloudcutter API files served on 127.0.0.1,
// and the environment flash.ts reads to find them. The full-flow tests, `npm run demo` and
// `npm run bench` all run flash.ts against this.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freeUdpPort, startSimPlug, type SimPlug, type SimPlugOptions } from './sim/plug.ts';
import { makeFakeWorld, type FakeWorld, type FakeWorldOptions } from './fakes.ts';
import { plainText, SEEN_MS, virtualUser, type Override, type VirtualUser } from './virtual-user.ts';
import { PassThrough } from 'node:stream';
import { io, runCli } from '../flash.ts';
import { CLOUDCUTTER_API_FIXTURES, ROOT, flashArgv, serveDir, tempDir } from './helpers.ts';
import type { Mcu } from './firmware-files.ts';

export const HOME = { ssid: 'HomeNet', password: 'correct horse battery' };

/**
 * What a person does when flash.ts asks them to set the plug's Wi-Fi by hand: once the plug's Kickstart AP is up
 * (a phone cannot join it before), they join it and send the network through its portal.
 */
export async function wifiByHand(sim: SimPlug, network = HOME): Promise<true> {
  await sim.waitForPhase('kickstart-ap', 60_000);
  const res = await fetch(`${sim.url}/wifisave?${new URLSearchParams({ ssid: network.ssid, psk: network.password })}`,
    { redirect: 'manual' });
  assert.ok(res.status < 400, `the plug's portal answered ${res.status}`);
  return true;
}

export interface Bench {
  sim: SimPlug;
  world: FakeWorld;
  user: VirtualUser;
  /** The esphome config dir the run writes (a fresh temp dir). */
  out: string;
  /** What flash.ts needs on top of the recipe: --out, --cloudcutter, --wifi-iface (and --set device_name). */
  args: string[];
  /** The plug's device_name. */
  name: string;
  env: NodeJS.ProcessEnv;
  apiRequests: string[];
  close(): Promise<void>;
}

/**
 * The workbench's time scale: every real-world duration (scans, the Docker build, cloudcutter's sleeps,
 * the plug's AP-mode dance and its 15–30 s reboot into Kickstart) runs at this fraction of real time.
 */
export const BENCH_TIME_SCALE = 0.02;

/**
 * For runs watched only by the virtual user: it sees every change of the simulated hardware as it happens
 * (SimPlug.onHardware), so the pin check holds a pin on for twice what it needs (SEEN_MS), not for a person's
 * eyes; a pin not held long enough is not seen. The bench sets it; terminal.test.ts and the demo keep a person's
 * time.
 */
export const USER_SEES_AT_ONCE = { FLASH_PIN_SHOW_MS: String(2 * SEEN_MS) };

export interface BenchOptions {
  mcu?: Mcu;
  /** Default BENCH_TIME_SCALE; 1 = real time. Given to the sim and to the fakes alike. */
  timeScale?: number;
  sim?: Partial<SimPlugOptions>;
  fakes?: FakeWorldOptions;
  /** Extra environment (timeouts). */
  env?: NodeJS.ProcessEnv;
  out?: string;
  /** Answers the virtual user gives instead of its own (by question id). */
  answers?: Record<string, Override>;
  log?: (line: string) => void;
  /**
   * A device_name of its own (passed as --set): tests run side by side on one loopback mDNS, and a
   * test that looks for "status-plug-01" before it knows the MAC could otherwise find another test's.
   */
  uniqueName?: boolean;
}

export async function startBench(o: BenchOptions = {}): Promise<Bench> {
  const mcu = o.mcu ?? 'bk7231n';
  const timeScale = o.timeScale ?? BENCH_TIME_SCALE;
  const sim = await startSimPlug({
    mcu, phase: 'tuya', homeNetwork: HOME, joinMs: 150, rebootMs: 150, timeScale, ...o.sim,
  });
  const api = await serveDir(CLOUDCUTTER_API_FIXTURES);
  const world = await makeFakeWorld({
    timeScale,
    simUrl: sim.url,
    ...o.fakes,
    cloudcutter: o.fakes?.cloudcutter === false ? false : { ...(o.fakes?.cloudcutter || {}) },
    docker: o.fakes?.docker === false ? false : { daemon: true, ...(o.fakes?.docker || {}) },
    nmcli: o.fakes?.nmcli === false ? false : { ...(o.fakes?.nmcli || {}) },
  });
  const out = o.out ?? path.join(tempDir(), 'esphome');
  const user = virtualUser(sim, { overrides: o.answers, log: o.log });
  const env: NodeJS.ProcessEnv = {
    ...world.env,
    FLASH_WIFI_SSID: HOME.ssid,
    FLASH_WIFI_PASSWORD: HOME.password,
    FLASH_CLOUDCUTTER_API: api.url,
    XDG_CACHE_HOME: path.join(world.dir, 'cache'),
    FLASH_KICKSTART_PORTAL: sim.url,
    FLASH_DEVICE_HTTP_PORT: String(sim.port),
    FLASH_DEVICE_API_PORT: String(sim.apiPort),
    FLASH_MDNS_INTERFACE: '127.0.0.1',
    // The sim's own mDNS network; a plug without mDNS: one where nothing answers.
    FLASH_MDNS_PORT: String(sim.mdnsPort ?? await freeUdpPort()),
    FLASH_DISCOVERY_TIMEOUT_MS: '15000',
    FLASH_VERIFY_TIMEOUT_MS: '15000',
    // The scaled world's waits are fractions of a second: a run stuck in one fails in a minute, saying which,
    // rather than at the test's timeout.
    FLASH_AP_WAIT_MS: '60000',
    FLASH_KICKSTART_AP_TIMEOUT_MS: '30000',
    ...USER_SEES_AT_ONCE,
    ...o.env,
  };
  const name = o.uniqueName ? `plug-${process.pid}-${Math.floor(Math.random() * 1e6)}` : 'status-plug-01';
  return {
    sim, world, user, out, env, name, apiRequests: api.requests,
    args: ['--out', out, '--cloudcutter', world.cloudcutter!, '--wifi-iface', 'wlan1', ...(o.uniqueName ? ['--set', `device_name=${name}`] : [])],
    async close() {
      user.stop();
      await sim.close();
      await api.close();
      await world.cleanup();
    },
  };
}

export interface InProcessRun { code: number; out: string }

/**
 * Runs flash.ts in this process with `env`, capturing everything it prints. With a virtual user, its
 * virtual terminal is plugged in: flash.ts asks through the real prompts and the user types the answers
 * (in-process, so the user can watch the simulated plug's LEDs while it answers).
 */
export async function runInProcess(argv: string[], env: NodeJS.ProcessEnv, user?: VirtualUser,
  echo?: (text: string) => void): Promise<InProcessRun> {
  const saved = { ...io };
  const savedEnv = process.env;
  let out = '';
  const show = (t: string) => { out += t; echo?.(t); user?.read(t); };
  // The prompts draw with cursor movements: a terminal echo gets them as drawn, the captured text without.
  const draw = (t: string) => { out += plainText(t); echo?.(t); };
  // Wide: what a test reads is flash.ts's words, not how an 80-column terminal folds them (that has tests of its own).
  process.env = { NO_COLOR: '1', COLUMNS: '1000', ...env };
  io.out = show;
  io.err = show;
  if (user) {
    io.input = user.input;
    io.screen = (t) => { user.screen(t); draw(t); };
    io.onQuestion = user.onQuestion;
  } else {
    io.input = Object.assign(new PassThrough(), { isTTY: false });
  }
  try {
    const code = await runCli(argv);
    return { code, out };
  } finally {
    process.env = savedEnv;
    Object.assign(io, saved);
  }
}

/** flash.ts as a child in its own process group, so a test can kill it and everything it started. */
export function startChild(args: string[], env: NodeJS.ProcessEnv, reader?: { read(text: string): void }):
  { child: ChildProcess; output: () => string; waitFor: (re: RegExp, ms?: number) => Promise<void>; exited: Promise<number> } {
  const child = spawn(process.execPath, [...flashArgv(), ...args], { cwd: ROOT, env: { COLUMNS: '1000', ...env, NO_COLOR: '1' }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const feed = (d: Buffer) => {
    out += d;
    reader?.read(String(d));
    for (const w of [...waiters]) if (w.re.test(out)) (waiters.splice(waiters.indexOf(w), 1), w.resolve());
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  const exited = new Promise<number>((r) => child.on('close', (code, signal) => r(code ?? (signal === 'SIGKILL' ? 137 : 128))));
  return {
    child,
    output: () => out,
    exited,
    waitFor: (re, ms = 30_000) => new Promise<void>((resolve, reject) => {
      if (re.test(out)) return resolve();
      const timer = setTimeout(() => reject(new Error(`no ${re} in:\n${out}`)), ms);
      waiters.push({ re, resolve: () => (clearTimeout(timer), resolve()) });
    }),
  };
}

/**
 * Runs the config step (what a user has before the later steps) and returns a check that a later
 * failure left secrets.yaml as it was: same bytes, mode 0600.
 */
export async function configured(b: Bench, recipe = 'recipes/23A.yaml'): Promise<() => void> {
  const r = await runInProcess([recipe, ...b.args, '--yes', '--only', 'config'], b.env);
  assert.equal(r.code, 0, r.out);
  const file = path.join(b.out, 'secrets.yaml');
  const secrets = fs.readFileSync(file, 'utf8');
  return () => {
    assert.equal(fs.readFileSync(file, 'utf8'), secrets, 'secrets.yaml is unchanged');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  };
}

/** The plug's journal as flash.ts left it. */
export function journalOf(b: Bench): { steps: Record<string, unknown>; facts: Record<string, string>; started?: { step: string } } {
  return JSON.parse(fs.readFileSync(path.join(b.out, '.flash', `${b.name}.json`), 'utf8'));
}

/**
 * The processes still running in a process group (none, once everything it started has stopped). A `<defunct>`
 * one has exited already: only init's reaping of flash.ts's orphans is left, which can lag here.
 */
export function groupMembers(pgid: number): string[] {
  try {
    return execFileSync('ps', ['-o', 'pid=,args=', '-g', String(pgid)], { encoding: 'utf8' }).split('\n')
      .filter((l) => l.trim() && !l.includes('<defunct>'));
  } catch {
    return []; // ps exits 1 when the group is empty
  }
}

/**
 * Every process of a fake world still running, in whatever session or process group (cloudcutter runs in a
 * terminal of its own): flash.ts and all it starts carry the world's FAKE_WORLD in their environment.
 */
export function worldProcesses(world: FakeWorld): string[] {
  const mark = `\0FAKE_WORLD=${world.env.FAKE_WORLD}\0`;
  const left: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (!`\0${fs.readFileSync(`/proc/${pid}/environ`, 'latin1')}`.includes(mark)) continue;
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue; // exited, not yet reaped
      left.push(`${pid} ${fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0/g, ' ').trim()}`);
    } catch { /* gone meanwhile */ }
  }
  return left;
}
