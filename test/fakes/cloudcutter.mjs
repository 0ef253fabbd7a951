// Fake `tuya-cloudcutter.sh` (flash mode). Follows the real script's flow and texts:
// tuya-cloudcutter.sh -> common.sh -> common_run.sh -> safety_checks.sh -> src/get_input.py
// (write-profile, validate-firmware-file) -> cloudcutter exploit_device / configure_wifi /
// update_firmware. See test/fakes/messages.mjs for where each text comes from.
//
// It takes the real time (scaled by the world's timeScale): the Docker build, each container, the
// script's sleeps, scans on its adapter (test/fakes/nm.mjs), the plug joining 'cloudcutterflash' and
// downloading. The plug is the world's sim (simUrl): its AP is found only while the sim shows it (a
// dot per scan meanwhile, forever), the exploit and the Wi-Fi change take it out of AP mode, and the
// sim is flashed at "send complete". While hostapd runs, the adapter is unmanaged (no scans, no
// connects through nmcli) until the script exits, also on SIGINT, SIGTERM and SIGHUP (its EXIT trap).
import fs from 'node:fs';
import path from 'node:path';
import { CLOUDCUTTER_MESSAGES as M, CLOUDCUTTER_LINES as L, chipMismatchLine, portQuestion } from './messages.mjs';
import {
  world, logCall, readState, updateState, sleep, out, err, exit, dieBy, readInput, uuid, wrapUG, FAMILY_ID, scaled,
  simState, simPost,
} from './common.mjs';
import {
  REAL as NM, dev, available, airAt, airContext, bss, lastScanEnd, requestScan, nextScanEnd, activate, deactivate,
  setManaged, setRadio, sortedDevices, wifiAdapters,
} from './nm.mjs';

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

/** Real durations (ms) of the script's own steps. */
export const STEPS = Object.freeze({
  buildCached: 4000, // `docker build` with every layer cached
  buildFirst: 63000, // first build (63 s on a Raspberry Pi, upstream #465)
  dockerRun: 2000, // `docker run` + pipenv start, per container
  exploit: 4000,
  setupAp: 3000, // setup_apmode.sh: addresses, hostapd, dnsmasq, mosquitto
  joinFlashAp: 30000, // the plug joins 'cloudcutterflash' ("10-120 seconds")
  endpoints: 4000, // url_config .. upgrade.get (incl. the 2 s call_later before the MQTT trigger)
  download: 25000, // the plug fetches the firmware over Wi-Fi
  progress: 8000, // MQTT progress reports after the file was sent
  dot: 100, // one iteration of the scan loop besides the scan itself (nmcli, grep, awk)
});
// the script's sleeps: common.sh:54,59,113; common_run.sh:82,116,137
const SLEEP_1 = 1000;
const SLEEP_5 = 5000;
const SUCCESS_REAL = STEPS.buildCached + 4 * STEPS.dockerRun + 2 * (2 * SLEEP_1) + SLEEP_1 + STEPS.exploit +
  2 * SLEEP_5 + STEPS.setupAp + STEPS.joinFlashAp + STEPS.endpoints + STEPS.download + STEPS.progress + 15000;

const TUYA_GATEWAYS = ['192.168.175.1', '192.168.176.1', '192.168.43.1']; // common.sh:99-100

