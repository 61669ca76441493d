//! Storage contract: what the pipeline writes (clean events, the quarantine, the consent
//! log, daily counters) and an in-memory store used by native tests. The D1, Queue and R2
//! implementations live in the Workers adapter.

use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A validated event, ready to be stored. `Default` is the empty event (no write key,
/// no id, no payload): a placeholder while an event is moved out.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub write_key: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub event: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    /// The profile the identity graph resolved the event to.
    pub profile_id: Option<String>,
    /// Whether that profile carries a userId or a hashed email or phone.
    pub identified: bool,
    /// The user agent is a crawler or automation.
    pub bot: bool,
    /// Skew-corrected event time (RFC 3339).
    pub timestamp: String,
    pub received_at: String,
    /// The full message as stored (JSON, raw PII hashed): the pipeline's own
    /// serialization, so always JSON. Spliced into the lake's lines as the object it is.
    #[serde(skip)]
    pub payload: String,
    /// Hash of the content as sent (`pipeline::fingerprint`): the store tells a retry
    /// from another visitor's reuse of the messageId by it. Not part of the lake's lines.
    #[serde(skip)]
    pub fingerprint: String,
}

impl StoredEvent {
    /// The event as one line of the lake: its columns, then its payload spliced in as
    /// the JSON object it is (not parsed and written again: the payload is the
    /// pipeline's own serialization; an empty one is `null`).
    pub fn archive_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        line.pop(); // the columns' closing brace
        line.push_str(",\"payload\":");
        line.push_str(if self.payload.is_empty() {
            "null"
        } else {
            &self.payload
        });
        line.push('}');
        line
    }
}

/// An event set aside with the reasons it could not be accepted, so it can be fixed and
/// replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedEvent {
    pub write_key: String,
    pub message_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    /// Idempotency key: a digest of the write key, the payload and the reasons, so a
    /// retried request quarantines an event once.
    pub qkey: String,
    /// JSON array of every identifier value the event carries (ids, hashed emails and
    /// phones), so erasure finds the row by any of them.
    pub subjects: String,
    /// JSON object of the edge signals the event arrived with (`gpc`, `country`), so a
    /// replay decides as the first pass did.
    pub edge: String,
    /// The first reason's kind, for counting.
    pub reason: String,
    /// JSON array of reason objects.
    pub reasons: String,
    /// The payload as received, with raw PII hashed.
    pub payload: String,
    pub received_at: String,
}

/// One entry of the append-only consent log: who, what, when, from where.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRecord {
    pub write_key: String,
    pub message_id: String,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    /// The categories as decided (JSON object), GPC applied.
    pub categories: String,
    /// What the page reported (`sdk`, `tcf`, `gcm`, `banner`, ...), or `unknown`.
    pub source: String,
    pub gpc: bool,
    pub timestamp: String,
    pub received_at: String,
    /// How the choice was made (JSON object): the page's address and what the record
    /// stated of the notice and the consent manager (`consent_gate::evidence`).
    pub evidence: String,
}

/// Counters for one request, added to the source's daily totals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    pub write_key: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub received: u32,
    pub accepted: u32,
    pub duplicates: u32,
    pub quarantined: u32,
    pub refused: u32,
    pub identified: u32,
    pub bots: u32,
}

/// Whether a store kept an event or already had one with that messageId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    Stored,
    /// Already stored with the same content (a retry whose first try was stored).
    Duplicate,
    /// Already stored with other content under the same messageId: another visitor
    /// reused it (dedup shards by visitor, so only the store sees this). The first
    /// content stays; this one is quarantined. Carries the first one's fingerprint.
    Conflict {
        first: String,
    },
    /// Not stored (a partial failure): its claim is released and the request is retried.
    Failed,
}

