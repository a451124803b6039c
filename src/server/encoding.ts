// Responses built from protobuf bytes kept per record. The kubelet lists every pod and container
// every second and reads each one's status every few seconds, while a record changes a handful
// of times in its life: each item is encoded once per change, and a list response is the
// concatenation of its items' bytes under the list's field tag (which is what the protobuf
// encoding of a repeated message field is).
import * as protobuf from 'protobufjs';
import { type ContainerRecord, toContainer, toContainerStatus } from '../container/container';
import type { ImageRecord } from '../image/image_store';
import { PROTO_PATH } from '../proto';
import { type SandboxRecord, toPodSandbox, toPodSandboxStatus } from '../sandbox/sandbox';
import { imageToCri } from './image/image_to_cri';

/** A response already encoded; grpc.ts's serializers pass it through untouched. */
export class Encoded {
  constructor(readonly bytes: Buffer) {}
}

const WIRE_VARINT = 0;
const WIRE_LEN = 2;

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

function bigVarint(n: bigint): Buffer {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}

/** Pieces of a message in field order, written into one buffer at the end. */
export class MessageBuilder {
  private readonly parts: { tag: number; bytes: Buffer; len: boolean }[] = [];
  private size = 0;

  /** A length-delimited field (a message, string or bytes) holding `bytes`. */
  bytes(field: number, bytes: Buffer): this {
    const tag = (field << 3) | WIRE_LEN;
    this.parts.push({ tag, bytes, len: true });
    this.size += varintSize(tag) + varintSize(bytes.length) + bytes.length;
    return this;
  }

  /** Each of `items` as one occurrence of a repeated message field. */
  repeated(field: number, items: Buffer[]): this {
    for (const b of items) this.bytes(field, b);
    return this;
  }

  /** An int64 field; 0 is the default and is left out, as encoders do. */
  int64(field: number, value: bigint): this {
    if (value === 0n) return this;
    const tag = (field << 3) | WIRE_VARINT;
    const bytes = bigVarint(value);
    this.parts.push({ tag, bytes, len: false });
    this.size += varintSize(tag) + bytes.length;
    return this;
  }

  finish(): Buffer {
    const buf = Buffer.allocUnsafe(this.size);
    let at = 0;
    for (const p of this.parts) {
      at = writeVarint(buf, at, p.tag);
      if (p.len) at = writeVarint(buf, at, p.bytes.length);
      at += p.bytes.copy(buf, at);
    }
    return buf;
  }
}

/** The CRI's message types, for encoding single messages the way grpc-js's serializers do. */
export class CriCodec {
  private readonly root: protobuf.Root;
  private readonly types = new Map<string, protobuf.Type>();

  constructor() {
    // keepCase: the plain objects handed to it use the proto's snake_case, as proto-loader's do.
    this.root = new protobuf.Root().loadSync(PROTO_PATH, { keepCase: true });
    this.root.resolveAll();
  }

  /** `obj` (a plain object, enums as names, int64 as strings) as `runtime.v1.<type>` bytes. */
  encode(type: string, obj: object): Buffer {
    let t = this.types.get(type);
    if (!t) {
      t = this.root.lookupType(`runtime.v1.${type}`);
      this.types.set(type, t);
    }
    const bytes = t.encode(t.fromObject(obj)).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  /** Bytes back to a plain object as proto-loader's deserializers make it (tests). */
  decode(type: string, bytes: Uint8Array): Record<string, unknown> {
    const t = this.root.lookupType(`runtime.v1.${type}`);
    return t.toObject(t.decode(bytes), { longs: String, enums: String, defaults: true, oneofs: true });
  }
}

/**
 * One message per record, re-encoded only when one of the fields it is built from changed.
 * `key` lists those fields (objects compared by identity: records replace, never edit, the
 * config objects they hold).
 */
export class EncodingCache<R extends object> {
  private readonly entries = new WeakMap<R, { key: unknown[]; bytes: Buffer }>();

  constructor(
    private readonly key: (rec: R) => unknown[],
    private readonly build: (rec: R) => Buffer,
  ) {}

  get(rec: R): Buffer {
    const key = this.key(rec);
    const hit = this.entries.get(rec);
    if (hit && hit.key.length === key.length && hit.key.every((v, i) => v === key[i])) return hit.bytes;
    const bytes = this.build(rec);
    this.entries.set(rec, { key, bytes });
    return bytes;
  }
}

/** The per-record caches behind the list and status responses the kubelet polls. */
export class RecordEncodings {
  readonly codec = new CriCodec();
  readonly image: EncodingCache<ImageRecord>;

  readonly container = new EncodingCache<ContainerRecord>(
    (r) => [r.phase, r.config, r.imageName, r.imageRef, r.imageId],
    (r) => this.codec.encode('Container', toContainer(r)),
  );
  readonly containerStatus = new EncodingCache<ContainerRecord>(
    (r) => [r.phase, r.config, r.startedAt, r.finishedAt, r.exitCode, r.reason, r.message, r.logPath, r.imageRef, r.imageId],
    (r) => this.codec.encode('ContainerStatus', toContainerStatus(r)),
  );
  readonly sandbox = new EncodingCache<SandboxRecord>(
    (r) => [r.phase, r.config, r.runtimeHandler],
    (r) => this.codec.encode('PodSandbox', toPodSandbox(r)),
  );
  readonly sandboxStatus = new EncodingCache<SandboxRecord>(
    (r) => [r.phase, r.config, r.runtimeHandler, r.hostNetwork, r.ips],
    (r) => this.codec.encode('PodSandboxStatus', toPodSandboxStatus(r)),
  );

  constructor(isPinned: (rec: ImageRecord) => boolean) {
    this.image = new EncodingCache<ImageRecord>(
      (r) => [r.repoTags, r.repoDigests, r.size, r.config, isPinned(r)],
      (r) => this.codec.encode('Image', imageToCri(r, isPinned(r))),
    );
  }

  /**
   * Encodes every record once, so that the first lists after a start (the kubelet relists at
   * once) cost what later ones do.
   */
  warm(containers: ContainerRecord[], sandboxes: SandboxRecord[]): void {
    for (const c of containers) {
      this.container.get(c);
      this.containerStatus.get(c);
    }
    for (const s of sandboxes) {
      this.sandbox.get(s);
      this.sandboxStatus.get(s);
    }
  }
}
