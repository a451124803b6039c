import { InvalidArgumentError } from '../errors';
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig';
import { podUserns, type UsernsMappings } from './userns';

/**
 * Sysctls a pod may set, by the namespace that makes them per-pod (the kubelet's
 * pkg/kubelet/sysctl/namespace.go list): IPC ones need the pod's IPC namespace, net.* its
 * network namespace. Anything else would change the node, and runc would refuse it anyway.
 */
function sysctlNamespace(name: string): 'ipc' | 'net' | undefined {
  if (name === 'kernel.sem' || name.startsWith('kernel.shm') || name.startsWith('kernel.msg') || name.startsWith('fs.mqueue.')) return 'ipc';
  if (name.startsWith('net.')) return 'net';
  return undefined;
}

/**
 * Refuses, before anything is created, what tscri cannot give a pod. Returns the pod's user
 * namespace mappings when it asks for a user namespace of its own.
 */
export function validateSandboxConfig(config: PodSandboxConfig__Output): UsernsMappings | undefined {
  const name = config.metadata?.name ?? '';
  const ns = config.linux?.security_context?.namespace_options;
  const userns = podUserns(ns, `RunPodSandbox ${name}`);
  for (const key of Object.keys(config.linux?.sysctls ?? {})) {
    const kind = sysctlNamespace(key);
    if (!kind) throw new InvalidArgumentError(`RunPodSandbox ${name}: sysctl ${key} is not namespaced: it would change the node`);
    if (kind === 'net' && ns?.network === 'NODE') {
      throw new InvalidArgumentError(`RunPodSandbox ${name}: sysctl ${key} needs the pod's own network namespace (the pod uses the host's)`);
    }
    if (kind === 'ipc' && ns?.ipc === 'NODE') {
      throw new InvalidArgumentError(`RunPodSandbox ${name}: sysctl ${key} needs the pod's own IPC namespace (the pod uses the host's)`);
    }
  }
  return userns;
}
