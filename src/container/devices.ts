import { promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError } from '../errors';
import type { Device__Output } from '../gen/runtime/v1/Device';
import type { OciDevice, OciDeviceCgroup } from './oci_types';

/** glibc's gnu_dev_major/gnu_dev_minor over a bigint st_rdev. */
function majorMinor(rdev: bigint): { major: number; minor: number } {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

async function deviceAt(hostPath: string, containerPath: string): Promise<OciDevice | undefined> {
  const st = await fs.lstat(hostPath, { bigint: true });
  const type = st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : undefined;
  if (!type) return undefined;
  return {
    type,
    path: containerPath,
    ...majorMinor(st.rdev),
    fileMode: Number(st.mode & 0o777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
  };
}

/** Directories under /dev that hold no devices a container should get (containerd skips them too). */
const SKIP = new Set(['pts', 'shm', 'fd', 'mqueue', '.lxc', '.lxd-mounts', '.udev']);

/** Every device node under `dir`, for privileged containers (containerd's WithDevices of /dev). */
export async function hostDevices(dir = '/dev'): Promise<OciDevice[]> {
  const out: OciDevice[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const entry of await fs.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) {
        if (!SKIP.has(entry.name)) await walk(p);
      } else if (entry.isCharacterDevice() || entry.isBlockDevice()) {
        // /dev/console is the container's own terminal when it has one.
        if (p === '/dev/console') continue;
        const dev = await deviceAt(p, p).catch(() => undefined);
        if (dev) out.push(dev);
      }
    }
  };
  await walk(dir);
  return out;
}

/**
 * The CRI request's devices: a device node, or every node below a directory, at the container
 * path, with a cgroup rule allowing the requested access (rwm).
 */
export async function requestedDevices(devices: Device__Output[], what: string): Promise<{ devices: OciDevice[]; rules: OciDeviceCgroup[] }> {
  const out: OciDevice[] = [];
  const rules: OciDeviceCgroup[] = [];
  for (const d of devices) {
    const access = d.permissions || 'rwm';
    if (!/^[rwm]+$/.test(access)) throw new InvalidArgumentError(`${what}: device ${d.host_path}: invalid permissions ${JSON.stringify(access)}`);
    let st;
    try {
      st = await fs.stat(d.host_path);
    } catch (err) {
      throw new InvalidArgumentError(`${what}: device ${d.host_path}: ${(err as Error).message}`, { cause: err });
    }
    const found = st.isDirectory()
      ? (await hostDevices(d.host_path)).map((dev) => ({ ...dev, path: path.join(d.container_path, path.relative(d.host_path, dev.path)) }))
      : [await deviceAt(d.host_path, d.container_path || d.host_path)].filter((x): x is OciDevice => x !== undefined);
    if (found.length === 0) throw new InvalidArgumentError(`${what}: ${d.host_path} is not a device`);
    for (const dev of found) {
      out.push(dev);
      rules.push({ allow: true, type: dev.type as 'c' | 'b', major: dev.major, minor: dev.minor, access });
    }
  }
  return { devices: out, rules };
}
