// What the image service promises beyond single pulls, against Debian's docker-registry behind a
// small loopback gateway that counts, slows or stalls blob downloads: concurrent pulls of one
// layer share one download, a pull that stops moving is cancelled, pinned images are reported,
// metrics count calls and bytes, and two daemons run side by side.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { expectCriError } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { busyboxLayer, buildLayer, pushImage, type BuiltLayer, type PushedImage } from '../helpers/images';
import { startRegistry, type Registry } from '../helpers/registry';

/** Loopback gateway in front of the registry: per-digest GET counts, throttling and stalls. */
class Gateway {
  readonly blobGets = new Map<string, number>();
  readonly slow = new Map<string, number>(); // digest -> bytes per second
  readonly stall = new Map<string, number>(); // digest -> bytes sent before going silent
  readonly trickle = new Map<string, number>(); // digest -> ms between single bytes
  private readonly server: http.Server;
  private readonly sockets = new Set<import('node:net').Socket>();
  host = '';

  constructor(private readonly upstream: string) {
    this.server = http.createServer((req, res) => this.forward(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.host = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    const digest = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')?.[1];
    if (digest && req.method === 'GET') this.blobGets.set(digest, (this.blobGets.get(digest) ?? 0) + 1);
    const up = http.request(`http://${this.upstream}${req.url}`, { method: req.method, headers: { ...req.headers, host: this.upstream } }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      const rate = digest ? this.slow.get(digest) : undefined;
      const stallAt = digest ? this.stall.get(digest) : undefined;
      const every = digest ? this.trickle.get(digest) : undefined;
      if (every !== undefined) {
        // One byte at a time, each soon enough to count as progress.
        const pending: Buffer[] = [];
        ur.on('data', (chunk: Buffer) => pending.push(chunk));
        const timer = setInterval(() => {
          const head = pending.at(0);
          if (!head) return;
          res.write(head.subarray(0, 1));
          if (head.length > 1) pending[0] = head.subarray(1);
          else pending.shift();
        }, every);
        res.on('close', () => {
          clearInterval(timer);
          ur.destroy();
        });
        return;
      }
      if (rate === undefined && stallAt === undefined) {
        ur.pipe(res);
        return;
      }
      let sent = 0;
      const started = Date.now();
      ur.on('data', (chunk: Buffer) => {
        if (stallAt !== undefined) {
          // Send the first bytes, then nothing more: the connection stays open and silent.
          if (sent < stallAt) res.write(chunk.subarray(0, stallAt - sent));
          sent += chunk.length;
          return;
        }
        res.write(chunk);
        sent += chunk.length;
        // Not stalled, so the blob was slowed: the early return above passed only then.
        assert.ok(rate !== undefined, `a rate for slowed blob ${digest ?? ''}`);
        const ahead = sent / rate - (Date.now() - started) / 1000;
        if (ahead > 0) {
          ur.pause();
          setTimeout(() => ur.resume(), ahead * 1000);
        }
      });
      ur.on('end', () => {
        if (stallAt === undefined) res.end();
      });
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  }
}

function randomLayer(bytes: number, name: string): Promise<BuiltLayer> {
  // Random data does not compress: the blob is as large as the file, so rates are predictable.
  return buildLayer({ entries: [{ type: 'file', path: name, content: crypto.randomBytes(bytes) }], compression: 'gzip' });
}

function metricsAddress(daemon: Daemon): string {
  const line = daemon
    .logs()
    .split('\n')
    .find((l) => l.includes('"tscri serving"'));
  const m = line && /"metrics":"([^"]+)"/.exec(line);
  assert.ok(m, `the daemon logs its metrics address at start; log was:\n${daemon.logs().slice(-2000)}`);
  return m[1];
}

async function metricValue(address: string, pattern: RegExp): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    http
      .get(`http://${address}/metrics`, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
  const line = text.split('\n').find((l) => pattern.test(l));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

function stagingLeftovers(daemon: Daemon): string[] {
  const dir = path.join(daemon.root, 'layers');
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.startsWith('.')) : [];
}

describe('image service: shared downloads, stalls, pinning, metrics, side-by-side daemons', { timeout: 180_000 }, () => {
  let registry: Registry;
  let gateway: Gateway;
  let daemon: Daemon;
  let shared: BuiltLayer;
  let stalled: BuiltLayer;
  let first: PushedImage;
  let second: PushedImage;
  let stuck: PushedImage;
  let pinned: PushedImage;
  let trickled: PushedImage;
  let artifact: PushedImage;
  let odd: BuiltLayer;

  before(async () => {
    registry = await startRegistry();
    gateway = new Gateway(registry.host);
    await gateway.start();
    const base = await busyboxLayer();
    shared = await randomLayer(3 << 20, 'shared.bin');
    stalled = await randomLayer(1 << 20, 'stalled.bin');
    first = await pushImage(registry.host, 'share/one', 'v1', { layers: [shared, await randomLayer(4096, 'one.bin')] });
    second = await pushImage(registry.host, 'share/two', 'v1', { layers: [shared, await randomLayer(4096, 'two.bin')] });
    stuck = await pushImage(registry.host, 'stuck', 'v1', { layers: [base, stalled] });
    pinned = await pushImage(registry.host, 'pinned', 'v1', { layers: [base] });
    trickled = await pushImage(registry.host, 'trickled', 'v1', { layers: [await randomLayer(64 << 10, 'trickled.bin')] });
    // An OCI artifact's blob in a layer's place, though gzip'd tar and named like one: the
    // registry stores it, a runtime must not unpack it.
    odd = { ...(await randomLayer(1024, 'odd.bin')), mediaType: 'application/vnd.example.unknown.tar+gzip' };
    artifact = await pushImage(registry.host, 'artifact', 'v1', { layers: [odd] });
    daemon = await startDaemon({
      config: [
        `pinned_images = ["${gateway.host}/pinned:v1"]`,
        'image_pull_progress_timeout = "2s"',
        'image_pull_min_throughput = "1KiB/s"',
        'max_concurrent_downloads = 3',
      ].join('\n'),
    });
  });

  after(async () => {
    // Each is unset when before() failed ahead of it.
    await (daemon as Daemon | undefined)?.stop();
    await (gateway as Gateway | undefined)?.stop();
    await (registry as Registry | undefined)?.stop();
  });

  const via = (img: PushedImage): string => {
    assert.ok(img.tagRef, 'an image pushed with a tag');
    return img.tagRef.replace(registry.host, gateway.host);
  };

  test('two pulls of images sharing a layer download it once', async () => {
    // Slowed to ~3 s, so the second pull finds the first one's download under way.
    gateway.slow.set(shared.digest, 1 << 20);
    const [a, b] = await Promise.all([
      daemon.cri.image.PullImage({ image: { image: via(first) } }),
      daemon.cri.image.PullImage({ image: { image: via(second) } }),
    ]);
    gateway.slow.delete(shared.digest);
    assert.equal(a.image_ref, first.configDigest);
    assert.equal(b.image_ref, second.configDigest);
    assert.equal(gateway.blobGets.get(shared.digest), 1, `expected one GET of the shared layer, saw ${gateway.blobGets.get(shared.digest)}`);
    for (const img of [first, second]) {
      const st = await daemon.cri.image.ImageStatus({ image: { image: via(img) } });
      assert.equal(st.image?.id, img.configDigest, `${via(img)} is listed after the shared pull`);
    }
  });

  test('a pull that stops moving is cancelled after the progress timeout, leaving nothing', async () => {
    gateway.stall.set(stalled.digest, 64 << 10);
    const started = Date.now();
    const err = await expectCriError('PullImage of a stalled layer', () => daemon.cri.image.PullImage({ image: { image: via(stuck) } }, { timeoutMs: 60_000 }));
    const seconds = (Date.now() - started) / 1000;
    gateway.stall.delete(stalled.digest);
    assert.equal(err.codeName, 'CANCELLED', `code: ${err.codeName}: ${err.details}`);
    assert.match(err.details, /no progress for 2s/, err.details);
    assert.ok(seconds < 10, `cancelled after ${seconds.toFixed(1)} s, expected soon after the 2 s timeout`);
    const st = await daemon.cri.image.ImageStatus({ image: { image: via(stuck) } });
    assert.equal(st.image, null, 'no image recorded for the cancelled pull');
    assert.deepEqual(stagingLeftovers(daemon), [], 'no half-unpacked layer left');
  });

  test('a pull that moves slowly is not cancelled', async () => {
    // 1 MiB at 256 KiB/s takes ~4 s, twice the progress timeout, but bytes keep coming.
    gateway.slow.set(stalled.digest, 256 << 10);
    const res = await daemon.cri.image.PullImage({ image: { image: via(stuck) } }, { timeoutMs: 60_000 });
    gateway.slow.delete(stalled.digest);
    assert.equal(res.image_ref, stuck.configDigest);
  });

  test('pinned images from the config are reported pinned, others not', async () => {
    await daemon.cri.image.PullImage({ image: { image: via(pinned) } });
    const p = await daemon.cri.image.ImageStatus({ image: { image: via(pinned) } });
    assert.equal(p.image?.pinned, true, `${via(pinned)} is in pinned_images`);
    const q = await daemon.cri.image.ImageStatus({ image: { image: via(first) } });
    assert.equal(q.image?.pinned, false, `${via(first)} is not pinned`);
  });

  test('metrics count calls by method and code, and pulled bytes', async () => {
    const address = metricsAddress(daemon);
    assert.match(address, /^127\.0\.0\.1:\d+$/, 'metrics listen on loopback');
    const ok = await metricValue(address, /^tscri_grpc_requests_total\{method="runtime\.v1\.ImageService\/PullImage",code="OK"\}/);
    const cancelled = await metricValue(address, /^tscri_grpc_requests_total\{method="runtime\.v1\.ImageService\/PullImage",code="CANCELLED"\}/);
    const bytes = await metricValue(address, /^tscri_image_pull_bytes_total /);
    assert.ok(ok >= 4, `successful pulls counted: saw ${ok}`);
    assert.equal(cancelled, 1, `the cancelled pull counted once: saw ${cancelled}`);
    assert.ok(bytes >= shared.size, `pulled bytes counted: saw ${bytes}, the shared layer alone is ${shared.size}`);
  });

  test('a pull trickling a byte every 100 ms is cancelled for its throughput, leaving nothing', async () => {
    // Each byte is progress, so the no-progress timeout alone would wait ~2 hours for 64 KiB.
    const layer = trickled.layers[0];
    gateway.trickle.set(layer.digest, 100);
    const started = Date.now();
    try {
      const err = await expectCriError('PullImage of a trickling layer', () =>
        daemon.cri.image.PullImage({ image: { image: via(trickled) } }, { timeoutMs: 20_000 }),
      );
      const seconds = (Date.now() - started) / 1000;
      assert.equal(err.codeName, 'CANCELLED', `code: ${err.codeName}: ${err.details}`);
      assert.match(err.details, /under the minimum throughput of 1024 B\/s \(image_pull_min_throughput\)/, err.details);
      assert.ok(seconds < 10, `cancelled after ${seconds.toFixed(1)} s, expected soon after the 2 s window`);
    } finally {
      gateway.trickle.delete(layer.digest);
    }
    assert.equal((await daemon.cri.image.ImageStatus({ image: { image: via(trickled) } })).image, null, 'no image recorded');
    assert.deepEqual(stagingLeftovers(daemon), [], 'no half-unpacked layer left');
  });

  test('a layer of a media type that is not an image layer is refused before it is fetched', async () => {
    const err = await expectCriError('PullImage of an artifact', () => daemon.cri.image.PullImage({ image: { image: via(artifact) } }));
    assert.equal(err.codeName, 'INVALID_ARGUMENT', `code: ${err.codeName}: ${err.details}`);
    assert.match(err.details, /unsupported layer media type "application\/vnd\.example\.unknown\.tar\+gzip"/, err.details);
    assert.equal(gateway.blobGets.get(odd.digest), undefined, 'the artifact blob was never downloaded');
    assert.equal((await daemon.cri.image.ImageStatus({ image: { image: via(artifact) } })).image, null, 'no image recorded');
  });

  test('a second daemon with its own socket and directories runs beside the first', async () => {
    const other = await startDaemon();
    try {
      assert.notEqual(other.socket, daemon.socket);
      const [v1, v2] = await Promise.all([daemon.cri.runtime.Version({ version: 'v1' }), other.cri.runtime.Version({ version: 'v1' })]);
      assert.equal(v1.runtime_name, 'tscri');
      assert.equal(v2.runtime_name, 'tscri');
      assert.equal((await other.cri.image.ListImages({})).images.length, 0, 'the second daemon starts with its own, empty store');
      await other.cri.image.PullImage({ image: { image: via(pinned) } });
      assert.equal((await other.cri.image.ListImages({})).images.length, 1);
    } finally {
      await other.stop();
    }
    const st = await daemon.cri.image.ImageStatus({ image: { image: via(first) } });
    assert.equal(st.image?.id, first.configDigest, 'the first daemon still serves after the second stopped');
  });
});
