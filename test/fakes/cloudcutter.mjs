// Fake `tuya-cloudcutter.sh` (flash mode). Follows the real script's flow and texts:
// tuya-cloudcutter.sh -> common.sh -> common_run.sh -> safety_checks.sh -> src/get_input.py
// (write-profile, validate-firmware-file) -> cloudcutter exploit_device / configure_wifi /
// update_firmware. See test/fakes/messages.mjs for where each text comes from.
import fs from 'node:fs';
import path from 'node:path';
import { CLOUDCUTTER_MESSAGES as M, CLOUDCUTTER_LINES as L, chipMismatchLine } from './messages.mjs';
import { world, logCall, updateState, sleep, out, err, exit, dieBy, readInput, uuid, wrapUG, FAMILY_ID } from './common.mjs';

const RULE = '='.repeat(80);

/** bash getopts "hrntvw:p:f:d:l:s::a:k:u:o:" as tuya-cloudcutter.sh:15 uses it (incl. its quirks). */
export function getopts(args, arg0) {
  const withArg = new Set(['w', 'p', 'f', 'd', 'l', 's', 'a', 'k', 'u', 'o']);
  const known = new Set([...'hrntv', ...withArg]);
  const o = { flashTimeout: '15', errors: [] };
  let i = 0;
  outer: while (i < args.length) {
    const a = args[i];
    if (a === '--') { i++; break; }
    if (!a.startsWith('-') || a === '-') break;
    let j = 1;
    while (j < a.length) {
      const c = a[j];
      if (!known.has(c)) {
        o.errors.push(`${arg0}: illegal option -- ${c}`);
        j++;
        continue;
      }
      if (withArg.has(c)) {
        let val;
        if (j + 1 < a.length) { val = a.slice(j + 1); i++; }
        else if (i + 1 < args.length) { val = args[i + 1]; i += 2; }
        else { o.errors.push(`${arg0}: option requires an argument -- ${c}`); i++; continue outer; }
        if (c === 's') {
          // getopts-extra: following non-option words are appended (SSID PASSWORD)
          const extra = [val];
          while (i < args.length && !args[i].startsWith('-')) extra.push(args[i++]);
          o.detach = true;
          o.ssid = extra[0];
          o.ssidPass = extra[1];
        } else if (c === 'w') o.wifiAdapter = val;
        else if (c === 'p') o.profile = val;
        else if (c === 'f') { o.firmware = val; o.flash = true; }
        else if (c === 'o') o.overrideSsid = val;
        else o[c] = val;
        continue outer;
      }
      // options without an argument. `t` is declared WITHOUT a colon in the real optstring, so
      // `-t 30` sets FLASH_TIMEOUT to '' and getopts stops at "30" (everything after is ignored).
      if (c === 'r') o.resetNm = true;
      else if (c === 'n') o.noRescan = true;
      else if (c === 'v') o.verbose = true;
      else if (c === 't') o.flashTimeout = '';
      else if (c === 'h') o.help = true;
      j++;
    }
    i++;
    if (o.help) break;
  }
  o.rest = args.slice(i);
  return o;
}

const USAGE = (arg0) => [
  `usage: ${arg0} [OPTION]...`,
  '  -h                Show this message',
  '  -r                Reset NetworkManager',
  '  -n\t\t\t\t  No Rescan (for older versions of nmcli that don\'t support it)',
  '  -o TEXT           Override specific device AP name to connect to',
  '  -v\t\t\t\t  Verbose log output',
  '  -w TEXT           WiFi adapter name (optional, auto-selected if not supplied)',
  '  -p TEXT           Device profile name, AKA Device Slug (optional)',
  '  -a TEXT           AuthKey of the device (optional, requires UUID and PSKKey accompanied with it)',
  '  -k TEXT           PSKKey of the device (optinal, requires AuthKey and UUID accompanied with it)',
  '  -u TEXT           UUID of the device (optional, requires AuthKey and PSKKey accompanied with it)',
  '',
  '==== Detaching Only: ====',
  "  -s SSID PASSWORD  Wifi SSID and Password to use for detaching.  Use quotes if either value contains spaces.  Certain special characters may need to be escaped with '\\'",
  '  -d TEXT           New device id (optional)',
  '  -l TEXT           New local key (optional)',
  '',
  '==== 3rd Party Firmware Flashing Only: ====',
  '  -f TEXT           Firmware file name without path as it exists in /custom-firmware/ (optional)',
  '  -t SECONDS        Timeout in seconds for how long to wait before exiting after receiving firmware update information.  Default is 15',
];

