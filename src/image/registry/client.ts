// A client for the OCI distribution API (pull side): resolve a reference to a manifest
// digest, fetch manifests, stream blobs. Built on node:http/https rather than fetch so that
// per-endpoint TLS settings from hosts.toml (ca, skip_verify, client certs) apply without an
// extra dependency, blob bodies reach the caller as plain byte streams (no transparent
// Content-Encoding decoding that would break digest checks) and redirects can drop the
// Authorization header when they leave the registry's origin.

import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Readable } from 'node:stream';
import * as tls from 'node:tls';
import {
  CancelledError,
  CriError,
  FailedPreconditionError,
  NotFoundError,
  PermissionDeniedError,
  RegistryUnavailableError,
  UnauthenticatedError,
  messageOf,
} from '../../errors';
import { MediaType } from '../manifest';
import { ImageReference, checkDigest, formatReference, manifestReference } from '../reference';
import { AuthConfig, AuthRequester, Authorizer, credentialsFor, errorDetail, registryAuthError } from './auth';
import { RegistryEndpoint, loadRegistryEndpoints } from './hosts';

export type { AuthConfig } from './auth';
export type { RegistryEndpoint } from './hosts';

const MANIFEST_TYPES = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerList, MediaType.dockerManifest];
const MANIFEST_ACCEPT = MANIFEST_TYPES.join(', ');
const KNOWN_MANIFEST_TYPES = new Set<string>(MANIFEST_TYPES);

// Manifests and indexes are small JSON documents; a bigger answer is a misbehaving server.
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 64 * 1024;
const MAX_REDIRECTS = 10;
// containerd cancels a pull that makes no progress for 5 minutes (image_pull_progress_timeout);
// the same bound on a silent socket keeps a stalled registry from hanging a pull forever.
const DEFAULT_IDLE_TIMEOUT_MS = 5 * 60_000;

export interface RegistryClientOptions {
  /** containerd-style hosts directory (config_path); '' for none. */
  configDir: string;
  /** Registry hosts (as written in references) reached over plain http. */
  insecureHosts: string[];
  userAgent?: string;
  /** Abort a request whose socket stays silent this long. */
  idleTimeoutMs?: number;
}

export interface RequestOptions {
  signal?: AbortSignal;
  auth?: AuthConfig;
}

export interface ResolveResult {
  digest: string;
  mediaType: string;
  body: Buffer;
  endpoint: RegistryEndpoint;
}

/** The bytes a registry served do not hash to the digest they were asked or announced for. */
export class DigestMismatchError extends CriError {}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
  /** Final URL after redirects. */
  url: URL;
}

interface SendInit {
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Whose TLS settings apply (for URLs on the endpoint's origin). */
  endpoint?: RegistryEndpoint;
  /** Send the endpoint's hosts.toml `header`s (only ever to its own origin). */
  endpointHeaders: boolean;
  followRedirects: boolean;
}

/** Network-level failures: the registry could not be talked to at all. */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'ECONNABORTED',
  'EPROTO',
]);

function isNetworkError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === undefined) return false;
  // TLS handshake and certificate failures also mean "cannot reach a registry we trust".
  return UNAVAILABLE_CODES.has(code) || code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || /CERT|SELF_SIGNED|UNABLE_TO/.test(code);
}

function describeNetworkError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code && !e.message.includes(e.code) ? `${e.code}: ${e.message}` : e.message;
}

/**
 * The domain error for a failure while talking to a registry: cancellation and domain errors
 * pass through, network failures become RegistryUnavailableError. Exported for the pull
 * pipeline, which sees raw socket errors on blob streams mid-download.
 */
export function toRegistryError(err: unknown, what: string): Error {
  if (err instanceof CriError) return err;
  if (isNetworkError(err) || (err as Error | undefined)?.message === 'aborted') {
    return new RegistryUnavailableError(`${what}: ${describeNetworkError(err)}`, { cause: err });
  }
  return new CriError(`${what}: ${messageOf(err)}`, { cause: err });
}

/** Runs an auth step (token fetch) and maps its transport failures like any other request's. */
async function tokenStep<T>(what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    throw toRegistryError(err, `${what}: token request`);
  }
}

class IdleTimeoutError extends Error {
  code = 'ETIMEDOUT';
}

