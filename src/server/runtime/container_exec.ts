import type { ContainerService } from '../../container/container_service';
import { FailedPreconditionError, InvalidArgumentError } from '../../errors';
import type { ExecRequest__Output } from '../../gen/runtime/v1/ExecRequest';
import type { ExecResponse } from '../../gen/runtime/v1/ExecResponse';
import type { StreamingServer } from '../../streaming/server';

/** Validates now, runs later: the command starts when a client connects to the returned URL. */
export function exec(req: ExecRequest__Output, containers: ContainerService, streaming: StreamingServer): ExecResponse {
  const rec = containers.get(req.container_id);
  if (rec.phase !== 'running') throw new FailedPreconditionError(`Exec in container ${rec.id}: container is ${rec.phase}, not running`);
  if (req.cmd.length === 0) throw new InvalidArgumentError(`Exec in container ${rec.id}: cmd is empty`);
  if (!req.stdin && !req.stdout && !req.stderr) {
    throw new InvalidArgumentError(`Exec in container ${rec.id}: one of stdin, stdout and stderr must be set`);
  }
  // cri-api: "If tty is true, stderr MUST be false" — a terminal has one output stream.
  if (req.tty && req.stderr) throw new InvalidArgumentError(`Exec in container ${rec.id}: tty and stderr cannot both be true`);
  // kubelet 1.36 rejects relative URLs, so the server always hands out absolute ones.
  const url = streaming.urlFor({ kind: 'exec', containerId: rec.id, cmd: req.cmd, tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr });
  return { url };
}
