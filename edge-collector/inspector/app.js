// The Sightline inspector: a view over the collector's admin API, nothing more. It
// decides nothing about the data; every number and verdict comes from the API.
// - The admin token lives in this module's memory only (not in a URL, a cookie or
//   storage) and goes out as an Authorization header, which a cross-site page cannot
//   make the browser add: no CSRF.
// - Event data is attacker-controlled, so it reaches the page only as text
//   (textContent, never innerHTML) and the charts only as SVG images (no script runs).
// - An email or phone typed into the profile search is normalized and hashed here by
//   the SDK's own wasm (the shared tracking-plan rules); only the hash is sent.

const api = 'v1/';
let token = '';
let sources = [];
let followTimer = 0;
const $ = (id) => document.getElementById(id);

// Every action's failure (the collector unreachable, an API error) is shown in one
// status line; none is left to reject on the page.
function status(msg) {
  $('status').textContent = msg ? 'Could not load: ' + msg : '';
}
const guard = (f) => (...a) => Promise.resolve().then(() => f(...a)).then(() => status(''), (e) => status(e.message));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'on') for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, guard(f));
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function call(path, init = {}) {
  const r = await fetch(api + path, {
    ...init,
    credentials: 'omit',
    cache: 'no-store',
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json', ...(init.headers || {}) },
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error((body.error && body.error.message) || 'HTTP ' + r.status), { status: r.status, body });
  return body;
}

const source = () => $('source').value;
const q = (params) => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) u.set(k, v);
  return u.toString();
};
const json = (v) => JSON.stringify(v, null, 2);
const parse = (s) => {
  try {
    return typeof s === 'string' ? JSON.parse(s) : s;
  } catch {
    return s;
  }
};

// ---- sign-in
$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  $('token').value = '';
  try {
    sources = (await call('sources')).sources;
  } catch (err) {
    token = '';
    $('login-error').textContent = err.status === 401 ? 'That token is not valid.' : 'Sign-in failed: ' + err.message;
    return;
  }
  $('login').hidden = true;
  for (const id of ['tabs', 'source-pick', 'logout']) $(id).hidden = false;
  $('source').replaceChildren(el('option', { value: '' }, 'all sources'), ...sources.map((s) => el('option', { value: s.writeKey }, s.name + ' (' + s.writeKey + ')')));
  show();
});
$('logout').addEventListener('click', () => location.reload());
addEventListener('hashchange', show);
$('source').addEventListener('change', show);
const loaders = () => ({ live, quarantine, profiles: async () => {}, charts, attribution, alerts, activation });

function show() {
  if (!token) return;
  const tab = (location.hash || '#live').slice(1);
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== tab;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('on', a.dataset.tab === tab);
  clearInterval(followTimer);
  guard(loaders()[tab] || live)();
}

// ---- live events: stored events and quarantined ones, newest first
// Only a view's latest question is drawn: an earlier answer that arrives later (the
// tab's first load and then a filter changed, or the live tail's timer) must not
// replace a newer one. `ask(view)` numbers the question; the check says if it is still
// the latest.
const asked = {};
function ask(view) {
  const n = (asked[view] = (asked[view] || 0) + 1);
  return () => asked[view] === n;
}

async function live() {
  followTimer = setInterval(guard(() => $('live-filters').follow.checked && loadLive()), 3000);
  await loadLive();
}
$('live-filters').addEventListener('change', guard(loadLive));
$('live-filters').addEventListener('submit', (e) => (e.preventDefault(), guard(loadLive)()));

