import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import * as tar from 'tar-stream';

export type TarHeader = Partial<tar.Header> & { name: string };

export type Compression = 'gzip' | 'zstd' | 'none';

interface EntryBase {
  /** Path inside the layer, without a leading slash (`bin/sh`, `data/`). */
  path: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

export type LayerEntry =
  | (EntryBase & { type: 'file'; content: string | Buffer })
  | (EntryBase & { type: 'dir' })
  | (EntryBase & { type: 'symlink'; target: string })
  | (EntryBase & { type: 'hardlink'; target: string })
  /** Deletes `path` from lower layers: written as `<dir>/.wh.<name>`. */
  | { type: 'whiteout'; path: string }
  /** Hides everything lower layers have under directory `path`: written as `<path>/.wh..wh..opq`. */
  | { type: 'opaque'; path: string }
  /** A header written exactly as given, for names no well-behaved tool would produce (`../escape`). */
  | { type: 'raw'; header: TarHeader; content?: Buffer };

export interface LayerSpec {
  entries: LayerEntry[];
  compression?: Compression;
}

export interface BuiltLayer {
  mediaType: string;
  /** The bytes pushed to the registry. */
  blob: Buffer;
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar, as listed in the config's rootfs.diff_ids. */
  diffId: string;
  compression: Compression;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageConfigSpec {
  User?: string;
  Env?: string[];
  Cmd?: string[];
  Entrypoint?: string[];
  WorkingDir?: string;
  Labels?: Record<string, string>;
}

export interface RegistryAuth {
  username: string;
  password: string;
}

/** 'oci' writes OCI media types; 'docker' writes Docker schema 2, which most public images still use. */
export type ManifestFormat = 'oci' | 'docker';

export interface PushImageOptions {
  layers: (LayerSpec | BuiltLayer)[];
  config?: ImageConfigSpec;
  platform?: Platform;
  auth?: RegistryAuth;
  format?: ManifestFormat;
}

export interface PushedImage {
  repo: string;
  /** `<host>/<repo>:<tag>`, or undefined when pushed by digest only. */
  tagRef?: string;
  /** `<host>/<repo>@<manifest digest>` */
  digestRef: string;
  manifestDigest: string;
  /** The digest of the config blob, which CRI uses as the image id. */
  configDigest: string;
  manifest: Buffer;
  manifestMediaType: string;
  config: Buffer;
  layers: BuiltLayer[];
  diffIds: string[];
  chainIds: string[];
}

export interface PushedIndex {
  tagRef: string;
  digestRef: string;
  indexDigest: string;
  images: (PushedImage & { platform: Platform })[];
}

const FIXED_MTIME = new Date('2020-01-01T00:00:00Z');

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export function sha256(data: Buffer | string): string {
  return `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;
}

/** The OCI chain ids of a layer stack: the name of each unpacked layer directory. */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : sha256(`${out[out.length - 1]} ${d}`));
  return out;
}

function entryHeaders(e: LayerEntry): { header: TarHeader; content?: Buffer } {
  const owner = (x: EntryBase) => ({ uid: x.uid ?? 0, gid: x.gid ?? 0, mtime: FIXED_MTIME });
  switch (e.type) {
    case 'file': {
      const content = Buffer.isBuffer(e.content) ? e.content : Buffer.from(e.content);
      return { header: { name: e.path, type: 'file', mode: e.mode ?? 0o644, size: content.length, ...owner(e) }, content };
    }
    case 'dir':
      return { header: { name: e.path.endsWith('/') ? e.path : `${e.path}/`, type: 'directory', mode: e.mode ?? 0o755, ...owner(e) } };
    case 'symlink':
      return { header: { name: e.path, type: 'symlink', linkname: e.target, mode: e.mode ?? 0o777, ...owner(e) } };
    case 'hardlink':
      return { header: { name: e.path, type: 'link', linkname: e.target, mode: e.mode ?? 0o644, ...owner(e) } };
    case 'whiteout': {
      const p = e.path.replace(/\/+$/, '');
      const slash = p.lastIndexOf('/');
      const name = slash < 0 ? `.wh.${p}` : `${p.slice(0, slash)}/.wh.${p.slice(slash + 1)}`;
      return { header: { name, type: 'file', mode: 0o644, size: 0, uid: 0, gid: 0, mtime: FIXED_MTIME }, content: Buffer.alloc(0) };
    }
    case 'opaque': {
      const dir = e.path.replace(/\/+$/, '');
      return { header: { name: `${dir}/.wh..wh..opq`, type: 'file', mode: 0o644, size: 0, uid: 0, gid: 0, mtime: FIXED_MTIME }, content: Buffer.alloc(0) };
    }
    case 'raw':
      return { header: { mtime: FIXED_MTIME, ...e.header, size: e.content?.length ?? e.header.size ?? 0 }, content: e.content };
  }
}

/** The uncompressed tar of a layer. Fixed mtimes make equal specs produce equal digests. */
export async function buildTar(entries: LayerEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    pack.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
  for (const e of entries) {
    const { header, content } = entryHeaders(e);
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (content !== undefined) pack.entry(header, content, cb);
      // Entries without a body (dirs, links) complete on their own.
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  return done;
}

function zstdCompress(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('zstd', ['-q', '-c', '-3'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => reject(new Error(`cannot run zstd (apt-get install zstd): ${e.message}`)));
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`zstd exited ${code}: ${err}`))));
    child.stdin.end(data);
  });
}

export async function compress(data: Buffer, compression: Compression): Promise<Buffer> {
  switch (compression) {
    case 'gzip':
      return zlib.gzipSync(data);
    case 'zstd':
      return zstdCompress(data);
    case 'none':
      return data;
  }
}

export async function buildLayer(spec: LayerSpec): Promise<BuiltLayer> {
  const compression = spec.compression ?? 'gzip';
  const raw = await buildTar(spec.entries);
  const blob = await compress(raw, compression);
  const mediaType = {
    gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
    zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
    none: 'application/vnd.oci.image.layer.v1.tar',
  }[compression];
  return { mediaType, blob, digest: sha256(blob), size: blob.length, diffId: sha256(raw), compression };
}

export const BUSYBOX_PATH = '/bin/busybox';
export const BUSYBOX_APPLETS = ['sh', 'ls', 'cat', 'echo', 'id', 'sleep', 'true', 'false', 'env', 'stat'];

/** Entries for a root with /bin/busybox (the static Debian build) and applet symlinks to it. */
export function busyboxEntries(): LayerEntry[] {
  if (!fs.existsSync(BUSYBOX_PATH)) throw new Error(`${BUSYBOX_PATH} is missing: apt-get install busybox-static (test/run.js does this)`);
  return [
    { type: 'dir', path: 'bin' },
    { type: 'file', path: 'bin/busybox', content: fs.readFileSync(BUSYBOX_PATH), mode: 0o755 },
    ...BUSYBOX_APPLETS.map((a): LayerEntry => ({ type: 'symlink', path: `bin/${a}`, target: 'busybox' })),
    { type: 'dir', path: 'etc' },
    {
      type: 'file',
      path: 'etc/passwd',
      content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n',
    },
    { type: 'file', path: 'etc/group', content: 'root:x:0:\napp:x:1234:\nnogroup:x:65534:\n' },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
  ];
}

const busyboxCache = new Map<Compression, Promise<BuiltLayer>>();

/** The busybox base layer; the same bytes every call, so images built on it share the layer. */
export function busyboxLayer(compression: Compression = 'gzip'): Promise<BuiltLayer> {
  let p = busyboxCache.get(compression);
  if (!p) {
    p = buildLayer({ entries: busyboxEntries(), compression });
    busyboxCache.set(compression, p);
  }
  return p;
}

function isBuilt(l: LayerSpec | BuiltLayer): l is BuiltLayer {
  return 'blob' in l;
}

// ---- registry v2 client --------------------------------------------------------------------

/** A small v2 API client that answers Bearer challenges, enough to push test images. */
export class RegistryClient {
  private readonly tokens = new Map<string, string>();

  constructor(
    readonly host: string,
    private readonly auth?: RegistryAuth,
  ) {}

  private url(p: string): string {
    return p.startsWith('http://') || p.startsWith('https://') ? p : `http://${this.host}${p}`;
  }

