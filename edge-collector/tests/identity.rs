//! The identity graph's stitching rules and guardrails, on the in-memory graph.

use edge_collector::identity::{
    erase, erasure_plan, observe, observe_all, unmerge, usable, Graph, IdKind, Ident, Limits,
    MemoryGraph, Observation, MAX_CONFLICTS, MAX_TRAITS, MAX_TRAITS_BYTES,
};
use proptest::prelude::*;
use serde_json::json;
use tracking_plan::identifiers::{normalize_email, sha256_hex, EmailVariant};

fn anon(v: &str) -> Ident {
    Ident::new(IdKind::Anonymous, v)
}
fn user(v: &str) -> Ident {
    Ident::new(IdKind::UserId, v)
}
fn email(raw: &str) -> Ident {
    let normalized = normalize_email(raw, EmailVariant::Standard).unwrap();
    Ident::new(IdKind::Email, sha256_hex(&normalized))
}

fn see(g: &mut MemoryGraph, ids: Vec<Ident>, at: i64) -> String {
    let obs = Observation {
        identifiers: ids,
        at_ms: at,
        ..Observation::default()
    };
    observe(g, &obs, &Limits::default()).unwrap().profile_id
}

#[test]
fn a_multi_device_journey_joins_one_profile() {
    let mut g = MemoryGraph::default();
    // Laptop: browses, then soft-logs in with an email.
    let laptop = see(&mut g, vec![anon("laptop")], 1);
    assert_eq!(
        see(&mut g, vec![anon("laptop"), email("ann@example.com")], 2),
        laptop
    );
    // Phone: browses anonymously (a second profile for now) ...
    let phone = see(&mut g, vec![anon("phone-7")], 3);
    assert_ne!(phone, laptop);
    // ... then soft-logs in with the same email: the phone's profile joins the laptop's.
    assert_eq!(
        see(&mut g, vec![anon("phone-7"), email(" Ann@Example.com ")], 4),
        laptop
    );
    assert_eq!(see(&mut g, vec![anon("phone-7")], 5), laptop);
    let p = g.profile(&laptop).unwrap();
    assert_eq!(p.event_count, 5);
    assert!(p.identified());
    assert!(g.profile(&phone).is_none(), "absorbed");
    assert_eq!(g.merges_into(&laptop).len(), 1);
}

#[test]
fn a_shared_device_used_by_two_logged_in_people_does_not_merge() {
    let mut g = MemoryGraph::default();
    let ann = see(&mut g, vec![anon("kiosk"), user("u-ann")], 1);
    // Bob logs in on the same browser: his userId cannot join Ann's profile.
    let bob = see(&mut g, vec![anon("kiosk"), user("u-bob")], 2);
    assert_ne!(ann, bob);
    assert_eq!(
        g.profile(&ann).unwrap().identifiers,
        vec![user("u-ann"), anon("kiosk")]
    );
    assert_eq!(g.profile(&bob).unwrap().identifiers, vec![user("u-bob")]);
    // Later events of each person stay with their own profile.
    assert_eq!(see(&mut g, vec![user("u-bob"), anon("kiosk")], 3), bob);
    assert_eq!(see(&mut g, vec![user("u-ann")], 4), ann);
    // Bob on his own phone, then logged in there: still not merged with Ann.
    let bob_phone = see(&mut g, vec![anon("bob-phone"), user("u-bob")], 5);
    assert_eq!(bob_phone, bob);
    // An event that points at both (Ann's userId on Bob's phone) is recorded for review.
    let r = see(&mut g, vec![user("u-ann"), anon("bob-phone")], 6);
    assert_eq!(r, ann);
    let conflicts = g.conflicts(&ann);
    assert!(
        conflicts.iter().any(|c| c.kind == "different_user_ids"),
        "{conflicts:?}"
    );
    assert!(g.profile(&bob).is_some());
}

