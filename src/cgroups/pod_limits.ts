// Pod-level limits on a pod's cgroup parent, for UpdatePodSandboxResources (in-place pod
// resize, KEP-1287/KEP-2837). The kubelet writes the pod cgroup itself when it runs with
// cgroupsPerQOS and calls the runtime after it; writing the same values again is harmless, and
// a runtime on a node where the kubelet does not manage the pod cgroup still enforces them.

import fs from 'node:fs';
import path from 'node:path';
import { cpuSharesToWeight } from './parse';
import { cgroupVersion, expandSlice, v1Dir, v2Dir, type CgroupDriver, type CgroupVersion } from './paths';

/** Pod totals; undefined = not asked for, left as the cgroup has it. */
export interface PodLimits {
  cpuShares?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  memoryLimitBytes?: number;
}

export interface CgroupWrite {
  /** The v1 controller whose hierarchy holds the file (v2: one tree for all). */
  controller: 'cpu' | 'memory';
  file: string;
  value: string;
}

const DEFAULT_CFS_PERIOD = 100_000;

/** The files and values that enforce `limits`, in the order they must be written. */
export function podLimitWrites(limits: PodLimits, version: CgroupVersion): CgroupWrite[] {
  const out: CgroupWrite[] = [];
  if (version === 2) {
    // runc 1.1's linear shares → weight map, so the pod and its containers use one scale.
    if (limits.cpuShares !== undefined) out.push({ controller: 'cpu', file: 'cpu.weight', value: String(cpuSharesToWeight(limits.cpuShares)) });
    if (limits.cpuQuota !== undefined || limits.cpuPeriod !== undefined) {
      // cpu.max holds both: "$MAX $PERIOD", "max" for no quota.
      const quota = limits.cpuQuota === undefined || limits.cpuQuota < 0 ? 'max' : String(limits.cpuQuota);
      out.push({ controller: 'cpu', file: 'cpu.max', value: `${quota} ${limits.cpuPeriod ?? DEFAULT_CFS_PERIOD}` });
    }
    if (limits.memoryLimitBytes !== undefined) {
      out.push({ controller: 'memory', file: 'memory.max', value: limits.memoryLimitBytes < 0 ? 'max' : String(limits.memoryLimitBytes) });
    }
    return out;
  }
  if (limits.cpuShares !== undefined) out.push({ controller: 'cpu', file: 'cpu.shares', value: String(limits.cpuShares) });
  // The period first: the kernel checks a quota against the period in force.
  if (limits.cpuPeriod !== undefined) out.push({ controller: 'cpu', file: 'cpu.cfs_period_us', value: String(limits.cpuPeriod) });
  if (limits.cpuQuota !== undefined) out.push({ controller: 'cpu', file: 'cpu.cfs_quota_us', value: String(limits.cpuQuota < 0 ? -1 : limits.cpuQuota) });
  if (limits.memoryLimitBytes !== undefined) {
    out.push({ controller: 'memory', file: 'memory.limit_in_bytes', value: String(limits.memoryLimitBytes < 0 ? -1 : limits.memoryLimitBytes) });
  }
  return out;
}

/** A pod's cgroup parent relative to the hierarchy roots (cgroupfs path or systemd slice). */
export function podCgroupRelativePath(parent: string, driver: CgroupDriver): string {
  return driver === 'systemd' ? expandSlice(path.posix.basename(parent)) : path.posix.join('/', parent);
}

/**
 * Writes `writes` into the cgroup at `dirOf(controller)`. A cgroup or controller that is not
 * there is skipped and named in the result: the kubelet creates pod cgroups, and one that does
 * not exist yet has nothing to enforce. A write the kernel refuses throws, naming the file.
 */
export function writeCgroupFiles(
  writes: CgroupWrite[],
  dirOf: (controller: CgroupWrite['controller']) => string | undefined,
): { written: string[]; skipped: string[] } {
  const written: string[] = [];
  const skipped: string[] = [];
  for (const w of writes) {
    const dir = dirOf(w.controller);
    if (dir === undefined || !fs.existsSync(dir)) {
      skipped.push(w.file);
      continue;
    }
    const file = path.join(dir, w.file);
    try {
      // No O_CREAT: a cgroup file is never made by writing it, and a missing one means the
      // controller is not there.
      const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_TRUNC);
      try {
        fs.writeSync(fd, w.value);
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      // A v2 controller not enabled for this subtree has no file at all.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        skipped.push(w.file);
        continue;
      }
      throw new Error(`failed to write ${JSON.stringify(w.value)} to ${file}: ${(err as Error).message}`, { cause: err });
    }
    written.push(file);
  }
  return { written, skipped };
}

/** Applies pod totals to the pod cgroup `parent` on this host's cgroup version. */
export function applyPodLimits(
  parent: string,
  driver: CgroupDriver,
  limits: PodLimits,
  version: CgroupVersion = cgroupVersion(),
): { written: string[]; skipped: string[] } {
  const rel = podCgroupRelativePath(parent, driver);
  if (rel === '/') throw new Error(`refusing to set pod limits on the root cgroup (parent ${JSON.stringify(parent)})`);
  const writes = podLimitWrites(limits, version);
  return writeCgroupFiles(writes, (controller) => (version === 2 ? v2Dir(rel) : v1Dir(controller, rel)));
}
