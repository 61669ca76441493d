//! The collector's guarantees, tried as an attacker would, natively against the
//! in-memory store, dedup and identity:
//! - no raw PII at rest: emails and phones planted in any field, key, id, URL component
//!   or encoding never reach a stored event, a quarantine row, a consent row, the
//!   identity graph or a dedup key;
//! - consent first: without analytics consent on an opt-in source nothing is kept, not
//!   even an oversized, unparseable or off-plan event, while consent records always are;
//! - dedup never loses: a model of claim -> store -> commit over crash points and
//!   interleavings of two requests with the same messageId;
//! - erasure is exact and resumable; GPC strips every ad id; errors echo no input.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use edge_collector::dedup::{self, Claim, MemoryDedup, Seen};
use edge_collector::enrich::EdgeInfo;
use edge_collector::pipeline::{Endpoint, Report, Status};
use edge_collector::sources::Sources;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

const SITE: &str = "https://shop.example";

fn sources() -> Sources {
    let plan = include_str!("../../example-site/tracking-plan.json");
    Sources::from_json(&format!(
        r#"{{"wk_srv":{{"name":"server","consent":"opt-out"}},
            "wk_web":{{"name":"web","origins":["{SITE}"],"plan":{plan},"consent":"opt-in"}}}}"#
    ))
    .unwrap()
}

mod common;
use common::NOW;

fn rig() -> common::Rig {
    common::Rig::new(sources())
}

fn browser() -> EdgeInfo<'static> {
    EdgeInfo {
        origin: Some(SITE),
        own_origin: SITE,
        country: Some("US"),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36"),
        ..EdgeInfo::default()
    }
}

const GRANTED: &str =
    r#"{"categoryPreferences":{"analytics":true,"marketing":true,"personalization":true}}"#;

fn granted() -> Value {
    serde_json::from_str(GRANTED).unwrap()
}

