// Kernel features, each probed by doing it: a user namespace made by a helper process, an
// idmapped and a recursively read-only clone of a directory (detached, never attached
// anywhere), pod namespaces pinned the way the daemon pins them.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { readMountInfo } from '../sys/mountinfo';
import { pinPodNamespaces, releaseNamespaceRoot, unpinNamespaces } from '../sys/namespaces';
import {
  AT_EMPTY_PATH,
  AT_RECURSIVE,
  close,
  MOUNT_ATTR_IDMAP,
  MOUNT_ATTR_RDONLY,
  mountSetattr,
  OPEN_TREE_CLOEXEC,
  OPEN_TREE_CLONE,
  openTree,
} from '../sys/mount_api';
import { hasSysResource } from '../util/capabilities';
import { which } from '../util/which';
import { failed, found, messageOf, type Finding } from './finding';
import { lastLine, runTool } from './run_tool';

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

/** Whether a helper process can make a user namespace with a mapping (util-linux unshare). */
export async function probeUserNamespaces(): Promise<Finding> {
  const unshare = which('unshare');
  if (!unshare) return failed('user namespaces', 'not probed: unshare(1) from util-linux is not installed');
  const r = await runTool(unshare, ['--user', '--map-root-user', 'true']);
  if (r.code !== 0) return failed('user namespaces', `a helper cannot create one: ${lastLine(r.stderr) || r.error || `exit ${r.code}`}${maxUserNamespaces()}`);
  return found('user namespaces', `a helper process can create one${maxUserNamespaces()}`);
}

function maxUserNamespaces(): string {
  try {
    return ` (user.max_user_namespaces = ${fs.readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim()})`;
  } catch {
    return '';
  }
}

/**
 * A user namespace held open by a helper (`unshare --user --map-root-user cat`, which waits on
 * its stdin): its fd is what MOUNT_ATTR_IDMAP takes. Undefined when it cannot be made.
 */
async function withUserNamespace<T>(fn: (usernsFd: number) => T): Promise<T | undefined> {
  const unshare = which('unshare');
  if (!unshare) return undefined;
  const child = spawn(unshare, ['--user', '--map-root-user', 'cat'], { stdio: ['pipe', 'ignore', 'ignore'] });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('error', () => undefined);
  try {
    const own = fs.readlinkSync('/proc/self/ns/user');
    const until = Date.now() + 10_000;
    // Ready once the helper is in its own user namespace and its map is written.
    for (;;) {
      if (child.exitCode !== null || child.pid === undefined) return undefined;
      try {
        const ns = fs.readlinkSync(`/proc/${child.pid}/ns/user`);
        if (ns !== own && fs.readFileSync(`/proc/${child.pid}/uid_map`, 'utf8').trim() !== '') break;
      } catch {
        // Not started yet, or gone: the loop's checks decide.
      }
      if (Date.now() > until) return undefined;
      await new Promise((r) => setTimeout(r, 5));
    }
    const fd = fs.openSync(`/proc/${child.pid}/ns/user`, 'r');
    try {
      return fn(fd);
    } finally {
      fs.closeSync(fd);
    }
  } finally {
    child.stdin?.end();
    child.kill('SIGKILL');
    await exited;
  }
}

/** An idmapped clone of `dir` (on the image store's filesystem), dropped at once. */
export async function probeIdmappedMounts(dir: string): Promise<Finding> {
  let err: unknown;
  const done = await withUserNamespace((usernsFd) => {
    try {
      const tree = openTree(dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
      try {
        mountSetattr(tree, '', AT_EMPTY_PATH, { attrSet: MOUNT_ATTR_IDMAP, usernsFd });
      } finally {
        close(tree);
      }
      return true;
    } catch (e) {
      err = e;
      return false;
    }
  });
  if (done === undefined) return failed('idmapped mounts', 'not probed: no user namespace could be made for the mapping');
  if (!done) return failed('idmapped mounts', `not on ${fsName(dir)}: ${messageOf(err)}`);
  return found('idmapped mounts', `open_tree + mount_setattr(MOUNT_ATTR_IDMAP) work on ${fsName(dir)}`);
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
  const clamp = restrict === false
    ? 'restrict_oom_score_adj = false: containers asking for less fail to start'
    : `values below the daemon's own (${own}) are clamped to it (restrict_oom_score_adj = ${String(restrict)})`;
  return failed('oom_score_adj', `root lacks CAP_SYS_RESOURCE, so it cannot be lowered; ${clamp}`);
}
