// The final firmware of a simulated plug: the ESPHome config it was built from, run against the board's pins and
// UART peers. It does what that config makes ESPHome do on a BK72xx, for the parts the generated configs use:
//
// - switch: gpio (restore_mode with preferences written to flash once a minute, on_turn_on/off), hbridge (a pulse of
//   pulse_length on on_pin or off_pin, then wait_time; one pulse at every boot, even to the state it is in), tuya
//   (the MCU's datapoint; optimistic on a command);
// - binary_sensor: gpio (pin mode, inverted, filters invert/delayed_on/delayed_off/delayed_on_off; the boot reading is
//   an initial state that fires no trigger; on_press/on_release/on_state), tuya;
// - light: binary, monochromatic, status_led and the PWM colour platforms (a PWM output lights while its duty is not
//   0), tuya (switch/dimmer datapoints); output: gpio, libretiny_pwm; status_led (off while all is well);
// - uart buses on the hardware UARTs only (RX1 P10/TX1 P11, RX2 P1/TX2 P0: LibreTiny has no software serial), with
//   their baud rate, parity and stop bits: a peer set otherwise reads garbage, as on the wire;
// - tuya: test/sim/tuyamcu.ts's ModuleSide (ESPHome's tuya component) on that bus, told "cloud" while an API client
//   is connected; its sensor/binary_sensor/text_sensor/number/select/switch/light/fan/climate entities from the MCU's
//   datapoint reports (nothing reported: no state);
// - bl0942 (setup writes, MODE read back, then a full-packet poll at once and every update_interval, 23-byte reads)
//   and cse7766 (every frame the chip sends), published through the sensor filters multiply/offset;
// - actions switch.turn_on/turn_off/toggle, light.turn_on/turn_off/toggle, if (switch/binary_sensor/light is_on and
//   is_off, and/or/not), delay.
// Anything else in the config is left alone; what the sim could not do is listed in `unsupported` (a test can assert
// it is empty), never silently dropped.
//
// Read, not copied, from ESPHome 2024.11 (github:esphome/esphome 33fdbbe): switch/switch.cpp, gpio/switch,
// hbridge/switch (PR 7421, released in 2024.12), binary_sensor/binary_sensor.cpp and filter.cpp, core/entity_base.cpp,
// cpp_helpers.py setup_entity, config_validation.py _entity_base_validator, tuya/*, bl0942/bl0942.cpp, cse7766,
// libretiny/lt_component.cpp, core/scheduler.cpp (an interval's first run is immediate).
import { EventEmitter } from 'node:events';
import {
  API_DOMAINS, fnv1Hash, type ApiDomain, type ApiEntity, type ClimateStateValue, type EntitySource, type EntityState,
  type EntityTraits, type FanStateValue, type LightStateValue,
} from './native-api.ts';
import { ModuleSide, type TuyaDpReading, type TuyaDpType, type TuyaMcuPort } from './tuyamcu.ts';
import { Bl0942Reader, Cse7766Reader, bl0942Checksum, resolveBl0942Refs, type Bl0942Refs } from './uart-chips.ts';
import { UartWire, uartTransfer, type Clock, type UartFormat } from './uart-line.ts';

/** ESPHome ≤ 2025.x object id: lower case, spaces -> `_`, anything outside [a-zA-Z0-9_-] -> `_`. */
export function objectIdOf(name: string): string {
  return name.toLowerCase().replace(/ /g, '_').replace(/[^a-zA-Z0-9_-]/g, '_');
}

export type BoardPinMode = 'INPUT' | 'INPUT_PULLUP' | 'INPUT_PULLDOWN' | 'OUTPUT';

/** Something on a UART line of the board (a TuyaMCU, an energy chip): what it puts on its TX, what it hears. */
export interface UartPeer {
  format: UartFormat;
  onSend(cb: (bytes: Buffer) => void): () => void;
  receive?(bytes: Uint8Array, from?: Partial<UartFormat>): void;
}

/** What the firmware reaches of the board. */
export interface Board {
  clock: Clock;
  pinMode(pin: string, mode: BoardPinMode): void;
  write(pin: string, high: boolean): void;
  /** The pin's level (true: HIGH). */
  read(pin: string): boolean;
  /** The peers whose TX is wired to the module's pin `rx` (heard) and whose RX to its pin `tx` (hearing). */
  uart(rx: string | undefined, tx: string | undefined): { heard: UartPeer[]; hearing: UartPeer[] };
}

export interface DeviceOptions {
  /** esphome.name and friendly_name (the App's). */
  name: string;
  friendlyName?: string;
  /** The LibreTiny banner's tail ("v1.9.1 on cb2s, compiled at ..."), the libretiny version text sensor's state. */
  ltVersion?: string;
  /** The flash's preferences (restore_mode states): kept by the board across reboots, written by sync(). */
  flash: Map<string, unknown>;
  /** ESPHome's preferences flash_write_interval; default 60 s. */
  flashWriteIntervalMs?: number;
  /** The ESPHome version the firmware was built with, where a release's own bugs matter (2025.5.0's tuya select). */
  esphomeVersion?: string;
}

type Conf = Record<string, unknown>;
type Actions = unknown[];

const isMap = (v: unknown): v is Conf => !!v && typeof v === 'object' && !Array.isArray(v);
const asList = (v: unknown): unknown[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);
/** An entity's `filters:` as [name, argument] pairs (`- invert` has none, `- multiply: 2` has one). */
const filtersOf = (conf: Conf): [string, unknown][] =>
  asList(conf.filters).map((f) => (isMap(f) ? (Object.entries(f)[0] ?? ['', undefined]) : [String(f), undefined]));
const num = (v: unknown, dflt?: number): number | undefined => {
  if (v === undefined || v === null || v === '') return dflt;
  const n = Number(String(v).replace(/%$/, ''));
  return Number.isFinite(n) ? (String(v).endsWith('%') ? n / 100 : n) : dflt;
};

/** ESPHome time periods: "50ms", "1s", "10s", "2min", a bare number of ms. */
export function timeMs(v: unknown, dflt = 0): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'number') return v;
  const m = /^\s*([\d.]+)\s*(ms|s|sec|seconds|min|minutes|h|hours|us|µs)?\s*$/.exec(String(v));
  if (!m) return dflt;
  const unit = { ms: 1, s: 1000, sec: 1000, seconds: 1000, min: 60000, minutes: 60000, h: 3600000, hours: 3600000,
    us: 0.001, 'µs': 0.001 }[m[2] ?? 'ms'] ?? 1;
  return Number(m[1]) * unit;
}

/** Board pin names as LibreTiny takes them: P24, GPIO24, 24, and the UART names. */
export function pinName(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  const s = String(v).trim().toUpperCase();
  const named: Record<string, string> = { RX1: 'P10', TX1: 'P11', RX2: 'P1', TX2: 'P0', SERIAL1_RX: 'P10',
    SERIAL1_TX: 'P11', SERIAL2_RX: 'P1', SERIAL2_TX: 'P0' };
  if (named[s]) return named[s];
  const m = /^(?:P|GPIO)?(\d+)$/.exec(s);
  return m ? `P${Number(m[1])}` : undefined;
}

