import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  isPinned,
  namespaceWorkerState,
  pinPodNamespaces,
  releaseNamespaceRoot,
  stopNamespaceWorker,
  unpinNamespaces,
  type PodNamespaces,
} from '../../src/sys/namespaces';
import { readMountInfo } from '../../src/sys/mountinfo';

/** The paths `ns` pins, each checked to be a string (Object.values of an interface is untyped). */
function pinPaths(ns: PodNamespaces): string[] {
  const values: unknown[] = Object.values(ns);
  return values.map((p) => {
    assert.ok(typeof p === 'string', `a namespace path, not ${String(p)}`);
    return p;
  });
}

const isRoot = process.getuid?.() === 0;
const opts = isRoot ? {} : { skip: 'needs root (unshare, mount)' };

let root = '';
const pinned: PodNamespaces[] = [];

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-ns-'));
});

after(async () => {
  for (const ns of pinned) await unpinNamespaces(ns).catch(() => undefined);
  await stopNamespaceWorker();
  if (isRoot) releaseNamespaceRoot(root);
  fs.rmSync(root, { recursive: true, force: true });
});

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
}

function mountedUnder(dir: string): string[] {
  return readMountInfo()
    .map((m) => m.mountPoint)
    .filter((p) => p.startsWith(dir + '/'));
}

test('pinned namespaces are fresh, carry the hostname, and leave the daemon where it was', opts, async () => {
  const mainBefore = fs.readlinkSync('/proc/thread-self/ns/net');
  const ns = await pinPodNamespaces(path.join(root, 'pod-a'), { net: true, ipc: true, uts: true, hostname: 'pod-a-host' });
  pinned.push(ns);
  const workerBefore = await namespaceWorkerState();

  assert.deepEqual(Object.keys(ns).sort(), ['ipc', 'net', 'uts']);
  const rootMount = readMountInfo().filter((m) => m.mountPoint === root);
  assert.equal(rootMount.length, 1, 'the pin root should be one bind mount of itself');
  assert.ok(
    rootMount[0].optional.some((o) => o.startsWith('shared:')),
    `pin root should be shared: ${rootMount[0].optional.join(',')}`,
  );
  for (const p of pinPaths(ns)) assert.ok(isPinned(p), `${p} should be an nsfs mount`);

  const links = sh('nsenter', [`--net=${ns.net}`, 'ip', '-o', 'link', 'show']).split('\n');
  assert.equal(links.length, 1, `expected only lo in the pod netns, saw:\n${links.join('\n')}`);
  assert.match(links[0], /^1: lo: <LOOPBACK,UP,LOWER_UP>/, 'lo comes up with the namespace (no loopback plugin runs)');
  assert.match(sh('nsenter', [`--net=${ns.net}`, 'ip', '-o', '-4', 'addr', 'show', 'lo']), /inet 127\.0\.0\.1\/8/);
  assert.equal(sh('nsenter', [`--uts=${ns.uts}`, 'hostname']), 'pod-a-host');
  assert.notEqual(sh('hostname', []), 'pod-a-host', 'the host name must not change');

  const podNet = sh('nsenter', [`--net=${ns.net}`, 'readlink', '/proc/self/ns/net']);
  const podIpc = sh('nsenter', [`--ipc=${ns.ipc}`, 'readlink', '/proc/self/ns/ipc']);
  assert.notEqual(podNet, mainBefore);
  assert.notEqual(podIpc, fs.readlinkSync('/proc/thread-self/ns/ipc'));

  // A second pin must find the worker back home, not in pod-a's namespaces.
  const ns2 = await pinPodNamespaces(path.join(root, 'pod-b'), { net: true, ipc: false, uts: false });
  pinned.push(ns2);
  assert.deepEqual(Object.keys(ns2), ['net']);
  assert.notEqual(sh('nsenter', [`--net=${ns2.net}`, 'readlink', '/proc/self/ns/net']), podNet);

  assert.deepEqual(await namespaceWorkerState(), workerBefore);
  assert.equal(workerBefore.net, mainBefore, 'worker thread should be in the host netns between requests');
  assert.equal(fs.readlinkSync('/proc/thread-self/ns/net'), mainBefore);
  assert.equal(fs.readlinkSync('/proc/self/ns/net'), mainBefore);
});

test('pinning into an existing pin fails and leaves it intact', opts, async () => {
  const dir = path.join(root, 'pod-dup');
  const ns = await pinPodNamespaces(dir, { net: true, ipc: false, uts: false });
  pinned.push(ns);
  await assert.rejects(pinPodNamespaces(dir, { net: true, ipc: false, uts: false }), /EEXIST/);
  assert.ok(ns.net, 'a pinned net namespace');
  assert.ok(isPinned(ns.net));
  assert.equal((await namespaceWorkerState()).net, fs.readlinkSync('/proc/self/ns/net'));
});

test('20 pods pin quickly; unpin removes the mounts and is idempotent', opts, async () => {
  const times: number[] = [];
  const pods: PodNamespaces[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = process.hrtime.bigint();
    const ns = await pinPodNamespaces(path.join(root, `bench-${i}`), {
      net: true,
      ipc: true,
      uts: true,
      hostname: `bench-${i}`,
    });
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    pods.push(ns);
    pinned.push(ns);
  }
  const sorted = [...times].sort((a, b) => a - b);
  const median = (sorted[9] + sorted[10]) / 2;
  console.log(`pinPodNamespaces(net+ipc+uts) x20: median ${median.toFixed(2)} ms, min ${sorted[0].toFixed(2)}, max ${sorted[19].toFixed(2)}`);
  assert.equal(mountedUnder(root).filter((p) => /bench-/.test(p)).length, 60);

  const u0 = process.hrtime.bigint();
  for (const ns of pods) await unpinNamespaces(ns);
  console.log(`unpinNamespaces x20: ${(Number(process.hrtime.bigint() - u0) / 1e6 / 20).toFixed(2)} ms each`);
  assert.deepEqual(
    mountedUnder(root).filter((p) => /bench-/.test(p)),
    [],
  );
  for (const ns of pods) {
    for (const p of pinPaths(ns)) assert.equal(fs.existsSync(p), false, `${p} should be gone`);
  }
  for (const ns of pods) await unpinNamespaces(ns);
  await unpinNamespaces({ net: path.join(root, 'never-existed', 'net') });
  assert.ok(median < 50, `median pin latency ${median} ms`);
});
