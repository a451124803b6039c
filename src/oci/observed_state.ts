// What is true of a container when a runtime command failed, read from the runtime's state dir,
// /proc and the container's cgroup: never from the runtime's stderr, whose wording changes
// between runc and crun versions and kernels (containerd does the same: a failed kill asks
// whether the task is still there).

import fsp from 'node:fs/promises';
import path from 'node:path';
import { procStat } from './proc';

export interface ObservedState {
  /** The runtime still keeps a state dir for the id: it was created and not deleted yet. */
  known: boolean;
  /** The container's init, when it is alive and is the very process the runtime started. */
  livePid?: number;
  /** Processes still in the container's cgroup (init included), when its cgroup exists. */
  cgroupPids: number[];
}

/** The parts of runc's <root>/<id>/state.json that tell which process the init is. */
interface RuncState {
  init_process_pid?: number;
  init_process_start?: number | string;
  cgroup_paths?: Record<string, string>;
}

/**
 * `root` is the runtime's --root; `exited` says conmon already recorded the init's exit (the pid
 * may have been reused since). `fallbackPid` is the init pid the driver knows when the runtime
 * keeps no readable state.json (crun).
 */
export async function observeContainer(root: string, id: string, exited: boolean, fallbackPid?: number): Promise<ObservedState> {
  const dir = path.join(root, id);
  try {
    await fsp.stat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { known: false, cgroupPids: [] };
    throw e;
  }
  let st: RuncState = {};
  try {
    st = JSON.parse(await fsp.readFile(path.join(dir, 'state.json'), 'utf8')) as RuncState;
  } catch {
    // crun keeps another layout, and a state dir being deleted may have lost its file already.
  }
  const pid = st.init_process_pid ?? fallbackPid;
  let livePid: number | undefined;
  if (pid && !exited) {
    const p = procStat(pid);
    // runc compares the start time it recorded at create with /proc's, so a reused pid is not
    // taken for the init (libcontainer's runType does the same).
    const same = st.init_process_start === undefined || (p !== undefined && String(p.startTicks) === String(st.init_process_start));
    if (p && same && p.state !== 'Z' && p.state !== 'X') livePid = pid;
  }
  return { known: true, livePid, cgroupPids: await pidsIn(Object.values(st.cgroup_paths ?? {})) };
}

/** Every pid listed in cgroup.procs of the given cgroup dirs (v1: one dir per controller). */
async function pidsIn(dirs: string[]): Promise<number[]> {
  const pids = new Set<number>();
  for (const dir of new Set(dirs)) {
    let text: string;
    try {
      text = await fsp.readFile(path.join(dir, 'cgroup.procs'), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const n = Number(line);
      if (line !== '' && Number.isInteger(n) && n > 0) pids.add(n);
    }
  }
  return [...pids];
}
