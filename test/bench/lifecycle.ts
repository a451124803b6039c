import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CriClient } from '../helpers/cri';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig';
import { conmonsUnder, descendants, listProcs, shimsOf, sumMem, type Mem, type Proc } from './procs';
import { BenchStack, type BenchNet, type Name } from './stack';
import {
  cpuSeconds,
  exitStatus,
  fmtMB,
  fmtMs,
  fmtRatio,
  intFlag,
  iptablesSave,
  loadLine,
  median,
  need,
  parseFlags,
  percentile,
  secondsFlag,
  table,
} from './util';

export const LIFECYCLE_USAGE = `lifecycle [--pods N] [--rss-pods M] [--warmup W] [--log-level LEVEL] [--settle SECONDS]
    Pod lifecycle latency and memory, tscri against containerd 1.6 (runc, CNI bridge,
    pause image for containerd). N pods (default 20) one after another, alternating
    which runtime goes first: RunPodSandbox, CreateContainer, StartContainer (their sum
    is "to Running"), StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox;
    W untimed warm-up pods per runtime first (default 1). Then M pods (default 50)
    running at once on one runtime at a time, --settle seconds (default 10) later the
    RSS and PSS of the daemon plus its per-container monitors (conmon / shims).
    --log-level debug also prints tscri's own per-RPC times (server side).`;

const TARGET_RUNNING_RATIO = 0.5;
const TARGET_MEMORY_RATIO = 1 / 3;
const STOP_TIMEOUT_S = 10;
const CALL_TIMEOUT_MS = 60_000;

// Each runtime its own bridge and subnet (stack.ts).
export const NETS: Record<Name, BenchNet> = {
  tscri: { network: 'tscri-bench-lc', bridge: 'tscri-bn0', subnet: '10.71.0.0/24', gateway: '10.71.0.1', prefix: '10.71.0.' },
  containerd: { network: 'ctrd-bench-lc', bridge: 'ctrd-bn0', subnet: '10.72.0.0/24', gateway: '10.72.0.1', prefix: '10.72.0.' },
};

// SIGTERM ends both at once: a shell as PID 1 of its namespace ignores signals it has no trap for.
const CONTAINER_CMD = ['/bin/sh', '-c', "trap 'kill $!; exit 0' TERM; sleep 3600 & wait"];

const STEPS = ['RunPodSandbox', 'CreateContainer', 'StartContainer', 'StopContainer', 'RemoveContainer', 'StopPodSandbox', 'RemovePodSandbox'] as const;
type Step = (typeof STEPS)[number];
const TO_RUNNING: Step[] = ['RunPodSandbox', 'CreateContainer', 'StartContainer'];

interface Runtime {
  name: Name;
  cri: CriClient;
  pid: number;
  /** Top-level cgroup (in every v1 hierarchy) under which this runtime's pods are put. */
  cgroupRoot: string;
  logDir: string;
  /** Per-container monitors: conmon for tscri, runc v2 shims for containerd. */
  monitors(procs: Proc[]): Proc[];
}

interface Snapshot {
  daemon: Mem;
  monitors: Mem;
  monitorCount: number;
  /** Other long-lived helpers the daemon spawned (tscri's PID namespace holders). */
  helpers: Mem;
  helperCount: number;
  /** The pods' own processes (workload, and containerd's pause): not charged to the runtime. */
  pods: Mem;
  podProcCount: number;
}

let podSeq = 0;

function podConfig(rt: Runtime, tag: string): PodSandboxConfig {
  const seq = ++podSeq;
  const uid = `${rt.name}-${tag}-${seq}-${crypto.randomBytes(4).toString('hex')}`;
  const logDirectory = path.join(rt.logDir, uid);
  fs.mkdirSync(logDirectory, { recursive: true });
  const name = `lc-${tag}-${seq}`;
  return {
    metadata: { name, namespace: 'bench-lifecycle', uid, attempt: 0 },
    hostname: name,
    log_directory: logDirectory,
    dns_config: null,
    port_mappings: [],
    labels: { 'tscri-bench': 'lifecycle' },
    annotations: {},
    linux: {
      cgroup_parent: `/${rt.cgroupRoot}/pod${uid}`,
      security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
    },
  };
}

