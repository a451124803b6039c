import { promises as fs } from 'node:fs';
import path from 'node:path';
import { JsonStore } from '../store/json_store';

/** What unpacking a layer cost on disk; summed for ImageFsInfo without walking the tree. */
export interface LayerInfo {
  chainId: string;
  diffId: string;
  bytes: number;
  inodes: number;
}

const STAGING_PREFIX = '.staging-';

/**
 * Unpacked layers, one overlay-ready directory per chain ID under `<root>/layers/`. A layer is
 * unpacked into a staging directory and renamed into place only once complete and verified,
 * so a directory named by a chain ID is always a whole layer.
 */
export class LayerStore {
  private readonly layers = new Map<string, LayerInfo>();
  private readonly meta: JsonStore<LayerInfo>;

  constructor(
    readonly dir: string,
    metaDir: string,
  ) {
    this.meta = new JsonStore<LayerInfo>(metaDir);
  }

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await this.meta.init();
    for (const name of await fs.readdir(this.dir)) {
      // Leftovers of pulls interrupted by a crash: never visible as layers.
      if (name.startsWith(STAGING_PREFIX)) await fs.rm(path.join(this.dir, name), { recursive: true, force: true });
    }
    for (const info of await this.meta.loadAll()) {
      if (await exists(this.path(info.chainId))) this.layers.set(info.chainId, info);
      else await this.meta.delete(hex(info.chainId));
    }
    // A directory whose record was never written (crash between rename and record) is dropped.
    for (const name of await fs.readdir(this.dir)) {
      if (!name.startsWith(STAGING_PREFIX) && !this.layers.has(`sha256:${name}`)) {
        await fs.rm(path.join(this.dir, name), { recursive: true, force: true });
      }
    }
  }

  has(chainId: string): boolean {
    return this.layers.has(chainId);
  }

  path(chainId: string): string {
    return path.join(this.dir, hex(chainId));
  }

  async stage(chainId: string): Promise<string> {
    const dir = path.join(this.dir, `${STAGING_PREFIX}${hex(chainId).slice(0, 16)}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
    await fs.mkdir(dir, { mode: 0o755 });
    return dir;
  }

  async commit(staging: string, info: LayerInfo): Promise<void> {
    await fs.rename(staging, this.path(info.chainId));
    await this.meta.put(hex(info.chainId), info);
    this.layers.set(info.chainId, info);
  }

  async discard(staging: string): Promise<void> {
    await fs.rm(staging, { recursive: true, force: true });
  }

  async remove(chainId: string): Promise<void> {
    this.layers.delete(chainId);
    await this.meta.delete(hex(chainId));
    // Rename first so a crash mid-delete leaves a staging leftover, which init removes.
    const doomed = path.join(this.dir, `${STAGING_PREFIX}rm-${hex(chainId).slice(0, 16)}-${Date.now()}`);
    try {
      await fs.rename(this.path(chainId), doomed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    await fs.rm(doomed, { recursive: true, force: true });
  }

  ids(): string[] {
    return [...this.layers.keys()];
  }

  usage(): { bytes: number; inodes: number } {
    let bytes = 0;
    let inodes = 0;
    for (const l of this.layers.values()) {
      bytes += l.bytes;
      inodes += l.inodes;
    }
    return { bytes, inodes };
  }
}

function hex(digest: string): string {
  return digest.startsWith('sha256:') ? digest.slice(7) : digest;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}
