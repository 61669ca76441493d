// The collector's guarantees against the real collector in workerd, tried as an attacker
// would: a hostile batch leaves no raw PII in D1 or the identity graph; an opt-in source
// keeps nothing without consent, not even in the quarantine; reset() clears the cookie
// and a stale cookie links nothing; a consent revocation while events are queued keeps
// none of the later ones; and senders retrying through two SIGKILLs of the collector get
// every event stored exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startCollector, eventually, WRITE_KEY, STATE_ROOT, PLANTED, hidden } from './harness.mjs';

// `identity-shards-guarantees.test.mjs` runs this file again over identity shards.
const SHARDS = process.env.E2E_IDENTITY_SHARDS;
const vars = SHARDS ? { IDENTITY_SHARDS: SHARDS } : {};

const GRANTED = { categoryPreferences: { analytics: true, marketing: true, personalization: true } };
let seq = 0;
const mid = (p) => `${p}-${process.pid}-${++seq}`;

const post = (url, path, body, headers = {}) => fetch(`${url}${path}`, {
  method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'text/plain', ...headers },
});
const send = async (url, batch, writeKey = WRITE_KEY, headers = {}) => {
  const r = await post(url, '/v1/batch', { writeKey, batch }, headers);
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  return body;
};

/** Every raw value planted here, for this file's own checks (the suite-wide scan uses
 * PLANTED from the harness, which includes them). */
const RAW = ['hostile.visitor@example.org', '650.555.0142', '6505550143', 'key.holder@example.net',
  'anon.mail@example.net', 'group.mail@example.net', 'evt.mail@example.net', 'big.secret@example.net',
  'encoded.visitor@example.org', '+442079460321'];
const ENCODED = 'encoded.visitor@example.org';
const fullwidth = (v) => [...v].map((c) => (c >= '!' && c <= '~' ? String.fromCodePoint(c.codePointAt(0) + 0xfee0) : c)).join('');

test('a hostile batch leaves no raw PII in D1, the quarantine, the consent log or the identity graph', async () => {
  for (const v of RAW) assert.ok(PLANTED.includes(v), `${v} is in the at-rest scan list`);
  const c = await startCollector({ vars });
  try {
    const enc = encodeURIComponent('hostile.visitor@example.org');
    const page = { url: `${c.url}/p?email=${enc}&utm_content=${enc}`, search: `?email=${enc}`, referrer: `https://x.example/?e=${encodeURIComponent(enc)}` };
    const base = { anonymousId: 'hostile-1', context: { consent: GRANTED, page } };
    const batch = [
      { ...base, type: 'page', messageId: mid('h'), properties: { url: page.url } },
      { ...base, type: 'identify', messageId: mid('h'), traits: { phone: '650.555.0142', mobile: '6505550143' } },
      { ...base, type: 'track', messageId: mid('h'), event: 'Mail evt.mail@example.net', properties: { 'key.holder@example.net': 1 } },
      { ...base, type: 'track', messageId: mid('h'), anonymousId: 'anon.mail@example.net', event: 'Product Viewed', properties: {} },
      { ...base, type: 'group', messageId: mid('h'), groupId: 'group.mail@example.net' },
      // Quarantined ones keep no raw value either.
      { ...base, type: 'track', messageId: mid('h'), event: 'Product Added', properties: { product_id: 'big.secret@example.net', price: -1 } },
      { ...base, type: 'bogus', messageId: mid('h'), note: 'big.secret@example.net' },
      { ...base, type: 'track', messageId: mid('h'), event: 'Consent Updated', userId: 'big.secret@example.net' },
      // Encoded on the way: base64, hex, HTML references, escapes, fullwidth forms.
      { ...base, type: 'track', messageId: mid('h'), event: 'Encoded', properties: {
        b64: Buffer.from(ENCODED).toString('base64'), hex: Buffer.from(ENCODED).toString('hex'),
        link: `https://shop.example/r?d=${Buffer.from(ENCODED).toString('base64url')}&n=1`,
        html: ENCODED.replace('@', '&#64;'), esc: ENCODED.replace('@', '\\u0040'), full: fullwidth(ENCODED),
        tel: Buffer.from('+442079460321').toString('base64'), telFull: fullwidth('+442079460321'),
      } },
      { ...base, type: 'track', messageId: mid('h'), anonymousId: Buffer.from(ENCODED).toString('base64'), event: 'Product Viewed', properties: {} },
    ];
    const r = await send(c.url, batch);
    assert.equal(r.results.length, batch.length);
    assert.ok(r.quarantined >= 2, JSON.stringify(r));
    assert.ok(JSON.stringify(r).indexOf('big.secret') < 0, 'the answer quotes no raw value');
    const rows = [
      ...(await c.query('select * from events')), ...(await c.query('select * from quarantine')),
      ...(await c.query('select * from consent_log')),
    ];
    const text = decodeURIComponent(decodeURIComponent(JSON.stringify(rows).replaceAll('%25', '%2525'))).toLowerCase();
    for (const v of RAW) assert.ok(!text.includes(v.toLowerCase()), `${v} at rest: ${text.slice(0, 400)}`);
    const bytes = JSON.stringify(rows);
    for (const v of RAW) for (const h of hidden(v)) assert.ok(!bytes.includes(h), `${v} at rest as ${h}`);
    for (const v of [fullwidth(ENCODED), ENCODED.replace('@', '&#64;'), ENCODED.replace('@', '\\u0040')]) {
      assert.ok(!bytes.includes(v) && !bytes.includes(JSON.stringify(v).slice(1, -1)), `${v} at rest`);
    }
    const profile = await c.adminJson('/admin/v1/profiles?anonymousId=hostile-1');
    const graph = JSON.stringify(profile).toLowerCase();
    for (const v of RAW) assert.ok(!graph.includes(v.toLowerCase()), `${v} in the identity graph`);
  } finally { await c.dispose(); }
});

