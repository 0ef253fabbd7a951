// The kickstart and pins steps against the simulated plug: provisioning through the captive portal,
// discovery over real multicast on loopback, and the guided pin check with a virtual user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startSimPlug, FLASH_SIZE } from './sim/plug.ts';
import { makeFakeWorld } from './fakes.ts';
import { virtualUser } from './virtual-user.ts';
import { BENCH_TIME_SCALE, HOME, runInProcess, wifiByHand } from './workbench.ts';
import { ROOT, tempDir } from './helpers.ts';

async function configDir(recipe = 'recipes/23A.yaml'): Promise<string> {
  const out = path.join(tempDir(), 'esphome');
  const r = await runInProcess([recipe, '--only', 'config', '--yes', '--out', out], { ...process.env, FLASH_WIFI_SSID: HOME.ssid, FLASH_WIFI_PASSWORD: HOME.password });
  assert.equal(r.code, 0, r.out);
  return out;
}

test('kickstart step: joins the AP, sends the Wi-Fi to the portal, finds the plug by mDNS, leaks no secret', async () => {
  const sim = await startSimPlug({ timeScale: BENCH_TIME_SCALE, mcu: 'bk7231n', phase: 'kickstart-ap', homeNetwork: HOME, visibleNetworks: [{ ssid: 'HomeNet', rssi: -50, lock: true }, { ssid: 'Neighbour', rssi: -80, lock: true }] });
  const world = await makeFakeWorld({ timeScale: BENCH_TIME_SCALE, simUrl: sim.url, nmcli: {} });
  try {
    const out = await configDir();
    const r = await runInProcess(['recipes/23A.yaml', '--only', 'kickstart', '--yes', '--out', out], {
      ...world.env, FLASH_KICKSTART_PORTAL: sim.url, FLASH_DEVICE_HTTP_PORT: String(sim.port), FLASH_MDNS_INTERFACE: '127.0.0.1',
      FLASH_MDNS_PORT: String(sim.mdnsPort), FLASH_DISCOVERY_TIMEOUT_MS: '10000',
    });
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(sim.wifi, { ssid: HOME.ssid, psk: HOME.password });
    assert.match(r.out, /found kickstart-bk7231n at 127\.0\.0\.1/);
    assert.ok(!r.out.includes(HOME.password) && !r.out.includes(encodeURIComponent(HOME.password)) && !r.out.includes('correct+horse'), r.out);
    const nm = world.calls('nmcli').map((c) => c.argv.join(' '));
    assert.ok(nm.some((a) => /device wifi connect kickstart-bk7231n ifname wlan1/.test(a)), nm.join('\n'));
    assert.ok(nm.some((a) => /connection delete id kickstart-bk7231n/.test(a)), 'the interface is handed back');
    for (const call of world.calls()) assert.ok(!call.argv.join(' ').includes(HOME.password), 'no secret on a command line');
    const journal = JSON.parse(fs.readFileSync(path.join(out, '.flash', 'status-plug-01.json'), 'utf8'));
    assert.equal(journal.facts.kickstartIp, '127.0.0.1');
  } finally {
    await sim.close();
    await world.cleanup();
  }
});

test('kickstart step: a Wi-Fi name the plug does not see is not sent with --yes; the run stops naming secrets.yaml',
  async () => {
    const sim = await startSimPlug({ timeScale: BENCH_TIME_SCALE, mcu: 'bk7231n', phase: 'kickstart-ap',
      homeNetwork: { ssid: 'Elsewhere', password: 'x' }, visibleNetworks: [{ ssid: 'Neighbour', rssi: -80, lock: true }] });
    const world = await makeFakeWorld({ timeScale: BENCH_TIME_SCALE, simUrl: sim.url, nmcli: {} });
    try {
      const out = await configDir();
      const r = await runInProcess(['recipes/23A.yaml', '--only', 'kickstart', '--yes', '--out', out], {
        ...world.env, FLASH_KICKSTART_PORTAL: sim.url, FLASH_DEVICE_HTTP_PORT: String(sim.port),
        FLASH_MDNS_INTERFACE: '127.0.0.1', FLASH_MDNS_PORT: String(sim.mdnsPort), FLASH_DISCOVERY_TIMEOUT_MS: '1500',
      });
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /the plug does not see your Wi-Fi "HomeNet" \(wifi_ssid in \S+secrets\.yaml\); it sees: Neighbour/);
      assert.match(r.out, /kickstart failed: the plug does not see your Wi-Fi "HomeNet", the wifi_ssid in \S+secrets\.yaml/);
      assert.match(r.out, /correct wifi_ssid in \S+secrets\.yaml/);
      assert.equal(sim.wifi, undefined, 'nothing was sent to the plug');
      const nm = world.calls('nmcli').map((c) => c.argv.join(' '));
      assert.ok(nm.some((a) => /connection delete id kickstart-bk7231n/.test(a)), 'the adapter is handed back');
    } finally {
      await sim.close();
      await world.cleanup();
    }
  });

