import { test } from 'node:test';
import { tempDir } from '../helpers/unit';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { CancelledError, NotFoundError, PermissionDeniedError, RegistryUnavailableError, UnauthenticatedError } from '../../src/errors';
import { parseReference } from '../../src/image/reference';
import { parseChallenges } from '../../src/image/registry/auth';
import { MediaType } from '../../src/image/manifest';
import { DigestMismatchError, RegistryClient } from '../../src/image/registry/client';

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Served {
  server: http.Server;
  url: string;
  host: string;
  requests: Array<{ method: string; url: string; authorization?: string; body: string; headers: http.IncomingHttpHeaders }>;
  close(): Promise<void>;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string, self: Served) => void;

async function serve(handler: Handler): Promise<Served> {
  const served = { requests: [] } as unknown as Served;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      served.requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        authorization: req.headers.authorization,
        body,
        headers: req.headers,
      });
      handler(req, res, body, served);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  served.server = server;
  served.host = `127.0.0.1:${port}`;
  served.url = `http://127.0.0.1:${port}`;
  served.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return served;
}

const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256('{}'), size: 2 },
    layers: [],
  }),
);
const manifestDigest = sha256(manifest);
const blob = Buffer.from('layer bytes '.repeat(1000));
const blobDigest = sha256(blob);

interface RegistryBehaviour {
  /** 'bearer' (token service at /token), 'basic', or none. */
  auth?: 'bearer' | 'basic';
  /** Basic credentials the token service (or basic auth) insists on; anonymous allowed when absent. */
  user?: { username: string; password: string };
  identityToken?: string;
  expiresIn?: number;
  repos?: Record<string, Buffer>;
  contentDigestHeader?: (body: Buffer) => string | undefined;
  contentType?: string;
  status?: number;
  blobRedirect?: string;
  delayMs?: number;
}

function errorJson(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message, detail: null }] });
}

/** A v2 registry that serves `repos` (path → manifest), optionally behind token or basic auth. */
function registry(b: RegistryBehaviour): Handler {
  let issued = 0;
  return (req, res, body, self) => {
    const u = new URL(req.url ?? '/', self.url);
    const basicOk = (header: string | undefined): boolean => {
      if (!b.user) return true;
      const want = `Basic ${Buffer.from(`${b.user.username}:${b.user.password}`).toString('base64')}`;
      return header === want;
    };
    if (u.pathname === '/token') {
      if (req.method === 'POST') {
        const form = new URLSearchParams(body);
        if (form.get('grant_type') !== 'refresh_token' || form.get('refresh_token') !== b.identityToken || form.get('client_id') !== 'tscri') {
          res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_grant' }));
          return;
        }
        issued++;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: `tok-${issued}`, expires_in: b.expiresIn }));
        return;
      }
      if (!basicOk(req.headers.authorization)) {
        res.writeHead(401, { 'content-type': 'application/json' }).end(errorJson('UNAUTHORIZED', 'bad credentials'));
        return;
      }
      issued++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `tok-${issued}`, expires_in: b.expiresIn }));
      return;
    }
    if (u.pathname.startsWith('/v2/')) {
      const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(u.pathname);
      const scope = m ? `repository:${m[1]}:pull` : '';
      if (b.auth === 'bearer' && !/^Bearer tok-\d+$/.test(req.headers.authorization ?? '') && req.headers.authorization !== 'Bearer direct-registry-token') {
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': `Bearer realm="${self.url}/token",service="test, registry",scope="${scope}"`,
        });
        res.end(errorJson('UNAUTHORIZED', 'authentication required'));
        return;
      }
      if (b.auth === 'basic' && (!req.headers.authorization || !basicOk(req.headers.authorization))) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="test"', 'content-type': 'application/json' });
        res.end(errorJson('UNAUTHORIZED', 'authentication required'));
        return;
      }
      const send = (): void => {
        if (b.status !== undefined) {
          res.writeHead(b.status, { 'content-type': 'application/json' }).end(errorJson('DENIED', `status ${b.status}`));
          return;
        }
        if (!m) {
          res.writeHead(200).end('{}');
          return;
        }
        const [, repo, kind, ref] = m;
        if (kind === 'blobs') {
          if (ref !== blobDigest) {
            res.writeHead(404, { 'content-type': 'application/json' }).end(errorJson('BLOB_UNKNOWN', 'blob unknown to registry'));
          } else if (b.blobRedirect) {
            res.writeHead(307, { location: `${b.blobRedirect}/storage/${ref}?sig=x` }).end();
          } else {
            res.writeHead(200, { 'content-length': blob.length }).end(blob);
          }
          return;
        }
        const doc = b.repos?.[repo];
        if (doc === undefined || (ref.startsWith('sha256:') && ref !== sha256(doc) && ref !== '*')) {
          res.writeHead(404, { 'content-type': 'application/json' }).end(errorJson('MANIFEST_UNKNOWN', 'manifest unknown'));
          return;
        }
        const headers: Record<string, string> = { 'content-type': b.contentType ?? MediaType.ociManifest };
        const dcd = b.contentDigestHeader ? b.contentDigestHeader(doc) : sha256(doc);
        if (dcd !== undefined) headers['docker-content-digest'] = dcd;
        res.writeHead(200, headers).end(doc);
      };
      if (b.delayMs) setTimeout(send, b.delayMs);
      else send();
      return;
    }
    res.writeHead(404).end();
  };
}

