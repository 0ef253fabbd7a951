// Fake `esphome` CLI (ESPHome 2025.x, bk72xx only). Reads the YAML like ESPHome does (!secret from
// secrets.yaml beside the config, !include, substitutions incl. `-s KEY VALUE`), checks the mistakes a
// recipe can make with ESPHome's own messages, and `compile` leaves
// <config dir>/.esphome/build/<esphome.name>/.pioenvs/<esphome.name>/firmware.uf2 whose family ID comes
// from the board and whose payload is JSON {name, friendly_name, board}.
// Streams like the real one: log lines (INFO/WARNING/ERROR) on stderr, PlatformIO output and
// "Failed config" blocks on stdout. Exit codes: 0, 1 (compile/upload error), 2 (invalid config).
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { world, logCall, sleep, exit, dieBy, makeUF2, wrapUG, FAMILY_ID } from './common.mjs';

const BOARDS = {
  'generic-bk7231t-qfn32-tuya': 'bk7231t', 'generic-bk7231n-qfn32-tuya': 'bk7231n',
  cb1s: 'bk7231n', cb2l: 'bk7231n', cb2s: 'bk7231n', cb3l: 'bk7231n', cb3s: 'bk7231n', cb3se: 'bk7231n', cblc5: 'bk7231n', cbu: 'bk7231n',
  'lsc-lma35': 'bk7231n', 'wb2l-m1': 'bk7231n',
  'lsc-lma35-t': 'bk7231t', wb1s: 'bk7231t', wb2l: 'bk7231t', wb2s: 'bk7231t', wb3l: 'bk7231t', wb3s: 'bk7231t', wblc5: 'bk7231t',
};
const FAMILIES = { BK7231T: 'bk7231t', BK7231N: 'bk7231n' };
const USABLE_PINS = [0, 1, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 20, 21, 22, 23, 24, 26, 28];
const RESTORE_MODES = ['RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF', 'ALWAYS_ON', 'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON', 'DISABLED'];
const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789-_';
const TARGET_PLATFORMS = ['bk72xx', 'esp32', 'esp8266', 'host', 'rp2040', 'rtl87xx'];

class ConfigReadError extends Error {}

/** Local `esphome ...`: paths are host paths. */
export async function main(argv) {
  const w = world();
  logCall('esphome', argv);
  // Python: Ctrl+C is a KeyboardInterrupt, caught in esphome's main() -> exit 1.
  // SIGTERM has no handler in Python: the process dies by the signal.
  process.on('SIGINT', () => exit(1));
  process.on('SIGTERM', () => dieBy('SIGTERM'));
  const code = await runEsphome(argv, { w, cwd: process.cwd(), toHost: (p) => p, resolveShown: (p) => path.resolve(process.cwd(), p) });
  return exit(code);
}

/**
 * The esphome command line. `ctx.toHost(shownAbsPath)` maps a path as ESPHome sees it (inside Docker:
 * /config/...) to the host file; `ctx.resolveShown(p)` makes a shown path absolute.
 */
