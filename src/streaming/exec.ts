// Exec for the streaming server: `runc exec` of the container's handler, wired to a RemoteIO.
//
// Without a TTY, runc hands its own stdio to the process, so pipes from child_process carry the
// streams directly.
//
// With a TTY the process needs a real controlling terminal, which runc only creates with
// --tty, and then it sends the pty master over --console-socket with SCM_RIGHTS. node:net
// cannot receive descriptors, so the console socket is a raw unix socket (sys/libc: socket,
// accept4, recvmsg) watched by libuv's poll handle; the master is then driven the same way
// (fd_channel.ts). Alternatives considered: conmon's exec mode would add a second monitor
// process and its sync-pipe protocol per exec; an openpty in the daemon with
// `runc exec --tty=false` gives no controlling terminal (no job control, no ^C to the
// foreground group). The initial size goes in the process spec (consoleSize), so a command
// that reads its size at once (`stty size`) sees the client's terminal; later resizes are
// TIOCSWINSZ on the master.

import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../log';
import { accept, AF_UNIX, closeFd, listenUnix, pollFd, recvFd, setWinsize, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, socket } from '../sys/libc';
import { spawnProcess } from '../sys/spawn';
import { FdChannel } from './fd_channel';
import type { RemoteIO, TerminalSize } from './remotecommand';

export interface RuntimeBinary {
  /** runc or crun. */
  binary: string;
  /** Its global flags (oci/runtime.ts runtimeGlobalArgs: --root, --systemd-cgroup). */
  globalArgs: string[];
}

export interface ExecTarget {
  id: string;
  bundle: string;
  runtime: RuntimeBinary;
  /** Directory for the short-lived console sockets (sun_path is 108 bytes). */
  socketDir: string;
}

export class ExecStartError extends Error {}

/** How long output may keep flowing after the exec'd process exited (grandchildren). */
const DRAIN_AFTER_EXIT_MS = 2000;
/** How long a TTY exec waits for the client's first size before starting. */
const FIRST_SIZE_WAIT_MS = 500;
const CONSOLE_WAIT_MS = 30_000;

/** Runs `cmd` in the container; resolves with its exit code once its output is delivered. */
export async function runExec(target: ExecTarget, cmd: string[], io: RemoteIO, tty: boolean, log: Logger): Promise<number> {
  return tty ? execTty(target, cmd, io, log) : execPipes(target, cmd, io, log);
}

/** A pipe asked for at spawn; absent only when the program could not be started. */
function pipeOf<T>(stream: T | null, what: string): T {
  if (!stream) throw new Error(`${what}: the pipe is missing (the program did not start)`);
  return stream;
}

function pidFileFor(): string {
  return path.join(os.tmpdir(), `tscri-exec-${crypto.randomBytes(8).toString('hex')}.pid`);
}

function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  return code ?? 128 + (signal ? ((os.constants.signals as Partial<Record<NodeJS.Signals, number>>)[signal] ?? 0) : 0);
}

