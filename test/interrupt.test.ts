// Faults injected through the simulated plug and the fake tools, and Ctrl+C: each ends with a message
// that says what to check, and leaves secrets.yaml and the journal as they were (nothing half-written,
// no failed step recorded as done).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startBench, runInProcess, startChild, configured, journalOf, groupMembers, type Bench, type BenchOptions } from './workbench.ts';

const RECIPE = 'recipes/23A.yaml';

const FAULTS: { name: string; bench: BenchOptions; code: number; says: RegExp[]; failedStep?: string }[] = [
  {
    name: 'the plug never joins the LAN after getting the Wi-Fi',
    bench: { sim: { faults: { neverJoinLan: true } }, env: { FLASH_DISCOVERY_TIMEOUT_MS: '1500' } },
    code: 1, failedStep: 'kickstart',
    says: [/kickstart failed: the plug did not show up on your network within 1\.5 s/, /same network as "HomeNet"/, /--device-ip IP/],
  },
  {
    name: 'the flashed plug never comes back',
    bench: { sim: { faults: { neverReboot: true } }, env: { FLASH_VERIFY_TIMEOUT_MS: '1500' } },
    code: 1, failedStep: 'verify',
    says: [/verify failed: status-plug-01 did not answer within 1\.5 s \(not on mDNS nor at 127\.0\.0\.1\)/, /power-cycle it/,
      /--only verify --device-ip IP/],
  },
  {
    name: 'the upload connection is reset midway (once)',
    bench: { sim: { faults: { dropUploadAfterBytes: 60_000 } } },
    code: 0, says: [/upload interrupted .*; retrying \(2\/3\)/, /Kickstart took the firmware/],
  },
  {
    name: 'the captive portal answers 500 twice',
    bench: { sim: { faults: { portal500: 2 } } },
    code: 0, says: [/sent your Wi-Fi "HomeNet" to the plug/],
  },
  {
    name: 'the captive portal keeps answering 500',
    bench: { sim: { faults: { portal500: 50 } } },
    code: 1, failedStep: 'kickstart',
    says: [/kickstart failed: GET http:\/\/127\.0\.0\.1:\d+\/config\.json failed after 4 tries: HTTP 500/, /--from kickstart/],
  },
  {
    name: 'cloudcutter cannot find the plug\'s access point',
    bench: { fakes: { cloudcutter: { outcome: 'ap' } } },
    code: 1, failedStep: 'cloudcutter',
    says: [/AP mode/i, /--from cloudcutter/],
  },
];

for (const f of FAULTS) {
  test(`fault: ${f.name}`, async () => {
    const b = await startBench(f.bench);
    try {
      const intact = await configured(b);
      const r = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
      assert.equal(r.code, f.code, r.out);
      for (const re of f.says) assert.match(r.out, re);
      intact();
      const j = journalOf(b);
      if (f.failedStep) assert.ok(!(f.failedStep in j.steps), `${f.failedStep} is not recorded as done`);
      else assert.equal(b.sim.phase, 'final');
      assert.doesNotMatch(r.out, /unexpected error/);
    } finally {
      await b.close();
    }
  });
}

async function ctrlC(b: Bench, args: string[], when: RegExp, thenWaitMs = 200): Promise<{ code: number; out: string; left: string[] }> {
  const run = startChild([RECIPE, ...b.args, '--yes', ...args], b.env, b.user);
  await run.waitFor(when);
  await new Promise((r) => setTimeout(r, thenWaitMs));
  // To flash.ts only: it must stop what it started itself.
  process.kill(run.child.pid!, 'SIGINT');
  const code = await run.exited;
  await new Promise((r) => setTimeout(r, 300));
  return { code, out: run.output(), left: groupMembers(run.child.pid!) };
}

test('Ctrl+C during the compile: esphome stopped, exit 130, how to resume, nothing recorded as done', async () => {
  const b = await startBench({ fakes: { esphome: { delayMs: 30_000 } } });
  try {
    const intact = await configured(b);
    const r = await ctrlC(b, ['--only', 'compile'], /started in the background|waiting for esphome compile/);
    assert.equal(r.code, 130, r.out);
    assert.match(r.out, /■ stopped \(SIGINT\) during the compile step/);
    assert.match(r.out, /run the same command again to resume/);
    assert.deepEqual(r.left, [], 'no child process left running');
    intact();
    assert.ok(!('compile' in journalOf(b).steps));
  } finally {
    await b.close();
  }
});

test('Ctrl+C during the upload: exit 130, nothing left running; the re-run looks first and the firmware goes in exactly once', async () => {
  const b = await startBench({ sim: { phase: 'kickstart-lan', faults: { slowUploadKiBps: 40 } }, uniqueName: true });
  try {
    const intact = await configured(b);
    const args = ['--only', 'upload', '--device-ip', '127.0.0.1'];
    const r = await ctrlC(b, args, /\] upload /, 1500); // 200 KiB at 40 KiB/s: midway
    assert.equal(r.code, 130, r.out);
    assert.match(r.out, /■ stopped \(SIGINT\) during the upload step/);
    assert.deepEqual(r.left, []);
    intact();
    assert.equal(journalOf(b).started?.step, 'upload');
    b.sim.faults.slowUploadKiBps = undefined;
    // What the plug got depends on what was already in flight (TCP delivers what was sent): the
    // re-run looks first, and uploads only if the new firmware is not up.
    const again = await runInProcess([RECIPE, ...b.args, '--yes', ...args], b.env, b.user);
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /the last run stopped during this step/);
    await b.sim.waitForPhase('final', 5000);
    assert.equal(b.sim.uploads.filter((u) => u.result === 'Update Successful!').length, 1, 'the firmware went in exactly once');
    assert.equal(b.sim.final?.name, b.name);
  } finally {
    await b.close();
  }
});
