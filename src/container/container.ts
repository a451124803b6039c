import type { Container } from '../gen/runtime/v1/Container';
import type { ContainerConfig__Output } from '../gen/runtime/v1/ContainerConfig';
import type { ContainerStatus } from '../gen/runtime/v1/ContainerStatus';

export type ContainerPhase = 'creating' | 'created' | 'running' | 'exited';

/**
 * A container's durable record. The phase moves creating → created → running → exited, and
 * only forward; `creating` is written before the rootfs is mounted, so an interrupted create
 * is rolled back at start.
 */
export interface ContainerRecord {
  id: string;
  sandboxId: string;
  /** The reserved name: container name, attempt and the pod's reserved name. */
  name: string;
  config: ContainerConfig__Output;
  /** The image as the request named it, and the id it resolved to. */
  imageName: string;
  imageId: string;
  /** A repo digest of the image (the kubelet's image_ref), or its id. */
  imageRef: string;
  runtimeHandler: string;
  phase: ContainerPhase;
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  exitCode: number;
  reason: string;
  message: string;
  pid: number;
  logPath: string;
  bundle: string;
  rootfs: string;
  upperDir: string;
  workDir: string;
  cgroupsPath: string;
  /** Signal to stop it with: the request's, else the image's STOPSIGNAL, else SIGTERM. */
  stopSignal: string;
  /** Layers its image volumes mount (chain IDs), kept from garbage collection until removal. */
  volumeLayers?: string[];
  /** The ids its process runs with, as the spec says (ContainerStatus.user, KEP-3619). */
  user?: { uid: number; gid: number; additionalGids: number[] };
}

export function containerName(config: ContainerConfig__Output, sandboxName: string): string {
  const m = config.metadata;
  if (!m) throw new Error(`container config in pod ${sandboxName} has no metadata`);
  return `${m.name}_${m.attempt}_${sandboxName}`;
}

const STATE: Record<ContainerPhase, 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN'> = {
  creating: 'CONTAINER_UNKNOWN',
  created: 'CONTAINER_CREATED',
  running: 'CONTAINER_RUNNING',
  exited: 'CONTAINER_EXITED',
};

export function criContainerState(rec: ContainerRecord): (typeof STATE)[ContainerPhase] {
  return STATE[rec.phase];
}

export function toContainer(rec: ContainerRecord): Container {
  return {
    id: rec.id,
    pod_sandbox_id: rec.sandboxId,
    metadata: rec.config.metadata,
    image: { image: rec.imageName, annotations: rec.config.image?.annotations ?? {}, user_specified_image: rec.config.image?.user_specified_image ?? '' },
    image_ref: rec.imageRef,
    image_id: rec.imageId,
    state: criContainerState(rec),
    created_at: rec.createdAt,
    labels: rec.config.labels,
    annotations: rec.config.annotations,
  };
}

export function toContainerStatus(rec: ContainerRecord): ContainerStatus {
  return {
    id: rec.id,
    metadata: rec.config.metadata,
    state: criContainerState(rec),
    created_at: rec.createdAt,
    started_at: rec.startedAt,
    finished_at: rec.finishedAt,
    exit_code: rec.exitCode,
    image: { image: rec.imageName, annotations: rec.config.image?.annotations ?? {}, user_specified_image: rec.config.image?.user_specified_image ?? '' },
    image_ref: rec.imageRef,
    image_id: rec.imageId,
    reason: rec.reason,
    message: rec.message,
    labels: rec.config.labels,
    annotations: rec.config.annotations,
    mounts: rec.config.mounts,
    log_path: rec.logPath,
    // The kubelet reads these back to confirm an in-place resize (UpdateContainerResources).
    resources: rec.config.linux?.resources ? { linux: rec.config.linux.resources } : null,
    // The kubelet shows these as the pod's effective supplemental groups (KEP-3619).
    user: rec.user ? { linux: { uid: rec.user.uid, gid: rec.user.gid, supplemental_groups: rec.user.additionalGids } } : null,
  };
}
