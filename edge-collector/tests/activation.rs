//! Activation through the pipeline, natively: segment membership moves as events are
//! stored, changes are recorded once, destinations get jobs only under the consent they
//! need, and every skip is logged with why.

mod common;

use common::{Rig, NOW};
use edge_collector::activation::{self, Status};
use edge_collector::destinations::{self, Skip};
use edge_collector::enrich::EdgeInfo;
use edge_collector::segments::ChangeKind;
use edge_collector::sources::Sources;
use serde_json::{json, Value};

const EMAIL: &str = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f";
const PHONE_META: &str = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176";
const PHONE_E164: &str = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8";

fn example_segments() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../example-site/segments.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rig() -> Rig {
    Rig::new(sources(example_segments()))
}

fn sources(segments: Value) -> Sources {
    let config = json!({"shop": {
    "name": "shop", "consent": "opt-in", "retentionDays": 400,
    "attribution": {"conversions": [{"event": "Order Completed", "revenue": "total"}]},
    "segments": segments,
    "personalization": {"traits": ["plan"]},
    "destinations": [
        {"id": "meta", "kind": "meta", "events": ["Order Completed"], "pixelId": "1234",
         "secret": "META_TOKEN", "eventNames": {"Order Completed": "Purchase"}},
        {"id": "google", "kind": "google", "events": ["Order Completed"], "accountId": "111",
         "conversionAction": "222", "secret": "GOOGLE_TOKEN"},
        {"id": "hook", "kind": "webhook", "events": ["Segment Entered", "Segment Exited"],
         "endpoint": "http://127.0.0.1:9/hook", "secret": "HOOK_KEY"}
    ]}});
    Sources::from_json(&config.to_string()).unwrap()
}

fn consent(all: bool) -> Value {
    json!({"categoryPreferences": {"analytics": true, "marketing": all, "personalization": all}})
}

fn order(id: &str, anon: &str, days_ago: i64, total: f64, c: &Value) -> Value {
    let at = tracking_plan::time::format_rfc3339(NOW - days_ago * 86_400_000);
    json!({"type": "track", "messageId": id, "anonymousId": anon, "event": "Order Completed",
           "timestamp": at, "context": {"consent": c, "clickIds": {"gclid": "g-1"}},
           "properties": {"order_id": id, "total": total, "currency": "EUR",
                          "products": [{"product_id": "ETH-GUJI", "category": "Light roast"}]}})
}

fn identify(id: &str, anon: &str, c: &Value) -> Value {
    json!({"type": "identify", "messageId": id, "anonymousId": anon, "context": {"consent": c},
           "traits": {"email_sha256": EMAIL, "phone_sha256": PHONE_E164,
                      "phone_sha256_meta": PHONE_META, "plan": "pro"}})
}

fn send(r: &Rig, batch: Vec<Value>) {
    let rep = r
        .send(
            &json!({"writeKey": "shop", "batch": batch}),
            EdgeInfo::default(),
        )
        .unwrap();
    assert_eq!(
        rep.accepted + rep.duplicates,
        rep.results.len(),
        "{:?}",
        rep.results
    );
}

fn members(r: &Rig, profile: &str) -> Vec<String> {
    let mut m: Vec<String> = r
        .store
        .members
        .borrow()
        .iter()
        .filter(|(_, p, _)| p == profile)
        .map(|(_, _, s)| s.clone())
        .collect();
    m.sort();
    m
}

/// The profile's state as exports and personalization read it.
fn states_of(r: &Rig, p: &str) -> std::collections::BTreeMap<String, activation::State> {
    let io = edge_collector::pipeline::activate::Io {
        store: &r.store,
        identity: &r.identity,
    };
    let src = r.sources.get("shop").unwrap();
    pollster::block_on(edge_collector::pipeline::activate::states(
        &io,
        "shop",
        src,
        &[p.to_string()],
        NOW,
    ))
    .unwrap()
}

fn log_of(r: &Rig, dest: &str, id: &str) -> Option<activation::Delivery> {
    r.store
        .deliveries
        .borrow()
        .iter()
        .find(|d| d.destination == dest && d.message_id == id)
        .cloned()
}

