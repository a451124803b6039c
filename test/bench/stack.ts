// What the lifecycle and exec benchmarks both stand on: a loopback registry with a busybox image
// and containerd's pause image, tscri and containerd each on its own bridge and subnet, and a
// teardown that runs on success, failure and Ctrl-C alike.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { busyboxLayer, pushImage } from '../helpers/images';
import { startRegistry, type Registry } from '../helpers/registry';
import { assertSubnetFree } from '../helpers/subnets';
import { startContainerd, type Containerd } from './containerd';
import { ipLinkExists, teardownBench } from './teardown';
import { need } from './util';

export type Name = 'tscri' | 'containerd';

const SIGNAL_GRACE_MS = 15_000;

export interface BenchNet {
  network: string;
  bridge: string;
  subnet: string;
  gateway: string;
  /** The subnet's first three octets and a dot, to find its iptables lines. */
  prefix: string;
}

// SIGTERM ends both at once: a shell as PID 1 of its namespace ignores signals it has no trap for.
export const PAUSE_CMD = ['/bin/sh', '-c', "trap 'kill $!; exit 0' TERM; while :; do sleep 3600 & wait; done"];

/**
 * A bridge with host-local IPAM and a route to its own subnet only, no masquerading: pods reach
 * the host and each other, nothing else. No loopback entry: both runtimes bring up `lo`
 * themselves when the list has none, so they do the same CNI work.
 */
export function cniConfList(n: BenchNet, dataDir: string): object {
  return {
    cniVersion: '1.0.0',
    name: n.network,
    plugins: [
      {
        type: 'bridge',
        bridge: n.bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: n.subnet, gateway: n.gateway }]], routes: [{ dst: n.subnet }] },
      },
    ],
  };
}

export interface BenchStackOptions {
  /** Short name of the benchmark ('lc', 'ex'): temp dir, cgroup roots and image tag. */
  tag: string;
  nets: Record<Name, BenchNet>;
  /** More TOML lines for tscri's config, after the network and cgroup ones. */
  tscriConfig?: string[];
  /** tscri's --log-level; the daemon helper's default otherwise. */
  logLevel?: string;
  /** More node options for tscri (--cpu-prof…). */
  nodeArgs?: string[];
}

/** Removes one runtime's pods, while its daemon can still stop them. */
export type PodCleanup = { what: string; run: (problems: string[]) => Promise<unknown> };

