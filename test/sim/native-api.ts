// ESPHome's encrypted native API, device side, for the simulated plug: enough for a client to do the
// Noise handshake with the device's key, say hello, connect and read the device info.
//
// Written from the protocol descriptions (Noise spec rev 34: Noise_NNpsk0_25519_ChaChaPoly_SHA256;
// ESPHome's api_frame_helper: frames of 0x01 + 16-bit length, a client hello, a server hello naming
// the device, handshake messages prefixed 0x00 (or 0x01 + an error text); then encrypted frames whose
// plaintext is a 16-bit message type, a 16-bit length and a protobuf message; message ids from api.proto).
import crypto from 'node:crypto';
import type net from 'node:net';

export interface DeviceInfo {
  name: string;
  friendlyName?: string;
  macAddress: string;
  esphomeVersion: string;
  model: string;
  manufacturer: string;
  compilationTime: string;
}

const PROTOCOL = 'Noise_NNpsk0_25519_ChaChaPoly_SHA256';
const PROLOGUE = Buffer.from('NoiseAPIInit\0\0');
/** ESPHome 2025.5 speaks API 1.10: clients still send ConnectRequest (legacy authentication). */
const API_VERSION = { major: 1, minor: 10 };
const MSG = { HelloRequest: 1, HelloResponse: 2, ConnectRequest: 3, ConnectResponse: 4, DisconnectRequest: 5, DisconnectResponse: 6,
  PingRequest: 7, PingResponse: 8, DeviceInfoRequest: 9, DeviceInfoResponse: 10, ListEntitiesRequest: 11, ListEntitiesDoneResponse: 19,
  SubscribeStatesRequest: 20 } as const;

/** Serves one client connection of the final device's API port. */
export function serveNativeApi(sock: net.Socket, key: Buffer, info: DeviceInfo): void {
  let buf = Buffer.alloc(0);
  let state: 'hello' | 'handshake' | 'ready' = 'hello';
  const noise = new NoiseResponder(key);
  let send: CipherState;
  let receive: CipherState;

  const frame = (payload: Buffer) => Buffer.concat([Buffer.from([0x01, payload.length >> 8, payload.length & 0xff]), payload]);
  const reply = (type: number, body: Buffer) => {
    const plain = Buffer.concat([Buffer.from([type >> 8, type & 0xff, body.length >> 8, body.length & 0xff]), body]);
    sock.write(frame(send.encrypt(plain)));
  };

  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 3) {
      if (buf[0] !== 0x01) {
        // A plaintext client: ESPHome answers with a handshake error and closes.
        sock.end(frame(Buffer.concat([Buffer.from([0x01]), Buffer.from('Bad indicator byte')])));
        return;
      }
      const len = (buf[1] << 8) | buf[2];
      if (buf.length < 3 + len) return;
      const payload = buf.subarray(3, 3 + len);
      buf = buf.subarray(3 + len);
      if (state === 'hello') {
        // The client hello carries nothing; the server hello picks protocol 1 and names the device.
        sock.write(frame(Buffer.concat([Buffer.from([0x01]), Buffer.from(`${info.name}\0${info.macAddress.replace(/:/g, '').toLowerCase()}\0`)])));
        state = 'handshake';
      } else if (state === 'handshake') {
        try {
          if (payload[0] !== 0x00) throw new Error('Bad handshake packet');
          const { message, split } = noise.respond(payload.subarray(1));
          sock.write(frame(Buffer.concat([Buffer.from([0x00]), message])));
          [receive, send] = split;
          state = 'ready';
        } catch (e) {
          // Same text as ESPHome for a wrong key: the initiator's first message does not decrypt.
          sock.end(frame(Buffer.concat([Buffer.from([0x01]), Buffer.from((e as Error).message)])));
          return;
        }
      } else {
        let plain: Buffer;
        try {
          plain = receive!.decrypt(payload);
        } catch {
          sock.destroy();
          return;
        }
        const type = (plain[0] << 8) | plain[1];
        if (type === MSG.HelloRequest)
          reply(MSG.HelloResponse, proto([[1, API_VERSION.major], [2, API_VERSION.minor], [3, `${info.name} (esphome v${info.esphomeVersion})`], [4, info.name]]));
        else if (type === MSG.ConnectRequest) reply(MSG.ConnectResponse, proto([[1, false]]));
        else if (type === MSG.PingRequest) reply(MSG.PingResponse, Buffer.alloc(0));
        else if (type === MSG.DeviceInfoRequest)
          reply(MSG.DeviceInfoResponse, proto([[1, false], [2, info.name], [3, info.macAddress], [4, info.esphomeVersion], [5, info.compilationTime],
            [6, info.model], [12, info.manufacturer], [13, info.friendlyName ?? '']]));
        else if (type === MSG.ListEntitiesRequest) reply(MSG.ListEntitiesDoneResponse, Buffer.alloc(0));
        else if (type === MSG.DisconnectRequest) {
          reply(MSG.DisconnectResponse, Buffer.alloc(0));
          sock.end();
        }
        // Anything else (SubscribeStates, logs, …) is accepted and answered with silence, as a plug with nothing to say.
      }
    }
  });
}

