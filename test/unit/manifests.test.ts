// The files in manifests/ agree with tscri and with each other: the socket they name is the
// one tscri serves by default, and each kubelet-side cgroup driver is the one the matching
// tscri configuration sets (they must agree, or the kubelet's pod cgroups are not where
// tscri puts containers).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { defaultConfig, loadConfig } from '../../src/config';
import { repoRoot } from '../helpers/cri';

const dir = path.join(repoRoot(), 'manifests');
const read = (name: string): string => fs.readFileSync(path.join(dir, name), 'utf8');

/** `key: value` lines of a YAML file (quotes dropped), enough for these flat manifests. */
function yamlValues(text: string, key: string): string[] {
  return [...text.matchAll(new RegExp(`^\\s*(?:- )?${key}:\\s*"?([^"\\s#]+)"?`, 'gm'))].map((m) => m[1]);
}

test('every CRI endpoint named in manifests/ is the socket tscri serves by default', () => {
  const listen = defaultConfig().listen;
  let seen = 0;
  for (const name of fs.readdirSync(dir).filter((n) => /\.ya?ml$/.test(n))) {
    for (const endpoint of read(name).match(/unix:\/\/[^\s`"')]+/g) ?? []) {
      assert.equal(endpoint, listen, `${name} names ${endpoint}`);
      seen++;
    }
  }
  assert.ok(seen >= 7, `expected the socket in crictl, kubelet, kubeadm and k3s files, saw ${seen}`);
  assert.deepEqual(yamlValues(read('kubeadm-init.yaml'), 'criSocket'), [listen]);
  assert.deepEqual(yamlValues(read('kubeadm-join.yaml'), 'criSocket'), [listen]);
  assert.deepEqual(yamlValues(read('k3s-config.yaml'), 'container-runtime-endpoint'), [listen]);
});

test("the kubelet's cgroup driver matches tscri's in each pairing", () => {
  // Defaults: kubelet-config.yaml beside tscri's defaults.
  assert.deepEqual(yamlValues(read('kubelet-config.yaml'), 'cgroupDriver'), [defaultConfig().cgroupDriver]);
  assert.deepEqual(yamlValues(read('kubelet-config.yaml'), 'cgroupsPerQOS'), ['true']);
  // A cgroup v2 + systemd node: kubeadm and k3s beside config-systemd-node.toml.
  const systemdNode = loadConfig(['--config', path.join(dir, 'config-systemd-node.toml')]);
  assert.equal(systemdNode.cgroupDriver, 'systemd');
  assert.deepEqual(yamlValues(read('kubeadm-init.yaml'), 'cgroupDriver'), [systemdNode.cgroupDriver]);
  assert.deepEqual(yamlValues(read('kubeadm-init.yaml'), 'cgroupsPerQOS'), ['true']);
  assert.ok(read('k3s-config.yaml').includes(`"cgroup-driver=${systemdNode.cgroupDriver}"`));
});

test('each RuntimeClass handler is a runtime tscri configures by default', () => {
  for (const handler of yamlValues(read('runtimeclass.yaml'), 'handler')) {
    assert.ok(handler in defaultConfig().runtimes, `RuntimeClass handler ${handler} is not in [runtimes]`);
  }
});
