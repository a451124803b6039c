// What a daemon can leave behind on the host after its pods and containers are gone: mounts
// (rootfs overlays, pinned namespaces, /dev/shm), conmon monitors, cgroups, iptables rules.
// A test file snapshots them at the start and asserts that nothing new remains at the end.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CriClient } from './cri';
import type { Daemon } from './daemon';

export interface LeakScope {
  /** Directories owned by the daemon under test (its root, state and temp base). */
  dirs: string[];
  /** Container (and sandbox) ids whose cgroups must be gone. */
  ids: string[];
  /** Pod IPs the test saw; any iptables line naming one, or the test subnet, is a leak. */
  podIps: string[];
  /** Prefix of the test subnet in iptables-save output, e.g. `10.98.0.`. */
  subnetPrefix: string;
  /**
   * Mount points that belong to the running daemon rather than to a pod (the shared mount of its
   * namespace root, `<state>/ns`); left out while the daemon runs, checked after it stops.
   */
  daemonOwnMounts?: string[];
}

export interface LeakSnapshot {
  mounts: string[];
  netnsPins: string[];
  conmon: string[];
  cgroups: string[];
  iptables: string[];
}

function unescapeMount(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function under(p: string, dirs: string[]): boolean {
  return dirs.some((d) => p === d || p.startsWith(d.endsWith('/') ? d : `${d}/`));
}

/**
 * What an e2e suite created: pod and container ids and pod IPs, for its leak checks and for
 * the cleanup in its after hook.
 */
export class Created {
  readonly podIds: string[] = [];
  readonly containerIds: string[] = [];
  readonly podIps = new Set<string>();

  constructor(private readonly subnetPrefix: string) {}

  /** Records a pod and the IP its status reports. */
  async pod(runtime: CriClient['runtime'], podId: string): Promise<void> {
    this.podIds.push(podId);
    const { status } = await runtime.PodSandboxStatus({ pod_sandbox_id: podId });
    if (status?.network?.ip) this.podIps.add(status.network.ip);
  }

  scope(daemon: Daemon): LeakScope {
    return {
      dirs: [daemon.root, daemon.state, daemon.base],
      ids: [...this.podIds, ...this.containerIds],
      podIps: [...this.podIps],
      subnetPrefix: this.subnetPrefix,
      daemonOwnMounts: [path.join(daemon.state, 'ns')],
    };
  }
}

/** Mount points under the daemon's dirs, from /proc/self/mountinfo (the host mount namespace). */
export function daemonMounts(dirs: string[]): { mounts: string[]; netnsPins: string[] } {
  const mounts: string[] = [];
  const netnsPins: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const mountPoint = unescapeMount(fields[4]);
    const sep = fields.indexOf('-');
    const fstype = sep >= 0 ? fields[sep + 1] : '?';
    if (!under(mountPoint, dirs)) continue;
    const entry = `${mountPoint} (${fstype})`;
    if (fstype === 'nsfs') netnsPins.push(entry);
    else mounts.push(entry);
  }
  return { mounts, netnsPins };
}

/** conmon processes whose arguments mention one of the daemon's dirs. */
export function conmonProcesses(dirs: string[]): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let args: string[];
    try {
      args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue;
    }
    if (args.length === 0 || path.basename(args[0]) !== 'conmon') continue;
    if (args.some((a) => dirs.some((d) => a.includes(d)))) out.push(`pid ${pid}: ${args.join(' ').slice(0, 300)}`);
  }
  return out;
}

/** cgroup directories (any v1 hierarchy or the unified tree) whose name contains one of `ids`. */
export function cgroupsNamed(ids: string[], maxDepth = 7): string[] {
  if (ids.length === 0) return [];
  const out: string[] = [];
  const walk = (dir: string, depth: number) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (ids.some((id) => e.name.includes(id))) out.push(p);
      if (depth < maxDepth) walk(p, depth + 1);
    }
  };
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    const root = path.join('/sys/fs/cgroup', h);
    // Co-mounted controllers appear twice (cpu and cpuacct are symlinks to cpu,cpuacct).
    if (fs.lstatSync(root).isSymbolicLink()) continue;
    walk(root, 0);
  }
  return out.sort();
}

/** iptables-save lines (all tables) naming a pod IP or the test subnet. */
export function iptablesLines(podIps: string[], subnetPrefix: string): string[] {
  const r = spawnSync('iptables-save', [], { encoding: 'utf8' });
  if (r.status !== 0) return [`iptables-save failed: ${r.stderr}`];
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .filter((l) => l.includes(subnetPrefix) || podIps.some((ip) => new RegExp(`\\b${ip.replace(/\./g, '\\.')}\\b`).test(l)));
}

