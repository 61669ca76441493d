//! The browser adapter: reads the page, applies the engine's storage operations, sends
//! the batches it builds under a cross-tab Web Lock, reports each response back, and
//! wires timers and page events, all through `web-sys`. It decides nothing: what to
//! keep, send, retry or forget is the engine's (`engine.rs`).
//!
//! The API is exported through `wasm-bindgen`; `js/sightline.js` maps the public object
//! (`window.sightline`) onto these exports and installs the page hooks.

use crate::engine::{
    self, CallOptions, ConsentState, Engine, Facts, GcmCommand, Kind, Links, Next, Op, Options,
    Random, SoftLogin, Stats,
};
use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use js_sys::{Array, Function, Object, Promise, Reflect, JSON};
use tracking_plan::consent::{self, consent_id, stated, stated_number, Choice, Policy};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{LockOptions, RequestCredentials, RequestInit, Response, Storage, VisibilityState};

const LOCK: &str = "sightline-send";
const TAB_LOCK: &str = "sightline-tab-";

/// Random bytes from `crypto.getRandomValues`, 1 KB at a time: one call into the
/// browser per 64 ids instead of one per id.
struct Pool {
    buf: [u8; 1024],
    at: usize,
}

impl Random for Pool {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.at == self.buf.len() {
                let c = web_sys::window().and_then(|w| w.crypto().ok());
                if c.and_then(|c| c.get_random_values_with_u8_array(&mut self.buf).ok())
                    .is_none()
                {
                    // No CSPRNG (never seen in a browser that runs wasm): ids must still
                    // differ between visitors.
                    for x in self.buf.iter_mut() {
                        *x = (js_sys::Math::random() * 256.0) as u8;
                    }
                }
                self.at = 0;
            }
            *b = self.buf[self.at];
            self.at += 1;
        }
    }
}

struct Sdk {
    engine: Engine<Pool>,
    store: Option<Storage>,
    /// The collector's batch endpoint, and its root.
    url: String,
    root: String,
    write_key: String,
    debug: bool,
    timer: Option<i32>,
    sending: bool,
    /// `flush()` promises waiting for the queue to empty.
    waiters: Vec<Function>,
    apply_queued: bool,
    /// What the page facts were last read from (URL, title, referrer).
    seen: Option<(String, String, String)>,
    referrer: String,
    statics: Facts,
    /// Analytics was granted at the last call (a revocation clears the cookie).
    analytics: bool,
    /// The address of the last page view (`engine::page_url`), for SPA navigations.
    spa_url: String,
    auto_page: bool,
    spa: bool,
    /// Callbacks made once: the send timer, the end-of-task storage write.
    on_timer: Function,
    on_apply: Function,
}

/// The SDK's one instance.
struct Global(RefCell<Option<Sdk>>);
// SAFETY: wasm32-unknown-unknown without threads: the SDK runs on one thread.
unsafe impl Sync for Global {}
static SDK: Global = Global(RefCell::new(None));

/// Runs `f` on the SDK, or does nothing when it is not started or already busy (a
/// page getter or `toJSON` that calls the SDK back while it works).
fn with<T>(f: impl FnOnce(&mut Sdk) -> T) -> Option<T> {
    SDK.0.try_borrow_mut().ok()?.as_mut().map(f)
}

/// A plain JS object of these fields.
fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

fn n(v: usize) -> JsValue {
    JsValue::from_f64(v as f64)
}

fn stats_js(s: &Stats) -> JsValue {
    object(&[
        ("queued", n(s.queued)),
        ("waiting", n(s.waiting)),
        ("sent", n(s.sent)),
        ("shed", n(s.shed)),
        ("rejected", n(s.rejected)),
        ("purged", n(s.purged)),
        ("notPersisted", n(s.not_persisted)),
    ])
}

fn consent_js(c: &ConsentState) -> JsValue {
    object(&[
        ("analytics", c.analytics.into()),
        ("marketing", c.marketing.into()),
        ("personalization", c.personalization.into()),
        ("decided", c.decided.into()),
    ])
}

fn soft_login_js(r: &SoftLogin) -> JsValue {
    let o = Object::new();
    for (k, v) in [
        ("email_sha256", &r.email_sha256),
        ("email_sha256_google", &r.email_sha256_google),
        ("phone_sha256", &r.phone_sha256),
        ("phone_sha256_meta", &r.phone_sha256_meta),
        ("error", &r.error),
    ] {
        if let Some(v) = v {
            let _ = Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v));
        }
    }
    o.into()
}

// The page's window, location and document, looked up once: `web_sys::window()` asks
// JS for the global object and checks its class at every call, and a track call asked
// for them five times (about 3 ms of 1,000 calls' main thread in a Chromium profile).
// The SDK runs only in a page (start() checks); none of the three changes in a page's
// life.
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(thread_local_v2, js_name = window)]
    static WINDOW: web_sys::Window;
    #[wasm_bindgen(thread_local_v2, js_name = location)]
    static LOCATION: web_sys::Location;
    #[wasm_bindgen(thread_local_v2, js_name = document)]
    static DOCUMENT: web_sys::Document;
    /// The page's `fetch` as it is when called (pages wrap it), with what it throws
    /// caught: web-sys's binding lets a wrapper's throw through the SDK into the page.
    #[wasm_bindgen(catch, js_name = fetch)]
    fn page_fetch(url: &str, init: &RequestInit) -> Result<JsValue, JsValue>;
}

fn win() -> web_sys::Window {
    WINDOW.with(Clone::clone)
}

fn hidden() -> bool {
    DOCUMENT.with(web_sys::Document::visibility_state) == VisibilityState::Hidden
}

fn now() -> u64 {
    js_sys::Date::now() as u64
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
}

/// A call argument as text (`String(v)` for strings, numbers and booleans), or `None`
/// for undefined, null and objects.
fn text(v: &JsValue) -> Option<String> {
    if let Some(s) = v.as_string() {
        return Some(s);
    }
    if let Some(n) = v.as_f64() {
        return JSON::stringify(&JsValue::from_f64(n))
            .ok()
            .map(String::from);
    }
    v.as_bool()
        .map(|b| String::from(if b { "true" } else { "false" }))
}

