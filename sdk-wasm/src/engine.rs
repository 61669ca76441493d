//! The SDK's decisions, as plain Rust over plain data (tested natively): what an event
//! carries (ids, session, campaign, consent snapshot), whether it may be kept, stored or
//! sent under the visitor's consent, which events form the next batch, what a response
//! means (done, retry after a backoff, or refused), and what is shed at the queue's bound.
//!
//! The browser is reached only by the JS adapter (`js/boot.js`), which reads the page,
//! performs the storage operations this engine emits ([`Engine::take_ops`]), sends the
//! batches it builds under a cross-tab Web Lock, and reports each response back.

use crate::ids::Rng;
use crate::json;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use tracking_plan::campaign;
use tracking_plan::identifiers::{self as idf, EmailVariant, PhoneVariant};
use tracking_plan::time::format_rfc3339;

pub const LIBRARY: &str = "sightline.js";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Events kept at most (queued plus waiting for consent). At the bound the oldest event
/// is shed and counted: recent events describe the visit that is still going on.
pub const MAX_QUEUE: usize = 1000;
/// The collector's limits.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
pub const MAX_BATCH_EVENTS: usize = 100;
/// Requests that outlive the page (fetch keepalive, sendBeacon) share a 64 KB budget.
pub const UNLOAD_BYTES: usize = 60_000;
/// A burst of calls is gathered this long before it is sent.
pub const FLUSH_DELAY_MS: f64 = 200.0;
pub const SESSION_MS: f64 = 30.0 * 60.0 * 1000.0;
pub const MIN_BACKOFF_MS: f64 = 500.0;
pub const MAX_BACKOFF_MS: f64 = 60_000.0;
/// Storage keys (localStorage).
pub const EVENT_PREFIX: &str = "sl_e:";
const K_ANON: &str = "sl_aid";
const K_USER: &str = "sl_uid";
const K_SESSION: &str = "sl_sess";
const K_CONSENT: &str = "sl_consent";
const K_FIRST: &str = "sl_ft";
const K_LAST: &str = "sl_lt";

/// Length of a tab id (the suffix of its event keys).
const TAB_LEN: usize = 6;

/// Consent category bits an event needs to be kept and sent.
const ANALYTICS: u8 = 1;
const MARKETING: u8 = 2;

/// The visitor's choice per category (`None`: not stated yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consent {
    pub analytics: Option<bool>,
    pub marketing: Option<bool>,
    pub personalization: Option<bool>,
}

fn tri(c: u8) -> Option<bool> {
    match c {
        b'1' => Some(true),
        b'0' => Some(false),
        _ => None,
    }
}

fn tri_char(v: Option<bool>) -> char {
    match v {
        Some(true) => '1',
        Some(false) => '0',
        None => '-',
    }
}

/// Where and when a call happens: the page facts as a JSON object (page, locale,
/// timezone, screen, userAgent), the page URL (for campaign capture) and the time.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub ctx: &'a str,
    pub url: &'a str,
    pub now: f64,
}

struct Item {
    key: String,
    /// The tab that created the event (the key's suffix): only it sends the event while
    /// it lives; a closed tab's events are adopted by one other tab.
    owner: String,
    json: String,
    needs: u8,
    /// The storage key of the chunk holding it, once written (events are stored in chunks
    /// of up to [`MAX_BATCH_EVENTS`] lines, one `setItem` per chunk rather than per event).
    stored_in: Option<String>,
    /// To be written with the next storage operations.
    pending: bool,
    /// Read back from storage at start (another page or tab may send it too).
    restored: bool,
}

pub struct Engine {
    write_key: String,
    opt_out: bool,
    country: String,
    rng: Rng,
    anon: String,
    user: Option<String>,
    session: String,
    last_activity: f64,
    session_saved: f64,
    consent: Consent,
    consent_source: String,
    first_touch: Option<String>,
    last_touch: Option<String>,
    last_click_ids: Option<String>,
    touched_url: String,
    queue: Vec<Item>,
    /// Opt-in mode before a decision: events wait here, unstamped, never stored or sent.
    waiting: Vec<(String, u8)>,
    inflight: Vec<String>,
    seq: u32,
    tab: String,
    ops: String,
    storage: bool,
    backoff: f64,
    pub shed: u32,
    pub sent: u32,
    pub rejected: u32,
    pub purged: u32,
}

