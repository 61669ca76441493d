// Load benchmark of the real collector (`scripts/bench.sh load`): wrangler dev in
// workerd with local D1, Durable Objects and Queues, driven for LOAD_SECONDS (default
// 60) by LOAD_CONCURRENCY (default 16) concurrent senders. Traffic: browser batches of
// 1 to 10 events from many visitors (80% of requests), server batches of 100 events from
// many users (20%); 5% of events are retries of one already sent (same messageId and
// content; a browser's of its own), 2% are invalid (quarantined). Prints sustained requests/s and events/s,
// latency percentiles and subrequests (the collector's `X-Subrequests`: Durable Object
// calls, D1 batches, Queue sends; and `X-Object-Subrequests`: the most one object it
// called made in its own invocation) per request type, and every non-200 answer by status and code
// (the goal is none but `503 in_flight`: a retry sent while its first send is still being
// stored is told to come back, by design). From the collector's `Server-Timing`: CPU ms
// per request (wall time minus the time a subrequest was in flight, measured in the
// worker) and the identity graph's handler time per request, hence its ceiling. The
// collector runs once per count in LOAD_IDENTITY_SHARDS (default "1,4": one identity
// object per source, then four). Beside it, the ceiling: the same traffic against a
// worker that only parses and inserts (bench/ceiling), run first, in the same process.
import { join } from 'node:path';
import { startCollector, ALLOWED_ORIGIN, ROOT } from '../e2e/harness.mjs';

const SECONDS = Number(process.env.LOAD_SECONDS || 60);
// The collector is run once per identity shard count listed (IDENTITY_SHARDS: objects
// per source's graph), one after another, each for LOAD_SECONDS.
const SHARD_COUNTS = (process.env.LOAD_IDENTITY_SHARDS || '1,4').split(',').map(Number);
const CONCURRENCY = Number(process.env.LOAD_CONCURRENCY || 16);
const BROWSER_KEY = 'sl_dev_key';
const SERVER_KEY = 'sl_server_key';

let seq = 0;
const rand = (n) => Math.floor(Math.random() * n);
const GRANTED = { categoryPreferences: { analytics: true, marketing: true, personalization: true } };

// Events sent so far, by visitor: a browser retries its own events (the SDK resends its
// queue), a server library any of its users'.
const byVisitor = new Map();
const serverSent = [];

function event(visitor, user) {
  const own = user ? serverSent : byVisitor.get(visitor) || [];
  if (own.length > 0 && Math.random() < 0.05) return own[rand(own.length)]; // a retry
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
  if (user) {
    if (serverSent.length < 5000) serverSent.push(e);
  } else {
    byVisitor.set(visitor, [...own, e].slice(-50));
  }
  return e;
}

