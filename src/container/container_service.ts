import { EventEmitter } from 'node:events';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { containerCgroupsPath, removeCgroup, type StatsDetail } from '../cgroups';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError, withContext } from '../errors';
import type { ContainerConfig__Output } from '../gen/runtime/v1/ContainerConfig';
import type { ContainerFilter__Output } from '../gen/runtime/v1/ContainerFilter';
import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources';
import type { ImageService } from '../image/image_service';
import type { Logger } from '../log';
import { processStartTimeMs } from '../oci/proc';
import type { ExecResult, OciRuntime } from '../oci/runtime';
import type { SandboxRecord } from '../sandbox/sandbox';
import type { PodContainers, SandboxService } from '../sandbox/sandbox_service';
import { mappedRoot } from '../sandbox/userns';
import { mountRootfs, unmountRootfs } from '../snapshot/rootfs';
import { JsonStore } from '../store/json_store';
import { unmountBelow } from '../sys/unmount_below';
import type { LayerDir } from './userns_mounts';
import { isId, labelsMatch, matchId, msToNs, newId, nowNs } from '../util/ids';
import { NameRegistry } from '../util/name_registry';
import { settleAll } from '../util/settle';
import { UndoStack } from '../util/undo';
import { type ContainerRecord, containerName, criContainerState } from './container';
import { ImageFileCache } from './image_files';
import { buildSpec, type OciSpec, prepareMountSources, toOciResources } from './spec';
import { idmapMountSources, mountLayerView } from './userns_mounts';
import { needsStaging, releaseVolumes, stageVolumes, validateVolumes } from './volumes';
import { type CgroupSample, type NetworkSample, StatsCache } from './stats_cache';
import { dirUsage, forgetDirUsage } from './usage';

export type ContainerEventType = 'CONTAINER_CREATED_EVENT' | 'CONTAINER_STARTED_EVENT' | 'CONTAINER_STOPPED_EVENT' | 'CONTAINER_DELETED_EVENT';

export interface ContainerEvent {
  containerId: string;
  sandboxId: string;
  type: ContainerEventType;
  createdAt: string;
}

export interface ContainerServiceOptions {
  root: string;
  state: string;
  images: ImageService;
  sandboxes: SandboxService;
  runtimes: Map<string, OciRuntime>;
  cgroupDriver: 'cgroupfs' | 'systemd';
  restrictOomScoreAdj: boolean;
  /** How long one reading of a cgroup serves every stats caller. */
  statsCachePeriodMs: number;
  log: Logger;
}

/** StartContainer's start time, in ns, in a file of the bundle: see start and reconcileStarted. */
const STARTED_AT_FILE = 'started-at';

/** The later of two ns timestamps: keeps created ≤ started ≤ finished whatever a clock said. */
function notBefore(ns: string, floor: string): string {
  return BigInt(ns) < BigInt(floor) ? floor : ns;
}

/** How long a SIGKILLed container may take to be reported dead before stop gives up. */
const KILL_WAIT_MS = 10_000;

/** Containers: rootfs on overlay, OCI spec, conmon + runc, exits, and what the kubelet reads. */
export class ContainerService implements PodContainers {
  private readonly containers = new Map<string, ContainerRecord>();
  private readonly store: JsonStore<ContainerRecord>;
  private readonly names = new NameRegistry<ContainerRecord>('container');
  private readonly imageFiles = new ImageFileCache();
  private readonly starting = new Set<string>();
  /** Containers being created whose staged volumes can leave the host once runc bound them. */
  private readonly detachAfterCreate = new Set<string>();
  private readonly exitWaiters = new Map<string, Set<() => void>>();
  /** `runc delete` started when a container exits, so RemoveContainer has less left to do. */
  private readonly runtimeDeletes = new Map<string, Promise<boolean>>();
  readonly events = new EventEmitter();
  /** Cgroup and network readings shared by the stats and metrics RPCs. */
  readonly statsCache: StatsCache;

