// A container's seccomp filter (OCI linux.seccomp) from its CRI security context: which profile
// the request names (containerd's generateSeccompSecurityProfile / generateSeccompSpecOpts,
// internal/cri/sputil/seccomp_linux.go), and the conversion of a profile in the Docker format —
// the format of Kubernetes' Localhost profiles and of the default profile — into the OCI form,
// resolving its capability, arch and kernel conditions against this container (moby/profiles
// seccomp_linux.go setupSeccomp).

import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, messageOf } from '../errors';
import type { LinuxContainerSecurityContext__Output } from '../gen/runtime/v1/LinuxContainerSecurityContext';
import type { SecurityProfile__Output } from '../gen/runtime/v1/SecurityProfile';
import type { OciSeccomp, OciSeccompArg, OciSyscall } from './oci_types';
import { DEFAULT_SECCOMP_PROFILE } from './seccomp_default';

/** Conditions on a rule: the container must have all `caps`, run on one of `arches`, on a kernel ≥ minKernel. */
export interface SeccompCondition {
  caps?: string[];
  /** libseccomp's native arch names: amd64, x86, x32, arm64, arm, s390x, ppc64le, riscv64… */
  arches?: string[];
  /** "major.minor" */
  minKernel?: string;
}

export interface SeccompRule {
  /** The old single-name form; a rule has either `name` or `names`. */
  name?: string;
  names?: string[];
  action: string;
  errnoRet?: number;
  args?: OciSeccompArg[];
  comment?: string;
  includes?: SeccompCondition;
  excludes?: SeccompCondition;
}

/**
 * A profile file as Docker, containerd and the kubelet's Localhost profiles write it: the OCI
 * linux.seccomp fields, plus archMap (arches chosen by the host) and conditional rules.
 */
export interface SeccompProfile {
  defaultAction?: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  archMap?: { architecture: string; subArchitectures?: string[] | null }[];
  flags?: string[];
  listenerPath?: string;
  listenerMetadata?: string;
  syscalls?: SeccompRule[];
}

/** What a profile's conditions are resolved against. */
export interface SeccompTarget {
  /** The container's bounding set (CAP_ names): the capabilities it can ever use. */
  capabilities: readonly string[];
  /** libseccomp's name of this host's native arch (see nativeArch). */
  arch: string;
  /** The running kernel's release, as uname -r prints it. */
  kernel: string;
}

// The values config-linux.md (runtime-spec, "Seccomp") allows; runc refuses anything else, but
// only at `runc create`, where the error is harder to trace back to the profile.
const ACTIONS = new Set([
  'SCMP_ACT_KILL',
  'SCMP_ACT_KILL_PROCESS',
  'SCMP_ACT_KILL_THREAD',
  'SCMP_ACT_TRAP',
  'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE',
  'SCMP_ACT_ALLOW',
  'SCMP_ACT_LOG',
  'SCMP_ACT_NOTIFY',
]);
const OPERATORS = new Set(['SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ']);
const ARCHES = new Set(
  [
    'X86',
    'X86_64',
    'X32',
    'ARM',
    'AARCH64',
    'MIPS',
    'MIPS64',
    'MIPS64N32',
    'MIPSEL',
    'MIPSEL64',
    'MIPSEL64N32',
    'PPC',
    'PPC64',
    'PPC64LE',
    'S390',
    'S390X',
    'PARISC',
    'PARISC64',
    'RISCV64',
    'LOONGARCH64',
  ].map((a) => `SCMP_ARCH_${a}`),
);

