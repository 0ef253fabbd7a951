// The config checks of the fake esphome, in ESPHome's order and with its words (read in esphome/esphome at
// 33fdbbe, 2024.11.0-dev; file names below are under esphome/): config.py validate_config() runs
//   1. the target platform (bk72xx: board, family) and stops there on an error,
//   2. loading every top-level key ("Component not found", "Platform not found", DEPENDENCIES, which when missing
//      skip that part's schema) and each component's CONFIG_SCHEMA (required/unknown keys, values, pins),
//   3. only without errors so far: the ID pass (undefined, redefined, wrong type, missing hub),
//   4. only without errors so far: the FINAL_VALIDATE_SCHEMAs (a UART device's demands on its bus),
//   5. only without errors so far: pin reuse (pins.py PinRegistry.final_validate).
// Modelled closely: the schemas a generated Tuya plug/light config uses (gpio switch/binary_sensor/output,
// status_led, hlw8012, libretiny_pwm, the LED driver hubs and their outputs, the light platforms), and for
// TuyaMCU devices, UART energy chips and latching relays: uart, tuya and its switch/binary_sensor/sensor/
// text_sensor/number/select/light/fan/climate/cover platforms, bl0942, cse7766, hlw8032, the hbridge switch, and
// logger's baud_rate/hardware_uart/level. Everything else only has its platform, dependencies, pins and IDs
// checked, so a valid config is never refused for it.
// The ESPHome version matters where ESPHome changed since that checkout (esphome-data.mjs SINCE): the world's
// `esphome.version` (2025.5.0 by default), or validateConfig's `version` option.
import fs from 'node:fs';
import { env, err } from './common.mjs';
import { COMPONENTS, PLATFORMS, DEPENDENCIES, AUTO_LOAD, RESERVED_IDS, BK72XX_BOARDS, SINCE }
  from './esphome-data.mjs';

export const TARGET_PLATFORMS = ['bk72xx', 'esp32', 'esp8266', 'host', 'rp2040', 'rtl87xx'];
const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789-_';
const FAMILIES = ['BK7231N', 'BK7231Q', 'BK7231T', 'BK7251', 'RTL8710B', 'RTL8720C'];

/** components/switch/__init__.py RESTORE_MODES */
export const SWITCH_RESTORE_MODES = ['RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF', 'ALWAYS_ON',
  'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON', 'DISABLED'];
/** components/light/__init__.py RESTORE_MODES: no DISABLED, two RESTORE_AND_* of its own. */
export const LIGHT_RESTORE_MODES = ['RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF', 'ALWAYS_ON',
  'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON', 'RESTORE_AND_OFF', 'RESTORE_AND_ON'];
const CURRENTS = (max) => Array.from({ length: (max - 10) / 5 + 1 }, (_, i) => `${10 + 5 * i}mA`);
const TIME_UNITS = ['ns', 'nanoseconds', 'us', 'µs', 'microseconds', 'ms', 'milliseconds', 's', 'sec', 'seconds',
  'min', 'minutes', 'h', 'hours', 'd', 'days'];
const METRIC_SUFFIXES = { E: 1e18, P: 1e15, T: 1e12, G: 1e9, M: 1e6, k: 1e3, da: 10, d: 1e-1, c: 1e-2, m: 0.001,
  µ: 1e-6, u: 1e-6, n: 1e-9, p: 1e-12, f: 1e-15, a: 1e-18, '': 1 };
/** binary_sensor/__init__.py register_filter(...) */
const BINARY_FILTERS = ['invert', 'delayed_on_off', 'delayed_on', 'delayed_off', 'autorepeat', 'lambda', 'settle'];

// The C++ classes IDs are declared with (cpp_generator.py MockObjClass names) and what they inherit.
const FLOAT_OUTPUT = 'output::FloatOutput';
const BINARY_OUTPUT = 'output::BinaryOutput';
const CLASSES = {
  'libretiny_pwm::LibreTinyPWM': [FLOAT_OUTPUT, BINARY_OUTPUT],
  'gpio::GPIOBinaryOutput': [BINARY_OUTPUT],
  'sm2135::SM2135::Channel': [FLOAT_OUTPUT, BINARY_OUTPUT],
  'bp1658cj::BP1658CJ::Channel': [FLOAT_OUTPUT, BINARY_OUTPUT],
  'bp5758d::BP5758D::Channel': [FLOAT_OUTPUT, BINARY_OUTPUT],
  'sm2235::SM2235::Channel': [FLOAT_OUTPUT, BINARY_OUTPUT],
  'sm2335::SM2335::Channel': [FLOAT_OUTPUT, BINARY_OUTPUT],
  'sm2135::SM2135': [], 'bp1658cj::BP1658CJ': [], 'bp5758d::BP5758D': [],
  'sm2235::SM2235': ['sm10bit_base::Sm10BitBase'], 'sm2335::SM2335': ['sm10bit_base::Sm10BitBase'],
  'gpio::GPIOSwitch': ['switch_::Switch'],
  'gpio::GPIOBinarySensor': ['binary_sensor::BinarySensor'],
  'light::LightState': [],
  'sensor::Sensor': [],
  'hlw8012::HLW8012Component': [],
  'status_led::StatusLED': [],
  'uart::LibreTinyUARTComponent': ['uart::UARTComponent'],
  'tuya::Tuya': [],
  'tuya::TuyaSwitch': ['switch_::Switch'],
  'tuya::TuyaBinarySensor': ['binary_sensor::BinarySensor'],
  'tuya::TuyaSensor': ['sensor::Sensor'],
  'tuya::TuyaTextSensor': ['text_sensor::TextSensor'],
  'tuya::TuyaNumber': ['number::Number'],
  'tuya::TuyaSelect': ['select::Select'],
  'tuya::TuyaClimate': ['climate::Climate'],
  'fan::Fan': [],
  'cover::Cover': [],
  'hbridge::HBridgeSwitch': ['switch_::Switch'],
  'bl0942::BL0942': [],
  'cse7766::CSE7766Component': [],
  'hlw8032::HLW8032Component': [],
};
/** What any entry of a platform domain is, whatever its platform (the exact class is not known). */
const DOMAIN_CLASS = {
  light: 'light::LightState', switch: 'switch_::Switch', binary_sensor: 'binary_sensor::BinarySensor',
  sensor: 'sensor::Sensor', output: BINARY_OUTPUT, text_sensor: 'text_sensor::TextSensor', number: 'number::Number',
  select: 'select::Select', fan: 'fan::Fan', climate: 'climate::Climate', cover: 'cover::Cover',
  time: 'time::RealTimeClock',
};
/** Actions and conditions whose id names another component (maybe_simple_id: `action: x` or `action: {id: x}`). */
const ACTION_REFS = {
  'switch.toggle': 'switch_::Switch', 'switch.turn_on': 'switch_::Switch', 'switch.turn_off': 'switch_::Switch',
  'switch.is_on': 'switch_::Switch', 'switch.is_off': 'switch_::Switch',
  'light.toggle': 'light::LightState', 'light.turn_on': 'light::LightState', 'light.turn_off': 'light::LightState',
  'light.control': 'light::LightState', 'light.dim_relative': 'light::LightState',
  'light.is_on': 'light::LightState', 'light.is_off': 'light::LightState',
  'output.turn_on': BINARY_OUTPUT, 'output.turn_off': BINARY_OUTPUT, 'output.set_level': FLOAT_OUTPUT,
  'binary_sensor.is_on': 'binary_sensor::BinarySensor', 'binary_sensor.is_off': 'binary_sensor::BinarySensor',
};

/** One ESPHome validation error (voluptuous Invalid): where, and the text config.py prints. */
class Invalid extends Error {
  /** raw: a cv.Required(msg=...) message, which config.py prints as it is (no period added). */
  constructor(msg, subPath = [], { raw = false } = {}) {
    super(msg);
    this.subPath = subPath;
    this.raw = raw;
  }
}

/**
 * Validates a substituted config. Returns the errors ({domain, path, msg, key?, value?}), like the "Failed config"
 * blocks of `esphome config`, and the board's chip once valid.
 */
export function validateConfig(config, { version = worldVersion() } = {}) {
  const errors = [];
  const v = new Validator(config, errors, version);
  v.run();
  return { errors, chip: v.chip };
}

/** The fake esphome's version: the world's `esphome.version` when run as the fake tool, else its default. */
function worldVersion() {
  try {
    if (env().FAKE_WORLD) return JSON.parse(fs.readFileSync(env().FAKE_WORLD, 'utf8')).esphome?.version
      ?? '2025.5.0';
  } catch { /* no readable world: the default */ }
  return '2025.5.0';
}

