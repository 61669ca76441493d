//! Activation stage: decides which of a request's stored events move segment membership
//! or go to a destination, then has `crate::activation` score the profiles involved and
//! plan the deliveries, and writes both. It runs after the events are committed: a
//! failure is answered 503, and the retry (its events now duplicates) runs it again,
//! where a delivery already final is not sent twice.

use super::Candidate;
use crate::activation;
use crate::sources::Source;
use crate::store::{EventStore, Insert, StoreError};
use serde_json::Value;

/// The profiles to score and the events a destination may send.
#[derive(Debug, Default)]
pub struct Input {
    pub profiles: Vec<String>,
    pub events: Vec<(String, Option<String>, Value)>,
}

/// What of this request activation reads: kept events that can move a profile, and the
/// profiles that absorbed another.
pub fn input(
    source: &Source,
    fresh: &[(usize, Candidate)],
    outcomes: &[Insert],
    winners: &[String],
) -> Option<Input> {
    if !activation::active(source) {
        return None;
    }
    let mut out = Input {
        profiles: winners.to_vec(),
        events: Vec::new(),
    };
    for ((_, c), o) in fresh.iter().zip(outcomes) {
        let e = &c.event;
        let kept = matches!(o, Insert::Stored | Insert::Duplicate);
        if !kept || !activation::moves(source, e.kind, e.event.as_deref()) {
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

/// Reads the profiles' facts, decides, writes membership, changes and the delivery log,
/// then queues the jobs.
pub async fn run<E: EventStore>(
    store: &E,
    write_key: &str,
    source: &Source,
    input: Input,
    now_ms: i64,
) -> Result<activation::Outcome, StoreError> {
    let names = activation::names_read(source);
    let facts = store
        .profile_facts(write_key, &names, &input.profiles)
        .await?;
    let outcome = activation::decide(write_key, source, &facts, &input.events, now_ms);
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