#[test]
fn orders_move_segments_and_reach_destinations_with_the_profiles_hashes() {
    let r = rig();
    let all = consent(true);
    send(&r, vec![identify("i1", "anon-ann-1", &all)]);
    send(
        &r,
        vec![
            order("o1", "anon-ann-1", 3, 40.0, &all),
            order("o2", "anon-ann-1", 2, 40.0, &all),
        ],
    );
    let p = r.profile_of("o1").unwrap();
    assert_eq!(members(&r, &p), vec!["returning-customer"]);
    send(&r, vec![order("o3", "anon-ann-1", 1, 40.0, &all)]);
    assert_eq!(members(&r, &p), vec!["category-fan", "returning-customer"]);

    // One change record per entry, and each went to the webhook as a job.
    let changes = r.store.changes.borrow().clone();
    let entered: Vec<&str> = changes
        .iter()
        .filter(|(_, c)| c.kind == ChangeKind::Enter)
        .map(|(_, c)| c.segment.as_str())
        .collect();
    assert_eq!(entered, vec!["returning-customer", "category-fan"]);
    let queued = r.store.queued.borrow().clone();
    let hook: Vec<&str> = queued
        .iter()
        .filter(|j| j.destination == "hook")
        .map(|j| j.event["properties"]["segmentId"].as_str().unwrap())
        .collect();
    assert_eq!(hook, vec!["returning-customer", "category-fan"]);

    // Each order went to Meta and Google once, with the profile's hashes.
    let meta: Vec<&destinations::Job> = queued.iter().filter(|j| j.destination == "meta").collect();
    assert_eq!(meta.len(), 3);
    assert_eq!(meta[0].hashes.email, vec![EMAIL]);
    assert_eq!(meta[0].hashes.phone_meta, vec![PHONE_META]);
    assert_eq!(log_of(&r, "google", "o3").unwrap().status, Status::Queued);

    // A retry of the same request (a duplicate now) plans again, but the log keeps a
    // delivered line as it is.
    r.store.deliveries.borrow_mut().iter_mut().for_each(|d| {
        if d.message_id == "o3" {
            d.status = Status::Delivered;
        }
    });
    send(&r, vec![order("o3", "anon-ann-1", 1, 40.0, &all)]);
    assert_eq!(log_of(&r, "meta", "o3").unwrap().status, Status::Delivered);
    assert_eq!(
        r.store.changes.borrow().len(),
        2,
        "no change is recorded twice"
    );
}

#[test]
fn without_marketing_consent_nothing_goes_to_the_ad_platforms_and_the_log_says_why() {
    let r = rig();
    let analytics_only = consent(false);
    send(&r, vec![identify("i1", "anon-bob-1", &analytics_only)]);
    send(
        &r,
        vec![order("o1", "anon-bob-1", 1, 10.0, &analytics_only)],
    );
    let queued = r.store.queued.borrow().clone();
    assert!(queued.iter().all(|j| j.destination == "hook"), "{queued:?}");
    let meta = log_of(&r, "meta", "o1").unwrap();
    assert_eq!(
        (meta.status, meta.reason.as_deref()),
        (Status::Skipped, Some("consent_marketing"))
    );
    assert_eq!(
        log_of(&r, "google", "o1").unwrap().reason.as_deref(),
        Some("consent_marketing")
    );
    // The webhook needs analytics only: the segment entry goes there.
    assert_eq!(queued.len(), 1);
}

#[test]
fn an_event_older_than_seven_days_is_never_sent_to_meta() {
    let r = rig();
    let all = consent(true);
    send(&r, vec![identify("i1", "anon-cy-1", &all)]);
    send(&r, vec![order("old", "anon-cy-1", 8, 10.0, &all)]);
    let meta = log_of(&r, "meta", "old").unwrap();
    assert_eq!(
        (meta.status, meta.reason.as_deref()),
        (Status::Skipped, Some("too_old"))
    );
    assert_eq!(log_of(&r, "google", "old").unwrap().status, Status::Queued);
    // And a queued job that aged past 7 days while retried is refused at send time.
    let job = r
        .store
        .queued
        .borrow()
        .iter()
        .find(|j| j.destination == "google")
        .cloned()
        .unwrap();
    let src = r.sources.get("shop").unwrap();
    let mut meta_job = job.clone();
    meta_job.destination = "meta".into();
    let meta_dest = src.destination("meta").unwrap();
    assert_eq!(
        destinations::request(meta_dest, &meta_job, "t", NOW),
        Err(Skip::TooOld)
    );
}

