// The simulated plug, exercised from the outside the way flash.ts talks to a real one: HTTP on 127.0.0.1,
// multicast DNS on the loopback interface, Server-Sent Events, multipart web OTA.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import makeMdns from 'multicast-dns';
import {
  startSimPlug, wiringFromTuya, PIN_OPTIONS, FLASH_SIZE, type SimPlug, type SimPlugOptions, type Wiring,
} from './sim/plug.ts';
import { makeUF2, makeUG, FAMILY_ID } from './firmware-files.ts';
import { ROOT, TSX } from './helpers.ts';
import { MSG, PlainSession, decode, noiseSession } from './api-client.ts';

const HOME = { ssid: 'HomeNet', password: 'correct horse' };
const FAST = { joinMs: 40, rebootMs: 60, bootMs: 20 } satisfies Partial<SimPlugOptions>;
const FINAL_JSON = { name: 'status-plug-01', friendly_name: 'Status Plug 01', board: 'generic-bk7231n-qfn32-tuya' };

interface Res { status: number; headers: http.IncomingHttpHeaders; body: Buffer; text: string }

/** One HTTP request on its own connection (no keep-alive pool that could outlive the test). */
function req(method: string, url: string, opts: { headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const r = http.request(url, { method, agent: false, headers: opts.headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        const body = Buffer.concat(parts);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') });
      });
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(opts.body);
  });
}

/** A connection the plug cuts (nothing listening / rebooting): resolves with the error code. */
async function refused(method: string, url: string, body?: Buffer): Promise<string> {
  try {
    const r = await req(method, url, body ? { body, headers: { 'Content-Length': String(body.length) } } : {});
    return `answered ${r.status}`;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

function multipart(file: Buffer, field = 'update', filename = 'firmware.uf2'): { body: Buffer; headers: Record<string, string> } {
  const boundary = '----flashts' + Math.random().toString(16).slice(2);
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}`, 'Content-Length': String(body.length) } };
}

const upload = (sim: SimPlug, file: Buffer, field?: string) => {
  const m = multipart(file, field);
  return req('POST', `${sim.url}/update`, m);
};

const finalUf2 = (mcu: 'bk7231t' | 'bk7231n' = 'bk7231n', info: object = FINAL_JSON) =>
  makeUF2({ familyId: FAMILY_ID[mcu], payload: Buffer.from(JSON.stringify(info)), minBlocks: 40 });

interface SseEvent { event: string; data: string; id?: string; retry?: string }

/** Subscribes to /events and parses frames (blank-line separated, CRLF or LF). */
function openEvents(url: string): Promise<{ events: SseEvent[]; raw: () => string; waitFor: (pred: (e: SseEvent) => boolean, ms?: number) => Promise<SseEvent>; close: () => void }> {
  return new Promise((resolve, reject) => {
    const events: SseEvent[] = [];
    const waiters: { pred: (e: SseEvent) => boolean; done: (e: SseEvent) => void }[] = [];
    let raw = '';
    let buf = '';
    const r = http.get(url, { agent: false }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        raw += d;
        buf += d;
        let m: RegExpExecArray | null;
        while ((m = /\r?\n\r?\n/.exec(buf))) {
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          const e: SseEvent = { event: 'message', data: '' };
          const data: string[] = [];
          for (const line of block.split(/\r?\n/)) {
            const c = line.indexOf(':');
            const k = line.slice(0, c);
            const v = line.slice(c + 1).replace(/^ /, '');
            if (k === 'data') data.push(v);
            else if (k === 'event') e.event = v;
            else if (k === 'id') e.id = v;
            else if (k === 'retry') e.retry = v;
          }
          e.data = data.join('\n');
          events.push(e);
          for (const w of [...waiters]) if (w.pred(e)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.done(e);
          }
        }
      });
      res.on('error', () => {});
      resolve({
        events,
        raw: () => raw,
        waitFor: (pred, ms = 2000) => {
          const seen = events.find(pred);
          if (seen) return Promise.resolve(seen);
          return new Promise((res2, rej2) => {
            const t = setTimeout(() => rej2(new Error(`no matching event in ${ms} ms; got ${JSON.stringify(events.slice(-5))}`)), ms);
            waiters.push({ pred, done: (e) => { clearTimeout(t); res2(e); } });
          });
        },
        close: () => r.destroy(),
      });
    });
    r.on('error', reject);
  });
}

interface Found { instance: string; type: string; host?: string; port?: number; txt: Record<string, string>; addresses: string[] }

/** Browses a service type with a separate multicast-dns client on the loopback interface (the sim's mDNS port). */
async function browse(sim: SimPlug, type: string, match: (f: Found) => boolean, timeoutMs = 3000):
  Promise<Found | undefined> {
  const mdns = makeMdns({ interface: '127.0.0.1', bind: '0.0.0.0', port: sim.mdnsPort, loopback: true, reuseAddr: true });
  const found = new Map<string, Found>();
  const hosts = new Map<string, string[]>();
  try {
    return await new Promise<Found | undefined>((resolve) => {
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      const again = setInterval(() => mdns.query(type, 'PTR'), 500);
      function finish(f: Found | undefined) {
        clearTimeout(timer);
        clearInterval(again);
        resolve(f);
      }
      mdns.on('response', (p) => {
        const rrs = [...p.answers, ...(p.additionals ?? [])];
        for (const rr of rrs) {
          if (rr.type === 'A') hosts.set(rr.name, [...new Set([...(hosts.get(rr.name) ?? []), rr.data as string])]);
          if (rr.type === 'PTR' && rr.name === type) {
            const fqdn = rr.data as string;
            if (!found.has(fqdn)) found.set(fqdn, { instance: fqdn.slice(0, -(type.length + 1)), type, txt: {}, addresses: [] });
          }
        }
        for (const rr of rrs) {
          const f = found.get(rr.name);
          if (!f) continue;
          if (rr.type === 'SRV') {
            const d = rr.data as { port: number; target: string };
            f.port = d.port;
            f.host = d.target;
          }
          if (rr.type === 'TXT') {
            for (const b of rr.data as Buffer[]) {
              const s = b.toString();
              const eq = s.indexOf('=');
              if (eq > 0) f.txt[s.slice(0, eq)] = s.slice(eq + 1);
            }
          }
        }
        for (const f of found.values()) {
          if (f.host) f.addresses = hosts.get(f.host) ?? [];
          if (f.host && f.addresses.length && match(f)) return finish(f);
        }
      });
      mdns.on('ready', () => mdns.query(type, 'PTR'));
    });
  } finally {
    await new Promise<void>((r) => mdns.destroy(() => r()));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withSim(opts: SimPlugOptions, fn: (sim: SimPlug) => Promise<void>): Promise<void> {
  const sim = await startSimPlug({ ...FAST, ...opts });
  try {
    await fn(sim);
  } finally {
    await sim.close();
  }
}

const select = (sim: SimPlug, id: string, option: string) => req('POST', `${sim.url}/select/${id}/set?option=${encodeURIComponent(option)}`);
const pinOption = (pin: string) => PIN_OPTIONS.find((o) => o.split(' / ')[0] === pin)!;
const getJson = async (url: string) => JSON.parse((await req('GET', url)).text) as Record<string, unknown>;

// ---------------------------------------------------------------------------------------------------------------

test('tuya: stock firmware: 404s, no mDNS; flash-kickstart reboots it: Kickstart\'s AP after 15–30 s', async () => {
  const scale = 0.01;
  await withSim({ mcu: 'bk7231n', timeScale: scale }, async (sim) => {
    assert.equal(sim.phase, 'tuya');
    assert.equal((await req('GET', `${sim.url}/config.json`)).status, 404);
    assert.equal((await req('GET', `${sim.url}/select/-__pin`)).status, 404);
    const state = await getJson(`${sim.url}/_sim/state`);
    assert.equal(state.phase, 'tuya');
    assert.equal(state.mac, sim.mac);
    assert.match(sim.mac, /^[0-9A-F]{12}$/);
    const t0 = Date.now();
    const r = await req('POST', `${sim.url}/_sim/flash-kickstart`);
    assert.equal(r.status, 200);
    assert.equal(sim.phase, 'off', 'writing the file and rebooting');
    assert.equal((await req('GET', `${sim.url}/_sim/state`)).text.includes('psk'), false);
    await sim.waitForPhase('kickstart-ap', 2000);
    const took = Date.now() - t0;
    assert.ok(took >= 15000 * scale && took < 30000 * scale + 500, `Kickstart's AP came after ${took} ms`);
    assert.equal((await req('GET', `${sim.url}/config.json`)).status, 200);
    const air = (await getJson(`${sim.url}/_sim/state`)).air as { ssid: string; to: number | null }[];
    assert.deepEqual(air.map((a) => [a.ssid, a.to]), [['kickstart-bk7231n', null]]);
  });
});

