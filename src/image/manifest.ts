import { InvalidArgumentError, NotFoundError } from '../errors';

export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface ImageManifest {
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  mediaType: string;
  manifests: Descriptor[];
}

/** The parts of an image config (OCI image-spec config.md) the runtime uses. */
export interface ImageConfigFile {
  architecture?: string;
  os?: string;
  created?: string;
  config?: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    Labels?: Record<string, string> | null;
    StopSignal?: string;
    Volumes?: Record<string, object> | null;
    ExposedPorts?: Record<string, object> | null;
  };
  rootfs?: { type: string; diff_ids: string[] };
}

export function isIndex(mediaType: string): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerList;
}

function parseJson(body: Buffer, what: string): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new InvalidArgumentError(`${what}: not valid JSON`, { cause: err });
  }
}

/**
 * A parsed document's fields, to be checked one by one. A JSON scalar has none (reading a
 * field of it gives undefined), but `null` is no document at all.
 */
function parseFields(body: Buffer, what: string): Partial<Record<string, unknown>> {
  const doc = parseJson(body, what);
  if (doc === null) throw new InvalidArgumentError(`${what}: the document is JSON null`);
  return fieldsOf(doc);
}

function fieldsOf(v: unknown): Partial<Record<string, unknown>> {
  return typeof v === 'object' && v !== null ? v : {};
}

/**
 * A manifest body's media type: the registry's Content-Type is only a hint, and some
 * registries send `application/json`, so the document's own mediaType wins, then its shape.
 */
export function detectMediaType(body: Buffer, headerType: string, what: string): string {
  const doc = parseFields(body, what);
  if (typeof doc.mediaType === 'string' && doc.mediaType) return doc.mediaType;
  if (Array.isArray(doc.manifests)) return MediaType.ociIndex;
  if (doc.config && Array.isArray(doc.layers)) return MediaType.ociManifest;
  if (doc.schemaVersion === 1) {
    throw new InvalidArgumentError(`${what}: Docker schema 1 manifests are not supported`);
  }
  return headerType.split(';')[0].trim();
}

export function parseIndex(body: Buffer, what: string): ImageIndex {
  const doc = parseFields(body, what);
  const manifests: unknown = doc.manifests;
  if (!Array.isArray(manifests)) throw new InvalidArgumentError(`${what}: index has no manifests`);
  return {
    // Kept as the document says: callers compare it with the known media types.
    mediaType: (doc.mediaType ?? MediaType.ociIndex) as string,
    manifests: manifests.map((d: unknown) => checkDescriptor(d, what)),
  };
}

export function parseManifest(body: Buffer, what: string): ImageManifest {
  const doc = parseFields(body, what);
  const layers: unknown = doc.layers;
  if (!doc.config || !Array.isArray(layers)) throw new InvalidArgumentError(`${what}: not an image manifest`);
  return {
    mediaType: (doc.mediaType ?? MediaType.ociManifest) as string,
    config: checkDescriptor(doc.config, what),
    layers: layers.map((d: unknown) => checkDescriptor(d, what)),
  };
}

/** An image config as parseConfig returns it: its rootfs has been checked. */
export type CheckedImageConfig = ImageConfigFile & { rootfs: NonNullable<ImageConfigFile['rootfs']> };

function hasDiffIds(doc: ImageConfigFile): doc is CheckedImageConfig {
  // Parsed JSON: rootfs may be missing or null whatever the type says.
  const rootfs: unknown = doc.rootfs;
  return typeof rootfs === 'object' && rootfs !== null && Array.isArray((rootfs as { diff_ids?: unknown }).diff_ids);
}

export function parseConfig(body: Buffer, what: string): CheckedImageConfig {
  const doc = parseJson(body, what) as ImageConfigFile;
  if (!hasDiffIds(doc)) throw new InvalidArgumentError(`${what}: config has no rootfs.diff_ids`);
  return doc;
}

