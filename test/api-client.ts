// A raw ESPHome native API client for tests: byte-level control over the frames, so a test can send what a
// broken or foreign client would (another prologue, a short handshake, messages out of order) and see exactly
// what the device answers. Noise_NNpsk0_25519_ChaChaPoly_SHA256, initiator side, written from the Noise spec.
import crypto from 'node:crypto';
import net from 'node:net';
import { varint, proto } from './sim/native-api.ts';

export const MSG = {
  HelloRequest: 1, HelloResponse: 2, ConnectRequest: 3, ConnectResponse: 4, DisconnectRequest: 5,
  DisconnectResponse: 6, PingRequest: 7, PingResponse: 8, DeviceInfoRequest: 9, DeviceInfoResponse: 10,
  ListEntitiesRequest: 11, ListEntitiesBinarySensorResponse: 12, ListEntitiesFanResponse: 14,
  ListEntitiesLightResponse: 15, ListEntitiesSensorResponse: 16, ListEntitiesSwitchResponse: 17,
  ListEntitiesTextSensorResponse: 18, ListEntitiesDoneResponse: 19, SubscribeStatesRequest: 20,
  BinarySensorStateResponse: 21, FanStateResponse: 23, LightStateResponse: 24, SensorStateResponse: 25,
  SwitchStateResponse: 26, TextSensorStateResponse: 27, SwitchCommandRequest: 33, ListEntitiesClimateResponse: 46,
  ClimateStateResponse: 47, ListEntitiesNumberResponse: 49, NumberStateResponse: 50, ListEntitiesSelectResponse: 52,
  SelectStateResponse: 53,
} as const;

