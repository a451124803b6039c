// Containers end to end: a real tscri daemon (conmon + runc on overlay rootfs) on an isolated CNI
// bridge, and what a user sees: the output in the CRI log, exit codes and reasons, limits in the
// cgroup files, exec, stop with a grace period, events, log reopening, and a daemon crash.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { must } from '../helpers/must';
import { CriCallError, expectCriError, type CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import { evictFromCgroups } from '../helpers/cgroup_evict';
import type { PushedImage } from '../helpers/images';
import {
  BRIDGE,
  INDEX_HTML,
  POD_IP_PREFIX,
  SLEEPER,
  bridgeExists,
  containerConfig,
  daemonConfig,
  execIn,
  findCgroupDir,
  logAround,
  logLines,
  makeCniFixture,
  podConfig,
  pushToolsImage,
  readCgroupFile,
  readCriLog,
  removeTestCgroups,
  sleep,
  tailLog,
  waitFor,
  waitForState,
  type CniFixture,
  type ContainerOptions,
} from '../helpers/pods';
import {
  conmonProcesses,
  Created,
  daemonMounts,
  describeLeaks,
  type LeakScope,
  type LeakSnapshot,
  removePodsAndLeftovers,
  snapshotLeaks,
  waitNoLeaks,
} from '../helpers/leaks';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { ContainerStatus__Output } from '../../src/gen/runtime/v1/ContainerStatus';
import type { ContainerEventResponse__Output } from '../../src/gen/runtime/v1/ContainerEventResponse';

const MiB = 1024 * 1024;

let registry: Registry;
let daemon: Daemon;
let cni: CniFixture;
let image: PushedImage;
let logDir: string;
let hostDir: string;
let baseline: LeakSnapshot;
const cri = (): CriClient => daemon.cri;

// Everything the tests created, for the leak check and the final cleanup.
const tracked = new Created(POD_IP_PREFIX);

// One pod holds most containers; tests that need a pod of their own make one.
let podId: string;
let pod: PodSandboxConfig;

function scope(): LeakScope {
  return tracked.scope(daemon);
}

async function runPod(name: string): Promise<{ id: string; config: PodSandboxConfig }> {
  const config = podConfig(name, { logDirectory: path.join(logDir, name) });
  fs.mkdirSync(must(config.log_directory, 'log_directory in the pod config'), { recursive: true });
  const { pod_sandbox_id } = await cri().runtime.RunPodSandbox({ config, runtime_handler: '' });
  await tracked.pod(cri().runtime, pod_sandbox_id);
  return { id: pod_sandbox_id, config };
}

async function create(name: string, command: string[], opts: ContainerOptions = {}, inPod = { id: podId, config: pod }): Promise<string> {
  const { container_id } = await cri().runtime.CreateContainer({
    pod_sandbox_id: inPod.id,
    config: containerConfig(name, must(image.tagRef, 'a tag on the pushed tools image'), command, opts),
    sandbox_config: inPod.config,
  });
  tracked.containerIds.push(container_id);
  return container_id;
}

async function start(name: string, command: string[], opts: ContainerOptions = {}, inPod = { id: podId, config: pod }): Promise<string> {
  const id = await create(name, command, opts, inPod);
  await cri().runtime.StartContainer({ container_id: id });
  return id;
}

async function status(id: string): Promise<ContainerStatus__Output> {
  const { status: st } = await cri().runtime.ContainerStatus({ container_id: id, verbose: false });
  assert.ok(st, `ContainerStatus(${id}): expected a status, saw none`);
  return st;
}

function exec(containerId: string, cmd: string[], timeout = 10): ReturnType<typeof execIn> {
  return execIn(cri(), containerId, cmd, timeout);
}

function logFile(id: string, inPod: PodSandboxConfig, logPath: string): string {
  return path.join(must(inPod.log_directory, 'log_directory in the pod config'), logPath);
}

function daemonLog(id: string): string {
  return `daemon log lines for ${id}:\n${logAround(daemon.logs(), id)}`;
}

function show(st: ContainerStatus__Output): string {
  return JSON.stringify({ state: st.state, exit_code: st.exit_code, reason: st.reason, message: st.message });
}

function cgroupDir(controller: string, id: string): string {
  const dir = findCgroupDir(controller, id);
  assert.ok(dir, `expected a cgroup named after container ${id} under /sys/fs/cgroup/${controller}`);
  return dir;
}

async function removeContainer(id: string): Promise<void> {
  await cri().runtime.StopContainer({ container_id: id, timeout: 2 });
  await cri().runtime.RemoveContainer({ container_id: id });
}

describe('containers', () => {
  before(async () => {
    assert.ok(!bridgeExists(), `fixture: bridge ${BRIDGE} already exists; a previous run left it (ip link del ${BRIDGE})`);
    cni = makeCniFixture();
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-ctrlogs-'));
    hostDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-hostdir-'));
    fs.writeFileSync(path.join(hostDir, 'from-host.txt'), 'written on the host\n');
    registry = await startRegistry();
    image = await pushToolsImage(registry.host);
    daemon = await startDaemon({ config: daemonConfig(cni) });
    baseline = snapshotLeaks(scope());
    await cri().image.PullImage({ image: { image: must(image.tagRef, 'a tag on the pushed tools image') } });
    ({ id: podId, config: pod } = await runPod('ctr-main'));
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
    for (const d of [logDir, hostDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
    assert.ok(!bridgeExists(), `bridge ${BRIDGE} still exists after cleanup`);
  });

  test('stdout and stderr land in the CRI log with their stream tags', async () => {
    const id = await start('echo', ['sh', '-c', 'echo out; echo err >&2'], { logPath: 'echo/0.log' });
    const st = await waitForState(cri(), id, 'CONTAINER_EXITED');
    const file = logFile(id, pod, 'echo/0.log');
    assert.equal(st.log_path, file, `ContainerStatus.log_path: expected ${file}, saw ${st.log_path}`);
    // conmon may flush the log just after the exit is recorded.
    const lines = await waitFor(
      `both lines in ${file}`,
      () => {
        const l = readCriLog(file);
        return l.length >= 2 ? l : undefined;
      },
      5_000,
      () => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '(no file)'),
    );
    assert.deepEqual(logLines(lines, 'stdout'), ['out'], `stdout lines in ${file}: ${JSON.stringify(lines)}`);
    assert.deepEqual(logLines(lines, 'stderr'), ['err'], `stderr lines in ${file}: ${JSON.stringify(lines)}`);
    for (const l of lines) assert.equal(l.tag, 'F', `a short line is written whole (F), saw ${JSON.stringify(l)}`);
    await cri().runtime.RemoveContainer({ container_id: id });
  });

  test('exit codes: exit 3 is EXITED/3/Error, exit 0 is EXITED/0/Completed', async () => {
    const failing = await start('exit3', ['sh', '-c', 'exit 3']);
    const ok = await start('exit0', ['sh', '-c', 'exit 0']);
    const f = await waitForState(cri(), failing, 'CONTAINER_EXITED');
    assert.equal(f.exit_code, 3, `exit 3: exit_code, saw ${show(f)}`);
    assert.equal(f.reason, 'Error', `exit 3: reason, saw ${show(f)}`);
    const o = await waitForState(cri(), ok, 'CONTAINER_EXITED');
    assert.equal(o.exit_code, 0, `exit 0: exit_code, saw ${show(o)}`);
    assert.equal(o.reason, 'Completed', `exit 0: reason, saw ${show(o)}`);
    for (const id of [failing, ok]) await cri().runtime.RemoveContainer({ container_id: id });
  });

  test('two StartContainer calls at once: one starts the container, the other is refused, neither hangs', async () => {
    const id = await create('twice', ['sleep', '60']);
    const both = await Promise.allSettled([0, 1].map(() => cri().runtime.StartContainer({ container_id: id })));
    const refused = both.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(refused.length, 1, `one start is refused, saw ${JSON.stringify(both.map((r) => r.status))}`);
    const reason: unknown = refused[0].reason;
    assert.ok(reason instanceof CriCallError, `the refused start fails as a CRI call: saw ${String(reason)}`);
    assert.equal(reason.codeName, 'FAILED_PRECONDITION', String(reason));
    assert.equal((await status(id)).state, 'CONTAINER_RUNNING');
    const again = await expectCriError('StartContainer of a running container', () => cri().runtime.StartContainer({ container_id: id }));
    assert.equal(again.codeName, 'FAILED_PRECONDITION', String(again));
    await cri().runtime.StopContainer({ container_id: id, timeout: 0 });
    await cri().runtime.RemoveContainer({ container_id: id });
  });

  test('a process beyond its 32 MiB memory limit is OOMKilled', async () => {
    const id = await start('oom', ['sh', '-c', 'x=$(head -c 128m /dev/zero | tr "\\0" a)'], {
      resources: { memory_limit_in_bytes: String(32 * MiB) },
    });
    const st = await waitForState(cri(), id, 'CONTAINER_EXITED', 30_000);
    assert.equal(st.reason, 'OOMKilled', `reason: expected OOMKilled, saw ${show(st)}\n${daemonLog(id)}`);
    assert.notEqual(st.exit_code, 0, `exit_code of an OOM-killed container: expected non-zero, saw ${show(st)}`);
    await cri().runtime.RemoveContainer({ container_id: id });
  });

  let limited = '';

  test('memory and CPU limits read back from the cgroup files, and UpdateContainerResources changes them', async () => {
    const id = await start('limits', SLEEPER, {
      resources: { memory_limit_in_bytes: String(64 * MiB), cpu_period: '100000', cpu_quota: '50000', cpu_shares: '512' },
    });
    await waitForState(cri(), id, 'CONTAINER_RUNNING');
    assert.ok(
      snapshotLeaks(scope()).cgroups.some((c) => c.includes(id)),
      `leak checker: expected to see the cgroup of running container ${id}`,
    );
    assert.ok(
      conmonProcesses([daemon.state]).some((p) => p.includes(id)),
      `leak checker: expected to see the conmon of running container ${id}`,
    );
    const mem = cgroupDir('memory', id);
    const cpu = cgroupDir('cpu', id);
    const read = () => ({
      memory: readCgroupFile(mem, 'memory.limit_in_bytes'),
      quota: readCgroupFile(cpu, 'cpu.cfs_quota_us'),
      period: readCgroupFile(cpu, 'cpu.cfs_period_us'),
      shares: readCgroupFile(cpu, 'cpu.shares'),
    });
    assert.deepEqual(read(), { memory: String(64 * MiB), quota: '50000', period: '100000', shares: '512' }, `limits in ${mem} and ${cpu}`);

    await cri().runtime.UpdateContainerResources({
      container_id: id,
      linux: { memory_limit_in_bytes: String(96 * MiB), cpu_period: '100000', cpu_quota: '25000', cpu_shares: '256' },
    });
    assert.deepEqual(
      read(),
      { memory: String(96 * MiB), quota: '25000', period: '100000', shares: '256' },
      `limits after UpdateContainerResources in ${mem} and ${cpu}`,
    );
    limited = id;
  });

  test('ContainerStatus.resources reports the limits in force after UpdateContainerResources', async () => {
    assert.ok(limited, 'needs the container of the previous test');
    try {
      const st = await status(limited);
      const res = st.resources?.linux;
      // The kubelet reads these back to confirm an in-place resize (cri-api ContainerStatus.resources).
      assert.equal(
        res?.memory_limit_in_bytes,
        String(96 * MiB),
        `ContainerStatus.resources.linux.memory_limit_in_bytes after the update: saw resources ${JSON.stringify(st.resources)}`,
      );
      assert.equal(res.cpu_quota, '25000', `ContainerStatus.resources.linux.cpu_quota after the update: saw ${JSON.stringify(res)}`);
      assert.equal(res.cpu_shares, '256', `ContainerStatus.resources.linux.cpu_shares after the update: saw ${JSON.stringify(res)}`);
    } finally {
      await removeContainer(limited);
    }
  });

  test('two containers in one pod share the network namespace', async () => {
    const web = await start('web', ['httpd', '-f', '-p', '8080', '-h', '/www']);
    const client = await start('client', SLEEPER);
    await waitForState(cri(), web, 'CONTAINER_RUNNING');
    await waitForState(cri(), client, 'CONTAINER_RUNNING');
    let last = { stdout: '', stderr: '', exitCode: -1 };
    await waitFor(
      'wget from the second container to succeed',
      async () => {
        last = await exec(client, ['wget', '-qO-', 'http://127.0.0.1:8080/index.html']);
        return last.exitCode === 0 ? true : undefined;
      },
      5_000,
      () => JSON.stringify(last),
    );
    assert.equal(last.stdout, INDEX_HTML, `wget http://127.0.0.1:8080/ from the other container: expected the served file, saw ${JSON.stringify(last)}`);
    for (const id of [web, client]) await removeContainer(id);
  });

  let sleeper: string;

  test('ExecSync returns stdout, stderr and the exit code', async () => {
    sleeper = await start('exec', SLEEPER, { labels: { role: 'exec', tier: 'test' } });
    await waitForState(cri(), sleeper, 'CONTAINER_RUNNING');
    const r = await exec(sleeper, ['sh', '-c', 'echo to-out; echo to-err >&2; exit 5']);
    assert.deepEqual(r, { stdout: 'to-out\n', stderr: 'to-err\n', exitCode: 5 }, 'ExecSync result');
    const env = await exec(sleeper, ['env']);
    assert.match(env.stdout, /^PATH=\/bin$/m, `ExecSync env: expected the image PATH, saw ${env.stdout}`);
    // A missing binary is either a failed call or a non-zero exit (runtimes differ); never success.
    const missing: unknown = await exec(sleeper, ['/no/such/binary']).catch((e: unknown) => e);
    if (!(missing instanceof Error) && typeof missing === 'object' && missing !== null && 'exitCode' in missing)
      assert.notEqual(missing.exitCode, 0, `ExecSync of a missing binary: expected a failure, saw ${JSON.stringify(missing)}`);
  });

  test('ExecSync with timeout 1 fails with DEADLINE_EXCEEDED within ~3 s', async (t) => {
    const t0 = Date.now();
    const err = await expectCriError('ExecSync(sleep 30, timeout 1)', () => exec(sleeper, ['sh', '-c', 'sleep 30 & sleep 30'], 1));
    const took = Date.now() - t0;
    t.diagnostic(`${err.message} after ${took} ms`);
    assert.equal(err.codeName, 'DEADLINE_EXCEEDED', `code: expected DEADLINE_EXCEEDED, saw ${err.codeName}: ${err.details}`);
    assert.ok(took < 3_500, `ExecSync with timeout 1: expected to return within ~3 s, took ${took} ms`);
    // The whole exec, background child included, is killed: nothing may keep running for 30 s.
    const ps = await waitFor(
      'the timed-out exec processes to be gone',
      async () => {
        const r = await exec(sleeper, ['ps', '-o', 'pid,args']);
        return r.stdout.includes('sleep 30') ? undefined : r.stdout;
      },
      3_000,
      () => 'sleep 30 still running',
    );
    t.diagnostic(`processes after the timeout:\n${ps}`);
  });

  test('StopContainer with timeout 2 kills a process that ignores SIGTERM after ~2 s (exit 137)', async () => {
    const id = await start('stubborn', ['sh', '-c', 'trap "" TERM; sleep 1000']);
    await waitForState(cri(), id, 'CONTAINER_RUNNING');
    // The trap must be installed before the signal comes.
    await sleep(300);
    const t0 = Date.now();
    await cri().runtime.StopContainer({ container_id: id, timeout: 2 });
    const took = Date.now() - t0;
    const st = await status(id);
    assert.equal(st.state, 'CONTAINER_EXITED', `state after StopContainer: saw ${show(st)}`);
    assert.ok(took >= 1_800 && took < 6_000, `StopContainer(timeout 2) of a SIGTERM-ignoring process: expected ~2 s, took ${took} ms`);
    assert.equal(st.exit_code, 137, `exit_code after SIGKILL: expected 137, saw ${show(st)}`);
    await cri().runtime.StopContainer({ container_id: id, timeout: 2 });
    await cri().runtime.RemoveContainer({ container_id: id });
    await cri()
      .runtime.RemoveContainer({ container_id: id })
      .catch((e: unknown) => assert.fail(`second RemoveContainer: expected OK, saw ${String(e)}`));
  });

  test('ListContainers filters by id, pod, state and labels; StreamContainers agrees', async () => {
    const other = await runPod('ctr-other');
    const exited = await start('done', ['true'], { labels: { role: 'done', tier: 'test' } });
    const created = await create('created', SLEEPER, { labels: { role: 'created' } });
    const elsewhere = await start('elsewhere', SLEEPER, { labels: { role: 'exec', tier: 'other' } }, other);
    await waitForState(cri(), exited, 'CONTAINER_EXITED');
    await waitForState(cri(), elsewhere, 'CONTAINER_RUNNING');
    const ids = async (filter: object | null) => (await cri().runtime.ListContainers({ filter })).containers.map((c) => c.id).sort();

    const all = await ids(null);
    for (const id of [sleeper, exited, created, elsewhere]) assert.ok(all.includes(id), `ListContainers(): expected ${id}`);
    assert.deepEqual(await ids({ id: sleeper }), [sleeper], 'filter by id');
    assert.deepEqual(await ids({ id: sleeper.slice(0, 12) }), [sleeper], 'filter by id prefix');
    assert.deepEqual(await ids({ pod_sandbox_id: other.id }), [elsewhere], 'filter by pod');
    // Containers an earlier failed test left behind may be listed too: check membership.
    const has = async (what: string, filter: object, yes: string[], no: string[]) => {
      const got = await ids(filter);
      for (const id of yes) assert.ok(got.includes(id), `${what}: expected ${id} among [${got.join(', ')}]`);
      for (const id of no) assert.ok(!got.includes(id), `${what}: expected ${id} not listed, saw [${got.join(', ')}]`);
    };
    await has('filter by the main pod', { pod_sandbox_id: podId }, [sleeper, exited, created], [elsewhere]);
    await has('state RUNNING', { state: { state: 'CONTAINER_RUNNING' } }, [sleeper, elsewhere], [exited, created]);
    await has('state CREATED', { state: { state: 'CONTAINER_CREATED' } }, [created], [sleeper, exited, elsewhere]);
    await has('state EXITED', { state: { state: 'CONTAINER_EXITED' } }, [exited], [sleeper, created, elsewhere]);
    assert.deepEqual(await ids({ label_selector: { role: 'exec' } }), [sleeper, elsewhere].sort(), 'label role=exec');
    assert.deepEqual(await ids({ label_selector: { role: 'exec', tier: 'test' } }), [sleeper], 'labels role=exec,tier=test');
    assert.deepEqual(await ids({ pod_sandbox_id: other.id, state: { state: 'CONTAINER_EXITED' } }), [], 'pod AND state');

    const item = (await cri().runtime.ListContainers({ filter: { id: sleeper } })).containers[0];
    assert.equal(item.pod_sandbox_id, podId, 'ListContainers item pod_sandbox_id');
    assert.equal(item.metadata?.name, 'exec', 'ListContainers item metadata.name');
    assert.equal(item.state, 'CONTAINER_RUNNING', 'ListContainers item state');
    assert.deepEqual(item.labels, { role: 'exec', tier: 'test' }, 'ListContainers item labels');

    const streamed = (await cri().runtime.StreamContainers({ filter: { label_selector: { role: 'exec' } } }))
      .flatMap((r) => r.containers.map((c) => c.id))
      .sort();
    assert.deepEqual(streamed, [sleeper, elsewhere].sort(), 'StreamContainers with role=exec');

    await cri().runtime.RemoveContainer({ container_id: exited });
    await cri().runtime.RemoveContainer({ container_id: created });
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: other.id });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: other.id });
  });

  test('ContainerStatus reports image, image_ref, timestamps, log_path and mounts', async () => {
    const t0 = BigInt(Date.now()) * 1_000_000n;
    const id = await start('status', ['sh', '-c', 'cat /data/from-host.txt; echo from-container > /data/from-container.txt'], {
      logPath: 'status.log',
      mounts: [{ container_path: '/data', host_path: hostDir, readonly: false }],
      labels: { role: 'status' },
      annotations: { 'tscri.test/a': 'b' },
    });
    const st = await waitForState(cri(), id, 'CONTAINER_EXITED');
    const t1 = BigInt(Date.now()) * 1_000_000n;
    assert.equal(st.exit_code, 0, `exit code: ${show(st)}\n${JSON.stringify(readCriLog(logFile(id, pod, 'status.log')))}`);
    assert.equal(st.metadata?.name, 'status', 'metadata.name');
    assert.equal(st.image?.image, image.tagRef, `image.image: expected ${image.tagRef}, saw ${st.image?.image}`);
    assert.ok(
      [image.digestRef, image.configDigest].includes(st.image_ref),
      `image_ref: expected ${image.digestRef} (or the image id ${image.configDigest}), saw ${st.image_ref}`,
    );
    const created = BigInt(st.created_at);
    const started = BigInt(st.started_at);
    const finished = BigInt(st.finished_at);
    assert.ok(
      t0 - 2_000_000_000n <= created && created <= started && started <= finished && finished <= t1 + 2_000_000_000n,
      `timestamps: expected ${t0} ≤ created ≤ started ≤ finished ≤ ${t1}, saw created ${st.created_at}, started ${st.started_at}, finished ${st.finished_at}`,
    );
    assert.equal(st.log_path, path.join(must(pod.log_directory, 'log_directory in the pod config'), 'status.log'), 'log_path');
    assert.deepEqual(st.labels, { role: 'status' }, 'labels');
    assert.deepEqual(st.annotations, { 'tscri.test/a': 'b' }, 'annotations');
    const m = st.mounts.find((x) => x.container_path === '/data');
    assert.ok(m, `mounts: expected /data, saw ${JSON.stringify(st.mounts)}`);
    assert.equal(m.host_path, hostDir, `mount /data host_path: saw ${JSON.stringify(m)}`);
    assert.equal(m.readonly, false, 'mount /data readonly');
    await waitFor(
      'the log line from the mounted file',
      () => (logLines(readCriLog(st.log_path), 'stdout').includes('written on the host') ? true : undefined),
      5_000,
    );
    assert.equal(fs.readFileSync(path.join(hostDir, 'from-container.txt'), 'utf8'), 'from-container\n', 'file written through the mount');
    await cri().runtime.RemoveContainer({ container_id: id });
  });

  test('ContainerStats reports cpu, memory and the writable layer', async () => {
    await exec(sleeper, ['sh', '-c', 'dd if=/dev/zero of=/tmp/blob bs=1024 count=2048 2>/dev/null; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done']);
    const { stats } = await cri().runtime.ContainerStats({ container_id: sleeper });
    const s = JSON.stringify(stats);
    assert.equal(stats?.attributes?.id, sleeper, `attributes.id: saw ${s}`);
    assert.equal(stats.attributes.metadata?.name, 'exec', `attributes.metadata.name: saw ${s}`);
    assert.ok(Number(stats.cpu?.usage_core_nano_seconds?.value ?? 0) > 0, `cpu.usage_core_nano_seconds: expected > 0, saw ${s}`);
    assert.ok(Number(stats.memory?.working_set_bytes?.value ?? 0) > 0, `memory.working_set_bytes: expected > 0, saw ${s}`);
    const used = Number(stats.writable_layer?.used_bytes?.value ?? 0);
    assert.ok(used >= 2 * MiB, `writable_layer.used_bytes after writing 2 MiB to /tmp: expected ≥ ${2 * MiB}, saw ${s}`);
    const listed = (await cri().runtime.ListContainerStats({ filter: { id: sleeper } })).stats;
    assert.deepEqual(
      listed.map((x) => x.attributes?.id),
      [sleeper],
      'ListContainerStats filtered by id',
    );
    const byPod = (await cri().runtime.ListContainerStats({ filter: { pod_sandbox_id: podId } })).stats.map((x) => x.attributes?.id);
    assert.ok(byPod.includes(sleeper), `ListContainerStats by pod: expected ${sleeper}, saw ${byPod.join(', ')}`);
  });

  test('GetContainerEvents streams CREATED, STARTED, STOPPED and DELETED for a container', async () => {
    const events: ContainerEventResponse__Output[] = [];
    const stream = cri().runtimeClient.GetContainerEvents({});
    let streamErr: unknown;
    stream.on('data', (e: ContainerEventResponse__Output) => events.push(e));
    stream.on('error', (e: unknown) => (streamErr = e));
    try {
      // Give the subscription a moment to reach the daemon before the events happen.
      await sleep(300);
      const id = await start('evented', ['sh', '-c', 'sleep 1']);
      await waitForState(cri(), id, 'CONTAINER_EXITED');
      await cri().runtime.RemoveContainer({ container_id: id });
      const want: string[] = ['CONTAINER_CREATED_EVENT', 'CONTAINER_STARTED_EVENT', 'CONTAINER_STOPPED_EVENT', 'CONTAINER_DELETED_EVENT'];
      const mine = (): string[] => events.filter((e) => e.container_id === id).map((e) => e.container_event_type);
      await waitFor(
        `events ${want.join(', ')} for ${id}`,
        () => (want.every((w) => mine().includes(w)) ? true : undefined),
        5_000,
        () => `${JSON.stringify(mine())} (stream error: ${String(streamErr)})`,
      );
      assert.deepEqual(mine(), want, `event types for ${id}, in order`);
      const startedEv = events.find((e) => e.container_id === id && e.container_event_type === 'CONTAINER_STARTED_EVENT');
      assert.equal(startedEv?.pod_sandbox_status?.id, podId, `STARTED event pod_sandbox_status.id: saw ${JSON.stringify(startedEv?.pod_sandbox_status?.id)}`);
      assert.ok(BigInt(startedEv.created_at || '0') > 0n, 'STARTED event created_at');
    } finally {
      stream.cancel();
    }
  });

  test('ReopenContainerLog: after the log is renamed, new output goes to a new file at the same path', async () => {
    const id = await start('chatty', ['sh', '-c', 'trap "exit 0" TERM; i=0; while :; do echo line-$i; i=$((i+1)); sleep 0.2; done'], { logPath: 'chatty.log' });
    await waitForState(cri(), id, 'CONTAINER_RUNNING');
    const file = logFile(id, pod, 'chatty.log');
    await waitFor(`output in ${file}`, () => (readCriLog(file).length >= 2 ? true : undefined), 5_000);
    const rotated = `${file}.1`;
    fs.renameSync(file, rotated);
    await cri().runtime.ReopenContainerLog({ container_id: id });
    const fresh = await waitFor(
      `a new ${file} with output`,
      () => {
        if (!fs.existsSync(file)) return undefined;
        const l = logLines(readCriLog(file), 'stdout');
        return l.length >= 2 ? l : undefined;
      },
      5_000,
    );
    const old = logLines(readCriLog(rotated), 'stdout');
    await sleep(600);
    const oldLater = logLines(readCriLog(rotated), 'stdout');
    const n = (l: string) => Number(l.replace('line-', ''));
    assert.ok(n(fresh[0]) > n(old[old.length - 1]) - 2, `the new file continues the count: old ended ${old[old.length - 1]}, new starts ${fresh[0]}`);
    assert.ok(oldLater.length <= old.length + 1, `the rotated file stops growing after ReopenContainerLog: ${old.length} then ${oldLater.length} lines`);
    const err = await expectCriError('ReopenContainerLog of an exited container', async () => {
      const done = await start('quiet', ['true']);
      await waitForState(cri(), done, 'CONTAINER_EXITED');
      return cri().runtime.ReopenContainerLog({ container_id: done });
    });
    assert.ok(err.codeName !== 'OK', err.message);
    await removeContainer(id);
  });

  test("StopContainer and StopPodSandbox succeed when the cgroup went before the kill: EXITED with the kill's code", async () => {
    // critest saw StopPodSandbox answer NotFound when a container's init exited and its cgroup
    // went while `runc kill --all` ran. Here runc's state still names a live init, but its
    // cgroup dirs are gone, so runc fails on them the same way (openat2 freezer.state, lstat
    // devices): stop must decide from what is left of the container, not from runc's words.
    const alone = await start('cgroup-gone', ['sleep', '1000']);
    const other = await runPod('ctr-cgroup-gone');
    const inPod = await start('cgroup-gone-pod', ['sleep', '1000'], {}, other);
    for (const id of [alone, inPod]) {
      await waitForState(cri(), id, 'CONTAINER_RUNNING');
      const pid = Number(fs.readFileSync(path.join(daemon.state, 'containers', id, 'pidfile'), 'utf8'));
      assert.ok(evictFromCgroups(pid, id).length > 0, `container ${id} (init ${pid}) had cgroup dirs to remove`);
    }
    await cri().runtime.StopContainer({ container_id: alone, timeout: 0 });
    const a = await status(alone);
    assert.equal(a.state, 'CONTAINER_EXITED', `StopContainer with the cgroup gone: saw ${show(a)}\n${daemonLog(alone)}`);
    assert.equal(a.exit_code, 137, `killed by SIGKILL: saw ${show(a)}`);
    await cri()
      .runtime.StopPodSandbox({ pod_sandbox_id: other.id })
      .catch((e: unknown) => {
        throw new Error(`${e instanceof Error ? e.message : String(e)}\n${daemonLog(inPod)}`);
      });
    const b = await status(inPod);
    assert.equal(b.state, 'CONTAINER_EXITED', `StopPodSandbox with the cgroup gone: saw ${show(b)}\n${daemonLog(inPod)}`);
    assert.equal(b.exit_code, 137, `killed by SIGKILL: saw ${show(b)}`);
    await cri().runtime.RemoveContainer({ container_id: alone });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: other.id });
  });

  test('a daemon killed with SIGKILL finds its containers again: the running one still runs, the one that exited meanwhile has its code', async () => {
    const runner = await start('survivor', ['sleep', '1000']);
    const unnoted = await start('survivor-unnoted', ['sleep', '1000']);
    const exiter = await start('exits-while-down', ['sh', '-c', 'sleep 3; exit 7']);
    const orphanPod = await runPod('ctr-orphan');
    const orphanIp = (await cri().runtime.PodSandboxStatus({ pod_sandbox_id: orphanPod.id })).status?.network?.ip ?? '';
    const orphan = await start('orphan', ['sleep', '1000'], {}, orphanPod);
    const halfPod = await runPod('ctr-halfmade');
    const halfIp = (await cri().runtime.PodSandboxStatus({ pod_sandbox_id: halfPod.id })).status?.network?.ip ?? '';
    await waitForState(cri(), runner, 'CONTAINER_RUNNING');
    await waitForState(cri(), exiter, 'CONTAINER_RUNNING');
    await waitForState(cri(), orphan, 'CONTAINER_RUNNING');
    await waitForState(cri(), unnoted, 'CONTAINER_RUNNING');
    const startedBefore = Number((await status(runner)).started_at);
    const unnotedBefore = await status(unnoted);
    const how = await daemon.stop('SIGKILL', { keep: true });
    assert.equal(how, 'signal SIGKILL', 'the daemon died of SIGKILL');
    assert.ok(conmonProcesses([daemon.state]).length >= 2, `conmon monitors outlive the daemon: saw ${conmonProcesses([daemon.state]).join('; ')}`);
    // StartContainer answers before its record is written: make the runner's record look as if
    // the daemon died in between, so the restart has to learn from runc that it runs.
    for (const id of [runner, unnoted]) {
      const recordFile = path.join(daemon.root, 'meta', 'containers', `${id}.json`);
      const record = JSON.parse(fs.readFileSync(recordFile, 'utf8')) as { phase: string; startedAt: string };
      fs.writeFileSync(recordFile, JSON.stringify({ ...record, phase: 'created', startedAt: '0' }));
    }
    // For this one even the start time noted beside its bundle is lost: it is learnt from its process.
    fs.rmSync(path.join(daemon.state, 'containers', unnoted, 'started-at'));
    // The exiter's exit is recorded by conmon while no daemon watches.
    await waitFor(`conmon's exit file for ${exiter}`, () => fs.existsSync(path.join(daemon.state, 'exits', exiter)) || undefined, 15_000);
    // A pod and its container whose records never reached the disk (records skip the directory
    // fsync, so a power loss can do that): the restart finds only their dirs, pins and processes.
    fs.rmSync(path.join(daemon.root, 'meta', 'sandboxes', `${orphanPod.id}.json`));
    fs.rmSync(path.join(daemon.root, 'meta', 'containers', `${orphan}.json`));
    // A pod whose create was cut short after its network was set up: its record is the first
    // one, written before the namespaces, files and network existed.
    const halfFile = path.join(daemon.root, 'meta', 'sandboxes', `${halfPod.id}.json`);
    const half = JSON.parse(fs.readFileSync(halfFile, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(halfFile, JSON.stringify({ ...half, phase: 'creating', namespaces: {}, ips: [], files: undefined }));
    await daemon.restart();
    assert.deepEqual((await cri().runtime.ListPodSandbox({ filter: { id: orphanPod.id } })).items, [], 'a pod with no record is not listed');
    assert.deepEqual((await cri().runtime.ListPodSandbox({ filter: { id: halfPod.id } })).items, [], 'a pod whose create was cut short is not listed');
    for (const p of [
      path.join(daemon.state, 'sandboxes', orphanPod.id),
      path.join(daemon.state, 'ns', orphanPod.id),
      path.join(daemon.state, 'sandboxes', halfPod.id),
      path.join(daemon.state, 'ns', halfPod.id),
      halfFile,
      path.join(daemon.state, 'containers', orphan),
      path.join(daemon.root, 'containers', orphan),
    ]) {
      assert.equal(fs.existsSync(p), false, `${p} is left after the restart\n${daemonLog(orphan)}`);
    }
    assert.deepEqual(
      conmonProcesses([daemon.state]).filter((l) => l.includes(orphan)),
      [],
      "the orphan container's conmon is gone",
    );
    assert.ok(orphanIp && !cni.reservedIps().includes(orphanIp), `the orphan pod's address ${orphanIp} is free again: ${cni.reservedIps().join(' ')}`);
    assert.ok(halfIp && !cni.reservedIps().includes(halfIp), `the cut-short pod's address ${halfIp} is free again: ${cni.reservedIps().join(' ')}`);
    const r = await status(runner);
    assert.equal(r.state, 'CONTAINER_RUNNING', `sleep 1000 after the restart: expected RUNNING, saw ${show(r)}\n${daemonLog(runner)}`);
    const drift = Math.abs(Number(r.started_at) - startedBefore) / 1e6;
    assert.ok(drift < 20, `started_at learnt again after the crash: ${r.started_at} against ${startedBefore} before it (${drift} ms apart)`);
    // From the process alone: its start (the runtime's create, to the 10 ms clock tick) lies
    // between the container's creation and its start; a boot time rounded to the second put it
    // up to a second early.
    const u = await status(unnoted);
    assert.equal(u.state, 'CONTAINER_RUNNING', `sleep 1000 after the restart: saw ${show(u)}`);
    const [uStarted, uCreated, uBefore] = [u.started_at, unnotedBefore.created_at, unnotedBefore.started_at].map(Number);
    assert.ok(
      uStarted >= uCreated - 20e6 && uStarted <= uBefore + 20e6,
      `started_at learnt from the process: ${uStarted}, ${(uStarted - uCreated) / 1e6} ms after created_at ${uCreated} and ${(uBefore - uStarted) / 1e6} ms before the started_at ${uBefore} recorded before the crash`,
    );
    const e = await status(exiter);
    assert.equal(e.state, 'CONTAINER_EXITED', `sh -c 'sleep 3; exit 7' after the restart: expected EXITED, saw ${show(e)}\n${daemonLog(exiter)}`);
    assert.equal(e.exit_code, 7, `exit code recorded while the daemon was down: expected 7, saw ${show(e)}`);
    const t0 = Date.now();
    await cri().runtime.StopContainer({ container_id: runner, timeout: 1 });
    const after = await status(runner);
    assert.equal(after.state, 'CONTAINER_EXITED', `StopContainer after the restart: saw ${show(after)} (${Date.now() - t0} ms)`);
    assert.equal((await exec(sleeper, ['true'])).exitCode, 0, 'ExecSync into a container started before the crash');
    for (const id of [runner, unnoted, exiter]) await cri().runtime.RemoveContainer({ container_id: id });
  });

  test('after removing every pod: no mounts, netns pins, conmon, cgroups or iptables rules remain', async (t) => {
    for (const id of tracked.podIds) {
      await cri().runtime.StopPodSandbox({ pod_sandbox_id: id });
      await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
    }
    assert.deepEqual(
      (await cri().runtime.ListContainers({})).containers.map((c) => `${c.id} ${c.state}`),
      [],
      'ListContainers after removing every pod',
    );
    if (baseline.iptables.length > 0) t.diagnostic(`iptables lines present before this file ran:\n${baseline.iptables.join('\n')}`);
    const leaks = await waitNoLeaks(scope(), baseline);
    assert.equal(describeLeaks(leaks), '', 'leftovers after every pod was removed');
    assert.deepEqual(cni.reservedIps(), [], `host-local reservations in ${cni.dataDir}`);
    for (const sub of ['containers', 'sandboxes']) {
      for (const base of [daemon.state, daemon.root]) {
        const dir = path.join(base, sub);
        const left = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
        assert.deepEqual(left, [], `${dir} after removing every pod`);
      }
    }
  });

  test('a daemon stopped with no pods leaves no mount under its dirs', async () => {
    const dirs = [daemon.root, daemon.state, daemon.base];
    const how = await daemon.stop('SIGTERM', { keep: true });
    const { mounts, netnsPins } = daemonMounts(dirs);
    assert.deepEqual(
      [...mounts, ...netnsPins],
      [],
      `mounts under ${daemon.base} after the daemon stopped (${how}); daemon log tail:\n${tailLog(daemon.logs(), 20)}`,
    );
    assert.deepEqual(conmonProcesses(dirs), [], 'conmon processes after the daemon stopped');
  });
});
