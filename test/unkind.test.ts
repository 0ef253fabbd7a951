// The real world is unkind, and the workbench is too by default (test/fakes, test/sim): the plug takes
// its time to reboot, NetworkManager's scan list is stale, a laptop has two adapters, cloudcutter needs a
// terminal, asks questions, can hang after sending the firmware and scans forever for a plug that is not
// in AP mode, the MAC it prints may not be the plug's, and newer Kickstart builds speak another web
// dialect. Each scenario here failed on the flash.ts that believed otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startBench, runInProcess, configured, wifiByHand, BENCH_TIME_SCALE, HOME } from './workbench.ts';
import { startSimPlug } from './sim/plug.ts';
import { makeFakeWorld, UBUNTU_RESOLVED } from './fakes.ts';
import { virtualUser } from './virtual-user.ts';
import { runFlash } from './helpers.ts';

const RECIPE = 'recipes/23A.yaml';
const nmcliArgs = (b: { world: { calls(tool: string): { argv: string[] }[] } }) => b.world.calls('nmcli').map((c) => c.argv.join(' '));
const worldState = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8'));

test('the Kickstart AP comes 15–30 s after cloudcutter and only a rescan shows it: flash.ts rescans, then joins', async () => {
  const b = await startBench({ sim: { kickstartBootMs: 25_000 } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /waiting for the plug's kickstart-bk7231n network \(rescanning on wlan1\)/);
    const nm = nmcliArgs(b);
    const connect = nm.findIndex((a) => /^--wait 60 device wifi connect kickstart-bk7231n ifname wlan1$/.test(a));
    assert.ok(connect > 0, nm.join('\n'));
    assert.ok(nm.slice(0, connect).some((a) => a === '-t -f SSID device wifi list --rescan yes ifname wlan1'),
      'a rescan saw the AP before the join');
    assert.equal(b.sim.phase, 'final');
  } finally {
    await b.close();
  }
});

test('two adapters, both with AP mode: cloudcutter gets -w with the free one, and the Kickstart join uses it too', async () => {
  // A laptop's internal adapter (wlan0, carrying its connection) usually has AP mode as well.
  const b = await startBench({ fakes: { nmcli: { wifi: [{ iface: 'wlan0', apMode: true, connectedTo: 'HomeNet' },
    { iface: 'wlx00c0cab17e42', apMode: true }] } } });
  try {
    // No --wifi-iface: left to itself, cloudcutter would take wlan0 (listed first: it is connected).
    const args = b.args.filter((a, i) => a !== '--wifi-iface' && b.args[i - 1] !== '--wifi-iface');
    const r = await runInProcess([RECIPE, ...args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /wlx00c0cab17e42 supports AP mode: cloudcutter gets -w wlx00c0cab17e42 \(not wlan0\)/);
    assert.deepEqual(b.world.calls('tuya-cloudcutter.sh')[0].argv.slice(-2), ['-w', 'wlx00c0cab17e42']);
    assert.ok(nmcliArgs(b).includes('--wait 60 device wifi connect kickstart-bk7231n ifname wlx00c0cab17e42'));
    assert.doesNotMatch(r.out, /AP support is manditory/);
    assert.doesNotMatch(r.out, /carries this machine's connection/);
  } finally {
    await b.close();
  }
});

test("one adapter, carrying this machine's connection: the check says the machine goes offline while flashing", async () => {
  const b = await startBench({ fakes: { nmcli: { wifi: [{ iface: 'wlan0', apMode: true, connectedTo: 'HomeNet' }] } } });
  try {
    const args = b.args.filter((a, i) => a !== '--wifi-iface' && b.args[i - 1] !== '--wifi-iface');
    const r = await runInProcess(['doctor', RECIPE, ...args], b.env, b.user);
    assert.match(r.out, /wlan0 supports AP mode: cloudcutter gets -w wlan0; --wifi-iface chooses another\. It carries /);
    assert.match(r.out, /this machine is offline on it/);
  } finally {
    await b.close();
  }
});

test('no terminal (a --yes run in a pipe): cloudcutter still gets the pseudo-terminal its docker run -ti needs', async () => {
  const b = await startBench();
  try {
    await configured(b);
    // A child with its stdin a pipe, as under cron or CI; the user is at the plug, reading along.
    const r = await runFlash([RECIPE, ...b.args, '--yes', '--only', 'cloudcutter'], { env: b.env, reader: b.user });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /the input device is not a TTY/);
    assert.match(r.stdout, /Kickstart flashed/);
  } finally {
    await b.close();
  }
});

test("cloudcutter's questions: loopback-only systemd-resolved is skipped (never stopped), AppArmor kept under --yes", async () => {
  const b = await startBench();
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /systemd-resolve answers DNS for this machine only \(127\.0\.0\.54, 127\.0\.0\.53\).*answering S \(skip\)/);
    assert.match(r.out, /│ Skipping\.\.\./);
    assert.match(r.out, /cloudcutter asks to stop AppArmor[\s\S]*until the next reboot\? → no \(--yes: nobody is asked\)\n\s+kept: --yes changes no settings of this machine/);
    assert.match(r.out, /53\/udp: systemd-resolve \(pid 612\) on loopback only, fine/);
    assert.deepEqual(worldState(b.world.dir).stopped ?? [], [], 'nothing of the host was stopped');
    assert.doesNotMatch(r.out, /systemctl stop systemd-resolve/);
  } finally {
    await b.close();
  }
});