function hostsDir(host: string, toml: string): string {
  const root = tempDir('tscri-regclient-');
  fs.mkdirSync(path.join(root, host));
  fs.writeFileSync(path.join(root, host, 'hosts.toml'), toml);
  return root;
}

async function withClient<T>(opts: { configDir?: string }, fn: (c: RegistryClient) => Promise<T>): Promise<T> {
  const c = new RegistryClient({ configDir: opts.configDir ?? '', insecureHosts: [] });
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

test('WWW-Authenticate parsing: quoted commas, escapes, several challenges', () => {
  const got = parseChallenges(
    'Bearer realm="https://auth.example.com/token?a=1,b=2",service="registry, docker",scope="repository:a/b:pull,push", ' +
      'Basic realm="say \\"hi\\"", Negotiate',
  );
  assert.deepEqual(got, [
    {
      scheme: 'bearer',
      params: { realm: 'https://auth.example.com/token?a=1,b=2', service: 'registry, docker', scope: 'repository:a/b:pull,push' },
    },
    { scheme: 'basic', params: { realm: 'say "hi"' } },
    { scheme: 'negotiate', params: {} },
  ]);
  assert.deepEqual(parseChallenges(['Basic realm=x', 'BEARER Realm=y , error=insufficient_scope']), [
    { scheme: 'basic', params: { realm: 'x' } },
    { scheme: 'bearer', params: { realm: 'y', error: 'insufficient_scope' } },
  ]);
  assert.deepEqual(parseChallenges(''), []);
});

test('anonymous token flow: 401 challenge, token, manifest; the token is cached', async () => {
  const reg = await serve(registry({ auth: 'bearer', repos: { 'team/app': manifest } }));
  try {
    await withClient({}, async (c) => {
      const ref = parseReference(`${reg.host}/team/app:v1`);
      const r = await c.resolve(ref);
      assert.equal(r.digest, manifestDigest);
      assert.equal(r.mediaType, MediaType.ociManifest);
      assert.deepEqual(r.body, manifest);
      assert.equal(r.endpoint.url, `${reg.url}/v2`);
      const tokenReq = reg.requests.find((q) => q.url.startsWith('/token'));
      assert.ok(tokenReq, 'a token was requested');
      const tu = new URL(tokenReq.url, reg.url);
      assert.equal(tu.searchParams.get('service'), 'test, registry');
      assert.deepEqual(tu.searchParams.getAll('scope'), ['repository:team/app:pull']);
      assert.equal(tokenReq.authorization, undefined, 'anonymous token requests carry no credentials');
      const manifestReq = reg.requests.find((q) => q.url.includes('/manifests/'));
      assert.ok(manifestReq, 'a manifest was requested');
      const accept = manifestReq.headers.accept ?? '';
      for (const t of [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerList, MediaType.dockerManifest]) {
        assert.ok(accept.includes(t), `Accept lists ${t}: ${accept}`);
      }

      const before = reg.requests.length;
      const again = await c.fetchManifest(ref, manifestDigest, r.endpoint);
      assert.deepEqual(again.body, manifest);
      assert.deepEqual(
        reg.requests.slice(before).map((q) => q.url),
        [`/v2/team/app/manifests/${manifestDigest}`],
        'the second request goes straight through with the cached token',
      );
      assert.match(reg.requests[reg.requests.length - 1].authorization ?? '', /^Bearer tok-1$/);
    });
  } finally {
    await reg.close();
  }
});

test('token service with credentials: basic auth from username/password or the auth field', async () => {
  const user = { username: 'alice', password: 'p:ss' };
  const reg = await serve(registry({ auth: 'bearer', user, repos: { app: manifest } }));
  try {
    const ref = parseReference(`${reg.host}/app:v1`);
    await withClient({}, async (c) => {
      await assert.rejects(c.resolve(ref), (err: unknown) => {
        assert.ok(err instanceof UnauthenticatedError, String(err));
        assert.match(err.message, /failed to resolve image ".*app:v1"/);
        assert.match(err.message, /bad credentials/, 'the token service message is kept');
        return true;
      });
      assert.equal((await c.resolve(ref, { auth: { username: 'alice', password: 'p:ss' } })).digest, manifestDigest);
    });
    await withClient({}, async (c) => {
      const auth = { auth: Buffer.from('alice:p:ss').toString('base64'), server_address: reg.host };
      assert.equal((await c.resolve(ref, { auth })).digest, manifestDigest);
    });
    await withClient({}, async (c) => {
      // Credentials filed under another registry are not sent here.
      const auth = { username: 'alice', password: 'p:ss', server_address: 'https://other.example.com/v1/' };
      await assert.rejects(c.resolve(ref, { auth }), UnauthenticatedError);
    });
  } finally {
    await reg.close();
  }
});

test('identity_token uses the OAuth2 refresh-token POST; registry_token is used as is', async () => {
  const reg = await serve(registry({ auth: 'bearer', identityToken: 'refresh-me', repos: { app: manifest } }));
  try {
    const ref = parseReference(`${reg.host}/app`);
    await withClient({}, async (c) => {
      await c.resolve(ref, { auth: { identity_token: 'refresh-me' } });
      const post = reg.requests.find((q) => q.method === 'POST');
      assert.ok(post, 'a POST went to the realm');
      const form = new URLSearchParams(post.body);
      assert.equal(form.get('grant_type'), 'refresh_token');
      assert.equal(form.get('service'), 'test, registry');
      assert.equal(form.get('scope'), 'repository:app:pull');
      assert.equal(form.get('client_id'), 'tscri');
    });
    await withClient({}, async (c) => {
      const n = reg.requests.filter((q) => q.url.startsWith('/token')).length;
      await c.resolve(ref, { auth: { registry_token: 'direct-registry-token' } });
      assert.equal(reg.requests.filter((q) => q.url.startsWith('/token')).length, n, 'no token request');
      assert.equal(reg.requests[reg.requests.length - 1].authorization, 'Bearer direct-registry-token');
    });
  } finally {
    await reg.close();
  }
});

test('Basic challenge: credentials sent as basic auth; none given is Unauthenticated', async () => {
  const reg = await serve(registry({ auth: 'basic', user: { username: 'bob', password: 'pw' }, repos: { app: manifest } }));
  try {
    const ref = parseReference(`${reg.host}/app`);
    await withClient({}, async (c) => {
      await assert.rejects(c.resolve(ref), /no credentials were given/);
      assert.equal((await c.resolve(ref, { auth: { username: 'bob', password: 'pw' } })).digest, manifestDigest);
    });
    await withClient({}, async (c) => {
      await assert.rejects(c.resolve(ref, { auth: { username: 'bob', password: 'wrong' } }), UnauthenticatedError);
    });
  } finally {
    await reg.close();
  }
});

test('tokens expire after expires_in', async () => {
  const reg = await serve(registry({ auth: 'bearer', expiresIn: 1, repos: { app: manifest } }));
  try {
    await withClient({}, async (c) => {
      const ref = parseReference(`${reg.host}/app`);
      await c.resolve(ref);
      await c.resolve(ref);
      assert.equal(reg.requests.filter((q) => q.url.startsWith('/token')).length, 1);
      await new Promise((r) => setTimeout(r, 1100));
      await c.resolve(ref);
      assert.equal(reg.requests.filter((q) => q.url.startsWith('/token')).length, 2);
    });
  } finally {
    await reg.close();
  }
});

test('digest checks: a wrong Docker-Content-Digest or a body that does not match the pinned digest', async () => {
  const wrong = `sha256:${'0'.repeat(64)}`;
  const reg = await serve(registry({ repos: { app: manifest }, contentDigestHeader: () => wrong }));
  try {
    await withClient({}, async (c) => {
      await assert.rejects(c.resolve(parseReference(`${reg.host}/app:v1`)), (err: unknown) => {
        assert.ok(err instanceof DigestMismatchError, String(err));
        assert.match(err.message, /digest mismatch/);
        assert.ok(err.message.includes(wrong) && err.message.includes(manifestDigest), err.message);
        return true;
      });
    });
  } finally {
    await reg.close();
  }
  // A server that answers any digest with the same document.
  const liar = await serve((req, res) => {
    res.writeHead(200, { 'content-type': MediaType.ociManifest }).end(manifest);
  });
  try {
    await withClient({}, async (c) => {
      const pinned = `sha256:${'1'.repeat(64)}`;
      await assert.rejects(c.resolve(parseReference(`${liar.host}/app@${pinned}`)), /digest mismatch: requested sha256:1{64}/);
      const r = await c.resolve(parseReference(`${liar.host}/app:v1`));
      await assert.rejects(c.fetchManifest(parseReference(`${liar.host}/app`), pinned, r.endpoint), DigestMismatchError);
    });
  } finally {
    await liar.close();
  }
});

test('media type falls back to the document when Content-Type is generic', async () => {
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] }));
  const reg = await serve(registry({ repos: { a: manifest, b: index }, contentType: 'application/json', contentDigestHeader: () => undefined }));
  try {
    await withClient({}, async (c) => {
      assert.equal((await c.resolve(parseReference(`${reg.host}/a`))).mediaType, MediaType.ociManifest);
      assert.equal((await c.resolve(parseReference(`${reg.host}/b`))).mediaType, MediaType.ociIndex);
    });
  } finally {
    await reg.close();
  }
});

