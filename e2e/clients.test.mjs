// Real client libraries pointed at the real collector in workerd, each with every
// message type it sends: Segment's analytics.js (analytics-next, in headless Chromium,
// loading its settings from the collector as it would from Segment's CDN; and under
// Segment's consent wrapper, analytics-consent-tools, stamping OneTrust's groups),
// RudderStack's browser SDK (in Chromium, its source config from the collector; same
// origin, another origin, its sendBeacon mode and its consent manager), Jitsu's browser
// SDK, Snowplow's browser tracker and posthog-js (in Chromium, same origin and another),
// Segment's Python library, RudderStack's Node SDK, PostHog's Node and Python libraries
// and posthog-js-lite, Snowplow's Node and Python trackers and Jitsu's library on a
// server. (Segment's Node library is in collector.test.mjs.) Each one's events are
// stored once, none is quarantined or refused, and a raw email a library sends in traits
// is hashed before it is kept.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { startCollector, startBrowser, eventually, ROOT, TEST_SOURCES } from './harness.mjs';

const require = createRequire(import.meta.url);
const sha256 = (s) => createHash('sha256').update(s).digest('hex');
const PYTHON = join(ROOT, 'target/clients-venv/bin/python');

const RSA_SDK = join(ROOT, 'node_modules/@rudderstack/analytics-js/dist/npm/modern/lite/umd/index.js');
const RSA_PAGE = `<!doctype html><html><head><meta charset="utf-8"><script src="/vendor/rsa/index.js"></script></head>
  <body><p>A shop on RudderStack's SDK.</p></body></html>`;
const JITSU_SDK = join(ROOT, 'node_modules/@jitsu/js/dist/jitsu.es.js');
const JITSU_PAGE = `<!doctype html><html><head><meta charset="utf-8"><script type="module">
  import { jitsuAnalytics } from '/vendor/jitsu/jitsu.es.js'; window.jitsuAnalytics = jitsuAnalytics;
  </script></head><body><p>A shop on Jitsu's SDK.</p></body></html>`;
const SNOWPLOW_SDK = join(ROOT, 'node_modules/@snowplow/browser-tracker/dist/index.umd.min.js');
const SNOWPLOW_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>Shop</title>
  <script src="/vendor/snowplow/sp.js"></script></head><body><p>A shop on Snowplow's tracker.</p></body></html>`;
const POSTHOG_SDK = join(ROOT, 'node_modules/posthog-js/dist/array.js');
const POSTHOG_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>Shop</title>
  <script src="/vendor/posthog/array.js"></script></head><body><p>A shop on posthog-js.</p></body></html>`;
/** What the shops serve: path prefix -> [content type, body]. */
const SHOP_FILES = [
  ['/vendor/posthog/', 'text/javascript', () => readFileSync(POSTHOG_SDK)],
  ['/shop-on-posthog.html', 'text/html', () => POSTHOG_PAGE],
  ['/vendor/snowplow/', 'text/javascript', () => readFileSync(SNOWPLOW_SDK)],
  ['/shop-on-snowplow.html', 'text/html', () => SNOWPLOW_PAGE],
  ['/vendor/rsa/', 'text/javascript', () => readFileSync(RSA_SDK)],
  ['/vendor/jitsu/', 'text/javascript', () => readFileSync(JITSU_SDK)],
  ['/shop-on-jitsu.html', 'text/html', () => JITSU_PAGE],
  ['/', 'text/html', () => RSA_PAGE],
];
const shopFile = (path) => SHOP_FILES.find(([prefix]) => path.startsWith(prefix));

let collector;
// A shop on another origin than the collector's (a site whose collector is on another
// host): a plain HTTP server, not the browser's request interception, which would answer
// CORS preflights itself. The example site's key takes its events.
let other;
let shop;
before(async () => {
  shop = createServer((req, res) => {
    const [, type, body] = shopFile(req.url);
    res.writeHead(200, { 'content-type': type });
    res.end(body());
  });
  await new Promise((resolve) => shop.listen(0, '127.0.0.1', resolve));
  other = `http://127.0.0.1:${shop.address().port}`;
  const sl_dev_key = { ...TEST_SOURCES.sl_dev_key, origins: [...TEST_SOURCES.sl_dev_key.origins, other] };
  collector = await startCollector({ sources: { ...TEST_SOURCES, sl_dev_key } });
});
after(async () => { await collector?.dispose(); shop?.close(); });

const stored = (where) => collector.query(`select type, event, user_id, anonymous_id, payload from events where ${where}`);
const quarantined = (where) => collector.query(`select reason from quarantine where ${where}`);

