// NetworkManager as the fakes see it: Wi-Fi adapters with their scan lists, managed/unmanaged,
// the radio switch and activations, shared by the fake nmcli and the fake tuya-cloudcutter.sh.
//
// What it follows (NetworkManager main, src/core/devices/wifi/nm-device-wifi.c, src/nmcli/devices.c):
// - a device's access point list is what its scans saw; NM scans by itself only while the device is
//   disconnected (periodic scans 3, 4, 6, 9, … s apart, at most 120 s: SCAN_INTERVAL_SEC_*,
//   _scan_kickoff()), never while connected, and explicit scans are rate limited (1.5 s, 8 s while
//   activated). A scan samples the air when it starts and takes a few seconds.
// - entries age out like wpa_supplicant's BSS table: an AP stays listed while it was seen in one of
//   the last two scans or less than 180 s ago (bss_expiration_scan_count 2, bss_expiration_age 180).
// - an unmanaged or unavailable device (radio off, just switched on) has no APs (remove_all_aps())
//   and refuses scans ("Scanning not allowed while unavailable").
// Times are absolute ms (Date.now()); every real duration is scaled by the world's timeScale.
import { scaled } from './common.mjs';

/** Real durations (ms). */
export const REAL = Object.freeze({
  scan: 3000, // one scan of the 2.4 + 5 GHz channels
  available: 1000, // radio on / managed again -> the supplicant interface is up, device disconnected
  connect: 3000, // associate + DHCP on an open AP
  connectFail: 25000, // activation of an AP that is listed but no longer on the air
  listTimeout: 15000, // nmcli device wifi list: longest wait for a fresh scan (devices.c wifi_list)
  rescanAuto: 30000, // --rescan auto (the default): a list older than this is refreshed first
  rateLimit: 1500,
  rateLimitActivated: 8000,
  bssAge: 180000,
  history: 600000, // how long ago NetworkManager started (the first periodic scans)
});

const PERIODIC_S = [3, 4, 6, 9, 13, 19, 28, 42, 63, 94, 120];

export function wifiAdapters(w) {
  return w.nmcli?.wifi ?? [];
}

/** The device record of a Wi-Fi adapter in the state (created on first use). */
export function dev(s, iface) {
  s.nm ??= { radio: true, devices: {} };
  s.nm.devices[iface] ??= {
    managed: true, active: null, availableAt: 0, clearedAt: 0, periodic: [{ from: 0, to: null }], scans: [],
  };
  return s.nm.devices[iface];
}

export function available(s, d, t) {
  return s.nm?.radio !== false && d.managed && t >= d.availableAt;
}

/** [number, text] as `nmcli device` / GENERAL.STATE print it. */
export function deviceState(s, iface, t) {
  const d = dev(s, iface);
  if (!d.managed) return [10, 'unmanaged'];
  if (!available(s, d, t)) return [20, 'unavailable'];
  if (d.active) return [100, 'connected'];
  return [30, 'disconnected'];
}

/** Every scan (explicit, periodic) that started after the list was last cleared and no later than `until`. */
export function scansOf(w, d, until) {
  const dur = scaled(w, REAL.scan);
  const list = d.scans.filter((x) => x.start >= d.clearedAt && x.start <= until).map((x) => ({ ...x }));
  for (const win of d.periodic) {
    let t = win.from;
    for (let k = 0; t <= until && (win.to == null || t < win.to); k++) {
      if (t >= d.clearedAt) list.push({ start: t, end: t + dur, periodic: true });
      t += scaled(w, PERIODIC_S[Math.min(k, PERIODIC_S.length - 1)] * 1000);
    }
  }
  return list.sort((a, b) => a.end - b.end);
}

/** What is on the air at time t as seen from `iface`: the world's networks, APs hosted here and the plug's. */
export function airAt(ctx, t, iface) {
  const out = new Map();
  for (const n of ctx.static) out.set(n.bssid ?? n.ssid, n);
  for (const a of ctx.air) {
    if (a.host === iface) continue; // an adapter does not scan its own AP
    if (a.from <= t && (a.to == null || t < a.to)) out.set(a.bssid ?? a.ssid, a);
  }
  return [...out.values()];
}

/** The context airAt needs: static networks, APs this machine hosts (state.air), the sim's (its `air`). */
export function airContext(w, s, sim) {
  return { static: w.nmcli?.networks ?? [], air: [...(s.air ?? []), ...(sim?.air ?? [])] };
}

/** The device's access point list at time t (what `nmcli device wifi list` prints without rescanning). */
export function bss(w, s, ctx, iface, t) {
  const d = dev(s, iface);
  if (!available(s, d, t)) return [];
  const done = scansOf(w, d, t).filter((x) => x.end <= t);
  const seen = new Map();
  done.forEach((sc, i) => {
    for (const n of airAt(ctx, sc.start, iface)) seen.set(n.bssid ?? n.ssid, { net: n, lastSeen: sc.end, idx: i });
  });
  const age = scaled(w, REAL.bssAge);
  return [...seen.values()].filter((e) => e.idx >= done.length - 2 || t - e.lastSeen <= age).map((e) => e.net);
}

/** End of the last completed scan, or -Infinity. */
export function lastScanEnd(w, s, iface, t) {
  const done = scansOf(w, dev(s, iface), t).filter((x) => x.end <= t);
  return done.length ? done[done.length - 1].end : -Infinity;
}

/**
 * An explicit scan request (nm_device_wifi_request_scan): returns the scan that will answer it. A scan
 * under way answers it; otherwise one starts after the rate limit. Call inside updateState.
 */
