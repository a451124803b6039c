import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadCri } from '../../src/proto';
import { acceptConnection, AuthorityFix, isValidAuthority } from '../../src/server/authority_fix';
import { connectCri } from '../helpers/cri';
// eslint-disable-next-line @typescript-eslint/no-require-imports -- hpack.js has no type declarations to import; the little of it used here is typed below.
const hpack = require('hpack.js') as {
  compressor: { create(opts: { table: { maxSize: number } }): HpackCompressor };
  decompressor: { create(opts: { table: { maxSize: number } }): HpackDecompressor };
};

interface HpackCompressor {
  write(headers: { name: string; value: string }[]): void;
  read(): Buffer | null;
}

interface HpackDecompressor {
  write(data: Buffer): void;
  execute(): void;
  read(): { name: string; value: string } | null;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** A client's HPACK encoder, with Huffman and its dynamic table, as grpc-go has one. */
function clientEncoder(): (headers: [string, string][]) => Buffer {
  const comp = hpack.compressor.create({ table: { maxSize: 4096 } });
  return (headers) => {
    comp.write(headers.map(([name, value]) => ({ name, value })));
    const out: Buffer[] = [];
    for (let b = comp.read(); b !== null; b = comp.read()) out.push(b);
    return Buffer.concat(out);
  };
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}

async function run(input: Buffer[]): Promise<Buffer> {
  const fix = new AuthorityFix();
  const out: Buffer[] = [];
  fix.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((resolve, reject) => {
    fix.on('end', resolve);
    fix.on('error', reject);
  });
  // Byte by byte: frames split anywhere must still be parsed.
  for (const chunk of input) for (const b of chunk) fix.write(Buffer.from([b]));
  fix.end();
  await done;
  return Buffer.concat(out);
}

/** Splits server-bound bytes back into the header lists the server would decode. */
function serverView(bytes: Buffer): { streamId: number; flags: number; headers: Record<string, string> }[] {
  assert.deepEqual(bytes.subarray(0, 24), PREFACE);
  const dec = hpack.decompressor.create({ table: { maxSize: 4096 } });
  const out = [];
  let off = 24;
  while (off < bytes.length) {
    const len = bytes.readUIntBE(off, 3);
    const type = bytes[off + 3];
    const flags = bytes[off + 4];
    const streamId = bytes.readUInt32BE(off + 5);
    const payload = bytes.subarray(off + 9, off + 9 + len);
    off += 9 + len;
    if (type !== 1) continue;
    dec.write(payload);
    dec.execute();
    const headers: Record<string, string> = {};
    for (let h = dec.read(); h !== null; h = dec.read()) headers[h.name] = h.value;
    out.push({ streamId, flags, headers });
  }
  return out;
}

const request = (authority: string): [string, string][] => [
  [':method', 'POST'],
  [':scheme', 'http'],
  [':path', '/runtime.v1.RuntimeService/Version'],
  [':authority', authority],
  ['content-type', 'application/grpc'],
  ['user-agent', 'grpc-go/1.40.0'],
];

test('authority characters as nghttp2 accepts them', () => {
  assert.ok(isValidAuthority('localhost'));
  assert.ok(isValidAuthority('127.0.0.1:5000'));
  assert.ok(isValidAuthority('[::1]:80'));
  assert.ok(!isValidAuthority('/run/tscri/tscri.sock'));
});

test('a socket-path authority is replaced on every request of the connection', async () => {
  const enc = clientEncoder();
  const settings = frame(4, 0, 0, Buffer.alloc(0));
  const first = frame(1, 0x4, 1, enc(request('/run/tscri/tscri.sock')));
  const data = frame(0, 0x1, 1, Buffer.from([0, 0, 0, 0, 0]));
  // The second request refers to the first one's fields through the dynamic table.
  const second = frame(1, 0x4 | 0x1, 3, enc(request('/run/tscri/tscri.sock')));
  const out = await run([PREFACE, settings, first, data, second]);
  const seen = serverView(out);
  assert.equal(seen.length, 2);
  for (const s of seen) {
    assert.equal(s.headers[':authority'], 'localhost');
    assert.equal(s.headers[':path'], '/runtime.v1.RuntimeService/Version');
    assert.equal(s.headers['user-agent'], 'grpc-go/1.40.0');
  }
  assert.equal(seen[1].flags & 0x1, 0x1, 'END_STREAM kept');
  assert.ok(out.includes(data), 'DATA frame passed unchanged');
});

test('a connection with a valid authority passes through byte for byte', async () => {
  const enc = clientEncoder();
  const input = [PREFACE, frame(4, 0, 0, Buffer.alloc(0)), frame(1, 0x4, 1, enc(request('localhost'))), frame(1, 0x4, 3, enc(request('localhost')))];
  const out = await run(input);
  assert.deepEqual(out, Buffer.concat(input));
});

test('a header block split over CONTINUATION frames is rewritten whole', async () => {
  const block = clientEncoder()(request('/tmp/x.sock'));
  const out = await run([PREFACE, frame(1, 0, 1, block.subarray(0, 10)), frame(9, 0x4, 1, block.subarray(10))]);
  const seen = serverView(out);
  assert.equal(seen[0].headers[':authority'], 'localhost');
  assert.equal(seen[0].headers['content-type'], 'application/grpc');
});

describe('acceptConnection: the socket itself for a valid authority, the rewriting stream otherwise', () => {
  let dir: string;
  let sock: string;
  let server: grpc.Server;
  let listener: net.Server;
  const handed: Duplex[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-authority-'));
    sock = path.join(dir, 'cri.sock');
    const cri = loadCri();
    server = new grpc.Server();
    server.addService(cri.runtime.v1.RuntimeService.service, {
      Version: (_call: unknown, cb: grpc.sendUnaryData<object>) =>
        cb(null, { version: '0.1.0', runtime_name: 'test', runtime_version: '1', runtime_api_version: 'v1' }),
    });
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    listener = net.createServer((socket) =>
      acceptConnection(socket, (conn) => {
        handed.push(conn);
        injector.injectConnection(conn);
      }),
    );
    await new Promise<void>((resolve) => listener.listen(sock, resolve));
  });

  after(async () => {
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    server.forceShutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a grpc-js client (authority "localhost") is served on the socket itself', async () => {
    const client = connectCri(sock);
    try {
      const v = await client.runtime.Version({ version: 'v1' });
      assert.equal(v.runtime_name, 'test');
      assert.equal(await client.runtime.Version({ version: 'v1' }).then((r) => r.runtime_api_version), 'v1', 'a second call on the same connection');
    } finally {
      client.close();
    }
    assert.equal(handed.length, 1);
    assert.ok(handed[0] instanceof net.Socket, 'the connection went to the HTTP/2 server as the socket itself');
  });

  /**
   * A client that, as grpc-go does, sends its request only once the server's SETTINGS came, and
   * ACKs every SETTINGS: the frame types the server sent back on the connection.
   */
  async function waitingClient(authority: string): Promise<number[]> {
    const enc = clientEncoder();
    const conn = net.connect(sock);
    const types: number[] = [];
    let buf = Buffer.alloc(0);
    let sent = false;
    const msg = Buffer.from(loadCri().runtime.v1.RuntimeService.service.Version.requestSerialize({ version: 'v1' }));
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(msg.length, 1);
    const done = new Promise<void>((resolve, reject) => {
      conn.on('error', reject);
      conn.on('close', () => resolve());
      conn.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
          const len = buf.readUIntBE(0, 3);
          const type = buf[3];
          const flags = buf[4];
          const streamId = buf.readUInt32BE(5) & 0x7fffffff;
          buf = buf.subarray(9 + len);
          types.push(type);
          if (type === 4 && !(flags & 1)) {
            conn.write(frame(4, 1, 0, Buffer.alloc(0)));
            if (!sent) {
              sent = true;
              conn.write(frame(1, 4, 1, enc([...request(authority), ['te', 'trailers']])));
              conn.write(frame(0, 1, 1, Buffer.concat([prefix, msg])));
            }
          }
          // The response's trailers end stream 1: the call is over.
          if (streamId === 1 && flags & 1 && (type === 1 || type === 0)) conn.end();
          if (type === 7 || type === 3) conn.end();
        }
      });
    });
    conn.write(Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0))]));
    const timer = setTimeout(() => conn.destroy(new Error(`no answer; frames so far: ${types.join(',')}`)), 10_000);
    await done.finally(() => clearTimeout(timer));
    return types;
  }

  test('a client that waits for the server preface gets it, then is served: natively, or through the rewrite', async () => {
    for (const [authority, native] of [
      ['localhost', true],
      [sock, false],
    ] as const) {
      const before = handed.length;
      const types = await waitingClient(authority);
      assert.ok(!types.includes(7) && !types.includes(3), `${authority}: no GOAWAY or RST_STREAM, saw frame types ${types.join(',')}`);
      assert.ok(types.filter((t) => t === 1).length >= 1, `${authority}: response headers, saw frame types ${types.join(',')}`);
      assert.equal(handed.length, before + 1);
      assert.equal(handed[before] instanceof net.Socket, native, `${authority}: handed over ${native ? 'natively' : 'through the rewrite'}`);
    }
  });

  test('a socket-path authority (grpc-go < 1.52) is rewritten and served', async () => {
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(sock) });
    try {
      const msg = Buffer.from(loadCri().runtime.v1.RuntimeService.service.Version.requestSerialize({ version: 'v1' }));
      const call = async () => {
        const req = session.request({
          ':method': 'POST',
          ':path': '/runtime.v1.RuntimeService/Version',
          ':authority': sock,
          'content-type': 'application/grpc',
          te: 'trailers',
        });
        const prefix = Buffer.alloc(5);
        prefix.writeUInt32BE(msg.length, 1);
        req.end(Buffer.concat([prefix, msg]));
        const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => req.once('trailers', resolve));
        const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
          req.once('response', resolve);
          req.once('error', reject);
        });
        const body: Buffer[] = [];
        req.on('data', (c: Buffer) => body.push(c));
        await new Promise((resolve) => req.once('end', resolve));
        return { status: headers[':status'], grpcStatus: (await trailers)['grpc-status'], bytes: Buffer.concat(body).length };
      };
      for (let i = 0; i < 2; i++) {
        const r = await call();
        assert.deepEqual([r.status, r.grpcStatus], [200, '0'], `call ${i + 1} with a socket-path authority`);
        assert.ok(r.bytes > 5, 'a response message');
      }
    } finally {
      session.close();
    }
    const last = handed[handed.length - 1];
    assert.ok(!(last instanceof net.Socket), 'the connection went through the rewriting stream');
  });
});
