// Fake `docker` CLI (28.x) with the ghcr.io/esphome/esphome image. `docker run ... esphome-image
// compile NAME.yaml` runs the fake esphome with the container's paths mapped through the -v mounts.
// Reproduces the daemon-down texts (docker info, run, image inspect), the named-volume trap of a
// relative -v source, and signal handling of an attached `docker run`: SIGINT is forwarded (ESPHome
// exits 1); SIGTERM is forwarded to PID 1, which ignores it unless the run has --init (then 143).
import fs from 'node:fs';
import path from 'node:path';
import { world, out, err, logCall, readState, updateState, exit, sleep } from './common.mjs';

const DAEMON_DOWN = 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?';
const ESPHOME_REPO = 'ghcr.io/esphome/esphome';
const CLIENT_VERSION = '28.1.1';

function normImage(ref) {
  let r = ref;
  if (r.startsWith('docker.io/')) r = r.slice('docker.io/'.length);
  const at = r.indexOf('@');
  if (at >= 0) r = r.slice(0, at);
  const slash = r.lastIndexOf('/');
  const colon = r.lastIndexOf(':');
  return colon > slash ? r : `${r}:latest`;
}
const isEsphome = (ref) => normImage(ref).startsWith(`${ESPHOME_REPO}:`);

export async function main(argv) {
  const w = world();
  logCall('docker', argv);
  const d = w.docker ?? {};
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const a = argv[i];
    if (a === '-v' || a === '--version') { out(`Docker version ${CLIENT_VERSION}, build 4eba377\n`); return exit(0); }
    if (['-H', '--host', '--context', '-c', '-l', '--log-level', '--config'].includes(a)) i++;
  }
  const cmd = argv[i];
  let args = argv.slice(i + 1);
  let sub = cmd;
  if (cmd === 'image' || cmd === 'container' || cmd === 'system') {
    sub = `${cmd} ${args[0]}`;
    args = args.slice(1);
  }
  const down = async (what) => {
    err(`docker: ${DAEMON_DOWN}\n\nRun 'docker ${what} --help' for more information\n`);
    return exit(125);
  };
  const images = () => readState(w).images ?? [];

  switch (sub) {
    case 'info':
    case 'system info': {
      const fi = args.findIndex((a) => a === '-f' || a === '--format' || a.startsWith('--format='));
      const format = fi < 0 ? undefined : args[fi].includes('=') ? args[fi].split(/=(.*)/s)[1] : args[fi + 1];
      if (format !== undefined) {
        // docker/cli cli/command/system/info.go: with --format the server error goes to stderr and
        // the template is still rendered from an empty Info: exit 0 (docker/cli#5900)
        if (!d.daemon) err(DAEMON_DOWN + '\n');
        const info = d.daemon ? { ServerVersion: '28.1.1', OperatingSystem: 'Ubuntu 24.04.2 LTS', Architecture: 'x86_64', NCPU: 8 } : {};
        const rendered = format === 'json' || format === '{{json .}}'
          ? JSON.stringify(info)
          : format.replace(/\{\{\s*(?:json\s+)?\.([A-Za-z]+)\s*\}\}/g, (_, k) => (info[k] ?? '').toString());
        out(rendered + '\n');
        return exit(0);
      }
      out(`Client: Docker Engine - Community\n Version:    ${CLIENT_VERSION}\n Context:    default\n Debug Mode: false\n\nServer:\n`);
      if (!d.daemon) {
        err(`ERROR: ${DAEMON_DOWN}\nerrors pretty printing info\n`);
        return exit(1);
      }
      out(` Containers: 0\n  Running: 0\n  Paused: 0\n  Stopped: 0\n Images: ${images().length}\n Server Version: 28.1.1\n Storage Driver: overlay2\n Operating System: Ubuntu 24.04.2 LTS\n Architecture: x86_64\n\n`);
      return exit(0);
    }
    case 'version': {
      out(`Client: Docker Engine - Community\n Version:           ${CLIENT_VERSION}\n API version:       1.49\n`);
      if (!d.daemon) { err(DAEMON_DOWN + '\n'); return exit(1); }
      out('\nServer: Docker Engine - Community\n Engine:\n  Version:          28.1.1\n');
      return exit(0);
    }
    case 'image inspect':
    case 'inspect': {
      if (!d.daemon) { err(`${DAEMON_DOWN}\n`); return exit(1); }
      const refs = args.filter((a) => !a.startsWith('-'));
      const found = refs.filter((r) => images().includes(normImage(r)));
      out(JSON.stringify(found.map((r) => ({ Id: 'sha256:4f1c1d0c1b5e8e9a', RepoTags: [normImage(r)], Os: 'linux', Architecture: 'amd64' })), null, 4) + '\n');
      const missing = refs.filter((r) => !images().includes(normImage(r)));
      if (missing.length) {
        for (const m of missing) err(`Error response from daemon: No such image: ${normImage(m)}\n`);
        return exit(1);
      }
      return exit(0);
    }
    case 'images':
    case 'image ls': {
      if (!d.daemon) { err(`${DAEMON_DOWN}\n`); return exit(1); }
      const quiet = args.includes('-q') || args.includes('--quiet');
      const ref = args.find((a) => !a.startsWith('-'));
      const list = images().filter((im) => !ref || im === normImage(ref) || im.startsWith(`${ref}:`));
      if (!quiet) out('REPOSITORY                TAG       IMAGE ID       CREATED       SIZE\n');
      for (const im of list) out(quiet ? '4f1c1d0c1b5e\n' : `${im.split(':')[0].padEnd(26)}${im.split(':')[1].padEnd(10)}4f1c1d0c1b5e   2 weeks ago   1.21GB\n`);
      return exit(0);
    }
    case 'pull':
    case 'image pull': {
      if (!d.daemon) return down('pull');
      const ref = args.find((a) => !a.startsWith('-'));
      if (!ref || !isEsphome(ref)) {
        err(`Error response from daemon: pull access denied for ${ref}, repository does not exist or may require 'docker login'\n`);
        return exit(1);
      }
      pullLines(ref);
      updateState(w, (s) => { s.images = [...new Set([...(s.images ?? []), normImage(ref)])]; });
      return exit(0);
    }
    case 'ps':
    case 'container ls': {
      if (!d.daemon) { err(`${DAEMON_DOWN}\n`); return exit(1); }
      const quiet = args.includes('-q');
      if (!quiet) out('CONTAINER ID   IMAGE                     COMMAND                  CREATED         STATUS         PORTS     NAMES\n');
      for (const [name, c] of Object.entries(readState(w).containers ?? {})) {
        if (!alive(c.pid)) continue;
        out(quiet ? `${c.id}\n` : `${c.id}   ${c.image.padEnd(25)} "/entrypoint.sh ${c.cmd}"   5 seconds ago   Up 4 seconds             ${name}\n`);
      }
      return exit(0);
    }
    case 'stop':
    case 'kill':
    case 'rm':
    case 'container stop':
    case 'container kill':
    case 'container rm': {
      if (!d.daemon) { err(`${DAEMON_DOWN}\n`); return exit(1); }
      const verb = sub.replace('container ', '');
      let rc = 0;
      for (const name of args.filter((a) => !a.startsWith('-'))) {
        const c = (readState(w).containers ?? {})[name];
        if (!c || !alive(c.pid)) {
          err(`Error response from daemon: No such container: ${name}\n`);
          rc = 1;
          continue;
        }
        if (verb === 'rm' && !args.includes('-f') && !args.includes('--force')) {
          err(`Error response from daemon: cannot remove container "/${name}": container is running: stop the container before removing or force remove\n`);
          rc = 1;
          continue;
        }
        // stop: SIGTERM to PID 1 (ignored without --init), then SIGKILL after the grace period; kill/rm -f: SIGKILL
        process.kill(c.pid, verb === 'stop' ? 'SIGUSR1' : 'SIGUSR2');
        for (let t = 0; t < 50 && alive(c.pid); t++) await sleep(20);
        out(`${name}\n`);
      }
      return exit(rc);
    }
    case 'run':
    case 'container run':
      return run(w, d, args);
    default:
      err(`docker: unknown command: docker ${cmd ?? ''}\n\nRun 'docker --help' for more information\n`);
      return exit(1);
  }
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