interface PinSpec { pin: string; inverted: boolean; mode?: BoardPinMode }

function pinSpec(v: unknown): PinSpec | undefined {
  const c = isMap(v) ? v : { number: v };
  const pin = pinName(c.number);
  if (!pin) return undefined;
  let mode: BoardPinMode | undefined;
  if (typeof c.mode === 'string') mode = c.mode.toUpperCase() as BoardPinMode;
  else if (isMap(c.mode)) {
    const m = c.mode;
    mode = m.output ? 'OUTPUT' : m.pullup ? 'INPUT_PULLUP' : m.pulldown ? 'INPUT_PULLDOWN' : 'INPUT';
  }
  return { pin, inverted: c.inverted === true || c.inverted === 'true', mode };
}

// ---------------------------------------------------------------------------------------------------------------
// Entities

abstract class Entity implements ApiEntity {
  readonly objectId: string;
  readonly key: number;
  readonly name: string;
  readonly internal: boolean;
  readonly id?: string;
  icon?: string;
  entityCategory?: number;
  disabledByDefault?: boolean;
  deviceClass?: string;
  traits: EntityTraits = {};

  constructor(protected dev: EsphomeDevice, readonly domain: ApiDomain, readonly conf: Conf) {
    // _entity_base_validator: an id without a name makes an internal entity named after its id; an empty name shows
    // the device's friendly name (and takes its object id).
    this.id = typeof conf.id === 'string' ? conf.id : undefined;
    const hasName = 'name' in conf;
    this.internal = conf.internal === true || (!hasName && this.id !== undefined);
    const name = hasName ? (conf.name === null ? '' : String(conf.name)) : (this.id ?? '');
    this.name = name;
    this.objectId = objectIdOf(name || dev.friendlyName);
    this.key = fnv1Hash(this.objectId);
    if (typeof conf.icon === 'string') this.icon = conf.icon;
    if (typeof conf.device_class === 'string') this.deviceClass = conf.device_class;
    const category = { config: 1, diagnostic: 2 }[String(conf.entity_category ?? '')];
    if (category) this.entityCategory = category;
    if (conf.disabled_by_default === true) this.disabledByDefault = true;
  }

  abstract state(): EntityState;

  protected published(): void {
    this.dev.emitState(this);
  }
}

// ----- switches

const RESTORE_MODES = ['RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF', 'ALWAYS_ON',
  'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON', 'DISABLED'];

abstract class SwitchEntity extends Entity {
  on = false;
  #published = false;
  readonly restoreMode: string;

  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'switch', conf);
    const mode = String(conf.restore_mode ?? 'ALWAYS_OFF').toUpperCase();
    this.restoreMode = RESTORE_MODES.includes(mode) ? mode : 'ALWAYS_OFF';
  }

  state(): boolean {
    return this.on;
  }

  /** get_initial_state_with_restore_mode(): the saved state, or the mode's default. */
  initialState(): boolean | undefined {
    const saved = this.dev.restore(`switch:${this.objectId}`) as boolean | undefined;
    switch (this.restoreMode) {
      case 'RESTORE_DEFAULT_OFF': return saved ?? false;
      case 'RESTORE_DEFAULT_ON': return saved ?? true;
      case 'RESTORE_INVERTED_DEFAULT_OFF': return saved === undefined ? false : !saved;
      case 'RESTORE_INVERTED_DEFAULT_ON': return saved === undefined ? true : !saved;
      case 'ALWAYS_ON': return true;
      case 'DISABLED': return undefined;
      default: return false;
    }
  }

  abstract writeState(on: boolean): void;

  /** Switch::publish_state: deduplicated; saved for restore; on_turn_on / on_turn_off. */
  publish(on: boolean): void {
    if (this.#published && on === this.on) return;
    this.#published = true;
    this.on = on;
    if (this.restoreMode.startsWith('RESTORE')) this.dev.save(`switch:${this.objectId}`, on);
    this.published();
    this.dev.exec(asList(on ? this.conf.on_turn_on : this.conf.on_turn_off));
  }

  command(value: unknown): void {
    this.writeState(!!value);
  }
}

class GpioSwitch extends SwitchEntity {
  readonly pin?: PinSpec;
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, conf);
    this.pin = pinSpec(conf.pin);
    if (!this.pin) dev.note(`switch ${this.name || this.id}: no usable pin (${JSON.stringify(conf.pin)})`);
  }
  setup(): void {
    if (!this.pin) return;
    const initial = this.initialState() ?? false;
    this.writeState(initial);
    this.dev.board.pinMode(this.pin.pin, 'OUTPUT');
    this.writeState(initial);
  }
  writeState(on: boolean): void {
    if (this.pin) this.dev.board.write(this.pin.pin, on !== this.pin.inverted);
    this.publish(on);
  }
}

/** hbridge switch (esphome#7421): pulses on_pin to switch on, off_pin to switch off; changes meanwhile are queued. */
class HBridgeSwitch extends SwitchEntity {
  readonly onPin?: PinSpec;
  readonly offPin?: PinSpec;
  readonly pulseMs: number;
  readonly waitMs: number;
  readonly optimistic: boolean;
  #relay: 'on' | 'off' | 'unknown' | 'switching-on' | 'switching-off' = 'unknown';
  #desired = false;
  #timerRunning = false;

  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, conf);
    this.onPin = pinSpec(conf.on_pin);
    this.offPin = pinSpec(conf.off_pin);
    this.pulseMs = timeMs(conf.pulse_length, 100);
    this.waitMs = timeMs(conf.wait_time, 0);
    this.optimistic = conf.optimistic === true;
    if (!this.onPin || !this.offPin) dev.note(`hbridge switch ${this.name || this.id}: on_pin and off_pin needed`);
  }

  setup(): void {
    for (const p of [this.onPin, this.offPin]) {
      if (!p) continue;
      this.#drive(p, false);
      this.dev.board.pinMode(p.pin, 'OUTPUT');
      this.#drive(p, false);
    }
    const initial = this.initialState() ?? false;
    this.writeState(initial);
  }

  writeState(on: boolean): void {
    this.#desired = on;
    if (!this.#timerRunning) this.#timerFn();
  }

  #drive(p: PinSpec | undefined, active: boolean): void {
    if (p) this.dev.board.write(p.pin, active !== p.inverted);
  }

  #timerFn(): void {
    for (;;) {
      const reached = (this.#relay === 'on' && this.#desired) || (this.#relay === 'off' && !this.#desired);
      if (reached) break;
      let next = 0;
      if (this.#relay === 'switching-on' || this.#relay === 'switching-off') {
        const on = this.#relay === 'switching-on';
        this.#drive(on ? this.onPin : this.offPin, false);
        this.#relay = on ? 'on' : 'off';
        if (this.optimistic) this.publish(on);
        next = this.waitMs;
      } else {
        this.#drive(this.#desired ? this.onPin : this.offPin, true);
        this.#relay = this.#desired ? 'switching-on' : 'switching-off';
        next = this.pulseMs;
        if (!this.optimistic) this.publish(this.#desired);
      }
      if (next) {
        this.#timerRunning = true;
        this.dev.after(next, () => this.#timerFn());
        return;
      }
    }
    this.#timerRunning = false;
  }
}

class TuyaSwitch extends SwitchEntity {
  readonly dp: number;
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, conf);
    this.dp = num(conf.switch_datapoint) ?? -1;
    dev.tuyaListen(this.dp, (d) => this.publish(d.value === true || d.value === 1));
  }
  writeState(on: boolean): void {
    this.dev.tuyaSet(this.dp, on, 'bool');
    this.publish(on); // tuya switches are optimistic: shown at once, whatever the MCU does with it
  }
}