/** "2024.12.0" >= "2024.11.2"? (release numbers; a beta or dev suffix counts as that release). */
function atLeast(version, since) {
  const parts = (v) => String(v).split(/[.]/).map((x) => Number.parseInt(x, 10) || 0);
  const a = parts(version);
  const b = parts(since);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

class Validator {
  constructor(config, errors, version) {
    this.config = config;
    this.errors = errors;
    this.version = version;
    this.finals = []; // FINAL_VALIDATE_SCHEMA checks, run after the ID pass
    this.uartDevices = new Map(); // a UART bus (its path) -> {tx_pin, rx_pin}: which component claimed the pin
    this.declared = []; // {id, path, classes: string[] | null (unknown), exact: string | null, manual}
    this.references = []; // {id, path, type} (id undefined: the one component of that type, e.g. a hub)
    this.pinUses = new Map(); // number -> [{path, allow, raw}]
    this.idPaths = new Set(); // where an id was declared (or refused), so the catch-all pass skips it
  }

  /** The output path ESPHome names an error by: `light.rgbww` for a platform entry, else the top-level key. */
  domainOf(path) {
    const top = path[0];
    const v = this.config[top];
    if (PLATFORMS[top] && Array.isArray(v) && typeof path[1] === 'number') {
      const p = v[path[1]]?.platform;
      return p === undefined || !isMap(v[path[1]]) ? `${top}.unknown` : `${top}.${p}`;
    }
    return String(top ?? 'esphome');
  }

  add(path, msg, { raw = false } = {}) {
    const last = path[path.length - 1];
    const value = this.get(path);
    const scalar = value === null || ['string', 'number', 'boolean'].includes(typeof value);
    this.errors.push({ domain: this.domainOf(path), path, msg: raw ? msg : humanize(msg),
      ...(typeof last === 'string' && scalar ? { key: last, value } : {}) });
  }

  get(path) {
    let v = this.config;
    for (const k of path) v = v?.[k];
    return v;
  }

  /** Runs fn(); an Invalid it throws becomes an error at path (+ the error's own sub-path). */
  guard(path, fn) {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      this.add([...path, ...e.subPath], e.message, { raw: e.raw });
      return undefined;
    }
  }

  run() {
    const c = this.config;
    if (!isMap(c.esphome)) {
      this.errors.push({ domain: 'esphome', path: [], msg: "'esphome' section missing from configuration. Please " +
        "make sure your configuration has an 'esphome:' line in it." });
      return;
    }
    const name = c.esphome.name;
    if (name === undefined || name === null) this.add(['esphome'], "'name' is a required option for [esphome].");
    else {
      const bad = [...String(name)].find((ch) => !NAME_CHARS.includes(ch));
      if (bad !== undefined) {
        this.add(['esphome', 'name'], `'${bad}' is an invalid character for names. Valid characters are: ` +
          `${NAME_CHARS} (lowercase, no spaces)`);
      } else if (String(name).length > 31) this.add(['esphome', 'name'], 'Hostnames can only be 31 characters long');
    }
    // 1. the target platform
    const platform = TARGET_PLATFORMS.find((p) => p in c);
    if (!platform) {
      this.add(['esphome'], 'Platform missing. You must include one of the available platform keys: ' +
        TARGET_PLATFORMS.join(', '));
      return;
    }
    if (platform !== 'bk72xx') {
      this.add([platform], `fake esphome: only bk72xx configurations are simulated (found ${platform})`);
      return;
    }
    const before = this.errors.length;
    this.target();
    if (this.errors.length > before) return;
    // 2. load and validate every component
    this.loaded = this.loadedIntegrations();
    for (const key of Object.keys(c)) {
      if (key === 'esphome' || key === 'bk72xx' || key.startsWith('.')) continue;
      this.component(key);
    }
    this.collectIds(c, []);
    if (this.errors.length) return;
    // 3. IDs, 4. final validation, 5. pins
    this.idPass();
    if (this.errors.length) return;
    for (const check of this.finals) check();
    if (this.errors.length) return;
    this.pinReuse();
  }

  target() {
    const bk = isMap(this.config.bk72xx) ? this.config.bk72xx : {};
    if (bk.board === undefined) return this.add(['bk72xx'], "'board' is a required option for [bk72xx].");
    let family;
    if (bk.family !== undefined) {
      family = this.guard(['bk72xx', 'family'], () => oneOf(FAMILIES, { upper: true })(bk.family));
      if (family === undefined) return;
    }
    const known = BK72XX_BOARDS[bk.board];
    if (!known && family === undefined) {
      return this.add(['bk72xx', 'board'], 'This board is unknown, if you are sure you want to compile with this ' +
        "board selection, override with option 'family'");
    }
    if (known && family !== undefined && family !== known.family) {
      return this.add(['bk72xx', 'family'], "Option 'family' does not match selected board.");
    }
    if (!known && family.startsWith('RTL')) {
      return this.add(['bk72xx', 'family'], "The chosen family doesn't belong to 'bk72xx' component. The correct " +
        "component is 'rtl87xx'");
    }
    this.board = String(bk.board);
    this.boardPins = known?.pins ?? {};
    this.chip = (known?.family ?? family).toLowerCase();
  }

  /** Top-level keys, platforms and what they AUTO_LOAD (the names an ID may not take). */
  loadedIntegrations() {
    const loaded = new Set();
    const queue = ['esphome', 'bk72xx'];
    for (const [key, v] of Object.entries(this.config)) {
      queue.push(key);
      if (PLATFORMS[key]) for (const e of asList(v)) if (isMap(e) && typeof e.platform === 'string') {
        queue.push(e.platform);
        queue.push(...(AUTO_LOAD[`${key}.${e.platform}`] ?? []));
      }
    }
    while (queue.length) {
      const k = queue.shift();
      if (loaded.has(k)) continue;
      loaded.add(k);
      queue.push(...(AUTO_LOAD[k] ?? []));
    }
    this.autoLoadUnknown = [...loaded].some((k) => AUTO_LOAD[k] === null);
    // What the config ends up holding (config.py `result`): its top-level keys and what they and the platforms
    // AUTO_LOAD, not the platforms' own names (a `platform: tuya` does not make `tuya:` present).
    this.present = new Set(['esphome', 'bk72xx', ...Object.keys(this.config)]);
    const more = [...this.present];
    for (const [key, v] of Object.entries(this.config)) {
      if (!PLATFORMS[key]) continue;
      for (const e of asList(v)) if (isMap(e)) more.push(...(AUTO_LOAD[`${key}.${e.platform}`] ?? []));
    }
    while (more.length) {
      const k = more.shift();
      this.present.add(k);
      for (const a of AUTO_LOAD[k] ?? []) if (!this.present.has(a)) more.push(a);
    }
    return loaded;
  }

  component(key) {
    const conf = this.config[key];
    if (key === 'substitutions' || key === 'packages') return;
    if (!this.hasComponent(key)) return this.add([key], `Component not found: ${key}`);
    if (!this.dependencies(key, [key])) return;
    if (PLATFORMS[key]) {
      const entries = conf === null || conf === undefined ? [] : Array.isArray(conf) ? conf : [conf];
      entries.forEach((e, i) => this.platformEntry(key, e, Array.isArray(conf) ? [key, i] : [key]));
      return;
    }
    const found = COMPONENT_SCHEMAS[key];
    const schema = typeof found === 'function' ? found.call(this) : found;
    if (!schema) return this.scanPins(conf, [key]);
    if (Array.isArray(conf)) conf.forEach((e, i) => this.schema(e, [key, i], schema, key));
    else this.schema(conf ?? {}, [key], schema, key);
  }

  /** A component ESPHome has in this version (the checkout's, or one added since: SINCE.components). */
  hasComponent(name) {
    return COMPONENTS.has(name) || (name in SINCE.components && atLeast(this.version, SINCE.components[name]));
  }

  hasPlatform(domain, p) {
    const since = SINCE.platforms[`${domain}.${p}`];
    return PLATFORMS[domain].includes(p) || (since !== undefined && atLeast(this.version, since));
  }

  /** config.py MetadataValidationStep: false when a dependency is missing (the schema is then not validated). */
  dependencies(name, path) {
    let ok = true;
    for (const dep of DEPENDENCIES[name] ?? SINCE.dependencies[name] ?? []) {
      const [comp, plat] = dep.split('.');
      const present = this.present.has(comp);
      if (!present) {
        if (this.autoLoadUnknown) continue; // something may load it in a way the fake cannot see
        this.add(path, `Component ${name} requires component ${comp}`);
        ok = false;
      } else if (plat && !asList(this.config[comp]).some((e) => isMap(e) && e.platform === plat)) {
        this.add(path, `Component ${name} requires 'platform: ${plat}' in component '${comp}'`);
        ok = false;
      }
    }
    return ok;
  }

  platformEntry(domain, e, path) {
    if (!isMap(e)) return this.add(path, 'Platform schemas must be key-value pairs.');
    if (e.platform === undefined || e.platform === null) {
      return this.add(path, `'${domain}' requires a 'platform' key but it was not specified.`);
    }
    const p = String(e.platform);
    if (!this.hasPlatform(domain, p)) return this.add(path, `Platform not found: '${domain}.${p}'`);
    if (!this.dependencies(`${domain}.${p}`, path)) return;
    const found = PLATFORM_SCHEMAS[`${domain}.${p}`];
    const schema = (typeof found === 'function' ? found.call(this) : found) ?? DOMAIN_SCHEMAS[domain];
    const rest = { ...e };
    delete rest.platform;
    if (!schema) return this.scanPins(rest, path);
    this.schema(rest, path, schema, `${domain}.${p}`);
  }

  /**
   * A schema: {keys: {name: validator}, required: [names], open?: true (unknown keys allowed), after?: [fn]}.
   * Validators are fns (value, path) that return the value as ESPHome would have it or throw Invalid.
   */
  schema(conf, path, schema, parent) {
    if (!isMap(conf)) return this.add(path, 'expected a dictionary');
    const out = {};
    let ok = true;
    const names = Object.keys(schema.keys);
    for (const [k, val] of Object.entries(conf)) {
      const p = [...path, k];
      const check = schema.keys[k];
      if (!check) {
        if (schema.open) {
          if (k.startsWith('on_')) this.automation(val, p);
          else this.scanPins(val, p);
          continue;
        }
        this.add(p, extraKey(k, parent, names), { raw: true });
        ok = false;
        continue;
      }
      const before = this.errors.length;
      const r = this.guard(p, () => check.call(this, val, p));
      if (this.errors.length > before) ok = false;
      else out[k] = r;
    }
    for (const k of schema.required ?? []) {
      if (!(k in conf)) {
        this.add([...path, k], `'${k}' is a required option for [${parent}].`);
        ok = false;
      }
    }
    // vol.Inclusive: all of a group's keys or none
    for (const [group, keys] of Object.entries(schema.inclusive ?? {})) {
      const given = keys.filter((k) => k in conf);
      if (given.length && given.length < keys.length) {
        this.add([...path, group], `some but not all values in the same group of inclusion '${group}'`);
        ok = false;
      }
    }
    if (!ok) return;
    for (const fn of schema.after ?? []) {
      const before = this.errors.length;
      this.guard(path, () => fn.call(this, out, conf, path));
      if (this.errors.length > before) return;
    }
  }

  // ---- IDs ----

  /** Declared IDs outside automations (where `id` names something else); positions this fake models set a class. */
  collectIds(v, path) {
    if (Array.isArray(v)) return v.forEach((x, i) => this.collectIds(x, [...path, i]));
    if (!isMap(v)) return;
    for (const [k, x] of Object.entries(v)) {
      if (k.startsWith('on_') || k === 'then' || k === 'else' || k === 'filters') continue;
      if (k === 'id' && (typeof x === 'string' || typeof x === 'number')) {
        if (!this.idPaths.has([...path, k].join('\u0000'))) this.declare(String(x), [...path, k], null);
      } else this.collectIds(x, [...path, k]);
    }
  }

  /** cv.declare_id: a valid C++ name, not taken by ESPHome itself. */
  declare(id, path, exact, manual = true) {
    this.idPaths.add(path.join('\u0000'));
    if (manual && this.guard(path, () => validateIdName(id, this.loaded)) === undefined) return;
    let classes = null;
    if (exact) classes = [exact, ...(CLASSES[exact] ?? [])];
    else {
      const base = DOMAIN_CLASS[path[0]];
      if (base && typeof path[1] === 'number' && path.length === 3) classes = [base];
    }
    this.declared.push({ id, path, exact: exact ?? null, classes, manual, complete: !!exact });
  }

  /** cv.use_id(type): a valid name now, resolved in the ID pass. */
  use(type) {
    return function (value, path) {
      const id = validateIdName(value, this.loaded);
      this.references.push({ id, path, type });
      return id;
    };
  }

  idPass() {
    const seen = [];
    for (const d of this.declared) {
      if (!d.manual) {
        seen.push(d);
        continue;
      }
      const first = seen.find((s) => s.manual && s.id === d.id);
      if (first) this.add(d.path, `ID ${d.id} redefined! Check ${first.path.join('->')}`);
      else seen.push(d);
    }
    for (const r of this.references) {
      if (r.id === undefined) {
        const matches = seen.filter((d) => d.classes?.includes(r.type));
        if (!matches.length) {
          this.add(r.path, `Couldn't find any component that can be used for '${r.type}'. Are you missing a hub ` +
            'declaration?');
        } else if (matches.length > 1) {
          const manual = matches.filter((m) => m.manual);
          const last = r.path[r.path.length - 1];
          this.add(r.path, manual.length
            ? `Too many candidates found for '${last}' type '${r.type}' ${manual.length > 1 ? 'Some are' : 'One is'} ` +
              manual.map((m) => `'${m.id}'`).join(', ')
            : `Too many candidates found for '${last}' type '${r.type}' You must assign an explicit ID to the parent ` +
              'component you want to use.');
        }
        continue;
      }
      const match = seen.find((d) => d.manual && d.id === r.id);
      if (!match) {
        let msg = `Couldn't find ID '${r.id}'. Please check you have defined an ID with that name in your ` +
          'configuration.';
        const close = closeMatches(r.id, seen.filter((d) => d.manual).map((d) => d.id));
        if (close.length) msg += ` These IDs look similar: ${close.map((x) => `"${x}"`).join(', ')}.`;
        this.add(r.path, msg);
        continue;
      }
      if (match.complete && !match.classes.includes(r.type)) {
        this.add(r.path, `ID '${r.id}' of type ${match.exact} doesn't inherit from ${r.type}. Please double check ` +
          'your ID is pointing to the correct value');
      }
    }
  }

  // ---- automations ----

  /** on_* triggers: the IDs their actions and conditions name (the rest of an automation is not checked). */
  automation(v, path) {
    if (Array.isArray(v)) return v.forEach((x, i) => this.automation(x, [...path, i]));
    if (!isMap(v)) return;
    for (const [k, x] of Object.entries(v)) {
      const p = [...path, k];
      const type = ACTION_REFS[k];
      if (type) {
        const id = isMap(x) ? x.id : x;
        const at = isMap(x) ? [...p, 'id'] : p;
        if (id === undefined || id === null) this.add(at, `'id' is a required option for [${k}].`);
        else this.guard(at, () => this.use(type).call(this, id, at));
      } else this.automation(x, p);
    }
  }

  // ---- pins ----

  /** Keys named pin / *_pin in parts this fake does not model: validated as pins with no default mode. */
  scanPins(v, path) {
    if (Array.isArray(v)) return v.forEach((x, i) => this.scanPins(x, [...path, i]));
    if (!isMap(v)) return;
    for (const [k, x] of Object.entries(v)) {
      const p = [...path, k];
      if (k.startsWith('on_')) this.automation(x, p);
      else if ((k === 'pin' || k.endsWith('_pin')) && (isMap(x) || typeof x === 'string' || typeof x === 'number')) {
        this.guard(p, () => this.pin(null).call(this, x, p));
      } else this.scanPins(x, p);
    }
  }

  /**
   * A pin schema (pins.py _schema_creator + libretiny/gpio.py): a number or {number, mode, inverted,
   * allow_other_uses, id}; the number resolved on the board; the mode one LibreTiny supports. defaultMode: the
   * schema's (output, input, input_pullup), or null where the fake does not know it (then only a given mode is
   * checked).
   */
  pin(defaultMode) {
    return function (value, path) {
      const conf = isMap(value) ? value : { number: value };
      const parent = String(path[path.length - 1]);
      const allowed = ['id', 'number', 'allow_other_uses', 'mode', 'inverted'];
      for (const k of Object.keys(conf)) {
        if (!allowed.includes(k)) throw new Invalid(extraKey(k, parent, allowed), [k], { raw: true });
      }
      if (conf.number === undefined || conf.number === null) {
        throw new Invalid(`'number' is a required option for [${parent}].`, ['number']);
      }
      const number = this.pinNumber(conf.number, isMap(value) ? ['number'] : []);
      for (const k of ['inverted', 'allow_other_uses']) if (k in conf) boolean(conf[k], [k]);
      let mode = conf.mode;
      if (mode === undefined) mode = defaultMode;
      if (mode !== null && mode !== undefined) pinMode(mode, number, this.boardPins);
      if (typeof conf.id === 'string') this.declare(conf.id, [...path, 'id'], null);
      if (!this.pinUses.has(number)) this.pinUses.set(number, []);
      const at = isMap(value) ? [...path, 'number'] : path;
      this.pinUses.get(number).push({ path: at, allow: conf.allow_other_uses === true, raw: conf.number });
      return number;
    };
  }

  /** libretiny/gpio.py _translate_pin + _lookup_pin */
  pinNumber(raw, sub) {
    let v = raw;
    if (isMap(v) || v === null) {
      throw new Invalid('This variable only supports pin numbers, not full pin schemas (with inverted and mode).', sub);
    }
    if (typeof v === 'string' && /^GPIOX/i.test(v)) {
      throw new Invalid(`Found placeholder '${v}' when expecting a GPIO pin number.\nYou must replace this with an ` +
        'actual pin number.', sub);
    }
    if (typeof v === 'string' && /^[-+]?\d+$/.test(v.trim())) v = Number(v);
    else if (typeof v === 'string' && /^GPIO[-+]?\d+$/.test(v)) v = Number(v.slice(4));
    else if (typeof v === 'string' && /^P[-+]?\d+$/.test(v)) v = Number(v.slice(1));
    const pins = this.boardPins;
    const known = Object.keys(pins).length > 0;
    if (typeof v === 'number') {
      if (!known || Object.values(pins).includes(v)) return v;
      throw new Invalid(`Pin number '${v}' is not usable for board ${this.board}.`, sub);
    }
    if (typeof v === 'string') {
      if (!known) {
        throw new Invalid(`Board ${this.board} wasn't found. Use 'GPIO#' (numeric value) instead of '${v}'.`, sub);
      }
      if (v in pins) {
        if (/^[DA]\d+$/.test(v)) {
          const others = Object.keys(pins).filter((k) => pins[k] === pins[v] && !/^[DA]\d+$/.test(k))
            .sort((a, b) => (a[0] === 'P' ? a.length - 99 : a.length) - (b[0] === 'P' ? b.length - 99 : b.length));
          err('WARNING Using D# and A# pin numbering is deprecated. Please replace ' +
            `'${v}' with one of: ${others.join(', ')}\n`);
        }
        return pins[v];
      }
      throw new Invalid(`Cannot resolve pin name '${v}' for board ${this.board}.`, sub);
    }
    throw new Invalid(`Unrecognized pin value '${v}'.`, sub);
  }

  pinReuse() {
    for (const [n, uses] of this.pinUses) {
      for (const u of uses) {
        if (uses.length > 1 && !u.allow) this.add(u.path, `Pin ${n} is used in multiple places`);
        if (uses.length === 1 && u.allow) this.add(u.path, `Pin ${n} incorrectly sets allow_other_uses: true`);
      }
    }
  }
}