/// A flag from the config: absent is `default`, `false`/`"false"` is false.
fn flag(cfg: &JsValue, k: &str, default: bool) -> bool {
    let v = get(cfg, k);
    match (v.as_bool(), v.as_string()) {
        (Some(b), _) => b,
        (_, Some(s)) => s != "false",
        _ => default,
    }
}

/// The properties or traits argument: `JSON.stringify` of a plain object (done before
/// the SDK is borrowed: a `toJSON` may call back), `Some("")` for one that cannot be
/// serialized (a cycle, a BigInt: the engine refuses and counts it), `None` otherwise.
fn body(v: &JsValue) -> Option<String> {
    if !v.is_object() || Array::is_array(v) {
        return None;
    }
    // Prototype.js 1.6 (still on legacy shops) puts a `toJSON` on `Array.prototype`
    // that returns a string: `products` would arrive as the string `"[{…}]"`. No browser
    // defines one, so it is a page's own: taken away for this call, then put back as it
    // was. (`toJSON` is read from objects only, so its String and Number ones do not
    // apply.)
    let proto = Object::get_prototype_of(&Array::new());
    let key = JsValue::from_str("toJSON");
    let own = Reflect::get_own_property_descriptor(&proto, &key).unwrap_or_default();
    let hidden = own.is_object() && Reflect::delete_property(&proto, &key).unwrap_or(false);
    let json = JSON::stringify(v).ok().and_then(|s| s.as_string());
    if hidden {
        let _ = Object::define_property(&proto, &key, own.unchecked_ref());
    }
    Some(json.unwrap_or_default())
}

/// A consent manager's (or the page's) fields named in `keys`, as text, for a consent
/// record's evidence (`Engine::consent_evidence`). Read with `Reflect` (a throwing
/// getter reads as nothing).
fn evidence(o: &JsValue, keys: &[&'static str]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for k in keys {
        if let Some(v) = text(&get(o, k)) {
            out.push((*k, v));
        }
    }
    out
}

fn warn(a: &str, b: &JsValue) {
    web_sys::console::warn_3(&JsValue::from_str("[sightline]"), &JsValue::from_str(a), b);
}

fn storage() -> Option<Storage> {
    // Probed without writing (opt-in means no write at all before consent); a write
    // that fails later is handled where it happens.
    let s = win().local_storage().ok()??;
    s.get_item(engine::K_ANON).ok()?;
    Some(s)
}

fn stored_keys(s: &Storage) -> Vec<String> {
    let n = s.length().unwrap_or(0);
    let mut out: Vec<String> = Vec::new();
    for k in (0..n).filter_map(|i| s.key(i).ok().flatten()) {
        if k.starts_with("sl_") {
            // In time order (keys start with the time). An insertion into a sorted list:
            // tens of keys, and `sort()` brought 8 KB of the standard sorts into the wasm.
            let at = out.partition_point(|x| *x < k);
            out.insert(at, k);
        }
    }
    out
}

fn has_locks() -> bool {
    Reflect::has(&win().navigator(), &JsValue::from_str("locks")).unwrap_or(false)
}

/// Starts the SDK with the page's config (the snippet's `data-*` attributes and
/// `init()`'s object). Returns false when there is no write key yet.
#[wasm_bindgen]
pub fn start(cfg: JsValue) -> bool {
    let Some(write_key) = text(&get(&cfg, "writeKey")).filter(|k| !k.is_empty()) else {
        return false;
    };
    if web_sys::window().is_none() || SDK.0.try_borrow().map_or(true, |s| s.is_some()) {
        return false;
    }
    let w = win();
    let nav = w.navigator();
    let store = storage();
    let country = text(&get(&cfg, "country"))
        .unwrap_or_else(|| "US".into())
        .to_ascii_uppercase();
    let gpc = get(&nav, "globalPrivacyControl").as_bool() == Some(true);
    let policy = match text(&get(&cfg, "consent")).as_deref() {
        Some("opt-out") => Policy::OptOut,
        _ => Policy::OptIn,
    };
    let links = text(&get(&cfg, "trackLinks")).map_or_else(Links::default, |s| Links::parse(&s));
    let o = Options {
        write_key: write_key.clone(),
        policy,
        storage: store.is_some(),
        gpc,
        country,
        links,
    };
    let mut engine = Engine::new(
        o,
        Pool {
            buf: [0; 1024],
            at: 1024,
        },
    );
    let mut had_id = false;
    if let Some(s) = &store {
        for k in stored_keys(s) {
            had_id |= k == engine::K_ANON;
            engine.restore(&k, &s.get_item(&k).ok().flatten().unwrap_or_default());
        }
    }
    engine.start();
    let root = text(&get(&cfg, "endpoint"))
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    // A path (the default: none) is on the page's own origin, written out: fetch would
    // resolve it against a `<base href>`, which may point at a CDN.
    let root = if root.is_empty() || root.starts_with('/') && !root.starts_with("//") {
        LOCATION.with(|l| l.origin()).unwrap_or_default() + &root
    } else {
        root
    };
    let screen = w.screen().ok();
    let statics = Facts {
        locale: nav.language(),
        user_agent: nav.user_agent().unwrap_or_default(),
        screen: screen.map(|s| {
            let density = JSON::stringify(&JsValue::from_f64(w.device_pixel_ratio()))
                .ok()
                .map(String::from);
            (
                s.width().unwrap_or(0).max(0) as u32,
                s.height().unwrap_or(0).max(0) as u32,
                density.unwrap_or_default(),
            )
        }),
        ..Facts::default()
    };
    let location = LOCATION.with(Clone::clone);
    let href = engine::page_url(&location.href().unwrap_or_default()).to_owned();
    let on_timer = Closure::<dyn FnMut()>::new(|| {
        with(|s| s.timer = None);
        send();
    })
    .into_js_value()
    .unchecked_into();
    let on_apply = Closure::<dyn FnMut()>::new(|| {
        with(|s| {
            s.apply_queued = false;
            s.apply();
        });
    })
    .into_js_value()
    .unchecked_into();
    let analytics = engine.consent().analytics;
    let tab = String::from(&*engine.tab);
    if let Ok(mut s) = SDK.0.try_borrow_mut() {
        *s = Some(Sdk {
            engine,
            store,
            url: root.clone() + "/v1/batch",
            root,
            write_key,
            debug: {
                let d = get(&cfg, "debug");
                d.as_bool() == Some(true) || d.as_string().as_deref() == Some("true")
            },
            timer: None,
            sending: false,
            waiters: Vec::new(),
            apply_queued: false,
            seen: None,
            referrer: DOCUMENT.with(web_sys::Document::referrer),
            statics,
            analytics,
            spa_url: href,
            auto_page: flag(&cfg, "autoPage", true),
            spa: flag(&cfg, "spa", true),
            on_timer,
            on_apply,
        });
    }
    listen("visibilitychange", || {
        if hidden() {
            send();
        }
    });
    listen("pagehide", unload);
    listen("online", send);
    timezone();
    if has_locks() {
        // Each tab holds a lock named after it for as long as it lives. Events stored by
        // a tab that is gone (a reload, a closed tab) are adopted by whichever tab takes
        // its lock first; a live tab's events are left to it. Asked for now, before this
        // tab stores anything, so that no other tab's request comes first.
        hold(&(TAB_LOCK.to_owned() + &tab), false, Box::new(|_| {}));
    }
    if !had_id {
        // In a task of its own: a page's first fetch costs 2 to 3 ms of main thread in
        // Chromium (measured), which `ready` need not wait for.
        let cb = Closure::once_into_js(cookie_id);
        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(cb.unchecked_ref(), 0);
    }
    with(Sdk::apply);
    true
}

