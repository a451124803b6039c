import type { ContainerService } from '../../container/container_service';
import { DeadlineExceededError } from '../../errors';
import type { ExecSyncRequest__Output } from '../../gen/runtime/v1/ExecSyncRequest';
import type { ExecSyncResponse } from '../../gen/runtime/v1/ExecSyncResponse';

export async function execSync(req: ExecSyncRequest__Output, containers: ContainerService): Promise<ExecSyncResponse> {
  const timeout = Number(req.timeout);
  const res = await containers.execSync(req.container_id, req.cmd, timeout);
  // The kubelet turns DEADLINE_EXCEEDED into a timed-out probe (its exec prober checks the code).
  if (res.timedOut) throw new DeadlineExceededError(`command ${JSON.stringify(req.cmd)} timed out after ${timeout}s`);
  return { stdout: res.stdout, stderr: res.stderr, exit_code: res.exitCode };
}