export function requestScan(w, s, iface, now) {
  const d = dev(s, iface);
  const all = scansOf(w, d, now);
  const running = all.find((x) => x.start <= now && x.end > now);
  if (running) return running;
  const lastStart = Math.max(-Infinity, ...all.map((x) => x.start));
  const start = Math.max(now, lastStart + scaled(w, d.active ? REAL.rateLimitActivated : REAL.rateLimit));
  const scan = { start, end: start + scaled(w, REAL.scan) };
  d.scans.push(scan);
  d.scans = d.scans.filter((x) => x.start >= d.clearedAt).slice(-20);
  return scan;
}

/** The first scan ending after `after` (and not before `cutoff`), explicit or periodic; undefined if none. */
export function nextScanEnd(w, s, iface, after, cutoff, horizon) {
  const ends = scansOf(w, dev(s, iface), horizon).map((x) => x.end).filter((e) => e > after && e >= cutoff);
  return ends.length ? Math.min(...ends) : undefined;
}

function closePeriodic(d, now) {
  for (const p of d.periodic) if (p.to == null) p.to = now;
  d.periodic = d.periodic.filter((p) => p.to == null || p.to > d.clearedAt).slice(-10);
}

function clearList(d, now) {
  d.clearedAt = now;
  d.scans = [];
  closePeriodic(d, now);
}

/** The device's connection goes down (it stays managed): periodic scanning starts again. */
export function deactivate(w, s, iface, now) {
  const d = dev(s, iface);
  if (!d.active) return;
  d.active = null;
  d.activeSsid = null;
  if (available(s, d, now)) d.periodic.push({ from: now, to: null });
}

/** The device is now connected to `conn` (a connection record). */
export function activate(w, s, iface, conn, now) {
  const d = dev(s, iface);
  d.active = conn.name;
  d.activeSsid = conn.ssid ?? conn.name;
  d.autoconnectAt = null;
  closePeriodic(d, now);
}

function becomeAvailable(w, s, d, now) {
  if (s.nm.radio === false || !d.managed) return;
  d.availableAt = now + scaled(w, REAL.available);
  d.periodic.push({ from: d.availableAt, to: null });
  // NetworkManager autoconnects the device's saved network once a scan has seen it
  if (d.autoconnect) d.autoconnectAt = d.availableAt + scaled(w, REAL.scan + REAL.connect);
}

/** `nmcli device set IFACE managed yes|no` (what tuya-cloudcutter.sh does around its hostapd run). */
export function setManaged(w, s, iface, managed, now) {
  const d = dev(s, iface);
  if (d.managed === managed) return;
  if (!managed) {
    d.active = null;
    d.activeSsid = null;
    d.managed = false;
    clearList(d, now);
  } else {
    d.managed = true;
    becomeAvailable(w, s, d, now);
  }
}

/** `nmcli radio wifi on|off`: off drops every Wi-Fi connection and list; on brings the devices back. */
export function setRadio(w, s, on, now) {
  s.nm ??= { radio: true, devices: {} };
  if ((s.nm.radio !== false) === on) return;
  s.nm.radio = on;
  for (const a of wifiAdapters(w)) {
    const d = dev(s, a.iface);
    if (!on) {
      d.active = null;
      d.activeSsid = null;
      clearList(d, now);
    } else becomeAvailable(w, s, d, now);
  }
}

/** Applies what NetworkManager did meanwhile by itself (autoconnect of a saved network). */
export function settle(w, s, now) {
  for (const a of wifiAdapters(w)) {
    const d = dev(s, a.iface);
    if (d.autoconnectAt == null || now < d.autoconnectAt || d.active || !available(s, d, d.autoconnectAt)) continue;
    const conn = (s.connections ?? []).find((c) => c.name === d.autoconnect);
    const seen = (w.nmcli?.networks ?? []).some((n) => n.ssid === (conn?.ssid ?? conn?.name));
    if (conn && seen) activate(w, s, a.iface, conn, d.autoconnectAt);
    d.autoconnectAt = null;
  }
}

/**
 * The devices in `nmcli device` order (nmc_get_devices_sorted / compare_devices): active connections
 * first (the one holding the default route first, externally managed ones like lo after), then the
 * others by state (disconnected, unavailable, unmanaged), then by type name and interface name.
 */
export function sortedDevices(w, s, now) {
  const nm = w.nmcli ?? {};
  const list = [];
  const eth = nm.ethIface ?? 'eth0';
  if (eth) {
    const a = s.active?.[eth];
    list.push({ DEVICE: eth, TYPE: 'ethernet', STATE: a ? 'connected' : 'disconnected', num: a ? 100 : 30,
      CONNECTION: a ?? '--', HWADDR: '52:54:00:12:34:56', external: false });
  }
  list.push({ DEVICE: 'lo', TYPE: 'loopback', STATE: 'connected (externally)', num: 100, CONNECTION: 'lo',
    HWADDR: '00:00:00:00:00:00', external: true });
  for (const a of wifiAdapters(w)) {
    const [num, text] = deviceState(s, a.iface, now);
    const d = dev(s, a.iface);
    list.push({ DEVICE: a.iface, TYPE: 'wifi', STATE: text, num, CONNECTION: text === 'connected' ? d.active : '--',
      HWADDR: a.hwaddr, external: false });
  }
  const active = (x) => x.CONNECTION !== '--';
  // the default route: ethernet (metric 100) before Wi-Fi (600)
  const mine = list.filter((x) => active(x) && !x.external);
  const withDefault = mine.find((x) => x.TYPE === 'ethernet') ?? mine[0];
  const rank = (x) => (!active(x) ? 3 : x.external ? 2 : x === withDefault ? 0 : 1);
  return list.sort((x, y) => rank(x) - rank(y) || (rank(x) === 3 ? y.num - x.num : 0) || x.TYPE.localeCompare(y.TYPE) ||
    x.DEVICE.localeCompare(y.DEVICE));
}
