// A virtual user at a virtual terminal. flash.ts asks its questions through the real @inquirer/prompts
// code; this user reads the prompt off the screen and types its answer as key presses (Enter, arrow
// keys, letters), the way a person at a terminal does. It decides like a person at the plug would: it
// watches the simulated plug's relay and LEDs, presses its button when asked, and says yes to "ready?".
// It also reads what flash.ts prints: told to put the plug into AP mode, it does the button dance
// (which takes the plug its time), as a person holding the plug would; told that a latching relay is first put the
// other way ("resetting the relay first"), it does not count that click, only what it sees after "pulsing <fn> now".
// Told to press a button or flip a wall switch, it does it to the one the line names (button N, wall switch N), as a
// person would: if the recipe has the pin wrong, flash.ts reads a pin nobody touched. Told to press it again and
// again while flash.ts looks for it, it keeps pressing (about once a second) until flash.ts asks or says it is done.
import { PassThrough } from 'node:stream';
import { UNFOUND_ANSWERS, UNSEEN_ANSWERS, type Question } from '../flash.ts';
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
  /** The buttons pressed and switches flipped, as the user was told to (by the words flash.ts used). */
  did: string[];
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

/** How long a relay's new state or a light must last to be heard or seen (a relay's contacts need milliseconds). */
export const SEEN_MS = 10;

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
  opts: {
    overrides?: Record<string, Override>;
    log?: (line: string) => void;
    /** Told to press or flip: what this user does (by default, does it). 'nothing': looks away the first time. */
    acts?: (instruction: string, times: number) => 'do it' | 'nothing';
  } = {}): VirtualUser {
  // What the user saw since the last question: the relay clicking, LEDs (by colour) turning on. Every change is
  // watched as it happens, but only a state that lasts SEEN_MS counts: a relay's contacts do not move on a shorter
  // pulse, and an eye misses a shorter flash. (flash.ts holds a pin on for FLASH_PIN_SHOW_MS, more than this.)
  const seen = new Set<string>();
  /** Since when each thing is in the state that will count when it lasts: key -> [what is seen, since]. */
  const since = new Map<string, [string, number]>();
  const lasted = (key: string, at: number) => {
    const was = since.get(key);
    since.delete(key);
    if (was && at - was[1] >= SEEN_MS) seen.add(was[0]);
  };
  /** The things still in their state now, as seen if they have lasted (a question asks what was seen). */
  const settle = () => {
    const now = performance.now();
    for (const [key, [what, at]] of since) if (now - at >= SEEN_MS) (seen.add(what), since.set(key, [what, now]));
  };
  let last = sim?.hardware;
  /** From now on, what it sees counts: flash.ts announced a click that is not the one it asks about. */
  const lookAfresh = () => {
    if (!sim) return;
    last = sim.hardware;
    seen.clear();
    since.clear();
  };
  const unwatch = sim?.onHardware((now) => {
    const before = last!;
    const at = performance.now();
    // A relay clicks on any change of its contacts, on or off.
    for (const [n, on] of Object.entries(now.relays))
      if (on !== before.relays[Number(n)]) (lasted(`relay ${n}`, at), since.set(`relay ${n}`, ['relay', at]));
    // 'blue 2' is the second blue LED: a person sees a blue LED.
    for (const [led, on] of Object.entries(now.leds)) {
      if (on && !before.leds[led]) since.set(`led ${led}`, [led.split(' ')[0], at]);
      if (!on && before.leds[led]) lasted(`led ${led}`, at);
    }
    for (const colour of now.light) if (!before.light.includes(colour)) since.set(`light ${colour}`, [`light ${colour}`, at]);
    for (const colour of before.light) if (!now.light.includes(colour)) lasted(`light ${colour}`, at);
    last = now;
  });

  /** The pin of the button or wall switch flash.ts's words name, on the simulated board. */
  function pinNamed(which: string, reading: string): string | undefined {
    if (!sim) return undefined;
    const byNumber = (map: Record<string, number> | undefined, n: number) =>
      Object.entries(map ?? {}).find(([, b]) => b === n)?.[0];
    const wall = /^the wall switch(?: (\d+))?/.exec(which);
    if (wall) {
      const switches = Object.entries(sim.wiring.wallSwitches ?? {});
      const named = !wall[1] && switches.length === 1 ? switches[0][0] : byNumber(sim.wiring.wallSwitches, Number(wall[1] ?? 1));
      // A board without that switch: the one on the pin read, if there is one there.
      return named ?? (switches.some(([p]) => p === reading) ? reading : undefined);
    }
    if (which === "the plug's button") return sim.wiring.button;
    if (which === 'the reset button') return sim.wiring.resetButton;
    if (which === 'the button for all sockets') return byNumber(sim.buttons, 0);
    const key = /^key (\d+)/.exec(which);
    if (key) return byNumber(sim.wiring.keys ?? sim.buttons, Number(key[1]));
    const button = /^button (\d+)/.exec(which);
    return button ? byNumber(sim.buttons, Number(button[1])) : undefined;
  }
  const did: string[] = [];
  const told = new Map<string, number>();
  let lastAct: 'do it' | 'nothing' = 'do it';
  /** Presses the button or flips the switch it was told to (after the time a hand takes to get there). */
  function act(verb: 'Press' | 'Flip', which: string, reading: string): void {
    const instruction = `${verb} ${which}`;
    const times = (told.get(instruction) ?? 0) + 1;
    told.set(instruction, times);
    lastAct = opts.acts?.(instruction, times) ?? 'do it';
    if (lastAct === 'nothing' || !sim) return;
    const pin = pinNamed(which, reading);
    opts.log?.(`[virtual user] ${instruction} (${pin ?? 'not on this board'})`);
    did.push(instruction);
    setTimeout(() => {
      if (!pin) return;
      if (verb === 'Flip') sim.flipSwitch(pin);
      else sim.pressButton(150, pin).catch(() => {});
    }, 50).unref();
  }
  /** Pressing again and again while flash.ts reads one pin after another; paused while a question is on screen. */
  let searching: { pin?: string; timer: NodeJS.Timeout } | undefined;
  let questionOpen = false;
  function startSearching(which: string): void {
    stopSearching();
    const pin = pinNamed(which, '');
    opts.log?.(`[virtual user] presses ${which} again and again (${pin ?? 'not on this board'})`);
    const timer = setInterval(() => {
      if (!questionOpen && pin && sim) sim.pressButton(150, pin).catch(() => {});
    }, 900);
    timer.unref();
    searching = { pin, timer };
  }
  function stopSearching(): void {
    if (searching) clearInterval(searching.timer);
    searching = undefined;
  }

  const input = Object.assign(new PassThrough(), { isTTY: true, setRawMode: () => input });
  let drawn = '';
  let printed = '';
  let waiting: { text: string; resolve: () => void } | undefined;
  const asked: Question[] = [];

  /** A question is on screen (the presses of a search wait meanwhile). */
  const opened = (q: Question) => {
    asked.push(q);
    questionOpen = true;
  };
  /** Answered: a search ends when the user confirmed what it found, or gave up on it. */
  const closed = (q: Question, answer: Answer) => {
    questionOpen = false;
    if ((q.id.startsWith('found_') && answer === true) || q.id.startsWith('unfound_')) stopSearching();
  };

  async function decide(q: Question): Promise<Answer> {
    const override = opts.overrides?.[q.id];
    if (override !== undefined) return typeof override === 'function' ? override(q) : override;
    if (q.id.startsWith('pin_') && sim) {
      settle();
      const lit = ['red', 'green', 'blue', 'cold', 'warm'].filter((c) => seen.has(`light ${c}`));
      const colour = ['red', 'green', 'blue'].find((c) => seen.has(c));
      const light = q.choices?.includes('cold white');
      const first = lit[0] === 'cold' || lit[0] === 'warm' ? `${lit[0]} white` : lit[0];
      const answer = light ? first ?? 'nothing'
        : seen.has('relay') ? 'the relay clicked' : colour ? `a ${colour} LED` : seen.size ? 'another LED' : 'nothing';
      seen.clear();
      since.clear();
      return answer;
    }
    if (q.id === 'kickstart_plug' && sim) {
      // Several Kickstart plugs answered (other tests' plugs share loopback): the one in hand has this MAC.
      const mine = q.choices?.find((c) => c.includes(sim.mac.match(/../g)!.join(':')));
      if (mine) return mine;
    }
    // No press (or flip) showed in time: this user says whether it did what it was told.
    if (/^(press|flip)_/.test(q.id)) return lastAct === 'nothing' ? UNSEEN_ANSWERS.again : UNSEEN_ANSWERS.done;
    // A press showed on another pin while it was pressing: it was its own if that pin is the button's.
    if (q.id.startsWith('found_') && sim) return /showed on (P\d+)/.exec(q.message)?.[1] === searching?.pin;
    if (q.id.startsWith('unfound_')) return UNFOUND_ANSWERS.wrong;
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
        const told = /(Press and release|Flip) (.+?) now: reading (P\d+)/.exec(line);
        if (told) act(told[1] === 'Flip' ? 'Flip' : 'Press', told[2], told[3]);
        const search = /looking for (.+?) on the other pins .*press it again and again/.exec(line);
        if (search) startSearching(search[1]);
        if (/ is on P\d+, not P\d+| no pin saw /.test(line)) stopSearching();
        if (/Put the plug into AP mode/i.test(line) && sim) {
          opts.log?.('[virtual user] puts the plug into AP mode');
          sim.enterApMode().catch(() => { /* not on the stock firmware any more: nothing happens */ });
        }
      }
    },
    did,
    onQuestion(q) {
      opened(q);
      drawn = '';
      opts.log?.(`[virtual user] ${q.message}`);
      void (async () => {
        const answer = await decide(q);
        await drawnNow(q.message);
        await new Promise((r) => setTimeout(r, 10)); // the prompt listens for keys once it has drawn
        opts.log?.(`[virtual user] → ${answer}`);
        input.write(keysFor(q, answer));
        closed(q, answer);
      })().catch((e) => {
        // A question this user cannot answer: they say why and press Ctrl+C, so the run ends now (exit 130) and
        // the test fails at once with flash.ts's output, not at its timeout.
        opts.log?.(`[virtual user] ${(e as Error).message}`);
        process.emitWarning(`virtual user: ${(e as Error).message}`);
        input.write('\x03');
      });
    },
    async answer(q) {
      opened(q);
      const answer = await decide(q);
      closed(q, answer);
      return answer;
    },
    stop: () => {
      unwatch?.();
      stopSearching();
    },
  };
}