/// A visitor whose script storage was cleared (Safari caps it at 7 days) gets back the
/// id of the collector's HttpOnly first-party cookie, once consent allows. Not awaited:
/// the collector joins the cookie's id and this page's id anyway.
fn cookie_id() {
    let Some(root) =
        with(|s| (s.store.is_some() && s.engine.consent().analytics).then(|| s.root.clone()))
            .flatten()
    else {
        return;
    };
    json_of(
        fetch(&(root + "/v1/id"), None, false),
        Box::new(|v| {
            if let Some(id) = get(&v, "anonymousId").as_string() {
                with(|s| {
                    s.engine.adopt(&id);
                    s.apply();
                });
            }
        }),
    );
}

/// After the calls queued before load were replayed: the automatic page view, and
/// the first send. Returns whether SPA navigations are to be watched.
#[wasm_bindgen]
pub fn begin() -> bool {
    let Some((auto_page, spa, foreign)) =
        with(|s| (s.auto_page, s.spa, !s.engine.foreign_tabs().is_empty()))
    else {
        return false;
    };
    if auto_page {
        page(
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
        );
    }
    if foreign {
        send();
    } else {
        with(Sdk::schedule);
    }
    spa
}

fn listen(event: &str, f: fn()) {
    let cb = Closure::<dyn FnMut()>::new(f).into_js_value();
    let _ = win().add_event_listener_with_callback(event, cb.unchecked_ref());
}

/// The IANA time zone: Temporal answers at once; Intl's first use costs about 40 ms of
/// main thread in Chromium, so without Temporal it is read when the page is idle.
fn timezone() {
    let w = win();
    let temporal = get(&get(&w, "Temporal"), "Now");
    if let Some(f) = get(&temporal, "timeZoneId").dyn_ref::<Function>() {
        if let Some(tz) = f.call0(&temporal).ok().and_then(|v| v.as_string()) {
            with(|s| s.statics.timezone = Some(tz));
            return;
        }
    }
    let cb = Closure::once_into_js(|| {
        let f = js_sys::Intl::DateTimeFormat::new(&Array::new(), &Object::new());
        let tz = get(&f.resolved_options(), "timeZone").as_string();
        with(|s| {
            s.statics.timezone = tz;
            s.seen = None;
        });
    });
    if w.request_idle_callback(cb.unchecked_ref()).is_err() {
        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(cb.unchecked_ref(), 0);
    }
}

impl Sdk {
    /// The page's facts, read again when the URL, title or referrer changed; the time.
    /// Compared in place: no copy of the location's handle and no joined key per call.
    fn sync(&mut self) -> u64 {
        let href = LOCATION.with(|l| l.href().unwrap_or_default());
        let title = DOCUMENT.with(web_sys::Document::title);
        let same = self
            .seen
            .as_ref()
            .is_some_and(|(h, t, r)| (h, t, r) == (&href, &title, &self.referrer));
        if !same {
            let (path, search) = LOCATION.with(|l| {
                (
                    l.pathname().unwrap_or_default(),
                    l.search().unwrap_or_default(),
                )
            });
            let facts = Facts {
                path,
                referrer: self.referrer.clone(),
                search,
                title: title.clone(),
                url: engine::page_url(&href).to_owned(),
                ..self.statics.clone()
            };
            self.engine.set_page(&facts);
            self.seen = Some((href, title, self.referrer.clone()));
        }
        now()
    }

    /// Applies the engine's storage operations. A chunk the quota refuses lives on in
    /// memory (the engine counts it); nothing throws into the page.
    fn apply(&mut self) {
        let ops = self.engine.take_ops();
        let Some(s) = &self.store else { return };
        for op in ops {
            match op {
                Op::Set(k, v) => {
                    if s.set_item(&k, &v).is_err() && k.starts_with(engine::EVENT_PREFIX) {
                        self.engine.not_persisted(&k);
                    }
                }
                Op::Remove(k) => {
                    let _ = s.remove_item(&k);
                }
            }
        }
    }

    /// Storage is written at the end of the current task: a burst of calls becomes a
    /// few chunk writes.
    fn apply_soon(&mut self) {
        if !self.apply_queued {
            self.apply_queued = true;
            win().queue_microtask(&self.on_apply);
        }
    }

