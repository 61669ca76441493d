//! Tracking-plan parsing, linting and validation.
#![cfg(not(target_arch = "wasm32"))]

use proptest::strategy::Strategy as _;
use serde_json::{json, Value};
use tracking_plan::identifiers::{sha256_hex, PiiKind};
use tracking_plan::{Message, Plan, UnplannedPolicy, ViolationKind as K};

fn example_plan() -> Plan {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../example-site/tracking-plan.json"
    ))
    .unwrap();
    Plan::from_json(&text).expect("the example plan lints clean")
}

fn msg(v: Value) -> Message {
    serde_json::from_value(v).unwrap()
}

fn kinds_and_paths(plan: &Plan, v: Value) -> Vec<(K, String)> {
    let size = v.to_string().len();
    plan.validate(&msg(v), size)
        .into_iter()
        .map(|x| (x.kind, x.path))
        .collect()
}

fn track(event: &str, props: Value) -> Value {
    json!({"type":"track","messageId":"m","anonymousId":"a","event":event,"properties":props})
}

#[test]
fn valid_events_have_no_violations() {
    let p = example_plan();
    assert_eq!(p.version, "1");
    assert_eq!(p.unplanned, UnplannedPolicy::Flag);
    let ok = [
        track(
            "Product Added",
            json!({"product_id":"ETH-GUJI","name":"Ethiopia Guji","price":14.5,"currency":"EUR","quantity":1}),
        ),
        track(
            "Order Completed",
            json!({"order_id":"o1","total":27.4,"products":[{"product_id":"ETH-GUJI","quantity":2}],"completed_at":"2026-11-23T10:00:00Z"}),
        ),
        track(
            "Newsletter Subscribed",
            json!({"email_sha256": sha256_hex("alice@example.com"), "source":"footer"}),
        ),
        json!({"type":"identify","messageId":"m","userId":"u","traits":{"plan":"pro","website":"https://alice.example"}}),
        json!({"type":"page","messageId":"m","anonymousId":"a","properties":{"path":"/","url":"http://127.0.0.1:8787/"}}),
        json!({"type":"alias","messageId":"m","userId":"u","previousId":"a"}),
    ];
    for v in ok {
        assert_eq!(kinds_and_paths(&p, v.clone()), vec![], "{v}");
    }
}

#[test]
fn every_violation_kind_with_its_path() {
    let p = example_plan();
    let cases: Vec<(Value, Vec<(K, &str)>)> = vec![
        (
            track("Unknown Thing", json!({})),
            vec![(K::UnplannedEvent, "$.event")],
        ),
        (
            track("Product Added", json!({"product_id":"ETH-GUJI","price":1})),
            vec![(K::MissingRequired, "$.properties.currency")],
        ),
        (
            track(
                "Product Added",
                json!({"product_id":"ETH-GUJI","price":"14.50","currency":"EUR"}),
            ),
            vec![(K::TypeMismatch, "$.properties.price")],
        ),
        (
            track(
                "Product Added",
                json!({"product_id":"ETH-GUJI","price":1,"currency":"JPY","quantity":100}),
            ),
            vec![
                (K::OutOfRange, "$.properties.currency"),
                (K::OutOfRange, "$.properties.quantity"),
            ],
        ),
        (
            track(
                "Product Added",
                json!({"product_id":"eth guji","price":1,"currency":"EUR"}),
            ),
            vec![(K::PatternMismatch, "$.properties.product_id")],
        ),
        (
            track(
                "Product Added",
                json!({"product_id":"ETH-GUJI","price":1,"currency":"EUR","coupon code":"X"}),
            ),
            vec![(K::UnexpectedProperty, "$.properties[\"coupon code\"]")],
        ),
        (
            track(
                "Order Completed",
                json!({"order_id":"o","total":1,"products":[{"quantity":0}]}),
            ),
            vec![
                (K::MissingRequired, "$.properties.products[0].product_id"),
                (K::OutOfRange, "$.properties.products[0].quantity"),
            ],
        ),
        (
            track(
                "Order Completed",
                json!({"order_id":"o","total":1,"products":[],"completed_at":"yesterday"}),
            ),
            vec![
                (K::OutOfRange, "$.properties.products"),
                (K::PatternMismatch, "$.properties.completed_at"),
            ],
        ),
        (
            track(
                "Newsletter Subscribed",
                json!({"email_sha256":"alice@example.com"}),
            ),
            vec![(K::RawPii, "$.properties.email_sha256")],
        ),
        (
            json!({"type":"identify","messageId":"m","userId":"u","traits":{"phone_sha256":"+1 650 555 1212","website":"not a uri"}}),
            vec![
                (K::RawPii, "$.traits.phone_sha256"),
                (K::PatternMismatch, "$.traits.website"),
            ],
        ),
        // Raw PII is found in unplanned fields too.
        (
            track(
                "Order Completed",
                json!({"order_id":"o","total":1,"products":[{"product_id":"p"}],"note":"call +44 7911 123456"}),
            ),
            vec![(K::RawPii, "$.properties.note")],
        ),
        (
            track(
                "Order Completed",
                json!({"order_id":"o","total":1,"products":[{"product_id":"p"}],"contact":"bob@corp.example"}),
            ),
            vec![(K::RawPii, "$.properties.contact")],
        ),
    ];
    for (event, want) in cases {
        let got = kinds_and_paths(&p, event.clone());
        let want: Vec<(K, String)> = want.into_iter().map(|(k, s)| (k, s.to_string())).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort_by(|a, b| a.1.cmp(&b.1));
        let mut want_sorted = want.clone();
        want_sorted.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(got_sorted, want_sorted, "{event}");
    }
}

