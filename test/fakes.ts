// Fake outside tools for tests: tuya-cloudcutter.sh (in a fake checkout), sudo, nmcli, docker,
// esphome and ss, as executables on a PATH of their own. Each records {tool, argv, cwd} and answers
// like the real tool (texts and exit codes taken from the tools' sources; see test/fakes/*.mjs).
//
//   const world = await makeFakeWorld({ cloudcutter: { outcome: 'exploit' } });
//   spawn('sudo', ['./tuya-cloudcutter.sh', '-p', slug, '-f', fw], { cwd: world.cloudcutter, env: world.env });
//   world.calls('tuya-cloudcutter.sh');  await world.cleanup();
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { makeUG, kickstartFileName, type Mcu } from './firmware-files.ts';
import { CLOUDCUTTER_MESSAGES, CLOUDCUTTER_LINES, chipMismatchLine, portQuestion } from './fakes/messages.mjs';

export { CLOUDCUTTER_MESSAGES, CLOUDCUTTER_LINES, chipMismatchLine, portQuestion };

export type CloudcutterOutcome = 'success' | 'exploit' | 'chip' | 'ap' | 'docker' | 'adapter' | 'ota' | 'no-ap';

export interface FakeCall { tool: string; argv: string[]; cwd: string }

/** A Wi-Fi adapter NetworkManager manages. */
export interface WifiAdapter {
  iface: string;
  /** `WIFI-PROPERTIES.AP` (default true). */
  apMode?: boolean;
  /** A saved network (in `nmcli.networks`) it is connected to at the start, and autoconnects to. */
  connectedTo?: string;
  hwaddr?: string;
}

/** A network always on the air (what `nmcli device wifi list` shows once scanned). */
export interface StaticNetwork {
  ssid: string; security?: string; signal?: number; bssid?: string; gateway?: string; address?: string;
}

/** A listening socket `ss` shows (and cloudcutter's safety check finds). */
export interface Listener {
  proto: 'tcp' | 'udp';
  port: number;
  process: string;
  pid: number;
  /** Local address as ss prints it (default 0.0.0.0), e.g. 127.0.0.53%lo. */
  addr?: string;
  fd?: number;
  /** The systemd unit running it (`ps -o unit=`): answering y stops the unit instead of killing the PID. */
  unit?: string;
}

/**
 * systemd-resolved on a stock Ubuntu (systemd ≥ 251, resolved-dns-stub.c): the stub on 127.0.0.53 bound
 * to lo, the proxy stub on 127.0.0.54, UDP and TCP each; `ps -o comm=` shows 15 characters.
 */
const resolved = { process: 'systemd-resolve', pid: 612, unit: 'systemd-resolved.service' };
export const UBUNTU_RESOLVED: readonly Listener[] = Object.freeze([
  { proto: 'udp', port: 53, addr: '127.0.0.54', fd: 19, ...resolved },
  { proto: 'udp', port: 53, addr: '127.0.0.53%lo', fd: 17, ...resolved },
  { proto: 'tcp', port: 53, addr: '127.0.0.53%lo', fd: 18, ...resolved },
  { proto: 'tcp', port: 53, addr: '127.0.0.54', fd: 20, ...resolved },
] satisfies Listener[]);

