import { JsonStore } from '../store/json_store';
import type { ImageConfigFile } from './manifest';

/** One image as the CRI sees it: identified by its config digest, named by tags and digests. */
export interface ImageRecord {
  /** `sha256:<config digest>`, the CRI image id. */
  id: string;
  repoTags: string[];
  repoDigests: string[];
  /** Digest of the platform manifest that was unpacked. */
  manifestDigest: string;
  /** Layers bottom to top. */
  layers: { digest: string; mediaType: string; size: number; diffId: string; chainId: string }[];
  /** Compressed layers plus config, as containerd reports it. */
  size: number;
  config: ImageConfigFile;
  createdAt: number;
}

/**
 * Image records in memory, kept in step with one JSON document per image, with the indexes
 * ImageStatus needs (tag and digest references → id) so lookups never touch the disk.
 */
export class ImageStore {
  private readonly byId = new Map<string, ImageRecord>();
  private readonly byRef = new Map<string, string>();
  private readonly store: JsonStore<ImageRecord>;

  constructor(metaDir: string) {
    this.store = new JsonStore<ImageRecord>(metaDir);
  }

  async init(): Promise<void> {
    await this.store.init();
    for (const rec of await this.store.loadAll()) this.index(rec);
  }

  private index(rec: ImageRecord): void {
    this.byId.set(rec.id, rec);
    for (const ref of [...rec.repoTags, ...rec.repoDigests]) this.byRef.set(ref, rec.id);
  }

  private unindex(rec: ImageRecord): void {
    this.byId.delete(rec.id);
    for (const ref of [...rec.repoTags, ...rec.repoDigests]) {
      if (this.byRef.get(ref) === rec.id) this.byRef.delete(ref);
    }
  }

  get(id: string): ImageRecord | undefined {
    return this.byId.get(id);
  }

  /** The image a full reference (tag or digest form) names. */
  byReference(ref: string): ImageRecord | undefined {
    const id = this.byRef.get(ref);
    return id === undefined ? undefined : this.byId.get(id);
  }

  /** Images whose id starts with `prefix` (the short ids `crictl images` prints). */
  byIdPrefix(prefix: string): ImageRecord[] {
    return [...this.byId.values()].filter((r) => r.id.startsWith(prefix));
  }

  all(): ImageRecord[] {
    return [...this.byId.values()];
  }

  /**
   * Writes `rec`, merging names into an existing record with the same id. A tag names one
   * image: when it moves, the image it used to name loses it.
   */
  async put(rec: ImageRecord): Promise<ImageRecord> {
    const existing = this.byId.get(rec.id);
    const merged: ImageRecord = existing
      ? {
          ...rec,
          repoTags: union(existing.repoTags, rec.repoTags),
          repoDigests: union(existing.repoDigests, rec.repoDigests),
          createdAt: existing.createdAt,
        }
      : rec;
    for (const tag of rec.repoTags) {
      const previous = this.byReference(tag);
      if (previous && previous.id !== rec.id) {
        const moved = { ...previous, repoTags: previous.repoTags.filter((t) => t !== tag) };
        await this.store.put(hex(moved.id), moved);
        this.unindex(previous);
        this.index(moved);
      }
    }
    await this.store.put(hex(merged.id), merged);
    if (existing) this.unindex(existing);
    this.index(merged);
    return merged;
  }

  async delete(id: string): Promise<void> {
    const rec = this.byId.get(id);
    if (!rec) return;
    await this.store.delete(hex(id));
    this.unindex(rec);
  }
}

function union(a: string[], b: string[]): string[] {
  return [...new Set([...a, ...b])];
}

function hex(digest: string): string {
  return digest.startsWith('sha256:') ? digest.slice(7) : digest;
}