#[test]
fn delivery_attempts_retry_then_die_and_a_refusal_is_final() {
    let r = rig();
    let all = consent(true);
    send(&r, vec![identify("i1", "anon-di-1", &all)]);
    send(&r, vec![order("o1", "anon-di-1", 0, 10.0, &all)]);
    let job = r.store.queued.borrow()[0].clone();
    let (d, again) = activation::after_attempt(&job, Ok(Some(500)), 1, 6, NOW);
    assert!(again && d.status == Status::Retrying && d.http_status == Some(500));
    let (d, again) = activation::after_attempt(&job, Ok(None), 6, 6, NOW);
    assert!(!again && d.status == Status::Dead);
    let (d, again) = activation::after_attempt(&job, Ok(Some(400)), 2, 6, NOW);
    assert!(!again && d.status == Status::Rejected);
    let (d, _) = activation::after_attempt(&job, Ok(Some(200)), 3, 6, NOW);
    assert!(d.status == Status::Delivered && d.status.is_final());
    let first = destinations::FIRST_RETRY_SECONDS;
    assert_eq!(destinations::backoff_seconds(1, first), 10);
    assert_eq!(destinations::backoff_seconds(4, first), 80);
    assert_eq!(destinations::backoff_seconds(30, first), 900);
    assert_eq!(destinations::backoff_seconds(3, 1), 4);
    assert_eq!(destinations::backoff_seconds(1, 0), 1, "never no delay");
    assert_eq!(destinations::backoff_seconds(1, 3600), 60);
}

#[test]
fn the_personal_view_is_empty_without_consent_and_coarse_with_it() {
    let r = rig();
    let all = consent(true);
    send(
        &r,
        vec![
            identify("i1", "anon-ed-1", &all),
            order("o1", "anon-ed-1", 1, 10.0, &all),
        ],
    );
    let p = r.profile_of("o1").unwrap();
    let src = r.sources.get("shop").unwrap();
    let states = states_of(&r, &p);
    let view = activation::personal_view(src, states.get(&p), true);
    assert_eq!(
        view,
        json!({"segments": ["returning-customer"], "traits": {"plan": "pro"}})
    );
    let text = view.to_string();
    assert!(!text.contains(EMAIL) && !text.contains(&p), "{text}");
    let denied = activation::personal_view(src, states.get(&p), false);
    assert_eq!(denied, json!({"segments": [], "traits": {}}));
}

/// The exact requests, field by field (the platforms' documented formats).
#[test]
fn the_platform_requests_follow_the_documented_formats() {
    let r = rig();
    let all = consent(true);
    send(&r, vec![identify("i1", "anon-fm-1", &all)]);
    let mut o = order("o1", "anon-fm-1", 0, 29.4, &all);
    o["messageId"] = json!("m-o1");
    o["context"]["clickIds"]["fbclid"] = json!("IwAR-1");
    o["context"]["page"] = json!({"url": "https://shop.example/checkout"});
    send(&r, vec![o]);
    let src = r.sources.get("shop").unwrap();
    let queued = r.store.queued.borrow().clone();
    let job = |d: &str| queued.iter().find(|j| j.destination == d).unwrap();

    let meta =
        destinations::request(src.destination("meta").unwrap(), job("meta"), "tok", NOW).unwrap();
    assert_eq!(meta.url, "https://graph.facebook.com/v21.0/1234/events");
    let body: Value = serde_json::from_str(&meta.body).unwrap();
    assert_eq!(body["access_token"], "tok");
    let e = &body["data"][0];
    assert_eq!(e["event_name"], "Purchase");
    assert_eq!(e["event_id"], "o1", "the order id, not the messageId");
    // Without an order id, the messageId.
    let mut anonymous_order = job("meta").clone();
    anonymous_order.event["properties"]
        .as_object_mut()
        .unwrap()
        .remove("order_id");
    let plain = destinations::request(
        src.destination("meta").unwrap(),
        &anonymous_order,
        "tok",
        NOW,
    )
    .unwrap();
    let plain: Value = serde_json::from_str(&plain.body).unwrap();
    assert_eq!(plain["data"][0]["event_id"], "m-o1");
    assert_eq!(e["action_source"], "website");
    assert_eq!(e["event_time"], NOW / 1000);
    assert_eq!(e["event_source_url"], "https://shop.example/checkout");
    assert_eq!(e["user_data"]["em"], json!([EMAIL]));
    assert_eq!(e["user_data"]["ph"], json!([PHONE_META]));
    assert_eq!(e["user_data"]["fbc"], format!("fb.1.{NOW}.IwAR-1"));
    assert_eq!(
        e["custom_data"],
        json!({"value": 29.4, "currency": "EUR", "order_id": "o1"})
    );

    let google = destinations::request(
        src.destination("google").unwrap(),
        job("google"),
        "oauth",
        NOW,
    )
    .unwrap();
    assert_eq!(
        google.url,
        "https://datamanager.googleapis.com/v1/events:ingest"
    );
    assert!(google
        .headers
        .contains(&("Authorization".into(), "Bearer oauth".into())));
    let body: Value = serde_json::from_str(&google.body).unwrap();
    assert_eq!(
        body["destinations"],
        json!([{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "111"},
                "productDestinationId": "222"}])
    );
    assert_eq!(body["encoding"], "HEX");
    let g = &body["events"][0];
    assert_eq!(g["transactionId"], "o1");
    assert_eq!(g["adIdentifiers"], json!({"gclid": "g-1"}));
    assert_eq!(g["conversionValue"], 29.4);
    assert_eq!(
        g["userData"]["userIdentifiers"],
        json!([{"emailAddress": EMAIL}, {"phoneNumber": PHONE_E164}])
    );
    assert_eq!(body["consent"]["adUserData"], "CONSENT_GRANTED");
    // No secret, no request.
    assert_eq!(
        destinations::request(src.destination("google").unwrap(), job("google"), "", NOW),
        Err(Skip::NoSecret)
    );
}

