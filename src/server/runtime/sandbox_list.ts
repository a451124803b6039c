import type { ListPodSandboxRequest__Output } from '../../gen/runtime/v1/ListPodSandboxRequest';
import type { StreamPodSandboxesRequest__Output } from '../../gen/runtime/v1/StreamPodSandboxesRequest';
import type { StreamPodSandboxesResponse } from '../../gen/runtime/v1/StreamPodSandboxesResponse';
import { toPodSandbox } from '../../sandbox/sandbox';
import type { SandboxService } from '../../sandbox/sandbox_service';
import { Encoded, MessageBuilder, type RecordEncodings } from '../encoding';

/** From memory and each pod's kept encoding: the kubelet lists pods every second. */
export function listPodSandbox(req: ListPodSandboxRequest__Output, sandboxes: SandboxService, enc: RecordEncodings): Encoded {
  // ListPodSandboxResponse: repeated PodSandbox items = 1.
  return new Encoded(
    new MessageBuilder()
      .repeated(
        1,
        sandboxes.list(req.filter).map((r) => enc.sandbox.get(r)),
      )
      .finish(),
  );
}

const PAGE = 500;

export function streamPodSandboxes(req: StreamPodSandboxesRequest__Output, sandboxes: SandboxService, send: (msg: StreamPodSandboxesResponse) => void): void {
  const all = sandboxes.list(req.filter).map(toPodSandbox);
  for (let i = 0; i < all.length; i += PAGE) send({ pod_sandboxes: all.slice(i, i + PAGE) });
}
