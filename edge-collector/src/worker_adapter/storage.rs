//! Storage on Cloudflare: D1 for clean events (by default), the quarantine, the consent
//! log and daily counters; or, for a source with `"storage": "r2"`, clean events sent
//! through a Queue whose consumer writes batched NDJSON objects to R2.

use crate::sources::{Sources, Storage};
use crate::store::{
    ConsentRecord, Counts, EventStore, Insert, QuarantinedEvent, StoreError, StoredEvent,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::*;

pub fn opt(v: &Option<String>) -> JsValue {
    v.as_deref().map(JsValue::from_str).unwrap_or(JsValue::NULL)
}

fn err(e: Error) -> StoreError {
    StoreError(e.to_string())
}

pub struct CloudStore<'a> {
    pub db: D1Database,
    /// The queue to R2, when the worker has one bound.
    pub queue: Option<Queue>,
    /// Each event's source says where its clean events go.
    pub sources: &'a Sources,
}

impl<'a> CloudStore<'a> {
    pub fn new(env: &Env, sources: &'a Sources) -> Result<Self> {
        Ok(CloudStore {
            db: env.d1("DB")?,
            queue: env.queue("EVENTS_QUEUE").ok(),
            sources,
        })
    }

    /// The queue, when these events' source stores in R2 (all events of one request
    /// share a source).
    fn r2_queue(&self, write_key: &str) -> std::result::Result<Option<&Queue>, StoreError> {
        match self.sources.get(write_key).map(|s| s.storage) {
            Some(Storage::R2) => self.queue.as_ref().map(Some).ok_or_else(|| {
                StoreError("the source stores in R2 but EVENTS_QUEUE is not bound".into())
            }),
            _ => Ok(None),
        }
    }

    /// Runs one statement per row in a single D1 batch (one round trip, one transaction).
    async fn run_batch(
        &self,
        sql: &str,
        rows: impl Iterator<Item = Vec<JsValue>>,
    ) -> std::result::Result<Vec<D1Result>, StoreError> {
        let stmts = rows
            .map(|args| self.db.prepare(sql).bind(&args))
            .collect::<Result<Vec<_>>>()
            .map_err(err)?;
        if stmts.is_empty() {
            return Ok(Vec::new());
        }
        self.db.batch(stmts).await.map_err(err)
    }
}

/// One clean event on its way to R2.
#[derive(Debug, Serialize, Deserialize)]
pub struct Archived {
    pub write_key: String,
    pub received_at: String,
    /// One NDJSON line: the stored event with its columns and payload.
    pub line: String,
}