export interface FakeWorldOptions {
  /**
   * Every real-world duration the fakes wait is `real_ms * timeScale` (default 1: real time): scans,
   * joins, Docker builds and runs, cloudcutter's sleeps and its waits for the plug. Give the sim the same.
   */
  timeScale?: number;
  /**
   * The simulated plug (test/sim) this world's radio waves reach: nmcli's scans see its APs
   * (GET /_sim/state), cloudcutter drives it through the exploit and the flash. Without it the fake
   * cloudcutter plays a plug whose AP is always there, and nmcli sees only `nmcli.networks`.
   */
  simUrl?: string;
  /** false = no checkout. */
  cloudcutter?: false | {
    /**
     * default 'success'. Failures print the real texts in their real place and exit 1:
     * 'exploit' (second AP still the stock one), 'chip' (firmware vs profile chip; also happens by
     * itself when they differ), 'ap' (AP found, 5 failed connects), 'docker' (image build fails;
     * also happens by itself with `docker: false`), 'adapter' (no wifi adapter auto-detected; also
     * by itself without -w when nmcli lists no wifi device), 'ota' (update_firmware container fails).
     * 'no-ap' (extension): the stock AP never shows up; like the real script it scans forever
     * (prints a dot per scan) until killed.
     */
    outcome?: CloudcutterOutcome;
    /** Files in custom-firmware/; default: Kickstart v25.05.28 UGs for both chips, real names. */
    firmware?: { name: string; data: Buffer }[];
    /** Same as the world's simUrl (kept for older tests). */
    simUrl?: string;
    /**
     * Instead of timeScale: a successful run takes delayMs in all (at least). Scans and the plug's own
     * times (its AP-mode dance) still follow timeScale; cloudcutter's own steps (build, containers, sleeps,
     * the plug's download) share out the rest, shrinking when those ran long.
     */
    delayMs?: number;
    /** MAC printed at the end when there is no sim (default d8:1f:12:3a:4b:5c); with a sim: its tuyaMac. */
    mac?: string;
    /** Without a sim: the stock AP's SSID (default SmartLife-1A2B); the exploited one is "A-" + its last 4. */
    apSsid?: string;
    /** Lines printed inside `docker run -ti` end in \r\n like the real ones (default true). */
    crlf?: boolean;
    /** Fail like `docker run -ti` does when stdin is not a terminal (default true, as the real one). */
    requireTty?: boolean;
    /** The cloudcutter Docker image is already built (default true: a cached build, a few seconds; false: ~63 s). */
    imageBuilt?: boolean;
    /** After "send complete" some progress, then nothing: never exits until a signal (upstream #816). */
    hangAfterSend?: boolean;
    /**
     * A question flash.ts does not know (a newer cloudcutter's, or one the real script asks for another chip, like
     * "Press any key to confirm you have completed power cycling the device and continue."), asked after the port
     * checks the way the script asks its own (`read -p TEXT -n 1 -r`: the prompt shown only on a terminal, one key
     * read). Every answer the script gets is kept in the world's state (`answers`, in order).
     */
    question?: string;
  };
  nmcli?: false | {
    /** Wi-Fi adapters (default: one, `wifiIface` with `apMode`). */
    wifi?: WifiAdapter[];
    wifiIface?: string; // one-adapter shorthand: default 'wlan1'; '' = no wifi adapter at all
    apMode?: boolean; // default true
    connectFails?: boolean; // `device wifi connect` always: "Error: No network with SSID '…' found.", exit 10
    ethIface?: string; // default 'eth0' (connected, "Wired connection 1")
    /** Networks always on the air (default HomeNet, WPA2). The plug's APs come from the sim. */
    networks?: StaticNetwork[];
  };
  docker?: false | {
    daemon?: boolean; // default false
    image?: boolean; // ghcr.io/esphome/esphome:latest already pulled (default true)
  };
  /**
   * false = not installed. delayMs: how long a compile prints (default 100 ms); fail: a compile error
   * (exit 1); familyOverride: the UF2's family ID; version: `esphome version` (default 2025.5.0).
   * Invalid configs fail like ESPHome (exit 2): missing secret, unknown board, bad/reused pin, bad restore_mode.
   */
  esphome?: false | { delayMs?: number; fail?: boolean; familyOverride?: number; version?: string };
  /** Listening sockets; default UBUNTU_RESOLVED (a stock Ubuntu: systemd-resolved on port 53). */
  ss?: { busy?: readonly Listener[] };
  /**
   * What cloudcutter's safety_checks.sh finds besides ports (defaults: a stock Ubuntu): apparmor
   * (aa-enabled says Yes: it asks to stop AppArmor; default true), ufw ('inactive' default, 'active'
   * is disabled without asking, false = not installed), firewalld running (stopped without asking;
   * default false), /etc/modprobe.d/blacklist-rtl8192cu.conf present (asks to remove it; default false).
   */
  host?: { apparmor?: boolean; ufw?: 'active' | 'inactive' | false; firewalld?: boolean; blacklistRtl8192cu?: boolean };
  /** default true: a sudo that records and runs the rest of its argv. needsPassword: `sudo -n` fails. */
  sudo?: boolean | { needsPassword?: boolean };
}

export interface FakeWorld {
  /** Temp dir holding everything (removed by cleanup). */
  dir: string;
  /** Dir with the fake executables. */
  bin: string;
  /** Path of the fake checkout. */
  cloudcutter?: string;
  /** process.env with PATH = bin + the dirs holding node, bash, coreutils, script; FAKE_LOG, FAKE_WORLD set. */
  env: NodeJS.ProcessEnv;
  /** Calls read from the log, in order (optionally of one tool). */
  calls(tool?: string): FakeCall[];
  cleanup(): Promise<void>;
}

