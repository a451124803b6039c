// The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics): the cAdvisor metric families
// the kubelet serves on /metrics/cadvisor, which with its PodAndContainerStatsFromCRI feature
// gate it takes from the runtime instead of from cAdvisor. The kubelet asks for the descriptors
// once and turns each Metric into a Prometheus sample of the descriptor with the same name, so
// every metric's label values follow its descriptor's label keys, in order. Values are uint64:
// seconds are whole seconds (the CRI has no fractional values).
import type { SandboxRecord } from '../sandbox/sandbox';
import type { ContainerRecord } from './container';
import type { ContainerService } from './container_service';
import type { CgroupSample, NetworkSample } from './stats_cache';

export type MetricType = 'COUNTER' | 'GAUGE';

export interface MetricDescriptor {
  name: string;
  help: string;
  label_keys: string[];
}

export interface Metric {
  name: string;
  /** Unix nanoseconds of the reading the value comes from. */
  timestamp: string;
  metric_type: MetricType;
  label_values: string[];
  value: { value: string };
}

export interface ContainerMetrics {
  container_id: string;
  metrics: Metric[];
}

export interface PodSandboxMetrics {
  pod_sandbox_id: string;
  metrics: Metric[];
  container_metrics: ContainerMetrics[];
}

/**
 * cAdvisor's labels as the kubelet sets them on /metrics/cadvisor: `container` (the CRI name;
 * empty for the pod's own cgroup, `POD` for the pod's network), `id` (the cgroup path), `image`,
 * `name` (the runtime's id), `namespace` and `pod`.
 */
const BASE = ['container', 'id', 'image', 'name', 'namespace', 'pod'];

interface Family {
  name: string;
  help: string;
  type: MetricType;
  /** Label keys after BASE. */
  extra?: string[];
}

const F = {
  cpuUsage: { name: 'container_cpu_usage_seconds_total', help: 'Cumulative cpu time consumed in seconds.', type: 'COUNTER', extra: ['cpu'] },
  cpuUser: { name: 'container_cpu_user_seconds_total', help: 'Cumulative user cpu time consumed in seconds.', type: 'COUNTER' },
  cpuSystem: { name: 'container_cpu_system_seconds_total', help: 'Cumulative system cpu time consumed in seconds.', type: 'COUNTER' },
  cfsPeriods: { name: 'container_cpu_cfs_periods_total', help: 'Number of elapsed enforcement period intervals.', type: 'COUNTER' },
  cfsThrottledPeriods: { name: 'container_cpu_cfs_throttled_periods_total', help: 'Number of throttled period intervals.', type: 'COUNTER' },
  cfsThrottledSeconds: { name: 'container_cpu_cfs_throttled_seconds_total', help: 'Total time duration the container has been throttled.', type: 'COUNTER' },
  memUsage: {
    name: 'container_memory_usage_bytes',
    help: 'Current memory usage in bytes, including all memory regardless of when it was accessed.',
    type: 'GAUGE',
  },
  memWorkingSet: { name: 'container_memory_working_set_bytes', help: 'Current working set in bytes.', type: 'GAUGE' },
  memRss: { name: 'container_memory_rss', help: 'Size of RSS in bytes.', type: 'GAUGE' },
  memCache: { name: 'container_memory_cache', help: 'Number of bytes of page cache memory.', type: 'GAUGE' },
  memMapped: { name: 'container_memory_mapped_file', help: 'Size of memory mapped files in bytes.', type: 'GAUGE' },
  oomEvents: { name: 'container_oom_events_total', help: 'Count of out of memory events observed for the container.', type: 'COUNTER' },
  fsUsage: { name: 'container_fs_usage_bytes', help: 'Number of bytes consumed by the container on its writable layer.', type: 'GAUGE' },
  fsInodes: { name: 'container_fs_inodes_used', help: 'Number of inodes used by the container on its writable layer.', type: 'GAUGE' },
  processes: { name: 'container_processes', help: 'Number of processes running inside the container.', type: 'GAUGE' },
  threads: { name: 'container_threads', help: 'Number of threads running inside the container.', type: 'GAUGE' },
  lastSeen: { name: 'container_last_seen', help: 'Last time a container was seen by the exporter.', type: 'GAUGE' },
  startTime: { name: 'container_start_time_seconds', help: 'Start time of the container since unix epoch in seconds.', type: 'GAUGE' },
  specMemLimit: { name: 'container_spec_memory_limit_bytes', help: 'Memory limit for the container.', type: 'GAUGE' },
  specSwapLimit: { name: 'container_spec_memory_swap_limit_bytes', help: 'Memory swap limit for the container.', type: 'GAUGE' },
  specCpuShares: { name: 'container_spec_cpu_shares', help: 'CPU share of the container.', type: 'GAUGE' },
  specCpuQuota: { name: 'container_spec_cpu_quota', help: 'CPU quota of the container.', type: 'GAUGE' },
  specCpuPeriod: { name: 'container_spec_cpu_period', help: 'CPU period of the container.', type: 'GAUGE' },
  rxBytes: { name: 'container_network_receive_bytes_total', help: 'Cumulative count of bytes received.', type: 'COUNTER', extra: ['interface'] },
  rxPackets: { name: 'container_network_receive_packets_total', help: 'Cumulative count of packets received.', type: 'COUNTER', extra: ['interface'] },
  rxDropped: {
    name: 'container_network_receive_packets_dropped_total',
    help: 'Cumulative count of packets dropped while receiving.',
    type: 'COUNTER',
    extra: ['interface'],
  },
  rxErrors: {
    name: 'container_network_receive_errors_total',
    help: 'Cumulative count of errors encountered while receiving.',
    type: 'COUNTER',
    extra: ['interface'],
  },
  txBytes: { name: 'container_network_transmit_bytes_total', help: 'Cumulative count of bytes transmitted.', type: 'COUNTER', extra: ['interface'] },
  txPackets: { name: 'container_network_transmit_packets_total', help: 'Cumulative count of packets transmitted.', type: 'COUNTER', extra: ['interface'] },
  txDropped: {
    name: 'container_network_transmit_packets_dropped_total',
    help: 'Cumulative count of packets dropped while transmitting.',
    type: 'COUNTER',
    extra: ['interface'],
  },
  txErrors: {
    name: 'container_network_transmit_errors_total',
    help: 'Cumulative count of errors encountered while transmitting.',
    type: 'COUNTER',
    extra: ['interface'],
  },
} satisfies Record<string, Family>;

