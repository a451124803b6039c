// Container statistics and limits read back from cgroup files, for ContainerStats and for
// checking that what the kubelet asked for is what the kernel enforces.

import fs from 'node:fs';
import path from 'node:path';
import {
  cpuWeightToShares,
  parseInt64,
  parseKeyed,
  parseMemoryStat,
  parseOomKills,
  parseV1CpuacctStat,
  parseV1CpuQuota,
  parseV1MemoryLimit,
  parseV1PidsMax,
  parseV2CpuMax,
  parseV2CpuStat,
  parseV2Max,
  workingSet,
} from './parse';
import { cgroupRelativePath, cgroupVersion, v1Dir, v2Dir, type CgroupDriver, type CgroupVersion } from './paths';

export interface CgroupStats {
  /** Unix time of the reading, in nanoseconds (the CRI's timestamp unit). */
  timestampNs: bigint;
  cpuUsageNs: bigint;
  cpuUserNs?: bigint;
  cpuSystemNs?: bigint;
  memoryUsageBytes: number;
  memoryWorkingSetBytes: number;
  memoryRssBytes: number;
  memoryCacheBytes: number;
  memoryMappedFileBytes: number;
  memoryLimitBytes?: number;
  pageFaults: number;
  majorPageFaults: number;
  /** Tasks (threads) in the cgroup: what the pids controller counts. */
  pids: number;
  /** Processes (thread group leaders) in the cgroup itself, from cgroup.procs. */
  processes: number;
  oomKills?: number;
  /** CFS bandwidth: periods, throttled periods and throttled time (0 without a quota). */
  cpuPeriods: number;
  cpuThrottledPeriods: number;
  cpuThrottledNs: bigint;
}

export interface CgroupLimits {
  cpuShares?: number;
  cpuWeight?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  memoryLimitBytes?: number;
  /** OCI semantics on both versions: memory plus swap (v2 keeps swap alone in memory.swap.max). */
  memorySwapLimitBytes?: number;
  pidsLimit?: number;
}

class CgroupGone extends Error {}

/** A file's text; undefined when this controller is not there (not mounted, not enabled). */
async function readOpt(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  try {
    return await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    return missing(err, file);
  }
}

/**
 * The same, read synchronously: cgroup files are generated in memory by the kernel, so a read
 * costs microseconds, less than a trip through libuv's thread pool (stats read ~10 files per
 * container, for every container at once).
 */
function readOptSync(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    return missing(err, file);
  }
}

function missing(err: unknown, file: string): undefined {
  const code = (err as NodeJS.ErrnoException).code;
  // ENODEV: a v1 file whose kernel feature is off (memsw without swap accounting).
  if (code === 'ENOENT' || code === 'ENODEV' || code === 'EOPNOTSUPP') return undefined;
  throw new Error(`failed to read cgroup file ${file}: ${(err as Error).message}`, { cause: err });
}

function countLines(text: string | undefined): number {
  if (!text) return 0;
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

function dirExists(dir: string | undefined): boolean {
  return dir !== undefined && fs.existsSync(dir);
}

function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n;
}

function f(dir: string | undefined, name: string): string | undefined {
  return dir === undefined ? undefined : path.join(dir, name);
}

/** Statistics for a container's cgroup; undefined once the cgroup is gone. */
export async function readStats(
  cgroupsPath: string,
  driver: CgroupDriver,
  version: CgroupVersion = cgroupVersion(),
): Promise<CgroupStats | undefined> {
  return readStatsSync(cgroupsPath, driver, version);
}

/** readStats without the promise, for callers that read many cgroups in one go (stats cache). */
export function readStatsSync(cgroupsPath: string, driver: CgroupDriver, version: CgroupVersion = cgroupVersion()): CgroupStats | undefined {
  const rel = cgroupRelativePath(cgroupsPath, driver);
  try {
    return version === 2 ? readV2Stats(v2Dir(rel)) : readV1Stats(rel);
  } catch (err) {
    if (err instanceof CgroupGone) return undefined;
    throw new Error(`failed to read stats of cgroup ${cgroupsPath}: ${(err as Error).message}`, { cause: err });
  }
}

