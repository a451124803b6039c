// The body of the namespace worker thread (see namespaces.ts). Net, IPC and UTS namespaces belong
// to a thread, not a process, so this thread can step into fresh ones, pin them with bind mounts
// (the mount namespace is shared by every thread, so the pins are visible to the whole daemon) and
// step back. It handles one request at a time, synchronously: nothing else may ever run on this
// thread while it stands in a pod's namespaces.

import fs from 'node:fs';
import path from 'node:path';
import { parentPort } from 'node:worker_threads';
import { CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWUTS, linkUp, MNT_DETACH, mount, MS_BIND, sethostname, setns, SysError, umount2, unshare } from './libc';

export type NsKind = 'net' | 'ipc' | 'uts';

export interface PinRequest {
  id: number;
  op: 'pin';
  dir: string;
  kinds: NsKind[];
  hostname?: string;
}

export interface StateRequest {
  id: number;
  op: 'state';
}

/**
 * Enters namespaces pinned elsewhere (a pod's, made by a helper process inside its user
 * namespace) to set the hostname and bring `lo` up, as `pin` does for the ones it makes itself.
 * A thread in the initial user namespace may setns into namespaces owned by a child one.
 */
export interface ConfigureRequest {
  id: number;
  op: 'configure';
  net?: string;
  uts?: string;
  hostname?: string;
}

export type WorkerRequest = PinRequest | StateRequest | ConfigureRequest;

export type WorkerReply =
  | { id: number; ok: true; paths?: Partial<Record<NsKind, string>>; state?: Record<NsKind, string> }
  | { id: number; ok: false; message: string; code?: string; fatal?: boolean };

const FLAG: Record<NsKind, number> = { net: CLONE_NEWNET, ipc: CLONE_NEWIPC, uts: CLONE_NEWUTS };
const KINDS: NsKind[] = ['net', 'ipc', 'uts'];

// Opened once, before this thread ever moves: they are the way home after every request.
const home = new Map<NsKind, number>();
for (const kind of KINDS) home.set(kind, fs.openSync(`/proc/thread-self/ns/${kind}`, 'r'));

function state(): Record<NsKind, string> {
  const out = {} as Record<NsKind, string>;
  for (const kind of KINDS) out[kind] = fs.readlinkSync(`/proc/thread-self/ns/${kind}`);
  return out;
}

function goHome(kinds: NsKind[]): void {
  for (const kind of kinds) {
    const fd = home.get(kind);
    if (fd === undefined) throw new Error(`namespace worker holds no fd of its original ${kind} namespace`);
    setns(fd, FLAG[kind], `original ${kind} namespace`);
  }
}

function undoPins(pinned: string[], created: string[]): void {
  for (const p of pinned) {
    try {
      umount2(p, MNT_DETACH);
    } catch {
      // best effort: the original error is the one worth reporting
    }
  }
  for (const p of created) fs.rmSync(p, { force: true });
}

function pin(req: PinRequest): Partial<Record<NsKind, string>> {
  fs.mkdirSync(req.dir, { recursive: true, mode: 0o755 });
  const paths: Partial<Record<NsKind, string>> = {};
  const created: string[] = [];
  const files: [NsKind, string][] = [];
  for (const kind of req.kinds) {
    const p = path.join(req.dir, kind);
    // 'wx' refuses to reuse a file: an existing one may already pin a live pod's namespace.
    fs.closeSync(fs.openSync(p, 'wx', 0o444));
    created.push(p);
    paths[kind] = p;
    files.push([kind, p]);
  }

  let flags = 0;
  for (const kind of req.kinds) flags |= FLAG[kind];
  try {
    unshare(flags);
  } catch (err) {
    undoPins([], created);
    throw err;
  }

  const pinned: string[] = [];
  let failure: { err: unknown } | undefined;
  try {
    if (req.hostname !== undefined && req.kinds.includes('uts')) sethostname(req.hostname);
    // An ioctl here instead of a loopback plugin process per pod (cni.ts skips it then).
    if (req.kinds.includes('net')) linkUp('lo');
    for (const [kind, p] of files) {
      mount(`/proc/thread-self/ns/${kind}`, p, null, MS_BIND, null);
      pinned.push(p);
    }
  } catch (err) {
    failure = { err };
  }

  // Going home comes before anything else, even reporting: if it fails, this thread is stranded
  // in a pod's namespaces and must die rather than serve another request.
  try {
    goHome(req.kinds);
  } catch (err) {
    undoPins(pinned, created);
    const e = err as SysError;
    throw Object.assign(new Error(`namespace worker cannot return to its namespaces: ${e.message}`), {
      code: e.code,
      fatal: true,
    });
  }
  if (failure) {
    undoPins(pinned, created);
    throw failure.err;
  }
  return paths;
}

function configure(req: ConfigureRequest): void {
  const targets: [NsKind, string][] = [];
  if (req.net) targets.push(['net', req.net]);
  if (req.uts) targets.push(['uts', req.uts]);
  const entered: NsKind[] = [];
  let failure: { err: unknown } | undefined;
  try {
    for (const [kind, p] of targets) {
      const fd = fs.openSync(p, 'r');
      try {
        setns(fd, FLAG[kind], `${kind} namespace ${p}`);
      } finally {
        fs.closeSync(fd);
      }
      entered.push(kind);
    }
    if (req.hostname !== undefined && req.uts) sethostname(req.hostname);
    if (req.net) linkUp('lo');
  } catch (err) {
    failure = { err };
  }
  // As in pin(): home first, and a thread that cannot get home must die.
  try {
    goHome(entered);
  } catch (err) {
    const e = err as SysError;
    throw Object.assign(new Error(`namespace worker cannot return to its namespaces: ${e.message}`), { code: e.code, fatal: true });
  }
  if (failure) throw failure.err;
}

const port = parentPort;
if (!port) throw new Error('namespaces_worker runs only as a worker thread');
port.on('message', (req: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    if (req.op === 'pin') reply = { id: req.id, ok: true, paths: pin(req) };
    else if (req.op === 'configure') {
      configure(req);
      reply = { id: req.id, ok: true };
    } else reply = { id: req.id, ok: true, state: state() };
  } catch (err) {
    const e = err as { message?: string; code?: string; fatal?: boolean };
    reply = { id: req.id, ok: false, message: e.message ?? String(err), code: e.code, fatal: e.fatal };
  }
  port.postMessage(reply);
  if (!reply.ok && reply.fatal) process.exit(1);
});
