//! The ingestion pipeline, natively, against the in-memory store, dedup and identity.

use base64::Engine as _;
use edge_collector::dedup;
use edge_collector::enrich::EdgeInfo;
use edge_collector::pipeline::{Endpoint, Error as RequestError, Report, Status};
use edge_collector::sources::Sources;
use proptest::strategy::Strategy as _;
use serde_json::{json, Value};
use tracking_plan::identifiers::sha256_hex;
use tracking_plan::time::parse_rfc3339;
use tracking_plan::MessageType;

const SITE: &str = "https://shop.example";

/// `wk_test`: a server source (consent assumed unless denied, no plan). `wk_web`: a
/// browser source with the example site's plan and opt-in consent.
fn sources() -> Sources {
    let plan = include_str!("../../example-site/tracking-plan.json");
    Sources::from_json(&format!(
        r#"{{"wk_test":{{"name":"test","consent":"opt-out"}},
            "wk_web":{{"name":"web","origins":["{SITE}"],"plan":{plan},"rateLimit":50}}}}"#
    ))
    .unwrap()
}

mod common;
use common::NOW;

fn rig() -> common::Rig {
    common::Rig::new(sources())
}

/// A browser on the site's origin.
fn web(rig: &common::Rig, events: Value) -> Report {
    let body = serde_json::to_vec(&json!({"batch": events, "writeKey": "wk_web"})).unwrap();
    rig.request(Endpoint::Batch, &body, None, browser(), NOW)
        .unwrap()
}

fn browser() -> EdgeInfo<'static> {
    EdgeInfo {
        origin: Some(SITE),
        own_origin: SITE,
        ip: Some("203.0.113.77"),
        country: Some("GB"),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        ..EdgeInfo::default()
    }
}

fn run(
    store: &common::Rig,
    endpoint: Endpoint,
    body: &[u8],
    auth: Option<&str>,
) -> Result<Report, RequestError> {
    store.request(endpoint, body, auth, EdgeInfo::default(), NOW)
}

/// Sends `body` to `endpoint` and holds that `n` of its events were accepted.
fn assert_accepted(store: &common::Rig, endpoint: Endpoint, body: &str, n: usize) {
    let r = run(store, endpoint, body.as_bytes(), None).unwrap();
    assert_eq!(r.accepted, n, "{r:?}");
}

const GRANTED: &str =
    r#"{"categoryPreferences":{"analytics":true,"marketing":true,"personalization":true}}"#;

fn web_track(id: &str, event: &str, props: Value) -> Value {
    json!({"type":"track","messageId":id,"anonymousId":"anon-web-1","event":event,
           "properties":props,"context":{"consent": serde_json::from_str::<Value>(GRANTED).unwrap()}})
}

fn batch(events: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"batch": events, "writeKey": "wk_test", "sentAt": "2026-11-23T22:19:05.000Z"}),
    )
    .unwrap()
}

fn track(id: &str) -> Value {
    json!({"type":"track","messageId":id,"anonymousId":"anon-1","event":"Clicked",
           "properties":{"n":1},"timestamp":"2026-11-23T22:19:04.000Z"})
}

#[test]
fn endpoints_from_paths() {
    assert_eq!(Endpoint::from_path("/v1/batch"), Some(Endpoint::Batch));
    assert_eq!(Endpoint::from_path("/v1/b"), Some(Endpoint::Batch));
    assert_eq!(
        Endpoint::from_path("/v1/t"),
        Some(Endpoint::Single(MessageType::Track))
    );
    assert_eq!(
        Endpoint::from_path("/v1/identify"),
        Some(Endpoint::Single(MessageType::Identify))
    );
    assert_eq!(Endpoint::from_path("/v1/nope"), None);
    assert_eq!(Endpoint::from_path("/admin/v1/batch"), None);
    assert_eq!(
        Endpoint::from_path("/com.snowplowanalytics.snowplow/tp2"),
        Some(Endpoint::Snowplow)
    );
    assert_eq!(
        Endpoint::from_path("/com.snowplowanalytics.snowplow/tp1"),
        None
    );
}

#[test]
fn accepts_a_batch_and_stores_every_field() {
    let store = rig();
    let r = run(
        &store,
        Endpoint::Batch,
        &batch(json!([track("m1"), track("m2")])),
        None,
    )
    .unwrap();
    assert_eq!((r.accepted, r.duplicates, r.quarantined), (2, 0, 0));
    let events = store.store.events.borrow();
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert_eq!(e.write_key, "wk_test");
    assert_eq!(e.message_id, "m1");
    assert_eq!(e.kind, "track");
    assert_eq!(e.event.as_deref(), Some("Clicked"));
    assert_eq!(e.anonymous_id.as_deref(), Some("anon-1"));
    assert_eq!(e.received_at, "2026-11-23T22:19:05.000Z");
    // The client was sent 1 s after the event: that offset is kept relative to receivedAt.
    assert_eq!(parse_rfc3339(&e.timestamp), Some(NOW - 1000));
    let payload: Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(payload["properties"], json!({"n":1}));
    assert_eq!(payload["originalTimestamp"], "2026-11-23T22:19:04.000Z");
    assert_eq!(payload["receivedAt"], "2026-11-23T22:19:05.000Z");
}

#[test]
fn clock_skew_is_corrected() {
    let store = rig();
    // A client whose clock is one hour behind.
    let body = serde_json::to_vec(&json!({"writeKey":"wk_test","sentAt":"2026-11-23T21:19:05.000Z",
        "batch":[{"type":"page","messageId":"p","anonymousId":"a","timestamp":"2026-11-23T21:19:03.000Z"}]}))
    .unwrap();
    run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(
        parse_rfc3339(&store.store.events.borrow()[0].timestamp),
        Some(NOW - 2000)
    );
}

#[test]
fn repeats_are_duplicates_stored_once() {
    let store = rig();
    run(&store, Endpoint::Batch, &batch(json!([track("m1")])), None).unwrap();
    let r = run(
        &store,
        Endpoint::Batch,
        &batch(json!([track("m1"), track("m1")])),
        None,
    )
    .unwrap();
    assert_eq!(
        r.results.iter().map(|v| v.status).collect::<Vec<_>>(),
        [Status::Duplicate; 2]
    );
    assert_eq!(store.store.events.borrow().len(), 1);
}

#[test]
fn bad_events_are_quarantined_with_reasons_not_dropped() {
    // (The third has no messageId: it is given one; see below.)
    let store = rig();
    let body = batch(json!([
        track("ok"),
        {"type":"track","messageId":"no-event","anonymousId":"a"},
        {"type":"track","anonymousId":"a","event":"x"},
        {"type":"bogus","messageId":"t","anonymousId":"a"},
        "not an object",
        {"type":"page","messageId":"no-identity"},
    ]));
    let r = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!((r.accepted, r.quarantined), (2, 4));
    let kinds: Vec<_> = r
        .results
        .iter()
        .map(|v| v.reasons.first().map(|x| x.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some("missing_required"),
            None,
            Some("missing_type"),
            Some("not_an_object"),
            Some("missing_identity")
        ]
    );
    let q = store.store.quarantined.borrow();
    assert_eq!(q.len(), 4);
    assert_eq!(q[0].message_id.as_deref(), Some("no-event"));
    assert_eq!(q[2].payload, "\"not an object\"");
}

