import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { Decompress as ZstdDecompress } from 'fzstd';
import { InvalidArgumentError } from '../errors';

/** Passes bytes through while hashing them; fails at the end when size or digest differ. */
export class DigestCheck extends Transform {
  private readonly hash = createHash('sha256');
  private seen = 0;

  constructor(
    private readonly expected: string,
    private readonly expectedSize: number | undefined,
    private readonly what: string,
    private readonly onBytes?: (n: number) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.expectedSize !== undefined && this.seen > this.expectedSize) {
      cb(new InvalidArgumentError(`${this.what}: more than the ${this.expectedSize} bytes its descriptor declares`));
      return;
    }
    this.hash.update(chunk);
    this.onBytes?.(chunk.length);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const got = `sha256:${this.hash.digest('hex')}`;
    if (this.expectedSize !== undefined && this.seen !== this.expectedSize) {
      cb(new InvalidArgumentError(`${this.what}: got ${this.seen} bytes, descriptor declares ${this.expectedSize}`));
    } else if (got !== this.expected) {
      cb(new InvalidArgumentError(`${this.what}: digest mismatch: expected ${this.expected}, got ${got}`));
    } else {
      cb();
    }
  }
}

/** Hashes what passes through; the digest is read after the stream ends. */
export class Hasher extends Transform {
  private readonly hash = createHash('sha256');
  digest = '';

  constructor() {
    // Large buffers let the unpacker write big chunks instead of waiting on small ones.
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.digest = `sha256:${this.hash.digest('hex')}`;
    cb();
  }
}

class ZstdTransform extends Transform {
  private readonly inner = new ZstdDecompress((chunk) => this.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)));

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.inner.push(chunk);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.inner.push(new Uint8Array(0), true);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
}

export type Compression = 'gzip' | 'zstd' | 'none';

// Every layer media type an image may use (OCI image-spec layer.md, Docker image manifest v2
// schema 2), with its compression. Anything else (an OCI artifact's blobs, a Helm chart) is not
// a filesystem layer: containerd refuses it too, instead of guessing from a suffix.
const LAYER_MEDIA_TYPES: ReadonlyMap<string, Compression> = new Map([
  ['application/vnd.oci.image.layer.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.v1.tar+zstd', 'zstd'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.diff.tar', 'none'],
  ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'gzip'],
  ['application/vnd.docker.image.rootfs.diff.tar.zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.foreign.diff.tar', 'none'],
  ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'gzip'],
] as const);

/** The compression a layer media type declares; InvalidArgument naming any other type. */
export function compressionOf(mediaType: string, what: string): Compression {
  const c = LAYER_MEDIA_TYPES.get(mediaType);
  if (c === undefined) {
    throw new InvalidArgumentError(`${what}: unsupported layer media type ${JSON.stringify(mediaType)}: not an image filesystem layer`);
  }
  return c;
}

export function decompressor(c: Compression): Transform {
  switch (c) {
    case 'gzip':
      // Registries serve concatenated gzip members (pigz, some builders); gunzip handles them.
      return zlib.createGunzip({ chunkSize: 256 * 1024 });
    case 'zstd':
      return new ZstdTransform();
    case 'none':
      return new Transform({ transform: (chunk, _e, cb) => cb(null, chunk) });
  }
}