  constructor(private readonly opts: ContainerServiceOptions) {
    // No directory fsync, as for sandboxes (sandbox_service.ts): after a power loss every
    // container is dead and an older version of its record serves its cleanup.
    this.store = new JsonStore<ContainerRecord>(path.join(opts.root, 'meta', 'containers'), { syncDir: false });
    this.events.setMaxListeners(0);
    // Image volumes keep their layers while the container exists, even once RemoveImage took
    // the image's names away: containerd keeps them the same way (a lease on the snapshot).
    opts.images.addLayerUser(() => [...this.containers.values()].flatMap((r) => r.volumeLayers ?? []));
    this.statsCache = new StatsCache({ periodMs: opts.statsCachePeriodMs, driver: opts.cgroupDriver });
  }

  async init(): Promise<void> {
    await this.store.init();
    await fs.mkdir(path.join(this.opts.state, 'containers'), { recursive: true, mode: 0o711 });
    await fs.mkdir(path.join(this.opts.root, 'containers'), { recursive: true, mode: 0o711 });
    for (const rt of this.opts.runtimes.values()) rt.onExit((id) => void this.onExit(id));
    for (const rec of await this.store.loadAll()) {
      if (rec.phase === 'creating' || !this.opts.sandboxes.find(rec.sandboxId)) {
        this.opts.log.warn({ container: rec.id }, 'cleaning up a container whose creation was interrupted or whose pod is gone');
        await this.release(rec).catch((err: unknown) => this.opts.log.error({ err, container: rec.id }, 'cleanup failed'));
        await this.store.delete(rec.id);
        continue;
      }
      this.containers.set(rec.id, rec);
      this.names.claim(rec.name, rec.id);
    }
    await this.sweepOrphans();
    for (const rec of this.containers.values()) {
      if (rec.phase === 'created') await this.reconcileStarted(rec);
    }
    // Exits that happened while the daemon was down: conmon wrote them to the exit dir.
    for (const rec of this.containers.values()) {
      if (rec.phase === 'running' || rec.phase === 'created') await this.onExit(rec.id);
    }
  }

  get(idOrPrefix: string): ContainerRecord {
    const rec = this.find(idOrPrefix);
    if (!rec) throw new NotFoundError(`container ${JSON.stringify(idOrPrefix)} not found`);
    return rec;
  }

  /** A container still being created is not visible yet: its create owns it until it ends. */
  find(idOrPrefix: string): ContainerRecord | undefined {
    const rec = matchId(this.containers, idOrPrefix);
    return rec && rec.phase !== 'creating' ? rec : undefined;
  }

  /** Every filter in one pass: the kubelet lists every second. */
  list(filter: ContainerFilter__Output | null | undefined): ContainerRecord[] {
    const one = filter?.id ? this.find(filter.id) : undefined;
    if (filter?.id && !one) return [];
    let sandboxId: string | undefined;
    if (filter?.pod_sandbox_id) {
      sandboxId = this.opts.sandboxes.find(filter.pod_sandbox_id)?.id;
      if (!sandboxId) return [];
    }
    const want = filter?.state?.state;
    return (one ? [one] : [...this.containers.values()]).filter(
      (r) =>
        r.phase !== 'creating' &&
        (sandboxId === undefined || r.sandboxId === sandboxId) &&
        (want === undefined || criContainerState(r) === want) &&
        labelsMatch(r.config.labels, filter?.label_selector),
    );
  }

  inSandbox(sandboxId: string): ContainerRecord[] {
    return [...this.containers.values()].filter((r) => r.sandboxId === sandboxId && r.phase !== 'creating');
  }

  private emit(rec: ContainerRecord, type: ContainerEventType): void {
    const ev: ContainerEvent = { containerId: rec.id, sandboxId: rec.sandboxId, type, createdAt: nowNs() };
    this.events.emit('event', ev);
  }

  private runtimeOf(rec: { runtimeHandler: string; id: string }): OciRuntime {
    const rt = this.opts.runtimes.get(rec.runtimeHandler);
    if (!rt) throw new FailedPreconditionError(`container ${rec.id}: runtime handler ${rec.runtimeHandler} is not configured`);
    return rt;
  }