#[test]
fn blocked_values_are_ignored() {
    let mut g = MemoryGraph::default();
    let a = see(&mut g, vec![anon("device-a"), user("null")], 1);
    let b = see(&mut g, vec![anon("device-b"), user("null")], 2);
    assert_ne!(a, b, "the userId \"null\" must not join two visitors");
    let c = see(&mut g, vec![anon("device-c"), email("test@test.com")], 3);
    let d = see(&mut g, vec![anon("device-d"), email("test@test.com")], 4);
    assert_ne!(c, d);
    assert_eq!(usable(&[user("undefined"), anon("0"), anon("")]), vec![]);
    let none = Observation {
        identifiers: vec![user("anonymous")],
        ..Observation::default()
    };
    assert!(observe(&mut g, &none, &Limits::default()).is_none());
}

#[test]
fn limits_keep_an_identifier_out_instead_of_growing_a_profile() {
    let mut g = MemoryGraph::default();
    let limits = Limits {
        email: 2,
        ..Limits::default()
    };
    let obs = |ids, at| Observation {
        identifiers: ids,
        at_ms: at,
        ..Observation::default()
    };
    let p = observe(&mut g, &obs(vec![anon("x"), email("a@x.io")], 1), &limits).unwrap();
    observe(&mut g, &obs(vec![anon("x"), email("b@x.io")], 2), &limits).unwrap();
    // A third email cannot join through the device: it gets a profile of its own.
    let third = observe(&mut g, &obs(vec![anon("x"), email("c@x.io")], 3), &limits).unwrap();
    assert_ne!(third.profile_id, p.profile_id);
    assert_eq!(g.profile(&p.profile_id).unwrap().identifiers.len(), 3);
}

#[test]
fn unmerge_restores_both_profiles() {
    let mut g = MemoryGraph::default();
    let laptop = see(&mut g, vec![anon("laptop"), email("ann@example.com")], 1);
    let phone = see(&mut g, vec![anon("phone-7")], 2);
    let identify = Observation {
        identifiers: vec![anon("phone-7")],
        traits: Some(json!({"plan": "pro"}).as_object().unwrap().clone()),
        at_ms: 3,
        ..Observation::default()
    };
    observe(&mut g, &identify, &Limits::default());
    // A wrong soft login on the phone merges the two.
    assert_eq!(
        see(&mut g, vec![anon("phone-7"), email("ann@example.com")], 4),
        laptop
    );
    let merged = g.profile(&laptop).unwrap();
    assert_eq!(merged.traits["plan"], "pro");
    assert_eq!(merged.event_count, 4);

    let u = unmerge(&mut g, &laptop, None, 5).unwrap();
    assert_eq!(u.restored.id, phone);
    assert_eq!(u.moved, vec![anon("phone-7")]);
    let back = g.profile(&laptop).unwrap();
    assert_eq!(
        back.identifiers,
        vec![email("ann@example.com"), anon("laptop")]
    );
    assert!(
        !back.traits.contains_key("plan"),
        "traits leave with the merge"
    );
    assert_eq!(back.event_count, 2);
    assert_eq!(g.profile(&phone).unwrap().traits["plan"], "pro");
    assert_eq!(
        g.profile_of(&anon("phone-7")).as_deref(),
        Some(phone.as_str())
    );
    assert_eq!(g.merges_into(&laptop)[0].undone_at_ms, Some(5));
    assert!(
        unmerge(&mut g, &laptop, None, 6).is_err(),
        "nothing left to undo"
    );
}

#[test]
fn erase_removes_the_profile_and_everything_merged_into_it() {
    let mut g = MemoryGraph::default();
    let p = see(&mut g, vec![anon("a"), user("u1")], 1);
    let other = see(&mut g, vec![anon("b")], 2);
    see(&mut g, vec![anon("b"), user("u1")], 3);
    let e = erasure_plan(&g, &p).unwrap();
    assert_eq!(e.profile_ids, vec![p.clone(), other]);
    assert!(e.identifiers.contains(&anon("a")) && e.identifiers.contains(&anon("b")));
    erase(&mut g, &e);
    assert!(g.profiles.is_empty() && g.index.is_empty() && g.merges.is_empty());
    assert!(
        g.resolutions.is_empty(),
        "no cached resolution names the profile"
    );
    // Erasing again changes nothing, and the plan is gone with the profile.
    erase(&mut g, &e);
    assert!(erasure_plan(&g, &p).is_none());
    // The same visitor coming back starts a new, unrelated profile.
    assert_ne!(see(&mut g, vec![anon("a")], 4), p);
}

