// The SDK's browser adapter, bundled with the engine into dist/sightline.js. The
// engine (engine.js) decides and the wasm half (the shared tracking-plan rules) hashes;
// this file only does what a browser must: reads the page, applies the engine's storage
// operations, sends the batches it builds under a cross-tab Web Lock, reports each
// response back, and wires timers and page events. It replaces the snippet's
// command-queue stub with the real API and replays the calls made before load, in order.
import { createEngine, MAX_BATCH_BYTES } from './engine.js';
import { load } from './wasm.js';

const w = window;
const d = document;
const nav = navigator;
const me = d.currentScript;
const base = (me && me.src) || location.href;
// The wasm: fetched by the snippet alongside this script, or now (its compile streams
// while this script runs).
const fetchWasm = () => fetch(new URL('sightline.wasm', base));
const early = w.sightline && w.sightline._w;
const wasm = (early ? early.catch(fetchWasm) : fetchWasm()).then(load);
wasm.catch(() => {}); // handled in start(); never an unhandled rejection on the page
const LOCK = 'sightline-send';

let stub = w.sightline;
if (!stub || !stub.push) {
  // Loaded without the snippet: a stub of our own, configured by init() or data-*.
  stub = w.sightline = [];
  stub.ready = new Promise((r) => { stub._r = r; });
  for (const m of ['init', 'track', 'page', 'screen', 'identify', 'softLogin', 'alias', 'group', 'reset', 'flush', 'debug']) {
    stub[m] = (...a) => { stub.push([m, a]); return m === 'init' ? stub.ready : stub; };
  }
  stub.consent = { set: (...a) => stub.push(['consent.set', a]) };
}
const cfg = Object.assign({}, (me && me.dataset) || {}, stub._c || {});
for (const [m, a] of stub) if (m === 'init' && a[0]) Object.assign(cfg, a[0]);
if (cfg.writeKey) start();
else stub.init = (c) => { Object.assign(cfg, c || {}); start(); return stub.ready; };

// Random ids (UUID v4) from the browser's CSPRNG, 64 at a time: `crypto.randomUUID`
// costs about 7 µs a call in Chromium (and is missing outside secure contexts).
const HEX = Array.from({ length: 256 }, (_, i) => (i + 256).toString(16).slice(1));
let pool = new Uint8Array(0);
let drawn = 0;
const uuid = () => {
  if (drawn >= pool.length) { pool = crypto.getRandomValues(new Uint8Array(1024)); drawn = 0; }
  const b = pool.subarray(drawn, (drawn += 16));
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  let s = '';
  for (let i = 0; i < 16; i++) s += (i === 4 || i === 6 || i === 8 || i === 10 ? '-' : '') + HEX[b[i]];
  return s;
};

// Storage is probed without writing (opt-in means no write at all before consent); a
// write that fails later is handled where it happens.
function storage() {
  try {
    const s = w.localStorage;
    s.getItem('sl_aid');
    return s;
  } catch {
    return null; // disabled or sandboxed: the queue lives in memory only
  }
}

