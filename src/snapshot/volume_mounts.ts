// Host-side mounts that a container's volumes need before runc sees them: recursive read-only
// clones of host trees (runc 1.1 has no "rro") and resolved sub paths of read-only image views.
// runc then binds each as a plain read-only bind; a bind of a tree whose mounts are all
// read-only keeps them read-only.

import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, NotFoundError } from '../errors';
import { mount, MS_PRIVATE } from '../sys/libc';
import { attachClone } from '../sys/idmap';
import { MOUNT_ATTR_RDONLY } from '../sys/mount_api';
import { unmountBelow } from '../sys/unmount_below';

/** mount_setattr(2), and with it recursive read-only clones, came with Linux 5.12. */
export function recursiveReadOnlySupported(release = os.release()): boolean {
  // sys/mount_api.ts calls these by their x86_64 syscall numbers.
  if (os.arch() !== 'x64') return false;
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 5 || (major === 5 && minor >= 12);
}

/**
 * Clones the mount tree at `source` (submounts included), makes every mount of the clone
 * read-only and private, and attaches it at `target` (created). The source is left as it was.
 * With `userns` (a pinned user namespace), the clone is also idmapped to it, in the same call.
 */
export async function mountRecursiveReadOnly(source: string, target: string, userns?: string): Promise<void> {
  await fs.mkdir(target, { recursive: true, mode: 0o755 });
  // Private: a mount appearing later under the host source must not reach the container,
  // which is what the CRI's PRIVATE propagation (the only one allowed with rro) promises.
  attachClone(source, target, { recursive: true, attrSet: MOUNT_ATTR_RDONLY, propagation: MS_PRIVATE, userns });
}

/** Takes the mount at `target` out of any peer group (a mount under a shared /run joins one). */
export function makePrivate(target: string): void {
  mount(null, target, null, MS_PRIVATE, null);
}

/**
 * Detaches every mount below `dir` (deepest first) and removes `dir`. Idempotent: used on
 * failure, at removal and by the start-up cleanup of containers whose records say little.
 */
export async function unmountAllUnder(dir: string): Promise<void> {
  try {
    await fs.lstat(dir);
  } catch {
    return;
  }
  unmountBelow(await fs.realpath(dir));
  await fs.rm(dir, { recursive: true, force: true });
}

const MAX_SYMLINKS = 40;

/**
 * Resolves `sub` inside the directory tree `root` as if `root` were `/` for the lookup, and
 * refuses any path that would leave it: an absolute `sub`, `..` above the root, an absolute
 * symlink or a relative one climbing out. The result must be a directory (an image volume
 * mounts directories only, as in KEP 4639). Missing: NotFoundError.
 */
export async function resolveInRoot(root: string, sub: string): Promise<string> {
  if (path.isAbsolute(sub)) throw new InvalidArgumentError(`sub path ${JSON.stringify(sub)} must be relative`);
  const pending = sub.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let links = 0;
  for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
    if (part === '..') {
      if (done.length === 0) throw new InvalidArgumentError(`sub path ${JSON.stringify(sub)} escapes the image`);
      done.pop();
      continue;
    }
    const at = path.join(root, ...done, part);
    let st;
    try {
      st = await fs.lstat(at);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`sub path ${JSON.stringify(sub)} does not exist in the image`);
      throw err;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) throw new InvalidArgumentError(`sub path ${JSON.stringify(sub)}: too many symbolic links`);
      const link = await fs.readlink(at);
      if (path.isAbsolute(link)) throw new InvalidArgumentError(`sub path ${JSON.stringify(sub)} escapes the image (${part} -> ${link})`);
      pending.unshift(...link.split('/').filter((c) => c !== '' && c !== '.'));
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) throw new NotFoundError(`sub path ${JSON.stringify(sub)}: ${part} is not a directory`);
    done.push(part);
  }
  const resolved = path.join(root, ...done);
  if (!(await fs.stat(resolved)).isDirectory()) throw new InvalidArgumentError(`sub path ${JSON.stringify(sub)} is not a directory`);
  return resolved;
}
