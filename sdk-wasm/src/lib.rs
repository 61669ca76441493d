//! Sightline's browser SDK. Decides what an event carries (ids, time, page context) and
//! when queued events are sent; the browser itself (storage, fetch, timers) is reached
//! only through `browser`, a thin layer over web-sys.

mod browser;
mod ids;

use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::rc::Rc;
use tracking_plan::{Message, MessageType};
use wasm_bindgen::prelude::*;

const LIBRARY: &str = "sightline.js";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const ANON_KEY: &str = "sl_aid";
/// Events per request; the collector takes up to 500 KB, and 100 typical events fit.
const MAX_BATCH_EVENTS: usize = 100;
/// A burst of calls is gathered for this long before it is sent.
const FLUSH_DELAY_MS: i32 = 200;
const MAX_BACKOFF_MS: u32 = 60_000;

struct State {
    write_key: String,
    endpoint: String,
    anonymous_id: String,
    queue: Vec<Value>,
    sending: bool,
    timer: Option<i32>,
    backoff_ms: u32,
    /// Resolvers of `flush()` promises, called when the queue is empty.
    waiters: Vec<js_sys::Function>,
}

/// The SDK instance behind `window.sightline`.
#[wasm_bindgen]
pub struct Sightline {
    state: Rc<RefCell<State>>,
}

fn config_str(config: &JsValue, key: &str) -> Option<String> {
    js_sys::Reflect::get(config, &JsValue::from_str(key))
        .ok()?
        .as_string()
}

/// Turns a JS value (plain object) into JSON. Functions, symbols and cycles cannot be
/// sent; they give `None` rather than an exception inside the caller's code.
fn to_json(v: &JsValue) -> Option<Value> {
    if v.is_undefined() || v.is_null() {
        return None;
    }
    let s: String = js_sys::JSON::stringify(v).ok()?.as_string()?;
    serde_json::from_str(&s).ok()
}

#[wasm_bindgen]
impl Sightline {
    /// `config`: `{writeKey, endpoint}`; `endpoint` is the collector's origin or path
    /// prefix (default: this page's origin).
    #[wasm_bindgen(constructor)]
    pub fn new(config: &JsValue) -> Sightline {
        let anonymous_id = browser::storage_get(ANON_KEY).unwrap_or_else(|| {
            let id = ids::uuid_v4();
            browser::storage_set(ANON_KEY, &id);
            id
        });
        let state = State {
            write_key: config_str(config, "writeKey").unwrap_or_default(),
            endpoint: config_str(config, "endpoint").unwrap_or_default(),
            anonymous_id,
            queue: Vec::new(),
            sending: false,
            timer: None,
            backoff_ms: 0,
            waiters: Vec::new(),
        };
        Sightline {
            state: Rc::new(RefCell::new(state)),
        }
    }

    #[wasm_bindgen(js_name = anonymousId)]
    pub fn anonymous_id(&self) -> String {
        self.state.borrow().anonymous_id.clone()
    }

    /// `track(event, properties?)`.
    pub fn track(&self, event: &str, properties: &JsValue) {
        let mut m = self.base(MessageType::Track);
        m.event = Some(event.to_string());
        m.properties = Some(to_json(properties).unwrap_or_else(|| json!({})));
        self.enqueue(m);
    }

    /// `page(name?, properties?)`; `page(properties)` is accepted too.
    pub fn page(&self, name: &JsValue, properties: &JsValue) {
        let (name, props) = match name.as_string() {
            Some(n) => (Some(n), to_json(properties)),
            None => (None, to_json(name)),
        };
        let mut m = self.base(MessageType::Page);
        let mut p = match props {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        // Segment's convention: page properties repeat the page context (read once, in base).
        if let Some(Value::Object(page)) = m.context.as_ref().and_then(|c| c.get("page")) {
            for (k, v) in page {
                p.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        m.name = name;
        m.properties = Some(Value::Object(p));
        self.enqueue(m);
    }

    /// Sends everything queued now; the promise resolves once the queue is empty.
    pub fn flush(&self) -> js_sys::Promise {
        let state = self.state.clone();
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            state.borrow_mut().waiters.push(resolve);
        });
        send(&self.state);
        promise
    }
}

impl Sightline {
    fn base(&self, kind: MessageType) -> Message {
        let mut context = Map::new();
        context.insert(
            "library".into(),
            json!({"name": LIBRARY, "version": VERSION}),
        );
        if let Some(page) = browser::page_context() {
            context.insert("page".into(), page);
        }
        if let Some(ua) = browser::user_agent() {
            context.insert("userAgent".into(), Value::String(ua));
        }
        if let Some(locale) = browser::locale() {
            context.insert("locale".into(), Value::String(locale));
        }
        Message {
            kind: Some(kind),
            message_id: Some(ids::uuid_v4()),
            anonymous_id: Some(self.state.borrow().anonymous_id.clone()),
            timestamp: Some(browser::now_iso()),
            context: Some(Value::Object(context)),
            ..Message::default()
        }
    }

    fn enqueue(&self, m: Message) {
        let Ok(v) = serde_json::to_value(&m) else {
            return;
        };
        let mut s = self.state.borrow_mut();
        s.queue.push(v);
        let full = s.queue.len() >= MAX_BATCH_EVENTS;
        let idle = s.timer.is_none() && !s.sending;
        drop(s);
        if full {
            send(&self.state);
        } else if idle {
            schedule(&self.state, FLUSH_DELAY_MS);
        }
    }
}

fn schedule(state: &Rc<RefCell<State>>, delay_ms: i32) {
    let st = state.clone();
    let id = browser::set_timeout(
        move || {
            st.borrow_mut().timer = None;
            send(&st);
        },
        delay_ms,
    );
    state.borrow_mut().timer = id;
}

/// Sends one batch if none is in flight. On a network error, a 5xx or a 429 the batch goes
/// back to the front of the queue and is retried with exponential backoff; the messageIds
/// stay the same, so the collector stores each event once.
fn send(state: &Rc<RefCell<State>>) {
    let (body, url, batch) = {
        let mut s = state.borrow_mut();
        if s.sending {
            return;
        }
        if s.queue.is_empty() {
            for w in s.waiters.drain(..) {
                let _ = w.call0(&JsValue::NULL);
            }
            return;
        }
        if let Some(t) = s.timer.take() {
            browser::clear_timeout(t);
        }
        let n = s.queue.len().min(MAX_BATCH_EVENTS);
        let batch: Vec<Value> = s.queue.drain(..n).collect();
        let body = json!({"batch": batch, "sentAt": browser::now_iso(), "writeKey": s.write_key});
        s.sending = true;
        (body.to_string(), format!("{}/v1/batch", s.endpoint), batch)
    };
    let st = state.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let status = browser::post(&url, &body).await;
        let retry = matches!(status, None | Some(429) | Some(500..=599));
        let mut s = st.borrow_mut();
        s.sending = false;
        if retry {
            let mut rest = std::mem::take(&mut s.queue);
            s.queue = batch;
            s.queue.append(&mut rest);
            s.backoff_ms = (s.backoff_ms * 2).clamp(500, MAX_BACKOFF_MS);
            let delay = browser::jitter(s.backoff_ms);
            drop(s);
            schedule(&st, delay as i32);
        } else {
            s.backoff_ms = 0;
            drop(s);
            send(&st);
        }
    });
}
