// The inspector (/admin/) in headless Chromium against the real collector in workerd:
// sign-in with the token kept out of URLs and storage, the live events with their
// verdicts, a profile found by an email hashed in the page, its merge undone, a
// quarantined event replayed after its plan is fixed, the charts' data, erasure behind
// a confirmation, and hostile event data shown as text only. Screenshots at 1280 and
// 390 px go to target/e2e-artifacts/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startCollector, startBrowser, eventually, ADMIN_TOKEN, TEST_SOURCES, STATE_ROOT, ROOT } from './harness.mjs';
import { createHash } from 'node:crypto';

const ARTIFACTS = join(ROOT, 'target', 'e2e-artifacts');
const EMAIL = 'Ann.Inspector@Example.com';
const EMAIL_HASH = createHash('sha256').update('ann.inspector@example.com').digest('hex');
const HOSTILE = '<img src=x onerror="window.__xss=1">';

const strict = { version: '1', events: { 'Trial Started': { properties: { type: 'object', required: ['plan'] } } } };
const fixed = { version: '2', events: { 'Trial Started': { properties: { type: 'object' } }, 'Never Sent': {} } };
const sources = (plan) => ({ ...TEST_SOURCES, sl_inspect_key: { name: 'inspected', consent: 'opt-out', plan } });

const send = (url, batch, writeKey) => fetch(`${url}/v1/batch`, {
  method: 'POST', headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ writeKey, batch }),
}).then((r) => r.json());

/** A visitor of the example site who accepts consent and subscribes with EMAIL. */
async function subscribe(url) {
  const b = await startBrowser();
  try {
    const page = await b.context.newPage();
    await page.goto(`${url}/`);
    await page.evaluate(() => window.sightline.ready);
    await page.click('#consent-accept');
    await page.fill('#newsletter input[name=email]', ` ${EMAIL} `);
    await page.click('#newsletter button');
    await page.evaluate(() => window.sightline.flush());
    return await page.evaluate(() => window.sightline.anonymousId());
  } finally {
    await b.close();
  }
}

