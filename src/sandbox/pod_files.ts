import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DNSConfig__Output } from '../gen/runtime/v1/DNSConfig';
import { MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, mount, umount2 } from '../sys/libc';

export interface PodFiles {
  hostnamePath: string;
  hostsPath: string;
  resolvPath: string;
  shmPath: string;
}

/**
 * Host ids to own the pod's files: its user namespace's root, so that they are the pod's own
 * inside, as on a node without user namespaces (files of host uid 0 would show as nobody).
 */
export interface FileOwner {
  uid: number;
  gid: number;
}

const SHM_SIZE = '65536k';

/**
 * The files every container of a pod shares: hostname, resolv.conf and /dev/shm. The hosts file
 * names the pod's IP, so writePodHosts writes it once the network is up; this part runs beside
 * the CNI plugins.
 */
export async function writePodFiles(
  dir: string,
  opts: { hostname: string; dns: DNSConfig__Output | null; hostIpc: boolean; owner?: FileOwner },
): Promise<PodFiles> {
  const files: PodFiles = {
    hostnamePath: path.join(dir, 'hostname'),
    hostsPath: path.join(dir, 'hosts'),
    resolvPath: path.join(dir, 'resolv.conf'),
    shmPath: opts.hostIpc ? '/dev/shm' : podShmPath(dir),
  };
  await fs.writeFile(files.hostnamePath, `${opts.hostname}\n`, { mode: 0o644 });
  await fs.writeFile(files.resolvPath, resolvConf(opts.dns) ?? (await readOr('/etc/resolv.conf', '')), { mode: 0o644 });
  const { owner } = opts;
  if (owner) {
    await fs.chown(files.hostnamePath, owner.uid, owner.gid);
    await fs.chown(files.resolvPath, owner.uid, owner.gid);
  }
  if (!opts.hostIpc) {
    await fs.mkdir(files.shmPath, { recursive: true, mode: 0o1777 });
    const ids = owner ? `,uid=${owner.uid},gid=${owner.gid}` : '';
    mount('shm', files.shmPath, 'tmpfs', MS_NOSUID | MS_NODEV | MS_NOEXEC, `mode=1777,size=${SHM_SIZE}${ids}`);
  }
  return files;
}

/** The pod's /etc/hosts: the host's own for a host-network pod, else localhost and the pod IP. */
export async function writePodHosts(files: PodFiles, opts: { hostname: string; ip?: string; hostNetwork: boolean; owner?: FileOwner }): Promise<void> {
  const text = opts.hostNetwork ? await readOr('/etc/hosts', '') : podHosts(opts.hostname, opts.ip);
  await fs.writeFile(files.hostsPath, text, { mode: 0o644 });
  if (opts.owner) await fs.chown(files.hostsPath, opts.owner.uid, opts.owner.gid);
}

/** Unmounts the pod's /dev/shm; idempotent. */
export function releasePodShm(files: PodFiles | undefined): void {
  if (!files || files.shmPath === '/dev/shm') return;
  unmountPodShm(files.shmPath);
}

/** Where a pod with its own IPC namespace has its /dev/shm, under the pod's dir. */
export function podShmPath(dir: string): string {
  return path.join(dir, 'shm');
}

/** Unmounts a pod's own /dev/shm at `shmPath`; nothing mounted there is fine. */
export function unmountPodShm(shmPath: string): void {
  try {
    umount2(shmPath, MNT_DETACH);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== 'EINVAL' && code !== 'ENOENT') throw err;
  }
}

export function podHosts(hostname: string, ip: string | undefined): string {
  let out =
    '127.0.0.1\tlocalhost\n' +
    '::1\tlocalhost ip6-localhost ip6-loopback\n' +
    'fe00::0\tip6-localnet\n' +
    'fe00::0\tip6-mcastprefix\n' +
    'fe00::1\tip6-allnodes\n' +
    'fe00::2\tip6-allrouters\n';
  if (ip) out += `${ip}\t${hostname}\n`;
  return out;
}

/** resolv.conf from the pod's DNSConfig; undefined when it says nothing (the host's is used). */
export function resolvConf(dns: DNSConfig__Output | null): string | undefined {
  if (!dns || (dns.servers.length === 0 && dns.searches.length === 0 && dns.options.length === 0)) return undefined;
  let out = '';
  if (dns.searches.length) out += `search ${dns.searches.join(' ')}\n`;
  for (const s of dns.servers) out += `nameserver ${s}\n`;
  if (dns.options.length) out += `options ${dns.options.join(' ')}\n`;
  return out;
}

export function podHostname(configured: string): string {
  return configured || os.hostname();
}

async function readOr(file: string, fallback: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch {
    return fallback;
  }
}
