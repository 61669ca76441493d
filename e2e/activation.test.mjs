// Activation end to end against the real collector (wrangler dev, local D1, Queues,
// Durable Objects) and local STAND-INS for Meta's Conversions API, Google's Data
// Manager API and a webhook receiver (e2e/standins.mjs: the real endpoints are not
// reachable from here; each stand-in checks the documented request format field by
// field). Covers: exact payloads, consent denial, a 500 retried and logged, every try
// failing into the dead-letter queue and a replay from there, Meta's 7-day limit, an
// unmerge rescoring both profiles at once, segment changes pushed to the webhook (also by the rescoring), audience
// exports (admin API and CLI) in Meta's and Google's columns, and personalization in
// headless Chromium across two devices, with and without consent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startCollector, startBrowser, openInspector, eventually, TEST_SOURCES, ALLOWED_ORIGIN, ADMIN_TOKEN, ROOT } from './harness.mjs';
import { startStandins } from './standins.mjs';

const sha = (s) => createHash('sha256').update(s).digest('hex');
const EMAIL = sha('john.smith@gmail.com'); // Meta's rule (and the standard one)
const EMAIL_GOOGLE = sha('johnsmith@gmail.com'); // Google drops a gmail address's dots
const PHONE_E164 = sha('+16505551212');
const PHONE_META = sha('16505551212');
const SHOPPER = 'activation.shopper@example.net'; // typed into the site in Chromium
const TOKENS = { META_TOKEN: 'e2e_meta_token', GOOGLE_TOKEN: 'e2e_google_token', HOOK_SECRET: 'e2e_hook_secret' };
const CLI = join(ROOT, 'target/debug/sightline');

let standins;
let collector;

function activation(url) {
  return {
    retentionDays: 400,
    attribution: { conversions: [{ event: 'Order Completed', revenue: 'total' }], currency: 'EUR' },
    segments: '/sl/segments.json',
    personalization: { traits: ['plan'] },
    destinations: [
      { id: 'meta', kind: 'meta', events: ['Order Completed'], pixelId: '1234567890', secret: 'META_TOKEN',
        eventNames: { 'Order Completed': 'Purchase' }, endpoint: `${url}/meta` },
      { id: 'google', kind: 'google', events: ['Order Completed'], accountId: '9876543210',
        conversionAction: 'customers/9876543210/conversionActions/555', secret: 'GOOGLE_TOKEN', endpoint: `${url}/google` },
      { id: 'hook', kind: 'webhook', events: ['Segment Entered', 'Segment Exited'], secret: 'HOOK_SECRET',
        endpoint: `${url}/hook/segments` },
    ],
  };
}

before(async () => {
  standins = await startStandins({
    meta: { pixelId: '1234567890', token: TOKENS.META_TOKEN },
    google: { accountId: '9876543210', conversionAction: 'customers/9876543210/conversionActions/555', token: TOKENS.GOOGLE_TOKEN },
    hook: { secret: TOKENS.HOOK_SECRET },
  });
  const act = activation(standins.url);
  collector = await startCollector({
    sources: {
      ...TEST_SOURCES,
      // The example site's key as a real shop runs it: opt-in consent, with activation.
      sl_dev_key: { name: 'example-site', plan: '/sl/tracking-plan.json', consent: 'opt-in', origins: [ALLOWED_ORIGIN], ...act },
      sl_act_key: { name: 'shop backend', plan: '/sl/tracking-plan.json', consent: 'opt-out', ...act },
      // A webhook that is down, with a 1 s first retry so its six tries fit in a test.
      sl_dead_key: { name: 'dead letters', plan: '/sl/tracking-plan.json', consent: 'opt-out',
        destinations: [{ id: 'hook-dead', kind: 'webhook', events: ['Order Completed'], secret: 'HOOK_SECRET',
          endpoint: `${standins.url}/hook/dead`, retrySeconds: 1 }] },
    },
    vars: TOKENS,
  });
});

after(async () => {
  await collector?.dispose();
  await standins?.close();
});

async function send(batch, writeKey = 'sl_act_key') {
  const r = await fetch(`${collector.url}/v1/batch`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ writeKey, batch }),
  });
  const body = await r.json();
  assert.equal(r.status, 200, JSON.stringify(body));
  return body;
}

