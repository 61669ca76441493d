// The collector in workerd (wrangler dev) with local D1, Durable Objects, Queues and R2:
// every endpoint and error, CORS, gzip, rate limits, dedup conflicts, consent, the
// stitching scenarios, unmerge, erasure, stats, the R2 path, the first-party cookie, and
// a real Segment server library pointed at the collector.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { Analytics } from '@segment/analytics-node';
import { startCollector, startBrowser, eventually, WRITE_KEY, ALLOWED_ORIGIN } from './harness.mjs';

let collector;
// `identity-shards.test.mjs` runs this file again with the identity graph over shards.
const SHARDS = process.env.E2E_IDENTITY_SHARDS;
before(async () => {
  const vars = { D1_LIMIT_BYTES: '100000', ...(SHARDS ? { IDENTITY_SHARDS: SHARDS } : {}) };
  collector = await startCollector({ vars });
});
after(async () => { await collector?.dispose(); });

const sha256 = (s) => createHash('sha256').update(s).digest('hex');
let seq = 0;
const mid = (p) => `${p}-${Date.now()}-${++seq}`;
const GRANTED = { categoryPreferences: { analytics: true, marketing: true, personalization: true } };

function post(path, body, headers = {}) {
  return fetch(`${collector.url}${path}`, {
    method: 'POST',
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
    headers: { 'content-type': 'text/plain', ...headers },
  });
}
async function send(batch, key = WRITE_KEY, headers = {}) {
  const r = await post('/v1/batch', { writeKey: key, batch }, headers);
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  return body;
}

test('every Segment endpoint and short form accepts its message type', async () => {
  const base = { anonymousId: 'ep-anon', userId: 'ep-user' };
  const cases = [
    ['/v1/track', { event: 'Video Played' }], ['/v1/t', { event: 'Video Played' }],
    ['/v1/page', { name: 'Home' }], ['/v1/p', {}],
    ['/v1/identify', { traits: { plan: 'pro' } }], ['/v1/i', {}],
    ['/v1/alias', { previousId: 'ep-anon' }], ['/v1/a', { previousId: 'ep-anon' }],
    ['/v1/group', { groupId: 'g1' }], ['/v1/g', { groupId: 'g1' }],
    ['/v1/screen', { name: 'Settings' }], ['/v1/s', { name: 'Settings' }],
  ];
  for (const [path, extra] of cases) {
    const r = await post(path, { writeKey: WRITE_KEY, messageId: mid('ep'), ...base, ...extra });
    const body = await r.json();
    assert.equal(r.status, 200, path);
    assert.equal(body.accepted, 1, `${path}: ${JSON.stringify(body)}`);
  }
  for (const path of ['/v1/batch', '/v1/b', '/v1/import']) {
    const body = await (await post(path, { writeKey: WRITE_KEY, batch: [{ type: 'page', messageId: mid('b'), ...base }] })).json();
    assert.equal(body.accepted, 1, path);
  }
  const types = await collector.query(
    `select type, count(*) as n from events where anonymous_id = 'ep-anon' group by type order by type`);
  assert.deepEqual(types.map((t) => [t.type, t.n]),
    [['alias', 2], ['group', 2], ['identify', 2], ['page', 5], ['screen', 2], ['track', 2]]);
});

test('request errors: each is a 4xx with a JSON code; CORS only for configured origins', async () => {
  const basic = (k) => 'Basic ' + Buffer.from(`${k}:`).toString('base64');
  const cases = [
    [post('/v1/batch', '{nope'), 400, 'invalid_json'],
    [post('/v1/batch', { batch: [] }), 401, 'missing_write_key'],
    [post('/v1/batch', { batch: [] }, { authorization: basic('nope') }), 401, 'unknown_write_key'],
    [post('/v1/batch', { writeKey: WRITE_KEY, batch: [] }, { origin: 'https://evil.example' }), 403, 'origin_not_allowed'],
    [post('/v1/batch', 'x'.repeat(600 * 1024)), 413, 'batch_too_large'],
    [post('/v1/batch', '{}', { 'content-encoding': 'br' }), 415, 'unsupported_encoding'],
    [fetch(`${collector.url}/v1/batch`), 405, 'method_not_allowed'],
    [post('/v1/nothing', '{}'), 404, 'not_found'],
  ];
  for (const [pending, status, code] of cases) {
    const r = await pending;
    assert.equal(r.status, status, code);
    assert.equal((await r.json()).error.code, code);
  }
  // A configured origin may send, and its preflight is answered.
  const ok = await post('/v1/batch', { writeKey: WRITE_KEY, batch: [] }, { origin: ALLOWED_ORIGIN });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
  const pre = await fetch(`${collector.url}/v1/batch`, { method: 'OPTIONS', headers: { origin: ALLOWED_ORIGIN } });
  assert.equal(pre.status, 204);
  assert.match(pre.headers.get('access-control-allow-methods'), /POST/);
  const evil = await fetch(`${collector.url}/v1/batch`, { method: 'OPTIONS', headers: { origin: 'https://evil.example' } });
  assert.equal(evil.headers.get('access-control-allow-origin'), null);

  // 429 with Retry-After once a key is over its rate (sl_limited_key: 5 events/s).
  const burst = Array.from({ length: 10 }, () => ({ type: 'track', messageId: mid('rl'), anonymousId: 'rl', event: 'Burst' }));
  assert.equal((await post('/v1/batch', { writeKey: 'sl_limited_key', batch: burst })).status, 200);
  const limited = await post('/v1/batch', { writeKey: 'sl_limited_key', batch: burst });
  assert.equal(limited.status, 429);
  assert.equal((await limited.json()).error.code, 'rate_limited');
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);
});

