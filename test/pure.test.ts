// The pure helpers behind the steps: parsing tool output, choosing profiles, naming plugs, explaining failures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  busyPorts, parseNmcliTerse, parsePortalConfig, diagnoseCloudcutter, findProfile, suggestProfiles,
  batchNames, compileErrors, explainOtaFailure, stepsToRun, redact, cloudcutterArgv, CLOUDCUTTER_DIAGNOSES, esphomeArgv, formatMac,
  type Options,
} from '../flash.ts';
import { CLOUDCUTTER_API_FIXTURES } from './helpers.ts';

test('busyPorts reads `ss -H -lntup` and names the process holding each cloudcutter port', () => {
  const ss = [
    'udp   UNCONN 0      0            0.0.0.0:53         0.0.0.0:*    users:(("dnsmasq",pid=812,fd=4))',
    'udp   UNCONN 0      0            0.0.0.0:5353       0.0.0.0:*    users:(("avahi-daemon",pid=500,fd=12))',
    'tcp   LISTEN 0      511          0.0.0.0:80         0.0.0.0:*    users:(("nginx",pid=900,fd=6),("nginx",pid=901,fd=6))',
    'tcp   LISTEN 0      511             [::]:80            [::]:*    users:(("nginx",pid=900,fd=7))',
    'tcp   LISTEN 0      4096       127.0.0.1:1883       0.0.0.0:*',
    'tcp   LISTEN 0      4096       127.0.0.1:53         0.0.0.0:*    users:(("systemd-resolve",pid=1,fd=1))',
  ].join('\n');
  assert.deepEqual(busyPorts(ss), [
    { port: 53, proto: 'udp', process: 'dnsmasq (pid 812)', addresses: ['0.0.0.0'], loopbackOnly: false },
    { port: 80, proto: 'tcp', process: 'nginx (pid 900)', addresses: ['0.0.0.0', '::'], loopbackOnly: false },
    { port: 1883, proto: 'tcp', process: 'another program', addresses: ['127.0.0.1'], loopbackOnly: true },
  ]);
  // A stock Ubuntu: systemd-resolved on 127.0.0.53 (scoped to lo) and 127.0.0.54 only.
  const resolved = busyPorts([
    'udp   UNCONN 0      0         127.0.0.54:53     0.0.0.0:*    users:(("systemd-resolve",pid=612,fd=19))',
    'udp   UNCONN 0      0      127.0.0.53%lo:53     0.0.0.0:*    users:(("systemd-resolve",pid=612,fd=17))',
  ].join('\n'));
  assert.deepEqual(resolved, [{ port: 53, proto: 'udp', process: 'systemd-resolve (pid 612)', addresses: ['127.0.0.54', '127.0.0.53'],
    loopbackOnly: true }]);
  assert.deepEqual(busyPorts(''), []);
});

test('nmcli terse output splits on unescaped colons', () => {
  assert.deepEqual(parseNmcliTerse('wlan0:wifi:connected\neth0:ethernet:connected\nmy\\:wifi:wifi:disconnected\n'),
    [['wlan0', 'wifi', 'connected'], ['eth0', 'ethernet', 'connected'], ['my:wifi', 'wifi', 'disconnected']]);
});

test('the captive portal list is read even when an SSID breaks the JSON (Kickstart does not escape it)', () => {
  assert.deepEqual(parsePortalConfig('{"mac":"AA:BB:CC:00:11:22","name":"kickstart-bk7231n","aps":[{},{"ssid":"HomeNet","rssi":-50,"lock":1}]}'),
    { mac: 'AA:BB:CC:00:11:22', ssids: ['HomeNet'] });
  assert.deepEqual(parsePortalConfig('{"mac":"AA","aps":[{},{"ssid":"Bob"s "Net"","rssi":-60,"lock":1},{"ssid":"Other","rssi":-70,"lock":0}]}'),
    { mac: 'AA', ssids: ['Bob"s "Net"', 'Other'] });
});