async function readBody(res: http.IncomingMessage, limit: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    res.destroy();
    throw new FailedPreconditionError(`${what}: response of ${declared} bytes exceeds the ${limit}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > limit) {
      res.destroy();
      throw new FailedPreconditionError(`${what}: response exceeds the ${limit}-byte limit`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks, size);
}

/** Reads what is left of an error response (bounded) so the keep-alive socket can be reused. */
async function readErrorBody(res: http.IncomingMessage): Promise<Buffer> {
  try {
    return await readBody(res, MAX_ERROR_BODY_BYTES, 'error body');
  } catch {
    return Buffer.alloc(0);
  }
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function headerValue(h: http.IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Content-Type is often generic (application/json) on simple servers; the body says what it is. */
function manifestMediaType(contentType: string | undefined, body: Buffer): string {
  const ct = contentType?.split(';')[0]?.trim().toLowerCase();
  if (ct !== undefined && KNOWN_MANIFEST_TYPES.has(ct)) return ct;
  try {
    const j = JSON.parse(body.toString('utf8')) as { mediaType?: unknown; manifests?: unknown; layers?: unknown };
    if (typeof j.mediaType === 'string' && j.mediaType !== '') return j.mediaType;
    if (Array.isArray(j.manifests)) return MediaType.ociIndex;
    if (Array.isArray(j.layers)) return MediaType.ociManifest;
  } catch {
    // not JSON: report the server's type and let the caller reject it
  }
  return ct ?? 'application/octet-stream';
}

/** The outcome of one endpoint during resolve, kept to build the final error. */
type Attempt = { url: string; error: Error };

export class RegistryClient {
  private readonly configDir: string;
  private readonly insecureHosts: string[];
  private readonly userAgent: string;
  private readonly idleTimeoutMs: number;
  private readonly authorizer: Authorizer;
  private readonly agents = new Map<string, Promise<http.Agent>>();
  private readonly plainAgent = new http.Agent({ keepAlive: true });

  constructor(opts: RegistryClientOptions) {
    this.configDir = opts.configDir;
    this.insecureHosts = opts.insecureHosts;
    this.userAgent = opts.userAgent ?? 'tscri';
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.authorizer = new Authorizer();
  }

  /** Token requests use the endpoint's TLS settings (a private registry's realm is often itself). */
  private authRequester(endpoint: RegistryEndpoint): AuthRequester {
    return async (url, init) => {
      const res = await this.send(url, { ...init, endpoint, endpointHeaders: false, followRedirects: true });
      const body = await readBody(res.body, MAX_MANIFEST_BYTES, `token service ${url.origin}`);
      return { status: res.status, headers: res.headers, body };
    };
  }

  /** Closes idle keep-alive connections (daemon shutdown, tests). */
  close(): void {
    this.plainAgent.destroy();
    for (const a of this.agents.values())
      void a.then(
        (agent) => agent.destroy(),
        () => undefined,
      );
    this.agents.clear();
  }

  /** The endpoints that would be tried for `ref`, in order (hosts.toml re-read each time). */
  endpoints(ref: ImageReference): Promise<RegistryEndpoint[]> {
    return loadRegistryEndpoints(this.configDir, ref.domain, this.insecureHosts);
  }

  /**
   * Resolves `ref` to its top-level manifest (an index or a manifest) on the first endpoint
   * with the resolve capability that has it.
   */
  async resolve(ref: ImageReference, opts: RequestOptions = {}): Promise<ResolveResult> {
    const name = formatReference(ref);
    if (ref.digest !== undefined) checkDigest(ref.digest, `image "${name}"`);
    const candidates = (await this.endpoints(ref)).filter((e) => e.capabilities.has('resolve'));
    if (candidates.length === 0) {
      throw new FailedPreconditionError(`failed to resolve image "${name}": no registry endpoint has the resolve capability`);
    }
    const attempts: Attempt[] = [];
    for (const endpoint of candidates) {
      try {
        const { mediaType, body, digest } = await this.getManifest(ref, manifestReference(ref), ref.digest, endpoint, opts);
        return { digest, mediaType, body, endpoint };
      } catch (err) {
        if (err instanceof CancelledError) throw err;
        // containerd moves on to the next host on any failure, so a broken or partial
        // mirror never blocks a pull the upstream can serve.
        attempts.push({ url: endpoint.url, error: err instanceof Error ? err : new Error(String(err)) });
      }
    }
    throw resolveError(name, attempts);
  }

  /** Fetches the manifest `digest` of `ref`'s repository from `endpoint`, verified. */
  async fetchManifest(
    ref: ImageReference,
    digest: string,
    endpoint: RegistryEndpoint,
    opts: RequestOptions = {},
  ): Promise<{ mediaType: string; body: Buffer }> {
    checkDigest(digest, `manifest of image "${formatReference(ref)}"`);
    const { mediaType, body } = await this.getManifest(ref, digest, digest, endpoint, opts);
    return { mediaType, body };
  }

  /**
   * Streams blob `digest` of `ref`'s repository. The bytes are not verified here: the caller
   * hashes them as they pass, which is the only way to verify a body that is not buffered.
   */
  async fetchBlob(ref: ImageReference, digest: string, endpoint: RegistryEndpoint, opts: RequestOptions = {}): Promise<Readable> {
    const what = `image "${formatReference(ref)}": blob ${digest} from ${endpoint.url}`;
    checkDigest(digest, what);
    const res = await this.registryGet(ref, endpoint, `blobs/${digest}`, '*/*', what, opts);
    if (res.status === 200) return res.body;
    throw await statusError(res, what, endpoint);
  }

  private async getManifest(
    ref: ImageReference,
    reference: string,
    expectedDigest: string | undefined,
    endpoint: RegistryEndpoint,
    opts: RequestOptions,
  ): Promise<{ mediaType: string; body: Buffer; digest: string }> {
    const what = `image "${formatReference(ref)}": manifest ${reference} from ${endpoint.url}`;
    const res = await this.registryGet(ref, endpoint, `manifests/${reference}`, MANIFEST_ACCEPT, what, opts);
    if (res.status !== 200) throw await statusError(res, what, endpoint);
    const body = await this.readOrCancel(res.body, MAX_MANIFEST_BYTES, what, opts.signal);
    const digest = sha256(body);
    if (expectedDigest !== undefined && digest !== expectedDigest) {
      throw new DigestMismatchError(`${what}: digest mismatch: requested ${expectedDigest}, content hashes to ${digest}`);
    }
    // Only a sha256 header can be checked; other algorithms are legal and left alone.
    const announced = headerValue(res.headers, 'docker-content-digest');
    if (announced !== undefined && announced.startsWith('sha256:') && announced !== digest) {
      throw new DigestMismatchError(`${what}: digest mismatch: Docker-Content-Digest says ${announced}, content hashes to ${digest}`);
    }
    return { mediaType: manifestMediaType(headerValue(res.headers, 'content-type'), body), body, digest };
  }

  private async readOrCancel(body: http.IncomingMessage, limit: number, what: string, signal?: AbortSignal): Promise<Buffer> {
    try {
      return await readBody(body, limit, what);
    } catch (err) {
      if (signal?.aborted || err instanceof CancelledError) throw new CancelledError(`${what}: cancelled`, { cause: err });
      if (err instanceof CriError) throw err;
      throw new RegistryUnavailableError(`${what}: reading the response failed: ${describeNetworkError(err)}`, { cause: err });
    }
  }

  /**
   * GET <endpoint>/<path>/<suffix> with auth: credentials or a cached token up front, and on
   * a 401 one retry after answering the challenge. Network failures become
   * RegistryUnavailableError, an abort CancelledError; HTTP statuses are left to the caller.
   */
  private async registryGet(
    ref: ImageReference,
    endpoint: RegistryEndpoint,
    suffix: string,
    accept: string,
    what: string,
    opts: RequestOptions,
  ): Promise<Response> {
    const url = new URL(`${endpoint.url}/${ref.path}/${suffix}`);
    const scope = `repository:${ref.path}:pull`;
    const hosts = [new URL(endpoint.url).host];
    if (!endpoint.isMirror) hosts.push(ref.domain);
    const creds = credentialsFor(opts.auth, hosts);

    const request = this.authRequester(endpoint);
    let authorization = await tokenStep(what, () => this.authorizer.header(endpoint.url, scope, creds, request, what, opts.signal));
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { accept };
      if (authorization !== undefined) headers['authorization'] = authorization;
      let res: Response;
      try {
        res = await this.send(url, { method: 'GET', headers, signal: opts.signal, endpoint, endpointHeaders: true, followRedirects: true });
      } catch (err) {
        throw toRegistryError(err, what);
      }
      if (res.status !== 401 || attempt > 0) return res;
      await readErrorBody(res.body);
      const rejected = authorization;
      authorization = await tokenStep(what, () =>
        this.authorizer.onUnauthorized(endpoint.url, res.headers['www-authenticate'], scope, creds, rejected, request, what, opts.signal),
      );
    }
  }

  /**
   * One HTTP exchange, following redirects. Resolves when the response headers arrive; the
   * body stays a stream. Retries once when a reused keep-alive socket turns out to have been
   * closed by the server, which is safe for the idempotent requests made here.
   */
  private async send(url: URL, init: SendInit): Promise<Response> {
    let current = url;
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...init.headers };
      if (current.origin !== origin) {
        // Blob storage behind a redirect gets its own (signed URL) credentials.
        delete headers['authorization'];
      }
      let res: Response;
      try {
        res = await this.exchange(current, init, headers, current.origin === origin);
      } catch (err) {
        if ((err as { reusedSocket?: boolean }).reusedSocket) {
          res = await this.exchange(current, init, headers, current.origin === origin);
        } else {
          throw err;
        }
      }
      const location = headerValue(res.headers, 'location');
      if (!init.followRedirects || res.status < 300 || res.status > 399 || res.status === 304 || location === undefined) {
        return res;
      }
      res.body.resume();
      if (hop >= MAX_REDIRECTS) {
        throw new RegistryUnavailableError(`${url.href}: more than ${MAX_REDIRECTS} redirects`);
      }
      current = new URL(location, current);
      if (res.status === 303) init = { ...init, method: 'GET', body: undefined };
    }
  }

  private async exchange(url: URL, init: SendInit, headers: Record<string, string>, sameOrigin: boolean): Promise<Response> {
    // Redirect targets elsewhere (blob storage) get neither the endpoint's headers nor its
    // TLS settings: those were configured for the registry, not for a CDN.
    const endpoint = sameOrigin ? init.endpoint : undefined;
    const signal = init.signal;
    const cancelled = (): CancelledError => new CancelledError(`request to ${url.origin}${url.pathname} cancelled`);
    if (signal?.aborted) throw cancelled();
    const allHeaders: Partial<Record<string, string | string[]>> = { ...headers };
    if (endpoint !== undefined && init.endpointHeaders) {
      for (const [k, v] of Object.entries(endpoint.headers)) {
        if (allHeaders[k.toLowerCase()] === undefined) allHeaders[k] = v;
      }
    }
    if (init.body !== undefined) allHeaders['content-length'] = String(Buffer.byteLength(init.body));
    const agent = await this.agentFor(url, endpoint);
    const mod = url.protocol === 'https:' ? https : http;

    return new Promise<Response>((resolve, reject) => {
      const req = mod.request(url, { method: init.method, headers: allHeaders, agent });
      let response: http.IncomingMessage | undefined;
      const onAbort = (): void => {
        const err = cancelled();
        if (response !== undefined) response.destroy(err);
        req.destroy(err);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const detach = (): void => signal?.removeEventListener('abort', onAbort);

      req.setTimeout(this.idleTimeoutMs, () => {
        const err = new IdleTimeoutError(`no data from ${url.origin} for ${Math.round(this.idleTimeoutMs / 1000)}s`);
        if (response !== undefined) response.destroy(err);
        req.destroy(err);
      });
      req.on('error', (err) => {
        detach();
        if (signal?.aborted) {
          reject(cancelled());
          return;
        }
        (err as { reusedSocket?: boolean }).reusedSocket = req.reusedSocket && response === undefined && (err as NodeJS.ErrnoException).code === 'ECONNRESET';
        reject(err);
      });
      req.on('response', (res) => {
        response = res;
        res.once('close', detach);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, url });
      });
      req.end(init.body);
    });
  }

  private agentFor(url: URL, endpoint: RegistryEndpoint | undefined): Promise<http.Agent> {
    if (url.protocol !== 'https:') return Promise.resolve(this.plainAgent);
    const key = endpoint === undefined ? 'default' : JSON.stringify([endpoint.skipVerify, endpoint.ca ?? [], endpoint.clientCerts ?? []]);
    let agent = this.agents.get(key);
    if (agent === undefined) {
      agent = makeHttpsAgent(endpoint);
      // A CA file that could not be read should be retried on the next pull, not cached.
      agent.catch(() => this.agents.delete(key));
      this.agents.set(key, agent);
    }
    return agent;
  }
}

async function readConfigFile(p: string, what: string, endpoint: RegistryEndpoint): Promise<Buffer> {
  try {
    return await fs.readFile(p);
  } catch (err) {
    throw new FailedPreconditionError(`cannot read ${what} ${p} for registry endpoint ${endpoint.url}: ${messageOf(err)}`, { cause: err });
  }
}

async function makeHttpsAgent(endpoint: RegistryEndpoint | undefined): Promise<http.Agent> {
  const options: https.AgentOptions = { keepAlive: true };
  if (endpoint !== undefined) {
    if (endpoint.skipVerify) options.rejectUnauthorized = false;
    if (endpoint.ca !== undefined && endpoint.ca.length > 0) {
      // `ca` replaces Node's bundled roots; hosts.toml adds to them.
      const extra = await Promise.all(endpoint.ca.map((p) => readConfigFile(p, 'CA file', endpoint)));
      options.ca = [...tls.rootCertificates, ...extra.map((b) => b.toString('utf8'))];
    }
    if (endpoint.clientCerts !== undefined && endpoint.clientCerts.length > 0) {
      const certs: Buffer[] = [];
      const keys: Buffer[] = [];
      for (const pair of endpoint.clientCerts) {
        const cert = await readConfigFile(pair.cert, 'client certificate', endpoint);
        certs.push(cert);
        keys.push(pair.key !== undefined ? await readConfigFile(pair.key, 'client key', endpoint) : cert);
      }
      options.cert = certs;
      options.key = keys;
    }
  }
  return new https.Agent(options);
}

/** Maps a non-success status of a single request to the domain error. */
async function statusError(res: Response, what: string, endpoint: RegistryEndpoint): Promise<Error> {
  const detail = errorDetail(await readErrorBody(res.body));
  const suffix = detail ? `: ${detail}` : '';
  switch (res.status) {
    case 404:
      return new NotFoundError(`${what}: not found${suffix}`);
    case 401:
    case 403:
      return registryAuthError(res.status, what, detail);
    case 429:
      return new RegistryUnavailableError(`${what}: too many requests (HTTP 429) from ${endpoint.url}${suffix}`);
    default:
      if (res.status >= 500) {
        return new RegistryUnavailableError(`${what}: HTTP ${res.status} from ${endpoint.url}${suffix}`);
      }
      return new CriError(`${what}: unexpected HTTP ${res.status} from ${endpoint.url}${suffix}`);
  }
}

/**
 * One error for a resolve that failed everywhere. An answer from a registry outranks
 * silence: a credential problem first (the user must act), then "not found", and only when
 * no endpoint answered at all is the registry unavailable.
 */
function resolveError(name: string, attempts: Attempt[]): Error {
  const prefix = `failed to resolve image "${name}"`;
  const tried = attempts.map((a) => a.url).join(', ');
  // The per-endpoint messages start with the image name too; say it once.
  const inner = (e: Error): string => e.message.replace(/^RegistryUnavailable: /, '').replace(`image "${name}": `, '');
  const auth = attempts.find((a) => a.error instanceof UnauthenticatedError || a.error instanceof PermissionDeniedError);
  if (auth !== undefined) {
    const Ctor = auth.error instanceof PermissionDeniedError ? PermissionDeniedError : UnauthenticatedError;
    return new Ctor(`${prefix}: ${inner(auth.error)}`, { cause: auth.error });
  }
  if (attempts.length > 0 && attempts.every((a) => a.error instanceof NotFoundError || a.error instanceof RegistryUnavailableError)) {
    if (attempts.some((a) => a.error instanceof NotFoundError)) {
      return new NotFoundError(`${prefix}: not found (tried ${tried})`, { cause: attempts[attempts.length - 1].error });
    }
    const reasons = attempts.map((a) => inner(a.error)).join('; ');
    return new RegistryUnavailableError(`${prefix}: no registry endpoint reachable (tried ${tried}): ${reasons}`, {
      cause: attempts[0].error,
    });
  }
  const other = attempts.find((a) => !(a.error instanceof NotFoundError || a.error instanceof RegistryUnavailableError));
  if (other === undefined) throw new Error(`${prefix}: no registry endpoint was tried`);
  const msg = inner(other.error);
  const err = other.error instanceof CriError ? (other.error.constructor as new (m: string, o?: { cause?: unknown }) => Error) : CriError;
  return new err(`${prefix}: ${msg}`, { cause: other.error });
}