/// Percent-decodes repeatedly, so an encoded leak is found too.
fn decoded(s: &str) -> String {
    let mut cur = s.to_string();
    for _ in 0..3 {
        let next = tracking_plan::campaign::decode(&cur);
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

fn assert_clean(haystack: &str, needles: &[String]) {
    let plain = haystack.to_ascii_lowercase();
    let dec = decoded(haystack).to_ascii_lowercase();
    for n in needles {
        let n = n.to_ascii_lowercase();
        assert!(!plain.contains(&n), "raw {n:?} at rest:\n{haystack}");
        assert!(!dec.contains(&n), "encoded {n:?} at rest:\n{haystack}");
    }
}

/// After one planted event: no planted form at rest or in a refusal, and a verdict for
/// the event. Unless its visitor id was the planted value, it was kept under `kept`
/// (stored or quarantined), so the scan had something to read.
fn one_kept_clean(
    rig: &common::Rig,
    r: Result<Report, edge_collector::pipeline::Error>,
    needles: &[String],
    kept: Option<&str>,
) {
    let at_rest = rig.at_rest();
    assert_clean(&at_rest, needles);
    if let Some(id) = kept {
        assert!(at_rest.contains(id), "nothing kept: {at_rest}");
    }
    match r {
        Ok(r) => assert_eq!(r.results.len(), 1),
        Err(e) => assert_clean(&e.to_json().to_string(), needles),
    }
}

/// The ways one value can be written.
fn encodings(v: &str) -> Vec<String> {
    let pct = v
        .replace('@', "%40")
        .replace('+', "%2B")
        .replace(' ', "%20");
    vec![
        v.to_string(),
        v.to_ascii_uppercase(),
        pct.clone(),
        pct.replace('%', "%25"),
        format!("mailto:{v}"),
        format!("say hi to {v} today"),
        format!("https://shop.example/p?ref=x&email={pct}&utm_content={pct}#top"),
        STANDARD.encode(v),
        URL_SAFE_NO_PAD.encode(v),
        format!("https://shop.example/r?d={}&n=1", STANDARD.encode(v)),
        v.bytes().map(|b| format!("{b:02x}")).collect(),
        v.replace('@', "&#64;").replace('+', "&#x2B;"),
        v.replace('@', "\\u0040").replace('+', "\\u002b"),
        // Fullwidth forms of every printable character (`＠`, `＋`, `３`).
        v.chars()
            .map(|c| match c {
                '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
                _ => c,
            })
            .collect(),
        // Encodings inside encodings: base64 of base64, hex of base64, base64 written
        // percent-encoded; and the UTF-16 bytes of the value in base64.
        STANDARD.encode(STANDARD.encode(v)),
        STANDARD
            .encode(v)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect(),
        STANDARD
            .encode(v)
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect(),
        STANDARD.encode(
            v.encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>(),
        ),
        // Digits of another script (Arabic-Indic `٣`), and a bracketed trunk after the
        // calling code (`+33 (0)6 …`).
        v.chars()
            .map(|c| {
                c.to_digit(10)
                    .map_or(c, |d| char::from_u32(0x660 + d).unwrap_or(c))
            })
            .collect(),
        v.replacen(" 6 ", " (0)6 ", 1),
        // Narrow no-break spaces between the groups, and the `00` international prefix.
        v.replace(' ', "\u{202F}"),
        v.replacen('+', "00", 1),
        // Punctuation escaped for a regular expression or a shell (`jo\@x\.io`).
        v.replace('@', "\\@")
            .replace('.', "\\.")
            .replace('+', "\\+"),
    ]
}

/// How many ways [`encodings`] writes a value.
const ENCODINGS: usize = 23;

#[test]
fn every_encoding_is_drawn() {
    assert_eq!(encodings("jo@x.io").len(), ENCODINGS);
}

/// Puts `value` in one of many places of a browser event.
fn plant(slot: usize, value: &str, key: &str) -> Value {
    let mut e = json!({"type": "track", "messageId": format!("m-{slot}-{}", value.len()),
        "anonymousId": "anon-plant", "event": "Product Viewed",
        "properties": {"product_id": "p1"},
        "context": {"consent": granted(), "page": {"url": "https://shop.example/p"}}});
    let v = json!(value);
    match slot % 19 {
        0 => e["properties"]["note"] = v,
        1 => e["properties"][key] = json!("x"),
        2 => e["properties"]["list"] = json!([{"deep": [v]}]),
        3 => e["context"]["page"]["url"] = json!(format!("https://shop.example/p?q={value}")),
        4 => e["context"]["page"]["search"] = json!(format!("?email={value}")),
        5 => e["context"]["campaign"] = json!({"content": value}),
        6 => e["event"] = v,
        7 => e["anonymousId"] = v,
        8 => e["userId"] = v,
        9 => {
            e["type"] = json!("group");
            e["groupId"] = v;
        }
        10 => e["context"]["traits"] = json!({"mobile": value}),
        11 => e["someExtraField"] = json!({key: value}),
        12 => e["integrations"] = json!({"x": value}),
        13 => {
            e["type"] = json!("identify");
            e["traits"] = json!({"email": value, "phone": value});
        }
        14 => e["messageId"] = v,
        // JSON documents kept as strings, once and twice encoded.
        15 => e["properties"]["payload"] = json!(json!({"note": value}).to_string()),
        16 => {
            let inner = json!({"note": value}).to_string();
            e["properties"]["payload"] = json!(json!({"inner": inner}).to_string());
        }
        // A page URL with path and query as the browser splits them (`location.search`
        // ends at the first `#`, a character reference's included).
        17 => {
            let url = format!("https://shop.example/p/{value}?utm_content={value}&x=1");
            let (before, query) = url.split_once('?').unwrap();
            let cut = |s: &str| s.split('#').next().unwrap_or_default().to_string();
            e["context"]["page"] = json!({"url": url, "path": cut(&before["https://shop.example".len()..]),
                                          "search": format!("?{}", cut(query))});
            e["type"] = json!("page");
            e["properties"] = e["context"]["page"].clone();
        }
        _ => e["context"]["userAgent"] = json!(format!("Mozilla/5.0 {value}")),
    }
    e
}

proptest! {
    #![proptest_config(common::cases(64))]

    /// Emails and phones planted anywhere, in any encoding: none is kept raw.
    #[test]
    fn planted_pii_never_reaches_storage(
        local in "[a-z]{4,8}\\.[a-z]{4,8}",
        domain in "[a-z]{5,9}",
        national in 200u32..999,
        slots in proptest::collection::vec(0usize..19, 1..6),
        enc in 0usize..ENCODINGS,
        key_kind in 0usize..2,
    ) {
        let email = format!("{local}@{domain}.io");
        let phone = format!("+33 6 {} 34 56 78", national % 90 + 10);
        let us = format!("650.555.0{national}");
        // A national number in free text, as North Americans write one.
        let written = format!("(650) 555-0{national}");
        let rig = rig();
        let mut batch = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let raw = [&email, &phone, &written][i % 3];
            let value = encodings(raw)[enc].clone();
            let key = if key_kind == 0 { email.clone() } else { format!("ref {email}") };
            batch.push(plant(*slot + i, &value, &key));
        }
        // A national number where only the field name tells what it is.
        batch.push(json!({"type": "identify", "messageId": "nat", "anonymousId": "anon-plant",
            "traits": {"phone": us, "mobile": 6505550143u64}, "context": {"consent": granted()}}));
        let body = json!({"batch": batch, "writeKey": "wk_web",
            "context": {"page": {"referrer": format!("https://x.example/?e={email}")}}});
        let r = rig.send(&body, browser());
        if let Ok(r) = &r {
            prop_assert_eq!(r.results.len(), slots.len() + 1);
        }
        let needles = vec![
            email.clone(),
            local.clone(),
            format!("{} 34 56 78", national % 90 + 10),
            format!("6{}345678", national % 90 + 10),
            us.clone(),
            format!("555.0{national}"),
            format!("555-0{national}"),
            "6505550143".into(),
        ];
        // The planted forms themselves (base64, hex, references are opaque to the
        // decoding check): none is kept.
        let mut needles = needles;
        needles.extend([&email, &phone, &written].map(|v| encodings(v)[enc].clone()));
        assert_clean(&rig.at_rest(), &needles);
        if let Err(e) = r {
            assert_clean(&e.to_json().to_string(), &needles);
        }
    }

    /// The same through Snowplow's tracker protocol: planted in any parameter of any
    /// event type, inside its base64 or plain self-describing JSON, or as a key.
    #[test]
    fn planted_pii_never_reaches_storage_through_snowplow(
        local in "[a-z]{4,8}\\.[a-z]{4,8}",
        domain in "[a-z]{5,9}",
        field in 0usize..24,
        kind in 0usize..5,
        enc in 0usize..ENCODINGS,
    ) {
        let email = format!("{local}@{domain}.io");
        let value = encodings(&email)[enc].clone();
        let rig = rig();
        let e = ["pv", "se", "ue", "pp", "tr"][kind];
        let sd = |v: &Value| json!({"schema": "iglu:com.acme/x/jsonschema/1-0-0", "data": v}).to_string();
        let ue = sd(&json!({"schema": "iglu:com.acme/signed_up/jsonschema/1-0-0", "data": {"note": value}}));
        let co = sd(&json!([{"schema": "iglu:com.acme/user/jsonschema/1-0-0", "data": {"contact": value}}]));
        let mut item = json!({"e": e, "eid": format!("sp-{field}-{kind}"), "aid": "wk_srv", "duid": "d-plant",
            "se_ac": "act", "ue_pr": sd(&json!({"schema": "iglu:com.acme/y/jsonschema/1-0-0", "data": {}}))});
        let names = ["eid", "duid", "nuid", "uid", "url", "page", "refr", "se_ca", "se_ac", "se_la", "se_pr",
                     "se_va", "tz", "lang", "res", "tv", "tna", "sid", "vid", "p", "ue_pr", "ue_px", "co", "cx"];
        let planted = match names[field] {
            "ue_pr" => ue.clone(),
            "ue_px" => URL_SAFE_NO_PAD.encode(&ue),
            "co" => co.clone(),
            "cx" => STANDARD.encode(&co),
            "url" | "refr" => format!("https://shop.example/p?email={value}"),
            _ => value.clone(),
        };
        item[names[field]] = json!(planted);
        if names[field] == "ue_px" {
            item.as_object_mut().unwrap().remove("ue_pr");
        }
        item[email.as_str()] = json!("a key");
        let body = serde_json::to_vec(&json!({"data": [item]})).unwrap();
        let r = rig.request(Endpoint::Snowplow, &body, None, EdgeInfo::default(), NOW);
        let kept = (names[field] != "duid").then_some("d-plant");
        one_kept_clean(&rig, r, &[email, local, value], kept);
    }

    /// The same through PostHog's capture API: planted in any property, trait, id or
    /// name of any event kind, or as a key, in a JSON, gzip or form body.
    #[test]
    fn planted_pii_never_reaches_storage_through_posthog(
        local in "[a-z]{4,8}\\.[a-z]{4,8}",
        domain in "[a-z]{5,9}",
        field in 0usize..12,
        kind in 0usize..5,
        enc in 0usize..ENCODINGS,
        form in 0usize..3,
    ) {
        let email = format!("{local}@{domain}.io");
        let value = encodings(&email)[enc].clone();
        let rig = rig();
        let name = ["$pageview", "$identify", "$groupidentify", "$create_alias", "Signed Up"][kind];
        let mut e = json!({"uuid": format!("ph-{field}-{kind}"), "event": name, "$set": {"plan": "pro"},
            "properties": {"distinct_id": "ph-plant", "$device_id": "ph-plant", "token": "wk_srv",
                           "$current_url": "https://shop.example/p", "$group_key": "g", "alias": "a"}});
        let p = |k: &str| format!("/properties/{k}");
        let (path, planted) = match field {
            0 => ("/uuid".to_string(), value.clone()),
            1 => ("/event".to_string(), value.clone()),
            2 => (p("distinct_id"), value.clone()),
            3 => (p("$user_id"), value.clone()),
            4 => (p("$current_url"), format!("https://shop.example/p?email={value}")),
            5 => (p("title"), value.clone()),
            6 => (p("note"), value.clone()),
            7 => (p("$group_key"), value.clone()),
            8 => (p("alias"), value.clone()),
            9 => ("/$set/contact".to_string(), value.clone()),
            10 => (p("$group_set"), value.clone()),
            _ => (p("utm_content"), value.clone()),
        };
        let (parent, leaf) = path.rsplit_once('/').unwrap();
        e.pointer_mut(if parent.is_empty() { "" } else { parent }).unwrap()[leaf] = json!(planted);
        e["properties"][email.as_str()] = json!("a key");
        let json_body = serde_json::to_vec(&json!({"api_key": "wk_srv", "batch": [e]})).unwrap();
        let body = match form {
            0 => json_body,
            1 => {
                use std::io::Write as _;
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                w.write_all(&json_body).unwrap();
                w.finish().unwrap()
            }
            _ => format!("data={}", STANDARD.encode(&json_body).replace('+', "%2B")).into_bytes(),
        };
        let r = rig.request(Endpoint::PostHog, &body, None, EdgeInfo::default(), NOW);
        let kept = (field != 2).then_some("ph-plant");
        one_kept_clean(&rig, r, &[email, local, value], kept);
    }

    /// A request that is refused as a whole never quotes its body.
    #[test]
    fn errors_echo_no_input(local in "[a-z]{5,9}") {
        let email = format!("{local}@leak.io");
        let rig = rig();
        for body in [
            json!({"batch": email, "writeKey": "wk_web"}),
            json!({"batch": [{"type": email}], "writeKey": "wk_web"}),
            json!({"batch": [], "writeKey": email}),
        ] {
            match rig.send(&body, browser()) {
                Err(e) => assert_clean(&e.to_json().to_string(), std::slice::from_ref(&email)),
                Ok(r) => assert_clean(&serde_json::to_string(&r).unwrap(), std::slice::from_ref(&email)),
            }
        }
    }
}

#[test]
fn without_consent_nothing_is_kept_not_even_in_the_quarantine() {
    let rig = rig();
    let big = "x".repeat(40 * 1024);
    let body = json!({"writeKey": "wk_web", "batch": [
        {"type": "track", "messageId": "big", "anonymousId": "a1", "event": "Product Viewed", "properties": {"blob": big}},
        {"type": "bogus", "messageId": "t", "anonymousId": "a1"},
        {"type": "track", "messageId": "off", "anonymousId": "a1", "event": "Not In Plan"},
        "not even an object",
        {"type": "track", "messageId": "deny", "anonymousId": "a1", "event": "Product Viewed",
         "context": {"consent": {"categoryPreferences": {"analytics": false}}}},
    ]});
    let r = rig.send(&body, browser()).unwrap();
    assert_eq!(r.refused, 5, "{r:?}");
    assert!(r.results.iter().all(|v| v.status == Status::Refused));
    assert!(rig.store.events.borrow().is_empty());
    assert!(rig.store.quarantined.borrow().is_empty());
    assert!(
        rig.dedup.table.borrow().is_empty(),
        "not even a dedup entry"
    );
    assert!(rig.identity.graphs.borrow().is_empty());
    assert!(
        r.clear_cookie,
        "a browser whose events are refused loses the cookie"
    );
}

#[test]
fn consent_records_reach_the_log_whatever_their_shape() {
    let rig = rig();
    let body = json!({"writeKey": "wk_web", "batch": [
        // Denies analytics, has no messageId, an email as its anonymous id, and a
        // property the plan does not know.
        {"type": "track", "anonymousId": "jo@x.io", "event": "Consent Updated",
         "properties": {"unplanned": true},
         "context": {"consent": {"categoryPreferences": {"analytics": false}, "source": "banner"}}},
        // Grants, but breaks the plan.
        {"type": "track", "messageId": "c2", "anonymousId": "a2", "event": "Consent Updated",
         "properties": {"bogus": {"deep": 1}}, "context": {"consent": granted()}},
    ]});
    let r = rig.send(&body, browser()).unwrap();
    assert_eq!(r.results[0].status, Status::Refused);
    let log = rig.store.consent.borrow();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].categories.contains("\"analytics\":false"));
    assert!(log[0].message_id.starts_with("noid-"));
    assert_eq!(log[0].source, "banner");
    assert!(!format!("{log:?}").contains("jo@x.io"));
    assert!(log[1].categories.contains("\"analytics\":true"));
}