/// Segment's HTTP API takes messages without a messageId, and none of its documented
/// examples has one: each is given one. With a client time it comes from the content, so
/// a retry is a duplicate; without, from the request, so each untimed message is kept.
#[test]
fn messages_without_a_message_id_are_given_one_and_a_timed_retry_is_a_duplicate() {
    let store = rig();
    let identify = br#"{"userId":"019mr8mf4r","traits":{"email":"pgibbons@example.com","name":"Peter Gibbons"},
        "context":{"ip":"24.5.68.47"},"timestamp":"2012-12-02T00:30:08.276Z","writeKey":"wk_test"}"#;
    let send =
        |body: &[u8]| run(&store, Endpoint::Single(MessageType::Identify), body, None).unwrap();
    let first = send(identify);
    assert_eq!(first.accepted, 1, "{first:?}");
    let id = first.results[0].message_id.clone().unwrap();
    assert!(id.starts_with("sl-") && id.len() == 35, "{id}");
    let retry = send(identify);
    assert_eq!(retry.results[0].status, Status::Duplicate);
    assert_eq!(retry.results[0].message_id.as_deref(), Some(id.as_str()));
    // Another time is another event; an empty messageId is none.
    let later = String::from_utf8_lossy(identify).replace("00:30:08.276Z", "00:30:09.000Z");
    let later = later.replace(r#""userId""#, r#""messageId":"","userId""#);
    let r = send(later.as_bytes());
    assert_eq!(r.accepted, 1);
    assert_ne!(r.results[0].message_id.as_deref(), Some(id.as_str()));
    // Untimed: two alike in one batch are two events, and a resend is stored again.
    let beat = json!({"type": "track", "userId": "u-beat", "event": "Heartbeat"});
    let body = batch(json!([beat, beat]));
    let r = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
    assert_ne!(r.results[0].message_id, r.results[1].message_id);
    assert_eq!(
        run(&store, Endpoint::Batch, &body, None).unwrap().accepted,
        2
    );
    let stored = store.store.events.borrow();
    assert_eq!(
        stored
            .iter()
            .filter(|e| e.user_id.as_deref() == Some("u-beat"))
            .count(),
        4
    );
    let peter: Vec<_> = stored
        .iter()
        .filter(|e| e.user_id.as_deref() == Some("019mr8mf4r"))
        .collect();
    assert_eq!(peter.len(), 2);
    assert!(
        peter.iter().all(|e| !e.payload.contains("pgibbons@")),
        "hashed as any event"
    );
}

