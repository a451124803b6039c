import type { RunPodSandboxRequest__Output } from '../../gen/runtime/v1/RunPodSandboxRequest';
import type { RunPodSandboxResponse } from '../../gen/runtime/v1/RunPodSandboxResponse';
import type { SandboxService } from '../../sandbox/sandbox_service';
import type { CallContext } from '../grpc';

export async function runPodSandbox(req: RunPodSandboxRequest__Output, sandboxes: SandboxService, ctx: CallContext): Promise<RunPodSandboxResponse> {
  const rec = await sandboxes.run(req.config, req.runtime_handler, ctx.log);
  return { pod_sandbox_id: rec.id };
}
