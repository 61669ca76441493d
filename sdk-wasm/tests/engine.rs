//! The SDK engine's decisions, natively (`cargo test`) and compiled to wasm in headless
//! Chromium (`cargo test --target wasm32-unknown-unknown`): consent gating, the persisted
//! queue, batches, retries, cross-tab hand-off, soft login and campaign capture.

use sdk_wasm::engine::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracking_plan::consent::{Choice, Policy};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Each test runs natively and in the browser.
macro_rules! tests {
    ($($(#[$m:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$m])*
        #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
        #[cfg_attr(not(target_arch = "wasm32"), test)]
        fn $name() $body
    )*};
}

/// xorshift64*: deterministic ids for tests.
struct Seeded(u64);
impl Random for Seeded {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
    }
}

static mut SEED: u64 = 0x9e37_79b9_7f4a_7c15;

const T0: u64 = 1_795_472_345_000;
const URL0: &str = "https://shop.example/";

fn sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An engine before its restore (call start() after restoring).
fn make(opt_out: bool) -> Engine<Seeded> {
    // SAFETY: tests only read and bump it; a race would only repeat a seed.
    let seed = unsafe {
        SEED = SEED.wrapping_mul(6364136223846793005).wrapping_add(1);
        SEED
    };
    let mut e = Engine::new(
        Options {
            write_key: "wk".into(),
            policy: if opt_out {
                Policy::OptOut
            } else {
                Policy::OptIn
            },
            storage: true,
            gpc: false,
            country: "DE".into(),
            links: Links {
                outbound: true,
                downloads: true,
            },
        },
        Seeded(seed | 1),
    );
    at(&mut e, URL0);
    e
}

fn engine(opt_out: bool) -> Engine<Seeded> {
    let mut e = make(opt_out);
    e.start();
    e
}

fn facts(url: &str, path: &str) -> Facts {
    Facts {
        path: path.into(),
        url: url.into(),
        locale: Some("en-GB".into()),
        user_agent: "UA/1.0".into(),
        ..Facts::default()
    }
}

fn at(e: &mut Engine<Seeded>, url: &str) {
    e.set_page(&facts(url, "/"));
}

fn choice(a: Option<bool>, m: Option<bool>, p: Option<bool>) -> Choice {
    Choice {
        analytics: a,
        marketing: m,
        personalization: p,
    }
}

/// A batch body's events, each with the batch-level context merged under its own (as
/// the collector stores them).
fn events_of(body: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(body).expect("a batch is JSON");
    assert_eq!(v["writeKey"], "wk");
    let ctx = v.get("context").cloned().unwrap_or(json!({}));
    v["batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut m = m.clone();
            let mut c = ctx.clone();
            if let Some(own) = m.get("context").and_then(Value::as_object) {
                for (k, v) in own {
                    c[k] = v.clone();
                }
            }
            m["context"] = c;
            m
        })
        .collect()
}

/// The next batch's events (left in flight).
fn batch(e: &mut Engine<Seeded>, present: Option<&[String]>) -> Vec<Value> {
    events_of(&e.batch(T0, MAX_BATCH_BYTES, present).expect("a batch"))
}

/// Every queued event, batch after batch, each acknowledged.
fn all(e: &mut Engine<Seeded>) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(b) = e.batch(T0, MAX_BATCH_BYTES, None) {
        out.extend(events_of(&b));
        assert_eq!(e.done(200, 0), Next::Now);
    }
    out
}

