// The cgroup part of the host check, on this machine and on v2 and hybrid trees written in
// the kernel's own file formats.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { statfs } from '../../src/sys/libc';
import { probeCgroups, readCgroupLayout } from '../../src/host/probe_cgroups';
import { tempDir } from '../helpers/unit';

const CGROUP2_SUPER_MAGIC = 0x63677270;

test("this machine's layout agrees with the filesystem type of /sys/fs/cgroup", () => {
  const layout = readCgroupLayout();
  const v2 = statfs('/sys/fs/cgroup').type === CGROUP2_SUPER_MAGIC;
  assert.equal(layout.version, v2 ? 2 : 1);
  if (!v2) {
    const unified = fs.existsSync('/sys/fs/cgroup/unified') && statfs('/sys/fs/cgroup/unified').type === CGROUP2_SUPER_MAGIC;
    assert.equal(layout.hybrid, unified);
    for (const c of ['memory', 'pids', 'cpu']) assert.ok(layout.controllers.includes(c), `${c} is mounted at /sys/fs/cgroup/${c}`);
  }
});

function v2Tree(controllers: string): string {
  const root = tempDir('tscri-cg2-');
  fs.writeFileSync(path.join(root, 'cgroup.controllers'), `${controllers}\n`);
  fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), 'cpu memory pids\n');
  return root;
}

test('a v2 tree: version 2, its controllers, and the driver needs systemd only for systemd', () => {
  const layout = readCgroupLayout(v2Tree('cpuset cpu io memory hugetlb pids rdma misc'));
  assert.deepEqual(layout, {
    version: 2,
    hybrid: false,
    controllers: ['cpuset', 'cpu', 'io', 'memory', 'hugetlb', 'pids', 'rdma', 'misc'],
    unifiedControllers: [],
  });
  assert.equal(probeCgroups(layout, 'cgroupfs', false).ok, true);
  const withSystemd = probeCgroups(layout, 'systemd', true);
  assert.equal(withSystemd.ok, true, withSystemd.detail);
  const noSystemd = probeCgroups(layout, 'systemd', false);
  assert.equal(noSystemd.ok, false);
  assert.equal(noSystemd.essential, true);
  assert.match(noSystemd.detail, /needs systemd as init/);
  assert.match(probeCgroups(layout, 'cgroupfs', true).detail, /cgroup_driver = "systemd"/);
});

test('a v2 tree without the memory controller is reported, not fatal', () => {
  const f = probeCgroups(readCgroupLayout(v2Tree('cpu io pids')), 'cgroupfs', false);
  assert.equal(f.ok, false);
  assert.equal(f.essential, false);
  assert.match(f.detail, /missing memory/);
});

test('a hybrid tree names the controllers of its v2 part', () => {
  const root = tempDir('tscri-cg1-');
  for (const d of ['blkio', 'cpu,cpuacct', 'memory', 'pids', 'systemd', 'unified']) fs.mkdirSync(path.join(root, d));
  fs.symlinkSync('cpu,cpuacct', path.join(root, 'cpu'));
  fs.writeFileSync(path.join(root, 'unified', 'cgroup.controllers'), 'hugetlb\n');
  const layout = readCgroupLayout(root);
  assert.deepEqual(layout, { version: 1, hybrid: true, controllers: ['blkio', 'cpu', 'cpuacct', 'memory', 'pids'], unifiedControllers: ['hugetlb'] });
  assert.match(probeCgroups(layout, 'cgroupfs', false).detail, /hybrid.*with hugetlb/);
  const empty = readCgroupLayout(tempDir('tscri-cg0-'));
  assert.equal(probeCgroups(empty, 'cgroupfs', false).essential, true);
});