function start() {
  start = () => {};
  const store = storage();
  const stored = () => {
    const out = [];
    if (store) for (let i = 0; i < store.length; i++) { const k = store.key(i); if (k && k.startsWith('sl_')) out.push(k); }
    return out.sort();
  };
  wasm.then((pii) => {
    const country = String(cfg.country || 'US').toUpperCase();
    const core = createEngine({
      writeKey: String(cfg.writeKey),
      optOut: cfg.consent === 'opt-out',
      gpc: navigator.globalPrivacyControl === true,
      storage: !!store,
      random: Math.random,
      uuid,
      pii: { redact: (s) => pii.redact(s, country), redactField: (k, s) => pii.redactField(k, s, country), campaign: pii.campaign, hashIds: (e, p) => pii.hashIds(e, p, country) },
    });
    let hadId = false;
    for (const k of stored()) { core.restore(k, store.getItem(k) || ''); hadId ||= k === 'sl_aid'; }
    core.start();
    const url = (cfg.endpoint || '').replace(/\/$/, '') + '/v1/batch';
    // reset() and an analytics revocation clear the collector's HttpOnly cookie (script
    // cannot): the collector answers `Set-Cookie: sl_aid=; Max-Age=0` and retires the id.
    const forgetCookie = () => {
      fetch(url.replace(/batch$/, 'reset'), {
        method: 'POST', body: JSON.stringify({ writeKey: String(cfg.writeKey) }),
        headers: { 'content-type': 'text/plain' }, credentials: 'same-origin', keepalive: true,
      }).catch(() => {});
    };
    let analytics = !!core.consent().analytics;
    const revoked = () => {
      const now = !!core.consent().analytics;
      if (analytics && !now) forgetCookie();
      analytics = now;
    };
    let debug = cfg.debug === 'true' || cfg.debug === true;
    let referrer = d.referrer;
    const statics = {
      locale: nav.language,
      screen: { width: screen.width, height: screen.height, density: w.devicePixelRatio },
      userAgent: nav.userAgent,
    };
    const pageFacts = () => ({ path: location.pathname, referrer, search: location.search, title: d.title, url: location.href });
    // The IANA time zone: Temporal answers at once; Intl's first use costs ~40 ms of main
    // thread in Chromium, so without Temporal it is read when the page is idle.
    try { statics.timezone = w.Temporal.Now.timeZoneId(); } catch {
      (w.requestIdleCallback || setTimeout)(() => {
        try { statics.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone; ctxKey = ''; } catch {}
      });
    }
    // The page's facts are gathered again only when they change (not on every call).
    let ctxKey = '';
    let at;
    const sync = () => {
      const k = location.href + '\n' + d.title + '\n' + referrer;
      if (k !== ctxKey) { ctxKey = k; at = { ctx: Object.assign({ page: pageFacts() }, statics), url: location.href }; }
      at.now = now();
      return at;
    };

    // Storage operations the engine asked for. API calls apply them at the end of the
    // current task (a burst of calls becomes a few chunk writes); sends and unload apply
    // them at once.
    const apply = () => {
      for (const [kind, key, value] of core.takeOps()) {
        try {
          if (kind === 's') store.setItem(key, value); else store.removeItem(key);
        } catch {
          if (kind === 's' && key.startsWith('sl_e:')) core.notPersisted(key);
        }
      }
    };

    const warn = (...a) => console.warn('[sightline]', ...a);

    let timer = 0;
    let sending = false;
    let waiters = [];
    const settle = () => {
      const ws = waiters;
      waiters = [];
      for (const r of ws) r(core.stats());
    };
    const schedule = () => {
      const delay = core.delay();
      if (delay < 0) { if (!sending) settle(); return; }
      if (!timer && !sending) timer = setTimeout(() => { timer = 0; send(); }, delay);
    };
    const report = (status, res) => {
      if (status >= 400 && status !== 429 && status < 500) warn(`batch refused (${status})`, res && res.error);
      if (!debug || !res || !res.results) return;
      for (const r of res.results) {
        if (r.status === 'quarantined' || r.status === 'refused') warn(`event ${r.messageId} ${r.status}:`, r.reasons);
        else if (r.warnings) warn(`event ${r.messageId} accepted with warnings:`, r.warnings);
      }
    };
    // Each tab holds a lock named after it for as long as it lives. Events stored by a
    // tab that is gone (a reload, a closed tab) are adopted by whichever tab takes its
    // lock first; a live tab's events are left to it.
    const hold = (name, opts) => new Promise((granted) => {
      nav.locks.request(name, opts, (lock) => { granted(!!lock); return lock ? new Promise(() => {}) : undefined; });
    });
    if (nav.locks) hold('sightline-tab-' + core.tab, {});
    const adopt = async () => {
      for (const t of core.foreignTabs()) {
        if (!nav.locks || (await hold('sightline-tab-' + t, { ifAvailable: true }))) core.adoptTab(t);
        else core.forgetTab(t);
      }
    };
    // One tab sends at a time: under the lock, the engine also drops events another tab
    // has already sent (their storage keys are gone) before it builds a batch.
    const attempt = async () => {
      await adopt();
      const present = store && core.needsPresent() ? new Set(stored()) : undefined;
      const batch = core.batch(Date.now(), MAX_BATCH_BYTES, present);
      apply();
      if (!batch) return -1;
      let status = 0;
      let retryAfter = 0;
      let res;
      try {
        // `keepalive` only once the page is hidden (it may be closed next): Chromium holds
        // each keepalive request about 0.5 s (measured). A batch cut off by the page
        // going away stays stored and leaves with the next page.
        const r = await fetch(url, {
          method: 'POST', body: batch, keepalive: d.visibilityState === 'hidden' && batch.length < 60000,
          headers: { 'content-type': 'text/plain' }, credentials: 'same-origin',
        });
        status = r.status;
        retryAfter = Number(r.headers.get('retry-after')) || 0;
        // Verdicts are read only when something may need saying.
        if (debug || !r.ok) res = await r.json().catch(() => null);
      } catch {}
      const next = core.done(status, retryAfter);
      apply();
      report(status, res);
      return next;
    };
    const send = () => {
      if (sending) return;
      clearTimeout(timer);
      timer = 0;
      sending = true;
      const run = () => attempt();
      Promise.resolve(nav.locks ? nav.locks.request(LOCK, run) : run())
        .catch(() => -1)
        .then((next) => {
          sending = false;
          if (next >= 0) { settle(); timer = setTimeout(() => { timer = 0; send(); }, next); } else schedule();
        });
    };
    let applyQueued = false;
    const applySoon = () => {
      if (applyQueued) return;
      applyQueued = true;
      queueMicrotask(() => { applyQueued = false; apply(); });
    };
    const after = (kept) => { revoked(); applySoon(); if (kept === false && debug) warn('event not kept (over 32 KB, or consent denied)'); schedule(); };
    const now = Date.now;

    // The page is going away: hand what is left to the browser in one keepalive
    // request within the 64 KB budget. Offline, it stays in storage for the next page.
    const unload = () => {
      apply();
      if (sending || !nav.onLine) return;
      const batch = core.unloadBatch(now());
      apply();
      if (batch) fetch(url, { method: 'POST', body: batch, keepalive: true, headers: { 'content-type': 'text/plain' } }).catch(() => {});
    };
    addEventListener('visibilitychange', () => { if (d.visibilityState === 'hidden') send(); });
    addEventListener('pagehide', unload);
    addEventListener('online', send);

    const page = (name, props) => {
      if (name && typeof name === 'object') { props = name; name = undefined; }
      const p = Object.assign(pageFacts(), props || {});
      after(core.record('page', name == null ? undefined : String(name), p, sync()));
    };
    const api = {
      initialized: true,
      ready: stub.ready || Promise.resolve(),
      init: () => api.ready,
      track: (event, props) => after(core.record('track', String(event), props || {}, sync())),
      page,
      screen: (name, props) => after(core.record('screen', String(name), props || {}, sync())),
      identify: (userId, traits) => {
        if (userId && typeof userId === 'object') { traits = userId; userId = undefined; }
        after(core.identify(userId == null ? undefined : String(userId), traits, sync()));
      },
      softLogin: ({ email, phone } = {}) => {
        const r = core.softLogin(email, phone, sync());
        after();
        if (r.error) warn('softLogin:', r.error);
        return r;
      },
      alias: (userId, previousId) => after(core.alias(String(userId), previousId == null ? undefined : String(previousId), sync())),
      group: (groupId, traits) => after(core.record('group', String(groupId), traits || {}, sync())),
      consent: {
        set: (c = {}) => {
          const v = (x) => (x == null ? undefined : !!x);
          core.setConsent(v(c.analytics), v(c.marketing), v(c.personalization), String(c.source || 'sdk'), sync());
          after();
        },
        get: core.consent,
      },
      reset: () => { core.reset(); apply(); forgetCookie(); },
      flush: () => new Promise((r) => { waiters.push(r); send(); }),
      debug: (on = true) => { debug = !!on; },
      anonymousId: () => core.anon(),
      userId: () => core.user(),
      stats: core.stats,
    };

    // Consent signals the page already has: Google Consent Mode v2 (the dataLayer) and
    // the IAB TCF (__tcfapi). A repeated state is not recorded twice.
    // `consent default` is the state before the visitor chooses, not a choice: alone it
    // changes nothing (events wait as for an undecided visitor, a returning visitor's
    // stored choice stands). The first `consent update` is the choice; the defaults fill
    // in what it does not say.
    const gcm = () => {
      let st = null;
      let chosen = false;
      for (const e of w.dataLayer || []) {
        if (!e || e[0] !== 'consent' || !e[2] || typeof e[2] !== 'object') continue;
        if (e[1] === 'update') chosen = true;
        else if (e[1] !== 'default') continue;
        st = Object.assign(st || {}, e[2]);
      }
      if (st && chosen) { core.consentGcm(st.analytics_storage || '', st.ad_storage || '', st.ad_user_data || '', st.ad_personalization || '', sync()); after(); }
    };
    if (Array.isArray(w.dataLayer)) {
      gcm();
      const push = w.dataLayer.push.bind(w.dataLayer);
      w.dataLayer.push = (...a) => { const r = push(...a); if (a.some((e) => e && e[0] === 'consent')) gcm(); return r; };
    }
    if (typeof w.__tcfapi === 'function') {
      w.__tcfapi('addEventListener', 2, (tc, ok) => {
        if (!ok || !tc || (tc.eventStatus !== 'tcloaded' && tc.eventStatus !== 'useractioncomplete')) return;
        core.consentTcf((tc.purpose && tc.purpose.consents) || {}, sync());
        after();
      });
    }

    // A visitor whose script storage was cleared (Safari caps it at 7 days) gets back
    // the id of the collector's HttpOnly first-party cookie: only once consent allows.
    // Not awaited: the collector joins the cookie's id and this page's id anyway.
    if (!hadId && store && api.consent.get().analytics) {
      fetch((cfg.endpoint || '') + '/v1/id', { credentials: 'same-origin' })
        .then((r) => r.json())
        .then((r) => { if (r.anonymousId) { core.adopt(r.anonymousId); apply(); } })
        .catch(() => {});
    }
    apply();

    w.sightline = api;
    for (const [m, a] of stub) {
      if (m === 'init') continue;
      if (m === 'consent.set') api.consent.set(...a);
      else if (typeof api[m] === 'function') api[m](...a);
    }
    if (cfg.autoPage !== 'false' && cfg.autoPage !== false) page();
    if (cfg.spa !== 'false' && cfg.spa !== false) {
      // SPA navigations: a page view when the path or query changes.
      let last = location.pathname + location.search;
      let lastUrl = location.href;
      const check = () => {
        const at = location.pathname + location.search;
        if (at === last) return;
        referrer = lastUrl;
        last = at;
        lastUrl = location.href;
        page();
      };
      for (const m of ['pushState', 'replaceState']) {
        const orig = history[m];
        history[m] = function (...a) { const r = orig.apply(this, a); check(); return r; };
      }
      addEventListener('popstate', check);
    }
    if (core.foreignTabs().length) send(); else schedule();
    if (stub._r) stub._r();
  }).catch((e) => {
    // Nothing breaks: the stub keeps every call. One warning says why.
    const csp = e instanceof WebAssembly.CompileError || /unsafe-eval|Content Security Policy/i.test(String(e && e.message));
    console.warn(csp
      ? "[sightline] not started: this page's Content-Security-Policy refuses WebAssembly; add 'wasm-unsafe-eval' to script-src (calls are kept)"
      : '[sightline] not started: ' + e);
  });
}
