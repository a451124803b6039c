// Registry endpoints from containerd's host configuration directory (config_path), so a node
// configured for containerd works unchanged: <dir>/<host>/hosts.toml lists mirrors
// ([host."URL"] tables, tried in file order) and the upstream (`server`). Format:
// https://github.com/containerd/containerd/blob/main/docs/hosts.md

import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { FailedPreconditionError, messageOf } from '../../errors';
import { DEFAULT_DOMAIN } from '../reference';

export type Capability = 'pull' | 'resolve' | 'push';

export interface RegistryEndpoint {
  /** Base URL of the distribution API, ending in /v2 unless override_path says otherwise. */
  url: string;
  capabilities: Set<Capability>;
  skipVerify: boolean;
  /** Absolute paths of PEM files trusted in addition to the system roots. */
  ca?: string[];
  /** Client certificate / key file pairs for mutual TLS (key omitted: it is in the cert file). */
  clientCerts?: Array<{ cert: string; key?: string }>;
  headers: Record<string, string[]>;
  isMirror: boolean;
}

const ALL_CAPABILITIES: readonly Capability[] = ['pull', 'resolve', 'push'];
const HOSTS_FILE = 'hosts.toml';
const DEFAULT_DIR = '_default';
// Docker Hub's API does not live on docker.io itself.
const DOCKER_HUB_UPSTREAM = 'https://registry-1.docker.io';

/** True for hosts that are never worth TLS: loopback names and addresses, any port. */
export function isLocalhost(host: string): boolean {
  const h = hostWithoutPort(host).toLowerCase();
  return h === 'localhost' || h === '::1' || h === '[::1]' || /^127(?:\.\d{1,3}){3}$/.test(h);
}

function hostWithoutPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end > 0 ? host.slice(0, end + 1) : host;
  }
  const colon = host.lastIndexOf(':');
  return colon > 0 && host.indexOf(':') === colon ? host.slice(0, colon) : host;
}

function plainHttpFor(host: string, insecureHosts: string[]): boolean {
  return isLocalhost(host) || insecureHosts.includes(host);
}

/**
 * Directories to look in for `host`, in containerd's order: the Windows-safe `host_port_`
 * spelling, the host as written, then `_default`; the first that exists wins.
 */
function candidateDirs(root: string, host: string): string[] {
  const dirs: string[] = [];
  const colon = host.lastIndexOf(':');
  if (colon > 0 && !host.endsWith(']')) {
    dirs.push(path.join(root, `${host.slice(0, colon)}_${host.slice(colon + 1)}_`));
  }
  dirs.push(path.join(root, host), path.join(root, DEFAULT_DIR));
  return dirs;
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') {
      return false;
    }
    throw new FailedPreconditionError(`cannot read registry host directory ${p}: ${messageOf(err)}`, { cause: err });
  }
}

async function findHostDir(configDir: string, host: string): Promise<string | undefined> {
  // containerd's config_path accepts several roots separated by ':' (e.g.
  // "/etc/containerd/certs.d:/etc/docker/certs.d"); the first root with a match wins.
  for (const root of configDir.split(':').filter((r) => r !== '')) {
    for (const dir of candidateDirs(root, host)) {
      if (await isDirectory(dir)) return dir;
    }
  }
  return undefined;
}

interface HostSection {
  capabilities?: unknown;
  skip_verify?: unknown;
  ca?: unknown;
  client?: unknown;
  header?: unknown;
  override_path?: unknown;
}

class HostsFileError extends FailedPreconditionError {}

function fileError(file: string, why: string, cause?: unknown): HostsFileError {
  return new HostsFileError(`invalid registry hosts file ${file}: ${why}`, cause === undefined ? undefined : { cause });
}

function stringList(v: unknown, file: string, what: string): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  throw fileError(file, `${what} must be a string or a list of strings`);
}

function absolute(p: string, baseDir: string): string {
  return path.isAbsolute(p) ? p : path.join(baseDir, p);
}

