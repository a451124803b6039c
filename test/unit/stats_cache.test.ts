import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNetDev, StatsCache } from '../../src/container/stats_cache';

// What a pod's /proc/<pid>/net/dev looks like (6.x kernel): lo, then the veth's eth0.
const NET_DEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1120      14    0    0    0     0          0         0     1120      14    0    0    0     0       0          0
  eth0:  894312    1207    2    5    0     0          0         3    51230     611    1    4    0     0       0          0
`;

test('net/dev: every interface but lo, with bytes, packets, errors and drops each way', () => {
  assert.deepEqual(parseNetDev(NET_DEV), [
    { name: 'eth0', rxBytes: 894312, rxPackets: 1207, rxErrors: 2, rxDropped: 5, txBytes: 51230, txPackets: 611, txErrors: 1, txDropped: 4 },
  ]);
});

test('a reading serves every caller for one period; concurrent callers share one', async () => {
  const cache = new StatsCache({ periodMs: 200, driver: 'cgroupfs' });
  // The root cgroup of this host: always there, on v1 and v2.
  const [a, b] = await Promise.all([cache.cgroup('/'), cache.cgroup('/')]);
  assert.ok(a, 'the root cgroup has stats');
  assert.equal(a, b, 'two callers at once: one reading');
  assert.equal(await cache.cgroup('/'), a, 'within the period: the same reading');
  await new Promise((r) => setTimeout(r, 250));
  const c = await cache.cgroup('/');
  assert.notEqual(c, a, 'after the period: a new reading');
  assert.ok(c, 'the root cgroup has stats after the period');
  assert.ok(c.stats.timestampNs > a.stats.timestampNs);
  assert.ok(c.nanoCores !== undefined, 'the second reading has a CPU rate');

  const n1 = await cache.network('self', process.pid);
  assert.ok(n1 && Array.isArray(n1.interfaces));
  assert.equal(await cache.network('self', process.pid), n1);
  assert.equal(await cache.cgroup('/no-such-cgroup-here'), undefined, 'a cgroup that is not there');
});

test('many cgroups asked at once are all answered (read in batches)', async () => {
  const cache = new StatsCache({ periodMs: 1000, driver: 'cgroupfs' });
  const paths = Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? '/' : `/missing-${i}`));
  const got = await Promise.all(paths.map((p) => cache.cgroup(p)));
  assert.equal(got.filter((g) => g !== undefined).length, 50);
});

test('a basic reading (the stats) leaves out the metrics-only files; a full one serves both', async () => {
  const cache = new StatsCache({ periodMs: 10_000, driver: 'cgroupfs' });
  const basic = await cache.cgroup('/');
  assert.ok(basic, 'the root cgroup has basic stats');
  assert.equal(basic.stats.cpuUserNs, undefined, 'basic: no user/system split');
  assert.equal(basic.stats.processes, 0, 'basic: no cgroup.procs');
  const full = await cache.cgroup('/', 'full');
  assert.notEqual(full, basic, 'full after basic: a new reading');
  assert.ok(full, 'the root cgroup has full stats');
  assert.ok(full.stats.cpuUserNs !== undefined && full.stats.processes > 0, 'full: user time and processes of the root cgroup');
  assert.equal(await cache.cgroup('/'), full, 'basic after full: the full reading serves');
});

test("forget drops a removed container's readings, so none of them piles up", async () => {
  const cache = new StatsCache({ periodMs: 0, driver: 'cgroupfs' });
  await cache.cgroup('/');
  const second = await cache.cgroup('/');
  assert.ok(second, 'a second reading of the root cgroup');
  assert.ok(second.nanoCores !== undefined, 'a second reading has a CPU rate');
  cache.forget('/');
  const afterForget = await cache.cgroup('/');
  assert.ok(afterForget, 'a reading of the root cgroup after forget');
  assert.equal(afterForget.nanoCores, undefined, 'after forget: no earlier sample to divide by');
});
