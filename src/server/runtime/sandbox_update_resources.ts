import type { CgroupDriver } from '../../cgroups/paths';
import type { UpdatePodSandboxResourcesRequest__Output } from '../../gen/runtime/v1/UpdatePodSandboxResourcesRequest';
import type { UpdatePodSandboxResourcesResponse } from '../../gen/runtime/v1/UpdatePodSandboxResourcesResponse';
import type { SandboxService } from '../../sandbox/sandbox_service';
import type { CallContext } from '../grpc';

/** In-place pod resize; an unknown pod is NotFound, as containerd answers. */
export async function updatePodSandboxResources(
  req: UpdatePodSandboxResourcesRequest__Output,
  sandboxes: SandboxService,
  driver: CgroupDriver,
  ctx: CallContext,
): Promise<UpdatePodSandboxResourcesResponse> {
  await sandboxes.updateResources(req.pod_sandbox_id, req.overhead, req.resources, driver, ctx.log);
  return {};
}