function containerConfig(image: string): ContainerConfig {
  return {
    metadata: { name: 'sleeper', attempt: 0 },
    image: { image },
    command: CONTAINER_CMD,
    args: [],
    envs: [],
    mounts: [],
    labels: {},
    annotations: {},
    log_path: 'sleeper_0.log',
    linux: { resources: null, security_context: {} },
  };
}

const msSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

/** One pod through its whole life; the milliseconds of each step, in STEPS order. */
async function cycle(rt: Runtime, image: string, tag: string): Promise<number[]> {
  const pod = podConfig(rt, tag);
  const times: number[] = [];
  const timed = async <T>(fn: () => Promise<T>): Promise<T> => {
    const t0 = process.hrtime.bigint();
    const r = await fn();
    times.push(msSince(t0));
    return r;
  };
  const o = { timeoutMs: CALL_TIMEOUT_MS };
  const { pod_sandbox_id } = await timed(() => rt.cri.runtime.RunPodSandbox({ config: pod, runtime_handler: '' }, o));
  const { container_id } = await timed(() => rt.cri.runtime.CreateContainer({ pod_sandbox_id, config: containerConfig(image), sandbox_config: pod }, o));
  await timed(() => rt.cri.runtime.StartContainer({ container_id }, o));
  await timed(() => rt.cri.runtime.StopContainer({ container_id, timeout: String(STOP_TIMEOUT_S) }, o));
  await timed(() => rt.cri.runtime.RemoveContainer({ container_id }, o));
  await timed(() => rt.cri.runtime.StopPodSandbox({ pod_sandbox_id }, o));
  await timed(() => rt.cri.runtime.RemovePodSandbox({ pod_sandbox_id }, o));
  fs.rmSync(need(pod.log_directory, 'a log directory in the pod config'), { recursive: true, force: true });
  return times;
}

async function startRunningPod(rt: Runtime, image: string, tag: string): Promise<void> {
  const pod = podConfig(rt, tag);
  const o = { timeoutMs: CALL_TIMEOUT_MS };
  const { pod_sandbox_id } = await rt.cri.runtime.RunPodSandbox({ config: pod, runtime_handler: '' }, o);
  const { container_id } = await rt.cri.runtime.CreateContainer({ pod_sandbox_id, config: containerConfig(image), sandbox_config: pod }, o);
  await rt.cri.runtime.StartContainer({ container_id }, o);
}

/** Stops and removes every pod this benchmark made on `rt`; returns how many there were. */
async function removeAllPods(rt: Runtime): Promise<number> {
  const { items } = await rt.cri.runtime.ListPodSandbox({ filter: { label_selector: { 'tscri-bench': 'lifecycle' } } });
  const o = { timeoutMs: CALL_TIMEOUT_MS };
  for (const p of items) {
    await rt.cri.runtime.StopPodSandbox({ pod_sandbox_id: p.id }, o);
    await rt.cri.runtime.RemovePodSandbox({ pod_sandbox_id: p.id }, o);
  }
  return items.length;
}

function snapshot(rt: Runtime): Snapshot {
  const procs = listProcs();
  const monitors = rt.monitors(procs);
  const podProcs = monitors.flatMap((m) => descendants(procs, m.pid));
  const inPods = new Set([...monitors, ...podProcs].map((p) => p.pid));
  // Anything else the daemon still parents (a PID namespace holder, a shim not yet detached).
  const helpers = descendants(procs, rt.pid).filter((p) => !inPods.has(p.pid));
  return {
    daemon: sumMem([rt.pid]),
    monitors: sumMem(monitors.map((p) => p.pid)),
    monitorCount: monitors.length,
    helpers: sumMem(helpers.map((p) => p.pid)),
    helperCount: helpers.length,
    pods: sumMem(podProcs.map((p) => p.pid)),
    podProcCount: podProcs.length,
  };
}

const total = (s: Snapshot): Mem => ({
  rss: s.daemon.rss + s.monitors.rss + s.helpers.rss,
  pss: s.daemon.pss + s.monitors.pss + s.helpers.pss,
});

