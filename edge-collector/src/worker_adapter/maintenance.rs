//! Scheduled maintenance on Cloudflare (a Cron Trigger, or `POST /admin/v1/maintenance`):
//! prunes each source's D1 hot window to its `retentionDays` and measures the database
//! against its size limit. The window's edge and the warning are `crate::lake`'s; this
//! runs the statements and records what they found in the `health` table.

use crate::lake::{self, SizeCheck};
use crate::sources::Sources;
use serde_json::{json, Value};
use worker::*;

/// What one run did, as the admin API answers it.
pub async fn run(env: &Env, sources: &Sources, now_ms: i64) -> Result<Value> {
    let db = env.d1("DB")?;
    let at = tracking_plan::time::format_rfc3339(now_ms);
    let mut pruned = serde_json::Map::new();
    let mut size = 0u64;
    for (key, source) in sources.iter() {
        let cutoff = lake::cutoff(now_ms, source.retention_days);
        let (events, s1) = prune(&db, "events", key, &cutoff).await?;
        let (quarantine, s2) = prune(&db, "quarantine", key, &cutoff).await?;
        size = size.max(s1).max(s2);
        let detail = json!({"cutoff": cutoff, "events": events, "quarantine": quarantine});
        record(&db, key, "retention", &at, &detail).await?;
        pruned.insert(key.to_string(), detail);
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
    record(&db, "", "database", &at, &check).await?;
    Ok(json!({"ok": true, "at": at, "pruned": pruned, "database": check}))
}

/// Deletes a source's rows received before `cutoff`, a chunk per statement, for at
/// most [`lake::PRUNE_ROUNDS`] statements (the rest waits for the next run). Returns the
/// rows deleted and the database's size after the last statement.
async fn prune(db: &D1Database, table: &str, key: &str, cutoff: &str) -> Result<(u64, u64)> {
    let sql = format!(
        "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} \
         WHERE write_key = ?1 AND received_at < ?2 LIMIT ?3)"
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
