//! Activation: decides, after a request's events are stored, which profiles are scored
//! again, their new segment membership and the changes it records, and what is sent to
//! the destinations (or logged as skipped, with why). The same rules run in the daily
//! rescoring, for windows that close while nothing arrives.
//!
//! Facts come as plain data: each profile's identity-graph document (traits, and the
//! activity its events left: `crate::activity`) and what the store holds
//! ([`ProfileFacts`]: membership, consent-log decisions, cut points); this module only
//! decides.

use crate::activity::Spec;
use crate::destinations::{self, Hashes, Job, Skip};
use crate::identity::Profile;
use crate::segments::{self, Change, Cuts, Fact, Facts, Segment};
use crate::sources::Source;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One stored event of a profile as a rebuild reads it back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub profile_id: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event: Option<String>,
    pub timestamp: String,
    /// `properties`.
    #[serde(default)]
    pub data: Value,
}

/// What the store holds about some profiles.
#[derive(Debug, Clone, Default)]
pub struct ProfileFacts {
    /// The stale profiles' stored events, oldest first (for their rebuild).
    pub rows: Vec<Row>,
    /// Stored membership: `(profile, segment)`.
    pub members: Vec<(String, String)>,
    /// The source's RFM cut points (none before the first rescoring).
    pub cuts: Cuts,
    /// The consent log's decisions of the profiles' visitors, oldest first: a decision
    /// whose event was refused (a revocation of analytics) is stored only there.
    pub decisions: Vec<Decision>,
}

/// One consent-log entry of a profile's visitor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Decision {
    pub profile_id: String,
    pub timestamp: String,
    /// The categories as the collector decided them (`{"analytics": true, …}`).
    pub categories: Value,
}

/// One profile's state: its graph document's traits and activity, and its stored
/// membership.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub facts: Facts,
    pub conversions: Vec<(i64, f64)>,
    /// The latest consent the profile's events carried (or a newer consent-log
    /// decision).
    pub consent: Value,
    pub members: Vec<String>,
}

impl State {
    pub fn hashes(&self) -> Hashes {
        Hashes::from_traits(&self.facts.traits)
    }
}