test('tuya AP mode is a human act: it takes time, the exploit ends it, next "A-XXXX"; tuyaMac vs mac', async () => {
  const scale = 0.01;
  const opts: SimPlugOptions = {
    mcu: 'bk7231t', timeScale: scale, mac: 'C8478C0A1B2C', tuyaMac: 'D81F12AABBCC', mdnsInterface: false,
  };
  await withSim(opts, async (sim) => {
    const state = async () => getJson(`${sim.url}/_sim/state`);
    assert.deepEqual([sim.tuyaAp, (await state()).tuyaAp, (await state()).tuyaMac], [null, null, 'D81F12AABBCC']);
    assert.equal((await req('POST', `${sim.url}/_sim/exploit`)).status, 409, 'no AP, nothing to exploit');
    const t0 = Date.now();
    const entering = sim.enterApMode();
    assert.equal(sim.tuyaAp, null, 'the power-cycle dance takes a while');
    await entering;
    assert.ok(Date.now() - t0 >= 12000 * scale, `AP mode after ${Date.now() - t0} ms`);
    assert.equal(sim.tuyaAp, 'SmartLife-BBCC');
    assert.equal((await state()).tuyaAp, 'SmartLife-BBCC');
    assert.equal((await req('POST', `${sim.url}/_sim/exploit`, { body: '{}' })).status, 200);
    assert.deepEqual([sim.tuyaAp, (await state()).exploited], [null, true]);
    const t1 = Date.now();
    assert.equal((await req('POST', `${sim.url}/_sim/ap-mode`)).status, 200);
    assert.ok(Date.now() - t1 >= 4000 * scale);
    assert.equal(sim.tuyaAp, 'A-BBCC');
    await req('POST', `${sim.url}/_sim/configure-wifi`, { body: '{"ssid":"cloudcutterflash"}' });
    assert.equal(sim.tuyaAp, null);
    const air = (await state()).air as { ssid: string; bssid: string; from: number; to: number | null }[];
    assert.deepEqual(air.map((a) => a.ssid), ['SmartLife-BBCC', 'A-BBCC']);
    assert.ok(air.every((a) => a.to !== null && a.to >= a.from));
    assert.equal(air[0].bssid, 'D8:1F:12:AA:BB:CD');
    // AP mode again (the keys stay replaced): "A-XXXX" again
    await sim.enterApMode();
    assert.equal(sim.tuyaAp, 'A-BBCC');
    sim.powerCycle();
    assert.equal(sim.tuyaAp, null, 'a plain power cycle ends AP mode');
    // Kickstart reports the chip's MAC, not the one the Tuya firmware announced
    sim.flashKickstart();
    await assert.rejects(sim.enterApMode(), /only the stock Tuya firmware/);
    await sim.waitForPhase('kickstart-ap', 2000);
    assert.match((await req('GET', `${sim.url}/config.json`)).text, /"mac":"C8:47:8C:0A:1B:2C"/);
  });
  await withSim({ mcu: 'bk7231n', timeScale: 0.001, mdnsInterface: false }, async (sim) => {
    // cloudcutter does not touch the TLV area where the MAC lives (its maintainer in upstream #653)
    assert.equal(sim.tuyaMac, sim.mac, "by default the Tuya MAC is the chip's");
    await sim.enterApMode();
    await req('POST', `${sim.url}/_sim/exploit`, { body: '{"ok":false}' });
    await sim.enterApMode();
    assert.match(sim.tuyaAp!, /^SmartLife-[0-9A-F]{4}$/, 'a failed exploit: still the stock name');
  });
});

