import type { Config } from '../config';
import { findPlugin } from '../network/cni';
import { builtinNetwork, loadFromDir, type NetworkList } from '../network/cni_config';
import { overlappingRoutes, podSubnets, readHostRoutes } from '../network/subnets';
import { failed, found, messageOf, type Finding } from './finding';
import { runTool } from './run_tool';

/** A plugin's CNI_COMMAND=VERSION answer: the spec versions it speaks. */
async function supportedVersions(bin: string): Promise<string[] | undefined> {
  const r = await runTool(bin, [], { env: { CNI_COMMAND: 'VERSION', PATH: process.env.PATH ?? '' }, input: '{"cniVersion":"1.0.0"}' });
  try {
    const doc = JSON.parse(r.stdout) as { supportedVersions?: unknown };
    return Array.isArray(doc.supportedVersions) ? doc.supportedVersions.map(String) : undefined;
  } catch {
    return undefined;
  }
}

/** The pod network the daemon would load, and whether every plugin it names is here. */
export async function probeCni(cfg: Config): Promise<Finding> {
  let list: NetworkList;
  try {
    const conf = await loadFromDir(cfg.cniConfDir);
    list = conf
      ? await conf.list()
      : builtinNetwork({ name: 'tscri-default', bridge: cfg.cniDefaultBridge, subnet: cfg.cniDefaultSubnet, routes: [cfg.cniDefaultSubnet], ipMasq: false });
  } catch (err) {
    return failed('cni', `config in ${cfg.cniConfDir} is not usable: ${messageOf(err)}`);
  }
  const source = list.source === 'built-in' ? `built-in (no config in ${cfg.cniConfDir})` : list.source;
  const plugins = await Promise.all(
    [...new Set(list.plugins.map((p) => p.type))].map(async (type) => {
      const bin = await findPlugin(type, cfg.cniBinDirs);
      return { type, bin, versions: bin ? await supportedVersions(bin) : undefined };
    }),
  );
  const missing = plugins.filter((p) => !p.bin).map((p) => p.type);
  const unsupported = plugins.filter((p) => p.versions && !p.versions.includes(list.cniVersion)).map((p) => p.type);
  const described = plugins
    .filter((p) => p.bin)
    .map((p) => `${p.type} ${p.bin}${p.versions ? ` (CNI ${p.versions[0]}..${p.versions[p.versions.length - 1]})` : ''}`)
    .join(', ');
  const base = `network ${list.name} from ${source}, cniVersion ${list.cniVersion}; plugins: ${described || 'none found'}`;
  if (missing.length > 0) return failed('cni', `${base}; not found in ${cfg.cniBinDirs.join(':')}: ${missing.join(', ')}`);
  if (unsupported.length > 0) return failed('cni', `${base}; cniVersion ${list.cniVersion} not spoken by ${unsupported.join(', ')}`);
  const clashes = routeClashes(list);
  if (clashes.length > 0) return failed('cni', `${base}; ${clashes.join('; ')}: some pods would not be reachable from this host`);
  return found('cni', base);
}

/** Pod subnets the host already routes through another device than their bridge. */
function routeClashes(list: NetworkList): string[] {
  const routes = readHostRoutes();
  return podSubnets(list).flatMap(({ subnet, bridge }) => {
    try {
      return overlappingRoutes(subnet, routes, bridge).map((r) => `pod subnet ${subnet} overlaps the route to ${r.dest} on ${r.dev}`);
    } catch {
      // A subnet that is not a CIDR: the plugin will say so when a pod is made.
      return [];
    }
  });
}
