import { promises as fs, constants as fsc } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { FailedPreconditionError, InvalidArgumentError, messageOf } from '../errors';
import type { Logger } from '../log';
import { AttachmentCache, type CachedPortMapping } from './cni_cache';
import { builtinNetwork, CniConfigError, loadFromDir, type DefaultNetwork, type NetworkList, type PluginConf } from './cni_config';
import { baseEnv, CNI_ERR_UNKNOWN_CONTAINER, CniNotStartedError, CniPluginError, execPlugin, type CniCommand } from './cni_exec';
import { podIps, versionAtLeast } from './cni_result';

export { CniPluginError } from './cni_exec';
export { CniConfigError, type DefaultNetwork } from './cni_config';

export interface CniOptions {
  /** Default /etc/cni/net.d. */
  confDir: string;
  /** Default ['/opt/cni/bin', '/usr/lib/cni']. */
  binDirs: string[];
  /** Attachment cache, so DEL gets its prevResult even after a daemon restart. */
  cacheDir: string;
  /** Used when confDir holds no config. */
  defaultNetwork: DefaultNetwork;
  log: Logger;
  /** Per plugin invocation; default 30 s. */
  pluginTimeoutMs?: number;
}

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIP?: string;
}

export interface PodNetworkArgs {
  podId: string;
  /** Path of the pinned network namespace. */
  netns: string;
  podName: string;
  podNamespace: string;
  podUid: string;
  portMappings: PortMapping[];
  /** Default eth0. */
  ifName?: string;
  /** `lo` in the namespace is already up (the daemon made the namespace), so no loopback plugin runs. */
  loUp?: boolean;
}

export interface PodNetworkResult {
  /** Pod IPs without prefix length, IPv4 first. */
  ips: string[];
  /** The final CNI result of the chain. */
  raw: unknown;
}

export interface CniStatus {
  ready: boolean;
  reason: string;
  message: string;
}

interface LoadedNetwork {
  list: NetworkList;
  /** Change detector for the file it came from; "built-in" for the default. */
  key: string;
  /** The runtime's own loopback attachment is needed: the list does not bring lo up itself. */
  loopback: boolean;
  binaries: Map<string, string>;
  missing: string[];
}

const DEFAULT_TIMEOUT_MS = 30_000;
const RELOAD_EVERY_MS = 5_000;
// The loopback attachment stands beside the pod's network, as containerd's "cni-loopback"
// network does, so every config gets an up `lo` whether or not it lists the loopback plugin.
// It runs only for a namespace whose `lo` is not up yet: pods' namespaces come with it up.
const LOOPBACK_NETWORK = 'tscri-loopback';
// Reported as the CRI NetworkReady condition's reason, the string the kubelet shows.
const NOT_READY = 'NetworkPluginNotReady';
// statfs(2) f_type of a network namespace file (linux/magic.h NSFS_MAGIC).
const NSFS_MAGIC = 0x6e736673;

/**
 * Pod networking through CNI plugins, run directly as libcni runs them: one process per
 * plugin per verb, config on stdin, result on stdout.
 */
