import type { ContainerService } from '../../container/container_service';
import { toContainerStatus } from '../../container/container';
import type { PodSandboxStatusRequest__Output } from '../../gen/runtime/v1/PodSandboxStatusRequest';
import type { PodSandboxStatusResponse } from '../../gen/runtime/v1/PodSandboxStatusResponse';
import { toPodSandboxStatus } from '../../sandbox/sandbox';
import type { SandboxService } from '../../sandbox/sandbox_service';
import { nowNs } from '../../util/ids';

export async function podSandboxStatus(
  req: PodSandboxStatusRequest__Output,
  sandboxes: SandboxService,
  containers: ContainerService,
): Promise<PodSandboxStatusResponse> {
  const rec = sandboxes.get(req.pod_sandbox_id);
  const res: PodSandboxStatusResponse = {
    status: toPodSandboxStatus(rec),
    containers_statuses: containers.inSandbox(rec.id).map(toContainerStatus),
    timestamp: nowNs(),
    info: {},
  };
  if (req.verbose) {
    res.info = {
      info: JSON.stringify({
        pid: 0,
        phase: rec.phase,
        namespaces: rec.namespaces,
        files: rec.files,
        cgroupParent: rec.cgroupParent,
        runtimeHandler: rec.runtimeHandler,
        config: rec.config,
      }),
    };
  }
  return res;
}
