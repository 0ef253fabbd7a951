// `npm test`: every test/*.test.ts (or the files named), each under node's test runner in a process of its own, a few
// files at a time, the longest first by the last run's times, so the run does not end waiting on a long file started
// last (node --test itself would start them in alphabetical order). Each file's report is printed whole when it
// ends. What the run took is kept in .test-times.json (beside package.json, never committed): its wall time, the CPU
// time of every process it waited for, the machine's load, and each file's time. The next run orders its files by
// them (a fresh clone, by test/suite-times.json: one quiet run's, committed); `npm run bench` reports the suite's time
// from there.
import { spawn, type ChildProcess } from 'node:child_process';
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
  /** Each file's wall time in its last run. */
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

/** A file's counts, from the summary node's reporters print (TAP `# pass 3`, spec `ℹ pass 3`). */
function counts(report: string): Record<'tests' | 'pass' | 'fail' | 'cancelled', number> {
  const of = (what: string) => Number(new RegExp(`^(?:#|ℹ) ${what} (\\d+)$`, 'm').exec(report)?.[1] ?? 0);
  return { tests: of('tests'), pass: of('pass'), fail: of('fail'), cancelled: of('cancelled') };
}

{
  const named = process.argv.slice(2);
  const all = fs.readdirSync(path.join(ROOT, 'test')).filter((f) => f.endsWith('.test.ts')).sort()
    .map((f) => `test/${f}`);
  const last = readTestTimes();
  const committed = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'suite-times.json'), 'utf8')) as
    Record<string, number>;
  const timeOf = (file: string) => last.files[file] ?? committed[file] ?? Infinity;
  // A file with no time yet (new, or the first run here) goes first: it may be a long one.
  const files = (named.length ? named : all).sort((a, b) =>
    timeOf(b) - timeOf(a) || a.localeCompare(b));
  const reporter = process.stdout.isTTY ? 'spec' : 'tap';
  const start = Date.now();
  const load = os.loadavg()[0];
  const running = new Set<ChildProcess>();
  const measured: Record<string, number> = {};
  const failed: string[] = [];
  const total = { tests: 0, pass: 0, fail: 0, cancelled: 0 };
  let stopping: NodeJS.Signals | undefined;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      stopping = signal;
      // Each file's runner leads a process group (its file's process is in it): the group is stopped, and killed
      // if it is still there after 5 s.
      const group = (child: ChildProcess, sig: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, sig);
        } catch { /* gone */ }
      };
      for (const child of running) group(child, signal);
      setTimeout(() => running.forEach((child) => group(child, 'SIGKILL')), 5000).unref();
    });
  }

  const runFile = (file: string) => new Promise<void>((resolve) => {
    const began = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-timeout=600000',
      `--test-reporter=${reporter}`, file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    running.add(child);
    let report = '';
    child.stdout!.on('data', (d) => (report += d));
    child.stderr!.on('data', (d) => (report += d));
    child.on('close', (code, signal) => {
      running.delete(child);
      measured[file] = Date.now() - began;
      const got = counts(report);
      for (const k of Object.keys(total) as (keyof typeof total)[]) total[k] += got[k];
      if ((code !== 0 || signal) && !stopping) failed.push(file); // a file the stop ended did not fail
      process.stdout.write(`${reporter === 'tap' ? '# file' : '▶'} ${file} (${(measured[file] / 1000).toFixed(1)} s` +
        `${code === 0 ? '' : `, exit ${code ?? signal}`})\n${report}`);
      resolve();
    });
  });

  const queue = [...files];
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, queue.length) }, async () => {
    for (let file = queue.shift(); file && !stopping; file = queue.shift()) await runFile(file);
  }));

  const wallMs = Date.now() - start;
  const cpuMs = childrenCpuMs();
  const passed = !failed.length && !stopping;
  const times: TestTimes = readTestTimes();
  if (!stopping) for (const [file, ms] of Object.entries(measured)) times.files[file] = ms;
  if (!named.length && !stopping) times.suite = { at: new Date().toISOString(), wallMs, cpuMs, passed,
    files: files.length, concurrency: CONCURRENCY, cores: os.cpus().length, load: [load, os.loadavg()[0]] };
  const tmp = `${TEST_TIMES}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(times, null, 2) + '\n');
  fs.renameSync(tmp, TEST_TIMES);
  const min = (ms: number) => `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  console.log(`# suite: ${files.length} files, ${total.tests} tests: ${total.pass} passed, ${total.fail} failed` +
    `${total.cancelled ? `, ${total.cancelled} cancelled` : ''}; ${min(wallMs)} wall, ${Math.round(cpuMs / 1000)} ` +
    `CPU-s, ${CONCURRENCY} files at a time on ${os.cpus().length} cores, load ${load.toFixed(1)} → ` +
    `${os.loadavg()[0].toFixed(1)}`);
  if (stopping) console.log('# stopped: run `npm test` again');
  for (const file of failed) console.log(`# failed: ${file} (again on its own: npm test -- ${file})`);
  process.exitCode = stopping ? 128 + os.constants.signals[stopping] : passed ? 0 : 1;
}