/** One TCP connection that collects what arrives and tells when the other side closed. */
export class Conn {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;
  private constructor(private sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => {});
  }
  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new Conn(s)));
      s.once('error', reject);
    });
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  write(b: Buffer | number[]): void {
    this.sock.write(Buffer.from(b));
  }
  end(): void {
    this.sock.destroy();
  }
  /** Waits until `n` bytes are buffered (returns them) or the connection closes / the time runs out (null). */
  async take(n: number, ms = 2000): Promise<Buffer | null> {
    const until = Date.now() + ms;
    while (this.buf.length < n) {
      if (this.closed || Date.now() >= until) return null;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, until - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** Everything that arrives until the connection closes (or `ms` passes). */
  async rest(ms = 2000): Promise<{ bytes: Buffer; closed: boolean }> {
    const until = Date.now() + ms;
    while (!this.closed && Date.now() < until) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, until - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    const bytes = this.buf;
    this.buf = Buffer.alloc(0);
    return { bytes, closed: this.closed };
  }
  /** The payload of the next Noise frame (0x01 + 16-bit length), or null. */
  async noiseFrame(ms = 2000): Promise<Buffer | null> {
    const h = await this.take(3, ms);
    if (!h) return null;
    if (h[0] !== 0x01) throw new Error(`not a Noise frame: ${h.toString('hex')}`);
    return this.take((h[1] << 8) | h[2], ms);
  }
}

export const noiseFrame = (payload: Buffer | number[]) => {
  const p = Buffer.from(payload);
  return Buffer.concat([Buffer.from([0x01, p.length >> 8, p.length & 0xff]), p]);
};

// Messages are encoded as the simulated device encodes its own (proto3: empty fields left out).
export { varint, proto };

/**
 * Every field of a protobuf message, in order, repeated ones as often as they come: varints (up to 2^53) and fixed32
 * as numbers (float32(n) reads a fixed32 as the float it carries), length-delimited ones as strings.
 */
export function decodeAll(b: Buffer): [number, number | string][] {
  const out: [number, number | string][] = [];
  let at = 0;
  const rv = () => {
    let v = 0;
    for (let i = 0; ; i++) {
      const byte = b[at++];
      v += (byte & 0x7f) * 2 ** (7 * i);
      if (!(byte & 0x80)) return v;
    }
  };
  while (at < b.length) {
    const tag = rv();
    const wire = tag & 7;
    if (wire === 0) out.push([tag >>> 3, rv()]);
    else if (wire === 2) {
      const len = rv();
      out.push([tag >>> 3, b.subarray(at, at + len).toString('utf8')]);
      at += len;
    } else if (wire === 5) {
      out.push([tag >>> 3, b.readUInt32LE(at)]);
      at += 4;
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}

/** The float32 a fixed32 field carries. */
export function float32(n: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b.readFloatLE(0);
}

/** A protobuf message's fields by number (the last of a repeated one): as decodeAll reads them. */
export function decode(b: Buffer): Record<number, number | string> {
  return Object.fromEntries(decodeAll(b));
}

// ---------------- Noise initiator ----------------

const sha256 = (...p: Buffer[]) => crypto.createHash('sha256').update(Buffer.concat(p)).digest();
const hmac = (k: Buffer, ...p: Buffer[]) => crypto.createHmac('sha256', k).update(Buffer.concat(p)).digest();
function hkdf(ck: Buffer, ikm: Buffer, n: 2 | 3): Buffer[] {
  const t = hmac(ck, ikm);
  const out = [hmac(t, Buffer.from([1]))];
  for (let i = 2; i <= n; i++) out.push(hmac(t, out[i - 2], Buffer.from([i])));
  return out;
}

export class Cipher {
  private n = 0n;
  constructor(private k: Buffer) {}
  private iv(): Buffer {
    const iv = Buffer.alloc(12);
    iv.writeBigUInt64LE(this.n++, 4);
    return iv;
  }
  encrypt(p: Buffer, ad: Buffer = Buffer.alloc(0)): Buffer {
    const c = crypto.createCipheriv('chacha20-poly1305', this.k, this.iv(), { authTagLength: 16 });
    c.setAAD(ad, { plaintextLength: p.length });
    return Buffer.concat([c.update(p), c.final(), c.getAuthTag()]);
  }
  decrypt(s: Buffer, ad: Buffer = Buffer.alloc(0)): Buffer {
    const d = crypto.createDecipheriv('chacha20-poly1305', this.k, this.iv(), { authTagLength: 16 });
    d.setAAD(ad, { plaintextLength: s.length - 16 });
    d.setAuthTag(s.subarray(s.length - 16));
    return Buffer.concat([d.update(s.subarray(0, s.length - 16)), d.final()]);
  }
}

const SPKI = Buffer.from('302a300506032b656e032100', 'hex');

export class NoiseInitiator {
  private h: Buffer;
  private ck: Buffer;
  private k?: Cipher;
  private e = crypto.generateKeyPairSync('x25519');
  constructor(private psk: Buffer, prologue: Buffer) {
    this.h = sha256(Buffer.from('Noise_NNpsk0_25519_ChaChaPoly_SHA256')); // names over 32 bytes are hashed
    this.ck = this.h;
    this.h = sha256(this.h, prologue);
  }
  private mixKey(ikm: Buffer): void {
    const [ck, k] = hkdf(this.ck, ikm, 2);
    this.ck = ck;
    this.k = new Cipher(k);
  }
  /** `-> psk, e` with an empty payload: 32 bytes of e, 16 of tag. */
  message1(): Buffer {
    const [ck, h, k] = hkdf(this.ck, this.psk, 3);
    this.ck = ck;
    this.h = sha256(this.h, h);
    this.k = new Cipher(k);
    const pub = (this.e.publicKey.export({ type: 'spki', format: 'der' }) as Buffer).subarray(SPKI.length);
    this.h = sha256(this.h, pub);
    this.mixKey(pub);
    const tag = this.k!.encrypt(Buffer.alloc(0), this.h);
    this.h = sha256(this.h, tag);
    return Buffer.concat([pub, tag]);
  }
  /** `<- e, ee`; returns the (send, receive) ciphers. */
  message2(m: Buffer): { send: Cipher; receive: Cipher } {
    const re = m.subarray(0, 32);
    this.h = sha256(this.h, re);
    this.mixKey(re);
    const peer = crypto.createPublicKey({ key: Buffer.concat([SPKI, re]), format: 'der', type: 'spki' });
    this.mixKey(crypto.diffieHellman({ privateKey: this.e.privateKey, publicKey: peer }));
    this.k!.decrypt(m.subarray(32), this.h);
    const [k1, k2] = hkdf(this.ck, Buffer.alloc(0), 2);
    return { send: new Cipher(k1), receive: new Cipher(k2) };
  }
}

/** An encrypted session after a good handshake: send and read typed messages. */
export class Session {
  constructor(public conn: Conn, private send: Cipher, private receive: Cipher) {}
  msg(type: number, body: Buffer = Buffer.alloc(0)): void {
    const plain = Buffer.concat([Buffer.from([type >> 8, type & 0xff, body.length >> 8, body.length & 0xff]), body]);
    this.conn.write(noiseFrame(this.send.encrypt(plain)));
  }
  /** The next message, or null when the device closed the connection or said nothing in `ms`. */
  async next(ms = 1000): Promise<{ type: number; body: Buffer } | null> {
    const f = await this.conn.noiseFrame(ms);
    if (!f) return null;
    const p = this.receive.decrypt(f);
    return { type: (p[0] << 8) | p[1], body: p.subarray(4, 4 + ((p[2] << 8) | p[3])) };
  }
}

/**
 * Connects and does the handshake as ESPHome expects: the hello frame (default empty) and a prologue of
 * "NoiseAPIInit" + the hello's 16-bit length + its bytes (a test may pass another prologue on purpose).
 */
export async function noiseSession(port: number, key: Buffer, o: { hello?: Buffer; prologue?: Buffer } = {}):
  Promise<{ conn: Conn; serverHello: Buffer | null; reply: Buffer | null; session?: Session }> {
  const hello = o.hello ?? Buffer.alloc(0);
  const conn = await Conn.open(port);
  conn.write(noiseFrame(hello));
  const serverHello = await conn.noiseFrame();
  const helloLength = Buffer.from([hello.length >> 8, hello.length & 0xff]);
  const prologue = o.prologue ?? Buffer.concat([Buffer.from('NoiseAPIInit'), helloLength, hello]);
  const init = new NoiseInitiator(key, prologue);
  conn.write(noiseFrame(Buffer.concat([Buffer.from([0x00]), init.message1()])));
  const reply = await conn.noiseFrame();
  if (!reply || reply[0] !== 0x00) return { conn, serverHello, reply };
  const { send, receive } = init.message2(reply.subarray(1));
  return { conn, serverHello, reply, session: new Session(conn, send, receive) };
}

/** A plaintext session: 0x00 + varint length + varint type + body. */
export class PlainSession {
  constructor(public conn: Conn) {}
  static async open(port: number): Promise<PlainSession> {
    return new PlainSession(await Conn.open(port));
  }
  msg(type: number, body: Buffer = Buffer.alloc(0)): void {
    this.conn.write(Buffer.concat([Buffer.from([0x00, ...varint(body.length), ...varint(type)]), body]));
  }
  async next(ms = 1000): Promise<{ type: number; body: Buffer } | null> {
    const readVarint = async () => {
      let v = 0;
      for (let i = 0; ; i++) {
        const b = await this.conn.take(1, ms);
        if (!b) return null;
        v += (b[0] & 0x7f) * 2 ** (7 * i);
        if (!(b[0] & 0x80)) return v;
      }
    };
    const ind = await this.conn.take(1, ms);
    if (!ind) return null;
    if (ind[0] !== 0x00) throw new Error(`not a plaintext frame: ${ind.toString('hex')}`);
    const len = await readVarint();
    const type = await readVarint();
    if (len === null || type === null) return null;
    const body = len ? await this.conn.take(len, ms) : Buffer.alloc(0);
    return body ? { type, body } : null;
  }
}
