// A minimal native-protocol client (TCP, one JSON object per line; docs/PROTOCOL.md) for
// the browser tests and benchmarks to set up data quickly: many messages, many users.
import net from 'node:net';

export class ProtoClient {
  /** Connects to `port` on 127.0.0.1 from `localAddress` (any 127.x.y.z: each address
   *  has its own `max_connections_per_address`). */
  static connect(port, localAddress = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      const c = new ProtoClient();
      c.sock = net.connect({ host: '127.0.0.1', port, localAddress });
      c.sock.setEncoding('utf8');
      c.sock.once('error', reject);
      c.sock.once('connect', () => resolve(c));
      c.sock.on('data', (d) => c.onData(d));
      c.sock.on('close', () => { for (const p of c.pending.values()) p.reject(new Error('closed')); c.pending.clear(); });
    });
  }

  constructor() {
    this.buf = '';
    this.next = 1;
    this.pending = new Map();
  }

  onData(d) {
    this.buf += d;
    let i;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 1);
      if (!line.trim()) continue;
      const f = JSON.parse(line);
      const p = f.re !== undefined ? this.pending.get(f.re) : null;
      if (!p) continue; // events are ignored
      this.pending.delete(f.re);
      if (f.type === 'error') p.reject(Object.assign(new Error(`${f.code}: ${f.message}`), { frame: f }));
      else p.resolve(f.data);
    }
  }

  request(cmd, args) {
    const id = this.next;
    this.next += 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.sock.write(`${JSON.stringify({ id, cmd, args })}\n`);
    });
  }

  close() {
    this.sock.end();
    this.sock.destroy();
  }
}

/** Registers `username` (alias `A<username>`) on an open connection (not logged in). */
export function registerOn(c, username, password) {
  return c.request('register', {
    username, alias: `A${username}`, first_name: 'Bench', last_name: 'User', password,
  });
}

/** A connection logged in as `login`. */
export async function loggedIn(port, login, password, localAddress) {
  const c = await ProtoClient.connect(port, localAddress);
  await c.request('login', { login, password });
  return c;
}
