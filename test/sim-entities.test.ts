// The final device's entities over ESPHome's native API, through the npm client flash.ts uses
// (@2colors/esphome-native-api with initializeListEntities and initializeSubscribeStates) and byte by byte through the
// raw test client: ListEntities*Response per entity in ESPHome's order, then states (a value nobody published yet
// with missing_state), then each publication. On simulated boards: a DIN-rail switch with a latching relay and a
// BL0942, a TuyaMCU dimmer (right and wrong baud rate), an outlet with an HLW8032 read by cse7766.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startSimPlug, wiringFromDevice, wiringFromTuya, type SimPlug, type SimPlugOptions } from './sim/plug.ts';
import { fnv1Hash } from './sim/native-api.ts';
import { MSG, decodeAll, float32, noiseSession, proto } from './api-client.ts';
import { fixtureDevices } from './helpers.ts';

const KEY = crypto.randomBytes(32);
const device = (slug: string) => fixtureDevices().find((d) => d.slug === slug)!;

async function withFinal(o: Partial<SimPlugOptions>, fn: (sim: SimPlug) => Promise<void>): Promise<void> {
  const sim = await startSimPlug({ mcu: 'bk7231n', phase: 'final', mdnsInterface: false, finalVersion: '2025.5.1',
    final: { name: 'sim-device', friendlyName: 'Sim Device', board: 'cbu', apiKey: KEY.toString('base64') }, ...o });
  try {
    await fn(sim);
  } finally {
    await sim.close();
  }
}

interface ClientEntity {
  type: string; name: string; config: Record<string, unknown>; state?: Record<string, unknown>;
  on(event: 'state', cb: (s: Record<string, unknown>) => void): void;
  setState?(state: boolean): void;
}