test('captive portal: /config.json printed like the real one, /wifisave is GET-only and redirects, a wrong password never joins', async () => {
  const networks = [{ ssid: 'HomeNet', rssi: -50, lock: true }, { ssid: 'Open Cafe', rssi: -80, lock: false }];
  const mac = `0A1B2C${Math.floor(Math.random() * 0xffffff).toString(16).toUpperCase().padStart(6, '0')}`; // unique: other sims may share the loopback "LAN"
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-ap', mac: mac.toLowerCase(), visibleNetworks: networks, homeNetwork: HOME }, async (sim) => {
    assert.equal(sim.mac, mac);
    const cfg = await req('GET', `${sim.url}/config.json`);
    assert.equal(cfg.status, 200);
    assert.equal(cfg.headers['content-type'], 'application/json');
    const pretty = mac.match(/../g)!.join(':');
    assert.equal(cfg.text, `{"mac":"${pretty}","name":"kickstart-bk7231n","aps":[{},{"ssid":"HomeNet","rssi":-50,"lock":1},{"ssid":"Open Cafe","rssi":-80,"lock":0}]}`);
    // the web server runs on the AP side too
    assert.equal((await getJson(`${sim.url}/select/-__pin`)).state, 'Select PIN');

    const post = await req('POST', `${sim.url}/wifisave?ssid=HomeNet&psk=x`);
    assert.deepEqual([post.status, post.text], [404, 'File not found']);
    assert.equal(sim.wifi, undefined);

    const wrong = await req('GET', `${sim.url}/wifisave?${new URLSearchParams({ ssid: 'HomeNet', psk: 'wrong' })}`);
    assert.equal(wrong.status, 302);
    assert.equal(wrong.headers.location, '/?save');
    assert.deepEqual(sim.wifi, { ssid: 'HomeNet', psk: 'wrong' });
    await sleep(150);
    assert.equal(sim.phase, 'kickstart-ap', 'a wrong password never gets the plug on the LAN');
    assert.equal(await browse(sim, '_esphomelib._tcp.local', (f) => f.txt.mac === sim.mac.toLowerCase(), 300), undefined);

    await req('GET', `${sim.url}/wifisave?${new URLSearchParams({ ssid: HOME.ssid, psk: HOME.password })}`);
    assert.deepEqual(sim.wifi, { ssid: HOME.ssid, psk: HOME.password });
    assert.equal(sim.phase, 'kickstart-ap', 'joining takes joinMs');
    await sim.waitForPhase('kickstart-lan', 2000);
    // the AP and its portal are gone; the web server stays
    assert.deepEqual([(await req('GET', `${sim.url}/config.json`)).status], [404]);
    assert.equal((await getJson(`${sim.url}/text_sensor/ip_address`)).state, '127.0.0.1');
    const state = await req('GET', `${sim.url}/_sim/state`);
    assert.equal(JSON.parse(state.text).wifi.ssid, 'HomeNet');
    assert.ok(!state.text.includes(HOME.password), 'never the psk');
  });
  // SSIDs are printed unescaped, as captive_portal.cpp does: a quote breaks the JSON
  await withSim({ mcu: 'bk7231t', phase: 'kickstart-ap', visibleNetworks: [{ ssid: 'Bob\'s "Guest"', rssi: -60, lock: true }] }, async (sim) => {
    const t = (await req('GET', `${sim.url}/config.json`)).text;
    assert.ok(t.includes('"ssid":"Bob\'s "Guest""'), t);
    assert.throws(() => JSON.parse(t));
    assert.match(t, /"name":"kickstart-bk7231t"/);
  });
});

test('mDNS: Kickstart on the LAN answers PTR _esphomelib._tcp.local with SRV 6053, TXT and A, like ESPHome 2025.5 on LibreTiny', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan' }, async (sim) => {
    const f = await browse(sim, '_esphomelib._tcp.local', (x) => x.txt.mac === sim.mac.toLowerCase());
    assert.ok(f, 'found by a separate multicast-dns client on 127.0.0.1');
    assert.equal(f.instance, 'kickstart-bk7231n');
    assert.equal(f.host, 'kickstart-bk7231n.local');
    assert.equal(f.port, 6053);
    assert.deepEqual(f.addresses, ['127.0.0.1']);
    assert.equal(f.txt.version, '2025.5.0');
    assert.equal(f.txt.platform, 'BK7231N');
    assert.equal(f.txt.board, 'generic-bk7231n-qfn32-tuya');
    assert.equal(f.txt.network, 'wifi');
    assert.equal(f.txt.project_name, 'lt.kickstart');
    assert.equal(f.txt.project_version, '1.0');
    assert.equal(f.txt.api_encryption, undefined);
    assert.equal(f.txt.friendly_name, undefined, 'Kickstart has no friendly_name');
    const http = await browse(sim, '_http._tcp.local', (x) => x.instance === 'kickstart-bk7231n' && x.port === 80);
    assert.ok(http, 'web_server is advertised as _http._tcp');
  });
});

test('mDNS goes quiet mdnsStopsAfterMs after boot (BK72xx); an API client keeps it up; a reboot wakes it', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsStopsAfterMs: 1000 }, async (sim) => {
    const started = Date.now();
    const mine = (x: Found) => x.txt.mac === sim.mac.toLowerCase();
    assert.ok(await browse(sim, '_esphomelib._tcp.local', mine), 'answers after boot');
    await sleep(1100 - (Date.now() - started));
    assert.equal(await browse(sim, '_esphomelib._tcp.local', mine, 1200), undefined, 'no answer any more');
    assert.equal((await req('GET', `${sim.url}/select/-__pin`)).status, 200, 'the web server still answers by IP');
    const api = await PlainSession.open(sim.apiPort);
    api.msg(MSG.HelloRequest);
    assert.equal((await api.next())?.type, MSG.HelloResponse, 'and so does the API port');
    assert.ok(await browse(sim, '_esphomelib._tcp.local', mine), 'answers while an API client is connected');
    api.conn.end();
    await sleep(100);
    assert.equal(await browse(sim, '_esphomelib._tcp.local', mine, 1000), undefined, 'quiet again once it left');
    sim.powerCycle();
    await sim.waitForPhase('kickstart-lan', 2000);
    assert.ok(await browse(sim, '_esphomelib._tcp.local', mine), 'a reboot brings it back, for a while');
  });
});

test('no mDNS at all: AP, provisioning, pins, web upload and the encrypted API all work by IP alone', async () => {
  const key = Buffer.alloc(32, 9);
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-ap', homeNetwork: HOME, mdnsInterface: false }, async (sim) => {
    const save = await req('GET', `${sim.url}/wifisave?ssid=HomeNet&psk=${encodeURIComponent(HOME.password)}`);
    assert.equal(save.status, 302);
    await sim.waitForPhase('kickstart-lan', 2000);
    assert.equal((await select(sim, '-__pin', pinOption('P24'))).status, 200);
    assert.equal((await select(sim, '-__pin_mode', 'OUTPUT_HIGH')).status, 200);
    assert.equal(sim.hardware.relay, true);
    const kick = await PlainSession.open(sim.apiPort);
    kick.msg(MSG.HelloRequest);
    assert.equal((await kick.next())?.type, MSG.HelloResponse, "Kickstart's plaintext API by IP");
    kick.conn.end();
    const r = await upload(sim, finalUf2('bk7231n', { ...FINAL_JSON, api_key: key.toString('base64') }));
    assert.equal(r.text, 'Update Successful!');
    await sim.waitForPhase('final', 2000);
    const { session } = await noiseSession(sim.apiPort, key);
    assert.ok(session, 'Noise handshake with the key the firmware was built with');
    session.msg(MSG.HelloRequest);
    await session.next();
    session.msg(MSG.DeviceInfoRequest);
    const info = await session.next();
    assert.equal(info?.type, MSG.DeviceInfoResponse);
    assert.equal(decode(info.body)[2], 'status-plug-01');
    session.conn.end();
  });
});

