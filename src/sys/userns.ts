// Pod user namespaces (the pod's hostUsers: false). unshare(CLONE_NEWUSER) fails with EINVAL in a
// process with more than one thread, and Node always has several, so a short-lived helper makes
// the namespace: util-linux `unshare` running `sh`, which reports that it is in place and then
// waits on its stdin. From outside, the daemon writes the helper's uid_map and gid_map (root in
// the parent namespace may write any mapping), pins the namespaces by bind-mounting
// /proc/<helper>/ns/<kind>, and lets the helper go. A helper whose daemon dies sees its stdin
// close and exits: nothing outlives an interrupted create but pins, which the start-up sweep finds.
//
// The pod's net, IPC and UTS namespaces are made by the same unshare(2) call. The kernel creates
// the user namespace first and makes it their owner, which is what a pod in a user namespace
// needs: runc can mount sysfs and mqueue only in a network and IPC namespace its user namespace
// owns, and per-netns privileges (binding ports below 1024, net.* sysctls) are checked against the
// netns owner. containerd 2 gets the same ownership by letting the runtime create the sandbox's
// network namespace inside the user namespace.

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { MNT_DETACH, mount, MS_BIND, umount2 } from './libc';
import { configureNamespaces, type PodNamespaces, prepareNamespaceRoot } from './namespaces';
import { type Child, spawnProcess } from './spawn';
import { which } from '../util/which';

/** One line of uid_map / gid_map: `length` ids from `containerId` inside are `hostId`… outside. */
export interface IdMapping {
  containerId: number;
  hostId: number;
  length: number;
}

export interface UsernsMappings {
  uids: IdMapping[];
  gids: IdMapping[];
}

export interface UsernsPinOptions extends UsernsMappings {
  net: boolean;
  ipc: boolean;
  uts: boolean;
  /** Set in the new UTS namespace; ignored without `uts`. */
  hostname?: string;
}

// A busy 2-core machine starts a process in a few ms; far beyond that something is wrong.
const READY_TIMEOUT_MS = 10_000;

interface Helper {
  child: Child;
  pid: number;
}

/** The text of uid_map / gid_map; the kernel takes the whole map in a single write. */
export function mapText(mappings: IdMapping[]): string {
  return mappings.map((m) => `${m.containerId} ${m.hostId} ${m.length}\n`).join('');
}

/** Starts `unshare --user [flags] sh` and resolves once the namespaces exist (the shell runs). */
async function startHelper(flags: string[], what: string): Promise<Helper> {
  const unshare = which('unshare');
  const sh = which('sh');
  if (!unshare || !sh) throw new Error(`${what}: util-linux unshare or sh not found`);
  const child = spawnProcess(unshare, ['--user', ...flags, '--', sh, '-c', 'echo ready; read _'], {
    stdio: ['pipe', 'pipe', 'ignore'],
    detached: true,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${what}: unshare did not start within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      const done = (err?: Error): void => {
        clearTimeout(timer);
        child.off('exit', onExit);
        child.stdout?.off('data', onData);
        if (err) reject(err);
        else resolve();
      };
      const onData = (chunk: Buffer): void => {
        out += chunk.toString();
        if (out.includes('\n')) done();
      };
      const onExit = (code: number | null, signal: string | null): void =>
        done(new Error(`${what}: unshare exited (code ${code}, signal ${signal}) before the namespaces were made`));
      child.once('error', (err: Error) => done(new Error(`${what}: cannot start unshare: ${err.message}`, { cause: err })));
      child.on('exit', onExit);
      child.stdout?.on('data', onData);
    });
  } catch (err) {
    await stopHelper({ child, pid: child.pid ?? 0 });
    throw err;
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${what}: unshare started without a pid`);
  return { child, pid };
}

/** Kills the helper and waits until it is reaped, so no process is left when a create returns. */
async function stopHelper(helper: Helper): Promise<void> {
  const { child } = helper;
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin?.destroy();
  child.kill('SIGKILL');
  await exited;
}

async function writeMaps(pid: number, m: UsernsMappings, what: string): Promise<void> {
  try {
    await fs.writeFile(`/proc/${pid}/uid_map`, mapText(m.uids));
    await fs.writeFile(`/proc/${pid}/gid_map`, mapText(m.gids));
  } catch (err) {
    throw new Error(`${what}: cannot write the id mappings: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Makes a user namespace with the given mappings, and the net/IPC/UTS namespaces asked for owned
 * by it, and pins them as `dir/user`, `dir/net`, `dir/ipc`, `dir/uts`. The hostname is set and
 * `lo` brought up, as pinPodNamespaces does. On failure nothing is left.
 */
export async function pinUserNamespace(dir: string, opts: UsernsPinOptions): Promise<PodNamespaces> {
  const abs = path.resolve(dir);
  const what = `user namespace ${abs}`;
  await prepareNamespaceRoot(path.dirname(abs));
  await fs.mkdir(abs, { recursive: true, mode: 0o755 });
  const kinds: Array<'user' | 'net' | 'ipc' | 'uts'> = ['user'];
  if (opts.net) kinds.push('net');
  if (opts.ipc) kinds.push('ipc');
  if (opts.uts) kinds.push('uts');
  const created: string[] = [];
  const pinned: string[] = [];
  const paths: PodNamespaces = {};
  let helper: Helper | undefined;
  try {
    for (const kind of kinds) {
      const p = path.join(abs, kind);
      // 'wx' refuses to reuse a file: an existing one may already pin a live pod's namespace.
      await (await fs.open(p, 'wx', 0o444)).close();
      created.push(p);
    }
    helper = await startHelper(
      kinds.filter((k) => k !== 'user').map((k) => `--${k}`),
      what,
    );
    await writeMaps(helper.pid, opts, what);
    for (const kind of kinds) {
      const p = path.join(abs, kind);
      mount(`/proc/${helper.pid}/ns/${kind}`, p, null, MS_BIND, null);
      pinned.push(p);
      paths[kind] = p;
    }
    await configureNamespaces({ net: paths.net, uts: paths.uts }, opts.hostname);
    return paths;
  } catch (err) {
    for (const p of pinned) {
      try {
        umount2(p, MNT_DETACH);
      } catch {
        // best effort: the original error is the one worth reporting
      }
    }
    for (const p of created) await fs.rm(p, { force: true });
    throw err;
  } finally {
    if (helper) await stopHelper(helper);
  }
}

/**
 * A user namespace for a moment, as an open fd (for an idmapped mount); `use` runs while the
 * helper holds it. Used by the start-up probe.
 */
export async function withUserNamespace<T>(m: UsernsMappings, use: (usernsFd: number) => Promise<T> | T): Promise<T> {
  const helper = await startHelper([], 'user namespace probe');
  try {
    await writeMaps(helper.pid, m, 'user namespace probe');
    const fh = await fs.open(`/proc/${helper.pid}/ns/user`, 'r');
    try {
      return await use(fh.fd);
    } finally {
      await fh.close();
    }
  } finally {
    await stopHelper(helper);
  }
}
