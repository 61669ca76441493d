//! The SDK engine's decisions, natively: consent gating, the persisted queue, batches,
//! retries, cross-tab hand-off, soft login and campaign capture.

use sdk_wasm::engine::{Engine, Page, EVENT_PREFIX, MAX_QUEUE, UNLOAD_BYTES};
use serde_json::Value;
use tracking_plan::identifiers::sha256_hex;

const CTX: &str = r#"{"page":{"path":"/","url":"https://shop.example/"},"locale":"en-GB"}"#;
const URL: &str = "https://shop.example/";
const T0: f64 = 1_795_472_345_000.0;

fn at(url: &str, now: f64) -> Page<'_> {
    Page { ctx: CTX, url, now }
}

fn engine(opt_out: bool) -> Engine {
    let mut e = Engine::new("wk", opt_out, "DE", &[7; 16], true);
    e.start();
    e
}

/// Storage operations as (kind, key, value).
fn ops(e: &mut Engine) -> Vec<(String, String, String)> {
    e.take_ops()
        .split('\u{1e}')
        .filter(|o| !o.is_empty())
        .map(|o| {
            let mut p = o.split('\u{1f}');
            (
                p.next().unwrap_or_default().to_string(),
                p.next().unwrap_or_default().to_string(),
                p.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn batch(e: &mut Engine) -> Vec<Value> {
    let body = e.next_batch(T0, 500 * 1024, None).expect("a batch");
    let v: Value = serde_json::from_str(&body).expect("valid JSON");
    assert_eq!(v["writeKey"], "wk");
    v["batch"].as_array().unwrap().clone()
}

#[test]
fn opt_in_writes_and_sends_nothing_before_consent() {
    let mut e = engine(false);
    assert!(ops(&mut e).is_empty(), "not even the anonymous id");
    assert!(e.record("track", Some("Viewed"), Some(r#"{"a":1}"#), &at(URL, T0)));
    assert!(e.record("page", None, None, &at(URL, T0 + 1.0)));
    assert!(ops(&mut e).is_empty());
    assert_eq!(e.next_batch(T0, 500_000, None), None);
    assert_eq!(e.send_delay(), -1.0);

    // Consent: the waiting events are stamped and queued, with the decision's record.
    e.set_consent(1, 0, 1, "banner", &at(URL, T0 + 2.0));
    let writes = ops(&mut e);
    assert!(writes
        .iter()
        .any(|(k, key, v)| k == "s" && key == "sl_consent" && v.starts_with("101")));
    assert!(writes.iter().any(|(k, key, _)| k == "s" && key == "sl_aid"));
    // The three events are written together: one chunk, one line each.
    let chunks: Vec<&String> = writes
        .iter()
        .filter(|(k, key, _)| k == "s" && key.starts_with(EVENT_PREFIX))
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].lines().count(), 3);
    let events = batch(&mut e);
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
    assert!(events[0]["context"]["sessionId"].as_str().unwrap().len() == 36);
}

#[test]
fn a_denial_purges_waiting_events_and_only_the_record_leaves() {
    let mut e = engine(false);
    e.record("track", Some("Viewed"), None, &at(URL, T0));
    e.set_consent(0, 0, 0, "banner", &at(URL, T0 + 1.0));
    let writes = ops(&mut e);
    assert!(
        writes.iter().all(|(_, key, _)| key == "sl_consent"),
        "{writes:?}"
    );
    let events = batch(&mut e);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "Consent Updated");
    assert_eq!(events[0]["properties"]["analytics"], false);
    assert!(
        !e.record("track", Some("Later"), None, &at(URL, T0 + 2.0)),
        "not collected"
    );
    let stats: Value = serde_json::from_str(&e.stats_json()).unwrap();
    assert_eq!(stats["purged"], 1);
}

#[test]
fn revoking_marketing_purges_events_that_carry_click_ids() {
    let mut e = engine(false);
    e.set_consent(1, 1, 1, "banner", &at(URL, T0));
    e.done(200, 0.0); // nothing in flight yet: a no-op
    let ad = "https://shop.example/?utm_source=News&utm_medium=Email&gclid=G1";
    e.record("page", None, None, &at(ad, T0 + 1.0));
    e.record("track", Some("Plain"), None, &at(URL, T0 + 2.0));
    ops(&mut e);
    e.set_consent(-1, 0, -1, "banner", &at(URL, T0 + 3.0));
    let writes = ops(&mut e);
    // Both events carried the click id of the last touch: their chunk is rewritten
    // without them (only the first consent record stays in it).
    let chunks: Vec<&String> = writes
        .iter()
        .filter(|(k, key, _)| k == "s" && key.starts_with(EVENT_PREFIX))
        .map(|(_, _, v)| v)
        .collect();
    assert!(
        chunks
            .iter()
            .all(|v| !v.contains("gclid") && !v.contains("Plain")),
        "{chunks:?}"
    );
    assert_eq!(
        chunks.iter().map(|v| v.lines().count()).sum::<usize>(),
        2,
        "the two consent records"
    );
    let events = batch(&mut e);
    let names: Vec<&str> = events
        .iter()
        .map(|v| v["event"].as_str().unwrap_or("page"))
        .collect();
    assert_eq!(names, ["Consent Updated", "Consent Updated"]);
}

#[test]
fn campaign_first_and_last_touch() {
    let mut e = engine(true);
    e.record(
        "page",
        None,
        None,
        &at(
            "https://s.example/?utm_source=Google&utm_medium=CPC&gclid=abc",
            T0,
        ),
    );
    e.record(
        "page",
        None,
        None,
        &at("https://s.example/?utm_source=news", T0 + 1.0),
    );
    let events = batch(&mut e);
    assert_eq!(events[0]["context"]["campaign"]["source"], "google");
    assert_eq!(events[0]["context"]["clickIds"]["gclid"], "abc");
    assert_eq!(events[1]["context"]["campaign"]["source"], "news");
    assert_eq!(
        events[1]["context"]["firstTouch"]["campaign"]["medium"],
        "cpc"
    );
    assert!(
        events[1]["context"].get("clickIds").is_none(),
        "last touch had none"
    );
}

#[test]
fn retries_keep_message_ids_back_off_and_honour_retry_after() {
    let mut e = engine(true);
    e.record("track", Some("A"), None, &at(URL, T0));
    ops(&mut e); // stored, as the adapter does after every call
    let first = batch(&mut e);
    let d1 = e.done(503, 0.0);
    assert!((450.0..=550.0).contains(&d1), "{d1}");
    let second = batch(&mut e);
    assert_eq!(first[0]["messageId"], second[0]["messageId"]);
    let d2 = e.done(0, 0.0);
    assert!((900.0..=1100.0).contains(&d2), "{d2}");
    batch(&mut e);
    assert_eq!(e.done(429, 30.0), 30_000.0, "Retry-After wins when longer");
    batch(&mut e);
    assert_eq!(e.done(200, 0.0), -1.0);
    assert_eq!(e.next_batch(T0, 500_000, None), None);
    let writes = ops(&mut e);
    assert!(writes
        .iter()
        .any(|(k, key, _)| k == "r" && key.starts_with(EVENT_PREFIX)));
    // A refused batch (400) is dropped, not retried.
    e.record("track", Some("B"), None, &at(URL, T0));
    batch(&mut e);
    assert_eq!(e.done(400, 0.0), -2.0);
    assert_eq!(e.pending(), 0);
}

#[test]
fn a_reload_restores_the_queue_in_order() {
    let mut a = engine(true);
    for i in 0..5 {
        a.record(
            "track",
            Some(&format!("E{i}")),
            None,
            &at(URL, T0 + f64::from(i)),
        );
    }
    let stored: Vec<(String, String, String)> = ops(&mut a);
    let mut b = Engine::new("wk", true, "DE", &[9; 16], true);
    let mut keys: Vec<&(String, String, String)> =
        stored.iter().filter(|(k, _, _)| k == "s").collect();
    keys.sort_by(|x, y| x.1.cmp(&y.1));
    for (_, key, value) in keys {
        b.restore(key, value);
    }
    b.start();
    assert_eq!(
        b.anonymous_id(),
        a.anonymous_id(),
        "the visitor is the same"
    );
    // The events belong to the page before the reload: sent once that tab is known gone.
    assert_eq!(b.next_batch(T0, 500_000, None), None);
    assert_eq!(b.foreign_tabs(), a.tab());
    b.adopt_tab(a.tab());
    let names: Vec<String> = batch(&mut b)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["E0", "E1", "E2", "E3", "E4"]);
}

#[test]
fn an_event_another_tab_sent_is_not_sent_again() {
    // Tab A stored an event and went away.
    let mut a = engine(true);
    a.record("track", Some("Left Behind"), None, &at(URL, T0));
    let (_, chunk, value) = ops(&mut a)
        .into_iter()
        .find(|(_, k, _)| k.starts_with(EVENT_PREFIX))
        .unwrap();
    // Tabs B and C both restore it; C adopts it (it took A's lock) and sends it.
    let mut b = Engine::new("wk", true, "DE", &[5; 16], true);
    b.restore(&chunk, &value);
    b.start();
    assert_eq!(
        b.next_batch(T0, 500_000, None),
        None,
        "owned by tab A until adopted"
    );
    assert_eq!(b.foreign_tabs(), a.tab());
    b.adopt_tab(a.tab());
    // Under the send lock the chunk is gone: another tab sent it; B does not.
    assert_eq!(b.next_batch(T0, 500_000, Some("sl_e:other")), None);
    assert_eq!(b.pending(), 0);
    // With the chunk still there, B sends it.
    let mut c = Engine::new("wk", true, "DE", &[6; 16], true);
    c.restore(&chunk, &value);
    c.start();
    c.adopt_tab(a.tab());
    assert!(c.needs_present());
    assert!(c.next_batch(T0, 500_000, Some(&chunk)).is_some());
    // A tab that only has its own events needs no storage listing.
    let mut d = engine(true);
    d.record("track", Some("Mine"), None, &at(URL, T0));
    ops(&mut d);
    assert!(!d.needs_present());
    assert!(d.next_batch(T0, 500_000, None).is_some());
}

#[test]
fn the_queue_is_bounded_and_counts_what_it_sheds() {
    let mut e = engine(true);
    for i in 0..(MAX_QUEUE + 25) {
        e.record(
            "track",
            Some("E"),
            Some(&format!(r#"{{"i":{i}}}"#)),
            &at(URL, T0 + i as f64),
        );
    }
    assert_eq!(e.pending(), MAX_QUEUE);
    let stats: Value = serde_json::from_str(&e.stats_json()).unwrap();
    assert_eq!(stats["shed"], 25);
    assert_eq!(
        batch(&mut e)[0]["properties"]["i"],
        25,
        "the oldest went first"
    );
}

#[test]
fn batches_respect_count_and_size_and_the_unload_budget() {
    let mut e = engine(true);
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(20_000));
    for i in 0..150 {
        e.record(
            "track",
            Some("E"),
            Some(if i < 10 { &big } else { "{}" }),
            &at(URL, T0),
        );
    }
    assert_eq!(e.send_delay(), 0.0, "a full batch goes at once");
    let body = e.unload_batch(T0).unwrap();
    assert!(body.len() <= UNLOAD_BYTES, "{}", body.len());
    let n = serde_json::from_str::<Value>(&body).unwrap()["batch"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(n, 2);
    assert_eq!(batch(&mut e).len(), 100);
    let huge = format!(r#"{{"blob":"{}"}}"#, "y".repeat(40_000));
    assert!(
        !e.record("track", Some("Huge"), Some(&huge), &at(URL, T0)),
        "over 32 KB"
    );
}

#[test]
fn soft_login_hashes_in_the_page_with_the_shared_vectors() {
    let mut e = engine(true);
    let r: Value = serde_json::from_str(&e.soft_login(
        Some(" John_Smith@Gmail.com "),
        Some("+1 (650) 555-1212"),
        &at(URL, T0),
    ))
    .unwrap();
    assert_eq!(
        r["email_sha256"],
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    );
    assert_eq!(
        r["phone_sha256"],
        "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
    );
    assert_eq!(
        r["phone_sha256_meta"],
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    );
    let events = batch(&mut e);
    assert_eq!(events[0]["type"], "identify");
    assert_eq!(events[0]["traits"]["email_sha256"], r["email_sha256"]);
    let wire = serde_json::to_string(&events).unwrap();
    assert!(
        !wire.contains("John_Smith") && !wire.contains("555"),
        "no raw value on the wire"
    );
    // A national number takes the configured country (DE).
    let de: Value =
        serde_json::from_str(&e.soft_login(None, Some("030 1234567"), &at(URL, T0))).unwrap();
    assert_eq!(de["phone_sha256"], sha256_hex("+49301234567"));
    let bad: Value =
        serde_json::from_str(&e.soft_login(Some("test@test.com"), None, &at(URL, T0))).unwrap();
    assert_eq!(bad["error"], "email: blocked");
    assert_eq!(
        e.redact("mail me: ann@example.com").unwrap(),
        format!("mail me: {}", sha256_hex("ann@example.com"))
    );
}

#[test]
fn identify_alias_and_reset() {
    let mut e = engine(true);
    let anon = e.anonymous_id().to_string();
    e.identify(Some("u1"), Some(r#"{"plan":"pro"}"#), &at(URL, T0));
    e.alias("u2", None, &at(URL, T0));
    let events = batch(&mut e);
    assert_eq!(events[0]["userId"], "u1");
    assert_eq!(events[0]["traits"]["plan"], "pro");
    assert_eq!(
        (
            events[1]["userId"].as_str(),
            events[1]["previousId"].as_str()
        ),
        (Some("u2"), Some("u1"))
    );
    e.reset();
    assert_ne!(e.anonymous_id(), anon);
    assert_eq!(e.user_id(), None);
}

#[test]
fn google_consent_mode_and_tcf_map_to_categories() {
    let mut e = engine(false);
    e.set_consent_gcm("granted", "granted", "denied", "granted", &at(URL, T0));
    let c: Value = serde_json::from_str(&e.consent_json()).unwrap();
    assert_eq!(
        (
            c["analytics"].as_bool(),
            c["marketing"].as_bool(),
            c["personalization"].as_bool()
        ),
        (Some(true), Some(false), Some(true))
    );
    let record = batch(&mut e);
    assert_eq!(record[0]["context"]["consent"]["source"], "gcm");
    e.done(200, 0.0);
    // The same state announced again is not a new decision: no second record.
    e.set_consent_gcm(
        "granted",
        "granted",
        "denied",
        "granted",
        &at(URL, T0 + 1.0),
    );
    assert_eq!(e.next_batch(T0, 500_000, None), None);

    let mut t = engine(false);
    let purposes = |ps: &[u32]| ps.iter().fold(0u32, |m, p| m | 1 << (p - 1));
    t.set_consent_tcf(purposes(&[1, 8, 5, 6]), &at(URL, T0));
    let c: Value = serde_json::from_str(&t.consent_json()).unwrap();
    assert_eq!(
        (
            c["analytics"].as_bool(),
            c["marketing"].as_bool(),
            c["personalization"].as_bool()
        ),
        (Some(true), Some(false), Some(true))
    );
    t.set_consent_tcf(purposes(&[1, 3, 4, 7, 8]), &at(URL, T0 + 1.0));
    let c: Value = serde_json::from_str(&t.consent_json()).unwrap();
    assert_eq!(c["marketing"], true);
    t.set_consent_tcf(purposes(&[3, 4, 7, 8]), &at(URL, T0 + 2.0));
    let c: Value = serde_json::from_str(&t.consent_json()).unwrap();
    assert_eq!(
        c["analytics"], false,
        "no storage consent (purpose 1): nothing"
    );
}
