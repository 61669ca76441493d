// The browser SDK in headless Chromium against the real collector in workerd: consent
// gating (verified by network interception and storage inspection), reload, two tabs,
// offline, retries, in-browser hashing, SPA page views and campaign capture.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCollector, startBrowser, eventually, ROOT } from './harness.mjs';

let collector;
before(async () => { collector = await startCollector(); });
after(async () => { await collector?.dispose(); });

/** A fresh browser profile with every request to the collector API recorded, and
 * every storage write counted (`window.__writes`). */
async function visit(path = '/') {
  const browser = await startBrowser();
  await browser.context.addInitScript(() => {
    window.__writes = [];
    for (const m of ['setItem', 'removeItem', 'clear']) {
      const orig = Storage.prototype[m];
      Storage.prototype[m] = function (...a) { window.__writes.push([m, a[0]]); return orig.apply(this, a); };
    }
    const cookie = Object.getOwnPropertyDescriptor(Document.prototype, 'cookie');
    Object.defineProperty(Document.prototype, 'cookie', {
      get() { return cookie.get.call(this); },
      set(v) { window.__writes.push(['cookie', v]); cookie.set.call(this, v); },
    });
  });
  const api = [];
  const errors = [];
  browser.context.on('request', (r) => {
    if (new URL(r.url()).pathname.startsWith('/v1/')) api.push({ url: r.url(), body: r.postData() || '', at: Date.now() });
  });
  const page = await browser.context.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${collector.url}${path}`);
  await page.evaluate(() => window.sightline.ready);
  return { browser, page, api, errors };
}
const accept = (page) => page.click('#consent-accept');
const ids = (reqs) => reqs.flatMap((r) => { try { return JSON.parse(r.body).batch.map((e) => e.messageId); } catch { return []; } });
const rows = (where) => collector.query(`select message_id, event, type, payload from events where ${where}`);
/** A visitor's consent log, newest first, as the admin API answers it. */
const consentLog = async (anon) => (await collector.adminJson(`/admin/v1/consent?anonymousId=${anon}`)).consent;
/** A new browser's visit to `/about`, `prepare(page)` (routes, init scripts) run before
 * it loads and `check(page)` once the SDK is ready; then the visitor grants analytics,
 * and the landing page view must be stored with nothing thrown into the page. */
async function landsOnAbout(prepare, check = async () => {}) {
  const browser = await startBrowser();
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await prepare(page);
    await page.goto(`${collector.url}/about`);
    await page.evaluate(() => window.sightline.ready);
    await check(page);
    await page.evaluate(() => window.sightline.consent.set({ analytics: true }));
    const stats = await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    await eventually(async () => (await rows(`anonymous_id = '${anon}' and type = 'page'`)).length >= 1, 20_000, 'the page view');
    assert.deepEqual(errors, []);
    return { anon, stats };
  } finally {
    await browser.close();
  }
}
/** Serves `pattern` as the collector answers it, changed by `change(response, n)` (n: 1
 * for the first request), which returns the rest of `route.fulfill`'s options. Returns
 * how many requests it served. */
async function altered(target, pattern, change) {
  let n = 0;
  await target.route(pattern, async (route) => {
    const response = await route.fetch();
    n += 1;
    await route.fulfill({ response, ...(await change(response, n)) });
  });
  return () => n;
}

test('opt-in: no request and no storage write before consent, then everything goes', async () => {
  const { browser, page, api, errors } = await visit('/');
  try {
    await page.evaluate(() => {
      window.sightline.track('Product Added', { product_id: 'ETH-GUJI', price: 14.5, currency: 'EUR' });
      window.sightline.identify({ plan: 'pro' });
    });
    await page.waitForTimeout(1200);
    assert.deepEqual(api, [], 'no request to the collector');
    assert.deepEqual(await page.evaluate(() => window.__writes), [], 'no storage or cookie write');
    const keys = await page.evaluate(() => Object.keys(localStorage));
    assert.deepEqual(keys, [], 'nothing in storage');
    assert.deepEqual(await browser.context.cookies(), []);
    assert.equal(await page.isVisible('#consent-banner'), true);
    const anon = await page.evaluate(() => window.sightline.anonymousId());

    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}'`);
      return r.length >= 4 && r;
    }, 20_000, 'events after consent');
    assert.deepEqual(stored.map((r) => r.event ?? r.type).sort(), ['Consent Updated', 'Product Added', 'identify', 'page']);
    const payload = JSON.parse(stored.find((r) => r.event === 'Product Added').payload);
    assert.equal(payload.context.consent.categoryPreferences.analytics, true);
    // The consent log keeps the banner's answer with its evidence: the page, the notice.
    const log = await consentLog(anon);
    assert.deepEqual(log.map((c) => [c.source, c.evidence]), [['banner', { pageUrl: `${collector.url}/`, version: '2026-11' }]]);
    assert.ok((await page.evaluate(() => Object.keys(localStorage))).includes('sl_aid'));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('a reload in the middle of a queue loses nothing, offline or online', async () => {
  const { browser, page, api } = await visit('/about');
  try {
    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    // The collector unreachable (every request fails, the unload one too): the events
    // wait in storage through the reload.
    await page.route('**/v1/batch', (route) => route.abort('internetdisconnected'));
    await page.evaluate(() => { for (let i = 0; i < 20; i++) window.sightline.track('Reload Offline', { i }); });
    await page.reload();
    await page.evaluate(() => window.sightline.ready);
    // The new page found them in storage (whatever the unload request managed to do).
    assert.ok((await page.evaluate(() => window.sightline.stats().queued)) >= 20);
    await page.unroute('**/v1/batch');
    // Online: a reload right after the calls (the unload hands them to the browser).
    await page.evaluate(() => { for (let i = 0; i < 20; i++) window.sightline.track('Reload Online', { i }); });
    await page.reload();
    await page.evaluate(() => window.sightline.ready);
    await page.evaluate(() => window.sightline.flush());
    for (const name of ['Reload Offline', 'Reload Online']) {
      const r = await eventually(async () => {
        const x = await rows(`anonymous_id = '${anon}' and event = '${name}'`);
        return x.length >= 20 && x;
      }, 20_000, name);
      const seen = r.map((x) => JSON.parse(x.payload).properties.i).sort((a, b) => a - b);
      console.log(`reload (${name}): sent 20, stored ${r.length}, distinct ${new Set(seen).size}`);
      assert.equal(r.length, 20, name);
      assert.deepEqual(seen, [...Array(20).keys()]);
    }
    assert.ok(api.length > 0);
  } finally {
    await browser.close();
  }
});

