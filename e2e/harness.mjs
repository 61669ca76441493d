// Test harness: starts the real collector (wrangler dev → workerd, local D1) on a free
// port with its own state directory, drives headless Chromium through playwright-core,
// and reads local D1. Every process it starts is stopped, also when a test fails.
import { spawn, execFile } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';

export const ROOT = new URL('..', import.meta.url).pathname;
const COLLECTOR_DIR = join(ROOT, 'edge-collector');
const WRANGLER = join(ROOT, 'node_modules/.bin/wrangler');
export const ADMIN_TOKEN = 'e2e_admin_token';
export const WRITE_KEY = 'sl_dev_key';
export const ALLOWED_ORIGIN = 'https://partner.example';

/** Sources for the tests. The example site's key assumes consent (`opt-out`) so that the
 * transport tests do not depend on a consent banner; `sl_optin_key` is the fail-closed
 * default a real site runs with. */
export const TEST_SOURCES = {
  sl_dev_key: {
    name: 'example-site', plan: '/sl/tracking-plan.json', consent: 'opt-out', origins: [ALLOWED_ORIGIN],
    attribution: { conversions: [{ event: 'Order Completed', revenue: 'total' }], currency: 'EUR' },
  },
  sl_optin_key: { name: 'opt-in site', plan: '/sl/tracking-plan.json', consent: 'opt-in' },
  sl_server_key: { name: 'backend', plan: '/sl/tracking-plan.json', consent: 'opt-out' },
  sl_r2_key: { name: 'archive site', consent: 'opt-out' },
  sl_lake_key: { name: 'lake site', consent: 'opt-out', retentionDays: 2 },
  sl_limited_key: { name: 'limited', consent: 'opt-out', rateLimit: 5 },
};

/** Every collector's local state (D1, Durable Objects, Queues, R2) lives under this one
 * folder and is kept after its test, so that `zz-at-rest.test.mjs` can scan every byte
 * the whole suite left at rest. scripts/test.sh empties it before the suite. */
export const STATE_ROOT = join(ROOT, 'target', 'e2e-state');

/** Raw values the tests plant in events. None may be found at rest, in any encoding. */
export const PLANTED = [
  'q.person@example.com', '7946 0958', 'ann@example.com', 'node.user@example.com',
  'jo@x.io', 'jo%40x.io', 'hostile.visitor@example.org', '650.555.0142', '6505550143',
  '555.0142', 'key.holder@example.net', 'anon.mail@example.net', 'group.mail@example.net',
  'evt.mail@example.net', 'big.secret@example.net', 'crash.sender@example.net',
  '+33 6 12 34 56 78', '612345678', 'encoded.visitor@example.org', '+442079460321',
  'ann.inspector@example.com', 'activation.shopper@example.net', 'sp.visitor@example.org',
  // What the real client libraries send (clients.test.mjs).
  'ajs.user@example.com', 'ot.user@example.com', 'rsa.user@example.com', 'jitsu.user@example.com',
  'jn.user@example.com', 'ph.user@example.com', 'phl.user@example.com', 'phn.user@example.com',
  'php.user@example.com', 'py.user@example.com', 'rs.user@example.com', 'spn.user@example.com',
  'reader@example.org',
  // Sent raw elsewhere: Segment's documented examples, a soft login, the SDK's own.
  'pgibbons@example.com', 'jake@yahoo.com', 'attribution.shopper@example.net',
  'blocker.test@example.com', 'eve.encoded@example.com', 'eve@example.com',
];

/** The ways a planted value can hide in stored bytes beyond percent-encoding: base64
 * (standard, URL-safe) and hex, for the at-rest scan. */
export function hidden(v) {
  const b = Buffer.from(v);
  return [b.toString('base64').replace(/=+$/, ''), b.toString('base64url'), b.toString('hex')];
}

const children = new Set();
function killAll() {
  for (const c of children) {
    try { process.kill(-c.pid, 'SIGKILL'); } catch {}
  }
  children.clear();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { killAll(); process.exit(130); });

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const env = () => ({
  ...process.env,
  WRANGLER_SEND_METRICS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  // Wrangler's local trace store keeps every request's full URL, query string included
  // (a Snowplow pixel's GET carries what a client put there, raw emails too): off, as
  // the collector's wrangler.toml has Cloudflare's redact query strings.
  X_LOCAL_OBSERVABILITY: 'false',
  NO_COLOR: '1',
  CI: 'true', // no interactive prompts
});

async function wrangler(args, opts = {}) {
  return promisify(execFile)(WRANGLER, args, {
    cwd: COLLECTOR_DIR, env: env(), maxBuffer: 64 << 20, ...opts,
  });
}

/** Starts the collector; `state` reuses a state directory (to test persistence);
 * `sources` replaces the SOURCES configuration (an object keyed by write key); `vars`
 * adds variables; `dir` starts another worker (the load benchmark's ceiling). */