// libseccomp's native arch name → its SCMP_ARCH_ constant, to pick the archMap entry of this host.
const NATIVE_TO_SCMP: Record<string, string> = {
  amd64: 'SCMP_ARCH_X86_64',
  x86: 'SCMP_ARCH_X86',
  arm64: 'SCMP_ARCH_AARCH64',
  arm: 'SCMP_ARCH_ARM',
  ppc64le: 'SCMP_ARCH_PPC64LE',
  ppc64: 'SCMP_ARCH_PPC64',
  ppc: 'SCMP_ARCH_PPC',
  s390x: 'SCMP_ARCH_S390X',
  s390: 'SCMP_ARCH_S390',
  riscv64: 'SCMP_ARCH_RISCV64',
  loong64: 'SCMP_ARCH_LOONGARCH64',
  mips64: 'SCMP_ARCH_MIPS64',
  mipsel64: 'SCMP_ARCH_MIPSEL64',
};

/** The native arch in libseccomp's (and the profile format's) words, from Node's process.arch. */
export function nativeArch(nodeArch: string = process.arch, endianness: 'BE' | 'LE' = os.endianness()): string {
  switch (nodeArch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return 'x86';
    case 'ppc64':
      return endianness === 'LE' ? 'ppc64le' : 'ppc64';
    case 'mips64el':
      return 'mipsel64';
    default:
      return nodeArch;
  }
}

function fail(source: string, detail: string): never {
  throw new InvalidArgumentError(`invalid seccomp profile ${source}: ${detail}`);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringList(v: unknown, field: string, source: string, allowed?: Set<string>): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && s !== '')) fail(source, `${field} must be a list of names`);
  for (const s of v as string[]) if (allowed && !allowed.has(s)) fail(source, `unknown ${field} entry ${JSON.stringify(s)}`);
  return v as string[];
}

// Argument values are 64-bit in the kernel, but a JSON number beyond 2^53 has already lost
// its low bits by the time JSON.parse returns it; refuse rather than filter on another value.
function uint(v: unknown, field: string, source: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(source, `${field} must be a non-negative integer below 2^53, got ${JSON.stringify(v)}`);
  return v;
}

function condition(v: unknown, field: string, source: string): SeccompCondition | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) fail(source, `${field} must be an object`);
  const out: SeccompCondition = {};
  const caps = stringList(v.caps, `${field}.caps`, source);
  const arches = stringList(v.arches, `${field}.arches`, source);
  if (caps) out.caps = caps;
  if (arches) out.arches = arches;
  if (v.minKernel !== undefined && v.minKernel !== null && v.minKernel !== '') {
    if (typeof v.minKernel !== 'string' || !/^\d+\.\d+$/.test(v.minKernel))
      fail(source, `${field}.minKernel must look like "4.8", got ${JSON.stringify(v.minKernel)}`);
    out.minKernel = v.minKernel;
  }
  return out;
}

function rule(v: unknown, at: number, source: string): SeccompRule {
  const where = `syscalls[${at}]`;
  if (!isObject(v)) fail(source, `${where} must be an object`);
  const names = stringList(v.names, `${where}.names`, source);
  const name = v.name === undefined || v.name === '' ? undefined : v.name;
  if (name !== undefined && typeof name !== 'string') fail(source, `${where}.name must be a string`);
  // moby refuses the two forms together rather than guess which one was meant.
  if (name !== undefined && names?.length) fail(source, `${where} has both name and names`);
  const list = name !== undefined ? [name] : names;
  if (!list?.length) fail(source, `${where} names no syscall`);
  if (typeof v.action !== 'string' || !ACTIONS.has(v.action)) fail(source, `${where}.action ${JSON.stringify(v.action)} is not a seccomp action`);
  const out: SeccompRule = { names: list, action: v.action };
  const errnoRet = uint(v.errnoRet, `${where}.errnoRet`, source);
  if (errnoRet !== undefined) out.errnoRet = errnoRet;
  if (v.args !== undefined && v.args !== null) {
    if (!Array.isArray(v.args)) fail(source, `${where}.args must be a list`);
    out.args = v.args.map((a: unknown, i: number) => {
      const field = `${where}.args[${i}]`;
      if (!isObject(a)) fail(source, `${field} must be an object`);
      const index = uint(a.index, `${field}.index`, source) ?? 0;
      // A syscall has at most six arguments (SECCOMP_DATA args[6]).
      if (index > 5) fail(source, `${field}.index ${index} is beyond a syscall's six arguments`);
      if (typeof a.op !== 'string' || !OPERATORS.has(a.op)) fail(source, `${field}.op ${JSON.stringify(a.op)} is not a seccomp comparison`);
      const arg: OciSeccompArg = { index, value: uint(a.value, `${field}.value`, source) ?? 0, op: a.op };
      const valueTwo = uint(a.valueTwo, `${field}.valueTwo`, source);
      if (valueTwo !== undefined) arg.valueTwo = valueTwo;
      return arg;
    });
  }
  const includes = condition(v.includes, `${where}.includes`, source);
  const excludes = condition(v.excludes, `${where}.excludes`, source);
  if (includes) out.includes = includes;
  if (excludes) out.excludes = excludes;
  return out;
}

