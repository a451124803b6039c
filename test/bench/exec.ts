import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CriClient } from '../helpers/cri';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig';
import { BenchStack, type BenchNet, type Name } from './stack';
import { PortForwardClient, httpGet, spdyExec, upload } from './stream_client';
import { cpuSeconds, exitStatus, fmtMB, fmtMs, fmtRatio, intFlag, iptablesSave, loadLine, median, need, parseFlags, percentile, table } from './util';

export const EXEC_USAGE = `exec [--n N] [--mib M] [--rounds R] [--warmup W]
    Exec and port-forward, tscri against containerd 1.6: one pod with one busybox container
    per runtime (an httpd serving an M MiB file, default 64, on the pod's 127.0.0.1:8080 and
    an nc sink on :8081). N times each (default 50), alternating which runtime goes first,
    after W untimed warm-up rounds (default 3): ExecSync(true), ExecSync(echo hello), and a
    streaming exec (Exec RPC, SPDY upgrade v4.channel.k8s.io, stdout and exit status read).
    Then R rounds (default 3) of port-forward (portforward.k8s.io over SPDY): download the
    file with an HTTP GET, upload M MiB to the sink; MiB/s, median of the rounds.`;

const CALL_TIMEOUT_MS = 60_000;
const HTTP_PORT = 8080;
const SINK_PORT = 8081;

// Each runtime its own bridge and subnet (stack.ts).
export const NETS: Record<Name, BenchNet> = {
  tscri: { network: 'tscri-bench-ex', bridge: 'tscri-bx0', subnet: '10.92.0.0/24', gateway: '10.92.0.1', prefix: '10.92.0.' },
  containerd: { network: 'ctrd-bench-ex', bridge: 'ctrd-bx0', subnet: '10.90.0.0/24', gateway: '10.90.0.1', prefix: '10.90.0.' },
};

interface Runtime {
  name: Name;
  cri: CriClient;
  pid: number;
  cgroupRoot: string;
  logDir: string;
  podId?: string;
  containerId?: string;
}

function podConfig(rt: Runtime): PodSandboxConfig {
  const uid = `${rt.name}-exec-${crypto.randomBytes(4).toString('hex')}`;
  const logDirectory = path.join(rt.logDir, uid);
  fs.mkdirSync(logDirectory, { recursive: true });
  return {
    metadata: { name: 'bench-exec', namespace: 'bench-exec', uid, attempt: 0 },
    hostname: 'bench-exec',
    log_directory: logDirectory,
    dns_config: null,
    port_mappings: [],
    labels: { 'tscri-bench': 'exec' },
    annotations: {},
    linux: {
      cgroup_parent: `/${rt.cgroupRoot}/pod${uid}`,
      security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
    },
  };
}

/**
 * The server container: an M MiB random file under /tmp/www served by busybox httpd on the pod's
 * loopback, and a persistent nc sink that swallows M MiB per connection and answers "ok".
 */
function containerConfig(image: string, mib: number): ContainerConfig {
  const bytes = mib * 1048576;
  const script = [
    'busybox mkdir -p /tmp/www',
    `busybox dd if=/dev/urandom of=/tmp/www/big bs=1048576 count=${mib} 2>/dev/null`,
    `echo "busybox head -c ${bytes} >/dev/null; echo ok" > /tmp/sink.sh`,
    `busybox httpd -f -p 127.0.0.1:${HTTP_PORT} -h /tmp/www &`,
    `busybox nc -ll -p ${SINK_PORT} -e /bin/sh /tmp/sink.sh &`,
    'echo ready > /tmp/ready',
    "trap 'exit 0' TERM",
    'sleep 3600 & wait',
  ].join('\n');
  return {
    metadata: { name: 'server', attempt: 0 },
    image: { image },
    command: ['/bin/sh', '-c', script],
    args: [],
    working_dir: '/',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    log_path: 'server.log',
    stdin: false,
    stdin_once: false,
    tty: false,
    linux: { resources: null, security_context: {} },
  };
}

const msSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function startPod(rt: Runtime, image: string, mib: number): Promise<void> {
  const pod = podConfig(rt);
  const o = { timeoutMs: CALL_TIMEOUT_MS };
  const { pod_sandbox_id } = await rt.cri.runtime.RunPodSandbox({ config: pod, runtime_handler: '' }, o);
  rt.podId = pod_sandbox_id;
  const { container_id } = await rt.cri.runtime.CreateContainer({ pod_sandbox_id, config: containerConfig(image, mib), sandbox_config: pod }, o);
  rt.containerId = container_id;
  await rt.cri.runtime.StartContainer({ container_id }, o);
  const until = Date.now() + 60_000;
  for (;;) {
    const r = await rt.cri.runtime.ExecSync({ container_id, cmd: ['cat', '/tmp/ready'], timeout: '10' }, o);
    if (r.exit_code === 0 && r.stdout.toString() === 'ready\n') return;
    if (Date.now() > until) throw new Error(`${rt.name}: the server container was not ready after 60 s (${r.stderr.toString().trim()})`);
    await sleep(100);
  }
}

/** Stops and removes every pod this benchmark made on `rt`; returns how many there were. */
async function removeAllPods(rt: Runtime): Promise<number> {
  const { items } = await rt.cri.runtime.ListPodSandbox({ filter: { label_selector: { 'tscri-bench': 'exec' } } });
  const o = { timeoutMs: CALL_TIMEOUT_MS };
  for (const p of items) {
    const { containers } = await rt.cri.runtime.ListContainers({ filter: { pod_sandbox_id: p.id } });
    for (const c of containers) await rt.cri.runtime.StopContainer({ container_id: c.id, timeout: '2' }, o);
    await rt.cri.runtime.StopPodSandbox({ pod_sandbox_id: p.id }, o);
    await rt.cri.runtime.RemovePodSandbox({ pod_sandbox_id: p.id }, o);
  }
  return items.length;
}

async function execSync(rt: Runtime, cmd: string[], want: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await rt.cri.runtime.ExecSync(
    { container_id: need(rt.containerId, `${rt.name}: a started container`), cmd, timeout: '10' },
    { timeoutMs: CALL_TIMEOUT_MS },
  );
  const ms = msSince(t0);
  if (r.exit_code !== 0 || r.stdout.toString() !== want) {
    throw new Error(
      `${rt.name}: ExecSync ${cmd.join(' ')}: exit ${r.exit_code}, stdout ${JSON.stringify(r.stdout.toString())}, stderr ${JSON.stringify(r.stderr.toString())}`,
    );
  }
  return ms;
}

/** Exec RPC → URL → SPDY upgrade → `echo hello` on stdout → Success on the error stream. */
async function streamingExec(rt: Runtime): Promise<number> {
  const t0 = process.hrtime.bigint();
  const { url } = await rt.cri.runtime.Exec(
    { container_id: need(rt.containerId, `${rt.name}: a started container`), cmd: ['echo', 'hello'], stdin: false, stdout: true, stderr: true, tty: false },
    { timeoutMs: CALL_TIMEOUT_MS },
  );
  const r = await spdyExec(url, 'v4.channel.k8s.io');
  const ms = msSince(t0);
  let status = '';
  try {
    status = (JSON.parse(r.error) as { status?: string }).status ?? '';
  } catch {
    // Reported below.
  }
  if (r.stdout.toString() !== 'hello\n' || status !== 'Success') {
    throw new Error(`${rt.name}: streaming exec: stdout ${JSON.stringify(r.stdout.toString())}, error stream ${JSON.stringify(r.error)}`);
  }
  return ms;
}

interface Transfer {
  /** MiB per second of payload. */
  rate: number;
  /** PortForward RPC + upgrade + stream pair, before the first byte is sent. */
  setupMs: number;
}

async function portForward(rt: Runtime, port: number, fn: (pf: PortForwardClient) => Promise<number>): Promise<Transfer> {
  const t0 = process.hrtime.bigint();
  const { url } = await rt.cri.runtime.PortForward(
    { pod_sandbox_id: need(rt.podId, `${rt.name}: a started pod`), port: [port] },
    { timeoutMs: CALL_TIMEOUT_MS },
  );
  const pf = await PortForwardClient.connect(url);
  try {
    const setupMs = msSince(t0);
    return { rate: await fn(pf), setupMs };
  } finally {
    pf.close();
  }
}

async function download(rt: Runtime, mib: number): Promise<Transfer> {
  let setup = 0;
  const t = await portForward(rt, HTTP_PORT, async (pf) => {
    const s0 = process.hrtime.bigint();
    const conn = await pf.connection(HTTP_PORT);
    setup = msSince(s0);
    const t0 = process.hrtime.bigint();
    const r = await httpGet(conn, '/big');
    const s = msSince(t0) / 1000;
    if (r.status !== 200 || r.bytes !== mib * 1048576) throw new Error(`${rt.name}: GET /big: status ${r.status}, ${r.bytes} bytes`);
    return mib / s;
  });
  return { rate: t.rate, setupMs: t.setupMs + setup };
}

