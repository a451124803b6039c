import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Daemon } from '../helpers/daemon';
import { removeCgroupTree } from '../helpers/pods';
import type { Registry } from '../helpers/registry';
import { mountsUnder, type Containerd } from './containerd';
import { conmonsUnder, listProcs, shimsOf, type Proc } from './procs';

/** What a benchmark started, for teardownBench to stop and remove. */
export interface StartedParts {
  daemon?: Daemon;
  containerd?: Containerd;
  registry?: Registry;
  bridges: string[];
  cgroupRoots: string[];
  work: string;
}

/**
 * Stops the daemons and the registry, waits for their monitors to go, deletes the bridges,
 * cgroups and the work dir. Pods must be removed before (while the daemons can still stop
 * them). Every step runs even when one fails; the failures are returned.
 */
export async function teardownBench(s: StartedParts, problems: string[]): Promise<string[]> {
  const step = async (what: string, fn: () => unknown): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      problems.push(`${what}: ${String(err)}`);
    }
  };
  const tscriBase = s.daemon?.base;
  const ctrdSocket = s.containerd?.socket;
  const { daemon, containerd, registry } = s;
  if (daemon) {
    await step('stopping tscri', async () => {
      await daemon.stop('SIGTERM', { keep: true });
      const left = mountsUnder(daemon.base);
      for (const mp of left) spawnSync('umount', ['-l', mp], { stdio: 'ignore' });
      fs.rmSync(daemon.base, { recursive: true, force: true });
      if (left.length > 0) throw new Error(`tscri left mounts (unmounted now): ${left.join(', ')}`);
    });
  }
  if (containerd) await step('stopping containerd', () => containerd.stop());
  if (registry) await step('stopping docker-registry', () => registry.stop());
  await step('leftover monitors', async () => {
    let left: Proc[] = [];
    for (let i = 0; i < 50; i++) {
      const procs = listProcs();
      left = [...(tscriBase ? conmonsUnder(procs, [tscriBase]) : []), ...(ctrdSocket ? shimsOf(procs, ctrdSocket) : [])];
      if (left.length === 0) return;
      await sleep(100);
    }
    throw new Error(`still running: ${left.map((p) => `${p.pid} ${p.args.join(' ').slice(0, 160)}`).join('; ')}`);
  });
  for (const bridge of s.bridges) {
    await step(`deleting bridge ${bridge}`, () => {
      if (!ipLinkExists(bridge)) return;
      const r = spawnSync('ip', ['link', 'del', bridge], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(r.stderr.trim());
    });
  }
  for (const root of s.cgroupRoots) {
    await step(`removing cgroups /${root}`, () => {
      const failed = removeCgroupTree(root);
      if (failed.length > 0) throw new Error(failed.join('; '));
    });
  }
  await step('removing work dir', () => {
    const left = mountsUnder(s.work);
    if (left.length > 0) throw new Error(`mounts under ${s.work}: ${left.join(', ')}`);
    fs.rmSync(s.work, { recursive: true, force: true });
  });
  return problems;
}

export function ipLinkExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', name], { stdio: 'ignore' }).status === 0;
}
