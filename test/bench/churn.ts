// Memory over pod churn: one tscri daemon, N pod lifecycles one after another, the daemon's RSS
// after the first W (warm-up) and after all N, and two heap snapshots (each taken after a full
// GC) compared by object count per constructor, to show what, if anything, is retained.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import { busyboxLayer, pushImage } from '../helpers/images';
import { containerConfig, daemonConfig, makeCniFixture, podConfig, removeTestCgroups, type CniFixture, type TestNetwork } from '../helpers/pods';
import { memOf } from './procs';
import { fmtMB, intFlag, need, parseFlags, table } from './util';

export const CHURN_USAGE = `churn [--n N] [--warmup W] [--top K] [--trim yes] [--snapshots no]
    Memory over churn: N pod lifecycles (default 1000) on one tscri daemon, one after
    another (RunPodSandbox, CreateContainer, StartContainer, the kubelet's lists, status
    and stats, StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox). Prints the daemon's RSS after W
    (default 100) and after N, and the K (default 15) constructors whose live object
    count grew most between two heap snapshots taken at those points. --trim yes then has
    glibc return its free memory (malloc_trim(0) through gdb) and prints the RSS again:
    what it gives back was fragmentation, not a leak. --snapshots no: RSS figures only.`;

export const NET: TestNetwork = { bridge: 'tscri-bn-ch', subnet: '10.70.0.0/24', gateway: '10.70.0.1', name: 'tscri-bench-churn' };
const SLEEP = ['/bin/sh', '-c', "trap 'kill $!; exit 0' TERM; sleep 3600 & wait"];

interface HeapCounts {
  /** "type name" → live objects, and their self size in bytes. */
  count: Map<string, number>;
  size: Map<string, number>;
  total: number;
}

/** Counts the nodes of a V8 heap snapshot by type and constructor name. */
function countHeap(file: string): HeapCounts {
  const snap = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const count = new Map<string, number>();
  const size = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType]];
    if (type === 'hidden' || type === 'synthetic') continue;
    const name = type === 'string' || type === 'number' ? '' : snap.strings[snap.nodes[i + iName]].slice(0, 60);
    const key = `${type} ${name}`.trim();
    const bytes = snap.nodes[i + iSize];
    count.set(key, (count.get(key) ?? 0) + 1);
    size.set(key, (size.get(key) ?? 0) + bytes);
    total += bytes;
  }
  return { count, size, total };
}

/** Resident bytes by kind of mapping, from /proc/<pid>/smaps: where an RSS change comes from. */
function rssByKind(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let kind = '';
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1];
      kind =
        name === ''
          ? 'anonymous (V8 heap, malloc arenas, stacks)'
          : name === '[heap]'
            ? '[heap] (brk malloc)'
            : name.startsWith('[')
              ? name
              : 'file-backed (code, libraries)';
      continue;
    }
    const m = /^Rss:\s+(\d+) kB/.exec(line);
    if (m) out.set(kind, (out.get(kind) ?? 0) + Number(m[1]) * 1024);
  }
  return out;
}

