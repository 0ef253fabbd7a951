// flash.ts's pin check (its own checkPins, by HTTP against Kickstart's pin scanner) on simulated boards with latching
// relays and wall switches, the virtual user answering as a person at the device would: it counts the click after
// "pulsing <fn> now", not the one flash.ts announced before it, and it flips the wall switch the question names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startSimPlug, PIN_OPTIONS, type Wiring } from './sim/plug.ts';
import { virtualUser } from './virtual-user.ts';
import { checkPins, UNFOUND_ANSWERS, type PinResult } from '../flash.ts';

/** checkPins on these recipe pins; the relays in `closedAtStart` are set first (by the pin scanner, as a user
 *  could). */
async function pinCheck(wiring: Wiring, pins: Record<string, string>, closedAtStart: number[] = [], waitMs?: number,
  o: { user?: Parameters<typeof virtualUser>[1]; searchMs?: number } = {}):
Promise<{ results: Record<string, PinResult>; said: string[]; asked: string[] }> {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, wiring });
  const user = virtualUser(sim, o.user);
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
    const results = await checkPins({ base: sim.url, pins, waitMs, searchMs: o.searchMs,
      ask: async (q) => String(await user.answer(q)),
      say: (line) => (said.push(line), user.read(`${line}\n`)) });
    return { results: Object.fromEntries(results.map((r) => [r.fn, r])), said, asked: user.asked.map((q) => q.id) };
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

test('wall switches: the user flips the one flash.ts names, the flip answers; inputs wired the other way round fail ' +
  'only once the user says they flipped it', async () => {
  const pins = { wall_switch1: 'P24', wall_switch2: 'P26' };
  const good = await pinCheck({ wallSwitches: { P24: 1, P26: 2 } }, pins);
  assert.deepEqual([good.results.wall_switch1.saw, good.results.wall_switch2.saw], ['flip seen', 'flip seen']);
  // The board has them swapped: flash.ts reads switch 2's input while the user flips switch 1, and the other way.
  // (The user flips at once: the pin nobody flipped is asked about after 2 s instead of a person's 30.)
  const swapped = await pinCheck({ wallSwitches: { P24: 2, P26: 1 } }, pins, [], 2000);
  assert.deepEqual([swapped.results.wall_switch1.saw, swapped.results.wall_switch2.saw],
    ['no change seen', 'no change seen']);
  assert.ok(swapped.said.some((l) => /^Flip the wall switch 1 now: reading P24/.test(l)), swapped.said.join('\n'));
  // One switch closed at rest: a flip is a change all the same (up, not down).
  const closed = await pinCheck({ wallSwitches: { P26: 1 }, closedSwitches: ['P26'] }, { wall_switch: 'P26' });
  assert.equal(closed.results.wall_switch.saw, 'flip seen');
});

test('a button press answers by itself; a user who had not pressed yet is watched again, and the recipe is not blamed',
  async () => {
    // The first time, the user looks away: after the wait flash.ts asks, and "not yet" watches the same pin again.
    const late = await pinCheck({ button: 'P8' }, { button: 'P8' }, [], 1500,
      { user: { acts: (_what, times) => (times === 1 ? 'nothing' : 'do it') } });
    assert.deepEqual(late.asked, ['press_button']);
    assert.deepEqual([late.results.button.ok, late.results.button.saw], [true, 'press seen']);
    assert.equal(late.said.filter((l) => /Press and release the plug's button now: reading P8/.test(l)).length, 2);
    assert.ok(!late.said.some((l) => /looking for/.test(l)), 'no search: the user had not pressed');
  });

test('a button on another pin: only "I pressed it" starts the search, which says what it does and finds it', async () => {
  const { results, asked, said } = await pinCheck({ button: 'P7' }, { button: 'P8', relay: 'P24' }, [], 1500);
  assert.deepEqual(asked.filter((id) => id !== 'pin_relay'), ['press_button', 'found_button']);
  assert.ok(said.some((l) => /looking for the plug's button on the other pins \(\d+, 3 s each\): press it again and again/
    .test(l)), said.join('\n'));
  assert.ok(said.some((l) => /reading P7 \(\d+ of \d+\)/.test(l)));
  assert.deepEqual([results.button.ok, results.button.saw, results.button.foundOn], [false, 'it is on P7', 'P7']);
});

test('a button no pin sees: the user decides whether the recipe is wrong, or skips the check', async () => {
  // A board whose button is not wired to the chip at all (a TuyaMCU device's, say).
  const wrong = await pinCheck({}, { button: 'P8' }, [], 1000, { searchMs: 200 });
  assert.deepEqual(wrong.asked, ['press_button', 'unfound_button']);
  assert.deepEqual([wrong.results.button.ok, wrong.results.button.saw], [false, 'no pin saw it']);
  const skipped = await pinCheck({}, { button: 'P8' }, [], 1000,
    { searchMs: 200, user: { overrides: { unfound_button: UNFOUND_ANSWERS.skip } } });
  assert.deepEqual([skipped.results.button.ok, skipped.results.button.skipped], [true, true]);
});
