/** Compares dotted CNI versions numerically ("0.10.0" > "0.4.0"). */
export function versionAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const b = min.split('.').map((n) => Number.parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

interface ResultIp {
  address?: unknown;
  interface?: unknown;
}
interface ResultIface {
  name?: unknown;
  sandbox?: unknown;
}

/**
 * The pod's addresses from a CNI result (0.3.0 and later: `ips[].address` in CIDR form),
 * IPv4 first. Addresses that the result ties to an interface other than the pod's own
 * (the bridge's gateway, for instance) are skipped, as the portmap plugin does.
 */
export function podIps(result: unknown, ifName: string): string[] {
  if (typeof result !== 'object' || result === null) return [];
  const r = result as { ips?: unknown; interfaces?: unknown };
  // Plugin output: entries may be null, and an ip may name an interface index out of range.
  const ips = Array.isArray(r.ips) ? (r.ips as (ResultIp | null | undefined)[]) : [];
  const ifaces = Array.isArray(r.interfaces) ? (r.interfaces as (ResultIface | null | undefined)[]) : [];
  const out: string[] = [];
  for (const ip of ips) {
    if (typeof ip?.address !== 'string') continue;
    if (typeof ip.interface === 'number') {
      const iface = ifaces[ip.interface];
      if (iface && (iface.name !== ifName || !iface.sandbox)) continue;
    }
    const addr = ip.address.split('/')[0];
    if (addr && !out.includes(addr)) out.push(addr);
  }
  const v4 = out.filter((a) => !a.includes(':'));
  const v6 = out.filter((a) => a.includes(':'));
  return [...v4, ...v6];
}