#[test]
fn raw_pii_violation_says_what_was_found() {
    let p = example_plan();
    let v = track(
        "Newsletter Subscribed",
        json!({"email_sha256":"Alice@Example.com"}),
    );
    let out = p.validate(&msg(v), 100);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].pii, Some(PiiKind::Email));
    assert!(out[0].message.contains("SHA-256"));
}

#[test]
fn too_large_and_unplanned_policies() {
    let plan = |policy: &str| {
        Plan::from_value(&json!({"version": 2, "unplanned": policy, "maxEventBytes": 100})).unwrap()
    };
    let m = msg(track("Anything", json!({})));
    assert_eq!(plan("allow").validate(&m, 50), vec![]);
    assert_eq!(plan("flag").validate(&m, 50)[0].kind, K::UnplannedEvent);
    assert_eq!(
        plan("quarantine").validate(&m, 50)[0].kind,
        K::UnplannedEvent
    );
    let big = plan("allow").validate(&m, 101);
    assert_eq!((big[0].kind, big[0].path.as_str()), (K::TooLarge, "$"));
    assert_eq!(plan("allow").version, "2");
}

#[test]
fn raw_pii_policy_defaults_to_hash() {
    use tracking_plan::RawPiiPolicy;
    let plan = |v: Value| Plan::from_value(&v);
    assert_eq!(
        plan(json!({"version": 1})).unwrap().raw_pii,
        RawPiiPolicy::Hash
    );
    assert_eq!(
        plan(json!({"version": 1, "rawPii": "quarantine"}))
            .unwrap()
            .raw_pii,
        RawPiiPolicy::Quarantine
    );
    let errs = plan(json!({"version": 1, "rawPii": "keep"})).unwrap_err();
    assert_eq!(errs[0].path, "$.rawPii");
}

#[test]
fn integer_and_number_types() {
    let p = Plan::from_value(&json!({"version":"1","events":{"E":{"properties":{"type":"object","properties":{
        "i":{"type":"integer"},"n":{"type":"number","multipleOf":0.5},"s":{"type":["string","null"]}}}}}})).unwrap();
    let check = |props: Value| kinds_and_paths(&p, track("E", props));
    assert_eq!(check(json!({"i": 3, "n": 2.5, "s": null})), vec![]);
    assert_eq!(
        check(json!({"i": 3.0})),
        vec![],
        "3.0 is an integer in JSON Schema"
    );
    assert_eq!(
        check(json!({"i": 3.5})),
        vec![(K::TypeMismatch, "$.properties.i".to_string())]
    );
    assert_eq!(
        check(json!({"n": 2.2})),
        vec![(K::OutOfRange, "$.properties.n".to_string())]
    );
    assert_eq!(
        check(json!({"s": 1})),
        vec![(K::TypeMismatch, "$.properties.s".to_string())]
    );
}

#[test]
fn lint_reports_every_problem_with_its_path() {
    let bad = json!({
        "version": "1",
        "unplanned": "sometimes",
        "extra": 1,
        "events": {
            "A": {"properties": {"type": "object", "properties": {
                "x": {"type": "strin"},
                "y": {"oneOf": []},
                "z": {"pattern": "("},
                "w": {"format": "ipv4"},
                "v": {"type": "number", "x-pii": "email"},
                "u": {"minimum": "0"}
            }}},
            "B": {"props": {}}
        }
    });
    let errs = Plan::from_value(&bad).unwrap_err();
    let mut paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "$.events.A.properties.properties.u.minimum",
            "$.events.A.properties.properties.v",
            "$.events.A.properties.properties.w.format",
            "$.events.A.properties.properties.x.type",
            "$.events.A.properties.properties.y.oneOf",
            "$.events.A.properties.properties.z.pattern",
            "$.events.B.props",
            "$.extra",
            "$.unplanned",
        ]
    );
    assert!(Plan::from_json("{").unwrap_err()[0]
        .message
        .starts_with("not JSON"));
    assert_eq!(Plan::from_json("{}").unwrap_err()[0].path, "$.version");
}

proptest::proptest! {
    #[test]
    fn validation_never_panics(props in proptest::arbitrary::any::<u64>().prop_map(|_| ()).prop_flat_map(|_| json_value(3))) {
        let p = example_plan();
        for event in ["Product Added", "Order Completed", "Newsletter Subscribed", "Other"] {
            let v = track(event, props.clone());
            let _ = p.validate(&msg(v), 10);
        }
        let _ = Plan::from_value(&json!({"version":"1","events":{"E":{"properties":props}}}));
    }
}

fn json_value(depth: u32) -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(json!("ETH-GUJI")),
        Just(json!("a@b.example")),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                "[a-z_]{1,10}|product_id|price|products|quantity",
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