// ---- value validators (config_validation.py) ---------------------------------------------------------------------

function isMap(v) {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

function asList(v) {
  return v === undefined || v === null ? [] : Array.isArray(v) ? v : [v];
}

/**
 * config.py _format_vol_invalid for a key the schema does not have (voluptuous_schema.py: difflib's candidates),
 * printed as it is (not through humanize_error: "Did you mean [x]?" keeps its question mark).
 */
function extraKey(key, parent, names) {
  const close = closeMatches(key, names);
  const head = `[${key}] is an invalid option for [${parent}].`;
  return close.length ? `${head} Did you mean ${close.map((x) => `[${x}]`).join(', ')}?`
    : `${head} Please check the indentation.`;
}

/** config.py humanize_error: a final period. */
function humanize(msg) {
  const m = String(msg).trim();
  return m.endsWith('.') ? m : `${m}.`;
}

/** cv.string */
function string(v) {
  if (isMap(v) || Array.isArray(v)) throw new Invalid('string value cannot be dictionary or list.');
  if (typeof v === 'boolean') {
    throw new Invalid('Auto-converted this value to boolean, please wrap the value in quotes.');
  }
  if (v === null || v === undefined) throw new Invalid('string value is None');
  return String(v);
}

/** cv.boolean */
function boolean(v, sub = []) {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') {
    const l = v.toLowerCase();
    if (['true', 'yes', 'on', 'enable'].includes(l)) return true;
    if (['false', 'no', 'off', 'disable'].includes(l)) return false;
  }
  throw new Invalid(`Expected boolean value, but cannot convert ${pyStr(v)} to a boolean. Please use 'true' or ` +
    "'false'", sub);
}

