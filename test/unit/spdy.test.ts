import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { FLAG_FIN, type Frame, FrameSplitter, HEADER_DICTIONARY, SpdyFramer } from '../../src/streaming/spdy/framer';
import { SpdySession, type SpdyStream } from '../../src/streaming/spdy/session';
import { negotiate, statusJson, SPDY_PROTOCOLS } from '../../src/streaming/remotecommand';
import { TokenCache } from '../../src/streaming/tokens';

function adler32(buf: Buffer): number {
  let a = 1;
  let b = 0;
  for (const byte of buf) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** Encodes with one framer, decodes with another: the two ends of one direction. */
async function roundTrip(frames: Frame[]): Promise<Frame[]> {
  const tx = new SpdyFramer();
  const rx = new SpdyFramer();
  const wire = Buffer.concat(await Promise.all(frames.map((f) => tx.encode(f))));
  // Fed in awkward pieces, as TCP would.
  const splitter = new FrameSplitter();
  const raws = [];
  for (let off = 0; off < wire.length; off += 7) raws.push(...splitter.push(wire.subarray(off, off + 7)));
  const out: Frame[] = [];
  for (const r of raws) out.push(await rx.decode(r));
  tx.close();
  rx.close();
  return out;
}

test('the header dictionary is SPDY/3 (1423 bytes, zlib dictionary id 0xe3c6a7c2)', () => {
  assert.equal(HEADER_DICTIONARY.length, 1423);
  assert.equal(adler32(HEADER_DICTIONARY).toString(16), 'e3c6a7c2');
});

test('every frame type survives a round trip', async () => {
  const frames: Frame[] = [
    { type: 'syn_stream', streamId: 1, associatedId: 0, priority: 3, flags: 0, headers: { streamtype: 'error' } },
    { type: 'syn_reply', streamId: 1, flags: 0, headers: {} },
    { type: 'data', streamId: 1, flags: FLAG_FIN, data: Buffer.from('hello') },
    { type: 'rst_stream', streamId: 3, status: 5 },
    {
      type: 'settings',
      flags: 0,
      entries: [
        { flags: 0, id: 7, value: 65536 },
        { flags: 1, id: 4, value: 100 },
      ],
    },
    { type: 'ping', id: 0xfffffffe },
    { type: 'goaway', lastGoodStreamId: 9, status: 0 },
    { type: 'headers', streamId: 5, flags: FLAG_FIN, headers: { a: 'b' } },
    { type: 'window_update', streamId: 5, delta: 12345 },
    { type: 'data', streamId: 7, flags: 0, data: Buffer.alloc(0) },
  ];
  assert.deepEqual(await roundTrip(frames), frames);
});

test('header blocks share one zlib context per direction across many frames', async () => {
  const frames: Frame[] = [];
  for (let i = 0; i < 20; i++) {
    frames.push({
      type: 'syn_stream',
      streamId: 2 * i + 1,
      associatedId: 0,
      priority: 0,
      flags: 0,
      headers: { streamtype: ['error', 'stdin', 'stdout', 'stderr', 'resize'][i % 5], requestid: String(i), port: '8080' },
    });
  }
  const tx = new SpdyFramer();
  const encoded = await Promise.all(frames.map((f) => tx.encode(f)));
  // Later blocks refer back to earlier ones: they are smaller, and unreadable on their own.
  assert.ok(encoded[10].length < encoded[0].length, `block 10 (${encoded[10].length} B) should be smaller than block 0 (${encoded[0].length} B)`);
  const fresh = new SpdyFramer();
  const [late] = new FrameSplitter().push(encoded[10]);
  await assert.rejects(fresh.decode(late));
  fresh.close();
  tx.close();
  assert.deepEqual(await roundTrip(frames), frames);
});

test('multi-valued headers and names are lowercased and NUL-joined', async () => {
  const [f] = await roundTrip([{ type: 'syn_reply', streamId: 2, flags: 0, headers: { 'X-Thing': 'a\0b' } }]);
  assert.deepEqual(f, { type: 'syn_reply', streamId: 2, flags: 0, headers: { 'x-thing': 'a\0b' } });
});

test('a session pair: streams, data both ways, FIN, RST and PING', async () => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const clientSock = net.connect(port, '127.0.0.1');
  const serverSock = await accepted;
  const srv = new SpdySession(serverSock, { server: true });
  const cli = new SpdySession(clientSock, { server: false });
  const got: SpdyStream[] = [];
  srv.on('stream', (s: SpdyStream) => got.push(s));

  const a = await cli.openStream({ streamtype: 'stdin' });
  const b = await cli.openStream({ streamtype: 'stdout' });
  assert.deepEqual(
    got.map((s) => s.headers['streamtype']),
    ['stdin', 'stdout'],
  );
  const [sa, sb] = got as [SpdyStream, SpdyStream];

  const big = Buffer.alloc(300_000, 7);
  const readAll = (s: SpdyStream): Promise<Buffer> =>
    new Promise((resolve) => {
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.once('end', () => resolve(Buffer.concat(parts)));
    });
  const serverGot = readAll(sa);
  a.end(big);
  assert.equal((await serverGot).length, big.length);

  const clientGot = readAll(b);
  sb.end('from server');
  assert.equal((await clientGot).toString(), 'from server');

  const c = await cli.openStream({ streamtype: 'error' });
  const sc = got[2];
  const reset = new Promise<void>((r) => c.once('close', () => r()));
  sc.destroy();
  await reset;

  assert.ok((await cli.ping()) >= 0);
  await srv.close();
  await new Promise<void>((r) => cli.once('close', () => r()));
  server.close();
});

test('protocol negotiation picks the newest common version', () => {
  assert.equal(negotiate(['v4.channel.k8s.io', 'v3.channel.k8s.io'], SPDY_PROTOCOLS), 'v4.channel.k8s.io');
  assert.equal(negotiate(['channel.k8s.io, v2.channel.k8s.io'], SPDY_PROTOCOLS), 'v2.channel.k8s.io');
  assert.equal(negotiate([], SPDY_PROTOCOLS), '');
  assert.equal(negotiate(['v9.channel.k8s.io'], SPDY_PROTOCOLS), undefined);
});

test('v4 status carries the exit code', () => {
  assert.deepEqual(JSON.parse(statusJson({ exitCode: 0 })), { metadata: {}, status: 'Success' });
  const s = JSON.parse(statusJson({ exitCode: 3 })) as { reason: string; details: { causes: Array<{ reason: string; message: string }> } };
  assert.equal(s.reason, 'NonZeroExitCode');
  assert.deepEqual(s.details.causes, [{ reason: 'ExitCode', message: '3' }]);
});

test('tokens are single use and expire', () => {
  let now = 1000;
  const cache = new TokenCache<string>(60_000, 10, () => now);
  const t = cache.insert('x');
  assert.deepEqual(cache.consume(t), { ok: true, value: 'x' });
  const again = cache.consume(t);
  assert.equal(again.ok, false);
  assert.equal(again.status, 410);
  const late = cache.insert('y');
  now += 61_000;
  const r = cache.consume(late);
  assert.equal(!r.ok && r.status, 410);
  assert.equal(!r.ok && /expired/.test(r.reason), true);
  const unknown = cache.consume('nope');
  assert.equal(!unknown.ok && unknown.status, 404);
});
