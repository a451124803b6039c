// Cgroup files kept open between stats readings: fresh text at each read, nothing kept for a
// cgroup that is gone, and no descriptor left behind by the stats cache.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { cgroupVersion, OpenFiles, v1Dir, v2Dir } from '../../src/cgroups';
import { keptFiles } from '../../src/cgroups/open_files';
import { StatsCache } from '../../src/container/stats_cache';

const version = cgroupVersion();
/** The memory controller's directory of a cgroup at `rel` on this host. */
const memoryDir = (rel: string): string => {
  const dir = version === 2 ? v2Dir(rel) : v1Dir('memory', rel);
  assert.ok(dir, 'this host has a memory controller');
  return dir;
};
/** Every directory of a cgroup at `rel` that readings look at, made. */
function makeCgroup(rel: string): string[] {
  const dirs = version === 2 ? [v2Dir(rel)] : ['memory', 'cpuacct', 'pids'].map((c) => v1Dir(c, rel)).filter((d): d is string => d !== undefined);
  for (const d of dirs) fs.mkdirSync(d);
  return dirs;
}

test('a regular file rewritten in place reads afresh; a long one reads whole', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'open-files-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'memory.stat');
  fs.writeFileSync(file, 'cache 1\n');
  const files = new OpenFiles();
  const before = keptFiles();
  assert.equal(files.read(file), 'cache 1\n');
  assert.equal(keptFiles(), before + 1, 'kept open');
  fs.writeFileSync(file, 'cache 22\n');
  assert.equal(files.read(file), 'cache 22\n', 'the new text, through the same descriptor');
  const long = 'x'.repeat(100_000);
  fs.writeFileSync(file, long);
  assert.equal(files.read(file), long, 'more than the buffer: read whole');
  assert.equal(files.read(path.join(dir, 'missing')), undefined, 'a file that is not there');
  assert.equal(files.size, 1, 'nothing kept for a missing file');
  files.close();
  assert.equal(keptFiles(), before, 'closed');
});

test("a cgroup's files read afresh, and read as gone once the cgroup is removed", (t) => {
  const rel = `/tscri-open-files-${process.pid}`;
  const dirs = makeCgroup(rel);
  t.after(() => {
    for (const d of dirs) if (fs.existsSync(d)) fs.rmdirSync(d);
  });
  const files = new OpenFiles();
  const before = keptFiles();
  const stat = path.join(memoryDir(rel), 'memory.stat');
  const first = files.read(stat);
  assert.ok(first?.includes('cache') || first?.includes('file'), `memory.stat text: ${String(first)}`);
  assert.equal(files.read(stat), first, 'an empty cgroup: the same text again');
  // The kernel's text of a busy cgroup changes between reads: the root's CPU time does.
  const rootCpu = version === 2 ? path.join(v2Dir('/'), 'cpu.stat') : path.join(v1Dir('cpuacct', '/') ?? '/nonexistent', 'cpuacct.usage');
  const a = files.read(rootCpu);
  const until = Date.now() + 30;
  while (Date.now() < until) Math.sqrt(Math.random());
  assert.notEqual(files.read(rootCpu), a, 'read from offset 0 again: fresh text');
  assert.equal(keptFiles(), before + 2);

  for (const d of dirs) fs.rmdirSync(d);
  assert.equal(files.read(stat), undefined, 'removed cgroup: gone');
  assert.equal(files.size, 1, "the removed cgroup's file is closed");
  files.close();
  assert.equal(keptFiles(), before);
});

test('the stats cache closes the files of a cgroup that is gone or forgotten', async (t) => {
  const rel = `/tscri-open-files-cache-${process.pid}`;
  const dirs = makeCgroup(rel);
  t.after(() => {
    for (const d of dirs) if (fs.existsSync(d)) fs.rmdirSync(d);
  });
  const before = keptFiles();
  const cache = new StatsCache({ periodMs: 0, driver: 'cgroupfs' });
  assert.ok(await cache.cgroup(rel), 'a reading of the new cgroup');
  assert.ok(await cache.cgroup('/'), 'a reading of the root');
  assert.equal(cache.openCgroups, 2);
  assert.ok(keptFiles() > before, 'files kept open');
  cache.forget('/');
  assert.equal(cache.openCgroups, 1, 'forgotten: closed');
  for (const d of dirs) fs.rmdirSync(d);
  assert.equal(await cache.cgroup(rel), undefined, 'removed cgroup: no reading');
  assert.equal(cache.openCgroups, 0, 'removed cgroup: closed');
  assert.equal(keptFiles(), before, 'no descriptor left');
});
