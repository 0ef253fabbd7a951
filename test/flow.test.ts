// The whole flow on the workbench (simulated plug + fake tools): config → compile → cloudcutter →
// kickstart → pins → upload → verify, then one test per way the last steps fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startBench, runInProcess, configured, HOME } from './workbench.ts';
import { FAMILY_ID } from './firmware-files.ts';

const RECIPE = 'recipes/23A.yaml';


test('full flow: a simulated 23A goes from Tuya firmware to a verified ESPHome device', async () => {
  const b = await startBench();
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--check-pins'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    // Every step ran, in the order of DESIGN.md.
    const steps = [...r.out.matchAll(/^\[\d\/\d\] (\w+)/gm)].map((m) => m[1]);
    assert.deepEqual(steps, ['check', 'config', 'compile', 'cloudcutter', 'kickstart', 'pins', 'upload', 'verify']);
    // cloudcutter got the profile and firmware for the N chip; the plug got the Wi-Fi and the UF2.
    const cc = b.world.calls('tuya-cloudcutter.sh')[0];
    assert.deepEqual(cc.argv, ['-p', 'minoston-mp22wp-outdoor-plug', '-f', 'ESPHome-Kickstart-v25.05.28_bk7231n_app.ota.ug.bin', '-w', 'wlan1']);
    assert.deepEqual(b.sim.wifi, { ssid: HOME.ssid, psk: HOME.password });
    assert.deepEqual(b.sim.uploads.map((u) => [u.familyId, u.result]), [[FAMILY_ID.bk7231n, 'Update Successful!']]);
    assert.equal(b.sim.phase, 'final');
    assert.equal(b.sim.final?.name, 'status-plug-01');
    // The summary a user reads at the end.
    assert.match(r.out, /Status Plug 01 is running ESPHome 2025\.5\.0/);
    assert.match(r.out, /read over the encrypted API \(port \d+\) with the key in secrets\.yaml/);
    assert.match(r.out, new RegExp(`MAC ${b.sim.mac.match(/../g)!.join(':')}`));
    assert.match(r.out, /api_encryption_key\s+in .*secrets\.yaml/);
    // The journal holds every step and the facts learned.
    const journal = JSON.parse(fs.readFileSync(path.join(b.out, '.flash', 'status-plug-01.json'), 'utf8'));
    assert.deepEqual(Object.keys(journal.steps).sort(), ['cloudcutter', 'compile', 'config', 'kickstart', 'pins', 'upload', 'verify']);
    assert.equal(journal.facts.kickstartIp, '127.0.0.1');
    assert.match(journal.facts.kickstartSha256, /^[0-9a-f]{64}$/);
    assert.match(journal.facts.uf2Sha256, /^[0-9a-f]{64}$/);
    // No secret anywhere in what was printed.
    const secrets = fs.readFileSync(path.join(b.out, 'secrets.yaml'), 'utf8');
    for (const key of ['wifi_password', 'api_encryption_key', 'ota_password', 'ap_password']) {
      const value = String(secrets.match(new RegExp(`^${key}: (.*)$`, 'm'))?.[1]).replace(/^"|"$/g, '');
      assert.ok(!r.out.includes(value), `${key} leaked`);
    }
  } finally {
    await b.close();
  }
});

test('a UF2 for the other chip is refused before anything is sent to the plug', async () => {
  const b = await startBench({ sim: { phase: 'kickstart-lan' }, fakes: { esphome: { familyOverride: FAMILY_ID.bk7231t } } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'upload', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /BK7231T/);
    // Not --from compile: that would run cloudcutter again on a plug that left its Tuya firmware long ago. The
    // same command again redoes just the compile (it is not done) and what follows it.
    assert.match(r.out, /then run it again: npx tsx flash\.ts recipes\/23A\.yaml --out /);
    assert.doesNotMatch(r.out, /--from compile/);
    assert.deepEqual(b.sim.uploads, [], 'nothing reached the plug');
  } finally {
    await b.close();
  }
});

