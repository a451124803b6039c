import * as os from 'node:os';
import { cpuDelta, cpuOf, fleetRuntimes, pullImages, removePods, startPods, type FleetPod, type FleetRuntime } from './fleet';
import { BenchStack, type BenchNet, type Name } from './stack';
import { exitStatus, fmtMB, fmtRatio, fmtSec, intFlag, loadLine, need, parseFlags, percentile, secondsFlag, table } from './util';

export const POLL_USAGE = `poll [--pods N] [--containers M] [--duration SECONDS] [--warmup SECONDS] [--idle SECONDS]
      [--parallel P] [--per-call yes|no] [--cpu-prof DIR] [--log-level LEVEL]
    A node's steady cost, tscri against containerd 1.6: N pods (default 100) of M running
    busybox sleep containers (default 1) on each runtime, then for SECONDS (default 60) a
    poller per runtime doing what the kubelet does: every second ListPodSandbox and
    ListContainers; every 10 s each pod's PodSandboxStatus and its containers'
    ContainerStatus, ListContainerStats and ListPodSandboxStats. Both pollers run at once.
    Reports CPU seconds per minute of each daemon and of its monitors (conmon processes
    against containerd-shim processes). Before the measured polling, --warmup SECONDS
    (default 180) of the same polling, each minute of it reported on its own row: a node is
    polled all its life, and a JIT-compiled daemon's first minutes of calls cost more than
    the ones after (here tscri's fell for three minutes, then held). Before that, --idle
    SECONDS (default 20) with no calls at all. After it, unless --per-call no, the daemon
    CPU of each kind of call, one runtime at a time. --cpu-prof DIR: tscri is restarted
    (containers running) with --cpu-prof before the idle phase and after the polling, so its
    profile in DIR covers those two.`;

const TAG = 'poll';
const TARGET_RATIO = 0.5;

export const NETS: Record<Name, BenchNet> = {
  tscri: { network: 'tscri-bench-po', bridge: 'tscri-bp0', subnet: '10.73.0.0/24', gateway: '10.73.0.1', prefix: '10.73.0.' },
  containerd: { network: 'ctrd-bench-po', bridge: 'ctrd-bp0', subnet: '10.74.0.0/24', gateway: '10.74.0.1', prefix: '10.74.0.' },
};

interface PollResult {
  seconds: number;
  daemonCpu: number;
  monitorCpu: number;
  monitors: number;
  relists: number;
  /** Wall time of each 1 s relist (both calls) and of each 10 s round, in ms. */
  relistMs: number[];
  roundMs: number[];
}

/** tscri's CPU rate of `what` over containerd's, each over its own polling time. */
function rateRatio(t: PollResult, c: PollResult, what: (r: PollResult) => number): number {
  return what(t) / t.seconds / (what(c) / c.seconds);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

/** One kind of call the poller makes, and how many of them a measurement takes. */
interface CallKind {
  name: string;
  times: number;
  /** Sleeps this long before each call: a stats list then misses the daemon's stats cache. */
  gapMs: number;
  run: (rt: FleetRuntime, pods: FleetPod[], i: number) => Promise<unknown>;
}

const CALL_KINDS: CallKind[] = [
  { name: 'ListPodSandbox', times: 1000, gapMs: 0, run: (rt) => rt.cri().runtime.ListPodSandbox({ filter: {} }) },
  { name: 'ListContainers', times: 1000, gapMs: 0, run: (rt) => rt.cri().runtime.ListContainers({ filter: {} }) },
  {
    name: 'PodSandboxStatus',
    times: 1000,
    gapMs: 0,
    run: (rt, pods, i) => rt.cri().runtime.PodSandboxStatus({ pod_sandbox_id: pods[i % pods.length].id, verbose: false }),
  },
  {
    name: 'ContainerStatus',
    times: 1000,
    gapMs: 0,
    run: (rt, pods, i) => rt.cri().runtime.ContainerStatus({ container_id: pods[i % pods.length].containers[0], verbose: false }),
  },
  { name: 'ListContainerStats', times: 10, gapMs: 1100, run: (rt) => rt.cri().runtime.ListContainerStats({ filter: {} }) },
  { name: 'ListPodSandboxStats', times: 10, gapMs: 1100, run: (rt) => rt.cri().runtime.ListPodSandboxStats({ filter: {} }) },
];

/**
 * Daemon CPU per call of each kind the poller makes, one runtime at a time, so that a poll's
 * cost can be traced to its calls. The CPU counters move in 10 ms ticks, so calls are measured
 * in bulk; the daemon's idle rate over the gaps (`idlePerMs`, from the idle phase) is taken out.
 */
async function perCall(rt: FleetRuntime, pods: FleetPod[], idlePerMs: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const kind of CALL_KINDS) {
    const before = cpuOf([rt.pid()]);
    for (let i = 0; i < kind.times; i++) {
      if (kind.gapMs > 0) await sleep(kind.gapMs);
      await kind.run(rt, pods, i);
    }
    const cpu = cpuDelta(before, cpuOf([rt.pid()])) - idlePerMs * kind.gapMs * kind.times;
    out.set(kind.name, Math.max(0, cpu) / kind.times);
  }
  return out;
}

