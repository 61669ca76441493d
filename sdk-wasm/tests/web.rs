//! The SDK in headless Chromium: identifiers and first-party persistence.
#![cfg(target_arch = "wasm32")]

use sdk_wasm::Sightline;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn storage() -> web_sys::Storage {
    web_sys::window().unwrap().local_storage().unwrap().unwrap()
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_hexdigit())
}

#[wasm_bindgen_test]
fn anonymous_id_is_a_uuid_kept_in_first_party_storage() {
    storage().remove_item("sl_aid").unwrap();
    let config = js_sys::Object::new();
    let a = Sightline::new(&config);
    let id = a.anonymous_id();
    assert!(is_uuid_v4(&id), "{id}");
    assert_eq!(storage().get_item("sl_aid").unwrap(), Some(id.clone()));
    // A second load of the SDK (a new page) keeps the visitor's id.
    let b = Sightline::new(&JsValue::UNDEFINED);
    assert_eq!(b.anonymous_id(), id);
}

#[wasm_bindgen_test]
fn fresh_ids_differ() {
    storage().remove_item("sl_aid").unwrap();
    let a = Sightline::new(&JsValue::UNDEFINED).anonymous_id();
    storage().remove_item("sl_aid").unwrap();
    let b = Sightline::new(&JsValue::UNDEFINED).anonymous_id();
    assert_ne!(a, b);
}
