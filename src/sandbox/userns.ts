import { promises as fs } from 'node:fs';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../errors';
import type { IDMapping__Output } from '../gen/runtime/v1/IDMapping';
import type { NamespaceOption__Output } from '../gen/runtime/v1/NamespaceOption';
import type { IdMapping, UsernsMappings } from '../sys/userns';

export type { UsernsMappings } from '../sys/userns';

const MAX_ID = 2 ** 32;

function oneMapping(list: IDMapping__Output[], kind: 'UID' | 'GID', what: string): IdMapping {
  // containerd 2 accepts exactly one line per map (its snapshotter remapping takes one range),
  // and the kubelet sends one; a second line is refused rather than half applied.
  if (list.length === 0) throw new InvalidArgumentError(`${what}: user namespace mode POD needs ${kind} mappings`);
  if (list.length > 1) throw new InvalidArgumentError(`${what}: only one ${kind} mapping is supported, got ${list.length}`);
  const m = list[0];
  if (!(m.length >= 1)) throw new InvalidArgumentError(`${what}: ${kind} mapping length must be at least 1, got ${m.length}`);
  if (m.host_id + m.length > MAX_ID || m.container_id + m.length > MAX_ID) {
    throw new InvalidArgumentError(`${what}: ${kind} mapping ${m.container_id}:${m.host_id}:${m.length} runs past the last id`);
  }
  // Everything the daemon makes for the pod (rootfs, pod files, /dev/shm) is owned by the
  // container's root, which must therefore exist; runc 1.1 also refuses a spec without it.
  if (m.container_id !== 0) {
    throw new InvalidArgumentError(`${what}: ${kind} mapping ${m.container_id}:${m.host_id}:${m.length} does not map container ID 0`);
  }
  return { containerId: m.container_id, hostId: m.host_id, length: m.length };
}

/**
 * The pod's user namespace from its namespace options: undefined for the host's (mode NODE, or
 * no options: a kubelet without the feature sends none). The CRI allows only POD and NODE
 * (api.proto, UserNamespace.mode); POD takes the kubelet's single mapping per id kind. A pod in
 * its own user namespace needs its own network, IPC and PID namespaces: runc could not mount
 * sysfs or mqueue in namespaces the host's user namespace owns (and Status reports
 * user_namespaces_host_network false).
 */
export function podUserns(ns: NamespaceOption__Output | null | undefined, what: string): UsernsMappings | undefined {
  const u = ns?.userns_options;
  if (!u) return undefined;
  switch (u.mode) {
    case 'NODE':
      if (u.uids.length || u.gids.length) {
        throw new InvalidArgumentError(`${what}: user namespace mode NODE takes no mappings (got ${u.uids.length} UID and ${u.gids.length} GID)`);
      }
      return undefined;
    case 'POD':
      break;
    default:
      throw new InvalidArgumentError(`${what}: user namespace mode ${u.mode} is not supported (only POD and NODE)`);
  }
  const mappings = { uids: [oneMapping(u.uids, 'UID', what)], gids: [oneMapping(u.gids, 'GID', what)] };
  for (const [kind, mode] of [
    ['network', ns.network],
    ['IPC', ns.ipc],
    ['PID', ns.pid],
  ] as const) {
    if (mode === 'NODE') throw new InvalidArgumentError(`${what}: a pod in its own user namespace cannot use the host's ${kind} namespace`);
  }
  return mappings;
}

/** The host ids that the pod's root (container id 0) is: the owner of what the daemon makes for it. */
export function mappedRoot(m: UsernsMappings): { uid: number; gid: number } {
  return { uid: m.uids[0].hostId, gid: m.gids[0].hostId };
}

function sameList(a: IdMapping[], b: IdMapping[]): boolean {
  return a.length === b.length && a.every((m, i) => m.containerId === b[i].containerId && m.hostId === b[i].hostId && m.length === b[i].length);
}

/**
 * A container shares its pod's user namespace: options it sends must name the same mode and
 * mappings (containerd refuses a difference the same way); none at all means the pod's.
 */
export function checkContainerUserns(pod: UsernsMappings | undefined, ns: NamespaceOption__Output | null | undefined, what: string): void {
  if (!ns?.userns_options) return;
  const mine = podUserns(ns, what);
  const same = mine === undefined || pod === undefined ? mine === pod : sameList(mine.uids, pod.uids) && sameList(mine.gids, pod.gids);
  if (!same) throw new InvalidArgumentError(`${what}: user namespace options differ from the pod sandbox's`);
}

/**
 * runc enters the pod's files and its containers' rootfs by path as the pod's root, which is
 * nobody to the host's directories: every directory above `dir` (the daemon's state directory)
 * must let others search it, as the default /run/tscri (0711) does.
 */
export async function checkSearchable(dir: string, what: string): Promise<void> {
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    const st = await fs.stat(p);
    if ((st.mode & 0o001) === 0) {
      throw new FailedPreconditionError(
        `${what}: a pod with its own user namespace needs ${p} to be searchable by others (mode ${(st.mode & 0o777).toString(8)}): runc reaches the pod's files through it as the pod's root`,
      );
    }
    if (p === path.dirname(p)) return;
  }
}
