// The whole path, end to end: the example site in headless Chromium loads the snippet and
// the wasm SDK from the collector's origin; page views and a track call travel to the Rust
// worker in workerd and land as rows in local D1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCollector, startBrowser, eventually, WRITE_KEY } from './harness.mjs';

let collector, browser;
before(async () => {
  collector = await startCollector();
  browser = await startBrowser();
});
after(async () => {
  await browser?.close();
  await collector?.dispose();
});

const post = (path, body, headers = {}) =>
  fetch(`${collector.url}${path}`, {
    method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'content-type': 'text/plain', ...headers },
  });

test('page views and a track call from the example site land in D1', async () => {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${collector.url}/`);
  await page.evaluate(() => window.sightline.ready);
  // The example site asks first (opt-in): the banner grants consent.
  await page.click('#consent-accept');
  const anonymousId = await page.evaluate(() => window.sightline.anonymousId());
  assert.match(anonymousId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

  await page.click('button[data-sku="ETH-GUJI"]');
  await page.evaluate(() => window.sightline.flush());
  await page.click('a[href="/about"]');
  await page.waitForURL('**/about');
  await page.evaluate(() => window.sightline.ready);
  // The anonymous id is kept first-party across pages.
  assert.equal(await page.evaluate(() => window.sightline.anonymousId()), anonymousId);
  await page.evaluate(() => window.sightline.flush());

  const rows = await eventually(async () => {
    const r = await collector.query(
      `select * from events where anonymous_id = '${anonymousId}' and (event is null or event != 'Consent Updated') order by timestamp`);
    return r.length >= 3 && r;
  }, 20_000, 'three events in D1');
  assert.deepEqual(rows.map((r) => [r.type, r.event]), [
    ['page', null], ['track', 'Product Added'], ['page', 'About'],
  ]);
  for (const r of rows) {
    assert.equal(r.write_key, WRITE_KEY);
    assert.match(r.message_id, /^[0-9a-f-]{36}$/);
    assert.equal(r.user_id, null);
    assert.match(r.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.match(r.received_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
  assert.equal(new Set(rows.map((r) => r.message_id)).size, 3);
  const track = JSON.parse(rows[1].payload);
  assert.deepEqual(track.properties, {
    product_id: 'ETH-GUJI', name: 'Ethiopia Guji', price: 14.5, currency: 'EUR', quantity: 1,
  });
  assert.equal(track.context.library.name, 'sightline.js');
  assert.equal(track.context.page.path, '/');
  assert.equal(track.context.page.title, 'Sightline Coffee');
  const about = JSON.parse(rows[2].payload);
  assert.equal(about.properties.path, '/about');
  assert.equal(about.context.page.referrer, `${collector.url}/`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('calls made before the SDK loads are replayed in order', async () => {
  const page = await browser.context.newPage();
  // Hold the SDK back until three calls have been queued on the stub.
  let release;
  const held = new Promise((r) => { release = r; });
  await page.route('**/sl/sightline.js', async (route) => { await held; await route.continue(); });
  await page.goto(`${collector.url}/about`, { waitUntil: 'domcontentloaded' });
  await page.evaluate(() => {
    window.sightline.consent.set({ analytics: true });
    for (const n of [1, 2, 3]) window.sightline.track('Queued ' + n, { n });
  });
  assert.equal(await page.evaluate(() => Array.isArray(window.sightline)), true);
  release();
  await page.evaluate(() => window.sightline.ready);
  await page.evaluate(() => window.sightline.flush());
  const anonymousId = await page.evaluate(() => window.sightline.anonymousId());
  const rows = await eventually(async () => {
    const r = await collector.query(
      `select event, payload from events where anonymous_id = '${anonymousId}' and event like 'Queued %'`);
    return r.length >= 3 && r;
  }, 20_000, 'queued events');
  const byTime = rows.map((r) => JSON.parse(r.payload))
    .sort((a, b) => a.originalTimestamp.localeCompare(b.originalTimestamp) || a.properties.n - b.properties.n);
  assert.deepEqual(byTime.map((m) => m.event), ['Queued 1', 'Queued 2', 'Queued 3']);
  await page.close();
});

test('the collector answers per-event verdicts, dedups retries and quarantines bad events', async () => {
  const event = { type: 'track', messageId: 'e2e-dup-1', anonymousId: 'server-1', event: 'Retried' };
  let r = await post('/v1/batch', { writeKey: WRITE_KEY, batch: [event, { type: 'track', messageId: 'e2e-bad-1', anonymousId: 'x' }] });
  assert.equal(r.status, 200);
  let body = await r.json();
  assert.deepEqual(body.results.map((v) => v.status), ['accepted', 'quarantined']);
  assert.equal(body.results[1].reasons[0].kind, 'missing_required');

  r = await post('/v1/batch', { writeKey: WRITE_KEY, batch: [event] });
  body = await r.json();
  assert.deepEqual(body.results.map((v) => v.status), ['duplicate']);
  const stored = await collector.query(`select count(*) as n from events where message_id = 'e2e-dup-1'`);
  assert.equal(stored[0].n, 1);
  const q = await collector.query(`select message_id, reasons, payload from quarantine where message_id = 'e2e-bad-1'`);
  assert.equal(q.length, 1);
  assert.equal(JSON.parse(q[0].reasons)[0].kind, 'missing_required');
  assert.equal(JSON.parse(q[0].payload).anonymousId, 'x');
});

test('request-level errors are clear 4xx with a JSON cause', async () => {
  const cases = [
    ['/v1/batch', '{nope', {}, 400, 'invalid_json'],
    ['/v1/batch', { batch: [] }, {}, 401, 'missing_write_key'],
    ['/v1/batch', { batch: [], writeKey: 'wrong' }, {}, 401, 'unknown_write_key'],
    ['/v1/batch', 'x'.repeat(600 * 1024), {}, 413, 'batch_too_large'],
    ['/v1/nothing', '{}', {}, 404, 'not_found'],
  ];
  for (const [path, body, headers, status, code] of cases) {
    const r = await post(path, body, headers);
    assert.equal(r.status, status, `${path} ${code}`);
    assert.equal((await r.json()).error.code, code);
  }
  const basic = 'Basic ' + Buffer.from(`${WRITE_KEY}:`).toString('base64');
  const r = await post('/v1/t', { messageId: 'e2e-basic', userId: 'u1', event: 'Server Side' },
    { authorization: basic, 'content-type': 'application/json' });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).accepted, 1);
  const admin = await collector.admin('/admin/v1/events?event=Server%20Side');
  const rows = (await admin.json()).events;
  assert.equal(rows.length, 1);
  assert.equal(rows[0].userId, 'u1');
  assert.equal((await fetch(`${collector.url}/admin/v1/events`)).status, 401);
});
