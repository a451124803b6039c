// Registry authentication: Basic, and the token flow of the distribution spec
// (https://distribution.github.io/distribution/spec/auth/token/ and .../oauth/). The client
// remembers each endpoint's challenge, so after the first 401 every request (including the
// parallel layer fetches) carries a cached token instead of paying the 401 round trip again.

import { createHash } from 'node:crypto';
import { PermissionDeniedError, UnauthenticatedError, messageOf } from '../../errors';

/** runtime.v1.AuthConfig as the CRI sends it; every field may be empty. */
export interface AuthConfig {
  username?: string;
  password?: string;
  /** base64 of "username:password" (docker config.json style). */
  auth?: string;
  server_address?: string;
  identity_token?: string;
  registry_token?: string;
}

export interface Challenge {
  /** Lowercased auth scheme: "bearer", "basic", … */
  scheme: string;
  /** Parameter names lowercased, values unquoted. */
  params: Record<string, string>;
}

/** What auth.ts needs from the transport: one request with a fully buffered (small) answer. */
export type AuthRequester = (
  url: URL,
  init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>;

const DEFAULT_TOKEN_TTL_S = 60;
// Refresh a little early so a token does not expire between the check and the request.
const EXPIRY_MARGIN_MS = 5_000;
const CLIENT_ID = 'tscri';

const TOKEN_CHARS = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses a WWW-Authenticate header (RFC 7235): several challenges, each a scheme followed by
 * comma-separated auth-params whose values may be quoted strings containing commas and
 * escaped quotes. Several header lines are joined by the caller or passed as a list.
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const lines = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const line of lines) out.push(...parseChallengeLine(line));
  return out;
}

function parseChallengeLine(s: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = s.length;
  const skipWs = (): void => {
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TOKEN_CHARS.test(s[i])) i++;
    return s.slice(start, i);
  };
  const readQuoted = (): string => {
    // s[i] is the opening quote
    i++;
    let v = '';
    while (i < n && s[i] !== '"') {
      if (s[i] === '\\' && i + 1 < n) i++;
      v += s[i];
      i++;
    }
    i++; // closing quote (or end of input for a malformed header)
    return v;
  };

  let current: Challenge | undefined;
  while (i < n) {
    skipWs();
    if (s[i] === ',') {
      i++;
      continue;
    }
    const start = i;
    const word = readToken();
    if (word === '') {
      i++; // stray character: skip rather than loop forever on a malformed header
      continue;
    }
    skipWs();
    if (s[i] === '=' && current !== undefined) {
      // An auth-param of the current challenge, unless this is token68 ("abc==").
      i++;
      skipWs();
      const value = s[i] === '"' ? readQuoted() : readParamValue();
      current.params[word.toLowerCase()] = value;
      continue;
    }
    if (s[i] === '=' && current === undefined) {
      // key=value before any scheme: malformed; skip it.
      i = start + word.length + 1;
      if (s[i] === '"') readQuoted();
      else readParamValue();
      continue;
    }
    current = { scheme: word.toLowerCase(), params: {} };
    out.push(current);
  }
  return out;

  function readParamValue(): string {
    const start = i;
    while (i < n && s[i] !== ',' && s[i] !== ' ' && s[i] !== '\t') i++;
    return s.slice(start, i);
  }
}

export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

/** Docker Hub answers under several names; credentials filed under one apply to all. */
function canonicalHost(host: string): string {
  const h = host.toLowerCase();
  if (h === 'index.docker.io' || h === 'registry-1.docker.io' || h === 'docker.io') return 'docker.io';
  return h;
}

function hostOfServerAddress(addr: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(addr) ? addr : `https://${addr}`;
  try {
    return new URL(withScheme).host;
  } catch {
    return addr;
  }
}

/**
 * The credentials in `auth` that may be sent to `hosts` (the endpoint's host, and for the
 * upstream also the reference's registry). Like containerd's ParseAuth, an AuthConfig whose
 * server_address names another registry is not used, so a mirror never receives credentials
 * the kubelet meant for the upstream.
 */
