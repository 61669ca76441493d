//! Storage on Cloudflare: every clean event goes to D1's hot window and, through a
//! Queue, to the R2 lake (gzip NDJSON objects laid out by `crate::lake`); D1 also holds
//! the quarantine, the consent log and daily counters.

use crate::erasure::{Deleted, ErasureStore, Job, Subjects};
use crate::store::{
    ConsentRecord, Counts, EventStore, Insert, QuarantinedEvent, StoreError, StoredEvent,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::*;

/// A Queue's `sendBatch` limit in bytes.
const QUEUE_BATCH_BYTES: usize = 256 * 1024;
/// How long erasure tombstones stay: longer than a message can wait in the queue.
const TOMBSTONE_DAYS: u32 = 7;

pub fn opt(v: &Option<String>) -> JsValue {
    v.as_deref().map(JsValue::from_str).unwrap_or(JsValue::NULL)
}

fn err(e: Error) -> StoreError {
    StoreError(e.to_string())
}

pub struct CloudStore {
    pub db: D1Database,
    /// The R2 archive, when bound.
    pub bucket: Option<Bucket>,
    /// The queue to R2, when the worker has one bound.
    pub queue: Option<Queue>,
    /// The destinations' delivery queue, when bound.
    pub deliveries: Option<Queue>,
    /// Subrequests made (D1 batches, Queue sends), for the request's report.
    pub calls: super::Calls,
    /// The identity graph's objects per source (`IDENTITY_SHARDS`), recorded with a
    /// source's first stored events in each isolate (`identity_layouts`).
    pub identity_shards: u32,
}

std::thread_local! {
    /// The (source, layout) pairs this isolate has recorded in `identity_layouts`.
    static LAYOUTS_RECORDED: std::cell::RefCell<Vec<(String, u32)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl CloudStore {
    pub fn new(env: &Env) -> Result<Self> {
        Ok(CloudStore {
            db: env.d1("DB")?,
            calls: super::Meter::start(),
            bucket: env.bucket("ARCHIVE").ok(),
            queue: env.queue("EVENTS_QUEUE").ok(),
            deliveries: env.queue("DELIVERIES").ok(),
            identity_shards: super::objects::identity_shards(env),
        })
    }

    fn lake(&self) -> std::result::Result<&Queue, StoreError> {
        self.queue.as_ref().ok_or_else(|| {
            StoreError("EVENTS_QUEUE (the queue to the R2 lake) is not bound".into())
        })
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
        self.calls
            .io(super::Io::D1, self.db.batch(stmts))
            .await
            .map_err(err)
    }
}

/// Clean events on their way to R2, several to a queue message (`crate::lake::PACK_BYTES`):
/// with a message each, a server batch of 2,500 events from 2,500 users took 25 or more
/// `sendBatch` calls and made 60 subrequests in all, past the free plan's 50; packed, 45
/// (both measured under `make dev`).
#[derive(Serialize)]
struct Pack<'a> {
    events: &'a [Archived],
}

/// One clean event on its way to R2.
#[derive(Debug, Serialize, Deserialize)]
pub struct Archived {
    pub write_key: String,
    /// The row the consumer marks archived in D1 (empty in messages sent before the
    /// outbox: their rows count as archived already).
    #[serde(default)]
    pub message_id: String,
    pub received_at: String,
    /// One NDJSON line: the stored event with its columns and payload.
    pub line: String,
}

impl EventStore for CloudStore {
    /// The hot window first (it tells retries from another visitor's reuse of a
    /// messageId), then the lake for every event that is not a conflict. An event D1
    /// already held but whose claim was new again is offered to the lake once more: the
    /// request that stored it may have died before its queue send. So a crash can leave
    /// a line twice in the lake (every line carries its messageId); it never loses one.
    async fn insert_events(
        &self,
        events: &[StoredEvent],
        moves: &[(String, String)],
    ) -> std::result::Result<Vec<Insert>, StoreError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let queue = self.lake()?;
        let d1 = self.insert_hot(first, events, moves).await?;
        let msgs: Vec<Archived> = events
            .iter()
            .zip(&d1)
            .filter(|(_, o)| matches!(o, Insert::Stored | Insert::Duplicate))
            .map(|(e, _)| Archived {
                write_key: e.write_key.clone(),
                message_id: e.message_id.clone(),
                received_at: e.received_at.clone(),
                line: e.archive_line(),
            })
            .collect();
        // A `sendBatch` of at most 256 KB, in packs of at most `PACK_BYTES` (a message
        // takes 128 KB; a `sendBatch` 100 messages, which 256 KB of packs never reach).
        // Each sent chunk's events are stored; a failed chunk's (and later ones') are
        // `Failed`, so only their claims are released and a retry sends only them.
        let size = |m: &Archived| crate::lake::queued_size(&m.line, &m.write_key, &m.message_id);
        let chunks = crate::store::chunks_by_size(&msgs, size, usize::MAX, QUEUE_BATCH_BYTES);
        let lake = crate::store::send_chunks(&chunks, |chunk| async move {
            let packs: Vec<Pack<'_>> =
                crate::store::chunks_by_size(chunk, size, usize::MAX, crate::lake::PACK_BYTES)
                    .into_iter()
                    .map(|events| Pack { events })
                    .collect();
            self.calls
                .io(super::Io::Queue, queue.send_batch(packs))
                .await
                .is_ok()
        })
        .await;
        Ok(crate::store::with_lake(d1, &lake))
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
                opt(&q.user_id),
                q.qkey.as_str().into(),
                q.subjects.as_str().into(),
                q.edge.as_str().into(),
            ]
        });
        self.run_batch(
            "INSERT INTO quarantine (write_key, message_id, anonymous_id, reason, reasons, \
             payload, received_at, user_id, qkey, subjects, edge) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (qkey) DO NOTHING",
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
                c.evidence.as_str().into(),
            ]
        });
        self.run_batch(
            "INSERT INTO consent_log (write_key, message_id, anonymous_id, user_id, categories, \
             source, gpc, timestamp, received_at, evidence) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (write_key, message_id) DO NOTHING",
            rows,
        )
        .await
        .map(|_| ())
    }

    /// One D1 batch reads the profiles' page views and conversions (only the fields
    /// attribution reads), one writes their credits in place of the old ones.
    async fn recredit(
        &self,
        write_key: &str,
        config: &crate::attribution::AttributionConfig,
        profiles: &[String],
    ) -> std::result::Result<usize, StoreError> {
        use crate::attribution::{credit_profiles, History};
        let names: Vec<&str> = config
            .conversions
            .iter()
            .map(|c| c.event.as_str())
            .collect();
        let read = self
            .db
            .prepare(
                "SELECT message_id, profile_id, type, event, timestamp, anonymous_id, \
                 json_object('context', json_object('sessionId', payload ->> '$.context.sessionId', \
                 'campaign', payload -> '$.context.campaign', 'clickIds', payload -> '$.context.clickIds', \
                 'page', json_object('referrer', payload ->> '$.context.page.referrer', \
                 'url', payload ->> '$.context.page.url')), \
                 'properties', CASE WHEN type = 'page' THEN NULL ELSE payload -> '$.properties' END) AS payload \
                 FROM events WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2)) \
                 AND (type = 'page' OR event IN (SELECT value FROM json_each(?3))) \
                 ORDER BY timestamp LIMIT 20000",
            )
            .bind(&[write_key.into(), list(profiles), list(&names)])
            .map_err(err)?;
        #[derive(serde::Deserialize)]
        struct Row {
            message_id: String,
            profile_id: String,
            #[serde(rename = "type")]
            kind: String,
            event: Option<String>,
            timestamp: String,
            anonymous_id: Option<String>,
            payload: String,
        }
        let rows: Vec<Row> = self
            .calls
            .io(super::Io::D1, read.all())
            .await
            .and_then(|r| r.results())
            .map_err(err)?;
        let mut history = History::default();
        for r in &rows {
            let payload: serde_json::Value = serde_json::from_str(&r.payload).unwrap_or_default();
            history.add(
                &r.message_id,
                &r.profile_id,
                &r.kind,
                r.event.as_deref(),
                &r.timestamp,
                r.anonymous_id.as_deref(),
                &payload,
                config,
            );
        }
        let ids: Vec<&str> = history
            .conversions
            .iter()
            .map(|c| c.message_id.as_str())
            .collect();
        let ids = list(&ids);
        let credits = credit_profiles(history, config);
        let rows: Vec<serde_json::Value> = credits
            .iter()
            .map(|c| {
                serde_json::json!([
                    c.message_id,
                    c.profile_id,
                    tracking_plan::time::format_rfc3339(c.at_ms),
                    c.model.as_str(),
                    c.window_days,
                    c.channel,
                    c.source,
                    c.medium,
                    c.campaign,
                    c.credit,
                    c.revenue,
                    c.currency
                ])
            })
            .collect();
        let delete = self
            .db
            .prepare(
                "DELETE FROM conversion_credits WHERE write_key = ?1 AND \
                 (profile_id IN (SELECT value FROM json_each(?2)) OR message_id IN (SELECT value FROM json_each(?3)))",
            )
            .bind(&[write_key.into(), list(profiles), ids])
            .map_err(err)?;
        let insert = self
            .db
            .prepare(
                "INSERT INTO conversion_credits (write_key, message_id, profile_id, at, model, \
                 window_days, channel, source, medium, campaign, credit, revenue, currency) \
                 SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                 value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, \
                 value ->> 11 FROM json_each(?2)",
            )
            .bind(&[write_key.into(), list(&rows)])
            .map_err(err)?;
        self.calls
            .io(super::Io::D1, self.db.batch(vec![delete, insert]))
            .await
            .map_err(err)?;
        Ok(credits.len())
    }

    /// One D1 batch: the stale profiles' events of the names read (only their
    /// properties), the profiles' membership and consent-log decisions, and the source's
    /// cut points.
    async fn profile_facts(
        &self,
        write_key: &str,
        names: &[String],
        profiles: &[String],
        rebuild: &[String],
    ) -> std::result::Result<crate::activation::ProfileFacts, StoreError> {
        let (k, p) = (JsValue::from(write_key), list(profiles));
        let bind = |sql: &str, args: &[JsValue]| self.db.prepare(sql).bind(args).map_err(err);
        let stmts = vec![
            bind(
                // Each stale profile's newest events, as many as it keeps facts.
                "SELECT profileId, messageId, type, event, timestamp, data FROM \
                 (SELECT profile_id AS profileId, message_id AS messageId, type, event, timestamp, \
                 payload -> '$.properties' AS data, \
                 row_number() OVER (PARTITION BY profile_id ORDER BY timestamp DESC) AS n FROM events \
                 WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2)) \
                 AND type <> 'identify' AND event IN (SELECT value FROM json_each(?3))) \
                 WHERE n <= ?4 ORDER BY timestamp DESC",
                &[
                    k.clone(),
                    list(rebuild),
                    list(names),
                    (crate::activity::MAX_FACTS as u32).into(),
                ],
            )?,
            // The consent log's entries of the profiles' visitors.
            bind(
                "SELECT e.profile_id AS profile_id, c.timestamp AS timestamp, c.categories AS categories \
                 FROM consent_log c JOIN (SELECT DISTINCT profile_id, anonymous_id FROM events \
                 WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2)) AND anonymous_id IS NOT NULL) e \
                 ON c.anonymous_id = e.anonymous_id WHERE c.write_key = ?1 ORDER BY c.timestamp DESC LIMIT 1000",
                &[k.clone(), p.clone()],
            )?,
            bind(
                "SELECT profile_id, segment FROM segment_members WHERE write_key = ?1 \
                 AND profile_id IN (SELECT value FROM json_each(?2))",
                &[k.clone(), p],
            )?,
            bind("SELECT cuts FROM rfm_cuts WHERE write_key = ?1", &[k])?,
        ];
        let results = self
            .calls
            .io(super::Io::D1, self.db.batch(stmts))
            .await
            .map_err(err)?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawRow {
            profile_id: String,
            message_id: String,
            #[serde(rename = "type")]
            kind: String,
            event: Option<String>,
            timestamp: String,
            data: Option<String>,
        }
        #[derive(Deserialize)]
        struct Member {
            profile_id: String,
            segment: String,
        }
        #[derive(Deserialize)]
        struct CutsRow {
            cuts: String,
        }
        let parse = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default()
        };
        let rows: Vec<RawRow> = results
            .first()
            .map_or(Ok(Vec::new()), |r| r.results())
            .map_err(err)?;
        #[derive(Deserialize)]
        struct DecisionRow {
            profile_id: String,
            timestamp: String,
            categories: String,
        }
        let decisions: Vec<DecisionRow> = results
            .get(1)
            .map_or(Ok(Vec::new()), |r| r.results())
            .map_err(err)?;
        let members: Vec<Member> = results
            .get(2)
            .map_or(Ok(Vec::new()), |r| r.results())
            .map_err(err)?;
        let cuts: Vec<CutsRow> = results
            .get(3)
            .map_or(Ok(Vec::new()), |r| r.results())
            .map_err(err)?;
        Ok(crate::activation::ProfileFacts {
            // The newest 1,000, oldest first.
            decisions: decisions
                .into_iter()
                .rev()
                .map(|d| crate::activation::Decision {
                    profile_id: d.profile_id,
                    timestamp: d.timestamp,
                    categories: serde_json::from_str(&d.categories).unwrap_or_default(),
                })
                .collect(),
            // Oldest first.
            rows: rows
                .into_iter()
                .rev()
                .map(|r| crate::activation::Row {
                    data: parse(&r.data),
                    profile_id: r.profile_id,
                    message_id: r.message_id,
                    kind: r.kind,
                    event: r.event,
                    timestamp: r.timestamp,
                })
                .collect(),
            members: members
                .into_iter()
                .map(|m| (m.profile_id, m.segment))
                .collect(),
            cuts: cuts
                .first()
                .and_then(|c| serde_json::from_str(&c.cuts).ok())
                .unwrap_or_default(),
        })
    }

    /// One D1 batch (one transaction): membership replaced for the scored profiles, the
    /// changes recorded (once, by id), the delivery lines written (a final line kept).
    async fn save_activation(
        &self,
        write_key: &str,
        o: &crate::activation::Outcome,
    ) -> std::result::Result<(), StoreError> {
        let k = JsValue::from(write_key);
        let scored: Vec<&str> = o.scored.iter().map(|s| s.profile_id.as_str()).collect();
        let members: Vec<serde_json::Value> = o
            .scored
            .iter()
            .flat_map(|s| {
                s.members
                    .iter()
                    .map(|m| serde_json::json!([m, s.profile_id]))
            })
            .collect();
        let changes: Vec<serde_json::Value> = o
            .scored
            .iter()
            .flat_map(|s| &s.changes)
            .map(|c| {
                serde_json::json!([
                    c.message_id,
                    c.segment,
                    c.profile_id,
                    c.kind.as_str(),
                    tracking_plan::time::format_rfc3339(c.at_ms)
                ])
            })
            .collect();
        let jobs: std::collections::HashMap<(&str, &str), String> = o
            .jobs
            .iter()
            .map(|j| {
                (
                    (j.destination.as_str(), j.message_id.as_str()),
                    serde_json::to_string(j).unwrap_or_default(),
                )
            })
            .collect();
        let lines: Vec<serde_json::Value> = o
            .log
            .iter()
            .map(|d| {
                let job = jobs.get(&(d.destination.as_str(), d.message_id.as_str()));
                serde_json::json!([
                    d.destination,
                    d.message_id,
                    d.profile_id,
                    d.status.as_str(),
                    d.reason,
                    tracking_plan::time::format_rfc3339(d.at_ms),
                    job
                ])
            })
            .collect();
        let bind = |sql: &str, args: &[JsValue]| self.db.prepare(sql).bind(args).map_err(err);
        let stmts = vec![
            bind(
                "DELETE FROM segment_members WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2)) \
                 AND segment NOT IN (SELECT value ->> 0 FROM json_each(?3) WHERE value ->> 1 = segment_members.profile_id)",
                &[k.clone(), list(&scored), list(&members)],
            )?,
            bind(
                "INSERT INTO segment_members (write_key, segment, profile_id, since) \
                 SELECT ?1, value ->> 0, value ->> 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM json_each(?2) WHERE true \
                 ON CONFLICT DO NOTHING",
                &[k.clone(), list(&members)],
            )?,
            bind(
                "INSERT INTO segment_changes (write_key, message_id, segment, profile_id, change, at) \
                 SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?2) WHERE true \
                 ON CONFLICT DO NOTHING",
                &[k.clone(), list(&changes)],
            )?,
            bind(
                "INSERT INTO deliveries (write_key, destination, message_id, profile_id, status, reason, updated_at, job) \
                 SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6 \
                 FROM json_each(?2) WHERE true ON CONFLICT (write_key, destination, message_id) DO UPDATE SET \
                 status = excluded.status, reason = excluded.reason, updated_at = excluded.updated_at, job = excluded.job \
                 WHERE deliveries.status NOT IN ('delivered', 'rejected', 'skipped', 'dead')",
                &[k, list(&lines)],
            )?,
        ];
        self.calls
            .io(super::Io::D1, self.db.batch(stmts))
            .await
            .map_err(err)
            .map(|_| ())
    }

    async fn queue_jobs(
        &self,
        jobs: &[crate::destinations::Job],
    ) -> std::result::Result<(), StoreError> {
        super::delivery::send_jobs(&self.calls, self.deliveries.as_ref(), jobs).await
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
pub async fn archive(batch: MessageBatch<serde_json::Value>, env: &Env) -> Result<()> {
    let bucket = env.bucket("ARCHIVE")?;
    let db = env.d1("DB")?;
    let mut queued = Vec::new();
    for m in batch.messages()? {
        // A pack, or one event (as messages were sent before packs), told apart by hand
        // and each event read alone; the tombstones below are read as JSON values. With
        // serde's untagged enum, a `Vec` reader, a row struct and a HashMap, this reading
        // was 11,657 bytes more of the worker's wasm (1,962,179 against 1,950,522).
        let mut body = m.into_body();
        let events = match body.get_mut("events").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(events)) => events,
            _ => vec![body],
        };
        for e in events {
            match serde_json::from_value::<Archived>(e) {
                Ok(a) => queued.push(a),
                Err(_) => {
                    console_error!("sightline lake: a message that is not an event was dropped")
                }
            }
        }
    }
    let erased = erased_while_queued(&db, &queued).await?;
    let kept: Vec<Archived> = queued
        .into_iter()
        .zip(erased)
        .filter_map(|(a, erased)| (!erased).then_some(a))
        .collect();
    let lines = kept.iter().map(|a| crate::lake::Line {
        write_key: &a.write_key,
        received_at: &a.received_at,
        line: &a.line,
    });
    put_objects(&bucket, crate::lake::objects(lines)).await?;
    let rows = crate::lake::archived_rows(
        kept.iter()
            .map(|a| (a.write_key.as_str(), a.message_id.as_str())),
    );
    mark_archived(&db, rows).await
}

