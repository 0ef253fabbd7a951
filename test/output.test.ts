// What flash.ts prints fits the terminal it prints to (80 columns when it cannot tell), broken between words;
// and what it says about the command line is what the user typed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CLOUDCUTTER_API_FIXTURES, WIFI_ENV, copyRecipes, runFlash, tempDir } from './helpers.ts';
import { fitLine, formatTable, quoted, usage } from '../flash.ts';

/** The lines of `text` wider than `width`, but for those that are one unbreakable word past the indent. */
function tooWide(text: string, width: number): string[] {
  return text.split('\n').filter((l) => l.length > width && /\S\s+\S/.test(l.trim()));
}

test('a line is broken between words under its own indent; a shell command keeps pasting as one', () => {
  assert.deepEqual(fitLine('    ✓ found the plug at 127.0.0.1, which took a while to answer', 30),
    ['    ✓ found the plug at', '      127.0.0.1, which took a', '      while to answer']);
  assert.deepEqual(fitLine('    $ ./tuya-cloudcutter.sh -p some-device -f kickstart.ug.bin -w wlan1', 36),
    ['    $ ./tuya-cloudcutter.sh -p \\', '        some-device -f \\', '        kickstart.ug.bin -w wlan1']);
  assert.deepEqual(fitLine('    │ Wait for up to 10-120 seconds for the device', 30),
    ['    │ Wait for up to 10-120', '    │   seconds for the device']);
  // A word wider than the line stays whole; a line that fits is left as it is (its spacing too).
  assert.deepEqual(fitLine('  see /a/very/long/path/that/does/not/fit/anywhere', 20),
    ['  see', '    /a/very/long/path/that/does/not/fit/anywhere']);
  assert.deepEqual(fitLine('  a    table   row', 80), ['  a    table   row']);
  // Colours take no room.
  assert.deepEqual(fitLine('\x1b[32m✓\x1b[0m done and done', 11), ['\x1b[32m✓\x1b[0m done and', '  done']);
});

test('a table wider than the terminal folds: each row its first cell, the rest under it', () => {
  const rows = [['label', 'slug'], ['1.1.8 - BK7231N / oem_bk7231n_plug', 'oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00']];
  assert.equal(formatTable(rows, 120).split('\n').length, 2);
  const folded = formatTable(rows, 60).split('\n');
  assert.deepEqual(folded.map((l) => l.trimEnd()), ['  label', '      slug', '  1.1.8 - BK7231N / oem_bk7231n_plug',
    '      oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00']);
});

test('--help fits 80 columns', () => {
  const wide = usage().split('\n').filter((l) => l.length > 80);
  assert.deepEqual(wide, []);
});

test('in 80 columns (no terminal, no COLUMNS): a dry run, the profiles list and a recipe error stay within them',
  async () => {
    const env = { ...WIFI_ENV, COLUMNS: '', FLASH_CLOUDCUTTER_API: CLOUDCUTTER_API_FIXTURES };
    const recipe = path.join(copyRecipes(), '23A.yaml');
    const dry = await runFlash([recipe, '--dry-run', '--out', path.join(tempDir(), 'esphome')], { env });
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(tooWide(dry.stdout, 80), []);
    assert.match(dry.stdout, / \\\n {8}/, 'a long command goes on the next line after " \\"');
    const profiles = await runFlash(['profiles', 'bk7231n', 'plug'], { env });
    assert.equal(profiles.code, 0, profiles.stderr);
    assert.deepEqual(tooWide(profiles.stdout, 80), []);
    const none = await runFlash(['recipe', 'ledvanse', 'outdor', '--recipes', tempDir()], { env });
    assert.equal(none.code, 2);
    assert.deepEqual(tooWide(none.stderr, 80), []);
    assert.match(none.stderr, /did you mean one of these\?\n {6}LEDVANCE SmartPlus[^\n]*\n {8}\(ledvance-smartplus[^\n]*\n {6}Minoston/,
      'one suggestion a line (its slug under it, where the line is too narrow)');
    // A terminal as wide as it says: COLUMNS is honoured.
    const wide = await runFlash(['profiles', 'bk7231n', 'plug'], { env: { ...env, COLUMNS: '200' } });
    assert.ok(wide.stdout.split('\n').some((l) => l.length > 80), 'the table in one row per profile');
  });

test('Wi-Fi names are quoted once, in quotes they do not hold', () => {
  assert.equal(quoted('Home Net'), '"Home Net"');
  assert.equal(quoted('My "Home" Net'), '\'My "Home" Net\'');
  assert.equal(quoted('My "Home" Net\'s'), '«My "Home" Net\'s»');
});

test('the command line: a flag without its value, a word for a command, options of another command', async () => {
  const run = (args: string[]) => runFlash(args, { env: WIFI_ENV });
  const only = await run(['recipes/23A.yaml', '--only']);
  assert.equal(only.code, 2);
  assert.match(only.stderr, /--only: --only needs a value/);
  assert.match(only.stderr, /--only STEP \(one of check, config/);
  const out = await run(['recipes/23A.yaml', '--out']);
  assert.match(out.stderr, /--out: --out needs a value/, 'named as typed, not -o');
  const help = await run(['help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^flash\.ts \d+\.\d+\.\d+: flash a Tuya/);
  const recipes = await run(['recipes/23A.yaml', '--recipes', '/tmp']);
  assert.equal(recipes.code, 2);
  assert.match(recipes.stderr, /--recipes: a flash run takes no --recipes/);
  const schema = await run(['schema', 'extra']);
  assert.equal(schema.code, 2);
  assert.match(schema.stderr, /schema takes no arguments, got extra/);
  const doctor = await run(['doctor']);
  assert.equal(doctor.code, 2);
  assert.match(doctor.stderr, /no recipe given\n\s+fix: npx tsx flash\.ts doctor recipes\/23A\.yaml/);
  const version = await run(['--version']);
  assert.equal(version.stdout.trim(), JSON.parse(fs.readFileSync('package.json', 'utf8')).version);
});

test('what is not a recipe is said plainly: an empty file, a YAML list, a binary file', async () => {
  const dir = tempDir();
  const write = (name: string, data: string | Buffer) => (fs.writeFileSync(path.join(dir, name), data),
    path.join(dir, name));
  const empty = await runFlash([write('empty.yaml', '')], { env: WIFI_ENV });
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /empty\.yaml: the recipe is empty/);
  const list = await runFlash([write('list.yaml', '- a\n- b\n')], { env: WIFI_ENV });
  assert.equal(list.code, 2);
  assert.match(list.stderr, /list\.yaml:1: a recipe is a mapping of keys \(model:, mcu:, …\), and this is a list/);
  const binary = await runFlash([write('dump.bin', Buffer.alloc(4096))], { env: WIFI_ENV });
  assert.equal(binary.code, 2);
  assert.match(binary.stderr, /dump\.bin: this is a binary file, not a recipe/);
  assert.ok(binary.stderr.length < 600 && !binary.stderr.includes('\\u0000'), binary.stderr);
});
