// Pod namespaces without a pause process: a pod's net, IPC and UTS namespaces are created on a
// dedicated worker thread and kept alive by bind mounts of their nsfs files (the way `ip netns add`
// pins a network namespace). Later, runc joins them by path (OCI linux.namespaces[].path) and CNI
// configures the network one by path.
//
// One long-lived worker serves every pod: starting a Worker costs ~30 ms, the pin itself well
// under that, and pod start latency is on the kubelet's critical path.

import fs from 'node:fs';
import path from 'node:path';
import { RequestWorker } from './request_worker';
import { MNT_DETACH, mount, MS_BIND, MS_PRIVATE, MS_SHARED, NSFS_MAGIC, statfs, SysError, umount2 } from './libc';
import { mountsAt } from './mountinfo';
import type { NsKind, WorkerReply, WorkerRequest } from './namespaces_worker';

export type { NsKind } from './namespaces_worker';

export interface PodNamespaces {
  net?: string;
  ipc?: string;
  uts?: string;
  /** A pod with its own user namespace (userns.ts); its net, IPC and UTS namespaces belong to it. */
  user?: string;
}

export interface PinOptions {
  net: boolean;
  ipc: boolean;
  uts: boolean;
  /** Set inside the new UTS namespace; ignored without `uts`. */
  hostname?: string;
}

// Kept a few seconds after the last pod: creating the thread costs ~30 ms, which a burst of
// pod starts pays once, while a node whose pods just run should not hold the thread's heap
// (~10 MB PSS measured here; 6 MB of it comes back when the thread stops).
const worker = new RequestWorker<WorkerRequest, WorkerReply>(path.join(__dirname, 'namespaces_worker.js'), 'namespace', 5_000);
const sharedRoots = new Map<string, Promise<void>>();

/**
 * Makes `root` (the directory holding every pod's pin directory) a shared mount, once per process.
 *
 * A pin is a mount, and every mount namespace created after it (runc's, before pivot_root; any
 * service with PrivateTmp; a node agent with /run mounted in) gets a copy. With private
 * propagation our unmount never reaches those copies, so they keep the namespace alive after the
 * pod is gone. Shared propagation carries both the pin and its removal to peers and slaves, which
 * is why iproute2 makes /run/netns a shared bind mount of itself, and containerd and CRI-O keep
 * their netns directories under such a mount as well.
 */
export function prepareNamespaceRoot(root: string): Promise<void> {
  const abs = path.resolve(root);
  let done = sharedRoots.get(abs);
  if (!done) {
    done = (async () => {
      await fs.promises.mkdir(abs, { recursive: true, mode: 0o755 });
      const stacked = mountsAt(abs);
      const top = stacked.at(-1);
      if (top?.optional.some((o) => o.startsWith('shared:'))) return;
      if (!top) {
        // Propagation types apply to mount points, so a plain directory first becomes one. A bind
        // inherits its source's peer group: on a host whose / is shared, every pin would then be
        // propagated a second time onto the parent mount, underneath this one. Private first
        // makes the following MS_SHARED start a peer group of its own.
        mount(abs, abs, null, MS_BIND, null);
        mount(null, abs, null, MS_PRIVATE, null);
      }
      mount(null, abs, null, MS_SHARED, null);
    })();
    sharedRoots.set(abs, done);
    done.catch(() => sharedRoots.delete(abs));
  }
  return done;
}

/** Forgets (and unmounts) a root prepared by prepareNamespaceRoot; for tests and teardown. */
export function releaseNamespaceRoot(root: string): void {
  const abs = path.resolve(root);
  sharedRoots.delete(abs);
  try {
    umount2(abs, MNT_DETACH);
  } catch (err) {
    if (!(err instanceof SysError && (err.code === 'EINVAL' || err.code === 'ENOENT'))) throw err;
  }
}

/** Where pinPodNamespaces(dir, …) pins a namespace of `kind` (the worker's own layout). */
export function pinPath(dir: string, kind: NsKind | 'user'): string {
  return path.join(path.resolve(dir), kind);
}

/**
 * Creates the namespaces a pod asks for and pins them as `dir/net`, `dir/ipc`, `dir/uts`. Nothing
 * inside is configured but the hostname and an up `lo` in a new network namespace.
 * The parent of `dir` is made a shared mount first (see prepareNamespaceRoot).
 */
export async function pinPodNamespaces(dir: string, opts: PinOptions): Promise<PodNamespaces> {
  const kinds: NsKind[] = [];
  if (opts.net) kinds.push('net');
  if (opts.ipc) kinds.push('ipc');
  if (opts.uts) kinds.push('uts');
  if (kinds.length === 0) return {};
  const abs = path.resolve(dir);
  await prepareNamespaceRoot(path.dirname(abs));
  const reply = await worker.request({ op: 'pin', dir: abs, kinds, hostname: opts.hostname });
  if (!reply.ok) {
    throw Object.assign(new Error(`failed to pin ${kinds.join('/')} namespaces in ${abs}: ${reply.message}`), {
      code: reply.code,
    });
  }
  return reply.paths ?? {};
}

/**
 * Sets the hostname in a pinned UTS namespace and brings `lo` up in a pinned network namespace,
 * for namespaces made elsewhere (userns.ts) that pinPodNamespaces did not configure itself.
 */
export async function configureNamespaces(ns: { net?: string; uts?: string }, hostname?: string): Promise<void> {
  if (!ns.net && !ns.uts) return;
  const reply = await worker.request({ op: 'configure', net: ns.net, uts: ns.uts, hostname });
  if (!reply.ok) {
    throw Object.assign(new Error(`failed to configure namespaces ${[ns.net, ns.uts].filter(Boolean).join(', ')}: ${reply.message}`), {
      code: reply.code,
    });
  }
}

/** Unmounts and removes each pin. Idempotent: a missing file or one no longer mounted is fine. */
export async function unpinNamespaces(ns: PodNamespaces): Promise<void> {
  const errors: string[] = [];
  for (const p of [ns.net, ns.ipc, ns.uts, ns.user]) {
    if (!p) continue;
    try {
      // A pin can be stacked if an earlier attempt was interrupted after mounting twice.
      while (isPinned(p)) umount2(p, MNT_DETACH);
      await fs.promises.rm(p, { force: true });
    } catch (err) {
      errors.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (errors.length > 0) throw new Error(`failed to unpin namespaces: ${errors.join('; ')}`);
}

/** True when `p` is an nsfs file, i.e. a namespace bind-mounted onto it. */
export function isPinned(p: string): boolean {
  try {
    return statfs(p).type === NSFS_MAGIC;
  } catch (err) {
    if (err instanceof SysError && err.code === 'ENOENT') return false;
    throw err;
  }
}

/** The worker thread's own namespaces (readlink of /proc/thread-self/ns/*), for health checks. */
export async function namespaceWorkerState(): Promise<Record<NsKind, string>> {
  const reply = await worker.request({ op: 'state' });
  if (!reply.ok || !reply.state) throw new Error(`namespace worker state: ${reply.ok ? 'empty' : reply.message}`);
  return reply.state;
}

/** Stops the worker; the next pin starts a new one. */
export function stopNamespaceWorker(): Promise<void> {
  return worker.stop();
}
