// The OCI runtime spec (config.json) of a container, from its image config and the CRI request,
// following containerd's CRI plugin (internal/cri/server/container_create*.go,
// internal/cri/opts/spec*.go, pkg/oci/spec*.go) so workloads see what they would see there.
//
// buildSpec reads nothing from the host beyond the image's /etc/passwd and /etc/group, a
// Localhost seccomp profile, the list of loaded AppArmor profiles when one is asked for (and the
// HostFacts below, when the caller does not pass them). Work on host paths — creating missing
// bind sources, resolving their symlinks — is prepareMountSources, for the caller to run first.

import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, UnimplementedError, messageOf, withContext } from '../errors';
import type { ImageConfigFile } from '../image/manifest';
import type { ContainerConfig__Output } from '../gen/runtime/v1/ContainerConfig';
import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources';
import type { LinuxContainerSecurityContext__Output } from '../gen/runtime/v1/LinuxContainerSecurityContext';
import type { Mount__Output } from '../gen/runtime/v1/Mount';
import type { NamespaceMode__Output } from '../gen/runtime/v1/NamespaceMode';
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig';
import {
  OCI_VERSION,
  type OciCapabilities,
  type OciDevice,
  type OciLinux,
  type OciMount,
  type OciNamespace,
  type OciProcess,
  type OciResources,
  type OciSpec,
} from './oci_types';
import { hostDevices, requestedDevices } from './devices';
import { containerSeccomp, nativeArch, securityProfile } from './seccomp';
import { type ImageFileReader, resolveUser, rootfsFiles } from './user';
import { checkContainerUserns, type UsernsMappings } from '../sandbox/userns';

export { resolveUser, rootfsFiles } from './user';
export type { ResolvedUser } from './user';
export type { OciSpec } from './oci_types';

export interface SandboxInfo {
  id: string;
  hostname: string;
  config: PodSandboxConfig__Output;
  /** Pinned namespace files of the pod; absent when the pod uses the host's. */
  netns?: string;
  ipcns?: string;
  utsns?: string;
  /** The pod's shared pid namespace (/proc/<infra pid>/ns/pid), when namespace_options.pid is POD. */
  pidns?: string;
  /** Pod files bound into every container; '' when the pod has none. */
  hostsPath: string;
  resolvPath: string;
  hostnamePath: string;
  /** A tmpfs directory shared by the pod; absent → each container gets its own /dev/shm tmpfs. */
  shmPath?: string;
  /** The pod's own user namespace (pinned file) and its mappings, when hostUsers is false. */
  userns?: UsernsMappings & { path: string };
}

/** Facts about this host that change the spec; detected once when not given (tests pass them). */
export interface HostFacts {
  cgroupV2: boolean;
  /** /proc/sys/kernel/cap_last_cap: the highest capability number the kernel knows. */
  lastCap: number;
  /** The memory controller can limit swap (memory.swap.max / memory.memsw.limit_in_bytes). */
  swapAvailable: boolean;
  hugetlbAvailable: boolean;
  /** This process's own /proc/self/oom_score_adj. */
  oomScoreAdj: number;
  /**
   * This process's capability bounding set (CapBnd). A container cannot get a capability the
   * daemon lacks (runc fails with "unable to apply caps"), so privileged and ALL mean these;
   * containerd does the same with its own current capabilities.
   */
  boundingCaps?: bigint;
  /** The kernel filters syscalls (seccomp); assumed when not given. */
  seccompAvailable?: boolean;
  /** AppArmor is enabled in the kernel; assumed not when not given. */
  apparmorEnabled?: boolean;
  /** libseccomp's name of the native arch (amd64, arm64…); default: this process's. */
  arch?: string;
  /** uname -r, for kernel-version conditions in seccomp profiles; default: this host's. */
  kernelRelease?: string;
}

