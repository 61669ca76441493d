//! Segment membership on synthetic histories, and RFM quintiles checked by hand.

use edge_collector::segments::*;
use serde_json::{json, Value};

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_800_000_000_000;

fn seg(id: &str, rule: Value) -> Segment {
    serde_json::from_value(json!({"id": id, "rule": rule})).unwrap()
}

fn ev(event: &str, days_ago: f64, props: Value) -> Fact {
    Fact {
        event: event.into(),
        at_ms: NOW - (days_ago * DAY as f64) as i64,
        properties: props,
        ..Fact::default()
    }
}

fn order(days_ago: f64, categories: &[&str], total: f64) -> Fact {
    let products: Vec<Value> = categories.iter().map(|c| json!({"category": c})).collect();
    ev(
        "Order Completed",
        days_ago,
        json!({"products": products, "total": total}),
    )
}

fn facts(events: Vec<Fact>) -> Facts {
    Facts {
        events,
        ..Facts::default()
    }
}

fn example_segments() -> Vec<Segment> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../example-site/segments.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn member(segments: &[Segment], id: &str, f: &Facts) -> bool {
    members_of(segments, f, NOW).contains(&id)
}

#[test]
fn three_orders_in_one_category_within_ninety_days() {
    let s = example_segments();
    validate(&s, 400).unwrap();
    let fan = "category-fan";
    // Three orders with shoes (one also with hats): in.
    let yes = facts(vec![
        order(80.0, &["Shoes"], 50.0),
        order(30.0, &["shoes", "hats"], 20.0),
        order(1.0, &["shoes"], 10.0),
    ]);
    assert!(member(&s, fan, &yes));
    // Three orders, but spread over categories: out.
    let spread = facts(vec![
        order(10.0, &["shoes"], 1.0),
        order(9.0, &["hats"], 1.0),
        order(8.0, &["bags", "shoes"], 1.0),
    ]);
    assert!(!member(&s, fan, &spread));
    // Three shoe orders, but one is 91 days old: out.
    let old = facts(vec![
        order(91.0, &["shoes"], 1.0),
        order(30.0, &["shoes"], 1.0),
        order(1.0, &["shoes"], 1.0),
    ]);
    assert!(!member(&s, fan, &old));
    // One order with the same category twice counts once.
    let twice = facts(vec![
        order(3.0, &["shoes", "shoes"], 1.0),
        order(2.0, &["shoes"], 1.0),
    ]);
    assert!(!member(&s, fan, &twice));
}

#[test]
fn a_big_cart_abandoned_in_the_last_day() {
    let s = example_segments();
    let id = "cart-abandoned";
    let cart = |h: f64, total: f64| ev("Checkout Started", h / 24.0, json!({"total": total}));
    assert!(member(&s, id, &facts(vec![cart(2.0, 180.0)])));
    // Small cart, too fresh, too old, or ordered afterwards: out.
    assert!(!member(&s, id, &facts(vec![cart(2.0, 150.0)])));
    assert!(!member(&s, id, &facts(vec![cart(0.1, 400.0)])));
    assert!(!member(&s, id, &facts(vec![cart(25.0, 400.0)])));
    let bought = facts(vec![cart(3.0, 400.0), order(2.0 / 24.0, &["shoes"], 400.0)]);
    assert!(!member(&s, id, &bought));
    // An order before a later big cart does not save it.
    let again = facts(vec![order(3.0 / 24.0, &["x"], 1.0), cart(2.0, 400.0)]);
    assert!(member(&s, id, &again));
}

#[test]
fn at_risk_after_three_orders_and_sixty_quiet_days() {
    let s = example_segments();
    let id = "at-risk";
    let quiet = facts(vec![
        order(200.0, &["a"], 1.0),
        order(150.0, &["a"], 1.0),
        order(61.0, &["a"], 1.0),
    ]);
    assert!(member(&s, id, &quiet));
    let recent = facts(vec![
        order(200.0, &["a"], 1.0),
        order(150.0, &["a"], 1.0),
        order(59.0, &["a"], 1.0),
    ]);
    assert!(!member(&s, id, &recent));
    let two = facts(vec![order(200.0, &["a"], 1.0), order(150.0, &["a"], 1.0)]);
    assert!(!member(&s, id, &two));
}

