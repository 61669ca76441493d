//! Sightline's browser SDK. `engine` decides everything (what an event carries, consent,
//! the queue, batches, retries); this module exposes it to the JS adapter
//! (`js/boot.js`), which owns the browser side: page facts, storage, the network, the
//! cross-tab lock and timers. Doing those in JS rather than through web-sys keeps the
//! wasm small: every web-sys binding adds glue to what each visitor downloads.

pub mod engine;
mod ids;
mod json;

use engine::{Engine, Page};

#[cfg(target_arch = "wasm32")]
#[global_allocator]
// SAFETY: wasm32-unknown-unknown without threads: the SDK runs on one thread.
static ALLOC: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
pub struct Core(Engine);

#[wasm_bindgen]
impl Core {
    #[wasm_bindgen(constructor)]
    pub fn new(write_key: &str, opt_out: bool, country: &str, seed: &[u8], storage: bool) -> Core {
        Core(Engine::new(write_key, opt_out, country, seed, storage))
    }

    pub fn restore(&mut self, key: &str, value: &str) {
        self.0.restore(key, value);
    }

    pub fn start(&mut self) {
        self.0.start();
    }

    pub fn adopt(&mut self, id: &str) {
        self.0.adopt_anonymous_id(id);
    }

    pub fn anon(&self) -> String {
        self.0.anonymous_id().to_string()
    }

    pub fn user(&self) -> Option<String> {
        self.0.user_id().map(str::to_string)
    }

    pub fn record(
        &mut self,
        kind: &str,
        name: Option<String>,
        body: Option<String>,
        ctx: &str,
        url: &str,
        now: f64,
    ) -> bool {
        self.0.record(
            kind,
            name.as_deref(),
            body.as_deref(),
            &Page { ctx, url, now },
        )
    }

    pub fn identify(
        &mut self,
        user_id: Option<String>,
        traits: Option<String>,
        ctx: &str,
        url: &str,
        now: f64,
    ) -> bool {
        self.0.identify(
            user_id.as_deref(),
            traits.as_deref(),
            &Page { ctx, url, now },
        )
    }

    pub fn alias(
        &mut self,
        user_id: &str,
        previous: Option<String>,
        ctx: &str,
        url: &str,
        now: f64,
    ) -> bool {
        self.0
            .alias(user_id, previous.as_deref(), &Page { ctx, url, now })
    }

    #[wasm_bindgen(js_name = softLogin)]
    pub fn soft_login(
        &mut self,
        email: Option<String>,
        phone: Option<String>,
        ctx: &str,
        url: &str,
        now: f64,
    ) -> String {
        self.0
            .soft_login(email.as_deref(), phone.as_deref(), &Page { ctx, url, now })
    }

    pub fn redact(&self, s: &str) -> Option<String> {
        self.0.redact(s)
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    #[wasm_bindgen(js_name = setConsent)]
    #[allow(clippy::too_many_arguments)]
    pub fn set_consent(
        &mut self,
        a: i8,
        m: i8,
        p: i8,
        source: &str,
        ctx: &str,
        url: &str,
        now: f64,
    ) {
        self.0.set_consent(a, m, p, source, &Page { ctx, url, now });
    }

    #[wasm_bindgen(js_name = consentGcm)]
    #[allow(clippy::too_many_arguments)]
    pub fn consent_gcm(
        &mut self,
        a: &str,
        ads: &str,
        data: &str,
        pers: &str,
        ctx: &str,
        url: &str,
        now: f64,
    ) {
        self.0
            .set_consent_gcm(a, ads, data, pers, &Page { ctx, url, now });
    }

    #[wasm_bindgen(js_name = consentTcf)]
    pub fn consent_tcf(&mut self, purposes: u32, ctx: &str, url: &str, now: f64) {
        self.0.set_consent_tcf(purposes, &Page { ctx, url, now });
    }

    pub fn consent(&self) -> String {
        self.0.consent_json()
    }

    pub fn ops(&mut self) -> String {
        self.0.take_ops()
    }

    #[wasm_bindgen(js_name = notPersisted)]
    pub fn not_persisted(&mut self, key: &str) {
        self.0.not_persisted(key);
    }

    pub fn delay(&self) -> f64 {
        self.0.send_delay()
    }

    pub fn batch(&mut self, now: f64, max_bytes: usize, present: Option<String>) -> Option<String> {
        self.0.next_batch(now, max_bytes, present.as_deref())
    }

    pub fn done(&mut self, status: u16, retry_after: f64) -> f64 {
        self.0.done(status, retry_after)
    }

    #[wasm_bindgen(js_name = unloadBatch)]
    pub fn unload_batch(&mut self, now: f64) -> Option<String> {
        self.0.unload_batch(now)
    }

    pub fn tab(&self) -> String {
        self.0.tab().to_string()
    }

    #[wasm_bindgen(js_name = foreignTabs)]
    pub fn foreign_tabs(&self) -> String {
        self.0.foreign_tabs()
    }

    #[wasm_bindgen(js_name = adoptTab)]
    pub fn adopt_tab(&mut self, tab: &str) {
        self.0.adopt_tab(tab);
    }

    #[wasm_bindgen(js_name = needsPresent)]
    pub fn needs_present(&self) -> bool {
        self.0.needs_present()
    }

    #[wasm_bindgen(js_name = forgetTab)]
    pub fn forget_tab(&mut self, tab: &str) {
        self.0.forget_tab(tab);
    }

    pub fn stats(&self) -> String {
        self.0.stats_json()
    }
}
