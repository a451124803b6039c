import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { classifyWhiteout, LayerPathError, resolveEntryPath, unpackLayer } from '../../src/image/layer_unpack';
import { lgetxattr } from '../../src/sys/libc';

const isRoot = process.getuid?.() === 0;
const needRoot = isRoot ? {} : { skip: 'needs root (chown, mknod, trusted.* xattrs)' };

type Entry = { header: Partial<tar.Header> & { name: string }; content?: Buffer | string };

/** A tar built by tar-stream's packer, collected into one buffer. */
async function pack(entries: Entry[]): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (e.content !== undefined) p.entry(e.header, e.content, cb);
      else p.entry(e.header, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** One 512-byte ustar header with a valid checksum, for records tar-stream cannot produce. */
function rawHeader(name: string, type: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write(type, 156);
  h.write('ustar\0' + '00', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

function padded(b: Buffer): Buffer {
  const pad = (512 - (b.length % 512)) % 512;
  return Buffer.concat([b, Buffer.alloc(pad)]);
}

/** A PAX record whose value is raw bytes: "<len> <key>=<value>\n". */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** Feeds buf in chunks of `size` bytes, to exercise headers and data split across reads. */
function chunked(buf: Buffer, size: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

async function withTmp(fn: (root: string) => Promise<void>): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-unpack-'));
  try {
    await fn(root);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/** A layer dir plus an `outside` dir next to it that a hostile layer tries to reach. */
async function withLayer(fn: (dest: string, outside: string, root: string) => Promise<void>): Promise<void> {
  await withTmp(async (root) => {
    const dest = path.join(root, 'layer');
    const outside = path.join(root, 'outside');
    fs.mkdirSync(dest);
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, 'victim'), 'original');
    await fn(dest, outside, root);
  });
}

test('classifyWhiteout tells whiteouts, opaque markers and reserved names apart', () => {
  assert.deepEqual(classifyWhiteout('etc/passwd'), { kind: 'normal' });
  assert.deepEqual(classifyWhiteout('etc/x.wh.y'), { kind: 'normal' });
  assert.deepEqual(classifyWhiteout('./etc/.wh.passwd'), { kind: 'whiteout', path: 'etc/passwd' });
  assert.deepEqual(classifyWhiteout('.wh.foo'), { kind: 'whiteout', path: 'foo' });
  assert.deepEqual(classifyWhiteout('a/b/.wh.c/'), { kind: 'whiteout', path: 'a/b/c' });
  assert.deepEqual(classifyWhiteout('var/lib/.wh..wh..opq'), { kind: 'opaque', dir: 'var/lib' });
  assert.deepEqual(classifyWhiteout('./.wh..wh..opq'), { kind: 'opaque', dir: '.' });
  assert.deepEqual(classifyWhiteout('.wh..wh..opq'), { kind: 'opaque', dir: '.' });
  assert.deepEqual(classifyWhiteout('.wh..wh.plnk'), { kind: 'ignore' });
  assert.deepEqual(classifyWhiteout('x/.wh..wh.aufs'), { kind: 'ignore' });
  assert.throws(() => classifyWhiteout('a/.wh.'), LayerPathError);
  assert.throws(() => classifyWhiteout('a/.wh...'), LayerPathError);
});

test('resolveEntryPath keeps normal names inside the layer and rejects escapes', () => {
  const dest = '/var/lib/tscri/staging/x';
  assert.equal(resolveEntryPath(dest, './etc/x'), `${dest}/etc/x`);
  assert.equal(resolveEntryPath(dest, 'etc/x/'), `${dest}/etc/x`);
  assert.equal(resolveEntryPath(dest, 'etc//x'), `${dest}/etc/x`);
  assert.equal(resolveEntryPath(dest, 'a/../b'), `${dest}/b`);
  assert.equal(resolveEntryPath(dest, './'), dest);
  assert.equal(resolveEntryPath(dest, '.'), dest);
  for (const bad of ['../x', '/etc/x', 'a/../../x', '..', './..', 'a/b/../../../x']) {
    assert.throws(
      () => resolveEntryPath(dest, bad),
      (err: unknown) => err instanceof LayerPathError && err.entry === bad,
      `expected LayerPathError for ${JSON.stringify(bad)}`,
    );
  }
});

test('OCI whiteouts become overlayfs whiteouts and opaque xattrs', needRoot, async () => {
  await withLayer(async (dest) => {
    const buf = await pack([
      { header: { name: './', type: 'directory', mode: 0o755 } },
      { header: { name: './a/', type: 'directory', mode: 0o755 } },
      { header: { name: './a/.wh.gone', type: 'file', size: 0 }, content: '' },
      { header: { name: './c/.wh..wh..opq', type: 'file', size: 0 }, content: '' },
      { header: { name: './d/', type: 'directory', mode: 0o750 } },
      { header: { name: './d/.wh..wh..opq', type: 'file', size: 0 }, content: '' },
      { header: { name: './d/kept', type: 'file' }, content: 'k' },
      { header: { name: './.wh..wh.plnk', type: 'directory' } },
    ]);
    const res = await unpackLayer(Readable.from([buf]), dest);
    assert.equal(res.entries, 8);

    const wh = fs.lstatSync(path.join(dest, 'a/gone'));
    assert.ok(wh.isCharacterDevice(), 'a/gone should be a character device');
    assert.equal(wh.rdev, 0, 'whiteout device number should be 0/0');
    assert.equal(fs.existsSync(path.join(dest, 'a/.wh.gone')), false);

    assert.ok(fs.lstatSync(path.join(dest, 'c')).isDirectory(), 'opaque marker creates its missing dir');
    assert.deepEqual(lgetxattr(path.join(dest, 'c'), 'trusted.overlay.opaque'), Buffer.from('y'));
    assert.deepEqual(lgetxattr(path.join(dest, 'd'), 'trusted.overlay.opaque'), Buffer.from('y'));
    assert.equal(fs.lstatSync(path.join(dest, 'd')).mode & 0o7777, 0o750);
    assert.equal(fs.readFileSync(path.join(dest, 'd/kept'), 'utf8'), 'k');
    assert.equal(lgetxattr(path.join(dest, 'a'), 'trusted.overlay.opaque'), null);
    assert.deepEqual(fs.readdirSync(dest).sort(), ['a', 'c', 'd']);
  });
});

const escapes: Array<{ what: string; entries: Entry[]; bad: string }> = [
  { what: 'parent dir', bad: '../outside/evil', entries: [{ header: { name: '../outside/evil' }, content: 'x' }] },
  { what: 'absolute', bad: '/etc/x', entries: [{ header: { name: '/etc/x' }, content: 'x' }] },
  { what: 'climb after descent', bad: 'a/../../x', entries: [{ header: { name: 'a/../../x' }, content: 'x' }] },
  {
    what: 'symlink parent',
    bad: 'lnk/evil',
    entries: [{ header: { name: 'lnk', type: 'symlink', linkname: '@OUTSIDE@' } }, { header: { name: 'lnk/evil' }, content: 'x' }],
  },
  {
    what: 'relative symlink parent',
    bad: 'ok/lnk/evil',
    entries: [
      { header: { name: 'ok/', type: 'directory' } },
      { header: { name: 'ok/lnk', type: 'symlink', linkname: '../../outside' } },
      { header: { name: 'ok/lnk/evil', type: 'directory' } },
    ],
  },
  {
    what: 'hard link out',
    bad: 'h',
    entries: [{ header: { name: 'h', type: 'link', linkname: '../outside/victim' } }],
  },
  {
    what: 'hard link through symlink',
    bad: 'h',
    entries: [{ header: { name: 'lnk', type: 'symlink', linkname: '@OUTSIDE@' } }, { header: { name: 'h', type: 'link', linkname: 'lnk/victim' } }],
  },
  {
    what: 'whiteout through symlink',
    bad: 'lnk/.wh.victim',
    entries: [{ header: { name: 'lnk', type: 'symlink', linkname: '@OUTSIDE@' } }, { header: { name: 'lnk/.wh.victim' }, content: '' }],
  },
  {
    what: 'opaque through symlink',
    bad: 'lnk/.wh..wh..opq',
    entries: [{ header: { name: 'lnk', type: 'symlink', linkname: '@OUTSIDE@' } }, { header: { name: 'lnk/.wh..wh..opq' }, content: '' }],
  },
];

for (const esc of escapes) {
  test(`an entry escaping the layer is rejected: ${esc.what}`, needRoot, async () => {
    await withLayer(async (dest, outside, root) => {
      const entries = esc.entries.map((e) => ({
        ...e,
        header: { ...e.header, linkname: e.header.linkname?.replace('@OUTSIDE@', outside) },
      }));
      const buf = await pack(entries);
      await assert.rejects(unpackLayer(Readable.from([buf]), dest), (err: unknown) => {
        assert.ok(err instanceof LayerPathError, `expected LayerPathError, got ${String(err)}`);
        assert.equal(err.entry, esc.bad);
        return true;
      });
      assert.deepEqual(fs.readdirSync(root).sort(), ['layer', 'outside']);
      assert.deepEqual(fs.readdirSync(outside), ['victim']);
      const victim = fs.lstatSync(path.join(outside, 'victim'));
      assert.equal(victim.nlink, 1, 'victim must not gain a hard link');
      assert.equal(fs.readFileSync(path.join(outside, 'victim'), 'utf8'), 'original');
    });
  });
}

test('a rejected layer destroys its input stream with the same error', needRoot, async () => {
  await withLayer(async (dest) => {
    const buf = await pack([{ header: { name: '../x' }, content: 'x' }]);
    const src = Readable.from([buf]);
    const closed = new Promise<unknown>((resolve) => src.on('error', resolve));
    const err = await unpackLayer(src, dest).catch((e: unknown) => e);
    assert.ok(err instanceof LayerPathError);
    assert.equal(await closed, err);
  });
});

test('files, links, devices, owners, modes, times and xattrs are preserved', needRoot, async () => {
  await withLayer(async (dest) => {
    const t = (s: number): Date => new Date(s * 1000);
    const big = Buffer.alloc(300 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    const longName = `deep/${'n'.repeat(120)}/file`;
    const buf = await pack([
      { header: { name: 'bin/', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: t(1_000_000) } },
      {
        header: { name: 'bin/su', mode: 0o4755, uid: 1000, gid: 1001, mtime: t(1_500_000_000) },
        content: 'setuid binary',
      },
      { header: { name: 'bin/su2', type: 'link', linkname: 'bin/su' } },
      {
        header: { name: 'bin/sh', type: 'symlink', linkname: 'su', uid: 5, gid: 6, mtime: t(1_400_000_000) },
      },
      { header: { name: 'tmp/', type: 'directory', mode: 0o1777, mtime: t(1_200_000_000) } },
      { header: { name: 'srv/', type: 'directory', mode: 0o2775, uid: 0, gid: 50 } },
      {
        header: { name: 'etc/attr', mode: 0o640, pax: { 'SCHILY.xattr.user.foo': 'bar' } },
        content: 'with xattr',
      },
      { header: { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 } },
      { header: { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 } },
      { header: { name: 'run/fifo', type: 'fifo', mode: 0o620 } },
      { header: { name: 'big', mode: 0o644 }, content: big },
      { header: { name: longName }, content: 'long' },
    ]);
    const res = await unpackLayer(chunked(buf, 4093), dest);
    assert.equal(res.entries, 12);
    assert.equal(res.bytes, 'setuid binary'.length + 'with xattr'.length + big.length + 4);

    const su = fs.lstatSync(path.join(dest, 'bin/su'));
    assert.equal(su.mode & 0o7777, 0o4755, 'setuid bit survives chown');
    assert.equal(su.uid, 1000);
    assert.equal(su.gid, 1001);
    assert.equal(su.mtimeMs, 1_500_000_000_000);
    assert.equal(fs.readFileSync(path.join(dest, 'bin/su'), 'utf8'), 'setuid binary');

    const su2 = fs.lstatSync(path.join(dest, 'bin/su2'));
    assert.equal(su2.ino, su.ino, 'hard link shares the inode');
    assert.equal(su.nlink, 2);

    const sh = fs.lstatSync(path.join(dest, 'bin/sh'));
    assert.ok(sh.isSymbolicLink());
    assert.equal(fs.readlinkSync(path.join(dest, 'bin/sh')), 'su');
    assert.equal(sh.uid, 5);
    assert.equal(sh.gid, 6);
    assert.equal(sh.mtimeMs, 1_400_000_000_000);

    const bin = fs.lstatSync(path.join(dest, 'bin'));
    assert.equal(bin.mtimeMs, 1_000_000_000, 'directory mtime is set after its children are written');
    assert.equal(fs.lstatSync(path.join(dest, 'tmp')).mode & 0o7777, 0o1777);
    assert.equal(fs.lstatSync(path.join(dest, 'tmp')).mtimeMs, 1_200_000_000_000);
    const srv = fs.lstatSync(path.join(dest, 'srv'));
    assert.equal(srv.mode & 0o7777, 0o2775);
    assert.equal(srv.gid, 50);

    assert.deepEqual(lgetxattr(path.join(dest, 'etc/attr'), 'user.foo'), Buffer.from('bar'));
    assert.equal(fs.lstatSync(path.join(dest, 'etc/attr')).mode & 0o7777, 0o640);

    const nul = fs.lstatSync(path.join(dest, 'dev/null'));
    assert.ok(nul.isCharacterDevice());
    assert.equal(nul.rdev, (1 << 8) | 3);
    assert.equal(nul.mode & 0o7777, 0o666, 'device mode is not cut by the umask');
    const sda = fs.lstatSync(path.join(dest, 'dev/sda'));
    assert.ok(sda.isBlockDevice());
    assert.equal(sda.rdev, 8 << 8);
    assert.equal(sda.gid, 6);
    const fifo = fs.lstatSync(path.join(dest, 'run/fifo'));
    assert.ok(fifo.isFIFO());
    assert.equal(fifo.mode & 0o7777, 0o620);

    assert.ok(fs.readFileSync(path.join(dest, 'big')).equals(big), 'large file content intact');
    assert.equal(fs.readFileSync(path.join(dest, longName), 'utf8'), 'long');
  });
});

test('PAX xattr values are kept as raw bytes', needRoot, async () => {
  await withLayer(async (dest) => {
    const value = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0xff, 0xc3, 0x28]); // not UTF-8
    const rec = paxRecord('SCHILY.xattr.user.bin', value);
    const body = Buffer.from('data');
    const buf = Buffer.concat([rawHeader('PaxHeaders/f', 'x', rec.length), padded(rec), rawHeader('f', '0', body.length), padded(body), Buffer.alloc(1024)]);
    await unpackLayer(chunked(buf, 100), dest);
    assert.deepEqual(lgetxattr(path.join(dest, 'f'), 'user.bin'), value);
    assert.equal(fs.readFileSync(path.join(dest, 'f'), 'utf8'), 'data');
  });
});

test('a later entry replaces an earlier one; a directory stays a directory', needRoot, async () => {
  await withLayer(async (dest) => {
    const buf = await pack([
      { header: { name: 'x' }, content: 'first' },
      { header: { name: 'x', type: 'symlink', linkname: 'target' } },
      { header: { name: 'y', type: 'symlink', linkname: 'target' } },
      { header: { name: 'y' }, content: 'second' },
      { header: { name: 'd/', type: 'directory', mode: 0o700 } },
      { header: { name: 'd/f' }, content: 'kept' },
      { header: { name: 'd/', type: 'directory', mode: 0o755 } },
      { header: { name: 'e/', type: 'directory' } },
      { header: { name: 'e/f' }, content: 'gone' },
      { header: { name: 'e' }, content: 'file now' },
      { header: { name: 'f' }, content: 'one' },
      { header: { name: 'f' }, content: 'two' },
    ]);
    await unpackLayer(Readable.from([buf]), dest);
    assert.equal(fs.readlinkSync(path.join(dest, 'x')), 'target');
    assert.ok(fs.lstatSync(path.join(dest, 'y')).isFile());
    assert.equal(fs.readFileSync(path.join(dest, 'y'), 'utf8'), 'second');
    assert.equal(fs.readFileSync(path.join(dest, 'd/f'), 'utf8'), 'kept');
    assert.equal(fs.lstatSync(path.join(dest, 'd')).mode & 0o7777, 0o755);
    assert.equal(fs.readFileSync(path.join(dest, 'e'), 'utf8'), 'file now');
    assert.equal(fs.readFileSync(path.join(dest, 'f'), 'utf8'), 'two');
  });
});

test('the whole input is consumed, including trailing padding after the end marker', needRoot, async () => {
  await withLayer(async (dest) => {
    const tarBuf = await pack([{ header: { name: 'a' }, content: 'a' }]);
    const buf = Buffer.concat([tarBuf, Buffer.alloc(20_000)]);
    let seen = 0;
    const src = Readable.from(
      (function* () {
        for (let i = 0; i < buf.length; i += 1000) {
          const part = buf.subarray(i, i + 1000);
          seen += part.length;
          yield part;
        }
      })(),
    );
    await unpackLayer(src, dest);
    assert.equal(seen, buf.length);
    assert.ok(src.readableEnded, 'input stream should have ended');
  });
});

test('a truncated tar stream is rejected with the entry it was in', needRoot, async () => {
  await withLayer(async (dest) => {
    const buf = await pack([{ header: { name: 'a' }, content: Buffer.alloc(5000) }]);
    await assert.rejects(unpackLayer(Readable.from([buf.subarray(0, 2000)]), dest), /entry "a".*unexpected end/);
  });
});

test('a stream that is not a tar is rejected', async () => {
  await withTmp(async (dest) => {
    await assert.rejects(unpackLayer(Readable.from([Buffer.alloc(1024, 0x41)]), dest), /checksum/);
  });
});