const ago = (ms) => new Date(Date.now() - ms).toISOString();
const identify = (anon) => ({
  type: 'identify', messageId: randomUUID(), anonymousId: anon,
  traits: { email_sha256: EMAIL, email_sha256_google: EMAIL_GOOGLE, phone_sha256: PHONE_E164, phone_sha256_meta: PHONE_META, plan: 'pro' },
});
const order = (anon, extra = {}) => ({
  type: 'track', messageId: randomUUID(), anonymousId: anon, event: 'Order Completed', timestamp: ago(60_000),
  context: {
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64) e2e', page: { url: 'https://shop.example/checkout' },
    clickIds: { gclid: 'Cj0KCQ-e2e-gclid', fbclid: 'IwAR-e2e-fbclid' },
  },
  properties: { order_id: `o-${randomUUID().slice(0, 8)}`, total: 42.5, currency: 'EUR',
    products: [{ product_id: 'ETH-GUJI', category: 'Light roast', price: 42.5, quantity: 1 }] },
  ...extra,
});
const deliveries = async (messageId) =>
  (await collector.adminJson(`/admin/v1/deliveries?writeKey=sl_act_key&messageId=${messageId}`)).deliveries;
const line = async (messageId, destination) => (await deliveries(messageId)).find((d) => d.destination === destination);
const requestsFor = (kind, pred) => standins.of(kind).filter(pred);

test('each stand-in receives exactly the documented payload, hashed by each platform\'s rule', async () => {
  const anon = `act-ann-${randomUUID()}`;
  await send([identify(anon)]);
  const o = order(anon);
  await send([o]);
  const [meta] = await eventually(async () => {
    const r = requestsFor('meta', (q) => q.body?.data?.[0]?.event_id === o.properties.order_id);
    return r.length && r;
  }, 30_000, 'the Meta stand-in to receive the order');
  assert.deepEqual(meta.problems, []);
  assert.equal(meta.path, '/v21.0/1234567890/events');
  assert.equal(meta.body.access_token, TOKENS.META_TOKEN);
  const e = meta.body.data[0];
  assert.deepEqual(Object.keys(e).sort(), ['action_source', 'custom_data', 'event_id', 'event_name', 'event_source_url', 'event_time', 'user_data']);
  assert.equal(e.event_name, 'Purchase');
  assert.equal(e.event_id, o.properties.order_id, 'event_id is the order id: the Pixel\'s copy (eventID: the order number) and a resent order are deduplicated');
  assert.equal(e.action_source, 'website');
  assert.equal(e.event_time, Math.floor(Date.parse(o.timestamp) / 1000));
  assert.equal(e.event_source_url, 'https://shop.example/checkout');
  assert.deepEqual(e.user_data.em, [EMAIL]);
  assert.deepEqual(e.user_data.ph, [PHONE_META], 'Meta: digits with the country code, no +');
  assert.match(e.user_data.fbc, /^fb\.1\.\d{13}\.IwAR-e2e-fbclid$/);
  assert.equal(e.user_data.client_user_agent, 'Mozilla/5.0 (X11; Linux x86_64) e2e');
  assert.equal(e.user_data.external_id.length, 1);
  assert.deepEqual(e.custom_data, { value: 42.5, currency: 'EUR', order_id: o.properties.order_id });

  const [google] = await eventually(async () => {
    const r = requestsFor('google', (q) => q.body?.events?.[0]?.transactionId === o.properties.order_id);
    return r.length && r;
  }, 30_000, 'the Google stand-in to receive the order');
  assert.deepEqual(google.problems, []);
  assert.equal(google.headers.authorization, `Bearer ${TOKENS.GOOGLE_TOKEN}`);
  assert.deepEqual(google.body.destinations, [{
    operatingAccount: { accountType: 'GOOGLE_ADS', accountId: '9876543210' },
    productDestinationId: 'customers/9876543210/conversionActions/555',
  }]);
  assert.equal(google.body.encoding, 'HEX');
  assert.deepEqual(google.body.consent, { adUserData: 'CONSENT_GRANTED', adPersonalization: 'CONSENT_GRANTED' });
  const g = google.body.events[0];
  assert.deepEqual(g.userData.userIdentifiers, [{ emailAddress: EMAIL_GOOGLE }, { phoneNumber: PHONE_E164 }],
    'Google: gmail dots removed; E.164 with +');
  assert.deepEqual(g.adIdentifiers, { gclid: 'Cj0KCQ-e2e-gclid' });
  assert.equal(g.eventSource, 'WEB');
  assert.equal(g.conversionValue, 42.5);
  assert.equal(g.currency, 'EUR');
  assert.equal(Date.parse(g.eventTimestamp), Date.parse(o.timestamp));

  await eventually(async () => (await line(o.messageId, 'meta'))?.status === 'delivered', 15_000, 'the Meta line delivered');
  const logged = await line(o.messageId, 'google');
  assert.equal(logged.status, 'delivered');
  assert.equal(logged.httpStatus, 200);
  // Nothing raw in any request any stand-in received.
  for (const r of standins.requests) assert.ok(!/@|\+1650/.test(JSON.stringify(r.body)), r.raw);
});

