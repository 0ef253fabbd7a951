// `npm run bench`: the speed figures from one run on this machine, on the workbench (simulated plug
// and fake tools), so they measure flash.ts and not the radio:
//   (a) start time of `flash.ts --help`
//   (b) a full run with compile and cloudcutter taking the same time, against the same steps one after the other
//   (c) how long after the plug comes online flash.ts notices it (mDNS)
//   (d) upload throughput to the simulated plug, and this process's peak memory
// Exits 1 when (b) misses its target (≤ 0.65), so a regression in the overlap shows.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { startBench, runInProcess } from './workbench.ts';
import { startSimPlug } from './sim/plug.ts';
import { makeUF2, FAMILY_ID } from './firmware-files.ts';
import { discoverDevice, uploadUf2, io } from '../flash.ts';
import { FLASH, ROOT, TSX } from './helpers.ts';

const progress = (line: string) => process.stderr.write(`  … ${line}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

// (a) start time: what a user waits for before the first line appears.
function helpStart(runs: number, viaNpx = false): number[] {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = viaNpx
      ? spawnSync('npx', ['tsx', FLASH, '--help'], { cwd: ROOT, encoding: 'utf8' })
      : spawnSync(process.execPath, ['--import', TSX, FLASH, '--help'], { cwd: ROOT, encoding: 'utf8' });
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

// flash.ts's own lines (spinner, progress bar) would interleave with the figures: not a terminal here.
Object.assign(io, { out: () => {} });
console.log(`flash.ts benchmark · node ${process.version} · ${os.cpus()[0]?.model ?? 'unknown CPU'} × ${os.cpus().length}`);

progress('(a) --help start, 7 runs');
const help = helpStart(7);
console.log(`(a) --help start            median ${secs(median(help))} (min ${secs(Math.min(...help))}, max ${secs(Math.max(...help))}, 7 runs, node --import tsx)`);
const npx = helpStart(5, true);
console.log(`    as typed, npx tsx       median ${secs(median(npx))} (min ${secs(Math.min(...npx))}, max ${secs(Math.max(...npx))}, 5 runs; npx itself adds the difference)`);

const D = 6000;
progress(`(b) full run with compile and cloudcutter each taking ${D / 1000} s, then the same steps one after the other`);
const { together, apart } = await overlap(D);
const ratio = together / apart;
console.log(`(b) full run, D = ${D / 1000} s   ${secs(together)} with compile ∥ cloudcutter vs ${secs(apart)} one after the other → ratio ${ratio.toFixed(2)} (target ≤ 0.65)`);

progress('(c) discovery latency, 5 runs');
const lat = await discoveryLatency(5);
console.log(`(c) discovery latency       median ${median(lat).toFixed(1)} ms after the plug came online (min ${Math.min(...lat).toFixed(1)} ms, max ${Math.max(...lat).toFixed(1)} ms, 5 runs)`);

const byQuery = await discoveryByQuery(5);
console.log(`    already online          median ${median(byQuery).toFixed(1)} ms from the first query (min ${Math.min(...byQuery).toFixed(1)} ms, max ${Math.max(...byQuery).toFixed(1)} ms, 5 runs)`);

progress('(d) upload');
const up = await upload();
const rss = process.resourceUsage().maxRSS / 1024;
console.log(`(d) upload                  ${Math.round(up.kib)} KiB in ${Math.round(up.ms)} ms → ${(up.kib / 1024 / (up.ms / 1000)).toFixed(1)} MiB/s over loopback; peak RSS ${Math.round(rss)} MiB (this process, which ran all of the above)`);
process.exit(ratio <= 0.65 ? 0 : 1);