  private async token(challenge: string): Promise<string> {
    const params: Record<string, string> = {};
    for (const m of challenge.replace(/^Bearer\s+/i, '').matchAll(/(\w+)="([^"]*)"/g)) params[m[1]] = m[2];
    if (!params.realm) throw new Error(`registry ${this.host} sent a challenge without realm: ${challenge}`);
    const u = new URL(params.realm);
    if (params.service) u.searchParams.set('service', params.service);
    if (params.scope) for (const s of params.scope.split(' ')) u.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (this.auth) headers.authorization = `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')}`;
    const res = await fetch(u, { headers });
    const body = await res.text();
    if (!res.ok) throw new Error(`token server ${u.origin} answered ${res.status}: ${body}`);
    const json = JSON.parse(body) as { token?: string; access_token?: string };
    const t = json.token ?? json.access_token;
    if (!t) throw new Error(`token server ${u.origin} returned no token: ${body}`);
    return t;
  }

  /** One request; on a Bearer challenge, fetches a token for the challenged scope and retries once. */
  async request(method: string, p: string, init: { headers?: Record<string, string>; body?: Buffer; scopeKey?: string } = {}): Promise<Response> {
    const key = init.scopeKey ?? '';
    const send = () => {
      const headers: Record<string, string> = { ...init.headers };
      const t = this.tokens.get(key);
      if (t) headers.authorization = `Bearer ${t}`;
      return fetch(this.url(p), { method, headers, body: init.body, redirect: 'manual' });
    };
    let res = await send();
    const challenge = res.headers.get('www-authenticate');
    if (res.status === 401 && challenge && /^Bearer/i.test(challenge)) {
      await res.arrayBuffer();
      this.tokens.set(key, await this.token(challenge));
      res = await send();
    }
    return res;
  }

