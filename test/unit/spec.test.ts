import { test } from 'node:test';
import { tempDir, securityContext } from '../helpers/unit';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../../src/errors';
import type { ContainerConfig__Output } from '../../src/gen/runtime/v1/ContainerConfig';
import type { LinuxContainerSecurityContext__Output } from '../../src/gen/runtime/v1/LinuxContainerSecurityContext';
import type { LinuxContainerResources__Output } from '../../src/gen/runtime/v1/LinuxContainerResources';
import type { Mount__Output } from '../../src/gen/runtime/v1/Mount';
import type { NamespaceOption__Output } from '../../src/gen/runtime/v1/NamespaceOption';
import type { PodSandboxConfig__Output } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { ImageConfigFile } from '../../src/image/manifest';

import {
  DEFAULT_CAPABILITIES,
  DEFAULT_MASKED_PATHS,
  DEFAULT_READONLY_PATHS,
  type HostFacts,
  type OciSpec,
  type SandboxInfo,
  type SpecInput,
  buildSpec,
  prepareMountSources,
  processArgs,
  resolveUser,
  rootfsFiles,
  toOciResources,
} from '../../src/container/spec';
import type { OciCapabilities, OciMount } from '../../src/container/oci_types';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  '# a comment',
  'alice:x:1000:1000:Alice:/home/alice:/bin/sh',
  'bob:x:1001:1001::/home/bob:/bin/sh',
  'broken line',
].join('\n');

const GROUP = ['root:x:0:', 'tty:x:5:', 'alice:x:1000:alice', 'bob:x:1001:', 'staff:x:50:alice,bob', 'audio:x:29:alice', 'video:x:44:bob'].join('\n');

function tempRootfs(files: Record<string, string> = { 'etc/passwd': PASSWD, 'etc/group': GROUP }): string {
  const root = tempDir('tscri-spec-');
  for (const [rel, text] of Object.entries(files)) {
    const p = path.join(root, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, text);
  }
  return root;
}

const HOST: HostFacts = { cgroupV2: true, lastCap: 40, swapAvailable: true, hugetlbAvailable: true, oomScoreAdj: -500 };

const sc = securityContext;

/** The process's capabilities, which the test expects the spec to carry. */
function capsOf(spec: OciSpec): OciCapabilities {
  const caps = spec.process.capabilities;
  assert.ok(caps, 'capabilities in the spec');
  return caps;
}

/** One capability set, which the test expects to be there. */
function capSet(caps: OciCapabilities, set: keyof OciCapabilities): string[] {
  const names = caps[set];
  assert.ok(names, `a ${set} capability set`);
  return names;
}

/** The spec's mount at `destination`, which the test expects to be there. */
function mountAt(spec: OciSpec, destination: string): OciMount {
  const m = spec.mounts.find((x) => x.destination === destination);
  assert.ok(m, `a mount at ${destination}`);
  return m;
}

/** The options of the spec's mount at `destination`, which the test expects it to have. */
function mountOptions(spec: OciSpec, destination: string): string[] {
  const options = mountAt(spec, destination).options;
  assert.ok(options, `options on the mount at ${destination}`);
  return options;
}

function nsOpts(over: Partial<NamespaceOption__Output> = {}): NamespaceOption__Output {
  return { network: 'POD', pid: 'CONTAINER', ipc: 'POD', target_id: '', userns_options: null, ...over };
}

function resources(over: Partial<LinuxContainerResources__Output> = {}): LinuxContainerResources__Output {
  return {
    cpu_period: '0',
    cpu_quota: '0',
    cpu_shares: '0',
    memory_limit_in_bytes: '0',
    oom_score_adj: '0',
    cpuset_cpus: '',
    cpuset_mems: '',
    hugepage_limits: [],
    unified: {},
    memory_swap_limit_in_bytes: '0',
    ...over,
  };
}

function mount(containerPath: string, hostPath: string, over: Partial<Mount__Output> = {}): Mount__Output {
  return {
    container_path: containerPath,
    host_path: hostPath,
    readonly: false,
    selinux_relabel: false,
    propagation: 'PROPAGATION_PRIVATE',
    uidMappings: [],
    gidMappings: [],
    recursive_read_only: false,
    image: null,
    image_sub_path: '',
    ...over,
  };
}

