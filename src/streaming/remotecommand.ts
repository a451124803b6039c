// Kubernetes remote command (exec, attach) over SPDY/3.1 or WebSocket: which streams a client
// opens, how it asks for a protocol version, and how the outcome reaches it. From
// k8s.io/apimachinery's remotecommand constants and the kubelet's streaming server:
//
//   channel.k8s.io (v1), v2   error stream: plain text, written only on failure
//   v3.channel.k8s.io         + resize stream (JSON TerminalSize objects, one after another)
//   v4.channel.k8s.io         error stream: JSON metav1.Status, exit code in details.causes
//   v5.channel.k8s.io         WebSocket: + "close channel" message (255, id) for stdin EOF;
//                             over SPDY a stream FIN already does that, so it is v4 there
//
// WebSocket messages are <channel byte><payload>: 0 stdin, 1 stdout, 2 stderr, 3 error,
// 4 resize; the base64 variants send text frames with the channel as an ASCII digit.

import { EventEmitter } from 'node:events';
import { PassThrough, type Readable, Writable } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Logger } from '../log';
import type { SpdySession, SpdyStream } from './spdy/session';

export const V1 = 'channel.k8s.io';
export const V2 = 'v2.channel.k8s.io';
export const V3 = 'v3.channel.k8s.io';
export const V4 = 'v4.channel.k8s.io';
export const V5 = 'v5.channel.k8s.io';
export const V4_BASE64 = 'v4.base64.channel.k8s.io';
export const V1_BASE64 = 'base64.channel.k8s.io';

/** Newest first: the server picks the first of these that the client also offered. */
export const SPDY_PROTOCOLS = [V5, V4, V3, V2, V1];
export const WEBSOCKET_PROTOCOLS = [V5, V4, V4_BASE64, V1, V1_BASE64];

const CH_STDIN = 0;
const CH_STDOUT = 1;
const CH_STDERR = 2;
const CH_ERROR = 3;
const CH_RESIZE = 4;
const CH_CLOSE = 255;

/** How long a SPDY client may take to open the streams it asked for (kubelet's default). */
const STREAM_CREATION_TIMEOUT_MS = 30_000;

export interface StreamOptions {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

export interface TerminalSize {
  width: number;
  height: number;
}

export type Outcome = { exitCode: number; command?: string[] } | { error: Error };

/**
 * One remote command session, whatever carries it. `stdin` ends when the client closes it (or
 * goes away); `resize` emits 'resize' with a TerminalSize; `gone` settles when the client
 * disconnects.
 */
export interface RemoteIO {
  readonly protocol: string;
  readonly stdin?: Readable;
  readonly stdout?: Writable;
  readonly stderr?: Writable;
  readonly resize: EventEmitter;
  readonly gone: Promise<void>;
  /** The most recent size the client announced. */
  lastSize?: TerminalSize;
  /** Waits (bounded) for the first resize message, so a TTY can start at the right size. */
  firstSize(timeoutMs: number): Promise<TerminalSize | undefined>;
  /** Reports the outcome on the error channel and closes everything. */
  finish(outcome: Outcome): Promise<void>;
}

/** The newest protocol both sides speak; '' when the client offered none (legacy v1). */
export function negotiate(offered: string[], supported: string[]): string | undefined {
  const clean = offered
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter(Boolean);
  if (clean.length === 0) return '';
  return supported.find((p) => clean.includes(p));
}

/** metav1.Status as the v4 error stream carries it. */
export function statusJson(outcome: Outcome): string {
  if ('exitCode' in outcome) {
    if (outcome.exitCode === 0) return JSON.stringify({ metadata: {}, status: 'Success' });
    const cmd = outcome.command ? ` ${JSON.stringify(outcome.command)}` : '';
    return JSON.stringify({
      metadata: {},
      status: 'Failure',
      message: `command terminated with non-zero exit code: command${cmd} exited with ${outcome.exitCode}`,
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: String(outcome.exitCode) }] },
    });
  }
  return JSON.stringify({
    metadata: {},
    status: 'Failure',
    message: outcome.error.message,
    reason: 'InternalError',
    details: { causes: [{ message: outcome.error.message }] },
    code: 500,
  });
}