/** Checks a parsed profile document; every error is an InvalidArgumentError naming `source`. */
export function validateSeccompProfile(doc: unknown, source: string): SeccompProfile {
  if (!isObject(doc)) fail(source, 'not a JSON object');
  const out: SeccompProfile = {};
  if (doc.defaultAction !== undefined && doc.defaultAction !== '') {
    if (typeof doc.defaultAction !== 'string' || !ACTIONS.has(doc.defaultAction))
      fail(source, `defaultAction ${JSON.stringify(doc.defaultAction)} is not a seccomp action`);
    out.defaultAction = doc.defaultAction;
  }
  const defaultErrnoRet = uint(doc.defaultErrnoRet, 'defaultErrnoRet', source);
  if (defaultErrnoRet !== undefined) out.defaultErrnoRet = defaultErrnoRet;
  const architectures = stringList(doc.architectures, 'architectures', source, ARCHES);
  if (architectures) out.architectures = architectures;
  if (doc.archMap !== undefined && doc.archMap !== null) {
    if (!Array.isArray(doc.archMap)) fail(source, 'archMap must be a list');
    out.archMap = doc.archMap.map((m: unknown, i: number) => {
      if (!isObject(m) || typeof m.architecture !== 'string' || !ARCHES.has(m.architecture)) fail(source, `archMap[${i}].architecture is not a seccomp arch`);
      return { architecture: m.architecture, subArchitectures: stringList(m.subArchitectures, `archMap[${i}].subArchitectures`, source, ARCHES) ?? [] };
    });
  }
  if (out.architectures?.length && out.archMap?.length) fail(source, 'both architectures and archMap are given');
  const flags = stringList(doc.flags, 'flags', source);
  if (flags) out.flags = flags;
  for (const key of ['listenerPath', 'listenerMetadata'] as const) {
    const v = doc[key];
    if (v === undefined || v === null || v === '') continue;
    if (typeof v !== 'string') fail(source, `${key} must be a string`);
    out[key] = v;
  }
  if (doc.syscalls !== undefined && doc.syscalls !== null) {
    if (!Array.isArray(doc.syscalls)) fail(source, 'syscalls must be a list');
    out.syscalls = doc.syscalls.map((r: unknown, i: number) => rule(r, i, source));
  }
  if (!out.defaultAction && out.syscalls?.length) fail(source, 'syscalls are listed but defaultAction is missing');
  return out;
}

function kernelAtLeast(release: string, min: string): boolean {
  const have = /^(\d+)\.(\d+)/.exec(release);
  const want = /^(\d+)\.(\d+)$/.exec(min);
  // An unreadable release cannot prove the kernel new enough: keep the stricter filter.
  if (!have || !want) return false;
  const [hMaj, hMin] = [Number(have[1]), Number(have[2])];
  const [wMaj, wMin] = [Number(want[1]), Number(want[2])];
  return hMaj > wMaj || (hMaj === wMaj && hMin >= wMin);
}

