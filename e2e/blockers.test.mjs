// Ad blockers: every request Sightline makes on the example shop, in headless Chromium
// against the real collector, is matched against uBlock Origin's default filter lists as
// Debian ships them (webext-ublock-origin-chromium: EasyList, EasyPrivacy, uBlock
// filters, privacy, badware, quick fixes, unbreak, URLhaus). Chromium 156 no longer
// runs Manifest V2 extensions, so the lists are applied by @ghostery/adblocker, an
// engine that reads uBlock's filter syntax: a stand-in for the extension, on the real
// lists. The peers' default paths are the control: the same engine blocks them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FiltersEngine, Request } from '@ghostery/adblocker';
import { startCollector, startBrowser, eventually, ROOT } from './harness.mjs';

const UBO = process.env.UBO_DIR || '/usr/share/chromium/extensions/ublock-origin';

/** The filter lists uBlock Origin enables by default, from its own assets.json. */
function defaultLists() {
  const assets = JSON.parse(readFileSync(join(UBO, 'assets/assets.json'), 'utf8'));
  return Object.entries(assets)
    .filter(([, a]) => a.content === 'filters' && !a.off)
    .map(([name, a]) => [name, [].concat(a.contentURL || []).find((u) => !/^https?:/.test(u))])
    .filter(([, local]) => local && existsSync(join(UBO, local)));
}

let engine;
let lists;
let collector;
before(async () => {
  lists = defaultLists();
  const text = lists.map(([, local]) => readFileSync(join(UBO, local), 'utf8')).join('\n');
  engine = FiltersEngine.parse(text, { loadCosmeticFilters: false, enableHtmlFiltering: false });
  collector = await startCollector({ vars: { BASE_PATH: '/data' } });
});
after(async () => { await collector?.dispose(); });

/** The filter that blocks `url` loaded by `page` as `type`, or null. */
function blockedBy(url, page, type) {
  const r = engine.match(Request.fromRawDetails({ url, sourceUrl: page, type }));
  return r.match ? String(r.filter) : null;
}

// Every type a request can be classed as: a filter limited to one type must not match
// whichever way a browser reports Sightline's requests (a beacon, a fetch, a script).
const TYPES = ['script', 'fetch', 'xhr', 'ping', 'other', 'document'];

/** What blocks the path of `url` on the test host and on a typical shop domain. */
function verdicts(url) {
  const u = new URL(url);
  const shop = `https://www.bean-roasters.example${u.pathname}${u.search}`;
  const out = [];
  for (const [target, page] of [[url, `${u.origin}/`], [shop, 'https://www.bean-roasters.example/']]) {
    for (const type of TYPES) {
      const f = blockedBy(target, page, type);
      if (f) out.push(`${type} ${target}: ${f}`);
    }
  }
  return out;
}

test('the lists are uBlock Origin\'s defaults and they block the peers\' default paths', () => {
  const names = lists.map(([n]) => n);
  for (const n of ['easylist', 'easyprivacy', 'ublock-filters', 'ublock-privacy']) assert.ok(names.includes(n), `${n} in ${names}`);
  const site = 'https://www.bean-roasters.example/';
  const control = [
    ['https://cdn.segment.com/analytics.js/v1/WRITEKEY/analytics.min.js', 'script'],
    ['https://api.segment.io/v1/batch', 'xhr'],
    ['https://www.bean-roasters.example/com.snowplowanalytics.snowplow/tp2', 'xhr'],
    ['https://www.bean-roasters.example/beacon/v1/batch?t=1', 'xhr'],
    ['https://cdn.rudderlabs.com/v3/modern/rsa.min.js', 'script'],
    ['https://us.i.posthog.com/e/', 'xhr'],
  ];
  for (const [url, type] of control) assert.ok(blockedBy(url, site, type), `${url} is blocked`);
  // The check the tests below apply, on a first-party path the lists do block.
  assert.ok(verdicts('http://127.0.0.1:8787/com.snowplowanalytics.snowplow/tp2').length > 0);
});

