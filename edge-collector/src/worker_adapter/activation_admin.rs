//! The admin API of activation: the segments with their member counts, the delivery
//! log, a replay of dead deliveries, and audience exports as CSV. The export's content
//! is `crate::audiences`' decision; this reads the members and answers.

use super::admin::{fail, reply, rows};
use super::storage::{opt, CloudStore};
use crate::audiences::{self, Format};
use crate::sources::Sources;
use serde_json::{json, Value};
use worker::*;

/// Profiles read per D1 batch while exporting.
const EXPORT_CHUNK: usize = 200;

/// `GET /admin/v1/segments?writeKey=`: each source's segments and how many are in each.
pub async fn segments(db: &D1Database, sources: &Sources, key: Option<String>) -> Result<Response> {
    let counts = rows(
        db,
        "SELECT write_key, segment, count(*) AS members FROM segment_members \
         WHERE (?1 IS NULL OR write_key = ?1) GROUP BY write_key, segment",
        &[opt(&key)],
    )
    .await?;
    let mut out = Vec::new();
    for (k, source) in sources
        .iter()
        .filter(|(k, _)| key.as_deref().is_none_or(|x| x == *k))
    {
        for s in source.segments() {
            let members = counts
                .iter()
                .find(|c| c["write_key"] == k && c["segment"] == s.id.as_str())
                .map_or(0.0, |c| super::admin::num(c, "members"));
            out.push(
                json!({"writeKey": k, "id": s.id, "name": s.name, "rule": s.rule,
                            "members": members as u64}),
            );
        }
    }
    reply(200, json!({"ok": true, "segments": out}))
}

/// The largest segment list the admin API takes.
const MAX_DECLARATION_BYTES: usize = 64 * 1024;

/// `PUT /admin/v1/segments?writeKey=`: declares the source's segments (a JSON list, the
/// same form as in `SOURCES`), replacing those `SOURCES` gives; `DELETE` goes back to
/// them. Membership follows at the next event or rescoring.
pub async fn declare(
    db: &D1Database,
    sources: &Sources,
    key: Option<String>,
    body: Option<String>,
) -> Result<Response> {
    let Some((key, source)) = key.as_deref().and_then(|k| Some((k, sources.get(k)?))) else {
        return fail(400, "missing_write_key", "writeKey must name a source");
    };
    let now = tracking_plan::time::format_rfc3339(Date::now().as_millis() as i64);
    match body {
        None => {
            db.prepare("DELETE FROM segment_definitions WHERE write_key = ?1")
                .bind(&[key.into()])?
                .run()
                .await?;
        }
        Some(text) if text.len() > MAX_DECLARATION_BYTES => {
            return fail(
                413,
                "too_large",
                format!("at most {MAX_DECLARATION_BYTES} bytes of segments"),
            );
        }
        Some(text) => {
            let list = match crate::sources::parse_segments(source, &text) {
                Ok(l) => l,
                Err(e) => return fail(400, "invalid_segments", e),
            };
            let canonical = serde_json::to_string(&list).unwrap_or_default();
            db.prepare(
                "INSERT INTO segment_definitions (write_key, segments, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (write_key) DO UPDATE SET segments = excluded.segments, updated_at = excluded.updated_at",
            )
            .bind(&[key.into(), canonical.into(), now.into()])?
            .run()
            .await?;
        }
    }
    super::forget_declared();
    reply(200, json!({"ok": true}))
}

