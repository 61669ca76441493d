// The SDK engine's decisions in Node, with the real wasm half (sdk-wasm/dist, built by
// scripts/build.sh sdk): consent gating, the persisted queue, batches, retries, cross-tab
// hand-off, soft login and campaign capture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash, randomUUID } from 'node:crypto';
import { createEngine, EVENT_PREFIX, MAX_QUEUE, UNLOAD_BYTES, MAX_BATCH_BYTES, MAX_EVENT_BYTES, utf8 } from '../engine.js';
import { load } from '../wasm.js';

const wasm = await load(readFileSync(new URL('../../dist/sightline.wasm', import.meta.url)));
const sha256 = (s) => createHash('sha256').update(s).digest('hex');
const CTX = { page: { path: '/', url: 'https://shop.example/' }, locale: 'en-GB' };
const URL0 = 'https://shop.example/';
const T0 = 1795472345000;
const at = (url, now) => ({ ctx: CTX, url, now });

/** An engine before its restore (call start() after restoring). */
function make(optOut, country = 'DE') {
  return createEngine({
    writeKey: 'wk',
    optOut,
    storage: true,
    random: Math.random,
    uuid: randomUUID,
    pii: {
      redact: (s) => wasm.redact(s, country),
      redactField: (k, s) => wasm.redactField(k, s, country),
      campaign: wasm.campaign,
      hashIds: (em, ph) => wasm.hashIds(em, ph, country),
    },
  });
}

function engine(optOut) {
  const e = make(optOut);
  e.start();
  return e;
}

/** A batch body's events, each with the batch-level context merged under its own (as
 * the collector stores them). */
const eventsOf = (body) => {
  const v = JSON.parse(body);
  assert.equal(v.writeKey, 'wk');
  return v.batch.map((m) => ({ ...m, context: { ...v.context, ...m.context } }));
};
/** The next batch's events (left in flight). */
const batch = (e, present) => {
  const body = e.batch(T0, 500 * 1024, present);
  assert.ok(body, 'a batch');
  return eventsOf(body);
};
/** Every queued event, batch after batch, each batch acknowledged. */
const all = (e) => {
  const out = [];
  for (let body; (body = e.batch(T0, 500 * 1024)); e.done(200, 0)) out.push(...eventsOf(body));
  return out;
};
/** A stored chunk's event lines (not its shared-context lines). */
const eventLines = (chunk) => chunk.split('\n').filter((l) => l[0] !== 'c');
const chunks = (ops) => ops.filter(([k, key]) => k === 's' && key.startsWith(EVENT_PREFIX)).map(([, , v]) => v);

test('opt-in writes and sends nothing before consent', () => {
  const e = engine(false);
  assert.deepEqual(e.takeOps(), [], 'not even the anonymous id');
  assert.equal(e.record('track', 'Viewed', { a: 1 }, at(URL0, T0)), true);
  assert.equal(e.record('page', undefined, undefined, at(URL0, T0 + 1)), true);
  assert.deepEqual(e.takeOps(), []);
  assert.equal(e.batch(T0, 500000), undefined);
  assert.equal(e.delay(), -1);

  // Consent: the waiting events are stamped and queued, with the decision's record.
  e.setConsent(true, false, true, 'banner', at(URL0, T0 + 2));
  const writes = e.takeOps();
  assert.ok(writes.some(([k, key, v]) => k === 's' && key === 'sl_consent' && v.startsWith('101')));
  assert.ok(writes.some(([k, key]) => k === 's' && key === 'sl_aid'));
  // The three events are written together: one chunk, one line each.
  const c = chunks(writes);
  assert.equal(c.length, 1);
  assert.equal(eventLines(c[0]).length, 3);
  const events = batch(e);
  assert.equal(events.length, 3);
  assert.equal(events[0].event, 'Viewed');
  assert.equal(events[0].properties.a, 1);
  const consent = events[0].context.consent;
  assert.equal(consent.categoryPreferences.analytics, true);
  assert.equal(consent.categoryPreferences.marketing, false);
  assert.equal(consent.source, 'banner');
  assert.equal(events[2].event, 'Consent Updated');
  assert.equal(events[0].context.library.name, 'sightline.js');
  assert.equal(events[0].context.locale, 'en-GB');
  assert.equal(events[0].context.sessionId.length, 36);
});