/**
 * The config must be an image config: an artifact manifest (say a Helm chart, or
 * application/vnd.example.unknown) has the same shape but nothing a container can run.
 */
export function checkConfigMediaType(manifest: ImageManifest, what: string): void {
  const t = manifest.config.mediaType;
  if (t !== MediaType.ociConfig && t !== MediaType.dockerConfig) {
    throw new InvalidArgumentError(`${what}: unsupported config media type ${JSON.stringify(t)}: not an image config`);
  }
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;

function checkDescriptor(d: unknown, what: string): Descriptor {
  const f = fieldsOf(d);
  const digest = f.digest;
  if (typeof digest !== 'string' || !DIGEST.test(digest)) {
    throw new InvalidArgumentError(`${what}: descriptor with invalid digest ${JSON.stringify(digest)}`);
  }
  const size = f.size;
  if (typeof size !== 'number' || size < 0) throw new InvalidArgumentError(`${what}: descriptor ${digest} has no valid size`);
  const mediaType = f.mediaType;
  return {
    // A non-string media type matches none the runtime knows; JSON keeps it readable in errors.
    mediaType: typeof mediaType === 'string' ? mediaType : mediaType == null ? '' : JSON.stringify(mediaType),
    digest,
    size,
    // Passed on unchecked, as the registry sent them; selectPlatform reads platform defensively.
    platform: f.platform as Platform | undefined,
    annotations: f.annotations as Record<string, string> | undefined,
  };
}

/** The platform this node runs, in OCI terms. */
export function nodePlatform(): Platform {
  const arch = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' }[process.arch as string] ?? process.arch;
  return { os: 'linux', architecture: arch, variant: arch === 'arm64' ? 'v8' : undefined };
}

/**
 * Picks the manifest for `want` from an index: same OS and architecture, and the variant when
 * both name one (arm64's "v8" is implied when absent). Attestation manifests
 * (platform unknown/unknown) never match.
 */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  const variantOf = (p: Platform): string | undefined => p.variant ?? (p.architecture === 'arm64' ? 'v8' : undefined);
  const candidates = index.manifests.filter(
    (d): d is Descriptor & { platform: Platform } => !!d.platform && d.platform.os === want.os && d.platform.architecture === want.architecture,
  );
  const exact = candidates.find((d) => variantOf(d.platform) === variantOf(want));
  const chosen = exact ?? candidates.find((d) => !d.platform.variant) ?? candidates.at(0);
  if (!chosen) throw new NotFoundError(`${what}: no manifest for ${want.os}/${want.architecture} (${describeOffer(index)})`);
  return chosen;
}

/** How many manifests and platforms an index offers, with a few of them: never the whole list. */
function describeOffer(index: ImageIndex): string {
  const n = index.manifests.length;
  if (n === 0) return 'the index lists no manifest';
  const platforms = new Set(
    index.manifests.map((d) => (d.platform ? [d.platform.os, d.platform.architecture, d.platform.variant].filter(Boolean).join('/') : 'unknown')),
  );
  const shown = [...platforms].slice(0, OFFER_EXAMPLES).map((p) => (p.length > 40 ? `${p.slice(0, 40)}…` : p));
  const more = platforms.size - shown.length;
  return `the index lists ${n} manifest${n === 1 ? '' : 's'} for ${platforms.size} platform${platforms.size === 1 ? '' : 's'}: ${shown.join(', ')}${more > 0 ? ` and ${more} more` : ''}`;
}

const OFFER_EXAMPLES = 5;

/** OCI image-spec ChainID: chain(L0) = diff(L0); chain(Ln) = sha256(chain(Ln-1) + " " + diff(Ln)). */
export function chainIds(diffIds: string[], sha256: (s: string) => string): string[] {
  const out: string[] = [];
  for (const diff of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? diff : `sha256:${sha256(`${prev} ${diff}`)}`);
  }
  return out;
}