export async function main(argv) {
  const w = world();
  logCall('tuya-cloudcutter.sh', argv);
  const cc = w.cloudcutter ?? {};
  const arg0 = process.env.FAKE_ARG0 || './tuya-cloudcutter.sh';
  const outcome = cc.outcome ?? 'success';
  const crlf = cc.crlf !== false;
  const startedAt = Date.now();
  // the script's own steps; scans, joins and the plug follow the world's timeScale
  let planned = 0; // with delayMs: where the run should be by the end of this step
  const stepMs = (real) => {
    if (cc.delayMs === undefined) return scaled(w, real);
    planned += (real * cc.delayMs) / SUCCESS_REAL;
    // Behind that (scans, the plug's AP-mode dance, processes starting): this step catches up, so a run takes
    // delayMs in all, as a benchmark that sets it means.
    return Math.max(0, planned - (Date.now() - startedAt));
  };
  const step = (real) => sleep(stepMs(real));

  const say = (line = '') => out(line + '\n'); // lines printed by the script itself (host side)
  const dock = (line = '') => out(line + (crlf ? '\r\n' : '\n')); // lines printed inside `docker run -ti`
  let trap = null; // tuya-cloudcutter.sh:143: `trap "nmcli device set IFACE managed yes" EXIT`
  const runTrap = () => { const t = trap; trap = null; t?.(); };
  const finish = async (code) => { runTrap(); return exit(code); };
  const fail = async (lines, code = 1) => { for (const l of lines) say(l); return finish(code); };
  const forever = async () => { for (;;) await sleep(60_000); };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => {
    runTrap();
    updateState(w, (st) => { st.endedBy = sig; }); // how it was stopped, for tests
    dieBy(sig);
  });

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
    say(L.waitForDevice);
    say(RULE); say();
    err(`${arg0}: line 144: run_in_docker: command not found\n`);
    return fail(M.ota);
  }

  // ---- common.sh: the adapter (the first wifi line of `nmcli device status`) ----
  const nm = w.nmcli; // null: no nmcli on this machine
  if (!nm) err('common.sh: line 5: nmcli: command not found\n');
  const firstWifi = outcome === 'adapter' || !nm ? ''
    : sortedDevices(w, readState(w), Date.now()).find((d) => d.TYPE === 'wifi')?.DEVICE ?? '';
  const adapter = o.wifiAdapter || firstWifi;
  if (!adapter || outcome === 'adapter') {
    say(M.adapter[0]);
    say(`See '${arg0} -h' for more information.`);
    return exit(1);
  }
  const known = nm ? wifiAdapters(w).find((a) => a.iface === adapter) : undefined;
  let supportsAp = '';
  if (!nm) err('common.sh: line 17: nmcli: command not found\n');
  else if (known) supportsAp = known.apMode === false ? 'no' : 'yes';
  else err(`Error: Device '${adapter}' not found.\n`);
  if (supportsAp !== 'yes') {
    say(L.apWarning + supportsAp);
    say("AP support is manditory for tuya-cloudcutter to work.  If this is blank or 'no' your adapter doesn't support this feature.");
    if (process.stdin.isTTY) err(L.apWarningPrompt);
    await readInput();
  }

  // ---- common.sh: docker build ----
  say(L.buildingImage);
  if (outcome === 'docker' || !w.docker) {
    await step(STEPS.buildCached);
    // (the world's docker.daemon is not consulted: it defaults to false for the ESPHome checks)
    err(w.docker ? 'ERROR: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n' : 'common.sh: line 122: docker: command not found\n');
    return fail(M.docker);
  }
  const built = (readState(w).images ?? []).includes('cloudcutter:latest');
  err('#0 building with "default" instance using docker driver\n\n#1 [internal] load build definition from Dockerfile\n#1 transferring dockerfile: 620B done\n#1 DONE 0.0s\n');
  if (built) {
    await step(STEPS.buildCached);
    err('#5 [base 1/2] FROM docker.io/library/python:3.9.18-slim-bullseye\n#5 CACHED\n');
  } else {
    err('#5 [base 1/2] FROM docker.io/library/python:3.9.18-slim-bullseye\n#6 [base 2/2] RUN apt-get -qq update && ' +
      'apt-get install -qy --no-install-recommends git hostapd rfkill dnsmasq build-essential libssl-dev iproute2 ' +
      'mosquitto iw\n');
    await step(STEPS.buildFirst / 2);
    err('#7 [python-deps 1/3] RUN pip install --upgrade pipenv\n' +
      '#9 [python-deps 3/3] RUN cd /src && PIPENV_VENV_IN_PROJECT=1 pipenv install --deploy\n');
    await step(STEPS.buildFirst / 2);
    updateState(w, (st) => { st.images = [...new Set([...(st.images ?? []), 'cloudcutter:latest'])]; });
  }
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

  // ---- common_run.sh: the profile (the first `docker run -ti`) ----
  await step(STEPS.dockerRun);
  if (cc.requireTty !== false && !process.stdin.isTTY) {
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
  const ask = async (question) => {
    if (process.stdin.isTTY) err(question); // `read -p` shows its prompt only on a terminal
    const reply = await readInput();
    say(); // the `echo` after `read -n 1`
    updateState(w, (st) => { (st.answers ??= []).push({ question, answer: reply }); }); // what it got, for tests
    return reply;
  };
  const ports = [['udp', 53, 'resolve DNS queries'], ['udp', 67, 'offer DHCP leases'], ['tcp', 80, 'answer HTTP requests'],
    ['tcp', 443, 'answer HTTPS requests'], ['tcp', 1883, 'run MQTT'], ['tcp', 8886, 'run MQTTS']];
  for (const [proto, port, reason] of ports) {
    out(`Checking ${proto.toUpperCase()} port ${port}... `);
    // `ss -lnp -A PROTO "sport = :PORT" | grep -Po "(?<=pid=)(\d+)" | head -n1`: UDP rows in ss's order
    const busy = (readState(w).busy ?? []).find((b) => b.proto === proto && b.port === port);
    if (!busy) { say('Available.'); continue; }
    say(`Occupied by ${busy.process} with PID ${busy.pid}.`);
    say(`Port ${port} is needed to ${reason}`);
    const reply = await ask(portQuestion(busy.process));
    if (/^[Ss]$/.test(reply)) { say('Skipping...'); continue; }
    if (!/^[Yy]$/.test(reply)) return fail(M.portBusy);
    const unit = busy.unit && !busy.unit.startsWith('user') ? busy.unit : '';
    say(unit ? `Attempting to stop ${unit}` : `Attempting to terminate ${busy.process}`);
    updateState(w, (st) => {
      st.busy = (st.busy ?? []).filter((b) => b.pid !== busy.pid);
      st.stopped = [...(st.stopped ?? []), unit || `${busy.process} (pid ${busy.pid})`];
    });
    await step(SLEEP_1);
  }
  // A question of a newer cloudcutter (or one for another chip) that flash.ts does not know: asked the same way.
  if (cc.question) await ask(cc.question);
  const host = w.host ?? {};
  if (host.firewalld) {
    say('Attempting to stop firewalld.service');
    say('When done, enable with: sudo systemctl start firewalld.service');
    updateState(w, (st) => { st.stopped = [...(st.stopped ?? []), 'firewalld.service']; });
  }
  if (host.ufw === 'active') {
    say('Firewall stopped and disabled on system startup');
    say('When done, enable with: sudo ufw enable');
    updateState(w, (st) => { st.stopped = [...(st.stopped ?? []), 'ufw']; });
  }
  if (host.blacklistRtl8192cu) {
    for (const l of L.blacklist) say(l);
    if (/^[Yy]$/.test(await ask(L.blacklistQuestion)))
      updateState(w, (st) => { st.stopped = [...(st.stopped ?? []), 'blacklist-rtl8192cu.conf']; });
  }
  if (host.apparmor) {
    say(L.apparmor[0]);
    say(L.apparmor[1]);
    if (/^[Yy]$/.test(await ask(L.apparmorQuestion))) {
      say(L.apparmorOff);
      updateState(w, (st) => { st.stopped = [...(st.stopped ?? []), 'apparmor']; });
    }
  }
  say(L.safetyDone);
  say();

  // ---- common_run.sh: validate-firmware-file ----
  await step(STEPS.dockerRun);
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

  // ---- the plug: the world's sim, or (no sim) one whose AP comes up whenever the script looks ----
  const sim = w.simUrl ? await simState(w) : null;
  if (w.simUrl && !sim) {
    err(`fake tuya-cloudcutter.sh: the sim at ${w.simUrl} does not answer\n`);
    return exit(99);
  }
  const stockAp = o.overrideSsid || cc.apSsid || 'SmartLife-1A2B';
  const fakePlugAp = (ssid) => updateState(w, (st) => {
    const now = Date.now();
    for (const a of st.air ?? []) if (a.host === 'fake-plug' && a.to == null) a.to = now;
    if (!ssid) return;
    (st.air ??= []).push({ ssid, security: '', signal: 66, bssid: 'D8:1F:12:3A:4B:5D', gateway: '192.168.175.1',
      address: '192.168.175.100/24', from: now, to: null, host: 'fake-plug' });
  });
  const scanLine = L.scanning + (o.overrideSsid ? ` ${o.overrideSsid}` : '');
  let apMatched = '';
  let apEnding = '';

  /** `nmcli -t -f SSID,SECURITY dev wifi list --rescan yes ifname ADAPTER` (common.sh:89): the open APs it lists. */
  async function listOpenAps() {
    if (!known) {
      err(`Error: Device '${adapter}' not found.\n`);
      return [];
    }
    let waitUntil = Date.now();
    updateState(w, (st) => {
      const t0 = Date.now();
      if (!available(st, dev(st, adapter), t0) || lastScanEnd(w, st, adapter, t0) >= t0) return;
      requestScan(w, st, adapter, t0);
      const end = nextScanEnd(w, st, adapter, t0, t0, t0 + scaled(w, NM.listTimeout));
      waitUntil = Math.min(end ?? Infinity, t0 + scaled(w, NM.listTimeout));
    });
    if (waitUntil > Date.now()) await sleep(waitUntil - Date.now());
    const st = readState(w);
    const ctx = airContext(w, st, await simState(w));
    return bss(w, st, ctx, adapter, Math.max(Date.now(), waitUntil)).filter((n) => !n.security);
  }

  /** `nmcli dev wifi connect AP ifname ADAPTER name AP` (common.sh:93); returns the gateway it got. */
  async function nmConnect(ap) {
    if (outcome === 'ap') {
      await sleep(scaled(w, NM.connect));
      rememberConnection(w, ap.ssid, adapter);
      err('Error: Connection activation failed: IP configuration could not be reserved ' +
        '(no available address, timeout, etc.).\n');
      err(`Hint: use 'journalctl -xe NM_CONNECTION=${uuid()} + NM_DEVICE=${adapter}' to get more details.\n`);
      return '';
    }
    const st0 = readState(w);
    const onAir = airAt(airContext(w, st0, await simState(w)), Date.now(), adapter).some((n) => n.ssid === ap.ssid);
    await sleep(scaled(w, onAir ? NM.connect : NM.connectFail));
    const id = rememberConnection(w, ap.ssid, adapter, ap);
    if (!onAir) {
      err('Error: Connection activation failed: The Wi-Fi network could not be found.\n');
      return '';
    }
    updateState(w, (st) => activate(w, st, adapter, st.connections.find((c) => c.name === ap.ssid), Date.now()));
    say(`Device '${adapter}' successfully activated with '${id}'.`);
    return ap.gateway ?? '';
  }

  /** common.sh wifi_connect: radio off/on, scan (a dot per scan, no timeout), connect; 5 tries. */
  async function wifiConnect() {
    let first = true;
    for (let i = 1; i <= 5; i++) {
      apMatched = '';
      await step(SLEEP_1);
      updateState(w, (st) => {
        if (known) setManaged(w, st, adapter, true, Date.now());
        setRadio(w, st, false, Date.now());
      });
      await step(SLEEP_1);
      updateState(w, (st) => setRadio(w, st, true, Date.now()));
      let ap;
      while (!ap) {
        if (first) { say(scanLine); first = false; } else out('.');
        const re = new RegExp(`^.*${apEnding || (o.overrideSsid ? escapeRe(o.overrideSsid) : '-[A-F0-9]{4}')}$`);
        const aps = await listOpenAps();
        ap = outcome === 'no-ap' ? undefined : aps.find((n) => re.test(n.ssid));
        // nmcli, grep and awk take their time too (at least 20 ms here, so a fast world does not spin)
        if (!ap) await sleep(Math.max(20, scaled(w, STEPS.dot)));
      }
      apMatched = ap.ssid;
      say(`\n${L.found}"${ap.ssid}", trying to connect...`);
      const gateway = await nmConnect(ap);
      if (TUYA_GATEWAYS.includes(gateway)) {
        apEnding = ap.ssid.slice(-5);
        say(L.connected);
        return true;
      }
      if (gateway) say(`Expected AP gateway = 192.168.175.1/192.168.176.1/192.168.43.1 but got ${gateway}`);
      if (i === 5) { say(M.ap[0]); return false; }
      await step(SLEEP_1);
    }
    return false;
  }

  // ---- common_run.sh: first AP (stock firmware) ----
  say(); say(RULE);
  say(L.placeInApMode);
  say('Power cycling off/on - 3 times and wait for the device to fast-blink, then repeat 3 more times.  Some devices need 4 or 5 times on each side of the pause');
  say('Long press the power/reset button on the device until it starts fast-blinking, then release, and then hold the power/reset button again until the device starts slow-blinking.');
  say('See https://support.tuya.com/en/help/_detail/K9hut3w10nby8 for more information.');
  say(RULE); say();
  helper(say, cwd, 'pre-wifi-exploit');
  if (!sim && outcome !== 'no-ap') fakePlugAp(stockAp);
  if (!(await wifiConnect())) return fail([M.ap[1]]);

  say('Waiting 1 sec to allow device to set itself up...');
  await step(SLEEP_1);
  say(L.exploitStart);
  await step(STEPS.dockerRun + STEPS.exploit);
  const crash = missingKeys(profile, [['firmware'], ['firmware', 'chip'], ['data']]);
  if (crash) {
    for (const l of traceback(`KeyError: '${crash}'`, 'exploit')) dock(l);
    return fail(M.exploitCrashed);
  }
  const authKey = randomAscii(16);
  const devUuid = randomAscii(12);
  const crash2 = missingKeys(profile, [['name'], ['sub_name']]);
  if (crash2) {
    dock(`Using AuthKey: ${authKey}`);
    dock(`Using UUID: ${devUuid}`);
    for (const l of traceback(`KeyError: '${crash2}'`, 'exploit')) dock(l);
    return fail(M.exploitCrashed);
  }
  // the exploit freezes the plug: its AP goes away (INSTRUCTIONS.md "The exploit freezes the light")
  if (sim) await simPost(w, 'exploit', { ok: outcome !== 'exploit' });
  else fakePlugAp(null);
  if (known) updateState(w, (st) => deactivate(w, st, adapter, Date.now()));
  const configPath = `/work/configured-devices/${devUuid}.deviceconfig`;
  fs.mkdirSync(path.join(cwd, 'configured-devices'), { recursive: true });
  fs.writeFileSync(path.join(cwd, 'configured-devices', `${devUuid}.deviceconfig`), JSON.stringify({
    uuid: devUuid, auth_key: authKey, chip_family: String(profile.firmware.chip).toUpperCase(),
    profile: `${profile.name} / ${profile.sub_name}`, device: combined.slug,
  }, null, 4));
  // OUTPUT=$(run_in_docker ...); echo "${OUTPUT}": the container's lines come at its end
  dock(`Using AuthKey: ${authKey}`);
  dock(`Using UUID: ${devUuid}`);
  dock('Exploit run, saved device config too!');
  dock(`output=${configPath}`);
  say(`Saved device config in ${configPath}`);

  // ---- second AP (exploited: "A-XXXX"), after the user power-cycles it into AP mode again ----
  say(); say(RULE);
  say(L.powerCycle);
  say('Power cycling off/on - 3 times and wait for the device to fast-blink, then repeat 3 more times.  Some devices need 4 or 5 times on each side of the pause');
  say('Long press the power/reset button on the device until it starts fast-blinking, then releasing, and then holding the power/reset button again until the device starts slow-blinking.');
  say('See https://support.tuya.com/en/help/_detail/K9hut3w10nby8 for more information.');
  say(RULE); say();
  if (!sim) {
    const ending = stockAp.slice(-5);
    const next = outcome === 'exploit' ? stockAp : `A${ending.startsWith('-') ? '' : '-'}${ending}`;
    setTimeout(() => fakePlugAp(next), scaled(w, 4000));
  }
  await step(SLEEP_5);
  helper(say, cwd, 'pre-wifi-config');
  if (!(await wifiConnect())) return fail([M.ap[1]]);
  if (!apMatched.startsWith('A-') && !o.a) {
    say(RULE);
    say(M.exploit[0]);
    say(RULE);
    return exit(1);
  }
  say(L.joiningFlashAp);
  await step(SLEEP_5);
  await step(STEPS.dockerRun);
  if (sim) await simPost(w, 'configure-wifi', { ssid: 'cloudcutterflash' });
  else fakePlugAp(null);
  if (known) updateState(w, (st) => deactivate(w, st, adapter, Date.now()));
  dock("Configured device to connect to 'cloudcutterflash'");

  // ---- tuya-cloudcutter.sh: flash ----
  say(L.flashing); say(); say(RULE);
  say(L.waitForDevice);
  say(RULE); say();
  if (known) updateState(w, (st) => setManaged(w, st, adapter, false, Date.now()));
  trap = () => updateState(w, (st) => {
    const now = Date.now();
    for (const a of st.air ?? []) if (a.host === adapter && a.to == null) a.to = now; // hostapd goes with the container
    if (known) setManaged(w, st, adapter, true, now);
  });
  await step(STEPS.setupAp);
  dock(`Using WLAN adapter: ${adapter}`);
  dock('Unable to get channel from wlan info. Using 6 as fallback.');
  const hwaddr = known?.hwaddr ?? '00:c0:ca:b1:7e:42';
  let hosting = false;
  if (known && known.apMode !== false) {
    dock('Configuration file: /dev/stdin');
    dock(`Using interface ${adapter} with hwaddr ${hwaddr.toLowerCase()} and ssid "cloudcutterflash"`);
    dock(`${adapter}: interface state UNINITIALIZED->ENABLED`);
    dock(`${adapter}: AP-ENABLED`);
    updateState(w, (st) => (st.air ??= []).push({ ssid: 'cloudcutterflash', security: 'WPA2', signal: 90, bssid: hwaddr,
      gateway: '10.204.0.1', address: '10.204.0.11/24', from: Date.now(), to: null, host: adapter }));
    hosting = true;
  } else {
    // hostapd -B on an adapter without AP mode: it fails, setup_apmode.sh goes on (no `set -e`)
    dock('Configuration file: /dev/stdin');
    dock('nl80211: Could not configure driver mode');
    dock(`nl80211: deinit ifname=${adapter} disabled_11b_rates=0`);
    dock('nl80211 driver initialization failed.');
    dock(`${adapter}: interface state UNINITIALIZED->DISABLED`);
    dock(`${adapter}: AP-DISABLED`);
    dock(`${adapter}: CTRL-EVENT-TERMINATING`);
    dock(`hostapd_free_hapd_data: Interface ${adapter} wasn't started`);
  }
  dock(L.stuckHint);
  if (!/^\d+$/.test(o.flashTimeout)) {
    // `-t` takes no argument in the real optstring: FLASH_TIMEOUT is '' and argparse refuses it
    dock('usage: cloudcutter update_firmware [-h] [--ip IP]');
    dock('                                   profile schema config firmware_dir');
    dock('                                   firmware flash_timeout verbose_output');
    dock(`cloudcutter update_firmware: error: argument flash_timeout: invalid int value: '${o.flashTimeout}'`);
    return fail(M.ota);
  }
  if (!hosting) return forever(); // no 'cloudcutterflash': the plug never comes, the server waits forever
  await step(STEPS.joinFlashAp);
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
    return forever();
  }
  await step(STEPS.endpoints);
  dock('Processing endpoint tuya.device.dynamic.config.get');
  dock('Processing endpoint tuya.device.upgrade.get');
  dock(`Processing endpoint /files/${firmware}`);
  await step(STEPS.download);
  const size = fs.statSync(path.join(cwd, 'custom-firmware', firmware)).size;
  // the plug has the whole file (tornado's on_finish logs it): it writes it and reboots into the new firmware
  let mac = (cc.mac ?? 'd8:1f:12:3a:4b:5c').toLowerCase();
  if (sim) {
    try {
      const j = await simPost(w, 'flash-kickstart', { chip: chipChoice, firmware });
      const hid = typeof j.tuyaMac === 'string' ? j.tuyaMac : typeof j.mac === 'string' ? j.mac : '';
      // handlers.py:32-37: from the `hid` of the plug's requests
      if (hid) mac = hid.replace(/[^0-9a-fA-F]/g, '').toLowerCase().match(/../g).join(':');
    } catch (e) {
      err(`fake tuya-cloudcutter.sh: ${e?.message ?? e}\n`);
      return finish(99);
    }
  }
  dock(`${L.sendComplete}${firmware} send complete, request range: bytes=0-${size - 1}/${size}`);
  const steps = [4, 13, 22, 31, 40, 49, 58, 67, 76, 85, 94, 100];
  for (const p of steps) {
    if (cc.hangAfterSend && p >= 95) return forever(); // upstream #816: MQTT never reports ≥ 95 %: no exit
    await step(STEPS.progress / steps.length);
    dock(L.progress + `${p}%`);
  }
  dock(`${L.nearlyComplete}  Waiting ${o.flashTimeout} seconds to ensure flashing completes.`);
  await step(Number(o.flashTimeout) * 1000);
  dock(L.complete);
  dock(L.pleaseWait);
  dock(L.mac + mac);
  helper(say, cwd, 'post-flash');
  // With delayMs a successful run takes at least that long, whatever its waits (benchmarks rely on it).
  if (cc.delayMs !== undefined) await sleep(Math.max(0, cc.delayMs - (Date.now() - startedAt)));
  return finish(0);
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function helper(say, cwd, name) {
  if (fs.existsSync(path.join(cwd, 'scripts', `${name}.sh`))) say(`Running helper script '${name}'`);
}

/** `nmcli dev wifi connect AP ifname IFACE name AP` leaves a saved connection named AP behind. */
function rememberConnection(w, name, device, ap) {
  let id = uuid();
  updateState(w, (s) => {
    s.connections ??= [];
    const old = s.connections.find((c) => c.name === name);
    if (old) id = old.uuid;
    else s.connections.push({ name, uuid: id, type: 'wifi', device: '' });
    const c = s.connections.find((x) => x.name === name);
    Object.assign(c, { ssid: name, ...(ap ? { device, gateway: ap.gateway, address: ap.address } : {}) });
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
