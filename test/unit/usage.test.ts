import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { dirUsage } from '../../src/container/usage';

test('dirUsage: every entry below the dir, hard links once, blocks as du counts them', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-usage-'));
  try {
    fs.mkdirSync(path.join(dir, 'a/b/c'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'a/one'), Buffer.alloc(100_000, 1));
    fs.writeFileSync(path.join(dir, 'a/b/c/two'), 'x');
    fs.linkSync(path.join(dir, 'a/one'), path.join(dir, 'a/b/one-again'));
    fs.symlinkSync('one', path.join(dir, 'a/link'));
    const u = await dirUsage(dir);
    // a, a/b, a/b/c, a/one, a/b/c/two, a/link (the hard link counted once)
    assert.equal(u.inodes, 6);
    let blocks = 0;
    for (const p of ['a', 'a/b', 'a/b/c', 'a/one', 'a/b/c/two', 'a/link']) blocks += fs.lstatSync(path.join(dir, p)).blocks * 512;
    assert.equal(u.bytes, blocks);
    assert.equal(await dirUsage(dir), u, 'cached');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('dirUsage: many dirs at once, and a dir too big for one turn of the loop, all finish', async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-usage-many-'));
  try {
    const big = path.join(base, 'big');
    fs.mkdirSync(big);
    for (let i = 0; i < 5000; i++) fs.writeFileSync(path.join(big, `f${i}`), '');
    const small = Array.from({ length: 50 }, (_, i) => {
      const d = path.join(base, `s${i}`);
      fs.mkdirSync(path.join(d, 'x'), { recursive: true });
      return d;
    });
    let turns = 0;
    const ticker = setInterval(() => turns++, 0);
    const [b, ...s] = await Promise.all([dirUsage(big), ...small.map((d) => dirUsage(d))]);
    clearInterval(ticker);
    assert.equal(b.inodes, 5000);
    assert.ok(s.every((u) => u.inodes === 1));
    assert.equal((await dirUsage(path.join(base, 'missing'))).inodes, 0);
    assert.ok(turns >= 1, 'timers ran while the walk went on');
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});
