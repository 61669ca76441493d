//! Sightline's browser SDK. `engine` decides everything (what an event carries, consent,
//! the queue, batches, retries); this module exposes it to the JS adapter
//! (`js/boot.js`), which owns the browser side: page facts, storage, the network, the
//! cross-tab lock and timers. Doing those in JS rather than through web-sys keeps the
//! wasm small: every web-sys binding adds glue to what each visitor downloads.

#![cfg_attr(all(target_arch = "wasm32", feature = "no-std"), no_std)]

extern crate alloc;

pub mod engine;
mod ids;
mod json;

use alloc::string::{String, ToString};
use engine::{Engine, Page};
use wasm_bindgen::prelude::*;

/// The shipped build (`--features no-std`) leaves std out: a panic traps, as it does
/// with std and `panic = "abort"`, but without std's panic machinery and `core::fmt` the
/// wasm is about 4 KB (gzip) smaller. Tests build with std (their harness needs it).
#[cfg(all(target_arch = "wasm32", feature = "no-std"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
// SAFETY: wasm32-unknown-unknown without threads: the SDK runs on one thread.
static ALLOC: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

/// The engine plus the current page's facts, which the adapter sets only when the page
/// changes (not with every call: strings crossing into wasm are copied).
#[wasm_bindgen]
pub struct Core {
    e: Engine,
    ctx: String,
    url: String,
}

#[wasm_bindgen]
impl Core {
    #[wasm_bindgen(constructor)]
    pub fn new(write_key: &str, opt_out: bool, country: &str, seed: &[u8], storage: bool) -> Core {
        Core {
            e: Engine::new(write_key, opt_out, country, seed, storage),
            ctx: "{}".into(),
            url: String::new(),
        }
    }

    /// The page's facts (JSON object: page, locale, timezone, screen, userAgent) and URL.
    #[wasm_bindgen(js_name = setPage)]
    pub fn set_page(&mut self, ctx: String, url: String) {
        self.ctx = ctx;
        self.url = url;
    }

    pub fn restore(&mut self, key: &str, value: &str) {
        self.e.restore(key, value);
    }

    pub fn start(&mut self) {
        self.e.start();
    }

    pub fn adopt(&mut self, id: &str) {
        self.e.adopt_anonymous_id(id);
    }

    pub fn anon(&self) -> String {
        self.e.anonymous_id().to_string()
    }

    pub fn user(&self) -> Option<String> {
        self.e.user_id().map(str::to_string)
    }

    pub fn record(
        &mut self,
        kind: &str,
        name: Option<String>,
        body: Option<String>,
        now: f64,
    ) -> bool {
        self.e.record(
            kind,
            name.as_deref(),
            body.as_deref(),
            &Page {
                ctx: &self.ctx,
                url: &self.url,
                now,
            },
        )
    }

    pub fn identify(&mut self, user_id: Option<String>, traits: Option<String>, now: f64) -> bool {
        self.e.identify(
            user_id.as_deref(),
            traits.as_deref(),
            &Page {
                ctx: &self.ctx,
                url: &self.url,
                now,
            },
        )
    }

    pub fn alias(&mut self, user_id: &str, previous: Option<String>, now: f64) -> bool {
        self.e.alias(
            user_id,
            previous.as_deref(),
            &Page {
                ctx: &self.ctx,
                url: &self.url,
                now,
            },
        )
    }

    #[wasm_bindgen(js_name = softLogin)]
    pub fn soft_login(&mut self, email: Option<String>, phone: Option<String>, now: f64) -> String {
        self.e.soft_login(
            email.as_deref(),
            phone.as_deref(),
            &Page {
                ctx: &self.ctx,
                url: &self.url,
                now,
            },
        )
    }

    pub fn redact(&self, s: &str) -> Option<String> {
        self.e.redact(s)
    }

    pub fn reset(&mut self) {
        self.e.reset();
    }

    #[wasm_bindgen(js_name = setConsent)]
    pub fn set_consent(&mut self, a: i8, m: i8, p: i8, source: &str, now: f64) {
        self.e.set_consent(
            a,
            m,
            p,
            source,
            &Page {
                ctx: &self.ctx,
                url: &self.url,
                now,
            },
        );
    }

    #[wasm_bindgen(js_name = consentGcm)]
    pub fn consent_gcm(&mut self, a: &str, ads: &str, data: &str, pers: &str, now: f64) {
        self.e.set_consent_gcm(
            a,
            ads,
            data,
            pers,
            &Page {
                ctx: &self.ctx,
                url: &self.url,
                now,
            },
        );
    }

    #[wasm_bindgen(js_name = consentTcf)]
    pub fn consent_tcf(&mut self, purposes: u32, now: f64) {
        self.e.set_consent_tcf(
            purposes,
            &Page {
                ctx: &self.ctx,
                url: &self.url,
                now,
            },
        );
    }

    pub fn consent(&self) -> String {
        self.e.consent_json()
    }

    pub fn ops(&mut self) -> String {
        self.e.take_ops()
    }

    #[wasm_bindgen(js_name = notPersisted)]
    pub fn not_persisted(&mut self, key: &str) {
        self.e.not_persisted(key);
    }

    pub fn delay(&self) -> f64 {
        self.e.send_delay()
    }

    pub fn batch(&mut self, now: f64, max_bytes: usize, present: Option<String>) -> Option<String> {
        self.e.next_batch(now, max_bytes, present.as_deref())
    }

    pub fn done(&mut self, status: u16, retry_after: f64) -> f64 {
        self.e.done(status, retry_after)
    }

    #[wasm_bindgen(js_name = unloadBatch)]
    pub fn unload_batch(&mut self, now: f64) -> Option<String> {
        self.e.unload_batch(now)
    }

    pub fn tab(&self) -> String {
        self.e.tab().to_string()
    }

    #[wasm_bindgen(js_name = foreignTabs)]
    pub fn foreign_tabs(&self) -> String {
        self.e.foreign_tabs()
    }

    #[wasm_bindgen(js_name = adoptTab)]
    pub fn adopt_tab(&mut self, tab: &str) {
        self.e.adopt_tab(tab);
    }

    #[wasm_bindgen(js_name = needsPresent)]
    pub fn needs_present(&self) -> bool {
        self.e.needs_present()
    }

    #[wasm_bindgen(js_name = forgetTab)]
    pub fn forget_tab(&mut self, tab: &str) {
        self.e.forget_tab(tab);
    }

    pub fn stats(&self) -> String {
        self.e.stats_json()
    }
}
