import fs from 'node:fs';
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

interface Walk {
  /** Directories still to list. */
  dirs: string[];
  /** The listed directory whose entries are being looked at, and how far. */
  current?: { dir: string; names: string[]; next: number };
  seen: Set<number>;
  total: Usage;
  done: (u: Usage) => void;
}

/** Entries looked at per turn of the event loop, all walks together (a few ms). */
const BUDGET = 2048;
const walks: Walk[] = [];
let draining = false;

/**
 * The walk is synchronous (lstat of an entry costs a few us, a trip through libuv's pool and a
 * promise several times that, for every entry of every container at each stats round) but
 * cooperative: at most BUDGET entries per turn of the event loop, so a huge writable layer
 * never holds up the calls around it.
 */
function walk(dir: string): Promise<Usage> {
  return new Promise((done) => {
    walks.push({ dirs: [dir], seen: new Set(), total: { bytes: 0, inodes: 0 }, done });
    if (!draining) {
      draining = true;
      setImmediate(step);
    }
  });
}

function step(): void {
  let budget = BUDGET;
  while (walks.length > 0 && budget > 0) {
    const w = walks[0];
    budget = advance(w, budget);
    if (!w.current && w.dirs.length === 0) {
      walks.shift();
      w.done(w.total);
    }
  }
  if (walks.length > 0) setImmediate(step);
  else draining = false;
}

/** Looks at up to `budget` entries of `w`; returns the budget left. */
function advance(w: Walk, budget: number): number {
  while (budget > 0) {
    if (!w.current) {
      const dir = w.dirs.pop();
      if (dir === undefined) return budget;
      budget--;
      try {
        w.current = { dir, names: fs.readdirSync(dir), next: 0 };
      } catch {
        continue;
      }
    }
    const c = w.current;
    while (budget > 0 && c.next < c.names.length) {
      budget--;
      const p = path.join(c.dir, c.names[c.next++]);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(p);
      } catch {
        continue;
      }
      // A hard-linked file is counted once, as du does.
      if (st.nlink > 1 && !st.isDirectory()) {
        if (w.seen.has(st.ino)) continue;
        w.seen.add(st.ino);
      }
      w.total.inodes++;
      w.total.bytes += st.blocks * 512;
      if (st.isDirectory()) w.dirs.push(p);
    }
    if (c.next >= c.names.length) w.current = undefined;
  }
  return budget;
}