test('a consent denial sends nothing to the ad platforms, and the log says why', async () => {
  const anon = `act-deny-${randomUUID()}`;
  const denied = { categoryPreferences: { analytics: true, marketing: false, personalization: false } };
  await send([{ ...identify(anon), context: { consent: denied } }]);
  const o = order(anon);
  o.context.consent = denied;
  await send([o]);
  const lines = await eventually(async () => {
    const l = await deliveries(o.messageId);
    return l.length === 2 && l;
  }, 15_000, 'both lines logged');
  for (const l of lines) {
    assert.equal(l.status, 'skipped');
    assert.equal(l.reason, 'consent_marketing');
  }
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(requestsFor('meta', (q) => q.body?.data?.[0]?.event_id === o.properties.order_id).length, 0);
  assert.equal(requestsFor('google', (q) => q.body?.events?.[0]?.transactionId === o.properties.order_id).length, 0);
});

test('a 500 from a stand-in is logged, retried after the backoff and then delivered once', async () => {
  const anon = `act-retry-${randomUUID()}`;
  await send([identify(anon)]);
  standins.fail('meta', 500);
  const o = order(anon);
  await send([o]);
  const retrying = await eventually(async () => {
    const l = await line(o.messageId, 'meta');
    return l && l.status === 'retrying' && l;
  }, 30_000, 'the 500 logged');
  assert.equal(retrying.httpStatus, 500);
  assert.equal(retrying.attempts, 1);
  const done = await eventually(async () => {
    const l = await line(o.messageId, 'meta');
    return l && l.status === 'delivered' && l;
  }, 90_000, 'the retry delivered');
  assert.equal(done.attempts, 2);
  const sent = requestsFor('meta', (q) => q.body?.data?.[0]?.event_id === o.properties.order_id);
  assert.deepEqual(sent.map((q) => q.status), [500, 200]);
  assert.ok(sent[1].at - sent[0].at >= 5_000, `retried after a backoff (${sent[1].at - sent[0].at} ms)`);
});

test('an event older than 7 days is never sent to Meta', async () => {
  const anon = `act-old-${randomUUID()}`;
  await send([identify(anon)]);
  const o = order(anon, { timestamp: ago(8 * 86_400_000) });
  await send([o]);
  const meta = await eventually(() => line(o.messageId, 'meta'), 15_000, 'the Meta line');
  assert.equal(meta.status, 'skipped');
  assert.equal(meta.reason, 'too_old');
  await eventually(async () => (await line(o.messageId, 'google'))?.status === 'delivered', 30_000, 'Google has no such limit');
  assert.equal(requestsFor('meta', (q) => q.body?.data?.[0]?.event_id === o.properties.order_id).length, 0);
});

