import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { NetworkList } from './cni_config';

export interface CachedPortMapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  hostIP?: string;
}

/**
 * What a DEL needs to undo an ADD exactly: the network list as it was when the pod was
 * attached (the config on disk may have changed since), the arguments given to the plugins,
 * and the final result, which plugins receive as prevResult on DEL.
 */
export interface CachedAttachment {
  kind: 'tscri-cni-attachment-v1';
  containerId: string;
  ifName: string;
  network: NetworkList;
  cniArgs: string;
  portMappings: CachedPortMapping[];
  /** Whether the runtime's own loopback attachment was applied (the list had none). */
  loopback: boolean;
  /** Plugin types skipped on ADD because they had nothing to do. */
  skipped: string[];
  result: unknown;
}

export class AttachmentCache {
  private made?: Promise<unknown>;

  constructor(private readonly dir: string) {}

  private file(containerId: string, ifName: string): string {
    if (!/^[A-Za-z0-9_.-]+$/.test(containerId) || !/^[A-Za-z0-9_.-]+$/.test(ifName) || containerId.startsWith('.')) {
      throw new Error(`invalid CNI cache key ${JSON.stringify(containerId)}/${JSON.stringify(ifName)}`);
    }
    return path.join(this.dir, `${containerId}-${ifName}.json`);
  }

  async get(containerId: string, ifName: string): Promise<CachedAttachment | undefined> {
    let text: string;
    try {
      text = await fs.readFile(this.file(containerId, ifName), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      // Whatever is on disk: only its kind says it is an attachment this version wrote.
      const doc = JSON.parse(text) as { kind?: unknown };
      return doc.kind === 'tscri-cni-attachment-v1' ? (doc as CachedAttachment) : undefined;
    } catch {
      // A torn cache entry only costs the prevResult on DEL; plugins then clean up by container id.
      return undefined;
    }
  }

  /**
   * Written with rename but without fsync: the cache must survive a daemon restart, which a
   * rename gives. After a power loss the namespaces and veths are gone anyway, and the plugins'
   * DEL still releases addresses by container id without a prevResult.
   */
  async put(doc: CachedAttachment): Promise<void> {
    this.made ??= fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await this.made;
    const target = this.file(doc.containerId, doc.ifName);
    const tmp = `${target}.tmp-${process.pid}`;
    await fs.writeFile(tmp, JSON.stringify(doc), { mode: 0o600 });
    await fs.rename(tmp, target);
  }

  async delete(containerId: string, ifName: string): Promise<void> {
    await fs.rm(this.file(containerId, ifName), { force: true });
  }
}