/// `n` in base 36, left-padded to `width` (keys sort in time order). Hand-written, as is
/// [`decimal`]: integer formatting through `core::fmt` costs the SDK kilobytes.
fn base36(mut n: u64, width: usize) -> String {
    let mut s = alloc::vec!['0'; width];
    for c in s.iter_mut().rev() {
        *c = char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    s.into_iter().collect()
}

fn decimal(mut n: u64) -> String {
    let mut s = Vec::new();
    loop {
        s.push(char::from(b'0' + (n % 10) as u8));
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.into_iter().rev().collect()
}

impl Engine {
    /// `opt_out`: consent is assumed until denied (default is opt-in: nothing is stored or
    /// sent before the visitor grants analytics). `storage`: localStorage works here.
    pub fn new(
        write_key: &str,
        opt_out: bool,
        country: &str,
        seed: &[u8],
        storage: bool,
    ) -> Engine {
        let mut rng = Rng::new(seed);
        let tab = base36(u64::from(rng.next()), TAB_LEN);
        Engine {
            write_key: write_key.to_string(),
            opt_out,
            country: if country.is_empty() {
                "US".into()
            } else {
                country.to_ascii_uppercase()
            },
            rng,
            anon: String::new(),
            user: None,
            session: String::new(),
            last_activity: 0.0,
            session_saved: 0.0,
            consent: Consent::default(),
            consent_source: String::new(),
            first_touch: None,
            last_touch: None,
            last_click_ids: None,
            touched_url: String::new(),
            queue: Vec::new(),
            waiting: Vec::new(),
            inflight: Vec::new(),
            seq: 0,
            tab,
            ops: String::new(),
            storage,
            backoff: 0.0,
            shed: 0,
            sent: 0,
            rejected: 0,
            purged: 0,
        }
    }

    // ------------------------------------------------------------ state and storage

    /// Takes back what an earlier page stored. Call for every `sl_*` key, then [`Engine::start`].
    pub fn restore(&mut self, key: &str, value: &str) {
        match key {
            K_ANON if !value.is_empty() => self.anon = value.to_string(),
            K_USER if !value.is_empty() => self.user = Some(value.to_string()),
            K_SESSION => {
                if let Some((id, last)) = value.split_once('.') {
                    self.session = id.to_string();
                    self.last_activity = last.parse::<u64>().unwrap_or(0) as f64;
                    self.session_saved = self.last_activity;
                }
            }
            K_CONSENT => {
                let b = value.as_bytes();
                if b.len() >= 3 {
                    self.consent = Consent {
                        analytics: tri(b[0]),
                        marketing: tri(b[1]),
                        personalization: tri(b[2]),
                    };
                    self.consent_source = value.get(4..).unwrap_or("stored").to_string();
                }
            }
            K_FIRST => self.first_touch = Some(value.to_string()),
            K_LAST => self.last_touch = Some(value.to_string()),
            k if k.starts_with(EVENT_PREFIX) && k.len() > TAB_LEN => {
                // A chunk: one event per line, each line its consent needs then its JSON.
                for (n, line) in value.split('\n').enumerate() {
                    let needs = line
                        .as_bytes()
                        .first()
                        .map_or(ANALYTICS, |c| c.wrapping_sub(b'0'));
                    let json = line.get(1..).unwrap_or_default();
                    if needs <= 3 && json::is_object(json) {
                        let mut key = k.to_string();
                        key.push('#');
                        key.push_str(&decimal(n as u64));
                        self.queue.push(Item {
                            owner: k[k.len() - TAB_LEN..].to_string(),
                            key,
                            json: json.to_string(),
                            needs,
                            stored_in: Some(k.to_string()),
                            pending: false,
                            restored: true,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Finishes the restore: events in storage order, a fresh anonymous id if none was
    /// stored, and nothing kept that the stored consent no longer allows.
    pub fn start(&mut self) {
        // The adapter restores keys in sorted order (time order): no sort needed here.
        if self.anon.is_empty() {
            self.anon = self.rng.uuid_v4();
            self.save(K_ANON, &self.anon.clone());
        }
        self.purge();
    }

    /// Adopts the anonymous id of the collector's first-party cookie.
    pub fn adopt_anonymous_id(&mut self, id: &str) {
        if !id.is_empty() && id != self.anon {
            self.anon = id.to_string();
            self.save(K_ANON, id);
        }
    }

    pub fn anonymous_id(&self) -> &str {
        &self.anon
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    fn granted(&self, v: Option<bool>) -> bool {
        v.unwrap_or(self.opt_out)
    }

    /// Whether the visitor's identifiers and events may be written to storage.
    fn may_store(&self) -> bool {
        self.storage && self.granted(self.consent.analytics)
    }

    fn decided(&self) -> bool {
        self.opt_out || self.consent.analytics.is_some()
    }

    fn op_set(&mut self, key: &str, value: &str) {
        self.ops.push('s');
        self.ops.push('\u{1f}');
        self.ops.push_str(key);
        self.ops.push('\u{1f}');
        self.ops.push_str(value);
        self.ops.push('\u{1e}');
    }

    fn op_remove(&mut self, key: &str) {
        self.ops.push('r');
        self.ops.push('\u{1f}');
        self.ops.push_str(key);
        self.ops.push('\u{1e}');
    }

    /// Writes an identifier or campaign value, when consent allows storage.
    fn save(&mut self, key: &str, value: &str) {
        if self.may_store() {
            self.op_set(key, value);
        }
    }

    /// Storage operations to perform, in order: `s␟key␟value␞` and `r␟key␞`. Events
    /// recorded since the last call are written here, in chunks: the adapter calls this
    /// once per task, so a burst of calls costs a few writes, not one per event.
    pub fn take_ops(&mut self) -> String {
        let mut group: Vec<usize> = Vec::new();
        for idx in 0..self.queue.len() {
            if self.queue[idx].pending {
                group.push(idx);
            }
            let last = idx + 1 == self.queue.len();
            if !group.is_empty() && (group.len() == MAX_BATCH_EVENTS || last) {
                let chunk = self.queue[group[0]].key.clone();
                for &g in &group {
                    let item = &mut self.queue[g];
                    item.pending = false;
                    item.stored_in = Some(chunk.clone());
                }
                self.write_chunk(&chunk);
                group.clear();
            }
        }
        core::mem::take(&mut self.ops)
    }

    /// Writes a chunk with the events still in it, or removes it when none is left.
    fn write_chunk(&mut self, chunk: &str) {
        let mut value = String::new();
        for i in self
            .queue
            .iter()
            .filter(|i| i.stored_in.as_deref() == Some(chunk))
        {
            if !value.is_empty() {
                value.push('\n');
            }
            value.push(char::from(b'0' + i.needs));
            value.push_str(&i.json);
        }
        if value.is_empty() {
            self.op_remove(chunk);
        } else {
            self.op_set(chunk, &value);
        }
    }

    /// Rewrites the chunks that held events just removed from the queue.
    fn rewrite(&mut self, mut chunks: Vec<String>) {
        chunks.dedup();
        let mut done: Vec<String> = Vec::new();
        for c in chunks {
            if !done.contains(&c) {
                self.write_chunk(&c);
                done.push(c);
            }
        }
    }

    /// The adapter could not write chunk `key` (quota): its events live in this tab only.
    pub fn not_persisted(&mut self, key: &str) {
        for i in self
            .queue
            .iter_mut()
            .filter(|i| i.stored_in.as_deref() == Some(key))
        {
            i.stored_in = None;
        }
    }

    // ------------------------------------------------------------ events

    fn touch_session(&mut self, now: f64) {
        if self.session.is_empty() || now - self.last_activity > SESSION_MS {
            self.session = self.rng.uuid_v4();
            self.session_saved = 0.0;
        }
        self.last_activity = now;
        // Written at most once a minute: the 30-minute rule does not need more.
        if now - self.session_saved > 60_000.0 {
            self.session_saved = now;
            let mut v = self.session.clone();
            v.push('.');
            v.push_str(&decimal(now as u64));
            self.save(K_SESSION, &v);
        }
    }

    /// First and last touch from the page URL, kept only under consent (click ids under
    /// marketing consent).
    fn touch_campaign(&mut self, url: &str) {
        // Once per URL: the same landing page does not touch again with every event.
        if url == self.touched_url {
            return;
        }
        self.touched_url = url.to_string();
        let c = campaign::from_url(url);
        if c.is_empty() {
            return;
        }
        let mut utm = String::from("{");
        for (k, v) in &c.utm {
            json::field_str(&mut utm, k, v);
        }
        utm.push('}');
        let mut clicks = String::from("{");
        for (k, v) in &c.click_ids {
            json::field_str(&mut clicks, k, v);
        }
        clicks.push('}');
        let mut touch = String::from("{");
        if !c.utm.is_empty() {
            json::field_raw(&mut touch, "campaign", &utm);
        }
        if !c.click_ids.is_empty() && self.granted(self.consent.marketing) {
            json::field_raw(&mut touch, "clickIds", &clicks);
        }
        touch.push('}');
        if self.first_touch.is_none() {
            self.first_touch = Some(touch.clone());
            self.save(K_FIRST, &touch);
        }
        self.save(K_LAST, &touch);
        self.last_touch = Some(touch);
        self.last_click_ids = (!c.click_ids.is_empty()).then_some(clicks);
    }

    /// The consent snapshot an event carries (Segment's `context.consent` format).
    fn snapshot(&self) -> String {
        let mut s = String::from("{\"categoryPreferences\":{\"necessary\":true");
        for (k, v) in [
            ("analytics", self.consent.analytics),
            ("marketing", self.consent.marketing),
            ("personalization", self.consent.personalization),
        ] {
            s.push_str(",\"");
            s.push_str(k);
            s.push_str("\":");
            s.push_str(if self.granted(v) { "true" } else { "false" });
        }
        s.push('}');
        if !self.consent_source.is_empty() {
            json::field_str(&mut s, "source", &self.consent_source);
        }
        s.push('}');
        s
    }

    /// Builds an event. `kind`: track, page, identify, alias, group, screen; `name`: the
    /// event, page or screen name, group id or previous id; `body`: properties or traits
    /// (JSON object text, raw PII already hashed by [`Engine::redact`]). Returns
    /// `false` when the event was not kept (over 32 KB, or analytics denied).
    pub fn record(
        &mut self,
        kind: &str,
        name: Option<&str>,
        body: Option<&str>,
        at: &Page<'_>,
    ) -> bool {
        self.record_with(kind, name, body, at, false)
    }

    fn record_with(
        &mut self,
        kind: &str,
        name: Option<&str>,
        body: Option<&str>,
        at: &Page<'_>,
        consent_record: bool,
    ) -> bool {
        let Page { ctx, url, now } = *at;
        let analytics = self.granted(self.consent.analytics);
        if !consent_record && self.consent.analytics == Some(false) {
            return false; // denied: not collected at all
        }
        self.touch_session(now);
        // Before a decision the campaign is kept in memory only; events that wait carry it.
        let collect = analytics || !self.decided();
        if collect {
            self.touch_campaign(url);
        }
        let mut e = String::with_capacity(512);
        e.push('{');
        json::field_str(&mut e, "type", kind);
        let id = self.rng.uuid_v4();
        json::field_str(&mut e, "messageId", &id);
        json::field_str(&mut e, "anonymousId", &self.anon);
        if let Some(u) = &self.user {
            json::field_str(&mut e, "userId", u);
        }
        if let Some(n) = name {
            let field = match kind {
                "track" => "event",
                "group" => "groupId",
                "alias" => "previousId",
                _ => "name",
            };
            json::field_str(&mut e, field, n);
        }
        if let Some(b) = body.filter(|b| json::is_object(b)) {
            let field = if matches!(kind, "identify" | "group") {
                "traits"
            } else {
                "properties"
            };
            json::field_raw(&mut e, field, b);
        }
        json::field_str(&mut e, "timestamp", &format_rfc3339(now as i64));
        // The context: the page's facts, then the SDK's own.
        e.push_str(",\"context\":{");
        let facts = ctx.trim();
        if json::is_object(facts) && facts.len() > 2 {
            e.push_str(&facts[1..facts.len() - 1]);
        }
        let mut lib = String::from("{");
        json::field_str(&mut lib, "name", LIBRARY);
        json::field_str(&mut lib, "version", VERSION);
        lib.push('}');
        json::field_raw(&mut e, "library", &lib);
        json::field_str(&mut e, "sessionId", &self.session);
        let mut needs = if consent_record { 0 } else { ANALYTICS };
        if collect {
            if let Some(t) = &self.last_touch {
                if let Some(c) = extract(t, "campaign") {
                    json::field_raw(&mut e, "campaign", c);
                }
            }
            if let Some(t) = &self.first_touch {
                json::field_raw(&mut e, "firstTouch", t);
            }
            if self.granted(self.consent.marketing) {
                if let Some(c) = &self.last_click_ids {
                    json::field_raw(&mut e, "clickIds", c);
                    needs |= MARKETING;
                }
            }
        }
        e.push_str("}}");
        if e.len() > MAX_EVENT_BYTES {
            self.rejected += 1;
            return false;
        }
        if self.decided() || consent_record {
            let stamped = stamp(&e, &self.snapshot());
            self.enqueue(stamped, needs, now);
        } else {
            self.waiting.push((e, needs));
            self.bound();
        }
        true
    }

    fn enqueue(&mut self, json: String, needs: u8, now: f64) {
        self.seq = self.seq.wrapping_add(1);
        let mut key = String::from(EVENT_PREFIX);
        key.push_str(&base36(now as u64, 9));
        key.push_str(&base36(u64::from(self.seq), 4));
        key.push_str(&self.tab);
        let pending = self.may_store();
        self.queue.push(Item {
            key,
            owner: self.tab.clone(),
            json,
            needs,
            stored_in: None,
            pending,
            restored: false,
        });
        self.bound();
    }

    /// Sheds the oldest events past [`MAX_QUEUE`] (never one being sent).
    fn bound(&mut self) {
        while self.queue.len() + self.waiting.len() > MAX_QUEUE {
            if !self.waiting.is_empty() {
                self.waiting.remove(0);
            } else if let Some(i) = self
                .queue
                .iter()
                .position(|i| !self.inflight.contains(&i.key))
            {
                let item = self.queue.remove(i);
                if let Some(c) = item.stored_in {
                    self.rewrite(alloc::vec![c]);
                }
            } else {
                break;
            }
            self.shed += 1;
        }
    }

    pub fn identify(&mut self, user_id: Option<&str>, traits: Option<&str>, at: &Page<'_>) -> bool {
        if let Some(u) = user_id.filter(|u| !u.is_empty()) {
            self.user = Some(u.to_string());
            self.save(K_USER, u);
        }
        self.record("identify", None, traits, at)
    }

    pub fn alias(&mut self, user_id: &str, previous: Option<&str>, at: &Page<'_>) -> bool {
        let previous = previous
            .map(str::to_string)
            .or_else(|| self.user.clone())
            .unwrap_or_else(|| self.anon.clone());
        self.user = Some(user_id.to_string());
        self.save(K_USER, user_id);
        self.record("alias", Some(&previous), None, at)
    }

    /// Soft login: normalizes and hashes an email and/or phone in the page (the shared
    /// tracking-plan code; the raw value is never stored or sent) and sends them as
    /// identify traits. Returns the traits' JSON, or `{"error": ...}`.
    pub fn soft_login(
        &mut self,
        email: Option<&str>,
        phone: Option<&str>,
        at: &Page<'_>,
    ) -> String {
        let mut traits = String::from("{");
        let mut error = None;
        if let Some(raw) = email.filter(|e| !e.trim().is_empty()) {
            match idf::hash_email(raw, EmailVariant::Standard) {
                Ok(h) => json::field_str(&mut traits, "email_sha256", &h),
                Err(e) => error = Some(String::from("email: ") + e.code()),
            }
        }
        if let Some(raw) = phone.filter(|p| !p.trim().is_empty()) {
            let country = self.country.clone();
            match idf::normalize_phone(raw, &country) {
                Ok(n) if !idf::is_blocked_value(&n) => {
                    json::field_str(&mut traits, "phone_sha256", &idf::sha256_hex(&n));
                    if let Ok(meta) = idf::hash_phone(raw, &country, PhoneVariant::Meta) {
                        json::field_str(&mut traits, "phone_sha256_meta", &meta);
                    }
                }
                Ok(_) => error = Some("phone: blocked".into()),
                Err(e) => error = Some(String::from("phone: ") + e.code()),
            }
        }
        traits.push('}');
        if traits.len() == 2 {
            let mut out = String::from("{");
            json::field_str(
                &mut out,
                "error",
                error.as_deref().unwrap_or("nothing to hash"),
            );
            out.push('}');
            return out;
        }
        self.record("identify", None, Some(&traits), at);
        traits
    }

    /// Replaces raw emails and phone numbers in a string by their SHA-256 (shared
    /// tracking-plan code), or `None` when there is none.
    pub fn redact(&self, s: &str) -> Option<String> {
        idf::redact_str(s, Some(&self.country)).map(|(h, _)| h)
    }

    /// A new visitor on this browser: new anonymous and session ids, no user id.
    pub fn reset(&mut self) {
        self.anon = self.rng.uuid_v4();
        self.user = None;
        self.session.clear();
        self.save(K_ANON, &self.anon.clone());
        if self.storage {
            self.op_remove(K_USER);
            self.op_remove(K_SESSION);
        }
    }

    // ------------------------------------------------------------ consent

    /// Applies a consent decision (`-1` leaves a category as it is). Events that waited
    /// for it are stamped and queued, or dropped; queued events the new state no longer
    /// allows are purged; the decision itself is sent as a `Consent Updated` record.
    pub fn set_consent(
        &mut self,
        analytics: i8,
        marketing: i8,
        personalization: i8,
        source: &str,
        at: &Page<'_>,
    ) {
        let pick = |v: i8, old: Option<bool>| if v < 0 { old } else { Some(v > 0) };
        let before = self.may_store();
        let next = Consent {
            analytics: pick(analytics, self.consent.analytics),
            marketing: pick(marketing, self.consent.marketing),
            personalization: pick(personalization, self.consent.personalization),
        };
        if next == self.consent && self.consent.analytics.is_some() {
            return; // a CMP repeating its state on every page is not a new decision
        }
        self.consent = next;
        self.touched_url.clear(); // the landing URL is read again under the new consent
        self.consent_source = source.chars().take(40).collect();
        if self.storage {
            let mut v = String::new();
            v.push(tri_char(self.consent.analytics));
            v.push(tri_char(self.consent.marketing));
            v.push(tri_char(self.consent.personalization));
            v.push('.');
            v.push_str(&self.consent_source);
            self.op_set(K_CONSENT, &v); // the choice itself is necessary, always kept
        }
        if self.may_store() && !before {
            // Storage just became allowed: keep the identifiers from now on.
            let anon = self.anon.clone();
            self.op_set(K_ANON, &anon);
            if let Some(u) = self.user.clone() {
                self.op_set(K_USER, &u);
            }
            for (k, v) in [
                (K_FIRST, self.first_touch.clone()),
                (K_LAST, self.last_touch.clone()),
            ] {
                if let Some(v) = v {
                    self.op_set(k, &v);
                }
            }
            self.session_saved = 0.0;
        }
        if !self.granted(self.consent.analytics) && before {
            for k in [K_ANON, K_USER, K_SESSION, K_FIRST, K_LAST] {
                self.op_remove(k);
            }
        }
        if !self.granted(self.consent.marketing) {
            // Click ids are ad identifiers: gone from memory and storage with marketing.
            self.last_click_ids = None;
            for (k, stored) in [
                (K_FIRST, self.first_touch.take()),
                (K_LAST, self.last_touch.take()),
            ] {
                let kept = stored
                    .as_deref()
                    .and_then(|t| extract(t, "campaign"))
                    .map(|c| {
                        let mut t = String::from("{");
                        json::field_raw(&mut t, "campaign", c);
                        t.push('}');
                        t
                    });
                match &kept {
                    Some(t) => self.save(k, t),
                    None if self.may_store() => self.op_remove(k),
                    None => {}
                }
                if k == K_FIRST {
                    self.first_touch = kept;
                } else {
                    self.last_touch = kept;
                }
            }
        }
        let waiting = core::mem::take(&mut self.waiting);
        if self.granted(self.consent.analytics) {
            let snap = self.snapshot();
            for (e, needs) in waiting {
                let stamped = stamp(&e, &snap);
                self.enqueue(stamped, needs, at.now);
            }
        } else {
            self.purged += waiting.len() as u32;
        }
        self.purge();
        let mut props = String::from("{");
        for (k, v) in [
            ("analytics", self.consent.analytics),
            ("marketing", self.consent.marketing),
            ("personalization", self.consent.personalization),
        ] {
            json::field_raw(
                &mut props,
                k,
                if self.granted(v) { "true" } else { "false" },
            );
        }
        props.push('}');
        self.record_with("track", Some("Consent Updated"), Some(&props), at, true);
    }

    /// Google Consent Mode v2 state (`granted`/`denied`/empty for unknown).
    pub fn set_consent_gcm(
        &mut self,
        analytics_storage: &str,
        ad_storage: &str,
        ad_user_data: &str,
        ad_personalization: &str,
        at: &Page<'_>,
    ) {
        let v = |s: &str| match s {
            "granted" => 1,
            "denied" => 0,
            _ => -1,
        };
        let marketing = match (v(ad_storage), v(ad_user_data)) {
            (-1, -1) => -1,
            (a, b) => i8::from(a == 1 && b != 0 || b == 1 && a != 0),
        };
        self.set_consent(
            v(analytics_storage),
            marketing,
            v(ad_personalization),
            "gcm",
            at,
        );
    }

    /// IAB TCF v2.2 purpose consents (bit `n-1` set: purpose `n` granted). Analytics:
    /// purposes 1 (store/access) and 8 (measure content); marketing: 1, 3, 4 and 7
    /// (ad profile, personalized ads, ad measurement); personalization: 1, 5 and 6.
    pub fn set_consent_tcf(&mut self, purposes: u32, at: &Page<'_>) {
        let p = |n: u32| purposes & (1 << (n - 1)) != 0;
        let b = |x: bool| i8::from(x);
        self.set_consent(
            b(p(1) && p(8)),
            b(p(1) && p(3) && p(4) && p(7)),
            b(p(1) && p(5) && p(6)),
            "tcf",
            at,
        );
    }

    /// `{"analytics":..,"marketing":..,"personalization":..,"decided":..}`.
    pub fn consent_json(&self) -> String {
        let mut s = String::from("{");
        for (k, v) in [
            ("analytics", self.consent.analytics),
            ("marketing", self.consent.marketing),
            ("personalization", self.consent.personalization),
        ] {
            json::field_raw(&mut s, k, if self.granted(v) { "true" } else { "false" });
        }
        json::field_raw(
            &mut s,
            "decided",
            if self.decided() { "true" } else { "false" },
        );
        s.push('}');
        s
    }

    /// Drops queued events the current consent no longer allows (never one in flight).
    fn purge(&mut self) {
        let analytics = self.granted(self.consent.analytics);
        let marketing = self.granted(self.consent.marketing);
        let mut removed = Vec::new();
        self.queue.retain(|i| {
            let allowed =
                (i.needs & ANALYTICS == 0 || analytics) && (i.needs & MARKETING == 0 || marketing);
            if !allowed {
                removed.push((i.key.clone(), i.stored_in.clone()));
            }
            allowed
        });
        let mut chunks = Vec::new();
        for (key, chunk) in removed {
            self.purged += 1;
            self.inflight.retain(|k| *k != key);
            chunks.extend(chunk);
        }
        self.rewrite(chunks);
    }

    // ------------------------------------------------------------ delivery

    /// Events ready to go (consent allowing), none in flight.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Milliseconds until the queue should be sent: 0 when a full batch is ready, the
    /// gathering delay otherwise, `-1` when there is nothing to send.
    pub fn send_delay(&self) -> f64 {
        // Only the head matters (a batch takes at most MAX_BATCH_EVENTS): O(1) per call.
        let mine = self
            .queue
            .iter()
            .filter(|i| i.owner == self.tab)
            .take(MAX_BATCH_EVENTS);
        let (n, bytes) = mine.fold((0, 0), |(n, b), i| (n + 1, b + i.json.len()));
        if n == 0 || !self.inflight.is_empty() {
            return -1.0;
        }
        if n >= MAX_BATCH_EVENTS || bytes >= MAX_BATCH_BYTES / 2 {
            0.0
        } else {
            FLUSH_DELAY_MS
        }
    }

    /// This tab's id (it holds the Web Lock `sightline-tab-<id>` while it lives).
    pub fn tab(&self) -> &str {
        &self.tab
    }

    /// Tabs whose stored events this tab restored, newline-separated: the adapter adopts
    /// those whose tab is gone (by taking their lock), and reports them with
    /// [`Engine::adopt_tab`].
    pub fn foreign_tabs(&self) -> String {
        let mut tabs: Vec<&str> = Vec::new();
        for i in &self.queue {
            if i.owner != self.tab && !tabs.contains(&i.owner.as_str()) {
                tabs.push(&i.owner);
            }
        }
        let mut out = String::new();
        for t in tabs {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(t);
        }
        out
    }

    /// This tab now sends the events of `tab` (a closed tab whose lock it took).
    pub fn adopt_tab(&mut self, tab: &str) {
        let own = self.tab.clone();
        for i in self.queue.iter_mut().filter(|i| i.owner == tab) {
            i.owner = own.clone();
        }
    }

    /// Whether [`Engine::next_batch`] needs the stored keys: only events read back from
    /// storage can have been sent by another tab (a live tab's own events are its alone).
    pub fn needs_present(&self) -> bool {
        self.queue.iter().any(|i| i.restored && i.owner == self.tab)
    }

    /// Another live tab owns these restored events and will send them: this tab lets go
    /// of them (storage keeps them for whichever tab outlives the owner).
    pub fn forget_tab(&mut self, tab: &str) {
        self.queue.retain(|i| i.owner != tab);
    }

    /// Builds the next batch's body, at most `max_bytes` long, and marks its events in
    /// flight. Only this tab's own (and adopted) events go: another live tab sends its
    /// own. `present`: the event keys now in storage (read under the cross-tab lock); an
    /// event that was stored and is gone was sent by another tab.
    pub fn next_batch(
        &mut self,
        now: f64,
        max_bytes: usize,
        present: Option<&str>,
    ) -> Option<String> {
        if !self.inflight.is_empty() {
            return None;
        }
        if let Some(p) = present {
            // The adapter lists the keys sorted: a binary search per restored event.
            let keys: Vec<&str> = p.split('\n').collect();
            self.queue.retain(|i| match (&i.stored_in, i.restored) {
                (Some(c), true) => keys.binary_search(&c.as_str()).is_ok(),
                _ => true,
            });
        }
        let mut body = String::from("{\"batch\":[");
        let tail_len = 120 + self.write_key.len();
        for i in self.queue.iter().filter(|i| i.owner == self.tab) {
            if self.inflight.len() >= MAX_BATCH_EVENTS
                || body.len() + i.json.len() + tail_len > max_bytes
            {
                break;
            }
            if !self.inflight.is_empty() {
                body.push(',');
            }
            body.push_str(&i.json);
            self.inflight.push(i.key.clone());
        }
        if self.inflight.is_empty() {
            return None;
        }
        body.push(']');
        json::field_str(&mut body, "sentAt", &format_rfc3339(now as i64));
        json::field_str(&mut body, "writeKey", &self.write_key);
        body.push('}');
        Some(body)
    }

    /// What the collector answered for the batch in flight: `status` 0 for a network
    /// failure, `retry_after` in seconds (0 if none). Returns the delay before sending
    /// again: `-1` to go on now, a backoff in ms to retry the same events (same
    /// messageIds, so the collector stores each once), `-2` when the batch was refused
    /// (a 4xx other than 429: retrying cannot help; the events are dropped and counted).
    pub fn done(&mut self, status: u16, retry_after: f64) -> f64 {
        let keys = core::mem::take(&mut self.inflight);
        let retry = status == 0 || status == 429 || status >= 500;
        if retry {
            self.backoff = (self.backoff * 2.0).clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
            let jittered = self.backoff * (0.9 + 0.2 * self.rng.unit());
            return jittered.max(retry_after * 1000.0);
        }
        self.backoff = 0.0;
        let n = self.remove(&keys);
        if (200..300).contains(&status) {
            self.sent += n;
            -1.0
        } else {
            self.rejected += n;
            -2.0
        }
    }

    fn remove(&mut self, keys: &[String]) -> u32 {
        let mut n = 0;
        let mut gone = Vec::new();
        // `keys` were taken in queue order: one merge pass finds them (a lookup per event
        // would make a 1,000-event queue quadratic).
        let mut next = 0;
        self.queue.retain(|i| {
            let hit = if keys.get(next) == Some(&i.key) {
                next += 1;
                true
            } else {
                keys[next.min(keys.len())..].contains(&i.key)
            };
            if hit {
                n += 1;
                if let Some(c) = &i.stored_in {
                    gone.push(c.clone());
                }
            }
            !hit
        });
        self.rewrite(gone);
        n
    }

    /// The page is going away: a last batch of what is not in flight, within the 64 KB
    /// budget of requests that outlive the page. Its events leave this page's queue but
    /// stay in storage: nobody learns whether a request made at unload arrived, so the
    /// next page sends them again and the collector answers `duplicate` for those that
    /// did (at least once, never lost).
    pub fn unload_batch(&mut self, now: f64) -> Option<String> {
        let inflight = core::mem::take(&mut self.inflight);
        let saved: Vec<Item> = {
            let (busy, free): (Vec<Item>, Vec<Item>) = core::mem::take(&mut self.queue)
                .into_iter()
                .partition(|i| inflight.contains(&i.key));
            self.queue = free;
            busy
        };
        let body = self.next_batch(now, UNLOAD_BYTES, None);
        let handed = core::mem::take(&mut self.inflight);
        self.queue.retain(|i| !handed.contains(&i.key));
        let mut rest = core::mem::take(&mut self.queue);
        self.queue = saved;
        self.queue.append(&mut rest);
        self.inflight = inflight;
        body
    }

    /// Counters for the page: `{"queued","waiting","sent","shed","rejected","purged"}`.
    pub fn stats_json(&self) -> String {
        let mut s = String::from("{");
        for (k, v) in [
            ("queued", self.queue.len() as u32),
            ("waiting", self.waiting.len() as u32),
            ("sent", self.sent),
            ("shed", self.shed),
            ("rejected", self.rejected),
            ("purged", self.purged),
        ] {
            json::field_raw(&mut s, k, &decimal(u64::from(v)));
        }
        s.push('}');
        s
    }
}

/// Puts the consent snapshot into an event's context (built with the context last).
fn stamp(event: &str, snapshot: &str) -> String {
    let mut s = String::with_capacity(event.len() + snapshot.len() + 12);
    s.push_str(&event[..event.len() - 2]);
    s.push_str(",\"consent\":");
    s.push_str(snapshot);
    s.push_str("}}");
    s
}

/// The raw JSON value of `"key":` in an object this engine wrote (values are objects).
fn extract<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
    let needle = String::from("\"") + key + "\":{";
    let start = obj.find(&needle)? + needle.len() - 1;
    let end = obj[start..].find('}')? + start + 1;
    Some(&obj[start..end])
}
