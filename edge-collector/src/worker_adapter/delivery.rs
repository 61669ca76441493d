//! Delivery on Cloudflare: queues destination jobs on `DELIVERIES`, and consumes them:
//! one `fetch` per job, its answer written to the delivery log, then ack, retry after the
//! backoff, or hand over to the dead-letter queue. Every decision (consent, age, the
//! request, how an answer is read, the backoff, the log line) is `crate::destinations`'
//! and `crate::activation`'s; this sends and records.

use super::Calls;
use crate::activation::{self, Delivery, Status};
use crate::destinations::{self, Job, Skip};
use crate::sources::Sources;
use crate::store::StoreError;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::*;

/// The jobs' queue, and the queue where jobs go once every try failed.
pub const QUEUE: &str = "sightline-deliveries";
pub const DEAD_LETTERS: &str = "sightline-deliveries-dlq";
/// Tries per job: the first, then up to 5 retries (the consumer's `max_retries`).
pub const MAX_ATTEMPTS: u32 = 6;
/// A Queue message's size limit, less room for the envelope.
const MESSAGE_BYTES: usize = 120 * 1024;

/// Queues jobs in `sendBatch`es of at most 100 messages and 256 KB. A job travels as
/// its JSON text: a `serde_json::Value` crossing `serde-wasm-bindgen` becomes nested JS
/// `Map`s, which do not read back into the job.
pub async fn send_jobs(
    calls: &Calls,
    queue: Option<&Queue>,
    jobs: &[Job],
) -> std::result::Result<(), StoreError> {
    let queue = queue.ok_or_else(|| StoreError("DELIVERIES is not bound".into()))?;
    let bodies: Vec<String> = jobs
        .iter()
        .filter_map(|j| serde_json::to_string(j).ok())
        .filter(|t| t.len() <= MESSAGE_BYTES)
        .collect();
    let size = |t: &String| t.len() + 128;
    for chunk in crate::store::chunks_by_size(&bodies, size, 100, 256 * 1024) {
        let batch: Vec<&String> = chunk.iter().collect();
        calls
            .io(super::Io::Queue, queue.send_batch(batch))
            .await
            .map_err(|e| StoreError(e.to_string()))?;
    }
    Ok(())
}

fn job_of(body: &Value) -> Option<Job> {
    serde_json::from_str(body.as_str()?).ok()
}

/// What the consumer does with a message once its try is recorded.
enum Next {
    Ack,
    RetryIn(u32),
    DeadLetter,
}

/// The `sightline-deliveries` consumer.
pub async fn consume(batch: MessageBatch<Value>, env: &Env, sources: &Sources) -> Result<()> {
    let db = env.d1("DB")?;
    let dead = env.queue("DEAD_DELIVERIES").ok();
    for m in batch.messages()? {
        let Some(job) = job_of(m.body()) else {
            console_error!("sightline delivery: a message that is not a job was dropped");
            m.ack();
            continue;
        };
        match attempt(env, &db, sources, &job).await {
            Ok(Next::Ack) => m.ack(),
            Ok(Next::RetryIn(s)) => m.retry_with_options(
                &QueueRetryOptionsBuilder::new()
                    .with_delay_seconds(s)
                    .build(),
            ),
            Ok(Next::DeadLetter) => match &dead {
                Some(q) if q.send(m.body()).await.is_ok() => m.ack(),
                // The queue's own dead-lettering takes it after max_retries.
                _ => m.retry(),
            },
            Err(e) => {
                console_error!("sightline delivery {}: {e}", job.destination);
                m.retry_with_options(
                    &QueueRetryOptionsBuilder::new()
                        .with_delay_seconds(30)
                        .build(),
                );
            }
        }
    }
    Ok(())
}

/// The dead-letter consumer: the log line says `dead` (it may not, when the queue
/// dead-lettered a job whose tries ended in errors); the job stays in the log for a
/// replay (`POST /admin/v1/deliveries/replay`).
pub async fn bury(batch: MessageBatch<Value>, env: &Env) -> Result<()> {
    let db = env.d1("DB")?;
    let now = Date::now().as_millis() as i64;
    for m in batch.messages()? {
        if let Some(job) = job_of(m.body()) {
            let line =
                activation::delivery(&job, Status::Dead, Some("every try failed"), 0, None, now);
            record(&db, &line).await?;
        }
        m.ack();
    }
    Ok(())
}

