// User namespaces end to end (the pod's hostUsers: false): a real daemon, runc 1.1 and a pod of
// its own bridge, and what its containers see of themselves — their uid_map, the owners of their
// rootfs and volume files — against what the host sees of the files they write; the requests the
// CRI says to refuse; and nothing left (mounts, pins, helper processes) once the pod is gone.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expectCriError, type CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import { busyboxLayer, pushImage, type PushedImage } from '../helpers/images';
import {
  EXTRA_APPLETS,
  INDEX_HTML,
  SLEEPER,
  containerConfig,
  daemonConfig,
  execIn,
  httpGet,
  logLines,
  makeCniFixture,
  podConfig,
  readCriLog,
  removeTestCgroups,
  waitFor,
  waitForState,
  type CniFixture,
  type TestNetwork,
} from '../helpers/pods';
import { Created, describeLeaks, removePodsAndLeftovers, snapshotLeaks, waitNoLeaks, type LeakSnapshot } from '../helpers/leaks';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { UserNamespace } from '../../src/gen/runtime/v1/UserNamespace';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig';

const NET: TestNetwork = { bridge: 'tscri-un0', subnet: '10.95.0.0/24', gateway: '10.95.0.1', name: 'tscri-un' };

// The kubelet hands out ranges of 65536 at multiples of 65536; any free one will do here.
const HOST_ID = 65536 * 37;
const LENGTH = 65536;
const MAPPING = [{ container_id: 0, host_id: HOST_ID, length: LENGTH }];
const POD_USERNS: UserNamespace = { mode: 'POD', uids: MAPPING, gids: MAPPING };
// An image file owned by this uid shows as it inside, and as HOST_ID + it on the host.
const APP_UID = 1234;

let registry: Registry;
let daemon: Daemon;
let cni: CniFixture;
let image: PushedImage;
let logDir: string;
let volume: string;
let baseline: LeakSnapshot;
const cri = (): CriClient => daemon.cri;
const tracked = new Created('10.95.0.');

type PodSecurity = NonNullable<NonNullable<PodSandboxConfig['linux']>['security_context']>;
type ContainerSecurity = NonNullable<NonNullable<ContainerConfig['linux']>['security_context']>;

/** The pod's security context, which podConfig always sets; the tests edit it in place. */
function podSecurity(config: PodSandboxConfig): PodSecurity {
  const sc = config.linux?.security_context;
  assert.ok(sc, `linux.security_context in the config of pod ${config.metadata?.name ?? '?'}`);
  return sc;
}

/** The container's security context, which ctr() always sets. */
function containerSecurity(config: ContainerConfig): ContainerSecurity {
  const sc = config.linux?.security_context;
  assert.ok(sc, `linux.security_context in the config of container ${config.metadata?.name ?? '?'}`);
  return sc;
}

function usernsPod(name: string, userns: UserNamespace = POD_USERNS, pid: 'POD' | 'CONTAINER' = 'CONTAINER'): PodSandboxConfig {
  const config = podConfig(name, { logDirectory: path.join(logDir, name), hostname: `${name}-host` });
  podSecurity(config).namespace_options = { network: 'POD', pid, ipc: 'POD', userns_options: userns };
  assert.ok(config.log_directory, `a log directory in the config of pod ${name}`);
  fs.mkdirSync(config.log_directory, { recursive: true });
  return config;
}

function ctr(name: string, pod: PodSandboxConfig, command: string[], extra: Partial<ContainerConfig> = {}): ContainerConfig {
  assert.ok(image.tagRef, 'the userns image pushed with a tag');
  const config = { ...containerConfig(name, image.tagRef, command), ...extra };
  // As the kubelet does: the container repeats the pod's namespace options.
  config.linux = { ...config.linux, security_context: { namespace_options: podSecurity(pod).namespace_options } };
  return config;
}

async function runPod(config: PodSandboxConfig): Promise<string> {
  const { pod_sandbox_id } = await cri().runtime.RunPodSandbox({ config, runtime_handler: '' });
  await tracked.pod(cri().runtime, pod_sandbox_id);
  return pod_sandbox_id;
}

