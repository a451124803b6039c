import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import type { PortForwardRequest__Output } from '../../gen/runtime/v1/PortForwardRequest';
import type { PortForwardResponse } from '../../gen/runtime/v1/PortForwardResponse';
import type { SandboxService } from '../../sandbox/sandbox_service';
import type { StreamingServer } from '../../streaming/server';

export function portForward(req: PortForwardRequest__Output, sandboxes: SandboxService, streaming: StreamingServer): PortForwardResponse {
  const sb = sandboxes.get(req.pod_sandbox_id);
  if (sb.phase !== 'ready') throw new FailedPreconditionError(`PortForward to pod ${sb.id}: sandbox is ${sb.phase}, not ready`);
  const bad = req.port.find((p) => !Number.isInteger(p) || p < 1 || p > 65535);
  if (bad !== undefined) throw new InvalidArgumentError(`PortForward to pod ${sb.id}: invalid port ${bad}`);
  const url = streaming.urlFor({ kind: 'portforward', sandboxId: sb.id, ports: req.port });
  return { url };
}
