import { promises as fs } from 'node:fs';
import { spawnProcess } from '../sys/spawn';
import { which } from '../util/which';

/**
 * A pod that shares one PID namespace among its containers needs a process to hold it: a PID
 * namespace dies with its init and cannot be joined afterwards, so a bind mount is not enough.
 * util-linux `unshare --pid --fork` makes a shell loop the namespace's init; it runs in its own
 * session so it outlives a daemon restart. Containers join /proc/<init>/ns/pid.
 *
 * The init must reap: processes orphaned inside the pod are reparented to it. The shell's
 * `wait` (dash and bash alike) collects any child that exits, its own `sleep` or an orphan, so
 * no zombie stays, as a pause binary would do.
 */
export interface PidHolder {
  /** The unshare process (its process group holds the namespace's init). */
  pid: number;
  /** Host pid of the namespace's init. */
  initPid: number;
  nsPath: string;
}

/**
 * `userns`: the pinned user namespace of a pod with one; the PID namespace is then made inside it
 * (util-linux nsenter joins it and execs unshare, so the pid stays the same) and owned by it,
 * which runc needs to mount /proc for the pod's containers.
 */
export async function startPidHolder(userns?: string): Promise<PidHolder> {
  const unshare = which('unshare');
  const sh = which('sh');
  const sleep = which('sleep');
  const nsenter = userns ? which('nsenter') : undefined;
  if (!unshare || !sh || !sleep) throw new Error('shared PID namespace: util-linux unshare, sh or coreutils sleep not found');
  if (userns && !nsenter) throw new Error('shared PID namespace in a user namespace: util-linux nsenter not found');
  // sleep's path comes in as $0, so it needs no quoting inside the script.
  const args = ['--pid', '--fork', sh, '-c', 'while :; do "$0" 3600 & wait; done', sleep];
  const child = nsenter
    ? spawnProcess(nsenter, [`--user=${userns}`, '--', unshare, ...args], { detached: true })
    : spawnProcess(unshare, args, { detached: true });
  child.unref();
  // A failed start is already told by the missing pid below.
  child.on('error', () => undefined);
  const pid = child.pid;
  if (pid === undefined) throw new Error('shared PID namespace: unshare could not be started');
  // The init is unshare's only child; it appears within a few milliseconds.
  for (let i = 0; i < 200; i++) {
    const children = await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
    const initPid = Number(children.trim().split(/\s+/)[0]);
    if (initPid > 0) return { pid, initPid, nsPath: `/proc/${initPid}/ns/pid` };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  stopPidHolder({ pid, initPid: 0, nsPath: '' });
  throw new Error(`shared PID namespace: unshare (pid ${pid}) did not start its init`);
}

/** Kills the holder and with it every process left in the namespace; idempotent. */
export function stopPidHolder(holder: PidHolder | undefined): void {
  if (!holder) return;
  for (const target of [-holder.pid, holder.initPid]) {
    if (target === 0) continue;
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