export interface SpecInput {
  id: string;
  rootfs: string;
  /**
   * The image's /etc/passwd and /etc/group; default: read from `rootfs`, which must then be
   * mounted before the spec is built.
   */
  imageFiles?: ImageFileReader;
  image: ImageConfigFile;
  config: ContainerConfig__Output;
  sandbox: SandboxInfo;
  cgroupsPath: string;
  /**
   * Never ask for an oom_score_adj below this process's own (containerd's
   * restrict_oom_score_adj): lowering it needs CAP_SYS_RESOURCE, which the daemon may lack.
   */
  restrictOomScoreAdj: boolean;
  /** The image name for the io.kubernetes.cri.image-name annotation; default: the CRI image spec. */
  imageName?: string;
  /** Mounts the runtime adds (image VOLUMEs…); a CRI mount on the same destination wins. */
  extraMounts?: Mount__Output[];
  /** The pid namespace of the target container, when namespace_options.pid is TARGET. */
  targetPidns?: string;
  host?: HostFacts;
}

// containerd 1.x's default set (pkg/oci/spec.go before v2.0, the same as Docker's). containerd
// v2.0 dropped MKNOD, NET_RAW, SETFCAP, SYS_CHROOT and AUDIT_WRITE; workloads written against
// Kubernetes' long-standing defaults (ping needs NET_RAW) still expect them.
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

// Capability numbers from linux/capability.h, to name every capability the kernel knows.
const CAPABILITY_NAMES: readonly string[] = [
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
  'SETPCAP',
  'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_ADMIN',
  'NET_RAW',
  'IPC_LOCK',
  'IPC_OWNER',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_CHROOT',
  'SYS_PTRACE',
  'SYS_PACCT',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_NICE',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'MKNOD',
  'LEASE',
  'AUDIT_WRITE',
  'AUDIT_CONTROL',
  'SETFCAP',
  'MAC_OVERRIDE',
  'MAC_ADMIN',
  'SYSLOG',
  'WAKE_ALARM',
  'BLOCK_SUSPEND',
  'AUDIT_READ',
  'PERFMON',
  'BPF',
  'CHECKPOINT_RESTORE',
].map((n) => `CAP_${n}`);

// containerd's populateDefaultUnixSpec lists (pkg/oci/spec.go): kernel interfaces that leak host
// information or allow host changes from inside a container.
export const DEFAULT_MASKED_PATHS: readonly string[] = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
  '/proc/scsi',
];

export const DEFAULT_READONLY_PATHS: readonly string[] = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const CRI_ANNOTATION = {
  containerType: 'io.kubernetes.cri.container-type',
  sandboxId: 'io.kubernetes.cri.sandbox-id',
  sandboxName: 'io.kubernetes.cri.sandbox-name',
  sandboxNamespace: 'io.kubernetes.cri.sandbox-namespace',
  sandboxUid: 'io.kubernetes.cri.sandbox-uid',
  containerName: 'io.kubernetes.cri.container-name',
  imageName: 'io.kubernetes.cri.image-name',
} as const;

function readTrimmed(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/**
 * Reads the HostFacts from /proc and /sys/fs/cgroup, with containerd's probes
 * (internal/cri/opts/spec_linux.go). Synchronous: a handful of tiny kernel files, read once.
 */
export function detectHostFacts(): HostFacts {
  const controllers = readTrimmed('/sys/fs/cgroup/cgroup.controllers');
  const cgroupV2 = controllers !== null;
  let swapAvailable: boolean;
  if (cgroupV2) {
    // memory.swap.max does not exist in the root cgroup, so look beside this process.
    const self = readTrimmed('/proc/self/cgroup') ?? '';
    const unified =
      self
        .split('\n')
        .find((l) => l.startsWith('0::'))
        ?.slice(3) ?? '/';
    swapAvailable = fs.existsSync(path.join('/sys/fs/cgroup', unified, 'memory.swap.max'));
  } else {
    swapAvailable = fs.existsSync('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes');
  }
  const hugetlbAvailable = cgroupV2 ? controllers.split(/\s+/).includes('hugetlb') : fs.existsSync('/sys/fs/cgroup/hugetlb');
  const lastCap = Number(readTrimmed('/proc/sys/kernel/cap_last_cap') ?? NaN);
  const oomScoreAdj = Number(readTrimmed('/proc/self/oom_score_adj') ?? NaN);
  const status = readTrimmed('/proc/self/status') ?? '';
  const capBnd = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status);
  // containerd's probes: seccomp.IsEnabled (the Seccomp: line exists since Linux 3.8) and
  // apparmor.HostSupports (securityfs has apparmor and the module parameter says Y).
  const apparmorEnabled = fs.existsSync('/sys/kernel/security/apparmor') && (readTrimmed('/sys/module/apparmor/parameters/enabled') ?? '').startsWith('Y');
  return {
    boundingCaps: capBnd ? BigInt(`0x${capBnd[1]}`) : undefined,
    seccompAvailable: /^Seccomp:/m.test(status),
    apparmorEnabled,
    arch: nativeArch(),
    kernelRelease: os.release(),
    cgroupV2,
    lastCap: Number.isInteger(lastCap) ? lastCap : CAPABILITY_NAMES.length - 1,
    swapAvailable,
    hugetlbAvailable,
    oomScoreAdj: Number.isInteger(oomScoreAdj) ? oomScoreAdj : 0,
  };
}

