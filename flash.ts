#!/bin/sh
':' //; f=$(readlink -f "$0"); exec node --import "${f%/*}/node_modules/tsx/dist/loader.mjs" "$f" "$@"
// ^ Run by its path (./flash.ts, ~/flash/flash.ts, or as the command `npm link` installs), this file is a shell
//   script for one line: node loads tsx from flash.ts's own node_modules, wherever the user stands, and signals
//   reach flash.ts itself. To TypeScript that line is a string and a comment.
/**
 * flash.ts: turn a Tuya Wi-Fi plug with a Beken BK7231T/N chip into an ESPHome device, from one recipe.
 *
 *   npx tsx flash.ts recipes/23A.yaml              flash one plug, guided
 *   npx tsx flash.ts recipes/23A.yaml --dry-run    show every step and command, touch nothing
 *   npx tsx flash.ts doctor recipes/23A.yaml       check this machine is ready
 *   npx tsx flash.ts profiles bk7231n plug         cloudcutter profile labels a recipe may name
 *   npx tsx flash.ts --help
 *
 * Read it top to bottom: the tables, the recipe schema, the shared vocabulary (errors, output,
 * questions, the run's context), main() (the procedure a hobbyist follows by hand), then one
 * section per step in the order they run, then the machinery the steps share.
 */
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import tty from 'node:tty';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { createRequire } from 'node:module';
import type { z as Zod } from 'zod';
import type { Document, LineCounter } from 'yaml';
import type { DeviceInfoResponse } from '@2colors/esphome-native-api';

// zod and yaml load on first use (synchronously), so `--help` starts as fast as tsx itself; the other
// libraries are imported where they are needed.
const load = createRequire(import.meta.url);
const lib = {
  get z(): typeof Zod { return load('zod').z; },
  get yaml(): typeof import('yaml') { return load('yaml'); },
};

// ─── Tables ─────────────────────────────────

/** The version in package.json, beside this file. */
export const VERSION: string = JSON.parse(fs.readFileSync(new URL('./package.json', import.meta.url), 'utf8')).version;

export type Mcu = 'bk7231t' | 'bk7231n';

/** What flash.ts knows about each chip. Everything plug-specific lives in recipes instead. */
export const MCUS: Record<Mcu, { chip: string; board: string; familyId: number; kickstartAp: string; other: Mcu }> = {
  bk7231t: { chip: 'BK7231T', board: 'generic-bk7231t-qfn32-tuya', familyId: 0x675a40b0,
    kickstartAp: 'kickstart-bk7231t', other: 'bk7231n' },
  bk7231n: { chip: 'BK7231N', board: 'generic-bk7231n-qfn32-tuya', familyId: 0x7b3ef230,
    kickstartAp: 'kickstart-bk7231n', other: 'bk7231t' },
};

/** Pins usable on the QFN32 BK7231 modules, with the option text Kickstart's pinscan `-> Pin` select shows. */
export const BK7231_PINS: Record<string, string> = {
  P0: 'P0 / UART2_TX / I2C2_SCL', P1: 'P1 / UART2_RX / I2C2_SDA', P6: 'P6 / PWM0', P7: 'P7 / PWM1',
  P8: 'P8 / PWM2', P9: 'P9 / PWM3', P10: 'P10 / UART1_RX', P11: 'P11 / UART1_TX', P14: 'P14 / SCK',
  P15: 'P15 / CS', P16: 'P16 / MOSI', P17: 'P17 / MISO', P20: 'P20 / I2C1_SCL / TCK',
  P21: 'P21 / I2C1_SDA / TMS', P22: 'P22 / TDI', P23: 'P23 / TDO / ADC3', P24: 'P24 / PWM4',
  P26: 'P26 / PWM5', P28: 'P28',
};

/** GPIOs of the BK7231T/N QFN32 package that Tuya modules route out: what the generic boards accept. */
const QFN32 = Object.keys(BK7231_PINS).map((p) => Number(p.slice(1)));

/**
 * ESPHome bk72xx boards a recipe may name: the chip on each and the GPIOs ESPHome accepts on it (its bk72xx
 * boards.py, generated from LibreTiny's board variants; test pads included). Tuya modules carry these names.
 */
export const BOARDS: Record<string, { mcu: Mcu; gpios: number[] }> = {
  'generic-bk7231t-qfn32-tuya': { mcu: 'bk7231t', gpios: QFN32 },
  'generic-bk7231n-qfn32-tuya': { mcu: 'bk7231n', gpios: QFN32 },
  wb1s: { mcu: 'bk7231t', gpios: [0, 1, 6, 7, 8, 9, 10, 11, 23, 24, 26] },
  wb2s: { mcu: 'bk7231t', gpios: [0, 1, 6, 7, 8, 9, 10, 11, 20, 21, 22, 23, 24, 26] },
  wb3s: { mcu: 'bk7231t', gpios: [0, 1, 6, 7, 8, 9, 10, 11, 14, 20, 21, 22, 23, 24, 26] },
  wb2l: { mcu: 'bk7231t', gpios: [0, 1, 6, 7, 8, 10, 11, 20, 21, 22, 23, 24, 26] },
  wb3l: { mcu: 'bk7231t', gpios: [0, 1, 6, 7, 8, 9, 10, 11, 14, 16, 20, 21, 22, 23, 24, 26] },
  wblc5: { mcu: 'bk7231t', gpios: [0, 1, 6, 10, 11, 20, 21, 22, 23, 24, 26] },
  // A WB-named module with a BK7231N: its name is no guide to its chip.
  'wb2l-m1': { mcu: 'bk7231n', gpios: [0, 1, 6, 7, 8, 10, 11, 20, 21, 22, 23, 24, 26] },
  cb1s: { mcu: 'bk7231n', gpios: [0, 1, 6, 7, 8, 9, 10, 11, 20, 21, 22, 23, 24, 26] },
  cb2s: { mcu: 'bk7231n', gpios: [0, 1, 6, 7, 8, 10, 11, 21, 23, 24, 26] },
  cb3s: { mcu: 'bk7231n', gpios: [0, 6, 7, 8, 9, 10, 11, 14, 20, 21, 22, 23, 24, 26] },
  cb2l: { mcu: 'bk7231n', gpios: [0, 6, 7, 8, 10, 11, 21, 24, 26] },
  cb3l: { mcu: 'bk7231n', gpios: [0, 6, 7, 8, 9, 10, 11, 14, 21, 23, 24, 26] },
  cblc5: { mcu: 'bk7231n', gpios: [0, 1, 6, 10, 11, 21, 24, 26] },
  cbu: { mcu: 'bk7231n', gpios: QFN32 },
  cb3se: { mcu: 'bk7231n', gpios: [0, 1, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 20, 22, 23, 24, 26] },
};

/** The six hardware PWM channels (PWM0–5): libretiny_pwm on any other pin silently does nothing. */
export const PWM_PINS = [6, 7, 8, 9, 24, 26];

/** ESPHome switch `restore_mode` values (the seed page lists the first four). */
export const RESTORE_MODES = [
  'RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF', 'ALWAYS_ON',
  'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON', 'DISABLED',
] as const;

/**
 * The steps of a full run, in order: `main()` walks this table, and each step has a section below
 * with its run, its plan (what --dry-run prints) and what it depends on (a change redoes it).
 * - journal: 'done' = the runner notes it done when run() returns; 'self' = the step does (compile,
 *   when the build finishes); 'never' = the preflight, which runs every time.
 * - touchesPlug: a run that dies during it may have changed the plug, so the next run looks first.
 * - when: the step runs only with this option. person: the flag that makes it ask a person at the
 *   plug, refused with --yes.
 */
export const STEPS = [
  { name: 'check', does: 'preflight for the steps ahead: tools, Wi-Fi adapter, cloudcutter, profile, firmware, ports',
    run: stepCheck, plan: planCheck, inputs: () => null, journal: 'never' },
  { name: 'config', does: 'render the ESPHome config and create/complete secrets.yaml',
    run: stepConfig, plan: planConfig, inputs: configInputs, journal: 'done' },
  { name: 'compile', does: 'esphome compile, in the background while cloudcutter runs; check the UF2 is for this chip',
    run: stepCompile, plan: planCompile, inputs: firmwareInputs, journal: 'self' },
  { name: 'cloudcutter', does: 'write the device profile, then flash Kickstart over the air with tuya-cloudcutter',
    run: stepCloudcutter, plan: planCloudcutter, inputs: cloudcutterInputs, journal: 'done', touchesPlug: true },
  { name: 'kickstart', does: "join the plug's kickstart AP, give it your Wi-Fi, find it on your LAN",
    run: stepKickstart, plan: planKickstart, inputs: kickstartInputs, journal: 'done', touchesPlug: true,
    person: (o: Options) => (o.manualWifi ? '--manual-wifi' : undefined) },
  { name: 'pins', does: '(--check-pins) drive each recipe pin through Kickstart and ask what you saw',
    run: stepPins, plan: planPins, inputs: (ctx: Ctx) => ctx.recipe.pins, journal: 'done',
    when: (o: Options) => o.checkPins, person: () => '--check-pins' },
  { name: 'upload', does: "send the compiled UF2 to Kickstart's web OTA",
    run: stepUpload, plan: planUpload, inputs: firmwareInputs, journal: 'done', touchesPlug: true },
  { name: 'verify', does: 'find the flashed plug, read its device info over the encrypted API, print how to adopt it',
    run: stepVerify, plan: planVerify, inputs: firmwareInputs, journal: 'done' },
] as const satisfies readonly StepDef[];
export type StepName = (typeof STEPS)[number]['name'];
export type Step = (typeof STEPS)[number];

interface StepDef {
  name: string;
  does: string;
  run: (ctx: Ctx) => Promise<void>;
  plan: (ctx: Ctx) => Promise<string[]>;
  inputs: (ctx: Ctx) => unknown;
  journal: 'done' | 'self' | 'never';
  touchesPlug?: boolean;
  when?: (o: Options) => boolean;
  person?: (o: Options) => string | undefined;
}

/** Keys secrets.yaml must hold for the template's `!secret` references. */
export const SECRET_KEYS = ['wifi_ssid', 'wifi_password', 'api_encryption_key', 'ota_password', 'ap_password'] as const;
/** The secrets.yaml values never printed. The SSID lives there too but is no secret: messages name it. */
export const REDACTED_KEYS = SECRET_KEYS.filter((k) => k !== 'wifi_ssid');

/** A light's channels: Tuya's pin key letter → the recipe's pin function (and the colour it lights). */
const CHANNELS = { r: 'red', g: 'green', b: 'blue', c: 'cold', w: 'warm' } as const;

/**
 * What a recipe pin is, by its function's name: the one table the recipe generator names pins by and the pin check
 * reads. How the check treats each: `drive` switches it on and off and asks what you saw; `pulse` gives a latching
 * relay's set or reset pin one short pulse; `press` reads a button while you press it; `flip` reads a wall switch
 * input while you flip the switch; `leave` does not touch it (`why` says why).
 */
export const PIN_ROLES = [
  { role: 'relay', match: /^relay\d*$/, check: 'drive', does: 'switches a relay' },
  { role: 'latch', match: /^relay\d*_(on|off)$/, check: 'pulse', does: 'sets or resets a latching relay' },
  { role: 'button', match: /^(button\w*|key\d*)$/, check: 'press', does: 'reads a button' },
  { role: 'wall switch', match: /^wall_switch\d*$/, check: 'flip', does: 'reads a wall switch' },
  { role: 'channel', match: new RegExp(`^(${[...Object.values(CHANNELS), 'brightness'].join('|')})$`), check: 'drive',
    does: "drives a light's channel" },
  { role: 'colour temperature', match: /^color_temp$/, check: 'leave', does: "sets a light's colour temperature",
    why: 'colour temperature lights nothing on its own (brightness shows the white)' },
  { role: 'energy', match: /^(cf|cf1|sel)$/, check: 'leave', does: "is the energy chip's",
    why: 'the energy chip pulses it, or it tells the chip what to measure' },
  { role: 'serial', match: /^(uart|energy)_(rx|tx)$/, check: 'leave', does: "talks to the device's own chip",
    why: "a serial line to the device's own chip: driving it would send that chip garbage" },
  { role: 'bus', match: /^(clock|data)$/, check: 'leave', does: 'drives the LED driver chip',
    why: "the LED driver's bus: its wiring comes from Tuya's data" },
  { role: 'infrared', match: /^ir_(receiver|transmitter)$/, check: 'leave', does: 'is the infrared receiver or LED',
    why: 'infrared: nothing a person can see' },
  { role: 'led', match: /led|light/, check: 'drive', does: 'lights an LED' },
  { role: 'other', match: /./, check: 'leave', does: 'is not known to flash.ts',
    why: 'flash.ts does not know what it drives: name it relay…, led…, button… to have it checked' },
] as const satisfies readonly { role: string; match: RegExp; check: 'drive' | 'pulse' | 'press' | 'flip' | 'leave';
  does: string; why?: string }[];

/** What you may have seen when the pin check switched a pin; "show it again" switches it once more. */
export const PIN_ANSWERS = ['the relay clicked', 'a red LED', 'a green LED', 'a blue LED', 'another LED',
  'show it again', 'nothing'];
/** What a light's channel may have lit. */
export const LIGHT_ANSWERS = ['red', 'green', 'blue', 'cold white', 'warm white', 'show it again', 'nothing'];
/** When no press (or flip) showed in time: only the user knows whether they did it, and only then is a pin wrong. */
export const UNSEEN_ANSWERS = { again: 'I had not done it yet: watch again', done: 'I did it, and nothing was seen',
  skip: 'skip this check (the pin stays unproven)' } as const;
/** When the search for a button found it on no pin. */
export const UNFOUND_ANSWERS = {
  again: 'search again', wrong: 'the button is not on any of these pins: the recipe is wrong',
  skip: "skip this check (the recipe's pin stays unproven)",
} as const;

/** Ports cloudcutter's fake Tuya cloud needs on this machine (its own safety check lists them). */
export const CLOUDCUTTER_PORTS = [
  { port: 53, proto: 'udp' }, { port: 67, proto: 'udp' }, { port: 80, proto: 'tcp' },
  { port: 443, proto: 'tcp' }, { port: 1883, proto: 'tcp' }, { port: 8886, proto: 'tcp' },
] as const;

/**
 * What cloudcutter prints when it fails (tuya-cloudcutter's own messages), what that means and what to do.
 * `{tryOther}` becomes "try recipe X" for the recipes of the other chip.
 */
export const CLOUDCUTTER_DIAGNOSES = [
  { match: /did not result in a successful exploit/,
    what: 'the exploit did not work on this plug: its firmware is not the version the profile is for, or Tuya ' +
      'has patched it',
    fix: "check the plug's firmware version in the Smart Life / Status Smart app (Device Update) and pick the " +
      'profile with that version in the recipe; if the version matches, {tryOther}' },
  { match: /is not valid for the chosen profile type/,
    what: 'the firmware file is for a different chip than the cloudcutter profile',
    fix: "{tryOther}; the recipe's kickstart file, profile and mcu must all name the same chip" },
  { match: /could not connect to SSID|Failed to connect, please run this script again/,
    what: "cloudcutter found the plug's access point but could not join it in five tries (or it was not the plug's)",
    fix: "keep the plug close to the Wi-Fi adapter, power-cycle it, put it in AP mode again and retry; if a " +
      "neighbour's device also opens a SmartLife-XXXX network, flash away from it" },
  { match: /Failed to build Docker image/, what: "Docker could not build cloudcutter's image",
    fix: 'check Docker works (docker run --rm hello-world), that this machine is online and has free disk space, ' +
      'then retry' },
  { match: /Unable to auto-detect wifi adapter/, what: 'cloudcutter found no Wi-Fi adapter to use',
    fix: 'pass --wifi-iface IFACE with an adapter from `nmcli device` that supports AP mode' },
  { match: /something went wrong with updating firmware/,
    what: 'the plug was taken over, but sending it the firmware failed',
    fix: 'power-cycle the plug, put it in AP mode again and retry; if it fails again, {tryOther}' },
] as const;

/**
 * Settings read from the environment. Tests point flash.ts at the simulated plug and fake tools with
 * them; an unusual setup (a mirror of the profile API, a slow network) may too.
 */
export const SETTINGS = {
  FLASH_WIFI_SSID: { default: '', does: 'Wi-Fi name for secrets.yaml when it has none (else asked)' },
  FLASH_WIFI_PASSWORD: { default: '', does: 'Wi-Fi password for secrets.yaml when it has none (else asked)' },
  FLASH_CLOUDCUTTER_API: { default: 'https://tuya-cloudcutter.github.io/api',
    does: "cloudcutter's device and profile API (a URL, or a folder with a copy)" },
  FLASH_KICKSTART_PORTAL: { default: 'http://192.168.4.1', does: "Kickstart's captive portal" },
  FLASH_DEVICE_HTTP_PORT: { default: '80', does: "the plug's web server port" },
  FLASH_MDNS_INTERFACE: { default: '', does: 'the interface address mDNS uses (default: all)' },
  FLASH_MDNS_PORT: { default: '5353', does: "mDNS's UDP port (a test bench has one of its own)" },
  FLASH_DISCOVERY_TIMEOUT_MS: { default: '120000', does: 'how long to wait for the plug on mDNS' },
  FLASH_VERIFY_TIMEOUT_MS: { default: '120000', does: 'how long to wait for the flashed device' },
  FLASH_COMPILE_TIMEOUT_MS: { default: '2700000', does: 'how long a compile may take (45 min)' },
  FLASH_HTTP_TIMEOUT_MS: { default: '10000', does: 'timeout of one HTTP request' },
  FLASH_DEVICE_API_PORT: { default: '6053', does: "the flashed plug's native API port (when mDNS does not say)" },
  FLASH_API_TIMEOUT_MS: { default: '10000', does: 'how long the plug has to give its device info over the API' },
  FLASH_MCU_TIMEOUT_MS: { default: '20000', does: "how long a TuyaMCU device's MCU has to report after the upload" },
  FLASH_AP_HINT_MS: { default: '60000', does: 'cloudcutter scanning this long: say the plug is not in AP mode' },
  FLASH_AP_WAIT_MS: { default: '600000', does: 'cloudcutter scanning this long: stop it' },
  FLASH_CLOUDCUTTER_STALL_MS: { default: '60000', does: 'silence after the firmware was sent: cloudcutter is stopped' },
  FLASH_CLOUDCUTTER_QUESTION_MS: { default: '5000',
    does: 'an unknown question of cloudcutter unanswered this long with --yes: the run stops' },
  FLASH_PRESS_TIMEOUT_MS: { default: '30000', does: 'pin check: how long a button press or switch flip is awaited' },
  FLASH_PRESS_SEARCH_MS: { default: '3000', does: 'pin check: how long each pin is read when looking for a button' },
  FLASH_PIN_SHOW_MS: { default: '700', does: 'pin check: how long a pin is held on, then off, for you to see it' },
  FLASH_KICKSTART_AP_TIMEOUT_MS: { default: '120000', does: "how long to rescan for the plug's Kickstart AP" },
} as const;

export const EXIT = { ok: 0, failed: 1, badInput: 2, interrupted: 130 } as const;

/** Where flash.ts lives: paths are shown relative only when run from here. */
const HOME_DIR = path.dirname(fileURLToPath(import.meta.url));
/** Where the user stands, as every relative path is. */
const DEFAULTS = { out: 'esphome', cloudcutter: 'tuya-cloudcutter' };
const ESPHOME_IMAGE = 'ghcr.io/esphome/esphome';

// ─── The recipe schema ─────────────────────────
// One zod schema is the recipe format: validation, error messages and recipes/recipe.schema.json
// (`npx tsx flash.ts schema`) all come from it.

/** The recipe schema, built once on first use. */
export function recipeSchema(): RecipeSchemaType {
  return (builtSchema ??= buildRecipeSchema());
}
let builtSchema: RecipeSchemaType | undefined;
type RecipeSchemaType = ReturnType<typeof buildRecipeSchema>;

function buildRecipeSchema() {
  const z = lib.z;
  const PinName = z.enum(Object.keys(BK7231_PINS) as [string, ...string[]]);
  // ESPHome's own rule for node names (its "is an invalid character for names" check) and length limit.
  const DeviceName = z.string().max(31).regex(/^[a-z0-9_-]+$/);
  return z
    .strictObject({
      model: z.string().min(1).meta({ description: 'The plug, as printed on it, e.g. "Status Wifi Plug 23A ST3".' }),
      mcu: z.enum(['bk7231t', 'bk7231n']).meta({ description: 'The Beken chip inside: bk7231t or bk7231n.' }),
      kickstart: z.string().min(1).default('auto').meta({
        description: 'ESPHome Kickstart firmware in <cloudcutter>/custom-firmware/: "auto" picks the newest for the ' +
          'MCU, or a file name.',
      }),
      cloudcutter: z
        .strictObject({
          profile: z.string().min(1).optional().meta({
            description: 'The label cloudcutter\'s "By firmware version and name" menu shows (e.g. "1.1.8 - ' +
              'BK7231N / ' +
              'oem_bk7231n_plug") or a profile slug: which stock firmware the exploit is for.',
          }),
          device: z.string().min(1).optional().meta({
            description: "A device slug from cloudcutter's device list: whose data cloudcutter uses (with no " +
              'profile, ' +
              'its first profile).',
          }),
        })
        .meta({ description: 'How tuya-cloudcutter identifies the stock firmware: profile, device, or both.' }),
      ap_mode: z.string().min(1).meta({
        description: 'What the user does to put this plug into AP mode (shown when cloudcutter looks for it).',
      }),
      esphome: z.string().min(1).meta({ description: 'The ESPHome template, relative to the recipe (or absolute).' }),
      wiring: z.literal('from the plug').optional().meta({
        description: "The pins are read from the plug's own flash (Tuya's storage) once Kickstart runs, and written " +
          'here with the template: `flash.ts recipe --profile LABEL --name NAME` writes such a recipe.',
      }),
      tuya: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional().meta({
        description: "Tuya's pin configuration (user_param_key) keys this recipe was made from, as `flash.ts recipe` " +
          "writes them: a flash run compares the plug's own with them key by key (a level as well as a pin).",
      }),
      pins: z.record(z.string().regex(/^[a-z][a-z0-9_]*$/), PinName).meta({
        description: 'Function -> BK7231 pin (one the board routes out); each becomes the substitution ' +
          '<function>_pin. --check-pins has you press button*/key* and watch the rest (relay*, light channels red ' +
          'green blue cold warm brightness, LEDs).',
      }),
      substitutions: z
        .looseObject({
          device_name: DeviceName.meta({ description: 'ESPHome node name: a-z, 0-9, - and _, at most 31 characters.' }),
          friendly_name: z.string().min(1).meta({ description: 'The name Home Assistant shows.' }),
          default_state: z.enum(RESTORE_MODES).optional()
            .meta({ description: 'Relay state at power-on (restore_mode).' }),
          board: z.string().optional().meta({ description: 'ESPHome bk72xx board; defaults from mcu.' }),
        })
        .catchall(z.union([z.string(), z.number(), z.boolean()]))
        .meta({ description: 'ESPHome substitutions for the template.' }),
    })
    .superRefine(checkRecipeConsistency)
    .meta({ title: 'flash.ts recipe',
      description: 'One Beken plug model: chip, cloudcutter profile, pins and ESPHome ' +
      'substitutions.' });
}

export type Recipe = Zod.output<RecipeSchemaType>;

/** The checks that span fields; each issue names its field and carries a fix hint. */
function checkRecipeConsistency(r: Zod.output<Zod.ZodObject<any>>, ctx: Zod.RefinementCtx): void {
  const recipe = r as Recipe;
  const mcu = recipe.mcu;
  const issue = (path: (string | number)[], message: string, hint: string) =>
    ctx.addIssue({ code: 'custom', path, message, params: { hint } });

  const board = recipe.substitutions.board;
  const boardMcu = board === undefined ? undefined : BOARDS[String(board)]?.mcu;
  if (board !== undefined) {
    if (!boardMcu)
      issue(['substitutions', 'board'], `"${board}": this board is unknown for bk72xx plugs`,
        `use ${MCUS[mcu].board} (the default for ${mcu}), or remove the line`);
    else if (boardMcu !== mcu)
      issue(['substitutions', 'board'], `board "${board}" carries a ${boardMcu.toUpperCase()}, but mcu is ${mcu}`,
        `use ${MCUS[mcu].board}, or change mcu to ${boardMcu}`);
  }

  const onBoard = BOARDS[String(board ?? MCUS[mcu].board)]?.gpios ?? QFN32;
  const seen = new Map<string, string>();
  for (const [fn, pin] of Object.entries(recipe.pins)) {
    if (boardMcu === mcu && !onBoard.includes(Number(pin.slice(1))))
      issue(['pins', fn], `${pin} is not on board ${board} (ESPHome: "Pin number '${pin.slice(1)}' is not usable ` +
        `for board ${board}")`,
      `use one of ${onBoard.map((g) => `P${g}`).join(' ')}, or the chip's generic board if the module differs`);
    const first = seen.get(pin);
    if (first) issue(['pins', fn], `pin ${pin} is used for both ${first} and ${fn}`,
      "give each function its own pin (see the device page's GPIO table)");
    else seen.set(pin, fn);
  }

  if (!recipe.cloudcutter.profile && !recipe.cloudcutter.device)
    issue(['cloudcutter'], 'give cloudcutter.profile, cloudcutter.device, or both',
      'e.g. profile: 1.1.8 - BK7231N / oem_bk7231n_plug (`npx tsx flash.ts profiles` lists them)');
  const labelChip = recipe.cloudcutter.profile?.match(/-\s*(BK72\w+)\s*\//i)?.[1]?.toLowerCase();
  if (labelChip && labelChip !== mcu)
    issue(['cloudcutter', 'profile'],
      `profile "${recipe.cloudcutter.profile}" is for a ${labelChip.toUpperCase()}, but mcu is ${mcu}`,
      `pick a "- ${MCUS[mcu].chip}" profile, or change mcu to ${labelChip} if the plug really has that chip`);

  if (recipe.kickstart !== 'auto' && recipe.kickstart.toLowerCase().includes(MCUS[mcu].other))
    issue(['kickstart'], `"${recipe.kickstart}" is firmware for the ${MCUS[MCUS[mcu].other].chip}, but mcu is ${mcu}`,
      `use kickstart: auto, or the ..._${mcu}_app.ota.ug.bin file`);

  const subs = recipe.substitutions;
  for (const key of Object.keys(subs))
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key))
      issue(['substitutions', key], `"${key}" is not a valid substitution name`,
        'use letters, digits and _ (e.g. main_icon)');
  for (const fn of Object.keys(recipe.pins))
    if (`${fn}_pin` in subs)
      issue(['substitutions', `${fn}_pin`], `${fn}_pin comes from pins.${fn}; it cannot also be a substitution`,
        `remove it and set pins.${fn}`);
}

/** Example values used in "add this line" hints. */
const FIELD_EXAMPLES: Record<string, string> = {
  model: 'model: Status Wifi Plug 23A ST3',
  mcu: 'mcu: bk7231n',
  cloudcutter: 'cloudcutter:\n      profile: 1.1.8 - BK7231N / oem_bk7231n_plug',
  ap_mode: 'ap_mode: Hold the button 5 s until the LED flashes fast, release, then hold again until it flashes slowly.',
  esphome: 'esphome: status-plug.esphome.yaml',
  pins: 'pins:\n      button: P8\n      relay: P24',
  substitutions: 'substitutions:\n      device_name: status-plug-01\n      friendly_name: Status Plug 01',
  device_name: 'device_name: status-plug-01',
  friendly_name: 'friendly_name: Status Plug 01',
};

/** "P24" for the ways people write a BK7231 pin (GPIO24, 24, p24), when that pin exists. Pure. */
export function pinSpelling(written: string): string | undefined {
  const n = /^(?:gpio|p|pin)?\s*(\d+)$/i.exec(written.trim())?.[1];
  return n !== undefined && `P${Number(n)}` in BK7231_PINS ? `P${Number(n)}` : undefined;
}

// ─── The shared vocabulary: errors, output, questions, the run's context ───

/** A problem with the user's input: where it is, what is wrong, how to fix it. Exit 2. */
export interface Problem {
  file?: string;
  line?: number;
  field?: string;
  message: string;
  hint?: string;
}

export class InputError extends Error {
  constructor(public problems: Problem[]) {
    super(problems.map(formatProblem).join('\n'));
  }
}

/**
 * What could not be done: what happened and what to do next (usually a retry command). Thrown anywhere; the runner
 * names the step (or command) it stopped, and gives a retry from there when the thrower had no better hint. Exit 1.
 */
export class Failure extends Error {
  /** The step (or command) that stopped: set by the runner. */
  step?: string;
  constructor(message: string, public hint?: string) {
    super(message);
  }
}

/** A request to the plug that failed after its retries (its step's hint: is the plug powered and near?). */
export class HttpError extends Failure {}

/** The run was stopped: Ctrl+C, SIGTERM (a kill) or SIGHUP (a closed terminal). */
export class Interrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`stopped (${signal})`);
  }
}

/** A firmware file that cannot be used, with what it is and what would fit. */
export class FirmwareError extends Error {}

export function formatProblem(p: Problem): string {
  const where = [p.file, p.line].filter((x) => x !== undefined).join(':');
  const head = [where, p.field].filter(Boolean).join(': ');
  return `${head ? `${head}: ` : ''}${p.message}${p.hint ? `\n    fix: ${p.hint}` : ''}`;
}

// Output. Everything printed or logged passes through redact(): no secret reaches the screen or a file.

const useColor = process.env.FORCE_COLOR ? process.env.FORCE_COLOR !== '0'
  : !process.env.NO_COLOR && !!process.stdout.isTTY;
const paint = (code: number) => (s: string) => (useColor ? `\x1b[${code}m${s}\x1b[0m` : s);
export const c = {
  bold: paint(1), dim: paint(2), red: paint(31), green: paint(32), yellow: paint(33), cyan: paint(36),
};
const ok = () => c.green('✓');
const warn = () => c.yellow('!');

/** Secret values seen this run. */
const secretValues = new Set<string>();

export function registerSecret(value: string | undefined): void {
  // Shorter values would mangle ordinary words; real Wi-Fi (WPA) passwords have 8+ characters.
  if (value && value.length >= 4) secretValues.add(value);
}

export function redact(text: string, secrets: Iterable<string> = secretValues): string {
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) text = text.split(s).join('***');
  return text;
}

/** Prints lines, each broken to fit the terminal; `hang` is where a broken line's rest starts (its indent + 2). */
function print(text: string, hang?: number): void {
  io.out(fitText(redact(text), outputWidth(), hang) + '\n');
}

function printError(text: string): void {
  io.err(fitText(redact(text), outputWidth()) + '\n');
}

/** The columns output is fitted to: the terminal's, else $COLUMNS, else 80. */
function outputWidth(): number {
  const columns = process.stdout.columns || Number(process.env.COLUMNS);
  return columns >= 40 ? columns : 80;
}

const visible = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');

/** Every line of `text` fitted to `width` (fitLine). Pure. */
export function fitText(text: string, width: number, hang?: number): string {
  return text.split('\n').flatMap((line) => fitLine(line, width, hang)).join('\n');
}

/**
 * One line broken at spaces so that no piece is wider than `width` columns, never inside a word (a word wider than
 * the line stays whole). The pieces after the first start at `hang` columns (default: the line's indent + 2, after a
 * `│ ` of child output). A shell command (`$ …`) ends its broken pieces with ` \`, so it still pastes as one. Pure.
 */
export function fitLine(line: string, width: number, hang?: number): string[] {
  if (visible(line).length <= width) return [line];
  const indent = /^\s*/.exec(visible(line))![0].length;
  const command = /^\s*\$ /.test(visible(line));
  const margin = /^\s*│ /.test(visible(line)) ? `${' '.repeat(indent)}│   `
    : ' '.repeat(hang ?? indent + (command ? 4 : 2));
  const room = width - (command ? 2 : 0);
  const out: string[] = [];
  // Words and the spaces between them; the leading indent stays with the first word.
  const parts = line.trimStart().split(/( +)/);
  let current = line.slice(0, line.length - line.trimStart().length);
  let started = false;
  for (let i = 0; i < parts.length; i += 2) {
    const word = parts[i];
    const gap = i ? parts[i - 1] : '';
    if (started && visible(current + gap + word).length > room) {
      out.push(current + (command ? ' \\' : ''));
      current = margin + word;
    } else current += (started ? gap : '') + word;
    started = true;
  }
  out.push(current);
  return out;
}

/** A path as the user should read it: relative when run from flash.ts's folder, else absolute. */
function shown(p: string): string {
  const abs = path.resolve(p);
  if (process.cwd() !== HOME_DIR) return abs;
  const rel = path.relative(HOME_DIR, abs);
  return rel.startsWith('..') || path.isAbsolute(rel) ? abs : rel || '.';
}

/** A question flash.ts asks. `id` is stable, so a virtual user (tests, the demo) can tell them apart. */
export interface Question {
  id: string;
  kind: 'input' | 'password' | 'confirm' | 'select';
  message: string;
  choices?: string[];
  default?: boolean;
  /** For input and password: true, or what is wrong with the answer (shown under the prompt). */
  validate?: (answer: string) => true | string;
  /** The answer when nobody can be asked (--yes, or no terminal): the careful one. None: the run stops. */
  unattended?: string;
  /** When nobody can be asked and there is no unattended answer: why that stops the run, and how to go on. */
  unanswered?: { what: string; hint: string };
}

/**
 * Where output goes and where questions are asked: the terminal, through @inquirer/prompts. Tests and
 * `npm run demo` plug in a virtual terminal (an input stream that is a TTY, a screen) and are told of
 * each question before it is drawn, so a virtual user can type its answer into the real prompt.
 */
export const io = {
  out: (text: string): void => void process.stdout.write(text),
  err: (text: string): void => void process.stderr.write(text),
  input: process.stdin as NodeJS.ReadableStream & { isTTY?: boolean },
  /** Where prompts draw; process.stdout unless a virtual terminal is plugged in. */
  screen: undefined as undefined | ((text: string) => void),
  onQuestion: undefined as undefined | ((q: Question) => void),
};

/** Whether a person can be asked: a terminal (or a virtual one) on the input side. */
function canAsk(): boolean {
  return !!io.input.isTTY;
}

/** Who answers this run's questions (a person at a terminal, unless --yes), and the run's scope. */
export interface Asking { opts: { yes: boolean }; scope: RunScope }

/** Whether nobody can be asked in this run: --yes, or no terminal. */
function unattended(run: Asking): boolean {
  return run.opts.yes || !canAsk();
}

/**
 * Asks one question in the terminal, through @inquirer/prompts. When nobody can be asked (--yes, or no terminal) the
 * answer is the question's `unattended` one (said in the output), or the run stops with a Failure saying how to go
 * on. Ctrl+C inside a question (the terminal is in raw mode: it is a key, not a signal) stops the run as Ctrl+C
 * anywhere does, and so does a signal that comes while it is asked.
 */
async function ask(q: Question, run: Asking): Promise<string> {
  if (unattended(run)) {
    const why = run.opts.yes ? '--yes' : 'no terminal';
    if (q.unattended !== undefined) {
      print(c.dim(`    ${q.message} → ${q.kind === 'confirm' ? (q.unattended === 'true' ? 'yes' : 'no')
        : q.unattended} (${why}: nobody is asked)`));
      return q.unattended;
    }
    throw new Failure(q.unanswered?.what ?? `${q.message}: ${why} means nobody can answer`,
      q.unanswered?.hint ?? (run.opts.yes ? 'run it without --yes, to be asked' : 'run it in a terminal'));
  }
  run.scope.signal.throwIfAborted();
  io.onQuestion?.(q);
  const prompts = await import('@inquirer/prompts');
  const screen = io.screen;
  // A prompt ends its output stream when it is done; a fresh one per prompt keeps the screen open.
  const output = screen ? new Writable({ write: (chunk, _enc, done) => (screen(String(chunk)), done()) })
    : process.stdout;
  const context = { input: io.input, output, signal: run.scope.signal };
  const validate = (s: string) => (q.validate ? q.validate(s) : s.trim() !== '' || 'required');
  // A closed terminal ends the prompt's input: the prompt's readline then fails to leave raw mode (EIO) and, with
  // nobody listening for its errors, would crash flash.ts before its children are stopped. There is no terminal left
  // to restore: that call is dropped, and the run stops as a hang-up stops it.
  const input = io.input as NodeJS.ReadableStream & { setRawMode?: (on: boolean) => unknown };
  const hungUp = () => {
    input.setRawMode &&= () => input;
    run.scope.interrupt('SIGHUP');
  };
  input.prependOnceListener('end', hungUp);
  try {
    if (q.kind === 'password') return await prompts.password({ message: q.message, mask: '*', validate }, context);
    if (q.kind === 'select')
      return await prompts.select({ message: q.message, choices: (q.choices ?? []).map((value) => ({ value })) },
        context);
    if (q.kind === 'confirm')
      return String(await prompts.confirm({ message: q.message, default: q.default ?? true }, context));
    return await prompts.input({ message: q.message, validate }, context);
  } catch (e) {
    if ((e as Error).name === 'ExitPromptError') run.scope.interrupt('SIGINT');
    if (run.scope.signal.aborted) throw run.scope.signal.reason;
    throw e;
  } finally {
    input.removeListener('end', hungUp);
  }
}

/** A yes/no question; when nobody can be asked, its default. */
async function confirm(id: string, message: string, run: Asking, def = true): Promise<boolean> {
  return (await ask({ id, kind: 'confirm', message, default: def, unattended: String(def) }, run)) === 'true';
}

// The run's context.

export interface Options {
  recipe: string;
  out: string;
  cloudcutter: string;
  sets: Record<string, string>;
  dryRun: boolean;
  yes: boolean;
  only?: StepName;
  from?: StepName;
  wifiIface?: string;
  deviceIp?: string;
  checkPins: boolean;
  manualWifi: boolean;
  backupFlash: boolean;
  restart: boolean;
  count?: number;
  esphome?: 'local' | 'docker';
  verbose: boolean;
}

/** What the run has learned about the plug; kept in the journal. */
export interface Facts {
  /** The MAC the plug itself reports (Kickstart's portal or mDNS, then ESPHome). */
  mac?: string;
  /** The MAC cloudcutter printed: from Tuya's data, and not always the one the plug reports later. */
  tuyaMac?: string;
  kickstartIp?: string;
  deviceIp?: string;
  /** The Kickstart file cloudcutter flashed, and its SHA-256 (to tell later which build the plug got). */
  kickstartFile?: string;
  kickstartSha256?: string;
  /** The plug's own wiring, read from Tuya's storage on its flash once (or why there is none). */
  plugWiring?: PlugWiring;
  /** The UF2 uploaded, and its SHA-256. */
  uf2Sha256?: string;
}

/** Everything a step needs: the validated recipe, rendered inputs, the options and what was learned. */
export interface Ctx {
  opts: Options;
  /** The run this plug is flashed in: its signal, its children, its cleanups. */
  scope: RunScope;
  recipe: Recipe;
  recipePath: string;
  /** The recipe's line of a field (for messages that point into it). */
  lineOf: (field: string[]) => number | undefined;
  templatePath: string;
  template: string;
  substitutions: Record<string, string>;
  deviceName: string;
  /** The files this plug's run reads and writes. */
  files: { config: string; secrets: string; journal: string; uf2: string };
  facts: Facts;
  journal: Journal;
  /** The background compile, once started. */
  compile?: CompileJob;
  /** The step under way (for Ctrl+C and failure messages). */
  current?: StepName;
  /** Steps this run finished. */
  finished: StepName[];
  /** The step the last run was in when it stopped (crash, Ctrl+C or failure): its effect may have happened. */
  interrupted?: StepName;
  /** Called once this plug's firmware is compiled (a batch then starts the next plug's). */
  afterCompile?: () => void;
  /** The Wi-Fi adapter with AP mode that cloudcutter and the Kickstart join use (once chosen). */
  adapter?: string;
  /** How ESPHome runs here, once found (`esphome version` takes a second: asked once per plug). */
  esphome?: Esphome;
}

// Shell commands, always through zx (it quotes every argument).

/**
 * Runs a command and captures its output. Never throws on an exit code; a stopped run (`signal`) ends the command and
 * rejects with the stop.
 */
export async function sh(argv: string[], opts: { cwd?: string; timeoutMs?: number; signal?: AbortSignal } = {}):
  Promise<{ code: number; stdout: string; stderr: string; notFound: boolean }> {
  const { $ } = await import('zx');
  opts.signal?.throwIfAborted();
  const p = await $({ cwd: opts.cwd, env: process.env, nothrow: true, quiet: true, verbose: false, input: '',
    timeout: opts.timeoutMs ?? 30_000, signal: opts.signal })`${argv}`;
  opts.signal?.throwIfAborted();
  const code = p.exitCode ?? 1;
  return { code, stdout: p.stdout, stderr: p.stderr, notFound: code === 127 };
}

/** An argv as a user would type it (for display only; commands run through zx). */
export function shq(...argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./<>*-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** How to start flash.ts from where the user is (its full path from another directory). */
function flashCommand(): string {
  // From anywhere else, by its path: npx finds tsx only in the project it is run in.
  return process.cwd() === HOME_DIR ? 'npx tsx flash.ts' : shq(path.join(HOME_DIR, 'flash.ts'));
}

/**
 * The command that runs this recipe again with `flags` (for hints), repeating every option of this run
 * that says where things are or how to reach them.
 */
function rerun(opts: Options, flags: string): string {
  const kept = (flag: string, on: boolean | undefined) => (on && !flags.includes(flag) ? ` ${flag}` : '');
  return `${flashCommand()} ${shq(opts.recipe)}${flags ? ` ${flags}` : ''}` +
    (opts.out === DEFAULTS.out ? '' : ` --out ${shq(opts.out)}`) +
    (opts.cloudcutter === DEFAULTS.cloudcutter ? '' : ` --cloudcutter ${shq(opts.cloudcutter)}`) +
    (opts.wifiIface ? ` --wifi-iface ${shq(opts.wifiIface)}` : '') +
    (opts.deviceIp && !flags.includes('--device-ip') ? ` --device-ip ${shq(opts.deviceIp)}` : '') +
    (opts.esphome ? ` --esphome ${opts.esphome}` : '') +
    (opts.manualWifi ? ' --manual-wifi' : '') + kept('--check-pins', opts.checkPins) +
    kept('--backup-flash', opts.backupFlash) + kept('--verbose', opts.verbose) +
    Object.entries(opts.sets).map(([k, v]) => ` --set ${shq(`${k}=${v}`)}`).join('');
}

/**
 * How to build the firmware again and go on. Not `--from compile`: that would redo cloudcutter and kickstart too,
 * on a plug that has long left its Tuya firmware.
 */
function recompile(opts: Options): string {
  return `recompile: ${rerun(opts, '--only compile')}, then upload it: ${rerun(opts, '--from upload')}`;
}

/** Shows `label` with a spinner and the elapsed time while `work` runs (a plain line without a terminal). */
async function withSpinner<T>(label: string, work: Promise<T>): Promise<T> {
  const start = Date.now();
  if (!process.stdout.isTTY || io.screen) {
    print(`    ${label} …`);
    return work;
  }
  const frames = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏';
  let i = 0;
  // One line, or \r cannot go back over it: a label too long for the terminal is cut.
  const room = outputWidth() - 14;
  const shownLabel = label.length > room ? `${label.slice(0, room - 1)}…` : label;
  const tick = setInterval(() => io.out(`\r    ${c.cyan(frames[i++ % frames.length])} ${shownLabel} ` +
    `(${Math.round((Date.now() - start) / 1000)} s)\x1b[K`), 100);
  try {
    return await work;
  } finally {
    clearInterval(tick);
    io.out('\r\x1b[K');
  }
}

/**
 * One run of flash.ts: its abort signal (set off by Ctrl+C, SIGTERM or SIGHUP: every question, wait and request
 * takes it), the children it started, each with the way it is stopped, and the cleanups to do on the way out (a
 * temporary Wi-Fi connection). Created at the start, carried on the run's context.
 */
export class RunScope {
  readonly #abort = new AbortController();
  readonly #children = new Set<{ stop: () => Promise<void> }>();
  readonly #cleanups = new Set<() => Promise<unknown>>();
  /** The signal that stopped the run, once one did. */
  interrupted?: NodeJS.Signals;
  /** The plug under way (its journal is saved when the run stops). */
  ctx?: Ctx;

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  interrupt(signal: NodeJS.Signals): void {
    if (this.interrupted) return;
    this.interrupted = signal;
    this.#abort.abort(new Interrupted(signal));
  }

  /** Keeps a child to stop when the run ends early; `stop` is how (each child has its own). Returns the forget. */
  child(stop: () => Promise<void>): () => void {
    const entry = { stop };
    this.#children.add(entry);
    return () => void this.#children.delete(entry);
  }

  /** An undo for the way out (run when the run stops early); the returned function runs it now and forgets it. */
  cleanup(undo: () => Promise<unknown>): () => Promise<unknown> {
    this.#cleanups.add(undo);
    return () => (this.#cleanups.delete(undo), undo());
  }

  /** Stops every child (each its own way, all at once) and runs the cleanups. Never throws. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#children].map((c) => c.stop()));
    this.#children.clear();
    await Promise.allSettled([...this.#cleanups].map((undo) => undo()));
    this.#cleanups.clear();
  }
}

// ─── main(): the procedure ─────────────────────

export async function main(argv: string[], scope = new RunScope()): Promise<number> {
  const cli = parseCli(argv);
  if (cli.command === 'help') return print(usage()), EXIT.ok;
  if (cli.command === 'version') return print(VERSION), EXIT.ok;
  if (cli.command === 'schema') return io.out(recipeJsonSchemaText()), EXIT.ok;
  if (cli.command === 'profiles') return listProfiles(cli.words, scope);
  if (cli.command === 'recipe') return runRecipeCommand(cli.words, { ...cli, scope });
  if (cli.command !== 'run' && cli.command !== 'doctor') return EXIT.ok;
  const ctx = loadContext(cli.opts, scope);
  if (cli.command === 'doctor') return runDoctor(ctx);
  refuseUnattended(ctx);
  if (ctx.opts.count) return runBatch(ctx);
  return (await runPlug(ctx)) ? EXIT.ok : EXIT.failed;
}

/** One plug, step by step, from where its journal says it got to. Throws StepError on a failed step. */
async function runPlug(ctx: Ctx): Promise<boolean> {
  const opts = ctx.opts;
  ctx.scope.ctx = ctx;
  print(`${c.bold('flash.ts')} · ${ctx.recipe.model} (${MCUS[ctx.recipe.mcu].chip}) → ${c.bold(ctx.deviceName)}` +
    (opts.dryRun ? c.dim('   [dry run: nothing is written, run or sent]') : ''));

  const plan = stepsToRun(opts, fromPlug(ctx.recipe));
  const steps = resumePoint(ctx, plan);
  if (opts.only !== 'check' && !steps.some((s) => s.name !== 'check')) {
    print(`\n${ok()} every step is already done for ${ctx.deviceName} (journal ${shown(ctx.files.journal)}).`);
    print(`  To flash it again: --restart; to redo part of it: --from STEP.`);
    return true;
  }
  for (const step of steps) {
    ctx.current = step.name;
    // Numbered in the whole plan, so a resumed run's steps keep their numbers.
    print(`\n${c.cyan(`[${plan.indexOf(step) + 1}/${plan.length}]`)} ${c.bold(step.name.padEnd(11))} ` +
      c.dim(step.does));
    if (opts.dryRun) for (const line of await step.plan(ctx)) print(`    ${line}`);
    else {
      if ('touchesPlug' in step) recordStart(ctx, step.name);
      await step.run(ctx).catch((e) => {
        // The runner names the step that stopped, and gives a retry from it where the thrower had no better hint.
        if (e instanceof Failure) {
          e.step ??= step.name;
          e.hint ??= e instanceof HttpError ? `check the plug is powered and within reach, then retry: ` +
            rerun(opts, `--from ${step.name}`) : `retry: ${rerun(opts, `--from ${step.name}`)}`;
        }
        throw e;
      });
      if (step.journal === 'done') recordStep(ctx, step.name);
      ctx.finished.push(step.name);
    }
    if (ctx.compile && step.name !== 'compile' && !ctx.compile.finished)
      print(c.dim(`    (compile still running in the background: ${seconds(Date.now() - ctx.compile.started)} ` +
        'so far)'));
  }
  ctx.current = undefined;
  if (opts.dryRun) print(`\n${ok()} dry run complete: run the same command without --dry-run to do it.`);
  else if (ctx.finished.includes('verify')) print(`\n${ok()} ${ctx.deviceName} runs ESPHome: done.`);
  else {
    const done = opts.only === 'check' ? ['check'] : ctx.finished.filter((s) => s !== 'check');
    print(`\n${ok()} ${done.join(', ')} done for ${ctx.deviceName}.`);
    if (STEPS.at(-1)!.name !== done.at(-1)) print(`  To go on from here: ${rerun({ ...opts, only: undefined }, '')}`);
  }
  return true;
}

/** Which steps this run covers: all, `--only STEP`, or `--from STEP` onwards; optional steps when asked for. */
export function stepsToRun(opts: Pick<Options, 'only' | 'from' | 'checkPins'>, pinsFromPlug = false): Step[] {
  // A recipe whose pins come from the plug has no config to write until the kickstart step read them from its flash:
  // config and compile follow it (and cannot run beside cloudcutter).
  const order: Step[] = pinsFromPlug ? [...STEPS.filter((s) => s.name !== 'config' && s.name !== 'compile')]
    : [...STEPS];
  if (pinsFromPlug) order.splice(order.findIndex((s) => s.name === 'kickstart') + 1, 0,
    ...STEPS.filter((s) => s.name === 'config' || s.name === 'compile'));
  if (opts.only) return order.filter((s) => s.name === opts.only);
  // The preflight always comes first: it checks just what the steps after it need.
  const start = opts.from ? order.findIndex((s) => s.name === opts.from) : 0;
  return order.filter((s, i) => (s.name === 'check' || i >= start) && (!('when' in s) || s.when(opts as Options)));
}

/**
 * With --yes (or with no terminal) nobody answers: a run that needs a person's answer is refused before
 * anything is touched, naming the flag to drop or the variable to set. A dry run is refused the same: it shows what
 * the real run would do, and that would be this.
 */
function refuseUnattended(ctx: Ctx): void {
  const opts = ctx.opts;
  if (!unattended(ctx)) return;
  const why = opts.yes ? '--yes' : 'no terminal';
  const steps = stepsToRun(opts);
  const problems: Problem[] = [];
  for (const step of steps) {
    const flag = 'person' in step ? step.person(opts) : undefined;
    if (flag)
      problems.push({ file: 'command line', field: flag, message: `the ${step.name} step asks you about the plug, ` +
        `and ${why} means nobody answers`, hint: opts.yes ? `drop --yes (or ${flag})` : 'run it in a terminal' });
  }
  if (steps.some((s) => s.name === 'config')) {
    const secrets = readSecretsFile(ctx.files.secrets).values;
    for (const [key, envVar] of [['wifi_ssid', 'FLASH_WIFI_SSID'], ['wifi_password', 'FLASH_WIFI_PASSWORD']])
      if (!(key in secrets) && !process.env[envVar])
        problems.push({ file: 'environment', field: envVar, message: `${shown(ctx.files.secrets)} has no ${key} and ` +
          `${why} means it cannot be asked`,
        hint: `set ${envVar}=... in the environment, or ${opts.yes ? 'run without --yes' : 'run it in a terminal'} ` +
          'to be asked' });
  }
  if (problems.length) throw new InputError(problems);
}

/**
 * `--count N`: N plugs from one recipe, named after the highest already in the config dir. Plugs left
 * unfinished by an earlier batch come first. While you work on one plug, the next one's firmware compiles.
 */
async function runBatch(first: Ctx): Promise<number> {
  const opts = first.opts;
  const unfinished = configNames(opts.out).filter((n) => sameSeries(n, first.deviceName) && !isFinished(opts.out, n));
  const names = [
    ...unfinished.slice(0, opts.count).map((n) => ({ device_name: n,
      friendly_name: friendlyFor(first.substitutions.friendly_name, n) })),
    ...batchNames(first.substitutions, configNames(opts.out), Math.max(0, opts.count! - unfinished.length)),
  ];
  print(`${c.bold('batch')}: ${names.length} plugs: ${names.map((n) => n.device_name).join(', ')}`);
  const plugs = names.map((n) => loadContext({ ...opts, count: undefined, sets: { ...opts.sets, ...n } }, first.scope));
  const results: string[][] = [];
  const result = (ctx: Ctx, outcome: string) =>
    results.push([ctx.deviceName, ctx.facts.deviceIp ?? ctx.facts.kickstartIp ?? '-', ctx.facts.mac ?? '-', outcome]);
  // While one plug is flashed by hand, the next one's config is written and its firmware compiled;
  // hooked up front, since plug k+1's compile starts (and ends) while plug k is under way.
  if (!opts.dryRun)
    for (const [k, ctx] of plugs.entries()) if (plugs[k + 1]) ctx.afterCompile = () => void prepareNext(plugs[k + 1]);
  for (const [k, ctx] of plugs.entries()) {
    const next = plugs[k + 1];
    print(`\n${c.bold(`━━ plug ${k + 1} of ${plugs.length}: ${ctx.deviceName} ━━`)}`);
    try {
      await runPlug(ctx);
      result(ctx, opts.dryRun ? 'planned' : 'flashed');
    } catch (e) {
      if (!(e instanceof Failure)) throw e;
      printError(`\n${c.red(`✗ ${e.step} failed:`)} ${e.message}${e.hint ? `\n  ${e.hint}` : ''}`);
      result(ctx, `failed at ${e.step}`);
      const goOn = `${ctx.deviceName} failed. Go on with ${next?.deviceName}?`;
      if (next && !(await confirm('batch_continue', goOn, ctx))) break;
    }
  }
  print(`\n${c.bold('Plugs')}`);
  print(formatTable([['name', 'IP', 'MAC', 'result'], ...results]));
  return results.length === plugs.length && results.every((r) => !r[3].startsWith('failed')) ? EXIT.ok : EXIT.failed;
}

/** Config and background compile for the next plug of a batch, quietly. */
async function prepareNext(ctx: Ctx): Promise<void> {
  try {
    const files = renderConfigFiles(ctx, readSecretsFile(ctx.files.secrets), null, randomSecret);
    writeFileAtomic(files.configPath, files.config);
    recordStep(ctx, 'config');
    ctx.compile = await startCompile(ctx, true);
  } catch {
    // The plug's own run redoes whatever did not work here, and reports it.
  }
}

/** Names for `count` more plugs after the highest `<base>-NN` in `existing`. Pure. */
export function batchNames(subs: Record<string, string>, existing: string[], count: number):
  { device_name: string; friendly_name: string }[] {
  const base = subs.device_name.replace(/[-_]?\d+$/, '') || subs.device_name;
  const re = new RegExp(`^${base.replace(/[-]/g, '\\-')}-(\\d+)$`);
  const highest = Math.max(0, ...existing.map((n) => Number(n.match(re)?.[1] ?? 0)));
  return Array.from({ length: count }, (_, i) => {
    const name = `${base}-${String(highest + 1 + i).padStart(2, '0')}`;
    return { device_name: name, friendly_name: friendlyFor(subs.friendly_name, name) };
  });
}

/** "Status Plug 07" for status-plug-07: the recipe's friendly name with the plug's number. */
function friendlyFor(friendly: string, name: string): string {
  return `${friendly.replace(/\s*\d+$/, '')} ${name.match(/(\d+)$/)?.[1] ?? ''}`.trim();
}

function sameSeries(name: string, deviceName: string): boolean {
  return name.replace(/[-_]?\d+$/, '') === deviceName.replace(/[-_]?\d+$/, '') && /\d+$/.test(name);
}

/** Device names with a config in `out` (`<name>.yaml` beside secrets.yaml). */
function configNames(out: string): string[] {
  if (!fs.existsSync(out)) return [];
  return fs.readdirSync(out).filter((f) => f.endsWith('.yaml') && f !== 'secrets.yaml')
    .map((f) => f.slice(0, -5)).sort();
}

function isFinished(out: string, name: string): boolean {
  return !!readJournal(journalFile(out, name))?.steps.verify;
}

/**
 * Rows as a table with a bold header row; wider than `width`, each row folds: its first cell on a line, the others
 * indented under it. Pure.
 */
export function formatTable(rows: string[][], width = outputWidth()): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  if (2 + widths.reduce((a, b) => a + b + 2, -2) <= width)
    return rows.map((r, j) => '  ' + r.map((cell, i) => (j === 0 ? c.bold(cell.padEnd(widths[i]))
      : cell.padEnd(widths[i]))).join('  ').trimEnd()).join('\n');
  return rows.map(([first, ...rest], j) => [`  ${j === 0 ? c.bold(first) : first}`,
    ...rest.map((cell) => `      ${j === 0 ? c.bold(cell) : cell}`)].join('\n')).join('\n');
}

// ─── Step: check ───────────────────────────────

/** The steps the preflight checks for: those this run goes on to, or all of them with --only check. */
function stepsAhead(ctx: Ctx): StepName[] {
  return (ctx.opts.only === 'check' ? STEPS : stepsToRun(ctx.opts, fromPlug(ctx.recipe))).map((s) => s.name);
}

/** The doctor's checks that matter for the steps this run is about to do; offers to clone cloudcutter. */
async function stepCheck(ctx: Ctx): Promise<void> {
  const ahead = stepsAhead(ctx);
  const relevant = async () => (await doctor(ctx)).filter((k) => k.for.some((s) => ahead.includes(s)));
  let checks = await relevant();
  // A recipe mistake found by a check (a profile cloudcutter does not have) is bad input, not a machine problem.
  const problems = checks.flatMap((k) => (k.problem ? [k.problem] : []));
  if (problems.length) throw new InputError(problems);
  // Everything is checked and shown first: a machine without Docker is told so before it is offered a clone.
  printChecks(checks);
  const missing = checks.find((k) => k.name === 'cloudcutter checkout' && !k.ok);
  // Offered only when the clone is all that is missing (the Kickstart file comes with it).
  if (missing && checks.every((k) => k.ok || k.fix === missing.fix) &&
      (await confirm('clone_cloudcutter', `There is no tuya-cloudcutter checkout in ${shown(ctx.opts.cloudcutter)}. ` +
        'Clone it now?', ctx))) {
    const { $ } = await import('zx');
    await $({ stdio: 'inherit', nothrow: true, signal: ctx.scope.signal })`git clone --depth 1 ${CLOUDCUTTER_REPO} ${
      ctx.opts.cloudcutter}`;
    checks = await relevant();
    printChecks(checks.filter((k) => ['cloudcutter checkout', 'Kickstart firmware'].includes(k.name)));
  }
  const failed = checks.filter((k) => !k.ok);
  if (failed.length)
    throw new Failure(`${failed.map((k) => k.name).join(', ')} not ready`,
      `fix what is marked ✗ above and run again (${flashCommand()} doctor ${shq(ctx.opts.recipe)} shows the ` +
      'same table)');
}

async function planCheck(ctx: Ctx): Promise<string[]> {
  const ahead = stepsAhead(ctx);
  const lines = [`checks for: ${ahead.filter((s) => s !== 'check').join(', ')}`,
    '$ docker info --format {{.ServerVersion}}',
    '$ nmcli -t -f DEVICE,TYPE,STATE device; nmcli -t -f WIFI-PROPERTIES.AP device show IFACE',
    `$ ss -H -l -n -t -u -p   (ports ${CLOUDCUTTER_PORTS.map((p) => `${p.port}/${p.proto}`).join(' ')} must be free)`,
    `read ${shown(path.join(ctx.opts.cloudcutter, 'custom-firmware'))}/<kickstart file> and check it is ` +
      `${MCUS[ctx.recipe.mcu].chip} firmware`,
    '$ esphome version   (else the Docker image)'];
  if (ahead.includes('cloudcutter')) {
    // The recipe's profile is checked even in a dry run: a wrong label is a mistake to hear about now.
    const profile = await profileCheck(ctx);
    if (profile.problem) throw new InputError([profile.problem]);
    lines.push(`cloudcutter profile: ${profile.detail}`);
  }
  return lines;
}

// ─── Step: config ──────────────────────────────

/** The files the config step writes, rendered in memory first so nothing is half-written. */
export interface ConfigFiles {
  configPath: string;
  config: string;
  secretsPath: string;
  secrets: string;
  secretsAdded: string[];
  gitignorePath: string;
  gitignore: string;
}

async function stepConfig(ctx: Ctx, secretsOnly = false): Promise<void> {
  const existing = readSecretsFile(ctx.files.secrets);
  const wifi = await askWifiIfMissing(existing.values, ctx);
  const files = renderConfigFiles(ctx, existing, wifi, randomSecret);
  fs.mkdirSync(ctx.opts.out, { recursive: true });
  for (const [file, content, mode] of [...(secretsOnly ? [] : [[files.configPath, files.config]] as const),
    [files.secretsPath, files.secrets, 0o600], [files.gitignorePath, files.gitignore]] as const) {
    const result = writeFileAtomic(file, content, mode);
    print(`    ${result === 'unchanged' ? c.dim('·') : ok()} ${result} ${shown(file)}`);
  }
  if (files.secretsAdded.length)
    print(`    ${c.dim(`secrets added: ${files.secretsAdded.join(', ')} (values not shown; the file is mode 0600)`)}`);
}

async function planConfig(ctx: Ctx): Promise<string[]> {
  const existing = readSecretsFile(ctx.files.secrets);
  const files = renderConfigFiles(ctx, existing, { ssid: '***', password: '***' }, () => '***');
  const missing = SECRET_KEYS.filter((k) => !(k in existing.values));
  return [
    `write ${shown(files.configPath)} (${files.config.split('\n').length} lines: ${shown(ctx.recipePath)} + ` +
      `${shown(ctx.templatePath)})`,
    missing.length
      ? `${existing.found ? 'complete' : 'create'} ${shown(ctx.files.secrets)} (mode 0600): add ` +
        `${missing.map((k) => `${k}=***`).join(', ')}` +
        (missing.some((k) => k.startsWith('wifi_')) ? ' (Wi-Fi from FLASH_WIFI_SSID/FLASH_WIFI_PASSWORD or asked)' : '')
      : `keep ${shown(ctx.files.secrets)}: it already holds every secret`,
    `write ${shown(files.gitignorePath)}`,
  ];
}

/** The config depends on the recipe, the template and the --set values. */
function configInputs(ctx: Ctx): unknown {
  return [fs.readFileSync(ctx.recipePath, 'utf8'), ctx.template, ctx.opts.sets];
}

/** Renders the device config, the completed secrets.yaml and .gitignore. Pure: randomness comes in. */
export function renderConfigFiles(
  ctx: Ctx,
  existing: { text: string; values: Record<string, string> },
  wifi: { ssid: string; password: string } | null,
  random: (key: string) => string,
): ConfigFiles {
  const out = ctx.opts.out;
  // Named as the user would type it from here; outside the working dir, by absolute path.
  const fromCwd = path.relative(process.cwd(), ctx.recipePath);
  const recipeRef = (fromCwd.startsWith('..') || path.isAbsolute(fromCwd) ? path.resolve(ctx.recipePath) : fromCwd)
    .split(path.sep).join('/');
  const { text: secrets, added } = completeSecrets(existing.text, existing.values, wifi, random);
  return {
    configPath: ctx.files.config,
    config: renderDeviceConfig(ctx.substitutions, ctx.template, recipeRef, ctx.recipe.model),
    secretsPath: ctx.files.secrets,
    secrets,
    secretsAdded: added,
    gitignorePath: path.join(out, '.gitignore'),
    gitignore: 'secrets.yaml\n.esphome/\n.flash/\n',
  };
}

/**
 * The self-contained ESPHome config: a header naming the recipe, the substitutions block, then the
 * template as written (its own comments and `!secret` tags kept; ESPHome resolves `${...}` itself).
 * Values are double-quoted so quotes, `$`, `#`, `:`, unicode and YAML 1.1 words like `on` stay strings.
 */
export function renderDeviceConfig(substitutions: Record<string, string>, template: string, recipeRef: string,
  model: string): string {
  const header =
    `# Generated by flash.ts from ${recipeRef} (${model}).\n` +
    `# Edit the recipe and re-run \`npx tsx flash.ts <recipe> --only config\` rather than this file.\n\n`;
  const subs = lib.yaml.stringify({ substitutions }, QUOTED);
  return `${header}${subs}\n${templateBody(template)}`;
}

/** Values as flash.ts writes them: double-quoted (quotes, `$`, `#`, `on` stay strings), plain keys, no wrapping. */
const QUOTED = { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 } as const;

/** The template without its leading comment block (that text describes the template, not the device). */
function templateBody(template: string): string {
  const lines = template.split('\n');
  let i = 0;
  while (i < lines.length && (lines[i].startsWith('#') || lines[i].trim() === '')) i++;
  return lines.slice(i).join('\n');
}

/**
 * secrets.yaml completed with whatever is missing. Existing text and values are kept byte for
 * byte; new keys are appended. Returns the text and the keys added.
 */
export function completeSecrets(
  existingText: string,
  existing: Record<string, string>,
  wifi: { ssid: string; password: string } | null,
  random: (key: string) => string,
): { text: string; added: string[] } {
  const additions: Record<string, string> = {};
  for (const key of SECRET_KEYS) {
    if (key in existing) continue;
    if (key === 'wifi_ssid' || key === 'wifi_password') {
      if (!wifi) throw new Error(`internal: ${key} missing and no Wi-Fi answer`);
      additions[key] = key === 'wifi_ssid' ? wifi.ssid : wifi.password;
    } else additions[key] = random(key);
  }
  const added = Object.keys(additions);
  if (!added.length) return { text: existingText, added };
  let text = existingText ||
    '# ESPHome secrets for the devices in this folder. Written by flash.ts; keep it private (mode 0600).\n';
  if (!text.endsWith('\n')) text += '\n';
  text += lib.yaml.stringify(additions, QUOTED);
  return { text, added };
}

/** Crypto randomness for a new secret: ESPHome wants the API key as base64 of 32 bytes. */
export function randomSecret(key: string): string {
  if (key === 'api_encryption_key') return crypto.randomBytes(32).toString('base64');
  // AP passwords need 8+ characters; URL-safe letters and digits keep them easy to type on a phone.
  return crypto.randomBytes(18).toString('base64url').replace(/[-_]/g, '').slice(0, key === 'ap_password' ? 16 : 24);
}

/** secrets.yaml as text and values (registered for redaction); an unreadable one is bad input. */
function readSecretsFile(file: string): { found: boolean; text: string; values: Record<string, string>; doc?: Document;
  lines?: LineCounter } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { found: false, text: '', values: {} };
    throw e;
  }
  const lines = new (lib.yaml.LineCounter)();
  const doc = lib.yaml.parseDocument(text, { lineCounter: lines });
  if (doc.errors.length) {
    const err = doc.errors[0];
    throw new InputError([{ file: shown(file), line: err.linePos?.[0].line,
      message: `not valid YAML: ${firstLine(err.message)}`,
      hint: 'fix the line by hand: flash.ts keeps what secrets.yaml holds' }]);
  }
  const data = doc.toJS() ?? {};
  if (typeof data !== 'object' || Array.isArray(data))
    throw new InputError([{ file: shown(file), line: 1, message: 'expected "key: value" lines',
      hint: 'fix or move the file away and re-run' }]);
  const values = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, String(v)]));
  for (const key of REDACTED_KEYS) if (values[key]) registerSecret(values[key]);
  return { found: true, text, values, doc, lines };
}

/**
 * What ESPHome's wifi component would refuse in a network name or password (its own rules: an SSID of
 * at most 32 bytes, a WPA password of 8–63 characters or 64 hex digits). Pure.
 */
export function wifiProblem(key: 'wifi_ssid' | 'wifi_password', value: string): string | undefined {
  if (key === 'wifi_ssid') {
    if (!value) return 'the network name is empty';
    const bytes = Buffer.byteLength(value);
    if (bytes > 32) return `"${value}" is ${bytes} bytes: a Wi-Fi name has at most 32`;
    return undefined;
  }
  if (value.length < 8) return 'WPA password must be at least 8 characters long';
  if (value.length > 64 || (value.length === 64 && !/^[0-9a-fA-F]{64}$/.test(value)))
    return 'a WPA password has 8 to 63 characters (or exactly 64 hex digits)';
  return undefined;
}

/** The Wi-Fi values the config will use, checked before anything is written: from secrets.yaml or the environment. */
function checkWifiInputs(secretsFile: string): void {
  const secrets = readSecretsFile(secretsFile);
  const problems: Problem[] = [];
  for (const [key, envVar] of [['wifi_ssid', 'FLASH_WIFI_SSID'], ['wifi_password', 'FLASH_WIFI_PASSWORD']] as const) {
    const fromFile = key in secrets.values;
    const value = fromFile ? secrets.values[key] : process.env[envVar];
    const problem = value === undefined ? undefined : wifiProblem(key, value);
    if (!problem) continue;
    const node = secrets.doc?.contents && lib.yaml.isMap(secrets.doc.contents) ? secrets.doc.contents.items
      .find((p) => lib.yaml.isScalar(p.key) && p.key.value === key) : undefined;
    const offset = (node?.key as { range?: number[] } | undefined)?.range?.[0];
    const line = offset === undefined ? undefined : secrets.lines!.linePos(offset).line;
    problems.push(fromFile
      ? { file: shown(secretsFile), line, field: key, message: problem,
        hint: `correct ${key} in that file (ESPHome would refuse it when compiling)` }
      : { file: 'environment', field: envVar, message: problem,
        hint: `set ${envVar} to your network's real ${key === 'wifi_ssid' ? 'name' : 'password'}` });
  }
  if (problems.length) throw new InputError(problems);
}

/** Wi-Fi credentials for secrets.yaml when it lacks them: env vars, else a prompt (password masked). */
async function askWifiIfMissing(existing: Record<string, string>, run: Asking):
  Promise<{ ssid: string; password: string } | null> {
  if ('wifi_ssid' in existing && 'wifi_password' in existing) return null;
  const validate = (key: 'wifi_ssid' | 'wifi_password') => (s: string) => wifiProblem(key, s) ?? true;
  const unanswered = (envVar: string) => ({ what: `secrets.yaml has no ${envVar === 'FLASH_WIFI_SSID' ? 'wifi_ssid'
    : 'wifi_password'}, and nobody can be asked`, hint: `set ${envVar}=... in the environment, or run it in a ` +
    'terminal to be asked' });
  const ssid = existing.wifi_ssid ?? process.env.FLASH_WIFI_SSID ?? (await ask({ id: 'wifi_ssid', kind: 'input',
    message: 'Your Wi-Fi network name (SSID) for the plug', validate: validate('wifi_ssid'),
    unanswered: unanswered('FLASH_WIFI_SSID') }, run));
  // The name is shown as typed, not quoted: a name can hold quotes of its own.
  const password = existing.wifi_password ?? process.env.FLASH_WIFI_PASSWORD ?? (await ask({ id: 'wifi_password',
    kind: 'password', message: `Password of the Wi-Fi network ${quoted(ssid)}`, validate: validate('wifi_password'),
    unanswered: unanswered('FLASH_WIFI_PASSWORD') }, run));
  registerSecret(password);
  return { ssid, password };
}

// ─── Step: compile ─────────────────────────────

/** A compile running in the background: it resolves to the checked UF2's path. */
export interface CompileJob { done: Promise<string>; started: number; log: string; finished?: number; stop: () => void }

/** Starts `esphome compile` in the background; the upload step waits for it. With --only compile, waits here. */
async function stepCompile(ctx: Ctx): Promise<void> {
  if (ctx.compile)
    return print(`    already compiling in the background (started ${seconds(Date.now() - ctx.compile.started)} ago)`);
  ctx.compile = await startCompile(ctx);
  if (stepsToRun(ctx.opts, fromPlug(ctx.recipe)).at(-1)?.name !== 'compile')
    return print(`    started in the background (log: ${shown(ctx.compile.log)}); the next steps go on meanwhile`);
  await awaitCompile(ctx);
}

async function planCompile(ctx: Ctx): Promise<string[]> {
  return [`$ ${shq(...esphomeArgv(ctx, esphomeKind(ctx), 'compile'))}   (in the background; log in ` +
    `${shown(logDir(ctx.opts.out))})`,
  `check ${shown(ctx.files.uf2)} is a UF2 with family ID ` +
    `0x${MCUS[ctx.recipe.mcu].familyId.toString(16).toUpperCase()} ` +
    `(${MCUS[ctx.recipe.mcu].chip})`];
}

/** Compile, upload and verify depend on the rendered config and secrets.yaml (the firmware carries both). */
function firmwareInputs(ctx: Ctx): unknown {
  return [renderDeviceConfig(ctx.substitutions, ctx.template, '', ctx.recipe.model),
    readSecretsFile(ctx.files.secrets).text];
}

async function startCompile(ctx: Ctx, quiet = false): Promise<CompileJob> {
  if (!fs.existsSync(ctx.files.config))
    throw new Failure(`there is no ${shown(ctx.files.config)} to compile yet`,
      `write it first: ${rerun(ctx.opts, '--only config')} (then run this again)`);
  const esphome = await findEsphome(ctx);
  if (!esphome)
    throw new Failure(`no esphome command, and Docker is not answering for the ${ESPHOME_IMAGE} image`,
      `pipx install esphome (or start Docker), then run it again: ${rerun(ctx.opts, '')}`);
  const argv = esphomeArgv(ctx, esphome.kind, 'compile');
  const log = logFile(ctx.opts.out, 'compile');
  print(c.dim(quiet ? `    (compiling ${ctx.deviceName} in the background for the next plug)`
    : `    $ ${shq(...argv)}   (${esphome.describe})`));
  const { spawn } = await import('node:child_process');
  const out = fs.openSync(log, 'w', 0o600);
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  // Ctrl+C's SIGINT stops ESPHome (and `docker run --init`) cleanly; a compile still there after 5 s is killed.
  const stop = keepChild(ctx.scope, child, [[() => child.kill('SIGINT'), 5000]]);
  const job: CompileJob = { started: Date.now(), log, done: Promise.resolve(''), stop };
  job.done = exitOf(child).then((code) => {
    job.finished = Date.now();
    if (code !== 0)
      throw new Failure(
        `esphome compile failed (exit ${code}):\n${indent(compileErrors(fs.readFileSync(log, 'utf8')), 6)}`,
        `full log: ${shown(log)}\n  fix the recipe or template, then run it again (what changed is redone): ` +
        rerun(ctx.opts, ''));
    const uf2 = checkedFirmware(ctx.files.uf2, ctx.recipe.mcu,
      `check the board in ${shown(ctx.recipePath)} matches mcu ${ctx.recipe.mcu}, then run it again: ` +
      rerun(ctx.opts, ''));
    // Done as soon as it is built: a run stopped before the upload does not build it again.
    recordStep(ctx, 'compile');
    ctx.afterCompile?.();
    return uf2.file;
  });
  job.done.catch(() => {}); // reported when awaited
  return job;
}

/** How this run runs esphome, for commands shown: the one found, else the one asked for, else the CLI. */
function esphomeKind(ctx: Pick<Ctx, 'opts' | 'esphome'>): 'local' | 'docker' {
  return ctx.esphome?.kind ?? ctx.opts.esphome ?? 'local';
}

/**
 * An esphome command on this plug's config: the local CLI, or the Docker image with the config dir
 * mounted at /config (host network, so `upload` reaches the plug).
 */
export function esphomeArgv(ctx: Pick<Ctx, 'opts' | 'deviceName'>, kind: 'local' | 'docker',
  command: 'compile' | 'upload' | 'logs', ...extra: string[]): string[] {
  const file = `${ctx.deviceName}.yaml`;
  return kind === 'local'
    ? ['esphome', command, path.join(ctx.opts.out, file), ...extra]
    // --init: without it the container's PID 1 ignores the SIGINT that stops a compile.
    : ['docker', 'run', '--rm', '--init', ...(command === 'compile' ? [] : ['--network', 'host']),
      '-v', `${path.resolve(ctx.opts.out)}:/config`, ESPHOME_IMAGE, command, file, ...extra];
}

/** Waits for the background compile (starting one if this run has none and no fresh UF2 exists). */
async function awaitCompile(ctx: Ctx): Promise<string> {
  if (!ctx.compile) {
    // A UF2 built after the config and secrets.yaml it carries (a Wi-Fi corrected since makes it stale).
    const { uf2, config, secrets } = ctx.files;
    const mtime = (f: string) => (fs.existsSync(f) ? fs.statSync(f).mtimeMs : Infinity);
    if (fs.existsSync(uf2) && mtime(uf2) >= Math.max(mtime(config), mtime(secrets)))
      return checkedFirmware(uf2, ctx.recipe.mcu, recompile(ctx.opts)).file;
    ctx.compile = await startCompile(ctx);
  }
  const job = ctx.compile;
  // The first LibreTiny build downloads its toolchain (minutes); a compile still going after this is stuck.
  const limit = ms('FLASH_COMPILE_TIMEOUT_MS');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'),
    Math.max(0, job.started + limit - Date.now()))));
  const finished = untilStopped(Promise.race([job.done.then(() => 'done', () => 'done'), timedOut]), ctx.scope.signal);
  const stopTail = ctx.opts.verbose && !job.finished
    ? tailFile(job.log, (line) => print(c.dim(`      ${line}`))) : undefined;
  const waited = job.finished ? 'done' : stopTail ? await finished
    : await withSpinner(`waiting for esphome compile (log: ${shown(job.log)})`, finished);
  stopTail?.();
  clearTimeout(timer);
  if (waited === 'timeout') {
    job.stop();
    throw new Failure(`esphome compile was still running after ${seconds(limit)}, so it was stopped`,
      `look at the end of ${shown(job.log)} (a download that hangs? no disk space?), then run it again: ` +
      rerun(ctx.opts, ''));
  }
  const uf2 = await job.done; // recorded as done when it was built
  print(`    ${ok()} compiled in ${seconds((job.finished ?? Date.now()) - job.started)}: ${shown(uf2)}`);
  return uf2;
}

/** The lines of an ESPHome log that say what went wrong: errors and the lines around them, else the tail. Pure. */
export function compileErrors(log: string): string {
  const lines = log.split('\n').filter((l) => l.trim());
  const first = lines.findIndex((l) => /\bERROR\b|error:|Failed config|\[Error\]|\*\*\*/.test(l));
  return (first >= 0 ? lines.slice(first, first + 15) : lines.slice(-15)).join('\n');
}

/** Calls `line` for each line appended to `file` from now on (--verbose shows a compile as it runs). */
function tailFile(file: string, line: (text: string) => void): () => void {
  let pos = fs.existsSync(file) ? fs.statSync(file).size : 0;
  let rest = '';
  const poll = setInterval(() => {
    const size = fs.statSync(file).size;
    if (size <= pos) return;
    const fd = fs.openSync(file, 'r');
    const buf = Buffer.alloc(size - pos);
    fs.readSync(fd, buf, 0, buf.length, pos);
    fs.closeSync(fd);
    pos = size;
    const lines = (rest + buf.toString('utf8')).split('\n');
    rest = lines.pop() ?? '';
    for (const l of lines) line(l);
  }, 200);
  return () => clearInterval(poll);
}

// ─── Step: cloudcutter ─────────────────────────

/**
 * The questions cloudcutter's scripts can ask in a flash run (tuya-cloudcutter's common.sh, safety_checks.sh,
 * and sudo). Each is explained when it comes and answered on purpose: nobody is left waiting on a prompt that
 * scrolled by inside cloudcutter's output.
 */
export const CLOUDCUTTER_QUESTIONS = [
  { id: 'sudo', match: /\[sudo\] password for [^:\n]*: *$/,
    explain: 'sudo asks for your password (cloudcutter needs root for its access point and DNS)' },
  { id: 'ap_support', match: /Press any key to continue, or CTRL\+C to exit\s*$/,
    explain: 'cloudcutter warns that its Wi-Fi adapter cannot host an access point' },
  { id: 'port', match: /Do you wish to terminate (.*)\? \[y\/N\] *$/,
    explain: 'cloudcutter found a program on a port it needs and asks whether to stop it' },
  { id: 'blacklist', match: /Do you wish to remove this file\? \[y\/N\] *$/,
    explain: 'cloudcutter found /etc/modprobe.d/blacklist-rtl8192cu.conf (known to crash hostapd) and asks to ' +
      'delete it' },
  { id: 'apparmor', match: /Do you wish to stop the app armour service\? \[y\/N\] *$/,
    explain: 'cloudcutter asks to stop AppArmor until the next reboot (it has been known to block hostapd)' },
] as const;

/** The moments of a cloudcutter flash run that flash.ts acts on, by the lines cloudcutter prints. */
const CLOUDCUTTER_MOMENTS = {
  apMode: /^Place your device in AP \(slow blink\) mode/,
  apModeAgain: /^Power cycle and place your device in AP \(slow blink\) mode again/,
  scanning: /^Scanning for open Tuya SmartLife AP/,
  found: /^Found access point name: "([^"]*)"/,
  sent: /^\[Firmware Upload\] \/files\/\S+ send complete/,
  mac: /^Device MAC address:\s*([0-9A-Fa-f:]{12,17})/,
};

async function stepCloudcutter(ctx: Ctx): Promise<void> {
  const { recipe, opts } = ctx;
  if (ctx.interrupted === 'cloudcutter' && (await alreadyOnKickstart(ctx))) return;
  const kickstart = resolveKickstart(recipe, opts.cloudcutter);
  print(`    firmware: ${kickstart.file} (${MCUS[recipe.mcu].chip}, checked)`);
  ctx.facts.kickstartFile = kickstart.file;
  ctx.facts.kickstartSha256 = sha256(fs.readFileSync(kickstart.path));
  const resolved = await resolveProfile(ctx);
  const profileDir = writeDeviceProfile(opts.cloudcutter, resolved);
  print(`    profile: ${resolved.label} (${resolved.profileSlug}) for device ${resolved.deviceSlug}; written to ` +
    shown(profileDir));
  const argv = cloudcutterArgv(resolved.deviceSlug, kickstart.file, await apAdapter(ctx));
  print(`    cloudcutter first builds its Docker image and checks this machine (a minute or more the first time);`);
  print(`    when it looks for the plug, flash.ts tells you to put it into AP mode. Keep the plug near this machine.`);
  for (;;) {
    const log = logFile(opts.out, 'cloudcutter');
    print(c.dim(`    $ ${shq(...argv)}   (in ${shown(opts.cloudcutter)}; log: ${shown(log)})`));
    const run = await runCloudcutter(ctx, argv, log);
    if (!run.failure) {
      const mac = formatMac(run.output.split('\n').map((l) => CLOUDCUTTER_MOMENTS.mac.exec(l)?.[1]).find(Boolean));
      // cloudcutter's MAC comes from Tuya's data: a hint for finding the plug, not proof of which one it is.
      if (mac) ctx.facts.tuyaMac = mac;
      print(`    ${ok()} Kickstart flashed${mac ? ` (Tuya says MAC ${mac})` : ''}${run.seen ? `: ${run.seen}` : ''}. ` +
        `It now opens a Wi-Fi network named ${MCUS[recipe.mcu].kickstartAp}.`);
      return;
    }
    const d = run.failure;
    print(`\n    ${c.red('✗')} ${d.what}\n    ${c.yellow('what to do:')} ${d.fix}`);
    print(`    ${c.dim(`full log: ${shown(log)}`)}`);
    if (!(await confirm('cloudcutter_retry', 'Retry the cloudcutter step now?', ctx, false))) {
      // cloudcutter said it failed, so the plug is not on Kickstart: the next run need not go looking for it there.
      delete ctx.journal.started;
      writeJournal(ctx);
      throw new Failure(d.what,
        `${d.fix}\n  then retry from this step: ${rerun(opts, '--from cloudcutter')}`);
    }
  }
}

async function planCloudcutter(ctx: Ctx): Promise<string[]> {
  const api = setting('FLASH_CLOUDCUTTER_API');
  const cc = ctx.recipe.cloudcutter;
  return [
    cc.device ? `GET ${api}/devices/${cc.device}.json` : `find profile "${cc.profile}" in ${api}/profiles.json`,
    `GET ${api}/profiles/<profile slug>.json (check firmware.chip is ${MCUS[ctx.recipe.mcu].chip})` +
      (cc.device ? '' : ', then devices/<its first device>.json'),
    `write ${shown(path.join(ctx.opts.cloudcutter, 'device-profiles'))}/<device slug>/device.json and profile.json`,
    `$ ${shq(...cloudcutterArgv('<device slug>', kickstartForPlan(ctx), ctx.opts.wifiIface ?? '<the AP adapter>'))}` +
      `   (in a pseudo-terminal, in ${shown(ctx.opts.cloudcutter)}; log in ${shown(logDir(ctx.opts.out))})`,
    `when cloudcutter looks for the plug (twice): ask you to put it in AP mode: ${ctx.recipe.ap_mode}`,
    'answer its questions: a port held by loopback-only DNS → S (skip); sudo, AppArmor, a blacklist file → ask you',
  ];
}

/** cloudcutter depends on the recipe's chip, profile and Kickstart file. */
function cloudcutterInputs(ctx: Ctx): unknown {
  return [ctx.recipe.mcu, ctx.recipe.cloudcutter, ctx.recipe.kickstart];
}

/** The exact cloudcutter command: `-p` device slug, `-f` file name in custom-firmware/, `-w` adapter; never `-r`. */
export function cloudcutterArgv(deviceSlug: string, firmwareFile: string, wifiIface: string): string[] {
  const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
  return [...sudo, './tuya-cloudcutter.sh', '-p', deviceSlug, '-f', firmwareFile, '-w', wifiIface];
}

/** What went wrong in a failed cloudcutter run, from its output, and what the user should do. Pure. */
export function diagnoseCloudcutter(output: string, code: number, mcu: Mcu, otherRecipes: string[]):
  { what: string; fix: string } {
  const tryOther = otherRecipes.length
    ? `this looks like the other MCU (${MCUS[MCUS[mcu].other].chip}): try recipe ` +
      otherRecipes.map(shown).join(' or ')
    : `the plug may have the other chip than ${MCUS[mcu].chip}: write a recipe with the other mcu`;
  for (const d of CLOUDCUTTER_DIAGNOSES)
    if (d.match.test(output)) return { what: d.what, fix: d.fix.replace('{tryOther}', tryOther) };
  return { what: `cloudcutter stopped with exit code ${code}`,
    fix: 'read the end of the log; fix what it says and retry' };
}

/** The Kickstart file name when the checkout is there to look in; a description of it otherwise. */
function kickstartForPlan(ctx: Ctx): string {
  try {
    return resolveKickstart(ctx.recipe, ctx.opts.cloudcutter).file;
  } catch {
    return ctx.recipe.kickstart === 'auto' ? `<newest ESPHome-Kickstart-*_${ctx.recipe.mcu}_app.ota.ug.bin>`
      : ctx.recipe.kickstart;
  }
}

/** Writes `<cloudcutter>/device-profiles/<device slug>/device.json` and `profile.json` for offline `-p`. */
export function writeDeviceProfile(cloudcutterDir: string, r: ResolvedProfile): string {
  const dir = path.join(cloudcutterDir, 'device-profiles', r.deviceSlug);
  fs.mkdirSync(dir, { recursive: true });
  writeFileAtomic(path.join(dir, 'device.json'), JSON.stringify(r.device, null, 2) + '\n');
  writeFileAtomic(path.join(dir, 'profile.json'), JSON.stringify(r.profile, null, 2) + '\n');
  return dir;
}

/**
 * After a run stopped during cloudcutter: did the flash happen anyway? Its log says whether the firmware was
 * sent; then the plug's Kickstart AP comes within half a minute, and a second cloudcutter run would only wait for
 * a Tuya AP that is gone. A killed cloudcutter also leaves its adapter unmanaged: it is handed back first.
 */
async function alreadyOnKickstart(ctx: Ctx): Promise<boolean> {
  const ap = MCUS[ctx.recipe.mcu].kickstartAp;
  const iface = await apAdapter(ctx);
  print(`    the last run stopped during this step: checking whether the plug already runs Kickstart …`);
  await reclaimAdapter(ctx, iface);
  // The log is cloudcutter's output as it came (terminal codes and all): only its words are sure.
  const sent = /send complete/.test(lastLog(ctx.opts.out, 'cloudcutter'));
  const apUp = sent ? await waitForAp(ctx, iface, ap, ms('FLASH_KICKSTART_AP_TIMEOUT_MS'),
    `the last run sent the firmware: waiting for ${ap} (rescanning on ${iface})`) : await apOnAir(iface, ap,
    ctx.scope.signal);
  // Only the plug with a MAC this run knows: any other Kickstart plug on the LAN could be someone else's.
  if (apUp || (await kickstartOnLan(ctx, 4000, undefined, 'exact'))) {
    print(`    ${ok()} it does (${apUp ? `its network ${ap} is on the air` : `found at ${ctx.facts.kickstartIp}`}): ` +
      'cloudcutter is not needed again');
    return true;
  }
  print(`    no sign of Kickstart: running cloudcutter again`);
  return false;
}

/** Gives an adapter a killed cloudcutter left unmanaged back to NetworkManager, as cloudcutter's exit trap does. */
async function reclaimAdapter(ctx: Ctx, iface: string): Promise<void> {
  if ((await wifiAdapters(ctx.scope.signal)).find((a) => a.dev === iface)?.state !== 'unmanaged') return;
  print(`    ${warn()} ${iface} is still unmanaged (the stopped cloudcutter could not hand it back): handing it back`);
  await sh(['nmcli', 'device', 'set', iface, 'managed', 'yes'], { signal: ctx.scope.signal });
}

interface CloudcutterRun { output: string; failure?: { what: string; fix: string }; seen?: string }

/**
 * Runs cloudcutter in a pseudo-terminal of its own (`script`: its `docker run -ti` refuses to run without one,
 * whether or not flash.ts has a terminal) and watches what it prints: its questions are answered, its calls for
 * AP mode become the recipe's instructions, endless scanning gets a hint, and a run that hangs after the
 * firmware was sent (upstream #816) is stopped once the plug is seen on Kickstart.
 */
async function runCloudcutter(ctx: Ctx, argv: string[], logPath: string): Promise<CloudcutterRun> {
  const { spawn } = await import('node:child_process');
  const { quote } = await import('zx');
  const { opts, recipe, scope } = ctx;
  // A sane terminal size: some tools print nothing useful on a 0x0 pseudo-terminal.
  const command = `stty cols 120 rows 40 2>/dev/null; exec ${argv.map((a) => quote(a)).join(' ')}`;
  // `script` runs cloudcutter as the session leader of its pseudo-terminal: when flash.ts (and with it `script`) goes,
  // however abruptly, the terminal hangs up and cloudcutter gets SIGHUP, which its exit trap handles.
  const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd: opts.cloudcutter,
    stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: process.env.TERM || 'xterm' } });
  const exited = exitOf(child);
  const log = fs.createWriteStream(logPath, { mode: 0o600 });
  const type = (keys: string) => void (child.stdin!.writable && child.stdin!.write(keys));
  // Ctrl+C in flash.ts's terminal reaches `script` too, which then ends: what is typed after that goes nowhere (EPIPE).
  child.stdin!.on('error', () => {});
  // Stopped as Ctrl+C in its terminal stops it (its trap hands the adapter back), then by hanging up its terminal.
  const kill = keepChild(scope, child, [[() => type('\x03'), 10_000], [() => child.kill('SIGTERM'), 3000]]);
  let transcript = '';
  let partial = '';
  let lastOutput = Date.now();
  let scanningSince: number | undefined;
  let hinted = false;
  let outcome: Omit<CloudcutterRun, 'output'> | undefined;
  let trouble: unknown; // what stopped an answer (Ctrl+C in a question, nobody to ask): the run's, after the exit
  let busy = Promise.resolve(); // questions are answered one at a time, in order
  let watching: Promise<void> | undefined;
  let idle: NodeJS.Timeout | undefined;

  /** Stops cloudcutter (the same way as when the run stops), noting why. */
  const stop = (why: Omit<CloudcutterRun, 'output'>) => {
    outcome ??= why;
    return kill();
  };

  const onLine = (line: string) => {
    print(c.dim(`    │ ${line}`));
    if (CLOUDCUTTER_MOMENTS.apMode.test(line)) {
      print(`\n    ${c.bold('Put the plug into AP mode now:')} ${recipe.ap_mode}`);
      print(`    (cloudcutter looks for it until it appears; it takes over the plug when it does)\n`);
    } else if (CLOUDCUTTER_MOMENTS.apModeAgain.test(line)) {
      print(`\n    ${c.bold('Power-cycle the plug, then put the plug into AP mode again:')} ${recipe.ap_mode}\n`);
    } else if (CLOUDCUTTER_MOMENTS.scanning.test(line)) {
      scanningSince = Date.now();
      hinted = false;
    } else if (CLOUDCUTTER_MOMENTS.found.test(line)) {
      scanningSince = undefined;
    } else if (CLOUDCUTTER_MOMENTS.sent.test(line)) {
      print(`    ${ok()} the plug has the firmware; it reboots into Kickstart (15–30 s)`);
      watching ??= watchForKickstart().catch((e) => void (trouble ??= e));
    }
  };

  const answer = (work: () => Promise<void>) => {
    busy = busy.then(work).catch((e) => {
      trouble ??= e;
      void stop(e instanceof Failure ? { failure: { what: e.message, fix: e.hint ?? 'retry' } } : {});
    });
  };

  /**
   * Text after the last line break: one of cloudcutter's questions (they end without one). A question flash.ts knows
   * is answered on purpose; any other is shown once cloudcutter waits on it: a person answers it, and nobody (--yes)
   * means the run stops, quoting it, rather than waiting forever.
   */
  const onPartial = () => {
    clearTimeout(idle);
    const text = partial;
    const known = CLOUDCUTTER_QUESTIONS.find((k) => k.match.test(text));
    if (known) {
      partial = '';
      return answer(() => answerCloudcutter(ctx, known.id, text, transcript, { type, stop }));
    }
    if (!text.trim() || /^[.\s]*$/.test(text)) return; // the scanning dots
    idle = setTimeout(() => {
      if (partial !== text) return;
      partial = '';
      print(c.dim(`    │ ${text.trim()}`));
      answer(() => answerUnknown(ctx, text.trim(), type));
    }, unattended(ctx) ? ms('FLASH_CLOUDCUTTER_QUESTION_MS') : 400);
  };

  /** After the firmware was sent: the Kickstart AP, seen by another adapter, or by ours once cloudcutter is stopped. */
  async function watchForKickstart(): Promise<void> {
    const ap = MCUS[recipe.mcu].kickstartAp;
    const ours = await apAdapter(ctx);
    const others = (await wifiAdapters(scope.signal)).map((a) => a.dev).filter((a) => a !== ours);
    while (!outcome && child.exitCode === null) {
      // (Not mDNS: a freshly flashed Kickstart has no Wi-Fi to join yet; its own AP is how it shows up.)
      for (const other of others)
        if (await apOnAir(other, ap, scope.signal))
          return void stop({ seen: `its network ${ap} is on the air (seen by ${other})` });
      if (Date.now() - lastOutput > ms('FLASH_CLOUDCUTTER_STALL_MS')) {
        // One adapter: it hosts cloudcutter's AP and cannot scan until cloudcutter lets it go.
        print(`    ${warn()} cloudcutter has said nothing for ${seconds(Date.now() - lastOutput)} since the ` +
          'firmware was sent (it can wait forever for a progress report): stopping it to look for the plug');
        await stop({});
        const found = await waitForAp(ctx, ours, ap, ms('FLASH_KICKSTART_AP_TIMEOUT_MS'),
          `looking for ${ap} on ${ours}`);
        outcome = found ? { seen: `its network ${ap} is on the air` } : { failure: {
          what: `cloudcutter stalled after sending the firmware, and the plug's ${ap} network did not appear`,
          fix: `power-cycle the plug and watch for ${ap} from a phone; if it is there, go on with ` +
            `${rerun(opts, '--from kickstart')}; if not, retry this step` } };
        return;
      }
      await Promise.race([sleep(2000, scope.signal), exited]); // cloudcutter ending ends the watch at once
    }
  }

  const clock = setInterval(() => {
    if (scanningSince === undefined) return;
    const scanning = Date.now() - scanningSince;
    if (!hinted && scanning > ms('FLASH_AP_HINT_MS')) {
      hinted = true;
      print(`    ${warn()} cloudcutter has been looking for the plug for ${seconds(scanning)}: it is probably not ` +
        `in AP mode (a slow blink). ${recipe.ap_mode}`);
    }
    if (scanning > ms('FLASH_AP_WAIT_MS'))
      void stop({ failure: { what: `the plug did not show up in AP mode within ${seconds(scanning)}`,
        fix: `put it in AP mode (${recipe.ap_mode}), keep it near this machine, and retry` } });
  }, 1000);

  const read = (chunk: Buffer) => {
    lastOutput = Date.now();
    log.write(redact(chunk.toString('utf8')));
    // The pseudo-terminal ends lines with CR LF, and docker's lines carry a CR of their own.
    const text = chunk.toString('utf8').replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r+\n/g, '\n')
      .replace(/\r/g, '');
    transcript += text;
    partial += text;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl).replace(/^\.+/, '');
      partial = partial.slice(nl + 1);
      if (line.trim()) onLine(line);
    }
    if (partial) onPartial();
  };
  child.stdout!.on('data', read);
  child.stderr!.on('data', read);
  try {
    const code = await exited;
    clearTimeout(idle);
    await busy;
    await watching;
    // Stopped (Ctrl+C, SIGTERM, SIGHUP, or in one of its questions): no diagnosis, no retry question.
    scope.signal.throwIfAborted();
    // A Failure is the outcome already; anything else that went wrong answering or watching is the run's.
    if (trouble && !(trouble instanceof Failure)) throw trouble;
    const output = redact(transcript);
    if (outcome) return { output, ...outcome };
    if (code === 0) return { output };
    return { output, failure: diagnoseCloudcutter(output, code, recipe.mcu,
      siblingRecipes(ctx, (r) => r.mcu === MCUS[recipe.mcu].other)) };
  } finally {
    clearInterval(clock);
    clearTimeout(idle);
    await new Promise((r) => log.end(r));
  }
}

/**
 * Answers one of cloudcutter's questions on purpose: what can be decided is decided (and said), what is the
 * user's to decide is asked (through flash.ts's own prompts), and when nobody can be asked the careful answer is
 * given (or the step stops, saying why).
 */
async function answerCloudcutter(ctx: Ctx, id: (typeof CLOUDCUTTER_QUESTIONS)[number]['id'], text: string,
  transcript: string,
  o: { type: (keys: string) => void; stop: (why: Omit<CloudcutterRun, 'output'>) => Promise<void> }):
  Promise<void> {
  const q = CLOUDCUTTER_QUESTIONS.find((k) => k.id === id)!;
  print(`    ${warn()} ${q.explain}`);
  if (id === 'sudo') {
    const password = await ask({ id: 'sudo_password', kind: 'password', message: 'Your password for sudo',
      validate: () => true, unanswered: { what: 'sudo asked for a password and nobody can type it here',
        hint: 'run `sudo -v` first (sudo then remembers it for a while), or run without --yes' } }, ctx);
    registerSecret(password);
    return o.type(`${password}\r`);
  }
  if (id === 'ap_support') {
    // Going on would leave hostapd failing silently and cloudcutter waiting forever.
    const adapter = /WARNING: Selected wifi AP support: .*$/m.exec(transcript)?.[0] ?? '';
    return o.stop({ failure: {
      what: `the Wi-Fi adapter cloudcutter got cannot host an access point (${adapter.trim()})`,
      fix: 'pass --wifi-iface with an adapter whose `nmcli -f wifi-properties device show IFACE` says AP: yes' } });
  }
  if (id === 'port') {
    const held = [...transcript.matchAll(/Checking (UDP|TCP) port (\d+)\.\.\. Occupied by (.*?) with PID (\d*)\./g)]
      .at(-1);
    const [proto, port] = [held?.[1].toLowerCase() ?? '', Number(held?.[2])];
    // `ps` cannot always name the program ("Do you wish to terminate ?"): then ss may.
    const listeners = ((await listeningPorts(ctx.scope.signal)) ?? []).filter((b) => b.port === port &&
      b.proto === proto);
    const name = held?.[3].trim() || listeners[0]?.process || 'a program ps cannot name';
    if (listeners.length && listeners.every(harmlessListener)) {
      print(`      ${name} answers DNS for this machine only (${listeners.flatMap((b) => b.addresses).join(', ')}); ` +
        "cloudcutter's DNS listens on its own access point: answering S (skip), so this machine keeps its DNS");
      return o.type('S');
    }
    const leave = 'leave it and stop here (N)';
    const choice = await ask({ id: 'cloudcutter_port', kind: 'select',
      message: `${name} holds port ${port}/${proto}. What should cloudcutter do?`,
      choices: [leave, `stop ${name} (y)`, 'skip the check (S)'], unattended: leave }, ctx);
    if (choice === leave) {
      o.type('N');
      return o.stop({ failure: { what: `${name} holds port ${port}/${proto}, which cloudcutter needs`,
        fix: `stop ${name} while flashing (flash.ts never stops it for you), then retry` } });
    }
    return o.type(choice.endsWith('(y)') ? 'y' : 'S');
  }
  // The blacklist file and AppArmor are this machine's settings: the user decides; nobody asked keeps them as they are.
  const question = id === 'apparmor' ? 'Let cloudcutter stop AppArmor until the next reboot?'
    : 'Let cloudcutter delete blacklist-rtl8192cu.conf?';
  const yes = await confirm(`cloudcutter_${id}`, question, ctx, false);
  if (unattended(ctx)) print('      kept: --yes changes no settings of this machine; if the plug never reaches ' +
    'cloudcutter\'s access point, retry without --yes and answer y');
  o.type(yes ? 'y' : 'N');
}

/**
 * A question of cloudcutter's that flash.ts does not know (a newer cloudcutter, an unusual machine): a person reads it
 * and answers, and the answer is typed into cloudcutter's terminal (one key for a [y/N] question, a line otherwise).
 * With nobody to ask, the run stops here, quoting it.
 */
async function answerUnknown(ctx: Ctx, text: string, type: (keys: string) => void): Promise<void> {
  // One key for `read -n 1` (a y/N question, or "press any key"): an Enter after it would answer the next question.
  const oneKey = /\[[yYnN]\/[yYnN]\]|\(y\/n\)|press any key/i.test(text);
  const answer = await ask({ id: 'cloudcutter_question', kind: 'input', message: `cloudcutter asks: ${text} ` +
    `(your answer is typed into cloudcutter${oneKey ? ': one key' : ''})`, validate: () => true,
  unanswered: { what: `cloudcutter asked a question flash.ts does not know, and nobody can answer it: "${text}"`,
    hint: 'run it without --yes (in a terminal) to answer it yourself; its log has what came before' } }, ctx);
  type(oneKey ? answer.trim().slice(0, 1) || '\r' : `${answer}\r`);
}

// ─── Step: kickstart ───────────────────────────

async function stepKickstart(ctx: Ctx): Promise<void> {
  const { opts, recipe } = ctx;
  const ap = MCUS[recipe.mcu].kickstartAp;
  if (ctx.interrupted === 'kickstart' && !opts.deviceIp && (await kickstartOnLan(ctx, 4000, undefined, 'exact'))) {
    print(`    ${ok()} the last run already gave the plug your Wi-Fi: found it at ${ctx.facts.kickstartIp}`);
    if (opts.backupFlash) await backupFlash(ctx);
    return checkPlugWiring(ctx);
  }
  // A recipe whose pins come from the plug has no config yet (it follows this step): its secrets are written now.
  if (fromPlug(ctx.recipe)) await stepConfig(ctx, true);
  const secrets = readSecretsFile(ctx.files.secrets).values;
  if (!secrets.wifi_ssid || !secrets.wifi_password)
    throw new Failure(`no wifi_ssid / wifi_password in ${shown(ctx.files.secrets)}`,
      `run the config step first: ${rerun(opts, '--only config')}`);
  const wifi = { ssid: secrets.wifi_ssid, password: secrets.wifi_password };

  const sent = !opts.manualWifi && (await provisionOverAp(ctx, ap, wifi));
  if (sent) Object.assign(wifi, sent); // the network the plug was given, if the user chose another
  else await provisionByHand(ctx, ap, wifi.ssid);

  if (opts.deviceIp) {
    ctx.facts.kickstartIp = parseDeviceAddress(opts.deviceIp)!.host;
    print(`    using --device-ip ${opts.deviceIp}`);
  } else {
    const wait = ms('FLASH_DISCOVERY_TIMEOUT_MS');
    const label = `waiting for ${ap} to join "${wifi.ssid}" and show up on your network (mDNS)`;
    const found = await kickstartOnLan(ctx, wait, label, 'choose');
    const advice = `check: this machine is on the same network as "${wifi.ssid}" (not a guest network, no client ` +
      `isolation); the plug's LED (still blinking = it could not join: wrong password, or a 5 GHz-only network)`;
    if (found) print(`    ${ok()} found ${found.name} at ${ctx.facts.kickstartIp} ` +
      `(MAC ${formatMac(found.txt.mac) ?? '?'}, Kickstart ${found.txt.project_version ?? '?'})`);
    else {
      print(`    ${warn()} the plug did not show up on mDNS within ${seconds(wait)}; ${advice}.`);
      await askKickstart(ctx, { what: `the plug did not show up on your network within ${seconds(wait)}`,
        hint: 'if your router lists the plug (mDNS may not cross your network), use its address: ' +
          rerun(opts, '--from kickstart --device-ip IP') });
      print(`    ${ok()} Kickstart answers at ${ctx.facts.kickstartIp}`);
    }
  }
  if (opts.backupFlash) await backupFlash(ctx);
  await checkPlugWiring(ctx);
}

async function planKickstart(ctx: Ctx): Promise<string[]> {
  const ap = MCUS[ctx.recipe.mcu].kickstartAp;
  const portal = setting('FLASH_KICKSTART_PORTAL');
  const iface = ctx.opts.wifiIface ?? '<the AP adapter>';
  const overAp = ctx.opts.manualWifi ? [`you join ${ap} and give the plug your Wi-Fi at ${portal} (--manual-wifi)`] : [
    `$ nmcli -t -f SSID device wifi list --rescan yes ifname ${iface}   (until ${ap} is on the air: up to ` +
      `${seconds(ms('FLASH_KICKSTART_AP_TIMEOUT_MS'))})`,
    `$ nmcli --wait 60 device wifi connect ${ap} ifname ${iface}`,
    `GET ${portal}/config.json`,
    `GET ${portal}/wifisave?ssid=***&psk=***`,
    `$ nmcli connection delete id ${ap}`,
  ];
  return [
    ...overAp,
    ctx.opts.deviceIp ? `use --device-ip ${ctx.opts.deviceIp}`
      : `mDNS: browse _esphomelib._tcp.local for project_name=lt.kickstart, board=${MCUS[ctx.recipe.mcu].board}`,
    ...(ctx.opts.backupFlash ? ['GET http://<kickstart ip>/hub/flash_read (2 MiB, in 32 KiB parts)'] : []),
    `GET http://<kickstart ip>/hub/flash_read?offset=${TUYA_STORAGE_WINDOW.offset}&length=` +
      `${TUYA_STORAGE_WINDOW.length} (in parts): Tuya's storage, the plug's own wiring; ` +
      (fromPlug(ctx.recipe) ? 'its pins and template are written into the recipe'
        : "compared with the recipe's pins: a difference stops the run before anything is sent to the plug"),
  ];
}

/** The plug's Kickstart network depends on the chip; what it is given, on the Wi-Fi secrets. */
function kickstartInputs(ctx: Ctx): unknown {
  const secrets = readSecretsFile(ctx.files.secrets).values;
  return [ctx.recipe.mcu, secrets.wifi_ssid, secrets.wifi_password];
}

/**
 * This plug running Kickstart on the LAN (its chip's generic board), by mDNS; notes its address and MAC.
 * The MAC Kickstart itself reported picks the plug. The one cloudcutter printed comes from Tuya's data and is
 * only a preference: right after giving the plug the Wi-Fi (`choose`), when no Kickstart plug carries it, the one
 * there is is taken, and of several the user chooses. Looking for a plug an earlier run left (`exact`), only the
 * MAC counts: any other Kickstart plug could be someone else's.
 */
async function kickstartOnLan(ctx: Ctx, wait: number, label: string | undefined, mode: 'exact' | 'choose'):
  Promise<MdnsDevice | undefined> {
  const want = macKey(ctx.facts.mac ?? ctx.facts.tuyaMac);
  if (mode === 'exact' && !want) return undefined;
  // Kickstart is built for the generic board of its chip, whatever module the recipe names.
  const isPlug = (d: MdnsDevice) => d.txt.project_name === 'lt.kickstart' && d.txt.board === MCUS[ctx.recipe.mcu].board;
  let since: number | undefined;
  const picked = await browseMdns((seen, last) => {
    const plugs = seen.filter(isPlug);
    const exact = want && plugs.find((d) => macKey(d.txt.mac) === want);
    if (exact) return exact;
    if (!plugs.length || ctx.facts.mac || mode === 'exact') return undefined;
    since ??= Date.now();
    // A moment for the plug with the expected MAC to answer too, before settling for another.
    return last || Date.now() - since > 10_000 ? plugs : undefined;
  }, wait, label, { signal: ctx.scope.signal });
  let found = Array.isArray(picked) ? undefined : picked;
  if (Array.isArray(picked)) {
    if (picked.length === 1) {
      found = picked[0];
      if (want) print(`    ${warn()} the Kickstart plug on your network has MAC ${formatMac(found.txt.mac)}, not the ` +
        `${formatMac(want)} cloudcutter printed (that one comes from Tuya's data): taking it, as it is the only one`);
    } else found = await chooseKickstart(ctx, picked);
  }
  if (found) {
    ctx.facts.kickstartIp = ipv4Of(found.addresses);
    ctx.facts.mac = formatMac(found.txt.mac) ?? ctx.facts.mac;
  }
  return found;
}

/** Several Kickstart plugs and no MAC to tell them apart: the user picks, or --device-ip says which. */
async function chooseKickstart(ctx: Ctx, plugs: MdnsDevice[]): Promise<MdnsDevice> {
  const label = (d: MdnsDevice) => `MAC ${formatMac(d.txt.mac) ?? '?'} at ${ipv4Of(d.addresses)}`;
  const choice = await ask({ id: 'kickstart_plug', kind: 'select', message: `${plugs.length} Kickstart plugs are on ` +
    'your network. Which is the one you are flashing? (the MAC is on the label of some plugs, or in your router)',
  choices: plugs.map(label), unanswered: { what: `${plugs.length} Kickstart plugs are on your network ` +
    `(${plugs.map(label).join('; ')}), and none has the MAC flash.ts knows`,
  hint: `say which is this one: ${rerun(ctx.opts, '--from kickstart --device-ip IP')}` } }, ctx);
  return plugs.find((d) => label(d) === choice)!;
}

/**
 * Joins the plug's open AP with nmcli (once a rescan has seen it: the plug needs its time to reboot into
 * Kickstart, and NetworkManager's list is stale after cloudcutter), sends the Wi-Fi credentials to the captive
 * portal, gives the adapter back.
 */
async function provisionOverAp(ctx: Ctx, ap: string, wifi: { ssid: string; password: string }):
  Promise<{ ssid: string; password: string } | false> {
  const iface = await apAdapter(ctx);
  let joined: Awaited<ReturnType<typeof sh>> | undefined;
  for (let attempt = 1; attempt <= 3 && joined?.code !== 0; attempt++) {
    const wait = ms('FLASH_KICKSTART_AP_TIMEOUT_MS');
    if (!(await waitForAp(ctx, iface, ap, wait, `waiting for the plug's ${ap} network (rescanning on ${iface})`))) {
      print(`    ${warn()} ${ap} did not appear within ${seconds(wait)} ` +
        '(the plug opens it 15–30 s after cloudcutter)');
      return false;
    }
    // The Kickstart AP is open: nothing secret on this command line.
    joined = await sh(['nmcli', '--wait', '60', 'device', 'wifi', 'connect', ap, 'ifname', iface],
      { timeoutMs: 90_000, signal: ctx.scope.signal });
    if (joined.code !== 0)
      print(`    ${warn()} could not join ${ap} (try ${attempt} of 3): ${firstLine(joined.stderr || joined.stdout)}`);
  }
  if (joined?.code !== 0) return false;
  // Handing the adapter back: deleting the temporary connection lets NetworkManager reconnect as before.
  const handBack = ctx.scope.cleanup(() => sh(['nmcli', 'connection', 'delete', 'id', ap]));
  try {
    const portal = setting('FLASH_KICKSTART_PORTAL');
    const config = parsePortalConfig((await request('GET', `${portal}/config.json`,
      { signal: ctx.scope.signal })).text);
    ctx.facts.mac = formatMac(config.mac) ?? ctx.facts.mac;
    print(`    ${ok()} joined ${ap} on ${iface}; plug MAC ${config.mac || '(not given)'}; ` +
      `it sees ${config.ssids.length} networks`);
    if (!config.ssids.includes(wifi.ssid)) wifi = await wifiThePlugSees(ctx, wifi, config.ssids);
    const query = new URLSearchParams({ ssid: wifi.ssid, psk: wifi.password });
    const res = await request('GET', `${portal}/wifisave?${query}`,
      { shown: `${portal}/wifisave?ssid=***&psk=***`, redirect: 'manual', signal: ctx.scope.signal });
    if (res.status !== 302 && res.status !== 200)
      throw new Failure(`the captive portal answered HTTP ${res.status} to the Wi-Fi settings`,
        `retry: ${rerun(ctx.opts, '--from kickstart')}`);
    print(`    ${ok()} sent your Wi-Fi ${quoted(wifi.ssid)} to the plug`);
    return wifi;
  } finally {
    await handBack();
  }
}

/**
 * The plug does not see the Wi-Fi network secrets.yaml names (a typo, a 5 GHz network, out of its reach): a person
 * picks the right one, which is saved in secrets.yaml (and the firmware built again with it); with nobody to ask the
 * run stops before the plug is given a network it cannot join.
 */
async function wifiThePlugSees(ctx: Ctx, wifi: { ssid: string; password: string }, seen: string[]):
  Promise<{ ssid: string; password: string }> {
  const secrets = shown(ctx.files.secrets);
  print(`    ${warn()} the plug does not see your Wi-Fi ${quoted(wifi.ssid)} (wifi_ssid in ${secrets}); it sees: ` +
    `${seen.join(', ') || 'nothing'}. It only does 2.4 GHz.`);
  const keep = `${quoted(wifi.ssid)}, as it is (the plug may be out of its reach just now)`;
  const choice = await ask({ id: 'wifi_seen', kind: 'select', message: 'Which network should the plug join? ' +
    `(a new choice is saved in ${secrets})`, choices: [...seen.filter((s) => s && s !== wifi.ssid), keep],
  unanswered: { what: `the plug does not see your Wi-Fi ${quoted(wifi.ssid)}, the wifi_ssid in ${secrets}`,
    hint: `correct wifi_ssid in ${secrets} (a 2.4 GHz network the plug sees: ${seen.join(', ') || 'none'}), or move ` +
      `the plug nearer the router; then: ${rerun(ctx.opts, '--from kickstart')}` } }, ctx);
  if (choice === keep) return wifi;
  const samePassword = await confirm('wifi_same_password',
    `Is the password of ${quoted(choice)} the one in ${secrets}?`, ctx);
  const password = samePassword ? wifi.password : await ask({ id: 'wifi_password', kind: 'password',
    message: `Password of the Wi-Fi network ${quoted(choice)}`,
    validate: (s) => wifiProblem('wifi_password', s) ?? true },
  ctx);
  registerSecret(password);
  updateSecrets(ctx.files.secrets, { wifi_ssid: choice, wifi_password: password });
  print(`    ${ok()} saved wifi_ssid${samePassword ? '' : ' and wifi_password'} in ${secrets}`);
  // The firmware carries the Wi-Fi: a compile under way is started again (a finished one is stale by its date).
  if (ctx.compile && !ctx.compile.finished) {
    await ctx.compile.stop();
    ctx.compile = await startCompile(ctx);
  } else ctx.compile = undefined;
  return { ssid: choice, password };
}

/** Sets keys of secrets.yaml, keeping the rest of it as it was (comments too); mode 0600. */
function updateSecrets(file: string, values: Record<string, string>): void {
  const { doc } = readSecretsFile(file);
  for (const [k, v] of Object.entries(values)) doc!.set(k, v);
  writeFileAtomic(file, doc!.toString(QUOTED), 0o600);
}

async function provisionByHand(ctx: Ctx, ap: string, ssid: string): Promise<void> {
  print(`\n    ${c.bold('Give the plug your Wi-Fi by hand')}, from a phone or laptop:`);
  print(`      1. join the Wi-Fi network ${quoted(ap)} (open, no password)`);
  print(`      2. open ${setting('FLASH_KICKSTART_PORTAL')}/ (a sign-in page may open by itself)`);
  print(`      3. pick ${quoted(ssid)}, type its password (wifi_password in ${shown(ctx.files.secrets)}), and save`);
  print(`      4. re-join your own network`);
  await ask({ id: 'manual_wifi_done', kind: 'confirm', message: 'Done? (Enter when the plug has your Wi-Fi)',
    unanswered: { what: `the plug's Wi-Fi must be given by hand through ${ap}, and nobody is there to do it`,
      hint: `check the plug opens ${ap} (a phone sees it), then retry with a person there: ` +
        rerun(ctx.opts, '--from kickstart') } }, ctx);
}

/** Wi-Fi networks and MAC from the captive portal's /config.json (its SSIDs are not JSON-escaped). Pure. */
export function parsePortalConfig(text: string): { mac: string; ssids: string[] } {
  try {
    const j = JSON.parse(text) as { mac?: string; aps?: { ssid?: string }[] };
    return { mac: j.mac ?? '', ssids: (j.aps ?? []).flatMap((a) => (a.ssid !== undefined ? [a.ssid] : [])) };
  } catch {
    const mac = text.match(/"mac"\s*:\s*"([^"]*)"/)?.[1] ?? '';
    const ssids = [...text.matchAll(/"ssid"\s*:\s*"(.*?)"\s*,\s*"rssi"/g)].map((m) => m[1]);
    return { mac, ssids };
  }
}

/** Saves the plug's whole 2 MiB flash through Kickstart before anything overwrites it. */
async function backupFlash(ctx: Ctx): Promise<void> {
  const file = path.join(ctx.opts.out, '.flash', `backup-${ctx.deviceName}-${macKey(ctx.facts.mac) ?? 'unknown'}.bin`);
  const base = await reachKickstart(ctx, 'kickstart');
  const retry = `retry: ${rerun(ctx.opts, '--from kickstart --backup-flash')}`;
  const data = await withSpinner("saving the plug's whole flash (2 MiB: about 20 s over Wi-Fi)",
    readFlash(base, 0, FLASH_SIZE, ctx.scope.signal).catch((e) => {
      throw e instanceof Failure ? new Failure(e.message, retry) : e;
    }));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, data);
  fs.renameSync(`${file}.tmp`, file);
  print(`    ${ok()} saved the plug's flash (2 MiB) to ${shown(file)}`);
}

/** The size of a BK7231T/N's flash. */
const FLASH_SIZE = 2 * 1024 * 1024;

/**
 * `length` bytes of the plug's flash from `offset`, through Kickstart's /hub/flash_read, in parts of 32 KiB (each
 * retried on its own: over Wi-Fi a 2 MiB read takes about 20 s, and one dropped connection must not restart it). The
 * hub checks nothing of the range: a part that comes back short is a failure, not data.
 */
export async function readFlash(base: string, offset: number, length: number, signal?: AbortSignal):
  Promise<Buffer> {
  const part = 0x8000;
  const parts: Buffer[] = [];
  for (let at = offset; at < offset + length; at += part) {
    const n = Math.min(part, offset + length - at);
    const res = await request('GET', `${base}/hub/flash_read?offset=${at}&length=${n}`, { signal });
    if (res.status !== 200 || res.body.length !== n)
      throw new Failure(`reading the plug's flash at 0x${at.toString(16)} failed: HTTP ${res.status}, ` +
        `${res.body.length} of ${n} bytes`);
    parts.push(res.body);
  }
  return Buffer.concat(parts);
}

/** What the plug's own flash said of its wiring (kept in the journal: read once). */
export type PlugWiring =
  | { found: true; offset: number; keys: Record<string, unknown>; chip?: string;
    mcu?: { baud?: number; datapoints: Datapoint[] } }
  | { found: false; why: string };

/**
 * The plug's own wiring, from Tuya's storage on its flash (only the 192 KiB it lies in, through Kickstart), mapped as
 * `flash.ts recipe` maps a device. A recipe whose pins come from the plug gets them now; any other recipe is compared
 * with it before anything else is sent to the plug: the same goes on, a difference stops (or, with --check-pins, is
 * left to the pin check), no storage goes on with the recipe's pins.
 */
async function checkPlugWiring(ctx: Ctx): Promise<void> {
  const read = ctx.facts.plugWiring;
  const wiring = read ?? await readPlugWiring(ctx);
  if (!read) {
    // Kept at once: a run that stops on the difference must not read the flash again.
    ctx.facts.plugWiring = wiring;
    ctx.journal.facts = { ...ctx.journal.facts, plugWiring: wiring };
    if (!ctx.opts.dryRun) writeJournal(ctx);
  }
  if (!wiring.found) {
    if (fromPlug(ctx.recipe))
      throw new Failure(`the recipe's pins were to come from the plug, but ${wiring.why}`,
        `write the pins into ${shown(ctx.recipePath)} by hand (the device page, or --check-pins finds the button), ` +
        'or ' +
        `make a recipe from cloudcutter's list: ${flashCommand()} recipe "<maker and model>"`);
    return print(`    ${c.dim('·')} the plug's own wiring: ${wiring.why}; going on with the recipe's pins`);
  }
  const plug = plugRecipe(ctx, wiring);
  if (!plug.ok)
    return print(`    ${warn()} the plug's own wiring (Tuya's storage at 0x${wiring.offset.toString(16)}) ` +
    `cannot be mapped: ${plug.reason}; going on with the recipe's pins`);
  const pins = Object.fromEntries(plug.mapping.pins.map((p) => [p.fn, p.pin]));
  if (fromPlug(ctx.recipe)) return usePlugWiring(ctx, plug, 'the pins come from the plug');
  // A generated recipe keeps the keys it was made from: compared key by key, a level counts as much as a pin.
  const differences = [...wiringDifferences(ctx.recipe.pins, pins),
    ...(ctx.recipe.tuya ? tuyaKeyDifferences(ctx.recipe.tuya, plug.mapping.keys) : [])];
  if (!differences.length)
    return print(`    ${ok()} the plug's own wiring (Tuya's storage on its flash) is the recipe's` +
      `${ctx.recipe.tuya ? ', key by key' : ''}: ` + Object.entries(ctx.recipe.pins).map(([fn, pin]) => `${fn} ${pin}`)
      .join(', '));
  const beside = writePlugVersion(ctx, plug);
  print(`    ${c.red('✗')} the plug's own wiring (Tuya's storage on its flash) differs from the recipe:`);
  for (const d of differences) print(`      ${d}`);
  print(`    the plug's version of the recipe: ${shown(beside)}`);
  if (ctx.opts.checkPins)
    return print(`    ${warn()} --check-pins: the pin check tries the recipe's pins on the plug; what you see decides`);
  const choices = [`use the plug's wiring (${shown(ctx.recipePath)} becomes the plug's version; the old one is kept ` +
    'beside it as .orig)', "check the recipe's pins on the plug now (what you see decides)", 'stop here'];
  const choice = await ask({ id: 'plug_wiring', kind: 'select', choices, unattended: choices[2],
    message: "The plug is wired differently from the recipe. What now? (nothing has been sent to it yet)" }, ctx);
  if (choice === choices[0]) return usePlugWiring(ctx, plug, `the recipe's pins were not the plug's`);
  if (choice === choices[1]) {
    ctx.opts.checkPins = true;
    return print(`    the pin check comes next: it tries the recipe's pins`);
  }
  throw new Failure(`the plug is wired differently from ${shown(ctx.recipePath)} ` +
    `(${differences.join('; ')})`, `use the plug's version: ${rerun({ ...ctx.opts, recipe: beside }, '')}; or prove ` +
    `the recipe's pins on the plug: ${rerun(ctx.opts, '--check-pins')}`);
}

/** Reads the part of the plug's flash Tuya's storage lies in, through Kickstart, and finds the storage there. */
async function readPlugWiring(ctx: Ctx): Promise<PlugWiring> {
  const base = await reachKickstart(ctx, 'kickstart');
  const { offset, length } = TUYA_STORAGE_WINDOW;
  const flash = await withSpinner(`reading the plug's own wiring (Tuya's storage: ${length / 1024} KiB of its flash)`,
    readFlash(base, offset, length, ctx.scope.signal));
  const storage = readTuyaStorage(flash, offset);
  if (!storage.found) return { found: false, why: `no Tuya storage on its flash (${storage.why})` };
  for (const p of storage.problems) print(`    ${warn()} Tuya's storage: ${p}`);
  const config = tuyaFromStorage(storage.values, ctx.recipe.model, ctx.deviceName);
  if (!Object.keys(config.keys).length && !config.mcu)
    return { found: false, why: "Tuya's storage on its flash holds no pin configuration" };
  return { found: true, offset: storage.offset, keys: config.keys, chip: config.chip, mcu: config.mcu };
}

/** The plug's wiring as a recipe for this plug: the recipe's own identity (model, profile, names), the plug's pins. */
function plugRecipe(ctx: Ctx, wiring: Extract<PlugWiring, { found: true }>): Generated {
  const base = path.basename(ctx.recipePath).replace(/\.ya?ml$/, '').replace(/\.plug$/, '');
  const config: TuyaConfig = { title: ctx.recipe.model, slug: `${base}.plug`, chip: MCUS[ctx.recipe.mcu].chip,
    keys: wiring.keys, mcu: wiring.mcu };
  const schema = /\$schema=(\S+)/.exec(fs.readFileSync(ctx.recipePath, 'utf8'))?.[1] ?? 'recipe.schema.json';
  const made = recipeFor(config, { source: `the plug's own flash (Tuya's storage at 0x${wiring.offset.toString(16)})`,
    profile: ctx.recipe.cloudcutter.profile, device: ctx.recipe.cloudcutter.device }, schema);
  if (!made.ok) return made;
  // The recipe's names and settings stay the recipe's: only the hardware comes from the plug.
  const doc = lib.yaml.parseDocument(made.recipe);
  for (const [k, v] of Object.entries(ctx.recipe.substitutions))
    if (k !== 'board' && v !== undefined) doc.setIn(['substitutions', k], v);
  doc.set('ap_mode', ctx.recipe.ap_mode);
  doc.set('kickstart', ctx.recipe.kickstart);
  return { ...made, recipe: doc.toString({ lineWidth: 0 }) };
}

/**
 * How two recipes' pins differ, function by function where both name it, else by what the pins do ("LEDs: recipe
 * P6 P7, plug P7 P9"): a hand-written recipe names its pins its own way. Pure.
 */
export function wiringDifferences(recipe: Record<string, string>, plug: Record<string, string>): string[] {
  const out: string[] = [];
  const roles = [...new Set([...Object.keys(recipe), ...Object.keys(plug)].map(pinRole))];
  for (const role of roles) {
    const mine = Object.entries(recipe).filter(([fn]) => pinRole(fn) === role);
    const theirs = Object.entries(plug).filter(([fn]) => pinRole(fn) === role);
    const sameNames = theirs.length === mine.length && theirs.every(([fn]) => fn in recipe);
    if (sameNames) {
      for (const [fn, pin] of mine) if (plug[fn] !== pin) out.push(`${fn}: recipe ${pin}, plug ${plug[fn]}`);
      continue;
    }
    const pins = (list: [string, string][]) => list.map(([, p]) => p).sort().join(' ') || 'none';
    if (pins(mine) !== pins(theirs)) out.push(`${role}: recipe ${pins(mine)}, plug ${pins(theirs)}`);
  }
  return out;
}

/**
 * How the wiring keys of the plug's configuration differ from those a recipe was made from (its `tuya:`), key by
 * key: "rl1_lv: recipe 1, plug 0". Keys of how the firmware behaves (power-on state, PWM frequency) do not count. Pure.
 */
export function tuyaKeyDifferences(recipe: Record<string, unknown>, plug: Record<string, unknown>): string[] {
  const keys = [...new Set([...Object.keys(recipe), ...Object.keys(plug)])].filter((k) => WIRING_KEY.test(k)).sort();
  const text = (v: unknown) => (v === undefined ? 'none' : String(v));
  // A level not written is active high, as Tuya's firmware reads it.
  const value = (k: string, v: unknown) => text(v === undefined && k.endsWith('_lv') ? 1 : v);
  return keys.filter((k) => value(k, recipe[k]) !== value(k, plug[k]))
    .map((k) => `${k}: recipe ${text(recipe[k])}, plug ${text(plug[k])}`);
}

/** Writes the plug's version of the recipe (and its template) beside the recipe; never over it. */
function writePlugVersion(ctx: Ctx, plug: Extract<Generated, { ok: true }>): string {
  const dir = path.dirname(ctx.recipePath);
  const file = path.join(dir, `${plug.slug}.yaml`);
  writeFileAtomic(path.join(dir, `${plug.slug}.esphome.yaml`), plug.template);
  writeFileAtomic(file, plug.recipe);
  return file;
}

/**
 * The plug's wiring becomes the recipe (the old one kept as .orig): the run goes on with it, its config written again
 * and its firmware compiled anew.
 */
async function usePlugWiring(ctx: Ctx, plug: Extract<Generated, { ok: true }>, why: string): Promise<void> {
  const dir = path.dirname(ctx.recipePath);
  writeFileAtomic(path.join(dir, `${plug.slug}.esphome.yaml`), plug.template);
  const text = plug.recipe.replace(/^esphome: .*$/m, `esphome: ${plug.slug}.esphome.yaml`);
  fs.copyFileSync(ctx.recipePath, `${ctx.recipePath}.orig`);
  writeFileAtomic(ctx.recipePath, text);
  const fresh = loadContext(ctx.opts, ctx.scope);
  ctx.compile?.stop();
  Object.assign(ctx, { recipe: fresh.recipe, lineOf: fresh.lineOf, templatePath: fresh.templatePath,
    template: fresh.template, substitutions: fresh.substitutions, compile: undefined });
  print(`    ${ok()} ${why}: ${shown(ctx.recipePath)} now has the plug's wiring (` +
    `${Object.entries(ctx.recipe.pins).map(([fn, pin]) => `${fn} ${pin}`).join(', ')}); the old recipe is ` +
    `${shown(`${ctx.recipePath}.orig`)}`);
  await stepConfig(ctx);
  recordStep(ctx, 'config');
  ctx.compile = await startCompile(ctx);
}

/** A recipe whose pins are to come from the plug's own flash (`flash.ts recipe --profile LABEL --name NAME`). */
function fromPlug(recipe: Recipe): boolean {
  return recipe.wiring === 'from the plug';
}

// ─── Step: pins ────────────────────────────────

/**
 * Kickstart's pin scanner entities, by name. ESPHome's web server addresses them by object id up to 2026.6
 * (`/select/-__pin`, what Kickstart v25.05.28 has) and by name from 2026.1 (`/select/-%3E%20Pin`); the ids in its
 * events changed the same way. flash.ts tries the first, then the second, and listens for both.
 */
export const PINSCAN = {
  pin: ['select', '-> Pin'], mode: ['select', '-> Pin Mode'], state: ['text_sensor', '-> Pin State'],
} as const;

/** ESPHome's object id of an entity name (up to 2025): lower case, spaces to _, anything else odd to _. Pure. */
export function objectId(name: string): string {
  return name.toLowerCase().replace(/ /g, '_').replace(/[^a-z0-9_-]/g, '_');
}

/** The URLs of one entity, in the order tried: by object id, then by name. Pure. */
export function entityUrls([domain, name]: readonly [string, string]): string[] {
  return [`/${domain}/${objectId(name)}`, `/${domain}/${encodeURIComponent(name)}`];
}

async function stepPins(ctx: Ctx): Promise<void> {
  const result = await checkPins({
    base: await reachKickstart(ctx, 'pins'),
    pins: ctx.recipe.pins,
    ask: (q) => ask(q, ctx),
    say: (line) => print(`    ${line}`),
    signal: ctx.scope.signal,
  });
  if (!result.length) {
    const roles = Object.keys(ctx.recipe.pins).map(pinRole);
    return print(`    ${c.dim('·')} nothing here can be checked pin by pin ` + (roles.includes('bus')
      ? '(Kickstart switches pins; it cannot talk to an LED driver): try the light once ESPHome runs on it'
      : roles.includes('serial') ? "(the device's own MCU drives its hardware): verify shows the MCU answering " +
        'once ESPHome runs on it' : ''));
  }
  const wrong = result.filter((r) => !r.ok);
  const skipped = result.filter((r) => r.skipped).map((r) => `${r.fn} (${r.pin})`);
  if (!wrong.length) return print(`    ${ok()} every pin ${skipped.length ? 'checked ' : ''}does what the recipe says` +
    (skipped.length ? `; not checked, as you chose: ${skipped.join(', ')}` : ''));
  const what = wrong.map((r) => `${r.fn} (${r.pin}): ${r.saw}`).join('; ');
  const again = rerun(ctx.opts, '--check-pins');
  // A light whose channels are only swapped: the recipe can be put right here, before the final firmware goes on.
  const swapped = channelFix(result);
  if (swapped && (await confirm('fix_channels', `The light's channels are swapped (${Object.entries(swapped)
    .map(([fn, pin]) => `${fn} is ${pin}`).join(', ')}). Write that into ${shown(ctx.recipePath)}?`, ctx))) {
    writeRecipePins(ctx.recipePath, swapped);
    const now = Object.entries(swapped).map(([fn, pin]) => `${fn}: ${pin}`).join(', ');
    throw new Failure(`${what}: the recipe now has ${now}`,
      `run again, so the firmware is built with those pins (and they are checked once more): ${again}`);
  }
  const button = result.find((r) => r.foundOn);
  const matches = button ? siblingRecipes(ctx, (r) => r.pins[button.fn] === button.foundOn) : [];
  throw new Failure(what, matches.length
    ? `the ${button!.fn} is on ${button!.foundOn}: this plug matches ${matches.map(shown).join(' or ')}; ` +
      'run that recipe instead'
    : `fix pins: in ${shown(ctx.recipePath)} (or --set <function>_pin=Pn), then: ${again}`);
}

/**
 * When every light channel was seen but some lit another colour, and the colours seen are just the channels
 * swapped around: the pins each channel really is on. Pure.
 */
export function channelFix(results: PinResult[]): Record<string, string> | undefined {
  const colour = channelColour;
  const channels = results.filter((r) => pinRole(r.fn) === 'channel' && r.fn !== 'brightness');
  if (!channels.some((r) => !r.ok)) return undefined;
  const byColour = new Map(channels.map((r) => [r.saw, r.pin]));
  const fix = Object.fromEntries(channels.map((r) => [r.fn, byColour.get(colour(r.fn))]));
  const complete = byColour.size === channels.length && Object.values(fix).every(Boolean);
  return complete ? fix as Record<string, string> : undefined;
}

/** Puts new pins into a recipe file, keeping everything else in it (comments too), through a temp file. */
function writeRecipePins(file: string, pins: Record<string, string>): void {
  const doc = lib.yaml.parseDocument(fs.readFileSync(file, 'utf8'));
  for (const [fn, pin] of Object.entries(pins)) doc.setIn(['pins', fn], pin);
  writeFileAtomic(file, doc.toString({ lineWidth: 0 }));
}

async function planPins(ctx: Ctx): Promise<string[]> {
  return Object.entries(ctx.recipe.pins).map(([fn, pin]) => {
    const role = roleOf(fn);
    if (role.check === 'leave') return `${fn} on ${pin}: not checked (${role.why})`;
    const then = { drive: 'OUTPUT_HIGH / OUTPUT_LOW and ask what you saw',
      pulse: `OUTPUT_HIGH for ${LATCH_PULSE_MS} ms ` +
      'and ask whether the relay clicked', press: 'INPUT_PULLUP and ask you to press it',
    flip: 'INPUT_PULLUP and ask you to flip the wall switch' }[role.check];
    const option = encodeURIComponent(BK7231_PINS[pin]);
    return `POST ${entityUrls(PINSCAN.pin)[0]}/set?option=${option}, then ${then} (${fn})`;
  });
}

/** What the pin check made of one recipe pin; `skipped`: the user chose not to check it (it stays unproven). */
export interface PinResult { fn: string; pin: string; ok: boolean; saw: string; foundOn?: string; skipped?: boolean }

/** A recipe pin's entry in PIN_ROLES, by its function's name. Pure. */
export function roleOf(fn: string): (typeof PIN_ROLES)[number] {
  return PIN_ROLES.find((r) => r.match.test(fn))!;
}

export function pinRole(fn: string): (typeof PIN_ROLES)[number]['role'] {
  return roleOf(fn).role;
}

/** A latching relay's coil pulse: Tuya's own drive times are 60–100 ms. */
const LATCH_PULSE_MS = 100;

/** The colour a light channel shows, in the words of LIGHT_ANSWERS. */
function channelColour(fn: string): string {
  return fn === 'cold' || fn === 'warm' ? `${fn} white` : fn;
}

/** Whether what was seen is what the pin's function should show. Pure. */
export function pinLooksRight(fn: string, saw: string): boolean {
  switch (pinRole(fn)) {
    case 'relay':
    case 'latch': return /relay/.test(saw);
    case 'led': return /LED/.test(saw);
    case 'channel': return fn === 'brightness' ? /white/.test(saw) : saw === channelColour(fn);
    default: return saw !== 'nothing';
  }
}

/**
 * Drives each recipe pin through Kickstart's pinscan entities as its role says (PIN_ROLES) and asks what happened.
 * Outputs go HIGH then LOW (as often as you ask to see it again); a latching relay's pins get one short pulse each;
 * a button pin is read with INPUT_PULLUP while you press it (if it never changes, the other pins are tried one by
 * one to find where the button is) and a wall switch input while you flip the switch; serial lines, buses and the
 * energy chip's pins are left alone.
 */
export async function checkPins(o: {
  base: string;
  pins: Record<string, string>;
  ask: (q: Question) => Promise<string>;
  say: (line: string) => void;
  signal?: AbortSignal;
  /** How long a press or a flip is awaited, and how long each pin is read when looking for a button. */
  waitMs?: number;
  searchMs?: number;
}): Promise<PinResult[]> {
  const waitMs = o.waitMs ?? ms('FLASH_PRESS_TIMEOUT_MS');
  const searchMs = o.searchMs ?? ms('FLASH_PRESS_SEARCH_MS');
  // How long a driven pin is held on and then off for the user to see (the pauses around a pulse are no longer).
  const showMs = ms('FLASH_PIN_SHOW_MS');
  const signal = o.signal;
  const nap = (millis: number) => sleep(millis, signal);
  let style = 0; // which of entityUrls() this Kickstart answers: found once, then kept
  const post = async (entity: readonly [string, string], action: string) => {
    const urls = entityUrls(entity);
    for (let i = style; i < urls.length; i++) {
      const res = await request('POST', `${o.base}${urls[i]}/${action}`, { signal });
      if (res.status === 200) return void (style = i);
      if (res.status !== 404) throw new HttpError(`POST ${urls[i]}/${action} answered HTTP ${res.status}`);
    }
    throw new HttpError(`POST ${urls.join(' and ')} (${action}) answered HTTP 404: this Kickstart has no pin ` +
      'scanner there');
  };
  const scan = {
    pin: async (pin: string) => {
      await post(PINSCAN.pin, `set?option=${encodeURIComponent(BK7231_PINS[pin])}`);
      // An option the select does not know is still answered 200: read it back.
      const now = JSON.parse((await request('GET', `${o.base}${entityUrls(PINSCAN.pin)[style]}`, { signal })).text ||
        '{}');
      if ((now.value ?? now.state) !== BK7231_PINS[pin])
        throw new HttpError(`the plug's pin scanner did not take "${BK7231_PINS[pin]}" ` +
          `(it says "${now.value ?? now.state}")`);
    },
    mode: (mode: string) => post(PINSCAN.mode, `set?option=${mode}`),
  };
  const pulse = async (pin: string) => {
    await scan.pin(pin);
    await scan.mode('OUTPUT_HIGH');
    await nap(LATCH_PULSE_MS);
    await scan.mode('INPUT'); // a latching relay's coil must not stay powered
  };
  const results: PinResult[] = [];
  const note = (r: PinResult) => {
    o.say(`${r.ok ? ok() : c.red('✗')} ${r.fn.padEnd(12)} ${r.pin.padEnd(4)} ${r.saw}`);
    results.push(r);
  };
  for (const [fn, pin] of Object.entries(o.pins)) {
    const role = roleOf(fn);
    if (role.check === 'leave') o.say(`${c.dim('·')} ${fn.padEnd(12)} ${pin.padEnd(4)} not checked: ${role.why}`);
    if (role.check !== 'drive' && role.check !== 'pulse') continue;
    const light = role.role === 'channel';
    const sets = fn.endsWith('_on');
    const partner = role.check === 'pulse' ? o.pins[fn.replace(/_(on|off)$/, sets ? '_off' : '_on')] : undefined;
    let saw = 'show it again';
    while (saw === 'show it again') {
      if (role.check === 'pulse') {
        // A latching relay clicks only when it changes: first the other pin puts it the other way.
        if (partner) {
          o.say(`  ${sets ? 'resetting' : 'setting'} the relay first (${partner}): a click now is that one`);
          await pulse(partner);
          await nap(Math.min(500, showMs));
        }
        o.say(`  pulsing ${fn} (${pin}) now`);
        await pulse(pin);
        await nap(Math.min(400, showMs));
      } else {
        await scan.pin(pin);
        await scan.mode('OUTPUT_HIGH');
        await nap(showMs);
        await scan.mode('OUTPUT_LOW');
        await nap(showMs);
        await scan.mode('INPUT'); // let go of the pin so the next one is seen on its own
      }
      const what = role.check === 'pulse' ? `was pulsed once (it should ${sets ? 'set' : 'reset'} the relay)`
        : 'was switched on and off';
      const question = light ? 'Which colour did the light show?' : 'What did you see?';
      saw = await o.ask({ id: `pin_${fn}`, kind: 'select', choices: light ? LIGHT_ANSWERS : PIN_ANSWERS,
        message: `${fn} on ${pin} ${what}. ${question}` });
    }
    note({ fn, pin, ok: pinLooksRight(fn, saw), saw });
  }
  // Buttons and wall switches are read live while the user acts: what the pin does answers, not a key press.
  const events = await openPinEvents(o.base, o.signal);
  try {
    // The pin is read before the user is told to act: a quick hand must not beat the pin scanner.
    const watch = async (pin: string, want: 'LOW' | 'change', millis: number, tell: () => void) => {
      const mark = events.mark();
      await scan.pin(pin);
      await scan.mode('INPUT_PULLUP');
      tell();
      return events.seen(mark, BK7231_PINS[pin], want, millis);
    };
    /** Watches `pin` until the user's action shows; when it does not, asks them (them only) what happened. */
    const awaitAction = async (fn: string, pin: string, want: 'LOW' | 'change', doIt: string, noun: string,
      how = '') => {
      for (;;) {
        const tell = () => o.say(`${doIt} now: reading ${pin} (for up to ${seconds(waitMs)}${how})`);
        if (await watch(pin, want, waitMs, tell)) return 'seen';
        const answer = await o.ask({ id: `${want === 'LOW' ? 'press' : 'flip'}_${fn}`, kind: 'select',
          message: `No ${noun} showed on ${pin} within ${seconds(waitMs)}. What happened?`,
          choices: Object.values(UNSEEN_ANSWERS) });
        if (answer === UNSEEN_ANSWERS.done) return 'unseen';
        if (answer === UNSEEN_ANSWERS.skip) return 'skipped';
      }
    };
    const skipped = (fn: string, pin: string) =>
      note({ fn, pin, ok: true, skipped: true, saw: 'not checked: skipped' });
    for (const [fn, pin] of Object.entries(o.pins).filter(([f]) => roleOf(f).check === 'flip')) {
      const n = fn.replace(/^\D+/, '');
      const which = `the wall switch${n ? ` ${n}` : ''}`;
      const got = await awaitAction(fn, pin, 'change', `Flip ${which}`, 'flip', `; the switch on the device's S${n} ` +
        'input, or touch its two wires together and apart');
      if (got === 'skipped') skipped(fn, pin);
      else note({ fn, pin, ok: got === 'seen', saw: got === 'seen' ? 'flip seen' : 'no change seen' });
    }
    for (const [fn, pin] of Object.entries(o.pins).filter(([f]) => roleOf(f).check === 'press')) {
      const which = fn === 'button' ? "the plug's button" : fn === 'button_all' ? 'the button for all sockets'
        : fn === 'button_reset' ? 'the reset button'
        : `${fn.startsWith('key') ? 'key' : 'button'} ${fn.replace(/^\D+/, '')}`;
      let got = await awaitAction(fn, pin, 'LOW', `Press and release ${which}`, 'press');
      if (got === 'skipped') {
        skipped(fn, pin);
        continue;
      }
      if (got === 'seen') {
        note({ fn, pin, ok: true, saw: 'press seen' });
        continue;
      }
      // Pressed, and the recipe's pin did not see it: the button may be on another pin. One pin is read at a time,
      // so the user keeps pressing while each is read in turn.
      const used = Object.values(o.pins);
      const others = [...used.filter((p) => p !== pin && roleOf(Object.keys(o.pins).find((f) => o.pins[f] === p)!)
        .check !== 'leave'), ...Object.keys(BK7231_PINS).filter((p) => !used.includes(p))];
      let foundOn: string | undefined;
      while (!foundOn && got !== 'skipped') {
        o.say(`looking for ${which} on the other pins (${others.length}, ${seconds(searchMs)} each): press it ` +
          'again and again, about once a second, until it is found');
        for (const [i, other] of others.entries()) {
          if (!(await watch(other, 'LOW', searchMs, () => o.say(`  reading ${other} (${i + 1} of ${others.length})`))))
            continue;
          const yours = await o.ask({ id: `found_${fn}`, kind: 'confirm', default: true,
            message: `A press showed on ${other}, not on ${pin} as the recipe says. Was that you pressing ${which}?` });
          if (yours === 'true') {
            foundOn = other;
            break;
          }
        }
        if (foundOn) break;
        const next = await o.ask({ id: `unfound_${fn}`, kind: 'select', choices: Object.values(UNFOUND_ANSWERS),
          message: `No pin saw ${which}. What now?` });
        if (next === UNFOUND_ANSWERS.wrong) break;
        if (next === UNFOUND_ANSWERS.skip) got = 'skipped';
      }
      if (got === 'skipped') {
        skipped(fn, pin);
        continue;
      }
      o.say(foundOn ? `${warn()} ${which} is on ${foundOn}, not ${pin}` : `${c.red('✗')} no pin saw ${which}`);
      results.push({ fn, pin, ok: false, saw: foundOn ? `it is on ${foundOn}` : 'no pin saw it', foundOn });
    }
  } finally {
    events.close();
  }
  await scan.mode('INPUT');
  return results;
}

/**
 * Kickstart's Server-Sent Events, as the pin check reads them: which pin and mode the scanner is set to and every
 * level it reports, in the order the plug sent them. A pin's levels count from the events of its selection with
 * INPUT_PULLUP: a level still on its way from the pin read before, or read before the pull-up was on (a floating
 * pin reads LOW), is never taken for a press.
 */
async function openPinEvents(base: string, signal?: AbortSignal): Promise<{
  mark: () => number;
  seen: (from: number, option: string, want: 'LOW' | 'change', millis: number) => Promise<boolean>;
  close: () => void;
}> {
  const ac = new AbortController();
  const log: { pin?: string; mode?: string; level?: string }[] = [];
  const arrived = new EventTarget();
  // Event ids: `select--__pin` up to ESPHome 2025, `select/-> Pin` (in `name_id`) from 2026.1.3.
  const idsOf = ([domain, name]: readonly [string, string]) => [`${domain}-${objectId(name)}`, `${domain}/${name}`];
  const pinIds = idsOf(PINSCAN.pin);
  const modeIds = idsOf(PINSCAN.mode);
  const stateIds = idsOf(PINSCAN.state);
  const res = await fetch(`${base}/events`, { signal: signal ? AbortSignal.any([ac.signal, signal]) : ac.signal });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        // ESPHome ends events with CRLF CRLF; other servers with LF LF.
        buf = (buf + decoder.decode(value, { stream: true })).replace(/\r\n/g, '\n');
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          if (!/^event:\s*state/m.test(block) || !data) continue;
          try {
            const j = JSON.parse(data) as { id?: string; name_id?: string; state?: string; value?: string };
            const is = (ids: string[]) => [j.id, j.name_id].some((id) => id && ids.includes(id));
            const value = String(j.value ?? j.state ?? '');
            if (is(pinIds)) log.push({ pin: value });
            else if (is(modeIds)) log.push({ mode: value });
            else if (is(stateIds) && value) log.push({ level: value });
            else continue;
            arrived.dispatchEvent(new Event('state'));
          } catch {}
        }
      }
    } catch {}
  })();
  /** The levels pin `option` reported with its pull-up on, since the scanner was switched to it (after `from`). */
  const levels = (from: number, option: string) => {
    let selected = -1;
    for (let i = from; i < log.length; i++) if (log[i].pin === option) selected = i;
    const pulledUp = selected < 0 ? -1 : log.findIndex((e, i) => i > selected && e.mode === 'INPUT_PULLUP');
    return pulledUp < 0 ? [] : log.slice(pulledUp + 1).flatMap((e) => (e.level ? [e.level] : []));
  };
  const judge = (from: number, option: string, want: 'LOW' | 'change') => {
    const seen = levels(from, option);
    return want === 'LOW' ? seen.includes('LOW') : seen.some((l) => l !== seen[0]);
  };
  return {
    mark: () => log.length,
    seen: (from, option, want, millis) => new Promise((resolve, reject) => {
      const finish = (result?: boolean) => {
        clearTimeout(timer);
        arrived.removeEventListener('state', check);
        signal?.removeEventListener('abort', abort);
        if (result === undefined) reject(signal!.reason);
        else resolve(result);
      };
      const check = () => judge(from, option, want) && finish(true);
      const abort = () => finish();
      const timer = setTimeout(() => finish(judge(from, option, want)), millis);
      arrived.addEventListener('state', check);
      signal?.addEventListener('abort', abort, { once: true });
      if (signal?.aborted) abort();
      else check();
    }),
    close: () => ac.abort(),
  };
}

// ─── Step: upload ──────────────────────────────

async function stepUpload(ctx: Ctx): Promise<void> {
  if (ctx.interrupted === 'upload') {
    print(`    the last run stopped during this step: checking whether the plug already runs the new firmware …`);
    const label = `looking for ${ctx.deviceName} (mDNS)`;
    if (await discoverDevice(finalDevice(ctx), 4000, label, { signal: ctx.scope.signal }))
      return print(`    ${ok()} ${ctx.deviceName} is already up: the upload went through`);
  }
  const base = await reachKickstart(ctx, 'upload');
  const uf2 = await awaitCompile(ctx);
  const { data } = checkedFirmware(uf2, ctx.recipe.mcu,
    recompile(ctx.opts), 'refusing to upload: ');
  if (ctx.opts.deviceIp && !(await isKickstart(base))) {
    // No Kickstart at the address given: a plug already on ESPHome takes the native OTA instead.
    const esphome = await findEsphome(ctx);
    if (!esphome) throw new Failure('no esphome command, and Docker is not answering',
      `pipx install esphome (or start Docker), then: ${rerun(ctx.opts, '--from upload')}`);
    const argv = esphomeArgv(ctx, esphome.kind, 'upload', '--device', new URL(base).hostname);
    print(c.dim(`    $ ${shq(...argv)}`));
    const r = await sh(argv, { timeoutMs: 600_000, signal: ctx.scope.signal });
    if (r.code !== 0) throw new Failure(`esphome upload failed: ${firstLine(r.stderr || r.stdout)}`,
      `check the plug is online and the OTA password in secrets.yaml, then: ${rerun(ctx.opts, '--from upload')}`);
    return print(`    ${ok()} uploaded with esphome upload`);
  }
  ctx.facts.uf2Sha256 = sha256(data);
  const answer = await uploadUf2(`${base}/update`, data, path.basename(uf2),
    `retry: ${rerun(ctx.opts, '--from upload')}`);
  const ota = esphomeArgv(ctx, esphomeKind(ctx), 'upload', '--device', new URL(base).hostname);
  if (answer.status === 404)
    throw new Failure(`the plug's Kickstart has no web upload (POST /update answered HTTP 404)`,
      `upload through ESPHome's own OTA instead: ${shq(...ota)}`);
  if (/Update Successful/i.test(answer.body))
    return print(`    ${ok()} Kickstart took the firmware; the plug reboots into ESPHome`);
  const reason = answer.body.match(/Update Failed:\s*(.+)/i)?.[1]?.trim() ??
    (/Update Failed/i.test(answer.body) ? '' : `HTTP ${answer.status} ${answer.body.trim().slice(0, 200)}`);
  throw new Failure(reason ? `the plug refused the firmware: ${reason}${explainOtaFailure(reason)}`
    : 'the plug refused the firmware and gave no reason (Kickstart built on ESPHome 2025.7 or later only says ' +
      '"Update Failed!"); the usual causes are a UF2 for the other chip and a damaged file',
  `check the recipe's mcu and board, then ${recompile(ctx.opts)}`);
}

async function planUpload(ctx: Ctx): Promise<string[]> {
  return [`POST http://<kickstart ip>/update  multipart field "update" = ${shown(ctx.files.uf2)}`,
    `(a plug already on ESPHome, at --device-ip: $ ${shq(...esphomeArgv(ctx, esphomeKind(ctx), 'upload',
      '--device', ctx.opts.deviceIp ?? 'IP'))})`];
}

/** What LibreTiny's OTA failure codes mean. Pure. */
export function explainOtaFailure(reason: string): string {
  if (/Bad Family ID|uf2=3/i.test(reason)) return " (the UF2 is for another chip: its family ID is not this plug's)";
  if (/Bad Magic Number|uf2=2/i.test(reason)) return ' (the file is not a UF2: upload firmware.uf2, not a .ug.bin)';
  return '';
}

async function isKickstart(base: string): Promise<boolean> {
  try {
    return (await request('GET', `${base}/hub`, { retries: 1 })).status === 200;
  } catch {
    return false;
  }
}

/**
 * Streams a UF2 to Kickstart's web OTA as multipart/form-data (field `update`, like its web page),
 * with a progress bar. A dropped connection is retried from the start (the plug discards a partial update).
 */
export async function uploadUf2(url: string, data: Buffer, fileName: string, retry = 'retry: --from upload',
  attempts = 3): Promise<{ status: number; body: string }> {
  const http = await import('node:http');
  const { SingleBar, Presets } = await import('cli-progress');
  const boundary = `----flashts${crypto.randomBytes(8).toString('hex')}`;
  const head = Buffer.from(`--${boundary}\r\n` +
    `Content-Disposition: form-data; name="update"; filename="${fileName}"\r\n` +
    'Content-Type: application/octet-stream\r\n\r\n');
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const total = head.length + data.length + tail.length;
  const kib = (n: number) => Math.ceil(n / 1024);
  for (let attempt = 1; ; attempt++) {
    const tty = process.stdout.isTTY && !io.screen;
    const bar = new SingleBar({ format: '    upload [{bar}] {percentage}% {value}/{total} KiB {speed}',
      hideCursor: true, stream: process.stdout }, Presets.shades_classic);
    if (tty) bar.start(kib(total), 0, { speed: '' });
    const started = Date.now();
    let sent = 0;
    try {
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const headers = { 'Content-Type': `multipart/form-data; boundary=${boundary}`, 'Content-Length': total };
        const req = http.request(url, { method: 'POST', headers }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.setTimeout(ms('FLASH_HTTP_TIMEOUT_MS') * 3, () => req.destroy(new Error('timed out')));
        const chunks = [head, ...Array.from({ length: Math.ceil(data.length / 16384) },
          (_, i) => data.subarray(i * 16384, (i + 1) * 16384)), tail];
        const writeNext = () => {
          while (chunks.length) {
            const chunk = chunks.shift()!;
            sent += chunk.length;
            if (tty) bar.update(Math.floor(sent / 1024),
              { speed: `${Math.round(sent / 1024 / Math.max(0.001, (Date.now() - started) / 1000))} KiB/s` });
            if (!req.write(chunk)) return void req.once('drain', writeNext);
          }
          req.end();
        };
        writeNext();
      });
      if (tty) bar.update(kib(total));
      return answer;
    } catch (e) {
      const why = (e as Error).message;
      if (attempt >= attempts) throw new Failure(`the upload to ${url} failed ${attempts} times: ${why}`,
        `keep the plug powered and close to the router; ${retry}`);
      print(`\n    ${warn()} upload interrupted after ${kib(sent)} KiB (${why}); ` +
        `retrying (${attempt + 1}/${attempts})`);
      await sleep(1000 * attempt);
    } finally {
      if (tty) bar.stop();
      else print(`    upload: ${kib(sent)} of ${kib(total)} KiB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  }
}

// ─── Step: verify ──────────────────────────────

async function stepVerify(ctx: Ctx): Promise<void> {
  const key = readSecretsFile(ctx.files.secrets).values.api_encryption_key;
  if (!key) throw new Failure(`no api_encryption_key in ${shown(ctx.files.secrets)}`,
    `write it with the config step: ${rerun(ctx.opts, '--only config')}, then run it again (compile, upload ` +
    `and verify follow): ${rerun(ctx.opts, '')}`);
  const plug = await findFlashedPlug(ctx, key);
  ctx.facts.deviceIp = plug.ip;
  // Nothing less than the device info over the encrypted API counts: it proves the plug runs this config's key.
  const retry = rerun({ ...ctx.opts, deviceIp: ctx.opts.deviceIp ?? plug.ip }, '--only verify');
  const where = `${plug.ip}:${plug.port}`;
  const api = plug.info ?? (await readDeviceInfo(plug.ip, plug.port, key, ms('FLASH_API_TIMEOUT_MS')));
  if ('error' in api) {
    if (/MAC failure|Handshake failure/i.test(api.error))
      throw new Failure(`the plug at ${where} refused the api_encryption_key in ` +
        `${shown(ctx.files.secrets)} (${api.error})`,
      `it runs firmware built with another key: ${recompile(ctx.opts)}`);
    // Kickstart (and firmware without `api: encryption:`) speaks the API in plain text: to the client, a bad format.
    const why = /Bad format/i.test(api.error)
      ? 'it speaks the API without encryption: it still runs Kickstart, or other firmware' : api.error;
    throw new Failure(`the plug at ${where} did not give its device info over the API (${why})`,
      `power-cycle the plug and retry: ${retry}; its own log says why: ` +
      `${shq(...esphomeArgv(ctx, esphomeKind(ctx), 'logs', '--device', plug.ip))}; ` +
      `if ${plug.ip} is not the plug, give its address with --device-ip`);
  }
  if (api.name !== ctx.deviceName)
    throw new Failure(`the device at ${where} is "${api.name}", not ${ctx.deviceName}`,
      `find ${ctx.deviceName}'s address in your router and retry with it: ` +
      rerun(ctx.opts, '--only verify --device-ip IP'));
  ctx.facts.mac = formatMac(api.macAddress) ?? ctx.facts.mac;
  print(`    ${ok()} ${c.bold(api.friendlyName || ctx.deviceName)} is running ESPHome ${api.esphomeVersion}`);
  print(`      name ${api.name} · IP ${plug.ip} (${plug.how}) · MAC ${formatMac(api.macAddress) ?? '?'} · ` +
    `board ${api.model}`);
  print(`      read over the encrypted API (port ${plug.port}) with the key in secrets.yaml`);
  await verifyMcu(ctx, plug.ip, plug.port, key);
  print(`\n    ${c.bold('Add it to Home Assistant:')} Settings → Devices & services: ESPHome discovers ` +
    `"${ctx.deviceName}"`);
  print(`    (or Add integration → ESPHome → host ${plug.ip}). It asks for the encryption key: ` +
    'api_encryption_key');
  print(`    in ${shown(ctx.files.secrets)}. Keep that folder: ESPHome needs it for later updates.`);
}

/**
 * A TuyaMCU device works only when its MCU talks to ESPHome's tuya component: the entities of the datapoints get
 * their states over the API once it does (a wrong baud rate, or a battery device's low-power MCU, gives none).
 */
async function verifyMcu(ctx: Ctx, host: string, port: number, key: string): Promise<void> {
  const entities = tuyaEntityNames(ctx.template, ctx.substitutions);
  if (!entities.length) return;
  // A tuya switch, light or fan shows a state (off) before the MCU has said a word: only entities ESPHome keeps
  // without a state until the MCU reports (sensors, numbers, selects, a climate's temperatures) tell.
  const names = entities.filter((e) => TELLING_DOMAINS.includes(e.domain)).map((e) => e.name);
  if (!names.length)
    return print(`    ${c.dim('·')} its MCU's datapoints are switches, lights or fans, which ESPHome shows as off ` +
      'before the MCU speaks: switch one from Home Assistant to see the device answer');
  const wait = ms('FLASH_MCU_TIMEOUT_MS');
  const seen = await withSpinner(`waiting for the device's MCU to report its datapoints (up to ${seconds(wait)})`,
    readDeviceStates(host, port, key, wait, (states) => names.some((n) => states.has(n))));
  const answered = names.filter((n) => seen.has(n));
  const baud = ctx.substitutions.tuya_baud_rate;
  if (!answered.length)
    throw new Failure(`${ctx.deviceName} runs ESPHome, but its MCU reported nothing within ` +
      `${seconds(wait)} (tuya_baud_rate ${baud})`, `the usual cause is the baud rate: set tuya_baud_rate to ` +
      `${baud === '115200' ? '9600' : '115200'} under substitutions in ${shown(ctx.recipePath)}, then ` +
      `${recompile(ctx.opts)}. A battery device's MCU speaks Tuya's low-power protocol, which ESPHome's tuya ` +
      'component does not: such a device stays silent');
  const shownStates = answered.slice(0, 8).map((n) => `${n} ${seen.get(n)}`);
  print(`    ${ok()} the MCU answered: ${shownStates.join(', ')}${answered.length > 8 ? ', …' : ''}` +
    (answered.length < names.length ? ` (${names.length - answered.length} more have not reported yet)` : ''));
}

/** ESPHome entity kinds that have no state until their datapoint is reported. */
const TELLING_DOMAINS = ['sensor', 'binary_sensor', 'text_sensor', 'number', 'select', 'climate'];

/** A template's TuyaMCU entities: their kind and name as the device reports it (substitutions resolved). Pure. */
export function tuyaEntityNames(template: string, subs: Record<string, string>): { domain: string; name: string }[] {
  if (!template) return [];
  return Object.entries(parseTemplate(template)).flatMap(([domain, items]) => asList(items)
    .filter((i) => i.platform === 'tuya')
    .map((i) => ({ domain, name: String(i.name ?? '').replace(SUBSTITUTION, (_, a, b) => subs[a ?? b] ?? '') })))
    .filter((e) => e.name);
}

/**
 * The states a device reports over the encrypted API, by entity name (never throws): listed, subscribed, collected
 * until `enough` says so or `wait` is over. An entity that has no state yet (ESPHome's missing_state) is not there.
 */
async function readDeviceStates(host: string, port: number, encryptionKey: string, wait: number,
  enough: (states: Map<string, string>) => boolean): Promise<Map<string, string>> {
  type Entity = { name: string; type: string; config: { unitOfMeasurement?: string };
    on(e: 'state', f: (s: Record<string, unknown>) => void): void };
  const states = new Map<string, string>();
  return apiSession(host, port, encryptionKey, wait, true, (client, finish) =>
    client.on('newEntity', (entity: Entity) => entity.on('state', (s) => {
      const value = s.state ?? s.value ?? s.speed ?? s.currentTemperature;
      // missing_state, or a climate's temperature not yet reported (NaN)
      if (s.missingState || (typeof value === 'number' && Number.isNaN(value))) return;
      const text = typeof value === 'boolean' ? (value ? 'on' : 'off')
        : typeof value === 'number' ? `${Number(value.toFixed(2))}${entity.config.unitOfMeasurement ?
          ` ${entity.config.unitOfMeasurement}` : ''}` : String(value ?? '');
      states.set(entity.name, text);
      if (enough(states)) finish(states);
    })), () => states);
}

async function planVerify(ctx: Ctx): Promise<string[]> {
  const known = ctx.opts.deviceIp ?? ctx.facts.deviceIp ?? ctx.facts.kickstartIp;
  return [ctx.opts.deviceIp ? `use --device-ip ${ctx.opts.deviceIp}`
    : `mDNS: wait for ${ctx.deviceName}._esphomelib._tcp.local (board ${ctx.substitutions.board})` +
      (known ? `; meanwhile try ${known}, the address it had` : ''),
  `native API <ip>:${setting('FLASH_DEVICE_API_PORT')}: Noise handshake with api_encryption_key (***), then ` +
    `DeviceInfoRequest; the name must be ${ctx.deviceName}`,
  ...(tuyaEntityNames(ctx.template, ctx.substitutions).length ? ['then ListEntities and SubscribeStates until the ' +
    "device's MCU reports a datapoint (a TuyaMCU device works only when it does)"] : [])];
}

/** The flashed plug on mDNS: its new name, an encrypted API, the recipe's board and, once known, its MAC. */
function finalDevice(ctx: Ctx): (d: MdnsDevice) => boolean {
  const mac = macKey(ctx.facts.mac);
  return (d) => d.name === ctx.deviceName && !!d.txt.api_encryption && d.txt.board === ctx.substitutions.board &&
    (!mac || macKey(d.txt.mac) === mac);
}

/**
 * Where the flashed plug answers: --device-ip when given; else whichever comes first of mDNS and the address the
 * plug had (it keeps its MAC, so DHCP usually gives it the same lease; BK72xx mDNS and many home networks are
 * unreliable); when neither answers in time, the user is asked (or, with --yes, told to pass --device-ip).
 */
async function findFlashedPlug(ctx: Ctx, key: string):
  Promise<{ ip: string; port: number; how: string; info?: DeviceInfoResponse | { error: string } }> {
  const apiPort = Number(setting('FLASH_DEVICE_API_PORT'));
  const wait = ms('FLASH_VERIFY_TIMEOUT_MS');
  const given = ctx.opts.deviceIp ? parseDeviceAddress(ctx.opts.deviceIp)! : undefined;
  const known = ctx.facts.deviceIp ?? ctx.facts.kickstartIp;
  const until = Date.now() + wait;
  const done = new AbortController();
  /**
   * The plug at an address: its encrypted API naming it. Right after the upload the address may still answer as
   * Kickstart, or (a lease gone to another device) as something else: asked again until it is the plug. At an
   * address the user gave, a refused key is an answer too, and when time is up the last answer says what is wrong.
   */
  const answersAt = async (ip: string, userSaid: boolean) => {
    let last: DeviceInfoResponse | { error: string } | undefined;
    for (;;) {
      const open = await tcpAnswers(ip, apiPort, 3000);
      last = open ? await readDeviceInfo(ip, apiPort, key, ms('FLASH_API_TIMEOUT_MS')) : undefined;
      if (last && 'name' in last && last.name === ctx.deviceName) return last;
      if (userSaid && last && 'error' in last && /MAC failure|Handshake failure/i.test(last.error)) return last;
      if (Date.now() >= until || done.signal.aborted) break;
      // The last try is at the deadline: it says how things ended. Found another way meanwhile: no more tries.
      await sleep(Math.min(2000, until - Date.now()), AbortSignal.any([done.signal, ctx.scope.signal])).catch(() => {});
      ctx.scope.signal.throwIfAborted();
      if (done.signal.aborted) break;
    }
    return userSaid ? last : undefined;
  };
  try {
    if (given) {
      const info = await withSpinner(`waiting for ${ctx.deviceName} to boot ESPHome at ${given.host} (--device-ip)`,
        untilStopped(answersAt(given.host, true), ctx.scope.signal));
      if (info) return { ip: given.host, port: apiPort, how: '--device-ip', info };
    } else {
      const byMdns = discoverDevice(finalDevice(ctx), wait, undefined, { signal: ctx.scope.signal, stop: done.signal })
        .then((d) => d && { ip: ipv4Of(d.addresses), port: d.port, how: 'mDNS' });
      const byAddress = known ? answersAt(known, false).then((info) => info && { ip: known, port: apiPort,
        how: 'the address it had', info }) : Promise.resolve(undefined);
      const label = `waiting for ${ctx.deviceName} to boot ESPHome and show up ` +
        `(mDNS${known ? `, or at ${known}` : ''})`;
      const found = await withSpinner(label, untilStopped(firstFound([byMdns, byAddress]), ctx.scope.signal));
      if (found) return found;
    }
  } finally {
    done.abort();
  }
  const hint = `if it opens a Wi-Fi network named "${ctx.deviceName}", it could not join yours: join that network ` +
    `(password: ap_password in ${shown(ctx.files.secrets)}) and set the Wi-Fi at http://192.168.4.1; ` +
    'otherwise power-cycle it';
  const where = given ? `at ${given.host}` : `not on mDNS${known ? ` nor at ${known}` : ''}`;
  const what = `${ctx.deviceName} did not answer within ${seconds(wait)} (${where})`;
  if (!unattended(ctx)) print(`    ${warn()} ${what}: ${hint}.`);
  const ip = await askAddress(ctx, `${ctx.deviceName}'s IP address (your router lists it; an empty answer gives up)`,
    { what, hint: `${hint}; if your network blocks mDNS, find the plug in your router's list and give its address: ` +
      rerun(ctx.opts, '--only verify --device-ip IP') });
  return { ip, port: apiPort, how: 'as you said' };
}

/** The first of several searches to find something (undefined when none does). */
function firstFound<T>(searches: Promise<T | undefined>[]): Promise<T | undefined> {
  return new Promise((resolve) => {
    let left = searches.length;
    for (const s of searches) void s.then((v) => (v ? resolve(v) : --left === 0 && resolve(undefined)));
  });
}

/**
 * Connects to ESPHome's native API with the encryption key (the maintained @2colors/esphome-native-api
 * client does the Noise handshake) and reads the device info; never throws.
 */
export async function readDeviceInfo(host: string, port: number, encryptionKey: string, timeout: number):
  Promise<DeviceInfoResponse | { error: string }> {
  return apiSession<DeviceInfoResponse | { error: string }>(host, port, encryptionKey, timeout, false,
    (client, finish) => client.on('deviceInfo', (info: DeviceInfoResponse) => finish(info)), (error) => ({ error }));
}

/** The part of @2colors/esphome-native-api's Client we use (its typings leave out connect, disconnect, events). */
interface ApiClient {
  connect(): void;
  disconnect(): void;
  on(event: string, listener: (arg: never) => void): void;
  connection: { on(event: 'error', listener: () => void): void; pingTimer?: NodeJS.Timeout;
    frameHelper: { on(event: 'close', listener: () => void): void } };
}

/**
 * One session with a device's native API, encrypted with its key (the client does the Noise handshake), its entities
 * listed and subscribed when `entities`. `listen` hooks what it waits for and calls `finish` with the answer; an
 * error, the device closing the connection or `timeout` end it with `ended(why)`. Never throws.
 */
async function apiSession<T>(host: string, port: number, encryptionKey: string, timeout: number, entities: boolean,
  listen: (client: ApiClient, finish: (r: T) => void) => void, ended: (why: string) => T): Promise<T> {
  const { Client } = await import('@2colors/esphome-native-api');
  const client = new Client({ host, port, encryptionKey, reconnect: false, clientInfo: `flash.ts ${VERSION}`,
    initializeListEntities: entities, initializeSubscribeStates: entities }) as unknown as ApiClient;
  let finished = false;
  return new Promise((resolve) => {
    const finish = (r: T) => {
      clearTimeout(timer);
      if (finished) return;
      finished = true;
      try {
        client.disconnect();
      } catch {}
      // disconnect() drops every listener, but a session still setting up fails later on its own (the library
      // waits 5 s for each answer) and reports that as an 'error' event: with no listener it would crash flash.ts,
      // and the ping timer the library starts right after would keep it running.
      const connection = client.connection;
      connection.on('error', () => queueMicrotask(() => clearInterval(connection.pingTimer)));
      resolve(r);
    };
    const timer = setTimeout(() => finish(ended(`no answer within ${seconds(timeout)}`)), timeout);
    listen(client, finish);
    client.on('error', (e: Error) => finish(ended(e?.message ?? String(e))));
    // Closed by the device (a plug rebooting right after the upload ends the session cleanly): no answer will come
    // on this connection.
    client.connection.frameHelper.on('close', () => finish(ended('the device closed the connection')));
    try {
      client.connect();
    } catch (e) {
      finish(ended((e as Error).message));
    }
  });
}

async function tcpAnswers(host: string, port: number, timeout: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => (s.destroy(), resolve(ok));
    s.setTimeout(timeout, () => done(false));
    s.on('connect', () => done(true));
    s.on('error', () => done(false));
  });
}

// ─── doctor: is this machine ready? (the check step runs its checks too) ───

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
  /** Steps that cannot run without this. */
  for: StepName[];
  /** A mistake in the recipe rather than the machine (exit 2 in a run). */
  problem?: Problem;
}

async function runDoctor(ctx: Ctx): Promise<number> {
  print(`${c.bold('flash.ts doctor')} · is this machine ready to flash ${ctx.recipe.model}?`);
  const checks = await doctor(ctx);
  printChecks(checks);
  const failed = checks.filter((k) => !k.ok).length;
  print(failed ? `\n${c.red(`${failed} check${failed > 1 ? 's' : ''} failed`)}: fix them and run doctor again.`
    : `\n${ok()} ${c.green('ready')}`);
  return failed ? EXIT.failed : EXIT.ok;
}

async function doctor(ctx: Ctx): Promise<Check[]> {
  const { opts, recipe } = ctx;
  return Promise.all([
    linuxCheck(), dockerCheck(), wifiAdapterCheck(ctx), sudoCheck(opts.yes), checkoutCheck(opts.cloudcutter),
    profileCheck(ctx), firmwareCheck(recipe, opts.cloudcutter), portsCheck(), esphomeCheck(ctx),
  ]);
}

function printChecks(checks: Check[]): void {
  const width = Math.max(...checks.map((k) => k.name.length)) + 2;
  for (const k of checks) {
    print(`  ${k.ok ? ok() : c.red('✗')} ${k.name.padEnd(width)}${k.detail}`, 4 + width);
    if (!k.ok && k.fix) print(`    ${' '.repeat(width)}${c.yellow('fix:')} ${k.fix}`, 9 + width);
  }
}

async function linuxCheck(): Promise<Check> {
  const ok = process.platform === 'linux';
  const release = (await import('node:os')).release();
  return { name: 'Linux', ok, detail: ok ? `${process.platform} ${release}` : `this is ${process.platform}`,
    fix: 'cloudcutter needs a Linux host (a Raspberry Pi or a Linux laptop; not WSL, not macOS)',
    for: ['cloudcutter', 'kickstart'] };
}

async function dockerCheck(): Promise<Check> {
  const name = 'Docker';
  const docker = await dockerServer();
  if (docker.notFound) return { name, ok: false, detail: 'docker is not installed', for: ['cloudcutter'],
    fix: 'install Docker Engine (https://docs.docker.com/engine/install/), then: sudo systemctl start docker' };
  if (!docker.version) return { name, ok: false, detail: `the Docker daemon is not answering: ${docker.error}`,
    for: ['cloudcutter'],
    fix: 'sudo systemctl start docker (and add yourself to the docker group, or run flash.ts with sudo)' };
  return { name, ok: true, detail: `daemon ${docker.version} answering`, for: ['cloudcutter'] };
}

/** The Docker daemon's version, when one answers. */
async function dockerServer(): Promise<{ version?: string; notFound: boolean; error: string }> {
  const r = await sh(['docker', 'info', '--format', '{{.ServerVersion}}']);
  // `docker info` can exit 0 with the daemon down (it prints the client part and an error): only a
  // server version on stdout means the daemon answered.
  const version = r.code === 0 ? r.stdout.trim() || undefined : undefined;
  return { version, notFound: r.notFound, error: firstLine(r.stderr || r.stdout) || 'no server version' };
}

/** The Wi-Fi devices NetworkManager knows, in its order. */
/** A Wi-Fi adapter as `nmcli device` lists it; `connected` when it carries a connection of this machine. */
/** A Wi-Fi device as NetworkManager lists it; `connected` when it carries a connection now. */
interface WifiAdapter { dev: string; state: string; connected: boolean }

async function wifiAdapters(signal?: AbortSignal): Promise<WifiAdapter[]> {
  return parseWifiAdapters((await sh(['nmcli', '-t', '-f', 'DEVICE,TYPE,STATE', 'device'], { signal })).stdout);
}

export function parseWifiAdapters(nmcliDevice: string): WifiAdapter[] {
  return parseNmcliTerse(nmcliDevice).filter((f) => f[1] === 'wifi')
    .map((f) => ({ dev: f[0], state: f[2] ?? '', connected: /^connected/.test(f[2] ?? '') }));
}

/**
 * The adapter cloudcutter gets: --wifi-iface, else one with AP mode. nmcli lists the adapter carrying this machine's
 * connection first, and a laptop's internal adapter usually has AP mode too: handing it to cloudcutter would cut the
 * machine off (and the compile running beside it), so a free adapter comes first.
 */
async function findApAdapter(adapters: WifiAdapter[], iface?: string, ifaceAp?: Promise<boolean>,
  signal?: AbortSignal): Promise<WifiAdapter | undefined> {
  const candidates = iface ? adapters.filter((a) => a.dev === iface)
    : [...adapters.filter((a) => !a.connected), ...adapters.filter((a) => a.connected)];
  // Asked of all at once; the first in that order wins.
  const capable = await Promise.all(candidates.map((a) => (a.dev === iface && ifaceAp) ||
    supportsApMode(a.dev, signal)));
  return candidates.find((_, i) => capable[i]);
}

/**
 * nmcli, and a Wi-Fi adapter NetworkManager manages whose AP mode is `yes` (cloudcutter hosts an AP on it). The
 * adapter found is the one cloudcutter gets (`-w`) and the Kickstart join uses: with two adapters, cloudcutter's own
 * choice (the first listed) is often the internal one carrying this machine's connection.
 */
async function wifiAdapterCheck(ctx: Ctx): Promise<Check> {
  const name = 'Wi-Fi adapter';
  const iface = ctx.opts.wifiIface;
  const forSteps: StepName[] = ['cloudcutter', 'kickstart'];
  // --wifi-iface's AP mode is asked beside the device list, not after it.
  const ifaceAp = iface ? supportsApMode(iface) : undefined;
  const list = await sh(['nmcli', '-t', '-f', 'DEVICE,TYPE,STATE', 'device']);
  if (list.notFound) return { name, ok: false, detail: "NetworkManager's nmcli is not installed", for: forSteps,
    fix: 'sudo apt install network-manager (cloudcutter drives Wi-Fi through it)' };
  if (list.code !== 0)
    return { name, ok: false, detail: `nmcli failed: ${firstLine(list.stderr)}`,
      fix: 'sudo systemctl start NetworkManager', for: forSteps };
  const adapters = parseWifiAdapters(list.stdout);
  const wifis = adapters.map((a) => a.dev);
  if (iface && !wifis.includes(iface))
    return { name, ok: false, detail: `--wifi-iface ${iface} is not a Wi-Fi device NetworkManager knows (it knows: ` +
      `${wifis.join(', ') || 'none'})`, fix: 'check `nmcli device` and pass one of its wifi devices', for: forSteps };
  if (!wifis.length) return { name, ok: false, detail: 'no Wi-Fi adapter found', for: forSteps,
    fix: 'plug in a USB Wi-Fi adapter that supports AP mode (one you are not using for your own connection)' };
  const found = await findApAdapter(adapters, iface, ifaceAp);
  if (found) {
    const dev = (ctx.adapter = found.dev);
    const others = wifis.filter((w) => w !== dev);
    return { name, ok: true, for: forSteps, detail: `${dev} supports AP mode: cloudcutter gets -w ${dev}` +
      (others.length ? ` (not ${others.join(', ')})` : '') + (iface ? '' : '; --wifi-iface chooses another') +
      (found.connected ? `. It carries this machine's connection now: while cloudcutter flashes, this machine is ` +
        'offline on it (use Ethernet, or a second adapter, if the compile still has to download)' : '') };
  }
  return { name, ok: false, detail: `${(iface ? [iface] : wifis).join(', ')}: AP mode not supported`, for: forSteps,
    fix: 'use a Wi-Fi adapter whose `nmcli -f wifi-properties device show IFACE` says AP: yes' };
}

async function sudoCheck(yes: boolean): Promise<Check> {
  if (process.getuid?.() === 0) return { name: 'sudo', ok: true, detail: 'running as root', for: ['cloudcutter'] };
  const r = await sh(['sudo', '-n', 'true']);
  if (r.notFound)
    return { name: 'sudo', ok: false, detail: 'sudo is not installed', fix: 'install sudo, or run flash.ts as root',
      for: ['cloudcutter'] };
  if (r.code === 0) return { name: 'sudo', ok: true, detail: 'available', for: ['cloudcutter'] };
  // It will ask for a password in cloudcutter's terminal: fine with a person there, not with --yes.
  return { name: 'sudo', ok: !yes, detail: 'available (it will ask for your password)', for: ['cloudcutter'],
    fix: 'run `sudo -v` first (sudo then remembers your password for a while), or run without --yes' };
}

async function checkoutCheck(dir: string): Promise<Check> {
  const ok = fs.existsSync(path.join(dir, 'tuya-cloudcutter.sh'));
  return { name: 'cloudcutter checkout', ok, detail: ok ? shown(dir) : `no tuya-cloudcutter.sh in ${shown(dir)}`,
    fix: cloneHint(dir), for: ['cloudcutter'] };
}

/** The recipe's profile exists in cloudcutter's list (from the API, or the cached copy when offline). */
async function profileCheck(ctx: Ctx): Promise<Check> {
  const name = 'cloudcutter profile';
  try {
    const r = await resolveProfile(ctx, true);
    // cloudcutter needs some device of the profile's; one the recipe did not name is no news to the user.
    const device = ctx.recipe.cloudcutter.device ? `, device ${r.deviceSlug}` : '';
    return { name, ok: true, detail: `${r.label} (${r.profileSlug})${device}`, for: ['cloudcutter'] };
  } catch (e) {
    if (e instanceof InputError)
      return { name, ok: false, detail: formatProblem(e.problems[0]).split('\n')[0], fix: e.problems[0].hint,
        for: ['cloudcutter'], problem: e.problems[0] };
    if (e instanceof Failure) return { name, ok: false, detail: e.message, fix: e.hint, for: ['cloudcutter'] };
    throw e;
  }
}

async function firmwareCheck(recipe: Recipe, dir: string): Promise<Check> {
  const name = 'Kickstart firmware';
  try {
    const k = resolveKickstart(recipe, dir);
    return { name, ok: true, detail: `${k.file} (${MCUS[recipe.mcu].chip})`, for: ['cloudcutter'] };
  } catch (e) {
    if (e instanceof Failure) return { name, ok: false, detail: e.message, fix: e.hint, for: ['cloudcutter'] };
    throw e;
  }
}

async function portsCheck(): Promise<Check> {
  const name = 'free ports';
  const held = await listeningPorts();
  if (!held)
    return { name, ok: false, detail: 'cannot list listening ports (ss failed)', fix: 'install iproute2',
      for: ['cloudcutter'] };
  // flash.ts answers cloudcutter's question about a harmless one with Skip.
  const harmless = held.filter(harmlessListener);
  const busy = held.filter((b) => !harmless.includes(b));
  const note = harmless.length ? ` (${harmless.map((b) => `${b.port}/${b.proto}: ${b.process} on loopback only, fine`)
    .join('; ')})` : '';
  if (!busy.length)
    return { name, ok: true, detail: CLOUDCUTTER_PORTS.map((p) => `${p.port}/${p.proto}`).join(' ') + note,
      for: ['cloudcutter'] };
  // This machine's own DNS is never to be stopped: `docker build` and the profile download need it.
  const stoppable = [...new Set(busy.map((b) => b.process.split(' ')[0]))].filter((p) => !/^systemd-resolve/.test(p));
  const detail = busy.map((b) => `${b.port}/${b.proto} held by ${b.process} on ${b.addresses.join(', ')}`).join('; ');
  return { name, ok: false, detail, for: ['cloudcutter'],
  fix: (stoppable.length ? `stop ${stoppable.length > 1 ? 'those services' : 'that service'} while flashing ` +
    `(e.g. sudo systemctl stop ${stoppable.join(' ')}); ` : '') +
    (stoppable.length < new Set(busy.map((b) => b.process)).size
    ? 'make systemd-resolved listen on 127.0.0.53 only, its default (no DNSStubListenerExtra); ' : '') +
    'flash.ts never stops them itself' };
}

/** A port cloudcutter needs, held by a program, on the addresses it listens on. */
interface Listener { port: number; proto: string; process: string; addresses: string[]; loopbackOnly: boolean }

/** Which of cloudcutter's ports are in use now; undefined when `ss` cannot list them. */
async function listeningPorts(signal?: AbortSignal): Promise<Listener[] | undefined> {
  const r = await sh(['ss', '-H', '-l', '-n', '-t', '-u', '-p'], { signal });
  return r.notFound || r.code !== 0 ? undefined : busyPorts(r.stdout);
}

/**
 * A DNS server for this machine alone (systemd-resolved on 127.0.0.53) is no conflict: cloudcutter's own DNS
 * listens on its access point's address. Pure.
 */
function harmlessListener(b: Listener): boolean {
  return b.port === 53 && b.loopbackOnly;
}

/** Which of cloudcutter's ports `ss -H -lntup` shows in use, by what, and on which addresses. Pure. */
export function busyPorts(ssOutput: string): Listener[] {
  const found = new Map<string, Listener>();
  for (const line of ssOutput.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const proto = cols[0];
    const local = cols[4];
    const port = Number(local.slice(local.lastIndexOf(':') + 1));
    if (!CLOUDCUTTER_PORTS.some((p) => p.port === port && p.proto === proto)) continue;
    const address = local.slice(0, local.lastIndexOf(':')).replace(/%.*$/, '').replace(/^\[|\]$/g, '');
    const loopback = /^127\.|^::1$/.test(address);
    const users = line.match(/users:\(\("([^"]+)",pid=(\d+)/);
    const key = `${port}/${proto}`;
    const entry = found.get(key) ?? { port, proto, process: users ? `${users[1]} (pid ${users[2]})` : 'another program',
      addresses: [], loopbackOnly: true };
    entry.addresses.push(address);
    entry.loopbackOnly &&= loopback;
    found.set(key, entry);
  }
  return [...found.values()];
}

async function esphomeCheck(ctx: Ctx): Promise<Check> {
  const name = 'ESPHome';
  const mode = ctx.opts.esphome;
  const esphome = await findEsphome(ctx);
  const wrong = esphome?.version ? esphomeProblems(ctx.template, esphome.version) : [];
  if (esphome && wrong.length)
    return { name, ok: false, for: ['compile', 'upload'], detail: `${esphome.describe}: ${wrong.join('; ')}`,
      fix: 'pipx upgrade esphome (or: pip install -U esphome), or --esphome docker for the newest release' };
  if (esphome) return { name, ok: true, detail: esphome.describe, for: ['compile', 'upload'] };
  return { name, ok: false, for: ['compile', 'upload'],
    detail: mode === 'docker' ? `the ${ESPHOME_IMAGE} image is not available (Docker not answering?)`
      : `no esphome command, and no Docker to run ${ESPHOME_IMAGE}`,
    fix: `pipx install esphome (or: pip install esphome), or start Docker: flash.ts then runs ${ESPHOME_IMAGE}` };
}

/** How ESPHome runs here; `version` when the CLI said it (the Docker image is the newest release). */
type Esphome = { kind: 'local' | 'docker'; describe: string; version?: string };

/**
 * What a template uses that some ESPHome releases do not have or get wrong (from ESPHome's changelogs): each with
 * the releases it needs.
 */
export const ESPHOME_NEEDS: { uses: string; in: (config: Yaml) => boolean; works: (v: number[]) => boolean;
  needs: string }[] = [
  { uses: 'a latching relay (the hbridge switch)', needs: 'ESPHome 2024.12.0 or later',
    in: (c) => asList(c.switch).some((s) => s.platform === 'hbridge'),
    works: (v) => compareVersions(v, [2024, 12]) >= 0 },
  { uses: 'a TuyaMCU select', needs: 'any release but 2025.5.0 (it sends every tuya select to datapoint 1)',
    in: (c) => asList(c.select).some((s) => s.platform === 'tuya'),
    works: (v) => compareVersions(v, [2025, 5, 0]) !== 0 },
];

/** An ESPHome template as data (`!secret` kept as a tag). Pure. */
function parseTemplate(template: string): Yaml {
  return (lib.yaml.parse(template, { customTags: [SECRET_TAG] }) ?? {}) as Yaml;
}

/** What the ESPHome `version` gets wrong for this template ("… needs …"), in words. Pure. */
export function esphomeProblems(template: string, version: string): string[] {
  const config = parseTemplate(template);
  const v = version.split('.').map((n) => Number.parseInt(n, 10) || 0);
  return ESPHOME_NEEDS.filter((n) => n.in(config) && !n.works(v))
    .map((n) => `${version} cannot do ${n.uses}: it needs ${n.needs}`);
}

function asList(v: unknown): Yaml[] {
  return Array.isArray(v) ? v as Yaml[] : v && typeof v === 'object' ? [v as Yaml] : [];
}

/** How to run ESPHome here: the local CLI, or the Docker image (kept once found; not found is asked again). */
async function findEsphome(ctx: Ctx): Promise<Esphome | undefined> {
  const mode = ctx.opts.esphome;
  if (!ctx.esphome && mode !== 'docker') {
    const r = await sh(['esphome', 'version']);
    const version = /(\d+\.\d+\.\d+\S*)/.exec(r.stdout)?.[1];
    if (!r.notFound && r.code === 0)
      ctx.esphome = { kind: 'local', describe: `esphome CLI, ${r.stdout.trim().replace(/^Version:\s*/, 'version ')}`,
        version };
  }
  if (!ctx.esphome && mode !== 'local' && (await dockerServer()).version)
    ctx.esphome = { kind: 'docker', describe: `Docker image ${ESPHOME_IMAGE} (pulled on first use)` };
  return ctx.esphome;
}

/** Rows of `nmcli -t` output, split on unescaped colons. Pure. */
export function parseNmcliTerse(out: string): string[][] {
  return out.split('\n').filter(Boolean).map((line) => line.split(/(?<!\\):/).map((f) => f.replace(/\\:/g, ':')));
}

// ─── profiles: the cloudcutter profiles a recipe may name ───

/** `flash.ts profiles [WORDS]`: labels and slugs from cloudcutter's list, those matching every word. */
async function listProfiles(words: string[], scope: RunScope): Promise<number> {
  const list = (await cloudcutterApiGet('profiles.json', { signal: scope.signal })) as ProfileEntry[];
  const rows = matchProfiles(list, words);
  if (!rows.length) {
    print(`no profile matches ${words.join(' ')} (of ${list.length}); try fewer words, e.g. a chip (bk7231n) or a ` +
      'version (1.1.8)');
    return EXIT.failed;
  }
  print(formatTable([['label (for cloudcutter.profile)', 'slug'], ...rows.map((p) => [profileLabel(p), p.slug])]));
  print(c.dim(`\n${rows.length} of ${list.length} profiles. Either column goes in a recipe's cloudcutter.profile.`));
  return EXIT.ok;
}

/** The profiles whose label or slug contains every word (case-insensitive), sorted by label. Pure. */
export function matchProfiles(list: ProfileEntry[], words: string[]): ProfileEntry[] {
  const want = words.map((w) => w.toLowerCase());
  return list.filter((p) => want.every((w) => `${profileLabel(p)} ${p.slug}`.toLowerCase().includes(w)))
    .sort((a, b) => profileLabel(a).localeCompare(profileLabel(b), 'en', { numeric: true }));
}

/** The label cloudcutter's "By firmware version and name" menu shows. */
function profileLabel(p: { name: string; sub_name?: string }): string {
  return `${p.name} / ${p.sub_name ?? ''}`;
}

// ─── recipe: a recipe from Tuya's own configuration ───
// A Tuya device carries its wiring as data: the pin configuration Tuya's firmware keeps (user_param_key, which
// cloudcutter's device list calls device_configuration) and, on a device with a second MCU, the datapoints that MCU
// speaks. mapTuya() turns that into a recipe and an ESPHome template one kind of hardware at a time (HARDWARE, below);
// it is pure and knows nothing of where the configuration came from. `flash.ts recipe` finds the configuration (a
// device in cloudcutter's list, a file on disk), checks what comes out as any recipe is checked, and writes it.

/** An entry of cloudcutter's devices.json. */
interface DeviceEntry { slug: string; manufacturer: string; name: string }

/** Where `flash.ts recipe` found a device's Tuya configuration, and the stock firmware it can run. */
interface RecipeSource {
  config: TuyaConfig;
  origin: RecipeOrigin;
  /** The cloudcutter profiles it is known with (a device in cloudcutter's list), first the usual one. */
  profiles: ProfileEntry[];
  /** Where a problem in it is reported. */
  file: string;
}

/** How the recipe command is run: where it writes, what the command line says, who answers its questions. */
interface RecipeRun extends Asking { dir: string; profile?: string; name?: string }

async function runRecipeCommand(words: string[], o: { dir: string; yes: boolean; profile?: string; name?: string;
  scope: RunScope }): Promise<number> {
  const run: RecipeRun = { ...o, opts: { yes: o.yes } };
  if (!words.length && o.profile) return writeFromPlugRecipe(run);
  const source = await recipeSource(words, run);
  const profile = await recipeProfile(source, o.profile, run);
  if (!profile) {
    const chip = source.config.chip?.toLowerCase() ??
      BOARDS[String(source.config.keys.module ?? '').toLowerCase()]?.mcu ?? 'bk7231n';
    throw new InputError([{ file: 'command line', field: '--profile', message: `${source.origin.source} does not say ` +
      'which stock firmware the device runs, and cloudcutter needs it to take the device over',
    hint: `add --profile LABEL: the firmware version the app shows under Device Update, as \`${flashCommand()} ` +
      `profiles ${chip}\` lists them (e.g. "1.1.8 - BK7231N / oem_bk7231n_plug")` }]);
  }
  const config = { ...source.config, chip: source.config.chip ?? profile?.chip };
  const origin = { ...source.origin, profile: profile?.label,
    otherProfiles: source.profiles.map(profileLabel).filter((l) => l !== profile?.label) };
  const dir = path.resolve(o.dir);
  const schema = path.relative(dir, path.join(HOME_DIR, 'recipes', 'recipe.schema.json')).split(path.sep).join('/');
  const made = recipeFor(config, origin, schema);
  if (!made.ok)
    throw new InputError([{ file: source.file, field: made.key, message: `no recipe: ${made.reason}`,
      hint: 'nothing was written; a recipe can still be written by hand (README: "Adding a plug")' }]);

  const recipeFile = path.join(dir, `${config.slug}.yaml`);
  const templateFile = path.join(dir, `${config.slug}.esphome.yaml`);
  const existing = [recipeFile, templateFile].filter((f) => fs.existsSync(f));
  if (existing.length && !(await confirm('recipe_overwrite', `${shown(existing[0])} exists. Overwrite it?`, run,
    false)))
    return print(`    nothing was written: move ${shown(existing[0])} away, or write elsewhere with --recipes DIR`),
    EXIT.failed;
  fs.mkdirSync(dir, { recursive: true });
  // Checked as any recipe is, before it replaces anything: written aside, loaded, then renamed into place.
  const aside = (f: string) => path.join(dir, `.${path.basename(f)}.${process.pid}.tmp`);
  let recipe: Recipe;
  try {
    fs.writeFileSync(aside(recipeFile), made.recipe);
    recipe = loadRecipe(aside(recipeFile)).recipe;
    checkTemplate(made.template, templateFile, substitutionsFor(recipe), {});
    fs.writeFileSync(aside(templateFile), made.template);
    fs.renameSync(aside(templateFile), templateFile);
    fs.renameSync(aside(recipeFile), recipeFile);
  } finally {
    for (const f of [recipeFile, templateFile]) fs.rmSync(aside(f), { force: true });
  }
  const m = made.mapping;
  print(`${ok()} ${config.title} (${MCUS[recipe.mcu].chip}, ${recipe.substitutions.board}` +
    `${profile ? `, firmware ${profile.label.split(' / ')[0]}` : ''}): ${m.kinds.join(', ')}`);
  print(`    recipe    ${recipeFile}`);
  print(`    template  ${templateFile}`);
  print(`    pins      ${Object.entries(recipe.pins).map(([fn, p]) => `${fn} ${p}`).join(', ') || 'none'}`);
  if (config.lowPower)
    print(`    ${warn()} ${c.yellow("a battery device (Tuya's low-power firmware): ESPHome's tuya component does not " +
      'speak its MCU\'s protocol; read the note in the recipe before you flash it')}`);
  const notes = m.remarks.filter((r) => !r.startsWith('  ')).length;
  if (notes) print(c.dim(`    ${notes} note${notes > 1 ? 's' : ''} on the mapping (what the configuration claimed ` +
    'and what was made of it) at the end of the recipe'));
  if (made.unmapped.length)
    print(c.dim(`    ${made.unmapped.length} Tuya keys not mapped are listed at the end of the recipe`));
  if (m.pins.some((p) => roleOf(p.fn).check !== 'leave')) {
    print(`\nThe pins come from Tuya's data: check them on the device before the final firmware goes on:`);
    print(`    ${flashCommand()} ${shq(shown(recipeFile))} --check-pins`);
  } else {
    print(`\nNothing to check pin by pin: once ESPHome runs, verify shows what the device answers. Flash it with:`);
    print(`    ${flashCommand()} ${shq(shown(recipeFile))}`);
  }
  return EXIT.ok;
}

/**
 * `flash.ts recipe --profile LABEL --name NAME`: a recipe for a plug nobody listed, whose pins come from the plug's
 * own flash. Its run takes the plug over, reads Tuya's storage once Kickstart runs, writes the pins and the template
 * into the recipe, and goes on.
 */
async function writeFromPlugRecipe(o: RecipeRun): Promise<number> {
  if (!o.name)
    throw new InputError([{ file: 'command line', field: '--name', message: 'a recipe for the plug needs a name',
      hint: `e.g. ${flashCommand()} recipe --profile "${o.profile}" --name "Kitchen plug"` }]);
  const profile = await recipeProfile({ config: { title: o.name, slug: '', keys: {} }, file: 'command line',
    profiles: [], origin: { source: 'the plug' } }, o.profile, o);
  const mcu = profile?.chip.toLowerCase() as Mcu;
  if (!profile || !(mcu in MCUS))
    throw new InputError([{ file: 'command line', field: '--profile', message: `"${o.profile}" is not firmware for ` +
      'a Beken BK7231T/N', hint: `\`${flashCommand()} profiles bk7231n\` (or bk7231t) lists the ones that are` }]);
  const slug = deviceName(o.name) || 'tuya-plug';
  const dir = path.resolve(o.dir);
  const file = path.join(dir, `${slug}.yaml`);
  if (fs.existsSync(file))
    throw new InputError([{ file: shown(file), message: 'already exists; a recipe is never overwritten here',
      hint: 'pick another --name, or write elsewhere with --recipes DIR' }]);
  const schema = path.relative(dir, path.join(HOME_DIR, 'recipes', 'recipe.schema.json')).split(path.sep).join('/');
  const scalar = (v: unknown) => lib.yaml.stringify(v, { lineWidth: 0 }).trimEnd();
  const text = [
    `# yaml-language-server: $schema=${schema}`,
    "# Written by `flash.ts recipe --profile`: the pins come from the plug's own flash (Tuya's storage), read once",
    '# Kickstart runs on it; the run writes them, and the ESPHome template, into this file.',
    `model: ${scalar(o.name)}`,
    `mcu: ${mcu}`,
    'kickstart: auto',
    'cloudcutter:',
    `  profile: ${scalar(profile.label)}`,
    'ap_mode: >-',
    ...wrap(AP_MODE.button, 100).map((l) => `  ${l}`),
    `esphome: ${slug}.plug.esphome.yaml`,
    'wiring: from the plug',
    'pins: {}',
    'substitutions:',
    `  device_name: ${slug}`,
    `  friendly_name: ${scalar(o.name)}`,
    '  default_state: RESTORE_DEFAULT_OFF',
  ].join('\n') + '\n';
  fs.mkdirSync(dir, { recursive: true });
  writeFileAtomic(file, text);
  loadRecipe(file);
  print(`${ok()} ${o.name} (${MCUS[mcu].chip}, firmware ${profile.label.split(' / ')[0]}): its pins come from the ` +
    'plug');
  print(`    recipe    ${file}`);
  print(`\nFlash it: the run reads the plug's wiring once Kickstart runs on it, writes it into the recipe and goes on`);
  print(`(the firmware is compiled after that, not while cloudcutter runs):`);
  print(`    ${flashCommand()} ${shq(shown(file))} --check-pins`);
  return EXIT.ok;
}

/**
 * The Tuya configuration `flash.ts recipe` was given: a file on disk (a cloudcutter device file), or words naming a
 * device in cloudcutter's list.
 */
async function recipeSource(words: string[], run: RecipeRun): Promise<RecipeSource> {
  const wanted = words.flatMap((w) => w.split(/\s+/)).filter(Boolean);
  if (words.length === 1 && fs.existsSync(words[0]) && fs.statSync(words[0]).isFile())
    return recipeFromFile(words[0], run.name);
  if (!wanted.length) throw new InputError([{ file: 'command line', field: 'DEVICE', message: 'no device given',
    hint: `${flashCommand()} recipe "ledvance plug" (a maker and a name, or a device slug from cloudcutter\'s list; ` +
      'or a device file)' }]);
  const list = (await cloudcutterApiGet('devices.json', { signal: run.scope.signal })) as DeviceEntry[];
  const entry = await pickDevice(list, wanted, run);
  const device = (await cloudcutterApiGet(`devices/${entry.slug}.json`, { signal: run.scope.signal })) as DeviceFile;
  return fromDeviceFile(device, `cloudcutter's ${device.slug}.json`);
}

/**
 * A file on disk with a device's Tuya configuration, in any of the shapes the tools around Tuya devices write: a
 * cloudcutter device file, a flash dump (Tuya's storage is read from it), the storage JSON bk7231tools prints
 * (`{"user_param_key": {...}, "gw_bi": ...}`), or Tuya's user_param_key itself (its loose JSON, or plain JSON).
 */
function recipeFromFile(file: string, name?: string): RecipeSource {
  const bytes = fs.readFileSync(file);
  const what = name ?? path.basename(file).replace(/\.[^.]+$/, '').replace(/[_-]?(storage|user_param_key|dump)$/i, '');
  const slug = deviceName(what) || 'tuya-device';
  const binary = bytes.subarray(0, 4096).some((b) => b === 0 || b > 0xf4);
  const data = binary ? undefined : parseTuyaJson(bytes.toString('utf8').trim());
  const object = data && typeof data === 'object' && !Array.isArray(data) ? data as Record<string, unknown> : undefined;
  const from = (source: string, config: TuyaConfig): RecipeSource =>
    ({ config, file: shown(file), profiles: [], origin: { source } });
  if (object && ('device_configuration' in object || 'schemas' in object)) {
    const device = object as unknown as DeviceFile;
    return fromDeviceFile({ ...device, slug: device.slug ?? slug }, shown(file));
  }
  if (object && ['user_param_key', 'gw_bi', 'baud_cfg', 'uart_adapt_params'].some((k) => k in object))
    return from(`the storage JSON ${path.basename(file)}`, tuyaFromStorage(object, what, slug));
  if (object && ['Jsonver', 'jv', 'crc', 'sw', 'module'].some((k) => k in object))
    return from(`Tuya's user_param_key in ${path.basename(file)}`,
      tuyaFromStorage({ user_param_key: object }, what, slug));
  if (binary) {
    // A whole flash, or any piece of one that starts on a 4 KiB boundary.
    const storage = readTuyaStorage(bytes);
    if (!storage.found) throw new InputError([{ file: shown(file), message: `a flash dump without Tuya's storage: ` +
      storage.why, hint: 'give a dump of the whole 2 MiB flash (bk7231tools read_flash, or --backup-flash), or the ' +
      'device\'s storage JSON' }]);
    for (const p of storage.problems) print(`    ${warn()} ${p}`);
    return from(`the flash dump ${path.basename(file)} (Tuya's storage at 0x${storage.offset.toString(16)})`,
      tuyaFromStorage(storage.values, what, slug));
  }
  throw new InputError([{ file: shown(file), message: 'not a device file, flash dump, storage JSON or user_param_key',
    hint: 'give a cloudcutter device file, a flash dump (.bin), the storage JSON bk7231tools prints, or Tuya\'s ' +
      'user_param_key text; or a device\'s name in cloudcutter\'s list' }]);
}

/** A cloudcutter device file (from its list, or on disk), as a recipe source. */
function fromDeviceFile(device: DeviceFile, file: string): RecipeSource {
  // A device file from cloudcutter's repository names its profiles by slug; its API files carry their labels.
  const profiles = (device.profiles ?? []).map((p) => typeof p === 'string'
    ? { slug: p, name: p } as ProfileEntry : p);
  return { config: tuyaFromCloudcutter(device, profiles[0]?.slug ?? ''), file, profiles,
    origin: { source: `cloudcutter's device file ${device.slug}`, device: device.slug } };
}

/**
 * The stock firmware the recipe's cloudcutter run targets: --profile, else the device's only one, else the user's
 * choice (the app shows the firmware version); its chip from cloudcutter's profile file (or, offline, its label).
 */
async function recipeProfile(source: RecipeSource, wanted: string | undefined, run: Asking):
  Promise<{ label: string; chip: string } | undefined> {
  let entry = source.profiles[0];
  const signal = run.scope.signal;
  if (wanted) {
    const list = (await cloudcutterApiGet('profiles.json', { signal })) as ProfileEntry[];
    const found = findProfile(list, wanted);
    if (!found) throw new InputError([{ file: 'command line', field: '--profile',
      message: `"${wanted}" is not a profile in cloudcutter's list`,
      hint: `\`${flashCommand()} profiles\` lists them (a label like "1.1.8 - BK7231N / oem_bk7231n_plug", or a ` +
        'slug)' }]);
    entry = found;
  } else if (source.profiles.length > 1) {
    const choices = source.profiles.map(profileLabel);
    const label = await ask({ id: 'recipe_profile', kind: 'select', message: `${source.config.title} comes with ` +
      'several stock firmware versions. Which does yours run? (the app shows it under Device Update)',
    choices, unattended: choices[0] }, run);
    entry = source.profiles.find((p) => profileLabel(p) === label)!;
  }
  if (!entry) return undefined;
  const profile = await cloudcutterApiGet(`profiles/${entry.slug}.json`, { optional: true, quiet: true, signal }) as
    ProfileFile | undefined;
  // Offline, the chip is in the label ("1.1.8 - BK7231N") or the slug (bk7231s is Tuya's name for the T).
  const chip = profile?.firmware?.chip ?? /bk7231[tns]/i.exec(`${entry.name} ${entry.slug}`)?.[0].toUpperCase()
    .replace('BK7231S', 'BK7231T') ?? '';
  const label = profile ? profileLabel(profile) : entry.sub_name ? profileLabel(entry) : entry.slug;
  return { label, chip };
}

/** The device the words name: a slug, or the one entry whose maker, name and slug hold every word. */
async function pickDevice(list: DeviceEntry[], words: string[], run: Asking): Promise<DeviceEntry> {
  const found = matchDevices(list, words);
  if (found.length === 1) return found[0];
  const show = (d: DeviceEntry) => `${d.manufacturer} ${d.name} (${d.slug})`;
  if (!found.length) {
    const near = nearDevices(list, words).map(show);
    throw new InputError([{ file: 'command line', field: 'DEVICE',
      message: `no device in cloudcutter's list matches "${words.join(' ')}"`,
      hint: near.length ? `did you mean one of these?${near.map((n) => `\n      ${n}`).join('')}`
        : 'try fewer or other words (a maker, a model)' }]);
  }
  if (unattended(run))
    throw new InputError([{ file: 'command line', field: 'DEVICE', message: `${found.length} devices match ` +
      `"${words.join(' ')}": ${found.slice(0, 12).map(show).join('; ')}${found.length > 12 ? '; …' : ''}`,
    hint: 'add words, or give the slug' }]);
  const choice = await ask({ id: 'recipe_device', kind: 'select', message: `${found.length} devices match. Which one?`,
    choices: found.slice(0, 30).map(show) }, run);
  return found.find((d) => show(d) === choice)!;
}

/** Devices whose maker, name and slug hold every word (case-insensitive); an exact slug alone. Pure. */
export function matchDevices(list: DeviceEntry[], words: string[]): DeviceEntry[] {
  const exact = list.filter((d) => words.length === 1 && d.slug === words[0]);
  if (exact.length) return exact;
  const want = words.map((w) => w.toLowerCase());
  return list.filter((d) => want.every((w) => `${d.manufacturer} ${d.name} ${d.slug}`.toLowerCase().includes(w)));
}

/** Up to five devices sharing the most words with the ones given (for "did you mean"). Pure. */
function nearDevices(list: DeviceEntry[], words: string[]): DeviceEntry[] {
  const want = words.map((w) => w.toLowerCase());
  const score = (d: DeviceEntry) => {
    const text = `${d.manufacturer} ${d.name} ${d.slug}`.toLowerCase();
    return want.filter((w) => text.includes(w) || text.split(/[\s-]+/).some((t) => nearest(w, [t]))).length;
  };
  return list.map((d) => ({ d, s: score(d) })).filter((x) => x.s > 0).sort((a, b) => b.s - a.s).slice(0, 5)
    .map((x) => x.d);
}

/** A cloudcutter device file (api/devices/<slug>.json): the parts read here. */
export interface DeviceFile {
  slug: string;
  manufacturer: string;
  name: string;
  profiles: { slug: string; name: string; sub_name?: string }[];
  device_configuration?: Record<string, unknown>;
  /** TuyaMCU devices: the baud rate their MCU talks at. */
  tuyamcu_baud?: string | number;
  /** The datapoints the device speaks, under its Tuya schema id. */
  schemas?: Record<string, SchemaEntry[]>;
}

/** A cloudcutter profile file (api/profiles/<slug>.json): its label and the chip its firmware is for. */
export interface ProfileFile {
  slug: string;
  name: string;
  sub_name?: string;
  firmware: { chip: string };
}

/** Tuya's configuration of one device, whatever it was read from. */
export interface TuyaConfig {
  /** The device as people call it ("MOES MS-105 Dimmer Switch"): the recipe's model and friendly name. */
  title: string;
  /** A file-name-safe name: the recipe's files, and (shortened) the device name. */
  slug: string;
  /** The chip, when something says (a cloudcutter profile's firmware.chip); else the module's name tells. */
  chip?: string;
  /** Tuya's pin configuration: user_param_key (device_configuration in cloudcutter's device files). */
  keys: Record<string, unknown>;
  /** A TuyaMCU device: the baud rate its MCU talks at (when known) and the datapoints it speaks. */
  mcu?: { baud?: number; datapoints: Datapoint[] };
  /** A battery device's firmware (Tuya's low-power one): its MCU speaks the low-power serial protocol. */
  lowPower?: boolean;
}

/** One datapoint of a TuyaMCU device (cloudcutter's `schemas`; Tuya's schema model has the same fields). */
export interface Datapoint {
  id: number;
  type: 'bool' | 'value' | 'enum' | 'string' | 'raw' | 'bitmap';
  /** rw: the device reports it and takes commands; ro: reports only; wr: takes commands only. */
  mode: 'rw' | 'ro' | 'wr';
  min?: number;
  max?: number;
  /** The value is an integer of 10^-scale units (a temperature of 215 with scale 1 is 21.5). */
  scale?: number;
  step?: number;
  /** An enum's options, in the order of their numbers. */
  range?: string[];
  unit?: string;
}

/** What mapTuya() makes of a device: everything its recipe and template say. */
export interface Mapping {
  mcu: Mcu;
  board: string;
  /** Why the board is the chip's generic one (no module, an unknown module...). */
  boardNote?: string;
  pins: RecipePin[];
  subs: [name: string, value: string | number][];
  /** The template's sections after the common part (ESPHome components, in order). */
  sections: Yaml;
  /** Lines for the template's header comment. */
  notes: string[];
  /** Lines for the recipe's comments: what the configuration claimed that the wiring does not bear out, choices. */
  remarks: string[];
  /** The kinds of hardware found, in HARDWARE's words (for the recipe command's summary). */
  kinds: string[];
  /** The keys of the configuration the mapping read, with their values (the recipe keeps them as `tuya:`). */
  keys: Record<string, string | number | boolean>;
  /** Keys not used, as comment lines (wiring first). */
  unmapped: string[];
  unmappedKeys: string[];
  /** How the user puts it into AP mode, in cloudcutter's words for its kind of device. */
  apMode: string;
}

export interface RecipePin { fn: string; pin: string; note?: string }

type Yaml = Record<string, unknown>;

/** Why a device is refused; thrown while mapping and returned as `{ ok: false }`. */
class Refusal extends Error {
  constructor(message: string, readonly key?: string) { super(message); }
}

/** The keys of an SM2135's colour and white currents, one pair per firmware generation. */
const SM2135_CURRENTS = ['ehccur', 'ehwcur', 'iicccur', 'iicwcur', 'campere', 'wampere'];
/** Tuya's `dmod` (LibreTiny "Tuya Pinout Config"): 0 PWM; 2–7 an LED driver chip ESPHome has an output for. */
const LIGHT_DRIVERS: Record<number, { platform: string; chip: string; currents: string[] }> = {
  2: { platform: 'sm2135', chip: 'SM2135E', currents: SM2135_CURRENTS },
  3: { platform: 'sm2135', chip: 'SM2135EH', currents: SM2135_CURRENTS },
  4: { platform: 'sm2135', chip: 'SM2135EJ', currents: SM2135_CURRENTS },
  5: { platform: 'bp1658cj', chip: 'BP1658CJ', currents: ['cjccur', 'cjwcur'] },
  6: { platform: 'bp5758d', chip: 'BP5758D', currents: ['drgbcur', 'dccur', 'dwcur'] },
  7: { platform: 'sm2235', chip: 'SM2235/SM2335', currents: ['2235ccur', '2235wcur'] },
};

/** Energy chips by `chip_type`: 3 is what real files carry for the BL0942 (LibreTiny's table says 4). */
const ENERGY_CHIPS: Record<number, 'BL0937' | 'HLW8012' | 'HLW8032' | 'BL0942'> =
  { 0: 'BL0937', 1: 'HLW8012', 2: 'HLW8032', 3: 'BL0942', 4: 'BL0942' };

/** Light channels: the Tuya letter (`r_pin`, `iicr`) and the recipe's pin function (and the colour it lights). */
type Channel = keyof typeof CHANNELS;

/**
 * The ESPHome light platform for the channels a light has wired (with cwtype 1 the c and w pins are brightness and
 * colour temperature), and the key each channel feeds. Keyed by the channels, not by Tuya's `cmod`: a configuration
 * whose cmod names more channels than are wired gets the light its wiring makes.
 */
const LIGHT_PLATFORMS: Record<string, { platform: string; keys: Partial<Record<Channel, string>> }> = {
  rgbcw: { platform: 'rgbww', keys: { r: 'red', g: 'green', b: 'blue', c: 'cold_white', w: 'warm_white' } },
  'rgbcw/ct': { platform: 'rgbct', keys: { r: 'red', g: 'green', b: 'blue', c: 'white_brightness',
    w: 'color_temperature' } },
  rgbc: { platform: 'rgbw', keys: { r: 'red', g: 'green', b: 'blue', c: 'white' } },
  rgbw: { platform: 'rgbw', keys: { r: 'red', g: 'green', b: 'blue', w: 'white' } },
  rgb: { platform: 'rgb', keys: { r: 'red', g: 'green', b: 'blue' } },
  cw: { platform: 'cwww', keys: { c: 'cold_white', w: 'warm_white' } },
  'cw/ct': { platform: 'color_temperature', keys: { c: 'brightness', w: 'color_temperature' } },
  c: { platform: 'monochromatic', keys: { c: 'output' } },
  w: { platform: 'monochromatic', keys: { w: 'output' } },
  'c/ct': { platform: 'monochromatic', keys: { c: 'output' } },
};

/** A TuyaMCU device's own keys in its configuration: the MCU's baud rate and the version of that setting. */
const TUYAMCU_KEYS = /^(wifi_bdrate|wifi_cofig_ver)$/;

/** Housekeeping keys (checksums, versions, cloud data points, Tuya's own behaviour): not wiring, not listed. */
const HOUSEKEEPING = /^(crc|jv|Jsonver|category|ch_num|ch_dpid\d+|ch_cddpid\d+|ch_flag\d+|ch\d+_stat|title20)$/;

/** cloudcutter's own AP-mode instructions (INSTRUCTIONS.md, "Running the toolchain", steps 4, 6 and 8). */
const AP_MODE = {
  button: 'Long press the power/reset button on the device until it starts fast-blinking, then release, and then ' +
    'hold the power/reset button again until the device starts slow-blinking. (Or toggle its power off and on 6 ' +
    'times, about 1 second apart.)',
  cycle: 'Toggle its power off and on again 6 times, with around 1 second in between each toggle, until it blinks ' +
    'slowly.',
  light: 'Toggle it off and on again 6 times, with around 1 second in between each toggle: it blinks slowly. If it ' +
    'blinks quickly, power cycle it 3 more times. After the exploit, turn it off and on once to bring AP mode back ' +
    '(if it does not come back, power cycle it 6 times).',
};

/**
 * Tuya's pin configuration as mapTuya() reads it: every key read is noted, so the ones nobody read can be listed in
 * the recipe as not mapped.
 */
class TuyaKeys {
  readonly used = new Set<string>();
  constructor(readonly cfg: Record<string, unknown>) {}

  has(key: string): boolean {
    return this.cfg[key] !== undefined && this.cfg[key] !== '' && this.cfg[key] !== null;
  }

  /** An integer key's value (marked read); a value that is no integer is refused naming the key. */
  num(key: string): number | undefined {
    if (!this.has(key)) return undefined;
    this.used.add(key);
    const n = Number(this.cfg[key]);
    if (!Number.isInteger(n)) throw new Refusal(`${key} is ${JSON.stringify(this.cfg[key])}, not a number`, key);
    return n;
  }

  str(key: string): string | undefined {
    if (!this.has(key)) return undefined;
    this.used.add(key);
    return String(this.cfg[key]);
  }

  /** `_lv` 0: active low; 1 or missing: active high. */
  activeLow(lvKey: string): boolean {
    return this.num(lvKey) === 0;
  }

  /** The N of every key `re` (with one group for N) matches that has a value, in order. */
  numbered(re: RegExp): number[] {
    return Object.keys(this.cfg).flatMap((k) => (this.has(k) ? re.exec(k)?.[1] ?? [] : []))
      .map(Number).sort((a, b) => a - b);
  }

  /** Marks keys as read (their meaning is taken into account without a value of their own being needed). */
  note(...keys: string[]): void {
    for (const k of keys) if (this.has(k)) this.used.add(k);
  }
}

/**
 * What the hardware kinds build together: pins (each on the board and used once), the template's components,
 * substitutions and notes. Kinds read what earlier kinds made (a button toggles the relays, the Wi-Fi LED follows
 * them) through `relays` and `light`.
 */
class Collector {
  readonly pins: RecipePin[] = [];
  readonly subs: [string, string | number][] = [];
  readonly sections: Record<string, unknown> = {};
  readonly notes: string[] = [];
  readonly remarks: string[] = [];
  /** The relays mapped so far: their number, ESPHome id, and whether they have an LED of their own. */
  readonly relays: { n: number; id: string; led: boolean }[] = [];
  /** The light's id, once a light is mapped. */
  light?: string;
  /** Relays whose LED is the Wi-Fi LED: that part makes the LED show them. */
  readonly sharedLed = new Set<number>();
  private readonly taken = new Map<number, string>();

  constructor(readonly t: TuyaKeys, readonly board: { name: string; gpios: number[]; what: string }) {}

  /**
   * The pin of Tuya key `key` as the recipe's pin `fn` (the template gets `${fn_pin}`): on the board, used once, and
   * with PWM when a PWM output needs it.
   */
  pin(fn: string, key: string, o: { note?: string; pwm?: boolean } = {}): string {
    return this.claim(fn, this.t.num(key)!, key, o);
  }

  /**
   * Like pin(), for hardware a device works without (an LED, an extra key, a duplicate): a pin the board lacks or
   * another key took leaves it out, with a remark saying so, and gives undefined.
   */
  optionalPin(fn: string, key: string, o: { note?: string } = {}): string | undefined {
    const n = this.t.num(key)!;
    const why = !this.board.gpios.includes(n) ? `P${n} is not a pin of ${this.board.what}`
      : this.taken.has(n) ? `P${n} is ${this.taken.get(n)}'s` : undefined;
    if (!why) return this.claim(fn, n, key, o);
    this.remarks.push(`${key} left out: ${why}`);
    return undefined;
  }

  /** GPIO `n` as the recipe's pin `fn`; `source` names where it comes from (a Tuya key, or a convention). */
  claim(fn: string, n: number, source: string, o: { note?: string; pwm?: boolean } = {}): string {
    if (!this.board.gpios.includes(n))
      throw new Refusal(`${source} is P${n}, which ${this.board.what} does not have (it has ` +
        `${this.board.gpios.map((g) => `P${g}`).join(' ')})`, source);
    if (this.taken.has(n)) throw new Refusal(`P${n} is used twice: by ${this.taken.get(n)} and by ${source}`, source);
    if (o.pwm && !PWM_PINS.includes(n))
      throw new Refusal(`${source} is P${n}, which has no PWM (the PWM pins are P6 P7 P8 P9 P24 P26)`, source);
    this.taken.set(n, source);
    this.pins.push({ fn, pin: `P${n}`, note: o.note });
    return `\${${fn}_pin}`;
  }

  /** Adds `item` to the template's list section (`switch:`, `sensor:` ...). */
  add(section: string, item: Yaml): void {
    ((this.sections[section] ??= []) as Yaml[]).push(item);
  }

  /** Sets a component that appears once (`status_led:`, `uart:` ...); two kinds wanting it is a conflict. */
  set(section: string, value: Yaml, key?: string): void {
    if (section in this.sections)
      throw new Refusal(`two parts of the configuration both need ESPHome's ${section}: (one of them ${key ?? '?'})`,
        key);
    this.sections[section] = value;
  }

  sub(name: string, value: string | number): string {
    this.subs.push([name, value]);
    return `\${${name}}`;
  }
}

/** A gpio pin as ESPHome takes it: the plain reference, or a mapping with its mode and inversion. */
function pinSchema(ref: string, inverted: boolean, mode?: string): string | Yaml {
  return inverted || mode ? { number: ref, ...(mode ? { mode } : {}), ...(inverted ? { inverted: true } : {}) } : ref;
}

/**
 * A momentary button to its level `_lv` (0 when missing: Tuya buttons pull to ground), debounced: pulled the other
 * way so it reads released when nobody presses.
 */
function buttonPin(out: Collector, fn: string, key: string, note?: string): string | Yaml | undefined {
  const low = out.t.num(`${key}_lv`) !== 1;
  const ref = out.optionalPin(fn, `${key}_pin`, { note });
  return ref && pinSchema(ref, low, low ? 'INPUT_PULLUP' : 'INPUT_PULLDOWN');
}

// The kinds of hardware a Tuya configuration describes, in the order they are mapped (relays first: buttons, LEDs
// and wall switches act on them). Each reads its own keys and adds its own pins and components.
const HARDWARE: { kind: string; detect: (t: TuyaKeys, c: TuyaConfig) => boolean;
  map: (t: TuyaKeys, out: Collector, c: TuyaConfig) => void }[] = [
  { kind: 'relays', detect: (t) => relayNumbers(t).length > 0, map: mapRelays },
  { kind: 'light', detect: (t) => lightChannels(t).length > 0 || t.has('cmod'), map: mapLight },
  { kind: 'buttons', detect: (t) => t.numbered(/^bt(\d+)_pin$/).length > 0 || t.has('total_bt_pin'),
    map: mapButtons },
  { kind: 'wall switch inputs', detect: (t) => t.numbered(/^onoff(\d+)$/).length > 0, map: mapWallSwitches },
  { kind: 'energy metering', detect: (t) => ['ele_pin', 'vi_pin', 'sel_pin_pin', 'chip_type', 'ele_rx']
    .some((k) => t.has(k)) && (t.has('ele_pin') || t.has('ele_rx') || [2, 3, 4].includes(Number(t.cfg.chip_type))),
  map: mapEnergy },
  { kind: 'keys', detect: (t) => ['key_pin', 'reset_pin'].some((k) => t.has(k)) ||
    t.numbered(/^k(\d+)pin_pin$/).length > 0, map: mapKeys },
  { kind: 'Wi-Fi LED', detect: (t) => ['netled', 'netled1', 'wfst'].some((k) => t.has(`${k}_pin`)), map: mapWifiLed },
  { kind: 'infrared', detect: (t) => ['ir', 'infrr', 'infre'].some((k) => t.has(k)), map: mapInfrared },
  { kind: 'TuyaMCU', detect: (_t, c) => !!c.mcu, map: mapTuyaMcu },
];

/** What a device is for: without one of these, only its buttons and LEDs are mapped (and the recipe says so). */
const ESSENTIAL = new Set(['relays', 'energy metering', 'light', 'TuyaMCU', 'infrared']);

/** A recipe's content for a Tuya configuration: pins, template, notes. Pure; a Refusal says why there is none. */
export function mapTuya(config: TuyaConfig): Mapping {
  const t = new TuyaKeys(config.keys);
  const { mcu, board, gpios, boardNote, what } = boardFor(config, t);
  const out = new Collector(t, { name: board, gpios, what });
  const kinds = HARDWARE.filter((k) => k.detect(t, config));
  if (!Object.keys(config.keys).length && !config.mcu)
    throw new Refusal('it has no pin configuration (device_configuration) and no TuyaMCU datapoints: write a ' +
      'recipe by hand from the device page and find the pins with --check-pins');
  for (const k of kinds) k.map(t, out, config);
  if (!out.pins.length && !config.mcu)
    throw new Refusal('no relay (rlN_pin, rl_onN_pin), light (cmod, r_pin...), energy chip, button, LED or TuyaMCU ' +
      'in its configuration: nothing ESPHome could switch or show');
  if (!kinds.some((k) => ESSENTIAL.has(k.kind)))
    out.remarks.unshift('Only its buttons, keys and LEDs are in the pin configuration (no relay, light, energy chip ' +
      'or TuyaMCU): what the device does is listed below as not mapped, or not in the configuration at all');

  // Plugs come back off; a bulb comes on at power-up, as it was when pmemory (power-off memory) is 1.
  const bulb = !!out.light && !out.relays.length && !config.mcu;
  const defaultState = !bulb ? 'RESTORE_DEFAULT_OFF' : t.num('pmemory') === 0 ? 'ALWAYS_ON' : 'RESTORE_DEFAULT_ON';
  const subs: [string, string | number][] = [['device_name', deviceName(config.slug)],
    ['friendly_name', config.title], ['default_state', defaultState], ['board', board], ...out.subs];
  const unmappedKeys = Object.keys(config.keys).filter((k) => !t.used.has(k) && !HOUSEKEEPING.test(k)).sort();
  const keys = Object.fromEntries([...t.used].filter((k) => t.has(k)).sort()
    .map((k) => [k, tuyaValue(config.keys[k])]));
  const hasButton = out.pins.some((p) => pinRole(p.fn) === 'button');
  return {
    mcu, board, boardNote, pins: out.pins, subs, sections: out.sections, notes: out.notes,
    remarks: out.remarks, kinds: kinds.map((k) => k.kind), unmappedKeys, keys,
    unmapped: unmappedLines(unmappedKeys, config.keys),
    apMode: bulb ? AP_MODE.light : hasButton ? AP_MODE.button : AP_MODE.cycle,
  };
}

/** A key's value as a recipe keeps it: numbers and words as they are, anything else as its JSON text. */
function tuyaValue(v: unknown): string | number | boolean {
  return typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string' ? v : JSON.stringify(v);
}

/**
 * The board: the module's LibreTiny board when its chip agrees with the one the configuration says, else the chip's
 * generic board (which accepts every pin the QFN32 package routes out).
 */
function boardFor(config: TuyaConfig, t: TuyaKeys):
  { mcu: Mcu; board: string; gpios: number[]; boardNote?: string; what: string } {
  const moduleName = t.str('module');
  const boardId = moduleName?.toLowerCase().replace(/_/g, '-').replace(/-ipex$/, ''); // CBU-IPEX: a CBU, antenna socket
  const known = boardId ? BOARDS[boardId] : undefined;
  const said = config.chip?.toUpperCase();
  if (said && said !== 'BK7231T' && said !== 'BK7231N')
    throw new Refusal(`its chip is ${said}, not a Beken BK7231T/N: cloudcutter ships ESPHome Kickstart only for ` +
      'BK7231T/N (for Realtek chips it ships OpenBeken builds)', 'firmware.chip');
  // Tuya names its Beken modules W… for the BK7231T and C… for the BK7231N (a board LibreTiny does not list yet).
  const byName = /^wb/i.test(moduleName ?? '') ? 'bk7231t' : /^cb/i.test(moduleName ?? '') ? 'bk7231n' : undefined;
  const mcu = (said?.toLowerCase() as Mcu | undefined) ?? known?.mcu ?? byName;
  if (!mcu)
    throw new Refusal(`nothing says which chip it has (${moduleName ? `module ${moduleName} is not one flash.ts knows`
      : 'no module key'}): give the cloudcutter profile, whose firmware names the chip`, 'module');
  const onModule = known?.mcu === mcu;
  const board = onModule ? boardId! : MCUS[mcu].board;
  const boardNote = !moduleName ? 'no module in the pin configuration: the generic board'
    : !known ? `module ${moduleName} has no LibreTiny board: the generic board`
    : !onModule ? `module ${moduleName} is a ${known.mcu.toUpperCase()} one, the firmware a ${MCUS[mcu].chip}: ` +
      'the generic board'
    : undefined;
  return { mcu, board, gpios: onModule ? known!.gpios : QFN32, boardNote,
    what: onModule ? `the ${moduleName} module` : `a ${MCUS[mcu].chip}` };
}

/** Relay numbers: an ordinary relay on `rlN_pin`, or a latching one pulsed on `rl_onN_pin` and `rl_offN_pin`. */
function relayNumbers(t: TuyaKeys): number[] {
  const latching = t.numbered(/^rl_on(\d+)_pin$/).filter((n) => t.has(`rl_off${n}_pin`));
  return [...new Set([...t.numbered(/^rl(\d+)_pin$/), ...latching])].sort((a, b) => a - b);
}

function mapRelays(t: TuyaKeys, out: Collector): void {
  const numbers = relayNumbers(t);
  const several = numbers.length > 1;
  const wifiLed = ['netled', 'netled1', 'wfst'].map((k) => t.num(`${k}_pin`)).find((n) => n !== undefined);
  t.note('rl_type', 'bt_type');
  for (const n of numbers) {
    const id = `relay_${n}`;
    const fn = several ? `relay${n}` : 'relay';
    const relay: Yaml = { platform: 'gpio', id, name: `\${friendly_name}${several ? ` ${n}` : ''}`,
      restore_mode: '${default_state}' };
    t.note(`rl${n}_type`);
    if (t.has(`rl${n}_pin`)) {
      // A second channel on the first one's pin (a single socket configured as a double): one relay.
      const same = numbers.find((m) => m < n && t.num(`rl${m}_pin`) === t.num(`rl${n}_pin`));
      if (same !== undefined) {
        t.note(`rl${n}_lv`);
        out.remarks.push(`rl${n}_pin left out: it repeats rl${same}_pin's P${t.num(`rl${n}_pin`)} (one relay)`);
        continue;
      }
      const ref = out.pin(fn, `rl${n}_pin`);
      relay.pin = pinSchema(ref, t.activeLow(`rl${n}_lv`));
      // A touch switch's firmware names the same pin as its "ON pin" too: one relay, nothing to pulse.
      if (t.num(`rl_on${n}_pin`) === t.num(`rl${n}_pin`)) t.note(`rl_on${n}_lv`);
    } else {
      // A latching (magnetic holding) relay: a pulse on one pin sets it, on the other resets it. ESPHome's hbridge
      // switch does exactly that; `rlN_drvtime` (or `rl_drvtime`) is the pulse in ms.
      const pulse = t.num(`rl${n}_drvtime`) ?? t.num('rl_drvtime') ?? 100;
      Object.assign(relay, { platform: 'hbridge',
        on_pin: pinSchema(out.pin(`${fn}_on`, `rl_on${n}_pin`, { note: `sets relay ${n}` }),
          t.activeLow(`rl_on${n}_lv`)),
        off_pin: pinSchema(out.pin(`${fn}_off`, `rl_off${n}_pin`, { note: `resets relay ${n}` }),
          t.activeLow(`rl_off${n}_lv`)),
        pulse_length: out.sub(several ? `relay${n}_pulse` : 'relay_pulse', `${pulse}ms`) });
    }
    const ledKey = [`led${n}`, ...(n === 1 && !several ? ['led'] : [])].find((k) => t.has(`${k}_pin`));
    let led = false;
    if (ledKey && t.num(`${ledKey}_pin`) === wifiLed) {
      // The relay's LED is the Wi-Fi LED: the Wi-Fi LED part shows the relay on it.
      t.note(`${ledKey}_lv`);
      out.remarks.push(`${ledKey}_pin is the Wi-Fi LED's pin: that LED shows relay ${n} too`);
      out.sharedLed.add(n);
    } else if (ledKey && t.num('netled_reuse') === 1) {
      // netled_reuse 1: Tuya's firmware shows the relay on the Wi-Fi LED, and an LED pin of the relay is a leftover
      // of its template (upk2esphome leaves it out too).
      t.note(`${ledKey}_pin`, `${ledKey}_lv`);
      out.remarks.push(`${ledKey}_pin (P${t.num(`${ledKey}_pin`)}) left out: netled_reuse 1 says the Wi-Fi LED shows ` +
        `relay ${n}; if the device has a second LED there, add it to pins: and the template`);
    } else if (ledKey) {
      const ref = out.optionalPin(several ? `led${n}` : 'led1', `${ledKey}_pin`, { note: `follows relay ${n}` });
      if (ref) {
        led = true;
        out.add('output', { platform: 'gpio', id: `led_${n}_output`,
          pin: pinSchema(ref, t.activeLow(`${ledKey}_lv`)) });
        out.add('light', { platform: 'binary', id: `led_${n}`, output: `led_${n}_output` });
        relay.on_turn_on = [{ 'light.turn_on': `led_${n}` }];
        relay.on_turn_off = [{ 'light.turn_off': `led_${n}` }];
      }
    }
    out.relays.push({ n, id, led });
    out.add('switch', relay);
  }
}

/**
 * Each relay's own button toggles it; one button for all turns all off when any is on, else all on. A light's button
 * toggles the light. A button with nothing of its number to toggle (a curtain's stop button) is left out, as
 * upk2esphome does, and listed.
 */
function mapButtons(t: TuyaKeys, out: Collector): void {
  const several = out.relays.length > 1 || t.numbered(/^bt(\d+)_pin$/).length > 1;
  const add = (id: string, fn: string, key: string, action: Yaml[]) => {
    const pin = buttonPin(out, fn, key);
    if (pin)
      out.add('binary_sensor', { platform: 'gpio', id, pin, filters: [{ delayed_on: '50ms' }], on_press: action });
  };
  for (const n of t.numbered(/^bt(\d+)_pin$/)) {
    const relay = out.relays.find((r) => r.n === n);
    t.note(`bt${n}_type`);
    if (relay) add(`button_${n}`, several ? `button${n}` : 'button', `bt${n}`, [{ 'switch.toggle': relay.id }]);
    else if (!out.relays.length && out.light)
      add(`button_${n}`, several ? `button${n}` : 'button', `bt${n}`, [{ 'light.toggle': out.light }]);
    else {
      t.note(`bt${n}_pin`, `bt${n}_lv`);
      out.remarks.push(`bt${n}_pin (P${t.num(`bt${n}_pin`)}) left out: there is no relay ${n} for it to toggle ` +
        '(a curtain\'s stop button?)');
    }
  }
  if (t.has('total_bt_pin'))
    add('button_all', 'button_all', 'total_bt', out.relays.length ? toggleAll(out.relays.map((r) => r.id))
      : out.light ? [{ 'light.toggle': out.light }] : []);
}

/** All relays off when any is on, else all on (toggling each would leave them out of step). */
function toggleAll(ids: string[]): Yaml[] {
  if (ids.length < 2) return ids.map((id) => ({ 'switch.toggle': id }));
  const all = (action: string) => ids.map((id) => ({ [`switch.${action}`]: id }));
  return [{ if: { condition: { or: all('is_on') }, then: all('turn_off'), else: all('turn_on') } }];
}

/**
 * `onoffN`: the input a relay module's wall switch is wired to. A wall switch stays where it is put, so every change
 * toggles relay N (Tuya's onoff_type 0; every device in cloudcutter's list has 0), not a press.
 */
function mapWallSwitches(t: TuyaKeys, out: Collector): void {
  const inputs = t.numbered(/^onoff(\d+)$/);
  const type = t.num('onoff_type');
  if (type !== undefined && type !== 0)
    out.remarks.push(`onoff_type is ${type}: the wall switch inputs still toggle their relay on every change`);
  t.note('onoffmode', 'onoff_rst_m', 'onoff_rst_type', 'onoff_clear_t', 'onoff_n', 'onofftime');
  for (const n of inputs) {
    const relay = out.relays.find((r) => r.n === n);
    const numbered = inputs.length > 1 || n > 1;
    // Read like upk2esphome: pulled up, closed = on. Which way round does not change what a flip does.
    const ref = out.optionalPin(numbered ? `wall_switch${n}` : 'wall_switch', `onoff${n}`,
      { note: relay ? `toggles relay ${n}` : `no relay ${n}` });
    if (!ref) continue;
    out.add('binary_sensor', { platform: 'gpio', id: `wall_switch_${n}`, name: `Wall switch${numbered ? ` ${n}` : ''}`,
      pin: pinSchema(ref, true, 'INPUT_PULLUP'), filters: [{ delayed_on_off: '50ms' }],
      ...(relay ? { on_state: [{ 'switch.toggle': relay.id }] } : {}) });
  }
}

/**
 * `key_pin` and `kNpin_pin`: keys. A plug's only key toggles its relays, a bulb's its light; others are shown to Home
 * Assistant as buttons to use in automations (upk2esphome does the same).
 */
function mapKeys(t: TuyaKeys, out: Collector): void {
  const hasButtons = out.pins.some((p) => pinRole(p.fn) === 'button');
  const keys = [...(t.has('key_pin') ? [1] : []), ...t.numbered(/^k(\d+)pin_pin$/)];
  t.note('keyfunc', 'kswitch', 'ktime');
  for (const n of keys) {
    const key = n === 1 ? 'key' : `k${n}pin`;
    const lone = keys.length === 1 && !hasButtons;
    const action = !lone ? undefined : out.relays.length ? toggleAll(out.relays.map((r) => r.id))
      : out.light ? [{ 'light.toggle': out.light }] : undefined;
    const fn = action ? (out.relays.length > 1 ? 'button_all' : 'button') : `key${n}`;
    const pin = buttonPin(out, fn, key);
    if (pin) out.add('binary_sensor', { platform: 'gpio', id: action ? 'button_key' : `key_${n}`,
      ...(action ? {} : { name: `Key ${n}` }), pin, filters: [{ delayed_on: '50ms' }],
      ...(action ? { on_press: action } : {}) });
  }
  // The reset button (held reset_t seconds, Tuya's firmware forgets its Wi-Fi): shown, for automations.
  if (t.has('reset_pin')) {
    t.note('reset_t', 'rsthold');
    const pin = buttonPin(out, 'button_reset', 'reset');
    if (pin) out.add('binary_sensor', { platform: 'gpio', id: 'button_reset', name: 'Reset button', pin,
      filters: [{ delayed_on: '50ms' }] });
  }
}

/**
 * The Wi-Fi LED is ESPHome's status LED. When it also shows the relays (netled_reuse 1, for relays without an LED
 * of their own; or a relay LED on the same pin) it is a status_led light the relays switch (on while any is on).
 */
function mapWifiLed(t: TuyaKeys, out: Collector): void {
  const keys = ['netled', 'netled1', 'wfst'].filter((k) => t.has(`${k}_pin`));
  const key = keys[0];
  const ref = out.optionalPin('status_led', `${key}_pin`, { note: 'Wi-Fi LED' });
  for (const other of keys.slice(1)) {
    t.note(`${other}_pin`, `${other}_lv`);
    out.remarks.push(`${other}_pin repeats the Wi-Fi LED (${key}_pin is used)`);
  }
  t.note('netled_reuse', 'netn_led', 'nety_led', 'led_netn', 'led_nety');
  if (!ref) return;
  const pin = pinSchema(ref, t.activeLow(`${key}_lv`));
  const shared = out.relays.filter((r) => out.sharedLed.has(r.n) || (t.num('netled_reuse') === 1 && !r.led));
  if (!shared.length) return out.set('status_led', { pin }, `${key}_pin`);
  out.add('light', { platform: 'status_led', id: 'status_light', pin });
  const off = { 'light.turn_off': 'status_light' };
  const allOff = { if: { condition: { and: shared.map((r) => ({ 'switch.is_off': r.id })) }, then: [off] } };
  for (const r of shared) {
    const relay = (out.sections.switch as Yaml[]).find((s) => s.id === r.id)!;
    relay.on_turn_on = [{ 'light.turn_on': 'status_light' }];
    relay.on_turn_off = [shared.length < 2 ? off : allOff];
  }
}

function mapEnergy(t: TuyaKeys, out: Collector): void {
  const type = t.num('chip_type');
  t.note('ele_fun_en', 'over_cur', 'over_vol', 'lose_vol', 'vol_def', 'work_voltage');
  if (type !== undefined && !(type in ENERGY_CHIPS))
    throw new Refusal(`chip_type ${type}: an energy chip flash.ts does not know (0 BL0937, 1 HLW8012, 2 HLW8032, ` +
      '3 BL0942)', 'chip_type');
  // No chip_type with CF/CF1/SEL pins: the usual BL0937 (upk2esphome maps nothing then).
  const chip = type === undefined ? 'BL0937' : ENERGY_CHIPS[type];
  if (type === undefined)
    out.remarks.push('no chip_type: the energy chip is taken for the usual BL0937 (upk2esphome leaves metering out)');
  if (chip === 'BL0937' || chip === 'HLW8012') return mapPulseEnergy(t, out, chip);
  return mapUartEnergy(t, out, chip);
}

/**
 * BL0937/HLW8012: pulses on CF (power) and CF1 (current or voltage, as SEL says), ESPHome's hlw8012.
 * SEL: ESPHome's hlw8012.cpp drives SEL high to measure current. The HLW8012 measures current with SEL high, the
 * BL0937 with SEL low (their datasheets), so a BL0937's SEL is inverted. Tuya's `sel_pin_lv` is 1 on every metering
 * device in cloudcutter's list, BL0937 and HLW8012 alike, so it cannot name a chip's own level: it is the board's
 * polarity, and 0 (an inverter between) flips SEL. (upk2esphome inverts SEL on sel_pin_lv 1 for both chips, which
 * would read an HLW8012's voltage as current.)
 */
function mapPulseEnergy(t: TuyaKeys, out: Collector, chip: 'BL0937' | 'HLW8012'): void {
  const missing = ['ele_pin', 'vi_pin', 'sel_pin_pin'].find((k) => !t.has(k));
  if (missing) throw new Refusal(`energy metering (${chip}) without ${missing}`, missing);
  const bl = chip === 'BL0937';
  if (!bl && t.num('sel_pin_lv') === 1)
    out.remarks.push('HLW8012 with sel_pin_lv 1: SEL is not inverted, as ESPHome drives it high to read current, as ' +
      'the HLW8012 does (upk2esphome inverts it, which reads the voltage as current)');
  const shunt = t.num('resistor') ?? t.num('sample_resistor') ?? 1; // milliohm
  out.add('sensor', { platform: 'hlw8012', model: chip,
    // CF and CF1 inverted on the BL0937, as upk2esphome does.
    cf_pin: pinSchema(out.pin('cf', 'ele_pin', { note: 'energy CF (power)' }), bl),
    cf1_pin: pinSchema(out.pin('cf1', 'vi_pin', { note: 'energy CF1 (current/voltage)' }), bl),
    sel_pin: pinSchema(out.pin('sel', 'sel_pin_pin', { note: 'energy SEL' }), bl !== t.activeLow('sel_pin_lv')),
    current_resistor: out.sub('current_resistor', `${shunt / 1000}`),
    voltage_divider: out.sub('voltage_divider', bl ? 1600 : 2351),
    current: { name: 'Current', filters: [{ multiply: out.sub('current_multiply', '1.0') }] },
    voltage: { name: 'Voltage' }, power: { name: 'Power' }, energy: { name: 'Energy' }, update_interval: '10s' });
}

/**
 * BL0942 (polled) and HLW8032 (sends unprompted) on a UART: `ele_rx`/`ele_tx` when the configuration names them,
 * else the module's UART1 (RX1 P10, TX1 P11), where Tuya wires them.
 */
function mapUartEnergy(t: TuyaKeys, out: Collector, chip: 'HLW8032' | 'BL0942'): void {
  for (const k of ['ele_pin', 'vi_pin', 'sel_pin_pin', 'sel_pin_lv'])
    if (t.has(k)) out.remarks.push(`${k} is set but a ${chip} talks on the UART: ${k} left out`);
  t.note('ele_pin', 'vi_pin', 'sel_pin_pin', 'sel_pin_lv');
  const rx = t.has('ele_rx') ? 'ele_rx' : undefined;
  const tx = t.has('ele_tx') ? 'ele_tx' : undefined;
  const rxPin = rx ? out.pin('energy_rx', rx, { note: `${chip} TX → here` })
    : out.claim('energy_rx', 10, 'RX1', { note: `${chip} TX → RX1` });
  if (chip === 'HLW8032') {
    // The HLW8032 sends the CSE7766's 24-byte frame at 4800 baud, 8E1, and listens to nothing: ESPHome's cse7766
    // reads it. Its voltage (and so power and energy) comes through the board's resistor divider, which the CSE7766
    // has built in: the HLW8032 datasheet's divider is 1.88.
    if (tx) t.note(tx);
    const divider = out.sub('hlw8032_voltage_divider', 1.88);
    const scaled = (name: string) => ({ name, filters: [{ multiply: divider }] });
    out.set('uart', { id: 'energy_uart', rx_pin: rxPin, baud_rate: 4800, parity: 'EVEN' }, 'chip_type');
    out.add('sensor', { platform: 'cse7766', uart_id: 'energy_uart', voltage: scaled('Voltage'),
      current: { name: 'Current' }, power: scaled('Power'), energy: scaled('Energy') });
    out.notes.push('HLW8032 read as a CSE7766: voltage, power and energy are multiplied by hlw8032_voltage_divider ' +
      '(the datasheet\'s 1.88); calibrate it against a meter. With no load the chip flags an overflow and cse7766 ' +
      'skips those frames, voltage included.');
  } else {
    const txPin = tx ? out.pin('energy_tx', tx, { note: `${chip} RX ← here` })
      : out.claim('energy_tx', 11, 'TX1', { note: `${chip} RX ← TX1` });
    out.set('uart', { id: 'energy_uart', rx_pin: rxPin, tx_pin: txPin, baud_rate: 4800, stop_bits: 1 }, 'chip_type');
    // ESPHome's default references, named so they can be calibrated: power and energy follow from these two (the
    // four defaults do not agree with each other: power would read about 4.5 % high).
    out.add('sensor', { platform: 'bl0942', uart_id: 'energy_uart', update_interval: '10s',
      voltage_reference: out.sub('bl0942_voltage_reference', 15873.35944299),
      current_reference: out.sub('bl0942_current_reference', 251213.46469622),
      voltage: { name: 'Voltage' }, current: { name: 'Current' }, power: { name: 'Power' },
      energy: { name: 'Energy' }, frequency: { name: 'Frequency', accuracy_decimals: 2 } });
  }
}

/**
 * The light channels wired (PWM pins, or an LED driver's channel keys) that Tuya's colour mode `cmod` uses: Tuya's
 * firmware drives only those, and a configuration often carries the other pins of its template unwired.
 */
function lightChannels(t: TuyaKeys): Channel[] {
  const cmod = String(t.cfg.cmod ?? '');
  return wiredChannels(t).filter((c) => !/^[rgbcw]+$/.test(cmod) || cmod.includes(c));
}

function wiredChannels(t: TuyaKeys): Channel[] {
  const driver = LIGHT_DRIVERS[Number(t.cfg.dmod ?? 0)];
  // A PWM pin the chip does not have (P18, P19) is a leftover of Tuya's template: that channel is not wired.
  return (Object.keys(CHANNELS) as Channel[]).filter((c) => driver ? t.has(`iic${c}`)
    : t.has(`${c}_pin`) && QFN32.includes(Number(t.cfg[`${c}_pin`])));
}

function mapLight(t: TuyaKeys, out: Collector): void {
  const cmod = t.str('cmod');
  const dmod = t.num('dmod') ?? 0;
  const driver = LIGHT_DRIVERS[dmod];
  if (dmod !== 0 && !driver)
    throw new Refusal(`dmod ${dmod}: an LED driver ESPHome has no output for (known: 0 PWM, 2–7)`, 'dmod');
  // An LED driver drives the cold and warm LEDs directly: Tuya's cwtype (brightness + colour temperature) is only
  // how its PWM bulbs wire the whites.
  const cct = t.num('cwtype') === 1 && !driver;
  // A driver's two whites on one channel are one white.
  if (driver && t.has('iicc') && t.num('iicc') === t.num('iicw')) {
    t.note('iicw');
    out.remarks.push('iicc and iicw name the same driver channel: one white');
  }
  const wired = lightChannels(t).filter((c) => !(driver && c === 'w' && t.num('iicc') === t.num('iicw')));
  const unused = wiredChannels(t).filter((c) => !lightChannels(t).includes(c))
    .map((c) => driver ? `iic${c}` : `${c}_pin`);
  if (unused.length) {
    t.note(...unused, ...unused.map((k) => k.replace(/_pin$/, '_lv')));
    out.remarks.push(`${unused.join(' ')} ${unused.length > 1 ? 'are' : 'is'} set, but cmod "${cmod}" does not use ` +
      `${unused.length > 1 ? 'them' : 'it'} (Tuya's firmware drives only the channels cmod names): left out ` +
      '(upk2esphome maps every pin it finds)');
  }
  if (!wired.length)
    throw new Refusal(`cmod "${cmod}" but no light channel is wired (${driver ? `no iicr/iicg/iicb/iicc/iicw for ` +
      `the ${driver.chip}` : 'no r_pin/g_pin/b_pin/c_pin/w_pin'})`, 'cmod');
  for (const c of (Object.keys(CHANNELS) as Channel[]).filter((x) => !driver && t.has(`${x}_pin`) &&
    !QFN32.includes(Number(t.cfg[`${x}_pin`])))) {
    t.note(`${c}_pin`, `${c}_lv`);
    out.remarks.push(`${c}_pin is P${t.cfg[`${c}_pin`]}, a pin no BK7231 module has: the ${CHANNELS[c]} channel is ` +
      'not wired');
  }
  const platformOf = (cs: Channel[]) => LIGHT_PLATFORMS[cct && ['cw', 'rgbcw', 'c'].includes(cs.join(''))
    ? `${cs.join('')}/ct` : cs.join('')];
  // Channels no light platform takes together (blue with the whites): the whites make the light.
  const whites: Channel[] = wired.filter((c) => c === 'c' || c === 'w');
  if (!platformOf(wired) && platformOf(whites)) {
    const dropped = wired.filter((c) => !whites.includes(c));
    t.note(...dropped.map((c) => `${c}_pin`), ...dropped.map((c) => `${c}_lv`));
    out.remarks.push(`${dropped.map((c) => `${c}_pin`).join(' ')} left out: with only ${whites.map((c) => CHANNELS[c])
      .join(' and ')} besides, no ESPHome light takes ${dropped.length > 1 ? 'them' : 'it'}`);
    wired.splice(0, wired.length, ...whites);
  }
  const letters = wired.join('');
  const shape = platformOf(wired);
  if (!shape) throw new Refusal(`the light's wired channels (${wired.map((c) => CHANNELS[c]).join(', ')}) make no ` +
    'ESPHome light', driver ? `iic${wired[0]}` : `${wired[0]}_pin`);
  if (cmod && cmod !== letters)
    out.remarks.push(`cmod is "${cmod}", but only ${wired.map((c) => `${driver ? 'iic' : ''}${c}${driver ? ''
      : '_pin'}`).join(' ')} ${wired.length > 1 ? 'are' : 'is'} wired: mapped as ESPHome's ${shape.platform} light` +
      `${cmod.startsWith('rgb') && !letters.startsWith('rgb') ? ' (the colours are driven some other way, e.g. ' +
        'an addressable strip)' : ''}; --check-pins shows what each channel lights`);
  t.note('cwtype', 'cwmaxp', 'pwmhz');
  const light: Yaml = { platform: shape.platform, id: 'light_1', name: '${friendly_name}',
    restore_mode: '${default_state}', default_transition_length: out.sub('transition_length', '1s') };
  if (!driver) {
    const frequency = out.sub('pwm_frequency', `${t.num('pwmhz') ?? 1000}Hz`);
    for (const c of wired) {
      // A CCT bulb's two white pins are brightness and colour temperature, not cold and warm.
      const fn = (cct && { c: 'brightness', w: 'color_temp' }[c as 'c' | 'w']) || CHANNELS[c];
      out.add('output', { platform: 'libretiny_pwm', id: `output_${fn}`,
        pin: pinSchema(out.pin(fn, `${c}_pin`, { pwm: true }), t.activeLow(`${c}_lv`)), frequency });
      light[shape.keys[c]!] = `output_${fn}`;
    }
    // ESPHome drives a colour temperature output 0 at cold, 1 at warm; Tuya's direction is not documented.
    if (cct)
      out.notes.push('Colour temperature the wrong way round? Add `inverted: true` to output_color_temp\'s pin.');
  } else {
    const bus = ['iicscl', 'iicsda'].find((k) => !t.has(k));
    if (bus) throw new Refusal(`an ${driver.chip} without ${bus}`, bus);
    out.set(driver.platform, { clock_pin: out.pin('clock', 'iicscl', { note: `${driver.chip} clock` }),
      data_pin: out.pin('data', 'iicsda', { note: `${driver.chip} data` }), ...driverSettings(dmod, t) }, 'dmod');
    for (const c of wired) {
      const channel = t.num(`iic${c}`)!;
      // ESPHome numbers BP5758D outputs 1–5; Tuya (and ESPHome's other drivers) count from 0.
      out.add('output', { platform: driver.platform, id: `output_${CHANNELS[c]}`,
        channel: dmod === 6 ? channel + 1 : channel, ...(dmod === 6 ? bp5758dCurrent(c, t) : {}) });
      light[shape.keys[c]!] = `output_${CHANNELS[c]}`;
    }
  }
  if (['rgbww', 'rgbct', 'cwww', 'color_temperature'].includes(shape.platform)) {
    light.cold_white_color_temperature = out.sub('cold_white_color_temperature', '6500 K');
    light.warm_white_color_temperature = out.sub('warm_white_color_temperature', '2700 K');
  }
  if (['rgbww', 'rgbct', 'rgbw'].includes(shape.platform)) light.color_interlock = true; // white or colour, as Tuya
  out.add('light', light);
  out.light = 'light_1';
}

/** The LED driver hub's current settings from its Tuya keys, in ESPHome's option names and ranges. */
function driverSettings(dmod: number, t: TuyaKeys): Yaml {
  if (dmod >= 2 && dmod <= 4) {
    // ehccur/iicccur are register codes (mA = 10 + 5 × code), campere/wampere mA. ESPHome's options stop at
    // 45 mA (RGB) and 60 mA (white): a higher Tuya value is capped there, so the LEDs run a little dimmer.
    const mA = (code: number | undefined, direct: number | undefined) => code !== undefined ? 10 + 5 * code : direct;
    const step = (v: number, max: number) => `${Math.min(max, Math.max(10, Math.round(v / 5) * 5))}mA`;
    const rgb = mA(t.num('ehccur') ?? t.num('iicccur'), t.num('campere'));
    const cw = mA(t.num('ehwcur') ?? t.num('iicwcur'), t.num('wampere'));
    return {
      ...(rgb !== undefined ? { rgb_current: step(rgb, 45) } : {}),
      ...(cw !== undefined ? { cw_current: step(cw, 60) } : {}),
      // ESPHome docs: the EH and EJ variants light white and colour at once, the E does not.
      ...(dmod !== 2 ? { separate_modes: false } : {}),
    };
  }
  // BP1658CJ and SM2235/SM2335: Tuya's current keys are ESPHome's 0–15 power steps.
  const [colour, white] = dmod === 5 ? ['cjccur', 'cjwcur'] : dmod === 7 ? ['2235ccur', '2235wcur'] : [];
  const c = colour ? t.num(colour) : undefined, w = white ? t.num(white) : undefined;
  return { ...(c !== undefined ? { max_power_color_channels: Math.min(15, c) } : {}),
    ...(w !== undefined ? { max_power_white_channels: Math.min(15, w) } : {}) };
}

/** BP5758D sets the current per output (0–90 mA): drgbcur for red/green/blue, dccur/dwcur for the whites. */
function bp5758dCurrent(c: Channel, t: TuyaKeys): Yaml {
  const cold = t.num('dccur');
  const mA = c === 'c' ? cold : c === 'w' ? t.num('dwcur') ?? cold : t.num('drgbcur'); // no dwcur: warm as cold
  return mA === undefined ? {} : { current: Math.min(90, mA) };
}

/** An infrared receiver (`ir`, `infrr`) and transmitter (`infre`): ESPHome's remote_receiver / remote_transmitter. */
function mapInfrared(t: TuyaKeys, out: Collector): void {
  const rx = ['ir', 'infrr'].find((k) => t.has(k));
  for (const other of ['ir', 'infrr'].filter((k) => k !== rx && t.has(k))) t.note(other);
  const receiver = rx && out.optionalPin('ir_receiver', rx, { note: 'infrared receiver' });
  if (receiver) out.set('remote_receiver', { pin: pinSchema(receiver, true, 'INPUT_PULLUP'), dump: 'all' }, rx);
  const transmitter = t.has('infre') && out.optionalPin('ir_transmitter', 'infre', { note: 'infrared LED' });
  if (transmitter) out.set('remote_transmitter', { pin: transmitter, carrier_duty_percent: '50%' }, 'infre');
  t.note('irfunc', 'irnightt', 'irstep');
}

/**
 * TuyaMCU: the Beken chip only does Wi-Fi; the device's own MCU speaks Tuya's serial protocol on UART1 (RX1 P10,
 * TX1 P11) and ESPHome's tuya component talks to it. Each datapoint becomes an entity of the kind that can show or
 * set it; a category the device's name and datapoints make clear (a dimmer, a thermostat, a fan) gets the entity
 * ESPHome has for it. There are no pins to check: the MCU answering after the upload is the proof.
 */
function mapTuyaMcu(t: TuyaKeys, out: Collector, c: TuyaConfig): void {
  const mcu = c.mcu!;
  t.note(...Object.keys(t.cfg).filter((k) => TUYAMCU_KEYS.test(k)));
  const rx = out.claim('uart_rx', 10, 'RX1', { note: 'TuyaMCU TX → RX1' });
  const tx = out.claim('uart_tx', 11, 'TX1', { note: 'TuyaMCU RX ← TX1' });
  const baud = out.sub('tuya_baud_rate', mcu.baud ?? 9600);
  if (!mcu.baud)
    out.remarks.push('tuya_baud_rate: the device data does not say; 9600 is the usual one, 115200 the other. If ' +
      'verify says the MCU is silent, set 115200 here');
  out.set('uart', { id: 'tuya_uart', rx_pin: rx, tx_pin: tx, baud_rate: baud }, 'tuyamcu_baud');
  out.set('tuya', { uart_id: 'tuya_uart' });
  if (c.lowPower)
    out.remarks.push("Tuya's low-power firmware: a battery device whose MCU speaks Tuya's low-power serial protocol " +
      "(no heartbeat), which ESPHome's tuya component does not: once flashed it will most likely stay silent, and " +
      'Tuya firmware cannot be put back without a serial adapter');
  const taken = new Set<number>();
  const category = TUYA_CATEGORIES.find((k) => k.words.test(c.title) && k.detect(mcu.datapoints));
  if (category) {
    for (const id of category.map(mcu.datapoints, out)) taken.add(id);
    out.notes.push(`A ${category.name}: datapoints ${[...taken].join(', ')} make one ${category.entity} (Tuya's ` +
      `standard ${category.name} datapoints).`);
  }
  const lines: string[] = [];
  for (const dp of mcu.datapoints) {
    const made = taken.has(dp.id) ? `the ${category!.entity}` : mapDatapoint(dp, out);
    lines.push(`${String(dp.id).padStart(3)} ${describeDatapoint(dp)} → ${made}`);
  }
  out.remarks.push(`TuyaMCU datapoints (id, type, mode → what the template makes of it; rename entities there):`,
    ...lines.map((l) => `  ${l}`));
}

/** "value rw 10…1000 ×0.1 °C", "enum ro [low, middle, high]": a datapoint as the recipe lists it. */
function describeDatapoint(dp: Datapoint): string {
  const range = dp.type === 'value' && dp.min !== undefined && dp.max !== undefined ? ` ${dp.min}…${dp.max}` : '';
  const scale = dp.scale ? ` ×${10 ** -dp.scale}` : '';
  const options = dp.range?.length ? ` [${dp.range.join(', ')}]` : '';
  return `${dp.type} ${dp.mode}${range}${scale}${dp.unit ? ` ${dp.unit}` : ''}${options}`;
}

/** One datapoint as an ESPHome tuya entity; what it became, in words ('not mapped: …' when ESPHome cannot show it) */
function mapDatapoint(dp: Datapoint, out: Collector): string {
  const name = `Datapoint ${dp.id}`;
  const factor = 10 ** -(dp.scale ?? 0);
  const scaled = (v: number | undefined) => (v === undefined ? undefined : Number((v * factor).toFixed(dp.scale ?? 0)));
  const writable = dp.mode !== 'ro';
  switch (dp.type) {
    case 'bool':
      if (writable) out.add('switch', { platform: 'tuya', name, switch_datapoint: dp.id });
      else out.add('binary_sensor', { platform: 'tuya', name, sensor_datapoint: dp.id });
      return `${writable ? 'switch' : 'binary_sensor'} "${name}"`;
    case 'value':
      if (writable) {
        out.add('number', { platform: 'tuya', name, number_datapoint: dp.id,
          min_value: scaled(dp.min ?? 0), max_value: scaled(dp.max ?? 100), step: scaled(dp.step ?? 1) ?? 1,
          ...(dp.scale ? { multiply: 10 ** dp.scale } : {}), ...(dp.unit ? { unit_of_measurement: dp.unit } : {}) });
        return `number "${name}"`;
      }
      out.add('sensor', { platform: 'tuya', name, sensor_datapoint: dp.id,
        ...(dp.unit ? { unit_of_measurement: dp.unit } : {}),
        ...(dp.scale ? { accuracy_decimals: dp.scale, filters: [{ multiply: factor }] } : {}) });
      return `sensor "${name}"`;
    case 'enum': {
      const labels = dp.range ?? [];
      if (writable && labels.length) {
        // Numbered options (a YAML map with integer keys, as ESPHome's schema wants them).
        const options = Object.assign(new lib.yaml.YAMLMap(), {
          items: labels.map((l, i) => new lib.yaml.Pair(new lib.yaml.Scalar(i), new lib.yaml.Scalar(l))) });
        out.add('select', { platform: 'tuya', name, enum_datapoint: dp.id, options });
        return `select "${name}"`;
      }
      // ESPHome's tuya text_sensor shows an enum's number: the map filter shows its label.
      out.add('text_sensor', { platform: 'tuya', name, sensor_datapoint: dp.id,
        ...(labels.length ? { filters: [{ map: labels.map((l, i) => `${i} -> ${l}`) }] } : {}) });
      return `text_sensor "${name}"`;
    }
    case 'string':
    case 'raw':
      if (dp.mode === 'wr') return 'not mapped (ESPHome cannot send it)';
      out.add('text_sensor', { platform: 'tuya', name, sensor_datapoint: dp.id });
      return `text_sensor "${name}"${writable ? ' (shown, not set)' : ''}`;
    case 'bitmap':
      out.add('sensor', { platform: 'tuya', name, sensor_datapoint: dp.id, accuracy_decimals: 0 });
      return `sensor "${name}" (the bits as a number)`;
  }
}

/**
 * Tuya's standard datapoints of the categories ESPHome has an entity for: the device's name says what it is and its
 * datapoints fit the category's (Tuya's "standard instruction set" for dimmers, thermostats and fans).
 */
const TUYA_CATEGORIES: { name: string; entity: string; words: RegExp; detect: (dps: Datapoint[]) => boolean;
  map: (dps: Datapoint[], out: Collector) => number[] }[] = [
  { name: 'dimmer', entity: 'light', words: /dimm/i,
    detect: (dps) => is(dps, 1, 'bool', true) && is(dps, 2, 'value', true),
    map: (dps, out) => {
      // dp 1 switch_led_1, dp 2 bright_value_1, dp 3 brightness_min_1 (the dimmer's lowest setting).
      const bright = dp(dps, 2)!;
      const min = is(dps, 3, 'value', true) ? dp(dps, 3) : undefined;
      out.add('light', { platform: 'tuya', id: 'light_1', name: '${friendly_name}', switch_datapoint: 1,
        dimmer_datapoint: 2, ...(min ? { min_value_datapoint: 3 } : {}), min_value: bright.min ?? 0,
        max_value: bright.max ?? 1000 });
      out.light = 'light_1';
      return min ? [1, 2, 3] : [1, 2];
    } },
  { name: 'thermostat', entity: 'climate', words: /thermostat|heater/i,
    detect: (dps) => is(dps, 1, 'bool', true) && is(dps, 2, 'value', true) && is(dps, 3, 'value', false),
    map: (dps, out) => {
      // dp 1 switch, dp 2 temp_set, dp 3 temp_current.
      const set = dp(dps, 2)!, now = dp(dps, 3)!;
      // ESPHome takes one multiplier for both, or both of their own.
      const multipliers = (set.scale ?? 0) === (now.scale ?? 0)
        ? set.scale ? { temperature_multiplier: 10 ** -set.scale } : {}
        : { target_temperature_multiplier: 10 ** -(set.scale ?? 0),
          current_temperature_multiplier: 10 ** -(now.scale ?? 0) };
      out.add('climate', { platform: 'tuya', name: '${friendly_name}', switch_datapoint: 1,
        target_temperature_datapoint: 2, current_temperature_datapoint: 3, supports_heat: true, ...multipliers,
        visual: { min_temperature: (set.min ?? 5) * 10 ** -(set.scale ?? 0),
          max_temperature: (set.max ?? 35) * 10 ** -(set.scale ?? 0) } });
      return [1, 2, 3];
    } },
  { name: 'fan', entity: 'fan', words: /\bfan\b/i,
    detect: (dps) => is(dps, 1, 'bool', true) && (is(dps, 3, 'enum', true) || is(dps, 3, 'value', true)),
    map: (dps, out) => {
      // dp 1 switch, dp 3 fan_speed (an enum of levels, or a number).
      const speed = dp(dps, 3)!;
      const count = speed.type === 'enum' ? speed.range?.length ?? 3 : Math.min(100, speed.max ?? 3);
      out.add('fan', { platform: 'tuya', name: '${friendly_name}', switch_datapoint: 1, speed_datapoint: 3,
        speed_count: count });
      return [1, 3];
    } },
];

function dp(dps: Datapoint[], id: number): Datapoint | undefined {
  return dps.find((d) => d.id === id);
}

function is(dps: Datapoint[], id: number, type: Datapoint['type'], writable: boolean): boolean {
  const d = dp(dps, id);
  return !!d && d.type === type && (d.mode !== 'ro') === writable;
}

/** An ESPHome device name from the slug: a-z 0-9 -, at most 31 characters, cut at a word, no firmware version. */
function deviceName(slug: string): string {
  const name = slug.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').replace(/-v\d+(-\d+)*$/, '');
  if (name.length <= 31) return name;
  const cut = name.slice(0, 32).lastIndexOf('-');
  return name.slice(0, cut > 10 ? cut : 31).replace(/-+$/, '');
}

/**
 * Tuya's keys that say how the board is wired, not how the firmware behaves: pins and their levels, what sits on them
 * (an LED driver, an energy chip, the module), wall-switch inputs, the infrared pins.
 */
const WIRING_KEY = new RegExp('pin$|_lv$|^(ir|infre|infrr|SCL|CS|MISO|MOSI|cmod|dmod|chip_type|module|' +
  'iic[rgbcw]|iicscl|iicsda|ele_rx|ele_tx|onoff\\d+|cwtype|netled_reuse)$', 'i');

/**
 * The unmapped keys as comment lines: wiring first (pins a person may want to add by hand), then the rest with
 * numbered families (irk1fun … irk31fun) folded into one word.
 */
function unmappedLines(keys: string[], cfg: Record<string, unknown>): string[] {
  // A long value (an infrared code table, a colour scene list) is cut: the comment is a pointer, not a copy.
  const show = (k: string) => {
    const value = JSON.stringify(cfg[k]);
    return `${k}=${value.length > 40 ? `${value.slice(0, 36)}…(${value.length})` : value}`;
  };
  const wiring = keys.filter((k) => WIRING_KEY.test(k));
  const families = new Map<string, string[]>();
  for (const k of keys.filter((x) => !wiring.includes(x)))
    families.set(k.replace(/\d+/g, 'N'), [...(families.get(k.replace(/\d+/g, 'N')) ?? []), k]);
  const rest = [...families].flatMap(([family, ks]) => ks.length > 2 ? [`${family}(×${ks.length})`] : ks.map(show));
  return [
    ...(wiring.length ? wrap(`wiring: ${wiring.map(show).join(' ')}`, 116) : []),
    ...(rest.length ? wrap(`other: ${rest.join(' ')}`, 116) : []),
  ];
}

/** Where a recipe's configuration came from: its header, and what cloudcutter is told. */
export interface RecipeOrigin {
  /** "cloudcutter's device file minoston-mp22wp-outdoor-plug", "the plug's own flash (dump.bin)". */
  source: string;
  /** The cloudcutter profile's menu label (which stock firmware the exploit is for), when known. */
  profile?: string;
  /** The device's slug in cloudcutter's list, when it is in it. */
  device?: string;
  /** Other stock firmware versions cloudcutter knows for it. */
  otherProfiles?: string[];
}

export type Generated =
  | { ok: true; slug: string; recipe: string; template: string; unmapped: string[]; mapping: Mapping }
  | { ok: false; slug: string; reason: string; key?: string };

/** A recipe and ESPHome template for a device in cloudcutter's list, or why there is none. Pure. */
export function generateRecipe(device: DeviceFile, profile: ProfileFile, schema = 'recipe.schema.json'): Generated {
  const others = (device.profiles ?? []).filter((p) => p.slug !== profile.slug).map(profileLabel);
  return recipeFor(tuyaFromCloudcutter(device, profile.slug, profile.firmware?.chip), { source: `cloudcutter's ` +
    `device file ${device.slug}`, profile: profileLabel(profile), device: device.slug, otherProfiles: others }, schema);
}

/** A recipe and ESPHome template for a Tuya configuration, or why there is none. Pure. */
export function recipeFor(config: TuyaConfig, origin: RecipeOrigin, schema = 'recipe.schema.json'): Generated {
  try {
    const mapping = mapTuya(config);
    return { ok: true, slug: config.slug, recipe: recipeText(config, mapping, origin, schema),
      template: templateText(config, mapping, origin), unmapped: mapping.unmappedKeys, mapping };
  } catch (e) {
    if (e instanceof Refusal) return { ok: false, slug: config.slug, reason: e.message, key: e.key };
    throw e;
  }
}

/** Tuya's configuration as cloudcutter's device list has it: the device file, and the slug of the profile it runs. */
export function tuyaFromCloudcutter(device: DeviceFile, profileSlug: string, chip?: string): TuyaConfig {
  const keys = device.device_configuration ?? {};
  const schema = Object.values(device.schemas ?? {})[0] ?? [];
  // A TuyaMCU device: cloudcutter gives its baud rate. With no pin configuration and the firmware TuyaMCU devices
  // run (Tuya's "common" user-config firmware), it is one too, at a baud rate nobody wrote down.
  const pinless = !Object.keys(keys).some((k) => !HOUSEKEEPING.test(k) && !TUYAMCU_KEYS.test(k));
  const tuyaMcu = device.tuyamcu_baud !== undefined || keys.wifi_bdrate !== undefined ||
    (pinless && /common/.test(profileSlug) && schema.length > 0);
  const baud = Number(device.tuyamcu_baud ?? keys.wifi_bdrate) || undefined;
  return {
    title: `${device.manufacturer ?? ''} ${device.name ?? ''}`.trim() || device.slug, slug: device.slug, chip, keys,
    mcu: tuyaMcu ? { baud, datapoints: schema.flatMap(datapointOf) } : undefined,
    lowPower: /lowpower/.test(profileSlug),
  };
}

/** A datapoint from cloudcutter's schema entry (`{id, mode, type: 'obj' | 'raw', property: {type, min, …}}`). */
function datapointOf(entry: SchemaEntry): Datapoint[] {
  const p = entry.property ?? {};
  const type = entry.type === 'raw' ? 'raw' : p.type;
  const types: Datapoint['type'][] = ['bool', 'value', 'enum', 'string', 'raw', 'bitmap'];
  if (!types.includes(type as Datapoint['type']) || !Number.isInteger(Number(entry.id))) return [];
  const mode = ['rw', 'ro', 'wr'].includes(String(entry.mode)) ? entry.mode as Datapoint['mode'] : 'rw';
  return [{ id: Number(entry.id), type: type as Datapoint['type'], mode, min: p.min, max: p.max, scale: p.scale,
    step: p.step, range: p.range?.map(String), unit: p.unit }];
}

interface SchemaEntry {
  id: number | string;
  mode?: string;
  type?: string;
  property?: { type?: string; min?: number; max?: number; scale?: number; step?: number; range?: unknown[];
    unit?: string };
}

function recipeText(config: TuyaConfig, m: Mapping, origin: RecipeOrigin, schema: string): string {
  const scalar = (v: unknown) => lib.yaml.stringify(v, { lineWidth: 0 }).trimEnd();
  const checked = m.pins.some((p) => ['drive', 'pulse', 'press', 'flip'].includes(roleOf(p.fn).check));
  return [
    `# yaml-language-server: $schema=${schema}`,
    ...wrap(`Generated by \`flash.ts recipe\` from ${origin.source}.`, 116).map((l) => `# ${l}`),
    checked ? '# Check the pins before the final firmware goes on: run it with --check-pins.'
      : '# Nothing here to check pin by pin: verify shows what the device answers once ESPHome runs on it.',
    `model: ${scalar(config.title)}`,
    `mcu: ${m.mcu}`,
    'kickstart: auto',
    'cloudcutter:',
    ...(origin.profile ? [`  profile: ${scalar(origin.profile)}`] : []),
    ...(origin.device ? [`  device: ${scalar(origin.device)}`] : []),
    ...(origin.otherProfiles?.length
      ? [`  # other stock firmware cloudcutter knows for it: ${origin.otherProfiles.join('; ')}`] : []),
    'ap_mode: >-',
    ...wrap(m.apMode, 100).map((l) => `  ${l}`),
    `esphome: ${config.slug}.esphome.yaml`,
    m.pins.length ? 'pins:' : 'pins: {}',
    ...m.pins.map(({ fn, pin, note }) => `  ${`${fn}: ${pin}`.padEnd(17)} ${note ? `# ${note}` : ''}`.trimEnd()),
    'substitutions:',
    ...m.subs.map(([k, v]) => `  ${k}: ${scalar(v)}${k === 'board' && m.boardNote ? `  # ${m.boardNote}` : ''}`),
    ...(m.remarks.length ? ['# About this mapping:'] : []),
    ...m.remarks.flatMap((r) => r.startsWith('  ') ? [`#   ${r}`]
      : wrap(r, 112).map((l, i) => `#   ${i ? '  ' : ''}${l}`)),
    ...(Object.keys(m.keys).length ? ["# Tuya's keys it was made from: a flash run compares the plug's own with them.",
      ...tuyaLines(m.keys)] : []),
    ...(m.unmapped.length ? ['# Tuya keys not mapped (left out of the template):'] : []),
    ...m.unmapped.map((l) => `#   ${l}`),
  ].join('\n') + '\n';
}

/** The recipe's `tuya:` line(s): one flow mapping, a key and its value never split between lines. */
function tuyaLines(keys: Record<string, string | number | boolean>): string[] {
  const pairs = Object.entries(keys).map(([k, v]) => `${k}: ${typeof v === 'string' ? JSON.stringify(v) : v}`);
  const lines = ['tuya: {'];
  pairs.forEach((p, i) => {
    const piece = `${p}${i < pairs.length - 1 ? ',' : ' }'}`;
    if (lines[lines.length - 1].length + 1 + piece.length > 116) lines.push(`  ${piece}`);
    else lines[lines.length - 1] += ` ${piece}`;
  });
  return lines;
}

/** Where the template's sections go, after the common part. */
const SECTION_ORDER = ['status_led', 'uart', 'tuya', 'sm2135', 'bp1658cj', 'bp5758d', 'sm2235', 'remote_receiver',
  'remote_transmitter', 'sensor', 'binary_sensor', 'switch', 'number', 'select', 'text_sensor', 'output', 'light',
  'fan', 'climate'];

/**
 * The template: the common part every generated device has (as recipes/status-plug.esphome.yaml, with the logger as
 * the hardware needs it), then the device's own sections. `!secret` names stay for ESPHome to resolve.
 */
function templateText(config: TuyaConfig, m: Mapping, origin: RecipeOrigin): string {
  const { yaml } = lib;
  const secret = (name: string) => Object.assign(new yaml.Scalar(name), { tag: '!secret' });
  const version = { platform: 'libretiny', version: { name: 'LibreTiny Version' } };
  const sections: Yaml = {
    esphome: { name: '${device_name}', friendly_name: '${friendly_name}' },
    bk72xx: { board: '${board}' },
    // LibreTiny's logger writes to UART2 (TX2, P0) on BK72xx: UART1 stays free for a TuyaMCU or an energy chip.
    logger: null,
    api: { encryption: { key: secret('api_encryption_key') } },
    ota: [{ platform: 'esphome', password: secret('ota_password') }],
    wifi: { ssid: secret('wifi_ssid'), password: secret('wifi_password'),
      ap: { ssid: '${device_name}', password: secret('ap_password') } },
    captive_portal: null,
  };
  for (const key of SECTION_ORDER) {
    const value = key === 'text_sensor' ? [version, ...((m.sections.text_sensor as Yaml[]) ?? [])] : m.sections[key];
    if (value !== undefined) sections[key] = value;
  }
  const header = [...wrap(`ESPHome template for ${config.title}, generated from ${origin.source}. flash.ts puts the ` +
    "recipe's substitutions in front; !secret names come from secrets.yaml.", 116),
  ...m.notes.flatMap((n) => wrap(n, 116))];
  // ESPHome reads YAML 1.1, where an unquoted Off or yes (a select's option) is a boolean: written as 1.1.
  const body = Object.entries(sections).map(([key, value]) =>
    new yaml.Document({ [key]: value }, { version: '1.1', aliasDuplicateObjects: false })
      .toString({ lineWidth: 0, nullStr: '' }));
  return `${header.map((l) => `# ${l}`).join('\n')}\n\n${body.join('\n')}`;
}

/** Words joined into lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last].length + 1 + word.length <= width) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines;
}

// ─── Tuya's storage on the plug's flash: the wiring the plug carries ───
// Tuya's firmware keeps its settings in an encrypted key-value store near the end of the flash (its SDK calls it
// "simple flash"); cloudcutter and Kickstart leave it where it was. Its `user_param_key` is the plug's own pin
// configuration, the same data cloudcutter's device list calls device_configuration. The reader below follows the
// format bk7231tools' analysis/kvstorage.py reads: a key block (AES-128-ECB under a fixed master key) holding the key
// of the data blocks; data blocks of 32 pages of 128 bytes whose index pages name a key and the pages holding its
// value. Only the values that describe the hardware are ever read out: gw_wsm holds the user's old Wi-Fi password,
// gw_bi the plug's cloud keys.

/**
 * The part of the flash Tuya's storage lies in: the SDK's place, 0x1EE000–0x1FFFFF (a key block, 14 data blocks, 3
 * swap blocks), and the place some lights' firmware moves it to, 0x1DD000. 192 KiB, not the whole 2 MiB.
 */
export const TUYA_STORAGE_WINDOW = { offset: 0x1d0000, length: 0x30000 } as const;

const TUYA_MASTER_KEY = Buffer.from('qwertyuiopasdfgh', 'latin1');
const TUYA_BLOCK = 0x1000;
const TUYA_PAGE = 0x80;
/** A key block, 14 data blocks and 3 swap blocks: every BK7231T/N SDK. */
const TUYA_STORAGE_SIZE = 18 * TUYA_BLOCK;

/** Values of Tuya's storage that describe the hardware (the rest is never read: it holds secrets). */
const HARDWARE_VALUES = /^(user_param_key|baud_cfg|uart_adapt_params|em_sys_env|[0-9a-z]{10})$/;

/** What reading Tuya's storage found: the hardware values (raw text), or why there are none. */
export type TuyaStorage =
  | { found: true; offset: number; values: Record<string, string>; problems: string[] }
  | { found: false; why: string };

/**
 * Tuya's storage in `flash`, a piece of the flash starting at flash address `base`: its hardware values, checked
 * (block and value checksums, every page a key names present). Pure.
 */
export function readTuyaStorage(flash: Buffer, base = 0): TuyaStorage {
  let damaged: string | undefined;
  for (let off = (TUYA_BLOCK - (base % TUYA_BLOCK)) % TUYA_BLOCK; off + TUYA_BLOCK <= flash.length; off += TUYA_BLOCK) {
    const inner = tuyaKeyBlock(flash.subarray(off, off + 32));
    if (!inner) continue;
    const read = readTuyaBlocks(flash, off, inner, base);
    if (read.found) return read;
    damaged ??= read.why;
  }
  return { found: false, why: damaged ?? 'no Tuya storage in it (erased, or never Tuya firmware)' };
}

/**
 * The inner key of a key block: its magic, and a checksum of the key that the protected block beside it (same
 * magic, newer SDKs) does not pass.
 */
function tuyaKeyBlock(head: Buffer): Buffer | undefined {
  const plain = aes128Ecb(TUYA_MASTER_KEY, head);
  if (plain.readUInt32LE(0) !== 0x13579753) return undefined;
  const key = plain.subarray(8, 24);
  return plain.readUInt32LE(4) === byteSum(key) ? Buffer.from(key) : undefined;
}

function readTuyaBlocks(flash: Buffer, keyOffset: number, inner: Buffer, base: number): TuyaStorage {
  const part1 = Buffer.from('8710', 'latin1');
  const part2 = Buffer.from('HHRRQbyemofrtytf', 'latin1');
  const dataKey = Buffer.from(inner.map((b, i) => (part1[i & 3] + part2[i] + b) & 0xff));
  const problems: string[] = [];
  const end = Math.min(flash.length, keyOffset + TUYA_STORAGE_SIZE);
  if (keyOffset + TUYA_STORAGE_SIZE > flash.length)
    problems.push(`the storage runs past what was read (it starts at 0x${(base + keyOffset).toString(16)})`);
  // A block is rewritten through a swap copy: of two with one id, the newer generation is the block.
  const blocks = new Map<number, { data: Buffer; generation: number }>();
  for (let off = keyOffset + TUYA_BLOCK; off + TUYA_BLOCK <= end; off += TUYA_BLOCK) {
    const data = aes128Ecb(dataKey, flash.subarray(off, off + TUYA_BLOCK));
    const magic = data.readUInt32LE(0);
    if ((magic !== 0x98761234 && magic !== 0x135726ab) || data.readUInt32LE(4) !== byteSum(data.subarray(8)))
      continue;
    const id = data.readUInt16LE(8);
    const generation = data.readUInt32LE(10);
    const known = blocks.get(id);
    if (!known || generation > known.generation) blocks.set(id, { data, generation });
  }
  if (!blocks.size) return { found: false, why: 'its key block is there, but no data block decrypts with it' };
  const values: Record<string, string> = {};
  for (const [id, { data }] of [...blocks].sort((a, b) => a[0] - b[0])) {
    const mapSize = data[14];
    for (let page = 1; page < 32; page++) {
      if (page >> 3 >= mapSize || !(data[15 + (page >> 3)] & (1 << (page & 7)))) continue;
      const index = data.subarray(page * TUYA_PAGE, (page + 1) * TUYA_PAGE);
      const nameLength = index[17];
      const name = index.subarray(18, 18 + Math.max(0, nameLength - 1)).toString('latin1');
      if (index.readUInt16LE(8) !== id || index[10] !== page || !HARDWARE_VALUES.test(name) || name in values) continue;
      const length = index.readUInt32LE(4);
      const parts = index.readUInt16LE(11);
      const pages: Buffer[] = [];
      for (let p = 0; p < parts; p++) {
        const at = 18 + nameLength + 4 * p;
        if (at + 4 > TUYA_PAGE) break;
        const block = blocks.get(index.readUInt16LE(at))?.data;
        if (!block) {
          problems.push(`${name} lies partly in block ${index.readUInt16LE(at)}, which is not there`);
          break;
        }
        for (let q = index[at + 2]; q <= index[at + 3] && q < 32; q++)
          pages.push(block.subarray(q * TUYA_PAGE, (q + 1) * TUYA_PAGE));
      }
      const value = Buffer.concat(pages).subarray(0, length);
      if (value.length !== length || byteSum(value) !== index.readUInt32LE(0)) {
        problems.push(`${name} is damaged (its checksum does not match)`);
        continue;
      }
      values[name] = value.toString('latin1').replace(/\0+$/, '');
    }
  }
  return { found: true, offset: base + keyOffset, values, problems };
}

function aes128Ecb(key: Buffer, data: Buffer): Buffer {
  const decipher = crypto.createDecipheriv('aes-128-ecb', key, null);
  decipher.setAutoPadding(false);
  return Buffer.concat([decipher.update(data), decipher.final()]);
}

/**
 * Tuya's loose JSON (`{Jsonver:1.1.8,module:CB2S,rl1_pin:24,...,crc:90,}`: bare words, a comma after the last pair)
 * or plain JSON, as cloudcutter's device files carry it: whole numbers without a leading zero become numbers, every
 * other bare word a string (1.0.5, 0505, false). Pure; undefined when it is neither.
 */
export function parseTuyaJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // Tuya's own: parsed below.
  }
  let at = 0;
  const peek = () => text[at];
  const fail = (): never => { throw new SyntaxError(`at ${at}`); };
  const value = (): unknown => {
    if (peek() === '{' || peek() === '[') {
      const object = peek() === '{';
      const out: unknown[] | Record<string, unknown> = object ? {} : [];
      at++;
      while (peek() !== (object ? '}' : ']')) {
        if (at >= text.length) fail();
        if (object) {
          const key = word();
          if (peek() !== ':') fail();
          at++;
          (out as Record<string, unknown>)[String(key)] = value();
        } else (out as unknown[]).push(value());
        if (peek() === ',') at++;
        else if (peek() !== (object ? '}' : ']')) fail();
      }
      at++;
      return out;
    }
    return word();
  };
  const word = (): unknown => {
    if (peek() === '"') {
      const end = text.indexOf('"', at + 1);
      if (end < 0) fail();
      const s = text.slice(at + 1, end);
      at = end + 1;
      return s;
    }
    const m = /^[^{}[\]:,]*/.exec(text.slice(at))![0];
    at += m.length;
    const s = m.trim();
    return /^(0|[1-9]\d*)$/.test(s) ? Number(s) : s;
  };
  try {
    const parsed = value();
    return text.slice(at).trim() === '' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Tuya's configuration from its storage's values (read from a flash dump, from the plug, or as the storage JSON
 * bk7231tools prints): user_param_key's pins, a TuyaMCU's baud rate (baud_cfg on BK7231N firmware,
 * uart_adapt_params on BK7231T) and datapoints (the schema stored under its id), and the chip em_sys_env names. Pure.
 */
export function tuyaFromStorage(values: Record<string, unknown>, title: string, slug: string): TuyaConfig {
  const parsed = (v: unknown) => (typeof v === 'string' ? parseTuyaJson(v) ?? v : v);
  const keys = flatTuyaKeys((parsed(values.user_param_key) ?? {}) as Record<string, unknown>);
  const baudCfg = parsed(values.baud_cfg) as { baud?: unknown } | undefined;
  const uart = parsed(values.uart_adapt_params) as { uart_baud?: unknown } | undefined;
  const baud = Number(baudCfg?.baud ?? uart?.uart_baud ?? keys.wifi_bdrate) || undefined;
  const schema = Object.entries(values).filter(([k]) => /^[0-9a-z]{10}$/.test(k)).map(([, v]) => parsed(v))
    .find((v): v is SchemaEntry[] => Array.isArray(v) && v.every((e) => e && typeof e === 'object' && 'id' in e));
  // em_sys_env names the chip; a TuyaMCU's UART setting does too (uart_adapt_params is BK7231T firmware's, baud_cfg
  // BK7231N's).
  const env = String(values.em_sys_env ?? '').toLowerCase();
  const chip = env.startsWith('bk7231n') ? 'BK7231N' : /^bk7231[st]/.test(env) ? 'BK7231T'
    : uart ? 'BK7231T' : baudCfg ? 'BK7231N' : undefined;
  const pinless = !Object.keys(keys).some((k) => !HOUSEKEEPING.test(k) && !TUYAMCU_KEYS.test(k));
  const mcu = baud !== undefined || (pinless && schema?.length) ? { baud, datapoints: (schema ?? [])
    .flatMap(datapointOf) } : undefined;
  return { title, slug, chip, keys, mcu };
}

/**
 * Tuya's older nested format (`{sw: {ch: [{bt: {pin: {value: 15}}, ...}]}, dltj: {...}}`, some devices' firmware)
 * in today's flat keys (bt1_pin ...); a flat configuration as it is. Pure.
 */
export function flatTuyaKeys(keys: Record<string, unknown>): Record<string, unknown> {
  if (!keys.sw || typeof keys.sw !== 'object') return keys;
  const flat: Record<string, unknown> = {};
  const walk = (prefix: string, v: unknown) => {
    if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}_${k}` : k, x);
    else flat[prefix] = v === true || v === 'true' ? 1 : v === false || v === 'false' ? 0 : v;
  };
  walk('', keys);
  // The old names: channel N's button and relay (counted from 0), the energy chip's pins, the Wi-Fi LED.
  const renames: [RegExp, string | ((...m: string[]) => string)][] = [
    [/^sw_/, ''], [/_value$/, ''], [/^ch_(\d+)_(bt|rl)/, (_, n, k) => `${k}${Number(n) + 1}`],
    [/^dltj_ct$/, 'chip_type'], [/^dltj_ivcpin/, 'sel_pin'], [/^dltj_ivpin_pin$/, 'vi_pin'],
    [/^dltj_epin_pin$/, 'ele_pin'], [/^dltj_ri$/, 'resistor'], [/^net_wfst/, 'netled'],
  ];
  return Object.fromEntries(Object.entries(flat).map(([k, v]) => {
    for (const [re, to] of renames) k = typeof to === 'string' ? k.replace(re, to) : k.replace(re, to);
    return [k, v];
  }));
}

// ─── cloudcutter's API: profiles and devices ───

export interface ProfileEntry { slug: string; name: string; type?: string; sub_name?: string }

/** A cloudcutter profile resolved for this recipe: what `-p` gets and the JSON written for it. */
export interface ResolvedProfile {
  deviceSlug: string;
  profileSlug: string;
  label: string;
  chip: string;
  device: Record<string, unknown>;
  profile: Record<string, unknown>;
}

/** Looks the recipe's profile and device up in cloudcutter's API and checks the chip against the recipe. */
async function resolveProfile(ctx: Ctx, quiet = false): Promise<ResolvedProfile> {
  const cc = ctx.recipe.cloudcutter;
  const get = (rel: string, notFound?: () => Error) =>
    cloudcutterApiGet(rel, { notFound, quiet, dryRun: ctx.opts.dryRun, signal: ctx.scope.signal }) as
      Promise<Record<string, any>>;
  const field = cc.profile ? 'profile' : 'device';
  const bad = (message: string, hint: string, key = field) => new InputError([{ file: shown(ctx.recipePath),
    line: ctx.lineOf(['cloudcutter', key]), field: `cloudcutter.${key}`, message, hint }]);
  let device: Record<string, any> | undefined;
  if (cc.device)
    device = await get(`devices/${cc.device}.json`,
      () => bad(`device "${cc.device}" is not in cloudcutter's device list`,
      'check the slug on https://tuya-cloudcutter.github.io/, or give cloudcutter.profile instead', 'device'));
  let profileSlug: string | undefined = device?.profiles?.[0]?.slug;
  if (cc.profile) {
    const list = (await get('profiles.json')) as unknown as ProfileEntry[];
    const found = findProfile(list, cc.profile);
    if (!found) {
      const near = suggestProfiles(list, cc.profile, ctx.recipe.mcu);
      throw bad(`"${cc.profile}" is not a profile in cloudcutter's list`, near.length
        ? `did you mean: ${near.join(' | ')}`
        : `\`${flashCommand()} profiles ${ctx.recipe.mcu}\` lists the labels (or copy one from cloudcutter's menu)`);
    }
    profileSlug = found.slug;
  }
  if (!profileSlug) throw bad(`device "${cc.device}" lists no profile`, 'give cloudcutter.profile too');
  const profile = await get(`profiles/${profileSlug}.json`,
    () => bad(`profile "${profileSlug}" is in the list but its ` +
    'file is missing from the API', 'try again later, or pick another profile'));
  const chip = String(profile.firmware?.chip ?? '');
  if (chip.toLowerCase() !== ctx.recipe.mcu)
    throw bad(`profile ${profileSlug} is for a ${chip || 'unknown chip'} (its firmware.chip), ` +
      `but the recipe's mcu is ${ctx.recipe.mcu}`,
      `pick a profile whose label ends "- ${MCUS[ctx.recipe.mcu].chip}", or fix mcu if the plug has the other chip`);
  // In flash mode cloudcutter works with the profile's first device, unless the recipe names one.
  const deviceSlug: string | undefined = cc.device ?? profile.devices?.[0]?.slug;
  if (!deviceSlug) throw bad(`profile ${profileSlug} lists no device`, 'give cloudcutter.device too');
  device ??= (await get(`devices/${deviceSlug}.json`)) as Record<string, any>;
  return { deviceSlug, profileSlug, label: profileLabel(profile as ProfileEntry), chip, device, profile };
}

/** A profile from `profiles.json` by menu label ("1.1.8 - BK7231N / oem_bk7231n_plug") or slug. Pure. */
export function findProfile(list: ProfileEntry[], wanted: string): ProfileEntry | undefined {
  const norm = (s: string) => s.trim().replace(/\s+/g, ' ').toLowerCase();
  const w = norm(wanted);
  return list.find((p) => p.slug.toLowerCase() === w) ?? list.find((p) => norm(profileLabel(p)) === w);
}

/** Up to three menu labels close to what the recipe says, for the same chip. Pure. */
export function suggestProfiles(list: ProfileEntry[], wanted: string, mcu: Mcu): string[] {
  const labels = list.filter((p) => p.name.toLowerCase().includes(mcu)).map(profileLabel);
  const sub = wanted.split('/').pop()?.trim().toLowerCase() ?? '';
  const same = labels.filter((l) => sub && l.toLowerCase().endsWith(`/ ${sub}`));
  const near = nearest(wanted, labels);
  return [...new Set([...(near ? [near] : []), ...same])].slice(0, 3);
}

/**
 * GET a file of cloudcutter's profile API with a timeout; keep a copy in the cache, and use the copy
 * when offline. `notFound` builds the error for a 404 (the thing does not exist).
 */
async function cloudcutterApiGet(rel: string,
  o: { notFound?: () => Error; quiet?: boolean; dryRun?: boolean; optional?: boolean; signal?: AbortSignal } = {}):
  Promise<unknown> {
  const base = setting('FLASH_CLOUDCUTTER_API').replace(/\/$/, '');
  // A local copy of the API (a folder, or a file:// URL): read as it is, no cache.
  if (!/^https?:\/\//.test(base)) {
    const file = path.join(base.startsWith('file://') ? fileURLToPath(base) : path.resolve(base), rel);
    if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
    if (o.notFound) throw o.notFound();
    if (o.optional) return undefined;
    throw new Failure(`${shown(file)} does not exist`, 'FLASH_CLOUDCUTTER_API names a copy of cloudcutter\'s API: ' +
      'a folder with devices.json, profiles.json, devices/ and profiles/ (or an https:// URL)');
  }
  const url = `${base}/${rel}`;
  const cached = path.join(process.env.XDG_CACHE_HOME || path.join(process.env.HOME || '.', '.cache'), 'flash.ts',
    'cloudcutter-api', rel);
  let reason: string;
  try {
    // Tried again when the connection broke: a server may close a kept-alive connection just as it is reused.
    const res = await request('GET', url, { retries: 1, shown: rel, signal: o.signal });
    if (res.status === 404 && o.notFound) throw o.notFound();
    if (res.status >= 400) throw new Error(`HTTP ${res.status}`);
    const data = JSON.parse(res.text);
    if (!o.dryRun) {
      fs.mkdirSync(path.dirname(cached), { recursive: true });
      writeFileAtomic(cached, res.text);
    }
    return data;
  } catch (e) {
    if (e instanceof InputError) throw e;
    o.signal?.throwIfAborted();
    reason = failure(e);
  }
  if (fs.existsSync(cached)) {
    const day = fs.statSync(cached).mtime.toISOString().slice(0, 10);
    if (!o.quiet) print(c.yellow(`    offline? ${url}: ${reason}; using the copy cached ${day}`));
    return JSON.parse(fs.readFileSync(cached, 'utf8'));
  }
  if (o.optional) return undefined;
  throw new Failure(`cannot fetch ${url} (${reason}) and there is no cached copy`,
    'connect this machine to the internet once (the plug is not needed for this), then retry; or set ' +
    'FLASH_CLOUDCUTTER_API to a mirror, or to a folder with a copy of its API');
}

// ─── The plug on the network: its address, HTTP with retries, mDNS ───

/** The plug's Kickstart web server: --device-ip first (the user said so), else the address learned. */
function plugWebUrl(ctx: Ctx): string {
  const given = ctx.opts.deviceIp ? parseDeviceAddress(ctx.opts.deviceIp) : undefined;
  const host = given?.host ?? ctx.facts.kickstartIp;
  if (!host) throw new Failure("the plug's address is not known yet",
    `run the kickstart step first (${rerun(ctx.opts, '--from kickstart')}), or pass --device-ip IP`);
  const port = String(given?.port ?? setting('FLASH_DEVICE_HTTP_PORT'));
  return `http://${host}${port !== '80' ? `:${port}` : ''}`;
}

/** `--device-ip` as written: an IPv4 address or a host name, and optionally the web server's port. Pure. */
export function parseDeviceAddress(text: string): { host: string; port?: number } | undefined {
  const m = /^([A-Za-z0-9.-]+?)(?::(\d{1,5}))?$/.exec(text.trim());
  if (!m) return undefined;
  const [, host, portText] = m;
  const ipv4 = /^\d{1,3}(\.\d{1,3}){3}$/.test(host) && host.split('.').every((n) => Number(n) <= 255);
  const label = '[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?';
  const name = new RegExp(`^${label}(\\.${label})*$`).test(host) && !/^[\d.]+$/.test(host);
  const port = portText === undefined ? undefined : Number(portText);
  if (!(ipv4 || name) || (port !== undefined && (port < 1 || port > 65535))) return undefined;
  return { host, port };
}

/**
 * The plug's Kickstart web server, checked to answer: the address given or learned; when the learned one is silent
 * (a new DHCP lease), the plug by its MAC on mDNS; then the user is asked (with --yes: told to pass --device-ip).
 */
async function reachKickstart(ctx: Ctx, step: StepName): Promise<string> {
  // Given by the user: what answers there is the step's business. Nothing to go by at all: plugWebUrl() says so.
  const known = ctx.facts.kickstartIp || ctx.facts.mac || ctx.facts.tuyaMac;
  if (ctx.opts.deviceIp || !known) return plugWebUrl(ctx);
  if (ctx.facts.kickstartIp) {
    const base = plugWebUrl(ctx);
    if (await isKickstart(base)) return base;
    print(`    ${warn()} no Kickstart answers at ${ctx.facts.kickstartIp} any more: looking for the plug again`);
  }
  const wait = ms('FLASH_DISCOVERY_TIMEOUT_MS');
  if (await kickstartOnLan(ctx, wait, 'looking for the plug on your network (mDNS)', 'exact'))
    return plugWebUrl(ctx);
  return askKickstart(ctx, { what: `the plug's Kickstart is not at ${ctx.facts.kickstartIp ?? 'a known address'} ` +
    `and did not show up on mDNS within ${seconds(wait)}`,
  hint: `find the plug in your router's list and give its address: ${rerun(ctx.opts, `--from ${step} --device-ip IP`)}`
  });
}

/**
 * Asks for the Kickstart plug's address until one answers as Kickstart; `trouble` is why it is asked, the run's
 * failure when nobody can answer or the user gives up.
 */
async function askKickstart(ctx: Ctx, trouble: { what: string; hint: string }): Promise<string> {
  for (;;) {
    ctx.facts.kickstartIp = await askAddress(ctx, "The plug's IP address (your router lists it as " +
      'kickstart-bk7231…; an empty answer gives up)', trouble);
    const base = plugWebUrl(ctx);
    if (await isKickstart(base)) return base;
    print(`    ${warn()} no Kickstart answers at ${base}`);
  }
}

/**
 * Asks the user for the plug's address (their router's client list has it). `trouble`, why it is asked, is the
 * failure when nobody can answer or the user gives up (an empty answer).
 */
async function askAddress(ctx: Ctx, message: string, trouble: { what: string; hint: string }): Promise<string> {
  const answer = await ask({ id: 'device_ip', kind: 'input', message, unanswered: trouble,
    validate: (s) => !s.trim() || parseDeviceAddress(s) ? true : 'an address like 192.168.1.57' }, ctx);
  const host = parseDeviceAddress(answer)?.host;
  if (!host) throw new Failure(trouble.what, trouble.hint);
  return host;
}

/**
 * One HTTP request with a timeout; connection errors and 5xx answers are retried with backoff.
 * `shown` is the URL to name in messages when the real one carries a secret.
 */
export async function request(method: string, url: string,
  o: { shown?: string; redirect?: 'manual' | 'follow'; retries?: number; signal?: AbortSignal } = {}):
  Promise<{ status: number; text: string; body: Buffer }> {
  const retries = o.retries ?? 3;
  let last = '';
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt) await sleep(250 * 2 ** (attempt - 1), o.signal);
    try {
      const signal = withTimeout(ms('FLASH_HTTP_TIMEOUT_MS'), o.signal);
      const res = await fetch(url, { method, redirect: o.redirect ?? 'follow', signal });
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status >= 500) {
        last = `HTTP ${res.status}`;
        continue;
      }
      return { status: res.status, text: body.toString('utf8'), body };
    } catch (e) {
      o.signal?.throwIfAborted();
      last = failure(e);
    }
  }
  throw new HttpError(`${method} ${o.shown ?? url} failed after ${retries + 1} tries: ${last}`);
}

export interface MdnsDevice {
  name: string; host: string; addresses: string[]; port: number; txt: Record<string, string>;
}

/** Browses `_esphomelib._tcp` until a device matches, re-asking every 2 s (BK72xx mDNS can be slow to answer). */
export async function discoverDevice(match: (d: MdnsDevice) => boolean, timeout: number, label?: string,
  o: MdnsStops = {}): Promise<MdnsDevice | undefined> {
  const found = await browseMdns((seen) => seen.find(match), timeout, label, o);
  return Array.isArray(found) ? found[0] : found;
}

/** What ends a search early: the run's stop (`signal`: the search fails with it), or `stop` (it ends, none found). */
interface MdnsStops { signal?: AbortSignal; stop?: AbortSignal }

/**
 * Browses `_esphomelib._tcp` until `pick` chooses among the devices seen so far (asked on every answer, every
 * 2 s, and once more, `last`, when time is up). With a label, a spinner shows the wait.
 */
async function browseMdns(pick: (seen: MdnsDevice[], last: boolean) => MdnsDevice | MdnsDevice[] | undefined,
  timeout: number, label?: string, o: MdnsStops = {}): Promise<MdnsDevice | MdnsDevice[] | undefined> {
  o.signal?.throwIfAborted();
  if (o.stop?.aborted) return undefined;
  const { Bonjour } = await import('bonjour-service');
  const iface = setting('FLASH_MDNS_INTERFACE');
  // Bind the wildcard address: a socket bound to the interface's own address receives no multicast.
  const bonjour = new Bonjour({ ...(iface ? { interface: iface, bind: '0.0.0.0' } : {}),
    port: Number(setting('FLASH_MDNS_PORT')) } as object);
  const browser = bonjour.find({ type: 'esphomelib', protocol: 'tcp' });
  const seen = new Map<string, MdnsDevice>();
  const search = new Promise<MdnsDevice | MdnsDevice[] | undefined>((resolve, reject) => {
    const judge = (last = false) => {
      const chosen = pick([...seen.values()], last);
      if (chosen || last) finish(chosen);
    };
    type Service = { name: string; host: string; addresses?: string[]; port: number; txt?: Record<string, unknown> };
    const note = (svc: Service) => {
      const d: MdnsDevice = { name: svc.name, host: svc.host, addresses: svc.addresses ?? [], port: svc.port,
        txt: Object.fromEntries(Object.entries(svc.txt ?? {}).map(([k, v]) => [k, String(v)])) };
      if (!d.addresses.length) return;
      seen.set(`${d.name} ${d.txt.mac ?? ''}`, d);
      judge();
    };
    const requery = setInterval(() => {
      for (const svc of browser.services) note(svc);
      judge();
      browser.update();
    }, 2000);
    const timer = setTimeout(() => judge(true), timeout);
    // Removed when the search ends: the run's signal outlives many searches (a batch of plugs).
    const ended = () => finish(undefined);
    const stopped = () => finish(undefined, o.signal!.reason);
    o.stop?.addEventListener('abort', ended);
    o.signal?.addEventListener('abort', stopped);
    browser.on('up', note);
    browser.on('txt-update', note);
    let finished = false;
    function finish(d: MdnsDevice | MdnsDevice[] | undefined, why?: unknown) {
      if (finished) return;
      finished = true;
      o.stop?.removeEventListener('abort', ended);
      o.signal?.removeEventListener('abort', stopped);
      clearInterval(requery);
      clearTimeout(timer);
      browser.stop();
      bonjour.destroy();
      if (why !== undefined) reject(why);
      else resolve(d);
    }
  });
  return label ? withSpinner(label, search) : search;
}

/** The Wi-Fi adapter cloudcutter hosts its AP on and the Kickstart join uses: --wifi-iface, or the first with AP
 *  mode. */
async function apAdapter(ctx: Ctx): Promise<string> {
  if (ctx.opts.wifiIface) return ctx.opts.wifiIface;
  if (ctx.adapter) return ctx.adapter;
  const adapters = await wifiAdapters(ctx.scope.signal);
  return (ctx.adapter = (await findApAdapter(adapters, undefined, undefined, ctx.scope.signal))?.dev ??
    adapters[0]?.dev ?? 'wlan0');
}

async function supportsApMode(dev: string, signal?: AbortSignal): Promise<boolean> {
  return /:yes\s*$/m.test((await sh(['nmcli', '-t', '-f', 'WIFI-PROPERTIES.AP', 'device', 'show', dev],
    { signal })).stdout);
}

/** Whether a fresh scan on `iface` sees `ssid` (NetworkManager's list is stale until rescanned). */
async function apOnAir(iface: string, ssid: string, signal?: AbortSignal): Promise<boolean> {
  const r = await sh(['nmcli', '-t', '-f', 'SSID', 'device', 'wifi', 'list', '--rescan', 'yes', 'ifname', iface],
    { signal });
  return r.code === 0 && parseNmcliTerse(r.stdout).some((row) => row[0] === ssid);
}

/** Rescans until `ssid` is on the air or `wait` is over; a spinner shows the time it takes. */
async function waitForAp(ctx: Ctx, iface: string, ssid: string, wait: number, label: string): Promise<boolean> {
  const until = Date.now() + wait;
  return withSpinner(label, (async () => {
    for (;;) {
      if (await apOnAir(iface, ssid, ctx.scope.signal)) return true;
      if (Date.now() >= until) return false;
      await sleep(Math.min(2000, Math.max(0, until - Date.now())), ctx.scope.signal);
    }
  })());
}

/** The IPv4 address among a device's addresses (plugs have no usable IPv6), else the first. */
function ipv4Of(addresses: string[]): string {
  return addresses.find((a) => a.includes('.')) ?? addresses[0];
}

/** One spelling for a MAC, whichever tool printed it (cloudcutter and mDNS: c8478c…, Kickstart: C8:47:8C:…).
 *  Pure. */
export function formatMac(mac: string | undefined): string | undefined {
  const hex = mac?.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  return hex?.length === 12 ? hex.match(/../g)!.join(':') : undefined;
}

/** A MAC as 12 lower-case hex digits, for comparing and for file names. */
function macKey(mac: string | undefined): string | undefined {
  return formatMac(mac)?.replace(/:/g, '').toLowerCase();
}

// ─── Firmware files: what a .ug.bin or .uf2 is, and whether it fits the recipe ───

export type FirmwareInfo =
  | { kind: 'ug'; version: string; dataLength: number; chip?: Mcu; chipFrom: 'header' | 'file name' | 'unknown' }
  | { kind: 'uf2'; blocks: number; familyId: number; chip?: Mcu };

const UG_MAGIC = 0x55aa55aa;
const UG_END_MAGIC = 0xaa55aa55;
const UF2_MAGIC0 = 0x0a324655;
const UF2_MAGIC1 = 0x9e5d5157;
const UF2_MAGIC_END = 0x0ab16f30;
const CLOUDCUTTER_REPO = 'https://github.com/tuya-cloudcutter/tuya-cloudcutter.git';

/** Reads a Beken UG OTA file (what cloudcutter flashes) or a UF2 (what Kickstart's web OTA takes). Pure. */
export function inspectFirmware(buf: Buffer, fileName: string): FirmwareInfo {
  const name = path.basename(fileName);
  // cloudcutter reads the first 512 bytes and rejects anything shorter.
  if (buf.length < 512)
    throw new FirmwareError(`${name} is truncated: ${buf.length} bytes, a firmware file has at least 512`);
  if (buf.readUInt32BE(0) === UG_MAGIC) return inspectUG(buf, name);
  if (buf.readUInt32LE(0) === UF2_MAGIC0) return inspectUF2(buf, name);
  throw new FirmwareError(`${name} is neither a Beken UG file (55 AA 55 AA) nor a UF2 file: it starts with ` +
    buf.subarray(0, 4).toString('hex'));
}

function inspectUG(buf: Buffer, name: string): FirmwareInfo {
  const version = buf.subarray(4, 16).toString('latin1').replace(/\0.*$/s, '');
  const dataLength = buf.readUInt32BE(16);
  const damaged = (what: string) => new FirmwareError(`${name} has a ${what}: the file is damaged, download it again`);
  if (buf.readUInt32BE(28) !== UG_END_MAGIC) throw damaged('damaged UG header (no AA 55 AA 55 at byte 28)');
  if (byteSum(buf.subarray(0, 24)) !== buf.readUInt32BE(24)) throw damaged('bad header checksum');
  if (buf.length < 32 + dataLength)
    throw new FirmwareError(`${name} is truncated: the header says ${32 + dataLength} bytes, ` +
      `the file has ${buf.length}; download it again`);
  if (byteSum(buf.subarray(32, 32 + dataLength)) !== buf.readUInt32BE(20)) throw damaged('bad data checksum');
  // Like cloudcutter: the chip from the RBL version string at offset 60, else from the file name.
  const rbl = buf.subarray(60, 84).toString('latin1').replace(/\0.*$/s, '').toLowerCase();
  const fromHeader = rbl.match(/bk7231[tn]/)?.[0] as Mcu | undefined;
  const fromName = name.toLowerCase().match(/bk7231[tn]/)?.[0] as Mcu | undefined;
  return { kind: 'ug', version, dataLength, chip: fromHeader ?? fromName,
    chipFrom: fromHeader ? 'header' : fromName ? 'file name' : 'unknown' };
}

function inspectUF2(buf: Buffer, name: string): FirmwareInfo {
  if (buf.length % 512)
    throw new FirmwareError(`${name} is truncated: ${buf.length} bytes is not a whole number of 512-byte UF2 blocks`);
  let familyId: number | undefined;
  for (let off = 0; off < buf.length; off += 512) {
    const good = buf.readUInt32LE(off) === UF2_MAGIC0 && buf.readUInt32LE(off + 4) === UF2_MAGIC1 &&
      buf.readUInt32LE(off + 508) === UF2_MAGIC_END;
    if (!good) throw new FirmwareError(`${name} is damaged: UF2 block ${off / 512} has bad magic numbers`);
    if (buf.readUInt32LE(off + 8) & 0x2000) familyId ??= buf.readUInt32LE(off + 28);
  }
  if (familyId === undefined)
    throw new FirmwareError(`${name} is a UF2 without a family ID: it does not say which chip it is for`);
  const chip = (Object.keys(MCUS) as Mcu[]).find((m) => MCUS[m].familyId === familyId);
  return { kind: 'uf2', blocks: buf.length / 512, familyId, chip };
}

/** The file is right for this recipe, or a FirmwareError that names it, says what it is and what is needed. */
export function checkFirmwareFor(info: FirmwareInfo, fileName: string, mcu: Mcu): void {
  const name = path.basename(fileName);
  const what = info.kind === 'ug' ? `a UG file (version ${info.version})`
    : `a UF2 with family ID 0x${info.familyId.toString(16).toUpperCase()}`;
  if (!info.chip)
    throw new FirmwareError(`${name} is ${what} for an unknown chip; the recipe needs ${MCUS[mcu].chip} firmware`);
  if (info.chip !== mcu)
    throw new FirmwareError(`${name} is ${what} for the ${MCUS[info.chip].chip}, but the recipe's mcu is ${mcu}: ` +
      'flashing it would fail');
}

/** A firmware file read and checked for `mcu`; what is wrong with it is a Failure with `hint`. */
function checkedFirmware(file: string, mcu: Mcu, hint: string, prefix = ''):
  { file: string; data: Buffer; info: FirmwareInfo } {
  if (!fs.existsSync(file)) throw new Failure(`${prefix}there is no ${shown(file)}`, hint);
  const data = fs.readFileSync(file);
  try {
    const info = inspectFirmware(data, file);
    checkFirmwareFor(info, file, mcu);
    return { file, data, info };
  } catch (e) {
    if (e instanceof FirmwareError) throw new Failure(prefix + e.message, hint);
    throw e;
  }
}

/** The newest `ESPHome-Kickstart-v*_<mcu>_app.ota.ug.bin` among file names, or undefined. Pure. */
export function pickKickstart(files: string[], mcu: Mcu): string | undefined {
  const re = new RegExp(`^ESPHome-Kickstart-v([0-9.]+)_${mcu}_app\\.ota\\.ug\\.bin$`, 'i');
  const versions = files.flatMap((f) => {
    const m = f.match(re);
    return m ? [{ f, v: m[1].split('.').map(Number) }] : [];
  });
  versions.sort((a, b) => compareVersions(b.v, a.v));
  return versions[0]?.f;
}

function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  }
  return 0;
}

function byteSum(buf: Buffer): number {
  let s = 0;
  for (const b of buf) s = (s + b) >>> 0;
  return s;
}

/** The Kickstart file the recipe asks for, read and checked. Throws StepError naming the file and the fix. */
export function resolveKickstart(recipe: Recipe, cloudcutterDir: string):
  { file: string; path: string; info: FirmwareInfo } {
  const dir = path.join(cloudcutterDir, 'custom-firmware');
  let files: string[];
  try {
    files = fs.readdirSync(dir);
  } catch {
    throw new Failure(`no ${shown(dir)} folder: the cloudcutter checkout is missing or incomplete`,
      cloneHint(cloudcutterDir));
  }
  const file = recipe.kickstart === 'auto' ? pickKickstart(files, recipe.mcu) : recipe.kickstart;
  if (!file)
    throw new Failure(`no ESPHome-Kickstart-*_${recipe.mcu}_app.ota.ug.bin in ${shown(dir)}`,
      `update the checkout (git -C ${shq(cloudcutterDir)} pull) or name a file with kickstart: in the recipe`);
  const full = path.join(dir, file);
  if (!fs.existsSync(full))
    throw new Failure(`kickstart file ${file} is not in ${shown(dir)}`,
      `files there: ${files.filter((f) => !f.startsWith('.')).join(', ') || '(none)'}; or use kickstart: auto`);
  const { info } = checkedFirmware(full, recipe.mcu,
    `use kickstart: auto, or the ..._${recipe.mcu}_app.ota.ug.bin file from ${shown(dir)}`);
  return { file, path: full, info };
}

function cloneHint(dir: string): string {
  return `git clone --depth 1 ${CLOUDCUTTER_REPO} ${shq(dir)}`;
}

// ─── The journal: never lose the user's place ───

/** `<out>/.flash/<device_name>.json`: the steps done (with a hash of their inputs) and the facts learned. */
export interface Journal {
  version: 1;
  device_name: string;
  recipe: string;
  steps: Partial<Record<StepName, { at: string; inputs: string }>>;
  facts: Facts;
  /** The step under way, until it finishes: after a crash or Ctrl+C, the plug may be further along than `steps`
   *  says. */
  started?: { step: StepName; at: string };
}

export function journalFile(out: string, deviceName: string): string {
  return path.join(out, '.flash', `${deviceName}.json`);
}

/** The journal in `file`, or undefined when there is none (or it is unreadable: then the run starts afresh). */
export function readJournal(file: string): Journal | undefined {
  try {
    const j = JSON.parse(fs.readFileSync(file, 'utf8')) as Journal;
    return j.version === 1 && j.steps && j.facts ? j : undefined;
  } catch {
    return undefined;
  }
}

/** Notes a finished step in the journal (atomically), with the facts learned so far. */
function recordStep(ctx: Ctx, step: StepName): void {
  if (ctx.opts.dryRun) return;
  const inputs = stepInputs(ctx, step);
  const facts = { ...ctx.journal.facts, ...ctx.facts };
  // Same step, same inputs, nothing new learned: leave the file alone (a re-run changes nothing).
  if (ctx.journal.steps[step]?.inputs === inputs && JSON.stringify(facts) === JSON.stringify(ctx.journal.facts)) return;
  ctx.journal.steps[step] = { at: new Date().toISOString(), inputs };
  ctx.journal.facts = facts;
  if (ctx.journal.started?.step === step) delete ctx.journal.started;
  writeJournal(ctx);
}

function writeJournal(ctx: Ctx): void {
  fs.mkdirSync(path.dirname(ctx.files.journal), { recursive: true });
  writeFileAtomic(ctx.files.journal, JSON.stringify(ctx.journal, null, 2) + '\n');
}

/** Notes in the journal that a step began, so a run that dies midway knows to look where the plug got to. */
function recordStart(ctx: Ctx, step: StepName): void {
  if (ctx.opts.dryRun) return;
  ctx.journal.started = { step, at: new Date().toISOString() };
  writeJournal(ctx);
}

/** What a step depends on, as a hash (its `inputs` in STEPS): when it changes, the step is redone. */
export function stepInputs(ctx: Ctx, step: StepName): string {
  return sha256(JSON.stringify(STEPS.find((s) => s.name === step)!.inputs(ctx))).slice(0, 16);
}

function sha256(data: string | Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/**
 * Where this run starts. A plain re-run resumes after the steps the journal says are done and whose
 * inputs have not changed since; --from, --only and --restart say where explicitly.
 */
function resumePoint(ctx: Ctx, steps: Step[]): Step[] {
  const { opts, journal } = ctx;
  if (opts.restart || opts.only || opts.from) {
    if (opts.restart && Object.keys(journal.steps).length)
      print(c.dim(`  --restart: starting over (the journal said ${Object.keys(journal.steps).join(', ')} done)`));
    if (opts.restart) ctx.journal = { ...journal, steps: {}, facts: {} };
    else if (opts.from) print(c.dim(`  starting at ${opts.from} (--from)`));
    return steps;
  }
  const done = (s: Step) => s.journal !== 'never' && journal.steps[s.name]?.inputs === stepInputs(ctx, s.name);
  const skipped = steps.filter(done).map((s) => s.name);
  const changed = steps.filter((s) => journal.steps[s.name] && !done(s)).map((s) => s.name);
  if (skipped.length) print(`  resuming: ${skipped.join(', ')} already done (journal ${shown(ctx.files.journal)}); ` +
    '--restart starts over');
  if (changed.length) print(`  redoing ${changed.join(', ')}: inputs changed since last time`);
  return steps.filter((s) => !done(s));
}

// ─── Loading and checking a recipe ─────────────

/** Reads, validates and prepares everything a run needs. Throws InputError (exit 2) on any problem. */
export function loadContext(opts: Options, scope: RunScope): Ctx {
  const recipePath = opts.recipe;
  const { recipe, doc, lineCounter } = loadRecipe(recipePath, opts.sets);
  const lineOf = (field: string[]) => lineOfNode(doc, lineCounter, field);
  const templatePath = path.resolve(path.dirname(recipePath), recipe.esphome);
  let template = '';
  try {
    // A recipe whose pins come from the plug gets its template once they are read.
    if (!fromPlug(recipe) || fs.existsSync(templatePath)) template = fs.readFileSync(templatePath, 'utf8');
  } catch {
    throw new InputError([{ file: shown(recipePath), line: lineOf(['esphome']), field: 'esphome',
      message: `template "${recipe.esphome}" not found (looked for ${shown(templatePath)})`,
      hint: 'name a file next to the recipe, e.g. status-plug.esphome.yaml' }]);
  }
  const substitutions = substitutionsFor(recipe);
  if (template) checkTemplate(template, templatePath, substitutions, opts.sets);
  const deviceName = substitutions.device_name;
  const files = {
    config: path.join(opts.out, `${deviceName}.yaml`),
    secrets: path.join(opts.out, 'secrets.yaml'),
    journal: journalFile(opts.out, deviceName),
    // ESPHome names its build dir after `esphome: name:`, which the template takes from device_name.
    uf2: path.join(opts.out, '.esphome', 'build', deviceName, '.pioenvs', deviceName, 'firmware.uf2'),
  };
  // Every secret already in secrets.yaml is hidden from output and logs from the start, whichever steps run,
  // and a Wi-Fi value ESPHome would refuse is bad input now rather than a failed compile later.
  checkWifiInputs(files.secrets);
  const journal = readJournal(files.journal)
    ?? { version: 1, device_name: deviceName, recipe: recipePath, steps: {}, facts: {} };
  return { opts, scope, recipe, recipePath, lineOf, templatePath, template, substitutions, deviceName, files, journal,
    facts: { ...journal.facts }, finished: [],
    // The journal's "started" is overwritten as soon as this run begins a step: keep what the last run left.
    interrupted: journal.started?.step };
}

/** The recipe file parsed and validated, with `--set` values applied first so they are checked too. */
export function loadRecipe(file: string, sets: Record<string, string> = {}):
  { recipe: Recipe; doc: Document; lineCounter: LineCounter } {
  let text: string;
  try {
    const bytes = fs.readFileSync(file);
    // A firmware image, a dump, a zip given by mistake: said as such, not parsed into a page of errors.
    if (bytes.subarray(0, 8192).includes(0))
      throw new InputError([{ file: shown(file), message: 'this is a binary file, not a recipe (a recipe is YAML text)',
        hint: `give a recipe (e.g. recipes/23A.yaml); to make one from a flash dump: ${flashCommand()} recipe ` +
          shq(file) }]);
    text = bytes.toString('utf8');
  } catch (e) {
    if (e instanceof InputError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const dir = path.dirname(file);
    const nearby = fs.existsSync(dir) ? fs.readdirSync(dir).filter(isRecipeFile) : [];
    // Paths are taken from where the user stands; flash.ts's own recipes are beside it.
    const own = path.resolve(HOME_DIR, file);
    throw new InputError([{ file: shown(file),
      message: code === 'ENOENT' ? 'recipe file not found' : `cannot read the recipe (${code})`,
      hint: !path.isAbsolute(file) && own !== path.resolve(file) && fs.existsSync(own)
        ? `paths are taken from where you are (${process.cwd()}); flash.ts's own is ${own}`
        : nearby.length ? `recipes in ${shown(dir)}/: ${nearby.join(', ')}`
          : 'give the path of a recipe, e.g. recipes/23A.yaml' }]);
  }
  const lineCounter = new (lib.yaml.LineCounter)();
  const doc = lib.yaml.parseDocument(text, { lineCounter, prettyErrors: true });
  if (doc.errors.length)
    throw new InputError(doc.errors.slice(0, 3).map((err) => ({
      file: shown(file), line: err.linePos?.[0].line,
      message: `YAML syntax error: ${firstLine(err.message).replace(/ at line \d+, column \d+:?$/, '')}`,
      hint: 'check the indentation (spaces, not tabs) and that "key: value" has a space after the colon',
    })));
  const data = doc.toJS() ?? {};
  const example = 'start from one that works: recipes/23A.yaml (README: "Recipes")';
  if (doc.contents === null || (typeof data === 'object' && !Array.isArray(data) && !Object.keys(data).length))
    throw new InputError([{ file: shown(file), message: 'the recipe is empty', hint: example }]);
  if (typeof data !== 'object' || Array.isArray(data))
    throw new InputError([{ file: shown(file), line: 1, message: `a recipe is a mapping of keys (model:, mcu:, …), ` +
      `and this is ${describe(data)}`, hint: example }]);
  const setField: Record<string, string> = {};
  applySets(data, sets, setField);

  const parsed = recipeSchema().safeParse(data, { reportInput: true });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) =>
      problemFromIssue(issue, shown(file), doc, lineCounter, setField));
    // A misspelt required key is unknown and missing at once, with the same rename on the same line: said once,
    // as the unknown key (what is written there).
    const twice = (p: Problem) => /^missing/.test(p.message) &&
      problems.some((q) => q !== p && q.line === p.line && q.hint === p.hint);
    throw new InputError(problems.filter((p) => !twice(p)));
  }
  const recipe = parsed.data;
  // zod lists declared keys first; keep the order the recipe author wrote instead.
  const order = Object.keys((data as Record<string, any>).substitutions ?? {});
  recipe.substitutions = Object.fromEntries(order.map((k) => [k, recipe.substitutions[k]])) as Recipe['substitutions'];
  return { recipe, doc, lineCounter };
}

/** A recipe file by its name: YAML, and not an ESPHome template. */
function isRecipeFile(name: string): boolean {
  return /\.ya?ml$/.test(name) && !name.includes('.esphome.');
}

/** The other recipes beside this one that `match` (which plug this is, when it turns out to be another). */
function siblingRecipes(ctx: Ctx, match: (r: Recipe) => boolean): string[] {
  const dir = path.dirname(ctx.recipePath);
  return fs.readdirSync(dir).filter(isRecipeFile).map((f) => path.join(dir, f))
    .filter((f) => path.resolve(f) !== path.resolve(ctx.recipePath)).flatMap((f) => {
      try {
        return match(loadRecipe(f).recipe) ? [f] : [];
      } catch {
        return [];
      }
    });
}

/** `--set key=value` lands where the recipe keeps that value: `<fn>_pin` in pins, the rest in substitutions. */
function applySets(data: Record<string, any>, sets: Record<string, string>, setField: Record<string, string>): void {
  for (const [key, value] of Object.entries(sets)) {
    const fn = key.endsWith('_pin') ? key.slice(0, -4) : undefined;
    if (fn && data.pins && typeof data.pins === 'object' && fn in data.pins) {
      data.pins[fn] = value;
      setField[`pins.${fn}`] = `--set ${key}`;
    } else {
      data.substitutions = data.substitutions && typeof data.substitutions === 'object' ? data.substitutions : {};
      data.substitutions[key] = value;
      setField[`substitutions.${key}`] = `--set ${key}`;
    }
  }
}

/** Turns one zod issue into a Problem with file, line, field path and a fix a hobbyist can act on. */
function problemFromIssue(issue: Zod.core.$ZodIssue, file: string, doc: Document, lc: LineCounter,
  setField: Record<string, string>): Problem {
  const pathParts = issue.path.map(String);
  let field = pathParts.join('.');
  const leaf = pathParts[pathParts.length - 1] ?? '';
  const input = (issue as { input?: unknown }).input;
  let message = issue.message;
  let hint = (issue as { params?: { hint?: string } }).params?.hint;
  let linePath: string[] = pathParts;
  let atKey = issue.code === 'unrecognized_keys'; // the line of the key written, not of its value

  switch (issue.code) {
    case 'unrecognized_keys': {
      const key = issue.keys[0];
      const known = knownKeys(pathParts);
      const near = nearest(key, known);
      field = [...pathParts, key].join('.');
      linePath = [...pathParts, key];
      message = `unknown key "${key}"`;
      hint = near ? `did you mean "${near}"? (rename "${key}:" to "${near}:")`
        : `remove it; valid keys here: ${known.join(', ')}`;
      break;
    }
    case 'invalid_type':
      if (input === undefined) {
        linePath = pathParts.slice(0, -1);
        message = `missing required key "${leaf}"`;
        hint = `add: ${FIELD_EXAMPLES[leaf] ?? `${leaf}: ...`}`;
        // Substitutions take any key, so a misspelt one is only seen as the required key it should have been.
        const parent = doc.getIn(linePath);
        const siblings = lib.yaml.isMap(parent) ? parent.items.map((item) => String(lib.yaml.isScalar(item.key)
          ? item.key.value : item.key)) : [];
        const typo = nearest(leaf, siblings.filter((k) => k !== leaf && !(k in FIELD_EXAMPLES)));
        if (typo) {
          linePath = [...linePath, typo];
          atKey = true;
          hint = `did you mean "${leaf}"? (rename "${typo}:" to "${leaf}:")`;
        }
      } else {
        message = `expected ${issue.expected}, got ${describe(input)}`;
        hint = hint ?? `write it as: ${FIELD_EXAMPLES[leaf] ?? `${leaf}: <${issue.expected}>`}`;
      }
      break;
    case 'invalid_value':
      message = `"${String(input)}" is not a valid ${leaf}`;
      if (pathParts[0] === 'pins') {
        const spelling = pinSpelling(String(input));
        message = `"${String(input)}" is not a BK7231 pin`;
        hint = spelling ? `did you mean ${spelling}? (BK7231 pins are written P0 … P28)`
          : `use one of ${Object.keys(BK7231_PINS).join(' ')} (pins usable on generic-bk7231t/n-qfn32-tuya boards)`;
      } else {
        const near = typeof input === 'string' ? nearest(input.toUpperCase(), issue.values.map(String)) : undefined;
        hint = `valid options are ${issue.values.join(', ')}${near ? `; did you mean ${near}?` : ''}`;
      }
      break;
    case 'invalid_format':
    case 'too_big':
      if (leaf === 'device_name') {
        message = `"${String(input)}" is not a valid ESPHome device name`;
        hint = 'use lowercase a-z, 0-9 and - (no spaces), at most 31 characters, ' +
          `e.g. ${suggestDeviceName(String(input))}`;
      } else if (pathParts[0] === 'pins') {
        message = `"${leaf}" is not a valid pin function name`;
        hint = 'use lowercase letters, digits and _, e.g. relay, button, state_led';
      }
      break;
    case 'too_small':
      message = `"${leaf}" must not be empty`;
      hint = `write it as: ${FIELD_EXAMPLES[leaf] ?? `${leaf}: ...`}`;
      break;
  }
  const fromSet = setField[field];
  if (fromSet) return { file: fromSet, field, message, hint };
  const line = lineOfNode(doc, lc, linePath, atKey);
  return { file, line, field: field || '(top level)', message, hint };
}

function knownKeys(parentPath: string[]): string[] {
  let schema: any = recipeSchema();
  for (const part of parentPath) schema = schema?.shape?.[part] ?? schema?.unwrap?.()?.shape?.[part];
  return Object.keys(schema?.shape ?? {});
}

/** The 1-based line of the node at `keyPath` (or of its key, for unknown keys), best effort. */
function lineOfNode(doc: Document, lc: LineCounter, keyPath: string[], wantKey = false): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined = (doc.contents as { range?: number[] } | null)?.range?.[0];
  for (const part of keyPath) {
    if (!lib.yaml.isMap(node)) break;
    const pair = node.items.find((p) => lib.yaml.isPair(p) && lib.yaml.isScalar(p.key) && String(p.key.value) === part);
    if (!pair) break;
    const key = pair.key as { range?: number[] };
    const value = pair.value as { range?: number[] } | null;
    offset = (wantKey || !value?.range ? key.range : value.range)?.[0] ?? offset;
    if (!wantKey && lib.yaml.isScalar(pair.value)) offset = key.range?.[0] ?? offset;
    node = pair.value;
  }
  return offset === undefined ? undefined : lc.linePos(offset).line;
}

/** The substitutions a template sees: the recipe's, the board (default from mcu) and `<fn>_pin` per pin. */
export function substitutionsFor(recipe: Recipe): Record<string, string> {
  const subs: Record<string, string> = {};
  for (const [k, v] of Object.entries(recipe.substitutions)) if (v !== undefined) subs[k] = String(v);
  subs.board ??= MCUS[recipe.mcu].board;
  for (const [fn, pin] of Object.entries(recipe.pins)) subs[`${fn}_pin`] = pin;
  return subs;
}

/** Every `${name}` / `$name` the template uses must be defined; every `--set` key must be used. */
export function checkTemplate(template: string, templatePath: string, substitutions: Record<string, string>,
  sets: Record<string, string>): void {
  const lc = new (lib.yaml.LineCounter)();
  const doc = lib.yaml.parseDocument(template, { lineCounter: lc, customTags: [SECRET_TAG] });
  if (doc.errors.length) {
    const err = doc.errors[0];
    throw new InputError([{ file: shown(templatePath), line: err.linePos?.[0].line,
      message: `YAML syntax error: ${firstLine(err.message)}`,
      hint: 'fix the template; it must be a valid ESPHome YAML file' }]);
  }
  const used = templateVariables(template);
  const problems: Problem[] = [];
  for (const [name, line] of used)
    if (!(name in substitutions))
      problems.push({ file: shown(templatePath), line, field: `substitutions.${name}`,
        message: `the template uses \${${name}}, which the recipe does not define`,
        hint: `add "${name}: ..." under substitutions in the recipe` +
          (name.endsWith('_pin') ? ` (or pins.${name.slice(0, -4)})` : '') });
  for (const key of Object.keys(sets))
    if (!used.has(key))
      problems.push({ file: `--set ${key}`, field: key,
        message: `the template ${path.basename(templatePath)} does not use "${key}"`,
        hint: `settable here: ${[...used.keys()].sort().join(', ')}` });
  if (problems.length) throw new InputError(problems);
}

/** An ESPHome substitution in a value: `${name}` or `$name`. */
const SUBSTITUTION = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g;

/** Substitution names used in a template's YAML values (comments ignored), with the line of first use. */
export function templateVariables(template: string): Map<string, number> {
  const lc = new (lib.yaml.LineCounter)();
  const doc = lib.yaml.parseDocument(template, { lineCounter: lc, customTags: [SECRET_TAG] });
  const found = new Map<string, number>();
  lib.yaml.visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value !== 'string') return;
      for (const m of node.value.matchAll(SUBSTITUTION)) {
        const name = m[1] ?? m[2];
        if (!found.has(name)) found.set(name, node.range ? lc.linePos(node.range[0]).line : 0);
      }
    },
  });
  return found;
}

/** ESPHome's `!secret name`, read as the string "!secret name" so configs can be compared as data. */
export const SECRET_TAG = { tag: '!secret', resolve: (value: string) => `!secret ${value}` };

// ─── Command line ──────────────────────────────

type Cli = { command: 'help' | 'version' | 'schema' } | { command: 'profiles'; words: string[] } |
  { command: 'recipe'; words: string[]; dir: string; yes: boolean; profile?: string; name?: string } |
  { command: 'run' | 'doctor'; opts: Options };

const FLAGS = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  'dry-run': { type: 'boolean', short: 'n' },
  yes: { type: 'boolean', short: 'y' },
  only: { type: 'string' },
  from: { type: 'string' },
  out: { type: 'string', short: 'o' },
  set: { type: 'string', multiple: true },
  cloudcutter: { type: 'string' },
  'wifi-iface': { type: 'string' },
  'device-ip': { type: 'string' },
  'check-pins': { type: 'boolean' },
  'manual-wifi': { type: 'boolean' },
  'backup-flash': { type: 'boolean' },
  restart: { type: 'boolean' },
  count: { type: 'string' },
  esphome: { type: 'string' },
  verbose: { type: 'boolean', short: 'v' },
  recipes: { type: 'string' },
  profile: { type: 'string' },
  name: { type: 'string' },
} as const;

/** The options each command takes (--help and --version go with any). */
const FLAGS_OF = {
  run: ['dry-run', 'yes', 'only', 'from', 'out', 'set', 'cloudcutter', 'wifi-iface', 'device-ip', 'check-pins',
    'manual-wifi', 'backup-flash', 'restart', 'count', 'esphome', 'verbose'],
  doctor: ['yes', 'out', 'set', 'cloudcutter', 'wifi-iface', 'esphome', 'verbose', 'dry-run', 'device-ip'],
  recipe: ['yes', 'recipes', 'profile', 'name'],
  profiles: [],
  schema: [],
} as const;

/** What a flag's value looks like, for the message when it has none. */
const FLAG_EXAMPLES: Record<string, string> = {
  only: `--only STEP (one of ${STEPS.map((s) => s.name).join(', ')})`, from: '--from STEP', out: '--out DIR',
  set: '--set device_name=status-plug-02', cloudcutter: '--cloudcutter DIR', 'wifi-iface': '--wifi-iface wlan1',
  'device-ip': '--device-ip 192.168.1.57', count: '--count 3', esphome: '--esphome local (or docker)',
  recipes: '--recipes DIR', profile: '--profile "1.1.8 - BK7231N / oem_bk7231n_plug"', name: '--name "Kitchen plug"',
};

export function parseCli(argv: string[]): Cli {
  const bad = (field: string, message: string, hint: string) =>
    new InputError([{ file: 'command line', field, message, hint }]);
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: FLAGS });
  } catch (e) {
    const message = (e as Error).message.replace(/\. To specify.*$/s, '');
    // "Option '-o, --out <value>' argument missing": the long name is the one people type.
    const flag = /'(?:-\w, )?(--?[\w-]+)/.exec(message)?.[1] ?? '';
    const help = `${flashCommand()} --help`;
    if (/argument missing/.test(message))
      throw bad(flag, `${flag} needs a value`, `e.g. ${FLAG_EXAMPLES[flag.slice(2)] ?? `${flag} VALUE`} (see ${help})`);
    const near = flag.startsWith('--') ? nearest(flag.slice(2), Object.keys(FLAGS)) : undefined;
    throw bad(flag, message, near ? `did you mean --${near}? (see ${help})` : `see ${help}`);
  }
  const { values: v, positionals } = parsed;
  const first = positionals[0];
  if (v.help || first === 'help') return { command: 'help' };
  if (v.version) return { command: 'version' };
  const command = (['schema', 'profiles', 'recipe', 'doctor'] as const).find((c) => c === first) ?? 'run';
  // An option another command takes would be silently ignored here: said instead.
  const given = Object.keys(v).filter((k) => v[k as keyof typeof v] !== undefined);
  const wrong = given.filter((k) => !(FLAGS_OF[command] as readonly string[]).includes(k));
  if (wrong.length)
    throw bad(`--${wrong[0]}`, `${command === 'run' ? 'a flash run' : `the ${command} command`} takes no ` +
      `--${wrong[0]}`, `see ${flashCommand()} --help for the options of each command`);
  if (command === 'schema') {
    if (positionals.length > 1) throw bad('', `schema takes no arguments, got ${positionals.slice(1).join(' ')}`,
      `${flashCommand()} schema > recipes/recipe.schema.json`);
    return { command: 'schema' };
  }
  if (command === 'profiles') return { command: 'profiles', words: positionals.slice(1) };
  if (command === 'recipe') {
    const dir = v.recipes ?? path.join(HOME_DIR, 'recipes');
    return { command: 'recipe', words: positionals.slice(1), dir, yes: !!v.yes, profile: v.profile, name: v.name };
  }
  if (command === 'doctor') positionals.shift();
  if (positionals.length !== 1)
    throw bad('', positionals.length ? `expected one recipe, got ${positionals.join(' ')}` : 'no recipe given',
      `${flashCommand()}${command === 'doctor' ? ' doctor' : ''} recipes/23A.yaml (see --help)`);

  const stepName = (flag: string, value: string | undefined): StepName | undefined => {
    if (value === undefined) return undefined;
    if (STEPS.some((s) => s.name === value)) return value as StepName;
    const near = nearest(value, STEPS.map((s) => s.name));
    throw bad(`--${flag}`, `"${value}" is not a step`,
      `${near ? `did you mean ${near}? ` : ''}steps: ${STEPS.map((s) => s.name).join(', ')}`);
  };
  const sets: Record<string, string> = {};
  for (const s of v.set ?? []) {
    const eq = s.indexOf('=');
    if (eq < 1) throw bad('--set', `"${s}" is not key=value`, 'e.g. --set device_name=status-plug-02');
    sets[s.slice(0, eq)] = s.slice(eq + 1);
  }
  if (v.esphome !== undefined && v.esphome !== 'local' && v.esphome !== 'docker')
    throw bad('--esphome', `"${v.esphome}" is not local or docker`,
      `--esphome local (the esphome CLI) or --esphome docker (${ESPHOME_IMAGE})`);
  const count = v.count === undefined ? undefined : Number(v.count);
  if (count !== undefined && !(Number.isInteger(count) && count >= 1 && count <= 99))
    throw bad('--count', `"${v.count}" is not a number of plugs`, 'e.g. --count 3 (1 to 99)');
  if (v['device-ip'] !== undefined && !parseDeviceAddress(v['device-ip']))
    throw bad('--device-ip', `"${v['device-ip']}" is not an address`,
      'e.g. --device-ip 192.168.1.57 (or 192.168.1.57:8080)');
  if (v.only && v.from)
    throw bad('--only', '--only and --from do not go together',
      'use --only STEP for one step, --from STEP for that step and the rest');
  return {
    command,
    opts: {
      recipe: positionals[0],
      out: v.out ?? DEFAULTS.out,
      cloudcutter: v.cloudcutter ?? DEFAULTS.cloudcutter,
      sets,
      dryRun: v['dry-run'] ?? false,
      yes: v.yes ?? false,
      only: stepName('only', v.only),
      from: stepName('from', v.from),
      wifiIface: v['wifi-iface'],
      deviceIp: v['device-ip'],
      checkPins: v['check-pins'] ?? false,
      manualWifi: v['manual-wifi'] ?? false,
      backupFlash: v['backup-flash'] ?? false,
      restart: v.restart ?? false,
      count,
      esphome: v.esphome as Options['esphome'],
      verbose: v.verbose ?? false,
    },
  };
}

export function usage(): string {
  // Two columns in 80: a term, and what it does wrapped beside it (under it, when the term is too wide).
  const entry = (term: string, text: string, col = 25) => {
    const lines = wrap(text, 78 - col);
    const first = term.length + 2 < col ? [`  ${term.padEnd(col - 2)}${lines.shift() ?? ''}`] : [`  ${term}`];
    return [...first, ...lines.map((l) => `${' '.repeat(col)}${l}`)].join('\n');
  };
  const run = flashCommand();
  const steps = STEPS.map((s) => entry(s.name, s.does, 15)).join('\n');
  const settings = Object.entries(SETTINGS).map(([name, s]) => entry(name, s.does +
    (s.default && !name.startsWith('FLASH_WIFI') ? ` (default ${s.default})` : ''), 36)).join('\n');
  return `flash.ts ${VERSION}: flash a Tuya BK7231T/N plug with ESPHome, guided, from a recipe.

Usage:
${[
    ['RECIPE [options]', 'flash one plug (all the steps below, in order)'],
    ['RECIPE --dry-run', "print every step's commands and requests; touch nothing"],
    ['doctor RECIPE', 'check this machine is ready'],
    ['profiles [WORDS]', 'the cloudcutter profiles a recipe may name'],
    ['recipe DEVICE', "write a recipe and template for a device in cloudcutter's list (its slug, or words of " +
      'its maker and name) or from a file: a device file, a flash dump, Tuya\'s storage JSON or user_param_key'],
    ['recipe --profile P --name N', "a recipe whose pins the run reads from the plug's own flash"],
    ['schema', 'print the recipe JSON Schema'],
  ].map(([what, does]) => `  ${run} ${what}\n${wrap(does, 72).map((l) => `      ${l}`).join('\n')}`).join('\n')}

Steps:
${steps}

Options of a flash run:
${[
    ['--dry-run, -n', 'show what each step would do, secrets as ***; write, run and send nothing'],
    ['--only STEP', 'run just this step'],
    ['--from STEP', 'run this step and the ones after it (redoing them even if done)'],
    ['--restart', 'forget the journal and start over from the first step'],
    ['--count N', 'flash N plugs from this recipe, named <name>-01, -02, … after the highest in --out'],
    ['--out DIR, -o DIR', `the ESPHome config dir (default ./${DEFAULTS.out})`],
    ['--set KEY=VALUE', 'override a substitution (repeatable), e.g. --set device_name=status-plug-02'],
    ['--yes, -y', 'never ask: a question takes its safe answer, or the run stops there saying how to go on; ' +
      'a run that needs a person (--check-pins, --manual-wifi) is refused before it starts'],
    ['--cloudcutter DIR', `the tuya-cloudcutter checkout (default ./${DEFAULTS.cloudcutter})`],
    ['--wifi-iface IFACE', 'the Wi-Fi adapter for cloudcutter and Kickstart (default: a free one with AP mode)'],
    ['--device-ip IP[:PORT]', "the plug's LAN address (and web port), where mDNS does not work"],
    ['--check-pins', 'run the pins step: check each recipe pin on the plug'],
    ['--manual-wifi', "give the plug your Wi-Fi from a phone, not through this machine's adapter"],
    ['--backup-flash', "save the plug's whole flash (2 MiB, through Kickstart) before anything overwrites it"],
    ['--esphome local|docker', `use the esphome CLI or the ${ESPHOME_IMAGE} image (default: the CLI if found)`],
    ['--verbose, -v', "show the compile's output as it runs"],
  ].map(([flag, does]) => entry(flag, does)).join('\n')}

Options of the recipe command:
${[
    ['--recipes DIR', 'where it writes (default: recipes/ beside flash.ts)'],
    ['--profile LABEL', 'the stock firmware (as `profiles` lists it)'],
    ['--name NAME', "the device's name"],
    ['--yes, -y', 'never ask: the first profile, and nothing overwritten'],
  ].map(([flag, does]) => entry(flag, does)).join('\n')}

${entry('--help, -h', 'this text')}
${entry('--version', 'print the version')}

Environment:
${settings}
${entry('NO_COLOR / FORCE_COLOR', 'colours off / on', 36)}

Exit codes: 0 done, 1 a step failed (the message says how to retry), 2 bad
input (said before anything is written), 130 stopped by Ctrl+C (143 SIGTERM,
129 SIGHUP): the same command resumes.`;
}

export function recipeJsonSchemaText(): string {
  return JSON.stringify(lib.z.toJSONSchema(recipeSchema(), { io: 'input' }), null, 2) + '\n';
}

// ─── Small helpers ─────────────────────────────

/** A setting from the environment, or its default (see SETTINGS). */
function setting(name: keyof typeof SETTINGS): string {
  return process.env[name] || SETTINGS[name].default;
}

/** A duration setting in milliseconds; a value that is not a positive number falls back to the default. */
function ms(name: keyof typeof SETTINGS): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : Number(SETTINGS[name].default);
}

/** "1.5 s", "42 s", "45 min": a duration as people say it. */
function seconds(millis: number): string {
  if (millis >= 120_000) return `${Math.round(millis / 60_000)} min`;
  return millis < 10_000 ? `${Math.round(millis / 100) / 10} s` : `${Math.round(millis / 1000)} s`;
}

/** Waits `millis`, or rejects with the run's stop when `signal` is aborted first. */
function sleep(millis: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => (signal?.removeEventListener('abort', stop), resolve());
    const timer = setTimeout(done, millis);
    const stop = () => (clearTimeout(timer), reject(signal!.reason));
    signal?.addEventListener('abort', stop, { once: true });
  });
}

/** `work`, or the run's stop when it comes first: a wait nothing else can cut short still ends with the run. */
function untilStopped<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const stop = () => reject(signal.reason);
    signal.addEventListener('abort', stop, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', stop));
  });
}

/** A signal that fires after `millis`, or with the run's stop, whichever comes first. */
function withTimeout(millis: number, signal?: AbortSignal): AbortSignal {
  const timeout = AbortSignal.timeout(millis);
  return signal ? AbortSignal.any([timeout, signal]) : timeout;
}

/** Why a request failed, as a person would say it (fetch hides the reason in `cause`). */
function failure(e: unknown): string {
  const err = e as Error & { cause?: Error };
  return err.name === 'TimeoutError' ? 'timed out' : err.cause?.message ?? err.message;
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

function indent(text: string, n: number): string {
  return text.split('\n').map((l) => ' '.repeat(n) + l).join('\n');
}

/**
 * Keeps a child process of this run to be stopped its own way when the run ends early: each of `ways` in turn (Ctrl+C's
 * SIGINT, ^C typed into its terminal, a hang-up), each given its patience, then SIGKILL. Returns that stop.
 */
function keepChild(scope: RunScope, child: import('node:child_process').ChildProcess,
  ways: [stop: () => void, patience: number][]): () => Promise<void> {
  const exited = exitOf(child);
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    for (const [way, patience] of ways) {
      if (gone()) return;
      way();
      // Its patience ends when it exits: a timer left running would keep flash.ts alive that long after its end.
      const patient = new AbortController();
      const went = await Promise.race([exited.then(() => true), sleep(patience, patient.signal).then(() => false,
        () => true)]);
      patient.abort();
      if (went) return;
    }
    if (gone()) return;
    child.kill('SIGKILL');
    await exited;
  })());
  const forget = scope.child(stop);
  void exited.then(forget);
  return stop;
}

/** The exit code of a child process (127 when it could not be started). */
function exitOf(child: import('node:child_process').ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.on('error', () => resolve(127));
    child.on('close', (code) => resolve(code ?? 1));
  });
}

function logDir(out: string): string {
  return path.join(out, '.flash', 'logs');
}

/** The newest log of `what` under <out>/.flash/logs/ ('' when there is none). */
function lastLog(out: string, what: string): string {
  const dir = logDir(out);
  const logs = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.startsWith(`${what}-`)).sort() : [];
  return logs.length ? fs.readFileSync(path.join(dir, logs.at(-1)!), 'utf8') : '';
}

/** A new log file under <out>/.flash/logs/ for one run of an external command. */
function logFile(out: string, what: string): string {
  fs.mkdirSync(logDir(out), { recursive: true });
  return path.join(logDir(out), `${what}-${new Date().toISOString().replace(/[:.]/g, '-')}.log`);
}

/** Writes only when the content changes, through a temp file and rename so a crash never leaves half a file. */
export function writeFileAtomic(file: string, content: string, mode = 0o644): 'created' | 'updated' | 'unchanged' {
  let old: string | undefined;
  try {
    old = fs.readFileSync(file, 'utf8');
  } catch {}
  if (old === content) {
    if ((fs.statSync(file).mode & 0o777) !== mode) fs.chmodSync(file, mode);
    return 'unchanged';
  }
  const unique = `${process.pid}.${crypto.randomBytes(4).toString('hex')}`;
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${unique}.tmp`);
  try {
    fs.writeFileSync(tmp, content, { mode, flag: 'wx' });
    fs.chmodSync(tmp, mode); // the umask may have narrowed or the file system widened it
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return old === undefined ? 'created' : 'updated';
}

/**
 * A name as written in a sentence (a Wi-Fi network's may hold anything): in double quotes, or in other quotes when it
 * has double quotes of its own. Pure.
 */
export function quoted(name: string): string {
  return !name.includes('"') ? `"${name}"` : !name.includes("'") ? `'${name}'` : `«${name}»`;
}

/** Closest candidate by edit distance, when it is close enough to be a typo. */
export function nearest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const cand of candidates) {
    const d = editDistance(word.toLowerCase(), cand.toLowerCase());
    if (d < bestD) [best, bestD] = [cand, d];
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}

function describe(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function suggestDeviceName(name: string): string {
  const s = name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 31);
  return s || 'status-plug-01';
}

// ─── Entry point ───────────────────────────────

/** The signals that stop a run, and the exit code each gives (128 + its number, as shells report it). */
const STOP_SIGNALS: Record<string, number> = { SIGINT: EXIT.interrupted, SIGTERM: 143, SIGHUP: 129 };

/**
 * flash.ts as a command: main() inside one run scope, and the one way out for each ending. A signal at any moment
 * (inside a question, during a child) aborts the scope: everything under way gives up, every child is stopped its
 * own way, the journal is saved, and the run says how to resume. Something that does not listen to the scope is left
 * behind after a moment.
 */
export async function runCli(argv: string[], scope = new RunScope()): Promise<number> {
  const onSignal = (signal: NodeJS.Signals) => scope.interrupt(signal);
  for (const s of Object.keys(STOP_SIGNALS)) process.on(s, onSignal);
  const run = main(argv, scope);
  run.catch(() => {}); // its own ending is handled below, or it is left behind after a stop
  try {
    return await untilStopped(run, scope.signal);
  } catch (e) {
    if (scope.interrupted) {
      // The run gets a moment to end its own way (its children stopped, the journal saved), then is left behind.
      const grace = new AbortController();
      await Promise.race([run.catch(() => {}), sleep(STOP_GRACE_MS, grace.signal).catch(() => {})]);
      grace.abort();
      return stopRun(scope);
    }
    await scope.close();
    if (e instanceof InputError) {
      printError(`${c.red('✗ bad input')} (${whatHappened(scope.ctx)})`);
      for (const p of e.problems) printError(`  ${formatProblem(p)}`);
      return EXIT.badInput;
    }
    if (e instanceof Failure) {
      printError(`\n${c.red(`✗ ${e.step ?? commandOf(argv)} failed:`)} ${e.message}`);
      if (e.hint) printError(`  ${e.hint}`);
      return EXIT.failed;
    }
    printError(`${c.red('✗ unexpected error:')} ${(e as Error).stack ?? e}`);
    return EXIT.failed;
  } finally {
    for (const s of Object.keys(STOP_SIGNALS)) process.off(s, onSignal);
  }
}

/** How long a stopped run waits for what does not listen to its signal (then leaves it behind). */
const STOP_GRACE_MS = 2000;

/** The command a failure outside any step belongs to (`recipe`, `profiles`). */
function commandOf(argv: string[]): string {
  const first = argv.find((a) => !a.startsWith('-'));
  return first && ['recipe', 'profiles', 'doctor', 'schema'].includes(first) ? first : 'flash.ts';
}

/** What the run had done when it stopped on bad input: the truth, not "nothing" when steps had run. */
function whatHappened(ctx: Ctx | undefined): string {
  const done = ctx?.finished.filter((s) => s !== 'check') ?? [];
  if (!ctx?.current || ctx.current === 'check' || ctx.opts.dryRun) return 'nothing was written';
  return `found during the ${ctx.current} step; ` +
    (done.length ? `${done.join(', ')} finished before it and ${done.length > 1 ? 'are' : 'is'} kept in the journal`
      : 'no step had finished');
}

/**
 * The way out of a stopped run (Ctrl+C, SIGTERM, SIGHUP: a closed terminal): every child stopped, temporary changes
 * undone (the Kickstart Wi-Fi connection), the facts learned saved in the journal, the cursor given back, and how to
 * resume. The journal is only ever replaced whole, so it is consistent whenever this runs.
 */
async function stopRun(scope: RunScope): Promise<number> {
  await scope.close();
  const signal = scope.interrupted!;
  const ctx = scope.ctx;
  if (ctx && !ctx.opts.dryRun && fs.existsSync(ctx.files.journal)) {
    ctx.journal.facts = { ...ctx.journal.facts, ...ctx.facts };
    writeJournal(ctx);
  }
  if (process.stdout.isTTY) io.out('\x1b[?25h');
  printError(`\n${c.yellow('■ stopped')} (${signal})${ctx?.current ? ` during the ${ctx.current} step` : ''}.`);
  if (ctx && !ctx.opts.dryRun)
    printError(fs.existsSync(ctx.files.journal)
      ? `  Finished steps are kept in ${shown(ctx.files.journal)}: run the same command again to resume.`
      : '  No step had finished: run the same command again to start.');
  return STOP_SIGNALS[signal] ?? EXIT.interrupted;
}

// Run as a program (npx tsx flash.ts, ./flash.ts, or an npm bin link to it), not when imported by tests.
if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const scope = new RunScope();
  // A closed terminal fails every write (EIO): nobody is left to read it, and the run must still stop its children.
  for (const stream of [process.stdout, process.stderr])
    stream.on('error', (e: NodeJS.ErrnoException) => { if (e.code !== 'EIO') throw e; });
  const terminal = [0, 1, 2].filter((fd) => tty.isatty(fd));
  runCli(process.argv.slice(2), scope).then((code) => {
    if (!scope.interrupted) return void (process.exitCode = code);
    // Node puts the terminal back as it found it on the way out, and aborts (a core dump) when the terminal is gone: a
    // closed terminal's run ends by the hang-up's own signal, which skips that.
    if (terminal.some((fd) => !tty.isatty(fd))) {
      process.removeAllListeners('SIGHUP');
      process.kill(process.pid, 'SIGHUP');
      return void setTimeout(() => process.exit(code), 1000);
    }
    // A stopped run exits at once: what did not listen to its signal (a socket, a timer) must not keep it alive.
    process.exit(code);
  });
}
