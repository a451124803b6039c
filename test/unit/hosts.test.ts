import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FailedPreconditionError } from '../../src/errors';
import { isLocalhost, loadRegistryEndpoints } from '../../src/image/registry/hosts';

const made: string[] = [];
after(() => {
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

function tempConfig(files: Record<string, string>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-hosts-'));
  made.push(root);
  for (const [rel, text] of Object.entries(files)) {
    const p = path.join(root, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, text);
  }
  return root;
}

const summary = (eps: Awaited<ReturnType<typeof loadRegistryEndpoints>>) =>
  eps.map((e) => ({ url: e.url, caps: [...e.capabilities].sort().join(','), mirror: e.isMirror }));

test('no configuration: the default upstream, https unless local or insecure', async () => {
  const dir = tempConfig({});
  assert.deepEqual(summary(await loadRegistryEndpoints(dir, 'docker.io', [])), [
    { url: 'https://registry-1.docker.io/v2', caps: 'pull,push,resolve', mirror: false },
  ]);
  assert.equal((await loadRegistryEndpoints(dir, 'registry.k8s.io', []))[0].url, 'https://registry.k8s.io/v2');
  assert.equal((await loadRegistryEndpoints(dir, '127.0.0.1:5000', []))[0].url, 'http://127.0.0.1:5000/v2');
  assert.equal((await loadRegistryEndpoints(dir, 'localhost:5000', []))[0].url, 'http://localhost:5000/v2');
  assert.equal((await loadRegistryEndpoints(dir, '[::1]:5000', []))[0].url, 'http://[::1]:5000/v2');
  assert.equal((await loadRegistryEndpoints(dir, 'reg.lan:5000', ['reg.lan:5000']))[0].url, 'http://reg.lan:5000/v2');
  assert.equal((await loadRegistryEndpoints(dir, 'reg.lan:5000', []))[0].url, 'https://reg.lan:5000/v2');
  assert.equal((await loadRegistryEndpoints('', 'quay.io', []))[0].url, 'https://quay.io/v2');
  assert.equal((await loadRegistryEndpoints(path.join(dir, 'missing'), 'quay.io', []))[0].url, 'https://quay.io/v2');
});

test("the lab's hosts.toml: a local server that is also a pull/resolve mirror", async () => {
  const dir = tempConfig({
    'docker.io/hosts.toml': ['server = "http://127.0.0.1:5000"', '', '[host."http://127.0.0.1:5000"]', '  capabilities = ["pull", "resolve"]', ''].join('\n'),
  });
  // The server repeats the mirror's URL: it is tried once, as the mirror.
  assert.deepEqual(summary(await loadRegistryEndpoints(dir, 'docker.io', [])), [{ url: 'http://127.0.0.1:5000/v2', caps: 'pull,resolve', mirror: true }]);
});

test('mirrors keep file order, with per-host settings, before the server', async () => {
  const dir = tempConfig({
    'registry.k8s.io/hosts.toml': `
server = "https://registry.k8s.io"
skip_verify = false

[host."https://zz-mirror.example.com"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "certs/zz.pem"
  [host."https://zz-mirror.example.com".header]
    x-custom = "1"
    x-multi = ["a", "b"]

[host."https://aa-mirror.example.com/prefix/"]
  capabilities = ["pull", "resolve"]
  ca = ["/abs/ca1.pem", "rel/ca2.pem"]
  client = [["c.cert", "c.key"]]

[host."mm.example.com:8443"]
`,
  });
  const eps = await loadRegistryEndpoints(dir, 'registry.k8s.io', []);
  assert.deepEqual(summary(eps), [
    { url: 'https://zz-mirror.example.com/v2', caps: 'pull', mirror: true },
    { url: 'https://aa-mirror.example.com/prefix/v2', caps: 'pull,resolve', mirror: true },
    { url: 'https://mm.example.com:8443/v2', caps: 'pull,push,resolve', mirror: true },
    { url: 'https://registry.k8s.io/v2', caps: 'pull,push,resolve', mirror: false },
  ]);
  const hostDir = path.join(dir, 'registry.k8s.io');
  assert.equal(eps[0].skipVerify, true);
  assert.deepEqual(eps[0].ca, [path.join(hostDir, 'certs/zz.pem')]);
  assert.deepEqual(eps[0].headers, { 'x-custom': ['1'], 'x-multi': ['a', 'b'] });
  assert.deepEqual(eps[1].ca, ['/abs/ca1.pem', path.join(hostDir, 'rel/ca2.pem')]);
  assert.deepEqual(eps[1].clientCerts, [{ cert: path.join(hostDir, 'c.cert'), key: path.join(hostDir, 'c.key') }]);
  assert.equal(eps[1].skipVerify, false);
  assert.deepEqual(eps[3].headers, {});
});

test('override_path keeps the URL path as written; otherwise /v2 is appended once', async () => {
  const dir = tempConfig({
    'example.com/hosts.toml': `
server = "https://example.com/custom/api"
override_path = true

[host."https://m1.example.com/v2"]
[host."https://m2.example.com/registry/v2/"]
[host."https://m3.example.com/artifactory/api/docker/v2/remote"]
  override_path = true
`,
  });
  assert.deepEqual(
    (await loadRegistryEndpoints(dir, 'example.com', [])).map((e) => e.url),
    [
      'https://m1.example.com/v2',
      'https://m2.example.com/registry/v2',
      'https://m3.example.com/artifactory/api/docker/v2/remote',
      'https://example.com/custom/api',
    ],
  );
});

test('a file without server uses the default upstream; top-level settings apply to it', async () => {
  const dir = tempConfig({
    'docker.io/hosts.toml': `
capabilities = ["pull", "resolve"]
[host."http://127.0.0.1:5001"]
`,
    'reg.lan:5000/hosts.toml': 'skip_verify = true\n',
  });
  assert.deepEqual(summary(await loadRegistryEndpoints(dir, 'docker.io', [])), [
    { url: 'http://127.0.0.1:5001/v2', caps: 'pull,push,resolve', mirror: true },
    { url: 'https://registry-1.docker.io/v2', caps: 'pull,resolve', mirror: false },
  ]);
  const [ep] = await loadRegistryEndpoints(dir, 'reg.lan:5000', []);
  assert.equal(ep.url, 'https://reg.lan:5000/v2');
  assert.equal(ep.skipVerify, true);
});

test('_default applies to hosts without a directory; host_port_ spelling is found first', async () => {
  const dir = tempConfig({
    '_default/hosts.toml': '[host."http://127.0.0.1:6000"]\n  capabilities = ["pull", "resolve"]\n',
    'reg.lan_5000_/hosts.toml': 'server = "http://10.0.0.1:5000"\n',
    'reg.lan:5000/hosts.toml': 'server = "http://10.0.0.2:5000"\n',
  });
  assert.deepEqual(
    (await loadRegistryEndpoints(dir, 'quay.io', [])).map((e) => e.url),
    ['http://127.0.0.1:6000/v2', 'https://quay.io/v2'],
  );
  assert.deepEqual(
    (await loadRegistryEndpoints(dir, 'reg.lan:5000', [])).map((e) => e.url),
    ['http://10.0.0.1:5000/v2'],
  );
});

test('several roots separated by ":" are searched in order', async () => {
  const a = tempConfig({});
  const b = tempConfig({ 'ghcr.io/hosts.toml': 'server = "https://ghcr-mirror.example.com"\n' });
  assert.deepEqual(
    (await loadRegistryEndpoints(`${a}:${b}`, 'ghcr.io', [])).map((e) => e.url),
    ['https://ghcr-mirror.example.com/v2'],
  );
});

test('a host directory without hosts.toml is read as a docker certs.d directory', async () => {
  const dir = tempConfig({
    'reg.example.com/ca.crt': 'PEM',
    'reg.example.com/client.cert': 'PEM',
    'reg.example.com/client.key': 'PEM',
  });
  const [ep] = await loadRegistryEndpoints(dir, 'reg.example.com', []);
  const hostDir = path.join(dir, 'reg.example.com');
  assert.equal(ep.url, 'https://reg.example.com/v2');
  assert.deepEqual(ep.ca, [path.join(hostDir, 'ca.crt')]);
  assert.deepEqual(ep.clientCerts, [{ cert: path.join(hostDir, 'client.cert'), key: path.join(hostDir, 'client.key') }]);
});

test('a broken hosts.toml is an error that names the file', async () => {
  const cases: Record<string, RegExp> = {
    'server = "http://127.0.0.1:5000\n': /TOML parse error/,
    'server = 5000\n': /server must be a string/,
    '[host."http://m"]\n capabilities = ["pull", "fly"]\n': /unknown capability "fly"/,
    '[host."http://m"]\n skip_verify = "yes"\n': /skip_verify must be a boolean/,
    '[host."http://m"]\n header = { a = 1 }\n': /header "a" must be a string or a list/,
    'server = "ftp://example.com"\n': /must be http or https/,
  };
  for (const [text, want] of Object.entries(cases)) {
    const dir = tempConfig({ 'example.com/hosts.toml': text });
    const file = path.join(dir, 'example.com', 'hosts.toml');
    await assert.rejects(loadRegistryEndpoints(dir, 'example.com', []), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError, `${JSON.stringify(text)}: got ${String(err)}`);
      assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`);
      assert.match(err.message, want);
      return true;
    });
  }
});

test('isLocalhost', () => {
  for (const h of ['localhost', 'localhost:5000', '127.0.0.1', '127.0.0.1:5000', '127.1.2.3:80', '[::1]', '[::1]:5000']) {
    assert.equal(isLocalhost(h), true, h);
  }
  for (const h of ['example.com', '10.0.0.1:5000', 'localhost.example.com', '[::2]:5000']) {
    assert.equal(isLocalhost(h), false, h);
  }
});
