// Synthetic firmware files for tests: the same headers the real Kickstart .ug.bin and ESPHome
// firmware.uf2 carry (../shared/reference/outside-tools.md), with made-up payloads. No real
// firmware binary is committed.

export type Mcu = 'bk7231t' | 'bk7231n';

export const FAMILY_ID: Record<Mcu, number> = { bk7231t: 0x675a40b0, bk7231n: 0x7b3ef230 };

const UF2_MAGIC0 = 0x0a324655;
const UF2_MAGIC1 = 0x9e5d5157;
const UF2_MAGIC_END = 0x0ab16f30;
const UF2_FLAG_FAMILY = 0x2000;
const UF2_PAYLOAD = 256;

/** A UF2 file: 512-byte blocks of 256 payload bytes each, family ID in every block. */
export function makeUF2(opts: { familyId: number; payload?: Buffer; minBlocks?: number }): Buffer {
  const payload = opts.payload ?? Buffer.alloc(0);
  const blocks = Math.max(opts.minBlocks ?? 1, Math.ceil(payload.length / UF2_PAYLOAD));
  const out = Buffer.alloc(blocks * 512);
  for (let i = 0; i < blocks; i++) {
    const b = out.subarray(i * 512, (i + 1) * 512);
    b.writeUInt32LE(UF2_MAGIC0, 0);
    b.writeUInt32LE(UF2_MAGIC1, 4);
    b.writeUInt32LE(UF2_FLAG_FAMILY, 8);
    b.writeUInt32LE(0x11000 + i * UF2_PAYLOAD, 12); // target address
    b.writeUInt32LE(UF2_PAYLOAD, 16);
    b.writeUInt32LE(i, 20);
    b.writeUInt32LE(blocks, 24);
    b.writeUInt32LE(opts.familyId >>> 0, 28);
    if (i * UF2_PAYLOAD < payload.length) payload.copy(b, 32, i * UF2_PAYLOAD, Math.min(payload.length, (i + 1) * UF2_PAYLOAD));
    b.writeUInt32LE(UF2_MAGIC_END, 508);
  }
  return out;
}

/** The payload bytes of a UF2 made by makeUF2, trailing zero padding removed. */
export function readUF2Payload(buf: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let off = 0; off + 512 <= buf.length; off += 512) {
    const size = buf.readUInt32LE(off + 16);
    parts.push(buf.subarray(off + 32, off + 32 + Math.min(size, 476)));
  }
  let all = Buffer.concat(parts);
  let end = all.length;
  while (end > 0 && all[end - 1] === 0) end--;
  return all.subarray(0, end);
}

function byteSum(buf: Buffer): number {
  let s = 0;
  for (const b of buf) s = (s + b) >>> 0;
  return s;
}

/**
 * A Beken UG OTA file as cloudcutter's custom-firmware/ holds them: a 32-byte UG header
 * (magic, version, data length, data sum, header sum, end magic) followed by an RBL header
 * whose version string sits at file offset 60 (e.g. `25.05.28-bk7231n`).
 * `chip: null` writes an RBL version without a chip, so only the file name can tell.
 */
export function makeUG(opts: {
  chip: Mcu | null;
  version?: string;
  bodyLength?: number;
  corruptDataSum?: boolean;
  corruptHeaderSum?: boolean;
}): Buffer {
  const version = opts.version ?? '25.05.28';
  const body = Buffer.alloc(Math.max(opts.bodyLength ?? 4096, 96));
  body.write('RBL\0', 0, 'latin1');
  body.write('app', 12, 'latin1'); // name[16] at RBL offset 12 (file offset 44)
  body.write(opts.chip ? `${version}-${opts.chip}` : version, 28, 'latin1'); // file offset 60
  for (let i = 96; i < body.length; i++) body[i] = (i * 31) & 0xff;
  const header = Buffer.alloc(32);
  header.writeUInt32BE(0x55aa55aa, 0);
  header.write(version, 4, 12, 'latin1');
  header.writeUInt32BE(body.length, 16);
  header.writeUInt32BE((byteSum(body) + (opts.corruptDataSum ? 1 : 0)) >>> 0, 20);
  header.writeUInt32BE((byteSum(header.subarray(0, 24)) + (opts.corruptHeaderSum ? 1 : 0)) >>> 0, 24);
  header.writeUInt32BE(0xaa55aa55, 28);
  return Buffer.concat([header, body]);
}

/** The file name cloudcutter ships for a Kickstart build. */
export function kickstartFileName(mcu: Mcu, version = '25.05.28'): string {
  return `ESPHome-Kickstart-v${version}_${mcu}_app.ota.ug.bin`;
}
