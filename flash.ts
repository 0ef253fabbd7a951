#!/usr/bin/env -S npx tsx
/**
 * flash.ts: turn a Tuya Wi-Fi plug with a Beken BK7231T/N chip into an ESPHome device, from one recipe.
 *
 *   npx tsx flash.ts recipes/23A.yaml              flash one plug, guided
 *   npx tsx flash.ts recipes/23A.yaml --dry-run    show every step and command, touch nothing
 *   npx tsx flash.ts doctor recipes/23A.yaml       check this machine is ready
 *   npx tsx flash.ts --help
 *
 * Read it top to bottom: the data tables, the recipe schema, main() (the procedure a hobbyist
 * follows by hand, step by step), then one section per step, then small helpers.
 */
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { z } from 'zod';
import YAML, { LineCounter, isMap, isPair, isScalar, type Document } from 'yaml';
import type { DeviceInfoResponse } from '@2colors/esphome-native-api';

// ─── Data tables ─────────────────────────────────────────────────────────────────────────────

export const VERSION = '0.1.0';

export type Mcu = 'bk7231t' | 'bk7231n';

/** What flash.ts knows about each chip. Everything plug-specific lives in recipes instead. */
export const MCUS: Record<Mcu, { chip: string; board: string; familyId: number; kickstartAp: string }> = {
  bk7231t: { chip: 'BK7231T', board: 'generic-bk7231t-qfn32-tuya', familyId: 0x675a40b0, kickstartAp: 'kickstart-bk7231t' },
  bk7231n: { chip: 'BK7231N', board: 'generic-bk7231n-qfn32-tuya', familyId: 0x7b3ef230, kickstartAp: 'kickstart-bk7231n' },
};

/** ESPHome bk72xx boards a recipe may name, by the chip on them (ESPHome's LibreTiny board list). */
export const BOARDS: Record<string, Mcu> = {
  'generic-bk7231t-qfn32-tuya': 'bk7231t', 'wb2s': 'bk7231t', 'wb3s': 'bk7231t', 'wb2l': 'bk7231t',
  'wb3l': 'bk7231t', 'wb1s': 'bk7231t', 'wblc5': 'bk7231t', 'wa2': 'bk7231t',
  'generic-bk7231n-qfn32-tuya': 'bk7231n', 'cb2s': 'bk7231n', 'cb3s': 'bk7231n', 'cb2l': 'bk7231n',
  'cb3l': 'bk7231n', 'cb1s': 'bk7231n', 'cblc5': 'bk7231n', 'cbu': 'bk7231n', 'cb3se': 'bk7231n',
};

/** Pins usable on the QFN32 BK7231 modules, with the option text Kickstart's pinscan `-> Pin` select shows. */
export const BK7231_PINS: Record<string, string> = {
  P0: 'P0 / UART2_TX / I2C2_SCL', P1: 'P1 / UART2_RX / I2C2_SDA', P6: 'P6 / PWM0', P7: 'P7 / PWM1',
  P8: 'P8 / PWM2', P9: 'P9 / PWM3', P10: 'P10 / UART1_RX', P11: 'P11 / UART1_TX', P14: 'P14 / SCK',
  P15: 'P15 / CS', P16: 'P16 / MOSI', P17: 'P17 / MISO', P20: 'P20 / I2C1_SCL / TCK',
  P21: 'P21 / I2C1_SDA / TMS', P22: 'P22 / TDI', P23: 'P23 / TDO / ADC3', P24: 'P24 / PWM4',
  P26: 'P26 / PWM5', P28: 'P28',
};

/** ESPHome switch `restore_mode` values (the seed page lists the first four). */
export const RESTORE_MODES = [
  'RESTORE_DEFAULT_OFF', 'RESTORE_DEFAULT_ON', 'ALWAYS_OFF', 'ALWAYS_ON',
  'RESTORE_INVERTED_DEFAULT_OFF', 'RESTORE_INVERTED_DEFAULT_ON', 'DISABLED',
] as const;

/** The steps of a full run, in order. `main()` walks this table; each step has a section below. */
export const STEPS = [
  { name: 'check', does: 'preflight for the steps ahead: tools, Wi-Fi adapter, cloudcutter checkout, firmware, free ports' },
  { name: 'config', does: 'render the ESPHome config and create/complete secrets.yaml' },
  { name: 'compile', does: 'esphome compile (in the background, overlapping cloudcutter); check the UF2 is for this chip' },
  { name: 'cloudcutter', does: 'write the local device profile, then flash Kickstart over the air with tuya-cloudcutter' },
  { name: 'kickstart', does: "join the plug's kickstart AP, give it your Wi-Fi, find it on your LAN" },
  { name: 'pins', does: '(--check-pins) drive each recipe pin through Kickstart and ask what you saw' },
  { name: 'upload', does: "send the compiled UF2 to Kickstart's web OTA" },
  { name: 'verify', does: 'wait for the device on mDNS, check its API, print how to adopt it in Home Assistant' },
] as const;
export type StepName = (typeof STEPS)[number]['name'];

/** Keys secrets.yaml must hold for the template's `!secret` references. */
export const SECRET_KEYS = ['wifi_ssid', 'wifi_password', 'api_encryption_key', 'ota_password', 'ap_password'] as const;
/** The secrets.yaml values never printed. The SSID lives there too but is no secret: messages name it. */
export const REDACTED_KEYS = SECRET_KEYS.filter((k) => k !== 'wifi_ssid');

/**
 * What cloudcutter prints when it fails (tuya-cloudcutter's own messages), what that means and what to do.
 * `{tryOther}` becomes "try recipe X" for the recipes of the other chip.
 */
export const CLOUDCUTTER_DIAGNOSES = [
  { match: /did not result in a successful exploit/, what: "the exploit did not work on this plug: its firmware is not the version the profile is for, or Tuya has patched it",
    fix: "check the plug's firmware version in the Smart Life / Status Smart app (Device Update) and pick the profile with that version in the recipe; if the version matches, {tryOther}" },
  { match: /is not valid for the chosen profile type/, what: "the firmware file is for a different chip than the cloudcutter profile",
    fix: "{tryOther}; the recipe's kickstart file, profile and mcu must all name the same chip" },
  { match: /could not connect to SSID|Failed to connect, please run this script again/, what: "cloudcutter could not find or join the plug's access point: the plug was not in AP mode",
    fix: "put the plug in AP mode (slow blink) right before confirming, keep it near the Wi-Fi adapter, and retry" },
  { match: /Failed to build Docker image/, what: "Docker could not build cloudcutter's image",
    fix: "check Docker works (docker run --rm hello-world), that this machine is online and has free disk space, then retry" },
  { match: /Unable to auto-detect wifi adapter/, what: "cloudcutter found no Wi-Fi adapter to use",
    fix: "pass --wifi-iface IFACE with an adapter from `nmcli device` that supports AP mode" },
  { match: /something went wrong with updating firmware/, what: "the plug was taken over, but sending it the firmware failed",
    fix: "power-cycle the plug, put it in AP mode again and retry; if it fails again, {tryOther}" },
] as const;

export const EXIT = { ok: 0, failed: 1, badInput: 2 } as const;

const DEFAULTS = { out: 'esphome', cloudcutter: 'tuya-cloudcutter' };

// ─── The recipe schema ───────────────────────────────────────────────────────────────────────
// One zod schema is the recipe format: validation, error messages and recipes/recipe.schema.json
// (`npx tsx flash.ts schema`) all come from it.

const PinName = z.enum(Object.keys(BK7231_PINS) as [string, ...string[]]);
const DeviceName = z.string().max(31).regex(/^[a-z0-9_-]+$/);

export const RecipeSchema = z
  .strictObject({
    model: z.string().min(1).meta({ description: 'The plug, as printed on it, e.g. "Status Wifi Plug 23A ST3".' }),
    mcu: z.enum(['bk7231t', 'bk7231n']).meta({ description: 'The Beken chip inside: bk7231t or bk7231n.' }),
    kickstart: z.string().min(1).default('auto').meta({
      description: 'ESPHome Kickstart firmware in <cloudcutter>/custom-firmware/: "auto" picks the newest for the MCU, or a file name.',
    }),
    cloudcutter: z
      .strictObject({
        profile: z.string().min(1).optional().meta({
          description: 'The label cloudcutter\'s "By firmware version and name" menu shows (e.g. "1.1.8 - BK7231N / oem_bk7231n_plug") or a profile slug.',
        }),
        device: z.string().min(1).optional().meta({ description: "A device slug from cloudcutter's device database." }),
      })
      .meta({ description: 'How tuya-cloudcutter identifies the stock firmware: profile or device.' }),
    ap_mode: z.string().min(1).meta({ description: 'What the user does to put this plug into AP mode (shown before each power cycle).' }),
    esphome: z.string().min(1).meta({ description: 'The ESPHome template, relative to the recipe.' }),
    pins: z
      .record(z.string().regex(/^[a-z][a-z0-9_]*$/), PinName)
      .meta({ description: 'Function -> BK7231 pin; each becomes the substitution <function>_pin. Functions named button* are inputs, the rest outputs.' }),
    substitutions: z
      .looseObject({
        device_name: DeviceName.meta({ description: 'ESPHome node name: a-z, 0-9, - and _, at most 31 characters.' }),
        friendly_name: z.string().min(1).meta({ description: 'The name Home Assistant shows.' }),
        default_state: z.enum(RESTORE_MODES).optional().meta({ description: 'Relay state at power-on (ESPHome restore_mode).' }),
        board: z.string().optional().meta({ description: 'ESPHome bk72xx board; defaults from mcu.' }),
      })
      .catchall(z.union([z.string(), z.number(), z.boolean()]))
      .meta({ description: 'ESPHome substitutions for the template.' }),
  })
  .superRefine(checkRecipeConsistency)
  .meta({ title: 'flash.ts recipe', description: 'One Beken plug model: chip, cloudcutter profile, pins and ESPHome substitutions.' });

export type Recipe = z.output<typeof RecipeSchema>;

/** The checks that span fields; each issue names its field and carries a fix hint. */
function checkRecipeConsistency(r: z.output<z.ZodObject<any>>, ctx: z.RefinementCtx): void {
  const recipe = r as Recipe;
  const mcu = recipe.mcu;
  const other: Mcu = mcu === 'bk7231t' ? 'bk7231n' : 'bk7231t';
  const issue = (path: (string | number)[], message: string, hint: string) =>
    ctx.addIssue({ code: 'custom', path, message, params: { hint } });

  const board = recipe.substitutions.board;
  if (board !== undefined) {
    const boardMcu = BOARDS[String(board)];
    if (!boardMcu)
      issue(['substitutions', 'board'], `"${board}": this board is unknown for bk72xx plugs`,
        `use ${MCUS[mcu].board} (the default for ${mcu}), or remove the line`);
    else if (boardMcu !== mcu)
      issue(['substitutions', 'board'], `board "${board}" carries a ${boardMcu.toUpperCase()}, but mcu is ${mcu}`,
        `use ${MCUS[mcu].board}, or change mcu to ${boardMcu}`);
  }

  const seen = new Map<string, string>();
  for (const [fn, pin] of Object.entries(recipe.pins)) {
    const first = seen.get(pin);
    if (first) issue(['pins', fn], `pin ${pin} is used for both ${first} and ${fn}`, 'give each function its own pin (see the device page\'s GPIO table)');
    else seen.set(pin, fn);
  }

  if (!recipe.cloudcutter.profile === !recipe.cloudcutter.device)
    issue(['cloudcutter'], 'give exactly one of cloudcutter.profile or cloudcutter.device',
      'e.g. profile: 1.1.8 - BK7231N / oem_bk7231n_plug');
  const labelChip = recipe.cloudcutter.profile?.match(/-\s*(BK72\w+)\s*\//i)?.[1]?.toLowerCase();
  if (labelChip && labelChip !== mcu)
    issue(['cloudcutter', 'profile'], `profile "${recipe.cloudcutter.profile}" is for a ${labelChip.toUpperCase()}, but mcu is ${mcu}`,
      `pick a "- ${MCUS[mcu].chip}" profile, or change mcu to ${labelChip} if the plug really has that chip`);

  if (recipe.kickstart !== 'auto' && recipe.kickstart.toLowerCase().includes(other))
    issue(['kickstart'], `"${recipe.kickstart}" is firmware for the ${MCUS[other].chip}, but mcu is ${mcu}`,
      `use kickstart: auto, or the ..._${mcu}_app.ota.ug.bin file`);

  const subs = recipe.substitutions;
  for (const key of Object.keys(subs))
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key))
      issue(['substitutions', key], `"${key}" is not a valid substitution name`, 'use letters, digits and _ (e.g. main_icon)');
  for (const fn of Object.keys(recipe.pins))
    if (`${fn}_pin` in subs)
      issue(['substitutions', `${fn}_pin`], `${fn}_pin comes from pins.${fn}; it cannot also be a substitution`, `remove it and set pins.${fn}`);
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

// ─── main(): the procedure ───────────────────────────────────────────────────────────────────

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

/** Everything a step needs: the validated recipe, rendered inputs and the options. */
export interface Ctx {
  opts: Options;
  recipe: Recipe;
  recipePath: string;
  templatePath: string;
  template: string;
  substitutions: Record<string, string>;
  deviceName: string;
  /** What the run has learned about the plug so far. */
  facts: Facts;
  /** The background compile, once started. */
  compile?: CompileJob;
  journal: Journal;
  /** The step under way (for Ctrl+C and failure messages). */
  current?: StepName;
  /** The step the last run was in when it stopped (crash, Ctrl+C or failure): its effect may have happened. */
  interrupted?: StepName;
  /** Called once this plug's firmware is compiled (a batch then starts the next plug's). */
  afterCompile?: () => void;
}

export interface Facts {
  mac?: string;
  kickstartIp?: string;
  deviceIp?: string;
  /** The Kickstart file cloudcutter flashed, and its SHA-256 (to tell later which build the plug got). */
  kickstartFile?: string;
  kickstartSha256?: string;
  /** The UF2 uploaded, and its SHA-256. */
  uf2Sha256?: string;
}

const STEP_RUNNERS: Record<StepName, { run: (ctx: Ctx) => Promise<void>; plan: (ctx: Ctx) => string[] }> = {
  check: { run: stepCheck, plan: planCheck },
  config: { run: stepConfig, plan: planConfig },
  compile: { run: stepCompile, plan: planCompile },
  cloudcutter: { run: stepCloudcutter, plan: planCloudcutter },
  kickstart: { run: stepKickstart, plan: planKickstart },
  pins: { run: stepPins, plan: planPins },
  upload: { run: stepUpload, plan: planUpload },
  verify: { run: stepVerify, plan: planVerify },
};

export async function main(argv: string[]): Promise<number> {
  const cli = parseCli(argv);
  if (cli.command === 'help') return print(usage()), EXIT.ok;
  if (cli.command === 'version') return print(VERSION), EXIT.ok;
  if (cli.command === 'schema') return io.out(recipeJsonSchemaText()), EXIT.ok;
  const opts = cli.opts;
  const ctx = loadContext(opts);
  running = ctx;
  if (cli.command === 'doctor') {
    print(`${c.bold('flash.ts doctor')} · is this machine ready to flash ${ctx.recipe.model}?`);
    const checks = await doctor(opts, ctx.recipe);
    printChecks(checks);
    const failed = checks.filter((k) => !k.ok).length;
    print(failed ? `\n${c.red(`${failed} check${failed > 1 ? 's' : ''} failed`)}: fix them and run doctor again.` : `\n${c.green('✓ ready')}`);
    return failed ? EXIT.failed : EXIT.ok;
  }
  if (opts.count) return runBatch(ctx);
  return (await runPlug(ctx)) ? EXIT.ok : EXIT.failed;
}