async function execPipes(target: ExecTarget, cmd: string[], io: RemoteIO, log: Logger): Promise<number> {
  const pidFile = pidFileFor();
  const child = spawnProcess(target.runtime.binary, [...target.runtime.globalArgs, 'exec', '--pid-file', pidFile, target.id, ...cmd], {
    stdio: [io.stdin ? 'pipe' : 'ignore', io.stdout ? 'pipe' : 'ignore', 'pipe'],
  });
  // Listened for before anything else: a runtime that cannot be started reports it on the next
  // tick, with no pipes, and an 'error' nobody listens to would take the daemon down.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', (e: Error) => reject(new ExecStartError(`exec in container ${target.id}: cannot run ${target.runtime.binary}: ${e.message}`)));
    child.once('exit', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal }));
  });
  exited.catch(() => undefined);
  const runtimeErr: Buffer[] = [];
  let errBytes = 0;
  try {
    // No stderr pipe: the runtime did not start, and `exited` rejects with why.
    if (!child.stderr) await exited;
    if (io.stdin && child.stdin) {
      const sink = child.stdin;
      sink.on('error', () => undefined);
      io.stdin.pipe(sink);
      // A client that goes away closes stdin; the process decides what that means.
      io.stdin.once('close', () => sink.end());
    }
    if (io.stdout && child.stdout) child.stdout.pipe(io.stdout, { end: false });
    pipeOf(child.stderr, `runc exec stderr in container ${target.id}`).on('data', (d: Buffer) => {
      // runc's own complaints (before the process exists) share this pipe with the process's
      // stderr; both reach the client, and the head is kept to explain a failed start.
      if (errBytes < 16 * 1024) {
        runtimeErr.push(d);
        errBytes += d.length;
      }
      if (io.stderr && !io.stderr.destroyed) io.stderr.write(d);
    });

    const { code, signal } = await exited;
    await drained([child.stdout, child.stderr]);
    const exitCode = exitCodeOf(code, signal);
    if (exitCode !== 0 && !fs.existsSync(pidFile)) {
      const text = Buffer.concat(runtimeErr).toString('utf8').trim();
      throw new ExecStartError(
        `exec ${JSON.stringify(cmd)} in container ${target.id}: ${text || `${path.basename(target.runtime.binary)} exec exited ${exitCode}`}`,
      );
    }
    log.debug({ container: target.id, cmd, exitCode }, 'exec finished');
    return exitCode;
  } finally {
    io.stdin?.unpipe();
    await fsp.rm(pidFile, { force: true });
  }
}

/** Resolves when every stream ended, or DRAIN_AFTER_EXIT_MS later (a descendant holds it). */
function drained(streams: Array<NodeJS.ReadableStream | null | undefined>): Promise<void> {
  const waits = streams
    .filter((s): s is NodeJS.ReadableStream => !!s)
    .map(
      (s) =>
        new Promise<void>((resolve) => {
          if ((s as unknown as { readableEnded?: boolean }).readableEnded) resolve();
          s.once('end', () => resolve());
          s.once('close', () => resolve());
        }),
    );
  return Promise.race([Promise.all(waits).then(() => undefined), new Promise<void>((r) => setTimeout(r, DRAIN_AFTER_EXIT_MS))]);
}

async function processSpec(bundle: string, cmd: string[], size: TerminalSize | undefined): Promise<object> {
  const spec = JSON.parse(await fsp.readFile(path.join(bundle, 'config.json'), 'utf8')) as { process?: Record<string, unknown> };
  const proc: Record<string, unknown> = { ...(spec.process ?? {}), args: cmd, terminal: true };
  if (size) proc['consoleSize'] = { height: size.height, width: size.width };
  else delete proc['consoleSize'];
  return proc;
}

/** A listening console socket and the master that arrives on it. */
class ConsoleSocket {
  private readonly fd: number;
  private conn = -1;
  private closed = false;

  private constructor(readonly path: string) {
    this.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
    try {
      listenUnix(this.fd, path, 1);
    } catch (e) {
      closeFd(this.fd);
      throw e;
    }
  }

  static async create(dir: string): Promise<ConsoleSocket> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const p = path.join(dir, `c-${crypto.randomBytes(6).toString('hex')}`);
    const s = new ConsoleSocket(p);
    await fsp.chmod(p, 0o600);
    return s;
  }

  /** The pty master runc sends; rejects when `abandon` settles first or after a timeout. */
  master(abandon: Promise<unknown>): Promise<number> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const poller = pollFd(this.fd, () => step());
      let connPoller: ReturnType<typeof pollFd> | undefined;
      const finish = (outcome: { err: Error } | { fd: number }): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        poller.close();
        connPoller?.close();
        if ('err' in outcome) reject(outcome.err);
        else resolve(outcome.fd);
      };
      const step = (): void => {
        try {
          if (this.conn < 0) {
            const c = accept(this.fd);
            if (c === null) return;
            this.conn = c;
            poller.watch({});
            connPoller = pollFd(c, () => step());
            connPoller.watch({ readable: true });
          }
          const m = recvFd(this.conn);
          if (m !== null) finish({ fd: m });
        } catch (e) {
          finish({ err: e as Error });
        }
      };
      const timer = setTimeout(() => finish({ err: new Error(`no console from the runtime within ${CONSOLE_WAIT_MS / 1000}s`) }), CONSOLE_WAIT_MS);
      void abandon.then(() => finish({ err: new Error('the runtime exited without sending a console') }));
      poller.watch({ readable: true });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.conn >= 0) closeFd(this.conn);
    closeFd(this.fd);
    fs.rmSync(this.path, { force: true });
  }
}

