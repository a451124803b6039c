import * as os from 'node:os';
import { connectCri, type CriClient } from '../helpers/cri';
import { cpuOf, fleetRuntimes, msSince, pullImages, removePods, startPods, type FleetPod, type FleetRuntime } from './fleet';
import { BenchStack, type BenchNet, type Name } from './stack';
import { cpuSeconds, exitStatus, fmtMB, fmtMs, fmtRatio, fmtSec, intFlag, loadLine, median, need, parseFlags, percentile, secondsFlag, table } from './util';

export const SCALE_USAGE = `scale [--pods N] [--containers M] [--samples S] [--warmup W] [--stats-samples T]
      [--stats-gap SECONDS] [--parallel P] [--restart] [--cpu-prof DIR] [--log-level LEVEL]
    Per-call cost on a full node, tscri against containerd 1.6: first Version on both empty
    daemons, then N pods (default 50) of M running busybox sleep containers (default 10) on
    each runtime (P pods made at a time, default 1; create-all timed), then S samples (default
    200) of each list and status call the kubelet makes, alternating the runtimes call by
    call, each after W untimed calls of its kind on both (default 500: a node polled by a
    kubelet is past its first few hundred calls within minutes; a JIT-compiled daemon is
    slower before, see W=5 for a cold one): p50 and p95 of ListContainers (all, and one pod's), ListPodSandbox, ContainerStatus,
    PodSandboxStatus, ListImages; T samples (default 5) of ListContainerStats and
    ListPodSandboxStats, SECONDS apart (default 2.5: longer than tscri's stats cache keeps an
    entry, so every sample reads the cgroups). --restart: both daemons restarted with their
    containers running; time to answer Version, then a full ListContainers and its states.
    Then remove-all, timed. Daemon CPU of each phase. --cpu-prof DIR: tscri runs with
    --cpu-prof and writes its profile there when it stops.`;

const TAG = 'scale';

export const NETS: Record<Name, BenchNet> = {
  tscri: { network: 'tscri-bench-sc', bridge: 'tscri-bs0', subnet: '10.75.0.0/24', gateway: '10.75.0.1', prefix: '10.75.0.' },
  containerd: { network: 'ctrd-bench-sc', bridge: 'ctrd-bs0', subnet: '10.76.0.0/24', gateway: '10.76.0.1', prefix: '10.76.0.' },
};

interface Call {
  name: string;
  run(cri: CriClient, pods: FleetPod[], i: number): Promise<unknown>;
}

const pick = <T>(xs: T[], i: number): T => xs[(i * 7919) % xs.length];

const FAST_CALLS: Call[] = [
  { name: 'ListContainers (all)', run: (cri) => cri.runtime.ListContainers({ filter: {} }) },
  { name: 'ListContainers (one pod)', run: (cri, pods, i) => cri.runtime.ListContainers({ filter: { pod_sandbox_id: pick(pods, i).id } }) },
  { name: 'ListPodSandbox', run: (cri) => cri.runtime.ListPodSandbox({ filter: {} }) },
  { name: 'ContainerStatus', run: (cri, pods, i) => cri.runtime.ContainerStatus({ container_id: pick(pick(pods, i).containers, i), verbose: false }) },
  { name: 'PodSandboxStatus', run: (cri, pods, i) => cri.runtime.PodSandboxStatus({ pod_sandbox_id: pick(pods, i).id, verbose: false }) },
  { name: 'ListImages', run: (cri) => cri.image.ListImages({ filter: {} }) },
];

const STATS_CALLS: Call[] = [
  { name: 'ListContainerStats (all)', run: (cri) => cri.runtime.ListContainerStats({ filter: {} }) },
  { name: 'ListPodSandboxStats (all)', run: (cri) => cri.runtime.ListPodSandboxStats({ filter: {} }) },
];

type Samples = Record<Name, number[]>;

