import type { ContainerService } from '../../container/container_service';
import { containerStats as statsOf } from '../../container/stats';
import type { ContainerStatsRequest__Output } from '../../gen/runtime/v1/ContainerStatsRequest';
import type { ContainerStatsResponse } from '../../gen/runtime/v1/ContainerStatsResponse';
import type { ContainerStatsFilter__Output } from '../../gen/runtime/v1/ContainerStatsFilter';
import type { ListContainerStatsResponse } from '../../gen/runtime/v1/ListContainerStatsResponse';
import type { StreamContainerStatsResponse } from '../../gen/runtime/v1/StreamContainerStatsResponse';

export async function containerStats(req: ContainerStatsRequest__Output, containers: ContainerService): Promise<ContainerStatsResponse> {
  return { stats: await statsOf(containers, containers.get(req.container_id)) };
}

function select(filter: ContainerStatsFilter__Output | null, containers: ContainerService) {
  return containers.list({
    id: filter?.id ?? '',
    pod_sandbox_id: filter?.pod_sandbox_id ?? '',
    label_selector: filter?.label_selector ?? {},
    state: null,
  });
}

export async function listContainerStats(
  req: { filter: ContainerStatsFilter__Output | null },
  containers: ContainerService,
): Promise<ListContainerStatsResponse> {
  return { stats: await Promise.all(select(req.filter, containers).map((c) => statsOf(containers, c))) };
}

export async function streamContainerStats(
  req: { filter: ContainerStatsFilter__Output | null },
  containers: ContainerService,
  send: (msg: StreamContainerStatsResponse) => void,
): Promise<void> {
  send({ container_stats: (await listContainerStats(req, containers)).stats ?? [] });
}
