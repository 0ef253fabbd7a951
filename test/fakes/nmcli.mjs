// Fake `nmcli` (NetworkManager 1.4x): the device, wifi, connection, radio and general commands
// flash.ts and cloudcutter use, with nmcli's output modes (tabular, -t terse, -g get-values,
// multiline `device show`), prefix matching of objects/commands, messages and exit codes
// (src/nmcli/*.c: 2 = bad input, 10 = not found, 6 = disconnect failed). Wi-Fi devices, their scan
// lists and what is on the air follow test/fakes/nm.mjs (the plug's APs come from the sim's /_sim/state).
import { world, out, err, logCall, readState, updateState, uuid, exit, sleep, scaled, simState } from './common.mjs';
import {
  REAL, wifiAdapters, dev, available, deviceState, airAt, airContext, bss, lastScanEnd, requestScan, nextScanEnd,
  deactivate, activate, setManaged, setRadio, settle, sortedDevices,
} from './nm.mjs';

const ML_VALUE_INDENT = 40;

function fail(code, msg) {
  err(msg + '\n');
  return exit(code);
}

/** nmcli's matches(): a non-empty prefix of the full command name; first in table order wins. */
function pick(arg, table) {
  if (arg === undefined) return undefined;
  return table.find((c) => arg.length > 0 && c.startsWith(arg)) ?? null;
}

function escTerse(v, escape) {
  return escape ? String(v).replace(/\\/g, '\\\\').replace(/:/g, '\\:') : String(v);
}

/** Prints rows like nmcli's tabular / terse / get-values output. */
function printTable(opts, rows, allFields, defaultFields) {
  let fields = defaultFields;
  const sel = opts.getValues ?? opts.fields;
  if (sel && sel !== 'common') {
    fields = sel === 'all' ? allFields : sel.split(',').map((f) => f.trim().toUpperCase());
    for (const f of fields)
      if (!allFields.includes(f)) return fail(2, `Error: invalid field '${f.toLowerCase()}'; allowed fields: ${allFields.join(',')}`);
  }
  if (opts.terse || opts.getValues) {
    // terse output leaves an unset value empty (the tabular form shows "--")
    const value = (r, f) => escTerse(r[f] === '--' ? '' : r[f] ?? '', opts.escape);
    for (const r of rows) out(fields.map((f) => value(r, f)).join(':') + '\n');
    return exit(0);
  }
  const width = fields.map((f) => Math.max(f.length, ...rows.map((r) => String(r[f] ?? '--').length)) + 2);
  const line = (vals) => vals.map((v, i) => String(v).padEnd(width[i])).join('') + '\n';
  out(line(fields));
  for (const r of rows) out(line(fields.map((f) => r[f] ?? '--')));
  return exit(0);
}

/** Prints `name: value` sections like `nmcli device show`. */
function printMultiline(opts, entries) {
  for (const [name, value] of entries) {
    const v = value === '' || value === undefined ? '--' : String(value);
    if (opts.getValues) out(escTerse(v, opts.escape) + '\n');
    else if (opts.terse) out(`${name}:${escTerse(v, opts.escape)}\n`);
    else out(`${name}:`.padEnd(ML_VALUE_INDENT) + v + '\n');
  }
}

function showDevice(w, s, d) {
  const entries = [
    ['GENERAL.DEVICE', d.DEVICE],
    ['GENERAL.TYPE', d.TYPE],
    ['GENERAL.HWADDR', d.HWADDR],
    ['GENERAL.MTU', d.TYPE === 'loopback' ? '65536' : '1500'],
    ['GENERAL.STATE', `${d.num} (${d.STATE})`],
    ['GENERAL.CONNECTION', d.CONNECTION],
  ];
  if (d.STATE.startsWith('connected')) {
    const conn = (s.connections ?? []).find((c) => c.name === d.CONNECTION);
    const ip = d.TYPE === 'loopback' ? '127.0.0.1/8' : conn?.address ?? '192.168.1.20/24';
    entries.push(['IP4.ADDRESS[1]', ip], ['IP4.GATEWAY', d.TYPE === 'loopback' ? '' : conn?.gateway ?? '192.168.1.1']);
  } else entries.push(['IP4.GATEWAY', '']);
  if (d.TYPE === 'wifi') {
    const ap = wifiAdapters(w).find((a) => a.iface === d.DEVICE)?.apMode === false ? 'no' : 'yes';
    for (const [k, v] of [['WEP', 'yes'], ['WPA', 'yes'], ['WPA2', 'yes'], ['TKIP', 'yes'], ['CCMP', 'yes'], ['AP', ap], ['ADHOC', 'yes'],
      ['2GHZ', 'yes'], ['5GHZ', 'no'], ['6GHZ', 'no'], ['MESH', 'no'], ['IBSS-RSN', 'yes']])
      entries.push([`WIFI-PROPERTIES.${k}`, v]);
  }
  return entries;
}