// ---- validate_firmware_file_internal (src/get_input.py:164-253) ----------------------------------

const MAGIC = [
  [Buffer.from('RBL\0', 'latin1'), 'RBL'],
  [Buffer.from([0x43, 0x09, 0xb5, 0x96]), 'QIO'],
  [Buffer.from([0x2f, 0x07, 0xb5, 0x94]), 'UA'],
  [Buffer.from([0x55, 0xaa, 0x55, 0xaa]), 'UG'],
  [Buffer.from('UF2\n', 'latin1'), 'UF2'],
  [Buffer.from([0x99, 0x99, 0x96, 0x96]), 'RTL_UART'],
  [Buffer.from('68513ef83e396b12ba059a900f36b6d3', 'hex'), 'RTL8720CF_OTA'],
  [Buffer.from('4f54413118000000', 'hex'), 'RTL8710BN_OTA'],
];
const magicName = (b) => MAGIC.find(([m]) => m.equals(b))?.[1];

/** Returns {type, messages}: type one of INVALID, IGNORED_HEADER, IGNORED_FILENAME, VALID_UG, VALID_UF2. */
export function validateFirmware(data, base, chip) {
  const header = data.subarray(0, 512);
  const m4 = magicName(header.subarray(0, 4));
  const m8 = magicName(header.subarray(8, 16));
  const m16 = magicName(header.subarray(32, 48));
  if ((!m4 && !m16 && !m8) || header.length < 512)
    return { type: 'INVALID', messages: [`!!! Unrecognized file type - '${base}' is not a UG, UF2, or RTL8720CF OTA file.`] };
  const fileType = m4 ?? m8 ?? m16;
  if (!['UG', 'UF2', 'RTL8720CF_OTA', 'RTL8710BN_OTA'].includes(fileType))
    return { type: 'INVALID', messages: [`!!! File ${base} is a '${fileType}' file! Please provide an UG file.`] };
  if (fileType === 'UG') {
    const rblVer = header.subarray(32 + 12 + 16, 32 + 12 + 16 + 24).toString('latin1');
    if (rblVer.includes('bk7231')) return { type: chip && !rblVer.includes(chip) ? 'IGNORED_HEADER' : 'VALID_UG', messages: [] };
    if (base.toLowerCase().includes('bk7231'))
      return { type: chip && !base.toLowerCase().includes(chip) ? 'IGNORED_FILENAME' : 'VALID_UG', messages: [] };
    return { type: 'INVALID', messages: [`!!! Can't verify chip type of UG file '${base}' - make sure that BK7231T or BK7231N is present in the filename!`] };
  }
  if (fileType === 'UF2') {
    if (!chip) return { type: 'IGNORED_HEADER', messages: [] };
    const family = header.readUInt32LE(28);
    return { type: FAMILY_ID[chip] === family ? 'VALID_UF2' : 'IGNORED_HEADER', messages: [] };
  }
  if (fileType === 'RTL8720CF_OTA' && fileType.includes(chip.toUpperCase())) return { type: 'VALID_RTL8720CF_OTA', messages: [] };
  if (fileType === 'RTL8710BN_OTA' && fileType.includes(chip.toUpperCase())) return { type: 'VALID_RTL8710BN_OTA', messages: [] };
  return { type: 'NONE', messages: [] };
}