#[test]
fn erasure_after_an_unmerge_leaves_the_unmerged_profile_whole() {
    let mut g = MemoryGraph::default();
    let a = see(&mut g, vec![anon("a"), user("u1")], 1);
    let b = see(&mut g, vec![anon("b")], 2);
    assert_eq!(
        see(&mut g, vec![anon("b"), user("u1")], 3),
        a,
        "b merges into a"
    );
    unmerge(&mut g, &a, None, 4).unwrap();
    let plan = erasure_plan(&g, &a).unwrap();
    assert_eq!(plan.profile_ids, vec![a.clone()], "b is not a's any more");
    assert!(!plan.identifiers.contains(&anon("b")));
    erase(&mut g, &plan);
    assert!(g.profile(&a).is_none());
    let kept = g.profile(&b).expect("b survives");
    assert!(kept.identifiers.contains(&anon("b")));
    assert_eq!(g.profile_of(&anon("b")).as_deref(), Some(b.as_str()));
    assert!(g.merges.iter().all(|m| m.into != a && m.absorbed.id != a));
}

/// A source whose shard count changed has two graphs: the person's plan in the current
/// one absorbs what the old one links to its identifiers, and erasing it from both
/// leaves nothing of the person in either, and the other visitors whole.
#[test]
fn an_erasure_covers_the_graph_of_an_earlier_layout() {
    let mut old = MemoryGraph::default();
    let mut new = MemoryGraph::default();
    // Before the change: the person on two devices, joined by her email; a neighbour.
    let old_p = see(
        &mut old,
        vec![anon("laptop-3"), email("ann@example.com")],
        1,
    );
    let phone = see(&mut old, vec![anon("phone-7")], 2);
    let joined = see(&mut old, vec![anon("phone-7"), email("ann@example.com")], 3);
    assert_eq!(joined, old_p);
    let neighbour = see(&mut old, vec![anon("bobs-laptop"), user("u-bob")], 4);
    // After: the laptop again, with the email, in the new graph only.
    let new_p = see(
        &mut new,
        vec![anon("laptop-3"), email("ann@example.com")],
        5,
    );

    let mut plan = erasure_plan(&new, &new_p).unwrap();
    assert!(
        !plan.identifiers.contains(&anon("phone-7")),
        "the new graph never saw it"
    );
    for id in plan.identifiers.clone() {
        if let Some(p) = old.profile_of(&id) {
            plan.absorb(erasure_plan(&old, &p).unwrap());
        }
    }
    assert_eq!(
        plan.profile_ids,
        vec![new_p.clone(), old_p.clone(), phone.clone()]
    );
    assert!(
        plan.identifiers.contains(&anon("phone-7")),
        "found through the old graph"
    );
    assert_eq!(
        plan.identifiers.len(),
        3,
        "each once: {:?}",
        plan.identifiers
    );
    // Absorbing again changes nothing.
    let again = plan.clone();
    plan.absorb(again.clone());
    assert_eq!(plan, again);

    erase(&mut new, &plan);
    erase(&mut old, &plan);
    for g in [&old, &new] {
        for id in [anon("laptop-3"), anon("phone-7"), email("ann@example.com")] {
            assert_eq!(g.profile_of(&id), None);
        }
        assert!([&old_p, &new_p, &phone]
            .iter()
            .all(|p| g.profile(p).is_none()));
        assert!(g.merges.is_empty());
    }
    assert_eq!(
        old.profile_of(&user("u-bob")).as_deref(),
        Some(neighbour.as_str())
    );
    assert!(old.profile(&neighbour).is_some());
}

