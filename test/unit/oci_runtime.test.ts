// Drives the conmon + runc driver against real containers: a busybox rootfs, a hand-written OCI
// config in its own pid/net/ipc/uts/mount namespaces and a cgroupfs path under /tscri-test.
// Needs root, runc, conmon and busybox-static; skipped otherwise.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ConmonRuntime } from '../../src/oci/conmon_runtime';
import { evictFromCgroups } from '../helpers/cgroup_evict';

const RUNC = '/usr/sbin/runc';
const CONMON = '/usr/bin/conmon';
const BUSYBOX = '/bin/busybox';
const CGROUP_PARENT = '/tscri-test';

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const f of [RUNC, CONMON, BUSYBOX]) if (!fs.existsSync(f)) return `needs ${f}`;
  return undefined;
}
const skip = missing();
const opts = skip ? { skip } : {};

let base = '';
let rootfs = '';
let rt: ConmonRuntime;
const ids: string[] = [];

function newId(tag: string): string {
  const id = `oci-${tag}-${crypto.randomBytes(4).toString('hex')}`;
  ids.push(id);
  return id;
}

function buildRootfs(dir: string): void {
  for (const d of ['bin', 'proc', 'dev', 'tmp', 'sys', 'etc']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(dir, 'bin', 'busybox'));
  fs.chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  for (const applet of ['test', 'sh', 'echo', 'sleep', 'head', 'yes', 'cat', 'true', 'ls', 'pwd', 'env']) {
    fs.symlinkSync('busybox', path.join(dir, 'bin', applet));
  }
}

const CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID'];

function bundle(id: string, args: string[], resources: object = {}, withRootfs = true, terminal = false): string {
  const dir = path.join(base, 'b', id);
  fs.mkdirSync(dir, { recursive: true });
  const spec = {
    ociVersion: '1.0.2',
    process: {
      terminal,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin', 'HOME=/'],
      cwd: '/',
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      noNewPrivileges: true,
    },
    root: { path: withRootfs ? rootfs : path.join(dir, 'no-such-rootfs'), readonly: true },
    hostname: 'oci-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=1m'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      cgroupsPath: `${CGROUP_PARENT}/${id}`,
      resources,
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger', '/proc/irq', '/proc/bus'],
    },
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(spec));
  return dir;
}

function logPathOf(id: string): string {
  return path.join(base, 'logs', `${id}.log`);
}