/** Python's str() of a YAML value, for messages. */
function pyStr(v) {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  return String(v);
}

/** cv.boolean as a schema value (schema validators also get the path). */
const bool = (v) => boolean(v);

/** cv.int_ */
function int(v) {
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return v;
    throw new Invalid('This option only accepts integers with no fractional part. Please remove the fractional part ' +
      `from ${v}`);
  }
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v !== 'string') {
    throw new Invalid(`Must be string, got ${pyType(v)}. did you forget putting quotes around the value?`);
  }
  const s = v.toLowerCase().trim();
  if (/^[-+]?\d+$/.test(s)) return Number(s);
  if (/^[-+]?0x[0-9a-f]+$/.test(s)) return Number.parseInt(s, 16);
  throw new Invalid(`Expected integer, but cannot parse ${v.toLowerCase()} as an integer`);
}

function pyType(v) {
  const js = { string: 'str', boolean: 'bool', number: Number.isInteger(v) ? 'int' : 'float' };
  const name = Array.isArray(v) ? 'list' : isMap(v) ? 'dict' : v === null ? 'NoneType' : js[typeof v] ?? typeof v;
  return `<class '${name}'>`;
}

/** vol.Coerce(float) */
function float(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  const PY_FLOAT = /^\s*[-+]?(\d+\.?\d*(e[-+]?\d+)?|\.\d+(e[-+]?\d+)?|inf(inity)?|nan)\s*$/i;
  if (typeof v === 'string' && PY_FLOAT.test(v)) return Number(v.trim());
  throw new Invalid('expected float');
}

/** vol.Range messages */
function range(min, max) {
  return (n) => {
    if (min !== undefined && !(n >= min)) throw new Invalid(`value must be at least ${min}`);
    if (max !== undefined && !(n <= max)) throw new Invalid(`value must be at most ${max}`);
    return n;
  };
}
const intRange = (min, max) => (v) => range(min, max)(int(v));
const positiveFloat = (v) => range(0)(float(v));

/** cv.one_of / cv.enum, with difflib's suggestions. */
function oneOf(values, { upper = false, lower = false, space = ' ' } = {}) {
  return (v) => {
    let s = v;
    if (upper || lower) {
      s = string(v).replace(/ /g, space);
      s = upper ? s.toUpperCase() : s.toLowerCase();
    }
    if (values.includes(s)) return s;
    const close = closeMatches(pyStr(s), values.map(String));
    if (close.length) {
      throw new Invalid(`Unknown value '${pyStr(s)}', did you mean ${close.map((x) => `'${x}'`).join(', ')}?`);
    }
    throw new Invalid(`Unknown value '${pyStr(s)}', valid options are ${values.map((x) => `'${x}'`).join(', ')}.`);
  };
}

/** cv.float_with_unit: frequency, resistance, color temperature. */
function floatWithUnit(quantity, suffix) {
  const re = new RegExp(`^([-+]?[0-9]*\\.?[0-9]*)\\s*(\\w*?)${suffix}$`, 'u');
  return (v) => {
    const s = string(v);
    const m = re.exec(s);
    if (!m) throw new Invalid(`Expected ${quantity} with unit, got ${s}`);
    if (!(m[2] in METRIC_SUFFIXES)) throw new Invalid(`Invalid ${quantity} suffix ${m[2]}`);
    if (!/\d/.test(m[1])) throw new Invalid(`could not convert string to float: '${m[1]}'`);
    return Number(m[1]) * METRIC_SUFFIXES[m[2]];
  };
}
const frequency = floatWithUnit('frequency', '(Hz|HZ|hz)?');
const resistance = floatWithUnit('resistance', '(Ω|Ω|ohm|Ohm|OHM)?');
const mireds = floatWithUnit('Color Temperature', '(mireds|Mireds)');
const kelvin = floatWithUnit('Color Temperature', '(K|Kelvin)');

/** cv.color_temperature: mireds, or Kelvin turned into mireds. */
function colorTemperature(v) {
  let val;
  try {
    val = mireds(v);
  } catch (e) {
    if (!(e instanceof Invalid)) throw e;
    val = 1000000.0 / kelvin(v);
  }
  if (val < 0) throw new Invalid('Color temperature cannot be negative');
  return val;
}

/** cv.positive_time_period_milliseconds (time_period: number+unit, HH:MM:SS, or a mapping). */
function timePeriod(v) {
  if (isMap(v)) return v;
  if (typeof v === 'string' && /^\s*\d+:\d+(:\d+)?\s*$/.test(v)) return v;
  if (typeof v === 'number' && Number.isInteger(v)) {
    throw new Invalid(`Don't know what '${v}' means as it has no time *unit*! Did you mean '${v}s'?`);
  }
  if (typeof v !== 'string') throw new Invalid('Expected string for time period with unit.');
  const m = /^([-+]?[0-9]*\.?[0-9]*)\s*(\w*)$/u.exec(v);
  if (!m) throw new Invalid(`Expected time period with unit, got ${v}`);
  oneOf(TIME_UNITS)(m[2]);
  if (!/\d/.test(m[1])) throw new Invalid(`could not convert string to float: '${m[1]}'`);
  return v;
}

/** cv.templatable(x): a lambda (a string here, the tag is gone) passes. */
const templatable = (fn) => (v) => (typeof v === 'string' && /[;(]|return\b/.test(v) ? v : fn(v));

/** cv.validate_id_name */
function validateIdName(value, loaded) {
  const v = string(value);
  if (!v) throw new Invalid('ID must not be empty');
  if (/^\d/.test(v)) throw new Invalid('First character in ID cannot be a digit.');
  if (v.includes('-')) throw new Invalid('Dashes are not supported in IDs, please use underscores instead.');
  const bad = [...v].find((ch) => !/[A-Za-z0-9_]/.test(ch));
  if (bad !== undefined) {
    throw new Invalid('IDs must only consist of upper/lowercase characters, the underscorecharacter and numbers. ' +
      `The character '${bad}' cannot be used`);
  }
  if (RESERVED_IDS.has(v)) throw new Invalid(`ID '${v}' is reserved internally and cannot be used`);
  if (loaded?.has(v)) {
    throw new Invalid(`ID '${v}' conflicts with the name of an esphome integration, please use another ID name.`);
  }
  return v;
}

/** pins.py _set_mode + gpio_validate_modes + libretiny/gpio.py validate_gpio_usage */
function pinMode(mode, number, boardPins) {
  const MODES = {
    INPUT: { input: true }, OUTPUT: { output: true }, INPUT_PULLUP: { input: true, pullup: true },
    OUTPUT_OPEN_DRAIN: { output: true, open_drain: true }, INPUT_PULLDOWN_16: { input: true, pulldown: true },
    INPUT_PULLDOWN: { input: true, pulldown: true },
    INPUT_OUTPUT_OPEN_DRAIN: { input: true, output: true, open_drain: true },
  };
  let m = mode;
  if (typeof m === 'string') {
    if (!(m.toUpperCase() in MODES)) throw new Invalid(`Unknown pin mode ${m}`, ['mode']);
    m = MODES[m.toUpperCase()];
  } else if (!isMap(m)) throw new Invalid('expected a dictionary', ['mode']);
  const keys = ['input', 'output', 'open_drain', 'pullup', 'pulldown', 'analog'];
  const flags = {};
  for (const [k, x] of Object.entries(m)) {
    if (!keys.includes(k)) throw new Invalid(extraKey(k, 'mode', keys), ['mode', k], { raw: true });
    flags[k] = boolean(x, ['mode', k]);
  }
  const f = (k) => flags[k] === true;
  if (!f('input') && !f('output')) throw new Invalid('Mode must be input or output', ['mode']);
  if (f('open_drain') && !f('output')) {
    throw new Invalid('Open-drain only works with output mode', ['mode', 'open_drain']);
  }
  if (f('analog') && !f('input')) throw new Invalid('Analog pins must be an input', ['mode', 'analog']);
  if (f('analog')) {
    const analog = Object.entries(boardPins).filter(([k]) => /^A\d+$/.test(k) || k.startsWith('ADC')).map(([, n]) => n);
    if (!analog.includes(number)) throw new Invalid(`Pin '${number}' is not an analog pin`, ['mode', 'analog']);
  }
  const key = ['input', 'output', 'open_drain', 'pullup', 'pulldown'].map(f).join();
  const supported = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 0, 1], [0, 1, 1, 0, 0]]
    .map((t) => t.map(Boolean).join());
  if (!supported.includes(key)) throw new Invalid('This pin mode is not supported', ['mode']);
}

// ---- schemas -------------------------------------------------------------------------------------------------------

const anything = (v) => v;
const keysOf = (names, fn = anything) => Object.fromEntries(names.map((n) => [n, fn]));
const COMPONENT = { setup_priority: float };
const ENTITY_BASE = {
  name: anything, internal: bool, disabled_by_default: bool, icon: anything, entity_category: anything,
};
const MQTT_COMMAND = keysOf(['qos', 'retain', 'discovery', 'subscribe_qos', 'state_topic', 'availability',
  'command_topic', 'command_retain']);
const OUTPUT_BINARY = { power_supply: anything, inverted: bool };
const OUTPUT_FLOAT = { ...OUTPUT_BINARY, max_power: anything, min_power: anything, zero_means_zero: bool };

/** config_validation.py _entity_base_validator */
function entityNeedsIdOrName(_out, conf) {
  if (!('name' in conf) && !('id' in conf)) throw new Invalid("At least one of 'id:' or 'name:' is required!");
}