  private async expect(res: Response, ok: number[], what: string): Promise<Response> {
    if (!ok.includes(res.status)) throw new Error(`${what} on ${this.host}: HTTP ${res.status}: ${await res.text()}`);
    return res;
  }

  async blobExists(repo: string, digest: string): Promise<boolean> {
    const res = await this.request('HEAD', `/v2/${repo}/blobs/${digest}`, { scopeKey: repo });
    await res.arrayBuffer();
    return res.status === 200;
  }

  /**
   * Uploads a blob through an upload session: 'put' sends all bytes with the closing PUT,
   * 'chunked' sends them in PATCH requests first. Registries must accept both; a pulling
   * client never sees the difference, but the registry's storage path differs.
   */
  async putBlob(repo: string, data: Buffer, opts: { upload?: 'put' | 'chunked'; digest?: string } = {}): Promise<string> {
    const digest = opts.digest ?? sha256(data);
    if (await this.blobExists(repo, digest)) return digest;
    const start = await this.expect(await this.request('POST', `/v2/${repo}/blobs/uploads/`, { scopeKey: repo }), [202], `starting upload of ${digest}`);
    await start.arrayBuffer();
    let location = start.headers.get('location');
    if (!location) throw new Error(`upload of ${digest} to ${this.host}/${repo}: no Location header`);
    let body: Buffer | undefined = data;
    if (opts.upload === 'chunked') {
      const chunk = 256 * 1024;
      for (let off = 0; off < data.length; off += chunk) {
        const part = data.subarray(off, Math.min(off + chunk, data.length));
        const res = await this.request('PATCH', new URL(location, `http://${this.host}`).toString(), {
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(part.length),
            'content-range': `${off}-${off + part.length - 1}`,
          },
          body: part,
          scopeKey: repo,
        });
        await this.expect(res, [202], `uploading bytes ${off}.. of ${digest}`);
        await res.arrayBuffer();
        location = res.headers.get('location') ?? location;
      }
      body = undefined;
    }
    const u = new URL(location, `http://${this.host}`);
    u.searchParams.set('digest', digest);
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'content-length': String(body?.length ?? 0) };
    const res = await this.request('PUT', u.toString(), { headers, body, scopeKey: repo });
    await this.expect(res, [201], `finishing upload of ${digest}`);
    await res.arrayBuffer();
    return digest;
  }

  async putManifest(repo: string, reference: string, body: Buffer, mediaType: string): Promise<string> {
    const res = await this.request('PUT', `/v2/${repo}/manifests/${reference}`, {
      headers: { 'content-type': mediaType },
      body,
      scopeKey: repo,
    });
    await this.expect(res, [201], `putting manifest ${repo}:${reference}`);
    await res.arrayBuffer();
    return res.headers.get('docker-content-digest') ?? sha256(body);
  }

  async getManifest(repo: string, reference: string): Promise<{ body: Buffer; mediaType: string; digest: string | null }> {
    const accept = [MEDIA.ociManifest, MEDIA.ociIndex, MEDIA.dockerManifest, MEDIA.dockerList].join(', ');
    const res = await this.expect(
      await this.request('GET', `/v2/${repo}/manifests/${reference}`, { headers: { accept }, scopeKey: repo }),
      [200],
      `getting manifest ${repo}:${reference}`,
    );
    return { body: Buffer.from(await res.arrayBuffer()), mediaType: res.headers.get('content-type') ?? '', digest: res.headers.get('docker-content-digest') };
  }

  async getBlob(repo: string, digest: string): Promise<Buffer> {
    // The filesystem driver serves blobs itself; a redirect would mean storage we did not configure.
    const res = await this.expect(await this.request('GET', `/v2/${repo}/blobs/${digest}`, { scopeKey: repo }), [200], `getting blob ${digest}`);
    return Buffer.from(await res.arrayBuffer());
  }
}