fn chunks(ops: &[Op]) -> Vec<String> {
    ops.iter()
        .filter_map(|o| match o {
            Op::Set(k, v) if k.starts_with(EVENT_PREFIX) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

fn event_lines(chunk: &str) -> usize {
    chunk.split('\n').filter(|l| !l.starts_with('c')).count()
}

/// What a reload finds in storage: the keys written, in sorted order.
fn storage(ops: &[Op]) -> Vec<(String, String)> {
    let mut m = std::collections::BTreeMap::new();
    for o in ops {
        match o {
            Op::Set(k, v) => {
                m.insert(k.clone(), v.clone());
            }
            Op::Remove(k) => {
                m.remove(k);
            }
        }
    }
    m.into_iter().collect()
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

tests! {
    /// The inspector's lookup hashes as a soft login does: the shared vectors, and a
    /// reason (not a digest) for what cannot be an identifier.
    fn lookup_hashes_follow_the_soft_login_rules() {
        assert_eq!(
            lookup_hash("email", " John_Smith@Gmail.com ", "US"),
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
        );
        assert_eq!(lookup_hash("phone", "+33 6 12 34 56 78", "US"), sha256("+33612345678"));
        assert_eq!(lookup_hash("phone", "(650) 555-0142", "US"), sha256("+16505550142"));
        for bad in [lookup_hash("email", "not an email", "US"), lookup_hash("phone", "12", "US")] {
            assert!(bad.len() < 64 && !bad.is_empty(), "{bad}");
        }
    }

fn opt_in_writes_and_sends_nothing_before_consent() {
    let mut e = engine(false);
    assert_eq!(e.take_ops(), vec![], "not even the anonymous id");
    assert!(e.record(Kind::Track, Some("Viewed"), Some(r#"{"a":1}"#), T0));
    assert!(e.record(Kind::Page, None, None, T0 + 1));
    assert_eq!(e.take_ops(), vec![]);
    assert_eq!(e.batch(T0, 500_000, None), None);
    assert_eq!(e.delay(), None);

    // Consent: the waiting events are stamped and queued, with the decision's record.
    e.set_consent(choice(Some(true), Some(false), Some(true)), "banner", T0 + 2);
    let writes = e.take_ops();
    assert!(writes.iter().any(|o| matches!(o, Op::Set(k, v) if k == K_CONSENT && v.starts_with("101"))));
    assert!(writes.iter().any(|o| matches!(o, Op::Set(k, _) if k == K_ANON)));
    // The three events are written together: one chunk, one line each.
    let c = chunks(&writes);
    assert_eq!(c.len(), 1);
    assert_eq!(event_lines(&c[0]), 3);
    let events = batch(&mut e, None);
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["event"], "Viewed");
    assert_eq!(events[0]["properties"]["a"], 1);
    let consent = &events[0]["context"]["consent"];
    assert_eq!(consent["categoryPreferences"]["analytics"], true);
    assert_eq!(consent["categoryPreferences"]["marketing"], false);
    assert_eq!(consent["source"], "banner");
    assert_eq!(events[2]["event"], "Consent Updated");
    assert_eq!(events[0]["context"]["library"]["name"], "sightline.js");
    assert_eq!(events[0]["context"]["locale"], "en-GB");
    assert_eq!(events[0]["context"]["sessionId"].as_str().unwrap().len(), 36);
    assert_eq!(events[0]["messageId"].as_str().unwrap().as_bytes()[14], b'4', "a UUID v4");
}

fn a_denial_purges_waiting_events_and_only_the_record_leaves() {
    let mut e = engine(false);
    e.record(Kind::Track, Some("Viewed"), None, T0);
    e.set_consent(choice(Some(false), Some(false), Some(false)), "banner", T0 + 1);
    let writes = e.take_ops();
    assert!(writes.iter().all(|o| matches!(o, Op::Set(k, _) if k == K_CONSENT)), "{writes:?}");
    let events = batch(&mut e, None);
    assert_eq!(names(&events), ["Consent Updated"]);
    assert_eq!(events[0]["properties"]["analytics"], false);
    assert!(!e.record(Kind::Track, Some("Later"), None, T0 + 2), "not collected");
    assert_eq!(e.stats().purged, 1);
}

fn revoking_marketing_purges_events_that_carry_click_ids() {
    let mut e = engine(false);
    e.set_consent(choice(Some(true), Some(true), Some(true)), "banner", T0);
    assert_eq!(e.done(200, 0), Next::Now, "nothing in flight: a no-op");
    at(&mut e, "https://shop.example/?utm_source=News&utm_medium=Email&gclid=G1");
    e.record(Kind::Page, None, None, T0 + 1);
    at(&mut e, URL0);
    e.record(Kind::Track, Some("Plain"), None, T0 + 2);
    e.take_ops();
    e.set_consent(choice(None, Some(false), None), "banner", T0 + 3);
    let writes = e.take_ops();
    // Both events carried the click id of the last touch: their chunk is rewritten
    // without them (only the consent records stay).
    let c = chunks(&writes);
    assert!(c.iter().all(|v| !v.contains("gclid") && !v.contains("Plain")), "{c:?}");
    assert_eq!(c.iter().map(|v| event_lines(v)).sum::<usize>(), 2, "the two consent records");
    assert!(writes.iter().all(|o| !matches!(o, Op::Set(k, v) if (k == K_LAST || k == K_FIRST) && v.contains("G1"))));
    assert_eq!(names(&all(&mut e)), ["Consent Updated", "Consent Updated"]);
}

fn the_shared_context_travels_once_per_batch_and_is_stored_once_per_chunk() {
    let mut e = engine(true);
    e.set_page(&facts(URL0, "/"));
    e.record(Kind::Track, Some("A"), Some("{}"), T0);
    e.record(Kind::Track, Some("B"), Some("{}"), T0);
    e.set_page(&facts("https://shop.example/next", "/next"));
    e.record(Kind::Page, None, Some("{}"), T0 + 1);
    let chunk = chunks(&e.take_ops()).remove(0);
    let kinds: Vec<char> = chunk.split('\n').map(|l| l.chars().next().unwrap()).collect();
    assert_eq!(kinds, ['c', '1', '1', 'c', '1'], "{chunk}");
    let first: Value = serde_json::from_str(&e.batch(T0, 500_000, None).unwrap()).unwrap();
    assert_eq!(names(first["batch"].as_array().unwrap()), ["A", "B"], "one page per batch");
    assert_eq!(first["context"]["page"]["path"], "/");
    assert_eq!(first["context"]["library"]["name"], "sightline.js");
    assert_eq!(first["context"]["sessionId"].as_str().unwrap().len(), 36);
    assert_eq!(first["context"]["consent"]["categoryPreferences"]["analytics"], true);
    assert!(first["batch"][0].get("context").is_none(), "not repeated in each event");
    e.done(200, 0);
    // A reload restores the shared context with its events.
    let tab = e.tab.to_string();
    let mut r = make(true);
    r.restore(&format!("sl_e:x{tab}"), &chunk);
    r.start();
    r.adopt_tab(&tab);
    let rest: Value = serde_json::from_str(&r.batch(T0, 500_000, None).unwrap()).unwrap();
    assert_eq!(names(rest["batch"].as_array().unwrap()), ["A", "B"]);
    assert_eq!(rest["context"]["page"]["path"], "/");
    r.done(200, 0);
    let next: Value = serde_json::from_str(&r.batch(T0, 500_000, None).unwrap()).unwrap();
    assert_eq!(next["context"]["page"]["path"], "/next");
    // Lines stored without a context line (each event whole) are sent as they are.
    let mut old = make(true);
    old.restore(&format!("sl_e:y{tab}"), r#"1{"type":"track","event":"Old","context":{"page":{"path":"/old"}}}"#);
    old.start();
    old.adopt_tab(&tab);
    let legacy: Value = serde_json::from_str(&old.batch(T0, 500_000, None).unwrap()).unwrap();
    assert!(legacy.get("context").is_none());
    assert_eq!(legacy["batch"][0]["context"]["page"]["path"], "/old");
}

fn campaign_first_and_last_touch() {
    let mut e = engine(true);
    at(&mut e, "https://s.example/?utm_source=Google&utm_medium=CPC&utm_campaign=Winter+Sale%21&gclid=abc#x");
    e.record(Kind::Page, None, None, T0);
    at(&mut e, "https://s.example/?utm_source=news");
    e.record(Kind::Page, None, None, T0 + 1);
    let events = all(&mut e);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["context"]["campaign"], json!({"source": "google", "medium": "cpc", "name": "Winter Sale!"}));
    assert_eq!(events[0]["context"]["clickIds"], json!({"gclid": "abc"}));
    assert_eq!(events[1]["context"]["campaign"]["source"], "news");
    assert_eq!(events[1]["context"]["firstTouch"]["campaign"]["medium"], "cpc");
    assert!(events[1]["context"].get("clickIds").is_none(), "the last touch had none");
    // A reload keeps the first touch.
    let mut r = make(true);
    for (k, v) in storage(&e.take_ops()) {
        r.restore(&k, &v);
    }
    r.start();
    r.record(Kind::Track, Some("Later"), None, T0 + 2);
    let later = all(&mut r);
    assert_eq!(later[0]["context"]["firstTouch"]["campaign"]["source"], "google");
    assert_eq!(later[0]["context"]["campaign"]["source"], "news");
}

fn a_landing_address_cut_by_url_syntax_is_not_captured_in_part() {
    let mut e = engine(true);
    at(&mut e, "https://s.example/?utm_content=jo.smith&#64;x.io&utm_source=news&gclid=jo.smith&#x40;x.io");
    e.record(Kind::Page, None, None, T0);
    let events = all(&mut e);
    let wire = events[0].to_string();
    assert!(!wire.contains("jo.smith"), "{wire}");
    assert_eq!(events[0]["context"]["campaign"]["source"], "news");
    // As the browser splits it: `location.search` ends at the reference's `#`.
    let mut e = engine(true);
    e.set_page(&Facts {
        url: "https://s.example/p?utm_content=jo.smith&#64;x.io".into(),
        path: "/p".into(),
        search: "?utm_content=jo.smith&".into(),
        ..Facts::default()
    });
    e.page(None, None, None, T0);
    let wire = all(&mut e)[0].to_string();
    assert!(!wire.contains("jo.smith"), "{wire}");
}

fn retries_keep_message_ids_back_off_and_honour_retry_after() {
    let mut e = engine(true);
    e.record(Kind::Track, Some("A"), None, T0);
    e.take_ops(); // stored, as the adapter does after every call
    let first = batch(&mut e, None);
    let Next::Retry(d1) = e.done(503, 0) else { panic!("a retry") };
    assert!((450.0..=550.0).contains(&d1), "{d1}");
    let second = batch(&mut e, None);
    assert_eq!(first[0]["messageId"], second[0]["messageId"]);
    let Next::Retry(d2) = e.done(0, 0) else { panic!("a retry") };
    assert!((900.0..=1100.0).contains(&d2), "{d2}");
    batch(&mut e, None);
    assert_eq!(e.done(429, 30), Next::Retry(30_000.0), "Retry-After wins when longer");
    batch(&mut e, None);
    assert_eq!(e.done(200, 0), Next::Now);
    assert_eq!(e.batch(T0, 500_000, None), None);
    assert!(e.take_ops().iter().any(|o| matches!(o, Op::Remove(k) if k.starts_with(EVENT_PREFIX))));
    // A refused batch (400) is dropped, not retried.
    e.record(Kind::Track, Some("B"), None, T0);
    batch(&mut e, None);
    assert_eq!(e.done(400, 0), Next::Refused);
    assert_eq!(e.stats().queued, 0);
    assert_eq!(e.stats().rejected, 1);
}

fn a_reload_restores_the_queue_in_order() {
    let mut a = engine(true);
    for i in 0..5 {
        a.record(Kind::Track, Some(&format!("E{i}")), None, T0 + i);
    }
    let mut fresh = make(true);
    for (k, v) in storage(&a.take_ops()) {
        fresh.restore(&k, &v);
    }
    fresh.start();
    assert_eq!(fresh.anon(), a.anon(), "the visitor is the same");
    // The events belong to the page before the reload: sent once that tab is known gone.
    assert_eq!(fresh.batch(T0, 500_000, None), None);
    assert_eq!(fresh.foreign_tabs(), vec![a.tab.clone()]);
    fresh.adopt_tab(&a.tab);
    assert_eq!(names(&batch(&mut fresh, None)), ["E0", "E1", "E2", "E3", "E4"]);
}

fn an_event_another_tab_sent_is_not_sent_again() {
    // Tab A stored an event and went away.
    let mut a = engine(true);
    a.record(Kind::Track, Some("Left Behind"), None, T0);
    let (chunk, value) = storage(&a.take_ops()).into_iter().find(|(k, _)| k.starts_with(EVENT_PREFIX)).unwrap();
    // Tabs B and C both restore it; C adopts it (it took A's lock) and sends it.
    let mut b = engine(true);
    b.restore(&chunk, &value);
    assert_eq!(b.batch(T0, 500_000, None), None, "owned by tab A until adopted");
    assert_eq!(b.foreign_tabs(), vec![a.tab.clone()]);
    b.adopt_tab(&a.tab);
    // Under the send lock the chunk is gone: another tab sent it; B does not.
    assert_eq!(b.batch(T0, 500_000, Some(&["sl_e:other".to_string()])), None);
    assert_eq!(b.stats().queued, 0);
    // With the chunk still there, C sends it.
    let mut c = engine(true);
    c.restore(&chunk, &value);
    c.adopt_tab(&a.tab);
    assert!(c.needs_present());
    assert_eq!(batch(&mut c, Some(std::slice::from_ref(&chunk)))[0]["event"], "Left Behind");
    // A tab that only has its own events needs no storage listing.
    let mut d = engine(true);
    d.record(Kind::Track, Some("Mine"), None, T0);
    d.take_ops();
    assert!(!d.needs_present());
    assert!(d.batch(T0, 500_000, None).is_some());
    // Another live tab's events are let go of here (its lock is held), not sent.
    let mut e = engine(true);
    e.restore(&chunk, &value);
    e.forget_tab(&a.tab);
    assert_eq!(e.stats().queued, 0);
}

fn the_queue_is_bounded_and_counts_what_it_sheds() {
    let mut e = engine(true);
    for i in 0..MAX_QUEUE as u64 + 25 {
        e.record(Kind::Track, Some("E"), Some(&format!(r#"{{"i":{i}}}"#)), T0 + i);
    }
    assert_eq!(e.stats().queued, MAX_QUEUE);
    assert_eq!(e.stats().shed, 25);
    assert_eq!(batch(&mut e, None)[0]["properties"]["i"], 25, "the oldest went first");
    // Before an opt-in decision, waiting events count against the same bound.
    let mut w = engine(false);
    for i in 0..MAX_QUEUE as u64 + 3 {
        w.record(Kind::Track, Some("W"), Some(&format!(r#"{{"i":{i}}}"#)), T0 + i);
    }
    assert_eq!(w.stats().waiting, MAX_QUEUE);
    assert_eq!(w.stats().shed, 3);
}

fn batches_respect_count_and_size_and_the_unload_budget() {
    let mut e = engine(true);
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(20_000));
    for i in 0..150 {
        e.record(Kind::Track, Some("E"), Some(if i < 10 { &big } else { "{}" }), T0);
    }
    assert_eq!(e.delay(), Some(0), "a full batch goes at once");
    let body = e.unload_batch(T0).unwrap();
    assert!(body.len() <= UNLOAD_BYTES, "{}", body.len());
    assert_eq!(events_of(&body).len(), 2);
    assert_eq!(batch(&mut e, None).len(), 100);
    let huge = format!(r#"{{"blob":"{}"}}"#, "y".repeat(40_000));
    assert!(!e.record(Kind::Track, Some("Huge"), Some(&huge), T0), "over 32 KB");
    assert!(!e.record(Kind::Track, Some("Broken"), Some(r#"{"a":"#), T0), "not JSON: refused, no panic");
}

fn sizes_are_utf8_bytes_so_non_latin_batches_stay_under_the_limits() {
    let mut e = engine(true);
    let cjk = format!(r#"{{"text":"{}"}}"#, "数据".repeat(4500)); // 9,000 units, 27,000 bytes
    for _ in 0..40 {
        assert!(e.record(Kind::Track, Some("Note"), Some(&cjk), T0));
    }
    let mut batches = 0;
    while let Some(body) = e.batch(T0, MAX_BATCH_BYTES, None) {
        batches += 1;
        assert!(body.len() <= MAX_BATCH_BYTES, "{} bytes", body.len());
        e.done(200, 0);
    }
    assert!(batches >= 3, "{batches} batches");
    // One event over 32 KB of UTF-8 (but under 32 K UTF-16 units) is refused in the page.
    let over = format!(r#"{{"text":"{}"}}"#, "数".repeat(12_000));
    assert!(!e.record(Kind::Track, Some("Note"), Some(&over), T0));
}

fn a_storage_write_refused_by_the_quota_keeps_the_events_in_memory_and_is_counted() {
    let mut e = engine(true);
    e.record(Kind::Track, Some("E"), Some("{}"), T0);
    let ops = e.take_ops();
    let chunk = ops.iter().find_map(|o| match o {
        Op::Set(k, _) if k.starts_with(EVENT_PREFIX) => Some(k.clone()),
        _ => None,
    });
    e.not_persisted(&chunk.expect("a chunk"));
    assert_eq!(e.stats().not_persisted, 1);
    assert_eq!(batch(&mut e, None).len(), 1, "still sent");
}

fn soft_login_hashes_with_the_shared_vectors_and_raw_pii_never_leaves() {
    let mut e = engine(true);
    let r = e.soft_login(" John_Smith@Gmail.com ", "+1 (650) 555-1212", T0);
    assert_eq!(r.email_sha256.as_deref(), Some("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"));
    assert_eq!(r.phone_sha256.as_deref(), Some("1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"));
    assert_eq!(r.phone_sha256_meta.as_deref(), Some("e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"));
    // No dots to drop: Google's digest is the standard one, not sent twice.
    assert_eq!(r.email_sha256_google, None);
    // Raw values in properties and in the page URL are hashed too, with the collector's rule.
    at(&mut e, "https://shop.example/?e=bob@example.org");
    e.record(Kind::Track, Some("Contact"), Some(r#"{"note":"mail me: ann@example.com","tel":"+44 20 7946 0958","year":"2026"}"#), T0);
    let events = all(&mut e);
    assert_eq!(events[0]["type"], "identify");
    assert_eq!(events[0]["traits"]["email_sha256"].as_str(), r.email_sha256.as_deref());
    assert_eq!(events[1]["properties"]["note"], format!("mail me: {}", sha256("ann@example.com")));
    assert_eq!(events[1]["properties"]["tel"], sha256("+442079460958"));
    assert_eq!(events[1]["properties"]["year"], "2026", "not PII: kept");
    assert!(!events[1]["context"]["page"]["url"].as_str().unwrap().contains("bob@"));
    // Keys, named fields in any format, and numbers in a phone field: the collector's walker.
    e.record(Kind::Track, Some("Contact"), Some(r#"{"carol@example.net":1,"phone":"030.1234.567","mobile":3012345678,"email":"dave%40example.net"}"#), T0);
    let named = all(&mut e).pop().unwrap()["properties"].clone();
    let mut keys: Vec<&String> = named.as_object().unwrap().keys().collect();
    keys.sort();
    let mut want = ["email".to_string(), "mobile".into(), "phone".into(), sha256("carol@example.net")];
    want.sort();
    assert_eq!(keys, want.iter().collect::<Vec<_>>());
    assert_eq!(named["phone"], sha256("+49301234567"));
    assert_eq!(named["mobile"], sha256("+493012345678"));
    assert_eq!(named["email"], sha256("dave@example.net"));
    let wire = serde_json::to_string(&events).unwrap();
    for raw in ["John_Smith", "555-1212", "ann@example.com", "7946", "bob@example.org"] {
        assert!(!wire.contains(raw), "no raw {raw} on the wire");
    }
    // A national number takes the configured country (DE).
    assert_eq!(e.soft_login("", "030 1234567", T0).phone_sha256, Some(sha256("+49301234567")));
    // The same number with its trunk in brackets, or typed in Arabic-Indic or Persian
    // digits, is the same person.
    for typed in ["+49 (0)30 1234567", "+٤٩ ٣٠ ١٢٣٤٥٦٧", "۰۳۰ ۱۲۳۴۵۶۷"] {
        assert_eq!(e.soft_login("", typed, T0).phone_sha256, Some(sha256("+49301234567")), "{typed}");
    }
    assert_eq!(e.soft_login("test@test.com", "", T0).error.as_deref(), Some("email: blocked"));
    assert_eq!(e.soft_login("", "", T0).error.as_deref(), Some("nothing to hash"));
    // Google drops a gmail address's dots: its own digest, sent beside the standard one.
    let g = e.soft_login(" J.Smith@googlemail.com", "", T0);
    assert_eq!(g.email_sha256, Some(sha256("j.smith@googlemail.com")));
    assert_eq!(g.email_sha256_google, Some(sha256("jsmith@googlemail.com")));
    let sent = all(&mut e).pop().unwrap();
    assert_eq!(sent["traits"]["email_sha256_google"].as_str(), g.email_sha256_google.as_deref());
    assert!(!sent.to_string().contains("smith@"), "no raw address");
}

fn identify_alias_and_reset() {
    let mut e = engine(true);
    let anon = e.anon().to_string();
    e.identify(Some("u1"), Some(r#"{"plan":"pro"}"#), T0);
    e.alias("u2", None, T0);
    let events = batch(&mut e, None);
    assert_eq!(events[0]["userId"], "u1");
    assert_eq!(events[0]["traits"]["plan"], "pro");
    assert_eq!((&events[1]["userId"], &events[1]["previousId"]), (&json!("u2"), &json!("u1")));
    e.done(200, 0);
    // A user id that is an email is kept and sent as its digest, like any raw email.
    e.identify(Some("Ann@Example.com"), None, T0);
    assert_eq!(e.user(), Some(sha256("ann@example.com").as_str()));
    assert!(e.take_ops().iter().all(|o| !format!("{o:?}").contains("Ann@Example.com")));
    assert_eq!(all(&mut e)[0]["userId"], sha256("ann@example.com"));
    e.reset();
    assert_ne!(e.anon(), anon);
    assert_eq!(e.user(), None);
}

fn google_consent_mode_and_tcf_map_to_categories() {
    let mut e = engine(false);
    let gcm = |update, a, ads, data, p| GcmCommand {
        update,
        analytics_storage: a,
        ad_storage: ads,
        ad_user_data: data,
        ad_personalization: p,
    };
    // A default alone is no choice; the update is, with the defaults filling in.
    assert_eq!(gcm_choice([gcm(false, Some("denied"), Some("denied"), Some("denied"), Some("denied"))]), None);
    let c = gcm_choice([
        gcm(false, Some("denied"), Some("denied"), Some("denied"), Some("granted")),
        gcm(true, Some("granted"), Some("granted"), None, None),
    ])
    .unwrap();
    e.consent_gcm(c, T0);
    let st = e.consent();
    assert_eq!((st.analytics, st.marketing, st.personalization), (true, false, true));
    assert_eq!(batch(&mut e, None)[0]["context"]["consent"]["source"], "gcm");
    e.done(200, 0);
    // The same state announced again is not a new decision: no second record.
    e.consent_gcm(c, T0 + 1);
    assert_eq!(e.batch(T0, 500_000, None), None);

    let mut t = engine(false);
    let with = |ps: &'static [u8]| move |p: u8| ps.contains(&p);
    t.consent_tcf(with(&[1, 8, 5, 6]), T0);
    let st = t.consent();
    assert_eq!((st.analytics, st.marketing, st.personalization), (true, false, true));
    t.consent_tcf(with(&[1, 3, 4, 7, 8]), T0 + 1);
    assert!(t.consent().marketing);
    t.consent_tcf(with(&[3, 4, 7, 8]), T0 + 2);
    assert!(!t.consent().analytics, "no storage consent (purpose 1): nothing");
    assert!(tcf_ready("useractioncomplete") && !tcf_ready("cmpuishown"));
}

/// A decision's record carries what the adapter read of how it was made (the TCF's TC
/// string, the manager's id and version, the site's notice version): raw PII hashed,
/// nothing over 16 KB; a decision that changes nothing records nothing and leaves no
/// evidence for the next one.
fn a_consent_record_carries_its_evidence() {
    let mut e = engine(false);
    e.consent_evidence(vec![
        ("tcString", "CQJ0GUAQJ0GUAAGABCENBGFgAP_AAH_AAAqIKRNV".into()),
        ("cmpId", "10".into()),
        ("version", "v2 jo@x.io".into()),
        ("uspString", "1YNN".repeat(5000)),
    ]);
    e.consent_tcf(|p| [1, 8].contains(&p), T0);
    let r = &all(&mut e)[0];
    assert_eq!(r["event"], "Consent Updated");
    let p = &r["properties"];
    assert_eq!(p["tcString"], "CQJ0GUAQJ0GUAAGABCENBGFgAP_AAH_AAAqIKRNV");
    assert_eq!(p["cmpId"], "10");
    assert!(p["version"].as_str().unwrap().starts_with("v2 ") && !p.to_string().contains("jo@x.io"));
    assert!(p.get("uspString").is_none(), "{p}");
    assert_eq!(p["analytics"], true);
    // The same state again: no record, and its evidence is not kept for the next.
    e.consent_evidence(vec![("version", "v3".into())]);
    e.consent_tcf(|p| [1, 8].contains(&p), T0 + 1);
    assert!(all(&mut e).is_empty());
    e.consent_tcf(|p| [1, 3, 4, 7, 8].contains(&p), T0 + 2);
    let r = &all(&mut e)[0];
    assert!(r["properties"].get("version").is_none(), "{r}");
}

/// analytics.js's setAnonymousId: the page's id from the next event on, kept; refused
/// for placeholders every visitor would share and for over-long ids; an email becomes
/// its digest.
fn set_anonymous_id_takes_the_pages_id_but_never_a_shared_placeholder() {
    let mut e = engine(true);
    let before = e.anon().to_owned();
    for bad in ["", "  ", "undefined", " null ", "0", "\"null\"", &"x".repeat(201)] {
        assert!(!e.set_anonymous_id(bad), "{bad:?}");
        assert_eq!(e.anon(), before);
    }
    assert!(e.set_anonymous_id(" srv-7f3a "));
    assert_eq!(e.anon(), "srv-7f3a");
    let ops = e.take_ops();
    assert!(ops.iter().any(|o| matches!(o, Op::Set(k, v) if k == K_ANON && v == "srv-7f3a")));
    e.record(Kind::Track, Some("After"), None, T0);
    assert_eq!(all(&mut e)[0]["anonymousId"], "srv-7f3a");
    assert!(e.set_anonymous_id("Jo@X.io"));
    assert_eq!(e.anon(), sha256("jo@x.io"));
}

/// Links clicked, recorded without code when the site asks (`data-track-links`): a
/// file by its extension, another site by its host (`www.` aside), nothing for the
/// site's own pages or other schemes; the text trimmed to 100 characters, raw PII and
/// credentials replaced.
fn link_clicks_are_outbound_or_downloads_as_the_site_asks() {
    let page = "https://www.shop.example/p?x=1";
    let cases = [
        ("https://partner.example/go", Some(LinkKind::Outbound)),
        ("HTTP://Partner.Example:8080/", Some(LinkKind::Outbound)),
        ("https://shop.example/about", None),
        ("https://WWW.shop.example/", None),
        ("https://user:pw@shop.example/x", None),
        ("https://shop.example/files/Guide.PDF?v=2#p3", Some(LinkKind::Download)),
        ("https://cdn.example/a.zip", Some(LinkKind::Download)),
        ("https://shop.example/v1.2/docs", None),
        ("mailto:jo@x.io", None),
        ("javascript:void(0)", None),
        ("/relative.pdf", None),
        ("[object SVGAnimatedString]", None),
    ];
    for (href, want) in cases {
        assert_eq!(link_kind(page, href), want, "{href}");
    }
    assert_eq!(Links::parse("outbound downloads"), Links { outbound: true, downloads: true });
    assert_eq!(Links::parse("true"), Links { outbound: true, downloads: true });
    assert_eq!(Links::parse("Downloads"), Links { outbound: false, downloads: true });
    assert_eq!(Links::parse("false"), Links::default());

    let mut e = engine(true);
    e.set_page(&facts(page, "/p"));
    assert!(e.link_clicked("https://partner.example/r?api_key=K3y", "  Write to\n jo@x.io  ", T0));
    assert!(e.link_clicked("https://shop.example/Guide.pdf", &"x".repeat(300), T0));
    assert!(!e.link_clicked("https://shop.example/about", "About", T0));
    let events = all(&mut e);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event"], "Outbound Link Clicked");
    assert_eq!(events[0]["properties"]["url"], "https://partner.example/r?api_key=redacted");
    let text = events[0]["properties"]["text"].as_str().unwrap();
    assert!(text.starts_with("Write to ") && !text.contains("jo@x.io"), "{text}");
    assert_eq!(events[1]["event"], "File Downloaded");
    assert_eq!(events[1]["properties"]["text"].as_str().unwrap().len(), 100);
}

fn a_us_opt_out_denies_marketing_never_grants_and_keeps_undecided_events_waiting() {
    let mut e = engine(false);
    e.set_page(&facts("https://s.example/?gclid=G1&utm_source=x", "/"));
    e.record(Kind::Page, None, None, T0);
    // GPP's opt-out of sale before the banner's answer: marketing is denied, and the
    // page view still waits for analytics (it was dropped before).
    e.consent_us(true, "gpp", T0 + 1);
    assert!(!e.consent().marketing && !e.consent().decided);
    // The same opt-out again (read at every page's start) is not a second record.
    e.consent_us(true, "usp", T0 + 1);
    assert_eq!(e.stats().purged, 0);
    assert_eq!(e.stats().waiting, 1);
    // Before the visitor's answer on an opt-in site nothing is written or sent: the
    // opt-out's record waits for the answer.
    assert_eq!(e.take_ops(), vec![], "no storage write");
    assert!(e.batch(T0, MAX_BATCH_BYTES, None).is_none(), "nothing to send");
    // "Did not opt out" states nothing: the banner's grant of everything then comes, and
    // marketing stays denied only where the grant does not speak.
    e.consent_us(false, "usp", T0 + 2);
    assert!(!e.consent().marketing);
    e.set_consent(choice(Some(true), None, Some(true)), "banner", T0 + 3);
    let events = all(&mut e);
    let records: Vec<_> = events.iter().filter(|v| v["event"] == "Consent Updated").collect();
    assert_eq!(records.len(), 2, "the opt-out and the grant; no record of a statement of nothing");
    // Each as it was made: the opt-out's source and state, then the banner's.
    let said = |r: &Value| {
        let c = &r["context"]["consent"];
        (c["source"].clone(), c["categoryPreferences"]["marketing"].clone(), c["categoryPreferences"]["analytics"].clone())
    };
    assert_eq!(said(records[0]), (json!("gpp"), json!(false), json!(false)));
    assert_eq!(said(records[1]), (json!("banner"), json!(false), json!(true)));
    assert!(storage(&e.take_ops()).iter().any(|(k, _)| k == "sl_consent"), "the answer is kept");
    let page = &events.iter().find(|v| v["type"] == "page").expect("the page view")["context"];
    assert_eq!(page["consent"]["categoryPreferences"]["marketing"], false);
    assert!(page.get("clickIds").is_none(), "no click ids without marketing");
    // Later, once granted, an opt-out takes marketing back.
    e.set_consent(choice(None, Some(true), None), "banner", T0 + 4);
    assert!(e.consent().marketing);
    e.consent_us(true, "gpp", T0 + 5);
    assert!(!e.consent().marketing && e.consent().analytics);
}

/// On an opt-in site, a visitor who denies analytics after a US opt-out: the two records
/// leave (the proof of both statements), no event does.
fn a_us_opt_out_then_a_denial_sends_both_records_and_no_event() {
    let mut e = engine(false);
    e.set_page(&facts("https://s.example/", "/"));
    e.record(Kind::Page, None, None, T0);
    e.consent_us(true, "usp", T0 + 1);
    for i in 0..20 {
        // A page flipping a marketing-only statement: the records held stay bounded.
        e.set_consent(choice(None, Some(i % 2 == 0), None), "page", T0 + 2);
    }
    assert_eq!(e.take_ops(), vec![]);
    e.set_consent(choice(Some(false), None, None), "banner", T0 + 3);
    let events = all(&mut e);
    assert!(events.iter().all(|v| v["event"] == "Consent Updated"), "{events:?}");
    assert_eq!(events.len(), 9, "the eight latest held, and the denial");
    assert_eq!(events.last().unwrap()["context"]["consent"]["source"], "banner");
    assert_eq!(e.stats().purged, 1, "the page view");
}

fn a_page_address_keeps_a_hash_route_and_drops_any_other_fragment() {
    for (href, url) in [
        ("https://s.example/a?b=1", "https://s.example/a?b=1"),
        ("https://s.example/a#section-2", "https://s.example/a"),
        ("https://s.example/cb#access_token=T0K3N&id_token=x.y.z", "https://s.example/cb"),
        ("https://s.example/#/cart?step=2", "https://s.example/#/cart?step=2"),
        ("https://s.example/#!/cart", "https://s.example/#!/cart"),
        ("https://s.example/#", "https://s.example/"),
        ("", ""),
    ] {
        assert_eq!(page_url(href), url, "{href}");
    }
}

fn gpc_denies_marketing_whatever_is_granted() {
    let mut e = Engine::new(
        Options { write_key: "wk".into(), policy: Policy::OptOut, storage: true, gpc: true, country: "US".into(), links: Links::default() },
        Seeded(7),
    );
    e.set_page(&facts("https://s.example/?gclid=G1&utm_source=x", "/"));
    e.start();
    e.set_consent(choice(Some(true), Some(true), Some(true)), "banner", T0);
    assert!(!e.consent().marketing);
    e.record(Kind::Page, None, None, T0);
    let events = all(&mut e);
    let page = events.last().unwrap();
    assert_eq!(page["context"]["consent"]["gpc"], true);
    assert_eq!(page["context"]["consent"]["categoryPreferences"]["marketing"], false);
    assert!(page["context"].get("clickIds").is_none());
    assert_eq!(page["context"]["campaign"]["source"], "x");
}

fn events_handed_over_at_unload_stay_until_acknowledged() {
    let mut e = engine(true);
    for i in 0..3u64 {
        e.record(Kind::Track, Some("Before Unload"), Some(&format!(r#"{{"i":{i}}}"#)), T0 + i);
    }
    let mut ops = e.take_ops();
    // A batch in flight (its request goes with the page) is handed over again first.
    let inflight = events_of(&e.batch(T0, MAX_BATCH_BYTES, None).unwrap());
    assert_eq!(inflight.len(), 3);
    e.record(Kind::Track, Some("Before Unload"), Some(r#"{"i":3}"#), T0 + 3);
    let unload = events_of(&e.unload_batch(T0).unwrap());
    assert_eq!(unload.len(), 4);
    assert_eq!(unload[..3], inflight[..]);
    // The page comes back from the back/forward cache and goes on: its request in
    // flight failed, the same events are sent again (same messageIds) and storage keeps
    // them until the collector answers.
    assert!(matches!(e.done(0, 0), Next::Retry(_)));
    e.record(Kind::Track, Some("After Restore"), None, T0 + 10);
    ops.extend(e.take_ops());
    let stored: String = storage(&ops).into_iter().map(|(_, v)| v).collect();
    assert_eq!(stored.matches("Before Unload").count(), 4, "still stored");
    let again = all(&mut e);
    let ids = |v: &[Value]| {
        v.iter().filter(|m| m["event"] == "Before Unload").map(|m| m["messageId"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&unload));
    assert_eq!(e.stats().queued, 0, "acknowledged, then gone");
}

fn a_page_view_carries_the_page_facts_with_the_calls_own_over_them() {
    let mut e = engine(true);
    e.set_page(&Facts { title: "Guji".into(), ..facts("https://shop.example/p?x=1", "/p") });
    e.page(None, Some("Product"), None, T0);
    e.page(None, None, Some(r#"{"title":"Own","extra":{"path":"nested"}}"#), T0 + 1);
    assert!(!e.page(None, None, Some(""), T0 + 2), "not serializable: refused");
    let events = all(&mut e);
    let p = &events[0]["properties"];
    assert_eq!((&p["path"], &p["title"], &p["url"]), (&json!("/p"), &json!("Guji"), &json!("https://shop.example/p?x=1")));
    assert_eq!(events[0]["name"], "Product");
    let body = e.page(None, None, Some(r#"{"title":"Own"}"#), T0 + 3);
    assert!(body);
    let own = &events[1]["properties"];
    assert_eq!(own["title"], "Own", "the call's own wins");
    assert_eq!(own["path"], "/p");
    assert_eq!(own["extra"]["path"], "nested");
    let raw = e.batch(T0, MAX_BATCH_BYTES, None).unwrap();
    let props = &raw[raw.find("\"properties\"").unwrap()..raw.find("\"timestamp\"").unwrap()];
    assert_eq!(props.matches("\"title\"").count(), 1, "each key once: {props}");
    e.done(200, 0);
    // analytics.js's `page(category, name)`: the category among the properties, the
    // call's own first; none, no key.
    e.page(Some("Docs"), Some("Intro"), Some(r#"{"section":"a"}"#), T0 + 4);
    e.page(Some("Docs"), Some("Intro"), Some(r#"{"category":"Own"}"#), T0 + 5);
    let pages = all(&mut e);
    let (with, own) = (&pages[pages.len() - 2], &pages[pages.len() - 1]);
    assert_eq!((&with["name"], &with["properties"]["category"]), (&json!("Intro"), &json!("Docs")));
    assert_eq!(with["properties"]["section"], "a");
    assert_eq!(own["properties"]["category"], "Own");
    assert!(events[0]["properties"].get("category").is_none());
}

fn phones_written_in_groups_are_found_in_free_text() {
    let mut e = engine(true);
    e.record(Kind::Track, Some("Note"), Some(r#"{"text":"call +33 6 12 34 56 78 today","ref":"2026-11-24 12:30"}"#), T0);
    let p = &all(&mut e)[0]["properties"];
    assert_eq!(p["text"], format!("call {} today", sha256("+33612345678")));
    assert_eq!(p["ref"], "2026-11-24 12:30", "a date is not a phone");
}

fn events_before_any_page_facts_carry_empty_ones_and_the_library() {
    let o = Options { write_key: "wk".into(), policy: Policy::OptOut, storage: true, gpc: false, country: "DE".into(), links: Links::default() };
    let mut e = Engine::new(o, Seeded(7));
    e.start();
    e.record(Kind::Track, Some("Early"), None, T0);
    e.set_page(&facts(URL0, "/"));
    e.record(Kind::Track, Some("Later"), None, T0 + 1);
    let events = all(&mut e);
    let (early, later) = (&events[0]["context"], &events[1]["context"]);
    assert_eq!(early["page"], json!({"path": "", "referrer": "", "search": "", "title": "", "url": ""}));
    assert_eq!(early["library"]["name"], later["library"]["name"]);
    assert!(early["library"]["name"].is_string());
    assert_eq!(later["page"]["url"], URL0, "the facts set since");
}

/// analytics.js's `options`: its context over the SDK's own fields (raw PII hashed as
/// in the properties, the consent snapshot still the SDK's), its integrations and its
/// timestamp, for that call only.
fn call_options_shape_that_call_only() {
    let mut e = engine(true);
    e.call_options(CallOptions {
        context: Some(r#"{"ip":"0.0.0.0","traits":{"email":"Jane@Example.com"},"consent":{"categoryPreferences":{"analytics":false}}}"#.into()),
        integrations: Some(r#"{"All":false,"Mixpanel":true}"#.into()),
        timestamp: Some(1_700_000_000_000),
    });
    e.record(Kind::Track, Some("Backdated"), Some("{}"), T0);
    e.record(Kind::Track, Some("Plain"), Some("{}"), T0 + 1);
    let events = all(&mut e);
    let (with, plain) = (&events[0], &events[1]);
    assert_eq!(with["timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(with["integrations"], json!({"All": false, "Mixpanel": true}));
    assert_eq!(with["context"]["ip"], "0.0.0.0");
    assert_eq!(with["context"]["traits"]["email"], sha256("jane@example.com"));
    assert_eq!(with["context"]["consent"]["categoryPreferences"]["analytics"], true);
    assert_eq!(with["context"]["library"], plain["context"]["library"]);
    assert!(!serde_json::to_string(&events).unwrap().contains("Jane@"));
    assert!(plain.get("integrations").is_none() && plain["context"].get("ip").is_none());
    assert_ne!(plain["timestamp"], with["timestamp"]);
    // Options that are not an object's text: the call is refused and counted, and the
    // next one is not touched by them.
    e.call_options(CallOptions { context: Some("[1]".into()), ..CallOptions::default() });
    assert!(!e.record(Kind::Track, Some("Odd"), Some("{}"), T0 + 2));
    assert!(e.record(Kind::Track, Some("After"), Some("{}"), T0 + 3));
    assert_eq!(names(&all(&mut e)), ["After"]);
}

/// A credential in the page's address (a reset link's token) leaves with none of the
/// page's fields; the campaign in the same query is still read. One in an address the
/// page passes (a property, a trait, the event's name) does not leave either.
fn a_credential_in_the_address_is_not_sent() {
    let mut e = engine(true);
    let mut f = facts("https://s.example/reset?token=Zx81&utm_source=Mail", "/reset");
    f.search = "?token=Zx81&utm_source=Mail".into();
    f.referrer = "https://s.example/login#access_token=ya29.q".into();
    e.set_page(&f);
    e.page(None, None, None, T0);
    let events = all(&mut e);
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("Zx81") && !text.contains("ya29"), "{text}");
    let p = &events[0];
    assert_eq!(p["properties"]["url"], "https://s.example/reset?token=redacted&utm_source=Mail");
    assert_eq!(p["context"]["page"]["search"], "?token=redacted&utm_source=Mail");
    assert_eq!(p["context"]["page"]["referrer"], "https://s.example/login#access_token=redacted");
    assert_eq!(p["context"]["campaign"]["source"], "mail");

    let props = r##"{"link":"/account?api_key=Pr0pK3y&tab=2","nested":[{"u":"#access_token=Fr4g"}]}"##;
    assert!(e.record(Kind::Track, Some("Shared /x?sig=S1gn"), Some(props), T0 + 1));
    e.identify(None, Some(r#"{"last":"https://s.example/set?new_password=hunter2x"}"#), T0 + 2);
    let events = all(&mut e);
    let text = serde_json::to_string(&events).unwrap();
    for secret in ["Pr0pK3y", "Fr4g", "S1gn", "hunter2x"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
    let t = events.iter().find(|v| v["type"] == "track").unwrap();
    assert_eq!(t["properties"]["link"], "/account?api_key=redacted&tab=2");
    assert_eq!(t["event"], "Shared /x?sig=redacted");
}

fn odd_input_never_panics() {
    let mut e = engine(true);
    for body in ["", "[1]", "{", "{\"a\":\"\\ud800\"}", "null", "{\"a\":1}}"] {
        e.record(Kind::Track, Some("x\u{0}\"y"), Some(body), T0);
    }
    for key in ["sl_e:", "sl_e:abcdefghijkl", "sl_sess", "sl_consent", "sl_ft", "sl_lt"] {
        for v in ["", "\n", "c{\n9{}", "1{\"a\"}", "..", "1", "{\"campaign\":{}}"] {
            e.restore(key, v);
        }
    }
    e.set_page(&Facts { screen: Some((1, 2, "NaN; alert(1)".into())), ..Facts::default() });
    e.record(Kind::Page, None, None, T0);
    for body in all(&mut e).iter().map(|v| v.to_string()) {
        assert!(!body.contains("alert"), "{body}");
    }
    let v: Value = serde_json::from_str(&facts_json(&Facts { title: "a\"b\u{1}".into(), ..Facts::default() })).unwrap();
    assert_eq!(v["page"]["title"], "a\"b\u{1}");
}
}
