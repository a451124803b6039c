import { promises as fs } from 'node:fs';
import path from 'node:path';

export interface PluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface NetworkList {
  cniVersion: string;
  name: string;
  disableCheck: boolean;
  plugins: PluginConf[];
  /** The file it came from, or "built-in". */
  source: string;
}

export interface DefaultNetwork {
  name: string;
  bridge: string;
  subnet: string;
  /** Route destinations given to pods; default: the default route of the subnet's family. */
  routes?: string[];
  /** Masquerade traffic leaving the subnet; default true so pods reach beyond the node. */
  ipMasq?: boolean;
  /** host-local state directory; default the plugin's own (/var/lib/cni/networks). */
  ipamDataDir?: string;
}

// Versions whose configuration and result formats this runtime reads: results with `ips`
// (0.3.0 on) and, from 0.4.0, prevResult on DEL and the CHECK verb.
const SUPPORTED_VERSIONS = new Set(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);

/** Same extensions and order libcni's ConfFiles uses. */
const CONF_EXTENSIONS = ['.conflist', '.conf', '.json'];

export class CniConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CniConfigError';
  }
}

/** Config files in confDir by lexical order; [] when the directory does not exist. */
export async function listConfFiles(confDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(confDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CniConfigError(`cannot read CNI config directory ${confDir}: ${(e as Error).message}`);
  }
  return names
    .filter((n) => !n.startsWith('.') && CONF_EXTENSIONS.includes(path.extname(n)))
    .sort()
    .map((n) => path.join(confDir, n));
}

/**
 * Parses a .conflist, or a single-plugin .conf/.json that becomes a one-plugin list (as
 * libcni's ConfListFromConf does). Throws CniConfigError naming the file and the fault.
 */
export function parseNetworkConfig(source: string, text: string): NetworkList {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new CniConfigError(`invalid CNI config ${source}: not JSON: ${(e as Error).message}`);
  }
  if (!isObject(doc)) throw new CniConfigError(`invalid CNI config ${source}: not a JSON object`);
  const bad = (why: string) => new CniConfigError(`invalid CNI config ${source}: ${why}`);

  const name = doc.name;
  if (typeof name !== 'string' || name === '') throw bad('"name" is missing');
  // The network name becomes part of plugin state paths (host-local's dataDir, cache keys).
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw bad(`network name ${JSON.stringify(name)} has characters other than letters, digits, "_", "." and "-"`);
  const cniVersion = doc.cniVersion;
  if (typeof cniVersion !== 'string' || cniVersion === '') throw bad('"cniVersion" is missing');
  if (!SUPPORTED_VERSIONS.has(cniVersion)) throw bad(`cniVersion ${cniVersion} is not supported (supported: ${[...SUPPORTED_VERSIONS].join(', ')})`);

  let rawPlugins: unknown[];
  if ('plugins' in doc) {
    if (!Array.isArray(doc.plugins)) throw bad('"plugins" is not a list');
    rawPlugins = doc.plugins;
  } else if (typeof doc.type === 'string') {
    const single: Record<string, unknown> = { ...doc };
    delete single.name;
    delete single.cniVersion;
    rawPlugins = [single];
  } else {
    throw bad('neither "plugins" (a network list) nor "type" (a single plugin) is present');
  }
  if (rawPlugins.length === 0) throw bad('"plugins" is empty');

  const plugins = rawPlugins.map((p, i): PluginConf => {
    if (!isObject(p)) throw bad(`plugin ${i} is not an object`);
    const type = p.type;
    if (typeof type !== 'string' || type === '') throw bad(`plugin ${i} has no "type"`);
    // The type is a file name looked up in the plugin directories, never a path.
    if (type.includes('/') || type === '.' || type === '..') throw bad(`plugin ${i} type ${JSON.stringify(type)} is not a plain name`);
    if (p.capabilities !== undefined && !isObject(p.capabilities)) throw bad(`plugin ${i} (${type}) "capabilities" is not an object`);
    return p as PluginConf;
  });

  return { cniVersion, name, disableCheck: doc.disableCheck === true, plugins, source };
}

/** The first config in confDir by lexical order, or undefined when there is none. */
export async function loadFromDir(confDir: string): Promise<{ file: string; mtimeMs: number; size: number; list: () => Promise<NetworkList> } | undefined> {
  const files = await listConfFiles(confDir);
  if (files.length === 0) return undefined;
  const file = files[0];
  let st;
  try {
    st = await fs.stat(file);
  } catch (e) {
    throw new CniConfigError(`cannot read CNI config ${file}: ${(e as Error).message}`);
  }
  return {
    file,
    mtimeMs: st.mtimeMs,
    size: st.size,
    list: async () => {
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch (e) {
        throw new CniConfigError(`cannot read CNI config ${file}: ${(e as Error).message}`);
      }
      return parseNetworkConfig(file, text);
    },
  };
}

/**
 * The network used when confDir holds no config: a bridge with host-local IPAM and portmap
 * for hostPorts. The loopback interface comes up with the pod's namespace (sys/namespaces.ts),
 * as for any network list that lacks one.
 */
export function builtinNetwork(dn: DefaultNetwork): NetworkList {
  const v6 = dn.subnet.includes(':');
  const routes = dn.routes ?? [v6 ? '::/0' : '0.0.0.0/0'];
  const ipam: Record<string, unknown> = {
    type: 'host-local',
    ranges: [[{ subnet: dn.subnet }]],
    routes: routes.map((dst) => ({ dst })),
  };
  if (dn.ipamDataDir) ipam.dataDir = dn.ipamDataDir;
  return parseNetworkConfig(
    'built-in',
    JSON.stringify({
      cniVersion: '1.0.0',
      name: dn.name,
      plugins: [
        { type: 'bridge', bridge: dn.bridge, isGateway: true, ipMasq: dn.ipMasq ?? true, hairpinMode: true, ipam },
        { type: 'portmap', capabilities: { portMappings: true }, snat: true },
      ],
    }),
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
