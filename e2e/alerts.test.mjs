// Data-quality alerts in workerd: a week of history (and four weeks of attribution
// credits) seeded into the local D1, the
// maintenance run (as the hourly Cron Trigger runs it) judges the last complete day, and
// a local stand-in for a Slack incoming webhook checks what it receives: Slack's
// documented message shape (`text`, `blocks` of `section`/`mrkdwn`) and the HMAC-SHA256
// signature. A failed delivery is sent again by the next run; a delivered alert never is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { startCollector, startBrowser, openInspector, TEST_SOURCES, freePort } from './harness.mjs';

const SECRET = 'alert-hmac-key-for-tests';
const DAYS = ['2026-11-12', '2026-11-13', '2026-11-14', '2026-11-15', '2026-11-16', '2026-11-17', '2026-11-18', '2026-11-19'];
const NOW = '2026-11-20T06:00:00Z'; // the day judged is 2026-11-19

/** A stand-in for a Slack incoming webhook: validates every delivery, answers 500 while
 * `failing`, then Slack's `ok`. */
async function webhookStandIn() {
  const got = [];
  const problems = [];
  let failing = true;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const ts = req.headers['x-sightline-timestamp'] || '';
      const sig = req.headers['x-sightline-signature'] || '';
      const want = 'sha256=' + createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex');
      if (req.method !== 'POST') problems.push(`method ${req.method}`);
      if (!/^application\/json/.test(req.headers['content-type'] || '')) problems.push('content-type');
      if (sig.length !== want.length || !timingSafeEqual(Buffer.from(sig), Buffer.from(want))) problems.push('bad signature');
      let msg;
      try { msg = JSON.parse(body); } catch { problems.push('not JSON'); }
      if (msg) {
        if (typeof msg.text !== 'string' || !msg.text) problems.push('no text');
        if (!Array.isArray(msg.blocks) || msg.blocks.length === 0) problems.push('no blocks');
        for (const b of msg.blocks || []) {
          if (b.type !== 'section' || b.text?.type !== 'mrkdwn' || typeof b.text.text !== 'string') problems.push(`block ${JSON.stringify(b)}`);
          if ((b.text?.text || '').length > 3000) problems.push('section text over 3000 characters');
        }
      }
      got.push({ ts, msg, failed: failing });
      res.writeHead(failing ? 500 : 200, { 'content-type': 'text/plain' });
      res.end(failing ? 'boom' : 'ok');
    });
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}/hook`, got, problems, recover: () => { failing = false; }, close: () => new Promise((r) => server.close(r)) };
}

/** Seeds the local D1 through wrangler, again after a moment if the database was busy
 * (the running collector holds it open). */
async function seed(collector, sql) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await collector.query(sql);
    } catch (e) {
      if (attempt === 3) throw new Error(`seeding failed: ${e.stderr || e.message}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