/// A revocation recorded after an event was stored stops its queued delivery; a
/// decision that still grants what the destination needs lets it go.
#[test]
fn a_consent_revoked_while_a_job_waits_stops_it_at_send_time() {
    let r = rig();
    let src = r.sources.get("shop").unwrap();
    let meta = src.destination("meta").unwrap();
    let google = src.destination("google").unwrap();
    let hook = src.destination("hook").unwrap();
    let revoked = json!({"analytics": true, "marketing": false, "personalization": true});
    let granted = json!({"analytics": true, "marketing": true, "personalization": false});
    assert_eq!(
        destinations::still_granted(meta, Some(&revoked)),
        Err(Skip::Consent(destinations::Need::Marketing))
    );
    assert!(destinations::still_granted(google, Some(&revoked)).is_err());
    assert_eq!(destinations::still_granted(hook, Some(&revoked)), Ok(()));
    assert_eq!(destinations::still_granted(meta, Some(&granted)), Ok(()));
    // No later decision on record: the event's own snapshot (checked when queued) stands.
    assert_eq!(destinations::still_granted(meta, None), Ok(()));
    let nothing = json!({"analytics": false});
    assert!(destinations::still_granted(hook, Some(&nothing)).is_err());
}

#[test]
fn personalization_fails_closed_without_a_recorded_grant() {
    assert!(!activation::personalization_granted(None));
    assert!(!activation::personalization_granted(Some(&json!({}))));
    assert!(!activation::personalization_granted(Some(
        &json!({"personalization": "yes"})
    )));
    assert!(!activation::personalization_granted(Some(
        &json!({"personalization": false})
    )));
    assert!(activation::personalization_granted(Some(
        &json!({"personalization": true})
    )));
}