function selectEntries(entries, sel) {
  if (!sel || sel === 'all' || sel === 'common') return { entries };
  const want = sel.split(',').map((f) => f.trim().toUpperCase());
  const sections = new Set(entries.map(([n]) => n.split('.')[0]));
  const outE = [];
  for (const f of want) {
    const sec = f.split('.')[0];
    if (!sections.has(sec) && !['GENERAL', 'IP4', 'WIFI-PROPERTIES', 'IP6', 'DHCP4', 'CAPABILITIES', 'CONNECTIONS', 'AP', 'INTERFACE-FLAGS'].includes(sec))
      return { error: `Error: invalid field '${f.toLowerCase()}'; allowed fields: GENERAL,CAPABILITIES,INTERFACE-FLAGS,WIFI-PROPERTIES,AP,WIRED-PROPERTIES,WIMAX-PROPERTIES,NSP,IP4,DHCP4,IP6,DHCP6,BOND,TEAM,BRIDGE,VLAN,BLUETOOTH,CONNECTIONS.` };
    for (const e of entries) {
      const name = e[0].replace(/\[\d+\]$/, '');
      if (f === sec ? e[0].split('.')[0] === sec : name === f) outE.push(e);
    }
  }
  return { entries: outE };
}

export async function main(argv) {
  const w = world();
  logCall('nmcli', argv);
  const opts = { escape: true };
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const a = argv[i].replace(/^--?/, '');
    const [name, inline] = a.split(/=(.*)/s);
    const val = () => (inline !== undefined ? inline : argv[++i]);
    if (name === 't' || name === 'terse') opts.terse = true;
    else if (name === 'p' || name === 'pretty') opts.pretty = true;
    else if (name === 'm' || name === 'mode') opts.mode = val();
    else if (name === 'c' || name === 'color' || name === 'colors') val();
    else if (name === 'f' || name === 'fields') opts.fields = val();
    else if (name === 'g' || name === 'get-values') opts.getValues = val();
    else if (name === 'e' || name === 'escape') opts.escape = val() !== 'no';
    else if (name === 'a' || name === 'ask' || name === 's' || name === 'show-secrets' || name === 'o' || name === 'overview') { /* flags */ }
    else if (name === 'w' || name === 'wait') opts.wait = val();
    else if (name === 'v' || name === 'version') { out('nmcli tool, version 1.42.4\n'); return exit(0); }
    else if (name === 'h' || name === 'help') { out('Usage: nmcli [OPTIONS] OBJECT { COMMAND | help }\n'); return exit(0); }
    else return fail(2, `Error: Option '${argv[i]}' is unknown, try 'nmcli -help'.`);
  }
  const args = argv.slice(i);
  const s = updateState(w, (st) => settle(w, st, Date.now()));
  const obj = pick(args[0], ['general', 'networking', 'radio', 'connection', 'device', 'agent', 'monitor']);
  if (obj === null) return fail(2, `Error: argument '${args[0]}' not understood. Try passing --help instead.`);
  if (obj === undefined) {
    for (const d of sortedDevices(w, s, Date.now()))
      out(`${d.DEVICE}: ${d.STATE}${d.CONNECTION !== '--' ? ` to ${d.CONNECTION}` : ''}\n`);
    return exit(0);
  }
  const rest = args.slice(1);
  if (obj === 'general') {
    const cmd = pick(rest[0], ['status', 'hostname', 'permissions', 'logging', 'reload']) ?? 'status';
    if (cmd !== 'status') return exit(0);
    const all = ['RUNNING', 'VERSION', 'STATE', 'STARTUP', 'CONNECTIVITY', 'NETWORKING', 'WIFI-HW', 'WIFI', 'WWAN-HW', 'WWAN'];
    const wifiOn = s.nm?.radio === false ? 'disabled' : 'enabled';
    const row = { RUNNING: 'running', VERSION: '1.42.4', STATE: 'connected', STARTUP: 'started', CONNECTIVITY: 'full',
      NETWORKING: 'enabled', 'WIFI-HW': 'enabled', WIFI: wifiOn, 'WWAN-HW': 'missing', WWAN: 'enabled' };
    return printTable(opts, [row],
      all, ['STATE', 'CONNECTIVITY', 'WIFI-HW', 'WIFI', 'WWAN-HW', 'WWAN']);
  }
  if (obj === 'networking') {
    if (!rest.length) out('enabled\n');
    return exit(0);
  }
  if (obj === 'radio') {
    const wifiOn = s.nm?.radio === false ? 'disabled' : 'enabled';
    const which = pick(rest[0], ['all', 'wifi', 'wwan']);
    if (rest.length <= 1) {
      if (which === 'wifi') { out(`${wifiOn}\n`); return exit(0); }
      const fields = ['WIFI-HW', 'WIFI', 'WWAN-HW', 'WWAN'];
      const row = { 'WIFI-HW': 'enabled', WIFI: wifiOn, 'WWAN-HW': 'missing', WWAN: 'enabled' };
      return printTable(opts, [row], fields, fields);
    }
    if (which === 'wifi' || which === 'all') {
      const on = ['on', 'yes', 'true'].includes(rest[1]);
      if (!on && !['off', 'no', 'false'].includes(rest[1]))
        return fail(2, `Error: '${rest[1]}': invalid argument. Use 'on' or 'off'.`);
      updateState(w, (st) => setRadio(w, st, on, Date.now()));
    }
    return exit(0);
  }
  if (obj === 'device') return device(w, s, opts, rest);
  if (obj === 'connection') return connection(w, s, opts, rest);
  return fail(2, `Error: '${obj}' is not simulated by the fake nmcli.`);
}

