// Energy-metering chips on a plug's UART, byte-exact, and what ESPHome makes of their bytes.
// Facts and sources: /work/notes/energy-chips.md.
//
// BL0942 (Belling): silent until polled. ESPHome's bl0942 writes its MODE register at setup (behind the write-protect
// register), reads it back, then every update_interval sends 0x58|address, 0xAA and gets the 23-byte "full packet".
// The chip knows nothing of volts: its registers are counts, and what ESPHome shows depends on its reference
// constants, so a board here has its own counts per volt/amp/watt/kWh (default: ESPHome's defaults).
//
// HLW8032 (HiLink): talks unprompted, a 24-byte frame after the other at 4800 baud 8E1, in the CSE7766's layout, but
// its parameter registers leave out the board's voltage divider and shunt: ESPHome's cse7766 (which assumes a
// CSE7766) reads such a board's volts and watts off by the divider ratio.
import { UartWire, realClock, uartTransfer, type Clock, type UartFormat } from './uart-line.ts';

const f32 = Math.fround;

// ---------------------------------------------------------------------------------------------------------------
// BL0942

/** Counts per unit: register / ref = volts, amps, watts, kWh (ESPHome's voltage/current/power/energy_reference). */
export interface Bl0942Refs { voltage: number; current: number; power: number; energy: number }

/** ESPHome's defaults (bl0942.h): UREF 73989/1.218 V, IREF 305978/1.218 A, PREF from Tasmota, EREF measured. */
export const BL0942_ESPHOME_REFS: Bl0942Refs = {
  voltage: 15873.35944299, current: 251213.46469622, power: 596, energy: 3304.61127328,
};

export const BL0942_REG = {
  I_RMS: 0x03, V_RMS: 0x04, I_FAST_RMS: 0x05, WATT: 0x06, CF_CNT: 0x07, FREQ: 0x08, STATUS: 0x09,
  MODE: 0x19, SOFT_RESET: 0x1c, USR_WRPROT: 0x1d,
} as const;
const BL0942_MODE_DEFAULT = 0x87;
const BL0942_READ = 0x58;
const BL0942_WRITE = 0xa8;
const BL0942_FULL_PACKET = 0xaa;

export interface Bl0942Options {
  volts: number;
  amps: number;
  watts: number;
  hz?: number;
  /** A1/A2 pins: 0..3, OR-ed into the command bytes. */
  address?: number;
  /** SCLK_BPS pin: 4800 (low) or 9600 (high). MODE bits 9:8 can switch to 19200/38400. Default 4800. */
  baud?: number;
  /** Energy already counted when the simulation starts. */
  energyKwh?: number;
  /** The board's real counts per unit (its shunt and divider). Default: what ESPHome assumes. */
  board?: Partial<Bl0942Refs>;
  /** Time from the end of a read command to the first answer byte. Default 1 ms. */
  responseDelayMs?: number;
  clock?: Clock;
  seed?: number;
}

export interface Bl0942Readings { voltage: number; current: number; power: number; energy: number; frequency: number }

export class Bl0942 {
  readonly clock: Clock;
  /** Command bytes the chip accepted, for tests: {command, register}. */
  readonly commands: { op: 'read' | 'write'; register: number; value?: number; at: number }[] = [];
  #o: Bl0942Options;
  #board: Bl0942Refs;
  #address: number;
  #pinBaud: number;
  #mode = BL0942_MODE_DEFAULT;
  #unlocked = false;
  #cmd: number[] = [];
  #wire: UartWire;
  #listeners = new Set<(b: Buffer) => void>();
  #energyKwh: number;
  #since: number;
  #cf = 0;

  constructor(o: Bl0942Options) {
    this.#o = { ...o };
    this.clock = o.clock ?? realClock;
    this.#board = { ...BL0942_ESPHOME_REFS, ...o.board };
    this.#address = o.address ?? 0;
    this.#pinBaud = o.baud ?? 4800;
    this.#energyKwh = o.energyKwh ?? 0;
    this.#since = this.clock.now();
    this.#wire = new UartWire(this.clock, this.format, { seed: o.seed, maxChunk: 8 });
  }