// moby's semantics: an exclude drops the rule if any of its conditions holds (any listed cap
// held, the arch listed, the kernel new enough); an include keeps it only if all hold (every
// listed cap held, the arch listed, the kernel new enough).
function applies(r: SeccompRule, t: SeccompTarget): boolean {
  const ex = r.excludes;
  if (ex) {
    if (ex.arches?.includes(t.arch)) return false;
    if (ex.caps?.some((c) => t.capabilities.includes(c))) return false;
    if (ex.minKernel && kernelAtLeast(t.kernel, ex.minKernel)) return false;
  }
  const inc = r.includes;
  if (inc) {
    if (inc.arches?.length && !inc.arches.includes(t.arch)) return false;
    if (inc.caps?.length && !inc.caps.every((c) => t.capabilities.includes(c))) return false;
    if (inc.minKernel && !kernelAtLeast(t.kernel, inc.minKernel)) return false;
  }
  return true;
}

/**
 * The OCI linux.seccomp of a (validated) profile for this container, or undefined when the
 * profile has neither a default action nor rules: moby reads such a profile as "no filter".
 */
export function resolveSeccompProfile(profile: SeccompProfile, target: SeccompTarget): OciSeccomp | undefined {
  const defaultAction = profile.defaultAction;
  if (!defaultAction) {
    if (!profile.syscalls?.length) return undefined;
    // validateSeccompProfile refuses this; a profile built in code could still get here.
    throw new Error('seccomp profile lists syscalls but has no defaultAction');
  }
  const out: OciSeccomp = { defaultAction };
  if (profile.defaultErrnoRet !== undefined) out.defaultErrnoRet = profile.defaultErrnoRet;
  let architectures = profile.architectures ?? [];
  if (!architectures.length && profile.archMap?.length) {
    const native = NATIVE_TO_SCMP[target.arch];
    const entry = profile.archMap.find((m) => m.architecture === native);
    if (entry) architectures = [entry.architecture, ...(entry.subArchitectures ?? [])];
  }
  if (architectures.length) out.architectures = [...architectures];
  if (profile.flags?.length) out.flags = [...profile.flags];
  if (profile.listenerPath) out.listenerPath = profile.listenerPath;
  if (profile.listenerMetadata) out.listenerMetadata = profile.listenerMetadata;
  const syscalls: OciSyscall[] = [];
  for (const r of profile.syscalls ?? []) {
    if (!applies(r, target)) continue;
    const s: OciSyscall = { names: r.name !== undefined ? [r.name] : [...(r.names ?? [])], action: r.action };
    if (r.errnoRet !== undefined) s.errnoRet = r.errnoRet;
    if (r.args?.length) s.args = r.args.map((a) => ({ ...a }));
    syscalls.push(s);
  }
  out.syscalls = syscalls;
  return out;
}

/** The runtime's default profile (RuntimeDefault, "runtime/default", "docker/default") for this container. */
export function defaultSeccompProfile(target: SeccompTarget): OciSeccomp {
  const profile = resolveSeccompProfile(DEFAULT_SECCOMP_PROFILE, target);
  if (!profile) throw new Error('the built-in default seccomp profile resolved to no filter');
  return profile;
}

/** Reads, checks and resolves a profile file; a missing or malformed file is an InvalidArgumentError naming it. */
export async function loadSeccompProfile(file: string, target: SeccompTarget): Promise<OciSeccomp | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`cannot load seccomp profile ${file}: ${messageOf(err)}`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`invalid seccomp profile ${file}: ${messageOf(err)}`, { cause: err });
  }
  return resolveSeccompProfile(validateSeccompProfile(doc, file), target);
}

export type ProfileChoice = { type: 'RuntimeDefault' } | { type: 'Unconfined' } | { type: 'Localhost'; ref: string };

// The deprecated string forms (k8s.io/kubernetes pkg/kubelet/kuberuntime helpers, the values
// containerd's generateSecurityProfile accepts). Anything but these must carry "localhost/":
// critest's "should not support a custom seccomp profile without using localhost/ as a prefix".
const LOCALHOST_PREFIX = 'localhost/';

