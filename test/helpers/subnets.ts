import { spawnSync } from 'node:child_process';

/** An IPv4 CIDR as its first and last address. */
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

/**
 * Lines of `ip -4 route show` (the main table) whose destination overlaps `subnet`, but for
 * those on `ownDev`: the network's own bridge, left by an earlier test, is reused as it is.
 */
export function overlappingRoutes(subnet: string, routes: string, ownDev?: string): string[] {
  return routes
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => {
      const words = l.split(/\s+/);
      const dest = words[0];
      if (dest === '' || !/^\d/.test(dest)) return false;
      const dev = words.indexOf('dev');
      if (ownDev !== undefined && dev >= 0 && words[dev + 1] === ownDev) return false;
      return cidrsOverlap(dest, subnet);
    });
}

/**
 * Fails when the host already routes part of `subnet` elsewhere. Two bridges with overlapping
 * subnets (another benchmark, test file or lab network still up) make the pods of one of them
 * unreachable from this host: connections then fail with "no route to host" long after the
 * pods are ready, which looks like a runtime fault and is not one.
 */
export function assertSubnetFree(subnet: string, ownDev: string, what: string): void {
  const r = spawnSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip -4 route show failed: ${r.stderr.trim()}`);
  const taken = overlappingRoutes(subnet, r.stdout, ownDev);
  if (taken.length > 0) {
    throw new Error(
      `${what}: subnet ${subnet} overlaps the host's route(s) ${taken.map((l) => JSON.stringify(l)).join(', ')}; ` +
        'pods on both would not all be reachable from this host. Stop what owns that network first.',
    );
  }
}
