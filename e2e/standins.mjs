// Local STAND-INS for the ad platforms and a webhook receiver. The real endpoints
// (graph.facebook.com, datamanager.googleapis.com) cannot be reached from here, so the
// collector's destinations point at these instead. Each stand-in checks the request
// against the platform's documented format, field by field, records it with the list
// of problems found, and answers as the platform does (or with the failures a test
// asks for). They are stand-ins, not the platforms: they check the format, not matching.
//
//   node e2e/standins.mjs [port]   runs them for `make dev` (default port 8790)
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';

const HEX64 = /^[0-9a-f]{64}$/;
const DAY = 86_400;
// Fields Meta documents for user_data, and those it says must not be hashed.
const META_USER = new Set(['em', 'ph', 'fn', 'ln', 'ct', 'st', 'zp', 'country', 'db', 'ge', 'external_id',
  'client_ip_address', 'client_user_agent', 'fbc', 'fbp']);
const META_EVENT = new Set(['event_name', 'event_time', 'event_id', 'action_source', 'event_source_url',
  'user_data', 'custom_data', 'opt_out', 'data_processing_options']);
const CONSENT = new Set(['CONSENT_GRANTED', 'CONSENT_DENIED']);

/** Anything that looks like a raw email or an E.164 phone anywhere in a body. */
function rawPii(text) {
  return /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}/.test(text) || /\+\d{8,15}\b/.test(text);
}

