// Shared test plumbing: run flash.ts as a user would (a child process), temp dirs, recipe copies.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DeviceFile, ProfileFile } from '../flash.ts';

export const ROOT = path.resolve(import.meta.dirname, '..');
export const FLASH = path.join(ROOT, 'flash.ts');
/** tsx's loader by URL, so a child started in any directory finds it. */
export const TSX = import.meta.resolve('tsx');

export interface RunResult { code: number; stdout: string; stderr: string }

/** `npx tsx flash.ts ...args` in a child process, colours off, no terminal on stdin. */
export function runFlash(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number;
  /** Someone reading along (a virtual user who acts on what flash.ts tells them). */
  reader?: { read(text: string): void } } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', TSX, FLASH, ...args], {
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
export async function serveDir(dir: string): Promise<{ url: string; requests: string[]; close: () => Promise<void> }> {
  const http = await import('node:http');
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push(rel);
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
