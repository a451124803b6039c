import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { CancelledError, CriError, InvalidArgumentError, messageOf } from '../errors';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { LayerStore } from '../snapshot/layer_store';
import type { BlobStore } from './blob_store';
import type { ImageRecord } from './image_store';
import { DigestCheck, compressionOf } from './layer_streams';
import {
  type Descriptor,
  chainIds,
  checkConfigMediaType,
  detectMediaType,
  isIndex,
  nodePlatform,
  parseConfig,
  parseIndex,
  parseManifest,
  selectPlatform,
} from './manifest';
import { type ImageReference, formatReference, repository } from './reference';
import type { AuthConfig } from './registry/auth';
import { type RegistryClient, toRegistryError } from './registry/client';
import type { RegistryEndpoint } from './registry/hosts';
import { type UnpackJob, type UnpackOutcome, UnpackPool } from './unpack_pool';

export interface PullerDeps {
  client: RegistryClient;
  layers: LayerStore;
  blobs: BlobStore;
  metrics: Metrics;
  maxConcurrentDownloads: number;
  progressTimeoutMs: number;
  /** Bytes per second a downloading pull must average over each progress window; 0: no floor. */
  minThroughput: number;
}

/** A layer being fetched and unpacked; later pulls of the same layer wait on it. */
interface InflightLayer {
  done: Promise<void>;
  onBytes: Set<(n: number) => void>;
}

/** What a pull produced, before it becomes an image record. */
export type PulledImage = Omit<ImageRecord, 'createdAt'>;

/**
 * The pull pipeline: resolve → manifest (index → this node's platform) → config → layers in
 * parallel (bounded), each streamed from the HTTP body through digest check, decompression
 * and diff-id hashing into the tar unpacker (the last three on a worker thread, see
 * unpack_pool.ts), so a layer is unpacked while it downloads. A layer becomes visible only
 * when whole and verified; the caller writes the image record last.
 */
export class Puller {
  private readonly inflight = new Map<string, InflightLayer>();
  private readonly unpackPool: UnpackPool;

  constructor(private readonly deps: PullerDeps) {
    this.unpackPool = new UnpackPool(UnpackPool.defaultSize(deps.maxConcurrentDownloads));
  }

  /** Chain IDs being unpacked now: GC must not delete them. */
  busyLayers(): Set<string> {
    return new Set(this.inflight.keys());
  }

  async pull(ref: ImageReference, auth: AuthConfig | undefined, clientSignal: AbortSignal, log: Logger): Promise<PulledImage> {
    const name = formatReference(ref);
    const watchdog = new ProgressWatchdog(this.deps.progressTimeoutMs, this.deps.minThroughput, name);
    const signal = AbortSignal.any([clientSignal, watchdog.signal]);
    const start = process.hrtime.bigint();
    try {
      const image = await this.pullWithSignal(ref, name, auth, signal, watchdog, log);
      this.deps.metrics.pullDuration.observe({ outcome: 'success' }, Number(process.hrtime.bigint() - start) / 1e9);
      return image;
    } catch (err) {
      this.deps.metrics.pullDuration.observe({ outcome: 'failure' }, Number(process.hrtime.bigint() - start) / 1e9);
      if (signal.aborted && signal.reason instanceof Error) throw signal.reason;
      throw err;
    } finally {
      watchdog.stop();
    }
  }

  private async pullWithSignal(
    ref: ImageReference,
    name: string,
    auth: AuthConfig | undefined,
    signal: AbortSignal,
    watchdog: ProgressWatchdog,
    log: Logger,
  ): Promise<PulledImage> {
    const { client, blobs } = this.deps;
    const resolved = await client.resolve(ref, { auth, signal });
    watchdog.touch();
    const endpoint = resolved.endpoint;
    const topDigest = resolved.digest;
    let manifestDigest = topDigest;
    let manifestBody = resolved.body;
    let mediaType = detectMediaType(resolved.body, resolved.mediaType, `manifest of ${name}`);
    if (isIndex(mediaType)) {
      await blobs.put(topDigest, resolved.body);
      const chosen = selectFrom(resolved.body, name);
      const child = await client.fetchManifest(ref, chosen.digest, endpoint, { auth, signal });
      watchdog.touch();
      manifestDigest = chosen.digest;
      manifestBody = child.body;
      mediaType = detectMediaType(child.body, child.mediaType, `manifest ${chosen.digest} of ${name}`);
      if (isIndex(mediaType)) throw new InvalidArgumentError(`${name}: nested image indexes are not supported`);
    }
    const manifest = parseManifest(manifestBody, `manifest ${manifestDigest} of ${name}`);
    // Refused before any blob is fetched: a layer or config this runtime cannot use.
    checkConfigMediaType(manifest, `manifest ${manifestDigest} of ${name}`);
    for (const l of manifest.layers) compressionOf(l.mediaType, `layer ${l.digest} of ${name}`);
    await blobs.put(manifestDigest, manifestBody);

    const configBody = await this.fetchSmallBlob(ref, manifest.config, endpoint, auth, signal, `config of ${name}`);
    watchdog.touch();
    const config = parseConfig(configBody, `config ${manifest.config.digest} of ${name}`);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== manifest.layers.length) {
      throw new InvalidArgumentError(`${name}: manifest lists ${manifest.layers.length} layers but config lists ${diffIds.length} diff_ids`);
    }
    const chains = chainIds(diffIds, (s) => createHash('sha256').update(s).digest('hex'));
    const layers = manifest.layers.map((d, i) => ({
      digest: d.digest,
      mediaType: d.mediaType,
      size: d.size,
      diffId: diffIds[i],
      chainId: chains[i],
    }));

