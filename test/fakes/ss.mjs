// Fake `ss` (iproute2 6.x): lists the world's busy ports as listening sockets, in ss's columns, with
// users:(("name",pid=N,fd=M)) under -p. Supports -H -l -a -n -t -u -p (clustered or not),
// -A/--query tcp|udp|inet|all and a `sport = :N` filter (what cloudcutter's safety_checks.sh runs).
// The listeners live in the world's state (a process stopped by cloudcutter's safety check is gone);
// each prints its own local address (systemd-resolved: 127.0.0.53%lo, 127.0.0.54), UDP before TCP.
import { world, out, err, logCall, exit, readState } from './common.mjs';

const SERVICES = { 53: 'domain', 67: 'bootps', 80: 'http', 443: 'https', 1883: 'mqtt', 6053: '6053' };

export async function main(argv) {
  const w = world();
  logCall('ss', argv);
  const o = { types: new Set() };
  const filter = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-A' || a === '--query' || a.startsWith('--query=')) {
      const v = a.includes('=') ? a.split('=')[1] : argv[++i];
      for (const t of v.split(',')) {
        if (t === 'inet' || t === 'all') { o.types.add('tcp'); o.types.add('udp'); } else o.types.add(t);
      }
    } else if (a.startsWith('--')) {
      const name = a.slice(2);
      if (name === 'no-header') o.H = true;
      else if (name === 'listening') o.l = true;
      else if (name === 'all') o.a = true;
      else if (name === 'numeric') o.n = true;
      else if (name === 'tcp') o.types.add('tcp');
      else if (name === 'udp') o.types.add('udp');
      else if (name === 'processes') o.p = true;
    } else if (a.startsWith('-') && a.length > 1) {
      for (const c of a.slice(1)) {
        if (c === 't') o.types.add('tcp');
        else if (c === 'u') o.types.add('udp');
        else if ('HlanpeimorxwZz46'.includes(c)) o[c] = true;
        else {
          err(`ss: invalid option -- '${c}'\n`);
          return exit(1);
        }
      }
    } else filter.push(a);
  }
  // filter: sport = :N / sport == :N / sport eq :N (parentheses allowed)
  const expr = filter.join(' ').replace(/[()]/g, ' ');
  const m = expr.match(/sport\s*(?:=|==|eq)\s*:(\d+)/);
  const sport = m ? Number(m[1]) : undefined;

  const types = o.types.size ? [...o.types] : ['tcp', 'udp'];
  const showNetid = types.length > 1 || !o.types.size;
  const rows = [];
  if (o.l || o.a) {
    const busy = readState(w).busy ?? w.ss?.busy ?? [];
    const ordered = [...busy.filter((b) => b.proto === 'udp'), ...busy.filter((b) => b.proto === 'tcp')];
    for (const b of ordered) {
      const idx = busy.indexOf(b);
      if (!types.includes(b.proto)) continue;
      if (sport !== undefined && b.port !== sport) continue;
      const port = o.n ? String(b.port) : SERVICES[b.port] ?? String(b.port);
      rows.push({
        netid: b.proto, state: b.proto === 'tcp' ? 'LISTEN' : 'UNCONN', recvq: '0', sendq: b.proto === 'tcp' ? '4096' : '0',
        laddr: b.addr ?? '0.0.0.0', lport: port, paddr: '0.0.0.0', pport: '*',
        users: `users:(("${b.process}",pid=${b.pid},fd=${b.fd ?? 3 + idx}))`,
      });
    }
  }
  const aw = Math.max(13, ...rows.map((r) => r.laddr.length));
  const pw = Math.max(4, ...rows.map((r) => r.lport.length));
  const cols = (r) =>
    (showNetid ? r.netid.padEnd(6) : '') + r.state.padEnd(7) + r.recvq.padEnd(7) + r.sendq.padEnd(7) +
    `${r.laddr.padStart(aw)}:${r.lport.padEnd(pw)} ${r.paddr.padStart(9)}:${r.pport.padEnd(5)}` + (o.p && r.users ? r.users : '');
  if (!o.H) out((showNetid ? 'Netid ' : '') + 'State  Recv-Q Send-Q ' + 'Local Address:Port'.padStart(aw + pw + 1) + ' Peer Address:Port' + 'Process\n');
  for (const r of rows) out(cols(r) + '\n');
  return exit(0);
}