/// The rescoring's cut points come from each converting profile's sums, across rules.
#[test]
fn the_daily_cut_points_sum_each_profile_over_its_rules() {
    let day = |d: i64| tracking_plan::time::format_rfc3339(NOW - d * 86_400_000);
    let row = |p: &str, d: i64, n: f64, m: f64| activation::ConversionSum {
        profile_id: p.into(),
        last: day(d),
        n,
        revenue: m,
    };
    // Five profiles; p1 converts under two rules (its counts and revenue add up).
    let rows = vec![
        row("p1", 1, 1.0, 10.0),
        row("p1", 3, 1.0, 90.0),
        row("p2", 2, 2.0, 40.0),
        row("p3", 10, 3.0, 300.0),
        row("p4", 30, 1.0, f64::NAN),
        row("p5", 5, 5.0, 20.0),
    ];
    let cuts = activation::cut_points(&rows, NOW);
    // Nearest-rank quintiles of frequency [2, 2, 3, 1, 5] -> sorted [1, 2, 2, 3, 5].
    assert_eq!(cuts.frequency, vec![1.0, 2.0, 2.0, 3.0]);
    // Monetary [100, 40, 300, 0 (NaN dropped), 20] -> [0, 20, 40, 100, 300].
    assert_eq!(cuts.monetary, vec![0.0, 20.0, 40.0, 100.0]);
    // Recency in days [1, 2, 10, 30, 5] -> [1, 2, 5, 10, 30].
    assert_eq!(cuts.recency, vec![1.0, 2.0, 5.0, 10.0]);
    let src_rfm = rig();
    let src = src_rfm.sources.get("shop").unwrap();
    assert!(activation::cuts_due(src, None, NOW));
    assert!(!activation::cuts_due(src, Some(&day(0)), NOW + 3_600_000));
    assert!(activation::cuts_due(src, Some(&day(1)), NOW));
}

/// Meta Custom Audiences (`email`,`phone`: Meta's digests) and Google Customer Match
/// (`Email`,`Phone`: gmail form, E.164), members without consent or keys left out.
#[test]
fn audience_exports_follow_each_platforms_columns_and_consent() {
    use edge_collector::audiences::{export, Format};
    use edge_collector::destinations::Hashes;
    let gmail = "a".repeat(64);
    let full = Hashes {
        email: vec![EMAIL.into()],
        email_google: vec![gmail.clone()],
        phone_e164: vec![PHONE_E164.into()],
        phone_meta: vec![PHONE_META.into()],
    };
    let phone_only = Hashes {
        phone_e164: vec![PHONE_E164.into()],
        phone_meta: vec![PHONE_META.into()],
        ..Hashes::default()
    };
    let marketing = json!({"enforced": {"analytics": true, "marketing": true}});
    let no_ad_data = json!({"enforced": {"analytics": true, "marketing": true},
                            "googleConsentMode": {"ad_user_data": "denied"}});
    let analytics_only = json!({"enforced": {"analytics": true, "marketing": false}});
    let people = || {
        vec![
            (full.clone(), marketing.clone()),
            (phone_only.clone(), marketing.clone()),
            (full.clone(), analytics_only.clone()),
            (Hashes::default(), marketing.clone()),
            (full.clone(), no_ad_data.clone()),
        ]
    };
    let meta = export(Format::Meta, people());
    assert_eq!(
        meta.csv,
        format!("email,phone\n{EMAIL},{PHONE_META}\n,{PHONE_META}\n{EMAIL},{PHONE_META}\n")
    );
    assert_eq!((meta.rows, meta.no_consent, meta.no_keys), (3, 1, 1));
    let google = export(Format::Google, people());
    assert_eq!(
        google.csv,
        format!("Email,Phone\n{gmail},{PHONE_E164}\n,{PHONE_E164}\n")
    );
    assert_eq!((google.rows, google.no_consent, google.no_keys), (2, 2, 1));
    // Every line is the header or hex digests: nothing raw, nothing a sheet would run.
    for line in meta.csv.lines().skip(1).chain(google.csv.lines().skip(1)) {
        assert!(line
            .split(',')
            .all(|c| c.is_empty() || tracking_plan::identifiers::is_sha256_hex(c)));
    }
}

/// A revocation whose own event was refused (no analytics) is stored only in the
/// consent log; it still is the profile's consent now, so the audience export and the
/// segment changes' deliveries follow it.
#[test]
fn a_revocation_kept_only_in_the_consent_log_is_the_profiles_consent() {
    use edge_collector::audiences::{export, Format};
    let r = rig();
    let all = consent(true);
    send(
        &r,
        vec![
            identify("i1", "anon-rv-1", &all),
            order("o1", "anon-rv-1", 1, 10.0, &all),
        ],
    );
    let p = r.profile_of("o1").unwrap();
    let state = |r: &Rig| states_of(r, &p).remove(&p).unwrap();
    let before = state(&r);
    assert_eq!(
        export(Format::Meta, [(before.hashes(), before.consent.clone())]).rows,
        1
    );
    let revoke = json!({"type": "track", "messageId": "c1", "anonymousId": "anon-rv-1",
        "event": "Consent Updated", "timestamp": tracking_plan::time::format_rfc3339(NOW),
        "context": {"consent": {"categoryPreferences": {"analytics": false, "marketing": false, "personalization": false}}}});
    let rep = r
        .send(
            &json!({"writeKey": "shop", "batch": [revoke]}),
            EdgeInfo::default(),
        )
        .unwrap();
    assert_eq!(rep.refused, 1, "the event itself is not kept");
    let after = state(&r);
    assert_eq!(after.consent["enforced"]["marketing"], false);
    let e = export(Format::Meta, [(after.hashes(), after.consent.clone())]);
    assert_eq!((e.rows, e.no_consent), (0, 1));
}

