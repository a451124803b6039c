import { toContainerStatus } from '../../container/container';
import type { ContainerService } from '../../container/container_service';
import type { ContainerStatusRequest__Output } from '../../gen/runtime/v1/ContainerStatusRequest';
import type { ContainerStatusResponse } from '../../gen/runtime/v1/ContainerStatusResponse';
import { Encoded, MessageBuilder, type RecordEncodings } from '../encoding';

export function containerStatus(req: ContainerStatusRequest__Output, containers: ContainerService, enc: RecordEncodings): ContainerStatusResponse | Encoded {
  const rec = containers.get(req.container_id);
  // ContainerStatusResponse: ContainerStatus status = 1; the info map only when verbose.
  if (!req.verbose) return new Encoded(new MessageBuilder().bytes(1, enc.containerStatus.get(rec)).finish());
  return {
    status: toContainerStatus(rec),
    info: {
      info: JSON.stringify({
        sandboxID: rec.sandboxId,
        pid: rec.phase === 'running' ? rec.pid : 0,
        runtimeHandler: rec.runtimeHandler,
        bundle: rec.bundle,
        rootfs: rec.rootfs,
        cgroupsPath: rec.cgroupsPath,
        config: rec.config,
      }),
    },
  };
}