    fn schedule(&mut self) {
        // Nothing to decide while a send runs (it schedules when it ends) or a timer is
        // set and no `flush()` waits: skipped before `delay()` walks the queue, which
        // every call of a burst would otherwise do.
        if self.sending || (self.timer.is_some() && self.waiters.is_empty()) {
            return;
        }
        match self.engine.delay() {
            None => self.settle(),
            Some(ms) if self.timer.is_none() => {
                self.timer = win()
                    .set_timeout_with_callback_and_timeout_and_arguments_0(
                        &self.on_timer,
                        ms as i32,
                    )
                    .ok();
            }
            _ => {}
        }
    }

    /// Whether the next batch goes at once, under the lock the last one was sent
    /// under: a full batch is ready, or a `flush()` waits for the queue to empty. One
    /// lock request and no timer per burst instead of per batch (the 10 batches of
    /// 1,000 track calls took 11 lock requests and 10 timers).
    fn more_now(&self) -> bool {
        match self.engine.delay() {
            Some(0) => true,
            Some(_) => !self.waiters.is_empty(),
            None => false,
        }
    }

    fn settle(&mut self) {
        let stats = stats_js(&self.engine.stats());
        for r in core::mem::take(&mut self.waiters) {
            let _ = r.call1(&JsValue::NULL, &stats);
        }
    }

    /// After an API call: a revocation clears the cookie; storage is written at the end
    /// of the task; a send is scheduled.
    fn after(&mut self, kept: bool) {
        let now = self.engine.consent().analytics;
        if self.analytics && !now {
            forget_cookie(&self.root, &self.write_key);
        }
        self.analytics = now;
        self.apply_soon();
        if !kept && self.debug {
            web_sys::console::warn_2(
                &JsValue::from_str("[sightline]"),
                &JsValue::from_str(
                    "event not kept (over 32 KB, not serializable, or consent denied)",
                ),
            );
        }
        self.schedule();
    }
}

/// reset() and an analytics revocation clear the collector's HttpOnly cookie (script
/// cannot): the collector answers `Set-Cookie: sl_aid=; Max-Age=0` and retires the id.
fn forget_cookie(root: &str, write_key: &str) {
    let mut body = String::from("{\"writeKey\":");
    tracking_plan::json_text::push_str(&mut body, write_key);
    body.push('}');
    then(
        fetch(&(root.to_owned() + "/v1/reset"), Some(&body), true),
        Box::new(|_| {}),
    );
}

/// What is done with a promise's value once it settles: `None` when it rejected.
type Then = Box<dyn FnOnce(Option<JsValue>)>;

/// Calls `f` once `p` settles. Callbacks on promises instead of `async`: the futures
/// executor (`js_sys::futures`) and the state machines of the async functions were
/// 3,118 bytes gzip of the wasm (48,414 -> 45,296, measured); one boxed callback type
/// keeps the closure glue to two instances.
fn then(p: Promise, f: Then) {
    let once = Rc::new(Cell::new(Some(f)));
    let other = once.clone();
    let ok = Closure::once_into_js(move |v: JsValue| {
        if let Some(f) = once.take() {
            f(Some(v));
        }
    });
    let failed = Closure::once_into_js(move |_: JsValue| {
        if let Some(f) = other.take() {
            f(None);
        }
    });
    let _ = get(&p, "then")
        .unchecked_into::<Function>()
        .call2(&p, &ok, &failed);
}

/// The JSON body of a response `p` promises (undefined for a network failure, an error
/// status or a body that is not JSON), given to `f`.
fn json_of(p: Promise, f: Box<dyn FnOnce(JsValue)>) {
    then(
        p,
        Box::new(move |r| {
            match r
                .and_then(|r| r.dyn_into::<Response>().ok())
                .filter(Response::ok)
                .and_then(|r| r.json().ok())
            {
                Some(body) => then(body, Box::new(move |v| f(v.unwrap_or(JsValue::UNDEFINED)))),
                None => f(JsValue::UNDEFINED),
            }
        }),
    );
}

/// A POST (with `body`) or GET to the collector: the promise of its response. A page's
/// `fetch` that throws, or that returns no promise, is a failed request (retried as a
/// network failure is): it never throws into the page, and never leaves a send pending.
fn fetch(url: &str, body: Option<&str>, keepalive: bool) -> Promise {
    let init = RequestInit::new();
    init.set_credentials(RequestCredentials::SameOrigin);
    if let Some(b) = body {
        init.set_method("POST");
        // The body as UTF-8 bytes: a JS string would be decoded from the wasm's UTF-8
        // and encoded again by fetch.
        init.set_body(&js_sys::Uint8Array::from(b.as_bytes()));
        // RequestInit's `keepalive` is not in web-sys's bindings yet.
        let _ = Reflect::set(&init, &"keepalive".into(), &JsValue::from_bool(keepalive));
        let headers = Object::new();
        let _ = Reflect::set(&headers, &"content-type".into(), &"text/plain".into());
        init.set_headers(&headers);
    }
    match page_fetch(url, &init) {
        Ok(p) => Promise::resolve(&p),
        Err(e) => Promise::reject(&e),
    }
}

/// Sends the next batch, under the cross-tab lock when the browser has Web Locks.
fn send() {
    let go = with(|s| {
        if s.sending {
            return false;
        }
        if let Some(t) = s.timer.take() {
            win().clear_timeout_with_handle(t);
        }
        s.sending = true;
        true
    });
    if go != Some(true) {
        return;
    }
    // In a task of its own (a microtask), not inside the caller's.
    then(
        Promise::resolve(&JsValue::UNDEFINED),
        Box::new(|_| {
            if has_locks() {
                under_lock(LOCK, Box::new(sent));
            } else {
                attempt(Box::new(sent));
            }
        }),
    );
}

/// After a send: a retry timer, or the next batch when there is one.
fn sent(next: Option<f64>) {
    with(|s| {
        s.sending = false;
        match next {
            Some(ms) => {
                s.settle();
                s.timer = win()
                    .set_timeout_with_callback_and_timeout_and_arguments_0(&s.on_timer, ms as i32)
                    .ok();
            }
            None => s.schedule(),
        }
    });
}

/// What an attempt reports: the delay before a retry, if one is due.
type Done = Box<dyn FnOnce(Option<f64>)>;

