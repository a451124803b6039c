import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn as nodeSpawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import type { Readable } from 'node:stream';
import { type Child, spawnProcess } from '../../src/sys/spawn';

const SH = '/bin/sh';

interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}

function collect(stream: Readable | null): () => string {
  const chunks: Buffer[] = [];
  stream?.on('data', (c: Buffer) => chunks.push(c));
  return () => Buffer.concat(chunks).toString('utf8');
}

function ended(child: Child): Promise<Ended> {
  const out = collect(child.stdout);
  const err = collect(child.stderr);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal, out: out(), err: err() }));
  });
}

test('stdout, stderr and the exit code come back, with the environment given', async () => {
  const child = spawnProcess(SH, ['-c', 'echo "out $GREETING"; echo err >&2; exit 7'], {
    env: { GREETING: 'hello', PATH: '/usr/bin:/bin' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  assert.ok(child.pid && child.pid > 0);
  const r = await ended(child);
  assert.deepEqual(r, { code: 7, signal: null, out: 'out hello\n', err: 'err\n' });
});

test('stdin is written and closed, and the child sees its end', async () => {
  const child = spawnProcess('/bin/cat', [], { stdio: ['pipe', 'pipe', 'ignore'] });
  assert.ok(child.stdin, 'a stdin pipe');
  child.stdin.end('a line\nand more');
  const r = await ended(child);
  assert.equal(r.code, 0);
  assert.equal(r.out, 'a line\nand more');
});

test('a killed child reports its signal, and a second kill after the exit is refused', async () => {
  const child = spawnProcess(SH, ['-c', 'echo ready; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const stdout = child.stdout;
  assert.ok(stdout, 'a stdout pipe');
  await new Promise<void>((resolve) => stdout.once('data', () => resolve()));
  assert.equal(child.kill('SIGTERM'), true);
  const r = await ended(child);
  assert.equal(r.code, null);
  assert.equal(r.signal, 'SIGTERM');
  assert.equal(child.kill('SIGKILL'), false, 'the pid may belong to someone else once reaped');
});

test('a program that does not exist is an error event with ENOENT, not a throw', async () => {
  const child = spawnProcess('/nonexistent/tscri-no-such-binary', ['x'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => child.once('error', resolve));
  assert.equal(err.code, 'ENOENT');
  assert.match(err.message, /tscri-no-such-binary/);
  assert.equal(child.pid, undefined);
});

test('a bare name is refused: there is no PATH search', async () => {
  const child = spawnProcess('sh', ['-c', 'true']);
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => child.once('error', resolve));
  assert.equal(err.code, 'ENOENT');
});

test('the child starts with no signal ignored or blocked, in the given directory, with only fds 0-2', async () => {
  // Node ignores SIGPIPE and SIGXFSZ, and glibc's posix_spawn would ignore its internal signals
  // 32 and 33 in the child unless told otherwise; an ignored signal survives exec.
  const dir = fs.mkdtempSync(`${os.tmpdir()}/tscri-spawn-`);
  try {
    const child = spawnProcess(SH, ['-c', 'grep -E "^Sig(Ign|Blk)" /proc/self/status; pwd; ls /proc/$$/fd'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const r = await ended(child);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n');
    assert.deepEqual(lines.slice(0, 2).sort(), ['SigBlk:\t0000000000000000', 'SigIgn:\t0000000000000000']);
    assert.equal(lines[2], fs.realpathSync(dir));
    // The shell's own descriptors: its three stdio fds, plus 10 or so it may keep for itself.
    const fds = lines
      .slice(3)
      .map(Number)
      .filter((n) => n > 2 && n < 10);
    assert.deepEqual(fds, [], `descriptors leaked into the child: ${lines.slice(3).join(' ')}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('detached puts the child in its own session', async () => {
  const child = spawnProcess(SH, ['-c', 'cat /proc/self/stat'], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
  const r = await ended(child);
  // Fields after "(comm)": state ppid pgrp session …
  const [, , pgrp, session] = r.out.slice(r.out.lastIndexOf(')') + 2).split(' ');
  assert.equal(Number(session), child.pid);
  assert.equal(Number(pgrp), child.pid);
});

test('extra descriptors beyond stdio reach the child as numbered', async () => {
  const child = spawnProcess(SH, ['-c', 'echo three >&3; read line <&4; echo "got $line"'], {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
  });
  const three = collect(child.stdio[3]);
  const four = child.stdio[4];
  assert.ok(four, 'a pipe on descriptor 4');
  four.end('four\n');
  const r = await ended(child);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, 'got four\n');
  assert.equal(three(), 'three\n');
});

test('children of node:child_process and of spawnProcess are each reaped by their own owner', async () => {
  const theirs = new Promise<number | null>((resolve) => nodeSpawn(SH, ['-c', 'sleep 0.2; exit 3']).once('exit', (code) => resolve(code)));
  const ours = Array.from({ length: 5 }, (_, i) => ended(spawnProcess(SH, ['-c', `sleep 0.1; exit ${i}`])));
  assert.deepEqual(
    (await Promise.all(ours)).map((r) => r.code),
    [0, 1, 2, 3, 4],
  );
  assert.equal(await theirs, 3);
});
