// A simulated Tuya BK7231T/N plug for tests: stock Tuya firmware, then ESPHome Kickstart (captive portal,
// web server entities incl. pinscan, LibreTiny web OTA, mDNS), then the final ESPHome device.
//
// Behaviour follows the real sources (read, not copied): libretiny-eu/esphome-kickstart (yaml/kickstart-base.yaml,
// components/pinscan, components/hub_api), ESPHome 2025.5 (captive_portal, web_server, web_server_base OTA,
// mdns), esphome/ESPAsyncWebServer 3.3.0 (SSE framing, multipart, 404s) and LibreTiny 1.9.0 (Update error texts,
// mDNS instance names). Every socket binds 127.0.0.1; multicast goes out on the loopback interface only.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { EventEmitter } from 'node:events';
import makeMdns from 'multicast-dns';
import { serveNativeApi, esphomeAtLeast } from './native-api.ts';
import { FAMILY_ID, type Mcu } from '../firmware-files.ts';
import { LatchingRelay } from './board.ts';
import { EsphomeDevice, objectIdOf, type Board, type BoardPinMode, type UartPeer } from './esphome-device.ts';
import { createTuyaMcu, type TuyaDatapoint, type TuyaMcu, type TuyaMcuOptions } from './tuyamcu.ts';
import { createBl0942, createHlw8032, resolveBl0942Refs, type Bl0942, type Bl0942Refs, type Hlw8032 }
  from './uart-chips.ts';
import { realClock } from './uart-line.ts';
import { tuyaFlashImage, typicalTuyaValues } from './tuya-storage.ts';


export type Phase = 'tuya' | 'kickstart-ap' | 'kickstart-lan' | 'final' | 'off';

/** What a PWM light channel lights. */
export type ChannelColour = 'red' | 'green' | 'blue' | 'cold' | 'warm';
const CHANNEL_COLOURS: readonly ChannelColour[] = ['red', 'green', 'blue', 'cold', 'warm'];

/**
 * Which pin drives what on the board. Every button is a momentary switch to GND (read with INPUT_PULLUP);
 * LEDs light when their pin is driven LOW; relays and light channels are on at HIGH unless listed in activeLow.
 */
export interface Wiring {
  /**
   * The pin configuration Tuya's firmware keeps for this board (its user_param_key), when it is known as data (a
   * device file): the stock firmware's storage on the simulated flash holds it. Without it, tuyaKeysFromWiring().
   */
  tuyaKeys?: Record<string, unknown>;
  /** The button pressButton() presses by default (button 1 unless `buttons` numbers it). */
  button?: string;
  /** A single relay (relay 1 unless `relays` lists its pin). */
  relay?: string;
  /** LEDs: pin -> colour, e.g. {P6: 'red', P7: 'blue'}. */
  leds?: Record<string, string>;
  /** Multi-gang devices: pin → relay number (1-based). */
  relays?: Record<string, number>;
  /** More buttons: pin → button number; pressButton(holdMs, pin) presses the one on that pin. */
  buttons?: Record<string, number>;
  /** A PWM light's channels: pin → what it lights. */
  channels?: Record<string, ChannelColour>;
  /** Pins whose load (relay, channel) is on when the pin is LOW (Tuya `_lv` 0). LEDs in `leds` stay active low. */
  activeLow?: string[];
  /**
   * Latching relays by number: the pin that sets it and the one that resets it (each active HIGH unless listed in
   * activeLow). The contacts move only when one side alone is driven for at least minPulseMs (default
   * LATCH_MIN_PULSE_MS) and keep their position without power. driveMs: what Tuya's firmware drives it for
   * (`rlN_drvtime`), for information.
   */
  latching?: Record<number, { set: string; reset: string; minPulseMs?: number; driveMs?: number }>;
  /** Wall switch inputs (Tuya `onoffN`): pin → N. A toggle switch to GND that stays where flipSwitch() puts it. */
  wallSwitches?: Record<string, number>;
  /** Wall switches that start closed (default: all open). */
  closedSwitches?: string[];
  /** The keys (Tuya `key_pin` = key 1, `kNpin_pin` = key N): pin → key number. They are in `buttons` too. */
  keys?: Record<string, number>;
  /** The reset button's pin (Tuya `reset_pin`); it is in `buttons` too. */
  resetButton?: string;
  /**
   * An energy chip on a UART (BL0937/HLW8012 pulse chips are not simulated): `rx` is the module pin the chip's TX is
   * wired to, `tx` the module pin wired to the chip's RX (an HLW8032 listens to nothing). `load`: what the metered
   * socket draws while a relay is on (nothing while all are off); default 230 V, 0.5 A, 110 W, 50 Hz. `board`: a
   * BL0942 board's counts per unit (default: true to the datasheet with ESPHome's voltage and current references, so
   * its power reference is the derived one, not ESPHome's 596 default); an HLW8032's divider (default 1.88).
   */
  energyChip?: {
    chip: 'BL0942' | 'HLW8032'; rx: string; tx?: string;
    load?: { volts: number; amps: number; watts: number; hz?: number };
    board?: Partial<Bl0942Refs>; voltageCoefficient?: number;
  };
  /**
   * A TuyaMCU (test/sim/tuyamcu.ts) on the module's UART1: its TX to `rx` (default P10), its RX on `tx` (default P11),
   * at `baud`, with these datapoints (raw values as Buffers, or byte arrays); `options` for the rest of TuyaMcuOptions.
   */
  tuyaMcu?: { baud: number; datapoints: TuyaDatapoint[]; rx?: string; tx?: string;
    options?: Omit<Partial<TuyaMcuOptions>, 'datapoints' | 'baud' | 'clock'> };
}

/**
 * The Wiring a cloudcutter device file's `device_configuration` (Tuya's pin keys) describes: rlN_pin (+ rlN_lv 0 ->
 * activeLow) are relay N; btN_pin button N, total_bt_pin button 0 (the one for all relays), key_pin / kNpin_pin the
 * next free numbers; netled(1)_pin and wfst_pin a red LED, ledN_pin / led_pin blue ones ('blue N' when there are
 * several); r/g/b/c/w_pin (+ _lv 0 -> activeLow) the channels of a PWM light (dmod 0 or none). An I2C LED driver's
 * iicscl/iicsda are not channels: the driver chip ignores a single pin wiggling, so nothing lights. `button` is
 * button 1 (else the total button, else the first), so pressButton() without a pin presses it. Also: rl_onN_pin +
 * rl_offN_pin (no rlN_pin) a latching relay N (`_lv` 0: active low); onoffN wall switch N; key_pin / kNpin_pin keys
 * 1 / N (in `keys` too); reset_pin a button (`resetButton`); chip_type 3 (or 4) a BL0942 on ele_rx/ele_tx or RX1 P10 /
 * TX1 P11, chip_type 2 an HLW8032 on ele_rx or P10.
 */
export function wiringFromTuya(keys: Record<string, unknown> | undefined): Wiring {
  const dc = keys ?? {}; // a TuyaMCU device's file has no pin configuration at all (see wiringFromDevice)
  const pinOf = (key: string) => (typeof dc[key] === 'number' && Number.isInteger(dc[key]) ? `P${dc[key]}` : undefined);
  const numbered = (re: RegExp) => Object.keys(dc)
    .map((k) => [re.exec(k), k] as const)
    .filter(([m, k]) => m && pinOf(k))
    .map(([m, k]) => [Number(m![1] || 0), pinOf(k)!] as const)
    .sort((a, b) => a[0] - b[0]);
  const w: Wiring = {};
  const activeLow = new Set<string>();
  for (const [n, pin] of numbered(/^rl(\d+)_pin$/)) {
    (w.relays ??= {})[pin] = n;
    if (dc[`rl${n}_lv`] === 0) activeLow.add(pin);
  }
  const buttons: Record<string, number> = {};
  for (const [n, pin] of numbered(/^bt(\d+)_pin$/)) buttons[pin] = n;
  const total = pinOf('total_bt_pin');
  if (total && !(total in buttons)) buttons[total] = 0;
  const taken = () => new Set(Object.values(buttons));
  for (const [n, pin] of [[1, pinOf('key_pin')] as const, ...numbered(/^k(\d+)pin_pin$/)]) {
    if (pin) (w.keys ??= {})[pin] = n;
    if (!pin || pin in buttons) continue;
    let free = n;
    while (taken().has(free)) free++;
    buttons[pin] = free;
  }
  const reset = pinOf('reset_pin');
  if (reset) {
    w.resetButton = reset;
    if (!(reset in buttons)) {
      let free = 1;
      while (taken().has(free)) free++;
      buttons[reset] = free;
    }
  }
  if (Object.keys(buttons).length) {
    w.buttons = buttons;
    const byNumber = Object.entries(buttons).sort((a, b) => a[1] - b[1]);
    w.button = (byNumber.find(([, n]) => n === 1) ?? byNumber.find(([, n]) => n === 0) ?? byNumber[0])[0];
  }
  const leds: Record<string, string> = {};
  for (const key of ['netled_pin', 'netled1_pin', 'wfst_pin']) {
    const pin = pinOf(key);
    if (pin) leds[pin] = 'red';
  }
  const relayLeds = numbered(/^led(\d+)_pin$/);
  const single = pinOf('led_pin');
  if (single && !relayLeds.some(([, p]) => p === single)) relayLeds.unshift([1, single]);
  for (const [n, pin] of relayLeds) if (!(pin in leds)) leds[pin] = relayLeds.length > 1 ? `blue ${n}` : 'blue';
  if (Object.keys(leds).length) w.leds = leds;
  if (!dc.dmod) {
    const keys: [string, ChannelColour][] = [['r', 'red'], ['g', 'green'], ['b', 'blue'], ['c', 'cold'], ['w', 'warm']];
    for (const [k, colour] of keys) {
      const pin = pinOf(`${k}_pin`);
      if (!pin) continue;
      (w.channels ??= {})[pin] = colour;
      if (dc[`${k}_lv`] === 0) activeLow.add(pin);
    }
  }
  for (const [n, set] of numbered(/^rl_on(\d+)_pin$/)) {
    const resetPin = pinOf(`rl_off${n}_pin`);
    // With rlN_pin the relay is an ordinary one (a touch switch's firmware names its pin as the "on" pin too).
    if (!resetPin || pinOf(`rl${n}_pin`)) continue;
    const drive = dc[`rl${n}_drvtime`] ?? dc.rl_drvtime;
    (w.latching ??= {})[n] = { set, reset: resetPin, ...(typeof drive === 'number' ? { driveMs: drive } : {}) };
    if (dc[`rl_on${n}_lv`] === 0) activeLow.add(set);
    if (dc[`rl_off${n}_lv`] === 0) activeLow.add(resetPin);
  }
  for (const [n, pin] of numbered(/^onoff(\d+)$/)) (w.wallSwitches ??= {})[pin] = n;
  const chip = Number(dc.chip_type);
  if (chip === 3 || chip === 4) {
    w.energyChip = { chip: 'BL0942', rx: pinOf('ele_rx') ?? 'P10', tx: pinOf('ele_tx') ?? 'P11' };
  } else if (chip === 2) {
    w.energyChip = { chip: 'HLW8032', rx: pinOf('ele_rx') ?? 'P10' };
  }
  if (activeLow.size) w.activeLow = [...activeLow];
  return w;
}

/** A cloudcutter device file, the parts wiringFromDevice() reads. */
export interface DeviceWiringSource {
  device_configuration?: Record<string, unknown>;
  /** The datapoints under the Tuya schema id: `{id, mode, type: 'obj' | 'raw', property: {type, min, max, ...}}`. */
  schemas?: Record<string, unknown[]>;
  tuyamcu_baud?: string | number;
  /** cloudcutter's profiles for it: a `lowpower` one means an MCU speaking Tuya's low-power serial protocol. */
  profiles?: { slug: string }[];
}

/**
 * The Wiring a whole cloudcutter device file describes: its pins (wiringFromTuya) and, for a TuyaMCU device
 * (`tuyamcu_baud`, or `wifi_bdrate` in its configuration), the MCU at that baud rate speaking the datapoints of its
 * first schema, each starting at a plausible value: the middle of a value's min…max (on its step), an enum's first
 * option, false, an empty string, 8 zero bytes of raw, no bits set. `baud` overrides the file's (a device whose
 * MCU talks at another rate than cloudcutter says).
 *
 * A device whose first profile is one of Tuya's `lowpower` firmwares (battery sensors) has an MCU that speaks the
 * low-power serial protocol, which has no heartbeat and no datapoint query: ESPHome's tuya component never gets
 * past its first step with it (a separate low-power component was proposed in esphome#11168). Its MCU here answers
 * no heartbeat.
 */
