// Where a container's cgroup lives: the OCI linux.cgroupsPath we hand to runc, and the
// directories that path names under each mounted hierarchy.

import fs from 'node:fs';
import path from 'node:path';
import { readMountInfo } from '../sys/mountinfo';

export type CgroupVersion = 1 | 2;
export type CgroupDriver = 'cgroupfs' | 'systemd';

const CGROUP_ROOT = '/sys/fs/cgroup';
let version: CgroupVersion | undefined;

/**
 * 2 on a unified host. A hybrid host (v1 controllers plus an empty v2 tree under
 * /sys/fs/cgroup/unified, like this test machine) is 1: its controllers, and therefore every
 * limit and statistic, live in the v1 hierarchies. Detected once: it cannot change while we run.
 */
export function cgroupVersion(): CgroupVersion {
  version ??= fs.existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers')) ? 2 : 1;
  return version;
}

/**
 * The OCI linux.cgroupsPath for a container.
 * cgroupfs: an absolute path below the hierarchy roots, `<parent or /tscri>/<id>`.
 * systemd: runc's `slice:prefix:name`, making the container the transient unit
 * `tscri-<id>.scope` in the pod's slice; the kubelet sends that slice as the parent
 * (`kubepods-burstable-pod<uid>.slice`), and a path-style parent keeps only its last part.
 */
export function containerCgroupsPath(parent: string, id: string, driver: CgroupDriver): string {
  if (!id || id.includes('/') || id.includes(':')) throw new Error(`invalid container id for a cgroup: ${JSON.stringify(id)}`);
  if (driver === 'cgroupfs') {
    // Joining onto "/" clamps any ".." in the parent at the hierarchy root.
    return path.posix.join('/', parent || '/tscri', id);
  }
  const slice = parent ? path.posix.basename(parent) : 'system.slice';
  if (!slice.endsWith('.slice')) {
    throw new Error(`cgroup parent ${JSON.stringify(parent)} is not a systemd slice (the systemd cgroup driver needs one)`);
  }
  expandSlice(slice);
  return `${slice}:tscri:${id}`;
}

/**
 * systemd's slice naming: `a-b-c.slice` is nested as /a.slice/a-b.slice/a-b-c.slice, and
 * `-.slice` is the root.
 */
export function expandSlice(slice: string): string {
  if (!slice.endsWith('.slice') || slice.includes('/')) throw new Error(`invalid systemd slice ${JSON.stringify(slice)}`);
  const name = slice.slice(0, -'.slice'.length);
  if (name === '-') return '/';
  if (name === '' || name.startsWith('-') || name.endsWith('-') || name.includes('--')) {
    throw new Error(`invalid systemd slice ${JSON.stringify(slice)}`);
  }
  let out = '';
  let prefix = '';
  for (const part of name.split('-')) {
    prefix = prefix ? `${prefix}-${part}` : part;
    out += `/${prefix}.slice`;
  }
  return out;
}

/** The path of a cgroupsPath relative to a hierarchy root, as runc resolves it. */
export function cgroupRelativePath(cgroupsPath: string, driver: CgroupDriver): string {
  if (driver === 'cgroupfs') return path.posix.join('/', cgroupsPath);
  const parts = cgroupsPath.split(':');
  if (parts.length !== 3) throw new Error(`invalid systemd cgroupsPath ${JSON.stringify(cgroupsPath)}: want slice:prefix:name`);
  const [slice, prefix, name] = parts;
  const unit = name.endsWith('.slice') ? name : prefix ? `${prefix}-${name}.scope` : `${name}.scope`;
  return path.posix.join(expandSlice(slice || '-.slice'), unit);
}

export interface Hierarchies {
  /** Mount point of the cgroup2 tree: the whole tree on v2, the controller-less one on hybrid. */
  unified?: string;
  /** v1 controller (or `name=systemd`) → mount point; co-mounted controllers share one. */
  v1: Map<string, string>;
}

const V1_CONTROLLERS = new Set([
  'cpu',
  'cpuacct',
  'cpuset',
  'memory',
  'pids',
  'blkio',
  'devices',
  'freezer',
  'net_cls',
  'net_prio',
  'perf_event',
  'hugetlb',
  'rdma',
  'misc',
]);

let hierarchies: Hierarchies | undefined;

/** Mounted cgroup hierarchies, from mountinfo; read once. */
export function cgroupHierarchies(): Hierarchies {
  if (hierarchies) return hierarchies;
  const found: Hierarchies = { v1: new Map() };
  for (const m of readMountInfo()) {
    // Only trees mounted at their root: a cgroup namespace or a bind of a subtree would shift paths.
    if (m.root !== '/') continue;
    if (m.fsType === 'cgroup2') {
      if (!found.unified || m.mountPoint === CGROUP_ROOT) found.unified = m.mountPoint;
    } else if (m.fsType === 'cgroup') {
      for (const opt of m.superOptions.split(',')) {
        // Super options mix controllers with flags (clone_children, noprefix, release_agent=…).
        if (!V1_CONTROLLERS.has(opt) && !opt.startsWith('name=')) continue;
        if (!found.v1.has(opt)) found.v1.set(opt, m.mountPoint);
      }
    }
  }
  hierarchies = found;
  return found;
}

/** The directory of a cgroup in one v1 controller's hierarchy, or undefined if not mounted. */
export function v1Dir(controller: string, rel: string): string | undefined {
  const mp = cgroupHierarchies().v1.get(controller);
  return mp === undefined ? undefined : path.join(mp, rel);
}

/** The directory of a cgroup in the unified hierarchy. */
export function v2Dir(rel: string): string {
  return path.join(cgroupHierarchies().unified ?? CGROUP_ROOT, rel);
}
