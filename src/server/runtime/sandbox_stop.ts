import type { StopPodSandboxRequest__Output } from '../../gen/runtime/v1/StopPodSandboxRequest';
import type { StopPodSandboxResponse } from '../../gen/runtime/v1/StopPodSandboxResponse';
import type { SandboxService } from '../../sandbox/sandbox_service';
import type { CallContext } from '../grpc';

/** Idempotent, unknown ids included (cri-api StopPodSandbox). */
export async function stopPodSandbox(req: StopPodSandboxRequest__Output, sandboxes: SandboxService, ctx: CallContext): Promise<StopPodSandboxResponse> {
  await sandboxes.stop(req.pod_sandbox_id, ctx.log);
  return {};
}