  async create(sandboxId: string, config: ContainerConfig__Output | null, log: Logger): Promise<ContainerRecord> {
    if (!config?.metadata?.name) throw new InvalidArgumentError('CreateContainer: metadata.name is required');
    const sandbox = this.opts.sandboxes.get(sandboxId);
    if (sandbox.phase !== 'ready') {
      throw new FailedPreconditionError(`CreateContainer ${config.metadata.name}: pod sandbox ${sandbox.id} is not ready`);
    }
    const imageName = config.image?.image ?? '';
    if (!imageName) throw new InvalidArgumentError(`CreateContainer ${config.metadata.name}: image is required`);
    const image = this.opts.images.find(imageName);
    if (!image) throw new NotFoundError(`CreateContainer ${config.metadata.name}: image ${JSON.stringify(imageName)} not found`);
    validateVolumes(config.mounts, `CreateContainer ${config.metadata.name}`);
    const configName = config.metadata.name;
    const id = newId();
    return this.names.reserveAndCreate(containerName(config, sandbox.name), id, () =>
      this.createReserved(id, sandbox, config, configName, imageName, image, log),
    );
  }

  private async createReserved(
    id: string,
    sandbox: SandboxRecord,
    config: ContainerConfig__Output,
    configName: string,
    imageName: string,
    image: NonNullable<ReturnType<ImageService['find']>>,
    log: Logger,
  ): Promise<ContainerRecord> {
    const { bundle, persistent } = this.dirsOf(id);
    const logDir = sandbox.config.log_directory;
    const stopSignal = config.stop_signal !== 'RUNTIME_DEFAULT' ? config.stop_signal : image.config.config?.StopSignal || 'SIGTERM';
    const rec: ContainerRecord = {
      id,
      sandboxId: sandbox.id,
      name: containerName(config, sandbox.name),
      config,
      imageName,
      imageId: image.id,
      imageRef: image.repoDigests[0] ?? image.id,
      runtimeHandler: sandbox.runtimeHandler,
      phase: 'creating',
      createdAt: nowNs(),
      startedAt: '0',
      finishedAt: '0',
      exitCode: 0,
      reason: '',
      message: '',
      pid: 0,
      logPath: config.log_path ? (logDir ? path.join(logDir, config.log_path) : config.log_path) : '',
      bundle,
      rootfs: path.join(bundle, 'rootfs'),
      upperDir: path.join(persistent, 'upper'),
      workDir: path.join(persistent, 'work'),
      cgroupsPath: containerCgroupsPath(sandbox.cgroupParent, id, this.opts.cgroupDriver),
      stopSignal,
    };
    // The record must be written before the runtime makes the container (a crash is then rolled
    // back at start); the rootfs and bundle may come before it, as the start-up sweep removes
    // those that no record names.
    const recorded = this.store.put(id, rec);
    recorded.catch(() => undefined);
    this.containers.set(id, rec);
    const undo = new UndoStack();
    undo.push('record', async () => {
      this.containers.delete(id);
      await recorded.catch(() => undefined);
      await this.store.delete(id);
    });
    try {
      undo.push('bundle', () => fs.rm(bundle, { recursive: true, force: true }));
      undo.push('writable layer', () => fs.rm(persistent, { recursive: true, force: true }));
      await Promise.all([
        fs.mkdir(bundle, { recursive: true, mode: 0o711 }),
        rec.logPath ? fs.mkdir(path.dirname(rec.logPath), { recursive: true }) : undefined,
      ]);
      // The monitor starts while the bundle is made: its start-up overlaps the rootfs mount and
      // the spec, which only the runtime needs. The bundle's work is over before any undo runs.
      const rt = this.runtimeOf(rec);
      // Settled only when both are over, so no undo runs while the rootfs is being mounted.
      const bundleReady = settleAll(recorded, this.makeBundle(rec, sandbox, config, image, undo)).then(() => undefined);
      let pid: number;
      try {
        ({ pid } = await rt.create({
          id,
          bundle,
          logPath: rec.logPath || path.join(bundle, 'container.log'),
          stdin: config.stdin,
          stdinOnce: config.stdin_once,
          tty: config.tty,
          bundleReady,
        }));
      } finally {
        await bundleReady.catch(() => undefined);
      }
      // A failed create deletes what the runtime made itself; past this point it is ours to undo.
      undo.push('oci container', () => rt.delete(id, true));
      if (this.detachAfterCreate.delete(id)) await this.detachVolumes(rec, log);
      rec.pid = pid;
      rec.phase = 'created';
      await this.store.put(id, rec);
      undo.clear();
      this.emit(rec, 'CONTAINER_CREATED_EVENT');
      log.info({ container: id, sandbox: sandbox.id, name: rec.name }, 'container created');
      return rec;
    } catch (err) {
      this.detachAfterCreate.delete(id);
      await undo.run((what, e) => log.error({ err: e, container: id, step: what }, 'container cleanup failed'));
      throw withContext(err, `failed to create container ${configName} in pod ${sandbox.name}`);
    }
  }