test('leaving for another site while a batch is in flight: the page\'s last request carries it, and every event arrives once', async () => {
  const { browser, page, errors } = await visit('/about');
  try {
    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    // The collector slow to answer: the next batch stays in flight (a request without
    // keepalive, which leaving the page cancels); the requests after it go through.
    let held = 0;
    await page.route('**/v1/batch', async (route) => {
      if (held++ === 0) await new Promise((r) => setTimeout(r, 8_000));
      await route.continue().catch(() => {});
    });
    await page.evaluate(() => {
      for (let i = 0; i < 12; i++) window.sightline.track('Leaving', { i });
      window.sightline.flush();
    });
    await eventually(() => held >= 1, 5_000, 'the batch in flight');
    await page.evaluate(() => window.sightline.track('Leaving', { i: 12 }));
    // Off to a site that is not ours (it cannot load here): no page of ours comes next.
    await page.evaluate(() => { location.href = 'http://outbound.example/'; });
    const r = await eventually(async () => {
      const x = await rows(`anonymous_id = '${anon}' and event = 'Leaving'`);
      return x.length >= 13 && x;
    }, 20_000, 'the events of the batch in flight');
    const seen = r.map((x) => JSON.parse(x.payload).properties.i).sort((a, b) => a - b);
    console.log(`leaving with a batch in flight: sent 13, stored ${r.length}, distinct ${new Set(seen).size}`);
    assert.deepEqual(seen, [...Array(13).keys()]);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('two tabs sharing one queue never send the same event twice', async () => {
  const browser = await startBrowser();
  const delivered = [];
  browser.context.on('requestfinished', async (r) => {
    if (!r.url().endsWith('/v1/batch')) return;
    const resp = await r.response();
    if (resp && resp.ok()) delivered.push({ body: r.postData() || '', tab: r.frame().page() === browser.context.pages()[0] ? 'A' : 'B', at: Date.now() });
  });
  try {
    const a = await browser.context.newPage();
    await a.goto(`${collector.url}/about`);
    await a.evaluate(() => window.sightline.ready);
    await a.click('#consent-accept');
    await a.evaluate(() => window.sightline.flush());
    // Tab A queues while its requests fail: its events wait in the shared storage.
    await a.route('**/v1/batch', (route) => route.abort());
    await a.evaluate(() => { for (let i = 0; i < 30; i++) window.sightline.track('Two Tabs A', { i }); });
    await a.waitForTimeout(400);
    // Tab B opens and finds A's events in storage: both tabs now hold them.
    const b = await browser.context.newPage();
    await b.goto(`${collector.url}/about`);
    await b.evaluate(() => window.sightline.ready);
    await b.evaluate(() => { for (let i = 0; i < 30; i++) window.sightline.track('Two Tabs B', { i }); });
    await a.unroute('**/v1/batch');
    await a.evaluate(() => window.dispatchEvent(new Event('online')));
    await Promise.all([a.evaluate(() => window.sightline.flush()), b.evaluate(() => window.sightline.flush())]);
    const anon = await a.evaluate(() => window.sightline.anonymousId());
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and event like 'Two Tabs %'`);
      return r.length >= 60 && r;
    }, 30_000, 'both tabs delivered');
    assert.equal(stored.length, 60);
    await eventually(async () => (await a.evaluate(() => window.sightline.stats().queued)) === 0, 15_000, 'tab A empty');
    const sent = ids(delivered);
    const twice = sent.filter((id, i) => sent.indexOf(id) !== i);
    console.log(`two tabs: sent 60, stored ${stored.length}, delivered by both tabs ${twice.length}`);
    if (twice.length) console.log(JSON.stringify(delivered.map((d) => ({ tab: d.tab, at: d.at, n: ids([d]).length, dups: ids([d]).filter((x) => twice.includes(x)).length, names: [...new Set(JSON.parse(d.body).batch.map((e) => e.event))] }))));
    assert.deepEqual(twice, [], 'no event was delivered by both tabs');
    assert.ok(sent.length >= 60);
  } finally {
    await browser.close();
  }
});

test('offline then online delivers everything exactly once', async () => {
  const { browser, page } = await visit('/about');
  const verdicts = [];
  page.on('response', async (r) => {
    if (r.url().endsWith('/v1/batch')) { try { verdicts.push(...(await r.json()).results); } catch {} }
  });
  try {
    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    await browser.context.setOffline(true);
    await page.evaluate(() => { for (let i = 0; i < 15; i++) window.sightline.track('Offline', { i }); });
    await page.evaluate(() => window.sightline.flush()); // fails: a retry is scheduled
    await page.waitForTimeout(800);
    await browser.context.setOffline(false);
    await page.evaluate(() => window.dispatchEvent(new Event('online')));
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    const r = await eventually(async () => {
      const x = await rows(`anonymous_id = '${anon}' and event = 'Offline'`);
      return x.length >= 15 && x;
    }, 30_000, 'offline events');
    assert.equal(r.length, 15);
    const offline = verdicts.filter((v) => r.some((x) => x.message_id === v.messageId));
    console.log(`offline: sent 15, stored ${r.length}, accepted answers ${offline.length}`);
    assert.equal(offline.length, 15, 'each delivered once');
    assert.ok(offline.every((v) => v.status === 'accepted'));
  } finally {
    await browser.close();
  }
});

test('without Web Locks, or with a lock manager that refuses, events are delivered and a crashed tab\'s are sent by the next page', async () => {
  const browsers = {
    // An older browser or a webview: no navigator.locks at all.
    'no Web Locks': () => { delete Navigator.prototype.locks; },
    // An opaque origin answers every request with a rejected promise (SecurityError).
    'a refusing lock manager': () => {
      LockManager.prototype.request = () => Promise.reject(new DOMException('refused', 'SecurityError'));
    },
  };
  for (const [label, init] of Object.entries(browsers)) {
    const browser = await startBrowser();
    try {
      await browser.context.addInitScript(init);
      const errors = [];
      let page = await browser.context.newPage();
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`${collector.url}/about`);
      // A flush that never settles (a send stuck on its lock) fails here, not by hanging.
      const flush = () => page.evaluate(() => Promise.race([
        window.sightline.flush(),
        new Promise((_, no) => setTimeout(() => no(new Error('flush did not settle')), 10_000)),
      ]));
      await page.evaluate(() => window.sightline.ready);
      assert.equal(await page.evaluate(() => !!(navigator.locks && navigator.locks.request)), label !== 'no Web Locks');
      await accept(page);
      await flush();
      const anon = await page.evaluate(() => window.sightline.anonymousId());
      await page.evaluate(() => { for (let i = 0; i < 6; i++) window.sightline.track('Lockless', { i }); });
      await flush();
      // Refused by the collector (503, retried later), then the tab crashes: its events
      // stay stored, and the next page must adopt what the gone tab left, and send it.
      await page.route('**/v1/batch', (route) => route.fulfill({ status: 503, body: '{"ok":false}' }));
      await page.evaluate(() => { for (let i = 6; i < 10; i++) window.sightline.track('Lockless', { i }); });
      await page.waitForTimeout(400);
      const next = await browser.context.newPage();
      const crashed = page.waitForEvent('crash');
      (await browser.context.newCDPSession(page)).send('Page.crash').catch(() => {}); // never answered
      await crashed;
      assert.equal((await rows(`anonymous_id = '${anon}' and event = 'Lockless'`)).length, 6, `${label}: 6 to 9 not sent yet`);
      page = next;
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`${collector.url}/about`);
      await page.evaluate(() => window.sightline.ready);
      await flush();
      const r = await eventually(async () => {
        const x = await rows(`anonymous_id = '${anon}' and event = 'Lockless'`);
        return x.length >= 10 && x;
      }, 30_000, `events with ${label}`);
      const seen = r.map((x) => JSON.parse(x.payload).properties.i).sort((a, b) => a - b);
      assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], label);
      assert.equal(new Set(r.map((x) => x.message_id)).size, 10);
      assert.equal((await page.evaluate(() => window.sightline.stats())).queued, 0, `${label}: nothing left queued`);
      assert.deepEqual(errors, [], label);
      console.log(`${label}: sent 10, stored ${r.length}`);
    } finally {
      await browser.close();
    }
  }
});

test('500 and 429 are retried with backoff, honouring Retry-After, with the same messageIds', async () => {
  const { browser, page } = await visit('/about');
  try {
    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    const attempts = [];
    await page.route('**/v1/batch', async (route) => {
      attempts.push({ at: Date.now(), body: route.request().postData() });
      if (attempts.length === 1) return route.fulfill({ status: 500, body: '{"ok":false}' });
      if (attempts.length === 2) return route.fulfill({ status: 429, headers: { 'retry-after': '2' }, body: '{"ok":false,"error":{"code":"rate_limited"}}' });
      return route.continue();
    });
    await page.evaluate(() => window.sightline.track('Retried', { n: 1 }));
    await eventually(() => attempts.length >= 3, 15_000, 'three attempts');
    const gaps = [attempts[1].at - attempts[0].at, attempts[2].at - attempts[1].at];
    assert.ok(gaps[0] >= 400, `backoff after 500: ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 1900, `Retry-After after 429: ${gaps[1]} ms`);
    const sets = attempts.map((a) => JSON.stringify(ids([a])));
    assert.equal(new Set(sets).size, 1, 'the same events, the same messageIds');
    const id = ids([attempts[0]])[0];
    await eventually(async () => (await rows(`message_id = '${id}'`)).length === 1, 10_000, 'stored once');
  } finally {
    await browser.close();
  }
});

test('soft login hashes in the browser: the tracking-plan vectors, no raw value on the wire', async () => {
  const { browser, page, api } = await visit('/');
  try {
    await accept(page);
    await page.fill('#newsletter input[name=email]', ' John_Smith@Gmail.com ');
    await page.click('#newsletter button');
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    const r = await eventually(async () => {
      const x = await rows(`anonymous_id = '${anon}' and (type = 'identify' or event = 'Newsletter Subscribed')`);
      return x.length >= 2 && x;
    }, 20_000, 'soft login events');
    const vector = '62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f';
    const identify = JSON.parse(r.find((x) => x.type === 'identify').payload);
    assert.equal(identify.traits.email_sha256, vector);
    const sub = JSON.parse(r.find((x) => x.event === 'Newsletter Subscribed').payload);
    assert.equal(sub.properties.email_sha256, vector);
    assert.ok(api.every((q) => !/john_smith/i.test(q.body)), 'the raw email never left the page');
    const p = await collector.adminJson(`/admin/v1/profiles?anonymousId=${anon}`);
    assert.equal(p.identified, true);
    // A raw email typed into a property is hashed by the SDK too.
    await page.evaluate(() => window.sightline.track('Contact', { note: 'write to ann@example.com' }));
    await page.evaluate(() => window.sightline.flush());
    assert.ok(api.every((q) => !q.body.includes('ann@example.com')));
  } finally {
    await browser.close();
  }
});

test('SPA navigations are page views; UTM and click ids are captured first- and last-touch', async () => {
  const { browser, page } = await visit('/?utm_source=Newsletter&utm_medium=Email&utm_campaign=Launch&gclid=G-123');
  try {
    await accept(page);
    // The page facts are read again when the title changes without a navigation.
    const firstTitle = await page.evaluate(() => {
      const t = document.title;
      window.sightline.track('Before Title');
      document.title = 'Renamed • ünïcode 标题';
      window.sightline.track('After Title');
      return t;
    });
    await page.evaluate(() => {
      history.pushState({}, '', '/spa/one');
      history.replaceState({}, '', '/spa/two?utm_source=partner');
      history.pushState({}, '', '/spa/three');
    });
    await page.goBack();
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    const pages = await eventually(async () => {
      // In the order they happened: the page's own clock (`timestamp` is corrected per
      // batch for clock skew), then arrival for views within the same millisecond.
      const x = await collector.query(`select payload from events where anonymous_id = '${anon}' and type = 'page' order by json_extract(payload, '$.originalTimestamp'), rowid`);
      return x.length >= 5 && x.map((p) => JSON.parse(p.payload));
    }, 20_000, 'page views');
    assert.deepEqual(pages.map((p) => p.context.page.path), ['/', '/spa/one', '/spa/two', '/spa/three', '/spa/two']);
    assert.equal(pages[1].context.page.referrer, `${collector.url}/?utm_source=Newsletter&utm_medium=Email&utm_campaign=Launch&gclid=G-123`);
    assert.deepEqual(pages[0].context.campaign, { source: 'newsletter', medium: 'email', name: 'Launch' });
    assert.equal(pages[0].context.clickIds.gclid, 'G-123');
    assert.equal(pages[2].context.campaign.source, 'partner', 'last touch');
    assert.equal(pages[4].context.firstTouch.campaign.source, 'newsletter', 'first touch kept');
    const titled = await eventually(async () => {
      const x = await collector.query(`select event, payload from events where anonymous_id = '${anon}' and event in ('Before Title', 'After Title') order by event desc`);
      return x.length === 2 && x.map((r) => JSON.parse(r.payload).context.page.title);
    }, 20_000, 'the two titled events');
    assert.deepEqual(titled, [firstTitle, 'Renamed • ünïcode 标题']);
    assert.ok(firstTitle.length > 0);
  } finally {
    await browser.close();
  }
});

test("a page's fragment is not sent (an OAuth implicit flow's tokens), except a hash router's route, whose changes are page views", async () => {
  const { browser, page, api } = await visit('/about#access_token=FRAGMENT-TOKEN-1&id_token=x.y.z');
  try {
    await accept(page);
    await page.evaluate(() => { location.hash = '#reviews'; }); // an anchor: not a page
    await page.waitForTimeout(100);
    await page.evaluate(() => { location.hash = '#/cart'; });
    await page.waitForTimeout(100);
    await page.evaluate(() => { location.hash = '#!/checkout'; });
    await page.waitForTimeout(100);
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    const pages = await eventually(async () => {
      const x = await collector.query(`select payload from events where anonymous_id = '${anon}' and type = 'page' order by json_extract(payload, '$.originalTimestamp'), rowid`);
      return x.length >= 3 && x.map((p) => JSON.parse(p.payload));
    }, 20_000, 'page views');
    await page.waitForTimeout(500);
    const all = await collector.query(`select payload from events where anonymous_id = '${anon}' and type = 'page'`);
    assert.equal(all.length, 3, 'the anchor is no page view');
    assert.deepEqual(pages.map((p) => p.context.page.url), [
      `${collector.url}/about`, `${collector.url}/about#/cart`, `${collector.url}/about#!/checkout`]);
    assert.equal(pages[1].context.page.referrer, `${collector.url}/about`);
    const wire = api.map((q) => q.body).join('\n');
    assert.ok(!wire.includes('FRAGMENT-TOKEN-1'), 'the token never left the page');
  } finally {
    await browser.close();
  }
});

test('Google Consent Mode and the IAB TCF drive consent; debug mode reports plan violations', async () => {
  const browser = await startBrowser();
  try {
    // Consent Mode v2: denied by default, granted by a later gtag update. The default is
    // not a choice: the landing page view waits for the update, and no denial is logged.
    const gcm = await browser.context.newPage();
    await gcm.addInitScript(() => {
      window.dataLayer = [['consent', 'default', { analytics_storage: 'denied', ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied' }]];
    });
    await gcm.goto(`${collector.url}/about`);
    await gcm.evaluate(() => window.sightline.ready);
    assert.deepEqual(await gcm.evaluate(() => window.sightline.consent.get()),
      { analytics: false, marketing: false, personalization: false, decided: false });
    await gcm.evaluate(() => window.dataLayer.push(['consent', 'update', { analytics_storage: 'granted', ad_storage: 'granted', ad_user_data: 'granted', ad_personalization: 'denied' }]));
    assert.deepEqual(await gcm.evaluate(() => window.sightline.consent.get()),
      { analytics: true, marketing: true, personalization: false, decided: true });
    await gcm.evaluate(() => window.sightline.flush());
    const anon = await gcm.evaluate(() => window.sightline.anonymousId());
    const log = await eventually(async () => {
      const l = await consentLog(anon);
      return l.length >= 1 && l;
    }, 20_000, 'consent log');
    assert.deepEqual(log.map((e) => [e.source, JSON.parse(e.categories).analytics]), [['gcm', true]], 'no denial recorded');
    const landing = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and type = 'page'`);
      return r.length >= 1 && r;
    }, 20_000, 'the landing page view');
    assert.equal(JSON.parse(landing[0].payload).context.page.path, '/about');
    await gcm.close();

    // Global Privacy Control in the page: marketing stays denied whatever is granted (a
    // browser of its own: the GCM page's stored choice must not carry over).
    const gpcBrowser = await startBrowser();
    const gpc = await gpcBrowser.context.newPage();
    await gpc.addInitScript(() => {
      try { Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true }); } catch {
        Object.defineProperty(navigator, 'globalPrivacyControl', { get: () => true, configurable: true });
      }
    });
    await gpc.goto(`${collector.url}/about?gclid=GPC-CLICK-1`);
    await gpc.evaluate(() => window.sightline.ready);
    await gpc.evaluate(() => window.sightline.consent.set({ analytics: true, marketing: true, personalization: true }));
    assert.equal(await gpc.evaluate(() => window.sightline.consent.get().marketing), false);
    await gpc.evaluate(() => window.sightline.flush());
    const gpcAnon = await gpc.evaluate(() => window.sightline.anonymousId());
    const gpcRows = await eventually(async () => {
      const r = await rows(`anonymous_id = '${gpcAnon}' and type = 'page'`);
      return r.length >= 1 && r;
    }, 20_000, 'the GPC page view');
    const gp = JSON.parse(gpcRows[0].payload);
    assert.equal(gp.context.consent.categoryPreferences.marketing, false);
    assert.ok(!gpcRows[0].payload.includes('GPC-CLICK-1'), 'no click id kept');
    await gpcBrowser.close();

    // IAB TCF: a CMP answering through __tcfapi.
    const tcf = await browser.context.newPage();
    await tcf.addInitScript(() => {
      window.__tcfapi = (cmd, version, cb) => {
        if (cmd === 'addEventListener') setTimeout(() => cb({ eventStatus: 'tcloaded', tcString: 'CQJ0GUAQJ0GUAAGABCENBGFgAP_AAH_AAAqIKRNV', cmpId: 31, cmpVersion: 4, purpose: { consents: { 1: true, 5: true, 6: true, 8: true } } }, true), 0);
      };
    });
    await tcf.goto(`${collector.url}/about`);
    await tcf.evaluate(() => window.sightline.ready);
    await eventually(() => tcf.evaluate(() => window.sightline.consent.get().decided), 5_000, 'TCF applied');
    assert.deepEqual(await tcf.evaluate(() => window.sightline.consent.get()),
      { analytics: true, marketing: false, personalization: true, decided: true });
    // The consent log keeps the choice's evidence: the TC string, the CMP, the page.
    await tcf.evaluate(() => window.sightline.flush());
    const tcfAnon = await tcf.evaluate(() => window.sightline.anonymousId());
    const tcfLog = await eventually(async () => {
      const l = await consentLog(tcfAnon);
      return l.length >= 1 && l;
    }, 20_000, 'the TCF record');
    assert.deepEqual(tcfLog[0].evidence, {
      pageUrl: `${collector.url}/about`, tcString: 'CQJ0GUAQJ0GUAAGABCENBGFgAP_AAH_AAAqIKRNV', cmpId: '31', cmpVersion: '4' });

    // A consent manager's own object, passed as it is (`consent.set(Cookiebot.consent)`):
    // its names read by the collector's rule, compiled into the SDK.
    const cmpBrowser = await startBrowser();
    const cmp = await cmpBrowser.context.newPage();
    await cmp.goto(`${collector.url}/about?gclid=CMP-CLICK-1`);
    await cmp.evaluate(() => window.sightline.ready);
    await cmp.evaluate(() => window.sightline.consent.set({
      necessary: true, preferences: true, statistics: true, marketing: false, method: 'explicit', source: 'cookiebot' }));
    assert.deepEqual(await cmp.evaluate(() => window.sightline.consent.get()),
      { analytics: true, marketing: false, personalization: true, decided: true });
    await cmp.evaluate(() => window.sightline.flush());
    const cmpAnon = await cmp.evaluate(() => window.sightline.anonymousId());
    const cmpRows = await eventually(async () => {
      const r = await rows(`anonymous_id = '${cmpAnon}' and type = 'page'`);
      return r.length >= 1 && r;
    }, 20_000, 'the page view under Cookiebot\'s names');
    const cp = JSON.parse(cmpRows[0].payload).context.consent;
    assert.deepEqual([cp.categoryPreferences.analytics, cp.categoryPreferences.marketing], [true, false]);
    assert.ok(!cmpRows[0].payload.includes('CMP-CLICK-1'), 'no click id kept');
    // OneTrust's groups; and of two keys naming one category, a denial wins.
    await cmp.evaluate(() => window.sightline.consent.set({ C0001: true, C0004: true, targeting: false }));
    assert.equal(await cmp.evaluate(() => window.sightline.consent.get().marketing), false);
    await cmp.evaluate(() => window.sightline.consent.set({ C0004: true }));
    assert.equal(await cmp.evaluate(() => window.sightline.consent.get().marketing), true);
    // Osano's words: "DENY" is a denial, not a truthy string; a word it does not know
    // states nothing.
    await cmp.evaluate(() => window.sightline.consent.set({ ANALYTICS: 'ACCEPT', MARKETING: 'DENY', PERSONALIZATION: 'maybe' }));
    assert.deepEqual(await cmp.evaluate(() => window.sightline.consent.get()),
      { analytics: true, marketing: false, personalization: true, decided: true });
    const cmpLog = await eventually(async () => {
      const l = await consentLog(cmpAnon);
      return l.length >= 2 && l;
    }, 20_000, 'the consent log');
    assert.ok(cmpLog.some((e) => e.source === 'cookiebot'), JSON.stringify(cmpLog));
    await cmpBrowser.close();

    // Debug mode: the collector's verdict on a plan violation shows in the console.
    const warnings = [];
    tcf.on('console', (m) => { if (m.type() === 'warning') warnings.push(m.text()); });
    await tcf.evaluate(() => {
      window.sightline.debug(true);
      window.sightline.track('Product Added', { product_id: 'nope', price: -1, currency: 'EUR' });
      return window.sightline.flush();
    });
    await eventually(() => warnings.some((w) => w.includes('quarantined')), 10_000, 'a console warning');
    // An event the SDK itself cannot keep says so, and only that (nothing `undefined`).
    await tcf.evaluate(() => window.sightline.track('Too Big', { blob: 'x'.repeat(40_000) }));
    const notKept = await eventually(() => warnings.find((w) => w.includes('event not kept')), 5_000, 'the not-kept warning');
    assert.equal(notKept, '[sightline] event not kept (over 32 KB, not serializable, or consent denied)');
  } finally {
    await browser.close();
  }
});

test("Cookiebot's and OneTrust's answers drive consent, and their banners' defaults record nothing", async () => {
  // Stand-ins for the two managers' globals and events as their documentation gives them
  // (their scripts come from their CDNs, out of reach here): Cookiebot's `hasResponse`,
  // `consent` and `CookiebotOnConsentReady`; OneTrust's `OnetrustActiveGroups`,
  // `IsAlertBoxClosed()`, `GetDomainData().Groups` and `OneTrustGroupsUpdated`.
  const browser = await startBrowser();
  try {
    // Cookiebot: no answer yet, then the visitor accepts statistics and preferences.
    const cb = await browser.context.newPage();
    await cb.addInitScript(() => {
      window.Cookiebot = { hasResponse: false, consent: { necessary: true, preferences: false, statistics: false, marketing: false } };
    });
    await cb.goto(`${collector.url}/about?gclid=CB-CLICK-1`);
    await cb.evaluate(() => window.sightline.ready);
    assert.equal(await cb.evaluate(() => window.sightline.consent.get().decided), false, 'a banner not answered is no decision');
    await cb.evaluate(() => {
      window.Cookiebot.hasResponse = true;
      window.Cookiebot.consent = { necessary: true, preferences: true, statistics: true, marketing: false, method: 'explicit' };
      window.dispatchEvent(new Event('CookiebotOnConsentReady'));
    });
    assert.deepEqual(await cb.evaluate(() => window.sightline.consent.get()),
      { analytics: true, marketing: false, personalization: true, decided: true });
    await cb.evaluate(() => window.sightline.flush());
    const cbAnon = await cb.evaluate(() => window.sightline.anonymousId());
    const landing = await eventually(async () => {
      const r = await rows(`anonymous_id = '${cbAnon}' and type = 'page'`);
      return r.length >= 1 && r;
    }, 20_000, 'the landing page view under Cookiebot');
    assert.ok(!landing[0].payload.includes('CB-CLICK-1'), 'no click id without marketing');
    const cbLog = await eventually(async () => { const l = await consentLog(cbAnon); return l.length >= 1 && l; }, 20_000, 'the log');
    assert.deepEqual(cbLog.map((e) => [e.source, JSON.parse(e.categories).analytics]), [['cookiebot', true]]);
    await cb.close();

    // OneTrust (a new browser: the choice above is stored): its banner's default groups
    // are no answer; closing the banner with performance and functional on is.
    await browser.context.clearCookies();
    const ot = await browser.context.newPage();
    await ot.addInitScript(() => {
      localStorage.clear();
      let closed = false;
      window.OnetrustActiveGroups = ',C0001,';
      window.OneTrust = {
        IsAlertBoxClosed: () => closed,
        GetDomainData: () => ({ ShowAlertNotice: true, Groups: ['C0001', 'C0002', 'C0003', 'C0004', 'C0005'].map((id) => ({ CustomGroupId: id })) }),
      };
      window.answer = (groups) => {
        closed = true;
        window.OnetrustActiveGroups = `,${groups.join(',')},`;
        window.dispatchEvent(new CustomEvent('OneTrustGroupsUpdated', { detail: groups }));
      };
    });
    await ot.goto(`${collector.url}/about`);
    await ot.evaluate(() => window.sightline.ready);
    await ot.evaluate(() => window.dispatchEvent(new CustomEvent('OneTrustGroupsUpdated', { detail: ['C0001'] })));
    assert.equal(await ot.evaluate(() => window.sightline.consent.get().decided), false, 'the default groups are no decision');
    await ot.evaluate(() => window.answer(['C0001', 'C0002', 'C0003']));
    assert.deepEqual(await ot.evaluate(() => window.sightline.consent.get()),
      { analytics: true, marketing: false, personalization: true, decided: true });
    // Withdrawn from OneTrust's preference centre: analytics off, and said so.
    await ot.evaluate(() => window.answer(['C0001']));
    assert.equal(await ot.evaluate(() => window.sightline.consent.get().analytics), false);
    const otAnon = await ot.evaluate(() => window.sightline.anonymousId());
    const otLog = await eventually(async () => { const l = await consentLog(otAnon); return l.length >= 2 && l; }, 20_000, 'the log');
    assert.deepEqual(otLog.map((e) => [e.source, JSON.parse(e.categories).analytics]).reverse(),
      [['onetrust', true], ['onetrust', false]], 'no denial before the answer');
    // A OneTrust object of another shape (its stub before it loads) breaks nothing.
    await ot.evaluate(() => {
      window.OneTrust = { geolocationResponse: {}, GetDomainData: () => ({}) };
      window.dispatchEvent(new CustomEvent('OneTrustGroupsUpdated', { detail: [] }));
    });
    assert.equal(await ot.evaluate(() => window.sightline.consent.get().analytics), false);
  } finally {
    await browser.close();
  }
});

test('reset() and a consent revocation clear the collector\'s HttpOnly cookie', async () => {
  const { browser, page, errors } = await visit('/');
  try {
    const cookie = async () => (await browser.context.cookies(collector.url)).find((c) => c.name === 'sl_aid');
    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    const set = await eventually(cookie, 15_000, 'the cookie');
    assert.equal(set.httpOnly, true);
    const before = await page.evaluate(() => window.sightline.anonymousId());
    assert.equal(set.value, before);
    await page.evaluate(() => window.sightline.reset());
    await eventually(async () => !(await cookie()), 15_000, 'the cookie cleared by reset()');
    assert.notEqual(await page.evaluate(() => window.sightline.anonymousId()), before);
    // The next visitor's events set the cookie anew; revoking analytics clears it.
    await page.evaluate(() => { window.sightline.track('Product Viewed', { product_id: 'p1' }); return window.sightline.flush(); });
    await eventually(cookie, 15_000, 'the cookie for the next visitor');
    await page.evaluate(() => window.sightline.consent.set({ analytics: false }));
    await eventually(async () => !(await cookie()), 15_000, 'the cookie cleared by the revocation');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('a visitor whose script storage was wiped gets back the id of the HttpOnly cookie', async () => {
  const browser = await startBrowser();
  try {
    // The about page as an opt-out site installs it: consent holds without stored state.
    await altered(browser.context, '**/about', async (response) => ({
      body: (await response.text()).replace('data-consent="opt-in"', 'data-consent="opt-out"'),
    }));
    const ids = [];
    browser.context.on('request', (r) => { if (new URL(r.url()).pathname === '/v1/id') ids.push(r.url()); });
    const page = await browser.context.newPage();
    await page.goto(`${collector.url}/about`);
    await page.evaluate(() => window.sightline.ready);
    const first = await page.evaluate(() => window.sightline.anonymousId());
    await page.evaluate(() => { window.sightline.track('Before Wipe'); return window.sightline.flush(); });
    const c = await eventually(async () => (await browser.context.cookies(collector.url)).find((x) => x.name === 'sl_aid'), 15_000, 'the cookie');
    assert.equal(c.value, first);
    // Safari's 7-day cap, as a visitor sees it: script storage gone, the cookie kept.
    await page.evaluate(() => localStorage.clear());
    await page.reload();
    await page.evaluate(() => window.sightline.ready);
    await eventually(async () => (await page.evaluate(() => window.sightline.anonymousId())) === first, 15_000, 'the cookie\'s id adopted');
    assert.equal(ids.length, 2, 'asked by each page whose storage held no id');
    await page.evaluate(() => { window.sightline.track('After Wipe'); return window.sightline.flush(); });
    const after = await eventually(async () => (await rows(`event = 'After Wipe' and anonymous_id = '${first}'`))[0], 15_000, 'the event under the cookie\'s id');
    assert.ok(after);
  } finally {
    await browser.close();
  }
});

test('Cyrillic and CJK text near the byte limits is delivered (sizes are UTF-8 bytes)', async () => {
  const { browser, page, errors } = await visit('/');
  try {
    await accept(page);
    // 9,000 CJK characters are 27 KB of UTF-8 (9 K UTF-16 units): 30 such events are
    // 810 KB, more than one 500 KB batch although their JS length is 270 K.
    const n = await page.evaluate(() => {
      const cjk = '数据'.repeat(4500);
      const cyr = 'Привет, мир! '.repeat(50);
      for (let i = 0; i < 30; i++) window.sightline.track('Note Written', { text: cjk, other: cyr, i });
      return window.sightline.flush().then(() => 30);
    });
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and event = 'Note Written'`);
      return r.length >= n && r;
    }, 30_000, 'every non-Latin event');
    assert.equal(stored.length, 30);
    assert.equal(JSON.parse(stored[0].payload).properties.text.length, 9000);
    assert.equal(await page.evaluate(() => window.sightline.stats().rejected), 0);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('a burst goes out under one send lock, batch after batch, and flush() resolves once all of it is delivered', async () => {
  const { browser, page, api, errors } = await visit('/');
  try {
    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    const out = await page.evaluate(async () => {
      const asked = [];
      const request = LockManager.prototype.request;
      LockManager.prototype.request = function (name, ...rest) {
        asked.push(name);
        return request.call(this, name, ...rest);
      };
      const sentBefore = window.sightline.stats().sent;
      for (let i = 0; i < 250; i++) window.sightline.track('Burst Event', { i });
      const stats = await window.sightline.flush();
      LockManager.prototype.request = request;
      return { sendLocks: asked.filter((n) => n === 'sightline-send').length, queued: stats.queued, sent: stats.sent - sentBefore };
    });
    // Three batches (100, 100, 50): one lock request, no timer between them, and the
    // last, partial one not left for the gathering delay since flush() waits for it.
    assert.equal(out.sendLocks, 1, 'one lock request for the whole burst');
    assert.equal(out.queued, 0, 'flush() resolved with nothing left');
    assert.equal(out.sent, 250);
    const batches = api.filter((r) => r.body.includes('"Burst Event"'));
    assert.deepEqual(batches.map((r) => JSON.parse(r.body).batch.length), [100, 100, 50]);
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and event = 'Burst Event'`);
      return r.length >= 250 && r;
    }, 20_000, 'every event of the burst');
    assert.equal(new Set(stored.map((r) => r.message_id)).size, 250);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("a page's fetch that throws or returns no promise, or a lock manager that throws: nothing throws into the page, nothing is lost, delivery resumes", async () => {
  const { browser, page, errors } = await visit('/');
  try {
    await accept(page);
    await page.evaluate(() => window.sightline.flush());
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    // Pages wrap fetch (error trackers, RUM agents, zone.js); a broken wrapper throws, or
    // forgets to return the promise.
    const threw = await page.evaluate(async () => {
      const s = window.sightline;
      const out = [];
      window.__fetch = window.fetch;
      for (const broken of [() => { throw new Error('page fetch wrapper'); }, () => undefined]) {
        window.fetch = broken;
        try {
          for (let i = 0; i < 3; i++) s.track('Video Played', { wrapper: String(broken).length, i });
          const stuck = new Promise((r) => setTimeout(() => r('flush() never resolved'), 10_000));
          const late = await Promise.race([s.flush().then(() => null), stuck]);
          if (late) out.push(late);
        } catch (e) { out.push(String(e)); }
      }
      return out;
    });
    assert.deepEqual(threw, []);
    assert.deepEqual(errors, [], 'nothing thrown into the page');
    assert.ok(await page.evaluate(() => window.sightline.stats().queued) >= 6, 'the six events wait');
    // fetch whole again, and a lock manager whose request throws (the SDK sends
    // unlocked then, as without Web Locks).
    await page.evaluate(() => {
      window.fetch = window.__fetch;
      LockManager.prototype.request = function () { throw new Error('page lock wrapper'); };
      for (let i = 0; i < 2; i++) window.sightline.track('Video Played', { lock: i });
    });
    const delivered = await eventually(async () => {
      await page.evaluate(() => window.sightline.flush());
      const r = await rows(`anonymous_id = '${anon}' and event = 'Video Played'`);
      return r.length >= 8 && r;
    }, 30_000, 'the eight events after fetch is whole again');
    assert.equal(new Set(delivered.map((r) => r.message_id)).size, 8, 'each once');
    assert.deepEqual(errors, [], 'nothing thrown into the page');
  } finally {
    await browser.close();
  }
});

test("a CMP stub that throws, and a dataLayer of another shape, never stop the SDK's start", () =>
  landsOnAbout(
    (page) => page.addInitScript(() => {
      window.__tcfapi = () => { throw new Error('cmp stub'); };
      window.dataLayer = [];
      window.dataLayer.push = 'not a function';
    }),
    async (page) => assert.equal(await page.evaluate(() => window.sightline.initialized), true, 'started'),
  ));

test('with storage blocked (window.localStorage throws, as when a browser blocks site data), events are delivered from memory', async () => {
  const browser = await startBrowser();
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.addInitScript(() => {
      Object.defineProperty(window, 'localStorage', {
        get() { throw new DOMException('The operation is insecure.', 'SecurityError'); },
      });
    });
    await page.goto(`${collector.url}/about`);
    await page.evaluate(() => window.sightline.ready);
    const anon = await page.evaluate(async () => {
      const s = window.sightline;
      s.consent.set({ analytics: true });
      for (let i = 0; i < 5; i++) s.track('Video Played', { blocked: i });
      await s.flush();
      return s.anonymousId();
    });
    const got = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and event = 'Video Played'`);
      return r.length >= 5 && r;
    }, 20_000, 'the five events');
    assert.equal(new Set(got.map((r) => r.message_id)).size, 5);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('hostile arguments never throw into the page, are refused and counted, and leak no PII', async () => {
  const { browser, page, errors, api } = await visit('/');
  try {
    await accept(page);
    const encoded = 'eve.encoded@example.com';
    const b64 = Buffer.from(encoded).toString('base64');
    const hex = Buffer.from(encoded).toString('hex');
    const out = await page.evaluate(([b64, hex]) => {
      const s = window.sightline;
      const threw = [];
      const call = (f) => { try { f(); } catch (e) { threw.push(String(e)); } };
      const cyclic = { a: 1 };
      cyclic.self = cyclic;
      const before = s.stats().rejected;
      call(() => s.track('Cycle', cyclic));
      call(() => s.track('Big', { n: 10n }));
      call(() => s.track('Getter', { get boom() { throw new Error('page getter'); } }));
      // A toJSON that calls the SDK back while it serializes.
      call(() => s.track('Reentrant', { toJSON() { s.track('Inner'); return { ok: 1 }; } }));
      call(() => s.track(Symbol('x')));
      call(() => s.track(42, 'not an object'));
      call(() => s.identify({ email: 'eve@example.com' }));
      call(() => s.page(null, [1, 2]));
      call(() => s.consent.set(null));
      // A consent object whose keys or values throw when read.
      call(() => s.consent.set(new Proxy({}, { ownKeys() { throw new Error('trap'); } })));
      call(() => s.consent.set({ get analytics() { throw new Error('page getter'); } }));
      call(() => s.softLogin(null));
      call(() => s.track('Free Text', { note: 'call me on +33 6 12 34 56 78 or \ud800 eve@example.com' }));
      call(() => s.track('Proxy', new Proxy({}, { get() { throw new Error('trap'); }, ownKeys() { throw new Error('trap'); } })));
      call(() => s.track('Throwing toJSON', { toJSON() { throw new Error('page toJSON'); } }));
      call(() => s.track('Huge', { x: 'x'.repeat(5e6) }));
      // analytics.js's options argument, as hostile: traps, getters, a time that throws
      // when read, a cycle, raw PII in its context.
      const trap = () => { throw new Error('trap'); };
      call(() => s.track('Opt Proxy', {}, new Proxy({}, { get: trap, ownKeys: trap, getPrototypeOf: trap })));
      call(() => s.track('Opt Getter', {}, { get context() { throw new Error('page getter'); }, get integrations() { throw new Error('page getter'); } }));
      call(() => s.track('Opt Time', {}, { timestamp: { valueOf: trap, toString: trap } }));
      call(() => s.track('Opt Date Proxy', {}, { timestamp: new Proxy(new Date(), { get: trap, getPrototypeOf: trap }) }));
      call(() => s.track('Opt Context Proxy', {}, { context: new Proxy({}, { ownKeys: trap }) }));
      call(() => s.track('Opt Cycle', {}, { context: cyclic }));
      call(() => s.identify('opt-user', {}, { context: { traits: { email: 'eve@example.com' } } }));
      // Encoded on the page: the SDK finds it before it leaves (the shared walker).
      call(() => s.track('Encoded', { d: b64, link: `https://shop.example/r?h=${hex}`, full: 'eve.encoded\uff20example.com' }));
      return s.flush().then(() => ({ threw, rejected: s.stats().rejected - before, anon: s.anonymousId() }));
    }, [b64, hex]);
    assert.deepEqual(out.threw, [], 'nothing throws into the page');
    assert.ok(out.rejected >= 3, `cycle, BigInt and the throwing getter refused and counted (${out.rejected})`);
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${out.anon}' and event = 'Free Text'`);
      return r.length === 1 && r;
    }, 20_000, 'the free-text event');
    const p = JSON.parse(stored[0].payload).properties.note;
    assert.ok(!p.includes('12 34 56') && !p.includes('eve@'), p);
    const all = await rows(`anonymous_id = '${out.anon}'`);
    assert.ok(all.some((r) => r.event === 'Reentrant'), 'the reentrant call kept its own event');
    assert.ok(all.every((r) => !r.payload.includes('eve@example.com')));
    assert.ok(all.some((r) => r.event === 'Encoded'), 'the encoded event arrived');
    // Options that could not be read are left out; the calls are kept.
    for (const e of ['Opt Proxy', 'Opt Getter', 'Opt Time', 'Opt Date Proxy', 'Opt Context Proxy']) {
      assert.ok(all.some((r) => r.event === e), `${e} arrived`);
    }
    assert.ok(!all.some((r) => r.event === 'Opt Cycle'), 'a context that cannot be written is refused, as such properties are');
    // Not on the wire either, in any of the forms it was given.
    const wire = api.map((q) => q.body).join('\n');
    for (const v of [b64, hex, encoded, 'eve.encoded\uff20example.com']) assert.ok(!wire.includes(v), `${v} on the wire`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("a page library's Array.prototype.toJSON (Prototype.js 1.6) neither turns arrays into strings nor is lost", async () => {
  const { browser, page, errors } = await visit('/');
  try {
    await accept(page);
    const out = await page.evaluate(async () => {
      // As Prototype.js 1.6 defines it (by assignment: enumerable): an array is written
      // as a string of its items.
      // eslint-disable-next-line no-extend-native
      Array.prototype.toJSON = function () { return `[${this.map((x) => JSON.stringify(x)).join(', ')}]`; };
      const mine = Array.prototype.toJSON;
      const s = window.sightline;
      s.track('Order Completed', { order_id: 'proto-1', total: 29, currency: 'EUR', products: [{ product_id: 'ETH-GUJI', quantity: 2 }], tags: ['a', 'b'] });
      await s.flush();
      const d = Object.getOwnPropertyDescriptor(Array.prototype, 'toJSON');
      return { anon: s.anonymousId(), kept: d.value === mine && d.enumerable && d.writable, pageJson: JSON.stringify({ t: [1] }) };
    });
    assert.ok(out.kept, "the page's toJSON is put back as it was");
    assert.equal(out.pageJson, '{"t":"[1]"}', 'and the page still reads its own way');
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${out.anon}' and event = 'Order Completed'`);
      return r.length === 1 && r;
    }, 20_000, 'the order');
    const p = JSON.parse(stored[0].payload).properties;
    assert.deepEqual(p.products, [{ product_id: 'ETH-GUJI', quantity: 2 }]);
    assert.deepEqual(p.tags, ['a', 'b']);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("Segment's callback argument: called once the call is sent (a link that navigates in it gets there, its event stored), and without waiting when nothing can be sent yet", async () => {
  const { browser, page, errors } = await visit('/');
  try {
    // Undecided (opt-in): nothing can be sent (the event waits in memory), and the
    // callback still comes.
    const waited = await page.evaluate(() => new Promise((resolve) => {
      const t0 = performance.now();
      window.sightline.track('Before Consent', {}, () => resolve(performance.now() - t0));
    }));
    assert.ok(waited < 1000, `called after ${waited} ms`);
    await accept(page);
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    // analytics.js code: track(event, properties, options, callback) navigating in the callback.
    await Promise.all([
      page.waitForURL('**/about', { timeout: 10_000 }),
      page.evaluate(() => {
        window.sightline.track('Outbound Link Clicked', { to: '/about' }, { context: {} }, () => { location.href = '/about'; });
      }),
    ]);
    // identify(userId, traits, callback) and page(name, properties, callback) too.
    const calls = await page.evaluate(async () => {
      await window.sightline.ready;
      const s = window.sightline;
      const n = await Promise.all([
        new Promise((r) => s.identify('cb-user', { plan: 'pro' }, () => r('identify'))),
        new Promise((r) => s.page('About', { section: 'cb' }, () => r('page'))),
        new Promise((r) => s.group('cb-group', () => r('group'))),
        // analytics.js's page(category, name, properties, options, callback).
        new Promise((r) => s.page('Docs', 'Getting Started', { section: 'intro' }, {}, () => r('category page'))),
      ]);
      return n;
    });
    assert.deepEqual(calls, ['identify', 'page', 'group', 'category page']);
    await eventually(async () => (await rows(`anonymous_id = '${anon}' and event = 'Outbound Link Clicked'`)).length === 1, 20_000, 'the clicked event, sent before the page left');
    const group = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and type = 'group'`);
      return r.length === 1 && r;
    }, 20_000, 'the group call');
    assert.equal(JSON.parse(group[0].payload).groupId, 'cb-group');
    const docs = await eventually(async () => {
      const r = await collector.query(`select payload from events where anonymous_id = '${anon}' and type = 'page' and json_extract(payload, '$.name') = 'Getting Started'`);
      return r.length === 1 && JSON.parse(r[0].payload);
    }, 20_000, 'the page with a category');
    assert.deepEqual([docs.properties.category, docs.properties.section], ['Docs', 'intro']);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("a credential in the page's address (a reset link's token) or in a property is neither sent nor stored; the campaign beside it is read", async () => {
  const { browser, page, api, errors } = await visit('/about?reset_token=R3s3tT0k3n&utm_source=Mail');
  try {
    await accept(page);
    const anon = await page.evaluate(async () => {
      history.pushState({}, '', '/about?step=2#access_token=Fr4gT0k3n&state=1');
      window.sightline.track('Link Shared', { link: '/account?api_key=Pr0pK3y' });
      await window.sightline.flush();
      return window.sightline.anonymousId();
    });
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}'`);
      return r.filter((x) => x.type === 'page').length >= 1 && r.some((x) => x.event === 'Link Shared') && r;
    }, 20_000, 'the page view and the event');
    const landing = JSON.parse(stored.find((r) => r.type === 'page').payload);
    assert.equal(landing.context.page.url, `${collector.url}/about?reset_token=redacted&utm_source=Mail`);
    assert.equal(landing.context.campaign.source, 'mail');
    const wire = api.map((q) => q.body).join('\n');
    // Redacted before it leaves: the page's address, and an address the page passes.
    for (const secret of ['R3s3tT0k3n', 'Fr4gT0k3n', 'Pr0pK3y']) {
      assert.ok(!wire.includes(secret), `${secret} on the wire`);
      assert.ok(!stored.some((r) => r.payload.includes(secret)), `${secret} stored`);
    }
    const shared = JSON.parse(stored.find((r) => r.event === 'Link Shared').payload);
    assert.equal(shared.properties.link, '/account?api_key=redacted');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("analytics.js's trackLink and trackForm: clicks and submits are tracked (also called before load, or stopped by the page), the navigation is not held, an outbound link's event leaves with the page's last request", async () => {
  const { browser, page, errors } = await visit('/about');
  try {
    await accept(page);
    const anon = await page.evaluate(() => window.sightline.anonymousId());
    // The about page's own link, hooked by its inline script before the SDK loaded.
    await Promise.all([page.waitForURL(`${collector.url}/`), page.click('#shop-link')]);
    await page.evaluate(() => window.sightline.ready);
    const returned = await page.evaluate(() => {
      const s = window.sightline;
      const f = Object.assign(document.createElement('form'), { id: 'search', action: '/about', method: 'get' });
      f.innerHTML = '<input name="q" value="guji"><button id="go">Search</button>';
      // The page stops it, and notes whether anything held it back.
      f.addEventListener('submit', (e) => {
        e.stopPropagation();
        sessionStorage.setItem('held', String(e.defaultPrevented));
      });
      document.body.append(f);
      // What a page may hand it: none of these throws or is hooked.
      const odd = [null, undefined, 42, 'a', {}, [null, 1], document.createTextNode('x')].map((v) => s.trackLink(v, 'Odd') === s);
      return [...odd, s.trackForm(document.querySelectorAll('#search'), 'Search Submitted', (form) => ({ q: form.q.value })) === s];
    });
    assert.ok(returned.every(Boolean), 'each call returns the SDK, for chaining');
    await Promise.all([page.waitForURL(`${collector.url}/about?q=guji`), page.click('#go')]);
    await page.evaluate(() => window.sightline.ready);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('held')), 'false');
    await page.evaluate(() => {
      const s = window.sightline;
      const out = Object.assign(document.createElement('a'), { id: 'out', href: 'http://outbound.example/next', textContent: 'out' });
      const bad = Object.assign(document.createElement('a'), { id: 'bad', href: '#top', textContent: 'bad' });
      document.body.append(out, bad);
      s.trackClick(out, 'Outbound Link Clicked', { to: 'outbound.example' });
      s.trackLink(bad, () => { throw new Error('a page bug'); });
    });
    await page.click('#bad'); // its name throws: nothing thrown into the page
    // The next page is not ours (and cannot load here): only the last request carries it.
    await page.click('#out', { noWaitAfter: true });
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and type = 'track' and (event like '%Clicked' or event = 'Search Submitted')`);
      return r.length >= 3 && r;
    }, 20_000, 'the three tracked events');
    const by = Object.fromEntries(stored.map((r) => [r.event, JSON.parse(r.payload).properties]));
    assert.deepEqual(Object.keys(by).sort(), ['Outbound Link Clicked', 'Search Submitted', 'Shop Link Clicked']);
    assert.deepEqual(by['Shop Link Clicked'], { href: '/' });
    assert.deepEqual(by['Search Submitted'], { q: 'guji' });
    assert.deepEqual(by['Outbound Link Clicked'], { to: 'outbound.example' });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('data-track-links: a click on a link to another site or to a file is an event, with no code; the site\'s own links are not', async () => {
  const browser = await startBrowser();
  try {
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await altered(page, '**/about', async (response) => ({
      body: (await response.text()).replace('data-write-key="sl_dev_key"', 'data-write-key="sl_dev_key" data-track-links="outbound downloads"') }));
    await page.goto(`${collector.url}/about`);
    await page.evaluate(() => window.sightline.ready);
    await accept(page);
    const anon = await page.evaluate(() => {
      const add = (id, href, html) => document.body.append(Object.assign(document.createElement('a'), { id, href, innerHTML: html }));
      add('file', '/files/roast-guide.pdf', 'The roasting guide');
      add('own', '/about#team', '<span>Our team</span>');
      add('away', 'http://partner.example/beans?api_key=K3yInUrl', '<b>Our importer</b> (write to jo@x.io)');
      // A download must not leave the page here: kept from navigating by the page.
      document.getElementById('file').addEventListener('click', (e) => e.preventDefault());
      return window.sightline.anonymousId();
    });
    await page.click('#file');
    await page.click('#own');
    await page.click('#away span, #away b', { noWaitAfter: true }); // a click on the link's child
    const r = await eventually(async () => {
      const x = await rows(`anonymous_id = '${anon}' and event in ('File Downloaded', 'Outbound Link Clicked')`);
      return x.length >= 2 && x;
    }, 20_000, 'the two link events');
    await new Promise((res) => setTimeout(res, 500));
    const all = await rows(`anonymous_id = '${anon}' and type = 'track' and event != 'Consent Updated'`);
    const props = Object.fromEntries(all.map((x) => [x.event, JSON.parse(x.payload).properties]));
    assert.deepEqual(Object.keys(props).sort(), ['File Downloaded', 'Outbound Link Clicked'], 'not the own link');
    assert.deepEqual(props['File Downloaded'], { url: `${collector.url}/files/roast-guide.pdf`, text: 'The roasting guide' });
    assert.equal(props['Outbound Link Clicked'].url, 'http://partner.example/beans?api_key=redacted');
    assert.ok(props['Outbound Link Clicked'].text.startsWith('Our importer (write to '), props['Outbound Link Clicked'].text);
    assert.ok(!r.some((x) => x.payload.includes('jo@x.io') || x.payload.includes('K3yInUrl')));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("analytics.js's setAnonymousId: the page's id from the next event on, kept across pages; a shared placeholder is refused", async () => {
  const { browser, page, errors } = await visit('/about');
  try {
    await accept(page);
    const answers = await page.evaluate(() => ['undefined', 'null', '', '0'].map((v) => window.sightline.setAnonymousId(v)));
    assert.deepEqual(answers, [false, false, false, false]);
    const id = `srv-${Date.now().toString(36)}`;
    assert.equal(await page.evaluate((v) => window.sightline.setAnonymousId(v), id), true);
    await page.evaluate(() => window.sightline.track('After Set Id'));
    await page.reload();
    await page.evaluate(() => window.sightline.ready);
    assert.equal(await page.evaluate(() => window.sightline.anonymousId()), id, 'kept');
    await page.evaluate(() => window.sightline.flush());
    const r = await eventually(async () => {
      const x = await rows(`anonymous_id = '${id}'`);
      return x.some((e) => e.event === 'After Set Id') && x.some((e) => e.type === 'page') && x;
    }, 20_000, "the events under the page's id");
    assert.ok(r.length >= 2);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("analytics.js's options argument: integrations, a timestamp and context (with other keys) reach the stored event, raw PII in them hashed, for that call only", async () => {
  const { browser, page, errors } = await visit('/');
  try {
    await accept(page);
    const anon = await page.evaluate(async () => {
      const s = window.sightline;
      s.track('Options Tracked', { a: 1 }, {
        integrations: { All: false, Mixpanel: true },
        timestamp: new Date('2026-01-02T03:04:05.000Z'),
        context: { traits: { email: 'Opt.Jane@Example.com' }, app: { name: 'shop' } },
        locale: 'fr-FR',
      });
      s.identify({ plan: 'pro' }, { integrations: { All: false } });
      s.page('Docs', 'Options Page', { section: 'x' }, { timestamp: '2026-01-03T00:00:00Z' });
      s.track('Options Not Given', { a: 2 });
      await s.flush();
      return s.anonymousId();
    });
    const stored = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and (event like 'Options%' or type = 'identify' or json_extract(payload, '$.name') = 'Options Page')`);
      return r.length === 4 && r.map((x) => JSON.parse(x.payload));
    }, 20_000, 'the four calls');
    const by = (f) => stored.find(f);
    const tracked = by((e) => e.event === 'Options Tracked');
    const plain = by((e) => e.event === 'Options Not Given');
    assert.deepEqual(tracked.integrations, { All: false, Mixpanel: true });
    assert.match(tracked.timestamp, /^2026-01-02T03:04:0/);
    assert.equal(tracked.context.app.name, 'shop');
    assert.equal(tracked.context.locale, 'fr-FR');
    assert.match(tracked.context.traits.email, /^[0-9a-f]{64}$/);
    assert.equal(tracked.context.consent.categoryPreferences.analytics, true);
    assert.deepEqual(by((e) => e.type === 'identify').integrations, { All: false });
    assert.match(by((e) => e.name === 'Options Page').timestamp, /^2026-01-03T00:00:0/);
    assert.equal(plain.integrations, undefined);
    assert.equal(plain.context.app, undefined);
    assert.ok(!plain.timestamp.startsWith('2026-01-0'), plain.timestamp);
    assert.ok(!JSON.stringify(stored).toLowerCase().includes('opt.jane'));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("US privacy: an opt-out of sale in the IAB's GPP (its own CMP library, @iabgpp/cmpapi) or the US Privacy string denies marketing, never grants it, and leaves undecided events waiting", async () => {
  const { build } = await import('esbuild');
  // The IAB's CMP library ships as modules only: bundled here as a CMP's build would.
  const lib = (await build({
    stdin: { contents: "export { CmpApi, SignalStatus } from '@iabgpp/cmpapi';", resolveDir: ROOT },
    bundle: true, format: 'iife', globalName: 'IabGpp', write: false,
  })).outputFiles[0].text;
  const browser = await startBrowser();
  try {
    // GPP: the CMP loads before the SDK (its stub is first in the head), its signal not
    // ready until the visitor has answered.
    const page = await browser.context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.addInitScript(`${lib};window.IabGpp = IabGpp;window.gppApi = new IabGpp.CmpApi(1, 1);`);
    await page.goto(`${collector.url}/about?gclid=GPP-CLICK-1`);
    await page.evaluate(() => window.sightline.ready);
    await accept(page);
    assert.equal(await page.evaluate(() => window.sightline.consent.get().marketing), true);
    // The visitor opts out of sale in the CMP: its US-national section says so.
    const optedOut = await page.evaluate(() => {
      const api = window.gppApi;
      api.setApplicableSections([7]);
      api.setFieldValue('usnat', 'SaleOptOutNotice', 1);
      api.setFieldValue('usnat', 'SaleOptOut', 1);
      api.setSignalStatus(IabGpp.SignalStatus.READY);
      api.fireSectionChange('usnat');
      return api.getGppString();
    });
    await eventually(async () => (await page.evaluate(() => window.sightline.consent.get().marketing)) === false, 5_000, 'marketing denied');
    assert.equal(await page.evaluate(() => window.sightline.consent.get().analytics), true, 'analytics untouched');
    // "Did not opt out" later grants nothing back.
    await page.evaluate(() => { window.gppApi.setFieldValue('usnat', 'SaleOptOut', 2); window.gppApi.fireSectionChange('usnat'); });
    assert.equal(await page.evaluate(() => window.sightline.consent.get().marketing), false);
    const anon = await page.evaluate(() => { window.sightline.track('After Opt Out'); window.sightline.flush(); return window.sightline.anonymousId(); });
    const log = await eventually(async () => { const l = await consentLog(anon); return l.some((e) => e.source === 'gpp') && l; }, 20_000, 'the opt-out logged');
    const gppRecord = log.find((e) => e.source === 'gpp');
    assert.equal(JSON.parse(gppRecord.categories).marketing, false);
    // Its evidence: the CMP's GPP string as the library encoded it, and the page (whose
    // click id is an address parameter like any other).
    assert.equal(gppRecord.evidence.gppString, optedOut);
    assert.ok(gppRecord.evidence.pageUrl.startsWith(`${collector.url}/about`), JSON.stringify(gppRecord));
    const after = await eventually(async () => {
      const r = await rows(`anonymous_id = '${anon}' and event = 'After Opt Out'`);
      return r.length === 1 && r;
    }, 20_000, 'the event after the opt-out');
    assert.equal(JSON.parse(after[0].payload).context.consent.categoryPreferences.marketing, false);
    assert.ok(!after[0].payload.includes('GPP-CLICK-1'), 'no click id kept');
    assert.deepEqual(errors, []);

    // The US Privacy string (`__uspapi`, a stand-in of its documented call), read at start
    // before any banner answer: marketing denied, and the landing page view waits for
    // analytics instead of being dropped. Nothing is sent or written before the answer
    // (the opt-out's record waits for it).
    const other = await startBrowser();
    try {
      const usp = await other.context.newPage();
      const sent = [];
      other.context.on('request', (r) => { if (new URL(r.url()).pathname.startsWith('/v1/')) sent.push(r.url()); });
      await usp.addInitScript(() => {
        window.__uspapi = (cmd, version, cb) => { if (cmd === 'getUSPData') cb({ version: 1, uspString: '1YYN' }, true); };
        window.__writes = [];
        const set = Storage.prototype.setItem;
        Storage.prototype.setItem = function (...a) { window.__writes.push(a[0]); return set.apply(this, a); };
      });
      await usp.goto(`${collector.url}/about`);
      await usp.evaluate(() => window.sightline.ready);
      assert.deepEqual(await usp.evaluate(() => window.sightline.consent.get()),
        { analytics: false, marketing: false, personalization: false, decided: false });
      assert.equal(await usp.evaluate(() => window.sightline.stats().purged), 0, 'nothing dropped');
      await usp.waitForTimeout(1200);
      assert.deepEqual(sent, [], 'no request before the answer');
      assert.deepEqual(await usp.evaluate(() => window.__writes), [], 'no storage write before the answer');
      await usp.evaluate(() => { window.sightline.consent.set({ analytics: true }); return window.sightline.flush(); });
      const uspAnon = await usp.evaluate(() => window.sightline.anonymousId());
      const landing = await eventually(async () => {
        const r = await rows(`anonymous_id = '${uspAnon}' and type = 'page'`);
        return r.length === 1 && r;
      }, 20_000, 'the landing page view');
      assert.equal(JSON.parse(landing[0].payload).context.consent.categoryPreferences.marketing, false);
      const uspLog = await eventually(async () => { const l = await consentLog(uspAnon); return l.length >= 2 && l; }, 20_000, 'the log');
      assert.ok(uspLog.some((e) => e.source === 'usp' && JSON.parse(e.categories).marketing === false), JSON.stringify(uspLog));
      assert.equal(uspLog.find((e) => e.source === 'usp').evidence.uspString, '1YYN');
    } finally {
      await other.close();
    }
  } finally {
    await browser.close();
  }
});

test('an Angular page (zone.js patches Promise, fetch, timers and event listeners) gets the SDK, its events delivered, no page error', async () => {
  const { readFileSync } = await import('node:fs');
  const zone = readFileSync(`${ROOT}node_modules/zone.js/bundles/zone.umd.min.js`, 'utf8');
  // First in the head, as Angular's polyfills load.
  const { anon, stats } = await landsOnAbout((page) => page.addInitScript(zone), async (page) => {
    const patched = await page.evaluate(() => typeof Zone === 'function' && String(Promise).includes('ZoneAwarePromise'));
    assert.ok(patched, 'zone.js replaced Promise');
    await page.evaluate(() => window.sightline.track('Zone Event', { n: 1 }));
  });
  assert.equal(stats.queued, 0);
  await eventually(async () => (await rows(`anonymous_id = '${anon}' and event = 'Zone Event'`)).length === 1, 20_000, 'the event');
});

test('a browser without WebAssembly (iOS Lockdown Mode, Edge\'s strict security mode): the page works, the calls are kept, one warning says why', async () => {
  const browser = await startBrowser();
  try {
    const page = await browser.context.newPage();
    const errors = [];
    const warnings = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.text().includes('[sightline]')) warnings.push(m.text()); });
    const wasmFetched = [];
    page.on('request', (r) => { if (r.url().endsWith('.wasm')) wasmFetched.push(r.url()); });
    await page.addInitScript(() => { delete window.WebAssembly; });
    await page.goto(`${collector.url}/about`);
    const out = await page.evaluate(() => {
      const s = window.sightline;
      s.track('Without Wasm');
      s.consent.set({ analytics: true });
      return { noWasm: typeof WebAssembly === 'undefined', kept: Array.isArray(s) && s.length >= 2 };
    });
    await page.waitForTimeout(1500);
    assert.ok(out.noWasm && out.kept, JSON.stringify(out));
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0], /runs no WebAssembly/);
    assert.deepEqual(wasmFetched, [], 'nothing downloaded for nothing');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('a page whose intrinsics are frozen (as SES lockdown leaves them): the SDK starts and delivers, no page error', async () => {
  const freeze = () => {
    for (const c of [Object, Array, Function, String, Number, Boolean, Promise, Map, Set, Error, JSON, Reflect, Math]) {
      Object.freeze(c);
      if (c.prototype) Object.freeze(c.prototype);
    }
  };
  const { anon } = await landsOnAbout((page) => page.addInitScript(freeze), async (page) => {
    assert.ok(await page.evaluate(() => Object.isFrozen(Array.prototype)));
    await page.evaluate(() => window.sightline.track('Frozen', { list: [1, 2] }));
  });
  const got = await eventually(async () => {
    const r = await rows(`anonymous_id = '${anon}' and event = 'Frozen'`);
    return r.length === 1 && r;
  }, 20_000, 'the event');
  assert.deepEqual(JSON.parse(got[0].payload).properties.list, [1, 2]);
});

/** The SDK starts and delivers although the snippet's early compile of the wasm fails
 * (`change` alters the first answer): the SDK's script fetches it again, once, and
 * says nothing of a CSP. */
async function deliversDespite(change, event) {
  const browser = await startBrowser();
  try {
    const served = await altered(browser.context, '**/sl/sightline.wasm', change);
    const page = await browser.context.newPage();
    const errors = [];
    const warnings = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.text().includes('[sightline]')) warnings.push(m.text()); });
    await page.goto(`${collector.url}/about`);
    await page.evaluate(() => window.sightline.ready);
    await accept(page);
    const anon = await page.evaluate((name) => { window.sightline.track(name); window.sightline.flush(); return window.sightline.anonymousId(); }, event);
    await eventually(async () => (await rows(`event = '${event}' and anonymous_id = '${anon}'`)).length === 1, 15_000, 'the event');
    assert.equal(served(), 2, 'the snippet\'s fetch, then the script\'s');
    assert.deepEqual(warnings, []);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
}

test('a server that sends the wasm under another type: the SDK still starts and delivers', () =>
  // The snippet's streaming compile refuses a response that is not application/wasm.
  deliversDespite((response) => ({ headers: { ...response.headers(), 'content-type': 'application/octet-stream' } }), 'Odd Type'));

test('a wasm download cut short is fetched again; the SDK starts and says nothing of a CSP', () =>
  // The first answer ends halfway (a proxy's truncation); the second is whole.
  deliversDespite(async (response, n) => {
    const body = await response.body();
    return { body: n === 1 ? body.subarray(0, body.length >> 1) : body };
  }, 'After Truncation'));

test('a page with an element whose id is "sightline" (the browser names it on window) still gets the SDK', () =>
  landsOnAbout(
    (page) => altered(page, '**/about', async (response) => ({
      // Before the snippet (a snippet pasted at the end of the body meets it there).
      body: (await response.text()).replace('<head>', '<head><div id="sightline">Sightline, our newsletter</div>') })),
    async (page) => assert.equal(await page.evaluate(() => document.getElementById('sightline').tagName), 'DIV'),
  ));

test('a page whose <base href> points at another host still loads the SDK from its own origin', () => {
  const requested = [];
  return landsOnAbout(
    async (page) => {
      page.on('request', (r) => requested.push(r.url()));
      await altered(page, '**/about', async (response) => ({
        body: (await response.text()).replace('<head>', '<head><base href="https://cdn.invalid/assets/">') }));
    },
    async () => assert.ok(requested.includes(`${collector.url}/sl/sightline.js`), requested.join(', ')),
  );
});

test("a page's fetch wrapper that throws at the snippet's early wasm fetch: the SDK still loads and delivers", () =>
  landsOnAbout((page) => page.addInitScript(() => {
    const real = window.fetch;
    let first = true;
    window.fetch = function (...a) {
      if (first) { first = false; throw new Error('page fetch wrapper'); }
      return real.apply(this, a);
    };
  })));

test('a page whose CSP refuses WebAssembly: nothing breaks, calls are kept, one warning says why', async () => {
  const browser = await startBrowser();
  try {
    const page = await browser.context.newPage();
    await altered(page, '**/about', (response) => ({ headers: { ...response.headers(),
      'content-security-policy': "script-src 'self' 'unsafe-inline'; connect-src 'self'" } }));
    const errors = [];
    const warnings = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.text().includes('[sightline]')) warnings.push([m.type(), m.text()]); });
    await page.goto(`${collector.url}/about`);
    await page.evaluate(() => window.sightline.track('Clicked', { where: 'csp page' }));
    await eventually(() => warnings.length > 0, 10_000, 'the warning');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.equal(warnings[0][0], 'warning');
    assert.match(warnings[0][1], /wasm-unsafe-eval/);
    assert.deepEqual(errors, [], 'no uncaught error in the page');
    const kept = await page.evaluate(() => Array.from(window.sightline).map((c) => c[0]));
    assert.ok(kept.includes('track'), `the stub keeps the calls: ${kept}`);
  } finally {
    await browser.close();
  }
});