#[test]
fn gpc_and_marketing_denial_strip_every_ad_id() {
    let rig = rig();
    let e = json!({"type": "page", "messageId": "g1", "anonymousId": "a1",
        "properties": {"url": "https://shop.example/?gclid=G1&x=1", "search": "?fbclid=F1"},
        "context": {"consent": granted(),
            "page": {"url": "https://shop.example/?gclid=G1&x=1", "search": "?gclid=G1&x=1",
                     "referrer": "https://ads.example/?msclkid=M1"},
            "firstTouch": {"clickIds": {"gclid": "G0"}, "gclid": "G0", "landing": "/?ttclid=T0"},
            "lastTouch": {"twclid": "W1"},
            // As Jitsu's SDK copies the ad platforms' cookies into every event.
            "clientIds": {"fbp": "fb.1.1.P1", "fbc": "fb.1.1.C1", "_GCL_AU": "1.1.A1",
                          "ga4": {"clientId": "GA4ID"}},
            "cookies": {"_ttp": "TT1", "uetvid": "UV1"}}});
    let gpc = EdgeInfo {
        gpc: true,
        ..browser()
    };
    let body = json!({"writeKey": "wk_web", "batch": [e]});
    let r = rig.send(&body, gpc).unwrap();
    assert_eq!(r.accepted, 1, "{r:?}");
    let stored = rig.store.events.borrow()[0].payload.clone();
    for id in [
        "G0", "G1", "F1", "M1", "T0", "W1", "clickIds", "gclid", "P1", "C1", "A1", "TT1", "UV1",
    ] {
        assert!(!stored.contains(id), "{id} kept: {stored}");
    }
    assert!(stored.contains("x=1"), "other parameters stay: {stored}");
    assert!(stored.contains("GA4ID"), "an analytics id stays: {stored}");
}

