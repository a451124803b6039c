import type { ContainerService } from '../../container/container_service';
import type { CreateContainerRequest__Output } from '../../gen/runtime/v1/CreateContainerRequest';
import type { CreateContainerResponse } from '../../gen/runtime/v1/CreateContainerResponse';
import type { CallContext } from '../grpc';

export async function createContainer(req: CreateContainerRequest__Output, containers: ContainerService, ctx: CallContext): Promise<CreateContainerResponse> {
  const rec = await containers.create(req.pod_sandbox_id, req.config, ctx.log);
  return { container_id: rec.id };
}