test('segment changes reach the webhook signed, also when the rescoring finds them', async () => {
  // Its own person: the other tests' orders (one stitched profile) would follow the cart.
  const anon = `act-cart-${randomUUID()}`;
  const cartEmail = sha(`cart.${randomUUID()}@example.org`);
  await send([{ ...identify(anon), traits: { email_sha256: cartEmail } }]);
  const started = { type: 'track', messageId: randomUUID(), anonymousId: anon, event: 'Checkout Started', timestamp: ago(5 * 60_000),
    properties: { total: 180, currency: 'EUR', products: [{ product_id: 'ETH-GUJI', category: 'Light roast' }] } };
  await send([started]);
  const [profile] = await collector.query(`select profile_id from events where message_id = '${started.messageId}'`);
  const entered = (seg) => requestsFor('hook', (q) => q.body?.event?.event === 'Segment Entered'
    && q.body.event.properties.segmentId === seg && q.body.profileId === profile.profile_id);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(entered('cart-abandoned').length, 0, 'not abandoned after 5 minutes');
  // 40 minutes later the cart is abandoned, with no event: the maintenance rescores.
  const later = new Date(Date.now() + 40 * 60_000).toISOString();
  const run = await collector.adminJson(`/admin/v1/maintenance?now=${later}`, { method: 'POST' });
  assert.ok(run.segments.sl_act_key.changes >= 1, JSON.stringify(run.segments));
  const [hook] = await eventually(async () => entered('cart-abandoned').length && entered('cart-abandoned'), 30_000, 'the webhook');
  assert.deepEqual(hook.problems, [], 'signed (HMAC-SHA256 over timestamp.body) and well-formed');
  assert.equal(hook.body.event.properties.segmentName, 'Cart over 150 abandoned in the last 24 h');
  assert.deepEqual(hook.body.hashes.email, [cartEmail]);
  const segs = await collector.adminJson('/admin/v1/segments?writeKey=sl_act_key');
  assert.ok(segs.segments.find((s) => s.id === 'cart-abandoned').members >= 1);
  // Ordering afterwards takes the profile out of it again.
  await send([order(anon)]);
  await eventually(async () => requestsFor('hook', (q) => q.body?.event?.event === 'Segment Exited'
    && q.body.event.properties.segmentId === 'cart-abandoned' && q.body.profileId === profile.profile_id).length, 30_000, 'the exit');
});

test('audiences export in Meta\'s and Google\'s customer-list columns, by the admin API and the CLI', async () => {
  const anon = `act-aud-${randomUUID()}`;
  await send([identify(anon), order(anon)]);
  const denied = `act-aud-denied-${randomUUID()}`;
  const no = { categoryPreferences: { analytics: true, marketing: false } };
  const other = sha('someone.else@example.org');
  await send([{ ...identify(denied), traits: { email_sha256: other }, context: { consent: no } },
    { ...order(denied), context: { consent: no } }]);
  const csv = async (format) => {
    const r = await collector.admin(`/admin/v1/audiences/returning-customer.csv?writeKey=sl_act_key&format=${format}`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/csv/);
    return { text: await r.text(), noConsent: Number(r.headers.get('x-excluded-no-consent')) };
  };
  const meta = await eventually(async () => { const c = await csv('meta'); return c.text.includes(EMAIL) && c; }, 15_000, 'the member listed');
  const [header, ...rows] = meta.text.trim().split('\n');
  assert.equal(header, 'email,phone');
  assert.ok(rows.includes(`${EMAIL},${PHONE_META}`), meta.text);
  for (const r of rows) assert.match(r, /^([0-9a-f]{64})?,([0-9a-f]{64})?$/);
  assert.ok(!meta.text.includes(other), 'a member without marketing consent is left out');
  assert.ok(meta.noConsent >= 1);
  const google = await csv('google');
  const [gh, ...grows] = google.text.trim().split('\n');
  assert.equal(gh, 'Email,Phone');
  assert.ok(grows.includes(`${EMAIL_GOOGLE},${PHONE_E164}`), google.text);
  assert.equal((await collector.admin('/admin/v1/audiences/nope.csv?writeKey=sl_act_key')).status, 404);
  assert.equal((await collector.admin('/admin/v1/audiences/returning-customer.csv?writeKey=sl_act_key&format=x')).status, 400);
  assert.equal((await fetch(`${collector.url}/admin/v1/audiences/returning-customer.csv?writeKey=sl_act_key`)).status, 401);

  assert.ok(existsSync(CLI), 'cargo test builds target/debug/sightline');
  const { stdout } = await promisify(execFile)(CLI, ['audience', 'export', 'returning-customer', '--write-key', 'sl_act_key',
    '--format', 'google', '--url', collector.url], { env: { ...process.env, SIGHTLINE_ADMIN_TOKEN: ADMIN_TOKEN } });
  assert.equal(stdout, google.text);
});

/** One device: a fresh Chromium profile on the example site. */
async function device(steps) {
  const b = await startBrowser();
  try {
    const page = await b.context.newPage();
    await page.goto(`${collector.url}/`);
    await page.evaluate(() => window.sightline.ready);
    return await steps(page);
  } finally {
    await b.close();
  }
}

const subscribe = async (page) => {
  await page.fill('#newsletter input[name=email]', SHOPPER);
  await page.click('#newsletter button');
  await page.evaluate(() => window.sightline.flush());
};

