import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../src/errors';
import { formatReference, isDigest, isImageId, manifestReference, parseReference, repository, withDigest, withTag } from '../../src/image/reference';

const D = `sha256:${'a1'.repeat(32)}`;

test('normalises references the way docker and containerd do', () => {
  const cases: Array<[string, string]> = [
    ['busybox', 'docker.io/library/busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest'],
    ['foo/bar', 'docker.io/foo/bar:latest'],
    ['foo/bar/baz:v1', 'docker.io/foo/bar/baz:v1'],
    ['docker.io/busybox', 'docker.io/library/busybox:latest'],
    ['index.docker.io/busybox', 'docker.io/library/busybox:latest'],
    ['index.docker.io/foo/bar:x', 'docker.io/foo/bar:x'],
    ['docker.io/library/busybox:latest', 'docker.io/library/busybox:latest'],
    ['localhost/x', 'localhost/x:latest'],
    ['localhost:5000/x', 'localhost:5000/x:latest'],
    ['127.0.0.1:5000/x:tag', '127.0.0.1:5000/x:tag'],
    ['127.0.0.1:5000/a/b/c', '127.0.0.1:5000/a/b/c:latest'],
    ['[::1]:5000/x:t', '[::1]:5000/x:t'],
    ['registry.k8s.io/e2e-test-images/busybox:1.29-2', 'registry.k8s.io/e2e-test-images/busybox:1.29-2'],
    ['registry.k8s.io/pause:3.9', 'registry.k8s.io/pause:3.9'],
    ['quay.io/a_b/c__d/e-f--g.h:T_a.g-1', 'quay.io/a_b/c__d/e-f--g.h:T_a.g-1'],
    ['Registry.Example.COM/x', 'registry.example.com/x:latest'],
    [`busybox@${D}`, `docker.io/library/busybox@${D}`],
    [`busybox:1.36@${D}`, `docker.io/library/busybox:1.36@${D}`],
    [`localhost:5000/x@${D}`, `localhost:5000/x@${D}`],
  ];
  for (const [input, want] of cases) {
    assert.equal(formatReference(parseReference(input)), want, `parseReference(${JSON.stringify(input)})`);
  }
});

test('splits domain, path, tag and digest', () => {
  assert.deepEqual(parseReference('127.0.0.1:5000/team/app:v2'), {
    domain: '127.0.0.1:5000',
    path: 'team/app',
    tag: 'v2',
  });
  assert.deepEqual(parseReference(`busybox:1.36@${D}`), {
    domain: 'docker.io',
    path: 'library/busybox',
    tag: '1.36',
    digest: D,
  });
  const byDigest = parseReference(`busybox@${D}`);
  assert.equal(byDigest.tag, undefined, 'a digest-only reference gets no default tag');
  assert.equal(byDigest.digest, D);
});

test('the first component is a domain only with a dot, a colon, or localhost', () => {
  assert.equal(parseReference('foo/bar').domain, 'docker.io');
  assert.equal(parseReference('foo.com/bar').domain, 'foo.com');
  assert.equal(parseReference('foo:5000/bar').domain, 'foo:5000');
  assert.equal(parseReference('localhost/bar').domain, 'localhost');
  assert.equal(parseReference('localhostx/bar').domain, 'docker.io');
  // A port-looking suffix without a slash is a tag, not a port.
  assert.deepEqual(parseReference('foo:5000'), { domain: 'docker.io', path: 'library/foo', tag: '5000' });
});

test('rejects malformed references with the input in the message', () => {
  const bad = [
    '',
    ' busybox',
    'Busybox',
    'foo/Bar',
    'UPPER.example.com/Foo',
    'busybox:',
    'busybox:-tag',
    `busybox:${'t'.repeat(129)}`,
    'busybox:ta@g',
    'busybox@sha256:abc',
    `busybox@sha256:${'A1'.repeat(32)}`,
    `busybox@sha512:${'ab'.repeat(64)}`,
    `busybox@md5:${'ab'.repeat(16)}`,
    'foo//bar',
    'foo/bar/',
    '/foo',
    'foo_/bar',
    'foo/-bar',
    'foo/bar..baz',
    'foo/bar___baz',
    'example.com:port/x',
    '-example.com/x',
    'example.com/',
    ':tag',
    '@' + D,
    'a'.repeat(64),
    `example.com/${'a/'.repeat(130)}b`,
  ];
  for (const input of bad) {
    assert.throws(
      () => parseReference(input),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, `${JSON.stringify(input)}: expected InvalidArgumentError, got ${String(err)}`);
        assert.ok(err.message.includes(`"${input}"`), `message should quote the input: ${err.message}`);
        return true;
      },
      `parseReference(${JSON.stringify(input)}) should throw`,
    );
  }
});

test('unsupported digest algorithms are named in the error', () => {
  assert.throws(() => parseReference(`busybox@sha512:${'ab'.repeat(64)}`), /unsupported digest algorithm "sha512"/);
});

test('image ids are recognised, bare or prefixed, and are not references', () => {
  const hex = 'ab'.repeat(32);
  assert.equal(isImageId(hex), true);
  assert.equal(isImageId(`sha256:${hex}`), true);
  assert.equal(isImageId('busybox'), false);
  assert.equal(isImageId(hex.slice(1)), false);
  assert.equal(isImageId(hex.toUpperCase()), false);
  assert.throws(() => parseReference(hex), /image id/);
  // 63 hex characters is an ordinary (if odd) repository name.
  assert.equal(parseReference(hex.slice(1)).path, `library/${hex.slice(1)}`);
  assert.equal(isDigest(D), true);
  assert.equal(isDigest(hex), false);
});

test('helpers: repository, withTag, withDigest, manifestReference', () => {
  const r = parseReference(`127.0.0.1:5000/x:v1@${D}`);
  assert.equal(repository(r), '127.0.0.1:5000/x');
  assert.equal(formatReference(withTag(r, 'v2')), '127.0.0.1:5000/x:v2');
  assert.equal(formatReference(withDigest(r, D)), `127.0.0.1:5000/x@${D}`);
  assert.equal(manifestReference(r), D, 'the digest wins over the tag');
  assert.equal(manifestReference(parseReference('x:v3')), 'v3');
  assert.throws(() => withTag(r, 'bad tag'), InvalidArgumentError);
  assert.throws(() => withDigest(r, 'sha256:zz'), InvalidArgumentError);
});