/** An entity's own id: cv.declare_id(cls), or GenerateID (no id given: nothing to declare by name). */
function declareId(cls) {
  return function (value, path) {
    this.idPaths.add(path.join('\u0000'));
    this.declare(validateIdName(value, this.loaded), path, cls);
    return value;
  };
}

/** The hub an output channel belongs to: the one given, or the only one there is (GenerateID + use_id). */
function hubOf(hubKey, cls) {
  return function (_out, conf, path) {
    if (!(hubKey in conf)) this.references.push({ id: undefined, path: [...path, hubKey], type: cls });
  };
}

function declareHub(cls) {
  return function (_out, conf, path) {
    if ('id' in conf) return;
    this.declared.push({ id: undefined, path: [...path, 'id'], exact: cls, classes: [cls, ...CLASSES[cls]],
      manual: false, complete: true });
  };
}

const automations = (names) => keysOf(names, function (v, path) {
  this.automation(v, path);
  return v;
});

function lightSchema(own, required, { brightness = true, after = [] } = {}) {
  const automation = automations(['on_turn_on', 'on_turn_off', 'on_state']);
  return {
    keys: {
      ...ENTITY_BASE, web_server: anything, ...MQTT_COMMAND, id: declareId('light::LightState'), mqtt_id: anything,
      restore_mode: oneOf(LIGHT_RESTORE_MODES, { upper: true, space: '_' }), ...automation, initial_state: anything,
      effects: anything, output_id: anything,
      ...(brightness ? { gamma_correct: positiveFloat, default_transition_length: timePeriod,
        flash_transition_length: timePeriod } : {}),
      ...own,
    },
    required,
    after: [entityNeedsIdOrName, ...after],
  };
}

/** light/__init__.py validate_color_temperature_channels (on mireds: cold is the smaller number). */
function coldColderThanWarm(out) {
  const cold = out.cold_white_color_temperature;
  const warm = out.warm_white_color_temperature;
  if (cold !== undefined && warm !== undefined && cold >= warm) {
    throw new Invalid('Color temperature of the cold white channel must be colder than that of the warm white channel.',
      ['cold_white_color_temperature']);
  }
}

function floatOutputs(...names) {
  return Object.fromEntries(names.map((n) => [n, function (v, p) {
    return this.use(FLOAT_OUTPUT).call(this, v, p);
  }]));
}

const temperatures = { cold_white_color_temperature: colorTemperature, warm_white_color_temperature: colorTemperature };
const RGB = ['red', 'green', 'blue'];
const PLATFORM_SCHEMAS = {
  'light.rgb': lightSchema(floatOutputs(...RGB), RGB),
  'light.rgbw': lightSchema({ ...floatOutputs(...RGB, 'white'), color_interlock: bool }, [...RGB, 'white']),
  // ESPHome also passes has_none_or_all_keys([cold, warm]) here, but as one list argument: it never fires.
  'light.rgbww': lightSchema({ ...floatOutputs(...RGB, 'cold_white', 'warm_white'), ...temperatures,
    constant_brightness: bool, color_interlock: bool }, [...RGB, 'cold_white', 'warm_white'],
  { after: [coldColderThanWarm] }),
  'light.rgbct': lightSchema({ ...floatOutputs(...RGB, 'color_temperature', 'white_brightness'), ...temperatures,
    color_interlock: bool }, [...RGB, 'color_temperature', 'white_brightness', 'cold_white_color_temperature',
    'warm_white_color_temperature'], { after: [coldColderThanWarm] }),
  'light.cwww': lightSchema({ ...floatOutputs('cold_white', 'warm_white'), ...temperatures, constant_brightness: bool },
    ['cold_white', 'warm_white'], { after: [coldColderThanWarm] }),
  'light.color_temperature': lightSchema({ ...floatOutputs('color_temperature', 'brightness'), ...temperatures },
    ['color_temperature', 'brightness', 'cold_white_color_temperature', 'warm_white_color_temperature'],
    { after: [coldColderThanWarm] }),
  'light.monochromatic': lightSchema(floatOutputs('output'), ['output']),
  'light.binary': lightSchema({ output: function (v, p) { return this.use(BINARY_OUTPUT).call(this, v, p); } },
    ['output'], { brightness: false }),
  'light.status_led': lightSchema({
    pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); },
    output: function (v, p) { return this.use(BINARY_OUTPUT).call(this, v, p); },
  }, [], { brightness: false, after: [(_out, conf) => {
    if (!('pin' in conf) && !('output' in conf)) throw new Invalid('Must contain at least one of pin, output.');
  }] }),

  'output.libretiny_pwm': {
    keys: { ...OUTPUT_FLOAT, ...COMPONENT, id: declareId('libretiny_pwm::LibreTinyPWM'),
      pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); }, frequency },
    required: ['id', 'pin'],
  },
  'output.gpio': {
    keys: { ...OUTPUT_BINARY, ...COMPONENT, id: declareId('gpio::GPIOBinaryOutput'),
      pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); } },
    required: ['id', 'pin'],
  },
  'output.sm2135': hubOutput('sm2135', 'sm2135::SM2135', intRange(0, 65535)),
  'output.bp1658cj': hubOutput('bp1658cj', 'bp1658cj::BP1658CJ', intRange(0, 65535)),
  'output.bp5758d': hubOutput('bp5758d', 'bp5758d::BP5758D', intRange(1, 5), { current: intRange(0, 90) }),
  'output.sm2235': hubOutput('sm2235', 'sm2235::SM2235', intRange(0, 65535)),
  'output.sm2335': hubOutput('sm2335', 'sm2335::SM2335', intRange(0, 65535)),

  'sensor.hlw8012': {
    keys: {
      id: declareId('hlw8012::HLW8012Component'),
      sel_pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); },
      cf_pin: function (v, p) { return this.pin({ input: true, pullup: true }).call(this, v, p); },
      cf1_pin: function (v, p) { return this.pin({ input: true, pullup: true }).call(this, v, p); },
      ...keysOf(['voltage', 'current', 'power', 'energy'], subSensor),
      current_resistor: resistance,
      voltage_divider: positiveFloat,
      model: oneOf(['HLW8012', 'CSE7759', 'BL0937'], { upper: true }),
      change_mode_every: (v) => (v === 'never' ? v : range(1)(int(v))),
      initial_mode: oneOf(['current', 'voltage'], { lower: true }),
      update_interval: anything,
      ...COMPONENT,
    },
    required: ['sel_pin', 'cf_pin', 'cf1_pin'],
  },

  'switch.gpio': {
    open: true,
    keys: {
      id: declareId('gpio::GPIOSwitch'),
      pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); },
      restore_mode: oneOf(SWITCH_RESTORE_MODES, { upper: true, space: '_' }),
      interlock: function (v, p) {
        return asList(v).map((x, i) => this.use('switch_::Switch').call(this, x, Array.isArray(v) ? [...p, i] : p));
      },
      interlock_wait_time: timePeriod,
    },
    required: ['pin'],
    after: [entityNeedsIdOrName],
  },
  'binary_sensor.gpio': {
    open: true,
    keys: {
      id: declareId('gpio::GPIOBinarySensor'),
      pin: function (v, p) { return this.pin({ input: true }).call(this, v, p); },
      filters: binaryFilters,
    },
    required: ['pin'],
    after: [entityNeedsIdOrName],
  },
};

/** What every platform of a domain shares (switch_schema, binary_sensor_schema, LIGHT_SCHEMA's restore_mode). */
const DOMAIN_SCHEMAS = {
  switch: { open: true, keys: { restore_mode: oneOf(SWITCH_RESTORE_MODES, { upper: true, space: '_' }) } },
  light: { open: true, keys: { restore_mode: oneOf(LIGHT_RESTORE_MODES, { upper: true, space: '_' }) } },
  binary_sensor: { open: true, keys: { filters: binaryFilters } },
};

function hubOutput(hub, cls, channel, extra = {}) {
  return {
    keys: { ...OUTPUT_FLOAT, ...COMPONENT, [`${hub}_id`]: function (v, p) { return this.use(cls).call(this, v, p); },
      id: declareId(`${cls}::Channel`), channel, ...extra },
    required: ['id', 'channel'],
    after: [hubOf(`${hub}_id`, cls)],
  };
}

function hubSchema(cls, own) {
  return {
    keys: { id: declareId(cls), ...COMPONENT, ...own,
      data_pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); },
      clock_pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); } },
    required: ['data_pin', 'clock_pin'],
    after: [declareHub(cls)],
  };
}

const maxPower = { max_power_color_channels: intRange(0, 15), max_power_white_channels: intRange(0, 15) };
const COMPONENT_SCHEMAS = {
  status_led: {
    keys: { id: declareId('status_led::StatusLED'), ...COMPONENT,
      pin: function (v, p) { return this.pin({ output: true }).call(this, v, p); } },
    required: ['pin'],
  },
  sm2135: hubSchema('sm2135::SM2135', { rgb_current: oneOf(CURRENTS(45)), cw_current: oneOf(CURRENTS(60)),
    separate_modes: bool }),
  bp1658cj: hubSchema('bp1658cj::BP1658CJ', maxPower),
  bp5758d: hubSchema('bp5758d::BP5758D', {}),
  sm2235: hubSchema('sm2235::SM2235', maxPower),
  sm2335: hubSchema('sm2335::SM2335', maxPower),
};

// ---- UART, TuyaMCU, UART energy chips, latching relays -------------------------------------------------------------

const uint8 = intRange(0, 255);
const invalid = (msg) => () => { throw new Invalid(msg); };

/** cv.string_strict */
function stringStrict(v) {
  if (typeof v === 'string') return v;
  throw new Invalid(`Must be string, got ${pyType(v)}. did you forget putting quotes around the value?`);
}

/** cv.icon */
function icon(v) {
  const s = stringStrict(v);
  if (!s || /^[\w-]+:[\w-]+$/u.test(s)) return s;
  throw new Invalid('Icons must match the format "[icon pack]:[icon]", e.g. "mdi:home-assistant"');
}