async function loadLive() {
  const f = $('live-filters');
  const want = f.verdict.value;
  const current = ask('live');
  const [events, held] = await Promise.all([
    want === 'quarantined' ? { events: [] } : call('events?' + q({ writeKey: source(), type: f.type.value, event: f.event.value, limit: 50 })),
    want === 'accepted' ? { quarantine: [] } : call('quarantine?' + q({ writeKey: source(), limit: 50 })),
  ]);
  if (!current()) return;
  const rows = events.events.map((e) => ({ verdict: 'accepted', at: e.receivedAt, type: e.type, event: e.event, who: e.anonymousId || e.userId, full: { ...e, payload: parse(e.payload) } }));
  for (const h of held.quarantine) {
    const p = parse(h.payload) || {};
    const type = typeof p === 'object' ? p.type : undefined;
    const event = typeof p === 'object' ? p.event || p.name : undefined;
    if (f.type.value && type !== f.type.value) continue;
    if (f.event.value && event !== f.event.value) continue;
    rows.push({ verdict: 'quarantined', at: h.receivedAt, type, event, who: h.anonymousId, full: { ...h, payload: p, reasons: parse(h.reasons) } });
  }
  rows.sort((a, b) => (a.at < b.at ? 1 : -1));
  const body = $('live-table').tBodies[0];
  body.replaceChildren(
    ...rows.slice(0, 100).map((r) =>
      el('tr', { class: r.verdict, tabindex: '0', on: { click: () => ($('live-detail').textContent = json(r.full)) } },
        el('td', {}, (r.at || '').replace('T', ' ').slice(0, 19)),
        el('td', {}, el('span', { class: 'badge ' + r.verdict }, r.verdict)),
        el('td', {}, r.type || '—'),
        el('td', {}, r.event || ''),
        el('td', { class: 'mono' }, (r.who || '').slice(0, 18))),
    ),
  );
}

// ---- quarantine: grouped by reason kind and path, replayable by group
async function quarantine() {
  const current = ask('quarantine');
  const list = (await call('quarantine?' + q({ writeKey: source(), limit: 1000 }))).quarantine;
  if (!current()) return;
  const groups = new Map();
  for (const row of list) {
    const reasons = parse(row.reasons);
    const first = (Array.isArray(reasons) && reasons[0]) || { kind: row.reason, path: '$', message: '' };
    const key = first.kind + ' ' + first.path;
    if (!groups.has(key)) groups.set(key, { kind: first.kind, path: first.path, message: first.message, rows: [] });
    groups.get(key).rows.push(row);
  }
  const box = $('quarantine-groups');
  if (!groups.size) return box.replaceChildren(el('p', {}, 'Nothing is quarantined.'));
  box.replaceChildren(
    ...[...groups.values()].map((g) =>
      el('details', { class: 'group' },
        el('summary', {}, el('span', { class: 'badge quarantined' }, g.kind), ' ', el('code', {}, g.path), ' ', el('b', {}, g.rows.length + ' event' + (g.rows.length > 1 ? 's' : ''))),
        el('p', {}, g.message),
        el('button', { type: 'button', class: 'replay', 'data-reason': g.kind, on: { click: () => replay(g) } }, 'Replay ' + g.rows.length),
        el('pre', { class: 'json' }, json(parse(g.rows[0].payload))),
      ),
    ),
  );
}

async function replay(g) {
  const r = await call('quarantine/replay', { method: 'POST', body: JSON.stringify({ ids: g.rows.map((x) => x.id) }) });
  const by = {};
  for (const x of r.replayed) by[x.status] = (by[x.status] || 0) + 1;
  const out = $('quarantine-result');
  out.hidden = false;
  out.textContent = 'Replayed ' + r.replayed.length + ': ' + json(by);
  await quarantine();
}

// ---- profiles: lookup (emails and phones hashed in this page), the 360 view
let hasher;
async function hashed(kind, value, country) {
  // The SDK's engine (its inspector build), served first-party beside the site: the
  // same normalization and SHA-256 as the browser SDK and the collector.
  hasher = hasher || import(new URL('../sl/sightline-hash.mjs', location.href).href).then((m) => m.load(new URL('../sl/sightline-hash.wasm', location.href)));
  const hash = (await hasher)(kind, value, country);
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error(hash || 'not a valid ' + kind);
  return hash;
}