test('pinscan: -> Pin + -> Pin Mode drive the relay and the LEDs; JSON as web_server prints it; unknown options are ignored', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false }, async (sim) => {
    assert.deepEqual(await getJson(`${sim.url}/select/-__pin`), { id: 'select--__pin', value: 'Select PIN', state: 'Select PIN' });
    const all = await getJson(`${sim.url}/select/-__pin_mode?detail=all`);
    assert.deepEqual(all.option, ['INPUT', 'INPUT_PULLUP', 'OUTPUT_HIGH', 'OUTPUT_LOW']);
    assert.equal(all.name, '-> Pin Mode');
    assert.deepEqual(await getJson(`${sim.url}/text_sensor/-__pin_state`), { id: 'text_sensor--__pin_state', value: '', state: '' });
    assert.deepEqual(sim.hardware.leds, { red: false, blue: false });

    assert.equal((await select(sim, '-__pin', pinOption('P24'))).status, 200);
    assert.equal((await select(sim, '-__pin_mode', 'OUTPUT_HIGH')).status, 200);
    assert.equal(sim.hardware.relay, true);
    assert.equal(sim.hardware.levels.P24, 'HIGH');
    await select(sim, '-__pin_mode', 'OUTPUT_LOW');
    assert.equal(sim.hardware.relay, false);

    // LEDs are active low: OUTPUT_LOW lights them; switching pins releases the old one
    await select(sim, '-__pin_mode', 'OUTPUT_HIGH');
    await select(sim, '-__pin', pinOption('P7'));
    assert.equal(sim.hardware.relay, false, 'P24 went back to INPUT');
    assert.deepEqual(sim.hardware.leds, { red: false, blue: false });
    await select(sim, '-__pin_mode', 'OUTPUT_LOW');
    assert.deepEqual(sim.hardware.leds, { red: false, blue: true });
    await select(sim, '-__pin', pinOption('P6'));
    assert.deepEqual(sim.hardware.leds, { red: true, blue: false });

    const bad = await select(sim, '-__pin', 'P99 / NOPE');
    assert.equal(bad.status, 200, 'an unknown option is a logged warning, not an HTTP error');
    assert.equal((await getJson(`${sim.url}/select/-__pin`)).state, 'P6 / PWM0');
    assert.equal((await req('POST', `${sim.url}/select/-__pin/toggle`)).status, 404);
    assert.equal((await req('GET', `${sim.url}/select/nope`)).status, 404);
    assert.equal((await req('POST', `${sim.url}/text_sensor/-__pin_state`)).status, 404, 'sensors are GET-only');
    assert.deepEqual(await getJson(`${sim.url}/button/restart`), { id: 'button-restart' });
    const up = await getJson(`${sim.url}/sensor/uptime?detail=all`);
    assert.equal(up.uom, 's');
    assert.match(String(up.state), /^\d+ s$/);
  });
});

test('button: a press shows on -> Pin State (GET) and as state events on /events (CRLF frames, ping with config first)', async () => {
  await withSim({ mcu: 'bk7231t', phase: 'kickstart-lan', mdnsInterface: false }, async (sim) => {
    await select(sim, '-__pin', pinOption('P6')); // 21D/21G: button on P6
    await select(sim, '-__pin_mode', 'INPUT_PULLUP');
    assert.equal((await getJson(`${sim.url}/text_sensor/-__pin_state`)).state, 'HIGH');
    const es = await openEvents(`${sim.url}/events`);
    try {
      const ping = await es.waitFor(() => true);
      assert.equal(ping.event, 'ping');
      assert.equal(ping.retry, '30000');
      assert.deepEqual(JSON.parse(ping.data), { title: 'kickstart-bk7231t', comment: '', ota: true, log: true, lang: 'en' });
      const initial = await es.waitFor((e) => e.event === 'state' && e.data.includes('"select--__pin"'));
      assert.equal(JSON.parse(initial.data).state, 'P6 / PWM0');
      assert.ok(es.raw().includes('\r\n\r\n'), 'ESPAsyncWebServer 3.3.0 ends frames with CRLF CRLF');
      assert.ok(es.events.some((e) => e.event === 'state' && JSON.parse(e.data).id === 'text_sensor--__pin_state' && JSON.parse(e.data).name === '-> Pin State'));
      const before = es.events.length;
      const press = sim.pressButton(150);
      await sleep(50);
      assert.equal((await getJson(`${sim.url}/text_sensor/-__pin_state`)).state, 'LOW');
      await press;
      const low = await es.waitFor((e) => es.events.indexOf(e) >= before && e.event === 'state' && e.data === '{"id":"text_sensor--__pin_state","value":"LOW","state":"LOW"}');
      await es.waitFor((e) => es.events.indexOf(e) > es.events.indexOf(low) && e.event === 'state' && e.data.includes('"HIGH"'));
      assert.ok(es.events.some((e) => e.event === 'log' && e.data.includes('[D][pinscan:181]: Pin changed to LOW')));
      assert.equal((await getJson(`${sim.url}/text_sensor/-__pin_state`)).state, 'HIGH');
    } finally {
      es.close();
    }
    // The same over the control API (for fakes in other processes)
    await select(sim, '-__pin', pinOption('P8'));
    await select(sim, '-__pin_mode', 'INPUT_PULLUP');
    const r = await req('POST', `${sim.url}/_sim/press?ms=30`);
    assert.equal(r.status, 200);
    assert.equal((await getJson(`${sim.url}/text_sensor/-__pin_state`)).state, 'HIGH', 'P8 is not the button on a BK7231T plug');
  });
});

test('web OTA: a .ug.bin and the other chip\'s UF2 are refused with LibreTiny\'s texts; a good UF2 reboots into the final device', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan' }, async (sim) => {
    const ug = await upload(sim, makeUG({ chip: 'bk7231n' }));
    assert.deepEqual([ug.status, ug.text], [200, 'Update Failed: Bad Magic Number\r\n']);
    const wrong = await upload(sim, finalUf2('bk7231t'));
    assert.deepEqual([wrong.status, wrong.text], [200, 'Update Failed: Bad Family ID\r\n']);
    assert.equal(wrong.headers.connection, 'close');
    assert.equal(sim.phase, 'kickstart-lan');

    const file = finalUf2();
    const ok = await upload(sim, file, 'anything');
    assert.deepEqual([ok.status, ok.text], [200, 'Update Successful!']);
    assert.deepEqual(sim.uploads.map((u) => u.result), ['Update Failed: Bad Magic Number', 'Update Failed: Bad Family ID', 'Update Successful!']);
    assert.equal(sim.uploads[1].familyId, FAMILY_ID.bk7231t);
    assert.equal(sim.uploads[2].bytes, file.length);
    await sim.waitForPhase('off', 1000);
    await sim.waitForPhase('final', 2000);
    assert.deepEqual(sim.final, { name: 'status-plug-01', friendlyName: 'Status Plug 01', board: 'generic-bk7231n-qfn32-tuya' });

    const f = await browse(sim, '_esphomelib._tcp.local', (x) => x.instance === 'status-plug-01' && x.txt.mac === sim.mac.toLowerCase());
    assert.ok(f, 'the final device is on mDNS under its own name');
    assert.equal(f.host, 'status-plug-01.local');
    assert.equal(f.port, sim.apiPort);
    assert.equal(f.txt.friendly_name, 'Status Plug 01');
    assert.equal(f.txt.api_encryption, 'Noise_NNpsk0_25519_ChaChaPoly_SHA256');
    assert.equal(f.txt.board, 'generic-bk7231n-qfn32-tuya');
    assert.equal(f.txt.project_name, undefined);
    // no web_server in the final config: port 80 is closed
    assert.match(await refused('GET', `${sim.url}/`), /ECONNRESET|socket hang up|EPIPE/);
    // the native API port takes connections; a plaintext hello gets ESPHome's explicit reject
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const s = net.connect(sim.apiPort, '127.0.0.1', () => s.write(Buffer.from([0x00, 0x00, 0x01])));
      const parts: Buffer[] = [];
      s.on('data', (d) => parts.push(d));
      s.on('end', () => resolve(Buffer.concat(parts)));
      s.on('error', reject);
    });
    assert.equal(reply[0], 0x01);
    assert.equal(reply.subarray(4).toString(), 'Bad indicator byte');
    // the button now toggles the relay (the seed configuration)
    await sim.pressButton(20);
    assert.equal(sim.hardware.relay, true);
  });
  // no name in the firmware: ESPHome's fallback
  await withSim({ mcu: 'bk7231t', phase: 'kickstart-ap', mdnsInterface: false }, async (sim) => {
    const r = await upload(sim, makeUF2({ familyId: FAMILY_ID.bk7231t, minBlocks: 4 }));
    assert.equal(r.text, 'Update Successful!');
    await sim.waitForPhase('final', 2000);
    assert.equal(sim.final?.name, 'esphome-device');
    assert.equal(sim.final?.board, 'generic-bk7231t-qfn32-tuya');
  });
});

