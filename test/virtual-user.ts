// A virtual user at a virtual terminal. flash.ts asks its questions through the real @inquirer/prompts
// code; this user reads the prompt off the screen and types its answer as key presses (Enter, arrow
// keys, letters), the way a person at a terminal does. It decides like a person at the plug would: it
// watches the simulated plug's relay and LEDs, presses its button when asked, and says yes to "ready?".
// It also reads what flash.ts prints: told to put the plug into AP mode, it does the button dance
// (which takes the plug its time), as a person holding the plug would; told that a latching relay is first put the
// other way ("resetting the relay first"), it does not count that click, only what it sees after "pulsing <fn> now".
// Asked to flip a wall switch, it flips the one the question names (wall switch N), as a person would: if the
// recipe has the pin wrong, flash.ts reads a pin nobody flipped.
import { PassThrough } from 'node:stream';
import type { Question } from '../flash.ts';
import type { SimPlug } from './sim/plug.ts';

export type Answer = string | boolean;
/** A fixed answer, or what to do (and then answer) when that question comes. */
export type Override = Answer | ((q: Question) => Promise<Answer> | Answer);

export interface VirtualUser {
  /** Every question asked so far. */
  asked: Question[];
  /** The terminal flash.ts's io is plugged into: keys go in on `input`, prompts are drawn on `screen`. */
  input: PassThrough & { isTTY: boolean; setRawMode: (on: boolean) => unknown };
  screen: (text: string) => void;
  /** What flash.ts prints (not the prompts): the user acts on instructions it reads there. */
  read: (text: string) => void;
  onQuestion: (q: Question) => void;
  /** What this user answers to `q` (doing what it takes first: pressing, flipping), without a terminal. */
  answer: (q: Question) => Promise<Answer>;
  stop: () => void;
}

export const KEY = { enter: '\r', down: '\x1b[B', up: '\x1b[A' };

/** Strips the terminal's control sequences from what a prompt draws. */
export function plainText(s: string): string {
  return s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
}

/** The keys that give `answer` to question `q` in @inquirer/prompts. */
export function keysFor(q: Question, answer: Answer): string {
  if (q.kind === 'confirm') return answer === (q.default ?? true) ? KEY.enter : `${answer ? 'y' : 'n'}${KEY.enter}`;
  if (q.kind === 'select') {
    const index = (q.choices ?? []).indexOf(String(answer));
    if (index < 0) throw new Error(`virtual user: "${answer}" is not a choice of ${q.id}: ${q.choices?.join(', ')}`);
    return KEY.down.repeat(index) + KEY.enter;
  }
  return `${answer}${KEY.enter}`;
}