test('personalization in Chromium: a second device\'s soft login sees the offer; without consent nothing personal', async () => {
  // Device 1: accepts, subscribes, orders.
  await device(async (page) => {
    await page.click('#consent-accept');
    assert.equal(await page.isHidden('#offer'), true, 'a new visitor gets no offer');
    await subscribe(page);
    await page.click('button[data-sku=ETH-GUJI]');
    await page.click('#checkout');
    await page.evaluate(() => window.sightline.flush());
  });
  // Device 2: accepts; no offer until the same soft login, then the offer.
  const seen = await device(async (page) => {
    await page.click('#consent-accept');
    await page.evaluate(() => window.sightlineOffer());
    assert.equal(await page.isHidden('#offer'), true);
    await subscribe(page);
    await page.waitForSelector('#offer:not([hidden])', { timeout: 15_000 });
    const answer = await page.evaluate(() => window.sightline.segments());
    return { text: await page.textContent('#offer'), answer, anon: await page.evaluate(() => window.sightline.anonymousId()) };
  });
  assert.match(seen.text, /Welcome back/);
  assert.ok(seen.answer.segments.includes('returning-customer'), JSON.stringify(seen.answer));
  assert.deepEqual(Object.keys(seen.answer.traits), [], 'only shareable traits (the site marks `plan`; none set here)');
  assert.ok(!/[0-9a-f]{64}|@|\d{4}-\d{2}-\d{2}T/.test(JSON.stringify(seen.answer)), 'no hashes, ids or exact times');
  // Device 3: analytics yes, personalization no: the same soft login, no offer, and the
  // endpoint itself answers nothing personal for this visitor.
  const denied = await device(async (page) => {
    await page.click('#consent-necessary');
    await page.evaluate(() => window.sightline.consent.set({ analytics: true, marketing: true, personalization: false }));
    await subscribe(page);
    await page.evaluate(() => window.sightlineOffer());
    await page.waitForTimeout(1000);
    return { hidden: await page.isHidden('#offer'), anon: await page.evaluate(() => window.sightline.anonymousId()),
      answer: await page.evaluate(() => window.sightline.segments()) };
  });
  assert.equal(denied.hidden, true);
  assert.deepEqual(denied.answer, { segments: [], traits: {} });
  const direct = await (await fetch(`${collector.url}/v1/segments?writeKey=sl_dev_key&anonymousId=${denied.anon}`)).json();
  assert.deepEqual(direct, { ok: true, segments: [], traits: {} }, 'the collector checks its own consent record');
  // The second device's answer, asked directly, still holds (it granted personalization).
  const granted = await (await fetch(`${collector.url}/v1/segments?writeKey=sl_dev_key&anonymousId=${seen.anon}`)).json();
  assert.ok(granted.segments.includes('returning-customer'));
  // A foreign origin gets no answer.
  const foreign = await fetch(`${collector.url}/v1/segments?writeKey=sl_dev_key&anonymousId=${seen.anon}`, { headers: { origin: 'https://evil.example' } });
  assert.equal(foreign.status, 403);
});