/** `n` rounds of `call`, each on both runtimes, which one goes first alternating. */
async function sample(runtimes: FleetRuntime[], pods: Record<Name, FleetPod[]>, call: Call, n: number, gapMs: number, stop: () => boolean): Promise<Samples> {
  const out: Samples = { tscri: [], containerd: [] };
  for (let i = 0; i < n && !stop(); i++) {
    const order = i % 2 === 0 ? runtimes : [...runtimes].reverse();
    for (const rt of order) {
      const t0 = process.hrtime.bigint();
      await call.run(rt.cri(), pods[rt.name], i);
      out[rt.name].push(msSince(t0));
    }
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
  }
  return out;
}

interface RestartResult {
  versionMs: number;
  listMs: number;
  running: number;
  total: number;
}

/**
 * Time from the new process's spawn to its first Version answer, through a client that retries
 * the connection every few milliseconds (the default backoff would add up to a second), then
 * one full ListContainers through the same client.
 */
async function timeRestart(rt: FleetRuntime, socket: string, restart: (beforeSpawn: () => void) => Promise<void>): Promise<RestartResult> {
  let probe: Promise<RestartResult> | undefined;
  await restart(() => {
    const t0 = process.hrtime.bigint();
    const cri = connectCri(socket, { 'grpc.initial_reconnect_backoff_ms': 5, 'grpc.max_reconnect_backoff_ms': 20 });
    const firstVersion = async (): Promise<number> => {
      for (;;) {
        try {
          await cri.runtime.Version({ version: 'v1' }, { timeoutMs: 1_000 });
          return msSince(t0);
        } catch {
          if (msSince(t0) > 300_000) throw new Error(`${rt.name} did not answer Version within 300 s of its restart`);
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    };
    probe = firstVersion()
      .then(async (versionMs) => {
        const t1 = process.hrtime.bigint();
        const { containers } = await cri.runtime.ListContainers({ filter: {} });
        const listMs = msSince(t1);
        return { versionMs, listMs, running: containers.filter((c) => c.state === 'CONTAINER_RUNNING').length, total: containers.length };
      })
      .finally(() => cri.close());
    // Awaited below, once restart() returns; a failure before then is not unhandled.
    probe.catch(() => undefined);
  });
  if (!probe) throw new Error(`${rt.name}: restart did not spawn`);
  return probe;
}

export async function runScale(argv: string[]): Promise<number> {
  // A bare --restart (last, or followed by another flag) means yes.
  argv = argv.map((a, i) => (a === '--restart' && (argv.at(i + 1)?.startsWith('--') ?? true) ? '--restart=true' : a));
  const flags = parseFlags(argv, {
    pods: '50',
    containers: '10',
    samples: '200',
    warmup: '500',
    'stats-samples': '5',
    'stats-gap': '2.5',
    parallel: '1',
    restart: 'false',
    'cpu-prof': '',
    'log-level': 'warn',
  });
  const nPods = intFlag(flags, 'pods', 1);
  const nContainers = intFlag(flags, 'containers', 1);
  const nSamples = intFlag(flags, 'samples', 1);
  const nWarmup = intFlag(flags, 'warmup', 0);
  const nStats = intFlag(flags, 'stats-samples', 0);
  const statsGapMs = secondsFlag(flags, 'stats-gap') * 1000;
  const parallel = intFlag(flags, 'parallel', 1);
  const doRestart = flags.restart === 'true' || flags.restart === '1' || flags.restart === 'yes';
  const cpuProf = flags['cpu-prof'];

  const stack = new BenchStack({
    tag: 'sc',
    nets: NETS,
    logLevel: flags['log-level'],
    nodeArgs: cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : undefined,
  });
  const stop = () => stack.wasInterrupted;
  const load0 = os.loadavg();
  const versionEmpty: Samples = { tscri: [], containerd: [] };
  const created: Record<Name, { ms: number; cpu: number; pods: FleetPod[] }> = {
    tscri: { ms: NaN, cpu: NaN, pods: [] },
    containerd: { ms: NaN, cpu: NaN, pods: [] },
  };
  const removed: Record<Name, { ms: number; cpu: number }> = { tscri: { ms: NaN, cpu: NaN }, containerd: { ms: NaN, cpu: NaN } };
  const results = new Map<string, Samples>();
  const callCpu: Record<Name, number> = { tscri: 0, containerd: 0 };
  const restarts: Partial<Record<Name, RestartResult>> = {};
  let failed: string | undefined;
  try {
    console.log(`machine: ${os.cpus().length} CPUs, ${fmtMB(os.totalmem())} RAM, load average ${load0.map((l) => l.toFixed(2)).join(' ')}`);
    await stack.start();
    const runtimes = fleetRuntimes(stack);
    for (const rt of runtimes) {
      stack.addPodCleanup({ what: `removing ${rt.name} pods`, run: () => removePods(rt, TAG, 4) });
    }
    // Before any image or pod: the cost of a call that does nothing.
    const none: FleetPod[] = [];
    for (let i = 0; i < nWarmup; i++) for (const rt of runtimes) await rt.cri().runtime.Version({ version: 'v1' });
    const v = await sample(
      runtimes,
      { tscri: none, containerd: none },
      { name: 'Version', run: (cri) => cri.runtime.Version({ version: 'v1' }) },
      nSamples,
      0,
      stop,
    );
    versionEmpty.tscri = v.tscri;
    versionEmpty.containerd = v.containerd;

    await pullImages(runtimes, stack);
    for (const rt of runtimes) {
      if (stop()) break;
      const cpu0 = cpuSeconds(rt.pid());
      const t0 = process.hrtime.bigint();
      const pods = await startPods(rt, stack.image, TAG, nPods, nContainers, parallel, stop);
      created[rt.name] = { ms: msSince(t0), cpu: cpuSeconds(rt.pid()) - cpu0, pods };
      console.log(`${rt.name}: ${pods.length} pods x ${nContainers} containers running in ${fmtSec(created[rt.name].ms / 1000)}`);
    }
    const pods = { tscri: created.tscri.pods, containerd: created.containerd.pods };

    const cpu0 = runtimes.map((rt) => cpuSeconds(rt.pid()));
    for (const call of FAST_CALLS) {
      if (stop()) break;
      // Untimed calls first: connection, JIT, caches.
      await sample(runtimes, pods, call, nWarmup, 0, stop);
      results.set(call.name, await sample(runtimes, pods, call, nSamples, 0, stop));
    }
    for (const call of STATS_CALLS) {
      if (stop() || nStats === 0) break;
      await sample(runtimes, pods, call, 1, statsGapMs, stop);
      results.set(call.name, await sample(runtimes, pods, call, nStats, statsGapMs, stop));
    }
    runtimes.forEach((rt, i) => (callCpu[rt.name] = cpuSeconds(rt.pid()) - cpu0[i]));

    if (doRestart && !stop()) {
      const d = need(stack.daemon, 'a started tscri daemon');
      const c = need(stack.containerd, 'a started containerd');
      restarts.tscri = await timeRestart(runtimes[0], d.socket, async (beforeSpawn) => {
        await d.stop('SIGTERM', { keep: true });
        beforeSpawn();
        await d.restart();
      });
      restarts.containerd = await timeRestart(runtimes[1], c.socket, (beforeSpawn) => c.restart(beforeSpawn));
    }

    for (const rt of runtimes) {
      if (stop()) break;
      const monitors = cpuOf(rt.monitorPids());
      const cpu1 = cpuSeconds(rt.pid());
      const t0 = process.hrtime.bigint();
      const n = await removePods(rt, TAG, parallel);
      removed[rt.name] = { ms: msSince(t0), cpu: cpuSeconds(rt.pid()) - cpu1 };
      console.log(`${rt.name}: ${n} pods removed in ${fmtSec(removed[rt.name].ms / 1000)} (${monitors.size} monitors before)`);
    }
  } catch (err) {
    failed = stack.failure(err);
  } finally {
    stack.stopWatchingSignals();
  }
  if (stack.wasInterrupted) return stack.interruptedExit();
  const load1 = os.loadavg();
  const problems = await stack.teardown();

  const row = (label: string, s: Samples) => [
    label,
    fmtMs2(percentile(s.tscri, 50)),
    fmtMs2(percentile(s.tscri, 95)),
    fmtMs2(percentile(s.containerd, 50)),
    fmtMs2(percentile(s.containerd, 95)),
    fmtRatio(median(s.tscri) / median(s.containerd)),
  ];
  const rows = [row('Version, empty daemon', versionEmpty), ...[...results].map(([name, s]) => row(name, s))];
  console.log('');
  console.log(
    `${nPods} pods x ${nContainers} running containers per runtime; ${nSamples} samples per call after ${nWarmup} untimed ones (stats: ${nStats}, ${statsGapMs / 1000} s apart), CRI calls over gRPC from this process`,
  );
  console.log(table(['call', 'tscri p50', 'tscri p95', 'containerd p50', 'containerd p95', 'ratio p50'], rows));
  const verdicts: string[] = [];
  for (const [name, s] of results) {
    const r = median(s.tscri) / median(s.containerd);
    const target = name.includes('Stats') ? 0.3 : 1.0;
    verdicts.push(`${name} ${fmtRatio(r)} (target <= ${target}x: ${r <= target ? 'MET' : 'NOT MET'})`);
  }
  console.log(verdicts.join('\n'));
  console.log('');
  console.log(
    table(
      ['phase', 'tscri', 'containerd', 'ratio'],
      [
        ['create all (wall)', fmtSec(created.tscri.ms / 1000), fmtSec(created.containerd.ms / 1000), fmtRatio(created.tscri.ms / created.containerd.ms)],
        ['create all (daemon CPU)', fmtSec(created.tscri.cpu), fmtSec(created.containerd.cpu), fmtRatio(created.tscri.cpu / created.containerd.cpu)],
        ['list/status/stats calls (daemon CPU)', fmtSec(callCpu.tscri), fmtSec(callCpu.containerd), fmtRatio(callCpu.tscri / callCpu.containerd)],
        ['remove all (wall)', fmtSec(removed.tscri.ms / 1000), fmtSec(removed.containerd.ms / 1000), fmtRatio(removed.tscri.ms / removed.containerd.ms)],
        ['remove all (daemon CPU)', fmtSec(removed.tscri.cpu), fmtSec(removed.containerd.cpu), fmtRatio(removed.tscri.cpu / removed.containerd.cpu)],
      ],
    ),
  );
  if (restarts.tscri && restarts.containerd) {
    const t = restarts.tscri;
    const c = restarts.containerd;
    console.log('');
    console.log(`Restart with ${nPods * nContainers} running containers (spawn to answer; then a full ListContainers through the same client)`);
    console.log(
      table(
        ['', 'tscri', 'containerd', 'ratio'],
        [
          ['Version answered', fmtMs(t.versionMs), fmtMs(c.versionMs), fmtRatio(t.versionMs / c.versionMs)],
          ['then ListContainers', fmtMs(t.listMs), fmtMs(c.listMs), fmtRatio(t.listMs / c.listMs)],
          ['containers listed / running', `${t.total} / ${t.running}`, `${c.total} / ${c.running}`, ''],
        ],
      ),
    );
    const want = nPods * nContainers;
    for (const [name, r] of Object.entries(restarts))
      if (r.running !== want) problems.push(`${name}: ${r.running} running containers after the restart, expected ${want}`);
  }
  console.log('');
  console.log(loadLine(load0, load1));
  if (cpuProf) console.log(`tscri CPU profile: ${cpuProf}/*.cpuprofile`);
  return exitStatus(problems, failed);
}

const fmtMs2 = (ms: number) => (Number.isFinite(ms) ? (ms < 10 ? `${ms.toFixed(2)} ms` : fmtMs(ms)) : '-');
