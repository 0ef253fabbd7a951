// What a serial line does to bytes, shared by the TuyaMCU and energy-chip simulations: bits on the wire at a baud
// rate, read back by a receiver that may be set to another baud rate, parity or stop bits (then it reads garbage,
// as a real UART does), bytes that take their real time on the wire, and a reader that gets them in chunks.
// Time comes from a Clock, so tests drive it with ManualClock instead of waiting.

/** The timers the simulations use: the real ones, or a ManualClock a test advances by hand. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real timers, kept referenced so an awaited init completes: whoever starts a chip or a component must close it. */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

interface ManualTimer { at: number; seq: number; fn: () => void; cancelled: boolean }

/** Virtual time: nothing happens until advance(); timers then run in time order, each at its own moment. */
export class ManualClock implements Clock {
  #now = 0;
  #seq = 0;
  #timers: ManualTimer[] = [];

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const t: ManualTimer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(t);
    return t;
  }

  clearTimeout(handle: unknown): void {
    if (handle && typeof handle === 'object') (handle as ManualTimer).cancelled = true;
  }

  /** Runs every timer due within `ms` (including those the timers themselves set), then stops at now + ms. */
  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      const next = this.#nextDue(end);
      if (!next) break;
      this.#now = next.at;
      next.fn();
    }
    this.#now = end;
  }

  /** Advances in steps until `done()` is true or `maxMs` have passed; returns whether it became true. */
  advanceUntil(done: () => boolean, maxMs: number, stepMs = 1): boolean {
    const end = this.#now + maxMs;
    while (!done()) {
      if (this.#now >= end) return false;
      this.advance(Math.min(stepMs, end - this.#now));
    }
    return true;
  }

  /** Timers still waiting (a leak check for tests). */
  get pending(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }

  #nextDue(end: number): ManualTimer | undefined {
    this.#timers = this.#timers.filter((t) => !t.cancelled);
    let best: ManualTimer | undefined;
    for (const t of this.#timers) {
      if (t.at <= end && (!best || t.at < best.at || (t.at === best.at && t.seq < best.seq))) best = t;
    }
    if (best) best.cancelled = true;
    return best;
  }
}

/** How one side of a UART frames its bytes. Data bits are always 8 here: every chip in these sims uses 8. */
export interface UartFormat {
  baud: number;
  parity?: 'none' | 'even' | 'odd';
  stopBits?: 1 | 2;
}

export function bitsPerByte(f: UartFormat): number {
  return 1 + 8 + (f.parity && f.parity !== 'none' ? 1 : 0) + (f.stopBits ?? 1);
}

/** How long `n` back-to-back bytes occupy the line. */
export function wireTimeMs(n: number, f: UartFormat): number {
  return (n * bitsPerByte(f) * 1000) / f.baud;
}

function sameFormat(a: UartFormat, b: UartFormat): boolean {
  return a.baud === b.baud && (a.parity ?? 'none') === (b.parity ?? 'none') && (a.stopBits ?? 1) === (b.stopBits ?? 1);
}

function parityBit(byte: number, parity: 'even' | 'odd'): number {
  let ones = 0;
  for (let i = 0; i < 8; i++) ones += (byte >> i) & 1;
  return parity === 'even' ? ones & 1 : (ones & 1) ^ 1;
}

export interface ReceivedByte {
  byte: number;
  framingError: boolean;
  parityError: boolean;
}

/**
 * What a receiver set to `rx` reads when a transmitter set to `tx` sends `bytes` back to back (line idle before and
 * after). Bit-exact: the receiver waits for a falling edge, checks the start bit at its middle, samples each bit at
 * its own baud rate, checks parity and the first stop bit; after a framing error it waits for the line to go high.
 * Integer time units of 1/(2·txBaud·rxBaud) s keep every edge and sample point exact.
 */
export function uartReceive(bytes: Uint8Array, tx: UartFormat, rx: UartFormat): ReceivedByte[] {
  const bits: number[] = [];
  for (const b of bytes) {
    bits.push(0);
    for (let i = 0; i < 8; i++) bits.push((b >> i) & 1);
    if (tx.parity && tx.parity !== 'none') bits.push(parityBit(b, tx.parity));
    for (let i = 0; i < (tx.stopBits ?? 1); i++) bits.push(1);
  }
  const txBit = 2 * rx.baud;
  const rxBit = 2 * tx.baud;
  const half = tx.baud;
  const level = (t: number) => {
    const k = Math.floor(t / txBit);
    return k < 0 || k >= bits.length ? 1 : bits[k];
  };
  const nextFalling = (t: number): number | undefined => {
    for (let k = Math.max(0, Math.ceil(t / txBit)); k < bits.length; k++) {
      if ((k === 0 ? 1 : bits[k - 1]) === 1 && bits[k] === 0) return k * txBit;
    }
    return undefined;
  };
  const nextHigh = (t: number): number | undefined => {
    if (level(t) === 1) return t;
    for (let k = Math.ceil(t / txBit); k <= bits.length; k++) if (k === bits.length || bits[k] === 1) return k * txBit;
    return undefined;
  };
  const out: ReceivedByte[] = [];
  const rxParity = rx.parity && rx.parity !== 'none' ? rx.parity : undefined;
  let t = 0;
  for (;;) {
    const edge = nextFalling(t);
    if (edge === undefined) break;
    if (level(edge + half) !== 0) {
      // A glitch, not a start bit: the receiver goes back to waiting for an edge.
      t = edge + half;
      continue;
    }
    let byte = 0;
    for (let i = 0; i < 8; i++) byte |= level(edge + half + (i + 1) * rxBit) << i;
    let slot = 9;
    let parityError = false;
    if (rxParity) parityError = level(edge + half + slot++ * rxBit) !== parityBit(byte, rxParity);
    const stopAt = edge + half + slot * rxBit;
    const framingError = level(stopAt) !== 1;
    out.push({ byte, framingError, parityError });
    const resume = framingError ? nextHigh(stopAt) : stopAt;
    if (resume === undefined) break;
    t = resume;
  }
  return out;
}

/**
 * The bytes a receiver hands to its program. Drivers of the UARTs in these devices (Beken, ESP, the small MCUs of
 * Tuya's SDK) pass bytes on even when framing or parity was wrong, so garbage arrives as bytes, not as silence.
 */
export function uartTransfer(bytes: Uint8Array, tx: UartFormat, rx: UartFormat): Buffer {
  if (sameFormat(tx, rx)) return Buffer.from(bytes);
  return Buffer.from(uartReceive(bytes, tx, rx).map((r) => r.byte));
}

/** Deterministic pseudo-random chunk sizes, so the same test splits frames the same way every run. */
export function chunkSizes(seed: number, maxChunk: number): () => number {
  let s = (seed >>> 0) || 1;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return 1 + ((s >>> 16) % Math.max(1, maxChunk));
  };
}

