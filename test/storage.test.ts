// Tuya's encrypted storage on a plug's flash: found wherever it lies in what was read, decrypted, its values put
// together across blocks, the live copy of a block preferred to a stale swap copy, the protected block beside it not
// taken for the key block, damage and a window too small said, and only the values that describe the hardware read
// out. The storage is built by test/sim/tuya-storage.ts (written from the format's description, not from flash.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readTuyaStorage, parseTuyaJson, tuyaFromStorage, flatTuyaKeys, recipeFor, TUYA_STORAGE_WINDOW }
  from '../flash.ts';
import { buildTuyaStorage, tuyaFlashImage, typicalTuyaValues, userParamKeyText, TUYA_STORAGE_OFFSET }
  from './sim/tuya-storage.ts';
import { fixtureDevices } from './helpers.ts';

const PLUG = fixtureDevices().find((d) => d.slug === 'minoston-mp22wp-outdoor-plug')!.device_configuration!;
const window = (image: { read(o: number, l: number): Buffer }) =>
  image.read(TUYA_STORAGE_WINDOW.offset, TUYA_STORAGE_WINDOW.length);

test('a plug\'s storage: found in the window, user_param_key read as cloudcutter has it, the secrets never read', () => {
  const image = tuyaFlashImage({ chip: 'bk7231n', values: typicalTuyaValues(PLUG) });
  const got = readTuyaStorage(window(image), TUYA_STORAGE_WINDOW.offset);
  assert.ok(got.found, got.found ? '' : got.why);
  if (!got.found) return;
  assert.equal(got.offset, TUYA_STORAGE_OFFSET); // not the protected block one below it, which has the same magic
  assert.deepEqual(Object.keys(got.values), ['user_param_key']);
  assert.deepEqual(parseTuyaJson(got.values.user_param_key), PLUG);
  assert.deepEqual(got.problems, []);
  // gw_bi (cloud keys) and gw_wsm (the old Wi-Fi) are not even decoded into text.
  assert.doesNotMatch(JSON.stringify(got), /SIMAUTHKEY|correct horse|Y29ycmVjdCBob3JzZQ/);
});

test('every fixture device\'s pin configuration comes back from storage exactly as cloudcutter lists it', () => {
  for (const device of fixtureDevices().filter((d) => Object.keys(d.device_configuration ?? {}).length)) {
    const storage = buildTuyaStorage(typicalTuyaValues(device.device_configuration!));
    const got = readTuyaStorage(storage);
    assert.ok(got.found, device.slug);
    if (got.found) assert.deepEqual(parseTuyaJson(got.values.user_param_key), device.device_configuration, device.slug);
  }
});

test('a value across two blocks, and a stale swap copy of a block: the live one is read', () => {
  const values = typicalTuyaValues(PLUG);
  const got = readTuyaStorage(buildTuyaStorage(values, { spanBlocks: true, swapCopy: true }));
  assert.ok(got.found);
  if (got.found) assert.equal(got.values.user_param_key, values.user_param_key);
});

test('some lights keep the storage at 0x1DD000: still inside the window', () => {
  const image = tuyaFlashImage({ chip: 'bk7231t', storageOffset: 0x1dd000, values: typicalTuyaValues(PLUG) });
  const got = readTuyaStorage(window(image), TUYA_STORAGE_WINDOW.offset);
  assert.deepEqual(got.found && got.offset, 0x1dd000);
});

test('no storage, a damaged value, and a window that cuts the storage off are each said, not guessed', () => {
  const erased = readTuyaStorage(Buffer.alloc(0x30000, 0xff));
  assert.deepEqual(erased, { found: false, why: 'no Tuya storage in it (erased, or never Tuya firmware)' });

  const storage = buildTuyaStorage(typicalTuyaValues(PLUG));
  const cut = readTuyaStorage(storage.subarray(0, 0x3000));
  assert.ok(cut.found);
  if (cut.found) assert.match(cut.problems.join('\n'), /the storage runs past what was read/);

  // A flipped bit anywhere in the data blocks: the value is read right, or not at all (and said), never wrong.
  const upk = typicalTuyaValues(PLUG).user_param_key;
  let lost = 0;
  for (let block = 1; block < 18; block++) {
    const damaged = Buffer.from(storage);
    damaged[block * 0x1000 + 0x123] ^= 0x40;
    const read = readTuyaStorage(damaged);
    if (read.found && 'user_param_key' in read.values) assert.equal(read.values.user_param_key, upk);
    else lost++;
  }
  assert.ok(lost > 0, 'some block holds user_param_key');
});

test('Tuya\'s loose JSON: bare words, a comma after the last pair, nested lists; plain JSON as it is', () => {
  assert.deepEqual(parseTuyaJson('{Jsonver:1.1.8,module:CB2S,rl1_pin:24,category:0505,indep:false,crc:90,}'),
    { Jsonver: '1.1.8', module: 'CB2S', rl1_pin: 24, category: '0505', indep: 'false', crc: 90 });
  assert.deepEqual(parseTuyaJson('{a:[1,2d,0b],b:{c:7,},}'), { a: [1, '2d', '0b'], b: { c: 7 } });
  assert.deepEqual(parseTuyaJson('{"baud":9600}'), { baud: 9600 });
  assert.equal(parseTuyaJson('{module:CB2S'), undefined);
  assert.equal(parseTuyaJson(userParamKeyText(PLUG)) !== undefined, true);
});

test('a TuyaMCU plug\'s storage: the baud rate (baud_cfg or uart_adapt_params) and the schema it keeps', () => {
  const schema = [{ type: 'obj', mode: 'rw', property: { type: 'bool' }, id: 1 },
    { type: 'obj', mode: 'ro', property: { type: 'value', min: 0, max: 1000, scale: 1, step: 1 }, id: 6 }];
  const n = tuyaFromStorage({ baud_cfg: '{"baud":115200}', '000004w0oh': JSON.stringify(schema),
    em_sys_env: 'bk7231n' }, 'Breaker', 'breaker');
  assert.deepEqual([n.chip, n.mcu?.baud, n.mcu?.datapoints.map((d) => `${d.id}:${d.type}:${d.mode}`)],
    ['BK7231N', 115200, ['1:bool:rw', '6:value:ro']]);
  const t = tuyaFromStorage({ uart_adapt_params: { uart_baud: 9600, uart_databit: 3 }, em_sys_env: 'BK7231S_2M' },
    'Dimmer', 'dimmer');
  assert.deepEqual([t.chip, t.mcu?.baud], ['BK7231T', 9600]);
  const made = recipeFor(n, { source: 'a dump', profile: '2.0.2 - BK7231N / bk7231n_common_user_config_ty' });
  assert.ok(made.ok && made.template.includes('sensor_datapoint: 6'));
});

test('the older nested configuration format becomes today\'s keys', () => {
  const old = { sw: { ch: [{ bt: { pin: { value: 14 }, lv: { value: false } }, rl: { pin: { value: 12 },
    lv: { value: true } } }], net: { wfst: { pin: { value: 4 } } } }, dltj: { ct: 0, epin: { pin: 5 } } };
  assert.deepEqual(flatTuyaKeys(old), { bt1_pin: 14, bt1_lv: 0, rl1_pin: 12, rl1_lv: 1, netled_pin: 4,
    chip_type: 0, ele_pin: 5 });
});
