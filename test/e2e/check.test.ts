// `tscri check` on this host: it reports the machine's facts, fails (exit 1) when a feature
// every pod needs is made to fail, and leaves nothing behind. And the daemon carries the same
// report in Status(verbose).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { repoRoot } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import type { HostReport } from '../../src/host/probe';

const mainJs = path.join(repoRoot(), 'dist', 'src', 'main.js');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-check-e2e-'));
after(() => fs.rmSync(base, { recursive: true, force: true }));

function check(...flags: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [mainJs, 'check', '--config', '/dev/null', '--root', base, ...flags], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function line(out: string, feature: string): string {
  const found = out.split('\n').find((l) => new RegExp(`^\\S+\\s+${feature}\\s{2}`).test(l));
  assert.ok(found, `no "${feature}" line in:\n${out}`);
  return found;
}

function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(dir));
}

/** Top-level cgroups of the memory controller (v1) or the unified tree (v2). */
function topCgroups(): string[] {
  const root = fs.existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : '/sys/fs/cgroup/memory';
  return fs
    .readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

describe('tscri check', () => {
  test("reports this machine's facts and exits 0 when pods can run", () => {
    const cgroupsBefore = topCgroups();
    const r = check();
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    // cgroup version from the kernel's files, not from the probe's own reading.
    const v2 = fs.existsSync('/sys/fs/cgroup/cgroup.controllers');
    assert.match(line(r.stdout, 'cgroups'), v2 ? /^ok\s+cgroups\s+v2 \(unified\)/ : /^ok\s+cgroups\s+v1/);
    const runcVersion = spawnSync('runc', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
    assert.ok(line(r.stdout, 'runtime runc').includes(runcVersion), `runc line should quote "${runcVersion}"`);
    assert.match(line(r.stdout, 'runtime runc'), /^ok .*ran a container/);
    assert.match(line(r.stdout, 'conmon'), /^ok .*conmon version/);
    assert.match(line(r.stdout, 'pods'), /^ok/);
    assert.match(line(r.stdout, 'overlay image store'), /^ok/);
    assert.match(r.stdout, /Pods can run on this host\.\n$/);
    assert.deepEqual(fs.readdirSync(base), [], 'the probe leaves no scratch directory');
    assert.deepEqual(mountsUnder(base), []);
    // Not even an empty parent: each check used to leave /tscri in every hierarchy.
    assert.deepEqual(
      topCgroups().filter((c) => !cgroupsBefore.includes(c)),
      [],
      'the probe leaves no cgroup',
    );
  });

  test("a dead check's scratch dir and its mounts are swept; a live one's is kept", () => {
    // As a daemon SIGKILLed in the middle of its check leaves them: pid 2^31-1 is never alive.
    const stale = path.join(base, '.tscri-check-2147483647-abc');
    const live = path.join(base, `.tscri-check-${process.pid}-abc`);
    fs.mkdirSync(path.join(stale, 'm'), { recursive: true });
    fs.mkdirSync(live);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', path.join(stale, 'm')]);
    assert.equal(mounted.status, 0, String(mounted.stderr));
    try {
      const r = check();
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.deepEqual(fs.readdirSync(base), [path.basename(live)]);
      assert.deepEqual(mountsUnder(base), []);
    } finally {
      spawnSync('umount', ['-l', path.join(stale, 'm')]);
      fs.rmSync(stale, { recursive: true, force: true });
      fs.rmSync(live, { recursive: true, force: true });
    }
  });

  test('a runtime binary that does not exist: FAIL and exit 1', () => {
    const r = check('--runtimes', 'runc=/nonexistent/runc');
    assert.equal(r.status, 1, r.stdout);
    assert.match(line(r.stdout, 'runtime runc'), /^FAIL .*\/nonexistent\/runc: not found/);
    assert.match(r.stdout, /No pod can run on this host: runtime runc failed\./);
  });

  test('a conmon path that does not exist: FAIL and exit 1', () => {
    const r = check('--conmon', '/nonexistent/conmon');
    assert.equal(r.status, 1, r.stdout);
    assert.match(line(r.stdout, 'conmon'), /^FAIL .*\/nonexistent\/conmon: not found/);
  });

  test('a runtime that cannot run a container is reported from the run, not from its name', () => {
    // `false` answers --version badly and every run with exit 1: a runtime that is there but
    // fails; not the default handler, so pods can still run.
    const r = check('--runtimes', 'runc=runc,broken=false');
    assert.equal(r.status, 0, r.stdout);
    assert.match(line(r.stdout, 'runtime broken'), /^no .*cannot run a container here/);
  });
});

describe('daemon host check', () => {
  let daemon: Daemon | undefined;
  before(async () => {
    daemon = await startDaemon();
  });
  after(async () => {
    await daemon?.stop();
  });

  test('Status(verbose) carries the report under info.host, and the log says it', async () => {
    assert.ok(daemon, 'a daemon started by before()');
    const st = await daemon.cri.runtime.Status({ verbose: true });
    assert.ok(st.info.host, `info keys: ${Object.keys(st.info).join(', ')}`);
    const report = JSON.parse(st.info.host) as HostReport;
    assert.equal(report.podsCanRun, true);
    const features = report.findings.map((f) => f.feature);
    for (const f of [
      'pods',
      'overlay image store',
      'cgroups',
      'cni',
      'conmon',
      'runtime runc',
      'seccomp',
      'user namespaces',
      'recursive read-only mounts',
      'oom_score_adj',
    ]) {
      assert.ok(features.includes(f), `${f} missing from ${features.join(', ')}`);
    }
    assert.match(daemon.logs(), /"msg":"host check"/);
    const quiet = await daemon.cri.runtime.Status({ verbose: false });
    assert.equal(quiet.info.host, undefined);
  });
});