export async function runEsphome(argv, ctx) {
  const es = ctx.w.esphome ?? {};
  const version = es.version ?? '2025.5.0';
  const log = (level, msg) => process.stderr.write(`${level} ${msg}\n`);
  const say = (line = '') => process.stdout.write(line + '\n');

  const subs = {};
  let verbose = false;
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const a = argv[i];
    if (a === '-s' || a === '--substitution') { subs[argv[i + 1]] = argv[i + 2]; i += 2; }
    else if (a === '-v' || a === '--verbose') verbose = true;
    else if (a === '-q' || a === '--quiet' || a === '--dashboard') { /* ignored */ }
    else if (a === '--version') { say(`Version: ${version}`); return 0; }
    else if (a === '-h' || a === '--help') { say(`usage: esphome [-h] [-v] [-q] [-s key value] [--version] command ...`); return 0; }
    else return usageError(`unrecognized arguments: ${a}`);
  }
  const command = argv[i];
  const rest = argv.slice(i + 1);
  const commands = ['config', 'compile', 'upload', 'logs', 'discover', 'run', 'clean', 'wizard', 'mqtt-fingerprint', 'version', 'clean-mqtt', 'dashboard', 'vscode', 'update-all', 'idedata', 'rename'];
  if (!command) return usageError('the following arguments are required: command');
  if (!commands.includes(command)) return usageError(`argument command: invalid choice: '${command}' (choose from ${commands.map((c) => `'${c}'`).join(', ')})`);
  if (command === 'version') { say(`Version: ${version}`); return 0; }
  const files = [];
  const opt = {};
  for (let k = 0; k < rest.length; k++) {
    const a = rest[k];
    if (a === '--device' || a === '--file' || a === '--topic' || a === '--username' || a === '--password' || a === '--client-id') opt[a.slice(2)] = rest[++k];
    else if (a.startsWith('--device=')) opt.device = a.slice(9);
    else if (a === '--only-generate' || a === '--show-secrets' || a === '--no-logs' || a === '--reset') opt[a.slice(2)] = true;
    else if (a.startsWith('-')) return usageError(`unrecognized arguments: ${a}`);
    else files.push(a);
  }
  if (!files.length) return usageError('the following arguments are required: configuration');
  if (!['config', 'compile', 'upload', 'run', 'clean'].includes(command)) {
    process.stderr.write(`fake esphome: '${command}' is not simulated\n`);
    return 1;
  }

  log('INFO', `ESPHome ${version}`);
  for (const conf of files) {
    if (['secrets.yaml', 'secrets.yml'].includes(path.basename(conf))) { log('WARNING', `Skipping secrets file ${conf}`); continue; }
    log('INFO', `Reading configuration ${conf}...`);
    const shown = ctx.resolveShown(conf);
    let loaded;
    try {
      loaded = readConfig(shown, ctx, subs);
    } catch (e) {
      if (!(e instanceof ConfigReadError)) throw e;
      log('ERROR', `Error while reading config: ${e.message}`);
      return 2;
    }
    const { config, errors } = loaded;
    if (errors.length) {
      say('Failed config');
      say('');
      for (const e of errors) {
        say(`${e.domain}: [source ${shown}:${e.line}]`);
        say('  ');
        say(`  ${e.msg}`);
        if (e.key !== undefined) say(`  ${e.key}: ${e.value}`);
      }
      return 2;
    }
    const name = config.esphome.name;
    const configDirShown = path.posix.dirname(shown);
    const buildShown = path.posix.join(configDirShown, '.esphome', 'build', name);
    const envShown = path.posix.join(buildShown, '.pioenvs', name);
    const uf2Shown = path.posix.join(envShown, 'firmware.uf2');
    if (command === 'config') {
      say(YAML.stringify(config).trimEnd());
      log('INFO', 'Configuration is valid!');
      continue;
    }
    if (command === 'clean') {
      log('INFO', `Deleting ${path.posix.join(buildShown, '.pioenvs')}`);
      fs.rmSync(ctx.toHost(path.posix.join(buildShown, '.pioenvs')), { recursive: true, force: true });
      log('INFO', 'Done!');
      continue;
    }
    if (command === 'compile' || command === 'run') {
      const rc = await compile({ config, name, buildShown, envShown, uf2Shown, ctx, es, log, say, onlyGenerate: opt['only-generate'], verbose });
      if (rc !== 0) return rc;
    }
    if (command === 'upload' || command === 'run') {
      const ota = (Array.isArray(config.ota) ? config.ota : config.ota ? [config.ota] : []).find((o) => o && o.platform === 'esphome');
      if (!ota) {
        log('ERROR', 'Cannot upload Over the Air as the ota configuration is not present or does not include platform: esphome');
        return 1;
      }
      const host = opt.device ?? `${name}.local`;
      if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) log('INFO', `Connecting to ${host}`);
      else { log('INFO', `Resolving IP address of ${host}`); log('INFO', ' -> 192.168.1.123'); }
      const uf2Host = ctx.toHost(uf2Shown);
      if (!fs.existsSync(uf2Host)) {
        process.stderr.write(['Traceback (most recent call last):', '  File "/usr/local/bin/esphome", line 8, in <module>', '    sys.exit(main())',
          '  File "/esphome/esphome/espota2.py", line 342, in run_ota_impl_', '    with open(filename, "rb") as file_handle:',
          `FileNotFoundError: [Errno 2] No such file or directory: '${uf2Shown}'`].join('\n') + '\n');
        return 1;
      }
      const size = fs.statSync(uf2Host).size;
      log('INFO', `Uploading ${uf2Shown} (${size} bytes)`);
      await sleep(Math.min(es.delayMs ?? 50, 200) / 2);
      process.stderr.write('Uploading: [============================================================] 100% Done...\n\n');
      log('INFO', 'Upload took 1.52 seconds, waiting for result...');
      log('INFO', 'OTA successful');
      log('INFO', 'Successfully uploaded program.');
    }
  }
  return 0;

  function usageError(msg) {
    process.stderr.write(`usage: esphome [-h] [-v] [-q] [-s key value] [--version] command ...\nesphome: error: ${msg}\n`);
    return 2;
  }
}

