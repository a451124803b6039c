// The body of an unpack worker thread (see unpack_pool.ts). Decompression, diff-id hashing and
// the synchronous tar unpacker run here so the daemon's event loop (gRPC, HTTP downloads) is not
// held up by inode creation, and so layers unpack on more than one CPU.
//
// One thread may serve several layers at once: the unpacker yields whenever its input has no
// chunk ready, so layers interleave at chunk boundaries.

import { pipeline } from 'node:stream/promises';
import { parentPort, type MessagePort } from 'node:worker_threads';
import { CriError } from '../errors';
import { unpackLayer } from './layer_unpack';
import { Hasher, decompressor } from './layer_streams';
import type { FromWorker, JobRequest, SerializedError, ToWorker } from './unpack_pool';

function serialize(err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) };
  const e = err as Error & { code?: unknown; entry?: unknown };
  return {
    name: e.name,
    message: e.message,
    stack: e.stack,
    code: typeof e.code === 'string' ? e.code : undefined,
    entry: typeof e.entry === 'string' ? e.entry : undefined,
  };
}

async function run(req: JobRequest): Promise<void> {
  const port: MessagePort = req.port;
  const send = (m: FromWorker, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer);
  const dec = decompressor(req.compression);
  const diff = new Hasher();
  port.on('message', (m: ToWorker) => {
    switch (m.type) {
      case 'chunk': {
        const b = Buffer.from(m.data, 0, m.length);
        // The write callback fires once the decompressor has room again (Transform holds it
        // while its output is backed up), which is exactly when the sender may send more.
        dec.write(b, (err) => {
          if (!err) send({ type: 'ack', bytes: b.length });
        });
        break;
      }
      case 'end':
        dec.end();
        break;
      case 'abort': {
        const err = new Error(m.reason);
        err.name = 'AbortError';
        dec.destroy(err);
        break;
      }
    }
  });
  // Not awaited here: a port without listeners would let this thread's loop idle out.
  port.on('close', () => dec.destroy());

  const transfer = pipeline(dec, diff);
  const unpack = unpackLayer(diff, req.dest).catch((err: unknown) => {
    // The unpacker stopped reading: end the decompression too, or it waits forever.
    diff.destroy(err as Error);
    throw err;
  });
  const [t, u] = await Promise.allSettled([transfer, unpack]);
  // Same rule as on the main side: a refusal by the unpacker (a CriError) or a failure with no
  // other cause is the unpacker's; a decompression failure starves the unpacker, whose error is
  // then only the echo.
  const transferFailure: unknown = t.status === 'rejected' ? t.reason : undefined;
  const unpackFailure: unknown = u.status === 'rejected' ? u.reason : undefined;
  if (unpackFailure !== undefined && (transferFailure === undefined || unpackFailure instanceof CriError || unpackFailure === transferFailure)) {
    send({ type: 'failed', stage: 'unpack', error: serialize(unpackFailure) });
  } else if (transferFailure !== undefined) {
    send({ type: 'failed', stage: 'decompress', error: serialize(transferFailure) });
  } else if (u.status === 'fulfilled') {
    send({ type: 'done', entries: u.value.entries, bytes: u.value.bytes, diffId: diff.digest });
  }
}

if (parentPort) {
  parentPort.on('message', (req: JobRequest) => {
    run(req).catch((err: unknown) => {
      try {
        req.port.postMessage({ type: 'failed', stage: 'unpack', error: serialize(err) } satisfies FromWorker);
      } catch {
        // The port is gone: the main side already gave up on this layer.
      }
    });
  });
}
