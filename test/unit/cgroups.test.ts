import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { test } from 'node:test';
import {
  cgroupHierarchies,
  cgroupRelativePath,
  cgroupVersion,
  containerCgroupsPath,
  cpuSharesToWeight,
  cpuWeightToShares,
  expandSlice,
  parseMemoryStat,
  parseOomKills,
  parseV1CpuacctStat,
  parseV1CpuQuota,
  parseV1MemoryLimit,
  parseV2CpuMax,
  parseV2CpuStat,
  parseV2Max,
  readLimits,
  readStatsSync,
  removeCgroup,
  workingSet,
} from '../../src/cgroups';

// What a 6.x kernel prints in a v2 container cgroup with cpu, memory and pids enabled.
const V2_CPU_STAT = `usage_usec 8264531
user_usec 5871204
system_usec 2393327
nice_usec 0
core_sched.force_idle_usec 0
nr_periods 412
nr_throttled 37
throttled_usec 1843210
nr_bursts 0
burst_usec 0
`;

const V2_MEMORY_STAT = `anon 21299200
file 56782848
kernel 2437120
kernel_stack 245760
pagetables 434176
sec_pagetables 0
percpu 1200
sock 0
vmalloc 8192
shmem 0
zswap 0
zswapped 0
file_mapped 30457856
file_dirty 4096
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 21262336
active_anon 36864
inactive_file 40960000
active_file 15822848
unevictable 0
slab_reclaimable 1127648
slab_unreclaimable 483464
slab 1611112
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
pgscan 0
pgsteal 0
pgscan_kswapd 0
pgscan_direct 0
pgscan_khugepaged 0
pgsteal_kswapd 0
pgsteal_direct 0
pgsteal_khugepaged 0
pgfault 97314
pgmajfault 211
pgrefill 0
pgactivate 3861
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
zswpin 0
zswpout 0
zswpwb 0
thp_fault_alloc 0
thp_collapse_alloc 0
thp_swpout 0
thp_swpout_fallback 0
`;

const V2_MEMORY_EVENTS = 'low 0\nhigh 0\nmax 14\noom 2\noom_kill 1\noom_group_kill 0\n';

// A v1 memory.stat (this host's 6.x kernel): the cgroup's own numbers, then total_* hierarchical.
const V1_MEMORY_STAT = `cache 9359360
rss 9003008
rss_huge 0
shmem 8998912
mapped_file 7438336
pgfault 1000
pgmajfault 1
inactive_anon 0
active_anon 1531904
inactive_file 12288
active_file 348160
hierarchical_memory_limit 9223372036854771712
total_cache 353050624
total_rss 710160384
total_pgfault 26949456
total_pgmajfault 2867
total_inactive_anon 704053248
total_inactive_file 112029696
total_active_file 232022016
`;

test('v2 cpu.stat: microseconds become nanoseconds', () => {
  assert.deepEqual(parseV2CpuStat(V2_CPU_STAT), {
    usageNs: 8264531000n,
    userNs: 5871204000n,
    systemNs: 2393327000n,
    nrPeriods: 412,
    nrThrottled: 37,
    throttledNs: 1843210000n,
  });
  // Without the cpu controller enabled a v2 cgroup still has the first three lines.
  assert.equal(parseV2CpuStat('usage_usec 5\nuser_usec 3\nsystem_usec 2\n').nrPeriods, 0);
});

test('memory.stat: v2 anon/inactive_file, v1 hierarchical total_* fields', () => {
  assert.deepEqual(parseMemoryStat(V2_MEMORY_STAT, 2), {
    inactiveFile: 40960000,
    rss: 21299200,
    cache: 56782848,
    mappedFile: 30457856,
    pgfault: 97314,
    pgmajfault: 211,
  });
  assert.deepEqual(parseMemoryStat(V1_MEMORY_STAT, 1), {
    inactiveFile: 112029696,
    rss: 710160384,
    cache: 353050624,
    mappedFile: 7438336,
    pgfault: 26949456,
    pgmajfault: 2867,
  });
  // working set = memory.current − inactive_file, floored at 0
  assert.equal(workingSet(80_000_000, 40_960_000), 39_040_000);
  assert.equal(workingSet(1000, 4096), 0);
});

test('v2 limit files: "max" and numbers', () => {
  assert.equal(parseV2Max('max\n'), undefined);
  assert.equal(parseV2Max('67108864\n'), 67108864);
  assert.deepEqual(parseV2CpuMax('max 100000\n'), { quota: undefined, period: 100000 });
  assert.deepEqual(parseV2CpuMax('50000 100000\n'), { quota: 50000, period: 100000 });
  assert.throws(() => parseV2Max('lots\n'), /invalid limit/);
  assert.equal(parseOomKills(V2_MEMORY_EVENTS), 1);
  assert.equal(parseOomKills('oom_kill_disable 0\nunder_oom 0\noom_kill 3\n'), 3);
});