test('web OTA edge cases as on the real device: truncated UF2 reboots into Kickstart; no Content-Length is "successful" and does nothing', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false }, async (sim) => {
    const full = finalUf2();
    const cut = await upload(sim, full.subarray(0, 512 * 10));
    assert.equal(cut.text, 'Update Successful!', 'Update.end(true) with no error');
    await sim.waitForPhase('off', 1000);
    await sim.waitForPhase('kickstart-lan', 2000);
    assert.equal(sim.final, undefined, 'the old image (Kickstart) is still the one that boots');

    const chunked = await new Promise<Res>((resolve, reject) => {
      const m = multipart(full);
      const r = http.request(`${sim.url}/update`, { method: 'POST', agent: false, headers: { 'Content-Type': m.headers['Content-Type'], 'Transfer-Encoding': 'chunked' } }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), text: Buffer.concat(parts).toString() }));
      });
      r.on('error', reject);
      r.end(m.body);
    });
    assert.equal(chunked.text, 'Update Successful!');
    await sleep(150);
    assert.equal(sim.phase, 'kickstart-lan', 'nothing was flashed');
    assert.equal(sim.uploads.at(-1)?.bytes, 0);
  });
});

test('web OTA from ESPHome 2025.7 (web_server OTA platform): a bare "Update Failed!" for every failure', async () => {
  const opts = { mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, esphomeVersion: '2025.7.0' } as const;
  await withSim(opts, async (sim) => {
    const none = await req('POST', `${sim.url}/update`);
    assert.deepEqual([none.status, none.text], [200, 'Update Failed!'], 'no file reached the OTA handler');
    const ug = await upload(sim, makeUG({ chip: 'bk7231n' }));
    assert.deepEqual([ug.status, ug.text, ug.headers.connection], [200, 'Update Failed!', 'close']);
    assert.equal((await upload(sim, finalUf2('bk7231t'))).text, 'Update Failed!', 'the other chip: no reason given');
    const cut = await upload(sim, finalUf2().subarray(0, 512 * 10));
    assert.equal(cut.text, 'Update Failed!', 'the OTA backend ends without evenIfRemaining: a short image fails');
    await sleep(200);
    assert.equal(sim.phase, 'kickstart-lan', 'and nothing reboots');
    sim.faults.updateFails = 'anything';
    assert.equal((await upload(sim, finalUf2())).text, 'Update Failed!');
    const es = await openEvents(`${sim.url}/events`);
    try {
      const ok = await upload(sim, finalUf2());
      assert.deepEqual([ok.status, ok.text], [200, 'Update Successful!']);
      await es.waitFor((e) => e.event === 'log' && e.data.includes('[I][web_server.ota:'));
    } finally {
      es.close();
    }
    await sim.waitForPhase('final', 2000);
  });
});

test('web_server URLs and ids per ESPHome version: object ids, then names (2026.1), names only (2026.7)', async () => {
  const NAME = '-%3E%20Pin'; // "-> Pin", percent-encoded as any HTTP client sends it
  const table = [
    { v: '2025.5.0', byId: 200, byName: 404, getAction: 200, json: { id: 'select--__pin' } },
    { v: '2025.7.0', byId: 200, byName: 404, getAction: 200, json: { id: 'select--__pin' } },
    { v: '2026.1.0', byId: 200, byName: 200, getAction: 404, json: { id: 'select/-> Pin' } },
    { v: '2026.1.3', byId: 200, byName: 200, getAction: 404, json: { name_id: 'select/-> Pin', id: 'select--__pin' } },
    { v: '2026.7.0', byId: 404, byName: 200, getAction: 404, json: { name_id: 'select/-> Pin', id: 'select--__pin' } },
    { v: '2026.8.0', byId: 404, byName: 200, getAction: 404, json: { id: 'select/-> Pin' } },
  ];
  for (const t of table) {
    const opts = { mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, esphomeVersion: t.v } as const;
    await withSim(opts, async (sim) => {
      const state = async () => (await getJson(`${sim.url}/select/${t.byName === 200 ? NAME : '-__pin'}`)).state;
      const set = (id: string, option: string, method = 'POST') =>
        req(method, `${sim.url}/select/${id}/set?option=${encodeURIComponent(option)}`);
      const byId = await set('-__pin', pinOption('P6'));
      assert.deepEqual([byId.status, byId.text], [t.byId, ''], `${t.v}: POST by object id`);
      const byName = await set(NAME, pinOption('P7'));
      assert.deepEqual([byName.status, byName.text], [t.byName, ''], `${t.v}: POST by name`);
      assert.equal(await state(), t.byName === 200 ? 'P7 / PWM1' : 'P6 / PWM0', t.v);
      const get = await set(t.byName === 200 ? NAME : '-__pin', pinOption('P8'), 'GET');
      const expected = [t.getAction, t.getAction === 404 ? 'Not Found' : ''];
      assert.deepEqual([get.status, get.text], expected, `${t.v}: GET of an action`);
      const now = t.getAction === 200 ? 'P8 / PWM2' : 'P7 / PWM1';
      assert.equal(await state(), now, `${t.v}: a 2025 GET acts`);
      const bad = await set(t.byName === 200 ? NAME : '-__pin', 'P99 / NOPE');
      assert.equal(bad.status, 200, `${t.v}: an unknown option is a warning in the log, HTTP 200`);
      const unknown = await set('nope', pinOption('P6'));
      assert.deepEqual([unknown.status, unknown.text], [404, ''], `${t.v}: an unknown entity`);
      assert.equal((await req('POST', `${sim.url}/select/${NAME}`)).status, 404, `${t.v}: POST without an action`);
      const sensor = await req('POST', `${sim.url}/text_sensor/-__pin_state`);
      assert.equal(sensor.status, 404, `${t.v}: sensors are GET-only`);

      const json = await getJson(`${sim.url}/select/${t.byName === 200 ? NAME : '-__pin'}`);
      assert.deepEqual(json, { ...t.json, value: now, state: now }, t.v);
      const all = await getJson(`${sim.url}/select/${t.byName === 200 ? NAME : '-__pin'}?detail=all`);
      assert.equal(all.domain, t.v >= '2026.1.0' ? 'select' : undefined, `${t.v}: detail=all names the domain`);
      const es = await openEvents(`${sim.url}/events`);
      try {
        const e = await es.waitFor((x) => x.event === 'state' && x.data.includes('"name":"-> Pin"'));
        const d = JSON.parse(e.data);
        assert.deepEqual([d.id, d.name_id], [t.json.id, t.json.name_id], `${t.v}: /events ids`);
      } finally {
        es.close();
      }
      const restart = await req('POST', `${sim.url}/button/${t.byName === 200 ? 'Restart' : 'restart'}/press`);
      assert.equal(restart.status, 200);
      await sim.waitForPhase('off', 1000);
    });
  }
});

