#!/usr/bin/env node
// Runs the compiled unit and end-to-end tests (npm test builds first).
// Usage: node test/run.js [--unit] [extra node --test flags…]
//   --unit  only the unit tests: no root, no Debian packages needed.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const repo = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const passThrough = args.filter((a) => a !== '--unit');

// What the e2e tests run, and the Debian package that provides it.
const prerequisites = [
  { pkg: 'docker-registry', present: () => fs.existsSync('/usr/bin/docker-registry') },
  { pkg: 'busybox-static', present: () => dpkgInstalled('busybox-static') },
  { pkg: 'zstd', present: () => onPath('zstd') },
  { pkg: 'openssl', present: () => onPath('openssl') },
  { pkg: 'attr', present: () => onPath('getfattr') },
  // The node's real components that pods and containers run on.
  { pkg: 'runc', present: () => fs.existsSync('/usr/sbin/runc') || onPath('runc') },
  { pkg: 'conmon', present: () => onPath('conmon') },
  { pkg: 'containernetworking-plugins', present: () => fs.existsSync('/usr/lib/cni/bridge') || fs.existsSync('/opt/cni/bin/bridge') },
  { pkg: 'iptables', present: () => fs.existsSync('/usr/sbin/iptables') || onPath('iptables') },
  { pkg: 'iproute2', present: () => fs.existsSync('/usr/sbin/ip') || fs.existsSync('/bin/ip') || onPath('ip') },
  { pkg: 'util-linux', present: () => onPath('unshare') && onPath('nsenter') },
  // systemd-analyze verify checks manifests/tscri.service.
  { pkg: 'systemd', present: () => onPath('systemd-analyze') },
];

function onPath(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function dpkgInstalled(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

/** Installs missing packages; returns the names still missing afterwards. */
function ensurePrerequisites() {
  let missing = prerequisites.filter((p) => !p.present());
  if (missing.length === 0) return [];
  const names = missing.map((p) => p.pkg);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    console.error(`test/run.js: missing ${names.join(', ')} and not root, so not installing them`);
    return names;
  }
  console.error(`test/run.js: installing ${names.join(', ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // The package lists are refreshed only when something must be installed: apt-get update is
  // slow, and a test run that needs nothing should not touch the network.
  const update = spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
  if (update.status !== 0) console.error('test/run.js: apt-get update failed; trying the install anyway');
  spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...names], { stdio: 'inherit', env });
  missing = prerequisites.filter((p) => !p.present());
  return missing.map((p) => p.pkg);
}

function testFiles(dir) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...testFiles(full));
    else if (entry.isFile() && entry.name.endsWith('.test.js')) out.push(full);
  }
  return out.sort();
}

function main() {
  const files = testFiles(path.join(repo, 'dist', 'test', 'unit'));
  let stillMissing = [];
  if (!unitOnly) {
    stillMissing = ensurePrerequisites();
    if (stillMissing.length === 0) {
      files.push(...testFiles(path.join(repo, 'dist', 'test', 'e2e')));
    } else {
      console.error(`test/run.js: skipping the e2e tests, missing: ${stillMissing.join(', ')}`);
    }
  }
  if (files.length === 0) {
    console.error('test/run.js: no compiled tests under dist/test; run `npm run build` first');
    return 1;
  }
  const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...passThrough, ...files], {
    cwd: repo,
    stdio: 'inherit',
  });
  if (r.error) {
    console.error(`test/run.js: cannot run node --test: ${r.error.message}`);
    return 1;
  }
  const code = r.status ?? 1;
  // Skipped e2e tests must not read as a green run.
  return code === 0 && stillMissing.length > 0 ? 1 : code;
}

process.exit(main());
