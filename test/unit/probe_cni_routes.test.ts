// tscri check says when the host already routes part of the pod subnet through another
// device: the pods on it would be ready and yet not all reachable from this host.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultConfig } from '../../src/config';
import { probeCni } from '../../src/host/probe_cni';

// A bridge with no ports: this kernel has no dummy links, and its route is there all the same.
const DUMMY = 'tscri-ovl0';

test('a pod subnet that overlaps a route on another device fails the cni finding, naming both', async (t) => {
  const confDir = fs.mkdtempSync(path.join(os.tmpdir(), 'probe-cni-'));
  t.after(() => {
    spawnSync('ip', ['link', 'del', DUMMY], { stdio: 'ignore' });
    fs.rmSync(confDir, { recursive: true, force: true });
  });
  // No conflist: the built-in network, on a subnet nothing else here uses.
  const cfg = {
    ...defaultConfig(),
    cniConfDir: confDir,
    cniBinDirs: ['/usr/lib/cni', '/opt/cni/bin'],
    cniDefaultBridge: 'tscri-ovlbr0',
    cniDefaultSubnet: '10.69.0.0/16',
  };
  const before = await probeCni(cfg);
  assert.equal(before.ok, true, `nothing overlaps yet: ${before.detail}`);

  execFileSync('ip', ['link', 'add', DUMMY, 'type', 'bridge']);
  execFileSync('ip', ['addr', 'add', '10.69.5.1/24', 'dev', DUMMY]);
  execFileSync('ip', ['link', 'set', DUMMY, 'up']);
  const after = await probeCni(cfg);
  assert.equal(after.ok, false);
  assert.match(after.detail, /pod subnet 10\.69\.0\.0\/16 overlaps the route to 10\.69\.5\.0\/24 on tscri-ovl0/);
});