test('v1 value files', () => {
  assert.equal(parseV1MemoryLimit('9223372036854771712\n'), undefined);
  assert.equal(parseV1MemoryLimit('67108864\n'), 67108864);
  assert.equal(parseV1CpuQuota('-1\n'), undefined);
  assert.equal(parseV1CpuQuota('50000\n'), 50000);
  assert.deepEqual(parseV1CpuacctStat('user 250\nsystem 17\n'), { userNs: 2_500_000_000n, systemNs: 170_000_000n });
});

test('cpu shares ↔ weight as OCI runtimes convert them', () => {
  // runc's linear map
  assert.equal(cpuSharesToWeight(2), 1);
  assert.equal(cpuSharesToWeight(1024), 39);
  assert.equal(cpuSharesToWeight(262144), 10000);
  assert.equal(cpuSharesToWeight(0), 0);
  // the log map of newer runc/crun keeps the defaults aligned
  assert.equal(cpuSharesToWeight(2, 'log'), 1);
  assert.equal(cpuSharesToWeight(1024, 'log'), 100);
  assert.equal(cpuSharesToWeight(262144, 'log'), 10000);
  for (const mapping of ['linear', 'log'] as const) {
    for (const shares of [2, 3, 10, 102, 256, 512, 1024, 2048, 100000, 262144]) {
      const w = cpuSharesToWeight(shares, mapping);
      const back = cpuWeightToShares(w, mapping);
      assert.equal(cpuSharesToWeight(back, mapping), w, `${mapping}: ${shares} → ${w} → ${back}`);
      assert.ok(back <= shares, `${mapping}: inverse of ${w} should be the smallest shares (${back} ≤ ${shares})`);
    }
  }
});

test('cgroupsPath for each driver', () => {
  assert.equal(containerCgroupsPath('', 'abc', 'cgroupfs'), '/tscri/abc');
  assert.equal(containerCgroupsPath('/kubepods//burstable/podX/', 'abc', 'cgroupfs'), '/kubepods/burstable/podX/abc');
  assert.equal(containerCgroupsPath('kubepods', 'abc', 'cgroupfs'), '/kubepods/abc');
  assert.equal(containerCgroupsPath('/../../etc', 'abc', 'cgroupfs'), '/etc/abc');
  assert.equal(containerCgroupsPath('', 'abc', 'systemd'), 'system.slice:tscri:abc');
  assert.equal(containerCgroupsPath('kubepods-burstable-pod12.slice', 'abc', 'systemd'), 'kubepods-burstable-pod12.slice:tscri:abc');
  assert.equal(
    containerCgroupsPath('/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice', 'abc', 'systemd'),
    'kubepods-burstable-pod12.slice:tscri:abc',
  );
  assert.throws(() => containerCgroupsPath('/kubepods/burstable', 'abc', 'systemd'), /not a systemd slice/);
  assert.throws(() => containerCgroupsPath('', 'a/b', 'cgroupfs'), /invalid container id/);

  assert.equal(expandSlice('kubepods-burstable-pod12.slice'), '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice');
  assert.equal(expandSlice('-.slice'), '/');
  assert.throws(() => expandSlice('a--b.slice'), /invalid systemd slice/);
  assert.equal(cgroupRelativePath('kubepods-besteffort.slice:tscri:abc', 'systemd'), '/kubepods.slice/kubepods-besteffort.slice/tscri-abc.scope');
  assert.equal(cgroupRelativePath('/tscri/abc', 'cgroupfs'), '/tscri/abc');
});

const isRoot = process.getuid?.() === 0;
const v1 = isRoot && cgroupVersion() === 1 && cgroupHierarchies().v1.has('memory');
const v1opts = v1 ? {} : { skip: 'needs root on a cgroup v1 host' };

function write(file: string, value: string): void {
  fs.writeFileSync(file, value);
}