/** One plug, step by step, from where its journal says it got to. Throws StepError on a failed step. */
async function runPlug(ctx: Ctx): Promise<boolean> {
  const opts = ctx.opts;
  running = ctx;
  print(`${c.bold('flash.ts')} · ${ctx.recipe.model} (${MCUS[ctx.recipe.mcu].chip}) → ${c.bold(ctx.deviceName)}` +
    (opts.dryRun ? c.dim('   [dry run: nothing is written, run or sent]') : ''));

  const steps = resumePoint(ctx, stepsToRun(opts));
  if (!steps.some((s) => s.name !== 'check')) {
    print(`\n${c.green('✓')} every step is already done for ${ctx.deviceName} (journal ${journalPath(ctx)}).`);
    print(`  To flash it again: --restart; to redo part of it: --from STEP.`);
    return true;
  }
  for (const [i, step] of steps.entries()) {
    ctx.current = step.name;
    const title = `${c.cyan(`[${i + 1}/${steps.length}]`)} ${c.bold(step.name.padEnd(11))} ${c.dim(step.does)}`;
    print(`\n${title}`);
    const runner = STEP_RUNNERS[step.name];
    if (opts.dryRun) for (const line of runner.plan(ctx)) print(`    ${line}`);
    else {
      recordStart(ctx, step.name);
      await runner.run(ctx).catch((e) => {
        if (!(e instanceof HttpError)) throw e;
        throw new StepError(step.name, e.message, `check the plug is powered and within reach, then retry: ${rerun(opts, `--from ${step.name}`)}`);
      });
      if (step.name !== 'check' && step.name !== 'compile') recordStep(ctx, step.name); // compile records itself when it finishes
    }
    if (ctx.compile && step.name !== 'compile' && !ctx.compile.finished)
      print(c.dim(`    (compile still running in the background: ${Math.round((Date.now() - ctx.compile.started) / 1000)} s so far)`));
  }
  ctx.current = undefined;
  if (opts.dryRun) print(`\n${c.green('✓')} dry run complete: run the same command without --dry-run to do it.`);
  else print(`\n${c.green('✓')} ${ctx.deviceName} done.`);
  return true;
}

/**
 * `--count N`: N plugs from one recipe, named after the highest already in the config dir. Plugs left
 * unfinished by an earlier batch come first. While you work on one plug, the next one's firmware compiles.
 */
async function runBatch(first: Ctx): Promise<number> {
  const opts = first.opts;
  const unfinished = configNames(opts.out).filter((n) => sameSeries(n, first.deviceName) && !isFinished(opts.out, n));
  const names = [
    ...unfinished.slice(0, opts.count).map((n) => ({ device_name: n, friendly_name: friendlyFor(first.substitutions.friendly_name, n) })),
    ...batchNames(first.substitutions, configNames(opts.out), Math.max(0, opts.count! - unfinished.length)),
  ];
  print(`${c.bold('batch')}: ${names.length} plugs: ${names.map((n) => n.device_name).join(', ')}`);
  const plugs = names.map((n) => loadContext({ ...opts, count: undefined, sets: { ...opts.sets, ...n } }));
  const results: { name: string; ip?: string; mac?: string; result: string }[] = [];
  // While one plug is flashed by hand, the next one's config is written and its firmware compiled;
  // hooked up front, since plug k+1's compile starts (and ends) while plug k is under way.
  if (!opts.dryRun) for (const [k, ctx] of plugs.entries()) if (plugs[k + 1]) ctx.afterCompile = () => void prepareNext(plugs[k + 1]);
  for (const [k, ctx] of plugs.entries()) {
    const next = plugs[k + 1];
    print(`\n${c.bold(`━━ plug ${k + 1} of ${plugs.length}: ${ctx.deviceName} ━━`)}`);
    try {
      await runPlug(ctx);
      results.push({ name: ctx.deviceName, ip: ctx.facts.deviceIp ?? ctx.facts.kickstartIp, mac: ctx.facts.mac, result: opts.dryRun ? 'planned' : 'flashed' });
    } catch (e) {
      if (!(e instanceof StepError)) throw e;
      printError(`\n${c.red(`✗ ${e.step} failed:`)} ${e.message}\n  ${e.hint}`);
      results.push({ name: ctx.deviceName, ip: ctx.facts.kickstartIp, mac: ctx.facts.mac, result: `failed at ${e.step}` });
      if (next && !(await confirm(`${ctx.deviceName} failed. Go on with ${next.deviceName}?`, opts, true, 'batch_continue'))) break;
    }
  }
  print(`\n${c.bold('Plugs')}`);
  print(formatTable([['name', 'IP', 'MAC', 'result'], ...results.map((r) => [r.name, r.ip ?? '-', r.mac ?? '-', r.result])]));
  return results.every((r) => !r.result.startsWith('failed')) && results.length === plugs.length ? EXIT.ok : EXIT.failed;
}

/** Config and background compile for the next plug of a batch, quietly. */
async function prepareNext(ctx: Ctx): Promise<void> {
  try {
    const files = renderConfigFiles(ctx, readSecretsFile(path.join(ctx.opts.out, 'secrets.yaml')), null, randomSecret);
    writeFileAtomic(files.configPath, files.config);
    recordStep(ctx, 'config');
    ctx.compile = await startCompile(ctx, true);
  } catch {
    // The plug's own run redoes whatever did not work here, and reports it.
  }
}

/** Names for `count` more plugs after the highest `<base>-NN` in `existing`. Pure. */
export function batchNames(subs: Record<string, string>, existing: string[], count: number): { device_name: string; friendly_name: string }[] {
  const base = subs.device_name.replace(/[-_]?\d+$/, '') || subs.device_name;
  const friendlyBase = subs.friendly_name.replace(/\s*\d+$/, '') || subs.friendly_name;
  const re = new RegExp(`^${base.replace(/[-]/g, '\\-')}-(\\d+)$`);
  const highest = Math.max(0, ...existing.map((n) => Number(n.match(re)?.[1] ?? 0)));
  return Array.from({ length: count }, (_, i) => {
    const n = String(highest + 1 + i).padStart(2, '0');
    return { device_name: `${base}-${n}`, friendly_name: `${friendlyBase} ${n}` };
  });
}

function friendlyFor(friendly: string, name: string): string {
  return `${friendly.replace(/\s*\d+$/, '')} ${name.match(/(\d+)$/)?.[1] ?? ''}`.trim();
}

function sameSeries(name: string, deviceName: string): boolean {
  return name.replace(/[-_]?\d+$/, '') === deviceName.replace(/[-_]?\d+$/, '') && /\d+$/.test(name);
}

/** Device names with a config in `out` (`<name>.yaml` beside secrets.yaml). */
function configNames(out: string): string[] {
  if (!fs.existsSync(out)) return [];
  return fs.readdirSync(out).filter((f) => f.endsWith('.yaml') && f !== 'secrets.yaml').map((f) => f.slice(0, -5)).sort();
}

function isFinished(out: string, name: string): boolean {
  try {
    return !!JSON.parse(fs.readFileSync(path.join(out, '.flash', `${name}.json`), 'utf8')).steps?.verify;
  } catch {
    return false;
  }
}

export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r, j) => '  ' + r.map((cell, i) => (j === 0 ? c.bold(cell.padEnd(widths[i])) : cell.padEnd(widths[i]))).join('  ')).join('\n');
}

/** Which steps this run covers: all, `--only STEP`, or `--from STEP` onwards. `pins` needs --check-pins. */
export function stepsToRun(opts: Pick<Options, 'only' | 'from' | 'checkPins'>): (typeof STEPS)[number][] {
  if (opts.only) return STEPS.filter((s) => s.name === opts.only);
  // The preflight always comes first: it checks just what the steps after it need.
  const start = opts.from ? STEPS.findIndex((s) => s.name === opts.from) : 0;
  return STEPS.filter((s, i) => s.name === 'check' || i >= start).filter((s) => s.name !== 'pins' || opts.checkPins);
}

// ─── Step: check ─────────────────────────────────────────────────────────────────────────────

/** The doctor's checks that matter for the steps this run is about to do; offers to clone cloudcutter. */
async function stepCheck(ctx: Ctx): Promise<void> {
  const ahead = stepsToRun(ctx.opts).map((s) => s.name);
  const relevant = async () => (await doctor(ctx.opts, ctx.recipe)).filter((k) => k.for.some((s) => ahead.includes(s)));
  let checks = await relevant();
  if (checks.some((k) => k.name === 'cloudcutter checkout' && !k.ok) &&
      (await confirm(`There is no tuya-cloudcutter checkout in ${ctx.opts.cloudcutter}. Clone it now?`, ctx.opts, true, 'clone_cloudcutter'))) {
    const { $ } = await import('zx');
    await $({ stdio: 'inherit', nothrow: true })`git clone --depth 1 https://github.com/tuya-cloudcutter/tuya-cloudcutter.git ${ctx.opts.cloudcutter}`;
    checks = await relevant();
  }
  printChecks(checks);
  const failed = checks.filter((k) => !k.ok);
  if (failed.length)
    throw new StepError('check', `${failed.map((k) => k.name).join(', ')} not ready`,
      `fix what is marked ✗ above and run again (npx tsx flash.ts doctor ${shq(ctx.opts.recipe)} shows the same table)`);
}

function planCheck(ctx: Ctx): string[] {
  const ahead = stepsToRun(ctx.opts).map((s) => s.name);
  const lines = [
    '$ docker info --format {{.ServerVersion}}',
    '$ nmcli -t -f DEVICE,TYPE,STATE device; nmcli -t -f WIFI-PROPERTIES.AP device show IFACE',
    `$ ss -H -l -n -t -u -p   (ports ${CLOUDCUTTER_PORTS.map((p) => `${p.port}/${p.proto}`).join(' ')} must be free)`,
    `read ${path.join(ctx.opts.cloudcutter, 'custom-firmware', '<kickstart file>')} and check it is ${MCUS[ctx.recipe.mcu].chip} firmware`,
    '$ esphome version   (else the Docker image)',
  ];
  return [`checks for: ${ahead.filter((s) => s !== 'check').join(', ')}`, ...lines];
}

// ─── Step: config ────────────────────────────────────────────────────────────────────────────

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

async function stepConfig(ctx: Ctx): Promise<void> {
  const secretsPath = path.join(ctx.opts.out, 'secrets.yaml');
  const existing = readSecretsFile(secretsPath);
  const wifi = await askWifiIfMissing(existing.values, ctx.opts);
  const files = renderConfigFiles(ctx, existing, wifi, randomSecret);

  fs.mkdirSync(ctx.opts.out, { recursive: true });
  const results = [
    [files.configPath, writeFileAtomic(files.configPath, files.config)],
    [files.secretsPath, writeFileAtomic(files.secretsPath, files.secrets, 0o600)],
    [files.gitignorePath, writeFileAtomic(files.gitignorePath, files.gitignore)],
  ] as const;
  for (const [file, result] of results) print(`    ${result === 'unchanged' ? c.dim('·') : c.green('✓')} ${result} ${file}`);
  if (files.secretsAdded.length) print(`    ${c.dim(`secrets added: ${files.secretsAdded.join(', ')} (values not shown; the file is mode 0600)`)}`);
}

function planConfig(ctx: Ctx): string[] {
  const secretsPath = path.join(ctx.opts.out, 'secrets.yaml');
  const existing = readSecretsFile(secretsPath);
  const files = renderConfigFiles(ctx, existing, { ssid: '***', password: '***' }, () => '***');
  const missing = SECRET_KEYS.filter((k) => !(k in existing.values));
  const wifiMissing = missing.filter((k) => k.startsWith('wifi_'));
  return [
    `write ${files.configPath} (${files.config.split('\n').length} lines: ${ctx.recipePath} + ${ctx.templatePath})`,
    missing.length
      ? `${existing.found ? 'complete' : 'create'} ${secretsPath} (mode 0600): add ${missing.map((k) => `${k}=***`).join(', ')}` +
        (wifiMissing.length ? ` (Wi-Fi from FLASH_WIFI_SSID/FLASH_WIFI_PASSWORD or asked)` : '')
      : `keep ${secretsPath}: it already holds every secret`,
    `write ${files.gitignorePath}`,
  ];
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
  const recipeRef = (fromCwd.startsWith('..') || path.isAbsolute(fromCwd) ? path.resolve(ctx.recipePath) : fromCwd).split(path.sep).join('/');
  const config = renderDeviceConfig(ctx.substitutions, ctx.template, recipeRef, ctx.recipe.model);
  const { text: secrets, added } = completeSecrets(existing.text, existing.values, wifi, random);
  return {
    configPath: path.join(out, `${ctx.deviceName}.yaml`),
    config,
    secretsPath: path.join(out, 'secrets.yaml'),
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
export function renderDeviceConfig(substitutions: Record<string, string>, template: string, recipeRef: string, model: string): string {
  const header =
    `# Generated by flash.ts from ${recipeRef} (${model}).\n` +
    `# Edit the recipe and re-run \`npx tsx flash.ts <recipe> --only config\` rather than this file.\n\n`;
  const subs = YAML.stringify({ substitutions }, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 });
  return `${header}${subs}\n${templateBody(template)}`;
}

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
  let text = existingText || '# ESPHome secrets for the devices in this folder. Written by flash.ts; keep it private (mode 0600).\n';
  if (!text.endsWith('\n')) text += '\n';
  text += YAML.stringify(additions, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 });
  return { text, added };
}

/** Crypto randomness for a new secret: ESPHome wants the API key as base64 of 32 bytes. */
export function randomSecret(key: string): string {
  if (key === 'api_encryption_key') return crypto.randomBytes(32).toString('base64');
  // AP passwords need 8+ characters; URL-safe letters and digits keep them easy to type on a phone.
  return crypto.randomBytes(18).toString('base64url').replace(/[-_]/g, '').slice(0, key === 'ap_password' ? 16 : 24);
}

function readSecretsFile(file: string): { found: boolean; text: string; values: Record<string, string> } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { found: false, text: '', values: {} };
    throw e;
  }
  const lc = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lc });
  if (doc.errors.length) {
    const err = doc.errors[0];
    throw new InputError([{ file, line: err.linePos?.[0].line, message: `not valid YAML: ${err.message.split('\n')[0]}`, hint: 'fix the line by hand: flash.ts never rewrites existing secrets' }]);
  }
  const data = doc.toJS() ?? {};
  if (typeof data !== 'object' || Array.isArray(data))
    throw new InputError([{ file, line: 1, message: 'expected "key: value" lines', hint: 'fix or move the file away and re-run' }]);
  const values = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, String(v)]));
  for (const key of REDACTED_KEYS) if (values[key]) registerSecret(values[key]);
  return { found: true, text, values };
}

/** Wi-Fi credentials for secrets.yaml when it lacks them: env vars, else a prompt (password masked). */
async function askWifiIfMissing(existing: Record<string, string>, opts: Options): Promise<{ ssid: string; password: string } | null> {
  if ('wifi_ssid' in existing && 'wifi_password' in existing) return null;
  const ssid = existing.wifi_ssid ?? process.env.FLASH_WIFI_SSID ??
    (await ask({ id: 'wifi_ssid', kind: 'input', message: 'Your Wi-Fi network name (SSID) for the plug' }, opts, { envVar: 'FLASH_WIFI_SSID' }));
  const password = existing.wifi_password ?? process.env.FLASH_WIFI_PASSWORD ??
    (await ask({ id: 'wifi_password', kind: 'password', message: `Password for "${ssid}"` }, opts, { envVar: 'FLASH_WIFI_PASSWORD' }));
  registerSecret(password);
  return { ssid, password };
}

// ─── Step: cloudcutter ───────────────────────────────────────────────────────────────────────

/** A cloudcutter profile resolved for this recipe: what `-p` gets and the JSON written for it. */
export interface ResolvedProfile {
  deviceSlug: string;
  profileSlug: string;
  label: string;
  chip: string;
  device: Record<string, unknown>;
  profile: Record<string, unknown>;
}