test('faults: portal500, dropUploadAfterBytes, updateFails, neverJoinLan, neverReboot', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-ap', mdnsInterface: false, faults: { portal500: 2, neverJoinLan: true } }, async (sim) => {
    assert.equal((await req('GET', `${sim.url}/config.json`)).status, 500);
    assert.equal((await req('GET', `${sim.url}/wifisave?ssid=HomeNet&psk=correct+horse`)).status, 500);
    assert.equal(sim.wifi, undefined);
    assert.equal((await req('GET', `${sim.url}/config.json`)).status, 200);
    assert.equal((await req('GET', `${sim.url}/wifisave?ssid=HomeNet&psk=correct+horse`)).status, 302);
    assert.deepEqual(sim.wifi, { ssid: HOME.ssid, psk: HOME.password });
    await assert.rejects(sim.waitForPhase('kickstart-lan', 200), /not reached/);
    assert.equal(sim.phase, 'kickstart-ap');
  });
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, faults: { dropUploadAfterBytes: 4096, updateFails: 'Flash Write Failed' } }, async (sim) => {
    const file = finalUf2();
    assert.match(await refused('POST', `${sim.url}/update`, multipart(file).body), /ECONNRESET|EPIPE|socket hang up/);
    assert.equal(sim.uploads[0].result, 'dropped');
    const failed = await upload(sim, file);
    assert.equal(failed.text, 'Update Failed: Flash Write Failed\r\n');
    await sleep(150);
    assert.equal(sim.phase, 'kickstart-lan');
    const ok = await upload(sim, file);
    assert.equal(ok.text, 'Update Successful!');
    await sim.waitForPhase('final', 2000);
  });
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, faults: { neverReboot: true } }, async (sim) => {
    assert.equal((await upload(sim, finalUf2())).text, 'Update Successful!');
    await sim.waitForPhase('off', 1000);
    await assert.rejects(sim.waitForPhase('final', 300), /not reached/);
    sim.powerCycle();
    await sim.waitForPhase('final', 1000);
  });
});

/** The Wiring of a cloudcutter fixture device (test/fixtures/cloudcutter-api/devices/<slug>.json). */
function tuyaWiring(slug: string): Wiring {
  const file = path.join(ROOT, 'test/fixtures/cloudcutter-api/devices', `${slug}.json`);
  return wiringFromTuya((JSON.parse(fs.readFileSync(file, 'utf8')) as { device_configuration: Record<string, unknown> })
    .device_configuration);
}

/** A plug on the LAN running Kickstart, wired as given. */
const lan = (mcu: 'bk7231t' | 'bk7231n', wiring: Wiring): SimPlugOptions =>
  ({ mcu, phase: 'kickstart-lan', mdnsInterface: false, wiring });

/** Kickstart's pinscan: drive (or read) one pin the way flash.ts does. */
async function scanPin(sim: SimPlug, pin: string, mode: 'INPUT' | 'INPUT_PULLUP' | 'OUTPUT_HIGH' | 'OUTPUT_LOW') {
  assert.equal((await select(sim, '-__pin', pinOption(pin))).status, 200);
  assert.equal((await select(sim, '-__pin_mode', mode)).status, 200);
}

test('wiringFromTuya: relays (rlN_lv 0: active low), buttons (total 0, key_pin), LEDs, PWM channels; I2C: none', () => {
  assert.deepEqual(tuyaWiring('kmc-30153-smart-plug-mini'),
    { relays: { P26: 1 }, buttons: { P11: 1 }, button: 'P11', leds: { P6: 'red' } });
  assert.deepEqual(tuyaWiring('lonsonho-x802a-l-2-gang-switch'), {
    relays: { P9: 1, P8: 2 }, buttons: { P1: 1, P10: 2 }, button: 'P1', leds: { P14: 'blue 1', P26: 'blue 2' },
  });
  assert.deepEqual(tuyaWiring('arlec-pc191ha-smart-plug-bk7231t-v1.3.5'), {
    relays: { P6: 1 }, buttons: { P11: 1 }, button: 'P11', leds: { P10: 'red', P26: 'blue' },
  });
  assert.deepEqual(tuyaWiring('xenon-pa301-power-strip'), {
    relays: { P8: 1, P6: 2, P24: 3, P26: 4, P14: 5 }, buttons: { P7: 0 }, button: 'P7', leds: { P21: 'red' },
    activeLow: ['P8', 'P6', 'P24', 'P26'],
  });
  assert.deepEqual(tuyaWiring('woox-r4967-smart-switch-v1.1.6').buttons, { P10: 1, P6: 0 });
  assert.equal(tuyaWiring('woox-r4967-smart-switch-v1.1.6').button, 'P10');
  assert.equal(Object.keys(tuyaWiring('tuya-generic-rh-m601-power-strip-with-monitoring-v1.3.5').relays!).length, 7);
  assert.deepEqual(tuyaWiring('abie-g99631-05-rgbw-led-lamp'), {
    channels: { P24: 'red', P9: 'green', P8: 'blue', P6: 'cold', P26: 'warm' },
  });
  assert.deepEqual(tuyaWiring('anko-io04055-sunset-lamp-v1.1.6'), {
    buttons: { P1: 1 }, button: 'P1', keys: { P1: 1 }, channels: { P9: 'red', P24: 'green', P26: 'blue' },
  });
  assert.deepEqual(tuyaWiring('alusso-gu10-rgbct-bulb-v1.3.1'), {}, 'iicscl/iicsda are no channels');
  assert.deepEqual(wiringFromTuya({ dmod: 2, iicscl: 7, iicsda: 8, r_pin: 6 }), {}, 'dmod 2: the chip has the colours');
  assert.deepEqual(wiringFromTuya({ r_pin: 6, r_lv: 0, c_pin: 7, c_lv: 1, wfst_pin: 8 }),
    { leds: { P8: 'red' }, channels: { P6: 'red', P7: 'cold' }, activeLow: ['P6'] });
});