function buildUrl(server: string, overridePath: boolean, file: string): string {
  let u: URL;
  try {
    u = new URL(server);
  } catch (err) {
    throw fileError(file, `cannot parse server URL "${server}"`, err);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw fileError(file, `server URL "${server}" must be http or https`);
  }
  let p = path.posix.normalize(u.pathname === '' ? '/' : u.pathname).replace(/\/+$/, '');
  if (!overridePath && !p.endsWith('/v2')) p += '/v2';
  return `${u.protocol}//${u.host}${p}`;
}

function parseSection(section: HostSection, url: string, where: string, isMirror: boolean, file: string, baseDir: string): RegistryEndpoint {
  const ep: RegistryEndpoint = {
    url,
    capabilities: new Set(ALL_CAPABILITIES),
    skipVerify: false,
    headers: {},
    isMirror,
  };

  if (section.capabilities !== undefined) {
    const caps = stringList(section.capabilities, file, `${where} capabilities`);
    if (caps.length > 0) {
      ep.capabilities = new Set();
      for (const c of caps) {
        const lc = c.toLowerCase();
        if (lc !== 'pull' && lc !== 'resolve' && lc !== 'push') {
          throw fileError(file, `${where}: unknown capability "${c}" (expected pull, resolve or push)`);
        }
        ep.capabilities.add(lc);
      }
    }
  }

  if (section.skip_verify !== undefined) {
    if (typeof section.skip_verify !== 'boolean') throw fileError(file, `${where} skip_verify must be a boolean`);
    ep.skipVerify = section.skip_verify;
  }

  if (section.ca !== undefined) {
    ep.ca = stringList(section.ca, file, `${where} ca`).map((p) => absolute(p, baseDir));
  }

  if (section.client !== undefined) {
    // A string (cert and key in one file), a list of such, or a list of [cert, key] pairs.
    const items = typeof section.client === 'string' ? [section.client] : section.client;
    if (!Array.isArray(items)) throw fileError(file, `${where} client must be a string or a list`);
    ep.clientCerts = items.map((item) => {
      if (typeof item === 'string') return { cert: absolute(item, baseDir) };
      if (Array.isArray(item) && item.length === 2 && item.every((x) => typeof x === 'string')) {
        return { cert: absolute(item[0], baseDir), key: absolute(item[1], baseDir) };
      }
      throw fileError(file, `${where} client entries must be a path or a [cert, key] pair`);
    });
  }

  if (section.header !== undefined) {
    if (typeof section.header !== 'object' || section.header === null || Array.isArray(section.header)) {
      throw fileError(file, `${where} header must be a table`);
    }
    for (const [name, value] of Object.entries(section.header as Record<string, unknown>)) {
      ep.headers[name] = stringList(value, file, `${where} header "${name}"`);
    }
  }

  return ep;
}

function overridePathOf(section: HostSection, file: string, where: string): boolean {
  if (section.override_path === undefined) return false;
  if (typeof section.override_path !== 'boolean') throw fileError(file, `${where} override_path must be a boolean`);
  return section.override_path;
}

function defaultUpstreamUrl(host: string, insecureHosts: string[]): string {
  if (host === DEFAULT_DOMAIN) return `${DOCKER_HUB_UPSTREAM}/v2`;
  return `${plainHttpFor(host, insecureHosts) ? 'http' : 'https'}://${host}/v2`;
}

/** Mirrors written without a scheme get one the way the upstream would. */
function withDefaultScheme(server: string, insecureHosts: string[]): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(server)) return server;
  const host = server.split('/')[0] ?? server;
  return `${plainHttpFor(host, insecureHosts) ? 'http' : 'https'}://${server}`;
}

