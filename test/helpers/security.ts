// Fixtures for the security-context e2e tests: a CNI network of their own (so they can run beside
// the pod and container tests), an image with its own users and groups, and readers for what a
// container reports about itself in /proc/self/status.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { busyboxLayer, pushImage, type LayerEntry, type PushedImage } from './images';
import { EXTRA_APPLETS, bridgeExists, makeCniFixture, type CniFixture, type TestNetwork } from './pods';

// Like pods.ts's network, this one never leaves the machine: a route to its own subnet only, no
// masquerading, and a bridge and subnet no other test file uses.
export const SC_SUBNET = '10.91.0.0/24';
export const SC_IP_PREFIX = '10.91.0.';
export const SC_GATEWAY_IP = '10.91.0.1';
export const SC_BRIDGE = 'tscri-sc0';
export const SC_CNI_NETWORK = 'tscri-sc';

const SC_NETWORK: TestNetwork = { bridge: SC_BRIDGE, subnet: SC_SUBNET, gateway: SC_GATEWAY_IP, name: SC_CNI_NETWORK };

export function scBridgeExists(): boolean {
  return bridgeExists(SC_BRIDGE);
}

/** pods.ts's fixture on tscri-sc0 / 10.91.0.0/24. */
export function makeSecurityCni(): CniFixture {
  return makeCniFixture(SC_NETWORK);
}

// ---- images --------------------------------------------------------------------------------

/** The image's own user: a name that only this image's /etc/passwd resolves. */
export const APP_USER = { name: 'app', uid: 1234, group: 'grp', gid: 2345, extraGroup: 'extra', extraGid: 3456 };

const SECURITY_APPLETS = [...new Set([...EXTRA_APPLETS, 'unshare', 'chown', 'sysctl', 'cut', 'sort', 'rm', 'readlink', 'whoami', 'awk'])];

function securityEntries(): LayerEntry[] {
  const u = APP_USER;
  return [
    { type: 'dir', path: 'bin' },
    ...SECURITY_APPLETS.map((a): LayerEntry => ({ type: 'symlink', path: `bin/${a}`, target: 'busybox' })),
    { type: 'dir', path: 'etc' },
    {
      type: 'file',
      path: 'etc/passwd',
      content: `root:x:0:0:root:/root:/bin/sh\n${u.name}:x:${u.uid}:${u.gid}:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n`,
    },
    {
      type: 'file',
      path: 'etc/group',
      // `grp` is the user's primary group; `extra` lists the user as a member.
      content: `root:x:0:\n${u.group}:x:${u.gid}:\n${u.extraGroup}:x:${u.extraGid}:nobody,${u.name}\nother:x:4567:nobody\nnogroup:x:65534:\n`,
    },
    { type: 'dir', path: 'home/app', uid: u.uid, gid: u.gid },
  ];
}

/** busybox plus the applets the security tests run, with APP_USER in /etc/passwd and /etc/group. */
export async function pushSecurityImage(registryHost: string, repo: string, user?: string): Promise<PushedImage> {
  return pushImage(registryHost, repo, 'v1', {
    layers: [await busyboxLayer(), { entries: securityEntries() }],
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], ...(user !== undefined ? { User: user } : {}) },
  });
}

// ---- capabilities and /proc/self/status ----------------------------------------------------

// Bit numbers from linux/capability.h.
export const CAP_BITS: Partial<Record<string, number>> = {
  CHOWN: 0,
  DAC_OVERRIDE: 1,
  DAC_READ_SEARCH: 2,
  FOWNER: 3,
  FSETID: 4,
  KILL: 5,
  SETGID: 6,
  SETUID: 7,
  SETPCAP: 8,
  LINUX_IMMUTABLE: 9,
  NET_BIND_SERVICE: 10,
  NET_BROADCAST: 11,
  NET_ADMIN: 12,
  NET_RAW: 13,
  IPC_LOCK: 14,
  IPC_OWNER: 15,
  SYS_MODULE: 16,
  SYS_RAWIO: 17,
  SYS_CHROOT: 18,
  SYS_PTRACE: 19,
  SYS_PACCT: 20,
  SYS_ADMIN: 21,
  SYS_BOOT: 22,
  SYS_NICE: 23,
  SYS_RESOURCE: 24,
  SYS_TIME: 25,
  SYS_TTY_CONFIG: 26,
  MKNOD: 27,
  LEASE: 28,
  AUDIT_WRITE: 29,
  AUDIT_CONTROL: 30,
  SETFCAP: 31,
};

/** containerd 1.x's (and Docker's) default capability set, which tscri grants too. */
export const CONTAINERD_DEFAULT_CAPS = [
  'CHOWN',
  'DAC_OVERRIDE',
  'FSETID',
  'FOWNER',
  'MKNOD',
  'NET_RAW',
  'SETGID',
  'SETUID',
  'SETFCAP',
  'SETPCAP',
  'NET_BIND_SERVICE',
  'SYS_CHROOT',
  'KILL',
  'AUDIT_WRITE',
];

export function capMask(names: string[]): bigint {
  let m = 0n;
  for (const n of names) {
    const bit = CAP_BITS[n];
    if (bit === undefined) throw new Error(`unknown capability ${n}`);
    m |= 1n << BigInt(bit);
  }
  return m;
}

export function hexMask(m: bigint): string {
  return m.toString(16).padStart(16, '0');
}

/** The `Key:\tvalue` lines of a /proc/<pid>/status text. */
export function parseStatus(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (m) out[m[1]] = m[2].trim();
  }
  return out;
}

/** This process's capability bounding set; the daemon it starts inherits the same. */
export function ownBoundingSet(): bigint {
  const st = parseStatus(fs.readFileSync('/proc/self/status', 'utf8'));
  return BigInt(`0x${st.CapBnd}`);
}

// ---- cgroups -------------------------------------------------------------------------------

/** Creates a v1 pids cgroup at `rel` (relative to the hierarchy root) with pids.max; returns its dir. */
export function makePidsCgroup(rel: string, max: number): string {
  const dir = path.join('/sys/fs/cgroup/pids', rel);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'pids.max'), String(max));
  return dir;
}
