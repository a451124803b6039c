import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { MethodDefinition } from '@grpc/proto-loader';
import type { ProtoGrpcType } from '../../src/gen/api';
import type { ImageServiceClient, ImageServiceDefinition } from '../../src/gen/runtime/v1/ImageService';
import type { RuntimeServiceClient, RuntimeServiceDefinition } from '../../src/gen/runtime/v1/RuntimeService';

/** Per-call knobs; the deadline keeps a hung daemon from hanging the whole test run. */
export interface CallOpts {
  timeoutMs?: number;
  metadata?: grpc.Metadata;
}

/**
 * A failed CRI call. `code` and `details` are the gRPC status as the kubelet would see them;
 * the message also names the method so an assertion failure says which call broke.
 */
export class CriCallError extends Error {
  readonly code: grpc.status;
  readonly codeName: string;
  readonly details: string;
  readonly metadata: grpc.Metadata | undefined;
  readonly method: string;

  constructor(method: string, err: grpc.ServiceError) {
    // A code newer than this grpc-js has no name in its enum.
    const codeName = err.code in grpc.status ? grpc.status[err.code] : String(err.code);
    super(`${method} failed: ${codeName}: ${err.details}`);
    this.name = 'CriCallError';
    this.code = err.code;
    this.codeName = codeName;
    this.details = err.details;
    this.metadata = err.metadata;
    this.method = method;
  }
}

// never where a type is a serializer's parameter (contravariant), unknown where it is a result.
type ReqOf<M> = M extends MethodDefinition<infer Req, never, unknown, unknown> ? Req : never;
type ResOf<M> = M extends MethodDefinition<never, never, unknown, infer Res> ? Res : never;

// The generated definitions type requestStream/responseStream as plain booleans, so the
// server-streaming methods are picked out by name; the proto names all of them Stream* except
// GetContainerEvents, which never ends and is left to the raw client.
type StreamingName = `Stream${string}` | 'GetContainerEvents';

export type PromiseClient<D> = {
  [K in keyof D as K extends StreamingName ? never : K]: (req: ReqOf<D[K]>, opts?: CallOpts) => Promise<ResOf<D[K]>>;
} & {
  [K in keyof D as K extends `Stream${string}` ? K : never]: (req: ReqOf<D[K]>, opts?: CallOpts) => Promise<ResOf<D[K]>[]>;
};

export type ImageApi = PromiseClient<ImageServiceDefinition>;
export type RuntimeApi = PromiseClient<RuntimeServiceDefinition>;

export interface CriClient {
  image: ImageApi;
  runtime: RuntimeApi;
  /** The underlying grpc-js clients, for calls the promise wrappers do not fit (GetContainerEvents). */
  imageClient: ImageServiceClient;
  runtimeClient: RuntimeServiceClient;
  close(): void;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** The repository root, found from wherever this file runs (test/helpers or dist/test/helpers). */
export function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'proto', 'api.proto')) && fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find proto/api.proto above ${__dirname}`);
    dir = parent;
  }
}

let cachedProto: ProtoGrpcType | undefined;

function loadProto(): ProtoGrpcType {
  if (!cachedProto) {
    const def = protoLoader.loadSync(path.join(repoRoot(), 'proto', 'api.proto'), {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    cachedProto = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return cachedProto;
}

function deadline(opts?: CallOpts): grpc.CallOptions {
  return { deadline: Date.now() + (opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS) };
}

/** Reads a server stream to its end; rejects with a CriCallError if the stream ends in error. */
export function collect<T>(method: string, stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    stream.on('data', (m: T) => out.push(m));
    stream.on('error', (err: grpc.ServiceError) => reject(new CriCallError(method, err)));
    stream.on('end', () => resolve(out));
  });
}

function wrap<D extends grpc.ServiceDefinition>(client: grpc.Client, service: D): PromiseClient<D> {
  const api: Record<string, (req: unknown, opts?: CallOpts) => Promise<unknown>> = {};
  const raw = client as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const [name, def] of Object.entries(service)) {
    if (def.requestStream) continue;
    if (def.responseStream) {
      api[name] = (req, opts) => {
        const stream = raw[name].call(client, req, opts?.metadata ?? new grpc.Metadata(), deadline(opts));
        return collect(name, stream as grpc.ClientReadableStream<unknown>);
      };
    } else {
      api[name] = (req, opts) =>
        new Promise((resolve, reject) => {
          raw[name].call(client, req, opts?.metadata ?? new grpc.Metadata(), deadline(opts), (err: grpc.ServiceError | null, res: unknown) => {
            if (err) reject(new CriCallError(name, err));
            else resolve(res);
          });
        });
    }
  }
  return api as unknown as PromiseClient<D>;
}

/**
 * A CRI client on a unix socket path (with or without the unix:// prefix); `channelOptions`
 * add to (or override) the defaults.
 */
export function connectCri(socket: string, channelOptions: grpc.ChannelOptions = {}): CriClient {
  const proto = loadProto();
  const target = socket.startsWith('unix://') ? socket : `unix://${socket}`;
  const v1 = proto.runtime.v1;
  const creds = grpc.credentials.createInsecure();
  // The kubelet accepts replies up to 16 MiB; a test client that rejected less would report
  // failures the kubelet would never see.
  const channelOpts = { 'grpc.max_receive_message_length': 16 * 1024 * 1024, ...channelOptions };
  const imageClient = new v1.ImageService(target, creds, channelOpts);
  const runtimeClient = new v1.RuntimeService(target, creds, channelOpts);
  return {
    image: wrap(imageClient, v1.ImageService.service),
    runtime: wrap(runtimeClient, v1.RuntimeService.service),
    imageClient,
    runtimeClient,
    close() {
      imageClient.close();
      runtimeClient.close();
    },
  };
}

/** Runs `fn` and returns the CriCallError it throws; fails if it succeeds or throws anything else. */
export async function expectCriError(what: string, fn: () => Promise<unknown>): Promise<CriCallError> {
  let result: unknown;
  try {
    result = await fn();
  } catch (err) {
    if (err instanceof CriCallError) return err;
    throw new Error(`${what}: expected a gRPC error, saw ${String(err)}`, { cause: err });
  }
  throw new Error(`${what}: expected a gRPC error, but the call succeeded with ${JSON.stringify(result)}`);
}
