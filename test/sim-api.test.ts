// The simulated plug's native API against what ESPHome's own frame helpers and api_connection do: the Noise
// prologue, each handshake refusal in ESPHome's words, the message-order rules per ESPHome version, keepalive,
// a silent or closing API, Kickstart's plaintext API; and the npm client flash.ts uses, end to end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startSimPlug, type SimPlug, type SimPlugOptions } from './sim/plug.ts';
import { Conn, MSG, decode, noiseFrame, noiseSession, proto, PlainSession } from './api-client.ts';

const KEY = crypto.randomBytes(32);
const FINAL = {
  name: 'status-plug-01', friendlyName: 'Status Plug 01', board: 'generic-bk7231n-qfn32-tuya',
  apiKey: KEY.toString('base64'),
};
const MAC = 'C8478C465A65';

async function withFinal(o: Partial<SimPlugOptions>, fn: (sim: SimPlug) => Promise<void>): Promise<void> {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'final', final: FINAL, mdnsInterface: false, mac: MAC,
    ...o });
  try {
    await fn(sim);
  } finally {
    await sim.close();
  }
}

/** The npm client flash.ts uses (@2colors/esphome-native-api), reading the device info; never throws. */
async function clientDeviceInfo(port: number, key: Buffer, timeout = 3000): Promise<Record<string, unknown>> {
  const { Client } = await import('@2colors/esphome-native-api');
  const client = new Client({ host: '127.0.0.1', port, encryptionKey: key.toString('base64'), reconnect: false,
    initializeListEntities: false, initializeSubscribeStates: false }) as unknown as {
    connect(): void; disconnect(): void; on(event: string, listener: (arg: never) => void): void };
  return new Promise((resolve) => {
    const done = (r: Record<string, unknown>) => {
      clearTimeout(timer);
      try {
        client.disconnect();
      } catch {}
      resolve(r);
    };
    const timer = setTimeout(() => done({ error: 'timeout' }), timeout);
    client.on('deviceInfo', (i: Record<string, unknown>) => done(i));
    client.on('error', (e: Error) => done({ error: e.message }));
    client.connect();
  });
}

/** The explicit reject ESPHome sends: a Noise frame of 0x01 + the reason; then the connection closes. */
async function rejectOf(conn: Conn): Promise<string> {
  const f = await conn.noiseFrame();
  assert.ok(f, 'an explicit reject frame');
  assert.equal(f[0], 0x01, 'failure flag');
  const { closed } = await conn.rest(1000);
  assert.ok(closed, 'the device closed the connection');
  return f.subarray(1).toString();
}

test('the npm client flash.ts uses reads DeviceInfo with the right key, by IP, from 2025.5 to 2026.1', async () => {
  for (const finalVersion of ['2025.5.2', '2025.8.0', '2025.10.1', '2026.1.3']) {
    await withFinal({ finalVersion }, async (sim) => {
      const info = await clientDeviceInfo(sim.apiPort, KEY);
      assert.equal(info.error, undefined, `${finalVersion}: ${JSON.stringify(info)}`);
      assert.equal(info.name, 'status-plug-01');
      assert.equal(info.friendlyName, 'Status Plug 01');
      assert.equal(info.macAddress, 'C8:47:8C:46:5A:65');
      assert.equal(info.esphomeVersion, finalVersion);
      assert.equal(info.model, 'generic-bk7231n-qfn32-tuya');
    });
  }
  await withFinal({}, async (sim) => {
    const wrong = await clientDeviceInfo(sim.apiPort, crypto.randomBytes(32));
    assert.deepEqual(wrong, { error: 'Handshake failure: Handshake MAC failure' });
  });
});

test('Noise: prologue "NoiseAPIInit" + the client hello (length, bytes); server hello: name and MAC', async () => {
  await withFinal({}, async (sim) => {
    const plain = await noiseSession(sim.apiPort, KEY);
    assert.deepEqual(plain.serverHello, Buffer.from(`\x01status-plug-01\0${MAC.toLowerCase()}\0`, 'latin1'));
    assert.ok(plain.session, 'an empty hello and "NoiseAPIInit\\0\\0" is what every client sends');
    plain.conn.end();

    const hello = Buffer.from('flags?');
    const good = await noiseSession(sim.apiPort, KEY, { hello });
    assert.ok(good.session, 'a hello with bytes works when both sides hash it into the prologue');
    good.conn.end();

    const bad = await noiseSession(sim.apiPort, KEY, { hello, prologue: Buffer.from('NoiseAPIInit\0\0') });
    assert.equal(bad.reply?.[0], 0x01);
    assert.equal(bad.reply?.subarray(1).toString(), 'Handshake MAC failure');
    assert.ok((await bad.conn.rest(1000)).closed);
  });
});

