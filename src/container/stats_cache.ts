import fs from 'node:fs';
import { type CgroupDriver, type CgroupStats, type CgroupVersion, cgroupVersion, OpenFiles, readStatsSync, type StatsDetail } from '../cgroups';

/** One reading of a cgroup, with the CPU rate since the reading before it. */
export interface CgroupSample {
  stats: CgroupStats;
  /** CPU used between the previous reading and this one, in nanocores; unknown at first. */
  nanoCores?: bigint;
}

export interface InterfaceCounters {
  name: string;
  rxBytes: number;
  rxPackets: number;
  rxErrors: number;
  rxDropped: number;
  txBytes: number;
  txPackets: number;
  txErrors: number;
  txDropped: number;
}

export interface NetworkSample {
  timestampNs: bigint;
  /** Every interface of the namespace but `lo`. */
  interfaces: InterfaceCounters[];
}

export interface StatsCacheOptions {
  /** How long a reading serves every caller. */
  periodMs: number;
  driver: CgroupDriver;
  version?: CgroupVersion;
}

interface Entry<T> {
  /** When the reading was asked for (performance.now()). */
  at: number;
  usedAt: number;
  value: Promise<T>;
  /** For cgroups: how much was read. */
  detail?: StatsDetail;
}

/** A reading older than this gives no CPU rate: it says too little about now. */
const RATE_WINDOW_NS = 60_000_000_000n;
/** Readings done before the loop gets a turn: ~10 files each, a few µs per file. */
const BATCH = 32;
/** Entries nobody asked for in this long (removed containers) are dropped. */
const IDLE_MS = 120_000;

function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n;
}

/**
 * The stats every caller reads, as CRI-O's stats cache: each cgroup is read at most once per
 * period however many callers ask (ListContainerStats, ListPodSandboxStats, the metrics RPCs,
 * all of them at once), callers that ask while a reading is under way share it, and the cost
 * of a stats list does not grow with the number of callers. Readings are synchronous (cgroup
 * files live in memory) and done in batches, yielding to the event loop between batches, so a
 * node's worth of cgroups never holds up a ListContainers for long.
 */
export class StatsCache {
  private readonly cgroups = new Map<string, Entry<CgroupSample | undefined>>();
  /** Each cgroup's files, kept open while its readings are asked for, and its last reading. */
  private readonly kept = new Map<string, { files: OpenFiles; previous?: CgroupStats }>();
  private readonly networks = new Map<string, Entry<NetworkSample | undefined>>();
  private readonly queue: (() => void)[] = [];
  private draining = false;
  private lastSweep = performance.now();
  private readonly version: CgroupVersion;

  constructor(private readonly opts: StatsCacheOptions) {
    this.version = opts.version ?? cgroupVersion();
  }

  get periodMs(): number {
    return this.opts.periodMs;
  }

  /**
   * A cgroup's reading, at most one period old; undefined once the cgroup is gone. A `full`
   * reading (the metrics) serves `basic` callers (the stats) too, not the other way round.
   */
  cgroup(cgroupsPath: string, detail: StatsDetail = 'basic'): Promise<CgroupSample | undefined> {
    return this.cached(this.cgroups, cgroupsPath, () => this.readCgroup(cgroupsPath, detail), detail);
  }

  /**
   * Interface counters of a network namespace, read through /proc/<pid>/net/dev of a process in
   * it; `key` names the namespace (the pod), so that readings follow it when the pid changes.
   */
  network(key: string, pid: number): Promise<NetworkSample | undefined> {
    return this.cached(this.networks, key, () => readNetDev(pid));
  }

  /** Drops what is kept about a cgroup or namespace that is gone. */
  forget(key: string): void {
    this.cgroups.delete(key);
    this.networks.delete(key);
    this.drop(key);
  }

  /** Cgroups whose files are kept open (tests). */
  get openCgroups(): number {
    return [...this.kept.values()].filter((k) => k.files.size > 0).length;
  }

  private drop(key: string): void {
    this.kept.get(key)?.files.close();
    this.kept.delete(key);
  }

  private cached<T>(map: Map<string, Entry<T>>, key: string, read: () => T, detail?: StatsDetail): Promise<T> {
    const now = performance.now();
    if (now - this.lastSweep > IDLE_MS) this.sweep(now);
    const hit = map.get(key);
    if (hit && now - hit.at < this.opts.periodMs && (detail !== 'full' || hit.detail === 'full')) {
      hit.usedAt = now;
      return hit.value;
    }
    const value = new Promise<T>((resolve) => {
      this.queue.push(() => {
        // An executor that throws rejects its promise with what was thrown, unchanged.
        resolve(
          new Promise<T>((settle) => {
            settle(read());
          }),
        );
      });
    });
    const entry = { at: now, usedAt: now, value, detail };
    map.set(key, entry);
    // A failed reading is not kept: the next caller tries again.
    value.catch(() => {
      if (map.get(key) === entry) map.delete(key);
    });
    this.drain();
    return value;
  }

  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    const step = (): void => {
      for (let i = 0; i < BATCH; i++) {
        const job = this.queue.shift();
        if (!job) break;
        job();
      }
      if (this.queue.length > 0) setImmediate(step);
      else this.draining = false;
    };
    // Not at once: the callers of this tick (a whole list) join the same batches.
    setImmediate(step);
  }

  private readCgroup(cgroupsPath: string, detail: StatsDetail): CgroupSample | undefined {
    let k = this.kept.get(cgroupsPath);
    if (!k) {
      k = { files: new OpenFiles() };
      this.kept.set(cgroupsPath, k);
    }
    const { files, previous: prev } = k;
    let stats: CgroupStats | undefined;
    try {
      stats = readStatsSync(cgroupsPath, this.opts.driver, this.version, detail, (file) => files.read(file));
    } catch (err) {
      files.close();
      throw err;
    }
    if (!stats) {
      this.drop(cgroupsPath);
      return undefined;
    }
    k.previous = stats;
    let nanoCores: bigint | undefined;
    if (prev && stats.timestampNs > prev.timestampNs && stats.timestampNs - prev.timestampNs < RATE_WINDOW_NS && stats.cpuUsageNs >= prev.cpuUsageNs) {
      nanoCores = ((stats.cpuUsageNs - prev.cpuUsageNs) * 1_000_000_000n) / (stats.timestampNs - prev.timestampNs);
    }
    return { stats, nanoCores };
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const map of [this.cgroups, this.networks] as Map<string, Entry<unknown>>[]) {
      for (const [k, e] of map) {
        if (now - e.usedAt > IDLE_MS) {
          map.delete(k);
          this.drop(k);
        }
      }
    }
  }
}

/** /proc/<pid>/net/dev: two header lines, then `name: 8 receive counters 8 transmit counters`. */
export function parseNetDev(text: string): InterfaceCounters[] {
  const out: InterfaceCounters[] = [];
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (name === 'lo') continue;
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    if (f.length < 16) continue;
    out.push({
      name,
      rxBytes: f[0],
      rxPackets: f[1],
      rxErrors: f[2],
      rxDropped: f[3],
      txBytes: f[8],
      txPackets: f[9],
      txErrors: f[10],
      txDropped: f[11],
    });
  }
  return out;
}

function readNetDev(pid: number): NetworkSample | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/net/dev`, 'utf8');
  } catch {
    // The process is gone: no namespace to read through.
    return undefined;
  }
  return { timestampNs: nowNs(), interfaces: parseNetDev(text) };
}
