// ESPHome's native API, device side, for the simulated plug: the Noise frame helper (encrypted firmware)
// or the plaintext one (Kickstart, a firmware without a key), then the connection rules of api_connection.
//
// Written from ESPHome's sources (read, not copied): api_frame_helper(_noise|_plaintext).cpp/.h, api_connection.cpp,
// api_pb2_service.cpp and api.proto of 2024.10 and 2025.x/2026.x, and noise-c's handshakestate for which
// malformed handshake gets which error. The protocol is Noise_NNpsk0_25519_ChaChaPoly_SHA256 (Noise rev 34).
//
// What a client meets, as on a real plug:
// - Noise: frames are 0x01 + 16-bit length. The prologue is "NoiseAPIInit" + the client hello's 16-bit length +
//   the client hello's bytes (an empty hello gives "NoiseAPIInit\0\0"). Handshake frames over 128 bytes, a wrong
//   indicator, an empty or non-zero-flagged handshake, a short one and a failed MAC each get ESPHome's explicit
//   reject (0x01 + its text) and the connection closes. After the handshake a frame that does not decrypt, or
//   decrypts to less than a message header, just closes the connection.
// - Plaintext: 0x00 + varint length + varint type. A Noise client (0x01) gets "\x00Bad indicator byte", then close.
// - Messages: DeviceInfo before Hello closes the connection; ListEntities/SubscribeStates/commands before the
//   connection is authenticated close it. How a connection gets authenticated depends on the ESPHome version:
//   up to 2025.7 only a ConnectRequest with the right password (2025.5 compares it strictly, so a device without
//   a password accepts only an empty one; 2025.7 accepts any when none is set); from 2025.8 Hello authenticates
//   a device without a password; from 2025.10 a ConnectRequest to such a device gets no answer at all, and
//   2026.1 removed passwords. The device pings an idle client (keepalive) and drops one that stays silent.
import crypto from 'node:crypto';
import type net from 'node:net';

export interface DeviceInfo {
  name: string;
  friendlyName?: string;
  /** XX:XX:XX:XX:XX:XX, upper case, as DeviceInfoResponse carries it. */
  macAddress: string;
  esphomeVersion: string;
  model: string;
  manufacturer: string;
  compilationTime: string;
}

/** What the firmware was built with. */
export interface ApiFirmware {
  info: DeviceInfo;
  /** `api: encryption: key:` (32 bytes); without it the port speaks plaintext. */
  key?: Buffer;
  /** `api: password:`; ESPHome removed it in 2026.1. Default none. */
  password?: string;
}

export interface ApiOptions {
  /** No traffic for this long -> the device sends PingRequest; 2.5x this -> it drops the client. ESPHome: 60 s. */
  keepaliveMs?: number;
}

const PROTOCOL = 'Noise_NNpsk0_25519_ChaChaPoly_SHA256';
const PROLOGUE_INIT = Buffer.from('NoiseAPIInit');
/** api_frame_helper_noise: during the handshake no frame may be longer. */
const MAX_HANDSHAKE_FRAME = 128;
const KEEPALIVE_MS = 60_000;

const MSG = {
  HelloRequest: 1, HelloResponse: 2, ConnectRequest: 3, ConnectResponse: 4, DisconnectRequest: 5, DisconnectResponse: 6,
  PingRequest: 7, PingResponse: 8, DeviceInfoRequest: 9, DeviceInfoResponse: 10, ListEntitiesRequest: 11,
  ListEntitiesDoneResponse: 19, SubscribeStatesRequest: 20, GetTimeRequest: 36,
} as const;

/**
 * Requests ESPHome serves only on an authenticated connection (api_pb2_service.cpp: is_connection_setup() and
 * is_authenticated()): entity lists, subscriptions, every command, services, camera, Bluetooth, voice.
 */
const NEEDS_AUTH = new Set([11, 20, 28, 30, 31, 32, 33, 34, 38, 42, 45, 48, 51, 54, 60, 62, 65, 66, 68, 70, 73, 75, 76,
  77, 78, 80, 87, 89, 96, 99, 102, 105, 111, 114, 118, 121, 123]);
/** Requests that need only a Hello first. */
const NEEDS_SETUP = new Set<number>([MSG.DeviceInfoRequest, MSG.GetTimeRequest]);