test('Noise handshake refusals in ESPHome\'s words, each followed by a closed connection', async () => {
  await withFinal({}, async (sim) => {
    const afterHello = async (handshake: Buffer) => {
      const c = await Conn.open(sim.apiPort);
      c.write(noiseFrame([]));
      assert.ok(await c.noiseFrame(), 'server hello');
      c.write(noiseFrame(handshake));
      return rejectOf(c);
    };
    assert.equal(await afterHello(Buffer.alloc(0)), 'Empty handshake message');
    assert.equal(await afterHello(Buffer.from([0x01, ...crypto.randomBytes(48)])), 'Bad handshake error byte');
    const short = (n: number) => afterHello(Buffer.from([0x00, ...crypto.randomBytes(n)]));
    assert.equal(await short(10), 'Handshake error', 'shorter than the key');
    assert.equal(await short(40), 'Handshake error', 'no room for the MAC');
    assert.equal(await afterHello(Buffer.from([0x00, ...crypto.randomBytes(48)])), 'Handshake MAC failure');
    assert.equal(await afterHello(Buffer.from([0x00, ...crypto.randomBytes(128)])), 'Bad handshake packet len');

    const big = await Conn.open(sim.apiPort);
    big.write(noiseFrame(Buffer.alloc(129)));
    assert.equal(await rejectOf(big), 'Bad handshake packet len', 'the client hello is a handshake frame too');
    const exact = await Conn.open(sim.apiPort);
    exact.write(noiseFrame(Buffer.alloc(128)));
    assert.ok((await exact.noiseFrame())?.toString().startsWith('\x01status-plug-01'), '128 bytes are still accepted');
    exact.end();

    const plaintext = await Conn.open(sim.apiPort);
    plaintext.write(Buffer.from([0x00, 0x00, 0x01]));
    assert.equal(await rejectOf(plaintext), 'Bad indicator byte');
  });
});

test('after the handshake a frame that does not decrypt closes the connection without a word', async () => {
  await withFinal({}, async (sim) => {
    const a = await noiseSession(sim.apiPort, KEY);
    a.conn.write(noiseFrame(crypto.randomBytes(40)));
    assert.deepEqual(await a.conn.rest(1000), { bytes: Buffer.alloc(0), closed: true });
    const b = await noiseSession(sim.apiPort, KEY);
    b.conn.write([0x00, 0x00, 0x00]);
    const rest = await b.conn.rest(1000);
    assert.deepEqual(rest, { bytes: Buffer.alloc(0), closed: true }, 'a bad indicator in the data phase');
  });
});

test('2025.5 message order: DeviceInfo needs Hello, entities need ConnectRequest with the right password', async () => {
  await withFinal({ finalVersion: '2025.5.0' }, async (sim) => {
    const early = (await noiseSession(sim.apiPort, KEY)).session!;
    early.msg(MSG.DeviceInfoRequest);
    assert.equal(await early.next(), null, 'DeviceInfo before Hello: closed');
    assert.ok(early.conn.closed);

    const s = (await noiseSession(sim.apiPort, KEY)).session!;
    s.msg(MSG.PingRequest);
    assert.equal((await s.next())?.type, MSG.PingResponse, 'a ping needs nothing first');
    s.msg(MSG.HelloRequest, proto([[1, 'test'], [2, 1], [3, 10]]));
    const hello = await s.next();
    assert.equal(hello?.type, MSG.HelloResponse);
    const expected = { 1: 1, 2: 10, 3: 'status-plug-01 (esphome v2025.5.0)', 4: 'status-plug-01' };
    assert.deepEqual(decode(hello!.body), expected);
    s.msg(MSG.DeviceInfoRequest);
    const info = await s.next();
    assert.equal(info?.type, MSG.DeviceInfoResponse, 'DeviceInfo needs only Hello');
    assert.equal(decode(info!.body)[2], 'status-plug-01');
    s.msg(MSG.ListEntitiesRequest);
    assert.equal(await s.next(), null, 'ListEntities before ConnectRequest: closed');

    const wrong = (await noiseSession(sim.apiPort, KEY)).session!;
    wrong.msg(MSG.HelloRequest);
    await wrong.next();
    wrong.msg(MSG.ConnectRequest, proto([[1, 'guess']]));
    const refused = await wrong.next();
    assert.equal(refused?.type, MSG.ConnectResponse);
    assert.deepEqual(decode(refused!.body), { 1: 1 }, '2025.5 compares strictly: no password set accepts only ""');
    wrong.msg(MSG.SubscribeStatesRequest);
    assert.equal(await wrong.next(), null, 'still unauthenticated: closed');

    const ok = (await noiseSession(sim.apiPort, KEY)).session!;
    ok.msg(MSG.HelloRequest);
    await ok.next();
    ok.msg(MSG.ConnectRequest);
    assert.deepEqual(decode((await ok.next())!.body), {}, 'invalid_password false');
    ok.msg(MSG.ListEntitiesRequest);
    assert.equal((await ok.next())?.type, MSG.ListEntitiesDoneResponse);
    ok.msg(MSG.DisconnectRequest);
    assert.equal((await ok.next())?.type, MSG.DisconnectResponse);
    assert.ok((await ok.conn.rest(1000)).closed);
  });
  await withFinal({ finalVersion: '2025.5.0', final: { ...FINAL, apiPassword: 'letmein' } }, async (sim) => {
    const s = (await noiseSession(sim.apiPort, KEY)).session!;
    s.msg(MSG.HelloRequest);
    await s.next();
    s.msg(MSG.ConnectRequest, proto([[1, 'letmein']]));
    assert.deepEqual(decode((await s.next())!.body), {});
    s.msg(MSG.DeviceInfoRequest);
    assert.equal(decode((await s.next())!.body)[1], 1, 'uses_password');
    s.conn.end();
  });
});

