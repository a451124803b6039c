// The only module that loads koffi: every syscall Node does not expose goes through a small typed
// wrapper here that throws SysError (syscall, errno name, path) instead of returning -1.
//
// Wrappers are synchronous on purpose: each is one short syscall, and koffi's async mode costs a
// threadpool hop that is far more expensive than the call itself. Hot paths (per tar entry during
// a pull): mknod (whiteouts, devices) and lsetxattr (PAX xattrs, opaque dirs). mount/umount2 run
// once per container rootfs; statfs backs image-filesystem stats that the kubelet polls.

import koffi from 'koffi';
import os from 'node:os';

// Exported for the other modules of sys/ that bind more of libc (mount_api.ts): one handle.
export const libc = koffi.load('libc.so.6');

// x86_64 / aarch64 glibc: mode_t is 32-bit, dev_t and size_t are 64-bit, ssize_t is signed 64-bit.
const c = {
  mknod: libc.func('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
  lsetxattr: libc.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)'),
  lgetxattr: libc.func('int64_t lgetxattr(const char *path, const char *name, void *value, size_t size)'),
  mount: libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  statfs: libc.func('int statfs(const char *path, void *buf)'),
  strerror: libc.func('const char *strerror(int errnum)'),
  unshare: libc.func('int unshare(int flags)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  sethostname: libc.func('int sethostname(const char *name, size_t len)'),
  gettid: libc.func('int gettid()'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t addrlen)'),
  poll: libc.func('int poll(void *fds, uint64_t nfds, int timeout)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)'),
  close: libc.func('int close(int fd)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *len, int flags)'),
  read: libc.func('int64_t read(int fd, void *buf, size_t count)'),
  write: libc.func('int64_t write(int fd, const void *buf, size_t count)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
  recvmsg: libc.func('int64_t recvmsg(int fd, void *msg, int flags)'),
  sendto: libc.func('int64_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  recv: libc.func('int64_t recv(int fd, void *buf, size_t len, int flags)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long request, ...)'),
  prctl: libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)'),
  waitpid: libc.func('int waitpid(int pid, _Out_ int *status, int options)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  posix_spawn: libc.func('int posix_spawn(_Out_ int *pid, const char *path, const void *actions, const void *attr, const char **argv, const char **envp)'),
  posix_spawn_file_actions_init: libc.func('int posix_spawn_file_actions_init(void *actions)'),
  posix_spawn_file_actions_destroy: libc.func('int posix_spawn_file_actions_destroy(void *actions)'),
  posix_spawn_file_actions_adddup2: libc.func('int posix_spawn_file_actions_adddup2(void *actions, int fd, int newfd)'),
  posix_spawn_file_actions_addopen: libc.func('int posix_spawn_file_actions_addopen(void *actions, int fd, const char *path, int oflag, uint32_t mode)'),
  posix_spawn_file_actions_addchdir_np: libc.func('int posix_spawn_file_actions_addchdir_np(void *actions, const char *path)'),
  posix_spawn_file_actions_addclosefrom_np: libc.func('int posix_spawn_file_actions_addclosefrom_np(void *actions, int from)'),
  posix_spawnattr_init: libc.func('int posix_spawnattr_init(void *attr)'),
  posix_spawnattr_destroy: libc.func('int posix_spawnattr_destroy(void *attr)'),
  posix_spawnattr_setflags: libc.func('int posix_spawnattr_setflags(void *attr, short flags)'),
  posix_spawnattr_setsigmask: libc.func('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
  posix_spawnattr_setsigdefault: libc.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
  sigemptyset: libc.func('int sigemptyset(void *set)'),
  clock_gettime: libc.func('int clock_gettime(int clockid, void *ts)'),
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

/** strerror(3): the C library's text for an errno ("Connection refused"). */
export function strerror(errno: number): string {
  return String(c.strerror(errno));
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
  return ((major & 0xfffff000) >>> 0) * 2 ** 32 + (major & 0xfff) * 2 ** 8 + ((minor & 0xffffff00) >>> 0) * 2 ** 12 + (minor & 0xff);
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
export function mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): void {
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

// Clock ids from <linux/time.h>.
export const CLOCK_REALTIME = 0;
export const CLOCK_BOOTTIME = 7;

/** clock_gettime(2) in nanoseconds; struct timespec on 64-bit Linux is two 8-byte words. */
export function clockNs(clockId: number): bigint {
  const ts = Buffer.alloc(16);
  if (c.clock_gettime(clockId, ts) !== 0) fail('clock_gettime', `clock ${clockId}`);
  return ts.readBigInt64LE(0) * 1_000_000_000n + ts.readBigInt64LE(8);
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

// TCP connects made outside the event loop (netns_connect_worker.ts). socket(), the SOCK_* flags
// and closeFd are shared with the streaming section below.
export const AF_INET = 2;
export const AF_INET6 = 10;
export const POLLOUT = 0x4;

/**
 * connect(2) that reports the outcome instead of throwing: 0 when connected, otherwise the errno
 * (EINPROGRESS on a non-blocking socket is the usual answer, ECONNREFUSED an expected one).
 */
export function connect(fd: number, addr: Buffer): number {
  return c.connect(fd, addr, addr.length) === 0 ? 0 : koffi.errno();
}

/**
 * poll(2) on `fds` for `events`, returning each descriptor's revents (0 while not ready). For a
 * thread that owns no event loop worth the name; the main thread uses pollFd instead.
 * struct pollfd is { int fd; short events; short revents; }: 8 bytes.
 */
export function poll(fds: number[], events: number, timeoutMs: number): number[] {
  const buf = Buffer.alloc(fds.length * 8);
  fds.forEach((fd, i) => {
    buf.writeInt32LE(fd, i * 8);
    buf.writeInt16LE(events, i * 8 + 4);
  });
  if (c.poll(buf, fds.length, timeoutMs) < 0) {
    // A signal cut the wait short: "nothing ready yet" is the honest answer.
    if (koffi.errno() === os.constants.errno.EINTR) return fds.map(() => 0);
    fail('poll', `${fds.length} fds`);
  }
  return fds.map((_, i) => buf.readUInt16LE(i * 8 + 6));
}

/** getsockopt(SOL_SOCKET, SO_ERROR): how a non-blocking connect ended (0, or an errno). */
export function socketError(fd: number): number {
  const SOL_SOCKET_LEVEL = 1;
  const SO_ERROR = 4;
  const val = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  if (c.getsockopt(fd, SOL_SOCKET_LEVEL, SO_ERROR, val, len) !== 0) fail('getsockopt', `fd ${fd}`, 'SO_ERROR');
  return val.readInt32LE(0);
}

// ---- sockets and descriptors, for the streaming server --------------------------------------
//
// conmon's attach socket is SOCK_SEQPACKET and runc hands a pty master over SCM_RIGHTS: neither
// is reachable through node:net. These wrappers keep descriptors as plain numbers; readiness
// comes from pollFd (libuv's poll handle), so nothing here ever blocks the event loop as long
// as callers only read/write after a readiness callback and treat EAGAIN as "not yet".

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
// O_PATH is 010000000 on x86_64 and aarch64 (the only ABIs koffi's libc.so.6 load targets here).
export const O_PATH = 0o10000000;
const MSG_DONTWAIT = 0x40;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const TIOCSWINSZ = 0x5414;
const SUN_PATH_MAX = 108;

const EAGAIN = os.constants.errno.EAGAIN;
const EINTR = os.constants.errno.EINTR;

function sockaddrUn(path: string): Buffer {
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length >= SUN_PATH_MAX) {
    throw new SysError('connect', os.constants.errno.ENAMETOOLONG, path, `longer than ${SUN_PATH_MAX - 1} bytes`);
  }
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  return addr;
}

/** socket(2); pass SOCK_NONBLOCK | SOCK_CLOEXEC in `type` as needed. */
export function socket(domain: number, type: number): number {
  const fd = Number(c.socket(domain, type, 0));
  if (fd < 0) fail('socket', `type=${type}`);
  return fd;
}

/** connect(2) to a unix socket path (keep it under 108 bytes: see /proc/self/fd tricks). */
export function connectUnix(fd: number, path: string): void {
  const addr = sockaddrUn(path);
  if (c.connect(fd, addr, addr.length) !== 0) fail('connect', path);
}

/** bind(2) + listen(2) on a unix socket path. */
export function listenUnix(fd: number, path: string, backlog = 4): void {
  const addr = sockaddrUn(path);
  if (c.bind(fd, addr, addr.length) !== 0) fail('bind', path);
  if (c.listen(fd, backlog) !== 0) fail('listen', path);
}

/** accept4(2) with SOCK_CLOEXEC; null when no connection is pending (EAGAIN). */
export function accept(fd: number): number | null {
  const got = Number(c.accept4(fd, null, null, SOCK_CLOEXEC));
  if (got >= 0) return got;
  const err = koffi.errno();
  if (err === EAGAIN || err === EINTR) return null;
  fail('accept4', `fd ${fd}`);
}

/** read(2): bytes read, 0 at end of file, null when nothing is ready (EAGAIN). */
export function readFd(fd: number, buf: Buffer): number | null {
  const n = Number(c.read(fd, buf, buf.length));
  if (n >= 0) return n;
  const err = koffi.errno();
  if (err === EAGAIN || err === EINTR) return null;
  throw new SysError('read', err, `fd ${fd}`);
}

/** write(2): bytes written, or null when the descriptor is full (EAGAIN). */
export function writeFd(fd: number, buf: Buffer): number | null {
  const n = Number(c.write(fd, buf, buf.length));
  if (n >= 0) return n;
  const err = koffi.errno();
  if (err === EAGAIN || err === EINTR) return null;
  throw new SysError('write', err, `fd ${fd}`);
}

/** shutdown(2); errors are ignored: the peer may already be gone, which is the point. */
export function shutdownFd(fd: number, how: number): void {
  c.shutdown(fd, how);
}

export function closeFd(fd: number): void {
  c.close(fd);
}

/**
 * Receives one descriptor passed with SCM_RIGHTS (what runc does on --console-socket), without
 * blocking: null when no message is queued yet. The descriptor is close-on-exec.
 */
export function recvFd(fd: number): number | null {
  const data = Buffer.alloc(4096);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(koffi.address(data), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  const control = Buffer.alloc(64);
  // struct msghdr on LP64: name, namelen(+pad), iov, iovlen, control, controllen, flags(+pad).
  const msg = Buffer.alloc(56);
  msg.writeBigUInt64LE(koffi.address(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(koffi.address(control), 32);
  msg.writeBigUInt64LE(BigInt(control.length), 40);
  const n = Number(c.recvmsg(fd, msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const err = koffi.errno();
    if (err === EAGAIN || err === EINTR) return null;
    throw new SysError('recvmsg', err, `fd ${fd}`);
  }
  const controlLen = Number(msg.readBigUInt64LE(40));
  // struct cmsghdr: len (size_t), level (int), type (int), then the descriptors.
  if (controlLen >= 20 && control.readInt32LE(8) === SOL_SOCKET && control.readInt32LE(12) === SCM_RIGHTS) {
    return control.readInt32LE(16);
  }
  throw new SysError('recvmsg', os.constants.errno.EPROTO, `fd ${fd}`, 'message carried no descriptor');
}

// ---- datagrams, for systemd's notify socket ------------------------------------------------

export const SOCK_DGRAM = 2;
const MSG_NOSIGNAL = 0x4000;

/**
 * A sockaddr_un and its length. A name starting with '@' is in the abstract namespace (a NUL
 * first byte, and only the name's own bytes count), as systemd writes it in NOTIFY_SOCKET.
 */
function unixAddress(name: string, call: string): { addr: Buffer; len: number } {
  const abstract = name.startsWith('@');
  const bytes = Buffer.from(abstract ? name.slice(1) : name, 'utf8');
  if (bytes.length + 1 > SUN_PATH_MAX) {
    throw new SysError(call, os.constants.errno.ENAMETOOLONG, name, `longer than ${SUN_PATH_MAX - 1} bytes`);
  }
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, abstract ? 3 : 2);
  return { addr, len: abstract ? 3 + bytes.length : addr.length };
}

/** sendto(2) of one datagram to a unix socket path or '@abstract' name. */
export function sendDatagram(fd: number, to: string, data: Buffer): void {
  const { addr, len } = unixAddress(to, 'sendto');
  if (Number(c.sendto(fd, data, data.length, MSG_NOSIGNAL, addr, len)) < 0) fail('sendto', to);
}

/** bind(2) of a datagram socket to a unix socket path or '@abstract' name. */
export function bindUnix(fd: number, name: string): void {
  const { addr, len } = unixAddress(name, 'bind');
  if (c.bind(fd, addr, len) !== 0) fail('bind', name);
}

/** recv(2) without blocking: one datagram, or null when none is queued. */
export function recvDatagram(fd: number, max = 4096): Buffer | null {
  const buf = Buffer.alloc(max);
  const n = Number(c.recv(fd, buf, buf.length, MSG_DONTWAIT));
  if (n >= 0) return buf.subarray(0, n);
  const err = koffi.errno();
  if (err === EAGAIN || err === EINTR) return null;
  throw new SysError('recv', err, `fd ${fd}`);
}

const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const IFF_UP = 0x1;
// struct ifreq: the name in 16 bytes, then a union whose first member is the short ifr_flags.
const IFREQ_SIZE = 40;

/**
 * Brings a network interface up (SIOCSIFFLAGS) in the calling thread's network namespace: for
 * `lo`, the kernel then gives it 127.0.0.1/8 and ::1, which is all CNI's loopback plugin does.
 */
export function linkUp(name: string): void {
  const fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
  try {
    const ifr = Buffer.alloc(IFREQ_SIZE);
    ifr.write(name, 0, 15, 'utf8');
    if (c.ioctl(fd, SIOCGIFFLAGS, 'void *', ifr) !== 0) fail('ioctl', name, 'SIOCGIFFLAGS');
    ifr.writeInt16LE(ifr.readInt16LE(16) | IFF_UP, 16);
    if (c.ioctl(fd, SIOCSIFFLAGS, 'void *', ifr) !== 0) fail('ioctl', name, 'SIOCSIFFLAGS');
  } finally {
    c.close(fd);
  }
}

/** TIOCSWINSZ: sets a terminal's size (rows, columns); the foreground group gets SIGWINCH. */
export function setWinsize(fd: number, rows: number, cols: number): void {
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows & 0xffff, 0);
  ws.writeUInt16LE(cols & 0xffff, 2);
  if (c.ioctl(fd, TIOCSWINSZ, 'void *', ws) !== 0) fail('ioctl', `fd ${fd}`, 'TIOCSWINSZ');
}

export interface PollEvents {
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
}

export interface FdPoller {
  /** Changes the events watched; an empty set stops watching without closing. */
  watch(events: { readable?: boolean; writable?: boolean }): void;
  close(): void;
}

/**
 * Readiness of a raw descriptor on Node's own event loop (libuv uv_poll through koffi). libuv
 * also makes the descriptor non-blocking. `status` < 0 is a libuv error (e.g. EBADF).
 */
export function pollFd(fd: number, cb: (status: number, ev: PollEvents) => void): FdPoller {
  let handle: ReturnType<typeof koffi.node.poll> | null = null;
  const call = cb as unknown as (ev: PollEvents) => void;
  return {
    watch(events) {
      const opts = { readable: !!events.readable, writable: !!events.writable, disconnect: false };
      if (!opts.readable && !opts.writable) {
        handle?.stop();
        return;
      }
      // koffi passes (status, events) to the callback; its .d.ts names only the events.
      if (handle) handle.start(opts, call);
      else handle = koffi.node.poll(fd, opts, call);
    },
    close() {
      handle?.close();
      handle = null;
    },
  };
}

const PR_SET_CHILD_SUBREAPER = 36;

/**
 * prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are reparented to this process instead of
 * init, so it can wait for them. Only for short-lived helper processes: the daemon itself must
 * not collect conmon's daemonized children.
 */
export function setChildSubreaper(): void {
  if (c.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) !== 0) fail('prctl', 'PR_SET_CHILD_SUBREAPER');
}

/**
 * Blocking waitpid(2) for one child; the shell's convention for the result (128 + signal when
 * killed). Helper processes only: it blocks the calling thread.
 */
export function waitExitCode(pid: number): number {
  const status = [0];
  for (;;) {
    if (c.waitpid(pid, status, 0) >= 0) break;
    if (koffi.errno() !== EINTR) fail('waitpid', `pid ${pid}`);
  }
  const st = status[0];
  const sig = st & 0x7f;
  return sig === 0 ? (st >> 8) & 0xff : 128 + sig;
}

// ---- process spawning -------------------------------------------------------------------------
//
// child_process.spawn fork()s the whole daemon: with Node's 60-80 MB heap mapped, that blocks the
// event loop about 3 ms per child and then charges copy-on-write faults to the daemon for every
// page it touches. glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK), whose cost does not
// grow with the parent (about 0.2 ms here). sys/spawn.ts builds child processes on it.

const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
const F_DUPFD_CLOEXEC = 1030;
const O_RDWR = 2;
const WNOHANG = 1;
// glibc's opaque types with room to spare: posix_spawn_file_actions_t is 80 bytes,
// posix_spawnattr_t 336 and sigset_t 128 on x86_64 and aarch64.
const SPAWN_OPAQUE_SIZE = 1024;

/** What a child's descriptor becomes: a copy of one of ours, or /dev/null. */
export type ChildFd = { dup: number } | 'null';

export interface SpawnRequest {
  /** Absolute path of the program: no PATH search. */
  path: string;
  argv: string[];
  /** "NAME=value" strings. */
  env: string[];
  cwd?: string;
  /** The child's descriptor i is fds[i]; every descriptor above is closed in the child. */
  fds: ChildFd[];
  /** setsid(2) in the child: its own session and process group. */
  setsid: boolean;
}

function checkSpawnCall(ret: unknown, what: string, path: string): void {
  // posix_spawn* return the error number instead of setting errno.
  if (ret === 0) return;
  if (typeof ret !== 'number') throw new Error(`${what} ${path}: koffi gave ${String(ret)} for an int result`);
  throw new SysError(what, ret, path);
}

/**
 * posix_spawn(3): the child starts with default signal dispositions (Node ignores SIGPIPE and
 * SIGXFSZ, and an ignored signal survives exec) and an empty signal mask. Returns the pid; a program that
 * cannot be run (ENOENT, EACCES) throws SysError('posix_spawn').
 */
export function posixSpawn(req: SpawnRequest): number {
  const actions = Buffer.alloc(SPAWN_OPAQUE_SIZE);
  const attr = Buffer.alloc(SPAWN_OPAQUE_SIZE);
  checkSpawnCall(c.posix_spawn_file_actions_init(actions), 'posix_spawn_file_actions_init', req.path);
  try {
    checkSpawnCall(c.posix_spawnattr_init(attr), 'posix_spawnattr_init', req.path);
    try {
      req.fds.forEach((f, i) => {
        const ret: unknown =
          f === 'null' ? c.posix_spawn_file_actions_addopen(actions, i, '/dev/null', O_RDWR, 0) : c.posix_spawn_file_actions_adddup2(actions, f.dup, i);
        checkSpawnCall(ret, 'posix_spawn_file_actions', req.path);
      });
      checkSpawnCall(c.posix_spawn_file_actions_addclosefrom_np(actions, req.fds.length), 'posix_spawn_file_actions_addclosefrom_np', req.path);
      if (req.cwd) checkSpawnCall(c.posix_spawn_file_actions_addchdir_np(actions, req.cwd), 'posix_spawn_file_actions_addchdir_np', req.cwd);
      // Every signal 1-64 by hand: sigfillset leaves out glibc's internal 32 and 33, and the
      // child then sets those to SIG_IGN, which exec keeps and the container would inherit.
      const all = Buffer.alloc(SPAWN_OPAQUE_SIZE);
      all.fill(0xff, 0, 8);
      const none = Buffer.alloc(SPAWN_OPAQUE_SIZE);
      c.sigemptyset(none);
      checkSpawnCall(c.posix_spawnattr_setsigdefault(attr, all), 'posix_spawnattr_setsigdefault', req.path);
      checkSpawnCall(c.posix_spawnattr_setsigmask(attr, none), 'posix_spawnattr_setsigmask', req.path);
      const flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (req.setsid ? POSIX_SPAWN_SETSID : 0);
      checkSpawnCall(c.posix_spawnattr_setflags(attr, flags), 'posix_spawnattr_setflags', req.path);
      const pid = [0];
      checkSpawnCall(c.posix_spawn(pid, req.path, actions, attr, [...req.argv, null], [...req.env, null]), 'posix_spawn', req.path);
      return pid[0];
    } finally {
      c.posix_spawnattr_destroy(attr);
    }
  } finally {
    c.posix_spawn_file_actions_destroy(actions);
  }
}

/** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): what libuv gives a child for a 'pipe'. */
export function socketPair(): [number, number] {
  const sv = [0, 0];
  if (c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) !== 0) fail('socketpair', 'AF_UNIX');
  return [sv[0], sv[1]];
}

/** fcntl(F_DUPFD_CLOEXEC): a close-on-exec copy of `fd` numbered `min` or higher. */
export function dupAtLeast(fd: number, min: number): number {
  const got = Number(c.fcntl(fd, F_DUPFD_CLOEXEC, 'int', min));
  if (got < 0) fail('fcntl', `fd ${fd}`, 'F_DUPFD_CLOEXEC');
  return got;
}

/**
 * waitpid(pid, WNOHANG): null while the child runs, else how it ended (both null when it was
 * already reaped elsewhere: ECHILD).
 */
export function reapChild(pid: number): { code: number | null; signal: number | null } | null {
  const status = [0];
  for (;;) {
    const got: unknown = c.waitpid(pid, status, WNOHANG);
    if (got === 0) return null;
    if (got === pid) break;
    const err = koffi.errno();
    if (err === EINTR) continue;
    if (err === os.constants.errno.ECHILD) return { code: null, signal: null };
    fail('waitpid', `pid ${pid}`);
  }
  const st = status[0];
  const sig = st & 0x7f;
  return sig === 0 ? { code: (st >> 8) & 0xff, signal: null } : { code: null, signal: sig };
}
