// Local D1 data survives a restart of the collector (as with `make dev`), and so do
// deduplication (a retry after the restart is answered `duplicate` and stored once) and
// the identity graph. A quarantined event is replayed after its plan is fixed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startCollector, WRITE_KEY, TEST_SOURCES, STATE_ROOT } from './harness.mjs';

const send = (url, batch, writeKey = WRITE_KEY) => fetch(`${url}/v1/batch`, {
  method: 'POST', headers: { 'content-type': 'text/plain' },
  body: JSON.stringify({ writeKey, batch }),
}).then((r) => r.json());

test('events and dedup survive a collector restart', async (t) => {
  mkdirSync(STATE_ROOT, { recursive: true });
  const state = mkdtempSync(join(STATE_ROOT, 'sightline-persist-'));
  const event = { type: 'track', messageId: 'persist-1', anonymousId: 'p-1', event: 'Before Restart' };

  const first = await startCollector({ state });
  let profileId;
  try {
    const r = await send(first.url, [event]);
    assert.deepEqual(r.results.map((v) => v.status), ['accepted']);
    profileId = r.results[0].profileId;
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
    const next = await send(second.url, [{ ...event, messageId: 'persist-2' }]);
    assert.equal(next.results[0].profileId, profileId, 'the identity graph survives too');
  } finally {
    await second.stop();
  }
});

test('a quarantined event is replayed once its plan is fixed', async (t) => {
  mkdirSync(STATE_ROOT, { recursive: true });
  const state = mkdtempSync(join(STATE_ROOT, 'sightline-replay-'));
  const strict = { version: '1', events: { 'Trial Started': { properties: { type: 'object', required: ['plan'] } } } };
  const fixed = { version: '2', events: { 'Trial Started': { properties: { type: 'object' } } } };
  const sources = (plan) => ({ ...TEST_SOURCES, sl_replay_key: { name: 'replay', consent: 'opt-out', plan } });
  const event = { type: 'track', messageId: 'replay-1', anonymousId: 'r-1', event: 'Trial Started', properties: {} };

  const first = await startCollector({ state, sources: sources(strict) });
  let id;
  try {
    const r = await send(first.url, [event], 'sl_replay_key');
    assert.equal(r.results[0].reasons[0].kind, 'missing_required');
    id = (await first.adminJson('/admin/v1/quarantine?writeKey=sl_replay_key')).quarantine[0].id;
    // Replayed under the same plan, it is quarantined again: one row, today's reasons.
    const again = await first.adminJson('/admin/v1/quarantine/replay', { method: 'POST', body: JSON.stringify({ ids: [id] }) });
    assert.equal(again.replayed[0].status, 'quarantined');
    const rows = (await first.adminJson('/admin/v1/quarantine?writeKey=sl_replay_key')).quarantine;
    assert.equal(rows.length, 1);
    id = rows[0].id;
  } finally {
    await first.stop();
  }

  const second = await startCollector({ state, sources: sources(fixed) });
  try {
    const r = await second.adminJson('/admin/v1/quarantine/replay', { method: 'POST', body: JSON.stringify({ ids: [id] }) });
    assert.deepEqual(r.replayed.map((x) => x.status), ['accepted']);
    assert.equal((await second.adminJson('/admin/v1/quarantine?writeKey=sl_replay_key')).quarantine.length, 0);
    const stored = await second.query(`select event from events where message_id = 'replay-1'`);
    assert.deepEqual(stored, [{ event: 'Trial Started' }]);
  } finally {
    await second.stop();
  }
});
