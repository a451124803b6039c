// Takes a running container's cgroup away from under it: its init is moved up into the parent
// cgroup of every hierarchy and the container's own cgroup dirs are removed, as when the init
// exits and its cgroup goes while a `runc kill` is on its way. runc then fails on files that
// vanished (freezer.state, the devices dir) although the runtime's state still names the init.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Mount point per v1 controller set ("cpu,cpuacct", "name=systemd") and "" for cgroup2. */
function hierarchyMounts(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post) continue;
    const [fstype, , superOpts] = post.split(' ');
    const mountPoint = pre.split(' ')[4];
    if (fstype === 'cgroup2') out.set('', mountPoint);
    else if (fstype === 'cgroup') {
      const ctrls = superOpts.split(',').filter((o) => o !== 'rw' && o !== 'ro' && !o.startsWith('release_agent') && o !== 'clone_children' && o !== 'nsroot');
      out.set(ctrls.sort().join(','), mountPoint);
    }
  }
  return out;
}

/** Moves `pid` out of every cgroup whose path contains `id` and removes those dirs; returns them. */
export function evictFromCgroups(pid: number, id: string): string[] {
  const mounts = hierarchyMounts();
  const removed: string[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, ctrls, rel] = line.split(':');
    if (!rel.includes(id)) continue;
    const mount = mounts.get(ctrls.split(',').sort().join(','));
    if (!mount) continue;
    const dir = path.join(mount, rel);
    fs.writeFileSync(path.join(path.dirname(dir), 'cgroup.procs'), String(pid));
    fs.rmdirSync(dir);
    removed.push(dir);
  }
  return removed;
}