test('the stand-ins refuse what the platforms document as wrong (so the checks above can fail)', async () => {
  const { checkMeta, checkGoogle, checkHook } = await import('./standins.mjs');
  const good = { data: [{ event_name: 'Purchase', event_time: Math.floor(Date.now() / 1000), event_id: 'm1', action_source: 'website', user_data: { em: [EMAIL] } }], access_token: 't' };
  const json = { 'content-type': 'application/json' };
  assert.deepEqual(checkMeta('/v21.0/1/events', json, good, { pixelId: '1', token: 't' }), []);
  const bad = (f) => { const b = structuredClone(good); f(b.data[0]); return checkMeta('/v21.0/1/events', json, b, { pixelId: '1', token: 't' }); };
  assert.ok(bad((e) => { e.action_source = 'web'; }).length);
  assert.ok(bad((e) => { e.event_time = Math.floor(Date.now() / 1000) - 8 * 86_400; }).length);
  assert.ok(bad((e) => { e.user_data.em = ['john.smith@gmail.com']; }).length);
  assert.ok(bad((e) => { e.user_data.ph = ['+16505551212']; }).length);
  assert.ok(bad((e) => { delete e.event_id; }).length);
  assert.ok(bad((e) => { e.user_data.fbp = 'nope'; }).length);
  const g = { destinations: [{ operatingAccount: { accountType: 'GOOGLE_ADS', accountId: '1' }, productDestinationId: 'c' }], encoding: 'HEX',
    consent: { adUserData: 'CONSENT_GRANTED', adPersonalization: 'CONSENT_DENIED' },
    events: [{ eventTimestamp: new Date().toISOString(), transactionId: 'o1', eventSource: 'WEB', userData: { userIdentifiers: [{ emailAddress: EMAIL }] } }] };
  const gh = { ...json, authorization: 'Bearer t' };
  assert.deepEqual(checkGoogle('/v1/events:ingest', gh, g, { accountId: '1', conversionAction: 'c', token: 't' }), []);
  assert.ok(checkGoogle('/v1/events:ingest', gh, { ...g, encoding: 'BASE64' }, { token: 't' }).length);
  assert.ok(checkGoogle('/v1/events:ingest', json, g, { token: 't' }).length, 'no Bearer token');
  const noOrder = structuredClone(g); delete noOrder.events[0].transactionId;
  assert.ok(checkGoogle('/v1/events:ingest', gh, noOrder, { token: 't' }).length);
  const ts = String(Math.floor(Date.now() / 1000));
  const raw = JSON.stringify({ destination: 'hook', messageId: 'm', event: {} });
  const { createHmac } = await import('node:crypto');
  const sig = 'sha256=' + createHmac('sha256', 'k').update(`${ts}.${raw}`).digest('hex');
  assert.deepEqual(checkHook({ 'x-sightline-timestamp': ts, 'x-sightline-signature': sig }, raw, { secret: 'k' }), []);
  assert.ok(checkHook({ 'x-sightline-timestamp': ts, 'x-sightline-signature': sig }, raw, { secret: 'other' }).length);
});

/** A person of their own (the tests above share one stitched profile). */
async function person(tag) {
  const anon = `act-${tag}-${randomUUID()}`;
  const email = sha(`${tag}.${randomUUID()}@example.org`);
  await send([{ ...identify(anon), traits: { email_sha256: email, plan: 'pro' } }]);
  return { anon, email };
}

test('a consent revoked while a delivery waits for its retry stops it, and the log says why', async () => {
  const { anon } = await person('revoke');
  standins.fail('meta', 500);
  const o = order(anon);
  await send([o]);
  await eventually(async () => (await line(o.messageId, 'meta'))?.status === 'retrying', 30_000, 'the first try failed');
  await send([{ type: 'track', messageId: randomUUID(), anonymousId: anon, event: 'Consent Updated',
    context: { consent: { categoryPreferences: { analytics: true, marketing: false, personalization: false }, source: 'banner' } } }]);
  const stopped = await eventually(async () => {
    const l = await line(o.messageId, 'meta');
    return l && l.status !== 'retrying' && l;
  }, 90_000, 'the retry judged');
  assert.equal(stopped.status, 'skipped');
  assert.equal(stopped.reason, 'consent_marketing');
  assert.deepEqual(requestsFor('meta', (q) => q.body?.data?.[0]?.event_id === o.properties.order_id).map((q) => q.status), [500],
    'nothing sent after the revocation');
});

test('segments declared through the admin API apply at once, and go back to SOURCES\' on DELETE', async () => {
  const base = JSON.parse(await (await fetch(`${collector.url}/sl/segments.json`)).text());
  const big = { id: 'big-basket', name: 'Spent 100+ in 30 days', rule: { sum: { event: 'Order Completed', of: 'total', days: 30, atLeast: 100 } } };
  const put = (body) => collector.admin('/admin/v1/segments?writeKey=sl_act_key', { method: 'PUT', body });
  const refused = await put(JSON.stringify([{ id: 'too-long', rule: { count: { event: 'Order Completed', days: 401 } } }]));
  assert.equal(refused.status, 400);
  assert.match((await refused.json()).error.message, /longer than the 400 days/);
  assert.equal((await put('{"not": "a list"}')).status, 400);
  assert.equal((await put(JSON.stringify([...base, big]))).status, 200);
  const listed = await collector.adminJson('/admin/v1/segments?writeKey=sl_act_key');
  assert.ok(listed.segments.some((s) => s.id === 'big-basket'));
  const { anon } = await person('declared');
  const o = order(anon, {});
  o.properties.total = 120;
  await send([o]);
  const [row] = await collector.query(`select profile_id from events where message_id = '${o.messageId}'`);
  const members = await collector.query(`select segment from segment_members where profile_id = '${row.profile_id}' order by segment`);
  assert.deepEqual(members.map((m) => m.segment), ['big-basket', 'returning-customer']);
  assert.equal((await collector.admin('/admin/v1/segments?writeKey=sl_act_key', { method: 'DELETE' })).status, 200);
  const back = await collector.adminJson('/admin/v1/segments?writeKey=sl_act_key');
  assert.deepEqual(back.segments.map((s) => s.id), base.map((s) => s.id));
});

