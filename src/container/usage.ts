import { promises as fs } from 'node:fs';
import path from 'node:path';

interface Usage {
  bytes: number;
  inodes: number;
}

/** Walks are not free; the kubelet asks for stats every few seconds. */
const TTL_MS = 10_000;
const cache = new Map<string, { at: number; usage: Promise<Usage> }>();

/** Bytes and inodes under `dir` (a container's writable layer), cached for a few seconds. */
export function dirUsage(dir: string): Promise<Usage> {
  const hit = cache.get(dir);
  if (hit && Date.now() - hit.at < TTL_MS) return hit.usage;
  const usage = walk(dir);
  cache.set(dir, { at: Date.now(), usage });
  // Entries of removed containers must not pile up.
  if (cache.size > 4096) for (const [k, v] of cache) if (Date.now() - v.at >= TTL_MS) cache.delete(k);
  return usage;
}

/** Drops the cached usage of a removed container's writable layer. */
export function forgetDirUsage(dir: string): void {
  cache.delete(dir);
}

async function walk(dir: string): Promise<Usage> {
  const total: Usage = { bytes: 0, inodes: 0 };
  const seen = new Set<number>();
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let names: string[];
    try {
      names = await fs.readdir(d);
    } catch {
      continue;
    }
    for (const n of names) {
      const p = path.join(d, n);
      let st;
      try {
        st = await fs.lstat(p);
      } catch {
        continue;
      }
      // A hard-linked file is counted once, as du does.
      if (st.nlink > 1) {
        if (seen.has(st.ino)) continue;
        seen.add(st.ino);
      }
      total.inodes++;
      total.bytes += st.blocks * 512;
      if (st.isDirectory()) stack.push(p);
    }
  }
  return total;
}