async function device(w, s, opts, rest) {
  const cmd = pick(rest[0], ['checkpoint', 'connect', 'disconnect', 'delete', 'down', 'lldp', 'monitor', 'modify', 'reapply', 'status', 'set', 'show', 'up', 'wifi']);
  if (cmd === null) return fail(2, `Error: argument '${rest[0]}' not understood. Try passing --help instead.`);
  const devs = sortedDevices(w, s, Date.now());
  const find = (name) => devs.find((d) => d.DEVICE === name);
  const isWifi = (name) => wifiAdapters(w).some((a) => a.iface === name);
  const args = rest.slice(1);
  if (cmd === undefined || cmd === 'status') {
    return printTable(opts, devs, ['DEVICE', 'TYPE', 'STATE', 'IP4-CONNECTIVITY', 'IP6-CONNECTIVITY', 'DBUS-PATH', 'CONNECTION', 'CON-UUID', 'CON-PATH'], ['DEVICE', 'TYPE', 'STATE', 'CONNECTION']);
  }
  if (cmd === 'show') {
    const targets = args.length ? args : devs.map((d) => d.DEVICE);
    for (const [n, name] of targets.entries()) {
      const d = find(name);
      if (!d) return fail(10, `Error: Device '${name}' not found.`);
      const sel = selectEntries(showDevice(w, s, d), opts.getValues ?? opts.fields);
      if (sel.error) return fail(2, sel.error);
      if (n > 0 && !opts.terse && !opts.getValues) out('\n');
      printMultiline(opts, sel.entries);
    }
    return exit(0);
  }
  if (cmd === 'set') {
    const name = args[0] === 'ifname' ? args[1] : args[0];
    if (!name) return fail(2, 'Error: No interface specified.');
    if (!find(name)) return fail(10, `Error: Device '${name}' not found.`);
    const kv = args.slice(args[0] === 'ifname' ? 2 : 1);
    for (let k = 0; k < kv.length; k += 2) {
      if (kv[k] !== 'managed') continue;
      const v = kv[k + 1];
      if (!['yes', 'no', 'up', 'down', 'reset', 'true', 'false', 'on', 'off'].includes(v))
        return fail(2, `Error: 'managed': '${v}' is not valid, use 'yes/no/up/down/reset'.`);
      const on = !['no', 'down', 'false', 'off'].includes(v);
      if (isWifi(name)) updateState(w, (st) => setManaged(w, st, name, on, Date.now()));
    }
    return exit(0);
  }
  if (cmd === 'disconnect' || cmd === 'down') {
    for (const name of args) {
      const d = find(name);
      if (!d) return fail(10, `Error: Device '${name}' not found.`);
      if (d.CONNECTION === '--' || d.external) {
        err(`Error: Device '${name}' (/org/freedesktop/NetworkManager/Devices/3) disconnecting failed: This device is not active\n`);
        return fail(6, 'Error: not all devices disconnected.');
      }
      updateState(w, (st) => {
        if (isWifi(name)) {
          deactivate(w, st, name, Date.now());
          dev(st, name).autoconnectAt = null; // a device disconnected by hand does not autoconnect
        } else delete st.active[name];
      });
      out(`Device '${name}' successfully disconnected.\n`);
    }
    return exit(0);
  }
  if (cmd === 'connect' || cmd === 'up') {
    const d = find(args[0]);
    if (!d) return fail(10, `Error: Device '${args[0]}' not found.`);
    out(`Device '${d.DEVICE}' successfully activated with '${uuid()}'.\n`);
    return exit(0);
  }
  if (cmd === 'wifi') return wifi(w, s, opts, args, devs);
  return fail(2, `Error: 'device ${cmd}' is not simulated by the fake nmcli.`);
}

