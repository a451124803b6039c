// Kernel features, each probed by doing it: a recursively read-only clone of a directory
// (detached, never attached anywhere), pod namespaces pinned the way the daemon pins them; user
// namespaces come from the daemon's own probe (snapshot/idmap_probe.ts).
import fs from 'node:fs';
import path from 'node:path';
import { readMountInfo } from '../sys/mountinfo';
import { pinPodNamespaces, releaseNamespaceRoot, unpinNamespaces } from '../sys/namespaces';
import { AT_EMPTY_PATH, AT_RECURSIVE, close, MOUNT_ATTR_RDONLY, mountSetattr, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE, openTree } from '../sys/mount_api';
import type { UsernsSupport } from '../snapshot/idmap_probe';
import { hasSysResource } from '../util/capabilities';
import { failed, found, messageOf, type Finding } from './finding';

/** net, ipc and uts namespaces created and pinned in `scratch`, then removed. */
export async function probePodNamespaces(scratch: string): Promise<Finding> {
  const root = path.join(scratch, 'ns');
  try {
    const pinned = await pinPodNamespaces(path.join(root, 'probe'), { net: true, ipc: true, uts: true, hostname: 'tscri-check' });
    await unpinNamespaces(pinned);
    return found('pods', 'net, ipc and uts namespaces can be created and pinned', true);
  } catch (err) {
    return failed('pods', `cannot make a pod's namespaces: ${messageOf(err)}`, true);
  } finally {
    releaseNamespaceRoot(root);
  }
}

/**
 * The daemon's own start-up probe (snapshot/idmap_probe.ts: a user namespace made by the
 * helper, an idmapped mount on the image store's filesystem, an overlay over it), as a finding.
 */
export function usernsFinding(support: UsernsSupport, dir: string): Finding {
  if (!support.ok) return failed('user namespaces', `pods with hostUsers: false cannot run: ${support.reason ?? 'probe failed'}${maxUserNamespaces()}`);
  return found('user namespaces', `a user namespace, idmapped mounts on ${fsName(dir)} and an overlay over idmapped layers work${maxUserNamespaces()}`);
}

function maxUserNamespaces(): string {
  try {
    return ` (user.max_user_namespaces = ${fs.readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim()})`;
  } catch {
    return '';
  }
}

/** A recursively read-only clone of `dir` (mount_setattr with AT_RECURSIVE), dropped at once. */
export function probeRecursiveReadOnly(dir: string): Finding {
  try {
    const tree = openTree(dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    try {
      mountSetattr(tree, '', AT_EMPTY_PATH | AT_RECURSIVE, { attrSet: MOUNT_ATTR_RDONLY });
    } finally {
      close(tree);
    }
    return found('recursive read-only mounts', 'mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY) works (Linux 5.12+)');
  } catch (err) {
    return failed('recursive read-only mounts', messageOf(err));
  }
}

/** The filesystem type of the mount holding `p` (the last one mounted over it), from mountinfo. */
export function fsName(p: string): string {
  let best = { mountPoint: '', fsType: 'unknown' };
  try {
    const real = fs.realpathSync(p);
    for (const m of readMountInfo()) {
      const under = real === m.mountPoint || real.startsWith(m.mountPoint === '/' ? '/' : `${m.mountPoint}/`);
      if (under && m.mountPoint.length >= best.mountPoint.length) best = m;
    }
  } catch {
    // Reported as unknown: only a label in a message.
  }
  return `${best.fsType} (${best.mountPoint || p})`;
}

/** Seccomp in the kernel (the runtime's libseccomp is reported with each runtime). */
export function probeSeccomp(status = '/proc/self/status'): Finding {
  let text = '';
  try {
    text = fs.readFileSync(status, 'utf8');
  } catch (err) {
    return failed('seccomp', messageOf(err));
  }
  if (!/^Seccomp:/m.test(text)) return failed('seccomp', 'the kernel has no seccomp (no Seccomp: line in /proc/self/status): profiles are refused');
  let actions = '';
  try {
    actions = `; actions: ${fs.readFileSync('/proc/sys/kernel/seccomp/actions_avail', 'utf8').trim()}`;
  } catch {
    // Older kernels lack the file; seccomp itself is there.
  }
  return found('seccomp', `filters supported by the kernel${actions}`);
}

/** Whether containers may get a negative oom_score_adj, as the kubelet asks for. */
export function probeOomScoreAdj(restrict: boolean | 'auto'): Finding {
  const own = ((): string => {
    try {
      return fs.readFileSync('/proc/self/oom_score_adj', 'utf8').trim();
    } catch {
      return '?';
    }
  })();
  if (hasSysResource()) return found('oom_score_adj', `CAP_SYS_RESOURCE held: any value can be set (daemon's own: ${own})`);
  const clamp =
    restrict === false
      ? 'restrict_oom_score_adj = false: containers asking for less fail to start'
      : `values below the daemon's own (${own}) are clamped to it (restrict_oom_score_adj = ${String(restrict)})`;
  return failed('oom_score_adj', `root lacks CAP_SYS_RESOURCE, so it cannot be lowered; ${clamp}`);
}