    await watchdog.downloading(() =>
      runBounded(layers, this.deps.maxConcurrentDownloads, (layer) => this.ensureLayer(ref, name, layer, endpoint, auth, signal, watchdog, log)),
    );
    await blobs.put(manifest.config.digest, configBody);

    const repo = repository(ref);
    return {
      id: manifest.config.digest,
      repoTags: ref.tag !== undefined ? [`${repo}:${ref.tag}`] : [],
      repoDigests: [`${repo}@${topDigest}`],
      manifestDigest,
      layers,
      size: manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0),
      config,
    };
  }

  private async fetchSmallBlob(
    ref: ImageReference,
    desc: Descriptor,
    endpoint: RegistryEndpoint,
    auth: AuthConfig | undefined,
    signal: AbortSignal,
    what: string,
  ): Promise<Buffer> {
    if (desc.size > 16 * 1024 * 1024) throw new InvalidArgumentError(`${what}: ${desc.size} bytes is too large for a config`);
    const body = await this.deps.client.fetchBlob(ref, desc.digest, endpoint, { auth, signal });
    const chunks: Buffer[] = [];
    const check = new DigestCheck(desc.digest, desc.size, what);
    check.on('data', (c: Buffer) => chunks.push(c));
    await pipeline(body, check, { signal });
    return Buffer.concat(chunks);
  }

  /** Makes the layer present, sharing a download already under way for the same chain ID. */
  private async ensureLayer(
    ref: ImageReference,
    name: string,
    layer: PulledImage['layers'][number],
    endpoint: RegistryEndpoint,
    auth: AuthConfig | undefined,
    signal: AbortSignal,
    watchdog: ProgressWatchdog,
    log: Logger,
  ): Promise<void> {
    for (;;) {
      if (this.deps.layers.has(layer.chainId)) return;
      signal.throwIfAborted();
      const running = this.inflight.get(layer.chainId);
      if (!running) break;
      const listener = (n: number): void => watchdog.touch(n);
      running.onBytes.add(listener);
      try {
        await running.done;
        return;
      } catch {
        // The other pull failed or was cancelled; this pull tries on its own (and fails
        // on its own if the layer really is bad).
      } finally {
        running.onBytes.delete(listener);
      }
    }
    const entry: InflightLayer = { done: Promise.resolve(), onBytes: new Set([(n: number) => watchdog.touch(n)]) };
    entry.done = this.fetchAndUnpack(ref, name, layer, endpoint, auth, signal, entry, log);
    this.inflight.set(layer.chainId, entry);
    try {
      await entry.done;
    } finally {
      this.inflight.delete(layer.chainId);
    }
  }

  private async fetchAndUnpack(
    ref: ImageReference,
    name: string,
    layer: PulledImage['layers'][number],
    endpoint: RegistryEndpoint,
    auth: AuthConfig | undefined,
    signal: AbortSignal,
    entry: InflightLayer,
    log: Logger,
  ): Promise<void> {
    const { client, layers, metrics } = this.deps;
    const what = `layer ${layer.digest} of ${name}`;
    const compression = compressionOf(layer.mediaType, what);
    const started = Date.now();
    const body = await client.fetchBlob(ref, layer.digest, endpoint, { auth, signal });
    const staging = await layers.stage(layer.chainId);
    const check = new DigestCheck(layer.digest, layer.size, what, (n) => {
      metrics.pullBytes.inc(n);
      for (const fn of entry.onBytes) fn(n);
    });
    // Decompression, diff-id hashing and unpacking run on a worker thread; this thread keeps the
    // download and the check of what the registry sent.
    let job: UnpackJob;
    try {
      job = this.unpackPool.unpack(staging, compression, signal);
    } catch (err) {
      body.destroy();
      await layers.discard(staging);
      throw err;
    }
    const [t, o] = await Promise.allSettled([pipeline(body, check, job.input, { signal }), job.outcome]);
    try {
      const transferFailure: unknown = t.status === 'rejected' ? t.reason : undefined;
      // job.outcome never rejects; the worker has stopped touching the staging dir once it settles.
      const u: UnpackOutcome = o.status === 'fulfilled' ? o.value : { ok: false, stage: 'unpack', error: o.reason as Error };
      // When both fail, the one that is not just the echo of the other's failure is the cause:
      // an unpack refusal (path escape) ends the transfer, a transfer failure starves the unpack.
      // A decompression failure is a fault of the bytes as served, like a transfer failure.
      if (!u.ok && u.stage === 'unpack' && (transferFailure === undefined || u.error instanceof CriError || u.error === transferFailure)) {
        throw wrap(what, u.error);
      }
      if (transferFailure !== undefined) throw toRegistryError(transferFailure, what);
      if (!u.ok) throw toRegistryError(u.error, what);
      if (u.diffId !== layer.diffId) {
        throw new InvalidArgumentError(`${what}: uncompressed content hashes to ${u.diffId}, config says ${layer.diffId}`);
      }
      await layers.commit(staging, { chainId: layer.chainId, diffId: layer.diffId, bytes: u.bytes, inodes: u.entries });
    } catch (err) {
      await layers.discard(staging);
      throw err;
    }
    log.debug({ layer: layer.digest, chainId: layer.chainId, ms: Date.now() - started }, 'layer unpacked');
  }
}