test('power strip: each relay by number through pinscan, active-low ones on at LOW; relay: any is on', async () => {
  const wiring = tuyaWiring('xenon-pa301-power-strip');
  await withSim(lan('bk7231n', wiring), async (sim) => {
    assert.deepEqual(sim.hardware.relays, { 1: false, 2: false, 3: false, 4: false, 5: false }, 'undriven: off');
    assert.deepEqual(sim.hardware.light, []);
    await scanPin(sim, 'P8', 'OUTPUT_HIGH');
    assert.equal(sim.hardware.relays[1], false, 'relay 1 is active low: HIGH is off');
    await scanPin(sim, 'P8', 'OUTPUT_LOW');
    assert.deepEqual(sim.hardware.relays, { 1: true, 2: false, 3: false, 4: false, 5: false });
    assert.equal(sim.hardware.relay, true);
    await scanPin(sim, 'P14', 'OUTPUT_HIGH');
    assert.deepEqual(sim.hardware.relays, { 1: false, 2: false, 3: false, 4: false, 5: true }, 'P8 let go');
    await scanPin(sim, 'P21', 'OUTPUT_LOW');
    assert.deepEqual([sim.hardware.relay, sim.hardware.leds], [false, { red: true }]);
  });
  const twice = { relay: 'P24', relays: { P6: 1 } };
  await assert.rejects(startSimPlug({ mcu: 'bk7231n', mdnsInterface: false, wiring: twice }), /relay 1 twice/);
});

test('buttons by pin: pressButton(ms, pin) pulls that pin low; a pin with no button throws; /_sim/press?pin=',
  async () => {
  const wiring = tuyaWiring('lonsonho-x802a-l-2-gang-switch');
  await withSim(lan('bk7231t', wiring), async (sim) => {
    await scanPin(sim, 'P10', 'INPUT_PULLUP');
    const state = async () => (await getJson(`${sim.url}/text_sensor/-__pin_state`)).state;
    assert.equal(await state(), 'HIGH');
    await sim.pressButton(30); // button 1 (P1) by default: P10 stays high
    assert.equal(await state(), 'HIGH');
    const press = sim.pressButton(150, 'P10');
    await sleep(50);
    assert.equal(await state(), 'LOW');
    assert.equal(sim.hardware.levels.P10, 'LOW');
    await press;
    assert.equal(await state(), 'HIGH');
    await assert.rejects(sim.pressButton(10, 'P9'), /no button on P9 \(buttons: P1, P10\)/);
    const viaApi = sim.pressButton(150, 'P10');
    await sleep(10);
    const r = await req('POST', `${sim.url}/_sim/press?ms=20&pin=P1`);
    assert.equal(r.status, 200);
    await viaApi;
    assert.equal((await req('POST', `${sim.url}/_sim/press?ms=20&pin=P26`)).status, 409, 'P26 is an LED');
  });
  await withSim(lan('bk7231t', tuyaWiring('abie-g99631-05-rgbw-led-lamp')), async (sim) => {
    await assert.rejects(sim.pressButton(10), /no button on \(no pin given\) \(buttons: none\)/);
  });
});

test('PWM bulb: a channel pin driven to its active level lights its colour; an I2C bulb lights nothing', async () => {
  await withSim(lan('bk7231t', tuyaWiring('abie-g99631-05-rgbw-led-lamp')), async (sim) => {
    assert.deepEqual([sim.hardware.relay, sim.hardware.relays, sim.hardware.light], [false, {}, []]);
    await scanPin(sim, 'P24', 'OUTPUT_HIGH');
    assert.deepEqual(sim.hardware.light, ['red']);
    await scanPin(sim, 'P24', 'OUTPUT_LOW');
    assert.deepEqual(sim.hardware.light, []);
    await scanPin(sim, 'P26', 'OUTPUT_HIGH');
    assert.deepEqual(sim.hardware.light, ['warm'], 'P24 went back to INPUT');
    await scanPin(sim, 'P26', 'INPUT_PULLUP');
    assert.deepEqual(sim.hardware.light, [], 'a pulled-up input drives nothing');
  });
  const activeLowBulb = { channels: { P6: 'cold', P7: 'warm' }, activeLow: ['P6'] } satisfies Wiring;
  await withSim(lan('bk7231n', activeLowBulb), async (sim) => {
    await scanPin(sim, 'P6', 'OUTPUT_HIGH');
    assert.deepEqual(sim.hardware.light, []);
    await scanPin(sim, 'P6', 'OUTPUT_LOW');
    assert.deepEqual(sim.hardware.light, ['cold']);
  });
  await withSim(lan('bk7231n', tuyaWiring('alusso-gu10-rgbct-bulb-v1.3.1')), async (sim) => {
    for (const pin of ['P26', 'P24']) {
      for (const mode of ['OUTPUT_HIGH', 'OUTPUT_LOW'] as const) {
        await scanPin(sim, pin, mode);
        assert.deepEqual(sim.hardware.light, [], `${pin} ${mode}: the driver chip ignores one pin wiggling`);
      }
    }
    assert.deepEqual(sim.hardware.leds, {});
  });
});

test('final firmware: buttons toggle their relay, the all-button all (active low inverted); a bulb boots', async () => {
  const bootFinal = async (sim: SimPlug) => {
    assert.equal((await upload(sim, finalUf2(sim.mcu))).text, 'Update Successful!');
    await sim.waitForPhase('final', 2000);
  };
  await withSim(lan('bk7231n', tuyaWiring('xenon-pa301-power-strip')), async (sim) => {
    await bootFinal(sim);
    assert.equal(sim.hardware.relay, false, 'the active-low relays start off (their pins HIGH)');
    assert.equal(sim.hardware.levels.P8, 'HIGH');
    await sim.pressButton(20);
    assert.deepEqual(sim.hardware.relays, { 1: true, 2: true, 3: true, 4: true, 5: true });
    assert.deepEqual([sim.hardware.levels.P8, sim.hardware.levels.P14], ['LOW', 'HIGH']);
    await sim.pressButton(20);
    assert.equal(sim.hardware.relay, false);
  });
  await withSim(lan('bk7231t', tuyaWiring('lonsonho-x802a-l-2-gang-switch')), async (sim) => {
    await bootFinal(sim);
    await sim.pressButton(20, 'P10');
    assert.deepEqual(sim.hardware.relays, { 1: false, 2: true });
    await sim.pressButton(20, 'P1');
    assert.deepEqual(sim.hardware.relays, { 1: true, 2: true });
  });
  const strip7 = tuyaWiring('tuya-generic-rh-m601-power-strip-with-monitoring-v1.3.5');
  await withSim(lan('bk7231n', strip7), async (sim) => {
    await bootFinal(sim);
    await sim.pressButton(20);
    assert.deepEqual(Object.values(sim.hardware.relays), [true, true, true, true, true, true, true]);
  });
  await withSim(lan('bk7231t', tuyaWiring('abie-g99631-05-rgbw-led-lamp')), async (sim) => {
    await bootFinal(sim);
    assert.deepEqual([sim.hardware.relay, sim.hardware.relays, sim.hardware.light], [false, {}, []]);
    sim.powerCycle();
    await sim.waitForPhase('final', 2000);
  });
});