test('opt-in without consent: nothing is kept, not even an oversized or unknown-type event', async () => {
  const c = await startCollector({ vars });
  try {
    const r = await send(c.url, [
      { type: 'track', messageId: mid('oi'), anonymousId: 'oi-1', event: 'Big', properties: { blob: 'x'.repeat(40 * 1024) } },
      { type: 'nonsense', messageId: mid('oi'), anonymousId: 'oi-1' },
      'not an object',
    ], 'sl_optin_key');
    assert.deepEqual(r.results.map((v) => v.status), ['refused', 'refused', 'refused']);
    for (const t of ['events', 'quarantine', 'consent_log']) {
      assert.equal((await c.query(`select count(*) as n from ${t} where write_key = 'sl_optin_key'`))[0].n, 0, t);
    }
  } finally { await c.dispose(); }
});

test('reset() clears the HttpOnly cookie, a stale cookie links no new visitor; chunked bodies are capped', async () => {
  const c = await startCollector({ vars });
  try {
    const own = { origin: c.url };
    const ev = (anon, extra = {}) => ({ type: 'track', messageId: mid('rs'), anonymousId: anon, event: 'Product Viewed', context: { consent: GRANTED }, ...extra });
    const login = await post(c.url, '/v1/batch', { writeKey: WRITE_KEY, batch: [ev('rs-first-visitor', { userId: 'rs-user' })] }, own);
    assert.match(login.headers.get('set-cookie'), /sl_aid=rs-first-visitor;.*HttpOnly/);
    const reset = await post(c.url, '/v1/reset', { writeKey: WRITE_KEY }, { ...own, cookie: 'sl_aid=rs-first-visitor' });
    assert.equal(reset.status, 200);
    assert.match(reset.headers.get('set-cookie'), /^sl_aid=; Path=\/; Max-Age=0/);
    // A browser that kept the old cookie anyway: the next person is not joined to it.
    const next = await post(c.url, '/v1/batch', { writeKey: WRITE_KEY, batch: [ev('rs-second-visitor')] },
      { ...own, cookie: 'sl_aid=rs-first-visitor' });
    assert.equal(next.status, 200);
    const first = await c.adminJson('/admin/v1/profiles?userId=rs-user');
    const second = await c.adminJson('/admin/v1/profiles?anonymousId=rs-second-visitor');
    assert.notEqual(first.profile.id, second.profile.id);
    assert.ok(!JSON.stringify(await post(c.url, '/v1/batch', { writeKey: WRITE_KEY, batch: [ev('rs-x')] }, own).then((x) => x.json())).includes('profileId'),
      'browsers are not told profile ids');
    // A body without Content-Length (chunked) is refused once it passes 500 KB.
    const chunk = new TextEncoder().encode('x'.repeat(64 * 1024));
    const stream = new ReadableStream({ start(ctl) { for (let i = 0; i < 12; i++) ctl.enqueue(chunk); ctl.close(); } });
    const big = await fetch(`${c.url}/v1/batch`, { method: 'POST', body: stream, duplex: 'half', headers: { 'content-type': 'text/plain' } });
    assert.equal(big.status, 413);
    assert.equal((await big.json()).error.code, 'batch_too_large');
  } finally { await c.dispose(); }
});

