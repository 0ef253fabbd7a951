// The fake-tool server: the fake nmcli and ss, and the one-shot calls of the fake docker and esphome (a listing, a
// version, a config check), answered in a worker thread of the test process that made the world, instead of by a
// node process each: starting node costs a tenth of a second of CPU or more, and a test run makes about a thousand
// such calls. The tool's own code runs as it does in a process (common.mjs gives it the call's environment,
// directory and output, and ends it at exit()); the world's bin/ wrapper, a bash script, sends the call and prints
// the answer. Calls that read a terminal, take signals or run for long (docker run, esphome compile, cloudcutter)
// stay processes of their own.
//
// A call: NUL-terminated fields tool, cwd, FAKE_WORLD, FAKE_LOG, argc, argv... The answer: "CODE STDERR_BYTES\n",
// stderr, then stdout until the connection ends.
import net from 'node:net';
import { parentPort } from 'node:worker_threads';
import { served } from './common.mjs';

const MODULES = { nmcli: './nmcli.mjs', ss: './ss.mjs', docker: './docker.mjs', esphome: './esphome.mjs' };

const server = net.createServer((socket) => {
  let request = Buffer.alloc(0);
  socket.on('error', () => { /* the caller was stopped: its answer goes nowhere */ });
  socket.on('data', (chunk) => {
    request = Buffer.concat([request, chunk]);
    const fields = [];
    for (let at = 0, nul; (nul = request.indexOf(0, at)) >= 0; at = nul + 1)
      fields.push(request.toString('utf8', at, nul));
    if (fields.length < 5 || fields.length < 5 + Number(fields[4])) return;
    socket.removeAllListeners('data');
    const [tool, cwd, world, log, , ...argv] = fields;
    void answer(socket, tool, { cwd, env: { FAKE_WORLD: world, FAKE_LOG: log } }, argv);
  });
});

async function answer(socket, tool, call, argv) {
  const out = [];
  const err = [];
  const bytes = (parts) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(String(p)))));
  const code = await new Promise((resolve) => {
    const store = { ...call, out: (text) => out.push(text), err: (text) => err.push(text), exit: resolve };
    served.run(store, async () => {
      if (!MODULES[tool]) throw new Error(`unknown tool ${tool}`);
      const { main } = await import(MODULES[tool]);
      await main(argv);
    }).then(() => resolve(0), (e) => {
      err.push(`fake ${tool}: ${e?.stack ?? e}\n`);
      resolve(70);
    });
  });
  const stderr = bytes(err);
  socket.end(Buffer.concat([Buffer.from(`${code} ${stderr.length}\n`), stderr, bytes(out)]));
}

server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
