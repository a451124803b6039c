import path from 'node:path';
import { InvalidArgumentError } from '../errors';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { LayerStore } from '../snapshot/layer_store';
import { BlobStore } from './blob_store';
import { type ImageRecord, ImageStore } from './image_store';
import { Puller } from './pull';
import { formatReference, isImageId, parseReference } from './reference';
import type { AuthConfig } from './registry/auth';
import { RegistryClient } from './registry/client';

export interface ImageServiceOptions {
  root: string;
  registryConfigDir: string;
  insecureRegistries: string[];
  pinnedImages: string[];
  maxConcurrentDownloads: number;
  progressTimeoutMs: number;
  minThroughput: number;
  metrics: Metrics;
  log: Logger;
}

/** The images this node holds: pulling, naming, looking up and removing them. */
export class ImageService {
  readonly layers: LayerStore;
  private readonly blobs: BlobStore;
  private readonly images: ImageStore;
  private readonly puller: Puller;
  private readonly pinned: Set<string>;
  private pullsInProgress = 0;
  private readonly layerUsers: (() => Iterable<string>)[] = [];

  constructor(private readonly opts: ImageServiceOptions) {
    this.layers = new LayerStore(path.join(opts.root, 'layers'), path.join(opts.root, 'meta', 'layers'));
    this.blobs = new BlobStore(path.join(opts.root, 'blobs'));
    this.images = new ImageStore(path.join(opts.root, 'meta', 'images'));
    this.puller = new Puller({
      client: new RegistryClient({ configDir: opts.registryConfigDir, insecureHosts: opts.insecureRegistries, userAgent: 'tscri' }),
      layers: this.layers,
      blobs: this.blobs,
      metrics: opts.metrics,
      maxConcurrentDownloads: opts.maxConcurrentDownloads,
      progressTimeoutMs: opts.progressTimeoutMs,
      minThroughput: opts.minThroughput,
    });
    this.pinned = new Set(
      opts.pinnedImages.map((p) => {
        try {
          return isImageId(p) ? normalizeId(p) : formatReference(parseReference(p));
        } catch {
          return p;
        }
      }),
    );
  }

  async init(): Promise<void> {
    await this.blobs.init();
    await this.layers.init();
    await this.images.init();
    // An image whose layers went missing (crash mid-removal) is not usable: drop its record.
    for (const rec of this.images.all()) {
      if (rec.layers.some((l) => !this.layers.has(l.chainId))) {
        this.opts.log.warn({ image: rec.id }, 'image record without its layers removed');
        await this.images.delete(rec.id);
      }
    }
    // No garbage collection here: layer users (containers' image volumes) are not loaded yet;
    // the daemon collects once they are.
  }

  /** Registers a source of layers (chain IDs) in use outside image records. */
  addLayerUser(inUse: () => Iterable<string>): void {
    this.layerUsers.push(inUse);
  }

  /** Pulls `image` and returns its record; the record is written only after every layer is in place. */
  async pull(image: string, auth: AuthConfig | undefined, signal: AbortSignal, log: Logger): Promise<ImageRecord> {
    if (!image) throw new InvalidArgumentError('PullImage: image reference is empty');
    const ref = parseReference(image);
    this.pullsInProgress++;
    try {
      const pulled = await this.puller.pull(ref, auth, signal, log);
      return await this.images.put({ ...pulled, createdAt: Date.now() });
    } finally {
      this.pullsInProgress--;
    }
  }

  /**
   * The image a name refers to: an id (full or `sha256:`-less), a tag or digest reference in
   * any Docker shorthand, or an unambiguous id prefix as `crictl images` prints it.
   */
  find(nameOrId: string): ImageRecord | undefined {
    if (!nameOrId) throw new InvalidArgumentError('image name is empty');
    if (isImageId(nameOrId)) return this.images.get(normalizeId(nameOrId));
    let ref: string | undefined;
    try {
      ref = formatReference(parseReference(nameOrId));
    } catch {
      ref = undefined;
    }
    const byRef = ref === undefined ? undefined : this.images.byReference(ref);
    if (byRef) return byRef;
    const prefix = nameOrId.startsWith('sha256:') ? nameOrId : `sha256:${nameOrId}`;
    if (/^sha256:[a-f0-9]{4,64}$/.test(prefix)) {
      const matches = this.images.byIdPrefix(prefix);
      if (matches.length === 1) return matches[0];
    }
    if (ref === undefined) throw new InvalidArgumentError(`invalid image reference ${JSON.stringify(nameOrId)}`);
    return undefined;
  }

  list(): ImageRecord[] {
    return this.images.all();
  }

  isPinned(rec: ImageRecord): boolean {
    return this.pinned.has(rec.id) || rec.repoTags.some((t) => this.pinned.has(t)) || rec.repoDigests.some((d) => this.pinned.has(d));
  }

  /** Removes the image with all its names; an unknown image is already removed. */
  async remove(nameOrId: string): Promise<void> {
    const rec = this.find(nameOrId);
    if (!rec) return;
    await this.images.delete(rec.id);
    await this.collectGarbage();
  }

  /** Deletes layers and blobs no image uses (and no pull in progress is unpacking). */
  async collectGarbage(): Promise<void> {
    const usedLayers = new Set<string>(this.puller.busyLayers());
    for (const rec of this.images.all()) for (const l of rec.layers) usedLayers.add(l.chainId);
    for (const inUse of this.layerUsers) for (const chainId of inUse()) usedLayers.add(chainId);
    for (const chainId of this.layers.ids()) {
      if (!usedLayers.has(chainId)) await this.layers.remove(chainId);
    }
    // A pull writes its manifests before its record exists: leave blobs alone while one runs.
    if (this.pullsInProgress > 0) return;
    const usedBlobs = new Set<string>();
    for (const rec of this.images.all()) {
      usedBlobs.add(rec.id).add(rec.manifestDigest);
      for (const d of rec.repoDigests) usedBlobs.add(d.slice(d.lastIndexOf('@') + 1));
    }
    for (const digest of await this.blobs.list()) {
      if (!usedBlobs.has(digest)) await this.blobs.delete(digest);
    }
  }

  fsUsage(): { mountpoint: string; bytes: number; inodes: number } {
    return { mountpoint: this.layers.dir, ...this.layers.usage() };
  }

  /** The stored config of an image, for verbose status. */
  async manifestOf(rec: ImageRecord): Promise<Buffer> {
    return this.blobs.get(rec.manifestDigest);
  }
}

function normalizeId(id: string): string {
  return id.startsWith('sha256:') ? id : `sha256:${id}`;
}