async function stepCloudcutter(ctx: Ctx): Promise<void> {
  const { recipe, opts } = ctx;
  if (ctx.interrupted === 'cloudcutter' && (await alreadyOnKickstart(ctx))) return;
  const kickstart = resolveKickstart(recipe, opts.cloudcutter);
  print(`    firmware: ${kickstart.file} (${MCUS[recipe.mcu].chip}, checked)`);
  ctx.facts.kickstartFile = kickstart.file;
  ctx.facts.kickstartSha256 = sha256(fs.readFileSync(kickstart.path));
  const resolved = await resolveProfile(ctx);
  const profileDir = writeDeviceProfile(opts.cloudcutter, resolved);
  print(`    profile: ${resolved.label} (${resolved.profileSlug}) for device ${resolved.deviceSlug}; written to ${profileDir}`);

  const argv = cloudcutterArgv(resolved.deviceSlug, kickstart.file, opts.wifiIface);
  for (;;) {
    print(`\n    ${c.bold('Now put the plug into AP mode:')} ${recipe.ap_mode}`);
    print(`    cloudcutter will then take over the plug. Midway it asks you to power-cycle the plug and put it`);
    print(`    into AP mode a second time; the whole run takes up to two minutes. Keep the plug near this machine.`);
    await confirm('Is the plug in AP mode (slow blink)?', opts, true, 'cloudcutter_ready');
    const log = logFile(opts.out, 'cloudcutter');
    print(c.dim(`    $ ${shq(...argv)}   (in ${opts.cloudcutter}; log: ${log})`));
    const { code, output } = await runAttached(argv, { cwd: opts.cloudcutter, log });
    if (code === 0) {
      const mac = formatMac(output.match(/Device MAC address:\s*([0-9A-Fa-f:]{12,17})/)?.[1]);
      if (mac) ctx.facts.mac = mac;
      print(`    ${c.green('✓')} Kickstart flashed${mac ? ` (plug MAC ${mac})` : ''}. It now opens a Wi-Fi network named ${MCUS[recipe.mcu].kickstartAp}.`);
      return;
    }
    const d = diagnoseCloudcutter(output, code, recipe.mcu, otherMcuRecipes(ctx));
    print(`\n    ${c.red('✗')} ${d.what}\n    ${c.yellow('what to do:')} ${d.fix}\n    ${c.dim(`full log: ${log}`)}`);
    if (!(await confirm('Retry the cloudcutter step now?', opts, false, 'cloudcutter_retry'))) {
      // cloudcutter said it failed, so the plug is not on Kickstart: the next run need not go looking for it there.
      delete ctx.journal.started;
      writeJournal(ctx);
      throw new StepError('cloudcutter', d.what, `${d.fix}\n  then retry from this step: ${rerun(opts, '--from cloudcutter')}`);
    }
  }
}

/** The exact cloudcutter command: `-p` device slug, `-f` file name in custom-firmware/; never `-r`. */
export function cloudcutterArgv(deviceSlug: string, firmwareFile: string, wifiIface?: string): string[] {
  const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
  return [...sudo, './tuya-cloudcutter.sh', '-p', deviceSlug, '-f', firmwareFile, ...(wifiIface ? ['-w', wifiIface] : [])];
}

/** What went wrong in a failed cloudcutter run, from its output, and what the user should do. Pure. */
export function diagnoseCloudcutter(output: string, code: number, mcu: Mcu, otherRecipes: string[]): { what: string; fix: string } {
  const tryOther = otherRecipes.length
    ? `this looks like the other MCU (${MCUS[mcu === 'bk7231t' ? 'bk7231n' : 'bk7231t'].chip}): try recipe ${otherRecipes.join(' or ')}`
    : `the plug may have the other chip than ${MCUS[mcu].chip}: write a recipe with the other mcu`;
  for (const d of CLOUDCUTTER_DIAGNOSES)
    if (d.match.test(output)) return { what: d.what, fix: d.fix.replace('{tryOther}', tryOther) };
  return { what: `cloudcutter stopped with exit code ${code}`, fix: 'read the end of the log below; fix what it says and retry' };
}

/** Recipes next to this one for the other chip: what to try when the plug turns out to be the other MCU. */
function otherMcuRecipes(ctx: Ctx): string[] {
  const dir = path.dirname(ctx.recipePath);
  const other = ctx.recipe.mcu === 'bk7231t' ? 'bk7231n' : 'bk7231t';
  return fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && !f.includes('.esphome.')).flatMap((f) => {
    try {
      return loadRecipe(path.join(dir, f)).recipe.mcu === other ? [path.join(dir, f)] : [];
    } catch {
      return [];
    }
  });
}

/** Looks the recipe's profile (or device) up in cloudcutter's API and checks its chip against the recipe. */
async function resolveProfile(ctx: Ctx): Promise<ResolvedProfile> {
  const cc = ctx.recipe.cloudcutter;
  const field = cc.profile ? 'cloudcutter.profile' : 'cloudcutter.device';
  const bad = (message: string, hint: string) => new InputError([{ file: ctx.recipePath, field, message, hint }]);
  let profileSlug: string;
  let deviceSlug: string | undefined;
  let device: Record<string, any> | undefined;
  if (cc.profile) {
    const list = (await cloudcutterApiGet('profiles.json')) as ProfileEntry[];
    const found = findProfile(list, cc.profile);
    if (!found) {
      const near = suggestProfiles(list, cc.profile, ctx.recipe.mcu);
      throw bad(`"${cc.profile}" is not a profile in cloudcutter's list`, near.length ? `did you mean: ${near.join(' | ')}` : 'copy a label from cloudcutter\'s "By firmware version and name" menu');
    }
    profileSlug = found.slug;
  } else {
    device = (await cloudcutterApiGet(`devices/${cc.device}.json`, () => bad(`device "${cc.device}" is not in cloudcutter's device list`, 'check the slug on https://tuya-cloudcutter.github.io/, or give cloudcutter.profile instead'))) as Record<string, any>;
    deviceSlug = cc.device!;
    profileSlug = device.profiles?.[0]?.slug;
    if (!profileSlug) throw bad(`device "${cc.device}" lists no profile`, 'give cloudcutter.profile instead');
  }
  const profile = (await cloudcutterApiGet(`profiles/${profileSlug}.json`, () => bad(`profile "${profileSlug}" is in the list but its file is missing from the API`, 'try again later, or pick another profile'))) as Record<string, any>;
  const chip = String(profile.firmware?.chip ?? '');
  if (chip.toLowerCase() !== ctx.recipe.mcu)
    throw bad(`profile ${profileSlug} is for a ${chip || 'unknown chip'} (its firmware.chip), but the recipe's mcu is ${ctx.recipe.mcu}`,
      `pick a profile whose label ends "- ${MCUS[ctx.recipe.mcu].chip}", or fix mcu if the plug has the other chip`);
  if (!device) {
    // In flash mode cloudcutter works with the profile's first device; write that one.
    deviceSlug = profile.devices?.[0]?.slug;
    if (!deviceSlug) throw bad(`profile ${profileSlug} lists no device`, 'pick another profile, or give cloudcutter.device');
    device = (await cloudcutterApiGet(`devices/${deviceSlug}.json`)) as Record<string, any>;
  }
  return { deviceSlug: deviceSlug!, profileSlug, label: `${profile.name} / ${profile.sub_name}`, chip, device, profile };
}

export interface ProfileEntry { slug: string; name: string; type?: string; sub_name?: string }

/** A profile from `profiles.json` by menu label ("1.1.8 - BK7231N / oem_bk7231n_plug") or slug. Pure. */
export function findProfile(list: ProfileEntry[], wanted: string): ProfileEntry | undefined {
  const norm = (s: string) => s.trim().replace(/\s+/g, ' ').toLowerCase();
  const w = norm(wanted);
  return list.find((p) => p.slug.toLowerCase() === w) ?? list.find((p) => norm(`${p.name} / ${p.sub_name ?? ''}`) === w);
}

/** Up to three menu labels close to what the recipe says, for the same chip. Pure. */
export function suggestProfiles(list: ProfileEntry[], wanted: string, mcu: Mcu): string[] {
  const labels = list.filter((p) => p.name.toLowerCase().includes(mcu)).map((p) => `${p.name} / ${p.sub_name}`);
  const sub = wanted.split('/').pop()?.trim().toLowerCase() ?? '';
  const same = labels.filter((l) => sub && l.toLowerCase().endsWith(`/ ${sub}`));
  const near = nearest(wanted, labels);
  return [...new Set([...(near ? [near] : []), ...same])].slice(0, 3);
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
 * GET a file of cloudcutter's profile API with a timeout; keep a copy in the cache, and use the
 * copy when offline. `notFound` builds the error for a 404 (the thing does not exist).
 */
async function cloudcutterApiGet(rel: string, notFound?: () => Error): Promise<unknown> {
  const url = `${cloudcutterApi()}/${rel}`;
  const cached = path.join(cacheDir(), 'cloudcutter-api', rel);
  let reason: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(Number(process.env.FLASH_HTTP_TIMEOUT_MS ?? 10_000)) });
    if (res.status === 404 && notFound) throw notFound();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const text = await res.text();
    const data = JSON.parse(text);
    fs.mkdirSync(path.dirname(cached), { recursive: true });
    writeFileAtomic(cached, text);
    return data;
  } catch (e) {
    if (e instanceof InputError) throw e;
    reason = (e as Error).name === 'TimeoutError' ? 'timed out' : ((e as { cause?: Error }).cause?.message ?? (e as Error).message);
  }
  if (fs.existsSync(cached)) {
    print(c.yellow(`    offline? ${url}: ${reason}; using the copy cached ${fs.statSync(cached).mtime.toISOString().slice(0, 10)}`));
    return JSON.parse(fs.readFileSync(cached, 'utf8'));
  }
  throw new StepError('cloudcutter', `cannot fetch ${url} (${reason}) and there is no cached copy`,
    'connect this machine to the internet for this step (the plug is not needed yet), then retry; or set FLASH_CLOUDCUTTER_API to a mirror');
}

function cacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(process.env.HOME || '.', '.cache'), 'flash.ts');
}

/** A new log file under <out>/.flash/logs/ for one run of an external command. */
function logFile(out: string, what: string): string {
  const dir = path.join(out, '.flash', 'logs');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, `${what}-${new Date().toISOString().replace(/[:.]/g, '-')}.log`);
}

/**
 * Runs a command with the user's terminal attached (cloudcutter's `docker run -ti` needs a real TTY)
 * and keeps a copy of everything it printed in `log`. With a terminal, `script` provides the pty;
 * without one (CI, tests), output is copied through. Returns the exit code and the output.
 */
async function runAttached(argv: string[], o: { cwd: string; log: string }): Promise<{ code: number; output: string }> {
  const { spawn } = await import('node:child_process');
  const { quote } = await import('zx');
  const tty = process.stdin.isTTY && process.stdout.isTTY;
  const child = tty
    ? spawn('script', ['-q', '-e', '-f', '-c', argv.map((a) => quote(a)).join(' '), o.log], { cwd: o.cwd, stdio: 'inherit' })
    : spawn(argv[0], argv.slice(1), { cwd: o.cwd, stdio: ['inherit', 'pipe', 'pipe'] });
  const done = new Promise<number>((resolve) => {
    child.on('error', () => resolve(127));
    child.on('close', (code) => resolve(code ?? 1));
  });
  if (!tty) {
    const log = fs.createWriteStream(o.log, { mode: 0o600 });
    for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (d: Buffer) => (io.out(redact(d.toString())), log.write(d)));
    await done;
    await new Promise((r) => log.end(r));
  }
  const code = await done;
  // The log is redacted like the terminal copy, whole (a secret split across two chunks is caught too).
  const output = fs.existsSync(o.log) ? redact(fs.readFileSync(o.log, 'utf8')) : '';
  if (output) fs.writeFileSync(o.log, output, { mode: 0o600 });
  return { code, output };
}

// ─── Step: kickstart ─────────────────────────────────────────────────────────────────────────

/** Kickstart's pinscan entities (ESPHome 2025.5 object-id URLs; see the reference notes). */
export const PINSCAN = { pin: '/select/-__pin', mode: '/select/-__pin_mode', stateId: 'text_sensor--__pin_state' };

async function stepKickstart(ctx: Ctx): Promise<void> {
  const { opts, recipe } = ctx;
  const ap = MCUS[recipe.mcu].kickstartAp;
  if (ctx.interrupted === 'kickstart' && !opts.deviceIp && (await kickstartOnLan(ctx, 4000))) {
    print(`    ${c.green('✓')} the last run already gave the plug your Wi-Fi: found it at ${ctx.facts.kickstartIp}`);
    if (opts.backupFlash) await backupFlash(ctx);
    return;
  }
  const secrets = readSecretsFile(path.join(opts.out, 'secrets.yaml')).values;
  if (!secrets.wifi_ssid || !secrets.wifi_password)
    throw new StepError('kickstart', `no wifi_ssid / wifi_password in ${path.join(opts.out, 'secrets.yaml')}`,
      `run the config step first: ${rerun(opts, '--only config')}`);
  const wifi = { ssid: secrets.wifi_ssid, password: secrets.wifi_password };

  const sent = !opts.manualWifi && (await provisionOverAp(ctx, ap, wifi));
  if (!sent) await provisionByHand(ctx, ap, wifi.ssid);

  if (opts.deviceIp) {
    ctx.facts.kickstartIp = opts.deviceIp;
    print(`    using --device-ip ${opts.deviceIp}`);
  } else {
    const found = await kickstartOnLan(ctx, timeoutMs('FLASH_DISCOVERY_TIMEOUT_MS', 120_000), `waiting for ${ap} to join "${wifi.ssid}" and show up on your network (mDNS)`);
    if (!found)
      throw new StepError('kickstart', `the plug did not show up on your network within ${timeoutMs('FLASH_DISCOVERY_TIMEOUT_MS', 120_000) / 1000} s`,
        `check: this machine is on the same network as "${wifi.ssid}" (not a guest network, no client isolation); ` +
        `the plug's LED (still blinking = it could not join: wrong password, or a 5 GHz-only network); ` +
        `if your router lists the plug, use its address: ${rerun(opts, '--from pins --device-ip IP')}`);
    print(`    ${c.green('✓')} found ${found.name} at ${ctx.facts.kickstartIp} (MAC ${formatMac(found.txt.mac) ?? '?'}, Kickstart ${found.txt.project_version ?? '?'})`);
  }
  if (opts.backupFlash) await backupFlash(ctx);
}

/** This plug running Kickstart on the LAN (its chip's generic board, same MAC when known), by mDNS; notes its address. */
async function kickstartOnLan(ctx: Ctx, wait: number, label = 'looking for the plug on your network (mDNS)'): Promise<MdnsDevice | undefined> {
  const mac = ctx.facts.mac?.replace(/:/g, '').toLowerCase();
  const found = await discoverDevice(
    // Kickstart is built for the generic board of its chip, whatever module the recipe names.
    (d) => d.txt.project_name === 'lt.kickstart' && d.txt.board === MCUS[ctx.recipe.mcu].board && (!mac || d.txt.mac?.toLowerCase() === mac), wait, label);
  if (found) {
    ctx.facts.kickstartIp = found.addresses.find((a) => a.includes('.')) ?? found.addresses[0];
    ctx.facts.mac ??= formatMac(found.txt.mac);
  }
  return found;
}

/**
 * After a run stopped during cloudcutter: did the flash happen anyway? Kickstart's AP on the air, or
 * Kickstart on the LAN, means it did, and a second cloudcutter run would only wait for a Tuya AP that is gone.
 */
async function alreadyOnKickstart(ctx: Ctx): Promise<boolean> {
  const ap = MCUS[ctx.recipe.mcu].kickstartAp;
  print(`    the last run stopped during this step: checking whether the plug already runs Kickstart …`);
  const list = await sh(['nmcli', '-t', '-f', 'SSID', 'device', 'wifi', 'list', ...(ctx.opts.wifiIface ? ['ifname', ctx.opts.wifiIface] : [])]);
  const apUp = list.code === 0 && list.stdout.split('\n').some((l) => l.replace(/\\:/g, ':') === ap);
  // Without the MAC (cloudcutter prints it last) any Kickstart plug on the LAN could be another one.
  if (apUp || (ctx.facts.mac && (await kickstartOnLan(ctx, 4000)))) {
    print(`    ${c.green('✓')} it does (${apUp ? `its network ${ap} is on the air` : `found at ${ctx.facts.kickstartIp}`}): cloudcutter is not needed again`);
    return true;
  }
  print(`    no sign of Kickstart: running cloudcutter again`);
  return false;
}

