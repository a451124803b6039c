// The daemon is SIGKILLed, three times, in the middle of a concurrent workload of pod and
// container lifecycles, and restarted on the same root and state each time. After each restart:
// every container the workload saw running (and was not stopping) still runs, and every pod can
// be stopped and removed. At the end nothing is left on the host: no mount, netns pin, conmon,
// cgroup, veth, IPAM reservation or iptables rule.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import type { PushedImage } from '../helpers/images';
import {
  BRIDGE,
  POD_IP_PREFIX,
  SLEEPER,
  bridgeExists,
  containerConfig,
  daemonConfig,
  logAround,
  makeCniFixture,
  podConfig,
  pushToolsImage,
  removeTestCgroups,
  waitFor,
  type CniFixture,
} from '../helpers/pods';
import { Created, describeLeaks, type LeakSnapshot, removePodsAndLeftovers, snapshotLeaks, waitNoLeaks } from '../helpers/leaks';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';

const WORKERS = 4;
const CRASHES = 3;
/** Lifecycle steps the workload completes between two crashes, at least. */
const STEPS_BETWEEN_CRASHES = 12;

let registry: Registry | undefined;
let daemon: Daemon | undefined;
let cni: CniFixture | undefined;
let image: PushedImage;
let logDir: string;
let baseline: LeakSnapshot;
const tracked = new Created(POD_IP_PREFIX);
const cri = (): CriClient => {
  assert.ok(daemon, 'a daemon started by before()');
  return daemon.cri;
};

/** What the workload knows for sure about a container, from answers it got. */
type Known = 'running' | 'stopping' | 'uncertain';

/**
 * One worker loops over pod lifecycles. An RPC that fails (the daemon is gone) parks it until
 * the test says the daemon is back; it then carries on from what it knows.
 */
class Worker {
  /** Containers of this worker whose StartContainer answered OK, and what came since. */
  readonly containers = new Map<string, Known>();
  pod: { id: string; config: PodSandboxConfig } | undefined;
  steps = 0;
  parked: Promise<void> | undefined;
  private resume: (() => void) | undefined;
  private stopping = false;
  private done: Promise<void> | undefined;
  readonly errors: string[] = [];

  constructor(readonly n: number) {}

  start(): void {
    this.done = this.loop();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.release();
    await this.done;
  }

  release(): void {
    const r = this.resume;
    this.parked = undefined;
    this.resume = undefined;
    r?.();
  }

  // Read through a call: stop() sets the flag while loop() awaits, which narrowing cannot see.
  private stopRequested(): boolean {
    return this.stopping;
  }

  private async loop(): Promise<void> {
    let cycle = 0;
    while (!this.stopRequested()) {
      try {
        await this.cycle(cycle++);
      } catch (e) {
        this.errors.push(String(e).slice(0, 300));
        // Whatever was in flight is unknown now; a stop in flight is a stop.
        for (const [id, k] of this.containers) if (k !== 'stopping') this.containers.set(id, 'uncertain');
        await new Promise<void>((resolve) => {
          this.resume = resolve;
          this.parked = Promise.resolve();
        });
        if (this.stopRequested()) return;
        // Back on a restarted daemon: end the pod this cycle was in, as the kubelet would.
        await this.endPod().catch((err: unknown) => this.errors.push(`after restart: ${String(err).slice(0, 300)}`));
      }
    }
  }

  private async cycle(n: number): Promise<void> {
    const config = podConfig(`fault-${this.n}-${n}`, { logDirectory: path.join(logDir, `w${this.n}-${n}`) });
    assert.ok(config.log_directory, `a log directory in the config of pod fault-${this.n}-${n}`);
    fs.mkdirSync(config.log_directory, { recursive: true });
    const { pod_sandbox_id } = await cri().runtime.RunPodSandbox({ config, runtime_handler: '' });
    this.pod = { id: pod_sandbox_id, config };
    await tracked.pod(cri().runtime, pod_sandbox_id);
    this.step();
    const ids: string[] = [];
    const ref = image.tagRef;
    assert.ok(ref, 'the tools image pushed with a tag');
    for (const name of ['a', 'b']) {
      const { container_id } = await cri().runtime.CreateContainer({
        pod_sandbox_id,
        config: containerConfig(name, ref, SLEEPER),
        sandbox_config: config,
      });
      tracked.containerIds.push(container_id);
      ids.push(container_id);
      this.containers.set(container_id, 'uncertain');
      await cri().runtime.StartContainer({ container_id });
      this.containers.set(container_id, 'running');
      this.step();
    }
    // One container stopped and removed on its own, the other with its pod.
    this.containers.set(ids[0], 'stopping');
    await cri().runtime.StopContainer({ container_id: ids[0], timeout: 0 });
    await cri().runtime.RemoveContainer({ container_id: ids[0] });
    this.containers.delete(ids[0]);
    this.step();
    await this.endPod();
  }

