import { promises as fs } from 'node:fs';
import { type CgroupStats, readStats } from '../cgroups';
import type { ContainerStats } from '../gen/runtime/v1/ContainerStats';
import type { CpuUsage } from '../gen/runtime/v1/CpuUsage';
import type { MemoryUsage } from '../gen/runtime/v1/MemoryUsage';
import type { NetworkUsage } from '../gen/runtime/v1/NetworkUsage';
import type { PodSandboxStats } from '../gen/runtime/v1/PodSandboxStats';
import type { SandboxRecord } from '../sandbox/sandbox';
import type { ContainerRecord } from './container';
import type { ContainerService } from './container_service';

/**
 * usage_nano_cores is a rate: it needs the previous sample of the same cgroup. Samples are kept
 * per cgroup path; one older than a minute is too stale to divide by, and is dropped once the
 * map has doubled since the last sweep, so the samples of removed containers do not pile up.
 */
const lastCpu = new Map<string, { ns: bigint; at: bigint }>();
const SAMPLE_TTL_NS = 60_000_000_000n;
const MIN_SWEEP_SIZE = 1024;
let sweepAt = MIN_SWEEP_SIZE;

/** How many CPU samples are kept (for tests). */
export function cpuSamplesKept(): number {
  return lastCpu.size;
}

export function cpuUsage(key: string, s: CgroupStats): CpuUsage {
  const prev = lastCpu.get(key);
  lastCpu.set(key, { ns: s.cpuUsageNs, at: s.timestampNs });
  if (lastCpu.size > sweepAt) {
    for (const [k, v] of lastCpu) if (s.timestampNs - v.at >= SAMPLE_TTL_NS) lastCpu.delete(k);
    sweepAt = Math.max(MIN_SWEEP_SIZE, 2 * lastCpu.size);
  }
  let nanoCores: string | undefined;
  if (prev && s.timestampNs > prev.at && s.timestampNs - prev.at < 60_000_000_000n && s.cpuUsageNs >= prev.ns) {
    nanoCores = (((s.cpuUsageNs - prev.ns) * 1_000_000_000n) / (s.timestampNs - prev.at)).toString();
  }
  return {
    timestamp: s.timestampNs.toString(),
    usage_core_nano_seconds: { value: s.cpuUsageNs.toString() },
    usage_nano_cores: nanoCores === undefined ? null : { value: nanoCores },
  };
}

function memoryUsage(s: CgroupStats): MemoryUsage {
  const available = s.memoryLimitBytes !== undefined && s.memoryLimitBytes > 0 ? Math.max(0, s.memoryLimitBytes - s.memoryWorkingSetBytes) : undefined;
  return {
    timestamp: s.timestampNs.toString(),
    working_set_bytes: { value: s.memoryWorkingSetBytes },
    available_bytes: available === undefined ? null : { value: available },
    usage_bytes: { value: s.memoryUsageBytes },
    rss_bytes: { value: s.memoryRssBytes },
    page_faults: { value: s.pageFaults },
    major_page_faults: { value: s.majorPageFaults },
  };
}

export async function containerStats(containers: ContainerService, rec: ContainerRecord): Promise<ContainerStats> {
  const { cgroup, writableBytes, writableInodes } = await containers.stats(rec);
  const now = (BigInt(Date.now()) * 1_000_000n).toString();
  return {
    attributes: { id: rec.id, metadata: rec.config.metadata, labels: rec.config.labels, annotations: rec.config.annotations },
    cpu: cgroup ? cpuUsage(rec.cgroupsPath, cgroup) : { timestamp: now, usage_core_nano_seconds: { value: 0 }, usage_nano_cores: { value: 0 } },
    memory: cgroup ? memoryUsage(cgroup) : { timestamp: now, working_set_bytes: { value: 0 } },
    writable_layer: {
      timestamp: now,
      fs_id: { mountpoint: rec.upperDir },
      used_bytes: { value: writableBytes },
      inodes_used: { value: writableInodes },
    },
  };
}

/** Interface counters of the pod's network namespace, read through one of its processes. */
async function networkUsage(pid: number): Promise<NetworkUsage | null> {
  let text: string;
  try {
    text = await fs.readFile(`/proc/${pid}/net/dev`, 'utf8');
  } catch {
    return null;
  }
  const interfaces = [];
  for (const line of text.split('\n').slice(2)) {
    const m = /^\s*([^:]+):\s*(.*)$/.exec(line);
    if (!m || m[1] === 'lo') continue;
    const f = m[2]!.trim().split(/\s+/).map(Number);
    interfaces.push({ name: m[1]!, rx_bytes: { value: f[0]! }, rx_errors: { value: f[2]! }, tx_bytes: { value: f[8]! }, tx_errors: { value: f[10]! } });
  }
  return {
    timestamp: (BigInt(Date.now()) * 1_000_000n).toString(),
    default_interface: interfaces.find((i) => i.name === 'eth0') ?? interfaces[0] ?? null,
    interfaces,
  };
}

export async function podSandboxStats(containers: ContainerService, sandbox: SandboxRecord, driver: 'cgroupfs' | 'systemd'): Promise<PodSandboxStats> {
  const members = containers.inSandbox(sandbox.id);
  const stats = await Promise.all(members.map((c) => containerStats(containers, c)));
  const running = members.find((c) => c.phase === 'running');
  const pod = sandbox.cgroupParent ? await readStats(sandbox.cgroupParent, driver).catch(() => undefined) : undefined;
  const now = (BigInt(Date.now()) * 1_000_000n).toString();
  let cpu: CpuUsage;
  let memory: MemoryUsage;
  if (pod) {
    cpu = cpuUsage(`pod:${sandbox.cgroupParent}`, pod);
    memory = memoryUsage(pod);
  } else {
    // No pod cgroup: the pod is the sum of its containers.
    const sum = (f: (s: ContainerStats) => number | string | undefined): number => stats.reduce((n, s) => n + Number(f(s) ?? 0), 0);
    cpu = { timestamp: now, usage_core_nano_seconds: { value: sum((s) => (s.cpu?.usage_core_nano_seconds as { value?: number })?.value) } };
    memory = { timestamp: now, working_set_bytes: { value: sum((s) => (s.memory?.working_set_bytes as { value?: number })?.value) } };
  }
  return {
    attributes: { id: sandbox.id, metadata: sandbox.config.metadata, labels: sandbox.config.labels, annotations: sandbox.config.annotations },
    linux: {
      cpu,
      memory,
      network: running && !sandbox.hostNetwork ? await networkUsage(running.pid) : null,
      process: { timestamp: now, process_count: { value: pod?.pids ?? 0 } },
      containers: stats,
    },
  };
}