export function wiringFromDevice(device: DeviceWiringSource, o: { baud?: number } = {}): Wiring {
  const dc = device.device_configuration ?? {};
  const w: Wiring = { ...wiringFromTuya(dc), tuyaKeys: dc };
  const said = device.tuyamcu_baud ?? dc.wifi_bdrate;
  if (said === undefined && o.baud === undefined) return w;
  const baud = o.baud ?? (Number(said) > 0 ? Number(said) : 9600);
  w.tuyaMcu = { baud, datapoints: datapointsFromSchema(Object.values(device.schemas ?? {})[0] ?? []) };
  if (/lowpower/.test(device.profiles?.[0]?.slug ?? '')) w.tuyaMcu.options = { ignoreCommands: [0x00] };
  return w;
}

function datapointsFromSchema(entries: unknown[]): TuyaDatapoint[] {
  const out: TuyaDatapoint[] = [];
  for (const raw of entries) {
    const e = (raw ?? {}) as { id?: unknown; mode?: unknown; type?: unknown; property?: Record<string, unknown> };
    const p = e.property ?? {};
    const id = Number(e.id);
    const type = e.type === 'raw' ? 'raw' : p.type;
    if (!Number.isInteger(id) || out.some((d) => d.id === id)) continue;
    const mode = (['rw', 'ro', 'wr'].includes(String(e.mode)) ? e.mode : 'rw') as TuyaDatapoint['mode'];
    const n = (v: unknown) => (typeof v === 'number' ? v : undefined);
    switch (type) {
      case 'bool': out.push({ id, type, mode, value: false }); break;
      case 'value': {
        const min = n(p.min) ?? 0;
        const max = n(p.max) ?? Math.max(min, 100);
        const step = n(p.step) || 1;
        const value = Math.min(max, min + Math.round((max - min) / 2 / step) * step);
        out.push({ id, type, mode, value, min, max, ...(n(p.scale) ? { scale: n(p.scale) } : {}) });
        break;
      }
      case 'enum': {
        const range = Array.isArray(p.range) ? p.range.map(String) : undefined;
        out.push({ id, type, mode, value: 0, ...(range ? { range } : {}) });
        break;
      }
      case 'bitmap': {
        const bits = n(p.maxlen) ?? 8;
        out.push({ id, type, mode, value: 0, length: bits > 16 ? 4 : bits > 8 ? 2 : 1 });
        break;
      }
      case 'string': out.push({ id, type, mode, value: '' }); break;
      case 'raw': out.push({ id, type, mode, value: Buffer.alloc(8) }); break;
    }
  }
  return out;
}

/**
 * Tuya's pin keys for a wiring, as a stock firmware's user_param_key describes its board: relays on rlN_pin (_lv 0
 * when active low), buttons on btN_pin (button 0 on total_bt_pin), a red LED as the Wi-Fi LED (netled1_pin), other
 * LEDs as relay LEDs (ledN_pin), light channels on r/g/b/c/w_pin with cmod naming them.
 */
export function tuyaKeysFromWiring(w: Wiring): Record<string, unknown> {
  const keys: Record<string, unknown> = { Jsonver: '1.1.8' };
  const low = new Set(w.activeLow ?? []);
  const relays = w.relays ?? (w.relay ? { [w.relay]: 1 } : {});
  for (const [pin, n] of Object.entries(relays)) Object.assign(keys, { [`rl${n}_pin`]: Number(pin.slice(1)),
    [`rl${n}_lv`]: low.has(pin) ? 0 : 1 });
  const buttons = w.buttons ?? (w.button ? { [w.button]: 1 } : {});
  for (const [pin, n] of Object.entries(buttons))
    Object.assign(keys, n === 0 ? { total_bt_pin: Number(pin.slice(1)), total_bt_lv: 0 }
      : { [`bt${n}_pin`]: Number(pin.slice(1)), [`bt${n}_lv`]: 0 });
  let led = 1;
  for (const [pin, colour] of Object.entries(w.leds ?? {}))
    Object.assign(keys, colour === 'red' && keys.netled1_pin === undefined
      ? { netled1_pin: Number(pin.slice(1)), netled1_lv: 0 } : { [`led${led}_pin`]: Number(pin.slice(1)),
        [`led${led++}_lv`]: 0 });
  const letters: Record<ChannelColour, string> = { red: 'r', green: 'g', blue: 'b', cold: 'c', warm: 'w' };
  const channels = Object.entries(w.channels ?? {});
  for (const [pin, colour] of channels) Object.assign(keys, { [`${letters[colour]}_pin`]: Number(pin.slice(1)),
    [`${letters[colour]}_lv`]: low.has(pin) ? 0 : 1 });
  if (channels.length) keys.cmod = 'rgbcw'.split('').filter((l) => `${l}_pin` in keys).join('');
  keys.crc = 42;
  return keys;
}

/** The Status Wifi Plug pinouts (seed page): 21D/21G (BK7231T) and 23A (BK7231N). */
export const SEED_WIRING: Record<Mcu, Wiring> = {
  bk7231t: { button: 'P6', relay: 'P24', leds: { P7: 'green', P8: 'red' } },
  bk7231n: { button: 'P8', relay: 'P24', leds: { P6: 'red', P7: 'blue' } },
};

export interface SimFaults {
  /** The next N requests to /config.json or /wifisave answer HTTP 500. */
  portal500?: number;
  /** The first /update connection is destroyed after this many request body bytes (once). */
  dropUploadAfterBytes?: number;
  /** /update reads the body at this many KiB/s, as a plug writing its flash over Wi-Fi does. */
  slowUploadKiBps?: number;
  /** /update answers 200 "Update Failed: <this>" (once). */
  updateFails?: string;
  /** After /wifisave the plug never joins the LAN (it keeps its AP and portal up, as a real one that cannot connect). */
  neverJoinLan?: boolean;
  /** After a successful /update the final device never appears (until the next power cycle). */
  neverReboot?: boolean;
  /** The native API port accepts connections and never says a word (a hung API task). */
  apiSilent?: boolean;
  /** The native API port closes every connection right after accepting it. */
  apiClosesOnAccept?: boolean;
}

/**
 * apiKey: the base64 `api_encryption_key` the firmware was built with (the API port speaks Noise); an encrypted
 * firmware whose key the test leaves out gets a random one nobody knows. apiPassword: `api: password:` (≤ 2025.12).
 */
export interface FinalInfo {
  name: string; friendlyName?: string; board: string; apiKey?: string; apiPassword?: string;
}

export interface SimPlugOptions {
  mcu: Mcu;
  /** Default 'tuya' (stock Tuya firmware: HTTP answers 404 to everything but /_sim, no mDNS). */
  phase?: Phase;
  /** 12 hex digits, upper case; default random (Beken OUI C8:47:8C). */
  mac?: string;
  visibleNetworks?: { ssid: string; rssi: number; lock: boolean }[];
  /** The network the plug can actually join; /wifisave with other credentials never gets it on the LAN. */
  homeNetwork?: { ssid: string; password: string };
  wiring?: Wiring;
  /** Interface for mDNS (default '127.0.0.1'); false = no mDNS. */
  mdnsInterface?: string | false;
  /**
   * mDNS's UDP port. Default: a free one of its own, so no other test's or run's plug (they all share loopback) is
   * seen: flash.ts is told it with FLASH_MDNS_PORT (`mdnsPort` of the SimPlug); a second plug on the same network is
   * given the first one's. 5353 is the real one.
   */
  mdnsPort?: number;
  /**
   * mDNS goes quiet this long after each boot (no answers, no announcements) while no API client is connected,
   * as BK72xx plugs on LibreTiny are reported to do after a while; default never.
   */
  mdnsStopsAfterMs?: number;
  /** The native API's keepalive: an idle client is pinged after this long and dropped after 2.5x; default 60000. */
  apiKeepaliveMs?: number;
  /** wifisave (or boot with saved Wi-Fi) -> on the LAN; default 300. */
  joinMs?: number;
  /** /update success -> final device on the LAN; default 300 (the reboot itself starts ~100 ms after the answer). */
  rebootMs?: number;
  /** Power cycle / restart button -> firmware running again; default 50. */
  bootMs?: number;
  /** Default 'v25.05.28' (the cloudcutter file name); its ESPHome is `esphomeVersion`. */
  kickstartVersion?: string;
  /**
   * ESPHome version Kickstart was built with; default '2025.5.0' (Kickstart v25.05.28). It decides the web
   * server's behaviour: from 2025.7 a failed web upload answers a bare "Update Failed!"; from 2026.1 entities
   * are addressed by name (`/select/-> Pin/set`), object ids are deprecated and a GET of an action URL is a 404;
   * from 2026.7 object-id URLs are gone; /events ids change in 2026.1, 2026.1.3 and 2026.8.
   */
  esphomeVersion?: string;
  /** ESPHome version reported by the final device when the UF2 payload does not say; default '2025.5.0'. */
  finalVersion?: string;
  /** The final device when starting in phase 'final'. */
  final?: FinalInfo;
  /**
   * The ESPHome config (substituted, as the fake esphome puts it in the firmware) the final device runs when starting
   * in phase 'final'; without one it runs the old pin-only model (a gpio relay per wired relay, buttons toggle).
   */
  finalConfig?: Record<string, unknown>;
  /** The plug's LAN address as it reports it (IP Address sensor, mDNS A record); default '127.0.0.1'. */
  lanIp?: string;
  faults?: SimFaults;
  /**
   * What Tuya's storage on the flash holds (its key → value texts, e.g. typicalTuyaValues(device_configuration));
   * null for a plug whose storage is gone. Default: a paired plug's storage whose user_param_key describes the
   * wiring (its tuyaKeys, else tuyaKeysFromWiring), as the stock firmware's storage does.
   */
  storage?: Record<string, string> | null;
  /** HTTP port on 127.0.0.1; default 0 (random). */
  port?: number;
  /** Real durations of the Tuya side (AP mode by hand, the reboot into Kickstart) are multiplied by this; default 1. */
  timeScale?: number;
  /**
   * How fast /hub/flash_read streams, in KiB/s (× timeScale): Kickstart sends 4 KiB blocks over Wi-Fi at about
   * 100–120 KiB/s, so a whole 2 MiB dump takes some 20 s. Default 120.
   */
  flashReadKiBps?: number;
  /**
   * The MAC the stock firmware reports (the `hid` of its requests, what cloudcutter prints); default:
   * `mac`. Kickstart reads the same TLV data through the Beken SDK, so they agree unless that data is
   * damaged or cloned (OpenBeken #404, PR #2198): give a different one to model that.
   */
  tuyaMac?: string;
  /** The stock pairing AP's name before "-XXXX" (last 4 hex digits of tuyaMac); default 'SmartLife'. */
  tuyaApPrefix?: string;
  /** How long the user's power-cycle dance into AP mode takes (real ms); default 12000, 4000 once exploited. */
  apModeMs?: number;
  /** From "send complete" to Kickstart's AP (real ms): writing, verifying, rebooting; default random 15000–30000. */
  kickstartBootMs?: number;
}

export interface SimHardware {
  /** Any relay on. */
  relay: boolean;
  /** Each relay's state by number (the single `relay` of a Wiring is relay 1). */
  relays: Record<number, boolean>;
  leds: Record<string, boolean>;
  /** The channel colours lit now (in red, green, blue, cold, warm order): channel pins driven to their active level. */
  light: ChannelColour[];
  levels: Record<string, 'HIGH' | 'LOW'>;
  /** Each wall switch by number: closed (its input pulled to GND). */
  switches: Record<number, boolean>;
}
export interface SimUpload { bytes: number; familyId?: number; result: string }

