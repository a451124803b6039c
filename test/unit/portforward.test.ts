import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { servePortForwardSpdy, servePortForwardWebSocket, type PortForwardStream, type SpdyLikeSession } from '../../src/streaming/portforward';
import { connectInNetns, netnsConnectWorkerState, stopNetnsConnectWorker } from '../../src/sys/netns_connect';

const isRoot = process.getuid?.() === 0;
const hasIp = spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0;
const opts = isRoot && hasIp ? {} : { skip: 'needs root and iproute2 (ip netns)' };

const NS = `tscri-pf-${randomBytes(4).toString('hex')}`;
const nsPath = `/run/netns/${NS}`;
const log = pino({ level: 'silent' });
const hostNet = fs.readlinkSync('/proc/thread-self/ns/net');

const ECHO = 8080;
const ECHO2 = 8081;
const BANNER = 8082;
const SINK = 8083;
const V6_ONLY = 8084;
const CLOSED = 9;
const BANNER_TEXT = 'hello from the pod\n';

// The "pod": one node process inside the test netns, serving loopback only.
const POD_SERVER = `
const net = require('net'), crypto = require('crypto');
const handlers = [
  [${ECHO}, '127.0.0.1', (s) => s.pipe(s)],
  [${ECHO2}, '127.0.0.1', (s) => s.pipe(s)],
  [${BANNER}, '127.0.0.1', (s) => { s.on('data', () => {}); s.end(${JSON.stringify(BANNER_TEXT)}); }],
  [${SINK}, '127.0.0.1', (s) => {
    const h = crypto.createHash('sha256');
    s.on('data', (d) => h.update(d));
    s.on('end', () => s.end(h.digest('hex') + '\\n'));
  }],
  [${V6_ONLY}, '::1', (s) => { s.on('data', () => {}); s.end('v6 only\\n'); }],
];
// Gone with the test process, even one killed before its cleanup ran.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
let ready = 0;
for (const [port, host, fn] of handlers) {
  net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); fn(s); })
    .listen(port, host, () => { if (++ready === handlers.length) console.log('ready'); });
}
`;

let pod: ChildProcess | undefined;

before(async () => {
  if (!isRoot || !hasIp) return;
  const add = spawnSync('ip', ['netns', 'add', NS], { encoding: 'utf8' });
  assert.equal(add.status, 0, add.stderr);
  const up = spawnSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up'], { encoding: 'utf8' });
  assert.equal(up.status, 0, up.stderr);
  const child = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', POD_SERVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  pod = child;
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`pod server exited early with ${code}`)));
  });
});

after(async () => {
  await stopNetnsConnectWorker();
  if (pod && pod.exitCode === null) {
    pod.kill('SIGKILL');
    await once(pod, 'exit').catch(() => undefined);
  }
  if (isRoot && hasIp) spawnSync('ip', ['netns', 'del', NS]);
});

// events.once would reject on the AbortError a reset stream emits before it closes.
function closed(stream: Duplex): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed) resolve();
    else stream.on('close', () => resolve());
  });
}

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

// Not `for await`: finishing the loop destroys the stream, and these duplexes still have a
// writable side the tests use afterwards.
function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