async function poll(rt: FleetRuntime, pods: FleetPod[], durationMs: number, stop: () => boolean): Promise<PollResult> {
  const monitorPids = rt.monitorPids();
  const daemon0 = cpuOf([rt.pid()]);
  const monitors0 = cpuOf(monitorPids);
  const t0 = Date.now();
  const relistMs: number[] = [];
  const roundMs: number[] = [];
  const cri = rt.cri();
  // The 10 s round runs beside the relists, as the kubelet's pod workers and stats
  // collection run beside its PLEG.
  const rounds = (async () => {
    for (let n = 0; Date.now() - t0 < durationMs && !stop(); n++) {
      const start = Date.now();
      for (const p of pods) {
        await cri.runtime.PodSandboxStatus({ pod_sandbox_id: p.id, verbose: false });
        for (const c of p.containers) await cri.runtime.ContainerStatus({ container_id: c, verbose: false });
      }
      await cri.runtime.ListContainerStats({ filter: {} });
      await cri.runtime.ListPodSandboxStats({ filter: {} });
      roundMs.push(Date.now() - start);
      await sleep(t0 + (n + 1) * 10_000 - Date.now());
    }
  })();
  let relists = 0;
  for (let n = 0; Date.now() - t0 < durationMs && !stop(); n++) {
    const start = Date.now();
    await cri.runtime.ListPodSandbox({ filter: {} });
    await cri.runtime.ListContainers({ filter: {} });
    relistMs.push(Date.now() - start);
    relists++;
    await sleep(t0 + (n + 1) * 1000 - Date.now());
  }
  await rounds;
  const seconds = (Date.now() - t0) / 1000;
  return {
    seconds,
    daemonCpu: cpuDelta(daemon0, cpuOf([rt.pid()])),
    monitorCpu: cpuDelta(monitors0, cpuOf(monitorPids)),
    monitors: monitorPids.length,
    relists,
    relistMs,
    roundMs,
  };
}