impl EventStore for CloudStore<'_> {
    async fn insert_events(
        &self,
        events: &[StoredEvent],
    ) -> std::result::Result<Vec<Insert>, StoreError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        if let Some(queue) = self.r2_queue(&first.write_key)? {
            // Dedup already happened in the Durable Objects. Queues deliver at least
            // once: a batch delivered again with the same messages rewrites the same
            // object (its name is a hash of its lines); every line carries its messageId
            // for loaders to drop a repeat across objects.
            let msgs: Vec<Archived> = events
                .iter()
                .map(|e| {
                    let mut line = serde_json::to_value(e).unwrap_or_default();
                    if let Some(obj) = line.as_object_mut() {
                        let payload = serde_json::from_str(&e.payload).unwrap_or_default();
                        obj.insert("payload".into(), payload);
                    }
                    Archived {
                        write_key: e.write_key.clone(),
                        received_at: e.received_at.clone(),
                        line: line.to_string(),
                    }
                })
                .collect();
            for chunk in msgs.chunks(50) {
                let batch: Vec<&Archived> = chunk.iter().collect();
                queue.send_batch(batch).await.map_err(err)?;
            }
            return Ok(vec![Insert::Stored; events.len()]);
        }
        let rows = events.iter().map(|e| {
            vec![
                e.write_key.as_str().into(),
                e.message_id.as_str().into(),
                e.kind.into(),
                opt(&e.event),
                opt(&e.anonymous_id),
                opt(&e.user_id),
                opt(&e.profile_id),
                JsValue::from(i32::from(e.identified)),
                JsValue::from(i32::from(e.bot)),
                e.timestamp.as_str().into(),
                e.received_at.as_str().into(),
                e.payload.as_str().into(),
            ]
        });
        let results = self
            .run_batch(
                "INSERT INTO events (write_key, message_id, type, event, anonymous_id, user_id, \
                 profile_id, identified, bot, timestamp, received_at, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (write_key, message_id) DO NOTHING",
                rows,
            )
            .await?;
        results
            .iter()
            .map(|r| {
                let meta = r.meta().map_err(err)?;
                let changes = meta.and_then(|m| m.changes).unwrap_or(0);
                Ok(if changes > 0 {
                    Insert::Stored
                } else {
                    Insert::Duplicate
                })
            })
            .collect()
    }

    async fn quarantine(&self, events: &[QuarantinedEvent]) -> std::result::Result<(), StoreError> {
        let rows = events.iter().map(|q| {
            vec![
                q.write_key.as_str().into(),
                opt(&q.message_id),
                opt(&q.anonymous_id),
                q.reason.as_str().into(),
                q.reasons.as_str().into(),
                q.payload.as_str().into(),
                q.received_at.as_str().into(),
            ]
        });
        self.run_batch(
            "INSERT INTO quarantine (write_key, message_id, anonymous_id, reason, reasons, \
             payload, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rows,
        )
        .await
        .map(|_| ())
    }

    async fn append_consent(
        &self,
        records: &[ConsentRecord],
    ) -> std::result::Result<(), StoreError> {
        let rows = records.iter().map(|c| {
            vec![
                c.write_key.as_str().into(),
                c.message_id.as_str().into(),
                opt(&c.anonymous_id),
                opt(&c.user_id),
                c.categories.as_str().into(),
                c.source.as_str().into(),
                JsValue::from(i32::from(c.gpc)),
                c.timestamp.as_str().into(),
                c.received_at.as_str().into(),
            ]
        });
        self.run_batch(
            "INSERT INTO consent_log (write_key, message_id, anonymous_id, user_id, categories, \
             source, gpc, timestamp, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (write_key, message_id) DO NOTHING",
            rows,
        )
        .await
        .map(|_| ())
    }

    async fn repoint_profiles(
        &self,
        write_key: &str,
        moves: &[(String, String)],
    ) -> std::result::Result<(), StoreError> {
        // The R2 archive is immutable: its loaders follow the merge log instead.
        if self.r2_queue(write_key)?.is_some() {
            return Ok(());
        }
        let rows = moves
            .iter()
            .map(|(from, to)| vec![to.as_str().into(), write_key.into(), from.as_str().into()]);
        self.run_batch(
            "UPDATE events SET profile_id = ?1 WHERE write_key = ?2 AND profile_id = ?3",
            rows,
        )
        .await
        .map(|_| ())
    }

    async fn add_counts(&self, c: &Counts) -> std::result::Result<(), StoreError> {
        let n = |v: u32| JsValue::from(v);
        let row = vec![
            c.write_key.as_str().into(),
            c.day.as_str().into(),
            n(c.received),
            n(c.accepted),
            n(c.duplicates),
            n(c.quarantined),
            n(c.refused),
            n(c.identified),
            n(c.bots),
        ];
        self.run_batch(
            "INSERT INTO daily_counts (write_key, day, received, accepted, duplicates, \
             quarantined, refused, identified, bots) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (write_key, day) DO UPDATE SET received = received + excluded.received, \
             accepted = accepted + excluded.accepted, duplicates = duplicates + excluded.duplicates, \
             quarantined = quarantined + excluded.quarantined, refused = refused + excluded.refused, \
             identified = identified + excluded.identified, bots = bots + excluded.bots",
            std::iter::once(row),
        )
        .await
        .map(|_| ())
    }
}

/// The queue consumer: one NDJSON object per write key and day for each delivered
/// batch, named after a hash of its lines so a redelivery overwrites instead of
/// duplicating.
pub async fn archive(batch: MessageBatch<Archived>, env: &Env) -> Result<()> {
    let bucket = env.bucket("ARCHIVE")?;
    let mut groups: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for m in batch.messages()? {
        let a = m.into_body();
        let day = a.received_at.get(..10).unwrap_or("unknown").to_string();
        groups.entry((a.write_key, day)).or_default().push(a.line);
    }
    for ((key, day), mut lines) in groups {
        lines.sort();
        let body = lines.join("\n") + "\n";
        let name = tracking_plan::identifiers::sha256_hex(&body);
        let object = format!("events/{key}/{day}/{}.ndjson", &name[..32]);
        bucket.put(object, body.into_bytes()).execute().await?;
    }
    Ok(())
}
