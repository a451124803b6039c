// The OCI runtime driver: conmon as the per-container monitor, driving runc or crun.
//
// conmon (not the daemon) is the parent of `runc create` and, through the subreaper bit, of the
// container's init: it holds the container's stdio, writes the CRI log, and records the exit code
// in <exitDir>/<id>. It daemonizes itself (double fork + setsid), so containers and their logs
// survive a daemon restart; everything the daemon needs afterwards is on disk (exit file, oom
// marker, the bundle's pid files) or in runc's state.
//
// The handshake (conmon's src/conmon.c, src/parent_pipe_fd.c; CRI-O internal/oci/runtime_oci.go):
//   fd 3 = _OCI_SYNCPIPE, fd 4 = _OCI_STARTPIPE.
//   conmon blocks reading the start pipe before it forks anything, so the daemon can move it into
//   a cgroup first; one byte lets it go on. The first conmon process writes --conmon-pidfile
//   (its daemon child's pid) and exits 0. The daemon child runs `runc create`; on success it
//   writes {"data": <init pid>} (--api-version 1 names the key "data") to the sync pipe, on
//   failure {"data": -1, "message": "<runtime stderr>"} and exits, or just exits when the runtime
//   printed nothing.

import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { FailedPreconditionError, messageOf, NotFoundError } from '../errors';
import type { Logger } from '../log';
import { type Child, spawnProcess } from '../sys/spawn';
import { startThroughExecFifo } from './exec_fifo';
import { memoryCgroupOf, oomKillCount, type MemoryCgroup } from './oom';
import { observeContainer, type ObservedState } from './observed_state';
import { alive, CappedSink, descendants, run, runtimeErrorText, sleep, type RunResult } from './proc';
import type { ContainerExit, CreateOptions, ExecResult, OciRuntime, OciRuntimeOptions, OciStatus } from './runtime';
import { runtimeGlobalArgs } from './runtime';

/** A runtime command failed; `stderr` keeps the runtime's own words. */
export class OciRuntimeError extends Error {
  constructor(
    message: string,
    readonly stderr = '',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'OciRuntimeError';
  }
}

const EXEC_OUTPUT_CAP = 16 << 20;
/** How long runc gets to reap a timed-out exec process before it is killed too. */
const EXEC_REAP_WAIT_MS = 1000;

// After the exec'd process is gone its output is already in the pipe; a descendant that inherited
// the pipe may hold it open forever, so the wait for EOF is bounded.
const EXEC_DRAIN_MS = 200;
const DEFAULT_CREATE_TIMEOUT_MS = 120_000;
const MEMORY_CGROUP_NOTE = 'memory-cgroup.json';

// g_file_set_contents writes "<name>.XXXXXX" and renames it over <name>.
const TEMP_EXIT_FILE = /\.[A-Za-z0-9]{6}$/;

export class ConmonRuntime implements OciRuntime {
  readonly name: string;
  private readonly o: OciRuntimeOptions;
  private readonly log: Logger;
  private readonly known = new Map<string, { bundle: string; logPath: string; pid: number }>();
  private readonly exitListeners: Array<(id: string) => void> = [];
  private readonly reported = new Map<string, number>();
  private watcher: fs.FSWatcher | undefined;
  private readonly noteWrites = new Map<string, Promise<void>>();
  /** runc's start handshake is done in-process (exec_fifo.ts); other runtimes run `start`. */
  private readonly fifoStart: boolean;
  /** --root and, with the systemd driver, --systemd-cgroup: before every runtime command. */
  readonly globalArgs: string[];

  constructor(opts: OciRuntimeOptions) {
    this.o = opts;
    this.globalArgs = runtimeGlobalArgs(opts.root, opts.systemdCgroup ?? false);
    this.name = opts.name;
    this.log = opts.log.child({ component: 'oci', runtime: opts.name });
    this.fifoStart = path.basename(opts.binary) === 'runc';
  }

  // ---- create ---------------------------------------------------------------------------------