test('each cloudcutter failure message gets its diagnosis; chip trouble names the other recipe', () => {
  const other = ['recipes/23A.yaml'];
  const cases: [string, RegExp][] = [
    ['[!] The profile you selected did not result in a successful exploit.', /exploit did not work[\s\S]*/],
    ['Firmware file ESPHome-Kickstart_bk7231n.ug.bin is not valid for the chosen profile type of BK7231T', /different chip/],
    // The AP was found, but five joins failed (or its gateway was not the plug's): not "not in AP mode".
    ['Error, could not connect to SSID.', /found the plug's access point but could not join it/],
    ['Failed to connect, please run this script again', /could not join it in five tries/],
    ['Failed to build Docker image', /Docker could not build/],
    ['[!] Unable to auto-detect wifi adapter.', /no Wi-Fi adapter/],
    ['Oh no, something went wrong with updating firmware!', /sending it the firmware failed/],
  ];
  for (const [out, what] of cases) {
    const d = diagnoseCloudcutter(`Scanning for open Tuya SmartLife AP\n${out}\n`, 1, 'bk7231t', other);
    assert.match(d.what, what, out);
  }
  assert.match(diagnoseCloudcutter('is not valid for the chosen profile type', 1, 'bk7231t', other).fix, /this looks like the other MCU \(BK7231N\): try recipe recipes\/23A\.yaml/);
  assert.match(diagnoseCloudcutter('did not result in a successful exploit', 1, 'bk7231t', other).fix, /Device Update[\s\S]*try recipe recipes\/23A\.yaml/);
  assert.match(diagnoseCloudcutter('weird', 3, 'bk7231t', other).what, /exit code 3/);
  assert.equal(CLOUDCUTTER_DIAGNOSES.length, 6);
});

test('profiles are found by menu label or slug in the real profiles.json; near misses are suggested', () => {
  const list = JSON.parse(fs.readFileSync(path.join(CLOUDCUTTER_API_FIXTURES, 'profiles.json'), 'utf8'));
  assert.equal(findProfile(list, '1.1.8 - BK7231N / oem_bk7231n_plug')?.slug, 'oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00');
  assert.equal(findProfile(list, '1.0.7 - BK7231T / oem_bk7231s_rnd_switch')?.slug, 'oem-bk7231s-rnd-switch-1.0.7-sdk-2.0.0-30.06');
  assert.equal(findProfile(list, '  1.1.8 -  BK7231N / OEM_BK7231N_PLUG ')?.slug, 'oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00');
  assert.equal(findProfile(list, 'oem-bk7231n-plug-1.1.8-sdk-2.3.1-40.00')?.name, '1.1.8 - BK7231N');
  assert.equal(findProfile(list, '9.9.9 - BK7231N / oem_bk7231n_plug'), undefined);
  const near = suggestProfiles(list, '9.9.9 - BK7231N / oem_bk7231n_plug', 'bk7231n');
  assert.ok(near.includes('1.1.8 - BK7231N / oem_bk7231n_plug') || near.some((l) => l.endsWith('/ oem_bk7231n_plug')), near.join('|'));
});

test('batch names continue after the highest existing one', () => {
  const subs = { device_name: 'status-plug-01', friendly_name: 'Status Plug 01' };
  assert.deepEqual(batchNames(subs, [], 2), [
    { device_name: 'status-plug-01', friendly_name: 'Status Plug 01' },
    { device_name: 'status-plug-02', friendly_name: 'Status Plug 02' },
  ]);
  assert.deepEqual(batchNames(subs, ['status-plug-01', 'status-plug-07', 'other-09'], 1), [{ device_name: 'status-plug-08', friendly_name: 'Status Plug 08' }]);
  assert.deepEqual(batchNames({ device_name: 'kitchen', friendly_name: 'Kitchen' }, ['kitchen-03'], 1), [{ device_name: 'kitchen-04', friendly_name: 'Kitchen 04' }]);
});

test('compile errors: the ERROR block, else the tail', () => {
  const log = 'INFO Reading configuration\nINFO Compiling\nERROR Error while reading config: Invalid YAML syntax:\n  mapping values are not allowed here\nINFO done';
  assert.match(compileErrors(log), /^ERROR Error while reading config[\s\S]*mapping values/);
  assert.equal(compileErrors('a\nb\nc'), 'a\nb\nc');
});

test('LibreTiny OTA failure codes are explained', () => {
  assert.match(explainOtaFailure('ard=11,uf2=3'), /another chip/);
  assert.match(explainOtaFailure('ard=8,uf2=2'), /not a UF2/);
  assert.match(explainOtaFailure('Bad Family ID'), /another chip/);
  assert.match(explainOtaFailure('Bad Magic Number'), /not a UF2/);
  assert.equal(explainOtaFailure('something'), '');
});

test('steps: --only, --from (the preflight still first), pins only with --check-pins', () => {
  const names = (o: Parameters<typeof stepsToRun>[0]) => stepsToRun(o).map((s) => s.name);
  assert.deepEqual(names({ checkPins: false }), ['check', 'config', 'compile', 'cloudcutter', 'kickstart', 'upload', 'verify']);
  assert.deepEqual(names({ checkPins: true, from: 'kickstart' }), ['check', 'kickstart', 'pins', 'upload', 'verify']);
  assert.deepEqual(names({ checkPins: false, only: 'config' }), ['config']);
});

test('redact hides every registered secret, longest first', () => {
  assert.equal(redact('key abcdefgh and abcd', ['abcd', 'abcdefgh']), 'key *** and ***');
});

test('cloudcutter is never given -r, and gets -p, -f and -w', () => {
  const argv = cloudcutterArgv('minoston-mp22wp-outdoor-plug', 'ESPHome-Kickstart-v25.05.28_bk7231n_app.ota.ug.bin', 'wlan1');
  assert.deepEqual(argv.slice(argv.indexOf('./tuya-cloudcutter.sh')), ['./tuya-cloudcutter.sh', '-p', 'minoston-mp22wp-outdoor-plug', '-f', 'ESPHome-Kickstart-v25.05.28_bk7231n_app.ota.ug.bin', '-w', 'wlan1']);
  assert.ok(!argv.includes('-r'));
});

test('esphome runs as the CLI or the Docker image (with --init to stop on Ctrl+C, host network to upload)', () => {
  const ctx = { opts: { out: '/home/me/esphome' } as Options, deviceName: 'status-plug-01' };
  assert.deepEqual(esphomeArgv(ctx, 'local', 'compile'), ['esphome', 'compile', '/home/me/esphome/status-plug-01.yaml']);
  assert.deepEqual(esphomeArgv(ctx, 'docker', 'compile'),
    ['docker', 'run', '--rm', '--init', '-v', '/home/me/esphome:/config', 'ghcr.io/esphome/esphome', 'compile', 'status-plug-01.yaml']);
  assert.deepEqual(esphomeArgv(ctx, 'docker', 'upload', '--device', '192.168.1.50'),
    ['docker', 'run', '--rm', '--init', '--network', 'host', '-v', '/home/me/esphome:/config', 'ghcr.io/esphome/esphome', 'upload', 'status-plug-01.yaml', '--device', '192.168.1.50']);
});

test('one MAC spelling whichever tool printed it', () => {
  assert.equal(formatMac('c8478caa5062'), 'C8:47:8C:AA:50:62');
  assert.equal(formatMac('C8:47:8C:AA:50:62'), 'C8:47:8C:AA:50:62');
  assert.equal(formatMac('c8-47-8c-aa-50'), undefined);
  assert.equal(formatMac(undefined), undefined);
});
