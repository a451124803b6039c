// What a v1.36 kubelet expects beyond critest v1.26, end to end with a real daemon, runc 1.1
// and conmon: recursive read-only mounts (made by the daemon: runc 1.1 has no rro), image
// volumes (Mount.image, image_sub_path), the supplemental-groups policy, and pod-level resize
// (UpdatePodSandboxResources). Each is checked from inside a container, as a workload sees it.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { must } from '../helpers/must';
import { expectCriError, type CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import { pushImage, type PushedImage } from '../helpers/images';
import {
  SLEEPER,
  containerConfig,
  daemonConfig,
  execIn,
  makeCniFixture,
  bridgeExists,
  podConfig,
  removeTestCgroups,
  tailLog,
  type CniFixture,
} from '../helpers/pods';
import { Created, daemonMounts, describeLeaks, type LeakScope, type LeakSnapshot, removePodsAndLeftovers, snapshotLeaks, waitNoLeaks } from '../helpers/leaks';
import { APP_USER, pushSecurityImage } from '../helpers/security';
import type { Mount } from '../../src/gen/runtime/v1/Mount';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { LinuxContainerSecurityContext } from '../../src/gen/runtime/v1/LinuxContainerSecurityContext';

// A network of this file's own, like security.ts's: no other test file uses this bridge or subnet.
const NF_NETWORK = { bridge: 'tscri-nf0', subnet: '10.94.0.0/24', gateway: '10.94.0.1', name: 'tscri-nf' };
const NF_IP_PREFIX = '10.94.0.';
const MiB = 1024 * 1024;

let registry: Registry;
let daemon: Daemon;
let cni: CniFixture;
let image: PushedImage;
let volImage: PushedImage;
let logDir: string;
let scratchDir: string;
let baseline: LeakSnapshot;
const cri = (): CriClient => daemon.cri;
const tracked = new Created(NF_IP_PREFIX);

interface Pod {
  id: string;
  config: PodSandboxConfig;
}
let main: Pod;

function scope(): LeakScope {
  return tracked.scope(daemon);
}

async function runPod(name: string): Promise<Pod> {
  const config = podConfig(name, { logDirectory: path.join(logDir, name) });
  fs.mkdirSync(must(config.log_directory, 'log_directory in the pod config'), { recursive: true });
  const { pod_sandbox_id } = await cri().runtime.RunPodSandbox({ config, runtime_handler: '' });
  await tracked.pod(cri().runtime, pod_sandbox_id);
  return { id: pod_sandbox_id, config };
}

interface Ctr {
  name: string;
  mounts?: Mount[];
  sc?: LinuxContainerSecurityContext;
  img?: PushedImage;
}

async function create(c: Ctr): Promise<string> {
  const config = containerConfig(c.name, must((c.img ?? image).tagRef, 'a tag on the pushed image'), SLEEPER, { mounts: c.mounts ?? [] });
  config.linux = { ...config.linux, security_context: c.sc ?? {} };
  const { container_id } = await cri().runtime.CreateContainer({ pod_sandbox_id: main.id, config, sandbox_config: main.config });
  tracked.containerIds.push(container_id);
  return container_id;
}

async function startSleeper(c: Ctr): Promise<string> {
  const id = await create(c);
  await cri().runtime.StartContainer({ container_id: id });
  return id;
}

async function removeContainer(id: string): Promise<void> {
  await cri().runtime.StopContainer({ container_id: id, timeout: 0 });
  await cri().runtime.RemoveContainer({ container_id: id });
}

/** Runs `script` in the container; its output and exit code. */
async function sh(id: string, script: string): Promise<{ out: string; code: number }> {
  const r = await execIn(cri(), id, ['sh', '-c', script]);
  return { out: (r.stdout + r.stderr).trim(), code: r.exitCode };
}

/** A refused CreateContainer: its code and message; no container of that name may remain. */
async function expectCreateRefused(what: string, c: Ctr): Promise<{ code: string; details: string }> {
  const err = await expectCriError(what, () => create(c));
  const left = (await cri().runtime.ListContainers({ filter: { pod_sandbox_id: main.id } })).containers.filter((x) => x.metadata?.name === c.name);
  assert.deepEqual(
    left.map((x) => x.id),
    [],
    `${what}: no container named ${c.name} may remain after the refusal`,
  );
  return { code: err.codeName, details: err.details };
}

/** Mount points under the daemon's state dir that belong to one container's volumes. */
function volumeMounts(containerId: string): string[] {
  return daemonMounts([path.join(daemon.state, 'containers', containerId, 'volumes')]).mounts;
}

function bindMount(source: string, base: Partial<Mount>): Mount {
  return { host_path: source, readonly: true, propagation: 'PROPAGATION_PRIVATE', ...base };
}

function imageMount(containerPath: string, ref: string, subPath = ''): Mount {
  return { container_path: containerPath, host_path: '', readonly: true, image: { image: ref }, image_sub_path: subPath };
}

describe('node features of a v1.36 kubelet', () => {
  before(async () => {
    assert.ok(!bridgeExists(NF_NETWORK.bridge), `fixture: bridge ${NF_NETWORK.bridge} already exists; a previous run left it`);
    cni = makeCniFixture(NF_NETWORK);
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-nf-logs-'));
    scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-nf-scratch-'));
    registry = await startRegistry();
    image = await pushSecurityImage(registry.host, 'nf');
    // The volume image: no busybox, only data; a symlink inside, and two that point out.
    volImage = await pushImage(registry.host, 'nf-vol', 'v1', {
      layers: [
        {
          entries: [
            { type: 'dir', path: 'data' },
            { type: 'file', path: 'data/hello.txt', content: 'hello from an image volume\n' },
            { type: 'dir', path: 'data/nested' },
            { type: 'file', path: 'data/nested/deep.txt', content: 'deep\n' },
            { type: 'file', path: 'plain.txt', content: 'not a directory\n' },
          ],
        },
        {
          entries: [
            { type: 'file', path: 'data/second.txt', content: 'from the second layer\n' },
            { type: 'symlink', path: 'inside', target: 'data/nested' },
            { type: 'symlink', path: 'up', target: '../../..' },
            { type: 'symlink', path: 'abs', target: '/etc' },
            { type: 'symlink', path: 'data/sneaky', target: '../../../etc' },
          ],
        },
      ],
      config: {},
    });
    daemon = await startDaemon({ config: daemonConfig(cni) });
    baseline = snapshotLeaks(scope());
    await cri().image.PullImage({ image: { image: must(image.tagRef, 'a tag on the pushed tools image') } });
    main = await runPod('nf-main');
  });

  after(async () => {
    // before() may have failed before assigning these, which their declared types hide.
    const up: { daemon?: Daemon; registry?: Registry; cni?: CniFixture } = { daemon, registry, cni };
    if (up.daemon) {
      await removePodsAndLeftovers(cri().runtime, tracked.podIds, scope());
      await up.daemon.stop();
    }
    await up.registry?.stop();
    removeTestCgroups();
    up.cni?.remove();
    if (scratchDir) {
      // A tmpfs the rro test mounted, should it have failed before unmounting it.
      for (const m of daemonMounts([scratchDir])
        .mounts.map((x) => x.replace(/ \([^)]*\)$/, ''))
        .reverse()) {
        execFileSync('umount', ['-l', m]);
      }
    }
    for (const d of [logDir, scratchDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  test('Status reports recursive read-only mounts for every handler and the supplemental-groups policy', async () => {
    const res = await cri().runtime.Status({ verbose: false });
    assert.ok(res.runtime_handlers.length > 0, `runtime_handlers: saw ${JSON.stringify(res.runtime_handlers)}`);
    for (const h of res.runtime_handlers) {
      assert.equal(h.features?.recursive_read_only_mounts, true, `handler ${JSON.stringify(h.name)}: ${JSON.stringify(h.features)}`);
    }
    assert.equal(res.features?.supplemental_groups_policy, true, `features: ${JSON.stringify(res.features)}`);
  });

  // ---- recursive read-only mounts --------------------------------------------------------------

  test('a recursive read-only mount refuses writes on its submount (EROFS); a plain read-only bind does not', async () => {
    const host = fs.mkdtempSync(path.join(scratchDir, 'rro-'));
    const sub = path.join(host, 'sub');
    fs.mkdirSync(sub);
    fs.writeFileSync(path.join(host, 'top.txt'), 'top\n');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', sub]);
    let subMounted = true;
    try {
      fs.writeFileSync(path.join(sub, 'in-sub.txt'), 'sub\n');
      const id = await startSleeper({
        name: 'rro',
        mounts: [
          bindMount(host, { container_path: '/rro', recursive_read_only: true }),
          // The control: runc 1.1's "ro" bind leaves the submount writable.
          bindMount(host, { container_path: '/plain' }),
        ],
      });
      const read = await sh(id, 'cat /rro/top.txt /rro/sub/in-sub.txt');
      assert.deepEqual(read, { out: 'top\nsub', code: 0 }, 'the rro mount shows the host tree with its submount');
      const inSub = await sh(id, 'touch /rro/sub/new');
      assert.notEqual(inSub.code, 0, `writing in the submount of the rro mount must fail: ${JSON.stringify(inSub)}`);
      assert.match(inSub.out, /Read-only file system/, `EROFS on the submount: ${JSON.stringify(inSub)}`);
      const atTop = await sh(id, 'touch /rro/new');
      assert.match(atTop.out, /Read-only file system/, `EROFS at the top: ${JSON.stringify(atTop)}`);
      const plain = await sh(id, 'touch /plain/sub/plain-ok && echo ok');
      assert.deepEqual(plain, { out: 'ok', code: 0 }, 'control: a plain ro bind leaves its submount writable (so the rro check can fail)');
      assert.ok(fs.existsSync(path.join(sub, 'plain-ok')), 'the control write landed on the host tmpfs');
      // The host source is untouched by the clone: still writable there.
      fs.writeFileSync(path.join(sub, 'host-write.txt'), 'x');
      const status = must((await cri().runtime.ContainerStatus({ container_id: id, verbose: false })).status, `ContainerStatus.status of ${id}`);
      const m = status.mounts.find((x) => x.container_path === '/rro');
      assert.equal(m?.recursive_read_only, true, `ContainerStatus reports the mount as asked: ${JSON.stringify(m)}`);
      assert.equal(fs.readFileSync(path.join(sub, 'in-sub.txt'), 'utf8'), 'sub\n', 'the host submount keeps its files');
      // The clone lives in the container's mount namespace only: the host's owner of the source
      // can unmount and remove its submount while the container runs (critest's rro spec does).
      assert.deepEqual(volumeMounts(id), [], 'no staged clone is left mounted on the host once the container is created');
      execFileSync('umount', [sub]);
      subMounted = false;
      fs.rmdirSync(sub);
      // (The kernel drops the container's copy of a mount whose directory the host removed.)
      const after = await sh(id, 'cat /rro/top.txt; touch /rro/again');
      assert.match(after.out, /^top\n.*Read-only file system/s, `the container keeps its read-only tree: ${JSON.stringify(after)}`);
      await removeContainer(id);
      assert.ok(!fs.existsSync(path.join(daemon.state, 'containers', id)), 'the bundle is gone');
    } finally {
      if (subMounted) execFileSync('umount', [sub]);
    }
  });

  test('recursive_read_only is refused without readonly and with non-private propagation (InvalidArgument)', async () => {
    const host = fs.mkdtempSync(path.join(scratchDir, 'rro-bad-'));
    const cases: [string, Partial<Mount>][] = [
      ['readonly false', { readonly: false }],
      ['HOST_TO_CONTAINER', { propagation: 'PROPAGATION_HOST_TO_CONTAINER' }],
      ['BIDIRECTIONAL', { propagation: 'PROPAGATION_BIDIRECTIONAL' }],
    ];
    for (const [what, over] of cases) {
      const r = await expectCreateRefused(`rro with ${what}`, {
        name: 'rro-bad',
        mounts: [bindMount(host, { container_path: '/x', recursive_read_only: true, ...over })],
      });
      assert.equal(r.code, 'INVALID_ARGUMENT', `rro with ${what}: ${r.details}`);
      assert.match(r.details, /recursive_read_only/, `rro with ${what}: the message says why: ${r.details}`);
    }
  });

  // ---- image volumes ---------------------------------------------------------------------------

  test('an image volume shows the image files read-only; image_sub_path binds a subdirectory; ContainerStatus reports the image', async () => {
    await cri().image.PullImage({ image: { image: must(volImage.tagRef, 'a tag on the pushed image-volume image') } });
    const id = await startSleeper({
      name: 'imgvol',
      mounts: [
        imageMount('/vol', must(volImage.tagRef, 'a tag on the pushed image-volume image')),
        imageMount('/sub', must(volImage.tagRef, 'a tag on the pushed image-volume image'), 'data/nested'),
        imageMount('/link', must(volImage.tagRef, 'a tag on the pushed image-volume image'), 'inside'),
      ],
    });
    const read = await sh(id, 'cat /vol/data/hello.txt /vol/data/second.txt /sub/deep.txt /link/deep.txt');
    assert.deepEqual(
      read,
      { out: 'hello from an image volume\nfrom the second layer\ndeep\ndeep', code: 0 },
      'both layers, the sub path and a sub path through an in-image symlink',
    );
    const write = await sh(id, 'touch /vol/data/new');
    assert.match(write.out, /Read-only file system/, `the volume is read-only: ${JSON.stringify(write)}`);
    const writeSub = await sh(id, 'touch /sub/new');
    assert.match(writeSub.out, /Read-only file system/, `the sub path is read-only: ${JSON.stringify(writeSub)}`);
    const hidden = await sh(id, 'ls /sub');
    assert.equal(hidden.out, 'deep.txt', 'only the sub directory is visible at /sub');

    const status = must((await cri().runtime.ContainerStatus({ container_id: id, verbose: false })).status, `ContainerStatus.status of ${id}`);
    const m = status.mounts.find((x) => x.container_path === '/sub');
    assert.equal(m?.image?.image, volImage.tagRef, `ContainerStatus mount keeps its image: ${JSON.stringify(m)}`);
    assert.equal(m?.image_sub_path, 'data/nested');

    // containerd's answer: RemoveImage succeeds (the names go), and the volume's layers stay
    // until the container using them is removed (its lease on the snapshot).
    await cri().image.RemoveImage({ image: { image: must(volImage.tagRef, 'a tag on the pushed image-volume image') } });
    const listed = (await cri().image.ListImages({})).images.map((i) => i.id);
    assert.ok(!listed.includes(volImage.configDigest), 'the removed image is no longer listed');
    const layerDirs = volImage.chainIds.map((c) => path.join(daemon.root, 'layers', c.slice('sha256:'.length)));
    assert.deepEqual(
      layerDirs.filter((d) => !fs.existsSync(d)),
      [],
      'the layers of a mounted image volume are kept',
    );
    const still = await sh(id, 'cat /vol/data/hello.txt');
    assert.deepEqual(still, { out: 'hello from an image volume', code: 0 }, 'the volume still reads after RemoveImage');
    // A new container cannot mount it any more: the image is gone.
    const gone = await expectCreateRefused('image volume of a removed image', {
      name: 'imgvol-gone',
      mounts: [imageMount('/vol', must(volImage.tagRef, 'a tag on the pushed image-volume image'))],
    });
    assert.equal(gone.code, 'NOT_FOUND', gone.details);

    assert.deepEqual(volumeMounts(id), [], 'the image volumes are mounted in the container only, not left on the host');
    await removeContainer(id);
    assert.deepEqual(
      layerDirs.filter((d) => fs.existsSync(d)),
      [],
      'the layers go once no container uses them',
    );
  });

  test('image_sub_path that escapes the image, is missing or is not a directory is refused; nothing stays mounted', async () => {
    await cri().image.PullImage({ image: { image: must(volImage.tagRef, 'a tag on the pushed image-volume image') } });
    const cases: [string, string][] = [
      ['../etc', 'INVALID_ARGUMENT'],
      ['/data', 'INVALID_ARGUMENT'],
      ['up', 'INVALID_ARGUMENT'],
      ['abs', 'INVALID_ARGUMENT'],
      ['data/sneaky', 'INVALID_ARGUMENT'],
      ['data/nope', 'NOT_FOUND'],
      ['plain.txt', 'INVALID_ARGUMENT'],
    ];
    for (const [sub, code] of cases) {
      const r = await expectCreateRefused(`image_sub_path ${sub}`, {
        name: 'imgvol-bad',
        mounts: [imageMount('/vol', must(volImage.tagRef, 'a tag on the pushed image-volume image'), sub)],
      });
      assert.equal(r.code, code, `image_sub_path ${JSON.stringify(sub)}: ${r.details}`);
    }
    const notRo = await expectCreateRefused('image volume not readonly', {
      name: 'imgvol-rw',
      mounts: [{ ...imageMount('/vol', must(volImage.tagRef, 'a tag on the pushed image-volume image')), readonly: false }],
    });
    assert.equal(notRo.code, 'INVALID_ARGUMENT', notRo.details);
    assert.deepEqual(
      daemonMounts([path.join(daemon.state, 'containers')]).mounts.filter((m) => m.includes('/volumes')),
      [],
      'no staged volume is left after the refusals',
    );
    await cri().image.RemoveImage({ image: { image: must(volImage.tagRef, 'a tag on the pushed image-volume image') } });
  });

  test('a restart unmounts the volumes of the containers it cleans up and keeps the layers of live ones', async () => {
    await cri().image.PullImage({ image: { image: must(volImage.tagRef, 'a tag on the pushed image-volume image') } });
    const host = fs.mkdtempSync(path.join(scratchDir, 'rro-restart-'));
    const survivor = await startSleeper({
      name: 'vol-survivor',
      mounts: [imageMount('/vol', must(volImage.tagRef, 'a tag on the pushed image-volume image'))],
    });
    const orphan = await startSleeper({
      name: 'vol-orphan',
      mounts: [
        imageMount('/vol', must(volImage.tagRef, 'a tag on the pushed image-volume image')),
        bindMount(host, { container_path: '/rro', recursive_read_only: true }),
      ],
    });
    const halfmade = await create({ name: 'vol-halfmade', mounts: [imageMount('/vol', must(volImage.tagRef, 'a tag on the pushed image-volume image'))] });
    // Only the containers hold the layers now.
    await cri().image.RemoveImage({ image: { image: must(volImage.tagRef, 'a tag on the pushed image-volume image') } });
    const how = await daemon.stop('SIGKILL', { keep: true });
    assert.equal(how, 'signal SIGKILL');
    // A container whose record never reached the disk, and one whose create was cut short.
    fs.rmSync(path.join(daemon.root, 'meta', 'containers', `${orphan}.json`));
    const halfFile = path.join(daemon.root, 'meta', 'containers', `${halfmade}.json`);
    fs.writeFileSync(halfFile, JSON.stringify({ ...(JSON.parse(fs.readFileSync(halfFile, 'utf8')) as object), phase: 'creating' }));
    await daemon.restart();
    for (const [what, id] of [
      ['orphan', orphan],
      ['cut-short', halfmade],
    ] as const) {
      assert.deepEqual(volumeMounts(id), [], `the ${what} container's volumes are unmounted at start\n${tailLog(daemon.logs(), 20)}`);
      assert.ok(!fs.existsSync(path.join(daemon.state, 'containers', id)), `the ${what} container's bundle is gone`);
    }
    const layerDirs = volImage.chainIds.map((c) => path.join(daemon.root, 'layers', c.slice('sha256:'.length)));
    assert.deepEqual(
      layerDirs.filter((d) => !fs.existsSync(d)),
      [],
      'the start-up garbage collection keeps the layers a live container mounts',
    );
    const read = await sh(survivor, 'cat /vol/data/hello.txt');
    assert.deepEqual(read, { out: 'hello from an image volume', code: 0 }, 'the survivor still reads its volume');
    await removeContainer(survivor);
    assert.deepEqual(
      layerDirs.filter((d) => fs.existsSync(d)),
      [],
      'the layers go with the last container mounting them',
    );
  });

  // ---- supplemental groups policy ----------------------------------------------------------------

  test('supplemental_groups_policy: Merge adds the image /etc/group groups, Strict only the requested ones; ContainerStatus.user says so', async () => {
    const want = {
      Merge: [APP_USER.gid, APP_USER.extraGid, 5555],
      Strict: [APP_USER.gid, 5555],
    };
    for (const policy of ['Merge', 'Strict'] as const) {
      const id = await startSleeper({
        name: `groups-${policy.toLowerCase()}`,
        sc: { run_as_user: { value: APP_USER.uid }, supplemental_groups: ['5555'], supplemental_groups_policy: policy },
      });
      const r = await sh(id, 'id -G');
      const seen = [...new Set(r.out.split(/\s+/).map(Number))].sort((a, b) => a - b);
      assert.deepEqual(seen, want[policy], `id -G under ${policy}: ${JSON.stringify(r)}`);
      const user = must((await cri().runtime.ContainerStatus({ container_id: id, verbose: false })).status, `ContainerStatus.status of ${id}`).user?.linux;
      assert.deepEqual(
        { uid: Number(user?.uid), gid: Number(user?.gid), groups: (user?.supplemental_groups ?? []).map(Number) },
        { uid: APP_USER.uid, gid: APP_USER.gid, groups: want[policy] },
        `ContainerStatus.user under ${policy}: ${JSON.stringify(user)}`,
      );
      await removeContainer(id);
    }
  });

  // ---- pod-level resize --------------------------------------------------------------------------

  test('UpdatePodSandboxResources writes the pod totals (resources + overhead) to its cgroup; an unknown pod is NOT_FOUND', async () => {
    // The pod cgroup exists once a container runs in it (runc makes the parent).
    const id = await startSleeper({ name: 'resize' });
    const parent = must(main.config.linux?.cgroup_parent, 'linux.cgroup_parent in the pod config');
    const v2 = fs.existsSync('/sys/fs/cgroup/cgroup.controllers');
    const read = (controller: string, file: string): string => fs.readFileSync(path.join('/sys/fs/cgroup', v2 ? '' : controller, parent, file), 'utf8').trim();
    const resize = async (memMiB: number, quota: number) => {
      await cri().runtime.UpdatePodSandboxResources({
        pod_sandbox_id: main.id,
        overhead: { cpu_shares: 24, memory_limit_in_bytes: 16 * MiB },
        resources: { cpu_shares: 512, cpu_quota: quota, cpu_period: 100000, memory_limit_in_bytes: memMiB * MiB },
      });
    };
    const limits = () =>
      v2
        ? { cpu: read('cpu', 'cpu.max'), memory: Number(read('memory', 'memory.max')) / MiB, weight: read('cpu', 'cpu.weight') }
        : {
            cpu: `${read('cpu', 'cpu.cfs_quota_us')} ${read('cpu', 'cpu.cfs_period_us')}`,
            memory: Number(read('memory', 'memory.limit_in_bytes')) / MiB,
            shares: read('cpu', 'cpu.shares'),
          };
    // 536 shares = 512 + 24 of overhead; on v2 runc's linear map makes that weight 21.
    const shares = v2 ? { weight: '21' } : { shares: '536' };
    await resize(256, 50000);
    assert.deepEqual(limits(), { cpu: '50000 100000', memory: 272, ...shares }, `pod cgroup ${parent} after the first resize`);
    await resize(128, 20000);
    assert.deepEqual(limits(), { cpu: '20000 100000', memory: 144, ...shares }, `pod cgroup ${parent} after shrinking`);
    // What the kubelet sends for a pod without a memory limit: the page-aligned int64 maximum.
    // The kubelet rejects the resize on an error, so this must succeed.
    await cri().runtime.UpdatePodSandboxResources({
      pod_sandbox_id: main.id,
      overhead: null,
      resources: { cpu_shares: 2, cpu_quota: -1, cpu_period: 100000, memory_limit_in_bytes: '9223372036854771712' },
    });
    const alive = await sh(id, 'echo alive');
    assert.deepEqual(alive, { out: 'alive', code: 0 }, 'the container runs on under the new pod limits');
    const err = await expectCriError('UpdatePodSandboxResources of an unknown pod', () =>
      cri().runtime.UpdatePodSandboxResources({ pod_sandbox_id: 'f'.repeat(64), overhead: null, resources: { memory_limit_in_bytes: MiB } }),
    );
    assert.equal(err.codeName, 'NOT_FOUND', err.details);
    await removeContainer(id);
  });

  test('leaves nothing behind: no mounts, netns pins, conmon processes, cgroups or iptables rules', async () => {
    for (const id of [...tracked.podIds]) {
      await cri().runtime.StopPodSandbox({ pod_sandbox_id: id });
      await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
    }
    const leaks = await waitNoLeaks(scope(), baseline);
    assert.equal(describeLeaks(leaks), '', 'leftovers after every pod was removed');
    const dirs = [daemon.root, daemon.state, daemon.base];
    const how = await daemon.stop('SIGTERM', { keep: true });
    const { mounts, netnsPins } = daemonMounts(dirs);
    assert.deepEqual([...mounts, ...netnsPins], [], `mounts under ${daemon.base} after the daemon stopped (${how}); log tail:\n${tailLog(daemon.logs(), 20)}`);
  });
});
