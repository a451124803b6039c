import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { FailedPreconditionError, InvalidArgumentError } from '../../src/errors';
import type { NamespaceOption__Output } from '../../src/gen/runtime/v1/NamespaceOption';
import type { UserNamespace__Output } from '../../src/gen/runtime/v1/UserNamespace';
import { checkContainerUserns, checkSearchable, podUserns } from '../../src/sandbox/userns';
import { mountIdmapped } from '../../src/sys/idmap';
import { readMountInfo } from '../../src/sys/mountinfo';
import { isPinned, type PodNamespaces, releaseNamespaceRoot, stopNamespaceWorker, unpinNamespaces } from '../../src/sys/namespaces';
import { mapText, pinUserNamespace, withUserNamespace } from '../../src/sys/userns';
import { MNT_DETACH, umount2 } from '../../src/sys/libc';
import { probeIdmappedLayers } from '../../src/snapshot/idmap_probe';
import { tempDir } from '../helpers/unit';

/** The paths `ns` pins, each checked to be a string (Object.values of an interface is untyped). */
function pinPaths(ns: PodNamespaces): string[] {
  const values: unknown[] = Object.values(ns);
  return values.map((p) => {
    assert.ok(typeof p === 'string', `a namespace path, not ${String(p)}`);
    return p;
  });
}

const isRoot = process.getuid?.() === 0;
const rootOnly = isRoot ? {} : { skip: 'needs root (user namespaces, mounts)' };

const ONE = [{ container_id: 0, host_id: 65536 * 41, length: 65536 }];

function ns(userns: Partial<UserNamespace__Output> | null, over: Partial<NamespaceOption__Output> = {}): NamespaceOption__Output {
  return {
    network: 'POD',
    pid: 'CONTAINER',
    ipc: 'POD',
    target_id: '',
    userns_options: userns ? { mode: 'POD', uids: [], gids: [], ...userns } : null,
    ...over,
  };
}

