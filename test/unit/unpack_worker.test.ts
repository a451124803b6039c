import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import * as tar from 'tar-stream';
import { InvalidArgumentError, NotFoundError, RegistryUnavailableError } from '../../src/errors';
import { LayerPathError } from '../../src/image/layer_unpack';
import { UnpackPool, reviveError } from '../../src/image/unpack_pool';

const needRoot = process.getuid?.() === 0 ? {} : { skip: 'needs root (the unpacker chowns)' };
const REAL_WORKER = path.resolve(__dirname, '../../src/image/unpack_worker.js');
const WINDOW = 4 << 20;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-unpack-worker-'));
const pools: UnpackPool[] = [];
after(async () => {
  await Promise.all(pools.map((p) => p.close()));
  fs.rmSync(tmp, { recursive: true, force: true });
});

function pool(size: number, workerFile?: string): UnpackPool {
  const p = new UnpackPool(size, workerFile);
  pools.push(p);
  return p;
}

let n = 0;
function dest(tag = 'layer'): string {
  const d = path.join(tmp, `${tag}-${n++}`);
  fs.mkdirSync(d);
  return d;
}

async function pack(entries: Array<{ name: string; content?: Buffer | string; type?: tar.Header['type'] }>): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', resolve);
    p.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (e.content !== undefined) p.entry({ name: e.name, type: e.type ?? 'file', mode: 0o644 }, e.content, cb);
      else p.entry({ name: e.name, type: e.type ?? 'directory', mode: 0o755 }, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

function* chunked(b: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

const sha = (b: Buffer): string => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;

/** Feeds `data` to a job and returns both sides' results, as the puller sees them. */
async function feed(p: UnpackPool, dir: string, data: Iterable<Buffer> | Readable, compression: 'gzip' | 'none', signal?: AbortSignal) {
  const job = p.unpack(dir, compression, signal);
  const src = data instanceof Readable ? data : Readable.from(data, { objectMode: false });
  const [transfer, outcome] = await Promise.allSettled([pipeline(src, job.input), job.outcome]);
  assert.equal(outcome.status, 'fulfilled', 'outcome never rejects');
  return { transfer, outcome: outcome.value };
}

test('a gzip layer larger than the window unpacks on a worker with the right diff id', needRoot, async () => {
  const big = crypto.randomBytes(3 * WINDOW);
  const tarBuf = await pack([{ name: 'etc' }, { name: 'etc/hostname', content: 'box\n' }, { name: 'big.bin', content: big }]);
  const gz = zlib.gzipSync(tarBuf, { level: 1 });
  const d = dest();
  const { transfer, outcome } = await feed(pool(2), d, chunked(gz, 64 * 1024), 'gzip');
  assert.equal(transfer.status, 'fulfilled');
  assert.ok(outcome.ok, `unpack failed: ${outcome.ok ? '' : outcome.error.stack}`);
  assert.equal(outcome.diffId, sha(tarBuf));
  assert.equal(outcome.entries, 3);
  assert.equal(outcome.bytes, big.length + 4);
  assert.equal(fs.readFileSync(path.join(d, 'etc/hostname'), 'utf8'), 'box\n');
  assert.ok(fs.readFileSync(path.join(d, 'big.bin')).equals(big));
});

test('more layers than threads share the threads and all succeed', needRoot, async () => {
  const p = pool(2);
  const layers = await Promise.all([0, 1, 2, 3].map((i) => pack([{ name: `f${i}`, content: crypto.randomBytes(1 << 20) }])));
  const dirs = layers.map(() => dest());
  const results = await Promise.all(layers.map((l, i) => feed(p, dirs[i], chunked(l, 16 * 1024), 'none')));
  assert.ok(p.threads <= 2, `pool of 2 runs ${p.threads} threads`);
  results.forEach(({ outcome }, i) => {
    assert.ok(outcome.ok);
    assert.equal(outcome.diffId, sha(layers[i]));
    assert.ok(fs.readFileSync(path.join(dirs[i], `f${i}`)).equals(layers[i].subarray(512, 512 + (1 << 20))));
  });
});

test('a path escape comes back as LayerPathError (an InvalidArgumentError) and stops the input', needRoot, async () => {
  const tarBuf = await pack([
    { name: 'ok.txt', content: 'fine' },
    { name: '../../escaped', content: 'bad' },
  ]);
  const d = dest();
  const { transfer, outcome } = await feed(pool(1), d, [tarBuf], 'none');
  assert.ok(!outcome.ok);
  assert.equal(outcome.stage, 'unpack');
  assert.ok(outcome.error instanceof LayerPathError, `got ${outcome.error.name}: ${outcome.error.message}`);
  assert.ok(outcome.error instanceof InvalidArgumentError);
  assert.equal(outcome.error.entry, '../../escaped');
  assert.match(outcome.error.message, /^layer entry "\.\.\/\.\.\/escaped": .*escapes the layer/);
  assert.equal(fs.existsSync(path.join(tmp, 'escaped')), false);
  // A fully buffered input may already have been consumed; if not, it failed with the same error.
  if (transfer.status === 'rejected') assert.equal(transfer.reason, outcome.error);
});

test('bytes that do not gunzip fail at the decompress stage', async () => {
  const { outcome } = await feed(pool(1), dest(), [crypto.randomBytes(100_000)], 'gzip');
  assert.ok(!outcome.ok);
  assert.equal(outcome.stage, 'decompress');
  assert.equal((outcome.error as NodeJS.ErrnoException).code, 'Z_DATA_ERROR');
});

test('an abort stops a layer whose input is still open', needRoot, async () => {
  const tarBuf = await pack([
    { name: 'a', content: crypto.randomBytes(1 << 20) },
    { name: 'b', content: crypto.randomBytes(1 << 20) },
  ]);
  const src = new Readable({ read() {} });
  src.push(tarBuf.subarray(0, 1 << 20)); // the rest never comes
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('pull cancelled by test')), 200);
  const t0 = Date.now();
  const { transfer, outcome } = await feed(pool(1), dest(), src, 'none', ac.signal);
  assert.ok(Date.now() - t0 < 5000, 'the layer stops promptly');
  assert.ok(!outcome.ok);
  assert.match(outcome.error.message, /pull cancelled by test/);
  assert.equal(transfer.status, 'rejected');
});