// These facts do not change while the daemon runs (oom_score_adj only if an operator changes
// it, and then a restart picks it up).
let cachedFacts: HostFacts | undefined;
function hostFacts(): HostFacts {
  cachedFacts ??= detectHostFacts();
  return cachedFacts;
}

/**
 * process.args with Kubernetes' rule (kubelet; containerd's WithProcessArgs, from moby's
 * daemon/commit.go): `command` replaces the image ENTRYPOINT and `args` its CMD; a command
 * without args does not pick up the image CMD; an ENTRYPOINT of [""] means none.
 */
export function processArgs(config: ContainerConfig__Output, image: ImageConfigFile, what = 'container'): string[] {
  let command = config.command;
  let args = config.args;
  if (command.length === 0) {
    if (args.length === 0) args = image.config?.Cmd ?? [];
    const entrypoint = image.config?.Entrypoint ?? [];
    if (!(entrypoint.length === 1 && entrypoint[0] === '')) command = entrypoint;
  }
  const out = [...command, ...args];
  if (out.length === 0) throw new InvalidArgumentError(`${what}: no command specified`);
  return out;
}

function envKey(entry: string): string {
  const eq = entry.indexOf('=');
  return eq < 0 ? entry : entry.slice(0, eq);
}

/**
 * containerd's replaceOrAppendEnvValues (pkg/oci/spec_opts.go): a later entry replaces an
 * earlier one with the same key in place, a new key is appended, and an entry without "="
 * removes the key.
 */
export function mergeEnv(base: string[], overrides: string[]): string[] {
  const out = [...base];
  for (const entry of overrides) {
    const key = envKey(entry);
    const at = out.findIndex((e) => envKey(e) === key);
    if (!entry.includes('=')) {
      if (at >= 0) out.splice(at, 1);
    } else if (at >= 0) out[at] = entry;
    else out.push(entry);
  }
  return out;
}

function buildEnv(input: SpecInput): string[] {
  const hostname = input.sandbox.hostname || os.hostname();
  // Order as containerd applies its options: default PATH, HOSTNAME, then image ENV and CRI
  // envs (the CRI overriding the image).
  let env = mergeEnv([DEFAULT_PATH_ENV], [`HOSTNAME=${hostname}`]);
  const cri = input.config.envs.map((kv) => `${kv.key}=${kv.value.toString('utf8')}`);
  env = mergeEnv(env, [...(input.image.config?.Env ?? []), ...cri]);
  return env;
}

function capName(raw: string, what: string): string {
  const upper = raw.toUpperCase();
  const name = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (!CAPABILITY_NAMES.includes(name)) throw new InvalidArgumentError(`${what}: unknown capability ${JSON.stringify(raw)}`);
  return name;
}

function hostCapabilities(host: HostFacts): string[] {
  const known = CAPABILITY_NAMES.slice(0, Math.min(host.lastCap, CAPABILITY_NAMES.length - 1) + 1);
  const bounding = host.boundingCaps;
  return bounding === undefined ? known : known.filter((_, bit) => ((bounding >> BigInt(bit)) & 1n) === 1n);
}

/**
 * containerd's WithCapabilities (internal/cri/opts/spec_opts.go): "ALL" in add or drop is
 * applied first, so {add: [ALL], drop: [CHOWN]} is everything but CHOWN. Inheritable and
 * ambient stay empty: a capability there survives execve into a non-root program
 * (CVE-2022-24769), and Kubernetes does not define ambient capabilities.
 */