test('the inspector: sign-in, live events, a merged profile undone, replay, charts, erasure', async () => {
  mkdirSync(STATE_ROOT, { recursive: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  const state = mkdtempSync(join(STATE_ROOT, 'sightline-inspector-'));
  let collector = await startCollector({ state, sources: sources(strict) });
  const port = collector.port;
  const browser = await startBrowser();
  try {
    // Two devices of one person: the second soft login merges its profile into the first.
    const laptop = await subscribe(collector.url);
    const phone = await subscribe(collector.url);
    await eventually(async () => {
      const p = await collector.adminJson(`/admin/v1/profiles?anonymousId=${phone}`);
      return p.merges.length === 1 && p.profile.identifiers.some((i) => i.value === laptop);
    }, 20_000, 'the two devices merged');
    // A quarantined event, and an event whose name is markup.
    const q = await send(collector.url, [{ type: 'track', messageId: 'insp-q1', anonymousId: 'insp-a', event: 'Trial Started', properties: {} }], 'sl_inspect_key');
    assert.equal(q.results[0].status, 'quarantined');
    const x = await send(collector.url, [{ type: 'track', messageId: 'insp-x1', anonymousId: 'insp-b', event: HOSTILE, properties: { note: HOSTILE } }], 'sl_r2_key');
    assert.equal(x.results[0].status, 'accepted');

    const page = await browser.context.newPage();
    const requests = [];
    page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers().authorization || '', body: r.postData() || '' }));
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const shell = await page.goto(`${collector.url}/admin`);
    assert.equal(new URL(page.url()).pathname, '/admin/', '/admin redirects to /admin/');
    const csp = shell.headers()['content-security-policy'];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(shell.headers()['x-frame-options'], 'DENY');

    // A wrong token is refused; the right one signs in.
    await page.fill('#token', 'not-the-token');
    await page.click('#login button');
    await page.waitForSelector('#login-error:has-text("not valid")');
    await page.fill('#token', ADMIN_TOKEN);
    await page.click('#login button');
    await page.waitForSelector('#tabs:not([hidden])');

    // Live events with their verdicts; the JSON on click; hostile data stays text.
    await page.waitForSelector('#live-table tbody tr');
    const verdicts = await page.$$eval('#live-table tbody tr', (rs) => [...new Set(rs.map((r) => r.className))]);
    assert.ok(verdicts.includes('accepted') && verdicts.includes('quarantined'), String(verdicts));
    await page.selectOption('#live-filters select[name=verdict]', 'quarantined');
    await eventually(() => page.$$eval('#live-table tbody tr', (rs) => rs.length > 0 && rs.every((r) => r.className === 'quarantined')), 10_000, 'only quarantined rows');
    await page.selectOption('#live-filters select[name=verdict]', '');
    await page.fill('#live-filters input[name=event]', HOSTILE);
    await page.dispatchEvent('#live-filters input[name=event]', 'change');
    // The quarantined-only table also has one row until the new answer is drawn: wait
    // for the row of the filtered event itself.
    await eventually(() => page.$$eval('#live-table tbody tr', (rs, name) => rs.length === 1 && rs[0].className === 'accepted' && rs[0].cells[3].textContent === name, HOSTILE), 10_000, 'the filter by event name');
    await page.click('#live-table tbody tr');
    const detail = JSON.parse(await page.textContent('#live-detail'));
    assert.equal(detail.event, HOSTILE);
    assert.equal(detail.payload.properties.note, HOSTILE);
    assert.equal(await page.evaluate(() => window.__xss), undefined, 'event data never runs');
    assert.equal(await page.$$eval('main img[src="x"]', (i) => i.length), 0);
    await page.fill('#live-filters input[name=event]', '');
    await page.dispatchEvent('#live-filters input[name=event]', 'change');
    await page.screenshot({ path: join(ARTIFACTS, 'inspector-live-1280.png'), fullPage: true });

    // The profile, found by an email hashed in the page: only its hash goes out.
    // Every tab fits a phone's width.
    await page.setViewportSize({ width: 390, height: 844 });
    for (const tab of ['live', 'quarantine', 'profiles', 'charts', 'attribution', 'alerts']) {
      await page.click(`#tabs a[data-tab=${tab}]`);
      await page.waitForTimeout(300);
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), `no sideways scroll on ${tab} at 390 px`);
    }
    await page.screenshot({ path: join(ARTIFACTS, 'inspector-live-390.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.click('#tabs a[data-tab=profiles]');
    await page.selectOption('#profile-search select[name=kind]', 'email');
    await page.fill('#profile-search input[name=value]', ` ${EMAIL} `);
    await page.click('#profile-search button');
    await page.waitForSelector('#profile-view h2');
    assert.match(await page.textContent('#profile-note'), new RegExp(EMAIL_HASH));
    assert.ok(requests.some((r) => r.url.includes(`email_sha256=${EMAIL_HASH}`)), 'looked up by the hash');
    assert.ok(requests.every((r) => !/ann\.inspector|ann%2Einspector|Ann\.Inspector/i.test(r.url + r.body)), 'the raw email never left the page');
    assert.match(await page.textContent('#profile-view'), /identified/);
    const ids = await page.textContent('ul.ids');
    assert.ok(ids.includes(laptop) && ids.includes(phone), 'both devices on one profile');
    await page.screenshot({ path: join(ARTIFACTS, 'inspector-profile-1280.png'), fullPage: true });

    // The merge undone: the phone's visitor is its own profile again.
    await page.click('#merges button.unmerge');
    await page.waitForSelector('#profile-note:has-text("Unmerged")');
    await page.waitForSelector('#merges li:has-text("(undone)")');
    const split = await collector.adminJson(`/admin/v1/profiles?anonymousId=${phone}`);
    const joined = await collector.adminJson(`/admin/v1/profiles?anonymousId=${laptop}`);
    assert.notEqual(split.profile.id, joined.profile.id, 'unmerged');

    // The quarantine, grouped; replayed after the plan is fixed (same state, same page).
    await page.click('#tabs a[data-tab=quarantine]');
    await page.selectOption('#source', 'sl_inspect_key');
    await page.waitForSelector('details.group summary:has-text("missing_required")');
    await collector.stop();
    // The collector away: the page says so, and nothing throws.
    await page.evaluate(() => dispatchEvent(new HashChangeEvent('hashchange')));
    await page.waitForSelector('#status:has-text("Could not load")');
    collector = await startCollector({ state, sources: sources(fixed), port });
    await page.click('details.group summary');
    await page.click('button.replay');
    await page.waitForSelector('#quarantine-result:has-text("accepted")');
    await page.waitForSelector('#quarantine-groups:has-text("Nothing is quarantined")');
    assert.equal(await page.textContent('#status'), '', 'cleared once the collector answers');
    assert.deepEqual(await collector.query(`select event from events where message_id = 'insp-q1'`), [{ event: 'Trial Started' }]);

    // The charts: drawn as images, with their data beside them.
    await page.click('#tabs a[data-tab=charts]');
    await page.waitForSelector('figure.chart[data-chart=plan_coverage] img');
    assert.equal(await page.$$eval('figure.chart img', (imgs) => imgs.filter((i) => i.complete && i.naturalWidth > 0).length), 7);
    const data = async (id) => JSON.parse(await page.textContent(`figure.chart[data-chart=${id}] pre`));
    // The tab tour above drew all sources' charts: wait for this source's to replace them.
    await eventually(async () => (await data('plan_coverage')).plan === true, 10_000, "the source's charts");
    assert.deepEqual((await data('plan_coverage')).neverSeen, ['Never Sent']);
    assert.equal((await data('plan_coverage')).coverage, 0.5);
    assert.ok((await data('top_events')).some((e) => e.event === 'Trial Started' && e.count === 1));
    await page.selectOption('#source', 'sl_dev_key');
    await page.waitForSelector('figure.chart[data-chart=consent_by_category] img');
    await eventually(async () => (await data('consent_by_category')).some((c) => c.category === 'analytics' && c.rate === 1), 10_000, 'consent chart');
    const byDay = await data('volume_by_day');
    assert.ok(byDay.length >= 1 && byDay.at(-1).accepted >= 4, JSON.stringify(byDay));
    assert.ok((await data('identified_share')).identified >= 2);
    await page.screenshot({ path: join(ARTIFACTS, 'inspector-charts-1280.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), 'no sideways scroll at 390 px');
    await page.screenshot({ path: join(ARTIFACTS, 'inspector-charts-390.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });

    // Erasure needs the profile id typed; a wrong one erases nothing.
    await page.click('#tabs a[data-tab=profiles]');
    await page.selectOption('#profile-search select[name=kind]', 'anonymousId');
    await page.fill('#profile-search input[name=value]', phone);
    await page.click('#profile-search button');
    // The phone's own profile, not the one shown before the search.
    await page.waitForSelector(`#profile-view h2 code:text-is("${split.profile.id}")`);
    await page.click('#erase');
    await page.fill('#erase-confirm', 'p_wrong');
    await page.click('#erase-go');
    await page.waitForSelector('#profile-note:text-matches("^Not erased")');
    assert.equal((await collector.admin(`/admin/v1/profiles/${split.profile.id}`)).status, 200);
    await page.click('#erase');
    await page.fill('#erase-confirm', split.profile.id);
    await page.click('#erase-go');
    await page.waitForSelector('#profile-note:text-matches("^Erased:")');
    assert.equal((await collector.admin(`/admin/v1/profiles/${split.profile.id}`)).status, 404);
    assert.equal((await collector.admin(`/admin/v1/profiles/${joined.profile.id}`)).status, 200, 'only that person');

    // The token was never in a URL, a cookie or storage, and went only to the API.
    assert.ok(requests.every((r) => !r.url.includes(ADMIN_TOKEN)));
    assert.deepEqual(await browser.context.cookies(), []);
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    assert.ok(!stored.includes(ADMIN_TOKEN), stored);
    assert.ok(requests.filter((r) => r.auth).every((r) => new URL(r.url).pathname.startsWith('/admin/v1/')));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await collector.dispose();
  }
});

test('the inspector refuses to be framed, and its API answers no other origin', async () => {
  const collector = await startCollector();
  try {
    const r = await fetch(`${collector.url}/admin/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-security-policy'), /frame-ancestors 'none'/);
    assert.equal(r.headers.get('cache-control'), 'no-store');
    // Cross-site: a page elsewhere cannot read the API (no CORS grant) nor send the token.
    const api = await fetch(`${collector.url}/admin/v1/sources`, { headers: { origin: 'https://evil.example', authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(api.headers.get('access-control-allow-origin'), null);
    const pre = await fetch(`${collector.url}/admin/v1/sources`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    assert.equal(pre.headers.get('access-control-allow-origin'), null);
    assert.equal((await fetch(`${collector.url}/admin/v1/sources`)).status, 401);
  } finally {
    await collector.dispose();
  }
});