test('analytics.js (analytics-next) loads its settings from the collector and delivers every call', async () => {
  const umd = dirname(require.resolve('@segment/analytics-next/dist/umd/index.js'));
  const page = `<!doctype html><html><head><meta charset="utf-8"><script src="/vendor/ajs/index.js"></script></head>
    <body><p>A shop on analytics.js, its CDN pointed at its own origin.</p></body></html>`;
  const browser = await startBrowser();
  const requests = [];
  try {
    const tab = await browser.context.newPage();
    tab.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
    await tab.route((url) => url.pathname === '/shop-on-ajs.html', (r) => r.fulfill({ contentType: 'text/html', body: page }));
    // The library's own files, served by the site (as it would host them).
    await tab.route(`${collector.url}/vendor/ajs/**`, (r) => r.fulfill({ path: join(umd, 'index.js'), contentType: 'text/javascript' }));
    await tab.route(`${collector.url}/analytics-next/bundles/**`, (r) =>
      r.fulfill({ path: join(umd, new URL(r.request().url()).pathname.split('/').pop()), contentType: 'text/javascript' }));
    await tab.goto(`${collector.url}/shop-on-ajs.html?utm_source=ajs&utm_medium=email`);
    const anon = await tab.evaluate(async () => {
      const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load(
        { writeKey: 'sl_dev_key', cdnURL: location.origin }, { integrations: {} });
      await analytics.page('Shop', { path: '/shop-on-ajs.html' });
      await analytics.track('Product Added', { product_id: 'ETH-GUJI', name: 'Ethiopia Guji', price: 14.5, currency: 'EUR', quantity: 1 });
      await analytics.identify('ajs-user-1', { email: 'Ajs.User@Example.com', plan: 'pro' });
      await analytics.group('ajs-group', { name: 'Acme' });
      await analytics.alias('ajs-user-1');
      // A title cut through an emoji: JSON.stringify writes its lone surrogate escaped.
      await analytics.track('Title Cut', { title: 'Guji ☕😀'.slice(0, -1) });
      return analytics.user().anonymousId();
    });
    assert.ok(requests.includes('GET /v1/projects/sl_dev_key/settings'), requests.join(', '));
    const rows = await eventually(async () => {
      const r = await stored(`anonymous_id = '${anon}'`);
      return r.length >= 6 && r;
    }, 20_000, 'analytics.js events');
    assert.deepEqual(rows.map((r) => r.type).sort(), ['alias', 'group', 'identify', 'page', 'track', 'track']);
    const cut = JSON.parse(rows.find((r) => r.event === 'Title Cut').payload);
    assert.equal(cut.properties.title, 'Guji ☕\ufffd', 'the lone surrogate read as U+FFFD, as the browser reads it');
    assert.equal(rows.find((r) => r.type === 'track').event, 'Product Added');
    const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
    assert.equal(identify.traits.email, sha256('ajs.user@example.com'), 'raw email hashed');
    assert.equal(identify.context.library.name, 'analytics.js');
    assert.equal(JSON.parse(rows.find((r) => r.type === 'page').payload).context.campaign.source, 'ajs');
    assert.deepEqual(await quarantined(`anonymous_id = '${anon}'`), []);
    // Its batching delivery (`deliveryStrategy: batching`): many calls to one POST to
    // `/b`, `{batch, sentAt, writeKey}` as text/plain, sent with keepalive.
    const batched = await tab.evaluate(async () => {
      localStorage.clear();
      const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load({ writeKey: 'sl_dev_key', cdnURL: location.origin }, {
        integrations: { 'Segment.io': { deliveryStrategy: { strategy: 'batching', config: { size: 5, timeout: 300 } } } },
      });
      await analytics.reset();
      for (let i = 0; i < 5; i++) analytics.track('Video Played', { n: i });
      return analytics.user().anonymousId();
    });
    const inBatch = await storedOnce(batched, 5, 'analytics.js batching delivery');
    assert.deepEqual(inBatch.map((r) => JSON.parse(r.payload).properties.n).sort(), [0, 1, 2, 3, 4]);
    assert.ok(requests.includes('POST /b') || requests.includes('POST /v1/b'), requests.join(', '));
    // An unknown write key gets no settings.
    assert.equal((await fetch(`${collector.url}/v1/projects/not_a_key/settings`)).status, 404);
  } finally {
    await browser.close();
  }
});

test("analytics.js under Segment's consent wrapper (analytics-consent-tools), stamping OneTrust's groups: kept on an opt-in site, marketing denied, a revocation stops collection", async () => {
  const umd = dirname(require.resolve('@segment/analytics-next/dist/umd/index.js'));
  // Segment's consent tools ship as modules only; bundled here as a site's build would.
  const { build } = await import('esbuild');
  const tools = (await build({
    stdin: { contents: "export { createWrapper } from '@segment/analytics-consent-tools';", resolveDir: ROOT },
    bundle: true, format: 'iife', globalName: 'SegmentConsentTools', write: false,
  })).outputFiles[0].text;
  const page = `<!doctype html><html><head><meta charset="utf-8"><script src="/vendor/ajs/index.js"></script>
    <script src="/vendor/consent-tools.js"></script></head><body><p>A shop on analytics.js behind OneTrust.</p></body></html>`;
  const browser = await startBrowser();
  try {
    const tab = await browser.context.newPage();
    await tab.route((url) => url.pathname === '/shop-on-ajs-onetrust.html', (r) => r.fulfill({ contentType: 'text/html', body: page }));
    await tab.route(`${collector.url}/vendor/consent-tools.js`, (r) => r.fulfill({ contentType: 'text/javascript', body: tools }));
    await tab.route(`${collector.url}/vendor/ajs/**`, (r) => r.fulfill({ path: join(umd, 'index.js'), contentType: 'text/javascript' }));
    await tab.route(`${collector.url}/analytics-next/bundles/**`, (r) =>
      r.fulfill({ path: join(umd, new URL(r.request().url()).pathname.split('/').pop()), contentType: 'text/javascript' }));
    await tab.goto(`${collector.url}/shop-on-ajs-onetrust.html?utm_source=ot&gclid=OT-GCLID-1`);
    const anon = await tab.evaluate(async () => {
      // OneTrust as Segment's OneTrust wrapper reads it: every group by its id, true
      // when active (performance C0002 and functional C0003 granted, targeting C0004 not).
      let active = ['C0001', 'C0002', 'C0003'];
      const changed = [];
      window.revoke = () => { active = ['C0001']; changed.forEach((f) => f()); };
      const groups = () => Object.fromEntries(['C0001', 'C0002', 'C0003', 'C0004', 'C0005'].map((g) => [g, active.includes(g)]));
      const withOneTrust = window.SegmentConsentTools.createWrapper({
        shouldLoadSegment: (ctx) => ctx.load({ consentModel: 'opt-in' }),
        getCategories: groups,
        registerOnConsentChanged: (set) => changed.push(() => set(groups())),
      });
      const analytics = new window.AnalyticsNext.AnalyticsBrowser();
      withOneTrust(analytics).load({ writeKey: 'sl_optin_key', cdnURL: location.origin }, { integrations: {} });
      await analytics.page('Shop', { path: '/shop-on-ajs-onetrust.html' });
      await analytics.track('Product Added', { product_id: 'ETH-GUJI', name: 'Ethiopia Guji', price: 14.5, currency: 'EUR', quantity: 1 });
      await analytics.identify('ot-user-1', { email: 'Ot.User@Example.com' });
      window.ajs = analytics;
      return (await analytics.user()).anonymousId();
    });
    const rows = await storedOnce(anon, 3, 'analytics.js events under OneTrust\'s groups');
    assert.deepEqual(rows.map((r) => r.type).sort(), ['identify', 'page', 'track']);
    const kept = JSON.parse(rows.find((r) => r.type === 'page').payload);
    assert.deepEqual(kept.context.consent.enforced, { necessary: true, analytics: true, marketing: false, personalization: true });
    assert.equal(kept.context.clickIds, undefined, 'a click id needs the targeting group');
    assert.equal(kept.context.campaign.source, 'ot');
    assert.equal(JSON.parse(rows.find((r) => r.type === 'identify').payload).traits.email, sha256('ot.user@example.com'));
    // The visitor withdraws C0002: the wrapper's consent event is logged, and what
    // follows is refused and kept nowhere.
    const refused = tab.waitForResponse((r) => (r.request().postData() || '').includes('After Revocation'));
    await tab.evaluate(async () => {
      window.revoke();
      await window.ajs.track('After Revocation');
    });
    const verdict = await (await refused).json();
    assert.deepEqual(verdict.results.map((r) => [r.status, r.reasons[0].kind]), [['refused', 'consent_denied']]);
    const log = await eventually(async () => {
      const l = (await collector.adminJson(`/admin/v1/consent?anonymousId=${anon}`)).consent;
      return l.some((e) => JSON.parse(e.categories).analytics === false) && l;
    }, 20_000, 'the revocation in the consent log');
    assert.deepEqual(JSON.parse(log[0].categories), { necessary: true, analytics: false, marketing: false, personalization: false });
    assert.equal((await stored(`anonymous_id = '${anon}'`)).length, 3, 'nothing stored after the revocation');
    assert.deepEqual(await quarantined(`anonymous_id = '${anon}'`), []);
  } finally {
    await browser.close();
  }
});

