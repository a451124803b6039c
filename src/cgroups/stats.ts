// Container statistics and limits read back from cgroup files, for ContainerStats and for
// checking that what the kubelet asked for is what the kernel enforces.

import fs from 'node:fs';
import path from 'node:path';
import {
  cpuWeightToShares,
  parseInt64,
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
  memoryLimitBytes?: number;
  pageFaults: number;
  majorPageFaults: number;
  pids: number;
  oomKills?: number;
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
    const code = (err as NodeJS.ErrnoException).code;
    // ENODEV: a v1 file whose kernel feature is off (memsw without swap accounting).
    if (code === 'ENOENT' || code === 'ENODEV' || code === 'EOPNOTSUPP') return undefined;
    throw new Error(`failed to read cgroup file ${file}: ${(err as Error).message}`, { cause: err });
  }
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
  const rel = cgroupRelativePath(cgroupsPath, driver);
  try {
    return version === 2 ? await readV2Stats(v2Dir(rel)) : await readV1Stats(rel);
  } catch (err) {
    if (err instanceof CgroupGone) return undefined;
    throw new Error(`failed to read stats of cgroup ${cgroupsPath}: ${(err as Error).message}`, { cause: err });
  }
}

async function readV2Stats(dir: string): Promise<CgroupStats> {
  const timestampNs = nowNs();
  const [cpuStat, current, memStat, max, pids, events] = await Promise.all(
    ['cpu.stat', 'memory.current', 'memory.stat', 'memory.max', 'pids.current', 'memory.events'].map((n) =>
      readOpt(path.join(dir, n)),
    ),
  );
  // cpu.stat exists in every v2 cgroup, controller enabled or not: its absence means removal.
  if (cpuStat === undefined) throw new CgroupGone();
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
    memoryLimitBytes: max === undefined ? undefined : parseV2Max(max, 'memory.max'),
    pageFaults: mem?.pgfault ?? 0,
    majorPageFaults: mem?.pgmajfault ?? 0,
    pids: pids === undefined ? 0 : Number(parseInt64(pids, 'pids.current')),
    oomKills: events === undefined ? undefined : parseOomKills(events),
  };
}

async function readV1Stats(rel: string): Promise<CgroupStats> {
  const timestampNs = nowNs();
  const memory = v1Dir('memory', rel);
  const cpuacct = v1Dir('cpuacct', rel);
  const pidsDir = v1Dir('pids', rel);
  if (!dirExists(memory) && !dirExists(cpuacct)) throw new CgroupGone();
  const [usage, usageUser, usageSys, acctStat, memUsage, memStat, memLimit, oomControl, pids] = await Promise.all([
    readOpt(f(cpuacct, 'cpuacct.usage')),
    readOpt(f(cpuacct, 'cpuacct.usage_user')),
    readOpt(f(cpuacct, 'cpuacct.usage_sys')),
    readOpt(f(cpuacct, 'cpuacct.stat')),
    readOpt(f(memory, 'memory.usage_in_bytes')),
    readOpt(f(memory, 'memory.stat')),
    readOpt(f(memory, 'memory.limit_in_bytes')),
    readOpt(f(memory, 'memory.oom_control')),
    readOpt(f(pidsDir, 'pids.current')),
  ]);
  // usage_user/usage_sys (kernel ≥ 4.7) are in ns; cpuacct.stat only has 10 ms ticks.
  let cpuUserNs: bigint | undefined;
  let cpuSystemNs: bigint | undefined;
  if (usageUser !== undefined && usageSys !== undefined) {
    cpuUserNs = parseInt64(usageUser, 'cpuacct.usage_user');
    cpuSystemNs = parseInt64(usageSys, 'cpuacct.usage_sys');
  } else if (acctStat !== undefined) {
    ({ userNs: cpuUserNs, systemNs: cpuSystemNs } = parseV1CpuacctStat(acctStat));
  }
  const memoryUsageBytes = memUsage === undefined ? 0 : Number(parseInt64(memUsage, 'memory.usage_in_bytes'));
  const mem = memStat === undefined ? undefined : parseMemoryStat(memStat, 1);
  return {
    timestampNs,
    cpuUsageNs: usage === undefined ? 0n : parseInt64(usage, 'cpuacct.usage'),
    cpuUserNs,
    cpuSystemNs,
    memoryUsageBytes,
    memoryWorkingSetBytes: workingSet(memoryUsageBytes, mem?.inactiveFile ?? 0),
    memoryRssBytes: mem?.rss ?? 0,
    memoryLimitBytes: memLimit === undefined ? undefined : parseV1MemoryLimit(memLimit),
    pageFaults: mem?.pgfault ?? 0,
    majorPageFaults: mem?.pgmajfault ?? 0,
    pids: pids === undefined ? 0 : Number(parseInt64(pids, 'pids.current')),
    oomKills: oomControl === undefined ? undefined : parseOomKills(oomControl),
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