/** cv.entity_category; a sensor's cannot be `config` (sensor/__init__.py sensor_entity_category). */
const entityCategory = (sensor = false) => oneOf(sensor ? ['', 'diagnostic'] : ['', 'config', 'diagnostic'],
  { lower: true });

/** cv.validate_bytes: "256", "1kB". */
function validateBytes(v) {
  const s = string(v);
  const m = /^([0-9]+)\s*(\w*?)(?:byte|B|b)?s?$/u.exec(s);
  if (!m) throw new Invalid(`Expected number of bytes with unit, got ${s}`);
  if (!(m[2] in METRIC_SUFFIXES)) throw new Invalid(`Invalid metric suffix ${m[2]}`);
  if (METRIC_SUFFIXES[m[2]] < 1) {
    throw new Invalid(`Only suffixes with positive exponents are supported. Got ${m[2]}`);
  }
  return Math.trunc(Number(m[1]) * METRIC_SUFFIXES[m[2]]);
}

/** cv.requires_component */
function requiresComponent(comp) {
  return function (v) {
    if (!this.loaded.has(comp)) throw new Invalid(`This option requires component ${comp}`);
    return v;
  };
}

/** cv.has_at_least_one_key / cv.has_exactly_one_key, run once the schema passed. */
const atLeastOneOf = (...keys) => (_out, conf) => {
  if (!keys.some((k) => k in conf)) throw new Invalid(`Must contain at least one of ${keys.join(', ')}.`);
};
const exactlyOneOf = (...keys) => (_out, conf) => {
  const n = keys.filter((k) => k in conf).length;
  if (n > 1) throw new Invalid(`Cannot specify more than one of ${keys.join(', ')}.`);
  if (n < 1) throw new Invalid(`Must contain exactly one of ${keys.join(', ')}.`);
};

/** A nested cv.Schema: its errors are reported by this.schema (the parent sees them counted). */
const nested = (schema, name) => function (v, path) {
  this.schema(v ?? {}, path, schema, name ?? String(path[path.length - 1]));
  return v;
};

const pinOf = (mode) => function (v, p) { return this.pin(mode).call(this, v, p); };
const useId = (cls) => function (v, p) { return this.use(cls).call(this, v, p); };

/**
 * cv.validate_registry (filters): a list (or one entry) of {name: value} or a bare name. `names` may depend on the
 * version (a function called with the validator).
 */
function registryList(kind, names, check = () => {}) {
  return function (v) {
    const known = typeof names === 'function' ? names.call(this) : names;
    const list = v === null || (isMap(v) && !Object.keys(v).length) ? [] : asList(v);
    list.forEach((f, i) => {
      const entry = typeof f === 'string' ? { [f]: {} } : f;
      if (!isMap(entry)) {
        throw new Invalid(`${kind[0].toUpperCase()}${kind.slice(1)} must consist of key-value mapping! Got ${pyStr(f)}`,
          [i]);
      }
      const keys = Object.keys(entry).filter((k) => k !== 'type_id');
      if (!keys.length) throw new Invalid(`Key missing from ${kind}! Got ${JSON.stringify(entry)}`, [i]);
      const [key, key2] = keys;
      if (!known.includes(key)) throw new Invalid(`Unable to find ${kind} with the name '${key}'`, [i, key]);
      if (key2 !== undefined) {
        throw new Invalid(`Cannot have two ${kind}s in one item. Key '${key}' overrides '${key2}'! Did you forget to ` +
          `indent the block inside the ${key}?`, [i]);
      }
      try {
        check(key, entry[key]);
      } catch (e) {
        if (e instanceof Invalid) throw new Invalid(e.message, [i, key, ...e.subPath]);
        throw e;
      }
    });
    return v;
  };
}

/** sensor/__init__.py FILTER_REGISTRY at 33fdbbe, and those added since (SINCE.sensorFilters). */
const SENSOR_FILTERS = ['offset', 'multiply', 'filter_out', 'quantile', 'median', 'skip_initial', 'min', 'max',
  'sliding_window_moving_average', 'exponential_moving_average', 'throttle_average', 'lambda', 'delta', 'or',
  'throttle', 'heartbeat', 'timeout', 'debounce', 'calibrate_linear', 'calibrate_polynomial', 'clamp', 'round',
  'round_to_multiple_of'];
const sensorFilters = registryList('filter', function () {
  return [...SENSOR_FILTERS, ...Object.entries(SINCE.sensorFilters).filter(([, v]) => atLeast(this.version, v))
    .map(([k]) => k)];
}, (key, val) => {
  if (['offset', 'multiply', 'filter_out'].includes(key)) templatable(float)(val);
  if (['throttle', 'heartbeat', 'debounce'].includes(key)) timePeriod(val);
});
/** text_sensor/__init__.py FILTER_REGISTRY */
const textFilters = registryList('filter', ['lambda', 'to_upper', 'to_lower', 'append', 'prepend', 'substitute',
  'map']);

// What every entity has: config_validation.py ENTITY_BASE_SCHEMA, web_server WEBSERVER_SORTING_SCHEMA and the MQTT
// options (each needs the mqtt component), with mqtt_id.
const MQTT_STATE_KEYS = ['qos', 'retain', 'discovery', 'subscribe_qos', 'state_topic', 'availability'];
const MQTT_COMMAND_KEYS = [...MQTT_STATE_KEYS, 'command_topic', 'command_retain'];
const entityBase = (mqtt, sensor = false) => ({
  name: anything, internal: bool, disabled_by_default: bool, icon, entity_category: entityCategory(sensor),
  web_server: anything, ...keysOf(mqtt, requiresComponent('mqtt')), mqtt_id: anything,
});
const lowerString = (v) => string(v).toLowerCase();
const LAST_RESET = 'last_reset_type has been removed since 2021.9.0. state_class: total_increasing should be used ' +
  'for total values.';

/** sensor_schema(class_): the keys of a sensor (its id declared as cls). */
const sensorKeys = (cls) => ({
  ...entityBase(MQTT_STATE_KEYS, true), id: declareId(cls), unit_of_measurement: stringStrict,
  accuracy_decimals: int, device_class: lowerString,
  state_class: oneOf(['', 'measurement', 'total_increasing', 'total'], { lower: true, space: '_' }),
  last_reset_type: invalid(LAST_RESET), force_update: bool, expire_after: requiresComponent('mqtt'),
  filters: sensorFilters, ...automations(['on_value', 'on_raw_value', 'on_value_range']),
});
const switchKeys = (cls) => ({
  ...entityBase(MQTT_COMMAND_KEYS), id: declareId(cls), inverted: bool,
  ...automations(['on_turn_on', 'on_turn_off']), device_class: oneOf(['', 'outlet', 'switch'], { lower: true }),
  restore_mode: oneOf(SWITCH_RESTORE_MODES, { upper: true, space: '_' }),
});
const binarySensorKeys = (cls) => ({
  ...entityBase(MQTT_STATE_KEYS), id: declareId(cls), publish_initial_state: bool, device_class: lowerString,
  filters: binaryFilters,
  ...automations(['on_press', 'on_release', 'on_click', 'on_double_click', 'on_multi_click', 'on_state']),
});
const textSensorKeys = (cls) => ({
  ...entityBase(MQTT_STATE_KEYS), id: declareId(cls), device_class: lowerString, filters: textFilters,
  ...automations(['on_value', 'on_raw_value']),
});
const numberKeys = (cls) => ({
  ...entityBase(MQTT_COMMAND_KEYS), id: declareId(cls), ...automations(['on_value', 'on_value_range']),
  unit_of_measurement: stringStrict, mode: oneOf(['AUTO', 'BOX', 'SLIDER'], { upper: true }),
  device_class: lowerString,
});
const selectKeys = (cls) => ({ ...entityBase(MQTT_COMMAND_KEYS), id: declareId(cls), ...automations(['on_value']) });
const FAN_RESTORE_MODES = ['NO_RESTORE', 'ALWAYS_OFF', 'ALWAYS_ON', 'RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON',
  'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON'];
const fanKeys = () => ({
  ...entityBase(MQTT_COMMAND_KEYS), id: declareId('fan::Fan'),
  restore_mode: oneOf(FAN_RESTORE_MODES, { upper: true, space: '_' }),
  ...keysOf(['oscillation_state_topic', 'oscillation_command_topic', 'speed_level_state_topic',
    'speed_level_command_topic', 'speed_state_topic', 'speed_command_topic'], requiresComponent('mqtt')),
  ...automations(['on_state', 'on_turn_on', 'on_turn_off', 'on_direction_set', 'on_oscillating_set', 'on_speed_set',
    'on_preset_set']),
});
const climateKeys = (cls) => ({
  ...entityBase(MQTT_COMMAND_KEYS), id: declareId(cls), visual: anything,
  ...keysOf(['action_state_topic', 'away_command_topic', 'away_state_topic', 'current_temperature_state_topic',
    'current_humidity_state_topic', 'fan_mode_command_topic', 'fan_mode_state_topic', 'mode_command_topic',
    'mode_state_topic', 'preset_command_topic', 'preset_state_topic', 'swing_mode_command_topic',
    'swing_mode_state_topic', 'target_temperature_command_topic', 'target_temperature_state_topic',
    'target_temperature_high_command_topic', 'target_temperature_high_state_topic',
    'target_temperature_low_command_topic', 'target_temperature_low_state_topic', 'target_humidity_command_topic',
    'target_humidity_state_topic'], requiresComponent('mqtt')),
  ...automations(['on_control', 'on_state']),
});
const coverKeys = () => ({
  ...entityBase(MQTT_COMMAND_KEYS), id: declareId('cover::Cover'),
  device_class: oneOf(['awning', 'blind', 'curtain', 'damper', 'door', '', 'garage', 'gate', 'shade', 'shutter',
    'window'], { lower: true }),
  ...keysOf(['position_command_topic', 'position_state_topic', 'tilt_command_topic', 'tilt_state_topic'],
    requiresComponent('mqtt')),
  ...automations(['on_open', 'on_closed']),
});

