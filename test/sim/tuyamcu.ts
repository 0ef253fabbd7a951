// A simulated TuyaMCU (the second chip of a TuyaMCU device: the Beken only does Wi-Fi, the MCU owns relays, dimmers,
// sensors and speaks Tuya's serial protocol on UART1), and a model of what ESPHome's `tuya:` component does against
// it. Facts and sources: /work/notes/tuya-serial.md.
//
// The MCU side follows Tuya's MCU SDK (system.c/protocol.c v2.5.x, read, not copied): its frame scanner (resync on a
// wrong header byte, skip 2 on a version other than 0x00, skip 3 on an over-long length or a bad checksum), its
// answers (heartbeat 0x00 once after a restart, then 0x01; product info JSON; working mode with or without pins;
// Wi-Fi state acknowledged only when the MCU handles the Wi-Fi LED itself; one 0x07 frame per datapoint), and its
// silences: unknown commands, unknown datapoints, a wrong type and a set of a report-only datapoint get no answer.
//
// The module side (ModuleSide) follows ESPHome's components/tuya/tuya.cpp as of 2024.11 (behaviour, not code): the
// init chain heartbeat -> product -> conf -> (Wi-Fi state) -> datapoint query, one command in flight, 10 ms between
// commands, 300 ms to answer, 5 tries then "Initialization failed at init_state N" and nothing more until the next
// 15 s heartbeat; a stuck Wi-Fi-state step is never retried and never logged as a failure.
import { ManualClock, UartWire, realClock, uartTransfer, type Clock, type UartFormat } from './uart-line.ts';

export { ManualClock, realClock, type Clock };

export type TuyaDpType = 'raw' | 'bool' | 'value' | 'string' | 'enum' | 'bitmap';
export type TuyaDpValue = boolean | number | string | Buffer;

export interface TuyaDatapoint {
  id: number;
  type: TuyaDpType;
  value: TuyaDpValue;
  /** Tuya's DP modes: rw = send and report, ro = report only (a set gets no handler), wr = send only (left out of
   *  the 0x08 answer; a set is still echoed, as the SDK's generated handlers report what they applied). Default rw. */
  mode?: 'rw' | 'ro' | 'wr';
  min?: number;
  max?: number;
  /** An enum's values, index = wire value. */
  range?: string[];
  /** Tuya schema scale: the wire integer is value × 10^scale. The MCU ignores it; ESPHome's `multiply` undoes it. */
  scale?: number;
  /** A bitmap's width on the wire (1, 2 or 4 bytes); default from max, else from the value. */
  length?: 1 | 2 | 4;
}

export interface TuyaDpReading { id: number; type: TuyaDpType; value: TuyaDpValue }

export const DP_TYPE_CODE: Record<TuyaDpType, number> = { raw: 0, bool: 1, value: 2, string: 3, enum: 4, bitmap: 5 };
const DP_TYPE_NAME = Object.fromEntries(Object.entries(DP_TYPE_CODE).map(([k, v]) => [v, k])) as Record<
  number, TuyaDpType>;

/** Command bytes, with the names ESPHome's tuya.h gives them. */
export const CMD = {
  HEARTBEAT: 0x00, PRODUCT_QUERY: 0x01, CONF_QUERY: 0x02, WIFI_STATE: 0x03, WIFI_RESET: 0x04, WIFI_SELECT: 0x05,
  DATAPOINT_DELIVER: 0x06, DATAPOINT_REPORT_ASYNC: 0x07, DATAPOINT_QUERY: 0x08, WIFI_TEST: 0x0e,
  LOCAL_TIME_QUERY: 0x1c, DATAPOINT_REPORT_SYNC: 0x22, DATAPOINT_REPORT_ACK: 0x23, WIFI_RSSI: 0x24,
  VACUUM_MAP_UPLOAD: 0x28, GET_NETWORK_STATUS: 0x2b, EXTENDED_SERVICES: 0x34,
} as const;

const HEAD = 7;

export interface TuyaFrame { version: number; command: number; data: Buffer }

export function tuyaChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return sum;
}

/** 0x55 0xAA, version, command, 16-bit big-endian length, data, sum of all previous bytes mod 256. */
export function encodeFrame(version: number, command: number, data: Uint8Array = Buffer.alloc(0)): Buffer {
  const f = Buffer.alloc(HEAD + data.length);
  f[0] = 0x55;
  f[1] = 0xaa;
  f[2] = version;
  f[3] = command;
  f.writeUInt16BE(data.length, 4);
  Buffer.from(data).copy(f, 6);
  f[f.length - 1] = tuyaChecksum(f.subarray(0, f.length - 1));
  return f;
}

export interface DroppedBytes { reason: 'garbage' | 'checksum'; bytes: Buffer }

/**
 * Whole frames in `buffer`, the incomplete tail to keep for the next read, and what was thrown away (bytes before a
 * header; frames whose checksum failed, after which the scan restarts right behind their 0x55 0xAA).
 */
export function decodeFrames(buffer: Uint8Array): { frames: TuyaFrame[]; rest: Buffer; dropped: DroppedBytes[] } {
  const buf = Buffer.from(buffer);
  const frames: TuyaFrame[] = [];
  const dropped: DroppedBytes[] = [];
  let off = 0;
  let garbageFrom = -1;
  const flushGarbage = (to: number) => {
    if (garbageFrom >= 0) dropped.push({ reason: 'garbage', bytes: buf.subarray(garbageFrom, to) });
    garbageFrom = -1;
  };
  while (off < buf.length) {
    if (buf[off] !== 0x55 || (off + 1 < buf.length && buf[off + 1] !== 0xaa)) {
      if (garbageFrom < 0) garbageFrom = off;
      off++;
      continue;
    }
    if (buf.length - off < HEAD) break;
    const total = HEAD + buf.readUInt16BE(off + 4);
    if (buf.length - off < total) break;
    flushGarbage(off);
    const frame = buf.subarray(off, off + total);
    if (tuyaChecksum(frame.subarray(0, total - 1)) !== frame[total - 1]) {
      dropped.push({ reason: 'checksum', bytes: frame });
      off += 2;
      continue;
    }
    frames.push({ version: frame[2], command: frame[3], data: Buffer.from(frame.subarray(6, total - 1)) });
    off += total;
  }
  flushGarbage(off);
  return { frames, rest: Buffer.from(buf.subarray(off)), dropped };
}