$('profile-search').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.target;
  const kind = f.kind.value;
  let value = f.value.value.trim();
  const note = $('profile-note');
  note.textContent = '';
  // The profile shown before goes at once: its erase and unmerge buttons must not stay
  // clickable while the new answer loads.
  $('profile-view').replaceChildren();
  try {
    let path;
    if (kind === 'email' || kind === 'phone') {
      value = await hashed(kind, value, f.country.value.trim().toUpperCase() || 'US');
      f.value.value = '';
      note.textContent = 'Hashed in this page: ' + kind + '_sha256 = ' + value;
      path = 'profiles?' + q({ [kind + '_sha256']: value, writeKey: source() });
    } else if (kind === 'profile') path = 'profiles/' + encodeURIComponent(value) + '?' + q({ writeKey: source() });
    else path = 'profiles?' + q({ [kind]: value, writeKey: source() });
    await showProfile(path);
  } catch (err) {
    $('profile-view').replaceChildren(el('p', { class: 'error' }, err.status === 404 ? 'No profile found.' : err.message));
  }
});

async function showProfile(path) {
  const current = ask('profile');
  const p = await call(path);
  const prof = p.profile;
  const timeline = await call('events?' + q({ profileId: prof.id, writeKey: p.writeKey, limit: 50 }));
  if (!current()) return;
  const kv = (obj) => el('table', { class: 'kv' }, ...Object.entries(obj || {}).map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', { class: 'mono' }, typeof v === 'string' ? v : JSON.stringify(v)))));
  const merges = (p.merges || []).map((m) =>
    el('li', {},
      'absorbed ', el('code', {}, m.absorbed.id), ' via ', el('code', {}, m.via.kind + ' ' + m.via.value.slice(0, 16) + '…'),
      ' at ' + new Date(m.atMs).toISOString().slice(0, 19).replace('T', ' '),
      m.undoneAtMs ? ' (undone)' : el('button', { type: 'button', class: 'unmerge', on: { click: () => unmerge(prof.id, m.id, p.writeKey) } }, 'Unmerge'),
    ),
  );
  $('profile-view').replaceChildren(
    el('h2', {}, 'Profile ', el('code', {}, prof.id), ' ', el('span', { class: 'badge ' + (p.identified ? 'accepted' : 'refused') }, p.identified ? 'identified' : 'anonymous')),
    el('p', {}, `${prof.eventCount} events, first seen ${new Date(prof.firstSeenMs).toISOString().slice(0, 10)}, last seen ${new Date(prof.lastSeenMs).toISOString().slice(0, 10)} · source ${p.writeKey}`),
    el('h3', {}, 'Identifiers'),
    el('ul', { class: 'ids' }, ...prof.identifiers.map((i) => el('li', {}, el('b', {}, i.kind), ' ', el('code', {}, i.value)))),
    el('h3', {}, 'Traits'), kv(prof.traits),
    el('h3', {}, 'Segments'), (p.segments || []).length
      ? el('ul', { id: 'profile-segments' }, ...p.segments.map((s) => el('li', {}, el('code', {}, s.segment), ' since ' + String(s.since).slice(0, 10))))
      : el('p', {}, 'In no segment.'),
    el('h3', {}, 'Consent'), kv(parse(p.consent.current)),
    el('details', {}, el('summary', {}, 'Consent log (' + p.consent.log.length + ')'), el('pre', { class: 'json' }, json(p.consent.log.map((c) => ({ ...c, categories: parse(c.categories) }))))),
    el('h3', {}, 'Merges'), merges.length ? el('ul', { id: 'merges' }, ...merges) : el('p', {}, 'No merges.'),
    el('h3', {}, 'Conflicts'), (p.conflicts || []).length ? el('pre', { class: 'json' }, json(p.conflicts)) : el('p', {}, 'No conflicts.'),
    el('h3', {}, 'Events'),
    el('table', { class: 'timeline' }, el('tr', {}, el('th', {}, 'time'), el('th', {}, 'type'), el('th', {}, 'event')),
      ...timeline.events.map((e) => el('tr', {}, el('td', {}, (e.timestamp || '').slice(0, 19).replace('T', ' ')), el('td', {}, e.type), el('td', {}, e.event || '')))),
    el('h3', {}, 'Erasure'),
    el('button', { type: 'button', class: 'danger', id: 'erase', on: { click: () => erase(prof.id, p.writeKey) } }, 'Erase this person…'),
  );
}

async function unmerge(profile, mergeId, writeKey) {
  const r = await call('profiles/' + encodeURIComponent(profile) + '/unmerge?' + q({ writeKey }), { method: 'POST', body: JSON.stringify({ mergeId }) });
  $('profile-note').textContent = 'Unmerged: ' + r.unmerged.restored.id + ' is its own profile again (' + r.eventsMoved + ' events moved back).';
  await showProfile('profiles/' + encodeURIComponent(profile) + '?' + q({ writeKey }));
}

function erase(profile, writeKey) {
  const d = $('erase-dialog');
  $('erase-confirm').value = '';
  d.onclose = guard(async () => {
    if (d.returnValue !== 'erase') return;
    if ($('erase-confirm').value.trim() !== profile) return ($('profile-note').textContent = 'Not erased: the id typed did not match.');
    const r = await call('profiles/' + encodeURIComponent(profile) + '?' + q({ writeKey }), { method: 'DELETE' });
    $('profile-note').textContent = 'Erased: ' + json(r.erased);
    $('profile-view').replaceChildren();
  });
  d.showModal();
}

// ---- charts: drawn by the collector as SVG, shown as images, with their data
$('chart-filters').addEventListener('change', guard(charts));
const urls = [];
async function charts() {
  const current = ask('charts');
  const r = await call('insights?' + q({ writeKey: source(), days: $('chart-filters').days.value }));
  if (!current()) return;
  for (const u of urls.splice(0)) URL.revokeObjectURL(u);
  $('chart-list').replaceChildren(
    ...r.charts.map((c) => {
      const url = URL.createObjectURL(new Blob([c.svg], { type: 'image/svg+xml' }));
      urls.push(url);
      return el('figure', { class: 'chart', 'data-chart': c.id },
        el('figcaption', {}, c.title),
        el('img', { src: url, alt: c.title }),
        el('details', {}, el('summary', {}, 'data'), el('pre', { class: 'json' }, json(c.data))));
    }),
  );
}

// ---- alerts: as the hourly maintenance judged them
async function alerts() {
  const current = ask('alerts');
  const r = await call('alerts?' + q({ writeKey: source(), limit: 200 }));
  if (!current()) return;
  const body = $('alert-table').tBodies[0];
  if (!r.alerts.length) return body.replaceChildren(el('tr', {}, el('td', { colspan: '6' }, 'No alerts.')));
  body.replaceChildren(
    ...r.alerts.map((a) =>
      el('tr', { 'data-kind': a.kind },
        el('td', {}, a.day),
        el('td', {}, el('span', { class: 'badge quarantined' }, a.kind)),
        el('td', {}, a.message),
        el('td', {}, a.since),
        el('td', {}, (a.events || []).join(', ')),
        el('td', {}, a.delivered ? 'sent ' + a.delivered.slice(0, 16).replace('T', ' ') : '—'))),
  );
}

// ---- attribution: the report by channel and campaign, and the cost import
$('attr-filters').addEventListener('change', guard(attribution));
const money = (v) => (v == null ? '—' : Number(v).toFixed(2));
async function attribution() {
  const note = $('attr-note');
  for (const t of ['attr-channels', 'attr-campaigns']) $(t).tBodies[0].replaceChildren();
  if (!source()) return (note.textContent = 'Pick a source: attribution is per source.');
  const f = $('attr-filters');
  const current = ask('attribution');
  const r = await call('attribution?' + q({ writeKey: source(), model: f.model.value, window: f.window.value }));
  if (!current()) return;
  note.textContent = `Model ${r.model}, ${r.window}-day click window, in ${r.currency}.` + (r.unconvertedConversions ? ` ${r.unconvertedConversions} conversions in a currency without a rate are left out of revenue.` : '');
  $('attr-channels').tBodies[0].replaceChildren(...r.byChannel.map((c) => el('tr', { 'data-channel': c.channel }, el('td', {}, c.channel), el('td', {}, money(c.conversions)), el('td', {}, money(c.revenue)), el('td', {}, money(c.cost)), el('td', {}, money(c.roas)), el('td', {}, money(c.cac)))));
  $('attr-campaigns').tBodies[0].replaceChildren(...r.byCampaign.map((c) => el('tr', {}, el('td', {}, c.channel), el('td', {}, c.campaign || '—'), el('td', {}, money(c.conversions)), el('td', {}, money(c.revenue)), el('td', {}, money(c.cost)), el('td', {}, money(c.roas)), el('td', {}, money(c.cac)))));
}
$('cost-import').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.target;
  const out = $('cost-result');
  out.hidden = false;
  try {
    const csv = await f.csv.files[0].text();
    const rates = f.rates.value.trim() ? JSON.parse(f.rates.value) : {};
    const r = await call('costs?' + q({ writeKey: source() }), { method: 'POST', body: JSON.stringify({ csv, rates }) });
    out.textContent = `Imported ${r.imported} rows: ${money(r.total)} ${r.currency}.`;
    await attribution();
  } catch (err) {
    const lines = ((err.body && err.body.lines) || []).map((l) => `line ${l.line}: ${l.message}`);
    out.textContent = ['Not imported: ' + err.message, ...lines].join('\n');
  }
});