#[test]
fn a_resumed_erasure_finishes_the_job() {
    let rig = rig();
    let srv = EdgeInfo::default();
    let ev = |id: &str, anon: &str| json!({"type": "track", "messageId": id, "anonymousId": anon, "userId": "u-erase", "event": "E"});
    let r = rig
        .send(
            &json!({"writeKey": "wk_srv", "batch": [ev("e1", "a1"), ev("e2", "a2"),
            {"type": "track", "messageId": "q1", "anonymousId": "a1"}]}),
            srv.clone(),
        )
        .unwrap();
    let profile = r.results[0]
        .profile_id
        .clone()
        .expect("server sources see profile ids");
    assert_eq!(rig.store.quarantined.borrow().len(), 1);
    rig.send(
        &json!({"writeKey": "wk_srv", "batch": [ev("other", "a9")]}),
        srv,
    )
    .unwrap();
    let erase = || {
        pollster::block_on(edge_collector::erasure::erase_profile(
            &rig.store,
            &rig.identity,
            "wk_srv",
            &profile,
            "2026-11-23T22:19:05.000Z",
        ))
    };
    rig.store.fail_erase_once.set(true);
    assert!(erase().is_err(), "the first attempt dies mid-way");
    assert_eq!(rig.store.jobs.borrow().len(), 1, "the job is recorded");
    let report = erase().unwrap();
    assert!(report.resumed);
    assert!(rig.store.jobs.borrow().is_empty());
    assert_eq!(rig.store.receipts.borrow().len(), 1);
    assert!(
        rig.store.quarantined.borrow().is_empty(),
        "found by its anonymous id"
    );
    // The user's later event joined the same profile (same userId): erased too; nothing
    // else is left of the person, in the store or the graph.
    assert!(
        rig.store.events.borrow().is_empty(),
        "{:?}",
        rig.store.events.borrow()
    );
    assert!(!format!("{:?}", rig.identity.graphs.borrow()).contains("u-erase"));
    assert!(matches!(
        erase(),
        Err(edge_collector::error::Error::NoSuchProfile)
    ));
}

