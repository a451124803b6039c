// Pod subnets against the host's routes. A pod network whose subnet the host already routes
// through another device leaves some pods unreachable from the host ("no route to host") long
// after they are ready: the more specific route wins, and ARP goes out the other link.
import fs from 'node:fs';
import type { NetworkList } from './cni_config';

/** An IPv4 CIDR (or a bare address) as its first and last address. */
export function cidrRange(cidr: string): { first: number; last: number } {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?$/.exec(cidr);
  if (!m) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const octets = m.slice(1, 5).map(Number);
  // No prefix length: one address.
  const bits = m[5] ? Number(m[5]) : 32;
  if (octets.some((o) => o > 255) || bits > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const addr = octets.reduce((a, o) => a * 256 + o, 0);
  const size = 2 ** (32 - bits);
  const first = addr - (addr % size);
  return { first, last: first + size - 1 };
}

export function cidrsOverlap(a: string, b: string): boolean {
  const x = cidrRange(a);
  const y = cidrRange(b);
  return x.first <= y.last && y.first <= x.last;
}

export interface HostRoute {
  dev: string;
  /** Destination as a CIDR; the default route is left out. */
  dest: string;
}

/** /proc/net/route: IPv4 main-table routes, addresses and masks in little-endian hex. */
export function parseProcNetRoute(text: string): HostRoute[] {
  const out: HostRoute[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const dest = littleEndianAddress(f[1]);
    const mask = littleEndianAddress(f[7]);
    if (dest === undefined || mask === undefined) continue;
    const bits = mask
      .split('.')
      .map(Number)
      .reduce((n, o) => n + o.toString(2).replace(/0/g, '').length, 0);
    if (bits === 0) continue;
    out.push({ dev: f[0], dest: `${dest}/${bits}` });
  }
  return out;
}

function littleEndianAddress(hex: string): string | undefined {
  if (!/^[0-9A-Fa-f]{8}$/.test(hex)) return undefined;
  const n = parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.');
}

/** The host's routes whose destination overlaps `subnet`, but for those on `ownDev`. */
export function overlappingRoutes(subnet: string, routes: HostRoute[], ownDev?: string): HostRoute[] {
  return routes.filter((r) => r.dev !== ownDev && cidrsOverlap(r.dest, subnet));
}

export function readHostRoutes(): HostRoute[] {
  return parseProcNetRoute(fs.readFileSync('/proc/net/route', 'utf8'));
}

/** The IPv4 subnets a network list hands out (host-local ranges), with the bridge it puts them on. */
export function podSubnets(list: NetworkList): { subnet: string; bridge?: string }[] {
  const out: { subnet: string; bridge?: string }[] = [];
  for (const p of list.plugins) {
    // The bridge plugin's default bridge name.
    const bridge = p.type === 'bridge' ? (typeof p.bridge === 'string' ? p.bridge : 'cni0') : undefined;
    const ipam = p.ipam as { subnet?: unknown; ranges?: unknown } | undefined;
    if (!ipam || typeof ipam !== 'object') continue;
    const subnets: unknown[] = [ipam.subnet];
    if (Array.isArray(ipam.ranges)) {
      for (const set of ipam.ranges) if (Array.isArray(set)) for (const r of set) subnets.push((r as { subnet?: unknown } | null)?.subnet);
    }
    for (const s of subnets) if (typeof s === 'string' && !s.includes(':')) out.push({ subnet: s, bridge });
  }
  return out;
}
