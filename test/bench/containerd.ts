import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connectCri, type CriClient } from '../helpers/cri';

export const CONTAINERD_BIN = '/usr/bin/containerd';

export interface ContainerdOptions {
  /** `127.0.0.1:<port>` registries to reach over plain HTTP. */
  plainHttpRegistries?: string[];
  maxConcurrentDownloads?: number;
  readyTimeoutMs?: number;
  /**
   * A CNI conflist for the CRI plugin. Without one the conf dir stays empty: pulls need no
   * network, and containerd then reports NetworkReady=false, which only pod starts care about.
   */
  cniConfList?: object;
  /** Where the CNI plugins are; an empty dir of its own by default. */
  cniBinDir?: string;
  /** The pause image every pod sandbox runs; containerd 1.6 cannot start a pod without one. */
  sandboxImage?: string;
  /** containerd's own log level (its [debug] section); warn by default. */
  logLevel?: string;
}

export interface Containerd {
  readonly base: string;
  readonly root: string;
  readonly socket: string;
  /** A client for the current containerd process; replaced by restart(). */
  readonly cri: CriClient;
  readonly pid: number | undefined;
  /**
   * SIGTERM (its shims and containers keep running), then a new containerd on the same dirs;
   * resolves once it answers Version. `beforeSpawn` runs once the old process is gone.
   */
  restart(beforeSpawn?: () => void): Promise<void>;
  /** The CNI conf dir (holding `cniConfList` as 10-bench.conflist when given). */
  readonly cniConfDir: string;
  /** Where containerd keeps blobs: `<root>/io.containerd.content.v1.content/blobs/sha256`. */
  readonly contentDir: string;
  /** One directory per overlayfs snapshot. */
  readonly snapshotsDir: string;
  logs(): string;
  /** Kills containerd, unmounts anything left under its dirs, removes them. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function tomlString(s: string): string {
  return JSON.stringify(s);
}

/** Writes `<dir>/<host>/hosts.toml` so containerd 1.6 talks plain HTTP to a loopback registry. */
function writeHosts(dir: string, host: string): void {
  const hostDir = path.join(dir, host);
  fs.mkdirSync(hostDir, { recursive: true });
  // 1.6 ignores a hosts.toml whose only line is `server`: the host table is what it reads.
  fs.writeFileSync(
    path.join(hostDir, 'hosts.toml'),
    [`server = ${tomlString(`http://${host}`)}`, '', `[host.${tomlString(`http://${host}`)}]`, '  capabilities = ["pull", "resolve"]', ''].join('\n'),
  );
}

function configToml(base: string, opts: ContainerdOptions): string {
  const p = (name: string) => tomlString(path.join(base, name));
  return `version = 2
root = ${p('root')}
state = ${p('state')}
oom_score = 0
# Plugins that only probe and log on this host.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = ${p('containerd.sock')}
  uid = 0
  gid = 0

# Empty addresses: nothing listens on a path another containerd on this host uses.
[ttrpc]
  address = ""

[debug]
  address = ""
  level = ${tomlString(opts.logLevel ?? 'warn')}

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = ${p('opt')}

  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_tcp_service = true
    systemd_cgroup = false
    disable_hugetlb_controller = true
    tolerate_missing_hugetlb_controller = true
    netns_mounts_under_state_dir = true
    max_concurrent_downloads = ${opts.maxConcurrentDownloads ?? 3}
    restrict_oom_score_adj = true
${opts.sandboxImage ? `    sandbox_image = ${tomlString(opts.sandboxImage)}\n` : ''}
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      disable_snapshot_annotations = true

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = ${p('state/runc')}
          SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = ${opts.cniBinDir ? tomlString(opts.cniBinDir) : p('cni-bin')}
      conf_dir = ${p('cni-conf')}
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ${p('certs.d')}
`;
}

/** Mount points at or below `dir`, deepest first, from this process's mount table. */
export function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mp = unescape(fields[4]);
    if (mp === dir || mp.startsWith(`${dir}/`)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

function unmountAll(dir: string): string[] {
  const left: string[] = [];
  for (const mp of mountsUnder(dir)) {
    if (spawnSync('umount', ['-l', mp], { stdio: 'ignore' }).status !== 0) left.push(mp);
  }
  return left;
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** A containerd of its own (root, state, socket, registry hosts) whose CRI plugin answers Version. */
export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  if (!fs.existsSync(CONTAINERD_BIN)) throw new Error(`${CONTAINERD_BIN} is missing: apt-get install containerd`);
  // Short base path: the grpc socket path must fit in sun_path.
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-ctrd-'));
  for (const d of ['root', 'state', 'opt', 'cni-bin', 'cni-conf', 'certs.d']) fs.mkdirSync(path.join(base, d), { recursive: true });
  for (const host of opts.plainHttpRegistries ?? []) writeHosts(path.join(base, 'certs.d'), host);
  // Written before start: containerd 1.6 loads the conf dir at startup (and only watches it after).
  if (opts.cniConfList) fs.writeFileSync(path.join(base, 'cni-conf', '10-bench.conflist'), JSON.stringify(opts.cniConfList, null, 2));
  const configFile = path.join(base, 'config.toml');
  fs.writeFileSync(configFile, configToml(base, opts));
  const socket = path.join(base, 'containerd.sock');
  const root = path.join(base, 'root');

  let log = '';
  let child!: ChildProcess;
  let cri!: CriClient;
  const spawnChild = (): void => {
    const proc = spawn(CONTAINERD_BIN, ['--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    live.add(proc);
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (log += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
    proc.once('exit', () => live.delete(proc));
  };

  const stopChild = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const proc = child;
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await waitExit(proc);
      clearTimeout(timer);
    }
  };

  const cleanup = async (): Promise<void> => {
    await stopChild();
    const left = unmountAll(base);
    if (left.length > 0) throw new Error(`containerd left mounts that would not unmount: ${left.join(', ')}`);
    fs.rmSync(base, { recursive: true, force: true });
  };

  const waitReady = async (): Promise<void> => {
    const client = connectCri(socket);
    const timeoutMs = opts.readyTimeoutMs ?? 30_000;
    const until = Date.now() + timeoutMs;
    let lastErr = '';
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        client.close();
        throw new Error(`containerd exited (${child.exitCode ?? child.signalCode}) before its CRI answered; log:\n${log}`);
      }
      try {
        await client.runtime.Version({ version: 'v1' }, { timeoutMs: 1_000 });
        break;
      } catch (err) {
        lastErr = String(err);
      }
      if (Date.now() > until) {
        client.close();
        throw new Error(`containerd CRI did not answer Version within ${timeoutMs} ms (${lastErr}); log:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    cri = client;
  };

  spawnChild();
  try {
    await waitReady();
  } catch (err) {
    await cleanup();
    throw err;
  }

  return {
    base,
    root,
    socket,
    get cri() {
      return cri;
    },
    get pid() {
      return child.pid;
    },
    async restart(beforeSpawn) {
      cri.close();
      await stopChild();
      beforeSpawn?.();
      spawnChild();
      await waitReady();
    },
    cniConfDir: path.join(base, 'cni-conf'),
    contentDir: path.join(root, 'io.containerd.content.v1.content', 'blobs', 'sha256'),
    snapshotsDir: path.join(root, 'io.containerd.snapshotter.v1.overlayfs', 'snapshots'),
    logs: () => log,
    async stop() {
      cri.close();
      await cleanup();
    },
  };
}
