// Kubernetes port-forward, over either transport the kubelet's streaming proxy speaks:
//
// - SPDY ("portforward.k8s.io"): the client opens a stream pair per forwarded connection, an
//   `error` stream and a `data` stream sharing a `requestid` header. The data stream carries the
//   bytes; the error stream carries at most one message and is closed by us when the connection
//   is over, which is what the client waits for before it forgets the connection.
// - WebSocket ("v4.channel.k8s.io", its base64 twin, or no subprotocol): one connection per port
//   named in the URL, for the socket's whole life, on channels 2i (data) and 2i+1 (error).
//
// Either way the pod side is a TCP connection to localhost made inside the pod's network
// namespace (sys/netns_connect.ts), never a process run in the pod: no socat or nsenter.

import { PassThrough, type Duplex } from 'node:stream';
import type net from 'node:net';
import type { RawData, WebSocket } from 'ws';
import type { Logger } from '../log';
import { connectInNetns, NetnsConnectError } from '../sys/netns_connect';

export interface PortForwardTarget {
  /** The pod's network namespace; undefined for a host-network pod. */
  netnsPath?: string;
  /** Only for messages and logs. */
  podSandboxId?: string;
}

export type PortForwardStream = Duplex & { headers: Record<string, string> };

export interface SpdyLikeSession {
  on(event: 'stream', cb: (stream: PortForwardStream) => void): void;
  on(event: 'close', cb: () => void): void;
}

export interface PortForwardOptions {
  /** How long half of a stream pair may wait for the other (the kubelet's default is 30 s). */
  streamCreationTimeoutMs?: number;
}

const STREAM_CREATION_TIMEOUT_MS = 30_000;
// When the client is gone, the pod still gets what was sent before, but not forever.
const CLIENT_GONE_GRACE_MS = 1_000;
// Past this much unsent WebSocket output, stop reading from the pods until it drains.
const WS_HIGH_WATER = 1 << 20;
const WS_LOW_WATER = 256 << 10;

function header(stream: PortForwardStream, name: string): string | undefined {
  // A header the peer did not send is absent from the record.
  const h: Partial<Record<string, string>> = stream.headers;
  if (h[name] !== undefined) return h[name];
  for (const [k, v] of Object.entries(h)) if (k.toLowerCase() === name) return v;
  return undefined;
}