/** On the collector's origin, the shop's page and the library's files are served by the
 * browser's request interception, as the site would host them (another origin has its
 * own server). */
async function serveShop(tab, origin) {
  if (origin !== collector.url) return;
  await tab.route((url) => url.origin === origin && ['/vendor/', '/shop-on-'].some((p) => url.pathname.startsWith(p)), (r) => {
    const [, contentType, body] = shopFile(new URL(r.request().url()).pathname);
    return r.fulfill({ contentType, body: body() });
  });
}

/** A new visitor's tab on `origin`'s `page` (the shop's files served as by
 * [`serveShop`]), with the requests it made, those that failed, and the statuses its
 * POSTs were answered with. */
async function openShop(browser, origin, page) {
  await browser.context.clearCookies();
  const tab = await browser.context.newPage();
  const requests = [];
  tab.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}${new URL(r.url()).search}`));
  const failed = [];
  tab.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText}`));
  const answered = [];
  tab.on('response', (r) => r.request().method() === 'POST' && answered.push(r.status()));
  await serveShop(tab, origin);
  await tab.goto(`${origin}/${page}`);
  return { tab, requests, failed, answered };
}

/** Runs `visit(browser, origin)` from the collector's origin, then from another, in one
 * browser. */
async function fromBothOrigins(visit) {
  const browser = await startBrowser();
  try {
    for (const origin of [collector.url, other]) await visit(browser, origin);
  } finally {
    await browser.close();
  }
}

/** The stored rows of a visitor, once there are `n` of them. */
function storedOnce(anon, n, what, ms = 20_000) {
  return eventually(async () => {
    const r = await stored(`anonymous_id = '${anon}'`);
    return r.length >= n && r;
  }, ms, what);
}

/** RudderStack's browser SDK (v3, its npm "lite" build: plugins bundled, nothing from
 * RudderStack's CDN) on a page of `origin`, its data plane and its source config both
 * pointed at the collector. Returns the visitor's anonymous id and the requests made. */
async function rudderstackIn(browser, origin, { writeKey = 'sl_dev_key', globals = {}, ...options } = {}) {
  const shop = await openShop(browser, origin, 'shop-on-rudderstack.html?utm_source=rudder&utm_medium=email');
  const anon = await shop.tab.evaluate(async ({ dataPlane, writeKey, globals, options }) => {
    localStorage.clear(); // each run is a new visitor (the SDK keeps its id here and in a cookie)
    Object.assign(window, globals); // a consent manager's globals, as its own script sets them
    const ra = new window.rudderanalytics.RudderAnalytics();
    await new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error('the SDK did not get ready in 10 s')), 10_000);
      ra.load(writeKey, dataPlane, { configUrl: dataPlane, logLevel: 'ERROR', ...options });
      ra.ready(resolve);
    });
    ra.page('Shop', { path: '/shop-on-rudderstack.html' });
    ra.track('Product Added', { product_id: 'ETH-GUJI', name: 'Ethiopia Guji', price: 14.5, currency: 'EUR', quantity: 1 });
    ra.identify('rsa-user', { email: 'Rsa.User@Example.com', plan: 'pro' });
    ra.group('rsa-group', { name: 'Acme' });
    ra.alias('rsa-user-alias');
    window.ra = ra;
    return ra.getAnonymousId();
  }, { dataPlane: collector.url, writeKey, globals, options });
  return { ...shop, anon };
}

async function deliveredOnce(anon, what) {
  const rows = await storedOnce(anon, 5, what);
  assert.deepEqual(rows.map((r) => r.type).sort(), ['alias', 'group', 'identify', 'page', 'track']);
  // RudderStack's SDK sends an identify call's traits in `context.traits` only.
  const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
  assert.equal(identify.context.traits.email, sha256('rsa.user@example.com'), 'raw email hashed');
  assert.match(identify.context.library.name, /RudderLabs JavaScript SDK/);
  assert.equal(JSON.parse(rows.find((r) => r.type === 'page').payload).context.campaign.source, 'rudder');
  assert.deepEqual(await quarantined(`anonymous_id = '${anon}'`), []);
}

