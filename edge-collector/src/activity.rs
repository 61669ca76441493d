//! Profile activity: decides what of a stored event a profile keeps for its segments,
//! so membership is computed from the identity graph's profile document as events
//! arrive, without reading the profile's events back.
//!
//! A source's [`Spec`] names the events its segments (and, for RFM, its conversions)
//! read and, per event, the property paths they read. An event of such a name is kept
//! on its profile as a [`Fact`] holding only those paths, at most [`MAX_FACTS`] per
//! profile and only as long as the longest window needs (the hot window for a rule
//! without one). A merge joins two profiles' facts; an unmerge gives the restored one
//! its facts back.
//!
//! The spec's fingerprint is kept with the facts. When the segments change (a new
//! event or path), a profile's facts no longer say everything its segments read: it is
//! stale, and its facts are rebuilt once from the stored events ([`Activity::rebuild`]), joined
//! with what it holds so an event that arrived meanwhile is not lost.

use crate::segments::{Fact, Rule, Segment};
use crate::sources::Source;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Facts a profile keeps at most (the newest win). A count rule over more events in
/// its window reads this many.
pub const MAX_FACTS: usize = 256;
/// Serialized bytes of one fact's properties at most; past it they are left out (and
/// rules on them do not match).
pub const MAX_FACT_BYTES: usize = 2048;

/// How fact ids are made ([`fact_key`]): part of a spec's fingerprint.
const FACT_IDS: &str = "order-or-message";

/// What a source's segments read of its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Spec {
    /// Event name → the property paths read (none: the event counts, nothing else).
    pub events: BTreeMap<String, Vec<String>>,
    /// How far back facts are kept, in ms.
    pub keep_ms: i64,
    /// A digest of the above: facts recorded under another spec may miss something.
    pub fingerprint: String,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

impl Spec {
    /// The spec of a source (empty when it has no segments).
    pub fn of(source: &Source) -> Spec {
        Self::build(
            source.segments(),
            &source.attribution.conversions,
            source.retention_days,
        )
    }

    pub fn build(
        segments: &[Segment],
        conversions: &[crate::attribution::ConversionRule],
        retention_days: u32,
    ) -> Spec {
        let mut spec = Spec::default();
        let hot = retention_days as i64 * DAY_MS;
        for s in segments {
            walk(&s.rule, &mut spec, hot);
        }
        if crate::segments::reads_rfm(segments) {
            for c in conversions {
                let paths = spec.events.entry(c.event.clone()).or_default();
                paths.extend(c.revenue.clone());
            }
            spec.keep_ms = hot;
        }
        for paths in spec.events.values_mut() {
            paths.sort_unstable();
            paths.dedup();
        }
        if !spec.events.is_empty() {
            let text = serde_json::to_string(&(&spec.events, spec.keep_ms)).unwrap_or_default();
            // `FACT_IDS` in it: facts kept under other ids (by message before orders were
            // one fact each) are rebuilt once, so an order kept twice then counts once.
            spec.fingerprint = crate::pipeline::short_digest(&[&text, FACT_IDS]);
        }
        spec
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The fact a stored event leaves on its profile, if a segment reads its name.
    pub fn fact(
        &self,
        message_id: &str,
        event: &str,
        at_ms: i64,
        properties: &Value,
    ) -> Option<Fact> {
        let paths = self.events.get(event)?;
        Some(Fact {
            id: fact_key(message_id, event, properties),
            event: event.to_string(),
            at_ms,
            properties: project(properties, paths),
        })
    }
}

/// The properties cut to the paths (none: nothing is kept), or nothing past the size cap.
fn project(properties: &Value, paths: &[String]) -> Value {
    if paths.is_empty() {
        return Value::Null;
    }
    let split: Vec<Vec<&str>> = paths
        .iter()
        .map(|p| p.split('.').filter(|s| !s.is_empty()).collect())
        .collect();
    let kept = prune(properties, &split);
    match serde_json::to_string(&kept) {
        Ok(t) if t.len() <= MAX_FACT_BYTES => kept,
        _ => Value::Null,
    }
}

fn walk(r: &Rule, spec: &mut Spec, hot: i64) {
    match r {
        Rule::All(rs) | Rule::Any(rs) => rs.iter().for_each(|r| walk(r, spec, hot)),
        Rule::Not(r) => walk(r, spec, hot),
        Rule::Count(a) | Rule::Sum(a) => {
            let window =
                a.days.map_or(0, |d| d as i64 * DAY_MS) + a.hours.map_or(0, |h| h as i64 * HOUR_MS);
            spec.keep_ms = spec.keep_ms.max(if window > 0 { window } else { hot });
            let paths = spec.events.entry(a.event.clone()).or_default();
            paths.extend(a.filter.iter().map(|c| c.path.clone()));
            paths.extend(a.of.clone());
            paths.extend(a.group_by.clone());
            if let Some(next) = &a.not_followed_by {
                spec.events.entry(next.clone()).or_default();
            }
        }
        Rule::Trait(_) | Rule::Rfm(_) => {}
    }
}

/// A fact's id: a digest of the event's messageId (the same from the request and from
/// the stored row, and no client text kept).
pub fn fact_id(message_id: &str) -> String {
    crate::pipeline::short_digest(&[message_id])
}

/// A fact's id: its message's ([`fact_id`]), or for an event that names an order, the
/// order's. One order is one fact however often it was sent (a thank-you page reloaded
/// is not a second order for "3+ orders" or RFM's frequency and value), as attribution
/// credits it once.
pub fn fact_key(message_id: &str, event: &str, properties: &Value) -> String {
    match crate::attribution::order_id(Some(properties)) {
        Some(o) => crate::pipeline::short_digest(&["order", event, &o]),
        None => fact_id(message_id),
    }
}

/// The part of `v` that the paths reach (`a.b`, `items[].category`), with the same
/// shape, so the segment rules read it as they would the whole.
fn prune(v: &Value, paths: &[Vec<&str>]) -> Value {
    if paths.iter().any(|p| p.is_empty()) {
        return v.clone();
    }
    let Value::Object(obj) = v else {
        return Value::Null;
    };
    let mut by_key: BTreeMap<(&str, bool), Vec<Vec<&str>>> = BTreeMap::new();
    for p in paths {
        let (key, each) = match p[0].strip_suffix("[]") {
            Some(k) => (k, true),
            None => (p[0], false),
        };
        by_key.entry((key, each)).or_default().push(p[1..].to_vec());
    }
    let mut out = Map::new();
    for ((key, each), rest) in by_key {
        let Some(child) = obj.get(key) else { continue };
        let kept = match (each, child) {
            (true, Value::Array(items)) => {
                Value::Array(items.iter().map(|x| prune(x, &rest)).collect())
            }
            (true, _) => continue,
            (false, c) => prune(c, &rest),
        };
        // Two paths through one key (`a[].b` and `a[].c`) join element by element.
        match out.get_mut(key) {
            Some(existing) => join(existing, kept),
            None => {
                out.insert(key.to_string(), kept);
            }
        }
    }
    Value::Object(out)
}

fn join(into: &mut Value, other: Value) {
    match (into, other) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(x) => join(x, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter_mut().zip(b) {
                join(x, y);
            }
        }
        (slot @ Value::Null, v) => *slot = v,
        _ => {}
    }
}

