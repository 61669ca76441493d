//! The SDK's wasm build in headless Chromium: the exported core hashes with the shared
//! tracking-plan vectors and builds valid batches.
#![cfg(target_arch = "wasm32")]

use sdk_wasm::Core;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const CTX: &str = r#"{"page":{"path":"/"}}"#;

#[wasm_bindgen_test]
fn soft_login_hashes_equal_the_tracking_plan_vectors() {
    let mut core = Core::new("wk", true, "US", &[3; 16], false);
    core.start();
    core.set_page(CTX.into(), "https://s.example/".into());
    let r = core.soft_login(
        Some("John_Smith@gmail.com".into()),
        Some("+1 650 555 1212".into()),
        1.0e12,
    );
    let v = js_sys::JSON::parse(&r).unwrap();
    let get = |k: &str| js_sys::Reflect::get(&v, &k.into()).unwrap().as_string();
    assert_eq!(
        get("email_sha256").as_deref(),
        Some("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f")
    );
    assert_eq!(
        get("phone_sha256").as_deref(),
        Some("1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8")
    );
    assert_eq!(
        get("phone_sha256_meta").as_deref(),
        Some("e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176")
    );
}

#[wasm_bindgen_test]
fn batches_are_json_the_browser_parses() {
    let mut core = Core::new("wk", true, "US", &[4; 16], false);
    core.start();
    core.set_page(CTX.into(), "https://s.example/?utm_source=A".into());
    assert!(core.record(
        "track",
        Some("Clicked \"x\"\n".into()),
        Some(r#"{"n":1}"#.into()),
        1.0e12
    ));
    let body = core.batch(1.0e12, 500_000, None).unwrap();
    let v = js_sys::JSON::parse(&body).unwrap();
    let batch = js_sys::Reflect::get(&v, &"batch".into()).unwrap();
    let first = js_sys::Reflect::get(&batch, &0.into()).unwrap();
    let event = js_sys::Reflect::get(&first, &"event".into()).unwrap();
    assert_eq!(event.as_string().as_deref(), Some("Clicked \"x\"\n"));
    assert_eq!(core.done(200, 0.0), -1.0);
    assert_eq!(core.anon().len(), 36);
}