test('gzip bodies from server libraries are accepted', async () => {
  const id = mid('gz');
  const body = gzipSync(JSON.stringify({ writeKey: WRITE_KEY, batch: [{ type: 'track', messageId: id, anonymousId: 'gz', event: 'Zipped' }] }));
  const r = await post('/v1/batch', new Uint8Array(body), { 'content-encoding': 'gzip', 'content-type': 'application/json' });
  const json = await r.json();
  assert.equal(r.status, 200, JSON.stringify(json));
  assert.equal(json.accepted, 1);
  assert.equal((await collector.query(`select count(*) as n from events where message_id = '${id}'`))[0].n, 1);
});

test('plan violations and reused messageIds are quarantined with reasons; raw PII is hashed', async () => {
  const id = mid('plan');
  const body = await send([
    { type: 'track', messageId: id, anonymousId: 'q-1', event: 'Product Added', properties: { product_id: 'bad', price: -1, currency: 'EUR' } },
    { type: 'identify', messageId: mid('pii'), anonymousId: 'q-1', traits: { email: 'Q.Person@Example.com', note: 'ring +44 20 7946 0958' } },
  ]);
  assert.equal(body.results[0].status, 'quarantined');
  assert.deepEqual(body.results[0].reasons.map((r) => r.kind).sort(), ['out_of_range', 'pattern_mismatch']);
  assert.equal(body.results[1].status, 'accepted');
  assert.deepEqual(body.results[1].warnings.map((w) => w.path), ['$.traits.email', '$.traits.note']);
  const q = await collector.adminJson('/admin/v1/quarantine?reason=out_of_range');
  const held = q.quarantine.find((x) => x.messageId === id);
  assert.deepEqual(JSON.parse(held.payload).properties, { product_id: 'bad', price: -1, currency: 'EUR' },
    'the full payload is kept for fixing and replay');
  const raw = await collector.query(`select payload from events where anonymous_id = 'q-1'`);
  // The raw values are gone from the traits (the whole payload holds generated ids, in
  // which four digits like 7946 can occur by chance).
  const traits = JSON.stringify(JSON.parse(raw[0].payload).traits);
  assert.ok(!raw[0].payload.includes('Example.com') && !traits.includes('7946') && !traits.includes('0958'), traits);
  assert.equal(JSON.parse(raw[0].payload).traits.email, sha256('q.person@example.com'));

  // The same messageId with other content: a conflict, recorded, never merged.
  const first = { type: 'track', messageId: mid('conf'), anonymousId: 'c-1', event: 'Video Played', properties: { n: 1 } };
  assert.equal((await send([first])).results[0].status, 'accepted');
  assert.equal((await send([first])).results[0].status, 'duplicate');
  const other = await send([{ ...first, properties: { n: 2 } }]);
  assert.equal(other.results[0].reasons[0].kind, 'message_id_conflict');
  const stored = await collector.query(`select payload from events where message_id = '${first.messageId}'`);
  assert.equal(stored.length, 1);
  assert.equal(JSON.parse(stored[0].payload).properties.n, 1);
});

test('consent: opt-in fails closed, GPC denies marketing, the consent log keeps every choice', async () => {
  const anon = 'consent-anon-1';
  const page = { url: 'https://shop.example/?utm_source=News&gclid=G-1' };
  const body = await send([
    { type: 'track', messageId: mid('c'), anonymousId: anon, event: 'Video Played' },
    { type: 'track', messageId: mid('c'), anonymousId: anon, event: 'Consent Updated',
      context: { consent: { categoryPreferences: { analytics: false }, source: 'banner' } } },
  ], 'sl_optin_key');
  assert.deepEqual(body.results.map((r) => r.status), ['refused', 'refused']);
  assert.equal(body.results[0].reasons[0].kind, 'consent_denied');
  assert.equal((await collector.query(`select count(*) as n from events where anonymous_id = '${anon}'`))[0].n, 0);
  assert.equal((await collector.query(`select count(*) as n from quarantine where anonymous_id = '${anon}'`))[0].n, 0);

  const granted = await send([
    { type: 'track', messageId: mid('c'), anonymousId: anon, event: 'Consent Updated', context: { consent: { ...GRANTED, source: 'banner' }, page } },
    { type: 'page', messageId: mid('c'), anonymousId: anon, context: { consent: GRANTED, page } },
  ], 'sl_optin_key', { 'sec-gpc': '1' });
  assert.deepEqual(granted.results.map((r) => r.status), ['accepted', 'accepted']);
  const rows = await collector.query(`select payload from events where anonymous_id = '${anon}' and type = 'page'`);
  const ctx = JSON.parse(rows[0].payload).context;
  assert.equal(ctx.consent.enforced.marketing, false, 'GPC denies marketing');
  assert.equal(ctx.consent.enforced.analytics, true);
  assert.equal(ctx.clickIds, undefined, 'click ids need marketing consent');
  assert.equal(ctx.campaign.source, 'news');

  const log = (await collector.adminJson(`/admin/v1/consent?anonymousId=${anon}`)).consent;
  assert.equal(log.length, 2);
  assert.deepEqual(log.map((e) => JSON.parse(e.categories).analytics), [true, false]);
  assert.deepEqual(log.map((e) => e.gpc), [1, 0]);
  // Append-only: the log refuses updates.
  await assert.rejects(collector.query(`update consent_log set categories = '{}' where anonymous_id = '${anon}'`));
});