test('a denial purges waiting events and only the record leaves', () => {
  const e = engine(false);
  e.record('track', 'Viewed', undefined, at(URL0, T0));
  e.setConsent(false, false, false, 'banner', at(URL0, T0 + 1));
  const writes = e.takeOps();
  assert.ok(writes.every(([, key]) => key === 'sl_consent'), JSON.stringify(writes));
  const events = batch(e);
  assert.equal(events.length, 1);
  assert.equal(events[0].event, 'Consent Updated');
  assert.equal(events[0].properties.analytics, false);
  assert.equal(e.record('track', 'Later', undefined, at(URL0, T0 + 2)), false, 'not collected');
  assert.equal(e.stats().purged, 1);
});

test('revoking marketing purges events that carry click ids', () => {
  const e = engine(false);
  e.setConsent(true, true, true, 'banner', at(URL0, T0));
  assert.equal(e.done(200, 0), -1, 'nothing in flight: a no-op');
  const ad = 'https://shop.example/?utm_source=News&utm_medium=Email&gclid=G1';
  e.record('page', undefined, undefined, at(ad, T0 + 1));
  e.record('track', 'Plain', undefined, at(URL0, T0 + 2));
  e.takeOps();
  e.setConsent(undefined, false, undefined, 'banner', at(URL0, T0 + 3));
  const writes = e.takeOps();
  // Both events carried the click id of the last touch: their chunk is rewritten without
  // them (only the consent records stay).
  const c = chunks(writes);
  assert.ok(c.every((v) => !v.includes('gclid') && !v.includes('Plain')), JSON.stringify(c));
  assert.equal(c.reduce((n, v) => n + eventLines(v).length, 0), 2, 'the two consent records');
  assert.ok(writes.every(([, key, v]) => !(key === 'sl_lt' || key === 'sl_ft') || !v.includes('gclid')));
  assert.deepEqual(all(e).map((v) => v.event), ['Consent Updated', 'Consent Updated']);
});

test('the shared context travels once per batch and is stored once per chunk', () => {
  const e = engine(true);
  const home = { ctx: { page: { path: '/' }, userAgent: 'UA/1.0' }, url: URL0, now: T0 };
  const next = { ctx: { page: { path: '/next' }, userAgent: 'UA/1.0' }, url: URL0 + 'next', now: T0 + 1 };
  e.record('track', 'A', {}, home);
  e.record('track', 'B', {}, home);
  e.record('page', undefined, {}, next);
  const [chunk] = chunks(e.takeOps());
  assert.deepEqual(chunk.split('\n').map((l) => l[0]), ['c', '1', '1', 'c', '1'], chunk);
  const first = JSON.parse(e.batch(T0, 500000));
  assert.deepEqual(first.batch.map((m) => m.event), ['A', 'B'], 'one page per batch');
  assert.deepEqual(first.context.page, { path: '/' });
  assert.equal(first.context.library.name, 'sightline.js');
  assert.equal(first.context.sessionId.length, 36);
  assert.equal(first.context.consent.categoryPreferences.analytics, true, 'the snapshot they were collected under');
  assert.equal(first.batch[0].context, undefined, 'not repeated in each event');
  e.done(200, 0);
  // A reload restores the shared context with its events.
  const r = make(true);
  r.restore('sl_e:x' + e.tab, chunk);
  r.start();
  r.adoptTab(e.tab);
  const rest = JSON.parse(r.batch(T0, 500000));
  assert.deepEqual(rest.batch.map((m) => m.event), ['A', 'B']);
  assert.deepEqual(rest.context.page, { path: '/' });
  r.done(200, 0);
  assert.deepEqual(JSON.parse(r.batch(T0, 500000)).context.page, { path: '/next' });
  // Lines stored without a context line (each event whole) are sent as they are.
  const old = make(true);
  old.restore('sl_e:y' + e.tab, '1{"type":"track","event":"Old","context":{"page":{"path":"/old"}}}');
  old.start();
  old.adoptTab(e.tab);
  const legacy = JSON.parse(old.batch(T0, 500000));
  assert.equal(legacy.context, undefined);
  assert.equal(legacy.batch[0].context.page.path, '/old');
});

