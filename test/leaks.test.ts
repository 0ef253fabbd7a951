// Secrets stay secret and hostile strings stay strings, over a whole simulated run: no secret value
// in anything printed, logged or put on a command line; quotes, $(…), ; and newlines in a
// friendly_name or a Wi-Fi password reach the YAML and the plug intact and run nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { startBench, runInProcess } from './workbench.ts';
import { listFiles } from './helpers.ts';

const RECIPE = 'recipes/23A.yaml';

test('a full run with the pin check: no secret in stdout/stderr, any log, the journal or any command line; secrets.yaml stays 0600', async () => {
  const b = await startBench();
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--check-pins', '--backup-flash'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    const secretsFile = path.join(b.out, 'secrets.yaml');
    assert.equal(fs.statSync(secretsFile).mode & 0o777, 0o600);
    const secrets = YAML.parse(fs.readFileSync(secretsFile, 'utf8')) as Record<string, string>;
    const values = ['wifi_password', 'api_encryption_key', 'ota_password', 'ap_password'].map((k) => [k, String(secrets[k])]);
    const haystacks: [string, string][] = [
      ['output', r.out],
      ...listFiles(path.join(b.out, '.flash')).filter((f) => !f.endsWith('.bin')).map((f): [string, string] => [f, fs.readFileSync(path.join(b.out, '.flash', f), 'utf8')]),
      ['command lines', JSON.stringify(b.world.calls())],
    ];
    assert.ok(haystacks.some(([f]) => f.startsWith('logs/cloudcutter-')) && haystacks.some(([f]) => f.startsWith('logs/compile-')), 'the logs were scanned');
    for (const [key, value] of values)
      for (const form of new Set([value, encodeURIComponent(value), value.replace(/ /g, '+')]))
        for (const [where, text] of haystacks) assert.ok(!text.includes(form), `${key} appears in ${where}`);
  } finally {
    await b.close();
  }
});

test('quotes, $(…), backticks, ; and newlines in friendly_name and the Wi-Fi password arrive intact and run nothing', async () => {
  // Short enough to be a WPA password (8–63 characters), as real ESPHome insists.
  const canary = path.join(os.tmpdir(), `fp${process.pid}`);
  const password = `p"a's$(touch ${canary})\`touch ${canary}\`;x\nline2`;
  assert.ok(password.length <= 63, `${password.length} characters`);
  const friendly = `Kid's "Lamp" $(touch ${canary}); \`id\``;
  const b = await startBench({ env: { FLASH_WIFI_PASSWORD: password }, sim: { homeNetwork: { ssid: 'HomeNet', password } } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--set', `friendly_name=${friendly}`], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.ok(!fs.existsSync(canary), 'something ran a command from the input');
    // The YAML flash.ts wrote reads back as the exact strings.
    assert.equal(YAML.parse(fs.readFileSync(path.join(b.out, 'secrets.yaml'), 'utf8')).wifi_password, password);
    assert.equal(YAML.parse(fs.readFileSync(path.join(b.out, 'status-plug-01.yaml'), 'utf8')).substitutions.friendly_name, friendly);
    // The plug got the exact password, and ESPHome (the fake reads the YAML as ESPHome does) the exact name.
    assert.deepEqual(b.sim.wifi, { ssid: 'HomeNet', psk: password });
    assert.equal(b.sim.final?.friendlyName, friendly);
    // It never went on a command line, in any form.
    assert.ok(!JSON.stringify(b.world.calls()).includes('touch'), 'no part of the password or name reached a command line');
    assert.ok(!r.out.includes(password) && !r.out.includes('line2'), 'the password is not printed');
  } finally {
    fs.rmSync(canary, { force: true });
    await b.close();
  }
});
