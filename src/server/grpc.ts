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
import { Encoded } from './encoding';

/**
 * A unary RPC: request in, response out; `signal` fires when the client goes away. It may
 * answer with a value or a promise, and throw or reject: both become the call's status.
 */
export type UnaryHandler<Req> = (req: Req, ctx: CallContext) => unknown;
/** A server-streaming RPC: `send` writes one message. */
export type StreamHandler<Req> = (req: Req, send: (msg: unknown) => void, ctx: CallContext) => void | Promise<void>;

export interface CallContext {
  log: Logger;
  signal: AbortSignal;
}

/**
 * The handlers of a service, typed from its generated grpc-js handlers interface (e.g.
 * RuntimeServiceHandlers): each method's request type is the decoded message of that method,
 * and streaming methods take `{ stream }`. Methods left out answer UNIMPLEMENTED.
 */
export type Handlers<Service> = {
  [M in keyof Service as string extends M ? never : M]?: Service[M] extends grpc.handleServerStreamingCall<infer Req, unknown>
    ? { stream: StreamHandler<Req> }
    : Service[M] extends grpc.handleUnaryCall<infer Req, unknown>
      ? UnaryHandler<Req>
      : never;
};

/** What implement() dispatches on: grpc-js decoded each request from the method's own definition. */
type DecodedHandlers = Partial<Record<string, UnaryHandler<unknown> | { stream: StreamHandler<unknown> }>>;

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
export function implement<Service>(
  serviceName: string,
  definition: ServiceDefinition,
  handlers: Handlers<Service>,
  log: Logger,
  metrics: Metrics,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  // Handlers<Service> names each method's request type; grpc-js hands over the request decoded
  // with that method's deserializer, so erasing the type here loses nothing.
  const byName = handlers as DecodedHandlers;
  for (const [name, method] of Object.entries(definition)) {
    const full = `${serviceName}/${name}`;
    const handler = byName[name];
    // One labelled child per status code: prom-client hashes the label set on every call otherwise.
    const observers = new Map<grpc.status, { requests: { inc(): void }; duration: { observe(v: number): void } }>();
    const observer = (code: grpc.status) => {
      let o = observers.get(code);
      if (!o) {
        const labels = { method: full, code: grpc.status[code] };
        o = { requests: metrics.grpcRequests.labels(labels), duration: metrics.grpcDuration.labels(labels) };
        observers.set(code, o);
      }
      return o;
    };
    const finish = (start: bigint, err: unknown, reqLog: Logger): grpc.status => {
      const code = err === undefined ? grpc.status.OK : statusOf(err);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const o = observer(code);
      o.requests.inc();
      o.duration.observe(seconds);
      if (err === undefined) {
        if (reqLog.isLevelEnabled('debug')) reqLog.debug({ method: full, ms: Math.round(seconds * 1e6) / 1e3, code: grpc.status[code] }, 'rpc');
        return code;
      }
      const fields = { method: full, ms: Math.round(seconds * 1e6) / 1e3, code: grpc.status[code] };
      if (code === grpc.status.UNIMPLEMENTED || code === grpc.status.NOT_FOUND) reqLog.debug({ ...fields, err: (err as Error).message }, 'rpc');
      else reqLog.error({ ...fields, err }, 'rpc failed');
      return code;
    };
    const unimplemented = new UnimplementedError(`${full} is not implemented by tscri yet`);

    if (!method.responseStream) {
      const fn = typeof handler === 'function' ? handler : undefined;
      impl[name] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const start = process.hrtime.bigint();
        const ctx = callContext(call, full, log);
        const fail = (err: unknown) => {
          ctx.finished();
          const code = finish(start, err, log);
          callback({ code, details: messageOf(err) });
        };
        const succeed = (res: unknown) => {
          ctx.finished();
          finish(start, undefined, log);
          callback(null, res ?? {});
        };
        let result: unknown;
        try {
          if (!fn) throw unimplemented;
          result = fn(call.request, ctx);
        } catch (err) {
          fail(err);
          return;
        }
        // The polled calls (lists, statuses) answer from memory: no promise, no microtask hops.
        if (result instanceof Promise) result.then(succeed, fail);
        else succeed(result);
      };
    } else {
      const fn = typeof handler === 'object' ? handler.stream : undefined;
      impl[name] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
        const start = process.hrtime.bigint();
        const ctx = callContext(call, full, log);
        const run = fn ? new Promise<void>((resolve) => resolve(fn(call.request, (msg) => call.write(msg), ctx))) : Promise.reject(unimplemented);
        run.then(
          () => {
            ctx.finished();
            finish(start, undefined, log);
            call.end();
          },
          (err: unknown) => {
            ctx.finished();
            const code = finish(start, err, log);
            call.emit('error', { code, details: messageOf(err) });
          },
        );
      };
    }
  }
  return impl;
}

/** An error's message as the status details; whatever else was thrown, as a string. */
function messageOf(err: unknown): string {
  const message = typeof err === 'object' && err !== null && 'message' in err ? err.message : undefined;
  return typeof message === 'string' ? message : String(err);
}

/**
 * A call's context. grpc-js reports every call as cancelled once its status is sent, so a
 * cancellation after the handler finished is not one.
 */
export function callContext(
  call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  full: string,
  log: Logger,
): CallContext & { finished(): void } {
  let abort: AbortController | undefined;
  let done = false;
  return {
    log,
    // Made, and the cancellation listened for, only when a handler asks: most calls answer at once.
    get signal(): AbortSignal {
      if (!abort) {
        const controller = new AbortController();
        abort = controller;
        const cancel = () => {
          if (!done) controller.abort(new CancelledError(`${full}: cancelled by the client`));
        };
        if (call.cancelled) cancel();
        else call.once('cancelled', cancel);
      }
      return abort.signal;
    },
    finished() {
      done = true;
    },
  };
}

/**
 * The service definition with serializers that pass an `Encoded` response through as it is
 * (server/encoding.ts) and encode anything else as before.
 */
export function passEncoded(definition: ServiceDefinition): ServiceDefinition {
  const out: Record<string, ServiceDefinition[string]> = {};
  for (const [name, method] of Object.entries(definition)) {
    const serialize = method.responseSerialize;
    out[name] = { ...method, responseSerialize: (value: unknown) => (value instanceof Encoded ? value.bytes : serialize(value)) };
  }
  return out as ServiceDefinition;
}