  /** The OCI bundle: rootfs overlay mounted, config.json written. Pushes its own undo. */
  private async makeBundle(
    rec: ContainerRecord,
    sandbox: SandboxRecord,
    config: ContainerConfig__Output,
    image: NonNullable<ReturnType<ImageService['find']>>,
    undo: UndoStack,
  ): Promise<void> {
    const layers = this.opts.images.layers;
    // A pod with its own user namespace sees the layers through an idmapped view, the rootfs
    // and its image volumes alike; everything mounted under the bundle goes with it.
    const userns = sandbox.userns && sandbox.namespaces.user;
    if (userns) undo.push('idmapped mounts', () => unmountBelow(rec.bundle));
    const view: Promise<LayerDir> = userns
      ? mountLayerView(layers.dir, (chainId) => layers.path(chainId), rec.bundle, userns)
      : Promise.resolve((chainId) => layers.path(chainId));
    view.catch(() => undefined);
    const upperOwner = sandbox.userns ? mappedRoot(sandbox.userns) : undefined;
    const mounted = view.then(async (layerDir) => {
      const lowerDirs = image.layers.map((l) => layerDir(l.chainId)).reverse();
      await mountRootfs({ lowerDirs, upperDir: rec.upperDir, workDir: rec.workDir, target: rec.rootfs, upperOwner });
      undo.push('rootfs', () => unmountRootfs(rec.rootfs));
    });
    // The spec needs the rootfs only for the image's account files, which the cache knows once
    // one container of the image was made: then it is built while the overlay is mounted.
    const [, spec] = await settleAll(mounted, this.spec(rec, sandbox, config, image, mounted, view, undo));
    await fs.writeFile(path.join(rec.bundle, 'config.json'), JSON.stringify(spec));
  }

