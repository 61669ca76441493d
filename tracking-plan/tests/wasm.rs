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
