// `npm run bench`: the speed figures from one run on this machine, on the workbench (simulated plug
// and fake tools), so they measure flash.ts and not the radio:
//   (a) start time of `flash.ts --help`, beside a tsx hello-world started the same way (target: ≤ 1.15 × it)
//   (b) a full run with compile and cloudcutter taking the same time, against the same steps one after the other
//   (c) how long after the plug comes online flash.ts notices it (mDNS)
//   (d) upload throughput to the simulated plug, and this process's peak memory
//   (e) `flash.ts recipe`'s generator and checks on every cloudcutter device file in test/fixtures
//   (f) the plug's own wiring: Tuya's storage read through Kickstart at Wi-Fi speed (120 KiB/s), found and decrypted
//   (g) the test suite's time: the last full `npm test` here (test/suite.ts records it; not run again, it takes
//       minutes), against its target of 5 minutes on a quiet 2-core machine
// Exits 1 when (a), (b) or a quiet run of (g) misses its target, so a regression shows.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startBench, runInProcess } from './workbench.ts';
import { startSimPlug } from './sim/plug.ts';
import { makeUF2, FAMILY_ID } from './firmware-files.ts';
import { discoverDevice, uploadUf2, io, generateRecipe, checkTemplate, substitutionsFor, loadRecipe, readFlash,
  readTuyaStorage, parseTuyaJson, TUYA_STORAGE_WINDOW, type DeviceFile, type ProfileFile } from '../flash.ts';
import { FLASH, ROOT, TSX, CLOUDCUTTER_API_FIXTURES as API, tempDir } from './helpers.ts';
import type { TestTimes } from './suite.ts';

// (f) what the kickstart step adds to read the plug's wiring: only the window Tuya's storage lies in, at the speed
// Kickstart serves its flash over Wi-Fi, then the storage found and decrypted.
async function wiringRead(): Promise<{ kib: number; readMs: number; parseMs: number; keys: number }> {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, flashReadKiBps: 120 });
  try {
    const { offset, length } = TUYA_STORAGE_WINDOW;
    const t = performance.now();
    const flash = await readFlash(sim.url, offset, length);
    const readMs = performance.now() - t;
    const t2 = performance.now();
    const storage = readTuyaStorage(flash, offset);
    const parseMs = performance.now() - t2;
    if (!storage.found) throw new Error(`no storage: ${storage.why}`);
    const keys = Object.keys(parseTuyaJson(storage.values.user_param_key ?? '{}') as object).length;
    return { kib: length / 1024, readMs, parseMs, keys };
  } finally {
    await sim.close();
  }
}