#[test]
fn traits_sums_and_boolean_rules() {
    let segments = vec![
        seg(
            "pro",
            json!({"trait": {"path": "plan", "op": "eq", "value": "PRO"}}),
        ),
        seg(
            "big-spender",
            json!({"sum": {"event": "Order Completed", "of": "total", "days": 365, "atLeast": 500}}),
        ),
        seg(
            "pro-not-big",
            json!({"all": [{"trait": {"path": "plan", "op": "eq", "value": "pro"}},
                           {"not": {"sum": {"event": "Order Completed", "of": "total", "atLeast": 500}}}]}),
        ),
        seg(
            "either",
            json!({"any": [{"trait": {"path": "tags", "op": "contains", "value": "vip"}},
                           {"count": {"event": "Order Completed", "where": [{"path": "total", "op": "gte", "value": "1000"}]}}]}),
        ),
    ];
    validate(&segments, 400).unwrap();
    let mut f = facts(vec![order(10.0, &["a"], 300.0), order(5.0, &["a"], 250.0)]);
    f.traits.insert("plan".into(), json!("pro"));
    assert_eq!(members_of(&segments, &f, NOW), vec!["pro", "big-spender"]);
    f.events.pop();
    assert_eq!(members_of(&segments, &f, NOW), vec!["pro", "pro-not-big"]);
    f.traits.insert("tags".into(), json!(["new", "vip"]));
    assert!(members_of(&segments, &f, NOW).contains(&"either"));
    f.traits.clear();
    f.events.push(order(1.0, &["a"], 1000.0));
    assert_eq!(
        members_of(&segments, &f, NOW),
        vec!["big-spender", "either"]
    );
}

#[test]
fn configuration_errors_are_reported() {
    let long = vec![seg("x", json!({"count": {"event": "A", "days": 90}}))];
    assert!(validate(&long, 30).unwrap_err().contains("longer than"));
    let bad_id = vec![seg("Bad Id", json!({"count": {"event": "A"}}))];
    assert!(validate(&bad_id, 30).is_err());
    let twice = vec![
        seg("a", json!({"count": {"event": "A"}})),
        seg("a", json!({"count": {"event": "B"}})),
    ];
    assert!(validate(&twice, 30).is_err());
    let no_of = vec![seg("s", json!({"sum": {"event": "A"}}))];
    assert!(validate(&no_of, 30).is_err());
    let unknown = serde_json::from_value::<Segment>(json!({"id": "a", "rule": {"cnt": {}}}));
    assert!(unknown.is_err());
}

/// Sizes a request pays for on every scoring are capped, and the limits are exact.
#[test]
fn oversized_declarations_are_refused_at_their_limits() {
    let one = |i: usize| seg(&format!("s{i}"), json!({"count": {"event": "A"}}));
    let many: Vec<Segment> = (0..MAX_SEGMENTS).map(one).collect();
    validate(&many, 30).unwrap();
    let too_many: Vec<Segment> = (0..=MAX_SEGMENTS).map(one).collect();
    assert!(validate(&too_many, 30).unwrap_err().contains("at most 100"));

    let rules = |n: usize| json!({"any": vec![json!({"count": {"event": "A"}}); n - 1]});
    validate(&[seg("wide", rules(MAX_RULES))], 30).unwrap();
    let err = validate(&[seg("wide", rules(MAX_RULES + 1))], 30).unwrap_err();
    assert!(err.contains("more than 32 rules"), "{err}");
    let mut deep = json!({"count": {"event": "A"}});
    for _ in 0..MAX_RULES {
        deep = json!({ "not": deep });
    }
    assert!(validate(&[seg("deep", deep)], 30).is_err());

    let conds = |n: usize| {
        json!({"count": {"event": "A",
        "where": vec![json!({"path": "x", "op": "exists"}); n]}})
    };
    validate(&[seg("c", conds(MAX_CONDITIONS))], 30).unwrap();
    assert!(validate(&[seg("c", conds(MAX_CONDITIONS + 1))], 30).is_err());
}

