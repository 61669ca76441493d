// Runs last: scans every byte that the whole e2e suite left at rest under the collectors'
// local state (D1, Durable Object and Queue SQLite files with their WALs, R2 blobs) for
// the raw values the tests planted, plain and percent-encoded. Zero hits. Gzip blobs
// (the lake's objects) are scanned as what they hold, and must be there: a scan blind to
// compressed data would prove nothing about the lake. And the deployed configuration
// keeps request URLs and headers out of Cloudflare's logs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { STATE_ROOT, PLANTED, hidden, ROOT } from './harness.mjs';

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) yield* files(p);
    else if (st.isFile()) yield p;
  }
}

test('no planted raw value is anywhere in the local state', () => {
  assert.ok(existsSync(STATE_ROOT), 'the suite left its state');
  const needles = [...new Set(PLANTED.flatMap((v) => [v, encodeURIComponent(v), encodeURIComponent(encodeURIComponent(v)), ...hidden(v)]))]
    .map((v) => v.toLowerCase());
  let scanned = 0; let bytes = 0; let gzipped = 0;
  const hits = [];
  for (const f of files(STATE_ROOT)) {
    let raw = readFileSync(f);
    if (raw[0] === 0x1f && raw[1] === 0x8b) {
      raw = gunzipSync(raw); // throws on a corrupt object: the test fails
      gzipped++;
    }
    const text = raw.toString('latin1').toLowerCase();
    scanned++; bytes += text.length;
    for (const n of needles) if (text.includes(n)) hits.push(`${n} in ${f}`);
  }
  console.log(`at-rest scan: ${scanned} files (${gzipped} gzip, read decompressed), ${bytes} bytes, ${hits.length} hits`);
  assert.ok(scanned > 10 && bytes > 100_000, `scanned ${scanned} files`);
  assert.ok(gzipped > 0, 'the lake\'s objects were among them');
  assert.deepEqual(hits, []);
});

test("the deployed collector keeps no request's URL or headers in Cloudflare's logs", async () => {
  // Read as wrangler reads it for a deploy: a query string (Snowplow's GET pixel, an
  // email's pixel) or a first-party page's Referer may hold raw values.
  const { unstable_readConfig } = await import('wrangler');
  const { observability } = unstable_readConfig({ config: join(ROOT, 'edge-collector/wrangler.toml') }, {});
  assert.equal(observability.redact_query_string, true);
  assert.equal(observability.logs?.invocation_logs, false);
  assert.equal(observability.traces?.enabled, false);
});
