import type { ContainerService } from '../../container/container_service';
import type { UpdateContainerResourcesRequest__Output } from '../../gen/runtime/v1/UpdateContainerResourcesRequest';
import type { UpdateContainerResourcesResponse } from '../../gen/runtime/v1/UpdateContainerResourcesResponse';

export async function updateContainerResources(
  req: UpdateContainerResourcesRequest__Output,
  containers: ContainerService,
): Promise<UpdateContainerResourcesResponse> {
  await containers.updateResources(req.container_id, req.linux);
  return {};
}
