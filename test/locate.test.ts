// Where the plug is, when mDNS does not say: --device-ip carries a whole flash, the address learned earlier is
// tried on its own, and when nothing answers the user is asked (or told to pass --device-ip). And verify counts
// only the device info read over the encrypted API from a device with the recipe's name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startBench, runInProcess, configured, type Bench, type BenchOptions } from './workbench.ts';
import { parseDeviceAddress } from '../flash.ts';

const RECIPE = 'recipes/23A.yaml';
const KEY = crypto.randomBytes(32).toString('base64');

let plugs = 0;

/**
 * A plug already on its final firmware (no mDNS), built with KEY, and a config dir whose secrets.yaml has KEY. Its
 * name is its own: tests share loopback mDNS, and another test's status-plug-01 must not answer for this one.
 */
async function flashedPlug(o: { name?: string; faults?: NonNullable<BenchOptions['sim']>['faults'];
  answers?: BenchOptions['answers'] } = {}): Promise<Bench> {
  const name = `locate-${process.pid}-${++plugs}`;
  const b = await startBench({ answers: o.answers, sim: { phase: 'final', mdnsInterface: false, faults: o.faults,
    final: { name: o.name ?? name, board: 'generic-bk7231n-qfn32-tuya', apiKey: KEY } },
  env: { FLASH_VERIFY_TIMEOUT_MS: '3000', FLASH_API_TIMEOUT_MS: '1500' } });
  b.args.push('--set', `device_name=${name}`);
  b.name = name;
  fs.mkdirSync(b.out, { recursive: true });
  fs.writeFileSync(path.join(b.out, 'secrets.yaml'), `api_encryption_key: "${KEY}"\n`, { mode: 0o600 });
  await configured(b);
  return b;
}

test('mDNS off end to end: --device-ip carries a whole flash; later, the address it had is enough', async () => {
  const b = await startBench({ sim: { mdnsInterface: false } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /using --device-ip 127\.0\.0\.1/);
    assert.match(r.out, /Status Plug 01 is running ESPHome/);
    assert.match(r.out, /IP 127\.0\.0\.1 \(--device-ip\)/);
    assert.equal(b.sim.phase, 'final');
    // Another day, no mDNS and no --device-ip: the plug keeps its MAC, so DHCP gives it the same lease.
    const again = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'verify'], b.env, b.user);
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /IP 127\.0\.0\.1 \(the address it had\)/);
  } finally {
    await b.close();
  }
});

test('an API that accepts the connection and never speaks is a failure, not a "done"', async () => {
  const b = await flashedPlug({ faults: { apiSilent: true } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'verify', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /✗ verify failed: the plug at 127\.0\.0\.1:\d+ did not give its device info over the API \(no answer within 1\.5 s\)/);
    assert.match(r.out, /power-cycle the plug and retry: .*--only verify .*--device-ip 127\.0\.0\.1/);
    assert.match(r.out, new RegExp(`esphome logs .*${b.name}\\.yaml --device 127\\.0\\.0\\.1`));
    assert.doesNotMatch(r.out, /done/);
  } finally {
    await b.close();
  }
});

test('an API that closes at once is a failure too', async () => {
  const b = await flashedPlug({ faults: { apiClosesOnAccept: true } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'verify', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /✗ verify failed: the plug at 127\.0\.0\.1:\d+ did not give its device info/);
  } finally {
    await b.close();
  }
});

test("another device's name at the address is not this plug", async () => {
  const b = await flashedPlug({ name: 'kitchen-plug' });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'verify', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, new RegExp(`the device at 127\\.0\\.0\\.1:\\d+ is "kitchen-plug", not ${b.name}`));
  } finally {
    await b.close();
  }
});

test('nothing answers: with --yes the error names --device-ip; with a person there, the address is asked for', async () => {
  const b = await flashedPlug({ answers: { device_ip: '127.0.0.1' } });
  try {
    const unattended = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'verify'], b.env, b.user);
    assert.equal(unattended.code, 1, unattended.out);
    assert.match(unattended.out, new RegExp(`${b.name} did not answer within 3 s \\(not on mDNS\\)`));
    assert.match(unattended.out, /give its address: .*--only verify --device-ip IP/);

    const asked = await runInProcess([RECIPE, ...b.args, '--only', 'verify'], b.env, b.user);
    assert.equal(asked.code, 0, asked.out);
    assert.deepEqual(b.user.asked.map((q) => q.id), ['device_ip']);
    assert.match(asked.out, /IP 127\.0\.0\.1 \(as you said\)/);
  } finally {
    await b.close();
  }
});

test('--device-ip is checked as an address, with an optional web port', () => {
  assert.deepEqual(parseDeviceAddress('192.168.1.57'), { host: '192.168.1.57', port: undefined });
  assert.deepEqual(parseDeviceAddress('192.168.1.57:8080'), { host: '192.168.1.57', port: 8080 });
  assert.deepEqual(parseDeviceAddress('plug.lan'), { host: 'plug.lan', port: undefined });
  for (const bad of ['192.168.1.300', '192.168.1', 'plug lan', 'http://1.2.3.4', '1.2.3.4:99999', ''])
    assert.equal(parseDeviceAddress(bad), undefined, bad);
});