function parsePort(text: string | undefined): number | null {
  if (text === undefined || !/^\d{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : null;
}

function describeFailure(port: number, target: PortForwardTarget, err: unknown): string {
  const pod = target.podSandboxId ? ` to pod ${target.podSandboxId}` : '';
  let why: string;
  if (err instanceof NetnsConnectError) {
    const ns = target.netnsPath ? ` inside namespace "${target.netnsPath}"` : '';
    why = `failed to connect to localhost:${port}${ns}: ${err.reason}`;
  } else {
    why = err instanceof Error ? err.message : String(err);
  }
  return `error forwarding port ${port}${pod}: ${why}`;
}

function podSocket(target: PortForwardTarget, port: number, allowHalfOpen: boolean): Promise<net.Socket> {
  return connectInNetns(target.netnsPath, port, 'localhost', { allowHalfOpen });
}

// ---- SPDY -----------------------------------------------------------------------------------

interface StreamPair {
  requestId: string;
  data?: PortForwardStream;
  error?: PortForwardStream;
  timer: NodeJS.Timeout;
}

/** Something to tear down when the session goes away. */
interface Live {
  abort(): void;
}

function endQuietly(stream: Duplex, message?: string): void {
  if (stream.destroyed || stream.writableEnded) return;
  if (message !== undefined) stream.write(message);
  stream.end();
}

/**
 * Serves one SPDY port-forward session until it closes: pairs streams by requestid, connects each
 * pair to its port in the pod and copies both ways, with half-close passed through in each
 * direction (client FIN → shutdown(SHUT_WR) to the pod; pod FIN → end of the data stream).
 */
export function servePortForwardSpdy(session: SpdyLikeSession, target: PortForwardTarget, log: Logger, opts: PortForwardOptions = {}): void {
  const pairs = new Map<string, StreamPair>();
  const live = new Set<Live>();
  let closed = false;
  const timeoutMs = opts.streamCreationTimeoutMs ?? STREAM_CREATION_TIMEOUT_MS;

  session.on('stream', (stream) => {
    // An unobserved 'error' on any stream would take the daemon down.
    stream.on('error', (err) => log.debug({ err }, 'port-forward stream error'));
    if (closed) {
      stream.destroy();
      return;
    }
    const type = header(stream, 'streamtype');
    const portText = header(stream, 'port');
    const requestId = header(stream, 'requestid');
    const port = parsePort(portText);
    if ((type !== 'data' && type !== 'error') || port === null || !requestId) {
      // The kubelet refuses such a stream outright; a reset is the nearest thing here.
      log.info({ streamtype: type, port: portText, requestid: requestId }, 'port-forward: rejecting malformed stream');
      stream.destroy();
      return;
    }

    let pair = pairs.get(requestId);
    if (!pair) {
      const p: StreamPair = {
        requestId,
        timer: setTimeout(() => {
          if (pairs.get(requestId) !== p) return;
          pairs.delete(requestId);
          log.info({ requestid: requestId }, 'port-forward: stream pair incomplete, giving up');
          if (p.error) endQuietly(p.error, `timed out waiting for streams for request ${requestId}`);
          p.data?.destroy();
        }, timeoutMs),
      };
      p.timer.unref();
      pairs.set(requestId, p);
      pair = p;
    }
    if (pair[type]) {
      log.info({ requestid: requestId, streamtype: type }, 'port-forward: duplicate stream in a pair');
      stream.destroy();
      return;
    }
    pair[type] = stream;
    if (!pair.data || !pair.error) return;

    clearTimeout(pair.timer);
    pairs.delete(requestId);
    // The data stream's port is the one that counts, as in the kubelet.
    const dataPort = parsePort(header(pair.data, 'port'));
    if (dataPort === null) throw new Error(`port-forward request ${requestId}: its data stream has no valid port`);
    forwardSpdyPair(pair.data, pair.error, dataPort, target, log.child({ requestid: requestId, port: dataPort }), live);
  });

  session.on('close', () => {
    closed = true;
    for (const p of pairs.values()) {
      clearTimeout(p.timer);
      p.data?.destroy();
      p.error?.destroy();
    }
    pairs.clear();
    for (const l of [...live]) l.abort();
    live.clear();
  });
}

function forwardSpdyPair(data: PortForwardStream, error: PortForwardStream, port: number, target: PortForwardTarget, log: Logger, live: Set<Live>): void {
  let sock: net.Socket | undefined;
  let done = false;
  const entry: Live = {
    abort() {
      done = true;
      sock?.destroy();
      data.destroy();
      error.destroy();
    },
  };
  live.add(entry);

  const finish = (err?: unknown): void => {
    if (done) return;
    done = true;
    live.delete(entry);
    if (err !== undefined) {
      const message = describeFailure(port, target, err);
      log.info({ err }, 'port-forward connection failed');
      endQuietly(error, message);
      endQuietly(data);
      // Whatever the client still sends has nowhere to go; reading it keeps its window open.
      data.unpipe();
      data.resume();
    } else {
      log.debug('port-forward connection done');
      endQuietly(error);
    }
  };

  // A reset from the client (closed without its end having been read) drops the pod connection.
  data.on('close', () => {
    if (!data.readableEnded) {
      sock?.destroy();
      finish();
    }
  });

  podSocket(target, port, true).then(
    (s) => {
      if (done) {
        s.destroy();
        return;
      }
      sock = s;
      s.on('error', (err) => finish(err));
      s.on('close', () => finish());
      s.pipe(data);
      data.pipe(s);
      log.debug('port-forward connected');
    },
    (err: unknown) => finish(err),
  );
}

// ---- WebSocket ------------------------------------------------------------------------------

const BASE64_PROTOCOLS = new Set(['v4.base64.channel.k8s.io', 'base64.channel.k8s.io']);

/**
 * Serves one WebSocket port-forward: each of `ports` gets one connection into the pod, opened at
 * once. Every channel first receives its port number (2 bytes, little-endian). The socket is
 * closed once every port's connection is over, or when the client goes away.
 */
export function servePortForwardWebSocket(ws: WebSocket, target: PortForwardTarget, ports: number[], log: Logger): void {
  ws.on('error', (err) => log.debug({ err }, 'port-forward websocket error'));
  if (ports.length === 0 || ports.length > 128 || ports.some((p) => parsePort(String(p)) === null)) {
    // 1008: policy violation; the client named no port, too many, or an impossible one.
    ws.close(1008, 'port-forward needs 1 to 128 ports in 1-65535');
    return;
  }
  const base64 = BASE64_PROTOCOLS.has(ws.protocol);
  let open = true;
  const throttled = new Set<net.Socket>();
  let congested = 0;

  const resumeIfDrained = (): void => {
    if (ws.bufferedAmount > WS_LOW_WATER) return;
    for (const s of throttled) s.resume();
    throttled.clear();
  };
  const send = (channel: number, payload: Buffer, from?: net.Socket): void => {
    if (!open || ws.readyState !== ws.OPEN) return;
    const frame = base64 ? String.fromCharCode(48 + channel) + payload.toString('base64') : Buffer.concat([Buffer.of(channel), payload]);
    ws.send(frame, () => resumeIfDrained());
    if (from && ws.bufferedAmount > WS_HIGH_WATER) {
      from.pause();
      throttled.add(from);
    }
  };

  const forwards = ports.map((port, i) => {
    const dataChannel = 2 * i;
    const errorChannel = 2 * i + 1;
    const flog = log.child({ port });
    // Client bytes wait here until the pod connection exists, and keep the pace of the pod after.
    const inbound = new PassThrough();
    let blocked = false;
    let sock: net.Socket | undefined;
    let done = false;
    let graceTimer: NodeJS.Timeout | undefined;

    const unblock = (): void => {
      if (!blocked) return;
      blocked = false;
      if (--congested === 0 && open) ws.resume();
    };
    const finish = (err?: unknown): void => {
      if (done) return;
      done = true;
      if (graceTimer) clearTimeout(graceTimer);
      if (err !== undefined) {
        flog.info({ err }, 'port-forward connection failed');
        send(errorChannel, Buffer.from(describeFailure(port, target, err)));
      } else {
        flog.debug('port-forward connection done');
      }
      inbound.unpipe();
      inbound.resume();
      unblock();
      if (forwards.every((f) => f.done())) {
        open = false;
        if (ws.readyState === ws.OPEN) ws.close(1000);
      }
    };

    podSocket(target, port, false).then(
      (s) => {
        if (done) {
          s.destroy();
          return;
        }
        sock = s;
        s.on('error', (err) => finish(err));
        s.on('close', () => finish());
        s.on('data', (chunk: Buffer) => send(dataChannel, chunk, s));
        inbound.pipe(s);
        flog.debug('port-forward connected');
      },
      (err: unknown) => finish(err),
    );

    return {
      done: () => done,
      fromClient(payload: Buffer): void {
        if (done || payload.length === 0) return;
        if (!inbound.write(payload) && !blocked) {
          blocked = true;
          if (congested++ === 0) ws.pause();
          inbound.once('drain', unblock);
        }
      },
      clientGone(): void {
        if (done) return;
        inbound.end();
        graceTimer = setTimeout(() => {
          sock?.destroy();
          finish();
        }, CLIENT_GONE_GRACE_MS);
        graceTimer.unref();
      },
    };
  });

  for (let i = 0; i < ports.length; i++) {
    const portBytes = Buffer.alloc(2);
    portBytes.writeUInt16LE(ports[i]);
    send(2 * i, portBytes);
    send(2 * i + 1, portBytes);
  }

  ws.on('message', (raw: RawData) => {
    let buf = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
    if (buf.length === 0) return;
    let channel = buf[0];
    buf = buf.subarray(1);
    if (base64) {
      channel -= 48;
      buf = Buffer.from(buf.toString('latin1'), 'base64');
    }
    // Odd channels are ours to write; anything the client sends there is ignored, as upstream.
    if (channel < 0 || channel % 2 !== 0 || channel / 2 >= forwards.length) return;
    forwards[channel / 2].fromClient(buf);
  });

  ws.on('close', () => {
    open = false;
    for (const s of throttled) s.resume();
    throttled.clear();
    for (const f of forwards) f.clientGone();
  });
}