test('v1: limits written to a real cgroup read back; stats of a process in it; removal', v1opts, async () => {
  const parent = `/tscri-test-${process.pid}`;
  const cgPath = containerCgroupsPath(parent, 'c1', 'cgroupfs');
  const h = cgroupHierarchies().v1;
  const mount = (c: string): string => {
    const m = h.get(c);
    assert.ok(m, `a cgroup v1 ${c} hierarchy is mounted`);
    return m;
  };
  const dir = (c: string): string => path.join(mount(c), cgPath);
  const controllers = ['memory', 'cpu', 'cpuacct', 'cpuset', 'pids'].filter((c) => h.has(c));
  try {
    for (const c of controllers) fs.mkdirSync(dir(c), { recursive: true });
    write(path.join(dir('memory'), 'memory.limit_in_bytes'), String(64 << 20));
    write(path.join(dir('cpu'), 'cpu.shares'), '512');
    write(path.join(dir('cpu'), 'cpu.cfs_period_us'), '100000');
    write(path.join(dir('cpu'), 'cpu.cfs_quota_us'), '50000');
    write(path.join(dir('pids'), 'pids.max'), '100');
    // a child cpuset starts empty; it needs its parent's CPUs and memory nodes
    for (const d of [path.dirname(dir('cpuset')), dir('cpuset')]) {
      write(path.join(d, 'cpuset.cpus'), '0');
      write(path.join(d, 'cpuset.mems'), '0');
    }
    const limits = await readLimits(cgPath, 'cgroupfs');
    assert.deepEqual(limits, {
      cpuShares: 512,
      cpuQuota: 50000,
      cpuPeriod: 100000,
      cpusetCpus: '0',
      cpusetMems: '0',
      memoryLimitBytes: 64 << 20,
      ...(limits?.memorySwapLimitBytes === undefined ? {} : { memorySwapLimitBytes: limits.memorySwapLimitBytes }),
      pidsLimit: 100,
    });

    const procs = controllers.map((c) => path.join(dir(c), 'cgroup.procs')).join(' ');
    // The shell moves itself in, then burns CPU and touches memory until killed.
    const child = spawn('sh', ['-c', `for f in ${procs}; do echo $$ > $f; done; echo in; x=; while :; do x="$x.........."; done`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await once(child.stdout, 'data');
    await new Promise((r) => setTimeout(r, 200));
    const stats = readStatsSync(cgPath, 'cgroupfs');
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.ok(stats, 'stats of a live cgroup');
    assert.ok(stats.cpuUsageNs > 50_000_000n, `cpu usage ${stats.cpuUsageNs} ns after 200 ms of spinning`);
    assert.ok(stats.cpuUserNs !== undefined && stats.cpuSystemNs !== undefined);
    assert.ok(stats.memoryUsageBytes > 0, `memory usage ${stats.memoryUsageBytes}`);
    assert.ok(stats.memoryWorkingSetBytes <= stats.memoryUsageBytes);
    assert.ok(stats.memoryRssBytes > 0);
    assert.ok(stats.pageFaults > 0);
    assert.equal(stats.memoryLimitBytes, 64 << 20);
    assert.equal(stats.pids, 1);
    assert.equal(stats.processes, 1);
    assert.equal(stats.oomKills, 0);
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    assert.ok(nowNs - stats.timestampNs < 5_000_000_000n && stats.timestampNs <= nowNs + 1_000_000_000n);

    await removeCgroup(cgPath, 'cgroupfs');
    for (const c of controllers) assert.equal(fs.existsSync(dir(c)), false, `${dir(c)} should be removed`);
    assert.equal(readStatsSync(cgPath, 'cgroupfs'), undefined);
    assert.equal(await readLimits(cgPath, 'cgroupfs'), undefined);
    await removeCgroup(cgPath, 'cgroupfs');
  } finally {
    await removeCgroup(parent, 'cgroupfs');
  }
  for (const c of controllers) assert.equal(fs.existsSync(path.join(mount(c), parent)), false);
});

const unified = cgroupHierarchies().unified;
const v2opts = isRoot && unified ? {} : { skip: 'needs root and a cgroup2 mount' };

test('v2 stats through a real cgroup2 mount (controllers may be absent)', v2opts, async () => {
  const cgPath = `/tscri-test-${process.pid}-v2`;
  assert.ok(unified, 'a cgroup2 mount');
  const dir = path.join(unified, cgPath);
  fs.mkdirSync(dir);
  try {
    const stats = readStatsSync(cgPath, 'cgroupfs', 2);
    assert.ok(stats);
    assert.equal(stats.cpuUsageNs, 0n);
    assert.equal(stats.pids, 0);
  } finally {
    // on a hybrid host removeCgroup also clears the v2 tree; on v2 this is the only tree
    await removeCgroup(cgPath, 'cgroupfs');
  }
  assert.equal(fs.existsSync(dir), false);
  assert.equal(readStatsSync(cgPath, 'cgroupfs', 2), undefined);
});