describe('connectInNetns', opts, () => {
  test('reaches a server inside the netns; 10 MiB go both ways intact', async () => {
    const sock = await connectInNetns(nsPath, ECHO);
    const payload = randomBytes(10 << 20);
    const back = readAll(sock);
    sock.end(payload);
    const got = await back;
    assert.equal(got.length, payload.length);
    assert.equal(sha(got), sha(payload));
  });

  test('half-close reaches the pod and its answer comes back', async () => {
    const sock = await connectInNetns(nsPath, SINK);
    const payload = randomBytes(1 << 20);
    const back = readAll(sock);
    sock.end(payload);
    assert.equal((await back).toString().trim(), sha(payload));
  });

  test('a closed port is "connection refused", naming the port', async () => {
    await assert.rejects(connectInNetns(nsPath, CLOSED), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ECONNREFUSED');
      assert.match(err.message, /connection refused/);
      assert.match(err.message, new RegExp(`:${CLOSED}\\b`));
      return true;
    });
    await assert.rejects(connectInNetns(nsPath, CLOSED, 'localhost'), /localhost:9 .*connection refused/);
  });

  test('"localhost" falls back to ::1 when 127.0.0.1 refuses', async () => {
    const sock = await connectInNetns(nsPath, V6_ONLY, 'localhost');
    assert.equal(sock.remoteAddress, '::1');
    assert.equal((await readAll(sock)).toString(), 'v6 only\n');
  });

  test('undefined means the host netns: a host-only server is reachable there and not in the pod', async () => {
    const server = net.createServer((s) => s.end('host\n'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    try {
      const sock = await connectInNetns(undefined, port);
      assert.equal((await readAll(sock)).toString(), 'host\n');
      await assert.rejects(connectInNetns(nsPath, port), /connection refused/);
    } finally {
      server.close();
    }
  });

  test('bad namespace paths fail cleanly and leave the worker usable', async () => {
    await assert.rejects(connectInNetns('/run/netns/tscri-pf-does-not-exist', ECHO), { code: 'ENOENT' });
    await assert.rejects(connectInNetns('/proc/self/ns/uts', ECHO), { code: 'EINVAL' });
    await assert.rejects(connectInNetns(nsPath, 0), RangeError);
    await assert.rejects(connectInNetns(nsPath, ECHO, 'example.com'), TypeError);
    const sock = await connectInNetns(nsPath, BANNER);
    assert.equal((await readAll(sock)).toString(), BANNER_TEXT);
  });

  test('the host namespace is unchanged, in the main thread and the worker; latency', async (t) => {
    const before = fs.readlinkSync('/proc/thread-self/ns/net');
    assert.equal(before, hostNet);
    const podNet = spawnSync('ip', ['netns', 'exec', NS, 'readlink', '/proc/self/ns/net'], { encoding: 'utf8' }).stdout.trim();
    assert.notEqual(podNet, hostNet);

    const socks = await Promise.all(Array.from({ length: 32 }, () => connectInNetns(nsPath, ECHO)));
    for (const s of socks) s.destroy();

    const times: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t0 = process.hrtime.bigint();
      const s = await connectInNetns(nsPath, ECHO);
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      s.destroy();
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)];
    const p99 = times[Math.floor(times.length * 0.99)];
    t.diagnostic(`connectInNetns latency: median ${median.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms`);
    assert.ok(median < 20, `median connect latency ${median} ms`);

    assert.equal(fs.readlinkSync('/proc/thread-self/ns/net'), hostNet);
    assert.equal(fs.readlinkSync('/proc/self/ns/net'), hostNet);
    assert.equal(await netnsConnectWorkerState(), hostNet);
  });
});

// ---- SPDY, through an in-memory session ---------------------------------------------------------

class FakeSession extends EventEmitter implements SpdyLikeSession {
  open(headers: Record<string, string>): Duplex {
    const toServer = new PassThrough();
    const toClient = new PassThrough();
    const server = Duplex.from({ readable: toServer, writable: toClient }) as PortForwardStream;
    server.headers = headers;
    const client = Duplex.from({ readable: toClient, writable: toServer });
    // A reset on the server side surfaces here as an AbortError; the tests look at 'close'.
    client.on('error', () => undefined);
    this.emit('stream', server);
    return client;
  }

  forward(port: number, requestId: string, dataFirst = false): { data: Duplex; error: Duplex } {
    const open = (type: string): Duplex => this.open({ streamtype: type, port: String(port), requestid: requestId });
    if (dataFirst) {
      const data = open('data');
      return { data, error: open('error') };
    }
    const error = open('error');
    return { data: open('data'), error };
  }
}