async function uploadTo(rt: Runtime, mib: number, chunk: Buffer): Promise<Transfer> {
  let setup = 0;
  const t = await portForward(rt, SINK_PORT, async (pf) => {
    const s0 = process.hrtime.bigint();
    const conn = await pf.connection(SINK_PORT);
    setup = msSince(s0);
    const t0 = process.hrtime.bigint();
    await upload(conn, mib * 1048576, chunk);
    const s = msSince(t0) / 1000;
    const err = await Promise.race([conn.error, sleep(0).then(() => '')]);
    if (err) throw new Error(`${rt.name}: upload: ${err}`);
    return mib / s;
  });
  return { rate: t.rate, setupMs: t.setupMs + setup };
}

export async function runExec(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, { n: '50', mib: '64', rounds: '3', warmup: '3' });
  const n = intFlag(flags, 'n', 1);
  const mib = intFlag(flags, 'mib', 1);
  const rounds = intFlag(flags, 'rounds', 1);
  const warmup = intFlag(flags, 'warmup', 0);

  const stack = new BenchStack({ tag: 'ex', nets: NETS, tscriConfig: ['streaming_address = "127.0.0.1:0"'] });
  const runtimes: Runtime[] = [];

  const load0 = os.loadavg();
  const lat = {
    execTrue: { tscri: [] as number[], containerd: [] as number[] },
    execEcho: { tscri: [] as number[], containerd: [] as number[] },
    stream: { tscri: [] as number[], containerd: [] as number[] },
  };
  const down: Record<Name, Transfer[]> = { tscri: [], containerd: [] };
  const up: Record<Name, Transfer[]> = { tscri: [], containerd: [] };
  const cpu: Record<Name, { latency: number; transfer: number; client: number }> = {
    tscri: { latency: 0, transfer: 0, client: 0 },
    containerd: { latency: 0, transfer: 0, client: 0 },
  };
  const clientCpu = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6;
  let failed: string | undefined;
  try {
    console.log(`machine: ${os.cpus().length} CPUs, ${fmtMB(os.totalmem())} RAM, load average ${load0.map((l) => l.toFixed(2)).join(' ')}`);
    await stack.start();
    const { daemon, containerd, image, pause } = stack;
    const d = need(daemon, 'a started tscri daemon');
    const c = need(containerd, 'a started containerd');
    runtimes.push(
      { name: 'tscri', cri: d.cri, pid: need(d.pid, 'a tscri daemon pid'), cgroupRoot: stack.cgroupRoots.tscri, logDir: stack.logDir('tscri') },
      { name: 'containerd', cri: c.cri, pid: need(c.pid, 'a containerd pid'), cgroupRoot: stack.cgroupRoots.containerd, logDir: stack.logDir('containerd') },
    );
    for (const rt of runtimes) stack.addPodCleanup({ what: `removing ${rt.name} pods`, run: () => removeAllPods(rt) });
    for (const rt of runtimes) {
      const v = await rt.cri.runtime.Version({ version: 'v1' });
      for (const ref of [image, pause]) await rt.cri.image.PullImage({ image: { image: ref } }, { timeoutMs: 120_000 });
      await startPod(rt, image, mib);
      console.log(
        `${rt.name}: ${v.runtime_name} ${v.runtime_version} (pid ${rt.pid}), pod ${need(rt.podId, `${rt.name}: a started pod`).slice(0, 12)} serving ${mib} MiB`,
      );
    }

    const latencyRound = async (rt: Runtime, keep: boolean): Promise<void> => {
      const a = await execSync(rt, ['true'], '');
      const b = await execSync(rt, ['echo', 'hello'], 'hello\n');
      const c = await streamingExec(rt);
      if (!keep) return;
      lat.execTrue[rt.name].push(a);
      lat.execEcho[rt.name].push(b);
      lat.stream[rt.name].push(c);
    };
    for (let i = 0; i < warmup; i++) for (const rt of runtimes) await latencyRound(rt, false);
    for (let i = 0; i < n && !stack.wasInterrupted; i++) {
      const order = i % 2 === 0 ? runtimes : [...runtimes].reverse();
      for (const rt of order) {
        const c0 = cpuSeconds(rt.pid);
        await latencyRound(rt, true);
        cpu[rt.name].latency += cpuSeconds(rt.pid) - c0;
      }
    }

    const chunk = crypto.randomBytes(256 * 1024);
    // Untimed: the first transfer warms the page cache, the sink and both daemons' paths.
    for (const rt of runtimes) {
      await download(rt, mib);
      await uploadTo(rt, mib, chunk);
    }
    for (let i = 0; i < rounds && !stack.wasInterrupted; i++) {
      const order = i % 2 === 0 ? runtimes : [...runtimes].reverse();
      for (const rt of order) {
        const c0 = cpuSeconds(rt.pid);
        const u0 = process.cpuUsage();
        down[rt.name].push(await download(rt, mib));
        up[rt.name].push(await uploadTo(rt, mib, chunk));
        cpu[rt.name].client += clientCpu(process.cpuUsage(u0));
        cpu[rt.name].transfer += cpuSeconds(rt.pid) - c0;
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

  const latRow = (label: string, xs: Record<Name, number[]>) => {
    const t = xs.tscri;
    const c = xs.containerd;
    return [
      label,
      fmtMs(percentile(t, 50)),
      fmtMs(percentile(t, 95)),
      fmtMs(percentile(c, 50)),
      fmtMs(percentile(c, 95)),
      fmtRatio(median(t) / median(c)),
      fmtRatio(percentile(t, 95) / percentile(c, 95)),
    ];
  };
  const nDone = Math.min(lat.stream.tscri.length, lat.stream.containerd.length);
  if (nDone > 0) {
    console.log('');
    console.log(
      `Exec latency, ${nDone} calls per runtime and kind (after ${warmup} warm-up rounds), client in this process; tscri/containerd, lower is better`,
    );
    console.log(
      table(
        ['call', 'tscri p50', 'tscri p95', 'containerd p50', 'containerd p95', 'ratio p50', 'ratio p95'],
        [
          latRow('ExecSync true', lat.execTrue),
          latRow('ExecSync echo hello', lat.execEcho),
          latRow('streaming exec (Exec RPC + SPDY v4, echo hello)', lat.stream),
        ],
      ),
    );
    console.log(
      `daemon CPU during the latency loop: tscri ${cpu.tscri.latency.toFixed(2)} s, containerd ${cpu.containerd.latency.toFixed(2)} s (conmon, shims, runc not included)`,
    );
  }
  const rDone = Math.min(down.tscri.length, down.containerd.length);
  if (rDone > 0) {
    const rates = (xs: Transfer[]) => xs.map((x) => x.rate);
    const cell = (xs: Transfer[]) => `${median(rates(xs)).toFixed(1)} MiB/s`;
    const spread = (xs: Transfer[]) => `${Math.min(...rates(xs)).toFixed(0)}-${Math.max(...rates(xs)).toFixed(0)}`;
    const setup = (xs: Transfer[]) => fmtMs(median(xs.map((x) => x.setupMs)));
    const row = (label: string, rec: Record<Name, Transfer[]>) => [
      label,
      cell(rec.tscri),
      spread(rec.tscri),
      cell(rec.containerd),
      spread(rec.containerd),
      fmtRatio(median(rates(rec.tscri)) / median(rates(rec.containerd))),
    ];
    console.log('');
    console.log(`Port-forward throughput, ${mib} MiB per transfer, median of ${rDone} rounds (after 1 untimed); tscri/containerd, higher is better`);
    console.log(
      table(
        ['transfer', 'tscri', '(min-max)', 'containerd', '(min-max)', 'ratio'],
        [row(`download: HTTP GET from httpd on :${HTTP_PORT}`, down), row(`upload: to an nc sink on :${SINK_PORT}`, up)],
      ),
    );
    console.log(
      `port-forward setup (PortForward RPC + SPDY upgrade + stream pair), median: tscri ${setup([...down.tscri, ...up.tscri])}, containerd ${setup([...down.containerd, ...up.containerd])}`,
    );
    console.log(
      `CPU during the ${rDone} rounds (${2 * rDone * mib} MiB each runtime): daemon tscri ${cpu.tscri.transfer.toFixed(2)} s, containerd ${cpu.containerd.transfer.toFixed(2)} s; ` +
        `this client (SPDY in Node) ${cpu.tscri.client.toFixed(2)} s against tscri, ${cpu.containerd.client.toFixed(2)} s against containerd`,
    );
  }

  console.log('');
  console.log(loadLine(load0, load1));
  const ours = iptablesSave().filter((l) => Object.values(NETS).some((net) => l.includes(net.prefix) || l.includes(net.bridge) || l.includes(net.network)));
  if (ours.length > 0) problems.push(`iptables lines naming the benchmark networks: ${ours.join(' | ')}`);
  return exitStatus(problems, failed);
}
