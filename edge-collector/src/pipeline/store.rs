//! Store stage: decides what one request writes and in which order. Consent records and
//! quarantined events first (idempotent, so a retry after a crash writes them once);
//! then identity (idempotent per event), then the new events together with the moves of
//! merged profiles' events in one transaction, then the dedup commit, then the credit of
//! the conversions involved (`attribution`), then segments and destinations
//! (`activate`). A failed store releases this request's
//! claims, so the sender's retry is new again.

use super::{
    verdict, Candidate, Error, Prepared, Reason, ReasonKind, Report, Services, Status, Verdict,
};
use crate::dedup::Deduplicator;
use crate::identity::IdentityService;
use crate::sources::Source;
use crate::store::{ConsentRecord, EventStore, Insert, QuarantinedEvent, StoreError, StoredEvent};
use serde_json::Value;

/// The request's verdicts and pending writes, as the stages fill them in.
pub struct Run {
    results: Vec<Option<Verdict>>,
    pub candidates: Vec<(usize, Candidate)>,
    quarantined: Vec<QuarantinedEvent>,
    pub consent_log: Vec<ConsentRecord>,
    /// Whether an event was refused (for clearing a browser's cookie).
    refused_any: bool,
    pub identified: u32,
    pub bots: u32,
}

impl Run {
    pub fn new(n: usize) -> Self {
        Run {
            results: vec![None; n],
            // A candidate is large (the message and its row): moved once, not again at
            // each doubling. Bounded: a hostile body can hold 100,000 empty entries.
            candidates: Vec::with_capacity(n.min(128)),
            quarantined: Vec::new(),
            consent_log: Vec::new(),
            refused_any: false,
            identified: 0,
            bots: 0,
        }
    }

    pub fn set(&mut self, i: usize, v: Verdict) {
        if let Some(slot) = self.results.get_mut(i) {
            *slot = Some(v);
        }
    }

    /// Files what the checks made of event `i`.
    pub fn sort(&mut self, i: usize, p: Prepared) {
        match p {
            Prepared::Candidate(c) => self.candidates.push((i, *c)),
            Prepared::Quarantine(q, reasons) => {
                let mut v = verdict(q.message_id.clone(), Status::Quarantined, reasons);
                v.qkey = Some(q.qkey.clone());
                self.set(i, v);
                self.quarantined.push(*q);
            }
            Prepared::Refused { message_id } => {
                let why = Reason::new(
                    ReasonKind::ConsentDenied,
                    "$.context.consent",
                    "no analytics consent: the event is not stored",
                );
                self.refused_any = true;
                self.set(i, verdict(message_id, Status::Refused, vec![why]));
            }
        }
    }

    /// Writes the consent records and quarantined events gathered so far.
    pub async fn write_side_records<E: EventStore>(&mut self, store: &E) -> Result<(), Error> {
        if !self.consent_log.is_empty() {
            store.append_consent(&self.consent_log).await?;
            self.consent_log.clear();
        }
        if !self.quarantined.is_empty() {
            store.quarantine(&self.quarantined).await?;
            self.quarantined.clear();
        }
        Ok(())
    }

    /// The answer, once every event has its verdict.
    pub fn report(mut self, stored: Vec<Stored>, browser: bool, cookie: Option<&str>) -> Report {
        let mut cookie_id = None;
        for Stored {
            index,
            mut verdict,
            anonymous_id,
        } in stored
        {
            if browser {
                verdict.profile_id = None;
                if cookie_id.is_none() && verdict.status == Status::Accepted {
                    cookie_id = cookie
                        .filter(|c| super::valid_cookie_id(c))
                        .map(str::to_string)
                        .or(anonymous_id);
                }
            }
            self.set(index, verdict);
        }
        let results: Vec<Verdict> = self.results.into_iter().flatten().collect();
        let count = |s: Status| results.iter().filter(|v| v.status == s).count();
        Report {
            ok: true,
            accepted: count(Status::Accepted),
            duplicates: count(Status::Duplicate),
            quarantined: count(Status::Quarantined),
            refused: count(Status::Refused),
            cookie_id,
            clear_cookie: browser && self.refused_any && count(Status::Accepted) == 0,
            results,
        }
    }
}

/// A stored event's verdict, and its anonymous id should the cookie need one.
pub struct Stored {
    pub index: usize,
    pub verdict: Verdict,
    pub anonymous_id: Option<String>,
}

