import { test } from 'node:test';
import assert from 'node:assert/strict';
import { settleAll } from '../../src/util/settle';

const after = <T>(ms: number, v: T): Promise<T> => new Promise((r) => setTimeout(() => r(v), ms));
const failAfter = (ms: number, msg: string): Promise<never> => new Promise((_, j) => setTimeout(() => j(new Error(msg)), ms));

test('settleAll gives every value, in order', async () => {
  assert.deepEqual(await settleAll(after(20, 'a'), after(1, 2)), ['a', 2]);
});

test('settleAll throws the first failure in argument order, only once everything settled', async () => {
  let slowDone = false;
  const slow = after(60, 0).then(() => (slowDone = true));
  await assert.rejects(settleAll(slow, failAfter(30, 'second'), failAfter(1, 'third')), /second/);
  assert.equal(slowDone, true, 'a failure does not end the wait while another step runs');
});
