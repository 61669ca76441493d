//! Scheduled maintenance on Cloudflare (a Cron Trigger, or `POST /admin/v1/maintenance`):
//! sweeps the rows the queue did not archive into the lake, prunes each source's D1 hot
//! window to its `retentionDays` (archived rows only), measures the database against
//! its size limit, rescores segments (`rescoring`), queues again the deliveries a
//! failure left waiting (`delivery::requeue`), and judges each source's data-quality alerts (`alerting`). The grace, the window's edge and the warning are `crate::lake`'s;
//! this runs the statements and records what they found in the `health` table.

use crate::lake::{self, SizeCheck};
use crate::sources::Sources;
use serde_json::{json, Value};
use worker::*;

/// What one run did, as the admin API answers it.
pub async fn run(env: &Env, sources: &Sources, now_ms: i64) -> Result<Value> {
    let db = env.d1("DB")?;
    let bucket = env.bucket("ARCHIVE")?;
    let at = tracking_plan::time::format_rfc3339(now_ms);
    let mut pruned = serde_json::Map::new();
    let mut alerted = serde_json::Map::new();
    let mut rescoring = serde_json::Map::new();
    let mut size = 0u64;
    for (key, source) in sources.iter() {
        let swept = sweep(&db, &bucket, key, &lake::sweep_before(now_ms)).await?;
        let cutoff = lake::cutoff(now_ms, source.retention_days);
        let (events, s1) = prune(&db, "events", key, &cutoff).await?;
        let (quarantine, s2) = prune(&db, "quarantine", key, &cutoff).await?;
        db.prepare("DELETE FROM conversion_credits WHERE write_key = ?1 AND at < ?2")
            .bind(&[key.into(), cutoff.as_str().into()])?
            .run()
            .await?;
        size = size.max(s1).max(s2);
        let detail = json!({"cutoff": cutoff, "events": events, "quarantine": quarantine,
                            "swept": swept});
        record(&db, key, "retention", &at, &detail).await?;
        pruned.insert(key.to_string(), detail);
        let rescored = super::rescoring::run(env, &db, key, source, now_ms).await?;
        if !rescored.is_null() {
            rescoring.insert(key.to_string(), rescored);
        }
        let new = super::alerting::run(env, &db, key, source, now_ms).await?;
        if !new.is_empty() {
            alerted.insert(key.to_string(), json!(new));
        }
    }
    let limit = env
        .var("D1_LIMIT_BYTES")
        .ok()
        .and_then(|v| v.to_string().parse().ok())
        .unwrap_or(lake::D1_LIMIT_BYTES);
    let check: SizeCheck = lake::size_check(size, limit);
    if let Some(w) = &check.warning {
        console_warn!("sightline: {w}");
    }
    let check = serde_json::to_value(&check).unwrap_or_default();
    let requeued = super::delivery::requeue(env, now_ms).await?;
    record(&db, "", "database", &at, &check).await?;
    Ok(
        json!({"ok": true, "at": at, "pruned": pruned, "database": check, "alerts": alerted,
              "segments": rescoring, "deliveriesRequeued": requeued}),
    )
}

/// Writes a source's rows received before `before` and still unarchived to the lake,
/// a chunk per round for at most [`lake::SWEEP_ROUNDS`] rounds, and marks them. Returns
/// how many went. A crash between the put and the mark writes those lines again on the
/// next run: never lost, at worst a line in two objects, as after a queue redelivery
/// (the lake's readers key lines by messageId).
async fn sweep(db: &D1Database, bucket: &Bucket, key: &str, before: &str) -> Result<u64> {
    let mut swept = 0u64;
    for _ in 0..lake::SWEEP_ROUNDS {
        let rows: Vec<lake::HotRow> = db
            .prepare(
                "SELECT write_key, message_id, type, event, anonymous_id, user_id, profile_id, \
                 identified, bot, timestamp, received_at, payload FROM events \
                 WHERE write_key = ?1 AND archived = 0 AND received_at < ?2 \
                 ORDER BY received_at LIMIT ?3",
            )
            .bind(&[key.into(), before.into(), lake::SWEEP_CHUNK.into()])?
            .all()
            .await?
            .results()?;
        let events: Vec<_> = rows.into_iter().map(lake::HotRow::into_stored).collect();
        if events.is_empty() {
            break;
        }
        let lines: Vec<String> = events.iter().map(|e| e.archive_line()).collect();
        let objects = lake::objects(events.iter().zip(&lines).map(|(e, l)| lake::Line {
            write_key: &e.write_key,
            received_at: &e.received_at,
            line: l,
        }));
        super::storage::put_objects(bucket, objects).await?;
        let rows = lake::archived_rows(
            events
                .iter()
                .map(|e| (e.write_key.as_str(), e.message_id.as_str())),
        );
        super::storage::mark_archived(db, rows).await?;
        swept += events.len() as u64;
        if events.len() < lake::SWEEP_CHUNK as usize {
            break;
        }
    }
    Ok(swept)
}

/// Deletes a source's rows received before `cutoff`, a chunk per statement, for at
/// most [`lake::PRUNE_ROUNDS`] statements (the rest waits for the next run). Returns the
/// rows deleted and the database's size after the last statement. An event row goes
/// only once its line is in the lake.
async fn prune(db: &D1Database, table: &str, key: &str, cutoff: &str) -> Result<(u64, u64)> {
    let archived = if table == "events" {
        " AND archived = 1"
    } else {
        ""
    };
    let sql = format!(
        "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} \
         WHERE write_key = ?1 AND received_at < ?2{archived} LIMIT ?3)"
    );
    let (mut deleted, mut size) = (0u64, 0u64);
    for _ in 0..lake::PRUNE_ROUNDS {
        let r = db
            .prepare(&sql)
            .bind(&[key.into(), cutoff.into(), lake::PRUNE_CHUNK.into()])?
            .run()
            .await?;
        let meta = r.meta()?;
        let n = meta.as_ref().and_then(|m| m.changes).unwrap_or(0) as u64;
        size = meta.and_then(|m| m.size_after).unwrap_or(0) as u64;
        deleted += n;
        if n < u64::from(lake::PRUNE_CHUNK) {
            break;
        }
    }
    Ok((deleted, size))
}

async fn record(db: &D1Database, key: &str, kind: &str, at: &str, detail: &Value) -> Result<()> {
    db.prepare(
        "INSERT INTO health (write_key, kind, at, detail) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (write_key, kind) DO UPDATE SET at = excluded.at, detail = excluded.detail",
    )
    .bind(&[
        key.into(),
        kind.into(),
        at.into(),
        detail.to_string().into(),
    ])?
    .run()
    .await?;
    Ok(())
}

/// The last run's findings, for `GET /admin/v1/health`.
pub async fn health(env: &Env) -> Result<Value> {
    #[derive(serde::Deserialize)]
    struct Row {
        write_key: String,
        kind: String,
        at: String,
        detail: String,
    }
    let rows = env
        .d1("DB")?
        .prepare("SELECT write_key, kind, at, detail FROM health ORDER BY kind, write_key")
        .all()
        .await?
        .results::<Row>()?;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let detail: Value = serde_json::from_str(&r.detail).unwrap_or_default();
            json!({"writeKey": r.write_key, "kind": r.kind, "at": r.at, "detail": detail})
        })
        .collect();
    Ok(json!({"ok": true, "checks": rows}))
}
