import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { MediaType, chainIds, checkConfigMediaType, detectMediaType, parseConfig, parseIndex, parseManifest, selectPlatform } from '../../src/image/manifest';
import { compressionOf } from '../../src/image/layer_streams';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

const index = parseIndex(
  json({
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [
      { mediaType: MediaType.ociManifest, digest: d('1'), size: 10, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
      { mediaType: MediaType.ociManifest, digest: d('2'), size: 10, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { mediaType: MediaType.ociManifest, digest: d('3'), size: 10, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: MediaType.ociManifest, digest: d('4'), size: 10, platform: { os: 'unknown', architecture: 'unknown' } },
      { mediaType: MediaType.ociManifest, digest: d('5'), size: 10, platform: { os: 'windows', architecture: 'amd64' } },
    ],
  }),
  'test index',
);

test('an index yields the manifest of the asked platform', () => {
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'amd64' }, 'x').digest, d('3'));
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v7' }, 'x').digest, d('1'));
});

test('arm64 matches with or without the implied v8 variant', () => {
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm64' }, 'x').digest, d('2'));
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'x').digest, d('2'));
});

test('a platform the index lacks is NotFound naming what it offers', () => {
  assert.throws(
    () => selectPlatform(index, { os: 'linux', architecture: 's390x' }, 'idx'),
    (err: Error) => err.name === 'NotFoundError' && /linux\/s390x/.test(err.message) && /linux\/amd64/.test(err.message),
  );
});

test('an index of 10,000 manifests, none for this platform: the error counts them and names a few', () => {
  const many = parseIndex(
    json({
      schemaVersion: 2,
      manifests: Array.from({ length: 10_000 }, (_, i) => ({
        mediaType: MediaType.ociManifest,
        digest: d('1'),
        size: 10,
        platform: { os: 'plan9', architecture: `arch${i}` },
      })),
    }),
    'big index',
  );
  assert.throws(
    () => selectPlatform(many, { os: 'linux', architecture: 'amd64' }, 'index of x'),
    (err: Error) => {
      assert.equal(err.name, 'NotFoundError');
      assert.ok(err.message.length < 400, `message of ${err.message.length} characters: ${err.message.slice(0, 600)}`);
      assert.match(err.message, /no manifest for linux\/amd64/);
      assert.match(err.message, /10000 manifests for 10000 platforms: plan9\/arch0, plan9\/arch1, .* and 9995 more/);
      return true;
    },
  );
});

test('layers and configs of a type that is not an image are refused, naming the type', () => {
  assert.throws(
    () => compressionOf('application/vnd.example.unknown', 'layer y'),
    (err: Error) => err.name === 'InvalidArgumentError' && /layer y: unsupported layer media type "application\/vnd.example.unknown"/.test(err.message),
  );
  // Suffixes alone do not make a layer.
  assert.throws(() => compressionOf('application/vnd.example.unknown.tar', 'l'), /unsupported layer media type/);
  assert.throws(() => compressionOf('application/vnd.example+gzip', 'l'), /unsupported layer media type/);
  assert.throws(() => compressionOf('', 'l'), /unsupported layer media type ""/);
  const manifest = (configType: string) =>
    parseManifest(json({ schemaVersion: 2, config: { mediaType: configType, digest: d('a'), size: 1 }, layers: [] }), 'm');
  checkConfigMediaType(manifest(MediaType.ociConfig), 'm');
  checkConfigMediaType(manifest(MediaType.dockerConfig), 'm');
  assert.throws(
    () => checkConfigMediaType(manifest('application/vnd.cncf.helm.config.v1+json'), 'manifest z'),
    (err: Error) =>
      err.name === 'InvalidArgumentError' && /manifest z: unsupported config media type "application\/vnd.cncf.helm.config.v1\+json"/.test(err.message),
  );
});

test('media type comes from the document when the registry sends a generic one', () => {
  const manifest = { schemaVersion: 2, config: { digest: d('a'), size: 1 }, layers: [] };
  assert.equal(detectMediaType(json(manifest), 'application/json', 'm'), MediaType.ociManifest);
  assert.equal(detectMediaType(json({ ...manifest, mediaType: MediaType.dockerManifest }), 'application/json', 'm'), MediaType.dockerManifest);
  assert.equal(detectMediaType(json({ schemaVersion: 2, manifests: [] }), 'application/json', 'm'), MediaType.ociIndex);
  assert.throws(() => detectMediaType(json({ schemaVersion: 1, fsLayers: [] }), 'application/json', 'm'), /schema 1/);
});

test('manifests with malformed descriptors are refused', () => {
  assert.throws(() => parseManifest(json({ config: { digest: 'md5:abc', size: 1 }, layers: [] }), 'm'), /invalid digest/);
  assert.throws(() => parseManifest(json({ config: { digest: d('a') }, layers: [] }), 'm'), /size/);
  assert.throws(() => parseManifest(Buffer.from('{'), 'm'), /not valid JSON/);
  assert.throws(() => parseConfig(json({ architecture: 'amd64' }), 'c'), /diff_ids/);
});

test('chain IDs follow the OCI image-spec definition', () => {
  const diffs = [d('a'), d('b'), d('c')];
  const chains = chainIds(diffs, sha);
  assert.equal(chains[0], d('a'));
  assert.equal(chains[1], `sha256:${sha(`${d('a')} ${d('b')}`)}`);
  assert.equal(chains[2], `sha256:${sha(`${chains[1]} ${d('c')}`)}`);
});

test('layer compression from OCI and Docker media types', () => {
  assert.equal(compressionOf('application/vnd.oci.image.layer.v1.tar+gzip', 'l'), 'gzip');
  assert.equal(compressionOf('application/vnd.docker.image.rootfs.diff.tar.gzip', 'l'), 'gzip');
  assert.equal(compressionOf('application/vnd.oci.image.layer.v1.tar+zstd', 'l'), 'zstd');
  assert.equal(compressionOf('application/vnd.oci.image.layer.v1.tar', 'l'), 'none');
  assert.equal(compressionOf('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'l'), 'gzip');
  assert.equal(compressionOf('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'l'), 'gzip');
  assert.throws(() => compressionOf('application/x-bzip2', 'layer x'), /layer x: unsupported layer media type/);
});