/// The event names activation reads for a source: those its segments read, its
/// conversions (RFM), and what its destinations send.
pub fn names_read(source: &Source) -> Vec<String> {
    let mut out: Vec<String> = segments::events_read(source.segments())
        .into_iter()
        .map(str::to_string)
        .collect();
    out.extend(
        source
            .attribution
            .conversions
            .iter()
            .map(|c| c.event.clone()),
    );
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether a source has anything to activate.
pub fn active(source: &Source) -> bool {
    !source.segments().is_empty() || !source.destinations.is_empty()
}

/// Whether a stored event may move a profile's membership or be sent. `spec` is the
/// source's (`Spec::of`, once per request): it names the events segments read, RFM's
/// conversions among them.
pub fn moves(source: &Source, spec: &Spec, kind: &str, event: Option<&str>) -> bool {
    if !active(source) {
        return false;
    }
    if kind == "identify" {
        return true; // traits, and the hashes destinations match on
    }
    let Some(name) = event else { return false };
    spec.events.contains_key(name) || source.destinations.iter().any(|d| d.sends(Some(name)))
}

/// The profiles among these whose activity must be rebuilt from the store first.
pub fn stale(spec: &Spec, graph: &[Profile]) -> Vec<String> {
    graph
        .iter()
        .filter(|p| !p.activity.current(spec))
        .map(|p| p.id.clone())
        .collect()
}

/// The stale profiles' facts, rebuilt from their stored events (an entry for each, even
/// with no events left).
pub fn rebuilt(spec: &Spec, stale: &[String], rows: &[Row]) -> Vec<(String, Vec<Fact>)> {
    let mut out: BTreeMap<&str, Vec<Fact>> =
        stale.iter().map(|p| (p.as_str(), Vec::new())).collect();
    for r in rows.iter().filter(|r| r.kind != "identify") {
        let Some(name) = &r.event else { continue };
        let at = tracking_plan::time::parse_rfc3339(&r.timestamp).unwrap_or(0);
        if let Some(f) = spec.fact(&r.message_id, name, at, &r.data) {
            out.entry(&r.profile_id).or_default().push(f);
        }
    }
    out.into_iter().map(|(p, f)| (p.to_string(), f)).collect()
}

/// One state per profile: from its graph document (traits, kept facts, the latest
/// consent) and the store's membership and consent-log decisions. A profile the graph
/// no longer has (erased) keeps only its stored membership, so it exits.
pub fn states(source: &Source, graph: &[Profile], f: &ProfileFacts) -> BTreeMap<String, State> {
    let mut out: BTreeMap<String, State> = BTreeMap::new();
    let mut consent_at: BTreeMap<String, i64> = BTreeMap::new();
    for p in graph {
        let s = out.entry(p.id.clone()).or_default();
        s.facts.traits = p.traits.clone();
        s.facts.events = p.activity.facts.clone();
        s.consent = p.activity.consent.clone();
        consent_at.insert(p.id.clone(), p.activity.consent_at_ms);
        for e in &s.facts.events {
            if let Some(rule) = source.attribution.conversion(Some(&e.event)) {
                let revenue = rule
                    .revenue
                    .as_deref()
                    .and_then(|k| e.properties.get(k))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                s.conversions.push((e.at_ms, revenue));
            }
        }
    }
    for (p, seg) in &f.members {
        out.entry(p.clone()).or_default().members.push(seg.clone());
    }
    apply_decisions(&mut out, &consent_at, f);
    out
}

/// A consent-log decision newer than the consent of the profile's latest stored event
/// is the profile's consent now (as the collector records it: `enforced`).
fn apply_decisions(
    out: &mut BTreeMap<String, State>,
    consent_at: &BTreeMap<String, i64>,
    f: &ProfileFacts,
) {
    for d in &f.decisions {
        let Some(s) = out.get_mut(&d.profile_id) else {
            continue;
        };
        let at = tracking_plan::time::parse_rfc3339(&d.timestamp).unwrap_or(0);
        let newer = consent_at.get(&d.profile_id).is_none_or(|t| at >= *t);
        if newer && d.categories.is_object() {
            s.consent = serde_json::json!({"enforced": d.categories});
        }
    }
}

/// A profile's new membership and what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub profile_id: String,
    pub members: Vec<String>,
    pub changes: Vec<Change>,
}

/// Scores every profile against the source's segments.
pub fn score(
    write_key: &str,
    segments: &[Segment],
    states: &mut BTreeMap<String, State>,
    cuts: &Cuts,
    now_ms: i64,
) -> Vec<Scored> {
    let mut out = Vec::new();
    for (id, s) in states.iter_mut() {
        s.facts.rfm = segments::rfm(
            segments::raw_rfm(s.conversions.iter().copied()),
            cuts,
            now_ms,
        );
        let now: Vec<&str> = segments::members_of(segments, &s.facts, now_ms);
        let before: Vec<&str> = s.members.iter().map(String::as_str).collect();
        let changes = segments::changes(write_key, id, &before, &now, now_ms);
        if !changes.is_empty() {
            out.push(Scored {
                profile_id: id.clone(),
                members: now.iter().map(|x| x.to_string()).collect(),
                changes,
            });
        }
    }
    out
}

/// A change as the event destinations receive, with the profile's latest consent (a
/// change is sent under the consent the person gave, like any event).
pub fn change_event(segments: &[Segment], c: &Change, consent: &Value) -> Value {
    let name = segments
        .iter()
        .find(|s| s.id == c.segment)
        .map_or("", |s| s.name.as_str());
    let mut m = c.message(name);
    if let (Some(Value::Object(ctx)), false) = (m.get_mut("context"), consent.is_null()) {
        ctx.insert("consent".into(), consent.clone());
    }
    m
}