// ---- the run ----------------------------------------------------------------------------------------

export async function main(argv) {
  const w = world();
  logCall('tuya-cloudcutter.sh', argv);
  process.on('SIGINT', () => dieBy('SIGINT'));
  process.on('SIGTERM', () => dieBy('SIGTERM'));
  process.on('SIGHUP', () => dieBy('SIGHUP'));

  const cc = w.cloudcutter ?? {};
  const arg0 = process.env.FAKE_ARG0 || './tuya-cloudcutter.sh';
  const outcome = cc.outcome ?? 'success';
  const crlf = cc.crlf !== false;
  const steps = 14;
  const tick = () => sleep((cc.delayMs ?? 50) / steps);
  const startedAt = Date.now();

  const say = (line = '') => out(line + '\n'); // lines printed by the script itself (host side)
  const dock = (line = '') => out(line + (crlf ? '\r\n' : '\n')); // lines printed inside `docker run -ti`
  const fail = async (lines, code = 1) => { for (const l of lines) say(l); await exit(code); };

  const o = getopts(argv, arg0);
  for (const e of o.errors) err(e + '\n');
  if (o.help) { for (const l of USAGE(arg0)) say(l); return exit(0); }
  if (o.detach && o.flash) {
    say('You have supplied arguments for both detaching and flashing.  Please only include the arguments for your desired action.');
    say(`Please see '${arg0} -h' for more information.`);
    return exit(1);
  }

  const cwd = process.cwd();
  const isCheckout = fs.existsSync(path.join(cwd, 'common.sh')) && fs.existsSync(path.join(cwd, 'common_run.sh'));
  if (!isCheckout) {
    // `source common.sh` is relative to the current directory (tuya-cloudcutter.sh:71)
    err(`${arg0}: line 71: common.sh: No such file or directory\n`);
    err(`${arg0}: line 73: run_helper_script: command not found\n`);
    if (!o.flash) return exit(1);
    say(L.loading);
    err(`${arg0}: line 100: common_run.sh: No such file or directory\n`);
    say(L.flashing); say(); say(RULE);
    say("Wait for up to 10-120 seconds for the device to connect to 'cloudcutterflash'. This script will then show the firmware upgrade requests sent by the device.");
    say(RULE); say();
    err(`${arg0}: line 144: run_in_docker: command not found\n`);
    return fail(M.ota);
  }

  // ---- common.sh ----
  const nm = w.nmcli; // null: no nmcli on this machine
  if (!nm) err('common.sh: line 5: nmcli: command not found\n');
  const firstWifi = outcome === 'adapter' ? '' : nm?.wifiIface ?? '';
  let adapter = o.wifiAdapter ?? '';
  if (!adapter) adapter = firstWifi;
  if (!adapter || outcome === 'adapter') {
    say(M.adapter[0]);
    say(`See '${arg0} -h' for more information.`);
    return exit(1);
  }
  let supportsAp = '';
  if (!nm) err('common.sh: line 17: nmcli: command not found\n');
  else if (adapter === nm.wifiIface) supportsAp = nm.apMode === false ? 'no' : 'yes';
  else err(`Error: Device '${adapter}' not found.\n`);
  if (supportsAp !== 'yes') {
    say(L.apWarning + supportsAp);
    say("AP support is manditory for tuya-cloudcutter to work.  If this is blank or 'no' your adapter doesn't support this feature.");
    if (process.stdin.isTTY) err(L.apWarningPrompt);
    await readInput();
  }
  say(L.buildingImage);
  await tick();
  if (outcome === 'docker' || !w.docker) {
    // (the world's docker.daemon is not consulted: it defaults to false for the ESPHome checks)
    err(w.docker ? 'ERROR: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n' : 'common.sh: line 122: docker: command not found\n');
    return fail(M.docker);
  }
  err('#0 building with "default" instance using docker driver\n\n#1 [internal] load build definition from Dockerfile\n#1 transferring dockerfile: 620B done\n#1 DONE 0.0s\n');
  err('#12 exporting to image\n#12 exporting layers done\n#12 naming to docker.io/library/cloudcutter done\n#12 DONE 0.0s\n');
  say(L.builtImage);
  helper(say, cwd, 'pre-setup');

  if (!o.flash && !o.detach) {
    err('1) Detach from the cloud and run Tuya firmware locally\n2) Flash 3rd Party Firmware\n[?] Select your desired operation [1/2]: ');
    err('\nfake tuya-cloudcutter.sh: the interactive menus are not simulated; pass -f FIRMWARE (and -p SLUG)\n');
    return exit(2);
  }
  if (o.detach) {
    err('fake tuya-cloudcutter.sh: detach mode (-s) is not simulated\n');
    return exit(2);
  }
  say(L.loading);

  // ---- common_run.sh: the profile ----
  const notATty = cc.requireTty && !process.stdin.isTTY;
  if (notATty) {
    err(L.notATty + '\n');
    return fail(['Failed to choose a profile, please run this script again']);
  }
  if (!o.profile) {
    err('fake tuya-cloudcutter.sh: the interactive profile menu (choose-profile) is not simulated; pass -p SLUG\n');
    return fail(['Failed to choose a profile, please run this script again']);
  }
  const profilesDir = path.join(cwd, 'device-profiles');
  const profileDir = path.join(profilesDir, o.profile);
  const workPath = (p) => '/work/' + path.relative(cwd, p).split(path.sep).join('/');
  let device = null;
  let profile = null;
  if (isDir(profileDir)) {
    for (const name of fs.readdirSync(profileDir)) {
      if (name.startsWith('.') || !name.endsWith('.json') || !fs.statSync(path.join(profileDir, name)).isFile()) continue;
      let data;
      try {
        data = JSON.parse(fs.readFileSync(path.join(profileDir, name), 'utf8'));
      } catch {
        dock(`File ${workPath(path.join(profileDir, name))} does not contain valid JSON. Please update your file and try again.`);
        return fail(['Failed to choose a profile, please run this script again']);
      }
      if (pyIn('profiles', data)) { device = data; continue; }
      if (pyIn('firmware', data)) { profile = data; continue; }
    }
    if (!device || !profile) dock(M.profile[0]);
  }
  if (!device || !profile) {
    // download_profile: devices/SLUG.json. The fake world has no network: answered like a 404.
    dock(M.profile[1]);
    dock(`API request to https://tuya-cloudcutter.github.io/api/devices/${o.profile}.json timed out. Make sure you have an Internet connection and the path is not blocked by a firewall.`);
    return fail(['Failed to choose a profile, please run this script again']);
  }
  const combined = { slug: path.basename(profileDir), device, profile };
  const combinedText = JSON.stringify(combined, null, '\t');
  fs.writeFileSync(path.join(profileDir, 'combined.json'), combinedText);

  const slugs = [...combinedText.matchAll(/"slug": "([^"]*)/g)].map((m) => m[1]);
  let deviceSlug = '';
  let profileSlug = '';
  if (slugs.length) {
    deviceSlug = slugs[0];
    if (slugs.length === 1) {
      const lines = combinedText.split('\n');
      const words = [];
      lines.forEach((l, idx) => {
        if (l.includes('"profiles": [')) for (const x of [l, lines[idx + 1] ?? '']) words.push(...x.replace(/[\t" []/g, '').split(/\s+/).filter(Boolean));
      });
      profileSlug = words[1] ?? '';
    } else profileSlug = slugs[1];
  }
  const chip = [...combinedText.matchAll(/"chip": "([^"]*)/g)].map((m) => m[1]).join('\n');

  // ---- safety_checks.sh ----
  helper(say, cwd, 'pre-safety-checks');
  say();
  say(L.safetyStart);
  const ports = [['udp', 53, 'resolve DNS queries'], ['udp', 67, 'offer DHCP leases'], ['tcp', 80, 'answer HTTP requests'],
    ['tcp', 443, 'answer HTTPS requests'], ['tcp', 1883, 'run MQTT'], ['tcp', 8886, 'run MQTTS']];
  for (const [proto, port, reason] of ports) {
    out(`Checking ${proto.toUpperCase()} port ${port}... `);
    const busy = (w.ss?.busy ?? []).find((b) => b.proto === proto && b.port === port);
    if (!busy) { say('Available.'); continue; }
    say(`Occupied by ${busy.process} with PID ${busy.pid}.`);
    say(`Port ${port} is needed to ${reason}`);
    if (process.stdin.isTTY) err(`Do you wish to terminate ${busy.process}? [y/N] `);
    const reply = await readInput();
    say();
    if (/^[Ss]$/.test(reply)) { say('Skipping...'); continue; }
    if (!/^[Yy]$/.test(reply)) return fail(M.portBusy);
    say(`Attempting to terminate ${busy.process}`);
  }
  say(L.safetyDone);
  say();

  // ---- common_run.sh: validate-firmware-file ----
  const chipChoice = ['bk7231t', 'bk7231n', 'rtl8720cf', 'rtl8710bn'].find((c) => c === chip.toLowerCase());
  if (!chipChoice) {
    dock('Usage: get_input.py validate-firmware-file [OPTIONS] FILENAME');
    dock("Try 'get_input.py validate-firmware-file --help' for help.");
    dock('');
    dock(`Error: Invalid value for '-c' / '--chip': '${chip}' is not one of 'bk7231t', 'bk7231n', 'rtl8720cf', 'rtl8710bn'.`);
    return exit(1);
  }
  let firmware = o.firmware;
  const fwInContainer = path.posix.join('/work/custom-firmware', firmware);
  const fwHost = fwInContainer.startsWith('/work/') ? path.join(cwd, fwInContainer.slice('/work/'.length)) : null;
  if (!fwHost || !isFile(fwHost)) {
    for (const l of traceback(`FileNotFoundError: [Errno 2] No such file or directory: '${fwInContainer}'`)) dock(l);
    return exit(1);
  }
  const fwData = fs.readFileSync(fwHost);
  const check = validateFirmware(fwData, path.posix.basename(fwInContainer), chipChoice);
  for (const m of check.messages) dock(m);
  if (outcome === 'chip' || !['VALID_UG', 'VALID_UF2', 'VALID_RTL8720CF_OTA', 'VALID_RTL8710BN_OTA'].includes(check.type)) {
    dock(chipMismatchLine(firmware, chipChoice));
    return exit(1);
  }
  if (check.type === 'VALID_UF2') {
    const target = `${fwHost}-${chipChoice}-extracted.ug.bin`;
    dock(`Extracting UF2 package as '${path.basename(target)}'`);
    const parts = [];
    for (let off = 0; off + 512 <= fwData.length; off += 512) parts.push(fwData.subarray(off + 32, off + 32 + Math.min(fwData.readUInt32LE(off + 16), 476)));
    fs.writeFileSync(target, wrapUG(Buffer.concat(parts)));
    firmware = path.basename(target);
  }
  say(L.selectedDevice + deviceSlug);
  say(L.selectedProfile + profileSlug);
  say(L.selectedFirmware + firmware);

  // ---- common_run.sh: first AP (stock firmware) ----
  say(); say(RULE);
  say(L.placeInApMode);
  say('Power cycling off/on - 3 times and wait for the device to fast-blink, then repeat 3 more times.  Some devices need 4 or 5 times on each side of the pause');
  say('Long press the power/reset button on the device until it starts fast-blinking, then release, and then hold the power/reset button again until the device starts slow-blinking.');
  say('See https://support.tuya.com/en/help/_detail/K9hut3w10nby8 for more information.');
  say(RULE); say();
  helper(say, cwd, 'pre-wifi-exploit');
  const stockAp = o.overrideSsid || cc.apSsid || 'SmartLife-1A2B';
  const scanLine = L.scanning + (o.overrideSsid ? ` ${o.overrideSsid}` : '');
  if (outcome === 'no-ap') {
    say(scanLine);
    for (;;) { await sleep(Math.max(100, (cc.delayMs ?? 50) / 5)); out('.'); }
  }
  if (outcome === 'ap') {
    say(scanLine);
    for (let i = 1; i <= 5; i++) {
      if (i > 1) out('.');
      await tick();
      say(`\n${L.found}"${stockAp}", trying to connect...`);
      err('Error: Connection activation failed: IP configuration could not be reserved (no available address, timeout, etc.).\n');
      err(`Hint: use 'journalctl -xe NM_CONNECTION=${uuid()} + NM_DEVICE=${adapter}' to get more details.\n`);
    }
    rememberConnection(w, stockAp, adapter);
    say(M.ap[0]);
    return fail([M.ap[1]]);
  }
  await wifiConnect(stockAp);

  say('Waiting 1 sec to allow device to set itself up...');
  await tick();
  say(L.exploitStart);
  const crash = missingKeys(profile, [['firmware'], ['firmware', 'chip'], ['data']]);
  if (crash) {
    for (const l of traceback(`KeyError: '${crash}'`, 'exploit')) dock(l);
    return fail(M.exploitCrashed);
  }
  const authKey = randomAscii(16);
  const devUuid = randomAscii(12);
  dock(`Using AuthKey: ${authKey}`);
  dock(`Using UUID: ${devUuid}`);
  const crash2 = missingKeys(profile, [['name'], ['sub_name']]);
  if (crash2) {
    for (const l of traceback(`KeyError: '${crash2}'`, 'exploit')) dock(l);
    return fail(M.exploitCrashed);
  }
  const configPath = `/work/configured-devices/${devUuid}.deviceconfig`;
  fs.mkdirSync(path.join(cwd, 'configured-devices'), { recursive: true });
  fs.writeFileSync(path.join(cwd, 'configured-devices', `${devUuid}.deviceconfig`), JSON.stringify({
    uuid: devUuid, auth_key: authKey, chip_family: String(profile.firmware.chip).toUpperCase(),
    profile: `${profile.name} / ${profile.sub_name}`, device: combined.slug,
  }, null, 4));
  dock('Exploit run, saved device config too!');
  dock(`output=${configPath}`);
  say(`Saved device config in ${configPath}`);

  // ---- second AP (exploited: "A-XXXX") ----
  say(); say(RULE);
  say(L.powerCycle);
  say('Power cycling off/on - 3 times and wait for the device to fast-blink, then repeat 3 more times.  Some devices need 4 or 5 times on each side of the pause');
  say('Long press the power/reset button on the device until it starts fast-blinking, then releasing, and then holding the power/reset button again until the device starts slow-blinking.');
  say('See https://support.tuya.com/en/help/_detail/K9hut3w10nby8 for more information.');
  say(RULE); say();
  await tick();
  helper(say, cwd, 'pre-wifi-config');
  const ending = stockAp.slice(-5);
  const secondAp = outcome === 'exploit' ? stockAp : `A${ending.startsWith('-') ? '' : '-'}${ending}`;
  await wifiConnect(secondAp);
  if (!secondAp.startsWith('A-') && !o.a) {
    say(RULE);
    say(M.exploit[0]);
    say(RULE);
    return exit(1);
  }
  say(L.joiningFlashAp);
  await tick();
  dock("Configured device to connect to 'cloudcutterflash'");

  // ---- tuya-cloudcutter.sh: flash ----
  say(L.flashing); say(); say(RULE);
  say("Wait for up to 10-120 seconds for the device to connect to 'cloudcutterflash'. This script will then show the firmware upgrade requests sent by the device.");
  say(RULE); say();
  dock(`Using WLAN adapter: ${adapter}`);
  dock('Unable to get channel from wlan info. Using 6 as fallback.');
  dock('Configuration file: /dev/stdin');
  dock(`Using interface ${adapter} with hwaddr 00:c0:ca:b1:7e:42 and ssid "cloudcutterflash"`);
  dock(`${adapter}: interface state UNINITIALIZED->ENABLED`);
  dock(`${adapter}: AP-ENABLED`);
  dock('If your device gets stuck here with no progress after several (at least two) minutes, see https://github.com/tuya-cloudcutter/tuya-cloudcutter/wiki/FAQ#my-device-gets-stuck-after-dhcp-what-can-i-do for additional steps');
  await tick();
  if (!/^\d+$/.test(o.flashTimeout)) {
    // `-t` takes no argument in the real optstring: FLASH_TIMEOUT is '' and argparse refuses it
    dock('usage: cloudcutter update_firmware [-h] [--ip IP]');
    dock('                                   profile schema config firmware_dir');
    dock('                                   firmware flash_timeout verbose_output');
    dock(`cloudcutter update_firmware: error: argument flash_timeout: invalid int value: '${o.flashTimeout}'`);
    return fail(M.ota);
  }
  dock('Using PSK v1 - Received PSK ID version 01');
  dock('Processing endpoint /v2/url_config');
  if (outcome === 'ota') {
    dock('[!] Unable to decrypt device reponse.  PSKKEY/AUTHKEY do not match device - MAC check failed');
    return fail(M.ota);
  }
  dock('Processing endpoint tuya.device.active');
  const schemas = device.schemas;
  if (!schemas || typeof schemas !== 'object' || Object.keys(schemas).length === 0) {
    // active_endpoint_hook (src/cloudcutter/__main__.py:153) raises inside tornado: the device never
    // gets an answer and the real run waits forever.
    const e = !schemas ? "KeyError: 'schemas'" : 'IndexError: list index out of range';
    dock('ERROR:tornado.application:Uncaught exception POST /d.json?a=tuya.device.active (10.204.0.13)');
    dock('Traceback (most recent call last):');
    dock('  File "/src/cloudcutter/__main__.py", line 153, in active_endpoint_hook');
    dock('    schema_id, schema = list(device["schemas"].items())[0]');
    dock(e);
    for (;;) await sleep(60_000);
  }
  dock('Processing endpoint tuya.device.dynamic.config.get');
  await tick();
  dock('Processing endpoint tuya.device.upgrade.get');
  dock(`Processing endpoint /files/${firmware}`);
  const size = fs.statSync(path.join(cwd, 'custom-firmware', firmware)).size;
  dock(`[Firmware Upload] /files/${firmware} send complete, request range: bytes=0-${size - 1}/${size}`);
  for (const p of [4, 13, 22, 31, 40, 49, 58, 67, 76, 85, 94, 100]) {
    dock(L.progress + `${p}%`);
    if (p % 3 === 0) await tick();
  }
  let mac = cc.mac ?? 'd8:1f:12:3a:4b:5c';
  if (cc.simUrl) {
    try {
      const r = await fetch(`${cc.simUrl.replace(/\/$/, '')}/_sim/flash-kickstart`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ chip: chipChoice, firmware }),
      });
      const text = await r.text();
      if (!r.ok) throw new Error(`HTTP ${r.status} ${text.slice(0, 200)}`);
      try {
        const j = JSON.parse(text);
        if (typeof j?.mac === 'string') mac = j.mac.toLowerCase();
      } catch { /* not JSON: keep the default MAC */ }
    } catch (e) {
      err(`fake tuya-cloudcutter.sh: POST ${cc.simUrl}/_sim/flash-kickstart failed: ${e?.message ?? e}\n`);
      return exit(99);
    }
  }
  updateState(w, (s) => {
    s.visible ??= [];
    const ssid = `kickstart-${chipChoice}`;
    if (!s.visible.some((n) => n.ssid === ssid)) s.visible.push({ ssid, security: '', signal: 74, bssid: 'D8:1F:12:3A:4B:5D' });
  });
  dock(`${L.nearlyComplete}  Waiting ${o.flashTimeout} seconds to ensure flashing completes.`);
  await tick();
  dock(L.complete);
  dock('Please wait about 30 seconds then look for signs of activity from the firmware you supplied (either watch for AP mode or check if it joined your network).');
  dock(L.mac + mac);
  helper(say, cwd, 'post-flash');
  // A successful run takes delayMs in all, however many waits its path had (benchmarks rely on it).
  await sleep(Math.max(0, (cc.delayMs ?? 50) - (Date.now() - startedAt)));
  return exit(0);

  async function wifiConnect(ap) {
    say(scanLine);
    out('..');
    await tick();
    say(`\n${L.found}"${ap}", trying to connect...`);
    const id = rememberConnection(w, ap, adapter);
    say(`Device '${adapter}' successfully activated with '${id}'.`);
    say(L.connected);
  }
}