test('stitching: a multi-device journey joins; a shared device does not merge; blocked values are ignored', async () => {
  const email = sha256('journey@example.com');
  const ev = (anon, extra = {}) => ({ type: 'track', messageId: mid('s'), anonymousId: anon, event: 'Video Played', ...extra });
  // Laptop: browse, then soft login (hashed email in a planned event).
  await send([ev('laptop-1')]);
  const login = (anon) => ev(anon, { event: 'Newsletter Subscribed', properties: { email_sha256: email, source: 'footer' } });
  const a = await send([login('laptop-1')]);
  // Phone: browse, then the same soft login.
  const b0 = await send([ev('phone-1')]);
  assert.notEqual(b0.results[0].profileId, a.results[0].profileId);
  const b = await send([login('phone-1')]);
  assert.equal(b.results[0].profileId, a.results[0].profileId, 'the second device joins');
  const profileId = a.results[0].profileId;
  const p360 = await collector.adminJson('/admin/v1/profiles?anonymousId=phone-1');
  assert.equal(p360.profile.id, profileId);
  assert.equal(p360.identified, true);
  const ids = p360.profile.identifiers.map((i) => `${i.kind}:${i.value}`).sort();
  assert.deepEqual(ids, [`anonymous_id:laptop-1`, `anonymous_id:phone-1`, `email_sha256:${email}`]);
  assert.equal(p360.merges.length, 1);
  // Both devices' events, the phone's earlier anonymous one included, belong to it now.
  assert.equal(p360.events.reduce((n, e) => n + e.count, 0), 4, 'events counted from D1');
  const events = (await collector.adminJson(`/admin/v1/events?profileId=${profileId}`)).events;
  assert.deepEqual(events.map((e) => e.anonymousId).sort(), ['laptop-1', 'laptop-1', 'phone-1', 'phone-1']);

  // A shared computer: two people log in with their own userIds.
  const ann = await send([ev('kiosk-1', { type: 'identify', event: undefined, userId: 'user-ann' })]);
  const bob = await send([ev('kiosk-1', { type: 'identify', event: undefined, userId: 'user-bob' })]);
  assert.notEqual(ann.results[0].profileId, bob.results[0].profileId);
  const annProfile = await collector.adminJson(`/admin/v1/profiles/${ann.results[0].profileId}`);
  assert.deepEqual(annProfile.profile.identifiers.filter((i) => i.kind === 'user_id').map((i) => i.value), ['user-ann']);

  // Blocked values never join two visitors.
  const x = await send([ev('blk-1', { userId: 'undefined' })]);
  const y = await send([ev('blk-2', { userId: 'undefined' })]);
  assert.notEqual(x.results[0].profileId, y.results[0].profileId);
  const t1 = await send([ev('blk-3', { properties: { email_sha256: sha256('test@test.com') } })]);
  const t2 = await send([ev('blk-4', { properties: { email_sha256: sha256('test@test.com') } })]);
  assert.notEqual(t1.results[0].profileId, t2.results[0].profileId);
});

test('unmerge restores both profiles and their events', async () => {
  const email = sha256('wrong-merge@example.com');
  const ev = (anon, props) => ({ type: 'track', messageId: mid('u'), anonymousId: anon, event: 'Newsletter Subscribed', properties: props });
  const home = await send([ev('um-home', { email_sha256: email })]);
  const office = await send([ev('um-office', {}), ev('um-office', {})]);
  const homeId = home.results[0].profileId;
  const officeId = office.results[0].profileId;
  assert.notEqual(homeId, officeId);
  await send([ev('um-office', { email_sha256: email })]); // a wrong soft login joins them
  let before = await collector.adminJson(`/admin/v1/events?profileId=${homeId}`);
  assert.equal(before.events.length, 4);

  const r = await collector.adminJson(`/admin/v1/profiles/${homeId}/unmerge`, { method: 'POST', body: '{}' });
  assert.equal(r.unmerged.restored.id, officeId);
  assert.equal(r.eventsMoved, 3);
  const home2 = await collector.adminJson(`/admin/v1/profiles/${homeId}`);
  const office2 = await collector.adminJson(`/admin/v1/profiles/${officeId}`);
  assert.deepEqual(office2.profile.identifiers.map((i) => i.value), ['um-office']);
  assert.ok(home2.profile.identifiers.some((i) => i.value === 'um-home'));
  assert.ok(home2.merges[0].undoneAtMs > 0, 'the merge log says it was undone');
  assert.equal((await collector.adminJson(`/admin/v1/events?profileId=${officeId}`)).events.length, 3);
  // The office visitor's next event goes to the restored profile.
  const next = await send([ev('um-office', {})]);
  assert.equal(next.results[0].profileId, officeId);
  const again = await collector.admin(`/admin/v1/profiles/${officeId}/unmerge`, { method: 'POST' });
  assert.equal(again.status, 404);
});