#[test]
fn an_unmerge_is_not_undone_by_the_next_event() {
    let mut g = MemoryGraph::default();
    let a = see(&mut g, vec![anon("shared"), user("u1")], 1);
    let b = see(&mut g, vec![anon("b")], 2);
    let winner = see(&mut g, vec![anon("b"), anon("shared")], 3);
    assert!(winner == a || winner == b);
    unmerge(&mut g, &winner, None, 4).unwrap();
    // The same pair of identifiers again: the split holds, a conflict is recorded.
    see(&mut g, vec![anon("b"), anon("shared")], 5);
    assert_eq!(g.profile_of(&anon("shared")).as_deref(), Some(a.as_str()));
    assert_eq!(g.profile_of(&anon("b")).as_deref(), Some(b.as_str()));
    assert!(g.conflicts.iter().any(|c| c.kind == "previously_unmerged"));
}

#[test]
fn a_retired_cookie_links_nothing_and_a_retried_event_resolves_once() {
    let mut g = MemoryGraph::default();
    let limits = Limits::default();
    let first = Observation {
        key: "k1".into(),
        identifiers: vec![anon("old"), user("u1")],
        at_ms: 1,
        ..Observation::default()
    };
    let a = observe(&mut g, &first, &limits).unwrap();
    assert_eq!(
        observe(&mut g, &first, &limits).unwrap(),
        a,
        "a retry gets the same answer"
    );
    assert_eq!(
        g.profile(&a.profile_id).unwrap().event_count,
        1,
        "and counts once"
    );
    let with_cookie = |key: &str, id: &str| Observation {
        key: key.into(),
        identifiers: vec![anon(id)],
        cookie: Some(anon("old")),
        at_ms: 2,
        ..Observation::default()
    };
    assert_eq!(
        observe(&mut g, &with_cookie("k2", "new-1"), &limits)
            .unwrap()
            .profile_id,
        a.profile_id
    );
    g.retire(&anon("old"), 3);
    let after = observe(&mut g, &with_cookie("k3", "new-2"), &limits).unwrap();
    assert_ne!(
        after.profile_id, a.profile_id,
        "a logged-out visitor's cookie links nothing"
    );
}

#[test]
fn profile_ids_are_random() {
    let mut g1 = MemoryGraph::default();
    let mut g2 = MemoryGraph::default();
    assert_ne!(
        see(&mut g1, vec![anon("same")], 1),
        see(&mut g2, vec![anon("same")], 1)
    );
}

#[test]
fn alias_style_observation_links_old_and_new_ids() {
    let mut g = MemoryGraph::default();
    let p = see(&mut g, vec![anon("old-anon")], 1);
    assert_eq!(see(&mut g, vec![user("u9"), anon("old-anon")], 2), p);
    assert_eq!(see(&mut g, vec![user("u9")], 3), p);
    assert_eq!(sha256_hex("x").len(), 64);
}