export function virtualUser(sim: SimPlug | undefined,
  opts: { overrides?: Record<string, Override>; log?: (line: string) => void } = {}): VirtualUser {
  // What the user saw since the last question: the relay clicking, LEDs (by colour) turning on.
  const seen = new Set<string>();
  let last = sim ? JSON.stringify(sim.hardware) : '';
  /** From now on, what it sees counts: flash.ts announced a click that is not the one it asks about. */
  const lookAfresh = () => {
    if (!sim) return;
    last = JSON.stringify(sim.hardware);
    seen.clear();
  };
  const watch = sim && setInterval(() => {
    const now = sim.hardware;
    const before = JSON.parse(last) as SimPlug['hardware'];
    for (const [n, on] of Object.entries(now.relays)) if (on !== before.relays[Number(n)]) seen.add('relay');
    // 'blue 2' is the second blue LED: a person sees a blue LED.
    for (const [led, on] of Object.entries(now.leds)) if (on && !before.leds[led]) seen.add(led.split(' ')[0]);
    for (const colour of now.light) seen.add(`light ${colour}`);
    last = JSON.stringify(now);
  }, 20);
  watch?.unref();

  const input = Object.assign(new PassThrough(), { isTTY: true, setRawMode: () => input });
  let drawn = '';
  let printed = '';
  let waiting: { text: string; resolve: () => void } | undefined;
  const asked: Question[] = [];

  async function decide(q: Question): Promise<Answer> {
    const override = opts.overrides?.[q.id];
    if (override !== undefined) return typeof override === 'function' ? override(q) : override;
    if (q.id.startsWith('pin_') && sim) {
      await new Promise((r) => setTimeout(r, 60)); // the last change reaches the watcher
      const lit = ['red', 'green', 'blue', 'cold', 'warm'].filter((c) => seen.has(`light ${c}`));
      const colour = ['red', 'green', 'blue'].find((c) => seen.has(c));
      const light = q.choices?.includes('cold white');
      const first = lit[0] === 'cold' || lit[0] === 'warm' ? `${lit[0]} white` : lit[0];
      const answer = light ? first ?? 'nothing'
        : seen.has('relay') ? 'the relay clicked' : colour ? `a ${colour} LED` : seen.size ? 'another LED' : 'nothing';
      seen.clear();
      return answer;
    }
    if (q.id === 'kickstart_plug' && sim) {
      // Several Kickstart plugs answered (other tests' plugs share loopback): the one in hand has this MAC.
      const mine = q.choices?.find((c) => c.includes(sim.mac.match(/../g)!.join(':')));
      if (mine) return mine;
    }
    if (q.id.startsWith('press_') && sim) {
      // The button the question names: the plug's (button 1), "the button for all sockets" (0), button N, key N or
      // the reset button.
      const fn = q.id.slice('press_'.length);
      const n = fn === 'button' ? undefined : fn === 'button_all' ? 0 : Number(fn.replace(/^\D+/, ''));
      const byNumber = (map: Record<string, number> | undefined) =>
        Object.entries(map ?? {}).find(([, b]) => b === n)?.[0];
      const pin = fn === 'button_reset' ? sim.wiring.resetButton
        : fn.startsWith('key') && sim.wiring.keys ? byNumber(sim.wiring.keys) : byNumber(sim.buttons);
      await sim.pressButton(150, pin);
      seen.clear();
      return true;
    }
    if (q.id.startsWith('flip_') && sim) {
      // Wall switch N (the only one, or number 1, for "wall_switch"); a board without it: the one on the pin read.
      const fn = q.id.slice('flip_'.length);
      const n = Number(fn.replace(/^\D+/, '') || 1);
      const switches = Object.entries(sim.wiring.wallSwitches ?? {});
      const named = switches.length === 1 && fn === 'wall_switch' ? switches[0][0]
        : switches.find(([, k]) => k === n)?.[0];
      const pin = named ?? /reading (P\d+)/.exec(q.message)?.[1];
      if (pin && switches.some(([p]) => p === pin)) sim.flipSwitch(pin);
      seen.clear();
      return true;
    }
    if (q.kind === 'confirm') return q.default ?? true;
    throw new Error(`virtual user has no answer for ${q.id}: ${q.message}`);
  }

  // A long question wraps on the screen: compare without the white space.
  const squeezed = (s: string) => plainText(s).replace(/\s+/g, '');
  function drawnNow(text: string): Promise<void> {
    if (squeezed(drawn).includes(squeezed(text))) return Promise.resolve();
    return new Promise((resolve) => (waiting = { text, resolve }));
  }

  return {
    asked,
    input,
    screen(text) {
      drawn += text;
      if (waiting && squeezed(drawn).includes(squeezed(waiting.text))) {
        const w = waiting;
        waiting = undefined;
        w.resolve();
      }
    },
    read(text) {
      printed += plainText(text);
      const lines = printed.split('\n');
      printed = lines.pop() ?? '';
      for (const line of lines) {
        // A batch: the user picks up the next plug when flash.ts moves on to it.
        const next = /━━ plug (\d+) of \d+/.exec(line);
        if (next && sim && Number(next[1]) > 1) {
          opts.log?.(`[virtual user] picks up plug ${next[1]}`);
          sim.newPlug();
        }
        // A latching relay's question is about the pulse after this line: the click before it was the other pin's.
        if (/^\s*pulsing \w+ \(P\d+\) now/.test(line)) lookAfresh();
        if (/Put the plug into AP mode/i.test(line) && sim) {
          opts.log?.('[virtual user] puts the plug into AP mode');
          sim.enterApMode().catch(() => { /* not on the stock firmware any more: nothing happens */ });
        }
      }
    },
    onQuestion(q) {
      asked.push(q);
      drawn = '';
      opts.log?.(`[virtual user] ${q.message}`);
      void (async () => {
        const answer = await decide(q);
        await drawnNow(q.message);
        await new Promise((r) => setTimeout(r, 10)); // the prompt listens for keys once it has drawn
        opts.log?.(`[virtual user] → ${answer}`);
        input.write(keysFor(q, answer));
      })().catch((e) => {
        // A question this user cannot answer: the test fails on its timeout, saying which one.
        opts.log?.(`[virtual user] ${(e as Error).message}`);
        process.emitWarning(`virtual user: ${(e as Error).message}`);
      });
    },
    answer(q) {
      asked.push(q);
      return decide(q);
    },
    stop: () => watch && clearInterval(watch),
  };
}