function capabilities(sc: LinuxContainerSecurityContext__Output | null, host: HostFacts, what: string): OciCapabilities {
  let set: string[] = [...DEFAULT_CAPABILITIES];
  if (sc?.privileged) set = hostCapabilities(host);
  else if (sc?.capabilities) {
    const add = sc.capabilities.add_capabilities;
    const drop = sc.capabilities.drop_capabilities;
    const isAll = (c: string) => c.toUpperCase() === 'ALL';
    if (add.some(isAll)) set = hostCapabilities(host);
    if (drop.some(isAll)) set = [];
    for (const c of add.filter((c) => !isAll(c))) {
      const name = capName(c, what);
      if (!set.includes(name)) set.push(name);
    }
    const dropped = new Set(drop.filter((c) => !isAll(c)).map((c) => capName(c, what)));
    set = set.filter((c) => !dropped.has(c));
  }
  return { bounding: [...set], effective: [...set], permitted: [...set] };
}

function int64(value: string | undefined, field: string, what: string): number {
  if (!value) return 0;
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`${what}: ${field} ${JSON.stringify(value)} is not an integer`);
  return n;
}

/**
 * containerd's WithResources (internal/cri/opts/spec_linux_opts.go): zero means unset; with a
 * memory limit and no swap limit, swap equals the limit so the container cannot swap by
 * default; hugepage limits only where the hugetlb controller exists (containerd's
 * tolerate_missing_hugetlb_controller, on by default). Also the body of UpdateContainerResources
 * (`runc update --resources`), hence no device rules here.
 */
export function toOciResources(r: LinuxContainerResources__Output, host: HostFacts = hostFacts(), what = 'container'): OciResources {
  const out: OciResources = {};
  const cpu: NonNullable<OciResources['cpu']> = {};
  const period = int64(r.cpu_period, 'cpu_period', what);
  const quota = int64(r.cpu_quota, 'cpu_quota', what);
  const shares = int64(r.cpu_shares, 'cpu_shares', what);
  if (period) cpu.period = period;
  if (quota) cpu.quota = quota;
  if (shares) cpu.shares = shares;
  if (r.cpuset_cpus) cpu.cpus = r.cpuset_cpus;
  if (r.cpuset_mems) cpu.mems = r.cpuset_mems;
  if (Object.keys(cpu).length) out.cpu = cpu;

  const memory: NonNullable<OciResources['memory']> = {};
  const limit = int64(r.memory_limit_in_bytes, 'memory_limit_in_bytes', what);
  const swap = int64(r.memory_swap_limit_in_bytes, 'memory_swap_limit_in_bytes', what);
  if (limit) {
    memory.limit = limit;
    if (!swap && host.swapAvailable) memory.swap = limit;
  }
  if (swap && host.swapAvailable) memory.swap = swap;
  if (Object.keys(memory).length) out.memory = memory;

  if (host.hugetlbAvailable && r.hugepage_limits.length) {
    out.hugepageLimits = r.hugepage_limits.map((h) => ({ pageSize: h.page_size, limit: int64(h.limit, 'hugepage limit', what) }));
  }
  if (Object.keys(r.unified).length) out.unified = { ...r.unified };
  return out;
}

function resources(r: LinuxContainerResources__Output | null, host: HostFacts, privileged: boolean, what: string): OciResources {
  // Deny every device, then runc adds its default allow list (null, zero, full, random,
  // urandom, tty, ptmx, /dev/pts/*) for the nodes it creates itself — the same rule list
  // containerd writes. A privileged container may use every device (WithAllDevicesAllowed).
  return { devices: [{ allow: privileged, access: 'rwm' }], ...(r ? toOciResources(r, host, what) : {}) };
}

function oomScoreAdj(r: LinuxContainerResources__Output | null, input: SpecInput, host: HostFacts, what: string): number | undefined {
  // containerd sets it only when the request carries resources (WithOOMScoreAdj).
  if (!r) return undefined;
  const adj = int64(r.oom_score_adj, 'oom_score_adj', what);
  return input.restrictOomScoreAdj ? Math.max(adj, host.oomScoreAdj) : adj;
}

