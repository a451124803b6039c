import type { ContainerService } from '../../container/container_service';
import type { StopContainerRequest__Output } from '../../gen/runtime/v1/StopContainerRequest';
import type { StopContainerResponse } from '../../gen/runtime/v1/StopContainerResponse';
import type { CallContext } from '../grpc';

/** Idempotent, unknown ids included (cri-api StopContainer). */
export async function stopContainer(req: StopContainerRequest__Output, containers: ContainerService, ctx: CallContext): Promise<StopContainerResponse> {
  await containers.stop(req.container_id, Number(req.timeout), ctx.log);
  return {};
}