test('erasure removes the person\'s membership, delivery log and export rows, and no one else\'s', async () => {
  const gone = await person('erase');
  const kept = await person('keep');
  const o1 = order(gone.anon);
  const o2 = order(kept.anon);
  await send([o1]);
  await send([o2]);
  const csv = async () => (await collector.admin('/admin/v1/audiences/returning-customer.csv?writeKey=sl_act_key&format=meta')).text();
  await eventually(async () => { const t = await csv(); return t.includes(gone.email) && t.includes(kept.email); }, 15_000, 'both exported');
  await eventually(async () => (await deliveries(o1.messageId)).length === 2, 30_000, 'the lines logged');
  const [row] = await collector.query(`select profile_id from events where message_id = '${o1.messageId}'`);
  const erased = await collector.adminJson(`/admin/v1/profiles/${row.profile_id}?writeKey=sl_act_key`, { method: 'DELETE' });
  assert.equal(erased.ok, true);
  const text = await csv();
  assert.ok(!text.includes(gone.email), 'the erased person is not exported');
  assert.ok(text.includes(kept.email), 'the other person still is');
  assert.deepEqual(await deliveries(o1.messageId), []);
  assert.equal((await deliveries(o2.messageId)).length, 2);
  assert.deepEqual(await collector.query(`select * from segment_members where profile_id = '${row.profile_id}'`), []);
  assert.deepEqual(await collector.query(`select * from segment_changes where profile_id = '${row.profile_id}'`), []);
  const left = await collector.query(`select count(*) as n from deliveries where instr(job, '${gone.email}') > 0`);
  assert.equal(left[0].n, 0, 'no queued job keeps their hashes');
});

test('the inspector shows the segments and the per-destination delivery log', async () => {
  const b = await startBrowser();
  try {
    const page = await openInspector(b, collector.url, 'activation', 'sl_act_key');
    await page.waitForSelector('#segment-table tr[data-segment=returning-customer]');
    const members = Number(await page.textContent('#segment-table tr[data-segment=returning-customer] td:nth-child(3)'));
    assert.ok(members >= 1, `members ${members}`);
    await page.waitForSelector('#delivery-table tr[data-status=delivered]');
    await page.selectOption('#delivery-filters select[name=status]', 'skipped');
    await page.waitForFunction(() => [...document.querySelectorAll('#delivery-table tbody tr')].every((r) => r.dataset.status === 'skipped')
      && document.querySelectorAll('#delivery-table tbody tr').length > 0);
    const reasons = await page.$$eval('#delivery-table tbody td:nth-child(4)', (tds) => tds.map((t) => t.textContent));
    assert.ok(reasons.includes('consent_marketing') && reasons.includes('too_old'), reasons.join(','));
    assert.match(await page.textContent('#delivery-totals'), /meta delivered: \d+/);
    mkdirSync(join(ROOT, 'target/e2e-artifacts'), { recursive: true });
    await page.screenshot({ path: join(ROOT, 'target/e2e-artifacts/inspector-activation.png'), fullPage: true });
  } finally {
    await b.close();
  }
});

