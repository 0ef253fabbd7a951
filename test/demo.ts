// `npm run demo`: the whole recipes/23A.yaml flow with no plug, no Docker, no Wi-Fi and no network.
// A simulated plug (test/sim) stands in for the hardware, fake tools (test/fakes) for cloudcutter,
// nmcli, docker and esphome, and a virtual user watches the simulated LEDs and relay and answers
// the questions a person would. What you read is what flash.ts prints in a real run.
import { startBench, runInProcess } from './workbench.ts';
import { SETTINGS } from '../flash.ts';
import { plainText } from './virtual-user.ts';

const dim = (s: string) => (process.stdout.isTTY && !process.env.NO_COLOR ? `\x1b[2m${s}\x1b[22m` : s);
const say = (line: string) => process.stdout.write(dim(line) + '\n');

say('── demo: flash.ts on a simulated Status Wifi Plug 23A (BK7231N) ───────────────────────────────');
say('   no hardware: a simulated plug, fake cloudcutter/nmcli/esphome, and a virtual user answering.');
say('   lines in this colour are the demo talking; everything else is flash.ts.\n');

const bench = await startBench({
  fakes: { cloudcutter: { delayMs: 3000 }, esphome: { delayMs: 2500 } },
  // The pin check as a person sees it: each pin held on long enough to look.
  env: { FLASH_PIN_SHOW_MS: SETTINGS.FLASH_PIN_SHOW_MS.default },
  log: (line) => say(`   ${line}`),
});
const recipe = 'recipes/23A.yaml';
const argv = [recipe, ...bench.args, '--check-pins'];
say(`   $ npx tsx flash.ts ${recipe} --check-pins --out ${bench.out}   (plus the fakes' --cloudcutter and --wifi-iface)\n`);
let code = 1;
try {
  // The questions are drawn as in a terminal; piped somewhere else, they are shown as plain text.
  const echo = (text: string) => process.stdout.write(process.stdout.isTTY ? text : plainText(text));
  ({ code } = await runInProcess(argv, bench.env, bench.user, echo));
  say(`\n── demo over: flash.ts exited ${code}; the simulated plug now runs "${bench.sim.final?.name ?? '?'}" (phase ${bench.sim.phase}).`);
  say(`   the config dir it wrote is kept for you to read: ${bench.out}`);
} finally {
  await bench.close();
}
process.exit(code);