/// One try of one job.
async fn attempt(env: &Env, db: &D1Database, sources: &Sources, job: &Job) -> Result<Next> {
    let Some(attempts) = logged_attempts(db, job).await? else {
        return Ok(Next::Ack); // final already, or erased with its person while queued
    };
    let now = Date::now().as_millis() as i64;
    let attempts = attempts + 1;
    let dest = sources
        .get(&job.write_key)
        .and_then(|s| s.destination(&job.destination));
    let first_retry = dest
        .and_then(|d| d.retry_seconds)
        .unwrap_or(destinations::FIRST_RETRY_SECONDS);
    let result = match dest {
        None => Err(Skip::Removed),
        Some(d) => {
            let latest = latest_consent(db, job).await?;
            match destinations::still_granted(d, latest.as_ref())
                .and_then(|()| destinations::request(d, job, &secret(env, &d.secret), now))
            {
                Ok(out) => Ok(send(out).await),
                Err(skip) => Err(skip),
            }
        }
    };
    let (line, again) = activation::after_attempt(job, result, attempts, MAX_ATTEMPTS, now);
    record(db, &line).await?;
    Ok(match line.status {
        Status::Dead => Next::DeadLetter,
        _ if again => Next::RetryIn(destinations::backoff_seconds(attempts, first_retry)),
        _ => Next::Ack,
    })
}

/// The tries logged so far, or `None` when the line is final or gone.
async fn logged_attempts(db: &D1Database, job: &Job) -> Result<Option<u32>> {
    let row: Option<Value> = db
        .prepare(
            "SELECT status, attempts FROM deliveries WHERE write_key = ?1 AND destination = ?2 \
             AND message_id = ?3",
        )
        .bind(&[
            job.write_key.as_str().into(),
            job.destination.as_str().into(),
            job.message_id.as_str().into(),
        ])?
        .first(None)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let status: Option<Status> = serde_json::from_value(row["status"].clone()).ok();
    if status.is_none_or(Status::is_final) {
        return Ok(None);
    }
    Ok(Some(super::admin::num(&row, "attempts") as u32))
}

/// The visitor's latest consent decision, when the event names an anonymous id.
async fn latest_consent(db: &D1Database, job: &Job) -> Result<Option<Value>> {
    let Some(aid) = job.event.get("anonymousId").and_then(Value::as_str) else {
        return Ok(None);
    };
    let row: Option<Value> = db
        .prepare(
            "SELECT categories FROM consent_log WHERE write_key = ?1 AND anonymous_id = ?2 \
             ORDER BY received_at DESC, id DESC LIMIT 1",
        )
        .bind(&[job.write_key.as_str().into(), aid.into()])?
        .first(None)
        .await?;
    Ok(row.and_then(|r| {
        r["categories"]
            .as_str()
            .and_then(|c| serde_json::from_str(c).ok())
    }))
}

/// A secret's value (`wrangler secret put`), or a plain var of that name in local runs.
fn secret(env: &Env, name: &str) -> String {
    env.secret(name)
        .or_else(|_| env.var(name))
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// Sends the request: its HTTP status, or `None` when it never got an answer.
async fn send(out: destinations::Outgoing) -> Option<u16> {
    let headers = Headers::new();
    for (k, v) in &out.headers {
        headers.set(k, v).ok()?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&out.body)));
    let req = Request::new_with_init(&out.url, &init).ok()?;
    Fetch::Request(req)
        .send()
        .await
        .ok()
        .map(|r| r.status_code())
}