/// Two devices of one person, each already a returning customer, merge: the merged
/// profile keeps the membership once, the absorbed one keeps none, and no second
/// "Segment Entered" is recorded.
#[test]
fn a_merge_carries_membership_over_without_a_second_entry() {
    let r = rig();
    let all = consent(true);
    send(&r, vec![order("o1", "anon-mg-1", 2, 10.0, &all)]);
    send(&r, vec![order("o2", "anon-mg-2", 1, 12.0, &all)]);
    let (p1, p2) = (r.profile_of("o1").unwrap(), r.profile_of("o2").unwrap());
    assert_ne!(p1, p2);
    assert_eq!(members(&r, &p1), ["returning-customer"]);
    assert_eq!(members(&r, &p2), ["returning-customer"]);
    let entered_before = r.store.changes.borrow().len();
    send(
        &r,
        vec![
            identify("i1", "anon-mg-1", &all),
            identify("i2", "anon-mg-2", &all),
        ],
    );
    let winner = r.profile_of("i2").unwrap();
    let loser = if winner == p1 { &p2 } else { &p1 };
    assert_eq!(members(&r, &winner), ["returning-customer"]);
    assert!(
        members(&r, loser).is_empty(),
        "{:?}",
        r.store.members.borrow()
    );
    let new: Vec<_> = r.store.changes.borrow()[entered_before..]
        .iter()
        .filter(|(_, c)| c.segment == "returning-customer")
        .cloned()
        .collect();
    assert!(new.is_empty(), "no second entry: {new:?}");
}

fn order_in(id: &str, anon: &str, minutes_ago: i64, category: &str, total: f64) -> Value {
    let at = tracking_plan::time::format_rfc3339(NOW - minutes_ago * 60_000);
    json!({"type": "track", "messageId": id, "anonymousId": anon, "event": "Order Completed",
           "timestamp": at, "context": {"consent": consent(true)},
           "properties": {"order_id": id, "total": total, "currency": "EUR", "note": "kept out",
                          "products": [{"product_id": "P", "category": category, "price": total}]}})
}

fn checkout(id: &str, anon: &str, minutes_ago: i64, total: f64) -> Value {
    let at = tracking_plan::time::format_rfc3339(NOW - minutes_ago * 60_000);
    json!({"type": "track", "messageId": id, "anonymousId": anon, "event": "Checkout Started",
           "timestamp": at, "context": {"consent": consent(true)}, "properties": {"total": total}})
}

/// What the segments say over the whole stored history of a profile, read back from
/// the store (the way membership was computed before the graph kept activity).
fn recomputed(r: &Rig, p: &str) -> Vec<String> {
    use edge_collector::segments::{members_of, Fact, Facts};
    let mut events: Vec<Fact> = r
        .store
        .events
        .borrow()
        .iter()
        .filter(|e| e.profile_id.as_deref() == Some(p) && e.kind == "track")
        .map(|e| {
            let v: Value = serde_json::from_str(&e.payload).unwrap();
            Fact {
                event: e.event.clone().unwrap_or_default(),
                at_ms: tracking_plan::time::parse_rfc3339(&e.timestamp).unwrap(),
                properties: v["properties"].clone(),
                ..Fact::default()
            }
        })
        .collect();
    events.sort_by_key(|e| e.at_ms);
    let src = r.sources.get("shop").unwrap();
    let facts = Facts {
        events,
        ..Facts::default()
    };
    let mut m: Vec<String> = members_of(src.segments(), &facts, NOW)
        .into_iter()
        .map(str::to_string)
        .collect();
    m.sort();
    m
}