test('campaign first and last touch, decoded by the browser rules', () => {
  const e = engine(true);
  e.record('page', undefined, undefined, at('https://s.example/?utm_source=Google&utm_medium=CPC&utm_campaign=Winter+Sale%21&gclid=abc#x', T0));
  e.record('page', undefined, undefined, at('https://s.example/?utm_source=news', T0 + 1));
  const events = all(e);
  assert.equal(events.length, 2);
  assert.deepEqual(events[0].context.campaign, { source: 'google', medium: 'cpc', name: 'Winter Sale!' });
  assert.deepEqual(events[0].context.clickIds, { gclid: 'abc' });
  assert.equal(events[1].context.campaign.source, 'news');
  assert.equal(events[1].context.firstTouch.campaign.medium, 'cpc');
  assert.equal(events[1].context.clickIds, undefined, 'the last touch had none');
});

test('retries keep messageIds, back off and honour Retry-After', () => {
  const e = engine(true);
  e.record('track', 'A', undefined, at(URL0, T0));
  e.takeOps(); // stored, as the adapter does after every call
  const first = batch(e);
  const d1 = e.done(503, 0);
  assert.ok(d1 >= 450 && d1 <= 550, String(d1));
  const second = batch(e);
  assert.equal(first[0].messageId, second[0].messageId);
  const d2 = e.done(0, 0);
  assert.ok(d2 >= 900 && d2 <= 1100, String(d2));
  batch(e);
  assert.equal(e.done(429, 30), 30000, 'Retry-After wins when longer');
  batch(e);
  assert.equal(e.done(200, 0), -1);
  assert.equal(e.batch(T0, 500000), undefined);
  assert.ok(e.takeOps().some(([k, key]) => k === 'r' && key.startsWith(EVENT_PREFIX)));
  // A refused batch (400) is dropped, not retried.
  e.record('track', 'B', undefined, at(URL0, T0));
  batch(e);
  assert.equal(e.done(400, 0), -2);
  assert.equal(e.stats().queued, 0);
  assert.equal(e.stats().rejected, 1);
});

/** What a reload finds in storage: the keys written, in sorted order. */
const storage = (ops) => {
  const m = new Map();
  for (const [k, key, v] of ops) if (k === 's') m.set(key, v); else m.delete(key);
  return [...m].sort(([a], [b]) => (a < b ? -1 : 1));
};

test('a reload restores the queue in order', () => {
  const a = engine(true);
  for (let i = 0; i < 5; i++) a.record('track', 'E' + i, undefined, at(URL0, T0 + i));
  const fresh = make(true);
  for (const [k, v] of storage(a.takeOps())) fresh.restore(k, v);
  fresh.start();
  assert.equal(fresh.anon(), a.anon(), 'the visitor is the same');
  // The events belong to the page before the reload: sent once that tab is known gone.
  assert.equal(fresh.batch(T0, 500000), undefined);
  assert.deepEqual(fresh.foreignTabs(), [a.tab]);
  fresh.adoptTab(a.tab);
  assert.deepEqual(batch(fresh).map((v) => v.event), ['E0', 'E1', 'E2', 'E3', 'E4']);
});

test('an event another tab sent is not sent again', () => {
  // Tab A stored an event and went away.
  const a = engine(true);
  a.record('track', 'Left Behind', undefined, at(URL0, T0));
  const [[chunk, value]] = storage(a.takeOps()).filter(([k]) => k.startsWith(EVENT_PREFIX));
  // Tabs B and C both restore it; C adopts it (it took A's lock) and sends it.
  const b = engine(true);
  b.restore(chunk, value);
  assert.equal(b.batch(T0, 500000), undefined, "owned by tab A until adopted");
  assert.deepEqual(b.foreignTabs(), [a.tab]);
  b.adoptTab(a.tab);
  // Under the send lock the chunk is gone: another tab sent it; B does not.
  assert.equal(b.batch(T0, 500000, new Set(['sl_e:other'])), undefined);
  assert.equal(b.stats().queued, 0);
  // With the chunk still there, C sends it.
  const c = engine(true);
  c.restore(chunk, value);
  c.adoptTab(a.tab);
  assert.ok(c.needsPresent());
  assert.equal(batch(c, new Set([chunk]))[0].event, 'Left Behind');
  // A tab that only has its own events needs no storage listing.
  const d = engine(true);
  d.record('track', 'Mine', undefined, at(URL0, T0));
  d.takeOps();
  assert.equal(d.needsPresent(), false);
  assert.ok(d.batch(T0, 500000));
  // Another live tab's events are let go of here (its lock is held), not sent.
  const e = engine(true);
  e.restore(chunk, value);
  e.forgetTab(a.tab);
  assert.equal(e.stats().queued, 0);
});