export const METRIC_DESCRIPTORS: MetricDescriptor[] = Object.values(F).map((f: Family) => ({
  name: f.name,
  help: f.help,
  label_keys: [...BASE, ...(f.extra ?? [])],
}));

const NS_PER_S = 1_000_000_000n;

function wholeSeconds(ns: bigint): string {
  return (ns / NS_PER_S).toString();
}

/** Metrics sharing one set of base label values and one timestamp. */
class Emitter {
  readonly out: Metric[] = [];
  constructor(
    private readonly labels: string[],
    private readonly timestamp: string,
  ) {}

  add(f: Family, value: number | bigint | string, extra: string[] = []): void {
    const v = typeof value === 'number' ? Math.max(0, Math.floor(value)) : value;
    this.out.push({ name: f.name, timestamp: this.timestamp, metric_type: f.type, label_values: [...this.labels, ...extra], value: { value: String(v) } });
  }
}

function cgroupMetrics(e: Emitter, s: CgroupSample): void {
  const st = s.stats;
  e.add(F.cpuUsage, wholeSeconds(st.cpuUsageNs), ['total']);
  if (st.cpuUserNs !== undefined) e.add(F.cpuUser, wholeSeconds(st.cpuUserNs));
  if (st.cpuSystemNs !== undefined) e.add(F.cpuSystem, wholeSeconds(st.cpuSystemNs));
  e.add(F.cfsPeriods, st.cpuPeriods);
  e.add(F.cfsThrottledPeriods, st.cpuThrottledPeriods);
  e.add(F.cfsThrottledSeconds, wholeSeconds(st.cpuThrottledNs));
  e.add(F.memUsage, st.memoryUsageBytes);
  e.add(F.memWorkingSet, st.memoryWorkingSetBytes);
  e.add(F.memRss, st.memoryRssBytes);
  e.add(F.memCache, st.memoryCacheBytes);
  e.add(F.memMapped, st.memoryMappedFileBytes);
  if (st.oomKills !== undefined) e.add(F.oomEvents, st.oomKills);
  e.add(F.processes, st.processes);
  e.add(F.threads, st.pids);
}