test('newer ESPHome: Hello authenticates (2025.8+), ConnectRequest is not answered (2025.10+, 2026.1)', async () => {
  const run = async (v: string, expect: { minor: number; serverInfo: string; connectAnswered: boolean }) => {
    await withFinal({ finalVersion: v }, async (sim) => {
      const s = (await noiseSession(sim.apiPort, KEY)).session!;
      s.msg(MSG.HelloRequest);
      const h = decode((await s.next())!.body);
      assert.deepEqual([h[1], h[2], h[3]], [1, expect.minor, expect.serverInfo], v);
      s.msg(MSG.ListEntitiesRequest);
      assert.equal((await s.next())?.type, MSG.ListEntitiesDoneResponse, `${v}: no ConnectRequest needed`);
      s.msg(MSG.ConnectRequest);
      s.msg(MSG.PingRequest);
      const next = await s.next();
      assert.equal(next?.type, expect.connectAnswered ? MSG.ConnectResponse : MSG.PingResponse, v);
      s.conn.end();
    });
  };
  await run('2025.8.0', { minor: 12, serverInfo: 'status-plug-01 (esphome v2025.8.0)', connectAnswered: true });
  await run('2025.10.1', { minor: 12, serverInfo: '2025.10.1', connectAnswered: false });
  await run('2026.1.0', { minor: 14, serverInfo: '2026.1.0', connectAnswered: false });
});

test('keepalive: the device pings an idle client and drops one that never answers', async () => {
  await withFinal({ apiKeepaliveMs: 150 }, async (sim) => {
    const s = (await noiseSession(sim.apiPort, KEY)).session!;
    s.msg(MSG.HelloRequest);
    await s.next();
    const ping = await s.next(1000);
    assert.equal(ping?.type, MSG.PingRequest);
    s.msg(MSG.PingResponse);
    assert.equal((await s.next(1000))?.type, MSG.PingRequest, 'an answered ping keeps the connection');
    const t = Date.now();
    assert.equal(await s.next(2000), null);
    const waited = Date.now() - t;
    assert.ok(s.conn.closed, 'dropped');
    assert.ok(waited >= 150 && waited < 1500, `dropped after 2.5 keepalives of silence (${waited} ms after the ping)`);
  });
});

test('faults: an API that accepts and never speaks; one that closes right after accept', async () => {
  await withFinal({ faults: { apiSilent: true } }, async (sim) => {
    const c = await Conn.open(sim.apiPort);
    c.write(noiseFrame([]));
    assert.deepEqual(await c.rest(500), { bytes: Buffer.alloc(0), closed: false }, 'connected, and not a byte back');
    c.end();
    assert.deepEqual(await clientDeviceInfo(sim.apiPort, KEY, 800), { error: 'timeout' });
  });
  await withFinal({ faults: { apiClosesOnAccept: true } }, async (sim) => {
    const c = await Conn.open(sim.apiPort);
    assert.deepEqual(await c.rest(1000), { bytes: Buffer.alloc(0), closed: true });
    const r = await clientDeviceInfo(sim.apiPort, KEY, 800);
    assert.ok(r.error, JSON.stringify(r));
  });
});

test('Kickstart: plaintext API on the same port (AP, LAN, by IP); Noise gets "Bad indicator byte"', async () => {
  for (const phase of ['kickstart-ap', 'kickstart-lan'] as const) {
    const sim = await startSimPlug({ mcu: 'bk7231t', phase, mdnsInterface: false, mac: MAC });
    try {
      const p = await PlainSession.open(sim.apiPort);
      p.msg(MSG.HelloRequest, proto([[1, 'test']]));
      const hello = { 1: 1, 2: 10, 3: 'kickstart-bk7231t (esphome v2025.5.0)', 4: 'kickstart-bk7231t' };
      assert.deepEqual(decode((await p.next())!.body), hello);
      p.msg(MSG.ConnectRequest);
      assert.deepEqual(decode((await p.next())!.body), {});
      p.msg(MSG.DeviceInfoRequest);
      const info = decode((await p.next())!.body);
      assert.deepEqual([info[2], info[3], info[4], info[6]],
        ['kickstart-bk7231t', 'C8:47:8C:46:5A:65', '2025.5.0', 'generic-bk7231t-qfn32-tuya']);
      p.conn.end();

      const n = await Conn.open(sim.apiPort);
      n.write(noiseFrame([]));
      const { bytes, closed } = await n.rest(1000);
      assert.deepEqual([bytes.toString('latin1'), closed], ['\x00Bad indicator byte', true]);
      const r = await clientDeviceInfo(sim.apiPort, KEY, 1500);
      assert.ok(r.error, `the Noise client fails on a plaintext device: ${JSON.stringify(r)}`);
    } finally {
      await sim.close();
    }
  }
});