function helper(say, cwd, name) {
  if (fs.existsSync(path.join(cwd, 'scripts', `${name}.sh`))) say(`Running helper script '${name}'`);
}

/** `nmcli dev wifi connect AP ifname IFACE name AP` leaves a saved connection named AP behind. */
function rememberConnection(w, name, device) {
  let id = uuid();
  updateState(w, (s) => {
    s.connections ??= [];
    const old = s.connections.find((c) => c.name === name);
    if (old) id = old.uuid;
    else s.connections.push({ name, uuid: id, type: 'wifi', device: '' });
  });
  return id;
}

function isDir(p) {
  try { return fs.statSync(p).isDirectory(); } catch { return false; }
}
function isFile(p) {
  try { return fs.statSync(p).isFile(); } catch { return false; }
}

/** Python's `key in data` for what json.load returns. */
function pyIn(key, data) {
  if (Array.isArray(data)) return data.includes(key);
  if (typeof data === 'string') return data.includes(key);
  if (data && typeof data === 'object') return Object.prototype.hasOwnProperty.call(data, key);
  return false;
}

function missingKeys(obj, paths) {
  for (const p of paths) {
    let cur = obj;
    for (const k of p) {
      if (!cur || typeof cur !== 'object' || !(k in cur)) return k;
      cur = cur[k];
    }
  }
  return undefined;
}

