import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const REGISTRY_BIN = '/usr/bin/docker-registry';

export interface RegistryOptions {
  /** Protect the registry with distribution's token auth; a token server runs in this process. */
  tokenAuth?: { username: string; password: string };
}

export interface Registry {
  /** `127.0.0.1:<port>`, as it appears in image references. */
  host: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The filesystem driver's root directory (docker/registry/v2/... lies under it). */
  storageDir: string;
  /** Where a blob's bytes live on disk, for tests that tamper with what the registry serves. */
  blobDataPath(digest: string): string;
  /** Token server URL and credentials when tokenAuth was asked for. */
  auth?: { realm: string; service: string; username: string; password: string };
  logs(): string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** A port that was free a moment ago on 127.0.0.1 (closed again, so also good as an unreachable port). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address() as net.AddressInfo;
      srv.close(() => resolve(addr.port));
    });
  });
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

interface TokenServer {
  realm: string;
  server: http.Server;
}

type Access = { type: string; name: string; actions: string[] };

/** Parses `repository:name:pull,push` scopes; names may contain ':' only before the last one. */
function parseScope(scope: string): Access | undefined {
  const last = scope.lastIndexOf(':');
  const first = scope.indexOf(':');
  if (first < 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(',')
      .filter(Boolean),
  };
}

async function startTokenServer(
  creds: { username: string; password: string },
  service: string,
  issuer: string,
  keyPem: string,
  certPem: string,
): Promise<TokenServer> {
  const x5c = [new crypto.X509Certificate(certPem).raw.toString('base64')];
  const key = crypto.createPrivateKey(keyPem);

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let authenticated = false;
    const header = req.headers.authorization;
    if (header !== undefined) {
      const m = /^Basic\s+(.+)$/i.exec(header);
      const decoded = m ? Buffer.from(m[1], 'base64').toString('utf8') : '';
      const sep = decoded.indexOf(':');
      if (sep < 0 || decoded.slice(0, sep) !== creds.username || decoded.slice(sep + 1) !== creds.password) {
        // Wrong credentials are refused outright, as Docker Hub's auth server does, so a client
        // can tell a bad password from a missing one.
        res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ details: 'invalid username or password' }));
        return;
      }
      authenticated = true;
    }
    const access: Access[] = [];
    if (authenticated) {
      for (const scope of url.searchParams.getAll('scope').flatMap((s) => s.split(' '))) {
        const a = parseScope(scope);
        if (a && a.type === 'repository') {
          access.push({ ...a, actions: a.actions.filter((x) => x === 'pull' || x === 'push') });
        }
      }
    }
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      sub: authenticated ? creds.username : '',
      aud: url.searchParams.get('service') ?? service,
      // A little slack backwards so that clock granularity never makes a fresh token "not yet valid".
      nbf: now - 10,
      iat: now - 10,
      exp: now + 300,
      jti: crypto.randomUUID(),
      access,
    };
    const head = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c }));
    const body = b64url(JSON.stringify(claims));
    const sig = crypto.sign('sha256', Buffer.from(`${head}.${body}`), key).toString('base64url');
    const token = `${head}.${body}.${sig}`;
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date(now * 1000).toISOString() }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return { realm: `http://127.0.0.1:${port}/token`, server };
}

async function waitHttp(url: string, proc: ChildProcess, logs: () => string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`docker-registry exited (${proc.exitCode ?? proc.signalCode}) before serving ${url}; log:\n${logs()}`);
    }
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      // 401 is the token-protected registry telling us where to get a token: it is up.
      if (res.status === 200 || res.status === 401) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = String(err);
    }
    if (Date.now() > until) throw new Error(`docker-registry did not serve ${url} within ${timeoutMs} ms (${last}); log:\n${logs()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs Debian's docker-registry (distribution 2.8) on 127.0.0.1 with storage in a temp dir. */
export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  if (!fs.existsSync(REGISTRY_BIN)) throw new Error(`${REGISTRY_BIN} is missing: apt-get install docker-registry (test/run.js does this)`);
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-registry-'));
  const storageDir = path.join(base, 'storage');
  fs.mkdirSync(storageDir);
  let tokens: TokenServer | undefined;
  let proc: ChildProcess | undefined;
  let log = '';
  const cleanup = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const p = proc;
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGTERM');
      const timer = setTimeout(() => p.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    if (tokens) {
      const t = tokens;
      t.server.closeAllConnections();
      await new Promise<void>((r) => t.server.close(() => r()));
    }
    fs.rmSync(base, { recursive: true, force: true });
  };

  try {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    // storage.cache is left out on purpose: with no blob descriptor cache, a test that rewrites
    // a blob file on disk gets those bytes served back.
    const lines = [
      'version: 0.1',
      'log:',
      '  level: info',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storageDir}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: ${host}`,
      `  secret: ${crypto.randomBytes(16).toString('hex')}`,
    ];
    let auth: Registry['auth'];
    if (opts.tokenAuth) {
      const keyFile = path.join(base, 'token.key');
      const certFile = path.join(base, 'token.crt');
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=tscri-test-token-issuer'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      const service = `tscri-test-registry-${port}`;
      const issuer = 'tscri-test-token-issuer';
      tokens = await startTokenServer(opts.tokenAuth, service, issuer, fs.readFileSync(keyFile, 'utf8'), fs.readFileSync(certFile, 'utf8'));
      lines.push('auth:', '  token:', `    realm: ${tokens.realm}`, `    service: ${service}`, `    issuer: ${issuer}`, `    rootcertbundle: ${certFile}`);
      auth = { realm: tokens.realm, service, ...opts.tokenAuth };
    }
    const configFile = path.join(base, 'config.yml');
    fs.writeFileSync(configFile, lines.join('\n') + '\n');

    const child = spawn(REGISTRY_BIN, ['serve', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = child;
    live.add(child);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (log += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
    child.once('exit', () => live.delete(child));
    await waitHttp(`http://${host}/v2/`, child, () => log);

    return {
      host,
      url: `http://${host}`,
      storageDir,
      blobDataPath(digest: string) {
        const hex = digest.replace(/^sha256:/, '');
        return path.join(storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
      },
      auth,
      logs: () => log,
      stop: cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