function namespaces(input: SpecInput, sc: LinuxContainerSecurityContext__Output | null, host: HostFacts, what: string): OciNamespace[] {
  const { sandbox } = input;
  const podNs = sandbox.config.linux?.security_context?.namespace_options ?? null;
  const ctrNs = sc?.namespace_options ?? podNs;
  const mode = (m: NamespaceMode__Output | undefined): NamespaceMode__Output => m ?? 'POD';
  checkContainerUserns(sandbox.userns, sc?.namespace_options, what);
  const out: OciNamespace[] = [];
  // runc joins the user namespace before the others whatever the order here; the pod's net,
  // IPC and UTS namespaces belong to it (sys/userns.ts).
  if (sandbox.userns) out.push({ type: 'user', path: sandbox.userns.path });

  // A NODE namespace is the host's: the container simply does not get a namespace of that type.
  switch (mode(ctrNs?.pid)) {
    case 'CONTAINER':
      out.push({ type: 'pid' });
      break;
    case 'POD':
      if (sandbox.pidns) out.push({ type: 'pid', path: sandbox.pidns });
      // No namespace_options at all reads as POD (the proto's zero value), but a sandbox
      // that was not asked for a shared pid namespace holds none: the container gets its own.
      else if (!ctrNs) out.push({ type: 'pid' });
      else throw new FailedPreconditionError(`${what}: pod sandbox ${sandbox.id} has no shared pid namespace`);
      break;
    case 'TARGET':
      if (!input.targetPidns) throw new InvalidArgumentError(`${what}: pid namespace of target container ${JSON.stringify(ctrNs?.target_id ?? '')} is unknown`);
      out.push({ type: 'pid', path: input.targetPidns });
      break;
    case 'NODE':
      break;
  }

  // IPC and network belong to the pod (the CRI has no per-container mode for them); a pod on
  // the host's has no pinned file to join.
  const ipcMode = mode(ctrNs?.ipc);
  if (ipcMode === 'CONTAINER') out.push({ type: 'ipc' });
  else if (ipcMode !== 'NODE' && sandbox.ipcns) out.push({ type: 'ipc', path: sandbox.ipcns });

  // containerd joins the sandbox's UTS namespace; a hostNetwork pod uses the host's
  // (and its hostname), as the kubelet expects.
  const netMode = mode(ctrNs?.network);
  if (netMode !== 'NODE' && sandbox.utsns) out.push({ type: 'uts', path: sandbox.utsns });

  out.push({ type: 'mount' });

  if (netMode === 'CONTAINER') out.push({ type: 'network' });
  else if (netMode !== 'NODE' && sandbox.netns) out.push({ type: 'network', path: sandbox.netns });

  // A cgroup namespace hides the host's hierarchy under /sys/fs/cgroup; containerd uses one on
  // cgroup v2 except for privileged containers (KEP "cgroups v2", containers/libpod#4363).
  if (host.cgroupV2 && !sc?.privileged) out.push({ type: 'cgroup' });
  return out;
}

// pkg/oci/mounts.go's defaults without /run (containerd's CRI plugin removes it: WithoutRunMount),
// plus the cgroup filesystem that internal/cri/opts adds.
function defaultMounts(privileged: boolean): OciMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // Privileged containers get writable sysfs and cgroupfs (oci.WithPrivileged).
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', privileged ? 'rw' : 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', privileged ? 'rw' : 'ro'] },
  ];
}

function cleanDest(p: string): string {
  return path.posix.normalize(p).replace(/(.)\/+$/, '$1');
}

/** A bind mount the runtime adds itself, in CRI form so the CRI rules apply to it. */
function runtimeMount(containerPath: string, hostPath: string, readonly: boolean): Mount__Output {
  return {
    container_path: containerPath,
    host_path: hostPath,
    readonly,
    selinux_relabel: false,
    propagation: 'PROPAGATION_PRIVATE',
    uidMappings: [],
    gidMappings: [],
    recursive_read_only: false,
    image: null,
    image_sub_path: '',
  };
}

/**
 * containerd's linuxContainerMounts: the pod's /etc/hostname, /etc/hosts, /etc/resolv.conf
 * (read-only with a read-only rootfs) and /dev/shm, each unless the container mounts its own.
 */
