import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  errnoName,
  lgetxattr,
  lsetxattr,
  makedev,
  MNT_DETACH,
  mknod,
  mount,
  MS_NODEV,
  MS_NOSUID,
  MS_RDONLY,
  MS_REMOUNT,
  S_IFCHR,
  statfs,
  SysError,
  umount2,
} from '../../src/sys/libc';

const isRoot = process.getuid?.() === 0;
const needRoot = isRoot ? {} : { skip: 'needs root (mknod, mount)' };
const TMPFS_MAGIC = 0x01021994;

function withTmp(fn: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-sys-'));
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('makedev matches the glibc encoding', () => {
  assert.equal(makedev(0, 0), 0);
  assert.equal(makedev(1, 3), 0x103);
  assert.equal(makedev(8, 1), 0x801);
  // minor bits above 8 move past the 12 major bits
  assert.equal(makedev(259, 0x12345), 0x12310345);
  // majors above 12 bits land in the high word
  assert.equal(makedev(0x1234, 0x56), 0x1000 * 2 ** 32 + 0x23456);
});

test('errnoName prefers the conventional name of aliased numbers', () => {
  assert.equal(errnoName(1), 'EPERM');
  assert.equal(errnoName(2), 'ENOENT');
  assert.equal(errnoName(11), 'EAGAIN');
  assert.equal(errnoName(95), 'ENOTSUP');
  assert.equal(errnoName(61), 'ENODATA');
});

test('a failed syscall throws SysError with syscall, path and errno name', () => {
  const target = '/nonexistent-tscri-dir/x';
  assert.throws(
    () => mknod(target, S_IFCHR, makedev(0, 0)),
    (err: unknown) => {
      assert.ok(err instanceof SysError, `expected SysError, got ${String(err)}`);
      assert.equal(err.syscall, 'mknod');
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.errno, 2);
      assert.equal(err.path, target);
      assert.equal(err.message, `mknod ${target}: ENOENT (No such file or directory)`);
      return true;
    },
  );
  assert.throws(() => umount2('/nonexistent-tscri-dir', 0), /^SysError: umount2 \/nonexistent-tscri-dir: ENOENT/);
});

test('lsetxattr / lgetxattr round-trip binary values; absent is null', () => {
  withTmp((dir) => {
    const f = path.join(dir, 'f');
    fs.writeFileSync(f, '');
    assert.equal(lgetxattr(f, 'user.absent'), null);
    const value = Buffer.from([0, 1, 0x80, 0xff]);
    lsetxattr(f, 'user.bin', value);
    assert.deepEqual(lgetxattr(f, 'user.bin'), value);
    lsetxattr(f, 'user.empty', Buffer.alloc(0));
    assert.deepEqual(lgetxattr(f, 'user.empty'), Buffer.alloc(0));
    const big = Buffer.alloc(3000, 7);
    lsetxattr(f, 'user.big', big);
    assert.deepEqual(lgetxattr(f, 'user.big'), big);
    assert.throws(() => lgetxattr(path.join(dir, 'missing'), 'user.x'), /lgetxattr .*missing \(user\.x\): ENOENT/);
  });
});

test('statfs reports the same numbers as fs.statfsSync', () => {
  const mine = statfs('/');
  const node = fs.statfsSync('/');
  assert.equal(mine.type, node.type);
  assert.equal(mine.bsize, node.bsize);
  assert.equal(mine.blocks, node.blocks);
  assert.equal(mine.files, node.files);
  assert.throws(() => statfs('/nonexistent-tscri-dir'), /statfs \/nonexistent-tscri-dir: ENOENT/);
});

test('mknod makes a 0/0 character device (an overlay whiteout)', needRoot, () => {
  withTmp((dir) => {
    const wh = path.join(dir, 'wh');
    mknod(wh, S_IFCHR, makedev(0, 0));
    const st = fs.lstatSync(wh);
    assert.ok(st.isCharacterDevice());
    assert.equal(st.rdev, 0);
    assert.throws(
      () => mknod(wh, S_IFCHR, 0),
      (err: unknown) => err instanceof SysError && err.code === 'EEXIST',
    );
  });
});

test('mount a tmpfs, remount it read-only, unmount it', needRoot, () => {
  withTmp((dir) => {
    const target = path.join(dir, 'mnt');
    fs.mkdirSync(target);
    mount('tmpfs', target, 'tmpfs', MS_NOSUID | MS_NODEV, 'size=1m,mode=0755');
    try {
      assert.equal(statfs(target).type, TMPFS_MAGIC);
      fs.writeFileSync(path.join(target, 'f'), 'x');
      mount(null, target, null, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, null);
      assert.throws(() => fs.writeFileSync(path.join(target, 'g'), 'x'), { code: 'EROFS' });
    } finally {
      umount2(target, MNT_DETACH);
    }
    assert.notEqual(statfs(target).type, TMPFS_MAGIC);
    assert.throws(
      () => mount('none', target, 'no-such-fs-type', 0, null),
      (err: unknown) => err instanceof SysError && err.code === 'ENODEV' && /type=no-such-fs-type/.test(err.message),
    );
  });
});
