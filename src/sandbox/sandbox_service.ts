import { promises as fs } from 'node:fs';
import path from 'node:path';
import { applyPodLimits } from '../cgroups/pod_limits';
import type { CgroupDriver } from '../cgroups/paths';
import { InvalidArgumentError, NotFoundError, UnimplementedError, withContext } from '../errors';
import type { LinuxContainerResources__Output } from '../gen/runtime/v1/LinuxContainerResources';
import type { PodSandboxConfig__Output } from '../gen/runtime/v1/PodSandboxConfig';
import type { PodSandboxFilter__Output } from '../gen/runtime/v1/PodSandboxFilter';
import type { Logger } from '../log';
import type { Cni, PodNetworkArgs, PortMapping } from '../network/cni';
import { JsonStore } from '../store/json_store';
import { pinPath, pinPodNamespaces, type PodNamespaces, releaseNamespaceRoot, unpinNamespaces } from '../sys/namespaces';
import { pinUserNamespace } from '../sys/userns';
import { isId, labelsMatch, matchId, newId, nowNs } from '../util/ids';
import { NameRegistry } from '../util/name_registry';
import { settleAll } from '../util/settle';
import { UndoStack } from '../util/undo';
import { startPidHolder, stopPidHolder } from './pid_holder';
import { podTotals } from './pod_resources';
import { podHostname, podShmPath, releasePodShm, unmountPodShm, writePodFiles, writePodHosts } from './pod_files';
import { criState, type SandboxRecord, sandboxName } from './sandbox';
import { checkSearchable, mappedRoot, type UsernsMappings } from './userns';
import { validateSandboxConfig } from './validate';

/** What the sandbox service needs from the containers of a pod. */
export interface PodContainers {
  stopAll(sandboxId: string): Promise<void>;
  removeAll(sandboxId: string): Promise<void>;
  /** What is kept about the pod's cgroup and network for stats goes. */
  forgetPod(sandbox: SandboxRecord): void;
}

export interface SandboxServiceOptions {
  root: string;
  state: string;
  cni: Cni;
  runtimeHandlers: string[];
  defaultRuntimeHandler: string;
  /** Whether pods can have user namespaces here (the start-up probe's answer), and why not. */
  usernsSupport?: () => Promise<{ ok: boolean; reason?: string }>;
  log: Logger;
}

/** Pod sandboxes: pinned namespaces, a CNI attachment and the pod's files. No pause process. */
export class SandboxService {
  private readonly sandboxes = new Map<string, SandboxRecord>();
  private readonly store: JsonStore<SandboxRecord>;
  private readonly names = new NameRegistry<SandboxRecord>('pod sandbox');
  containers?: PodContainers;

  constructor(private readonly opts: SandboxServiceOptions) {
    // No directory fsync (about 0.7 ms of each write on a pod's start): what a record guards
    // against, a daemon crash mid-create, needs only the page cache. After a power loss every
    // pod is dead and an older version of a record drives its cleanup as well as the newest; a
    // record lost whole can leave its IP lease behind.
    this.store = new JsonStore<SandboxRecord>(path.join(opts.root, 'meta', 'sandboxes'), { syncDir: false });
  }

  /** Loads records; a create the daemon did not finish is rolled back, so nothing leaks. */
  async init(): Promise<void> {
    await this.store.init();
    await fs.mkdir(path.join(this.opts.state, 'sandboxes'), { recursive: true, mode: 0o711 });
    for (const rec of await this.store.loadAll()) {
      if (rec.phase === 'creating') {
        // Its record was written before the namespaces, files and network it names were made, so
        // it names none of them: without it, the sweep below finds them by path.
        this.opts.log.warn({ sandbox: rec.id }, 'rolling back a sandbox whose creation was interrupted');
        await this.store.delete(rec.id);
        continue;
      }
      this.sandboxes.set(rec.id, rec);
      this.names.claim(rec.name, rec.id);
    }
    await this.sweepOrphans();
  }