test('mirrors: a 404 or an unreachable mirror falls through to the next endpoint', async () => {
  const emptyMirror = await serve(registry({ repos: {} }));
  const upstream = await serve(registry({ repos: { 'library/busybox': manifest } }));
  const dead = await serve(registry({}));
  await dead.close();
  try {
    const dir = hostsDir(
      'docker.io',
      [
        `server = "${upstream.url}"`,
        `[host."${dead.url}"]`,
        '  capabilities = ["pull", "resolve"]',
        `[host."${emptyMirror.url}"]`,
        '  capabilities = ["pull", "resolve"]',
        '  [host."' + emptyMirror.url + '".header]',
        '    x-mirror = "yes"',
        `[host."${upstream.url}/pull-only"]`,
        '  capabilities = ["pull"]',
      ].join('\n'),
    );
    await withClient({ configDir: dir }, async (c) => {
      const r = await c.resolve(parseReference('busybox'));
      assert.equal(r.digest, manifestDigest);
      assert.equal(r.endpoint.url, `${upstream.url}/v2`);
      assert.equal(r.endpoint.isMirror, false);
      assert.deepEqual(
        emptyMirror.requests.map((q) => q.url),
        ['/v2/library/busybox/manifests/latest'],
      );
      assert.equal(emptyMirror.requests[0].headers['x-mirror'], 'yes', 'hosts.toml headers are sent');
      assert.ok(!upstream.requests.some((q) => q.url.startsWith('/pull-only')), 'a pull-only mirror is not used to resolve');
    });
  } finally {
    await emptyMirror.close();
    await upstream.close();
  }
});