/// Ten converting profiles, checked by hand: frequency 1..10 gives cut points 2, 4, 6, 8
/// (nearest rank at 20/40/60/80 % of 10: ranks 2, 4, 6, 8), so 1-2 score 1, 3-4 score 2,
/// 5-6 score 3, 7-8 score 4, 9-10 score 5. Recency 0..9 days gives cuts 1, 3, 5, 7 and
/// the reverse scores: 0-1 days score 5, 8-9 days score 1. Monetary 10, 20, .., 100
/// gives cuts 20, 40, 60, 80.
#[test]
fn rfm_quintiles_by_hand() {
    let raws: Vec<RawRfm> = (0..10)
        .map(|i| RawRfm {
            last_ms: NOW - i as i64 * DAY,
            frequency: (i + 1) as f64,
            monetary: ((i + 1) * 10) as f64,
        })
        .collect();
    let c = cuts(&raws, NOW);
    assert_eq!(c.frequency, vec![2.0, 4.0, 6.0, 8.0]);
    assert_eq!(c.recency, vec![1.0, 3.0, 5.0, 7.0]);
    assert_eq!(c.monetary, vec![20.0, 40.0, 60.0, 80.0]);
    let scores: Vec<(u8, u8, u8)> = raws
        .iter()
        .map(|r| {
            let s = rfm(Some(*r), &c, NOW).unwrap();
            (s.r, s.f, s.m)
        })
        .collect();
    assert_eq!(
        scores,
        vec![
            (5, 1, 1),
            (5, 1, 1),
            (4, 2, 2),
            (4, 2, 2),
            (3, 3, 3),
            (3, 3, 3),
            (2, 4, 4),
            (2, 4, 4),
            (1, 5, 5),
            (1, 5, 5)
        ]
    );
    // Three profiles: cuts at ranks 1, 2, 2, 3 (ceil(3k/5)).
    assert_eq!(
        quintile_cuts(&[30.0, 10.0, 20.0]),
        vec![10.0, 20.0, 20.0, 30.0]
    );
    assert_eq!(score(25.0, &[10.0, 20.0, 20.0, 30.0]), 4);
    assert!(rfm(None, &c, NOW).is_none());
    assert!(rfm(raws.first().copied(), &Cuts::default(), NOW).is_none());
    // Conversions sum into raw values.
    let raw = raw_rfm([
        (NOW - 3 * DAY, 10.0),
        (NOW - DAY, 5.5),
        (NOW - 9 * DAY, f64::NAN),
    ])
    .unwrap();
    assert_eq!(
        (raw.last_ms, raw.frequency, raw.monetary),
        (NOW - DAY, 3.0, 15.5)
    );
}

#[test]
fn rfm_rules_and_the_vip_example() {
    let s = example_segments();
    let mut f = Facts::default();
    f.rfm = Some(Rfm {
        recency_days: 1.0,
        frequency: 9.0,
        monetary: 900.0,
        r: 5,
        f: 5,
        m: 4,
    });
    assert!(member(&s, "vip", &f));
    f.rfm.as_mut().unwrap().m = 3;
    assert!(!member(&s, "vip", &f));
    f.rfm = None;
    assert!(!member(&s, "vip", &f));
}

#[test]
fn changes_are_entries_and_exits_with_stable_ids() {
    let a = changes("k", "p1", &["x", "y"], &["y", "z"], NOW);
    let kinds: Vec<(&str, ChangeKind)> = a.iter().map(|c| (c.segment.as_str(), c.kind)).collect();
    assert_eq!(
        kinds,
        vec![("z", ChangeKind::Enter), ("x", ChangeKind::Exit)]
    );
    assert_eq!(a, changes("k", "p1", &["x", "y"], &["y", "z"], NOW));
    assert_ne!(
        a[0].message_id,
        changes("k", "p2", &["x", "y"], &["y", "z"], NOW)[0].message_id
    );
    assert!(changes("k", "p1", &["x"], &["x"], NOW).is_empty());
    let m = a[0].message("Fans");
    assert_eq!(m["event"], "Segment Entered");
    assert_eq!(m["properties"]["segmentId"], "z");
}