/// Writes the lake's objects (named and laid out by `crate::lake::objects`), gzipped.
pub async fn put_objects(bucket: &Bucket, objects: Vec<(String, String)>) -> Result<()> {
    for (name, text) in objects {
        bucket
            .put(name, super::gzip::gzip(&text).await?)
            .execute()
            .await?;
    }
    Ok(())
}

/// Marks the rows whose lines are in the lake (`crate::lake::archived_rows`): the
/// outbox's receipt.
pub async fn mark_archived(db: &D1Database, rows: String) -> Result<()> {
    db.prepare(
        "UPDATE events SET archived = 1 WHERE archived = 0 AND (write_key, message_id) IN \
         (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))",
    )
    .bind(&[rows.into()])?
    .run()
    .await?;
    Ok(())
}

/// The tombstone digest of an identifier (never the identifier itself).
fn tombstone(write_key: &str, value: &str) -> String {
    crate::pipeline::short_digest(&["tombstone", write_key, value])
}

/// Which queued events belong to a person erased after they were received
/// (`crate::lake::erased_after`), in one read of the tombstones for all of them: a
/// consumer's batch of 100 messages made 100 reads, past the free plan's 50
/// subrequests.
async fn erased_while_queued(db: &D1Database, events: &[Archived]) -> Result<Vec<bool>> {
    let digests: Vec<Vec<String>> = events
        .iter()
        .map(|a| {
            crate::lake::subjects(&a.line)
                .iter()
                .map(|x| tombstone(&a.write_key, x))
                .collect()
        })
        .collect();
    let mut all: Vec<&String> = digests.iter().flatten().collect();
    all.sort_unstable();
    all.dedup();
    let mut latest = std::collections::BTreeMap::new();
    if !all.is_empty() {
        let rows = db
            .prepare(
                "SELECT digest, MAX(erased_at) AS erased_at FROM erasure_tombstones \
                 WHERE digest IN (SELECT value FROM json_each(?1)) GROUP BY digest",
            )
            .bind(&[list(&all)])?
            .all()
            .await?
            .results::<serde_json::Value>()?;
        let text = |r: &serde_json::Value, k: &str| r.get(k)?.as_str().map(str::to_string);
        latest.extend(
            rows.iter()
                .filter_map(|r| Some((text(r, "digest")?, text(r, "erased_at")?))),
        );
    }
    Ok(digests
        .iter()
        .zip(events)
        .map(|(d, a)| crate::lake::erased_after(d, &a.received_at, &latest))
        .collect())
}

