// The only module that loads koffi: every syscall Node does not expose goes through a small typed
// wrapper here that throws SysError (syscall, errno name, path) instead of returning -1.
//
// Wrappers are synchronous on purpose: each is one short syscall, and koffi's async mode costs a
// threadpool hop that is far more expensive than the call itself. Hot paths (per tar entry during
// a pull): mknod (whiteouts, devices) and lsetxattr (PAX xattrs, opaque dirs). mount/umount2 run
// once per container rootfs; statfs backs image-filesystem stats that the kubelet polls.

import koffi from 'koffi';
import os from 'node:os';

const libc = koffi.load('libc.so.6');

// x86_64 / aarch64 glibc: mode_t is 32-bit, dev_t and size_t are 64-bit, ssize_t is signed 64-bit.
const c = {
  mknod: libc.func('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
  lsetxattr: libc.func(
    'int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)',
  ),
  lgetxattr: libc.func('int64_t lgetxattr(const char *path, const char *name, void *value, size_t size)'),
  mount: libc.func(
    'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)',
  ),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  statfs: libc.func('int statfs(const char *path, void *buf)'),
  strerror: libc.func('const char *strerror(int errnum)'),
  unshare: libc.func('int unshare(int flags)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  sethostname: libc.func('int sethostname(const char *name, size_t len)'),
  gettid: libc.func('int gettid()'),
};

// os.constants.errno lists aliases (ENOTSUP/EOPNOTSUPP, EAGAIN/EWOULDBLOCK) with one number;
// the first listed name is the conventional one to report.
const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(os.constants.errno)) {
  if (!errnoNames.has(num)) errnoNames.set(num, name);
}

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

export class SysError extends Error {
  readonly syscall: string;
  readonly code: string;
  readonly errno: number;
  readonly path: string;

  constructor(syscall: string, errno: number, path: string, detail?: string) {
    const code = errnoName(errno);
    const what = detail ? `${path} (${detail})` : path;
    super(`${syscall} ${what}: ${code} (${String(c.strerror(errno))})`);
    this.name = 'SysError';
    this.syscall = syscall;
    this.code = code;
    this.errno = errno;
    this.path = path;
  }
}

function fail(syscall: string, path: string, detail?: string): never {
  throw new SysError(syscall, koffi.errno(), path, detail);
}

// Values from <sys/mount.h>; Linux ABI, identical on every architecture.
export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_REMOUNT = 0x20;
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_PRIVATE = 0x40000;
export const MS_SLAVE = 0x80000;
export const MS_SHARED = 0x100000;
export const MNT_DETACH = 0x2;

// Namespace flags from <sched.h>, for unshare(2) and setns(2).
export const CLONE_NEWNS = 0x20000;
export const CLONE_NEWUTS = 0x4000000;
export const CLONE_NEWIPC = 0x8000000;
export const CLONE_NEWNET = 0x40000000;

// File type bits for mknod's mode (<sys/stat.h>).
export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

/**
 * glibc's makedev encoding (major 12 bits split around minor's low 8). Returned as a number:
 * every device number Linux can hand out fits in 2^53.
 */
export function makedev(major: number, minor: number): number {
  return (
    ((major & 0xfffff000) >>> 0) * 2 ** 32 +
    (major & 0xfff) * 2 ** 8 +
    ((minor & 0xffffff00) >>> 0) * 2 ** 12 +
    (minor & 0xff)
  );
}

/** mknod(2); `mode` carries the type bits (S_IFCHR, S_IFBLK, S_IFIFO) and permissions. Hot path. */
export function mknod(path: string, mode: number, dev: number): void {
  if (c.mknod(path, mode, dev) !== 0) fail('mknod', path);
}

/** lsetxattr(2), never following a final symlink. Hot path (PAX xattrs, opaque markers). */
export function lsetxattr(path: string, name: string, value: Buffer): void {
  if (c.lsetxattr(path, name, value, value.length, 0) !== 0) fail('lsetxattr', path, name);
}

/** lgetxattr(2); null when the attribute is absent (ENODATA). */
export function lgetxattr(path: string, name: string): Buffer | null {
  const ENODATA = os.constants.errno.ENODATA;
  const ERANGE = os.constants.errno.ERANGE;
  // The value can grow between the size probe and the read; retry rather than truncate.
  for (let attempt = 0; attempt < 8; attempt++) {
    const size = Number(c.lgetxattr(path, name, null, 0));
    if (size < 0) {
      if (koffi.errno() === ENODATA) return null;
      fail('lgetxattr', path, name);
    }
    const buf = Buffer.alloc(size);
    const got = Number(c.lgetxattr(path, name, size === 0 ? null : buf, size));
    if (got >= 0) return buf.subarray(0, got);
    const err = koffi.errno();
    if (err === ENODATA) return null;
    if (err !== ERANGE) fail('lgetxattr', path, name);
  }
  throw new SysError('lgetxattr', ERANGE, path, name);
}

/** mount(2). `source`, `fstype` and `data` may be null where the flags make them meaningless. */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  if (c.mount(source, target, fstype, flags, data) !== 0) {
    fail('mount', target, `source=${source ?? ''} type=${fstype ?? ''} flags=0x${flags.toString(16)}`);
  }
}

/** umount2(2); pass MNT_DETACH for a lazy unmount. */
export function umount2(target: string, flags: number): void {
  if (c.umount2(target, flags) !== 0) fail('umount2', target);
}

/**
 * unshare(2). Net, IPC and UTS namespaces are per thread, so a worker thread can move itself
 * without touching the rest of the process; mount and user namespaces cannot (shared fs context).
 */
export function unshare(flags: number): void {
  if (c.unshare(flags) !== 0) fail('unshare', `flags=0x${flags.toString(16)}`);
}

/** setns(2) on an open namespace fd; `nstype` 0 accepts any type. */
export function setns(fd: number, nstype: number, what: string): void {
  if (c.setns(fd, nstype) !== 0) fail('setns', what, `nstype=0x${nstype.toString(16)}`);
}

/** sethostname(2), in the calling thread's UTS namespace. */
export function sethostname(name: string): void {
  if (c.sethostname(name, Buffer.byteLength(name, 'utf8')) !== 0) fail('sethostname', name);
}

/** The kernel id of the calling thread (differs from process.pid in a worker thread). */
export function gettid(): number {
  return Number(c.gettid());
}

export interface StatFs {
  type: number;
  bsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
}

// struct statfs on 64-bit Linux: seven 8-byte words first (type, bsize, blocks, bfree, bavail,
// files, ffree), then fsid, namelen, frsize, flags, spare[4]: 120 bytes in all.
const STATFS_SIZE = 120;

export function statfs(path: string): StatFs {
  const buf = Buffer.alloc(STATFS_SIZE);
  if (c.statfs(path, buf) !== 0) fail('statfs', path);
  const word = (i: number): number => Number(buf.readBigUInt64LE(i * 8));
  return {
    type: word(0),
    bsize: word(1),
    blocks: word(2),
    bfree: word(3),
    bavail: word(4),
    files: word(5),
    ffree: word(6),
  };
}

// f_type values from <linux/magic.h>.
export const NSFS_MAGIC = 0x6e736673;
export const OVERLAYFS_SUPER_MAGIC = 0x794c7630;
