import type { ContainerStats } from '../gen/runtime/v1/ContainerStats';
import type { CpuUsage } from '../gen/runtime/v1/CpuUsage';
import type { MemoryUsage } from '../gen/runtime/v1/MemoryUsage';
import type { NetworkUsage } from '../gen/runtime/v1/NetworkUsage';
import type { PodSandboxStats } from '../gen/runtime/v1/PodSandboxStats';
import type { SandboxRecord } from '../sandbox/sandbox';
import type { ContainerRecord } from './container';
import type { ContainerService } from './container_service';
import type { CgroupSample, NetworkSample } from './stats_cache';

function cpuUsage(s: CgroupSample): CpuUsage {
  return {
    timestamp: s.stats.timestampNs.toString(),
    usage_core_nano_seconds: { value: s.stats.cpuUsageNs.toString() },
    usage_nano_cores: s.nanoCores === undefined ? null : { value: s.nanoCores.toString() },
  };
}

function memoryUsage({ stats: s }: CgroupSample): MemoryUsage {
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

const nowNs = () => (BigInt(Date.now()) * 1_000_000n).toString();

export async function containerStats(containers: ContainerService, rec: ContainerRecord): Promise<ContainerStats> {
  const { cgroup, writableBytes, writableInodes } = await containers.stats(rec);
  const now = nowNs();
  return {
    attributes: { id: rec.id, metadata: rec.config.metadata, labels: rec.config.labels, annotations: rec.config.annotations },
    cpu: cgroup ? cpuUsage(cgroup) : { timestamp: now, usage_core_nano_seconds: { value: 0 }, usage_nano_cores: { value: 0 } },
    memory: cgroup ? memoryUsage(cgroup) : { timestamp: now, working_set_bytes: { value: 0 } },
    writable_layer: {
      timestamp: now,
      fs_id: { mountpoint: rec.upperDir },
      used_bytes: { value: writableBytes },
      inodes_used: { value: writableInodes },
    },
  };
}

function networkUsage(n: NetworkSample): NetworkUsage {
  const interfaces = n.interfaces.map((i) => ({
    name: i.name,
    rx_bytes: { value: i.rxBytes },
    rx_errors: { value: i.rxErrors },
    tx_bytes: { value: i.txBytes },
    tx_errors: { value: i.txErrors },
  }));
  return {
    timestamp: n.timestampNs.toString(),
    default_interface: interfaces.find((i) => i.name === 'eth0') ?? interfaces.at(0) ?? null,
    interfaces,
  };
}

export async function podSandboxStats(containers: ContainerService, sandbox: SandboxRecord): Promise<PodSandboxStats> {
  const members = containers.inSandbox(sandbox.id);
  const [stats, pod, network] = await Promise.all([
    Promise.all(members.map((c) => containerStats(containers, c))),
    containers.podStats(sandbox),
    containers.podNetwork(sandbox),
  ]);
  const now = nowNs();
  let cpu: CpuUsage;
  let memory: MemoryUsage;
  if (pod) {
    cpu = cpuUsage(pod);
    memory = memoryUsage(pod);
  } else {
    // No pod cgroup: the pod is the sum of its containers.
    const sum = (f: (s: ContainerStats) => number | string | undefined): number => stats.reduce((n, s) => n + Number(f(s) ?? 0), 0);
    cpu = { timestamp: now, usage_core_nano_seconds: { value: sum((s) => (s.cpu?.usage_core_nano_seconds as { value?: number } | null | undefined)?.value) } };
    memory = { timestamp: now, working_set_bytes: { value: sum((s) => (s.memory?.working_set_bytes as { value?: number } | null | undefined)?.value) } };
  }
  return {
    attributes: { id: sandbox.id, metadata: sandbox.config.metadata, labels: sandbox.config.labels, annotations: sandbox.config.annotations },
    linux: {
      cpu,
      memory,
      network: network ? networkUsage(network) : null,
      process: { timestamp: now, process_count: { value: pod?.stats.pids ?? 0 } },
      containers: stats,
    },
  };
}