test('erasure deletes the profile, its identities, events and consent entries', async () => {
  const anon = 'erase-me-1';
  const grant = { type: 'track', messageId: mid('e'), anonymousId: anon, userId: 'erase-user', event: 'Consent Updated', context: { consent: GRANTED } };
  const r = await send([grant, { type: 'page', messageId: mid('e'), anonymousId: anon, userId: 'erase-user' }]);
  const profileId = r.results[1].profileId;
  const del = await collector.adminJson(`/admin/v1/profiles/${profileId}`, { method: 'DELETE' });
  assert.equal(del.erased.deleted.events, 2);
  assert.equal(del.erased.deleted.consentEntries, 1);
  assert.deepEqual(del.erased.remains, ['dedup_entries', 'daily_counters', 'queue_tombstones', 'receipt'],
    'what remains is stated');
  assert.equal((await collector.admin(`/admin/v1/profiles/${profileId}`)).status, 404);
  assert.equal((await collector.admin(`/admin/v1/profiles?userId=erase-user`)).status, 404);
  for (const table of ['events', 'consent_log']) {
    const n = await collector.query(`select count(*) as n from ${table} where anonymous_id = '${anon}' or user_id = 'erase-user'`);
    assert.equal(n[0].n, 0, table);
  }
  // The consent log refuses deletion outside erasure, and updates always.
  const other = await send([{ ...grant, messageId: mid('e'), anonymousId: 'keep-log-1', userId: undefined }]);
  assert.equal(other.accepted, 1);
  const says = (re) => (e) => re.test(`${e.stdout}${e.stderr}${e.message}`);
  await assert.rejects(collector.query(`delete from consent_log where anonymous_id = 'keep-log-1'`), says(/only by erasure/));
  await assert.rejects(collector.query(`update consent_log set gpc = 1 where anonymous_id = 'keep-log-1'`), says(/append-only/));
  assert.equal((await collector.query(`select count(*) as n from consent_log where anonymous_id = 'keep-log-1'`))[0].n, 1);
});

test('erasure after an unmerge removes exactly the person asked for', async () => {
  const email = sha256('erase-after-unmerge@example.com');
  const ev = (anon, props = {}) => ({ type: 'track', messageId: mid('eu'), anonymousId: anon, event: 'Newsletter Subscribed', properties: props });
  const a = (await send([ev('eu-a', { email_sha256: email })])).results[0].profileId;
  const b = (await send([ev('eu-b'), ev('eu-b')])).results[0].profileId;
  await send([ev('eu-b', { email_sha256: email })]); // a wrong soft login merges b into a
  const merged = await collector.adminJson(`/admin/v1/profiles/${a}`);
  const winner = merged.profile.id;
  await collector.adminJson(`/admin/v1/profiles/${winner}/unmerge`, { method: 'POST', body: '{}' });
  const loser = winner === a ? b : a;
  const before = await collector.query(`select count(*) as n from events where profile_id = '${loser}'`);
  assert.ok(before[0].n >= 1);
  const del = await collector.adminJson(`/admin/v1/profiles/${winner}`, { method: 'DELETE' });
  assert.deepEqual(del.erased.profiles, [winner], 'the unmerged profile is not erased with it');
  const kept = await collector.adminJson(`/admin/v1/profiles/${loser}`);
  assert.equal(kept.profile.id, loser);
  const after = await collector.query(`select count(*) as n from events where profile_id = '${loser}'`);
  assert.equal(after[0].n, before[0].n, "the other person's events are all kept");
  assert.equal((await collector.query(`select count(*) as n from events where profile_id = '${winner}'`))[0].n, 0);
  assert.equal((await collector.admin(`/admin/v1/profiles/${winner}`, { method: 'DELETE' })).status, 404,
    'a finished erasure leaves nothing to erase');
  const receipt = await collector.query(`select profile_id from erasure_receipts where profile_id = '${winner}'`);
  assert.equal(receipt.length, 1, 'the receipt proves it was done');
});

test('every source has the lake: clean events reach gzip NDJSON objects in R2 and the D1 hot window', async () => {
  const ids = [mid('r2'), mid('r2')];
  const body = await send(ids.map((id) => ({ type: 'track', messageId: id, anonymousId: 'r2-anon', event: 'Archived' })), 'sl_r2_key');
  assert.equal(body.accepted, 2);
  assert.equal((await send([{ type: 'track', messageId: ids[0], anonymousId: 'r2-anon', event: 'Archived' }], 'sl_r2_key')).duplicates, 1);
  const lines = await eventually(async () => {
    const all = await collector.lakeLines('lake/source=sl_r2_key/');
    return all.filter((l) => ids.includes(l.messageId)).length === 2 && all;
  }, 30_000, 'events in the lake');
  const line = lines.find((l) => l.messageId === ids[0]);
  assert.equal(line.payload.event, 'Archived');
  assert.match(line.profileId, /^p_/);
  assert.equal(line.fingerprint, undefined, 'the lake carries the event, not the store\'s bookkeeping');
  assert.equal((await collector.query(`select count(*) as n from events where anonymous_id = 'r2-anon'`))[0].n, 2, 'and the hot window');
  // Erasure reaches both stores: the visitor's lines are removed from the objects.
  const del = await collector.adminJson(`/admin/v1/profiles/${line.profileId}?writeKey=sl_r2_key`, { method: 'DELETE' });
  assert.equal(del.erased.deleted.archivedEvents, 2);
  assert.equal(del.erased.deleted.events, 2);
  const left = await collector.lakeLines('lake/source=sl_r2_key/');
  assert.ok(!JSON.stringify(left).includes('r2-anon'), 'no line of the erased visitor remains');
  assert.equal((await collector.query(`select count(*) as n from events where anonymous_id = 'r2-anon'`))[0].n, 0);
  // The same browser coming back after the erasure is a new visitor: its events are kept.
  const later = mid('r2');
  assert.equal((await send([{ type: 'track', messageId: later, anonymousId: 'r2-anon', event: 'Archived' }], 'sl_r2_key')).accepted, 1);
  await eventually(async () => (await collector.lakeLines('lake/source=sl_r2_key/')).some((l) => l.messageId === later),
    30_000, 'the later event in the lake despite the tombstone');
});