/// One line of the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub write_key: String,
    pub destination: String,
    pub message_id: String,
    #[serde(default)]
    pub profile_id: Option<String>,
    pub status: Status,
    /// Why it was skipped, rejected or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Skipped,
    Delivered,
    /// A try failed; the queue tries again.
    Retrying,
    /// The platform refused it (4xx): not tried again.
    Rejected,
    /// Every try failed: it is in the dead-letter queue.
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Skipped => "skipped",
            Status::Delivered => "delivered",
            Status::Retrying => "retrying",
            Status::Rejected => "rejected",
            Status::Dead => "dead",
        }
    }
    /// Whether nothing more will happen to it (a delivered job is never sent again).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered | Status::Rejected | Status::Skipped | Status::Dead
        )
    }
}

/// What one request (or one rescoring) does after its events are stored.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub scored: Vec<Scored>,
    pub jobs: Vec<Job>,
    pub log: Vec<Delivery>,
}

/// Decides the membership changes and the deliveries. `events` are the request's
/// stored events that a destination may send: `(message_id, profile_id, payload)`.
pub fn decide(
    write_key: &str,
    source: &Source,
    graph: &[Profile],
    facts: &ProfileFacts,
    events: &[(String, Option<String>, Value)],
    now_ms: i64,
) -> Outcome {
    let mut states = states(source, graph, facts);
    let scored = score(
        write_key,
        source.segments(),
        &mut states,
        &facts.cuts,
        now_ms,
    );
    let mut outgoing: Vec<(String, Option<String>, Value)> = events.to_vec();
    for s in &scored {
        let consent = states
            .get(&s.profile_id)
            .map_or(&Value::Null, |st| &st.consent);
        for c in &s.changes {
            let e = change_event(source.segments(), c, consent);
            outgoing.push((c.message_id.clone(), Some(s.profile_id.clone()), e));
        }
    }
    let hashes_of = |p: Option<&str>| {
        p.and_then(|p| states.get(p))
            .map(State::hashes)
            .unwrap_or_default()
    };
    let plan = destinations::plan(
        write_key,
        &source.destinations,
        &outgoing,
        hashes_of,
        now_ms,
    );
    let mut log: Vec<Delivery> = plan
        .jobs
        .iter()
        .map(|j| delivery(j, Status::Queued, None, 0, None, now_ms))
        .collect();
    log.extend(plan.skipped.iter().map(|(d, id, profile, skip)| Delivery {
        write_key: write_key.to_string(),
        destination: d.clone(),
        message_id: id.clone(),
        profile_id: profile.clone(),
        status: Status::Skipped,
        reason: Some(skip.as_str().to_string()),
        attempts: 0,
        http_status: None,
        at_ms: now_ms,
    }));
    Outcome {
        scored,
        jobs: plan.jobs,
        log,
    }
}

pub fn delivery(
    j: &Job,
    status: Status,
    reason: Option<&str>,
    attempts: u32,
    http_status: Option<u16>,
    at_ms: i64,
) -> Delivery {
    Delivery {
        write_key: j.write_key.clone(),
        destination: j.destination.clone(),
        message_id: j.message_id.clone(),
        profile_id: j.profile_id.clone(),
        status,
        reason: reason.map(str::to_string),
        attempts,
        http_status,
        at_ms,
    }
}

