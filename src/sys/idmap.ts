// Idmapped bind mounts (Linux 5.12+): a clone of a tree whose files are seen through a user
// namespace's mapping, so that files a pod's user namespace cannot map (owned by host uid 0)
// appear owned by the ids that its root maps to. runc 1.1 cannot make them; the daemon makes the
// clone and hands runc its path as a plain bind source (a bind of an idmapped mount keeps the
// mapping).

import fs from 'node:fs';
import { closeFd } from './libc';
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_RECURSIVE,
  MOUNT_ATTR_IDMAP,
  mountSetattr,
  MOVE_MOUNT_F_EMPTY_PATH,
  moveMount,
  OPEN_TREE_CLOEXEC,
  OPEN_TREE_CLONE,
  openTree,
} from './mount_api';

export interface IdmapOptions {
  /** An open user namespace fd, or the path of a pinned one. */
  userns: number | string;
  /** The whole tree below `source` (what a CRI mount's rbind means), not just its top mount. */
  recursive?: boolean;
  /** More MOUNT_ATTR_* flags set in the same call (MOUNT_ATTR_RDONLY for a read-only volume). */
  attrSet?: number;
}

/**
 * Attaches at `target` (an existing directory, or file for a file source) an idmapped clone of
 * `source`. Throws the SysError of the step that failed: EINVAL from mount_setattr when the
 * source's filesystem cannot be idmapped.
 */
export function mountIdmapped(source: string, target: string, opts: IdmapOptions): void {
  const rec = opts.recursive ? AT_RECURSIVE : 0;
  const usernsFd = typeof opts.userns === 'number' ? opts.userns : fs.openSync(opts.userns, 'r');
  try {
    const tree = openTree(source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
    try {
      mountSetattr(tree, '', AT_EMPTY_PATH | rec, { attrSet: MOUNT_ATTR_IDMAP | (opts.attrSet ?? 0), usernsFd });
      moveMount(tree, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    } finally {
      closeFd(tree);
    }
  } finally {
    if (typeof opts.userns !== 'number') fs.closeSync(usernsFd);
  }
}