/// A profile's kept facts, oldest first, and the spec they were recorded under.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Activity {
    #[serde(default, rename = "s", skip_serializing_if = "String::is_empty")]
    pub spec: String,
    #[serde(default, rename = "f", skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<Fact>,
    /// The latest stored event's `context.consent` (with the collector's `enforced`
    /// decision), and when it was given.
    #[serde(default, rename = "c", skip_serializing_if = "Value::is_null")]
    pub consent: Value,
    #[serde(default, rename = "ct", skip_serializing_if = "is_zero")]
    pub consent_at_ms: i64,
}

fn is_zero(x: &i64) -> bool {
    *x == 0
}

impl Activity {
    pub fn is_empty(&self) -> bool {
        self.spec.is_empty() && self.facts.is_empty() && self.consent.is_null()
    }

    /// Whether the facts say everything this spec reads.
    pub fn current(&self, spec: &Spec) -> bool {
        spec.is_empty() || self.spec == spec.fingerprint
    }

    /// Keeps a fact (once per id), in time order, within the window and the cap.
    pub fn record(&mut self, fact: Fact, keep_since_ms: i64) {
        if self.facts.iter().any(|f| f.id == fact.id) {
            return;
        }
        let at = self.facts.partition_point(|f| f.at_ms <= fact.at_ms);
        self.facts.insert(at, fact);
        self.trim(keep_since_ms);
    }

    fn trim(&mut self, keep_since_ms: i64) {
        self.facts.retain(|f| f.at_ms >= keep_since_ms);
        if self.facts.len() > MAX_FACTS {
            let extra = self.facts.len() - MAX_FACTS;
            self.facts.drain(..extra);
        }
    }

    /// Notes the consent of a stored event, if it is the latest.
    pub fn note_consent(&mut self, consent: &Value, at_ms: i64) {
        if !consent.is_null() && at_ms >= self.consent_at_ms {
            self.consent = consent.clone();
            self.consent_at_ms = at_ms;
        }
    }