const FAKES = path.join(import.meta.dirname, 'fakes');
const TOOLS = path.join(FAKES, 'tools.mjs');

function sh(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function nodeWrapper(tool: string, serve?: { port: number; which: string }): string {
  // $0 as the caller typed it: bash's `exec ./x` (the fake sudo) would make it absolute
  const bash = (serve && which('bash')) || '/usr/bin/env bash'; // served: no `env` exec in the way
  const head = `#!${bash}\nexport FAKE_ARG0="\${FAKE_EXEC_ARG0:-$0}"\nunset FAKE_EXEC_ARG0\n`;
  const run = `exec ${sh(process.execPath)} ${sh(TOOLS)} ${sh(tool)} "$@"\n`;
  if (!serve) return head + run;
  // The calls `which` picks are answered by this test process's fake-tool server (fakes/server.mjs has the
  // protocol); the rest, and any call when the server is gone, run as a node process.
  return `${head}${serve.which}
if [ -n "$served" ] && { exec 3<>/dev/tcp/127.0.0.1/${serve.port}; } 2>/dev/null; then
  printf '%s\\0' ${sh(tool)} "$PWD" "$FAKE_WORLD" "$FAKE_LOG" "$#" "$@" >&3
  read -r code errlen <&3 || { echo "fake ${tool}: the fake-tool server did not answer" >&2; exit 70; }
  [ "$errlen" = 0 ] || head -c "$errlen" <&3 >&2
  cat <&3
  exit "$code"
fi
${run}`;
}

/** Which calls of each tool the fake-tool server answers: by their command word (the first argument not an option). */
const SERVED: Record<string, string> = {
  nmcli: 'served=1',
  ss: 'served=1',
  docker: `word= skip=
for a in "$@"; do
  if [ -n "$skip" ]; then skip=; continue; fi
  case "$a" in
    -v|--version) word=--version; break ;;
    -H|--host|--context|-c|-l|--log-level|--config) skip=1 ;;
    -*) ;;
    *) word=$a; break ;;
  esac
done
case "$word" in --version|info|version|images|image|ps|system) served=1 ;; esac`,
  esphome: `word= skip=0
for a in "$@"; do
  if [ "$skip" -gt 0 ]; then skip=$((skip - 1)); continue; fi
  case "$a" in
    --version) word=--version; break ;;
    -s|--substitution) skip=2 ;;
    -*) ;;
    *) word=$a; break ;;
  esac
done
case "$word" in --version|version|config) served=1 ;; esac`,
};

let toolServer: Promise<number> | undefined;

/** The port of this process's fake-tool server (a worker thread), started on first use. */
function toolServerPort(): Promise<number> {
  return toolServer ??= new Promise((resolve, reject) => {
    // Plain JavaScript: the worker needs no tsx.
    const worker = new Worker(path.join(FAKES, 'server.mjs'), { execArgv: [] });
    // Once it listens it does not keep the test process alive: a call always comes from a child this process awaits.
    worker.once('message', (port: number) => (worker.unref(), resolve(port)));
    worker.once('error', reject);
  });
}

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch { /* next */ }
  }
  return undefined;
}

/**
 * The system dirs the world's PATH keeps (node, bash, coreutils, script). A dir that holds the real
 * version of a tool this world has switched off (e.g. a real sudo in /usr/bin with `sudo: false`) is
 * replaced by a dir of symlinks to everything else in it, so the tool is really missing.
 */
function systemPath(dir: string, missing: string[]): string[] {
  const dirs: string[] = [];
  for (const d of [path.dirname(process.execPath), ...['bash', 'ls', 'cat', 'env', 'script'].map((c) => which(c)).filter(Boolean).map((p) => path.dirname(p!))])
    if (!dirs.includes(d)) dirs.push(d);
  return dirs.map((d, n) => {
    if (!missing.some((m) => fs.existsSync(path.join(d, m)))) return d;
    const copy = path.join(dir, `sys${n}`);
    fs.mkdirSync(copy);
    for (const e of fs.readdirSync(d)) if (!missing.includes(e)) fs.symlinkSync(path.join(d, e), path.join(copy, e));
    return copy;
  });
}