/** Joins the plug's open AP with nmcli, sends the Wi-Fi credentials to the captive portal, gives the adapter back. */
async function provisionOverAp(ctx: Ctx, ap: string, wifi: { ssid: string; password: string }): Promise<boolean> {
  const iface = ctx.opts.wifiIface ?? (await firstWifiAdapter());
  if (!iface) {
    print(`    ${c.yellow('!')} no Wi-Fi adapter for NetworkManager to join ${ap} with`);
    return false;
  }
  print(`    joining ${ap} on ${iface} …`);
  // The Kickstart AP is open: nothing secret on this command line.
  const join = await sh(['nmcli', '--wait', '60', 'device', 'wifi', 'connect', ap, 'ifname', iface], { timeoutMs: 90_000 });
  if (join.code !== 0) {
    print(`    ${c.yellow('!')} could not join ${ap}: ${firstLine(join.stderr || join.stdout)}`);
    return false;
  }
  const undo = () => sh(['nmcli', 'connection', 'delete', 'id', ap]);
  cleanups.add(undo);
  try {
    const portal = kickstartPortal();
    const config = parsePortalConfig((await request('GET', `${portal}/config.json`)).text);
    ctx.facts.mac = formatMac(config.mac) ?? ctx.facts.mac;
    print(`    plug MAC ${config.mac || '(not given)'}; it sees ${config.ssids.length} networks`);
    if (!config.ssids.includes(wifi.ssid))
      print(`    ${c.yellow('!')} the plug does not see "${wifi.ssid}" (it sees: ${config.ssids.join(', ') || 'nothing'}). ` +
        'It only does 2.4 GHz; move it closer to the router if the name is missing.');
    const res = await request('GET', `${portal}/wifisave?${new URLSearchParams({ ssid: wifi.ssid, psk: wifi.password })}`,
      { shown: `${portal}/wifisave?ssid=***&psk=***`, redirect: 'manual' });
    if (res.status !== 302 && res.status !== 200)
      throw new StepError('kickstart', `the captive portal answered HTTP ${res.status} to the Wi-Fi settings`, `retry: ${rerun(ctx.opts, '--from kickstart')}`);
    print(`    ${c.green('✓')} sent your Wi-Fi "${wifi.ssid}" to the plug`);
    return true;
  } finally {
    // Hand the adapter back: deleting the temporary connection lets NetworkManager reconnect as before.
    cleanups.delete(undo);
    await undo();
  }
}

async function provisionByHand(ctx: Ctx, ap: string, ssid: string): Promise<void> {
  print(`\n    ${c.bold('Give the plug your Wi-Fi by hand')}, from a phone or laptop:`);
  print(`      1. join the Wi-Fi network "${ap}" (open, no password)`);
  print(`      2. open ${kickstartPortal()}/ (a sign-in page may open by itself)`);
  print(`      3. pick "${ssid}", type its password (wifi_password in ${path.join(ctx.opts.out, 'secrets.yaml')}), and save`);
  print(`      4. re-join your own network`);
  await confirm('Done?', ctx.opts, true, 'manual_wifi_done');
}

/** Wi-Fi networks and MAC from the captive portal's /config.json (its SSIDs are not JSON-escaped). Pure. */
/** One spelling for a MAC, whichever tool printed it (cloudcutter and mDNS: c8478c…, Kickstart: C8:47:8C:…). Pure. */
export function formatMac(mac: string | undefined): string | undefined {
  const hex = mac?.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  return hex?.length === 12 ? hex.match(/../g)!.join(':') : undefined;
}

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

async function firstWifiAdapter(): Promise<string | undefined> {
  const r = await sh(['nmcli', '-t', '-f', 'DEVICE,TYPE,STATE', 'device']);
  return parseNmcliTerse(r.stdout).find((f) => f[1] === 'wifi')?.[0];
}

/** Saves the plug's whole 2 MiB flash through Kickstart before anything overwrites it. */
async function backupFlash(ctx: Ctx): Promise<void> {
  const size = 2 * 1024 * 1024;
  const mac = (ctx.facts.mac ?? 'unknown').replace(/:/g, '').toLowerCase();
  const file = path.join(ctx.opts.out, '.flash', `backup-${ctx.deviceName}-${mac}.bin`);
  const chunk = 256 * 1024;
  const parts: Buffer[] = [];
  for (let off = 0; off < size; off += chunk) {
    const res = await request('GET', `${deviceUrl(ctx)}/hub/flash_read?offset=${off}&length=${chunk}`);
    if (res.status !== 200) throw new StepError('kickstart', `reading the flash at ${off} failed: HTTP ${res.status}`, `retry: ${rerun(ctx.opts, '--from kickstart --backup-flash')}`);
    parts.push(res.body);
  }
  const data = Buffer.concat(parts);
  if (data.length !== size) throw new StepError('kickstart', `flash backup came back with ${data.length} bytes, expected ${size}`, `retry: ${rerun(ctx.opts, '--from kickstart --backup-flash')}`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, data);
  fs.renameSync(`${file}.tmp`, file);
  print(`    ${c.green('✓')} saved the plug's flash (2 MiB) to ${file}`);
}

// ─── Step: pins ──────────────────────────────────────────────────────────────────────────────

async function stepPins(ctx: Ctx): Promise<void> {
  const result = await checkPins({
    base: deviceUrl(ctx),
    pins: ctx.recipe.pins,
    ask: (q) => ask(q, ctx.opts),
    say: (line) => print(`    ${line}`),
  });
  const wrong = result.filter((r) => !r.ok);
  if (!wrong.length) return print(`    ${c.green('✓')} every pin does what the recipe says`);
  const button = result.find((r) => r.fn.startsWith('button'));
  let hint = `fix pins: in ${ctx.recipePath} (or --set <function>_pin=Pn), then run from the config step again`;
  if (button && button.foundOn && button.foundOn !== button.pin) {
    const matches = recipesWithButtonOn(path.dirname(ctx.recipePath), button.foundOn);
    hint = matches.length ? `the button is on ${button.foundOn}: this plug matches ${matches.join(' or ')}; run that recipe instead` : hint;
  }
  throw new StepError('pins', `${wrong.map((r) => `${r.fn} (${r.pin}): ${r.saw}`).join('; ')}`, hint);
}

export interface PinResult { fn: string; pin: string; ok: boolean; saw: string; foundOn?: string }

/**
 * Drives each recipe pin through Kickstart's pinscan entities and asks what happened. Outputs go
 * HIGH then LOW; the button pin is read with INPUT_PULLUP while the user presses it, and if it never
 * changes the other pins are tried one by one to find where the button really is.
 */
export async function checkPins(o: {
  base: string;
  pins: Record<string, string>;
  ask: (q: Question) => Promise<string>;
  say: (line: string) => void;
}): Promise<PinResult[]> {
  const setPin = (pin: string) => request('POST', `${o.base}${PINSCAN.pin}/set?option=${encodeURIComponent(BK7231_PINS[pin])}`);
  const setMode = (mode: string) => request('POST', `${o.base}${PINSCAN.mode}/set?option=${mode}`);
  const results: PinResult[] = [];
  for (const [fn, pin] of Object.entries(o.pins)) {
    if (fn.startsWith('button')) continue;
    await setPin(pin);
    await setMode('OUTPUT_HIGH');
    await sleep(700);
    await setMode('OUTPUT_LOW');
    await sleep(700);
    await setMode('INPUT'); // let go of the pin so the next one is seen on its own
    const saw = await o.ask({ id: `pin_${fn}`, kind: 'select', message: `${fn} on ${pin} was switched on and off. What did you see?`, choices: PIN_ANSWERS });
    const ok = fn === 'relay' || fn.startsWith('relay') ? /relay/.test(saw) : /led|light/i.test(fn) ? /LED/.test(saw) : saw !== 'nothing';
    o.say(`${ok ? c.green('✓') : c.red('✗')} ${fn.padEnd(12)} ${pin.padEnd(4)} ${saw}`);
    results.push({ fn, pin, ok, saw });
  }
  for (const [fn, pin] of Object.entries(o.pins)) {
    if (!fn.startsWith('button')) continue;
    if (await buttonSeenOn(o, pin, `Press and release the plug's button now (reading ${pin}), then confirm`, setPin, setMode)) {
      o.say(`${c.green('✓')} ${fn.padEnd(12)} ${pin.padEnd(4)} press seen`);
      results.push({ fn, pin, ok: true, saw: 'press seen' });
      continue;
    }
    o.say(`${c.red('✗')} ${fn.padEnd(12)} ${pin.padEnd(4)} no press seen; looking for the button on the other pins`);
    const others = [...Object.values(o.pins).filter((p) => p !== pin), ...Object.keys(BK7231_PINS).filter((p) => !Object.values(o.pins).includes(p))];
    let foundOn: string | undefined;
    for (const cand of others)
      if (await buttonSeenOn(o, cand, `Press the button once more (reading ${cand}), then confirm`, setPin, setMode)) {
        foundOn = cand;
        break;
      }
    o.say(foundOn ? `${c.yellow('!')} the button is on ${foundOn}, not ${pin}` : `${c.red('✗')} no pin saw the button`);
    results.push({ fn, pin, ok: false, saw: foundOn ? `the button is on ${foundOn}` : 'no pin saw the button', foundOn });
  }
  await setMode('INPUT');
  return results;
}

export const PIN_ANSWERS = ['the relay clicked', 'a red LED', 'a green LED', 'a blue LED', 'another LED', 'nothing'];

/** Watches `-> Pin State` on /events while the user presses: true if the pin went LOW. */
async function buttonSeenOn(o: { base: string; ask: (q: Question) => Promise<string> }, pin: string, message: string,
  setPin: (p: string) => Promise<unknown>, setMode: (m: string) => Promise<unknown>): Promise<boolean> {
  await setPin(pin);
  await setMode('INPUT_PULLUP');
  const stream = await openEvents(o.base);
  try {
    await sleep(200); // the first events are the current states; presses come after
    stream.seenLow = false;
    await o.ask({ id: 'press_button', kind: 'confirm', message });
    await sleep(300);
    return stream.seenLow;
  } finally {
    stream.close();
  }
}

/** Subscribes to Kickstart's Server-Sent Events and notes when the pin-state sensor reads LOW. */
async function openEvents(base: string): Promise<{ seenLow: boolean; close: () => void }> {
  const ac = new AbortController();
  const handle = { seenLow: false, close: () => ac.abort() };
  const res = await fetch(`${base}/events`, { signal: ac.signal });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += decoder.decode(value, { stream: true });
        let end: number;
        // ESPHome ends events with CRLF CRLF; other servers with LF LF.
        buf = buf.replace(/\r\n/g, '\n');
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          if (!/^event:\s*state/m.test(block) || !data) continue;
          try {
            const j = JSON.parse(data) as { id?: string; state?: string; value?: string };
            if (j.id === PINSCAN.stateId && (j.state ?? j.value) === 'LOW') handle.seenLow = true;
          } catch {}
        }
      }
    } catch {}
  })();
  return handle;
}

/** Recipe files in dir whose pins.button is `pin`: which plug this is when the button turned up elsewhere. */
function recipesWithButtonOn(dir: string, pin: string): string[] {
  return fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && !f.includes('.esphome.')).flatMap((f) => {
    try {
      return loadRecipe(path.join(dir, f)).recipe.pins.button === pin ? [path.join(dir, f)] : [];
    } catch {
      return [];
    }
  });
}

// ─── Step: compile ───────────────────────────────────────────────────────────────────────────

/** A compile running in the background: it resolves to the checked UF2's path. */
export interface CompileJob { done: Promise<string>; started: number; log: string; finished?: number; failed?: boolean; stop: () => void }

/** Starts `esphome compile` in the background; the upload step waits for it. With --only compile, waits here. */
async function stepCompile(ctx: Ctx): Promise<void> {
  if (ctx.compile) return print(`    already compiling in the background (started ${Math.round((Date.now() - ctx.compile.started) / 1000)} s ago)`);
  const job = await startCompile(ctx);
  ctx.compile = job;
  const last = stepsToRun(ctx.opts).at(-1)?.name === 'compile';
  if (!last) return print(`    started in the background (log: ${job.log}); the next steps go on meanwhile`);
  await awaitCompile(ctx);
}

async function startCompile(ctx: Ctx, quiet = false): Promise<CompileJob> {
  const config = path.join(ctx.opts.out, `${ctx.deviceName}.yaml`);
  if (!fs.existsSync(config))
    throw new StepError('compile', `there is no ${config} to compile yet`,
      `write it first: ${rerun(ctx.opts, '--only config')} (then run this again)`);
  const esphome = await findEsphome(ctx.opts.esphome);
  if (!esphome)
    throw new StepError('compile', 'no esphome command, and Docker is not answering for the ghcr.io/esphome/esphome image',
      `pipx install esphome (or start Docker), then retry: ${rerun(ctx.opts, '--from compile')}`);
  const argv = esphomeArgv(ctx, esphome.kind, 'compile');
  const log = logFile(ctx.opts.out, 'compile');
  if (!quiet) print(c.dim(`    $ ${shq(...argv)}   (${esphome.describe})`));
  else print(c.dim(`    (compiling ${ctx.deviceName} in the background for the next plug)`));
  const { spawn } = await import('node:child_process');
  const out = fs.openSync(log, 'w', 0o600);
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out], cwd: process.cwd() });
  fs.closeSync(out);
  children.add(child);
  const job: CompileJob = { started: Date.now(), log, done: Promise.resolve(''), stop: () => child.kill('SIGINT') };
  job.done = new Promise<number>((resolve) => {
    child.on('error', () => resolve(127));
    child.on('close', (code) => resolve(code ?? 1));
  }).then((code) => {
    children.delete(child);
    job.finished = Date.now();
    if (code !== 0) {
      job.failed = true;
      throw new StepError('compile', `esphome compile failed (exit ${code}):\n${indent(compileErrors(fs.readFileSync(log, 'utf8')), 6)}`,
        `full log: ${log}\n  fix the config or recipe, then retry: ${rerun(ctx.opts, '--from compile')}`);
    }
    const uf2 = checkedUf2(ctx);
    ctx.afterCompile?.();
    return uf2;
  });
  job.done.catch(() => {}); // reported when awaited
  return job;
}

/**
 * An esphome command on this plug's config: the local CLI, or the Docker image with the config dir
 * mounted at /config (host network, so `upload` reaches the plug).
 */
export function esphomeArgv(ctx: Pick<Ctx, 'opts' | 'deviceName'>, kind: 'local' | 'docker', command: 'compile' | 'upload', ...extra: string[]): string[] {
  const file = `${ctx.deviceName}.yaml`;
  return kind === 'local'
    ? ['esphome', command, path.join(ctx.opts.out, file), ...extra]
    // --init: without it the container's PID 1 ignores the SIGINT that stops a compile.
    : ['docker', 'run', '--rm', '--init', ...(command === 'upload' ? ['--network', 'host'] : []), '-v', `${path.resolve(ctx.opts.out)}:/config`,
      ESPHOME_IMAGE, command, file, ...extra];
}

/** Waits for the background compile (starting one if this run has none and no fresh UF2 exists). */
async function awaitCompile(ctx: Ctx): Promise<string> {
  if (!ctx.compile) {
    const uf2 = uf2Path(ctx);
    const config = path.join(ctx.opts.out, `${ctx.deviceName}.yaml`);
    if (fs.existsSync(uf2) && fs.existsSync(config) && fs.statSync(uf2).mtimeMs >= fs.statSync(config).mtimeMs) return checkedUf2(ctx);
    ctx.compile = await startCompile(ctx);
  }
  const job = ctx.compile;
  // The first LibreTiny build downloads its toolchain (minutes); a compile still going after this is stuck.
  const limit = timeoutMs('FLASH_COMPILE_TIMEOUT_MS', 45 * 60_000);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), Math.max(0, job.started + limit - Date.now()))));
  const waited = job.finished ? 'done' : await withSpinner(`waiting for esphome compile (log: ${job.log})`, Promise.race([job.done.then(() => 'done', () => 'done'), timedOut]));
  clearTimeout(timer);
  if (waited === 'timeout') {
    job.stop();
    throw new StepError('compile', `esphome compile was still running after ${limit < 120_000 ? `${limit / 1000} s` : `${Math.round(limit / 60_000)} min`}, so it was stopped`,
      `look at the end of ${job.log} (a download that hangs? no disk space?), then retry: ${rerun(ctx.opts, '--from compile')}`);
  }
  const uf2 = await job.done;
  recordStep(ctx, 'compile');
  print(`    ${c.green('✓')} compiled in ${Math.round(((job.finished ?? Date.now()) - job.started) / 1000)} s: ${uf2}`);
  return uf2;
}

