import type { ContainerService } from '../../container/container_service';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import type { AttachRequest__Output } from '../../gen/runtime/v1/AttachRequest';
import type { AttachResponse } from '../../gen/runtime/v1/AttachResponse';
import type { StreamingServer } from '../../streaming/server';

export function attach(req: AttachRequest__Output, containers: ContainerService, streaming: StreamingServer): AttachResponse {
  const rec = containers.get(req.container_id);
  if (rec.phase !== 'running') throw new FailedPreconditionError(`Attach to container ${rec.id}: container is ${rec.phase}, not running`);
  if (!req.stdin && !req.stdout && !req.stderr) {
    throw new InvalidArgumentError(`Attach to container ${rec.id}: one of stdin, stdout and stderr must be set`);
  }
  // conmon only holds a stdin pipe for containers created with stdin (its -i flag).
  if (req.stdin && !rec.config.stdin) {
    throw new InvalidArgumentError(`Attach to container ${rec.id}: stdin requested, but the container was created without stdin`);
  }
  // The terminal mode is the container's: conmon already multiplexes a TTY onto stdout.
  const tty = rec.config.tty;
  const url = streaming.urlFor({ kind: 'attach', containerId: rec.id, tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr && !tty });
  return { url };
}
