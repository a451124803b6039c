import { readFileSync, existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseToml } from 'smol-toml';
import { applyFlags, applyToml, defaultOf, OPTIONS } from './config_options';
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
  /**
   * How long one reading of a cgroup (and of a pod's network counters) serves every stats and
   * metrics caller: below the kubelet's 10 s housekeeping, so its numbers are fresh.
   */
  statsCachePeriodMs: number;
}

export const DEFAULT_CONFIG_FILE = '/etc/tscri/config.toml';

export { parseByteRate, parseDuration } from './config_options';

export function defaultConfig(): Config {
  const cfg: Partial<Config> = {};
  for (const o of OPTIONS) (cfg as Record<string, unknown>)[o.field] = defaultOf(o);
  return cfg as Config;
}

/** The command line: an optional command, the flags of every option, and the CLI's own. */
export interface CommandLine {
  /** undefined: serve the CRI. */
  command?: string;
  help: boolean;
  version: boolean;
  /** --config, when given. */
  config?: string;
  /** Option flags by flag name, as parseArgs gave them. */
  values: Record<string, unknown>;
}

export const COMMANDS = ['config', 'check'] as const;

export function parseCommandLine(argv: string[]): CommandLine {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
    config: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean', short: 'v' },
  };
  for (const o of OPTIONS) options[o.flag] = { type: 'string' };
  const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  if (positionals.length > 1) throw new InvalidArgumentError(`one command at most, got ${positionals.join(' ')}`);
  const command = positionals.at(0);
  if (command !== undefined && !(COMMANDS as readonly string[]).includes(command)) {
    throw new InvalidArgumentError(`unknown command ${JSON.stringify(command)} (commands: ${COMMANDS.join(', ')})`);
  }
  return {
    command,
    help: values.help === true,
    version: values.version === true,
    config: typeof values.config === 'string' ? values.config : undefined,
    values,
  };
}

function readToml(file: string): Record<string, unknown> {
  try {
    return parseToml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InvalidArgumentError(`config file ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Defaults, then the config file (explicit, or the default path when present), then flags. */
export function configFromCommandLine(cl: CommandLine): Config {
  const cfg = defaultConfig();
  const file = cl.config ?? (existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (file !== undefined) applyToml(cfg, readToml(file), file);
  applyFlags(cfg, cl.values);
  if (!cfg.runtimes[cfg.defaultRuntime]) {
    throw new InvalidArgumentError(`default_runtime ${JSON.stringify(cfg.defaultRuntime)} is not among the configured runtimes`);
  }
  if (!cfg.listen.startsWith('unix://')) {
    throw new InvalidArgumentError(`--listen ${cfg.listen}: only unix:// endpoints are served`);
  }
  return cfg;
}

/** The daemon's configuration from its arguments (no command). */
export function loadConfig(argv: string[]): Config {
  return configFromCommandLine(parseCommandLine(argv));
}

export function socketPath(cfg: Config): string {
  return cfg.listen.slice('unix://'.length);
}