/** What each pod added: everything charged to the runtime, less the idle daemon. */
function perPod(m: { idle: Snapshot; loaded: Snapshot }, pods: number): Mem {
  const tot = total(m.loaded);
  return { rss: (tot.rss - m.idle.daemon.rss) / pods, pss: (tot.pss - m.idle.daemon.pss) / pods };
}

const fmtMiB = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** iptables lines that mention CNI, and those that mention our bridges or subnets. */
function iptablesCounts(): { cni: number; ours: string[] } {
  const lines = iptablesSave();
  const needles = Object.values(NETS).flatMap((n) => [n.prefix, n.bridge, n.network]);
  return { cni: lines.filter((l) => l.includes('CNI')).length, ours: lines.filter((l) => needles.some((n) => l.includes(n))) };
}

/** tscri's server-side time per RPC method, from its debug "rpc" log lines. */
function rpcTimes(logs: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const line of logs.split('\n')) {
    if (!line.includes('"rpc"')) continue;
    try {
      const rec = JSON.parse(line) as { method?: string; ms?: number; msg?: string };
      if (rec.msg !== 'rpc' || !rec.method || typeof rec.ms !== 'number') continue;
      const m = rec.method.replace(/^.*\//, '');
      out.set(m, [...(out.get(m) ?? []), rec.ms]);
    } catch {
      // Not a pino line.
    }
  }
  return out;
}