function wifiRows(w, s, ctx, iface, t) {
  const d = dev(s, iface);
  const aps = bss(w, s, ctx, iface, t).sort((x, y) => (y.signal ?? 70) - (x.signal ?? 70));
  return aps.map((n, idx) => {
    const sig = n.signal ?? 70;
    return {
      'IN-USE': d.active && d.activeSsid === n.ssid ? '*' : '',
      BSSID: n.bssid ?? `AA:BB:CC:DD:EE:${String(10 + idx).padStart(2, '0')}`,
      SSID: n.ssid, MODE: 'Infra', CHAN: String(n.chan ?? 6), RATE: '130 Mbit/s', SIGNAL: String(sig),
      BARS: sig > 75 ? '▂▄▆█' : sig > 50 ? '▂▄▆_' : sig > 25 ? '▂▄__' : '▂___', SECURITY: n.security ?? '',
      DEVICE: iface,
    };
  });
}

async function wifi(w, s, opts, rest, devs) {
  const cmd = pick(rest[0], ['list', 'connect', 'hotspot', 'rescan', 'show-password']);
  if (cmd === null) return fail(2, `Error: argument '${rest[0]}' not understood. Try passing --help instead.`);
  const args = rest.slice(1);
  const kv = {};
  const positional = [];
  for (let k = 0; k < args.length; k++) {
    const named = ['ifname', 'bssid', 'password', 'name', 'hidden', 'private', 'wep-key-type', '--rescan'];
    if (named.includes(args[k])) kv[args[k].replace(/^--/, '')] = args[++k];
    else positional.push(args[k]);
  }
  const wifiDevs = devs.filter((d) => d.TYPE === 'wifi');
  if (cmd === undefined || cmd === 'list') return wifiList(w, opts, kv, devs, wifiDevs);
  // connect and rescan (devices.c find_wifi_device_by_iface): an unknown ifname "is not a Wi-Fi device", exit 1
  if (kv.ifname !== undefined && !wifiDevs.some((d) => d.DEVICE === kv.ifname))
    return fail(1, `Error: Device '${kv.ifname}' is not a Wi-Fi device.`);
  if (!wifiDevs.length) return fail(1, 'Error: No Wi-Fi device found.');
  if (cmd === 'rescan') {
    const iface = kv.ifname ?? wifiDevs[0].DEVICE;
    let refused = false;
    updateState(w, (st) => {
      const now = Date.now();
      if (!available(st, dev(st, iface), now)) refused = true;
      else requestScan(w, st, iface, now);
    });
    if (refused) return fail(1, 'Error: Scanning not allowed while unavailable.');
    return exit(0);
  }
  if (cmd === 'connect') return wifiConnect(w, opts, kv, positional, wifiDevs);
  return fail(2, `Error: 'device wifi ${cmd}' is not simulated by the fake nmcli.`);
}