test('a destination that stays down: six tries with a doubling backoff, then the dead-letter queue, then a replay delivers it once', async () => {
  standins.down('hook', '/dead', true);
  const o = order(`act-dead-${randomUUID()}`);
  await send([o], 'sl_dead_key');
  const deadLine = async () => (await collector.adminJson(
    `/admin/v1/deliveries?writeKey=sl_dead_key&messageId=${o.messageId}`)).deliveries.find((d) => d.destination === 'hook-dead');
  const dead = await eventually(async () => {
    const l = await deadLine();
    return l && l.status === 'dead' && l;
  }, 120_000, 'every try failed');
  assert.equal(dead.attempts, 6);
  assert.equal(dead.httpStatus, 503);
  const tries = requestsFor('hook', (q) => q.path === '/dead' && q.body?.messageId === o.messageId);
  assert.deepEqual(tries.map((q) => q.status), [503, 503, 503, 503, 503, 503]);
  // 1 s, then doubling: each wait at least the backoff asked (less a little for the clock).
  tries.slice(1).forEach((q, i) => {
    const gap = q.at - tries[i].at;
    assert.ok(gap >= (1000 << i) - 250, `retry ${i + 1} after ${gap} ms, not before ${1000 << i} ms`);
  });
  // Nothing more is tried while it lies in the dead-letter queue.
  await new Promise((r) => setTimeout(r, 3_000));
  assert.equal(requestsFor('hook', (q) => q.path === '/dead' && q.body?.messageId === o.messageId).length, 6);
  assert.equal((await deadLine()).status, 'dead');

  standins.down('hook', '/dead', false);
  const replay = (await collector.adminJson('/admin/v1/deliveries/replay?writeKey=sl_dead_key', { method: 'POST' })).replayed;
  assert.equal(replay, 1);
  const done = await eventually(async () => {
    const l = await deadLine();
    return l && l.status === 'delivered' && l;
  }, 60_000, 'the replay delivered');
  assert.equal(done.httpStatus, 200);
  const all = requestsFor('hook', (q) => q.path === '/dead' && q.body?.messageId === o.messageId);
  assert.deepEqual(all.map((q) => q.status), [503, 503, 503, 503, 503, 503, 200]);
  assert.deepEqual(all[6].problems, [], 'the replayed request is signed and well formed');
  assert.equal((await collector.adminJson('/admin/v1/deliveries/replay?writeKey=sl_dead_key', { method: 'POST' })).replayed, 0,
    'a delivered job is never replayed');
});

test('an unmerge rescores both profiles at once from their own events', async () => {
  // Device 1: three light-roast orders (a category fan). Device 2: one dark-roast order,
  // then the same email merges it into device 1's profile, and it orders twice more.
  const [a1, a2] = [`act-um1-${randomUUID()}`, `act-um2-${randomUUID()}`];
  const dark = (anon) => order(anon, { properties: { order_id: `o-${randomUUID().slice(0, 8)}`, total: 20, currency: 'EUR',
    products: [{ product_id: 'KEN-AA', category: 'Dark roast', price: 20, quantity: 1 }] } });
  await send([order(a1), order(a1), order(a1)]);
  const d1 = dark(a2);
  await send([d1]);
  const email = sha(`unmerge.${randomUUID()}@example.org`);
  await send([{ ...identify(a1), traits: { email_sha256: email } }]);
  await send([{ ...identify(a2), traits: { email_sha256: email } }]);
  await send([dark(a2), dark(a2)]);
  const profileOf = async (anon) =>
    (await collector.adminJson(`/admin/v1/profiles?writeKey=sl_act_key&anonymousId=${anon}`)).profile;
  const merged = await profileOf(a2);
  assert.equal(merged.id, (await profileOf(a1)).id, 'one profile after the soft login');
  const membersOf = async (id) => (await collector.query(
    `select segment from segment_members where write_key = 'sl_act_key' and profile_id = '${id}'`)).map((r) => r.segment);
  const un = await collector.adminJson(`/admin/v1/profiles/${merged.id}/unmerge?writeKey=sl_act_key`, { method: 'POST', body: '{}' });
  const restored = un.unmerged.restored.id;
  assert.notEqual(restored, merged.id);
  assert.ok(un.segmentChanges >= 2, JSON.stringify(un));
  // At once, without another event: each side's own orders decide.
  assert.deepEqual((await membersOf(restored)).sort(), ['category-fan', 'returning-customer']);
  assert.deepEqual((await membersOf(merged.id)).sort(), ['category-fan', 'returning-customer']);
  const view = await collector.adminJson(`/admin/v1/profiles/${restored}?writeKey=sl_act_key`);
  assert.deepEqual(view.segments.map((x) => x.segment), ['category-fan', 'returning-customer'], 'the 360 view lists them');
  const graph = async (id) => (await collector.adminJson(`/admin/v1/profiles/${id}?writeKey=sl_act_key`)).profile.activity;
  assert.equal((await graph(merged.id)).f.length, 3, 'the surviving profile counts only its own orders');
  assert.equal((await graph(restored)).f.length, 3, 'the restored one counts its three, two of them sent after the merge');
});
