//! The shared rules, compiled to wasm32 and run in headless Chromium: the SDK gets the
//! same answers as the collector.
#![cfg(target_arch = "wasm32")]

use tracking_plan::time::{format_rfc3339, parse_rfc3339};
use tracking_plan::{Message, MessageType};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn time_agrees_with_native() {
    assert_eq!(
        parse_rfc3339("2026-11-24T00:19:05.123+02:00"),
        Some(1_795_472_345_123)
    );
    assert_eq!(
        format_rfc3339(1_795_472_345_123),
        "2026-11-23T22:19:05.123Z"
    );
    // And with the browser's own clock formatting.
    let now = js_sys::Date::now() as i64;
    let js: String = js_sys::Date::new(&(now as f64).into())
        .to_iso_string()
        .into();
    assert_eq!(format_rfc3339(now), js);
}

#[wasm_bindgen_test]
fn message_shape_rules() {
    let m: Message = serde_json::from_str(
        r#"{"type":"track","messageId":"m","anonymousId":"a","event":"E","x":1}"#,
    )
    .unwrap();
    assert_eq!(m.check_shape(), Ok(MessageType::Track));
    assert_eq!(m.extra["x"], 1);
}

#[wasm_bindgen_test]
fn hashing_vectors_in_the_browser() {
    use tracking_plan::identifiers::*;
    assert_eq!(
        hash_email(" John_Smith@GMAIL.com", EmailVariant::Standard).unwrap(),
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    );
    assert_eq!(
        hash_phone("(650) 555-1212", "US", PhoneVariant::E164).unwrap(),
        "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
    );
    assert_eq!(
        hash_phone("+1 650 555 1212", "GB", PhoneVariant::Meta).unwrap(),
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    );
    assert_eq!(
        normalize_email("John.Smith@gmail.com", EmailVariant::Google).unwrap(),
        "johnsmith@gmail.com"
    );
    assert_eq!(
        normalize_phone("8 (916) 123-45-67", "RU").unwrap(),
        "+79161234567"
    );
    assert!(is_blocked_value("\"undefined\""));
    assert_eq!(detect_pii("write to a@b.example"), Some(PiiKind::Email));
}

#[wasm_bindgen_test]
fn plan_validation_in_the_browser() {
    let plan =
        tracking_plan::Plan::from_json(include_str!("../../example-site/tracking-plan.json"))
            .unwrap();
    let m: Message = serde_json::from_str(
        r#"{"type":"track","messageId":"m","anonymousId":"a","event":"Product Added","properties":{"product_id":"bad id","price":0,"currency":"EUR"}}"#,
    )
    .unwrap();
    let mut got: Vec<(&str, String)> = plan
        .validate(&m, 100)
        .into_iter()
        .map(|v| (v.kind.as_str(), v.path))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("out_of_range", "$.properties.price".to_string()),
            ("pattern_mismatch", "$.properties.product_id".to_string())
        ]
    );
}