export function credentialsFor(auth: AuthConfig | undefined, hosts: string[]): Credentials | undefined {
  if (auth === undefined) return undefined;
  if (auth.server_address) {
    const target = canonicalHost(hostOfServerAddress(auth.server_address));
    if (!hosts.some((h) => canonicalHost(h) === target)) return undefined;
  }
  const creds: Credentials = {};
  if (auth.identity_token) creds.identityToken = auth.identity_token;
  if (auth.registry_token) creds.registryToken = auth.registry_token;
  if (auth.username) {
    creds.username = auth.username;
    creds.password = auth.password ?? '';
  } else if (auth.auth) {
    const decoded = Buffer.from(auth.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      creds.username = decoded.slice(0, colon);
      creds.password = decoded.slice(colon + 1);
    }
  }
  return Object.keys(creds).length === 0 ? undefined : creds;
}

function credentialsKey(c: Credentials | undefined): string {
  if (c === undefined) return 'anonymous';
  return createHash('sha256')
    .update(JSON.stringify([c.username ?? '', c.password ?? '', c.identityToken ?? '', c.registryToken ?? '']))
    .digest('hex')
    .slice(0, 16);
}

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

/** A 401/403 from the registry or its token service, with the text a user needs. */
export function registryAuthError(status: number, what: string, detail: string): Error {
  const msg = `${what}: ${status === 403 ? 'forbidden' : 'unauthorized'}${detail ? `: ${detail}` : ''}`;
  return status === 403 ? new PermissionDeniedError(msg) : new UnauthenticatedError(msg);
}