test("RudderStack's browser SDK loads its source config from the collector and delivers every call, from its own origin and another, under its consent manager", async () => {
  const browser = await startBrowser();
  try {
    const same = await rudderstackIn(browser, collector.url);
    assert.ok(same.requests.some((r) => r.startsWith('GET /sourceConfig')), same.requests.join(', '));
    await deliveredOnce(same.anon, 'RudderStack events (same origin)');
    await same.tab.close();
    // From another origin: a preflight for the SDK's own headers (AnonymousId, SentAt, its
    // retry headers) and for the config's Authorization, then the same delivery.
    const cross = await rudderstackIn(browser, other);
    assert.ok(cross.requests.some((r) => r.startsWith('GET /sourceConfig')), cross.requests.join(', '));
    await deliveredOnce(cross.anon, 'RudderStack events (another origin)');
    assert.deepEqual(cross.failed, []);
    await cross.tab.close();
    // Its sendBeacon mode: `/beacon/v1/batch?writeKey=…`, the key in the URL.
    const beacon = await rudderstackIn(browser, collector.url, { useBeacon: true, beaconQueueOptions: { flushQueueInterval: 200 } });
    await deliveredOnce(beacon.anon, 'RudderStack events (sendBeacon)');
    assert.ok(beacon.requests.some((r) => r.startsWith('POST /beacon/v1/batch?writeKey=sl_dev_key')), beacon.requests.join(', '));
    await beacon.tab.close();
    // An opt-in source: RudderStack's consent manager states the categories (its ids
    // name them); without it nothing is kept, not even in the quarantine.
    const consented = await rudderstackIn(browser, collector.url, {
      writeKey: 'sl_optin_key',
      consentManagement: { enabled: true, provider: 'custom', allowedConsentIds: ['analytics'], deniedConsentIds: ['marketing'] },
    });
    await deliveredOnce(consented.anon, 'RudderStack events under its consent manager');
    const kept = JSON.parse((await stored(`anonymous_id = '${consented.anon}' and type = 'track'`))[0].payload);
    assert.equal(kept.context.consent.enforced.analytics, true);
    assert.equal(kept.context.consent.enforced.marketing, false);
    // The visitor withdraws through the SDK's consent(): its "Consent Management
    // Interaction" event is the proof, logged though it denies analytics; nothing else
    // of it is kept.
    await consented.tab.evaluate(() => window.ra.consent({
      consentManagement: { allowedConsentIds: [], deniedConsentIds: ['analytics', 'marketing'] }, trackConsent: true }));
    const withdrawn = await eventually(async () => {
      const l = (await collector.adminJson(`/admin/v1/consent?anonymousId=${consented.anon}`)).consent;
      return l.find((e) => JSON.parse(e.categories).analytics === false);
    }, 20_000, 'the withdrawal in the consent log');
    assert.equal(JSON.parse(withdrawn.categories).marketing, false);
    assert.equal((await stored(`anonymous_id = '${consented.anon}'`)).length, 5, 'the withdrawal itself is not an event');
    await consented.tab.close();
    // iubenda, whose purposes RudderStack's SDK sends by number: 4 (measurement)
    // granted, 5 (marketing) denied.
    const iubenda = await rudderstackIn(browser, collector.url, {
      writeKey: 'sl_optin_key',
      consentManagement: { enabled: true, provider: 'iubenda' },
      globals: { _iub: { cs: { consent: { purposes: { 1: true, 3: true, 4: true, 5: false } } } } },
    });
    await deliveredOnce(iubenda.anon, 'RudderStack events under iubenda');
    const iub = JSON.parse((await stored(`anonymous_id = '${iubenda.anon}' and type = 'track'`))[0].payload);
    assert.deepEqual(iub.context.consentManagement.allowedConsentIds, ['1', '3', '4']);
    assert.deepEqual(iub.context.consent.enforced, { necessary: true, analytics: true, marketing: false, personalization: true });
    await iubenda.tab.close();
    const silent = await rudderstackIn(browser, collector.url, { writeKey: 'sl_optin_key' });
    await eventually(() => silent.answered.length >= 5, 20_000, 'the five calls answered');
    assert.deepEqual(await stored(`anonymous_id = '${silent.anon}'`), []);
    assert.deepEqual(await quarantined(`anonymous_id = '${silent.anon}'`), []);
    // An unknown write key gets no config.
    assert.equal((await fetch(`${collector.url}/sourceConfig/?writeKey=not_a_key`)).status, 404);
  } finally {
    await browser.close();
  }
});

test("Jitsu's browser SDK sends every call with its write key in X-Write-Key, from the collector's origin and another", async () => {
  await fromBothOrigins(async (browser, origin) => {
    const { tab, failed } = await openShop(browser, origin, 'shop-on-jitsu.html?utm_source=jitsu&utm_medium=email');
    await tab.waitForFunction(() => window.jitsuAnalytics);
    const anon = await tab.evaluate(async (host) => {
      localStorage.clear();
      const j = window.jitsuAnalytics({ host, writeKey: 'sl_dev_key' });
      await j.page('Shop', { path: '/shop-on-jitsu.html' });
      await j.track('Product Added', { product_id: 'ETH-GUJI', name: 'Ethiopia Guji', price: 14.5, currency: 'EUR', quantity: 1 });
      await j.identify('jitsu-user', { email: 'Jitsu.User@Example.com', plan: 'pro' });
      await j.group('jitsu-group', { name: 'Acme' });
      return j.user().anonymousId;
    }, collector.url);
    assert.ok(anon, 'an anonymous id');
    const rows = await storedOnce(anon, 4, `Jitsu events from ${origin}`);
    assert.deepEqual(rows.map((r) => r.type).sort(), ['group', 'identify', 'page', 'track']);
    const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
    assert.equal(identify.traits.email, sha256('jitsu.user@example.com'), 'raw email hashed');
    assert.equal(identify.writeKey, undefined, 'the masked key in the body is not kept');
    assert.equal(JSON.parse(rows.find((r) => r.type === 'page').payload).context.campaign.source, 'jitsu');
    assert.deepEqual(await quarantined(`anonymous_id = '${anon}'`), []);
    assert.deepEqual(failed, []);
    await tab.close();
  });
});

