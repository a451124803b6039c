import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthorityFix, isValidAuthority } from '../../src/server/authority_fix';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const hpack = require('hpack.js');

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
    const type = bytes[off + 3]!;
    const flags = bytes[off + 4]!;
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
  assert.equal(seen[1]!.flags & 0x1, 0x1, 'END_STREAM kept');
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
  assert.equal(seen[0]!.headers[':authority'], 'localhost');
  assert.equal(seen[0]!.headers['content-type'], 'application/grpc');
});