/** The UF2 the build left, checked to be for this recipe's chip. */
function checkedUf2(ctx: Ctx): string {
  const file = uf2Path(ctx);
  if (!fs.existsSync(file))
    throw new StepError('compile', `esphome finished but left no ${file}`, 'check the log; the config must have a bk72xx: board');
  try {
    checkFirmwareFor(inspectFirmware(fs.readFileSync(file), file), file, ctx.recipe.mcu);
  } catch (e) {
    if (e instanceof FirmwareError) throw new StepError('compile', e.message, `check the board in ${ctx.recipePath} matches mcu ${ctx.recipe.mcu}, then --from compile`);
    throw e;
  }
  return file;
}

/** The lines of an ESPHome log that say what went wrong: errors and the lines around them, else the tail. Pure. */
export function compileErrors(log: string): string {
  const lines = log.split('\n').filter((l) => l.trim());
  const first = lines.findIndex((l) => /\bERROR\b|error:|Failed config|\[Error\]|\*\*\*/.test(l));
  return (first >= 0 ? lines.slice(first, first + 15) : lines.slice(-15)).join('\n');
}

function indent(text: string, n: number): string {
  return text.split('\n').map((l) => ' '.repeat(n) + l).join('\n');
}

// ─── Step: upload ────────────────────────────────────────────────────────────────────────────

async function stepUpload(ctx: Ctx): Promise<void> {
  if (ctx.interrupted === 'upload') {
    print(`    the last run stopped during this step: checking whether the plug already runs the new firmware …`);
    if (await discoverDevice(finalDevice(ctx), 4000, `looking for ${ctx.deviceName} (mDNS)`))
      return print(`    ${c.green('✓')} ${ctx.deviceName} is already up: the upload went through`);
  }
  const uf2 = await awaitCompile(ctx);
  const data = fs.readFileSync(uf2);
  try {
    checkFirmwareFor(inspectFirmware(data, uf2), uf2, ctx.recipe.mcu);
  } catch (e) {
    if (e instanceof FirmwareError) throw new StepError('upload', `refusing to upload: ${e.message}`, `recompile for this recipe: ${rerun(ctx.opts, '--from compile')}`);
    throw e;
  }
  const base = deviceUrl(ctx);
  if (!ctx.facts.kickstartIp && !(await isKickstart(base))) {
    // No Kickstart at that address: a plug already on ESPHome takes the native OTA instead.
    const esphome = await findEsphome(ctx.opts.esphome);
    if (!esphome) throw new StepError('upload', 'no esphome command, and Docker is not answering', `pipx install esphome (or start Docker), then: ${rerun(ctx.opts, '--from upload')}`);
    const argv = esphomeArgv(ctx, esphome.kind, 'upload', '--device', ctx.opts.deviceIp!);
    print(c.dim(`    $ ${shq(...argv)}`));
    const r = await sh(argv, { timeoutMs: 600_000 });
    if (r.code !== 0) throw new StepError('upload', `esphome upload failed: ${firstLine(r.stderr || r.stdout)}`, `check the plug is online and the OTA password in secrets.yaml, then: ${rerun(ctx.opts, '--from upload')}`);
    return print(`    ${c.green('✓')} uploaded with esphome upload`);
  }
  ctx.facts.uf2Sha256 = sha256(data);
  const answer = await uploadUf2(`${base}/update`, data, path.basename(uf2));
  if (/Update Successful/i.test(answer)) return print(`    ${c.green('✓')} Kickstart took the firmware; the plug reboots into ESPHome`);
  const reason = answer.match(/Update Failed:?\s*(.*)/i)?.[1]?.trim() ?? answer.trim().slice(0, 200);
  throw new StepError('upload', `the plug refused the firmware: ${reason || 'Update Failed'}${explainOtaFailure(reason)}`,
    `check the recipe's mcu and board, then recompile and upload: ${rerun(ctx.opts, '--from compile')}`);
}

/** What LibreTiny's OTA failure codes mean. Pure. */
export function explainOtaFailure(reason: string): string {
  if (/Bad Family ID/i.test(reason)) return ' (the UF2 is for another chip: its family ID is not this plug\'s)';
  if (/Bad Magic Number/i.test(reason)) return ' (the file is not a UF2: upload firmware.uf2, not a .ug.bin)';
  if (/uf2=3/.test(reason)) return ' (the UF2 is for another chip: wrong family ID)';
  if (/uf2=2/.test(reason)) return ' (the file is not a UF2: upload firmware.uf2, not a .ug.bin)';
  return '';
}

async function isKickstart(base: string): Promise<boolean> {
  try {
    const r = await request('GET', `${base}/hub`, { retries: 1 });
    return r.status === 200;
  } catch {
    return false;
  }
}

/**
 * Streams a UF2 to Kickstart's web OTA as multipart/form-data (field `update`, like its web page),
 * with a progress bar. A dropped connection is retried from the start (the plug discards a partial update).
 */
