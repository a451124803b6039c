// A pod's totals from UpdatePodSandboxResources: the sum of its containers' resources
// (`resources`) plus the pod overhead of its RuntimeClass (`overhead`), as the kubelet sizes
// the pod cgroup. Zero means "not specified" in the CRI, and an unspecified limit has no total;
// so does a value past 2^53, which is how the kubelet says "no limit" (a pod without a memory
// limit is sent memory_limit_in_bytes 9223372036854771712, the page-aligned int64 maximum).

import type { PodLimits } from '../cgroups/pod_limits';
import { InvalidArgumentError } from '../errors';
import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources';

function int(value: string | undefined, field: string, what: string): number {
  if (!value) return 0;
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`${what}: ${field} ${JSON.stringify(value)} is not an integer`);
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : 0;
}

export function podTotals(overhead: LinuxContainerResources__Output | null, resources: LinuxContainerResources__Output | null, what: string): PodLimits {
  const o = (f: 'cpu_shares' | 'cpu_quota' | 'cpu_period' | 'memory_limit_in_bytes') => int(overhead?.[f], `overhead.${f}`, what);
  const r = (f: 'cpu_shares' | 'cpu_quota' | 'cpu_period' | 'memory_limit_in_bytes') => int(resources?.[f], `resources.${f}`, what);
  const out: PodLimits = {};
  const shares = r('cpu_shares') + o('cpu_shares');
  if (shares > 0) out.cpuShares = shares;
  const period = r('cpu_period') || o('cpu_period');
  if (period > 0) out.cpuPeriod = period;
  // Without a quota on the containers the pod has no CPU limit, whatever its overhead.
  if (r('cpu_quota') > 0) {
    const oPeriod = o('cpu_period') || period || 100_000;
    // The overhead's quota rescaled to the pod's period, so the two add up.
    out.cpuQuota = r('cpu_quota') + Math.ceil((Math.max(o('cpu_quota'), 0) * (period || 100_000)) / oPeriod);
  }
  if (r('memory_limit_in_bytes') > 0) out.memoryLimitBytes = r('memory_limit_in_bytes') + Math.max(o('memory_limit_in_bytes'), 0);
  return out;
}
