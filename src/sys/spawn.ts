// Child processes without fork(): posix_spawn through sys/libc, reaped on SIGCHLD.
//
// The object returned looks like the part of child_process.ChildProcess the daemon uses (pid,
// stdio sockets, 'error' / 'exit' / 'close', kill), so call sites read the same. Differences:
// the program is named by its path (no PATH search), and only the main thread may spawn
// (signals reach the main thread only).
//
// Reaping: libuv's own SIGCHLD handler waits only for the pids it spawned, and ours only for
// ours, so both kinds of child can live in one process.

import { EventEmitter } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { isMainThread } from 'node:worker_threads';
import { closeFd, dupAtLeast, posixSpawn, reapChild, socketPair, SysError, type ChildFd } from './libc';

export type StdioKind = 'pipe' | 'ignore';

export interface SpawnOptions {
  /** Default: the daemon's own environment. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** What the child's descriptors 0..n-1 are; 'pipe' is a socket pair, as with Node. Default all 'ignore'. */
  stdio?: StdioKind[];
  /** Own session and process group (setsid), so a signal to the daemon's group misses it. */
  detached?: boolean;
}

// Descriptors handed to the child are first moved at least this high, so that putting one in
// place as the child's fd i never overwrites another that is still to be placed.
const FIRST_FREE_FD = 16;

const signalNames = new Map<number, NodeJS.Signals>();
for (const [name, num] of Object.entries(os.constants.signals)) signalNames.set(num, name as NodeJS.Signals);

// Node's signal handles do not keep the event loop alive, so while a child that was not
// unref()'d runs, this timer does, as a ChildProcess handle would. It also reaps, in case a
// SIGCHLD was ever lost.
const SWEEP_MS = 1000;

const running = new Map<number, Child>();
let reaping = false;
let keepAlive: NodeJS.Timeout | undefined;

function reapAll(): void {
  for (const [pid, child] of running) {
    const ended = reapChild(pid);
    if (!ended) continue;
    running.delete(pid);
    child.exited(ended.code, ended.signal === null ? null : (signalNames.get(ended.signal) ?? null));
  }
  updateKeepAlive();
}

function updateKeepAlive(): void {
  let needed = false;
  for (const child of running.values()) needed ||= child.holdsLoop;
  if (needed && !keepAlive) keepAlive = setInterval(reapAll, SWEEP_MS);
  if (!needed && keepAlive) {
    clearInterval(keepAlive);
    keepAlive = undefined;
  }
}

/** The events a Child emits, with what each carries (as ChildProcess's). */
export interface ChildEvents {
  error: [err: Error];
  exit: [code: number | null, signal: NodeJS.Signals | null];
  close: [code: number | null, signal: NodeJS.Signals | null];
}

export class Child extends EventEmitter<ChildEvents> {
  pid: number | undefined;
  readonly stdio: Array<net.Socket | null>;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  private hasExited = false;
  private openStreams = 0;

  constructor(stdio: Array<net.Socket | null>) {
    super();
    this.stdio = stdio;
    // As with Node, 'close' waits for what the child writes to (fd 1 and up), not for its stdin.
    for (const s of stdio.slice(1)) {
      if (!s) continue;
      this.openStreams++;
      s.once('close', () => {
        this.openStreams--;
        this.maybeClose();
      });
    }
  }

  get stdin(): Writable | null {
    return this.stdio[0] ?? null;
  }

  get stdout(): Readable | null {
    return this.stdio[1] ?? null;
  }

  get stderr(): Readable | null {
    return this.stdio[2] ?? null;
  }

  /** Signals the child unless it was already reaped (its pid may belong to another process by then). */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.pid === undefined || this.hasExited) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** @internal */
  holdsLoop = true;

  /** As ChildProcess.unref: the event loop no longer waits for this child. */
  unref(): void {
    this.holdsLoop = false;
    updateKeepAlive();
  }

  /** @internal from the reaper */
  exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.hasExited = true;
    this.exitCode = code;
    this.signalCode = signal;
    this.emit('exit', code, signal);
    this.maybeClose();
  }

  private maybeClose(): void {
    if (this.hasExited && this.openStreams === 0) {
      this.openStreams = -1;
      this.emit('close', this.exitCode, this.signalCode);
    }
  }
}

/** Starts `file` (a path, not a bare name) with `args`; failures to start arrive as an 'error' event. */
export function spawnProcess(file: string, args: string[], opts: SpawnOptions = {}): Child {
  if (!isMainThread) throw new Error(`spawn ${file}: only the main thread can spawn (SIGCHLD reaches it alone)`);
  if (!reaping) {
    process.on('SIGCHLD', reapAll);
    reaping = true;
  }
  const kinds = opts.stdio ?? ['ignore', 'ignore', 'ignore'];
  const ours: Array<number | null> = [];
  const theirs: number[] = [];
  const fds: ChildFd[] = [];
  let pid: number | undefined;
  let failure: Error | undefined;
  try {
    for (const kind of kinds) {
      if (kind === 'ignore') {
        ours.push(null);
        fds.push('null');
        continue;
      }
      const [mine, child] = socketPair();
      ours.push(mine);
      theirs.push(child);
      const high = dupAtLeast(child, FIRST_FREE_FD);
      theirs.push(high);
      fds.push({ dup: high });
    }
    if (!file.includes('/')) throw new SysError('posix_spawn', os.constants.errno.ENOENT, file, 'no PATH search: give a path');
    pid = posixSpawn({
      path: path.resolve(file),
      argv: [path.basename(file), ...args],
      env: envStrings(opts.env ?? process.env),
      cwd: opts.cwd,
      fds,
      setsid: !!opts.detached,
    });
  } catch (e) {
    failure = e instanceof SysError ? spawnError(file, args, e) : (e as Error);
  } finally {
    for (const fd of theirs) closeFd(fd);
  }
  if (failure) {
    for (const fd of ours) if (fd !== null) closeFd(fd);
    const child = new Child([]);
    const error = failure;
    process.nextTick(() => child.emit('error', error));
    return child;
  }
  if (pid === undefined) throw new Error(`spawn ${file}: posix_spawn gave no pid`);
  const stdio = ours.map((fd, i) => (fd === null ? null : new net.Socket({ fd, readable: i !== 0, writable: i !== 1 && i !== 2 })));
  const child = new Child(stdio);
  child.pid = pid;
  running.set(pid, child);
  updateKeepAlive();
  return child;
}

function envStrings(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out.push(`${k}=${v}`);
  return out;
}

/** Shaped like Node's spawn errors (code, errno, syscall, path), so callers can test e.code. */
function spawnError(file: string, args: string[], e: SysError): Error {
  const err = new Error(`spawn ${file} ${e.code}`) as NodeJS.ErrnoException & { spawnargs: string[] };
  err.code = e.code;
  err.errno = -e.errno;
  err.syscall = `spawn ${file}`;
  err.path = file;
  err.spawnargs = args;
  return err;
}
