import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ImageFileCache } from '../../src/container/image_files';
import { tempDir } from '../helpers/unit';

function rootfsWith(passwd: string): string {
  const root = tempDir('tscri-imgfiles-');
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(path.join(root, 'etc/passwd'), passwd);
  return root;
}

/** A mount that failed: a reader that needs it rejects instead of reading. */
function notMounted(): Promise<void> {
  const p = Promise.reject(new Error('rootfs not mounted (test)'));
  p.catch(() => undefined);
  return p;
}

test("an image's account files are read from the first container's rootfs once it is mounted, then known", async () => {
  const cache = new ImageFileCache();
  const first = tempDir('tscri-imgfiles-');
  let mount!: () => void;
  const mounted = new Promise<void>((r) => (mount = r));
  const reading = cache.reader('sha256:a', first, mounted)('/etc/passwd');
  // Only the mount makes the files appear: a read before it would see none.
  fs.mkdirSync(path.join(first, 'etc'));
  fs.writeFileSync(path.join(first, 'etc/passwd'), 'root:x:0:0::/:/bin/sh\n');
  mount();
  assert.equal(await reading, 'root:x:0:0::/:/bin/sh\n');

  // A second container of the image needs neither its mount nor its own files.
  const other = rootfsWith('someone-else:x:1:1::/:/bin/sh\n');
  assert.equal(await cache.reader('sha256:a', other, notMounted())('/etc/passwd'), 'root:x:0:0::/:/bin/sh\n');
  // Another image reads its own; a missing file is null, and null is known too.
  assert.equal(await cache.reader('sha256:b', other, Promise.resolve())('/etc/passwd'), 'someone-else:x:1:1::/:/bin/sh\n');
  assert.equal(await cache.reader('sha256:b', other, Promise.resolve())('/etc/group'), null);
  assert.equal(await cache.reader('sha256:b', other, notMounted())('/etc/group'), null);
});

test('a read that failed with its container is not kept: the next container reads its own rootfs', async () => {
  const cache = new ImageFileCache();
  await assert.rejects(cache.reader('sha256:c', tempDir('tscri-imgfiles-'), notMounted())('/etc/passwd'), /not mounted/);
  const good = rootfsWith('app:x:100:100::/:/bin/sh\n');
  assert.equal(await cache.reader('sha256:c', good, Promise.resolve())('/etc/passwd'), 'app:x:100:100::/:/bin/sh\n');
});