/** Asks the daemon for a heap snapshot (--heapsnapshot-signal) and waits until it is written. */
async function heapSnapshot(daemon: Daemon, dir: string): Promise<string> {
  const before = new Set(fs.readdirSync(dir));
  process.kill(need(daemon.pid, 'a running daemon pid'), 'SIGUSR2');
  for (;;) {
    const fresh = fs.readdirSync(dir).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
    if (fresh.length > 0) {
      const file = path.join(dir, fresh[0]);
      // Written in one go and then closed: the size stops changing.
      let last = -1;
      for (;;) {
        const now = fs.statSync(file).size;
        if (now === last && now > 0) return file;
        last = now;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function lifecycle(daemon: Daemon, image: string, logDir: string, i: number): Promise<void> {
  const rt = daemon.cri.runtime;
  const config = podConfig(`churn-${i}`, { logDirectory: path.join(logDir, String(i)) });
  const logDirectory = need(config.log_directory, `a log directory in pod config churn-${i}`);
  fs.mkdirSync(logDirectory, { recursive: true });
  const { pod_sandbox_id } = await rt.RunPodSandbox({ config, runtime_handler: '' });
  const { container_id } = await rt.CreateContainer({ pod_sandbox_id, config: containerConfig('c', image, SLEEP), sandbox_config: config });
  await rt.StartContainer({ container_id });
  // What the kubelet asks about a running pod: lists, statuses and stats.
  await rt.ListPodSandbox({});
  await rt.ListContainers({});
  await rt.ContainerStatus({ container_id, verbose: false });
  await rt.ContainerStats({ container_id });
  await rt.PodSandboxStats({ pod_sandbox_id });
  await rt.StopContainer({ container_id, timeout: 10 });
  await rt.RemoveContainer({ container_id });
  await rt.StopPodSandbox({ pod_sandbox_id });
  await rt.RemovePodSandbox({ pod_sandbox_id });
  fs.rmSync(logDirectory, { recursive: true, force: true });
}

export async function runChurn(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, { n: '1000', warmup: '100', top: '15', trim: 'no', snapshots: 'yes' });
  const snapshots = flags['snapshots'] !== 'no';
  const n = intFlag(flags, 'n', 1);
  const warmup = Math.min(intFlag(flags, 'warmup', 1), n);
  const top = intFlag(flags, 'top', 1);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-bench-churn-'));
  const snapDir = path.join(work, 'heap');
  const logDir = path.join(work, 'logs');
  fs.mkdirSync(snapDir);
  fs.mkdirSync(logDir);
  let registry: Registry | undefined;
  let daemon: Daemon | undefined;
  let cni: CniFixture | undefined;
  try {
    cni = makeCniFixture(NET);
    registry = await startRegistry();
    const img = await pushImage(registry.host, 'churn', 'v1', { layers: [await busyboxLayer()] });
    daemon = await startDaemon({
      config: daemonConfig(cni),
      logLevel: 'warn',
      env: { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapDir}` },
    });
    const ref = need(img.tagRef, 'a tag reference for the pushed churn image');
    const pid = need(daemon.pid, 'a running daemon pid');
    await daemon.cri.image.PullImage({ image: { image: ref } });
    const rss = (): number => memOf(pid).rss;
    const rss0 = rss();
    const t0 = Date.now();
    for (let i = 0; i < warmup; i++) await lifecycle(daemon, ref, logDir, i);
    // RSS first: a heap snapshot's own work leaves freed memory in the process for a while.
    const rssA = rss();
    const kindsA = rssByKind(pid);
    const snapA = snapshots ? await heapSnapshot(daemon, snapDir) : undefined;
    const t1 = Date.now();
    for (let i = warmup; i < n; i++) await lifecycle(daemon, ref, logDir, i);
    const rssB = rss();
    const kindsB = rssByKind(pid);
    const t2 = Date.now();
    let trimmed = '';
    if (flags['trim'] === 'yes') {
      const r = spawnSync('gdb', ['-p', String(pid), '-batch', '-ex', 'call (int) malloc_trim(0)'], { encoding: 'utf8' });
      trimmed =
        r.status !== 0
          ? `gdb malloc_trim failed: ${(r.stderr || String(r.error)).slice(0, 300)}`
          : `RSS after malloc_trim(0): ${fmtMB(rss())} (${fmtMB(rssB - rss())} given back)`;
    }
    const snapB = snapshots ? await heapSnapshot(daemon, snapDir) : undefined;
    const a = snapA ? countHeap(snapA) : undefined;
    const b = snapB ? countHeap(snapB) : undefined;
    console.log(
      `${n} pod lifecycles (${((t1 - t0) / warmup).toFixed(0)} ms each for the first ${warmup}, ${n > warmup ? ((t2 - t1) / (n - warmup)).toFixed(0) : '-'} ms after)`,
    );
    console.log(
      table(
        ['daemon', 'at start', `after ${warmup}`, `after ${n}`, 'change'],
        [
          ['RSS', fmtMB(rss0), fmtMB(rssA), fmtMB(rssB), `${(((rssB - rssA) / rssA) * 100).toFixed(1)} %`],
          ...(a && b ? [['live heap (snapshot)', '-', fmtMB(a.total), fmtMB(b.total), `${(((b.total - a.total) / a.total) * 100).toFixed(1)} %`]] : []),
          ...[...new Set([...kindsA.keys(), ...kindsB.keys()])]
            .filter((k) => (kindsA.get(k) ?? 0) + (kindsB.get(k) ?? 0) >= 1e6)
            .map((k) => [`  RSS ${k}`, '-', fmtMB(kindsA.get(k) ?? 0), fmtMB(kindsB.get(k) ?? 0), fmtMB((kindsB.get(k) ?? 0) - (kindsA.get(k) ?? 0))]),
        ],
      ),
    );
    console.log(`open file descriptors of the daemon: ${fs.readdirSync(`/proc/${pid}/fd`).length}`);
    if (trimmed) console.log(trimmed);
    if (!a || !b) return 0;
    const keys = new Set([...a.count.keys(), ...b.count.keys()]);
    const grown = [...keys]
      .map((k) => ({ k, dc: (b.count.get(k) ?? 0) - (a.count.get(k) ?? 0), ds: (b.size.get(k) ?? 0) - (a.size.get(k) ?? 0) }))
      .filter((g) => g.dc > 0)
      .sort((x, y) => y.ds - x.ds || y.dc - x.dc)
      .slice(0, top);
    console.log(`\nlive objects that grew between the two snapshots (${n - warmup} lifecycles apart):`);
    console.log(
      table(
        ['type and constructor', 'count +', 'bytes +'],
        grown.map((g) => [g.k, String(g.dc), String(g.ds)]),
      ),
    );
    console.log(`heap snapshots kept in ${snapDir}`);
    return 0;
  } finally {
    await daemon?.stop();
    await registry?.stop();
    removeTestCgroups();
    cni?.remove();
    fs.rmSync(logDir, { recursive: true, force: true });
  }
}