/// `GET /admin/v1/deliveries`: the delivery log, newest first, filtered by source,
/// destination, status or message; `before` (an `updatedAt`) pages back.
pub async fn deliveries(
    db: &D1Database,
    q: impl Fn(&str) -> Option<String>,
    limit: i32,
) -> Result<Response> {
    let list = rows(
        db,
        "SELECT write_key AS writeKey, destination, message_id AS messageId, profile_id AS profileId, \
         status, reason, attempts, http_status AS httpStatus, updated_at AS updatedAt FROM deliveries \
         WHERE (?1 IS NULL OR write_key = ?1) AND (?2 IS NULL OR destination = ?2) \
         AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR message_id = ?4) \
         AND (?5 IS NULL OR updated_at < ?5) ORDER BY updated_at DESC, message_id LIMIT ?6",
        &[
            opt(&q("writeKey")),
            opt(&q("destination")),
            opt(&q("status")),
            opt(&q("messageId")),
            opt(&q("before")),
            limit.into(),
        ],
    )
    .await?;
    let next = (list.len() == limit as usize)
        .then(|| list.last().map(|l| l["updatedAt"].clone()))
        .flatten();
    let totals = rows(
        db,
        "SELECT destination, status, count(*) AS n FROM deliveries WHERE (?1 IS NULL OR write_key = ?1) \
         GROUP BY destination, status ORDER BY destination, status",
        &[opt(&q("writeKey"))],
    )
    .await?;
    reply(
        200,
        json!({"ok": true, "deliveries": list, "totals": totals, "before": next}),
    )
}

/// `POST /admin/v1/deliveries/replay?writeKey=&destination=`: queues the dead jobs again.
pub async fn replay(
    env: &Env,
    key: Option<String>,
    destination: Option<String>,
) -> Result<Response> {
    let Some(key) = key else {
        return fail(400, "missing_write_key", "writeKey is required");
    };
    let n = super::delivery::replay(env, &key, destination.as_deref()).await?;
    reply(200, json!({"ok": true, "replayed": n}))
}

/// `GET /admin/v1/audiences/{segment}.csv?writeKey=&format=meta|google`.
pub async fn audience(
    env: &Env,
    db: &D1Database,
    sources: &Sources,
    file: &str,
    key: Option<String>,
    format: Option<String>,
) -> Result<Response> {
    let Some((key, source)) = key.as_deref().and_then(|k| Some((k, sources.get(k)?))) else {
        return fail(400, "missing_write_key", "writeKey must name a source");
    };
    let Some(format) = Format::from_name(format.as_deref().unwrap_or("meta")) else {
        return fail(400, "invalid_format", "format is meta or google");
    };
    let segment = file.strip_suffix(".csv").unwrap_or(file);
    if !source.segments().iter().any(|s| s.id == segment) {
        return fail(
            404,
            "no_such_segment",
            format!("{key} has no segment {segment:?}"),
        );
    }
    let members: Vec<String> = rows(
        db,
        "SELECT profile_id FROM segment_members WHERE write_key = ?1 AND segment = ?2 ORDER BY profile_id",
        &[key.into(), segment.into()],
    )
    .await?
    .iter()
    .map(|r| super::admin::text(r, "profile_id"))
    .collect();
    let store = CloudStore::new(env)?;
    let identity = super::objects::DoIdentity::of(env)?;
    let io = crate::pipeline::activate::Io {
        store: &store,
        identity: &identity,
    };
    let now = Date::now().as_millis() as i64;
    let mut people = Vec::new();
    for chunk in members.chunks(EXPORT_CHUNK) {
        let states = crate::pipeline::activate::states(&io, key, source, chunk, now)
            .await
            .map_err(|e| Error::RustError(e.0))?;
        people.extend(chunk.iter().map(|p| {
            states
                .get(p)
                .map_or((Default::default(), Value::Null), |s| {
                    (s.hashes(), s.consent.clone())
                })
        }));
    }
    let export = audiences::export(format, people);
    let mut resp = Response::ok(export.csv)?;
    let h = resp.headers_mut();
    h.set("Content-Type", "text/csv; charset=utf-8")?;
    h.set(
        "Content-Disposition",
        &format!(
            "attachment; filename=\"{segment}-{}.csv\"",
            format
                .header()
                .split(',')
                .next()
                .unwrap_or("list")
                .to_lowercase()
        ),
    )?;
    h.set("X-Rows", &export.rows.to_string())?;
    h.set("X-Excluded-No-Consent", &export.no_consent.to_string())?;
    h.set("X-Excluded-No-Keys", &export.no_keys.to_string())?;
    Ok(resp)
}
