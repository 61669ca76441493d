//! Erasure: decides what erasing a person removes and in which order, so that it is
//! exact (only what belongs to the profile now, never a profile unmerged from it),
//! complete (events, quarantine rows found by any linked identifier, consent rows, R2
//! lines, events still queued for R2, the graph's identifiers, merges, conflicts) and
//! resumable (a job is recorded before anything is deleted; a retry after a partial
//! failure finds the job and finishes it). The answer says what remains and why.

use crate::error::Error;
use crate::identity::{Erased, IdKind, IdentityService};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What to look for in stored data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Subjects {
    pub profile_ids: Vec<String>,
    pub anonymous_ids: Vec<String>,
    pub user_ids: Vec<String>,
    /// Every identifier value (ids and hashed emails and phones).
    pub values: Vec<String>,
}

impl From<&Erased> for Subjects {
    fn from(e: &Erased) -> Self {
        let pick = |k: IdKind| {
            e.identifiers
                .iter()
                .filter(|i| i.kind == k)
                .map(|i| i.value.clone())
                .collect::<Vec<_>>()
        };
        Subjects {
            profile_ids: e.profile_ids.clone(),
            anonymous_ids: pick(IdKind::Anonymous),
            user_ids: pick(IdKind::UserId),
            values: e.identifiers.iter().map(|i| i.value.clone()).collect(),
        }
    }
}

impl Subjects {
    /// Whether a stored event (an R2 line or a queued message: its columns as JSON)
    /// belongs to the subjects.
    pub fn matches(&self, line: &Value) -> bool {
        let field = |k: &str| line.get(k).and_then(Value::as_str);
        field("profileId").is_some_and(|p| self.profile_ids.iter().any(|x| x == p))
            || field("anonymousId").is_some_and(|a| self.anonymous_ids.iter().any(|x| x == a))
            || field("userId").is_some_and(|u| self.user_ids.iter().any(|x| x == u))
    }
}

/// One erasure request, recorded before any data is deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub write_key: String,
    pub profile_id: String,
    pub subjects: Subjects,
    pub plan: Erased,
    pub started_at: String,
}

/// How much was deleted where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub events: u64,
    pub quarantined: u64,
    pub consent_entries: u64,
    pub archived_events: u64,
}

/// What an erasure leaves behind on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Remain {
    /// Write key, messageId and a content hash per erased event, for 14 days: they
    /// stop a late retry from storing the event again. No identifier.
    DedupEntries,
    /// Totals per source and day, with no identifier.
    DailyCounters,
    /// A digest of each erased identifier, kept while events may still be queued for
    /// R2, so the queue consumer drops them.
    QueueTombstones,
    /// The job's receipt (profile id, time, counts), the proof the request was honoured.
    Receipt,
}

/// The answer to an erasure request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub profile_id: String,
    pub profiles: Vec<String>,
    pub identifiers: usize,
    pub deleted: Deleted,
    /// This call finished a job a failed call had started.
    pub resumed: bool,
    pub remains: Vec<Remain>,
}

/// Where erasure deletes. `begin` records the job, `erase` deletes every stored copy
/// matching the subjects (and leaves queue tombstones), `finish` replaces the job by its
/// receipt. Each is idempotent.
#[allow(async_fn_in_trait)]
pub trait ErasureStore {
    async fn pending_job(&self, write_key: &str, profile: &str) -> Result<Option<Job>, StoreError>;
    async fn begin(&self, job: &Job) -> Result<(), StoreError>;
    async fn erase(&self, write_key: &str, subjects: &Subjects) -> Result<Deleted, StoreError>;
    async fn finish(&self, job: &Job, deleted: &Deleted) -> Result<(), StoreError>;
}

/// Erases one profile, or finishes the job a failed call left.
pub async fn erase_profile<S: ErasureStore, I: IdentityService>(
    store: &S,
    identity: &I,
    write_key: &str,
    profile: &str,
    now: &str,
) -> Result<Report, Error> {
    let (job, resumed) = match store.pending_job(write_key, profile).await? {
        Some(job) => (job, true),
        None => {
            let plan = identity
                .erasure_plan(write_key, profile)
                .await?
                .ok_or(Error::NoSuchProfile)?;
            let job = Job {
                write_key: write_key.to_string(),
                profile_id: profile.to_string(),
                subjects: Subjects::from(&plan),
                plan,
                started_at: now.to_string(),
            };
            store.begin(&job).await?;
            (job, false)
        }
    };
    let deleted = store.erase(write_key, &job.subjects).await?;
    identity.erase(write_key, &job.plan).await?;
    store.finish(&job, &deleted).await?;
    Ok(Report {
        profile_id: job.profile_id.clone(),
        profiles: job.plan.profile_ids.clone(),
        identifiers: job.plan.identifiers.len(),
        deleted,
        resumed,
        remains: vec![
            Remain::DedupEntries,
            Remain::DailyCounters,
            Remain::QueueTombstones,
            Remain::Receipt,
        ],
    })
}
