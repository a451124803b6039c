import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { JsonStore } from '../../src/store/json_store';
import { tempDir } from '../helpers/unit';

interface Doc {
  n: number;
  pad: string;
}

test('puts and removals of one id land in the order asked, each with the document as it was', async () => {
  for (const syncDir of [true, false]) {
    const dir = tempDir('tscri-store-');
    const store = new JsonStore<Doc>(dir, { syncDir });
    await store.init();
    const doc: Doc = { n: 0, pad: '' };
    const writes: Promise<void>[] = [];
    // Sizes that shrink as n grows: a later write has less to do and would finish first.
    for (let n = 1; n <= 40; n++) {
      doc.n = n;
      doc.pad = 'x'.repeat((41 - n) * 2000);
      writes.push(store.put('a', doc));
    }
    doc.n = 999;
    await Promise.all(writes);
    assert.equal((await store.loadAll())[0]?.n, 40, `the last put wins, not a late earlier one nor a later change (syncDir ${syncDir})`);

    const removed = store.delete('a');
    const again = store.put('a', { n: 41, pad: '' });
    const gone = store.delete('a');
    await Promise.all([removed, again, gone]);
    assert.deepEqual(await store.loadAll(), [], 'put then delete, asked at once: deleted');
    assert.deepEqual(fs.readdirSync(dir), [], 'no temporary files left');
  }
});
