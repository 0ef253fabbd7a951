// Plumbing shared by the fake tools: the world's settings, its mutable state, the call log, stdin, and what a call
// answered by the fake-tool server (server.mjs) has instead of a process of its own.
import { AsyncLocalStorage } from 'node:async_hooks';
import fs from 'node:fs';
import path from 'node:path';

/**
 * The call the fake-tool server is answering, if any: { env, cwd, out(text), err(text), exit(code) }. A tool reads
 * its environment and directory and writes its output through env(), cwd(), out(), err() and exit(): the process's
 * own when it runs as a process, the call's when served.
 */
export const served = new AsyncLocalStorage();

export function env() {
  return served.getStore()?.env ?? process.env;
}

export function cwd() {
  return served.getStore()?.cwd ?? process.cwd();
}

/** The resolved FakeWorldOptions, written by makeFakeWorld (FAKE_WORLD points at it). */
export function world() {
  const file = env().FAKE_WORLD;
  if (!file) {
    err('fake tool: FAKE_WORLD is not set (run it with world.env)\n');
    if (served.getStore()) throw new Error('FAKE_WORLD is not set');
    process.exit(99);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** Appends {tool, argv, cwd} as one JSON line to $FAKE_LOG (one write: atomic for short lines). */
export function logCall(tool, argv) {
  const log = env().FAKE_LOG;
  if (!log) return;
  fs.appendFileSync(log, JSON.stringify({ tool, argv, cwd: cwd() }) + '\n');
}

function statePath(w) {
  return path.join(w.dir, 'state.json');
}

/** The world's mutable state (NetworkManager connections, visible networks, containers, images). */
export function readState(w) {
  try {
    return JSON.parse(fs.readFileSync(statePath(w), 'utf8'));
  } catch {
    return {};
  }
}

const LOCK_WAIT = new Int32Array(new SharedArrayBuffer(4));

/** Holds `${state}.lock` (a directory: mkdir is atomic) while fn runs; a lock older than 5 s is stale. */
function withLock(w, fn) {
  const lock = `${statePath(w)}.lock`;
  for (let tries = 0; ; tries++) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      try {
        if (Date.now() - fs.statSync(lock).mtimeMs > 5000) fs.rmSync(lock, { recursive: true, force: true });
      } catch { /* gone meanwhile */ }
      Atomics.wait(LOCK_WAIT, 0, 0, Math.min(20, 1 + tries));
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/**
 * Read-modify-write of the state under a lock shared by every fake process (nmcli, cloudcutter,
 * docker run concurrently), written atomically (rename).
 */
export function updateState(w, fn) {
  return withLock(w, () => {
    const s = readState(w);
    fn(s);
    const tmp = `${statePath(w)}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(s, null, 2));
    fs.renameSync(tmp, statePath(w));
    return s;
  });
}

/** The world's time scale: every real-world duration a fake waits is `real_ms * timeScale`. */
export function timeScale(w) {
  return typeof w.timeScale === 'number' && w.timeScale > 0 ? w.timeScale : 1;
}

/** A real-world duration (ms) in this world's time. */
export function scaled(w, realMs) {
  return realMs * timeScale(w);
}

/**
 * GET `${simUrl}/_sim/state` of the world's simulated plug, or null (no sim, or it refuses). No time limit: a sim in
 * a busy test process answers late, not never (a 2 s limit failed two suites running side by side).
 */
export async function simState(w) {
  if (!w.simUrl) return null;
  try {
    const r = await fetch(`${w.simUrl.replace(/\/$/, '')}/_sim/state`);
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

/** POST to the sim's control API; resolves to the JSON answer, or throws. */
export async function simPost(w, what, body = {}) {
  const r = await fetch(`${w.simUrl.replace(/\/$/, '')}/_sim/${what}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`POST /_sim/${what}: HTTP ${r.status} ${text.slice(0, 200)}`);
  try {
    return JSON.parse(text);
  } catch {
    return {};
  }
}

/** Waits at least `ms` by the clock (Node's timers may fire a millisecond early). */
export const sleep = (ms) => new Promise((r) => {
  const due = Date.now() + ms;
  const wait = () => (Date.now() >= due ? r() : setTimeout(wait, due - Date.now()));
  setTimeout(wait, Math.max(0, ms));
});

export function out(text) {
  const call = served.getStore();
  if (call) call.out(text);
  else process.stdout.write(text);
}
export function err(text) {
  const call = served.getStore();
  if (call) call.err(text);
  else process.stderr.write(text);
}

/**
 * Waits until stdout and stderr are flushed, then exits (process.exit can drop piped output). A served call ends
 * with its answer, and as with process.exit nothing awaiting this goes on.
 */
export async function exit(code) {
  const call = served.getStore();
  if (call) {
    call.exit(code);
    return new Promise(() => {});
  }
  await Promise.all([
    new Promise((r) => (process.stdout.writableLength ? process.stdout.write('', r) : r())),
    new Promise((r) => (process.stderr.writableLength ? process.stderr.write('', r) : r())),
  ]);
  process.exit(code);
}

/** Dies by the given signal, as a process without a handler for it would (code null, signal set). */
export function dieBy(signal) {
  process.removeAllListeners(signal);
  process.kill(process.pid, signal);
  // in case the signal is blocked or ignored
  setTimeout(() => process.exit(signal === 'SIGINT' ? 130 : 143), 200);
}

// ---- stdin: bytes on demand, like bash's `read -n 1` / `read` ------------------------------------

let stdinBuf = Buffer.alloc(0);
let stdinEnded = false;
let stdinWaiters = [];
let stdinStarted = false;

function startStdin() {
  if (stdinStarted) return;
  stdinStarted = true;
  process.stdin.on('data', (d) => {
    stdinBuf = Buffer.concat([stdinBuf, d]);
    flushWaiters();
  });
  process.stdin.on('end', () => {
    stdinEnded = true;
    flushWaiters();
  });
  process.stdin.on('error', () => {
    stdinEnded = true;
    flushWaiters();
  });
}

function flushWaiters() {
  const w = stdinWaiters;
  stdinWaiters = [];
  for (const f of w) f();
}

/**
 * Reads one byte (a key on a terminal: raw mode, no Enter needed) or, with `line`, up to a newline.
 * Resolves '' at end of input. Ctrl+C typed on a raw terminal arrives as \x03: treated as SIGINT.
 */
export async function readInput({ line = false } = {}) {
  const tty = process.stdin.isTTY;
  if (tty && !line) process.stdin.setRawMode(true);
  startStdin();
  process.stdin.resume();
  try {
    for (;;) {
      if (line) {
        const nl = stdinBuf.indexOf(10);
        if (nl >= 0) {
          const s = stdinBuf.subarray(0, nl).toString('utf8');
          stdinBuf = stdinBuf.subarray(nl + 1);
          return s;
        }
      } else if (stdinBuf.length > 0) {
        const c = stdinBuf.subarray(0, 1).toString('latin1');
        stdinBuf = stdinBuf.subarray(1);
        if (c === '\x03') {
          // as bash's `read` on a terminal: ^C is SIGINT, which ends the script there (its traps run), no answer
          process.kill(process.pid, 'SIGINT');
          await new Promise(() => {});
        }
        return c;
      }
      if (stdinEnded) {
        const s = stdinBuf.toString('utf8');
        stdinBuf = Buffer.alloc(0);
        return s;
      }
      await new Promise((r) => stdinWaiters.push(r));
    }
  } finally {
    if (tty && !line) process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}

/** A random version-4 UUID (as NetworkManager prints them). */
export function uuid() {
  const h = [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

// ---- firmware files: the same bytes test/firmware-files.ts makes (a test checks they agree) --------

export const FAMILY_ID = { bk7231t: 0x675a40b0, bk7231n: 0x7b3ef230 };

export function makeUF2({ familyId, payload = Buffer.alloc(0), minBlocks = 1 }) {
  const blocks = Math.max(minBlocks, Math.ceil(payload.length / 256));
  const outb = Buffer.alloc(blocks * 512);
  for (let i = 0; i < blocks; i++) {
    const b = outb.subarray(i * 512, (i + 1) * 512);
    b.writeUInt32LE(0x0a324655, 0);
    b.writeUInt32LE(0x9e5d5157, 4);
    b.writeUInt32LE(0x2000, 8);
    b.writeUInt32LE(0x11000 + i * 256, 12);
    b.writeUInt32LE(256, 16);
    b.writeUInt32LE(i, 20);
    b.writeUInt32LE(blocks, 24);
    b.writeUInt32LE(familyId >>> 0, 28);
    if (i * 256 < payload.length) payload.copy(b, 32, i * 256, Math.min(payload.length, (i + 1) * 256));
    b.writeUInt32LE(0x0ab16f30, 508);
  }
  return outb;
}

function byteSum(buf) {
  let s = 0;
  for (const b of buf) s = (s + b) >>> 0;
  return s;
}

/** A Tuya UG wrapper around `body` (what cloudcutter's extract_uf2 writes, get_input.py:278-287). */
export function wrapUG(body, version = '1.0.0') {
  const header = Buffer.alloc(32);
  header.writeUInt32BE(0x55aa55aa, 0);
  header.write(version, 4, 12, 'latin1');
  header.writeUInt32BE(body.length, 16);
  header.writeUInt32BE(byteSum(body), 20);
  header.writeUInt32BE(byteSum(header.subarray(0, 24)), 24);
  header.writeUInt32BE(0xaa55aa55, 28);
  return Buffer.concat([header, body]);
}