describe('podUserns: the CRI rules for a pod user namespace', () => {
  test('none or NODE is the host user namespace', () => {
    assert.equal(podUserns(null, 'pod'), undefined);
    assert.equal(podUserns(ns(null), 'pod'), undefined);
    assert.equal(podUserns(ns({ mode: 'NODE' }), 'pod'), undefined);
  });

  test('POD with one mapping each', () => {
    assert.deepEqual(podUserns(ns({ uids: ONE, gids: ONE }), 'pod'), {
      uids: [{ containerId: 0, hostId: 65536 * 41, length: 65536 }],
      gids: [{ containerId: 0, hostId: 65536 * 41, length: 65536 }],
    });
  });

  const bad: [string, NamespaceOption__Output, RegExp][] = [
    ['two uid mappings', ns({ uids: [...ONE, { container_id: 65536, host_id: 0, length: 1 }], gids: ONE }), /only one UID mapping/],
    ['two gid mappings', ns({ uids: ONE, gids: [...ONE, ...ONE] }), /only one GID mapping/],
    ['no uid mapping', ns({ uids: [], gids: ONE }), /needs UID mappings/],
    ['container id 0 not mapped', ns({ uids: [{ container_id: 1, host_id: 100000, length: 65536 }], gids: ONE }), /does not map container ID 0/],
    ['zero length', ns({ uids: [{ container_id: 0, host_id: 100000, length: 0 }], gids: ONE }), /at least 1/],
    ['past the last id', ns({ uids: [{ container_id: 0, host_id: 2 ** 32 - 10, length: 65536 }], gids: ONE }), /past the last id/],
    ['CONTAINER mode', ns({ mode: 'CONTAINER' }), /mode CONTAINER is not supported/],
    ['TARGET mode', ns({ mode: 'TARGET' }), /mode TARGET is not supported/],
    ['NODE with mappings', ns({ mode: 'NODE', uids: ONE, gids: ONE }), /takes no mappings/],
    ['host network', ns({ uids: ONE, gids: ONE }, { network: 'NODE' }), /host's network namespace/],
    ['host IPC', ns({ uids: ONE, gids: ONE }, { ipc: 'NODE' }), /host's IPC namespace/],
    ['host PID', ns({ uids: ONE, gids: ONE }, { pid: 'NODE' }), /host's PID namespace/],
  ];
  for (const [what, options, message] of bad) {
    test(`refused: ${what}`, () => {
      assert.throws(
        () => podUserns(options, 'RunPodSandbox p'),
        (err: unknown) => err instanceof InvalidArgumentError && message.test(err.message),
      );
    });
  }

  test('a container takes its pod user namespace or names the same one', () => {
    const pod = podUserns(ns({ uids: ONE, gids: ONE }), 'pod');
    checkContainerUserns(pod, null, 'c');
    checkContainerUserns(pod, ns({ uids: ONE, gids: ONE }), 'c');
    checkContainerUserns(undefined, ns({ mode: 'NODE' }), 'c');
    const other = [{ container_id: 0, host_id: 65536 * 42, length: 65536 }];
    assert.throws(() => checkContainerUserns(pod, ns({ uids: other, gids: ONE }), 'c'), InvalidArgumentError);
    assert.throws(() => checkContainerUserns(pod, ns({ mode: 'NODE' }), 'c'), InvalidArgumentError);
    assert.throws(() => checkContainerUserns(undefined, ns({ uids: ONE, gids: ONE }), 'c'), InvalidArgumentError);
  });
});

test('mapText: one line per mapping, as uid_map takes it', () => {
  assert.equal(mapText([{ containerId: 0, hostId: 100000, length: 65536 }]), '0 100000 65536\n');
});

test('checkSearchable: every directory above must let others through', async () => {
  const dir = tempDir('tscri-userns-search-');
  const inner = path.join(dir, 'a', 'b');
  fs.mkdirSync(inner, { recursive: true, mode: 0o711 });
  fs.chmodSync(dir, 0o711);
  await checkSearchable(inner, 'pod');
  fs.chmodSync(dir, 0o700);
  await assert.rejects(checkSearchable(inner, 'pod'), (err: unknown) => err instanceof FailedPreconditionError && err.message.includes(dir));
});

describe('pinned pod user namespaces', rootOnly, () => {
  const base = isRoot ? tempDir('tscri-userns-') : '';
  const pinRoot = path.join(base, 'ns');
  after(async () => {
    await stopNamespaceWorker();
    releaseNamespaceRoot(pinRoot);
  });

  test('the mappings are written, net/IPC/UTS belong to the user namespace, and no helper is left', async () => {
    const mapping = [{ containerId: 0, hostId: 65536 * 43, length: 65536 }];
    const ns = await pinUserNamespace(path.join(pinRoot, 'pod'), { uids: mapping, gids: mapping, net: true, ipc: true, uts: true, hostname: 'in-userns' });
    try {
      assert.deepEqual(Object.keys(ns).sort(), ['ipc', 'net', 'user', 'uts']);
      for (const p of pinPaths(ns)) assert.ok(isPinned(p), `${p} should be pinned`);
      // nsenter into the pinned user namespace: its uid_map, and root in it.
      const inside = execFileSync(
        'nsenter',
        [
          `--user=${ns.user}`,
          `--net=${ns.net}`,
          `--uts=${ns.uts}`,
          'sh',
          '-c',
          'cat /proc/self/uid_map /proc/self/gid_map; hostname; id -u; ip -o link show lo',
        ],
        {
          encoding: 'utf8',
        },
      );
      const lines = inside.trim().split('\n');
      assert.deepEqual(
        lines.slice(0, 2).map((l) => l.trim().split(/\s+/).join(' ')),
        [`0 ${65536 * 43} 65536`, `0 ${65536 * 43} 65536`],
      );
      assert.equal(lines[2], 'in-userns');
      assert.equal(lines[3], '0');
      assert.match(lines[4], /lo: <LOOPBACK,UP,LOWER_UP>/);
      // Ownership: as the pod's root, raising lo's MTU (CAP_NET_ADMIN over the netns) works only
      // in a network namespace that the user namespace owns.
      execFileSync('nsenter', [`--user=${ns.user}`, `--net=${ns.net}`, 'ip', 'link', 'set', 'lo', 'mtu', '1500']);
      // No process keeps the namespace: only the pin does.
      assert.ok(ns.user, 'a pinned user namespace');
      const target = fs.readlinkSync(`/proc/self/fd/${fs.openSync(ns.user, 'r')}`);
      const holders = fs
        .readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            return fs.readlinkSync(`/proc/${p}/ns/user`) === target;
          } catch {
            return false;
          }
        });
      assert.deepEqual(holders, []);
    } finally {
      await unpinNamespaces(ns);
    }
    for (const p of pinPaths(ns)) assert.ok(!fs.existsSync(p), `${p} should be removed`);
  });

  test('an idmapped clone shows host root files as the mapped root', async () => {
    const src = path.join(base, 'src');
    const target = path.join(base, 'view');
    fs.mkdirSync(src);
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(src, 'f'), '');
    const mapping = [{ containerId: 0, hostId: 65536 * 44, length: 65536 }];
    await withUserNamespace({ uids: mapping, gids: mapping }, (fd) => mountIdmapped(src, target, { userns: fd }));
    try {
      assert.equal(fs.statSync(path.join(target, 'f')).uid, 65536 * 44);
      assert.equal(fs.statSync(path.join(src, 'f')).uid, 0);
    } finally {
      umount2(target, MNT_DETACH);
    }
  });

  test('the start-up probe passes on this kernel and leaves nothing', async () => {
    const root = path.join(base, 'probe-root');
    fs.mkdirSync(root);
    assert.deepEqual(await probeIdmappedLayers(root), { ok: true });
    assert.deepEqual(fs.readdirSync(root), []);
    assert.deepEqual(
      readMountInfo().filter((m) => m.mountPoint.startsWith(root)),
      [],
    );
  });
});