test("a day's lake objects read back hold every accepted event exactly once", async () => {
  const key = 'sl_lake_key';
  const sent = new Set();
  const requests = [];
  for (let r = 0; r < 12; r++) {
    const visitor = `lake-visitor-${r % 4}`;
    const batch = Array.from({ length: 25 }, (_, i) => ({
      type: 'track', messageId: mid(`lake${r}-${i}`), anonymousId: visitor, event: 'Lake Event', properties: { i },
    }));
    batch.forEach((e) => sent.add(e.messageId));
    requests.push(batch);
  }
  // Each batch twice (a sender's retry), the requests of each round concurrent, plus an
  // invalid event and a messageId reused by another visitor with other content: neither
  // reaches the lake.
  const days = new Set([new Date().toISOString().slice(0, 10)]);
  const results = [...await Promise.all(requests.map((b) => send(b, key))), ...await Promise.all(requests.map((b) => send(b, key)))];
  const accepted = results.reduce((n, r) => n + r.accepted, 0);
  const repeats = results.reduce((n, r) => n + r.duplicates, 0);
  assert.equal(accepted, 300, JSON.stringify(results.map((r) => [r.accepted, r.duplicates, r.quarantined])));
  assert.equal(repeats, 300);
  const reused = [...sent][0];
  const conflict = await send([{ type: 'track', messageId: reused, anonymousId: 'another-visitor', event: 'Other' }], key);
  assert.equal(conflict.quarantined, 1);
  assert.equal(conflict.results[0].reasons[0].kind, 'message_id_conflict');
  assert.equal((await send([{ type: 'bogus', messageId: mid('bad'), anonymousId: 'x' }], key)).quarantined, 1);
  days.add(new Date().toISOString().slice(0, 10)); // a run across midnight reads both days
  const lines = await eventually(async () => {
    const all = [];
    for (const day of days) all.push(...await collector.lakeLines(`lake/source=${key}/date=${day}/`));
    return all.length >= 300 && all;
  }, 60_000, 'the day in the lake');
  const counts = new Map();
  for (const l of lines) counts.set(l.messageId, (counts.get(l.messageId) ?? 0) + 1);
  assert.equal(counts.size, 300, 'every event, nothing else');
  assert.ok([...sent].every((id) => counts.get(id) === 1), 'each exactly once');
  assert.ok(lines.every((l) => l.writeKey === key && l.payload.event === 'Lake Event'));
});

test('maintenance prunes the hot window by retentionDays, leaves the lake whole, and warns before the size limit', async () => {
  const key = 'sl_lake_key';
  const id = mid('old');
  assert.equal((await send([{ type: 'track', messageId: id, anonymousId: 'retention-visitor', event: 'Lake Event' }], key)).accepted, 1);
  await eventually(async () => (await collector.lakeLines(`lake/source=${key}/`)).some((l) => l.messageId === id), 30_000, 'in the lake');
  const count = async () => (await collector.query(`select count(*) as n from events where message_id = '${id}'`))[0].n;
  // Tomorrow: inside the window (retentionDays 2), nothing of it goes.
  const soon = new Date(Date.now() + 86_400_000).toISOString();
  let run = await collector.adminJson(`/admin/v1/maintenance?now=${soon}`, { method: 'POST' });
  assert.equal(await count(), 1);
  // Three days on: out of this source's window, pruned from D1; the lake keeps it.
  const later = new Date(Date.now() + 3 * 86_400_000).toISOString();
  run = await collector.adminJson(`/admin/v1/maintenance?now=${later}`, { method: 'POST' });
  assert.ok(run.pruned[key].events >= 1, JSON.stringify(run.pruned));
  assert.equal(await count(), 0, 'pruned from the hot window');
  assert.equal(run.pruned[WRITE_KEY].events, 0, 'a 30-day source keeps its three-day-old events');
  assert.ok((await collector.lakeLines(`lake/source=${key}/`)).some((l) => l.messageId === id), 'the lake keeps it');
  // This collector runs with a 100 KB limit (D1_LIMIT_BYTES): the database is over 70%.
  assert.ok(run.database.bytes > 0);
  assert.match(run.database.warning, /of its 100000-byte limit/);
  const health = await collector.adminJson('/admin/v1/health');
  assert.ok(health.checks.some((c) => c.kind === 'database' && c.detail.warning));
  assert.ok(health.checks.some((c) => c.kind === 'retention' && c.writeKey === key));
  assert.equal((await collector.admin('/admin/v1/maintenance?now=yesterday', { method: 'POST' })).status, 400);
});

