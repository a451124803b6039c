// A SPDY/3.1 session over an upgraded HTTP connection. It serves the Kubernetes streaming
// clients, which differ from a browser's SPDY in ways that shape this code:
//   - streams carry only their own headers (streamtype, port, requestid), no :method/:path;
//   - they never send WINDOW_UPDATE, so flow control on what we send is not enforced (the
//     window is treated as unlimited) — TCP backpressure on the socket is the only brake;
//   - the server answers every stream with SYN_REPLY right away: clients wait for it before
//     writing (client-go's CreateStream blocks on the reply).

import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import type { Logger } from '../../log';
import { encodeData, FLAG_FIN, FLAG_UNIDIRECTIONAL, type Frame, FrameSplitter, RstStatus, type SpdyHeaders, SpdyFramer } from './framer';

/** Data frames this side sends are cut at this size; spdystream accepts up to 16 MiB. */
const MAX_DATA_FRAME = 64 * 1024;

export interface SpdyStream extends Duplex {
  readonly id: number;
  /** The peer's SYN_STREAM headers, names lowercased. */
  readonly headers: Record<string, string>;
}

class Stream extends Duplex implements SpdyStream {
  localClosed = false;
  remoteClosed = false;
  wasReset = false;

  constructor(
    private readonly session: SpdySession,
    readonly id: number,
    readonly headers: Record<string, string>,
  ) {
    super({ allowHalfOpen: true });
  }

  override _read(): void {
    // Data is pushed as frames arrive; SPDY clients offer no way to slow them down per stream.
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.session.sendData(this.id, chunk, false).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.localClosed = true;
    this.session.sendData(this.id, Buffer.alloc(0), true).then(() => {
      this.session.maybeForget(this);
      cb();
    }, cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // A stream torn down before both sides said FIN is cancelled for the peer too.
    if (!this.wasReset && !(this.localClosed && this.remoteClosed)) {
      this.wasReset = true;
      this.session.resetStream(this.id, RstStatus.CANCEL);
    }
    this.session.forget(this);
    cb(err);
  }

  remoteData(data: Buffer, fin: boolean): void {
    if (this.remoteClosed || this.destroyed) return;
    if (data.length > 0) this.push(data);
    if (fin) this.remoteEnd();
  }

  remoteEnd(): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    this.push(null);
    this.session.maybeForget(this);
  }

  remoteReset(): void {
    this.wasReset = true;
    this.remoteClosed = true;
    this.localClosed = true;
    this.destroy();
  }
}

export interface SpdySessionOptions {
  /** Servers use even stream ids for streams they open, clients odd (draft section 2.3.2). */
  server: boolean;
  log?: Logger;
  /** Bytes already read past the HTTP upgrade: the first frames. */
  head?: Buffer;
}

/**
 * Events: 'stream' (SpdyStream opened by the peer; already replied to when this side is the
 * server), 'goaway', 'close'.
 */
export class SpdySession extends EventEmitter {
  private readonly framer = new SpdyFramer();
  private readonly splitter = new FrameSplitter();
  private readonly streams = new Map<number, Stream>();
  private readonly pendingReplies = new Map<number, (headers: SpdyHeaders) => void>();
  private out: Promise<void> = Promise.resolve();
  private in: Promise<void> = Promise.resolve();
  private nextStreamId: number;
  private nextPingId: number;
  private lastPeerStream = 0;
  private closing = false;
  private closed = false;

