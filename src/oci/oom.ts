// OOM detection that does not depend on conmon winning a race. conmon 2.1.6 learns of an OOM kill
// through memory.oom_control's eventfd (v1) or inotify on memory.events (v2) in its main loop,
// and the same loop stops when the container's init exits: when the OOM kill takes init, both
// wake it at once and the marker can be missed. The kernel's counter is the ground truth, and it
// lives as long as the container's cgroup, i.e. until `runc delete`; so the driver records where
// the memory cgroup is at create time and reads the counter before deleting.

import fs from 'node:fs';
import path from 'node:path';

export interface MemoryCgroup {
  /** 'v1' reads memory.oom_control, 'v2' memory.events. */
  version: 'v1' | 'v2';
  dir: string;
}

export interface CgroupMount {
  mountPoint: string;
  /** The path inside the hierarchy that is mounted there (usually '/'). */
  root: string;
  version: 'v1' | 'v2';
  controllers: string[];
}

let knownMounts: CgroupMount[] | undefined;

/**
 * The host's cgroup mounts, read once: they are set up at boot, while mountinfo grows with every
 * container (a rootfs and pins per pod) and was read at every create.
 */
function cgroupMounts(): CgroupMount[] {
  knownMounts ??= readCgroupMounts();
  return knownMounts;
}

function readCgroupMounts(): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // mountinfo: id parent major:minor root mountpoint options [optional…] - fstype source superopts
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    const fstype = post[0];
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    out.push({
      root: unescapeMountinfo(pre[3]),
      mountPoint: unescapeMountinfo(pre[4]),
      version: fstype === 'cgroup2' ? 'v2' : 'v1',
      controllers: fstype === 'cgroup' ? (post[2] ?? '').split(',') : [],
    });
  }
  return out;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function underMount(m: CgroupMount, cgPath: string): string {
  const rel = m.root !== '/' && cgPath.startsWith(m.root) ? cgPath.slice(m.root.length) : cgPath;
  return path.join(m.mountPoint, rel);
}

/**
 * The memory cgroup directory of a live process, from /proc/<pid>/cgroup. A v1 memory hierarchy
 * wins over the v2 one on hybrid hosts, because that is where the limit is enforced.
 */
export function memoryCgroupOf(pid: number): MemoryCgroup | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
  const mounts = cgroupMounts();
  let unified: string | undefined;
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const cgPath = line.slice(second + 1);
    if (controllers === '') {
      unified = cgPath;
    } else if (controllers.split(',').includes('memory')) {
      const m = mounts.find((x) => x.version === 'v1' && x.controllers.includes('memory'));
      if (m) return { version: 'v1', dir: underMount(m, cgPath) };
    }
  }
  if (unified !== undefined) {
    const m = mounts.find((x) => x.version === 'v2');
    if (m) {
      const dir = underMount(m, unified);
      // On a hybrid host the unified hierarchy carries no memory controller.
      if (fs.existsSync(path.join(dir, 'memory.events'))) return { version: 'v2', dir };
    }
  }
  return undefined;
}

/** The kernel's count of OOM kills in the cgroup; undefined once the cgroup is gone. */
export function oomKillCount(cg: MemoryCgroup): number | undefined {
  const file = path.join(cg.dir, cg.version === 'v1' ? 'memory.oom_control' : 'memory.events');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}
