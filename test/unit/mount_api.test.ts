import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MNT_DETACH, MS_PRIVATE, mount, umount2 } from '../../src/sys/libc';
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_RECURSIVE,
  close,
  MOUNT_ATTR_RDONLY,
  mountSetattr,
  MOVE_MOUNT_F_EMPTY_PATH,
  moveMount,
  OPEN_TREE_CLOEXEC,
  OPEN_TREE_CLONE,
  openTree,
} from '../../src/sys/mount_api';
import { tempDir } from '../helpers/unit';

const needRoot = process.getuid?.() === 0 ? {} : { skip: 'needs root (mount)' };

function writeErrno(file: string): string | null {
  try {
    fs.writeFileSync(file, 'x');
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

test('a recursive clone made read-only and moved keeps its submounts read-only', needRoot, () => {
  const dir = tempDir('tscri-mountapi-');
  const src = path.join(dir, 'src');
  const sub = path.join(src, 'sub');
  const target = path.join(dir, 'target');
  fs.mkdirSync(sub, { recursive: true });
  fs.mkdirSync(target);
  fs.writeFileSync(path.join(src, 'top'), 'top');
  mount('tmpfs', sub, 'tmpfs', 0, 'size=1m');
  let moved = false;
  try {
    fs.writeFileSync(path.join(sub, 'inner'), 'inner');
    const fd = openTree(src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    try {
      mountSetattr(fd, '', AT_EMPTY_PATH | AT_RECURSIVE, { attrSet: MOUNT_ATTR_RDONLY, propagation: MS_PRIVATE });
      moveMount(fd, '', AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
      moved = true;
    } finally {
      close(fd);
    }
    // The clone shows the source's files, submount included, and refuses writes at every level.
    assert.equal(fs.readFileSync(path.join(target, 'top'), 'utf8'), 'top');
    assert.equal(fs.readFileSync(path.join(target, 'sub', 'inner'), 'utf8'), 'inner');
    assert.equal(writeErrno(path.join(target, 'sub', 'new')), 'EROFS');
    assert.equal(writeErrno(path.join(target, 'new')), 'EROFS');
    // The source stays writable: only the clone's mounts changed.
    assert.equal(writeErrno(path.join(sub, 'new')), null);
  } finally {
    if (moved) umount2(target, MNT_DETACH);
    umount2(sub, MNT_DETACH);
  }
  const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(!mountinfo.includes(dir), `mounts left under ${dir}`);
});

test('open_tree of a missing path throws SysError naming the syscall and path', needRoot, () => {
  assert.throws(() => openTree('/nonexistent-tscri-dir', OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), /^SysError: open_tree \/nonexistent-tscri-dir.*ENOENT/);
});
