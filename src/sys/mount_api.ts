// The new mount API (Linux 5.2+, mount_setattr 5.12+): detached mount trees made from a path,
// changed as a whole, then attached somewhere. What runc 1.1 cannot do (recursive read-only
// binds, idmapped mounts) the daemon does with these before it hands runc a plain bind.
//
// glibc 2.36 has no wrappers for open_tree / move_mount / mount_setattr, so they go through
// syscall(2) with the x86_64 numbers; the daemon runs on x86_64 only (os.arch() is checked).

import koffi from 'koffi';
import os from 'node:os';
import { libc, SysError } from './libc';

// long syscall(long number, ...): the arguments are typed at each call, as koffi wants for
// variadic functions.
const syscall = libc.func('long syscall(long number, ...)');

// <asm/unistd_64.h>
const SYS_open_tree = 428;
const SYS_move_mount = 429;
const SYS_mount_setattr = 442;

// <linux/mount.h>, <fcntl.h>
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_EMPTY_PATH = 0x1000;
export const AT_RECURSIVE = 0x8000;
export const OPEN_TREE_CLONE = 0x1;
export const OPEN_TREE_CLOEXEC = 0o2000000;
export const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
export const MOUNT_ATTR_RDONLY = 0x1;
export const MOUNT_ATTR_NOSUID = 0x2;
export const MOUNT_ATTR_NODEV = 0x4;
export const MOUNT_ATTR_NOEXEC = 0x8;
export const MOUNT_ATTR_IDMAP = 0x100000;

/** struct mount_attr (MOUNT_ATTR_SIZE_VER0). `propagation` takes MS_PRIVATE, MS_SLAVE… or 0. */
export interface MountAttr {
  attrSet?: number;
  attrClr?: number;
  propagation?: number;
  /** A user namespace fd, with MOUNT_ATTR_IDMAP in attrSet. */
  usernsFd?: number;
}

const MOUNT_ATTR_SIZE_VER0 = 32;

function checkArch(call: string): void {
  if (os.arch() !== 'x64') throw new SysError(call, os.constants.errno.ENOSYS, os.arch(), 'syscall numbers are x86_64 only');
}

function check(call: string, ret: unknown, what: string, detail?: string): number {
  const n = Number(ret);
  if (n < 0) throw new SysError(call, koffi.errno(), what, detail);
  return n;
}

/**
 * open_tree(2) at `path` (relative to AT_FDCWD): with OPEN_TREE_CLONE a detached copy of the
 * mount there (AT_RECURSIVE: of the whole tree below it). Returns the descriptor; close it with
 * close() — a detached tree that is never moved disappears with its last descriptor.
 */
export function openTree(path: string, flags: number): number {
  checkArch('open_tree');
  return check('open_tree', syscall(SYS_open_tree, 'int', AT_FDCWD, 'const char *', path, 'unsigned int', flags), path, `flags=0x${flags.toString(16)}`);
}

/**
 * mount_setattr(2) on `path` relative to `fd` (pass '' and AT_EMPTY_PATH for the mount `fd`
 * is; AT_RECURSIVE for every mount below it too).
 */
export function mountSetattr(fd: number, path: string, flags: number, attr: MountAttr): void {
  checkArch('mount_setattr');
  const buf = Buffer.alloc(MOUNT_ATTR_SIZE_VER0);
  buf.writeBigUInt64LE(BigInt(attr.attrSet ?? 0), 0);
  buf.writeBigUInt64LE(BigInt(attr.attrClr ?? 0), 8);
  buf.writeBigUInt64LE(BigInt(attr.propagation ?? 0), 16);
  buf.writeBigUInt64LE(BigInt(attr.usernsFd ?? 0), 24);
  const ret: unknown = syscall(SYS_mount_setattr, 'int', fd, 'const char *', path, 'unsigned int', flags, 'void *', buf, 'size_t', MOUNT_ATTR_SIZE_VER0);
  check('mount_setattr', ret, path === '' ? `fd ${fd}` : path, `set=0x${(attr.attrSet ?? 0).toString(16)} flags=0x${flags.toString(16)}`);
}

/**
 * move_mount(2): attaches the mount `fromFd` refers to (fromPath '' with
 * MOVE_MOUNT_F_EMPTY_PATH) at `toPath`, relative to `toDirfd` (AT_FDCWD for an absolute path).
 */
export function moveMount(fromFd: number, fromPath: string, toDirfd: number, toPath: string, flags: number): void {
  checkArch('move_mount');
  const ret: unknown = syscall(SYS_move_mount, 'int', fromFd, 'const char *', fromPath, 'int', toDirfd, 'const char *', toPath, 'unsigned int', flags);
  check('move_mount', ret, toPath, fromPath === '' ? `from fd ${fromFd}` : `from ${fromPath}`);
}

export { closeFd as close } from './libc';