#[test]
fn a_pending_claim_is_answered_503_and_the_retry_stores() {
    let rig = rig();
    let ev = json!({"type": "track", "messageId": "p1", "anonymousId": "a1", "event": "E"});
    // A request that died between claim and store left this claim.
    pollster::block_on(<MemoryDedup as dedup::Deduplicator>::claim(
        &rig.dedup,
        &[Claim {
            key: dedup::key("wk_srv", "a1", "p1"),
            fingerprint: "whatever".into(),
            owner: "dead".into(),
        }],
        NOW,
    ))
    .unwrap();
    let body = json!({"writeKey": "wk_srv", "batch": [ev,
        {"type": "track", "messageId": "p2", "anonymousId": "a1", "event": "E"}]});
    let e = rig.send(&body, EdgeInfo::default()).unwrap_err();
    assert_eq!((e.status(), e.code()), (503, "in_flight"));
    assert!(e.retry_after().is_some());
    assert!(rig.store.events.borrow().is_empty());
    // p2's claim was released with the refusal: the retry after the lease stores both.
    let bytes = serde_json::to_vec(&body).unwrap();
    let later = NOW + dedup::LEASE_MS + 1;
    let r = rig
        .request(Endpoint::Batch, &bytes, None, EdgeInfo::default(), later)
        .unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
}