export function snapshotLeaks(scope: LeakScope): LeakSnapshot {
  const { mounts, netnsPins } = daemonMounts(scope.dirs);
  const own = scope.daemonOwnMounts ?? [];
  return {
    mounts: mounts.filter((m) => !own.some((o) => m.startsWith(`${o} (`))),
    netnsPins,
    conmon: conmonProcesses(scope.dirs),
    cgroups: cgroupsNamed(scope.ids),
    iptables: iptablesLines(scope.podIps, scope.subnetPrefix),
  };
}

/**
 * What is in `now` and was not in `baseline`, per kind. The baseline keeps rules a crashed
 * earlier run left (they are reported by the caller, not blamed on this run).
 */
export function newLeaks(baseline: LeakSnapshot, now: LeakSnapshot): Partial<LeakSnapshot> {
  const out: Partial<LeakSnapshot> = {};
  for (const k of Object.keys(now) as (keyof LeakSnapshot)[]) {
    const fresh = now[k].filter((x) => !baseline[k].includes(x));
    if (fresh.length > 0) out[k] = fresh;
  }
  return out;
}

/** A readable report, or '' when nothing leaked. */
export function describeLeaks(leaks: Partial<LeakSnapshot>): string {
  return Object.entries(leaks)
    .map(([k, v]) => `${k}:\n  ${v.join('\n  ')}`)
    .join('\n');
}

export const EMPTY_SNAPSHOT: LeakSnapshot = { mounts: [], netnsPins: [], conmon: [], cgroups: [], iptables: [] };

/**
 * Polls for a few seconds (conmon exits and cgroup removal can trail the RPC that caused them),
 * then returns the leaks that remain.
 */
export async function waitNoLeaks(scope: LeakScope, baseline: LeakSnapshot = EMPTY_SNAPSHOT, timeoutMs = 5_000): Promise<Partial<LeakSnapshot>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const leaks = newLeaks(baseline, snapshotLeaks(scope));
    if (Object.keys(leaks).length === 0 || Date.now() > until) return leaks;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Best-effort end of an e2e file: removes the pods it made through the daemon, then lazily
 * unmounts whatever of the daemon's mounts and netns pins is still there, so a failed test
 * leaves nothing on the machine. The files' last test is what asserts a clean run.
 */
export async function removePodsAndLeftovers(
  runtime: {
    StopPodSandbox(req: { pod_sandbox_id: string }, opts?: { timeoutMs?: number }): Promise<unknown>;
    RemovePodSandbox(req: { pod_sandbox_id: string }, opts?: { timeoutMs?: number }): Promise<unknown>;
  },
  podIds: Iterable<string>,
  scope: LeakScope,
): Promise<void> {
  for (const id of podIds) {
    await runtime.StopPodSandbox({ pod_sandbox_id: id }, { timeoutMs: 30_000 }).catch(() => undefined);
    await runtime.RemovePodSandbox({ pod_sandbox_id: id }, { timeoutMs: 30_000 }).catch(() => undefined);
  }
  const left = snapshotLeaks(scope);
  // Listed as "<mountpoint> (<detail>)"; innermost first.
  for (const m of [...left.mounts, ...left.netnsPins].map((x) => x.replace(/ \([^)]*\)$/, '')).reverse()) {
    spawnSync('umount', ['-l', m], { stdio: 'ignore' });
  }
}

/** The nat table as iptables-save prints it ('' without iptables). */
export function natTable(): string {
  const r = spawnSync('iptables-save', ['-t', 'nat'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout : '';
}

/** Splits an iptables-save rule into arguments, keeping quoted comments whole. */
export function splitRule(rule: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) {
    // The group of the alternative that did not match is undefined, which RegExpExecArray's type hides.
    const groups: (string | undefined)[] = m;
    const quoted = groups[1];
    const bare = groups[2];
    out.push(quoted !== undefined ? quoted.replace(/\\"/g, '"') : (bare ?? ''));
  }
  return out;
}

/**
 * portmap creates the CNI-HOSTPORT-* base chains (and jumps to them) on first use and never
 * removes them. Those a test run created are removed again; chains that existed before stay,
 * as another runtime on this host may be using them.
 */
export function removeHostportChainsCreatedSince(natBefore: string): void {
  const nat = natTable();
  const base = ['CNI-HOSTPORT-DNAT', 'CNI-HOSTPORT-MASQ', 'CNI-HOSTPORT-SETMARK'];
  const created = base.filter((c) => !natBefore.includes(`:${c} `) && nat.includes(`:${c} `));
  if (created.length === 0) return;
  for (const line of nat.split('\n')) {
    if (line.startsWith('-A ') && created.some((c) => line.endsWith(`-j ${c}`))) {
      spawnSync('iptables', ['-t', 'nat', ...splitRule(line.replace(/^-A /, '-D '))], { stdio: 'ignore' });
    }
  }
  for (const c of created) spawnSync('iptables', ['-t', 'nat', '-F', c], { stdio: 'ignore' });
  for (const c of created) spawnSync('iptables', ['-t', 'nat', '-X', c], { stdio: 'ignore' });
}