test('D1 is the lake\'s outbox: a row whose queue message was lost is swept into the lake, then archived', async () => {
  const key = 'sl_lake_key';
  const id = mid('lost');
  // A row as the store writes it when its queue message is lost afterwards (the local
  // queue keeps messages in memory; a send can fail once the row is in D1).
  const now = new Date().toISOString();
  await collector.query(`insert into events (write_key, message_id, type, event, anonymous_id, identified, bot, timestamp, received_at, payload, archived) values ('${key}', '${id}', 'track', 'Lake Event', 'outbox-visitor', 0, 0, '${now}', '${now}', '{"type":"track","event":"Lake Event","messageId":"${id}"}', 0)`);
  const archived = async () => (await collector.query(`select archived from events where message_id = '${id}'`))[0].archived;
  // Within the grace period the sweep leaves it to the queue.
  let run = await collector.adminJson(`/admin/v1/maintenance?now=${now}`, { method: 'POST' });
  assert.equal(await archived(), 0);
  assert.ok(!(await collector.lakeLines(`lake/source=${key}/`)).some((l) => l.messageId === id));
  // Past it (and inside the retention window), the sweep writes it and marks it.
  const later = new Date(Date.now() + 3_600_000).toISOString();
  run = await collector.adminJson(`/admin/v1/maintenance?now=${later}`, { method: 'POST' });
  assert.ok(run.pruned[key].swept >= 1, JSON.stringify(run.pruned[key]));
  assert.equal(await archived(), 1);
  const lines = (await collector.lakeLines(`lake/source=${key}/`)).filter((l) => l.messageId === id);
  assert.equal(lines.length, 1);
  assert.equal(lines[0].anonymousId, 'outbox-visitor');
  assert.equal(lines[0].payload.event, 'Lake Event');
  assert.equal(lines[0].type, 'track');
  // Swept once: the next run finds nothing left to sweep of it.
  run = await collector.adminJson(`/admin/v1/maintenance?now=${later}`, { method: 'POST' });
  assert.equal((await collector.lakeLines(`lake/source=${key}/`)).filter((l) => l.messageId === id).length, 1);
  // An event through the pipeline is marked by the queue consumer, with no sweep.
  const queued = mid('queued');
  assert.equal((await send([{ type: 'track', messageId: queued, anonymousId: 'outbox-visitor', event: 'Lake Event' }], key)).accepted, 1);
  await eventually(async () => (await collector.query(`select archived from events where message_id = '${queued}'`))[0].archived === 1,
    30_000, 'archived by the queue');
  assert.ok((await collector.lakeLines(`lake/source=${key}/`)).some((l) => l.messageId === queued));
});

test('stats: volume, identified share and quarantine rate by reason', async () => {
  const s = await collector.adminJson(`/admin/v1/stats?writeKey=${WRITE_KEY}`);
  assert.ok(s.totals.received >= s.totals.accepted && s.totals.accepted > 10, JSON.stringify(s.totals));
  assert.ok(s.identifiedShare > 0 && s.identifiedShare < 1);
  assert.ok(Math.abs(s.identifiedShare + s.anonymousShare - 1) < 1e-9);
  const reasons = Object.fromEntries(s.quarantineByReason.map((r) => [r.reason, r.count]));
  assert.ok(reasons.out_of_range >= 1 && reasons.message_id_conflict >= 1, JSON.stringify(reasons));
  assert.ok(s.quarantineRate > 0 && s.quarantineRate < 1);
  const optin = await collector.adminJson('/admin/v1/stats?writeKey=sl_optin_key');
  assert.equal(optin.totals.refused, 2);
});

test('the collector sets an HttpOnly first-party cookie that the SDK can adopt', async () => {
  const browser = await startBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(`${collector.url}/about`);
    const first = await page.evaluate(async (key) => {
      const r = await fetch('/v1/batch', {
        method: 'POST', headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ writeKey: key, batch: [{ type: 'page', messageId: crypto.randomUUID(), anonymousId: 'cookie-anon-1' }] }),
      });
      return { status: r.status, script: document.cookie };
    }, WRITE_KEY);
    assert.equal(first.status, 200);
    assert.equal(first.script, '', 'HttpOnly: scripts cannot read it');
    const cookies = await browser.context.cookies(collector.url);
    const c = cookies.find((x) => x.name === 'sl_aid');
    assert.equal(c.value, 'cookie-anon-1');
    assert.equal(c.httpOnly, true);
    assert.equal(c.sameSite, 'Lax');
    assert.ok(c.expires * 1000 - Date.now() > 300 * 24 * 3600 * 1000, 'long-lived, set by the server');
    // After the script storage is wiped (Safari's 7-day cap), the id comes back from the server.
    const adopted = await page.evaluate(async () => (await (await fetch('/v1/id')).json()).anonymousId);
    assert.equal(adopted, 'cookie-anon-1');
    // A later event with a new script id is stitched to the cookie's visitor.
    const profiles = await page.evaluate(async (key) => {
      const one = async (anon) => (await (await fetch('/v1/batch', {
        method: 'POST', headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ writeKey: key, batch: [{ type: 'page', messageId: crypto.randomUUID(), anonymousId: anon }] }),
      })).json()).results[0].profileId;
      return [await one('cookie-anon-1'), await one('cookie-anon-after-wipe')];
    }, WRITE_KEY);
    assert.equal(profiles[0], profiles[1]);
  } finally {
    await browser.close();
  }
});

