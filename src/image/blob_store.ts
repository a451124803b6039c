import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { syncDir } from '../store/json_store';

/** Manifests and configs by digest under `<root>/blobs/sha256/`, written atomically. */
export class BlobStore {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await fs.mkdir(path.join(this.dir, 'sha256'), { recursive: true, mode: 0o700 });
  }

  private file(digest: string): string {
    if (!/^sha256:[a-f0-9]{64}$/.test(digest)) throw new Error(`invalid blob digest ${digest}`);
    return path.join(this.dir, 'sha256', digest.slice(7));
  }

  async put(digest: string, body: Buffer): Promise<void> {
    const got = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (got !== digest) throw new Error(`blob ${digest}: content hashes to ${got}`);
    const target = this.file(digest);
    const tmp = `${target}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    await fs.writeFile(tmp, body, { mode: 0o600 });
    const fh = await fs.open(tmp, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, target);
    await syncDir(path.dirname(target));
  }

  async get(digest: string): Promise<Buffer> {
    return fs.readFile(this.file(digest));
  }

  async delete(digest: string): Promise<void> {
    await fs.rm(this.file(digest), { force: true });
  }

  async list(): Promise<string[]> {
    const names = await fs.readdir(path.join(this.dir, 'sha256'));
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }
}
