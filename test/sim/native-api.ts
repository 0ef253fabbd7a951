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
// - Entities: ListEntitiesRequest gets one ListEntities*Response per entity that is not internal, in ESPHome's
//   iteration order (binary_sensor, cover, fan, light, sensor, switch, button, text_sensor, climate, number, select),
//   then ListEntitiesDoneResponse; SubscribeStatesRequest gets every entity's current state (a value nobody has
//   published yet goes out with missing_state, where the message has that field), then each publication. Messages
//   are encoded field by field in the order of ESPHome's generated api_pb2.cpp (2024.11, which 2025.x kept), default
//   values left out; unique_id (field 4) goes out up to 2025.7 (esphome#9022 removed it in 2025.8), object_id to
//   every client up to 2025.12 and from 2026.1 only to clients below API 1.14 (esphome#12818).
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
  /** The firmware's entities (none: ListEntities answers only Done, SubscribeStates nothing). */
  entities?: EntitySource;
}

/** Entity domains the simulated firmware lists, in ESPHome's ComponentIterator order. */
export const API_DOMAINS = ['binary_sensor', 'fan', 'light', 'sensor', 'switch', 'text_sensor', 'climate', 'number',
  'select'] as const;
export type ApiDomain = (typeof API_DOMAINS)[number];

/** What a ListEntities*Response carries beyond the fields every entity has (see the message of each domain). */
export interface EntityTraits {
  /** sensor, number */
  unit?: string;
  /** sensor */
  accuracyDecimals?: number;
  forceUpdate?: boolean;
  /** sensor: SensorStateClass (0 none, 1 measurement, 2 total_increasing, 3 total) */
  stateClass?: number;
  /** binary_sensor */
  isStatusBinarySensor?: boolean;
  /** switch */
  assumedState?: boolean;
  /** number: min, max, step; mode NumberMode (0 auto, 1 box, 2 slider) */
  min?: number;
  max?: number;
  step?: number;
  mode?: number;
  /** select */
  options?: string[];
  /** light: ColorMode values (1 on/off, 2 brightness, 11 colour temperature, 19 cold/warm, 35 RGB, ...) */
  colorModes?: number[];
  minMireds?: number;
  maxMireds?: number;
  effects?: string[];
  /** fan */
  supportsOscillation?: boolean;
  supportsSpeed?: boolean;
  supportsDirection?: boolean;
  speedCount?: number;
  presetModes?: string[];
  /** climate: ClimateMode values (0 off, 1 heat_cool, 2 cool, 3 heat, ...), visual range and steps */
  supportsCurrentTemperature?: boolean;
  supportsTwoPointTargetTemperature?: boolean;
  modes?: number[];
  visualMinTemperature?: number;
  visualMaxTemperature?: number;
  visualTargetTemperatureStep?: number;
  visualCurrentTemperatureStep?: number;
  supportsAction?: boolean;
  fanModes?: number[];
  swingModes?: number[];
  presets?: number[];
}

export interface LightStateValue {
  on: boolean; brightness: number; colorMode: number; colorBrightness?: number; red?: number; green?: number;
  blue?: number; white?: number; colorTemperature?: number; coldWhite?: number; warmWhite?: number; effect?: string;
}
export interface FanStateValue { on: boolean; oscillating?: boolean; direction?: number; speedLevel?: number }
export interface ClimateStateValue {
  mode: number; currentTemperature: number; targetTemperature: number; action: number;
}
/** A state as the firmware holds it; undefined: nothing published yet (sensor, binary_sensor, text_sensor, number,
 *  select). Switches always have one (false before the first write), as lights, fans and climates do. */
export type EntityState = boolean | number | string | LightStateValue | FanStateValue | ClimateStateValue |
  undefined;