/** "2025.5.0", "2026.1.3", "2025.10.0b2" -> comparable numbers; true when `version` is `min` or newer. */
export function esphomeAtLeast(version: string, min: string): boolean {
  const parse = (v: string) => {
    const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(v);
    return [Number(m?.[1] ?? 0), Number(m?.[2] ?? 0), Number(m?.[3] ?? 0)];
  };
  const a = parse(version);
  const b = parse(min);
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] > b[i];
  return true;
}

/** The API version HelloResponse reports: 1.10 up to 2025.7, 1.12 from 2025.8, 1.14 from 2026.1. */
export function apiVersionOf(esphomeVersion: string): { major: number; minor: number } {
  if (esphomeAtLeast(esphomeVersion, '2026.1.0')) return { major: 1, minor: 14 };
  if (esphomeAtLeast(esphomeVersion, '2025.8.0')) return { major: 1, minor: 12 };
  return { major: 1, minor: 10 };
}

/** Serves one accepted connection of the native API port until either side closes it. */
export function serveNativeApi(sock: net.Socket, fw: ApiFirmware, o: ApiOptions = {}): void {
  const ver = fw.info.esphomeVersion;
  const password = esphomeAtLeast(ver, '2026.1.0') ? '' : (fw.password ?? '');
  const keepalive = o.keepaliveMs ?? KEEPALIVE_MS;
  let state: 'setup' | 'connected' | 'authenticated' = 'setup';
  let closed = false;
  let lastTraffic = Date.now();
  let pingSent = false;

  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(keepaliveTimer);
    sock.end();
  };
  sock.on('close', () => {
    closed = true;
    clearInterval(keepaliveTimer);
  });

  const transport = fw.key
    ? noiseTransport(sock, fw.key, fw.info, { onMessage, close })
    : plaintextTransport(sock, { onMessage, close });

  // APIConnection::loop(): an idle client is pinged, and dropped when it stays silent for 2.5 keepalives. A ping
  // cannot go out before the handshake is done; ESPHome retries it once a second and gives up after 60 tries.
  const keepaliveTimer = setInterval(() => {
    if (closed) return;
    const idle = Date.now() - lastTraffic;
    if (!transport.ready()) {
      if (idle > keepalive * 2) close();
    } else if (pingSent && idle > keepalive * 2.5) close();
    else if (!pingSent && idle > keepalive) {
      pingSent = true;
      transport.send(MSG.PingRequest, Buffer.alloc(0));
    }
  }, Math.max(10, Math.min(1000, keepalive / 4)));
  keepaliveTimer.unref();

  function onMessage(type: number, body: Buffer): void {
    lastTraffic = Date.now();
    pingSent = false;
    const reply = (t: number, b: Buffer) => transport.send(t, b);
    if (type === MSG.HelloRequest) {
      const { major, minor } = apiVersionOf(ver);
      // From 2025.10 the server info is the bare version string; before, "<name> (esphome v<version>)".
      const serverInfo = esphomeAtLeast(ver, '2025.10.0') ? ver : `${fw.info.name} (esphome v${ver})`;
      reply(MSG.HelloResponse, proto([[1, major], [2, minor], [3, serverInfo], [4, fw.info.name]]));
      // Hello sets the connection to "connected" (even one a ConnectRequest already authenticated); from 2025.8
      // a device without a password authenticates the client right here.
      state = esphomeAtLeast(ver, '2025.8.0') && !password ? 'authenticated' : 'connected';
      return;
    }
    if (type === MSG.ConnectRequest) {
      if (esphomeAtLeast(ver, '2026.1.0')) return; // an unknown message: ignored
      if (esphomeAtLeast(ver, '2025.10.0') && !password) return; // no handler compiled in: no answer
      const given = readString(body, 1);
      // 2025.5 compares strictly (an empty device password accepts only an empty one); from 2025.7 the check is
      // compiled only when a password is set.
      const ok = !password && esphomeAtLeast(ver, '2025.7.0') ? true : given === password;
      if (ok) state = 'authenticated';
      reply(MSG.ConnectResponse, proto([[1, !ok]]));
      return;
    }
    if (type === MSG.DisconnectRequest) {
      reply(MSG.DisconnectResponse, Buffer.alloc(0));
      close();
      return;
    }
    if (type === MSG.PingRequest) return reply(MSG.PingResponse, Buffer.alloc(0));
    if (NEEDS_SETUP.has(type) || NEEDS_AUTH.has(type)) {
      // ESPHome logs "tried to access without full connection." / "... without authentication." and closes.
      if (state === 'setup') return close();
      if (NEEDS_AUTH.has(type) && state !== 'authenticated') return close();
    }
    if (type === MSG.DeviceInfoRequest) {
      const i = fw.info;
      const usesPassword = !!password;
      reply(MSG.DeviceInfoResponse, proto([[1, usesPassword], [2, i.name], [3, i.macAddress], [4, i.esphomeVersion],
        [5, i.compilationTime], [6, i.model], [12, i.manufacturer], [13, i.friendlyName ?? '']]));
    } else if (type === MSG.ListEntitiesRequest) {
      reply(MSG.ListEntitiesDoneResponse, Buffer.alloc(0));
    }
    // Everything else (SubscribeStates, logs, PingResponse, unknown types) is taken and not answered.
  }
}