test('"Update Failed:" from the plug is reported with what it means', async () => {
  const b = await startBench({ sim: { phase: 'kickstart-lan', faults: { updateFails: 'Bad Family ID' } } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'upload', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /the plug refused the firmware: Bad Family ID \(the UF2 is for another chip/);
    assert.equal(b.sim.phase, 'kickstart-lan', 'the plug keeps Kickstart');
  } finally {
    await b.close();
  }
});

test('an upload whose connection drops midway is retried and succeeds', async () => {
  const b = await startBench({ sim: { phase: 'kickstart-lan', faults: { dropUploadAfterBytes: 50_000 } } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'upload', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /retry|again/i);
    assert.equal(b.sim.uploads.at(-1)?.result, 'Update Successful!');
    await b.sim.waitForPhase('final', 5000);
  } finally {
    await b.close();
  }
});

test('a device that never comes back after the upload: a clear timeout that says what to check', async () => {
  const b = await startBench({ sim: { phase: 'kickstart-lan', faults: { neverReboot: true } }, env: { FLASH_VERIFY_TIMEOUT_MS: '1500' }, uniqueName: true });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--from', 'upload', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /✓ Kickstart took the firmware/);
    assert.match(r.out, new RegExp(`verify failed: ${b.name} did not answer within 1\\.5 s \\(at 127\\.0\\.0\\.1\\)`));
    assert.match(r.out, /power-cycle it/);
    assert.match(r.out, /npx tsx flash\.ts recipes\/23A\.yaml --only verify --device-ip IP --out /);
  } finally {
    await b.close();
  }
});

test('a compile error shows the lines of the log that say what is wrong', async () => {
  const b = await startBench({ fakes: { esphome: { fail: true } } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'compile'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /compile failed/);
    assert.match(r.out, /ERROR|error:/);
    assert.match(r.out, /log: .*compile-.*\.log/);
  } finally {
    await b.close();
  }
});

test('a plug already on ESPHome gets the update through `esphome upload --device IP`, not Kickstart', async () => {
  const b = await startBench({ sim: { phase: 'final', final: { name: 'status-plug-01', board: 'generic-bk7231n-qfn32-tuya' } } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'upload', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    const uploads = b.world.calls('esphome').filter((c) => c.argv[0] === 'upload');
    assert.deepEqual(uploads.map((c) => c.argv), [['upload', path.join(b.out, 'status-plug-01.yaml'), '--device', '127.0.0.1']]);
    assert.deepEqual(b.sim.uploads, [], 'nothing went to a Kickstart /update');
    assert.match(r.out, /uploaded with esphome upload/);
  } finally {
    await b.close();
  }
});

test('a compile that never ends is stopped at FLASH_COMPILE_TIMEOUT_MS with what to look at', async () => {
  const b = await startBench({ fakes: { esphome: { delayMs: 60_000 } }, env: { FLASH_COMPILE_TIMEOUT_MS: '800' } });
  try {
    await configured(b);
    const started = Date.now();
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'compile'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.ok(Date.now() - started < 10_000, 'it did not wait for the compile');
    assert.match(r.out, /esphome compile was still running after 0\.8 s, so it was stopped/);
    assert.match(r.out, /look at the end of .*compile-.*\.log/);
  } finally {
    await b.close();
  }
});

test('verify: a plug whose firmware has another API key is a failure that says to recompile and upload', async () => {
  const name = `plug-other-key-${process.pid}`;
  const b = await startBench({ sim: { phase: 'final', final: { name, board: 'generic-bk7231n-qfn32-tuya', apiKey: Buffer.alloc(32, 7).toString('base64') } } });
  b.args.push('--set', `device_name=${name}`);
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'verify'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /the plug at 127\.0\.0\.1:\d+ refused the api_encryption_key in .*secrets\.yaml \(Handshake failure: Handshake MAC failure\)/);
    assert.match(r.out, /recompile: npx tsx .* --only compile.*, then upload it: npx tsx .* --from upload/);
    assert.doesNotMatch(r.out, /--from compile/);
  } finally {
    await b.close();
  }
});

test('upload: a UF2 built before secrets.yaml last changed (a Wi-Fi corrected since) is built again first', async () => {
  const b = await startBench({ sim: { phase: 'kickstart-lan' } });
  try {
    await configured(b);
    const compiles = () => b.world.calls('esphome').filter((c) => c.argv[0] === 'compile').length;
    const built = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'compile'], b.env, b.user);
    assert.equal(built.code, 0, built.out);
    assert.equal(compiles(), 1);
    // secrets.yaml changed after the build (as when the kickstart step saves a corrected Wi-Fi name).
    const secrets = path.join(b.out, 'secrets.yaml');
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(secrets, later, later);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'upload', '--device-ip', '127.0.0.1'], b.env,
      b.user);
    assert.equal(r.code, 0, r.out);
    assert.equal(compiles(), 2, 'built again with what secrets.yaml says now');
    assert.match(r.out, /Kickstart took the firmware/);
  } finally {
    await b.close();
  }
});