async function start(podId: string, pod: PodSandboxConfig, config: ContainerConfig): Promise<string> {
  const { container_id } = await cri().runtime.CreateContainer({ pod_sandbox_id: podId, config, sandbox_config: pod });
  tracked.containerIds.push(container_id);
  await cri().runtime.StartContainer({ container_id });
  return container_id;
}

function mapLines(text: string): string[] {
  return text
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/).join(' '));
}

/** Processes whose user namespace is `ino` (a /proc/<pid>/ns/user link target). */
function processesInUserns(ns: string): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readlinkSync(`/proc/${name}/ns/user`) === ns) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('user namespaces (hostUsers: false)', { timeout: 240_000 }, () => {
  before(async () => {
    cni = makeCniFixture(NET);
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-unlogs-'));
    volume = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-unvol-'));
    fs.chmodSync(volume, 0o755);
    fs.writeFileSync(path.join(volume, 'root-owned'), 'r\n');
    fs.writeFileSync(path.join(volume, 'app-owned'), 'a\n');
    fs.chownSync(path.join(volume, 'app-owned'), APP_UID, APP_UID);
    fs.chmodSync(path.join(volume, 'root-owned'), 0o644);
    registry = await startRegistry();
    image = await pushImage(registry.host, 'userns', 'v1', {
      layers: [
        await busyboxLayer(),
        {
          entries: [
            { type: 'dir', path: 'bin' },
            ...EXTRA_APPLETS.map((a) => ({ type: 'symlink' as const, path: `bin/${a}`, target: 'busybox' })),
            { type: 'dir', path: 'www' },
            { type: 'file', path: 'www/index.html', content: INDEX_HTML },
            { type: 'dir', path: 'home' },
            { type: 'dir', path: 'home/app', uid: APP_UID, gid: APP_UID, mode: 0o755 },
            { type: 'file', path: 'home/app/own', content: 'mine\n', uid: APP_UID, gid: APP_UID },
          ],
        },
      ],
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
    });
    daemon = await startDaemon({ config: daemonConfig(cni) });
    // runc reaches the pod's files as the pod's root: the temp base (mkdtemp: 0700) must let
    // it through, as the default /run/tscri (0711) does.
    fs.chmodSync(daemon.base, 0o711);
    assert.ok(image.tagRef, 'the userns image pushed with a tag');
    await cri().image.PullImage({ image: { image: image.tagRef } });
    baseline = snapshotLeaks(tracked.scope(daemon));
  });

  after(async () => {
    // Each is unset when before() failed ahead of it.
    if (daemon as Daemon | undefined) {
      await removePodsAndLeftovers(cri().runtime, tracked.podIds, tracked.scope(daemon));
      await daemon.stop();
    }
    await (registry as Registry | undefined)?.stop();
    (cni as CniFixture | undefined)?.remove();
    fs.rmSync(logDir, { recursive: true, force: true });
    fs.rmSync(volume, { recursive: true, force: true });
    const left = removeTestCgroups();
    assert.deepEqual(left, [], `test cgroups could not be removed: ${left.join('; ')}`);
  });

  test('Status reports user namespaces for every runtime handler (the start-up probe passed)', async () => {
    const res = await cri().runtime.Status({ verbose: false });
    assert.ok(res.runtime_handlers.length >= 2, JSON.stringify(res.runtime_handlers));
    for (const h of res.runtime_handlers) assert.equal(h.features?.user_namespaces, true, `handler ${JSON.stringify(h.name)}: ${JSON.stringify(h.features)}`);
  });

  test('a POD user namespace: mappings, owners inside and on the host, volumes, pod files, network, and nothing left after', async () => {
    const pod = usernsPod('userns');
    const podId = await runPod(pod);
    const volumeMount = {
      container_path: '/vol',
      host_path: volume,
      readonly: false,
      selinux_relabel: false,
      propagation: 'PROPAGATION_PRIVATE' as const,
    };
    const id = await start(podId, pod, ctr('main', pod, SLEEPER, { mounts: [volumeMount] }));
    const ok = async (cmd: string[]): Promise<string> => {
      const r = await execIn(cri(), id, cmd);
      assert.equal(r.exitCode, 0, `${cmd.join(' ')}: exit ${r.exitCode}, stderr ${r.stderr}`);
      return r.stdout;
    };

    // The mapping the kubelet sent, for uids and gids, and root inside.
    assert.deepEqual(mapLines(await ok(['cat', '/proc/self/uid_map'])), [`0 ${HOST_ID} ${LENGTH}`]);
    assert.deepEqual(mapLines(await ok(['cat', '/proc/self/gid_map'])), [`0 ${HOST_ID} ${LENGTH}`]);
    assert.equal((await ok(['id', '-u'])).trim(), '0');

    // The image's files keep their owners as the container sees them: root's are root's, the
    // app user's the app user's (not nobody, 65534, as without idmapped layers).
    assert.deepEqual((await ok(['stat', '-c', '%u:%g %n', '/', '/bin/busybox', '/etc/passwd', '/home/app/own'])).trim().split('\n'), [
      '0:0 /',
      '0:0 /bin/busybox',
      '0:0 /etc/passwd',
      `${APP_UID}:${APP_UID} /home/app/own`,
    ]);
    // What it writes lands in its upper dir with the mapped owners; a copied-up file too.
    await ok(['sh', '-c', 'echo new > /created && echo more >> /etc/passwd && echo app >> /home/app/own']);
    const upper = path.join(daemon.root, 'containers', id, 'upper');
    for (const [f, uid] of [
      ['created', HOST_ID],
      ['etc/passwd', HOST_ID],
      ['home/app/own', HOST_ID + APP_UID],
    ] as const) {
      const st = fs.statSync(path.join(upper, f));
      assert.deepEqual([st.uid, st.gid], [uid, uid], `host owner of ${f} in the upper dir`);
    }
    // Layers are untouched: the change went to the upper dir.
    assert.ok(!fs.readFileSync(path.join(upper, 'etc/passwd'), 'utf8').startsWith('more'));

    // The volume is idmapped (KEP-127): the pod sees its files with the owners a pod without a
    // user namespace would see (not nobody), and what its root writes there is root's on disk.
    assert.deepEqual((await ok(['stat', '-c', '%u:%g %n', '/vol/root-owned', '/vol/app-owned'])).trim().split('\n'), [
      '0:0 /vol/root-owned',
      `${APP_UID}:${APP_UID} /vol/app-owned`,
    ]);
    await ok(['sh', '-c', 'echo hi > /vol/from-pod']);
    const written = fs.statSync(path.join(volume, 'from-pod'));
    assert.deepEqual([written.uid, written.gid], [0, 0]);

    // The pod's files and /dev/shm belong to the pod's root.
    assert.deepEqual((await ok(['stat', '-c', '%u:%g %n', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/dev/shm'])).trim().split('\n'), [
      '0:0 /etc/hosts',
      '0:0 /etc/hostname',
      '0:0 /etc/resolv.conf',
      '0:0 /dev/shm',
    ]);
    await ok(['sh', '-c', 'echo x > /dev/shm/x']);
    assert.equal((await ok(['hostname'])).trim(), 'userns-host');

    // The network namespace belongs to the pod's user namespace: its root may bind port 80.
    const network = (await cri().runtime.PodSandboxStatus({ pod_sandbox_id: podId })).status?.network;
    assert.ok(network, `network in the status of pod ${podId}`);
    const ip = network.ip;
    const web = await start(podId, pod, ctr('web', pod, ['httpd', '-f', '-p', '80', '-h', '/www']));
    await waitForState(cri(), web, 'CONTAINER_RUNNING');
    const page = await waitFor(`httpd on ${ip}:80 in the pod`, () => httpGet(`http://${ip}:80/`).catch(() => undefined), 15_000);
    assert.equal(page.body, INDEX_HTML);

    // Remove: no process left in the pod's user namespace, no mount, no pin.
    const { info } = await cri().runtime.ContainerStatus({ container_id: id, verbose: true });
    assert.ok(info.info, `verbose info in the status of container ${id}`);
    const pid = (JSON.parse(info.info) as { pid: number }).pid;
    const userns = fs.readlinkSync(`/proc/${pid}/ns/user`);
    assert.notEqual(userns, fs.readlinkSync('/proc/self/ns/user'));
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: podId });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: podId });
    await waitFor('no process left in the pod user namespace', () => (processesInUserns(userns).length === 0 ? true : undefined));
    const leaks = await waitNoLeaks(tracked.scope(daemon), baseline);
    assert.deepEqual(leaks, {}, describeLeaks(leaks));
    assert.deepEqual(fs.readdirSync(volume).sort(), ['app-owned', 'from-pod', 'root-owned']);
  });

  test('an image volume and a recursive read-only volume in a pod user namespace: mapped owners, read-only all the way down', async () => {
    const pod = usernsPod('userns-vols');
    const podId = await runPod(pod);
    const sub = path.join(volume, 'sub');
    fs.mkdirSync(sub, { recursive: true });
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', sub]).status, 0, "tmpfs on the volume's sub dir");
    try {
      fs.writeFileSync(path.join(sub, 'in-submount'), 's\n');
      const ref = image.tagRef;
      assert.ok(ref, 'the userns image pushed with a tag');
      const mounts = [
        // The image itself as a volume: its layers come through the pod's idmapped view.
        { container_path: '/img', host_path: '', readonly: true, image: { image: ref }, image_sub_path: 'home' },
        { container_path: '/rro', host_path: volume, readonly: true, recursive_read_only: true, propagation: 'PROPAGATION_PRIVATE' as const },
      ];
      const id = await start(podId, pod, ctr('vols', pod, SLEEPER, { mounts }));
      const run = (cmd: string[]) => execIn(cri(), id, cmd);
      const owners = await run(['stat', '-c', '%u:%g %n', '/img/app/own', '/img', '/rro/root-owned', '/rro/app-owned', '/rro/sub/in-submount']);
      assert.equal(owners.exitCode, 0, owners.stderr);
      assert.deepEqual(owners.stdout.trim().split('\n'), [
        `${APP_UID}:${APP_UID} /img/app/own`,
        '0:0 /img',
        '0:0 /rro/root-owned',
        `${APP_UID}:${APP_UID} /rro/app-owned`,
        '0:0 /rro/sub/in-submount',
      ]);
      for (const f of ['/img/app/x', '/rro/x', '/rro/sub/x']) {
        const w = await run(['sh', '-c', `echo x > ${f}`]);
        assert.notEqual(w.exitCode, 0, `${f} must not be writable`);
        assert.match(w.stderr, /Read-only file system/, `${f}: ${w.stderr}`);
      }
      await cri().runtime.StopPodSandbox({ pod_sandbox_id: podId });
      await cri().runtime.RemovePodSandbox({ pod_sandbox_id: podId });
      const leaks = await waitNoLeaks(tracked.scope(daemon), baseline);
      assert.deepEqual(leaks, {}, describeLeaks(leaks));
    } finally {
      spawnSync('umount', ['-l', sub]);
      fs.rmSync(sub, { recursive: true, force: true });
    }
  });

  test('a shared PID namespace lives in the pod user namespace (its /proc mounts)', async () => {
    const pod = usernsPod('userns-pid', POD_USERNS, 'POD');
    const podId = await runPod(pod);
    const config = ctr('ps', pod, ['sh', '-c', 'cat /proc/self/uid_map; ps -o pid,comm']);
    const id = await start(podId, pod, config);
    await waitForState(cri(), id, 'CONTAINER_EXITED');
    assert.ok(pod.log_directory && config.log_path, `a log directory and log path for container ps in pod ${podId}`);
    const out = logLines(readCriLog(path.join(pod.log_directory, config.log_path)), 'stdout');
    assert.deepEqual(mapLines(out[0] ?? ''), [`0 ${HOST_ID} ${LENGTH}`], out.join('\n'));
    // pid 1 is the pod's holder, not this container.
    assert.ok(
      out.some((l) => /^\s*1\s+sh$/.test(l)),
      out.join('\n'),
    );
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: podId });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: podId });
  });

  test('a daemon restart keeps the pod and its container; removal after it leaves nothing', async () => {
    const pod = usernsPod('userns-restart');
    const podId = await runPod(pod);
    const id = await start(podId, pod, ctr('sleeper', pod, SLEEPER));
    await daemon.restart();
    assert.equal((await cri().runtime.ContainerStatus({ container_id: id })).status?.state, 'CONTAINER_RUNNING');
    const r = await execIn(cri(), id, ['cat', '/proc/self/uid_map']);
    assert.deepEqual(mapLines(r.stdout), [`0 ${HOST_ID} ${LENGTH}`], r.stderr);
    // A second container after the restart gets the same user namespace.
    const second = await start(podId, pod, ctr('second', pod, SLEEPER));
    const ns = async (cid: string) => {
      const { info } = await cri().runtime.ContainerStatus({ container_id: cid, verbose: true });
      assert.ok(info.info, `verbose info in the status of container ${cid}`);
      return fs.readlinkSync(`/proc/${(JSON.parse(info.info) as { pid: number }).pid}/ns/user`);
    };
    assert.equal(await ns(second), await ns(id));
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: podId });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: podId });
    const leaks = await waitNoLeaks(tracked.scope(daemon), baseline);
    assert.deepEqual(leaks, {}, describeLeaks(leaks));
  });

  test('refused as the CRI says: several mappings, container ID 0 unmapped, CONTAINER and TARGET modes, host namespaces', async () => {
    const two = [...MAPPING, { container_id: LENGTH, host_id: HOST_ID * 2, length: LENGTH }];
    const cases: [string, PodSandboxConfig][] = [
      ['two uid mappings', usernsPod('bad-two', { mode: 'POD', uids: two, gids: MAPPING })],
      ['two gid mappings', usernsPod('bad-two-gid', { mode: 'POD', uids: MAPPING, gids: two })],
      ['container id 0 not mapped', usernsPod('bad-zero', { mode: 'POD', uids: [{ container_id: 1, host_id: HOST_ID, length: LENGTH }], gids: MAPPING })],
      ['no mappings', usernsPod('bad-none', { mode: 'POD', uids: [], gids: [] })],
      ['CONTAINER mode', usernsPod('bad-container', { mode: 'CONTAINER' })],
      ['TARGET mode', usernsPod('bad-target', { mode: 'TARGET' })],
      ['NODE mode with mappings', usernsPod('bad-node', { mode: 'NODE', uids: MAPPING, gids: MAPPING })],
    ];
    const hostNet = usernsPod('bad-hostnet');
    const hostNetNs = podSecurity(hostNet).namespace_options;
    assert.ok(hostNetNs, 'namespace options set by usernsPod');
    hostNetNs.network = 'NODE';
    cases.push(['host network', hostNet]);
    for (const [what, config] of cases) {
      const err = await expectCriError(what, () => cri().runtime.RunPodSandbox({ config, runtime_handler: '' }));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, `${what}: ${err.message}`);
    }
    // NODE without mappings is the host's user namespace, as without options.
    const nodePod = usernsPod('node-mode', { mode: 'NODE' });
    const nodeId = await runPod(nodePod);
    // A container must use its pod's mappings.
    const pod = usernsPod('userns-mismatch');
    const podId = await runPod(pod);
    const other = ctr('other', pod, SLEEPER);
    containerSecurity(other).namespace_options = {
      ...podSecurity(pod).namespace_options,
      userns_options: { mode: 'POD', uids: [{ container_id: 0, host_id: HOST_ID * 2, length: LENGTH }], gids: MAPPING },
    };
    const err = await expectCriError('container with other mappings', () =>
      cri().runtime.CreateContainer({ pod_sandbox_id: podId, config: other, sandbox_config: pod }),
    );
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.message);
    for (const id of [nodeId, podId]) {
      await cri().runtime.StopPodSandbox({ pod_sandbox_id: id });
      await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
    }
    const leaks = await waitNoLeaks(tracked.scope(daemon), baseline);
    assert.deepEqual(leaks, {}, describeLeaks(leaks));
  });
});