/**
 * The profile a request names: the SecurityProfile field when present, else the deprecated
 * path string; null when neither is set. `field` names the kind (seccomp, apparmor) in errors.
 */
export function securityProfile(sp: SecurityProfile__Output | null | undefined, legacy: string | undefined, field: string): ProfileChoice | null {
  if (sp) {
    // containerd refuses a ref that would be silently ignored.
    if (sp.profile_type !== 'Localhost' && sp.localhost_ref) {
      throw new InvalidArgumentError(
        `${field} localhost_ref ${JSON.stringify(sp.localhost_ref)} is only valid with profile_type Localhost, not ${sp.profile_type}`,
      );
    }
    switch (sp.profile_type) {
      case 'RuntimeDefault':
        return { type: 'RuntimeDefault' };
      case 'Unconfined':
        return { type: 'Unconfined' };
      case 'Localhost': {
        // containerd trims the old prefix here too, for clients that copy the legacy form.
        const ref = sp.localhost_ref.startsWith(LOCALHOST_PREFIX) ? sp.localhost_ref.slice(LOCALHOST_PREFIX.length) : sp.localhost_ref;
        if (!ref) throw new InvalidArgumentError(`${field} profile_type Localhost needs a localhost_ref`);
        return { type: 'Localhost', ref };
      }
      default:
        throw new InvalidArgumentError(`unknown ${field} profile_type ${JSON.stringify(sp.profile_type)}`);
    }
  }
  const legacyName = legacy ?? '';
  switch (legacyName) {
    case '':
      return null;
    case 'runtime/default':
    case 'docker/default':
      return { type: 'RuntimeDefault' };
    case 'unconfined':
      return { type: 'Unconfined' };
    default:
      if (!legacyName.startsWith(LOCALHOST_PREFIX) || legacyName.length === LOCALHOST_PREFIX.length) {
        throw new InvalidArgumentError(
          `invalid ${field} profile ${JSON.stringify(legacy)}: want runtime/default, docker/default, unconfined or localhost/<path>`,
        );
      }
      return { type: 'Localhost', ref: legacyName.slice(LOCALHOST_PREFIX.length) };
  }
}

export interface SeccompOptions {
  target: SeccompTarget;
  /** The kernel has seccomp (a "Seccomp:" line in /proc/self/status), containerd's seccomp.IsEnabled. */
  available: boolean;
}

/**
 * The container's linux.seccomp, or undefined for none. As containerd: an unset profile is
 * unconfined (its unset_seccomp_profile default; the kubelet sends RuntimeDefault itself when
 * the pod or the SeccompDefault feature asks for it), and a privileged container gets no
 * filter whatever it asks for (critest "should ignore a seccomp profile that blocks setting
 * hostname when privileged").
 */
export async function containerSeccomp(sc: LinuxContainerSecurityContext__Output | null, opts: SeccompOptions): Promise<OciSeccomp | undefined> {
  // The request is checked even when privileged, as containerd parses it before that test.
  const choice = securityProfile(sc?.seccomp, sc?.seccomp_profile_path, 'seccomp');
  if (sc?.privileged || !choice || choice.type === 'Unconfined') return undefined;
  if (!opts.available) throw new FailedPreconditionError(`seccomp profile ${choice.type} requested but this kernel has no seccomp support`);
  if (choice.type === 'RuntimeDefault') return defaultSeccompProfile(opts.target);
  // A relative path would be resolved against the daemon's working directory, which no client
  // can know; the kubelet always sends an absolute one (<root-dir>/seccomp/…).
  if (!path.isAbsolute(choice.ref)) throw new InvalidArgumentError(`seccomp profile localhost/${choice.ref}: the path must be absolute`);
  return loadSeccompProfile(choice.ref, opts.target);
}