  private async spec(
    rec: ContainerRecord,
    sandbox: SandboxRecord,
    config: ContainerConfig__Output,
    image: NonNullable<ReturnType<ImageService['find']>>,
    mounted: Promise<void>,
    view: Promise<LayerDir>,
    undo: UndoStack,
  ): Promise<OciSpec> {
    // Like containerd, a missing host path is created as a directory, and symlinks in host
    // paths are resolved on the host.
    const files = sandbox.files;
    if (!files) throw new Error(`pod sandbox ${sandbox.id} has no pod files (hosts, resolv.conf, shm) for container ${rec.id}`);
    let mounts = await prepareMountSources(config.mounts);
    const usernsMappings = sandbox.userns;
    const userns = usernsMappings && sandbox.namespaces.user;
    // Plain host paths are idmapped here; rro trees and image volumes get theirs as they are
    // staged (an overlay cannot be idmapped: its layers come through the idmapped view).
    if (userns) mounts = await idmapMountSources(mounts, rec.bundle, userns);
    if (needsStaging(mounts)) {
      const dir = volumesDir(rec.bundle);
      undo.push('volumes', () => releaseVolumes(dir));
      const staged = await stageVolumes(mounts, dir, this.opts.images, `container ${config.metadata?.name ?? ''} (${rec.id})`, {
        layerDir: await view,
        userns: userns || undefined,
      });
      mounts = staged.mounts;
      rec.volumeLayers = staged.layers;
      if (staged.detachable) this.detachAfterCreate.add(rec.id);
    }
    const spec = await buildSpec({
      id: rec.id,
      rootfs: rec.rootfs,
      imageFiles: this.imageFiles.reader(image.id, rec.rootfs, mounted),
      image: image.config,
      imageName: rec.imageName,
      config: { ...config, mounts },
      sandbox: {
        id: sandbox.id,
        hostname: sandbox.hostname,
        config: sandbox.config,
        netns: sandbox.namespaces.net,
        ipcns: sandbox.namespaces.ipc,
        utsns: sandbox.namespaces.uts,
        pidns: sandbox.pidHolder?.nsPath,
        hostsPath: files.hostsPath,
        resolvPath: files.resolvPath,
        hostnamePath: files.hostnamePath,
        shmPath: files.shmPath,
        userns: userns ? { ...usernsMappings, path: userns } : undefined,
      },
      cgroupsPath: rec.cgroupsPath,
      restrictOomScoreAdj: this.opts.restrictOomScoreAdj,
    });
    const user = spec.process.user;
    rec.user = { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids ?? [] };
    return spec;
  }

  async start(idOrPrefix: string, log: Logger): Promise<void> {
    const rec = this.get(idOrPrefix);
    // Read into a local so the check below, after the awaits, is not narrowed away: the exit
    // watcher may change rec.phase meanwhile.
    const phase = rec.phase;
    if (phase !== 'created') {
      throw new FailedPreconditionError(`container ${rec.id} is ${phase}, not created: it cannot be started`);
    }
    // A second start racing the first could find runc's start fifo with its byte already taken
    // and wait on it for ever; containerd refuses it the same way.
    if (this.starting.has(rec.id)) throw new FailedPreconditionError(`container ${rec.id} is already being started`);
    this.starting.add(rec.id);
    // Taken before `runc start`: a process that exits at once has its exit file stamped before
    // start returns, and started must not come after finished.
    const startedAt = nowNs();
    try {
      // The start time goes to a file of its own beside the start, not waiting for the record:
      // a daemon that dies before the record lands learns it back exactly (reconcileStarted).
      const noted = fs
        .writeFile(path.join(rec.bundle, STARTED_AT_FILE), startedAt)
        .catch((err: unknown) => log.warn({ err, container: rec.id }, 'cannot note the start time'));
      await settleAll(this.runtimeOf(rec).start(rec.id), noted);
    } catch (err) {
      throw withContext(err, `failed to start container ${rec.id}`);
    } finally {
      this.starting.delete(rec.id);
    }
    // The process may already have exited and been recorded by the exit watcher.
    if (rec.phase === 'created') {
      rec.phase = 'running';
      rec.startedAt = startedAt;
      this.persistLater(rec);
    } else if (rec.startedAt === '0') {
      rec.startedAt = rec.finishedAt;
      this.persistLater(rec);
    }
    this.emit(rec, 'CONTAINER_STARTED_EVENT');
    log.info({ container: rec.id }, 'container started');
  }

  /**
   * Writes a record without making the caller wait, for a change that a daemon restart can learn
   * again from the runtime should the write not land (init's reconcile): started is one.
   */
  private persistLater(rec: ContainerRecord): void {
    this.store.put(rec.id, rec).catch((err: unknown) => this.opts.log.error({ err, container: rec.id }, 'cannot write the container record'));
  }