const progress = (line: string) => process.stderr.write(`  … ${line}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

// (a) start time: what a user waits for before the first line appears. Alternating with a hello-world that tsx
// starts the same way shows what flash.ts itself adds, whatever the machine's load.
function helpStart(runs: number, viaNpx = false, script = FLASH): number[] {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = viaNpx
      ? spawnSync('npx', ['tsx', script, '--help'], { cwd: ROOT, encoding: 'utf8' })
      : spawnSync(process.execPath, ['--import', TSX, script, '--help'], { cwd: ROOT, encoding: 'utf8' });
    times.push(performance.now() - t);
    if (r.status !== 0) throw new Error(`--help exited ${r.status}: ${r.stderr}`);
  }
  return times;
}

// (b) overlap: one full run, against config, then compile alone, then cloudcutter to the end.
async function overlap(delayMs: number): Promise<{ together: number; apart: number }> {
  const fakes = { cloudcutter: { delayMs }, esphome: { delayMs } };
  const timed = async (argvs: string[][]) => {
    const b = await startBench({ fakes });
    try {
      const t = performance.now();
      for (const argv of argvs) {
        const r = await runInProcess(['recipes/23A.yaml', ...b.args, '--yes', ...argv], b.env, b.user);
        if (r.code !== 0) throw new Error(`run ${argv.join(' ')} failed:\n${r.out}`);
      }
      return performance.now() - t;
    } finally {
      await b.close();
    }
  };
  const together = await timed([[]]);
  const apart = await timed([['--only', 'config'], ['--only', 'compile'], ['--from', 'cloudcutter']]);
  return { together, apart };
}

// (c) discovery latency: the plug joins the LAN at a known moment; how long until flash.ts has it.
async function discoveryLatency(runs: number): Promise<number[]> {
  process.env.FLASH_MDNS_INTERFACE = '127.0.0.1';
  const latencies: number[] = [];
  for (let i = 0; i < runs; i++) {
    const home = { ssid: 'HomeNet', password: 'correct horse battery' };
    const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-ap', homeNetwork: home, joinMs: 500 });
    process.env.FLASH_MDNS_PORT = String(sim.mdnsPort);
    try {
      let online = 0;
      // The sim sends its mDNS announcement as it joins the LAN, then reports the phase change.
      void sim.waitForPhase('kickstart-lan', 10_000).then(() => (online = performance.now()));
      const search = discoverDevice((d) => d.txt.mac?.toLowerCase() === sim.mac.toLowerCase(), 10_000, 'bench');
      await fetch(`${sim.url}/wifisave?${new URLSearchParams({ ssid: home.ssid, psk: home.password })}`, { redirect: 'manual' });
      const found = await search;
      const at = performance.now();
      await sim.waitForPhase('kickstart-lan', 1000);
      if (!found || !online) throw new Error(`the simulated plug was not found (found ${!!found}, online ${online}, phase ${sim.phase})`);
      latencies.push(at - online);
    } finally {
      await sim.close();
    }
  }
  return latencies;
}

// (c') the plug was online before flash.ts started looking: found by its answer to the first query.
async function discoveryByQuery(runs: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan' });
    process.env.FLASH_MDNS_PORT = String(sim.mdnsPort);
    try {
      await new Promise((r) => setTimeout(r, 300)); // its boot announcements are over
      const t = performance.now();
      const found = await discoverDevice((d) => d.txt.mac?.toLowerCase() === sim.mac.toLowerCase(), 10_000, 'bench');
      if (!found) throw new Error('the simulated plug was not found');
      times.push(performance.now() - t);
    } finally {
      await sim.close();
    }
  }
  return times;
}

// (d) upload: a firmware-sized UF2 through Kickstart's web OTA.
async function upload(): Promise<{ kib: number; ms: number }> {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false });
  try {
    const payload = Buffer.from(JSON.stringify({ name: 'bench', board: 'generic-bk7231n-qfn32-tuya' }));
    const uf2 = makeUF2({ familyId: FAMILY_ID.bk7231n, payload, minBlocks: 2400 }); // ~1.2 MiB, a real LibreTiny build
    const t = performance.now();
    const answer = await uploadUf2(`${sim.url}/update`, uf2, 'firmware.uf2');
    const ms = performance.now() - t;
    if (!/Update Successful/.test(answer.body)) throw new Error(`upload answered: ${answer.status} ${answer.body}`);
    return { kib: uf2.length / 1024, ms };
  } finally {
    await sim.close();
  }
}

// (e) recipe generation: read a device file and its profile, generate, write, and check the result as any recipe.
function generation(): { devices: number; written: number; perDevice: number[] } {
  const read = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));
  const files = fs.readdirSync(path.join(API, 'devices')).filter((f) => f.endsWith('.json'));
  const dir = tempDir('bench-recipes');
  const perDevice: number[] = [];
  let written = 0;
  for (const f of files) {
    const t = performance.now();
    const device = read(path.join(API, 'devices', f)) as DeviceFile;
    const profile = read(path.join(API, 'profiles', `${device.profiles[0].slug}.json`)) as ProfileFile;
    const made = generateRecipe(device, profile);
    if (made.ok) {
      const recipeFile = path.join(dir, `${device.slug}.yaml`);
      const templateFile = path.join(dir, `${device.slug}.esphome.yaml`);
      fs.writeFileSync(recipeFile, made.recipe);
      fs.writeFileSync(templateFile, made.template);
      const { recipe } = loadRecipe(recipeFile);
      checkTemplate(made.template, templateFile, substitutionsFor(recipe), {});
      written++;
    }
    perDevice.push(performance.now() - t);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  return { devices: files.length, written, perDevice };
}

// flash.ts's own lines (spinner, progress bar) would interleave with the figures: not a terminal here.
Object.assign(io, { out: () => {} });
console.log(`flash.ts benchmark · node ${process.version} · ${os.cpus()[0]?.model ?? 'unknown CPU'} × ${os.cpus().length}`);

const spread = (xs: number[]) => `median ${secs(median(xs))} (min ${secs(Math.min(...xs))}, ` +
  `max ${secs(Math.max(...xs))}, ${xs.length} runs`;
progress('(a) --help start beside a tsx hello-world, alternating, each started both ways');
const hello = path.join(tempDir('bench-hello'), 'hello.ts');
fs.writeFileSync(hello, "const greeting: string = 'hello';\nconsole.log(greeting);\n");
/** flash.ts --help and the hello-world, one after the other `runs` times, so both see the same machine. */
const sideBySide = (runs: number, viaNpx: boolean) => {
  const help: number[] = [];
  const baseline: number[] = [];
  for (let i = 0; i < runs; i++) {
    help.push(...helpStart(1, viaNpx));
    baseline.push(...helpStart(1, viaNpx, hello));
  }
  return { help, baseline, ratio: median(help) / median(baseline) };
};
const direct = sideBySide(9, false);
const typed = sideBySide(7, true);
console.log(`(a) --help start            ${spread(direct.help)}, node --import tsx)`);
console.log(`    tsx hello-world         ${spread(direct.baseline)}) → ratio ${direct.ratio.toFixed(2)}`);
console.log(`    as typed, npx tsx       ${spread(typed.help)})`);
console.log(`    hello-world, npx tsx    ${spread(typed.baseline)}) → ratio ${typed.ratio.toFixed(2)}`);
const startRatio = Math.max(direct.ratio, typed.ratio);
console.log(`    flash.ts adds ≤ ${startRatio.toFixed(2)}× a hello-world's start (target ≤ 1.15)`);