/// A list bound as JSON text, for `json_each`.
fn list<T: Serialize + ?Sized>(values: &T) -> JsValue {
    JsValue::from_str(&serde_json::to_string(values).unwrap_or_else(|_| "[]".into()))
}

fn changes(r: &D1Result) -> u64 {
    r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0) as u64
}

impl ErasureStore for CloudStore {
    async fn pending_job(
        &self,
        write_key: &str,
        profile: &str,
    ) -> std::result::Result<Option<Job>, StoreError> {
        let rows = self
            .db
            .prepare("SELECT job FROM erasure_jobs WHERE write_key = ?1 AND profile_id = ?2")
            .bind(&[write_key.into(), profile.into()])
            .map_err(err)?
            .all()
            .await
            .map_err(err)?
            .results::<serde_json::Value>()
            .map_err(err)?;
        Ok(rows
            .first()
            .and_then(|r| r.get("job")?.as_str().map(str::to_string))
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    async fn begin(&self, job: &Job) -> std::result::Result<(), StoreError> {
        let text = serde_json::to_string(job).map_err(|e| StoreError(e.to_string()))?;
        let mut values = job.subjects.values.clone();
        values.extend(job.subjects.profile_ids.iter().cloned());
        let stmts = vec![
            self.db
                .prepare("INSERT INTO erasure_jobs (write_key, profile_id, job, started_at) VALUES (?1, ?2, ?3, ?4) \
                          ON CONFLICT (write_key, profile_id) DO UPDATE SET job = excluded.job")
                .bind(&[job.write_key.as_str().into(), job.profile_id.as_str().into(), text.into(), job.started_at.as_str().into()])
                .map_err(err)?,
            self.db
                .prepare("INSERT INTO erasure_subjects (write_key, value) SELECT ?1, value FROM json_each(?2) WHERE true \
                          ON CONFLICT DO NOTHING")
                .bind(&[job.write_key.as_str().into(), list(&values)])
                .map_err(err)?,
            self.db
                .prepare("INSERT INTO erasure_tombstones (digest, erased_at, expires_at) \
                          SELECT value, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), datetime('now', ?2) FROM json_each(?1) WHERE true \
                          ON CONFLICT (digest) DO UPDATE SET erased_at = excluded.erased_at, expires_at = excluded.expires_at")
                .bind(&[
                    list(&values.iter().map(|v| tombstone(&job.write_key, v)).collect::<Vec<_>>()),
                    format!("+{TOMBSTONE_DAYS} days").into(),
                ])
                .map_err(err)?,
        ];
        self.db.batch(stmts).await.map_err(err).map(|_| ())
    }

    async fn erase(&self, key: &str, s: &Subjects) -> std::result::Result<Deleted, StoreError> {
        let (p, a, u, v) = (
            list(&s.profile_ids),
            list(&s.anonymous_ids),
            list(&s.user_ids),
            list(&s.values),
        );
        let bind = |sql: &str, args: &[JsValue]| self.db.prepare(sql).bind(args).map_err(err);
        let stmts = vec![
            bind("DELETE FROM events WHERE write_key = ?1 AND (profile_id IN (SELECT value FROM json_each(?2)) \
                  OR anonymous_id IN (SELECT value FROM json_each(?3)) OR user_id IN (SELECT value FROM json_each(?4)))",
                 &[key.into(), p, a.clone(), u.clone()])?,
            bind("DELETE FROM consent_log WHERE write_key = ?1 AND (anonymous_id IN (SELECT value FROM json_each(?2)) \
                  OR user_id IN (SELECT value FROM json_each(?3)))",
                 &[key.into(), a.clone(), u.clone()])?,
            bind("DELETE FROM quarantine WHERE write_key = ?1 AND (anonymous_id IN (SELECT value FROM json_each(?2)) \
                  OR user_id IN (SELECT value FROM json_each(?3)) \
                  OR EXISTS (SELECT 1 FROM json_each(quarantine.subjects) q WHERE q.value IN (SELECT value FROM json_each(?4))))",
                 &[key.into(), a, u, v])?,
            // Attribution credits name the profile (and a conversion of it).
            bind("DELETE FROM conversion_credits WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2))",
                 &[key.into(), list(&s.profile_ids)])?,
            // Activation: membership, changes and the delivery log (its jobs hold hashes).
            bind("DELETE FROM segment_members WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2))",
                 &[key.into(), list(&s.profile_ids)])?,
            bind("DELETE FROM segment_changes WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2))",
                 &[key.into(), list(&s.profile_ids)])?,
            bind("DELETE FROM deliveries WHERE write_key = ?1 AND profile_id IN (SELECT value FROM json_each(?2))",
                 &[key.into(), list(&s.profile_ids)])?,
        ];
        let results = self.db.batch(stmts).await.map_err(err)?;
        let n = |i: usize| results.get(i).map(changes).unwrap_or(0);
        let archived_events = self.erase_archive(key, s).await.map_err(err)?;
        Ok(Deleted {
            events: n(0),
            consent_entries: n(1),
            quarantined: n(2),
            archived_events,
        })
    }

    async fn finish(&self, job: &Job, deleted: &Deleted) -> std::result::Result<(), StoreError> {
        let counts = serde_json::to_string(deleted).unwrap_or_default();
        let key = job.write_key.as_str();
        let stmts = vec![
            self.db
                .prepare("INSERT INTO erasure_receipts (write_key, profile_id, finished_at, deleted) \
                          VALUES (?1, ?2, datetime('now'), ?3) ON CONFLICT (write_key, profile_id) DO UPDATE SET deleted = excluded.deleted")
                .bind(&[key.into(), job.profile_id.as_str().into(), counts.into()])
                .map_err(err)?,
            self.db
                .prepare("DELETE FROM erasure_jobs WHERE write_key = ?1 AND profile_id = ?2")
                .bind(&[key.into(), job.profile_id.as_str().into()])
                .map_err(err)?,
            self.db
                .prepare("DELETE FROM erasure_subjects WHERE write_key = ?1 AND NOT EXISTS (SELECT 1 FROM erasure_jobs j WHERE j.write_key = ?1)")
                .bind(&[key.into()])
                .map_err(err)?,
            self.db
                .prepare("DELETE FROM erasure_tombstones WHERE expires_at < datetime('now')")
                .bind(&[])
                .map_err(err)?,
        ];
        self.db.batch(stmts).await.map_err(err).map(|_| ())
    }
}

impl crate::store::ProfileEvents for CloudStore {
    async fn move_events(
        &self,
        write_key: &str,
        from: &str,
        to: &str,
        unmerged: &Subjects,
    ) -> std::result::Result<u64, StoreError> {
        let r = self
            .db
            .prepare(
                "UPDATE events SET profile_id = ?1 WHERE write_key = ?2 AND profile_id = ?3 \
                 AND (anonymous_id IN (SELECT value FROM json_each(?4)) \
                 OR user_id IN (SELECT value FROM json_each(?5)))",
            )
            .bind(&[
                to.into(),
                write_key.into(),
                from.into(),
                list(&unmerged.anonymous_ids),
                list(&unmerged.user_ids),
            ])
            .map_err(err)?
            .run()
            .await
            .map_err(err)?;
        Ok(changes(&r))
    }
}

impl CloudStore {
    /// The events into D1 with the profile moves, in one batch (one transaction, so a
    /// merge's moves are never lost to a failed insert), behind a read of the
    /// fingerprints already held for these messageIds.
    async fn insert_hot(
        &self,
        first: &StoredEvent,
        events: &[StoredEvent],
        moves: &[(String, String)],
    ) -> std::result::Result<Vec<Insert>, StoreError> {
        let key = first.write_key.as_str();
        let ids: Vec<String> = events.iter().map(|e| e.message_id.clone()).collect();
        let mut stmts = vec![self
            .db
            .prepare(
                "SELECT message_id, fingerprint FROM events WHERE write_key = ?1 \
                 AND message_id IN (SELECT value FROM json_each(?2))",
            )
            .bind(&[key.into(), list(&ids)])
            .map_err(err)?];
        for e in events {
            let args = [
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
                e.fingerprint.as_str().into(),
            ];
            stmts.push(
                self.db
                    .prepare(
                        "INSERT INTO events (write_key, message_id, type, event, anonymous_id, user_id, \
                         profile_id, identified, bot, timestamp, received_at, payload, fingerprint, \
                         archived) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0) \
                         ON CONFLICT (write_key, message_id) DO NOTHING",
                    )
                    .bind(&args)
                    .map_err(err)?,
            );
        }
        for (from, to) in moves {
            // The events, and the segment membership: the merged person stays in the
            // segments either side was in (no second "Segment Entered").
            for sql in [
                "UPDATE events SET profile_id = ?1 WHERE write_key = ?2 AND profile_id = ?3",
                "UPDATE OR IGNORE segment_members SET profile_id = ?1 WHERE write_key = ?2 AND profile_id = ?3",
                "DELETE FROM segment_members WHERE write_key = ?2 AND profile_id = ?3 AND ?1 IS NOT NULL",
            ] {
                stmts.push(
                    self.db
                        .prepare(sql)
                        .bind(&[to.as_str().into(), key.into(), from.as_str().into()])
                        .map_err(err)?,
                );
            }
        }
        // The graph's layout, in the same batch (no subrequest of its own), once per
        // isolate and source: what erasure reads to visit a graph of an earlier count.
        let layout = (key.to_string(), self.identity_shards);
        let record = !LAYOUTS_RECORDED.with_borrow(|r| r.contains(&layout));
        if record {
            stmts.push(
                self.db
                    .prepare("INSERT OR IGNORE INTO identity_layouts (write_key, shards) VALUES (?1, ?2)")
                    .bind(&[key.into(), JsValue::from(self.identity_shards)])
                    .map_err(err)?,
            );
        }
        let results = self
            .calls
            .io(super::Io::D1, self.db.batch(stmts))
            .await
            .map_err(err)?;
        if record {
            LAYOUTS_RECORDED.with_borrow_mut(|r| r.push(layout));
        }
        let Some((held, inserts)) = results.split_first() else {
            return Err(StoreError("D1 answered no results".into()));
        };
        #[derive(Deserialize)]
        struct Held {
            message_id: String,
            fingerprint: String,
        }
        let before = held
            .results::<Held>()
            .map_err(err)?
            .into_iter()
            .map(|h| (h.message_id, h.fingerprint))
            .collect();
        let written: Vec<bool> = inserts
            .iter()
            .take(events.len())
            .map(|r| changes(r) > 0)
            .collect();
        if written.len() != events.len() {
            return Err(StoreError("D1 answered the wrong count".into()));
        }
        Ok(crate::store::outcomes(events, &written, &before))
    }
}

impl CloudStore {
    /// Rewrites the lake's objects holding a line of the subjects without it; also the
    /// plain NDJSON objects of the layout before the lake.
    async fn erase_archive(&self, key: &str, s: &Subjects) -> Result<u64> {
        let Some(bucket) = &self.bucket else {
            return Ok(0);
        };
        let mut dropped_total = 0u64;
        for (prefix, gz) in [
            (crate::lake::prefix(key), true),
            (crate::lake::legacy_prefix(key), false),
        ] {
            let mut cursor: Option<String> = None;
            loop {
                let mut listing = bucket.list().prefix(prefix.clone());
                if let Some(c) = &cursor {
                    listing = listing.cursor(c.clone());
                }
                let page = listing.execute().await?;
                for obj in page.objects() {
                    dropped_total += erase_object(bucket, &obj.key(), gz, s).await?;
                }
                cursor = page.cursor().filter(|_| page.truncated());
                if cursor.is_none() {
                    break;
                }
            }
        }
        Ok(dropped_total)
    }
}

/// Rewrites one object without the subjects' lines (or deletes it when none is left);
/// returns how many lines went.
async fn erase_object(bucket: &Bucket, name: &str, gz: bool, s: &Subjects) -> Result<u64> {
    let Some(found) = bucket.get(name).execute().await? else {
        return Ok(0);
    };
    let Some(body) = found.body() else {
        return Ok(0);
    };
    let bytes = body.bytes().await?;
    let text = if gz {
        super::gzip::gunzip(&bytes).await
    } else {
        String::from_utf8(bytes).ok()
    };
    let Some(text) = text else { return Ok(0) };
    let matches = |line: &str| s.matches(&serde_json::from_str(line).unwrap_or_default());
    let Some((rest, dropped)) = crate::lake::without(&text, matches) else {
        return Ok(0);
    };
    if rest.is_empty() {
        bucket.delete(name).await?;
    } else if gz {
        bucket
            .put(name, super::gzip::gzip(&rest).await?)
            .execute()
            .await?;
    } else {
        bucket.put(name, rest.into_bytes()).execute().await?;
    }
    Ok(dropped)
}