export interface ApiEntity {
  domain: ApiDomain;
  /** str_sanitize(str_snake_case(name)); the friendly name's for an entity without a name of its own. */
  objectId: string;
  /** fnv1_hash(objectId): what states and commands are addressed by. */
  key: number;
  /** '' for an entity with no name of its own (it shows as the device). */
  name: string;
  icon?: string;
  /** 0 none, 1 config, 2 diagnostic */
  entityCategory?: number;
  disabledByDefault?: boolean;
  deviceClass?: string;
  traits: EntityTraits;
  state(): EntityState;
  /** A command from a client: SwitchCommandRequest's state. */
  command?(value: unknown): void;
}

/** The entities of a running firmware, as its API server sees them. */
export interface EntitySource {
  /** The entities a client is told of (internal ones left out), in ESPHome's iteration order. */
  entities(): ApiEntity[];
  /** Runs for each state publication; returns the unsubscribe function. */
  onState(cb: (e: ApiEntity) => void): () => void;
  /** Clients connected to the API (ESPHome's api_is_connected(): a TuyaMCU is told "cloud" while there is one). */
  clientsChanged?(count: number): void;
}

/** ESPHome's fnv1_hash (helpers.cpp): FNV-1, multiply then xor, over the object id's bytes. */
export function fnv1Hash(s: string): number {
  let h = 2166136261;
  for (const b of Buffer.from(s)) h = (Math.imul(h, 16777619) ^ b) >>> 0;
  return h >>> 0;
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
  ListEntitiesDoneResponse: 19, SubscribeStatesRequest: 20, SwitchCommandRequest: 33, GetTimeRequest: 36,
} as const;

/** ListEntities*Response and *StateResponse message types by domain (api.proto `option (id)`). */
export const ENTITY_MSG: Record<ApiDomain, { list: number; state: number }> = {
  binary_sensor: { list: 12, state: 21 }, fan: { list: 14, state: 23 }, light: { list: 15, state: 24 },
  sensor: { list: 16, state: 25 }, switch: { list: 17, state: 26 }, text_sensor: { list: 18, state: 27 },
  climate: { list: 46, state: 47 }, number: { list: 49, state: 50 }, select: { list: 52, state: 53 },
};

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
  let clientApi = { major: 0, minor: 0 }; // what HelloRequest says the client speaks
  let unsubscribe: (() => void) | undefined; // the state subscription, once SubscribeStatesRequest came
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
    unsubscribe?.();
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
      const f = readFields(body);
      clientApi = { major: Number(f.get(2) ?? 0), minor: Number(f.get(3) ?? 0) };
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
      // From 2026.1 a client of API 1.14 or later computes object ids itself and is not sent them.
      const newClient = clientApi.major > 1 || (clientApi.major === 1 && clientApi.minor >= 14);
      const objectIds = !(esphomeAtLeast(ver, '2026.1.0') && newClient);
      const uniqueIds = !esphomeAtLeast(ver, '2025.8.0');
      for (const e of fw.entities?.entities() ?? []) {
        reply(ENTITY_MSG[e.domain].list, entityInfo(e, { appName: fw.info.name, objectIds, uniqueIds }));
      }
      reply(MSG.ListEntitiesDoneResponse, Buffer.alloc(0));
    } else if (type === MSG.SubscribeStatesRequest && fw.entities && !unsubscribe) {
      const send = (e: ApiEntity) => reply(ENTITY_MSG[e.domain].state, entityState(e));
      for (const e of fw.entities.entities()) send(e);
      const listed = new Set(fw.entities.entities().map((e) => e.key));
      unsubscribe = fw.entities.onState((e) => {
        if (!closed && listed.has(e.key)) send(e);
      });
    } else if (type === MSG.SwitchCommandRequest) {
      const f = readFields(body);
      const key = Number(f.get(1) ?? 0);
      fw.entities?.entities().find((e) => e.key === key && e.domain === 'switch')?.command?.(!!f.get(2));
    }
    // Everything else (logs, other commands, PingResponse, unknown types) is taken and not answered.
  }
}

