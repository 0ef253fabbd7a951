// Every way a run is stopped, at every kind of moment, ends the same way: Ctrl+C (a signal from the terminal, or
// ^C typed into a prompt, where it is a key), SIGTERM, and a closed terminal (SIGHUP, the terminal gone), inside
// flash.ts's own questions, inside cloudcutter's, while the compile runs in the background, while cloudcutter looks
// for the plug, while flash.ts waits for the plug on mDNS. Each stop gives the signal's exit code, "■ stopped" and how
// to resume, and no stack trace; the journal is saved (what was done stays done, the stopped step is not done) and
// no process of the run is left. Signals and moments are paired so that every way of stopping and every kind of
// moment is met, not every pair (Ctrl+C during the compile and during the upload are in interrupt.test.ts). In a
// terminal, flash.ts runs in a real pseudo-terminal (util-linux `script`) and is answered by key presses only.
// A question of cloudcutter's that flash.ts does not know is shown to the user, and its answer typed into
// cloudcutter; with --yes the run stops on it, quoting it.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startBench, startChild, configured, journalOf, groupMembers, worldProcesses, type Bench }
  from './workbench.ts';
import { startSimPlug } from './sim/plug.ts';
import { UBUNTU_RESOLVED, CLOUDCUTTER_LINES, portQuestion } from './fakes.ts';
import { plainText } from './virtual-user.ts';
import { FLASH, ROOT, TSX, WIFI_ENV, runFlash, shellWords, tempDir } from './helpers.ts';

const RECIPE = 'recipes/23A.yaml';
/** The one question of cloudcutter's flash.ts does not know: the real script asks it for Realtek chips. */
const UNKNOWN = 'Press any key to confirm you have completed power cycling the device and continue.';
const literally = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Everything a stopped run must say, and nothing it must not. */
function saysStopped(out: string, signal: string, step: string): void {
  assert.match(out, new RegExp(`■ stopped \\(${signal}\\) during the ${step} step\\.`), out);
  assert.match(out, /run the same command again to (resume|start)/);
  assert.doesNotMatch(out, /unexpected error|ExitPromptError|AbortPromptError|^\s+at .*:\d+:\d+\)?$/m,
    'no stack trace');
  // A stopped cloudcutter is not a failed one: no diagnosis, no offer to run it again.
  assert.doesNotMatch(out, /cloudcutter stopped with exit code|Retry the cloudcutter step/);
}

/** The journal after a stop: the steps done before it still done, the stopped one not. */
function journalKept(b: Bench, done: string[], stopped: string): ReturnType<typeof journalOf> {
  const j = journalOf(b);
  for (const step of done) assert.ok(step in j.steps, `${step} stays done`);
  assert.ok(!(stopped in j.steps), `${stopped} is not recorded as done`);
  return j;
}

/** Polls `list` until it is empty (processes take a moment to leave /proc); what is still there after `ms`. */
async function leftAfter(list: () => string[], ms = 5000): Promise<string[]> {
  const until = Date.now() + ms;
  for (;;) {
    const left = list();
    if (!left.length || Date.now() > until) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves when `check` is true, polled (for files other processes write). */
async function until(check: () => boolean, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What cloudcutter's script got as answers so far (the fake keeps them in its world's state). */
/** The fake world's state: what the fake cloudcutter was answered, and how it was ended. */
function state(b: Bench): { answers?: { question: string; answer: string }[]; endedBy?: string } {
  return JSON.parse(fs.readFileSync(path.join(b.world.dir, 'state.json'), 'utf8'));
}

function answers(b: Bench): { question: string; answer: string }[] {
  return state(b).answers ?? [];
}

function cloudcutterLog(b: Bench): string {
  const dir = path.join(b.out, '.flash', 'logs');
  const logs = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.startsWith('cloudcutter-')) : [];
  return logs.map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('');
}

function childrenOf(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).split('\n')
      .filter((l) => l.trim()).map(Number);
  } catch {
    return [];
  }
}

