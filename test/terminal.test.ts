// flash.ts in a real pseudo-terminal (util-linux `script` gives it one), answered by key presses only:
// the pin check's questions as a person meets them, with nothing but the screen to go by.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { startSimPlug } from './sim/plug.ts';
import { KEY, plainText } from './virtual-user.ts';
import { FLASH, ROOT, TSX, WIFI_ENV, runFlash, shellWords, tempDir } from './helpers.ts';
import { PIN_ANSWERS } from '../flash.ts';

test('the pin check in a terminal: "show it again" switches the pin again; the button passes when pressed, no key needed',
  async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false });
  const out = path.join(tempDir(), 'esphome');
  let child: ReturnType<typeof spawn> | undefined;
  let ear: (() => void) | undefined;
  try {
    assert.equal((await runFlash(['recipes/23A.yaml', '--only', 'config', '--yes', '--out', out], { env: WIFI_ENV })).code, 0);
    // Count the relay's clicks the way an ear would: every change of its state.
    let clicks = 0;
    let relay = sim.hardware.relay;
    ear = sim.onHardware((hw) => (hw.relay !== relay ? (clicks++, (relay = hw.relay)) : 0));

    const argv = [process.execPath, '--import', TSX, FLASH, 'recipes/23A.yaml', '--only', 'pins', '--check-pins',
      '--device-ip', '127.0.0.1', '--out', out];
    const pty = spawn('script', ['-q', '-e', '-c', shellWords(argv), '/dev/null'], {
      cwd: ROOT, env: { ...process.env, FLASH_DEVICE_HTTP_PORT: String(sim.port), NO_COLOR: '1', TERM: 'xterm' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child = pty;
    let screen = '';
    const exited = new Promise<number>((r) => pty.on('close', (code) => r(code ?? -1)));
    pty.stdout.on('data', (d) => (screen += d));
    pty.stderr.on('data', (d) => (screen += d));
    /** Waits until the screen shows `text` for the n-th time. */
    const shown = (text: string, n = 1) => new Promise<void>((resolve, reject) => {
      const t0 = Date.now();
      const poll = setInterval(() => {
        if (plainText(screen).split(text).length - 1 >= n) return clearInterval(poll), resolve();
        if (Date.now() - t0 > 30_000) clearInterval(poll), reject(new Error(`no "${text}" (${n}) on:\n${plainText(screen)}`));
      }, 20);
    });
    // A fresh select prompt is drawn with the cursor on its first choice; moving it redraws the question.
    const asked = (question: string, n = 1) => shown(`? ${question}\n❯ ${PIN_ANSWERS[0]}`, n);
    const type = (keys: string) => pty.stdin.write(keys);
    const choose = (answer: string) => type(KEY.down.repeat(PIN_ANSWERS.indexOf(answer)) + KEY.enter);

    await asked('relay on P24 was switched on and off. What did you see?');
    const firstTime = clicks;
    assert.ok(firstTime >= 2, `the relay clicked on and off (${firstTime})`);
    choose('show it again');
    await asked('relay on P24 was switched on and off. What did you see?', 2);
    assert.ok(clicks >= firstTime + 2, `shown again: the relay clicked once more on and off (${clicks})`);
    choose('the relay clicked');
    await asked('state_led on P7 was switched on and off. What did you see?');
    choose('a blue LED');
    await asked('status_led on P6 was switched on and off. What did you see?');
    choose('a red LED');
    // The button is read while the user presses it: the press itself answers, no key is needed.
    await shown("Press and release the plug's button now: reading P8");
    await sim.pressButton(150);
    assert.equal(await exited, 0, plainText(screen));
    const text = plainText(screen);
    assert.match(text, /relay +P24 +the relay clicked/);
    assert.match(text, /button +P8 +press seen/);
    assert.match(text, /every pin does what the recipe says/);
  } finally {
    child?.kill('SIGKILL');
    ear?.();
    await sim.close();
  }
});
