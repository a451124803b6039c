import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import {
  MediaType,
  chainIds,
  detectMediaType,
  parseConfig,
  parseIndex,
  parseManifest,
  selectPlatform,
} from '../../src/image/manifest';
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
  assert.throws(() => compressionOf('application/x-bzip2', 'layer x'), /layer x: unsupported layer media type/);
});