  async create(c: CreateOptions): Promise<{ pid: number }> {
    const { id, bundle } = c;
    const persist = this.o.persistDir(id);
    const began = Date.now();
    // Awaited only after conmon is up; a rejection before then must not count as unhandled.
    const bundleReady = c.bundleReady ?? Promise.resolve();
    bundleReady.catch(() => undefined);
    // A retried create of the same id must not inherit the previous attempt's exit or oom. All
    // of this is independent, so it runs at once rather than one file at a time.
    await Promise.all([
      ...[this.o.exitDir, this.o.socketDir, persist, this.o.root].map((d) => fsp.mkdir(d, { recursive: true })),
      this.removeExitFiles(id),
      ...['pidfile', 'conmon.pid'].map((f) => fsp.rm(path.join(bundle, f), { force: true })),
    ]);

    const child = spawnProcess(this.o.conmon, this.conmonArgs(c), {
      cwd: bundle,
      // conmon setsids its daemon child itself; detaching the first process too keeps a signal
      // aimed at the daemon's process group (Ctrl-C in a terminal) away from it.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        _OCI_SYNCPIPE: '3',
        _OCI_STARTPIPE: '4',
      },
    });
    // Only what conmon prints before it daemonizes (bad arguments, unusable runtime path) lands
    // here; afterwards its stdio is /dev/null.
    const diag = new CappedSink(64 << 10);
    diag.attach(child.stdout);
    diag.attach(child.stderr);
    const syncPipe = child.stdio[3] as Readable;
    const startPipe = child.stdio[4] as Writable;
    syncPipe.on('error', () => undefined);
    startPipe.on('error', () => undefined);
    const firstExit = new Promise<{ code: number | null; signal: string | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });

    try {
      // conmon waits on its start pipe before it forks anything, so it can start while the
      // bundle is still being made: runc, not conmon, needs the bundle.
      await bundleReady;
      try {
        await fsp.access(path.join(bundle, 'config.json'));
      } catch (e) {
        throw new OciRuntimeError(`create container ${id}: bundle ${bundle} has no config.json (${messageOf(e)})`, '', { cause: e });
      }
      // conmon stays in the daemon's cgroup, as containerd's shims do: moving it into the pod's
      // cgroup would make that an internal node with processes, which cgroup v2 forbids once
      // the container cgroups below it enable controllers.
      startPipe.end(Buffer.from([0]));
      const pid = await this.readSyncPipe(id, syncPipe, firstExit, diag);
      const first = await firstExit;
      if (first.code !== 0) {
        throw new OciRuntimeError(`create container ${id}: conmon exited with ${first.code ?? first.signal}: ${diag.text().trim()}`, diag.text());
      }
      this.known.set(id, { bundle, logPath: c.logPath, pid });
      this.noteMemoryCgroup(id, pid);
      this.log.debug({ id, pid, ms: Date.now() - began }, 'container created');
      return { pid };
    } catch (err) {
      await this.abortCreate(id, bundle, child);
      throw err;
    } finally {
      for (const s of [syncPipe, startPipe, child.stdout, child.stderr]) s?.destroy();
      child.unref();
    }
  }

  private conmonArgs(c: CreateOptions): string[] {
    const args = [
      '--api-version',
      '-c',
      c.id,
      '-u',
      c.id,
      '-r',
      this.o.binary,
      '-b',
      c.bundle,
      '-p',
      path.join(c.bundle, 'pidfile'),
      '--conmon-pidfile',
      path.join(c.bundle, 'conmon.pid'),
      '-l',
      `k8s-file:${c.logPath}`,
      '--exit-dir',
      this.o.exitDir,
      '--persist-dir',
      this.o.persistDir(c.id),
      '--socket-dir-path',
      this.o.socketDir,
      ...this.globalArgs.flatMap((a) => ['--runtime-arg', a]),
      '--log-level',
      this.log.isLevelEnabled('debug') ? 'debug' : 'error',
      // The attach socket goes to <bundle>/attach instead of a symlink under socketDir, so its
      // path does not depend on the id's length.
      '--full-attach',
    ];
    if (c.stdin) args.push('-i');
    if (c.stdin && !c.stdinOnce) args.push('--leave-stdin-open');
    if (c.tty) args.push('-t');
    return args;
  }

  private readSyncPipe(
    id: string,
    pipe: Readable,
    firstExit: Promise<{ code: number | null; signal: string | null; error?: Error }>,
    diag: CappedSink,
  ): Promise<number> {
    const timeoutMs = this.o.createTimeoutMs ?? DEFAULT_CREATE_TIMEOUT_MS;
    return new Promise<number>((resolve, reject) => {
      let buf = '';
      let done = false;
      const finish = (err: Error | undefined, pid?: number): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(pid as number);
      };
      const timer = setTimeout(() => finish(new OciRuntimeError(`create container ${id}: conmon gave no pid within ${timeoutMs} ms`)), timeoutMs);
      void firstExit.then((r) => {
        if (r.error) {
          finish(new OciRuntimeError(`create container ${id}: cannot run ${this.o.conmon}: ${r.error.message}`, '', { cause: r.error }));
        } else if (r.code !== 0) {
          finish(new OciRuntimeError(`create container ${id}: conmon exited with ${r.code ?? r.signal}: ${diag.text().trim() || 'no output'}`, diag.text()));
        }
      });
      pipe.setEncoding('utf8');
      pipe.on('data', (chunk: string) => {
        buf += chunk;
        const nl = buf.indexOf('\n');
        if (nl >= 0) finish(...this.parseSync(id, buf.slice(0, nl)));
      });
      pipe.on('end', () => {
        if (buf.trim() !== '') finish(...this.parseSync(id, buf));
        else {
          // The daemon child exits without a word when the runtime failed silently.
          finish(new OciRuntimeError(`create container ${id}: conmon exited before reporting a pid (${this.o.binary} create failed without output)`));
        }
      });
    });
  }

  private parseSync(id: string, line: string): [Error | undefined, number?] {
    let msg: { data?: number; message?: string };
    try {
      msg = JSON.parse(line) as { data?: number; message?: string };
    } catch (e) {
      return [new OciRuntimeError(`create container ${id}: unreadable message from conmon: ${JSON.stringify(line)}`, '', { cause: e })];
    }
    if (typeof msg.data === 'number' && msg.data > 0) return [undefined, msg.data];
    const stderr = msg.message ?? '';
    const text = runtimeErrorText(stderr) || 'no message';
    const bin = path.basename(this.o.binary);
    // runc already says "runc create failed: …"; crun says "crun: …" or just the reason.
    const said = text.startsWith(`${bin} create failed`) ? text : `${bin} create failed: ${text.replace(/^crun: /, '')}`;
    return [new OciRuntimeError(`create container ${id}: ${said}`, stderr)];
  }

  /**
   * Undoes a create that failed at any point: both conmon processes (the first may not have
   * forked yet), whatever runc made, and the files this create wrote.
   */
  private async abortCreate(id: string, bundle: string, child: Child): Promise<void> {
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    const conmonPid = await readPid(path.join(bundle, 'conmon.pid'));
    if (conmonPid && (await cmdlineHas(conmonPid, id))) {
      try {
        process.kill(conmonPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    try {
      await this.runtime(['delete', '--force', id]);
    } catch (e) {
      this.log.debug({ id, err: messageOf(e) }, 'runtime delete after a failed create');
    }
    for (let i = 0; conmonPid && alive(conmonPid) && i < 100; i++) await sleep(20);
    await this.removeExitFiles(id);
    await Promise.all(['pidfile', 'conmon.pid'].map((f) => fsp.rm(path.join(bundle, f), { force: true })));
    this.known.delete(id);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  async start(id: string): Promise<void> {
    // The init pid is known for containers created by this daemon run; after a restart the
    // runtime's own start is the simple, rare path.
    const pid = this.known.get(id)?.pid;
    if (this.fifoStart && pid && (await startThroughExecFifo(path.join(this.o.root, id, 'exec.fifo'), pid)) === 'started') {
      return;
    }
    const r = await this.runtime(['start', id]);
    if (r.code !== 0) throw await this.failure('start', id, r);
  }

  async kill(id: string, signal: string | number, all = false): Promise<void> {
    const r = await this.runtime(['kill', ...(all ? ['--all'] : []), id, String(signal)]);
    if (r.code === 0) return;
    // The runtime failed; what it said does not matter, what is left of the container does. An
    // init that exits while `runc kill` runs takes its cgroup with it, and runc then fails on a
    // cgroup file that vanished under it: the container is stopped, which is what was asked.
    const seen = await this.observe(id);
    const targets = new Set(seen.livePid ? [seen.livePid] : []);
    if (all) for (const p of seen.cgroupPids) targets.add(p);
    if (!seen.known || targets.size === 0) {
      this.log.debug({ id, signal, known: seen.known, stderr: runtimeErrorText(r.stderr) }, 'kill: container already stopped');
      return;
    }
    // Processes are left (the init checked against the start time runc recorded, the rest read
    // from the container's own cgroup) that the runtime could not signal: signal them here.
    const sig = signalOf(signal);
    if (sig === undefined) throw await this.failure(`kill ${signal}`, id, r);
    for (const pid of targets) {
      try {
        process.kill(pid, sig);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw await this.failure(`kill ${signal}`, id, r);
      }
    }
    this.log.info({ id, signal, pids: [...targets], stderr: runtimeErrorText(r.stderr) }, 'kill: the runtime failed, its processes were signalled directly');
  }

  async delete(id: string, force = false): Promise<void> {
    // The container's cgroup, and with it the kernel's OOM counter, disappears with `delete`.
    await this.recordOom(id);
    const r = await this.runtime(['delete', ...(force ? ['--force'] : []), id]);
    this.known.delete(id);
    if (r.code === 0) return;
    // Deleted already (a concurrent delete, or an earlier one): the runtime keeps no state for it.
    if (!(await this.observe(id)).known) return;
    throw await this.failure('delete', id, r);
  }

  async state(id: string): Promise<{ status: OciStatus; pid: number } | undefined> {
    const s = await this.runtimeState(id);
    return s && { status: s.status, pid: s.pid };
  }

  private async runtimeState(id: string): Promise<{ status: OciStatus; pid: number; bundle: string } | undefined> {
    const r = await this.runtime(['state', id]);
    if (r.code !== 0) {
      if (!(await this.observe(id)).known) return undefined;
      throw await this.failure('state', id, r);
    }
    try {
      return JSON.parse(r.stdout) as { status: OciStatus; pid: number; bundle: string };
    } catch (e) {
      throw new OciRuntimeError(`state of container ${id}: unreadable output ${JSON.stringify(r.stdout.slice(0, 200))}`, r.stderr, { cause: e });
    }
  }

  /** The container as its state dir, /proc, its cgroup and conmon's exit file show it now. */
  private async observe(id: string): Promise<ObservedState> {
    const exited = (await this.exitOf(id).catch(() => undefined)) !== undefined;
    return observeContainer(this.o.root, id, exited, this.known.get(id)?.pid);
  }

  async update(id: string, resources: object): Promise<void> {
    const r = await this.runtime(['update', '--resources', '-', id], JSON.stringify(resources));
    if (r.code !== 0) throw await this.failure('update resources of', id, r);
  }

  // ---- exits ----------------------------------------------------------------------------------

  async exitOf(id: string): Promise<ContainerExit | undefined> {
    const persist = this.o.persistDir(id);
    // conmon writes the persist-dir copy first; the exit-dir one is what the watcher sees.
    let file = path.join(this.o.exitDir, id);
    let text: string;
    let st: fs.Stats;
    try {
      [text, st] = await Promise.all([fsp.readFile(file, 'utf8'), fsp.stat(file)]);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      file = path.join(persist, 'exit');
      try {
        [text, st] = await Promise.all([fsp.readFile(file, 'utf8'), fsp.stat(file)]);
      } catch (e2) {
        if ((e2 as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw e2;
      }
    }
    const exitCode = Number.parseInt(text.trim(), 10);
    if (Number.isNaN(exitCode)) {
      throw new OciRuntimeError(`exit of container ${id}: ${file} holds ${JSON.stringify(text)}, not an exit code`);
    }
    return { exitCode, finishedAt: st.mtimeMs, oomKilled: await this.oomKilled(id) };
  }

  onExit(cb: (id: string) => void): void {
    this.exitListeners.push(cb);
    fs.mkdirSync(this.o.exitDir, { recursive: true });
    if (!this.watcher) {
      this.watcher = fs.watch(this.o.exitDir, (_event, name) => {
        if (name) this.maybeReport(name);
      });
      this.watcher.on('error', (e) => this.log.error({ dir: this.o.exitDir, err: messageOf(e) }, 'exit dir watch failed'));
    }
    // Exits that happened while nobody watched (daemon down) are reported to the new listener.
    setImmediate(() => {
      let names: string[] = [];
      try {
        names = fs.readdirSync(this.o.exitDir);
      } catch (e) {
        this.log.error({ dir: this.o.exitDir, err: messageOf(e) }, 'cannot list the exit dir');
      }
      for (const name of names) {
        if (TEMP_EXIT_FILE.test(name)) continue;
        this.markReported(name);
        this.safeCall(cb, name);
      }
    });
  }

  private maybeReport(name: string): void {
    if (TEMP_EXIT_FILE.test(name)) return;
    if (!this.markReported(name)) return;
    for (const cb of this.exitListeners) this.safeCall(cb, name);
  }

  /** False when this exit file (same mtime) was already reported; inotify fires per syscall. */
  private markReported(name: string): boolean {
    let mtime: number;
    try {
      mtime = fs.statSync(path.join(this.o.exitDir, name)).mtimeMs;
    } catch {
      return false;
    }
    if (this.reported.get(name) === mtime) return false;
    this.reported.set(name, mtime);
    return true;
  }

  private safeCall(cb: (id: string) => void, id: string): void {
    try {
      cb(id);
    } catch (e) {
      this.log.error({ id, err: messageOf(e) }, 'exit listener threw');
    }
  }

  private async oomKilled(id: string): Promise<boolean> {
    if (fs.existsSync(path.join(this.o.persistDir(id), 'oom'))) return true;
    const cg = await this.memoryCgroup(id);
    return cg !== undefined && (oomKillCount(cg) ?? 0) > 0;
  }

  private async recordOom(id: string): Promise<void> {
    const marker = path.join(this.o.persistDir(id), 'oom');
    if (fs.existsSync(marker)) return;
    const cg = await this.memoryCgroup(id);
    if (cg && (oomKillCount(cg) ?? 0) > 0) {
      try {
        await fsp.writeFile(marker, '');
      } catch (e) {
        this.log.warn({ id, err: messageOf(e) }, 'cannot write the oom marker');
      }
    }
  }

  /**
   * Read from /proc at once (the init process is there now), written to disk in the background:
   * create does not wait for the write, and readers of the note wait for it instead.
   */
  private noteMemoryCgroup(id: string, pid: number): void {
    const cg = memoryCgroupOf(pid);
    if (!cg) {
      this.log.debug({ id, pid }, 'no memory cgroup found for the container');
      return;
    }
    const write = fsp
      .writeFile(path.join(this.o.persistDir(id), MEMORY_CGROUP_NOTE), JSON.stringify(cg))
      .catch((e: unknown) => this.log.warn({ id, err: messageOf(e) }, 'cannot note the memory cgroup'))
      .finally(() => {
        if (this.noteWrites.get(id) === write) this.noteWrites.delete(id);
      });
    this.noteWrites.set(id, write);
  }

  private async memoryCgroup(id: string): Promise<MemoryCgroup | undefined> {
    await this.noteWrites.get(id);
    try {
      return JSON.parse(await fsp.readFile(path.join(this.o.persistDir(id), MEMORY_CGROUP_NOTE), 'utf8')) as MemoryCgroup;
    } catch {
      return undefined;
    }
  }

  async forget(id: string): Promise<void> {
    await this.removeExitFiles(id);
    this.reported.delete(id);
    this.known.delete(id);
  }

  private async removeExitFiles(id: string): Promise<void> {
    // A note still being written would come back after the removal.
    await this.noteWrites.get(id);
    const persist = this.o.persistDir(id);
    await Promise.all(
      [path.join(this.o.exitDir, id), ...['exit', 'oom', MEMORY_CGROUP_NOTE].map((f) => path.join(persist, f))].map((f) => fsp.rm(f, { force: true })),
    );
  }

  // ---- exec -----------------------------------------------------------------------------------

  async execSync(id: string, cmd: string[], timeoutMs: number, opts: { env?: string[]; cwd?: string; stdin?: Buffer } = {}): Promise<ExecResult> {
    if (cmd.length === 0) throw new OciRuntimeError(`exec in container ${id}: empty command`);
    const pidFile = path.join(os.tmpdir(), `tscri-exec-${crypto.randomBytes(8).toString('hex')}.pid`);
    const args = [...this.globalArgs, 'exec', '--pid-file', pidFile];
    for (const e of opts.env ?? []) args.push('--env', e);
    if (opts.cwd) args.push('--cwd', opts.cwd);
    args.push(id, ...cmd);

    const child = spawnProcess(this.o.binary, args, { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const stdout = new CappedSink(EXEC_OUTPUT_CAP);
    const stderr = new CappedSink(EXEC_OUTPUT_CAP);
    stdout.attach(child.stdout);
    stderr.attach(child.stderr);
    if (opts.stdin && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.stdin);
    }

    try {
      const { code, signal, timedOut } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }>((resolve, reject) => {
        let timedOut = false;
        let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
        let drain: NodeJS.Timeout | undefined;
        const done = (): void => {
          clearTimeout(timer);
          clearTimeout(drain);
          if (exited) resolve({ ...exited, timedOut });
        };
        const timer =
          timeoutMs > 0
            ? setTimeout(() => {
                timedOut = true;
                void this.killExec(id, pidFile, child).then(() => {
                  // runc is SIGKILLed; its 'exit' arrives at once, but a grandchild may keep
                  // the pipes open, so do not wait for 'close'.
                  exited ??= { code: null, signal: 'SIGKILL' };
                  done();
                });
              }, timeoutMs)
            : undefined;
        child.once('error', (e) => {
          clearTimeout(timer);
          reject(new OciRuntimeError(`exec in container ${id}: cannot run ${this.o.binary}: ${e.message}`, '', { cause: e }));
        });
        child.once('exit', (c, s) => {
          exited = { code: c, signal: s };
          if (timedOut) return;
          drain = setTimeout(done, EXEC_DRAIN_MS);
        });
        child.once('close', () => {
          if (exited && !timedOut) done();
        });
      });
      for (const s of [child.stdout, child.stderr, child.stdin]) s?.destroy();
      if (timedOut) {
        return { exitCode: -1, stdout: stdout.buffer(), stderr: stderr.buffer(), timedOut: true };
      }
      const exitCode = code ?? 128 + ((os.constants.signals as Partial<Record<string, number>>)[signal ?? ''] ?? 0);
      // runc writes the pid file once the process runs; without it a failure is runc's own
      // (container not running, no such executable), not the command's exit status.
      if (exitCode !== 0 && !fs.existsSync(pidFile)) {
        throw new OciRuntimeError(
          `exec ${JSON.stringify(cmd)} in container ${id}: ${runtimeErrorText(stderr.text()) || `${this.o.binary} exec exited ${exitCode}`}`,
          stderr.text(),
        );
      }
      return { exitCode, stdout: stdout.buffer(), stderr: stderr.buffer(), timedOut: false };
    } finally {
      await fsp.rm(pidFile, { force: true });
    }
  }

  /** SIGKILLs the exec'd process with everything it started, then runc. */
  private async killExec(id: string, pidFile: string, runc: Child): Promise<void> {
    const pid = await readPid(pidFile);
    const victims = pid ? [pid, ...descendants(pid)] : [];
    for (const p of victims) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    // runc is the exec'd process's parent: left alive a moment, it reaps it and exits. Killed
    // first, it would orphan the process to the container's init, which may never reap it,
    // and the zombie would still show in `ps` inside the container.
    if (runc.exitCode === null && runc.signalCode === null) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, EXEC_REAP_WAIT_MS);
        runc.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (runc.exitCode === null && runc.signalCode === null) runc.kill('SIGKILL');
    this.log.debug({ id, pid, killed: victims.length }, 'exec timed out');
  }

  // ---- logs -----------------------------------------------------------------------------------

  async reopenLog(id: string): Promise<void> {
    const bundle = this.known.get(id)?.bundle ?? (await this.runtimeState(id))?.bundle;
    if (!bundle) throw new NotFoundError(`reopen log of container ${id}: the runtime does not know it`);
    const ctl = path.join(bundle, 'ctl');
    const conmonPid = await readPid(path.join(bundle, 'conmon.pid'));
    const logPath = this.known.get(id)?.logPath ?? (conmonPid ? await conmonLogPath(conmonPid) : undefined);
    if (!conmonPid || !alive(conmonPid)) {
      throw new FailedPreconditionError(`reopen log of container ${id}: conmon is not running`);
    }
    let fh: fsp.FileHandle;
    try {
      // conmon keeps both ends of its ctl fifo open, so a non-blocking open fails (ENXIO) only
      // when conmon is gone.
      fh = await fsp.open(ctl, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      throw new FailedPreconditionError(`reopen log of container ${id}: conmon is not running (${messageOf(e)})`, { cause: e });
    }
    try {
      // ctl message "<type> <height> <width>": type 2 is REOPEN_LOGS_EVENT (conmon src/ctrl.c).
      await fh.write('2 0 0\n');
    } finally {
      await fh.close();
    }
    if (!logPath) return;
    // The kubelet renames the log and then checks the new file exists.
    for (let i = 0; i < 200; i++) {
      if (fs.existsSync(logPath)) return;
      await sleep(10);
    }
    throw new OciRuntimeError(`reopen log of container ${id}: conmon did not recreate ${logPath}`);
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  // ---- helpers --------------------------------------------------------------------------------

  private runtime(args: string[], input?: string): Promise<RunResult> {
    return run(this.o.binary, [...this.globalArgs, ...args], { input, timeoutMs: 120_000 });
  }

  /** The runtime's words for the message; NotFound when the runtime keeps no state for the id. */
  private async failure(what: string, id: string, r: RunResult): Promise<Error> {
    const text = runtimeErrorText(r.stderr) || `exit status ${r.code ?? r.signal}`;
    const msg = `${what} container ${id}: ${path.basename(this.o.binary)}: ${text}`;
    const err = new OciRuntimeError(msg, r.stderr);
    return (await this.observe(id)).known ? err : new NotFoundError(msg, { cause: err });
  }
}

async function readPid(file: string): Promise<number | undefined> {
  try {
    const n = Number((await fsp.readFile(file, 'utf8')).trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

async function procArgs(pid: number): Promise<string[] | undefined> {
  try {
    return (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  } catch {
    return undefined;
  }
}

/** Guards against pid reuse before a kill: the process must be the monitor of this container. */
async function cmdlineHas(pid: number, id: string): Promise<boolean> {
  return (await procArgs(pid))?.includes(id) ?? false;
}

async function conmonLogPath(pid: number): Promise<string | undefined> {
  const args = await procArgs(pid);
  if (!args) return undefined;
  const i = args.findIndex((a) => a === '-l' || a === '--log-path');
  const v = i >= 0 ? args[i + 1] : undefined;
  return v?.startsWith('k8s-file:') ? v.slice('k8s-file:'.length) : v;
}

/** A signal as process.kill takes it: a number, or a name with or without its SIG prefix. */
function signalOf(signal: string | number): NodeJS.Signals | number | undefined {
  if (typeof signal === 'number') return signal;
  if (/^\d+$/.test(signal)) return Number(signal);
  const name = (signal.toUpperCase().startsWith('SIG') ? signal.toUpperCase() : `SIG${signal.toUpperCase()}`) as NodeJS.Signals;
  return name in os.constants.signals ? name : undefined;
}
