//! Attribution through the pipeline, natively: a conversion is credited when it is
//! stored, from the visits of the visitor's stitched devices, and a merge credits the
//! absorbing profile's conversions again.

mod common;

use common::Rig;
use edge_collector::attribution::Model;
use edge_collector::enrich::EdgeInfo;
use edge_collector::sources::Sources;
use serde_json::{json, Value};

fn rig() -> Rig {
    Rig::new(
        Sources::from_json(
            r#"{"shop": {"name": "shop", "consent": "opt-out",
                "attribution": {"conversions": [{"event": "Order Completed", "revenue": "total"}]}}}"#,
        )
        .unwrap(),
    )
}

fn page(id: &str, anon: &str, session: &str, at: &str, ctx: Value) -> Value {
    let mut c =
        json!({"sessionId": session, "page": {"url": "https://shop.example/", "referrer": ""}});
    for (k, v) in ctx.as_object().unwrap() {
        c[k] = v.clone();
    }
    json!({"type": "page", "messageId": id, "anonymousId": anon, "timestamp": at, "context": c})
}

fn order(id: &str, anon: &str, at: &str, total: f64) -> Value {
    json!({"type": "track", "messageId": id, "anonymousId": anon, "event": "Order Completed",
           "timestamp": at, "properties": {"order_id": id, "total": total, "currency": "EUR"}})
}

fn credits(r: &Rig, message_id: &str, model: Model, window: u32) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = r
        .store
        .credits
        .borrow()
        .iter()
        .filter(|c| c.message_id == message_id && c.model == model && c.window_days == window)
        .map(|c| (c.channel.clone(), c.revenue))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn send(r: &Rig, batch: Vec<Value>) {
    let rep = r
        .send(
            &json!({"writeKey": "shop", "batch": batch}),
            EdgeInfo::default(),
        )
        .unwrap();
    assert_eq!(rep.accepted, rep.results.len(), "{:?}", rep.results);
}

#[test]
fn a_conversion_is_credited_over_the_visits_before_it_and_a_merge_credits_it_again() {
    let r = rig();
    let email = "a".repeat(64);
    // Phone: a paid search visit 20 days before the order; not yet known to be the same person.
    send(
        &r,
        vec![page(
            "p1",
            "dev-phone",
            "s1",
            "2026-11-03T10:00:00Z",
            json!({"clickIds": {"gclid": "abc"}}),
        )],
    );
    // Laptop: an email visit 2 days before, a direct visit, then the order.
    send(
        &r,
        vec![
            page(
                "l1",
                "dev-laptop",
                "s2",
                "2026-11-21T10:00:00Z",
                json!({"campaign": {"source": "news", "medium": "email", "name": "Launch"}}),
            ),
            page("l2", "dev-laptop", "s2", "2026-11-21T10:05:00Z", json!({})),
            page("l3", "dev-laptop", "s3", "2026-11-23T09:00:00Z", json!({})),
            order("o1", "dev-laptop", "2026-11-23T09:10:00Z", 100.0),
        ],
    );
    assert_eq!(
        credits(&r, "o1", Model::FirstTouch, 28),
        [("email".to_string(), 100.0)]
    );
    assert_eq!(
        credits(&r, "o1", Model::LastNonDirect, 7),
        [("email".to_string(), 100.0)]
    );
    assert_eq!(
        credits(&r, "o1", Model::Linear, 7),
        [("direct".to_string(), 50.0), ("email".to_string(), 50.0)]
    );

    // The same person soft-logs in on both devices: the phone's profile is merged, and
    // its paid search visit now counts for the laptop's order.
    let identify = |id: &str, anon: &str| {
        json!({"type": "identify", "messageId": id, "anonymousId": anon,
        "timestamp": "2026-11-23T10:00:00Z", "traits": {"email_sha256": email}})
    };
    send(&r, vec![identify("i1", "dev-laptop")]);
    send(&r, vec![identify("i2", "dev-phone")]);
    assert_eq!(
        credits(&r, "o1", Model::FirstTouch, 28),
        [("paid_search".to_string(), 100.0)]
    );
    assert_eq!(
        credits(&r, "o1", Model::FirstTouch, 7),
        [("email".to_string(), 100.0)],
        "20 days is outside 7"
    );
    let pos = credits(&r, "o1", Model::PositionBased, 28);
    assert_eq!(
        pos,
        [
            ("direct".to_string(), 40.0),
            ("email".to_string(), 20.0),
            ("paid_search".to_string(), 40.0)
        ]
    );
    // One row set per conversion, model and window: recrediting replaced, not added.
    let total: f64 = r
        .store
        .credits
        .borrow()
        .iter()
        .filter(|c| c.model == Model::Linear && c.window_days == 28)
        .map(|c| c.credit)
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
}

#[test]
fn a_retried_conversion_is_credited_once_and_an_unconfigured_source_credits_nothing() {
    let r = rig();
    let batch = vec![order("o2", "v", "2026-11-23T09:10:00Z", 40.0)];
    send(&r, batch.clone());
    let rep = r
        .send(
            &json!({"writeKey": "shop", "batch": batch}),
            EdgeInfo::default(),
        )
        .unwrap();
    assert_eq!(rep.duplicates, 1);
    assert_eq!(
        credits(&r, "o2", Model::Linear, 28),
        [("direct".to_string(), 40.0)]
    );
    let plain =
        Rig::new(Sources::from_json(r#"{"k": {"name": "k", "consent": "opt-out"}}"#).unwrap());
    let rep = plain
        .send(
            &json!({"writeKey": "k", "batch": [order("o3", "v", "2026-11-23T09:10:00Z", 1.0)]}),
            EdgeInfo::default(),
        )
        .unwrap();
    assert_eq!(rep.accepted, 1);
    assert!(plain.store.credits.borrow().is_empty());
}

#[test]
fn erasing_a_person_removes_their_credits_and_no_one_elses() {
    let r = rig();
    send(
        &r,
        vec![
            order("o4", "dev-ann", "2026-11-23T09:10:00Z", 10.0),
            order("o5", "dev-bob", "2026-11-23T09:11:00Z", 20.0),
        ],
    );
    let ann = r.profile_of("o4").unwrap();
    pollster::block_on(edge_collector::erasure::erase_profile(
        &r.store,
        &r.identity,
        "shop",
        &ann,
        "2026-11-23T23:00:00Z",
    ))
    .unwrap();
    let left: Vec<String> = r
        .store
        .credits
        .borrow()
        .iter()
        .map(|c| c.message_id.clone())
        .collect();
    assert!(
        !left.is_empty() && left.iter().all(|m| m == "o5"),
        "{left:?}"
    );
}
