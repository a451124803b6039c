import * as grpc from '@grpc/grpc-js';
import type { ServiceDefinition } from '@grpc/grpc-js';
import {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  RegistryUnavailableError,
  UnauthenticatedError,
  UnimplementedError,
} from '../errors';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';

/** A unary RPC: request in, response out; `signal` fires when the client goes away. */
export type UnaryHandler = (req: any, ctx: CallContext) => Promise<unknown>;
/** A server-streaming RPC: `send` writes one message. */
export type StreamHandler = (req: any, send: (msg: unknown) => void, ctx: CallContext) => Promise<void>;

export interface CallContext {
  log: Logger;
  signal: AbortSignal;
}

export type Handlers = Record<string, UnaryHandler | { stream: StreamHandler }>;

/** The one place where domain errors become gRPC status codes. */
export function statusOf(err: unknown): grpc.status {
  if (err instanceof NotFoundError) return grpc.status.NOT_FOUND;
  if (err instanceof AlreadyExistsError) return grpc.status.ALREADY_EXISTS;
  if (err instanceof InvalidArgumentError) return grpc.status.INVALID_ARGUMENT;
  if (err instanceof FailedPreconditionError) return grpc.status.FAILED_PRECONDITION;
  if (err instanceof UnimplementedError) return grpc.status.UNIMPLEMENTED;
  if (err instanceof PermissionDeniedError) return grpc.status.PERMISSION_DENIED;
  if (err instanceof UnauthenticatedError) return grpc.status.UNAUTHENTICATED;
  if (err instanceof DeadlineExceededError) return grpc.status.DEADLINE_EXCEEDED;
  if (err instanceof CancelledError) return grpc.status.CANCELLED;
  if (err instanceof RegistryUnavailableError) return grpc.status.UNAVAILABLE;
  return grpc.status.UNKNOWN;
}

/**
 * Builds a grpc-js service implementation from handlers: every call is logged (debug on
 * success, error on failure) and measured; methods without a handler answer UNIMPLEMENTED
 * with their name, so a client learns exactly what is missing.
 */
export function implement(
  serviceName: string,
  definition: ServiceDefinition,
  handlers: Handlers,
  log: Logger,
  metrics: Metrics,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(definition)) {
    const full = `${serviceName}/${name}`;
    const handler = handlers[name];
    const finish = (start: bigint, err: unknown, reqLog: Logger): grpc.status => {
      const code = err === undefined ? grpc.status.OK : statusOf(err);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      metrics.grpcRequests.inc({ method: full, code: grpc.status[code] });
      metrics.grpcDuration.observe({ method: full, code: grpc.status[code] }, seconds);
      const fields = { method: full, ms: Math.round(seconds * 1e6) / 1e3, code: grpc.status[code] };
      if (err === undefined) reqLog.debug(fields, 'rpc');
      else if (code === grpc.status.UNIMPLEMENTED || code === grpc.status.NOT_FOUND) reqLog.debug({ ...fields, err: (err as Error).message }, 'rpc');
      else reqLog.error({ ...fields, err }, 'rpc failed');
      return code;
    };
    const unimplemented = new UnimplementedError(`${full} is not implemented by tscri yet`);

    if (!method.responseStream) {
      const fn = typeof handler === 'function' ? handler : undefined;
      impl[name] = (call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>) => {
        const start = process.hrtime.bigint();
        const abort = new AbortController();
        call.on('cancelled', () => abort.abort(new CancelledError(`${full}: cancelled by the client`)));
        const reqLog = log;
        const run = fn ? fn(call.request, { log: reqLog, signal: abort.signal }) : Promise.reject(unimplemented);
        run.then(
          (res) => {
            finish(start, undefined, reqLog);
            callback(null, res ?? {});
          },
          (err: unknown) => {
            const code = finish(start, err, reqLog);
            callback({ code, details: (err as Error)?.message ?? String(err) });
          },
        );
      };
    } else {
      const fn = handler && typeof handler === 'object' ? handler.stream : undefined;
      impl[name] = (call: grpc.ServerWritableStream<any, any>) => {
        const start = process.hrtime.bigint();
        const abort = new AbortController();
        call.on('cancelled', () => abort.abort(new CancelledError(`${full}: cancelled by the client`)));
        const reqLog = log;
        const run = fn
          ? fn(call.request, (msg) => call.write(msg), { log: reqLog, signal: abort.signal })
          : Promise.reject(unimplemented);
        run.then(
          () => {
            finish(start, undefined, reqLog);
            call.end();
          },
          (err: unknown) => {
            const code = finish(start, err, reqLog);
            call.emit('error', { code, details: (err as Error)?.message ?? String(err) });
          },
        );
      };
    }
  }
  return impl;
}