/** The terminals and process groups still open: a test that failed halfway leaves none behind. */
const terminals = new Set<ReturnType<typeof spawn>>();
const groups = new Set<number>();
after(() => {
  for (const pty of terminals) pty.kill('SIGKILL'); // it hangs up: the run in it stops
  for (const pgid of groups) try {
    process.kill(-pgid, 'SIGKILL');
  } catch { /* gone */ }
});

/** flash.ts as a child in a process group of its own (a job of a shell), not in a terminal. */
function start(args: string[], env: NodeJS.ProcessEnv): ReturnType<typeof startChild> {
  const run = startChild(args, env);
  groups.add(run.child.pid!);
  // Forgotten once flash.ts and all it started in its group are gone (a pid is soon someone else's).
  void run.exited.then(() => leftAfter(() => groupMembers(run.child.pid!))).then((left) => left.length ||
    groups.delete(run.child.pid!));
  return run;
}

interface Terminal {
  /** The screen so far, as plain text. */
  text(): string;
  /** The screen so far, with its control sequences. */
  raw(): string;
  type(keys: string): void;
  /** Resolves once the screen shows `re`. */
  shows(re: RegExp): Promise<void>;
  /** flash.ts's process (a child of the shell in the terminal). */
  flashPid(): Promise<number>;
  /** flash.ts's exit code, as its shell saw it. */
  exited: Promise<number>;
  /** The terminal's settings after flash.ts ended (`stty -a`, as words). */
  modes(): string[];
  /** Closes the terminal, as closing its window does: it hangs up. */
  close(): void;
}

/**
 * flash.ts in a real pseudo-terminal, run by bash as a terminal's shell runs a command. `hangUp`: run like a job of
 * an interactive shell, which, told its terminal hung up (SIGHUP), hangs up its jobs too; its exit code is noted in
 * a file, since the terminal it would be shown on is gone.
 */
function inTerminal(args: string[], env: NodeJS.ProcessEnv, o: { hangUp?: boolean } = {}): Terminal {
  const flash = shellWords([process.execPath, '--import', TSX, FLASH, ...args]);
  const codeFile = path.join(tempDir('flash-stops-'), 'code');
  // Wide: what a test reads is flash.ts's words, not how an 80-column terminal folds them.
  const command = 'stty cols 400 rows 50; ' + (o.hangUp
    ? `trap 'kill -HUP $job' HUP; ${flash} 0<&0 & job=$!; wait $job; wait $job; echo $? > ${shellWords([codeFile])}`
    : `${flash}; code=$?; echo "[stty: $(stty -a | tr '\\n;' '  ')]"; exit $code`);
  const pty = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], {
    cwd: ROOT, env: { ...env, NO_COLOR: '1', TERM: 'xterm', SHELL: '/bin/bash' }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  terminals.add(pty);
  pty.on('close', () => terminals.delete(pty));
  let screen = '';
  const waiters = new Set<() => void>();
  const feed = (d: Buffer) => {
    screen += d;
    for (const w of [...waiters]) w();
  };
  pty.stdout.on('data', feed);
  pty.stderr.on('data', feed);
  pty.stdin.on('error', () => {}); // typing into a terminal that has closed
  const closed = new Promise<number>((r) => pty.on('close', (code) => r(code ?? -1)));
  const exited = o.hangUp
    ? until(() => fs.existsSync(codeFile) && fs.readFileSync(codeFile, 'utf8').endsWith('\n'), 'flash.ts to end')
      .then(() => Number(fs.readFileSync(codeFile, 'utf8')))
    : closed;
  return {
    text: () => plainText(screen),
    raw: () => screen,
    type: (keys) => void pty.stdin.write(keys),
    shows: (re) => new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!re.test(plainText(screen))) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => (waiters.delete(check), reject(new Error(`no ${re} on:\n${plainText(screen)}`))),
        60_000);
      waiters.add(check);
      check();
    }),
    flashPid: async () => {
      let pid: number | undefined;
      await until(() => !!(pid = childrenOf(pty.pid!).flatMap(childrenOf)[0]), 'flash.ts to start');
      return pid!;
    },
    exited,
    modes: () => (/\[stty: ([^\]]*)\]/.exec(plainText(screen))?.[1] ?? '').split(/\s+/),
    close: () => void pty.kill('SIGKILL'),
  };
}