/** A sensor inside a hub platform (hlw8012, bl0942, cse7766...): sensor_schema(), its own id a sensor::Sensor. */
function subSensor(v, path) {
  if (!isMap(v)) throw new Invalid('expected a dictionary');
  this.schema(v, path, { keys: sensorKeys('sensor::Sensor'), after: [entityNeedsIdOrName] },
    String(path[path.length - 1]));
  return v;
}

// uart/__init__.py: the bus, and what a device on it (UART_DEVICE_SCHEMA) demands in FINAL_VALIDATE_SCHEMA.
const UART_CLASS = 'uart::LibreTinyUARTComponent';
const uartBus = {
  keys: {
    id: declareId(UART_CLASS), baud_rate: intRange(1), tx_pin: pinOf({ output: true }),
    rx_pin: pinOf({ input: true }),
    port: (v) => {
      if (!/^\/(?:[^/]+\/)[^/]+$/u.test(string(v))) throw new Invalid('Port must be a valid device path');
      throw new Invalid("This feature is only available on ['host']");
    },
    rx_buffer_size: validateBytes, stop_bits: (v) => oneOf([1, 2])(int(v)), data_bits: intRange(5, 8),
    parity: oneOf(['NONE', 'EVEN', 'ODD'], { upper: true }),
    invert: invalid('This option has been removed. Please instead use invert in the tx/rx pin schemas.'),
    debug: anything, ...COMPONENT,
  },
  after: [atLeastOneOf('tx_pin', 'rx_pin', 'port'), declareHub(UART_CLASS)],
};

/**
 * UART_DEVICE_SCHEMA (uart_id: the one bus when not given) and final_validate_device_schema(name, ...): the bus
 * this device uses must have these pins and settings (checked after the ID pass, reported at the bus's keys).
 */
function uartDevice(name, { baud_rate, parity, data_bits, stop_bits, rx = false, tx = false } = {}) {
  const needs = (what) => `Component ${name} requires ${what} for the uart referenced by uart_id`;
  /** A bus setting (validated: its default when not written) -> the message when it is not what the device needs. */
  const settings = {
    baud_rate: baud_rate && ((v) => int(v) !== baud_rate && needs(`baud rate ${baud_rate}`)),
    data_bits: data_bits && ((v) => int(v) !== data_bits && needs(`${data_bits} data bits`)),
    parity: parity && ((v) => String(v).toUpperCase() !== parity && needs(`parity ${parity}`)),
    stop_bits: stop_bits && ((v) => int(v) !== stop_bits && needs(`${stop_bits} stop bits`)),
  };
  const pins = [...(tx ? ['tx_pin'] : []), ...(rx ? ['rx_pin'] : [])];
  return function (_out, conf, path) {
    if (!('uart_id' in conf)) {
      this.references.push({ id: undefined, path: [...path, 'uart_id'], type: 'uart::UARTComponent' });
    }
    if (!pins.length && !Object.values(settings).some(Boolean)) return;
    this.finals.push(() => {
      const buses = asList(this.config.uart);
      const i = 'uart_id' in conf ? buses.findIndex((b) => isMap(b) && String(b.id) === String(conf.uart_id))
        : buses.length === 1 ? 0 : -1;
      if (i < 0) return;
      const at = Array.isArray(this.config.uart) ? ['uart', i] : ['uart'];
      const claimed = this.uartDevices.get(at.join('.')) ?? {};
      this.uartDevices.set(at.join('.'), claimed);
      // voluptuous: the validated bus's keys (as written, then the defaults it lacks), then the pins it lacks
      const bus = { ...buses[i] };
      for (const [k, d] of [['stop_bits', 1], ['data_bits', 8], ['parity', 'NONE']]) if (!(k in bus)) bus[k] = d;
      for (const [k, v] of Object.entries(bus)) {
        const wrong = settings[k]?.(v);
        if (wrong) this.add([...at, k], wrong);
        if (!pins.includes(k)) continue;
        if (claimed[k]) {
          this.add([...at, k], `The uart ${k} is used both by ${name} and ${claimed[k]}, but can only be used by ` +
            `one. Please create a new uart bus for ${name}.`);
        } else claimed[k] = name;
      }
      for (const k of pins) {
        if (!(k in buses[i])) {
          this.add([...at, k], `Component ${name} requires uart referenced by uart_id to declare a ${k}`,
            { raw: true });
        }
      }
    });
  };
}

const tuyaHub = hubOf('tuya_id', 'tuya::Tuya');
const tuyaKeys = { tuya_id: useId('tuya::Tuya'), ...COMPONENT };
const DATAPOINT_TYPES = ['any', 'raw', 'bool', 'int', 'uint', 'string', 'enum', 'bitmask'];

/** tuya on_datapoint_update: automations, each with its sensor_datapoint (and datapoint_type). */
function datapointUpdates(v, path) {
  const list = Array.isArray(v) ? v : [v];
  list.forEach((a, i) => {
    const at = Array.isArray(v) ? [...path, i] : path;
    if (!isMap(a) || !('then' in a)) {
      this.add([...at, 'sensor_datapoint'], "'sensor_datapoint' is a required option for [on_datapoint_update].");
      return;
    }
    this.schema(a, at, { keys: { trigger_id: anything, automation_id: anything, then: function (x, p) {
      this.automation(x, p);
      return x;
    }, sensor_datapoint: uint8, datapoint_type: oneOf(DATAPOINT_TYPES, { lower: true }) },
    required: ['sensor_datapoint'] }, 'on_datapoint_update');
  });
  return v;
}

/** tuya/select/__init__.py ensure_option_map: {0..255: "label"}, each number once. */
function optionMap(v, path) {
  if (!isMap(v)) throw new Invalid('expected a dictionary');
  const seen = [];
  for (const [k, label] of Object.entries(v)) {
    let n;
    try {
      n = intRange(0, 255)(k);
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      this.add([...path, k], `[${k}] is an invalid option for [options].`);
      continue;
    }
    this.guard([...path, k], () => stringStrict(label));
    seen.push(n);
  }
  if (new Set(seen).size !== seen.length) throw new Invalid('Mapping values must be unique.');
  return v;
}

/** tuya/number/__init__.py validate_min_max */
function numberMinMax(out) {
  if (!(out.max_value > out.min_value)) throw new Invalid('max_value must be greater than min_value');
  const initial = out.datapoint_hidden?.initial_value;
  const given = initial !== undefined && initial !== null;
  if (given && (Number(initial) > out.max_value || Number(initial) < out.min_value)) {
    throw new Invalid('initial_value must be a value between max_value and min_value');
  }
}

/** tuya/climate/__init__.py validate_temperature_multipliers and validate_cooling_values */
function climateMultipliers(_out, conf) {
  const [all, cur, tgt] = ['temperature_multiplier', 'current_temperature_multiplier', 'target_temperature_multiplier'];
  if (all in conf && (cur in conf || tgt in conf)) {
    throw new Invalid(`Cannot have ${all} at the same time as ${cur} and ${tgt}`);
  }
  if (cur in conf && !(tgt in conf)) throw new Invalid(`${tgt} required if using ${cur}`);
  if (tgt in conf && !(cur in conf)) throw new Invalid(`${cur} required if using ${tgt}`);
}
function climateCooling(out, conf) {
  if (!isMap(conf.active_state)) return;
  const cooling = 'cooling_value' in conf.active_state || 'cooling_state_pin' in conf;
  if (!out.supports_cool && cooling) {
    throw new Invalid('Device does not support cooling, but cooling_value or cooling_state_pin specified. Please add ' +
      "'supports_cool: true' to your configuration.");
  }
  if (out.supports_cool && !cooling) {
    throw new Invalid("Either active_state cooling_value or cooling_state_pin is required if supports_cool: true' is " +
      'in your configuration.');
  }
}

/** tuya/cover/__init__.py validate_range (the defaults 0 and 100 filled in) */
function coverRange(out) {
  const min = out.min_value ?? 0;
  const max = out.max_value ?? 100;
  if (min > max) throw new Invalid(`min_value (${min}) cannot be greater than max_value (${max})`);
}

const COLOR_CONFIG_ERROR = 'This option has been removed, use color_datapoint and color_type instead.';
const ACTIVE_STATE = { keys: { datapoint: uint8, heating_value: uint8, cooling_value: uint8, drying_value: uint8,
  fanonly_value: uint8 }, required: ['datapoint'] };
const DATAPOINT_ONLY = (extra = {}) => ({ keys: { datapoint: uint8, ...extra }, required: ['datapoint'] });
const moved = (key, to) => invalid(`'${key}' has been moved inside of the ${to}`);