async function compile({ config, name, buildShown, envShown, uf2Shown, ctx, es, log, say, onlyGenerate }) {
  const board = config.bk72xx.board;
  const chip = BOARDS[board] ?? FAMILIES[String(config.bk72xx.family ?? '').toUpperCase()];
  log('INFO', 'Generating C++ source...');
  const buildHost = ctx.toHost(buildShown);
  fs.mkdirSync(path.join(buildHost, 'src'), { recursive: true });
  fs.writeFileSync(path.join(buildHost, 'platformio.ini'), `[env:${name}]\nboard = ${board}\nframework = arduino\nplatform = libretiny @ 1.9.1\n`);
  fs.writeFileSync(path.join(buildHost, 'src', 'main.cpp'), `// Auto generated code by esphome (fake)\n`);
  if (onlyGenerate) { log('INFO', 'Successfully generated source code.'); return 0; }
  log('INFO', 'Compiling app...');
  const lines = [
    `Processing ${name} (board: ${board}; framework: arduino; platform: libretiny @ 1.9.1)`,
    '-'.repeat(80),
    `HARDWARE: ${chip.toUpperCase()} 120MHz, 256KB RAM, 2MB Flash`,
    'PACKAGES:',
    ' - framework-beken-bdk @ 1.3.5',
    ' - toolchain-gccarmnoneeabi @ 1.100301.220327 (10.3.1)',
    'LDF: Library Dependency Finder -> https://bit.ly/configure-pio-ldf',
    'Dependency Graph',
    `Compiling .pioenvs/${name}/src/esphome/core/application.cpp.o`,
    `Compiling .pioenvs/${name}/src/main.cpp.o`,
  ];
  const failLines = [
    'src/main.cpp: In function \'void setup()\':',
    "src/main.cpp:212:3: error: 'gpio_binarysensor_id' was not declared in this scope",
    `*** [.pioenvs/${name}/src/main.cpp.o] Error 1`,
    '========================= [FAILED] Took 12.61 seconds =========================',
  ];
  const okLines = [
    `Linking .pioenvs/${name}/raw_firmware.elf`,
    'RAM:   [===       ]  28.9% (used 75640 bytes from 262144 bytes)',
    'Flash: [=====     ]  48.3% (used 570912 bytes from 1183744 bytes)',
    `Building UF2 OTA image: .pioenvs/${name}/firmware.uf2`,
    `|-- Image OTA: .pioenvs/${name}/image_${chip}_app.ota.ug.bin`,
    '========================= [SUCCESS] Took 45.18 seconds =========================',
  ];
  const all = es.fail ? [...lines, ...failLines] : [...lines, ...okLines];
  const step = (es.delayMs ?? 100) / all.length;
  for (const l of all) {
    say(l);
    await sleep(step);
  }
  if (es.fail) return 1;
  const familyId = es.familyOverride ?? FAMILY_ID[chip];
  // The firmware carries its API key (as the real one does) so the simulated plug can speak encrypted API.
  const payload = Buffer.from(JSON.stringify({ name, friendly_name: config.esphome.friendly_name, board, api_key: config.api?.encryption?.key }));
  const envHost = ctx.toHost(envShown);
  fs.mkdirSync(envHost, { recursive: true });
  fs.writeFileSync(ctx.toHost(uf2Shown), makeUF2({ familyId, payload, minBlocks: 400 }));
  fs.writeFileSync(path.join(envHost, `image_${chip}_app.ota.ug.bin`), wrapUG(payload, '1.0.0'));
  log('INFO', 'Successfully compiled program.');
  return 0;
}

// ---- reading the YAML --------------------------------------------------------------------------

