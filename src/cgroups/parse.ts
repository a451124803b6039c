// Pure parsers over cgroup file texts, so the formats can be checked against fixtures of what
// real kernels print without needing a v1 or v2 host.

/** Unlimited in v1 memory files: PAGE_COUNTER_MAX pages, rounded to the page size. */
const V1_UNLIMITED_MIN = 2n ** 62n;

/** "key value" per line (cpu.stat, memory.stat, memory.events, cpuacct.stat, oom_control). */
export function parseKeyed(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    const [key, value, extra] = [fields.at(0), fields.at(1), fields.at(2)];
    if (!key || value === undefined || extra !== undefined || !/^-?\d+$/.test(value)) continue;
    out.set(key, BigInt(value));
  }
  return out;
}

function num(v: bigint | undefined): number | undefined {
  return v === undefined ? undefined : Number(v);
}

/** A single integer file (pids.current, cpu.weight, cpu.shares, memory.current…). */
export function parseInt64(text: string, what = 'value'): bigint {
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) throw new Error(`invalid ${what}: ${JSON.stringify(text)}`);
  return BigInt(t);
}

/** v2 single-value limits (memory.max, memory.swap.max, pids.max): undefined for "max". */
export function parseV2Max(text: string, what = 'limit'): number | undefined {
  const t = text.trim();
  if (t === 'max') return undefined;
  return Number(parseInt64(t, what));
}

/** v2 cpu.max: "$MAX $PERIOD", MAX being "max" for no quota. */
export function parseV2CpuMax(text: string): { quota?: number; period: number } {
  const fields = text.trim().split(/\s+/);
  const [max, period] = [fields.at(0), fields.at(1)];
  if (max === undefined || period === undefined) throw new Error(`invalid cpu.max: ${JSON.stringify(text)}`);
  return { quota: parseV2Max(max, 'cpu.max quota'), period: Number(parseInt64(period, 'cpu.max period')) };
}

export interface V2CpuStat {
  usageNs: bigint;
  userNs: bigint;
  systemNs: bigint;
  nrPeriods: number;
  nrThrottled: number;
  throttledNs: bigint;
}

/** v2 cpu.stat, whose times are in microseconds; converted to the nanoseconds the CRI reports. */
export function parseV2CpuStat(text: string): V2CpuStat {
  const kv = parseKeyed(text);
  const usec = (k: string): bigint => (kv.get(k) ?? 0n) * 1000n;
  return {
    usageNs: usec('usage_usec'),
    userNs: usec('user_usec'),
    systemNs: usec('system_usec'),
    nrPeriods: Number(kv.get('nr_periods') ?? 0n),
    nrThrottled: Number(kv.get('nr_throttled') ?? 0n),
    throttledNs: usec('throttled_usec'),
  };
}

export interface MemoryStat {
  inactiveFile: number;
  rss: number;
  /** Page cache (v1 `cache`, v2 `file`). */
  cache: number;
  /** File pages mapped into processes (v1 `mapped_file`, v2 `file_mapped`). */
  mappedFile: number;
  pgfault: number;
  pgmajfault: number;
}

/**
 * memory.stat of either version. v1 reports the cgroup alone under plain names and the cgroup
 * with its descendants under `total_*`; the hierarchical numbers are the ones comparable with
 * usage_in_bytes, which is hierarchical too. v2 reports hierarchical numbers under plain names,
 * and names resident anonymous memory `anon` where v1 says `rss`.
 */
export function parseMemoryStat(text: string, version: 1 | 2): MemoryStat {
  const kv = memoryStatKeys(text, version === 1 ? V1_MEMORY_KEYS : V2_MEMORY_KEYS);
  const pick = (v1: string, v2: string): number => (version === 1 ? (kv.get(`total_${v1}`) ?? kv.get(v1) ?? 0) : (kv.get(v2) ?? 0));
  return {
    inactiveFile: pick('inactive_file', 'inactive_file'),
    rss: pick('rss', 'anon'),
    cache: pick('cache', 'file'),
    mappedFile: pick('mapped_file', 'file_mapped'),
    pgfault: pick('pgfault', 'pgfault'),
    pgmajfault: pick('pgmajfault', 'pgmajfault'),
  };
}

const V1_MEMORY_FIELDS = ['inactive_file', 'rss', 'cache', 'mapped_file', 'pgfault', 'pgmajfault'];
const V1_MEMORY_KEYS = new Set([...V1_MEMORY_FIELDS, ...V1_MEMORY_FIELDS.map((k) => `total_${k}`)]);
const V2_MEMORY_KEYS = new Set(['inactive_file', 'anon', 'file', 'file_mapped', 'pgfault', 'pgmajfault']);

/**
 * The wanted lines of memory.stat only, as numbers: the file has ~40 lines (~70 on v2) and is
 * parsed for every container at every stats round; byte counts stay far below 2^53.
 */
