// The streaming server: the HTTP endpoint behind the URLs that Exec, Attach and PortForward
// return. The kubelet hands those URLs to the API server, which connects to them directly and
// upgrades to SPDY/3.1 or WebSocket. Loopback by default: the API server reaches it through
// the kubelet's proxy unless an operator publishes another address.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import os from 'node:os';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { ContainerRecord } from '../container/container';
import type { Logger } from '../log';
import { servePortForwardSpdy, servePortForwardWebSocket } from './portforward';
import { runAttach } from './attach';
import { ExecStartError, runExec, type RuntimeBinary } from './exec';
import { negotiate, type RemoteIO, SPDY_PROTOCOLS, spdyRemoteIO, type StreamOptions, V4, WEBSOCKET_PROTOCOLS, webSocketRemoteIO } from './remotecommand';
import { SpdySession } from './spdy/session';
import { TokenCache } from './tokens';

export const PORT_FORWARD_PROTOCOL = 'portforward.k8s.io';
const PORT_FORWARD_WS_PROTOCOLS = [V4, PORT_FORWARD_PROTOCOL];

export type StreamRequest =
  | ({ kind: 'exec'; containerId: string; cmd: string[] } & StreamOptions)
  | ({ kind: 'attach'; containerId: string } & StreamOptions)
  | { kind: 'portforward'; sandboxId: string; ports: number[] };

/** What the server needs from the rest of the daemon, looked up when a client connects. */
export interface StreamingBackend {
  container(id: string): ContainerRecord | undefined;
  runtime(handler: string): RuntimeBinary | undefined;
  /** The pod's network namespace path (undefined: host network); throws for an unknown pod. */
  sandboxNetns(id: string): string | undefined;
}

export interface StreamingServerOptions {
  /** host:port; port 0 picks a free one at start. */
  address: string;
  backend: StreamingBackend;
  /** Directory for short-lived console sockets. */
  socketDir: string;
  log: Logger;
  tokenTtlMs?: number;
}

export class StreamingServer {
  private readonly tokens: TokenCache<StreamRequest>;
  private readonly log: Logger;
  private server?: http.Server;
  private readonly sockets = new Set<Duplex>();
  private base = '';

  constructor(private readonly opts: StreamingServerOptions) {
    this.tokens = new TokenCache<StreamRequest>(opts.tokenTtlMs ?? 60_000);
    this.log = opts.log.child({ component: 'streaming' });
  }

  /** http://host:port, as URLs are built; known once started. */
  get baseUrl(): string {
    return this.base;
  }