/** `device wifi list [ifname IF] [--rescan yes|no|auto]` (devices.c do_device_wifi_list). */
async function wifiList(w, opts, kv, devs, wifiDevs) {
  if (kv.ifname !== undefined) {
    const d = devs.find((x) => x.DEVICE === kv.ifname);
    if (!d) return fail(10, `Error: Device '${kv.ifname}' not found.`);
    if (d.TYPE !== 'wifi') return fail(10, `Error: Device '${kv.ifname}' is not a Wi-Fi device.`);
  }
  const rescan = kv.rescan ?? 'auto';
  if (!['auto', 'no', 'yes'].includes(rescan))
    return fail(2, `Error: invalid rescan argument: '${rescan}' not among [auto, no, yes]`);
  const ifaces = kv.ifname ? [kv.ifname] : wifiDevs.map((d) => d.DEVICE);
  const t0 = Date.now();
  const cutoff = rescan === 'yes' ? t0 : rescan === 'no' ? -Infinity : t0 - scaled(w, REAL.rescanAuto);
  // each device whose last scan is older than the cutoff asks for one and waits for it (at most 15 s)
  let waitUntil = t0;
  updateState(w, (st) => {
    for (const iface of ifaces) {
      if (!available(st, dev(st, iface), t0) || lastScanEnd(w, st, iface, t0) >= cutoff) continue;
      requestScan(w, st, iface, t0);
      const end = nextScanEnd(w, st, iface, t0, cutoff, t0 + scaled(w, REAL.listTimeout));
      waitUntil = Math.max(waitUntil, Math.min(end ?? Infinity, t0 + scaled(w, REAL.listTimeout)));
    }
  });
  if (waitUntil > Date.now()) await sleep(waitUntil - Date.now());
  const now = Math.max(Date.now(), waitUntil);
  const s = readState(w);
  const ctx = airContext(w, s, await simState(w));
  const rows = ifaces.flatMap((iface) => wifiRows(w, s, ctx, iface, now));
  const all = ['NAME', 'SSID', 'SSID-HEX', 'BSSID', 'MODE', 'CHAN', 'FREQ', 'RATE', 'SIGNAL', 'BARS', 'SECURITY',
    'WPA-FLAGS', 'RSN-FLAGS', 'DEVICE', 'ACTIVE', 'IN-USE', 'DBUS-PATH'];
  return printTable(opts, rows, all, ['IN-USE', 'BSSID', 'SSID', 'MODE', 'CHAN', 'RATE', 'SIGNAL', 'BARS', 'SECURITY']);
}

/**
 * `device wifi connect SSID [ifname IF] [name N] [password P]` (devices.c do_device_wifi_connect): no
 * rescan; the SSID must be in the device's current list, else "No network with SSID" (exit 10). A
 * listed AP that is gone fails after a while like NetworkManager's activation (exit 4).
 */