function memoryStatKeys(text: string, wanted: Set<string>): Map<string, number> {
  const out = new Map<string, number>();
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const sp = text.indexOf(' ', start);
    if (sp > start && sp < end) {
      const key = text.slice(start, sp);
      if (wanted.has(key)) {
        const value = text.slice(sp + 1, end).trim();
        if (/^\d+$/.test(value)) out.set(key, Number(value));
      }
    }
    start = end + 1;
  }
  return out;
}

/**
 * The kubelet's working set (eviction and `kubectl top` use it): usage minus inactive file
 * pages, which the kernel can drop at no cost; never negative.
 */
export function workingSet(usage: number, inactiveFile: number): number {
  return usage > inactiveFile ? usage - inactiveFile : 0;
}

/** OOM kills from v2 memory.events or v1 memory.oom_control (kernels ≥ 4.13 add `oom_kill`). */
export function parseOomKills(text: string): number | undefined {
  return num(parseKeyed(text).get('oom_kill'));
}

/** v1 memory limits (memory.limit_in_bytes, memory.memsw.limit_in_bytes): undefined = unlimited. */
export function parseV1MemoryLimit(text: string): number | undefined {
  const v = parseInt64(text, 'memory limit');
  return v >= V1_UNLIMITED_MIN ? undefined : Number(v);
}

/** v1 cpu.cfs_quota_us: -1 means no quota. */
export function parseV1CpuQuota(text: string): number | undefined {
  const v = Number(parseInt64(text, 'cpu.cfs_quota_us'));
  return v < 0 ? undefined : v;
}

/** v1 pids.max: "max" or a number, like v2. */
export const parseV1PidsMax = parseV2Max;

// USER_HZ is 100 on every architecture Linux exports to user space through cpuacct.stat.
const NS_PER_USER_HZ_TICK = 10_000_000n;

/** v1 cpuacct.stat ("user N\nsystem N\n" in USER_HZ ticks), for kernels without usage_user. */
export function parseV1CpuacctStat(text: string): { userNs: bigint; systemNs: bigint } {
  const kv = parseKeyed(text);
  return {
    userNs: (kv.get('user') ?? 0n) * NS_PER_USER_HZ_TICK,
    systemNs: (kv.get('system') ?? 0n) * NS_PER_USER_HZ_TICK,
  };
}

// CPU shares (v1) span [2, 262144], default 1024; weight (v2) spans [1, 10000], default 100.
const SHARES_MIN = 2;
const SHARES_MAX = 262144;
const WEIGHT_MAX = 10000;

/**
 * How OCI runtimes turn the kubelet's cpu.shares into a v2 cpu.weight.
 * `linear` is runc's long-standing map (and runc 1.1, which Debian 12 ships): it sends the
 * default 1024 shares to weight 39, not 100. `log` is the quadratic-in-log2 map newer runc and
 * crun releases adopted so that 2 → 1, 1024 → 100 and 262144 → 10000.
 */
export type SharesMapping = 'linear' | 'log';

export function cpuSharesToWeight(shares: number, mapping: SharesMapping = 'linear'): number {
  if (shares === 0) return 0;
  if (mapping === 'linear') return 1 + Math.floor(((shares - SHARES_MIN) * (WEIGHT_MAX - 1)) / (SHARES_MAX - SHARES_MIN));
  if (shares <= SHARES_MIN) return 1;
  if (shares >= SHARES_MAX) return WEIGHT_MAX;
  const l = Math.log2(shares);
  return Math.ceil(10 ** ((l * l + 125 * l) / 612 - 7 / 34));
}

/**
 * The inverse, for reporting a v2 limit in the shares the kubelet asked in. The maps are lossy;
 * this returns the smallest shares that map to `weight`, so sharesToWeight(weightToShares(w)) = w.
 */
export function cpuWeightToShares(weight: number, mapping: SharesMapping = 'linear'): number {
  if (weight === 0) return 0;
  if (mapping === 'linear') {
    return SHARES_MIN + Math.ceil(((weight - 1) * (SHARES_MAX - SHARES_MIN)) / (WEIGHT_MAX - 1));
  }
  if (weight <= 1) return SHARES_MIN;
  if (weight >= WEIGHT_MAX) return SHARES_MAX;
  // The forward map rounds up, so the shares wanted are those whose exact weight lies in
  // (w − 1, w]: solve (l² + 125 l) / 612 − 7/34 = log10(w − 1) for l = log2(shares), then step up.
  const e = Math.log10(weight - 1) + 7 / 34;
  const l = (-125 + Math.sqrt(125 * 125 + 4 * 612 * e)) / 2;
  let s = Math.max(SHARES_MIN, Math.floor(2 ** l) - 1);
  while (s < SHARES_MAX && cpuSharesToWeight(s, 'log') < weight) s++;
  return s;
}