interface Transport {
  send(type: number, body: Buffer): void;
  /** The handshake (if any) is done: messages can flow. */
  ready(): boolean;
}
interface TransportEvents { onMessage(type: number, body: Buffer): void; close(): void }

function noiseTransport(sock: net.Socket, key: Buffer, info: DeviceInfo, ev: TransportEvents): Transport {
  let buf = Buffer.alloc(0);
  let state: 'client-hello' | 'handshake' | 'data' | 'failed' = 'client-hello';
  let prologue = PROLOGUE_INIT;
  let send: CipherState | undefined;
  let receive: CipherState | undefined;

  const frame = (p: Buffer) => Buffer.concat([Buffer.from([0x01, p.length >> 8, p.length & 0xff]), p]);
  /** send_explicit_handshake_reject_(): 0x01 + the reason, then the connection is closed. */
  const reject = (reason: string) => {
    state = 'failed';
    sock.write(frame(Buffer.concat([Buffer.from([0x01]), Buffer.from(reason)])));
    ev.close();
  };
  const fail = () => {
    state = 'failed';
    ev.close();
  };

  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 3 && state !== 'failed') {
      if (buf[0] !== 0x01) return state === 'data' ? fail() : reject('Bad indicator byte');
      const len = (buf[1] << 8) | buf[2];
      if (state !== 'data' && len > MAX_HANDSHAKE_FRAME) return reject('Bad handshake packet len');
      if (buf.length < 3 + len) return;
      const payload = Buffer.from(buf.subarray(3, 3 + len));
      buf = buf.subarray(3 + len);
      if (state === 'client-hello') {
        // The hello's contents are not interpreted, but they are part of the prologue both sides hash.
        prologue = Buffer.concat([PROLOGUE_INIT, Buffer.from([len >> 8, len & 0xff]), payload]);
        // Server hello: protocol 1, the node name, and (since 2025.5) the MAC as 12 lower-case hex digits.
        const mac = info.macAddress.replace(/:/g, '').toLowerCase();
        const withMac = esphomeAtLeast(info.esphomeVersion, '2025.5.0');
        const hello = `${info.name}\0${withMac ? `${mac}\0` : ''}`;
        sock.write(frame(Buffer.concat([Buffer.from([0x01]), Buffer.from(hello)])));
        state = 'handshake';
      } else if (state === 'handshake') {
        if (payload.length === 0) return reject('Empty handshake message');
        if (payload[0] !== 0x00) return reject('Bad handshake error byte');
        let r: { message: Buffer; split: [CipherState, CipherState] };
        try {
          r = new NoiseResponder(key, prologue).respond(payload.subarray(1));
        } catch (e) {
          return reject(e instanceof MacFailure ? 'Handshake MAC failure' : 'Handshake error');
        }
        sock.write(frame(Buffer.concat([Buffer.from([0x00]), r.message])));
        [receive, send] = r.split;
        state = 'data';
      } else {
        let plain: Buffer;
        try {
          plain = receive!.decrypt(payload);
        } catch {
          return fail(); // CIPHERSTATE_DECRYPT_FAILED: closed without a word
        }
        if (plain.length < 4) return fail();
        const type = (plain[0] << 8) | plain[1];
        const dataLen = (plain[2] << 8) | plain[3];
        if (dataLen > plain.length - 4) return fail();
        ev.onMessage(type, plain.subarray(4, 4 + dataLen));
      }
    }
  });

  return {
    ready: () => state === 'data',
    send(type, body) {
      if (state !== 'data' || sock.destroyed) return;
      const plain = Buffer.concat([Buffer.from([type >> 8, type & 0xff, body.length >> 8, body.length & 0xff]), body]);
      sock.write(frame(send!.encrypt(plain)));
    },
  };
}

