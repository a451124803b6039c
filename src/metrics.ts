import http from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './log';

/** The daemon's Prometheus metrics; one instance per daemon, so two daemons can share a process. */
export class Metrics {
  readonly registry = new Registry();
  readonly grpcRequests = new Counter({
    name: 'tscri_grpc_requests_total',
    help: 'CRI requests by method and gRPC status code',
    labelNames: ['method', 'code'],
    registers: [this.registry],
  });
  readonly grpcDuration = new Histogram({
    name: 'tscri_grpc_request_duration_seconds',
    help: 'CRI request latency by method and gRPC status code',
    labelNames: ['method', 'code'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly pullBytes = new Counter({
    name: 'tscri_image_pull_bytes_total',
    help: 'Compressed layer bytes downloaded by image pulls',
    registers: [this.registry],
  });
  readonly pullDuration = new Histogram({
    name: 'tscri_image_pull_duration_seconds',
    help: 'Image pull duration by outcome',
    labelNames: ['outcome'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  private server?: http.Server;

  constructor() {
    // The event loop delay is sampled by a timer: prom-client's 10 ms default wakes an idle
    // daemon 100 times a second, which was most of its idle CPU. 100 ms still sees a stalled loop.
    collectDefaultMetrics({ register: this.registry, prefix: 'tscri_process_', eventLoopMonitoringPrecision: 100 });
  }

  /** Serves /metrics on `host:port`; returns the bound address (port 0 picks one). */
  async listen(address: string, log: Logger): Promise<string | undefined> {
    if (!address) return undefined;
    const idx = address.lastIndexOf(':');
    const host = address.slice(0, idx).replace(/^\[|\]$/g, '');
    const port = Number(address.slice(idx + 1));
    const server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500).end(err instanceof Error ? err.message : String(err)),
      );
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => resolve());
      });
    } catch (err) {
      // A second daemon on the same machine must still start; it just has no metrics endpoint.
      log.warn({ err, address }, 'metrics endpoint not started');
      return undefined;
    }
    this.server = server;
    const bound = server.address();
    return typeof bound === 'object' && bound ? `${bound.address}:${bound.port}` : address;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
