// Load benchmark of the real collector (`scripts/bench.sh load`): wrangler dev in
// workerd with local D1, Durable Objects and Queues, driven for LOAD_SECONDS (default
// 60) by LOAD_CONCURRENCY (default 16) concurrent senders. Traffic: browser batches of
// 1 to 10 events from many visitors (80% of requests), server batches of 100 events from
// many users (20%); 5% of events are retries of one already sent (same messageId and
// content), 2% are invalid (quarantined). Prints sustained requests/s and events/s,
// latency percentiles and subrequests (the collector's `X-Subrequests`: Durable Object
// calls, D1 batches, Queue sends) per request type, and every non-200 answer by status and code
// (the goal is none but `503 in_flight`: a retry sent while its first send is still being
// stored is told to come back, by design).
import { startCollector, ALLOWED_ORIGIN } from '../e2e/harness.mjs';

const SECONDS = Number(process.env.LOAD_SECONDS || 60);
const CONCURRENCY = Number(process.env.LOAD_CONCURRENCY || 16);
const BROWSER_KEY = 'sl_dev_key';
const SERVER_KEY = 'sl_server_key';

let seq = 0;
const sent = [];
const rand = (n) => Math.floor(Math.random() * n);
const GRANTED = { categoryPreferences: { analytics: true, marketing: true, personalization: true } };

function event(visitor, user) {
  if (sent.length > 100 && Math.random() < 0.05) return sent[rand(sent.length)]; // a retry
  const e = {
    type: 'track',
    event: 'Product Viewed',
    messageId: `load-${process.pid}-${++seq}`,
    anonymousId: visitor,
    ...(user ? { userId: user } : {}),
    properties: { product_id: `P-${rand(500)}`, price: 12.5, currency: 'EUR' },
    timestamp: new Date().toISOString(),
    context: { consent: GRANTED, page: { path: '/products', url: 'https://shop.example/products?utm_source=news' } },
  };
  if (Math.random() < 0.02) e.type = 'purchase'; // not a Segment type: quarantined
  if (sent.length < 5000) sent.push(e);
  return e;
}

function request() {
  if (Math.random() < 0.8) {
    const visitor = `v-${rand(20000)}`;
    const batch = Array.from({ length: 1 + rand(10) }, () => event(visitor));
    return { kind: 'browser', key: BROWSER_KEY, batch, headers: { origin: ALLOWED_ORIGIN } };
  }
  const batch = Array.from({ length: 100 }, () => event(`s-${rand(50000)}`, `u-${rand(20000)}`));
  return { kind: 'server', key: SERVER_KEY, batch, headers: {} };
}

const pct = (xs, p) => {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const collector = await startCollector();
const stats = { browser: [], server: [] };
const subrequests = { browser: [], server: [] };
const answers = { accepted: 0, duplicates: 0, quarantined: 0, refused: 0 };
const errors = {};
let events = 0;
const start = performance.now();
const end = start + SECONDS * 1000;
async function sender() {
  while (performance.now() < end) {
    const r = request();
    const t = performance.now();
    let status = 0;
    try {
      const res = await fetch(`${collector.url}/v1/batch`, {
        method: 'POST',
        body: JSON.stringify({ writeKey: r.key, batch: r.batch }),
        headers: { 'content-type': 'text/plain', ...r.headers },
      });
      status = res.status;
      subrequests[r.kind].push(Number(res.headers.get('x-subrequests')) || 0);
      const body = await res.json();
      if (status === 200) for (const k of Object.keys(answers)) answers[k] += body[k] || 0;
      else status = `${status} ${body.error && body.error.code}`;
    } catch {}
    stats[r.kind].push(performance.now() - t);
    if (status === 200) events += r.batch.length;
    else errors[status] = (errors[status] || 0) + 1;
  }
}
try {
  await Promise.all(Array.from({ length: CONCURRENCY }, sender));
} finally {
  await collector.dispose();
}
const secs = (performance.now() - start) / 1000;
const requests = stats.browser.length + stats.server.length;
console.log(`load: ${SECONDS} s, ${CONCURRENCY} concurrent senders, wrangler dev (workerd, local D1/DO/Queues)`);
console.log(`  requests/s ${(requests / secs).toFixed(1)}   events/s ${(events / secs).toFixed(1)}   errors ${JSON.stringify(errors)}`);
console.log(`  answers ${JSON.stringify(answers)}`);
for (const [kind, xs] of Object.entries(stats)) {
  const sub = subrequests[kind];
  const mean = sub.reduce((a, b) => a + b, 0) / Math.max(1, sub.length);
  console.log(`  ${kind.padEnd(8)} requests ${String(xs.length).padStart(6)}   p50 ${pct(xs, 50).toFixed(1)} ms   p95 ${pct(xs, 95).toFixed(1)} ms   p99 ${pct(xs, 99).toFixed(1)} ms` +
    `   subrequests mean ${mean.toFixed(1)}, max ${Math.max(0, ...sub)}`);
}