/** v1–v3 error stream: nothing on success, the message otherwise. */
function plainStatus(outcome: Outcome): string | undefined {
  if ('exitCode' in outcome) {
    return outcome.exitCode === 0 ? undefined : `command terminated with non-zero exit code: exit status ${outcome.exitCode}`;
  }
  return outcome.error.message;
}

/** Splits concatenated JSON objects ({"Width":80,"Height":24}{"Width":…}) as they arrive. */
class ResizeDecoder {
  private buf = '';

  constructor(private readonly onSize: (s: TerminalSize) => void) {}

  push(text: string): void {
    this.buf += text;
    for (;;) {
      const start = this.buf.indexOf('{');
      if (start < 0) {
        this.buf = '';
        return;
      }
      const end = this.buf.indexOf('}', start);
      if (end < 0) {
        this.buf = this.buf.slice(start);
        return;
      }
      const obj = this.buf.slice(start, end + 1);
      this.buf = this.buf.slice(end + 1);
      try {
        const v = JSON.parse(obj) as { Width?: unknown; Height?: unknown; width?: unknown; height?: unknown };
        const width = Number(v.Width ?? v.width ?? 0);
        const height = Number(v.Height ?? v.height ?? 0);
        if (width > 0 && height > 0) this.onSize({ width, height });
      } catch {
        // A malformed size is dropped, like the kubelet's decoder stops at one.
      }
    }
  }
}

abstract class BaseIO implements RemoteIO {
  abstract readonly protocol: string;
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  readonly resize = new EventEmitter();
  lastSize?: TerminalSize;
  readonly gone: Promise<void>;
  protected markGone!: () => void;
  protected finished = false;

  constructor() {
    this.gone = new Promise((resolve) => {
      this.markGone = resolve;
    });
  }

  protected announce(size: TerminalSize): void {
    this.lastSize = size;
    this.resize.emit('resize', size);
  }

  firstSize(timeoutMs: number): Promise<TerminalSize | undefined> {
    if (this.lastSize) return Promise.resolve(this.lastSize);
    return new Promise((resolve) => {
      const done = (s?: TerminalSize): void => {
        clearTimeout(timer);
        this.resize.off('resize', done);
        resolve(s);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.resize.on('resize', done);
      void this.gone.then(() => done(undefined));
    });
  }

  abstract finish(outcome: Outcome): Promise<void>;
}

/** Ends a writable and waits until its last byte left (or it broke). */
function endWritable(w: Writable | undefined): Promise<void> {
  if (!w || w.destroyed || w.writableFinished) return Promise.resolve();
  return new Promise((resolve) => {
    w.once('finish', () => resolve());
    w.once('close', () => resolve());
    w.once('error', () => resolve());
    w.end();
  });
}

class SpdyIO extends BaseIO {
  error?: SpdyStream;

  constructor(
    readonly protocol: string,
    private readonly session: SpdySession,
  ) {
    super();
    session.once('close', () => this.markGone());
  }

  attach(stream: SpdyStream): void {
    switch (stream.headers['streamtype']) {
      case 'error':
        this.error = stream;
        stream.resume();
        break;
      case 'stdin':
        this.stdin = stream;
        break;
      case 'stdout':
        this.stdout = stream;
        stream.resume();
        break;
      case 'stderr':
        this.stderr = stream;
        stream.resume();
        break;
      case 'resize': {
        const dec = new ResizeDecoder((s) => this.announce(s));
        stream.on('data', (d: Buffer) => dec.push(d.toString('utf8')));
        break;
      }
      default:
        stream.destroy();
    }
  }

  async finish(outcome: Outcome): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    const text = this.protocol === V4 || this.protocol === V5 ? statusJson(outcome) : plainStatus(outcome);
    await Promise.all([endWritable(this.stdout), endWritable(this.stderr)]);
    if (this.error && text !== undefined && !this.error.destroyed) this.error.write(text);
    await endWritable(this.error);
    await this.session.close();
  }
}

/**
 * Waits for the streams a SPDY client was told to open (kubelet counts them: error, one per
 * requested stdio stream, resize for a TTY from v3 on) and returns the session's RemoteIO.
 */
