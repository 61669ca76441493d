//! The SDK's wasm half in headless Chromium: soft-login hashes equal the tracking-plan
//! vectors, raw PII is redacted with the collector's rule, and query parameters become
//! campaign fields, through the same calls the JS adapter makes.
#![cfg(target_arch = "wasm32")]

use sdk_wasm::{campaign, hash_ids, redact, sl_alloc, sl_call, sl_free};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// `key␟value␞` records as pairs.
fn records(s: &str) -> Vec<(String, String)> {
    s.split('\u{1e}')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (k, v) = r.split_once('\u{1f}').expect("a field separator");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[wasm_bindgen_test]
fn soft_login_hashes_equal_the_tracking_plan_vectors() {
    let r = records(&hash_ids("John_Smith@gmail.com", "+1 650 555 1212", "US"));
    assert_eq!(
        r,
        [
            (
                "email_sha256".into(),
                "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f".into()
            ),
            (
                "phone_sha256".into(),
                "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8".into()
            ),
            (
                "phone_sha256_meta".into(),
                "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176".into()
            ),
        ]
    );
    assert_eq!(
        records(&hash_ids("test@test.com", "12", "US")),
        [
            ("error".into(), "email: blocked".into()),
            ("error".into(), "phone: invalid_phone_length".into())
        ]
    );
}

#[wasm_bindgen_test]
fn raw_pii_is_redacted_and_campaigns_classified() {
    let r = redact("write to John_Smith@gmail.com today", "US").expect("an email");
    assert_eq!(
        r,
        "write to 62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f today"
    );
    assert_eq!(redact("order 2026", "US"), None);
    let c = records(&campaign(
        "utm_source\u{1f} Google \u{1f}x\u{1f}1\u{1f}gclid\u{1f}Cj0\u{1f}utm_term\u{1f}a\u{7}b",
    ));
    assert_eq!(
        c,
        [
            ("source".into(), "google".into()),
            ("+gclid".into(), "Cj0".into()),
            ("term".into(), "ab".into())
        ]
    );
}

#[wasm_bindgen_test]
fn the_raw_boundary_round_trips_and_frees() {
    let call = |op: u32, args: &str| -> Option<String> {
        let p = sl_alloc(args.len());
        // SAFETY: `p` has room for `args.len()` bytes; sl_call takes it over.
        let r = unsafe {
            core::ptr::copy_nonoverlapping(args.as_ptr(), p, args.len());
            sl_call(op, p, args.len())
        };
        if r == -1 {
            return None;
        }
        let (ptr, len) = ((r >> 32) as usize as *mut u8, (r & 0xffff_ffff) as usize);
        // SAFETY: a result of sl_call, read then freed once.
        unsafe {
            let s = String::from_utf8(core::slice::from_raw_parts(ptr, len).to_vec()).unwrap();
            sl_free(ptr, len);
            Some(s)
        }
    };
    for _ in 0..1000 {
        let h = call(1, "US\u{1f}John_Smith@gmail.com\u{1f}").expect("a result");
        assert!(h.starts_with("email_sha256\u{1f}62a14e44"), "{h}");
        assert_eq!(call(2, "US\u{1f}no pii here"), None);
        assert_eq!(call(9, "US"), None, "an unknown op");
    }
    let big = "x".repeat(200_000) + " a@example.org";
    let r = call(2, &(String::from("US\u{1f}") + &big)).expect("redacted");
    assert!(r.ends_with(&tracking_plan::identifiers::sha256_hex("a@example.org")));
}