// Segment's HTTP API documentation, its examples as written there: no messageId, no
// `type` on a single call, the write key in the body, a month of one digit.
test("the Segment HTTP API's documented examples are stored, and a resend is a duplicate", async () => {
  const identify = {
    userId: '019mr8mf4r', traits: { email: 'pgibbons@example.com', name: 'Peter Gibbons', industry: 'Technology' },
    context: { ip: '24.5.68.47' }, timestamp: '2012-12-02T00:30:08.276Z', writeKey: WRITE_KEY,
  };
  const first = await (await post('/v1/identify', identify, { 'content-type': 'application/json' })).json();
  assert.equal(first.accepted, 1, JSON.stringify(first));
  assert.match(first.results[0].messageId, /^sl-[0-9a-f]{32}$/);
  const again = await (await post('/v1/identify', identify, { 'content-type': 'application/json' })).json();
  assert.deepEqual([again.duplicates, again.results[0].messageId], [1, first.results[0].messageId], 'the same message is one event');
  const batch = {
    batch: [
      { type: 'identify', userId: '019mr8mf4r', traits: { email: 'jake@yahoo.com', name: 'Jake Peterson', age: 26 }, timestamp: '2012-12-02T00:30:08.276Z' },
      { type: 'track', userId: '019mr8mf4r', event: 'Song Played', properties: { name: 'Fallin for You', artist: 'Dierks Bentley' }, timestamp: '2012-12-02T00:30:12.984Z' },
      { type: 'track', userId: '971mj8mk7p', event: 'Song Played', properties: { name: 'Get Right', artist: 'Jennifer Lopez' }, timestamp: '2015-2-02T00:30:12.984Z' },
      { type: 'track', userId: '971mj8mk7p', event: 'Song Played', properties: { name: 'Get Right', artist: 'Jennifer Lopez' } },
    ],
    writeKey: WRITE_KEY,
    context: { device: { type: 'phone', name: 'Apple iPhone 6' } },
  };
  const r = await (await post('/v1/batch', batch, { 'content-type': 'application/json' })).json();
  assert.deepEqual([r.accepted, r.quarantined], [4, 0], JSON.stringify(r));
  const rows = await collector.query(`select message_id, type, event, payload from events where user_id in ('019mr8mf4r', '971mj8mk7p')`);
  assert.equal(rows.length, 5);
  assert.equal(new Set(rows.map((x) => x.message_id)).size, 5);
  assert.ok(rows.every((x) => !x.payload.includes('pgibbons@') && !x.payload.includes('jake@')), 'emails hashed');
  assert.equal(JSON.parse(rows.find((x) => x.payload.includes('Dierks')).payload).context.device.name, 'Apple iPhone 6');
});

test('a real Segment server library (analytics-node) pointed at the collector', async () => {
  const analytics = new Analytics({ writeKey: 'sl_server_key', host: collector.url, flushAt: 5, flushInterval: 200, maxRetries: 2 });
  const failures = [];
  analytics.on('error', (e) => failures.push(e));
  analytics.identify({ userId: 'node-user-1', traits: { plan: 'pro', email: 'Node.User@Example.com' } });
  analytics.track({ userId: 'node-user-1', event: 'Order Completed', properties: { order_id: 'o-1', total: 30, currency: 'EUR', products: [{ product_id: 'ETH-GUJI', quantity: 2 }] } });
  analytics.page({ userId: 'node-user-1', name: 'Checkout', properties: { path: '/checkout' } });
  analytics.group({ userId: 'node-user-1', groupId: 'acme' });
  analytics.alias({ userId: 'node-user-1', previousId: 'node-anon-1' });
  analytics.track({ anonymousId: 'node-anon-1', event: 'Product Added', properties: { product_id: 'bad' } });
  await analytics.closeAndFlush({ timeout: 20_000 });
  assert.deepEqual(failures, []);
  const rows = await eventually(async () => {
    const r = await collector.query(`select type, event, user_id, profile_id, payload from events where write_key = 'sl_server_key' order by received_at, rowid`);
    return r.length >= 5 && r;
  }, 20_000, 'analytics-node events');
  assert.deepEqual(rows.map((r) => r.type).sort(), ['alias', 'group', 'identify', 'page', 'track']);
  const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
  assert.equal(identify.traits.email, sha256('node.user@example.com'), 'raw email hashed');
  assert.equal(identify.context.library.name, '@segment/analytics-node');
  assert.equal(new Set(rows.map((r) => r.profile_id)).size, 1, 'alias joins the anonymous id to the user');
  const q = await collector.query(`select reason from quarantine where write_key = 'sl_server_key'`);
  assert.deepEqual(q.map((x) => x.reason), ['missing_required'], 'the bad event is quarantined, not lost');
});

