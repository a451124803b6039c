import { randomBytes } from 'node:crypto';

/** 64 hex characters, like containerd's and CRI-O's object ids. */
export function newId(): string {
  return randomBytes(32).toString('hex');
}

/** Whether a name is one newId could have made (a directory named after an object). */
export function isId(name: string): boolean {
  return /^[0-9a-f]{64}$/.test(name);
}

/** Now, in nanoseconds since the epoch, as the CRI's int64 timestamps (a string: it exceeds 2^53). */
export function nowNs(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

export function msToNs(ms: number): string {
  return (BigInt(Math.round(ms)) * 1_000_000n).toString();
}

/**
 * A full id, or a unique prefix of one (crictl prints 13 characters). The kubelet always sends
 * full ids, every second for every container: those are a map lookup, only prefixes scan.
 */
export function matchId<T>(byId: ReadonlyMap<string, T>, idOrPrefix: string): T | undefined {
  if (!idOrPrefix) return undefined;
  const exact = byId.get(idOrPrefix);
  if (exact !== undefined) return exact;
  let found: T | undefined;
  for (const [id, v] of byId) {
    if (id.startsWith(idOrPrefix)) {
      if (found !== undefined) return undefined;
      found = v;
    }
  }
  return found;
}

/** Kubernetes label selector semantics of the CRI filters: every pair must match. */
export function labelsMatch(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}
