//! The ingestion pipeline, natively, against the in-memory store.

use base64::Engine as _;
use edge_collector::ingest::{ingest, Endpoint, IngestRequest, Report, RequestError, Status};
use edge_collector::sources::Sources;
use edge_collector::store::MemoryStore;
use proptest::strategy::Strategy as _;
use serde_json::{json, Value};
use tracking_plan::time::parse_rfc3339;
use tracking_plan::MessageType;

const NOW: i64 = 1_795_472_345_000; // 2026-11-23T22:19:05Z

fn sources() -> Sources {
    Sources::from_json(r#"{"wk_test":{"name":"test","origins":[]}}"#).unwrap()
}

fn run(
    store: &MemoryStore,
    endpoint: Endpoint,
    body: &[u8],
    auth: Option<&str>,
) -> Result<Report, RequestError> {
    let req = IngestRequest {
        endpoint,
        body,
        authorization: auth,
        now_ms: NOW,
    };
    pollster::block_on(ingest(store, &sources(), &req))
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
}

#[test]
fn accepts_a_batch_and_stores_every_field() {
    let store = MemoryStore::default();
    let r = run(
        &store,
        Endpoint::Batch,
        &batch(json!([track("m1"), track("m2")])),
        None,
    )
    .unwrap();
    assert_eq!((r.accepted, r.duplicates, r.quarantined), (2, 0, 0));
    let events = store.events.borrow();
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
    let store = MemoryStore::default();
    // A client whose clock is one hour behind.
    let body = serde_json::to_vec(&json!({"writeKey":"wk_test","sentAt":"2026-11-23T21:19:05.000Z",
        "batch":[{"type":"page","messageId":"p","anonymousId":"a","timestamp":"2026-11-23T21:19:03.000Z"}]}))
    .unwrap();
    run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!(
        parse_rfc3339(&store.events.borrow()[0].timestamp),
        Some(NOW - 2000)
    );
}

#[test]
fn repeats_are_duplicates_stored_once() {
    let store = MemoryStore::default();
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
    assert_eq!(store.events.borrow().len(), 1);
}

#[test]
fn bad_events_are_quarantined_with_reasons_not_dropped() {
    let store = MemoryStore::default();
    let body = batch(json!([
        track("ok"),
        {"type":"track","messageId":"no-event","anonymousId":"a"},
        {"type":"track","anonymousId":"a","event":"x"},
        {"type":"bogus","messageId":"t","anonymousId":"a"},
        "not an object",
        {"type":"page","messageId":"no-identity"},
    ]));
    let r = run(&store, Endpoint::Batch, &body, None).unwrap();
    assert_eq!((r.accepted, r.quarantined), (1, 5));
    let kinds: Vec<_> = r
        .results
        .iter()
        .map(|v| v.reasons.first().map(|x| x.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some("missing_required"),
            Some("missing_message_id"),
            Some("invalid_field"),
            Some("not_an_object"),
            Some("missing_identity")
        ]
    );
    let q = store.quarantined.borrow();
    assert_eq!(q.len(), 5);
    assert_eq!(q[0].message_id.as_deref(), Some("no-event"));
    assert_eq!(q[3].payload, "\"not an object\"");
}

#[test]
fn oversized_message_is_quarantined_and_oversized_batch_refused() {
    let store = MemoryStore::default();
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
    assert_eq!(r.results[0].reasons[0].kind, "too_large");
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
    assert_eq!((e.status, e.code), (413, "batch_too_large"));
}

#[test]
fn request_errors_name_their_cause() {
    let store = MemoryStore::default();
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
        (&[0xff, 0xfe], None, 400, "invalid_utf8"),
    ];
    for (body, auth, status, code) in cases {
        let e = run(&store, Endpoint::Batch, body, auth).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (status, code),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(e.to_json()["error"]["code"], code);
    }
    assert!(store.events.borrow().is_empty());
}

#[test]
fn basic_auth_write_key_and_single_endpoints() {
    let store = MemoryStore::default();
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
    let e = &store.events.borrow()[0];
    assert_eq!((e.kind, e.user_id.as_deref()), ("identify", Some("42")));
}

#[test]
fn write_key_is_not_stored_with_the_event() {
    let store = MemoryStore::default();
    let body = br#"{"type":"track","messageId":"w","anonymousId":"a","event":"E","writeKey":"wk_test","_metadata":{"bundled":[]}}"#;
    let r = run(&store, Endpoint::Single(MessageType::Track), body, None).unwrap();
    assert_eq!(r.accepted, 1, "the body's write key still authenticates");
    let payload: Value = serde_json::from_str(&store.events.borrow()[0].payload).unwrap();
    assert!(payload.get("writeKey").is_none());
    assert_eq!(
        payload["_metadata"],
        json!({"bundled": []}),
        "other unknown fields are kept"
    );
}

#[test]
fn batch_context_is_merged_under_the_message_context() {
    let store = MemoryStore::default();
    let body = serde_json::to_vec(
        &json!({"writeKey":"wk_test","context":{"ip":"1.2.3.4","locale":"de"},
        "batch":[{"type":"page","messageId":"p","anonymousId":"a","context":{"locale":"fr"}}]}),
    )
    .unwrap();
    run(&store, Endpoint::Batch, &body, None).unwrap();
    let payload: Value = serde_json::from_str(&store.events.borrow()[0].payload).unwrap();
    assert_eq!(payload["context"], json!({"ip":"1.2.3.4","locale":"fr"}));
}

#[test]
fn storage_failure_is_a_retryable_503() {
    let store = MemoryStore::default();
    *store.fail_with.borrow_mut() = Some("disk on fire".into());
    let e = run(&store, Endpoint::Batch, &batch(json!([track("m")])), None).unwrap_err();
    assert_eq!((e.status, e.code), (503, "storage_unavailable"));
}

proptest::proptest! {
    #[test]
    fn never_panics_on_any_body(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let store = MemoryStore::default();
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
        let store = MemoryStore::default();
        let n = events.len();
        let r = run(&store, Endpoint::Batch, &batch(json!(events)), None).unwrap();
        proptest::prop_assert_eq!(r.results.len(), n);
        proptest::prop_assert_eq!(r.accepted + r.duplicates + r.quarantined, n);
        proptest::prop_assert_eq!(store.events.borrow().len(), r.accepted);
        proptest::prop_assert_eq!(store.quarantined.borrow().len(), r.quarantined);
    }
}
