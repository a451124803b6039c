// What the scale and poll benchmarks share: many pods of `sleep` containers on each runtime, made
// and removed through the CRI, and the CPU time a daemon and its monitors spend meanwhile.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CriClient } from '../helpers/cri';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import { conmonsUnder, listProcs, shimsOf } from './procs';
import type { BenchStack, Name } from './stack';
import { cpuSeconds, need } from './util';

export const CALL_TIMEOUT_MS = 120_000;

// SIGTERM ends both at once: a shell as PID 1 of its namespace ignores signals it has no trap for.
const CONTAINER_CMD = ['/bin/sh', '-c', "trap 'kill $!; exit 0' TERM; sleep 360000 & wait"];

export interface FleetRuntime {
  name: Name;
  /** The current client (a restart replaces it). */
  cri(): CriClient;
  /** The current daemon process. */
  pid(): number;
  cgroupRoot: string;
  logDir: string;
  /** Per-container monitors' pids: conmon for tscri, runc v2 shims for containerd. */
  monitorPids(): number[];
}

export interface FleetPod {
  id: string;
  containers: string[];
}

/** Both runtimes of a started BenchStack. */
export function fleetRuntimes(stack: BenchStack): FleetRuntime[] {
  const d = need(stack.daemon, 'a started tscri daemon');
  const c = need(stack.containerd, 'a started containerd');
  return [
    {
      name: 'tscri',
      cri: () => d.cri,
      pid: () => need(d.pid, 'a tscri daemon pid'),
      cgroupRoot: stack.cgroupRoots.tscri,
      logDir: stack.logDir('tscri'),
      monitorPids: () => conmonsUnder(listProcs(), [d.base]).map((p) => p.pid),
    },
    {
      name: 'containerd',
      cri: () => c.cri,
      pid: () => need(c.pid, 'a containerd pid'),
      cgroupRoot: stack.cgroupRoots.containerd,
      logDir: stack.logDir('containerd'),
      monitorPids: () => shimsOf(listProcs(), c.socket).map((p) => p.pid),
    },
  ];
}

export function podConfig(rt: FleetRuntime, tag: string, seq: number): PodSandboxConfig {
  const uid = `${rt.name}-${tag}-${seq}-${crypto.randomBytes(4).toString('hex')}`;
  const logDirectory = path.join(rt.logDir, uid);
  fs.mkdirSync(logDirectory, { recursive: true });
  const name = `${tag}-${seq}`;
  return {
    metadata: { name, namespace: `bench-${tag}`, uid, attempt: 0 },
    hostname: name,
    log_directory: logDirectory,
    dns_config: null,
    port_mappings: [],
    labels: { 'tscri-bench': tag, pod: name },
    annotations: {},
    linux: {
      cgroup_parent: `/${rt.cgroupRoot}/pod${uid}`,
      security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
    },
  };
}

function containerConfig(image: string, i: number): ContainerConfig {
  return {
    metadata: { name: `sleeper-${i}`, attempt: 0 },
    image: { image },
    command: CONTAINER_CMD,
    args: [],
    envs: [],
    mounts: [],
    labels: { index: String(i) },
    annotations: {},
    log_path: `sleeper-${i}_0.log`,
    linux: { resources: null, security_context: {} },
  };
}

/** One pod with `containers` running sleepers. */
export async function startPod(rt: FleetRuntime, image: string, tag: string, seq: number, containers: number): Promise<FleetPod> {
  const pod = podConfig(rt, tag, seq);
  const o = { timeoutMs: CALL_TIMEOUT_MS };
  const cri = rt.cri();
  const { pod_sandbox_id } = await cri.runtime.RunPodSandbox({ config: pod, runtime_handler: '' }, o);
  const ids: string[] = [];
  for (let i = 0; i < containers; i++) {
    const { container_id } = await cri.runtime.CreateContainer({ pod_sandbox_id, config: containerConfig(image, i), sandbox_config: pod }, o);
    await cri.runtime.StartContainer({ container_id }, o);
    ids.push(container_id);
  }
  return { id: pod_sandbox_id, containers: ids };
}

/**
 * `pods` pods of `containers` sleepers each, `parallel` pods at a time; stops early (returning
 * what was made) when `stop()` says so.
 */
export async function startPods(
  rt: FleetRuntime,
  image: string,
  tag: string,
  pods: number,
  containers: number,
  parallel: number,
  stop: () => boolean,
): Promise<FleetPod[]> {
  const out: FleetPod[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < pods && !stop()) {
      const seq = ++next;
      try {
        out.push(await startPod(rt, image, tag, seq, containers));
      } catch (err) {
        throw new Error(`pod ${seq} on ${rt.name}: ${String(err)}`, { cause: err });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, worker));
  return out;
}

/** Stops and removes every pod labelled `tag` on `rt`, `parallel` at a time; returns how many. */
export async function removePods(rt: FleetRuntime, tag: string, parallel: number): Promise<number> {
  const cri = rt.cri();
  const { items } = await cri.runtime.ListPodSandbox({ filter: { label_selector: { 'tscri-bench': tag } } });
  const o = { timeoutMs: CALL_TIMEOUT_MS };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const p = items[next++];
      await cri.runtime.StopPodSandbox({ pod_sandbox_id: p.id }, o);
      await cri.runtime.RemovePodSandbox({ pod_sandbox_id: p.id }, o);
      fs.rmSync(p.metadata?.uid ? path.join(rt.logDir, p.metadata.uid) : '/nonexistent', { recursive: true, force: true });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, worker));
  return items.length;
}

/** CPU seconds of a set of processes; those gone since are left out of both readings. */
export function cpuOf(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(pid, cpuSeconds(pid));
    } catch {
      // Exited.
    }
  }
  return out;
}

/** CPU seconds spent between two readings of cpuOf, summed over the pids in both. */
export function cpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [pid, t] of after) {
    const t0 = before.get(pid);
    if (t0 !== undefined) sum += t - t0;
  }
  return sum;
}

export const msSince = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

/** Pulls the container image and containerd's pause image on both runtimes (untimed). */
export async function pullImages(runtimes: FleetRuntime[], stack: BenchStack): Promise<void> {
  for (const rt of runtimes) {
    const v = await rt.cri().runtime.Version({ version: 'v1' });
    for (const ref of [stack.image, stack.pause]) await rt.cri().image.PullImage({ image: { image: ref } }, { timeoutMs: CALL_TIMEOUT_MS });
    console.log(`${rt.name}: ${v.runtime_name} ${v.runtime_version} (pid ${rt.pid()}), images pulled`);
  }
}