test("Snowplow's browser tracker sends page views, structured and self-describing events, from the collector's origin and another", async () => {
  await fromBothOrigins(async (browser, origin) => {
    const { tab, failed } = await openShop(browser, origin, 'shop-on-snowplow.html?utm_source=snowplow&utm_medium=email');
    const duid = await tab.evaluate((host) => {
      const sp = window.snowplowBrowserTracking;
      // The tracker's appId is the write key.
      const t = sp.newTracker(`sp${Math.random()}`.replace('.', ''), host, { appId: 'sl_dev_key', platform: 'web', bufferSize: 1 });
      sp.trackPageView();
      sp.trackStructEvent({ category: 'newsletter', action: 'Newsletter Opened', label: 'sp.visitor@example.org', value: 2 });
      sp.trackSelfDescribingEvent({ event: { schema: 'iglu:com.acme/checkout_started/jsonschema/1-0-0', data: { step: 1 } } });
      return t.getDomainUserId();
    }, collector.url);
    assert.ok(duid, 'a domain user id');
    const rows = await storedOnce(duid, 3, `Snowplow events from ${origin}`);
    assert.deepEqual(rows.map((r) => `${r.type} ${r.event}`).sort(), ['page Shop', 'track Newsletter Opened', 'track checkout_started']);
    const page = JSON.parse(rows.find((r) => r.type === 'page').payload);
    assert.equal(page.name, 'Shop');
    assert.equal(page.context.campaign.source, 'snowplow');
    assert.match(page.context.library.version, /^js-4\./);
    const se = JSON.parse(rows.find((r) => r.event === 'Newsletter Opened').payload);
    assert.equal(se.properties.category, 'newsletter');
    assert.equal(se.properties.value, 2);
    assert.ok(!JSON.stringify(rows).includes('sp.visitor@example.org'), 'the raw email is not kept');
    const ue = JSON.parse(rows.find((r) => r.event === 'checkout_started').payload);
    assert.deepEqual(ue.properties, { step: 1 });
    assert.deepEqual(await quarantined(`anonymous_id = '${duid}'`), []);
    assert.deepEqual(failed, []);
    await tab.close();
  });
});

test("Snowplow's enhanced-consent events, sent by its browser tracker, are consent records: a selection and a denial logged on an opt-in site", async () => {
  const browser = await startBrowser();
  try {
    const { tab } = await openShop(browser, collector.url, 'shop-on-snowplow.html');
    const duid = await tab.evaluate((host) => {
      const sp = window.snowplowBrowserTracking;
      const t = sp.newTracker(`sp${Math.random()}`.replace('.', ''), host, { appId: 'sl_optin_key', platform: 'web', bufferSize: 1 });
      // What Snowplow's enhanced-consent plugin sends (its trackConsentSelected and
      // trackConsentDeny): a self-describing event of its documented schema.
      const consent = (eventType, consentScopes) => sp.trackSelfDescribingEvent({ event: {
        schema: 'iglu:com.snowplowanalytics.snowplow/consent_preferences/jsonschema/1-0-0',
        data: { eventType, consentScopes, basisForProcessing: 'consent', consentUrl: `${host}/privacy`,
          consentVersion: '1', domainsApplied: [host], gdprApplies: true } } });
      sp.trackPageView(); // no consent signal: refused on an opt-in site
      consent('allow_selected', ['necessary', 'statistics']);
      consent('deny_all', ['necessary']);
      return t.getDomainUserId();
    }, collector.url);
    const log = await eventually(async () => {
      const l = (await collector.adminJson(`/admin/v1/consent?anonymousId=${duid}`)).consent;
      return l.length >= 2 && l;
    }, 20_000, "Snowplow's consent events in the consent log");
    assert.deepEqual(log.map((e) => [e.source, JSON.parse(e.categories).analytics, JSON.parse(e.categories).marketing]).reverse(),
      [['snowplow', true, false], ['snowplow', false, false]]);
    const kept = await stored(`anonymous_id = '${duid}'`);
    assert.deepEqual(kept.map((r) => `${r.type} ${r.event}`), ['track Consent Updated'], 'the page view without consent is not kept');
  } finally {
    await browser.close();
  }
});

test("Snowplow's GET /i: the browser tracker's eventMethod 'get', and an email's pixel, answered with a GIF", async () => {
  await fromBothOrigins(async (browser, origin) => {
    const { tab, failed, requests } = await openShop(browser, origin, 'shop-on-snowplow.html');
    const duid = await tab.evaluate((host) => {
      const sp = window.snowplowBrowserTracking;
      const t = sp.newTracker(`spget${Math.random()}`.replace('.', ''), host, { appId: 'sl_dev_key', platform: 'web', eventMethod: 'get' });
      sp.trackPageView();
      sp.trackStructEvent({ category: 'video', action: 'Video Played', label: 'intro', value: 3 });
      return t.getDomainUserId();
    }, collector.url);
    const rows = await storedOnce(duid, 2, `Snowplow GET events from ${origin}`);
    assert.deepEqual(rows.map((r) => `${r.type} ${r.event}`).sort(), ['page Shop', 'track Video Played']);
    assert.equal(JSON.parse(rows.find((r) => r.event === 'Video Played').payload).properties.value, 3);
    assert.ok(requests.some((r) => r.startsWith('GET /i?')), requests.join(', '));
    assert.deepEqual(failed, []);
    await tab.close();
  });
  // An email's pixel: one event in the query, no JavaScript.
  const duid = `px-${Date.now()}`;
  const q = new URLSearchParams({ e: 'se', se_ca: 'email', se_ac: 'Email Opened', se_la: 'reader@example.org', aid: 'sl_dev_key', eid: crypto.randomUUID(), duid, p: 'web', tv: 'email-1' });
  const r = await fetch(`${collector.url}/i?${q}`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'image/gif');
  assert.equal(Buffer.from(await r.arrayBuffer()).subarray(0, 6).toString(), 'GIF89a');
  const [row] = await storedOnce(duid, 1, 'the pixel\'s event');
  assert.equal(row.event, 'Email Opened');
  assert.ok(!row.payload.includes('reader@example.org'), 'the raw email is not kept');
  assert.equal((await fetch(`${collector.url}/v1/batch`)).status, 405, 'other ingestion paths stay POST only');
});

