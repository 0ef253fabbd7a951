// Fake `esphome` CLI (ESPHome 2025.x, bk72xx only). Reads the YAML like ESPHome does (!secret from
// secrets.yaml beside the config, !include, substitutions incl. `-s KEY VALUE`), checks the mistakes a
// recipe can make with ESPHome's own messages, and `compile` leaves
// <config dir>/.esphome/build/<esphome.name>/.pioenvs/<esphome.name>/firmware.uf2 whose family ID comes
// from the board's chip and whose payload is JSON (firmwarePayload): {name, friendly_name, board, api_key,
// esphome_version, config}, config being the substituted, validated config the simulated device then runs.
// The checks themselves (ESPHome's order and words) are in esphome-config.mjs.
// Streams like the real one: log lines (INFO/WARNING/ERROR) on stderr, PlatformIO output and
// "Failed config" blocks on stdout. Exit codes: 0, 1 (compile/upload error), 2 (invalid config).
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { world, out, err, cwd, served, logCall, sleep, exit, dieBy, makeUF2, wrapUG, FAMILY_ID } from './common.mjs';
import { validateConfig } from './esphome-config.mjs';

/** UF2 family IDs (LibreTiny families.json): a BK7231Q (wa2) or BK7251 build is refused by a T/N plug. */
const UF2_FAMILY = { ...FAMILY_ID, bk7231q: 0xafe81d49, bk7251: 0x6a82cc42 };

class ConfigReadError extends Error {}

/** Local `esphome ...`: paths are host paths. */
export async function main(argv) {
  const w = world();
  logCall('esphome', argv);
  // Python: Ctrl+C is a KeyboardInterrupt, caught in esphome's main() -> exit 1.
  // SIGTERM has no handler in Python: the process dies by the signal. (A served call is over before any signal.)
  if (!served.getStore()) {
    process.on('SIGINT', () => exit(1));
    process.on('SIGTERM', () => dieBy('SIGTERM'));
  }
  const here = cwd();
  const code = await runEsphome(argv, { w, cwd: here, toHost: (p) => p, resolveShown: (p) => path.resolve(here, p) });
  return exit(code);
}

/**
 * The esphome command line. `ctx.toHost(shownAbsPath)` maps a path as ESPHome sees it (inside Docker:
 * /config/...) to the host file; `ctx.resolveShown(p)` makes a shown path absolute.
 */
export async function runEsphome(argv, ctx) {
  const es = ctx.w.esphome ?? {};
  const version = es.version ?? '2025.5.0';
  const log = (level, msg) => err(`${level} ${msg}\n`);
  const say = (line = '') => out(line + '\n');

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
    err(`fake esphome: '${command}' is not simulated\n`);
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
    const { config, errors, chip } = loaded;
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
      const rc = await compile({ config, chip, version, name, buildShown, envShown, uf2Shown, ctx, es, log, say,
        onlyGenerate: opt['only-generate'], verbose });
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
        err(['Traceback (most recent call last):', '  File "/usr/local/bin/esphome", line 8, in <module>', '    sys.exit(main())',
          '  File "/esphome/esphome/espota2.py", line 342, in run_ota_impl_', '    with open(filename, "rb") as file_handle:',
          `FileNotFoundError: [Errno 2] No such file or directory: '${uf2Shown}'`].join('\n') + '\n');
        return 1;
      }
      const size = fs.statSync(uf2Host).size;
      log('INFO', `Uploading ${uf2Shown} (${size} bytes)`);
      await sleep(Math.min(es.delayMs ?? 50, 200) / 2);
      err('Uploading: [============================================================] 100% Done...\n\n');
      log('INFO', 'Upload took 1.52 seconds, waiting for result...');
      log('INFO', 'OTA successful');
      log('INFO', 'Successfully uploaded program.');
    }
  }
  return 0;

  function usageError(msg) {
    err(`usage: esphome [-h] [-v] [-q] [-s key value] [--version] command ...\nesphome: error: ${msg}\n`);
    return 2;
  }
}

async function compile({ config, chip, version, name, buildShown, envShown, uf2Shown, ctx, es, log, say,
  onlyGenerate }) {
  const board = config.bk72xx.board;
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
  const familyId = es.familyOverride ?? UF2_FAMILY[chip];
  const payload = firmwarePayload(config, { name, board, version });
  const envHost = ctx.toHost(envShown);
  fs.mkdirSync(envHost, { recursive: true });
  fs.writeFileSync(ctx.toHost(uf2Shown), makeUF2({ familyId, payload, minBlocks: 400 }));
  fs.writeFileSync(path.join(envHost, `image_${chip}_app.ota.ug.bin`), wrapUG(payload, '1.0.0'));
  log('INFO', 'Successfully compiled program.');
  return 0;
}

/**
 * What the fake firmware image carries: its API key (as the real one does) so the simulated plug can speak the
 * encrypted API, the ESPHome version it was built with, which the final device then reports, and the config it was
 * built from, which the simulated device runs (test/sim/esphome-device.ts). The Wi-Fi and OTA sections and the API's
 * secrets are left out of that copy: the device has no use for them and the payload stays small (the simulated
 * plug reads the first 64 KiB of it).
 */
export function firmwarePayload(config, { name, board, version }) {
  const { wifi: _wifi, ota: _ota, ...rest } = config;
  if (rest.api && typeof rest.api === 'object') {
    const { encryption: _key, password: _password, ...api } = rest.api;
    rest.api = api;
  }
  return Buffer.from(JSON.stringify({ name, friendly_name: config.esphome?.friendly_name, board,
    api_key: config.api?.encryption?.key, esphome_version: version, config: rest }));
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
  const { errors, chip } = validateConfig(config);
  return { config, chip, errors: errors.map((e) => ({ ...e, line: lineOf(e.path) })) };
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
