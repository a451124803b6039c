// Which uid, gid and supplementary groups a container's process runs as, from the CRI security
// context and the image's USER, resolved against the image's own /etc/passwd and /etc/group
// (never the host's: a name means what the image says it means).

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { InvalidArgumentError } from '../errors';
import type { LinuxContainerSecurityContext__Output } from '../gen/runtime/v1/LinuxContainerSecurityContext';

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Sorted, without duplicates, always holding `gid` (containerd's ensureAdditionalGids). */
  additionalGids: number[];
  /** The passwd name of the user when the image knows it. */
  username?: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const MAX_ID = 0xffffffff;
const NUMERIC = /^\d+$/;

function parseId(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_ID) throw new InvalidArgumentError(`${what} ${JSON.stringify(text)} is out of range`);
  return n;
}

/**
 * The path of `target` (absolute, inside the container) on the host, following symlinks as the
 * container would see them: an absolute link target restarts at the rootfs and `..` never
 * climbs above it, so an image cannot make the daemon read a host file.
 */
export async function resolveInRoot(rootfs: string, target: string): Promise<string> {
  const root = path.resolve(rootfs);
  const pending = target.split('/').filter((p) => p && p !== '.');
  const done: string[] = [];
  let links = 0;
  for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
    if (part === '..') {
      done.pop();
      continue;
    }
    const candidate = path.join(root, ...done, part);
    let link: string | undefined;
    try {
      const st = await fsp.lstat(candidate);
      if (st.isSymbolicLink()) link = await fsp.readlink(candidate);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (link === undefined) {
      done.push(part);
      continue;
    }
    // ELOOP's limit in the kernel (MAXSYMLINKS).
    if (++links > 40) throw new InvalidArgumentError(`too many symbolic links resolving ${target} in the image`);
    if (link.startsWith('/')) done.length = 0;
    pending.unshift(...link.split('/').filter((p) => p && p !== '.'));
  }
  return path.join(root, ...done);
}

/** One of the image's account files as the container sees it; null when the image has none. */
export type ImageFileReader = (file: '/etc/passwd' | '/etc/group') => Promise<string | null>;

/** Reads the account files from a mounted rootfs. */
export function rootfsFiles(rootfs: string): ImageFileReader {
  return (file) => readImageFile(rootfs, file);
}

async function readImageFile(rootfs: string, file: string): Promise<string | null> {
  try {
    return await fsp.readFile(await resolveInRoot(rootfs, file), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // An image without the file (scratch, distroless) simply has no names to resolve.
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}

// Field layout of passwd(5) and group(5); malformed lines are skipped, as libc's
// getpwent does, rather than failing the container.
function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 4 || !NUMERIC.test(f[2]) || !NUMERIC.test(f[3])) continue;
    out.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]) });
  }
  return out;
}

function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 3 || !NUMERIC.test(f[2])) continue;
    out.push({
      name: f[0],
      gid: Number(f[2]),
      members: (f[3] ?? '')
        .split(',')
        .map((m) => m.trim())
        .filter(Boolean),
    });
  }
  return out;
}

/**
 * The user string to resolve, in containerd's order (internal/cri/server/container_create.go,
 * util.GenerateUserString): run_as_username, else run_as_user, each with run_as_group as the
 * group; else the image's USER. A run_as_group without run_as_user or run_as_username is
 * refused, as containerd does and critest's "RunAsGroup is set without RunAsUser" expects.
 */
function userString(imageUser: string | undefined, sc: LinuxContainerSecurityContext__Output | null): { user: string; group?: string } {
  const runAsGroup = sc?.run_as_group ? sc.run_as_group.value : undefined;
  if (runAsGroup !== undefined && !sc?.run_as_user && !sc?.run_as_username) {
    throw new InvalidArgumentError('run_as_group is set without run_as_user or run_as_username');
  }
  let user: string;
  let group: string | undefined;
  if (sc?.run_as_username) user = sc.run_as_username;
  else if (sc?.run_as_user) user = sc.run_as_user.value;
  else {
    const spec = imageUser ?? '';
    const parts = spec.split(':');
    if (parts.length > 2) throw new InvalidArgumentError(`invalid image USER ${JSON.stringify(spec)}`);
    user = parts[0] || '0';
    group = parts.length === 2 && parts[1] ? parts[1] : undefined;
  }
  if (runAsGroup !== undefined) group = runAsGroup;
  return { user, group };
}

/**
 * Resolves the process identity the way containerd's oci.WithUser / WithAdditionalGIDs do
 * (pkg/oci/spec_opts.go): a numeric uid needs no passwd entry (gid 0 when it has none), a name
 * must exist in the image; the primary gid comes from passwd unless a group is given; the
 * supplementary groups are the image's /etc/group memberships of that user (unless the policy
 * is Strict, KEP-3619) plus the CRI supplemental_groups.
 */
export async function resolveUser(
  files: ImageFileReader,
  imageUser: string | undefined,
  sc: LinuxContainerSecurityContext__Output | null,
): Promise<ResolvedUser> {
  const { user, group } = userString(imageUser, sc);
  const needPasswd = !NUMERIC.test(user) || group === undefined || sc?.supplemental_groups_policy !== 'Strict';
  const passwdText = needPasswd ? await files('/etc/passwd') : null;
  const passwd = passwdText === null ? [] : parsePasswd(passwdText);

  let uid: number;
  let entry: PasswdEntry | undefined;
  if (NUMERIC.test(user)) {
    uid = parseId(user, 'uid');
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === user);
    if (!entry) throw new InvalidArgumentError(`user ${JSON.stringify(user)} not found in the image's /etc/passwd`);
    uid = entry.uid;
  }

  let groups: GroupEntry[] | undefined;
  const loadGroups = async (): Promise<GroupEntry[]> => {
    if (!groups) {
      const text = await files('/etc/group');
      groups = text === null ? [] : parseGroup(text);
    }
    return groups;
  };

  let gid: number;
  if (group === undefined) gid = entry?.gid ?? 0;
  else if (NUMERIC.test(group)) gid = parseId(group, 'gid');
  else {
    const g = (await loadGroups()).find((x) => x.name === group);
    if (!g) throw new InvalidArgumentError(`group ${JSON.stringify(group)} not found in the image's /etc/group`);
    gid = g.gid;
  }

  const extra = new Set<number>([gid]);
  const username = entry?.name;
  if (username !== undefined && sc?.supplemental_groups_policy !== 'Strict') {
    // A group named like the user is its primary group, not a supplementary one
    // (containerd's WithAdditionalGIDs filter).
    for (const g of await loadGroups()) {
      if (g.name !== username && g.members.includes(username)) extra.add(g.gid);
    }
  }
  for (const s of sc?.supplemental_groups ?? []) extra.add(parseId(s, 'supplemental group'));

  return { uid, gid, additionalGids: [...extra].sort((a, b) => a - b), ...(username !== undefined ? { username } : {}) };
}