/// Runs an attempt holding the Web Lock `name` (one tab sends at a time); `done` is
/// called once. When the lock cannot be asked for (a lock manager that refuses), the
/// attempt runs without it, as in a browser without Web Locks: delivery is at least once
/// either way, and the collector stores each messageId once.
fn under_lock(name: &str, done: Done) {
    let done = Rc::new(Cell::new(Some(done)));
    let finish = done.clone();
    let cb = Closure::once_into_js(move |_lock: JsValue| -> Promise {
        // The lock is held until this promise settles: when the attempt reports.
        Promise::new(&mut |release, _| {
            let done = done.take();
            attempt(Box::new(move |next| {
                let _ = release.call0(&JsValue::NULL);
                if let Some(d) = done {
                    d(next);
                }
            }));
        })
    });
    let p = lock_request(name, None, &cb);
    then(
        p,
        Box::new(move |_| {
            // Settled: normally after the attempt reported; if the request failed
            // before the attempt ran, the attempt runs now, unlocked.
            if let Some(d) = finish.take() {
                attempt(d);
            }
        }),
    );
}

/// `navigator.locks.request(name, [options,] callback)` as the page has it, with what it
/// throws caught (web-sys's binding lets a page's replacement's throw through into the
/// page): a rejected promise instead, on which the callers run unlocked.
fn lock_request(name: &str, opts: Option<&LockOptions>, cb: &JsValue) -> Promise {
    let locks = get(&win().navigator(), "locks");
    let request = get(&locks, "request").unchecked_into::<Function>();
    let name = JsValue::from_str(name);
    let r = match opts {
        Some(o) => request.call3(&locks, &name, o, cb),
        None => request.call2(&locks, &name, cb),
    };
    r.map_or_else(|e| Promise::reject(&e), |p| Promise::resolve(&p))
}

/// Takes the Web Lock `name` and keeps it for the page's life; `f` learns whether it
/// was had (false when `if_available` and another tab holds it), or `None` when the lock
/// manager refused the request.
fn hold(name: &str, if_available: bool, f: Box<dyn FnOnce(Option<bool>)>) {
    let f = Rc::new(Cell::new(Some(f)));
    let failed = f.clone();
    let cb = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        let got = !lock.is_null();
        if let Some(f) = f.take() {
            f(Some(got));
        }
        if got {
            Promise::new(&mut |_, _| {}).into()
        } else {
            JsValue::UNDEFINED
        }
    });
    let opts = LockOptions::new();
    opts.set_if_available(if_available);
    let p = lock_request(name, Some(&opts), &cb);
    then(
        p,
        Box::new(move |_| {
            if let Some(f) = failed.take() {
                f(None);
            }
        }),
    );
}

/// Adopts the events of tabs that are gone (their lock is free), lets go of the others,
/// one tab after the other; then `next`. Without Web Locks, or when the lock manager
/// refuses, whether a tab lives cannot be known: its events are adopted (a live tab may
/// send them too, and the collector stores each once), never left unsent.
fn adopt(mut tabs: Vec<Rc<str>>, next: Box<dyn FnOnce()>) {
    let Some(t) = tabs.pop() else {
        return next();
    };
    let lock = TAB_LOCK.to_owned() + &t;
    let judge = move |gone: bool| {
        with(|s| {
            if gone {
                s.engine.adopt_tab(&t)
            } else {
                s.engine.forget_tab(&t)
            }
        });
        adopt(tabs, next);
    };
    if has_locks() {
        hold(&lock, true, Box::new(move |had| judge(had.unwrap_or(true))));
    } else {
        judge(true);
    }
}

/// Batches sent under the lock, one after the other while the next is due at once
/// ([`Sdk::more_now`]): each built dropping events another tab already sent, sent, and
/// its response reported to the engine; `done` learns the delay before a retry.
fn attempt(done: Done) {
    let mut tabs = with(|s| s.engine.foreign_tabs()).unwrap_or_default();
    tabs.reverse(); // taken from the end: in the engine's order
    adopt(tabs, Box::new(move || send_batch(done)));
}

fn send_batch(done: Done) {
    let Some((body, url, debug)) = with(|s| {
        let present = match &s.store {
            Some(st) if s.engine.needs_present() => Some(stored_keys(st)),
            _ => None,
        };
        let b = s
            .engine
            .batch(now(), engine::MAX_BATCH_BYTES, present.as_deref());
        s.apply();
        b.map(|b| (b, s.url.clone(), s.debug))
    })
    .flatten() else {
        return done(None);
    };
    // `keepalive` only once the page is hidden (it may be closed next): Chromium holds
    // each keepalive request about 0.5 s (measured). A batch cut off by the page going
    // away stays stored and leaves with the next page.
    let keepalive = hidden() && body.len() < engine::UNLOAD_BYTES;
    then(
        fetch(&url, Some(&body), keepalive),
        Box::new(move |r| {
            let r = r.and_then(|r| r.dyn_into::<Response>().ok());
            let status = r.as_ref().map_or(0, Response::status);
            let retry_after = r
                .as_ref()
                .and_then(|r| r.headers().get("retry-after").ok().flatten())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let report_back = move |res: JsValue| {
                let next = with(|s| {
                    let n = s.engine.done(status, retry_after);
                    s.apply();
                    report(s.debug, status, &res);
                    (n, s.more_now())
                });
                match next {
                    Some((Next::Now, true)) => send_batch(done),
                    Some((Next::Retry(ms), _)) => done(Some(ms)),
                    _ => done(None),
                }
            };
            // Verdicts are read only when something may need saying.
            match r.filter(|r| debug || !r.ok()).and_then(|r| r.json().ok()) {
                Some(p) => then(
                    p,
                    Box::new(move |v| report_back(v.unwrap_or(JsValue::UNDEFINED))),
                ),
                None => report_back(JsValue::UNDEFINED),
            }
        }),
    );
}