async function createStarted(id: string, args: string[], resources: object = {}): Promise<{ pid: number }> {
  const r = await rt.create({
    id,
    bundle: bundle(id, args, resources),
    logPath: logPathOf(id),
    stdin: false,
    stdinOnce: false,
    tty: false,
  });
  await rt.start(id);
  return r;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function conmonsOf(id: string): string {
  const r = spawnSync('pgrep', ['-af', `conmon.*${id}`], { encoding: 'utf8' });
  return r.stdout.trim();
}

function removeCgroups(rel: string): void {
  for (const ctrl of fs.readdirSync('/sys/fs/cgroup')) {
    const dir = path.join('/sys/fs/cgroup', ctrl, rel);
    try {
      fs.rmdirSync(dir);
    } catch {
      // absent, or (the shared parent) still in use by someone else
    }
  }
}

before(() => {
  if (skip) return;
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-oci-'));
  rootfs = path.join(base, 'rootfs');
  buildRootfs(rootfs);
  fs.mkdirSync(path.join(base, 'logs'));
  rt = new ConmonRuntime(rtOptions());
});

function rtOptions(): ConstructorParameters<typeof ConmonRuntime>[0] {
  return {
    name: 'runc',
    binary: RUNC,
    root: path.join(base, 'runc'),
    conmon: CONMON,
    exitDir: path.join(base, 'exits'),
    persistDir: (id) => path.join(base, 'p', id),
    socketDir: path.join(base, 's'),
    log: pino({ level: process.env.TSCRI_LOG_LEVEL ?? 'silent' }),
  };
}

after(async () => {
  if (skip) return;
  rt.close();
  for (const id of ids) {
    try {
      await rt.delete(id, true);
    } catch (e) {
      console.error(`cleanup: delete ${id}: ${(e as Error).message}`);
    }
    const left = conmonsOf(id);
    if (left) {
      for (const line of left.split('\n')) {
        const pid = Number(line.split(' ')[0]);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    removeCgroups(path.join(CGROUP_PARENT, id));
  }
  removeCgroups(CGROUP_PARENT);
  fs.rmSync(base, { recursive: true, force: true });
});

test('a container writes CRI-format logs, and its exit code is reported through onExit and exitOf', opts, async (t) => {
  const id = newId('exit');
  const seen: string[] = [];
  rt.onExit((x) => seen.push(x));
  const t0 = Date.now();
  const dir = bundle(id, ['sh', '-c', 'echo out; echo err >&2; sleep 1; exit 3']);
  const { pid } = await rt.create({
    id,
    bundle: dir,
    logPath: logPathOf(id),
    stdin: false,
    stdinOnce: false,
    tty: false,
  });
  const t1 = Date.now();
  const conmonPid = Number(fs.readFileSync(path.join(dir, 'conmon.pid'), 'utf8'));
  assert.ok(pid > 0 && conmonPid > 0, `pids: ${pid} ${conmonPid}`);
  assert.equal((await rt.state(id))?.status, 'created');
  assert.equal(await rt.exitOf(id), undefined);
  await rt.start(id);
  const t2 = Date.now();
  t.diagnostic(`create ${t1 - t0} ms, start ${t2 - t1} ms`);
  assert.equal((await rt.state(id))?.status, 'running');

  await waitFor('onExit', () => seen.includes(id) || undefined);
  const exit = await rt.exitOf(id);
  assert.ok(exit, 'exitOf after the exit file appeared');
  assert.equal(exit.exitCode, 3);
  assert.equal(exit.oomKilled, false);
  assert.ok(Math.abs(exit.finishedAt - Date.now()) < 10_000, `finishedAt ${exit.finishedAt}`);
  assert.equal((await rt.state(id))?.status, 'stopped');

  const log = fs.readFileSync(logPathOf(id), 'utf8');
  const ts = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d+(Z|[+-]\\d\\d:\\d\\d)';
  assert.match(log, new RegExp(`^${ts} stdout F out$`, 'm'), `log was:\n${log}`);
  assert.match(log, new RegExp(`^${ts} stderr F err$`, 'm'), `log was:\n${log}`);

  await rt.delete(id);
  assert.equal(await rt.state(id), undefined);
  await rt.delete(id); // idempotent
  assert.equal((await rt.exitOf(id))?.exitCode, 3, 'the exit file outlives runtime delete');
  await rt.forget(id);
  assert.equal(await rt.exitOf(id), undefined);
  await waitFor('conmon to exit', () => conmonsOf(id) === '' || undefined);
});

test('kill succeeds when the cgroup went from under runc: the init is signalled, the exit recorded', opts, async () => {
  const id = newId('nocg');
  const seen: string[] = [];
  rt.onExit((x) => seen.push(x));
  const { pid } = await createStarted(id, ['sleep', '1000']);
  assert.ok(evictFromCgroups(pid, id).length > 0, `init ${pid} had cgroup dirs to remove`);
  // runc still finds its init alive, then fails on the missing freezer and devices dirs.
  await rt.kill(id, 'SIGKILL', true);
  await waitFor('onExit', () => seen.includes(id) || undefined);
  assert.equal((await rt.exitOf(id))?.exitCode, 137);
  // Once stopped, the same kill finds nothing to signal and still succeeds, as does a kill of an
  // id the runtime never knew; a delete twice is fine and the state is then unknown.
  await rt.kill(id, 'SIGKILL', true);
  await rt.kill(id, 'SIGTERM');
  await rt.delete(id, true);
  await rt.delete(id, true);
  assert.equal(await rt.state(id), undefined);
  await rt.kill(`${id}-never`, 'SIGKILL', true);
});

test('execSync returns output and exit codes, and times out promptly', opts, async (t) => {
  const id = newId('exec');
  await createStarted(id, ['sh', '-c', 'trap "exit 143" TERM; sleep 1000 & wait']);

  let t0 = Date.now();
  const hi = await rt.execSync(id, ['echo', 'hi'], 10_000);
  t.diagnostic(`exec echo: ${Date.now() - t0} ms`);
  assert.deepEqual(hi, { exitCode: 0, stdout: Buffer.from('hi\n'), stderr: Buffer.alloc(0), timedOut: false });

  const mixed = await rt.execSync(id, ['sh', '-c', 'echo "$A" in $(pwd); cat; echo oops >&2; exit 7'], 10_000, {
    env: ['A=x'],
    cwd: '/tmp',
    stdin: Buffer.from('from-stdin\n'),
  });
  assert.equal(mixed.exitCode, 7);
  assert.equal(mixed.stdout.toString(), 'x in /tmp\nfrom-stdin\n');
  assert.equal(mixed.stderr.toString(), 'oops\n');

  await assert.rejects(rt.execSync(id, ['/bin/no-such-binary'], 10_000), /no-such-binary/);

  t0 = Date.now();
  const slow = await rt.execSync(id, ['sh', '-c', 'sleep 100 & sleep 100'], 500);
  const took = Date.now() - t0;
  t.diagnostic(`timed-out exec returned after ${took} ms`);
  assert.equal(slow.timedOut, true);
  assert.ok(took < 1500, `timed-out exec took ${took} ms`);
  const procs = await rt.execSync(id, ['sh', '-c', 'for p in /proc/[0-9]*; do cat $p/cmdline; echo; done'], 10_000);
  assert.doesNotMatch(procs.stdout.toString(), /^sleep\x00100\x00$/m, 'the timed-out exec left its processes behind');

  // SIGTERM reaches the trap in the container's init (pid 1 has no default handlers).
  await rt.kill(id, 'SIGTERM');
  const exit = await waitFor('exit after SIGTERM', () => rt.exitOf(id));
  assert.equal(exit.exitCode, 143);
  await rt.kill(id, 'SIGKILL'); // already stopped: no error
  await rt.kill(id, 9, true);
  await assert.rejects(rt.execSync(id, ['true'], 5_000), /exec/);
  await rt.delete(id);
  await rt.kill(id, 'SIGTERM'); // unknown to the runtime: no error
  await rt.forget(id);
});

test("update changes a running container's limits and reopenLog recreates a rotated log", opts, async () => {
  const id = newId('upd');
  await createStarted(id, ['sh', '-c', 'trap "exit 0" TERM; while :; do echo tick; sleep 0.1; done']);
  await rt.update(id, { pids: { limit: 42 } });
  const pidsMax = fs.readFileSync(path.join('/sys/fs/cgroup/pids', CGROUP_PARENT, id, 'pids.max'), 'utf8').trim();
  assert.equal(pidsMax, '42');

  const log = logPathOf(id);
  await waitFor('first log line', () => (fs.existsSync(log) && fs.statSync(log).size > 0 ? true : undefined));
  fs.renameSync(log, `${log}.1`);
  await rt.reopenLog(id);
  await waitFor('a line in the reopened log', () => /stdout F tick/.test(fs.readFileSync(log, 'utf8')) || undefined);

  await rt.kill(id, 'KILL');
  await waitFor('exit', () => rt.exitOf(id));
  // conmon writes the exit file just before it exits.
  await waitFor('conmon to exit', () => conmonsOf(id) === '' || undefined);
  await assert.rejects(rt.reopenLog(id), /conmon is not running|does not know/);
  await rt.delete(id);
  await rt.forget(id);
});

test("a create that fails reports the runtime's message and leaves nothing behind", opts, async () => {
  const id = newId('bad');
  const dir = bundle(id, ['true'], {}, false);
  await assert.rejects(rt.create({ id, bundle: dir, logPath: logPathOf(id), stdin: false, stdinOnce: false, tty: false }), (err: Error) => {
    assert.match(err.message, new RegExp(`create container ${id}: runc create failed: .*no-such-rootfs`));
    return true;
  });
  assert.equal(conmonsOf(id), '', 'conmon still running after a failed create');
  assert.equal(await rt.state(id), undefined);
  assert.equal(await rt.exitOf(id), undefined);
  assert.equal(fs.existsSync(path.join('/sys/fs/cgroup/memory', CGROUP_PARENT, id)), false);

  // A bad config: runc's own validation message comes back.
  const id2 = newId('badcfg');
  const dir2 = bundle(id2, []);
  await assert.rejects(
    rt.create({ id: id2, bundle: dir2, logPath: logPathOf(id2), stdin: false, stdinOnce: false, tty: false }),
    /runc create failed: .*args/i,
  );
  assert.equal(conmonsOf(id2), '');
});

test("start releases runc's init through exec.fifo; what it cannot do goes to runc start", opts, async (t) => {
  const create = (id: string): Promise<{ pid: number }> =>
    rt.create({ id, bundle: bundle(id, ['sleep', '30']), logPath: logPathOf(id), stdin: false, stdinOnce: false, tty: false });
  const fifoOf = (id: string): string => path.join(base, 'runc', id, 'exec.fifo');

  const id = newId('fifo');
  await create(id);
  assert.equal(fs.statSync(fifoOf(id)).isFIFO(), true, 'runc create left its exec.fifo');
  const t0 = performance.now();
  await rt.start(id);
  t.diagnostic(`start through the fifo: ${(performance.now() - t0).toFixed(1)} ms`);
  assert.equal(fs.existsSync(fifoOf(id)), false, 'the fifo is removed, as runc start does');
  assert.equal((await rt.state(id))?.status, 'running');
  await assert.rejects(rt.start(id), /runc: .*(already running|not in created state|cannot start)/i);

  // A daemon that did not create the container (a restart) does not know the init: runc start.
  const id2 = newId('fifo-restart');
  await create(id2);
  const fresh = new ConmonRuntime({ ...rtOptions(), log: pino({ level: 'silent' }) });
  await fresh.start(id2);
  fresh.close();
  assert.equal((await rt.state(id2))?.status, 'running');

  // An init killed before start: the wait ends and runc names the state, no hang.
  const id3 = newId('fifo-dead');
  const { pid } = await create(id3);
  process.kill(pid, 'SIGKILL');
  await assert.rejects(rt.start(id3), /runc: .*(stopped|dead|not running)/i);

  for (const x of [id, id2, id3]) {
    await rt.delete(x, true);
    await rt.forget(x);
  }
});

test('conmon may start before the bundle is complete; a bundle that fails aborts the create', opts, async () => {
  // The bundle dir exists (conmon's cwd), config.json comes later, as the container service does.
  const id = newId('later');
  const dir = path.join(base, 'b', id);
  fs.mkdirSync(dir, { recursive: true });
  let monitorWaited = '';
  const ready = (async () => {
    await new Promise((r) => setTimeout(r, 300));
    monitorWaited = conmonsOf(id);
    bundle(id, ['sleep', '30']);
  })();
  await rt.create({ id, bundle: dir, logPath: logPathOf(id), stdin: false, stdinOnce: false, tty: false, bundleReady: ready });
  assert.notEqual(monitorWaited, '', 'conmon was already running while the bundle was being made');
  assert.equal((await rt.state(id))?.status, 'created');
  await rt.delete(id, true);
  await rt.forget(id);

  const id2 = newId('nobundle');
  const dir2 = path.join(base, 'b', id2);
  fs.mkdirSync(dir2, { recursive: true });
  const failing = (async () => {
    await new Promise((r) => setTimeout(r, 100));
    throw new Error('rootfs mount failed (test)');
  })();
  await assert.rejects(
    rt.create({ id: id2, bundle: dir2, logPath: logPathOf(id2), stdin: false, stdinOnce: false, tty: false, bundleReady: failing }),
    /rootfs mount failed \(test\)/,
  );
  assert.equal(conmonsOf(id2), '', 'conmon still running after the bundle failed');
  assert.equal(await rt.state(id2), undefined);
});

test('a container killed by its memory limit is reported as oomKilled', opts, async (t) => {
  const id = newId('oom');
  const limit = 20 << 20;
  await createStarted(id, ['sh', '-c', 'x=$(yes | head -c 67108864); echo done'], {
    memory: { limit, swap: limit },
  });
  const exit = await waitFor('oom exit', () => rt.exitOf(id), 30_000);
  const log = fs.existsSync(logPathOf(id)) ? fs.readFileSync(logPathOf(id), 'utf8') : '';
  assert.doesNotMatch(log, /stdout F done/, 'the allocation succeeded: no OOM happened');
  assert.equal(exit.oomKilled, true, `exit ${JSON.stringify(exit)}`);
  const marker = path.join(base, 'p', id, 'oom');
  t.diagnostic(`oom exit code ${exit.exitCode}; conmon marker: ${fs.existsSync(marker)}`);
  // Without conmon's marker the kernel's counter in the (not yet deleted) cgroup still tells.
  fs.rmSync(marker, { force: true });
  assert.equal((await rt.exitOf(id))?.oomKilled, true, 'oomKilled from the cgroup counter');
  await rt.delete(id);
  assert.equal(fs.existsSync(marker), true, 'delete records the OOM before the cgroup goes');
  assert.equal((await rt.exitOf(id))?.oomKilled, true, 'oomKilled survives runtime delete');
  await rt.forget(id);
});

test('a tty container logs its terminal output as stdout', opts, async () => {
  const id = newId('tty');
  await rt.create({
    id,
    bundle: bundle(id, ['sh', '-c', 'test -t 1 && echo on-a-tty'], {}, true, true),
    logPath: logPathOf(id),
    stdin: true,
    stdinOnce: true,
    tty: true,
  });
  await rt.start(id);
  const exit = await waitFor('tty exit', () => rt.exitOf(id));
  assert.equal(exit.exitCode, 0);
  const log = fs.readFileSync(logPathOf(id), 'utf8');
  assert.match(log, /stdout F on-a-tty\r?$/m, `log was:\n${log}`);
  await rt.delete(id);
  await rt.forget(id);
});

test('the systemd cgroup driver puts --systemd-cgroup before every runtime command; cgroupfs does not', () => {
  // runc reads a `slice:prefix:name` cgroupsPath as a directory name without it.
  const systemd = new ConmonRuntime({ ...rtOptions(), systemdCgroup: true });
  assert.deepEqual(systemd.globalArgs, [`--root=${path.join(base, 'runc')}`, '--systemd-cgroup']);
  assert.deepEqual(new ConmonRuntime(rtOptions()).globalArgs, [`--root=${path.join(base, 'runc')}`]);
});