function readYamlFile(shown, ctx) {
  const host = ctx.toHost(shown);
  let src;
  try {
    src = fs.readFileSync(host, 'utf8');
  } catch (e) {
    const why = e.code === 'ENOENT' ? 'No such file or directory' : e.code === 'EISDIR' ? 'Is a directory' : e.message;
    throw new ConfigReadError(`Invalid YAML syntax:\n\nError reading file ${shown}: [Errno ${e.code === 'EISDIR' ? 21 : 2}] ${why}: '${shown}'`);
  }
  const lineCounter = new YAML.LineCounter();
  const doc = YAML.parseDocument(src, { lineCounter, uniqueKeys: false, strict: false, logLevel: 'error' });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const pos = e.linePos?.[0];
    throw new ConfigReadError(`Invalid YAML syntax:\n\n${e.message.split('\n')[0]}\n  in "${shown}", line ${pos?.line ?? 1}, column ${pos?.col ?? 1}`);
  }
  return { doc, lineCounter, src };
}

function readConfig(shown, ctx, cliSubs) {
  const { doc, lineCounter, src } = readYamlFile(shown, ctx);
  const dir = path.posix.dirname(shown);
  let secrets;
  YAML.visit(doc, {
    Scalar(_key, node) {
      if (node.tag === '!secret') {
        if (!secrets) {
          const sp = path.posix.join(dir, 'secrets.yaml');
          try {
            secrets = readYamlFile(sp, ctx).doc.toJS() ?? {};
          } catch (e) {
            throw new ConfigReadError(e.message.replace(/^Invalid YAML syntax:\n\n/, 'Invalid YAML syntax:\n\n'));
          }
        }
        if (!(String(node.value) in secrets)) {
          // PyYAML's mark is where the node starts: at its tag
          const at = node.range?.[0] ?? 0;
          const tagAt = src.lastIndexOf('!secret', at);
          const p = lineCounter.linePos(tagAt >= 0 ? tagAt : at);
          throw new ConfigReadError(`Invalid YAML syntax:\n\nSecret '${node.value}' not defined\n  in "${shown}", line ${p.line}, column ${p.col}`);
        }
        return doc.createNode(secrets[String(node.value)]);
      }
      if (node.tag === '!include') {
        const inc = readYamlFile(path.posix.resolve(dir, String(node.value)), ctx).doc.toJS();
        return doc.createNode(inc);
      }
      if (node.tag === '!lambda' || node.tag === '!env_var') node.tag = undefined;
      return undefined;
    },
  });
  const raw = doc.toJS({ maxAliasCount: -1 }) ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigReadError('Invalid YAML syntax:\n\nThe configuration is not a mapping');
  const vars = { ...(raw.substitutions ?? {}), ...cliSubs };
  for (let pass = 0; pass < 5; pass++) for (const k of Object.keys(vars)) vars[k] = substitute(vars[k], vars);
  delete raw.substitutions;
  const config = substitute(raw, vars);
  const lineOf = (keys) => {
    let node = doc.getIn(keys, true);
    for (let n = keys.length; !node && n > 0; n--) node = doc.getIn(keys.slice(0, n - 1), true);
    const off = node?.range?.[0];
    return off === undefined ? 1 : lineCounter.linePos(off).line;
  };
  return { config, errors: validate(config, lineOf) };
}

function substitute(v, vars) {
  if (typeof v === 'string')
    return v.replace(/\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)/g, (m, a, b) => {
      const k = a ?? b;
      return k in vars ? String(vars[k]) : m;
    });
  if (Array.isArray(v)) return v.map((x) => substitute(x, vars));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, substitute(x, vars)]));
  return v;
}

// ---- the checks, with ESPHome's messages ----------------------------------------------------------