#[test]
fn json_that_splits_but_cannot_be_read_is_quarantined_as_unreadable_and_kept_empty() {
    let store = rig();
    let ok = serde_json::to_string(&track("readable")).unwrap();
    // Each splits from the batch (the raw scan accepts it) but serde cannot read it.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    let unreadable = [
        format!(
            r#"{{"type":"track","messageId":"u2","anonymousId":"a","event":"x jo@x.io","properties":{{"n":1e400,"d":{objects}}}}}"#
        ),
        format!(
            r#"{{"type":"track","messageId":"u3","anonymousId":"a","event":"x","properties":{{"d":{deep}}}}}"#
        ),
    ];
    let body = format!(
        r#"{{"writeKey":"wk_test","batch":[{ok},{}]}}"#,
        unreadable.join(",")
    );
    let r = run(&store, Endpoint::Batch, body.as_bytes(), None).unwrap();
    assert_eq!((r.accepted, r.quarantined), (1, 2), "{r:?}");
    for v in &r.results[1..] {
        assert_eq!(v.reasons[0].kind.as_str(), "unreadable_json");
        assert!(
            v.reasons[0].message.contains("column"),
            "{:?}",
            v.reasons[0]
        );
        assert!(!v.reasons[0].message.contains("jo@x.io"));
    }
    let q = store.store.quarantined.borrow();
    assert_eq!(q.len(), 2);
    assert!(
        q.iter().all(|q| q.payload == "null"),
        "content that cannot be scrubbed is not kept"
    );
    assert!(!store.at_rest().contains("jo@x.io"));
    drop(q);

    // Without consent (an opt-in source), it is refused: nothing of it is kept.
    let web_body = format!(r#"{{"writeKey":"wk_web","batch":[{}]}}"#, unreadable[0]);
    let r = store
        .request(Endpoint::Batch, web_body.as_bytes(), None, browser(), NOW)
        .unwrap();
    assert_eq!(r.results[0].status, Status::Refused);
    assert_eq!(store.store.quarantined.borrow().len(), 2);

    // Two unreadable messages of the same shape, unreadable at the same column, are two
    // rows; a retry of them is the same two rows; their planted email is in no key.
    let alike: Vec<String> = ["u4 mo@x.io", "u5 mo@x.io"]
        .iter()
        .map(|id| {
            format!(r#"{{"type":"track","messageId":"{id}","anonymousId":"a","event":"x","properties":{{"d":{deep}}}}}"#)
        })
        .collect();
    let body = format!(r#"{{"writeKey":"wk_test","batch":[{}]}}"#, alike.join(","));
    for _ in 0..2 {
        let r = run(&store, Endpoint::Batch, body.as_bytes(), None).unwrap();
        assert_eq!(r.quarantined, 2, "{r:?}");
        assert_eq!(
            r.results[0].reasons, r.results[1].reasons,
            "the same column"
        );
        assert_ne!(r.results[0].qkey, r.results[1].qkey);
        assert_eq!(store.store.quarantined.borrow().len(), 4);
    }
    assert!(!store.at_rest().contains("mo@x.io"));
}

/// A credential in an address (a reset link's token, an OAuth token in a fragment, a
/// signed URL's signature) is not kept in any field: the page's context, properties,
/// traits, other fields, and a quarantined event's content. The rest of each address
/// stays as it came.
#[test]
fn credentials_in_addresses_are_not_kept() {
    let store = rig();
    let reset = "https://shop.example/reset?token=Zx81kQ&utm_source=mail";
    let page = json!({"url": reset, "search": "?token=Zx81kQ&utm_source=mail",
                      "referrer": "https://shop.example/cb#access_token=ya29.AbC&state=1"});
    let mut tracked = track("c1");
    tracked["context"] = json!({"page": page});
    tracked["properties"] = json!({"file": "https://cdn.example/a.pdf?X-Amz-Signature=9f0e77&X-Amz-Expires=60",
                                   "links": [{"href": "/login?magic_token=M4g1c"}]});
    tracked["custom"] = json!({"back": "/account?api_key=AK99"});
    let mut identified = track("c2");
    identified["type"] = json!("identify");
    identified["traits"] = json!({"last_link": "https://shop.example/set?new_password=hunter2x"});
    let mut invalid = track("c3");
    invalid["event"] = json!(5);
    invalid["properties"] = json!({"u": "/r?token=Q7uar4nt1ne"});
    let body = json!({"writeKey": "wk_test", "batch": [tracked, identified, invalid]});
    let r = run(&store, Endpoint::Batch, body.to_string().as_bytes(), None).unwrap();
    assert_eq!((r.accepted, r.quarantined), (2, 1), "{r:?}");
    let at_rest = store.at_rest();
    for secret in [
        "Zx81kQ",
        "ya29.AbC",
        "9f0e77",
        "M4g1c",
        "AK99",
        "hunter2x",
        "Q7uar4nt1ne",
    ] {
        assert!(!at_rest.contains(secret), "{secret} kept");
    }
    let events = store.store.events.borrow();
    let first: Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(
        first["context"]["page"]["url"],
        "https://shop.example/reset?token=redacted&utm_source=mail"
    );
    assert_eq!(
        first["context"]["campaign"]["source"], "mail",
        "the campaign still read"
    );
    assert_eq!(
        first["properties"]["file"],
        "https://cdn.example/a.pdf?X-Amz-Signature=redacted&X-Amz-Expires=60"
    );
    // The sender is told where, as for raw PII.
    let warned: Vec<&str> = r.results[0]
        .warnings
        .iter()
        .filter(|w| w.message.contains("credential"))
        .map(|w| w.path.as_str())
        .collect();
    for at in [
        "$.properties.file",
        "$.properties.links[0].href",
        "$.custom.back",
    ] {
        assert!(warned.contains(&at), "{at}: {warned:?}");
    }
    drop(events);

    // A source that quarantines raw PII still stores the event: a credential is not
    // personal data, and a page view whose address held a token is still a page view.
    let strict = Sources::from_json(
        r#"{"k":{"name":"strict","consent":"opt-out","plan":{"version":"1","rawPii":"quarantine"}}}"#,
    )
    .unwrap();
    let rig = common::Rig::new(strict);
    let body = json!({"writeKey": "k", "batch": [track("c4")]});
    let mut body = body;
    body["batch"][0]["properties"] = json!({"back": "/r?reset_token=T0k3nStr1ct"});
    let r = rig
        .request(
            Endpoint::Batch,
            body.to_string().as_bytes(),
            None,
            EdgeInfo::default(),
            NOW,
        )
        .unwrap();
    assert_eq!(r.results[0].status, Status::Accepted, "{r:?}");
    assert!(!rig.at_rest().contains("T0k3nStr1ct"));
}

/// A number too large for a double (`1e400`, in a Python library's batch) is read as a
/// browser's `JSON.parse` reads it (`Infinity`, which JSON writes `null`): the event is
/// kept with the rest of its content, where serde_json had refused it whole and it was
/// quarantined as nothing but its reason. In the properties, in the context (the events
/// around it keep sharing theirs), and in a message otherwise invalid (quarantined with
/// its content).
#[test]
fn a_number_too_large_for_a_double_is_read_as_a_browser_reads_it() {
    let store = rig();
    let ctx = r#"{"page":{"path":"/"},"screen":{"width":1e999}}"#;
    let with_ctx = |id: &str| {
        format!(
            r#"{{"type":"track","messageId":"{id}","anonymousId":"a","event":"Ctx","context":{ctx}}}"#
        )
    };
    let batch = [
        r#"{"type":"track","messageId":"n1","anonymousId":"a","event":"Big","properties":{"n":1e400,"m":-2E+999,"ok":1.5,"s":"1e400","e":"jo@x.io"}}"#.to_string(),
        with_ctx("n2"),
        with_ctx("n3"),
        r#"{"type":"track","messageId":"n4","anonymousId":"a","event":5,"properties":{"n":1e400}}"#.to_string(),
    ];
    let body = format!(r#"{{"writeKey":"wk_test","batch":[{}]}}"#, batch.join(","));
    let r = run(&store, Endpoint::Batch, body.as_bytes(), None).unwrap();
    assert_eq!((r.accepted, r.quarantined), (3, 1), "{r:?}");
    let events = store.store.events.borrow();
    let payload = |id: &str| -> Value {
        serde_json::from_str(&events.iter().find(|e| e.message_id == id).unwrap().payload).unwrap()
    };
    let big = payload("n1");
    assert_eq!(big["properties"]["n"], Value::Null);
    assert_eq!(big["properties"]["m"], Value::Null);
    assert_eq!(big["properties"]["ok"], 1.5);
    assert_eq!(big["properties"]["s"], "1e400", "a string is not a number");
    assert_ne!(big["properties"]["e"], "jo@x.io", "scrubbed as any event");
    for id in ["n2", "n3"] {
        let p = payload(id);
        assert_eq!(p["context"]["screen"]["width"], Value::Null);
        assert_eq!(p["context"]["page"]["path"], "/");
    }
    let q = store.store.quarantined.borrow();
    assert_eq!(r.results[3].reasons[0].kind.as_str(), "invalid_field");
    let kept: Value = serde_json::from_str(&q[0].payload).unwrap();
    assert_eq!(
        (kept["messageId"].as_str(), &kept["properties"]["n"]),
        (Some("n4"), &Value::Null)
    );
    assert!(!store.at_rest().contains("jo@x.io"));
}

/// `JSON.stringify` writes a string cut through a surrogate pair (a title sliced through
/// an emoji) with a lone surrogate escape, which serde_json refuses: the collector reads
/// it as U+FFFD, as the SDK and the browsers do, and keeps the event, through every
/// endpoint. Pairs, escaped backslashes and the rest of the text stay as they were, and
/// a raw email beside the surrogate is still found.
#[test]
fn a_lone_surrogate_is_read_as_the_replacement_character_and_the_event_kept() {
    let store = rig();
    let cut = r#"{"type":"track","messageId":"s1","anonymousId":"a","event":"Cut \ud83d","properties":{"title":"\ude00 x \ud83d\ude00 \\ud800 \uD83D jo@x.io","n":1}}"#;
    let body = format!(r#"{{"writeKey":"wk_test","batch":[{cut}]}}"#);
    assert_accepted(&store, Endpoint::Batch, &body, 1);
    let single =
        r#"{"writeKey":"wk_test","messageId":"s2","anonymousId":"a","event":"Solo \udbff"}"#;
    assert_accepted(&store, Endpoint::Single(MessageType::Track), single, 1);
    // PostHog's payload, base64 in a form field as posthog-js sends it without gzip.
    let ph = r#"{"api_key":"wk_test","batch":[{"uuid":"s3","event":"Ph \ud83d","properties":{"distinct_id":"a"}}]}"#;
    use base64::Engine as _;
    let form = format!(
        "data={}",
        base64::engine::general_purpose::STANDARD.encode(ph)
    );
    let r = store
        .request(
            Endpoint::PostHog,
            form.as_bytes(),
            None,
            EdgeInfo::default(),
            NOW,
        )
        .unwrap();
    assert_eq!(r.accepted, 1, "{r:?}");

    let events = store.store.events.borrow();
    let names: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(names, ["Cut \u{fffd}", "Solo \u{fffd}", "Ph \u{fffd}"]);
    let payload: Value = serde_json::from_str(&events[0].payload).unwrap();
    let title = payload["properties"]["title"].as_str().unwrap();
    assert!(
        title.starts_with("\u{fffd} x \u{1f600} \\ud800 \u{fffd} "),
        "{title}"
    );
    assert!(
        !title.contains("jo@x.io"),
        "the raw email is still hashed: {title}"
    );
    assert_eq!(payload["properties"]["n"], 1);
    drop(events);
    assert!(!store.at_rest().contains("jo@x.io"));
}

#[test]
fn a_byte_order_mark_before_the_body_is_read_past() {
    let store = rig();
    let mut body = "\u{feff}".as_bytes().to_vec();
    body.extend(batch(json!([track("bom")])));
    let r = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(r.accepted, 1);
}

#[test]
fn oversized_message_is_quarantined_and_oversized_batch_refused() {
    let store = rig();
    let mut big = track("big");
    big["properties"]["blob"] = json!("x".repeat(33 * 1024));
    let r = run(
        &store,
        Endpoint::Batch,
        &batch(json!([big, track("small")])),
        None,
    )
    .unwrap();
    assert_eq!(r.results[0].status, Status::Quarantined);
    assert_eq!(r.results[0].reasons[0].kind.as_str(), "too_large");
    assert_eq!(r.results[0].message_id.as_deref(), Some("big"));
    assert_eq!(r.results[1].status, Status::Accepted);

    let huge: Vec<Value> = (0..20)
        .map(|i| {
            let mut t = track(&format!("h{i}"));
            t["properties"]["blob"] = json!("y".repeat(30 * 1024));
            t
        })
        .collect();
    let e = run(&store, Endpoint::Batch, &batch(json!(huge)), None).unwrap_err();
    assert_eq!((e.status(), e.code()), (413, "batch_too_large"));
}

/// A server that writes Latin-1 (or cuts a character) into a JSON body: every event is
/// kept, each bad byte read as U+FFFD as a browser's `TextDecoder` reads it, and PII
/// around the bad bytes is still found. Before, the whole batch was refused (400).
#[test]
fn bytes_that_are_not_utf8_are_read_as_a_browser_reads_them() {
    let store = rig();
    let mut body = Vec::new();
    body.extend_from_slice(br#"{"writeKey":"wk_test","batch":["#);
    body.extend_from_slice(br#"{"type":"track","event":"Caf"#);
    body.extend_from_slice(&[0xe9]); // Latin-1 `é`
    body.extend_from_slice(br#"","messageId":"u1","anonymousId":"a","properties":{"note":"x"#);
    body.extend_from_slice(&[0xc3]); // half of UTF-8 `é`
    body.extend_from_slice(br#" jo.doe@example.com","k"#);
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(br#"":1}},"#);
    body.extend_from_slice(
        br#"{"type":"track","event":"Fine","messageId":"u2","anonymousId":"a"}]}"#,
    );
    let r = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
    let events = store.store.events.borrow();
    let first = events.iter().find(|e| e.message_id == "u1").unwrap();
    assert_eq!(first.event.as_deref(), Some("Caf\u{fffd}"));
    let payload: Value = serde_json::from_str(&first.payload).unwrap();
    let note = payload["properties"]["note"].as_str().unwrap();
    assert!(note.starts_with("x\u{fffd} "), "{note}");
    assert!(
        !first.payload.contains("jo.doe@example.com"),
        "{}",
        first.payload
    );
    assert_eq!(payload["properties"]["k\u{fffd}\u{fffd}"], 1);
}

#[test]
fn request_errors_name_their_cause() {
    let store = rig();
    let cases: Vec<(&[u8], Option<&str>, u16, &str)> = vec![
        (b"{not json", None, 400, "invalid_json"),
        (b"", None, 400, "empty_body"),
        (b"[1,2]", None, 400, "invalid_body"),
        (br#"{"writeKey":"wk_test"}"#, None, 400, "missing_batch"),
        (br#"{"batch":[]}"#, None, 401, "missing_write_key"),
        (
            br#"{"batch":[],"writeKey":"nope"}"#,
            None,
            401,
            "unknown_write_key",
        ),
        (
            br#"{"batch":[]}"#,
            Some("Bearer x"),
            401,
            "bad_authorization",
        ),
        // Not UTF-8: read as U+FFFD (`bytes_that_are_not_utf8_are_read_as_a_browser_reads_them`),
        // which is not JSON.
        (&[0xff, 0xfe], None, 400, "invalid_json"),
    ];
    for (body, auth, status, code) in cases {
        let e = run(&store, Endpoint::Batch, body, auth).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (status, code),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(e.to_json()["error"]["code"], code);
    }
    assert!(store.store.events.borrow().is_empty());
}

#[test]
fn basic_auth_write_key_and_single_endpoints() {
    let store = rig();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("wk_test:")
    );
    let body = br#"{"messageId":"s1","userId":42,"traits":{"plan":"pro"}}"#;
    let r = run(
        &store,
        Endpoint::Single(MessageType::Identify),
        body,
        Some(&auth),
    )
    .unwrap();
    assert_eq!(r.accepted, 1);
    let e = &store.store.events.borrow()[0];
    assert_eq!((e.kind, e.user_id.as_deref()), ("identify", Some("42")));
}

#[test]
fn write_key_is_not_stored_with_the_event() {
    let store = rig();
    let body = br#"{"type":"track","messageId":"w","anonymousId":"a","event":"E","writeKey":"wk_test","_metadata":{"bundled":[]}}"#;
    let r = run(&store, Endpoint::Single(MessageType::Track), body, None).unwrap();
    assert_eq!(r.accepted, 1, "the body's write key still authenticates");
    let payload: Value = serde_json::from_str(&store.store.events.borrow()[0].payload).unwrap();
    assert!(payload.get("writeKey").is_none());
    assert_eq!(
        payload["_metadata"],
        json!({"bundled": []}),
        "other unknown fields are kept"
    );
}

#[test]
fn batch_context_is_merged_under_the_message_context() {
    let store = rig();
    let body = serde_json::to_vec(
        &json!({"writeKey":"wk_test","context":{"ip":"1.2.3.4","locale":"de"},
        "batch":[{"type":"page","messageId":"p","anonymousId":"a","context":{"locale":"fr"}}]}),
    )
    .unwrap();
    run(&store, Endpoint::Batch, &body, None).unwrap();
    let payload: Value = serde_json::from_str(&store.store.events.borrow()[0].payload).unwrap();
    assert_eq!(payload["context"]["locale"], "fr");
    assert_eq!(payload["context"]["ip"], "1.2.3.0", "stored truncated");
}

#[test]
fn batch_context_is_scanned_for_raw_pii_and_read_for_consent() {
    let store = rig();
    let body = serde_json::to_vec(&json!({"writeKey":"wk_test",
        "context":{"page":{"url":"https://shop.example/thanks?e=ann@example.com"},
                   "consent": serde_json::from_str::<Value>(GRANTED).unwrap()},
        "batch":[{"type":"page","messageId":"p","anonymousId":"a"}]}))
    .unwrap();
    let report = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(report.results[0].status, Status::Accepted, "{report:?}");
    let payload = &store.store.events.borrow()[0].payload;
    assert!(!payload.contains("ann@example.com"), "{payload}");
    assert!(
        payload.contains(&sha256_hex("ann@example.com")),
        "{payload}"
    );
}

#[test]
fn storage_failure_is_a_retryable_503() {
    let store = rig();
    *store.store.fail_with.borrow_mut() = Some("disk on fire".into());
    let e = run(&store, Endpoint::Batch, &batch(json!([track("m")])), None).unwrap_err();
    assert_eq!((e.status(), e.code()), (503, "storage_unavailable"));
}

/// A batch body with a few changes at random places, of the bytes JSON's syntax turns
/// on (each change: where, and what goes there; no byte is a deletion).
fn mutated(base: &[u8], changes: &[(usize, Option<u8>)]) -> Vec<u8> {
    let mut body = base.to_vec();
    for (at, byte) in changes {
        let at = at % (body.len() + 1);
        match byte {
            Some(b) if at < body.len() && b % 2 == 0 => body[at] = *b,
            Some(b) => body.insert(at, *b),
            None if at < body.len() => {
                body.remove(at);
            }
            None => {}
        }
    }
    body
}

proptest::proptest! {
    /// The events of a body are split without being read, then read one by one: the
    /// answer is still the one serde_json's reading of the whole body gives. A body it
    /// refuses is refused with the same error; a body it reads gets one verdict for
    /// each event it reads there.
    #[test]
    fn a_body_is_answered_as_serde_json_reads_it(
        texts in proptest::collection::vec("[a-z\\\"{}\\[\\],: é]{0,8}", 1..4),
        changes in proptest::collection::vec(
            (0usize..400, proptest::option::of(proptest::sample::select(
                b"{}[],:\"\\ \t0123456789aeflnrstu-+.xE".to_vec()))),
            0..4),
    ) {
        let events: Vec<Value> = texts.iter().enumerate().map(|(i, t)| {
            json!({"type": "track", "messageId": format!("m{i}"), "anonymousId": "a",
                   "event": t, "properties": {"list": [t, 1.5, null, {"k": [true]}]},
                   "context": {"page": {"title": t}}})
        }).collect();
        let base = serde_json::to_vec(&json!({"batch": events, "writeKey": "wk_test",
            "sentAt": "2026-11-23T22:19:05.000Z", "context": {"library": {"name": "x"}}})).unwrap();
        let body = mutated(&base, &changes);
        let store = rig();
        let r = run(&store, Endpoint::Batch, &body, None);
        // Bytes that are not UTF-8 (a change can cut through `é`) are read as U+FFFD.
        let lossy = String::from_utf8_lossy(&body);
        let text = lossy.trim_start_matches('\u{feff}');
        match edge_collector::pipeline::envelope::strict(text) {
            Err(e) => proptest::prop_assert_eq!(r.err(), Some(e)),
            Ok(b) => {
                if let (Ok(r), Some(batch)) = (&r, &b.batch) {
                    proptest::prop_assert_eq!(r.results.len(), batch.len());
                }
                if let Err(e) = &r {
                    let syntax = matches!(e, RequestError::InvalidJson { .. });
                    proptest::prop_assert!(!syntax, "{e:?}");
                }
            }
        }
    }

    #[test]
    fn never_panics_on_any_body(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let store = rig();
        let _ = run(&store, Endpoint::Batch, &body, None);
        let _ = run(&store, Endpoint::Single(MessageType::Track), &body, None);
    }

    #[test]
    fn every_event_gets_exactly_one_verdict(
        events in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(json!({"type":"track","messageId":"x","anonymousId":"a","event":"e"})),
                "[a-z]{0,3}".prop_map(|id| json!({"type":"page","messageId":id,"anonymousId":"a"})),
                proptest::strategy::Just(json!(null)),
                proptest::strategy::Just(json!({"type":"alias","messageId":"y"})),
            ],
            0..30,
        )
    ) {
        let store = rig();
        let n = events.len();
        let r = run(&store, Endpoint::Batch, &batch(json!(events)), None).unwrap();
        proptest::prop_assert_eq!(r.results.len(), n);
        proptest::prop_assert_eq!(r.accepted + r.duplicates + r.quarantined + r.refused, n);
        proptest::prop_assert_eq!(store.store.events.borrow().len(), r.accepted);
        // Identical events quarantined in one request are kept once (the quarantine is
        // idempotent, so a retried request does not double it either).
        let rows = store.store.quarantined.borrow().len();
        proptest::prop_assert!(rows <= r.quarantined && (rows > 0) == (r.quarantined > 0));
    }
}

#[test]
fn plan_violations_are_quarantined_with_typed_reasons_and_flags_are_kept() {
    let rig = rig();
    let r = web(
        &rig,
        json!([
            web_track(
                "good",
                "Product Added",
                json!({"product_id":"SKU-ABC","price":9.5,"currency":"EUR"})
            ),
            web_track(
                "bad",
                "Product Added",
                json!({"product_id":"nope","price":-1,"colour":"red"})
            ),
            web_track("unplanned", "Video Played", json!({})),
        ]),
    );
    let statuses: Vec<Status> = r.results.iter().map(|v| v.status).collect();
    assert_eq!(
        statuses,
        [Status::Accepted, Status::Quarantined, Status::Accepted]
    );
    let kinds: Vec<(&str, &str)> = r.results[1]
        .reasons
        .iter()
        .map(|x| (x.kind.as_str(), x.path.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("missing_required", "$.properties.currency"),
            ("unexpected_property", "$.properties.colour"),
            ("out_of_range", "$.properties.price"),
            ("pattern_mismatch", "$.properties.product_id"),
        ]
    );
    // The quarantine keeps the full payload, for fixing and replay.
    let q = &rig.store.quarantined.borrow()[0];
    assert_eq!(q.reason, "missing_required");
    let payload: Value = serde_json::from_str(&q.payload).unwrap();
    assert_eq!(payload["properties"]["colour"], "red");
    // The unplanned event is stored, flagged, and the sender is told.
    assert_eq!(r.results[2].warnings[0].kind.as_str(), "unplanned_event");
    let stored: Value = serde_json::from_str(&rig.store.events.borrow()[1].payload).unwrap();
    assert_eq!(
        stored["context"]["trackingPlan"]["violations"],
        json!(["unplanned_event"])
    );
}

#[test]
fn raw_pii_is_hashed_before_anything_is_stored() {
    let rig = rig();
    let mut ev = web_track(
        "p1",
        "Newsletter Subscribed",
        json!({"email_sha256":"Ann@Example.com ","note":"call +44 20 7946 0958"}),
    );
    ev["context"]["page"] =
        json!({"url": "https://shop.example/thanks?email=ann%40example.com&e=ann@example.com"});
    let r = web(&rig, json!([ev]));
    assert_eq!(r.results[0].status, Status::Accepted, "{:?}", r.results[0]);
    let paths: Vec<&str> = r.results[0]
        .warnings
        .iter()
        .map(|w| w.path.as_str())
        .collect();
    assert!(paths.contains(&"$.properties.email_sha256"), "{paths:?}");
    assert!(paths.contains(&"$.context.page.url"), "{paths:?}");
    let payload = &rig.store.events.borrow()[0].payload;
    assert!(
        !payload.contains("ann@example.com") && !payload.contains("7946"),
        "{payload}"
    );
    let stored: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(
        stored["properties"]["email_sha256"],
        sha256_hex("ann@example.com")
    );
    // The hashed email identifies the visitor.
    assert_eq!(
        r.results[0].profile_id, None,
        "browsers are not told profile ids"
    );
    let profile = rig.store.events.borrow()[0].profile_id.clone().unwrap();
    assert!(rig.graph_profile("wk_web", &profile).unwrap().identified());
}

#[test]
fn raw_pii_quarantine_policy_still_stores_no_raw_value() {
    let srcs = Sources::from_json(
        r#"{"k":{"name":"strict","consent":"opt-out","plan":{"version":"1","rawPii":"quarantine"}}}"#,
    )
    .unwrap();
    let rig = common::Rig::new(srcs);
    let body = br#"{"batch":[{"type":"identify","messageId":"i","userId":"bob@example.com","traits":{"phone":"+1 650 555 1212"}}],"writeKey":"k"}"#;
    let r = rig
        .request(Endpoint::Batch, body, None, EdgeInfo::default(), NOW)
        .unwrap();
    assert_eq!(r.results[0].status, Status::Quarantined);
    let paths: Vec<&str> = r.results[0]
        .reasons
        .iter()
        .map(|w| w.path.as_str())
        .collect();
    let mut paths = paths;
    paths.sort();
    assert_eq!(paths, ["$.traits.phone", "$.userId"]);
    let q = &rig.store.quarantined.borrow()[0];
    assert!(
        !q.payload.contains("bob@") && !q.payload.contains("555"),
        "{}",
        q.payload
    );
}

#[test]
fn consent_fails_closed_and_is_logged() {
    let rig = rig();
    let mut no_consent = web_track("n1", "Product Added", json!({}));
    no_consent["context"] = json!({});
    let mut denied = web_track("n2", "Consent Updated", json!({}));
    denied["context"]["consent"] =
        json!({"categoryPreferences":{"analytics":false},"source":"banner"});
    let r = web(&rig, json!([no_consent, denied]));
    assert_eq!((r.refused, r.accepted), (2, 0), "{:?}", r.results);
    assert_eq!(r.results[0].reasons[0].kind.as_str(), "consent_denied");
    assert!(
        rig.store.events.borrow().is_empty(),
        "nothing stored without analytics consent"
    );
    assert!(
        rig.store.quarantined.borrow().is_empty(),
        "not even an invalid event"
    );
    assert_eq!(r.cookie_id, None, "no cookie without consent");
    // The denial itself is in the consent log: who, what, when, from where.
    let log = rig.store.consent.borrow();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].anonymous_id.as_deref(), Some("anon-web-1"));
    assert_eq!(log[0].source, "banner");
    let cats: Value = serde_json::from_str(&log[0].categories).unwrap();
    assert_eq!(cats["analytics"], false);
    let counts = rig.store.counts.borrow();
    assert_eq!(counts.values().next().unwrap().refused, 2);
}

/// A consent record keeps how the choice was made: the page it was made on and what it
/// states of the notice and the consent manager (the TCF's TC string, the manager's id
/// and version, the notice's version, a US Privacy string), scrubbed of raw PII and
/// credentials, a very long string as its digest, nothing else of its properties. Also
/// for records that share their context (read from the part the gate keeps), and for a
/// denial on an opt-in source.
#[test]
fn consent_records_keep_their_evidence() {
    let rig = rig();
    let tc = "CQJ0GUAQJ0GUAAGABCENBGFgAP_AAH_AAAqIKRNV_G__bWlr8X73aftkeY1P9_h77sQxBhfJE-4FzLvW_JwXx2ExNA36tqIKmRIEu3bBIQNlHJDUTVCgaogVryDMakWcoTNKJ6BkiFMRO2dYCF5vmwtj-QKY5vr993dx2B-t_dv83dzyz4VHn3a5_2e0WJCdA58tDfv9bROb-9IPd_58v4v0_F_rk2_eT1l_tevp7D9-ct87_XW-9_fff79Ll9-gAAA";
    let long = "1YNN".repeat(1100);
    let record = |id: &str, ctx: Value, props: Value| {
        json!({"type":"track","messageId":id,"anonymousId":"anon-ev","event":"Consent Updated",
               "properties":props,"context":ctx})
    };
    let ctx = |granted: bool| {
        json!({"consent":{"categoryPreferences":{"analytics":granted,"marketing":false},"source":"tcf"},
               "page":{"url":"https://shop.example/privacy?reset_token=R3s3t&e=jo%40x.io","title":"Privacy"}})
    };
    let props = json!({"analytics":true,"tcString":tc,"cmpId":10,"cmpVersion":"3","version":"notice v2 jo@x.io",
                       "uspString":long,"note":"not evidence","consentUrl":"https://shop.example/privacy-notice"});
    let r = web(
        &rig,
        json!([
            record("ev1", ctx(true), props.clone()),
            record(
                "ev2",
                ctx(true),
                json!({"analytics":true,"gppString":"DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"})
            ),
            record("ev3", ctx(false), json!({"analytics":false})),
        ]),
    );
    assert_eq!(r.refused, 1, "{:?}", r.results);
    let log = rig.store.consent.borrow();
    assert_eq!(log.len(), 3);
    let ev = |id: &str| -> Value {
        let c = log.iter().find(|c| c.message_id == id).unwrap();
        serde_json::from_str(&c.evidence).unwrap()
    };
    let first = ev("ev1");
    let page = first["pageUrl"].as_str().unwrap();
    assert!(
        page.starts_with("https://shop.example/privacy?reset_token=redacted&e="),
        "{page}"
    );
    assert!(
        !page.contains("jo%40x.io") && !page.contains("R3s3t"),
        "{page}"
    );
    assert_eq!(first["tcString"], tc, "kept as the CMP wrote it");
    assert_eq!(
        (first["cmpId"].clone(), first["cmpVersion"].clone()),
        (json!(10), json!("3"))
    );
    assert_eq!(first["consentUrl"], "https://shop.example/privacy-notice");
    assert!(first["version"].as_str().unwrap().starts_with("notice v2 "));
    assert!(!first["version"].as_str().unwrap().contains("jo@x.io"));
    assert_eq!(first["uspStringSha256"].as_str().map(str::len), Some(64));
    assert!(
        first.get("uspString").is_none() && first.get("note").is_none(),
        "{first}"
    );
    // The second shares the first's context: its page is read from the gate's part.
    let second = ev("ev2");
    assert_eq!(second["pageUrl"], first["pageUrl"]);
    assert!(second["gppString"].as_str().unwrap().starts_with("DBABMA~"));
    // A denial on an opt-in source: the event is refused, its record kept with its page.
    assert_eq!(ev("ev3")["pageUrl"], first["pageUrl"]);
    drop(log);
    assert!(!rig.at_rest().contains("jo@x.io") && !rig.at_rest().contains("R3s3t"));
}

#[test]
fn gpc_denies_marketing_and_strips_click_ids() {
    let rig = rig();
    let mut ev = web_track(
        "g1",
        "Order Completed",
        json!({"order_id":"o1","total":3,"products":[{"product_id":"A"}]}),
    );
    ev["context"]["page"] = json!({"url":"https://shop.example/?utm_source=Google&gclid=abc"});
    let body = serde_json::to_vec(&json!({"batch":[ev.clone()],"writeKey":"wk_web"})).unwrap();
    let gpc = EdgeInfo {
        gpc: true,
        ..browser()
    };
    let r = rig.request(Endpoint::Batch, &body, None, gpc, NOW).unwrap();
    assert_eq!(r.accepted, 1);
    let stored: Value = serde_json::from_str(&rig.store.events.borrow()[0].payload).unwrap();
    let enforced = &stored["context"]["consent"]["enforced"];
    assert_eq!(
        (
            enforced["analytics"].as_bool(),
            enforced["marketing"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert!(stored["context"].get("clickIds").is_none());
    assert_eq!(stored["context"]["campaign"]["source"], "google");
    // Without GPC the click id is kept.
    ev["messageId"] = json!("g2");
    web(&rig, json!([ev]));
    let stored: Value = serde_json::from_str(&rig.store.events.borrow()[1].payload).unwrap();
    assert_eq!(stored["context"]["clickIds"]["gclid"], "abc");
}

#[test]
fn enrichment_truncates_ip_and_parses_the_agent() {
    let rig = rig();
    web(
        &rig,
        json!([web_track(
            "e1",
            "Product Added",
            json!({"product_id":"ABC-X","price":1,"currency":"EUR"})
        )]),
    );
    let e = &rig.store.events.borrow()[0];
    let stored: Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(stored["context"]["ip"], "203.0.113.0");
    assert!(!e.payload.contains("203.0.113.77"));
    assert_eq!(stored["context"]["location"]["country"], "GB");
    assert_eq!(stored["context"]["userAgentParsed"]["browser"], "Chrome");
    assert!(!e.bot);
}

#[test]
fn a_reused_message_id_with_other_content_is_a_conflict_not_a_merge() {
    let rig = rig();
    let a = web_track(
        "same",
        "Product Added",
        json!({"product_id":"ABC-X","price":1,"currency":"EUR"}),
    );
    let mut b = a.clone();
    b["properties"]["price"] = json!(2);
    web(&rig, json!([a.clone()]));
    // A retry with a new sentAt is the same event.
    let retry = serde_json::to_vec(
        &json!({"batch":[a],"writeKey":"wk_web","sentAt":"2026-11-23T22:20:00.000Z"}),
    )
    .unwrap();
    let r = rig
        .request(Endpoint::Batch, &retry, None, browser(), NOW + 5000)
        .unwrap();
    assert_eq!(r.results[0].status, Status::Duplicate);
    let r = web(&rig, json!([b]));
    assert_eq!(r.results[0].status, Status::Quarantined);
    assert_eq!(r.results[0].reasons[0].kind.as_str(), "message_id_conflict");
    assert_eq!(rig.store.events.borrow().len(), 1);
    let stored: Value = serde_json::from_str(&rig.store.events.borrow()[0].payload).unwrap();
    assert_eq!(stored["properties"]["price"], 1, "the first content stays");
}

#[test]
fn a_messageid_reused_by_another_visitor_is_a_conflict_found_by_the_store() {
    // Dedup shards by visitor, so the second visitor's claim is new on its own shard:
    // the store's fingerprint is what catches the reuse.
    let rig = rig();
    let mut a = web_track("reused", "E", json!({}));
    a["anonymousId"] = json!("visitor-a");
    let mut b = a.clone();
    b["anonymousId"] = json!("visitor-b");
    assert_ne!(
        dedup::shard_of_key(&dedup::key("wk_web", "visitor-a", "reused"), 16),
        dedup::shard_of_key(&dedup::key("wk_web", "visitor-b", "reused"), 16),
        "the two visitors are on different shards"
    );
    assert_eq!(web(&rig, json!([a.clone()])).accepted, 1);
    for _ in 0..2 {
        // The retry is judged the same: its claim was released, not committed.
        let r = web(&rig, json!([b.clone()]));
        assert_eq!(r.results[0].status, Status::Quarantined, "{r:?}");
        assert_eq!(r.results[0].reasons[0].kind.as_str(), "message_id_conflict");
    }
    assert_eq!(rig.store.events.borrow().len(), 1);
    assert_eq!(
        rig.store.events.borrow()[0].anonymous_id.as_deref(),
        Some("visitor-a")
    );
    assert_eq!(
        rig.store.quarantined.borrow().len(),
        1,
        "quarantined once (by qkey)"
    );
    // The same visitor's exact retry of the first is still a duplicate.
    assert_eq!(web(&rig, json!([a])).duplicates, 1);
}

#[test]
fn a_failed_store_releases_dedup_claims_so_the_retry_is_stored() {
    let rig = rig();
    *rig.store.fail_with.borrow_mut() = Some("d1 down".into());
    let body = batch(json!([track("r1")]));
    assert_eq!(
        run(&rig, Endpoint::Batch, &body, None)
            .unwrap_err()
            .status(),
        503
    );
    *rig.store.fail_with.borrow_mut() = None;
    let r = run(&rig, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(r.accepted, 1, "the retry is not mistaken for a duplicate");
}

#[test]
fn gzip_bodies_origins_and_rate_limits() {
    use std::io::Write as _;
    let rig = rig();
    let plain = batch(json!([track("z1")]));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let edge = EdgeInfo {
        content_encoding: Some("gzip"),
        ..EdgeInfo::default()
    };
    assert_eq!(
        rig.request(Endpoint::Batch, &gz, None, edge.clone(), NOW)
            .unwrap()
            .accepted,
        1
    );
    // A stream of two members (a compressor that flushes as it goes): both are read.
    let text = String::from_utf8(batch(json!([track("z2"), track("z3")]))).unwrap();
    let (head, tail) = text.split_at(text.len() / 2);
    let mut two = Vec::new();
    for part in [head, tail] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(part.as_bytes()).unwrap();
        two.extend(gz.finish().unwrap());
    }
    let r = rig
        .request(Endpoint::Batch, &two, None, edge.clone(), NOW)
        .unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
    let e = rig
        .request(Endpoint::Batch, b"\x1f\x8bnot gzip", None, edge, NOW)
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (400, "invalid_gzip"));
    let br = EdgeInfo {
        content_encoding: Some("br"),
        ..EdgeInfo::default()
    };
    assert_eq!(
        rig.request(Endpoint::Batch, &plain, None, br, NOW)
            .unwrap_err()
            .status(),
        415
    );
    // A gzip bomb is refused once it inflates past the batch limit.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 2 * 1024 * 1024]).unwrap();
    let bomb = bomb.finish().unwrap();
    let edge = EdgeInfo {
        content_encoding: Some("gzip"),
        ..EdgeInfo::default()
    };
    assert_eq!(
        rig.request(Endpoint::Batch, &bomb, None, edge, NOW)
            .unwrap_err()
            .status(),
        413
    );

    // Browser origins: the site's own and configured ones only.
    let body = serde_json::to_vec(&json!({"batch":[],"writeKey":"wk_web"})).unwrap();
    let evil = EdgeInfo {
        origin: Some("https://evil.example"),
        ..browser()
    };
    let e = rig
        .request(Endpoint::Batch, &body, None, evil, NOW)
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (403, "origin_not_allowed"));
    let own = EdgeInfo {
        origin: Some("http://127.0.0.1:9"),
        own_origin: "http://127.0.0.1:9",
        ..browser()
    };
    assert!(rig.request(Endpoint::Batch, &body, None, own, NOW).is_ok());

    // wk_web allows 50 events/s: a burst of 100 passes, the next is told when to retry.
    let many: Vec<Value> = (0..100)
        .map(|i| web_track(&format!("rl{i}"), "Video Played", json!({})))
        .collect();
    let burst = serde_json::to_vec(&json!({"batch": many, "writeKey": "wk_web"})).unwrap();
    assert!(rig
        .request(Endpoint::Batch, &burst, None, browser(), NOW)
        .is_ok());
    let e = rig
        .request(Endpoint::Batch, &burst, None, browser(), NOW + 10)
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (429, "rate_limited"));
    assert!(e.retry_after().unwrap() >= 1);
    assert!(rig
        .request(Endpoint::Batch, &burst, None, browser(), NOW + 2_100)
        .is_ok());
}

#[test]
fn soft_login_on_a_second_device_joins_the_profile_and_sets_the_cookie() {
    let rig = rig();
    let email = sha256_hex("ann@example.com");
    let login = |id: &str, anon: &str| {
        let mut e = web_track(
            id,
            "Newsletter Subscribed",
            json!({"email_sha256": email, "source": "footer"}),
        );
        e["anonymousId"] = json!(anon);
        e
    };
    let first = web(&rig, json!([login("d1", "anon-laptop-1")]));
    let profile_of = |id: &str| rig.profile_of(id).unwrap();
    assert!(
        first.results[0].profile_id.is_none(),
        "not told to a browser"
    );
    let p1 = profile_of("d1");
    assert_eq!(first.cookie_id.as_deref(), Some("anon-laptop-1"));
    // The phone browses anonymously first: a profile of its own ...
    let mut browse = web_track("d1b", "Video Played", json!({}));
    browse["anonymousId"] = json!("anon-phone-22");
    web(&rig, json!([browse]));
    let phone = profile_of("d1b");
    assert_ne!(phone, p1);
    // ... until the same soft login joins it, with the events it already sent.
    let second = web(&rig, json!([login("d2", "anon-phone-22")]));
    assert_eq!(second.accepted, 1);
    assert_eq!(profile_of("d2"), p1);
    let events = rig.store.events.borrow();
    assert!(
        events
            .iter()
            .all(|e| e.profile_id.as_deref() == Some(p1.as_str())),
        "{events:?}"
    );
    // `identified` says what was known when the event arrived.
    let identified: Vec<bool> = events.iter().map(|e| e.identified).collect();
    assert_eq!(identified, [true, false, true]);
    // The collector's cookie id joins the event's anonymous id.
    drop(events);
    let body = serde_json::to_vec(
        &json!({"batch":[web_track("d3", "Video Played", json!({}))],"writeKey":"wk_web"}),
    )
    .unwrap();
    let with_cookie = EdgeInfo {
        cookie_id: Some("anon-laptop-1"),
        ..browser()
    };
    let r = rig
        .request(Endpoint::Batch, &body, None, with_cookie, NOW)
        .unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(profile_of("d3"), p1);
    assert_eq!(
        r.cookie_id.as_deref(),
        Some("anon-laptop-1"),
        "the cookie keeps its id"
    );
    let stats = rig.store.counts.borrow();
    let day = stats.values().next().unwrap();
    assert_eq!((day.received, day.accepted, day.identified), (4, 4, 3));
}

/// A Snowplow tracker's payload (`POST /com.snowplowanalytics.snowplow/tp2`) for `app`.
fn snowplow(app: &str, items: Value) -> Vec<u8> {
    let items: Vec<Value> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let mut i = i.clone();
            i["aid"] = app.into();
            i
        })
        .collect();
    serde_json::to_vec(
        &json!({"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
                               "data": items}),
    )
    .unwrap()
}

#[test]
fn a_snowplow_trackers_events_go_through_every_stage() {
    let rig = rig();
    let items = json!([
        {"e": "pv", "eid": "sp-1", "duid": "d-1", "url": "https://shop.example/?email=jo%40x.io", "page": "Home",
         "dtm": "1795472344000", "stm": "1795472345000"},
        {"e": "se", "eid": "sp-2", "duid": "d-1", "se_ca": "newsletter", "se_ac": "subscribe",
         "se_la": "ann@example.com"},
        {"e": "tr", "eid": "sp-3", "duid": "d-1", "tr_id": "o-1"},
    ]);
    let body = snowplow("wk_test", items.clone());
    let r = rig
        .request(Endpoint::Snowplow, &body, None, EdgeInfo::default(), NOW)
        .unwrap();
    let statuses: Vec<Status> = r.results.iter().map(|v| v.status).collect();
    assert_eq!(
        statuses,
        [Status::Accepted, Status::Accepted, Status::Quarantined],
        "{r:?}"
    );
    let at_rest = rig.at_rest();
    for raw in ["ann@example.com", "jo@x.io", "jo%40x.io"] {
        assert!(!at_rest.contains(raw), "{raw} at rest");
    }
    let events = rig.store.events.borrow().clone();
    assert_eq!(rig.store.quarantined.borrow()[0].reason, "missing_type");
    assert_eq!(events[0].kind, "page");
    assert_eq!(events[1].event.as_deref(), Some("subscribe"));
    assert_eq!(events[0].anonymous_id.as_deref(), Some("d-1"));
    let page: Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(page["originalTimestamp"], "2026-11-23T22:19:04.000Z");
    drop(events);
    // The tracker's retry is a duplicate; another app's key is refused as unknown.
    let again = rig
        .request(Endpoint::Snowplow, &body, None, EdgeInfo::default(), NOW)
        .unwrap();
    assert_eq!(again.results[0].status, Status::Duplicate);
    let other = snowplow("wk_unknown", items);
    assert!(matches!(
        rig.request(Endpoint::Snowplow, &other, None, EdgeInfo::default(), NOW),
        Err(RequestError::UnknownWriteKey)
    ));
    // On an opt-in source, a tracker that sends no consent gets nothing kept.
    let web_body = snowplow(
        "wk_web",
        json!([{"e": "pv", "eid": "sp-9", "duid": "d-9", "url": "https://shop.example/"}]),
    );
    let r = rig
        .request(Endpoint::Snowplow, &web_body, None, browser(), NOW)
        .unwrap();
    assert_eq!(r.results[0].status, Status::Refused);
    assert!(!rig.at_rest().contains("sp-9"));
}

#[test]
fn a_posthog_librarys_events_go_through_every_stage() {
    let rig = rig();
    let p = |extra: Value| {
        let mut p = json!({"distinct_id": "ph-dev", "$device_id": "ph-dev", "token": "wk_test",
                           "$current_url": "https://shop.example/?email=jo%40x.io"});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let body = serde_json::to_vec(&json!({"api_key": "wk_test", "batch": [
        {"uuid": "ph-1", "event": "$pageview", "properties": p(json!({"title": "Home"}))},
        {"uuid": "ph-2", "event": "$identify", "$set": {"email": "Ann@Example.com", "plan": "pro"},
         "properties": p(json!({"distinct_id": "ph-user", "$user_id": "ph-user", "$anon_distinct_id": "ph-dev"}))},
        {"uuid": "ph-3", "event": "Product Added", "properties": p(json!({"price": 14.5}))},
    ]}))
    .unwrap();
    let r = rig
        .request(Endpoint::PostHog, &body, None, EdgeInfo::default(), NOW)
        .unwrap();
    assert_eq!(r.accepted, 3, "{r:?}");
    let at_rest = rig.at_rest();
    for raw in ["Ann@Example.com", "ann@example.com", "jo@x.io", "jo%40x.io"] {
        assert!(!at_rest.contains(raw), "{raw} at rest");
    }
    let events = rig.store.events.borrow().clone();
    let identify: Value = serde_json::from_str(&events[1].payload).unwrap();
    assert_eq!(identify["traits"]["email"], sha256_hex("ann@example.com"));
    assert_eq!(events[1].user_id.as_deref(), Some("ph-user"));
    // The device's page view and the person's identify call are one profile.
    assert_eq!(rig.profile_of("ph-1"), rig.profile_of("ph-2"));
    assert!(rig.profile_of("ph-1").is_some());
    // Another project's token in the same request is refused as a whole.
    let mixed = serde_json::to_vec(&json!({"api_key": "wk_test", "batch": [
        {"uuid": "ph-4", "event": "E", "properties": {"token": "wk_web", "distinct_id": "x"}}]}))
    .unwrap();
    assert!(rig
        .request(Endpoint::PostHog, &mixed, None, EdgeInfo::default(), NOW)
        .is_err());
}

#[test]
fn a_quarantined_event_keeps_the_visitors_ip_truncated_as_a_stored_one_does() {
    let store = rig();
    let body = batch(json!([
        {"type": "track", "messageId": "q-ip-1", "anonymousId": "a", "context": {"ip": "203.0.113.77"}},
        {"type": "bogus", "messageId": "q-ip-2", "anonymousId": "a", "context": {"ip": "2001:db8:85a3:8d3:1319:8a2e:370:7348"}},
        {"type": "track", "messageId": "q-ip-3", "anonymousId": "a", "context": {"ip": "not an ip"}},
    ]));
    let r = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(r.quarantined, 3, "{r:?}");
    let at_rest = store.at_rest();
    for raw in ["203.0.113.77", "1319:8a2e", "not an ip"] {
        assert!(!at_rest.contains(raw), "{raw} at rest");
    }
    let q = store.store.quarantined.borrow();
    let ips: Vec<Value> = q
        .iter()
        .map(|q| serde_json::from_str::<Value>(&q.payload).unwrap()["context"]["ip"].clone())
        .collect();
    assert_eq!(
        ips,
        [json!("203.0.113.0"), json!("2001:db8:85a3::"), Value::Null]
    );
}

/// Python's `json.dumps` writes a number that is not finite (a ratio divided by zero) as
/// a bare `NaN`, `Infinity` or `-Infinity`, which JSON does not have: the collector reads
/// each as `null`, as JavaScript writes it, and keeps the batch (it was refused whole, a
/// 400, and the library drops a batch it is refused). The same words in strings and
/// keys stay as they are.
#[test]
fn a_python_librarys_non_finite_numbers_are_read_as_null_and_the_batch_kept() {
    let store = rig();
    let body = r#"{"writeKey": "wk_test", "batch": [
        {"type": "track", "messageId": "nf1", "userId": "py", "event": "Ratio",
         "properties": {"ratio": NaN, "caps": [Infinity, -Infinity], "NaN": "-Infinity NaN"}},
        {"type": "track", "messageId": "nf2", "userId": "py", "event": "Plain", "properties": {"n": 1}}]}"#;
    assert_accepted(&store, Endpoint::Batch, body, 2);
    let single = r#"{"writeKey": "wk_test", "messageId": "nf3", "userId": "py", "event": "One", "properties": {"x": -Infinity}}"#;
    assert_accepted(&store, Endpoint::Single(MessageType::Track), single, 1);
    let events = store.store.events.borrow();
    let props: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap()["properties"].clone())
        .collect();
    assert_eq!(
        props[0],
        json!({"ratio": null, "caps": [null, null], "NaN": "-Infinity NaN"})
    );
    assert_eq!(props[1], json!({"n": 1}));
    assert_eq!(props[2], json!({"x": null}));
}

/// Times as server libraries write them (Go's RFC 3339 with nanoseconds and the host's
/// offset, Java's, Python's `str(datetime)`) are times, not phone numbers: the event
/// keeps its time and no finding is reported. (The seconds and nanoseconds of
/// `04.123456789+01:00` read as a trunk-0 national number were hashed.)
#[test]
fn a_server_librarys_nanosecond_timestamps_are_kept_as_times() {
    let store = rig();
    let times = [
        "2026-11-23T22:19:04.123456789+01:00",
        "2026-11-23T22:19:04.123456789Z",
        "2026-11-23 22:19:04.12+0000",
        "2026-11-23T22:19:04.000000001-05:00",
    ];
    let events: Vec<Value> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"type": "track", "messageId": format!("ts{i}"), "userId": "go", "event": "E",
                   "timestamp": t, "properties": {"at": t}})
        })
        .collect();
    let body = serde_json::to_vec(&json!({"writeKey": "wk_test", "batch": events})).unwrap();
    let r = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(r.accepted, times.len(), "{r:?}");
    for v in &r.results {
        assert!(v.warnings.is_empty(), "{v:?}");
    }
    let events = store.store.events.borrow();
    for (e, t) in events.iter().zip(times) {
        let payload: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(payload["properties"]["at"], t);
        assert_eq!(payload["originalTimestamp"], t);
        assert!(parse_rfc3339(&e.timestamp).is_some(), "{}", e.timestamp);
    }
}