export interface SimPlug {
  url: string;
  port: number;
  /** The final device's native API port (TCP on 127.0.0.1, advertised in its SRV record). */
  apiPort: number;
  /** The UDP port its mDNS answers on (see SimPlugOptions.mdnsPort); undefined without mDNS. */
  mdnsPort?: number;
  readonly mac: string;
  mcu: Mcu;
  readonly phase: Phase;
  /** What /wifisave received (kept across power cycles, like the real flash). */
  wifi?: { ssid: string; psk: string };
  /** Leds keyed by colour; LEDs are active low, the relay active high. */
  readonly hardware: SimHardware;
  /** Set once running the uploaded firmware. */
  final?: FinalInfo;
  uploads: SimUpload[];
  faults: SimFaults;
  /** The MAC the stock firmware reports (12 hex digits, upper case). */
  readonly tuyaMac: string;
  /** Swaps in the next plug of a batch: a fresh stock plug (new MAC) where this one was. */
  newPlug(): void;
  /** The stock firmware's pairing AP on the air: 'SmartLife-1A2B', 'A-1A2B' after the exploit, or null. */
  readonly tuyaAp: string | null;
  /**
   * What the user's power cycles / long presses do: the stock firmware opens its pairing AP after a
   * while (apModeMs × timeScale). Resolves when it is up.
   */
  enterApMode(): Promise<void>;
  /**
   * cloudcutter sent the Kickstart file: the plug writes it and reboots (phase 'off'); Kickstart's
   * AP comes up after kickstartBootMs × timeScale (15–30 s real): 'kickstart-ap'.
   */
  flashKickstart(): void;
  powerCycle(): void;
  /**
   * Pulls a button's pin LOW while held (INPUT_PULLUP reads HIGH otherwise). Default 200 ms, the wiring's `button`;
   * a pin with no button on it is a test mistake and throws.
   */
  pressButton(holdMs?: number, pin?: string): Promise<void>;
  /** The buttons on the board: pin -> number (0 the one for all relays). */
  readonly buttons: Record<string, number>;
  /** The board's wiring, as given (or the Status plug's). */
  readonly wiring: Wiring;
  /** `length` bytes of the 2 MiB flash from `offset`, as /hub/flash_read serves them (Tuya's storage included). */
  flashRead(offset: number, length: number): Buffer;
  /** The /hub/flash_read requests answered so far, as [offset, length]. */
  readonly flashReads: [number, number][];
  /** Flips the wall switch on `pin` (open ⇄ closed); a pin with no wall switch is a test mistake and throws. */
  flipSwitch(pin: string): void;
  /**
   * Calls `listener` with the hardware at every change of it, as it happens (what a person watching the board sees,
   * however short); returns the way to stop listening.
   */
  onHardware(listener: (hw: SimHardware) => void): () => void;
  /** Resolves once `pred(hardware)` is true (checked at every change of the hardware); rejects after timeoutMs. */
  waitForHardware(pred: (hw: SimHardware) => boolean, timeoutMs?: number): Promise<SimHardware>;
  /** The board's TuyaMCU (the user works the device: setDatapoint), when the wiring has one. */
  readonly tuyaMcu?: TuyaMcu;
  /** The board's energy chip (setLoad), when the wiring has one. */
  readonly energyChip?: Bl0942 | Hlw8032;
  /** The running final firmware, when it was built from a config (its entities, logs, what it cannot simulate). */
  readonly device?: EsphomeDevice;
  /** Resolves with the final firmware once one built from a config is running (after an upload's reboot). */
  waitForDevice(timeoutMs?: number): Promise<EsphomeDevice>;
  waitForPhase(p: Phase, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** The pins both generic-bk7231*-qfn32-tuya boards offer, in Kickstart's pinscan order. */
export const BK7231_PINS = ['P0', 'P1', 'P6', 'P7', 'P8', 'P9', 'P10', 'P11', 'P14', 'P15', 'P16', 'P17', 'P20', 'P21', 'P22', 'P23', 'P24', 'P26', 'P28'] as const;

/** `-> Pin` options exactly as kickstart-bk7231{t,n}.yaml lists them. */
export const PIN_OPTIONS = [
  'Select PIN', 'P0 / UART2_TX / I2C2_SCL', 'P1 / UART2_RX / I2C2_SDA', 'P6 / PWM0', 'P7 / PWM1', 'P8 / PWM2', 'P9 / PWM3',
  'P10 / UART1_RX', 'P11 / UART1_TX', 'P14 / SCK', 'P15 / CS', 'P16 / MOSI', 'P17 / MISO', 'P20 / I2C1_SCL / TCK',
  'P21 / I2C1_SDA / TMS', 'P22 / TDI', 'P23 / TDO / ADC3', 'P24 / PWM4', 'P26 / PWM5', 'P28',
] as const;

/** `-> Pin Mode` options (kickstart-base.yaml); pinscan's set_mode takes the index. */
export const PIN_MODES = ['INPUT', 'INPUT_PULLUP', 'OUTPUT_HIGH', 'OUTPUT_LOW'] as const;

export const FLASH_SIZE = 0x200000;
/** ESPHome's native API port, what Kickstart advertises. */
export const KICKSTART_API_PORT = 6053;
export const API_ENCRYPTION = 'Noise_NNpsk0_25519_ChaChaPoly_SHA256';

/** Deterministic "flash contents" of a simulated plug (2 MiB; same seed, same bytes). */
export function simFlashRead(seed: string, offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let s = 0x811c9dc5;
  for (const ch of seed) s = Math.imul(s ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  for (let i = 0; i < length; i++) {
    const a = offset + i;
    let x = Math.imul((a >>> 2) ^ s, 0x9e3779b1) >>> 0;
    x ^= x >>> 15;
    x = Math.imul(x, 0x85ebca6b) >>> 0;
    x ^= x >>> 13;
    out[i] = (x >>> ((a & 3) * 8)) & 0xff;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

const DEFAULT_NETWORKS = [
  { ssid: 'HomeNet', rssi: -52, lock: true },
  { ssid: 'Neighbour 5G', rssi: -71, lock: true },
  { ssid: 'Cafe Free WiFi', rssi: -84, lock: false },
];
const AP_IP = '192.168.4.1';
const LOG_DEBUG = '\x1b[0;36m';
const LOG_INFO = '\x1b[0;32m';
const LOG_RESET = '\x1b[0m';

type Firmware = 'tuya' | 'kickstart' | 'final';
type PinMode = 'INPUT' | 'INPUT_PULLUP' | 'INPUT_PULLDOWN' | 'OUTPUT';
interface PinState { mode: PinMode; out: 0 | 1 }

interface Entity {
  domain: 'sensor' | 'text_sensor' | 'select' | 'button';
  name: string;
  objectId: string;
  icon: string;
  category: 0 | 1 | 2;
  unit?: string;
  options?: readonly string[];
  /** state text and value, as web_server puts them in JSON. */
  read?: () => { state: string; value: string | number | null };
}

interface UpdateError { ard: number; uf2: number; text: string }

/** LibreTiny's Update + uf2ota, as far as the sim needs it: block checks, error texts, completeness. */
class Uf2Update {
  error: UpdateError | null = null;
  familyId?: number;
  bytes = 0;
  private block = Buffer.alloc(512);
  private fill = 0;
  private seq = 0;
  private total = 0;
  private written = 0;
  private payload: Buffer[] = [];
  private payloadLen = 0;

  constructor(private expectedFamily: number) {}

  write(data: Buffer): void {
    this.bytes += data.length;
    let off = 0;
    while (off < data.length && !this.error) {
      const n = Math.min(512 - this.fill, data.length - off);
      data.copy(this.block, this.fill, off, off + n);
      this.fill += n;
      off += n;
      if (this.fill === 512) {
        this.fill = 0;
        this.checkBlock(this.block);
      }
    }
  }

  private fail(uf2: number, ard: number, text: string): void {
    this.error = { uf2, ard, text };
  }

  private checkBlock(b: Buffer): void {
    if (b.readUInt32LE(0) !== 0x0a324655 || b.readUInt32LE(4) !== 0x9e5d5157 || b.readUInt32LE(508) !== 0x0ab16f30) {
      return this.fail(2, 8, 'Bad Magic Number');
    }
    const flags = b.readUInt32LE(8);
    const family = b.readUInt32LE(28);
    if (this.familyId === undefined && flags & 0x2000) this.familyId = family;
    if (!(flags & 0x2000) || family !== this.expectedFamily) return this.fail(3, 11, 'Bad Family ID');
    if (b.readUInt32LE(20) !== this.seq) return this.fail(11, 11, 'Bad Block Sequence Number');
    if (this.seq === 0) this.total = b.readUInt32LE(24);
    this.seq++;
    this.written++;
    if (this.payloadLen < 65536) {
      const size = Math.min(b.readUInt32LE(16), 476);
      const p = Buffer.from(b.subarray(32, 32 + size));
      this.payload.push(p);
      this.payloadLen += p.length;
    }
  }

  /** All blocks the first block announced arrived: the new image would be activated. */
  get complete(): boolean {
    return !this.error && this.total > 0 && this.written === this.total;
  }

  /** What the uploaded firmware says about itself: our fake esphome writes JSON as the UF2 payload. */
  info(): Record<string, unknown> {
    let all = Buffer.concat(this.payload);
    let end = all.length;
    while (end > 0 && all[end - 1] === 0) end--;
    all = all.subarray(0, end);
    for (const text of [all.toString('utf8'), all.subarray(0, all.indexOf(0) >= 0 ? all.indexOf(0) : all.length).toString('utf8')]) {
      try {
        const j = JSON.parse(text) as unknown;
        if (j && typeof j === 'object' && !Array.isArray(j)) return j as Record<string, unknown>;
      } catch { /* not JSON */ }
    }
    return {};
  }
}

/** A streaming multipart/form-data parser (bounded memory: keeps at most one delimiter of look-behind). */
class MultipartStream {
  private buf: Buffer = Buffer.alloc(0);
  private state: 'preamble' | 'after-delim' | 'headers' | 'body' | 'done' | 'error' = 'preamble';
  private delim: Buffer;
  private bodyDelim: Buffer;

  constructor(boundary: string, private cb: {
    partStart: (headers: Record<string, string>) => void;
    data: (chunk: Buffer) => void;
    partEnd: () => void;
  }) {
    this.delim = Buffer.from(`--${boundary}`);
    this.bodyDelim = Buffer.from(`\r\n--${boundary}`);
  }

  write(chunk: Buffer): void {
    if (this.state === 'done' || this.state === 'error') return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.state === 'preamble') {
        const i = this.buf.indexOf(this.delim);
        if (i < 0) {
          this.buf = this.buf.subarray(Math.max(0, this.buf.length - this.delim.length));
          return;
        }
        this.buf = this.buf.subarray(i + this.delim.length);
        this.state = 'after-delim';
      }
      if (this.state === 'after-delim') {
        if (this.buf.length < 2) return;
        if (this.buf[0] === 0x2d && this.buf[1] === 0x2d) {
          this.state = 'done';
          return;
        }
        const i = this.buf.indexOf('\r\n');
        if (i < 0) {
          if (this.buf.length > 256) this.state = 'error';
          return;
        }
        this.buf = this.buf.subarray(i + 2);
        this.state = 'headers';
      }
      if (this.state === 'headers') {
        const i = this.buf.indexOf('\r\n\r\n');
        if (i < 0) {
          if (this.buf.length > 16384) this.state = 'error';
          return;
        }
        const headers: Record<string, string> = {};
        for (const line of this.buf.subarray(0, i).toString('latin1').split('\r\n')) {
          const c = line.indexOf(':');
          if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
        }
        this.buf = this.buf.subarray(i + 4);
        this.state = 'body';
        this.cb.partStart(headers);
      }
      if (this.state === 'body') {
        const i = this.buf.indexOf(this.bodyDelim);
        if (i < 0) {
          const keep = this.bodyDelim.length - 1;
          if (this.buf.length > keep) {
            this.cb.data(this.buf.subarray(0, this.buf.length - keep));
            this.buf = this.buf.subarray(this.buf.length - keep);
          }
          return;
        }
        if (i > 0) this.cb.data(this.buf.subarray(0, i));
        this.cb.partEnd();
        this.buf = this.buf.subarray(i + this.bodyDelim.length);
        this.state = 'after-delim';
      }
    }
  }
}

/** One SSE frame as esphome/ESPAsyncWebServer 3.3.0 writes it (CRLF line ends). */
function sseFrame(message: string, event: string, id = 0, retry = 0): string {
  let ev = '';
  if (retry) ev += `retry: ${retry}\r\n`;
  if (id) ev += `id: ${id}\r\n`;
  ev += `event: ${event}\r\n`;
  const lines = message.split(/\r\n|\r|\n/);
  if (lines.length === 1) return `${ev}data: ${message}\r\n\r\n`;
  return `${ev}${lines.map((l) => `data: ${l}\r\n`).join('')}\r\n`;
}

function randomMac(): string {
  return `C8478C${crypto.randomBytes(3).toString('hex').toUpperCase()}`;
}

function isLoopback(addr: string): boolean {
  return addr.startsWith('127.') || addr === '::1' || addr === '::ffff:127.0.0.1';
}

// ---------------------------------------------------------------------------------------------------------------

/** A timer of the sim's (`later`): the Node timer under way, re-armed when it fired early. */
interface Later { timer: NodeJS.Timeout }

/**
 * The ports the kernel hands out by itself (listen(0), a client's source port) start here: a port below it is taken
 * only by whoever asks for it by number, so a plug that lets go of one while it reboots gets it back.
 */
const EPHEMERAL_LOW = (() => {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
})();

/** A free port of this machine's own choosing below the kernel's range (see EPHEMERAL_LOW), for TCP or UDP. */
async function ownPort(kind: 'tcp' | 'udp', take?: (port: number) => Promise<boolean>): Promise<number> {
  const low = 20_000;
  const tryPort = take ?? (kind === 'udp'
    ? (port: number) => new Promise<boolean>((resolve) => {
      const socket = dgram.createSocket('udp4');
      socket.once('error', () => (socket.close(), resolve(false)));
      socket.bind(port, '0.0.0.0', () => socket.close(() => resolve(true)));
    })
    : (port: number) => new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    }));
  for (let tries = 0; tries < 200; tries++) {
    const port = low + crypto.randomInt(Math.max(1, EPHEMERAL_LOW - low));
    if (await tryPort(port)) return port;
  }
  throw new Error(`sim: no free ${kind} port between ${low} and ${EPHEMERAL_LOW}`);
}

/** A free UDP port for an mDNS network of its own (one no other bench or run chooses at random). */
export function freeUdpPort(): Promise<number> {
  return ownPort('udp');
}

export async function startSimPlug(opts: SimPlugOptions): Promise<SimPlug> {
  const mcu = opts.mcu;
  const MCU = mcu.toUpperCase();
  let mac = (opts.mac ?? randomMac()).replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  if (mac.length !== 12) throw new Error(`sim: mac must be 12 hex digits, got ${opts.mac}`);
  const networks = opts.visibleNetworks ?? DEFAULT_NETWORKS;
  const home = opts.homeNetwork ?? { ssid: 'HomeNet', password: 'correct horse' };
  const wiring = opts.wiring ?? SEED_WIRING[mcu];
  // The flash: Tuya's storage (its wiring, as the stock firmware stored it) where the SDK puts it, the rest
  // deterministic bytes per MAC; rebuilt when a batch's next plug (a new MAC) takes this one's place.
  const storage = opts.storage === undefined ? typicalTuyaValues(wiring.tuyaKeys ?? tuyaKeysFromWiring(wiring))
    : opts.storage;
  let image: { mac: string; read: (offset: number, length: number) => Buffer } | undefined;
  const flashReads: [number, number][] = [];
  const flashRead = (offset: number, length: number): Buffer => {
    if (image?.mac !== mac) {
      const seed = mac;
      image = { mac, read: storage ? tuyaFlashImage({ chip: mcu, values: storage,
        seedFill: (o, l) => simFlashRead(seed, o, l) }).read : (o, l) => simFlashRead(seed, o, l) };
    }
    return image.read(offset, length);
  };
  // The wiring as lookups: the single `relay`/`button` are number 1 unless the maps list their pins.
  const relayPins = new Map<string, number>(Object.entries(wiring.relays ?? {}));
  if (wiring.relay && !relayPins.has(wiring.relay)) {
    const clash = [...relayPins].find(([, n]) => n === 1);
    if (clash) throw new Error(`sim: wiring has relay 1 twice (relay ${wiring.relay}, relays ${clash[0]})`);
    relayPins.set(wiring.relay, 1);
  }
  const buttonPins = new Map<string, number>(Object.entries(wiring.buttons ?? {}));
  if (wiring.button && !buttonPins.has(wiring.button)) buttonPins.set(wiring.button, 1);
  const channelPins = new Map<string, ChannelColour>(Object.entries(wiring.channels ?? {}));
  const activeLow = new Set(wiring.activeLow ?? []);
  const wallSwitches = new Map<string, number>(Object.entries(wiring.wallSwitches ?? {}));
  const closedSwitches = new Set(wiring.closedSwitches ?? []); // mechanical: kept through reboots and power cuts
  const events = new EventEmitter();
  events.setMaxListeners(0);
  // Latching relays: their contacts are the hardware's own state, whatever the pins or the power do.
  const latches = Object.entries(wiring.latching ?? {}).map(([n, l]) => ({
    n: Number(n), ...l,
    relay: new LatchingRelay({ minPulseMs: l.minPulseMs, onChange: () => hardwareChanged() }),
  }));
  // The chips on the UART lines: a TuyaMCU, an energy chip. Powered with the plug (a power cycle restarts them).
  const uartPeers: { rx: string; tx?: string; peer: UartPeer }[] = [];
  let tuyaMcu: TuyaMcu | undefined;
  if (wiring.tuyaMcu) {
    const t = wiring.tuyaMcu;
    // A wiring read from JSON has raw values as byte arrays (or Buffer's JSON form): the MCU wants Buffers.
    const bytes = (v: unknown) => Buffer.from((v as { data?: number[] }).data ?? (v as number[]));
    const datapoints = t.datapoints.map((d) => (d.type === 'raw' && !Buffer.isBuffer(d.value)
      ? { ...d, value: bytes(d.value) } : { ...d }));
    tuyaMcu = createTuyaMcu({ ...t.options, datapoints, baud: t.baud });
    uartPeers.push({ rx: t.rx ?? 'P10', tx: t.tx ?? 'P11', peer: tuyaMcu });
  }
  let energyChip: Bl0942 | Hlw8032 | undefined;
  const meterLoad = { volts: 230, amps: 0.5, watts: 110, hz: 50, ...wiring.energyChip?.load };
  let metering: boolean | undefined; // whether the metered socket draws now
  if (wiring.energyChip?.chip === 'BL0942') {
    // A board true to the datasheet with ESPHome's voltage and current references: its power and energy counts per
    // unit are the derived ones.
    const refs = resolveBl0942Refs({ voltage: 15873.35944299, current: 251213.46469622, ...wiring.energyChip.board });
    const chip = createBl0942({ volts: meterLoad.volts, amps: 0, watts: 0, hz: meterLoad.hz, board: refs });
    energyChip = chip;
    uartPeers.push({ rx: wiring.energyChip.rx, tx: wiring.energyChip.tx, peer: chip });
  } else if (wiring.energyChip?.chip === 'HLW8032') {
    const chip = createHlw8032({ volts: meterLoad.volts, amps: 0, watts: 0,
      voltageCoefficient: wiring.energyChip.voltageCoefficient });
    energyChip = chip;
    // It sends a frame after the other while powered; frames nobody reads are not simulated.
    let listeners = 0;
    uartPeers.push({ rx: wiring.energyChip.rx, peer: { format: chip.format, onSend: (cb) => {
      const off = chip.onSend(cb);
      if (listeners++ === 0) chip.start();
      return () => {
        off();
        if (--listeners === 0) chip.stop();
      };
    } } });
  }
  const joinMs = opts.joinMs ?? 300;
  const rebootMs = opts.rebootMs ?? 300;
  const bootMs = opts.bootMs ?? 50;
  const kickstartVersion = opts.kickstartVersion ?? 'v25.05.28';
  const timeScale = opts.timeScale ?? 1;
  let tuyaMac = (opts.tuyaMac ?? mac).replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  if (tuyaMac.length !== 12) throw new Error(`sim: tuyaMac must be 12 hex digits, got ${opts.tuyaMac}`);
  const esphomeVersion = opts.esphomeVersion ?? '2025.5.0';
  /** Kickstart's ESPHome is `min` or newer. */
  const webAtLeast = (min: string) => esphomeAtLeast(esphomeVersion, min);
  const finalVersion = opts.finalVersion ?? '2025.5.0';
  const lanIp = opts.lanIp ?? '127.0.0.1';
  const kickstartName = `kickstart-${mcu}`;
  const board = `generic-${mcu}-qfn32-tuya`;
  const faults: SimFaults = { ...(opts.faults ?? {}) };

  // Build date shown in the LibreTiny banner, from the Kickstart version (vYY.MM.DD).
  const kv = /v?(\d\d)\.(\d\d)\.(\d\d)/.exec(kickstartVersion);
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const buildDate = kv ? `${months[Number(kv[2]) - 1] ?? 'Jan'} ${kv[3]} 20${kv[1]}` : 'May 28 2025';
  const banner = `LibreTiny v1.9.0 on ${board}, compiled at ${buildDate} 12:00:00, GCC 10.3.1 (-Os)`;

  // ----- persistent state (survives reboots) -----
  let firmware: Firmware = 'tuya';
  let phase: Phase = 'off';
  let wifi: { ssid: string; psk: string } | undefined;
  let final: FinalInfo | undefined;
  // What the uploaded firmware drives: its relays (pin -> number), the buttons it reads, its LEDs. The UF2 payload
  // may name a relay/button pin (a firmware built for other pins); otherwise it was built for this wiring.
  let finalPins: { relays: Map<string, number>; buttons: Map<string, number>; stateLed?: string; statusLed?: string } =
    { relays: new Map(), buttons: new Map() };
  let finalEncrypted = true;
  let finalVer = finalVersion;
  // The config the final firmware was built from (the fake esphome's payload), its preferences in flash, and the
  // firmware itself while it runs (its entities, timers, the tuya component).
  let finalConfig: Record<string, unknown> | undefined;
  const flashPrefs = new Map<string, unknown>();
  let device: EsphomeDevice | undefined;
  let hung = false; // neverReboot fault: the new firmware does not come up until a power cycle
  // the stock firmware's pairing side: its AP, whether cloudcutter's exploit replaced its keys
  const tuya = {
    ap: null as string | null, exploited: false, joined: null as string | null,
    apTimer: undefined as Later | undefined,
  };
  // every AP the plug had on the air, with times (nmcli's scans in the fakes look back at it)
  type OnAir = { ssid: string; bssid: string; security: string; signal: number; gateway: string; address: string };
  const air: (OnAir & { from: number; to: number | null })[] = [];
  let closed = false;
  let dropUsed = false;
  const uploads: SimUpload[] = [];

  // ----- per-boot state -----
  let bootAt = Date.now();
  let resetReason = 'Power-On';
  let portalStarted = false; // captive portal ran this boot: its onNotFound answers "File not found"
  let lastUpdateError: UpdateError | null = null; // Update.hasError() survives until the next Update.begin()
  let otaSuccess = false; // 2025.7+: the OTA handler's ota_success_, reset when an upload starts
  const pins = new Map<string, PinState>();
  const held = new Set<string>(); // button pins pulled to GND right now
  const scan = { pin: null as string | null, mode: -1, state: -1 };
  const values: Record<string, string> = {};
  let finalRelays: Record<number, boolean> = {}; // the final firmware's switch states by relay number

  // ----- timers and connections (all released on close) -----
  const timers = new Set<NodeJS.Timeout>();
  /** Runs `fn` once `ms` have passed by the clock: at least that long (Node's timers may fire a millisecond early). */
  function later(ms: number, fn: () => void): Later {
    const due = Date.now() + ms;
    const handle = {} as Later;
    const arm = (wait: number) => {
      const t = setTimeout(() => {
        timers.delete(t);
        if (closed) return;
        if (Date.now() < due) return arm(due - Date.now());
        fn();
      }, wait);
      timers.add(t);
      handle.timer = t;
    };
    arm(ms);
    return handle;
  }
  function cancel(l: Later | undefined): void {
    if (l) {
      clearTimeout(l.timer);
      timers.delete(l.timer);
    }
  }
  let phaseTimer: Later | undefined;
  let joinTimer: Later | undefined;
  let announceTimer: Later | undefined;
  const deviceSockets = new Set<net.Socket>(); // TCP connections to the plug (die when it reboots)
  const sse = new Set<{ res: http.ServerResponse; ping: NodeJS.Timeout }>();
  const allSockets = new Set<net.Socket>();
  const apiSockets = new Set<net.Socket>();

  function millis(): number {
    return Math.max(1, Date.now() - bootAt);
  }

  let apiPort = 0; // the API's port, fixed once chosen (the mDNS record carries it)
  function setPhase(p: Phase): void {
    if (phase === p) return;
    phase = p;
    noteAir();
    if (p === 'kickstart-lan' || p === 'final') announce();
    else cancel(announceTimer);
    apiListening(p !== 'off' && p !== 'tuya');
    events.emit('phase', p);
  }

  /**
   * The API port exists only while ESPHome runs: a plug that is off or rebooting refuses, it does not accept. Should
   * the port have been taken meanwhile, the plug answers on another one and says so on mDNS, as after a new lease.
   */
  function apiListening(on: boolean): void {
    if (!apiPort || closed || on === apiServer.listening) return;
    if (!on) return void apiServer.close();
    void listenApi(apiPort).then(async (ok) => {
      if (ok || closed) return;
      apiPort = await ownPort('tcp', listenApi);
      if (phase === 'kickstart-lan' || phase === 'final') announce();
    }).catch(() => { /* no port at all: unreachable */ });
  }
  /** Listens on `port`; false when it is taken. */
  const listenApi = (port: number) => new Promise<boolean>((resolve) => {
    if (closed || apiServer.listening) return resolve(true);
    const fail = () => resolve(false);
    apiServer.once('error', fail);
    try {
      apiServer.listen(port, '127.0.0.1', () => (apiServer.off('error', fail), resolve(true)));
    } catch {
      apiServer.off('error', fail);
      resolve(true); // a listen already under way
    }
  });

  // ---------------- on the air (the Tuya pairing AP, Kickstart's AP) ----------------
  function onAir(): { ssid: string; bssid: string; gateway: string; address: string } | null {
    // a BK72xx's soft AP answers with the station MAC + 1
    const plus1 = (hex: string) =>
      (BigInt(`0x${hex}`) + 1n).toString(16).toUpperCase().padStart(12, '0').match(/../g)!.join(':');
    if (phase === 'kickstart-ap')
      return { ssid: kickstartName, bssid: plus1(mac), gateway: AP_IP, address: '192.168.4.2/24' };
    if (phase === 'tuya' && firmware === 'tuya' && tuya.ap)
      return { ssid: tuya.ap, bssid: plus1(tuyaMac), gateway: '192.168.175.1', address: '192.168.175.100/24' };
    return null;
  }
  function noteAir(): void {
    const now = onAir();
    const open = air.find((a) => a.to === null);
    if (open && open.ssid === now?.ssid) return;
    const t = Date.now();
    if (open) open.to = t;
    if (now) air.push({ ...now, security: '', signal: 68, from: t, to: null });
    if (air.length > 200) air.splice(0, air.length - 200);
  }

  // ---------------- hardware ----------------
  function resetPins(): void {
    pins.clear();
    for (const p of BK7231_PINS) pins.set(p, { mode: 'INPUT', out: 0 });
    scan.pin = null;
    scan.mode = -1;
    scan.state = -1;
    hardwareChanged();
  }

  function level(pin: string): 0 | 1 {
    if (phase === 'off') return 0;
    const st = pins.get(pin) ?? { mode: 'INPUT', out: 0 };
    if (st.mode === 'OUTPUT') return st.out;
    if (held.has(pin) || closedSwitches.has(pin)) return 0;
    return st.mode === 'INPUT_PULLUP' ? 1 : 0;
  }

  function setPin(pin: string, st: PinState): void {
    pins.set(pin, st);
    hardwareChanged();
  }

  /** A level on the board may have changed: coils, the meter, the firmware's inputs, whoever waits on the hardware. */
  function hardwareChanged(): void {
    const coil = (p: string) => phase !== 'off' && pins.get(p)?.mode === 'OUTPUT' &&
      level(p) === (activeLow.has(p) ? 0 : 1);
    for (const l of latches) l.relay.drive(coil(l.set), coil(l.reset));
    if (energyChip) {
      const hw = hardware();
      const draws = hw.relay || (!relayPins.size && !latches.length);
      if (draws !== metering) {
        metering = draws;
        energyChip.setLoad(draws ? meterLoad : { volts: meterLoad.volts, amps: 0, watts: 0 });
      }
    }
    device?.inputsChanged();
    events.emit('hardware');
  }

  function finalPinsFor(p: Record<string, unknown>): typeof finalPins {
    const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
    const relay = str(p.relay);
    const button = str(p.button);
    return {
      relays: relay ? new Map([[relay, 1]]) : new Map(relayPins),
      buttons: button ? new Map([[button, 1]]) : new Map(buttonPins),
      stateLed: str(p.state_led),
      statusLed: str(p.status_led),
    };
  }

  function applyFinalOutputs(): void {
    // The final firmware (the generated configs): a gpio switch per relay (inverted where active low), buttons pulled
    // up, the state LED following relay 1 (inverted), status LED off. A bulb's light output is not modelled.
    resetPins();
    for (const pin of finalPins.buttons.keys()) setPin(pin, { mode: 'INPUT_PULLUP', out: 0 });
    for (const [pin, n] of finalPins.relays) {
      const on = finalRelays[n] === true;
      setPin(pin, { mode: 'OUTPUT', out: on !== activeLow.has(pin) ? 1 : 0 });
    }
    const anyOn = Object.values(finalRelays).some(Boolean);
    if (finalPins.stateLed) setPin(finalPins.stateLed, { mode: 'OUTPUT', out: anyOn ? 0 : 1 });
    if (finalPins.statusLed) setPin(finalPins.statusLed, { mode: 'OUTPUT', out: 1 });
  }

  /** The board as the final firmware reaches it. */
  const boardIo: Board = {
    clock: realClock,
    pinMode(pin: string, mode: BoardPinMode) {
      const st = pins.get(pin) ?? { mode: 'INPUT', out: 0 };
      setPin(pin, { mode, out: mode === 'OUTPUT' ? st.out : 0 });
    },
    write(pin: string, high: boolean) {
      const st = pins.get(pin) ?? { mode: 'INPUT', out: 0 };
      // digital_write before pinMode(OUTPUT) only sets the output latch (GPIOSwitch writes before and after setup).
      if (st.mode !== 'OUTPUT') st.out = high ? 1 : 0;
      else setPin(pin, { mode: 'OUTPUT', out: high ? 1 : 0 });
    },
    read: (pin: string) => level(pin) === 1,
    uart: (rx, tx) => ({
      heard: uartPeers.filter((u) => rx !== undefined && u.rx === rx).map((u) => u.peer),
      hearing: uartPeers.filter((u) => tx !== undefined && u.tx === tx && u.peer.receive).map((u) => u.peer),
    }),
  };

  /** The final firmware built from its config starts (a boot): its components set up, its loop runs. */
  function startDevice(): void {
    device?.stop();
    const f = final ?? { name: 'esphome-device', board };
    device = new EsphomeDevice(finalConfig!, boardIo, { name: f.name, friendlyName: f.friendlyName, flash: flashPrefs,
      esphomeVersion: finalVer,
      ltVersion: `v1.9.1 on ${f.board}, compiled at ${buildDate} 12:00:00, GCC 10.3.1 (-Os)` });
    device.start();
    events.emit('device', device);
  }

  /** The firmware ends: a safe reboot writes its pending preferences first, losing the power does not. */
  function stopDevice(safe: boolean): void {
    device?.stop({ sync: safe });
    device = undefined;
  }

  /** The final firmware's on_press: button N toggles relay N; button 0 (all) turns all off if any is on, else on. */
  function finalPress(pin: string): void {
    const n = finalPins.buttons.get(pin);
    const numbers = [...new Set(finalPins.relays.values())].sort((a, b) => a - b);
    if (n === undefined || !numbers.length) return;
    if (numbers.length === 1) finalRelays[numbers[0]] = !finalRelays[numbers[0]];
    else if (n === 0) {
      const anyOn = numbers.some((k) => finalRelays[k]);
      for (const k of numbers) finalRelays[k] = !anyOn;
    } else if (numbers.includes(n)) finalRelays[n] = !finalRelays[n];
    applyFinalOutputs();
  }

  function hardware(): SimHardware {
    const levels: Record<string, 'HIGH' | 'LOW'> = {};
    for (const p of BK7231_PINS) levels[p] = level(p) ? 'HIGH' : 'LOW';
    const driven = (p: string) => pins.get(p)?.mode === 'OUTPUT' && phase !== 'off';
    const on = (p: string) => driven(p) && level(p) === (activeLow.has(p) ? 0 : 1);
    const leds: Record<string, boolean> = {};
    for (const [pin, colour] of Object.entries(wiring.leds ?? {})) {
      leds[colour] = leds[colour] || (driven(pin) && level(pin) === 0); // two LEDs of one colour: either lit shows
    }
    const relays: Record<number, boolean> = {};
    for (const [pin, n] of relayPins) relays[n] = relays[n] || on(pin);
    for (const l of latches) relays[l.n] = relays[l.n] || l.relay.closed;
    const lit = new Set([...channelPins].filter(([pin]) => on(pin)).map(([, colour]) => colour));
    const light = CHANNEL_COLOURS.filter((c) => lit.has(c));
    const switches: Record<number, boolean> = {};
    for (const [pin, n] of wallSwitches) switches[n] = closedSwitches.has(pin);
    return { relay: Object.values(relays).some(Boolean), relays, leds, light, levels, switches };
  }

  // ---------------- Kickstart entities ----------------
  const sensorValue = (v: number, unit: string) => ({ state: `${v} ${unit}`, value: v });
  const textValue = (key: string) => () => ({ state: values[key] ?? '', value: values[key] ?? '' });
  const entities: Entity[] = [
    { domain: 'sensor', name: 'Heap Free', icon: 'mdi:counter', category: 2, unit: 'B', read: () => sensorValue(phase === 'kickstart-ap' ? 91232 : 94560, 'B') },
    { domain: 'sensor', name: 'Loop Time', icon: 'mdi:timer-outline', category: 2, unit: 'ms', read: () => sensorValue(16, 'ms') },
    { domain: 'sensor', name: 'Uptime', icon: 'mdi:timer-outline', category: 2, unit: 's', read: () => sensorValue(Math.floor(millis() / 1000), 's') },
    { domain: 'button', name: 'Reset to Factory Settings', icon: 'mdi:restart-alert', category: 1 },
    { domain: 'button', name: 'Restart', icon: 'mdi:restart', category: 1 },
    { domain: 'text_sensor', name: '-> Pin State', icon: '', category: 0, read: textValue('pin_state') },
    { domain: 'text_sensor', name: 'IP Address', icon: '', category: 2, read: textValue('ip') },
    { domain: 'text_sensor', name: 'Device Info', icon: 'mdi:chip', category: 2, read: textValue('device_info') },
    { domain: 'text_sensor', name: 'Reset Reason', icon: 'mdi:restart', category: 2, read: textValue('reset_reason') },
    { domain: 'text_sensor', name: 'LibreTiny Version', icon: 'mdi:new-box', category: 2, read: textValue('lt_version') },
    { domain: 'select', name: '-> Pin Mode', icon: '', category: 0, options: PIN_MODES, read: textValue('mode') },
    { domain: 'select', name: '-> Pin', icon: '', category: 0, options: PIN_OPTIONS, read: textValue('pin') },
  ].map((e) => ({ ...e, objectId: objectIdOf(e.name) }) as Entity);
  const entityByName = (name: string) => entities.find((e) => e.name === name)!;

  function entityJson(e: Entity, detailAll: boolean): string {
    // web_server's set_json_id(): `domain-object_id` up to 2025.x; `domain/Name` in 2026.1.0-2026.1.2; from 2026.1.3
    // `name_id` carries `domain/Name` and `id` is the legacy form again, until 2026.8 makes `id` the name form.
    const legacyId = `${e.domain}-${e.objectId}`;
    const nameId = `${e.domain}/${e.name}`;
    const o: Record<string, unknown> = {};
    if (webAtLeast('2026.8.0')) o.id = nameId;
    else if (webAtLeast('2026.1.3')) Object.assign(o, { name_id: nameId, id: legacyId });
    else if (webAtLeast('2026.1.0')) o.id = nameId;
    else o.id = legacyId;
    if (detailAll) {
      if (webAtLeast('2026.1.0')) o.domain = e.domain;
      o.name = e.name;
      o.icon = e.icon;
      o.entity_category = e.category;
    }
    if (e.read) {
      const { state, value } = e.read();
      o.value = value;
      o.state = state;
    }
    if (detailAll && e.options) o.option = [...e.options];
    if (detailAll && e.unit) o.uom = e.unit;
    return JSON.stringify(o);
  }

  function sseSend(frame: string): void {
    for (const c of sse) c.res.write(frame);
  }
  function publish(e: Entity): void {
    sseSend(sseFrame(entityJson(e, false), 'state'));
  }
  function log(tag: string, line: number, message: string, color = LOG_DEBUG, letter = 'D'): void {
    sseSend(sseFrame(`${color}[${letter}][${tag}:${String(line).padStart(3, '0')}]: ${message}${LOG_RESET}`, 'log', millis()));
  }
  function setText(key: string, entityName: string, value: string): void {
    values[key] = value;
    publish(entityByName(entityName));
  }

  // pinscan (components/pinscan/pinscan.cpp): set_pin / set_mode / the 50 ms poll that publishes changes
  function scanSetPin(pin: string | null): void {
    if (scan.pin !== pin && scan.pin !== null) setPin(scan.pin, { mode: 'INPUT', out: 0 });
    scan.pin = pin;
  }
  function scanSetMode(mode: number): void {
    if (scan.pin === null) return;
    const p = scan.pin;
    if (mode === 0 || mode === 1) {
      setPin(p, { mode: mode === 0 ? 'INPUT' : 'INPUT_PULLUP', out: 0 });
      scan.mode = 1;
    } else if (mode === 2 || mode === 3) {
      setPin(p, { mode: 'OUTPUT', out: mode === 2 ? 1 : 0 });
      scan.mode = 0;
    } else {
      setPin(p, { mode: 'INPUT', out: 0 });
      return;
    }
    scan.state = -1;
    log('pinscan', 172, `Changed pin to ${p.slice(1)}, mode: ${PIN_MODES[mode]}`);
    scanPoll();
  }
  function scanPoll(): void {
    if (firmware !== 'kickstart' || (phase !== 'kickstart-ap' && phase !== 'kickstart-lan')) return;
    if (scan.mode !== 1 || scan.pin === null) return;
    const now = level(scan.pin);
    if (now === scan.state) return;
    scan.state = now;
    log('pinscan', 181, `Pin changed to ${now ? 'HIGH' : 'LOW'}`);
    setText('pin_state', '-> Pin State', now ? 'HIGH' : 'LOW');
  }
  function selectSet(e: Entity, option: string | null): void {
    if (option === null || !e.options!.includes(option)) return; // "Option X is not a valid option" (a warning, HTTP still 200)
    if (e.name === '-> Pin') {
      values.pin = option;
      publish(e);
      const idx = PIN_OPTIONS.indexOf(option as (typeof PIN_OPTIONS)[number]) - 1;
      scanSetPin(idx < 0 ? null : BK7231_PINS[idx]);
      scanSetMode(PIN_MODES.indexOf(values.mode as (typeof PIN_MODES)[number]));
    } else {
      values.mode = option;
      publish(e);
      scanSetMode(PIN_MODES.indexOf(option as (typeof PIN_MODES)[number]));
    }
  }

  // ---------------- boot / reboot ----------------
  function killDeviceConnections(): void {
    for (const c of sse) {
      clearInterval(c.ping);
      c.res.destroy();
    }
    sse.clear();
    for (const s of deviceSockets) s.destroy();
    deviceSockets.clear();
    for (const s of apiSockets) s.destroy();
    apiSockets.clear();
  }

  function freshBoot(reason: string): void {
    bootAt = Date.now();
    resetReason = reason;
    portalStarted = false;
    lastUpdateError = null;
    otaSuccess = false;
    held.clear();
    resetPins();
    for (const k of Object.keys(values)) delete values[k];
    values.pin = PIN_OPTIONS[0];
    values.mode = PIN_MODES[0];
    values.reset_reason = resetReason;
    values.lt_version = banner.slice(10);
    values.device_info = `${esphomeVersion}|Chip: ${MCU} @ 120 MHz|Board: ${board}|Reset: ${resetReason}|Flash: 2048 KiB`;
  }

  function canJoin(): boolean {
    return !!wifi && wifi.ssid === home.ssid && wifi.psk === home.password && !faults.neverJoinLan;
  }

  function startAp(): void {
    portalStarted = true;
    values.ip = '';
    setPhase('kickstart-ap');
  }

  function joinLan(): void {
    values.ip = lanIp;
    setPhase('kickstart-lan');
    publish(entityByName('IP Address'));
  }

  /** The firmware starts running (after a power cycle, a reboot, or right away for flashKickstart). */
  function boot(): void {
    cancel(phaseTimer);
    cancel(joinTimer);
    if (firmware === 'tuya') return setPhase('tuya');
    if (firmware === 'final') {
      if (hung) return setPhase('off');
      if (!finalConfig) applyFinalOutputs();
      setPhase('final'); // the reboot delay (rebootMs / bootMs) covers joining the network
      // Powered and running: the firmware's setup reads its inputs as they are now.
      if (finalConfig) startDevice();
      return;
    }
    // Kickstart: no saved network -> AP + captive portal at once; saved one -> join (or fall back to the AP).
    if (!wifi) return startAp();
    phaseTimer = later(joinMs, () => (canJoin() ? joinLan() : startAp()));
  }

  function reboot(reason: string, delayMs: number): void {
    stopDevice(reason !== 'Power-On');
    killDeviceConnections();
    cancel(phaseTimer);
    cancel(joinTimer);
    setPhase('off');
    freshBoot(reason);
    phaseTimer = later(delayMs, () => {
      freshBoot(reason);
      boot();
    });
  }

  // ---------------- mDNS ----------------
  let mdns: ReturnType<typeof makeMdns> | undefined;
  type Rec = { name: string; type: string; ttl: number; data: unknown; flush?: boolean };
  function mdnsView(): { host: string; services: { type: string; instance: string; port: number; txt: string[] }[] } | null {
    if (phase === 'kickstart-lan') {
      return {
        host: `${kickstartName}.local`,
        services: [
          {
            type: '_esphomelib._tcp.local', instance: kickstartName, port: KICKSTART_API_PORT,
            txt: [`version=${esphomeVersion}`, `mac=${mac.toLowerCase()}`, `platform=${MCU}`, `board=${board}`, 'network=wifi',
              'project_name=lt.kickstart', 'project_version=1.0',
              `package_import_url=github://libretiny-eu/esphome-kickstart/yaml/import-${mcu}.yaml@master`],
          },
          { type: '_http._tcp.local', instance: kickstartName, port: 80, txt: [] },
        ],
      };
    }
    if (phase === 'final' && final) {
      const txt = [...(final.friendlyName ? [`friendly_name=${final.friendlyName}`] : []), `version=${finalVer}`, `mac=${mac.toLowerCase()}`,
        `platform=${MCU}`, `board=${final.board}`, 'network=wifi', ...(finalEncrypted ? [`api_encryption=${API_ENCRYPTION}`] : [])];
      return { host: `${final.name}.local`, services: [{ type: '_esphomelib._tcp.local', instance: final.name, port: apiPort, txt }] };
    }
    return null;
  }
  function serviceRecords(svc: { type: string; instance: string; port: number; txt: string[] }, host: string): { ptr: Rec; srv: Rec; txt: Rec } {
    const fqdn = `${svc.instance}.${svc.type}`;
    return {
      ptr: { name: svc.type, type: 'PTR', ttl: 120, data: fqdn },
      srv: { name: fqdn, type: 'SRV', ttl: 120, flush: true, data: { priority: 0, weight: 0, port: svc.port, target: host } },
      txt: { name: fqdn, type: 'TXT', ttl: 120, flush: true, data: svc.txt.length ? svc.txt : [''] },
    };
  }
  /** The responder went quiet (mdnsStopsAfterMs after boot) and no API client keeps it awake. */
  function mdnsQuiet(): boolean {
    return opts.mdnsStopsAfterMs !== undefined && millis() > opts.mdnsStopsAfterMs && apiSockets.size === 0;
  }
  function announce(): void {
    if (!mdns) return;
    const send = () => {
      const v = mdnsView();
      if (!v || !mdns || mdnsQuiet()) return;
      const answers: Rec[] = [];
      for (const s of v.services) {
        const r = serviceRecords(s, v.host);
        answers.push(r.ptr, r.srv, r.txt);
      }
      answers.push({ name: v.host, type: 'A', ttl: 120, flush: true, data: lanIp });
      mdns.respond({ answers } as never);
    };
    send();
    cancel(announceTimer);
    announceTimer = later(1000, send);
  }
  function onQuery(q: { id?: number; questions: { name: string; type: string }[] }, rinfo: { address: string; port: number }): void {
    const v = mdnsView();
    if (!v || !mdns || !isLoopback(rinfo.address) || mdnsQuiet()) return;
    const answers: Rec[] = [];
    const additionals: Rec[] = [];
    const a: Rec = { name: v.host, type: 'A', ttl: 120, flush: true, data: lanIp };
    const add = (list: Rec[], r: Rec) => {
      if (!list.some((x) => x.name === r.name && x.type === r.type && JSON.stringify(x.data) === JSON.stringify(r.data))) list.push(r);
    };
    for (const question of q.questions) {
      const name = question.name.toLowerCase();
      const type = question.type;
      if (name === '_services._dns-sd._udp.local' && (type === 'PTR' || type === 'ANY')) {
        for (const s of v.services) add(answers, { name: '_services._dns-sd._udp.local', type: 'PTR', ttl: 120, data: s.type });
      }
      for (const s of v.services) {
        const r = serviceRecords(s, v.host);
        if (name === s.type && (type === 'PTR' || type === 'ANY')) {
          add(answers, r.ptr);
          add(additionals, r.srv);
          add(additionals, r.txt);
          add(additionals, a);
        }
        if (name === `${s.instance}.${s.type}`) {
          if (type === 'SRV' || type === 'ANY') add(answers, r.srv);
          if (type === 'TXT' || type === 'ANY') add(answers, r.txt);
          if (type === 'SRV' || type === 'ANY') add(additionals, a);
        }
      }
      if (name === v.host && (type === 'A' || type === 'ANY')) add(answers, a);
    }
    if (!answers.length) return;
    const extra = additionals.filter((r) => !answers.some((x) => x.name === r.name && x.type === r.type));
    mdns.respond({ answers, additionals: extra } as never);
    if (rinfo.port !== mdnsPort) {
      // A legacy (one-shot) querier: the answer goes back by unicast, echoing its id and questions.
      mdns.respond({ id: q.id, questions: q.questions, answers, additionals: extra } as never, { port: rinfo.port, address: rinfo.address });
    }
  }
  const mdnsPort = opts.mdnsInterface === false ? undefined : opts.mdnsPort ?? await freeUdpPort();
  if (mdnsPort !== undefined) {
    mdns = makeMdns({ interface: opts.mdnsInterface || '127.0.0.1', bind: '0.0.0.0', port: mdnsPort, loopback: true,
      reuseAddr: true });
    mdns.on('query', onQuery as never);
    mdns.on('error', () => { /* port trouble: the plug is just not discoverable */ });
    mdns.on('warning', () => {});
    await new Promise<void>((r) => {
      mdns!.once('ready', () => r());
      mdns!.once('error', () => r());
    });
  }

  // ---------------- native API port ----------------
  // Kickstart has `api:` without encryption (plaintext); the final firmware speaks Noise with the key it was built
  // with. Both listen on the same port, reachable by IP whether or not mDNS answers.
  let unknownKey: Buffer | undefined; // the key of an encrypted final firmware whose key the test did not give
  const apiServer = net.createServer((sock) => {
    const kickstart = firmware === 'kickstart' && (phase === 'kickstart-ap' || phase === 'kickstart-lan');
    if (closed || !(kickstart || phase === 'final')) return sock.destroy();
    apiSockets.add(sock);
    const serving = kickstart ? undefined : device; // the firmware this connection talks to (it dies with it)
    serving?.clientsChanged(apiSockets.size);
    sock.on('close', () => {
      apiSockets.delete(sock);
      if (serving === device) serving?.clientsChanged(apiSockets.size);
    });
    sock.on('error', () => {});
    if (faults.apiClosesOnAccept) return void sock.end();
    if (faults.apiSilent) return; // accepted, read by nobody, answered never
    const macAddress = mac.match(/../g)!.join(':');
    if (kickstart) {
      serveNativeApi(sock, {
        info: { name: kickstartName, macAddress, esphomeVersion, model: board, manufacturer: 'Beken',
          compilationTime: `${buildDate}, 12:00:00` },
      }, { keepaliveMs: opts.apiKeepaliveMs });
      return;
    }
    const f = final ?? { name: 'esphome-device', board };
    const key = f.apiKey ? Buffer.from(f.apiKey, 'base64')
      : finalEncrypted ? (unknownKey ??= crypto.randomBytes(32)) : undefined;
    serveNativeApi(sock, {
      info: { name: f.name, friendlyName: f.friendlyName, macAddress, esphomeVersion: finalVer, model: f.board,
        manufacturer: 'Beken', compilationTime: 'May 28 2025, 12:00:00' },
      key,
      password: f.apiPassword,
      entities: serving,
    }, { keepaliveMs: opts.apiKeepaliveMs });
  });
  apiServer.on('error', () => {});
  apiPort = await ownPort('tcp', listenApi);

  // ---------------- HTTP ----------------
  function send(res: http.ServerResponse, status: number, body: string | Buffer = '', type = 'text/plain', extra: Record<string, string> = {}): void {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': String(Buffer.byteLength(body)), 'Access-Control-Allow-Origin': '*', ...extra });
    res.end(body);
  }
  function notFound(res: http.ServerResponse): void {
    // The captive portal's onNotFound (set once it has started this boot), else AsyncWebServer's bare 404.
    if (portalStarted) send(res, 404, 'File not found', 'text/html');
    else send(res, 404);
  }
  const indexHtml = zlib.gzipSync(Buffer.from('<!DOCTYPE html><html><head><meta charset=UTF-8><title>ESPHome</title></head><body><esp-app></esp-app></body></html>'));
  const portalHtml = zlib.gzipSync(Buffer.from('<!DOCTYPE html><html><head><meta charset=UTF-8><title>WiFi Networks</title></head><body><form action="/wifisave"></form></body></html>'));

  function simState(): Record<string, unknown> {
    return {
      phase, mcu, mac, url, port, apiPort, firmware,
      tuyaMac, tuyaAp: tuya.ap, exploited: tuya.exploited, air,
      wifi: wifi ? { ssid: wifi.ssid } : null,
      hardware: hardware(), final: final ?? null, uploads, faults,
      entities: device?.entities().map((e) => ({ domain: e.domain, name: e.name, key: e.key, state: e.state() })),
      datapoints: tuyaMcu?.datapoints,
    };
  }

  async function handleSim(req: http.IncomingMessage, res: http.ServerResponse, path: string, q: URLSearchParams): Promise<void> {
    const json = (status: number, o: unknown) => send(res, status, JSON.stringify(o), 'application/json');
    if (path === '/_sim/state' && req.method === 'GET') return json(200, simState());
    if (req.method !== 'POST' && path !== '/_sim/wait') return json(405, { error: 'use POST' });
    switch (path) {
      case '/_sim/flash-kickstart': sim.flashKickstart(); return json(200, simState());
      case '/_sim/ap-mode':
        try {
          await sim.enterApMode();
        } catch (e) {
          return json(409, { error: (e as Error).message, ...simState() });
        }
        return json(200, simState());
      case '/_sim/exploit':
      case '/_sim/configure-wifi': {
        // cloudcutter over the pairing AP: the exploit freezes the plug, a new Wi-Fi makes it leave AP mode
        if (!tuya.ap) return json(409, { error: `${path}: the plug has no pairing AP up`, ...simState() });
        let body: { ok?: boolean; ssid?: string } = {};
        try {
          body = JSON.parse((await readBody(req, 65536)).toString('utf8') || '{}') as typeof body;
        } catch { /* defaults */ }
        tuya.ap = null;
        if (path === '/_sim/exploit') {
          if (body.ok !== false) tuya.exploited = true;
        } else tuya.joined = body.ssid ?? 'cloudcutterflash';
        noteAir();
        return json(200, simState());
      }
      case '/_sim/power-cycle': sim.powerCycle(); return json(200, simState());
      case '/_sim/press':
        try {
          await sim.pressButton(Number(q.get('ms') ?? 200), q.get('pin') ?? undefined);
        } catch (e) {
          return json(409, { error: (e as Error).message, ...simState() });
        }
        return json(200, simState());
      case '/_sim/flip':
        try {
          sim.flipSwitch(q.get('pin') ?? '');
        } catch (e) {
          return json(409, { error: (e as Error).message, ...simState() });
        }
        return json(200, simState());
      case '/_sim/faults': {
        const body = await readBody(req, 65536);
        try {
          Object.assign(faults, JSON.parse(body.toString('utf8') || '{}'));
        } catch {
          return json(400, { error: 'faults: JSON object expected' });
        }
        return json(200, simState());
      }
      case '/_sim/wait': {
        const p = q.get('phase') as Phase;
        try {
          await sim.waitForPhase(p, Number(q.get('timeoutMs') ?? 5000));
          return json(200, simState());
        } catch (e) {
          return json(408, { error: (e as Error).message, ...simState() });
        }
      }
    }
    return json(404, { error: `no ${path}` });
  }

  function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
    return new Promise((resolve) => {
      const parts: Buffer[] = [];
      let n = 0;
      req.on('data', (d: Buffer) => {
        n += d.length;
        if (n <= limit) parts.push(d);
      });
      req.on('end', () => resolve(Buffer.concat(parts)));
      req.on('error', () => resolve(Buffer.concat(parts)));
      req.on('close', () => resolve(Buffer.concat(parts)));
    });
  }