function networkMetrics(e: Emitter, n: NetworkSample): void {
  for (const i of n.interfaces) {
    const l = [i.name];
    e.add(F.rxBytes, i.rxBytes, l);
    e.add(F.rxPackets, i.rxPackets, l);
    e.add(F.rxDropped, i.rxDropped, l);
    e.add(F.rxErrors, i.rxErrors, l);
    e.add(F.txBytes, i.txBytes, l);
    e.add(F.txPackets, i.txPackets, l);
    e.add(F.txDropped, i.txDropped, l);
    e.add(F.txErrors, i.txErrors, l);
  }
}

/** An int64 of the CRI config (a string, proto-loader's longs) as a non-negative decimal, or undefined. */
function positive(v: string | number | undefined | null): string | undefined {
  if (v === undefined || v === null) return undefined;
  const s = String(v);
  return /^\d+$/.test(s) && s !== '0' ? s : undefined;
}

function specMetrics(e: Emitter, rec: ContainerRecord): void {
  const r = rec.config.linux?.resources;
  if (!r) return;
  const mem = positive(r.memory_limit_in_bytes);
  if (mem) e.add(F.specMemLimit, mem);
  const swap = positive(r.memory_swap_limit_in_bytes);
  if (swap) e.add(F.specSwapLimit, swap);
  const shares = positive(r.cpu_shares);
  if (shares) e.add(F.specCpuShares, shares);
  const quota = positive(r.cpu_quota);
  if (quota) e.add(F.specCpuQuota, quota);
  const period = positive(r.cpu_period);
  if (period) e.add(F.specCpuPeriod, period);
}

async function containerMetrics(containers: ContainerService, sandbox: SandboxRecord, rec: ContainerRecord): Promise<ContainerMetrics> {
  const { cgroup, writableBytes, writableInodes } = await containers.stats(rec, 'full');
  const m = sandbox.config.metadata;
  const labels = [rec.config.metadata?.name ?? '', rec.cgroupsPath, rec.imageName, rec.id, m?.namespace ?? '', m?.name ?? ''];
  const now = BigInt(Date.now()) * 1_000_000n;
  const e = new Emitter(labels, (cgroup?.stats.timestampNs ?? now).toString());
  if (cgroup) cgroupMetrics(e, cgroup);
  e.add(F.fsUsage, writableBytes);
  e.add(F.fsInodes, writableInodes);
  e.add(F.lastSeen, Number(now / NS_PER_S));
  if (rec.startedAt !== '0' && rec.startedAt !== '') e.add(F.startTime, wholeSeconds(BigInt(rec.startedAt)));
  specMetrics(e, rec);
  return { container_id: rec.id, metrics: e.out };
}

/** One pod's metrics: its cgroup, its network (per interface) and each running container's. */
export async function podSandboxMetrics(containers: ContainerService, sandbox: SandboxRecord): Promise<PodSandboxMetrics> {
  const running = containers.inSandbox(sandbox.id).filter((c) => c.phase === 'running');
  const [pod, network, perContainer] = await Promise.all([
    containers.podStats(sandbox, 'full'),
    containers.podNetwork(sandbox),
    Promise.all(running.map((c) => containerMetrics(containers, sandbox, c))),
  ]);
  const m = sandbox.config.metadata;
  const metrics: Metric[] = [];
  if (pod) {
    const e = new Emitter(['', sandbox.cgroupParent, '', '', m?.namespace ?? '', m?.name ?? ''], pod.stats.timestampNs.toString());
    cgroupMetrics(e, pod);
    metrics.push(...e.out);
  }
  if (network) {
    // cAdvisor reports a pod's network on its infra container, which the kubelet names POD.
    const e = new Emitter(['POD', sandbox.cgroupParent, '', sandbox.id, m?.namespace ?? '', m?.name ?? ''], network.timestampNs.toString());
    networkMetrics(e, network);
    metrics.push(...e.out);
  }
  return { pod_sandbox_id: sandbox.id, metrics, container_metrics: perContainer };
}
