//! The browser, behind a few small functions over web-sys: storage, page facts, time,
//! randomness, timers and HTTP. No decisions are taken here, and every call tolerates a
//! missing or throwing browser API (sandboxed iframes, storage disabled, old engines).

use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

fn local_storage() -> Option<web_sys::Storage> {
    window()?.local_storage().ok().flatten()
}

pub fn storage_get(key: &str) -> Option<String> {
    local_storage()?
        .get_item(key)
        .ok()
        .flatten()
        .filter(|v| !v.is_empty())
}

pub fn storage_set(key: &str, value: &str) {
    if let Some(s) = local_storage() {
        let _ = s.set_item(key, value);
    }
}

/// `{path, referrer, search, title, url}` of the current page.
pub fn page_context() -> Option<Value> {
    let w = window()?;
    let loc = w.location();
    let doc = w.document()?;
    Some(json!({
        "path": loc.pathname().unwrap_or_default(),
        "referrer": doc.referrer(),
        "search": loc.search().unwrap_or_default(),
        "title": doc.title(),
        "url": loc.href().unwrap_or_default(),
    }))
}

pub fn user_agent() -> Option<String> {
    window()?.navigator().user_agent().ok()
}

pub fn locale() -> Option<String> {
    window()?.navigator().language()
}

pub fn now_iso() -> String {
    js_sys::Date::new_0().to_iso_string().into()
}

pub fn random_bytes(buf: &mut [u8]) {
    let ok = window()
        .and_then(|w| w.crypto().ok())
        .is_some_and(|c| c.get_random_values_with_u8_array(buf).is_ok());
    if !ok {
        // No Web Crypto (very old engines): Math.random is enough for ids, not for secrets.
        for b in buf.iter_mut() {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
}

/// `ms` with ±10% jitter, so that many clients retrying after an outage spread out.
pub fn jitter(ms: u32) -> u32 {
    let f = 0.9 + js_sys::Math::random() * 0.2;
    (f64::from(ms) * f) as u32
}

pub fn set_timeout(f: impl FnOnce() + 'static, ms: i32) -> Option<i32> {
    let cb = Closure::once_into_js(f);
    window()?
        .set_timeout_with_callback_and_timeout_and_arguments_0(cb.unchecked_ref(), ms)
        .ok()
}

pub fn clear_timeout(id: i32) {
    if let Some(w) = window() {
        w.clear_timeout_with_handle(id);
    }
}

/// Below the browsers' 64 KB budget for requests that outlive the page.
const KEEPALIVE_MAX: usize = 60_000;

/// POSTs `body` as text/plain (no CORS preflight) and returns the HTTP status, or `None`
/// when the request did not complete (offline, blocked, aborted).
pub async fn post(url: &str, body: &str) -> Option<u16> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    // web-sys has no setter for `keepalive`; it is a plain RequestInit member.
    let keepalive = JsValue::from_bool(body.len() <= KEEPALIVE_MAX);
    let _ = js_sys::Reflect::set(&init, &JsValue::from_str("keepalive"), &keepalive);
    let headers = web_sys::Headers::new().ok()?;
    headers.set("Content-Type", "text/plain").ok()?;
    init.set_headers(&headers);
    let promise = window()?.fetch_with_str_and_init(url, &init);
    let resp: web_sys::Response = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
    Some(resp.status())
}
