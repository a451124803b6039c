import { test } from 'node:test';
import { tempDir, securityContext } from '../helpers/unit';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../../src/errors';
import type { OciSeccomp, OciSeccompArg, OciSyscall } from '../../src/container/oci_types';
import {
  type SeccompTarget,
  containerSeccomp,
  defaultSeccompProfile,
  loadSeccompProfile,
  nativeArch,
  resolveSeccompProfile,
  securityProfile,
  validateSeccompProfile,
} from '../../src/container/seccomp';
import { DEFAULT_CAPABILITIES } from '../../src/container/spec';

const AMD64: SeccompTarget = { capabilities: DEFAULT_CAPABILITIES, arch: 'amd64', kernel: '6.1.0-18-amd64' };

const sc = securityContext;

/** Every syscall name the profile allows without argument conditions. */
function allowed(p: OciSeccomp): Set<string> {
  return new Set((p.syscalls ?? []).filter((s) => s.action === 'SCMP_ACT_ALLOW' && !s.args?.length).flatMap((s) => s.names));
}

function rulesFor(p: OciSeccomp, name: string) {
  return (p.syscalls ?? []).filter((s) => s.names.includes(name));
}

/** A rule's first argument condition, which the test expects the rule to carry. */
function firstArg(rule: OciSyscall): OciSeccompArg {
  const arg = rule.args?.[0];
  assert.ok(arg, `an argument condition on ${rule.names.join(',')}`);
  return arg;
}

function tempProfile(name: string, body: string): string {
  const dir = tempDir('tscri-seccomp-');
  const file = path.join(dir, name);
  fs.writeFileSync(file, body);
  return file;
}

