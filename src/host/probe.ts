// What this host can give a pod, probed by doing each thing once. `tscri check` prints it; the
// daemon logs it at start and Status(verbose) returns it under info["host"].
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config';
import { probeIdmappedLayers, type UsernsSupport } from '../snapshot/idmap_probe';
import { unmountBelow } from '../sys/unmount_below';
import { type Finding } from './finding';
import { probeCgroups, readCgroupLayout, systemdRunning } from './probe_cgroups';
import { probeCni } from './probe_cni';
import { probeOomScoreAdj, probePodNamespaces, probeRecursiveReadOnly, probeSeccomp, usernsFinding } from './probe_kernel';
import { probeConmon, probeRuntime } from './probe_runtime';
import { probeOverlay } from './probe_storage';

export type { Finding } from './finding';

export interface HostReport {
  findings: Finding[];
  /** False when an essential feature fails: no pod could run here at all. */
  podsCanRun: boolean;
}

/** The image store's directory if it exists, else the temp dir: where the scratch space goes. */
function scratchParent(cfg: Config): string {
  return fs.existsSync(cfg.root) ? cfg.root : os.tmpdir();
}

const SCRATCH_PREFIX = '.tscri-check-';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A daemon killed in the middle of its check leaves its scratch dir with namespace pins and an
 * overlay mounted in it. The dir names its owner's pid, so a check running now in another
 * process (`tscri check` beside the daemon) keeps its own.
 */
function sweepStaleScratch(parent: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(parent).filter((n) => n.startsWith(SCRATCH_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(name.slice(SCRATCH_PREFIX.length).split('-')[0]);
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) continue;
    const dir = path.join(parent, name);
    unmountBelow(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs every probe; each cleans up after itself, and the scratch dir goes at the end. */
export async function probeHost(cfg: Config, known: { userns?: Promise<UsernsSupport> } = {}): Promise<HostReport> {
  const parent = scratchParent(cfg);
  sweepStaleScratch(parent);
  const scratch = fs.mkdtempSync(path.join(parent, `${SCRATCH_PREFIX}${process.pid}-`));
  try {
    // The namespace pins and the overlay mount come first, one at a time: the kernel probes
    // that follow clone scratch's mount and should find nothing mounted below it.
    const pods = await probePodNamespaces(scratch);
    const overlay = await probeOverlay(scratch);
    const layout = readCgroupLayout();
    const runtimes = Object.entries(cfg.runtimes).map(([handler, binary], i) => {
      const dir = path.join(scratch, `runtime-${i}`);
      return probeRuntime({ handler, binary, essential: handler === cfg.defaultRuntime, cgroupDriver: cfg.cgroupDriver, scratch: dir });
    });
    const [cni, conmon, userns, ...handlers] = await Promise.all([
      probeCni(cfg),
      probeConmon(cfg.conmon),
      // The daemon has run this probe already: its answer is what Status reports.
      known.userns ?? probeIdmappedLayers(scratch),
      ...runtimes,
    ]);
    const findings: Finding[] = [
      pods,
      overlay,
      probeCgroups(layout, cfg.cgroupDriver, systemdRunning()),
      cni,
      conmon,
      ...handlers,
      probeSeccomp(),
      usernsFinding(userns, scratch),
      probeRecursiveReadOnly(scratch),
      probeOomScoreAdj(cfg.restrictOomScoreAdj),
    ];
    return { findings, podsCanRun: findings.every((f) => f.ok || !f.essential) };
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** One line per feature: ok / FAIL, the feature, what was seen. */
export function formatReport(report: HostReport): string {
  const width = Math.max(...report.findings.map((f) => f.feature.length));
  const lines = report.findings.map((f) => `${f.ok ? 'ok  ' : f.essential ? 'FAIL' : 'no  '}  ${f.feature.padEnd(width)}  ${f.detail}`);
  lines.push(
    report.podsCanRun
      ? 'Pods can run on this host.'
      : `No pod can run on this host: ${report.findings
          .filter((f) => !f.ok && f.essential)
          .map((f) => f.feature)
          .join(', ')} failed.`,
  );
  return `${lines.join('\n')}\n`;
}
