// Worker threads that decompress, hash and unpack layers (the body is unpack_worker.ts). The
// unpacker's synchronous inode creation dominates a pull; on the main thread it serialised the
// parallel downloads, left other CPUs idle and stalled the gRPC server.
//
// The main thread keeps the download and the compressed-digest check and streams the compressed
// bytes to a worker over a per-layer MessagePort, copied into ArrayBuffers it can transfer (an
// HTTP body chunk may share its memory with other chunks, so it cannot be detached).
// At most WINDOW bytes are unacknowledged per layer, so a fast registry never piles a layer up
// in memory while the disk is slow.

import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import * as errors from '../errors';
import { LayerPathError } from './layer_unpack';
import type { Compression } from './layer_streams';

/** Compressed bytes one layer may have sent but not yet consumed by its worker. */
const WINDOW = 4 << 20;
/** Size of the messages that carry those bytes. */
const BATCH = 256 << 10;

export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  entry?: string;
}

/** Posted to a worker's parentPort to start a layer; the rest goes over `port`. */
export interface JobRequest {
  dest: string;
  compression: Compression;
  port: MessagePort;
}

export type ToWorker = { type: 'chunk'; data: ArrayBuffer; length: number } | { type: 'end' } | { type: 'abort'; reason: string };

export type FromWorker =
  | { type: 'ack'; bytes: number }
  | { type: 'done'; entries: number; bytes: number; diffId: string }
  | { type: 'failed'; stage: UnpackStage; error: SerializedError };

/**
 * Where a layer failed: 'decompress' is a fault of the bytes as served (the caller treats it
 * like a transfer failure), 'unpack' is the unpacker refusing or failing (or the worker dying).
 */
export type UnpackStage = 'decompress' | 'unpack';

export type UnpackOutcome = { ok: true; entries: number; bytes: number; diffId: string } | { ok: false; stage: UnpackStage; error: Error };

export interface UnpackJob {
  /** Write the compressed layer here; destroying it with an error cancels the layer. */
  input: Writable;
  /**
   * Settles (never rejects) once the worker has stopped touching `dest`, so the caller may then
   * discard it. A failure also destroys `input`, which stops whatever feeds it.
   */
  outcome: Promise<UnpackOutcome>;
}

interface Slot {
  worker: Worker;
  /** Fails each layer on this worker; called when the worker dies. */
  jobs: Set<(err: Error) => void>;
  /** Ends a worker left idle: each thread holds a V8 heap of its own (~10 MB). */
  idleTimer?: NodeJS.Timeout;
}

/** An idle worker is kept this long for the next layer, then stopped (a new one costs ~30 ms). */
const IDLE_MS = 5_000;

type ErrorClass = new (message: string) => Error;

// Every CriError class in errors.ts, by name: a worker's error comes back as plain data and must
// become the same class again, because the gRPC status code is chosen by instanceof.
const criClasses = new Map<string, ErrorClass>();
for (const v of Object.values(errors)) {
  if (typeof v === 'function' && (v === errors.CriError || v.prototype instanceof errors.CriError)) {
    criClasses.set(v.name, v as unknown as ErrorClass);
  }
}

/** The worker's error as an instance of the class it had there, with its message and stack. */
export function reviveError(e: SerializedError): Error {
  let err: Error;
  if (e.name === 'LayerPathError') {
    err = new LayerPathError(e.entry ?? '', '');
  } else {
    const C = criClasses.get(e.name);
    err = C ? new C('') : new Error('');
  }
  // Set after construction: some constructors (RegistryUnavailableError) decorate the message.
  err.message = e.message;
  err.name = e.name;
  if (e.code !== undefined) (err as NodeJS.ErrnoException).code = e.code;
  if (e.stack !== undefined) err.stack = e.stack;
  return err;
}

export class UnpackPool {
  private readonly slots: Slot[] = [];

