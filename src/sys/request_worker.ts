import { Worker } from 'node:worker_threads';

type Pending<R> = { resolve: (r: R) => void; reject: (e: Error) => void };
export type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;

/**
 * A long-lived worker thread answering `{ id, … }` requests with `{ id, … }` replies: where
 * namespace work runs (a thread can setns; the main thread must not). The thread starts on
 * the first request, is referenced only while a request waits (an idle worker must not keep
 * the daemon alive, but a caller must not see the process exit under it), and is stopped after
 * `idleMs` without requests: each thread holds a V8 heap of its own, about 10 MB.
 */
export class RequestWorker<Req extends { id: number }, Reply extends { id: number }> {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending<Reply>>();
  private idleTimer?: NodeJS.Timeout;

  constructor(
    private readonly file: string,
    private readonly what: string,
    private readonly idleMs: number,
    /** Called with a reply nobody waits for any more (e.g. to close an fd it carries). */
    private readonly orphan?: (reply: Reply) => void,
  ) {}

  request(req: DistributiveOmit<Req, 'id'>): Promise<Reply> {
    const worker = this.worker ?? this.start();
    clearTimeout(this.idleTimer);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) worker.ref();
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ ...req, id });
    });
  }

  /** Whether a thread runs now (for tests). */
  get running(): boolean {
    return this.worker !== undefined;
  }

  async stop(): Promise<void> {
    clearTimeout(this.idleTimer);
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }

  private start(): Worker {
    const w = new Worker(this.file);
    w.unref();
    w.on('message', (reply: Reply) => {
      const p = this.pending.get(reply.id);
      if (!p) {
        this.orphan?.(reply);
        return;
      }
      this.pending.delete(reply.id);
      if (this.pending.size === 0) {
        w.unref();
        this.idleTimer = setTimeout(() => {
          if (this.pending.size === 0 && this.worker === w) void this.stop();
        }, this.idleMs);
        this.idleTimer.unref();
      }
      p.resolve(reply);
    });
    const lost = (err: Error): void => {
      if (this.worker === w) this.worker = undefined;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    w.on('error', (err) => lost(new Error(`${this.what} worker failed: ${err.message}`, { cause: err })));
    w.on('exit', (code) => lost(new Error(`${this.what} worker exited with code ${code}`)));
    this.worker = w;
    return w;
  }
}