/** Meta Conversions API: POST /{version}/{pixel}/events, `{data: [...], access_token}`. */
export function checkMeta(path, headers, body, { pixelId, token, nowS = Date.now() / 1000 }) {
  const p = [];
  const m = /^\/v\d+\.\d+\/(\d+)\/events$/.exec(path);
  if (!m) p.push(`path ${path} is not /{version}/{pixel}/events`);
  else if (pixelId && m[1] !== pixelId) p.push(`pixel ${m[1]} is not ${pixelId}`);
  if (!String(headers['content-type'] || '').startsWith('application/json')) p.push('content-type is not JSON');
  if (token && body.access_token !== token) p.push('access_token is wrong');
  if (!Array.isArray(body.data) || body.data.length < 1 || body.data.length > 1000) p.push('data is not 1..1000 events');
  for (const [i, e] of (body.data || []).entries()) {
    const at = `data[${i}]`;
    for (const k of Object.keys(e)) if (!META_EVENT.has(k)) p.push(`${at}.${k} is not a documented field`);
    if (typeof e.event_name !== 'string' || !e.event_name) p.push(`${at}.event_name missing`);
    if (!Number.isInteger(e.event_time)) p.push(`${at}.event_time is not Unix seconds`);
    else if (e.event_time < nowS - 7 * DAY) p.push(`${at}.event_time is older than 7 days`);
    else if (e.event_time > nowS + 600) p.push(`${at}.event_time is in the future`);
    if (e.action_source !== 'website') p.push(`${at}.action_source is not website`);
    if (typeof e.event_id !== 'string' || !e.event_id) p.push(`${at}.event_id missing (pixel dedup)`);
    if (e.event_source_url !== undefined && !/^https?:\/\//.test(e.event_source_url)) p.push(`${at}.event_source_url is not a URL`);
    const u = e.user_data;
    if (!u || typeof u !== 'object') { p.push(`${at}.user_data missing`); continue; }
    for (const k of Object.keys(u)) if (!META_USER.has(k)) p.push(`${at}.user_data.${k} is not documented`);
    for (const k of ['em', 'ph', 'external_id']) {
      if (u[k] === undefined) continue;
      if (!Array.isArray(u[k]) || !u[k].every((h) => HEX64.test(h))) p.push(`${at}.user_data.${k} is not SHA-256 hex`);
    }
    if (u.fbp !== undefined && !/^fb\.1\.\d{13}\.\d+$/.test(u.fbp)) p.push(`${at}.user_data.fbp is not fb.1.<ms>.<random>`);
    if (u.fbc !== undefined && !/^fb\.1\.\d{13}\.[A-Za-z0-9_-]+$/.test(u.fbc)) p.push(`${at}.user_data.fbc is not fb.1.<ms>.<fbclid>`);
    if (!u.em && !u.ph && !u.external_id && !u.fbp && !u.fbc) p.push(`${at}.user_data has no match key`);
    const c = e.custom_data;
    if (c !== undefined) {
      if (c.value !== undefined && typeof c.value !== 'number') p.push(`${at}.custom_data.value is not a number`);
      if (c.currency !== undefined && !/^[A-Z]{3}$/.test(c.currency)) p.push(`${at}.custom_data.currency is not ISO 4217`);
    }
  }
  const { access_token: _, ...rest } = body;
  if (rawPii(JSON.stringify(rest))) p.push('a raw email or phone is in the body');
  return p;
}

/** Google Data Manager API: POST /v1/events:ingest, an IngestEventsRequest. */
export function checkGoogle(path, headers, body, { accountId, conversionAction, token }) {
  const p = [];
  if (path !== '/v1/events:ingest') p.push(`path ${path} is not /v1/events:ingest`);
  if (token && headers.authorization !== `Bearer ${token}`) p.push('Authorization is not the Bearer token');
  if (!String(headers['content-type'] || '').startsWith('application/json')) p.push('content-type is not JSON');
  const d = body.destinations;
  if (!Array.isArray(d) || d.length !== 1) p.push('destinations is not one destination');
  else {
    const oa = d[0].operatingAccount || {};
    if (oa.accountType !== 'GOOGLE_ADS') p.push('operatingAccount.accountType is not GOOGLE_ADS');
    if (accountId && oa.accountId !== accountId) p.push('operatingAccount.accountId is wrong');
    if (conversionAction && d[0].productDestinationId !== conversionAction) p.push('productDestinationId is not the conversion action');
  }
  if (body.encoding !== 'HEX') p.push('encoding is not HEX');
  if (!body.consent || !CONSENT.has(body.consent.adUserData) || !CONSENT.has(body.consent.adPersonalization)) {
    p.push('consent.adUserData / adPersonalization missing');
  }
  if (!Array.isArray(body.events) || body.events.length < 1 || body.events.length > 2000) p.push('events is not 1..2000');
  for (const [i, e] of (body.events || []).entries()) {
    const at = `events[${i}]`;
    if (Number.isNaN(Date.parse(e.eventTimestamp)) || !/Z$/.test(e.eventTimestamp)) p.push(`${at}.eventTimestamp is not RFC 3339 UTC`);
    if (typeof e.transactionId !== 'string' || !e.transactionId) p.push(`${at}.transactionId (order id) missing`);
    if (e.eventSource !== 'WEB') p.push(`${at}.eventSource is not WEB`);
    const ids = e.userData && e.userData.userIdentifiers;
    if (ids !== undefined) {
      if (!Array.isArray(ids) || ids.length > 5) p.push(`${at}.userData.userIdentifiers is not at most 5`);
      for (const id of ids || []) {
        const keys = Object.keys(id);
        if (keys.length !== 1 || !['emailAddress', 'phoneNumber', 'address'].includes(keys[0])) p.push(`${at}: identifier ${keys} is not one of emailAddress, phoneNumber, address`);
        else if (keys[0] !== 'address' && !HEX64.test(id[keys[0]])) p.push(`${at}: ${keys[0]} is not SHA-256 hex`);
      }
    }
    if (!ids?.length && !e.adIdentifiers?.gclid) p.push(`${at} has neither user identifiers nor a gclid`);
    if (e.conversionValue !== undefined && typeof e.conversionValue !== 'number') p.push(`${at}.conversionValue is not a number`);
    if (e.currency !== undefined && !/^[A-Z]{3}$/.test(e.currency)) p.push(`${at}.currency is not ISO 4217`);
  }
  if (rawPii(JSON.stringify(body))) p.push('a raw email or phone is in the body');
  return p;
}

/** The webhook: `X-Sightline-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`. */
export function checkHook(headers, raw, { secret, nowS = Date.now() / 1000 }) {
  const p = [];
  const ts = headers['x-sightline-timestamp'];
  if (!/^\d+$/.test(ts || '') || Math.abs(Number(ts) - nowS) > 300) p.push('X-Sightline-Timestamp is not within 5 minutes');
  const want = 'sha256=' + createHmac('sha256', secret).update(`${ts}.${raw}`).digest('hex');
  const got = String(headers['x-sightline-signature'] || '');
  if (got.length !== want.length || !timingSafeEqual(Buffer.from(got), Buffer.from(want))) p.push('X-Sightline-Signature does not verify');
  let body;
  try { body = JSON.parse(raw); } catch { p.push('body is not JSON'); return p; }
  for (const k of ['destination', 'messageId', 'event']) if (body[k] === undefined) p.push(`${k} missing`);
  if (rawPii(raw)) p.push('a raw email or phone is in the body');
  return p;
}

/** Starts the stand-ins on one port: `/meta/...`, `/google/...`, `/hook/...`. */
export async function startStandins({ port = 0, meta = {}, google = {}, hook = {} } = {}) {
  const requests = [];
  const failures = { meta: [], google: [], hook: [] };
  const outages = new Set(); // `${kind}${path prefix}` answered 503 while set
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
      const [, kind, ...rest] = req.url.split('/');
      const path = '/' + rest.join('/');
      let body = null;
      try { body = JSON.parse(raw); } catch {}
      const problems = kind === 'meta' ? checkMeta(path, req.headers, body || {}, meta)
        : kind === 'google' ? checkGoogle(path, req.headers, body || {}, google)
          : kind === 'hook' ? checkHook(req.headers, raw, hook)
            : [`no stand-in at /${kind}`];
      const down = [...outages].some((o) => `${kind}${path}`.startsWith(o));
      const status = down ? 503 : (failures[kind] || []).shift() || (problems.length ? 400 : 200);
      requests.push({ kind, path, headers: req.headers, body, raw, problems, status, at: Date.now() });
      const answer = status !== 200 ? { error: { message: problems.join('; ') || 'failure asked by the test', code: status } }
        : kind === 'meta' ? { events_received: body.data.length, messages: [], fbtrace_id: 'standin' }
          : kind === 'google' ? { requestId: `standin-${requests.length}` } : { ok: true };
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url, requests,
    /** The next answers of a stand-in, e.g. `fail('meta', 500)` answers one 500. */
    fail(kind, ...statuses) { failures[kind].push(...statuses); },
    /** `down('hook', '/dead', true)`: every request there answers 503 until set false. */
    down(kind, prefix, on) { if (on) outages.add(`${kind}${prefix}`); else outages.delete(`${kind}${prefix}`); },
    of(kind) { return requests.filter((r) => r.kind === kind); },
    close: () => new Promise((r) => server.close(r)),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const port = Number(process.argv[2] || 8790);
  const s = await startStandins({
    port,
    meta: { pixelId: '1234567890', token: 'dev_meta_token' },
    google: { accountId: '1234567890', conversionAction: 'AW-CONVERSION', token: 'dev_google_token' },
    hook: { secret: 'dev_hook_secret' },
  });
  console.log(`[stand-ins] Meta CAPI, Google Data Manager and webhook stand-ins on ${s.url}/{meta,google,hook}`);
  setInterval(() => {
    for (const r of s.requests.splice(0)) {
      console.log(`[stand-in ${r.kind}] ${r.path} -> ${r.status}${r.problems.length ? ' problems: ' + r.problems.join('; ') : ''}`);
    }
  }, 1000);
}
