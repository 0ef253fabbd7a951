// Firmware checks on synthetic UG and UF2 files built like the real ones (no firmware binaries committed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { inspectFirmware, checkFirmwareFor, pickKickstart, resolveKickstart, FirmwareError, Failure, loadRecipe } from '../flash.ts';
import { makeUG, makeUF2, FAMILY_ID, kickstartFileName } from './firmware-files.ts';
import { ROOT, tempDir } from './helpers.ts';

test('a UG file: version, length, checksums and the chip from the RBL header', () => {
  const info = inspectFirmware(makeUG({ chip: 'bk7231n', version: '25.05.28' }), 'x.ug.bin');
  assert.deepEqual(info, { kind: 'ug', version: '25.05.28', dataLength: 4096, chip: 'bk7231n', chipFrom: 'header' });
  assert.equal(inspectFirmware(makeUG({ chip: 'bk7231t' }), 'x.bin').chip, 'bk7231t');
});

test('a UG file whose header names no chip: the chip comes from the file name, like cloudcutter', () => {
  const ug = makeUG({ chip: null });
  const info = inspectFirmware(ug, kickstartFileName('bk7231t'));
  assert.equal(info.kind === 'ug' && info.chipFrom, 'file name');
  assert.equal(info.chip, 'bk7231t');
  const unknown = inspectFirmware(ug, 'firmware.ug.bin');
  assert.equal(unknown.chip, undefined);
  assert.throws(() => checkFirmwareFor(unknown, 'firmware.ug.bin', 'bk7231n'), /firmware\.ug\.bin is a UG file \(version 25\.05\.28\) for an unknown chip; the recipe needs BK7231N/);
});

test('damaged UG files are refused with what is wrong', () => {
  assert.throws(() => inspectFirmware(makeUG({ chip: 'bk7231n' }).subarray(0, 300), 'k.ug.bin'), /k\.ug\.bin is truncated: 300 bytes/);
  assert.throws(() => inspectFirmware(makeUG({ chip: 'bk7231n' }).subarray(0, 2000), 'k.ug.bin'), /truncated: the header says 4128 bytes, the file has 2000/);
  assert.throws(() => inspectFirmware(makeUG({ chip: 'bk7231n', corruptDataSum: true }), 'k.ug.bin'), /bad data checksum/);
  assert.throws(() => inspectFirmware(makeUG({ chip: 'bk7231n', corruptHeaderSum: true }), 'k.ug.bin'), /bad header checksum/);
  assert.throws(() => inspectFirmware(Buffer.alloc(1024, 7), 'k.bin'), /neither a Beken UG file .* nor a UF2/);
});

test('UF2 files: block magics and family ID', () => {
  const n = inspectFirmware(makeUF2({ familyId: FAMILY_ID.bk7231n, minBlocks: 3 }), 'firmware.uf2');
  assert.deepEqual(n, { kind: 'uf2', blocks: 3, familyId: 0x7b3ef230, chip: 'bk7231n' });
  assert.equal(inspectFirmware(makeUF2({ familyId: FAMILY_ID.bk7231t, minBlocks: 2 }), 'f.uf2').chip, 'bk7231t');
  const broken = makeUF2({ familyId: FAMILY_ID.bk7231n, minBlocks: 3 });
  broken.writeUInt32LE(0, 512 + 508);
  assert.throws(() => inspectFirmware(broken, 'f.uf2'), /UF2 block 1 has bad magic numbers/);
  assert.throws(() => inspectFirmware(makeUF2({ familyId: FAMILY_ID.bk7231n, minBlocks: 3 }).subarray(0, 1000), 'f.uf2'), /not a whole number of 512-byte UF2 blocks/);
  const esp = inspectFirmware(makeUF2({ familyId: 0x1c5f21b0, minBlocks: 1 }), 'f.uf2');
  assert.throws(() => checkFirmwareFor(esp, 'f.uf2', 'bk7231n'), /family ID 0x1C5F21B0 for an unknown chip/);
});

test('firmware for the other chip names the file, what it is and what the recipe needs', () => {
  const t = inspectFirmware(makeUG({ chip: 'bk7231t' }), kickstartFileName('bk7231t'));
  assert.throws(() => checkFirmwareFor(t, kickstartFileName('bk7231t'), 'bk7231n'),
    /ESPHome-Kickstart-v25\.05\.28_bk7231t_app\.ota\.ug\.bin is a UG file \(version 25\.05\.28\) for the BK7231T, but the recipe's mcu is bk7231n/);
  const uf2 = inspectFirmware(makeUF2({ familyId: FAMILY_ID.bk7231t }), 'firmware.uf2');
  assert.throws(() => checkFirmwareFor(uf2, 'firmware.uf2', 'bk7231n'), (e: Error) => e instanceof FirmwareError && /family ID 0x675A40B0 for the BK7231T/.test(e.message));
});

test('kickstart: auto picks the newest Kickstart for the MCU', () => {
  const files = [kickstartFileName('bk7231n', '23.08.29'), kickstartFileName('bk7231n', '25.05.28'), kickstartFileName('bk7231t', '26.01.01'), 'README.md',
    kickstartFileName('bk7231n', '25.5.9')];
  assert.equal(pickKickstart(files, 'bk7231n'), kickstartFileName('bk7231n', '25.05.28'));
  assert.equal(pickKickstart(files, 'bk7231t'), kickstartFileName('bk7231t', '26.01.01'));
  assert.equal(pickKickstart(['x.bin'], 'bk7231t'), undefined);
});

test('resolveKickstart reads and checks the file in <cloudcutter>/custom-firmware', () => {
  const cc = tempDir();
  const fw = path.join(cc, 'custom-firmware');
  fs.mkdirSync(fw);
  const recipe = loadRecipe(path.join(ROOT, 'recipes/23A.yaml')).recipe;
  assert.throws(() => resolveKickstart(recipe, cc), (e: Error) => e instanceof Failure && /no ESPHome-Kickstart-\*_bk7231n_app\.ota\.ug\.bin in/.test(e.message));
  fs.writeFileSync(path.join(fw, kickstartFileName('bk7231n')), makeUG({ chip: 'bk7231n' }).subarray(0, 1000));
  assert.throws(() => resolveKickstart(recipe, cc), /truncated/);
  fs.writeFileSync(path.join(fw, kickstartFileName('bk7231n')), makeUG({ chip: 'bk7231n' }));
  assert.equal(resolveKickstart(recipe, cc).file, kickstartFileName('bk7231n'));
  // A file named for the N whose header says T: the header wins, like cloudcutter.
  fs.writeFileSync(path.join(fw, kickstartFileName('bk7231n', '26.01.01')), makeUG({ chip: 'bk7231t' }));
  assert.throws(() => resolveKickstart(recipe, cc), /for the BK7231T, but the recipe's mcu is bk7231n/);
  const named = { ...recipe, kickstart: 'missing.ug.bin' };
  assert.throws(() => resolveKickstart(named, cc), /kickstart file missing\.ug\.bin is not in/);
});
