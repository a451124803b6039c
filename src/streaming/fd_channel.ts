// A raw descriptor (conmon's SOCK_SEQPACKET attach socket, a pty master) driven by the event
// loop: node:net refuses both, so readiness comes from libuv's poll handle (sys/libc pollFd)
// and the bytes move with read(2)/write(2).

import { EventEmitter } from 'node:events';
import { closeFd, type FdPoller, pollFd, readFd, SHUT_WR, shutdownFd, SysError, writeFd } from '../sys/libc';

export interface FdChannelOptions {
  /**
   * Largest single write. On a SOCK_SEQPACKET socket each write is one packet, and conmon reads
   * packets into a fixed buffer, so bigger ones would be truncated.
   */
  maxWrite?: number;
  /** shutdown(SHUT_WR) on end(): sockets only (a pty master has no half-close). */
  socket?: boolean;
}

/**
 * Events: 'data' (Buffer; on a packet socket, exactly one packet), 'end' (peer closed, or a pty
 * whose slave side is gone), 'error'. The descriptor is owned: close() closes it.
 */
export class FdChannel extends EventEmitter {
  private readonly poller: FdPoller;
  private readonly queue: Array<{ buf: Buffer; cb?: (err?: Error) => void }> = [];
  private readonly readBuf = Buffer.alloc(64 * 1024);
  private reading = true;
  private ending = false;
  private closed = false;
  private ended = false;

  constructor(
    readonly fd: number,
    private readonly opts: FdChannelOptions = {},
  ) {
    super();
    this.poller = pollFd(fd, (status, ev) => this.onPoll(status, ev));
    this.rewatch();
  }

  /** Queues bytes; `cb` runs once the kernel took all of them. */
  write(buf: Buffer, cb?: (err?: Error) => void): void {
    if (this.closed || this.ending) {
      cb?.(new Error('write after end'));
      return;
    }
    const max = this.opts.maxWrite ?? buf.length;
    for (let off = 0; off < buf.length; off += max) {
      const last = off + max >= buf.length;
      this.queue.push({ buf: buf.subarray(off, off + max), cb: last ? cb : undefined });
    }
    if (buf.length === 0) cb?.();
    this.flush();
  }

  /** No more writes; a socket's peer sees end of file once the queue has drained. */
  end(): void {
    if (this.ending || this.closed) return;
    this.ending = true;
    this.flush();
  }

  /** Stops reading until resume(): backpressure from a slow consumer. */
  pause(): void {
    this.reading = false;
    this.rewatch();
  }

  resume(): void {
    this.reading = true;
    this.rewatch();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poller.close();
    closeFd(this.fd);
    for (const w of this.queue.splice(0)) w.cb?.(new Error('channel closed'));
  }

  private rewatch(): void {
    if (this.closed) return;
    this.poller.watch({ readable: this.reading && !this.ended, writable: this.queue.length > 0 });
  }

  private onPoll(status: number, ev: { readable: boolean; writable: boolean }): void {
    if (this.closed) return;
    if (status < 0) {
      // libuv reports POLLERR/POLLHUP as an error status on some descriptors; reading tells
      // the real story (remaining data, then EOF or EIO).
      if (!this.ended) this.readSome();
      if (this.queue.length > 0) this.flush();
      return;
    }
    if (ev.readable) this.readSome();
    if (ev.writable) this.flush();
  }

  private readSome(): void {
    // A bounded number of reads per wakeup keeps one busy descriptor from starving the loop.
    for (let i = 0; i < 16 && this.reading && !this.ended && !this.closed; i++) {
      let n: number | null;
      try {
        n = readFd(this.fd, this.readBuf);
      } catch (err) {
        // A pty master reads EIO once every slave descriptor is closed: the terminal's EOF.
        if (err instanceof SysError && (err.code === 'EIO' || err.code === 'ECONNRESET')) n = 0;
        else {
          this.fail(err as Error);
          return;
        }
      }
      if (n === null) break;
      if (n === 0) {
        this.ended = true;
        this.rewatch();
        this.emit('end');
        return;
      }
      this.emit('data', Buffer.from(this.readBuf.subarray(0, n)));
    }
    this.rewatch();
  }

  private flush(): void {
    while (this.queue.length > 0 && !this.closed) {
      const w = this.queue[0];
      let n: number | null;
      try {
        n = writeFd(this.fd, w.buf);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      if (n === null) break;
      if (n < w.buf.length && !this.opts.maxWrite) {
        w.buf = w.buf.subarray(n);
        continue;
      }
      this.queue.shift();
      w.cb?.();
    }
    if (this.queue.length === 0 && this.ending && this.opts.socket && !this.closed) shutdownFd(this.fd, SHUT_WR);
    this.rewatch();
  }

  private fail(err: Error): void {
    for (const w of this.queue.splice(0)) w.cb?.(err);
    this.ended = true;
    this.rewatch();
    this.emit('error', err);
  }
}
