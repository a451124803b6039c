// A streaming exec whose runtime binary cannot be started must fail that exec with the reason,
// not leave an 'error' event without a listener, which would end the whole daemon.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import pino from 'pino';
import { ExecStartError, runExec } from '../../src/streaming/exec';
import type { RemoteIO } from '../../src/streaming/remotecommand';

test('a runtime binary that cannot be started fails the exec with ExecStartError, and nothing is left unhandled', async () => {
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => {
    uncaught.push(err);
  };
  process.on('uncaughtException', onUncaught);
  try {
    const io: RemoteIO = {
      protocol: 'v4.channel.k8s.io',
      stdout: new PassThrough(),
      stderr: new PassThrough(),
      resize: new EventEmitter(),
      gone: new Promise<void>(() => undefined),
      firstSize: () => Promise.resolve(undefined),
      finish: () => Promise.resolve(),
    };
    const target = { id: 'c1', bundle: '/nonexistent', socketDir: '/tmp', runtime: { binary: '/nonexistent/runc', globalArgs: ['--root=/nonexistent'] } };
    await assert.rejects(runExec(target, ['true'], io, false, pino({ level: 'silent' })), (err: unknown) => {
      assert.ok(err instanceof ExecStartError, `an ExecStartError, saw ${String(err)}`);
      assert.match(err.message, /cannot run \/nonexistent\/runc/);
      return true;
    });
    // The spawn failure is reported on a later tick: give it one.
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(uncaught, []);
  } finally {
    process.off('uncaughtException', onUncaught);
  }
});
