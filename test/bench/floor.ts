import { spawn } from 'node:child_process';
import * as os from 'node:os';
import path from 'node:path';
import { connectCri, type CriClient } from '../helpers/cri';
import { msSince } from './fleet';
import { BenchStack, type BenchNet, type Name } from './stack';
import { exitStatus, fmtMB, fmtRatio, intFlag, loadLine, need, parseFlags, percentile, table } from './util';

export const FLOOR_USAGE = `floor [--samples S] [--warmup W]
    What a CRI call costs before any runtime work: Version on empty daemons, tscri and
    containerd 1.6 against a bare @grpc/grpc-js server in a process of its own whose only
    handler answers Version at once. W untimed calls each (default 2000), then S samples
    each (default 2000), first alternating the three call by call (as the scale benchmark
    does), then in a block per server. p50 and p95 of each, and each against containerd.`;

export const NETS: Record<Name, BenchNet> = {
  tscri: { network: 'tscri-bench-fl', bridge: 'tscri-bf0', subnet: '10.82.0.0/24', gateway: '10.82.0.1', prefix: '10.82.0.' },
  containerd: { network: 'ctrd-bench-fl', bridge: 'ctrd-bf0', subnet: '10.83.0.0/24', gateway: '10.83.0.1', prefix: '10.83.0.' },
};

type Target = 'tscri' | 'containerd' | 'bare grpc-js';

async function timedVersion(cri: CriClient): Promise<number> {
  const t0 = process.hrtime.bigint();
  await cri.runtime.Version({ version: 'v1' });
  return msSince(t0);
}

export async function runFloor(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, { samples: '2000', warmup: '2000' });
  const nSamples = intFlag(flags, 'samples', 1);
  const nWarmup = intFlag(flags, 'warmup', 0);
  const stack = new BenchStack({ tag: 'fl', nets: NETS });
  const load0 = os.loadavg();
  const rows: string[][] = [];
  let failed: string | undefined;
  const socket = path.join(stack.work, 'bare.sock');
  const bare = spawn(process.execPath, [path.join(__dirname, 'bare_grpc_server.js'), socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  let bareCri: CriClient | undefined;
  try {
    console.log(`machine: ${os.cpus().length} CPUs, ${fmtMB(os.totalmem())} RAM, load average ${load0.map((l) => l.toFixed(2)).join(' ')}`);
    await new Promise<void>((resolve, reject) => {
      bare.stdout.once('data', () => resolve());
      bare.once('exit', (code) => reject(new Error(`the bare grpc-js server exited with ${String(code)}`)));
    });
    await stack.start();
    bareCri = connectCri(socket);
    const targets: [Target, CriClient][] = [
      ['tscri', need(stack.daemon, 'a started tscri daemon').cri],
      ['containerd', need(stack.containerd, 'a started containerd').cri],
      ['bare grpc-js', bareCri],
    ];
    for (const [, cri] of targets) for (let i = 0; i < nWarmup; i++) await cri.runtime.Version({ version: 'v1' });
    for (const mode of ['alternating', 'in blocks'] as const) {
      const lat = new Map<Target, number[]>(targets.map(([name]) => [name, []]));
      const push = async (name: Target, cri: CriClient) => need(lat.get(name), name).push(await timedVersion(cri));
      if (mode === 'alternating') {
        for (let i = 0; i < nSamples; i++) for (const [name, cri] of targets) await push(name, cri);
      } else {
        for (const [name, cri] of targets) for (let i = 0; i < nSamples; i++) await push(name, cri);
      }
      const ref = percentile(need(lat.get('containerd'), 'containerd samples'), 50);
      for (const [name, xs] of lat) {
        const p50 = percentile(xs, 50);
        rows.push([mode, name, `${p50.toFixed(3)} ms`, `${percentile(xs, 95).toFixed(3)} ms`, fmtRatio(p50 / ref)]);
      }
    }
  } catch (err) {
    failed = stack.failure(err);
  } finally {
    bareCri?.close();
    bare.kill('SIGTERM');
  }
  const load1 = os.loadavg();
  const problems = await stack.teardown();
  if (rows.length > 0) {
    console.log('');
    console.log(`Version on empty daemons, ${nSamples} samples each after ${nWarmup} untimed ones, one client in this process`);
    console.log(table(['order', 'server', 'p50', 'p95', 'p50 / containerd'], rows));
  }
  console.log('');
  console.log(loadLine(load0, load1));
  return exitStatus(problems, failed);
}
