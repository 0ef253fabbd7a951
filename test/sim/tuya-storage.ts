// Test-side only (nothing here runs in flash.ts): builds Tuya's encrypted key-value storage, the SDK's "simple
// flash", into the flash image of a simulated BK7231T/N plug, so the reader in flash.ts can be tested against it.
// The layout follows tuya-cloudcutter/bk7231tools (analysis/kvstorage.py: KVStorage, KeyBlock, DataBlock,
// ProtectedBlock), openshwprojects/BK7231GUIFlashTool (Utils/TuyaConfig.cs), the flash maps of Tuya's BK7231T/N
// SDKs (tuya_hal_storge.c, tuya_os_adapt_storge.c), LibreTiny's "-tuya" board layouts, and what 24 public dumps
// (BK7231GUIFlashTool testDumps) contain. In short: a key block (AES-128-ECB, master key "qwertyuiopasdfgh"), then
// 14 data blocks and 3 swap blocks under the data key; 32 pages of 128 bytes a block; little-endian throughout.
import crypto from 'node:crypto';

export const TUYA_SECTOR = 0x1000;
export const TUYA_PAGE = 0x80;
export const TUYA_PAGES_PER_BLOCK = TUYA_SECTOR / TUYA_PAGE;
export const TUYA_MASTER_KEY = Buffer.from('qwertyuiopasdfgh', 'latin1');
export const TUYA_KEY_MAGIC = 0x13579753;
export const TUYA_DATA_MAGIC = 0x98761234;
/** SIMPLE_FLASH_KEY_ADDR of the BK7231T/N Tuya SDKs: 0x200000 - 0x3000 - 0xE000 - 0x1000. */
export const TUYA_STORAGE_OFFSET = 0x1ee000;
/** SIMPLE_FLASH_SIZE / 4096 and SIMPLE_FLASH_SWAP_SIZE / 4096 of the same SDKs. */
export const TUYA_DATA_BLOCKS = 14;
export const TUYA_SWAP_BLOCKS = 3;
/** Key block + data + swap: 0x12000 bytes, 0x1EE000-0x1FFFFF on a 2 MiB chip. */
export const TUYA_STORAGE_LENGTH = (1 + TUYA_DATA_BLOCKS + TUYA_SWAP_BLOCKS) * TUYA_SECTOR;
/** An inner key that many BK7231N plugs carry (it is in public dumps and boot logs; not a secret). */
export const TUYA_DEFAULT_INNER_KEY = Buffer.from('dbe5f5de2a14416abe3efa8db643bef8', 'hex');
export const FLASH_SIZE_2M = 0x200000;

const KEY_PART_1 = Buffer.from('8710_2M', 'latin1');
const KEY_PART_2 = Buffer.from('HHRRQbyemofrtytf', 'latin1');

export type TuyaValue = string | Buffer;