  /**
   * `size`: most worker threads ever running; more layers than that share threads. The default
   * is one per CPU (at least 2), but no more than the layers that can be unpacked at once.
   */
  constructor(
    readonly size: number,
    private readonly workerFile: string = path.join(__dirname, 'unpack_worker.js'),
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`unpack pool size must be a positive integer, got ${size}`);
  }

  static defaultSize(concurrentLayers: number): number {
    return Math.max(1, Math.min(Math.max(2, os.availableParallelism()), concurrentLayers));
  }

  /** Worker threads running now (for tests and metrics). */
  get threads(): number {
    return this.slots.length;
  }

  /** Unpacks the layer written to `input` into the existing empty directory `dest`. */
  unpack(dest: string, compression: Compression, signal?: AbortSignal): UnpackJob {
    const slot = this.pick();
    const { port1: port, port2 } = new MessageChannel();
    let inflight = 0;
    let blocked: (() => void) | null = null;
    let settled = false;
    let resolve!: (o: UnpackOutcome) => void;
    const outcome = new Promise<UnpackOutcome>((r) => (resolve = r));

    const abort = (reason: string): void => {
      if (!settled) port.postMessage({ type: 'abort', reason } satisfies ToWorker);
    };
    const onAbort = (): void => abort(errors.messageOf(signal?.reason ?? 'aborted'));
    const finish = (o: UnpackOutcome): void => {
      if (settled) return;
      settled = true;
      slot.jobs.delete(fail);
      if (slot.jobs.size === 0) {
        slot.worker.unref();
        slot.idleTimer = setTimeout(() => this.retire(slot), IDLE_MS);
        slot.idleTimer.unref();
      }
      signal?.removeEventListener('abort', onAbort);
      port.close();
      blocked = null;
      if (!o.ok) input.destroy(o.error);
      resolve(o);
    };
    const fail = (err: Error): void => finish({ ok: false, stage: 'unpack', error: err });

    // Chunks are coalesced: an HTTP body arrives in pieces of a few KiB to 64 KiB, and each
    // message and its ack cost both threads more than copying the bytes does.
    let batch: Uint8Array | null = null;
    let filled = 0;
    const flush = (): void => {
      if (!batch || filled === 0) return;
      port.postMessage({ type: 'chunk', data: batch.buffer as ArrayBuffer, length: filled } satisfies ToWorker, [batch.buffer as ArrayBuffer]);
      inflight += filled;
      batch = null;
      filled = 0;
    };
    const input = new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (settled) {
          cb();
          return;
        }
        for (let off = 0; off < chunk.length;) {
          batch ??= new Uint8Array(BATCH);
          const n = Math.min(chunk.length - off, BATCH - filled);
          batch.set(chunk.subarray(off, off + n), filled);
          filled += n;
          off += n;
          if (filled === BATCH) flush();
        }
        if (inflight < WINDOW) cb();
        else blocked = cb;
      },
      final(cb) {
        if (!settled) {
          flush();
          port.postMessage({ type: 'end' } satisfies ToWorker);
        }
        cb();
      },
      destroy(err, cb) {
        // Destroyed without an error only after a normal finish (autoDestroy): the worker
        // still has the tail of the layer to unpack.
        if (err) abort(errors.messageOf(err));
        blocked = null;
        batch = null;
        cb(err);
      },
    });

    port.on('message', (m: FromWorker) => {
      switch (m.type) {
        case 'ack':
          inflight -= m.bytes;
          if (blocked && inflight < WINDOW) {
            const cb = blocked;
            blocked = null;
            cb();
          }
          break;
        case 'done':
          finish({ ok: true, entries: m.entries, bytes: m.bytes, diffId: m.diffId });
          break;
        case 'failed':
          finish({ ok: false, stage: m.stage, error: reviveError(m.error) });
          break;
      }
    });
    slot.jobs.add(fail);
    clearTimeout(slot.idleTimer);
    slot.worker.ref();
    slot.worker.postMessage({ dest, compression, port: port2 } satisfies JobRequest, [port2]);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    return { input, outcome };
  }

  private retire(slot: Slot): void {
    if (slot.jobs.size > 0) return;
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
    void slot.worker.terminate();
  }

  /** Stops every worker; layers still unpacking fail. */
  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  /** The least busy worker, or a new one while a thread is free and every worker has work. */
  private pick(): Slot {
    let best: Slot | undefined;
    for (const s of this.slots) if (!best || s.jobs.size < best.jobs.size) best = s;
    if (best && (best.jobs.size === 0 || this.slots.length >= this.size)) return best;
    return this.spawn();
  }

  private spawn(): Slot {
    const worker = new Worker(this.workerFile);
    // Idle workers must never keep the daemon (or a test) alive. A busy one must, or its exit
    // (a crash) might never be reported: the layer's MessagePort closes with the thread.
    worker.unref();
    const slot: Slot = { worker, jobs: new Set() };
    let crash: Error | undefined;
    worker.on('error', (err) => {
      crash ??= err;
    });
    worker.on('exit', (code) => {
      const i = this.slots.indexOf(slot);
      if (i >= 0) this.slots.splice(i, 1);
      const err = new Error(crash ? `unpack worker failed: ${crash.message}` : `unpack worker exited with code ${code}`, crash ? { cause: crash } : undefined);
      for (const fail of [...slot.jobs]) fail(err);
    });
    this.slots.push(slot);
    return slot;
  }
}