test('admin lists page with cursors, and a time range exports as NDJSON, every event once', async () => {
  const anon = mid('page-anon');
  const from = new Date().toISOString();
  const ids = [];
  for (let b = 0; b < 11; b++) {
    const batch = [];
    for (let i = 0; i < 100 && ids.length < 1050; i++) {
      const messageId = mid('pg');
      ids.push(messageId);
      batch.push({ type: 'track', event: 'Paged', messageId, anonymousId: anon, properties: { n: ids.length } });
    }
    assert.equal((await send(batch)).accepted, batch.length);
  }
  const to = new Date(Date.now() + 1000).toISOString();
  // Pages of 400, newest first: each event once, and no cursor after the last page.
  const seen = [];
  let cursor = null;
  let pages = 0;
  do {
    const q = `/admin/v1/events?anonymousId=${anon}&limit=400${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = await collector.adminJson(q);
    pages++;
    seen.push(...page.events.map((e) => e.messageId));
    assert.ok(page.events.every((e) => e.rowid === undefined), 'no internal columns');
    cursor = page.next;
  } while (cursor && pages < 10);
  assert.equal(pages, 3);
  assert.equal(seen.length, 1050);
  assert.equal(new Set(seen).size, 1050);
  assert.deepEqual([...seen].sort(), [...ids].sort());
  const bad = await collector.admin('/admin/v1/events?cursor=not-a-cursor');
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.code, 'invalid_cursor');
  // The quarantine and the consent log page the same way (by id, newest first).
  const q1 = await collector.adminJson('/admin/v1/quarantine?limit=1');
  if (q1.next) {
    const q2 = await collector.adminJson(`/admin/v1/quarantine?limit=1&cursor=${q1.next}`);
    assert.ok(q2.quarantine.every((r) => r.id < q1.quarantine[0].id));
  }
  // The export streams the range oldest first across several D1 pages (500 rows each).
  const r = await collector.admin(`/admin/v1/export?writeKey=${WRITE_KEY}&from=${from}&to=${to}`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /ndjson/);
  const lines = (await r.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const mine = lines.filter((e) => e.anonymousId === anon);
  console.log(`export: ${lines.length} lines, ${mine.length} of the 1050 sent, distinct ${new Set(mine.map((e) => e.messageId)).size}`);
  assert.equal(mine.length, 1050);
  assert.equal(new Set(mine.map((e) => e.messageId)).size, 1050);
  assert.deepEqual(mine.map((e) => e.properties.n), [...Array(1050).keys()].map((i) => i + 1), 'oldest first');
  assert.equal((await collector.admin('/admin/v1/export')).status, 400);
  // Profiles: a source's, a page at a time, each once, the paged visitor's among them.
  const profileId = (await collector.adminJson(`/admin/v1/events?anonymousId=${anon}&limit=1`)).events[0].profileId;
  const profiles = [];
  cursor = null;
  pages = 0;
  do {
    const page = await collector.adminJson(`/admin/v1/profiles?writeKey=${WRITE_KEY}&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
    profiles.push(...page.profiles.map((p) => p.id));
    cursor = page.next;
    pages++;
  } while (cursor && pages < 1000);
  assert.ok(pages > 1, `${profiles.length} profiles in ${pages} pages`);
  assert.equal(new Set(profiles).size, profiles.length, 'each profile once');
  assert.deepEqual(profiles, [...profiles].sort(), 'in id order');
  assert.ok(profiles.includes(profileId));
});

test('a browser batch of 100 events from one visitor makes at most 10 subrequests, storage included', async () => {
  const batch = Array.from({ length: 100 }, (_, i) => ({
    type: 'track', event: 'Browser Fan Out', messageId: mid('bfan'), anonymousId: 'bfan-visitor', properties: { i },
  }));
  const r = await post('/v1/batch', { writeKey: WRITE_KEY, batch }, { origin: ALLOWED_ORIGIN });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).accepted, 100);
  const n = Number(r.headers.get('x-subrequests'));
  // What the objects it called made in their own invocations (an identity graph over
  // shards: its driver's calls to the other shards; a visitor's batch needs none).
  assert.ok(r.headers.has('x-object-subrequests'));
  const nested = Number(r.headers.get('x-object-subrequests'));
  console.log(`browser batch of 100: ${n} subrequests, ${nested} by an object`);
  assert.ok(n > 0 && n + nested <= 10, `${n} + ${nested} subrequests`);
});

test('a server batch of 100 events from 100 users stays within the free plan\'s 50 subrequests', async () => {
  const batch = Array.from({ length: 100 }, (_, i) => ({
    type: 'track', event: 'Fan Out', messageId: mid('fan'), userId: `fan-user-${i}`, anonymousId: `fan-anon-${i}`,
  }));
  const r = await post('/v1/batch', { writeKey: 'sl_server_key', batch });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).accepted, 100);
  const n = Number(r.headers.get('x-subrequests'));
  assert.ok(r.headers.has('x-object-subrequests'));
  const nested = Number(r.headers.get('x-object-subrequests'));
  console.log(`server batch of 100: ${n} subrequests, at most ${nested} by one object`);
  assert.ok(n > 0 && n <= 50, `${n} subrequests`);
  // Each invocation has its own 50: an identity graph over shards is driven by one of
  // them, whose calls to the others are its own.
  assert.ok(nested <= 50, `${nested} subrequests by one object`);
  if (Number(SHARDS || 1) > 1) assert.ok(nested > 0, 'driven by a shard');
});

// Segment's HTTP API takes up to 2,500 events in a batch. The lake's queue messages
// carry many events each, so such a batch's sends stay few.
test('a server batch of 2,500 events stays within 50 subrequests, and each event reaches the lake once', async () => {
  const prefix = mid('bulk');
  const batch = Array.from({ length: 2500 }, (_, i) => ({
    type: 'track', event: 'Ratio Computed', messageId: `${prefix}-${i}`, userId: `bulk-user-${i % 400}`,
    properties: { i, note: 'a "quoted" \\ text' },
  }));
  const r = await post('/v1/batch', { writeKey: 'sl_server_key', batch });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body).slice(0, 300));
  assert.equal(body.accepted, 2500);
  const n = Number(r.headers.get('x-subrequests'));
  const nested = Number(r.headers.get('x-object-subrequests'));
  console.log(`server batch of 2,500: ${n} subrequests, at most ${nested} by one object`);
  assert.ok(n <= 50 && nested <= 50, `${n} subrequests, ${nested} by one object`);
  const lines = await eventually(async () => {
    const l = (await collector.lakeLines('lake/source=sl_server_key/')).filter((x) => x.messageId.startsWith(`${prefix}-`));
    return l.length >= 2500 && l;
  }, 60_000, 'the batch in the lake');
  assert.equal(lines.length, 2500, 'each line once');
  assert.equal(new Set(lines.map((x) => x.messageId)).size, 2500);
});