export function spdyRemoteIO(session: SpdySession, protocol: string, opts: StreamOptions, log: Logger): Promise<RemoteIO> {
  const io = new SpdyIO(protocol || V1, session);
  const resizing = protocol === V3 || protocol === V4 || protocol === V5;
  const expected = 1 + Number(opts.stdin) + Number(opts.stdout) + Number(opts.stderr && !opts.tty) + Number(opts.tty && resizing);
  return new Promise((resolve, reject) => {
    let received = 0;
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`timed out after ${STREAM_CREATION_TIMEOUT_MS / 1000}s waiting for the client to open ${expected} streams (got ${received})`));
    }, STREAM_CREATION_TIMEOUT_MS);
    const onClose = (): void => {
      clearTimeout(timer);
      reject(new Error(`client disconnected after opening ${received} of ${expected} streams`));
    };
    const onStream = (stream: SpdyStream): void => {
      io.attach(stream);
      received++;
      log.debug({ streamtype: stream.headers['streamtype'], received, expected }, 'remote command stream');
      if (received < expected) return;
      clearTimeout(timer);
      session.off('stream', onStream);
      session.off('close', onClose);
      // Streams opened later than expected are not ours to use.
      session.on('stream', (s: SpdyStream) => s.destroy());
      resolve(io);
    };
    session.on('stream', onStream);
    session.once('close', onClose);
  });
}

class WebSocketIO extends BaseIO {
  private readonly base64: boolean;
  private readonly stdinPipe?: PassThrough;

  constructor(
    readonly protocol: string,
    private readonly ws: WebSocket,
    opts: StreamOptions,
  ) {
    super();
    this.base64 = protocol === V4_BASE64 || protocol === V1_BASE64;
    if (opts.stdin) {
      this.stdinPipe = new PassThrough();
      this.stdin = this.stdinPipe;
    }
    if (opts.stdout) this.stdout = this.channelWriter(CH_STDOUT);
    if (opts.stderr && !opts.tty) this.stderr = this.channelWriter(CH_STDERR);
    const resize = new ResizeDecoder((s) => this.announce(s));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let channel: number;
      let payload: Buffer;
      if (isBinary || !this.base64) {
        if (data.length === 0) return;
        channel = data.readUInt8(0);
        payload = data.subarray(1);
      } else {
        const text = data.toString('utf8');
        if (text.length === 0) return;
        channel = text.charCodeAt(0) - 48;
        payload = Buffer.from(text.slice(1), 'base64');
      }
      if (channel === CH_STDIN) this.stdinPipe?.write(payload);
      else if (channel === CH_RESIZE) resize.push(payload.toString('utf8'));
      else if (channel === CH_CLOSE && protocol === V5 && payload[0] === CH_STDIN) this.stdinPipe?.end();
    });
    ws.once('close', () => {
      this.stdinPipe?.end();
      this.markGone();
    });
    ws.on('error', () => undefined);
  }

  private frame(channel: number, data: Buffer): Buffer | string {
    return this.base64 ? String.fromCharCode(48 + channel) + data.toString('base64') : Buffer.concat([Buffer.from([channel]), data]);
  }

  private channelWriter(channel: number): Writable {
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (this.ws.readyState !== this.ws.OPEN) {
          cb();
          return;
        }
        this.ws.send(this.frame(channel, chunk), { binary: !this.base64 }, (err) => cb(err ?? undefined));
      },
    });
  }

  async finish(outcome: Outcome): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await Promise.all([endWritable(this.stdout), endWritable(this.stderr)]);
    const text = this.protocol === V4 || this.protocol === V5 || this.protocol === V4_BASE64 ? statusJson(outcome) : plainStatus(outcome);
    if (this.ws.readyState === this.ws.OPEN) {
      if (text !== undefined) {
        await new Promise<void>((resolve) => this.ws.send(this.frame(CH_ERROR, Buffer.from(text)), { binary: !this.base64 }, () => resolve()));
      }
      this.ws.close(1000);
    }
  }
}

export function webSocketRemoteIO(ws: WebSocket, opts: StreamOptions): RemoteIO {
  return new WebSocketIO(ws.protocol || V1, ws, opts);
}