test('posthog-js sends its page view, captures, identify, group and alias, from the collector\'s origin and another', async () => {
  await fromBothOrigins(async (browser, origin) => {
    const { tab, failed } = await openShop(browser, origin, 'shop-on-posthog.html?utm_source=posthog&utm_medium=email');
    // Its remote config and flags come from the collector too: nothing it asks for fails.
    const refused = [];
    tab.on('response', (r) => r.status() >= 400 && refused.push(`${r.status()} ${new URL(r.url()).pathname}`));
    const device = await tab.evaluate((host) => new Promise((resolve) => {
      localStorage.clear();
      // The project token is the write key. HeadlessChrome is a bot to posthog-js.
      window.posthog.init('sl_dev_key', {
        api_host: host, opt_out_useragent_filter: true, autocapture: false, disable_session_recording: true,
        loaded: (ph) => {
          ph.capture('Product Added', { product_id: 'ETH-GUJI', name: 'Ethiopia Guji', price: 14.5, currency: 'EUR', quantity: 1 });
          ph.identify('ph-user', { email: 'Ph.User@Example.com', plan: 'pro' });
          ph.group('company', 'acme', { name: 'Acme' });
          ph.alias('ph-alias');
          resolve(ph.get_property('$device_id'));
        },
      });
    }), collector.url);
    assert.ok(device, 'a device id');
    const rows = await storedOnce(device, 5, `posthog-js events from ${origin}`, 30_000);
    assert.deepEqual(rows.map((r) => r.type).sort(), ['alias', 'group', 'identify', 'page', 'track']);
    const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
    assert.equal(identify.traits.email, sha256('ph.user@example.com'), 'raw email hashed');
    assert.equal(identify.userId, 'ph-user');
    assert.equal(identify.context.library.name, 'posthog-js');
    const page = JSON.parse(rows.find((r) => r.type === 'page').payload);
    assert.equal(page.name, 'Shop');
    assert.equal(page.context.campaign.source, 'posthog');
    assert.equal(rows.find((r) => r.type === 'track').event, 'Product Added');
    assert.deepEqual(await quarantined(`anonymous_id = '${device}'`), []);
    const config = await tab.evaluate(() => window._POSTHOG_REMOTE_CONFIG?.sl_dev_key?.config);
    assert.equal(config?.hasFeatureFlags, false, 'the remote config script ran');
    assert.equal(config?.sessionRecording, false);
    assert.deepEqual(await tab.evaluate(() => window.posthog.featureFlags.getFlags()), []);
    assert.deepEqual(refused, []);
    assert.deepEqual(failed, []);
    await tab.close();
  });
});

test("Segment's Python library (analytics-python) sends every message type", async () => {
  assert.ok(existsSync(PYTHON), 'scripts/bootstrap.sh makes target/clients-venv');
  const script = `
import datetime, segment.analytics as analytics
analytics.write_key = 'sl_server_key'
analytics.host = ${JSON.stringify(collector.url)}
analytics.sync_mode = True
errors = []
analytics.on_error = lambda e, batch: errors.append(str(e))
u = 'py-user-1'
analytics.identify(u, {'email': 'Py.User@Example.com', 'plan': 'pro', 'since': datetime.datetime(2025, 1, 2, 3, 4, 5)})
analytics.track(u, 'Order Completed', {'order_id': 'py-1', 'total': 29.0, 'currency': 'EUR', 'products': [{'product_id': 'ETH-GUJI', 'quantity': 2}]},
                timestamp=datetime.datetime.now(datetime.timezone.utc))
analytics.page(u, 'Docs', 'Getting started', {'url': 'https://shop.example/docs?utm_source=py'})
analytics.screen(u, 'Mobile', 'Home')
analytics.group(u, 'py-group', {'name': 'Acme'})
analytics.alias('py-previous', u)
# Not finite: json.dumps writes a bare NaN and Infinity, which JSON does not have.
analytics.track(u, 'Ratio Computed', {'ratio': float('nan'), 'cap': float('inf'), 'label': 'NaN Infinity'})
analytics.flush()
assert not errors, errors
`;
  await promisify(execFile)(PYTHON, ['-c', script], { timeout: 60_000 });
  const rows = await eventually(async () => {
    const r = await stored(`write_key = 'sl_server_key' and (user_id = 'py-user-1' or anonymous_id = 'py-user-1')`);
    return r.length >= 7 && r;
  }, 20_000, 'analytics-python events');
  assert.deepEqual(rows.map((r) => r.type).sort(), ['alias', 'group', 'identify', 'page', 'screen', 'track', 'track']);
  const ratio = JSON.parse(rows.find((r) => r.event === 'Ratio Computed').payload);
  assert.deepEqual(ratio.properties, { ratio: null, cap: null, label: 'NaN Infinity' }, 'read as JavaScript writes them');
  const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
  assert.equal(identify.traits.email, sha256('py.user@example.com'), 'raw email hashed');
  assert.equal(identify.context.library.name, 'analytics-python');
  assert.deepEqual(await quarantined(`write_key = 'sl_server_key' and user_id = 'py-user-1'`), []);
});

