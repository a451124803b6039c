import type { ContainerService } from '../../container/container_service';
import type { RemoveContainerRequest__Output } from '../../gen/runtime/v1/RemoveContainerRequest';
import type { RemoveContainerResponse } from '../../gen/runtime/v1/RemoveContainerResponse';
import type { CallContext } from '../grpc';

/** A running container is killed first; idempotent (cri-api RemoveContainer). */
export async function removeContainer(req: RemoveContainerRequest__Output, containers: ContainerService, ctx: CallContext): Promise<RemoveContainerResponse> {
  await containers.remove(req.container_id, ctx.log);
  return {};
}