const CHECKOUT_STUBS: Record<string, string> = {
  'common.sh': '#!/usr/bin/env bash\n# fake checkout: the logic lives in test/fakes/cloudcutter.mjs\n',
  'common_run.sh': '#!/usr/bin/env bash\n# fake checkout\n',
  'safety_checks.sh': '#!/bin/bash\n# fake checkout\n',
  Dockerfile: 'FROM python:3.9.18-slim-bullseye AS base\n',
  'README.md': '# tuya-cloudcutter (fake checkout for tests)\n',
  'src/get_input.py': '# fake checkout: write-profile / validate-firmware-file are simulated by tuya-cloudcutter.sh\n',
  'src/setup_apmode.sh': '#!/usr/bin/env bash\n',
  'src/Pipfile': '[packages]\nclick = "==8.1.7"\nltchiptool = ">=4.9.2"\n',
  'src/cloudcutter/__init__.py': '',
  'src/cloudcutter/__main__.py': '# fake checkout\n',
  'custom-firmware/README.md': '# Custom Firmware\n',
  'device-profiles/README.md': '# Profiles moved\n',
  'device-profiles/schema/tuya.device.dynamic.config.get.json': '{"result": {"validTime": 1800, "time": 0, "config": {}}, "success": true, "t": 0}\n',
  'configured-devices/.gitignore': '*\n!.gitignore\n',
  'logs/.gitkeep': '',
  'scripts/README.md': '# Helper scripts\n',
};

