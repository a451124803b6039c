import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { pushImage } from '../helpers/images';
import { startRegistry, type Registry } from '../helpers/registry';
import { buildBigImageLayers, type BenchLayer } from './bigimage';
import { startContainerd, mountsUnder, type Containerd } from './containerd';
import { cpuSeconds, fmtMB, fmtRatio, fmtSec, intFlag, loadLine, median, need, parseFlags, secondsFlag, table, UsageError } from './util';

export const PULL_USAGE = `pull [--rounds N] [--log-level LEVEL] [--settle SECONDS]
    Cold pulls of a 157 MB (97 MB gzipped) 6-layer image from a local docker-registry,
    alternating tscri and containerd 1.6 (overlayfs, 3 concurrent downloads). Before each
    pull: sync, and at least --settle seconds (default 11) since the last RemoveImage.
    --tmpfs yes puts registry storage and both runtimes' roots on a private tmpfs, which
    takes the host filesystem's inode allocation out of the measurement.
    --log-level debug also prints tscri's per-layer unpack times.`;

const TARGET_RATIO = 0.7;
const PULL_TIMEOUT_MS = 10 * 60_000;

interface Runtime {
  name: 'tscri' | 'containerd';
  cri: CriClient;
  pid(): number | undefined;
  /** Throws unless nothing of the image is left on disk, so the next pull is cold. */
  assertGone(layers: BenchLayer[]): Promise<void>;
}

interface Sample {
  seconds: number;
  cpu: number;
}

