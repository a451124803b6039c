import type { ListPodSandboxRequest__Output } from '../../gen/runtime/v1/ListPodSandboxRequest';
import type { ListPodSandboxResponse } from '../../gen/runtime/v1/ListPodSandboxResponse';
import type { StreamPodSandboxesRequest__Output } from '../../gen/runtime/v1/StreamPodSandboxesRequest';
import type { StreamPodSandboxesResponse } from '../../gen/runtime/v1/StreamPodSandboxesResponse';
import { toPodSandbox } from '../../sandbox/sandbox';
import type { SandboxService } from '../../sandbox/sandbox_service';

/** From memory: the kubelet lists pods every second. */
export async function listPodSandbox(req: ListPodSandboxRequest__Output, sandboxes: SandboxService): Promise<ListPodSandboxResponse> {
  return { items: sandboxes.list(req.filter).map(toPodSandbox) };
}

const PAGE = 500;

export async function streamPodSandboxes(
  req: StreamPodSandboxesRequest__Output,
  sandboxes: SandboxService,
  send: (msg: StreamPodSandboxesResponse) => void,
): Promise<void> {
  const all = sandboxes.list(req.filter).map(toPodSandbox);
  for (let i = 0; i < all.length; i += PAGE) send({ pod_sandboxes: all.slice(i, i + PAGE) });
}