export class Cni {
  private readonly env = baseEnv();
  private readonly cniPath: string;
  private readonly timeoutMs: number;
  private readonly cache: AttachmentCache;
  private net?: LoadedNetwork;
  private loadError?: string;
  private loading?: Promise<void>;
  private lastLoadAt = 0;
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly opts: CniOptions) {
    this.cniPath = opts.binDirs.join(':');
    this.timeoutMs = opts.pluginTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.cache = new AttachmentCache(opts.cacheDir);
  }

  /**
   * Picks the network: the first config in confDir by lexical order, else the built-in
   * default. Cheap when nothing changed (a readdir and two stats), so it can be called on a
   * timer. A broken config throws and also leaves status() not ready with the same message.
   */
  load(): Promise<void> {
    this.lastLoadAt = Date.now();
    this.loading ??= this.doLoad().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  private async doLoad(): Promise<void> {
    let list: NetworkList;
    let key: string;
    try {
      const found = await loadFromDir(this.opts.confDir);
      key = found ? `${found.file}:${found.mtimeMs}:${found.size}` : 'built-in';
      list = this.net?.key === key ? this.net.list : found ? await found.list() : builtinNetwork(this.opts.defaultNetwork);
    } catch (e) {
      this.net = undefined;
      this.loadError = messageOf(e);
      this.opts.log.error({ confDir: this.opts.confDir, err: this.loadError }, 'CNI config not usable');
      throw e instanceof CniConfigError ? e : new CniConfigError(this.loadError);
    }
    const loopback = !list.plugins.some((p) => p.type === 'loopback');
    const types = new Set(list.plugins.map((p) => p.type));
    if (loopback) types.add('loopback');
    const binaries = new Map<string, string>();
    const missing: string[] = [];
    await Promise.all(
      [...types].map(async (t) => {
        const bin = await findPlugin(t, this.opts.binDirs);
        if (bin) binaries.set(t, bin);
        else missing.push(t);
      }),
    );
    missing.sort();
    const changed = this.net?.key !== key || this.net.missing.join() !== missing.join();
    this.net = { list, key, loopback, binaries, missing };
    this.loadError = undefined;
    if (changed) {
      this.opts.log.info(
        { network: list.name, source: list.source, cniVersion: list.cniVersion, plugins: list.plugins.map((p) => p.type), missing },
        'CNI network loaded',
      );
    }
  }

  /**
   * From memory: the kubelet polls it every few seconds. At most every RELOAD_EVERY_MS it also
   * starts a background load(), so config changes show up without a daemon restart.
   */
  status(): CniStatus {
    const now = Date.now();
    if (now - this.lastLoadAt >= RELOAD_EVERY_MS && !this.loading) {
      this.load().catch(() => undefined);
    }
    if (this.loadError) return { ready: false, reason: NOT_READY, message: `CNI config in ${this.opts.confDir} is not usable: ${this.loadError}` };
    if (!this.net) return { ready: false, reason: NOT_READY, message: 'CNI network not loaded yet' };
    if (this.net.missing.length > 0) {
      return {
        ready: false,
        reason: NOT_READY,
        message: `CNI network ${this.net.list.name} (${this.net.list.source}) needs plugins not found in ${this.cniPath}: ${this.net.missing.join(', ')}`,
      };
    }
    return { ready: true, reason: '', message: '' };
  }

  networkName(): string {
    return this.net?.list.name ?? this.opts.defaultNetwork.name;
  }

  /**
   * ADD of every plugin in order, each given the previous one's result. On failure what was
   * added is deleted again (the spec asks the runtime to DEL after a failed ADD) and the error
   * names the pod, the network and the plugin.
   *
   * With `netnsReady`, the first plugin starts at once and is given its config when that
   * settles, so its start-up overlaps the making of the namespace; if it rejects, nothing was
   * added and setup rejects with that reason.
   */
  setup(args: PodNetworkArgs, netnsReady?: Promise<void>): Promise<PodNetworkResult> {
    return this.withLock(args.podId, () => this.doSetup(args, netnsReady ?? Promise.resolve()));
  }

  private async doSetup(args: PodNetworkArgs, netnsReady: Promise<void>): Promise<PodNetworkResult> {
    // A config dropped in after start (a network add-on installing its conflist) is picked up
    // by the first pod rather than waiting for the next status poll.
    if (!this.status().ready) await this.load().catch(() => undefined);
    const st = this.status();
    if (!st.ready || !this.net) throw new FailedPreconditionError(`cannot attach pod ${podRef(args)} to the network: ${st.message}`);
    const net = this.net;
    const list = net.list;
    const ifName = args.ifName ?? 'eth0';
    const what = `CNI ADD of pod ${podRef(args)} to network ${list.name}`;
    const ready = netnsReady.then(async () => {
      if (!(await isNetns(args.netns))) throw new InvalidArgumentError(`${what}: ${args.netns} is not a network namespace`);
    });
    ready.catch(() => undefined);
    const started = performance.now();
    const call: Call = {
      containerId: args.podId,
      netns: args.netns,
      ifName,
      cniArgs: cniArgs(args),
      portMappings: args.portMappings.map(toCachedMapping),
      binaries: net.binaries,
    };

    // Settles to the error rather than rejecting, so a fast loopback failure is not an
    // unhandled rejection while the chain is still running.
    const withLoopback = net.loopback && !args.loUp;
    const loopback = withLoopback
      ? ready
          .then(() => this.addLoopback(list.cniVersion, call))
          .then(
            () => undefined,
            (e: unknown) => e ?? new Error('loopback failed'),
          )
      : undefined;
    // The first plugin that runs waits for the namespace; with every plugin skipped, setup does.
    const firstToRun = list.plugins.find((p) => !skippable(p, call));
    if (!firstToRun) {
      const notReady = await ready.then(
        () => undefined,
        (e: unknown) => ({ error: e }),
      );
      if (notReady !== undefined) {
        await loopback;
        throw notReady.error;
      }
    }
    const skipped: string[] = [];
    let prev: unknown;
    let failed: unknown;
    let added = 0;
    for (const plugin of list.plugins) {
      if (skippable(plugin, call)) {
        skipped.push(plugin.type);
        added++;
        continue;
      }
      try {
        prev = await this.invoke('ADD', list, plugin, call, prev, plugin === firstToRun ? ready : undefined);
        added++;
      } catch (e) {
        if (e instanceof CniNotStartedError) {
          // Nothing was added: the namespace never came, and the first plugin never ran.
          await loopback;
          throw e.cause;
        }
        // The failed plugin may have left part of its work behind, so it is deleted too.
        added++;
        failed = e;
        break;
      }
    }
    if (loopback) failed ??= await loopback;

    if (failed !== undefined) {
      const undo = list.plugins.slice(0, added).filter((p) => !skipped.includes(p.type));
      const errs = await this.delPlugins(list, undo, call, versionAtLeast(list.cniVersion, '0.4.0') ? prev : undefined);
      if (loopback) errs.push(...(await this.delLoopback(list.cniVersion, call)));
      for (const e of errs) this.opts.log.warn({ pod: args.podId, err: messageOf(e) }, 'CNI DEL after a failed ADD failed');
      throw new Error(`${what} failed: ${messageOf(failed)}`, { cause: failed });
    }

    await this.cache.put({
      kind: 'tscri-cni-attachment-v1',
      containerId: args.podId,
      ifName,
      network: list,
      cniArgs: call.cniArgs,
      portMappings: call.portMappings,
      loopback: withLoopback,
      skipped,
      result: prev,
    });
    const ips = podIps(prev, ifName);
    this.opts.log.debug({ pod: args.podId, network: list.name, ips, ms: Math.round(performance.now() - started) }, 'pod network set up');
    return { ips, raw: prev };
  }

  /**
   * DEL of every plugin in reverse order, with the attachment as cached at ADD. Idempotent:
   * with no cache the current config is used without prevResult, a namespace that is gone
   * is not passed (the plugins then only release what lives outside it), and plugins report
   * success for attachments they no longer know. A failing plugin does not stop the others;
   * the cache stays so that a retry has it.
   */
  teardown(args: PodNetworkArgs): Promise<void> {
    return this.withLock(args.podId, () => this.doTeardown(args));
  }

  private async doTeardown(args: PodNetworkArgs): Promise<void> {
    const ifName = args.ifName ?? 'eth0';
    const cached = await this.cache.get(args.podId, ifName);
    const list = cached?.network ?? this.net?.list;
    if (!list) {
      this.opts.log.warn({ pod: args.podId, reason: this.status().message }, 'no CNI network known for pod teardown; nothing deleted');
      return;
    }
    const started = performance.now();
    const netnsAlive = args.netns !== '' && (await isNetns(args.netns));
    const call: Call = {
      containerId: args.podId,
      netns: netnsAlive ? args.netns : undefined,
      ifName,
      cniArgs: cached?.cniArgs ?? cniArgs(args),
      portMappings: cached?.portMappings ?? args.portMappings.map(toCachedMapping),
      binaries: await this.binariesFor(list),
    };
    const plugins = list.plugins.filter((p) => !(cached?.skipped.includes(p.type) && skippable(p, call)));
    const prev = cached && versionAtLeast(list.cniVersion, '0.4.0') ? cached.result : undefined;
    const loopback = cached ? cached.loopback : !list.plugins.some((p) => p.type === 'loopback');
    // loopback's DEL only acts inside the namespace, so there is nothing to do once it is gone.
    const [chainErrs, loErrs] = await Promise.all([
      this.delPlugins(list, plugins, call, prev),
      loopback && netnsAlive ? this.delLoopback(list.cniVersion, call) : Promise.resolve([]),
    ]);
    const errs = [...chainErrs, ...loErrs];
    if (errs.length > 0) {
      throw new Error(`CNI DEL of pod ${podRef(args)} from network ${list.name} failed: ${errs.map(messageOf).join('; ')}`, { cause: errs[0] });
    }
    await this.cache.delete(args.podId, ifName);
    this.opts.log.debug(
      { pod: args.podId, network: list.name, netnsAlive, cached: !!cached, ms: Math.round(performance.now() - started) },
      'pod network torn down',
    );
  }

  /** CHECK of every plugin (CNI 0.4.0 and later, unless the list disables it). */
  check(args: PodNetworkArgs): Promise<void> {
    return this.withLock(args.podId, async () => {
      const ifName = args.ifName ?? 'eth0';
      const cached = await this.cache.get(args.podId, ifName);
      if (!cached) throw new FailedPreconditionError(`CNI CHECK of pod ${podRef(args)}: the pod has no network attachment`);
      const list = cached.network;
      if (!versionAtLeast(list.cniVersion, '0.4.0') || list.disableCheck) return;
      const call: Call = {
        containerId: args.podId,
        netns: args.netns,
        ifName,
        cniArgs: cached.cniArgs,
        portMappings: cached.portMappings,
        binaries: await this.binariesFor(list),
      };
      for (const plugin of list.plugins) {
        if (cached.skipped.includes(plugin.type) && skippable(plugin, call)) continue;
        try {
          await this.invoke('CHECK', list, plugin, call, cached.result);
        } catch (e) {
          throw new Error(`CNI CHECK of pod ${podRef(args)} on network ${list.name} failed: ${messageOf(e)}`, { cause: e });
        }
      }
    });
  }

  private async binariesFor(list: NetworkList): Promise<Map<string, string>> {
    if (this.net && this.net.list === list) return this.net.binaries;
    const out = new Map(this.net?.binaries ?? []);
    for (const t of [...list.plugins.map((p) => p.type), 'loopback']) {
      if (out.has(t)) continue;
      const bin = await findPlugin(t, this.opts.binDirs);
      if (bin) out.set(t, bin);
    }
    return out;
  }

  private async delPlugins(list: NetworkList, plugins: PluginConf[], call: Call, prev: unknown): Promise<unknown[]> {
    const errs: unknown[] = [];
    for (const plugin of [...plugins].reverse()) {
      try {
        await this.invoke('DEL', list, plugin, call, prev);
      } catch (e) {
        if (e instanceof CniPluginError && e.code === CNI_ERR_UNKNOWN_CONTAINER) continue;
        errs.push(e);
      }
    }
    return errs;
  }

  private loopbackList(cniVersion: string): NetworkList {
    return { cniVersion, name: LOOPBACK_NETWORK, disableCheck: true, plugins: [{ type: 'loopback' }], source: 'built-in' };
  }

  private async addLoopback(cniVersion: string, call: Call): Promise<void> {
    const lo = this.loopbackList(cniVersion);
    await this.invoke('ADD', lo, lo.plugins[0], { ...call, ifName: 'lo' }, undefined);
  }

  private async delLoopback(cniVersion: string, call: Call): Promise<unknown[]> {
    const lo = this.loopbackList(cniVersion);
    return this.delPlugins(lo, lo.plugins, { ...call, ifName: 'lo' }, undefined);
  }

  private async invoke(command: CniCommand, list: NetworkList, plugin: PluginConf, call: Call, prev: unknown, configAfter?: Promise<void>): Promise<unknown> {
    const binary = call.binaries.get(plugin.type);
    if (!binary) throw new CniPluginError(plugin.type, command, 0, `plugin binary not found in ${this.cniPath}`, '');
    const t0 = performance.now();
    const result = await execPlugin(
      {
        command,
        binary,
        type: plugin.type,
        containerId: call.containerId,
        netns: call.netns,
        ifName: call.ifName,
        cniArgs: call.cniArgs,
        cniPath: this.cniPath,
        config: pluginConfig(list, plugin, prev, call),
        timeoutMs: this.timeoutMs,
        configAfter,
      },
      this.env,
    );
    this.opts.log.trace({ pod: call.containerId, plugin: plugin.type, command, ms: Math.round(performance.now() - t0) }, 'CNI plugin ran');
    return result;
  }

  private async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }
}