test('AppArmor and the blacklist file are asked about through flash.ts\'s own prompts when a person is there', async () => {
  const b = await startBench({ fakes: { host: { apparmor: true, blacklistRtl8192cu: true } },
    answers: { cloudcutter_apparmor: true, cloudcutter_blacklist: false } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--only', 'cloudcutter'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(b.user.asked.map((q) => q.id).filter((id) => id.startsWith('cloudcutter_')),
      ['cloudcutter_blacklist', 'cloudcutter_apparmor']);
    assert.deepEqual(worldState(b.world.dir).stopped, ['apparmor']);
  } finally {
    await b.close();
  }
});

test('a real port conflict (dnsmasq on all addresses) is refused before cloudcutter starts, naming the process', async () => {
  const b = await startBench({ fakes: { ss: { busy: [...UBUNTU_RESOLVED,
    { proto: 'udp', port: 67, addr: '0.0.0.0', process: 'dnsmasq', pid: 812, unit: 'dnsmasq.service' }] } } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /✗ free ports +67\/udp held by dnsmasq \(pid 812\) on 0\.0\.0\.0/);
    assert.match(r.out, /fix: stop that service while flashing \(e\.g\. sudo systemctl stop dnsmasq\)/);
    assert.equal(b.world.calls('tuya-cloudcutter.sh').length, 0);
  } finally {
    await b.close();
  }
});

test('cloudcutter hangs after sending the firmware (upstream #816): one adapter — stopped after the silence, the plug found', async () => {
  const b = await startBench({ fakes: { cloudcutter: { hangAfterSend: true } }, env: { FLASH_CLOUDCUTTER_STALL_MS: '2000' } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /cloudcutter has said nothing for .* since the firmware was sent .*: stopping it to look for the plug/);
    assert.match(r.out, /Kickstart flashed: its network kickstart-bk7231n is on the air/);
    assert.equal(b.sim.phase, 'final');
  } finally {
    await b.close();
  }
});

test('cloudcutter hangs after sending the firmware, two adapters: the other one sees the Kickstart AP and the run goes on', async () => {
  const b = await startBench({ fakes: { cloudcutter: { hangAfterSend: true }, nmcli: { wifi: [
    { iface: 'wlan0', apMode: false, connectedTo: 'HomeNet' }, { iface: 'wlan1', apMode: true }] } },
  env: { FLASH_CLOUDCUTTER_STALL_MS: '600000' } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--yes'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /Kickstart flashed: its network kickstart-bk7231n is on the air \(seen by wlan0\)/);
    assert.equal(b.sim.phase, 'final');
  } finally {
    await b.close();
  }
});

test('cloudcutter scanning for a plug that is not in AP mode: a hint after a while, then a clear stop', async () => {
  const b = await startBench({ fakes: { cloudcutter: { outcome: 'no-ap' } }, env: { FLASH_AP_HINT_MS: '1500', FLASH_AP_WAIT_MS: '4000' } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'cloudcutter'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /cloudcutter has been looking for the plug for .*: it is probably not in AP mode \(a slow blink\)\. Hold the button/);
    assert.match(r.out, /✗ cloudcutter failed: the plug did not show up in AP mode within/);
    assert.match(r.out, /--from cloudcutter/);
  } finally {
    await b.close();
  }
});

test('the AP-mode instructions come when cloudcutter looks for the plug, not before its image build and checks', async () => {
  const b = await startBench();
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'cloudcutter'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    const at = (re: RegExp) => r.out.search(re);
    assert.ok(at(/│ Successfully built docker image/) < at(/Put the plug into AP mode now:/));
    assert.ok(at(/│ Safety checks complete\./) < at(/Put the plug into AP mode now:/));
    assert.ok(at(/│ Place your device in AP \(slow blink\) mode/) < at(/Put the plug into AP mode now:/));
    assert.ok(at(/│ Power cycle and place your device in AP \(slow blink\) mode again/) <
      at(/Power-cycle the plug, then put the plug into AP mode again:/));
  } finally {
    await b.close();
  }
});

