//! The scheduled rescoring on Cloudflare: once a day a source's RFM cut points are
//! recomputed from its converting profiles, and every run walks its profiles (a chunk
//! at a time, resuming from a cursor) through the same activation stage as a request,
//! so time-based rules (a window that ends, an abandoned cart, an order that stops
//! coming) enter and exit without an event. Which profiles, the cut points and the
//! membership are `crate::activation`'s decisions; this runs the reads.

use super::storage::CloudStore;
use crate::activation::{self, ConversionSum};
use crate::pipeline::activate::{self, Input};
use crate::sources::Source;
use serde::Deserialize;
use serde_json::{json, Value};
use worker::*;

/// Profiles per chunk, and chunks per run (the rest waits for the next run).
const CHUNK: u32 = 100;
const ROUNDS: u32 = 10;

#[derive(Deserialize)]
struct Progress {
    cuts: String,
    computed_at: String,
    cursor: String,
}

/// Rescores a source's profiles; what it did, for the maintenance's report.
pub async fn run(
    env: &Env,
    db: &D1Database,
    key: &str,
    source: &Source,
    now_ms: i64,
) -> Result<Value> {
    if source.segments().is_empty() {
        return Ok(Value::Null);
    }
    let progress: Option<Progress> = db
        .prepare("SELECT cuts, computed_at, cursor FROM rfm_cuts WHERE write_key = ?1")
        .bind(&[key.into()])?
        .first(None)
        .await?;
    let mut cuts = progress
        .as_ref()
        .map_or("{}".to_string(), |p| p.cuts.clone());
    let mut computed_at = progress
        .as_ref()
        .map_or(String::new(), |p| p.computed_at.clone());
    if activation::cuts_due(
        source,
        progress.as_ref().map(|p| p.computed_at.as_str()),
        now_ms,
    ) {
        let rows = conversion_sums(db, key, source).await?;
        cuts = serde_json::to_string(&activation::cut_points(&rows, now_ms)).unwrap_or_default();
        computed_at = tracking_plan::time::format_rfc3339(now_ms);
    }
    let mut cursor = progress.map_or(String::new(), |p| p.cursor);
    save(db, key, &cuts, &computed_at, &cursor).await?;
    let store = CloudStore::new(env)?;
    let identity = super::objects::DoIdentity::of(env)?;
    let io = activate::Io {
        store: &store,
        identity: &identity,
    };
    let since = activation::rescore_since(source, now_ms);
    let names = activation::names_read(source);
    let (mut scored, mut changed) = (0usize, 0usize);
    for _ in 0..ROUNDS {
        let profiles = candidates(db, key, &names, &since, &cursor).await?;
        let done = profiles.len() < CHUNK as usize;
        cursor = if done {
            String::new()
        } else {
            profiles.last().cloned().unwrap_or_default()
        };
        scored += profiles.len();
        if !profiles.is_empty() {
            let input = Input {
                profiles,
                ..Input::default()
            };
            let out = activate::run(&io, key, source, input, now_ms)
                .await
                .map_err(|e| Error::RustError(e.0))?;
            changed += out.scored.iter().map(|s| s.changes.len()).sum::<usize>();
        }
        save(db, key, &cuts, &computed_at, &cursor).await?;
        if done {
            break;
        }
    }
    Ok(json!({"profiles": scored, "changes": changed, "cutsAt": computed_at}))
}

async fn save(db: &D1Database, key: &str, cuts: &str, at: &str, cursor: &str) -> Result<()> {
    db.prepare(
        "INSERT INTO rfm_cuts (write_key, cuts, computed_at, cursor) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (write_key) DO UPDATE SET cuts = excluded.cuts, \
         computed_at = excluded.computed_at, cursor = excluded.cursor",
    )
    .bind(&[key.into(), cuts.into(), at.into(), cursor.into()])?
    .run()
    .await?;
    Ok(())
}

/// Each conversion rule's count, revenue and last time per profile, summed by D1.
async fn conversion_sums(
    db: &D1Database,
    key: &str,
    source: &Source,
) -> Result<Vec<ConversionSum>> {
    let mut out = Vec::new();
    for rule in &source.attribution.conversions {
        let path = rule
            .revenue
            .as_deref()
            .map(|r| format!("$.properties.\"{}\"", r.replace('"', "")))
            .unwrap_or_else(|| "$.none".into());
        let rows = db
            .prepare(
                "SELECT profile_id, max(timestamp) AS last, count(*) AS n, \
                 total(json_extract(payload, ?3)) AS revenue FROM events \
                 WHERE write_key = ?1 AND type = 'track' AND event = ?2 AND profile_id IS NOT NULL \
                 GROUP BY profile_id",
            )
            .bind(&[key.into(), rule.event.as_str().into(), path.into()])?
            .all()
            .await?
            .results::<ConversionSum>()?;
        out.extend(rows);
    }
    Ok(out)
}

/// The next chunk of profiles after `cursor` that have events a segment reads in the
/// hot window, or a membership.
async fn candidates(
    db: &D1Database,
    key: &str,
    names: &[String],
    since: &str,
    cursor: &str,
) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Row {
        profile_id: String,
    }
    let names = serde_json::to_string(names).unwrap_or_default();
    let rows = db
        .prepare(
            "SELECT profile_id FROM (SELECT profile_id FROM events WHERE write_key = ?1 \
             AND profile_id > ?2 AND timestamp >= ?3 AND event IN (SELECT value FROM json_each(?4)) \
             UNION SELECT profile_id FROM segment_members WHERE write_key = ?1 AND profile_id > ?2) \
             WHERE profile_id IS NOT NULL ORDER BY profile_id LIMIT ?5",
        )
        .bind(&[key.into(), cursor.into(), since.into(), names.into(), CHUNK.into()])?
        .all()
        .await?
        .results::<Row>()?;
    Ok(rows.into_iter().map(|r| r.profile_id).collect())
}
