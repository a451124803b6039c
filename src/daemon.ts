import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { type Config, socketPath } from './config';
import { ImageService } from './image/image_service';
import type { Logger } from './log';
import { Metrics } from './metrics';
import { loadCri } from './proto';
import { fixAuthority } from './server/authority_fix';
import { implement } from './server/grpc';
import { imageFsInfo } from './server/image/image_fs_info';
import { listImages } from './server/image/image_list';
import { pullImage } from './server/image/image_pull';
import { removeImage } from './server/image/image_remove';
import { imageStatus } from './server/image/image_status';
import { streamImages } from './server/image/image_stream';
import { runtimeConfig } from './server/runtime/runtime_config';
import { status } from './server/runtime/status';
import { version } from './server/runtime/version';

/** One daemon: its stores, its services and the gRPC server on its socket. No globals. */
export class Daemon {
  readonly metrics = new Metrics();
  readonly images: ImageService;
  private server?: grpc.Server;
  private listener?: net.Server;
  private injector?: ReturnType<grpc.Server['createConnectionInjector']>;

  constructor(readonly cfg: Config, readonly log: Logger) {
    this.images = new ImageService({
      root: cfg.root,
      registryConfigDir: cfg.registryConfigDir,
      insecureRegistries: cfg.insecureRegistries,
      pinnedImages: cfg.pinnedImages,
      maxConcurrentDownloads: cfg.maxConcurrentDownloads,
      progressTimeoutMs: cfg.imagePullProgressTimeoutMs,
      metrics: this.metrics,
      log,
    });
  }

  async start(): Promise<void> {
    const { cfg, log } = this;
    await fs.mkdir(cfg.root, { recursive: true, mode: 0o711 });
    await fs.mkdir(cfg.state, { recursive: true, mode: 0o711 });
    await this.images.init();

    const cri = loadCri();
    const server = new grpc.Server({
      // Image lists and verbose statuses of large nodes exceed the 4 MiB default.
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
    });
    const images = this.images;
    server.addService(
      cri.runtime.v1.RuntimeService.service,
      implement('runtime.v1.RuntimeService', cri.runtime.v1.RuntimeService.service, {
        Version: (req) => version(req),
        Status: (req) => status(req, cfg),
        RuntimeConfig: () => runtimeConfig(cfg),
      }, log, this.metrics),
    );
    server.addService(
      cri.runtime.v1.ImageService.service,
      implement('runtime.v1.ImageService', cri.runtime.v1.ImageService.service, {
        PullImage: (req, ctx) => pullImage(req, images, ctx),
        ListImages: (req) => listImages(req, images),
        StreamImages: { stream: (req, send) => streamImages(req, images, send) },
        ImageStatus: (req) => imageStatus(req, images),
        RemoveImage: (req) => removeImage(req, images),
        ImageFsInfo: () => imageFsInfo(images),
      }, log, this.metrics),
    );

    const sock = socketPath(cfg);
    await fs.mkdir(path.dirname(sock), { recursive: true, mode: 0o711 });
    // A socket left by a daemon that died is in the way; a live daemon on it is a user error
    // that bind would not report (unlinking a unix socket steals it), so check first.
    await removeStaleSocket(sock);
    // Connections are accepted here and handed to grpc-js, so that old clients' socket-path
    // authorities can be fixed on the way in (server/authority_fix.ts).
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const listener = net.createServer((socket) => injector.injectConnection(fixAuthority(socket)));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(sock, () => resolve());
    });
    await fs.chmod(sock, 0o660);
    this.server = server;
    this.listener = listener;
    this.injector = injector;
    const metricsAt = await this.metrics.listen(cfg.metricsListen, log);
    log.info({ listen: cfg.listen, root: cfg.root, state: cfg.state, metrics: metricsAt }, 'tscri serving');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (server) {
      const listener = this.listener!;
      await new Promise<void>((resolve) => listener.close(() => resolve()));
      await new Promise<void>((resolve) => {
        // In-flight calls get a moment to finish; then they are cut off.
        const timer = setTimeout(() => {
          this.injector!.destroy();
          server.forceShutdown();
        }, 5000);
        this.injector!.drain(5000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await fs.rm(socketPath(this.cfg), { force: true });
    }
    await this.metrics.close();
  }
}

async function removeStaleSocket(sock: string): Promise<void> {
  try {
    await fs.lstat(sock);
  } catch {
    return;
  }
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.createConnection(sock);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`${sock}: another daemon is serving on this socket`);
  await fs.rm(sock, { force: true });
}