test('kickstart step: a Wi-Fi name the plug does not see (a typo) is corrected there and then, and saved in secrets.yaml',
  async () => {
    const real = { ssid: 'HomeNet 2.4', password: HOME.password };
    const sim = await startSimPlug({ timeScale: BENCH_TIME_SCALE, mcu: 'bk7231n', phase: 'kickstart-ap',
      homeNetwork: real, visibleNetworks: [{ ssid: real.ssid, rssi: -50, lock: true }, { ssid: 'Neighbour', rssi: -80, lock: true }] });
    const world = await makeFakeWorld({ timeScale: BENCH_TIME_SCALE, simUrl: sim.url, nmcli: {} });
    try {
      const out = await configDir();
      const user = virtualUser(sim, { overrides: { wifi_seen: real.ssid, wifi_same_password: true } });
      const r = await runInProcess(['recipes/23A.yaml', '--only', 'kickstart', '--out', out], {
        ...world.env, FLASH_KICKSTART_PORTAL: sim.url, FLASH_DEVICE_HTTP_PORT: String(sim.port),
        FLASH_MDNS_INTERFACE: '127.0.0.1', FLASH_MDNS_PORT: String(sim.mdnsPort), FLASH_DISCOVERY_TIMEOUT_MS: '10000',
      }, user);
      user.stop();
      assert.equal(r.code, 0, r.out);
      const question = user.asked.find((q) => q.id === 'wifi_seen')!;
      assert.deepEqual(question.choices, [real.ssid, 'Neighbour', '"HomeNet", as it is (the plug may be out of its reach just now)']);
      assert.deepEqual(sim.wifi, { ssid: real.ssid, psk: real.password });
      const secrets = path.join(out, 'secrets.yaml');
      assert.match(fs.readFileSync(secrets, 'utf8'), /wifi_ssid: "HomeNet 2\.4"/);
      assert.equal(fs.statSync(secrets).mode & 0o777, 0o600);
      assert.match(r.out, /saved wifi_ssid in \S+secrets\.yaml/);
      assert.match(r.out, /found kickstart-bk7231n/);
    } finally {
      await sim.close();
      await world.cleanup();
    }
  });

test('kickstart step: when joining the AP fails, the user is told what to do by hand', async () => {
  const sim = await startSimPlug({ timeScale: BENCH_TIME_SCALE, mcu: 'bk7231n', phase: 'kickstart-ap', homeNetwork: HOME });
  const world = await makeFakeWorld({ timeScale: BENCH_TIME_SCALE, simUrl: sim.url, nmcli: { connectFails: true } });
  try {
    const out = await configDir();
    // The user does it from a phone: the portal gets the credentials, then they press Enter.
    const user = virtualUser(sim, { overrides: { manual_wifi_done: () => wifiByHand(sim) } });
    const r = await runInProcess(['recipes/23A.yaml', '--only', 'kickstart', '--out', out], {
      ...world.env, FLASH_KICKSTART_PORTAL: sim.url, FLASH_DEVICE_HTTP_PORT: String(sim.port), FLASH_MDNS_INTERFACE: '127.0.0.1',
      FLASH_MDNS_PORT: String(sim.mdnsPort), FLASH_DISCOVERY_TIMEOUT_MS: '10000',
    }, user);
    user.stop();
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /could not join kickstart-bk7231n/);
    assert.match(r.out, /join the Wi-Fi network "kickstart-bk7231n"[\s\S]*pick "HomeNet"/);
    assert.match(r.out, /found kickstart-bk7231n/);
  } finally {
    await sim.close();
    await world.cleanup();
  }
});

