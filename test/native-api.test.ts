// The simulated plug's encrypted native API against the maintained client Home Assistant-like tools
// use (@2colors/esphome-native-api, the one flash.ts's verify step uses): the right key reads the
// device info, a wrong key fails the handshake as ESPHome does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { startSimPlug } from './sim/plug.ts';
import { readDeviceInfo } from '../flash.ts';

const KEY = crypto.randomBytes(32).toString('base64');
const FINAL = { name: 'status-plug-01', friendlyName: 'Status Plug 01', board: 'generic-bk7231n-qfn32-tuya', apiKey: KEY };

test('the right key: Noise handshake, hello, connect and the device info of the flashed plug', async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'final', final: FINAL, mdnsInterface: false, mac: 'C8478C465A65', finalVersion: '2025.5.2' });
  try {
    const info = await readDeviceInfo('127.0.0.1', sim.apiPort, KEY, 5000);
    assert.ok(!('error' in info), JSON.stringify(info));
    assert.equal(info.name, 'status-plug-01');
    assert.equal(info.friendlyName, 'Status Plug 01');
    assert.equal(info.macAddress, 'C8:47:8C:46:5A:65');
    assert.equal(info.esphomeVersion, '2025.5.2');
    assert.equal(info.model, 'generic-bk7231n-qfn32-tuya');
  } finally {
    await sim.close();
  }
});

test('a wrong key: "Handshake MAC failure" from the device, no device info', async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'final', final: FINAL, mdnsInterface: false });
  try {
    const r = await readDeviceInfo('127.0.0.1', sim.apiPort, crypto.randomBytes(32).toString('base64'), 5000);
    assert.deepEqual(r, { error: 'Handshake failure: Handshake MAC failure' });
  } finally {
    await sim.close();
  }
});

test('a closed port or a plug that is not on its final firmware: an error, never a hang or a throw', async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false });
  try {
    const r = await readDeviceInfo('127.0.0.1', sim.apiPort, KEY, 2000);
    assert.ok('error' in r, JSON.stringify(r));
  } finally {
    await sim.close();
  }
});

test('a plug that goes quiet right after the handshake (its Wi-Fi dropped): an error in time, nothing left to crash ' +
  'the process or keep it alive', async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'final', final: FINAL, mdnsInterface: false });
  // Between flash.ts and the plug: the server's handshake frames get through, then nothing more does.
  const quiet = net.createServer((client) => {
    const plug = net.connect(sim.apiPort, '127.0.0.1');
    client.pipe(plug);
    let pending = Buffer.alloc(0);
    let frames = 0;
    plug.on('data', (d) => {
      pending = Buffer.concat([pending, d]);
      while (frames < 2 && pending.length >= 3 && pending.length >= 3 + pending.readUInt16BE(1)) {
        const size = 3 + pending.readUInt16BE(1);
        client.write(pending.subarray(0, size));
        pending = pending.subarray(size);
        frames++;
      }
    });
    for (const s of [client, plug]) s.on('error', () => {});
    client.on('close', () => plug.destroy());
  });
  await new Promise<void>((r) => quiet.listen(0, '127.0.0.1', r));
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  process.on('unhandledRejection', onRejection);
  try {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const r = await readDeviceInfo('127.0.0.1', (quiet.address() as net.AddressInfo).port, KEY, 500);
    assert.deepEqual(r, { error: 'no answer within 0.5 s' });
    // The client library waits 5 s for the HelloResponse on its own, then reports it: to nobody, harmlessly.
    await new Promise((res) => setTimeout(res, 5500));
    assert.deepEqual(rejections.map(String), []);
    assert.ok(timers() <= before, `${timers() - before} timer(s) left running (a ping every 15 s would keep flash.ts up)`);
  } finally {
    process.off('unhandledRejection', onRejection);
    quiet.close();
    await sim.close();
  }
});
