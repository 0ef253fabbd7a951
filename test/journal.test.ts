// Never losing the user's place: a run killed at each step (the whole process group, as when a
// terminal closes) and run again finishes the flash without redoing what was done; a batch of three
// plugs gets three names, one secrets.yaml and a summary table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { startBench, runInProcess, startChild, journalOf, type Bench } from './workbench.ts';

const RECIPE = 'recipes/23A.yaml';

/** secrets.yaml is whole: mode 0600, every key, parseable. Returns its bytes to compare later. */
function intactSecrets(b: Bench): string {
  const file = path.join(b.out, 'secrets.yaml');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  const text = fs.readFileSync(file, 'utf8');
  assert.deepEqual(Object.keys(YAML.parse(text)).sort(), ['ap_password', 'api_encryption_key', 'ota_password', 'wifi_password', 'wifi_ssid']);
  return text;
}

// When to pull the plug on the run (a line that shows the step under way), and what the re-run says
// when it finds the plug further along than the journal. During cloudcutter: after the exploit, while the plug waits
// for the user's second AP-mode dance (killed as the user reads that line, so the plug cannot have been flashed yet).
const KILL_POINTS: [step: string, marker: RegExp, rerunSays?: RegExp][] = [
  ['config', /\] config /],
  ['compile', /started in the background/],
  ['cloudcutter', /put the plug into AP mode again/],
  ['kickstart', /sent your Wi-Fi/, /the last run already gave the plug your Wi-Fi: found it at 127\.0\.0\.1/],
  ['upload', /\] upload /],
  ['verify', /waiting for status-plug-01 to boot/],
];

for (const [step, marker, rerunSays] of KILL_POINTS) {
  test(`killed during ${step}: the next run resumes and finishes without redoing finished steps`, async () => {
    const b = await startBench({ fakes: { cloudcutter: { delayMs: 1500 }, esphome: { delayMs: 1500 } } });
    try {
      const run = startChild([RECIPE, ...b.args, '--yes'], b.env, b.user);
      await run.waitFor(marker);
      process.kill(-run.child.pid!, 'SIGKILL');
      await run.exited;

      const secrets = fs.existsSync(path.join(b.out, 'secrets.yaml')) ? intactSecrets(b) : undefined;
      const before = fs.existsSync(path.join(b.out, '.flash', 'status-plug-01.json')) ? journalOf(b) : { steps: {} };
      const done = Object.keys(before.steps);
      const cloudcutterRuns = b.world.calls('tuya-cloudcutter.sh').length;

      const again = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
      assert.equal(again.code, 0, `${run.output()}\n──── re-run ────\n${again.out}`);
      assert.equal(b.sim.phase, 'final');
      assert.equal(b.sim.final?.name, 'status-plug-01');
      if (rerunSays) assert.match(again.out, rerunSays);
      // Finished steps are named as resumed and not run again.
      const resumed = again.out.match(/resuming: (.*) already done/)?.[1].split(', ') ?? [];
      assert.deepEqual(resumed.sort(), [...done].sort(), 'the re-run names the finished steps');
      for (const s of done) assert.doesNotMatch(again.out, new RegExp(`^\\[\\d/\\d\\] ${s} `, 'm'), `${s} was redone`);
      if (done.includes('cloudcutter')) assert.equal(b.world.calls('tuya-cloudcutter.sh').length, cloudcutterRuns, 'cloudcutter ran again');
      if (secrets !== undefined) assert.equal(intactSecrets(b), secrets, 'secrets.yaml changed');
      const after = journalOf(b);
      assert.equal(after.started, undefined);
      for (const s of ['config', 'compile', 'cloudcutter', 'kickstart', 'upload', 'verify']) assert.ok(s in after.steps, `${s} is in the journal`);
    } finally {
      await b.close();
    }
  });
}

test('killed after cloudcutter flashed the plug but before it said so: the re-run sees Kickstart and does not run cloudcutter again', async () => {
  const b = await startBench({ fakes: { cloudcutter: { delayMs: 3000 } } });
  try {
    const run = startChild([RECIPE, ...b.args, '--yes'], b.env, b.user);
    // The last line cloudcutter prints; flash.ts has not seen it exit yet.
    await run.waitFor(/Device MAC address/);
    await b.sim.waitForPhase('kickstart-ap', 60_000);
    process.kill(-run.child.pid!, 'SIGKILL');
    await run.exited;
    assert.equal(journalOf(b).started?.step, 'cloudcutter');
    const again = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /it does \(its network kickstart-bk7231n is on the air\): cloudcutter is not needed again/);
    assert.equal(b.world.calls('tuya-cloudcutter.sh').length, 1);
    assert.equal(b.sim.phase, 'final');
  } finally {
    await b.close();
  }
});

test('a batch of 3: three names, one shared secrets.yaml, the next plug compiling meanwhile, a summary table', async () => {
  const b = await startBench();
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--count', '3'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    const names = ['status-plug-01', 'status-plug-02', 'status-plug-03'];
    assert.match(r.out, /batch: 3 plugs: status-plug-01, status-plug-02, status-plug-03/);
    for (const n of names) {
      const config = fs.readFileSync(path.join(b.out, `${n}.yaml`), 'utf8');
      assert.match(config, new RegExp(`device_name: "${n}"`));
      assert.match(config, /key: !secret api_encryption_key/);
      assert.match(r.out, new RegExp(`^  ${n}\\s+127\\.0\\.0\\.1\\s+C8:47:8C(:[0-9A-F]{2}){3}\\s+flashed$`, 'm'));
    }
    assert.deepEqual(fs.readdirSync(b.out).filter((f) => f.startsWith('secrets')), ['secrets.yaml'], 'one secrets file for all');
    assert.match(r.out, /compiling status-plug-02 in the background for the next plug/);
    assert.match(r.out, /^  name\s+IP\s+MAC\s+result/m);
    // The plug the sim ends as is the last one, reachable with the shared key.
    assert.equal(b.sim.final?.name, 'status-plug-03');
    // One more batch continues the numbering after the highest name there.
    const more = await runInProcess([RECIPE, ...b.args, '--yes', '--count', '1', '--dry-run'], b.env, b.user);
    assert.match(more.out, /batch: 1 plugs: status-plug-04/);
  } finally {
    await b.close();
  }
});