export async function runPoll(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    pods: '100',
    containers: '1',
    duration: '60',
    idle: '20',
    warmup: '180',
    parallel: '2',
    'cpu-prof': '',
    'log-level': 'warn',
    'per-call': 'yes',
  });
  const nPods = intFlag(flags, 'pods', 1);
  const nContainers = intFlag(flags, 'containers', 1);
  const durationMs = secondsFlag(flags, 'duration') * 1000;
  const parallel = intFlag(flags, 'parallel', 1);
  const idleMs = secondsFlag(flags, 'idle') * 1000;
  const warmupMs = secondsFlag(flags, 'warmup') * 1000;
  const cpuProf = flags['cpu-prof'];
  const perCallToo = flags['per-call'] !== 'no';

  const stack = new BenchStack({
    tag: 'po',
    nets: NETS,
    logLevel: flags['log-level'],
    nodeArgs: cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : undefined,
  });
  const stop = () => stack.wasInterrupted;
  const load0 = os.loadavg();
  const results: Partial<Record<Name, PollResult>> = {};
  const idle: Partial<Record<Name, { seconds: number; daemonCpu: number; monitorCpu: number }>> = {};
  const calls: Partial<Record<Name, Map<string, number>>> = {};
  /** One entry per minute of warm-up (the last one may be shorter). */
  const warm: { tscri: PollResult; containerd: PollResult }[] = [];
  let failed: string | undefined;
  try {
    console.log(`machine: ${os.cpus().length} CPUs, ${fmtMB(os.totalmem())} RAM, load average ${load0.map((l) => l.toFixed(2)).join(' ')}`);
    await stack.start();
    const runtimes = fleetRuntimes(stack);
    for (const rt of runtimes) stack.addPodCleanup({ what: `removing ${rt.name} pods`, run: () => removePods(rt, TAG, 4) });
    await pullImages(runtimes, stack);
    const pods: Partial<Record<Name, FleetPod[]>> = {};
    for (const rt of runtimes) {
      if (stop()) break;
      const started = await startPods(rt, stack.image, TAG, nPods, nContainers, parallel, stop);
      pods[rt.name] = started;
      console.log(`${rt.name}: ${started.length} pods x ${nContainers} containers running`);
    }
    if (!stop()) {
      if (cpuProf) await need(stack.daemon, 'a started tscri daemon').restart();
      // The creates' after-effects (containerd's first stats, tscri's exit watchers) settle first.
      await sleep(5000);
      if (idleMs > 0) {
        console.log(`both idle for ${idleMs / 1000} s`);
        const before = runtimes.map((rt) => ({ d: cpuOf([rt.pid()]), m: cpuOf(rt.monitorPids()), t: Date.now() }));
        await sleep(idleMs);
        runtimes.forEach((rt, i) => {
          const b0 = before[i];
          idle[rt.name] = {
            seconds: (Date.now() - b0.t) / 1000,
            daemonCpu: cpuDelta(b0.d, cpuOf([rt.pid()])),
            monitorCpu: cpuDelta(b0.m, cpuOf(rt.monitorPids())),
          };
        });
      }
      if (warmupMs > 0) {
        console.log(`polling both for ${warmupMs / 1000} s (warm-up)`);
        for (let done = 0; done < warmupMs && !stop(); done += 60_000) {
          const ms = Math.min(60_000, warmupMs - done);
          const [tw, cw] = await Promise.all(runtimes.map((rt) => poll(rt, need(pods[rt.name], `${rt.name}: started pods`), ms, stop)));
          warm.push({ tscri: tw, containerd: cw });
        }
      }
      console.log(`polling both for ${durationMs / 1000} s`);
      const [t, c] = await Promise.all(runtimes.map((rt) => poll(rt, need(pods[rt.name], `${rt.name}: started pods`), durationMs, stop)));
      results.tscri = t;
      results.containerd = c;
      if (perCallToo) {
        console.log('daemon CPU per call, one runtime at a time');
        for (const rt of runtimes) {
          const i = idle[rt.name];
          const idlePerMs = i ? i.daemonCpu / (i.seconds * 1000) : 0;
          calls[rt.name] = await perCall(rt, need(pods[rt.name], `${rt.name}: started pods`), idlePerMs);
        }
      }
      if (cpuProf) await need(stack.daemon, 'a started tscri daemon').restart();
    }
  } catch (err) {
    failed = stack.failure(err);
  } finally {
    stack.stopWatchingSignals();
  }
  if (stack.wasInterrupted) return stack.interruptedExit();
  const load1 = os.loadavg();
  const problems = await stack.teardown();

  const t = results.tscri;
  const c = results.containerd;
  if (t && c) {
    const perMin = (cpu: number, r: { seconds: number }) => (cpu * 60) / r.seconds;
    const pct = (cpu: number, r: PollResult) => `${((cpu / r.seconds) * 100).toFixed(1)} %`;
    console.log('');
    console.log(
      `Kubelet-like polling, ${nPods} pods x ${nContainers} containers per runtime, ${t.seconds.toFixed(0)} s after ${warmupMs / 1000} s of warm-up, both at once`,
    );
    console.log(
      table(
        ['', 'tscri', 'containerd', 'ratio'],
        [
          ['daemon CPU s per minute', fmtSec(perMin(t.daemonCpu, t)), fmtSec(perMin(c.daemonCpu, c)), fmtRatio(rateRatio(t, c, (r) => r.daemonCpu))],
          ['daemon, share of a core', pct(t.daemonCpu, t), pct(c.daemonCpu, c), ''],
          [
            'monitors CPU s per minute (conmon / shims)',
            `${t.monitors} x: ${fmtSec(perMin(t.monitorCpu, t))}`,
            `${c.monitors} x: ${fmtSec(perMin(c.monitorCpu, c))}`,
            fmtRatio(rateRatio(t, c, (r) => r.monitorCpu)),
          ],
          [
            'daemon + monitors CPU s per minute',
            fmtSec(perMin(t.daemonCpu + t.monitorCpu, t)),
            fmtSec(perMin(c.daemonCpu + c.monitorCpu, c)),
            fmtRatio(rateRatio(t, c, (r) => r.daemonCpu + r.monitorCpu)),
          ],
          ...warm.map((w, i) => [
            `warm-up minute ${i + 1}: daemon CPU s per minute`,
            fmtSec(perMin(w.tscri.daemonCpu, w.tscri)),
            fmtSec(perMin(w.containerd.daemonCpu, w.containerd)),
            fmtRatio(rateRatio(w.tscri, w.containerd, (r) => r.daemonCpu)),
          ]),
          ...(idle.tscri && idle.containerd
            ? [
                [
                  'idle daemon CPU s per minute (no calls)',
                  fmtSec(perMin(idle.tscri.daemonCpu, idle.tscri)),
                  fmtSec(perMin(idle.containerd.daemonCpu, idle.containerd)),
                  '',
                ],
                [
                  'idle monitors CPU s per minute',
                  fmtSec(perMin(idle.tscri.monitorCpu, idle.tscri)),
                  fmtSec(perMin(idle.containerd.monitorCpu, idle.containerd)),
                  '',
                ],
              ]
            : []),
          ['relists (1 s) done', String(t.relists), String(c.relists), ''],
          [
            'relist p50 / p95 (ms)',
            `${percentile(t.relistMs, 50)} / ${percentile(t.relistMs, 95)}`,
            `${percentile(c.relistMs, 50)} / ${percentile(c.relistMs, 95)}`,
            '',
          ],
          [
            '10 s round p50 / max (ms)',
            `${percentile(t.roundMs, 50)} / ${Math.max(...t.roundMs)}`,
            `${percentile(c.roundMs, 50)} / ${Math.max(...c.roundMs)}`,
            '',
          ],
        ],
      ),
    );
    const tc = calls.tscri;
    const cc = calls.containerd;
    if (tc && cc) {
      console.log('');
      console.log('Daemon CPU per call, one runtime at a time (stats lists 1.1 s apart, past the stats cache)');
      const ms = (s: number | undefined) => (s === undefined ? '-' : `${(s * 1000).toFixed(2)} ms`);
      console.log(
        table(
          ['call', 'times', 'tscri', 'containerd', 'ratio'],
          CALL_KINDS.map((k) => {
            const a = tc.get(k.name);
            const b = cc.get(k.name);
            return [k.name, String(k.times), ms(a), ms(b), a !== undefined && b ? fmtRatio(a / b) : '-'];
          }),
        ),
      );
    }
    const ratio = rateRatio(t, c, (r) => r.daemonCpu);
    console.log(`daemon CPU: tscri ${fmtRatio(ratio)} containerd; target <= ${TARGET_RATIO}x: ${ratio <= TARGET_RATIO ? 'MET' : 'NOT MET'}`);
  }
  console.log('');
  console.log(loadLine(load0, load1));
  return exitStatus(problems, failed);
}