/// One step of a request in the dedup protocol model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Claim,
    Store,
    Finish,
}

/// A request's state in the model.
#[derive(Debug, Clone)]
struct Req {
    owner: String,
    step: Step,
    crashed: bool,
    /// The claim it got.
    seen: Option<Seen>,
    answer: Option<&'static str>,
}

proptest! {
    #![proptest_config(common::cases(512))]

    /// Two senders carry the same event (same messageId and content) through claim ->
    /// store -> commit, interleaved in any order, each possibly killed after any step,
    /// with the clock advancing; a sender whose request died or was answered 503 retries
    /// with a new request. Whatever happens: an answer `duplicate` is only given for an
    /// event that is stored, and once every sender has its answer the event is stored
    /// exactly once.
    #[test]
    fn claim_store_commit_never_loses(
        schedule in proptest::collection::vec((0usize..2, any::<bool>(), 0i64..20_000), 1..40),
    ) {
        let mut table: HashMap<String, dedup::Entry> = HashMap::new();
        let mut store: HashSet<String> = HashSet::new();
        let mut inserts = 0;
        let mut now = 0i64;
        let mut next_owner = 0;
        let new_req = |next: &mut i32| {
            *next += 1;
            Req { owner: format!("o{next}"), step: Step::Claim, crashed: false, seen: None, answer: None }
        };
        let mut senders = vec![new_req(&mut next_owner), new_req(&mut next_owner)];
        let key = "wk\u{1f}m1".to_string();
        let claim = |owner: &str| Claim { key: key.clone(), fingerprint: "f".into(), owner: owner.into() };
        let mut steps = schedule.into_iter().chain(std::iter::repeat_n((0, false, 1000), 200));
        let mut guard = 0;
        let done = |r: &Req| matches!(r.answer, Some("accepted" | "duplicate"));
        while !senders.iter().all(done) && guard < 400 {
            guard += 1;
            let (who, crash, tick) = steps.next().unwrap_or((guard % 2, false, 1000));
            let who = if done(&senders[who]) { 1 - who } else { who };
            now += tick;
            let r = &mut senders[who];
            if r.crashed || r.answer == Some("retry") {
                *r = new_req(&mut next_owner); // the sender retries
                continue;
            }
            match r.step {
                Step::Claim => {
                    let s = dedup::claim_in(&mut table, &[claim(&r.owner)], now).remove(0);
                    match s {
                        Seen::New => r.step = Step::Store,
                        Seen::Duplicate => {
                            prop_assert!(store.contains(&key), "duplicate answered for an event never stored");
                            r.answer = Some("duplicate");
                        }
                        Seen::Pending => r.answer = Some("retry"),
                        Seen::Conflict { .. } => prop_assert!(false, "same content is no conflict"),
                    }
                    r.seen = Some(s);
                }
                Step::Store => {
                    inserts += 1;
                    store.insert(key.clone()); // idempotent on the messageId, as D1's
                    r.step = Step::Finish;
                }
                Step::Finish => {
                    dedup::commit_in(&mut table, std::slice::from_ref(&key), now);
                    r.answer = Some("accepted");
                }
            }
            if crash && r.answer.is_none() {
                r.crashed = true;
            }
        }
        prop_assert!(senders.iter().all(|s| matches!(s.answer, Some("accepted" | "duplicate"))), "{senders:?}");
        prop_assert!(store.contains(&key));
        prop_assert!(inserts >= 1);
    }
}