function visibleEntries(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((n) => !n.startsWith('.'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

async function waitFor(what: string, timeoutMs: number, leftover: () => string[]): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const left = leftover();
    if (left.length === 0) return;
    if (Date.now() > until) throw new Error(`${what} still present ${timeoutMs} ms after RemoveImage: ${left.slice(0, 8).join(', ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function tscriRuntime(d: Daemon): Runtime {
  return {
    name: 'tscri',
    cri: d.cri,
    pid: () => d.pid,
    async assertGone() {
      await waitFor('tscri layers', 5_000, () => visibleEntries(path.join(d.root, 'layers')));
    },
  };
}

function containerdRuntime(c: Containerd): Runtime {
  return {
    name: 'containerd',
    cri: c.cri,
    pid: () => c.pid,
    async assertGone(layers) {
      // CRI RemoveImage deletes the image record; content and snapshots go with the garbage
      // collector, which may run after the call returns.
      const wanted = new Set(layers.map((l) => l.digest.replace(/^sha256:/, '')));
      await waitFor('containerd layer blobs', 30_000, () => visibleEntries(c.contentDir).filter((h) => wanted.has(h)));
      await waitFor('containerd snapshots', 30_000, () => visibleEntries(c.snapshotsDir));
    },
  };
}

/**
 * Keeps one round's leftovers from being charged to the next pull: sync so the previous pull's
 * dirty pages are not written back during this one, and a pause after the last RemoveImage
 * because ext4 without a journal (this VM's root) skips inodes freed in the last 5-10 s one
 * candidate at a time while allocating new ones.
 */
async function settle(lastRemoval: number, seconds: number): Promise<void> {
  spawnSync('sync', { stdio: 'ignore' });
  const wait = lastRemoval + seconds * 1000 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

async function pullOnce(rt: Runtime, ref: string): Promise<Sample> {
  const pid = rt.pid();
  const cpu0 = pid ? cpuSeconds(pid) : 0;
  const t0 = process.hrtime.bigint();
  await rt.cri.image.PullImage({ image: { image: ref } }, { timeoutMs: PULL_TIMEOUT_MS });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN;
  return { seconds, cpu };
}

async function removeImage(rt: Runtime, ref: string, layers: BenchLayer[]): Promise<void> {
  const status = await rt.cri.image.ImageStatus({ image: { image: ref } });
  if (!status.image) throw new Error(`${rt.name}: ImageStatus finds no ${ref} right after pulling it`);
  await rt.cri.image.RemoveImage({ image: { image: ref } });
  await rt.assertGone(layers);
}

/** tscri's "layer unpacked" debug lines, as "<ms> ms <digest prefix>". */
function layerTimes(logs: string): string[] {
  const out: string[] = [];
  for (const line of logs.split('\n')) {
    if (!line.includes('layer unpacked')) continue;
    try {
      const rec = JSON.parse(line) as { layer?: string; ms?: number };
      out.push(`${String(rec.ms).padStart(6)} ms  ${rec.layer?.slice(0, 19)}`);
    } catch {
      // Not a pino line (our own markers): skip.
    }
  }
  return out;
}

export async function runPull(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, { rounds: '3', 'log-level': 'warn', settle: '11', tmpfs: 'no' });
  if (flags.tmpfs !== 'yes' && flags.tmpfs !== 'no') throw new UsageError(`--tmpfs takes yes or no, got ${flags.tmpfs}`);
  const rounds = intFlag(flags, 'rounds', 1);
  const logLevel = flags['log-level'];
  const settleSeconds = secondsFlag(flags, 'settle');
  let lastRemoval = 0;

  let registry: Registry | undefined;
  let daemon: Daemon | undefined;
  let containerd: Containerd | undefined;
  // An object, so that checks after awaits see the signal handler's write.
  const signal = { interrupted: false };
  const teardown = async (): Promise<string[]> => {
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${String(err)}`);
      }
    };
    if (daemon) {
      const d = daemon;
      daemon = undefined;
      await step('stopping tscri', async () => {
        await d.stop('SIGTERM', { keep: true });
        const left = mountsUnder(d.base);
        if (left.length > 0) throw new Error(`mounts left under ${d.base}: ${left.join(', ')}`);
        fs.rmSync(d.base, { recursive: true, force: true });
      });
    }
    if (containerd) {
      const c = containerd;
      containerd = undefined;
      await step('stopping containerd', () => c.stop());
    }
    if (registry) {
      const r = registry;
      registry = undefined;
      await step('stopping docker-registry', () => r.stop());
    }
    return problems;
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (signal.interrupted) return;
    signal.interrupted = true;
    process.stderr.write(`\n${sig}: stopping everything\n`);
    void teardown().finally(() => {
      dropTmpfs();
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let tmpfsDir: string | undefined;
  if (flags.tmpfs === 'yes') {
    // Every temp dir below (registry storage, both runtimes' roots) is created under os.tmpdir().
    tmpfsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-tmpfs-'));
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4g,mode=0755', 'tmpfs', tmpfsDir], { encoding: 'utf8' });
    if (r.status !== 0) {
      fs.rmdirSync(tmpfsDir);
      throw new Error(`mounting a tmpfs on ${tmpfsDir}: ${r.stderr}`);
    }
    process.env.TMPDIR = tmpfsDir;
  }
  const dropTmpfs = (): string[] => {
    if (!tmpfsDir) return [];
    const dir = tmpfsDir;
    tmpfsDir = undefined;
    const r = spawnSync('umount', [dir], { encoding: 'utf8' });
    if (r.status !== 0) return [`unmounting ${dir}: ${r.stderr.trim()}`];
    fs.rmdirSync(dir);
    return [];
  };

  const load0 = os.loadavg();
  const samples: Record<Runtime['name'], Sample[]> = { tscri: [], containerd: [] };
  let failed: string | undefined;
  let layers: BenchLayer[] = [];
  let ref = '';
  try {
    console.log(`machine: ${os.cpus().length} CPUs, ${fmtMB(os.totalmem())} RAM, load average ${load0.map((l) => l.toFixed(2)).join(' ')}`);
    registry = await startRegistry();

    const tBuild = Date.now();
    layers = await buildBigImageLayers();
    const pushed = await pushImage(registry.host, 'bench/big', '1', { layers, config: { Cmd: ['/bin/sh'] } });
    ref = need(pushed.tagRef, 'a tag reference for the pushed image');
    const compressed = layers.reduce((n, l) => n + l.size, 0);
    const unpacked = layers.reduce((n, l) => n + l.tarSize, 0);
    console.log(`image ${ref} (built and pushed in ${fmtSec((Date.now() - tBuild) / 1000)})`);
    console.log(
      table(
        ['layer', 'files', 'file data', 'tar', 'gzip', 'ratio'],
        [
          ...layers.map((l, i) => [`${i} ${l.name}`, String(l.files), fmtMB(l.fileBytes), fmtMB(l.tarSize), fmtMB(l.size), (l.size / l.tarSize).toFixed(2)]),
          [
            'total',
            String(layers.reduce((n, l) => n + l.files, 0)),
            fmtMB(layers.reduce((n, l) => n + l.fileBytes, 0)),
            fmtMB(unpacked),
            fmtMB(compressed),
            (compressed / unpacked).toFixed(2),
          ],
        ],
      ),
    );

    // An empty registry config dir: 127.0.0.1 registries are plain HTTP for tscri without one.
    daemon = await startDaemon({ logLevel });
    containerd = await startContainerd({ plainHttpRegistries: [registry.host], maxConcurrentDownloads: 3 });
    const runtimes = [tscriRuntime(daemon), containerdRuntime(containerd)];
    for (const rt of runtimes) {
      const v = await rt.cri.runtime.Version({ version: 'v1' });
      console.log(`${rt.name}: ${v.runtime_name} ${v.runtime_version} (pid ${rt.pid()})`);
    }

    rounds: for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? runtimes : [...runtimes].reverse();
      for (const rt of order) {
        if (signal.interrupted) break rounds;
        await settle(lastRemoval, settleSeconds);
        const logMark = rt.name === 'tscri' ? daemon.logs().length : 0;
        let s: Sample;
        try {
          s = await pullOnce(rt, ref);
        } catch (err) {
          failed = `round ${r + 1}: ${rt.name} PullImage failed: ${String(err)}`;
          if (rt.name === 'tscri') failed += `\ntscri log tail:\n${daemon.logs().slice(-4000)}`;
          else failed += `\ncontainerd log tail:\n${containerd.logs().slice(-4000)}`;
          break rounds;
        }
        samples[rt.name].push(s);
        console.log(`round ${r + 1}: ${rt.name.padEnd(10)} ${fmtSec(s.seconds)}  (daemon CPU ${fmtSec(s.cpu)})`);
        if (rt.name === 'tscri' && logLevel === 'debug') {
          for (const l of layerTimes(daemon.logs().slice(logMark))) console.log(`    layer unpacked ${l}`);
        }
        await removeImage(rt, ref, layers);
        lastRemoval = Date.now();
      }
    }
  } catch (err) {
    failed ??= err instanceof UsageError ? err.message : `benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const load1 = os.loadavg();
  const problems = signal.interrupted ? [] : [...(await teardown()), ...dropTmpfs()];

  if (samples.tscri.length > 0 || samples.containerd.length > 0) {
    const n = Math.max(samples.tscri.length, samples.containerd.length);
    const rows: string[][] = [];
    for (let i = 0; i < n; i++) {
      const t = samples.tscri.at(i);
      const c = samples.containerd.at(i);
      rows.push([`round ${i + 1}`, t ? fmtSec(t.seconds) : '-', c ? fmtSec(c.seconds) : '-', t ? fmtSec(t.cpu) : '-', c ? fmtSec(c.cpu) : '-']);
    }
    const mt = median(samples.tscri.map((s) => s.seconds));
    const mc = median(samples.containerd.map((s) => s.seconds));
    const ct = median(samples.tscri.map((s) => s.cpu));
    const cc = median(samples.containerd.map((s) => s.cpu));
    rows.push(['median', fmtSec(mt), fmtSec(mc), fmtSec(ct), fmtSec(cc)]);
    const compressed = layers.reduce((n, l) => n + l.size, 0);
    const unpacked = layers.reduce((n, l) => n + l.tarSize, 0);
    console.log('');
    const where = flags.tmpfs === 'yes' ? 'roots on tmpfs' : `roots under ${os.tmpdir()}`;
    console.log(`PullImage ${ref}: ${layers.length} layers, ${fmtMB(compressed)} compressed, ${fmtMB(unpacked)} unpacked (cold pull each round, ${where})`);
    console.log(table(['', 'tscri', 'containerd', 'tscri CPU', 'containerd CPU'], rows));
    const ratio = mt / mc;
    console.log(`ratio tscri/containerd (medians): ${fmtRatio(ratio)}`);
    if (Number.isFinite(ratio)) {
      console.log(`target: tscri <= ${TARGET_RATIO.toFixed(2)}x containerd: ${ratio <= TARGET_RATIO ? 'MET' : 'NOT MET'}`);
    }
    console.log(loadLine(load0, load1));
  }
  for (const p of problems) console.error(`cleanup: ${p}`);
  if (failed) {
    console.error(failed);
    return 1;
  }
  return signal.interrupted ? 130 : 0;
}