test('the queue is bounded and counts what it sheds', () => {
  const e = engine(true);
  for (let i = 0; i < MAX_QUEUE + 25; i++) e.record('track', 'E', { i }, at(URL0, T0 + i));
  assert.equal(e.stats().queued, MAX_QUEUE);
  assert.equal(e.stats().shed, 25);
  assert.equal(batch(e)[0].properties.i, 25, 'the oldest went first');
  // Before an opt-in decision, waiting events count against the same bound.
  const w = engine(false);
  for (let i = 0; i < MAX_QUEUE + 3; i++) w.record('track', 'W', { i }, at(URL0, T0 + i));
  assert.equal(w.stats().waiting, MAX_QUEUE);
  assert.equal(w.stats().shed, 3);
});

test('batches respect count and size and the unload budget', () => {
  const e = engine(true);
  const big = { blob: 'x'.repeat(20000) };
  for (let i = 0; i < 150; i++) e.record('track', 'E', i < 10 ? big : {}, at(URL0, T0));
  assert.equal(e.delay(), 0, 'a full batch goes at once');
  const body = e.unloadBatch(T0);
  assert.ok(body.length <= UNLOAD_BYTES, String(body.length));
  assert.equal(JSON.parse(body).batch.length, 2);
  assert.equal(batch(e).length, 100);
  assert.equal(e.record('track', 'Huge', { blob: 'y'.repeat(40000) }, at(URL0, T0)), false, 'over 32 KB');
  const cyclic = {};
  cyclic.self = cyclic;
  assert.equal(e.record('track', 'Cycle', cyclic, at(URL0, T0)), false, 'not serializable: refused, no throw');
});

test('sizes are UTF-8 bytes: non-Latin batches stay under the collector\'s limits', () => {
  assert.equal(utf8('abc'), 3);
  assert.ok(utf8('é') >= 2 && utf8('数') >= 3 && utf8('😀') >= 4);
  for (const s of ['数据'.repeat(100), 'Привет', 'a😀b', 'x']) {
    assert.ok(utf8(s) >= Buffer.byteLength(s, 'utf8'), s);
  }
  const e = engine(true);
  const cjk = { text: '数据'.repeat(4500) }; // 9,000 units, 27,000 bytes
  for (let i = 0; i < 40; i++) assert.equal(e.record('track', 'Note', cjk, at(URL0, T0)), true);
  let batches = 0;
  for (let body; (body = e.batch(T0, MAX_BATCH_BYTES)); e.done(200, 0)) {
    batches++;
    assert.ok(Buffer.byteLength(body, 'utf8') <= MAX_BATCH_BYTES, `${Buffer.byteLength(body, 'utf8')} bytes`);
  }
  assert.ok(batches >= 3, `${batches} batches`);
  // One event over 32 KB of UTF-8 (but under 32 K units) is refused in the page.
  assert.equal(e.record('track', 'Note', { text: '数'.repeat(12000) }, at(URL0, T0)), false);
  assert.ok(12000 < MAX_EVENT_BYTES);
});

test('a storage write refused by the quota keeps the events in memory and is counted', () => {
  const e = engine(true);
  e.record('track', 'E', {}, at(URL0, T0));
  const chunk = e.takeOps().find(([k, key]) => k === 's' && key.startsWith(EVENT_PREFIX));
  assert.ok(chunk);
  e.notPersisted(chunk[1]);
  assert.equal(e.stats().notPersisted, 1);
  assert.equal(batch(e).length, 1, 'still sent');
});