    /// Joins another profile's activity into this one (a merge). Facts recorded under
    /// two different specs are stale together (an absorbed profile from before the
    /// segments, with no facts kept at all, too: its stored events count).
    pub fn absorb(&mut self, other: &Activity) {
        if self.spec != other.spec {
            self.spec.clear();
        }
        for f in &other.facts {
            self.record(f.clone(), i64::MIN);
        }
        self.note_consent(&other.consent, other.consent_at_ms);
    }

    /// Takes out the facts a restored profile takes back (an unmerge). Both sides are
    /// then stale: events after the merge follow their visitor in the store, and the
    /// rebuild reads them there.
    pub fn release(&mut self, restored: &mut Activity) {
        self.facts
            .retain(|f| !restored.facts.iter().any(|r| r.id == f.id));
        self.spec.clear();
        restored.spec.clear();
    }

    /// Joins the facts rebuilt from the stored events to what is held (an event recorded
    /// meanwhile stays; one rebuilt replaces the one held), under the current spec. A held fact whose event the store now
    /// has on another profile rebuilt in the same call (`elsewhere`: an unmerge moved it)
    /// goes.
    pub fn rebuild(
        &mut self,
        rebuilt: Vec<Fact>,
        elsewhere: &std::collections::HashSet<&str>,
        spec: &str,
        keep_since_ms: i64,
    ) {
        // A rebuilt fact replaces the one held (that one has the old spec's paths).
        let fresh: std::collections::HashSet<&str> =
            rebuilt.iter().map(|f| f.id.as_str()).collect();
        self.facts
            .retain(|f| !elsewhere.contains(f.id.as_str()) && !fresh.contains(f.id.as_str()));
        for f in rebuilt {
            self.record(f, i64::MIN);
        }
        self.trim(keep_since_ms);
        self.spec = spec.to_string();
    }
}

/// What a stored event brings to its profile's activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// The source's spec fingerprint (a new profile's facts are current from the start).
    pub spec: String,
    pub keep_since_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fact: Option<Fact>,
    /// The event's `context.consent`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub consent: Value,
    /// Whether the caller wants the profile back (its event moves membership or is sent).
    #[serde(default)]
    pub wanted: bool,
}

/// A stored event as activity reads it.
pub struct Event<'a> {
    pub message_id: &'a str,
    /// `track`, `identify`, ...
    pub kind: &'a str,
    pub name: Option<&'a str>,
    pub at_ms: i64,
    pub properties: &'a Value,
    pub consent: &'a Value,
    pub now_ms: i64,
}

