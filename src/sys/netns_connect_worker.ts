// The body of the netns-connect worker thread (see netns_connect.ts). A socket is bound for life to
// the network namespace of the thread that called socket(2), so this thread steps into a pod's
// network namespace just long enough to create one, steps back, and only then connects: the
// connect itself needs no namespace, and doing it outside keeps the time spent away from home to
// two setns calls and a socket call, all synchronous, with nothing else able to run in between.
//
// Connects are non-blocking and watched with poll(2) at zero timeout on a backing-off timer, so a
// pod whose listen backlog is full (SYNs dropped, retried for seconds) does not hold up every
// other port-forward in the daemon.

import fs from 'node:fs';
import os from 'node:os';
import { parentPort } from 'node:worker_threads';
import {
  CLONE_NEWNET,
  closeFd,
  connect,
  errnoName,
  poll,
  POLLOUT,
  setns,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  socket,
  socketError,
  SysError,
} from './libc';

export interface ConnectRequest {
  id: number;
  op: 'connect';
  /** Path of a network namespace file; absent for the worker's own (the daemon's) namespace. */
  netns?: string;
  family: number;
  /** A complete struct sockaddr_in or sockaddr_in6. */
  addr: Uint8Array;
  timeoutMs: number;
}

export interface StateRequest {
  id: number;
  op: 'state';
}

export type ConnectWorkerRequest = ConnectRequest | StateRequest;

export type ConnectWorkerReply =
  | { id: number; ok: true; fd?: number; net?: string }
  | { id: number; ok: false; message: string; code?: string; errno?: number; connectFailed?: boolean; fatal?: boolean };

const { EINPROGRESS, ETIMEDOUT } = os.constants.errno;

// Opened before this thread ever moves: the way home after every socket it creates.
const home = fs.openSync('/proc/thread-self/ns/net', 'r');

class Fatal extends Error {
  readonly code: string | undefined;
  constructor(message: string, code: string | undefined) {
    super(message);
    this.code = code;
  }
}

function socketIn(netns: string | undefined, family: number): number {
  const type = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
  if (netns === undefined) return socket(family, type);

  const target = fs.openSync(netns, 'r');
  try {
    // nstype pins the kind: a path to some other namespace type fails here, not later.
    setns(target, CLONE_NEWNET, netns);
  } finally {
    fs.closeSync(target);
  }
  let fd = -1;
  let failure: { err: unknown } | undefined;
  try {
    fd = socket(family, type);
  } catch (err) {
    failure = { err };
  }
  try {
    setns(home, CLONE_NEWNET, 'original net namespace');
  } catch (err) {
    // Stranded in a pod's namespace: every later socket would be created there. Die instead.
    if (fd >= 0) closeFd(fd);
    const e = err as SysError;
    throw new Fatal(`netns-connect worker cannot return to its network namespace: ${e.message}`, e.code);
  }
  if (failure) throw failure.err;
  return fd;
}

function connectFailed(id: number, fd: number, errno: number): ConnectWorkerReply {
  closeFd(fd);
  return { id, ok: false, message: `connect: ${errnoName(errno)}`, code: errnoName(errno), errno, connectFailed: true };
}

/** The outcome of a connect that poll(2) reported as finished. */
function settle(id: number, fd: number): ConnectWorkerReply {
  const errno = socketError(fd);
  return errno === 0 ? { id, ok: true, fd } : connectFailed(id, fd, errno);
}

interface InFlight {
  fd: number;
  deadline: number;
}

function workerPort(): NonNullable<typeof parentPort> {
  if (!parentPort) throw new Error('netns_connect_worker runs only as a worker thread');
  return parentPort;
}
const port = workerPort();

const inFlight = new Map<number, InFlight>();
let timer: NodeJS.Timeout | undefined;
let backoffMs = 1;

function watch(): void {
  timer = undefined;
  const entries = [...inFlight];
  let revents: number[];
  try {
    revents = poll(
      entries.map(([, f]) => f.fd),
      POLLOUT,
      0,
    );
  } catch (err) {
    for (const [id, f] of entries) {
      inFlight.delete(id);
      closeFd(f.fd);
      const e = err as SysError;
      port.postMessage({ id, ok: false, message: e.message, code: e.code } satisfies ConnectWorkerReply);
    }
    return;
  }
  const now = Date.now();
  entries.forEach(([id, f], i) => {
    let reply: ConnectWorkerReply | undefined;
    if (revents[i] !== 0) reply = settle(id, f.fd);
    else if (now >= f.deadline) reply = connectFailed(id, f.fd, ETIMEDOUT);
    if (!reply) return;
    inFlight.delete(id);
    port.postMessage(reply);
  });
  if (inFlight.size > 0) {
    backoffMs = Math.min(backoffMs * 2, 16);
    timer = setTimeout(watch, backoffMs);
  }
}

function startConnect(req: ConnectRequest): ConnectWorkerReply | undefined {
  const fd = socketIn(req.netns, req.family);
  try {
    const errno = connect(fd, Buffer.from(req.addr.buffer, req.addr.byteOffset, req.addr.byteLength));
    if (errno === 0) return { id: req.id, ok: true, fd };
    if (errno !== EINPROGRESS) return connectFailed(req.id, fd, errno);
    // Over loopback the handshake has usually finished by the time connect(2) returns.
    if (poll([fd], POLLOUT, 0)[0] !== 0) return settle(req.id, fd);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  inFlight.set(req.id, { fd, deadline: Date.now() + req.timeoutMs });
  backoffMs = 1;
  if (timer) clearTimeout(timer);
  timer = setTimeout(watch, backoffMs);
  return undefined;
}

port.on('message', (req: ConnectWorkerRequest) => {
  let reply: ConnectWorkerReply | undefined;
  try {
    if (req.op === 'connect') reply = startConnect(req);
    else reply = { id: req.id, ok: true, net: fs.readlinkSync('/proc/thread-self/ns/net') };
  } catch (err) {
    const e = err as { message?: string; code?: string };
    reply = { id: req.id, ok: false, message: e.message ?? String(err), code: e.code, fatal: err instanceof Fatal };
  }
  if (reply) port.postMessage(reply);
  if (reply && !reply.ok && reply.fatal) process.exit(1);
});
