import path from 'node:path';
import { MNT_DETACH, SysError, umount2 } from './libc';
import { readMountInfo } from './mountinfo';

/**
 * Unmounts every mount strictly below `dir`, deepest first, detached (a container's last process
 * may still hold one). Idempotent: cleanup after a restart finds the mounts by path, as here.
 */
export function unmountBelow(dir: string): void {
  const prefix = path.resolve(dir) + '/';
  const below = readMountInfo()
    .filter((m) => m.mountPoint.startsWith(prefix))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length || b.id - a.id);
  for (const m of below) {
    try {
      umount2(m.mountPoint, MNT_DETACH);
    } catch (err) {
      if (!(err instanceof SysError && (err.code === 'EINVAL' || err.code === 'ENOENT'))) {
        throw new Error(`failed to unmount ${m.mountPoint}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
  }
}
