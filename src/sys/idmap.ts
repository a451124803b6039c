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

export interface CloneOptions {
  /** The whole tree below `source` (what a CRI mount's rbind means), not just its top mount. */
  recursive?: boolean;
  /** MOUNT_ATTR_* flags set on every mount of the clone (MOUNT_ATTR_RDONLY for a read-only volume). */
  attrSet?: number;
  /** MS_PRIVATE etc., for every mount of the clone. */
  propagation?: number;
  /** Idmap the clone to this user namespace: an open fd, or the path of a pinned one. */
  userns?: number | string;
}

/**
 * Attaches at `target` (an existing directory, or file for a file source) a clone of `source`
 * with `opts`' attributes set in one mount_setattr call: open_tree, mount_setattr, move_mount.
 * Throws the SysError of the step that failed: EINVAL from mount_setattr when the source's
 * filesystem cannot be idmapped.
 */
export function attachClone(source: string, target: string, opts: CloneOptions): void {
  const rec = opts.recursive ? AT_RECURSIVE : 0;
  const { userns } = opts;
  const usernsFd = userns === undefined ? undefined : typeof userns === 'number' ? userns : fs.openSync(userns, 'r');
  try {
    const tree = openTree(source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
    try {
      const idmap = usernsFd === undefined ? 0 : MOUNT_ATTR_IDMAP;
      mountSetattr(tree, '', AT_EMPTY_PATH | rec, { attrSet: idmap | (opts.attrSet ?? 0), propagation: opts.propagation, usernsFd });
      moveMount(tree, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    } finally {
      closeFd(tree);
    }
  } finally {
    if (usernsFd !== undefined && typeof userns !== 'number') fs.closeSync(usernsFd);
  }
}

export interface IdmapOptions extends CloneOptions {
  userns: number | string;
}

/** An idmapped clone of `source` at `target` (attachClone with a user namespace). */
export function mountIdmapped(source: string, target: string, opts: IdmapOptions): void {
  attachClone(source, target, opts);
}