// ----- outputs and lights

class Output {
  level = 0;
  constructor(private dev: EsphomeDevice, readonly pin: PinSpec | undefined, readonly pwm: boolean) {}
  setup(): void {
    if (!this.pin) return;
    this.dev.board.pinMode(this.pin.pin, 'OUTPUT');
    this.set(0);
  }
  /** A PWM pin with any duty above 0 counts as driven to its active level (an LED at that duty is lit). */
  set(level: number): void {
    this.level = this.pwm ? level : level > 0 ? 1 : 0;
    if (this.pin) this.dev.board.write(this.pin.pin, (this.level > 0) !== this.pin.inverted);
  }
}

const COLOR_MODE = { ON_OFF: 1, BRIGHTNESS: 2, WHITE: 7, COLOR_TEMPERATURE: 11, COLD_WARM_WHITE: 19, RGB: 35,
  RGB_WHITE: 39, RGB_COLOR_TEMPERATURE: 47, RGB_COLD_WARM_WHITE: 51 } as const;

/** Per light platform: its output keys, colour modes, and which outputs a plain "on" lights (white where it can). */
const LIGHT_PLATFORMS: Record<string, { outputs: string[]; modes: number[]; lit: string[] }> = {
  binary: { outputs: ['output'], modes: [COLOR_MODE.ON_OFF], lit: ['output'] },
  monochromatic: { outputs: ['output'], modes: [COLOR_MODE.BRIGHTNESS], lit: ['output'] },
  status_led: { outputs: [], modes: [COLOR_MODE.ON_OFF], lit: [] },
  rgb: { outputs: ['red', 'green', 'blue'], modes: [COLOR_MODE.RGB], lit: ['red', 'green', 'blue'] },
  rgbw: { outputs: ['red', 'green', 'blue', 'white'], modes: [COLOR_MODE.RGB_WHITE], lit: ['white'] },
  rgbww: { outputs: ['red', 'green', 'blue', 'cold_white', 'warm_white'], modes: [COLOR_MODE.RGB_COLD_WARM_WHITE],
    lit: ['cold_white', 'warm_white'] },
  rgbct: { outputs: ['red', 'green', 'blue', 'white_brightness', 'color_temperature'],
    modes: [COLOR_MODE.RGB_COLOR_TEMPERATURE], lit: ['white_brightness', 'color_temperature'] },
  cwww: { outputs: ['cold_white', 'warm_white'], modes: [COLOR_MODE.COLD_WARM_WHITE],
    lit: ['cold_white', 'warm_white'] },
  color_temperature: { outputs: ['brightness', 'color_temperature'], modes: [COLOR_MODE.COLOR_TEMPERATURE],
    lit: ['brightness', 'color_temperature'] },
  tuya: { outputs: [], modes: [], lit: [] },
};

class LightEntity extends Entity {
  on = false;
  brightness = 1;
  readonly platform: string;
  readonly outputs = new Map<string, Output | undefined>();
  readonly restoreMode: string;
  #statusPin?: PinSpec;

  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'light', conf);
    this.platform = String(conf.platform);
    this.restoreMode = String(conf.restore_mode ?? 'RESTORE_DEFAULT_OFF').toUpperCase();
    const p = LIGHT_PLATFORMS[this.platform];
    if (!p) dev.note(`light platform ${this.platform}: listed, its outputs not driven`);
    let modes = p?.modes ?? [COLOR_MODE.ON_OFF];
    const interlock = conf.color_interlock === true;
    if (this.platform === 'rgbww' && interlock) modes = [COLOR_MODE.RGB, COLOR_MODE.COLD_WARM_WHITE];
    if (this.platform === 'rgbw' && interlock) modes = [COLOR_MODE.RGB, COLOR_MODE.WHITE];
    if (this.platform === 'tuya') {
      modes = [conf.dimmer_datapoint !== undefined ? COLOR_MODE.BRIGHTNESS : COLOR_MODE.ON_OFF];
      const max = num(conf.max_value, 255)!;
      if (conf.switch_datapoint !== undefined) dev.tuyaListen(num(conf.switch_datapoint)!, (d) => this.set(!!d.value));
      if (conf.dimmer_datapoint !== undefined) {
        dev.tuyaListen(num(conf.dimmer_datapoint)!, (d) => this.set(this.on, Math.max(0, Number(d.value) / max)));
      }
    }
    this.traits = { colorModes: modes };
    const ct = modes.some((m) => m & 8 || m & 16);
    if (ct) {
      const mireds = (v: unknown) => {
        const s = String(v ?? '');
        const n = Number.parseFloat(s);
        return /k/i.test(s) ? 1e6 / n : n;
      };
      this.traits.minMireds = mireds(conf.cold_white_color_temperature ?? '153 mireds');
      this.traits.maxMireds = mireds(conf.warm_white_color_temperature ?? '500 mireds');
    }
    for (const key of p?.outputs ?? []) {
      const id = conf[key];
      this.outputs.set(key, typeof id === 'string' ? dev.output(id) : undefined);
    }
    if (this.platform === 'status_led') this.#statusPin = pinSpec(conf.pin);
  }

  state(): LightStateValue {
    const mode = (this.traits.colorModes ?? [COLOR_MODE.ON_OFF]).at(-1)!;
    const rgb = mode & 32;
    const cw = mode & 16;
    return { on: this.on, brightness: this.brightness, colorMode: mode,
      ...(rgb ? { colorBrightness: 1, red: 1, green: 1, blue: 1 } : {}),
      ...(cw ? { coldWhite: 1, warmWhite: 1 } : {}) };
  }

  setup(): void {
    if (this.#statusPin) this.dev.board.pinMode(this.#statusPin.pin, 'OUTPUT');
    const saved = this.dev.restore(`light:${this.objectId}`) as boolean | undefined;
    const initial = this.restoreMode === 'ALWAYS_ON' || this.restoreMode === 'RESTORE_AND_ON' ? true
      : this.restoreMode === 'ALWAYS_OFF' || this.restoreMode === 'RESTORE_AND_OFF' ? false
        : this.restoreMode === 'RESTORE_DEFAULT_ON' ? saved ?? true : saved ?? false;
    if (this.platform !== 'tuya') this.set(initial, this.brightness, true);
  }

  /** A light call: the outputs follow at once (transitions are not modelled). */
  set(on: boolean, brightness = this.brightness, force = false): void {
    if (!force && on === this.on && brightness === this.brightness) return;
    this.on = on;
    this.brightness = brightness;
    if (this.restoreMode.startsWith('RESTORE')) this.dev.save(`light:${this.objectId}`, on);
    const lit = new Set(LIGHT_PLATFORMS[this.platform]?.lit ?? []);
    for (const [key, out] of this.outputs) out?.set(on && lit.has(key) ? brightness : 0);
    if (this.#statusPin) this.dev.board.write(this.#statusPin.pin, on !== this.#statusPin.inverted);
    this.published();
  }
}

// ----- binary sensors

type BinaryInput = (value: boolean, initial: boolean) => void;

class BinarySensorEntity extends Entity {
  value?: boolean;
  #dedup?: boolean;
  readonly #input: BinaryInput;

  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'binary_sensor', conf);
    let out: BinaryInput = (v, initial) => this.#send(v, initial);
    for (const f of [...asList(conf.filters)].reverse()) out = this.#filter(f, out);
    this.#input = out;
  }

  state(): boolean | undefined {
    return this.value;
  }

  /** BinarySensor::publish_state / publish_initial_state: deduplicated, then the filters. */
  publish(v: boolean, initial = false): void {
    if (this.#dedup === v) return;
    this.#dedup = v;
    this.#input(v, initial);
  }

  #send(v: boolean, initial: boolean): void {
    this.value = v;
    // The boot reading fires no trigger and reaches no subscriber (publish_initial_state false by default).
    if (initial && this.conf.publish_initial_state !== true) return;
    this.published();
    this.dev.exec(asList(this.conf.on_state), v);
    this.dev.exec(asList(v ? this.conf.on_press : this.conf.on_release), v);
  }

  /** One binary filter (binary_sensor/filter.cpp); each passes a value on only when it changed. */
  #filter(f: unknown, next: BinaryInput): BinaryInput {
    const [name, arg] = isMap(f) ? Object.entries(f)[0] ?? [] : [String(f), undefined];
    let last: boolean | undefined;
    const output: BinaryInput = (v, initial) => {
      if (last === v) return;
      last = v;
      next(v, initial);
    };
    let timer: unknown;
    const later = (ms: number, fn: () => void) => {
      this.dev.cancel(timer);
      timer = this.dev.after(ms, fn);
    };
    switch (name) {
      case 'invert':
        return (v, initial) => output(!v, initial);
      case 'delayed_on': {
        const ms = timeMs(arg);
        return (v, initial) => (v ? later(ms, () => output(true, initial)) : (this.dev.cancel(timer), output(false,
          initial)));
      }
      case 'delayed_off': {
        const ms = timeMs(arg);
        return (v, initial) => (!v ? later(ms, () => output(false, initial)) : (this.dev.cancel(timer), output(true,
          initial)));
      }
      case 'delayed_on_off': {
        const on = timeMs(isMap(arg) ? arg.time_on : arg);
        const off = timeMs(isMap(arg) ? arg.time_off : arg);
        return (v, initial) => later(v ? on : off, () => output(v, initial));
      }
      default:
        this.dev.note(`binary_sensor ${this.name || this.id}: filter ${name} not simulated (passes values through)`);
        return output;
    }
  }
}

