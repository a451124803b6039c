import fs from 'node:fs';
import path from 'node:path';
import type { CgroupDriver } from '../cgroups/paths';
import { failed, found, type Finding } from './finding';

export interface CgroupLayout {
  /** 2 when /sys/fs/cgroup is the unified tree; 1 for v1 and hybrid hosts. */
  version: 1 | 2;
  /** v1 controllers plus a v2 tree at <root>/unified. */
  hybrid: boolean;
  /** Controllers pods can be limited with: v2 cgroup.controllers, or the mounted v1 ones. */
  controllers: string[];
  /** Controllers enabled in a hybrid host's v2 tree (crun refuses such a host). */
  unifiedControllers: string[];
}

function words(file: string): string[] | undefined {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split(/\s+/)
      .filter((w) => w !== '');
  } catch {
    return undefined;
  }
}

/** Reads the layout from the files under `root` (a parameter so tests can hand a v2 tree). */
export function readCgroupLayout(root = '/sys/fs/cgroup'): CgroupLayout {
  const v2 = words(path.join(root, 'cgroup.controllers'));
  if (v2) return { version: 2, hybrid: false, controllers: v2, unifiedControllers: [] };
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(root);
  } catch {
    // No cgroup filesystem at all: reported below as no controllers.
  }
  const controllers = new Set(entries.flatMap((e) => e.split(',')).filter((e) => e !== 'unified' && e !== 'systemd'));
  const unified = words(path.join(root, 'unified', 'cgroup.controllers'));
  return { version: 1, hybrid: unified !== undefined, controllers: [...controllers].sort(), unifiedControllers: unified ?? [] };
}

/** systemd's own test for "booted with systemd" (sd_booted). */
export function systemdRunning(runDir = '/run/systemd/system'): boolean {
  return fs.existsSync(runDir);
}

const NEEDED = ['cpu', 'memory', 'pids'];

/** The cgroup layout and whether the configured driver can work on it. */
export function probeCgroups(layout: CgroupLayout, driver: CgroupDriver, systemd: boolean): Finding {
  const shape =
    layout.version === 2
      ? 'v2 (unified)'
      : layout.hybrid
        ? `v1 (hybrid: controllers on v1, a v2 tree at /sys/fs/cgroup/unified${layout.unifiedControllers.length ? ` with ${layout.unifiedControllers.join(' ')}` : ''})`
        : 'v1';
  const missing = NEEDED.filter((c) => !layout.controllers.includes(c));
  const base = `${shape}; driver ${driver}; controllers ${layout.controllers.join(' ') || 'none'}`;
  if (layout.controllers.length === 0) return failed('cgroups', `${base}: no cgroup controllers are mounted`, true);
  if (driver === 'systemd' && !systemd) {
    return failed('cgroups', `${base}: cgroup_driver = "systemd" needs systemd as init (no /run/systemd/system); use "cgroupfs" here`, true);
  }
  if (missing.length > 0) return failed('cgroups', `${base}: missing ${missing.join(', ')}, so limits on them are refused by the runtime`);
  const advice =
    driver === 'cgroupfs' && systemd && layout.version === 2
      ? '; systemd runs this host: cgroup_driver = "systemd" (and the kubelet\'s cgroupDriver: systemd) is the usual choice'
      : '';
  return found('cgroups', base + advice);
}