// ---- activation: the segments with their member counts, and the delivery log
$('delivery-filters').addEventListener('change', guard(activation));
async function activation() {
  const current = ask('activation');
  const segs = await call('segments?' + q({ writeKey: source() }));
  if (!current()) return;
  $('segment-table').tBodies[0].replaceChildren(
    ...segs.segments.map((s) => el('tr', { 'data-segment': s.id },
      el('td', {}, s.id), el('td', {}, s.name), el('td', {}, s.members),
      el('td', {}, ...['meta', 'google'].map((f) => el('button', { type: 'button', on: { click: () => download(s, f) } }, f))))),
  );
  const f = $('delivery-filters');
  const r = await call('deliveries?' + q({ writeKey: source(), destination: f.destination.value.trim(), status: f.status.value, limit: 200 }));
  if (!current()) return;
  $('delivery-totals').textContent = r.totals.map((t) => `${t.destination} ${t.status}: ${t.n}`).join(' · ') || 'No deliveries yet.';
  $('delivery-table').tBodies[0].replaceChildren(
    ...r.deliveries.map((d) => el('tr', { 'data-status': d.status },
      el('td', {}, (d.updatedAt || '').slice(0, 19).replace('T', ' ')), el('td', {}, d.destination),
      el('td', {}, el('span', { class: 'badge ' + (d.status === 'delivered' ? 'accepted' : 'quarantined') }, d.status)),
      el('td', {}, d.reason || ''), el('td', {}, d.attempts), el('td', {}, d.httpStatus ?? ''), el('td', {}, d.messageId))),
  );
}
// An export is fetched with the token (a plain link could not send it) and saved.
async function download(s, format) {
  const r = await fetch(api + 'audiences/' + encodeURIComponent(s.id) + '.csv?' + q({ writeKey: s.writeKey, format }), {
    credentials: 'omit', cache: 'no-store', headers: { Authorization: 'Bearer ' + token },
  });
  if (!r.ok) throw new Error('export: HTTP ' + r.status);
  const a = el('a', { href: URL.createObjectURL(await r.blob()), download: `${s.id}-${format}.csv` });
  a.click();
  URL.revokeObjectURL(a.href);
}
