import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Proc {
  pid: number;
  ppid: number;
  args: string[];
}

/** Every process on the host with its parent and arguments; kernel threads (no args) are left out. */
export function listProcs(): Proc[] {
  const out: Proc[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const args = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (args.length === 0) continue;
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      // The command name may hold spaces and parentheses: fields are counted after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      out.push({ pid: Number(name), ppid, args });
    } catch {
      // Exited between readdir and read.
    }
  }
  return out;
}

export function descendants(procs: Proc[], root: number): Proc[] {
  const children = new Map<number, Proc[]>();
  for (const p of procs) {
    const list = children.get(p.ppid) ?? [];
    list.push(p);
    children.set(p.ppid, list);
  }
  const out: Proc[] = [];
  const stack = [root];
  for (let pid = stack.pop(); pid !== undefined; pid = stack.pop()) {
    for (const c of children.get(pid) ?? []) {
      out.push(c);
      stack.push(c.pid);
    }
  }
  return out;
}

/** conmon monitors whose arguments name a path under one of `dirs`. */
export function conmonsUnder(procs: Proc[], dirs: string[]): Proc[] {
  return procs.filter((p) => path.basename(p.args[0]) === 'conmon' && p.args.some((a) => dirs.some((d) => a.includes(d))));
}

/**
 * containerd's runc v2 shims for the containerd on `socket`. They start as
 * `containerd-shim-runc-v2 -namespace k8s.io -id <id> -address <socket>` and are reparented to
 * init (or the nearest subreaper), so they are found by their arguments, not their parent.
 */
export function shimsOf(procs: Proc[], socket: string): Proc[] {
  return procs.filter((p) => path.basename(p.args[0]) === 'containerd-shim-runc-v2' && p.args.includes(socket));
}

export interface Mem {
  /** VmRSS, bytes: every resident page the process maps, shared ones counted in full. */
  rss: number;
  /** Pss from smaps_rollup, bytes: shared pages split among the processes that map them. */
  pss: number;
}

const ZERO: Mem = { rss: 0, pss: 0 };

function kbField(text: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/** Memory of one process; zero if it is gone. */
export function memOf(pid: number): Mem {
  try {
    const rss = kbField(fs.readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS');
    const pss = kbField(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss');
    return { rss, pss };
  } catch {
    return ZERO;
  }
}

export function sumMem(pids: number[]): Mem {
  return pids.map(memOf).reduce((a, b) => ({ rss: a.rss + b.rss, pss: a.pss + b.pss }), ZERO);
}