async function wifiConnect(w, opts, kv, positional, wifiDevs) {
  const ssid = positional[0];
  if (!ssid) return fail(2, 'Error: SSID or BSSID are missing.');
  if (ssid.length > 32 && !/^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$/.test(ssid))
    return fail(2, `Error: Parameter '${ssid}' is neither SSID nor BSSID.`);
  if (w.nmcli.connectFails) return fail(10, `Error: No network with SSID '${ssid}' found.`);
  const t0 = Date.now();
  const s0 = readState(w);
  const ctx = airContext(w, s0, await simState(w));
  const order = kv.ifname ? [kv.ifname] : wifiDevs.map((d) => d.DEVICE);
  let iface;
  let ap;
  for (const i of order) {
    ap = bss(w, s0, ctx, i, t0).find((n) => n.ssid === ssid);
    if (ap) { iface = i; break; }
  }
  if (!ap) return fail(10, `Error: No network with SSID '${ssid}' found.`);
  if (ap.security && !kv.password)
    return fail(4, 'Error: Connection activation failed: Secrets were required, but not provided.');
  const waitS = opts.wait !== undefined ? Number(opts.wait) : 90;
  const limit = waitS > 0 ? t0 + scaled(w, waitS * 1000) : Infinity;
  const onAir = () => airAt(ctx, Date.now(), iface).some((n) => n.ssid === ssid);
  const ok = onAir();
  const done = t0 + scaled(w, ok ? REAL.connect : REAL.connectFail);
  if (done > limit) {
    await sleep(limit - Date.now());
    return fail(3, `Error: Timeout expired (${waitS} seconds)`);
  }
  await sleep(done - Date.now());
  const name = kv.name ?? ssid;
  if (!ok) {
    // the device gave up its old connection to try this one
    updateState(w, (st) => { rememberWifi(st, name, ssid, iface, ap); deactivate(w, st, iface, Date.now()); });
    return fail(4, 'Error: Connection activation failed: The Wi-Fi network could not be found.');
  }
  let id;
  let lost = false;
  updateState(w, (st) => {
    if (!available(st, dev(st, iface), Date.now())) { lost = true; return; }
    const conn = rememberWifi(st, name, ssid, iface, ap);
    id = conn.uuid;
    activate(w, st, iface, conn, Date.now());
  });
  if (lost) return fail(4, 'Error: Connection activation failed: The device was removed.');
  out(`Device '${iface}' successfully activated with '${id}'.\n`);
  return exit(0);
}

/** The saved profile `device wifi connect` leaves behind (kept after the connection ends). */
function rememberWifi(st, name, ssid, iface, ap) {
  st.connections ??= [];
  let c = st.connections.find((x) => x.name === name);
  if (!c) {
    c = { name, uuid: uuid(), type: 'wifi', device: iface };
    st.connections.push(c);
  }
  Object.assign(c, { device: iface, ssid, gateway: ap.gateway ?? '192.168.1.1',
    address: ap.address ?? '192.168.1.20/24' });
  return c;
}

