import type { ContainerService } from '../../container/container_service';
import { podSandboxStats as statsOf } from '../../container/stats';
import type { ListPodSandboxStatsResponse } from '../../gen/runtime/v1/ListPodSandboxStatsResponse';
import type { PodSandboxStatsFilter__Output } from '../../gen/runtime/v1/PodSandboxStatsFilter';
import type { PodSandboxStatsRequest__Output } from '../../gen/runtime/v1/PodSandboxStatsRequest';
import type { PodSandboxStatsResponse } from '../../gen/runtime/v1/PodSandboxStatsResponse';
import type { StreamPodSandboxStatsResponse } from '../../gen/runtime/v1/StreamPodSandboxStatsResponse';
import type { SandboxService } from '../../sandbox/sandbox_service';

export async function podSandboxStats(
  req: PodSandboxStatsRequest__Output,
  sandboxes: SandboxService,
  containers: ContainerService,
): Promise<PodSandboxStatsResponse> {
  return { stats: await statsOf(containers, sandboxes.get(req.pod_sandbox_id)) };
}

export async function listPodSandboxStats(
  req: { filter: PodSandboxStatsFilter__Output | null },
  sandboxes: SandboxService,
  containers: ContainerService,
): Promise<ListPodSandboxStatsResponse> {
  const selected = sandboxes.list({ id: req.filter?.id ?? '', label_selector: req.filter?.label_selector ?? {}, state: { state: 'SANDBOX_READY' } });
  return { stats: await Promise.all(selected.map((s) => statsOf(containers, s))) };
}

export async function streamPodSandboxStats(
  req: { filter: PodSandboxStatsFilter__Output | null },
  sandboxes: SandboxService,
  containers: ContainerService,
  send: (msg: StreamPodSandboxStatsResponse) => void,
): Promise<void> {
  send({ pod_sandbox_stats: (await listPodSandboxStats(req, sandboxes, containers)).stats ?? [] });
}
