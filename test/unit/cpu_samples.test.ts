import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CgroupStats } from '../../src/cgroups';
import { cpuSamplesKept, cpuUsage } from '../../src/container/stats';

const sample = (atSec: number, cpuNs: bigint): CgroupStats => ({
  timestampNs: BigInt(Math.round(atSec * 1000)) * 1_000_000n,
  cpuUsageNs: cpuNs,
  memoryUsageBytes: 0,
  memoryWorkingSetBytes: 0,
  memoryRssBytes: 0,
  pageFaults: 0,
  majorPageFaults: 0,
  pids: 0,
});

test('usage_nano_cores is the rate since the previous sample of the same cgroup', () => {
  assert.equal(cpuUsage('/rate', sample(1000, 0n)).usage_nano_cores, null);
  assert.deepEqual(cpuUsage('/rate', sample(1010, 5_000_000_000n)).usage_nano_cores, { value: '500000000' });
});

test('the CPU samples of containers no longer asked about do not pile up', () => {
  // 10,000 containers each sampled once, as the kubelet does for short-lived pods over a day.
  for (let i = 0; i < 10_000; i++) cpuUsage(`/gone/${i}`, sample(2000 + i, 1n));
  assert.ok(cpuSamplesKept() < 2100, `${cpuSamplesKept()} samples kept after 10,000 cgroups came and went`);
  // A sample of a cgroup still polled survives the sweeps.
  cpuUsage('/live', sample(20_000, 0n));
  for (let i = 0; i < 3000; i++) cpuUsage(`/later/${i}`, sample(20_000 + i / 1000, 1n));
  assert.deepEqual(cpuUsage('/live', sample(20_010, 1_000_000_000n)).usage_nano_cores, { value: '100000000' });
});
