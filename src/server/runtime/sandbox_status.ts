import type { ContainerService } from '../../container/container_service';
import { toContainerStatus } from '../../container/container';
import type { PodSandboxStatusRequest__Output } from '../../gen/runtime/v1/PodSandboxStatusRequest';
import type { PodSandboxStatusResponse } from '../../gen/runtime/v1/PodSandboxStatusResponse';
import { toPodSandboxStatus } from '../../sandbox/sandbox';
import type { SandboxService } from '../../sandbox/sandbox_service';
import { nowNs } from '../../util/ids';
import { Encoded, MessageBuilder, type RecordEncodings } from '../encoding';

export function podSandboxStatus(
  req: PodSandboxStatusRequest__Output,
  sandboxes: SandboxService,
  containers: ContainerService,
  enc: RecordEncodings,
): PodSandboxStatusResponse | Encoded {
  const rec = sandboxes.get(req.pod_sandbox_id);
  if (!req.verbose) {
    // PodSandboxStatusResponse: status = 1, containers_statuses = 3, timestamp = 4; info (2)
    // only when verbose.
    return new Encoded(
      new MessageBuilder()
        .bytes(1, enc.sandboxStatus.get(rec))
        .repeated(
          3,
          containers.inSandbox(rec.id).map((c) => enc.containerStatus.get(c)),
        )
        .int64(4, BigInt(nowNs()))
        .finish(),
    );
  }
  return {
    status: toPodSandboxStatus(rec),
    containers_statuses: containers.inSandbox(rec.id).map(toContainerStatus),
    timestamp: nowNs(),
    info: {
      info: JSON.stringify({
        pid: 0,
        phase: rec.phase,
        namespaces: rec.namespaces,
        files: rec.files,
        cgroupParent: rec.cgroupParent,
        runtimeHandler: rec.runtimeHandler,
        config: rec.config,
      }),
    },
  };
}
