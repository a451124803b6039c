// /proc/self/mountinfo is the one authoritative answer to "is this path a mount point": a bind
// mount of a directory on its own filesystem keeps st_dev, so stat() comparisons cannot tell.

import fs from 'node:fs';

export interface MountInfo {
  id: number;
  parentId: number;
  root: string;
  mountPoint: string;
  /** Optional fields such as `shared:12` or `master:3`, which carry the propagation type. */
  optional: string[];
  fsType: string;
  source: string;
  superOptions: string;
}

// The kernel escapes space, tab, newline and backslash in paths as three-digit octal.
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0) continue;
    out.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      root: unescape(fields[3]),
      mountPoint: unescape(fields[4]),
      optional: fields.slice(6, sep),
      fsType: fields[sep + 1],
      source: unescape(fields[sep + 2]),
      superOptions: fields[sep + 3] ?? '',
    });
  }
  return out;
}

export function readMountInfo(): MountInfo[] {
  return parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** The mounts stacked on exactly this path, bottom first. */
export function mountsAt(mountPoint: string, mounts = readMountInfo()): MountInfo[] {
  return mounts.filter((m) => m.mountPoint === mountPoint);
}