/** Parses one hosts.toml; exported for tests and for validating configuration at startup. */
export function parseHostsFile(text: string, file: string, host: string, insecureHosts: string[]): RegistryEndpoint[] {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text);
  } catch (err) {
    // containerd 1.6 logs and ignores a broken file, silently dropping the mirrors; a pull
    // that then goes elsewhere is harder to diagnose than a refusal that names the file.
    const where = err instanceof TomlError ? ` (line ${err.line}, column ${err.column})` : '';
    throw fileError(file, `TOML parse error${where}: ${messageOf(err).split('\n')[0]}`, err);
  }
  const baseDir = path.dirname(file);
  const endpoints: RegistryEndpoint[] = [];

  const mirrors = doc['host'];
  if (mirrors !== undefined) {
    if (typeof mirrors !== 'object' || mirrors === null || Array.isArray(mirrors)) {
      throw fileError(file, 'host must be a table of [host."URL"] sections');
    }
    // smol-toml builds tables in document order, and URLs are never integer-like keys,
    // so iteration order is the order the mirrors were written in.
    for (const [server, section] of Object.entries(mirrors as Record<string, unknown>)) {
      if (typeof section !== 'object' || section === null || Array.isArray(section)) {
        throw fileError(file, `[host."${server}"] must be a table`);
      }
      const s = section as HostSection;
      const where = `[host."${server}"]`;
      const url = buildUrl(withDefaultScheme(server, insecureHosts), overridePathOf(s, file, where), file);
      endpoints.push(parseSection(s, url, where, true, file, baseDir));
    }
  }

  const server = doc['server'];
  if (server !== undefined && typeof server !== 'string') throw fileError(file, 'server must be a string');
  const top = doc as HostSection;
  const upstreamUrl =
    server !== undefined && server !== ''
      ? buildUrl(withDefaultScheme(server, insecureHosts), overridePathOf(top, file, 'top level'), file)
      : defaultUpstreamUrl(host, insecureHosts);
  endpoints.push(parseSection(top, upstreamUrl, 'top level', false, file, baseDir));
  return endpoints;
}

/**
 * Docker's certs.d layout, used when a host directory has no hosts.toml: *.crt are CAs,
 * *.cert are client certificates with the matching *.key.
 */
async function certsDirEndpoint(dir: string, host: string, insecureHosts: string[]): Promise<RegistryEndpoint> {
  const ep = defaultEndpoint(host, insecureHosts);
  let names: string[];
  try {
    names = (await fs.readdir(dir)).sort();
  } catch (err) {
    throw new FailedPreconditionError(`cannot read registry host directory ${dir}: ${messageOf(err)}`, { cause: err });
  }
  const ca = names.filter((n) => n.endsWith('.crt')).map((n) => path.join(dir, n));
  if (ca.length > 0) ep.ca = ca;
  const clientCerts = names
    .filter((n) => n.endsWith('.cert'))
    .map((n) => {
      const key = `${n.slice(0, -'.cert'.length)}.key`;
      return names.includes(key) ? { cert: path.join(dir, n), key: path.join(dir, key) } : { cert: path.join(dir, n) };
    });
  if (clientCerts.length > 0) ep.clientCerts = clientCerts;
  return ep;
}

function defaultEndpoint(host: string, insecureHosts: string[]): RegistryEndpoint {
  return {
    url: defaultUpstreamUrl(host, insecureHosts),
    capabilities: new Set(ALL_CAPABILITIES),
    skipVerify: false,
    headers: {},
    isMirror: false,
  };
}

/**
 * The endpoints to try for registry `host` (as written in the image reference), mirrors
 * first in file order, then the upstream server. An empty `configDir` means no
 * configuration: just the upstream.
 */
export async function loadRegistryEndpoints(configDir: string, host: string, insecureHosts: string[]): Promise<RegistryEndpoint[]> {
  const dir = configDir === '' ? undefined : await findHostDir(configDir, host);
  if (dir === undefined) return [defaultEndpoint(host, insecureHosts)];
  const file = path.join(dir, HOSTS_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [await certsDirEndpoint(dir, host, insecureHosts)];
    throw new FailedPreconditionError(`cannot read registry hosts file ${file}: ${messageOf(err)}`, { cause: err });
  }
  if (text.trim() === '') return [await certsDirEndpoint(dir, host, insecureHosts)];
  return withoutRepeats(parseHostsFile(text, file, host, insecureHosts));
}

/**
 * A mirror file often names the same URL as server and as its one mirror (the lab's and
 * containerd's examples do); asking it twice only doubles the wait when it fails.
 */
function withoutRepeats(endpoints: RegistryEndpoint[]): RegistryEndpoint[] {
  const seen = new Set<string>();
  return endpoints.filter((e) => {
    if (seen.has(e.url)) return false;
    seen.add(e.url);
    return true;
  });
}