function readV2Stats(dir: string): CgroupStats {
  const timestampNs = nowNs();
  const read = (n: string) => readOptSync(path.join(dir, n));
  // cpu.stat exists in every v2 cgroup, controller enabled or not: its absence means removal.
  const cpuStat = read('cpu.stat');
  if (cpuStat === undefined) throw new CgroupGone();
  const current = read('memory.current');
  const memStat = read('memory.stat');
  const max = read('memory.max');
  const pids = read('pids.current');
  const events = read('memory.events');
  const procs = read('cgroup.procs');
  const cpu = parseV2CpuStat(cpuStat);
  const usage = current === undefined ? 0 : Number(parseInt64(current, 'memory.current'));
  const mem = memStat === undefined ? undefined : parseMemoryStat(memStat, 2);
  return {
    timestampNs,
    cpuUsageNs: cpu.usageNs,
    cpuUserNs: cpu.userNs,
    cpuSystemNs: cpu.systemNs,
    memoryUsageBytes: usage,
    memoryWorkingSetBytes: workingSet(usage, mem?.inactiveFile ?? 0),
    memoryRssBytes: mem?.rss ?? 0,
    memoryCacheBytes: mem?.cache ?? 0,
    memoryMappedFileBytes: mem?.mappedFile ?? 0,
    memoryLimitBytes: max === undefined ? undefined : parseV2Max(max, 'memory.max'),
    pageFaults: mem?.pgfault ?? 0,
    majorPageFaults: mem?.pgmajfault ?? 0,
    pids: pids === undefined ? countLines(read('cgroup.threads')) : Number(parseInt64(pids, 'pids.current')),
    processes: countLines(procs),
    oomKills: events === undefined ? undefined : parseOomKills(events),
    cpuPeriods: cpu.nrPeriods,
    cpuThrottledPeriods: cpu.nrThrottled,
    cpuThrottledNs: cpu.throttledNs,
  };
}

function readV1Stats(rel: string): CgroupStats {
  const timestampNs = nowNs();
  const memory = v1Dir('memory', rel);
  const cpuacct = v1Dir('cpuacct', rel);
  const cpuDir = v1Dir('cpu', rel);
  const pidsDir = v1Dir('pids', rel);
  const usage = readOptSync(f(cpuacct, 'cpuacct.usage'));
  const memUsage = readOptSync(f(memory, 'memory.usage_in_bytes'));
  // Both gone: the cgroup was removed (a missing controller alone leaves the other).
  if (usage === undefined && memUsage === undefined && !dirExists(memory) && !dirExists(cpuacct)) throw new CgroupGone();
  const usageUser = readOptSync(f(cpuacct, 'cpuacct.usage_user'));
  const usageSys = usageUser === undefined ? undefined : readOptSync(f(cpuacct, 'cpuacct.usage_sys'));
  const memStat = readOptSync(f(memory, 'memory.stat'));
  const memLimit = readOptSync(f(memory, 'memory.limit_in_bytes'));
  const oomControl = readOptSync(f(memory, 'memory.oom_control'));
  const pids = readOptSync(f(pidsDir, 'pids.current'));
  const procs = readOptSync(f(pidsDir ?? memory, 'cgroup.procs'));
  const cfs = readOptSync(f(cpuDir, 'cpu.stat'));
  // usage_user/usage_sys (kernel ≥ 4.7) are in ns; cpuacct.stat only has 10 ms ticks.
  let cpuUserNs: bigint | undefined;
  let cpuSystemNs: bigint | undefined;
  if (usageUser !== undefined && usageSys !== undefined) {
    cpuUserNs = parseInt64(usageUser, 'cpuacct.usage_user');
    cpuSystemNs = parseInt64(usageSys, 'cpuacct.usage_sys');
  } else {
    const acctStat = readOptSync(f(cpuacct, 'cpuacct.stat'));
    if (acctStat !== undefined) ({ userNs: cpuUserNs, systemNs: cpuSystemNs } = parseV1CpuacctStat(acctStat));
  }
  const memoryUsageBytes = memUsage === undefined ? 0 : Number(parseInt64(memUsage, 'memory.usage_in_bytes'));
  const mem = memStat === undefined ? undefined : parseMemoryStat(memStat, 1);
  // v1 cpu.stat: nr_periods, nr_throttled, throttled_time (ns).
  const cfsStat = cfs === undefined ? undefined : parseKeyed(cfs);
  return {
    timestampNs,
    cpuUsageNs: usage === undefined ? 0n : parseInt64(usage, 'cpuacct.usage'),
    cpuUserNs,
    cpuSystemNs,
    memoryUsageBytes,
    memoryWorkingSetBytes: workingSet(memoryUsageBytes, mem?.inactiveFile ?? 0),
    memoryRssBytes: mem?.rss ?? 0,
    memoryCacheBytes: mem?.cache ?? 0,
    memoryMappedFileBytes: mem?.mappedFile ?? 0,
    memoryLimitBytes: memLimit === undefined ? undefined : parseV1MemoryLimit(memLimit),
    pageFaults: mem?.pgfault ?? 0,
    majorPageFaults: mem?.pgmajfault ?? 0,
    pids: pids === undefined ? 0 : Number(parseInt64(pids, 'pids.current')),
    processes: countLines(procs),
    oomKills: oomControl === undefined ? undefined : parseOomKills(oomControl),
    cpuPeriods: Number(cfsStat?.get('nr_periods') ?? 0n),
    cpuThrottledPeriods: Number(cfsStat?.get('nr_throttled') ?? 0n),
    cpuThrottledNs: cfsStat?.get('throttled_time') ?? 0n,
  };
}

