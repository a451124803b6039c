import { toContainerStatus } from '../../container/container';
import type { ContainerEvent, ContainerService } from '../../container/container_service';
import type { ContainerEventResponse } from '../../gen/runtime/v1/ContainerEventResponse';
import { toPodSandboxStatus } from '../../sandbox/sandbox';
import type { SandboxService } from '../../sandbox/sandbox_service';
import type { CallContext } from '../grpc';

/** Streams container lifecycle events until the client goes away (the kubelet's Evented PLEG). */
export async function getContainerEvents(
  containers: ContainerService,
  sandboxes: SandboxService,
  send: (msg: ContainerEventResponse) => void,
  ctx: CallContext,
): Promise<void> {
  const onEvent = (ev: ContainerEvent): void => {
    const sandbox = sandboxes.find(ev.sandboxId);
    send({
      container_id: ev.containerId,
      container_event_type: ev.type,
      created_at: ev.createdAt,
      pod_sandbox_status: sandbox ? toPodSandboxStatus(sandbox) : null,
      containers_statuses: containers.inSandbox(ev.sandboxId).map(toContainerStatus),
    });
  };
  containers.events.on('event', onEvent);
  try {
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
  } finally {
    containers.events.off('event', onEvent);
  }
}