test("the MAC cloudcutter prints is not the plug's: the one Kickstart plug on the LAN is taken, and its MAC kept", async () => {
  const b = await startBench({ sim: { tuyaMac: 'D8:1F:12:3A:4B:5C' },
    answers: { manual_wifi_done: () => wifiByHand(b.sim) } });
  try {
    const r = await runInProcess([RECIPE, ...b.args, '--manual-wifi'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    const mac = b.sim.mac.match(/../g)!.join(':');
    assert.match(r.out, new RegExp(`has MAC ${mac}, not the D8:1F:12:3A:4B:5C cloudcutter printed .*taking it`));
    const journal = JSON.parse(fs.readFileSync(path.join(b.out, '.flash', 'status-plug-01.json'), 'utf8'));
    assert.equal(journal.facts.mac, mac);
    assert.equal(journal.facts.tuyaMac, 'D8:1F:12:3A:4B:5C');
    assert.equal(b.sim.phase, 'final');
  } finally {
    await b.close();
  }
});

test('two Kickstart plugs and no MAC to tell them apart: the user chooses (MAC and IP shown)', async () => {
  const other = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', lanIp: '127.0.0.2', timeScale: BENCH_TIME_SCALE });
  // On the same network: the bench's plug answers mDNS on the other plug's port.
  const b = await startBench({ sim: { phase: 'kickstart-ap', mdnsPort: other.mdnsPort }, answers: {
    manual_wifi_done: () => wifiByHand(b.sim),
    kickstart_plug: (q) => q.choices!.find((c) => c.includes(b.sim.mac.match(/../g)!.join(':')))!,
  } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--manual-wifi', '--only', 'kickstart'], b.env, b.user);
    assert.equal(r.code, 0, r.out);
    const q = b.user.asked.find((x) => x.id === 'kickstart_plug');
    assert.ok(q, 'the user was asked');
    assert.ok(q.choices!.some((c) => c.includes('at 127.0.0.2')), q.choices!.join(' | '));
    assert.match(r.out, /found kickstart-bk7231n at 127\.0\.0\.1/);
  } finally {
    await b.close();
    await other.close();
  }
});

test('a newer Kickstart (ESPHome 2026.7: entities by name only) still gets its pins checked; every POST status counts', async () => {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'kickstart-lan', mdnsInterface: false, esphomeVersion: '2026.7.0' });
  const world = await makeFakeWorld({});
  const user = virtualUser(sim);
  try {
    const b = { out: path.join(world.dir, 'esphome') };
    assert.equal((await runInProcess([RECIPE, '--only', 'config', '--yes', '--out', b.out],
      { ...world.env, FLASH_WIFI_SSID: HOME.ssid, FLASH_WIFI_PASSWORD: HOME.password })).code, 0);
    const r = await runInProcess([RECIPE, '--only', 'pins', '--check-pins', '--device-ip', '127.0.0.1', '--out', b.out],
      { ...world.env, FLASH_DEVICE_HTTP_PORT: String(sim.port) }, user);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /relay +P24 +the relay clicked/);
    assert.match(r.out, /button +P8 +press seen/);
  } finally {
    user.stop();
    await sim.close();
    await world.cleanup();
  }
});

test('a newer Kickstart (ESPHome 2025.7+) refusing the firmware says only "Update Failed!": reported sensibly', async () => {
  const b = await startBench({ sim: { phase: 'kickstart-lan', esphomeVersion: '2025.7.0', faults: { updateFails: 'Bad Family ID' } } });
  try {
    await configured(b);
    const r = await runInProcess([RECIPE, ...b.args, '--yes', '--only', 'upload', '--device-ip', '127.0.0.1'], b.env, b.user);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /the plug refused the firmware and gave no reason \(Kickstart built on ESPHome 2025\.7 or later only says "Update Failed!"\)/);
    assert.doesNotMatch(r.out, /refused the firmware: !/);
    assert.deepEqual(b.sim.uploads.map((u) => u.result), ['Update Failed!']);
  } finally {
    await b.close();
  }
});