test("RudderStack's Node SDK sends every message type to the collector's data plane", async () => {
  const Rudder = require('@rudderstack/rudder-sdk-node');
  const client = new Rudder('sl_server_key', { dataPlaneUrl: collector.url, flushAt: 20, flushInterval: 200, logLevel: 'error' });
  const u = 'rs-user-1';
  client.identify({ userId: u, traits: { email: 'Rs.User@Example.com', plan: 'pro' } });
  client.track({ userId: u, event: 'Product Added', properties: { product_id: 'ETH-GUJI', price: 14.5, currency: 'EUR', quantity: 1 } });
  client.page({ userId: u, name: 'Docs', properties: { url: 'https://shop.example/docs' } });
  client.screen({ userId: u, name: 'Home' });
  client.group({ userId: u, groupId: 'rs-group', traits: { name: 'Acme' } });
  client.alias({ userId: u, previousId: 'rs-previous' });
  await new Promise((resolve, reject) => client.flush((err) => (err ? reject(err) : resolve())));
  const rows = await eventually(async () => {
    const r = await stored(`write_key = 'sl_server_key' and user_id = '${u}'`);
    return r.length >= 6 && r;
  }, 20_000, 'RudderStack events');
  assert.deepEqual(rows.map((r) => r.type).sort(), ['alias', 'group', 'identify', 'page', 'screen', 'track']);
  const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
  assert.equal(identify.traits.email, sha256('rs.user@example.com'), 'raw email hashed');
  assert.match(identify.context.library.name, /analytics-node|rudder/i);
  assert.deepEqual(await quarantined(`write_key = 'sl_server_key' and user_id = '${u}'`), []);
});

/** The rows a server library stored for `user`, once `count` have arrived. */
async function storedFor(user, count, what) {
  return eventually(async () => {
    const r = await stored(`write_key = 'sl_server_key' and user_id = '${user}'`);
    return r.length >= count && r;
  }, 20_000, what);
}

const ORDER = { order_id: 'srv-1', total: 29, currency: 'EUR', products: [{ product_id: 'ETH-GUJI', quantity: 2 }] };

// PostHog's server libraries name the person in `distinct_id` beside the properties, not
// inside them as posthog-js does; posthog-python's `set` is an event of its own.
test("PostHog's server libraries (posthog-node, gzip; posthog-python, plain and gzip) send every call", async () => {
  const { PostHog } = require('posthog-node');
  const client = new PostHog('sl_server_key', { host: collector.url, flushAt: 20, flushInterval: 100 });
  const errors = [];
  client.on('error', (e) => errors.push(String(e)));
  const u = 'phn-user-1';
  client.capture({ distinctId: u, event: 'Order Completed', properties: { ...ORDER, email: 'Phn.User@Example.com' } });
  client.identify({ distinctId: u, properties: { email: 'Phn.User@Example.com', plan: 'pro' } });
  client.alias({ distinctId: u, alias: 'phn-previous' });
  client.capture({ distinctId: u, event: 'Ratio Computed', properties: { ratio: 0.5 }, groups: { company: 'acme' } });
  // A site's numeric id is sent as a JSON number.
  client.capture({ distinctId: 4242, event: 'Ratio Computed', properties: { ratio: 0.25 } });
  await client.shutdown();
  assert.deepEqual(errors, []);
  assert.equal((await storedFor('4242', 1, 'the numeric id\'s event'))[0].event, 'Ratio Computed');
  const rows = await storedFor(u, 4, 'posthog-node events');
  assert.deepEqual(rows.map((r) => r.type).sort(), ['alias', 'identify', 'track', 'track']);
  const order = JSON.parse(rows.find((r) => r.event === 'Order Completed').payload);
  assert.deepEqual(order.properties, { ...ORDER, email: sha256('phn.user@example.com') }, 'raw email hashed');
  assert.equal(order.context.library.name, 'posthog-node');
  const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
  assert.deepEqual(identify.traits, { email: sha256('phn.user@example.com'), plan: 'pro' });
  assert.equal(JSON.parse(rows.find((r) => r.type === 'alias').payload).previousId, 'phn-previous');

  assert.ok(existsSync(PYTHON), 'scripts/bootstrap.sh makes target/clients-venv');
  for (const gzip of ['False', 'True']) {
    const p = `php-user-${gzip}`;
    const script = `
import datetime
from posthog import Posthog
errors = []
p = Posthog('sl_server_key', host=${JSON.stringify(collector.url)}, sync_mode=True, gzip=${gzip},
            on_error=lambda e, batch: errors.append(str(e)))
u = ${JSON.stringify(p)}
p.capture('Order Completed', distinct_id=u, properties=${JSON.stringify(ORDER)})
p.set(distinct_id=u, properties={'email': 'Php.User@Example.com', 'since': datetime.datetime(2025, 1, 2)})
p.set_once(distinct_id=u, properties={'first_plan': 'free'})
p.capture('Ratio Computed', distinct_id=u, properties={'ratio': float('nan')}, groups={'company': 'acme'})
p.flush(); p.shutdown()
assert not errors, errors
`;
    await promisify(execFile)(PYTHON, ['-c', script], { timeout: 60_000 });
    const rows = await storedFor(p, 4, `posthog-python events (gzip=${gzip})`);
    assert.deepEqual(rows.map((r) => r.type).sort(), ['identify', 'identify', 'track', 'track']);
    const traits = rows.filter((r) => r.type === 'identify').map((r) => JSON.parse(r.payload).traits);
    assert.deepEqual(traits.find((t) => t.email), { email: sha256('php.user@example.com'), since: '2025-01-02T00:00:00' });
    assert.deepEqual(traits.find((t) => !t.email), { first_plan: 'free' });
    assert.deepEqual(JSON.parse(rows.find((r) => r.event === 'Ratio Computed').payload).properties, { ratio: null });
    assert.equal(JSON.parse(rows[0].payload).context.library.name, 'posthog-python');
  }
  assert.deepEqual(await quarantined(`write_key = 'sl_server_key' and (user_id like 'php-%' or user_id = '${u}')`), []);
});