function bytesFor(n: number): 1 | 2 | 4 {
  return n > 0xffff ? 4 : n > 0xff ? 2 : 1;
}

/** id, type, 16-bit big-endian length, value (bool/enum 1 byte, value 4 bytes signed BE, bitmap 1/2/4 bytes BE). */
export function encodeDatapoint(dp: { id: number; type: TuyaDpType; value: TuyaDpValue; length?: 1 | 2 | 4;
  max?: number }): Buffer {
  let v: Buffer;
  switch (dp.type) {
    case 'bool':
      v = Buffer.from([dp.value ? 1 : 0]);
      break;
    case 'value':
      v = Buffer.alloc(4);
      v.writeUInt32BE(Number(dp.value) >>> 0);
      break;
    case 'enum':
      v = Buffer.from([Number(dp.value) & 0xff]);
      break;
    case 'bitmap': {
      const n = Number(dp.value) >>> 0;
      const len = dp.length ?? bytesFor(dp.max ?? n);
      v = Buffer.alloc(len);
      v.writeUIntBE(n, 0, len);
      break;
    }
    case 'string':
      v = Buffer.from(String(dp.value), 'utf8');
      break;
    case 'raw':
      v = Buffer.from(dp.value as Buffer);
      break;
  }
  const head = Buffer.from([dp.id, DP_TYPE_CODE[dp.type], v.length >> 8, v.length & 0xff]);
  return Buffer.concat([head, v]);
}

/** Strict decoding (a test's view): throws where ESPHome would warn and stop. */
export function decodeDatapoints(data: Uint8Array): TuyaDpReading[] {
  const buf = Buffer.from(data);
  const out: TuyaDpReading[] = [];
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < 4) throw new RangeError(`datapoint header truncated at byte ${off}`);
    const id = buf[off];
    const type = DP_TYPE_NAME[buf[off + 1]];
    const len = buf.readUInt16BE(off + 2);
    const v = buf.subarray(off + 4, off + 4 + len);
    if (v.length < len) throw new RangeError(`datapoint ${id} truncated (${v.length} < ${len})`);
    if (!type) throw new RangeError(`datapoint ${id} has unknown type ${buf[off + 1]}`);
    out.push({ id, type, value: decodeValue(type, v, id) });
    off += 4 + len;
  }
  return out;
}