export async function uploadUf2(url: string, data: Buffer, fileName: string, attempts = 3): Promise<string> {
  const http = await import('node:http');
  const { SingleBar, Presets } = await import('cli-progress');
  const boundary = `----flashts${crypto.randomBytes(8).toString('hex')}`;
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="update"; filename="${fileName}"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const total = head.length + data.length + tail.length;
  for (let attempt = 1; ; attempt++) {
    const bar = new SingleBar({ format: '    upload [{bar}] {percentage}% {value}/{total} KiB {speed}', hideCursor: true, noTTYOutput: false, stream: process.stdout }, Presets.shades_classic);
    const tty = process.stdout.isTTY && !io.answer;
    if (tty) bar.start(Math.ceil(total / 1024), 0, { speed: '' });
    const started = Date.now();
    try {
      return await new Promise<string>((resolve, reject) => {
        const req = http.request(url, { method: 'POST', headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}`, 'Content-Length': total } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve(body));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.setTimeout(timeoutMs('FLASH_HTTP_TIMEOUT_MS', 10_000) * 3, () => req.destroy(new Error('timed out')));
        let sent = 0;
        const chunks = [head, ...Array.from({ length: Math.ceil(data.length / 16384) }, (_, i) => data.subarray(i * 16384, (i + 1) * 16384)), tail];
        const writeNext = () => {
          while (chunks.length) {
            const chunk = chunks.shift()!;
            sent += chunk.length;
            if (tty) bar.update(Math.floor(sent / 1024), { speed: `${Math.round(sent / 1024 / Math.max(0.001, (Date.now() - started) / 1000))} KiB/s` });
            if (!req.write(chunk)) return void req.once('drain', writeNext);
          }
          req.end();
        };
        writeNext();
      });
    } catch (e) {
      const why = (e as Error).message;
      if (attempt >= attempts) throw new StepError('upload', `the upload to ${url} failed ${attempts} times: ${why}`,
        'keep the plug powered and close to the router; retry: --from upload');
      print(`\n    ${c.yellow('!')} upload interrupted (${why}); retrying (${attempt + 1}/${attempts})`);
      await sleep(1000 * attempt);
    } finally {
      if (tty) bar.stop();
      else print(`    upload: ${Math.round(total / 1024)} KiB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  }
}

// ─── Step: verify ────────────────────────────────────────────────────────────────────────────

/** The flashed plug on mDNS: its new name, an encrypted API, the recipe's board and, once known, its MAC. */
function finalDevice(ctx: Ctx): (d: MdnsDevice) => boolean {
  const mac = ctx.facts.mac?.replace(/:/g, '').toLowerCase();
  return (d) => d.name === ctx.deviceName && !!d.txt.api_encryption && d.txt.board === ctx.substitutions.board && (!mac || d.txt.mac?.toLowerCase() === mac);
}

async function stepVerify(ctx: Ctx): Promise<void> {
  const wait = timeoutMs('FLASH_VERIFY_TIMEOUT_MS', 120_000);
  const found = await discoverDevice(finalDevice(ctx), wait,
    `waiting for ${ctx.deviceName} to boot ESPHome and show up (mDNS)`);
  if (!found)
    throw new StepError('verify', `${ctx.deviceName} did not show up within ${wait / 1000} s`,
      `power-cycle the plug and re-run: ${rerun(ctx.opts, '--only verify')}; if it opens a Wi-Fi network named "${ctx.deviceName}", it could not join yours: ` +
      `join that network (password: ap_password in ${path.join(ctx.opts.out, 'secrets.yaml')}) and set the Wi-Fi at http://192.168.4.1; ` +
      'if your network blocks mDNS, check your router for its address');
  const ip = found.addresses.find((a) => a.includes('.')) ?? found.addresses[0];
  ctx.facts.deviceIp = ip;
  if (!(await tcpAnswers(ip, found.port, 5000)))
    throw new StepError('verify', `${ctx.deviceName} is on mDNS at ${ip} but its API port ${found.port} does not answer`, `wait a minute and re-run: ${rerun(ctx.opts, '--only verify')}; power-cycle the plug if it stays silent`);
  // The encrypted API itself: proves the plug runs this config's key (Home Assistant will need it).
  const key = readSecretsFile(path.join(ctx.opts.out, 'secrets.yaml')).values.api_encryption_key;
  const api = key ? await readDeviceInfo(ip, found.port, key, 10_000) : { error: 'no api_encryption_key in secrets.yaml' };
  if ('error' in api && /MAC failure|Handshake failure/i.test(api.error))
    throw new StepError('verify', `${ctx.deviceName} refused the api_encryption_key in ${path.join(ctx.opts.out, 'secrets.yaml')} (${api.error})`,
      `the plug runs firmware built with another key: recompile and upload again: ${rerun(ctx.opts, '--from compile')}`);
  const info = 'error' in api ? undefined : api;
  const mac = formatMac(info?.macAddress ?? found.txt.mac) ?? '?';
  print(`    ${c.green('✓')} ${c.bold(info?.friendlyName || found.txt.friendly_name || ctx.deviceName)} is running ESPHome ${info?.esphomeVersion ?? found.txt.version ?? ''}`);
  print(`      name ${ctx.deviceName} · IP ${ip} · MAC ${mac} · API port ${found.port} (encrypted)` + (info ? ` · board ${info.model}` : ''));
  if (info) print(`      read over the encrypted API with the key in secrets.yaml`);
  else print(`      ${c.yellow('!')} could not read the device over its API (${'error' in api ? api.error : ''}); Home Assistant will retry on its own`);
  print(`\n    ${c.bold('Add it to Home Assistant:')} Settings → Devices & services: ESPHome discovers "${ctx.deviceName}"`);
  print(`    (or Add integration → ESPHome → host ${ip}). It asks for the encryption key: api_encryption_key`);
  print(`    in ${path.join(ctx.opts.out, 'secrets.yaml')}. Keep that folder: ESPHome needs it for later updates.`);
}

/**
 * Connects to ESPHome's native API with the encryption key (the maintained @2colors/esphome-native-api
 * client does the Noise handshake) and reads the device info; never throws.
 */
export async function readDeviceInfo(host: string, port: number, encryptionKey: string, timeout: number): Promise<DeviceInfoResponse | { error: string }> {
  const { Client } = await import('@2colors/esphome-native-api');
  // The package's typings leave out Client's connect/disconnect and its events: this is the part we use.
  const client = new Client({ host, port, encryptionKey, reconnect: false, clientInfo: `flash.ts ${VERSION}`,
    initializeListEntities: false, initializeSubscribeStates: false }) as unknown as {
    connect(): void; disconnect(): void; on(event: 'deviceInfo' | 'error', listener: (arg: never) => void): void };
  return new Promise((resolve) => {
    const done = (r: DeviceInfoResponse | { error: string }) => {
      clearTimeout(timer);
      try {
        client.disconnect();
      } catch {}
      resolve(r);
    };
    const timer = setTimeout(() => done({ error: `no answer within ${timeout / 1000} s` }), timeout);
    client.on('deviceInfo', (info: DeviceInfoResponse) => done(info));
    client.on('error', (e: Error) => done({ error: e?.message ?? String(e) }));
    try {
      client.connect();
    } catch (e) {
      done({ error: (e as Error).message });
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

// ─── The network: HTTP with retries, mDNS discovery ──────────────────────────────────────────

/** The plug's web server: Kickstart's LAN address (port from FLASH_DEVICE_HTTP_PORT, default 80). */
function deviceUrl(ctx: Ctx): string {
  const ip = ctx.facts.kickstartIp ?? ctx.opts.deviceIp;
  if (!ip) throw new StepError('pins', "the plug's address is not known yet", `run the kickstart step first, or pass --device-ip IP`);
  const port = process.env.FLASH_DEVICE_HTTP_PORT;
  return `http://${ip}${port && port !== '80' ? `:${port}` : ''}`;
}

export class HttpError extends Error {}

/**
 * One HTTP request with a timeout; connection errors and 5xx answers are retried with backoff.
 * `shown` is the URL to name in messages when the real one carries a secret.
 */
export async function request(method: string, url: string, o: { shown?: string; redirect?: 'manual' | 'follow'; retries?: number } = {}): Promise<{ status: number; text: string; body: Buffer }> {
  const retries = o.retries ?? 3;
  let last = '';
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt) await sleep(250 * 2 ** (attempt - 1));
    try {
      const res = await fetch(url, { method, redirect: o.redirect ?? 'follow', signal: AbortSignal.timeout(timeoutMs('FLASH_HTTP_TIMEOUT_MS', 10_000)) });
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status >= 500) {
        last = `HTTP ${res.status}`;
        continue;
      }
      return { status: res.status, text: body.toString('utf8'), body };
    } catch (e) {
      last = (e as Error).name === 'TimeoutError' ? 'timed out' : ((e as { cause?: Error }).cause?.message ?? (e as Error).message);
    }
  }
  throw new HttpError(`${method} ${o.shown ?? url} failed after ${retries + 1} tries: ${last}`);
}

export interface MdnsDevice { name: string; host: string; addresses: string[]; port: number; txt: Record<string, string> }

/** Browses `_esphomelib._tcp` until a device matches, re-asking every 2 s (BK72xx mDNS can be slow to answer). */
export async function discoverDevice(match: (d: MdnsDevice) => boolean, timeout: number, label: string): Promise<MdnsDevice | undefined> {
  const { Bonjour } = await import('bonjour-service');
  const iface = process.env.FLASH_MDNS_INTERFACE;
  // Bind the wildcard address: a socket bound to the interface's own address receives no multicast.
  const bonjour = new Bonjour(iface ? ({ interface: iface, bind: '0.0.0.0' } as object) : {});
  const browser = bonjour.find({ type: 'esphomelib', protocol: 'tcp' });
  return withSpinner(label, new Promise<MdnsDevice | undefined>((resolve) => {
    const seen = (svc: { name: string; host: string; addresses?: string[]; port: number; txt?: Record<string, unknown> }) => {
      const d: MdnsDevice = { name: svc.name, host: svc.host, addresses: svc.addresses ?? [], port: svc.port,
        txt: Object.fromEntries(Object.entries(svc.txt ?? {}).map(([k, v]) => [k, String(v)])) };
      if (d.addresses.length && match(d)) finish(d);
    };
    const requery = setInterval(() => {
      for (const svc of browser.services) seen(svc);
      browser.update();
    }, 2000);
    const timer = setTimeout(() => finish(undefined), timeout);
    browser.on('up', seen);
    browser.on('txt-update', seen);
    function finish(d: MdnsDevice | undefined) {
      clearInterval(requery);
      clearTimeout(timer);
      browser.stop();
      bonjour.destroy();
      resolve(d);
    }
  }));
}

/** Shows `label` with a spinner and the elapsed time while `work` runs (a plain line without a terminal). */
async function withSpinner<T>(label: string, work: Promise<T>): Promise<T> {
  const start = Date.now();
  if (!process.stdout.isTTY || io.answer) {
    print(`    ${label} …`);
    return work;
  }
  const frames = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏';
  let i = 0;
  const tick = setInterval(() => io.out(`\r    ${c.cyan(frames[i++ % frames.length])} ${label} (${Math.round((Date.now() - start) / 1000)} s)\x1b[K`), 100);
  try {
    return await work;
  } finally {
    clearInterval(tick);
    io.out('\r\x1b[K');
  }
}

function timeoutMs(envVar: string, def: number): number {
  const v = Number(process.env[envVar]);
  return Number.isFinite(v) && v > 0 ? v : def;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ─── Steps still to come (issues 3–5): their dry-run plans ───────────────────────────────────

function planCompile(ctx: Ctx): string[] {
  return [`$ ${shq(...esphomeArgv(ctx, ctx.opts.esphome ?? 'local', 'compile'))}   (in the background; log in ${path.join(ctx.opts.out, '.flash', 'logs')})`,
    `check ${uf2Path(ctx)} is a UF2 with family ID 0x${MCUS[ctx.recipe.mcu].familyId.toString(16).toUpperCase()} (${MCUS[ctx.recipe.mcu].chip})`];
}

function planCloudcutter(ctx: Ctx): string[] {
  const cc = ctx.recipe.cloudcutter;
  return [
    cc.profile ? `resolve cloudcutter profile "${cc.profile}" (GET ${cloudcutterApi()}/profiles.json)` : `GET ${cloudcutterApi()}/devices/${cc.device}.json`,
    `GET ${cloudcutterApi()}/profiles/<profile slug>.json (check firmware.chip is ${MCUS[ctx.recipe.mcu].chip}), then devices/<its first device>.json`,
    `write ${path.join(ctx.opts.cloudcutter, 'device-profiles', '<device slug>')}/device.json and profile.json`,
    `ask you to put the plug in AP mode: ${ctx.recipe.ap_mode}`,
    `$ ${shq(...cloudcutterArgv('<device slug>', kickstartForPlan(ctx), ctx.opts.wifiIface))}   (in ${ctx.opts.cloudcutter}; log in ${path.join(ctx.opts.out, '.flash', 'logs')})`,
  ];
}

/** The Kickstart file name when the checkout is there to look in; a description of it otherwise. */
function kickstartForPlan(ctx: Ctx): string {
  try {
    return resolveKickstart(ctx.recipe, ctx.opts.cloudcutter).file;
  } catch {
    return ctx.recipe.kickstart === 'auto' ? `<newest ESPHome-Kickstart-*_${ctx.recipe.mcu}_app.ota.ug.bin>` : ctx.recipe.kickstart;
  }
}

function planKickstart(ctx: Ctx): string[] {
  const ap = MCUS[ctx.recipe.mcu].kickstartAp;
  const portal = kickstartPortal();
  return [
    `$ nmcli --wait 60 device wifi connect ${ap} ifname ${ctx.opts.wifiIface ?? '<wifi adapter>'}`,
    `GET ${portal}/config.json`,
    `GET ${portal}/wifisave?ssid=***&psk=***`,
    `$ nmcli connection delete id ${ap}`,
    ctx.opts.deviceIp ? `use --device-ip ${ctx.opts.deviceIp}` : `mDNS: browse _esphomelib._tcp.local for project_name=lt.kickstart, board=${MCUS[ctx.recipe.mcu].board}`,
  ];
}

function planPins(ctx: Ctx): string[] {
  return Object.entries(ctx.recipe.pins).map(([fn, pin]) =>
    `POST /select/-__pin/set?option=${encodeURIComponent(BK7231_PINS[pin])}, then ${fn.startsWith('button') ? 'INPUT_PULLUP and ask you to press it' : 'OUTPUT_HIGH / OUTPUT_LOW and ask what you saw'} (${fn})`);
}

function planUpload(ctx: Ctx): string[] {
  return [`POST http://<kickstart ip>/update  multipart field "update" = ${uf2Path(ctx)}`,
    `(a plug already on ESPHome, at --device-ip: $ ${shq(...esphomeArgv(ctx, ctx.opts.esphome ?? 'local', 'upload', '--device', ctx.opts.deviceIp ?? 'IP'))})`];
}

function planVerify(ctx: Ctx): string[] {
  return [`mDNS: wait for ${ctx.deviceName}._esphomelib._tcp.local with api_encryption and board ${ctx.substitutions.board}`,
    `native API <ip>:6053: Noise handshake with api_encryption_key (***), then DeviceInfoRequest`];
}

function uf2Path(ctx: Ctx): string {
  return path.join(ctx.opts.out, '.esphome', 'build', ctx.deviceName, '.pioenvs', ctx.deviceName, 'firmware.uf2');
}

function cloudcutterApi(): string {
  return (process.env.FLASH_CLOUDCUTTER_API ?? 'https://tuya-cloudcutter.github.io/api').replace(/\/$/, '');
}

function kickstartPortal(): string {
  return (process.env.FLASH_KICKSTART_PORTAL ?? 'http://192.168.4.1').replace(/\/$/, '');
}

// ─── Firmware files: what a .ug.bin or .uf2 is, and whether it fits the recipe ──────────────

export type FirmwareInfo =
  | { kind: 'ug'; version: string; dataLength: number; chip?: Mcu; chipFrom: 'header' | 'file name' | 'unknown' }
  | { kind: 'uf2'; blocks: number; familyId: number; chip?: Mcu };

/** A firmware file that cannot be used, with what it is and what would fit. */
export class FirmwareError extends Error {}

const UG_MAGIC = 0x55aa55aa;
const UG_END_MAGIC = 0xaa55aa55;
const UF2_MAGIC0 = 0x0a324655;
const UF2_MAGIC1 = 0x9e5d5157;
const UF2_MAGIC_END = 0x0ab16f30;

/** Reads a Beken UG OTA file (what cloudcutter flashes) or a UF2 (what Kickstart's web OTA takes). Pure. */
export function inspectFirmware(buf: Buffer, fileName: string): FirmwareInfo {
  const name = path.basename(fileName);
  // cloudcutter reads the first 512 bytes and rejects anything shorter.
  if (buf.length < 512) throw new FirmwareError(`${name} is truncated: ${buf.length} bytes, a firmware file has at least 512`);
  if (buf.readUInt32BE(0) === UG_MAGIC) return inspectUG(buf, name);
  if (buf.readUInt32LE(0) === UF2_MAGIC0) return inspectUF2(buf, name);
  throw new FirmwareError(`${name} is neither a Beken UG file (55 AA 55 AA) nor a UF2 file: it starts with ${buf.subarray(0, 4).toString('hex')}`);
}

function inspectUG(buf: Buffer, name: string): FirmwareInfo {
  const version = buf.subarray(4, 16).toString('latin1').replace(/\0.*$/s, '');
  const dataLength = buf.readUInt32BE(16);
  if (buf.readUInt32BE(28) !== UG_END_MAGIC) throw new FirmwareError(`${name} has a damaged UG header (no AA 55 AA 55 at byte 28)`);
  if (byteSum(buf.subarray(0, 24)) !== buf.readUInt32BE(24)) throw new FirmwareError(`${name} has a bad header checksum: the file is damaged, download it again`);
  if (buf.length < 32 + dataLength)
    throw new FirmwareError(`${name} is truncated: the header says ${32 + dataLength} bytes, the file has ${buf.length}; download it again`);
  if (byteSum(buf.subarray(32, 32 + dataLength)) !== buf.readUInt32BE(20))
    throw new FirmwareError(`${name} has a bad data checksum: the file is damaged, download it again`);
  // Like cloudcutter: the chip from the RBL version string at offset 60, else from the file name.
  const rbl = buf.subarray(60, 84).toString('latin1').replace(/\0.*$/s, '').toLowerCase();
  const fromHeader = rbl.match(/bk7231[tn]/)?.[0] as Mcu | undefined;
  const fromName = name.toLowerCase().match(/bk7231[tn]/)?.[0] as Mcu | undefined;
  const chip = fromHeader ?? fromName;
  return { kind: 'ug', version, dataLength, chip, chipFrom: fromHeader ? 'header' : fromName ? 'file name' : 'unknown' };
}

function inspectUF2(buf: Buffer, name: string): FirmwareInfo {
  if (buf.length % 512) throw new FirmwareError(`${name} is truncated: ${buf.length} bytes is not a whole number of 512-byte UF2 blocks`);
  let familyId: number | undefined;
  for (let off = 0; off < buf.length; off += 512) {
    const ok = buf.readUInt32LE(off) === UF2_MAGIC0 && buf.readUInt32LE(off + 4) === UF2_MAGIC1 && buf.readUInt32LE(off + 508) === UF2_MAGIC_END;
    if (!ok) throw new FirmwareError(`${name} is damaged: UF2 block ${off / 512} has bad magic numbers`);
    if (buf.readUInt32LE(off + 8) & 0x2000) familyId ??= buf.readUInt32LE(off + 28);
  }
  if (familyId === undefined) throw new FirmwareError(`${name} is a UF2 without a family ID: it does not say which chip it is for`);
  const chip = (Object.keys(MCUS) as Mcu[]).find((m) => MCUS[m].familyId === familyId);
  return { kind: 'uf2', blocks: buf.length / 512, familyId, chip };
}

/** The file is right for this recipe, or a FirmwareError that names it, says what it is and what is needed. */
export function checkFirmwareFor(info: FirmwareInfo, fileName: string, mcu: Mcu): void {
  const name = path.basename(fileName);
  const what = info.kind === 'ug' ? `a UG file (version ${info.version})` : `a UF2 with family ID 0x${info.familyId.toString(16).toUpperCase()}`;
  if (!info.chip)
    throw new FirmwareError(`${name} is ${what} for an unknown chip; the recipe needs ${MCUS[mcu].chip} firmware`);
  if (info.chip !== mcu)
    throw new FirmwareError(`${name} is ${what} for the ${MCUS[info.chip].chip}, but the recipe's mcu is ${mcu}: flashing it would fail`);
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
  for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
}

function byteSum(buf: Buffer): number {
  let s = 0;
  for (const b of buf) s = (s + b) >>> 0;
  return s;
}

/** The Kickstart file the recipe asks for, read and checked. Throws StepError naming the file and the fix. */
export function resolveKickstart(recipe: Recipe, cloudcutterDir: string): { file: string; path: string; info: FirmwareInfo } {
  const dir = path.join(cloudcutterDir, 'custom-firmware');
  let files: string[];
  try {
    files = fs.readdirSync(dir);
  } catch {
    throw new StepError('cloudcutter', `no ${dir} folder: the cloudcutter checkout is missing or incomplete`, cloneHint(cloudcutterDir));
  }
  const file = recipe.kickstart === 'auto' ? pickKickstart(files, recipe.mcu) : recipe.kickstart;
  if (!file)
    throw new StepError('cloudcutter', `no ESPHome-Kickstart-*_${recipe.mcu}_app.ota.ug.bin in ${dir}`,
      `update the checkout (git -C ${cloudcutterDir} pull) or name a file with kickstart: in the recipe`);
  const full = path.join(dir, file);
  if (!fs.existsSync(full))
    throw new StepError('cloudcutter', `kickstart file ${file} is not in ${dir}`,
      `files there: ${files.filter((f) => !f.startsWith('.')).join(', ') || '(none)'}; or use kickstart: auto`);
  try {
    const info = inspectFirmware(fs.readFileSync(full), file);
    checkFirmwareFor(info, file, recipe.mcu);
    return { file, path: full, info };
  } catch (e) {
    if (e instanceof FirmwareError)
      throw new StepError('cloudcutter', e.message, `use kickstart: auto, or the ..._${recipe.mcu}_app.ota.ug.bin file from ${dir}`);
    throw e;
  }
}

function cloneHint(dir: string): string {
  return `git clone --depth 1 https://github.com/tuya-cloudcutter/tuya-cloudcutter.git ${shq(dir)}`;
}

// ─── Doctor: is this machine ready? (also the `check` step, for the steps a run is about to do) ─

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
  /** Steps that cannot run without this. */
  for: StepName[];
}

/** Ports cloudcutter's fake Tuya cloud needs on this machine (its own safety check lists them). */
export const CLOUDCUTTER_PORTS = [
  { port: 53, proto: 'udp' }, { port: 67, proto: 'udp' }, { port: 80, proto: 'tcp' },
  { port: 443, proto: 'tcp' }, { port: 1883, proto: 'tcp' }, { port: 8886, proto: 'tcp' },
] as const;

async function doctor(opts: Options, recipe: Recipe): Promise<Check[]> {
  const wifi = wifiAdapterCheck(opts.wifiIface);
  const checks = await Promise.all([
    linuxCheck(), dockerCheck(), wifi, sudoCheck(), checkoutCheck(opts.cloudcutter),
    firmwareCheck(recipe, opts.cloudcutter), portsCheck(), esphomeCheck(opts.esphome),
  ]);
  return checks;
}

function printChecks(checks: Check[]): void {
  const width = Math.max(...checks.map((k) => k.name.length)) + 2;
  for (const k of checks) {
    print(`  ${k.ok ? c.green('✓') : c.red('✗')} ${k.name.padEnd(width)}${k.detail}`);
    if (!k.ok && k.fix) print(`    ${' '.repeat(width)}${c.yellow('fix:')} ${k.fix}`);
  }
}

async function linuxCheck(): Promise<Check> {
  const ok = process.platform === 'linux';
  return { name: 'Linux', ok, detail: ok ? `${process.platform} ${(await import('node:os')).release()}` : `this is ${process.platform}`,
    fix: 'cloudcutter needs a Linux host (a Raspberry Pi or a Linux laptop; not WSL, not macOS)', for: ['cloudcutter', 'kickstart'] };
}

async function dockerCheck(): Promise<Check> {
  const r = await sh(['docker', 'info', '--format', '{{.ServerVersion}}']);
  if (r.notFound)
    return { name: 'Docker', ok: false, detail: 'docker is not installed', fix: 'install Docker Engine (https://docs.docker.com/engine/install/), then: sudo systemctl start docker', for: ['cloudcutter'] };
  // `docker info` can exit 0 with the daemon down (it prints the client part and an error): only a
  // server version on stdout means the daemon answered.
  if (r.code !== 0 || !r.stdout.trim())
    return { name: 'Docker', ok: false, detail: `the Docker daemon is not answering: ${firstLine(r.stderr || r.stdout) || 'no server version'}`,
      fix: 'sudo systemctl start docker (and add yourself to the docker group, or run flash.ts with sudo)', for: ['cloudcutter'] };
  return { name: 'Docker', ok: true, detail: `daemon ${r.stdout.trim()} answering`, for: ['cloudcutter'] };
}

/** nmcli, and a Wi-Fi adapter NetworkManager manages whose AP mode is `yes` (cloudcutter hosts an AP on it). */
async function wifiAdapterCheck(iface?: string): Promise<Check> {
  const name = 'Wi-Fi adapter';
  const forSteps: StepName[] = ['cloudcutter', 'kickstart'];
  const list = await sh(['nmcli', '-t', '-f', 'DEVICE,TYPE,STATE', 'device']);
  if (list.notFound)
    return { name, ok: false, detail: "NetworkManager's nmcli is not installed", fix: 'sudo apt install network-manager (cloudcutter drives Wi-Fi through it)', for: forSteps };
  if (list.code !== 0)
    return { name, ok: false, detail: `nmcli failed: ${firstLine(list.stderr)}`, fix: 'sudo systemctl start NetworkManager', for: forSteps };
  const wifis = parseNmcliTerse(list.stdout).filter((f) => f[1] === 'wifi').map((f) => f[0]);
  if (iface && !wifis.includes(iface))
    return { name, ok: false, detail: `--wifi-iface ${iface} is not a Wi-Fi device NetworkManager knows (it knows: ${wifis.join(', ') || 'none'})`,
      fix: 'check `nmcli device` and pass one of its wifi devices', for: forSteps };
  if (!wifis.length)
    return { name, ok: false, detail: 'no Wi-Fi adapter found', fix: 'plug in a USB Wi-Fi adapter that supports AP mode (one you are not using for your own connection)', for: forSteps };
  const candidates = iface ? [iface] : wifis;
  for (const dev of candidates) {
    const props = await sh(['nmcli', '-t', '-f', 'WIFI-PROPERTIES.AP', 'device', 'show', dev]);
    if (/:yes\s*$/m.test(props.stdout))
      return { name, ok: true, detail: `${dev} supports AP mode${iface ? '' : ' (pass --wifi-iface to choose another)'}`, for: forSteps };
  }
  return { name, ok: false, detail: `${candidates.join(', ')}: AP mode not supported`, fix: 'use a Wi-Fi adapter whose `nmcli -f wifi-properties device show IFACE` says AP: yes', for: forSteps };
}

async function sudoCheck(): Promise<Check> {
  if (process.getuid?.() === 0) return { name: 'sudo', ok: true, detail: 'running as root', for: ['cloudcutter'] };
  const r = await sh(['sudo', '-n', 'true']);
  if (r.notFound) return { name: 'sudo', ok: false, detail: 'sudo is not installed', fix: 'install sudo, or run flash.ts as root', for: ['cloudcutter'] };
  return { name: 'sudo', ok: true, detail: r.code === 0 ? 'available' : 'available (it will ask for your password)', for: ['cloudcutter'] };
}

async function checkoutCheck(dir: string): Promise<Check> {
  const ok = fs.existsSync(path.join(dir, 'tuya-cloudcutter.sh'));
  return { name: 'cloudcutter checkout', ok, detail: ok ? dir : `no tuya-cloudcutter.sh in ${dir}`, fix: cloneHint(dir), for: ['cloudcutter'] };
}

async function firmwareCheck(recipe: Recipe, dir: string): Promise<Check> {
  const name = 'Kickstart firmware';
  try {
    const k = resolveKickstart(recipe, dir);
    return { name, ok: true, detail: `${k.file} (${MCUS[recipe.mcu].chip})`, for: ['cloudcutter'] };
  } catch (e) {
    if (e instanceof StepError) return { name, ok: false, detail: e.message, fix: e.hint, for: ['cloudcutter'] };
    throw e;
  }
}

async function portsCheck(): Promise<Check> {
  const name = 'free ports';
  const r = await sh(['ss', '-H', '-l', '-n', '-t', '-u', '-p']);
  if (r.notFound || r.code !== 0) return { name, ok: false, detail: 'cannot list listening ports (ss failed)', fix: 'install iproute2', for: ['cloudcutter'] };
  const busy = busyPorts(r.stdout);
  if (!busy.length) return { name, ok: true, detail: CLOUDCUTTER_PORTS.map((p) => `${p.port}/${p.proto}`).join(' '), for: ['cloudcutter'] };
  return { name, ok: false, detail: busy.map((b) => `${b.port}/${b.proto} held by ${b.process}`).join('; '),
    fix: `stop those services while flashing (e.g. sudo systemctl stop ${[...new Set(busy.map((b) => b.process.split(' ')[0]))].join(' ')}); flash.ts never kills them`, for: ['cloudcutter'] };
}

/** Which of cloudcutter's ports `ss -H -lntup` shows in use, and by what. Pure. */
export function busyPorts(ssOutput: string): { port: number; proto: string; process: string }[] {
  const found = new Map<string, { port: number; proto: string; process: string }>();
  for (const line of ssOutput.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const proto = cols[0];
    const local = cols[4];
    const port = Number(local.slice(local.lastIndexOf(':') + 1));
    if (!CLOUDCUTTER_PORTS.some((p) => p.port === port && p.proto === proto)) continue;
    const users = line.match(/users:\(\("([^"]+)",pid=(\d+)/);
    const key = `${port}/${proto}`;
    if (!found.has(key)) found.set(key, { port, proto, process: users ? `${users[1]} (pid ${users[2]})` : 'another program' });
  }
  return [...found.values()];
}

async function esphomeCheck(mode?: 'local' | 'docker'): Promise<Check> {
  const name = 'ESPHome';
  const esphome = await findEsphome(mode);
  if (esphome) return { name, ok: true, detail: esphome.describe, for: ['compile', 'upload'] };
  return { name, ok: false, detail: mode === 'docker' ? 'the ghcr.io/esphome/esphome image is not available (Docker not answering?)' : 'no esphome command, and no Docker to run ghcr.io/esphome/esphome',
    fix: 'pipx install esphome (or: pip install esphome), or start Docker: flash.ts then runs ghcr.io/esphome/esphome', for: ['compile', 'upload'] };
}

/** How to run ESPHome here: the local CLI, or the Docker image. */
async function findEsphome(mode?: 'local' | 'docker'): Promise<{ kind: 'local' | 'docker'; describe: string } | undefined> {
  if (mode !== 'docker') {
    const r = await sh(['esphome', 'version']);
    if (!r.notFound && r.code === 0) return { kind: 'local', describe: `esphome CLI, ${r.stdout.trim().replace(/^Version:\s*/, 'version ')}` };
  }
  if (mode !== 'local') {
    const r = await sh(['docker', 'info', '--format', '{{.ServerVersion}}']);
    if (!r.notFound && r.code === 0 && r.stdout.trim()) return { kind: 'docker', describe: `Docker image ${ESPHOME_IMAGE} (pulled on first use)` };
  }
  return undefined;
}

const ESPHOME_IMAGE = 'ghcr.io/esphome/esphome';

/** Rows of `nmcli -t` output, split on unescaped colons. Pure. */
export function parseNmcliTerse(out: string): string[][] {
  return out.split('\n').filter(Boolean).map((line) => line.split(/(?<!\\):/).map((f) => f.replace(/\\:/g, ':')));
}

// ─── The journal: never lose the user's place ───────────────────────────────────────────────

/** `<out>/.flash/<device_name>.json`: the steps done (with a hash of their inputs) and the facts learned. */
export interface Journal {
  version: 1;
  device_name: string;
  recipe: string;
  steps: Partial<Record<StepName, { at: string; inputs: string }>>;
  facts: Facts;
  /** The step under way, until it finishes: after a crash or Ctrl+C, the plug may be further along than `steps` says. */
  started?: { step: StepName; at: string };
}

export function journalPath(ctx: Pick<Ctx, 'opts' | 'deviceName'>): string {
  return path.join(ctx.opts.out, '.flash', `${ctx.deviceName}.json`);
}

export function readJournal(ctx: Pick<Ctx, 'opts' | 'deviceName' | 'recipePath'>): Journal {
  const empty: Journal = { version: 1, device_name: ctx.deviceName, recipe: ctx.recipePath, steps: {}, facts: {} };
  try {
    const j = JSON.parse(fs.readFileSync(journalPath(ctx), 'utf8')) as Journal;
    return j.version === 1 && j.steps && j.facts ? j : empty;
  } catch {
    return empty;
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
  fs.mkdirSync(path.dirname(journalPath(ctx)), { recursive: true });
  writeFileAtomic(journalPath(ctx), JSON.stringify(ctx.journal, null, 2) + '\n');
}

/** Notes in the journal that a step began, so a run that dies midway knows to look where the plug got to. */
function recordStart(ctx: Ctx, step: StepName): void {
  if (ctx.opts.dryRun || step === 'check' || step === 'config') return;
  ctx.journal.started = { step, at: new Date().toISOString() };
  writeJournal(ctx);
}

/**
 * What a step depends on, as a hash: when it changes, the step is redone. The config depends on the
 * recipe and template; compile, upload and verify on the rendered config and secrets.yaml; cloudcutter
 * on the recipe's chip and profile; kickstart on the Wi-Fi secrets; pins on the pins.
 */
export function stepInputs(ctx: Ctx, step: StepName): string {
  const secrets = readSecretsFile(path.join(ctx.opts.out, 'secrets.yaml'));
  const config = renderDeviceConfig(ctx.substitutions, ctx.template, '', ctx.recipe.model);
  const r = ctx.recipe;
  const parts: Record<StepName, unknown> = {
    check: null,
    config: [fs.readFileSync(ctx.recipePath, 'utf8'), ctx.template, ctx.opts.sets],
    compile: [config, secrets.text],
    cloudcutter: [r.mcu, r.cloudcutter, r.kickstart],
    kickstart: [r.mcu, secrets.values.wifi_ssid, secrets.values.wifi_password],
    pins: [r.pins],
    upload: [config, secrets.text],
    verify: [config, secrets.text],
  };
  return sha256(JSON.stringify(parts[step])).slice(0, 16);
}

function sha256(data: string | Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/**
 * Where this run starts. A plain re-run resumes after the steps the journal says are done and whose
 * inputs have not changed since; --from, --only and --restart say where explicitly.
 */
function resumePoint(ctx: Ctx, steps: (typeof STEPS)[number][]): (typeof STEPS)[number][] {
  if (ctx.opts.restart || ctx.opts.only || ctx.opts.from) {
    if (ctx.opts.restart && Object.keys(ctx.journal.steps).length) print(c.dim(`  --restart: starting over (the journal said ${Object.keys(ctx.journal.steps).join(', ')} done)`));
    if (ctx.opts.restart) ctx.journal = { ...ctx.journal, steps: {}, facts: {} };
    else if (ctx.opts.from) print(c.dim(`  starting at ${ctx.opts.from} (--from)`));
    return steps;
  }
  const done = (name: StepName) => ctx.journal.steps[name]?.inputs === stepInputs(ctx, name);
  const skipped = steps.filter((s) => s.name !== 'check' && done(s.name)).map((s) => s.name);
  const changed = steps.filter((s) => ctx.journal.steps[s.name] && !done(s.name)).map((s) => s.name);
  if (skipped.length) print(`  resuming: ${skipped.join(', ')} already done (journal ${journalPath(ctx)}); --restart starts over`);
  if (changed.length) print(`  redoing ${changed.join(', ')}: inputs changed since last time`);
  return steps.filter((s) => s.name === 'check' || !done(s.name));
}

// ─── Loading and validating a recipe ─────────────────────────────────────────────────────────

/** A problem with the user's input: where it is, what is wrong, how to fix it. */
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

export class StepError extends Error {
  constructor(public step: string, message: string, public hint: string) {
    super(message);
  }
}

export function formatProblem(p: Problem): string {
  const where = [p.file, p.line].filter((x) => x !== undefined).join(':');
  const head = [where, p.field].filter(Boolean).join(': ');
  return `${head ? `${head}: ` : ''}${p.message}${p.hint ? `\n    fix: ${p.hint}` : ''}`;
}

/** Reads, validates and prepares everything a run needs. Throws InputError (exit 2) on any problem. */
export function loadContext(opts: Options): Ctx {
  const recipePath = opts.recipe;
  const { recipe, doc, lineCounter } = loadRecipe(recipePath, opts.sets);
  const templatePath = path.join(path.dirname(recipePath), recipe.esphome);
  let template: string;
  try {
    template = fs.readFileSync(templatePath, 'utf8');
  } catch {
    throw new InputError([{ file: recipePath, line: lineOf(doc, lineCounter, ['esphome']), field: 'esphome',
      message: `template "${recipe.esphome}" not found (looked for ${templatePath})`, hint: 'name a file next to the recipe, e.g. status-plug.esphome.yaml' }]);
  }
  const substitutions = substitutionsFor(recipe);
  checkTemplate(template, templatePath, substitutions, opts.sets);
  const ctx: Ctx = { opts, recipe, recipePath, templatePath, template, substitutions, deviceName: substitutions.device_name, facts: {}, journal: undefined! };
  ctx.journal = readJournal(ctx);
  ctx.facts = { ...ctx.journal.facts };
  // The journal's "started" is overwritten as soon as this run begins a step: keep what the last run left.
  ctx.interrupted = ctx.journal.started?.step;
  // Every secret already in secrets.yaml is hidden from output and logs from the start, whichever steps run.
  readSecretsFile(path.join(opts.out, 'secrets.yaml'));
  return ctx;
}

/** The recipe file parsed and validated, with `--set` values applied first so they are checked too. */
export function loadRecipe(file: string, sets: Record<string, string> = {}): { recipe: Recipe; doc: Document; lineCounter: LineCounter } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const dir = path.dirname(file);
    const nearby = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && !f.includes('.esphome.')) : [];
    throw new InputError([{ file, message: code === 'ENOENT' ? 'recipe file not found' : `cannot read the recipe (${code})`,
      hint: nearby.length ? `recipes in ${dir}/: ${nearby.join(', ')}` : 'give the path of a recipe, e.g. recipes/23A.yaml' }]);
  }
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: true });
  if (doc.errors.length)
    throw new InputError(doc.errors.slice(0, 3).map((err) => ({
      file, line: err.linePos?.[0].line, message: `YAML syntax error: ${err.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`,
      hint: 'check the indentation (spaces, not tabs) and that "key: value" has a space after the colon',
    })));
  const data = doc.toJS() ?? {};
  const setField: Record<string, string> = {};
  if (typeof data === 'object' && !Array.isArray(data)) applySets(data, sets, setField);

  const parsed = RecipeSchema.safeParse(data, { reportInput: true });
  if (!parsed.success)
    throw new InputError(parsed.error.issues.map((issue) => problemFromIssue(issue, file, doc, lineCounter, setField)));
  const recipe = parsed.data;
  // zod lists declared keys first; keep the order the recipe author wrote instead.
  const order = Object.keys((data as Record<string, any>).substitutions ?? {});
  recipe.substitutions = Object.fromEntries(order.map((k) => [k, recipe.substitutions[k]])) as Recipe['substitutions'];
  return { recipe, doc, lineCounter };
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
function problemFromIssue(issue: z.core.$ZodIssue, file: string, doc: Document, lc: LineCounter, setField: Record<string, string>): Problem {
  const pathParts = issue.path.map(String);
  let field = pathParts.join('.');
  const leaf = pathParts[pathParts.length - 1] ?? '';
  const input = (issue as { input?: unknown }).input;
  let message = issue.message;
  let hint = (issue as { params?: { hint?: string } }).params?.hint;
  let linePath: string[] = pathParts;

  switch (issue.code) {
    case 'unrecognized_keys': {
      const key = issue.keys[0];
      const known = knownKeys(pathParts);
      const near = nearest(key, known);
      field = [...pathParts, key].join('.');
      linePath = [...pathParts, key];
      message = `unknown key "${key}"`;
      hint = near ? `did you mean "${near}"? (rename "${key}:" to "${near}:")` : `remove it; valid keys here: ${known.join(', ')}`;
      break;
    }
    case 'invalid_type':
      if (input === undefined) {
        linePath = pathParts.slice(0, -1);
        message = `missing required key "${leaf}"`;
        hint = `add: ${FIELD_EXAMPLES[leaf] ?? `${leaf}: ...`}`;
      } else {
        message = `expected ${issue.expected}, got ${describe(input)}`;
        hint = hint ?? `write it as: ${FIELD_EXAMPLES[leaf] ?? `${leaf}: <${issue.expected}>`}`;
      }
      break;
    case 'invalid_value':
      message = `"${String(input)}" is not a valid ${leaf}`;
      if (pathParts[0] === 'pins') {
        message = `"${String(input)}" is not a BK7231 pin`;
        hint = `use one of ${Object.keys(BK7231_PINS).join(' ')} (pins usable on generic-bk7231t/n-qfn32-tuya boards)`;
      } else {
        const near = typeof input === 'string' ? nearest(input.toUpperCase(), issue.values.map(String)) : undefined;
        hint = `valid options are ${issue.values.join(', ')}${near ? `; did you mean ${near}?` : ''}`;
      }
      break;
    case 'invalid_format':
    case 'too_big':
      if (leaf === 'device_name') {
        message = `"${String(input)}" is not a valid ESPHome device name`;
        hint = `use lowercase a-z, 0-9 and - (no spaces), at most 31 characters, e.g. ${suggestDeviceName(String(input))}`;
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
  return { file, line: lineOf(doc, lc, linePath, issue.code === 'unrecognized_keys'), field: field || '(top level)', message, hint };
}

function knownKeys(parentPath: string[]): string[] {
  let schema: any = RecipeSchema;
  for (const part of parentPath) schema = schema?.shape?.[part] ?? schema?.unwrap?.()?.shape?.[part];
  return Object.keys(schema?.shape ?? {});
}

/** The 1-based line of the node at `keyPath` (or of its key, for unknown keys), best effort. */
function lineOf(doc: Document, lc: LineCounter, keyPath: string[], wantKey = false): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined = (doc.contents as { range?: number[] } | null)?.range?.[0];
  for (const part of keyPath) {
    if (!isMap(node)) break;
    const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === part);
    if (!pair) break;
    const key = pair.key as { range?: number[] };
    const value = pair.value as { range?: number[] } | null;
    offset = (wantKey || !value?.range ? key.range : value.range)?.[0] ?? offset;
    if (!wantKey && isScalar(pair.value)) offset = key.range?.[0] ?? offset;
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
export function checkTemplate(template: string, templatePath: string, substitutions: Record<string, string>, sets: Record<string, string>): void {
  const lc = new LineCounter();
  const doc = YAML.parseDocument(template, { lineCounter: lc, customTags: [SECRET_TAG] });
  if (doc.errors.length) {
    const err = doc.errors[0];
    throw new InputError([{ file: templatePath, line: err.linePos?.[0].line, message: `YAML syntax error: ${err.message.split('\n')[0]}`, hint: 'fix the template; it must be a valid ESPHome YAML file' }]);
  }
  const used = templateVariables(template);
  const problems: Problem[] = [];
  for (const [name, line] of used)
    if (!(name in substitutions))
      problems.push({ file: templatePath, line, field: `substitutions.${name}`, message: `the template uses \${${name}}, which the recipe does not define`,
        hint: `add "${name}: ..." under substitutions in the recipe${name.endsWith('_pin') ? ` (or pins.${name.slice(0, -4)})` : ''}` });
  for (const key of Object.keys(sets))
    if (!used.has(key))
      problems.push({ file: `--set ${key}`, field: key, message: `the template ${path.basename(templatePath)} does not use "${key}"`,
        hint: `settable here: ${[...used.keys()].sort().join(', ')}` });
  if (problems.length) throw new InputError(problems);
}

/** Substitution names used in a template's YAML values (comments ignored), with the line of first use. */
export function templateVariables(template: string): Map<string, number> {
  const lc = new LineCounter();
  const doc = YAML.parseDocument(template, { lineCounter: lc, customTags: [SECRET_TAG] });
  const found = new Map<string, number>();
  YAML.visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value !== 'string') return;
      for (const m of node.value.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g)) {
        const name = m[1] ?? m[2];
        if (!found.has(name)) found.set(name, node.range ? lc.linePos(node.range[0]).line : 0);
      }
    },
  });
  return found;
}

/** ESPHome's `!secret name`, read as the string "!secret name" so configs can be compared as data. */
export const SECRET_TAG = { tag: '!secret', resolve: (value: string) => `!secret ${value}` };

// ─── Command line ────────────────────────────────────────────────────────────────────────────

type Cli = { command: 'help' } | { command: 'version' } | { command: 'schema' } | { command: 'run' | 'doctor'; opts: Options };

export function parseCli(argv: string[]): Cli {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
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
      },
    });
  } catch (e) {
    throw new InputError([{ file: 'command line', message: (e as Error).message.replace(/\. To specify.*$/s, ''), hint: 'see npx tsx flash.ts --help' }]);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return { command: 'help' };
  if (v.version) return { command: 'version' };
  let command: 'run' | 'doctor' | 'schema' = 'run';
  if (positionals[0] === 'doctor' || positionals[0] === 'schema') command = positionals.shift() as 'doctor' | 'schema';
  if (command === 'schema') return { command };
  if (positionals.length !== 1)
    throw new InputError([{ file: 'command line', message: positionals.length ? `expected one recipe, got ${positionals.join(' ')}` : 'no recipe given',
      hint: 'npx tsx flash.ts recipes/23A.yaml (see --help)' }]);

  const stepName = (flag: string, value: string | undefined): StepName | undefined => {
    if (value === undefined) return undefined;
    if (STEPS.some((s) => s.name === value)) return value as StepName;
    const near = nearest(value, STEPS.map((s) => s.name));
    throw new InputError([{ file: 'command line', field: `--${flag}`, message: `"${value}" is not a step`,
      hint: `${near ? `did you mean ${near}? ` : ''}steps: ${STEPS.map((s) => s.name).join(', ')}` }]);
  };
  const sets: Record<string, string> = {};
  for (const s of v.set ?? []) {
    const eq = s.indexOf('=');
    if (eq < 1) throw new InputError([{ file: 'command line', field: '--set', message: `"${s}" is not key=value`, hint: 'e.g. --set device_name=status-plug-02' }]);
    sets[s.slice(0, eq)] = s.slice(eq + 1);
  }
  if (v.esphome !== undefined && v.esphome !== 'local' && v.esphome !== 'docker')
    throw new InputError([{ file: 'command line', field: '--esphome', message: `"${v.esphome}" is not local or docker`, hint: '--esphome local (the esphome CLI) or --esphome docker (ghcr.io/esphome/esphome)' }]);
  const count = v.count === undefined ? undefined : Number(v.count);
  if (count !== undefined && !(Number.isInteger(count) && count >= 1 && count <= 99))
    throw new InputError([{ file: 'command line', field: '--count', message: `"${v.count}" is not a number of plugs`, hint: 'e.g. --count 3 (1 to 99)' }]);
  if (v.only && v.from)
    throw new InputError([{ file: 'command line', message: '--only and --from do not go together', hint: 'use --only STEP for one step, --from STEP for that step and the rest' }]);

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
  const steps = STEPS.map((s) => `  ${s.name.padEnd(12)} ${s.does}`).join('\n');
  return `flash.ts ${VERSION}: flash a Tuya BK7231T/N plug with ESPHome, guided, from a recipe.

Usage:
  npx tsx flash.ts RECIPE [options]          flash one plug (all steps below, in order)
  npx tsx flash.ts RECIPE --dry-run          print every step's commands and requests; touch nothing
  npx tsx flash.ts doctor RECIPE             check this machine is ready
  npx tsx flash.ts schema                    print the recipe JSON Schema

Steps:
${steps}

Options:
  --dry-run, -n          show what each step would do, secrets as ***; write, run and send nothing
  --only STEP            run just this step
  --from STEP            run this step and the ones after it (redoing them even if done)
  --restart              forget the journal and start over from the first step
  --count N              flash N plugs from this recipe, named <name>-01, -02, … after the highest in --out
  --out DIR, -o DIR      ESPHome config dir (default ./${DEFAULTS.out})
  --set KEY=VALUE        override a substitution (repeatable), e.g. --set device_name=status-plug-02
  --yes, -y              never prompt; a missing answer is an error naming the env var or flag to use
  --cloudcutter DIR      tuya-cloudcutter checkout (default ./${DEFAULTS.cloudcutter})
  --wifi-iface IFACE     Wi-Fi adapter for cloudcutter and Kickstart (default: NetworkManager's first)
  --device-ip IP         the plug's LAN address: skip mDNS discovery
  --check-pins           run the pins step: check each recipe pin on the plug
  --manual-wifi          give the plug your Wi-Fi from a phone instead of through this machine's adapter
  --backup-flash         save the plug's whole flash (2 MiB, through Kickstart) before anything overwrites it
  --esphome local|docker use the esphome CLI or the ghcr.io/esphome/esphome image (default: CLI if found)
  --verbose, -v          show external commands' output as they run
  --help, -h             this text
  --version              print the version

Environment:
  FLASH_WIFI_SSID, FLASH_WIFI_PASSWORD   Wi-Fi for secrets.yaml when it has none (else asked)
  FLASH_CLOUDCUTTER_API                  cloudcutter profile API (default https://tuya-cloudcutter.github.io/api)
  FLASH_KICKSTART_PORTAL                 Kickstart captive portal (default http://192.168.4.1)
  FLASH_DEVICE_HTTP_PORT                 the plug's web server port (default 80)
  FLASH_MDNS_INTERFACE                   the interface address mDNS uses (default: all)
  FLASH_DISCOVERY_TIMEOUT_MS             how long to wait for the plug on mDNS (default 120000)
  FLASH_VERIFY_TIMEOUT_MS                how long to wait for the flashed device (default 120000)
  FLASH_COMPILE_TIMEOUT_MS               how long a compile may take (default 2700000: 45 min)
  FLASH_HTTP_TIMEOUT_MS                  timeout of one HTTP request (default 10000)
  NO_COLOR / FORCE_COLOR                 colours off / on

Exit codes: 0 done, 1 a step failed (the message says how to retry), 2 bad input (nothing written).`;
}