describe('servePortForwardSpdy', opts, () => {
  const target = { netnsPath: nsPath, podSandboxId: 'pod-under-test' };

  test('data both ways, two concurrent connections, error streams closed empty', async () => {
    const session = new FakeSession();
    servePortForwardSpdy(session, target, log);
    const a = session.forward(ECHO, '1');
    const b = session.forward(ECHO2, '2', true);
    const pa = randomBytes(4 << 20);
    const pb = randomBytes(3 << 20);
    const backA = readAll(a.data);
    const backB = readAll(b.data);
    const errA = readAll(a.error);
    const errB = readAll(b.error);
    // Interleave writes so both connections are live at once.
    for (let off = 0; off < pa.length; off += 256 << 10) {
      a.data.write(pa.subarray(off, off + (256 << 10)));
      b.data.write(pb.subarray(off, off + (256 << 10)));
    }
    a.data.end();
    b.data.end();
    const [ga, gb] = await Promise.all([backA, backB]);
    assert.equal(sha(ga), sha(pa));
    assert.equal(sha(gb), sha(pb));
    assert.equal((await errA).toString(), '');
    assert.equal((await errB).toString(), '');
    session.emit('close');
  });

  test('the pod closing first ends the data stream; client half-close reaches the pod', async () => {
    const session = new FakeSession();
    servePortForwardSpdy(session, target, log);
    const banner = session.forward(BANNER, 'b');
    assert.equal((await readAll(banner.data)).toString(), BANNER_TEXT);
    banner.data.end();
    assert.equal((await readAll(banner.error)).toString(), '');

    const sink = session.forward(SINK, 's');
    const payload = randomBytes(1 << 20);
    const back = readAll(sink.data);
    sink.data.end(payload);
    assert.equal((await back).toString().trim(), sha(payload));
    session.emit('close');
  });

  test('a refused port is reported on the error stream', async () => {
    const session = new FakeSession();
    servePortForwardSpdy(session, target, log);
    const f = session.forward(CLOSED, '7');
    const msg = (await readAll(f.error)).toString();
    assert.match(msg, /connection refused/);
    assert.match(msg, /port 9\b/);
    assert.match(msg, /localhost:9\b/);
    assert.match(msg, /pod-under-test/);
    assert.equal((await readAll(f.data)).length, 0);
    // Other pairs on the same session are unaffected.
    const ok = session.forward(BANNER, '8');
    assert.equal((await readAll(ok.data)).toString(), BANNER_TEXT);
    ok.data.end();
    session.emit('close');
  });

  test('malformed streams are reset; a lone half times out; session close tears down', async () => {
    const session = new FakeSession();
    servePortForwardSpdy(session, target, log, { streamCreationTimeoutMs: 100 });
    const bad = session.open({ streamtype: 'data', port: 'http', requestid: 'x' });
    await closed(bad);
    const badType = session.open({ streamtype: 'control', port: '80', requestid: 'x' });
    await closed(badType);

    const lone = session.open({ streamtype: 'error', port: String(ECHO), requestid: 'lonely' });
    assert.match((await readAll(lone)).toString(), /timed out waiting for streams/);

    const live = session.forward(ECHO, 'live');
    live.data.write('ping');
    const [echoed] = (await once(live.data, 'data')) as [Buffer];
    assert.equal(echoed.toString(), 'ping');
    const gone = closed(live.data);
    session.emit('close');
    await gone;
  });
});

// ---- WebSocket, through a real ws server and client on loopback -----------------------------

interface WsClient {
  ws: WebSocket;
  /** Payload bytes per channel, after the port prefix. */
  channels: Map<number, Buffer[]>;
  prefixes: Map<number, number>;
  closed: Promise<void>;
  waitFor(channel: number, bytes: number): Promise<Buffer>;
}

async function wsConnect(url: string, protocol: string): Promise<WsClient> {
  const ws = new WebSocket(url, [protocol]);
  const channels = new Map<number, Buffer[]>();
  const prefixes = new Map<number, number>();
  const waiters: Array<() => void> = [];
  const base64 = protocol.includes('base64');
  ws.on('message', (raw: Buffer) => {
    let channel = raw[0];
    let payload = raw.subarray(1);
    if (base64) {
      channel -= 48;
      payload = Buffer.from(payload.toString(), 'base64');
    }
    if (!prefixes.has(channel)) {
      assert.equal(payload.length, 2, 'the first message on a channel is its port');
      prefixes.set(channel, payload.readUInt16LE(0));
      return;
    }
    const list = channels.get(channel) ?? [];
    list.push(payload);
    channels.set(channel, list);
    for (const w of waiters.splice(0)) w();
  });
  const closed = once(ws, 'close').then(() => {
    for (const w of waiters.splice(0)) w();
  });
  await once(ws, 'open');
  assert.equal(ws.protocol, protocol);
  const got = (ch: number): Buffer => Buffer.concat(channels.get(ch) ?? []);
  return {
    ws,
    channels,
    prefixes,
    closed,
    async waitFor(channel, bytes) {
      while (got(channel).length < bytes) {
        if (ws.readyState === ws.CLOSED) break;
        await new Promise<void>((r) => waiters.push(r));
      }
      return got(channel);
    },
  };
}