/**
 * Builds an image and pushes layers, config and manifest. With tag null the manifest is pushed
 * by digest only (the per-platform children of an index).
 */
export async function pushImage(host: string, repo: string, tag: string | null, opts: PushImageOptions): Promise<PushedImage> {
  const format = opts.format ?? 'oci';
  const layers = await Promise.all(opts.layers.map((l) => (isBuilt(l) ? Promise.resolve(l) : buildLayer(l))));
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const diffIds = layers.map((l) => l.diffId);
  const config = Buffer.from(
    JSON.stringify({
      created: FIXED_MTIME.toISOString(),
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: { Env: ['PATH=/bin'], ...opts.config },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map((_, i) => ({ created: FIXED_MTIME.toISOString(), created_by: `tscri test layer ${i}` })),
    }),
  );
  const client = new RegistryClient(host, opts.auth);
  for (const [i, l] of layers.entries()) await client.putBlob(repo, l.blob, { upload: i % 2 === 1 ? 'chunked' : 'put' });
  const configDigest = await client.putBlob(repo, config);

  if (format === 'docker' && layers.some((l) => l.compression !== 'gzip')) {
    throw new Error('Docker schema 2 has a media type for gzip layers only in these helpers');
  }
  const manifestMediaType = format === 'oci' ? MEDIA.ociManifest : MEDIA.dockerManifest;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: manifestMediaType,
      config: { mediaType: format === 'oci' ? MEDIA.ociConfig : MEDIA.dockerConfig, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: format === 'oci' ? l.mediaType : MEDIA.dockerLayerGzip, digest: l.digest, size: l.size })),
    }),
  );
  const manifestDigest = sha256(manifest);
  const pushed = await client.putManifest(repo, tag ?? manifestDigest, manifest, manifestMediaType);
  if (pushed !== manifestDigest) throw new Error(`registry ${host} stored manifest ${repo} as ${pushed}, expected ${manifestDigest}`);
  return {
    repo,
    tagRef: tag === null ? undefined : `${host}/${repo}:${tag}`,
    digestRef: `${host}/${repo}@${manifestDigest}`,
    manifestDigest,
    configDigest,
    manifest,
    manifestMediaType,
    config,
    layers,
    diffIds,
    chainIds: chainIds(diffIds),
  };
}

export interface PlatformImageSpec {
  platform: Platform;
  /** Defaults to the busybox layer plus a small layer naming the platform. */
  layers?: (LayerSpec | BuiltLayer)[];
  /** Defaults to Env PLATFORM=<os>/<arch> so a test can tell which child was chosen. */
  config?: ImageConfigSpec;
}

/** Pushes one image per platform by digest, then an OCI image index listing them under `tag`. */
export async function pushIndex(host: string, repo: string, tag: string, platforms: PlatformImageSpec[], auth?: RegistryAuth): Promise<PushedIndex> {
  const images: PushedIndex['images'] = [];
  for (const p of platforms) {
    const name = `${p.platform.os}/${p.platform.architecture}${p.platform.variant ? `/${p.platform.variant}` : ''}`;
    const layers = p.layers ?? [await busyboxLayer(), { entries: [{ type: 'file', path: 'platform', content: `${name}\n` }] }];
    const img = await pushImage(host, repo, null, {
      layers,
      config: p.config ?? { Env: ['PATH=/bin', `PLATFORM=${name}`] },
      platform: p.platform,
      auth,
    });
    images.push({ ...img, platform: p.platform });
  }
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.ociIndex,
      manifests: images.map((img) => ({
        mediaType: img.manifestMediaType,
        digest: img.manifestDigest,
        size: img.manifest.length,
        platform: img.platform,
      })),
    }),
  );
  const indexDigest = sha256(index);
  const client = new RegistryClient(host, auth);
  const pushed = await client.putManifest(repo, tag, index, MEDIA.ociIndex);
  if (pushed !== indexDigest) throw new Error(`registry ${host} stored index ${repo}:${tag} as ${pushed}, expected ${indexDigest}`);
  return { tagRef: `${host}/${repo}:${tag}`, digestRef: `${host}/${repo}@${indexDigest}`, indexDigest, images };
}