  constructor(
    private readonly socket: Duplex,
    private readonly opts: SpdySessionOptions,
  ) {
    super();
    this.nextStreamId = opts.server ? 2 : 1;
    this.nextPingId = opts.server ? 2 : 1;
    if (opts.head && opts.head.length > 0) this.onBytes(opts.head);
    socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    socket.on('error', (err) => {
      opts.log?.debug({ err: err.message }, 'spdy connection error');
      this.teardown();
    });
    socket.on('close', () => this.teardown());
    socket.on('end', () => this.teardown());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Opens a stream and waits for the peer's SYN_REPLY (client side and tests). */
  async openStream(headers: SpdyHeaders): Promise<SpdyStream> {
    if (this.closing || this.closed) throw new Error('spdy session is closing');
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = this.track(new Stream(this, id, headers));
    const replied = new Promise<SpdyHeaders>((resolve) => this.pendingReplies.set(id, resolve));
    await this.send({ type: 'syn_stream', streamId: id, associatedId: 0, priority: 0, flags: 0, headers });
    await Promise.race([replied, new Promise((_, reject) => stream.once('close', () => reject(new Error(`stream ${id} was reset before its reply`))))]);
    return stream;
  }

  /** Round trip time of a PING, in ms. */
  async ping(): Promise<number> {
    const id = this.nextPingId;
    this.nextPingId += 2;
    const start = Date.now();
    const pong = new Promise<void>((resolve) => this.once(`pong:${id}`, () => resolve()));
    await this.send({ type: 'ping', id });
    await pong;
    return Date.now() - start;
  }

  /** GOAWAY, then the connection ends once every queued frame is on the wire. */
  close(): Promise<void> {
    if (this.closing || this.closed) return this.out;
    this.closing = true;
    const done = this.send({ type: 'goaway', lastGoodStreamId: this.lastPeerStream, status: 0 })
      .catch(() => undefined)
      .then(() => {
        this.socket.end();
      });
    return done;
  }

  destroy(): void {
    this.socket.destroy();
    this.teardown();
  }

  // ---- used by streams --------------------------------------------------------------------

  sendData(id: number, data: Buffer, fin: boolean): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`spdy stream ${id}: connection closed`));
    if (data.length <= MAX_DATA_FRAME) return this.write(encodeData(id, fin ? FLAG_FIN : 0, data));
    let last: Promise<void> = Promise.resolve();
    for (let off = 0; off < data.length; off += MAX_DATA_FRAME) {
      const end = Math.min(off + MAX_DATA_FRAME, data.length);
      last = this.write(encodeData(id, fin && end === data.length ? FLAG_FIN : 0, data.subarray(off, end)));
    }
    return last;
  }

  resetStream(id: number, status: number): void {
    if (this.closed || this.closing) return;
    this.send({ type: 'rst_stream', streamId: id, status }).catch(() => undefined);
  }

  maybeForget(s: Stream): void {
    if (s.localClosed && s.remoteClosed) this.streams.delete(s.id);
  }

  forget(s: Stream): void {
    this.streams.delete(s.id);
    this.pendingReplies.delete(s.id);
  }

  // ---- internals ----------------------------------------------------------------------------

  private track(s: Stream): Stream {
    // Consumers attach their own handlers; this one keeps a reset stream from crashing the daemon.
    s.on('error', () => undefined);
    this.streams.set(s.id, s);
    return s;
  }

  /** Queues an encoded frame behind everything queued before it; resolves once written. */
  private write(buf: Buffer): Promise<void> {
    return this.enqueue(() => Promise.resolve(buf));
  }

  private send(frame: Frame): Promise<void> {
    // Encoding is queued too: header blocks share one zlib context and must leave in order.
    return this.enqueue(() => this.framer.encode(frame));
  }

  private enqueue(make: () => Promise<Buffer>): Promise<void> {
    const next = this.out.then(async () => {
      if (this.closed) throw new Error('spdy connection closed');
      const buf = await make();
      if (this.socket.write(buf)) return;
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          this.socket.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          this.socket.off('drain', onDrain);
          reject(new Error('spdy connection closed'));
        };
        this.socket.once('drain', onDrain);
        this.socket.once('close', onClose);
      });
    });
    this.out = next.catch(() => undefined);
    return next;
  }

  private onBytes(chunk: Buffer): void {
    let frames;
    try {
      frames = this.splitter.push(chunk);
    } catch (err) {
      this.protocolError(err as Error);
      return;
    }
    for (const raw of frames) {
      this.in = this.in
        .then(async () => {
          if (this.closed) return;
          this.handle(await this.framer.decode(raw));
        })
        .catch((err: unknown) => this.protocolError(err as Error));
    }
  }

  private handle(f: Frame): void {
    switch (f.type) {
      case 'syn_stream': {
        if (this.closing || this.streams.has(f.streamId) || f.streamId <= this.lastPeerStream) {
          this.resetStream(f.streamId, this.closing ? RstStatus.REFUSED_STREAM : RstStatus.PROTOCOL_ERROR);
          return;
        }
        this.lastPeerStream = f.streamId;
        const s = this.track(new Stream(this, f.streamId, f.headers));
        if (f.flags & FLAG_UNIDIRECTIONAL) s.localClosed = true;
        if (this.opts.server) this.send({ type: 'syn_reply', streamId: f.streamId, flags: 0, headers: {} }).catch(() => undefined);
        if (f.flags & FLAG_FIN) s.remoteEnd();
        this.emit('stream', s);
        return;
      }
      case 'syn_reply': {
        const resolve = this.pendingReplies.get(f.streamId);
        this.pendingReplies.delete(f.streamId);
        resolve?.(f.headers);
        if (f.flags & FLAG_FIN) this.streams.get(f.streamId)?.remoteEnd();
        return;
      }
      case 'data': {
        const s = this.streams.get(f.streamId);
        if (!s) {
          this.resetStream(f.streamId, RstStatus.INVALID_STREAM);
          return;
        }
        s.remoteData(f.data, (f.flags & FLAG_FIN) !== 0);
        return;
      }
      case 'headers': {
        const s = this.streams.get(f.streamId);
        if (s) Object.assign(s.headers, f.headers);
        if (s && f.flags & FLAG_FIN) s.remoteEnd();
        return;
      }
      case 'rst_stream':
        this.streams.get(f.streamId)?.remoteReset();
        return;
      case 'ping':
        // Odd ids come from clients, even ids from servers: echo the peer's, settle our own.
        if ((f.id % 2 === 0) === this.opts.server) this.emit(`pong:${f.id}`);
        else this.send({ type: 'ping', id: f.id }).catch(() => undefined);
        return;
      case 'goaway':
        this.closing = true;
        this.emit('goaway', f.lastGoodStreamId);
        return;
      case 'settings':
      case 'window_update':
      case 'unknown':
        return;
    }
  }

  private protocolError(err: Error): void {
    if (this.closed) return;
    this.opts.log?.warn({ err: err.message }, 'spdy protocol error, closing the connection');
    this.closing = true;
    void this.send({ type: 'goaway', lastGoodStreamId: this.lastPeerStream, status: 1 })
      .catch(() => undefined)
      .then(() => this.destroy());
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    this.closing = true;
    for (const s of [...this.streams.values()]) {
      s.wasReset = true;
      // Readers see the end of what they were reading; writers get errors.
      if (!s.remoteClosed) {
        s.remoteClosed = true;
        s.push(null);
      }
      s.destroy();
    }
    this.streams.clear();
    this.framer.close();
    this.emit('close');
  }
}
