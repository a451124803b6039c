// The CRI ImageService end to end: a real docker-registry, a real tscri daemon, every image RPC
// over gRPC as the kubelet makes them, and the unpacked layers checked on disk.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expectCriError, type CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { freePort, startRegistry, type Registry } from '../helpers/registry';
import {
  BUSYBOX_PATH,
  busyboxLayer,
  pushImage,
  pushIndex,
  RegistryClient,
  sha256,
  type LayerEntry,
  type PushedImage,
  type PushedIndex,
} from '../helpers/images';
import type { Image__Output } from '../../src/gen/runtime/v1/Image';

const PRIVATE_USER = 'tscri-tester';
const PRIVATE_PASSWORD = crypto.randomBytes(12).toString('hex');

let registry: Registry;
let privateRegistry: Registry;
let daemon: Daemon;
const cri = (): CriClient => daemon.cri;

/** The tag reference of an image the test pushed with a tag. */
function tagOf(img: PushedImage): string {
  assert.ok(img.tagRef, `image ${img.repo} pushed with a tag`);
  return img.tagRef;
}

// Images pushed once in before(); each test pulls what it needs, so tests also run alone.
let multi: PushedImage;
let compressed: PushedImage;
let dockerFormat: PushedImage;
let multiarch: PushedIndex;
let rmA: PushedImage;
let rmB: PushedImage;
let rmC: PushedImage;
let privateImage: PushedImage;
let privateImage2: PushedImage;
const cleanupDirs: string[] = [];

/** An unpacked layer directory; the contract names it by chain id, with or without `sha256:`. */
function layerDir(chainId: string): string {
  const hex = chainId.replace(/^sha256:/, '');
  for (const name of [hex, chainId]) {
    const p = path.join(daemon.root, 'layers', name);
    if (fs.existsSync(p)) return p;
  }
  assert.fail(`expected layer ${chainId} unpacked under ${path.join(daemon.root, 'layers')}, found only: ${layerNames().join(', ') || '(nothing)'}`);
}

function layerExists(chainId: string): boolean {
  const hex = chainId.replace(/^sha256:/, '');
  return [hex, chainId].some((name) => fs.existsSync(path.join(daemon.root, 'layers', name)));
}

