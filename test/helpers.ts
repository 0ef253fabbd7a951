// Shared test plumbing: run flash.ts as a user would (a child process), temp dirs, recipe copies.
import { execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DeviceFile, ProfileFile } from '../flash.ts';

export const ROOT = path.resolve(import.meta.dirname, '..');
export const FLASH = path.join(ROOT, 'flash.ts');
/** tsx's loader by URL, so a child started in any directory finds it. */
export const TSX = import.meta.resolve('tsx');

/**
 * flash.ts as JavaScript, for the many flash.ts children of the tests: each then starts without tsx's loader (half a
 * second of CPU less per child). The same transform tsx makes (esbuild, tsx's own), once per content of flash.ts: it
 * is named by its hash and written whole (a rename), so test files and suites running at once share it. It sits
 * beside flash.ts, which finds recipes/ and package.json from where it is. Never committed (.gitignore); users run
 * flash.ts, and so do terminal.test.ts, the runnable-from-anywhere test and runs with `viaTsx`.
 */
let built: string | undefined; // built when a test first starts a flash.ts child, not by every file that imports this

function builtFlash(): string {
  return (built ??= buildFlash());
}

function buildFlash(): string {
  const source = fs.readFileSync(FLASH, 'utf8');
  const hash = crypto.createHash('sha256').update(source).digest('hex').slice(0, 16);
  const file = path.join(ROOT, `.flash-${hash}.mjs`);
  if (fs.existsSync(file)) return file;
  const esbuild = createRequire(fileURLToPath(TSX))('esbuild') as typeof import('esbuild');
  const { code } = esbuild.transformSync(source, { loader: 'ts', format: 'esm', target: `node${process.versions.node}`,
    sourcefile: FLASH });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, code);
  fs.renameSync(tmp, file);
  // Builds of older flash.ts contents, left by earlier runs (an hour is longer than any suite).
  for (const f of fs.readdirSync(ROOT)) {
    const old = path.join(ROOT, f);
    if (/^\.flash-[0-9a-f]{16}\.mjs$/.test(f) && old !== file && Date.now() - fs.statSync(old).mtimeMs > 3_600_000)
      fs.rmSync(old, { force: true });
  }
  return file;
}

/** How a test starts flash.ts in a child: its build (builtFlash), or as a user does, through tsx (`viaTsx`). */
export function flashArgv(viaTsx = false): string[] {
  return viaTsx ? ['--import', TSX, FLASH] : [builtFlash()];
}

export interface RunResult { code: number; stdout: string; stderr: string }

/** flash.ts in a child process, colours off, no terminal on stdin (its build unless `viaTsx`: see builtFlash). */
export function runFlash(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number;
  /** Someone reading along (a virtual user who acts on what flash.ts tells them). */
  reader?: { read(text: string): void }; viaTsx?: boolean } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...flashArgv(opts.viaTsx), ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '', COLUMNS: '1000', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 60_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d, opts.reader?.read(String(d))));
    child.stderr.on('data', (d) => (stderr += d, opts.reader?.read(String(d))));
    child.stdin.end(opts.input ?? '');
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr }));
  });
}

export function tempDir(prefix = 'flash-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A copy of recipes/ in a temp dir, so a test can break a recipe without touching the real ones. */
export function copyRecipes(): string {
  const dir = tempDir('flash-recipes-');
  for (const f of fs.readdirSync(path.join(ROOT, 'recipes'))) fs.copyFileSync(path.join(ROOT, 'recipes', f), path.join(dir, f));
  return dir;
}

/** Every file (not folder) under dir, relative, sorted (to assert "nothing was written"). */
export function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).map(String).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

export const WIFI_ENV = { FLASH_WIFI_SSID: 'HomeNet', FLASH_WIFI_PASSWORD: 'correct horse battery' };

export { execFile };

/** Serves a folder over HTTP on 127.0.0.1 (the cloudcutter API fixtures), recording request paths. */
export async function serveDir(dir: string, o: { drop?: number } = {}):
  Promise<{ url: string; requests: string[]; close: () => Promise<void> }> {
  const http = await import('node:http');
  const requests: string[] = [];
  let drop = o.drop ?? 0;
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push(rel);
    // The first `drop` requests get their connection closed unanswered, as a server ending a kept-alive one.
    if (drop > 0 && drop--) return void req.socket.destroy();
    const file = path.join(dir, path.normalize(rel));
    if (!file.startsWith(dir) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('404: Not Found');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(fs.readFileSync(file));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** A copy of cloudcutter's public profile API (test/fixtures/README.md says which files and why). */
export const CLOUDCUTTER_API_FIXTURES = path.join(ROOT, 'test', 'fixtures', 'cloudcutter-api');

/** Every cloudcutter device file in test/fixtures, by slug. */
export function fixtureDevices(): DeviceFile[] {
  const dir = path.join(CLOUDCUTTER_API_FIXTURES, 'devices');
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as DeviceFile);
}

/** A fixture device's first profile: the one `flash.ts recipe --yes` takes. */
export function fixtureProfile(d: DeviceFile): ProfileFile {
  return JSON.parse(fs.readFileSync(path.join(CLOUDCUTTER_API_FIXTURES, 'profiles', `${d.profiles[0].slug}.json`),
    'utf8')) as ProfileFile;
}

/** An argv as one shell command line, each word single-quoted (for `script -c` and `bash -c`). */
export function shellWords(argv: string[]): string {
  return argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
}