  async start(): Promise<void> {
    const { host, port } = parseAddress(this.opts.address);
    const server = http.createServer((req, res) => this.onPlainRequest(req, res));
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      this.track(socket);
      this.onUpgrade(req, socket, head).catch((err: unknown) => {
        this.log.error({ err, url: req.url }, 'streaming request failed');
        socket.destroy();
      });
    });
    server.on('connection', (s: net.Socket) => this.track(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const addr = server.address() as AddressInfo;
    this.base = `http://${urlHost(advertisedHost(addr.address))}:${addr.port}`;
    this.log.info({ url: this.base }, 'streaming server listening');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** A single-use URL for a request the RPC layer has validated. */
  urlFor(req: StreamRequest): string {
    if (!this.base) throw new Error('the streaming server is not running');
    const token = this.tokens.insert(req);
    const route = req.kind === 'portforward' ? 'portforward' : req.kind;
    return `${this.base}/${route}/${token}`;
  }

  private track(s: Duplex): void {
    if (this.sockets.has(s)) return;
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
  }

  private route(url: string | undefined): { kind: string; token: string } | undefined {
    const m = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]+)\/?(?:\?.*)?$/.exec(url ?? '');
    return m ? { kind: m[1], token: m[2] } : undefined;
  }

  private onPlainRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const r = this.route(req.url);
    const reply = (code: number, text: string): void => {
      res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(`${text}\n`);
    };
    if (!r) {
      reply(404, 'not found');
      return;
    }
    const t = this.tokens.peek(r.token);
    if (!t.ok) {
      reply(t.status, t.reason);
      return;
    }
    reply(400, `${r.kind} needs a connection upgrade to SPDY/3.1 or websocket`);
  }

  private async onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => undefined);
    const r = this.route(req.url);
    if (!r) {
      rawReply(socket, 404, 'not found');
      return;
    }
    const t = this.tokens.consume(r.token);
    if (!t.ok) {
      rawReply(socket, t.status, t.reason);
      return;
    }
    const sreq = t.value;
    if (sreq.kind !== r.kind) {
      rawReply(socket, 404, 'not found');
      return;
    }
    const log = this.log.child(
      sreq.kind === 'portforward' ? { sandbox: sreq.sandboxId, kind: 'portforward' } : { container: sreq.containerId, kind: sreq.kind },
    );
    const upgrade = (req.headers.upgrade ?? '').toLowerCase();

    if (sreq.kind === 'portforward') return this.servePortForward(sreq, req, socket, head, upgrade, log);

    if (upgrade === 'websocket') {
      const ws = await this.acceptWebSocket(req, socket, head, WEBSOCKET_PROTOCOLS);
      if (!ws) return;
      return this.serveCommand(sreq, webSocketRemoteIO(ws, sreq), log);
    }
    if (!upgrade.startsWith('spdy/3.1')) {
      rawReply(socket, 400, `unsupported upgrade ${JSON.stringify(upgrade)}: want SPDY/3.1 or websocket`);
      return;
    }
    const protocol = negotiate(req.headersDistinct['x-stream-protocol-version'] ?? [], SPDY_PROTOCOLS);
    if (protocol === undefined) {
      rawReply(socket, 403, `none of the offered stream protocols is supported; supported: ${SPDY_PROTOCOLS.join(', ')}`);
      return;
    }
    const session = this.acceptSpdy(socket, head, protocol, log);
    let io: RemoteIO;
    try {
      io = await spdyRemoteIO(session, protocol, sreq, log);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'remote command streams not opened');
      session.destroy();
      return;
    }
    return this.serveCommand(sreq, io, log);
  }

  private acceptSpdy(socket: Duplex, head: Buffer, protocol: string, log: Logger): SpdySession {
    const lines = ['HTTP/1.1 101 Switching Protocols', 'Connection: Upgrade', 'Upgrade: SPDY/3.1'];
    if (protocol) lines.push(`X-Stream-Protocol-Version: ${protocol}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (socket instanceof net.Socket) socket.setNoDelay(true);
    return new SpdySession(socket, { server: true, log, head });
  }

  private acceptWebSocket(req: http.IncomingMessage, socket: Duplex, head: Buffer, supported: string[]): Promise<WebSocket | undefined> {
    const offered = (req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    const chosen = negotiate(offered, supported);
    if (chosen === undefined) {
      rawReply(socket, 403, `none of the offered websocket subprotocols is supported; supported: ${supported.join(', ')}`);
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      const wss = new WebSocketServer({
        noServer: true,
        perMessageDeflate: false,
        maxPayload: 16 << 20,
        handleProtocols: () => chosen || false,
      });
      wss.handleUpgrade(req, socket, head, (ws) => {
        wss.close();
        resolve(ws);
      });
    });
  }

  private async serveCommand(sreq: Extract<StreamRequest, { kind: 'exec' | 'attach' }>, io: RemoteIO, log: Logger): Promise<void> {
    const rec = this.opts.backend.container(sreq.containerId);
    if (!rec || rec.phase !== 'running') {
      await io.finish({ error: new Error(`container ${sreq.containerId} is not running`) });
      return;
    }
    try {
      if (sreq.kind === 'exec') {
        const runtime = this.opts.backend.runtime(rec.runtimeHandler);
        if (!runtime) throw new Error(`container ${rec.id}: runtime handler ${rec.runtimeHandler} is not configured`);
        const exitCode = await runExec({ id: rec.id, bundle: rec.bundle, runtime, socketDir: this.opts.socketDir }, sreq.cmd, io, sreq.tty, log);
        await io.finish({ exitCode, command: sreq.cmd });
      } else {
        await runAttach({ id: rec.id, bundle: rec.bundle }, io, sreq.tty, log);
        await io.finish({ exitCode: 0 });
      }
    } catch (err) {
      if (!(err instanceof ExecStartError)) log.error({ err }, `${sreq.kind} failed`);
      else log.info({ err: err.message }, 'exec did not start');
      await io.finish({ error: err as Error });
    }
  }

  private async servePortForward(
    sreq: Extract<StreamRequest, { kind: 'portforward' }>,
    req: http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    upgrade: string,
    log: Logger,
  ): Promise<void> {
    let netnsPath: string | undefined;
    try {
      netnsPath = this.opts.backend.sandboxNetns(sreq.sandboxId);
    } catch (err) {
      rawReply(socket, 404, (err as Error).message);
      return;
    }
    if (upgrade === 'websocket') {
      const ws = await this.acceptWebSocket(req, socket, head, PORT_FORWARD_WS_PROTOCOLS);
      if (!ws) return;
      const url = new URL(req.url ?? '/', 'http://x');
      const queried = url.searchParams
        .getAll('port')
        .map(Number)
        .filter((p) => Number.isInteger(p) && p > 0 && p < 65536);
      servePortForwardWebSocket(ws, { netnsPath }, queried.length > 0 ? queried : sreq.ports, log);
      return;
    }
    if (!upgrade.startsWith('spdy/3.1')) {
      rawReply(socket, 400, `unsupported upgrade ${JSON.stringify(upgrade)}: want SPDY/3.1 or websocket`);
      return;
    }
    const protocol = negotiate(req.headersDistinct['x-stream-protocol-version'] ?? [], [PORT_FORWARD_PROTOCOL]);
    if (protocol === undefined) {
      rawReply(socket, 403, `port forwarding speaks ${PORT_FORWARD_PROTOCOL} only`);
      return;
    }
    const session = this.acceptSpdy(socket, head, protocol, log);
    servePortForwardSpdy(session, { netnsPath }, log);
  }
}

/** An HTTP error written straight to an upgrade socket, which then closes. */
function rawReply(socket: Duplex, code: number, text: string): void {
  const body = `${text}\n`;
  socket.end(
    `HTTP/1.1 ${code} ${http.STATUS_CODES[code] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function parseAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]*):(\d+)$/.exec(address);
  if (!m) throw new Error(`streaming address ${JSON.stringify(address)}: want host:port`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

/** A wildcard bind still needs a concrete host in the URLs: the first external address. */
function advertisedHost(bound: string): string {
  if (bound !== '0.0.0.0' && bound !== '::') return bound;
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (!a.internal && (a.family === 'IPv4' || bound === '::')) return a.address;
    }
  }
  return '127.0.0.1';
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
