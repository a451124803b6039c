import { toContainerStatus } from '../../container/container';
import type { ContainerService } from '../../container/container_service';
import type { ContainerStatusRequest__Output } from '../../gen/runtime/v1/ContainerStatusRequest';
import type { ContainerStatusResponse } from '../../gen/runtime/v1/ContainerStatusResponse';

export async function containerStatus(req: ContainerStatusRequest__Output, containers: ContainerService): Promise<ContainerStatusResponse> {
  const rec = containers.get(req.container_id);
  const res: ContainerStatusResponse = { status: toContainerStatus(rec), info: {} };
  if (req.verbose) {
    res.info = {
      info: JSON.stringify({
        sandboxID: rec.sandboxId,
        pid: rec.phase === 'running' ? rec.pid : 0,
        runtimeHandler: rec.runtimeHandler,
        bundle: rec.bundle,
        rootfs: rec.rootfs,
        cgroupsPath: rec.cgroupsPath,
        config: rec.config,
      }),
    };
  }
  return res;
}
