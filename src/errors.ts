// The small set of domain errors the gRPC layer maps to status codes in one place
// (src/server/grpc.ts). Anything else surfaces as INTERNAL with its message.

export class CriError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class NotFoundError extends CriError {}
export class AlreadyExistsError extends CriError {}
export class InvalidArgumentError extends CriError {}
export class FailedPreconditionError extends CriError {}
export class UnimplementedError extends CriError {}
export class PermissionDeniedError extends CriError {}
export class UnauthenticatedError extends CriError {}
export class DeadlineExceededError extends CriError {}
export class CancelledError extends CriError {}

// The kubelet recognises registry outages by this message prefix
// (k8s.io/cri-api/pkg/errors: ErrRegistryUnavailable = "RegistryUnavailable").
export class RegistryUnavailableError extends CriError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`RegistryUnavailable: ${detail}`, options);
  }
}

/** The message of any thrown value, for wrapping with context. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Prefixes an error's message with what was being done, keeping its class (and gRPC code). */
export function withContext(err: unknown, context: string): Error {
  if (err instanceof Error) {
    err.message = `${context}: ${err.message}`;
    return err;
  }
  return new Error(`${context}: ${String(err)}`);
}