  /**
   * Pod dirs and namespace pins that no record names: a create that was interrupted, or whose
   * first record never reached the disk (records skip the directory fsync). Each gives back its
   * network (the CNI cache knows the attachment), /dev/shm and pins. A shared-PID holder is not
   * found this way: its pid is only in the ready record.
   */
  private async sweepOrphans(): Promise<void> {
    const dirs = path.join(this.opts.state, 'sandboxes');
    const orphans = new Set<string>();
    for (const dir of [dirs, this.nsRoot()]) {
      for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
        if (isId(name) && !this.sandboxes.has(name)) orphans.add(name);
      }
    }
    for (const id of orphans) {
      this.opts.log.warn({ sandbox: id }, 'removing a pod sandbox that no record names');
      const pins = path.join(this.nsRoot(), id);
      const netns = pinPath(pins, 'net');
      const namespaces: PodNamespaces = {
        net: netns,
        ipc: pinPath(pins, 'ipc'),
        uts: pinPath(pins, 'uts'),
        user: pinPath(pins, 'user'),
      };
      const dir = path.join(dirs, id);
      try {
        const args: PodNetworkArgs = { podId: id, netns, podName: '', podNamespace: '', podUid: '', portMappings: [] };
        await this.opts.cni.teardown(args);
        unmountPodShm(podShmPath(dir));
        await unpinNamespaces(namespaces);
        await fs.rm(dir, { recursive: true, force: true });
        await fs.rm(pins, { recursive: true, force: true });
      } catch (err) {
        this.opts.log.error({ err, sandbox: id }, 'cannot remove a pod sandbox that no record names');
      }
    }
  }

  get(idOrPrefix: string): SandboxRecord {
    const rec = this.find(idOrPrefix);
    if (!rec) throw new NotFoundError(`pod sandbox ${JSON.stringify(idOrPrefix)} not found`);
    return rec;
  }

  /** A sandbox still being created is not visible yet: its create owns it until it ends. */
  find(idOrPrefix: string): SandboxRecord | undefined {
    const rec = matchId(this.sandboxes, idOrPrefix);
    return rec && rec.phase !== 'creating' ? rec : undefined;
  }

  /** Every filter in one pass: the kubelet lists every second. */
  list(filter: PodSandboxFilter__Output | null | undefined): SandboxRecord[] {
    const one = filter?.id ? this.find(filter.id) : undefined;
    if (filter?.id && !one) return [];
    const want = filter?.state?.state;
    return (one ? [one] : [...this.sandboxes.values()]).filter(
      (r) => r.phase !== 'creating' && (want === undefined || criState(r) === want) && labelsMatch(r.config.labels, filter?.label_selector),
    );
  }

  async run(config: PodSandboxConfig__Output | null, handler: string, log: Logger): Promise<SandboxRecord> {
    if (!config?.metadata?.name) throw new InvalidArgumentError('RunPodSandbox: metadata.name is required');
    if (!config.metadata.namespace) throw new InvalidArgumentError(`RunPodSandbox ${config.metadata.name}: metadata.namespace is required`);
    const runtimeHandler = handler || this.opts.defaultRuntimeHandler;
    if (!this.opts.runtimeHandlers.includes(runtimeHandler)) {
      throw new InvalidArgumentError(
        `RunPodSandbox ${config.metadata.name}: no runtime handler ${JSON.stringify(handler)} (configured: ${this.opts.runtimeHandlers.join(', ')})`,
      );
    }
    const userns = validateSandboxConfig(config);
    if (userns) {
      // Status reported user_namespaces false for every handler then: the kubelet does not ask.
      const support = (await this.opts.usernsSupport?.()) ?? { ok: false, reason: 'no probe ran' };
      if (!support.ok) throw new UnimplementedError(`RunPodSandbox ${config.metadata.name}: user namespaces are not supported on this node: ${support.reason}`);
      await checkSearchable(this.opts.state, `RunPodSandbox ${config.metadata.name}`);
    }
    const id = newId();
    return this.names.reserveAndCreate(sandboxName(config), id, () => this.create(id, config, runtimeHandler, userns, log));
  }

  private async create(
    id: string,
    config: PodSandboxConfig__Output,
    runtimeHandler: string,
    userns: UsernsMappings | undefined,
    log: Logger,
  ): Promise<SandboxRecord> {
    const ns = config.linux?.security_context?.namespace_options;
    const hostNetwork = ns?.network === 'NODE';
    const rec: SandboxRecord = {
      id,
      name: sandboxName(config),
      config,
      runtimeHandler,
      phase: 'creating',
      createdAt: nowNs(),
      hostNetwork,
      hostIpc: ns?.ipc === 'NODE',
      hostPid: ns?.pid === 'NODE',
      hostname: podHostname(config.hostname),
      dir: path.join(this.opts.state, 'sandboxes', id),
      namespaces: {},
      userns,
      ips: [],
      cgroupParent: config.linux?.cgroup_parent ?? '',
    };
    const undo = new UndoStack();
    const prepared = this.prepare(rec, ns?.pid === 'POD', undo);
    // The first CNI plugin starts now and is given its config once the namespace exists
    // (cni.ts): its start-up, a Go binary's 4 ms here, overlaps the record and the pinning.
    let network: Promise<void> = Promise.resolve();
    const netArgs = hostNetwork ? undefined : this.networkArgs({ ...rec, namespaces: { net: pinPath(path.join(this.nsRoot(), id), 'net') } });
    if (netArgs) {
      network = this.opts.cni.setup(netArgs, prepared).then((result) => {
        rec.ips = result.ips;
      });
      network.catch(() => undefined);
    }
    try {
      try {
        await prepared;
      } catch (err) {
        // The plugin is stopped before it did anything; wait for that before undoing.
        await network.catch(() => undefined);
        throw err;
      }
      if (netArgs) undo.push('network', () => this.opts.cni.teardown(netArgs));
      // The pod's files do not wait for the CNI plugins; both are awaited before any undo runs.
      const owner = rec.userns ? mappedRoot(rec.userns) : undefined;
      const files = writePodFiles(rec.dir, { hostname: rec.hostname, dns: config.dns_config, hostIpc: rec.hostIpc, owner }).then((f) => {
        rec.files = f;
        undo.push('shm', () => {
          releasePodShm(f);
        });
        return f;
      });
      const [, podFiles] = await settleAll(network, files);
      // The ready record (serialized now) and /etc/hosts at once; the pod shows as ready only
      // once both are done.
      await settleAll(writePodHosts(podFiles, { hostname: rec.hostname, ip: rec.ips[0], hostNetwork, owner }), this.store.put(id, { ...rec, phase: 'ready' }));
      rec.phase = 'ready';
      undo.clear();
      log.info({ sandbox: id, pod: rec.name, ip: rec.ips[0] }, 'pod sandbox ready');
      return rec;
    } catch (err) {
      await undo.run((what, e) => log.error({ err: e, sandbox: id, step: what }, 'sandbox cleanup failed'));
      throw withContext(err, `failed to create pod sandbox ${rec.name}`);
    }
  }

  /** The record, the pod's dir, its namespaces and PID holder; each step pushes its undo. */
  private async prepare(rec: SandboxRecord, sharedPid: boolean, undo: UndoStack): Promise<void> {
    // The record is on disk before the network is set up (the caller's CNI plugin waits for
    // this), so a crash from then on is rolled back at start. The dir and the namespace pins
    // are made while it is written: should the record never land, the start-up sweep removes
    // them as orphans.
    const recorded = this.store.put(rec.id, rec);
    recorded.catch(() => undefined);
    this.sandboxes.set(rec.id, rec);
    undo.push('sandbox record', async () => {
      this.sandboxes.delete(rec.id);
      await recorded.catch(() => undefined);
      await this.store.delete(rec.id);
    });
    const made = (async () => {
      await fs.mkdir(rec.dir, { recursive: true, mode: 0o711 });
      undo.push('sandbox dir', () => fs.rm(rec.dir, { recursive: true, force: true }));
      // All pins under one directory: it is made a shared mount once (sys/namespaces.ts).
      const wanted = { net: !rec.hostNetwork, ipc: !rec.hostIpc, uts: !rec.hostNetwork, hostname: rec.hostname };
      const pins = path.join(this.nsRoot(), rec.id);
      rec.namespaces = rec.userns ? await pinUserNamespace(pins, { ...wanted, ...rec.userns }) : await pinPodNamespaces(pins, wanted);
      undo.push('namespaces', () => unpinNamespaces(rec.namespaces));
    })();
    await settleAll(recorded, made);
    // The CRI's enum default is POD, so only a pod that sends namespace options asks for a
    // shared PID namespace (the kubelet sends CONTAINER unless shareProcessNamespace is set).
    if (sharedPid) {
      rec.pidHolder = await startPidHolder(rec.namespaces.user);
      undo.push('pid namespace', () => stopPidHolder(rec.pidHolder));
    }
  }

  private networkArgs(rec: SandboxRecord): PodNetworkArgs {
    const m = rec.config.metadata;
    if (!m) throw new Error(`pod sandbox ${rec.id} has no metadata`);
    const portMappings: PortMapping[] = rec.config.port_mappings
      .filter((p) => p.host_port > 0)
      .map((p) => ({
        hostPort: p.host_port,
        containerPort: p.container_port,
        protocol: p.protocol.toLowerCase() as PortMapping['protocol'],
        hostIP: p.host_ip || undefined,
      }));
    return {
      podId: rec.id,
      netns: rec.namespaces.net ?? '',
      podName: m.name,
      podNamespace: m.namespace,
      podUid: m.uid,
      portMappings,
      // pinPodNamespaces brought it up.
      loUp: true,
    };
  }

  /**
   * In-place pod resize: the pod's new totals on its cgroup parent. containerd records them and
   * answers success, leaving the pod cgroup to the kubelet (cgroupsPerQOS); tscri also writes
   * them, which changes nothing where the kubelet already did. A pod without a cgroup parent of
   * its own (its containers share the runtime's) or whose cgroup does not exist yet has nothing
   * to write; a limit the kernel refuses fails the call, naming the file.
   */
  async updateResources(
    idOrPrefix: string,
    overhead: LinuxContainerResources__Output | null,
    resources: LinuxContainerResources__Output | null,
    driver: CgroupDriver,
    log: Logger,
  ): Promise<void> {
    const rec = this.get(idOrPrefix);
    const what = `UpdatePodSandboxResources ${rec.name}`;
    const totals = podTotals(overhead, resources, what);
    rec.resources = { overhead, resources };
    // The kubelet has resized the pod cgroup before it calls (cri-api: "called after the Kubelet
    // reconfigures the pod-level cgroups") and rejects the resize on any error but Unimplemented;
    // what the kernel refuses here is logged, and the call succeeds, as containerd's does.
    if (rec.cgroupParent) {
      try {
        const { written, skipped } = applyPodLimits(rec.cgroupParent, driver, totals);
        log.info({ sandbox: rec.id, totals, written, skipped }, 'pod resources updated');
      } catch (err) {
        log.warn({ sandbox: rec.id, totals, err: withContext(err, `${what}: cgroup ${rec.cgroupParent}`) }, 'pod resources recorded, not all applied');
      }
    }
    await this.store.put(rec.id, rec);
  }

  /** Stops the pod's containers and releases its network; idempotent, unknown ids included. */
  async stop(idOrPrefix: string, log: Logger): Promise<void> {
    const rec = this.find(idOrPrefix);
    // cri-api: StopPodSandbox must not fail when the resources are already reclaimed.
    if (!rec) return;
    await this.containers?.stopAll(rec.id);
    if (rec.phase === 'stopped') return;
    await this.releaseRunning(rec);
    rec.phase = 'stopped';
    await this.store.put(rec.id, rec);
    log.info({ sandbox: rec.id, pod: rec.name }, 'pod sandbox stopped');
  }

  /** What only a running pod holds: its PID namespace, network, /dev/shm and pinned namespaces. */
  private async releaseRunning(rec: SandboxRecord): Promise<void> {
    stopPidHolder(rec.pidHolder);
    if (!rec.hostNetwork && rec.namespaces.net) await this.opts.cni.teardown(this.networkArgs(rec));
    releasePodShm(rec.files);
    await unpinNamespaces(rec.namespaces);
  }

  /** Everything a sandbox holds, in reverse order of creation; each step is idempotent. */
  private async release(rec: SandboxRecord): Promise<void> {
    // A stopped pod already gave back its network: a second CNI DEL only costs time.
    if (rec.phase !== 'stopped') await this.releaseRunning(rec);
    await fs.rm(rec.dir, { recursive: true, force: true });
    await fs.rm(path.join(this.nsRoot(), rec.id), { recursive: true, force: true });
  }

  /** At shutdown with no pods left, the namespace root's own mount goes too. */
  shutdown(): Promise<void> {
    if (this.sandboxes.size === 0) releaseNamespaceRoot(this.nsRoot());
    return Promise.resolve();
  }

  async remove(idOrPrefix: string, log: Logger): Promise<void> {
    const rec = this.find(idOrPrefix);
    if (!rec) return;
    await this.containers?.removeAll(rec.id);
    this.containers?.forgetPod(rec);
    await this.release(rec);
    await this.store.delete(rec.id);
    this.sandboxes.delete(rec.id);
    this.names.release(rec.name, rec.id);
    log.info({ sandbox: rec.id, pod: rec.name }, 'pod sandbox removed');
  }

  nsRoot(): string {
    return path.join(this.opts.state, 'ns');
  }

  all(): SandboxRecord[] {
    return [...this.sandboxes.values()];
  }
}
