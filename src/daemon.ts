import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { type Config, socketPath } from './config';
import { ImageService } from './image/image_service';
import type { Logger } from './log';
import { Metrics } from './metrics';
import { loadCri } from './proto';
import { acceptConnection } from './server/authority_fix';
import { RecordEncodings } from './server/encoding';
import { implement, passEncoded } from './server/grpc';
import type { ImageServiceHandlers } from './gen/runtime/v1/ImageService';
import type { RuntimeServiceHandlers } from './gen/runtime/v1/RuntimeService';
import { imageFsInfo } from './server/image/image_fs_info';
import { listImages } from './server/image/image_list';
import { pullImage } from './server/image/image_pull';
import { removeImage } from './server/image/image_remove';
import { imageStatus } from './server/image/image_status';
import { streamImages } from './server/image/image_stream';
import { runtimeConfig } from './server/runtime/runtime_config';
import { status } from './server/runtime/status';
import { version } from './server/runtime/version';
import { createContainer } from './server/runtime/container_create';
import { getContainerEvents } from './server/runtime/container_events';
import { execSync } from './server/runtime/container_exec_sync';
import { listContainers, streamContainers } from './server/runtime/container_list';
import { removeContainer } from './server/runtime/container_remove';
import { reopenContainerLog } from './server/runtime/container_reopen_log';
import { startContainer } from './server/runtime/container_start';
import { containerStats, listContainerStats, streamContainerStats } from './server/runtime/container_stats';
import { containerStatus } from './server/runtime/container_status';
import { stopContainer } from './server/runtime/container_stop';
import { updateContainerResources } from './server/runtime/container_update_resources';
import { listMetricDescriptors } from './server/runtime/metrics_descriptors';
import { listPodSandboxMetrics, streamPodSandboxMetrics } from './server/runtime/sandbox_metrics';
import { updateRuntimeConfig } from './server/runtime/runtime_update_config';
import { listPodSandbox, streamPodSandboxes } from './server/runtime/sandbox_list';
import { removePodSandbox } from './server/runtime/sandbox_remove';
import { runPodSandbox } from './server/runtime/sandbox_run';
import { listPodSandboxStats, podSandboxStats, streamPodSandboxStats } from './server/runtime/sandbox_stats';
import { podSandboxStatus } from './server/runtime/sandbox_status';
import { stopPodSandbox } from './server/runtime/sandbox_stop';
import { updatePodSandboxResources } from './server/runtime/sandbox_update_resources';
import { attach } from './server/runtime/container_attach';
import { exec } from './server/runtime/container_exec';
import { portForward } from './server/runtime/sandbox_port_forward';
import { StreamingServer } from './streaming/server';
import { ContainerService } from './container/container_service';
import { Cni } from './network/cni';
import { ConmonRuntime } from './oci/conmon_runtime';
import { type OciRuntime, runtimeGlobalArgs } from './oci/runtime';
import { SandboxService } from './sandbox/sandbox_service';
import { type HostReport, probeHost } from './host/probe';
import { probeIdmappedLayers, type UsernsSupport } from './snapshot/idmap_probe';
import { hasSysResource } from './util/capabilities';
import { which } from './util/which';

/** One daemon: its stores, its services and the gRPC server on its socket. No globals. */
export class Daemon {
  readonly metrics = new Metrics();
  readonly images: ImageService;
  readonly cni: Cni;
  readonly runtimes = new Map<string, OciRuntime>();
  readonly sandboxes: SandboxService;
  readonly containers: ContainerService;
  readonly streaming: StreamingServer;
  /** Set once start() serves the socket. */
  private serving?: { server: grpc.Server; listener: net.Server; injector: ReturnType<grpc.Server['createConnectionInjector']> };
  /** The host check, started once the socket serves (it must not delay serving). */
  private hostReport?: Promise<HostReport | undefined>;
  private usernsProbe?: Promise<UsernsSupport>;