async function execTty(target: ExecTarget, cmd: string[], io: RemoteIO, log: Logger): Promise<number> {
  const size = await io.firstSize(FIRST_SIZE_WAIT_MS);
  const token = crypto.randomBytes(8).toString('hex');
  const processFile = path.join(target.bundle, `exec-${token}.json`);
  const pidFile = pidFileFor();
  await fsp.writeFile(processFile, JSON.stringify(await processSpec(target.bundle, cmd, size)), { mode: 0o600 });
  const consoleSock = await ConsoleSocket.create(target.socketDir);
  let master: FdChannel | undefined;
  try {
    // See tty_exec_helper.ts: it runs `runc exec --detach --tty` and waits for the process.
    const child = spawnProcess(
      process.execPath,
      [
        path.join(__dirname, 'tty_exec_helper.js'),
        target.runtime.binary,
        JSON.stringify(target.runtime.globalArgs),
        target.id,
        consoleSock.path,
        processFile,
        pidFile,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const diag: Buffer[] = [];
    const helperOut = pipeOf(child.stdout, `tty exec helper stdout for container ${target.id}`);
    pipeOf(child.stderr, `tty exec helper stderr for container ${target.id}`).on('data', (d: Buffer) => diag.push(d));
    let report = '';
    helperOut.setEncoding('utf8');
    helperOut.on('data', (d: string) => {
      report += d;
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('error', (e: Error) => {
        diag.push(Buffer.from(e.message));
        resolve({ code: 127, signal: null });
      });
      child.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal }));
    });
    const outcome = exited.then(() => {
      for (const line of report.split('\n').reverse()) {
        if (!line.trim()) continue;
        try {
          const msg = JSON.parse(line) as { exitCode?: number; error?: string };
          if (typeof msg.exitCode === 'number') return { exitCode: msg.exitCode };
          if (typeof msg.error === 'string') return { error: msg.error };
        } catch {
          // not a report line
        }
      }
      return { error: Buffer.concat(diag).toString('utf8').trim() || 'the exec helper exited without a report' };
    });

    let masterFd: number;
    try {
      masterFd = await consoleSock.master(outcome);
    } catch (e) {
      const o = await outcome;
      throw new ExecStartError(`exec ${JSON.stringify(cmd)} with a tty in container ${target.id}: ${'error' in o ? o.error : (e as Error).message}`);
    }
    master = new FdChannel(masterFd);
    const m = master;
    const applySize = (s: TerminalSize): void => {
      try {
        setWinsize(masterFd, s.height, s.width);
      } catch (e) {
        log.debug({ container: target.id, err: (e as Error).message }, 'tty resize failed');
      }
    };
    if (io.lastSize && io.lastSize !== size) applySize(io.lastSize);
    io.resize.on('resize', applySize);

    const outputDone = new Promise<void>((resolve) => {
      m.once('end', () => resolve());
      m.once('error', () => resolve());
    });
    m.on('data', (d: Buffer) => {
      if (!io.stdout || io.stdout.destroyed) return;
      if (!io.stdout.write(d)) {
        m.pause();
        io.stdout.once('drain', () => m.resume());
      }
    });
    m.on('error', (e: Error) => log.debug({ container: target.id, err: e.message }, 'tty master error'));
    if (io.stdin) {
      io.stdin.on('data', (d: Buffer) => m.write(d));
    }

    const o = await outcome;
    await Promise.race([outputDone, new Promise((res) => setTimeout(res, DRAIN_AFTER_EXIT_MS))]);
    io.resize.off('resize', applySize);
    if ('error' in o) throw new ExecStartError(`exec ${JSON.stringify(cmd)} with a tty in container ${target.id}: ${o.error}`);
    const exitCode = o.exitCode;
    log.debug({ container: target.id, cmd, exitCode, tty: true }, 'exec finished');
    return exitCode;
  } finally {
    master?.close();
    consoleSock.close();
    await Promise.all([fsp.rm(processFile, { force: true }), fsp.rm(pidFile, { force: true })]);
  }
}