function sandboxMounts(input: SpecInput, sc: LinuxContainerSecurityContext__Output | null): Mount__Output[] {
  const { sandbox } = input;
  const ro = !!sc?.readonly_rootfs;
  const out: Mount__Output[] = [];
  if (sandbox.hostnamePath) out.push(runtimeMount('/etc/hostname', sandbox.hostnamePath, ro));
  if (sandbox.hostsPath) out.push(runtimeMount('/etc/hosts', sandbox.hostsPath, ro));
  if (sandbox.resolvPath) out.push(runtimeMount('/etc/resolv.conf', sandbox.resolvPath, ro));
  const ipc = sc?.namespace_options?.ipc ?? sandbox.config.linux?.security_context?.namespace_options?.ipc;
  if (ipc === 'NODE') out.push(runtimeMount('/dev/shm', '/dev/shm', false));
  else if (sandbox.shmPath) out.push(runtimeMount('/dev/shm', sandbox.shmPath, false));
  return out;
}

interface MountResult {
  mounts: OciMount[];
  rootfsPropagation?: OciLinux['rootfsPropagation'];
}

/**
 * containerd's WithMounts (internal/cri/opts/spec_linux_opts.go): CRI mounts, then runtime
 * mounts whose destination the CRI does not claim, ordered by depth so a parent never shadows
 * a child; default mounts give way to any of them on the same destination, and all of /dev/*
 * gives way to a mounted /dev.
 */
