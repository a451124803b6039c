// A process's start time as the daemon reads it back from /proc after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { processStartTimeMs } from '../../src/oci/proc';

test('processStartTimeMs is precise to the clock tick, not to the second of the boot time', () => {
  for (let i = 0; i < 3; i++) {
    const before = Date.now();
    const child = spawn('sleep', ['10'], { stdio: 'ignore' });
    const after = Date.now();
    try {
      assert.ok(child.pid !== undefined, 'sleep was spawned');
      const started = processStartTimeMs(child.pid);
      assert.ok(started !== undefined, `a start time for the live process ${child.pid}`);
      // One tick (10 ms) of rounding down, and the same again for the two clocks' reads.
      assert.ok(
        started >= before - 20 && started <= after + 20,
        `process ${child.pid} started between ${before} and ${after}; /proc says ${started} (${started - before} ms from the spawn)`,
      );
    } finally {
      child.kill('SIGKILL');
    }
  }
  assert.equal(processStartTimeMs(2 ** 22 + 1), undefined, 'no start time for a pid that cannot exist');
});
