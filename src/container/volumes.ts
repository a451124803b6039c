// CRI mounts that need the daemon's work before runc can bind them: recursive read-only mounts
// (Mount.recursive_read_only) and image volumes (Mount.image, image_sub_path). Each is mounted
// under the container's own staging directory and handed to runc as a plain read-only bind of
// that path; everything there goes with the container (unmountAllUnder).

import path from 'node:path';
import { InvalidArgumentError, NotFoundError, withContext } from '../errors';
import type { Mount__Output } from '../gen/runtime/v1/Mount';
import type { ImageService } from '../image/image_service';
import { mountRootfs } from '../snapshot/rootfs';
import type { LayerDir } from './userns_mounts';
import { makePrivate, mountRecursiveReadOnly, resolveInRoot, unmountAllUnder } from '../snapshot/volume_mounts';

export interface StagedVolumes {
  /** The mounts with host_path pointing at what was staged. */
  mounts: Mount__Output[];
  /** Chain IDs of the layers image volumes mount: kept while the container exists. */
  layers: string[];
  /**
   * Every staged mount is private in the container, so the staged copies may be detached from
   * the host once runc has bound them: an unmount there cannot reach the container's.
   */
  detachable: boolean;
}

/**
 * The CRI's rules for these mounts (cri-api Mount comments; containerd's mutateImageMount),
 * checked for every mount before anything is mounted.
 */
export function validateVolumes(mounts: Mount__Output[], what: string): void {
  for (const m of mounts) {
    const at = `mount at ${m.container_path}`;
    if (m.recursive_read_only) {
      if (!m.readonly) throw new InvalidArgumentError(`${what}: ${at}: recursive_read_only needs readonly`);
      if (m.propagation !== 'PROPAGATION_PRIVATE') {
        throw new InvalidArgumentError(`${what}: ${at}: recursive_read_only needs private propagation, not ${m.propagation}`);
      }
    }
    if (m.image) {
      if (!m.image.image) throw new InvalidArgumentError(`${what}: ${at}: image volume names no image`);
      if (m.host_path) throw new InvalidArgumentError(`${what}: ${at}: an image volume has no host_path (saw ${JSON.stringify(m.host_path)})`);
      if (!m.readonly) throw new InvalidArgumentError(`${what}: ${at}: an image volume must be readonly`);
      if (m.recursive_read_only) throw new InvalidArgumentError(`${what}: ${at}: recursive_read_only applies to host paths, not image volumes`);
    } else if (m.image_sub_path) {
      throw new InvalidArgumentError(`${what}: ${at}: image_sub_path without an image`);
    }
  }
}

/** True when `mounts` has anything for stageVolumes to do. */
export function needsStaging(mounts: Mount__Output[]): boolean {
  return mounts.some((m) => m.recursive_read_only || m.image);
}

/**
 * Mounts what the container's rro mounts and image volumes need under `dir`, one numbered
 * entry per mount. Host paths must already be prepared (created, symlinks resolved). On
 * failure the caller unmounts `dir` with releaseVolumes.
 */
export interface StageOptions {
  /** Where each layer is seen from: the store, or a user-namespace pod's idmapped view of it. */
  layerDir: LayerDir;
  /** The pinned user namespace of the pod, when it has one: rro trees are idmapped to it. */
  userns?: string;
}

export async function stageVolumes(mounts: Mount__Output[], dir: string, images: ImageService, what: string, opts: StageOptions): Promise<StagedVolumes> {
  validateVolumes(mounts, what);
  const layers: string[] = [];
  const out: Mount__Output[] = [];
  let detachable = true;
  for (const [i, m] of mounts.entries()) {
    const target = path.join(dir, String(i));
    try {
      if (m.recursive_read_only) {
        await mountRecursiveReadOnly(m.host_path, target, opts.userns);
        // What runc gets is already read-only all the way down: its plain "ro" rbind suffices.
        out.push({ ...m, host_path: target, recursive_read_only: false });
      } else if (m.image) {
        if (m.propagation !== 'PROPAGATION_PRIVATE') detachable = false;
        const image = images.find(m.image.image);
        if (!image) throw new NotFoundError(`image ${JSON.stringify(m.image.image)} not found`);
        const chainIds = image.layers.map((l) => l.chainId);
        layers.push(...chainIds);
        // No upper dir: a read-only view of the layers, as a container's rootfs is built.
        await mountRootfs({ lowerDirs: chainIds.map(opts.layerDir).reverse(), target, readOnly: true });
        // Not a peer of the host's shared mounts: the container's copy must not follow it.
        makePrivate(target);
        const source = m.image_sub_path ? await resolveInRoot(target, m.image_sub_path) : target;
        out.push({ ...m, host_path: source, image: null });
      } else {
        out.push(m);
      }
    } catch (err) {
      throw withContext(err, `${what}: mount at ${m.container_path}`);
    }
  }
  return { mounts: out, layers, detachable };
}

/** Unmounts and removes everything stageVolumes made under `dir`; idempotent. */
export async function releaseVolumes(dir: string): Promise<void> {
  await unmountAllUnder(dir);
}
