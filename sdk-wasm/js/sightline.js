// The SDK's JavaScript: bundled with wasm-bindgen's generated glue into
// dist/sightline.js. Every decision is in the Rust engine (src/engine.rs) and every
// browser call in its web-sys adapter (src/browser.rs); this shim only
//  - instantiates the wasm (streamed from the snippet's early fetch),
//  - maps the public API (window.sightline) onto the wasm exports, one line each, and
//    replays the calls the snippet queued before load,
//  - installs the hooks that wrap functions the page owns (history.pushState and
//    replaceState, dataLayer.push) or hand the page a callback (__tcfapi, __gpp,
//    __uspapi), which only forward to the engine, and hands a consent manager's answer
//    (Cookiebot's, OneTrust's) to the engine as the manager keeps it,
//  - listens for the clicks and submits trackLink and trackForm were given, which it
//    passes to track, and for link clicks when `data-track-links` asks (the engine
//    decides what they are),
//  - opens localStorage while the wasm downloads,
//  - warns once when the page's Content-Security-Policy refuses WebAssembly.
// Kept in JS because the same facade and hooks built in Rust from wasm-bindgen closures
// measured 1,152 bytes gzip more in all (wasm +1,487, glue +208, this file's 543 saved),
// before the replay and the CSP warning, which stay in JS either way.
import init, * as x from '../pkg/sdk_wasm.js';

const w = window;
const me = document.currentScript;
const base = (me && me.src) || location.href;
let stub = w.sightline;
if (!stub || !stub.push) {
  // Loaded without the snippet: a stub of our own, configured by init() or data-*.
  stub = w.sightline = [];
  stub.ready = new Promise((r) => (stub._r = r));
  for (const m of 'init track page screen identify softLogin alias group reset flush debug trackLink trackForm trackClick trackSubmit setAnonymousId'.split(' ')) {
    stub[m] = (...a) => (stub.push([m, a]), m === 'init' ? stub.ready : stub);
  }
  stub.consent = { set: (...a) => stub.push(['consent.set', a]) };
}
const cfg = Object.assign({}, (me && me.dataset) || {}, stub._c || {});
for (const [m, a] of stub) if (m === 'init' && a[0]) Object.assign(cfg, a[0]);
// The wasm: fetched and compiled by the snippet alongside this script, or fetched now.
// A CSP that refuses WebAssembly is final; any other failure of the snippet's (a server
// that sends the wasm as another type, a download cut short) fetches it again, once.
const fetchWasm = async () => fetch(new URL('sightline.wasm', base)); // a throw: a rejection
const csp = (e) => /unsafe-eval|Content.Security.Policy|\bCSP\b/i.test(String(e && e.message));
const early = stub._w && stub._w.catch((e) => (csp(e) ? Promise.reject(e) : fetchWasm()));
// Without WebAssembly (iOS Lockdown Mode, a browser's strictest security setting) the
// wasm is not downloaded for nothing.
const wasm = w.WebAssembly
  ? init({ module_or_path: early || fetchWasm() })
  : Promise.reject(new Error('this browser runs no WebAssembly (calls are kept)'));
wasm.catch(() => {}); // handled below; never an unhandled rejection on the page
// The page's first localStorage access opens its storage area (2 to 10 ms in Chromium,
// measured): done here, while the wasm downloads, not on the engine's critical path.
// A read only: before opt-in consent nothing is written.
try {
  localStorage.getItem('sl_aid');
} catch {}

// A call's last argument, when a function, is called once the call is sent, or after
// 300 ms (a callback that navigates must not wait on a slow network), as Segment's
// `track(event, properties, options, callback)` calls it: code written for analytics.js
// (`track('Clicked', {}, () => (location.href = next))`) keeps working.
const done = (f) => (...a) => {
  const cb = typeof a[a.length - 1] === 'function' && a.pop();
  f(...a);
  if (cb) {
    let once = 0;
    const call = () => once++ || cb();
    setTimeout(call, 300);
    x.flush().then(call, call);
  }
};

// analytics.js's trackLink and trackForm (also named trackClick and trackSubmit), for
// sites coming from it: a click on an element given (a link), or a submit of a form
// given, is tracked. The navigation is not held back and made again by script, as
// analytics.js does (up to 300 ms): the event is stored before the page goes, and
// leaves with its last request (keepalive, at pagehide) or with the next page's. Seen
// at the window before the page's own listeners, so a page that stops the event still
// has it tracked. The name and properties may be functions of the element, as
// analytics.js takes them.
const hooked = new WeakMap();
const hook = (type) => {
  let on = 0;
  return (els, ev, props) => {
    if (!on++)
      addEventListener(
        type,
        (e) => {
          try {
            const el = e.composedPath().find((n) => (hooked.get(n) || {})[type]);
            const [n, p] = el ? hooked.get(el)[type] : [];
            if (el) w.sightline.track(typeof n == 'function' ? n(el) : n, typeof p == 'function' ? p(el) : p);
          } catch {}
        },
        true,
      );
    for (const el of Array.from(els && els.nodeType ? [els] : els || []))
      if (el && el.nodeType) hooked.set(el, { ...hooked.get(el), [type]: [ev, props] });
    return w.sightline;
  };
};
const trackLink = hook('click');
const trackForm = hook('submit');

