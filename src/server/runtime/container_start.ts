import type { ContainerService } from '../../container/container_service';
import type { StartContainerRequest__Output } from '../../gen/runtime/v1/StartContainerRequest';
import type { StartContainerResponse } from '../../gen/runtime/v1/StartContainerResponse';
import type { CallContext } from '../grpc';

export async function startContainer(req: StartContainerRequest__Output, containers: ContainerService, ctx: CallContext): Promise<StartContainerResponse> {
  await containers.start(req.container_id, ctx.log);
  return {};
}
