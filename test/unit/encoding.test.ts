import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ContainerRecord, toContainer, toContainerStatus } from '../../src/container/container';
import { loadCri } from '../../src/proto';
import { type SandboxRecord, toPodSandbox, toPodSandboxStatus } from '../../src/sandbox/sandbox';
import { MessageBuilder, RecordEncodings } from '../../src/server/encoding';

const cri = loadCri();
const runtime = cri.runtime.v1.RuntimeService.service;

function sandbox(n: number): SandboxRecord {
  return {
    id: `${n}`.padStart(64, 'a'),
    name: `pod-${n}_ns_uid-${n}_0`,
    config: {
      metadata: { name: `pod-${n}`, namespace: 'ns', uid: `uid-${n}`, attempt: 0 },
      labels: { app: 'web', n: String(n) },
      annotations: { note: 'x'.repeat(n) },
      linux: { security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    } as unknown as SandboxRecord['config'],
    runtimeHandler: '',
    phase: 'ready',
    createdAt: '1765000000123456789',
    hostNetwork: false,
    hostIpc: false,
    hostPid: false,
    hostname: `pod-${n}`,
    dir: '/run/x',
    namespaces: {},
    ips: ['10.1.0.5', 'fd00::5'],
    cgroupParent: '/kubepods/pod1',
  };
}

function container(n: number, sandboxId: string): ContainerRecord {
  return {
    id: `${n}`.padStart(64, 'c'),
    sandboxId,
    name: `c-${n}`,
    config: {
      metadata: { name: `c-${n}`, attempt: 1 },
      image: { image: 'busybox', annotations: {}, user_specified_image: 'busybox' },
      labels: { role: 'sleeper' },
      annotations: { 'io.kubernetes.container.hash': 'abc' },
      mounts: [{ container_path: '/data', host_path: '/tmp/data', readonly: true, selinux_relabel: false, propagation: 'PROPAGATION_PRIVATE' }],
      linux: { resources: { cpu_shares: '512', memory_limit_in_bytes: '67108864' } },
    } as unknown as ContainerRecord['config'],
    imageName: 'registry.local/busybox:1',
    imageId: 'sha256:'.padEnd(71, 'f'),
    imageRef: 'registry.local/busybox@sha256:'.padEnd(94, 'e'),
    runtimeHandler: '',
    phase: 'running',
    createdAt: '1765000000223456789',
    startedAt: '1765000000323456789',
    finishedAt: '0',
    exitCode: 0,
    reason: '',
    message: '',
    pid: 1234,
    logPath: '/var/log/pods/x/c/1.log',
    bundle: '/run/b',
    rootfs: '/run/b/rootfs',
    upperDir: '/u',
    workDir: '/w',
    cgroupsPath: '/kubepods/pod1/c',
    stopSignal: 'SIGTERM',
  };
}

const enc = new RecordEncodings(() => false);

test('ListContainersResponse from kept items: the same bytes as encoding the whole response', () => {
  const pod = sandbox(1);
  const recs = [container(1, pod.id), container(2, pod.id), container(3, pod.id)];
  recs[2].phase = 'exited';
  const mine = new MessageBuilder()
    .repeated(
      1,
      recs.map((r) => enc.container.get(r)),
    )
    .finish();
  const whole = runtime.ListContainers.responseSerialize({ containers: recs.map(toContainer) });
  assert.deepEqual(mine, Buffer.from(whole));
  assert.deepEqual(new MessageBuilder().repeated(1, []).finish(), Buffer.from(runtime.ListContainers.responseSerialize({ containers: [] })));
});

test('ListPodSandboxResponse and ContainerStatusResponse from kept items match the whole encoding', () => {
  const pods = [sandbox(1), sandbox(2)];
  pods[1].phase = 'stopped';
  assert.deepEqual(
    new MessageBuilder()
      .repeated(
        1,
        pods.map((p) => enc.sandbox.get(p)),
      )
      .finish(),
    Buffer.from(runtime.ListPodSandbox.responseSerialize({ items: pods.map(toPodSandbox) })),
  );
  const c = container(4, pods[0].id);
  assert.deepEqual(
    new MessageBuilder().bytes(1, enc.containerStatus.get(c)).finish(),
    Buffer.from(runtime.ContainerStatus.responseSerialize({ status: toContainerStatus(c), info: {} })),
  );
});

test('PodSandboxStatusResponse with its timestamp decodes to what the plain object says', () => {
  const pod = sandbox(3);
  const cs = [container(5, pod.id), container(6, pod.id)];
  const ts = 1765000000999999999n;
  const bytes = new MessageBuilder()
    .bytes(1, enc.sandboxStatus.get(pod))
    .repeated(
      3,
      cs.map((c) => enc.containerStatus.get(c)),
    )
    .int64(4, ts)
    .finish();
  const expected = runtime.PodSandboxStatus.responseSerialize({
    status: toPodSandboxStatus(pod),
    containers_statuses: cs.map(toContainerStatus),
    timestamp: ts.toString(),
    info: {},
  });
  assert.deepEqual(bytes, Buffer.from(expected));
  const back = runtime.PodSandboxStatus.responseDeserialize(bytes) as { timestamp: string; containers_statuses: unknown[] };
  assert.equal(back.timestamp, ts.toString());
  assert.equal(back.containers_statuses.length, 2);
});

test('a kept encoding follows its record: state, exit and resources changes re-encode it', () => {
  const pod = sandbox(4);
  const c = container(7, pod.id);
  const decodeStatus = (b: Buffer) =>
    (runtime.ContainerStatus.responseDeserialize(new MessageBuilder().bytes(1, b).finish()) as { status: { state: string; exit_code: number; reason: string } })
      .status;
  const first = enc.containerStatus.get(c);
  assert.equal(enc.containerStatus.get(c), first, 'unchanged record: the same bytes object');
  c.phase = 'exited';
  c.exitCode = 137;
  c.reason = 'OOMKilled';
  c.finishedAt = '1765000000423456789';
  const after = decodeStatus(enc.containerStatus.get(c));
  assert.deepEqual([after.state, after.exit_code, after.reason], ['CONTAINER_EXITED', 137, 'OOMKilled']);
  const listed = runtime.ListContainers.responseDeserialize(new MessageBuilder().repeated(1, [enc.container.get(c)]).finish()) as {
    containers: { state: string }[];
  };
  assert.equal(listed.containers[0].state, 'CONTAINER_EXITED');

  pod.phase = 'stopped';
  const listedPods = runtime.ListPodSandbox.responseDeserialize(new MessageBuilder().repeated(1, [enc.sandbox.get(pod)]).finish()) as {
    items: { state: string }[];
  };
  assert.equal(listedPods.items[0].state, 'SANDBOX_NOTREADY');
});

test('MessageBuilder.int64 writes negative and large values as protobuf varints do', () => {
  for (const v of [1n, 127n, 128n, 300n, 2n ** 62n, -1n]) {
    const mine = new MessageBuilder().int64(4, v).finish();
    const theirs = runtime.PodSandboxStatus.responseSerialize({ timestamp: v.toString(), containers_statuses: [], info: {} });
    assert.deepEqual(mine, Buffer.from(theirs), `int64 ${v}`);
  }
});