test('consent revoked while events wait: the revocation is logged, later events are not kept, the cookie goes', async () => {
  const c = await startCollector({ vars });
  try {
    const denied = { categoryPreferences: { analytics: false } };
    const queued = [
      { type: 'track', messageId: mid('rv'), anonymousId: 'rv-1', event: 'Product Viewed', context: { consent: GRANTED } },
      { type: 'track', messageId: mid('rv'), anonymousId: 'rv-1', event: 'Consent Updated', context: { consent: denied } },
      { type: 'track', messageId: mid('rv'), anonymousId: 'rv-1', event: 'Product Viewed', context: { consent: denied } },
    ];
    const r = await post(c.url, '/v1/batch', { writeKey: 'sl_optin_key', batch: queued.slice(1) }, { origin: c.url });
    const body = await r.json();
    assert.deepEqual(body.results.map((v) => v.status), ['refused', 'refused']);
    assert.match(r.headers.get('set-cookie') || '', /sl_aid=; Path=\/; Max-Age=0/);
    const log = await c.query(`select categories from consent_log where anonymous_id = 'rv-1'`);
    assert.equal(log.length, 1);
    assert.equal(JSON.parse(log[0].categories).analytics, false);
    assert.equal((await c.query(`select count(*) as n from events where anonymous_id = 'rv-1'`))[0].n, 0);
  } finally { await c.dispose(); }
});

/** A sender that retries like the SDK: same messageIds, backoff, Retry-After. */
async function sender(url, batches, stats) {
  for (const batch of batches) {
    for (let attempt = 0; ; attempt++) {
      if (stats.stop) return; // the test ended (failed): no sender outlives it
      let r;
      try { r = await post(url(), '/v1/batch', { writeKey: 'sl_server_key', batch }); } catch { r = null; stats.network = (stats.network || 0) + 1; }
      // A collector killed while the answer is on the wire cuts its body: to the sender
      // that is a network error like any other, and it retries.
      const body = r && r.status === 200 ? await r.json().catch(() => null) : null;
      if (r && r.status === 200 && !body) { stats.network = (stats.network || 0) + 1; r = null; }
      if (body) {
        for (const v of body.results) stats[v.status] = (stats[v.status] || 0) + 1;
        for (const v of body.results) if (v.status === 'duplicate') stats.duplicateIds.add(v.messageId);
        break;
      }
      if (r) { stats[`http_${r.status}`] = (stats[`http_${r.status}`] || 0) + 1; await r.body?.cancel().catch(() => {}); }
      const wait = Math.min(2000, 100 * 2 ** attempt) * (0.9 + Math.random() * 0.2);
      await new Promise((res) => setTimeout(res, wait));
      if (attempt > 200) throw new Error('sender gave up');
    }
  }
}