export async function makeFakeWorld(opts: FakeWorldOptions = {}): Promise<FakeWorld> {
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'flash-fakes-'));
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const log = path.join(dir, 'calls.jsonl');
  fs.writeFileSync(log, '');

  const cc = opts.cloudcutter === false ? null
    : { outcome: 'success' as CloudcutterOutcome, requireTty: true, imageBuilt: true, ...(opts.cloudcutter ?? {}) };
  const nmOpts = opts.nmcli === false ? null
    : { wifiIface: 'wlan1', apMode: true, connectFails: false, ethIface: 'eth0', ...(opts.nmcli ?? {}) };
  const docker = opts.docker === false ? null : { daemon: false, image: true, ...(opts.docker ?? {}) };
  const esphome = opts.esphome === false ? null : { delayMs: 100, fail: false, ...(opts.esphome ?? {}) };
  const sudo = opts.sudo === false ? null : typeof opts.sudo === 'object' ? opts.sudo : {};
  const timeScale = opts.timeScale ?? 1;
  const simUrl = opts.simUrl ?? (opts.cloudcutter ? opts.cloudcutter.simUrl : undefined);

  let checkout: string | undefined;
  if (cc) {
    checkout = path.join(dir, 'tuya-cloudcutter');
    for (const [rel, text] of Object.entries(CHECKOUT_STUBS)) {
      fs.mkdirSync(path.dirname(path.join(checkout, rel)), { recursive: true });
      fs.writeFileSync(path.join(checkout, rel), text);
    }
    const firmware = cc.firmware ?? (['bk7231n', 'bk7231t'] as Mcu[]).map((chip) => ({ name: kickstartFileName(chip), data: makeUG({ chip }) }));
    for (const f of firmware) fs.writeFileSync(path.join(checkout, 'custom-firmware', f.name), f.data);
    fs.writeFileSync(path.join(checkout, 'tuya-cloudcutter.sh'), nodeWrapper('tuya-cloudcutter.sh'), { mode: 0o755 });
  }

  const adapters: (WifiAdapter & { apMode: boolean; hwaddr: string })[] = !nmOpts ? [] :
    (nmOpts.wifi ?? (nmOpts.wifiIface ? [{ iface: nmOpts.wifiIface, apMode: nmOpts.apMode }] : []))
      .map((a, n) => ({
        ...a, apMode: a.apMode !== false,
        hwaddr: a.hwaddr ?? (n === 0 ? '00:C0:CA:B1:7E:42' : `F8:5E:A0:12:34:${56 + n}`),
      }));
  const networks: StaticNetwork[] = nmOpts?.networks ?? [
    { ssid: 'HomeNet', security: 'WPA2', signal: 82, bssid: '3C:84:6A:11:22:33', gateway: '192.168.1.1',
      address: '192.168.1.57/24' },
  ];
  const nm = nmOpts && { ...nmOpts, wifi: adapters, networks };
  const settings = {
    dir,
    checkout,
    timeScale,
    simUrl,
    cloudcutter: cc && { ...cc, firmware: undefined, simUrl: undefined },
    nmcli: nm,
    docker,
    esphome,
    ss: { busy: opts.ss?.busy ?? UBUNTU_RESOLVED },
    host: { apparmor: true, ufw: 'inactive', firewalld: false, blacklistRtl8192cu: false, ...(opts.host ?? {}) },
    sudo,
  };
  const worldFile = path.join(dir, 'world.json');
  fs.writeFileSync(worldFile, JSON.stringify(settings, null, 2));

  // NetworkManager has been up for a while: each adapter has scanned (and the connected ones joined)
  const now = Date.now();
  const since = now - 600_000 * timeScale;
  const connections: Record<string, unknown>[] = !nm ? []
    : [{ name: 'Wired connection 1', uuid: 'b2f0c8a4-5b1e-3c9d-9f5e-0a1b2c3d4e5f', type: 'ethernet',
      device: nm.ethIface }];
  const devices: Record<string, unknown> = {};
  for (const a of adapters) {
    const net = a.connectedTo ? networks.find((n) => n.ssid === a.connectedTo) : undefined;
    if (a.connectedTo && !net) throw new Error(`fake world: ${a.iface}'s ${a.connectedTo} is not in nmcli.networks`);
    if (net) {
      connections.push({ name: net.ssid, uuid: crypto.randomUUID(), type: 'wifi', device: a.iface, ssid: net.ssid,
        gateway: net.gateway, address: net.address });
    }
    devices[a.iface] = {
      managed: true, active: net?.ssid ?? null, activeSsid: net?.ssid ?? null, availableAt: since, clearedAt: since,
      periodic: [{ from: since, to: net ? since + 20_000 * timeScale : null }], scans: [],
      ...(net ? { autoconnect: net.ssid } : {}),
    };
  }
  fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({
    connections,
    active: nm ? { [nm.ethIface]: 'Wired connection 1' } : {},
    nm: { radio: true, devices },
    air: [],
    busy: settings.ss.busy,
    stopped: [],
    images: [...(docker?.image ? ['ghcr.io/esphome/esphome:latest'] : []),
      ...(cc?.imageBuilt ? ['cloudcutter:latest'] : [])],
    containers: {},
  }, null, 2));

  const port = await toolServerPort();
  const served = (tool: string) => nodeWrapper(tool, { port, which: SERVED[tool] });
  if (nm) fs.writeFileSync(path.join(bin, 'nmcli'), served('nmcli'), { mode: 0o755 });
  if (docker) fs.writeFileSync(path.join(bin, 'docker'), served('docker'), { mode: 0o755 });
  if (esphome) fs.writeFileSync(path.join(bin, 'esphome'), served('esphome'), { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'ss'), served('ss'), { mode: 0o755 });
  if (sudo) {
    fs.copyFileSync(path.join(FAKES, 'sudo.sh'), path.join(bin, 'sudo'));
    fs.chmodSync(path.join(bin, 'sudo'), 0o755);
  }

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: [bin, ...systemPath(dir, [...(sudo ? [] : ['sudo']), ...(nm ? [] : ['nmcli']), ...(docker ? [] : ['docker']), ...(esphome ? [] : ['esphome'])])].join(path.delimiter),
    FAKE_LOG: log,
    FAKE_WORLD: worldFile,
  };
  delete env.FAKE_SUDO_PASSWORD;
  if (sudo && sudo.needsPassword) env.FAKE_SUDO_PASSWORD = '1';

  return {
    dir,
    bin,
    cloudcutter: checkout,
    env,
    calls(tool?: string): FakeCall[] {
      const lines = fs.readFileSync(log, 'utf8').split('\n').filter(Boolean);
      const all = lines.map((l) => JSON.parse(l) as FakeCall);
      return tool ? all.filter((c) => c.tool === tool) : all;
    },
    async cleanup() {
      await fs.promises.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Device + profile JSON as flash.ts (or a real API download) leaves them in device-profiles/SLUG/. */
export function writeCloudcutterProfile(checkout: string, slug: string, device: unknown, profile: unknown): string {
  const d = path.join(checkout, 'device-profiles', slug);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'device.json'), JSON.stringify(device, null, '\t'));
  fs.writeFileSync(path.join(d, 'profile.json'), JSON.stringify(profile, null, '\t'));
  return d;
}
