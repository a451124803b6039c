// What a container of a pod with its own user namespace needs mounted before runc runs: its
// files must be seen through the namespace's mapping, or every file of host uid 0 (all of an
// image) shows as nobody and root inside cannot write its own rootfs. The daemon makes the
// idmapped mounts (runc 1.1 cannot), all under the container's bundle directory, and
// unmountBelow(bundle) (sys/unmount_below.ts) takes them away with the container.
//
// The rootfs: an overlay mount itself cannot be idmapped, but overlayfs (5.19+) accepts idmapped
// layers. One idmapped clone of the whole layer store serves every lowerdir of the container
// (one mount however many layers), while the upper dir stays as it is, owned by the host ids of
// the namespace's root: what the container writes lands on disk with its mapped owners, which
// is what the host should see.

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, messageOf } from '../errors';
import type { Mount__Output } from '../gen/runtime/v1/Mount';
import { mountIdmapped } from '../sys/idmap';
import { SysError } from '../sys/libc';

/** Where the idmapped view of the layer store is, in a bundle. */
export function layerViewPath(bundle: string): string {
  return path.join(bundle, 'layers');
}

/** Where a layer's directory is, by chain ID: in the store, or seen through a bundle's view. */
export type LayerDir = (chainId: string) => string;

/**
 * Mounts an idmapped clone of the layer store `layersDir` at `<bundle>/layers` and says where
 * each layer (`layerDir` in the store) is seen through it.
 */
export async function mountLayerView(layersDir: string, layerDir: LayerDir, bundle: string, userns: string): Promise<LayerDir> {
  const view = layerViewPath(bundle);
  await fs.mkdir(view, { recursive: true, mode: 0o700 });
  try {
    mountIdmapped(layersDir, view, { userns });
  } catch (err) {
    throw new Error(`cannot make an idmapped view of the layers in ${layersDir}: ${messageOf(err)}`, { cause: err });
  }
  return (chainId) => path.join(view, path.relative(layersDir, layerDir(chainId)));
}

/**
 * The CRI mounts with each host path replaced by an idmapped clone of it (recursive, as the
 * rbind runc makes of it) at `<bundle>/mounts/<n>`, which runc binds as it would the host path.
 * A source whose filesystem cannot be idmapped fails the create: bound unmapped, its files
 * would show as nobody and root-owned files be read-only to the pod's root.
 */
export async function idmapMountSources(mounts: Mount__Output[], bundle: string, userns: string): Promise<Mount__Output[]> {
  const dir = path.join(bundle, 'mounts');
  const out: Mount__Output[] = [];
  for (const [i, m] of mounts.entries()) {
    // Image volumes and rro trees are idmapped as they are staged (container/volumes.ts).
    if (!m.host_path || m.image || m.recursive_read_only) {
      out.push(m);
      continue;
    }
    await fs.mkdir(dir, { recursive: true, mode: 0o711 });
    const target = path.join(dir, String(i));
    const st = await fs.stat(m.host_path);
    if (st.isDirectory()) await fs.mkdir(target, { mode: 0o755 });
    else await fs.writeFile(target, '', { mode: 0o644, flag: 'wx' });
    try {
      mountIdmapped(m.host_path, target, { userns, recursive: true });
    } catch (err) {
      const detail = err instanceof SysError && err.code === 'EINVAL' ? ' (its filesystem may not support idmapped mounts)' : '';
      throw new InvalidArgumentError(`mount ${m.container_path}: cannot idmap ${m.host_path} for the pod's user namespace${detail}: ${messageOf(err)}`, {
        cause: err,
      });
    }
    out.push({ ...m, host_path: target });
  }
  return out;
}