/// Says in the console what the collector refused (and, in debug mode, what it
/// quarantined or accepted with warnings).
fn report(debug: bool, status: u16, res: &JsValue) {
    if (400..500).contains(&status) && status != 429 {
        warn("batch refused", &get(res, "error"));
    }
    let results = get(res, "results");
    if !debug || !Array::is_array(&results) {
        return;
    }
    for r in Array::from(&results).iter() {
        let st = get(&r, "status").as_string().unwrap_or_default();
        if st == "quarantined" || st == "refused" {
            warn(&(String::from("event ") + &st), &r);
        } else if !get(&r, "warnings").is_undefined() {
            warn("event accepted with warnings", &r);
        }
    }
}

/// The page is going away: what is left goes in one keepalive request within the 64 KB
/// budget. Offline, it stays in storage for the next page.
fn unload() {
    let out = with(|s| {
        s.apply();
        // Also while a send is pending: its request (without `keepalive`) goes with the
        // page, or never started (a wait for the send lock); the events go again here.
        if !win().navigator().on_line() {
            return None;
        }
        let b = s.engine.unload_batch(now());
        s.apply();
        b.map(|b| (b, s.url.clone()))
    })
    .flatten();
    if let Some((body, url)) = out {
        then(fetch(&url, Some(&body), true), Box::new(|_| {}));
    }
}

/// One recording call, with analytics.js's options for it alone (read, as its other
/// arguments, before the SDK is borrowed); what it kept is then scheduled.
fn recorded(o: CallOptions, call: impl FnOnce(&mut Engine<Pool>, u64) -> bool) {
    with(|s| {
        let now = s.sync();
        s.engine.call_options(o);
        let kept = call(&mut s.engine, now);
        s.after(kept);
    });
}

fn record(kind: Kind, name: Option<String>, body: Option<String>, o: CallOptions) {
    recorded(o, |e, now| {
        e.record(kind, name.as_deref(), body.as_deref(), now)
    });
}

/// A call with a name, a body and options: the body is an empty object when the page
/// gave none.
fn named(kind: Kind, name: &JsValue, body_arg: &JsValue, options: &JsValue) {
    let b = body(body_arg).or_else(|| Some("{}".into()));
    record(
        kind,
        Some(text(name).unwrap_or_default()),
        b,
        call_options(options),
    );
}

/// analytics.js's `options` argument as its event factory reads it: `integrations`
/// and `timestamp` (a `Date`, an ISO string or ms) for the message; `context` and every
/// other key, over it, for the context (`{ip: '0.0.0.0'}`, `{traits: {…}}`).
/// `anonymousId`, `userId` and `messageId` are the SDK's own and are not taken from a
/// call. Read before the SDK is borrowed, as [`body`] is, and only through `Reflect`'s
/// calls, which catch what a page's getter or Proxy trap throws (`Object.assign` and
/// `new Date(v)` would throw it into the page).
fn call_options(o: &JsValue) -> CallOptions {
    const RESERVED: [&str; 6] = [
        "context",
        "integrations",
        "timestamp",
        "anonymousId",
        "userId",
        "messageId",
    ];
    if !o.is_object() || Array::is_array(o) {
        return CallOptions::default();
    }
    let ctx = Object::new();
    let copy = |from: &JsValue, skip: &[&str]| {
        let Ok(keys) = Reflect::own_keys(from) else {
            return;
        };
        for k in keys.iter() {
            let named = k.as_string().is_some_and(|k| !skip.contains(&k.as_str()));
            if let (true, Ok(v)) = (named, Reflect::get(from, &k)) {
                let _ = Reflect::set(&ctx, &k, &v);
            }
        }
    };
    // `context`, then the other keys over it (as analytics.js merges them).
    let own = get(o, "context");
    if own.is_object() {
        copy(&own, &[]);
    }
    copy(o, &RESERVED);
    CallOptions {
        context: body(&ctx).filter(|c| c != "{}"),
        integrations: body(&get(o, "integrations")),
        timestamp: time_ms(&get(o, "timestamp")).map(|m| m as u64),
    }
}

/// A time given as a `Date`, a date string or ms since the epoch; `None` for anything
/// else (a `Date`'s time read by `Reflect.apply`, so an object that is none is refused
/// there instead of having its `valueOf` called).
fn time_ms(t: &JsValue) -> Option<f64> {
    let ms = if let Some(s) = t.as_string() {
        js_sys::Date::parse(&s)
    } else if let Some(n) = t.as_f64() {
        n
    } else if t.is_object() {
        let get_time = get(&js_sys::Date::new_0(), "getTime");
        let get_time: &Function = get_time.unchecked_ref();
        Reflect::apply(get_time, t, &Array::new()).ok()?.as_f64()?
    } else {
        return None;
    };
    (ms.is_finite() && ms >= 0.0).then_some(ms)
}

/// For the inspector's profile search (`sdk-wasm/js/hash.js`): a typed email or phone
/// hashed in the admin's page, so the raw value never leaves it. Only in the
/// inspector's build (feature `inspector`): in the visitors' wasm it measured 297 bytes
/// gzip.
#[cfg(feature = "inspector")]
#[wasm_bindgen(js_name = hashIdentifier)]
pub fn hash_identifier(kind: JsValue, value: JsValue, country: JsValue) -> String {
    let t = |v: &JsValue| text(v).unwrap_or_default();
    engine::lookup_hash(&t(&kind), &t(&value), &t(&country))
}

#[wasm_bindgen]
pub fn track(event: JsValue, props: JsValue, options: JsValue) {
    named(Kind::Track, &event, &props, &options);
}

/// `page([category], [name], [properties], [options])`: the engine puts the page's
/// facts in the properties, the call's own over them.
#[wasm_bindgen]
pub fn page(a: JsValue, b: JsValue, c: JsValue, d: JsValue) {
    let u = JsValue::UNDEFINED;
    // As analytics.js takes them: two names are a category and a name (the category
    // goes in the properties).
    let (category, name, props, options) = if a.is_object() {
        (u.clone(), u, a, b)
    } else if b.as_string().is_some() {
        (a, b, c, d)
    } else {
        (u, a, b, c)
    };
    let body = body(&props);
    let (category, name) = (text(&category), text(&name));
    recorded(call_options(&options), |e, now| {
        e.page(category.as_deref(), name.as_deref(), body.as_deref(), now)
    });
}