function randomAscii(n) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => abc[b % abc.length]).join('');
}

function traceback(last, where = 'validate') {
  if (where === 'exploit')
    return [
      'Traceback (most recent call last):',
      '  File "/usr/local/lib/python3.9/runpy.py", line 197, in _run_module_as_main',
      '    return _run_code(code, main_globals, None,',
      '  File "/src/cloudcutter/__main__.py", line 507, in <module>',
      '    args.handler(args)',
      '  File "/src/cloudcutter/__main__.py", line 273, in __exploit_device',
      '    device_config = exploit_device_with_config(args, combined)',
      '  File "/src/cloudcutter/exploit.py", line 86, in exploit_device_with_config',
      '    chip = combined["profile"]["firmware"]["chip"]',
      last,
    ];
  return [
    'Traceback (most recent call last):',
    '  File "/src/get_input.py", line 462, in <module>',
    '    cli(obj={})',
    '  File "/src/.venv/lib/python3.9/site-packages/click/core.py", line 1157, in __call__',
    '    return self.main(*args, **kwargs)',
    '  File "/src/get_input.py", line 446, in validate_firmware_file',
    '    fw_type = validate_firmware_file_internal(join(firmware_dir, filename), chip and chip.lower())',
    '  File "/src/get_input.py", line 177, in validate_firmware_file_internal',
    '    with open(firmware, "rb") as fs:',
    last,
  ];
}
