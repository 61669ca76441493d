// A source whose identity shard count changed has two graphs (`identity_layouts`
// records each count it used): an erasure reaches the graph of the old count too, and
// the events only that graph tied to the person; a person not seen since the change is
// found in the old graph and erased there, and a merge the old graph made is undone in
// it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startCollector, WRITE_KEY } from './harness.mjs';

const sha256 = (s) => createHash('sha256').update(s).digest('hex');
let seq = 0;
const mid = (p) => `${p}-${Date.now()}-${++seq}`;
let collector;
after(async () => { await collector?.dispose(); });

async function send(batch) {
  const r = await fetch(`${collector.url}/v1/batch`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain' },
    body: JSON.stringify({ writeKey: WRITE_KEY, batch }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  return body;
}
const ev = (anon, extra = {}) => ({ type: 'track', messageId: mid('lay'), anonymousId: anon, event: 'Video Played', ...extra });
const login = (anon, email) => ev(anon, { event: 'Newsletter Subscribed', properties: { email_sha256: email, source: 'footer' } });
const profileBy = (anon) => collector.admin(`/admin/v1/profiles?writeKey=${WRITE_KEY}&anonymousId=${anon}`);

test('after the identity shard count changed, erasure reaches the graph of the old count', async () => {
  const email = sha256('layout.person@example.com');
  const other = sha256('layout.neighbour@example.com');
  collector = await startCollector({ vars: { IDENTITY_SHARDS: '1' } });
  const state = collector.stateDir;
  // One object: the person on two devices, joined by her email; a neighbour.
  const before = await send([login('lay-laptop', email)]);
  await send([ev('lay-phone')]);
  const joined = await send([login('lay-phone', email)]);
  assert.equal(joined.results[0].profileId, before.results[0].profileId);
  await send([login('lay-neighbour', other)]);
  // Someone not seen again after the change.
  const gone = sha256('layout.gone@example.com');
  const ghost = await send([login('lay-ghost', gone)]);
  // Another, whose desktop the old graph merged into her tablet's profile, wrongly.
  const shared = sha256('layout.shared@example.com');
  const tablet = await send([login('lay-tablet', shared)]);
  const desk = await send([ev('lay-desk')]);
  const merged = await send([login('lay-desk', shared)]);
  assert.equal(merged.results[0].profileId, tablet.results[0].profileId, 'merged in the old graph');
  await collector.stop();

  // Four shards: another graph, where the laptop comes back.
  collector = await startCollector({ state, vars: { IDENTITY_SHARDS: '4' } });
  const now = await send([login('lay-laptop', email)]);
  const person = now.results[0].profileId;
  assert.notEqual(person, before.results[0].profileId, 'a new graph');
  const phone = await (await profileBy('lay-phone')).json();
  assert.equal(phone.earlierLayout, 1, 'the new graph never saw the phone: found in the old one');
  // The wrong merge is undone in the old graph, where it was made: the desktop gets its
  // own profile back there, and its events follow it.
  const undone = await collector.adminJson(`/admin/v1/profiles/${tablet.results[0].profileId}/unmerge?writeKey=${WRITE_KEY}`, { method: 'POST', body: '{}' });
  assert.equal(undone.earlierLayout, 1, JSON.stringify(undone));
  assert.equal(undone.unmerged.restored.id, desk.results[0].profileId);
  assert.equal(undone.eventsMoved, 2, 'the desktop\'s two events');
  const deskRows = await collector.query(`select distinct profile_id as p from events where anonymous_id = 'lay-desk'`);
  assert.deepEqual(deskRows.map((r) => r.p), [desk.results[0].profileId]);
  const deskNow = await (await profileBy('lay-desk')).json();
  assert.equal(deskNow.profile.id, desk.results[0].profileId);
  assert.equal(deskNow.earlierLayout, 1);
  const tabletNow = await (await profileBy('lay-tablet')).json();
  assert.ok(!tabletNow.profile.identifiers.some((i) => i.value === 'lay-desk'), JSON.stringify(tabletNow.profile));
  const layouts = await collector.query(`select shards from identity_layouts where write_key = '${WRITE_KEY}' order by shards`);
  assert.deepEqual(layouts.map((l) => l.shards), [1, 4]);

  const { erased } = await collector.adminJson(`/admin/v1/profiles/${person}?writeKey=${WRITE_KEY}`, { method: 'DELETE' });
  assert.ok(erased.profiles.includes(person) && erased.profiles.includes(before.results[0].profileId), JSON.stringify(erased));
  // The phone was tied to her by the old graph alone: its events go too.
  assert.deepEqual(await collector.query(`select anonymous_id from events where anonymous_id in ('lay-laptop', 'lay-phone')`), []);
  assert.equal((await collector.query(`select count(*) as n from events where anonymous_id = 'lay-neighbour'`))[0].n, 1);

  // The person seen only before the change is found in the old graph, and erased there.
  const found = await collector.adminJson(`/admin/v1/profiles?writeKey=${WRITE_KEY}&email_sha256=${gone}`);
  assert.equal(found.profile.id, ghost.results[0].profileId);
  assert.equal(found.earlierLayout, 1);
  const current = await collector.adminJson(`/admin/v1/profiles/${person}?writeKey=${WRITE_KEY}`).catch((e) => e);
  assert.match(String(current), /404/, 'the erased person is gone from the current graph');
  const ghostErased = await collector.adminJson(`/admin/v1/profiles/${found.profile.id}?writeKey=${WRITE_KEY}`, { method: 'DELETE' });
  assert.deepEqual(ghostErased.erased.profiles, [found.profile.id]);
  assert.equal((await collector.query(`select count(*) as n from events where anonymous_id = 'lay-ghost'`))[0].n, 0);
  await collector.stop();

  // Back on one object: its graph holds nothing of her, and the neighbour whole.
  collector = await startCollector({ state, vars: { IDENTITY_SHARDS: '1' } });
  for (const anon of ['lay-laptop', 'lay-phone', 'lay-ghost']) assert.equal((await profileBy(anon)).status, 404, anon);
  const r = await profileBy('lay-neighbour');
  assert.equal(r.status, 200);
  assert.ok((await r.json()).profile.identifiers.some((i) => i.value === other));
});
