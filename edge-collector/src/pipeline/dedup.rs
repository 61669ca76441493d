//! Dedup stage: decides, from the claims the dedup table answers, which candidates are
//! new (to store), repeats (`duplicate`), reused ids with other content (quarantined as
//! `message_id_conflict`), or still being stored by another request: then the whole
//! request is answered a retryable 503 and this request's own claims are released.

use super::store::Run;
use super::{quarantine_message, Candidate, Error, Reason, ReasonKind, Shared, Status};
use crate::dedup::{Claim, Deduplicator, Seen};

/// Seconds a sender waits before retrying an event another request is storing.
pub const IN_FLIGHT_RETRY_S: u32 = 2;

/// Claims every candidate; returns the new ones with their indexes.
pub async fn claim<D: Deduplicator>(
    d: &D,
    run: &mut Run,
    sh: &Shared<'_>,
    owner: &str,
) -> Result<Vec<(usize, Candidate)>, Error> {
    let candidates = std::mem::take(&mut run.candidates);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let claims: Vec<Claim> = candidates
        .iter()
        .map(|(_, c)| Claim {
            key: c.observation.key.clone(), // the dedup key, built once in `prepare`
            fingerprint: c.event.fingerprint.clone(),
            owner: owner.to_string(),
        })
        .collect();
    let seen = d.claim(&claims, sh.req.now_ms).await?;
    if seen.len() != claims.len() {
        return Err(Error::Storage("dedup answered the wrong count".into()));
    }
    if seen.contains(&Seen::Pending) {
        let mine: Vec<String> = claims
            .iter()
            .zip(&seen)
            .filter(|(_, s)| **s == Seen::New)
            .map(|(c, _)| c.key.clone())
            .collect();
        d.release(&mine, owner).await?;
        return Err(Error::InFlight {
            retry_after: IN_FLIGHT_RETRY_S,
        });
    }
    // Sized once: a candidate is large, and each doubling moved them all.
    let mut fresh = Vec::with_capacity(candidates.len());
    for ((i, c), s) in candidates.into_iter().zip(seen) {
        match s {
            Seen::New => fresh.push((i, c)),
            Seen::Duplicate => run.set(
                i,
                super::verdict(Some(c.event.message_id), Status::Duplicate, vec![]),
            ),
            Seen::Conflict { first } => {
                let reason = conflict_reason(&first, &c.event.fingerprint);
                run.sort(i, quarantine_message(sh, &c.whole_message(), vec![reason]));
            }
            Seen::Pending => {} // answered above: the whole request is retried
        }
    }
    Ok(fresh)
}

/// Why an event reusing a received messageId with other content is quarantined.
pub fn conflict_reason(first: &str, this: &str) -> Reason {
    Reason::new(
        ReasonKind::MessageIdConflict,
        "$.messageId",
        format!("messageId already received with different content (fingerprint {first}, this one {this})"),
    )
}