function validate(config, lineOf) {
  const errors = [];
  const add = (domain, keys, msg, key, value) => errors.push({ domain, line: lineOf(keys), msg, key, value });
  if (!config.esphome || typeof config.esphome !== 'object') {
    errors.push({ domain: 'esphome', line: 1, msg: "'esphome' section missing from configuration. Please make sure your configuration has an 'esphome:' line in it." });
    return errors;
  }
  const name = config.esphome.name;
  if (name === undefined || name === null) add('esphome', ['esphome'], "'name' is a required option for [esphome].");
  else {
    const bad = [...String(name)].find((c) => !NAME_CHARS.includes(c));
    if (bad !== undefined) add('esphome', ['esphome', 'name'], `'${bad}' is an invalid character for names. Valid characters are: ${NAME_CHARS} (lowercase, no spaces)`, 'name', name);
    else if (String(name).length > 31) add('esphome', ['esphome', 'name'], 'Hostnames can only be 31 characters long', 'name', name);
  }
  const platform = TARGET_PLATFORMS.find((p) => p in config);
  if (!platform) {
    add('esphome', ['esphome'], `Platform missing. You must include one of the available platform keys: ${TARGET_PLATFORMS.join(', ')}`);
    return errors;
  }
  if (platform !== 'bk72xx') {
    add(platform, [platform], `fake esphome: only bk72xx configurations are simulated (found ${platform})`);
    return errors;
  }
  const bk = config.bk72xx ?? {};
  const board = bk.board;
  if (board === undefined) { add('bk72xx', ['bk72xx'], "'board' is a required option for [bk72xx]."); return errors; }
  if (!(board in BOARDS) && !(String(bk.family ?? '').toUpperCase() in FAMILIES)) {
    add('bk72xx', ['bk72xx', 'board'], "This board is unknown, if you are sure you want to compile with this board selection, override with option 'family'", 'board', board);
    return errors;
  }
  // pins
  const used = new Map();
  walk(config, [], (value, keys) => {
    if (keys[keys.length - 1] !== 'pin' || keys[0] === 'substitutions') return false;
    const spec = value && typeof value === 'object' && !Array.isArray(value) ? value : { number: value };
    const numKeys = spec === value ? [...keys, 'number'] : keys;
    const domain = domainOf(config, keys);
    const raw = spec.number;
    let n;
    if (typeof raw === 'number' || /^\d+$/.test(String(raw))) {
      n = Number(raw);
      if (!USABLE_PINS.includes(n)) { add(domain, numKeys, `Pin number '${n}' is not usable for board ${board}.`, 'number', raw); return true; }
    } else {
      const m = /^P(\d+)$/.exec(String(raw));
      if (!m || !USABLE_PINS.includes(Number(m[1]))) { add(domain, numKeys, `Cannot resolve pin name '${raw}' for board ${board}.`, 'number', raw); return true; }
      n = Number(m[1]);
    }
    if (!used.has(n)) used.set(n, []);
    used.get(n).push({ keys: numKeys, domain, allow: spec.allow_other_uses === true, raw });
    return true;
  });
  for (const [n, uses] of used) {
    if (uses.length > 1) for (const u of uses) if (!u.allow) add(u.domain, u.keys, `Pin ${n} is used in multiple places`, 'number', u.raw);
  }
  // switch restore_mode
  for (const [idx, sw] of (Array.isArray(config.switch) ? config.switch : []).entries()) {
    if (!sw || sw.restore_mode === undefined) continue;
    const v = String(sw.restore_mode).toUpperCase().replace(/ /g, '_');
    if (!RESTORE_MODES.includes(v)) {
      const close = closeMatches(v, RESTORE_MODES);
      const msg = close.length ? `Unknown value '${v}', did you mean ${close.map((x) => `'${x}'`).join(', ')}?` : `Unknown value '${v}', valid options are ${RESTORE_MODES.map((x) => `'${x}'`).join(', ')}.`;
      add(`switch.${sw.platform}`, ['switch', idx, 'restore_mode'], msg, 'restore_mode', sw.restore_mode);
    }
  }
  return errors;
}

function domainOf(config, keys) {
  const top = keys[0];
  const v = config[top];
  if (Array.isArray(v) && typeof keys[1] === 'number' && v[keys[1]]?.platform) return `${top}.${v[keys[1]].platform}`;
  return String(top);
}

/** Calls fn(value, keys) for every mapping value; fn returns true to not descend further. */
function walk(v, keys, fn) {
  if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...keys, i], fn));
  else if (v && typeof v === 'object')
    for (const [k, x] of Object.entries(v)) {
      if (!fn(x, [...keys, k])) walk(x, [...keys, k], fn);
    }
}

// Python's difflib.get_close_matches(word, possibilities, n=3, cutoff=0.6)
function closeMatches(word, options) {
  const ratio = (a, b) => {
    const blocks = (alo, ahi, blo, bhi) => {
      let bi = alo, bj = blo, size = 0;
      for (let i = alo; i < ahi; i++)
        for (let j = blo; j < bhi; j++) {
          let k = 0;
          while (i + k < ahi && j + k < bhi && a[i + k] === b[j + k]) k++;
          if (k > size) { bi = i; bj = j; size = k; }
        }
      if (!size) return 0;
      return size + blocks(alo, bi, blo, bj) + blocks(bi + size, ahi, bj + size, bhi);
    };
    return (2 * blocks(0, a.length, 0, b.length)) / (a.length + b.length);
  };
  return options.map((o) => [ratio(o, word), o]).filter(([r]) => r >= 0.6).sort((x, y) => y[0] - x[0]).slice(0, 3).map(([, o]) => o);
}