function pullLines(ref) {
  const full = normImage(ref);
  if (full !== ref) out('Using default tag: latest\n');
  out(`latest: Pulling from esphome/esphome\n2d429b9e73a6: Pull complete\nDigest: sha256:6e4a4b1d0c1b5e8e9a\nStatus: Downloaded newer image for ${full}\n${full}\n`);
}

async function run(w, d, argv) {
  if (!d.daemon) {
    err(`docker: ${DAEMON_DOWN}\n\nRun 'docker run --help' for more information\n`);
    return exit(125);
  }
  const withValue = new Set(['-v', '--volume', '-e', '--env', '--env-file', '-u', '--user', '-w', '--workdir', '--name', '--network', '--net', '-p', '--publish',
    '--entrypoint', '--mount', '--device', '--platform', '--pull', '--stop-signal', '--stop-timeout', '--cpus', '-m', '--memory', '--label', '-l', '--hostname', '-h',
    '--add-host', '--restart', '--log-driver', '--tmpfs', '--cap-add', '--cap-drop', '--security-opt', '--ulimit', '--group-add']);
  const o = { mounts: [], env: {}, tty: false, init: false, sigProxy: true, rm: false };
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    let a = argv[i];
    let val;
    if (a.startsWith('--') && a.includes('=')) [a, val] = a.split(/=(.*)/s);
    if (withValue.has(a)) {
      if (val === undefined) val = argv[++i];
      if (a === '-v' || a === '--volume') {
        const [src, dst] = val.split(':');
        o.mounts.push({ src, dst });
      } else if (a === '--mount') {
        const kv = Object.fromEntries(val.split(',').map((p) => p.split('=')));
        o.mounts.push({ src: kv.source ?? kv.src, dst: kv.target ?? kv.destination ?? kv.dst, bind: kv.type === 'bind' });
      } else if (a === '-w' || a === '--workdir') o.workdir = val;
      else if (a === '--name') o.name = val;
      else if (a === '--entrypoint') o.entrypoint = val;
      else if (a === '-e' || a === '--env') { const [k, v] = val.split(/=(.*)/s); o.env[k] = v; }
      continue;
    }
    if (a === '--rm') o.rm = true;
    else if (a === '--init') o.init = val !== 'false';
    else if (a === '--sig-proxy') o.sigProxy = val !== 'false';
    else if (a === '--privileged' || a === '--interactive' || a === '--detach' || a === '--tty') { if (a === '--tty') o.tty = true; if (a === '--detach') o.detach = true; }
    else if (/^-[itd]+$/.test(a)) { if (a.includes('t')) o.tty = true; if (a.includes('d')) o.detach = true; }
    else {
      err(`unknown flag: ${a}\n\nUsage:  docker run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nRun 'docker run --help' for more information\n`);
      return exit(125);
    }
  }
  const image = argv[i];
  const cmd = argv.slice(i + 1);
  if (!image) {
    err(`docker: 'docker run' requires at least 1 argument\n\nUsage:  docker run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nSee 'docker run --help'.\n`);
    return exit(1);
  }
  if (!isEsphome(image)) {
    err(`Unable to find image '${normImage(image)}' locally\ndocker: Error response from daemon: pull access denied for ${normImage(image).split(':')[0]}, repository does not exist or may require 'docker login'\n\nRun 'docker run --help' for more information\n`);
    return exit(125);
  }
  if (o.detach || o.entrypoint) {
    err('fake docker: detached runs and --entrypoint are not simulated\n');
    return exit(125);
  }
  if (!(readState(w).images ?? []).includes(normImage(image))) {
    err(`Unable to find image '${normImage(image)}' locally\n`);
    pullLines(normImage(image));
    updateState(w, (s) => { s.images = [...new Set([...(s.images ?? []), normImage(image)])]; });
  }
  if (o.name) {
    const c = (readState(w).containers ?? {})[o.name];
    if (c && alive(c.pid)) {
      err(`docker: Error response from daemon: Conflict. The container name "/${o.name}" is already in use by container "${c.id}". You have to remove (or rename) that container to be able to reuse that name.\n\nRun 'docker run --help' for more information\n`);
      return exit(125);
    }
  }
  // mounts: absolute source = bind mount (created when missing, as dockerd does); otherwise a named volume
  const mounts = o.mounts.map((m) => {
    let host;
    if (m.src && path.isAbsolute(m.src)) host = m.src;
    else host = path.join(w.dir, 'docker-volumes', m.src || `anon-${process.pid}`);
    fs.mkdirSync(host, { recursive: true });
    return { host, dst: path.posix.normalize(m.dst) };
  }).sort((a, b) => b.dst.length - a.dst.length);
  const rootfs = path.join(w.dir, 'docker-rootfs', String(process.pid));
  const toHost = (p) => {
    const norm = path.posix.normalize(p);
    for (const m of mounts) if (norm === m.dst || norm.startsWith(m.dst.endsWith('/') ? m.dst : m.dst + '/')) return path.join(m.host, path.posix.relative(m.dst, norm));
    return path.join(rootfs, norm);
  };
  const workdir = o.workdir ?? '/config';
  fs.mkdirSync(toHost(workdir), { recursive: true });
  const id = [...crypto.getRandomValues(new Uint8Array(6))].map((b) => b.toString(16).padStart(2, '0')).join('');

  // signals: SIGINT -> ESPHome exits 1; SIGTERM ignored by PID 1 unless --init; with -t the client is
  // not a signal proxy and just dies. SIGUSR1/SIGUSR2 = `docker stop` / `docker kill` of this container.
  let finished = false;
  const finish = async (code) => {
    if (finished) return;
    finished = true;
    if (o.name) updateState(w, (s) => { if (s.containers?.[o.name]?.pid === process.pid) delete s.containers[o.name]; });
    fs.rmSync(rootfs, { recursive: true, force: true });
    return exit(code);
  };
  process.on('SIGINT', () => (o.tty || !o.sigProxy ? finish(130) : finish(1)));
  process.on('SIGTERM', () => { if (o.tty || !o.sigProxy) finish(143); else if (o.init) finish(143); });
  process.on('SIGUSR1', () => finish(o.init ? 143 : 137));
  process.on('SIGUSR2', () => finish(137));
  // Listed (and so stoppable by name) only once the signals are handled, as a started container is.
  if (o.name) updateState(w, (s) => { s.containers ??= {}; s.containers[o.name] = { pid: process.pid, id, image: normImage(image), cmd: cmd.join(' ') }; });

  // the image's /entrypoint.sh
  if (!mounts.some((m) => m.dst === '/cache')) {
    const cacheDir = toHost('/config/.esphome/platformio');
    if (!fs.existsSync(cacheDir)) {
      out('Creating cache directory /config/.esphome/platformio\nYou can change this behavior by mounting a directory to the container\'s /cache directory.\n');
      fs.mkdirSync(cacheDir, { recursive: true });
    }
  }
  const esArgs = cmd.length ? cmd : ['dashboard', '/config'];
  if (esArgs[0] === 'dashboard') {
    err('fake docker: the ESPHome dashboard is not simulated\n');
    return finish(1);
  }
  const { runEsphome } = await import('./esphome.mjs');
  const code = await runEsphome(esArgs, { w, toHost, resolveShown: (p) => path.posix.resolve(workdir, p) });
  return finish(code);
}
