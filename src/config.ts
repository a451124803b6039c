import { readFileSync, existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseToml } from 'smol-toml';
import { InvalidArgumentError } from './errors';

/** Everything the daemon is told; each field has a default that works with no file at all. */
export interface Config {
  /** CRI endpoint, `unix:///path`. */
  listen: string;
  /** Persistent state: layers, blobs, metadata. */
  root: string;
  /** Runtime state: sockets, bundles, pinned namespaces. */
  state: string;
  /** containerd-style `<host>/hosts.toml` mirror and TLS configuration. */
  registryConfigDir: string;
  /** Registries reached over plain HTTP (localhost and 127.0.0.1 always are). */
  insecureRegistries: string[];
  /** Images never removed by GC (references as the kubelet would name them). */
  pinnedImages: string[];
  /** Layers of one image fetched at once. */
  maxConcurrentDownloads: number;
  /** A pull that moves no byte for this long is cancelled; a slow pull that moves is not. */
  imagePullProgressTimeoutMs: number;
  /**
   * Bytes per second a pull must average over each progress-timeout window, or it is cancelled:
   * a registry that trickles bytes must not hold the kubelet's serialized pulls forever. 0: off.
   */
  imagePullMinThroughput: number;
  /** Prometheus endpoint, `host:port`; empty disables it. Loopback by default. */
  metricsListen: string;
  /** Exec/attach/port-forward HTTP server, `host:port`; port 0 picks one. Loopback by default. */
  streamingAddress: string;
  logLevel: string;
  cgroupDriver: 'cgroupfs' | 'systemd';
  /** CNI network configuration directory and plugin directories. */
  cniConfDir: string;
  cniBinDirs: string[];
  /** The built-in bridge network used when cniConfDir holds no configuration. */
  cniDefaultSubnet: string;
  cniDefaultBridge: string;
  /** Runtime handlers (RuntimeClass handler names) → OCI runtime binaries. */
  runtimes: Record<string, string>;
  defaultRuntime: string;
  conmon: string;
  /**
   * Clamp containers' oom_score_adj to the daemon's own, as containerd's
   * restrict_oom_score_adj: needed where root lacks CAP_SYS_RESOURCE. 'auto' turns it on
   * exactly then.
   */
  restrictOomScoreAdj: boolean | 'auto';
}

export const DEFAULT_CONFIG_FILE = '/etc/tscri/config.toml';

export function defaultConfig(): Config {
  return {
    listen: 'unix:///run/tscri/tscri.sock',
    root: '/var/lib/tscri',
    state: '/run/tscri',
    registryConfigDir: '/etc/tscri/certs.d',
    insecureRegistries: [],
    pinnedImages: [],
    maxConcurrentDownloads: 3,
    imagePullProgressTimeoutMs: 60_000,
    imagePullMinThroughput: 4096,
    metricsListen: '127.0.0.1:9099',
    streamingAddress: '127.0.0.1:0',
    logLevel: 'info',
    cgroupDriver: 'cgroupfs',
    cniConfDir: '/etc/cni/net.d',
    cniBinDirs: ['/opt/cni/bin', '/usr/lib/cni'],
    cniDefaultSubnet: '10.85.0.0/16',
    cniDefaultBridge: 'tscri0',
    runtimes: { runc: 'runc', crun: 'crun' },
    defaultRuntime: 'runc',
    conmon: 'conmon',
    restrictOomScoreAdj: 'auto',
  };
}

/** Parses "30s", "5m", "1h", "250ms" or a bare number of seconds. */
export function parseDuration(value: string | number, what: string): number {
  if (typeof value === 'number') return value * 1000;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`${what}: invalid duration ${JSON.stringify(value)}`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!;
}

const BYTE_UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };

/** Parses a byte rate: "4KiB/s", "1MB/s", "512B/s", or a bare number of bytes per second. */
export function parseByteRate(value: string | number, what: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  const m = typeof value === 'string' ? /^(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?(?:\/s)?$/i.exec(value.trim()) : null;
  if (!m) throw new InvalidArgumentError(`${what}: invalid byte rate ${JSON.stringify(value)} (want e.g. "4KiB/s")`);
  return Number(m[1]) * BYTE_UNITS[(m[2] ?? 'b').toLowerCase()]!;
}

type Toml = Record<string, unknown>;

function applyFile(cfg: Config, file: string): void {
  let doc: Toml;
  try {
    doc = parseToml(readFileSync(file, 'utf8')) as Toml;
  } catch (err) {
    throw new InvalidArgumentError(`config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const str = (k: string): string | undefined => {
    const v = doc[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new InvalidArgumentError(`config file ${file}: ${k} must be a string`);
    return v;
  };
  const strList = (k: string): string[] | undefined => {
    const v = doc[k];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      throw new InvalidArgumentError(`config file ${file}: ${k} must be a list of strings`);
    }
    return v as string[];
  };
  cfg.listen = str('listen') ?? cfg.listen;
  cfg.root = str('root') ?? cfg.root;
  cfg.state = str('state') ?? cfg.state;
  cfg.registryConfigDir = str('registry_config_dir') ?? cfg.registryConfigDir;
  cfg.insecureRegistries = strList('insecure_registries') ?? cfg.insecureRegistries;
  cfg.pinnedImages = strList('pinned_images') ?? cfg.pinnedImages;
  cfg.metricsListen = str('metrics_listen') ?? cfg.metricsListen;
  cfg.streamingAddress = str('streaming_address') ?? cfg.streamingAddress;
  cfg.logLevel = str('log_level') ?? cfg.logLevel;
  const driver = str('cgroup_driver');
  if (driver !== undefined) {
    if (driver !== 'cgroupfs' && driver !== 'systemd') {
      throw new InvalidArgumentError(`config file ${file}: cgroup_driver must be "cgroupfs" or "systemd"`);
    }
    cfg.cgroupDriver = driver;
  }
  cfg.cniConfDir = str('cni_conf_dir') ?? cfg.cniConfDir;
  cfg.cniBinDirs = strList('cni_bin_dirs') ?? cfg.cniBinDirs;
  cfg.cniDefaultSubnet = str('cni_default_subnet') ?? cfg.cniDefaultSubnet;
  cfg.cniDefaultBridge = str('cni_default_bridge') ?? cfg.cniDefaultBridge;
  cfg.defaultRuntime = str('default_runtime') ?? cfg.defaultRuntime;
  cfg.conmon = str('conmon') ?? cfg.conmon;
  const runtimes = doc['runtimes'];
  if (runtimes !== undefined) {
    if (typeof runtimes !== 'object' || runtimes === null || Object.values(runtimes).some((v) => typeof v !== 'string')) {
      throw new InvalidArgumentError(`config file ${file}: [runtimes] must map handler names to binaries`);
    }
    cfg.runtimes = runtimes as Record<string, string>;
  }
  const restrict = doc['restrict_oom_score_adj'];
  if (restrict !== undefined) {
    if (restrict !== 'auto' && typeof restrict !== 'boolean') {
      throw new InvalidArgumentError(`config file ${file}: restrict_oom_score_adj must be true, false or "auto"`);
    }
    cfg.restrictOomScoreAdj = restrict;
  }
  const mcd = doc['max_concurrent_downloads'];
  if (mcd !== undefined) {
    if (typeof mcd !== 'number' || !Number.isInteger(mcd) || mcd < 1) {
      throw new InvalidArgumentError(`config file ${file}: max_concurrent_downloads must be a positive integer`);
    }
    cfg.maxConcurrentDownloads = mcd;
  }
  const timeout = doc['image_pull_progress_timeout'];
  if (timeout !== undefined) {
    cfg.imagePullProgressTimeoutMs = parseDuration(timeout as string | number, 'image_pull_progress_timeout');
  }
  const floor = doc['image_pull_min_throughput'];
  if (floor !== undefined) cfg.imagePullMinThroughput = parseByteRate(floor as string | number, 'image_pull_min_throughput');
}

/** Defaults, then the config file (explicit, or the default path when present), then flags. */
export function loadConfig(argv: string[]): Config {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string' },
      root: { type: 'string' },
      state: { type: 'string' },
      config: { type: 'string' },
      'registry-config-dir': { type: 'string' },
      'metrics-listen': { type: 'string' },
      'log-level': { type: 'string' },
      'cni-conf-dir': { type: 'string' },
    },
    strict: true,
  });
  const cfg = defaultConfig();
  const file = values.config ?? (existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (file !== undefined) applyFile(cfg, file);
  if (values.listen !== undefined) cfg.listen = values.listen;
  if (values.root !== undefined) cfg.root = values.root;
  if (values.state !== undefined) cfg.state = values.state;
  if (values['registry-config-dir'] !== undefined) cfg.registryConfigDir = values['registry-config-dir'];
  if (values['metrics-listen'] !== undefined) cfg.metricsListen = values['metrics-listen'];
  if (values['log-level'] !== undefined) cfg.logLevel = values['log-level'];
  if (values['cni-conf-dir'] !== undefined) cfg.cniConfDir = values['cni-conf-dir'];
  if (!cfg.runtimes[cfg.defaultRuntime]) {
    throw new InvalidArgumentError(`default_runtime ${JSON.stringify(cfg.defaultRuntime)} is not among the configured runtimes`);
  }
  if (!cfg.listen.startsWith('unix://')) {
    throw new InvalidArgumentError(`--listen ${cfg.listen}: only unix:// endpoints are served`);
  }
  return cfg;
}

export function socketPath(cfg: Config): string {
  return cfg.listen.slice('unix://'.length);
}