async function connection(w, s, opts, rest) {
  const cmd = pick(rest[0], ['show', 'up', 'down', 'add', 'edit', 'delete', 'reload', 'load', 'modify', 'clone', 'import', 'export', 'migrate', 'monitor']);
  if (cmd === null) return fail(2, `Error: argument '${rest[0]}' not understood. Try passing --help instead.`);
  const conns = s.connections ?? [];
  const args = rest.slice(1);
  // selectors: [id | uuid | path | apath] VALUE, several allowed
  const pairs = [];
  for (let k = 0; k < args.length; k++) {
    if (['id', 'uuid', 'path', 'apath'].includes(args[k]) && k + 1 < args.length) { pairs.push([args[k], args[k + 1]]); k++; }
    else if (!args[k].startsWith('-')) pairs.push([null, args[k]]);
  }
  const lookup = ([sel, v]) => conns.find((c) => (sel === 'uuid' ? c.uuid === v : sel === 'id' ? c.name === v : c.name === v || c.uuid === v));
  const deviceOf = (c) => Object.entries(s.active ?? {}).find(([, n]) => n === c.name)?.[0] ??
    Object.entries(s.nm?.devices ?? {}).find(([, d]) => d.active === c.name)?.[0] ?? '';
  if (cmd === undefined || cmd === 'show') {
    if (!pairs.length) {
      const rows = conns.map((c) => ({ NAME: c.name, UUID: c.uuid, TYPE: c.type === 'wifi' ? '802-11-wireless' : c.type === 'ethernet' ? '802-3-ethernet' : c.type, DEVICE: deviceOf(c) || '--' }));
      return printTable(opts, rows, ['NAME', 'UUID', 'TYPE', 'TIMESTAMP', 'TIMESTAMP-REAL', 'AUTOCONNECT', 'AUTOCONNECT-PRIORITY', 'READONLY', 'DBUS-PATH', 'ACTIVE', 'DEVICE', 'STATE', 'ACTIVE-PATH', 'SLAVE', 'FILENAME'], ['NAME', 'UUID', 'TYPE', 'DEVICE']);
    }
    const c = lookup(pairs[0]);
    if (!c) return fail(10, `Error: ${pairs[0][1]} - no such connection profile.`);
    const dev = deviceOf(c);
    const entries = [['connection.id', c.name], ['connection.uuid', c.uuid], ['connection.type', c.type === 'wifi' ? '802-11-wireless' : '802-3-ethernet'], ['connection.interface-name', c.device || '']];
    if (dev) entries.push(['GENERAL.STATE', 'activated'], ['IP4.GATEWAY', c.gateway ?? '192.168.1.1']);
    const sel = selectEntries(entries, opts.getValues ?? opts.fields);
    if (sel.error) return fail(2, sel.error);
    printMultiline(opts, sel.entries);
    return exit(0);
  }
  if (cmd === 'delete') {
    if (!pairs.length) return fail(10, 'Error: No connection specified.');
    const unknown = [];
    for (const p of pairs) {
      const c = lookup(p);
      if (!c) {
        err(`Error: unknown connection '${p[1]}'.\n`);
        unknown.push(p[0] ? `${p[0]} '${p[1]}'` : `'${p[1]}'`);
        continue;
      }
      updateState(w, (st) => {
        st.connections = (st.connections ?? []).filter((x) => x.uuid !== c.uuid);
        for (const [d, n] of Object.entries(st.active ?? {})) if (n === c.name) delete st.active[d];
        for (const [d, x] of Object.entries(st.nm?.devices ?? {}))
          if (x.active === c.name) deactivate(w, st, d, Date.now());
      });
      out(`Connection '${c.name}' (${c.uuid}) successfully deleted.\n`);
    }
    if (unknown.length) return fail(10, `Error: cannot delete unknown connection(s): ${unknown.join(', ')}.`);
    return exit(0);
  }
  if (cmd === 'up' || cmd === 'down') {
    const c = pairs.length ? lookup(pairs[0]) : undefined;
    if (!c) return fail(10, `Error: unknown connection '${pairs[0]?.[1] ?? ''}'.`);
    if (cmd === 'up') {
      if (c.type === 'wifi') {
        // activates the saved profile on a device whose list holds its network
        const now = Date.now();
        const ctx = airContext(w, s, await simState(w));
        const listed = (i) => bss(w, s, ctx, i, now).some((n) => n.ssid === (c.ssid ?? c.name));
        const iface = wifiAdapters(w).map((a) => a.iface).find(listed);
        if (!iface) {
          return fail(4, 'Error: Connection activation failed: No suitable device found for this connection ' +
            '(device lo not available because device is strictly unmanaged).');
        }
        await sleep(scaled(w, REAL.connect));
        updateState(w, (st) => activate(w, st, iface, c, Date.now()));
      } else updateState(w, (st) => { st.active ??= {}; st.active[w.nmcli.ethIface ?? 'eth0'] = c.name; });
      out('Connection successfully activated (D-Bus active path: /org/freedesktop/NetworkManager/ActiveConnection/7)\n');
    } else {
      if (!deviceOf(c)) return fail(10, `Error: '${c.name}' is not an active connection.\nError: no active connection provided.`);
      updateState(w, (st) => {
        for (const [d, n] of Object.entries(st.active ?? {})) if (n === c.name) delete st.active[d];
        for (const [d, x] of Object.entries(st.nm?.devices ?? {}))
          if (x.active === c.name) deactivate(w, st, d, Date.now());
      });
      out(`Connection '${c.name}' successfully deactivated (D-Bus active path: /org/freedesktop/NetworkManager/ActiveConnection/7)\n`);
    }
    return exit(0);
  }
  return fail(2, `Error: 'connection ${cmd}' is not simulated by the fake nmcli.`);
}
