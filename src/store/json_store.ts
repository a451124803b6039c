import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * One JSON document per object in one directory. A write goes to a temporary file that is
 * fsynced and renamed over the old one, then the directory is fsynced, so a crash leaves
 * either the old document or the new one, never a torn one.
 */
export class JsonStore<T> {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
  }

  private file(id: string): string {
    if (!/^[A-Za-z0-9_.:-]+$/.test(id) || id.startsWith('.')) throw new Error(`invalid store id ${JSON.stringify(id)}`);
    return path.join(this.dir, `${id}.json`);
  }

  async put(id: string, doc: T): Promise<void> {
    const target = this.file(id);
    const tmp = `${target}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const fh = await fs.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(JSON.stringify(doc));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, target);
    await syncDir(this.dir);
  }

  async delete(id: string): Promise<void> {
    await fs.rm(this.file(id), { force: true });
    await syncDir(this.dir);
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
