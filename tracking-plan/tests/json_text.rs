//! The SDK's scan of JSON text (`json_text::scrub`) against the collector's walker over
//! `serde_json::Value` (`pii::scrub_value`): on random documents with PII planted in
//! keys, named fields, nested arrays and encodings, both give the same document.
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tracking_plan::json_text::{
    push_str, replace_lone_surrogates, replace_non_finite, replace_overflowing_numbers, scrub,
    scrub_with, Keys, Malformed,
};
use tracking_plan::pii::{scrub_value, FieldKind};

/// `n` cases, or `PROPTEST_CASES` when it is set (`scripts/fuzz.sh`):
/// `ProptestConfig::with_cases` alone overrides the variable.
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig::with_cases(n)
}

fn planted() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ann@example.com".to_string()),
        Just("Mail: Bob.Smith@Example.org!".to_string()),
        Just("jo%40x.io".to_string()),
        Just("https://s.example/?e=jo%2540x.io&x=1".to_string()),
        Just("+33 6 12 34 56 78".to_string()),
        Just("+٣٣ (0)٦ ١٢ ٣٤ ٥٦ ٧٨".to_string()),
        // base64 of base64, and base64 of UTF-16, of an address.
        Just("WVc1dVFHVjRZVzF3YkdVdVkyOXQ=".to_string()),
        Just("YQBuAG4AQABlAHgAYQBtAHAAbABlAC4AYwBvAG0A".to_string()),
        Just("(650) 555-0142".to_string()),
        Just("030.1234.567".to_string()),
        Just("order 2026-11-24 #12345".to_string()),
        Just("数据 \"quoted\" \\ back\nslash".to_string()),
        "\\PC{0,12}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("email".to_string()),
        Just("userPhone".to_string()),
        Just("mobile".to_string()),
        Just("email_sha256".to_string()),
        Just("carol@example.net".to_string()),
        "[a-z]{1,8}",
    ]
}