  function handlePortal(req: http.IncomingMessage, res: http.ServerResponse, path: string, q: URLSearchParams): void {
    if ((path === '/config.json' || path === '/wifisave') && faults.portal500 && faults.portal500 > 0) {
      faults.portal500--;
      return send(res, 500, 'Internal Server Error');
    }
    if (path === '/') return send(res, 200, portalHtml, 'text/html', { 'Content-Encoding': 'gzip' });
    if (path === '/config.json') {
      // Built with printf like captive_portal.cpp: SSIDs go in unescaped.
      let body = `{"mac":"${mac.match(/../g)!.join(':')}","name":"${kickstartName}","aps":[{}`;
      for (const n of networks) body += `,{"ssid":"${n.ssid}","rssi":${n.rssi},"lock":${n.lock ? 1 : 0}}`;
      body += ']}';
      return send(res, 200, body, 'application/json', { 'cache-control': 'public, max-age=0, must-revalidate' });
    }
    // /wifisave: save, rescan, redirect; the plug then tries to join (AP stays up meanwhile).
    wifi = { ssid: q.get('ssid') ?? '', psk: q.get('psk') ?? '' };
    sim.wifi = wifi;
    log('captive_portal', 33, 'Captive Portal Requested WiFi Settings Change:', LOG_INFO, 'I');
    log('captive_portal', 34, `  SSID='${wifi.ssid}'`, LOG_INFO, 'I');
    log('captive_portal', 35, "  Password='[redacted]'", LOG_INFO, 'I');
    cancel(joinTimer);
    if (canJoin()) joinTimer = later(joinMs, () => { if (phase === 'kickstart-ap' && firmware === 'kickstart') joinLan(); });
    send(res, 302, '', 'text/plain', { Location: '/?save' });
  }