  constructor(
    readonly cfg: Config,
    readonly log: Logger,
  ) {
    this.images = new ImageService({
      root: cfg.root,
      registryConfigDir: cfg.registryConfigDir,
      insecureRegistries: cfg.insecureRegistries,
      pinnedImages: cfg.pinnedImages,
      maxConcurrentDownloads: cfg.maxConcurrentDownloads,
      progressTimeoutMs: cfg.imagePullProgressTimeoutMs,
      minThroughput: cfg.imagePullMinThroughput,
      metrics: this.metrics,
      log,
    });
    this.cni = new Cni({
      confDir: cfg.cniConfDir,
      binDirs: cfg.cniBinDirs,
      cacheDir: path.join(cfg.state, 'cni'),
      // No default route and no masquerading: the built-in network keeps pods on this node
      // (pods reach each other and the host); outbound traffic needs an operator's conflist.
      defaultNetwork: { name: 'tscri-default', bridge: cfg.cniDefaultBridge, subnet: cfg.cniDefaultSubnet, routes: [cfg.cniDefaultSubnet], ipMasq: false },
      log,
    });
    const conmon = which(cfg.conmon);
    for (const [handler, binary] of Object.entries(cfg.runtimes)) {
      const found = which(binary);
      if (!found || !conmon) {
        log.warn({ handler, binary, conmon: conmon ?? cfg.conmon }, 'runtime handler unavailable: binary not found');
        continue;
      }
      this.runtimes.set(
        handler,
        new ConmonRuntime({
          name: handler,
          binary: found,
          root: path.join(cfg.state, handler),
          conmon,
          exitDir: path.join(cfg.state, 'exits'),
          persistDir: (id) => path.join(cfg.state, 'containers', id),
          socketDir: path.join(cfg.state, 's'),
          systemdCgroup: cfg.cgroupDriver === 'systemd',
          log,
        }),
      );
    }
    this.sandboxes = new SandboxService({
      root: cfg.root,
      state: cfg.state,
      cni: this.cni,
      runtimeHandlers: [...this.runtimes.keys()],
      defaultRuntimeHandler: cfg.defaultRuntime,
      usernsSupport: () => this.usernsSupport(),
      log,
    });
    this.containers = new ContainerService({
      root: cfg.root,
      state: cfg.state,
      images: this.images,
      sandboxes: this.sandboxes,
      runtimes: this.runtimes,
      cgroupDriver: cfg.cgroupDriver,
      restrictOomScoreAdj: cfg.restrictOomScoreAdj === 'auto' ? !hasSysResource() : cfg.restrictOomScoreAdj,
      statsCachePeriodMs: cfg.statsCachePeriodMs,
      log,
    });
    this.sandboxes.containers = this.containers;
    this.streaming = new StreamingServer({
      address: cfg.streamingAddress,
      socketDir: path.join(cfg.state, 's'),
      log,
      backend: {
        container: (id) => this.containers.find(id),
        runtime: (handler) => {
          const binary = cfg.runtimes[handler] ? which(cfg.runtimes[handler]) : undefined;
          return binary ? { binary, globalArgs: runtimeGlobalArgs(path.join(cfg.state, handler), cfg.cgroupDriver === 'systemd') } : undefined;
        },
        sandboxNetns: (id) => this.sandboxes.get(id).namespaces.net,
      },
    });
  }

