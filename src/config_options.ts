// The one table of configuration keys. The TOML file, the command-line flags, `tscri --help`
// and `tscri config` are all read from it, so a key cannot exist in one and be missing from
// another.

import { InvalidArgumentError } from './errors';
import type { Config } from './config';

/** How one option's value is read from TOML and from a flag, and written back. */
interface Codec<T> {
  /** The value's shape in `--help`: DIR, LIST, DURATION… */
  metavar: string;
  fromToml(value: unknown, key: string): T;
  fromFlag(text: string, flag: string): T;
  /** TOML value text (the right-hand side of `key = …`); not used for table options. */
  toToml(value: T): string;
  /** As one would type it after the flag, for `--help`. */
  toFlag(value: T): string;
}

export interface OptionSpec<K extends keyof Config = keyof Config> {
  field: K;
  /** Key in the TOML file. */
  key: string;
  /** Flag name without the dashes: the key with '-' for '_'. */
  flag: string;
  codec: Codec<Config[K]>;
  default: Config[K];
  help: string;
  /** Written as a TOML table (`[key]`) after the plain keys. */
  table?: boolean;
}

export type AnyOption = { [K in keyof Config]: OptionSpec<K> }[keyof Config];

/** A value that does not fit its option; the caller adds where it came from. */
class BadValue extends InvalidArgumentError {}

const tomlString = (s: string): string => JSON.stringify(s);

const string: Codec<string> = {
  metavar: 'STRING',
  fromToml(v, key) {
    if (typeof v !== 'string') throw new BadValue(`${key} must be a string`);
    return v;
  },
  fromFlag: (s) => s,
  toToml: tomlString,
  toFlag: (v) => v,
};

const withMetavar = <T>(codec: Codec<T>, metavar: string): Codec<T> => ({ ...codec, metavar });

/** A list: a TOML array of strings, a comma-separated flag (`--x ''` is the empty list). */
const list: Codec<string[]> = {
  metavar: 'A,B,…',
  fromToml(v, key) {
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new BadValue(`${key} must be a list of strings`);
    return [...(v as string[])];
  },
  fromFlag: (s) =>
    s
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== ''),
  toToml: (v) => `[${v.map(tomlString).join(', ')}]`,
  toFlag: (v) => v.join(','),
};

const positiveInt: Codec<number> = {
  metavar: 'N',
  fromToml(v, key) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new BadValue(`${key} must be a positive integer`);
    return v;
  },
  fromFlag(s, flag) {
    return positiveInt.fromToml(/^\d+$/.test(s) ? Number(s) : NaN, flag);
  },
  toToml: String,
  toFlag: String,
};

const DURATION_UNITS: [string, number][] = [
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1000],
  ['ms', 1],
];

/** Parses "30s", "5m", "1h", "250ms" or a bare number of seconds into milliseconds. */
export function parseDuration(value: string | number, what: string): number {
  if (typeof value === 'number') return value * 1000;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`${what}: invalid duration ${JSON.stringify(value)}`);
  const unit = m.at(2);
  const size = DURATION_UNITS.find(([u]) => u === (unit ?? 's'))?.[1];
  if (size === undefined) throw new Error(`parseDuration: no size for unit ${unit ?? 's'}`); // the pattern admits only known units
  return Number(m[1]) * size;
}

