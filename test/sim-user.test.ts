// flash.ts's pin check (its own checkPins, by HTTP against Kickstart's pin scanner) on simulated boards with latching
// relays and wall switches, the virtual user answering as a person at the device would: it counts the click after
// "pulsing <fn> now", not the one flash.ts announced before it, and it flips the wall switch the question names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startSimPlug, PIN_OPTIONS, type Wiring } from './sim/plug.ts';
import { virtualUser } from './virtual-user.ts';
import { checkPins, type PinResult } from '../flash.ts';

/** checkPins on these recipe pins; the relays in `closedAtStart` are set first (by the pin scanner, as a user
 *  could). */
async function pinCheck(wiring: Wiring, pins: Record<string, string>, closedAtStart: number[] = []):
Promise<{ results: Record<string, PinResult>; said: string[] }> {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, wiring });
  const user = virtualUser(sim);
  const said: string[] = [];
  try {
    const scan = async (pin: string, mode: string) => {
      const option = PIN_OPTIONS.find((o) => o.split(' / ')[0] === pin)!;
      await fetch(`${sim.url}/select/-__pin/set?option=${encodeURIComponent(option)}`, { method: 'POST' });
      await fetch(`${sim.url}/select/-__pin_mode/set?option=${mode}`, { method: 'POST' });
    };
    for (const n of closedAtStart) {
      await scan(wiring.latching![n].set, 'OUTPUT_HIGH');
      await sim.waitForHardware((hw) => hw.relays[n]);
      await scan(wiring.latching![n].set, 'INPUT');
    }
    const results = await checkPins({ base: sim.url, pins, ask: async (q) => String(await user.answer(q)),
      say: (line) => (said.push(line), user.read(`${line}\n`)) });
    return { results: Object.fromEntries(results.map((r) => [r.fn, r])), said };
  } finally {
    user.stop();
    await sim.close();
  }
}

const LATCH: Wiring = { latching: { 1: { set: 'P24', reset: 'P26' } } };

test('a latching relay: each side clicks once the other side has put it back', async () => {
  const { results, said } = await pinCheck(LATCH, { relay_on: 'P24', relay_off: 'P26' }, [1]);
  assert.ok(said.some((l) => /resetting the relay first \(P26\): a click now is that one/.test(l)), said.join('\n'));
  assert.deepEqual([results.relay_on.saw, results.relay_off.saw], ['the relay clicked', 'the relay clicked']);
  assert.ok(results.relay_on.ok && results.relay_off.ok, JSON.stringify(results));
});

test('a latching relay whose set pin the recipe has wrong: the announced click does not count, the check fails',
  async () => {
    // P6 drives nothing. Resetting first clicks (the relay was closed); the pulse after "pulsing relay_on" does not.
    // A person who counted the announced click would pass a recipe that can never switch the relay on.
    const { results } = await pinCheck(LATCH, { relay_on: 'P6', relay_off: 'P26' }, [1]);
    assert.deepEqual([results.relay_on.ok, results.relay_on.saw], [false, 'nothing']);
    assert.deepEqual([results.relay_off.ok, results.relay_off.saw], [false, 'nothing'],
      'already open: resetting it again is silent');
  });

test('wall switches: the user flips the one the question names; inputs wired the other way round fail', async () => {
  const pins = { wall_switch1: 'P24', wall_switch2: 'P26' };
  const good = await pinCheck({ wallSwitches: { P24: 1, P26: 2 } }, pins);
  assert.deepEqual([good.results.wall_switch1.saw, good.results.wall_switch2.saw], ['flip seen', 'flip seen']);
  // The board has them swapped: flash.ts reads switch 2's input while the user flips switch 1, and the other way.
  const swapped = await pinCheck({ wallSwitches: { P24: 2, P26: 1 } }, pins);
  assert.deepEqual([swapped.results.wall_switch1.saw, swapped.results.wall_switch2.saw],
    ['no change seen', 'no change seen']);
  // One switch closed at rest: a flip is a change all the same (up, not down).
  const closed = await pinCheck({ wallSwitches: { P26: 1 }, closedSwitches: ['P26'] }, { wall_switch: 'P26' });
  assert.equal(closed.results.wall_switch.saw, 'flip seen');
});