  /**
   * A record still saying created whose container runs was started just before a crash, its
   * record not yet written: running since its process started. Exits are onExit's business.
   */
  private async reconcileStarted(rec: ContainerRecord): Promise<void> {
    let st: Awaited<ReturnType<OciRuntime['state']>>;
    try {
      st = await this.runtimeOf(rec).state(rec.id);
    } catch (err) {
      this.opts.log.warn({ err, container: rec.id }, 'cannot ask the runtime for the state of a created container');
      return;
    }
    if (st?.status !== 'running') return;
    rec.phase = 'running';
    rec.startedAt = (await this.notedStart(rec)) ?? notBefore(msToNs(processStartTimeMs(st.pid) ?? Date.now()), rec.createdAt);
    await this.store.put(rec.id, rec);
    this.opts.log.info({ container: rec.id }, 'container found running though recorded as created');
  }

  /** The start time StartContainer noted beside the bundle, when it got there. */
  private async notedStart(rec: ContainerRecord): Promise<string | undefined> {
    try {
      const text = (await fs.readFile(path.join(rec.bundle, STARTED_AT_FILE), 'utf8')).trim();
      return /^\d+$/.test(text) && text !== '0' ? text : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records an exit conmon reported; a no-op for containers that did not exit. */
  private async onExit(id: string): Promise<void> {
    const rec = this.containers.get(id);
    if (!rec || (rec.phase !== 'running' && rec.phase !== 'created')) return;
    const exit = await this.runtimeOf(rec).exitOf(id);
    if (!exit || rec.phase === ('exited' as string)) return;
    const noted = rec.phase === 'created' && rec.startedAt === '0' ? await this.notedStart(rec) : undefined;
    // Reports of one exit can overlap (the watcher, a stop's wait, a restart): the first wins.
    if (rec.phase === ('exited' as string)) return;
    if (rec.phase === 'created' && rec.startedAt === '0') rec.startedAt = notBefore(noted ?? msToNs(exit.finishedAt), rec.createdAt);
    rec.phase = 'exited';
    rec.exitCode = exit.exitCode;
    // The exit file's mtime has millisecond precision here; never report finishing before starting.
    rec.finishedAt = notBefore(msToNs(exit.finishedAt), rec.startedAt);
    rec.reason = exit.oomKilled ? 'OOMKilled' : exit.exitCode === 0 ? 'Completed' : 'Error';
    // containerd deletes the task when it exits; doing the same here takes runc's ~10 ms off
    // RemoveContainer. Registered with the phase change, before any await: a StopContainer sees
    // the container exited from here on, and the RemoveContainer after it must find (and
    // clear) this delete, or the entry would outlive the container. A failure is retried
    // (forced) at removal.
    const rt = this.runtimeOf(rec);
    this.runtimeDeletes.set(
      id,
      rt.delete(id).then(
        () => true,
        (err: unknown) => {
          this.opts.log.debug({ err, container: id }, 'runtime delete after exit failed');
          return false;
        },
      ),
    );
    await this.store.put(id, rec);
    this.emit(rec, 'CONTAINER_STOPPED_EVENT');
    for (const w of this.exitWaiters.get(id) ?? []) w();
    this.exitWaiters.delete(id);
  }

  private waitExit(rec: ContainerRecord, ms: number): Promise<boolean> {
    if (rec.phase === 'exited') return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiters = this.exitWaiters.get(rec.id) ?? new Set();
      this.exitWaiters.set(rec.id, waiters);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        waiters.delete(done);
        resolve(rec.phase === 'exited');
      }, ms);
      waiters.add(done);
      // The exit may have landed between the check and the registration.
      void this.onExit(rec.id);
    });
  }

  /** Stop signal, then SIGKILL after `timeoutSec`; stopping a stopped container succeeds. */
  async stop(idOrPrefix: string, timeoutSec: number, log: Logger): Promise<void> {
    const rec = this.find(idOrPrefix);
    // cri-api: StopContainer is idempotent and must not fail for a container already gone.
    if (!rec || rec.phase === 'exited') return;
    const rt = this.runtimeOf(rec);
    if (timeoutSec > 0 && rec.phase === 'running') {
      await rt.kill(rec.id, rec.stopSignal);
      if (await this.waitExit(rec, timeoutSec * 1000)) return;
      log.info({ container: rec.id, timeoutSec }, 'stop signal timed out, killing');
    }
    await rt.kill(rec.id, 'SIGKILL', true);
    if (!(await this.waitExit(rec, KILL_WAIT_MS))) {
      throw new DeadlineExceededError(`container ${rec.id} did not exit ${KILL_WAIT_MS / 1000}s after SIGKILL`);
    }
    log.info({ container: rec.id, exitCode: rec.exitCode }, 'container stopped');
  }

  async remove(idOrPrefix: string, log: Logger): Promise<void> {
    const rec = this.find(idOrPrefix);
    if (!rec) return;
    if (rec.phase === 'running' || rec.phase === 'created') await this.stop(rec.id, 0, log);
    await this.release(rec);
    await this.store.delete(rec.id);
    this.containers.delete(rec.id);
    this.statsCache.forget(rec.cgroupsPath);
    this.names.release(rec.name, rec.id);
    // Layers of an image removed while this container mounted it are free now.
    if (rec.volumeLayers?.length) {
      await this.opts.images.collectGarbage().catch((err: unknown) => log.warn({ err, container: rec.id }, 'image garbage collection failed'));
    }
    this.emit(rec, 'CONTAINER_DELETED_EVENT');
    log.info({ container: rec.id }, 'container removed');
  }

  /**
   * Bundles and writable layers that no record names: a create whose first record never reached
   * the disk (records skip the directory fsync, so a power loss can do that). Each goes with
   * whatever a runtime still holds under its id.
   */
  private async sweepOrphans(): Promise<void> {
    const orphans = new Set<string>();
    for (const dir of [path.join(this.opts.state, 'containers'), path.join(this.opts.root, 'containers')]) {
      for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
        if (isId(name) && !this.containers.has(name)) orphans.add(name);
      }
    }
    for (const id of orphans) {
      this.opts.log.warn({ container: id }, 'removing a container that no record names');
      try {
        for (const rt of this.opts.runtimes.values()) {
          await rt.delete(id, true);
          await rt.forget(id);
        }
        const { bundle, persistent } = this.dirsOf(id);
        await this.removeFiles(bundle, persistent);
      } catch (err) {
        this.opts.log.error({ err, container: id }, 'cannot remove a container that no record names');
      }
    }
  }

  /**
   * Once runc has created the container, its volumes are bound inside the container's own mount
   * namespace, which keeps them alive; the staged copies can leave the host's. They must: a host
   * directory that is a mount point in the host's namespace cannot be removed (EBUSY), and the
   * rro clone makes every submount of its source one, which the owner of the source would then
   * find busy (critest's rro spec removes its host path while the container runs).
   */
  private async detachVolumes(rec: ContainerRecord, log: Logger): Promise<void> {
    try {
      await releaseVolumes(volumesDir(rec.bundle));
    } catch (err) {
      // Removal tries again; the container works either way.
      log.warn({ err, container: rec.id }, 'cannot detach the staged volumes of a created container');
    }
  }

  /** Where a container's bundle (runtime state) and writable layer (persistent) live. */
  private dirsOf(id: string): { bundle: string; persistent: string } {
    return { bundle: path.join(this.opts.state, 'containers', id), persistent: path.join(this.opts.root, 'containers', id) };
  }

  /** The rootfs mount, the bundle and the writable layer; each may already be gone. */
  private async removeFiles(bundle: string, persistent: string): Promise<void> {
    await unmountRootfs(path.join(bundle, 'rootfs'));
    // Before the bundle goes: nothing may be deleted through a mount still in it (volumes, the
    // idmapped mounts of a pod with its own user namespace).
    unmountBelow(bundle);
    await fs.rm(bundle, { recursive: true, force: true });
    await fs.rm(persistent, { recursive: true, force: true });
  }

  /** Everything a container holds; each step tolerates what is already gone. */
  private async release(rec: ContainerRecord): Promise<void> {
    const rt = this.opts.runtimes.get(rec.runtimeHandler);
    const deleted = await this.runtimeDeletes.get(rec.id);
    this.runtimeDeletes.delete(rec.id);
    if (rt && !deleted) await rt.delete(rec.id, true);
    // The exit file outlives `runc delete` so the exit stays readable; it goes with the container.
    await rt?.forget(rec.id);
    await this.removeFiles(rec.bundle, path.dirname(rec.upperDir));
    forgetDirUsage(rec.upperDir);
    await removeCgroup(rec.cgroupsPath, this.opts.cgroupDriver).catch(() => undefined);
  }

  async stopAll(sandboxId: string): Promise<void> {
    await Promise.all(this.inSandbox(sandboxId).map((c) => this.stop(c.id, 0, this.opts.log)));
  }

  async removeAll(sandboxId: string): Promise<void> {
    await Promise.all(this.inSandbox(sandboxId).map((c) => this.remove(c.id, this.opts.log)));
  }

  /** A removed pod's readings go, and the files of its cgroup are closed. */
  forgetPod(sandbox: SandboxRecord): void {
    this.statsCache.forget(sandbox.cgroupParent);
    this.statsCache.forget(podNetworkKey(sandbox));
  }

  async execSync(idOrPrefix: string, cmd: string[], timeoutSec: number): Promise<ExecResult> {
    const rec = this.get(idOrPrefix);
    if (rec.phase !== 'running') throw new FailedPreconditionError(`container ${rec.id} is not running`);
    if (cmd.length === 0) throw new InvalidArgumentError(`ExecSync in ${rec.id}: cmd is empty`);
    return this.runtimeOf(rec).execSync(rec.id, cmd, timeoutSec > 0 ? timeoutSec * 1000 : 0);
  }

  async updateResources(idOrPrefix: string, resources: LinuxContainerResources__Output | null): Promise<void> {
    const rec = this.get(idOrPrefix);
    if (!resources) return;
    if (rec.phase !== 'running' && rec.phase !== 'created') {
      throw new FailedPreconditionError(`container ${rec.id} is ${rec.phase}: its resources cannot be updated`);
    }
    await this.runtimeOf(rec).update(rec.id, toOciResources(resources));
    rec.config = { ...rec.config, linux: { ...(rec.config.linux as NonNullable<typeof rec.config.linux>), resources } };
    await this.store.put(rec.id, rec);
  }

  async reopenLog(idOrPrefix: string): Promise<void> {
    const rec = this.get(idOrPrefix);
    if (rec.phase !== 'running') throw new FailedPreconditionError(`container ${rec.id} is not running`);
    await this.runtimeOf(rec).reopenLog(rec.id);
  }

  async stats(rec: ContainerRecord, detail: StatsDetail = 'basic'): Promise<{ cgroup?: CgroupSample; writableBytes: number; writableInodes: number }> {
    const [cgroup, usage] = await Promise.all([
      rec.phase === 'running' ? this.statsCache.cgroup(rec.cgroupsPath, detail) : Promise.resolve(undefined),
      dirUsage(rec.upperDir),
    ]);
    return { cgroup, writableBytes: usage.bytes, writableInodes: usage.inodes };
  }

  /** The pod cgroup's reading; undefined without one (or once it is gone). */
  async podStats(sandbox: SandboxRecord, detail: StatsDetail = 'basic'): Promise<CgroupSample | undefined> {
    if (!sandbox.cgroupParent) return undefined;
    return this.statsCache.cgroup(sandbox.cgroupParent, detail).catch(() => undefined);
  }

  /** The pod's interface counters, read through one of its running containers. */
  async podNetwork(sandbox: SandboxRecord): Promise<NetworkSample | undefined> {
    if (sandbox.hostNetwork) return undefined;
    const running = this.inSandbox(sandbox.id).find((c) => c.phase === 'running');
    return running ? this.statsCache.network(podNetworkKey(sandbox), running.pid) : undefined;
  }
}

/** Where a container's rro clones and image volumes are mounted before runc binds them. */
function volumesDir(bundle: string): string {
  return path.join(bundle, 'volumes');
}

function podNetworkKey(sandbox: SandboxRecord): string {
  return `pod:${sandbox.id}`;
}
