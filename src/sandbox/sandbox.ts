import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources';
import type { PodSandbox } from '../gen/runtime/v1/PodSandbox';
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig';
import type { PodSandboxStatus } from '../gen/runtime/v1/PodSandboxStatus';
import type { PodNamespaces } from '../sys/namespaces';
import type { PidHolder } from './pid_holder';
import type { PodFiles } from './pod_files';
import type { UsernsMappings } from './userns';

/**
 * A pod sandbox's durable record. `phase` is the state machine: `creating` is written before
 * any resource exists (so a daemon that dies mid-create finds it and rolls it back),
 * `ready` once namespaces, network and files are in place, `stopped` after StopPodSandbox
 * released the network.
 */
export interface SandboxRecord {
  id: string;
  /** The reserved name: metadata name, namespace, uid and attempt. */
  name: string;
  config: PodSandboxConfig__Output;
  runtimeHandler: string;
  phase: 'creating' | 'ready' | 'stopped';
  createdAt: string;
  hostNetwork: boolean;
  hostIpc: boolean;
  hostPid: boolean;
  hostname: string;
  /** State directory holding the pinned namespaces and pod files. */
  dir: string;
  namespaces: PodNamespaces;
  /** The pod's own user namespace (hostUsers: false), pinned as namespaces.user. */
  userns?: UsernsMappings;
  files?: PodFiles;
  /** The process holding the pod's shared PID namespace, when the pod asks for one. */
  pidHolder?: PidHolder;
  ips: string[];
  cgroupParent: string;
  /** The last UpdatePodSandboxResources (in-place pod resize), as the kubelet sent it. */
  resources?: { overhead: LinuxContainerResources__Output | null; resources: LinuxContainerResources__Output | null };
}

export function sandboxName(config: PodSandboxConfig__Output): string {
  const m = config.metadata;
  if (!m) throw new Error('pod sandbox config has no metadata');
  return `${m.name}_${m.namespace}_${m.uid}_${m.attempt}`;
}

export function criState(rec: SandboxRecord): 'SANDBOX_READY' | 'SANDBOX_NOTREADY' {
  return rec.phase === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY';
}

export function toPodSandbox(rec: SandboxRecord): PodSandbox {
  return {
    id: rec.id,
    metadata: rec.config.metadata,
    state: criState(rec),
    created_at: rec.createdAt,
    labels: rec.config.labels,
    annotations: rec.config.annotations,
    runtime_handler: rec.runtimeHandler,
  };
}

export function toPodSandboxStatus(rec: SandboxRecord): PodSandboxStatus {
  const ns = rec.config.linux?.security_context?.namespace_options;
  return {
    id: rec.id,
    metadata: rec.config.metadata,
    state: criState(rec),
    created_at: rec.createdAt,
    network: rec.hostNetwork ? { ip: '', additional_ips: [] } : { ip: rec.ips[0] ?? '', additional_ips: rec.ips.slice(1).map((ip) => ({ ip })) },
    linux: {
      namespaces: {
        options: {
          network: ns?.network ?? 'POD',
          pid: ns?.pid ?? 'POD',
          ipc: ns?.ipc ?? 'POD',
          target_id: ns?.target_id ?? '',
          userns_options: ns?.userns_options ?? null,
        },
      },
    },
    labels: rec.config.labels,
    annotations: rec.config.annotations,
    runtime_handler: rec.runtimeHandler,
  };
}
