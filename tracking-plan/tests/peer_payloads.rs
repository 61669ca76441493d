//! The message model against payloads in the exact shape peer SDKs send: Segment's
//! analytics-next (browser) and analytics-node (server batch), RudderStack v3 (browser).
#![cfg(not(target_arch = "wasm32"))]

use serde_json::Value;
use tracking_plan::{Batch, Message, MessageType};

/// The model writes an explicit `null` on a modelled field back as an absent field (the
/// same meaning in the spec); everything else must come back byte-for-byte as JSON.
fn without_null_fields(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

fn round_trip(raw: &Value) -> Message {
    let m: Message = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(
        serde_json::to_value(&m).unwrap(),
        without_null_fields(raw.clone())
    );
    m
}

#[test]
fn segment_analytics_next_track() {
    let raw: Value =
        serde_json::from_str(include_str!("fixtures/segment-analytics-next-track.json")).unwrap();
    let m = round_trip(&raw);
    assert_eq!(m.check_shape(), Ok(MessageType::Track));
    assert_eq!(m.event.as_deref(), Some("Product Added"));
    // Fields Sightline does not model are kept.
    assert_eq!(m.extra["_metadata"]["bundled"][0], "Segment.io");
    assert_eq!(m.extra["writeKey"], "abc123def");
}

#[test]
fn segment_node_batch_of_every_server_type() {
    let raw: Value =
        serde_json::from_str(include_str!("fixtures/segment-node-batch.json")).unwrap();
    let batch: Batch = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(serde_json::to_value(&batch).unwrap(), raw);
    let kinds: Vec<MessageType> = batch
        .batch
        .iter()
        .map(|v| round_trip(v).check_shape().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            MessageType::Identify,
            MessageType::Group,
            MessageType::Alias,
            MessageType::Screen
        ]
    );
}

#[test]
fn rudderstack_v3_page() {
    let raw: Value =
        serde_json::from_str(include_str!("fixtures/rudderstack-v3-page.json")).unwrap();
    let m = round_trip(&raw);
    assert_eq!(m.check_shape(), Ok(MessageType::Page));
    assert_eq!(
        m.user_id.as_deref(),
        Some(""),
        "an empty userId is kept as sent"
    );
    assert_eq!(
        m.original_timestamp.as_deref(),
        Some("2026-11-23T10:00:00.123Z")
    );
    assert_eq!(m.extra["channel"], "web");
    assert_eq!(m.event_name(), Some("About"));
}