export async function startCollector({ state, sources = TEST_SOURCES, port: fixedPort, vars = {}, dir = COLLECTOR_DIR } = {}) {
  mkdirSync(STATE_ROOT, { recursive: true });
  const stateDir = state ?? mkdtempSync(join(STATE_ROOT, 'collector-'));
  if (dir === COLLECTOR_DIR) await wrangler(['d1', 'migrations', 'apply', 'DB', '--local', '--persist-to', stateDir]);
  // A free port can be taken by another process (workerd's own ports) before wrangler
  // binds it: then wrangler exits at once, and another free port is tried.
  for (let attempt = 1; ; attempt++) {
    try {
      return await launch({ stateDir, sources, port: fixedPort ?? await freePort(), vars, dir });
    } catch (e) {
      if (fixedPort || attempt >= 3 || !/Address already in use/.test(String(e.message))) throw e;
      console.log(`[harness] the port was taken before wrangler bound it; trying another (${attempt})`);
    }
  }
}

async function launch({ stateDir, sources, port, vars, dir }) {
  const child = spawn(WRANGLER, [
    'dev', '--ip', '127.0.0.1', '--port', String(port), '--persist-to', stateDir,
    '--var', `ADMIN_TOKEN:${ADMIN_TOKEN}`, '--show-interactive-dev-session=false',
    '--live-reload=false',
    ...(sources ? ['--var', `SOURCES:${JSON.stringify(sources)}`] : []),
    ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
  ], { cwd: dir, env: env(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) { children.delete(child); throw new Error(`wrangler dev exited early:\n${log}`); }
    try {
      const r = await fetch(`${url}/v1/batch`, { method: 'OPTIONS' });
      if (r.status === 204) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`collector not ready after 120 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  const stop = async () => {
    if (!children.has(child)) return;
    children.delete(child);
    const exited = new Promise((r) => child.once('exit', r));
    try { process.kill(-child.pid, 'SIGTERM'); } catch {}
    const timer = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch {} }, 5000);
    await exited;
    clearTimeout(timer);
  };
  /** Kills the collector at once (SIGKILL: no shutdown of any kind). */
  const crash = async () => {
    if (!children.has(child)) return;
    children.delete(child);
    const exited = new Promise((r) => child.once('exit', r));
    try { process.kill(-child.pid, 'SIGKILL'); } catch {}
    await exited;
  };
  return {
    url, port, stateDir, stop, crash, log: () => log,
    /** Stops the collector; its state stays for the at-rest scan. */
    async dispose() { await stop(); },
    /** Runs SQL against the collector's local D1 and returns the rows. */
    async query(sql) {
      const { stdout } = await wrangler(['d1', 'execute', 'DB', '--local', '--persist-to', stateDir, '--json', '--command', sql]);
      return JSON.parse(stdout)[0].results;
    },
    admin(path, init = {}) {
      return fetch(`${url}${path}`, {
        ...init, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(init.headers || {}) },
      });
    },
    /** Reads an admin endpoint's JSON, failing on a non-2xx answer. */
    async adminJson(path, init) {
      const r = await this.admin(path, init);
      const body = await r.json();
      if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(body)}`);
      return body;
    },
    /** Every line of the lake's objects under `prefix` (gzip NDJSON, read as DuckDB would). */
    async lakeLines(prefix) {
      const lines = [];
      let cursor = null;
      do {
        const page = await this.adminJson(`/admin/v1/lake?prefix=${encodeURIComponent(prefix)}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        for (const o of page.objects) {
          assert.match(o.key, /^lake\/source=[\w-]+\/date=\d{4}-\d{2}-\d{2}\/hour=\d{2}\/[0-9a-f]{32}\.ndjson\.gz$/, o.key);
          const r = await this.admin(`/admin/v1/lake/${o.key}`);
          assert.equal(r.headers.get('content-type'), 'application/gzip');
          const text = gunzipSync(Buffer.from(await r.arrayBuffer())).toString('utf8');
          lines.push(...text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)));
        }
        cursor = page.cursor;
      } while (cursor);
      return lines;
    },
  };
}

/** A fresh headless Chromium profile; `close()` removes it. */
export async function startBrowser() {
  const dir = mkdtempSync(join(tmpdir(), 'sightline-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  return {
    context,
    async close() { await context.close(); rmSync(dir, { recursive: true, force: true }); },
  };
}

/** Opens the inspector on `tab`, signed in with the admin token, showing `source`. */
export async function openInspector(browser, url, tab, source) {
  const page = await browser.context.newPage();
  await page.goto(`${url}/admin/#${tab}`);
  await page.fill('#token', ADMIN_TOKEN);
  await page.click('#login button');
  await page.selectOption('#source', source);
  return page;
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function eventually(fn, ms = 15_000, what = 'condition') {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${last}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