test('no request Sightline makes on the shop matches a default blocker list, and its events arrive', async () => {
  const browser = await startBrowser();
  const seen = [];
  try {
    browser.context.on('request', (r) => {
      if (r.url().startsWith(collector.url)) seen.push({ url: r.url(), type: r.resourceType(), method: r.method() });
    });
    const page = await browser.context.newPage();
    await page.goto(`${collector.url}/?utm_source=newsletter&utm_medium=email&utm_campaign=winter&gclid=CLICK-1`);
    await page.evaluate(() => window.sightline.ready);
    await page.click('#consent-accept');
    await page.click('button[data-sku="ETH-GUJI"]');
    await page.fill('#newsletter input[name=email]', 'blocker.test@example.com');
    await page.click('#newsletter button');
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    await page.goto(`${collector.url}/about`);
    await page.evaluate(() => window.sightline.ready);
    await page.evaluate(() => { window.sightline.track('Order Completed', { order_id: 'B-1', total: 14.5, currency: 'EUR', products: [{ product_id: 'ETH-GUJI', quantity: 1 }] }); return window.sightline.flush(); });
    await page.evaluate(() => window.sightline.reset());
    await page.close(); // the unload path (a beacon or keepalive fetch) runs too
    const stored = await eventually(async () => {
      const r = await collector.query(`select event, type from events where anonymous_id = '${anon}'`);
      return r.some((e) => e.event === 'Order Completed') && r;
    }, 20_000, 'the session\'s events');
    assert.ok(stored.some((e) => e.event === 'Newsletter Subscribed') && stored.some((e) => e.type === 'identify'));
    const paths = new Set(seen.map((s) => new URL(s.url).pathname));
    for (const p of ['/sl/sightline.js', '/sl/sightline.wasm', '/v1/batch', '/v1/reset']) assert.ok(paths.has(p), `${p} requested: ${[...paths]}`);
    const blocked = seen.flatMap((s) => verdicts(s.url));
    assert.deepEqual(blocked, [], 'no request of the SDK or the shop is blocked');
    // Every route the collector answers, whoever calls it (the SDK, a server library).
    const routes = ['/v1/batch', '/v1/b', '/v1/import', '/v1/track', '/v1/t', '/v1/page', '/v1/p', '/v1/identify', '/v1/i',
      '/v1/alias', '/v1/a', '/v1/group', '/v1/g', '/v1/screen', '/v1/s', '/v1/id', '/v1/reset', '/sl/sightline.js',
      '/sl/sightline.wasm', '/sl/tracking-plan.json', '/v1/projects/sl_dev_key/settings', '/data/v1/batch', '/data/v1/reset', '/data/v1/id'];
    assert.deepEqual(routes.flatMap((r) => verdicts(`${collector.url}${r}`)), []);
  } finally {
    await browser.close();
  }
});

test('a site moves the collector under a path of its own (BASE_PATH and data-endpoint)', async () => {
  const snippet = readFileSync(join(ROOT, 'sdk-wasm/dist/snippet.min.js'), 'utf8');
  const html = `<!doctype html><html><head><meta charset="utf-8">
    <script data-write-key="sl_dev_key" data-consent="opt-out" data-endpoint="/data">${snippet}</script>
    </head><body><p>A shop page that mounts the collector under /data.</p></body></html>`;
  const browser = await startBrowser();
  const posts = [];
  try {
    browser.context.on('request', (r) => { if (r.method() === 'POST') posts.push(new URL(r.url()).pathname); });
    const page = await browser.context.newPage();
    await page.route(`${collector.url}/own-path.html`, (route) => route.fulfill({ contentType: 'text/html', body: html }));
    await page.goto(`${collector.url}/own-path.html`);
    await page.evaluate(() => window.sightline.ready);
    await page.evaluate(() => { window.sightline.track('Product Added', { product_id: 'COL-HUILA', price: 12.9, currency: 'EUR' }); return window.sightline.flush(); });
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    await eventually(async () => (await collector.query(`select count(*) as n from events where anonymous_id = '${anon}' and event = 'Product Added'`))[0].n === 1,
      20_000, 'the event under /data');
    assert.ok(posts.length > 0 && posts.every((p) => p.startsWith('/data/v1/')), JSON.stringify(posts));
    // The admin API answers under the base path too, and the root keeps working.
    const under = await collector.adminJson(`/data/admin/v1/profiles?anonymousId=${anon}&writeKey=sl_dev_key`);
    const root = await collector.adminJson(`/admin/v1/profiles?anonymousId=${anon}&writeKey=sl_dev_key`);
    assert.deepEqual(under.profile, root.profile);
    assert.match(under.profile.id, /^p_/);
  } finally {
    await browser.close();
  }
});