class GpioBinarySensor extends BinarySensorEntity {
  readonly pin?: PinSpec;
  #ready = false;
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, conf);
    this.pin = pinSpec(conf.pin);
    if (!this.pin) dev.note(`binary_sensor ${this.name || this.id}: no usable pin`);
  }
  setup(): void {
    if (!this.pin) return;
    this.dev.board.pinMode(this.pin.pin, this.pin.mode ?? 'INPUT');
    this.publish(this.#read(), true);
    this.#ready = true;
  }
  /** GPIOBinarySensor::loop(): the pin read every loop (once set up), here whenever a level on the board changed. */
  poll(): void {
    if (this.#ready) this.publish(this.#read());
  }
  #read(): boolean {
    return this.dev.board.read(this.pin!.pin) !== this.pin!.inverted;
  }
}

// ----- sensors

/** Per-platform defaults of a sensor (its sensor_schema): unit, decimals, device class, state class. */
const SENSOR_DEFAULTS: Record<string, [string, number, string, number]> = {
  voltage: ['V', 1, 'voltage', 1], current: ['A', 2, 'current', 1], power: ['W', 1, 'power', 1],
  energy: ['kWh', 3, 'energy', 2], frequency: ['Hz', 2, 'frequency', 1], apparent_power: ['VA', 1, 'apparent_power', 1],
  reactive_power: ['var', 1, 'reactive_power', 1], power_factor: ['', 2, 'power_factor', 1],
};

class SensorEntity extends Entity {
  value?: number;
  constructor(dev: EsphomeDevice, conf: Conf, kind?: string, platform?: string) {
    super(dev, 'sensor', conf);
    const d = kind ? SENSOR_DEFAULTS[kind] : undefined;
    const unit = kind === 'energy' && platform === 'cse7766' ? 'Wh' : d?.[0];
    const stateClass = { measurement: 1, total_increasing: 2, total: 3 }[String(conf.state_class ?? '')];
    this.traits = {
      unit: typeof conf.unit_of_measurement === 'string' ? conf.unit_of_measurement : unit || undefined,
      accuracyDecimals: num(conf.accuracy_decimals) ?? d?.[1] ?? 0,
      stateClass: stateClass ?? d?.[3],
      forceUpdate: conf.force_update === true,
    };
    this.deviceClass ??= d?.[2];
  }
  state(): number | undefined {
    return this.value;
  }
  /** Sensor::publish_state: the raw value through the filters; every publication goes out (no deduplication). */
  publish(raw: number): void {
    let v: number | undefined = raw;
    for (const [name, arg] of filtersOf(this.conf)) {
      if (v === undefined) return;
      if (name === 'multiply') v *= num(arg, 1)!;
      else if (name === 'offset') v += num(arg, 0)!;
      else if (name === 'filter_out' && num(arg) === v) v = undefined;
      else this.dev.note(`sensor ${this.name || this.id}: filter ${name} not simulated (passes values through)`);
    }
    if (v === undefined) return;
    this.value = v;
    this.published();
  }
}

class TextSensorEntity extends Entity {
  value?: string;
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'text_sensor', conf);
  }
  state(): string | undefined {
    return this.value;
  }
  publish(raw: string): void {
    let v = raw;
    for (const [name, arg] of filtersOf(this.conf)) {
      if (name === 'map') {
        // "0 -> low": an input that matches a left side exactly becomes its right side.
        for (const line of asList(arg)) {
          const m = /^(.*?)\s*->\s*(.*)$/.exec(String(line));
          if (m && m[1].trim() === v) {
            v = m[2].trim();
            break;
          }
        }
      } else this.dev.note(`text_sensor ${this.name || this.id}: filter ${name} not simulated`);
    }
    this.value = v;
    this.published();
  }
}