/** The largest unit that divides `ms` evenly, so that parseDuration gives `ms` back. */
export function formatDuration(ms: number): string {
  if (!Number.isInteger(ms)) return `${ms}ms`;
  for (const [unit, size] of DURATION_UNITS) if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`;
  return '0s';
}

/** Milliseconds in the Config; "1m", "30s", "250ms" or a number of seconds outside. */
const duration: Codec<number> = {
  metavar: 'DURATION',
  fromToml(v, key) {
    if (typeof v !== 'string' && typeof v !== 'number') throw new BadValue(`${key} must be a duration such as "30s" or "1m"`);
    return parseDuration(v, key);
  },
  fromFlag: (s, flag) => parseDuration(s, flag),
  toToml: (v) => tomlString(formatDuration(v)),
  toFlag: formatDuration,
};

const BYTE_UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };

/** Parses a byte rate: "4KiB/s", "1MB/s", "512B/s", or a bare number of bytes per second. */
export function parseByteRate(value: string | number, what: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  const m = typeof value === 'string' ? /^(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?(?:\/s)?$/i.exec(value.trim()) : null;
  if (!m) throw new InvalidArgumentError(`${what}: invalid byte rate ${JSON.stringify(value)} (want e.g. "4KiB/s")`);
  const unit = m.at(2);
  return Number(m[1]) * BYTE_UNITS[(unit ?? 'b').toLowerCase()];
}

/** The largest binary unit that divides `n` evenly, so that parseByteRate gives `n` back. */
function formatByteRate(n: number): string {
  for (const [unit, size] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (n > 0 && n % size === 0) return `${n / size}${unit}/s`;
  }
  return `${n}B/s`;
}

const byteRate: Codec<number> = {
  metavar: 'RATE',
  fromToml(v, key) {
    if (typeof v !== 'string' && typeof v !== 'number') throw new BadValue(`${key} must be a byte rate such as "4KiB/s"`);
    return parseByteRate(v, key);
  },
  fromFlag: (s, flag) => parseByteRate(s, flag),
  toToml: (v) => tomlString(formatByteRate(v)),
  toFlag: formatByteRate,
};

function oneOf<T extends string>(...choices: T[]): Codec<T> {
  const check = (v: unknown, where: string): T => {
    if (typeof v !== 'string' || !(choices as string[]).includes(v)) {
      throw new BadValue(`${where} must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`);
    }
    return v as T;
  };
  return { metavar: choices.join('|'), fromToml: check, fromFlag: check, toToml: tomlString, toFlag: (v) => v };
}

const autoBool: Codec<boolean | 'auto'> = {
  metavar: 'auto|true|false',
  fromToml(v, key) {
    if (v !== 'auto' && typeof v !== 'boolean') throw new BadValue(`${key} must be true, false or "auto"`);
    return v;
  },
  fromFlag(s, flag) {
    if (s === 'auto') return 'auto';
    if (s === 'true' || s === 'false') return s === 'true';
    throw new BadValue(`${flag} must be true, false or auto`);
  },
  toToml: (v) => (v === 'auto' ? tomlString(v) : String(v)),
  toFlag: String,
};

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

/** A TOML table of name = "string"; `name=value,name=value` as a flag. */
const stringTable: Codec<Record<string, string>> = {
  metavar: 'NAME=BIN,…',
  fromToml(v, key) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BadValue(`[${key}] must be a table of handler = "binary"`);
    const out: Record<string, string> = {};
    for (const [name, bin] of Object.entries(v)) {
      if (typeof bin !== 'string') throw new BadValue(`${key}.${name} must be a string (the OCI runtime binary), not ${describe(bin)}`);
      out[name] = bin;
    }
    return out;
  },
  fromFlag(s, flag) {
    const out: Record<string, string> = {};
    for (const pair of s.split(',').filter((p) => p.trim() !== '')) {
      const eq = pair.indexOf('=');
      if (eq <= 0 || eq === pair.length - 1) throw new BadValue(`${flag}: ${JSON.stringify(pair)} is not NAME=BINARY`);
      out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
    }
    return out;
  },
  toToml: (v) =>
    Object.entries(v)
      .map(([name, bin]) => `${BARE_KEY.test(name) ? name : tomlString(name)} = ${tomlString(bin)}`)
      .join('\n'),
  toFlag: (v) =>
    Object.entries(v)
      .map(([name, bin]) => `${name}=${bin}`)
      .join(','),
};

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v !== null && typeof v === 'object') return 'a table';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function opt<K extends keyof Config>(field: K, key: string, codec: Codec<Config[K]>, def: Config[K], help: string, table = false): OptionSpec<K> {
  return { field, key, flag: key.replace(/_/g, '-'), codec, default: def, help, table };
}

/** Every key of the configuration, in the order `tscri config` writes them. */
export const OPTIONS: readonly AnyOption[] = [
  opt('listen', 'listen', withMetavar(string, 'unix:///PATH'), 'unix:///run/tscri/tscri.sock', 'CRI endpoint; the socket is made mode 0660.'),
  opt('root', 'root', withMetavar(string, 'DIR'), '/var/lib/tscri', 'Persistent state: layers, blobs, image, pod and container records.'),
  opt('state', 'state', withMetavar(string, 'DIR'), '/run/tscri', 'Runtime state: bundles, sockets, pinned namespaces, exit files.'),
  opt(
    'registryConfigDir',
    'registry_config_dir',
    withMetavar(string, 'DIR'),
    '/etc/tscri/certs.d',
    "Registry mirrors and TLS, containerd's <host>/hosts.toml format.",
  ),
  opt('insecureRegistries', 'insecure_registries', list, [], 'Registries reached over plain HTTP (localhost and 127.0.0.1 always are).'),
  opt('pinnedImages', 'pinned_images', list, [], 'Images never removed by image garbage collection.'),
  opt('maxConcurrentDownloads', 'max_concurrent_downloads', positiveInt, 3, 'Layers of one image downloaded at once.'),
  opt('imagePullProgressTimeoutMs', 'image_pull_progress_timeout', duration, 60_000, 'A pull that moves no byte for this long is cancelled.'),
  opt(
    'imagePullMinThroughput',
    'image_pull_min_throughput',
    byteRate,
    4096,
    'A pull whose layers move slower than this over a progress window is cancelled; 0 turns it off.',
  ),
  opt('metricsListen', 'metrics_listen', withMetavar(string, 'HOST:PORT'), '127.0.0.1:9099', 'Prometheus /metrics endpoint; empty turns it off.'),
  opt('streamingAddress', 'streaming_address', withMetavar(string, 'HOST:PORT'), '127.0.0.1:0', 'Exec/attach/port-forward server; port 0 picks one at start.'),
  opt('logLevel', 'log_level', oneOf('trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'), 'info', 'Log level (pino); debug logs one line per RPC.'),
  opt('cgroupDriver', 'cgroup_driver', oneOf('cgroupfs', 'systemd'), 'cgroupfs', "Must match the kubelet's cgroupDriver; systemd needs systemd as init."),
  opt('cniConfDir', 'cni_conf_dir', withMetavar(string, 'DIR'), '/etc/cni/net.d', 'CNI network configuration: the first *.conflist/*.conf is the pod network.'),
  opt('cniBinDirs', 'cni_bin_dirs', list, ['/opt/cni/bin', '/usr/lib/cni'], 'Directories searched for CNI plugins.'),
  opt(
    'cniDefaultSubnet',
    'cni_default_subnet',
    withMetavar(string, 'CIDR'),
    '10.85.0.0/16',
    'Subnet of the built-in network used when cni_conf_dir is empty (no default route, no masquerading).',
  ),
  opt('cniDefaultBridge', 'cni_default_bridge', withMetavar(string, 'NAME'), 'tscri0', 'Bridge of the built-in network.'),
  opt('defaultRuntime', 'default_runtime', withMetavar(string, 'NAME'), 'runc', 'Runtime handler for pods that name none; must be a key of [runtimes].'),
  opt('conmon', 'conmon', withMetavar(string, 'BIN'), 'conmon', 'The container monitor: a path, or a name searched in PATH and the sbin dirs.'),
  opt(
    'restrictOomScoreAdj',
    'restrict_oom_score_adj',
    autoBool,
    'auto',
    "Clamp containers' oom_score_adj to the daemon's own; auto: when root lacks CAP_SYS_RESOURCE.",
  ),
  opt('statsCachePeriodMs', 'stats_cache_period', duration, 1_000, 'One reading of each cgroup serves every stats and metrics call for this long.'),
  opt(
    'runtimes',
    'runtimes',
    stringTable,
    { runc: 'runc', crun: 'crun' },
    'Runtime handlers (RuntimeClass handler names) and their OCI runtime binaries.',
    true,
  ),
];

/** Reads a parsed TOML document into `cfg`; an unknown key is an error naming it and the file. */
export function applyToml(cfg: Config, doc: Record<string, unknown>, file: string): void {
  const byKey = new Map(OPTIONS.map((o) => [o.key, o]));
  for (const [key, value] of Object.entries(doc)) {
    const o = byKey.get(key);
    if (!o) throw new InvalidArgumentError(`config file ${file}: unknown key ${JSON.stringify(key)}`);
    try {
      set(cfg, o, o.codec.fromToml(value, key));
    } catch (err) {
      throw new InvalidArgumentError(`config file ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Applies `--flag value` pairs (already parsed by node:util parseArgs) to `cfg`. */
export function applyFlags(cfg: Config, values: Record<string, unknown>): void {
  for (const o of OPTIONS) {
    const v = values[o.flag];
    if (typeof v === 'string') set(cfg, o, o.codec.fromFlag(v, `--${o.flag}`));
  }
}

function set<K extends keyof Config>(cfg: Config, o: OptionSpec<K>, value: Config[K]): void {
  cfg[o.field] = value;
}

/** A copy of the default, so that a caller's change never reaches the table. */
export function defaultOf<K extends keyof Config>(o: OptionSpec<K>): Config[K] {
  return structuredClone(o.default);
}

/** `cfg` as a TOML document that reads back to the same Config, each key under its help. */
export function configToToml(cfg: Config): string {
  const plain = OPTIONS.filter((o) => !o.table);
  const tables = OPTIONS.filter((o) => o.table);
  const out: string[] = [];
  for (const o of plain) out.push(`# ${o.help}`, `${o.key} = ${render(o, cfg)}`);
  for (const o of tables)
    out.push(
      '',
      `# ${o.help}`,
      `[${o.key}]`,
      ...render(o, cfg)
        .split('\n')
        .filter((l) => l !== ''),
    );
  return `${out.join('\n')}\n`;
}

function render<K extends keyof Config>(o: OptionSpec<K>, cfg: Config): string {
  return o.codec.toToml(cfg[o.field]);
}

/** The `--help` lines of one option. */
export function optionHelp<K extends keyof Config>(o: OptionSpec<K>): string[] {
  const def = o.codec.toFlag(o.default);
  return [`  --${o.flag} ${o.codec.metavar}`, `      ${o.help}`, `      config key: ${o.key}; default: ${def === '' ? '(empty)' : def}`];
}