fn doc() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        planted().prop_map(Value::String),
        (0u64..99_999_999_999).prop_map(|n| json!(n)),
        (-1000i64..1000).prop_map(|n| json!(n)),
        Just(json!(1.5)),
        Just(json!(true)),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(cases(512))]
    #[test]
    fn the_text_scan_equals_the_collectors_walker(v in doc(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
        let scanned = match scrub(&text, FieldKind::Other, Some("DE")).unwrap() {
            Some(t) => serde_json::from_str::<Value>(&t).expect("the scan writes JSON"),
            None => v.clone(),
        };
        let mut walked = v.clone();
        scrub_value(&mut walked, "$", FieldKind::Other, Some("DE"), &mut Vec::new());
        prop_assert_eq!(scanned, walked);
    }

    /// The keys remembered across scans change nothing: a run of documents scanned with
    /// one memo (more keys than it holds, and keys longer than it keeps) gives what each
    /// scanned alone gives.
    #[test]
    fn remembered_keys_give_what_a_fresh_scan_gives(
        docs in prop::collection::vec((doc(), prop::collection::btree_map(
            prop_oneof![key(), planted(), "[a-z]{60,70}"], "[a-z0-9]{0,3}", 0..30)), 1..5),
    ) {
        let mut keys = Keys::default();
        for (v, wide) in docs {
            let wide = Value::Object(wide.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string(&wide).unwrap()] {
                let fresh = scrub(&text, FieldKind::Other, Some("DE"));
                prop_assert_eq!(scrub_with(&text, FieldKind::Other, Some("DE"), &mut keys), fresh);
            }
        }
    }

    #[test]
    fn any_text_gives_json_or_malformed_never_a_panic(s in "\\PC{0,40}") {
        if let Ok(Some(t)) = scrub(&s, FieldKind::Other, None) {
            prop_assert!(serde_json::from_str::<Value>(&t).is_ok(), "{}", t);
        }
    }

    /// What a JavaScript (or Python) client writes for a string of UTF-16 units, lone
    /// surrogates included, the collector reads as a browser's `TextEncoder` would:
    /// each lone surrogate one U+FFFD, everything else as it was; and a text without
    /// one is left alone.
    #[test]
    fn lone_surrogates_read_as_the_browsers_read_them(
        units in prop::collection::vec(prop_oneof![
            4 => 0x20u16..0x7f,
            1 => 0u16..0x20,
            1 => Just(0x22u16),
            1 => Just(0x5cu16),
            1 => 0x80u16..0xd800,
            2 => 0xd800u16..0xdc00,
            2 => 0xdc00u16..0xe000,
            1 => 0xe000u16..=0xffff,
        ], 0..24),
        escapes in prop::collection::vec(any::<bool>(), 24),
    ) {
        let json = js_json(&units, &escapes);
        let doc = format!("{{\"k\\\"\":{json},\"n\":[1,{json}]}}");
        let fixed = replace_lone_surrogates(&doc);
        let lossy = String::from_utf16_lossy(&units);
        prop_assert_eq!(fixed.is_none(), String::from_utf16(&units).is_ok(), "{}", doc);
        let read: Value = serde_json::from_str(fixed.as_deref().unwrap_or(&doc)).unwrap();
        prop_assert_eq!(&read["k\""], &Value::String(lossy.clone()));
        prop_assert_eq!(&read["n"][1], &Value::String(lossy));
    }

    /// A document as Python's `json.dumps` writes it, with numbers that are not finite
    /// as bare `NaN`, `Infinity` and `-Infinity` (and the same words inside strings and
    /// keys), reads as the same document with those numbers `null`, as JavaScript writes
    /// them; one without them is left alone.
    #[test]
    fn non_finite_numbers_read_as_javascript_writes_them(
        items in prop::collection::vec(prop_oneof![
            Just(Python::Token("NaN")),
            Just(Python::Token("Infinity")),
            Just(Python::Token("-Infinity")),
            (-1e6f64..1e6).prop_map(Python::Number),
            "(NaN|-?Infinity|[a-z\"\\\\ ]){0,4}".prop_map(Python::Text),
        ], 0..12),
    ) {
        let (text, expected) = python_json(&items);
        let fixed = replace_non_finite(&text);
        let tokens = items.iter().any(|i| matches!(i, Python::Token(_)));
        prop_assert_eq!(fixed.is_some(), tokens, "{}", text);
        let read: Value = serde_json::from_str(fixed.as_deref().unwrap_or(&text)).unwrap();
        prop_assert_eq!(read, expected);
    }

    #[test]
    fn push_str_round_trips(s in "\\PC{0,40}|[\\x00-\\x1f\"\\\\]{0,8}") {
        let mut out = String::new();
        push_str(&mut out, &s);
        prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
    }
}

/// A JSON string of UTF-16 `units` as JavaScript's `JSON.stringify` writes it (lone
/// surrogates as `\uXXXX` escapes, lower case), with other characters escaped as well
/// where `escape` says (as Python's `json.dumps` writes everything past ASCII; upper
/// case, so both cases are read).
fn js_json(units: &[u16], escape: &[bool]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < units.len() {
        let u = units[i];
        let esc = escape.get(i).copied().unwrap_or(false);
        let pair = (0xd800..0xdc00).contains(&u)
            && units
                .get(i + 1)
                .is_some_and(|l| (0xdc00..0xe000).contains(l));
        if pair && !esc {
            out.extend(char::decode_utf16([u, units[i + 1]]).map(|c| c.unwrap()));
            i += 2;
            continue;
        }
        match (u, char::from_u32(u32::from(u))) {
            (0x22, _) => out.push_str("\\\""),
            (0x5c, _) => out.push_str("\\\\"),
            (_, Some(c)) if u >= 0x20 && !esc => out.push(c),
            (_, None) => out.push_str(&format!("\\u{u:04x}")),
            _ => out.push_str(&format!("\\u{u:04X}")),
        }
        i += 1;
    }
    out.push('"');
    out
}