proptest! {
    /// Whatever arrives, in any order: every identifier maps to at most one live
    /// profile that lists it, no profile holds two userIds, and limits hold.
    #[test]
    fn graph_invariants(events in proptest::collection::vec(
        proptest::collection::vec((0u8..4, 0u8..6), 1..4), 1..40)) {
        let mut g = MemoryGraph::default();
        let limits = Limits::default();
        for (t, ids) in events.iter().enumerate() {
            let identifiers = ids.iter().map(|(k, v)| {
                let kind = [IdKind::UserId, IdKind::Email, IdKind::Phone, IdKind::Anonymous][*k as usize];
                Ident::new(kind, format!("v{v}-{k}"))
            }).collect();
            let obs = Observation { identifiers, at_ms: t as i64, ..Observation::default() };
            let r = observe(&mut g, &obs, &limits).unwrap();
            prop_assert!(g.profile(&r.profile_id).is_some());
        }
        for (id, pid) in &g.index {
            let p = g.profiles.get(pid);
            prop_assert!(p.is_some(), "index points at a missing profile");
            prop_assert!(p.unwrap().identifiers.contains(id));
        }
        for p in g.profiles.values() {
            for kind in [IdKind::UserId, IdKind::Email, IdKind::Phone, IdKind::Anonymous] {
                let n = p.identifiers.iter().filter(|i| i.kind == kind).count();
                prop_assert!(n <= limits.of(kind), "{kind:?} over its limit: {p:?}");
            }
            for id in &p.identifiers {
                prop_assert_eq!(g.index.get(id), Some(&p.id));
            }
        }
    }

    /// A request's events resolved together (`observe_all`, which reads what they need
    /// in batch reads up front and writes each profile once per call) leave the graph as
    /// resolving them one by one does: the same people, with the same identifiers,
    /// event counts, traits, merges and conflicts, and each event with the same person.
    /// Events carry cookie ids, some of them retired, and some are retries of an earlier
    /// event (same key), in the same call or a later one. Profile ids are random, so
    /// profiles are compared by their identifiers.
    #[test]
    fn resolving_a_request_at_once_is_resolving_its_events_in_turn(
        events in proptest::collection::vec(
            (proptest::collection::vec((0u8..4, 0u8..5), 1..4), 0u8..3, 0u8..6, 0u8..8), 1..40),
        cuts in proptest::collection::vec(1usize..8, 1..12),
    ) {
        let limits = Limits { anonymous_id: 3, email: 2, ..Limits::default() };
        let all: Vec<Observation> = events.iter().enumerate().map(|(t, (ids, tr, cookie, retry))| Observation {
            // One event in eight repeats the key of an earlier one: a retry.
            key: if *retry == 0 && t > 2 { format!("k{}", t / 2) } else { format!("k{t}") },
            identifiers: ids.iter().map(|(k, v)| {
                let kind = IdKind::ALL[*k as usize];
                Ident::new(kind, format!("v{v}-{k}"))
            }).collect(),
            cookie: (*cookie < 4).then(|| Ident::new(IdKind::Anonymous, format!("c{cookie}"))),
            traits: (*tr > 0).then(|| json!({"t": tr, format!("k{t}"): t}).as_object().cloned()).flatten(),
            at_ms: t as i64,
            ..Observation::default()
        }).collect();
        let mut one = MemoryGraph::default();
        let mut many = MemoryGraph { batch_reads: true, ..MemoryGraph::default() };
        // Resolved together with writes through (links and resolutions as they happen,
        // profiles taken out of memory and written at the end): how memory storage runs.
        let mut through = MemoryGraph::default();
        for g in [&mut one, &mut many, &mut through] {
            g.retire(&Ident::new(IdKind::Anonymous, "c1"), 0);
        }
        let singly: Vec<_> = all.iter().map(|o| observe(&mut one, o, &limits)).collect();
        let mut batched = Vec::new();
        let mut passed = Vec::new();
        let (mut at, mut cut) = (0, cuts.iter().cycle());
        while at < all.len() {
            let end = (at + cut.next().unwrap()).min(all.len());
            batched.extend(observe_all(&mut many, &all[at..end], &limits));
            passed.extend(observe_all(&mut through, &all[at..end], &limits));
            at = end;
        }
        // Each event resolved to the same person (named by its sorted identifiers).
        let person = |g: &MemoryGraph, r: &Option<edge_collector::identity::Resolution>| {
            r.as_ref().map(|r| (g.profiles.get(&r.profile_id).map(|p| p.identifiers.clone()), r.absorbed.len()))
        };
        for ((a, b), c) in singly.iter().zip(&batched).zip(&passed) {
            prop_assert_eq!(person(&one, a), person(&many, b));
            prop_assert_eq!(person(&one, a), person(&through, c));
        }
        let people = |g: &MemoryGraph| {
            let mut v: Vec<_> = g.profiles.values().map(|p| {
                (p.identifiers.clone(), p.event_count, p.traits.clone(), p.first_seen_ms, p.last_seen_ms)
            }).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        for other in [&many, &through] {
            prop_assert_eq!(people(&one), people(other));
            prop_assert_eq!(one.merges.len(), other.merges.len());
            prop_assert_eq!(one.conflicts.len(), other.conflicts.len());
            prop_assert_eq!(one.index.len(), other.index.len());
            prop_assert_eq!(one.resolutions.len(), other.resolutions.len());
        }
    }
}

fn identify(g: &mut MemoryGraph, ids: Vec<Ident>, traits: serde_json::Value, at: i64) -> String {
    let obs = Observation {
        identifiers: ids,
        traits: traits.as_object().cloned(),
        at_ms: at,
        ..Observation::default()
    };
    observe(g, &obs, &Limits::default()).unwrap().profile_id
}

#[test]
fn traits_are_capped_in_keys_and_bytes_and_known_keys_still_change() {
    let mut g = MemoryGraph::default();
    let many: serde_json::Map<String, serde_json::Value> = (0..MAX_TRAITS + 50)
        .map(|i| (format!("k{i:04}"), json!(i)))
        .collect();
    let p = identify(&mut g, vec![anon("t1")], serde_json::Value::Object(many), 1);
    assert_eq!(g.profile(&p).unwrap().traits.len(), MAX_TRAITS);
    // A known key still updates; a new key past the count does not get in.
    identify(
        &mut g,
        vec![anon("t1")],
        json!({"k0000": "changed", "brand_new": 1}),
        2,
    );
    let traits = g.profile(&p).unwrap().traits;
    assert_eq!(traits["k0000"], "changed");
    assert!(!traits.contains_key("brand_new"));
    // Bytes: one huge value is left out whole; the profile stays under the cap.
    let q = identify(
        &mut g,
        vec![anon("t2")],
        json!({"plan": "pro", "blob": "x".repeat(MAX_TRAITS_BYTES)}),
        3,
    );
    let t = g.profile(&q).unwrap().traits;
    assert_eq!(t["plan"], "pro");
    assert!(!t.contains_key("blob"));
    assert!(serde_json::to_string(&t).unwrap().len() <= MAX_TRAITS_BYTES);
    // A merge fills in only what fits.
    let r = identify(
        &mut g,
        vec![anon("t3"), email("t3@example.com")],
        json!({"city": "Oslo"}),
        4,
    );
    identify(
        &mut g,
        vec![anon("t1"), email("t3@example.com")],
        json!({}),
        5,
    );
    let merged = g.profile(&p).or_else(|| g.profile(&r)).unwrap();
    assert!(merged.traits.len() <= MAX_TRAITS);
}

#[test]
fn a_repeated_conflict_is_recorded_once_and_conflicts_are_capped() {
    let mut g = MemoryGraph::default();
    let ann = see(&mut g, vec![anon("kiosk-2"), user("u-ann-2")], 1);
    for t in 0..20 {
        see(&mut g, vec![anon("kiosk-2"), user("u-bob-2")], 10 + t);
    }
    let refused = g.conflicts(&ann);
    let bob_again = refused
        .iter()
        .filter(|c| c.kind == "different_user_ids")
        .count();
    assert_eq!(bob_again, 1, "{refused:?}");
    // Past the cap, nothing more is recorded for that profile.
    let mut g = MemoryGraph::default();
    let limits = Limits {
        anonymous_id: 1,
        ..Limits::default()
    };
    let full = observe(
        &mut g,
        &Observation {
            identifiers: vec![user("u-cap"), anon("a-0")],
            at_ms: 1,
            ..Observation::default()
        },
        &limits,
    )
    .unwrap()
    .profile_id;
    for i in 1..(MAX_CONFLICTS as i64 + 40) {
        let obs = Observation {
            identifiers: vec![user("u-cap"), anon(&format!("a-{i}"))],
            at_ms: i,
            ..Observation::default()
        };
        observe(&mut g, &obs, &limits);
    }
    let n = g.conflicts(&full).len();
    assert_eq!(
        n, MAX_CONFLICTS,
        "one per refused identifier, up to the cap"
    );
}
