import fs from 'node:fs';
import path from 'node:path';
import { mountRootfs, unmountRootfs } from '../snapshot/rootfs';
import { failed, found, messageOf, type Finding } from './finding';
import { fsName } from './probe_kernel';

/** An overlay of one lower layer plus an upper, mounted as a container rootfs is, then removed. */
export async function probeOverlay(scratch: string): Promise<Finding> {
  const dir = path.join(scratch, 'overlay');
  const lower = path.join(dir, 'lower');
  const target = path.join(dir, 'merged');
  const where = fsName(scratch);
  try {
    fs.mkdirSync(lower, { recursive: true });
    fs.writeFileSync(path.join(lower, 'layer'), 'lower\n');
    await mountRootfs({ lowerDirs: [lower], upperDir: path.join(dir, 'upper'), workDir: path.join(dir, 'work'), target });
    try {
      if (fs.readFileSync(path.join(target, 'layer'), 'utf8') !== 'lower\n') throw new Error('the lower layer is not visible through the overlay');
      fs.writeFileSync(path.join(target, 'written'), 'upper\n');
      if (!fs.existsSync(path.join(dir, 'upper', 'written'))) throw new Error('a write did not reach the upper directory');
    } finally {
      await unmountRootfs(target);
    }
    return found('overlay image store', `overlayfs mounts and writes on ${where}`, true);
  } catch (err) {
    return failed('overlay image store', `overlayfs on ${where}: ${messageOf(err)}`, true);
  }
}