#[derive(Debug, Clone)]
enum Python {
    Token(&'static str),
    Number(f64),
    Text(String),
}

/// `items` as `json.dumps` writes them, in a list and as an object's values (keyed by
/// their text when they are text), and the document JSON means by them.
fn python_json(items: &[Python]) -> (String, Value) {
    let (mut list, mut obj, mut want_list, mut want_obj) =
        (Vec::new(), Vec::new(), Vec::new(), Map::new());
    for (n, item) in items.iter().enumerate() {
        let (text, value) = match item {
            Python::Token(t) => (t.to_string(), Value::Null),
            Python::Number(x) => (x.to_string(), serde_json::from_str(&x.to_string()).unwrap()),
            Python::Text(t) => (serde_json::to_string(t).unwrap(), json!(t)),
        };
        let key = match item {
            Python::Text(t) => format!("{t}{n}"),
            _ => format!("k{n}"),
        };
        obj.push(format!("{}: {text}", serde_json::to_string(&key).unwrap()));
        list.push(text);
        want_list.push(value.clone());
        want_obj.insert(key, value);
    }
    let text = format!(
        "{{\"list\": [{}], \"obj\": {{{}}}}}",
        list.join(", "),
        obj.join(", ")
    );
    (text, json!({"list": want_list, "obj": want_obj}))
}

#[test]
fn non_finite_tokens_outside_strings_only() {
    let fix = |s: &str| replace_non_finite(s);
    assert_eq!(
        fix(r#"{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN \" Infinity"}"#).as_deref(),
        Some(r#"{"a": null, "b": [null, null], "c": "NaN \" Infinity"}"#)
    );
    assert_eq!(fix(r#"{"NaN": "-Infinity", "x": 1}"#), None);
    assert_eq!(
        fix(r#"{"a": "NaN"#),
        None,
        "unterminated: left for the reader"
    );
}

#[test]
fn numbers_too_large_for_a_double_outside_strings_only() {
    let fix = |s: &str| replace_overflowing_numbers(s);
    let big = "9".repeat(400);
    let text =
        format!(r#"{{"a": 1e999, "b": [-2E+400, 1.5e308, {big}], "c": "1e999", "1e999": 1e-999}}"#);
    let fixed = fix(&text).expect("replaced");
    assert_eq!(
        fixed,
        r#"{"a": null, "b": [null, 1.5e308, null], "c": "1e999", "1e999": 1e-999}"#
    );
    let v: serde_json::Value = serde_json::from_str(&fixed).expect("readable now");
    assert_eq!(v["b"][1], 1.5e308);
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "serde_json refuses the original"
    );
    // Finite, in a string left open, or not JSON's number syntax (left for the reader
    // to refuse).
    for none in [
        r#"{"a": 1.7976931348623157e308, "b": -0.0, "c": 12345678901234567890123}"#,
        r#"{"a": "1e999"#,
        r#"{"a": 01e999, "b": 1.e999, "c": -e999, "d": 1e+, "e": 1e999e1}"#,
    ] {
        assert_eq!(fix(none), None, "{none}");
    }
}

#[test]
fn lone_surrogate_escapes_and_escaped_backslashes() {
    let fix = |s: &str| replace_lone_surrogates(s);
    assert_eq!(fix(r#""a\ud83dx""#).as_deref(), Some(r#""a\ufffdx""#));
    assert_eq!(
        fix(r#""\ude00\ud83d""#).as_deref(),
        Some(r#""\ufffd\ufffd""#)
    );
    assert_eq!(fix(r#""\ud83d\ude00""#), None, "a pair");
    assert_eq!(fix(r#""\\ud800""#), None, "an escaped backslash, then text");
    assert_eq!(fix(r#""\\\ud800""#).as_deref(), Some(r#""\\\ufffd""#));
    assert_eq!(fix(r#""é\éa\ud800""#).as_deref(), Some(r#""é\éa\ufffd""#));
    assert_eq!(fix(r#""\ud8"#), None, "malformed: left for the reader");
}

#[test]
fn a_phone_named_field_keeps_any_format_and_the_digest_fields_stay() {
    let text = r#"{"traits":{"phone":"030 1234567","phone_sha256":"1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8","tags":["a",12345]}}"#;
    let out: Value =
        serde_json::from_str(&scrub(text, FieldKind::Other, Some("DE")).unwrap().unwrap()).unwrap();
    assert_eq!(out["traits"]["phone"].as_str().unwrap().len(), 64);
    assert_eq!(
        out["traits"]["phone_sha256"],
        json!("1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8")
    );
    assert_eq!(out["traits"]["tags"], json!(["a", 12345]));
    assert_eq!(scrub("{\"a\":", FieldKind::Other, None), Err(Malformed));
}
