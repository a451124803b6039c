import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { validateVolumes } from '../../src/container/volumes';
import { InvalidArgumentError, NotFoundError } from '../../src/errors';
import type { Mount__Output } from '../../src/gen/runtime/v1/Mount';
import { recursiveReadOnlySupported, resolveInRoot } from '../../src/snapshot/volume_mounts';
import { tempDir } from '../helpers/unit';

function mount(over: Partial<Mount__Output>): Mount__Output {
  return {
    container_path: '/x',
    host_path: '/src',
    readonly: true,
    selinux_relabel: false,
    propagation: 'PROPAGATION_PRIVATE',
    uidMappings: [],
    gidMappings: [],
    recursive_read_only: false,
    image: null,
    image_sub_path: '',
    ...over,
  };
}

const image = { image: 'sha256:' + 'a'.repeat(64), annotations: {}, user_specified_image: '', runtime_handler: '', image_ref: '' };

test('image sub paths resolve inside the image root and never out of it', async () => {
  const root = tempDir('tscri-subpath-');
  fs.mkdirSync(path.join(root, 'data/nested'), { recursive: true });
  fs.writeFileSync(path.join(root, 'data/file'), '');
  fs.symlinkSync('data/nested', path.join(root, 'inside'));
  fs.symlinkSync('../nested', path.join(root, 'data/nested/loop-up'));
  fs.symlinkSync('../../..', path.join(root, 'up'));
  fs.symlinkSync('/etc', path.join(root, 'abs'));
  fs.symlinkSync('loop', path.join(root, 'loop'));
  assert.equal(await resolveInRoot(root, 'data/nested'), path.join(root, 'data/nested'));
  assert.equal(await resolveInRoot(root, './data//nested/'), path.join(root, 'data/nested'));
  assert.equal(await resolveInRoot(root, 'inside'), path.join(root, 'data/nested'));
  assert.equal(await resolveInRoot(root, 'data/nested/loop-up'), path.join(root, 'data/nested'));
  assert.equal(await resolveInRoot(root, 'data/../data/nested'), path.join(root, 'data/nested'));
  for (const escaping of ['..', '../x', 'data/../../x', '/data', 'up', 'abs', 'inside/../../..']) {
    await assert.rejects(resolveInRoot(root, escaping), InvalidArgumentError, `sub path ${escaping}`);
  }
  await assert.rejects(resolveInRoot(root, 'loop'), /too many symbolic links/);
  await assert.rejects(resolveInRoot(root, 'data/missing'), NotFoundError);
  await assert.rejects(resolveInRoot(root, 'data/file/below'), NotFoundError);
  await assert.rejects(resolveInRoot(root, 'data/file'), /is not a directory/);
});

test('the CRI rules for rro mounts and image volumes', () => {
  const ok = [mount({ recursive_read_only: true }), mount({ host_path: '', image }), mount({ host_path: '', image, image_sub_path: 'a/b' })];
  validateVolumes(ok, 'c');
  const bad: [string, Mount__Output][] = [
    ['rro without readonly', mount({ recursive_read_only: true, readonly: false })],
    ['rro with rslave', mount({ recursive_read_only: true, propagation: 'PROPAGATION_HOST_TO_CONTAINER' })],
    ['rro with rshared', mount({ recursive_read_only: true, propagation: 'PROPAGATION_BIDIRECTIONAL' })],
    ['image with a host path', mount({ image })],
    ['image not readonly', mount({ host_path: '', image, readonly: false })],
    ['image without a name', mount({ host_path: '', image: { ...image, image: '' } })],
    ['sub path without image', mount({ image_sub_path: 'a' })],
  ];
  for (const [what, m] of bad) assert.throws(() => validateVolumes([m], 'c'), InvalidArgumentError, what);
});

test('rro is reported from Linux 5.12 on', () => {
  assert.equal(recursiveReadOnlySupported('5.11.22'), false);
  assert.equal(recursiveReadOnlySupported('5.12.0'), process.arch === 'x64');
  assert.equal(recursiveReadOnlySupported('6.18.0-1-amd64'), process.arch === 'x64');
  assert.equal(recursiveReadOnlySupported('garbage'), false);
});