test('not found everywhere is NotFound; 5xx and refused connections are RegistryUnavailable', async () => {
  const a = await serve(registry({ repos: {} }));
  const b = await serve(registry({ repos: {} }));
  const broken = await serve(registry({ status: 503 }));
  try {
    const dir = hostsDir('example.test', `server = "${b.url}"\n[host."${a.url}"]\n`);
    await withClient({ configDir: dir }, async (c) => {
      await assert.rejects(c.resolve(parseReference('example.test/nope:1')), (err: unknown) => {
        assert.ok(err instanceof NotFoundError, String(err));
        assert.match(err.message, /^failed to resolve image "example\.test\/nope:1": not found/);
        return true;
      });
    });
    await withClient({}, async (c) => {
      await assert.rejects(c.resolve(parseReference(`${broken.host}/x`)), (err: unknown) => {
        assert.ok(err instanceof RegistryUnavailableError, String(err));
        assert.match(err.message, /^RegistryUnavailable: /);
        assert.match(err.message, /HTTP 503/);
        return true;
      });
    });
  } finally {
    await a.close();
    await b.close();
    await broken.close();
  }
  const gone = await serve(registry({}));
  await gone.close();
  const other = await serve(registry({}));
  await other.close();
  const dir = hostsDir('example.test', `server = "${gone.url}"\n[host."${other.url}"]\n`);
  await withClient({ configDir: dir }, async (c) => {
    await assert.rejects(c.resolve(parseReference('example.test/app:1')), (err: unknown) => {
      assert.ok(err instanceof RegistryUnavailableError, String(err));
      assert.match(err.message, /^RegistryUnavailable: failed to resolve image "example\.test\/app:1"/);
      assert.ok(err.message.includes(`${gone.url}/v2`) && err.message.includes(`${other.url}/v2`), `names both endpoints: ${err.message}`);
      assert.match(err.message, /ECONNREFUSED/);
      return true;
    });
  });
});