/** A protobuf message from [field number, value] pairs: bools and numbers as varints, strings length-delimited. */
function proto(fields: [number, string | number | boolean][]): Buffer {
  const out: number[] = [];
  const varint = (n: number) => {
    do {
      out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n >>>= 7;
    } while (n);
  };
  for (const [field, value] of fields) {
    if (typeof value === 'string') {
      if (!value) continue; // proto3 leaves empty strings out
      const bytes = Buffer.from(value);
      varint((field << 3) | 2);
      varint(bytes.length);
      out.push(...bytes);
    } else {
      const n = Number(value);
      if (!n) continue;
      varint(field << 3);
      varint(n);
    }
  }
  return Buffer.from(out);
}

// ---------------- Noise, responder side of NNpsk0 ----------------

const sha256 = (...parts: Buffer[]) => crypto.createHash('sha256').update(Buffer.concat(parts)).digest();
const hmac = (key: Buffer, ...parts: Buffer[]) => crypto.createHmac('sha256', key).update(Buffer.concat(parts)).digest();

/** Noise's HKDF: two or three 32-byte outputs chained from one HMAC of the input key material. */
function hkdf(chainingKey: Buffer, ikm: Buffer, outputs: 2 | 3): Buffer[] {
  const temp = hmac(chainingKey, ikm);
  const out = [hmac(temp, Buffer.from([1]))];
  for (let i = 2; i <= outputs; i++) out.push(hmac(temp, out[i - 2], Buffer.from([i])));
  return out;
}

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
    const c = crypto.createCipheriv('chacha20-poly1305', this.k!, this.nonce(), { authTagLength: 16 });
    c.setAAD(ad, { plaintextLength: plain.length });
    return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
  }
  decrypt(sealed: Buffer, ad: Buffer = Buffer.alloc(0)): Buffer {
    const d = crypto.createDecipheriv('chacha20-poly1305', this.k!, this.nonce(), { authTagLength: 16 });
    d.setAAD(ad, { plaintextLength: sealed.length - 16 });
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]);
  }
}

class NoiseResponder {
  private h: Buffer;
  private ck: Buffer;
  private cipher = new CipherState();

  constructor(private psk: Buffer) {
    const name = Buffer.from(PROTOCOL);
    this.h = name.length <= 32 ? Buffer.concat([name, Buffer.alloc(32 - name.length)]) : sha256(name);
    this.ck = this.h;
    this.mixHash(PROLOGUE);
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

  /** Reads `-> psk, e` and writes `<- e, ee`; returns the reply and the (receive, send) cipher pair. */
  respond(message1: Buffer): { message: Buffer; split: [CipherState, CipherState] } {
    if (message1.length < 32 + 16) throw new Error('Handshake MAC failure');
    this.mixKeyAndHash(this.psk);
    const re = message1.subarray(0, 32);
    this.mixHash(re);
    this.mixKey(re); // psk patterns mix ephemeral keys into the key too
    try {
      this.decryptAndHash(message1.subarray(32));
    } catch {
      throw new Error('Handshake MAC failure');
    }
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
