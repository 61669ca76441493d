// Local D1 data survives a restart of the collector (as with `make dev`), and so does
// deduplication: a retry after the restart is answered `duplicate` and stored once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCollector, WRITE_KEY } from './harness.mjs';

const send = (url, batch) => fetch(`${url}/v1/batch`, {
  method: 'POST', headers: { 'content-type': 'text/plain' },
  body: JSON.stringify({ writeKey: WRITE_KEY, batch }),
}).then((r) => r.json());

test('events and dedup survive a collector restart', async (t) => {
  const state = mkdtempSync(join(tmpdir(), 'sightline-persist-'));
  t.after(() => rmSync(state, { recursive: true, force: true }));
  const event = { type: 'track', messageId: 'persist-1', anonymousId: 'p-1', event: 'Before Restart' };

  const first = await startCollector({ state });
  try {
    assert.deepEqual((await send(first.url, [event])).results.map((r) => r.status), ['accepted']);
  } finally {
    await first.stop();
  }

  const second = await startCollector({ state });
  try {
    const rows = await second.query(`select event from events where message_id = 'persist-1'`);
    assert.deepEqual(rows, [{ event: 'Before Restart' }]);
    assert.deepEqual((await send(second.url, [event])).results.map((r) => r.status), ['duplicate']);
    const n = await second.query(`select count(*) as n from events where message_id = 'persist-1'`);
    assert.equal(n[0].n, 1);
  } finally {
    await second.stop();
  }
});
