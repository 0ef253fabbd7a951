// A virtual user for flash.ts's questions: it watches the simulated plug's relay and LEDs the way a
// person watches the real plug, presses its button when asked, puts the plug in AP mode when asked
// (question ids cloudcutter_ready, ap_mode, ap_mode_again, …: it does the power-cycle dance, which
// takes its time, then answers), and answers yes to other "ready?" questions.
import type { Question } from '../flash.ts';
import type { SimPlug } from './sim/plug.ts';

export interface VirtualUser {
  answer: (q: Question) => Promise<string | boolean>;
  asked: Question[];
  stop: () => void;
}

export function virtualUser(sim: SimPlug, opts: { overrides?: Record<string, string | boolean>; log?: (line: string) => void } = {}): VirtualUser {
  // What the user saw since the last question: the relay clicking, LEDs (by colour) turning on.
  const seen = new Set<string>();
  let last = JSON.stringify(sim.hardware);
  const watch = setInterval(() => {
    const now = sim.hardware;
    const before = JSON.parse(last) as SimPlug['hardware'];
    if (now.relay !== before.relay) seen.add('relay');
    for (const [colour, on] of Object.entries(now.leds)) if (on && !before.leds[colour]) seen.add(colour);
    last = JSON.stringify(now);
  }, 20);
  const asked: Question[] = [];
  return {
    asked,
    stop: () => clearInterval(watch),
    async answer(q) {
      asked.push(q);
      opts.log?.(`[virtual user] ${q.message}`);
      if (q.id in (opts.overrides ?? {})) return opts.overrides![q.id];
      if (q.id.startsWith('pin_')) {
        await new Promise((r) => setTimeout(r, 60)); // the last change reaches the watcher
        const colour = ['red', 'green', 'blue'].find((c) => seen.has(c));
        const answer = seen.has('relay') ? 'the relay clicked' : colour ? `a ${colour} LED` : seen.size ? 'another LED' : 'nothing';
        seen.clear();
        opts.log?.(`[virtual user] → ${answer}`);
        return answer;
      }
      if (q.id === 'cloudcutter_ready' || /(^|_)ap_mode/.test(q.id)) {
        await sim.enterApMode().catch(() => { /* not on the stock firmware any more: nothing to do */ });
        return q.kind === 'confirm' ? true : '';
      }
      if (q.id === 'press_button') {
        await sim.pressButton(150);
        seen.clear();
        return true;
      }
      if (q.kind === 'confirm') return q.default ?? true;
      throw new Error(`virtual user has no answer for ${q.id}: ${q.message}`);
    },
  };
}