// Snowplow's server trackers: the app id is the write key, by POST (tp2) and GET (/i).
test("Snowplow's Node and Python trackers send page and screen views, structured and self-describing events, by POST and GET", async () => {
  const { newTracker, buildPageView, buildStructEvent, buildSelfDescribingEvent, buildScreenView } = require('@snowplow/node-tracker');
  const port = Number(new URL(collector.url).port);
  const users = [];
  for (const eventMethod of ['post', 'get']) {
    const failures = [];
    const t = newTracker({ namespace: 'srv', appId: 'sl_server_key', encodeBase64: true }, {
      endpoint: '127.0.0.1', port, protocol: 'http', eventMethod, bufferSize: 1,
      onRequestFailure: (f) => failures.push(f.status ?? String(f.message)),
    });
    const u = `spn-${eventMethod}`;
    users.push(u);
    t.setUserId(u);
    t.track(buildPageView({ pageUrl: 'https://shop.example/p?utm_source=node', pageTitle: 'P' }));
    t.track(buildStructEvent({ category: 'shop', action: 'Share', label: 'Spn.User@Example.com', value: 2 }));
    t.track(buildSelfDescribingEvent({ event: { schema: 'iglu:com.acme/wishlist/jsonschema/1-0-0', data: { items: 5, email: 'Spn.User@Example.com' } } }));
    t.track(buildScreenView({ name: 'Cart', id: 'screen-1' }));
    await t.flush();
    assert.deepEqual(failures, []);
  }
  for (const method of ['post', 'get']) {
    const u = `spy-${method}`;
    users.push(u);
    const script = `
from snowplow_tracker import Emitter, Tracker, Subject, PageView, StructuredEvent, SelfDescribing, SelfDescribingJson, ScreenView
failed = []
e = Emitter('127.0.0.1', protocol='http', port=${port}, method='${method}', batch_size=1,
            on_failure=lambda n, rows: failed.append(n))
t = Tracker(namespace='py', emitters=e, subject=Subject().set_user_id('${u}'), app_id='sl_server_key')
t.track(PageView(page_url='https://shop.example/p?utm_source=py', page_title='P'))
t.track(StructuredEvent(category='shop', action='Share', label='Spn.User@Example.com', value=2))
t.track(SelfDescribing(SelfDescribingJson('iglu:com.acme/wishlist/jsonschema/1-0-0', {'items': 5, 'email': 'Spn.User@Example.com'})))
t.track(ScreenView(id_='screen-1', name='Cart'))
t.flush()
assert not failed, failed
`;
    await promisify(execFile)(PYTHON, ['-c', script], { timeout: 60_000 });
  }
  for (const u of users) {
    const rows = await storedFor(u, 4, `Snowplow events of ${u}`);
    const by = Object.fromEntries(rows.map((r) => [r.event ?? r.type, JSON.parse(r.payload)]));
    assert.deepEqual(Object.keys(by).sort(), ['Cart', 'P', 'Share', 'wishlist'], u);
    assert.equal(by.Cart.type, 'screen', `${u}: a screen view is a screen call`);
    assert.equal(by.Cart.properties.id, 'screen-1');
    assert.equal(by.P.properties.url, 'https://shop.example/p?utm_source=' + (u.startsWith('spn') ? 'node' : 'py'));
    assert.equal(by.Share.properties.label, sha256('spn.user@example.com'), `${u}: a raw email in a label is hashed`);
    assert.deepEqual(by.wishlist.properties, { items: 5, email: sha256('spn.user@example.com') });
    assert.equal(by.wishlist.context.library.name, 'snowplow');
  }
  assert.deepEqual(await quarantined(`write_key = 'sl_server_key' and (user_id like 'spn-%' or user_id like 'spy-%')`), []);
});

// On a server Jitsu's library takes only a key written `id:secret`; the id is the write key.
test("Jitsu's library on a server (Node), with its id:secret key in X-Write-Key", async () => {
  const { jitsuAnalytics } = require('@jitsu/js');
  const jitsu = jitsuAnalytics({ host: collector.url, writeKey: 'sl_server_key:a-secret' });
  const u = 'jn-user-1';
  await jitsu.identify(u, { email: 'Jn.User@Example.com', plan: 'pro' });
  await jitsu.track('Order Completed', { ...ORDER, order_id: 'jn-1' });
  await jitsu.page('Docs', { url: 'https://shop.example/docs' });
  const rows = await storedFor(u, 3, 'Jitsu server events');
  assert.deepEqual(rows.map((r) => r.type).sort(), ['identify', 'page', 'track']);
  assert.equal(rows.find((r) => r.type === 'page').event, 'Docs', 'its page names itself in its properties only');
  const identify = JSON.parse(rows.find((r) => r.type === 'identify').payload);
  assert.deepEqual(identify.traits, { email: sha256('jn.user@example.com'), plan: 'pro' });
  assert.deepEqual(identify.context.library, { env: 'node', name: '@jitsu/js', version: identify.context.library.version });
  assert.deepEqual(await quarantined(`write_key = 'sl_server_key' and user_id = '${u}'`), []);
});

// posthog-js-lite names no device id: its distinct id is anonymous until `identify`.
test('posthog-js-lite: its anonymous events, identify and identified events join one profile', async () => {
  const { PostHog } = await import('posthog-js-lite');
  const lite = new PostHog('sl_server_key', { host: collector.url, flushAt: 1, persistence: 'memory' });
  const errors = [];
  lite.on('error', (e) => errors.push(String(e)));
  lite.capture('Ratio Computed', { ratio: 1 });
  const anon = lite.getDistinctId();
  lite.identify('phl-user-1', { email: 'Phl.User@Example.com' });
  lite.capture('Ratio Computed', { ratio: 2 });
  await lite.flush();
  assert.deepEqual(errors, []);
  const rows = await eventually(async () => {
    const r = await stored(`write_key = 'sl_server_key' and (user_id = 'phl-user-1' or anonymous_id = '${anon}')`);
    return r.length >= 3 && r;
  }, 20_000, 'posthog-js-lite events');
  const by = (ratio) => JSON.parse(rows.find((r) => r.event === 'Ratio Computed' && JSON.parse(r.payload).properties.ratio === ratio).payload);
  const [before, identify, after] = [by(1), JSON.parse(rows.find((r) => r.type === 'identify').payload), by(2)];
  assert.deepEqual([before.anonymousId, before.userId], [anon, undefined], 'anonymous until identify');
  assert.deepEqual([identify.anonymousId, identify.userId], [anon, 'phl-user-1']);
  assert.deepEqual(identify.traits, { email: sha256('phl.user@example.com') });
  assert.equal(after.userId, 'phl-user-1');
  assert.equal(new Set([before, identify, after].map((m) => m.context.profileId)).size, 1, 'one profile');
});