function plaintextTransport(sock: net.Socket, ev: TransportEvents): Transport {
  let buf = Buffer.alloc(0);
  let failed = false;
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length && !failed) {
      if (buf[0] !== 0x00) {
        // A Noise client: tell it in plaintext framing that this side speaks plaintext, then drop it.
        failed = true;
        sock.write(Buffer.from('\x00Bad indicator byte', 'latin1'));
        return ev.close();
      }
      const size = readVarint(buf, 1);
      if (!size) return;
      const type = readVarint(buf, size.next);
      if (!type) return;
      if (buf.length < type.next + size.value) return;
      const body = buf.subarray(type.next, type.next + size.value);
      buf = buf.subarray(type.next + size.value);
      ev.onMessage(type.value, body);
    }
  });
  return {
    ready: () => !failed,
    send(type, body) {
      if (failed || sock.destroyed) return;
      sock.write(Buffer.concat([Buffer.from([0x00, ...varint(body.length), ...varint(type)]), body]));
    },
  };
}

// ---------------- protobuf, as little as the sim needs ----------------

export function varint(n: number): number[] {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n);
  return out;
}

function readVarint(b: Buffer, at: number): { value: number; next: number } | null {
  let value = 0;
  for (let i = 0; i < 5 && at + i < b.length; i++) {
    value += (b[at + i] & 0x7f) * 2 ** (7 * i);
    if (!(b[at + i] & 0x80)) return { value, next: at + i + 1 };
  }
  return null;
}

/** A protobuf message from [field number, value] pairs: bools and numbers as varints, strings length-delimited. */
export function proto(fields: [number, string | number | boolean][]): Buffer {
  const out: number[] = [];
  for (const [field, value] of fields) {
    if (typeof value === 'string') {
      if (!value) continue; // proto3 leaves empty strings out
      const bytes = Buffer.from(value);
      out.push(...varint((field << 3) | 2), ...varint(bytes.length), ...bytes);
    } else {
      const n = Number(value);
      if (!n) continue;
      out.push(...varint(field << 3), ...varint(n));
    }
  }
  return Buffer.from(out);
}

/** The string in field `field` of a protobuf message ('' when absent). */
function readString(b: Buffer, field: number): string {
  let at = 0;
  while (at < b.length) {
    const tag = readVarint(b, at);
    if (!tag) break;
    const wire = tag.value & 7;
    if (wire === 0) {
      const v = readVarint(b, tag.next);
      if (!v) break;
      at = v.next;
    } else if (wire === 2) {
      const len = readVarint(b, tag.next);
      if (!len) break;
      if (tag.value >>> 3 === field) return b.subarray(len.next, len.next + len.value).toString('utf8');
      at = len.next + len.value;
    } else if (wire === 5) at = tag.next + 4;
    else if (wire === 1) at = tag.next + 8;
    else break;
  }
  return '';
}

// ---------------- Noise, responder side of NNpsk0 ----------------

const sha256 = (...parts: Buffer[]) => crypto.createHash('sha256').update(Buffer.concat(parts)).digest();
const hmac = (key: Buffer, ...parts: Buffer[]) =>
  crypto.createHmac('sha256', key).update(Buffer.concat(parts)).digest();

/** Noise's HKDF: two or three 32-byte outputs chained from one HMAC of the input key material. */
function hkdf(chainingKey: Buffer, ikm: Buffer, outputs: 2 | 3): Buffer[] {
  const temp = hmac(chainingKey, ikm);
  const out = [hmac(temp, Buffer.from([1]))];
  for (let i = 2; i <= outputs; i++) out.push(hmac(temp, out[i - 2], Buffer.from([i])));
  return out;
}

/** noise-c's NOISE_ERROR_MAC_FAILURE; any other handshake error is a plain Error (INVALID_LENGTH and the like). */
class MacFailure extends Error {}

const MAC_LEN = 16;
const DH_LEN = 32;

