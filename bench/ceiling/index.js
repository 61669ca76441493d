// The ceiling beside `scripts/bench.sh load`: a worker that only parses a batch and
// inserts its events into D1 (one D1 batch per request, idempotent on the messageId),
// with none of the collector's checks, dedup objects, identity or lake. The load
// benchmark drives it with the same traffic, so the collector's numbers read against
// what workerd and local D1 allow on this machine. A benchmark fixture, not a product.
export default {
  async fetch(req, env) {
    if (req.method === 'OPTIONS') return new Response(null, { status: 204 });
    const started = Date.now();
    const { batch } = await req.json();
    const insert = env.DB.prepare('INSERT INTO events (message_id, payload) VALUES (?1, ?2) ON CONFLICT DO NOTHING');
    const rows = batch.map((e) => insert.bind(String(e.messageId), JSON.stringify(e)));
    const t = Date.now();
    const done = await env.DB.batch([
      env.DB.prepare('CREATE TABLE IF NOT EXISTS events (message_id TEXT PRIMARY KEY, payload TEXT NOT NULL)'),
      ...rows,
    ]);
    const io = Date.now() - t;
    const accepted = done.slice(1).filter((r) => r.meta.changes > 0).length;
    const total = Date.now() - started;
    return Response.json(
      { ok: true, accepted, duplicates: rows.length - accepted, quarantined: 0, refused: 0 },
      { headers: { 'X-Subrequests': '1', 'Server-Timing': `total;dur=${total}, cpu;dur=${total - io}, io;dur=${io}, d1;dur=${io}` } },
    );
  },
};
