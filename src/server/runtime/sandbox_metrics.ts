import type { ContainerService } from '../../container/container_service';
import { podSandboxMetrics } from '../../container/metrics';
import type { ListPodSandboxMetricsResponse } from '../../gen/runtime/v1/ListPodSandboxMetricsResponse';
import type { StreamPodSandboxMetricsResponse } from '../../gen/runtime/v1/StreamPodSandboxMetricsResponse';
import type { SandboxService } from '../../sandbox/sandbox_service';

/** Every ready pod's metrics, from the stats cache the stats RPCs read too. */
export async function listPodSandboxMetrics(sandboxes: SandboxService, containers: ContainerService): Promise<ListPodSandboxMetricsResponse> {
  const ready = sandboxes.list({ id: '', label_selector: {}, state: { state: 'SANDBOX_READY' } });
  return { pod_metrics: await Promise.all(ready.map((s) => podSandboxMetrics(containers, s))) };
}

const PAGE = 100;

export async function streamPodSandboxMetrics(
  sandboxes: SandboxService,
  containers: ContainerService,
  send: (msg: StreamPodSandboxMetricsResponse) => void,
): Promise<void> {
  const all = (await listPodSandboxMetrics(sandboxes, containers)).pod_metrics ?? [];
  for (let i = 0; i < all.length; i += PAGE) send({ pod_sandbox_metrics: all.slice(i, i + PAGE) });
}
