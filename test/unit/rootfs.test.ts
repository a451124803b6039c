import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { isMounted, mountRootfs, unmountRootfs } from '../../src/snapshot/rootfs';
import { lsetxattr, makedev, mknod, S_IFCHR } from '../../src/sys/libc';
import { readMountInfo } from '../../src/sys/mountinfo';

const isRoot = process.getuid?.() === 0;
const opts = isRoot ? {} : { skip: 'needs root (mount, mknod, trusted xattrs)' };

let root = '';
const targets: string[] = [];

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-rootfs-'));
});

after(async () => {
  for (const t of targets) await unmountRootfs(t).catch(() => undefined);
  fs.rmSync(root, { recursive: true, force: true });
});

function write(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
}

function ms(t0: bigint): string {
  return (Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2);
}

test('whiteouts and opaque dirs hide lower content; writes go to the upper dir', opts, async () => {
  const bottom = path.join(root, 'layers', 'bottom');
  const top = path.join(root, 'layers', 'top');
  write(path.join(bottom, 'etc/os-release'), 'bottom\n');
  write(path.join(bottom, 'gone.txt'), 'deleted in top\n');
  write(path.join(bottom, 'var/cache/old'), 'hidden by opaque dir\n');
  write(path.join(bottom, 'keep/k.txt'), 'kept\n');
  write(path.join(top, 'etc/os-release'), 'top\n');
  mknod(path.join(top, 'gone.txt'), S_IFCHR | 0o000, makedev(0, 0));
  write(path.join(top, 'var/cache/new'), 'fresh\n');
  lsetxattr(path.join(top, 'var/cache'), 'trusted.overlay.opaque', Buffer.from('y'));

  const c = path.join(root, 'containers', 'c1');
  const target = path.join(c, 'rootfs');
  targets.push(target);
  const t0 = process.hrtime.bigint();
  await mountRootfs({ lowerDirs: [top, bottom], upperDir: path.join(c, 'upper'), workDir: path.join(c, 'work'), target });
  console.log(`mountRootfs (2 layers + upper): ${ms(t0)} ms`);
  assert.ok(isMounted(target));
  const m = readMountInfo().find((x) => x.mountPoint === target);
  assert.equal(m?.fsType, 'overlay');

  assert.equal(fs.readFileSync(path.join(target, 'etc/os-release'), 'utf8'), 'top\n');
  assert.equal(fs.existsSync(path.join(target, 'gone.txt')), false, 'whiteout should hide gone.txt');
  assert.deepEqual(fs.readdirSync(path.join(target, 'var/cache')), ['new'], 'opaque dir should hide lower entries');
  assert.equal(fs.readFileSync(path.join(target, 'keep/k.txt'), 'utf8'), 'kept\n');

  fs.writeFileSync(path.join(target, 'new.txt'), 'written\n');
  fs.appendFileSync(path.join(target, 'keep/k.txt'), 'more\n');
  assert.equal(fs.readFileSync(path.join(c, 'upper/new.txt'), 'utf8'), 'written\n');
  assert.equal(fs.readFileSync(path.join(c, 'upper/keep/k.txt'), 'utf8'), 'kept\nmore\n');
  assert.equal(fs.readFileSync(path.join(bottom, 'keep/k.txt'), 'utf8'), 'kept\n', 'lower layers stay untouched');

  // Mounting again (a retried CreateContainer) is a no-op, not a second stacked mount.
  await mountRootfs({ lowerDirs: [top, bottom], upperDir: path.join(c, 'upper'), workDir: path.join(c, 'work'), target });
  assert.equal(readMountInfo().filter((x) => x.mountPoint === target).length, 1);

  const u0 = process.hrtime.bigint();
  await unmountRootfs(target);
  console.log(`unmountRootfs: ${ms(u0)} ms`);
  assert.equal(isMounted(target), false);
  assert.equal(fs.existsSync(path.join(target, 'new.txt')), false);
  await unmountRootfs(target);
  await unmountRootfs(path.join(root, 'no-such-dir'));
});

test('60 layers with long paths still mount', opts, async () => {
  const deep = path.join(root, 'l'.repeat(60), 'sha256-' + 'a'.repeat(64));
  const layers: string[] = [];
  for (let i = 0; i < 60; i++) {
    const dir = path.join(deep, `${'b'.repeat(60)}-${String(i).padStart(2, '0')}`);
    write(path.join(dir, `file-${i}`), `${i}\n`);
    write(path.join(dir, 'shared'), `layer ${i}\n`);
    layers.push(dir);
  }
  assert.ok(layers.join(':').length > 4096, 'the plain lowerdir list must exceed one page for this test');
  layers.reverse(); // top first: layer 59 wins

  const c = path.join(root, 'containers', 'c60');
  const target = path.join(c, 'rootfs');
  targets.push(target);
  const t0 = process.hrtime.bigint();
  await mountRootfs({ lowerDirs: layers, upperDir: path.join(c, 'upper'), workDir: path.join(c, 'work'), target });
  console.log(`mountRootfs (60 long-path layers + upper): ${ms(t0)} ms`);
  assert.equal(fs.readFileSync(path.join(target, 'shared'), 'utf8'), 'layer 59\n');
  assert.equal(fs.readdirSync(target).filter((n) => n.startsWith('file-')).length, 60);
  fs.writeFileSync(path.join(target, 'w'), 'x');
  assert.ok(fs.existsSync(path.join(c, 'upper/w')));
  await unmountRootfs(target);
  assert.equal(isMounted(target), false);
});

test('read-only rootfs: one layer is a read-only bind, several a read-only overlay', opts, async () => {
  const a = path.join(root, 'ro', 'a');
  const b = path.join(root, 'ro', 'b');
  write(path.join(a, 'a.txt'), 'a\n');
  write(path.join(b, 'b.txt'), 'b\n');

  const one = path.join(root, 'containers', 'ro1', 'rootfs');
  targets.push(one);
  await mountRootfs({ lowerDirs: [a], target: one, readOnly: true });
  assert.equal(fs.readFileSync(path.join(one, 'a.txt'), 'utf8'), 'a\n');
  assert.throws(() => fs.writeFileSync(path.join(one, 'x'), 'x'), { code: 'EROFS' });

  const two = path.join(root, 'containers', 'ro2', 'rootfs');
  targets.push(two);
  await mountRootfs({ lowerDirs: [b, a], target: two, readOnly: true });
  assert.deepEqual(fs.readdirSync(two).sort(), ['a.txt', 'b.txt']);
  assert.throws(() => fs.writeFileSync(path.join(two, 'x'), 'x'), { code: 'EROFS' });

  await unmountRootfs(one);
  await unmountRootfs(two);
  assert.equal(isMounted(one) || isMounted(two), false);
});

test('a busy rootfs is detached', opts, async () => {
  const a = path.join(root, 'busy', 'a');
  write(path.join(a, 'f'), 'f');
  const target = path.join(root, 'containers', 'busy', 'rootfs');
  targets.push(target);
  await mountRootfs({ lowerDirs: [a], target, readOnly: true });
  const fd = fs.openSync(path.join(target, 'f'), 'r');
  try {
    await unmountRootfs(target);
    assert.equal(isMounted(target), false);
  } finally {
    fs.closeSync(fd);
  }
});

test('a writable rootfs needs upper and work dirs', async () => {
  await assert.rejects(mountRootfs({ lowerDirs: ['/x'], target: path.join(root, 't') }), /upperDir and workDir are required/);
  await assert.rejects(mountRootfs({ lowerDirs: [], target: path.join(root, 't'), readOnly: true }), /no layers/);
});