/** A terminal left as flash.ts found it: lines edited and echoed, ^C a signal. */
function terminalSane(t: Terminal): void {
  const modes = t.modes();
  for (const mode of ['icanon', 'echo', 'isig']) assert.ok(modes.includes(mode), `${mode} in: ${modes.join(' ')}`);
}

describe('stops', { concurrency: 4 }, () => {
  test('^C typed into the Wi-Fi name question (a key there, not a signal): exit 130, nothing written, the ' +
    'terminal as it was', async () => {
    const out = path.join(tempDir(), 'esphome');
    const env = { ...process.env };
    delete env.FLASH_WIFI_SSID;
    delete env.FLASH_WIFI_PASSWORD;
    const t = inTerminal([RECIPE, '--only', 'config', '--out', out], env);
    await t.shows(/\? Your Wi-Fi network name \(SSID\) for the plug/);
    t.type('Home');
    await t.shows(/for the plug Home/);
    t.type('\x03');
    assert.equal(await t.exited, 130, t.text());
    saysStopped(t.text(), 'SIGINT', 'config');
    assert.ok(!fs.existsSync(path.join(out, 'secrets.yaml')), 'no secrets.yaml with half an answer');
    terminalSane(t);
  });

  test('SIGTERM inside the pin check\'s select, in a terminal: exit 143, the cursor shown again, the pins not done',
    async () => {
    const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false });
    const out = path.join(tempDir(), 'esphome');
    try {
      assert.equal((await runFlash([RECIPE, '--only', 'config', '--yes', '--out', out], { env: WIFI_ENV })).code, 0);
      const t = inTerminal([RECIPE, '--only', 'pins', '--check-pins', '--device-ip', '127.0.0.1', '--out', out],
        { ...process.env, FLASH_DEVICE_HTTP_PORT: String(sim.port) });
      await t.shows(/relay on P24 was switched on and off\. What did you see\?\n❯ /);
      process.kill(await t.flashPid(), 'SIGTERM');
      assert.equal(await t.exited, 143, t.text());
      saysStopped(t.text(), 'SIGTERM', 'pins');
      // The select hid the cursor while it was up: it is shown again after the last time it was hidden.
      const raw = t.raw();
      assert.ok(raw.lastIndexOf('\x1b[?25h') > raw.lastIndexOf('\x1b[?25l'), 'the cursor is visible');
      terminalSane(t);
      const j = JSON.parse(fs.readFileSync(path.join(out, '.flash', 'status-plug-01.json'), 'utf8'));
      assert.ok('config' in j.steps);
      assert.ok(!('pins' in j.steps), 'pins is not recorded as done');
    } finally {
      await sim.close();
    }
  });

  test('cloudcutter in a terminal: a question flash.ts does not know is shown at once and the typed answer ' +
    'reaches it, and so does the next; ^C while it looks for the plug stops it: exit 130', async () => {
    const b = await startBench({ fakes: { cloudcutter: { question: UNKNOWN } } });
    try {
      await configured(b);
      // Patience under --yes is endless here: in a terminal the question must not wait for it.
      const t = inTerminal([RECIPE, ...b.args, '--only', 'cloudcutter'],
        { ...b.env, FLASH_CLOUDCUTTER_QUESTION_MS: '600000' });
      await t.shows(new RegExp(`\\? cloudcutter asks: ${literally(UNKNOWN)}`));
      assert.ok(!answers(b).some((a) => a.question === UNKNOWN), 'cloudcutter still waits for its answer');
      t.type('y\r');
      // Its next question, one flash.ts knows: asked in turn, not answered by what was left of the last answer.
      await t.shows(/\? Let cloudcutter stop AppArmor until the next reboot\?/);
      t.type('y\r');
      await t.shows(/Put the plug into AP mode now/);
      await until(() => /Scanning for open Tuya SmartLife AP/.test(cloudcutterLog(b)), 'cloudcutter to scan');
      assert.deepEqual(answers(b).filter((a) => a.question !== portQuestion('systemd-resolve')),
        [{ question: UNKNOWN, answer: 'y' }, { question: CLOUDCUTTER_LINES.apparmorQuestion, answer: 'y' }]);
      t.type('\x03'); // no prompt is up: the terminal makes it SIGINT, to flash.ts and all of its job
      assert.equal(await t.exited, 130, t.text());
      saysStopped(t.text(), 'SIGINT', 'cloudcutter');
      terminalSane(t);
      assert.deepEqual(await leftAfter(() => worldProcesses(b.world)), [], 'cloudcutter and its terminal are gone');
      const j = journalKept(b, ['config'], 'cloudcutter');
      assert.equal(j.started?.step, 'cloudcutter', 'the next run looks where the plug got to first');
      assert.ok(j.facts.kickstartFile, 'what the stopped step learned is saved');
    } finally {
      await b.close();
    }
  });

  test('SIGTERM inside cloudcutter\'s AppArmor question, in a terminal: cloudcutter stopped unanswered, exit 143',
    async () => {
    const b = await startBench();
    try {
      await configured(b);
      const t = inTerminal([RECIPE, ...b.args, '--only', 'cloudcutter'], b.env);
      await t.shows(/\? Let cloudcutter stop AppArmor until the next reboot\?/);
      process.kill(await t.flashPid(), 'SIGTERM');
      assert.equal(await t.exited, 143, t.text());
      saysStopped(t.text(), 'SIGTERM', 'cloudcutter');
      terminalSane(t);
      assert.deepEqual(await leftAfter(() => worldProcesses(b.world)), []);
      assert.ok(!answers(b).some((a) => a.question === CLOUDCUTTER_LINES.apparmorQuestion), 'nobody answered it');
      journalKept(b, ['config'], 'cloudcutter');
    } finally {
      await b.close();
    }
  });

  test('the terminal closed inside cloudcutter\'s question about a port: cloudcutter stopped, the journal saved, ' +
    'exit 129', async () => {
    // dnsmasq on all addresses: the check would refuse it, so only --only cloudcutter meets cloudcutter's question.
    const b = await startBench({ fakes: { ss: { busy: [...UBUNTU_RESOLVED,
      { proto: 'udp', port: 67, addr: '0.0.0.0', process: 'dnsmasq', pid: 812, unit: 'dnsmasq.service' }] } } });
    try {
      await configured(b);
      const t = inTerminal([RECIPE, ...b.args, '--only', 'cloudcutter'], b.env, { hangUp: true });
      await t.shows(/\? dnsmasq holds port 67\/udp\. What should cloudcutter do\?/);
      t.close();
      assert.equal(await t.exited, 129, 'ended by the hang-up, not by a crash');
      assert.deepEqual(await leftAfter(() => worldProcesses(b.world)), []);
      assert.ok(!answers(b).some((a) => a.question === portQuestion('dnsmasq')), 'nobody answered it');
      const j = journalKept(b, ['config'], 'cloudcutter');
      assert.ok(j.facts.kickstartFile, 'the journal was saved on the way out');
    } finally {
      await b.close();
    }
  });

  test('SIGTERM while the compile runs in the background and cloudcutter looks for the plug: both stopped, exit 143',
    async () => {
    const b = await startBench({ fakes: { esphome: { delayMs: 120_000 } } });
    try {
      await configured(b);
      // Nobody puts the plug into AP mode: cloudcutter scans on and on.
      const run = start([RECIPE, ...b.args, '--yes', '--from', 'compile'], b.env);
      await run.waitFor(/Put the plug into AP mode now/);
      await until(() => /Scanning for open Tuya SmartLife AP/.test(cloudcutterLog(b)), 'cloudcutter to scan');
      assert.equal(run.child.exitCode, null);
      process.kill(run.child.pid!, 'SIGTERM'); // to flash.ts only: it must stop what it started itself
      assert.equal(await run.exited, 143, run.output());
      saysStopped(run.output(), 'SIGTERM', 'cloudcutter');
      assert.doesNotMatch(run.output(), /compile failed/);
      assert.deepEqual(await leftAfter(() => groupMembers(run.child.pid!)), [], 'esphome compile is gone');
      assert.deepEqual(await leftAfter(() => worldProcesses(b.world)), [], 'cloudcutter is gone');
      journalKept(b, ['config'], 'compile');
      journalKept(b, [], 'cloudcutter');
    } finally {
      await b.close();
    }
  });

  test('the terminal closed while flash.ts waits for the flashed plug on mDNS (its spinner drawing): exit 129',
    async () => {
    // The plug still runs Kickstart: the name verify looks for never shows up.
    const b = await startBench({ sim: { phase: 'kickstart-lan' }, uniqueName: true,
      env: { FLASH_VERIFY_TIMEOUT_MS: '120000' } });
    try {
      await configured(b);
      const t = inTerminal([RECIPE, ...b.args, '--yes', '--only', 'verify'], b.env, { hangUp: true });
      await t.shows(new RegExp(`waiting for ${b.name} to boot ESPHome and show up \\(mDNS\\) \\(\\d+ s\\)`));
      t.close();
      assert.equal(await t.exited, 129, 'ended by the hang-up, not by a crash');
      assert.deepEqual(await leftAfter(() => worldProcesses(b.world)), []);
      journalKept(b, ['config'], 'verify');
    } finally {
      await b.close();
    }
  });

  test('--yes and a question of cloudcutter\'s flash.ts does not know: the run stops within seconds, quoting it, ' +
    'exit 1', async () => {
    const b = await startBench({ fakes: { cloudcutter: { question: UNKNOWN } } });
    try {
      await configured(b);
      // (Its patience shortened: the run is the same with the 5 s default, only longer.)
      const run = start([RECIPE, ...b.args, '--yes', '--only', 'cloudcutter'],
        { ...b.env, FLASH_CLOUDCUTTER_QUESTION_MS: '1000' });
      await run.waitFor(new RegExp(`│ ${literally(UNKNOWN)}`));
      assert.equal(await run.exited, 1, run.output());
      // Ending it takes no patience: cloudcutter goes at the first ^C flash.ts types, not at the SIGTERM after it.
      assert.equal(state(b).endedBy, 'SIGINT', 'cloudcutter was ended by the ^C typed into it');
      const out = run.output();
      assert.match(out, new RegExp(`cloudcutter asked a question flash\\.ts does not know, and nobody can answer it: ` +
        `"${literally(UNKNOWN)}"`));
      assert.match(out, /run it without --yes \(in a terminal\) to answer it yourself/);
      assert.match(out, /retry from this step: .*--from cloudcutter/);
      assert.doesNotMatch(out, /unexpected error|^\s+at .*:\d+:\d+\)?$/m);
      assert.ok(!answers(b).some((a) => a.question === UNKNOWN), 'nothing was typed into it');
      assert.deepEqual(await leftAfter(() => groupMembers(run.child.pid!)), []);
      assert.deepEqual(await leftAfter(() => worldProcesses(b.world)), []);
      journalKept(b, ['config'], 'cloudcutter');
    } finally {
      await b.close();
    }
  });

  test('--yes, Ctrl+C (to the whole job, as a terminal sends it) while an unknown question of cloudcutter\'s waits: ' +
    'a stop, not a failure: exit 130', async () => {
    const b = await startBench({ fakes: { cloudcutter: { question: UNKNOWN } } });
    try {
      await configured(b);
      const run = start([RECIPE, ...b.args, '--yes', '--only', 'cloudcutter'],
        { ...b.env, FLASH_CLOUDCUTTER_QUESTION_MS: '600000' });
      await until(() => cloudcutterLog(b).includes(UNKNOWN), 'the question');
      // flash.ts and the `script` its cloudcutter runs in: `script` ends cloudcutter its own way (SIGTERM).
      process.kill(-run.child.pid!, 'SIGINT');
      assert.equal(await run.exited, 130, run.output());
      saysStopped(run.output(), 'SIGINT', 'cloudcutter');
      assert.doesNotMatch(run.output(), /does not know|nobody can answer/);
      assert.deepEqual(await leftAfter(() => groupMembers(run.child.pid!)), []);
      assert.deepEqual(await leftAfter(() => worldProcesses(b.world)), []);
      journalKept(b, ['config'], 'cloudcutter');
    } finally {
      await b.close();
    }
  });
});