#[test]
fn a_failed_insert_after_a_merge_still_moves_the_events_on_retry() {
    let rig = rig();
    let srv = EdgeInfo::default();
    let ev = |id: &str, anon: &str, props: Value| json!({"type": "track", "messageId": id, "anonymousId": anon, "event": "E", "properties": props});
    let email = tracking_plan::identifiers::sha256_hex("merge.me@example.com");
    rig.send(&json!({"writeKey": "wk_srv", "batch": [ev("a1", "laptop-3", json!({"email_sha256": email}))]}), srv.clone()).unwrap();
    rig.send(
        &json!({"writeKey": "wk_srv", "batch": [ev("b1", "phone-7", json!({}))]}),
        srv.clone(),
    )
    .unwrap();
    let profile = |id: &str| rig.profile_of(id);
    assert_ne!(profile("a1"), profile("b1"));
    // The soft login on the phone merges the two profiles, then the insert fails.
    let login = json!({"writeKey": "wk_srv", "batch": [ev("b2", "phone-7", json!({"email_sha256": email}))]});
    *rig.store.fail_with.borrow_mut() = Some("D1 is down".into());
    assert_eq!(rig.send(&login, srv.clone()).unwrap_err().status(), 503);
    *rig.store.fail_with.borrow_mut() = None;
    // The retry gets the same resolution (with the absorbed profile), so the phone's
    // earlier event moves to the merged profile in the same write.
    let r = rig.send(&login, srv).unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(profile("b1"), profile("b2"));
    assert_eq!(profile("a1"), profile("b2"));
}

#[test]
fn replay_keeps_the_edge_signals_and_only_clears_what_left_the_quarantine() {
    use edge_collector::pipeline::replay::{batches, Row};
    let row = |id: i64, gpc: bool| Row {
        id,
        write_key: "wk_web".into(),
        payload: json!({"type": "track", "messageId": format!("q{id}"), "anonymousId": "a", "event": "E"}),
        qkey: Some(format!("k{id}")),
        gpc,
        country: Some("DE".into()),
    };
    let b = batches(vec![row(1, false), row(2, true), row(3, false)]);
    assert_eq!(b.len(), 2, "a GPC event is replayed with GPC");
    assert!(b.iter().any(|x| x.gpc && x.rows.len() == 1));
    let plain = b.iter().find(|x| !x.gpc).unwrap();
    assert_eq!(plain.country.as_deref(), Some("DE"));
    // Row 1 is stored now; row 3 is quarantined again for the same reasons (same key).
    let mut r1 = edge_collector::pipeline::Verdict {
        message_id: None,
        status: Status::Accepted,
        reasons: vec![],
        warnings: vec![],
        profile_id: None,
        qkey: None,
    };
    let mut r3 = r1.clone();
    r3.status = Status::Quarantined;
    r3.qkey = Some("k3".into());
    r1.qkey = None;
    let report = Report {
        ok: true,
        accepted: 1,
        duplicates: 0,
        quarantined: 1,
        refused: 0,
        results: vec![r1, r3],
        cookie_id: None,
        clear_cookie: false,
    };
    assert_eq!(plain.done(&report), vec![1]);
}