function wsSend(ws: WebSocket, channel: number, payload: Buffer, base64 = false): void {
  if (base64) ws.send(String.fromCharCode(48 + channel) + payload.toString('base64'));
  else ws.send(Buffer.concat([Buffer.of(channel), payload]));
}

describe('servePortForwardWebSocket', opts, () => {
  let wss: WebSocketServer | undefined;
  let base = '';

  before(async () => {
    if (!isRoot || !hasIp) return;
    const protocols = ['v4.channel.k8s.io', 'v4.base64.channel.k8s.io', 'portforward.k8s.io'];
    wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      handleProtocols: (offered) => protocols.find((p) => offered.has(p)) ?? false,
    });
    wss.on('connection', (ws, req) => {
      const ports = new URL(req.url ?? '/', 'http://x').searchParams.getAll('port').map(Number);
      servePortForwardWebSocket(ws, { netnsPath: nsPath, podSandboxId: 'pod-under-test' }, ports, log);
    });
    await once(wss, 'listening');
    base = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/portforward`;
  });

  after(async () => {
    const server = wss;
    if (!server) return;
    for (const c of server.clients) c.terminate();
    await new Promise((r) => server.close(r));
  });

  test('two ports at once, data both ways, a refused port on its error channel', async () => {
    const c = await wsConnect(`${base}?port=${ECHO}&port=${ECHO2}&port=${CLOSED}`, 'v4.channel.k8s.io');
    const err = await c.waitFor(5, 1);
    assert.match(err.toString(), /connection refused/);
    assert.match(err.toString(), /localhost:9\b/);
    assert.deepEqual(
      [...c.prefixes.entries()].sort((x, y) => x[0] - y[0]),
      [
        [0, ECHO],
        [1, ECHO],
        [2, ECHO2],
        [3, ECHO2],
        [4, CLOSED],
        [5, CLOSED],
      ],
    );
    const pa = randomBytes(2 << 20);
    const pb = randomBytes(2 << 20);
    for (let off = 0; off < pa.length; off += 64 << 10) {
      wsSend(c.ws, 0, pa.subarray(off, off + (64 << 10)));
      wsSend(c.ws, 2, pb.subarray(off, off + (64 << 10)));
    }
    const [ga, gb] = await Promise.all([c.waitFor(0, pa.length), c.waitFor(2, pb.length)]);
    assert.equal(sha(ga), sha(pa));
    assert.equal(sha(gb), sha(pb));
    assert.equal(c.channels.get(1), undefined, 'no error for a healthy port');
    assert.equal(c.channels.get(3), undefined, 'no error for a healthy port');
    c.ws.close();
    await c.closed;
  });

  test('the server closes the socket once the only pod connection is over (base64)', async () => {
    const c = await wsConnect(`${base}?port=${BANNER}`, 'v4.base64.channel.k8s.io');
    await c.closed;
    assert.equal(Buffer.concat(c.channels.get(0) ?? []).toString(), BANNER_TEXT);
    assert.equal(c.channels.get(1), undefined);
  });

  test('client data sent before the pod connection exists is not lost', async () => {
    const c = await wsConnect(`${base}?port=${ECHO}`, 'v4.channel.k8s.io');
    const payload = randomBytes(512 << 10);
    wsSend(c.ws, 0, payload);
    assert.equal(sha(await c.waitFor(0, payload.length)), sha(payload));
    c.ws.close();
    await c.closed;
  });

  test('no ports: the socket is closed with a policy violation', async () => {
    const ws = new WebSocket(base, ['v4.channel.k8s.io']);
    const [code] = (await once(ws, 'close')) as [number];
    assert.equal(code, 1008);
  });
});