/// Writes a log line over a line that is not final (a dead letter may also overwrite a
/// `retrying` line); a final line drops its job, except a dead one, kept for a replay.
async fn record(db: &D1Database, d: &Delivery) -> Result<()> {
    let at = tracking_plan::time::format_rfc3339(d.at_ms);
    let sql =
        "UPDATE deliveries SET status = ?4, reason = ?5, attempts = max(attempts, ?6), http_status = ?7, \
         updated_at = ?8, job = CASE WHEN ?4 IN ('delivered', 'rejected', 'skipped') THEN NULL ELSE job END \
         WHERE write_key = ?1 AND destination = ?2 AND message_id = ?3 \
         AND status NOT IN ('delivered', 'rejected', 'skipped', 'dead')";
    db.prepare(sql)
        .bind(&[
            d.write_key.as_str().into(),
            d.destination.as_str().into(),
            d.message_id.as_str().into(),
            d.status.as_str().into(),
            super::storage::opt(&d.reason),
            d.attempts.into(),
            d.http_status.map(JsValue::from).unwrap_or(JsValue::NULL),
            at.into(),
        ])?
        .run()
        .await?;
    Ok(())
}

/// A log line's kept job, as D1 answers it.
#[derive(serde::Deserialize)]
struct JobRow {
    job: String,
}

fn jobs_of(rows: &[JobRow]) -> Vec<Job> {
    rows.iter()
        .filter_map(|r| serde_json::from_str(&r.job).ok())
        .collect()
}

/// Lines still `queued` this long after they were written, or `retrying` this long
/// after their last try (the backoff is at most 15 minutes), lost their message (a
/// failed send, a crash): the maintenance queues their job again.
const QUEUED_GRACE_MS: i64 = 10 * 60_000;
const RETRYING_GRACE_MS: i64 = 30 * 60_000;
const REQUEUE_CHUNK: u32 = 100;

/// Queues again what the outbox holds past its grace; how many went.
pub async fn requeue(env: &Env, now_ms: i64) -> Result<u64> {
    let db = env.d1("DB")?;
    let Ok(queue) = env.queue("DELIVERIES") else {
        return Ok(0);
    };
    let at = |ms: i64| tracking_plan::time::format_rfc3339(now_ms - ms);
    let rows = db
        .prepare(
            "SELECT job FROM deliveries WHERE job IS NOT NULL AND \
             ((status = 'queued' AND updated_at < ?1) OR (status = 'retrying' AND updated_at < ?2)) \
             ORDER BY updated_at LIMIT ?3",
        )
        .bind(&[at(QUEUED_GRACE_MS).into(), at(RETRYING_GRACE_MS).into(), REQUEUE_CHUNK.into()])?
        .all()
        .await?
        .results::<JobRow>()?;
    let jobs = jobs_of(&rows);
    if jobs.is_empty() {
        return Ok(0);
    }
    send_jobs(&super::Meter::start(), Some(&queue), &jobs)
        .await
        .map_err(|e| Error::RustError(e.0))?;
    let keys: Vec<Value> = jobs
        .iter()
        .map(|j| serde_json::json!([j.write_key, j.destination, j.message_id]))
        .collect();
    db.prepare(
        "UPDATE deliveries SET updated_at = ?1 WHERE (write_key, destination, message_id) IN \
         (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?2))",
    )
    .bind(&[
        tracking_plan::time::format_rfc3339(now_ms).into(),
        Value::Array(keys).to_string().into(),
    ])?
    .run()
    .await?;
    Ok(jobs.len() as u64)
}

/// Queues the dead lines' jobs again (`POST /admin/v1/deliveries/replay`), their tries
/// counted from zero; how many went.
pub async fn replay(env: &Env, write_key: &str, destination: Option<&str>) -> Result<u64> {
    let db = env.d1("DB")?;
    let now = tracking_plan::time::format_rfc3339(Date::now().as_millis() as i64);
    let rows = db
        .prepare(
            "UPDATE deliveries SET status = 'queued', attempts = 0, reason = NULL, updated_at = ?3 \
             WHERE write_key = ?1 AND status = 'dead' AND job IS NOT NULL \
             AND (?2 IS NULL OR destination = ?2) RETURNING job",
        )
        .bind(&[write_key.into(), destination.map(JsValue::from).unwrap_or(JsValue::NULL), now.into()])?
        .all()
        .await?
        .results::<JobRow>()?;
    let jobs = jobs_of(&rows);
    send_jobs(
        &super::Meter::start(),
        env.queue("DELIVERIES").ok().as_ref(),
        &jobs,
    )
    .await
    .map_err(|e| Error::RustError(e.0))?;
    Ok(jobs.len() as u64)
}