/// What to keep of one stored event for its profile; `None` when the source activates
/// nothing.
pub fn observed(source: &Source, spec: &Spec, event: &Event<'_>) -> Option<Observed> {
    if !crate::activation::active(source) {
        return None;
    }
    let fact = event
        .name
        .and_then(|n| spec.fact(event.message_id, n, event.at_ms, event.properties));
    Some(Observed {
        spec: spec.fingerprint.clone(),
        keep_since_ms: event.now_ms - spec.keep_ms,
        fact,
        consent: event.consent.clone(),
        wanted: crate::activation::moves(source, spec, event.kind, event.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Spec {
        let segments: Vec<Segment> = serde_json::from_value(json!([
            {"id": "fan", "rule": {"count": {"event": "Order Completed", "days": 90,
                "groupBy": "products[].category", "atLeast": 3}}},
            {"id": "big", "rule": {"sum": {"event": "Order Completed", "days": 30,
                "of": "total", "where": [{"path": "products[].price", "op": "gt", "value": 10}]}}},
            {"id": "cart", "rule": {"count": {"event": "Cart Viewed", "hours": 24,
                "notFollowedBy": "Order Completed"}}}
        ]))
        .unwrap();
        Spec::build(&segments, &[], 400)
    }

    fn fact(id: &str, at: i64) -> Fact {
        Fact {
            id: id.into(),
            event: "Order Completed".into(),
            at_ms: at,
            properties: Value::Null,
        }
    }

    #[test]
    fn the_spec_names_each_event_its_paths_and_the_longest_window() {
        let s = spec();
        assert_eq!(
            s.events["Order Completed"],
            vec!["products[].category", "products[].price", "total"]
        );
        assert_eq!(s.events["Cart Viewed"], Vec::<String>::new());
        assert_eq!(s.keep_ms, 90 * DAY_MS);
        assert_eq!(s.fingerprint.len(), 32);
        // Another path is another spec: facts kept under the old one are stale.
        let segments: Vec<Segment> = serde_json::from_value(json!([
            {"id": "x", "rule": {"count": {"event": "Order Completed", "days": 90,
                "where": [{"path": "coupon", "op": "exists"}]}}}]))
        .unwrap();
        assert_ne!(Spec::build(&segments, &[], 400).fingerprint, s.fingerprint);
        assert!(Spec::build(&[], &[], 400).is_empty());
    }

    #[test]
    fn a_fact_keeps_only_the_paths_read_in_their_shape() {
        let props = json!({"total": 42.5, "email_note": "x", "coupon": "SPRING",
            "products": [{"category": "Light", "price": 12, "name": "Guji", "sku": "G1"},
                         {"category": "Dark", "name": "Kenya"}, "junk"]});
        let f = spec().fact("m-1", "Order Completed", 7, &props).unwrap();
        assert_eq!(
            f.properties,
            json!({"total": 42.5, "products": [
                {"category": "Light", "price": 12}, {"category": "Dark"}, null]})
        );
        assert_eq!(f.id, fact_id("m-1"));
        assert!(!f.id.contains("m-1"));
        // One order is one fact, whichever message brought it (a reloaded thank-you
        // page): recorded once.
        let order = json!({"order_id": "o-9", "total": 5});
        let (a, b) = (
            spec().fact("m-4", "Order Completed", 7, &order).unwrap(),
            spec().fact("m-5", "Order Completed", 9, &order).unwrap(),
        );
        assert_eq!(a.id, b.id);
        assert_ne!(
            a.id,
            spec()
                .fact("m-4", "Order Completed", 7, &json!({"order_id": "o-10"}))
                .unwrap()
                .id
        );
        let mut act = Activity::default();
        act.record(a, 0);
        act.record(b, 0);
        assert_eq!(act.facts.len(), 1);
        assert!(spec().fact("m-2", "Page Viewed", 7, &props).is_none());
        // Past the size cap nothing of the properties is kept.
        let huge = json!({"total": "x".repeat(MAX_FACT_BYTES)});
        let f = spec().fact("m-3", "Order Completed", 7, &huge).unwrap();
        assert_eq!(f.properties, Value::Null);
    }

    #[test]
    fn facts_are_kept_once_in_time_order_within_the_window_and_the_cap() {
        let mut a = Activity::default();
        a.record(fact("b", 20), 0);
        a.record(fact("a", 10), 0);
        a.record(fact("b", 20), 0);
        a.record(fact("old", 5), 8);
        let ids: Vec<&str> = a.facts.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        for i in 0..(MAX_FACTS + 10) {
            a.record(fact(&format!("n{i}"), 100 + i as i64), 0);
        }
        assert_eq!(a.facts.len(), MAX_FACTS);
        assert_eq!(a.facts.last().unwrap().id, format!("n{}", MAX_FACTS + 9));
        assert_eq!(a.facts[0].id, "n10");
    }

    #[test]
    fn a_merge_joins_facts_and_an_unmerge_gives_them_back_stale() {
        let mut winner = Activity {
            spec: "s1".into(),
            ..Activity::default()
        };
        winner.record(fact("w1", 10), 0);
        let mut other = Activity {
            spec: "s1".into(),
            ..Activity::default()
        };
        other.record(fact("o1", 5), 0);
        other.note_consent(&json!({"enforced": {"marketing": true}}), 50);
        winner.absorb(&other);
        assert_eq!(winner.facts.len(), 2);
        assert_eq!(winner.spec, "s1", "same spec: still current");
        assert_eq!(winner.consent_at_ms, 50);
        let mut restored = other.clone();
        winner.release(&mut restored);
        assert_eq!(
            winner
                .facts
                .iter()
                .map(|f| f.id.as_str())
                .collect::<Vec<_>>(),
            ["w1"]
        );
        assert!(winner.spec.is_empty() && restored.spec.is_empty());
        // A profile recorded under another spec makes the merged one stale.
        let mut w = Activity {
            spec: "s2".into(),
            ..Activity::default()
        };
        w.absorb(&other);
        assert!(w.spec.is_empty());
        // So does one kept under none (from before the segments): its events count.
        let mut w = Activity {
            spec: "s1".into(),
            ..Activity::default()
        };
        w.absorb(&Activity::default());
        assert!(w.spec.is_empty());
    }

    #[test]
    fn a_rebuild_joins_what_is_held_and_drops_what_moved_elsewhere() {
        let mut a = Activity::default();
        a.record(fact("meanwhile", 30), 0);
        a.record(fact("moved", 20), 0);
        let elsewhere: std::collections::HashSet<&str> = ["moved"].into_iter().collect();
        a.rebuild(
            vec![fact("stored", 10), fact("meanwhile", 30)],
            &elsewhere,
            "s3",
            0,
        );
        let ids: Vec<&str> = a.facts.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["stored", "meanwhile"]);
        assert_eq!(a.spec, "s3");
        let s = Spec {
            fingerprint: "s3".into(),
            events: [("x".to_string(), vec![])].into_iter().collect(),
            keep_ms: 1,
        };
        assert!(a.current(&s));
    }
}
