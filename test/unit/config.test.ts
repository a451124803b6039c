import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultConfig, loadConfig, parseDuration } from '../../src/config';

test('defaults work with no file and no flags', () => {
  const cfg = loadConfig(['--config', '/dev/null']);
  assert.deepEqual(cfg, defaultConfig());
  assert.equal(cfg.listen, 'unix:///run/tscri/tscri.sock');
});

test('flags override the file, the file overrides defaults', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tscri-config-'));
  try {
    const file = path.join(dir, 'config.toml');
    writeFileSync(
      file,
      'root = "/from/file"\nstate = "/state/file"\ninsecure_registries = ["reg:5000"]\nmax_concurrent_downloads = 5\nimage_pull_progress_timeout = "30s"\n',
    );
    const cfg = loadConfig(['--config', file, '--root', '/from/flag', '--listen', 'unix:///tmp/x.sock']);
    assert.equal(cfg.root, '/from/flag');
    assert.equal(cfg.state, '/state/file');
    assert.equal(cfg.listen, 'unix:///tmp/x.sock');
    assert.deepEqual(cfg.insecureRegistries, ['reg:5000']);
    assert.equal(cfg.maxConcurrentDownloads, 5);
    assert.equal(cfg.imagePullProgressTimeoutMs, 30_000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad input names the file and the key', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tscri-config-'));
  try {
    const file = path.join(dir, 'config.toml');
    writeFileSync(file, 'max_concurrent_downloads = 0\n');
    assert.throws(() => loadConfig(['--config', file]), new RegExp(`${file}: max_concurrent_downloads`));
    writeFileSync(file, 'root = [\n');
    assert.throws(() => loadConfig(['--config', file]), new RegExp(`config file ${file}`));
    assert.throws(() => loadConfig(['--config', '/dev/null', '--listen', 'tcp://0.0.0.0:1']), /only unix:\/\//);
    assert.throws(() => loadConfig(['--bogus']), /bogus/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('durations', () => {
  assert.equal(parseDuration('250ms', 'x'), 250);
  assert.equal(parseDuration('2m', 'x'), 120_000);
  assert.equal(parseDuration(5, 'x'), 5000);
  assert.throws(() => parseDuration('soon', 'image_pull_progress_timeout'), /image_pull_progress_timeout/);
});