test('default profile: EPERM by default, x86 family arches on amd64, arm pair on arm64', () => {
  const p = defaultSeccompProfile(AMD64);
  assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
  assert.equal(p.defaultErrnoRet, 1);
  assert.deepEqual(p.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  assert.deepEqual(defaultSeccompProfile({ ...AMD64, arch: 'arm64' }).architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
  const names = allowed(p);
  for (const s of ['read', 'write', 'execve', 'openat', 'clone3', 'futex', 'rt_sigreturn', 'arch_prctl', 'socketcall', 'chroot']) {
    if (s === 'clone3') assert.ok(!names.has(s), 'clone3 is not allowed without CAP_SYS_ADMIN');
    else assert.ok(names.has(s), `expected ${s} allowed`);
  }
  // Arch-specific rules follow the host: arm syscalls only on arm.
  assert.ok(!names.has('set_tls'));
  assert.ok(allowed(defaultSeccompProfile({ ...AMD64, arch: 'arm64' })).has('set_tls'));
  assert.ok(!allowed(defaultSeccompProfile({ ...AMD64, arch: 'arm64' })).has('arch_prctl'));
});

test('default profile: capability-conditional rules follow the bounding set', () => {
  const plain = defaultSeccompProfile(AMD64);
  for (const s of ['sethostname', 'setdomainname', 'mount', 'unshare', 'setns', 'reboot', 'init_module', 'settimeofday', 'bpf']) {
    assert.ok(!allowed(plain).has(s), `${s} must be denied without its capability`);
  }
  // chroot comes with CAP_SYS_CHROOT, one of the default capabilities.
  assert.ok(allowed(plain).has('chroot'));
  assert.ok(!allowed(plain).has('open_by_handle_at'));
  // Without CAP_SYS_ADMIN clone may not create namespaces and clone3 answers ENOSYS.
  assert.deepEqual(rulesFor(plain, 'clone'), [
    { names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 0x7e020000, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] },
  ]);
  assert.deepEqual(rulesFor(plain, 'clone3'), [{ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 }]);
  assert.deepEqual(
    rulesFor(plain, 'personality').map((r) => firstArg(r).value),
    [0, 8, 0x20000, 0x20008, 0xffffffff],
  );
  // socket(2) for every family but AF_ALG (38) and AF_VSOCK (40).
  assert.deepEqual(
    rulesFor(plain, 'socket').map((r) => [firstArg(r).op, firstArg(r).value]),
    [
      ['SCMP_CMP_LT', 38],
      ['SCMP_CMP_EQ', 39],
      ['SCMP_CMP_GT', 40],
    ],
  );

  const admin = defaultSeccompProfile({ ...AMD64, capabilities: [...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN'] });
  for (const s of ['sethostname', 'setdomainname', 'mount', 'umount2', 'unshare', 'setns', 'clone', 'clone3'])
    assert.ok(allowed(admin).has(s), `${s} with CAP_SYS_ADMIN`);
  assert.ok(!rulesFor(admin, 'clone').some((r) => r.args?.length), 'no clone flag filter with CAP_SYS_ADMIN');
  assert.ok(!rulesFor(admin, 'clone3').some((r) => r.action === 'SCMP_ACT_ERRNO'));

  const time = defaultSeccompProfile({ ...AMD64, capabilities: ['CAP_SYS_TIME'] });
  assert.ok(allowed(time).has('clock_settime'));
  assert.ok(!allowed(time).has('chroot'), 'a dropped CAP_SYS_CHROOT takes chroot with it');
});

test('default profile: kernel-conditional ptrace', () => {
  assert.ok(allowed(defaultSeccompProfile(AMD64)).has('ptrace'));
  assert.ok(!allowed(defaultSeccompProfile({ ...AMD64, kernel: '4.4.0-1-generic' })).has('ptrace'));
  assert.ok(allowed(defaultSeccompProfile({ ...AMD64, kernel: '4.4.0', capabilities: ['CAP_SYS_PTRACE'] })).has('ptrace'));
  assert.ok(!allowed(defaultSeccompProfile({ ...AMD64, kernel: 'garbage' })).has('ptrace'));
});

test('profile conversion: Docker format to OCI (name, archMap, includes/excludes, errnoRet, args)', () => {
  const doc = validateSeccompProfile(
    {
      defaultAction: 'SCMP_ACT_ALLOW',
      archMap: [
        { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86'] },
        { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: null },
      ],
      flags: ['SECCOMP_FILTER_FLAG_LOG'],
      syscalls: [
        { name: 'sethostname', action: 'SCMP_ACT_ERRNO', comment: 'old single-name form' },
        { names: ['chmod', 'fchmodat'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 },
        { names: ['mount'], action: 'SCMP_ACT_KILL', excludes: { caps: ['CAP_SYS_ADMIN'] } },
        { names: ['kexec_load'], action: 'SCMP_ACT_LOG', includes: { arches: ['arm64'] } },
        { names: ['personality'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 8, op: 'SCMP_CMP_NE' }] },
        { names: ['newer'], action: 'SCMP_ACT_ERRNO', includes: { minKernel: '99.0' } },
      ],
      someFutureField: true,
    },
    'test.json',
  );
  assert.deepEqual(resolveSeccompProfile(doc, AMD64), {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
    flags: ['SECCOMP_FILTER_FLAG_LOG'],
    syscalls: [
      { names: ['sethostname'], action: 'SCMP_ACT_ERRNO' },
      { names: ['chmod', 'fchmodat'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 },
      { names: ['mount'], action: 'SCMP_ACT_KILL' },
      { names: ['personality'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 8, op: 'SCMP_CMP_NE' }] },
    ],
  });
  const arm = resolveSeccompProfile(doc, { ...AMD64, arch: 'arm64', capabilities: ['CAP_SYS_ADMIN'] });
  assert.ok(arm, 'a profile for arm64');
  assert.deepEqual(arm.architectures, ['SCMP_ARCH_AARCH64']);
  assert.ok(arm.syscalls, 'syscall rules for arm64');
  assert.deepEqual(
    arm.syscalls.map((s) => s.names[0]),
    ['sethostname', 'chmod', 'kexec_load', 'personality'],
  );
  // OCI-form profiles (what containerd reads) pass through unchanged.
  const oci = {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 1,
    architectures: ['SCMP_ARCH_X86_64'],
    syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }],
  };
  assert.deepEqual(resolveSeccompProfile(validateSeccompProfile(oci, 'oci.json'), AMD64), oci);
  // moby reads a profile with neither default action nor rules as no filter.
  assert.equal(resolveSeccompProfile(validateSeccompProfile({}, 'empty.json'), AMD64), undefined);
});

test('profile validation: errors name the file and the field', () => {
  const bad = (doc: unknown, re: RegExp) =>
    assert.throws(
      () => validateSeccompProfile(doc, '/p.json'),
      (e: unknown) => e instanceof InvalidArgumentError && /\/p\.json/.test(e.message) && re.test(e.message),
    );
  bad([], /not a JSON object/);
  bad({ defaultAction: 'SCMP_ACT_MAYBE' }, /defaultAction/);
  bad({ syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }] }, /defaultAction is missing/);
  bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['read'], action: 'ALLOW' }] }, /syscalls\[0\]\.action/);
  bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ name: 'read', names: ['write'], action: 'SCMP_ACT_ALLOW' }] }, /both name and names/);
  bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: [], action: 'SCMP_ACT_ALLOW' }] }, /names no syscall/);
  bad(
    { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 6, value: 1, op: 'SCMP_CMP_EQ' }] }] },
    /six arguments/,
  );
  bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 1, op: '==' }] }] }, /op/);
  bad(
    { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 2 ** 60, op: 'SCMP_CMP_EQ' }] }] },
    /2\^53/,
  );
  bad(
    { defaultAction: 'SCMP_ACT_ALLOW', architectures: ['SCMP_ARCH_X86_64'], archMap: [{ architecture: 'SCMP_ARCH_X86_64' }] },
    /both architectures and archMap/,
  );
  bad({ defaultAction: 'SCMP_ACT_ALLOW', architectures: ['x86_64'] }, /architectures/);
  bad({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['x'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '4' } }] }, /minKernel/);
});