  /** The chip's current line settings (8N1; the baud can change with MODE). */
  get format(): UartFormat {
    const sel = (this.#mode >> 8) & 3;
    return { baud: sel === 2 ? 19200 : sel === 3 ? 38400 : this.#pinBaud };
  }

  /** The load changes; energy counted so far at the old power is kept. */
  setLoad(load: Partial<Pick<Bl0942Options, 'volts' | 'amps' | 'watts' | 'hz'>>): void {
    this.#accumulate();
    Object.assign(this.#o, load);
  }

  onSend(cb: (bytes: Buffer) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  /** Bytes the module sent on its TX, at `from` (default: the chip's own settings). */
  receive(bytes: Uint8Array, from: Partial<UartFormat> = {}): void {
    const format = this.format;
    for (const b of uartTransfer(bytes, { ...format, ...from }, format)) this.#byte(b);
  }

  /** A register as the chip would answer it (24 bits). */
  register(reg: number): number {
    this.#accumulate();
    const o = this.#o;
    const b = this.#board;
    const clamp24 = (n: number) => Math.max(0, Math.min(0xffffff, Math.round(n)));
    switch (reg) {
      case BL0942_REG.I_RMS:
      case BL0942_REG.I_FAST_RMS:
        return clamp24(o.amps * b.current);
      case BL0942_REG.V_RMS:
        return clamp24(o.volts * b.voltage);
      case BL0942_REG.WATT: {
        const w = Math.max(-0x800000, Math.min(0x7fffff, Math.round(o.watts * b.power)));
        return w & 0xffffff;
      }
      case BL0942_REG.CF_CNT:
        return this.#cf & 0xffffff;
      case BL0942_REG.FREQ:
        return Math.round(1e6 / (o.hz ?? 50)) & 0xffff;
      case BL0942_REG.STATUS:
        // CF_REVP: active power flowing backwards.
        return o.watts < 0 ? 1 : 0;
      case BL0942_REG.MODE:
        return this.#mode;
      case BL0942_REG.USR_WRPROT:
        return this.#unlocked ? 0x55 : 0;
      default:
        return 0;
    }
  }

  /** The 23-byte full packet: 0x55, I_RMS, V_RMS, I_FAST_RMS, WATT, CF_CNT, FREQ, STATUS (3 bytes LE each), sum. */
  packet(): Buffer {
    const p = Buffer.alloc(23);
    p[0] = 0x55;
    const regs = [BL0942_REG.I_RMS, BL0942_REG.V_RMS, BL0942_REG.I_FAST_RMS, BL0942_REG.WATT, BL0942_REG.CF_CNT,
      BL0942_REG.FREQ, BL0942_REG.STATUS];
    regs.forEach((r, i) => p.writeUIntLE(this.register(r), 1 + 3 * i, 3));
    p[22] = bl0942Checksum([BL0942_READ | this.#address, ...p.subarray(0, 22)]);
    return p;
  }

  /** What ESPHome's bl0942 publishes for the packet it would get now, with its default references or `ref`. */
  expectedReadings(ref: Partial<Bl0942Refs> = {}): Bl0942Readings {
    const r = parseBl0942Packet(this.packet(), { address: this.#address, refs: ref });
    if (!r.readings) throw new Error(r.error);
    return r.readings;
  }

  close(): void {
    this.#wire.close();
    this.#listeners.clear();
  }

  #accumulate(): void {
    const now = this.clock.now();
    const hours = (now - this.#since) / 3_600_000;
    this.#since = now;
    this.#energyKwh += Math.abs(this.#o.watts) * hours / 1000;
    this.#cf = Math.floor(this.#energyKwh * this.#board.energy);
  }

  /** Commands are 2 bytes (read) or 6 bytes (write); a first byte that is neither, or another chip's, is skipped. */
  #byte(b: number): void {
    const cmd = this.#cmd;
    if (cmd.length === 0) {
      if (b !== (BL0942_READ | this.#address) && b !== (BL0942_WRITE | this.#address)) return;
      cmd.push(b);
      return;
    }
    cmd.push(b);
    if (cmd[0] === (BL0942_READ | this.#address)) {
      this.#cmd = [];
      this.#read(cmd[1]);
    } else if (cmd.length === 6) {
      this.#cmd = [];
      if (bl0942Checksum(cmd.slice(0, 5)) !== cmd[5]) return;
      this.#write(cmd[1], cmd[2] | (cmd[3] << 8) | (cmd[4] << 16));
    }
  }

  #read(reg: number): void {
    const at = this.clock.now();
    this.commands.push({ op: 'read', register: reg, at });
    let answer: Buffer;
    if (reg === BL0942_FULL_PACKET) {
      answer = this.packet();
    } else {
      const v = this.register(reg);
      answer = Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, 0]);
      answer[3] = bl0942Checksum([BL0942_READ | this.#address, reg, answer[0], answer[1], answer[2]]);
    }
    this.#wire.send(answer, (chunk) => {
      for (const cb of this.#listeners) cb(chunk);
    }, this.#o.responseDelayMs ?? 1);
  }

  /** User registers only take writes after 0x55 went to USR_WRPROT; the write-protect register itself always does. */
  #write(reg: number, value: number): void {
    this.commands.push({ op: 'write', register: reg, value, at: this.clock.now() });
    if (reg === BL0942_REG.USR_WRPROT) {
      this.#unlocked = (value & 0xff) === 0x55;
      return;
    }
    if (!this.#unlocked) return;
    if (reg === BL0942_REG.SOFT_RESET) {
      if (value === 0x5a5a5a) this.#mode = BL0942_MODE_DEFAULT;
      return;
    }
    if (reg === BL0942_REG.MODE) {
      this.#mode = value & 0x3ff;
      // The next bytes go out at the new rate, if bits 9:8 changed it.
      this.#wire.close();
      this.#wire = new UartWire(this.clock, this.format, { seed: this.#o.seed, maxChunk: 8 });
    }
  }
}

/** Sum of the bytes, inverted (bl0942: checksum of commands, register answers and the full packet alike). */
export function bl0942Checksum(bytes: Iterable<number>): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s ^ 0xff;
}

export function createBl0942(opts: Bl0942Options): Bl0942 {
  return new Bl0942(opts);
}

/**
 * ESPHome's bl0942 on one 23-byte read: the checksum (seeded with 0x58|address) first, then the header, then
 * register / reference in float. `error` carries the warning ESPHome logs when it drops the packet.
 */
export function parseBl0942Packet(p: Uint8Array, opts: { address?: number; refs?: Partial<Bl0942Refs> } = {}):
{ readings?: Bl0942Readings; error?: string } {
  if (p.length !== 23) return { error: `not a full packet (${p.length} bytes)` };
  const refs = resolveBl0942Refs(opts.refs ?? {});
  const cs = bl0942Checksum([BL0942_READ | (opts.address ?? 0), ...p.subarray(0, 22)]);
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(2, '0');
  if (cs !== p[22]) return { error: `BL0942 invalid checksum! 0x${hex(cs)} != 0x${hex(p[22])}` };
  if (p[0] !== 0x55) return { error: `Invalid data. Header mismatch: ${p[0]}` };
  const b = Buffer.from(p);
  const watt = b.readIntLE(10, 3);
  const freq = b.readUInt16LE(16);
  return {
    readings: {
      voltage: f32(f32(b.readUIntLE(4, 3)) / f32(refs.voltage)),
      current: f32(f32(b.readUIntLE(1, 3)) / f32(refs.current)),
      power: f32(f32(watt) / f32(refs.power)),
      energy: f32(f32(b.readUIntLE(13, 3)) / f32(refs.energy)),
      frequency: f32(1000000 / f32(freq)),
    },
  };
}

/**
 * ESPHome's bl0942 loop() on the bytes its UART buffered: nothing until 23 bytes are there, then exactly 23 are read
 * as one packet, wherever they start (no header search); fewer than 23 for more than 200 ms are thrown away. Call
 * loop() as ESPHome's main loop would (every ~16 ms).
 */
export class Bl0942Reader {
  #buf: number[] = [];
  #rxStart = 0;

  constructor(private opts: { address?: number; refs?: Partial<Bl0942Refs> } = {}) {}

  push(bytes: Uint8Array): void {
    this.#buf.push(...bytes);
  }

  loop(nowMs: number): { readings?: Bl0942Readings; log?: string } | undefined {
    const avail = this.#buf.length;
    if (!avail) return undefined;
    if (avail < 23) {
      // rx_start_ 0 means "not started", so a start at millis() 0 is taken as none (as on the device).
      if (!this.#rxStart) {
        this.#rxStart = nowMs;
      } else if (nowMs > this.#rxStart + 200) {
        this.#buf = [];
        this.#rxStart = 0;
        return { log: `W Junk on wire. Throwing away partial message (${avail} bytes)` };
      }
      return undefined;
    }
    const packet = Buffer.from(this.#buf.splice(0, 23));
    this.#rxStart = 0;
    const r = parseBl0942Packet(packet, this.opts);
    return r.readings ? { readings: r.readings } : { log: `W ${r.error}` };
  }
}

/** As bl0942 setup(): a set current or voltage reference implies the power one, a power reference the energy one. */
export function resolveBl0942Refs(set: Partial<Bl0942Refs>): Bl0942Refs {
  const r = { ...BL0942_ESPHOME_REFS, ...set };
  let powerSet = set.power !== undefined;
  if ((set.current !== undefined || set.voltage !== undefined) && !powerSet) {
    r.power = f32((f32(r.voltage) * f32(r.current) * 3537.0 / 305978.0) / 73989.0);
    powerSet = true;
  }
  if (powerSet && set.energy === undefined) r.energy = f32(f32(r.power) * 3600000 / 419430.4);
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// HLW8032

export interface Hlw8032Options {
  volts: number;
  amps: number;
  watts: number;
  /** The board's voltage divider ratio the datasheet multiplies in: (R_up + R_down) / R_down / 1000. Default 1.88
   *  (4 × 470 kΩ over 1 kΩ, the datasheet's application circuit). */
  voltageCoefficient?: number;
  /** 1 / (shunt in Ω × 1000): 1 for the usual 1 mΩ shunt. Default 1. */
  currentCoefficient?: number;
  /** The chip's factory parameter registers. Default: those of a real HLW8032's frame. */
  params?: { voltage?: number; current?: number; power?: number };
  /** Frame period: the datasheet's 50 ms; at 4800 8E1 a frame needs 55 ms on the wire, so frames follow back to
   *  back. */
  periodMs?: number;
  clock?: Clock;
  seed?: number;
}

export const HLW8032_DEFAULT_PARAMS = { voltage: 0x02e180, current: 0x003ea8, power: 0x4f9ae8 };
export const HLW8032_FORMAT: UartFormat = { baud: 4800, parity: 'even', stopBits: 1 };

export class Hlw8032 {
  readonly clock: Clock;
  readonly format = HLW8032_FORMAT;
  /** Frames sent so far. */
  framesSent = 0;
  #o: Hlw8032Options;
  #params: { voltage: number; current: number; power: number };
  #wire: UartWire;
  #listeners = new Set<(b: Buffer) => void>();
  #timer: unknown;
  #regs = { voltage: 0xffffff, current: 0xffffff, power: 0xffffff };
  #pulses = 0;
  #pulseFraction = 0;
  #pfCarry = 0;
  #since: number;

  constructor(o: Hlw8032Options) {
    this.#o = { ...o };
    this.clock = o.clock ?? realClock;
    this.#params = { ...HLW8032_DEFAULT_PARAMS, ...o.params };
    this.#since = this.clock.now();
    this.#wire = new UartWire(this.clock, this.format, { seed: o.seed, maxChunk: 6 });
  }

  setLoad(load: Partial<Pick<Hlw8032Options, 'volts' | 'amps' | 'watts'>>): void {
    this.#count();
    Object.assign(this.#o, load);
  }

  onSend(cb: (bytes: Buffer) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  /** Powers the chip: frames start at once and keep coming. */
  start(): void {
    if (this.#timer !== undefined) return;
    const tick = () => {
      const now = this.clock.now();
      this.#wire.send(this.frame(), (chunk) => {
        for (const cb of this.#listeners) cb(chunk);
      });
      this.framesSent++;
      const next = Math.max(now + (this.#o.periodMs ?? 50), this.#wire.busyUntil);
      this.#timer = this.clock.setTimeout(tick, next - now);
    };
    this.#timer = this.clock.setTimeout(tick, 0);
  }

  stop(): void {
    if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  close(): void {
    this.stop();
    this.#wire.close();
    this.#listeners.clear();
  }

  /**
   * The frame the chip would send now. A register is a pulse period: parameter × coefficients / quantity. When
   * that period would not fit 24 bits (nothing measurable), the state byte flags it and the register keeps its last
   * value; a power register that is not fresh also clears "power updated" in the data-update byte.
   */
  frame(): Buffer {
    this.#count();
    const o = this.#o;
    const kv = o.voltageCoefficient ?? 1.88;
    const ki = o.currentCoefficient ?? 1;
    const p = this.#params;
    let flags = 0;
    let update = 0x01;
    type Reg = 'voltage' | 'current' | 'power';
    const reg = (param: number, coeff: number, q: number, bit: number, upd: number, key: Reg) => {
      const r = q > 0 ? Math.round((param * coeff) / q) : Infinity;
      if (r > 0xffffff) {
        flags |= bit;
      } else {
        this.#regs[key] = r;
        update |= upd;
      }
      return this.#regs[key];
    };
    const vReg = reg(p.voltage, kv, o.volts, 0x08, 0x40, 'voltage');
    const iReg = reg(p.current, ki, o.amps, 0x04, 0x20, 'current');
    const pReg = reg(p.power, kv * ki, Math.abs(o.watts), 0x02, 0x10, 'power');
    const f = Buffer.alloc(24);
    f[0] = flags ? 0xf0 | flags : 0x55;
    f[1] = 0x5a;
    [p.voltage, vReg, p.current, iReg, p.power, pReg].forEach((v, i) => f.writeUIntBE(v & 0xffffff, 2 + 3 * i, 3));
    f[20] = update | (this.#pfCarry << 7);
    f.writeUInt16BE(this.#pulses & 0xffff, 21);
    f[23] = cse7766Checksum(f);
    return f;
  }

  /** PF pulses: one per Pparam × Kv × Ki / 3.6e9 Wh (the datasheet's pulses-per-kWh, inverted). */
  #count(): void {
    const now = this.clock.now();
    const o = this.#o;
    const wh = (Math.abs(o.watts) * (now - this.#since)) / 3_600_000;
    this.#since = now;
    const perPulse = (this.#params.power * (o.voltageCoefficient ?? 1.88) * (o.currentCoefficient ?? 1)) / 3.6e9;
    const total = this.#pulseFraction + wh / perPulse;
    const whole = Math.floor(total);
    this.#pulseFraction = total - whole;
    const before = this.#pulses;
    this.#pulses += whole;
    // The data-update byte's bit 7 flips each time the 16-bit PF counter wraps.
    if (Math.floor(this.#pulses / 0x10000) !== Math.floor(before / 0x10000)) this.#pfCarry ^= 1;
  }
}

export function createHlw8032(opts: Hlw8032Options): Hlw8032 {
  return new Hlw8032(opts);
}

/** Bytes 2..22 summed (CSE7766 and HLW8032 alike; the two header bytes are left out). */
export function cse7766Checksum(frame: ArrayLike<number>): number {
  let s = 0;
  for (let i = 2; i < 23; i++) s = (s + frame[i]) & 0xff;
  return s;
}

export interface Cse7766Readings {
  /** Whether ESPHome parsed the frame at all. */
  valid: boolean;
  voltage?: number;
  current?: number;
  power?: number;
  /** Wh (cse7766's energy unit), only with a state carried from frame to frame. */
  energy?: number;
  apparentPower?: number;
  reactivePower?: number;
  powerFactor?: number;
  /** What ESPHome logs for this frame (level + text). */
  logs: string[];
}

/** The energy counter ESPHome's cse7766 keeps between frames. */
export interface Cse7766State { cfPulsesLast: number; cfPulsesTotal: number; energyHasState: boolean }

export function newCse7766State(): Cse7766State {
  return { cfPulsesLast: 0, cfPulsesTotal: 0, energyHasState: false };
}

/**
 * What ESPHome's cse7766 (2025 and later) publishes for one 24-byte frame, every sensor configured. V = coefficient /
 * cycle with no divider or shunt factor (a CSE7766's coefficients include them; an HLW8032's do not). Voltage,
 * current or coefficient-storage errors in the state byte drop the whole frame; a power "cycle exceeds range"
 * gives 0 W; current below 50 mA (judged from P / V) reads 0 A.
 */
export function parseCse7766Frame(frame: Uint8Array, state?: Cse7766State): Cse7766Readings {
  const logs: string[] = [];
  const r: Cse7766Readings = { valid: false, logs };
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(2, '0');
  if (frame.length !== 24) {
    logs.push(`not a 24-byte frame (${frame.length})`);
    return r;
  }
  const h = frame[0];
  if (!(h === 0x55 || (h & 0xf0) === 0xf0 || h === 0xaa)) return r;
  if (frame[1] !== 0x5a) {
    logs.push(`V Invalid Header 2 Start: 0x${hex(frame[1])}!`);
    return r;
  }
  const cs = cse7766Checksum(frame);
  if (cs !== frame[23]) {
    logs.push(`W Invalid checksum from CSE7766: 0x${hex(cs)} != 0x${hex(frame[23])}`);
    return r;
  }
  r.valid = true;
  if (h === 0xaa) {
    logs.push('E CSE7766 not calibrated!');
    return r;
  }
  let powerCycleExceeds = false;
  if ((h & 0xf0) === 0xf0) {
    if (h & 0x0d) {
      logs.push(`E CSE7766 reports abnormal external circuit or chip damage: (0x${hex(h)})`);
      if (h & 0x08) logs.push('E   Voltage cycle exceeds range.');
      if (h & 0x04) logs.push('E   Current cycle exceeds range.');
      if (h & 0x01) logs.push('E   Coefficient storage area is abnormal.');
      return r;
    }
    powerCycleExceeds = (h & 0x02) !== 0;
  }
  const u24 = (i: number) => (frame[i] << 16) | (frame[i + 1] << 8) | frame[i + 2];
  const vCoeff = u24(2);
  const vCycle = u24(5);
  const iCoeff = u24(8);
  const iCycle = u24(11);
  const pCoeff = u24(14);
  const pCycle = u24(17);
  const adj = frame[20];
  const cfPulses = (frame[21] << 8) | frame[22];
  let havePower = (adj & 0x10) !== 0;
  const haveCurrent = (adj & 0x20) !== 0;
  const haveVoltage = (adj & 0x40) !== 0;

  let voltage = 0;
  if (haveVoltage) r.voltage = voltage = f32(f32(vCoeff) / f32(vCycle));
  if (state) {
    if (state.cfPulsesLast === 0 && !state.energyHasState) state.cfPulsesLast = cfPulses;
    const diff = (cfPulses - state.cfPulsesLast) & 0xffff;
    state.cfPulsesTotal = (state.cfPulsesTotal + diff) >>> 0;
    state.cfPulsesLast = cfPulses;
    r.energy = f32(f32(f32(f32(state.cfPulsesTotal) * f32(pCoeff)) / 1000000) / 3600);
    state.energyHasState = true;
  }
  let power = 0;
  if (powerCycleExceeds) {
    havePower = true;
    r.power = 0;
  } else if (havePower) {
    r.power = power = f32(f32(pCoeff) / f32(pCycle));
  } else {
    r.power = 0;
  }
  let current = 0;
  let calculated = 0;
  if (haveCurrent) {
    if (havePower && voltage > 1) calculated = f32(power / voltage);
    if (calculated > 0.05) current = f32(f32(iCoeff) / f32(iCycle));
    r.current = current;
  }
  if (haveVoltage && haveCurrent) {
    const apparent = f32(voltage * current);
    r.apparentPower = apparent;
    if (havePower) {
      const reactive = f32(apparent - power);
      if (reactive < 0) logs.push(`D Impossible reactive power: ${reactive.toFixed(4)} is negative`);
      r.reactivePower = reactive < 0 ? 0 : reactive;
    }
    if (havePower || powerCycleExceeds) {
      let pf = NaN;
      if (apparent > 0) {
        pf = f32(power / apparent);
        if (pf < 0 || pf > 1) {
          logs.push(`D Impossible power factor: ${pf.toFixed(4)} not in interval [0, 1]`);
          pf = NaN;
        }
      } else if (apparent === 0 && power === 0) {
        pf = 1;
      } else if (!(current === 0 && calculated <= 0.05)) {
        logs.push(`W Can't calculate power factor from P = ${power.toFixed(4)} W, S = ${apparent.toFixed(4)} VA`);
      }
      r.powerFactor = pf;
    }
  }
  return r;
}

/**
 * ESPHome's cse7766 loop() on a byte stream: byte 0 must look like a state byte, byte 1 must be 0x5A, byte 23 must
 * match the checksum, else it starts over at the next byte; 500 ms without bytes also starts over. Returns the
 * readings of each frame completed by these bytes.
 */
export class Cse7766Reader {
  readonly state = newCse7766State();
  #buf: number[] = [];
  #last = -Infinity;

  push(bytes: Uint8Array, nowMs: number): Cse7766Readings[] {
    const out: Cse7766Readings[] = [];
    if (nowMs - this.#last >= 500) this.#buf = [];
    if (bytes.length) this.#last = nowMs;
    for (const b of bytes) {
      const i = this.#buf.length;
      this.#buf.push(b);
      const ok = i === 0 ? b === 0x55 || (b & 0xf0) === 0xf0 || b === 0xaa
        : i === 1 ? b === 0x5a
          : i === 23 ? cse7766Checksum(this.#buf) === b : true;
      if (!ok) {
        this.#buf = [];
        continue;
      }
      if (this.#buf.length === 24) {
        out.push(parseCse7766Frame(Buffer.from(this.#buf), this.state));
        this.#buf = [];
      }
    }
    return out;
  }
}

/**
 * ESPHome's own hlw8032 component (merged late 2025; defaults voltage_divider 1.72, current_resistor 0.001 Ω) on one
 * frame: V = param × divider / reg, I = param / (R × 1000) / reg, P = param / reg × divider / (R × 1000).
 */
export function parseHlw8032Frame(frame: Uint8Array, opts: { voltageDivider?: number; currentResistor?: number } = {}):
{ valid: boolean; voltage?: number; current?: number; power?: number; logs: string[] } {
  const logs: string[] = [];
  if (frame.length !== 24 || frame[1] !== 0x5a || cse7766Checksum(frame) !== frame[23]) {
    if (frame.length === 24 && frame[1] === 0x5a) {
      const hex = (n: number) => n.toString(16).toUpperCase().padStart(2, '0');
      logs.push(`W Invalid checksum: 0x${hex(cse7766Checksum(frame))} != 0x${hex(frame[23])}`);
    }
    return { valid: false, logs };
  }
  const s = frame[0];
  if (s === 0xaa) {
    logs.push('E Function of error correction fails.');
    return { valid: true, logs };
  }
  const u24 = (i: number) => (frame[i] << 16) | (frame[i + 1] << 8) | frame[i + 2];
  const upd = frame[20];
  let haveP = (upd & 0x10) !== 0;
  let haveI = (upd & 0x20) !== 0;
  let haveV = (upd & 0x40) !== 0;
  let pExceeds = false;
  if ((s & 0xf0) === 0xf0) {
    if (s & 0x0f) {
      if (s & 0x08) haveV = false;
      if (s & 0x04) haveI = false;
      if (s & 0x02) haveP = false;
      logs.push(`W Reports: (0x${s.toString(16).toUpperCase()})`);
      if (s & 0x01) return { valid: true, logs };
    }
    pExceeds = (s & 0x02) !== 0;
  }
  const divider = opts.voltageDivider ?? 1.72;
  const mult = f32(1 / f32(f32(opts.currentResistor ?? 0.001) * 1000));
  const out: { valid: boolean; voltage?: number; current?: number; power?: number; logs: string[] } = { valid: true,
    logs };
  if (haveV) out.voltage = f32(f32(f32(u24(2)) * f32(divider)) / f32(u24(5)));
  if (pExceeds) out.power = 0;
  else if (haveP) out.power = f32(f32(f32(f32(u24(14)) / f32(u24(17))) * f32(divider)) * mult);
  if (haveI) out.current = f32(f32(f32(u24(8)) * mult) / f32(u24(11)));
  return out;
}