#[wasm_bindgen]
pub fn screen(name: JsValue, props: JsValue, options: JsValue) {
    named(Kind::Screen, &name, &props, &options);
}

#[wasm_bindgen]
pub fn group(id: JsValue, traits: JsValue, options: JsValue) {
    named(Kind::Group, &id, &traits, &options);
}

/// `identify([userId], [traits], [options])`.
#[wasm_bindgen]
pub fn identify(user: JsValue, traits: JsValue, options: JsValue) {
    let (user, traits, options) = if user.is_object() {
        (JsValue::UNDEFINED, user, traits)
    } else {
        (user, traits, options)
    };
    let b = body(&traits);
    let user = text(&user);
    recorded(call_options(&options), |e, now| {
        e.identify(user.as_deref(), b.as_deref(), now)
    });
}

/// `alias(userId, [previousId], [options])`.
#[wasm_bindgen]
pub fn alias(user: JsValue, previous: JsValue, options: JsValue) {
    let (previous, options) = if previous.is_object() {
        (JsValue::UNDEFINED, previous)
    } else {
        (previous, options)
    };
    let (user, previous) = (text(&user).unwrap_or_default(), text(&previous));
    recorded(call_options(&options), |e, now| {
        e.alias(&user, previous.as_deref(), now)
    });
}

/// `softLogin({email, phone})`: the digests (sent as identify traits), or `{error}`.
#[wasm_bindgen(js_name = softLogin)]
pub fn soft_login(o: JsValue) -> JsValue {
    let email = text(&get(&o, "email")).unwrap_or_default();
    let phone = text(&get(&o, "phone")).unwrap_or_default();
    let r = with(|s| {
        let now = s.sync();
        let r = s.engine.soft_login(&email, &phone, now);
        s.after(true);
        r
    })
    .unwrap_or_default();
    if let Some(e) = &r.error {
        warn("softLogin:", &JsValue::from_str(e));
    }
    soft_login_js(&r)
}

/// `consent.set({analytics, marketing, personalization, source})`: a category left out
/// (or null) stays as it is. Each key is read by `tracking_plan::consent::consent_id`,
/// the collector's rule: a consent manager's own object passes as it is
/// (`Cookiebot.consent`'s `statistics` and `preferences`, OneTrust's `C0002`…, Osano's
/// `ANALYTICS: "ACCEPT"`), and of two keys naming one category a denial wins.
#[wasm_bindgen(js_name = consentSet)]
pub fn consent_set(c: JsValue) {
    let mut choice = Choice::default();
    // `Reflect.ownKeys` (js-sys catches what it throws): not an object, or a page's
    // proxy whose key trap throws, states nothing and throws nothing into the page.
    if let Ok(keys) = Reflect::own_keys(c.unchecked_ref()) {
        for k in keys.iter() {
            let (x, cat) = (Reflect::get(&c, &k).unwrap_or_default(), k.as_string());
            if let (Some(cat), Some(v)) = (cat.as_deref().and_then(consent_id), value_state(&x)) {
                choice.state(cat, v);
            }
        }
    }
    let source = text(&get(&c, "source")).unwrap_or_else(|| "sdk".into());
    // The version of the site's notice, kept with the record as its evidence.
    let evidence = evidence(&c, &["version"]);
    with(|s| {
        let now = s.sync();
        s.engine.consent_evidence(evidence);
        s.engine.set_consent(choice, &source, now);
        s.after(true);
    });
}

/// A `consent.set` value as a grant or a denial, as the collector reads
/// `categoryPreferences`: a boolean, `1` or `0` (`stated_number`), or a consent manager's
/// word (`tracking_plan::consent::stated`: Osano's `"DENY"` is a denial, not a truthy
/// string).
/// Anything else states nothing.
fn value_state(x: &JsValue) -> Option<bool> {
    if let Some(b) = x.as_bool() {
        return Some(b);
    }
    if let Some(n) = x.as_f64() {
        return stated_number(n);
    }
    stated(&x.as_string()?)
}

/// `consent.get()`: `{analytics, marketing, personalization, decided}` as applied.
#[wasm_bindgen(js_name = consentGet)]
pub fn consent_get() -> JsValue {
    with(|s| consent_js(&s.engine.consent())).unwrap_or(JsValue::UNDEFINED)
}

/// Google Consent Mode: the page's `dataLayer`, read again whenever a `consent`
/// command is pushed.
#[wasm_bindgen]
pub fn gcm(layer: JsValue) {
    if !Array::is_array(&layer) {
        return;
    }
    // Read out of the page first (getters run before the SDK is borrowed).
    let mut found: Vec<(bool, [Option<String>; 4])> = Vec::new();
    for e in Array::from(&layer).iter() {
        let (verb, state) = (get(&e, "1").as_string(), get(&e, "2"));
        if get(&e, "0").as_string().as_deref() != Some("consent") || !state.is_object() {
            continue;
        }
        let update = match verb.as_deref() {
            Some("update") => true,
            Some("default") => false,
            _ => continue,
        };
        let s = |k: &str| get(&state, k).as_string();
        found.push((
            update,
            [
                s("analytics_storage"),
                s("ad_storage"),
                s("ad_user_data"),
                s("ad_personalization"),
            ],
        ));
    }
    let commands = found.iter().map(|(update, [a, ads, data, p])| GcmCommand {
        update: *update,
        analytics_storage: a.as_deref(),
        ad_storage: ads.as_deref(),
        ad_user_data: data.as_deref(),
        ad_personalization: p.as_deref(),
    });
    if let Some(c) = engine::gcm_choice(commands) {
        with(|s| {
            let now = s.sync();
            s.engine.consent_gcm(c, now);
            s.after(true);
        });
    }
}