/** A ListEntities*Response, field by field as api_pb2.cpp encodes it. */
export function entityInfo(e: ApiEntity, o: { appName: string; objectIds?: boolean; uniqueIds?: boolean }): Buffer {
  const t = e.traits;
  const w = new ProtoWriter();
  // The head every entity message starts with: object_id, key, name, unique_id (App name + domain + object id).
  w.string(1, o.objectIds === false ? '' : e.objectId).fixed32(2, e.key)
    .string(3, e.name).string(4, o.uniqueIds ? `${o.appName}${e.domain}${e.objectId}` : '');
  const cat = e.entityCategory ?? 0;
  switch (e.domain) {
    case 'binary_sensor':
      return w.string(5, e.deviceClass).bool(6, t.isStatusBinarySensor).bool(7, e.disabledByDefault)
        .string(8, e.icon).uint32(9, cat).done();
    case 'fan':
      w.bool(5, t.supportsOscillation).bool(6, t.supportsSpeed).bool(7, t.supportsDirection)
        .int32(8, t.speedCount ?? 0).bool(9, e.disabledByDefault).string(10, e.icon).uint32(11, cat);
      for (const p of t.presetModes ?? []) w.string(12, p);
      return w.done();
    case 'light': {
      const modes = t.colorModes ?? [];
      for (const m of modes) w.uint32(12, m, true);
      // The legacy capability flags, from the colour modes' capability bits (ColorCapability in color_mode.h).
      const has = (bit: number) => modes.some((m) => m & bit);
      const rgb = has(32);
      const ct = has(8) || has(16);
      w.bool(5, has(2)).bool(6, rgb).bool(7, rgb && (has(4) || has(16))).bool(8, ct);
      if (ct) w.float(9, t.minMireds).float(10, t.maxMireds);
      for (const fx of t.effects ?? []) w.string(11, fx);
      return w.bool(13, e.disabledByDefault).string(14, e.icon).uint32(15, cat).done();
    }
    case 'sensor':
      return w.string(5, e.icon).string(6, t.unit).int32(7, t.accuracyDecimals ?? 0).bool(8, t.forceUpdate)
        .string(9, e.deviceClass).uint32(10, t.stateClass).uint32(11, 0).bool(12, e.disabledByDefault)
        .uint32(13, cat).done();
    case 'switch':
      return w.string(5, e.icon).bool(6, t.assumedState).bool(7, e.disabledByDefault).uint32(8, cat)
        .string(9, e.deviceClass).done();
    case 'text_sensor':
      return w.string(5, e.icon).bool(6, e.disabledByDefault).uint32(7, cat).string(8, e.deviceClass).done();
    case 'climate':
      w.bool(5, t.supportsCurrentTemperature).bool(6, t.supportsTwoPointTargetTemperature);
      for (const m of t.modes ?? []) w.uint32(7, m, true);
      w.float(8, t.visualMinTemperature).float(9, t.visualMaxTemperature).float(10, t.visualTargetTemperatureStep)
        .bool(11, (t.presets ?? []).includes(2)).bool(12, t.supportsAction);
      for (const m of t.fanModes ?? []) w.uint32(13, m, true);
      for (const m of t.swingModes ?? []) w.uint32(14, m, true);
      for (const m of t.presets ?? []) w.uint32(16, m, true);
      return w.bool(18, e.disabledByDefault).string(19, e.icon).uint32(20, cat)
        .float(21, t.visualCurrentTemperatureStep).done();
    case 'number':
      return w.string(5, e.icon).float(6, t.min).float(7, t.max).float(8, t.step).bool(9, e.disabledByDefault)
        .uint32(10, cat).string(11, t.unit).uint32(12, t.mode).string(13, e.deviceClass).done();
    case 'select':
      w.string(5, e.icon);
      for (const option of t.options ?? []) w.string(6, option);
      return w.bool(7, e.disabledByDefault).uint32(8, cat).done();
  }
}