export async function runLifecycle(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, { pods: '20', 'rss-pods': '50', warmup: '1', 'log-level': 'warn', settle: '10' });
  const nPods = intFlag(flags, 'pods', 1);
  const rssPods = intFlag(flags, 'rss-pods', 0);
  const warmup = intFlag(flags, 'warmup', 0);
  const settleS = secondsFlag(flags, 'settle');
  const logLevel = flags['log-level'];

  const ipt0 = iptablesCounts();
  const stack = new BenchStack({ tag: 'lc', nets: NETS, logLevel });
  const runtimes: Runtime[] = [];

  const load0 = os.loadavg();
  const times: Record<Name, number[][]> = { tscri: [], containerd: [] };
  const cpu: Record<Name, number> = { tscri: 0, containerd: 0 };
  const mem: Partial<Record<Name, { idle: Snapshot; loaded: Snapshot; after: Snapshot; running: number }>> = {};
  let tscriRpc = new Map<string, number[]>();
  let failed: string | undefined;
  try {
    console.log(`machine: ${os.cpus().length} CPUs, ${fmtMB(os.totalmem())} RAM, load average ${load0.map((l) => l.toFixed(2)).join(' ')}`);
    await stack.start();
    const { image, pause } = stack;
    console.log(`images: ${image} (container), ${pause} (containerd's sandbox_image)`);
    const d = need(stack.daemon, 'a started tscri daemon');
    const c = need(stack.containerd, 'a started containerd');
    runtimes.push(
      {
        name: 'tscri',
        cri: d.cri,
        pid: need(d.pid, 'a tscri daemon pid'),
        cgroupRoot: stack.cgroupRoots.tscri,
        logDir: stack.logDir('tscri'),
        monitors: (procs) => conmonsUnder(procs, [d.base]),
      },
      {
        name: 'containerd',
        cri: c.cri,
        pid: need(c.pid, 'a containerd pid'),
        cgroupRoot: stack.cgroupRoots.containerd,
        logDir: stack.logDir('containerd'),
        monitors: (procs) => shimsOf(procs, c.socket),
      },
    );
    for (const rt of runtimes) {
      stack.addPodCleanup({
        what: `removing ${rt.name} pods`,
        run: async (problems) => {
          const n = await removeAllPods(rt);
          if (n > 0) problems.push(`${rt.name}: ${n} pods were still there at teardown (removed)`);
        },
      });
    }
    for (const rt of runtimes) {
      const v = await rt.cri.runtime.Version({ version: 'v1' });
      // Not timed: this benchmark is about pods, and both runtimes pull the same two images.
      for (const ref of [image, pause]) await rt.cri.image.PullImage({ image: { image: ref } }, { timeoutMs: 120_000 });
      console.log(`${rt.name}: ${v.runtime_name} ${v.runtime_version} (pid ${rt.pid}), images pulled`);
    }

    for (const rt of runtimes) {
      for (let i = 0; i < warmup; i++) await cycle(rt, image, 'warm');
    }
    const logMark = d.logs().length;
    for (let i = 0; i < nPods && !stack.wasInterrupted; i++) {
      const order = i % 2 === 0 ? runtimes : [...runtimes].reverse();
      for (const rt of order) {
        const cpu0 = cpuSeconds(rt.pid);
        try {
          times[rt.name].push(await cycle(rt, image, 'lc'));
        } catch (err) {
          throw new Error(`pod ${i + 1} on ${rt.name}: ${String(err)}`, { cause: err });
        }
        cpu[rt.name] += cpuSeconds(rt.pid) - cpu0;
      }
    }
    tscriRpc = rpcTimes(d.logs().slice(logMark));
    if (logLevel === 'debug' || logLevel === 'trace') {
      // Kept on purpose (outside the work dir): the per-step detail behind the RPC table.
      const file = path.join(os.tmpdir(), `bench-lifecycle-tscri-${process.pid}.log`);
      fs.writeFileSync(file, d.logs().slice(logMark));
      console.log(`tscri log of the timed loop: ${file}`);
    }

    if (rssPods > 0) {
      for (const rt of runtimes) {
        if (stack.wasInterrupted) break;
        const idle = snapshot(rt);
        for (let i = 0; i < rssPods; i++) {
          try {
            await startRunningPod(rt, image, 'rss');
          } catch (err) {
            throw new Error(`memory phase, pod ${i + 1} on ${rt.name}: ${String(err)}`, { cause: err });
          }
        }
        await sleep(settleS * 1000);
        const { containers } = await rt.cri.runtime.ListContainers({ filter: { state: { state: 'CONTAINER_RUNNING' } } });
        const loaded = snapshot(rt);
        const t0 = process.hrtime.bigint();
        await removeAllPods(rt);
        console.log(`${rt.name}: ${rssPods} pods started, measured, removed (removal ${(msSince(t0) / 1000).toFixed(1)} s)`);
        await sleep(Math.min(5, settleS) * 1000);
        mem[rt.name] = { idle, loaded, after: snapshot(rt), running: containers.length };
      }
    }
  } catch (err) {
    failed = stack.failure(err);
  } finally {
    stack.stopWatchingSignals();
  }
  const load1 = os.loadavg();
  if (stack.wasInterrupted) return stack.interruptedExit();
  const problems = await stack.teardown();
  const ipt1 = iptablesCounts();

  const n = Math.min(times.tscri.length, times.containerd.length);
  if (n > 0) {
    const col = (name: Name, step: number) => times[name].slice(0, n).map((t) => t[step]);
    const toRunning = (name: Name) => times[name].slice(0, n).map((t) => TO_RUNNING.reduce((s, st) => s + t[STEPS.indexOf(st)], 0));
    const row = (label: string, t: number[], c: number[]) => [
      label,
      fmtMs(percentile(t, 50)),
      fmtMs(percentile(t, 95)),
      fmtMs(percentile(c, 50)),
      fmtMs(percentile(c, 95)),
      fmtRatio(median(t) / median(c)),
    ];
    const rows = STEPS.map((s, i) => row(s, col('tscri', i), col('containerd', i)));
    rows.push(row('to Running (sum of first 3)', toRunning('tscri'), toRunning('containerd')));
    const whole = (name: Name) => times[name].slice(0, n).map((t) => t.reduce((a, b) => a + b, 0));
    rows.push(row('whole lifecycle (sum of 7)', whole('tscri'), whole('containerd')));
    console.log('');
    console.log(`Pod lifecycle, ${n} pods per runtime (after ${warmup} warm-up), one busybox container each, CRI calls over gRPC from this process`);
    console.log(table(['step', 'tscri p50', 'tscri p95', 'containerd p50', 'containerd p95', 'ratio p50'], rows));
    const ratio = median(toRunning('tscri')) / median(toRunning('containerd'));
    console.log(
      `daemon CPU during the ${n} lifecycles: tscri ${cpu.tscri.toFixed(2)} s, containerd ${cpu.containerd.toFixed(2)} s (shims and conmon not included)`,
    );
    console.log(
      `to Running: tscri ${fmtRatio(ratio)} containerd; target tscri <= ${TARGET_RUNNING_RATIO}x containerd: ${ratio <= TARGET_RUNNING_RATIO ? 'MET' : 'NOT MET'}`,
    );
    if (tscriRpc.size > 0) {
      console.log('');
      console.log('tscri server-side time per RPC (its debug log, all calls in the timed loop):');
      console.log(
        table(
          ['method', 'calls', 'p50', 'p95', 'max'],
          [...tscriRpc].map(([m, xs]) => [m, String(xs.length), fmtMs(percentile(xs, 50)), fmtMs(percentile(xs, 95)), fmtMs(Math.max(...xs))]),
        ),
      );
    }
  }

  if (mem.tscri && mem.containerd) {
    const t = mem.tscri;
    const c = mem.containerd;
    const cell = (m: Mem) => `${fmtMiB(m.rss)} / ${fmtMiB(m.pss)}`;
    console.log('');
    console.log(`Memory, ${rssPods} pods with one running container each, one runtime at a time, ${settleS} s after the last start (RSS / PSS)`);
    console.log(
      table(
        ['', 'tscri', 'containerd'],
        [
          ['daemon idle (before the pods)', cell(t.idle.daemon), cell(c.idle.daemon)],
          ['daemon with pods', cell(t.loaded.daemon), cell(c.loaded.daemon)],
          [
            `monitors (tscri: conmon, containerd: shims)`,
            `${t.loaded.monitorCount} x: ${cell(t.loaded.monitors)}`,
            `${c.loaded.monitorCount} x: ${cell(c.loaded.monitors)}`,
          ],
          [
            'other daemon children (PID ns holders)',
            `${t.loaded.helperCount} x: ${cell(t.loaded.helpers)}`,
            `${c.loaded.helperCount} x: ${cell(c.loaded.helpers)}`,
          ],
          ['total charged to the runtime', cell(total(t.loaded)), cell(total(c.loaded))],
          ['per pod (total - idle daemon) / pods', cell(perPod(t, rssPods)), cell(perPod(c, rssPods))],
          ["pods' own processes (not charged)", `${t.loaded.podProcCount} x: ${cell(t.loaded.pods)}`, `${c.loaded.podProcCount} x: ${cell(c.loaded.pods)}`],
          ['running containers (ListContainers)', String(t.running), String(c.running)],
          ['daemon after removing the pods', cell(t.after.daemon), cell(c.after.daemon)],
        ],
      ),
    );
    const rssRatio = total(t.loaded).rss / total(c.loaded).rss;
    const pssRatio = total(t.loaded).pss / total(c.loaded).pss;
    console.log(`memory tscri/containerd with ${rssPods} pods: RSS ${fmtRatio(rssRatio)}, PSS ${fmtRatio(pssRatio)}`);
    console.log(
      `${rssPods} pods: target tscri <= 1/3 of containerd: RSS ${rssRatio <= TARGET_MEMORY_RATIO ? 'MET' : 'NOT MET'}, PSS ${pssRatio <= TARGET_MEMORY_RATIO ? 'MET' : 'NOT MET'}`,
    );
  }

  console.log('');
  console.log(loadLine(load0, load1));
  console.log(`iptables: ${ipt0.cni} lines mentioning CNI before, ${ipt1.cni} after; lines naming our bridges/subnets: ${ipt1.ours.length}`);
  if (ipt1.ours.length > 0) problems.push(`iptables lines naming the benchmark networks: ${ipt1.ours.join(' | ')}`);
  if (ipt1.cni !== ipt0.cni) problems.push(`iptables CNI line count changed ${ipt0.cni} -> ${ipt1.cni} (another process on this host may have changed it)`);
  return exitStatus(problems, failed);
}