  function handleEvents(req: http.IncomingMessage, res: http.ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'Access-Control-Allow-Origin': '*' });
    // The config and the 10 s keepalive pings; the 2026 web server adds the uptime to both.
    const uptime = () => (webAtLeast('2026.1.3') ? { uptime: Math.floor(millis() / 1000) } : {});
    const config = JSON.stringify({ title: kickstartName, comment: '', ota: true, log: true, lang: 'en', ...uptime() });
    res.write(sseFrame(config, 'ping', millis(), 30000));
    for (const e of entities) res.write(sseFrame(entityJson(e, true), 'state'));
    const ping = setInterval(() => {
      res.write(sseFrame(webAtLeast('2026.1.3') ? JSON.stringify(uptime()) : '', 'ping', millis(), 30000));
    }, 10000);
    const client = { res, ping };
    sse.add(client);
    const drop = () => {
      clearInterval(ping);
      sse.delete(client);
    };
    res.on('close', drop);
    req.on('close', drop);
  }

  function handleEntity(req: http.IncomingMessage, res: http.ServerResponse, path: string, q: URLSearchParams): boolean {
    // web_server canHandle(): `/<domain>/...` with a domain this firmware has, sensors GET only, the rest GET or POST.
    const m = /^\/([^/]*)\/(.*)$/.exec(path);
    if (!m) return false;
    const domain = m[1];
    const get = req.method === 'GET';
    const post = req.method === 'POST';
    if (!((get && (domain === 'sensor' || domain === 'text_sensor')) || ((get || post) && (domain === 'select' || domain === 'button')))) return false;
    const url = parseEntityUrl(m[2], post);
    if (!url) {
      // 2026.1+: a URL match_url() cannot read (an action URL by GET, an extra or empty segment) reaches no handler.
      send(res, 404, 'Not Found', 'text/plain');
      return true;
    }
    const { id, method } = url;
    // 2026.1+ looks an entity up by its name first, then (until 2026.7) by the deprecated object id.
    const byName = webAtLeast('2026.1.0') ? entities.find((x) => x.domain === domain && x.name === id) : undefined;
    const byObjectId = () => entities.find((x) => x.domain === domain && x.objectId === id);
    const e = byName ?? (webAtLeast('2026.7.0') ? undefined : byObjectId());
    if (!e) {
      send(res, 404);
      return true;
    }
    if (get && method === '') {
      send(res, 200, entityJson(e, q.get('detail') === 'all'), 'application/json');
      return true;
    }
    if (domain === 'select' && method === 'set') {
      selectSet(e, q.has('option') ? q.get('option') : null);
      send(res, 200);
      return true;
    }
    if (domain === 'button' && method === 'press') {
      send(res, 200);
      setImmediate(() => {
        if (closed || firmware !== 'kickstart') return;
        if (e.name === 'Restart') {
          log('button', 20, "'Restart' Pressed.", LOG_DEBUG);
          reboot('SW Reboot', bootMs);
        } else {
          log('factory_reset.button', 17, 'Resetting...', LOG_INFO, 'I');
          wifi = undefined;
          sim.wifi = undefined;
          reboot('SW Reboot', bootMs);
        }
      });
      return true;
    }
    send(res, 404);
    return true;
  }

  /**
   * web_server's match_url() for what follows the domain: up to 2025.x `<id>[/<method>]` whatever the HTTP method
   * (so a GET of `/select/<id>/set` sets the option); from 2026.1 `<entity>` or, by POST only, `<entity>/<action>`
   * (a GET with two segments would name a sub-device, which Kickstart has none of), and no empty segments.
   */
  function parseEntityUrl(rest: string, post: boolean): { id: string; method: string } | null {
    if (!webAtLeast('2026.1.0')) {
      const slash = rest.indexOf('/');
      return slash < 0 ? { id: rest, method: '' } : { id: rest.slice(0, slash), method: rest.slice(slash + 1) };
    }
    if (rest === '') return { id: '', method: '' };
    const segs = rest.split('/');
    if (segs.some((x) => x === '')) return null;
    if (segs.length === 1) return { id: segs[0], method: '' };
    if (segs.length === 2 && post) return { id: segs[0], method: segs[1] };
    return null;
  }

  function handleHub(res: http.ServerResponse, path: string, q: URLSearchParams): void {
    if (path.slice(4) !== '/flash_read') return send(res, 200, banner);
    const toInt = (s: string | null, dflt: number) => (s === null ? dflt : Number.parseInt(s, 10) || 0);
    const offset = toInt(q.get('offset'), 0);
    const length = toInt(q.get('length'), FLASH_SIZE);
    // The real hub_api checks nothing (reads past 2 MiB wrap around on the chip); the sim refuses, so a bug shows.
    if (offset < 0 || length < 0 || offset + length > FLASH_SIZE) return send(res, 400, `sim: flash_read outside the 2 MiB flash (offset=${offset}, length=${length})`);
    flashReads.push([offset, length]);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(length), 'Access-Control-Allow-Origin': '*' });
    let pos = 0;
    // One 4 KiB block at a time, each arriving when the radio would have carried it.
    const msPerByte = (1000 / 1024 / (opts.flashReadKiBps ?? 120)) * timeScale;
    const start = Date.now();
    const pump = () => {
      if (res.destroyed) return;
      if (pos >= length) return void res.end();
      const n = Math.min(4096, length - pos);
      const due = start + (pos + n) * msPerByte - Date.now();
      if (due > 0) return void setTimeout(pump, due);
      const ok = res.write(flashRead(offset + pos, n));
      pos += n;
      if (ok) pump();
      else res.once('drain', pump);
    };
    pump();
  }

  /** The log tag of web uploads: web_server_base's own OTA handler, from 2025.7 the web_server OTA platform. */
  const otaTag = () => (webAtLeast('2025.7.0') ? 'web_server.ota' : 'web_server_base');

  function handleUpdate(req: http.IncomingMessage, res: http.ServerResponse): void {
    const finish = (update: Uf2Update | null, finalSeen: boolean) => {
      let into: 'final' | 'kickstart' | null = null;
      if (update && finalSeen && !update.error) {
        // Update.end(true): no error -> success; the new image is activated only if every block arrived.
        lastUpdateError = null;
        into = update.complete ? 'final' : 'kickstart';
      } else if (update?.error) {
        lastUpdateError = update.error;
      }
      if (faults.updateFails !== undefined) {
        lastUpdateError = { ard: 0, uf2: 0, text: faults.updateFails };
        delete faults.updateFails;
        into = null;
        if (update) update.error = lastUpdateError;
      }
      let body = lastUpdateError ? `Update Failed: ${lastUpdateError.text}\r\n` : 'Update Successful!';
      if (webAtLeast('2025.7.0')) {
        // The web_server OTA platform writes through the OTA backend and answers from its own success flag, with
        // no reason. LibreTiny's backend ends with Update.end() (not evenIfRemaining): a short image fails. A POST
        // that never reached the upload handler (no file part, no body) leaves the flag as it was.
        if (update) otaSuccess = finalSeen && !update.error && update.complete;
        into = otaSuccess && update ? 'final' : null;
        body = otaSuccess ? 'Update Successful!' : 'Update Failed!';
      }
      uploads.push({ bytes: update?.bytes ?? 0, ...(update?.familyId !== undefined ? { familyId: update.familyId } : {}), result: body.trim() });
      send(res, 200, body, 'text/plain', { Connection: 'close' });
      if (!into) return;
      log(otaTag(), 95, 'OTA update successful!', LOG_INFO, 'I');
      const info = update!.info();
      const target = into;
      later(100, () => {
        if (target === 'final') {
          firmware = 'final';
          const name = typeof info.name === 'string' && info.name ? info.name : 'esphome-device';
          final = {
            name,
            ...(typeof info.friendly_name === 'string' && info.friendly_name ? { friendlyName: info.friendly_name } : {}),
            board: typeof info.board === 'string' && info.board ? info.board : board,
            ...(typeof info.api_key === 'string' && info.api_key ? { apiKey: info.api_key } : {}),
          };
          sim.final = final;
          finalVer = typeof info.esphome_version === 'string' ? info.esphome_version : typeof info.version === 'string' ? info.version : finalVersion;
          finalEncrypted = info.api_encryption !== false;
          finalPins = finalPinsFor((info.pins ?? {}) as Record<string, unknown>);
          finalRelays = {};
          const config = info.config;
          finalConfig = config && typeof config === 'object' && !Array.isArray(config)
            ? config as Record<string, unknown> : undefined;
          if (faults.neverReboot) hung = true;
        }
        reboot('SW Reboot', target === 'final' ? rebootMs : bootMs);
      });
    };

    const cl = req.headers['content-length'];
    if (cl === undefined || Number(cl) === 0) {
      // AsyncWebServer only reads a body it has a Content-Length for: the handler answers at once.
      req.resume();
      return finish(null, false);
    }
    const type = String(req.headers['content-type'] ?? '');
    const bm = /^multipart\/[^;]*;.*boundary=("?)([^";]+)\1/i.exec(type);
    let update: Uf2Update | null = null;
    let finalSeen = false;
    let inFile = false;
    const parser = bm
      ? new MultipartStream(bm[2], {
        partStart: (h) => {
          inFile = /filename=/i.test(h['content-disposition'] ?? '');
          if (inFile) {
            update = new Uf2Update(FAMILY_ID[mcu]); // Update.begin(): aborts a running one, clears old errors
            finalSeen = false;
            lastUpdateError = null;
            log(otaTag(), 60, 'OTA Update Start: firmware.uf2', LOG_INFO, 'I');
          }
        },
        data: (chunk) => {
          if (inFile) update!.write(chunk);
        },
        partEnd: () => {
          if (inFile) finalSeen = true;
          inFile = false;
        },
      })
      : null;
    let received = 0;
    let dropped = false;
    req.on('data', (d: Buffer) => {
      if (dropped) return;
      received += d.length;
      if (faults.dropUploadAfterBytes !== undefined && !dropUsed && received >= faults.dropUploadAfterBytes) {
        dropUsed = true;
        dropped = true;
        const u = update as Uf2Update | null;
        uploads.push({ bytes: u?.bytes ?? 0, ...(u?.familyId !== undefined ? { familyId: u.familyId } : {}), result: 'dropped' });
        req.socket.destroy();
        return;
      }
      parser?.write(d);
      if (faults.slowUploadKiBps) {
        req.pause();
        setTimeout(() => req.resume(), (d.length / 1024 / faults.slowUploadKiBps) * 1000);
      }
    });
    req.on('end', () => {
      if (!dropped && !closed) finish(update, finalSeen);
    });
    req.on('error', () => {});
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://sim');
    let path: string;
    try {
      path = decodeURIComponent(u.pathname.replace(/\+/g, ' '));
    } catch {
      path = u.pathname;
    }
    const q = u.searchParams;
    if (path === '/_sim' || path.startsWith('/_sim/')) {
      deviceSockets.delete(req.socket); // a control request is never cut by a simulated reboot
      return handleSim(req, res, path, q);
    }
    if (phase === 'off' || phase === 'final' || closed) {
      // Nothing listens on port 80 (powered off, rebooting, or the final config has no web server).
      req.socket.destroy();
      return;
    }
    deviceSockets.add(req.socket);
    if (phase === 'tuya') return send(res, 404);
    const portalActive = phase === 'kickstart-ap';
    if (portalActive && req.method === 'GET' && (path === '/' || path === '/config.json' || path === '/wifisave')) return handlePortal(req, res, path, q);
    if (path === '/update' && req.method === 'POST') return handleUpdate(req, res);
    if (req.method === 'GET' && path.startsWith('/hub')) return handleHub(res, path, q);
    if (path === '/') return send(res, 200, indexHtml, 'text/html', { 'Content-Encoding': 'gzip' });
    if (path === '/events') return handleEvents(req, res);
    if (handleEntity(req, res, path, q)) return;
    notFound(res);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: Error) => {
      if (!res.headersSent) send(res, 500, `sim error: ${e.message}`);
    });
  });
  server.on('connection', (s) => {
    allSockets.add(s);
    s.on('close', () => {
      allSockets.delete(s);
      deviceSockets.delete(s);
    });
  });
  server.on('clientError', (_e, s) => s.destroy());
  await new Promise<void>((r) => server.listen(opts.port ?? 0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;

  // ---------------- initial state ----------------
  freshBoot('Power-On');
  switch (opts.phase ?? 'tuya') {
    case 'tuya': firmware = 'tuya'; setPhase('tuya'); break;
    case 'off': firmware = 'tuya'; break;
    case 'kickstart-ap': firmware = 'kickstart'; startAp(); break;
    case 'kickstart-lan':
      firmware = 'kickstart';
      wifi = { ssid: home.ssid, psk: home.password };
      joinLan();
      break;
    case 'final':
      firmware = 'final';
      wifi = { ssid: home.ssid, psk: home.password };
      final = opts.final ?? { name: 'esphome-device', board };
      finalPins = finalPinsFor({});
      finalConfig = opts.finalConfig;
      if (!finalConfig) applyFinalOutputs();
      setPhase('final');
      if (finalConfig) startDevice();
      break;
  }

  /** A firmware starting from nothing: no Wi-Fi settings, no final device, booting. */
  function newFirmware(): void {
    stopDevice(false);
    finalConfig = undefined;
    flashPrefs.clear();
    wifi = undefined;
    sim.wifi = undefined;
    final = undefined;
    sim.final = undefined;
    hung = false;
    freshBoot('Power-On');
  }

  /**
   * Resolves with what `ready` gives once it gives something, checked now and on each of `on`'s events; fails when
   * the plug is closed meanwhile, or after `timeoutMs` saying `late()`.
   */
  function until<T>(on: string[], ready: () => T | undefined, timeoutMs: number, what: string, late: () => string):
    Promise<T> {
    const now = ready();
    if (now !== undefined) return Promise.resolve(now);
    if (closed) return Promise.reject(new Error('sim: closed'));
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        const got = ready();
        if (got === undefined) return;
        done();
        resolve(got);
      };
      const onClose = () => (done(), reject(new Error(`sim: closed while waiting for ${what}`)));
      const t = setTimeout(() => (done(), reject(new Error(`sim: ${late()}`))), timeoutMs);
      function done() {
        clearTimeout(t);
        for (const e of on) events.off(e, check);
        events.off('closed', onClose);
      }
      for (const e of on) events.on(e, check);
      events.once('closed', onClose);
    });
  }

  const sim: SimPlug = {
    url, port, apiPort, mdnsPort, mcu, uploads, faults,
    get mac() { return mac; },
    wifi,
    final,
    get phase() { return phase; },
    get hardware() { return hardware(); },
    get buttons() { return Object.fromEntries(buttonPins); },
    wiring,
    tuyaMcu,
    energyChip,
    get device() { return device; },
    flashRead,
    flashReads,
    flipSwitch(pin: string) {
      if (!wallSwitches.has(pin)) {
        const known = [...wallSwitches.keys()].join(', ') || 'none';
        throw new Error(`sim: no wall switch on ${pin} (wall switches: ${known})`);
      }
      if (closedSwitches.has(pin)) closedSwitches.delete(pin);
      else closedSwitches.add(pin);
      hardwareChanged();
      scanPoll();
    },
    onHardware(listener) {
      const each = () => listener(hardware());
      events.on('hardware', each);
      return () => void events.off('hardware', each);
    },
    waitForHardware(pred, timeoutMs = 5000) {
      return until(['hardware'], () => { const hw = hardware(); return pred(hw) ? hw : undefined; }, timeoutMs,
        'the hardware', () => `hardware not as expected within ${timeoutMs} ms: ${JSON.stringify(hardware())}`);
    },
    waitForDevice(timeoutMs = 5000) {
      return until(['phase', 'device'], () => (phase === 'final' ? device : undefined), timeoutMs,
        'the final firmware', () => `no final firmware built from a config within ${timeoutMs} ms (phase ${phase})`);
    },
    get tuyaMac() { return tuyaMac; },
    get tuyaAp() { return tuya.ap; },
    newPlug() {
      // The next plug of a batch in the same hands: stock firmware, never paired, a MAC of its own.
      killDeviceConnections();
      for (const t of [phaseTimer, joinTimer, tuya.apTimer]) cancel(t);
      mac = randomMac();
      tuyaMac = mac;
      firmware = 'tuya';
      Object.assign(tuya, { ap: null, exploited: false, joined: null });
      noteAir();
      newFirmware();
      setPhase('tuya');
    },
    enterApMode() {
      if (closed) return Promise.reject(new Error('sim: closed'));
      if (firmware !== 'tuya') return Promise.reject(new Error('sim: only the stock Tuya firmware has a pairing AP'));
      // power-cycling: whatever AP was up goes down at once, the pairing AP comes after the dance
      cancel(tuya.apTimer);
      tuya.ap = null;
      tuya.joined = null;
      noteAir();
      const ms = (opts.apModeMs ?? (tuya.exploited ? 4000 : 12000)) * timeScale;
      return new Promise<void>((resolve) => {
        tuya.apTimer = later(ms, () => {
          if (firmware === 'tuya') {
            const suffix = tuyaMac.slice(-4);
            tuya.ap = tuya.exploited ? `A-${suffix}` : `${opts.tuyaApPrefix ?? 'SmartLife'}-${suffix}`;
            noteAir();
          }
          resolve();
        });
        events.once('closed', () => resolve());
      });
    },
    flashKickstart() {
      killDeviceConnections();
      cancel(phaseTimer);
      cancel(joinTimer);
      cancel(tuya.apTimer);
      firmware = 'kickstart';
      tuya.ap = null;
      newFirmware();
      setPhase('off');
      const bootMs = (opts.kickstartBootMs ?? 15000 + Math.random() * 15000) * timeScale;
      phaseTimer = later(bootMs, () => {
        freshBoot('Power-On');
        boot();
      });
    },
    powerCycle() {
      hung = false;
      tuyaMcu?.restart(); // the MCU loses power too: its next heartbeat answer says it restarted
      cancel(tuya.apTimer);
      tuya.ap = null; // a plain power cycle ends pairing mode; enterApMode() is the dance that starts it
      reboot('Power-On', bootMs);
    },
    async pressButton(holdMs = 200, pin = wiring.button) {
      if (!pin || !buttonPins.has(pin)) {
        const known = [...buttonPins.keys()].join(', ') || 'none';
        throw new Error(`sim: no button on ${pin ?? '(no pin given)'} (buttons: ${known})`);
      }
      held.add(pin);
      if (phase === 'final' && firmware === 'final' && !finalConfig) finalPress(pin);
      hardwareChanged();
      scanPoll();
      await new Promise<void>((r) => {
        const done = () => {
          clearTimeout(t);
          timers.delete(t);
          events.off('closed', done);
          r();
        };
        const t = setTimeout(done, holdMs);
        timers.add(t);
        events.once('closed', done);
      });
      held.delete(pin);
      if (closed) return;
      hardwareChanged();
      scanPoll();
    },
    waitForPhase(p, timeoutMs = 5000) {
      return until(['phase'], () => (phase === p ? true : undefined), timeoutMs, `phase ${p}`,
        () => `phase ${p} not reached within ${timeoutMs} ms (phase is ${phase})`).then(() => {});
    },
    async close() {
      if (closed) return;
      closed = true;
      stopDevice(false);
      for (const l of latches) l.relay.close();
      tuyaMcu?.close();
      energyChip?.close();
      for (const t of timers) clearTimeout(t);
      timers.clear();
      killDeviceConnections();
      events.emit('closed');
      const mdnsClosed = mdns ? new Promise<void>((r) => mdns!.destroy(() => r())) : Promise.resolve();
      server.closeAllConnections();
      for (const s of allSockets) s.destroy();
      await Promise.all([
        new Promise<void>((r) => server.close(() => r())),
        new Promise<void>((r) => (apiServer.listening ? apiServer.close(() => r()) : r())),
        mdnsClosed,
      ]);
    },
  };
  return sim;
}