/** A *StateResponse for the entity's current state, field by field as api_pb2.cpp encodes it. */
export function entityState(e: ApiEntity): Buffer {
  const s = e.state();
  const w = new ProtoWriter().fixed32(1, e.key);
  switch (e.domain) {
    case 'binary_sensor':
      return w.bool(2, s === true).bool(3, s === undefined).done();
    case 'switch':
      return w.bool(2, s === true).done();
    case 'sensor':
    case 'number':
      // A sensor without a state holds NaN, and NaN is not 0: it goes out along with missing_state.
      return w.float(2, typeof s === 'number' ? s : NaN).bool(3, s === undefined).done();
    case 'text_sensor':
    case 'select':
      return w.string(2, typeof s === 'string' ? s : '').bool(3, s === undefined).done();
    case 'light': {
      const l = s as LightStateValue;
      return w.bool(2, l.on).float(3, l.brightness).uint32(11, l.colorMode).float(10, l.colorBrightness)
        .float(4, l.red).float(5, l.green).float(6, l.blue).float(7, l.white).float(8, l.colorTemperature)
        .float(12, l.coldWhite).float(13, l.warmWhite).string(9, l.effect).done();
    }
    case 'fan': {
      const f = s as FanStateValue;
      return w.bool(2, f.on).bool(3, f.oscillating).uint32(4, 0).uint32(5, f.direction).int32(6, f.speedLevel ?? 0)
        .done();
    }
    case 'climate': {
      const c = s as ClimateStateValue;
      return w.uint32(2, c.mode).float(3, c.currentTemperature).float(4, c.targetTemperature).uint32(8, c.action)
        .done();
    }
  }
}

/** ESPHome's ProtoWriteBuffer: a field at its default (0, false, '', 0.0) is left out unless forced. */
class ProtoWriter {
  private out: number[] = [];
  private tag(field: number, wire: number): void {
    this.out.push(...varint((field << 3) | wire));
  }
  string(field: number, v: string | undefined): this {
    if (!v) return this; // encode_string drops `force`: an empty repeated string is left out too
    const b = Buffer.from(v);
    this.tag(field, 2);
    this.out.push(...varint(b.length), ...b);
    return this;
  }
  bool(field: number, v: boolean | undefined): this {
    if (!v) return this;
    this.tag(field, 0);
    this.out.push(1);
    return this;
  }
  uint32(field: number, v: number | undefined, force = false): this {
    if (!v && !force) return this;
    this.tag(field, 0);
    this.out.push(...varint((v ?? 0) >>> 0));
    return this;
  }
  /** A negative int32 is a 10-byte varint (sign-extended to 64 bits). */
  int32(field: number, v: number): this {
    if (v >= 0) return this.uint32(field, v);
    this.tag(field, 0);
    let n = BigInt.asUintN(64, BigInt(v));
    for (let i = 0; i < 10; i++) {
      this.out.push(Number(n & 0x7fn) | (i < 9 ? 0x80 : 0));
      n >>= 7n;
    }
    return this;
  }
  fixed32(field: number, v: number | undefined): this {
    if (!v) return this;
    this.tag(field, 5);
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.out.push(...b);
    return this;
  }
  float(field: number, v: number | undefined): this {
    if (v === undefined || v === 0) return this;
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.tag(field, 5);
    this.out.push(...b);
    return this;
  }
  done(): Buffer {
    return Buffer.from(this.out);
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

/** A protobuf message's fields (the last of each number): varints and fixed32 as numbers, others as bytes. */
export function readFields(b: Buffer): Map<number, number | Buffer> {
  const out = new Map<number, number | Buffer>();
  let at = 0;
  while (at < b.length) {
    const tag = readVarint(b, at);
    if (!tag) break;
    const field = tag.value >>> 3;
    const wire = tag.value & 7;
    if (wire === 0) {
      const v = readVarint(b, tag.next);
      if (!v) break;
      out.set(field, v.value);
      at = v.next;
    } else if (wire === 2) {
      const len = readVarint(b, tag.next);
      if (!len) break;
      out.set(field, b.subarray(len.next, len.next + len.value));
      at = len.next + len.value;
    } else if (wire === 5) {
      if (tag.next + 4 > b.length) break;
      out.set(field, b.readUInt32LE(tag.next));
      at = tag.next + 4;
    } else if (wire === 1) at = tag.next + 8;
    else break;
  }
  return out;
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
