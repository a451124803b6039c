import type { RemovePodSandboxRequest__Output } from '../../gen/runtime/v1/RemovePodSandboxRequest';
import type { RemovePodSandboxResponse } from '../../gen/runtime/v1/RemovePodSandboxResponse';
import type { SandboxService } from '../../sandbox/sandbox_service';
import type { CallContext } from '../grpc';

/** Removes the pod and its containers; idempotent (cri-api RemovePodSandbox). */
export async function removePodSandbox(req: RemovePodSandboxRequest__Output, sandboxes: SandboxService, ctx: CallContext): Promise<RemovePodSandboxResponse> {
  await sandboxes.remove(req.pod_sandbox_id, ctx.log);
  return {};
}