test('soft login hashes in the page with the shared vectors; raw PII never leaves', () => {
  const e = engine(true);
  const r = e.softLogin(' John_Smith@Gmail.com ', '+1 (650) 555-1212', at(URL0, T0));
  assert.equal(r.email_sha256, '62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f');
  assert.equal(r.phone_sha256, '1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8');
  assert.equal(r.phone_sha256_meta, 'e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176');
  // Raw values in properties are hashed too, with the collector's rule.
  e.record('track', 'Contact', { note: 'mail me: ann@example.com', tel: '+44 20 7946 0958', year: '2026' }, at(URL0 + '?e=bob@example.org', T0));
  const events = batch(e);
  assert.equal(events[0].type, 'identify');
  assert.equal(events[0].traits.email_sha256, r.email_sha256);
  assert.equal(events[1].properties.note, 'mail me: ' + sha256('ann@example.com'));
  assert.equal(events[1].properties.tel, sha256('+442079460958'));
  assert.equal(events[1].properties.year, '2026', 'not PII: kept');
  // Keys, named fields in any format, and numbers in a phone field: the collector's walker.
  e.done(200, 0);
  e.record('track', 'Contact', { 'carol@example.net': 1, phone: '030.1234.567', mobile: 3012345678, email: 'dave%40example.net' }, at(URL0, T0));
  const named = all(e).at(-1).properties;
  assert.deepEqual(Object.keys(named).sort(), ['email', 'mobile', 'phone', sha256('carol@example.net')].sort());
  assert.equal(named.phone, sha256('+49301234567'));
  assert.equal(named.mobile, sha256('+493012345678'));
  assert.equal(named.email, sha256('dave@example.net'));
  const wire = JSON.stringify(events);
  for (const raw of ['John_Smith', '555-1212', 'ann@example.com', '7946', 'bob@example.org']) {
    assert.ok(!wire.includes(raw), `no raw ${raw} on the wire`);
  }
  // A national number takes the configured country (DE).
  assert.equal(e.softLogin(undefined, '030 1234567', at(URL0, T0)).phone_sha256, sha256('+49301234567'));
  assert.deepEqual(e.softLogin('test@test.com', undefined, at(URL0, T0)), { error: 'email: blocked' });
  assert.deepEqual(e.softLogin('', '', at(URL0, T0)), { error: 'nothing to hash' });
});

test('identify, alias and reset', () => {
  const e = engine(true);
  const anon = e.anon();
  e.identify('u1', { plan: 'pro' }, at(URL0, T0));
  e.alias('u2', undefined, at(URL0, T0));
  const events = batch(e);
  assert.equal(events[0].userId, 'u1');
  assert.equal(events[0].traits.plan, 'pro');
  assert.deepEqual([events[1].userId, events[1].previousId], ['u2', 'u1']);
  e.done(200, 0);
  // A user id that is an email is kept and sent as its digest, like any raw email.
  e.identify('Ann@Example.com', undefined, at(URL0, T0));
  assert.equal(e.user(), sha256('ann@example.com'));
  assert.ok(e.takeOps().every(([, , v]) => !String(v).includes('Ann@Example.com')));
  assert.equal(all(e)[0].userId, sha256('ann@example.com'));
  e.reset();
  assert.notEqual(e.anon(), anon);
  assert.equal(e.user(), undefined);
});

test('Google Consent Mode and TCF map to categories', () => {
  const e = engine(false);
  e.consentGcm('granted', 'granted', 'denied', 'granted', at(URL0, T0));
  const pick = (c) => [c.analytics, c.marketing, c.personalization];
  assert.deepEqual(pick(e.consent()), [true, false, true]);
  assert.equal(batch(e)[0].context.consent.source, 'gcm');
  e.done(200, 0);
  // The same state announced again is not a new decision: no second record.
  e.consentGcm('granted', 'granted', 'denied', 'granted', at(URL0, T0 + 1));
  assert.equal(e.batch(T0, 500000), undefined);

  const t = engine(false);
  const purposes = (...ps) => Object.fromEntries(ps.map((p) => [p, true]));
  t.consentTcf(purposes(1, 8, 5, 6), at(URL0, T0));
  assert.deepEqual(pick(t.consent()), [true, false, true]);
  t.consentTcf(purposes(1, 3, 4, 7, 8), at(URL0, T0 + 1));
  assert.equal(t.consent().marketing, true);
  t.consentTcf(purposes(3, 4, 7, 8), at(URL0, T0 + 2));
  assert.equal(t.consent().analytics, false, 'no storage consent (purpose 1): nothing');
});

test('the wasm boundary survives many calls and odd input', () => {
  for (let i = 0; i < 5000; i++) assert.equal(wasm.redact('order ' + i + ' on 2026-11-24', 'US'), undefined);
  assert.equal(wasm.redact('lone \ud800 surrogate a@b.co', 'US'), 'lone \ufffd surrogate ' + sha256('a@b.co'));
  assert.deepEqual(wasm.campaign('https://x/?utm_source=%E2%82%AC%1Fx&%zz=1'), [['source', '€x']]);
  assert.deepEqual(wasm.hashIds('', '', 'US'), {});
});