/** The limits in force on a container's cgroup; undefined once the cgroup is gone. */
export async function readLimits(
  cgroupsPath: string,
  driver: CgroupDriver,
  version: CgroupVersion = cgroupVersion(),
): Promise<CgroupLimits | undefined> {
  const rel = cgroupRelativePath(cgroupsPath, driver);
  try {
    return version === 2 ? await readV2Limits(v2Dir(rel)) : await readV1Limits(rel);
  } catch (err) {
    if (err instanceof CgroupGone) return undefined;
    throw new Error(`failed to read limits of cgroup ${cgroupsPath}: ${(err as Error).message}`, { cause: err });
  }
}

function nonEmpty(text: string | undefined): string | undefined {
  const t = text?.trim();
  return t ? t : undefined;
}

async function readV2Limits(dir: string): Promise<CgroupLimits> {
  if (!dirExists(dir)) throw new CgroupGone();
  const [weight, cpuMax, cpus, mems, memMax, swapMax, pidsMax] = await Promise.all(
    ['cpu.weight', 'cpu.max', 'cpuset.cpus', 'cpuset.mems', 'memory.max', 'memory.swap.max', 'pids.max'].map((n) =>
      readOpt(path.join(dir, n)),
    ),
  );
  const out: CgroupLimits = {};
  if (weight !== undefined) {
    out.cpuWeight = Number(parseInt64(weight, 'cpu.weight'));
    out.cpuShares = cpuWeightToShares(out.cpuWeight);
  }
  if (cpuMax !== undefined) {
    const { quota, period } = parseV2CpuMax(cpuMax);
    out.cpuQuota = quota;
    out.cpuPeriod = period;
  }
  out.cpusetCpus = nonEmpty(cpus);
  out.cpusetMems = nonEmpty(mems);
  if (memMax !== undefined) out.memoryLimitBytes = parseV2Max(memMax, 'memory.max');
  if (swapMax !== undefined && out.memoryLimitBytes !== undefined) {
    const swap = parseV2Max(swapMax, 'memory.swap.max');
    if (swap !== undefined) out.memorySwapLimitBytes = out.memoryLimitBytes + swap;
  }
  if (pidsMax !== undefined) out.pidsLimit = parseV2Max(pidsMax, 'pids.max');
  return dropUndefined(out);
}

async function readV1Limits(rel: string): Promise<CgroupLimits> {
  const cpu = v1Dir('cpu', rel);
  const cpuset = v1Dir('cpuset', rel);
  const memory = v1Dir('memory', rel);
  const pids = v1Dir('pids', rel);
  if (![cpu, cpuset, memory, pids].some(dirExists)) throw new CgroupGone();
  const [shares, quota, period, cpus, mems, memLimit, memswLimit, pidsMax] = await Promise.all([
    readOpt(f(cpu, 'cpu.shares')),
    readOpt(f(cpu, 'cpu.cfs_quota_us')),
    readOpt(f(cpu, 'cpu.cfs_period_us')),
    readOpt(f(cpuset, 'cpuset.cpus')),
    readOpt(f(cpuset, 'cpuset.mems')),
    readOpt(f(memory, 'memory.limit_in_bytes')),
    readOpt(f(memory, 'memory.memsw.limit_in_bytes')),
    readOpt(f(pids, 'pids.max')),
  ]);
  return dropUndefined({
    cpuShares: shares === undefined ? undefined : Number(parseInt64(shares, 'cpu.shares')),
    cpuQuota: quota === undefined ? undefined : parseV1CpuQuota(quota),
    cpuPeriod: period === undefined ? undefined : Number(parseInt64(period, 'cpu.cfs_period_us')),
    cpusetCpus: nonEmpty(cpus),
    cpusetMems: nonEmpty(mems),
    memoryLimitBytes: memLimit === undefined ? undefined : parseV1MemoryLimit(memLimit),
    memorySwapLimitBytes: memswLimit === undefined ? undefined : parseV1MemoryLimit(memswLimit),
    pidsLimit: pidsMax === undefined ? undefined : parseV1PidsMax(pidsMax, 'pids.max'),
  });
}

function dropUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}
