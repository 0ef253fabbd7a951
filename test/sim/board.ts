// Parts of a simulated board that have behaviour of their own, apart from the chip: a latching (bistable) relay,
// whose contacts move only when one of its coils gets a long enough pulse, and stay where they are without power.
import { realClock, type Clock } from './uart-line.ts';

/**
 * How long a coil must be energised before the armature has moved. Small PCB latching relays of the kind in DIN-rail
 * switches and breakers give a set/reset time of 10–15 ms at most in their datasheets (Tuya drives them 60–100 ms,
 * ESPHome's hbridge switch 100 ms by default): a pulse shorter than this leaves the contacts where they were.
 */
export const LATCH_MIN_PULSE_MS = 15;

/**
 * A latching relay behind an H-bridge (or with two coils): driving the set side alone for at least minPulseMs closes
 * the contacts, the reset side alone opens them. Both sides at once put no current through the coil (H-bridge) or
 * cancel out (two coils): nothing moves. Holding a side on after the contacts moved changes nothing more, and the
 * contacts keep their position with no power at all.
 */
export class LatchingRelay {
  #state: boolean;
  #drive: 'set' | 'reset' | null = null;
  #since = 0;
  #timer: unknown;
  readonly minPulseMs: number;

  constructor(private opts: { clock?: Clock; closed?: boolean; minPulseMs?: number;
    onChange?: (closed: boolean) => void } = {}) {
    this.#state = opts.closed ?? false;
    this.minPulseMs = opts.minPulseMs ?? LATCH_MIN_PULSE_MS;
  }

  /** Contacts closed (the load is on). */
  get closed(): boolean {
    return this.#state;
  }

  /** The coil drive now: whether the set side and the reset side are at their active level. */
  drive(set: boolean, reset: boolean): void {
    const clock = this.opts.clock ?? realClock;
    const drive = set && !reset ? 'set' : reset && !set ? 'reset' : null;
    if (drive === this.#drive) return;
    // A pulse that ends: if it lasted long enough and its timer has not run yet (a busy event loop), it still counts.
    if (this.#drive && clock.now() - this.#since >= this.minPulseMs) this.#move(this.#drive === 'set');
    this.#cancel();
    this.#drive = drive;
    this.#since = clock.now();
    if (!drive) return;
    this.#timer = clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#drive === drive) this.#move(drive === 'set');
    }, this.minPulseMs);
  }

  /** Stops its timer (the simulation ends); the contacts stay where they are. */
  close(): void {
    this.#cancel();
    this.#drive = null;
  }

  #move(closed: boolean): void {
    if (this.#state === closed) return;
    this.#state = closed;
    this.opts.onChange?.(closed);
  }

  #cancel(): void {
    if (this.#timer !== undefined) (this.opts.clock ?? realClock).clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
