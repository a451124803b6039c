// The start-up probe behind Status's user_namespaces feature: does this node do what a pod with
// its own user namespace needs? A user namespace made by the helper (sys/userns.ts), an idmapped
// mount on the layer store's filesystem (ext4, xfs: 5.12+; btrfs: 5.15+; tmpfs: 6.3+), and an overlay
// whose layers are idmapped mounts (5.19+), checked by the owner a file shows through it.

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { messageOf } from '../errors';
import { mountIdmapped } from '../sys/idmap';
import { MNT_DETACH, mount, MS_RDONLY, umount2 } from '../sys/libc';
import { unmountBelow } from '../sys/unmount_below';
import { withUserNamespace } from '../sys/userns';

export interface UsernsSupport {
  ok: boolean;
  /** Why not, for the log and the error a pod asking for one gets. */
  reason?: string;
}

// Any range will do: nothing is written through it.
const PROBE_HOST_ID = 1_000_000_000;

/** Probes in a scratch directory under `root` (the filesystem of the layers); leaves nothing. */
export async function probeIdmappedLayers(root: string): Promise<UsernsSupport> {
  const dir = path.join(root, '.userns-probe');
  const view = path.join(dir, 'view');
  const merged = path.join(dir, 'merged');
  const mounted: string[] = [];
  try {
    // What a daemon that died mid-probe left.
    unmountBelow(dir);
    await fs.rm(dir, { recursive: true, force: true });
    for (const d of ['layers/a', 'layers/b', 'view', 'merged']) await fs.mkdir(path.join(dir, d), { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(dir, 'layers/a/f'), '');
    const mapping = [{ containerId: 0, hostId: PROBE_HOST_ID, length: 65536 }];
    await withUserNamespace({ uids: mapping, gids: mapping }, (fd) => {
      mountIdmapped(path.join(dir, 'layers'), view, { userns: fd });
      mounted.push(view);
    });
    // Read-only with two lowers: no upper dir needed.
    mount('overlay', merged, 'overlay', MS_RDONLY, `lowerdir=${view}/a:${view}/b`);
    mounted.push(merged);
    const st = await fs.stat(path.join(merged, 'f'));
    if (st.uid !== PROBE_HOST_ID) return { ok: false, reason: `an overlay over idmapped layers shows uid ${st.uid}, not ${PROBE_HOST_ID}` };
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: messageOf(err) };
  } finally {
    for (const m of mounted.reverse()) {
      try {
        umount2(m, MNT_DETACH);
      } catch {
        // the scratch dir's removal below reports what is left
      }
    }
    await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