export function recipeJsonSchemaText(): string {
  const schema = z.toJSONSchema(RecipeSchema, { io: 'input' });
  return JSON.stringify(schema, null, 2) + '\n';
}

// ─── Small helpers ───────────────────────────────────────────────────────────────────────────

const useColor = process.env.FORCE_COLOR ? process.env.FORCE_COLOR !== '0' : !process.env.NO_COLOR && !!process.stdout.isTTY;
const paint = (code: number) => (s: string) => (useColor ? `\x1b[${code}m${s}\x1b[0m` : s);
export const c = { bold: paint(1), dim: paint(2), red: paint(31), green: paint(32), yellow: paint(33), cyan: paint(36) };

/** Child processes to stop when the run ends early (Ctrl+C, a failed step). */
const children = new Set<import('node:child_process').ChildProcess>();

/** Secret values seen this run; anything printed or logged passes through redact(). */
const secretValues = new Set<string>();

export function registerSecret(value: string | undefined): void {
  // Shorter values would mangle ordinary words; real Wi-Fi (WPA) passwords have 8+ characters.
  if (value && value.length >= 4) secretValues.add(value);
}

export function redact(text: string, secrets: Iterable<string> = secretValues): string {
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) text = text.split(s).join('***');
  return text;
}

function print(text: string): void {
  io.out(redact(text) + '\n');
}