class NumberEntity extends Entity {
  value?: number;
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'number', conf);
    const mode = { box: 1, slider: 2 }[String(conf.mode ?? '').toLowerCase()];
    this.traits = { min: num(conf.min_value, 0), max: num(conf.max_value, 100), step: num(conf.step, 1),
      unit: typeof conf.unit_of_measurement === 'string' ? conf.unit_of_measurement : undefined, mode };
    const multiply = num(conf.multiply, 1)!;
    dev.tuyaListen(num(conf.number_datapoint) ?? -1, (d) => {
      // TuyaNumber: an integer is shown divided by `multiply`, an enum as it is; other types are not numbers.
      if (d.type === 'value') this.#publish(Number(d.value) / multiply);
      else if (d.type === 'enum') this.#publish(Number(d.value));
    });
  }
  state(): number | undefined {
    return this.value;
  }
  #publish(v: number): void {
    this.value = v;
    this.published();
  }
}

class SelectEntity extends Entity {
  value?: string;
  readonly mapping: [number, string][];
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'select', conf);
    this.mapping = Object.entries(isMap(conf.options) ? conf.options : {}).map(([k, v]) => [Number(k), String(v)]);
    this.traits = { options: this.mapping.map(([, label]) => label) };
    // ESPHome 2025.5.0 set every tuya select to datapoint 1 (`(x := get(...) is not None)`, esphome/issues#7037;
    // fixed in 2025.5.1): it shows and sets datapoint 1, whatever the config says.
    const configured = num(conf.enum_datapoint ?? conf.int_datapoint) ?? -1;
    const dp = dev.o.esphomeVersion === '2025.5.0' ? 1 : configured;
    dev.tuyaListen(dp, (d) => {
      const label = this.mapping.find(([n]) => n === Number(d.value))?.[1];
      if (label === undefined) return; // "Invalid value %u": nothing published
      this.value = label;
      this.published();
    });
  }
  state(): string | undefined {
    return this.value;
  }
}

class FanEntity extends Entity {
  on = false;
  speed = 0;
  oscillating = false;
  reverse = false;
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'fan', conf);
    const count = num(conf.speed_count, 3)!;
    this.traits = { supportsSpeed: conf.speed_datapoint !== undefined, speedCount: count,
      supportsOscillation: conf.oscillation_datapoint !== undefined,
      supportsDirection: conf.direction_datapoint !== undefined };
    const listen = (key: string, fn: (d: TuyaDpReading) => void) => {
      if (conf[key] !== undefined) dev.tuyaListen(num(conf[key])!, (d) => (fn(d), this.published()));
    };
    listen('switch_datapoint', (d) => (this.on = !!d.value));
    listen('speed_datapoint', (d) => {
      // An enum speed is 0-based (speed = value + 1, values past speed_count refused); an integer is the speed.
      if (d.type === 'enum' && Number(d.value) < count) this.speed = Number(d.value) + 1;
      else if (d.type === 'value') this.speed = Number(d.value);
    });
    listen('oscillation_datapoint', (d) => (this.oscillating = !!d.value));
    listen('direction_datapoint', (d) => (this.reverse = !!d.value));
  }
  state(): FanStateValue {
    const t = this.traits;
    return { on: this.on, ...(t.supportsOscillation ? { oscillating: this.oscillating } : {}),
      ...(t.supportsDirection ? { direction: this.reverse ? 1 : 0 } : {}),
      speedLevel: t.supportsSpeed ? this.speed : 0 };
  }
}