const D = 6000;
const OVERLAP_RUNS = 3;
progress(`(b) full run with compile and cloudcutter each taking ${D / 1000} s, then the same steps one after the ` +
  `other, ${OVERLAP_RUNS} times`);
// One pair is at the mercy of whatever else the machine does meanwhile: the median pair of three.
const pairs: { together: number; apart: number }[] = [];
for (let i = 0; i < OVERLAP_RUNS; i++) pairs.push(await overlap(D));
const ratios = pairs.map((p) => p.together / p.apart);
const { together, apart } = pairs[ratios.indexOf(median(ratios))];
const ratio = together / apart;
console.log(`(b) full run, D = ${D / 1000} s   ${secs(together)} with compile ∥ cloudcutter vs ${secs(apart)} one after ` +
  `the other → ratio ${ratio.toFixed(2)} (target ≤ 0.65; median of ${OVERLAP_RUNS}: ` +
  `${ratios.map((r) => r.toFixed(2)).join(', ')})`);

progress('(c) discovery latency, 5 runs');
const lat = await discoveryLatency(5);
console.log(`(c) discovery latency       median ${median(lat).toFixed(1)} ms after the plug came online (min ${Math.min(...lat).toFixed(1)} ms, max ${Math.max(...lat).toFixed(1)} ms, 5 runs)`);

const byQuery = await discoveryByQuery(5);
console.log(`    already online          median ${median(byQuery).toFixed(1)} ms from the first query (min ${Math.min(...byQuery).toFixed(1)} ms, max ${Math.max(...byQuery).toFixed(1)} ms, 5 runs)`);

progress('(d) upload');
const up = await upload();
const rss = process.resourceUsage().maxRSS / 1024;
console.log(`(d) upload                  ${Math.round(up.kib)} KiB in ${Math.round(up.ms)} ms → ${(up.kib / 1024 / (up.ms / 1000)).toFixed(1)} MiB/s over loopback; peak RSS ${Math.round(rss)} MiB (this process, which ran all of the above)`);

progress('(e) recipe generation for every device file in test/fixtures');
const gen = generation();
const total = gen.perDevice.reduce((a, b) => a + b, 0);
console.log(`(e) recipe generation       ${gen.devices} device files (${gen.written} recipes, ` +
  `${gen.devices - gen.written} refused) in ${Math.round(total)} ms: median ${median(gen.perDevice).toFixed(1)} ms, ` +
  `max ${Math.max(...gen.perDevice).toFixed(1)} ms per device, generated, written and checked`);
progress('(f) the plug\'s own wiring, read at 120 KiB/s');
const wiring = await wiringRead();
console.log(`(f) the plug's own wiring    ${wiring.kib} KiB read in ${secs(wiring.readMs)} at 120 KiB/s (Kickstart over ` +
  `Wi-Fi), Tuya's storage found and decrypted in ${wiring.parseMs.toFixed(1)} ms: ${wiring.keys} pin keys`);
// (g) read, not run: a full suite is minutes of both cores.
const SUITE_TARGET_MS = 5 * 60_000;
let suiteOk = true;
const times = ((): TestTimes | undefined => {
  try {
    return JSON.parse(fs.readFileSync(path.join(ROOT, '.test-times.json'), 'utf8')) as TestTimes;
  } catch {
    return undefined;
  }
})();
const suite = times?.suite;
if (!suite) console.log('(g) test suite              no full `npm test` recorded here yet: run it, then the bench again');
else {
  // Quiet: the load when it started left the cores free. A busy machine's figure is shown, not judged.
  const quiet = suite.load[0] < suite.cores;
  suiteOk = !quiet || (suite.passed && suite.wallMs <= SUITE_TARGET_MS);
  const slowest = Object.entries(times.files).sort((a, b) => b[1] - a[1]).slice(0, 3)
    .map(([f, ms]) => `${path.basename(f)} ${secs(ms)}`).join(', ');
  console.log(`(g) test suite              ${secs(suite.wallMs)} wall, ${Math.round(suite.cpuMs / 1000)} CPU-s, ` +
    `${suite.passed ? 'passed' : 'FAILED'} (last full \`npm test\`, ${suite.at}; ${suite.files} files, ` +
    `${suite.concurrency} at a time on ${suite.cores} cores, load ${suite.load.map((l) => l.toFixed(1)).join(' → ')}` +
    `${quiet ? '' : ': busy, not judged'}; target ≤ ${SUITE_TARGET_MS / 60_000} min when quiet; slowest files: ` +
    `${slowest})`);
}
process.exit(ratio <= 0.65 && startRatio <= 1.15 && suiteOk ? 0 : 1);
