import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { cpuSharesToWeight, parseV1CpuQuota, parseV2CpuMax, parseV2Max } from '../../src/cgroups/parse';
import { podCgroupRelativePath, podLimitWrites, writeCgroupFiles } from '../../src/cgroups/pod_limits';
import { podTotals } from '../../src/sandbox/pod_resources';
import type { LinuxContainerResources__Output } from '../../src/gen/runtime/v1/LinuxContainerResources';
import { tempDir } from '../helpers/unit';

const MiB = 1024 * 1024;

function res(over: Partial<LinuxContainerResources__Output>): LinuxContainerResources__Output {
  return {
    cpu_period: '0',
    cpu_quota: '0',
    cpu_shares: '0',
    memory_limit_in_bytes: '0',
    oom_score_adj: '0',
    cpuset_cpus: '',
    cpuset_mems: '',
    hugepage_limits: [],
    unified: {},
    memory_swap_limit_in_bytes: '0',
    ...over,
  };
}

test('pod totals: containers plus overhead; an unspecified limit has no total', () => {
  const totals = podTotals(
    res({ cpu_shares: '128', cpu_quota: '10000', cpu_period: '100000', memory_limit_in_bytes: String(32 * MiB) }),
    res({ cpu_shares: '512', cpu_quota: '50000', cpu_period: '100000', memory_limit_in_bytes: String(256 * MiB) }),
    'pod',
  );
  assert.deepEqual(totals, { cpuShares: 640, cpuPeriod: 100000, cpuQuota: 60000, memoryLimitBytes: 288 * MiB });
  // No container limit: the overhead alone does not make one.
  assert.deepEqual(podTotals(res({ memory_limit_in_bytes: String(32 * MiB), cpu_quota: '10000' }), res({ cpu_shares: '2' }), 'pod'), { cpuShares: 2 });
  assert.deepEqual(podTotals(null, null, 'pod'), {});
  // The kubelet's "no memory limit" (the page-aligned int64 maximum) is no limit, not an error.
  assert.deepEqual(podTotals(null, res({ cpu_shares: '2', memory_limit_in_bytes: '9223372036854771712' }), 'pod'), { cpuShares: 2 });
  assert.throws(() => podTotals(null, res({ memory_limit_in_bytes: '12x' }), 'pod'), /not an integer/);
  // An overhead quota at another period is rescaled to the pod's.
  assert.equal(podTotals(res({ cpu_quota: '5000', cpu_period: '50000' }), res({ cpu_quota: '20000', cpu_period: '100000' }), 'pod').cpuQuota, 30000);
});

test('v2 writes use the v2 files and formats, and read back as asked', () => {
  const writes = podLimitWrites({ cpuShares: 1024, cpuQuota: 60000, cpuPeriod: 100000, memoryLimitBytes: 288 * MiB }, 2);
  assert.deepEqual(writes, [
    { controller: 'cpu', file: 'cpu.weight', value: '39' },
    { controller: 'cpu', file: 'cpu.max', value: '60000 100000' },
    { controller: 'memory', file: 'memory.max', value: String(288 * MiB) },
  ]);
  // A pod cgroup as a v2 kernel shows it before the resize (cgroup v2 docs: defaults).
  const dir = tempDir('tscri-pod-v2-');
  fs.writeFileSync(path.join(dir, 'cpu.weight'), '100\n');
  fs.writeFileSync(path.join(dir, 'cpu.max'), 'max 100000\n');
  fs.writeFileSync(path.join(dir, 'memory.max'), 'max\n');
  const { written, skipped } = writeCgroupFiles(writes, () => dir);
  assert.equal(written.length, 3);
  assert.deepEqual(skipped, []);
  // The weight runc 1.1 gives 1024 shares; weight → shares is lossy, so compare weights.
  assert.equal(Number(fs.readFileSync(path.join(dir, 'cpu.weight'), 'utf8')), cpuSharesToWeight(1024));
  assert.deepEqual(parseV2CpuMax(fs.readFileSync(path.join(dir, 'cpu.max'), 'utf8')), { quota: 60000, period: 100000 });
  assert.equal(parseV2Max(fs.readFileSync(path.join(dir, 'memory.max'), 'utf8')), 288 * MiB);
  // Lifting limits writes v2's "max".
  assert.deepEqual(
    podLimitWrites({ cpuQuota: -1, memoryLimitBytes: -1 }, 2).map((w) => w.value),
    ['max 100000', 'max'],
  );
});

test('v1 writes: period before quota, -1 for no limit', () => {
  const writes = podLimitWrites({ cpuShares: 640, cpuQuota: 60000, cpuPeriod: 100000, memoryLimitBytes: 288 * MiB }, 1);
  assert.deepEqual(
    writes.map((w) => `${w.controller}/${w.file}=${w.value}`),
    ['cpu/cpu.shares=640', 'cpu/cpu.cfs_period_us=100000', 'cpu/cpu.cfs_quota_us=60000', `memory/memory.limit_in_bytes=${288 * MiB}`],
  );
  // -1 lifts a v1 limit (the kernel then shows its own maximum).
  assert.equal(parseV1CpuQuota(podLimitWrites({ cpuQuota: -1 }, 1)[0].value), undefined);
  assert.equal(podLimitWrites({ memoryLimitBytes: -1 }, 1)[0].value, '-1');
});

test('a controller or cgroup that is not there is skipped, never created', () => {
  const dir = tempDir('tscri-pod-partial-');
  fs.writeFileSync(path.join(dir, 'memory.max'), 'max\n');
  const writes = podLimitWrites({ cpuShares: 1024, memoryLimitBytes: MiB }, 2);
  const r = writeCgroupFiles(writes, () => dir);
  assert.deepEqual(r.skipped, ['cpu.weight']);
  assert.ok(!fs.existsSync(path.join(dir, 'cpu.weight')), 'no file is created');
  assert.deepEqual(writeCgroupFiles(writes, () => path.join(dir, 'absent')).skipped, ['cpu.weight', 'memory.max']);
  assert.deepEqual(writeCgroupFiles(writes, () => undefined).skipped, ['cpu.weight', 'memory.max']);
});

test('pod cgroup paths: cgroupfs parents as given, systemd slices expanded', () => {
  assert.equal(podCgroupRelativePath('/kubepods/burstable/pod123', 'cgroupfs'), '/kubepods/burstable/pod123');
  assert.equal(podCgroupRelativePath('kubepods-burstable-pod123.slice', 'systemd'), '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice');
});
