// Runs one simulated plug in its own process, for fakes and demos:
//   node --import tsx test/sim/main.ts --mcu bk7231n [--phase tuya] [--port N] [--home-ssid S --home-password P]
//        [--mac HEX12] [--tuya-mac HEX12] [--join-ms N] [--reboot-ms N] [--time-scale X]
//        [--no-mdns | --mdns-interface IP] [--faults JSON] [--esphome-version V] [--mdns-stops-after-ms N]
//        [--wiring JSON | --tuya-device FILE]
// --wiring takes a Wiring object ({"relays":{"P8":1},"buttons":{"P7":0},...}); --tuya-device a cloudcutter device
// file, whose device_configuration (Tuya's pin keys) and TuyaMCU (tuyamcu_baud + schemas) become the wiring
// (wiringFromDevice). Default: the Status plug's.
// Prints one JSON line {"url","port","mac","apiPort","mcu","phase"} on stdout, then runs until SIGTERM/SIGINT.
// Control it over HTTP under /_sim/ (state, ap-mode, exploit, configure-wifi, flash-kickstart, power-cycle,
// press?ms=&pin=, flip?pin=, wait?phase=, faults).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { startSimPlug, wiringFromDevice, type DeviceWiringSource, type Phase, type SimFaults, type Wiring }
  from './plug.ts';
import type { Mcu } from '../firmware-files.ts';

const PHASES: Phase[] = ['tuya', 'kickstart-ap', 'kickstart-lan', 'final', 'off'];

function fail(message: string): never {
  process.stderr.write(`sim: ${message}\n`);
  process.exit(2);
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        mcu: { type: 'string' },
        phase: { type: 'string' },
        port: { type: 'string' },
        mac: { type: 'string' },
        'tuya-mac': { type: 'string' },
        'time-scale': { type: 'string' },
        'home-ssid': { type: 'string' },
        'home-password': { type: 'string' },
        'join-ms': { type: 'string' },
        'reboot-ms': { type: 'string' },
        'no-mdns': { type: 'boolean' },
        'mdns-interface': { type: 'string' },
        faults: { type: 'string' },
        'esphome-version': { type: 'string' },
        'mdns-stops-after-ms': { type: 'string' },
        wiring: { type: 'string' },
        'tuya-device': { type: 'string' },
      },
      strict: true,
    });
  } catch (e) {
    return fail((e as Error).message);
  }
})();

const mcu = values.mcu as Mcu | undefined;
if (mcu !== 'bk7231t' && mcu !== 'bk7231n') fail('--mcu bk7231t|bk7231n is required');
const phase = (values.phase ?? 'tuya') as Phase;
if (!PHASES.includes(phase)) fail(`--phase must be one of ${PHASES.join(', ')}`);
const num = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) fail(`${name} must be a whole number`);
  return n;
};
function positive(v: string): number {
  const n = Number(v);
  if (!(n > 0)) fail('--time-scale must be a positive number');
  return n;
}
if ((values['home-ssid'] === undefined) !== (values['home-password'] === undefined)) fail('--home-ssid and --home-password go together');
let faults: SimFaults | undefined;
if (values.faults) {
  try {
    faults = JSON.parse(values.faults) as SimFaults;
  } catch {
    fail('--faults must be a JSON object');
  }
}
let wiring: Wiring | undefined;
if (values.wiring !== undefined && values['tuya-device'] !== undefined) {
  fail('give --wiring or --tuya-device, not both');
}
if (values.wiring !== undefined) {
  try {
    wiring = JSON.parse(values.wiring) as Wiring;
  } catch {
    fail('--wiring must be a JSON object');
  }
  if (!wiring || typeof wiring !== 'object' || Array.isArray(wiring)) fail('--wiring must be a JSON object');
}
if (values['tuya-device'] !== undefined) {
  let device: DeviceWiringSource;
  try {
    device = JSON.parse(fs.readFileSync(values['tuya-device'], 'utf8')) as typeof device;
  } catch (e) {
    fail(`--tuya-device: ${(e as Error).message}`);
  }
  wiring = wiringFromDevice(device);
  if (!wiring.tuyaMcu && (!device.device_configuration || !Object.keys(device.device_configuration).length)) {
    fail(`--tuya-device: ${values['tuya-device']} has no device_configuration (no pins known) and no TuyaMCU`);
  }
}

const sim = await startSimPlug({
  mcu,
  phase,
  port: num(values.port, '--port'),
  mac: values.mac,
  tuyaMac: values['tuya-mac'],
  timeScale: values['time-scale'] === undefined ? undefined : positive(values['time-scale']),
  joinMs: num(values['join-ms'], '--join-ms'),
  rebootMs: num(values['reboot-ms'], '--reboot-ms'),
  mdnsInterface: values['no-mdns'] ? false : values['mdns-interface'],
  mdnsStopsAfterMs: num(values['mdns-stops-after-ms'], '--mdns-stops-after-ms'),
  esphomeVersion: values['esphome-version'],
  ...(values['home-ssid'] !== undefined ? { homeNetwork: { ssid: values['home-ssid'], password: values['home-password']! } } : {}),
  faults,
  wiring,
});
process.stdout.write(`${JSON.stringify({ url: sim.url, port: sim.port, mac: sim.mac, apiPort: sim.apiPort, mcu, phase: sim.phase })}\n`);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await sim.close();
  process.exitCode = 0;
  // Everything is closed, so the process ends by itself; this only guards against a stuck handle.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
