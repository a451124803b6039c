// TCP connections made from inside a pod's network namespace, for port-forward. setns(2) on the
// main thread would move the whole event loop (and every socket it opens meanwhile) into the pod,
// so a dedicated worker thread creates the socket there (see netns_connect_worker.ts) and passes
// back the bare descriptor: threads share one descriptor table, and the socket keeps its
// namespace wherever it is used. Node then adopts it as an ordinary net.Socket.
//
// One long-lived worker serves every request; starting a Worker costs tens of milliseconds, while
// a connect through the running one costs a message round trip and a few syscalls.

import net from 'node:net';
import path from 'node:path';
import { type DistributiveOmit, RequestWorker } from './request_worker';
import { AF_INET, AF_INET6, closeFd, strerror } from './libc';
import type { ConnectRequest, ConnectWorkerReply, ConnectWorkerRequest } from './netns_connect_worker';

export interface ConnectOptions {
  /** Give up on a handshake that has not finished after this long (default 10 s). */
  timeoutMs?: number;
  /**
   * Keep the write side open after the peer's FIN (net.Socket's option of the same name).
   * Port-forward wants it: the pod may finish sending before the client does.
   */
  allowHalfOpen?: boolean;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** A failed connect: `code` is the errno name (ECONNREFUSED, ETIMEDOUT, ENOENT for a bad path…). */
export class NetnsConnectError extends Error {
  readonly code: string;
  /** The cause alone, as strerror words it ("connection refused"), for callers' own messages. */
  readonly reason: string;
  readonly host: string;
  readonly port: number;
  readonly netnsPath: string | undefined;

  constructor(message: string, code: string, reason: string, host: string, port: number, netnsPath: string | undefined) {
    super(message);
    this.name = 'NetnsConnectError';
    this.code = code;
    this.reason = reason;
    this.host = host;
    this.port = port;
    this.netnsPath = netnsPath;
  }
}

// A reply nobody waits for any more (its request failed when the worker looked lost) still
// carries a socket fd: close it.
const worker = new RequestWorker<ConnectWorkerRequest, ConnectWorkerReply>(
  path.join(__dirname, 'netns_connect_worker.js'),
  'netns-connect',
  // Port-forward connections come in bursts; between them the thread's heap is not kept.
  5_000,
  (reply) => {
    if (reply.ok && reply.fd !== undefined) closeFd(reply.fd);
  },
);

/** struct sockaddr_in / sockaddr_in6 for an IP literal; null when `host` is not one. */
function sockaddr(host: string, port: number): { family: number; addr: Buffer } | null {
  if (net.isIPv4(host)) {
    const addr = Buffer.alloc(16);
    addr.writeUInt16LE(AF_INET, 0);
    addr.writeUInt16BE(port, 2);
    host.split('.').forEach((octet, i) => addr.writeUInt8(Number(octet), 4 + i));
    return { family: AF_INET, addr };
  }
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (net.isIPv6(bare)) {
    const addr = Buffer.alloc(28);
    addr.writeUInt16LE(AF_INET6, 0);
    addr.writeUInt16BE(port, 2);
    ipv6Bytes(bare).copy(addr, 8);
    return { family: AF_INET6, addr };
  }
  return null;
}

/** The 16 bytes of a valid IPv6 literal (with "::" and an optional trailing dotted quad). */
function ipv6Bytes(host: string): Buffer {
  let text = host.split('%')[0];
  const groups: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  let tail: number[] = [];
  if (dotted) {
    const b = dotted[1].split('.').map(Number);
    tail = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
    text = text.slice(0, -dotted[1].length);
    if (text.endsWith(':') && !text.endsWith('::')) text = text.slice(0, -1);
  }
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const gap = text.indexOf('::');
  if (gap >= 0) {
    const head = parse(text.slice(0, gap));
    const rest = [...parse(text.slice(gap + 2)), ...tail];
    groups.push(...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest);
  } else {
    groups.push(...parse(text), ...tail);
  }
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

function reason(errno: number | undefined, code: string): string {
  if (errno === undefined) return code;
  const text = strerror(errno);
  return text.charAt(0).toLowerCase() + text.slice(1);
}

async function connectOnce(netnsPath: string | undefined, port: number, host: string, opts: ConnectOptions): Promise<net.Socket> {
  const sa = sockaddr(host, port);
  if (!sa) throw new TypeError(`connectInNetns: ${JSON.stringify(host)} is not an IP address or "localhost"`);
  const req: DistributiveOmit<ConnectRequest, 'id'> = {
    op: 'connect',
    netns: netnsPath,
    family: sa.family,
    addr: sa.addr,
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  };
  const reply = await worker.request(req);
  const where = netnsPath === undefined ? "the host's network namespace" : `network namespace ${netnsPath}`;
  const shown = sa.family === AF_INET6 ? `[${host}]` : host;
  if (!reply.ok) {
    const code = reply.code ?? 'EIO';
    const why = reply.connectFailed ? reason(reply.errno, code) : reply.message;
    const message = reply.connectFailed ? `connect to ${shown}:${port} in ${where}: ${why}` : `cannot open a socket in ${where} for ${shown}:${port}: ${why}`;
    throw new NetnsConnectError(message, code, why, host, port, netnsPath);
  }
  const fd = reply.fd;
  if (fd === undefined) throw new Error(`netns-connect worker answered ok without a socket for ${shown}:${port} in ${where}`);
  try {
    return new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: opts.allowHalfOpen ?? false });
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/**
 * A TCP connection to `host:port` made from inside the network namespace at `netnsPath`
 * (undefined: the daemon's own). `host` is an IP literal or "localhost", which tries 127.0.0.1 and,
 * if that is refused, ::1, since a pod's server may listen on either.
 * A refused connect rejects with a NetnsConnectError whose code is ECONNREFUSED and whose message
 * names the port and says "connection refused".
 */
export async function connectInNetns(netnsPath: string | undefined, port: number, host = '127.0.0.1', opts: ConnectOptions = {}): Promise<net.Socket> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`connectInNetns: port ${port} is outside 1-65535`);
  }
  if (host !== 'localhost') return connectOnce(netnsPath, port, host, opts);
  try {
    return await connectOnce(netnsPath, port, '127.0.0.1', opts);
  } catch (err) {
    if (!(err instanceof NetnsConnectError && err.code === 'ECONNREFUSED')) throw err;
    try {
      return await connectOnce(netnsPath, port, '::1', opts);
    } catch (err6) {
      if (!(err6 instanceof NetnsConnectError)) throw err6;
      // The IPv4 refusal is the more telling one: ::1 is often simply absent.
      const where = netnsPath === undefined ? "the host's network namespace" : `network namespace ${netnsPath}`;
      const why = err6.code === 'ECONNREFUSED' ? err.reason : `${err.reason} (::1: ${err6.reason})`;
      throw new NetnsConnectError(`connect to localhost:${port} in ${where}: ${why}`, 'ECONNREFUSED', why, 'localhost', port, netnsPath);
    }
  }
}

/** The worker thread's current network namespace (readlink form), for health checks and tests. */
export async function netnsConnectWorkerState(): Promise<string> {
  const reply = await worker.request({ op: 'state' });
  if (!reply.ok || reply.net === undefined) {
    throw new Error(`netns-connect worker state: ${reply.ok ? 'empty' : reply.message}`);
  }
  return reply.net;
}

/** Stops the worker; the next connect starts a new one. */
export function stopNetnsConnectWorker(): Promise<void> {
  return worker.stop();
}