class CipherState {
  private n = 0n;
  constructor(private k?: Buffer) {}
  get hasKey(): boolean {
    return !!this.k;
  }
  private nonce(): Buffer {
    const iv = Buffer.alloc(12);
    iv.writeBigUInt64LE(this.n++, 4);
    return iv;
  }
  encrypt(plain: Buffer, ad: Buffer = Buffer.alloc(0)): Buffer {
    const c = crypto.createCipheriv('chacha20-poly1305', this.k!, this.nonce(), { authTagLength: MAC_LEN });
    c.setAAD(ad, { plaintextLength: plain.length });
    return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
  }
  decrypt(sealed: Buffer, ad: Buffer = Buffer.alloc(0)): Buffer {
    if (sealed.length < MAC_LEN) throw new Error('INVALID_LENGTH');
    const d = crypto.createDecipheriv('chacha20-poly1305', this.k!, this.nonce(), { authTagLength: MAC_LEN });
    d.setAAD(ad, { plaintextLength: sealed.length - MAC_LEN });
    d.setAuthTag(sealed.subarray(sealed.length - MAC_LEN));
    try {
      return Buffer.concat([d.update(sealed.subarray(0, sealed.length - MAC_LEN)), d.final()]);
    } catch {
      throw new MacFailure('MAC_FAILURE');
    }
  }
}

class NoiseResponder {
  private h: Buffer;
  private ck: Buffer;
  private cipher = new CipherState();

  constructor(private psk: Buffer, prologue: Buffer) {
    const name = Buffer.from(PROTOCOL);
    this.h = name.length <= 32 ? Buffer.concat([name, Buffer.alloc(32 - name.length)]) : sha256(name);
    this.ck = this.h;
    this.mixHash(prologue);
  }

  private mixHash(data: Buffer): void {
    this.h = sha256(this.h, data);
  }
  private mixKey(ikm: Buffer): void {
    const [ck, k] = hkdf(this.ck, ikm, 2);
    this.ck = ck;
    this.cipher = new CipherState(k);
  }
  private mixKeyAndHash(ikm: Buffer): void {
    const [ck, h, k] = hkdf(this.ck, ikm, 3);
    this.ck = ck;
    this.mixHash(h);
    this.cipher = new CipherState(k);
  }
  private encryptAndHash(plain: Buffer): Buffer {
    const out = this.cipher.hasKey ? this.cipher.encrypt(plain, this.h) : plain;
    this.mixHash(out);
    return out;
  }
  private decryptAndHash(sealed: Buffer): Buffer {
    const out = this.cipher.hasKey ? this.cipher.decrypt(sealed, this.h) : sealed;
    this.mixHash(sealed);
    return out;
  }

  /**
   * Reads `-> psk, e` and writes `<- e, ee`; returns the reply and the (receive, send) cipher pair. Like noise-c,
   * a message too short for the key or the payload's MAC is an INVALID_LENGTH error, a bad tag a MAC failure.
   */
  respond(message1: Buffer): { message: Buffer; split: [CipherState, CipherState] } {
    this.mixKeyAndHash(this.psk);
    if (message1.length < DH_LEN) throw new Error('INVALID_LENGTH');
    const re = message1.subarray(0, DH_LEN);
    this.mixHash(re);
    this.mixKey(re); // psk patterns mix ephemeral keys into the key too
    this.decryptAndHash(message1.subarray(DH_LEN));
    const e = crypto.generateKeyPairSync('x25519');
    const ePub = rawPublic(e.publicKey);
    this.mixHash(ePub);
    this.mixKey(ePub);
    this.mixKey(crypto.diffieHellman({ privateKey: e.privateKey, publicKey: publicFromRaw(re) }));
    const tag = this.encryptAndHash(Buffer.alloc(0));
    const [k1, k2] = hkdf(this.ck, Buffer.alloc(0), 2);
    return { message: Buffer.concat([ePub, tag]), split: [new CipherState(k1), new CipherState(k2)] };
  }
}

// X25519 keys as raw 32 bytes: node speaks SPKI DER, whose last 32 bytes are the key after a fixed prefix.
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
function rawPublic(key: crypto.KeyObject): Buffer {
  return (key.export({ type: 'spki', format: 'der' }) as Buffer).subarray(SPKI_X25519_PREFIX.length);
}
function publicFromRaw(raw: Buffer): crypto.KeyObject {
  return crypto.createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: 'der', type: 'spki' });
}