  private async endPod(): Promise<void> {
    if (!this.pod) return;
    for (const id of this.containers.keys()) this.containers.set(id, 'stopping');
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: this.pod.id });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: this.pod.id });
    this.containers.clear();
    this.pod = undefined;
    this.step();
  }

  private step(): void {
    this.steps++;
  }
}

function vethsOn(bridge: string): string[] {
  const r = spawnSync('ip', ['-o', 'link', 'show', 'master', bridge], { encoding: 'utf8' });
  return r.status === 0
    ? r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(':')[1].trim())
    : [];
}

describe('faults', { timeout: 180_000 }, () => {
  before(async () => {
    assert.ok(!bridgeExists(), `fixture: bridge ${BRIDGE} already exists; a previous run left it (ip link del ${BRIDGE})`);
    cni = makeCniFixture();
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-faultlogs-'));
    registry = await startRegistry();
    image = await pushToolsImage(registry.host);
    daemon = await startDaemon({ config: daemonConfig(cni) });
    baseline = snapshotLeaks(tracked.scope(daemon));
    assert.ok(image.tagRef, 'the tools image pushed with a tag');
    await cri().image.PullImage({ image: { image: image.tagRef } });
  });

  after(async () => {
    if (daemon) {
      await removePodsAndLeftovers(cri().runtime, tracked.podIds, tracked.scope(daemon)).catch(() => undefined);
      await daemon.stop();
    }
    await registry?.stop();
    removeTestCgroups();
    cni?.remove();
    if (logDir) fs.rmSync(logDir, { recursive: true, force: true });
  });

  test(`${CRASHES} SIGKILLs during ${WORKERS} concurrent pod lifecycles lose no running container and leave nothing`, async (t) => {
    assert.ok(daemon && cni, 'a daemon and a CNI fixture set up by before()');
    const workers = Array.from({ length: WORKERS }, (_, i) => new Worker(i));
    for (const w of workers) w.start();
    const totalSteps = (): number => workers.reduce((n, w) => n + w.steps, 0);
    for (let crash = 1; crash <= CRASHES; crash++) {
      const from = totalSteps();
      await waitFor(`${STEPS_BETWEEN_CRASHES} workload steps before crash ${crash}`, () => totalSteps() - from >= STEPS_BETWEEN_CRASHES || undefined, 60_000);
      const how: string = await daemon.stop('SIGKILL', { keep: true });
      assert.equal(how, 'signal SIGKILL');
      // Every worker runs into the dead daemon on its next call and parks.
      await waitFor(`all workers parked after crash ${crash}`, () => workers.every((w) => w.parked !== undefined) || undefined, 30_000);
      await daemon.restart();
      const listed = new Map((await cri().runtime.ListContainers({})).containers.map((c) => [c.id, c.state]));
      for (const w of workers) {
        for (const [id, known] of w.containers) {
          if (known !== 'running') continue;
          const st = (await cri().runtime.ContainerStatus({ container_id: id, verbose: false })).status;
          assert.equal(
            st?.state,
            'CONTAINER_RUNNING',
            `crash ${crash}: container ${id} answered running before the crash; after the restart: ${JSON.stringify(st && { state: st.state, exit_code: st.exit_code, reason: st.reason })}, listed ${listed.get(id)}\n${logAround(daemon.logs(), id)}`,
          );
        }
      }
      t.diagnostic(`crash ${crash}: ${totalSteps()} steps so far, ${listed.size} containers listed after the restart`);
      for (const w of workers) w.release();
    }
    for (const w of workers) await w.stop();
    // Every pod left, whatever state the crashes caught it in, can be stopped and removed.
    for (const p of (await cri().runtime.ListPodSandbox({})).items) {
      await cri().runtime.StopPodSandbox({ pod_sandbox_id: p.id });
      await cri().runtime.RemovePodSandbox({ pod_sandbox_id: p.id });
    }
    assert.deepEqual((await cri().runtime.ListPodSandbox({})).items, [], 'no pod left');
    assert.deepEqual((await cri().runtime.ListContainers({})).containers, [], 'no container left');
    const afterRestarts = workers.flatMap((w) => w.errors.filter((e) => e.startsWith('after restart')));
    assert.deepEqual(afterRestarts, [], 'ending a pod on the restarted daemon failed');
    const leaks = await waitNoLeaks(tracked.scope(daemon), baseline);
    assert.equal(describeLeaks(leaks), '', 'leftovers after the crashes and the removal of every pod');
    assert.deepEqual(cni.reservedIps(), [], `host-local reservations in ${cni.dataDir}`);
    assert.deepEqual(vethsOn(BRIDGE), [], `veth interfaces still on ${BRIDGE}`);
    for (const sub of ['containers', 'sandboxes']) {
      for (const base of [daemon.state, daemon.root]) {
        const dir = path.join(base, sub);
        assert.deepEqual(fs.existsSync(dir) ? fs.readdirSync(dir) : [], [], `${dir} after removing every pod`);
      }
    }
    t.diagnostic(`${totalSteps()} workload steps, ${tracked.podIds.length} pods in all`);
  });
});
