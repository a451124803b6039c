import { promises as fs } from 'node:fs';
import path from 'node:path';

export interface JsonStoreOptions {
  /**
   * fsync the directory after each rename and removal (default true), so that the newest
   * version survives a power loss. Without it a power loss may bring back an older version or
   * a removed document, whole either way.
   */
  syncDir?: boolean;
}

/**
 * One JSON document per object in one directory. A write goes to a temporary file that is
 * fsynced and renamed over the old one, so a crash leaves either the old document or the new
 * one, never a torn one. Writes and removals of one id happen in the order they were asked for,
 * each with the document as it was when asked, so a later state is never overwritten by an
 * earlier one that finished late.
 */
export class JsonStore<T> {
  private readonly syncDir: boolean;
  private readonly queues = new Map<string, Promise<void>>();

  constructor(
    readonly dir: string,
    opts: JsonStoreOptions = {},
  ) {
    this.syncDir = opts.syncDir ?? true;
  }

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
  }

  private file(id: string): string {
    if (!/^[A-Za-z0-9_.:-]+$/.test(id) || id.startsWith('.')) throw new Error(`invalid store id ${JSON.stringify(id)}`);
    return path.join(this.dir, `${id}.json`);
  }

  put(id: string, doc: T): Promise<void> {
    const target = this.file(id);
    const text = JSON.stringify(doc);
    return this.inOrder(id, async () => {
      const tmp = `${target}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
      const fh = await fs.open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, target);
      if (this.syncDir) await syncDir(this.dir);
    });
  }

  delete(id: string): Promise<void> {
    const target = this.file(id);
    return this.inOrder(id, async () => {
      await fs.rm(target, { force: true });
      if (this.syncDir) await syncDir(this.dir);
    });
  }

  private inOrder(id: string, fn: () => Promise<void>): Promise<void> {
    const run = (this.queues.get(id) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => undefined);
    this.queues.set(id, tail);
    void tail.then(() => {
      if (this.queues.get(id) === tail) this.queues.delete(id);
    });
    return run;
  }

  /** Every document; leftovers of interrupted writes are removed. */
  async loadAll(): Promise<T[]> {
    const out: T[] = [];
    for (const name of await fs.readdir(this.dir)) {
      const full = path.join(this.dir, name);
      if (name.includes('.tmp-')) {
        await fs.rm(full, { force: true });
        continue;
      }
      if (!name.endsWith('.json')) continue;
      out.push(JSON.parse(await fs.readFile(full, 'utf8')) as T);
    }
    return out;
  }
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