test('a worker that crashes fails its layer and is replaced', needRoot, async () => {
  const file = path.join(tmp, 'crashing_worker.js');
  fs.writeFileSync(
    file,
    `const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => { if (m.dest.includes('crash')) process.exit(7); });
require(${JSON.stringify(REAL_WORKER)});
`,
  );
  const p = pool(1, file);
  const tarBuf = await pack([{ name: 'x', content: 'x' }]);
  const crashed = await feed(p, dest('crash'), [tarBuf], 'none');
  assert.ok(!crashed.outcome.ok);
  assert.match(crashed.outcome.error.message, /unpack worker exited with code 7/);
  const d = dest();
  const next = await feed(p, d, [tarBuf], 'none');
  assert.ok(next.outcome.ok, 'a new worker takes the next layer');
  assert.equal(fs.readFileSync(path.join(d, 'x'), 'utf8'), 'x');
});

test('no more than the window is in flight to a worker that does not keep up', async () => {
  const file = path.join(tmp, 'stalled_worker.js');
  // Takes every chunk and never acknowledges one: a worker stuck on a slow disk.
  fs.writeFileSync(file, `require('node:worker_threads').parentPort.on('message', (m) => m.port.on('message', () => {}));\n`);
  const p = pool(1, file);
  const job = p.unpack(dest(), 'none');
  let accepted = 0;
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < 4 * (WINDOW / chunk.length); i++) job.input.write(chunk, () => (accepted += chunk.length));
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(accepted >= WINDOW - chunk.length && accepted <= WINDOW + chunk.length, `accepted ${accepted} bytes without acks`);
  job.input.on('error', () => {});
  await p.close();
  const outcome = await job.outcome;
  assert.ok(!outcome.ok, 'closing the pool fails the layer');
});

test('errors come back with their class and message', () => {
  const nf = reviveError({ name: 'NotFoundError', message: 'gone' });
  assert.ok(nf instanceof NotFoundError);
  assert.equal(nf.message, 'gone');
  const ru = reviveError({ name: 'RegistryUnavailableError', message: 'RegistryUnavailable: down' });
  assert.ok(ru instanceof RegistryUnavailableError);
  assert.equal(ru.message, 'RegistryUnavailable: down');
  const sys = reviveError({ name: 'Error', message: 'unpack layer into /x: EIO', code: 'EIO' });
  assert.equal(sys.constructor, Error);
  assert.equal((sys as NodeJS.ErrnoException).code, 'EIO');
  const abort = reviveError({ name: 'AbortError', message: 'aborted' });
  assert.equal(abort.name, 'AbortError');
});
