// Container root filesystems: one overlay mount per container over the image's layer directories.
// Mounted with mount(2) through sys/libc, never by running `mount`: this is on the CreateContainer
// path, and a process spawn costs more than the mount itself.

import fs from 'node:fs';
import { MNT_DETACH, mount, MS_BIND, MS_RDONLY, MS_REMOUNT, SysError, umount2 } from '../sys/libc';
import { mountsAt } from '../sys/mountinfo';

export interface RootfsOptions {
  /** Layer directories, top layer first (overlayfs lowerdir order). */
  lowerDirs: string[];
  /** Where the container's writes land; required unless `readOnly`. */
  upperDir?: string;
  /** overlayfs scratch space on the same filesystem as `upperDir`; required unless `readOnly`. */
  workDir?: string;
  target: string;
  /** A view of the layers alone: no upper, nothing writable. */
  readOnly?: boolean;
  /**
   * Host ids to own the upper dir, whose root is the rootfs's `/`: a pod's user namespace root
   * (its lowerdirs are then idmapped views of the layers).
   */
  upperOwner?: { uid: number; gid: number };
}

// The kernel copies mount(2)'s data argument into a single page, NUL included.
const MOUNT_DATA_MAX = 4095;

// ':' separates lowerdirs and ',' options; overlayfs accepts backslash escapes for them, but
// reopening such a path by fd sidesteps the escaping rules of the running kernel altogether.
const UNSAFE_IN_OPTIONS = /[:,\\]/;

function overlayData(lowers: string[], upper?: string, work?: string): string {
  // index=off: with the index on (a kernel build option), an upper dir may only ever be mounted
  // with the exact lower stack it was first used with; containerd and Docker turn it off too.
  const opts = [`lowerdir=${lowers.join(':')}`];
  if (upper !== undefined) opts.push(`upperdir=${upper}`, `workdir=${work}`);
  opts.push('index=off');
  return opts.join(',');
}

/**
 * Mounts an overlay of `lowerDirs` (+ `upperDir`) on `target`, creating upper, work and target
 * directories as needed. Idempotent: a target that is already a mount point is left as it is,
 * so a daemon restarting mid-CreateContainer can call it again.
 *
 * Long layer stacks: mount data is limited to one page, and 60 layers under
 * /var/lib/tscri/layers/<chain-id> are ~5.3 KiB. Other runtimes chdir into a short common
 * directory and pass relative paths, but Node threads share one cwd. Instead each directory is
 * opened and named as /proc/self/fd/<n> (~18 bytes): the kernel resolves the magic link to the
 * directory itself at mount time, so the fds can be closed right after. That fits ~200 layers;
 * overlayfs's own stacking limit is 500.
 */
export async function mountRootfs(opts: RootfsOptions): Promise<void> {
  const { lowerDirs, target, readOnly = false } = opts;
  if (lowerDirs.length === 0) throw new Error(`cannot mount rootfs at ${target}: no layers`);
  let upper: string | undefined;
  let work: string | undefined;
  if (!readOnly) {
    if (opts.upperDir === undefined || opts.workDir === undefined) {
      throw new Error(`cannot mount writable rootfs at ${target}: upperDir and workDir are required`);
    }
    upper = opts.upperDir;
    work = opts.workDir;
  }
  // All at once: this is on the CreateContainer path, and each is a thread-pool round trip.
  const [created] = await Promise.all([
    fs.promises.mkdir(target, { recursive: true, mode: 0o755 }),
    upper === undefined ? undefined : fs.promises.mkdir(upper, { recursive: true, mode: 0o755 }),
    work === undefined ? undefined : fs.promises.mkdir(work, { recursive: true, mode: 0o700 }),
  ]);
  // A target made just now has nothing mounted on it; mountinfo grows with every pod on the node.
  if (created === undefined && isMounted(target)) return;
  if (upper !== undefined && opts.upperOwner) await fs.promises.chown(upper, opts.upperOwner.uid, opts.upperOwner.gid);

  // A single layer without an upper: overlayfs wants two lowerdirs for a read-only mount.
  if (readOnly && lowerDirs.length === 1) {
    mount(lowerDirs[0], target, null, MS_BIND, null);
    try {
      // MS_RDONLY is ignored on the initial bind; it only takes effect on a remount.
      mount(null, target, null, MS_BIND | MS_REMOUNT | MS_RDONLY, null);
    } catch (err) {
      umount2(target, MNT_DETACH);
      throw err;
    }
    return;
  }

  const flags = readOnly ? MS_RDONLY : 0;

  // upper and work are both set (writable) or both unset (read-only).
  const all = upper !== undefined && work !== undefined ? [...lowerDirs, upper, work] : lowerDirs;
  const data = overlayData(lowerDirs, upper, work);
  if (Buffer.byteLength(data) <= MOUNT_DATA_MAX && !all.some((p) => UNSAFE_IN_OPTIONS.test(p))) {
    mount('overlay', target, 'overlay', flags, data);
    return;
  }

  const fds: number[] = [];
  try {
    const byFd = (dir: string): string => {
      const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      fds.push(fd);
      return `/proc/self/fd/${fd}`;
    };
    const short = overlayData(lowerDirs.map(byFd), upper === undefined ? undefined : byFd(upper), work === undefined ? undefined : byFd(work));
    if (Buffer.byteLength(short) > MOUNT_DATA_MAX) {
      throw new Error(`cannot mount rootfs at ${target}: ${lowerDirs.length} layers exceed the ${MOUNT_DATA_MAX + 1}-byte mount data limit`);
    }
    mount('overlay', target, 'overlay', flags, short);
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
}

/**
 * Unmounts whatever is mounted on `target`. Idempotent. A busy mount (a process still has its cwd
 * inside, e.g. a lingering exec) is detached: it disappears from the tree now and is freed when
 * the last user lets go, which is what RemoveContainer needs. The kernel's EINVAL says that
 * nothing (more) is mounted there: mountinfo is not read, since it grows with every container on
 * the node and a node removing its pods would read it twice per container.
 */
export function unmountRootfs(target: string): Promise<void> {
  // A failure rejects the promise rather than throwing: callers chain .catch on it.
  return new Promise((resolve) => {
    unmountRootfsSync(target);
    resolve();
  });
}

function unmountRootfsSync(target: string): void {
  // Bounded: each pass removes one stacked mount; a loop that never ends would hang removal.
  for (let i = 0; i < 16; i++) {
    try {
      umount2(target, 0);
    } catch (err) {
      if (!(err instanceof SysError)) throw err;
      if (err.code === 'EINVAL' || err.code === 'ENOENT') return;
      if (err.code !== 'EBUSY') throw new Error(`failed to unmount rootfs ${target}: ${err.message}`, { cause: err });
      umount2(target, MNT_DETACH);
    }
  }
  if (isMounted(target)) throw new Error(`failed to unmount rootfs ${target}: still mounted`);
}

/** True when something is mounted exactly on `target` (per /proc/self/mountinfo). */
export function isMounted(target: string): boolean {
  let real: string;
  try {
    real = fs.realpathSync(target);
  } catch {
    return false;
  }
  return mountsAt(real).length > 0;
}