/// The IAB TCF's `addEventListener` callback.
#[wasm_bindgen]
pub fn tcf(tc: JsValue, ok: bool) {
    let status = get(&tc, "eventStatus").as_string().unwrap_or_default();
    if !ok || !engine::tcf_ready(&status) {
        return;
    }
    let consents = get(&get(&tc, "purpose"), "consents");
    let granted: Vec<bool> = (0..12)
        .map(|n| Reflect::get_u32(&consents, n).is_ok_and(|v| v.is_truthy()))
        .collect();
    let evidence = evidence(&tc, &["tcString", "cmpId", "cmpVersion"]);
    with(|s| {
        let now = s.sync();
        s.engine.consent_evidence(evidence);
        s.engine.consent_tcf(
            |p| granted.get(usize::from(p)).copied().unwrap_or(false),
            now,
        );
        s.after(true);
    });
}

/// The IAB GPP's `addEventListener` callback, once the CMP's signal is ready: the
/// objects of its parsed sections (the shim flattens them: a section is an object of
/// fields, or, in CMP API 1.1, a list of its segments' objects), read for the US
/// sections' opt-outs.
/// Its `pingData` comes along, for its GPP string (the record's evidence).
#[wasm_bindgen]
pub fn gpp(parts: Array, ping: JsValue) {
    let mut out = false;
    for part in parts.iter() {
        for f in consent::US_OPT_OUTS {
            let v = get(&part, f);
            out |= consent::gpp_opted_out(v.as_f64(), v.as_bool());
        }
    }
    us_opt_out(out, "gpp", evidence(&ping, &["gppString"]));
}

/// The US Privacy string's (`__uspapi('getUSPData')`) callback.
#[wasm_bindgen]
pub fn usp(data: JsValue, ok: bool) {
    let s = get(&data, "uspString").as_string().unwrap_or_default();
    us_opt_out(
        ok && consent::usp_opted_out(&s),
        "usp",
        evidence(&data, &["uspString"]),
    );
}

fn us_opt_out(opted_out: bool, source: &str, evidence: Vec<(&'static str, String)>) {
    if !opted_out {
        return;
    }
    with(|s| {
        let now = s.sync();
        s.engine.consent_evidence(evidence);
        s.engine.consent_us(opted_out, source, now);
        s.after(true);
    });
}

/// A history change (pushState, replaceState, popstate, which a fragment's change
/// fires too): a page view when the address changed, its fragment aside unless it is a
/// hash router's route (`engine::page_url`).
#[wasm_bindgen]
pub fn navigated() {
    let href = LOCATION.with(|l| l.href().unwrap_or_default());
    let at = engine::page_url(&href).to_owned();
    let moved = with(|s| {
        if at == s.spa_url {
            return false;
        }
        s.referrer = core::mem::replace(&mut s.spa_url, at);
        true
    });
    if moved == Some(true) {
        page(
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
            JsValue::UNDEFINED,
        );
    }
}

/// A new visitor on this browser; the collector's cookie is cleared too.
#[wasm_bindgen]
pub fn reset() {
    with(|s| {
        s.engine.reset();
        s.apply();
        forget_cookie(&s.root, &s.write_key);
    });
}

/// Sends everything queued; resolves with the stats once the queue is empty (or what
/// is left must wait for a retry).
#[wasm_bindgen]
pub fn flush() -> Promise {
    let p = Promise::new(&mut |resolve, _| {
        if with(|s| s.waiters.push(resolve.clone())).is_none() {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    send();
    p
}

#[wasm_bindgen]
pub fn debug(on: JsValue) {
    with(|s| s.debug = on.is_undefined() || on.is_truthy());
}

#[wasm_bindgen(js_name = anonymousId)]
pub fn anonymous_id() -> Option<String> {
    with(|s| s.engine.anon().to_owned())
}

/// A click on a link (`data-track-links`; the shim's listener): the engine decides
/// whether it is an event (`Engine::link_clicked`).
#[wasm_bindgen(js_name = linkClicked)]
pub fn link_clicked(href: JsValue, label: JsValue) {
    let (href, label) = (
        text(&href).unwrap_or_default(),
        text(&label).unwrap_or_default(),
    );
    recorded(CallOptions::default(), |e, now| {
        e.link_clicked(&href, &label, now)
    });
}

/// analytics.js's `setAnonymousId(id)` (`Engine::set_anonymous_id`): false when refused.
#[wasm_bindgen(js_name = setAnonymousId)]
pub fn set_anonymous_id(id: JsValue) -> bool {
    let id = text(&id).unwrap_or_default();
    with(|s| {
        let kept = s.engine.set_anonymous_id(&id);
        s.apply();
        kept
    })
    .unwrap_or(false)
}

#[wasm_bindgen(js_name = userId)]
pub fn user_id() -> Option<String> {
    with(|s| s.engine.user().map(str::to_owned)).flatten()
}

#[wasm_bindgen]
pub fn stats() -> JsValue {
    with(|s| stats_js(&s.engine.stats())).unwrap_or(JsValue::UNDEFINED)
}

/// `segments()`: the current visitor's segments and the traits the site marks
/// shareable, from the collector's `GET /v1/segments`. Asked only under a decided
/// personalization consent, after the queued events (the consent record among them) are
/// sent, so the collector judges by the same decision; otherwise, and on any failure,
/// the empty answer, without a request.
#[wasm_bindgen]
pub fn segments() -> Promise {
    let url = with(|s| {
        let c = s.engine.consent();
        let anon = s.engine.anon().to_owned();
        (c.decided && c.personalization).then(|| {
            let enc = |v: &str| String::from(js_sys::encode_uri_component(v));
            s.root.clone()
                + "/v1/segments?writeKey="
                + &enc(&s.write_key)
                + "&anonymousId="
                + &enc(&anon)
        })
    })
    .flatten();
    Promise::new(&mut |resolve, _| {
        let answer = move |a: JsValue| {
            let o = Object::new();
            let (segments, traits) = if a.is_object() {
                (get(&a, "segments"), get(&a, "traits"))
            } else {
                (Array::new().into(), Object::new().into())
            };
            let _ = Reflect::set(&o, &"segments".into(), &segments);
            let _ = Reflect::set(&o, &"traits".into(), &traits);
            let _ = resolve.call1(&JsValue::NULL, &o);
        };
        let Some(url) = url.clone() else {
            return answer(JsValue::UNDEFINED);
        };
        then(
            flush(),
            Box::new(move |_| json_of(fetch(&url, None, false), Box::new(answer))),
        );
    })
}