/** Pulls the human-readable part out of a registry or token-service error body. */
export function errorDetail(body: Buffer): string {
  const text = body.toString('utf8').trim();
  if (text === '') return '';
  try {
    const j = JSON.parse(text) as {
      errors?: Array<{ code?: string; message?: string }>;
      error?: string;
      error_description?: string;
      details?: string;
    };
    if (Array.isArray(j.errors) && j.errors.length > 0) {
      return j.errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    }
    if (j.error) return j.error_description ? `${j.error}: ${j.error_description}` : j.error;
    if (j.details) return j.details;
  } catch {
    // not JSON: fall through to the raw text
  }
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/**
 * Holds challenges per endpoint and tokens per (endpoint, scope, credentials). One instance
 * serves the whole daemon; its state is only a cache.
 */
export class Authorizer {
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<CachedToken>>();

  /**
   * The Authorization header to send to `endpointUrl` for `scope`, from a challenge seen
   * before; undefined when the endpoint has not asked for auth (yet).
   */
  async header(
    endpointUrl: string,
    scope: string,
    creds: Credentials | undefined,
    request: AuthRequester,
    what: string,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const challenge = this.challenges.get(endpointUrl);
    if (challenge === undefined) return undefined;
    // Without credentials a Basic endpoint may still serve this repository anonymously;
    // let the request go out bare and answer its 401 if there is one.
    if (challenge.scheme === 'basic' && creds?.username === undefined) return undefined;
    return this.headerFor(endpointUrl, challenge, scope, creds, request, what, signal);
  }

  /**
   * Handles a 401: remembers the endpoint's challenge and returns the header to retry with.
   * `rejected` is the Authorization header the 401 answered, whose token is dropped from the
   * cache. Throws UnauthenticatedError when no usable challenge or credentials exist.
   * `request` reaches the token realm with the endpoint's TLS settings, as containerd does.
   */
  async onUnauthorized(
    endpointUrl: string,
    wwwAuthenticate: string | string[] | undefined,
    scope: string,
    creds: Credentials | undefined,
    rejected: string | undefined,
    request: AuthRequester,
    what: string,
    signal?: AbortSignal,
  ): Promise<string> {
    const all = parseChallenges(wwwAuthenticate);
    const challenge = all.find((c) => c.scheme === 'bearer' && c.params['realm']) ?? all.find((c) => c.scheme === 'basic');
    if (challenge === undefined) {
      const got = Array.isArray(wwwAuthenticate) ? wwwAuthenticate.join(', ') : wwwAuthenticate;
      throw new UnauthenticatedError(`${what}: unauthorized, and no usable WWW-Authenticate challenge${got ? ` (got "${got}")` : ''}`);
    }
    this.challenges.set(endpointUrl, challenge);
    if (rejected !== undefined) {
      for (const [k, v] of this.tokens) if (v.header === rejected) this.tokens.delete(k);
    }
    // Registries put the scope they want in the challenge; ask for it as well as ours so a
    // registry that wants more (e.g. a cross-repository mount) is satisfied.
    const wanted = challenge.params['scope'];
    const scopes = new Set([scope, ...(wanted ? wanted.split(' ') : [])]);
    const header = await this.headerFor(endpointUrl, challenge, [...scopes].sort().join(' '), creds, request, what, signal);
    if (header === rejected) {
      throw new UnauthenticatedError(`${what}: unauthorized: the registry rejected the credentials`);
    }
    return header;
  }

  private async headerFor(
    endpointUrl: string,
    challenge: Challenge,
    scope: string,
    creds: Credentials | undefined,
    request: AuthRequester,
    what: string,
    signal?: AbortSignal,
  ): Promise<string> {
    if (challenge.scheme === 'basic') {
      if (creds?.username === undefined) {
        throw new UnauthenticatedError(`${what}: the registry requires basic authentication and no credentials were given`);
      }
      return basicHeader(creds.username, creds.password ?? '');
    }
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;

    const key = `${endpointUrl}\n${scope}\n${credentialsKey(creds)}`;
    const cached = this.tokens.get(key);
    if (cached !== undefined && cached.expiresAt > Date.now()) return cached.header;
    // Parallel layer fetches that all miss the cache share one token request.
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      pending = this.fetchToken(challenge, scope, creds, request, what, signal).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    const token = await pending;
    this.prune();
    this.tokens.set(key, token);
    return token.header;
  }

  private prune(): void {
    const now = Date.now();
    for (const [k, v] of this.tokens) if (v.expiresAt <= now) this.tokens.delete(k);
  }

  private async fetchToken(
    challenge: Challenge,
    scope: string,
    creds: Credentials | undefined,
    request: AuthRequester,
    what: string,
    signal?: AbortSignal,
  ): Promise<CachedToken> {
    const realm = challenge.params['realm'];
    let url: URL;
    try {
      url = new URL(realm);
    } catch (err) {
      throw new UnauthenticatedError(`${what}: invalid token realm "${realm}": ${messageOf(err)}`, { cause: err });
    }
    const service = challenge.params['service'];
    const scopes = scope.split(' ').filter((s) => s !== '');

    let res: Awaited<ReturnType<AuthRequester>>;
    if (creds?.identityToken) {
      // OAuth2 refresh-token grant (distribution spec "oauth"): the identity token stands in
      // for the password and is only valid with a POST.
      const form = new URLSearchParams();
      form.set('grant_type', 'refresh_token');
      form.set('refresh_token', creds.identityToken);
      if (service) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      form.set('client_id', CLIENT_ID);
      res = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
        body: form.toString(),
        signal,
      });
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (creds?.username !== undefined) headers['authorization'] = basicHeader(creds.username, creds.password ?? '');
      res = await request(url, { method: 'GET', headers, signal });
    }

    const tokenService = `token service ${url.origin}${url.pathname}`;
    if (res.status === 401 || res.status === 403) {
      throw registryAuthError(res.status, `${what}: ${tokenService}`, errorDetail(res.body));
    }
    if (res.status < 200 || res.status > 299) {
      throw new UnauthenticatedError(`${what}: ${tokenService} answered HTTP ${res.status}: ${errorDetail(res.body)}`);
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(res.body.toString('utf8')) as typeof body;
    } catch (err) {
      throw new UnauthenticatedError(`${what}: ${tokenService} returned invalid JSON: ${messageOf(err)}`, { cause: err });
    }
    const token = body.access_token || body.token;
    if (!token) throw new UnauthenticatedError(`${what}: ${tokenService} returned no token`);
    const ttl = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_TTL_S;
    return { header: `Bearer ${token}`, expiresAt: Date.now() + Math.max(ttl * 1000 - EXPIRY_MARGIN_MS, 1000) };
  }
}