function selectFrom(body: Buffer, name: string): Descriptor {
  return selectPlatform(parseIndex(body, `index of ${name}`), nodePlatform(), `index of ${name}`);
}

/** Domain errors keep their class (and so their gRPC code); anything else gains the layer's name. */
function wrap(what: string, err: unknown): Error {
  if (err instanceof CriError) return err;
  if (err instanceof Error && err.name === 'AbortError') return err;
  return new Error(`${what}: ${messageOf(err)}`, { cause: err });
}

/** Runs `fn` on every item with at most `limit` at once; the first failure is thrown once all settle. */
async function runBounded<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  // Boxed, so that whatever was thrown is rethrown as it was.
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && failure === undefined) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (err) {
        failure ??= { error: err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure.error;
}

/**
 * Cancels a pull that has moved no byte for `timeoutMs`, as the kubelet's
 * image-pull-progress-deadline did: a large pull that keeps moving is never cut off. A pull that
 * moves, but fewer than `minBytesPerSec` on average over a whole window of `timeoutMs` while a
 * blob is being downloaded, is cancelled too: one registry trickling a byte now and then would
 * otherwise hold the pull, and the kubelet's serialized pulls behind it, for ever.
 */
class ProgressWatchdog {
  private readonly controller = new AbortController();
  private last = Date.now();
  private readonly timer: NodeJS.Timeout;
  /** Downloads under way; the floor is measured only over windows spent downloading. */
  private downloads = 0;
  private windowStart = Date.now();
  private windowBytes = 0;
  readonly signal = this.controller.signal;

  constructor(
    private readonly timeoutMs: number,
    private readonly minBytesPerSec: number,
    private readonly name: string,
  ) {
    this.timer = setInterval(() => this.check(), Math.max(100, Math.min(timeoutMs / 4, 5000)));
    this.timer.unref();
  }

  private check(): void {
    const now = Date.now();
    if (now - this.last > this.timeoutMs) {
      this.controller.abort(new CancelledError(`pull of ${this.name} cancelled: no progress for ${seconds(this.timeoutMs)}`));
      return;
    }
    if (this.downloads === 0 || this.minBytesPerSec <= 0 || now - this.windowStart < this.timeoutMs) return;
    const rate = (this.windowBytes * 1000) / (now - this.windowStart);
    if (rate < this.minBytesPerSec) {
      this.controller.abort(
        new CancelledError(
          `pull of ${this.name} cancelled: ${this.windowBytes} bytes in the last ${seconds(now - this.windowStart)} ` +
            `(${Math.round(rate)} B/s), under the minimum throughput of ${this.minBytesPerSec} B/s (image_pull_min_throughput)`,
        ),
      );
      return;
    }
    this.windowStart = now;
    this.windowBytes = 0;
  }

  /** Progress: `bytes` more arrived (0 for a step that is not a download). */
  touch(bytes = 0): void {
    this.last = Date.now();
    this.windowBytes += bytes;
  }

  /** Wraps a download: the throughput floor applies while one runs. */
  async downloading<T>(work: () => Promise<T>): Promise<T> {
    if (this.downloads++ === 0) {
      this.windowStart = Date.now();
      this.windowBytes = 0;
    }
    try {
      return await work();
    } finally {
      this.downloads--;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(1)}s`;
}