/**
 * A transmitter: bursts queue behind each other, each byte takes its wire time, and the receiver is handed the
 * bytes in chunks at the moment the last byte of each chunk has arrived (as a program polling its UART would).
 */
export class UartWire {
  #freeAt = 0;
  #next: () => number;
  #timers = new Set<unknown>();
  #closed = false;

  constructor(private clock: Clock, readonly format: UartFormat, opts: { seed?: number; maxChunk?: number } = {}) {
    this.#next = chunkSizes(opts.seed ?? 1, opts.maxChunk ?? 8);
  }

  /** Queues `bytes` to start at now + delayMs (or when the line is free); `deliver` gets each chunk on arrival. */
  send(bytes: Uint8Array, deliver: (chunk: Buffer) => void, delayMs = 0): void {
    if (this.#closed || bytes.length === 0) return;
    const now = this.clock.now();
    const start = Math.max(now + delayMs, this.#freeAt);
    this.#freeAt = start + wireTimeMs(bytes.length, this.format);
    let off = 0;
    while (off < bytes.length) {
      const n = Math.min(this.#next(), bytes.length - off);
      const chunk = Buffer.from(bytes.subarray(off, off + n));
      off += n;
      const arrive = start + wireTimeMs(off, this.format);
      const h = this.clock.setTimeout(() => {
        this.#timers.delete(h);
        if (!this.#closed) deliver(chunk);
      }, arrive - now);
      this.#timers.add(h);
    }
  }

  /** When the last queued byte will have left. */
  get busyUntil(): number {
    return this.#freeAt;
  }

  close(): void {
    this.#closed = true;
    for (const h of this.#timers) this.clock.clearTimeout(h);
    this.#timers.clear();
  }
}