function decodeValue(type: TuyaDpType, v: Buffer, id: number): TuyaDpValue {
  const want = (ok: boolean) => {
    if (!ok) throw new RangeError(`datapoint ${id} has bad ${type} length ${v.length}`);
  };
  switch (type) {
    case 'bool':
      want(v.length === 1);
      return v[0] !== 0;
    case 'value':
      want(v.length === 4);
      return v.readInt32BE(0);
    case 'enum':
      want(v.length === 1);
      return v[0];
    case 'bitmap':
      want(v.length === 1 || v.length === 2 || v.length === 4);
      return v.readUIntBE(0, v.length);
    case 'string':
      return v.toString('utf8');
    case 'raw':
      return Buffer.from(v);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The MCU

export interface TuyaMcuOptions {
  datapoints: TuyaDatapoint[];
  /** The 16-character product ID ("p"). */
  productId?: string;
  /** The MCU firmware version ("v"). */
  version?: string;
  /** "m": 0 default, 1 low-power, 2 anti-misoperation pairing. */
  configMode?: number;
  /** The whole product-info answer, verbatim (e.g. a non-printable one). Overrides productId/version/configMode. */
  productInfo?: string | Buffer;
  /** 'mcu': the MCU drives the Wi-Fi LED and reset button (empty 0x02 answer; module must report Wi-Fi state).
   *  Pins: the module does (0x02 answers status-LED pin, reset pin; the MCU then ignores 0x03). */
  workingMode?: 'mcu' | { ledPin: number; resetPin: number };
  /** Receives but never answers (unpowered MCU, TX/RX swapped, wrong UART). */
  silent?: boolean;
  /** Commands this firmware does not implement: read and forgotten, like any unknown command (e.g. [0x03] for an
   *  MCU built for the low-power or Bluetooth protocol, which never acknowledges the Wi-Fi state). */
  ignoreCommands?: number[];
  /** The MCU's main-loop latency before it answers a complete frame. Default 5 ms. */
  answerDelayMs?: number;
  /** The MCU's UART speed (Tuya: 9600 or 115200). Default 9600. */
  baud?: number;
  /** Version byte of the MCU's frames: 0x03 today, 0x00/0x01 on older or low-power MCUs. Default 3. */
  protocolVersion?: number;
  /** Tuya's SDK sends one 0x07 frame per datapoint; some firmwares pack them all in one. Default 'per-dp'. */
  reportStyle?: 'per-dp' | 'one-frame';
  /** A set of a report-only DP: the SDK has no handler for it, so silence (default); some firmwares re-report. */
  roSet?: 'ignore' | 'report-current';
  /** A value outside min/max (or an enum past its range): clamp and report (default), ignore, or re-report. */
  outOfRange?: 'clamp' | 'ignore' | 'report-current';
  /** Some MCUs ignore every 0x06 until the module has reported "connected to cloud" (0x03 with 0x04): they stay
   *  "listen only" (Tasmota PR #24063). ESPHome reports 0x04 only while an API client is connected. */
  requireCloudForControl?: boolean;
  /** The SDK's processing buffer: frames with more data are dropped. Default 256 (the SDK's minimum is 24). */
  maxDataLength?: number;
  clock?: Clock;
  /** How the UART hands the MCU's bytes to the module: chunks of 1..maxChunk bytes, seeded. */
  chunkSeed?: number;
  maxChunk?: number;
}

export interface ReceivedFrame extends TuyaFrame { at: number }
export interface RejectedBytes { reason: 'header' | 'version' | 'length' | 'checksum'; bytes: Buffer; at: number }

export class TuyaMcu {
  readonly baud: number;
  readonly clock: Clock;
  readonly format: UartFormat;
  /** Valid frames the MCU parsed from the module, in order. */
  readonly received: ReceivedFrame[] = [];
  /** Bytes its scanner skipped, and why. */
  readonly rejected: RejectedBytes[] = [];
  /** Frames the MCU put on its TX. */
  readonly sent: ReceivedFrame[] = [];
  /** The last Wi-Fi state the module reported (0x03), if the MCU handles the Wi-Fi LED. */
  wifiState?: number;
  #o: Required<Pick<TuyaMcuOptions, 'answerDelayMs' | 'protocolVersion' | 'reportStyle' | 'roSet' | 'outOfRange' |
    'maxDataLength'>> & TuyaMcuOptions;
  #dps = new Map<number, TuyaDatapoint>();
  #rx = Buffer.alloc(0);
  #restarted = true;
  #wire: UartWire;
  #listeners = new Set<(bytes: Buffer) => void>();
  #closed = false;

  constructor(opts: TuyaMcuOptions) {
    this.#o = { ...opts, answerDelayMs: opts.answerDelayMs ?? 5, protocolVersion: opts.protocolVersion ?? 3,
      reportStyle: opts.reportStyle ?? 'per-dp', roSet: opts.roSet ?? 'ignore', outOfRange: opts.outOfRange ?? 'clamp',
      maxDataLength: opts.maxDataLength ?? 256 };
    this.baud = opts.baud ?? 9600;
    this.clock = opts.clock ?? realClock;
    this.format = { baud: this.baud };
    for (const dp of opts.datapoints) {
      if (this.#dps.has(dp.id)) throw new Error(`datapoint ${dp.id} declared twice`);
      this.#dps.set(dp.id, { mode: 'rw', ...dp });
    }
    this.#wire = new UartWire(this.clock, this.format, { seed: opts.chunkSeed, maxChunk: opts.maxChunk });
  }

  /** Bytes the module put on its TX, sent at `from` (default: the MCU's own settings). */
  receive(bytes: Uint8Array, from: Partial<UartFormat> = {}): void {
    if (this.#closed) return;
    const read = uartTransfer(bytes, { ...this.format, ...from }, this.format);
    this.#rx = Buffer.concat([this.#rx, read]);
    this.#scan();
  }

  /** Bytes the MCU sends, chunk by chunk as they arrive at the module. Returns an unsubscribe function. */
  onSend(cb: (bytes: Buffer) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  /** Current values (copies). */
  get datapoints(): TuyaDatapoint[] {
    return [...this.#dps.values()].map((dp) => ({ ...dp }));
  }

  /** The user works the device (a button, a knob): the MCU applies it and reports it unprompted. */
  setDatapoint(id: number, value: TuyaDpValue): void {
    const dp = this.#dps.get(id);
    if (!dp) throw new Error(`the MCU has no datapoint ${id}`);
    dp.value = normalise(dp, value);
    this.#send([this.#report([dp])], 0);
  }

  /** The MCU sends a frame of its own (0x1C time query, 0x2B network status query, 0x04 Wi-Fi reset, ...). */
  send(command: number, data: Uint8Array = Buffer.alloc(0)): void {
    this.#send([encodeFrame(this.#o.protocolVersion, command, data)], 0);
  }

  /** Puts bytes on the MCU's TX as they are: a broken frame, line noise. */
  sendRaw(bytes: Uint8Array): void {
    if (!this.#closed) this.#wire.send(bytes, (chunk) => {
      for (const cb of this.#listeners) cb(chunk);
    });
  }

  /** Power-cycles the MCU: its next heartbeat answer is 0x00 again, half-received bytes are lost. */
  restart(): void {
    this.#restarted = true;
    this.#rx = Buffer.alloc(0);
  }

  close(): void {
    this.#closed = true;
    this.#wire.close();
    this.#listeners.clear();
  }

  /** Tuya SDK wifi_uart_service(): scan for frames, skipping as it does, keep an incomplete one for later. */
  #scan(): void {
    const rx = this.#rx;
    let off = 0;
    let headerSkip = -1;
    const at = this.clock.now();
    const reject = (reason: RejectedBytes['reason'], from: number, to: number) =>
      this.rejected.push({ reason, bytes: Buffer.from(rx.subarray(from, to)), at });
    const endHeaderSkip = () => {
      if (headerSkip >= 0) reject('header', headerSkip, off);
      headerSkip = -1;
    };
    while (rx.length - off >= HEAD) {
      if (rx[off] !== 0x55 || rx[off + 1] !== 0xaa) {
        if (headerSkip < 0) headerSkip = off;
        off++;
        continue;
      }
      endHeaderSkip();
      if (rx[off + 2] !== 0x00) {
        reject('version', off, off + 2);
        off += 2;
        continue;
      }
      const len = rx.readUInt16BE(off + 4);
      if (len > this.#o.maxDataLength) {
        reject('length', off, off + 3);
        off += 3;
        continue;
      }
      if (rx.length - off < HEAD + len) break;
      const frame = rx.subarray(off, off + HEAD + len);
      if (tuyaChecksum(frame.subarray(0, frame.length - 1)) !== frame[frame.length - 1]) {
        reject('checksum', off, off + frame.length);
        off += 3;
        continue;
      }
      this.#handle({ version: frame[2], command: frame[3], data: Buffer.from(frame.subarray(6, frame.length - 1)) });
      off += frame.length;
    }
    endHeaderSkip();
    this.#rx = Buffer.from(rx.subarray(off));
  }

  #handle(f: TuyaFrame): void {
    this.received.push({ ...f, at: this.clock.now() });
    if (this.#o.silent || this.#o.ignoreCommands?.includes(f.command)) return;
    const v = this.#o.protocolVersion;
    const out: Buffer[] = [];
    switch (f.command) {
      case CMD.HEARTBEAT:
        out.push(encodeFrame(v, CMD.HEARTBEAT, Buffer.from([this.#restarted ? 0x00 : 0x01])));
        this.#restarted = false;
        break;
      case CMD.PRODUCT_QUERY:
        out.push(encodeFrame(v, CMD.PRODUCT_QUERY, this.#productInfo()));
        break;
      case CMD.CONF_QUERY: {
        const m = this.#o.workingMode ?? 'mcu';
        out.push(encodeFrame(v, CMD.CONF_QUERY, m === 'mcu' ? Buffer.alloc(0) : Buffer.from([m.ledPin, m.resetPin])));
        break;
      }
      case CMD.WIFI_STATE:
        // Only an MCU that drives the Wi-Fi LED itself compiles this handler (SDK: #ifndef WIFI_CONTROL_SELF_MODE).
        if ((this.#o.workingMode ?? 'mcu') === 'mcu') {
          this.wifiState = f.data[0];
          out.push(encodeFrame(v, CMD.WIFI_STATE));
        }
        break;
      case CMD.DATAPOINT_DELIVER:
        if (this.#o.requireCloudForControl && this.wifiState !== 0x04) break;
        out.push(...this.#deliver(f.data));
        break;
      case CMD.DATAPOINT_QUERY: {
        const readable = [...this.#dps.values()].filter((dp) => dp.mode !== 'wr');
        if (this.#o.reportStyle === 'one-frame') out.push(this.#report(readable));
        else for (const dp of readable) out.push(this.#report([dp]));
        break;
      }
      default:
        // The SDK's data_handle() has no default answer: anything else is read and forgotten.
        break;
    }
    this.#send(out, this.#o.answerDelayMs);
  }

  /** 0x06: each datapoint is handled on its own; only handled ones are reported back (one 0x07 each). */
  #deliver(data: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let off = 0;
    while (data.length - off >= 4) {
      const id = data[off];
      const type = DP_TYPE_NAME[data[off + 1]];
      const len = data.readUInt16BE(off + 2);
      const raw = data.subarray(off + 4, off + 4 + len);
      off += 4 + len;
      if (raw.length < len) break;
      const dp = this.#dps.get(id);
      if (!dp || dp.type !== type) continue;
      if (dp.mode === 'ro') {
        if (this.#o.roSet === 'report-current') out.push(this.#report([dp]));
        continue;
      }
      let value: TuyaDpValue;
      try {
        value = decodeValue(type, raw, id);
      } catch {
        continue;
      }
      const fixed = this.#inRange(dp, value);
      if (fixed === undefined) {
        if (this.#o.outOfRange === 'report-current') out.push(this.#report([dp]));
        continue;
      }
      dp.value = fixed;
      out.push(this.#report([dp]));
    }
    return out;
  }

  /** The value to apply, or undefined when the MCU refuses it. */
  #inRange(dp: TuyaDatapoint, value: TuyaDpValue): TuyaDpValue | undefined {
    if (dp.type === 'enum') {
      const last = dp.range ? dp.range.length - 1 : dp.max;
      if (last !== undefined && (value as number) > last) return undefined;
      return value;
    }
    if (dp.type !== 'value') return value;
    const n = value as number;
    const lo = dp.min ?? -Infinity;
    const hi = dp.max ?? Infinity;
    if (n >= lo && n <= hi) return n;
    return this.#o.outOfRange === 'clamp' ? Math.min(hi, Math.max(lo, n)) : undefined;
  }

  #report(dps: TuyaDatapoint[]): Buffer {
    return encodeFrame(this.#o.protocolVersion, CMD.DATAPOINT_REPORT_ASYNC, Buffer.concat(dps.map(encodeDatapoint)));
  }

  #productInfo(): Buffer {
    const o = this.#o;
    if (o.productInfo !== undefined) return Buffer.from(o.productInfo);
    return Buffer.from(`{"p":"${o.productId ?? 'simtuyamcu0000pd'}","v":"${o.version ?? '1.0.0'}","m":${
      o.configMode ?? 0}}`);
  }

  #send(frames: Buffer[], delayMs: number): void {
    if (this.#closed) return;
    for (const f of frames) {
      this.sent.push({ version: f[2], command: f[3], data: Buffer.from(f.subarray(6, f.length - 1)),
        at: this.clock.now() });
      this.#wire.send(f, (chunk) => {
        for (const cb of this.#listeners) cb(chunk);
      }, delayMs);
    }
  }
}

function normalise(dp: TuyaDatapoint, value: TuyaDpValue): TuyaDpValue {
  const bad = () => new TypeError(`datapoint ${dp.id} is ${dp.type}, not ${typeof value}`);
  switch (dp.type) {
    case 'bool':
      if (typeof value !== 'boolean') throw bad();
      return value;
    case 'value':
    case 'enum':
    case 'bitmap':
      if (typeof value !== 'number' || !Number.isInteger(value)) throw bad();
      return value;
    case 'string':
      if (typeof value !== 'string') throw bad();
      return value;
    case 'raw':
      if (!Buffer.isBuffer(value)) throw bad();
      return Buffer.from(value);
  }
}

export function createTuyaMcu(opts: TuyaMcuOptions): TuyaMcu {
  return new TuyaMcu(opts);
}

// ---------------------------------------------------------------------------------------------------------------
// The module side: what ESPHome's tuya component does with that MCU

/** What the module knows of its network, for the Wi-Fi state it reports (tuya.cpp get_wifi_status_code_). */
export interface NetworkState {
  connected: boolean;
  /** A native-API client (Home Assistant) is connected: "cloud" (0x04) for protocol-3 MCUs. */
  apiConnected?: boolean;
  captivePortal?: boolean;
}

export interface TuyaLogLine { at: number; level: 'E' | 'W' | 'I' | 'C' | 'D' | 'V'; text: string }

export interface TuyaInitResult {
  /** The product string as the MCU sent it (or {"p":"INVALID"} when it was not printable). */
  productInfo: string;
  workingMode: 'mcu' | { ledPin: number; resetPin: number };
  /** The version byte of the MCU's heartbeat answer. */
  protocolVersion: number;
  datapoints: TuyaDpReading[];
  logs: TuyaLogLine[];
}

export interface ModuleSideOptions {
  clock?: Clock;
  /** The module's `uart: baud_rate:`. Default: the MCU's (a correct YAML). */
  baud?: number;
  /** `tuya: status_pin:` (GPIO number). */
  statusPin?: number;
  /** A `time:` component: the device's wall clock (read through the Date's UTC fields), or undefined if invalid.
   *  Without it, 0x1C time queries are only logged. */
  time?: () => Date | undefined;
  network?: NetworkState;
  /** `tuya: ignore_mcu_update_on_datapoints:` */
  ignoreMcuUpdateOn?: number[];
  /** ESPHome's main loop period. Default 16 ms. */
  loopIntervalMs?: number;
  /** Give up waiting (for runTuyaComponent) after this long. Default 20 s. */
  timeoutMs?: number;
}

const INIT = { HEARTBEAT: 0, PRODUCT: 1, CONF: 2, WIFI: 3, DATAPOINT: 4, DONE: 5 } as const;
const COMMAND_DELAY = 10;
const RECEIVE_TIMEOUT = 300;
const MAX_RETRIES = 5;

interface ModuleDp { id: number; type: TuyaDpType; len: number; value: TuyaDpValue; uint: number }

export class TuyaInitError extends Error {
  constructor(message: string, readonly initState: number, readonly logs: TuyaLogLine[]) {
    super(message);
    this.name = 'TuyaInitError';
  }
}

const hex = (b: number) => b.toString(16).toUpperCase().padStart(2, '0');

/** What the module side needs of an MCU: a TuyaMcu, or anything else that speaks on a UART. */
export type TuyaMcuPort = Pick<TuyaMcu, 'receive' | 'onSend' | 'baud' | 'clock' | 'format'>;

/** ESPHome's tuya component against a TuyaMcu. */
export class ModuleSide {
  readonly logs: TuyaLogLine[] = [];
  initState: number = INIT.HEARTBEAT;
  initFailed = false;
  readonly ready: Promise<TuyaInitResult>;
  #mcu: TuyaMcuPort;
  #clock: Clock;
  #o: ModuleSideOptions;
  #format: UartFormat;
  #wire: UartWire;
  #rxFifo: number[] = [];
  #rx: number[] = [];
  #queue: { cmd: number; payload: Buffer }[] = [];
  #expected?: number;
  #retries = 0;
  #lastCommand: number;
  #lastRx: number;
  #protocolVersion = 0xff;
  #statusPinReported = -1;
  #resetPinReported = -1;
  #wifiStatus = 0xff;
  #product = '';
  #dps: ModuleDp[] = [];
  #listeners: { id: number; cb: (dp: TuyaDpReading) => void }[] = [];
  #timers = new Map<string, unknown>();
  #unsubscribe?: () => void;
  #settle?: { resolve: (r: TuyaInitResult) => void; reject: (e: Error) => void };
  #running = false;

  constructor(mcu: TuyaMcuPort, opts: ModuleSideOptions = {}) {
    this.#mcu = mcu;
    this.#o = opts;
    this.#clock = opts.clock ?? mcu.clock;
    this.#format = { baud: opts.baud ?? mcu.baud };
    this.#wire = new UartWire(this.#clock, this.#format, { maxChunk: 64 });
    // millis() is far from 0 by the time the component runs, so nothing counts as "just sent" at boot.
    this.#lastCommand = this.#clock.now() - 1e6;
    this.#lastRx = this.#lastCommand;
    this.ready = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    // A caller that only watches events must not get an unhandled rejection.
    this.ready.catch(() => {});
  }

  get protocolVersion(): number {
    return this.#protocolVersion;
  }

  get datapoints(): TuyaDpReading[] {
    return this.#dps.map(({ id, type, value }) => ({ id, type, value }));
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#unsubscribe = this.#mcu.onSend((chunk) => {
      this.#rxFifo.push(...uartTransfer(chunk, this.#mcu.format, this.#format));
    });
    // The boot-time config dump comes before the MCU has answered anything.
    this.#dumpConfig();
    this.#interval('heartbeat', 15000, () => this.#sendEmpty(CMD.HEARTBEAT));
    this.#interval('loop', this.#o.loopIntervalMs ?? 16, () => this.#loop());
    const timeoutMs = this.#o.timeoutMs ?? 20000;
    this.#timeout('give-up', timeoutMs, () => this.#fail(new TuyaInitError(`no Tuya init after ${timeoutMs} ms: ` +
      `Configuration will be reported when setup is complete. Current init_state: ${this.initState}`,
    this.initState, this.logs)));
  }

  /** Powers the module off for good (its UART is closed; a new ModuleSide is a reboot). */
  stop(): void {
    this.#running = false;
    for (const h of this.#timers.values()) this.#clock.clearTimeout(h);
    this.#timers.clear();
    this.#unsubscribe?.();
    this.#wire.close();
  }

  /** Runs for each report of datapoint `id`, and at once for a value already known (register_listener). */
  onDatapoint(id: number, cb: (dp: TuyaDpReading) => void): void {
    this.#listeners.push({ id, cb });
    for (const dp of this.#dps) if (dp.id === id) cb({ id: dp.id, type: dp.type, value: dp.value });
  }

  setNetwork(n: NetworkState): void {
    this.#o.network = n;
  }

  /**
   * An entity command (switch, number, select, ...): what set_*_datapoint_value does. The type comes from the
   * datapoint the MCU reported; for one it never reported, give it (ESPHome then warns and sends anyway).
   */
  setDatapoint(id: number, value: TuyaDpValue, opts: { type?: TuyaDpType; force?: boolean; length?: 1 | 2 | 4 } = {}):
  void {
    const known = this.#dps.find((d) => d.id === id);
    const type = opts.type ?? known?.type;
    if (!type) throw new Error(`datapoint ${id} is unknown to the module: say which type to send`);
    const shown = Buffer.isBuffer(value) ? [...value].map(hex).join('.') : String(typeof value === 'boolean' ?
      Number(value) : value);
    this.#log('D', `Setting datapoint ${id} to ${shown}`);
    if (!known) {
      this.#log('W', `Setting unknown datapoint ${id}`);
    } else if (known.type !== type) {
      this.#log('E', `Attempt to set datapoint ${id} with incorrect type`);
      return;
    } else if (!opts.force && sameValue(known, value)) {
      this.#log('V', 'Not sending unchanged value');
      return;
    }
    const length = type === 'bitmap' ? (opts.length ?? (known?.len as 1 | 2 | 4 | undefined) ?? 1) : undefined;
    this.#sendCommand(CMD.DATAPOINT_DELIVER, encodeDatapoint({ id, type, value, length }));
  }

  // ------------------------------------------------------------------------------------------------------------
  // tuya.cpp's behaviour

  #loop(): void {
    while (this.#rxFifo.length) this.#handleChar(this.#rxFifo.shift()!);
    this.#processQueue();
  }

  #handleChar(c: number): void {
    this.#rx.push(c);
    if (!this.#validate()) this.#rx = [];
    else this.#lastRx = this.#clock.now();
  }

  /** Byte by byte: a byte that does not fit clears the buffer and is itself dropped (no rescan). */
  #validate(): boolean {
    const data = this.#rx;
    const at = data.length - 1;
    const b = data[at];
    if (at === 0) return b === 0x55;
    if (at === 1) return b === 0xaa;
    if (at <= 5) return true;
    const length = (data[4] << 8) | data[5];
    if (at - 6 < length) return true;
    let sum = 0;
    for (let i = 0; i < 6 + length; i++) sum = (sum + data[i]) & 0xff;
    if (b !== sum) {
      this.#log('W', `Tuya Received invalid message checksum ${hex(b)}!=${hex(sum)}`);
      return false;
    }
    const msg = Buffer.from(data);
    this.#log('V', `Received Tuya: CMD=0x${hex(msg[3])} VERSION=${msg[2]} DATA=[${[...msg.subarray(6, 6 + length)]
      .map(hex).join('.')}] INIT_STATE=${this.initState}`);
    this.#handleCommand(msg[3], msg[2], msg, length);
    return false;
  }

  /** `raw` is the whole frame: like the C code, data[0] of an empty frame reads the checksum byte. */
  #handleCommand(command: number, version: number, raw: Buffer, len: number): void {
    const data = raw.subarray(6, 6 + len);
    const b0 = raw[6];
    if (this.#expected !== undefined && this.#expected === command) {
      this.#expected = undefined;
      this.#queue.shift();
      this.#retries = 0;
    }
    switch (command) {
      case CMD.HEARTBEAT:
        this.#log('V', `MCU Heartbeat (0x${hex(b0)})`);
        this.#protocolVersion = version;
        if (b0 === 0) {
          this.#log('I', 'MCU restarted');
          this.initState = INIT.HEARTBEAT;
        }
        if (this.initState === INIT.HEARTBEAT) {
          this.initState = INIT.PRODUCT;
          this.#sendEmpty(CMD.PRODUCT_QUERY);
        }
        break;
      case CMD.PRODUCT_QUERY: {
        const printable = [...data].every((c) => c >= 0x20 && c <= 0x7e);
        this.#product = printable ? data.toString('latin1') : '{"p":"INVALID"}';
        if (this.initState === INIT.PRODUCT) {
          this.initState = INIT.CONF;
          this.#sendEmpty(CMD.CONF_QUERY);
        }
        break;
      }
      case CMD.CONF_QUERY:
        if (len >= 2) {
          this.#statusPinReported = data[0];
          this.#resetPinReported = data[1];
        }
        if (this.initState === INIT.CONF) {
          if (this.#statusPinReported !== -1) {
            this.initState = INIT.DATAPOINT;
            this.#sendEmpty(CMD.DATAPOINT_QUERY);
            if (this.#o.statusPin !== undefined && this.#o.statusPin === this.#statusPinReported) {
              this.#log('V', `Configured status pin ${this.#statusPinReported}`);
            } else {
              this.#log('W', `Supplied status_pin does not equals the reported pin ${this.#statusPinReported}. ` +
                'TuyaMcu will work in limited mode.');
            }
          } else {
            this.initState = INIT.WIFI;
            this.#log('V', 'Configured WIFI_STATE periodic send');
            this.#interval('wifi', 1000, () => this.#sendWifiStatus());
          }
        }
        break;
      case CMD.WIFI_STATE:
        if (this.initState === INIT.WIFI) {
          this.initState = INIT.DATAPOINT;
          this.#sendEmpty(CMD.DATAPOINT_QUERY);
        }
        break;
      case CMD.WIFI_RESET:
        this.#log('E', 'WIFI_RESET is not handled');
        break;
      case CMD.WIFI_SELECT:
        this.#log('E', 'WIFI_SELECT is not handled');
        break;
      case CMD.DATAPOINT_DELIVER:
      case CMD.DATAPOINT_QUERY:
        break;
      case CMD.DATAPOINT_REPORT_ASYNC:
      case CMD.DATAPOINT_REPORT_SYNC:
        if (this.initState === INIT.DATAPOINT) {
          this.initState = INIT.DONE;
          this.#timeout('datapoint_dump', 1000, () => this.#dumpConfig());
        }
        this.#handleDatapoints(data);
        if (command === CMD.DATAPOINT_REPORT_SYNC) this.#sendCommand(CMD.DATAPOINT_REPORT_ACK, Buffer.from([1]));
        break;
      case CMD.WIFI_TEST:
        this.#sendCommand(CMD.WIFI_TEST, Buffer.from([0, 0]));
        break;
      case CMD.WIFI_RSSI:
        // No real radio here: a plausible RSSI as the int8 ESPHome casts into the byte.
        this.#sendCommand(CMD.WIFI_RSSI, Buffer.from([(-55) & 0xff]));
        break;
      case CMD.LOCAL_TIME_QUERY:
        if (this.#o.time) this.#sendLocalTime();
        else this.#log('W', 'LOCAL_TIME_QUERY is not handled because time is not configured');
        break;
      case CMD.VACUUM_MAP_UPLOAD:
        this.#sendCommand(CMD.VACUUM_MAP_UPLOAD, Buffer.from([1]));
        this.#log('W', 'Vacuum map upload requested, responding that it is not enabled.');
        break;
      case CMD.GET_NETWORK_STATUS: {
        const s = this.#wifiStatusCode();
        this.#sendCommand(CMD.GET_NETWORK_STATUS, Buffer.from([s]));
        this.#log('V', `Network status requested, reported as ${s}`);
        break;
      }
      case CMD.EXTENDED_SERVICES:
        if (b0 === 0x04) {
          this.#sendCommand(CMD.EXTENDED_SERVICES, Buffer.from([0x04, 0x00]));
          this.#log('V', 'Reset status notification enabled');
        } else if (b0 === 0x05) {
          this.#log('E', 'EXTENDED_SERVICES::MODULE_RESET is not handled');
        } else if (b0 === 0x0a) {
          this.#log('E', 'EXTENDED_SERVICES::UPDATE_IN_PROGRESS is not handled');
        } else {
          this.#log('E', `Invalid extended services subcommand (0x${hex(b0)}) received`);
        }
        break;
      default:
        this.#log('E', `Invalid command (0x${hex(command)}) received`);
    }
  }

  /** handle_datapoints_: any malformed datapoint ends the parse of the rest of the frame. */
  #handleDatapoints(buf: Buffer): void {
    let off = 0;
    while (buf.length - off >= 4) {
      const id = buf[off];
      const typeCode = buf[off + 1];
      const size = buf.readUInt16BE(off + 2);
      const avail = buf.length - off - 4;
      if (size > avail) {
        this.#log('W', `Datapoint ${id} is truncated and cannot be parsed (${size} > ${avail})`);
        return;
      }
      const v = buf.subarray(off + 4, off + 4 + size);
      const type = DP_TYPE_NAME[typeCode];
      let value: TuyaDpValue;
      let uint = 0;
      switch (type) {
        case 'raw':
          value = Buffer.from(v);
          this.#log('D', `Datapoint ${id} update to ${[...v].map(hex).join('.')}`);
          break;
        case 'bool':
          if (size !== 1) return this.#log('W', `Datapoint ${id} has bad boolean len ${size}`);
          value = v[0] !== 0;
          uint = v[0];
          this.#log('D', `Datapoint ${id} update to ${value ? 'ON' : 'OFF'}`);
          break;
        case 'value':
          if (size !== 4) return this.#log('W', `Datapoint ${id} has bad integer len ${size}`);
          value = v.readInt32BE(0);
          uint = v.readUInt32BE(0);
          this.#log('D', `Datapoint ${id} update to ${value}`);
          break;
        case 'string':
          value = v.toString('utf8');
          this.#log('D', `Datapoint ${id} update to ${value}`);
          break;
        case 'enum':
          if (size !== 1) return this.#log('W', `Datapoint ${id} has bad enum len ${size}`);
          value = uint = v[0];
          this.#log('D', `Datapoint ${id} update to ${value}`);
          break;
        case 'bitmap':
          if (size !== 1 && size !== 2 && size !== 4) {
            return this.#log('W', `Datapoint ${id} has bad bitmask len ${size}`);
          }
          value = uint = v.readUIntBE(0, size);
          this.#log('D', `Datapoint ${id} update to 0x${uint.toString(16).toUpperCase().padStart(6, '0')}`);
          break;
        default:
          return this.#log('W', `Datapoint ${id} has unknown type 0x${hex(typeCode)}`);
      }
      off += 4 + size;
      if (this.#o.ignoreMcuUpdateOn?.includes(id)) {
        this.#log('V', `Datapoint ${id} found in ignore_mcu_update_on_datapoints list, dropping MCU update`);
        continue;
      }
      const dp: ModuleDp = { id, type, len: size, value, uint };
      const i = this.#dps.findIndex((d) => d.id === id);
      if (i >= 0) this.#dps[i] = dp;
      else this.#dps.push(dp);
      for (const l of this.#listeners) if (l.id === id) l.cb({ id, type, value });
    }
  }

  #sendRaw(cmd: { cmd: number; payload: Buffer }): void {
    this.#lastCommand = this.#clock.now();
    if (cmd.cmd === CMD.HEARTBEAT || cmd.cmd === CMD.PRODUCT_QUERY || cmd.cmd === CMD.CONF_QUERY) {
      this.#expected = cmd.cmd;
    } else if (cmd.cmd === CMD.DATAPOINT_DELIVER || cmd.cmd === CMD.DATAPOINT_QUERY) {
      this.#expected = CMD.DATAPOINT_REPORT_ASYNC;
    }
    this.#log('V', `Sending Tuya: CMD=0x${hex(cmd.cmd)} VERSION=0 DATA=[${[...cmd.payload].map(hex).join('.')}] ` +
      `INIT_STATE=${this.initState}`);
    this.#wire.send(encodeFrame(0, cmd.cmd, cmd.payload), (chunk) => this.#mcu.receive(chunk, this.#format));
  }

  #processQueue(): void {
    const now = this.#clock.now();
    const delay = now - this.#lastCommand;
    if (now - this.#lastRx > RECEIVE_TIMEOUT) this.#rx = [];
    if (this.#expected !== undefined && delay > RECEIVE_TIMEOUT) {
      this.#expected = undefined;
      if (this.initState !== INIT.DONE) {
        if (++this.#retries >= MAX_RETRIES) {
          this.initFailed = true;
          this.#log('E', `Initialization failed at init_state ${this.initState}`);
          this.#queue.shift();
          this.#retries = 0;
          this.#fail(new TuyaInitError(`Initialization failed at init_state ${this.initState}`, this.initState,
            this.logs));
        }
      } else {
        this.#queue.shift();
      }
    }
    if (delay > COMMAND_DELAY && this.#queue.length && this.#rx.length === 0 && this.#expected === undefined) {
      this.#sendRaw(this.#queue[0]);
      if (this.#expected === undefined) this.#queue.shift();
    }
  }

  #sendCommand(cmd: number, payload: Buffer): void {
    this.#queue.push({ cmd, payload });
    this.#processQueue();
  }

  #sendEmpty(cmd: number): void {
    this.#sendCommand(cmd, Buffer.alloc(0));
  }

  #wifiStatusCode(): number {
    const n = this.#o.network ?? { connected: true };
    // protocol_version_ starts as uint8 -1 (255), so before any heartbeat answer it counts as protocol 3.
    if (n.connected) return this.#protocolVersion >= 0x03 && n.apiConnected ? 4 : 3;
    return n.captivePortal ? 1 : 2;
  }

  #sendWifiStatus(): void {
    const s = this.#wifiStatusCode();
    if (s === this.#wifiStatus) return;
    this.#log('D', 'Sending WiFi Status');
    this.#wifiStatus = s;
    this.#sendCommand(CMD.WIFI_STATE, Buffer.from([s]));
  }

  #sendLocalTime(): void {
    const t = this.#o.time?.();
    let payload: Buffer;
    if (t && !Number.isNaN(t.getTime())) {
      const dow = t.getUTCDay() === 0 ? 7 : t.getUTCDay();
      this.#log('D', 'Sending local time');
      payload = Buffer.from([1, t.getUTCFullYear() - 2000, t.getUTCMonth() + 1, t.getUTCDate(), t.getUTCHours(),
        t.getUTCMinutes(), t.getUTCSeconds(), dow]);
    } else {
      this.#log('W', 'Sending missing local time');
      payload = Buffer.alloc(8);
    }
    this.#sendCommand(CMD.LOCAL_TIME_QUERY, payload);
  }

  #dumpConfig(): void {
    this.#log('C', 'Tuya:');
    if (this.initState !== INIT.DONE) {
      this.#log('C', this.initFailed ? `  Initialization failed. Current init_state: ${this.initState}`
        : `  Configuration will be reported when setup is complete. Current init_state: ${this.initState}`);
      this.#log('C', '  If no further output is received, confirm that this is a supported Tuya device.');
      return;
    }
    for (const dp of this.#dps) {
      const v = dp.value;
      const text = dp.type === 'raw' ? `raw (value: ${[...(v as Buffer)].map(hex).join('.')})`
        : dp.type === 'bool' ? `switch (value: ${v ? 'ON' : 'OFF'})`
          : dp.type === 'value' ? `int value (value: ${v})`
            : dp.type === 'string' ? `string value (value: ${v})`
              : dp.type === 'enum' ? `enum (value: ${v})` : `bitmask (value: ${(v as number).toString(16)})`;
      this.#log('C', `  Datapoint ${dp.id}: ${text}`);
    }
    if (this.#statusPinReported !== -1 || this.#resetPinReported !== -1) {
      this.#log('C', `  GPIO Configuration: status: pin ${this.#statusPinReported}, reset: pin ${
        this.#resetPinReported}`);
    }
    this.#log('C', `  Product: '${this.#product}'`);
    this.#succeed();
  }

  #succeed(): void {
    const s = this.#settle;
    if (!s) return;
    this.#settle = undefined;
    this.#cancel('give-up');
    s.resolve({
      productInfo: this.#product,
      workingMode: this.#statusPinReported !== -1
        ? { ledPin: this.#statusPinReported, resetPin: this.#resetPinReported } : 'mcu',
      protocolVersion: this.#protocolVersion,
      datapoints: this.datapoints,
      logs: this.logs,
    });
  }

  #fail(e: Error): void {
    const s = this.#settle;
    if (!s) return;
    this.#settle = undefined;
    this.#cancel('give-up');
    s.reject(e);
  }

  #log(level: TuyaLogLine['level'], text: string): void {
    this.logs.push({ at: this.#clock.now(), level, text });
  }

  /** ESPHome's set_interval: the first run comes at once (the random phase offset is taken as 0 here). */
  #interval(name: string, ms: number, fn: () => void): void {
    this.#cancel(name);
    const run = () => {
      this.#timers.set(name, this.#clock.setTimeout(run, ms));
      fn();
    };
    this.#timers.set(name, this.#clock.setTimeout(run, 0));
  }

  #timeout(name: string, ms: number, fn: () => void): void {
    this.#cancel(name);
    this.#timers.set(name, this.#clock.setTimeout(() => {
      this.#timers.delete(name);
      fn();
    }, ms));
  }

  #cancel(name: string): void {
    const h = this.#timers.get(name);
    if (h !== undefined) this.#clock.clearTimeout(h);
    this.#timers.delete(name);
  }
}

function sameValue(known: ModuleDp, value: TuyaDpValue): boolean {
  if (Buffer.isBuffer(value)) return Buffer.isBuffer(known.value) && known.value.equals(value);
  if (typeof value === 'string') return known.value === value;
  return known.uint === (Number(value) >>> 0);
}

/**
 * Starts ESPHome's tuya component against `mcu` and waits for it to end up where the real one does: the datapoint
 * dump a second after the first report (resolves, component still running: stop it when done), or
 * "Initialization failed at init_state N" / no progress within timeoutMs (rejects with a TuyaInitError carrying the
 * component's log; the component is stopped).
 */
export async function runTuyaComponent(mcu: TuyaMcuPort, opts: ModuleSideOptions = {}):
Promise<TuyaInitResult & { component: ModuleSide }> {
  const component = new ModuleSide(mcu, opts);
  component.start();
  try {
    return { ...(await component.ready), component };
  } catch (e) {
    component.stop();
    throw e;
  }
}
