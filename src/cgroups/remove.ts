// Removing a container's cgroup after the OCI runtime is done with it. runc deletes it on
// `runc delete`, but not when it was killed mid-way or the container never started; the CRI
// wants RemoveContainer to leave nothing behind either way.

import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cgroupHierarchies, cgroupRelativePath, v2Dir, cgroupVersion, type CgroupDriver } from './paths';

// A cgroup whose last task has just exited can still be busy for a moment (the kernel frees it
// asynchronously); runc retries for the same reason.
const BUSY_RETRIES = 5;

async function rmdirTree(dir: string): Promise<void> {
  let entries: fs.Dirent[];
  try {
    entries = await fs.promises.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  // Children first: rmdir of a cgroup with child cgroups is EBUSY (a container may nest its own).
  for (const e of entries) if (e.isDirectory()) await rmdirTree(path.join(dir, e.name));
  for (let attempt = 0; ; attempt++) {
    try {
      await fs.promises.rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || attempt >= BUSY_RETRIES) throw err;
      await sleep(10 * 2 ** attempt);
    }
  }
}

/** Removes the cgroup in every hierarchy it may exist in. Idempotent. */
export async function removeCgroup(cgroupsPath: string, driver: CgroupDriver): Promise<void> {
  const rel = cgroupRelativePath(cgroupsPath, driver);
  if (rel === '/') throw new Error(`refusing to remove the root cgroup (cgroupsPath ${JSON.stringify(cgroupsPath)})`);
  const dirs = new Set<string>();
  const h = cgroupHierarchies();
  if (cgroupVersion() === 2) {
    dirs.add(v2Dir(rel));
  } else {
    for (const mp of h.v1.values()) dirs.add(path.join(mp, rel));
    // Hybrid hosts: systemd (and runc's systemd driver) also create the unit in the v2 tree.
    if (h.unified !== undefined) dirs.add(path.join(h.unified, rel));
  }
  const errors: string[] = [];
  for (const dir of dirs) {
    try {
      await rmdirTree(dir);
    } catch (err) {
      errors.push(`${dir}: ${(err as Error).message}`);
    }
  }
  if (errors.length > 0) throw new Error(`failed to remove cgroup ${cgroupsPath}: ${errors.join('; ')}`);
}