/// One event of a batch whose events may share their context's text.
fn shared_context_event(i: usize, variant: usize, ctx: &Value) -> Value {
    let id = format!("sc-{i}");
    let mut e = match variant % 6 {
        // Accepted, on plan.
        0 => json!({"type": "track", "event": "Product Added",
                    "properties": {"product_id": "ETH-GUJI", "price": 14.5, "currency": "EUR"}}),
        // Off plan: kept with its violations noted in its context.
        1 => {
            json!({"type": "track", "event": "Product Added", "properties": {"product_id": "bad", "price": -1}})
        }
        // Unplanned (flagged), with raw PII in its properties.
        2 => {
            json!({"type": "track", "event": "Wished", "properties": {"note": "mail jo.doe@example.org", "gclid": "g1"}})
        }
        // Quarantined: no type.
        3 => json!({"event": "E"}),
        // An identify call with hashed traits.
        4 => json!({"type": "identify", "traits": {"email": "Ann@Example.com", "plan": "pro"}}),
        _ => {
            json!({"type": "page", "name": "Home", "properties": {"url": "https://shop.example/?e=jo%40x.io"}})
        }
    };
    e["messageId"] = json!(id);
    e["anonymousId"] = json!("anon-sc");
    e["timestamp"] = json!("2026-11-23T22:19:04.000Z");
    if !ctx.is_null() {
        e["context"] = ctx.clone();
    }
    e
}

/// What was kept of each event, with the profile ids (random) left out.
fn kept_by_id(rig: &common::Rig) -> Vec<String> {
    let without_profile = |payload: &str| {
        let mut v: Value = serde_json::from_str(payload).unwrap();
        v["context"].as_object_mut().map(|c| c.remove("profileId"));
        v.to_string()
    };
    let mut out: Vec<String> = rig
        .store
        .events
        .borrow()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e.message_id,
                e.fingerprint,
                without_profile(&e.payload)
            )
        })
        .chain(
            rig.store
                .quarantined
                .borrow()
                .iter()
                .map(|q| format!("{:?} {} {}", q.message_id, q.reasons, q.payload)),
        )
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(common::cases(64))]

    /// The events of a batch are read with one reading of each context text they share
    /// (read, scrubbed, enriched once): each is judged and kept exactly as it is when
    /// sent alone, whatever it is (accepted, off plan, quarantined, refused) and in
    /// whatever order the contexts come.
    #[test]
    fn events_sharing_a_context_are_kept_as_each_alone(
        events in proptest::collection::vec((0usize..6, 0usize..4), 1..9),
        batch_context in any::<bool>(),
    ) {
        let contexts = [
            json!({"consent": granted(), "page": {"url": "https://shop.example/p?utm_source=News&e=jo%40x.io",
                   "path": "/p", "search": "?utm_source=News&e=jo%40x.io"}, "traits": {"phone": "+33 6 12 34 56 78"},
                   "fbp": "fb.1.1.1", "ip": "203.0.113.9"}),
            json!({"consent": {"categoryPreferences": {"analytics": true}}, "page": {"url": "https://shop.example/"},
                   "userAgent": "Mozilla/5.0 bot@example.org"}),
            json!({"page": {"url": "https://shop.example/"}}),
            Value::Null,
        ];
        let batch: Vec<Value> = events.iter().enumerate()
            .map(|(i, (v, c))| shared_context_event(i, *v, &contexts[*c])).collect();
        let shared = |b: Vec<Value>| {
            let mut body = json!({"batch": b, "writeKey": "wk_web", "sentAt": "2026-11-23T22:19:05.000Z"});
            if batch_context {
                body["context"] = json!({"consent": granted(), "locale": "fr-FR"});
            }
            body
        };
        let together = rig();
        let r = together.send(&shared(batch.clone()), browser()).unwrap();
        let alone = rig();
        let mut verdicts = Vec::new();
        for e in &batch {
            verdicts.extend(alone.send(&shared(vec![e.clone()]), browser()).unwrap().results);
        }
        prop_assert_eq!(&r.results, &verdicts);
        prop_assert_eq!(kept_by_id(&together), kept_by_id(&alone));
        let consent = |rig: &common::Rig| format!("{:?}", rig.store.consent.borrow());
        prop_assert_eq!(consent(&together), consent(&alone));
    }
}