/// What a delivery attempt comes to: the log line, and whether the queue should try
/// again. `attempts` counts this one; `max_attempts` is the queue's retry budget plus 1.
pub fn after_attempt(
    j: &Job,
    result: Result<Option<u16>, Skip>,
    attempts: u32,
    max_attempts: u32,
    now_ms: i64,
) -> (Delivery, bool) {
    use destinations::Answer;
    match result {
        Err(skip) => (
            delivery(
                j,
                Status::Skipped,
                Some(skip.as_str()),
                attempts,
                None,
                now_ms,
            ),
            false,
        ),
        Ok(status) => match destinations::answer(status) {
            Answer::Delivered => (
                delivery(j, Status::Delivered, None, attempts, status, now_ms),
                false,
            ),
            Answer::Rejected => (
                delivery(
                    j,
                    Status::Rejected,
                    Some("refused by the platform"),
                    attempts,
                    status,
                    now_ms,
                ),
                false,
            ),
            Answer::Retry if attempts >= max_attempts => (
                delivery(
                    j,
                    Status::Dead,
                    Some("every try failed"),
                    attempts,
                    status,
                    now_ms,
                ),
                false,
            ),
            Answer::Retry => (
                delivery(
                    j,
                    Status::Retrying,
                    Some("will try again"),
                    attempts,
                    status,
                    now_ms,
                ),
                true,
            ),
        },
    }
}

/// The cut points are recomputed once a day (the rescoring runs hourly).
pub const CUTS_EVERY_MS: i64 = 86_400_000;

/// Whether the source's RFM cut points are due: none yet, or a day old.
pub fn cuts_due(source: &Source, computed_at: Option<&str>, now_ms: i64) -> bool {
    segments::reads_rfm(source.segments())
        && computed_at
            .and_then(tracking_plan::time::parse_rfc3339)
            .is_none_or(|at| now_ms - at >= CUTS_EVERY_MS)
}

/// One conversion rule's aggregate for one profile, as the store sums it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConversionSum {
    pub profile_id: String,
    pub last: String,
    pub n: f64,
    pub revenue: f64,
}

/// The source's cut points from every converting profile's sums (one row per profile
/// and conversion rule).
pub fn cut_points(rows: &[ConversionSum], now_ms: i64) -> Cuts {
    let mut per: BTreeMap<&str, segments::RawRfm> = BTreeMap::new();
    for r in rows {
        let at = tracking_plan::time::parse_rfc3339(&r.last).unwrap_or(0);
        let e = per.entry(&r.profile_id).or_insert(segments::RawRfm {
            last_ms: at,
            frequency: 0.0,
            monetary: 0.0,
        });
        e.last_ms = e.last_ms.max(at);
        e.frequency += r.n;
        e.monetary += if r.revenue.is_finite() {
            r.revenue
        } else {
            0.0
        };
    }
    let all: Vec<segments::RawRfm> = per.into_values().collect();
    segments::cuts(&all, now_ms)
}

/// Where the rescoring starts reading events: the hot window (a segment's windows fit
/// in it, checked when the source loads).
pub fn rescore_since(source: &Source, now_ms: i64) -> String {
    crate::lake::cutoff(now_ms, source.retention_days)
}

/// Whether a visitor's latest consent decision (the consent log's categories) allows
/// personalization. No decision on record is a denial: it fails closed.
pub fn personalization_granted(latest: Option<&Value>) -> bool {
    latest
        .and_then(|c| c.get("personalization"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The personalization answer for a visitor's profile: segment ids and shareable traits,
/// only under personalization consent (otherwise nothing at all).
pub fn personal_view(source: &Source, state: Option<&State>, personalization: bool) -> Value {
    let mut out = Map::new();
    let Some(s) = state.filter(|_| personalization) else {
        out.insert("segments".into(), Value::Array(Vec::new()));
        out.insert("traits".into(), Value::Object(Map::new()));
        return Value::Object(out);
    };
    // Only configured segments (a removed one is not shown from a stale row).
    let ids: Vec<Value> = source
        .segments()
        .iter()
        .filter(|seg| s.members.contains(&seg.id))
        .map(|seg| Value::String(seg.id.clone()))
        .collect();
    out.insert("segments".into(), Value::Array(ids));
    out.insert(
        "traits".into(),
        Value::Object(segments::shareable_traits(
            &s.facts.traits,
            &source.personalization.traits,
        )),
    );
    Value::Object(out)
}