function printError(text: string): void {
  io.err(redact(text) + '\n');
}

/** Runs a command and captures its output; argv is quoted by zx. Never throws on an exit code. */
export async function sh(argv: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string; notFound: boolean }> {
  const { $ } = await import('zx');
  const p = await $({ cwd: opts.cwd, env: opts.env ?? process.env, nothrow: true, quiet: true, verbose: false, input: '', timeout: opts.timeoutMs ?? 30_000 })`${argv}`;
  const code = p.exitCode ?? 1;
  return { code, stdout: p.stdout, stderr: p.stderr, notFound: code === 127 };
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

/** An argv as a user would type it (for display only; commands run through zx). */
export function shq(...argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./<>*-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
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
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
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

/** A question flash.ts asks. `id` is stable, so a scripted answerer (tests, the demo) can recognise it. */
export interface Question {
  id: string;
  kind: 'input' | 'password' | 'confirm' | 'select';
  message: string;
  choices?: string[];
  default?: boolean;
}

/**
 * Where output goes and who answers questions. By default: the terminal and @inquirer/prompts.
 * Tests and `npm run demo` put a virtual user in `answer`.
 */
export const io = {
  out: (text: string) => void process.stdout.write(text),
  err: (text: string) => void process.stderr.write(text),
  answer: undefined as undefined | ((q: Question) => Promise<string | boolean>),
};

/** Asks one question; with --yes or no terminal, an exit-2 error that says how to give the answer instead. */
async function ask(q: Question, opts: Options, instead: { envVar?: string; flag?: string } = {}): Promise<string> {
  if (io.answer) return String(await io.answer(q));
  if (opts.yes || !process.stdin.isTTY) {
    const how = instead.envVar ? `set ${instead.envVar}=... in the environment` : instead.flag ? `pass ${instead.flag}` : 'run it in a terminal';
    throw new InputError([{ file: instead.envVar ? 'environment' : 'command line', field: instead.envVar ?? instead.flag ?? q.id,
      message: `${q.message}: no answer (${opts.yes ? '--yes' : 'no terminal'} means no prompts)`, hint: `${how}, or run without --yes to be asked` }]);
  }
  const prompts = await import('@inquirer/prompts');
  if (q.kind === 'password') return prompts.password({ message: q.message, mask: '*' });
  if (q.kind === 'select') return prompts.select({ message: q.message, choices: (q.choices ?? []).map((value) => ({ value })) });
  return prompts.input({ message: q.message, validate: (s) => s.trim() !== '' || 'required' });
}

/** A yes/no question. --yes answers the default; with no terminal and no --yes it is an exit-2 error. */
async function confirm(message: string, opts: Options, def = true, id = 'confirm'): Promise<boolean> {
  if (io.answer) return Boolean(await io.answer({ id, kind: 'confirm', message, default: def }));
  if (opts.yes) return def;
  if (!process.stdin.isTTY)
    throw new InputError([{ file: 'command line', field: '--yes', message: `${message}: no terminal to ask on`, hint: 'run in a terminal, or pass --yes to accept the defaults' }]);
  const prompts = await import('@inquirer/prompts');
  return prompts.confirm({ message, default: def });
}

/**
 * The command that runs this recipe again with `flags` (for hints), repeating the run's --out,
 * --cloudcutter, --wifi-iface and --set when they are not the defaults.
 */
function rerun(opts: Options, flags: string): string {
  return `npx tsx flash.ts ${shq(opts.recipe)} ${flags}` + (opts.out === DEFAULTS.out ? '' : ` --out ${shq(opts.out)}`) +
    (opts.cloudcutter === DEFAULTS.cloudcutter ? '' : ` --cloudcutter ${shq(opts.cloudcutter)}`) +
    (opts.wifiIface ? ` --wifi-iface ${shq(opts.wifiIface)}` : '') +
    Object.entries(opts.sets).map(([k, v]) => ` --set ${shq(`${k}=${v}`)}`).join('');
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
  const s = name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 31);
  return s || 'status-plug-01';
}

// ─── Entry point ─────────────────────────────────────────────────────────────────────────────

export async function runCli(argv: string[]): Promise<number> {
  const onSignal = (signal: NodeJS.Signals) => void interrupt(signal);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await main(argv);
  } catch (e) {
    if ((e as Error).name === 'ExitPromptError') return interrupt('SIGINT'); // Ctrl+C inside a question
    for (const child of children) child.kill('SIGINT');
    if (e instanceof InputError) {
      printError(`${c.red('✗ bad input')} (nothing was written)`);
      for (const p of e.problems) printError(`  ${formatProblem(p)}`);
      return EXIT.badInput;
    }
    if (e instanceof StepError) {
      printError(`\n${c.red(`✗ ${e.step} failed:`)} ${e.message}`);
      printError(`  ${e.hint}`);
      return EXIT.failed;
    }
    printError(`${c.red('✗ unexpected error:')} ${(e as Error).stack ?? e}`);
    return EXIT.failed;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * Ctrl+C (or SIGTERM) at any point: stop child processes, undo temporary changes (the Kickstart Wi-Fi
 * connection), give the terminal its cursor back and say how to resume. The journal is only ever
 * replaced whole, so it is consistent whenever this runs.
 */
async function interrupt(signal: NodeJS.Signals): Promise<never> {
  // SIGINT, as the terminal would send: ESPHome and `docker run` stop cleanly on it. Wait (briefly)
  // for them, so none is left behind when this process is gone.
  const stopped = [...children].map((child) => new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(0) : child.once('close', r))));
  for (const child of children) child.kill('SIGINT');
  await Promise.race([Promise.all(stopped), sleep(3000)]);
  await Promise.allSettled([...cleanups].map((undo) => undo()));
  if (process.stdout.isTTY) io.out('\x1b[?25h');
  const ctx = running;
  printError(`\n${c.yellow('■ stopped')} (${signal})${ctx?.current ? ` during the ${ctx.current} step` : ''}.`);
  if (ctx && !ctx.opts.dryRun)
    printError(`  Finished steps are kept in ${journalPath(ctx)}: run the same command again to resume.`);
  process.exit(130);
}

/** Undo actions for temporary changes (e.g. a joined Wi-Fi network), run on Ctrl+C. */
const cleanups = new Set<() => Promise<unknown>>();

/** The run under way, for interrupt(). */
let running: Ctx | undefined;

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/flash.ts')) {
  runCli(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