function containerConfig(
  over: Partial<ContainerConfig__Output> = {},
  security?: LinuxContainerSecurityContext__Output,
  res?: LinuxContainerResources__Output,
): ContainerConfig__Output {
  return {
    metadata: { name: 'app', attempt: 0 },
    image: { image: 'docker.io/library/busybox:latest', annotations: {}, user_specified_image: 'busybox', runtime_handler: '', image_ref: '' },
    command: [],
    args: [],
    working_dir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    log_path: '',
    stdin: false,
    stdin_once: false,
    tty: false,
    linux: { resources: res ?? null, security_context: security ?? sc({ namespace_options: nsOpts() }) },
    windows: null,
    CDI_devices: [],
    stop_signal: 'RUNTIME_DEFAULT',
    ...over,
  };
}

function podConfig(opts: { ns?: NamespaceOption__Output; privileged?: boolean; sysctls?: Record<string, string> } = {}): PodSandboxConfig__Output {
  return {
    metadata: { name: 'pod', uid: 'uid-1', namespace: 'default', attempt: 0 },
    hostname: 'pod-host',
    log_directory: '',
    dns_config: null,
    port_mappings: [],
    labels: {},
    annotations: {},
    linux: {
      cgroup_parent: '/kubepods',
      security_context: {
        namespace_options: opts.ns ?? nsOpts(),
        selinux_options: null,
        run_as_user: null,
        readonly_rootfs: false,
        supplemental_groups: [],
        privileged: !!opts.privileged,
        seccomp_profile_path: '',
        run_as_group: null,
        seccomp: null,
        apparmor: null,
        supplemental_groups_policy: 'Merge',
      },
      sysctls: opts.sysctls ?? {},
      overhead: null,
      resources: null,
    },
    windows: null,
  };
}

function sandbox(over: Partial<SandboxInfo> = {}): SandboxInfo {
  return {
    id: 'sb1',
    hostname: 'pod-host',
    config: podConfig(),
    netns: '/run/tscri/netns/sb1',
    ipcns: '/run/tscri/ns/sb1/ipc',
    utsns: '/run/tscri/ns/sb1/uts',
    hostsPath: '/var/lib/tscri/sandboxes/sb1/hosts',
    resolvPath: '/var/lib/tscri/sandboxes/sb1/resolv.conf',
    hostnamePath: '/var/lib/tscri/sandboxes/sb1/hostname',
    shmPath: '/run/tscri/sandboxes/sb1/shm',
    ...over,
  };
}

const IMAGE: ImageConfigFile = {
  config: { Entrypoint: ['/entry'], Cmd: ['default-arg'], Env: ['PATH=/image/bin', 'LANG=C'], WorkingDir: '/srv', User: '' },
  rootfs: { type: 'layers', diff_ids: [] },
};

let sharedRoot: string | undefined;
function input(over: Partial<SpecInput> = {}): SpecInput {
  sharedRoot ??= tempRootfs();
  return {
    id: 'c1',
    rootfs: sharedRoot,
    image: IMAGE,
    config: containerConfig(),
    sandbox: sandbox(),
    cgroupsPath: '/kubepods/c1',
    restrictOomScoreAdj: false,
    host: HOST,
    ...over,
  };
}

const kv = (key: string, value: string) => ({ key, value: Buffer.from(value) });

test('command and args: the four combinations of the kubelet rule', () => {
  const img: ImageConfigFile = { config: { Entrypoint: ['/ep', '-x'], Cmd: ['c1', 'c2'] } };
  assert.deepEqual(processArgs(containerConfig(), img), ['/ep', '-x', 'c1', 'c2']);
  assert.deepEqual(processArgs(containerConfig({ command: ['/bin/cmd'] }), img), ['/bin/cmd'], 'command alone drops the image CMD');
  assert.deepEqual(processArgs(containerConfig({ args: ['a1'] }), img), ['/ep', '-x', 'a1'], 'args alone keep the ENTRYPOINT');
  assert.deepEqual(processArgs(containerConfig({ command: ['/bin/cmd'], args: ['a1'] }), img), ['/bin/cmd', 'a1']);
  assert.deepEqual(processArgs(containerConfig(), { config: { Entrypoint: [''], Cmd: ['sh'] } }), ['sh'], 'ENTRYPOINT [""] means none');
  assert.deepEqual(processArgs(containerConfig(), { config: { Entrypoint: null, Cmd: ['sh'] } }), ['sh']);
  assert.throws(
    () => processArgs(containerConfig(), { config: {} }),
    (e: unknown) => e instanceof InvalidArgumentError && /no command specified/.test(e.message),
  );
});

test('buildSpec: an empty command is InvalidArgument', async () => {
  await assert.rejects(
    buildSpec(input({ image: { config: {} } })),
    (e: unknown) => e instanceof InvalidArgumentError && /no command specified/.test(e.message),
  );
});