proptest::proptest! {
    #![proptest_config(common::cases(48))]
    /// Membership kept incrementally in the identity graph's profile activity equals
    /// membership recomputed from the whole stored history, whatever the events, their
    /// order, their batching and their retries.
    #[test]
    fn incremental_membership_equals_a_full_recompute(
        history in proptest::collection::vec(
            (0u8..3, 0i64..(130 * 24 * 60), 0u8..3, 0u32..400), 1..40),
        cuts in proptest::collection::vec(1usize..6, 1..8),
        retry in proptest::prelude::any::<bool>(),
    ) {
        let r = rig();
        let events: Vec<Value> = history
            .iter()
            .enumerate()
            .map(|(i, (kind, minutes_ago, cat, total))| {
                let id = format!("m{i}");
                let cat = ["Light", "Dark", "Decaf"][*cat as usize];
                match kind {
                    0 | 1 => order_in(&id, "anon-prop", *minutes_ago, cat, *total as f64),
                    _ => checkout(&id, "anon-prop", *minutes_ago, *total as f64),
                }
            })
            .collect();
        let mut at = 0;
        let mut sizes = cuts.iter().cycle();
        while at < events.len() {
            let end = (at + sizes.next().unwrap()).min(events.len());
            send(&r, events[at..end].to_vec());
            if retry {
                send(&r, events[at..end].to_vec()); // duplicates: nothing counted twice
            }
            at = end;
        }
        let p = r.profile_of("m0").unwrap();
        proptest::prop_assert_eq!(members(&r, &p), recomputed(&r, &p));
        let kept = r.graph_profile("shop", &p).unwrap().activity;
        proptest::prop_assert_eq!(kept.facts.len(), history.len());
        proptest::prop_assert!(!serde_json::to_string(&kept).unwrap().contains("kept out"));
    }
}

/// A segment declared after the events it reads: the profile's activity was kept under
/// the old segments, so it is stale, rebuilt once from the stored events, and the new
/// segment counts the history.
#[test]
fn a_segment_declared_later_counts_the_history_through_one_rebuild() {
    let mut r = Rig::new(sources(json!([
        {"id": "returning-customer", "rule": {"count": {"event": "Order Completed"}}}
    ])));
    send(
        &r,
        vec![
            order_in("o1", "anon-late", 300, "Light", 20.0),
            order_in("o2", "anon-late", 200, "Light", 20.0),
            order_in("o3", "anon-late", 100, "Light", 20.0),
        ],
    );
    let p = r.profile_of("o1").unwrap();
    assert_eq!(members(&r, &p), ["returning-customer"]);
    let old = r.graph_profile("shop", &p).unwrap().activity;
    assert_eq!(
        old.facts[0].properties,
        Value::Null,
        "no path was read then"
    );
    r.sources = sources(example_segments());
    let spec = edge_collector::activity::Spec::of(r.sources.get("shop").unwrap());
    assert_ne!(old.spec, spec.fingerprint);
    send(&r, vec![checkout("c1", "anon-late", 1, 10.0)]);
    assert_eq!(members(&r, &p), ["category-fan", "returning-customer"]);
    let now = r.graph_profile("shop", &p).unwrap().activity;
    assert_eq!(now.spec, spec.fingerprint);
    assert_eq!(now.facts.len(), 4);
    assert_eq!(now.facts[0].properties["products"][0]["category"], "Light");
}