interface Call {
  containerId: string;
  netns?: string;
  ifName: string;
  cniArgs: string;
  portMappings: CachedPortMapping[];
  binaries: Map<string, string>;
}

/**
 * The plugin's stdin: its own config plus the list's name and version, the previous result,
 * and runtimeConfig holding only the capabilities the plugin declares (CNI CONVENTIONS.md,
 * "Dynamic Plugin specific fields"), as libcni injects them.
 */
function pluginConfig(list: NetworkList, plugin: PluginConf, prev: unknown, call: Call): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prev !== undefined) conf.prevResult = prev;
  const rc: Record<string, unknown> = {};
  if (plugin.capabilities?.portMappings === true) rc.portMappings = call.portMappings;
  if (Object.keys(rc).length > 0) conf.runtimeConfig = rc;
  return conf;
}

/**
 * portmap with no mappings passes prevResult through untouched on ADD and creates no rules,
 * yet its DEL still runs a dozen iptables commands; skipping it saves that on the common
 * pod without hostPorts.
 */
function skippable(plugin: PluginConf, call: Call): boolean {
  return plugin.type === 'portmap' && call.portMappings.length === 0;
}

function cniArgs(a: PodNetworkArgs): string {
  return [
    'IgnoreUnknown=1',
    `K8S_POD_NAMESPACE=${a.podNamespace}`,
    `K8S_POD_NAME=${a.podName}`,
    `K8S_POD_INFRA_CONTAINER_ID=${a.podId}`,
    `K8S_POD_UID=${a.podUid}`,
  ].join(';');
}

function toCachedMapping(p: PortMapping): CachedPortMapping {
  const m: CachedPortMapping = { hostPort: p.hostPort, containerPort: p.containerPort, protocol: p.protocol };
  if (p.hostIP) m.hostIP = p.hostIP;
  return m;
}

function podRef(a: PodNetworkArgs): string {
  return `${a.podNamespace}/${a.podName} (${a.podId})`;
}

async function isNetns(p: string): Promise<boolean> {
  try {
    return (await fs.statfs(p)).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

/** The first executable `type` in `dirs`, as CNI's plugin lookup goes; undefined when none is. */
export async function findPlugin(type: string, dirs: string[]): Promise<string | undefined> {
  for (const dir of dirs) {
    const p = path.join(dir, type);
    try {
      await fs.access(p, fsc.X_OK);
      return p;
    } catch {
      // next directory
    }
  }
  return undefined;
}
