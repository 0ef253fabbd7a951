// Every generated recipe not flashed in devices.test.ts, flashed end to end: each flash.ts in a process of its own, on
// its own simulated device and fake tools, several at once.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startBench, startChild } from './workbench.ts';
import { ESPHOME, FLOWS, GENERATED, writeGenerated } from './devices.ts';
import { wiringFromDevice } from './sim/plug.ts';

// With --yes: its pins are checked in devices-pins.test.ts.
const flashedAbove = new Set(FLOWS.map(([, slug]) => slug));
describe('full flow of every other generated recipe', { concurrency: 3 }, () => {
  for (const g of GENERATED.filter((x) => !flashedAbove.has(x.slug))) {
    test(g.slug, async () => {
      const file = writeGenerated(g, 'flash-recipes-');
      const b = await startBench({ mcu: g.recipe.mcu, uniqueName: true, sim: { wiring: wiringFromDevice(g.device) },
        fakes: { esphome: ESPHOME }, env: g.got.mapping.kinds.includes('TuyaMCU') ? { FLASH_MCU_TIMEOUT_MS: '8000' } : {} });
      try {
        const run = startChild([file, ...b.args, '--yes'], b.env, b.user);
        const code = await run.exited;
        // A battery sensor's MCU speaks Tuya's low-power protocol: ESPHome runs, the MCU stays silent, and verify
        // says so (the recipe warned).
        if (/lowpower/.test(g.device.profiles[0].slug)) {
          assert.equal(code, 1, run.output());
          assert.match(run.output(), /runs ESPHome, but its MCU reported nothing within/);
          assert.match(g.got.recipe, /low-power serial protocol/);
          return;
        }
        assert.equal(code, 0, run.output());
        assert.deepEqual([...run.output().matchAll(/^\[\d\/\d\] (\w+)/gm)].map((m) => m[1]),
          ['check', 'config', 'compile', 'cloudcutter', 'kickstart', 'upload', 'verify']);
        assert.equal(b.sim.phase, 'final');
        assert.equal(b.sim.final?.name, b.name);
        assert.match(run.output(), new RegExp(`✓ ${b.name} runs ESPHome: done\\.`));
      } finally {
        await b.close();
      }
    });
  }
});

