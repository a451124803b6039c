import type { ContainerService } from '../../container/container_service';
import type { ReopenContainerLogRequest__Output } from '../../gen/runtime/v1/ReopenContainerLogRequest';
import type { ReopenContainerLogResponse } from '../../gen/runtime/v1/ReopenContainerLogResponse';

/** The kubelet rotates the log file and then asks the monitor to open the new one. */
export async function reopenContainerLog(req: ReopenContainerLogRequest__Output, containers: ContainerService): Promise<ReopenContainerLogResponse> {
  await containers.reopenLog(req.container_id);
  return {};
}