test('crash: senders retrying through two SIGKILLs get every event stored exactly once', { timeout: 600_000 }, async () => {
  mkdirSync(STATE_ROOT, { recursive: true });
  const state = mkdtempSync(join(STATE_ROOT, 'crash-'));
  let c = await startCollector({ state, vars });
  const port = c.port;
  const SENDERS = 4; const BATCHES = 40; const PER = 20;
  const all = [];
  const plans = Array.from({ length: SENDERS }, (_, s) => Array.from({ length: BATCHES }, (_, b) =>
    Array.from({ length: PER }, (_, i) => {
      const e = { type: 'track', messageId: `crash-${s}-${b}-${i}`, anonymousId: `crash-anon-${s}`, event: 'Crash Test', properties: { b, i } };
      if (i === 0) e.userId = `crash-user-${s}`;
      if (i === 1) e.traits = { email: 'crash.sender@example.net' };
      all.push(e.messageId);
      return e;
    })));
  const stats = { duplicateIds: new Set() };
  const url = () => `http://127.0.0.1:${port}`;
  let done = false;
  const sending = Promise.all(plans.map((p) => sender(url, p, stats))).then(() => { done = true; });
  try {
    for (let k = 0; k < 2; k++) {
      // Killed in the middle of the load: once events are being stored again (the
      // senders may be in a backoff after the last kill), a moment later.
      const before = stats.accepted || 0;
      await eventually(() => (stats.accepted || 0) > before + 40, 60_000, 'stores again');
      await new Promise((r) => setTimeout(r, 300 + k * 400));
      assert.ok(!done, 'killed in the middle of the load');
      await c.crash();
      c = await startCollector({ state, port, vars });
    }
    await sending;
    assert.ok(stats.network > 0, 'requests died with the collector');
    const rows = await c.query(`select message_id, count(*) as n from events where message_id like 'crash-%' group by message_id`);
    const stored = new Map(rows.map((r) => [r.message_id, r.n]));
    const lost = all.filter((id) => !stored.has(id));
    const doubled = rows.filter((r) => r.n > 1);
    console.log(`crash test: sent ${all.length}, stored ${stored.size}, lost ${lost.length}, doubled ${doubled.length}; ` +
      `answers ${JSON.stringify({ ...stats, duplicateIds: stats.duplicateIds.size })}`);
    assert.equal(lost.length, 0, `lost: ${lost.slice(0, 10)}`);
    assert.equal(doubled.length, 0);
    assert.equal(stored.size, all.length);
    for (const id of stats.duplicateIds) assert.ok(stored.has(id), `${id} answered duplicate, never stored`);
    // Identity through the kills: every stored event on a profile that exists and counts
    // it once (a profile's event count is the number of events stored on it), and each
    // sender's userId and anonymousId on one person, none half merged. (The senders
    // share one email: an event carrying only it and an anonymousId joins the email's
    // profile, and the others' userIds keep their profiles apart: conflicts.)
    const owners = await c.query(`select profile_id, count(*) as n from events where message_id like 'crash-%' group by profile_id`);
    let counted = 0;
    for (const o of owners) {
      const p = await c.adminJson(`/admin/v1/profiles/${o.profile_id}`);
      assert.equal(p.profile.eventCount, o.n, `${o.profile_id}: each event counted once`);
      counted += o.n;
    }
    assert.equal(counted, all.length);
    for (let s = 0; s < SENDERS; s++) {
      const p = await c.adminJson(`/admin/v1/profiles?userId=crash-user-${s}`);
      const ids = p.profile.identifiers.map((i) => `${i.kind}:${i.value}`);
      assert.ok(ids.includes(`anonymous_id:crash-anon-${s}`), JSON.stringify(ids));
    }
    // The lake: queue messages that died with the process are swept from D1 (the
    // outbox) by the maintenance, run here as if past the sweep's grace period.
    const later = new Date(Date.now() + 3_600_000).toISOString();
    let swept = 0;
    const inLake = await eventually(async () => {
      swept += (await c.adminJson(`/admin/v1/maintenance?now=${later}`, { method: 'POST' })).pruned.sl_server_key.swept;
      const lines = (await c.lakeLines('lake/source=sl_server_key/')).filter((l) => l.messageId.startsWith('crash-'));
      const counts = new Map();
      for (const l of lines) counts.set(l.messageId, (counts.get(l.messageId) ?? 0) + 1);
      return all.every((id) => counts.has(id)) && counts;
    }, 60_000, 'every stored event in the lake');
    const twice = [...inLake.values()].filter((n) => n > 1).length;
    console.log(`crash test lake: ${inLake.size} of ${all.length} events (${swept} swept from D1), ${twice} in two objects (a retry's resend)`);
    assert.equal(inLake.size, all.length);
  } finally { stats.stop = true; await c.dispose(); }
});