/** The npm client, listing entities and subscribing to states; waitFor() resolves when a predicate holds. */
async function apiClient(port: number) {
  const { Client } = await import('@2colors/esphome-native-api');
  const client = new Client({ host: '127.0.0.1', port, encryptionKey: KEY.toString('base64'), reconnect: false,
    initializeDeviceInfo: true, initializeListEntities: true, initializeSubscribeStates: true }) as unknown as {
    connect(): void; disconnect(): void; on(event: string, listener: (arg: never) => void): void };
  const entities: ClientEntity[] = [];
  const states: { name: string; state: Record<string, unknown> }[] = [];
  const waiters: { pred: () => boolean; resolve: () => void }[] = [];
  let failure: Error | undefined;
  const check = () => {
    for (const w of [...waiters]) if (w.pred()) (waiters.splice(waiters.indexOf(w), 1), w.resolve());
  };
  client.on('newEntity', (e: never) => {
    const entity = e as ClientEntity;
    entities.push(entity);
    entity.on('state', (s) => (states.push({ name: entity.name, state: s }), check()));
    check();
  });
  client.on('error', (e: never) => (failure = e as Error));
  client.connect();
  const byName = (name: string) => entities.find((x) => x.name === name);
  return {
    entities, states, byName,
    /** The latest state the client holds for the entity named. */
    state: (name: string) => byName(name)?.state,
    waitFor(pred: () => boolean, what: string, ms = 5000): Promise<void> {
      if (pred()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms (error: ${failure?.message}); ` +
          `states: ${JSON.stringify(states.slice(-8))}`)), ms);
        waiters.push({ pred, resolve: () => (clearTimeout(t), resolve()) });
      });
    },
    close: () => client.disconnect(),
  };
}

const TONGOU = wiringFromTuya(device('tongou-to-q-sy1-jwt-din-rail-switch-with-energy-meter').device_configuration);
/** The shape of the config flash.ts generates for it (hbridge relay, BL0942 on UART1), polled every 500 ms. */
const TONGOU_CONFIG = {
  esphome: { name: 'sim-device', friendly_name: 'Sim Device' }, bk72xx: { board: 'cbu' },
  status_led: { pin: { number: 'P15', inverted: true } },
  uart: { id: 'energy_uart', rx_pin: 'P10', tx_pin: 'P11', baud_rate: 4800, stop_bits: 1 },
  sensor: [{ platform: 'bl0942', uart_id: 'energy_uart', update_interval: '500ms',
    voltage_reference: '15873.35944299', current_reference: '251213.46469622', voltage: { name: 'Voltage' },
    current: { name: 'Current' }, power: { name: 'Power' }, energy: { name: 'Energy' },
    frequency: { name: 'Frequency', accuracy_decimals: 2 } }],
  binary_sensor: [{ platform: 'gpio', id: 'button_1', pin: { number: 'P17', mode: 'INPUT_PULLUP', inverted: true },
    filters: [{ delayed_on: '50ms' }], on_press: [{ 'switch.toggle': 'relay_1' }] }],
  switch: [{ platform: 'hbridge', id: 'relay_1', name: 'Sim Device', restore_mode: 'RESTORE_DEFAULT_OFF',
    on_pin: 'P24', off_pin: 'P26', pulse_length: '60ms', on_turn_on: [{ 'light.turn_on': 'led_1' }],
    on_turn_off: [{ 'light.turn_off': 'led_1' }] }],
  text_sensor: [{ platform: 'libretiny', version: { name: 'LibreTiny Version' } }],
  output: [{ platform: 'gpio', id: 'led_1_output', pin: { number: 'P9', inverted: true } }],
  light: [{ platform: 'binary', id: 'led_1', output: 'led_1_output' }],
};

test('a DIN-rail switch: entities listed in ESPHome\'s order; the relay switched over the API pulses its coil; the ' +
  'BL0942 reading arrives with ESPHome\'s default references', async () => {
  await withFinal({ wiring: TONGOU, finalConfig: TONGOU_CONFIG }, async (sim) => {
    assert.deepEqual(sim.device!.unsupported, []);
    const c = await apiClient(sim.apiPort);
    try {
      // The first poll's readings (the initial states before them say missing_state), the relay's state.
      await c.waitFor(() => c.state('Frequency')?.missingState === false && c.state('Sim Device') !== undefined &&
        c.state('LibreTiny Version')?.missingState === false, 'readings');
      // Internal entities (the button, the LED light: an id without a name) are not listed.
      assert.deepEqual(c.entities.map((e) => [e.type, e.name]), [['Sensor', 'Voltage'], ['Sensor', 'Current'],
        ['Sensor', 'Power'], ['Sensor', 'Energy'], ['Sensor', 'Frequency'], ['Switch', 'Sim Device'],
        ['TextSensor', 'LibreTiny Version']]);
      const voltage = c.byName('Voltage')!.config;
      assert.deepEqual([voltage.objectId, voltage.key, voltage.unitOfMeasurement, voltage.accuracyDecimals,
        voltage.deviceClass, voltage.stateClass], ['voltage', fnv1Hash('voltage'), 'V', 1, 'voltage', 1]);
      assert.equal(c.byName('Energy')!.config.stateClass, 2, 'total_increasing');
      assert.equal(c.byName('Sim Device')!.config.objectId, 'sim_device');
      assert.match(String(c.state('LibreTiny Version')?.state), /^v1\.9\.1 on cbu, compiled at /);
      // The relay is open (RESTORE_DEFAULT_OFF, nothing saved): the meter sees the line voltage, no current.
      assert.equal(c.state('Sim Device')?.state, false);
      assert.ok(Math.abs(Number(c.state('Voltage')?.state) - 230) < 0.01, JSON.stringify(c.state('Voltage')));
      assert.equal(c.state('Current')?.state, 0);
      c.byName('Sim Device')!.setState!(true);
      await sim.waitForHardware((hw) => hw.relays[1]);
      assert.equal(sim.hardware.leds.blue, true, 'the relay LED follows');
      // The next poll: ESPHome's references read the load as it is (a board true to the datasheet).
      await c.waitFor(() => Math.abs(Number(c.state('Current')?.state) - 0.5) < 0.001 &&
        Math.abs(Number(c.state('Power')?.state) - 110) < 0.1, 'current and power readings');
      assert.equal(c.state('Sim Device')?.state, true);
      // The button (held 150 ms, past its 50 ms filter) switches it back: the off coil this time.
      await sim.pressButton(150, 'P17');
      await sim.waitForHardware((hw) => !hw.relays[1]);
      await c.waitFor(() => c.state('Sim Device')?.state === false, 'the switch off');
    } finally {
      c.close();
    }
  });
});

const DIMMER_CONFIG = (baud: number) => ({
  esphome: { name: 'sim-device', friendly_name: 'Sim Device' }, bk72xx: { board: 'generic-bk7231n-qfn32-tuya' },
  uart: { id: 'tuya_uart', rx_pin: 'P10', tx_pin: 'P11', baud_rate: String(baud) }, tuya: { uart_id: 'tuya_uart' },
  number: [{ platform: 'tuya', name: 'Datapoint 6', number_datapoint: 6, min_value: 0, max_value: 86400, step: 1 }],
  select: [{ platform: 'tuya', name: 'Datapoint 4', enum_datapoint: 4, options: { 0: 'LED', 1: 'incandescent',
    2: 'halogen' } }],
  light: [{ platform: 'tuya', id: 'light_1', name: 'Sim Device', switch_datapoint: 1, dimmer_datapoint: 2,
    min_value_datapoint: 3, min_value: 10, max_value: 1000 }],
});
const DIMMER = device('moes-ms-105-dimmer-switch');

test('a TuyaMCU dimmer: light, number and select take the MCU\'s datapoints; a knob turned shows at once', async () => {
  await withFinal({ wiring: wiringFromDevice(DIMMER), finalConfig: DIMMER_CONFIG(9600) }, async (sim) => {
    const c = await apiClient(sim.apiPort);
    try {
      assert.deepEqual(sim.device!.unsupported, []);
      await c.waitFor(() => c.state('Datapoint 6')?.missingState === false && c.state('Datapoint 4')?.missingState ===
        false && c.state('Sim Device')?.brightness === 0.5049999952316284, 'datapoint states');
      assert.deepEqual(c.entities.map((e) => [e.type, e.name]), [['Light', 'Sim Device'], ['Number', 'Datapoint 6'],
        ['Select', 'Datapoint 4']]);
      assert.deepEqual(c.byName('Sim Device')!.config.supportedColorModesList, [2]);
      assert.deepEqual(c.byName('Datapoint 4')!.config.optionsList, ['LED', 'incandescent', 'halogen']);
      assert.deepEqual([c.state('Datapoint 6')?.state, c.state('Datapoint 4')?.state], [43200, 'LED']);
      // The user turns the knob and switches it on: the MCU reports on its own.
      sim.tuyaMcu!.setDatapoint(2, 1000);
      sim.tuyaMcu!.setDatapoint(1, true);
      await c.waitFor(() => c.state('Sim Device')?.state === true && c.state('Sim Device')?.brightness === 1,
        'the light on at full brightness');
    } finally {
      c.close();
    }
  });
});

test('a TuyaMCU at another baud rate than the config\'s: no datapoint ever, every tuya entity missing_state',
  async () => {
    // The MCU talks 115200, the firmware listens at 9600: what each side reads is garbage.
    await withFinal({ wiring: wiringFromDevice(DIMMER, { baud: 115200 }), finalConfig: DIMMER_CONFIG(9600) },
      async (sim) => {
        await new Promise<void>((resolve) => sim.device!.events.on('tuya', (what) => what === 'failed' && resolve()));
        assert.ok(sim.device!.logs.includes('[E][tuya]: Initialization failed at init_state 0'), 'logged');
        const c = await apiClient(sim.apiPort);
        try {
          await c.waitFor(() => c.states.length === 3, 'the three initial states');
          assert.deepEqual([c.state('Datapoint 6')?.missingState, c.state('Datapoint 4')?.missingState], [true, true]);
          assert.ok(Number.isNaN(c.state('Datapoint 6')?.state), 'a number without a state is NaN');
          assert.deepEqual([c.state('Sim Device')?.state, c.state('Sim Device')?.brightness], [false, 1]);
          assert.equal(sim.tuyaMcu!.received.length, 0, 'the MCU never understood a frame');
        } finally {
          c.close();
        }
      });
  });

test('an HLW8032 read by cse7766: no load flags an overflow and every frame is dropped, voltage too; with the ' +
  'relay on the voltage arrives (× the divider)', async () => {
  const wiring = wiringFromTuya(device('deta-6920ha-double-touch-outlet-v1.1.4').device_configuration);
  const config = {
    esphome: { name: 'sim-device', friendly_name: 'Sim Device' }, bk72xx: { board: 'wb2s' },
    uart: { id: 'energy_uart', rx_pin: 'P10', baud_rate: 4800, parity: 'EVEN' },
    sensor: [{ platform: 'cse7766', uart_id: 'energy_uart',
      voltage: { name: 'Voltage', filters: [{ multiply: '1.88' }] }, current: { name: 'Current' },
      power: { name: 'Power', filters: [{ multiply: '1.88' }] } }],
    switch: [{ platform: 'gpio', id: 'relay_1', name: 'Socket 1', restore_mode: 'RESTORE_DEFAULT_OFF', pin: 'P6' }],
  };
  await withFinal({ wiring, finalConfig: config }, async (sim) => {
    const dropped = () => sim.device!.logs.some((l) => l === '[E][cse7766]:   Current cycle exceeds range.');
    await new Promise<void>((resolve) => (dropped() ? resolve() : sim.device!.events.on('log', () => dropped() &&
      resolve())));
    const c = await apiClient(sim.apiPort);
    try {
      await c.waitFor(() => c.states.length >= 4, 'initial states');
      assert.equal(c.state('Voltage')?.missingState, true, 'a dropped frame publishes nothing, voltage included');
      c.byName('Socket 1')!.setState!(true);
      await c.waitFor(() => Math.abs(Number(c.state('Voltage')?.state) - 230) < 0.3 &&
        Math.abs(Number(c.state('Current')?.state) - 0.5) < 0.01 &&
        Math.abs(Number(c.state('Power')?.state) - 110) < 0.3, 'voltage, current and power readings');
    } finally {
      c.close();
    }
  });
});

/** A raw Noise session that has said Hello (API `major.minor`) and, where the version wants it, Connect. */
async function rawSession(sim: SimPlug, o: { api?: [number, number]; connect?: boolean } = {}) {
  const { session } = await noiseSession(sim.apiPort, KEY);
  assert.ok(session, 'a Noise session');
  session.msg(MSG.HelloRequest, proto([[1, 'raw'], [2, o.api?.[0] ?? 1], [3, o.api?.[1] ?? 10]]));
  assert.equal((await session.next())?.type, MSG.HelloResponse);
  if (o.connect) {
    session.msg(MSG.ConnectRequest, Buffer.alloc(0));
    assert.equal((await session.next())?.type, MSG.ConnectResponse);
  }
  return session;
}

const SWITCH_ONLY = {
  esphome: { name: 'sim-device', friendly_name: 'Sim Device' },
  switch: [{ platform: 'gpio', id: 'relay_1', name: 'Relay', pin: 'P24' }],
  sensor: [{ platform: 'tuya', name: 'Temperature', sensor_datapoint: 1 }], tuya: {},
};

test('byte by byte: unique_id up to 2025.7, object_id until 2026.1 clients of API 1.14; states with missing_state',
  async () => {
    const key = fnv1Hash('relay');
    const le = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return [...b]; };
    const str = (field: number, s: string) => [(field << 3) | 2, s.length, ...Buffer.from(s)];
    await withFinal({ finalConfig: SWITCH_ONLY, finalVersion: '2025.5.1' }, async (sim) => {
      const s = await rawSession(sim, { connect: true });
      s.msg(MSG.ListEntitiesRequest);
      const sensor = await s.next();
      assert.equal(sensor?.type, MSG.ListEntitiesSensorResponse, 'sensors before switches');
      const relay = await s.next();
      assert.equal(relay?.type, MSG.ListEntitiesSwitchResponse);
      assert.deepEqual([...relay!.body], [...str(1, 'relay'), 0x15, ...le(key), ...str(3, 'Relay'),
        ...str(4, 'sim-deviceswitchrelay')]);
      assert.equal((await s.next())?.type, MSG.ListEntitiesDoneResponse);
      s.msg(MSG.SubscribeStatesRequest);
      const temperature = await s.next();
      // No report (no MCU on this board): NaN (0x7FC00000) and missing_state.
      assert.deepEqual([...temperature!.body], [0x0d, ...le(fnv1Hash('temperature')), 0x15, 0x00, 0x00, 0xc0, 0x7f,
        0x18, 0x01]);
      assert.deepEqual(decodeAll(temperature!.body).map(([f]) => f), [1, 2, 3]);
      assert.ok(Number.isNaN(float32(decodeAll(temperature!.body)[1][1] as number)), 'NaN');
      // A switch has no missing_state: off is just the key.
      const off = await s.next();
      assert.deepEqual([off?.type, ...off!.body], [MSG.SwitchStateResponse, 0x0d, ...le(key)]);
      s.msg(MSG.SwitchCommandRequest, Buffer.from([0x0d, ...le(key), 0x10, 0x01]));
      const on = await s.next();
      assert.deepEqual([on?.type, ...on!.body], [MSG.SwitchStateResponse, 0x0d, ...le(key), 0x10, 0x01]);
      assert.equal(sim.hardware.levels.P24, 'HIGH');
      s.conn.end();
    });
    await withFinal({ finalConfig: SWITCH_ONLY, finalVersion: '2025.8.0' }, async (sim) => {
      const s = await rawSession(sim);
      s.msg(MSG.ListEntitiesRequest);
      await s.next();
      assert.deepEqual([...(await s.next())!.body], [...str(1, 'relay'), 0x15, ...le(key), ...str(3, 'Relay')]);
      s.conn.end();
    });
    for (const [api, objectId] of [[[1, 13], true], [[1, 14], false]] as const) {
      await withFinal({ finalConfig: SWITCH_ONLY, finalVersion: '2026.1.0' }, async (sim) => {
        const s = await rawSession(sim, { api: [...api] });
        s.msg(MSG.ListEntitiesRequest);
        await s.next();
        const body = [...(await s.next())!.body];
        assert.deepEqual(body, [...(objectId ? str(1, 'relay') : []), 0x15, ...le(key), ...str(3, 'Relay')]);
        s.conn.end();
      });
    }
  });
