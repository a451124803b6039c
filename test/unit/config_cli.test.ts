// The configuration table as an operator meets it: the file's keys, the flags, --help and
// `tscri config`, all of which come from src/config_options.ts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse as parseToml } from 'smol-toml';
import { configText } from '../../src/cli/config';
import { helpText } from '../../src/cli/help';
import { defaultConfig, loadConfig, parseCommandLine, type Config } from '../../src/config';
import { formatDuration, OPTIONS, parseDuration } from '../../src/config_options';
import { repoRoot } from '../helpers/cri';
import { tempDir } from '../helpers/unit';

const mainJs = path.join(repoRoot(), 'dist', 'src', 'main.js');

function tscri(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [mainJs, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A value other than the default for every option, as a flag would give it. */
const NOT_DEFAULT: Record<string, string> = {
  listen: 'unix:///tmp/other.sock',
  root: '/srv/tscri root',
  state: '/run/other',
  'registry-config-dir': '/etc/other/certs.d',
  'insecure-registries': 'reg.example:5000,10.0.0.1:5000',
  'pinned-images': 'registry.k8s.io/pause:3.9',
  'max-concurrent-downloads': '7',
  'image-pull-progress-timeout': '90s',
  'image-pull-min-throughput': '16KiB/s',
  'metrics-listen': '',
  'streaming-address': '0.0.0.0:10010',
  'log-level': 'debug',
  'cgroup-driver': 'systemd',
  'cni-conf-dir': '/etc/other/net.d',
  'cni-bin-dirs': '/usr/libexec/cni',
  'cni-default-subnet': '10.88.0.0/16',
  'cni-default-bridge': 'cni-x',
  'default-runtime': 'kata',
  conmon: '/usr/local/bin/conmon',
  'restrict-oom-score-adj': 'false',
  'stats-cache-period': '2500ms',
  runtimes: 'kata=/opt/kata/bin/kata-runtime,runc=/usr/sbin/runc,my.handler="q"=/x',
};

test('every option has a flag made from its key, and the test covers each', () => {
  assert.deepEqual(OPTIONS.map((o) => o.flag).sort(), Object.keys(NOT_DEFAULT).sort());
  for (const o of OPTIONS) assert.equal(o.flag, o.key.replace(/_/g, '-'));
});

test('tscri config round-trips: its output, read back with --config, is the same configuration', () => {
  const dir = tempDir('tscri-config-');
  const flags = Object.entries(NOT_DEFAULT).flatMap(([f, v]) => [`--${f}`, v]);
  const cfg = loadConfig(['--config', '/dev/null', ...flags]);
  for (const o of OPTIONS) assert.notDeepEqual(cfg[o.field], defaultConfig()[o.field], `${o.key} should differ from its default`);
  const file = path.join(dir, 'config.toml');
  writeFileSync(file, configText(cfg));
  assert.deepEqual(loadConfig(['--config', file]), cfg);
  // And again through the real command: the text a user would redirect into /etc/tscri.
  const out = tscri('config', '--config', file);
  assert.equal(out.status, 0, out.stderr);
  writeFileSync(file, out.stdout);
  assert.deepEqual(loadConfig(['--config', file]), cfg);
});

test('tscri config with no file prints the defaults', () => {
  const cfg = loadConfig(['--config', '/dev/null']);
  const dir = tempDir('tscri-config-');
  const file = path.join(dir, 'config.toml');
  writeFileSync(file, configText(cfg));
  assert.deepEqual(loadConfig(['--config', file]), defaultConfig());
});

test('manifests/config.toml holds every key, at its default', () => {
  const file = path.join(repoRoot(), 'manifests', 'config.toml');
  const doc = parseToml(readFileSync(file, 'utf8'));
  assert.deepEqual(Object.keys(doc).sort(), OPTIONS.map((o) => o.key).sort());
  assert.deepEqual(loadConfig(['--config', file]), defaultConfig());
});

test('an unknown key is an error naming the key and the file', () => {
  const dir = tempDir('tscri-config-');
  const file = path.join(dir, 'config.toml');
  writeFileSync(file, 'log_levle = "debug"\n');
  assert.throws(
    () => loadConfig(['--config', file]),
    (err: Error) => err.message.includes(file) && err.message.includes('"log_levle"'),
  );
  writeFileSync(file, '[runtimes.runc]\npath = "/usr/sbin/runc"\n');
  assert.throws(
    () => loadConfig(['--config', file]),
    (err: Error) => err.message.includes(file) && err.message.includes('runtimes.runc'),
  );
  writeFileSync(file, '[runtime]\nrunc = "runc"\n');
  assert.throws(() => loadConfig(['--config', file]), /unknown key "runtime"/);
  // The command exits 2 and says so on stderr, before serving anything.
  writeFileSync(file, 'log_levle = "debug"\n');
  const r = tscri('--config', file, '--listen', `unix://${path.join(dir, 'never.sock')}`);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /log_levle/);
});

test('bad values name the key (file) or the flag', () => {
  const dir = tempDir('tscri-config-');
  const file = path.join(dir, 'config.toml');
  writeFileSync(file, 'restrict_oom_score_adj = "sometimes"\n');
  assert.throws(() => loadConfig(['--config', file]), /restrict_oom_score_adj/);
  writeFileSync(file, 'cgroup_driver = "cgroups"\n');
  assert.throws(() => loadConfig(['--config', file]), new RegExp(`${file}: cgroup_driver`));
  assert.throws(() => loadConfig(['--config', '/dev/null', '--max-concurrent-downloads', 'x']), /--max-concurrent-downloads/);
  assert.throws(() => loadConfig(['--config', '/dev/null', '--runtimes', 'runc']), /--runtimes/);
  assert.throws(() => parseCommandLine(['serve']), /unknown command "serve"/);
});

test('--help lists every flag with its config key and default; each is accepted', () => {
  const help = helpText();
  for (const o of OPTIONS) {
    const def = o.codec.toFlag(o.default as never);
    const at = help.indexOf(`  --${o.flag} `);
    assert.ok(at >= 0, `--${o.flag} missing from --help`);
    const block = help.slice(at, help.indexOf('\n  --', at + 1));
    assert.ok(block.includes(`config key: ${o.key};`), `--${o.flag}: no config key in ${block}`);
    assert.ok(block.includes(`default: ${def === '' ? '(empty)' : def}`), `--${o.flag}: no default in ${block}`);
    const cl = parseCommandLine([`--${o.flag}`, NOT_DEFAULT[o.flag]]);
    assert.equal(cl.values[o.flag], NOT_DEFAULT[o.flag]);
  }
  // Every flag --help names is one the parser takes (nothing listed that does not exist).
  for (const [, flag] of help.matchAll(/^ {2}--([a-z-]+)/gm)) {
    assert.ok(flag === 'config' || flag === 'help' || flag === 'version' || OPTIONS.some((o) => o.flag === flag), `--help names --${flag}`);
  }
  const r = tscri('--help');
  assert.equal(r.status, 0);
  assert.equal(r.stdout, help);
});

test('--version prints package.json version', () => {
  const pkg = JSON.parse(readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-v']) {
    const r = tscri(flag);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^tscri ${pkg.version.replace(/\./g, '\\.')}\n`));
  }
  const bad = tscri('--bogus');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /bogus/);
});

test('durations format back to what they parse from', () => {
  for (const ms of [250, 1000, 30_000, 60_000, 90_000, 3_600_000, 0, 1500]) assert.equal(parseDuration(formatDuration(ms), 'x'), ms);
  assert.equal(formatDuration(60_000), '1m');
});

// Keeps Config imported as a type only where the compiler checks it.
export type { Config };