  async start(): Promise<void> {
    const { cfg, log } = this;
    await fs.mkdir(cfg.root, { recursive: true, mode: 0o711 });
    await fs.mkdir(cfg.state, { recursive: true, mode: 0o711 });
    // In the background: Status and the first pod with a user namespace wait for it.
    void this.usernsSupport();
    await this.images.init();
    for (const dir of ['exits', 's', 'cni']) await fs.mkdir(path.join(cfg.state, dir), { recursive: true, mode: 0o711 });
    await this.cni.load().catch((err: unknown) => log.warn({ err }, 'no usable CNI network yet'));
    await this.sandboxes.init();
    await this.containers.init();
    // After the containers: their image volumes hold layers that no image record may name.
    await this.images.collectGarbage();
    await this.streaming.start();

    const cri = loadCri();
    const server = new grpc.Server({
      // Image lists and verbose statuses of large nodes exceed the 4 MiB default.
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
      // Channelz bookkeeping on every call, for an introspection service tscri does not serve.
      'grpc.enable_channelz': 0,
    });
    const enc = new RecordEncodings((rec) => this.images.isPinned(rec));
    const images = this.images;
    const sandboxes = this.sandboxes;
    const containers = this.containers;
    server.addService(
      passEncoded(cri.runtime.v1.RuntimeService.service),
      implement<RuntimeServiceHandlers>(
        'runtime.v1.RuntimeService',
        cri.runtime.v1.RuntimeService.service,
        {
          Version: () => version(),
          Status: async (req) =>
            status(req, cfg, this.cni, [...this.runtimes.keys()], (await this.usernsSupport()).ok, () => this.hostReport ?? Promise.resolve(undefined)),
          RuntimeConfig: () => runtimeConfig(cfg),
          UpdateRuntimeConfig: (req, ctx) => updateRuntimeConfig(req, ctx.log),
          RunPodSandbox: (req, ctx) => runPodSandbox(req, sandboxes, ctx),
          StopPodSandbox: (req, ctx) => stopPodSandbox(req, sandboxes, ctx),
          RemovePodSandbox: (req, ctx) => removePodSandbox(req, sandboxes, ctx),
          PodSandboxStatus: (req) => podSandboxStatus(req, sandboxes, containers, enc),
          UpdatePodSandboxResources: (req, ctx) => updatePodSandboxResources(req, sandboxes, cfg.cgroupDriver, ctx),
          ListPodSandbox: (req) => listPodSandbox(req, sandboxes, enc),
          StreamPodSandboxes: { stream: (req, send) => streamPodSandboxes(req, sandboxes, send) },
          CreateContainer: (req, ctx) => createContainer(req, containers, ctx),
          StartContainer: (req, ctx) => startContainer(req, containers, ctx),
          StopContainer: (req, ctx) => stopContainer(req, containers, ctx),
          RemoveContainer: (req, ctx) => removeContainer(req, containers, ctx),
          ListContainers: (req) => listContainers(req, containers, enc),
          StreamContainers: { stream: (req, send) => streamContainers(req, containers, send) },
          ContainerStatus: (req) => containerStatus(req, containers, enc),
          UpdateContainerResources: (req) => updateContainerResources(req, containers),
          ReopenContainerLog: (req) => reopenContainerLog(req, containers),
          ExecSync: (req) => execSync(req, containers),
          ContainerStats: (req) => containerStats(req, containers),
          ListContainerStats: (req) => listContainerStats(req, containers),
          StreamContainerStats: { stream: (req, send) => streamContainerStats(req, containers, send) },
          PodSandboxStats: (req) => podSandboxStats(req, sandboxes, containers),
          ListPodSandboxStats: (req) => listPodSandboxStats(req, sandboxes, containers),
          StreamPodSandboxStats: { stream: (req, send) => streamPodSandboxStats(req, sandboxes, containers, send) },
          GetContainerEvents: { stream: (_req, send, ctx) => getContainerEvents(containers, sandboxes, send, ctx) },
          ListMetricDescriptors: () => listMetricDescriptors(),
          ListPodSandboxMetrics: () => listPodSandboxMetrics(sandboxes, containers),
          StreamPodSandboxMetrics: { stream: (_req, send) => streamPodSandboxMetrics(sandboxes, containers, send) },
          Exec: (req) => exec(req, containers, this.streaming),
          Attach: (req) => attach(req, containers, this.streaming),
          PortForward: (req) => portForward(req, sandboxes, this.streaming),
        },
        log,
        this.metrics,
      ),
    );
    server.addService(
      passEncoded(cri.runtime.v1.ImageService.service),
      implement<ImageServiceHandlers>(
        'runtime.v1.ImageService',
        cri.runtime.v1.ImageService.service,
        {
          PullImage: (req, ctx) => pullImage(req, images, ctx),
          ListImages: (req) => listImages(req, images, enc),
          StreamImages: { stream: (req, send) => streamImages(req, images, send) },
          ImageStatus: (req) => imageStatus(req, images),
          RemoveImage: (req) => removeImage(req, images),
          ImageFsInfo: () => imageFsInfo(images),
        },
        log,
        this.metrics,
      ),
    );

    const sock = socketPath(cfg);
    await fs.mkdir(path.dirname(sock), { recursive: true, mode: 0o711 });
    // A socket left by a daemon that died is in the way; a live daemon on it is a user error
    // that bind would not report (unlinking a unix socket steals it), so check first.
    await removeStaleSocket(sock);
    // Connections are accepted here and handed to grpc-js, so that old clients' socket-path
    // authorities can be fixed on the way in (server/authority_fix.ts).
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const listener = net.createServer((socket) => acceptConnection(socket, (conn) => injector.injectConnection(conn)));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(sock, () => resolve());
    });
    await fs.chmod(sock, 0o660);
    this.serving = { server, listener, injector };
    setImmediate(() => enc.warm(containers.list(null), sandboxes.list(null)));
    const metricsAt = await this.metrics.listen(cfg.metricsListen, log);
    log.info({ listen: cfg.listen, root: cfg.root, state: cfg.state, metrics: metricsAt }, 'tscri serving');
    this.hostReport = this.checkHost();
  }

  /** `tscri check`'s report, in the log: what this host cannot give pods is said at start. */
  private async checkHost(): Promise<HostReport | undefined> {
    try {
      const report = await probeHost(this.cfg, { userns: this.usernsSupport() });
      const summary = report.findings.map((f) => `${f.ok ? 'ok' : 'no'} ${f.feature}: ${f.detail}`);
      if (report.podsCanRun) this.log.info({ host: summary }, 'host check');
      else this.log.error({ host: summary }, 'host check: no pod can run on this host');
      return report;
    } catch (err) {
      this.log.warn({ err }, 'host check failed');
      return undefined;
    }
  }

  async stop(): Promise<void> {
    // Its mounts and scratch directory are gone once it settles.
    await this.hostReport;
    if (this.serving) {
      const { server, listener, injector } = this.serving;
      await new Promise<void>((resolve) => listener.close(() => resolve()));
      await new Promise<void>((resolve) => {
        // In-flight calls get a moment to finish; then they are cut off.
        const timer = setTimeout(() => {
          injector.destroy();
          server.forceShutdown();
        }, 5000);
        injector.drain(5000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await fs.rm(socketPath(this.cfg), { force: true });
    }
    await this.streaming.stop();
    await this.usernsProbe;
    await this.sandboxes.shutdown();
    await this.metrics.close();
  }

  /** Started once; its scratch mounts are gone when it resolves. */
  usernsSupport(): Promise<UsernsSupport> {
    this.usernsProbe ??= probeIdmappedLayers(this.cfg.root).then((r) => {
      if (r.ok) this.log.info('user namespaces: supported (idmapped layers probe passed)');
      else this.log.warn({ reason: r.reason }, 'user namespaces: not supported; Status reports them off');
      return r;
    });
    return this.usernsProbe;
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