function buildMounts(input: SpecInput, sc: LinuxContainerSecurityContext__Output | null, what: string): MountResult {
  const cri = input.config.mounts;
  for (const m of cri) {
    // The container service mounts image volumes and rro clones (container/volumes.ts) and
    // passes them here as plain binds; one that reaches this point was not made.
    if (m.image) throw new UnimplementedError(`${what}: image volume at ${m.container_path} was not mounted by the daemon`);
    if (!m.container_path || !m.container_path.startsWith('/')) {
      throw new InvalidArgumentError(`${what}: mount container_path ${JSON.stringify(m.container_path)} must be absolute`);
    }
    if (!m.host_path) throw new InvalidArgumentError(`${what}: mount at ${m.container_path} has no host_path`);
    // runc 1.1 has no "rro" option, and a plain read-only bind would leave submounts
    // writable, which is what the caller asked not to.
    if (m.recursive_read_only) {
      throw new UnimplementedError(`${what}: recursive read-only mount at ${m.container_path} was not made by the daemon`);
    }
  }
  const criDests = new Set(cri.map((m) => cleanDest(m.container_path)));
  const extra = [...sandboxMounts(input, sc), ...(input.extraMounts ?? [])].filter((m) => !criDests.has(cleanDest(m.container_path)));
  const supplied = [...cri, ...extra];
  const depth = (m: Mount__Output) => (cleanDest(m.container_path).match(/\//g) ?? []).length;
  // Array.prototype.sort is stable: equal depths keep the request's order.
  supplied.sort((a, b) => depth(a) - depth(b));

  const dests = new Set(supplied.map((m) => cleanDest(m.container_path)));
  const mounts = defaultMounts(!!sc?.privileged).filter((m) => !dests.has(m.destination) && !(dests.has('/dev') && m.destination.startsWith('/dev/')));

  let rootfsPropagation: OciLinux['rootfsPropagation'];
  for (const m of supplied) {
    const options = ['rbind'];
    // Propagation other than private needs the container's rootfs to receive (rslave) or
    // share (rshared) events too, or the host mount's events stop at the root.
    switch (m.propagation) {
      case 'PROPAGATION_BIDIRECTIONAL':
        options.push('rshared');
        rootfsPropagation = 'rshared';
        break;
      case 'PROPAGATION_HOST_TO_CONTAINER':
        options.push('rslave');
        if (rootfsPropagation !== 'rshared') rootfsPropagation = 'rslave';
        break;
      default:
        options.push('rprivate');
    }
    options.push(m.readonly ? 'ro' : 'rw');
    mounts.push({ destination: m.container_path, type: 'bind', source: m.host_path, options });
  }
  return { mounts, rootfsPropagation };
}

// The profiles the kernel has loaded, one "name (mode)" per line.
const APPARMOR_PROFILES = '/sys/kernel/security/apparmor/profiles';

/**
 * process.apparmorProfile, after containerd's generateApparmorSpecOpts: no profile asked for, or
 * Unconfined, applies none; a privileged container gets none for RuntimeDefault; a Localhost
 * profile must already be loaded. Where AppArmor is off, RuntimeDefault has nothing to enforce
 * and is accepted, as CRI-O does (containerd refuses it), but a Localhost profile names a
 * confinement the workload counts on, so it is refused as containerd refuses it.
 */
async function apparmorProfile(sc: LinuxContainerSecurityContext__Output | null, host: HostFacts): Promise<string | undefined> {
  const choice = securityProfile(sc?.apparmor, sc?.apparmor_profile, 'apparmor');
  if (!choice || choice.type === 'Unconfined') return undefined;
  if (!host.apparmorEnabled) {
    if (choice.type === 'Localhost')
      throw new FailedPreconditionError(`apparmor profile ${JSON.stringify(choice.ref)} requested but AppArmor is not enabled on this host`);
    return undefined;
  }
  if (choice.type === 'RuntimeDefault') {
    if (sc?.privileged) return undefined;
    // containerd generates and loads its own default profile with apparmor_parser; tscri has
    // none, and running the container unconfined instead would be a silent downgrade.
    throw new UnimplementedError('the RuntimeDefault AppArmor profile is not supported yet; ask for Unconfined or a Localhost profile');
  }
  let loaded: string;
  try {
    loaded = await fsp.readFile(APPARMOR_PROFILES, 'utf8');
  } catch (err) {
    throw new Error(`failed to read the loaded AppArmor profiles: ${messageOf(err)}`, { cause: err });
  }
  if (!loaded.split('\n').some((line) => line.startsWith(`${choice.ref} (`))) {
    throw new FailedPreconditionError(`apparmor profile ${JSON.stringify(choice.ref)} is not loaded`);
  }
  return choice.ref;
}

function annotations(input: SpecInput): Record<string, string> {
  const meta = input.sandbox.config.metadata;
  return {
    [CRI_ANNOTATION.containerType]: 'container',
    [CRI_ANNOTATION.sandboxId]: input.sandbox.id,
    [CRI_ANNOTATION.sandboxNamespace]: meta?.namespace ?? '',
    [CRI_ANNOTATION.sandboxUid]: meta?.uid ?? '',
    [CRI_ANNOTATION.sandboxName]: meta?.name ?? '',
    [CRI_ANNOTATION.containerName]: input.config.metadata?.name ?? '',
    [CRI_ANNOTATION.imageName]: input.imageName ?? (input.config.image?.user_specified_image || input.config.image?.image || ''),
  };
}

/** The container's OCI runtime spec (config.json), ociVersion 1.0.2. */
export async function buildSpec(input: SpecInput): Promise<OciSpec> {
  const name = input.config.metadata?.name;
  const what = name ? `container ${JSON.stringify(name)} (${input.id})` : `container ${input.id}`;
  const sc = input.config.linux?.security_context ?? null;
  const privileged = !!sc?.privileged;
  // containerd refuses this too: a privileged container would escape an unprivileged pod's
  // sandboxing decisions (internal/cri/server/container_create.go).
  if (privileged && !input.sandbox.config.linux?.security_context?.privileged) {
    throw new InvalidArgumentError(`${what}: no privileged container allowed in sandbox ${input.sandbox.id}`);
  }
  const host = input.host ?? hostFacts();
  const r = input.config.linux?.resources ?? null;

  const args = processArgs(input.config, input.image, what);
  const user = await resolveUser(input.imageFiles ?? rootfsFiles(input.rootfs), input.image.config?.User, sc).catch((err: unknown) => {
    if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(`${what}: ${err.message}`, { cause: err });
    throw err;
  });

  const process: OciProcess = {
    terminal: input.config.tty,
    user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
    args,
    env: buildEnv(input),
    cwd: input.config.working_dir || input.image.config?.WorkingDir || '/',
    capabilities: capabilities(sc, host, what),
    noNewPrivileges: !!sc?.no_new_privs,
  };
  const adj = oomScoreAdj(r, input, host, what);
  if (adj !== undefined) process.oomScoreAdj = adj;
  const apparmor = await apparmorProfile(sc, host).catch((err: unknown) => {
    throw withContext(err, what);
  });
  if (apparmor !== undefined) process.apparmorProfile = apparmor;
  // selinux_options are accepted and not applied: tscri sets no process or mount label, which is
  // right where SELinux is off (containerd's WithSelinuxLabels is a no-op there too); on an
  // SELinux host the container would keep the label runc is started with.

  const { mounts, rootfsPropagation } = buildMounts(input, sc, what);

  const linux: OciLinux = {
    namespaces: namespaces(input, sc, host, what),
    cgroupsPath: input.cgroupsPath,
    resources: resources(r, host, privileged, what),
  };
  if (rootfsPropagation) linux.rootfsPropagation = rootfsPropagation;
  // runc 1.1 wants the mappings even when it joins the namespace by path (it derives the host
  // ids of the container's root from them, for device nodes) and does not compare them with the
  // namespace's own; they are the pod's, so they agree.
  const userns = input.sandbox.userns;
  if (userns) {
    linux.uidMappings = userns.uids.map((m) => ({ containerID: m.containerId, hostID: m.hostId, size: m.length }));
    linux.gidMappings = userns.gids.map((m) => ({ containerID: m.containerId, hostID: m.hostId, size: m.length }));
  }
  // Devices: a privileged container gets every host device node (containerd's WithDevices of
  // /dev; the cgroup already allows all), others the ones the request names.
  const requested = await requestedDevices(input.config.devices, what);
  const devices = privileged ? mergeDevices(await hostDevices(), requested.devices) : requested.devices;
  if (devices.length) linux.devices = devices;
  const ociResources = linux.resources;
  if (!ociResources) throw new Error(`${what}: the spec has no linux.resources`);
  if (!privileged && requested.rules.length) ociResources.devices = [...(ociResources.devices ?? []), ...requested.rules];
  const caps = process.capabilities;
  if (!caps) throw new Error(`${what}: the spec has no process.capabilities`);
  // After the capabilities: the default profile allows the syscalls of the capabilities held.
  const seccomp = await containerSeccomp(sc, {
    available: host.seccompAvailable ?? true,
    target: { capabilities: caps.bounding ?? [], arch: host.arch ?? nativeArch(), kernel: host.kernelRelease ?? os.release() },
  }).catch((err: unknown) => {
    throw withContext(err, what);
  });
  if (seccomp) linux.seccomp = seccomp;
  const sysctls = input.sandbox.config.linux?.sysctls ?? {};
  // The pod's sysctls are namespaced (net.*, kernel.shm*, …) and the container joins the pod's
  // namespaces, so writing them again per container is harmless and keeps pods without an
  // infra process correct.
  if (Object.keys(sysctls).length) linux.sysctl = { ...sysctls };
  if (!privileged) {
    linux.maskedPaths = sc?.masked_paths.length ? [...sc.masked_paths] : [...DEFAULT_MASKED_PATHS];
    linux.readonlyPaths = sc?.readonly_paths.length ? [...sc.readonly_paths] : [...DEFAULT_READONLY_PATHS];
  }

  return {
    ociVersion: OCI_VERSION,
    process,
    root: { path: input.rootfs, readonly: !!sc?.readonly_rootfs },
    mounts,
    annotations: annotations(input),
    linux,
  };
}

/** Host devices plus the requested ones; a requested container path wins. */
function mergeDevices(host: OciDevice[], requested: OciDevice[]): OciDevice[] {
  const taken = new Set(requested.map((d) => d.path));
  return [...host.filter((d) => !taken.has(d.path)), ...requested];
}

/**
 * Makes the CRI mounts' host paths ready for runc, as containerd's WithMounts does before
 * writing the spec: a missing host_path becomes a directory (0755), and symlinks are resolved
 * so the bind follows them on the host rather than inside the container. Returns the mounts
 * with host_path replaced by the resolved path.
 */
export async function prepareMountSources(mounts: Mount__Output[]): Promise<Mount__Output[]> {
  const out: Mount__Output[] = [];
  for (const m of mounts) {
    if (!m.host_path) {
      out.push(m);
      continue;
    }
    try {
      await fsp.stat(m.host_path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new Error(`failed to stat mount source ${m.host_path}: ${(err as Error).message}`, { cause: err });
      await fsp.mkdir(m.host_path, { recursive: true, mode: 0o755 });
    }
    out.push({ ...m, host_path: await fsp.realpath(m.host_path) });
  }
  return out;
}