test('main.ts --tuya-device FILE / --wiring JSON: the plug is wired as the file says; bad input exits 2', async () => {
  const start = (args: string[]) => {
    const child = spawn(process.execPath, ['--import', TSX, path.join(ROOT, 'test/sim/main.ts'), '--mcu', 'bk7231n',
      '--phase', 'kickstart-lan', '--no-mdns', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const line = new Promise<string>((resolve, reject) => {
      child.stdout.on('data', () => out.includes('\n') && resolve(out.split('\n')[0]));
      void exited.then(() => reject(new Error(`exited: ${err}`)));
    });
    return { child, exited, line, err: () => err };
  };
  const devices = path.join(ROOT, 'test/fixtures/cloudcutter-api/devices');
  const strip = start(['--tuya-device', path.join(devices, 'xenon-pa301-power-strip.json')]);
  try {
    const { url } = JSON.parse(await strip.line) as { url: string };
    await req('POST', `${url}/select/-__pin/set?option=${encodeURIComponent(pinOption('P8'))}`);
    await req('POST', `${url}/select/-__pin_mode/set?option=OUTPUT_LOW`);
    const hw = (await getJson(`${url}/_sim/state`)).hardware as { relays: Record<string, boolean> };
    assert.deepEqual(hw.relays, { 1: true, 2: false, 3: false, 4: false, 5: false });
    assert.equal((await req('POST', `${url}/_sim/press?ms=10&pin=P7`)).status, 200);
  } finally {
    strip.child.kill('SIGTERM');
  }
  assert.equal(await strip.exited, 0, strip.err());
  const bulb = start(['--wiring', JSON.stringify({ channels: { P6: 'red' } })]);
  try {
    const { url } = JSON.parse(await bulb.line) as { url: string };
    await req('POST', `${url}/select/-__pin/set?option=${encodeURIComponent(pinOption('P6'))}`);
    await req('POST', `${url}/select/-__pin_mode/set?option=OUTPUT_HIGH`);
    assert.deepEqual(((await getJson(`${url}/_sim/state`)).hardware as { light: string[] }).light, ['red']);
  } finally {
    bulb.child.kill('SIGTERM');
  }
  assert.equal(await bulb.exited, 0, bulb.err());
  for (const [args, message] of [
    [['--wiring', '[1]'], /--wiring must be a JSON object/],
    [['--wiring', '{}', '--tuya-device', 'x.json'], /give --wiring or --tuya-device, not both/],
    [['--tuya-device', path.join(devices, 'avatto-n-wot10-eu-plug-v1.0.11.json')], /has no device_configuration/],
  ] as const) {
    const bad = start([...args]);
    bad.line.catch(() => {});
    assert.equal(await bad.exited, 2);
    assert.match(bad.err(), message);
  }
});

test('hub: LibreTiny banner and a deterministic, range-checked 2 MiB flash_read', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false }, async (sim) => {
    const hub = await req('GET', `${sim.url}/hub`);
    assert.match(hub.text, /^LibreTiny v\d+\.\d+\.\d+ on generic-bk7231n-qfn32-tuya, compiled at May 28 2025/);
    const a = await req('GET', `${sim.url}/hub/flash_read?offset=4096&length=65536`);
    assert.equal(a.status, 200);
    assert.equal(a.headers['content-type'], 'application/octet-stream');
    assert.equal(a.body.length, 65536);
    assert.deepEqual(a.body, sim.flashRead(4096, 65536));
    const b = await req('GET', `${sim.url}/hub/flash_read?offset=0&length=8192`);
    assert.deepEqual(b.body.subarray(4096), a.body.subarray(0, 4096), 'the same bytes at the same address');
    const whole = await req('GET', `${sim.url}/hub/flash_read`);
    assert.equal(whole.body.length, FLASH_SIZE, 'length defaults to the whole flash');
    assert.equal((await req('GET', `${sim.url}/hub/flash_read?offset=${FLASH_SIZE - 10}&length=20`)).status, 400);
    assert.equal((await req('POST', `${sim.url}/hub`)).status, 404, 'hub_api is GET-only');
  });
});

test('reboots: Restart keeps the Wi-Fi, a power cycle rejoins, factory reset brings the AP back; connections die with the reboot', async () => {
  await withSim({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false }, async (sim) => {
    await select(sim, '-__pin', pinOption('P24'));
    await select(sim, '-__pin_mode', 'OUTPUT_HIGH');
    assert.equal(sim.hardware.relay, true);
    const es = await openEvents(`${sim.url}/events`);
    await es.waitFor((e) => e.event === 'ping');
    assert.equal((await req('POST', `${sim.url}/button/restart/press`)).status, 200);
    await sim.waitForPhase('off', 500);
    assert.equal(sim.hardware.relay, false);
    await sim.waitForPhase('kickstart-lan', 1000);
    es.close();
    assert.equal((await getJson(`${sim.url}/select/-__pin`)).state, 'Select PIN', 'template selects start over');
    assert.equal((await getJson(`${sim.url}/text_sensor/reset_reason`)).state, 'SW Reboot');

    sim.powerCycle();
    assert.equal(sim.phase, 'off');
    assert.match(await refused('GET', `${sim.url}/`), /ECONNRESET|socket hang up/);
    await sim.waitForPhase('kickstart-lan', 1000);
    assert.equal((await getJson(`${sim.url}/text_sensor/reset_reason`)).state, 'Power-On');

    await req('POST', `${sim.url}/button/reset_to_factory_settings/press`);
    await sim.waitForPhase('kickstart-ap', 1000);
    assert.equal(sim.wifi, undefined);
  });
});

test('main.ts: prints one JSON line, serves the control API, exits cleanly on SIGTERM', async () => {
  const child = spawn(process.execPath, ['--import', TSX, path.join(ROOT, 'test/sim/main.ts'), '--mcu', 'bk7231t', '--phase', 'kickstart-ap', '--no-mdns', '--home-ssid', 'Lab', '--home-password', 'pw'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no JSON line; stderr: ${err}`)), 8000);
      child.stdout.on('data', (d) => {
        out += d;
        if (out.includes('\n')) {
          clearTimeout(t);
          resolve(out.split('\n')[0]);
        }
      });
    });
    const info = JSON.parse(line) as { url: string; port: number; mac: string };
    assert.match(info.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(info.mac, /^[0-9A-F]{12}$/);
    assert.equal((await getJson(`${info.url}/_sim/state`)).phase, 'kickstart-ap');
    await req('GET', `${info.url}/wifisave?ssid=Lab&psk=pw`);
    const waited = await req('GET', `${info.url}/_sim/wait?phase=kickstart-lan&timeoutMs=3000`);
    assert.equal(waited.status, 200);
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, err);
});
