import { toContainer } from '../../container/container';
import type { ContainerService } from '../../container/container_service';
import type { ListContainersRequest__Output } from '../../gen/runtime/v1/ListContainersRequest';
import type { StreamContainersRequest__Output } from '../../gen/runtime/v1/StreamContainersRequest';
import type { StreamContainersResponse } from '../../gen/runtime/v1/StreamContainersResponse';
import { Encoded, MessageBuilder, type RecordEncodings } from '../encoding';

/** From memory and each container's kept encoding: the kubelet lists containers every second. */
export function listContainers(req: ListContainersRequest__Output, containers: ContainerService, enc: RecordEncodings): Encoded {
  // ListContainersResponse: repeated Container containers = 1.
  return new Encoded(
    new MessageBuilder()
      .repeated(
        1,
        containers.list(req.filter).map((r) => enc.container.get(r)),
      )
      .finish(),
  );
}

const PAGE = 500;

export function streamContainers(req: StreamContainersRequest__Output, containers: ContainerService, send: (msg: StreamContainersResponse) => void): void {
  const all = containers.list(req.filter).map(toContainer);
  for (let i = 0; i < all.length; i += PAGE) send({ containers: all.slice(i, i + PAGE) });
}