export interface TuyaStorageOptions {
  /** The 16-byte inner key the key block holds (default TUYA_DEFAULT_INNER_KEY). */
  innerKey?: Buffer;
  /** Data blocks in the main area (default 14). Three swap blocks always follow them. */
  blocks?: number;
  /**
   * Put a stale, older copy (generation one lower) of the block that holds user_param_key's index page (else the
   * first key's) into the first swap block, i.e. after the current copy. Its index page points at an older value:
   * `staleValues[key]` or, by default, the current value with every decimal digit d turned into (d + 1) % 10.
   * Without it the swap blocks are erased flash (0xFF).
   */
  swapCopy?: boolean;
  /** Values the stale copy holds (see swapCopy). */
  staleValues?: Record<string, TuyaValue>;
  /**
   * Make a long value span two blocks: user_param_key if it is longer than one page, else the longest such value.
   * Its index page and first data pages sit at the end of one block, the rest at the start of the next.
   */
  spanBlocks?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// Crypto and checksums

function aesEcb(key: Buffer, data: Buffer, encrypt: boolean): Buffer {
  const c = encrypt
    ? crypto.createCipheriv('aes-128-ecb', key, null)
    : crypto.createDecipheriv('aes-128-ecb', key, null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

/** The data key: bytewise (KEY_PART_1[i & 3] + KEY_PART_2[i] + innerKey[i]) mod 256. */
export function tuyaDataKey(innerKey: Buffer): Buffer {
  if (innerKey.length !== 16) throw new RangeError(`inner key must be 16 bytes, not ${innerKey.length}`);
  const key = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) key[i] = (KEY_PART_1[i & 3] + KEY_PART_2[i] + innerKey[i]) & 0xff;
  return key;
}

/** Tuya's "checksum": the plain sum of the bytes, as an unsigned 32-bit number. */
function byteSum(b: Buffer): number {
  let s = 0;
  for (const x of b) s = (s + x) >>> 0;
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Page allocation

interface Part { block: number; start: number; end: number }
interface Entry { name: Buffer; value: Buffer; block: number; page: number; parts: Part[] }

const pagesFor = (len: number) => Math.ceil(len / TUYA_PAGE);

/**
 * Lays the values out the way the SDK's stores look in real dumps: per key one index page, directly followed by its
 * data pages in the same block when they fit, else the whole entry moves on to the next block. A value longer than a
 * block holds (or the spanBlocks target) is split into several (block, first page, last page) parts.
 */
function allocate(values: [Buffer, Buffer][], blocks: number, spanIndex: number): Entry[] {
  const entries: Entry[] = [];
  let block = 0;
  let page = 1; // next free page in `block`
  const nextBlock = () => {
    block++;
    page = 1;
    if (block >= blocks) throw new RangeError(`values do not fit in ${blocks} data blocks`);
  };
  values.forEach(([name, value], i) => {
    const maxParts = Math.floor((TUYA_PAGE - 18 - (name.length + 1)) / 4);
    if (name.length === 0 || maxParts < 1) throw new RangeError(`bad key name "${name.toString('latin1')}"`);
    let need = pagesFor(value.length);
    if (i === spanIndex) {
      // Index page plus about half the data at the end of this block, the rest at the start of the next one.
      const here = Math.max(1, Math.floor(need / 2));
      if (page > TUYA_PAGES_PER_BLOCK - 1 - here) nextBlock();
      page = TUYA_PAGES_PER_BLOCK - 1 - here;
    } else if (page + need >= TUYA_PAGES_PER_BLOCK && need <= TUYA_PAGES_PER_BLOCK - 2) {
      nextBlock();
    }
    if (page >= TUYA_PAGES_PER_BLOCK) nextBlock();
    const entry: Entry = { name, value, block, page, parts: [] };
    page++;
    while (need > 0) {
      if (page >= TUYA_PAGES_PER_BLOCK) nextBlock();
      const n = Math.min(need, TUYA_PAGES_PER_BLOCK - page);
      entry.parts.push({ block, start: page, end: page + n - 1 });
      page += n;
      need -= n;
    }
    if (entry.parts.length > maxParts) throw new RangeError(`value of "${name.toString('latin1')}" has too many parts`);
    entries.push(entry);
  });
  return entries;
}

/** Plain (unencrypted) data block `id` for these entries. */
function blockPlain(id: number, generation: number, entries: Entry[], elementBase: number): Buffer {
  const b = Buffer.alloc(TUYA_SECTOR, 0xff);
  b.writeUInt32LE(TUYA_DATA_MAGIC, 0);
  b.writeUInt16LE(id, 8);
  b.writeUInt32LE(generation, 10);
  const mapSize = TUYA_PAGES_PER_BLOCK / 8;
  b[14] = mapSize;
  b.fill(0, 15, 15 + mapSize);
  entries.forEach((e, i) => {
    if (e.block === id) {
      b[15 + (e.page >> 3)] |= 1 << (e.page & 7);
      const p = b.subarray(e.page * TUYA_PAGE, (e.page + 1) * TUYA_PAGE);
      p.writeUInt32LE(byteSum(e.value), 0);
      p.writeUInt32LE(e.value.length, 4);
      p.writeUInt16LE(id, 8);
      p[10] = e.page;
      p.writeUInt16LE(e.parts.length, 11);
      // The SDK writes a RAM pointer here (0x0040xxxx-0x0043xxxx in real dumps); readers ignore it.
      p.writeUInt32LE((elementBase + 0x40 * i) >>> 0, 13);
      p[17] = e.name.length + 1;
      e.name.copy(p, 18);
      p[18 + e.name.length] = 0;
      let q = 18 + e.name.length + 1;
      for (const part of e.parts) {
        p.writeUInt16LE(part.block, q);
        p[q + 2] = part.start;
        p[q + 3] = part.end;
        q += 4;
      }
    }
    let offset = 0;
    for (const part of e.parts) {
      for (let pg = part.start; pg <= part.end; pg++, offset += TUYA_PAGE) {
        if (part.block === id) e.value.copy(b, pg * TUYA_PAGE, offset, Math.min(offset + TUYA_PAGE, e.value.length));
      }
    }
  });
  b.writeUInt32LE(byteSum(b.subarray(8)), 4);
  return b;
}

function staleOf(v: Buffer): Buffer {
  const s = v.toString('latin1');
  let t = s.replace(/[0-9]/g, (d) => String((Number(d) + 1) % 10));
  if (t === s) t = `old:${s}`;
  return Buffer.from(t, 'latin1');
}

const toBuf = (v: TuyaValue) => (Buffer.isBuffer(v) ? Buffer.from(v) : Buffer.from(v, 'utf8'));

/**
 * Encrypted Tuya KV storage holding exactly these key/value pairs (strings as UTF-8, no NUL added: pass "3\0" to
 * store a NUL as some real keys do): the key block, `blocks` data blocks (all formatted, unused ones empty with
 * generation 0), then three swap blocks. Length (1 + blocks + 3) * 4096; 0x12000 by default.
 */
export function buildTuyaStorage(values: Record<string, TuyaValue>, opts: TuyaStorageOptions = {}): Buffer {
  const innerKey = opts.innerKey ?? TUYA_DEFAULT_INNER_KEY;
  const blocks = opts.blocks ?? TUYA_DATA_BLOCKS;
  if (!Number.isInteger(blocks) || blocks < 1 || blocks > 0xffff) throw new RangeError(`bad block count ${blocks}`);
  const dataKey = tuyaDataKey(innerKey);
  const pairs = Object.entries(values).map(([k, v]) => [Buffer.from(k, 'latin1'), toBuf(v)] as [Buffer, Buffer]);

  let spanIndex = -1;
  if (opts.spanBlocks) {
    const upk = pairs.findIndex(([k, v]) => k.toString('latin1') === 'user_param_key' && v.length > TUYA_PAGE);
    spanIndex = upk;
    if (spanIndex < 0) {
      let best = -1;
      pairs.forEach(([, v], i) => {
        if (v.length > TUYA_PAGE && (best < 0 || v.length > pairs[best][1].length)) best = i;
      });
      spanIndex = best;
    }
    if (spanIndex < 0) throw new RangeError('spanBlocks needs a value longer than one page (128 bytes)');
  }

  const entries = allocate(pairs, blocks, spanIndex);
  const used = new Set(entries.flatMap((e) => [e.block, ...e.parts.map((p) => p.block)]));
  const generation = (id: number) => (used.has(id) ? 2 + (id % 3) : 0);
  const elementBase = 0x00414d30;

  const out: Buffer[] = [];
  const key = Buffer.alloc(TUYA_SECTOR, 0xff);
  key.writeUInt32LE(TUYA_KEY_MAGIC, 0);
  key.writeUInt32LE(byteSum(innerKey), 4);
  innerKey.copy(key, 8);
  out.push(aesEcb(TUYA_MASTER_KEY, key, true));
  for (let id = 0; id < blocks; id++) {
    out.push(aesEcb(dataKey, blockPlain(id, generation(id), entries, elementBase), true));
  }

  const swap: Buffer[] = [];
  if (opts.swapCopy && pairs.length) {
    const target = Math.max(0, pairs.findIndex(([k]) => k.toString('latin1') === 'user_param_key'));
    const name = pairs[target][0].toString('latin1');
    const given = opts.staleValues?.[name];
    const staleValue = given !== undefined ? toBuf(given) : staleOf(pairs[target][1]);
    const stalePairs = pairs.map(([k, v], i) => [k, i === target ? staleValue : v] as [Buffer, Buffer]);
    const staleEntries = allocate(stalePairs, blocks, spanIndex);
    const id = entries[target].block;
    const stale = blockPlain(id, Math.max(0, generation(id) - 1), staleEntries, elementBase - 0x400);
    swap.push(aesEcb(dataKey, stale, true));
  }
  while (swap.length < TUYA_SWAP_BLOCKS) swap.push(Buffer.alloc(TUYA_SECTOR, 0xff));
  return Buffer.concat([...out, ...swap]);
}

/**
 * The SDK's "protected data" block (KV_PROTECTED_ENABLE, BK7231N SDKs): one block right below the key block with a
 * second copy of gw_bi and gw_wsm. Master-key encrypted like the key block and with the same magic, but its
 * checksum covers bytes 8..4095 and bytes 32.. are encrypted once more with the data key of its own key (the same
 * inner key in every dump seen). A trap for readers that accept the key magic without checking the key checksum.
 */
export function buildTuyaProtectedBlock(
  values: Record<string, TuyaValue>,
  innerKey: Buffer = TUYA_DEFAULT_INNER_KEY,
): Buffer {
  const records: Buffer[] = [];
  for (const name of ['gw_bi', 'gw_wsm']) {
    if (values[name] === undefined) continue;
    const v = toBuf(values[name]);
    const head = Buffer.alloc(36, 0);
    head.writeUInt32LE(v.length, 0);
    head.write(name, 4, 'latin1');
    records.push(head, v);
  }
  const data = Buffer.concat(records);
  if (data.length > TUYA_SECTOR - 32) throw new RangeError('protected data does not fit in one block');
  const inner = Buffer.alloc(TUYA_SECTOR - 32, 0xff);
  data.copy(inner);
  const b = Buffer.alloc(TUYA_SECTOR, 0xff);
  b.writeUInt32LE(TUYA_KEY_MAGIC, 0);
  innerKey.copy(b, 8);
  b.writeUInt32LE(data.length, 24);
  b.writeUInt32LE(0xffffffff, 28);
  aesEcb(tuyaDataKey(innerKey), inner, true).copy(b, 32);
  b.writeUInt32LE(byteSum(b.subarray(8)), 4);
  return aesEcb(TUYA_MASTER_KEY, b, true);
}

// ---------------------------------------------------------------------------------------------------------------
// user_param_key text

function upkValue(v: unknown, path: string): string {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`${path}: ${v} cannot be stored`);
    return String(v);
  }
  if (typeof v === 'boolean' || v === null) return String(v);
  if (typeof v === 'string') {
    if (/[{}[\]:,"]/.test(v)) throw new TypeError(`${path}: "${v}" has a character Tuya's loose JSON cannot hold`);
    return v;
  }
  if (Array.isArray(v)) return `[${v.map((x, i) => upkValue(x, `${path}[${i}]`)).join(',')}]`;
  if (typeof v === 'object') {
    const pairs = Object.entries(v as Record<string, unknown>).map(([k, x]) => `${k}:${upkValue(x, `${path}.${k}`)}`);
    return `{${pairs.join(',')}}`;
  }
  throw new TypeError(`${path}: ${typeof v} cannot be stored`);
}

/**
 * The text Tuya firmware stores as user_param_key for a device configuration (cloudcutter's `device_configuration`):
 * `{key:value,...,crc:N,}` - no quotes, no spaces, a comma after every pair including the last, `crc` last (as in
 * every real store; the other keys keep the object's order, since Tuya's own order is lost once a reader sorted
 * them). Numbers as digits, strings bare ("1.0.5", "CB2S", "0505"), booleans as true/false, nested objects/arrays in
 * the same style without the trailing comma.
 */
export function userParamKeyText(config: Record<string, unknown>): string {
  const keys = Object.keys(config).filter((k) => k !== 'crc');
  if ('crc' in config) keys.push('crc');
  for (const k of keys) if (!/^[A-Za-z0-9_]+$/.test(k)) throw new TypeError(`key "${k}" cannot be stored`);
  return `{${keys.map((k) => `${k}:${upkValue(config[k], k)},`).join('')}}`;
}

// ---------------------------------------------------------------------------------------------------------------
// A plug's storage contents

export interface TypicalTuyaSecrets {
  uuid?: string; authKey?: string; pskKey?: string; facPin?: string; localKey?: string;
  /** The Wi-Fi the plug was paired to (stored base64-encoded, as wfb64:1 says). */
  ssid?: string; passwd?: string;
}

/**
 * The keys a paired BK7231N plug typically stores (all synthetic; the shapes, spacing and NULs are those of the real
 * dumps): gw_bi (cloud identity), user_param_key (the pins; omitted when `config` is null, as on TuyaMCU devices),
 * gw_di, gw_wsm (old Wi-Fi), wf_start_md, is_stride, gw_ai (cloud keys), and baud_cfg when `tuyaMcuBaud` is given.
 */
export function typicalTuyaValues(
  config: Record<string, unknown> | null,
  opts: TypicalTuyaSecrets & { tuyaMcuBaud?: number } = {},
): Record<string, string> {
  const s = {
    uuid: 'f1e2d3c4b5a69788', authKey: 'SIMAUTHKEYsimauthkeySIMAUTHKEY01',
    pskKey: 'SIMPSKKEYsimpskkeySIMPSKKEYsimpskk01',
    facPin: 'simfacpin0123456', localKey: 'simlocalkey01234', ssid: 'HomeNet', passwd: 'correct horse battery', ...opts,
  };
  const b64 = (x: string) => Buffer.from(x, 'utf8').toString('base64');
  const v: Record<string, string> = {
    gw_bi: `{"uuid":"${s.uuid}","psk_key":"${s.pskKey}","auth_key":"${s.authKey}","ap_ssid":"SmartLife",`
      + `"ap_passwd":null,"country_code":"CN","bt_mac":null,"bt_hid":null,"prod_test":false,"fac_pin":"${s.facPin}" }`,
  };
  if (config) v.user_param_key = userParamKeyText(config);
  if (opts.tuyaMcuBaud !== undefined) v.baud_cfg = `{"baud":${opts.tuyaMcuBaud}}\0`;
  v.gw_di = '{"abi":0,"id":"bf0123456789abcdefsim","swv":"1.1.8","bv":"40.00","pv":"2.2","lpv":"3.3",'
    + '"pk":"keysimsimsimsim1","firmk":"keysimsimsimsim1","cadv":"1.0.3","cdv":"1.0.0","dev_swv":"1.1.8",'
    + '"s_id":"000003simx","dtp":0,"sync":0,"attr_num":0 }';
  v.gw_wsm = `{"nc_tp":1,"ssid":"${b64(s.ssid)}","passwd":"${b64(s.passwd)}","md":0,"random":0,"wfb64":1,"stat":4,`
    + '"token":"SIMTOKEN","region":"EU","reg_key":"eu","dns_prio":0 }';
  v.wf_start_md = '3\0';
  v.is_stride = '0\0';
  v.gw_ai = `{"key":"${s.localKey}","lckey":"simlckey01234567","h_url":null,"h_ip":null,"mq_psk":null,`
    + '"time_z":"+01:00","dy_tls_m":0,"cloud_cap":0 }';
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// A 2 MiB flash image

export type TuyaChip = 'bk7231n' | 'bk7231t';

interface Region { start: number; end: number; kind: 'fill' | 'erased' | 'bytes'; bytes?: Buffer }

/**
 * Where a BK7231 plug's flash holds data and where it is erased, after cloudcutter put ESPHome Kickstart on it
 * (Tuya bootloader kept, Kickstart in the app partition, Tuya's storage untouched). From the Tuya SDK flash maps, the
 * LibreTiny "-tuya" board layouts Kickstart is built for, and the erased/used 4 KiB sectors of the public dumps.
 * Everything not listed (up to the storage) is erased.
 */
const LAYOUT: Record<TuyaChip, [number, number][]> = {
  bk7231n: [
    [0x000000, 0x011000], // bootloader
    [0x011000, 0x0f0000], // app partition 0x11000+0x119000: Kickstart's image (with CRC16 every 32 bytes) ...
    [0x129000, 0x12a000], // ... and the partition's last sector (RBL trailer at 0x129F0A in every dump)
    [0x12a000, 0x19a000], // download partition 0x12A000+0xA6000: the OTA package cloudcutter sent (assumed kept)
    [0x1d0000, 0x1d1000], // RF calibration
    [0x1d2000, 0x1db000], // Tuya UF files (0x1D2000+0x18000) overlapped by LibreTiny's FlashDB "kvs" 0x1D3000+0x8000
  ],
  bk7231t: [
    [0x000000, 0x00f000], // bootloader (0xF000-0xFFFF erased in the T dumps)
    [0x010000, 0x011000],
    [0x011000, 0x0f0000], // app (Kickstart)
    [0x129000, 0x132000], // app trailer + Tuya UF partition 3 (0x12A000+0x8000)
    [0x132000, 0x1a2000], // download partition 0x132000+0xA6000: the OTA package (assumed kept)
    [0x1d8000, 0x1e1000], // Tuya UF partition 2 / LibreTiny FlashDB "kvs" 0x1D8000+0x8000, RF calibration 0x1E0000
    [0x1e3000, 0x1ee000], // Tuya UF partition 1 (0x1E3000+0xB000)
  ],
};

/** LibreTiny's FlashDB partition ("kvs") that Kickstart's preferences are written to. */
const KICKSTART_KVS: Record<TuyaChip, [number, number]> = {
  bk7231n: [0x1d3000, 0x1db000],
  bk7231t: [0x1d8000, 0x1e0000],
};

export interface TuyaFlashImageOptions extends TuyaStorageOptions {
  /** Bytes of the used (non-erased, non-storage) areas; default: deterministic pseudo-random bytes. */
  seedFill?: (offset: number, length: number) => Buffer;
  /** Where the key block lies (default 0x1EE000; 0x1DD000 on some BK7231T light firmwares). 4 KiB aligned. */
  storageOffset?: number;
  /** The stored keys (default: typicalTuyaValues of a CB2S plug). */
  values?: Record<string, TuyaValue>;
  /** Which SDK layout the rest of the flash follows (default bk7231n). */
  chip?: TuyaChip;
  /** The protected-data block one block below the storage (default: on for bk7231n, off for bk7231t). */
  protectedBlock?: boolean;
  /**
   * Let Kickstart's FlashDB partition overwrite whatever storage blocks lie inside it, as LibreTiny formats that
   * partition on first boot (matters only for storage below 0x1E0000 on BK7231T; default false).
   */
  kickstartKvs?: boolean;
}

export interface TuyaFlashImage {
  /** `length` bytes from `offset`, as /hub/flash_read returns them. */
  read(offset: number, length: number): Buffer;
  storageOffset: number;
  storageLength: number;
  size: number;
}

/** Deterministic stand-in for firmware bytes: never long runs of 0xFF, same offset -> same byte. */
export function pseudoRandomFill(offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    const a = offset + i;
    let x = Math.imul((a >>> 2) ^ 0x5bd1e995, 0x9e3779b1) >>> 0;
    x ^= x >>> 15;
    x = Math.imul(x, 0x85ebca6b) >>> 0;
    x ^= x >>> 13;
    out[i] = (x >>> ((a & 3) * 8)) & 0xff;
  }
  return out;
}

const DEFAULT_PLUG_CONFIG: Record<string, unknown> = {
  bt1_lv: 0, bt1_pin: 10, bt1_type: 0, ch1_stat: 2, ch_cddpid1: 9, ch_dpid1: 1, ch_num: 1, chip_type: 0, crc: 49,
  ele_fun_en: 1, ele_pin: 7, jv: '1.0.5', module: 'CB2S', net_trig: 2, netled1_lv: 0, netled1_pin: 8, netled_reuse: 1,
  rl1_lv: 1, rl1_pin: 26, rl1_type: 0, sel_pin_lv: 1, sel_pin_pin: 24, vi_pin: 6,
};

/** A 2 MiB BK7231T/N flash with Tuya's storage where the SDK puts it and the rest laid out like a real plug's. */
export function tuyaFlashImage(opts: TuyaFlashImageOptions = {}): TuyaFlashImage {
  const chip = opts.chip ?? 'bk7231n';
  const fill = opts.seedFill ?? pseudoRandomFill;
  const storageOffset = opts.storageOffset ?? TUYA_STORAGE_OFFSET;
  const values = opts.values ?? typicalTuyaValues(DEFAULT_PLUG_CONFIG);
  const storage = buildTuyaStorage(values, opts);
  if (storageOffset % TUYA_SECTOR || storageOffset < TUYA_SECTOR || storageOffset + storage.length > FLASH_SIZE_2M) {
    throw new RangeError(`storage at 0x${storageOffset.toString(16)} (+0x${storage.length.toString(16)}) does not fit`);
  }
  const regions: Region[] = LAYOUT[chip].map(([start, end]) => ({ start, end, kind: 'fill' as const }));
  const put = (r: Region) => {
    // Later regions win: cut the overlapped parts out of earlier ones.
    for (let i = regions.length - 1; i >= 0; i--) {
      const o = regions[i];
      if (o.end <= r.start || o.start >= r.end) continue;
      const pieces: Region[] = [];
      if (o.start < r.start) pieces.push({ ...o, end: r.start, bytes: o.bytes?.subarray(0, r.start - o.start) });
      if (o.end > r.end) pieces.push({ ...o, start: r.end, bytes: o.bytes?.subarray(r.end - o.start) });
      regions.splice(i, 1, ...pieces);
    }
    regions.push(r);
  };
  put({ start: storageOffset, end: storageOffset + storage.length, kind: 'bytes', bytes: storage });
  if (opts.protectedBlock ?? chip === 'bk7231n') {
    const pb = buildTuyaProtectedBlock(values, opts.innerKey);
    put({ start: storageOffset - TUYA_SECTOR, end: storageOffset, kind: 'bytes', bytes: pb });
  }
  if (opts.kickstartKvs) {
    const [start, end] = KICKSTART_KVS[chip];
    put({ start, end, kind: 'fill' });
  }
  regions.sort((a, b) => a.start - b.start);

  return {
    storageOffset,
    storageLength: storage.length,
    size: FLASH_SIZE_2M,
    read(offset: number, length: number): Buffer {
      if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0
        || offset + length > FLASH_SIZE_2M) {
        throw new RangeError(`read outside the 2 MiB flash (offset=${offset}, length=${length})`);
      }
      const out = Buffer.alloc(length, 0xff);
      const end = offset + length;
      for (const r of regions) {
        const a = Math.max(r.start, offset);
        const b = Math.min(r.end, end);
        if (a >= b) continue;
        if (r.kind === 'bytes') r.bytes!.copy(out, a - offset, a - r.start, b - r.start);
        else if (r.kind === 'fill') fill(a, b - a).copy(out, a - offset);
      }
      return out;
    },
  };
}