test('403 from the registry is PermissionDenied with its message', async () => {
  const reg = await serve(registry({ status: 403 }));
  try {
    await withClient({}, async (c) => {
      await assert.rejects(c.resolve(parseReference(`${reg.host}/x`)), (err: unknown) => {
        assert.ok(err instanceof PermissionDeniedError, String(err));
        assert.match(err.message, /DENIED: status 403/);
        return true;
      });
    });
  } finally {
    await reg.close();
  }
});

test('fetchBlob streams, follows a redirect to storage and drops Authorization there', async () => {
  const storage = await serve((req, res) => {
    res.writeHead(200, { 'content-length': blob.length }).end(blob);
  });
  const reg = await serve(registry({ auth: 'bearer', repos: { app: manifest }, blobRedirect: storage.url }));
  try {
    await withClient({}, async (c) => {
      const ref = parseReference(`${reg.host}/app`);
      const { endpoint } = await c.resolve(ref);
      const stream = await c.fetchBlob(ref, blobDigest, endpoint);
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      assert.equal(sha256(Buffer.concat(chunks)), blobDigest);
      assert.match(reg.requests[reg.requests.length - 1].authorization ?? '', /^Bearer /);
      assert.equal(storage.requests.length, 1);
      assert.equal(storage.requests[0].url, `/storage/${blobDigest}?sig=x`);
      assert.equal(storage.requests[0].authorization, undefined, 'no registry token sent to storage');

      await assert.rejects(c.fetchBlob(ref, `sha256:${'2'.repeat(64)}`, endpoint), (err: unknown) => {
        assert.ok(err instanceof NotFoundError, String(err));
        assert.match(err.message, /BLOB_UNKNOWN/);
        return true;
      });
    });
  } finally {
    await reg.close();
    await storage.close();
  }
});

test('manifests above 4 MiB are refused', async () => {
  const huge = Buffer.alloc(5 * 1024 * 1024, 0x20);
  const reg = await serve(registry({ repos: { big: huge } }));
  try {
    await withClient({}, async (c) => {
      await assert.rejects(c.resolve(parseReference(`${reg.host}/big`)), /exceeds the 4194304-byte limit/);
    });
  } finally {
    await reg.close();
  }
});

test('an aborted request is Cancelled, before headers and mid-stream', async () => {
  const slow = await serve(registry({ repos: { app: manifest }, delayMs: 2000 }));
  try {
    await withClient({}, async (c) => {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      const started = Date.now();
      await assert.rejects(c.resolve(parseReference(`${slow.host}/app`), { signal: ac.signal }), CancelledError);
      assert.ok(Date.now() - started < 1500, 'the abort did not wait for the server');
    });
  } finally {
    await slow.close();
  }
  const trickle = await serve((req, res) => {
    res.writeHead(200, { 'content-length': 1_000_000 });
    res.write(Buffer.alloc(1000));
  });
  try {
    await withClient({}, async (c) => {
      const ref = parseReference(`${trickle.host}/app`);
      const ac = new AbortController();
      const stream = await c.fetchBlob(ref, blobDigest, (await c.endpoints(ref))[0], { signal: ac.signal });
      setTimeout(() => ac.abort(), 50);
      await assert.rejects(
        (async () => {
          let bytes = 0;
          for await (const chunk of stream) bytes += (chunk as Buffer).length;
          return bytes;
        })(),
        CancelledError,
      );
    });
  } finally {
    await trickle.close();
  }
});