/// Resolves identity for the new events, stores them with their profile moves, then
/// commits their claims (or releases them when the store failed). An event the store
/// found under another visitor's messageId is quarantined as a conflict, and its claim
/// released, so its retry is judged the same way again.
pub async fn store<E: EventStore, D: Deduplicator, I: IdentityService>(
    svc: &Services<'_, E, D, I>,
    sh: &super::Shared<'_>,
    mut fresh: Vec<(usize, Candidate)>,
    run: &mut Run,
    owner: &str,
    now_ms: i64,
) -> Result<Vec<Stored>, Error> {
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let claimed: Vec<String> = fresh
        .iter()
        .map(|(_, c)| c.observation.key.clone())
        .collect();
    let (outcomes, winners, graph) = match write(svc, sh.source, sh.write_key, &mut fresh).await {
        Ok(o) => o,
        Err(e) => {
            let _ = svc.dedup.release(&claimed, owner).await;
            return Err(e.into());
        }
    };
    let pick = |want: fn(&Insert) -> bool| -> Vec<String> {
        claimed
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| want(o))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let done = pick(|o| matches!(o, Insert::Stored | Insert::Duplicate));
    let to_activate =
        super::activate::input(sh.source, &sh.spec, &fresh, &outcomes, &winners, graph);
    let to_credit = credited_profiles(sh.source, &fresh, &outcomes, winners);
    let failed = pick(|o| *o == Insert::Failed);
    let conflicts = pick(|o| matches!(o, Insert::Conflict { .. }));
    let mut stored = Vec::with_capacity(fresh.len());
    for ((i, c), o) in fresh.into_iter().zip(outcomes) {
        match o {
            Insert::Stored | Insert::Duplicate => stored.push(accepted(run, i, c, o)),
            Insert::Conflict { first } => {
                let reason = super::dedup::conflict_reason(&first, &c.event.fingerprint);
                run.sort(
                    i,
                    super::quarantine_message(sh, &c.whole_message(), vec![reason]),
                );
            }
            Insert::Failed => {}
        }
    }
    // The conflicts' quarantine rows before their claims go: a crash in between leaves
    // a pending claim whose lease runs out, and the retry writes the same row (by qkey).
    run.write_side_records(svc.store).await?;
    svc.dedup.commit(&done, now_ms).await?;
    if !conflicts.is_empty() {
        svc.dedup.release(&conflicts, owner).await?;
    }
    if !failed.is_empty() {
        svc.dedup.release(&failed, owner).await?;
        return Err(Error::Storage("some events could not be stored".into()));
    }
    // Attribution after the events are stored: a failure here is answered 503, and the
    // retry (its events now duplicates) credits the same profiles again.
    if !to_credit.is_empty() {
        svc.store
            .recredit(sh.write_key, &sh.source.attribution, &to_credit)
            .await?;
    }
    // Segments and destinations last, on the same terms.
    if let Some(input) = to_activate {
        let io = super::activate::Io {
            store: svc.store,
            identity: svc.identity,
        };
        super::activate::run(&io, sh.write_key, sh.source, input, now_ms).await?;
    }
    Ok(stored)
}

/// Profiles whose conversions are credited again by this request: those of its stored
/// (or already stored) conversion events, and those that absorbed another profile.
fn credited_profiles(
    source: &Source,
    fresh: &[(usize, Candidate)],
    outcomes: &[Insert],
    winners: Vec<String>,
) -> Vec<String> {
    if source.attribution.conversions.is_empty() {
        return Vec::new();
    }
    let mut out = winners;
    for ((_, c), o) in fresh.iter().zip(outcomes) {
        let kept = matches!(o, Insert::Stored | Insert::Duplicate);
        let converts = source
            .attribution
            .conversion(c.event.event.as_deref())
            .is_some();
        if let (true, true, Some(p)) = (kept, converts, &c.event.profile_id) {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The verdict of an event the store kept (or had kept on a first try).
fn accepted(run: &mut Run, i: usize, c: Candidate, o: Insert) -> Stored {
    let status = if o == Insert::Stored {
        Status::Accepted
    } else {
        Status::Duplicate
    };
    if status == Status::Accepted {
        run.identified += u32::from(c.event.identified);
        run.bots += u32::from(c.event.bot);
    }
    let mut v = verdict(Some(c.event.message_id), status, vec![]);
    v.warnings = c.warnings;
    v.profile_id = c.event.profile_id;
    Stored {
        index: i,
        verdict: v,
        anonymous_id: c.event.anonymous_id.filter(|a| super::valid_cookie_id(a)),
    }
}

async fn write<E: EventStore, D: Deduplicator, I: IdentityService>(
    svc: &Services<'_, E, D, I>,
    source: &Source,
    key: &str,
    fresh: &mut [(usize, Candidate)],
) -> Result<(Vec<Insert>, Vec<String>, Vec<crate::identity::Profile>), StoreError> {
    // The observations are not needed after this call: moved out, not copied.
    let observations: Vec<_> = fresh
        .iter_mut()
        .map(|(_, c)| std::mem::take(&mut c.observation))
        .collect();
    let observed = svc
        .identity
        .observe(key, &source.identity_limits, &observations)
        .await?;
    let resolved = observed.resolutions;
    if resolved.len() != fresh.len() {
        return Err(StoreError("identity answered the wrong count".into()));
    }
    let (mut moves, mut winners) = (Vec::new(), Vec::new());
    for ((_, c), r) in fresh.iter_mut().zip(resolved) {
        if let Some(r) = r {
            if !r.absorbed.is_empty() {
                winners.push(r.profile_id.clone());
            }
            moves.extend(
                r.absorbed
                    .iter()
                    .map(|from| (from.clone(), r.profile_id.clone())),
            );
            c.event.identified = r.identified;
            c.context_adds
                .insert("profileId".into(), Value::String(r.profile_id.clone()));
            c.event.profile_id = Some(r.profile_id);
        }
        let mut json = std::mem::take(&mut c.event.payload).into_bytes();
        json.clear();
        c.message
            .serialize_with_context(
                Some(&c.context()),
                &mut serde_json::Serializer::new(&mut json),
            )
            .map_err(|_| StoreError("cannot serialize an event".into()))?;
        c.event.payload =
            String::from_utf8(json).map_err(|_| StoreError("cannot serialize an event".into()))?;
    }
    // Moved out for the store and back afterwards: payloads are not copied.
    let events: Vec<StoredEvent> = fresh
        .iter_mut()
        .map(|(_, c)| std::mem::take(&mut c.event))
        .collect();
    let result = svc.store.insert_events(&events, &moves).await;
    for ((_, c), e) in fresh.iter_mut().zip(events) {
        c.event = e;
    }
    let outcomes = result?;
    if outcomes.len() != fresh.len() {
        return Err(StoreError("store answered the wrong count".into()));
    }
    Ok((outcomes, winners, observed.profiles))
}