const go = () =>
  wasm.then(() => {
    if (!x.start(cfg)) return;
    const api = {
      initialized: true,
      ready: stub.ready || Promise.resolve(),
      init: () => api.ready,
      track: done(x.track),
      page: done(x.page),
      screen: done(x.screen),
      identify: done(x.identify),
      softLogin: (o) => x.softLogin(o || {}),
      alias: done(x.alias),
      group: done(x.group),
      consent: { set: (c) => x.consentSet(c || {}), get: x.consentGet },
      reset: x.reset,
      flush: x.flush,
      debug: x.debug,
      anonymousId: x.anonymousId,
      setAnonymousId: x.setAnonymousId,
      userId: x.userId,
      stats: x.stats,
      segments: x.segments,
      trackLink,
      trackForm,
      trackClick: trackLink,
      trackSubmit: trackForm,
    };
    w.sightline = api;
    for (const [m, a] of stub) {
      if (m === 'consent.set') api.consent.set(...a);
      else if (m !== 'init' && typeof api[m] === 'function') api[m](...a);
    }
    // Consent signals the page already has: Google Consent Mode (the dataLayer) and the
    // IAB TCF (__tcfapi). A page's object of another shape, or a CMP stub that throws,
    // is skipped: it never stops the SDK's start.
    const dl = w.dataLayer;
    try {
      if (Array.isArray(dl)) {
        x.gcm(dl);
        const push = dl.push.bind(dl);
        dl.push = (...a) => {
          const r = push(...a);
          if (a.some((e) => e && e[0] === 'consent')) x.gcm(dl);
          return r;
        };
      }
    } catch {}
    try {
      if (typeof w.__tcfapi === 'function') w.__tcfapi('addEventListener', 2, (tc, ok) => x.tcf(tc, !!ok));
    } catch {}
    // US privacy: the IAB GPP's US sections, and the US Privacy string before it. A
    // callback that finds another shape is caught here, not thrown into the CMP.
    try {
      if (typeof w.__gpp === 'function')
        w.__gpp('addEventListener', (e, ok) => {
          try {
            const p = ok && e.pingData;
            if (p.signalStatus === 'ready') x.gpp(Object.values(p.parsedSections || {}).flat(), p);
          } catch {}
        });
    } catch {}
    try {
      if (typeof w.__uspapi === 'function') w.__uspapi('getUSPData', 1, (d, ok) => x.usp(d, !!ok));
    } catch {}
    // Consent managers that keep the visitor's answer in a global, read now and at their
    // change events once the visitor has answered (a banner's defaults are no answer):
    // Cookiebot's `consent` object and OneTrust's groups, each group true when active.
    // The keys go to the engine as they are; tracking-plan's rule reads them. A manager's
    // object of another shape (OneTrust's is a stub until it has loaded) is skipped,
    // never thrown into the page or the start. 230 bytes gzip of this file.
    const cmp = () => {
      try {
        const c = w.Cookiebot;
        if (c && c.hasResponse && c.consent) x.consentSet({ ...c.consent, source: 'cookiebot' });
        const o = w.OneTrust;
        const on = String(w.OnetrustActiveGroups || '').split(',');
        const d = o && o.GetDomainData && o.GetDomainData();
        if (d && (o.IsAlertBoxClosed() || d.ShowAlertNotice === false)) {
          const groups = d.Groups.map((g) => [g.CustomGroupId, on.includes(g.CustomGroupId)]);
          x.consentSet({ ...Object.fromEntries(groups), source: 'onetrust' });
        }
      } catch {}
    };
    cmp();
    addEventListener('CookiebotOnConsentReady', cmp);
    addEventListener('OneTrustGroupsUpdated', cmp);
    // Links clicked, recorded without code when the site asks (`data-track-links`): the
    // engine decides which (another site, a file) and records them.
    if (cfg.trackLinks && cfg.trackLinks !== 'false')
      addEventListener(
        'click',
        (e) => {
          try {
            const a = e.composedPath().find((n) => /^(a|area)$/i.test(n.localName) && n.href);
            if (a) x.linkClicked(String(a.href), a.textContent);
          } catch {}
        },
        true,
      );
    if (x.begin()) {
      // SPA navigations: the engine decides whether the path or query changed.
      for (const m of ['pushState', 'replaceState']) {
        const orig = history[m];
        history[m] = function (...a) {
          const r = orig.apply(this, a);
          x.navigated();
          return r;
        };
      }
      addEventListener('popstate', x.navigated);
    }
    if (stub._r) stub._r();
  });

if (cfg.writeKey) go().catch(fail);
else stub.init = (c) => (Object.assign(cfg, c || {}), go().catch(fail), stub.ready);

function fail(e) {
  // Nothing breaks: the stub keeps every call. One warning says why.
  console.warn(
    csp(e)
      ? "[sightline] not started: this page's Content-Security-Policy refuses WebAssembly; add 'wasm-unsafe-eval' to script-src (calls are kept)"
      : '[sightline] not started: ' + e,
  );
}