/// What a repeated messageId is, from the stored fingerprint and the new one
/// (`pipeline::same_content`).
pub fn repeat(stored: &str, new: &str) -> Insert {
    if crate::pipeline::same_content(stored, new) {
        Insert::Duplicate
    } else {
        Insert::Conflict {
            first: stored.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreError(pub String);

/// What the pipeline writes to. Every write is idempotent: `insert_events` on
/// (write_key, message_id), `quarantine` on `qkey`, `append_consent` on (write_key,
/// message_id), so a retry after a crash at any point stores each thing once.
#[allow(async_fn_in_trait)] // the Workers runtime is single-threaded: futures need not be Send
pub trait EventStore {
    /// Stores events and, in the same transaction, moves the events of merged-away
    /// profiles to the profile that absorbed them (`(from, to)` pairs, in merge order).
    async fn insert_events(
        &self,
        events: &[StoredEvent],
        moves: &[(String, String)],
    ) -> Result<Vec<Insert>, StoreError>;
    async fn quarantine(&self, events: &[QuarantinedEvent]) -> Result<(), StoreError>;
    async fn append_consent(&self, records: &[ConsentRecord]) -> Result<(), StoreError>;
    async fn add_counts(&self, counts: &Counts) -> Result<(), StoreError>;
    /// Computes again the credit of every stored conversion of these profiles from
    /// their stored page views (`attribution::credit_profiles`), replacing what was
    /// stored for them; returns how many credit rows there are now.
    async fn recredit(
        &self,
        write_key: &str,
        config: &crate::attribution::AttributionConfig,
        profiles: &[String],
    ) -> Result<usize, StoreError>;
    /// What activation reads about these profiles (`crate::activation`): their stored
    /// segment membership and consent-log decisions, the source's RFM cut points, and
    /// for the `rebuild` ones (stale activity) their stored events of these names.
    async fn profile_facts(
        &self,
        write_key: &str,
        names: &[String],
        profiles: &[String],
        rebuild: &[String],
    ) -> Result<crate::activation::ProfileFacts, StoreError>;
    /// Writes in one transaction the new membership, the changes (as records) and the
    /// delivery log lines (a line already final is kept). The jobs are kept with their
    /// `queued` lines until they are final, so a crash before `queue_jobs` is swept.
    async fn save_activation(
        &self,
        write_key: &str,
        outcome: &crate::activation::Outcome,
    ) -> Result<(), StoreError>;
    /// Hands the jobs to the delivery queue.
    async fn queue_jobs(&self, jobs: &[crate::destinations::Job]) -> Result<(), StoreError>;
}

/// Where stored events follow an unmerge.
#[allow(async_fn_in_trait)]
pub trait ProfileEvents {
    /// Moves the events of `from` that belong to the `unmerged` visitors (by anonymous
    /// id or user id) to `to`; returns how many moved.
    async fn move_events(
        &self,
        write_key: &str,
        from: &str,
        to: &str,
        unmerged: &crate::erasure::Subjects,
    ) -> Result<u64, StoreError>;
}

impl ProfileEvents for MemoryStore {
    async fn move_events(
        &self,
        write_key: &str,
        from: &str,
        to: &str,
        unmerged: &crate::erasure::Subjects,
    ) -> Result<u64, StoreError> {
        self.check()?;
        let mut n = 0;
        for e in self.events.borrow_mut().iter_mut() {
            let theirs = e
                .anonymous_id
                .as_ref()
                .is_some_and(|a| unmerged.anonymous_ids.contains(a))
                || e.user_id
                    .as_ref()
                    .is_some_and(|u| unmerged.user_ids.contains(u));
            if e.write_key == write_key && e.profile_id.as_deref() == Some(from) && theirs {
                e.profile_id = Some(to.to_string());
                n += 1;
            }
        }
        Ok(n)
    }
}

/// An in-memory store for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub events: RefCell<Vec<StoredEvent>>,
    pub quarantined: RefCell<Vec<QuarantinedEvent>>,
    pub consent: RefCell<Vec<ConsentRecord>>,
    pub counts: RefCell<BTreeMap<(String, String), Counts>>,
    /// When set, every call fails with this message.
    pub fail_with: RefCell<Option<String>>,
    /// Erasure jobs in progress, and receipts of finished ones.
    pub jobs: RefCell<Vec<crate::erasure::Job>>,
    pub receipts: RefCell<Vec<(String, crate::erasure::Deleted)>>,
    /// When set, the next erasure fails after deleting the events (a crash mid-way).
    pub fail_erase_once: std::cell::Cell<bool>,
    /// Conversion credits (attribution), as `recredit` leaves them.
    pub credits: RefCell<Vec<crate::attribution::Credit>>,
    /// Segment membership: `(write_key, profile, segment)`.
    pub members: RefCell<Vec<(String, String, String)>>,
    /// Recorded segment changes.
    pub changes: RefCell<Vec<(String, crate::segments::Change)>>,
    /// The delivery log, one line per (write key, destination, message id).
    pub deliveries: RefCell<Vec<crate::activation::Delivery>>,
    /// Jobs handed to the delivery queue.
    pub queued: RefCell<Vec<crate::destinations::Job>>,
    /// RFM cut points per write key.
    pub cuts: RefCell<BTreeMap<String, crate::segments::Cuts>>,
}

impl MemoryStore {
    /// The consent log's entries of the profiles' visitors (by anonymous id), oldest
    /// first, as D1's join gives them.
    fn decisions(&self, write_key: &str, profiles: &[String]) -> Vec<crate::activation::Decision> {
        let events = self.events.borrow();
        let mut out: Vec<crate::activation::Decision> = Vec::new();
        for c in self
            .consent
            .borrow()
            .iter()
            .filter(|c| c.write_key == write_key)
        {
            let profile = events.iter().find_map(|e| {
                let p = e.profile_id.as_ref().filter(|p| profiles.contains(p))?;
                (e.write_key == write_key
                    && e.anonymous_id.is_some()
                    && e.anonymous_id == c.anonymous_id)
                    .then(|| p.clone())
            });
            if let Some(profile_id) = profile {
                out.push(crate::activation::Decision {
                    profile_id,
                    timestamp: c.timestamp.clone(),
                    categories: serde_json::from_str(&c.categories).unwrap_or_default(),
                });
            }
        }
        out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        out
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.fail_with.borrow().clone() {
            Some(e) => Err(StoreError(e)),
            None => Ok(()),
        }
    }
}

impl EventStore for MemoryStore {
    async fn insert_events(
        &self,
        events: &[StoredEvent],
        moves: &[(String, String)],
    ) -> Result<Vec<Insert>, StoreError> {
        self.check()?;
        let mut stored = self.events.borrow_mut();
        let out = events
            .iter()
            .map(|e| {
                let first = stored
                    .iter()
                    .find(|s| s.write_key == e.write_key && s.message_id == e.message_id)
                    .map(|s| s.fingerprint.clone());
                match first {
                    None => {
                        stored.push(e.clone());
                        Insert::Stored
                    }
                    Some(f) => crate::store::repeat(&f, &e.fingerprint),
                }
            })
            .collect();
        let mut members = self.members.borrow_mut();
        for (from, to) in moves {
            for e in stored.iter_mut() {
                if e.profile_id.as_deref() == Some(from) {
                    e.profile_id = Some(to.clone());
                }
            }
            for m in members.iter_mut().filter(|m| m.1 == *from) {
                m.1 = to.clone();
            }
        }
        members.sort();
        members.dedup();
        Ok(out)
    }

    async fn quarantine(&self, events: &[QuarantinedEvent]) -> Result<(), StoreError> {
        self.check()?;
        let mut q = self.quarantined.borrow_mut();
        for e in events {
            if !q.iter().any(|x| x.qkey == e.qkey) {
                q.push(e.clone());
            }
        }
        Ok(())
    }

    async fn append_consent(&self, records: &[ConsentRecord]) -> Result<(), StoreError> {
        self.check()?;
        let mut log = self.consent.borrow_mut();
        for r in records {
            if !log
                .iter()
                .any(|x| x.write_key == r.write_key && x.message_id == r.message_id)
            {
                log.push(r.clone());
            }
        }
        Ok(())
    }

    async fn recredit(
        &self,
        write_key: &str,
        config: &crate::attribution::AttributionConfig,
        profiles: &[String],
    ) -> Result<usize, StoreError> {
        use crate::attribution::{credit_profiles, History};
        self.check()?;
        let events = self.events.borrow();
        let mine: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| e.write_key == write_key)
            .filter(|e| e.profile_id.as_ref().is_some_and(|p| profiles.contains(p)))
            .collect();
        let mut history = History::default();
        for e in &mine {
            let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap_or_default();
            history.add(
                &e.message_id,
                e.profile_id.as_deref().unwrap_or_default(),
                e.kind,
                e.event.as_deref(),
                &e.timestamp,
                e.anonymous_id.as_deref(),
                &payload,
                config,
            );
        }
        let ids: Vec<&str> = mine.iter().map(|e| e.message_id.as_str()).collect();
        let mut credits = self.credits.borrow_mut();
        credits.retain(|c| {
            !(profiles.contains(&c.profile_id) || ids.contains(&c.message_id.as_str()))
        });
        credits.extend(credit_profiles(history, config));
        Ok(credits
            .iter()
            .filter(|c| profiles.contains(&c.profile_id))
            .count())
    }

    async fn profile_facts(
        &self,
        write_key: &str,
        names: &[String],
        profiles: &[String],
        rebuild: &[String],
    ) -> Result<crate::activation::ProfileFacts, StoreError> {
        self.check()?;
        let mut rows: Vec<crate::activation::Row> = Vec::new();
        for e in self.events.borrow().iter() {
            let Some(p) = e.profile_id.as_ref().filter(|p| rebuild.contains(p)) else {
                continue;
            };
            let named = e.event.as_ref().is_some_and(|n| names.contains(n));
            if e.write_key != write_key || e.kind == "identify" || !named {
                continue;
            }
            let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap_or_default();
            rows.push(crate::activation::Row {
                profile_id: p.clone(),
                message_id: e.message_id.clone(),
                kind: e.kind.to_string(),
                event: e.event.clone(),
                timestamp: e.timestamp.clone(),
                data: payload.get("properties").cloned().unwrap_or_default(),
            });
        }
        rows.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        // Each profile's newest `MAX_FACTS`, as the D1 read keeps them.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut keep: Vec<bool> = vec![false; rows.len()];
        for (i, r) in rows.iter().enumerate().rev() {
            let n = seen.entry(r.profile_id.clone()).or_default();
            *n += 1;
            keep[i] = *n <= crate::activity::MAX_FACTS;
        }
        let mut kept = keep.into_iter();
        rows.retain(|_| kept.next().unwrap_or(false));
        let members = self
            .members
            .borrow()
            .iter()
            .filter(|(k, p, _)| k == write_key && profiles.contains(p))
            .map(|(_, p, s)| (p.clone(), s.clone()))
            .collect();
        let cuts = self
            .cuts
            .borrow()
            .get(write_key)
            .cloned()
            .unwrap_or_default();
        Ok(crate::activation::ProfileFacts {
            rows,
            members,
            cuts,
            decisions: self.decisions(write_key, profiles),
        })
    }

    async fn save_activation(
        &self,
        write_key: &str,
        o: &crate::activation::Outcome,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut members = self.members.borrow_mut();
        for s in &o.scored {
            members.retain(|(k, p, _)| !(k == write_key && *p == s.profile_id));
            members.extend(
                s.members
                    .iter()
                    .map(|m| (write_key.to_string(), s.profile_id.clone(), m.clone())),
            );
            let mut changes = self.changes.borrow_mut();
            for c in &s.changes {
                if !changes.iter().any(|(_, x)| x.message_id == c.message_id) {
                    changes.push((write_key.to_string(), c.clone()));
                }
            }
        }
        let mut log = self.deliveries.borrow_mut();
        for d in &o.log {
            let same = |x: &crate::activation::Delivery| {
                x.write_key == d.write_key
                    && x.destination == d.destination
                    && x.message_id == d.message_id
            };
            match log.iter_mut().find(|x| same(x)) {
                Some(x) if !x.status.is_final() => *x = d.clone(),
                Some(_) => {}
                None => log.push(d.clone()),
            }
        }
        Ok(())
    }

    async fn queue_jobs(&self, jobs: &[crate::destinations::Job]) -> Result<(), StoreError> {
        self.check()?;
        self.queued.borrow_mut().extend(jobs.iter().cloned());
        Ok(())
    }

    async fn add_counts(&self, c: &Counts) -> Result<(), StoreError> {
        self.check()?;
        let mut all = self.counts.borrow_mut();
        let t = all
            .entry((c.write_key.clone(), c.day.clone()))
            .or_insert_with(|| Counts {
                write_key: c.write_key.clone(),
                day: c.day.clone(),
                ..Counts::default()
            });
        t.received += c.received;
        t.accepted += c.accepted;
        t.duplicates += c.duplicates;
        t.quarantined += c.quarantined;
        t.refused += c.refused;
        t.identified += c.identified;
        t.bots += c.bots;
        Ok(())
    }
}

impl crate::erasure::ErasureStore for MemoryStore {
    async fn pending_job(
        &self,
        write_key: &str,
        profile: &str,
    ) -> Result<Option<crate::erasure::Job>, StoreError> {
        Ok(self
            .jobs
            .borrow()
            .iter()
            .find(|j| j.write_key == write_key && j.profile_id == profile)
            .cloned())
    }
    async fn begin(&self, job: &crate::erasure::Job) -> Result<(), StoreError> {
        self.check()?;
        self.jobs.borrow_mut().push(job.clone());
        Ok(())
    }
    async fn erase(
        &self,
        key: &str,
        s: &crate::erasure::Subjects,
    ) -> Result<crate::erasure::Deleted, StoreError> {
        self.check()?;
        let mut d = crate::erasure::Deleted::default();
        let has =
            |v: &Option<String>, list: &[String]| v.as_ref().is_some_and(|x| list.contains(x));
        self.events.borrow_mut().retain(|e| {
            let hit = e.write_key == key
                && (has(&e.profile_id, &s.profile_ids)
                    || has(&e.anonymous_id, &s.anonymous_ids)
                    || has(&e.user_id, &s.user_ids));
            d.events += u64::from(hit);
            !hit
        });
        if self.fail_erase_once.replace(false) {
            return Err(StoreError("crashed mid-erasure".into()));
        }
        self.credits
            .borrow_mut()
            .retain(|c| !s.profile_ids.contains(&c.profile_id));
        let theirs = |p: &String| s.profile_ids.contains(p);
        self.members
            .borrow_mut()
            .retain(|(k, p, _)| !(k == key && theirs(p)));
        self.changes
            .borrow_mut()
            .retain(|(k, c)| !(k == key && theirs(&c.profile_id)));
        self.deliveries
            .borrow_mut()
            .retain(|x| !(x.write_key == key && x.profile_id.as_ref().is_some_and(theirs)));
        self.queued
            .borrow_mut()
            .retain(|j| !(j.write_key == key && j.profile_id.as_ref().is_some_and(theirs)));
        self.quarantined.borrow_mut().retain(|q| {
            let subjects: Vec<String> = serde_json::from_str(&q.subjects).unwrap_or_default();
            let hit = q.write_key == key
                && (has(&q.anonymous_id, &s.anonymous_ids)
                    || has(&q.user_id, &s.user_ids)
                    || subjects.iter().any(|v| s.values.contains(v)));
            d.quarantined += u64::from(hit);
            !hit
        });
        self.consent.borrow_mut().retain(|c| {
            let hit = c.write_key == key
                && (has(&c.anonymous_id, &s.anonymous_ids) || has(&c.user_id, &s.user_ids));
            d.consent_entries += u64::from(hit);
            !hit
        });
        Ok(d)
    }
    async fn finish(
        &self,
        job: &crate::erasure::Job,
        deleted: &crate::erasure::Deleted,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.jobs
            .borrow_mut()
            .retain(|j| !(j.write_key == job.write_key && j.profile_id == job.profile_id));
        self.receipts
            .borrow_mut()
            .push((job.profile_id.clone(), *deleted));
        Ok(())
    }
}

/// Splits `items` into runs of at most `max_count` items and `max_bytes` bytes (by
/// `size`); an item larger than `max_bytes` goes alone.
pub fn chunks_by_size<T>(
    items: &[T],
    size: impl Fn(&T) -> usize,
    max_count: usize,
    max_bytes: usize,
) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= max_count || bytes + n > max_bytes) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The outcome of each row of one insert batch, from whether the row was written and
/// the fingerprints the store held for those messageIds before the batch. A row not
/// written repeats an earlier one: of the batch (another visitor's event earlier in the
/// same request) or of the store.
pub fn outcomes(
    events: &[StoredEvent],
    written: &[bool],
    before: &std::collections::HashMap<String, String>,
) -> Vec<Insert> {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    events
        .iter()
        .zip(written)
        .map(|(e, &w)| {
            let first = seen
                .get(e.message_id.as_str())
                .copied()
                .or_else(|| before.get(&e.message_id).map(String::as_str));
            if w {
                seen.insert(&e.message_id, &e.fingerprint);
                return Insert::Stored;
            }
            repeat(first.unwrap_or_default(), &e.fingerprint)
        })
        .collect()
}