/// Snowplow's `GET /i` (a tracker's `eventMethod: 'get'`, an email's pixel) carries one
/// event in its query, percent-encoded: it is the same event a POST of its parameters
/// carries, stored the same way, through every stage (a raw email in it is hashed).
#[test]
fn a_snowplow_pixel_is_the_event_its_query_holds() {
    use edge_collector::snowplow::pixel_payload;
    assert_eq!(Endpoint::from_path("/i"), Some(Endpoint::Snowplow));
    let params = json!({"e": "se", "eid": "px-1", "duid": "d-px", "aid": "wk_test", "se_ca": "email",
                        "se_ac": "open", "se_la": "ann@example.com", "url": "https://shop.example/?a=1&b=2",
                        "dtm": "1795472344000", "tv": "js-4.10.1", "p": "web"});
    let query: Vec<String> = params
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap();
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect();
    let got = pixel_payload(&format!("{}&eid=px-second", query.join("&")));
    let got: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(got, json!({"data": [params]}), "the first eid is kept");

    let (by_get, by_post) = (rig(), rig());
    let get = by_get
        .request(
            Endpoint::Snowplow,
            &pixel_payload(&query.join("&")),
            None,
            EdgeInfo::default(),
            NOW,
        )
        .unwrap();
    let post = by_post
        .request(
            Endpoint::Snowplow,
            &snowplow("wk_test", json!([params])),
            None,
            EdgeInfo::default(),
            NOW,
        )
        .unwrap();
    assert_eq!((get.accepted, post.accepted), (1, 1), "{get:?}");
    let (a, b) = (
        by_get.store.events.borrow()[0].clone(),
        by_post.store.events.borrow()[0].clone(),
    );
    assert_eq!(a.event.as_deref(), Some("open"));
    let (pa, pb): (Value, Value) = (
        serde_json::from_str(&a.payload).unwrap(),
        serde_json::from_str(&b.payload).unwrap(),
    );
    assert_eq!(pa["properties"], pb["properties"]);
    assert_eq!(pa["context"]["page"], pb["context"]["page"]);
    assert!(!by_get.at_rest().contains("ann@example.com"));
}
