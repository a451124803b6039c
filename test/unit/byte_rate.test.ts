import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultConfig, parseByteRate } from '../../src/config';

test('image_pull_min_throughput: byte rates with binary and decimal units, a few KiB/s by default', () => {
  assert.equal(parseByteRate('4KiB/s', 'x'), 4096);
  assert.equal(parseByteRate('1MB/s', 'x'), 1_000_000);
  assert.equal(parseByteRate('512B/s', 'x'), 512);
  assert.equal(parseByteRate('2 kib', 'x'), 2048);
  assert.equal(parseByteRate('0', 'x'), 0);
  assert.equal(parseByteRate(100, 'x'), 100);
  assert.throws(() => parseByteRate('fast', 'image_pull_min_throughput'), /image_pull_min_throughput: invalid byte rate "fast"/);
  assert.throws(() => parseByteRate(-1, 'x'), /invalid byte rate/);
  assert.equal(defaultConfig().imagePullMinThroughput, 4096);
});