/// Joins the hot window's outcomes with the lake's: an event the lake did not take
/// failed (its claim is released and the retry sends it again); a conflict was never
/// offered to the lake.
pub fn with_lake(d1: Vec<Insert>, lake: &[Insert]) -> Vec<Insert> {
    let mut lake = lake.iter();
    d1.into_iter()
        .map(|o| match o {
            Insert::Stored | Insert::Duplicate => match lake.next() {
                Some(Insert::Failed) | None => Insert::Failed,
                _ => o,
            },
            other => other,
        })
        .collect()
}

/// Sends chunks in order until one fails: the events of sent chunks are `Stored`, those
/// of the failed chunk and every later one `Failed` (not sent, so a retry sends only
/// them and nothing twice).
pub async fn send_chunks<'a, T, F, Fut>(chunks: &[&'a [T]], mut send: F) -> Vec<Insert>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut out = Vec::new();
    let mut failed = false;
    for chunk in chunks {
        failed = failed || !send(chunk).await;
        let outcome = if failed {
            Insert::Failed
        } else {
            Insert::Stored
        };
        out.extend(std::iter::repeat_n(outcome, chunk.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    fn ev(id: &str, fp: &str) -> super::StoredEvent {
        super::StoredEvent {
            write_key: "wk".into(),
            message_id: id.into(),
            kind: "track",
            payload: "{}".into(),
            fingerprint: fp.into(),
            ..Default::default()
        }
    }

    #[test]
    fn unwritten_rows_are_retries_or_conflicts_by_fingerprint() {
        use super::{outcomes, with_lake, Insert};
        let before = [
            ("old".to_string(), "f0".to_string()),
            ("legacy".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        let events = [
            ev("new", "f1"),
            ev("old", "f0"),
            ev("old", "fX"),
            ev("new", "f2"),
            ev("legacy", "f9"),
        ];
        let out = outcomes(&events, &[true, false, false, false, false], &before);
        let conflict = |f: &str| Insert::Conflict { first: f.into() };
        assert_eq!(
            out,
            vec![
                Insert::Stored,
                Insert::Duplicate,
                conflict("f0"),
                conflict("f1"),
                Insert::Duplicate
            ]
        );
        // The lake took the first two offered (Stored, Duplicate) and failed the rest.
        let lake = [Insert::Stored, Insert::Stored, Insert::Failed];
        assert_eq!(
            with_lake(out, &lake),
            vec![
                Insert::Stored,
                Insert::Duplicate,
                conflict("f0"),
                conflict("f1"),
                Insert::Failed
            ]
        );
    }

    #[test]
    fn an_archive_line_carries_the_columns_and_the_payload_as_an_object() {
        let e = super::StoredEvent {
            write_key: "wk".into(),
            message_id: "m1".into(),
            kind: "track",
            event: Some("Viewed".into()),
            anonymous_id: Some("a1".into()),
            user_id: None,
            profile_id: Some("p_1".into()),
            identified: false,
            bot: false,
            timestamp: "2026-11-24T10:00:00.000Z".into(),
            received_at: "2026-11-24T10:00:01.000Z".into(),
            payload: r#"{"type":"track","properties":{"n":1,"s":"a\"b"}}"#.into(),
            fingerprint: "f1".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&e.archive_line()).unwrap();
        let mut empty = e.clone();
        empty.payload.clear();
        let none: serde_json::Value = serde_json::from_str(&empty.archive_line()).unwrap();
        assert_eq!(none["payload"], serde_json::Value::Null);
        assert_eq!(none["messageId"], "m1");
        let old = serde_json::json!({
            "writeKey": "wk", "messageId": "m1", "type": "track", "event": "Viewed",
            "anonymousId": "a1", "userId": null, "profileId": "p_1", "identified": false,
            "bot": false, "timestamp": "2026-11-24T10:00:00.000Z",
            "receivedAt": "2026-11-24T10:00:01.000Z",
            "payload": {"type": "track", "properties": {"n": 1, "s": "a\"b"}},
        });
        assert_eq!(
            v, old,
            "the same line as parsing the payload and writing it again"
        );
    }
    use super::{chunks_by_size, send_chunks, Insert};

    #[test]
    fn a_failed_chunk_and_later_ones_are_not_sent() {
        let items: Vec<u32> = (0..7).collect();
        let chunks = chunks_by_size(&items, |_| 1, 3, 100);
        let mut sent = Vec::new();
        let out = pollster::block_on(send_chunks(&chunks, |c| {
            sent.push(c.to_vec());
            let ok = sent.len() == 1;
            async move { ok }
        }));
        assert_eq!(
            sent,
            vec![vec![0, 1, 2], vec![3, 4, 5]],
            "nothing after the failure"
        );
        assert_eq!(
            out,
            [vec![Insert::Stored; 3], vec![Insert::Failed; 4]].concat()
        );
    }

    #[test]
    fn chunks_respect_count_and_bytes() {
        let items: Vec<usize> = vec![100, 100, 100, 300, 50, 50, 50];
        let c = chunks_by_size(&items, |n| *n, 3, 300);
        let sums: Vec<usize> = c.iter().map(|c| c.iter().sum()).collect();
        assert_eq!(sums, [300, 300, 150]);
        assert!(c.iter().all(|c| c.len() <= 3));
        let c = chunks_by_size(&items, |n| *n, 2, 10_000);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), [2, 2, 2, 1]);
        assert!(chunks_by_size(&[] as &[usize], |n| *n, 2, 10).is_empty());
    }
}