Object.assign(PLATFORM_SCHEMAS, {
  // tuya/<domain>/__init__.py
  'switch.tuya': {
    keys: { ...switchKeys('tuya::TuyaSwitch'), ...tuyaKeys, switch_datapoint: uint8 },
    required: ['switch_datapoint'], after: [entityNeedsIdOrName, tuyaHub],
  },
  'binary_sensor.tuya': {
    keys: { ...binarySensorKeys('tuya::TuyaBinarySensor'), ...tuyaKeys, sensor_datapoint: uint8 },
    required: ['sensor_datapoint'], after: [entityNeedsIdOrName, tuyaHub],
  },
  'sensor.tuya': {
    keys: { ...sensorKeys('tuya::TuyaSensor'), ...tuyaKeys, sensor_datapoint: uint8 },
    required: ['sensor_datapoint'], after: [entityNeedsIdOrName, tuyaHub],
  },
  'text_sensor.tuya': {
    keys: { ...textSensorKeys('tuya::TuyaTextSensor'), ...tuyaKeys, sensor_datapoint: uint8 },
    required: ['sensor_datapoint'], after: [entityNeedsIdOrName, tuyaHub],
  },
  'number.tuya': {
    keys: { ...numberKeys('tuya::TuyaNumber'), ...tuyaKeys, number_datapoint: uint8, max_value: float,
      min_value: float, step: positiveFloat, multiply: float,
      datapoint_hidden: nested({ keys: { datapoint_type: oneOf(['int', 'uint', 'enum'], { lower: true }),
        initial_value: float, restore_value: bool }, required: ['datapoint_type'] }) },
    required: ['number_datapoint', 'max_value', 'min_value', 'step'],
    after: [entityNeedsIdOrName, numberMinMax, tuyaHub],
  },
  // From 2025.5.0 (esphome#8393) an int_datapoint may stand for the enum_datapoint, exactly one of them.
  'select.tuya': function () {
    const int = atLeast(this.version, SINCE.options['select.tuya'].int_datapoint);
    return {
      keys: { ...selectKeys('tuya::TuyaSelect'), ...tuyaKeys, enum_datapoint: uint8,
        ...(int ? { int_datapoint: uint8 } : {}), options: optionMap, optimistic: bool },
      required: int ? ['options'] : ['enum_datapoint', 'options'],
      after: [entityNeedsIdOrName, ...(int ? [exactlyOneOf('enum_datapoint', 'int_datapoint')] : []), tuyaHub],
    };
  },
  'light.tuya': {
    ...lightSchema({ ...tuyaKeys, dimmer_datapoint: uint8, min_value_datapoint: uint8, switch_datapoint: uint8,
      rgb_datapoint: invalid(COLOR_CONFIG_ERROR), hsv_datapoint: invalid(COLOR_CONFIG_ERROR), color_datapoint: uint8,
      color_type: oneOf(['RGB', 'HSV', 'RGBHSV'], { upper: true }), color_interlock: bool,
      color_temperature_datapoint: uint8, color_temperature_invert: bool, min_value: int, max_value: int,
      color_temperature_max_value: int, cold_white_color_temperature: colorTemperature,
      warm_white_color_temperature: colorTemperature }, [],
    { after: [atLeastOneOf('dimmer_datapoint', 'switch_datapoint', 'color_datapoint'), tuyaHub] }),
    inclusive: { color: ['color_datapoint', 'color_type'], color_temperature: ['color_temperature_datapoint',
      'cold_white_color_temperature', 'warm_white_color_temperature'] },
  },
  'fan.tuya': {
    keys: { ...fanKeys(), output_id: anything, ...tuyaKeys, oscillation_datapoint: uint8, speed_datapoint: uint8,
      switch_datapoint: uint8, direction_datapoint: uint8, speed_count: intRange(1, 256) },
    after: [entityNeedsIdOrName, atLeastOneOf('speed_datapoint', 'switch_datapoint'), tuyaHub],
  },
  'climate.tuya': {
    keys: { ...climateKeys('tuya::TuyaClimate'), ...tuyaKeys, supports_heat: bool, supports_cool: bool,
      switch_datapoint: uint8, active_state: nested(ACTIVE_STATE), heating_state_pin: pinOf({ input: true }),
      cooling_state_pin: pinOf({ input: true }), target_temperature_datapoint: uint8,
      current_temperature_datapoint: uint8, temperature_multiplier: positiveFloat,
      current_temperature_multiplier: positiveFloat, target_temperature_multiplier: positiveFloat,
      reports_fahrenheit: bool,
      preset: nested({ keys: { eco: nested(DATAPOINT_ONLY({ temperature: anything })),
        sleep: nested(DATAPOINT_ONLY()) } }),
      fan_mode: nested(DATAPOINT_ONLY(keysOf(['auto_value', 'low_value', 'medium_value', 'middle_value', 'high_value'],
        uint8))),
      swing_mode: nested({ keys: { vertical_datapoint: uint8, horizontal_datapoint: uint8 } }),
      active_state_datapoint: moved('active_state_datapoint', "'active_state' config block as 'datapoint'"),
      active_state_heating_value: moved('active_state_heating_value', "'active_state' config block as 'heating_value'"),
      active_state_cooling_value: moved('active_state_cooling_value', "'active_state' config block as 'cooling_value'"),
      eco_datapoint: moved('eco_datapoint', "'eco' config block under 'preset' as 'datapoint'"),
      eco_temperature: moved('eco_temperature', "'eco' config block under 'preset' as 'temperature'") },
    after: [entityNeedsIdOrName, atLeastOneOf('target_temperature_datapoint', 'switch_datapoint'), climateMultipliers,
      climateCooling, tuyaHub],
  },
  'cover.tuya': {
    keys: { ...coverKeys(), output_id: anything, ...tuyaKeys, control_datapoint: uint8, direction_datapoint: uint8,
      position_datapoint: uint8, position_report_datapoint: uint8, min_value: int, max_value: int,
      invert_position: bool, invert_position_report: bool,
      restore_mode: oneOf(['NO_RESTORE', 'RESTORE', 'RESTORE_AND_CALL'], { upper: true }) },
    required: ['position_datapoint'], after: [entityNeedsIdOrName, coverRange, tuyaHub],
  },

  // bl0942/sensor.py: polled (it writes its read command), so it needs both pins; no FINAL_VALIDATE_SCHEMA.
  'sensor.bl0942': {
    keys: { id: declareId('bl0942::BL0942'), ...keysOf(['voltage', 'current', 'power', 'energy', 'frequency'],
      subSensor), line_frequency: (v) => oneOf([50, 60])(int(frequency(v))), address: intRange(0, 3), reset: bool,
    ...keysOf(['current_reference', 'energy_reference', 'power_reference', 'voltage_reference'], float),
    update_interval: anything, ...COMPONENT, uart_id: useId('uart::UARTComponent') },
    after: [uartDevice('bl0942')],
  },
  // cse7766/sensor.py: it only listens; 4800 baud, even parity (demanded from 2024.10.0).
  'sensor.cse7766': function () {
    const even = atLeast(this.version, SINCE.uartDemands['sensor.cse7766'].parity);
    return {
      keys: { id: declareId('cse7766::CSE7766Component'), ...keysOf(['voltage', 'current', 'power', 'energy',
        'apparent_power', 'reactive_power', 'power_factor'], subSensor), uart_id: useId('uart::UARTComponent') },
      after: [uartDevice('cse7766', { baud_rate: 4800, rx: true, ...(even ? { parity: 'EVEN' } : {}) })],
    };
  },
  // hlw8032/sensor.py (2025.12.0): the CSE7766's frame, scaled by its resistor network.
  'sensor.hlw8032': {
    keys: { id: declareId('hlw8032::HLW8032Component'), ...keysOf(['voltage', 'current', 'power', 'apparent_power',
      'power_factor'], subSensor), current_resistor: resistance, voltage_divider: positiveFloat,
    uart_id: useId('uart::UARTComponent') },
    after: [uartDevice('hlw8032', { baud_rate: 4800, rx: true, data_bits: 8, parity: 'EVEN' })],
  },

  // hbridge/switch/__init__.py (2024.12.0): a latching relay, pulsed on one pin to close and on the other to open.
  'switch.hbridge': {
    keys: { ...switchKeys('hbridge::HBridgeSwitch'), on_pin: pinOf({ output: true }), off_pin: pinOf({ output: true }),
      pulse_length: timePeriod, wait_time: timePeriod, optimistic: bool, ...COMPONENT },
    required: ['on_pin', 'off_pin'], after: [entityNeedsIdOrName],
  },
});

const LOG_LEVELS = ['NONE', 'ERROR', 'WARN', 'INFO', 'DEBUG', 'VERBOSE', 'VERY_VERBOSE'];
Object.assign(COMPONENT_SCHEMAS, {
  uart: uartBus,
  tuya: {
    keys: { id: declareId('tuya::Tuya'), time_id: useId('time::RealTimeClock'),
      ignore_mcu_update_on_datapoints: (v) => asList(v).map((x) => uint8(x)), status_pin: pinOf({ output: true }),
      on_datapoint_update: datapointUpdates, ...COMPONENT, uart_id: useId('uart::UARTComponent') },
    after: [uartDevice('tuya'), declareHub('tuya::Tuya')],
  },
  // logger/__init__.py, what matters on a BK72xx: the port (DEFAULT is UART2 there: LibreTiny's LT_UART_DEFAULT_PORT)
  // and baud rate (0: no serial logging). The other options are not checked.
  logger: {
    open: true,
    keys: { baud_rate: intRange(0), hardware_uart: oneOf(['DEFAULT', 'UART1', 'UART2'], { upper: true }),
      level: oneOf(LOG_LEVELS, { upper: true }) },
  },
});

/** binary_sensor filters: a list of registry entries (config_validation.py validate_registry_entry). */
function binaryFilters(v, path) {
  return BINARY_FILTER_LIST.call(this, v, path);
}
const BINARY_FILTER_LIST = registryList('filter', BINARY_FILTERS, (key, val) => {
  if (['delayed_on', 'delayed_off', 'settle'].includes(key)) templatable(timePeriod)(val);
  if (key === 'delayed_on_off' && !isMap(val)) templatable(timePeriod)(val);
});

/** Python's difflib.get_close_matches(word, possibilities, n=3, cutoff=0.6): best first, ties by larger string. */
export function closeMatches(word, options) {
  const ratio = (a, b) => {
    const blocks = (alo, ahi, blo, bhi) => {
      let bi = alo;
      let bj = blo;
      let size = 0;
      for (let i = alo; i < ahi; i++) {
        for (let j = blo; j < bhi; j++) {
          let k = 0;
          while (i + k < ahi && j + k < bhi && a[i + k] === b[j + k]) k++;
          if (k > size) {
            bi = i;
            bj = j;
            size = k;
          }
        }
      }
      if (!size) return 0;
      return size + blocks(alo, bi, blo, bj) + blocks(bi + size, ahi, bj + size, bhi);
    };
    return a.length + b.length ? (2 * blocks(0, a.length, 0, b.length)) / (a.length + b.length) : 1;
  };
  return options.map((o) => [ratio(o, word), o]).filter(([r]) => r >= 0.6)
    .sort((x, y) => y[0] - x[0] || (x[1] < y[1] ? 1 : x[1] > y[1] ? -1 : 0)).slice(0, 3).map(([, o]) => o);
}