function layerNames(): string[] {
  const dir = path.join(daemon.root, 'layers');
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

function readXattr(file: string, name: string): string | undefined {
  try {
    return execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', name, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code !== 'ENOENT') return undefined;
  }
  // Without Debian's attr package, Python's os.getxattr reads the same attribute.
  const script = 'import os,sys\ntry: sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())\nexcept OSError: sys.exit(3)';
  try {
    return execFileSync('python3', ['-c', script, file, name], { encoding: 'utf8' });
  } catch {
    return undefined;
  }
}

async function pull(ref: string, auth?: { username?: string; password?: string; auth?: string }): Promise<string> {
  const res = await cri().image.PullImage({ image: { image: ref }, auth: auth ?? null });
  return res.image_ref;
}

async function status(ref: string, verbose = false) {
  return cri().image.ImageStatus({ image: { image: ref }, verbose });
}

async function listed(): Promise<Image__Output[]> {
  return (await cri().image.ListImages({})).images;
}

function show(img: Image__Output | null | undefined): string {
  return JSON.stringify(img);
}

/** Polls `check` for a short while: layer removal may finish just after RemoveImage returns. */
async function eventually(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) assert.fail(`${what} (waited ${timeoutMs} ms)`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every path under `dir` whose name contains `marker`. */
function findNamed(dir: string, marker: string): string[] {
  const hits: string[] = [];
  const walk = (d: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.name.includes(marker)) hits.push(p);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return hits;
}

describe('ImageService', { timeout: 300_000 }, () => {
  before(async () => {
    registry = await startRegistry();
    privateRegistry = await startRegistry({ tokenAuth: { username: PRIVATE_USER, password: PRIVATE_PASSWORD } });
    daemon = await startDaemon();
    const base = await busyboxLayer();

    multi = await pushImage(registry.host, 'multi', 'v1', {
      layers: [
        base,
        {
          entries: [
            { type: 'dir', path: 'data' },
            { type: 'dir', path: 'data/keep' },
            { type: 'file', path: 'data/keep/a.txt', content: 'kept\n' },
            { type: 'dir', path: 'data/old' },
            { type: 'file', path: 'data/old/x.txt', content: 'hidden by the opaque dir above\n' },
            { type: 'file', path: 'data/gone.txt', content: 'deleted by a whiteout above\n' },
            { type: 'file', path: 'data/orig.txt', content: 'one inode, two names\n' },
            { type: 'hardlink', path: 'data/link.txt', target: 'data/orig.txt' },
            { type: 'file', path: 'data/owned.txt', content: 'app owns this\n', uid: 1234, gid: 1234, mode: 0o640 },
          ],
        },
        {
          entries: [
            { type: 'whiteout', path: 'data/gone.txt' },
            { type: 'dir', path: 'data/old' },
            { type: 'opaque', path: 'data/old' },
            { type: 'file', path: 'data/old/y.txt', content: 'the only file left in data/old\n' },
          ],
        },
      ],
      config: { User: '1234', Env: ['PATH=/bin', 'TSCRI_TEST=multi'], Cmd: ['/bin/sh'] },
    });

    compressed = await pushImage(registry.host, 'compressed', 'v1', {
      layers: [
        base,
        { entries: [{ type: 'file', path: 'zstd.txt', content: 'from a zstd layer\n' }], compression: 'zstd' },
        { entries: [{ type: 'file', path: 'plain.txt', content: 'from an uncompressed layer\n' }], compression: 'none' },
      ],
      config: { User: 'app' },
    });

    dockerFormat = await pushImage(registry.host, 'docker-format', 'v1', {
      layers: [base, { entries: [{ type: 'file', path: 'docker.txt', content: 'schema 2\n' }] }],
      format: 'docker',
    });

    // arm64 first: a client that takes the first entry instead of matching the platform picks the wrong one.
    multiarch = await pushIndex(registry.host, 'multiarch', 'v1', [
      { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { platform: { os: 'linux', architecture: 'amd64' } },
    ]);

    const unique = (name: string) => ({ entries: [{ type: 'file', path: `${name}.txt`, content: `${name} ${crypto.randomUUID()}\n` } as LayerEntry] });
    rmA = await pushImage(registry.host, 'rm-a', 'v1', { layers: [base, unique('rm-a')] });
    rmB = await pushImage(registry.host, 'rm-b', 'v1', { layers: [base, unique('rm-b')] });
    rmC = await pushImage(registry.host, 'rm-c', 'v1', { layers: [base, unique('rm-c')] });

    const creds = { username: PRIVATE_USER, password: PRIVATE_PASSWORD };
    privateImage = await pushImage(privateRegistry.host, 'private/app', 'v1', { layers: [base, unique('private')], auth: creds });
    privateImage2 = await pushImage(privateRegistry.host, 'private/app2', 'v1', { layers: [base, unique('private2')], auth: creds });
  });

  after(async () => {
    // Each step runs even if an earlier one throws: a leaked daemon or registry outlives the test run.
    // Each is unset when before() failed ahead of it.
    const steps: (() => unknown)[] = [
      () => (daemon as Daemon | undefined)?.stop(),
      () => (registry as Registry | undefined)?.stop(),
      () => (privateRegistry as Registry | undefined)?.stop(),
      () => cleanupDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })),
    ];
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        console.error('cleanup failed:', err);
      }
    }
  });

  test('pulls a multi-layer image by tag and reports it in ImageStatus', async (t) => {
    const ref = tagOf(multi);
    const imageRef = await pull(ref);
    assert.equal(imageRef, multi.configDigest, `PullImage(${ref}) image_ref: expected the config digest ${multi.configDigest}, saw ${imageRef}`);

    const { image } = await status(ref);
    assert.ok(image, `ImageStatus(${ref}) after a successful pull: expected an image, saw none`);
    assert.equal(image.id, imageRef, `ImageStatus id: expected the image_ref from PullImage ${imageRef}, saw ${image.id}`);
    assert.ok(image.repo_tags.includes(ref), `repo_tags: expected ${ref}, saw ${JSON.stringify(image.repo_tags)}`);
    const digestRef = `${registry.host}/multi@${multi.manifestDigest}`;
    assert.ok(image.repo_digests.includes(digestRef), `repo_digests: expected ${digestRef}, saw ${JSON.stringify(image.repo_digests)}`);
    assert.ok(Number(image.size) > 0, `size: expected > 0, saw ${image.size}`);
    assert.equal(image.uid?.value, '1234', `uid for USER 1234: expected 1234, saw ${JSON.stringify(image.uid)}`);
    assert.equal(image.username, '', `username for a numeric USER: expected empty, saw ${image.username}`);
    t.diagnostic(`image ${show(image)}`);
  });

  test('unpacks whiteouts, opaque dirs, hard links, owners and modes into overlay layers', async () => {
    await pull(tagOf(multi));
    const [l1, l2, l3] = multi.chainIds.map(layerDir);

    const bb = fs.statSync(path.join(l1, 'bin/busybox'));
    assert.equal(bb.size, fs.statSync(BUSYBOX_PATH).size, `bin/busybox size: expected ${fs.statSync(BUSYBOX_PATH).size}, saw ${bb.size}`);
    assert.equal(bb.mode & 0o777, 0o755, `bin/busybox mode: expected 755, saw ${(bb.mode & 0o777).toString(8)}`);
    const sh = path.join(l1, 'bin/sh');
    assert.ok(fs.lstatSync(sh).isSymbolicLink(), 'bin/sh: expected a symlink');
    assert.equal(fs.readlinkSync(sh), 'busybox', `bin/sh target: expected busybox, saw ${fs.readlinkSync(sh)}`);
    const tmpMode = fs.statSync(path.join(l1, 'tmp')).mode & 0o7777;
    assert.equal(tmpMode, 0o1777, `tmp mode: expected 1777 (sticky), saw ${tmpMode.toString(8)}`);

    const orig = fs.statSync(path.join(l2, 'data/orig.txt'));
    const link = fs.statSync(path.join(l2, 'data/link.txt'));
    assert.equal(link.ino, orig.ino, `hard link data/link.txt: expected the inode of data/orig.txt (${orig.ino}), saw ${link.ino}`);
    assert.ok(orig.nlink >= 2, `data/orig.txt nlink: expected >= 2, saw ${orig.nlink}`);
    const owned = fs.statSync(path.join(l2, 'data/owned.txt'));
    assert.deepEqual(
      { uid: owned.uid, gid: owned.gid, mode: (owned.mode & 0o777).toString(8) },
      { uid: 1234, gid: 1234, mode: '640' },
      'data/owned.txt owner and mode as written in the tar header',
    );

    const wh = path.join(l3, 'data/gone.txt');
    const whStat = fs.lstatSync(wh, { throwIfNoEntry: false });
    assert.ok(whStat, `whiteout: expected ${wh} as a 0:0 char device, it is missing`);
    assert.ok(whStat.isCharacterDevice(), `whiteout data/gone.txt: expected a character device, saw mode ${whStat.mode.toString(8)}`);
    assert.equal(whStat.rdev, 0, `whiteout data/gone.txt: expected device 0:0, saw rdev ${whStat.rdev}`);
    assert.ok(!fs.existsSync(path.join(l3, 'data/.wh.gone.txt')), 'the .wh.gone.txt marker must not remain in the layer');

    const opaque = readXattr(path.join(l3, 'data/old'), 'trusted.overlay.opaque');
    assert.equal(opaque, 'y', `data/old xattr trusted.overlay.opaque: expected "y", saw ${JSON.stringify(opaque)}`);
    assert.ok(!fs.existsSync(path.join(l3, 'data/old/.wh..wh..opq')), 'the .wh..wh..opq marker must not remain in the layer');
    assert.equal(fs.readFileSync(path.join(l3, 'data/old/y.txt'), 'utf8'), 'the only file left in data/old\n');
    assert.ok(fs.statSync(path.join(l2, 'data/old')).isDirectory(), 'the lower data/old stays untouched');
  });

  test('pulls by digest to the same image', async () => {
    const ref = multi.digestRef;
    const imageRef = await pull(ref);
    assert.equal(imageRef, multi.configDigest, `PullImage(${ref}): expected ${multi.configDigest}, saw ${imageRef}`);
    const { image } = await status(ref);
    assert.ok(image, `ImageStatus(${ref}): expected the image, saw none`);
    assert.equal(image.id, multi.configDigest);
    assert.ok(image.repo_digests.includes(ref), `repo_digests: expected ${ref}, saw ${JSON.stringify(image.repo_digests)}`);
  });

  test('pulls gzip, zstd and uncompressed layers; a named USER is reported as username', async () => {
    const imageRef = await pull(tagOf(compressed));
    assert.equal(imageRef, compressed.configDigest, `PullImage(${compressed.tagRef}): expected ${compressed.configDigest}, saw ${imageRef}`);
    assert.deepEqual(
      compressed.layers.map((l) => l.compression),
      ['gzip', 'zstd', 'none'],
    );
    const [l1, l2, l3] = compressed.chainIds.map(layerDir);
    assert.ok(fs.statSync(path.join(l1, 'bin/busybox')).isFile(), 'gzip layer: bin/busybox');
    assert.equal(fs.readFileSync(path.join(l2, 'zstd.txt'), 'utf8'), 'from a zstd layer\n', 'zstd layer: zstd.txt');
    assert.equal(fs.readFileSync(path.join(l3, 'plain.txt'), 'utf8'), 'from an uncompressed layer\n', 'uncompressed layer: plain.txt');
    const { image } = await status(tagOf(compressed));
    assert.equal(image?.username, 'app', `username for USER app: expected app, saw ${show(image)}`);
    assert.equal(image.uid ?? null, null, `uid for a named USER: expected unset, saw ${JSON.stringify(image.uid)}`);
  });

  test('pulls a Docker schema 2 image', async () => {
    const imageRef = await pull(tagOf(dockerFormat));
    assert.equal(imageRef, dockerFormat.configDigest, `PullImage(${dockerFormat.tagRef}): expected ${dockerFormat.configDigest}, saw ${imageRef}`);
    assert.equal(fs.readFileSync(path.join(layerDir(dockerFormat.chainIds[1]), 'docker.txt'), 'utf8'), 'schema 2\n');
  });

  test('picks linux/amd64 from an image index', async () => {
    const amd64 = multiarch.images.find((i) => i.platform.architecture === 'amd64');
    const arm64 = multiarch.images.find((i) => i.platform.architecture === 'arm64');
    assert.ok(amd64 && arm64, 'the multiarch index holds an amd64 and an arm64 image');
    const imageRef = await pull(multiarch.tagRef);
    assert.notEqual(imageRef, arm64.configDigest, 'PullImage of an index chose the arm64 image');
    assert.equal(imageRef, amd64.configDigest, `PullImage(${multiarch.tagRef}): expected the amd64 config ${amd64.configDigest}, saw ${imageRef}`);
    assert.equal(fs.readFileSync(path.join(layerDir(amd64.chainIds[1]), 'platform'), 'utf8'), 'linux/amd64\n');
    assert.ok(!layerExists(arm64.chainIds[1]), 'the arm64 layer must not be unpacked');
    const { image } = await status(multiarch.tagRef);
    // The tag resolves to the index, so the digest a user can pull again is the index's.
    assert.ok(image?.repo_digests.includes(multiarch.digestRef), `repo_digests: expected ${multiarch.digestRef}, saw ${show(image)}`);
  });

  test('ListImages lists everything and filters by reference', async () => {
    await pull(tagOf(multi));
    await pull(tagOf(compressed));
    const all = await listed();
    const ids = all.map((i) => i.id);
    for (const img of [multi, compressed])
      assert.ok(ids.includes(img.configDigest), `ListImages: expected ${img.configDigest} (${img.tagRef}), saw ${JSON.stringify(ids)}`);

    const filtered = (await cri().image.ListImages({ filter: { image: { image: tagOf(multi) } } })).images;
    assert.deepEqual(
      filtered.map((i) => i.id),
      [multi.configDigest],
      `ListImages filtered by ${multi.tagRef}: expected only ${multi.configDigest}, saw ${JSON.stringify(filtered.map((i) => i.id))}`,
    );
    const byId = (await cri().image.ListImages({ filter: { image: { image: compressed.configDigest } } })).images;
    assert.deepEqual(
      byId.map((i) => i.id),
      [compressed.configDigest],
      `ListImages filtered by id: saw ${JSON.stringify(byId.map((i) => i.id))}`,
    );
    const none = (await cri().image.ListImages({ filter: { image: { image: `${registry.host}/never-pushed:v1` } } })).images;
    assert.deepEqual(none, [], `ListImages filtered by an unknown image: expected nothing, saw ${JSON.stringify(none)}`);
  });

  test('StreamImages streams the same images as ListImages', async () => {
    await pull(tagOf(multi));
    const listIds = (await listed()).map((i) => i.id).sort();
    const messages = await cri().image.StreamImages({});
    assert.ok(messages.length > 0, 'StreamImages: expected at least one message');
    const streamIds = messages.flatMap((m) => m.images.map((i) => i.id)).sort();
    assert.deepEqual(streamIds, listIds, 'StreamImages ids vs ListImages ids');
    const filtered = (await cri().image.StreamImages({ filter: { image: { image: tagOf(multi) } } })).flatMap((m) => m.images.map((i) => i.id));
    assert.deepEqual(filtered, [multi.configDigest], `StreamImages filtered by ${multi.tagRef}`);
  });

  test('ImageStatus of a missing image answers OK with no image', async () => {
    for (const ref of [`${registry.host}/never-pushed:v1`, `sha256:${'0'.repeat(64)}`]) {
      const res = await status(ref);
      assert.equal(res.image, null, `ImageStatus(${ref}): expected no image, saw ${show(res.image)}`);
    }
  });

  test('ImageStatus verbose returns the image config in info', async () => {
    await pull(tagOf(multi));
    const res = await status(tagOf(multi), true);
    assert.ok(res.image, 'verbose ImageStatus: expected the image');
    const values = Object.values(res.info);
    assert.ok(values.length > 0, 'verbose ImageStatus: expected info entries, saw none');
    const withConfig = values.find((v) => v.includes('TSCRI_TEST=multi'));
    assert.ok(withConfig, `verbose info: expected the image config (Env TSCRI_TEST=multi), saw ${JSON.stringify(res.info)}`);
    assert.doesNotThrow(() => JSON.parse(withConfig), 'the info value holding the config is JSON');
    const quiet = await status(tagOf(multi), false);
    assert.deepEqual(quiet.info, {}, `non-verbose ImageStatus: expected empty info, saw ${JSON.stringify(quiet.info)}`);
  });

  test('ImageFsInfo reports the layer store after a pull', async () => {
    await pull(tagOf(multi));
    const res = await cri().image.ImageFsInfo({});
    assert.ok(res.image_filesystems.length >= 1, `ImageFsInfo: expected an image filesystem, saw ${JSON.stringify(res)}`);
    const fsu = res.image_filesystems[0];
    const allowed = [path.join(daemon.root, 'layers'), daemon.root];
    assert.ok(allowed.includes(fsu.fs_id?.mountpoint ?? ''), `mountpoint: expected one of ${allowed.join(', ')}, saw ${fsu.fs_id?.mountpoint}`);
    const busyboxBytes = fs.statSync(BUSYBOX_PATH).size;
    assert.ok(
      Number(fsu.used_bytes?.value) >= busyboxBytes,
      `used_bytes: expected at least the unpacked busybox (${busyboxBytes}), saw ${fsu.used_bytes?.value}`,
    );
    assert.ok(Number(fsu.inodes_used?.value) > 0, `inodes_used: expected > 0, saw ${fsu.inodes_used?.value}`);
  });

  test('RemoveImage by tag, id and digest; twice is fine; unused layers go, shared ones stay', async () => {
    for (const img of [rmA, rmB, rmC]) await pull(tagOf(img));
    await pull(tagOf(multi));
    const shared = rmA.chainIds[0];
    assert.equal(shared, multi.chainIds[0], 'fixture: rm-a and multi share the busybox base layer');
    for (const img of [rmA, rmB, rmC]) layerDir(img.chainIds[1]);

    const cases: [PushedImage, string, string][] = [
      [rmA, 'tag', tagOf(rmA)],
      [rmB, 'id', rmB.configDigest],
      [rmC, 'digest', rmC.digestRef],
    ];
    for (const [img, how, ref] of cases) {
      await cri().image.RemoveImage({ image: { image: ref } });
      for (const probe of [tagOf(img), img.configDigest, img.digestRef]) {
        const { image } = await status(probe);
        assert.equal(image, null, `after RemoveImage by ${how} (${ref}), ImageStatus(${probe}): expected no image, saw ${show(image)}`);
      }
      assert.ok(!(await listed()).some((i) => i.id === img.configDigest), `ListImages after RemoveImage by ${how}: ${img.configDigest} still listed`);
      await eventually(
        `layer ${img.chainIds[1]} of ${img.repo} (no other user) is still in ${daemon.root}/layers after RemoveImage by ${how}`,
        () => !layerExists(img.chainIds[1]),
      );
      assert.ok(layerExists(shared), `shared base layer ${shared} was removed with ${img.repo}, but ${multi.tagRef} still uses it`);
    }

    for (const [, how, ref] of cases) {
      await cri()
        .image.RemoveImage({ image: { image: ref } })
        .catch((err: unknown) => assert.fail(`second RemoveImage by ${how} (${ref}): expected OK, saw ${String(err)}`));
    }
    await cri().image.RemoveImage({ image: { image: `${registry.host}/never-pushed:v1` } });

    const { image } = await status(tagOf(multi));
    assert.equal(image?.id, multi.configDigest, 'the image sharing the base layer is untouched');
    assert.ok(fs.statSync(path.join(layerDir(shared), 'bin/busybox')).isFile(), 'the shared layer still has its files');
  });

  test('a missing tag fails and names the reference', async (t) => {
    const ref = `${registry.host}/multi:no-such-tag`;
    const err = await expectCriError(`PullImage(${ref})`, () => pull(ref));
    t.diagnostic(err.message);
    assert.match(err.details, /no-such-tag/, `error for ${ref}: expected it to name the reference, saw ${err.message}`);
  });

  describe('hostile layers', () => {
    const marker = `tscri-escape-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
    let symlinkTarget: string;

    before(() => {
      // A real directory the symlink points at: an unpacker that follows it would write here.
      symlinkTarget = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-symlink-target-'));
      cleanupDirs.push(symlinkTarget);
    });

    const cases: { name: string; entries: () => LayerEntry[] }[] = [
      {
        name: '../../ path',
        entries: () => [{ type: 'raw', header: { name: `../../${marker}-dotdot`, type: 'file', mode: 0o644 }, content: Buffer.from('escaped\n') }],
      },
      {
        name: 'deep ../ path to /tmp',
        entries: () => [
          { type: 'raw', header: { name: `${'../'.repeat(20)}tmp/${marker}-deep`, type: 'file', mode: 0o644 }, content: Buffer.from('escaped\n') },
        ],
      },
      {
        name: 'file under an absolute symlink parent',
        entries: () => [
          { type: 'symlink', path: 'evil', target: symlinkTarget },
          { type: 'file', path: `evil/${marker}-abs-symlink`, content: 'escaped\n' },
        ],
      },
      {
        name: 'file under a relative symlink parent',
        entries: () => [
          { type: 'symlink', path: 'up', target: '../'.repeat(20).slice(0, -1) },
          { type: 'file', path: `up${symlinkTarget}/${marker}-rel-symlink`, content: 'escaped\n' },
        ],
      },
    ];

    for (const [i, c] of cases.entries()) {
      test(`a layer with a ${c.name} fails the pull and writes nothing outside`, async (t) => {
        const repo = `evil-${i}`;
        const img = await pushImage(registry.host, repo, 'v1', {
          layers: [{ entries: [{ type: 'file', path: 'innocent.txt', content: 'unpacked before the bad entry\n' }, ...c.entries()] }],
        });
        const before = layerNames();
        const err = await expectCriError(`PullImage(${img.tagRef}) with a ${c.name}`, () => pull(tagOf(img)));
        t.diagnostic(err.message);
        assert.ok(err.details.length > 0, 'the error says why');

        // Where each escape would land from any staging dir inside the daemon's temp base:
        // somewhere in the base, in /tmp or / (deep ../), or in the symlink's target.
        const escaped = [
          ...findNamed(daemon.base, marker),
          ...fs.readdirSync(symlinkTarget).map((n) => path.join(symlinkTarget, n)),
          ...fs.readdirSync(os.tmpdir()).filter((n) => n.includes(marker)),
          ...fs.readdirSync('/').filter((n) => n.includes(marker)),
        ];
        assert.deepEqual(escaped, [], `files written by a rejected layer (${err.details})`);
        assert.equal((await status(tagOf(img))).image, null, 'a failed pull must not leave an image');
        assert.ok(!(await listed()).some((x) => x.id === img.configDigest), 'a failed pull must not list an image');
        assert.deepEqual(layerNames(), before, `${daemon.root}/layers after a failed pull: expected unchanged`);
      });
    }
  });

  test('a blob that does not match its digest fails the pull and leaves no layer', async (t) => {
    const img = await pushImage(registry.host, 'corrupt', 'v1', {
      layers: [await busyboxLayer(), { entries: [{ type: 'file', path: 'corrupt.txt', content: `to be corrupted ${crypto.randomUUID()}\n` }] }],
    });
    const bad = img.layers[1];
    const dataFile = registry.blobDataPath(bad.digest);
    assert.ok(fs.existsSync(dataFile), `fixture: expected the uploaded blob at ${dataFile}`);
    // Same length, different bytes: the registry still serves it under the old digest and size.
    fs.writeFileSync(dataFile, crypto.randomBytes(bad.size));
    const served = await new RegistryClient(registry.host).getBlob('corrupt', bad.digest);
    assert.notEqual(sha256(served), bad.digest, 'fixture: the registry must now serve bytes that do not match the digest');

    await pull(tagOf(multi));
    const before = layerNames();
    const err = await expectCriError(`PullImage(${img.tagRef}) with a corrupted blob`, () => pull(tagOf(img)));
    t.diagnostic(err.message);
    assert.match(err.details, /digest|sha256|mismatch|verif/i, `error for a corrupted blob: expected a digest mismatch, saw ${err.message}`);
    assert.equal((await status(tagOf(img))).image, null, 'no image after a failed pull');
    assert.ok(!layerExists(img.chainIds[1]), `no layer for the corrupted blob in ${daemon.root}/layers`);
    assert.deepEqual(layerNames(), before, `${daemon.root}/layers after a failed pull: expected unchanged (no staging leftovers)`);
  });

  describe('token-protected registry', () => {
    test('fixture: the registry refuses anonymous pulls', async () => {
      await assert.rejects(new RegistryClient(privateRegistry.host).getManifest('private/app', 'v1'), /401/);
    });

    test('a pull without credentials fails and names the registry', async (t) => {
      const err = await expectCriError(`PullImage(${privateImage.tagRef}) without auth`, () => pull(tagOf(privateImage)));
      t.diagnostic(err.message);
      assert.ok(
        ['UNAUTHENTICATED', 'PERMISSION_DENIED', 'UNKNOWN', 'NOT_FOUND'].includes(err.codeName),
        `code: expected an auth failure, saw ${err.codeName}: ${err.details}`,
      );
      assert.ok(err.details.includes(privateRegistry.host), `error: expected it to name ${privateRegistry.host}, saw ${err.details}`);
      assert.equal((await status(tagOf(privateImage))).image, null, 'no image after a refused pull');
    });

    test('a pull with a wrong password fails', async (t) => {
      const err = await expectCriError('PullImage with a wrong password', () => pull(tagOf(privateImage), { username: PRIVATE_USER, password: 'wrong' }));
      t.diagnostic(err.message);
      assert.equal((await status(tagOf(privateImage))).image, null, 'no image after a refused pull');
    });

    test('a pull with username and password succeeds', async () => {
      const imageRef = await pull(tagOf(privateImage), { username: PRIVATE_USER, password: PRIVATE_PASSWORD });
      assert.equal(imageRef, privateImage.configDigest, `PullImage(${privateImage.tagRef}) with auth: expected ${privateImage.configDigest}, saw ${imageRef}`);
      assert.equal((await status(tagOf(privateImage))).image?.id, privateImage.configDigest);
    });

    test('a pull with the base64 auth field succeeds', async () => {
      const auth = Buffer.from(`${PRIVATE_USER}:${PRIVATE_PASSWORD}`).toString('base64');
      const imageRef = await pull(tagOf(privateImage2), { auth });
      assert.equal(
        imageRef,
        privateImage2.configDigest,
        `PullImage(${privateImage2.tagRef}) with auth field: expected ${privateImage2.configDigest}, saw ${imageRef}`,
      );
    });
  });

  test('an unreachable registry fails with RegistryUnavailable', async (t) => {
    const port = await freePort();
    const ref = `127.0.0.1:${port}/nothing:v1`;
    const err = await expectCriError(`PullImage(${ref})`, () => pull(ref));
    t.diagnostic(err.message);
    assert.ok(
      err.details.startsWith('RegistryUnavailable'),
      `error for a closed port: expected it to start with RegistryUnavailable, saw ${err.codeName}: ${err.details}`,
    );
  });

  test('image records survive a daemon restart', async () => {
    await pull(tagOf(multi));
    const beforeIds = (await listed()).map((i) => i.id).sort();
    const beforeStatus = (await status(tagOf(multi))).image;
    await daemon.restart();
    const after = (await status(tagOf(multi))).image;
    assert.ok(after, `ImageStatus(${multi.tagRef}) after restart: expected the image, saw none; daemon log:\n${daemon.logs().slice(-4000)}`);
    assert.deepEqual(after, beforeStatus, 'ImageStatus after restart vs before');
    assert.deepEqual((await listed()).map((i) => i.id).sort(), beforeIds, 'ListImages after restart vs before');
    for (const c of multi.chainIds) layerDir(c);
    // The restarted daemon must still be able to use what it found, not just list it.
    assert.equal(await pull(tagOf(multi)), multi.configDigest, 'PullImage after restart');
  });
});