#[test]
fn shareable_traits_are_coarse_and_never_identifiers() {
    let traits = json!({"plan": "pro", "score": 87.6, "email": "ann@example.com",
                        "nick": "ann@example.com", "secret": "x", "long": "a".repeat(100)})
    .as_object()
    .cloned()
    .unwrap();
    let share = vec![
        "plan".into(),
        "score".into(),
        "nick".into(),
        "long".into(),
        "absent".into(),
    ];
    let out = shareable_traits(&traits, &share);
    assert_eq!(out["plan"], "pro");
    assert_eq!(out["score"], 88);
    assert!(
        !out.contains_key("nick"),
        "an email is never shared, even when marked"
    );
    assert!(!out.contains_key("secret"));
    assert_eq!(out["long"].as_str().unwrap().len(), 64);
}

#[test]
fn events_read_and_what_rules_need() {
    let s = example_segments();
    let names = events_read(&s);
    assert!(names.contains(&"Order Completed"));
    assert!(names.contains(&"Checkout Started"));
    assert!(reads_rfm(&s));
    let t = vec![seg(
        "t",
        json!({"not": {"trait": {"path": "a", "op": "exists"}}}),
    )];
    assert!(reads_traits(&t) && !reads_rfm(&t) && events_read(&t).is_empty());
}

/// Segments declared through the admin API replace those SOURCES gives, as the same
/// form (what is stored, canonical, reads back equal); an invalid declaration or one
/// for a key no longer configured is left out and reported, never applied half.
#[test]
fn declared_segments_replace_the_configured_ones_or_are_reported() {
    use edge_collector::sources::{parse_segments, Sources};
    let sources = Sources::from_json(
        &json!({"shop": {"name": "shop", "retentionDays": 30,
                         "segments": [{"id": "old", "rule": {"count": {"event": "Order Completed"}}}]}})
        .to_string(),
    )
    .unwrap();
    let shop = sources.get("shop").unwrap();
    let list = parse_segments(shop, r#"[{"id": "new", "name": "N", "rule": {"count": {"event": "Order Completed", "days": 7, "atLeast": 2}}}]"#).unwrap();
    let canonical = serde_json::to_string(&list).unwrap();
    assert_eq!(
        parse_segments(shop, &canonical).unwrap(),
        list,
        "stored form reads back equal"
    );
    let (merged, problems) = sources.with_declared_segments(&[("shop".into(), canonical.clone())]);
    assert!(problems.is_empty(), "{problems:?}");
    let ids: Vec<&str> = merged
        .get("shop")
        .unwrap()
        .segments()
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids, ["new"]);
    assert_eq!(
        sources.get("shop").unwrap().segments()[0].id,
        "old",
        "the configured sources are untouched"
    );
    // A window longer than the retention, a bad id, a duplicate, hostile nesting: refused.
    for bad in [
        r#"[{"id": "w", "rule": {"count": {"event": "x", "days": 31}}}]"#,
        r#"[{"id": "Bad Id", "rule": {"count": {"event": "x"}}}]"#,
        r#"[{"id": "a", "rule": {"count": {"event": "x"}}}, {"id": "a", "rule": {"count": {"event": "x"}}}]"#,
        &format!(
            r#"[{{"id": "n", "rule": {}{}}}]"#,
            r#"{"not": "#.repeat(300),
            "}".repeat(300)
        ),
        "{}",
    ] {
        assert!(parse_segments(shop, bad).is_err(), "{bad}");
    }
    let (kept, problems) = sources.with_declared_segments(&[
        ("gone".into(), canonical),
        (
            "shop".into(),
            r#"[{"id": "w", "rule": {"count": {"event": "x", "days": 99}}}]"#.into(),
        ),
    ]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(kept.get("shop").unwrap().segments()[0].id, "old");
}