test('pins: every 23A pin does what the recipe says on a simulated 23A, asked through the real prompts', async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false });
  const user = virtualUser(sim);
  const world = await makeFakeWorld({});
  try {
    const out = await configDir();
    const r = await runInProcess(['recipes/23A.yaml', '--only', 'pins', '--check-pins', '--device-ip', '127.0.0.1', '--out', out],
      { ...world.env, FLASH_DEVICE_HTTP_PORT: String(sim.port) }, user);
    assert.equal(r.code, 0, r.out);
    for (const line of [/relay +P24 +the relay clicked/, /state_led +P7 +a blue LED/, /status_led +P6 +a red LED/, /button +P8 +press seen/])
      assert.match(r.out, line);
    // The button is read while the user presses it: no question, the press answers.
    assert.deepEqual(user.asked.map((q) => [q.id, q.kind]), [['pin_relay', 'select'], ['pin_state_led', 'select'],
      ['pin_status_led', 'select']]);
    assert.match(r.out, /Press and release the plug's button now: reading P8/);
    assert.deepEqual(user.did, ["Press the plug's button"]);
    assert.match(r.out, /every pin does what the recipe says/);
  } finally {
    user.stop();
    await sim.close();
    await world.cleanup();
  }
});

test('pins: the 21D recipe on a simulated 23A finds the button on P8 and names recipe 23A', async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false });
  const user = virtualUser(sim);
  const world = await makeFakeWorld({});
  try {
    const out = await configDir('recipes/21D.yaml');
    const r = await runInProcess(['recipes/21D.yaml', '--only', 'pins', '--check-pins', '--device-ip', '127.0.0.1', '--out', out],
      { ...world.env, FLASH_DEVICE_HTTP_PORT: String(sim.port),
        // The user presses at once; P6 sees nothing, and the question comes after this long.
        FLASH_PRESS_TIMEOUT_MS: '3000' }, user);
    assert.equal(r.code, 1, r.out);
    assert.deepEqual(user.asked.filter((q) => /^(press|found)_/.test(q.id)).map((q) => q.id), ['press_button', 'found_button'],
      'asked what happened, then whether the press on P8 was theirs');
    assert.match(r.out, /looking for the plug's button on the other pins .*press it again and again/);
    assert.match(r.out, /the plug's button is on P8, not P6/);
    assert.match(r.out, /the button is on P8: this plug matches/);
    assert.match(r.out, /status_led \(P8\): nothing/);
    assert.match(r.out, /this plug matches recipes\/23A\.yaml/);
  } finally {
    user.stop();
    await sim.close();
    await world.cleanup();
  }
});

test('--backup-flash saves the plug\'s whole 2 MiB flash from /hub/flash_read, byte for byte', async () => {
  // 2 MiB at the radio's pace is some 17 s: the bench's time scale makes it a fraction of that.
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false,
    timeScale: BENCH_TIME_SCALE });
  const world = await makeFakeWorld({});
  const user = virtualUser(sim);
  try {
    const out = await configDir();
    const r = await runInProcess(['recipes/23A.yaml', '--only', 'kickstart', '--manual-wifi', '--backup-flash', '--device-ip', '127.0.0.1', '--out', out],
      { ...world.env, FLASH_DEVICE_HTTP_PORT: String(sim.port), FLASH_KICKSTART_PORTAL: sim.url }, user);
    assert.equal(r.code, 0, r.out);
    const backups = fs.readdirSync(path.join(out, '.flash')).filter((f) => f.startsWith('backup-'));
    assert.equal(backups.length, 1, r.out);
    const data = fs.readFileSync(path.join(out, '.flash', backups[0]));
    assert.equal(data.length, FLASH_SIZE);
    assert.ok(data.equals(sim.flashRead(0, FLASH_SIZE)), 'the backup is the plug\'s flash');
    assert.match(r.out, /saved the plug's flash \(2 MiB\)/);
  } finally {
    user.stop();
    await sim.close();
    await world.cleanup();
  }
});
