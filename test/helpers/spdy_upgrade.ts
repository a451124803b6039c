// The client side of the HTTP upgrade to SPDY/3.1 that Kubernetes streaming starts with
// (client-go's spdystream round tripper), shared by the streaming e2e tests and the benchmarks.
import net from 'node:net';

export interface Upgraded {
  status: number;
  headers: string;
  /** The negotiated X-Stream-Protocol-Version, when the server named one. */
  protocol?: string;
  socket: net.Socket;
  /** Bytes read past the end of the response headers: the first frames. */
  head: Buffer;
}

/**
 * POSTs an `Upgrade: SPDY/3.1` request offering `protocols`; resolves on the response headers
 * with the socket paused, so no frame is read before the caller's session listens: resume it.
 */
export function upgradeSpdy(url: string, protocols: string[], timeoutMs = 10_000): Promise<Upgraded> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port || 80), u.hostname);
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no upgrade response from ${url} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('connect', () => {
      const lines = [`POST ${u.pathname}${u.search} HTTP/1.1`, `Host: ${u.host}`, 'Connection: Upgrade', 'Upgrade: SPDY/3.1'];
      for (const p of protocols) lines.push(`X-Stream-Protocol-Version: ${p}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    });
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.off('data', onData);
      // Paused until a session takes over: no frame may be read by nobody.
      socket.pause();
      const headers = buf.subarray(0, end).toString('latin1');
      resolve({
        status: Number(/^HTTP\/1\.[01] (\d+)/.exec(headers)?.[1] ?? 0),
        headers,
        protocol: /^x-stream-protocol-version:\s*(\S+)/im.exec(headers)?.[1],
        socket,
        head: buf.subarray(end + 4),
      });
    };
    socket.on('data', onData);
  });
}