test('env: default PATH, HOSTNAME, image env, CRI envs override by key', async () => {
  let spec = await buildSpec(input({ config: containerConfig({ envs: [kv('LANG', 'en_US.UTF-8'), kv('EXTRA', 'a=b')] }) }));
  assert.deepEqual(spec.process.env, ['PATH=/image/bin', 'HOSTNAME=pod-host', 'LANG=en_US.UTF-8', 'EXTRA=a=b']);
  spec = await buildSpec(input({ image: { config: { Cmd: ['x'] } } }));
  assert.deepEqual(spec.process.env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOSTNAME=pod-host']);
});

test('cwd: CRI working_dir, then the image WorkingDir, then /', async () => {
  assert.equal((await buildSpec(input({ config: containerConfig({ working_dir: '/work' }) }))).process.cwd, '/work');
  assert.equal((await buildSpec(input())).process.cwd, '/srv');
  assert.equal((await buildSpec(input({ image: { config: { Cmd: ['x'] } } }))).process.cwd, '/');
});

test('resolveUser: image USER forms', async () => {
  const root = tempRootfs();
  assert.deepEqual(await resolveUser(rootfsFiles(root), '', null), { uid: 0, gid: 0, additionalGids: [0], username: 'root' });
  assert.deepEqual(await resolveUser(rootfsFiles(root), 'alice', null), { uid: 1000, gid: 1000, additionalGids: [29, 50, 1000], username: 'alice' });
  assert.deepEqual(await resolveUser(rootfsFiles(root), '1001', null), { uid: 1001, gid: 1001, additionalGids: [44, 50, 1001], username: 'bob' });
  assert.deepEqual(await resolveUser(rootfsFiles(root), '4242', null), { uid: 4242, gid: 0, additionalGids: [0] }, 'a uid unknown to the image gets gid 0');
  assert.deepEqual(await resolveUser(rootfsFiles(root), '4242:77', null), { uid: 4242, gid: 77, additionalGids: [77] });
  assert.deepEqual((await resolveUser(rootfsFiles(root), 'alice:video', null)).gid, 44);
  assert.deepEqual(await resolveUser(rootfsFiles(root), 'bob:5', null), { uid: 1001, gid: 5, additionalGids: [5, 44, 50], username: 'bob' });
  await assert.rejects(resolveUser(rootfsFiles(root), 'mallory', null), (e: unknown) => e instanceof InvalidArgumentError && /mallory/.test(e.message));
  await assert.rejects(resolveUser(rootfsFiles(root), 'alice:nogroup', null), (e: unknown) => e instanceof InvalidArgumentError && /nogroup/.test(e.message));
  await assert.rejects(resolveUser(rootfsFiles(root), 'a:b:c', null), InvalidArgumentError);
});

test('resolveUser: the security context overrides the image user; supplemental groups merge', async () => {
  const root = tempRootfs();
  assert.deepEqual(await resolveUser(rootfsFiles(root), 'alice', sc({ run_as_user: { value: '1001' } })), {
    uid: 1001,
    gid: 1001,
    additionalGids: [44, 50, 1001],
    username: 'bob',
  });
  assert.deepEqual(await resolveUser(rootfsFiles(root), 'alice', sc({ run_as_user: { value: '1001' }, run_as_group: { value: '3000' } })), {
    uid: 1001,
    gid: 3000,
    additionalGids: [44, 50, 3000],
    username: 'bob',
  });
  assert.deepEqual((await resolveUser(rootfsFiles(root), '', sc({ run_as_username: 'alice' }))).uid, 1000);
  await assert.rejects(resolveUser(rootfsFiles(root), '', sc({ run_as_username: 'mallory' })), InvalidArgumentError);
  assert.deepEqual((await resolveUser(rootfsFiles(root), 'alice', sc({ supplemental_groups: ['2000', '29'] }))).additionalGids, [29, 50, 1000, 2000]);
  assert.deepEqual(
    (await resolveUser(rootfsFiles(root), 'alice', sc({ supplemental_groups: ['2000'], supplemental_groups_policy: 'Strict' }))).additionalGids,
    [1000, 2000],
  );
  // containerd refuses a group without a user (critest: "RunAsGroup is set without RunAsUser").
  await assert.rejects(resolveUser(rootfsFiles(root), 'alice', sc({ run_as_group: { value: '7' } })), /run_as_group is set without run_as_user/);
});

test('resolveUser: no /etc/passwd (scratch image) — numeric ids work, names fail', async () => {
  const root = tempRootfs({});
  assert.deepEqual(await resolveUser(rootfsFiles(root), '65532:65532', null), { uid: 65532, gid: 65532, additionalGids: [65532] });
  assert.deepEqual(await resolveUser(rootfsFiles(root), '', null), { uid: 0, gid: 0, additionalGids: [0] });
  await assert.rejects(resolveUser(rootfsFiles(root), 'nobody', null), InvalidArgumentError);
});

test('resolveUser: an absolute /etc/passwd symlink stays inside the rootfs', async () => {
  const root = tempRootfs({ 'etc/real/passwd': 'eve:x:4000:4000::/:/bin/sh\n' });
  fs.symlinkSync('/etc/real/passwd', path.join(root, 'etc/passwd'));
  assert.equal((await resolveUser(rootfsFiles(root), 'eve', null)).uid, 4000);
  fs.rmSync(path.join(root, 'etc/passwd'));
  fs.symlinkSync('../../../../../../../etc/real/passwd', path.join(root, 'etc/passwd'));
  assert.equal((await resolveUser(rootfsFiles(root), 'eve', null)).uid, 4000);
});

test('buildSpec: process user, terminal, noNewPrivileges', async () => {
  const spec = await buildSpec(
    input({
      image: { ...IMAGE, config: { ...IMAGE.config, User: 'alice' } },
      config: containerConfig({ tty: true }, sc({ namespace_options: nsOpts(), no_new_privs: true, supplemental_groups: ['3000'] })),
    }),
  );
  assert.deepEqual(spec.process.user, { uid: 1000, gid: 1000, additionalGids: [29, 50, 1000, 3000] });
  assert.equal(spec.process.terminal, true);
  assert.equal(spec.process.noNewPrivileges, true);
  const plain = await buildSpec(input());
  assert.equal(plain.process.terminal, false);
  assert.equal(plain.process.noNewPrivileges, false);
  await assert.rejects(
    buildSpec(input({ image: { ...IMAGE, config: { ...IMAGE.config, User: 'nobody-here' } } })),
    (e: unknown) => e instanceof InvalidArgumentError && /app/.test(e.message),
  );
});

test('capabilities: defaults, add/drop, ALL', async () => {
  const caps = async (add: string[], drop: string[]) =>
    capsOf(
      await buildSpec(
        input({
          config: containerConfig(
            {},
            sc({ namespace_options: nsOpts(), capabilities: { add_capabilities: add, drop_capabilities: drop, add_ambient_capabilities: [] } }),
          ),
        }),
      ),
    );
  const def = capsOf(await buildSpec(input()));
  assert.deepEqual(def.bounding, [...DEFAULT_CAPABILITIES]);
  assert.deepEqual(def.effective, [...DEFAULT_CAPABILITIES]);
  assert.deepEqual(def.permitted, [...DEFAULT_CAPABILITIES]);
  assert.equal(def.inheritable, undefined);
  assert.equal(def.ambient, undefined);

  const c1 = await caps(['SYS_ADMIN', 'cap_net_admin'], ['NET_RAW', 'MKNOD']);
  assert.ok(capSet(c1, 'bounding').includes('CAP_SYS_ADMIN') && capSet(c1, 'bounding').includes('CAP_NET_ADMIN'));
  assert.ok(!capSet(c1, 'bounding').includes('CAP_NET_RAW') && !capSet(c1, 'effective').includes('CAP_MKNOD'));

  const all = await caps(['ALL'], ['CHOWN']);
  assert.equal(capSet(all, 'bounding').length, 40);
  assert.ok(!capSet(all, 'bounding').includes('CAP_CHOWN'));

  assert.deepEqual((await caps([], ['ALL'])).bounding, []);
  assert.deepEqual((await caps(['NET_BIND_SERVICE'], ['ALL'])).permitted, ['CAP_NET_BIND_SERVICE']);
  await assert.rejects(caps(['NOT_A_CAP'], []), InvalidArgumentError);
});

test('privileged: all host caps, writable sysfs/cgroupfs, no masked paths, all devices, no cgroupns', async () => {
  const privileged = sc({ namespace_options: nsOpts(), privileged: true });
  await assert.rejects(
    buildSpec(input({ config: containerConfig({}, privileged) })),
    (e: unknown) => e instanceof InvalidArgumentError && /privileged/.test(e.message),
  );
  const spec = await buildSpec(
    input({ config: containerConfig({}, privileged), sandbox: sandbox({ config: podConfig({ privileged: true }) }), host: { ...HOST, lastCap: 38 } }),
  );
  assert.equal(capSet(capsOf(spec), 'bounding').length, 39);
  assert.equal(capSet(capsOf(spec), 'bounding').at(-1), 'CAP_PERFMON');
  assert.equal(spec.linux.maskedPaths, undefined);
  assert.equal(spec.linux.readonlyPaths, undefined);
  assert.deepEqual(mountOptions(spec, '/sys').at(-1), 'rw');
  assert.deepEqual(mountOptions(spec, '/sys/fs/cgroup').at(-1), 'rw');
  assert.deepEqual(spec.linux.resources?.devices, [{ allow: true, access: 'rwm' }]);
  assert.ok(!spec.linux.namespaces.some((n) => n.type === 'cgroup'));
});

test('masked and readonly paths: containerd defaults unless the security context gives its own', async () => {
  const spec = await buildSpec(input());
  assert.deepEqual(spec.linux.maskedPaths, [...DEFAULT_MASKED_PATHS]);
  assert.deepEqual(spec.linux.readonlyPaths, [...DEFAULT_READONLY_PATHS]);
  const custom = await buildSpec(
    input({ config: containerConfig({}, sc({ namespace_options: nsOpts(), masked_paths: ['/proc/x'], readonly_paths: ['/proc/y'] })) }),
  );
  assert.deepEqual(custom.linux.maskedPaths, ['/proc/x']);
  assert.deepEqual(custom.linux.readonlyPaths, ['/proc/y']);
});

test('namespaces: pod, node and container modes', async () => {
  const nsOf = async (ctr: NamespaceOption__Output, sb: Partial<SandboxInfo> = {}, extra: Partial<SpecInput> = {}) =>
    (
      await buildSpec(
        input({ config: containerConfig({}, sc({ namespace_options: ctr })), sandbox: sandbox({ config: podConfig({ ns: ctr }), ...sb }), ...extra }),
      )
    ).linux.namespaces;

  assert.deepEqual(await nsOf(nsOpts()), [
    { type: 'pid' },
    { type: 'ipc', path: '/run/tscri/ns/sb1/ipc' },
    { type: 'uts', path: '/run/tscri/ns/sb1/uts' },
    { type: 'mount' },
    { type: 'network', path: '/run/tscri/netns/sb1' },
    { type: 'cgroup' },
  ]);
  assert.deepEqual((await nsOf(nsOpts({ pid: 'POD' }), { pidns: '/proc/42/ns/pid' }))[0], { type: 'pid', path: '/proc/42/ns/pid' });
  await assert.rejects(nsOf(nsOpts({ pid: 'POD' })), FailedPreconditionError);
  assert.deepEqual((await nsOf(nsOpts({ pid: 'TARGET', target_id: 'c0' }), {}, { targetPidns: '/proc/77/ns/pid' }))[0], {
    type: 'pid',
    path: '/proc/77/ns/pid',
  });
  await assert.rejects(nsOf(nsOpts({ pid: 'TARGET', target_id: 'c0' })), InvalidArgumentError);

  const host = await nsOf(nsOpts({ pid: 'NODE', ipc: 'NODE', network: 'NODE' }), { netns: undefined, ipcns: undefined, utsns: undefined });
  assert.deepEqual(host, [{ type: 'mount' }, { type: 'cgroup' }]);
  const v1 = await nsOf(nsOpts(), {}, { host: { ...HOST, cgroupV2: false } });
  assert.ok(!v1.some((n) => n.type === 'cgroup'));
});

test("user namespace: the pod's pinned namespace first, its mappings for runc, and the same options from the container", async () => {
  const ids = [{ container_id: 0, host_id: 196608, length: 65536 }];
  const ns = nsOpts({ userns_options: { mode: 'POD', uids: ids, gids: ids } });
  const mappings = [{ containerId: 0, hostId: 196608, length: 65536 }];
  const userns = { path: '/run/tscri/ns/sb1/user', uids: mappings, gids: mappings };
  const spec = await buildSpec(input({ config: containerConfig({}, sc({ namespace_options: ns })), sandbox: sandbox({ config: podConfig({ ns }), userns }) }));
  assert.deepEqual(spec.linux.namespaces[0], { type: 'user', path: '/run/tscri/ns/sb1/user' });
  assert.deepEqual(spec.linux.uidMappings, [{ containerID: 0, hostID: 196608, size: 65536 }]);
  assert.deepEqual(spec.linux.gidMappings, [{ containerID: 0, hostID: 196608, size: 65536 }]);
  // No options of its own: the pod's.
  const inherited = await buildSpec(input({ config: containerConfig({}, sc()), sandbox: sandbox({ config: podConfig({ ns }), userns }) }));
  assert.deepEqual(inherited.linux.namespaces[0], { type: 'user', path: '/run/tscri/ns/sb1/user' });
  // Other mappings than the pod's, or the host's user namespace, are refused.
  const other = nsOpts({ userns_options: { mode: 'POD', uids: [{ container_id: 0, host_id: 262144, length: 65536 }], gids: ids } });
  await assert.rejects(
    buildSpec(input({ config: containerConfig({}, sc({ namespace_options: other })), sandbox: sandbox({ config: podConfig({ ns }), userns }) })),
    InvalidArgumentError,
  );
  const node = nsOpts({ userns_options: { mode: 'NODE', uids: [], gids: [] } });
  await assert.rejects(
    buildSpec(input({ config: containerConfig({}, sc({ namespace_options: node })), sandbox: sandbox({ config: podConfig({ ns }), userns }) })),
    InvalidArgumentError,
  );
  // A pod without one: no user namespace, no mappings.
  const plain = await buildSpec(input());
  assert.ok(!plain.linux.namespaces.some((n) => n.type === 'user'));
  assert.equal(plain.linux.uidMappings, undefined);
});

test('resources: CRI linux.resources to OCI, swap follows the memory limit', async () => {
  const r = resources({
    cpu_period: '100000',
    cpu_quota: '50000',
    cpu_shares: '512',
    cpuset_cpus: '0-1',
    cpuset_mems: '0',
    memory_limit_in_bytes: '268435456',
    hugepage_limits: [{ page_size: '2MB', limit: '4194304' }],
    unified: { 'memory.high': '200000000' },
    oom_score_adj: '-998',
  });
  const spec = await buildSpec(input({ config: containerConfig({}, undefined, r) }));
  assert.deepEqual(spec.linux.resources, {
    devices: [{ allow: false, access: 'rwm' }],
    cpu: { period: 100000, quota: 50000, shares: 512, cpus: '0-1', mems: '0' },
    memory: { limit: 268435456, swap: 268435456 },
    hugepageLimits: [{ pageSize: '2MB', limit: 4194304 }],
    unified: { 'memory.high': '200000000' },
  });
  assert.equal(spec.process.oomScoreAdj, -998);
  assert.equal(spec.linux.cgroupsPath, '/kubepods/c1');

  assert.deepEqual(toOciResources(resources({ memory_limit_in_bytes: '1000', memory_swap_limit_in_bytes: '-1' }), HOST), { memory: { limit: 1000, swap: -1 } });
  assert.deepEqual(
    toOciResources(resources({ memory_limit_in_bytes: '1000', hugepage_limits: [{ page_size: '2MB', limit: '1' }] }), {
      ...HOST,
      swapAvailable: false,
      hugetlbAvailable: false,
    }),
    {
      memory: { limit: 1000 },
    },
  );
  assert.deepEqual(toOciResources(resources(), HOST), {});
  assert.throws(() => toOciResources(resources({ cpu_shares: 'lots' }), HOST), InvalidArgumentError);

  const none = await buildSpec(input());
  assert.deepEqual(none.linux.resources, { devices: [{ allow: false, access: 'rwm' }] });
  assert.equal(none.process.oomScoreAdj, undefined);
});

test('oom_score_adj is clamped to our own when restricted', async () => {
  const at = async (adj: string, restrict: boolean) =>
    (await buildSpec(input({ restrictOomScoreAdj: restrict, config: containerConfig({}, undefined, resources({ oom_score_adj: adj })) }))).process.oomScoreAdj;
  assert.equal(await at('-999', true), -500);
  assert.equal(await at('1000', true), 1000);
  assert.equal(await at('-999', false), -999);
});

test('mounts: defaults, pod files, CRI mounts by depth with propagation; CRI wins', async () => {
  const spec = await buildSpec(
    input({
      config: containerConfig({
        mounts: [
          mount('/data/sub', '/host/sub', { readonly: true }),
          mount('/data', '/host/data', { propagation: 'PROPAGATION_HOST_TO_CONTAINER' }),
          mount('/shared', '/host/shared', { propagation: 'PROPAGATION_BIDIRECTIONAL' }),
          mount('/etc/hosts', '/kubelet/etc-hosts'),
        ],
      }),
    }),
  );
  const summary = spec.mounts.map((m) => `${m.destination} ${m.type} ${m.source} ${(m.options ?? []).join(',')}`);
  assert.deepEqual(summary, [
    '/proc proc proc nosuid,noexec,nodev',
    '/dev tmpfs tmpfs nosuid,strictatime,mode=755,size=65536k',
    '/dev/pts devpts devpts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5',
    '/dev/mqueue mqueue mqueue nosuid,noexec,nodev',
    '/sys sysfs sysfs nosuid,noexec,nodev,ro',
    '/sys/fs/cgroup cgroup cgroup nosuid,noexec,nodev,relatime,ro',
    '/data bind /host/data rbind,rslave,rw',
    '/shared bind /host/shared rbind,rshared,rw',
    '/data/sub bind /host/sub rbind,rprivate,ro',
    '/etc/hosts bind /kubelet/etc-hosts rbind,rprivate,rw',
    '/etc/hostname bind /var/lib/tscri/sandboxes/sb1/hostname rbind,rprivate,rw',
    '/etc/resolv.conf bind /var/lib/tscri/sandboxes/sb1/resolv.conf rbind,rprivate,rw',
    '/dev/shm bind /run/tscri/sandboxes/sb1/shm rbind,rprivate,rw',
  ]);
  assert.equal(spec.linux.rootfsPropagation, 'rshared');
});

test('mounts: no pod shm → own tmpfs; host IPC → host /dev/shm; /dev mount hides /dev/*; readonly rootfs', async () => {
  let spec = await buildSpec(input({ sandbox: sandbox({ shmPath: undefined, hostnamePath: '' }) }));
  assert.deepEqual(
    spec.mounts.find((m) => m.destination === '/dev/shm'),
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
  );
  assert.ok(!spec.mounts.some((m) => m.destination === '/etc/hostname'));
  assert.equal(spec.linux.rootfsPropagation, undefined);

  const hostIpc = nsOpts({ ipc: 'NODE' });
  spec = await buildSpec(
    input({ config: containerConfig({}, sc({ namespace_options: hostIpc })), sandbox: sandbox({ config: podConfig({ ns: hostIpc }), ipcns: undefined }) }),
  );
  assert.equal(mountAt(spec, '/dev/shm').source, '/dev/shm');

  // The defaults under /dev give way to a mounted /dev; the pod's /dev/shm still goes on top.
  spec = await buildSpec(input({ config: containerConfig({ mounts: [mount('/dev', '/dev')] }) }));
  assert.deepEqual(
    spec.mounts.filter((m) => m.destination.startsWith('/dev')).map((m) => `${m.destination} ${m.source}`),
    ['/dev /dev', '/dev/shm /run/tscri/sandboxes/sb1/shm'],
  );

  spec = await buildSpec(input({ config: containerConfig({}, sc({ namespace_options: nsOpts(), readonly_rootfs: true })) }));
  assert.equal(spec.root.readonly, true);
  assert.ok(mountOptions(spec, '/etc/hosts').includes('ro'));
  assert.equal((await buildSpec(input())).root.readonly, false);

  await assert.rejects(buildSpec(input({ config: containerConfig({ mounts: [mount('relative', '/x')] }) })), InvalidArgumentError);
  // runc 1.1 has no rro: an rro mount the daemon did not clone is refused, never weakened to a plain ro bind.
  await assert.rejects(
    buildSpec(input({ config: containerConfig({ mounts: [mount('/x', '/x', { readonly: true, recursive_read_only: true })] }) })),
    /recursive read-only mount at \/x was not made by the daemon/,
  );
  spec = await buildSpec(input({ config: containerConfig({ mounts: [mount('/x', '/x', { readonly: true })] }) }));
  assert.deepEqual(mountAt(spec, '/x').options, ['rbind', 'rprivate', 'ro']);
});

test('sysctls, annotations, root, version', async () => {
  const spec = await buildSpec(input({ sandbox: sandbox({ config: podConfig({ sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' } }) }) }));
  assert.equal(spec.ociVersion, '1.0.2');
  assert.equal(spec.root.path, input().rootfs);
  assert.deepEqual(spec.linux.sysctl, { 'net.ipv4.ip_unprivileged_port_start': '0' });
  assert.deepEqual(spec.annotations, {
    'io.kubernetes.cri.container-type': 'container',
    'io.kubernetes.cri.sandbox-id': 'sb1',
    'io.kubernetes.cri.sandbox-namespace': 'default',
    'io.kubernetes.cri.sandbox-uid': 'uid-1',
    'io.kubernetes.cri.sandbox-name': 'pod',
    'io.kubernetes.cri.container-name': 'app',
    'io.kubernetes.cri.image-name': 'busybox',
  });
  assert.equal((await buildSpec(input())).linux.sysctl, undefined);
  // The whole document must survive JSON (runc reads config.json).
  assert.deepEqual(JSON.parse(JSON.stringify(spec)), spec);
});

test('prepareMountSources: creates a missing host path, resolves symlinks', async () => {
  const dir = tempDir('tscri-mnt-');
  fs.mkdirSync(path.join(dir, 'real'));
  fs.symlinkSync(path.join(dir, 'real'), path.join(dir, 'link'));
  const out = await prepareMountSources([mount('/a', path.join(dir, 'missing/deep')), mount('/b', path.join(dir, 'link'))]);
  assert.ok(fs.statSync(path.join(dir, 'missing/deep')).isDirectory());
  assert.equal(out[1].host_path, fs.realpathSync(path.join(dir, 'real')));
});

test('seccomp: none when unset; the default profile resolved against the final capabilities', async () => {
  assert.equal((await buildSpec(input())).linux.seccomp, undefined);
  const withSc = (over: Partial<LinuxContainerSecurityContext__Output>) => input({ config: containerConfig({}, sc({ namespace_options: nsOpts(), ...over })) });
  const allows = (spec: OciSpec, name: string) => {
    const rules = spec.linux.seccomp?.syscalls;
    assert.ok(rules, 'seccomp syscall rules in the spec');
    return rules.some((s) => s.action === 'SCMP_ACT_ALLOW' && !s.args?.length && s.names.includes(name));
  };

  const plain = await buildSpec(withSc({ seccomp_profile_path: 'docker/default' }));
  assert.equal(plain.linux.seccomp?.defaultAction, 'SCMP_ACT_ERRNO');
  assert.ok(!allows(plain, 'sethostname'));
  const admin = await buildSpec(
    withSc({
      seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' },
      capabilities: { add_capabilities: ['SYS_ADMIN'], drop_capabilities: [], add_ambient_capabilities: [] },
    }),
  );
  assert.ok(allows(admin, 'sethostname'));
  // Dropping a capability also drops the syscalls it unlocks.
  const noChroot = await buildSpec(
    withSc({
      seccomp_profile_path: 'runtime/default',
      capabilities: { add_capabilities: [], drop_capabilities: ['SYS_CHROOT'], add_ambient_capabilities: [] },
    }),
  );
  assert.ok(allows(plain, 'chroot') && !allows(noChroot, 'chroot'));
  assert.equal((await buildSpec(withSc({ seccomp_profile_path: 'unconfined' }))).linux.seccomp, undefined);
});

test('seccomp: localhost profiles, privileged containers, and refused requests name the container', async () => {
  const dir = tempDir('tscri-seccomp-spec-');
  const file = path.join(dir, 'block-host-name.json');
  fs.writeFileSync(file, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['sethostname'], action: 'SCMP_ACT_ERRNO' }] }));
  const withSc = (over: Partial<LinuxContainerSecurityContext__Output>, privilegedPod = false) =>
    input({
      config: containerConfig({}, sc({ namespace_options: nsOpts(), ...over })),
      sandbox: sandbox({ config: podConfig({ privileged: privilegedPod }) }),
    });

  const spec = await buildSpec(withSc({ seccomp_profile_path: `localhost/${file}` }));
  assert.deepEqual(spec.linux.seccomp, { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['sethostname'], action: 'SCMP_ACT_ERRNO' }] });
  const privileged = await buildSpec(withSc({ privileged: true, seccomp_profile_path: `localhost/${file}` }, true));
  assert.equal(privileged.linux.seccomp, undefined);

  const refused = async (over: Partial<LinuxContainerSecurityContext__Output>, re: RegExp) =>
    assert.rejects(
      buildSpec(withSc(over)),
      (e: unknown) => e instanceof InvalidArgumentError && /container "app" \(c1\)/.test(e.message) && re.test(e.message),
    );
  await refused({ seccomp_profile_path: file }, /localhost\/<path>/);
  await refused({ seccomp_profile_path: `localhost/${dir}/missing.json` }, new RegExp(`${dir}/missing.json`));
  await refused({ seccomp: { profile_type: 'Unconfined', localhost_ref: file } }, /localhost_ref/);
});

test('apparmor and selinux on a host without them: defaults accepted, a Localhost apparmor profile refused', async () => {
  const withSc = (over: Partial<LinuxContainerSecurityContext__Output>) => input({ config: containerConfig({}, sc({ namespace_options: nsOpts(), ...over })) });
  for (const over of [
    { apparmor: { profile_type: 'RuntimeDefault' as const, localhost_ref: '' } },
    { apparmor: { profile_type: 'Unconfined' as const, localhost_ref: '' } },
    { apparmor_profile: 'runtime/default' },
    { selinux_options: { user: 'system_u', role: 'system_r', type: 'container_t', level: 's0:c1,c2' } },
  ]) {
    assert.equal((await buildSpec(withSc(over))).process.apparmorProfile, undefined);
  }
  await assert.rejects(
    buildSpec(withSc({ apparmor: { profile_type: 'Localhost', localhost_ref: 'k8s-nginx' } })),
    (e: unknown) => e instanceof FailedPreconditionError && /k8s-nginx/.test(e.message) && /AppArmor is not enabled/.test(e.message),
  );
  await assert.rejects(buildSpec(withSc({ apparmor_profile: 'k8s-nginx' })), InvalidArgumentError);
});
