//! Activation stage: decides which of a request's stored events move segment membership
//! or go to a destination, then has `crate::activation` score the profiles involved
//! (from their identity-graph documents, which the identity call already answered) and
//! plan the deliveries, and writes both. It runs after the events are committed: a
//! failure is answered 503, and the retry (its events now duplicates) runs it again,
//! where a delivery already final is not sent twice.

use super::Candidate;
use crate::activation::{self, ProfileFacts};
use crate::activity::Spec;
use crate::identity::{ActivityRequest, IdentityService, Profile};
use crate::sources::Source;
use crate::store::{EventStore, Insert, StoreError};
use serde_json::Value;

/// The profiles to score and the events a destination may send.
#[derive(Debug, Default)]
pub struct Input {
    pub profiles: Vec<String>,
    pub events: Vec<(String, Option<String>, Value)>,
    /// Graph documents already at hand (the identity call answers them).
    pub graph: Vec<Profile>,
}

/// Stale profiles whose events one read rebuilds.
const REBUILD_GROUP: usize = 50;

/// Where activation reads and writes.
pub struct Io<'a, E, I> {
    pub store: &'a E,
    pub identity: &'a I,
}

/// What of this request activation reads: kept events that can move a profile, and the
/// profiles that absorbed another.
pub fn input(
    source: &Source,
    spec: &Spec,
    fresh: &[(usize, Candidate)],
    outcomes: &[Insert],
    winners: &[String],
    graph: Vec<Profile>,
) -> Option<Input> {
    if !activation::active(source) {
        return None;
    }
    let mut out = Input {
        profiles: winners.to_vec(),
        events: Vec::new(),
        graph,
    };
    for ((_, c), o) in fresh.iter().zip(outcomes) {
        let e = &c.event;
        let kept = matches!(o, Insert::Stored | Insert::Duplicate);
        if !kept || !activation::moves(source, spec, e.kind, e.event.as_deref()) {
            continue;
        }
        out.profiles.extend(e.profile_id.clone());
        if source
            .destinations
            .iter()
            .any(|d| d.sends(e.event.as_deref()))
        {
            let payload = serde_json::from_str(&e.payload).unwrap_or_default();
            out.events
                .push((e.message_id.clone(), e.profile_id.clone(), payload));
        }
    }
    out.profiles.sort();
    out.profiles.dedup();
    (!out.profiles.is_empty() || !out.events.is_empty()).then_some(out)
}

/// The profiles' graph documents and store facts, with stale activity rebuilt from the
/// stored events first (once per profile after the segments change, or an unmerge).
pub async fn load<E: EventStore, I: IdentityService>(
    io: &Io<'_, E, I>,
    write_key: &str,
    source: &Source,
    profiles: &[String],
    mut graph: Vec<Profile>,
    now_ms: i64,
) -> Result<(Vec<Profile>, ProfileFacts), StoreError> {
    graph.retain(|p| profiles.contains(&p.id));
    let missing: Vec<String> = profiles
        .iter()
        .filter(|id| !graph.iter().any(|p| &p.id == *id))
        .cloned()
        .collect();
    let spec = Spec::of(source);
    if !missing.is_empty() {
        let req = ActivityRequest {
            profiles: missing,
            ..ActivityRequest::default()
        };
        graph.extend(io.identity.activity(write_key, &req).await?);
    }
    let stale = activation::stale(&spec, &graph);
    let names = activation::names_read(source);
    // The stale profiles' events are read a group at a time, so one read stays bounded
    // (each profile's newest `MAX_FACTS`).
    let mut groups = stale.chunks(REBUILD_GROUP);
    let mut facts = io
        .store
        .profile_facts(
            write_key,
            &names,
            profiles,
            groups.next().unwrap_or_default(),
        )
        .await?;
    for group in groups {
        let more = io
            .store
            .profile_facts(write_key, &names, &[], group)
            .await?;
        facts.rows.extend(more.rows);
    }
    if stale.is_empty() {
        return Ok((graph, facts));
    }
    let req = ActivityRequest {
        rebuilt: activation::rebuilt(&spec, &stale, &facts.rows),
        profiles: stale,
        spec: spec.fingerprint.clone(),
        keep_since_ms: now_ms - spec.keep_ms,
    };
    let fresh = io.identity.activity(write_key, &req).await?;
    graph.retain(|p| !fresh.iter().any(|f| f.id == p.id));
    graph.extend(fresh);
    Ok((graph, facts))
}

/// The profiles' states as activation sees them (exports, personalization).
pub async fn states<E: EventStore, I: IdentityService>(
    io: &Io<'_, E, I>,
    write_key: &str,
    source: &Source,
    profiles: &[String],
    now_ms: i64,
) -> Result<std::collections::BTreeMap<String, activation::State>, StoreError> {
    let (graph, facts) = load(io, write_key, source, profiles, Vec::new(), now_ms).await?;
    Ok(activation::states(source, &graph, &facts))
}

/// Reads the profiles' facts, decides, writes membership, changes and the delivery log,
/// then queues the jobs.
pub async fn run<E: EventStore, I: IdentityService>(
    io: &Io<'_, E, I>,
    write_key: &str,
    source: &Source,
    input: Input,
    now_ms: i64,
) -> Result<activation::Outcome, StoreError> {
    let (graph, facts) = load(io, write_key, source, &input.profiles, input.graph, now_ms).await?;
    let outcome = activation::decide(write_key, source, &graph, &facts, &input.events, now_ms);
    let store = io.store;
    if !outcome.scored.is_empty() || !outcome.log.is_empty() {
        store.save_activation(write_key, &outcome).await?;
    }
    // The log lines just written are the outbox: a job that fails to queue stays
    // `queued` with its job, and the maintenance queues it again. So a queue outage does
    // not fail the request (its events are stored), and nothing is lost.
    if !outcome.jobs.is_empty() && store.queue_jobs(&outcome.jobs).await.is_err() {
        return Ok(activation::Outcome {
            jobs: Vec::new(),
            ..outcome
        });
    }
    Ok(outcome)
}