test('loadSeccompProfile: reads a file; missing or malformed files are InvalidArgument naming the path', async () => {
  const file = tempProfile(
    'block-chmod.json',
    JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['chmod', 'fchmodat'], action: 'SCMP_ACT_ERRNO' }] }),
  );
  assert.deepEqual(await loadSeccompProfile(file, AMD64), {
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [{ names: ['chmod', 'fchmodat'], action: 'SCMP_ACT_ERRNO' }],
  });
  const missing = path.join(path.dirname(file), 'nope.json');
  await assert.rejects(
    loadSeccompProfile(missing, AMD64),
    (e: unknown) => e instanceof InvalidArgumentError && e.message.includes(missing) && /ENOENT/.test(e.message),
  );
  const broken = tempProfile('broken.json', '{"defaultAction": ');
  await assert.rejects(loadSeccompProfile(broken, AMD64), (e: unknown) => e instanceof InvalidArgumentError && e.message.includes(broken));
});

test('securityProfile: the field wins over the deprecated path; legacy strings; bad prefixes refused', () => {
  assert.equal(securityProfile(null, '', 'seccomp'), null);
  assert.deepEqual(securityProfile(null, 'runtime/default', 'seccomp'), { type: 'RuntimeDefault' });
  assert.deepEqual(securityProfile(null, 'docker/default', 'seccomp'), { type: 'RuntimeDefault' });
  assert.deepEqual(securityProfile(null, 'unconfined', 'seccomp'), { type: 'Unconfined' });
  assert.deepEqual(securityProfile(null, 'localhost//var/lib/kubelet/seccomp/p.json', 'seccomp'), {
    type: 'Localhost',
    ref: '/var/lib/kubelet/seccomp/p.json',
  });
  for (const legacy of ['/tmp/seccomp-tests/block-host-name.json', 'localhost/', 'default', 'Localhost/x']) {
    assert.throws(() => securityProfile(null, legacy, 'seccomp'), InvalidArgumentError, legacy);
  }
  assert.deepEqual(securityProfile({ profile_type: 'Unconfined', localhost_ref: '' }, 'runtime/default', 'seccomp'), { type: 'Unconfined' });
  assert.deepEqual(securityProfile({ profile_type: 'Localhost', localhost_ref: '/p.json' }, '', 'seccomp'), { type: 'Localhost', ref: '/p.json' });
  assert.deepEqual(securityProfile({ profile_type: 'Localhost', localhost_ref: 'localhost//p.json' }, '', 'seccomp'), { type: 'Localhost', ref: '/p.json' });
  assert.throws(() => securityProfile({ profile_type: 'RuntimeDefault', localhost_ref: '/p.json' }, '', 'seccomp'), /only valid with profile_type Localhost/);
  assert.throws(() => securityProfile({ profile_type: 'Localhost', localhost_ref: '' }, '', 'seccomp'), /needs a localhost_ref/);
});

test('containerSeccomp: unset is unconfined, privileged ignores the profile, localhost needs an absolute existing file', async () => {
  const opts = { available: true, target: AMD64 };
  assert.equal(await containerSeccomp(null, opts), undefined);
  assert.equal(await containerSeccomp(sc(), opts), undefined);
  assert.equal(await containerSeccomp(sc({ seccomp_profile_path: 'unconfined' }), opts), undefined);
  assert.equal((await containerSeccomp(sc({ seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } }), opts))?.defaultAction, 'SCMP_ACT_ERRNO');

  const file = tempProfile(
    'block-host-name.json',
    JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['sethostname'], action: 'SCMP_ACT_ERRNO' }] }),
  );
  assert.deepEqual((await containerSeccomp(sc({ seccomp_profile_path: `localhost/${file}` }), opts))?.syscalls, [
    { names: ['sethostname'], action: 'SCMP_ACT_ERRNO' },
  ]);
  assert.equal(await containerSeccomp(sc({ privileged: true, seccomp_profile_path: `localhost/${file}` }), opts), undefined);
  // The request is still checked for a privileged container, as containerd does.
  await assert.rejects(containerSeccomp(sc({ privileged: true, seccomp_profile_path: file }), opts), InvalidArgumentError);
  await assert.rejects(containerSeccomp(sc({ seccomp_profile_path: file }), opts), InvalidArgumentError);
  await assert.rejects(containerSeccomp(sc({ seccomp_profile_path: 'localhost/relative.json' }), opts), /must be absolute/);
  await assert.rejects(
    containerSeccomp(sc({ seccomp: { profile_type: 'Localhost', localhost_ref: `${file}.missing` } }), opts),
    (e: unknown) => e instanceof InvalidArgumentError && e.message.includes(`${file}.missing`),
  );

  // A kernel without seccomp can honour only Unconfined.
  const none = { available: false, target: AMD64 };
  assert.equal(await containerSeccomp(sc({ seccomp_profile_path: 'unconfined' }), none), undefined);
  await assert.rejects(containerSeccomp(sc({ seccomp_profile_path: 'runtime/default' }), none), FailedPreconditionError);
});

test('nativeArch: Node arch names to libseccomp names', () => {
  assert.equal(nativeArch('x64'), 'amd64');
  assert.equal(nativeArch('ia32'), 'x86');
  assert.equal(nativeArch('arm64'), 'arm64');
  assert.equal(nativeArch('ppc64', 'LE'), 'ppc64le');
  assert.equal(nativeArch('ppc64', 'BE'), 'ppc64');
});
