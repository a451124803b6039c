// The OCI runtime seen from the container domain: containers by id, never command lines. One
// implementation drives conmon + runc/crun (conmon_runtime.ts); a CRI runtime handler maps to
// one configured instance, so a VM runtime could sit behind the same interface (CRI-O's
// internal/oci Runtime does the same).

import type { Logger } from '../log';

export interface OciRuntimeOptions {
  /** Handler name: 'runc' | 'crun'. */
  name: string;
  /** Path to runc/crun. */
  binary: string;
  /** Runtime state dir, passed as --root (e.g. <state>/runc). */
  root: string;
  /** Path to conmon. */
  conmon: string;
  /** conmon writes <exitDir>/<id> with the exit code when the container's init exits. */
  exitDir: string;
  /** Per-container dir for conmon's persist files (exit, oom marker) and the driver's cgroup note. */
  persistDir: (id: string) => string;
  /** conmon --socket-dir-path. Keep it short: sun_path is 108 bytes. */
  socketDir: string;
  log: Logger;
  /** How long conmon + `runc create` may take before create gives up (default 120 s). */
  createTimeoutMs?: number;
  /** The systemd cgroup driver: cgroupsPath is `slice:prefix:name`, which the runtime reads as such only with --systemd-cgroup. */
  systemdCgroup?: boolean;
}

/**
 * The runtime's global flags, before its command, on every call (create through conmon, start,
 * kill, delete, state, update, exec): runc reads a `slice:prefix:name` cgroupsPath as a plain
 * directory unless told that systemd manages the cgroups.
 */
export function runtimeGlobalArgs(root: string, systemdCgroup: boolean): string[] {
  return [`--root=${root}`, ...(systemdCgroup ? ['--systemd-cgroup'] : [])];
}

export interface CreateOptions {
  id: string;
  bundle: string;
  logPath: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  /**
   * Settles when the bundle (config.json, mounted rootfs) is complete; until then the driver may
   * start its monitor but not the runtime. A rejection aborts the create with that error.
   * Omitted: the bundle is complete already.
   */
  bundleReady?: Promise<void>;
}

export interface ExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

export interface ContainerExit {
  exitCode: number;
  /** ms since the epoch: the exit file's mtime. */
  finishedAt: number;
  oomKilled: boolean;
}

export type OciStatus = 'creating' | 'created' | 'running' | 'stopped' | 'paused';

export interface OciRuntime {
  readonly name: string;
  /** conmon started and `runc create` done: the container is 'created' and its init pid known. */
  create(opts: CreateOptions): Promise<{ pid: number }>;
  start(id: string): Promise<void>;
  /** No error when the container already stopped or is unknown to the runtime. */
  kill(id: string, signal: string | number, all?: boolean): Promise<void>;
  /** Idempotent: an unknown id is fine. Exit and oom files are kept (see forget). */
  delete(id: string, force?: boolean): Promise<void>;
  /** undefined when the runtime does not know the id. */
  state(id: string): Promise<{ status: OciStatus; pid: number } | undefined>;
  /** From conmon's exit file (mtime = finishedAt) and oom marker; undefined while running. */
  exitOf(id: string): Promise<ContainerExit | undefined>;
  /**
   * cb(id) when an exit file appears; exit files already present when the first callback is
   * registered are reported too, so exits that happened while the daemon was down are not lost.
   * A callback may see the same id more than once (e.g. after a restart): treat it as a hint and
   * read exitOf.
   */
  onExit(cb: (id: string) => void): void;
  execSync(id: string, cmd: string[], timeoutMs: number, opts?: { env?: string[]; cwd?: string; stdin?: Buffer }): Promise<ExecResult>;
  /** `runc update --resources -` with an OCI linux.resources object. */
  update(id: string, resources: object): Promise<void>;
  /** Ask conmon to reopen the container log (after the kubelet rotated it). */
  reopenLog(id: string): Promise<void>;
  /** Removes what the driver and conmon left for a removed container: exit file, oom marker. */
  forget(id: string): Promise<void>;
  /** Stops watching the exit dir (daemon shutdown, tests). Containers keep running. */
  close(): void;
}
