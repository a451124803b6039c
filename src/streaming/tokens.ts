// Single-use URLs. The kubelet asks for a URL over gRPC and hands it to the API server, which
// connects to it once; the URL is the only credential, so it must be unguessable, usable once
// and short-lived (kubelet's own streaming server: 1 minute, one use).

import crypto from 'node:crypto';

export type Consumed<T> = { ok: true; value: T } | { ok: false; status: 404 | 410; reason: string };

interface Entry<T> {
  value: T;
  expiresAt: number;
  usedAt?: number;
}

export class TokenCache<T> {
  private readonly entries = new Map<string, Entry<T>>();

  constructor(
    private readonly ttlMs = 60_000,
    private readonly max = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  /** A new token for `value`; throws when too many are outstanding (a client not connecting). */
  insert(value: T): string {
    this.sweep();
    if (this.entries.size >= this.max) throw new Error(`too many pending streaming requests (${this.max})`);
    const token = crypto.randomBytes(18).toString('base64url');
    this.entries.set(token, { value, expiresAt: this.now() + this.ttlMs });
    return token;
  }

  /** Takes the token; used and expired ones are remembered for a while so the error says why. */
  consume(token: string): Consumed<T> {
    const e = this.entries.get(token);
    if (!e) return { ok: false, status: 404, reason: 'unknown streaming token' };
    if (e.usedAt !== undefined) return { ok: false, status: 410, reason: 'streaming token already used: a URL serves one connection' };
    if (this.now() > e.expiresAt) {
      return { ok: false, status: 410, reason: `streaming token expired: URLs are valid for ${Math.round(this.ttlMs / 1000)}s` };
    }
    e.usedAt = this.now();
    return { ok: true, value: e.value };
  }

  /** Like consume, without using the token up (for plain HTTP requests that cannot stream). */
  peek(token: string): Consumed<T> {
    const e = this.entries.get(token);
    if (!e) return { ok: false, status: 404, reason: 'unknown streaming token' };
    if (e.usedAt !== undefined) return { ok: false, status: 410, reason: 'streaming token already used' };
    if (this.now() > e.expiresAt) return { ok: false, status: 410, reason: 'streaming token expired' };
    return { ok: true, value: e.value };
  }

  get size(): number {
    return this.entries.size;
  }

  private sweep(): void {
    // Dead entries linger one more TTL so that a late or repeated request gets 410, not 404.
    const t = this.now();
    for (const [k, e] of this.entries) {
      const deadSince = e.usedAt ?? e.expiresAt;
      if (t > deadSince + this.ttlMs && (e.usedAt !== undefined || t > e.expiresAt)) this.entries.delete(k);
    }
  }
}