export class BenchStack {
  readonly work: string;
  readonly cgroupRoots: Record<Name, string>;
  registry?: Registry;
  daemon?: Daemon;
  containerd?: Containerd;
  /** The busybox image the containers run. */
  image = '';
  /** containerd's sandbox_image, built from the same layer. */
  pause = '';
  private interrupted = false;
  private grace?: NodeJS.Timeout;
  private signalTeardown?: Promise<void>;
  private readonly cleanups: PodCleanup[] = [];
  // The benchmark gets a moment to finish the pod it is making (its loops stop at the next
  // one), so that the teardown's pod cleanup does not race its last create; a second Ctrl-C,
  // or a benchmark still busy after the grace, tears down at once.
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    if (this.interrupted) {
      void this.finishInterrupted();
      return;
    }
    this.interrupted = true;
    process.stderr.write(`\n${sig}: stopping after the current step (again to stop now)\n`);
    this.grace = setTimeout(() => void this.finishInterrupted(), SIGNAL_GRACE_MS);
  };

  constructor(private readonly opts: BenchStackOptions) {
    for (const n of Object.values(opts.nets)) {
      if (ipLinkExists(n.bridge)) throw new Error(`bridge ${n.bridge} already exists: another benchmark running, or a leftover (ip link del ${n.bridge})`);
      assertSubnetFree(n.subnet, n.bridge, `benchmark network ${n.network}`);
    }
    this.work = fs.mkdtempSync(path.join(os.tmpdir(), `bench-${opts.tag}-`));
    this.cgroupRoots = { tscri: `tscri-bench-${opts.tag}-${process.pid}`, containerd: `ctrd-bench-${opts.tag}-${process.pid}` };
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** A Ctrl-C arrived: the benchmark stops at its next step and tears down. */
  get wasInterrupted(): boolean {
    return this.interrupted;
  }

  /**
   * For a benchmark that stopped after a Ctrl-C: tears down, then the process exits with 130.
   * Returning at once would let main exit before the bridges and cgroups are gone.
   */
  async interruptedExit(): Promise<number> {
    await this.finishInterrupted();
    return 130;
  }

  private finishInterrupted(): Promise<void> {
    clearTimeout(this.grace);
    this.signalTeardown ??= this.teardown().then((problems) => {
      for (const p of problems) process.stderr.write(`cleanup: ${p}\n`);
      process.exit(130);
    });
    return this.signalTeardown;
  }

  logDir(name: Name): string {
    return path.join(this.work, name, 'logs');
  }

  /** Run first at teardown, in the order added. */
  addPodCleanup(cleanup: PodCleanup): void {
    this.cleanups.push(cleanup);
  }

  /** Registry and images, then tscri and containerd on their own networks. */
  async start(): Promise<void> {
    this.registry = await startRegistry();
    const base = await busyboxLayer();
    const env = ['PATH=/bin'];
    this.image = need(
      (await pushImage(this.registry.host, 'bench/busybox', this.opts.tag, { layers: [base], config: { Env: env, Cmd: ['/bin/sh'] } })).tagRef,
      'a tag reference for the bench image',
    );
    this.pause = need(
      (await pushImage(this.registry.host, 'pause', 'bench', { layers: [base], config: { Env: env, Entrypoint: PAUSE_CMD } })).tagRef,
      'a tag reference for the pause image',
    );
    for (const name of ['tscri', 'containerd'] as const) {
      for (const d of ['net.d', 'ipam', 'logs']) fs.mkdirSync(path.join(this.work, name, d), { recursive: true });
    }
    const confDir = path.join(this.work, 'tscri', 'net.d');
    fs.writeFileSync(
      path.join(confDir, '10-bench.conflist'),
      JSON.stringify(cniConfList(this.opts.nets.tscri, path.join(this.work, 'tscri', 'ipam')), null, 2),
    );
    this.daemon = await startDaemon({
      logLevel: this.opts.logLevel,
      nodeArgs: this.opts.nodeArgs,
      config: [
        `cni_conf_dir = ${JSON.stringify(confDir)}`,
        'cni_bin_dirs = ["/usr/lib/cni"]',
        'restrict_oom_score_adj = true',
        'cgroup_driver = "cgroupfs"',
        ...(this.opts.tscriConfig ?? []),
        '',
      ].join('\n'),
    });
    this.containerd = await startContainerd({
      plainHttpRegistries: [this.registry.host],
      cniConfList: cniConfList(this.opts.nets.containerd, path.join(this.work, 'containerd', 'ipam')),
      cniBinDir: '/usr/lib/cni',
      sandboxImage: this.pause,
    });
  }

  /** The benchmark failed: what it says, with the tail of both daemons' logs. */
  failure(err: unknown): string {
    let text = `benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
    if (this.daemon) text += `\ntscri log tail:\n${this.daemon.logs().split('\n').slice(-30).join('\n')}`;
    if (this.containerd) text += `\ncontainerd log tail:\n${this.containerd.logs().split('\n').slice(-30).join('\n')}`;
    return text;
  }

  /** No more Ctrl-C handling: the caller tears down itself from here. */
  stopWatchingSignals(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }

  /**
   * Pods first (monitors outlive their daemon), then daemons, registry, bridges, cgroups and the
   * work dir. Every step runs even when one fails; the failures are returned.
   */
  async teardown(): Promise<string[]> {
    const problems: string[] = [];
    for (const c of this.cleanups) {
      try {
        await c.run(problems);
      } catch (err) {
        problems.push(`${c.what}: ${String(err)}`);
      }
    }
    const stack = {
      daemon: this.daemon,
      containerd: this.containerd,
      registry: this.registry,
      bridges: Object.values(this.opts.nets).map((n) => n.bridge),
      cgroupRoots: Object.values(this.cgroupRoots),
      work: this.work,
    };
    this.daemon = undefined;
    this.containerd = undefined;
    this.registry = undefined;
    await teardownBench(stack, problems);
    return problems;
  }
}
