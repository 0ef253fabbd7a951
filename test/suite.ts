// `npm test`: every test/*.test.ts (or the files named) under node's test runner, a few files at a time, the longest
// first by the last run's times, so the run does not end waiting on a long file started last. What the run took is
// kept in .test-times.json (beside package.json, never committed): its wall time, the CPU time of every process it
// waited for, the machine's load, and each file's time. The next run orders its files by them; `npm run bench`
// reports the suite's time from there.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '..');
const TEST_TIMES = path.join(ROOT, '.test-times.json');
/** Files run at once: most of a file's time is waiting on the simulated world, so more than the 2 cores. */
const CONCURRENCY = 4;

/** .test-times.json (test/benchmark.ts reads it too). */
export interface TestTimes {
  /** The last run of every file (not just some): when it ended, and what it took. */
  suite?: { at: string; wallMs: number; cpuMs: number; passed: boolean; files: number; concurrency: number;
    cores: number; load: [number, number] };
  /** Each file's time in its last run (the sum of its top-level tests). */
  files: Record<string, number>;
}

function readTestTimes(): TestTimes {
  try {
    return JSON.parse(fs.readFileSync(TEST_TIMES, 'utf8')) as TestTimes;
  } catch {
    return { files: {} };
  }
}

/** CPU time of this process's waited-for descendants so far (Linux: /proc/self/stat cutime + cstime, in 1/100 s). */
function childrenCpuMs(): number {
  try {
    const fields = fs.readFileSync('/proc/self/stat', 'utf8').replace(/^.*\) /, '').split(' ');
    return (Number(fields[13]) + Number(fields[14])) * 10;
  } catch {
    return NaN;
  }
}

{
  const named = process.argv.slice(2);
  const all = fs.readdirSync(path.join(ROOT, 'test')).filter((f) => f.endsWith('.test.ts')).sort()
    .map((f) => `test/${f}`);
  const last = readTestTimes();
  // A file with no time yet (new, or the first run here) goes first: it may be a long one.
  const files = (named.length ? named : all).sort((a, b) =>
    (last.files[b] ?? Infinity) - (last.files[a] ?? Infinity) || a.localeCompare(b));
  const fileTimes = path.join(os.tmpdir(), `flash-test-times-${process.pid}.json`);
  const start = Date.now();
  const load = os.loadavg()[0];
  const runner = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-timeout=600000',
    `--test-concurrency=${CONCURRENCY}`, `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`,
    '--test-reporter-destination=stdout', `--test-reporter=${path.join(ROOT, 'test', 'suite-reporter.mjs')}`,
    `--test-reporter-destination=${fileTimes}`, ...files], { cwd: ROOT, stdio: 'inherit' });
  const code = await new Promise<number>((resolve) => runner.on('close', (c, signal) =>
    resolve(c ?? (signal ? 1 : 0))));
  const wallMs = Date.now() - start;
  const cpuMs = childrenCpuMs();
  let measured: Record<string, number> = {};
  try {
    measured = JSON.parse(fs.readFileSync(fileTimes, 'utf8'));
    fs.rmSync(fileTimes, { force: true });
  } catch { /* the runner died before its reporter wrote */ }
  const times: TestTimes = readTestTimes();
  for (const [file, ms] of Object.entries(measured)) times.files[path.relative(ROOT, file)] = ms;
  if (!named.length) times.suite = { at: new Date().toISOString(), wallMs, cpuMs, passed: code === 0,
    files: files.length, concurrency: CONCURRENCY, cores: os.cpus().length, load: [load, os.loadavg()[0]] };
  const tmp = `${TEST_TIMES}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(times, null, 2) + '\n');
  fs.renameSync(tmp, TEST_TIMES);
  const min = (ms: number) => `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  console.log(`# suite: ${files.length} files, ${min(wallMs)} wall, ${Math.round(cpuMs / 1000)} CPU-s, ` +
    `${CONCURRENCY} files at a time on ${os.cpus().length} cores, load ${load.toFixed(1)} → ` +
    `${os.loadavg()[0].toFixed(1)}`);
  process.exitCode = code;
}
