// Minimal clients of the Kubernetes streaming protocols for the benchmarks: remote command (exec)
// and port-forward over SPDY/3.1, using tscri's own framer/session in client mode. They speak
// what kubectl speaks (client-go's remotecommand and portforward packages), enough to time a
// round trip or move bytes, against any CRI streaming server (tscri's or containerd's).
import { SpdySession, type SpdyStream } from '../../src/streaming/spdy/session';
import { upgradeSpdy } from '../helpers/spdy_upgrade';

async function openSession(url: string, protocol: string): Promise<SpdySession> {
  const up = await upgradeSpdy(url, [protocol]);
  if (up.status !== 101) {
    up.socket.destroy();
    throw new Error(`${url}: upgrade answered ${up.status}: ${up.headers.split('\r\n')[0]}`);
  }
  if (up.protocol !== protocol) {
    up.socket.destroy();
    throw new Error(`${url}: asked for ${protocol}, server chose ${up.protocol ?? 'nothing'}`);
  }
  const session = new SpdySession(up.socket, { server: false, head: up.head });
  up.socket.resume();
  return session;
}

/** Everything a stream carries until its end (FIN, reset or the connection closing). */
export function readAll(s: SpdyStream | undefined): Promise<Buffer> {
  if (!s) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const done = (): void => resolve(Buffer.concat(parts));
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', done);
    s.once('close', done);
  });
}

export interface ExecResult {
  stdout: Buffer;
  stderr: Buffer;
  /** What the error stream carried: a v4 Status JSON document. */
  error: string;
}

/**
 * One non-interactive remote command, as `kubectl exec` without -i or -t: upgrade, open the
 * error, stdout and stderr streams (they must match the Exec request's stdout/stderr), read
 * each to its end. Resolves once the output and the exit status are in.
 */
export async function spdyExec(
  url: string,
  protocol = 'v4.channel.k8s.io',
  want: { stdout?: boolean; stderr?: boolean } = { stdout: true, stderr: true },
): Promise<ExecResult> {
  const session = await openSession(url, protocol);
  try {
    const error = await session.openStream({ streamtype: 'error' });
    const errorText = readAll(error);
    const stdout = want.stdout ? await session.openStream({ streamtype: 'stdout' }) : undefined;
    const stderr = want.stderr ? await session.openStream({ streamtype: 'stderr' }) : undefined;
    const [o, e, x] = await Promise.all([readAll(stdout), readAll(stderr), errorText]);
    return { stdout: o, stderr: e, error: x.toString('utf8') };
  } finally {
    session.destroy();
  }
}

export interface ForwardedConnection {
  /** The bytes to and from the pod's port. */
  data: SpdyStream;
  /** What the server reported on the error stream, once it ended ('' when all went well). */
  error: Promise<string>;
}

/** A port-forward session (`portforward.k8s.io`): one stream pair per forwarded connection. */
export class PortForwardClient {
  private nextRequestId = 0;

  private constructor(readonly session: SpdySession) {}

  static async connect(url: string): Promise<PortForwardClient> {
    return new PortForwardClient(await openSession(url, 'portforward.k8s.io'));
  }

  /** Opens one connection to `port` on the pod's localhost, as client-go does: error stream, then data. */
  async connection(port: number): Promise<ForwardedConnection> {
    const requestid = String(this.nextRequestId++);
    const error = await this.session.openStream({ streamtype: 'error', port: String(port), requestid });
    const errorText = readAll(error).then((b) => b.toString('utf8'));
    // client-go never writes on a port-forward error stream: it half-closes it right away.
    error.end();
    const data = await this.session.openStream({ streamtype: 'data', port: String(port), requestid });
    return { data, error: errorText };
  }

  close(): void {
    this.session.destroy();
  }
}

/**
 * `GET path` over a forwarded connection, HTTP/1.1 with Content-Length: resolves with the body
 * size once it is all in. The data stream is not half-closed (a half-close is a hint to end the
 * forwarding, which some servers act on within a second).
 */
export function httpGet(conn: ForwardedConnection, urlPath: string, timeoutMs = 120_000): Promise<{ status: number; bytes: number }> {
  const { data } = conn;
  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0);
    let status = 0;
    let length = -1;
    let got = 0;
    const timer = setTimeout(() => finish(new Error(`GET ${urlPath}: ${got} of ${length} body bytes after ${timeoutMs} ms`)), timeoutMs);
    const finish = (err?: Error): void => {
      clearTimeout(timer);
      data.off('data', onData);
      data.off('end', onEnd);
      if (err) reject(err);
      else resolve({ status, bytes: got });
    };
    const onData = (d: Buffer): void => {
      if (length < 0) {
        head = Buffer.concat([head, d]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        const text = head.subarray(0, end).toString('latin1');
        status = Number(/^HTTP\/1\.[01] (\d+)/.exec(text)?.[1] ?? 0);
        const cl = /^content-length:\s*(\d+)/im.exec(text);
        if (!cl) {
          finish(new Error(`GET ${urlPath}: no Content-Length in ${JSON.stringify(text)}`));
          return;
        }
        length = Number(cl[1]);
        got = head.length - end - 4;
        head = Buffer.alloc(0);
      } else {
        got += d.length;
      }
      if (got >= length) finish();
    };
    const onEnd = (): void => finish(new Error(`GET ${urlPath}: stream ended after ${got} of ${length} body bytes`));
    data.on('data', onData);
    data.once('end', onEnd);
    data.write(`GET ${urlPath} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: tscri-bench\r\n\r\n`);
  });
}

/**
 * Writes `bytes` bytes (in `chunk`-sized writes, honouring backpressure) over a forwarded
 * connection, then waits for the first byte the pod sends back: the sink's acknowledgement that
 * it read them all.
 */
export async function upload(conn: ForwardedConnection, bytes: number, chunk: Buffer, timeoutMs = 120_000): Promise<void> {
  const { data } = conn;
  const ack = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`upload: no acknowledgement within ${timeoutMs} ms`)), timeoutMs);
    data.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    data.once('end', () => {
      clearTimeout(timer);
      reject(new Error('upload: the stream ended before the sink acknowledged'));
    });
  });
  ack.catch(() => undefined);
  for (let sent = 0; sent < bytes;) {
    const n = Math.min(chunk.length, bytes - sent);
    if (!data.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          data.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          data.off('drain', onDrain);
          reject(new Error('upload: the stream closed'));
        };
        data.once('drain', onDrain);
        data.once('close', onClose);
      });
    }
    sent += n;
  }
  await ack;
}