test('alerts: the thresholds on a seeded week, a signed Slack-compatible webhook, retried once', async () => {
  const hook = await webhookStandIn();
  const sources = {
    ...TEST_SOURCES,
    sl_alert_key: {
      name: 'alerted shop', consent: 'opt-out',
      plan: { version: '1', events: { 'Order Completed': {}, 'Product Added': {}, 'Never Seen': {} } },
      alerts: { webhook: hook.url, secret: 'ALERT_SECRET', quarantineRate: 0.05 },
      attribution: { conversions: [{ event: 'Order Completed', revenue: 'total' }] },
    },
  };
  const collector = await startCollector({ sources, vars: { ALERT_SECRET: SECRET } });
  try {
    // Order Completed: 20 a day, then 10 on the day judged (-50%). Product Added: 30 a day.
    const rows = [];
    const row = (event, day, i) => `('sl_alert_key','seed-${event.replace(' ', '')}-${day}-${i}','track','${event}','a-${i}','${day}T12:00:00.000Z','${day}T12:00:00.000Z','{}',1)`;
    for (const day of DAYS) {
      const orders = day === DAYS.at(-1) ? 10 : 20;
      for (let i = 0; i < orders; i++) rows.push(row('Order Completed', day, i));
      for (let i = 0; i < 30; i++) rows.push(row('Product Added', day, i));
    }
    await seed(collector, `insert into events (write_key, message_id, type, event, anonymous_id, timestamp, received_at, payload, archived) values ${rows.join(',')}`);
    // The day before: 2% quarantined, 60% identified. The day judged: 12 of 52 quarantined
    // (23%: above 5%, and more than double), 8 of 40 identified (80% anonymous).
    await seed(collector, `insert into daily_counts (write_key, day, received, accepted, quarantined, identified) values
      ('sl_alert_key','2026-11-18',51,50,1,30), ('sl_alert_key','2026-11-19',52,40,12,8)`);
    const q = Array.from({ length: 12 }, (_, i) => `('sl_alert_key','seed-q-${i}','[]','{"type":"track","event":"Checkout Started"}','2026-11-19T13:00:00.000Z','missing_required')`);
    await seed(collector, `insert into quarantine (write_key, message_id, reasons, payload, received_at, reason) values ${q.join(',')}`);

    // Conversions by channel: half email, half paid search for 28 days; then 9 to 3.
    const credit = (day, ch, n) => `('sl_alert_key','c-${day}-${ch}','p_x','${day}T12:00:00.000Z','last_non_direct',28,'${ch}',${n},0)`;
    const credits = [];
    for (let i = 1; i <= 28; i++) {
      const day = new Date(Date.parse('2026-11-19T00:00:00Z') - i * 86_400_000).toISOString().slice(0, 10);
      credits.push(credit(day, 'email', 5), credit(day, 'paid_search', 5));
    }
    credits.push(credit('2026-11-19', 'email', 9), credit('2026-11-19', 'paid_search', 3));
    await seed(collector, `insert into conversion_credits (write_key, message_id, profile_id, at, model, window_days, channel, credit, revenue) values ${credits.join(',')}`);

    const run = () => collector.adminJson(`/admin/v1/maintenance?now=${encodeURIComponent(NOW)}`, { method: 'POST' });
    const first = await run();
    const found = first.alerts.sl_alert_key;
    const by = Object.fromEntries(found.map((a) => [a.kind, a]));
    assert.deepEqual(Object.keys(by).sort(), ['anonymous_share', 'attribution_shift', 'plan_coverage', 'quarantine_doubled', 'quarantine_rate', 'volume_drop']);
    const shifts = found.filter((a) => a.kind === 'attribution_shift').map((a) => [a.subject, a.value, a.baseline, a.change]);
    assert.deepEqual(shifts, [['email', 0.75, 0.5, 0.5], ['paid_search', 0.25, 0.5, -0.5]]);
    assert.deepEqual(by.attribution_shift.events, ['Order Completed']);
    assert.equal(by.volume_drop.subject, 'Order Completed');
    assert.deepEqual([by.volume_drop.value, by.volume_drop.baseline, by.volume_drop.change], [10, 20, -0.5]);
    assert.equal(by.volume_drop.since, '2026-11-19');
    assert.deepEqual(by.volume_drop.events, ['Order Completed']);
    assert.equal(by.anonymous_share.value, 0.8);
    assert.deepEqual(by.quarantine_rate.events, ['Checkout Started']);
    assert.equal(by.quarantine_doubled.baseline, 1 / 51);
    assert.deepEqual(by.plan_coverage.events, ['Never Seen']);
    assert.ok(!found.some((a) => a.subject === 'Product Added'), 'a steady event does not alert');

    // The stand-in failed the first delivery: nothing marked delivered.
    assert.equal(hook.got.length, 1);
    let listed = (await collector.adminJson('/admin/v1/alerts?writeKey=sl_alert_key')).alerts;
    assert.equal(listed.length, 7);
    assert.ok(listed.every((a) => a.delivered === null));

    // The next run finds nothing new, and sends the undelivered alerts again.
    hook.recover();
    const second = await run();
    assert.equal(second.alerts.sl_alert_key, undefined, 'no alert twice');
    assert.equal(hook.got.length, 2);
    const msg = hook.got[1].msg;
    assert.equal(msg.text, 'Sightline: 7 data-quality alerts for alerted shop');
    assert.equal(msg.blocks.length, 7);
    assert.ok(msg.blocks.some((b) => /volume_drop.*Order Completed: 10 events on 2026-11-19, -50.0%/.test(b.text.text)), JSON.stringify(msg.blocks));
    listed = (await collector.adminJson('/admin/v1/alerts?writeKey=sl_alert_key')).alerts;
    assert.ok(listed.every((a) => typeof a.delivered === 'string'));

    await run();
    assert.equal(hook.got.length, 2, 'a delivered alert is not sent again');
    assert.deepEqual(hook.problems, []);
    // The inspector's Alerts tab lists them, with their delivery.
    const browser = await startBrowser();
    try {
      const page = await openInspector(browser, collector.url, 'alerts', 'sl_alert_key');
      await page.waitForSelector('#alert-table tr[data-kind=volume_drop]');
      const shown = await page.$$eval('#alert-table tbody tr', (rs) => rs.map((r) => [r.dataset.kind, r.cells[5].textContent]));
      assert.equal(shown.length, 7);
      assert.ok(shown.every(([, d]) => d.startsWith('sent ')), JSON.stringify(shown));
      assert.match(await page.textContent('#alert-table tr[data-kind=plan_coverage]'), /Never Seen/);
    } finally {
      await browser.close();
    }
  } finally {
    await collector.dispose();
    await hook.close();
  }
});
