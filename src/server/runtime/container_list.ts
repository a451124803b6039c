import { toContainer } from '../../container/container';
import type { ContainerService } from '../../container/container_service';
import type { ListContainersRequest__Output } from '../../gen/runtime/v1/ListContainersRequest';
import type { ListContainersResponse } from '../../gen/runtime/v1/ListContainersResponse';
import type { StreamContainersRequest__Output } from '../../gen/runtime/v1/StreamContainersRequest';
import type { StreamContainersResponse } from '../../gen/runtime/v1/StreamContainersResponse';

/** From memory: the kubelet lists containers every second. */
export async function listContainers(req: ListContainersRequest__Output, containers: ContainerService): Promise<ListContainersResponse> {
  return { containers: containers.list(req.filter).map(toContainer) };
}

const PAGE = 500;

export async function streamContainers(
  req: StreamContainersRequest__Output,
  containers: ContainerService,
  send: (msg: StreamContainersResponse) => void,
): Promise<void> {
  const all = containers.list(req.filter).map(toContainer);
  for (let i = 0; i < all.length; i += PAGE) send({ containers: all.slice(i, i + PAGE) });
}