class ClimateEntity extends Entity {
  mode = 0;
  current = NaN;
  target = NaN;
  action = 0;
  readonly heat: boolean;
  readonly cool: boolean;
  constructor(dev: EsphomeDevice, conf: Conf) {
    super(dev, 'climate', conf);
    this.heat = conf.supports_heat !== false;
    this.cool = conf.supports_cool === true;
    const visual = isMap(conf.visual) ? conf.visual : {};
    const step = isMap(visual.temperature_step) ? visual.temperature_step
      : { target_temperature: visual.temperature_step, current_temperature: visual.temperature_step };
    this.traits = {
      supportsCurrentTemperature: conf.current_temperature_datapoint !== undefined, supportsAction: true,
      modes: [0, ...(this.heat ? [3] : []), ...(this.cool ? [2] : [])],
      visualMinTemperature: num(visual.min_temperature, 10), visualMaxTemperature: num(visual.max_temperature, 30),
      visualTargetTemperatureStep: num(step.target_temperature, 0.1),
      visualCurrentTemperatureStep: num(step.current_temperature, 0.1),
    };
    const multiplier = num(conf.temperature_multiplier, 1)!;
    const targetMul = num(conf.target_temperature_multiplier, multiplier)!;
    const currentMul = num(conf.current_temperature_multiplier, multiplier)!;
    const listen = (key: string, fn: (d: TuyaDpReading) => void) => {
      if (conf[key] !== undefined) dev.tuyaListen(num(conf[key])!, (d) => (fn(d), this.#compute(), this.published()));
    };
    listen('switch_datapoint', (d) => {
      this.mode = !d.value ? 0 : this.heat && this.cool ? 1 : this.heat ? 3 : this.cool ? 2 : 0;
    });
    listen('target_temperature_datapoint', (d) => (this.target = Number(d.value) * targetMul));
    listen('current_temperature_datapoint', (d) => (this.current = Number(d.value) * currentMul));
  }
  /** TuyaClimate::compute_state_() without state pins or an active-state datapoint: temperatures and hysteresis 1. */
  #compute(): void {
    if (Number.isNaN(this.current) || Number.isNaN(this.target) || this.mode === 0) {
      this.action = 0;
      return;
    }
    const diff = this.target - this.current;
    this.action = 4;
    if (Math.abs(diff) > 1) {
      if (this.heat && diff > 0) [this.action, this.mode] = [3, 3];
      else if (this.cool && diff < 0) [this.action, this.mode] = [2, 2];
    }
  }
  state(): ClimateStateValue {
    return { mode: this.mode, currentTemperature: this.traits.supportsCurrentTemperature ? this.current : 0,
      targetTemperature: this.target, action: this.action };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// UART buses and the components on them

/** A `uart:` bus. LibreTiny on BK72xx has hardware UARTs only: other pins fail the component at boot. */
class UartBus {
  readonly format: UartFormat;
  readonly ok: boolean;
  readonly rx?: string;
  readonly tx?: string;
  #wire: UartWire;
  #heard: UartPeer[] = [];
  #hearing: UartPeer[] = [];
  #unsubscribe: (() => void)[] = [];

  constructor(private dev: EsphomeDevice, conf: Conf) {
    this.rx = pinName(isMap(conf.rx_pin) ? conf.rx_pin.number : conf.rx_pin);
    this.tx = pinName(isMap(conf.tx_pin) ? conf.tx_pin.number : conf.tx_pin);
    const parity = String(conf.parity ?? 'NONE').toLowerCase() as 'none' | 'even' | 'odd';
    this.format = { baud: num(conf.baud_rate, 9600)!, parity, stopBits: num(conf.stop_bits, 1) === 2 ? 2 : 1 };
    const fits = (rx: string, tx: string) => (!this.rx || this.rx === rx) && (!this.tx || this.tx === tx);
    this.ok = fits('P10', 'P11') || fits('P1', 'P0');
    if (!this.ok) {
      dev.log(`[E][uart.libretiny]: SoftwareSerial is not implemented for this chip (rx ${this.rx}, tx ${this.tx})`);
    } else {
      const peers = dev.board.uart(this.rx, this.tx);
      this.#heard = peers.heard;
      this.#hearing = peers.hearing;
    }
    this.#wire = new UartWire(dev.board.clock, this.format, { maxChunk: 16 });
  }

  /** Bytes from the module's TX, timed on the wire, to every peer that hears it. */
  write(bytes: Uint8Array): void {
    if (this.ok) this.#wire.send(bytes, (chunk) => this.deliver(chunk, this.format));
  }

  /** Bytes already timed by their sender (the tuya component's own wire). */
  deliver(bytes: Uint8Array, from: Partial<UartFormat>): void {
    for (const p of this.#hearing) p.receive?.(bytes, { ...this.format, ...from });
  }

  /** What the module's RX reads: each peer's bytes as this bus's settings take them. */
  onData(cb: (bytes: Buffer) => void): () => void {
    const offs = this.#heard.map((p) => p.onSend((chunk) => cb(uartTransfer(chunk, p.format, this.format))));
    const off = () => offs.forEach((o) => o());
    this.#unsubscribe.push(off);
    return off;
  }

  close(): void {
    this.#wire.close();
    for (const off of this.#unsubscribe.splice(0)) off();
  }
}

/** ESPHome's bl0942 (a PollingComponent on a UART): setup writes and a read-back, then a full-packet poll each
 *  update_interval. */
class Bl0942Component {
  readonly sensors: Partial<Record<'voltage' | 'current' | 'power' | 'energy' | 'frequency', SensorEntity>> = {};
  readonly address: number;
  readonly refs: Bl0942Refs;
  #reader: Bl0942Reader;
  #setupBytes: number[] | null = null;
  setupFailed = false;

  constructor(private dev: EsphomeDevice, private conf: Conf, private bus: UartBus | undefined) {
    for (const k of ['voltage', 'current', 'power', 'energy', 'frequency'] as const) {
      if (isMap(conf[k])) this.sensors[k] = dev.addSensor(conf[k] as Conf, k, 'bl0942');
    }
    this.address = num(conf.address, 0)!;
    const ref = (k: string) => num(conf[`${k}_reference`]);
    const set: Partial<Bl0942Refs> = {};
    for (const k of ['voltage', 'current', 'power', 'energy'] as const) if (ref(k) !== undefined) set[k] = ref(k);
    this.refs = resolveBl0942Refs(set);
    this.#reader = new Bl0942Reader({ address: this.address, refs: set });
  }

  setup(): void {
    const bus = this.bus;
    if (!bus?.ok) return;
    bus.onData((b) => {
      if (this.#setupBytes) this.#setupBytes.push(...b);
      else this.#reader.push(b);
    });
    const write = (reg: number, v: number) => {
      const p = [0xa8 | this.address, reg, v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff];
      bus.write(Buffer.from([...p, bl0942Checksum(p)]));
    };
    const mode = 0x87 | 0x08 | (String(this.conf.line_frequency ?? '50HZ').startsWith('60') ? 0x20 : 0);
    write(0x1d, 0x55);
    if (this.conf.reset !== false) write(0x1c, 0x5a5a5a);
    write(0x19, mode);
    write(0x1d, 0);
    // read_reg_(MODE): the answer is read right away (the UART's 100 ms read timeout); setup then ends and the poller
    // starts, its first poll at once.
    this.#setupBytes = [];
    bus.write(Buffer.from([0x58 | this.address, 0x19]));
    const started = this.dev.board.clock.now();
    const waitRead = () => {
      const got = this.#setupBytes!;
      const sentAt = started + (26 * 10 * 1000) / bus.format.baud;
      if (got.length < 4 && this.dev.board.clock.now() < sentAt + 100) return void this.dev.after(5, waitRead);
      const [b0, b1, b2, cs] = got;
      this.setupFailed = got.length < 4 || cs !== bl0942Checksum([0x58 | this.address, 0x19, b0, b1, b2]) ||
        (b0 | (b1 << 8) | (b2 << 16)) !== mode;
      if (this.setupFailed) this.dev.log('[W][bl0942]: BL0942 setup failed!');
      this.#setupBytes = null;
      const interval = timeMs(this.conf.update_interval, 60000);
      const poll = () => {
        bus.write(Buffer.from([0x58 | this.address, 0xaa]));
        this.dev.after(interval, poll);
      };
      poll();
    };
    this.dev.after(5, waitRead);
  }

  loop(now: number): void {
    const r = this.#reader.loop(now);
    if (r?.log) this.dev.log(`[${r.log[0]}][bl0942]: ${r.log.slice(2)}`);
    if (!r?.readings) return;
    for (const [k, s] of Object.entries(this.sensors)) s?.publish(r.readings[k as keyof typeof r.readings]);
  }
}

/** ESPHome's cse7766: every frame the chip sends, parsed as it comes (no polling). */
class Cse7766Component {
  readonly sensors: Record<string, SensorEntity> = {};
  #reader = new Cse7766Reader();
  constructor(private dev: EsphomeDevice, conf: Conf, private bus: UartBus | undefined) {
    for (const k of ['voltage', 'current', 'power', 'energy', 'apparent_power', 'reactive_power', 'power_factor']) {
      if (isMap(conf[k])) this.sensors[k] = dev.addSensor(conf[k] as Conf, k, 'cse7766');
    }
  }
  setup(): void {
    this.bus?.onData((b) => {
      for (const r of this.#reader.push(b, this.dev.board.clock.now())) {
        for (const l of r.logs) this.dev.log(`[${l[0]}][cse7766]: ${l.slice(2)}`);
        if (!r.valid) continue;
        const values: Record<string, number | undefined> = { voltage: r.voltage, current: r.current, power: r.power,
          energy: r.energy, apparent_power: r.apparentPower, reactive_power: r.reactivePower,
          power_factor: r.powerFactor };
        for (const [k, s] of Object.entries(this.sensors)) if (values[k] !== undefined) s.publish(values[k]!);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The device

/** The running firmware; start() is its boot, stop() its end (a reboot or the power going). */
export class EsphomeDevice implements EntitySource {
  readonly friendlyName: string;
  /** Every entity, internal ones too, in creation order. */
  readonly all: Entity[] = [];
  /** What the simulation does not do of this config (listed once each). */
  readonly unsupported: string[] = [];
  /** What the device logged that tests may look for (UART failures, tuya, bl0942). */
  readonly logs: string[] = [];
  readonly events = new EventEmitter();
  /** ESPHome's tuya component, when the config has `tuya:`. */
  tuya?: ModuleSide;
  #timers = new Set<unknown>();
  #ids = new Map<string, unknown>();
  #outputs = new Map<string, Output>();
  #buses = new Map<string, UartBus>();
  #setups: (() => void)[] = [];
  #loops: ((now: number) => void)[] = [];
  #gpioInputs: GpioBinarySensor[] = [];
  #stateListeners = new Set<(e: ApiEntity) => void>();
  #pending = new Map<string, unknown>();
  #running = false;
  #tuyaBus?: UartBus;

  constructor(readonly config: Conf, readonly board: Board, readonly o: DeviceOptions) {
    this.friendlyName = o.friendlyName ?? o.name;
    this.events.setMaxListeners(0);
    this.#build();
  }

  // ----- what plug.ts and the API server use

  entities(): ApiEntity[] {
    return API_DOMAINS.flatMap((d) => this.all.filter((e) => e.domain === d && !e.internal));
  }

  onState(cb: (e: ApiEntity) => void): () => void {
    this.#stateListeners.add(cb);
    return () => this.#stateListeners.delete(cb);
  }

  clientsChanged(count: number): void {
    this.tuya?.setNetwork({ connected: true, apiConnected: count > 0 });
  }

  /** A level on the board changed (a button, a wall switch): the gpio binary sensors read their pins. */
  inputsChanged(): void {
    if (this.#running) for (const s of this.#gpioInputs) s.poll();
  }

  /** The entity named (or with the id) given, for tests. */
  entity(nameOrId: string): Entity | undefined {
    return this.all.find((e) => e.name === nameOrId || e.id === nameOrId);
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const s of this.#setups) s();
    const loop = () => {
      const now = this.board.clock.now();
      for (const l of this.#loops) l(now);
      this.after(16, loop);
    };
    if (this.#loops.length) this.after(16, loop);
    const interval = this.o.flashWriteIntervalMs ?? 60000;
    const sync = () => {
      this.sync();
      this.after(interval, sync);
    };
    this.after(interval, sync);
  }

  /** Ends the firmware. A safe reboot (OTA, the restart button) writes pending preferences first; power loss not. */
  stop(o: { sync?: boolean } = {}): void {
    if (o.sync) this.sync();
    this.#running = false;
    for (const t of this.#timers) this.board.clock.clearTimeout(t);
    this.#timers.clear();
    this.tuya?.stop();
    for (const b of this.#buses.values()) b.close();
    this.#stateListeners.clear();
  }

  /** global_preferences->sync(): what changed since the last write goes to flash. */
  sync(): void {
    for (const [k, v] of this.#pending) this.o.flash.set(k, v);
    this.#pending.clear();
  }

  // ----- for the components

  after(ms: number, fn: () => void): unknown {
    const t = this.board.clock.setTimeout(() => {
      this.#timers.delete(t);
      if (this.#running) fn();
    }, ms);
    this.#timers.add(t);
    return t;
  }

  cancel(t: unknown): void {
    if (t === undefined) return;
    this.board.clock.clearTimeout(t);
    this.#timers.delete(t);
  }

  restore(key: string): unknown {
    return this.#pending.has(key) ? this.#pending.get(key) : this.o.flash.get(key);
  }

  save(key: string, v: unknown): void {
    this.#pending.set(key, v);
  }

  note(what: string): void {
    if (!this.unsupported.includes(what)) this.unsupported.push(what);
  }

  log(line: string): void {
    // A chip that complains about every frame (an HLW8032 with no load: 18 a second) must not fill the memory.
    if (this.logs.length >= 1000) this.logs.splice(0, 500);
    this.logs.push(line);
    this.events.emit('log', line);
  }

  emitState(e: Entity): void {
    if (!this.#running) return;
    for (const cb of [...this.#stateListeners]) cb(e);
    this.events.emit('state', e);
  }

  output(id: string): Output | undefined {
    return this.#outputs.get(id);
  }

  addSensor(conf: Conf, kind?: string, platform?: string): SensorEntity {
    return this.#add(new SensorEntity(this, conf, kind, platform));
  }

  tuyaListen(dp: number, cb: (d: TuyaDpReading) => void): void {
    if (!this.tuya) return void this.note(`a tuya entity (datapoint ${dp}) without a tuya: component`);
    this.tuya.onDatapoint(dp, cb);
  }

  tuyaSet(dp: number, value: boolean | number | string, type: TuyaDpType): void {
    this.tuya?.setDatapoint(dp, value, { type });
  }

  /** Runs an automation's actions in order (`delay` waits on the clock); `x` is the trigger's value. */
  exec(actions: Actions, _x?: boolean, done: () => void = () => {}): void {
    const list = actions.length === 1 && isMap(actions[0]) && 'then' in actions[0] ? asList(actions[0].then) : actions;
    let i = 0;
    const next = (): void => {
      while (i < list.length) {
        const a = list[i++];
        const [name, arg] = isMap(a) ? Object.entries(a)[0] ?? [] : [String(a), undefined];
        if (name === 'delay') return void this.after(timeMs(arg), next);
        if (name === 'if' && isMap(arg)) {
          return this.exec(asList(this.#condition(arg.condition) ? arg.then : arg.else), _x, next);
        }
        this.#action(String(name), arg);
      }
      done();
    };
    next();
  }

  // ----- building from the config

  #add<T extends Entity>(e: T): T {
    this.all.push(e);
    if (e.id) this.#ids.set(e.id, e);
    return e;
  }

  #build(): void {
    const c = this.config;
    const entries = (key: string) => asList(c[key]).filter(isMap) as Conf[];
    for (const conf of entries('uart')) {
      const bus = new UartBus(this, conf);
      this.#buses.set(String(conf.id ?? 'uart'), bus);
    }
    const busOf = (conf: Conf) => (conf.uart_id !== undefined ? this.#buses.get(String(conf.uart_id))
      : [...this.#buses.values()][0]);
    if (isMap(c.tuya) || c.tuya === null) {
      const conf = isMap(c.tuya) ? c.tuya : {};
      const bus = busOf(conf);
      this.#tuyaBus = bus;
      const clock = this.board.clock;
      const format = { baud: bus?.format.baud ?? 9600 };
      // The tuya component times its own bytes; the bus hands them on and brings back what the MCU says.
      const port: TuyaMcuPort = { baud: format.baud, clock, format,
        receive: (bytes, from) => bus?.ok && bus.deliver(bytes, from ?? format),
        onSend: (cb) => (bus?.ok ? bus.onData(cb) : () => {}) };
      this.tuya = new ModuleSide(port, { clock, baud: format.baud, network: { connected: true, apiConnected: false },
        timeoutMs: 3_600_000 });
    }
    for (const conf of entries('output')) {
      const out = conf.platform === 'gpio' || conf.platform === 'libretiny_pwm'
        ? new Output(this, pinSpec(conf.pin), conf.platform === 'libretiny_pwm') : undefined;
      if (!out) this.note(`output platform ${conf.platform}: not driven`);
      else {
        this.#outputs.set(String(conf.id), out);
        this.#setups.push(() => out.setup());
      }
    }
    for (const conf of entries('switch')) {
      const sw = conf.platform === 'gpio' ? new GpioSwitch(this, conf) : conf.platform === 'hbridge'
        ? new HBridgeSwitch(this, conf) : conf.platform === 'tuya' ? new TuyaSwitch(this, conf) : undefined;
      if (!sw) {
        this.note(`switch platform ${conf.platform}: not simulated`);
        continue;
      }
      this.#add(sw);
      if (sw instanceof GpioSwitch || sw instanceof HBridgeSwitch) this.#setups.push(() => sw.setup());
    }
    if (isMap(c.status_led)) {
      const pin = pinSpec(c.status_led.pin);
      // No warning or error: the status LED stays off (it blinks only while something is wrong).
      if (pin) {
        this.#setups.push(() => {
          this.board.pinMode(pin.pin, 'OUTPUT');
          this.board.write(pin.pin, pin.inverted);
        });
      }
    }
    for (const conf of entries('light')) {
      const light = this.#add(new LightEntity(this, conf));
      this.#setups.push(() => light.setup());
    }
    for (const conf of entries('binary_sensor')) {
      if (conf.platform === 'gpio') {
        const s = this.#add(new GpioBinarySensor(this, conf));
        this.#gpioInputs.push(s);
        this.#setups.push(() => s.setup());
      } else if (conf.platform === 'tuya') {
        const s = this.#add(new BinarySensorEntity(this, conf));
        this.tuyaListen(num(conf.sensor_datapoint) ?? -1, (d) => s.publish(!!d.value));
      } else {
        this.note(`binary_sensor platform ${conf.platform}: listed, no state`);
        this.#add(new BinarySensorEntity(this, conf));
      }
    }
    for (const conf of entries('sensor')) {
      if (conf.platform === 'bl0942') {
        const comp = new Bl0942Component(this, conf, busOf(conf));
        this.#setups.push(() => comp.setup());
        this.#loops.push((now) => comp.loop(now));
      } else if (conf.platform === 'cse7766') {
        const comp = new Cse7766Component(this, conf, busOf(conf));
        this.#setups.push(() => comp.setup());
      } else if (conf.platform === 'tuya') {
        const s = this.addSensor(conf);
        // TuyaSensor: a bool as 0/1, an integer, an enum or a bitmap as its number.
        this.tuyaListen(num(conf.sensor_datapoint) ?? -1, (d) => {
          if (d.type !== 'raw' && d.type !== 'string') s.publish(Number(d.value));
        });
      } else if (conf.platform === 'hlw8012') {
        // CF/CF1 pulse counting is not simulated: its sensors are listed and never get a state.
        this.note('sensor platform hlw8012: listed, no state (pulses not simulated)');
        for (const k of ['voltage', 'current', 'power', 'energy']) {
          if (isMap(conf[k])) this.addSensor(conf[k] as Conf, k);
        }
      } else {
        this.note(`sensor platform ${conf.platform}: listed, no state`);
        this.addSensor(conf);
      }
    }
    for (const conf of entries('text_sensor')) {
      if (conf.platform === 'libretiny') {
        if (isMap(conf.version)) {
          const t = this.#add(new TextSensorEntity(this, conf.version as Conf));
          // LTComponent::dump_config() publishes the banner, in the loop right after setup.
          this.#setups.push(() => this.after(16, () => t.publish(this.o.ltVersion ?? 'v1.9.1')));
        }
      } else if (conf.platform === 'tuya') {
        const t = this.#add(new TextSensorEntity(this, conf));
        this.tuyaListen(num(conf.sensor_datapoint) ?? -1, (d) => {
          if (d.type === 'string') t.publish(String(d.value));
          else if (d.type === 'raw') t.publish(hexPretty(d.value as Buffer));
          else if (d.type === 'enum') t.publish(String(d.value));
          // other types: "Unsupported data type for tuya text sensor": nothing published
        });
      } else {
        this.note(`text_sensor platform ${conf.platform}: listed, no state`);
        this.#add(new TextSensorEntity(this, conf));
      }
    }
    for (const conf of entries('number')) {
      if (conf.platform !== 'tuya') this.note(`number platform ${conf.platform}: listed, no state`);
      this.#add(new NumberEntity(this, conf));
    }
    for (const conf of entries('select')) {
      if (conf.platform !== 'tuya') this.note(`select platform ${conf.platform}: listed, no state`);
      this.#add(new SelectEntity(this, conf));
    }
    for (const conf of entries('fan')) this.#add(new FanEntity(this, conf));
    for (const conf of entries('climate')) this.#add(new ClimateEntity(this, conf));
    if (this.tuya) {
      const tuya = this.tuya;
      this.#setups.push(() => {
        tuya.start();
        // The component never gives up (a heartbeat every 15 s retries); its log says each time it failed.
        let seen = 0;
        const forward = () => {
          for (; seen < tuya.logs.length; seen++) {
            const l = tuya.logs[seen];
            if (l.level === 'E' || l.level === 'W' || l.level === 'I') this.log(`[${l.level}][tuya]: ${l.text}`);
          }
        };
        this.#loops.push(forward);
        tuya.ready.then(() => (forward(), this.events.emit('tuya', 'ready')),
          () => (forward(), this.events.emit('tuya', 'failed')));
      });
      if (!this.#tuyaBus) this.log('[E][tuya]: no uart bus for the tuya component');
    }
  }

  #condition(c: unknown): boolean {
    if (Array.isArray(c)) return c.every((x) => this.#condition(x));
    if (!isMap(c)) return false;
    const [name, arg] = Object.entries(c)[0] ?? [];
    const target = (v: unknown) => this.#ids.get(String(isMap(v) ? v.id : v));
    switch (name) {
      case 'and': return asList(arg).every((x) => this.#condition(x));
      case 'or': return asList(arg).some((x) => this.#condition(x));
      case 'not': return !this.#condition(arg);
      case 'switch.is_on': return (target(arg) as SwitchEntity | undefined)?.on === true;
      case 'switch.is_off': return (target(arg) as SwitchEntity | undefined)?.on === false;
      case 'binary_sensor.is_on': return (target(arg) as BinarySensorEntity | undefined)?.value === true;
      case 'binary_sensor.is_off': return (target(arg) as BinarySensorEntity | undefined)?.value === false;
      case 'light.is_on': return (target(arg) as LightEntity | undefined)?.on === true;
      case 'light.is_off': return (target(arg) as LightEntity | undefined)?.on === false;
    }
    this.note(`condition ${name}: not simulated (false)`);
    return false;
  }

  #action(name: string, arg: unknown): void {
    const id = String(isMap(arg) ? arg.id : arg);
    const target = this.#ids.get(id);
    if (name.startsWith('switch.') && target instanceof SwitchEntity) {
      if (name === 'switch.turn_on') return target.writeState(true);
      if (name === 'switch.turn_off') return target.writeState(false);
      if (name === 'switch.toggle') return target.writeState(!target.on);
    }
    if (name.startsWith('light.') && target instanceof LightEntity) {
      const brightness = isMap(arg) ? num(arg.brightness) : undefined;
      if (name === 'light.turn_on') return target.set(true, brightness ?? target.brightness);
      if (name === 'light.turn_off') return target.set(false);
      if (name === 'light.toggle') return target.set(!target.on);
    }
    if (name === 'logger.log') return;
    this.note(`action ${name}${target ? '' : ` (${id}: no such switch or light)`}: not simulated`);
  }
}

/** ESPHome's format_hex_pretty: "DE.AD.BE.EF", with " (N)" after more than 4 bytes. */
function hexPretty(b: Buffer): string {
  const s = [...b].map((x) => x.toString(16).toUpperCase().padStart(2, '0')).join('.');
  return b.length > 4 ? `${s} (${b.length})` : s;
}
