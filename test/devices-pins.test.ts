// Every device file that yields a recipe: `flash.ts --only pins` on a simulated device wired as the file says and
// already on Kickstart drives each relay, LED and light channel, and the virtual user says what it saw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { runInProcess, USER_SEES_AT_ONCE } from './workbench.ts';
import { startSimPlug, wiringFromDevice } from './sim/plug.ts';
import { virtualUser } from './virtual-user.ts';
import { GENERATED, pinLines, writeGenerated } from './devices.ts';

// Every device file that yields a recipe: its pin check, on a device wired as the file says and already on
// Kickstart, drives each relay, LED and light channel and sees each button pressed.
for (const g of GENERATED) {
  const { slug, got, recipe } = g;
  test(`pin check of the generated ${slug} recipe on its simulated device`, async () => {
    const file = writeGenerated(g, 'flash-pins-');
    const sim = await startSimPlug({ mcu: recipe.mcu, phase: 'kickstart-lan', mdnsInterface: false,
      wiring: wiringFromDevice(g.device) });
    const user = virtualUser(sim);
    try {
      const r = await runInProcess([file, '--only', 'pins', '--check-pins', '--device-ip', `127.0.0.1:${sim.port}`,
        '--out', path.join(path.dirname(file), 'esphome')], { NO_COLOR: '1', ...USER_SEES_AT_ONCE }, user);
      assert.equal(r.code, 0, r.out);
      const seen = pinLines(r.out);
      for (const [fn, pin] of Object.entries(recipe.pins as Record<string, string>)) {
        assert.ok(seen[fn], `the pin check said nothing of ${fn} on ${pin}:\n${r.out}`);
        const [mark, saw] = seen[fn];
        if (mark === '·') continue; // metering, LED-driver bus, colour temperature: named, not driven
        assert.equal(mark, '✓', `${fn} on ${pin}: ${saw}`);
        if (/^relay/.test(fn)) assert.equal(saw, 'the relay clicked');
        if (/^button/.test(fn)) assert.equal(saw, 'press seen');
      }
      // An LED driver's bus cannot be checked pin by pin: the run says so rather than that all is well.
      const checked = Object.values(seen).some(([mark]) => mark === '✓');
      assert.match(r.out, checked ? /✓ every pin does what the recipe says/
        : /nothing here can be checked pin by pin/);
      const checkable = Object.keys(recipe.pins).some((fn) => !/^(clock|data|uart_rx|uart_tx)$/.test(fn));
      assert.equal(checked, checkable, r.out);
    } finally {
      user.stop();
      await sim.close();
    }
  });
}