/// An unmerge gives each side the segments of its own events at once: the events the
/// absorbed device sent after the merge go back with it, in the store and in the
/// activity, and the surviving profile no longer counts them.
#[test]
fn an_unmerge_rescores_both_sides_from_their_own_events() {
    use edge_collector::pipeline::activate::{self, Input, Io};
    use edge_collector::store::ProfileEvents;
    let r = rig();
    let all = consent(true);
    send(
        &r,
        vec![
            order_in("l1", "anon-um-1", 300, "Light", 20.0),
            order_in("l2", "anon-um-1", 200, "Light", 20.0),
            order_in("l3", "anon-um-1", 100, "Light", 20.0),
        ],
    );
    send(&r, vec![order_in("d1", "anon-um-2", 90, "Dark", 20.0)]);
    let (p1, p2) = (r.profile_of("l1").unwrap(), r.profile_of("d1").unwrap());
    send(&r, vec![identify("i1", "anon-um-1", &all)]);
    send(&r, vec![identify("i2", "anon-um-2", &all)]);
    assert_eq!(
        r.profile_of("i2").unwrap(),
        p1,
        "the device joined by email merged"
    );
    send(
        &r,
        vec![
            order_in("d2", "anon-um-2", 50, "Dark", 20.0),
            order_in("d3", "anon-um-2", 40, "Dark", 20.0),
        ],
    );
    assert_eq!(
        r.graph_profile("shop", &p1).unwrap().activity.facts.len(),
        6
    );

    let u = {
        let mut graphs = r.identity.graphs.borrow_mut();
        let g = graphs.get_mut("shop").unwrap();
        edge_collector::identity::unmerge(g, &p1, None, NOW).unwrap()
    };
    assert_eq!(u.restored.id, p2);
    let subjects = edge_collector::erasure::Subjects::from(&edge_collector::identity::Erased {
        profile_ids: vec![],
        identifiers: u.moved.clone(),
    });
    let moved = pollster::block_on(r.store.move_events("shop", &p1, &p2, &subjects)).unwrap();
    assert_eq!(moved, 4, "d1, d2, d3 and device 2's identify call");
    let io = Io {
        store: &r.store,
        identity: &r.identity,
    };
    let src = r.sources.get("shop").unwrap();
    let input = Input {
        profiles: vec![p1.clone(), p2.clone()],
        ..Input::default()
    };
    pollster::block_on(activate::run(&io, "shop", src, input, NOW)).unwrap();
    assert_eq!(members(&r, &p2), ["category-fan", "returning-customer"]);
    assert_eq!(members(&r, &p1), ["category-fan", "returning-customer"]);
    assert_eq!(members(&r, &p1), recomputed(&r, &p1));
    assert_eq!(members(&r, &p2), recomputed(&r, &p2));
    let facts = |p: &str| r.graph_profile("shop", p).unwrap().activity.facts.len();
    assert_eq!((facts(&p1), facts(&p2)), (3, 3));
}

/// A rescoring after the segments change rebuilds every stale profile, more than one
/// read's group of them, each from its newest stored events up to what it keeps.
#[test]
fn a_rebuild_covers_many_profiles_and_keeps_each_ones_newest_facts() {
    use edge_collector::activity::{Spec, MAX_FACTS};
    use edge_collector::pipeline::activate::{self, Input, Io};
    let mut r = Rig::new(sources(json!([
        {"id": "returning-customer", "rule": {"count": {"event": "Order Completed"}}}
    ])));
    for p in 0..60 {
        send(
            &r,
            vec![order_in(
                &format!("one-{p}"),
                &format!("anon-many-{p}"),
                100,
                "Light",
                5.0,
            )],
        );
    }
    let heavy: Vec<Value> = (0..MAX_FACTS + 44)
        .map(|i| {
            order_in(
                &format!("h-{i}"),
                "anon-heavy",
                1000 - i as i64,
                "Dark",
                1.0,
            )
        })
        .collect();
    for chunk in heavy.chunks(100) {
        send(&r, chunk.to_vec());
    }
    let mut profiles: Vec<String> = (0..60)
        .map(|p| r.profile_of(&format!("one-{p}")).unwrap())
        .collect();
    let big = r.profile_of("h-0").unwrap();
    profiles.push(big.clone());

    r.sources = sources(example_segments());
    let src = r.sources.get("shop").unwrap();
    let spec = Spec::of(src);
    let io = Io {
        store: &r.store,
        identity: &r.identity,
    };
    let input = Input {
        profiles: profiles.clone(),
        ..Input::default()
    };
    pollster::block_on(activate::run(&io, "shop", src, input, NOW)).unwrap();
    for p in &profiles {
        let a = r.graph_profile("shop", p).unwrap().activity;
        assert_eq!(a.spec, spec.fingerprint, "{p} rebuilt");
        assert_eq!(members(&r, p), recomputed(&r, p), "{p}");
    }
    let facts = r.graph_profile("shop", &big).unwrap().activity.facts;
    assert_eq!(facts.len(), MAX_FACTS);
    let last = format!("h-{}", MAX_FACTS + 43);
    let newest =
        edge_collector::activity::fact_key(&last, "Order Completed", &json!({"order_id": last}));
    assert_eq!(facts.last().unwrap().id, newest, "the newest kept");
    assert_eq!(facts[0].properties["products"][0]["category"], "Dark");
}