function request() {
  if (Math.random() < 0.8) {
    const visitor = `v-${rand(2000)}`;
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

/** `Server-Timing: a;dur=1, b;dur=2` as {a: 1, b: 2}. */
const timing = (h) => Object.fromEntries((h || '').split(',').map((p) => p.trim().split(';dur=')).filter((p) => p.length === 2).map(([k, v]) => [k, Number(v)]));
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

async function drive(url) {
  byVisitor.clear(); // retries repeat events sent to this worker only
  serverSent.length = 0;
  const r = { stats: { browser: [], server: [] }, subrequests: { browser: [], server: [] }, nested: { browser: [], server: [] }, timing: { browser: [], server: [] },
    answers: { accepted: 0, duplicates: 0, quarantined: 0, refused: 0 }, errors: {}, events: 0 };
  const start = performance.now();
  const end = start + SECONDS * 1000;
  async function sender() {
    while (performance.now() < end) {
      const q = request();
      const t = performance.now();
      let status = 0;
      try {
        const res = await fetch(`${url}/v1/batch`, {
          method: 'POST',
          body: JSON.stringify({ writeKey: q.key, batch: q.batch }),
          headers: { 'content-type': 'text/plain', ...q.headers },
        });
        status = res.status;
        r.subrequests[q.kind].push(Number(res.headers.get('x-subrequests')) || 0);
        r.nested[q.kind].push(Number(res.headers.get('x-object-subrequests')) || 0);
        r.timing[q.kind].push(timing(res.headers.get('server-timing')));
        const body = await res.json();
        if (status === 200) for (const k of Object.keys(r.answers)) r.answers[k] += body[k] || 0;
        else status = `${status} ${body.error && body.error.code}`;
      } catch {}
      r.stats[q.kind].push(performance.now() - t);
      if (status === 200) r.events += q.batch.length;
      else r.errors[status] = (r.errors[status] || 0) + 1;
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, sender));
  r.secs = (performance.now() - start) / 1000;
  return r;
}

function report(label, r, shards = 1) {
  const requests = r.stats.browser.length + r.stats.server.length;
  console.log(`${label}: ${SECONDS} s, ${CONCURRENCY} concurrent senders, wrangler dev (workerd, local D1/DO/Queues)`);
  console.log(`  requests/s ${(requests / r.secs).toFixed(1)}   events/s ${(r.events / r.secs).toFixed(1)}   errors ${JSON.stringify(r.errors)}`);
  console.log(`  answers ${JSON.stringify(r.answers)}`);
  for (const [kind, xs] of Object.entries(r.stats)) {
    const sub = r.subrequests[kind];
    const nested = r.nested[kind];
    const cpu = r.timing[kind].map((t) => t.cpu).filter((x) => x !== undefined);
    console.log(`  ${kind.padEnd(8)} requests ${String(xs.length).padStart(6)}   p50 ${pct(xs, 50).toFixed(1)} ms   p95 ${pct(xs, 95).toFixed(1)} ms   p99 ${pct(xs, 99).toFixed(1)} ms` +
      `   subrequests mean ${mean(sub).toFixed(1)}, max ${Math.max(0, ...sub)}` +
      ` (by one called object: mean ${mean(nested).toFixed(1)}, max ${Math.max(0, ...nested)})   CPU ms mean ${mean(cpu).toFixed(1)}, p50 ${pct(cpu, 50)}, p95 ${pct(cpu, 95)}`);
  }
  const all = [...r.timing.browser, ...r.timing.server];
  const kinds = ['total', 'cpu', 'io', 'dedup', 'dedup-object', 'identity', 'identity-object', 'identity-driver', 'd1', 'queue'].filter((k) => all.some((t) => t[k] !== undefined));
  for (const [kind, ts] of Object.entries(r.timing)) {
    if (ts.length) console.log(`  in the worker, mean ms per ${kind} request: ${kinds.map((k) => `${k} ${mean(ts.map((t) => t[k] || 0)).toFixed(1)}`).join(', ')}`);
  }
  const calls = all.filter((t) => t.identity > 0);
  if (calls.length) {
    // An identity object serves its calls one at a time (its handler is synchronous SQL
    // and JSON): 1000 / its handler's mean ms per call is what one object can take on
    // this machine.
    const latency = calls.map((t) => t.identity);
    const handler = calls.map((t) => t['identity-object'] || 0);
    // Over shards, a request's identity work is several calls to several objects:
    // `identity-object` is their handlers' time summed, and the graph's objects share it
    // (objects are picked by hashes, so evenly): n × 1000 / that mean is what the
    // source's graph can take, in requests per second.
    const perRequest = Math.max(0.01, mean(handler));
    // Of it, `identity-driver`: the time a shard spent driving a sharded call (its
    // rounds of the rules and the calls' JSON) beside the shards' own operations.
    const driver = mean(calls.map((t) => t['identity-driver'] || 0));
    console.log(`  identity graph (${shards} object${shards > 1 ? 's' : ''} per source): ${(calls.length / r.secs).toFixed(1)} requests/s; identity latency p50 ${pct(latency, 50)} ms, p95 ${pct(latency, 95)} ms, p99 ${pct(latency, 99)} ms;` +
      ` handler time per request ${mean(handler).toFixed(2)} ms (driving ${driver.toFixed(2)}) -> ceiling ~${Math.round(shards * 1000 / perRequest)} requests/s per source` +
      (driver > 0 ? `; the shards' operations alone ${(perRequest - driver).toFixed(2)} ms -> ~${Math.round(shards * 1000 / Math.max(0.01, perRequest - driver))}` : ''));
    for (const kind of Object.keys(r.timing)) {
      const own = r.timing[kind].filter((t) => t.identity > 0).map((t) => t['identity-object'] || 0);
      const driving = r.timing[kind].filter((t) => t.identity > 0).map((t) => t['identity-driver'] || 0);
      if (own.length) console.log(`    ${kind} calls: handler mean ${mean(own).toFixed(2)} ms, p50 ${pct(own, 50)}, p95 ${pct(own, 95)}; driving mean ${mean(driving).toFixed(2)} ms`);
    }
  }
  return { rps: requests / r.secs, eps: r.events / r.secs };
}

const ceilingWorker = await startCollector({ dir: join(ROOT, 'bench/ceiling') });
let ceiling;
try {
  ceiling = report('ceiling (parse and insert only)', await drive(ceilingWorker.url));
} finally {
  await ceilingWorker.dispose();
}
for (const shards of SHARD_COUNTS) {
  // LOAD_SUBREQUEST_LIMIT: the plan's subrequests per invocation, for the collector's
  // SUBREQUEST_LIMIT (default: its own, the free plan's 50).
  const limit = process.env.LOAD_SUBREQUEST_LIMIT ? { SUBREQUEST_LIMIT: process.env.LOAD_SUBREQUEST_LIMIT } : {};
  const collector = await startCollector({ vars: { IDENTITY_SHARDS: String(shards), ...limit } });
  let real;
  try {
    real = report(`collector, IDENTITY_SHARDS=${shards}`, await drive(collector.url), shards);
  } finally {
    await collector.dispose();
  }
  console.log(`collector (IDENTITY_SHARDS=${shards}) / ceiling: requests/s ${(real.rps / ceiling.rps).toFixed(2)}x, events/s ${(real.eps / ceiling.eps).toFixed(2)}x`);
}
