//! The admin API (Bearer admin token): events, quarantine, consent log, profile 360,
//! unmerge, erasure, stats, health and maintenance, and the R2 lake. Reads D1 and the identity objects; the
//! identity decisions (unmerge, erase) are made by `identity` inside the objects.

use super::objects::{ident_from_query, DoIdentity};
use super::storage::opt;
use crate::cursor;
use crate::identity::{IdKind, Unmerged};
use crate::sources::Sources;
use crate::store::ProfileEvents as _;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::*;

pub(super) fn reply(status: u16, body: Value) -> Result<Response> {
    Ok(Response::from_json(&body)?.with_status(status))
}

pub(super) fn fail(status: u16, code: &str, message: impl Into<String>) -> Result<Response> {
    reply(
        status,
        json!({"ok": false, "error": {"code": code, "message": message.into()}}),
    )
}

/// Constant-time comparison for the admin token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn rows(db: &D1Database, sql: &str, args: &[JsValue]) -> Result<Vec<Value>> {
    db.prepare(sql).bind(args)?.all().await?.results()
}

/// A source's profiles, a page at a time, in id order.
async fn list_profiles(
    identity: &DoIdentity,
    write_key: &str,
    cursor: Option<String>,
    limit: i32,
) -> Result<Response> {
    let after = match cursor.map(|c| cursor::decode_key(&c)).transpose() {
        Ok(a) => a,
        Err(e) => return fail(e.status(), e.code(), e.to_string()),
    };
    let answer = identity
        .request(
            write_key,
            "/profiles",
            &json!({"after": after, "limit": limit}),
        )
        .await?;
    let profiles = answer
        .get("profiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let next = cursor::next(&profiles, limit as usize, |p| {
        p.get("id").and_then(Value::as_str).map(cursor::encode_key)
    });
    reply(
        200,
        json!({"ok": true, "writeKey": write_key, "profiles": profiles, "next": next}),
    )
}

/// Rows per D1 query of an export.
const EXPORT_PAGE: usize = 500;

/// A source's stored events received in `[from, to)`, oldest first, as NDJSON (one
/// event's JSON per line), streamed a page of rows at a time: memory stays bounded
/// whatever the range holds.
fn export(env: Env, write_key: String, (from, to): (String, String)) -> Result<Response> {
    type After = Option<(String, i64)>;
    // The state: `None` once the last page is out; `Some(after)` otherwise.
    let pages =
        futures_util::stream::unfold(Some(None::<(String, i64)>), move |state: Option<After>| {
            let (env, write_key, from, to) =
                (env.clone(), write_key.clone(), from.clone(), to.clone());
            async move {
                let after = state?;
                let page =
                    async {
                        let db = env.d1("DB")?;
                        rows(
                    &db,
                    "SELECT rowid AS rowid, received_at AS receivedAt, payload FROM events \
                     WHERE write_key = ?1 AND received_at >= ?2 AND received_at < ?3 \
                     AND (?4 IS NULL OR received_at > ?4 OR (received_at = ?4 AND rowid > ?5)) \
                     ORDER BY received_at, rowid LIMIT ?6",
                    &[
                        write_key.as_str().into(),
                        from.as_str().into(),
                        to.as_str().into(),
                        opt(&after.as_ref().map(|a| a.0.clone())),
                        after.as_ref().map_or(JsValue::NULL, |a| JsValue::from_f64(a.1 as f64)),
                        JsValue::from_f64(EXPORT_PAGE as f64),
                    ],
                )
                .await
                    };
                match page.await {
                    Err(e) => Some((Err(e), None)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let mut out = Vec::new();
                        for r in &rows {
                            out.extend_from_slice(
                                r.get("payload")
                                    .and_then(Value::as_str)
                                    .unwrap_or("{}")
                                    .as_bytes(),
                            );
                            out.push(b'\n');
                        }
                        let last = rows.last().and_then(|l| {
                            Some((
                                l.get("receivedAt")?.as_str()?.to_string(),
                                l.get("rowid")?.as_i64()?,
                            ))
                        });
                        // A full page goes on after its last row (never from the start again).
                        let next = if rows.len() == EXPORT_PAGE {
                            last.map(Some)
                        } else {
                            None
                        };
                        Some((Ok::<Vec<u8>, Error>(out), next))
                    }
                }
            }
        });
    let mut r = Response::from_stream(pages)?;
    r.headers_mut()
        .set("Content-Type", "application/x-ndjson")?;
    Ok(r)
}

fn id_arg(id: Option<i64>) -> JsValue {
    id.map_or(JsValue::NULL, |i| JsValue::from_f64(i as f64))
}

fn id_cursor(row: &Value) -> Option<String> {
    row.get("id")?.as_i64().map(cursor::encode_id)
}

fn list(values: &[String]) -> JsValue {
    JsValue::from_str(&serde_json::to_string(values).unwrap_or_else(|_| "[]".into()))
}

/// The inspector's files. The app shell holds no data (every call it makes needs the
/// token), so it is served without one, under a policy that allows only its own script,
/// styles, API and the SDK's wasm (for hashing), and no framing.
fn inspector(path: &str) -> Option<Result<Response>> {
    let (body, kind) = match path {
        "/admin" => {
            // A relative Location: the browser keeps the collector's origin and base.
            let headers = Headers::new();
            headers.set("Location", "admin/").ok()?;
            return Some(Ok(Response::empty()
                .ok()?
                .with_status(308)
                .with_headers(headers)));
        }
        "/admin/" | "/admin/index.html" => (
            include_str!("../../inspector/index.html"),
            "text/html; charset=utf-8",
        ),
        "/admin/app.js" => (
            include_str!("../../inspector/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/admin/app.css" => (
            include_str!("../../inspector/app.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    let headers = Headers::new();
    for (k, v) in [
        ("Content-Type", kind),
        (
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
             img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cache-Control", "no-store"),
    ] {
        let _ = headers.set(k, v);
    }
    Some(Ok(Response::ok(body).ok()?.with_headers(headers)))
}

/// A column holding JSON text, answered as the JSON it holds.
fn json_field(o: &mut serde_json::Map<String, Value>, k: &str) {
    let parsed = o
        .get(k)
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok());
    if let Some(v) = parsed {
        o.insert(k.to_string(), v);
    }
}

/// The sources an admin may pick: write key, name, consent policy and plan version.
fn source_list(sources: &Sources) -> Value {
    let list: Vec<Value> = sources
        .iter()
        .map(|(key, s)| {
            json!({"writeKey": key, "name": s.name, "consent": match s.consent {
                       crate::sources::ConsentPolicy::OptIn => "opt-in",
                       crate::sources::ConsentPolicy::OptOut => "opt-out",
                   },
                   "planVersion": s.compiled.as_ref().map(|p| p.version.clone())})
        })
        .collect();
    json!({"ok": true, "sources": list})
}

/// An admin request; `path` is its path under the collector's base path.
pub async fn handle(
    mut req: Request,
    path: &str,
    env: &Env,
    sources: &Sources,
) -> Result<Response> {
    if req.method() == Method::Get {
        if let Some(r) = inspector(path) {
            return r;
        }
    }
    let token = env
        .secret("ADMIN_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("ADMIN_TOKEN").map(|s| s.to_string()));
    let Ok(token) = token else {
        return fail(500, "not_configured", "ADMIN_TOKEN is not set");
    };
    let given = req.headers().get("Authorization")?.unwrap_or_default();
    let given = given.strip_prefix("Bearer ").unwrap_or_default();
    if token.is_empty() || !same(given.as_bytes(), token.as_bytes()) {
        return fail(
            401,
            "unauthorized",
            "a valid Bearer admin token is required",
        );
    }
    let url = req.url()?;
    let q = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let limit = q("limit")
        .and_then(|l| l.parse::<i32>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let db = env.d1("DB")?;
    let identity = DoIdentity::metered(env, super::Meter::start())?;
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(3).collect();
    match (req.method(), parts.as_slice()) {
        (Method::Get, ["events"]) => {
            let after = match q("cursor").map(|c| cursor::decode_events(&c)).transpose() {
                Ok(a) => a,
                Err(e) => return fail(e.status(), e.code(), e.to_string()),
            };
            let mut events = rows(
                &db,
                "SELECT rowid AS rowid, write_key AS writeKey, message_id AS messageId, type, event, \
                 anonymous_id AS anonymousId, user_id AS userId, profile_id AS profileId, \
                 identified, bot, timestamp, received_at AS receivedAt, payload FROM events \
                 WHERE (?1 IS NULL OR anonymous_id = ?1) AND (?2 IS NULL OR event = ?2) \
                 AND (?3 IS NULL OR profile_id = ?3) AND (?4 IS NULL OR write_key = ?4) \
                 AND (?8 IS NULL OR type = ?8) \
                 AND (?6 IS NULL OR received_at < ?6 OR (received_at = ?6 AND rowid < ?7)) \
                 ORDER BY received_at DESC, rowid DESC LIMIT ?5",
                &[
                    opt(&q("anonymousId")),
                    opt(&q("event")),
                    opt(&q("profileId")),
                    opt(&q("writeKey")),
                    limit.into(),
                    opt(&after.as_ref().map(|a| a.received_at.clone())),
                    after.as_ref().map_or(JsValue::NULL, |a| JsValue::from_f64(a.rowid as f64)),
                    opt(&q("type")),
                ],
            )
            .await?;
            let next = cursor::next(&events, limit as usize, |last| {
                let rowid = last.get("rowid")?.as_i64()?;
                Some(cursor::encode_events(
                    last.get("receivedAt")?.as_str()?,
                    rowid,
                ))
            });
            for e in &mut events {
                if let Some(o) = e.as_object_mut() {
                    o.remove("rowid");
                }
            }
            reply(200, json!({"ok": true, "events": events, "next": next}))
        }
        (Method::Get, ["export"]) => {
            let Some(write_key) = q("writeKey") else {
                return fail(400, "missing_write_key", "give the source's writeKey");
            };
            let range = (
                q("from").unwrap_or_default(),
                q("to").unwrap_or_else(|| "~".into()),
            );
            export(env.clone(), write_key, range)
        }
        (Method::Get, ["quarantine"]) => {
            let before = match q("cursor").map(|c| cursor::decode_id(&c)).transpose() {
                Ok(b) => b,
                Err(e) => return fail(e.status(), e.code(), e.to_string()),
            };
            let items = rows(
                &db,
                "SELECT id, write_key AS writeKey, message_id AS messageId, \
                 anonymous_id AS anonymousId, reason, reasons, payload, received_at AS receivedAt \
                 FROM quarantine WHERE (?1 IS NULL OR reason = ?1) AND (?2 IS NULL OR write_key = ?2) \
                 AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?3",
                &[opt(&q("reason")), opt(&q("writeKey")), limit.into(), id_arg(before)],
            )
            .await?;
            let next = cursor::next(&items, limit as usize, id_cursor);
            reply(200, json!({"ok": true, "quarantine": items, "next": next}))
        }
        (Method::Post, ["quarantine", "replay"]) => {
            let body: Value = req.json().await.unwrap_or(Value::Null);
            replay(env, &db, sources, &body).await
        }
        (Method::Get, ["consent"]) => {
            let before = match q("cursor").map(|c| cursor::decode_id(&c)).transpose() {
                Ok(b) => b,
                Err(e) => return fail(e.status(), e.code(), e.to_string()),
            };
            let mut items = rows(
                &db,
                "SELECT id, write_key AS writeKey, message_id AS messageId, anonymous_id AS anonymousId, \
                 user_id AS userId, categories, source, gpc, timestamp, received_at AS receivedAt, \
                 evidence FROM consent_log WHERE (?1 IS NULL OR anonymous_id = ?1) \
                 AND (?2 IS NULL OR user_id = ?2) AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?3",
                &[opt(&q("anonymousId")), opt(&q("userId")), limit.into(), id_arg(before)],
            )
            .await?;
            let next = cursor::next(&items, limit as usize, id_cursor);
            for e in &mut items {
                if let Some(o) = e.as_object_mut() {
                    o.remove("id");
                    json_field(o, "evidence");
                }
            }
            reply(200, json!({"ok": true, "consent": items, "next": next}))
        }
        (Method::Get, ["profiles"]) => {
            let lookup = ["anonymousId", "userId", "email_sha256", "phone_sha256"]
                .iter()
                .find_map(|k| q(k).and_then(|v| ident_from_query(k, &v)));
            let Some(ident) = lookup else {
                let Some(write_key) = q("writeKey") else {
                    return fail(
                        400,
                        "missing_identifier",
                        "give one of anonymousId, userId, email_sha256, phone_sha256, or writeKey to list",
                    );
                };
                return list_profiles(&identity, &write_key, q("cursor"), limit).await;
            };
            profile_360(
                &db,
                &identity,
                sources,
                q("writeKey"),
                json!({"identifier": ident}),
            )
            .await
        }
        (Method::Get, ["profiles", id]) => {
            profile_360(
                &db,
                &identity,
                sources,
                q("writeKey"),
                json!({"profile": id}),
            )
            .await
        }
        (Method::Post, ["profiles", id, "unmerge"]) => {
            let body: Value = req.json().await.unwrap_or(Value::Null);
            let merge_id = body.get("mergeId").cloned().unwrap_or(Value::Null);
            let now = Date::now().as_millis() as f64;
            let payload = json!({"profile": id, "mergeId": merge_id, "nowMs": now as i64});
            // A profile not in the current graph is looked for in the graphs of earlier
            // identity shard counts, as a profile view is: a person not seen since the
            // count changed is unmerged there.
            let found = match first_answer(&identity, sources, q("writeKey"), "/unmerge", &payload)
                .await?
            {
                Some((key, answer)) => Some((key, answer, None)),
                None => {
                    earlier_answer(&db, &identity, sources, q("writeKey"), "/unmerge", &payload)
                        .await?
                }
            };
            let Some((key, answer, earlier)) = found else {
                return fail(
                    404,
                    "not_found",
                    format!("no merge to undo on profile {id}"),
                );
            };
            let u: Unmerged = serde_json::from_value(answer["unmerged"].clone())
                .map_err(|e| Error::RustError(e.to_string()))?;
            // Events of the restored profile's visitors go back to it.
            let store = super::storage::CloudStore::new(env)?;
            let unmerged = crate::erasure::Subjects::from(&crate::identity::Erased {
                profile_ids: vec![],
                identifiers: u.moved.clone(),
            });
            let events_moved = store
                .move_events(&key, id, &u.restored.id, &unmerged)
                .await
                .map_err(|e| Error::RustError(e.0))?;
            // Each side's conversions are credited from its own visits again.
            if let Some(source) = sources
                .get(&key)
                .filter(|s| !s.attribution.conversions.is_empty())
            {
                use crate::store::EventStore as _;
                store
                    .recredit(
                        &key,
                        &source.attribution,
                        &[id.to_string(), u.restored.id.clone()],
                    )
                    .await
                    .map_err(|e| Error::RustError(e.0))?;
            }
            // Both sides' segments are scored again now, from their stored events (the
            // unmerge left both activities stale), not at the next event.
            let mut changes = 0;
            if let Some(source) = sources.get(&key).filter(|s| crate::activation::active(s)) {
                let io = crate::pipeline::activate::Io {
                    store: &store,
                    identity: &identity,
                };
                let input = crate::pipeline::activate::Input {
                    profiles: vec![id.to_string(), u.restored.id.clone()],
                    ..Default::default()
                };
                let out = crate::pipeline::activate::run(&io, &key, source, input, now as i64)
                    .await
                    .map_err(|e| Error::RustError(e.0))?;
                changes = out.scored.iter().map(|s| s.changes.len()).sum::<usize>();
            }
            reply(
                200,
                json!({"ok": true, "unmerged": u, "eventsMoved": events_moved,
                       "segmentChanges": changes, "earlierLayout": earlier}),
            )
        }
        (Method::Delete, ["profiles", id]) => {
            let store = super::storage::CloudStore::new(env)?;
            let keys = match q("writeKey") {
                Some(k) => vec![k],
                None => sources.keys(),
            };
            let now = tracking_plan::time::format_rfc3339(Date::now().as_millis() as i64);
            for key in keys {
                // The graphs of the shard counts the source used before are erased too.
                let identity = DoIdentity::metered(env, super::Meter::start())?
                    .with_earlier(earlier_layouts(&db, &key).await?);
                match crate::erasure::erase_profile(&store, &identity, &key, id, &now).await {
                    Ok(report) => {
                        return reply(200, json!({"ok": true, "writeKey": key, "erased": report}))
                    }
                    Err(crate::error::Error::NoSuchProfile) => continue,
                    Err(e) => return reply(e.status(), e.to_json()),
                }
            }
            fail(404, "not_found", "no such profile")
        }
        (Method::Get, ["health"]) => reply(200, super::maintenance::health(env).await?),
        // Runs the maintenance now; `now` (RFC 3339) sets the clock it prunes by.
        (Method::Post, ["maintenance"]) => {
            let now = match q("now") {
                Some(t) => match tracking_plan::time::parse_rfc3339(&t) {
                    Some(ms) => ms,
                    None => return fail(400, "invalid_time", "now is not an RFC 3339 time"),
                },
                None => Date::now().as_millis() as i64,
            };
            reply(200, super::maintenance::run(env, sources, now).await?)
        }
        (Method::Get, ["stats"]) => stats(&db, q("writeKey"), q("days")).await,
        (Method::Get, ["sources"]) => reply(200, source_list(sources)),
        (Method::Post, ["costs"]) => {
            let body: Value = req.json().await.unwrap_or(Value::Null);
            import_costs(&db, sources, q("writeKey"), &body).await
        }
        (Method::Get, ["attribution"]) => attribution_report(&db, sources, q).await,
        (Method::Get, ["alerts"]) => {
            let list = rows(
                &db,
                "SELECT write_key AS writeKey, detail, at, delivered FROM alerts \
                 WHERE (?1 IS NULL OR write_key = ?1) ORDER BY day DESC, id DESC LIMIT ?2",
                &[opt(&q("writeKey")), limit.into()],
            )
            .await?;
            let alerts: Vec<Value> = list
                .into_iter()
                .map(|r| {
                    let mut a: Value = r["detail"]
                        .as_str()
                        .and_then(|d| serde_json::from_str(d).ok())
                        .unwrap_or_default();
                    if let Some(o) = a.as_object_mut() {
                        o.insert("writeKey".into(), r["writeKey"].clone());
                        o.insert("at".into(), r["at"].clone());
                        o.insert("delivered".into(), r["delivered"].clone());
                    }
                    a
                })
                .collect();
            reply(200, json!({"ok": true, "alerts": alerts}))
        }
        (Method::Get, ["segments"]) => {
            super::activation_admin::segments(&db, sources, q("writeKey")).await
        }
        (Method::Put, ["segments"]) => {
            let text = req.text().await?;
            super::activation_admin::declare(&db, sources, q("writeKey"), Some(text)).await
        }
        (Method::Delete, ["segments"]) => {
            super::activation_admin::declare(&db, sources, q("writeKey"), None).await
        }
        (Method::Get, ["deliveries"]) => super::activation_admin::deliveries(&db, q, limit).await,
        (Method::Post, ["deliveries", "replay"]) => {
            super::activation_admin::replay(env, q("writeKey"), q("destination")).await
        }
        (Method::Get, ["audiences", file]) => {
            super::activation_admin::audience(env, &db, sources, file, q("writeKey"), q("format"))
                .await
        }
        (Method::Get, ["insights"]) => insights(&db, sources, q("writeKey"), q("days")).await,
        // The lake's objects under a prefix (default: all), a page at a time.
        (Method::Get, ["lake"]) => {
            let bucket = env.bucket("ARCHIVE")?;
            let mut listing = bucket
                .list()
                .prefix(q("prefix").unwrap_or_else(|| "lake/".into()));
            if let Some(c) = q("cursor") {
                listing = listing.cursor(c);
            }
            let page = listing.execute().await?;
            let keys: Vec<Value> = page
                .objects()
                .iter()
                .map(|o| json!({"key": o.key(), "size": o.size()}))
                .collect();
            let next = page.cursor().filter(|_| page.truncated());
            reply(200, json!({"ok": true, "objects": keys, "cursor": next}))
        }
        // One object as stored (gzip NDJSON).
        (Method::Get, ["lake", ..]) => {
            let key = path.trim_start_matches("/admin/v1/lake/");
            match env.bucket("ARCHIVE")?.get(key).execute().await? {
                Some(obj) => match obj.body() {
                    Some(b) => {
                        let mut r = Response::from_bytes(b.bytes().await?)?;
                        r.headers_mut().set("Content-Type", "application/gzip")?;
                        Ok(r)
                    }
                    None => fail(404, "not_found", "empty object"),
                },
                None => fail(404, "not_found", "no such object"),
            }
        }
        _ => fail(404, "not_found", "no such admin endpoint"),
    }
}

/// The shard counts `write_key`'s identity graph has had (`identity_layouts`, recorded
/// with stored events).
async fn earlier_layouts(db: &D1Database, write_key: &str) -> Result<Vec<u32>> {
    #[derive(serde::Deserialize)]
    struct Layout {
        shards: u32,
    }
    let rows = db
        .prepare("SELECT shards FROM identity_layouts WHERE write_key = ?1")
        .bind(&[write_key.into()])?
        .all()
        .await?
        .results::<Layout>()?;
    Ok(rows.into_iter().map(|l| l.shards).collect())
}

/// Asks the identity object of each source (or only `write_key`'s) until one answers
/// without an error; profile ids are unique across sources.
async fn first_answer(
    identity: &DoIdentity,
    sources: &Sources,
    write_key: Option<String>,
    op: &str,
    payload: &Value,
) -> Result<Option<(String, Value)>> {
    let keys: Vec<String> = match write_key {
        Some(k) => vec![k],
        None => sources.keys(),
    };
    for key in keys {
        let answer = identity.request(&key, op, payload).await?;
        if answer.get("error").is_none() {
            return Ok(Some((key, answer)));
        }
    }
    Ok(None)
}

fn split_ids(ids: &[crate::identity::Ident]) -> (Vec<String>, Vec<String>) {
    let pick = |k: IdKind| {
        ids.iter()
            .filter(|i| i.kind == k)
            .map(|i| i.value.clone())
            .collect::<Vec<_>>()
    };
    (pick(IdKind::Anonymous), pick(IdKind::UserId))
}

async fn profile_360(
    db: &D1Database,
    identity: &DoIdentity,
    sources: &Sources,
    write_key: Option<String>,
    payload: Value,
) -> Result<Response> {
    let found =
        match first_answer(identity, sources, write_key.clone(), "/profile", &payload).await? {
            Some((key, answer)) => Some((key, answer, None)),
            None => earlier_answer(db, identity, sources, write_key, "/profile", &payload).await?,
        };
    let Some((key, answer, earlier)) = found else {
        return fail(404, "not_found", "no such profile");
    };
    let profile = &answer["profile"];
    let id = profile["id"].as_str().unwrap_or_default().to_string();
    let ids: Vec<crate::identity::Ident> =
        serde_json::from_value(profile["identifiers"].clone()).unwrap_or_default();
    let (anons, users) = split_ids(&ids);
    let counts = rows(
        db,
        "SELECT type, event, COUNT(*) AS count, MIN(timestamp) AS firstSeen, \
         MAX(timestamp) AS lastSeen FROM events WHERE write_key = ?1 AND profile_id = ?2 \
         GROUP BY type, event ORDER BY count DESC LIMIT 100",
        &[key.as_str().into(), id.as_str().into()],
    )
    .await?;
    let segments = rows(
        db,
        "SELECT segment, since FROM segment_members WHERE write_key = ?1 AND profile_id = ?2 \
         ORDER BY segment",
        &[key.as_str().into(), id.as_str().into()],
    )
    .await?;
    let mut consent = rows(
        db,
        "SELECT anonymous_id AS anonymousId, user_id AS userId, categories, source, gpc, \
         timestamp, evidence FROM consent_log WHERE write_key = ?1 AND \
         (anonymous_id IN (SELECT value FROM json_each(?2)) OR user_id IN (SELECT value FROM json_each(?3))) \
         ORDER BY id DESC LIMIT 50",
        &[key.as_str().into(), list(&anons), list(&users)],
    )
    .await?;
    for o in consent.iter_mut().filter_map(Value::as_object_mut) {
        json_field(o, "evidence");
    }
    reply(
        200,
        json!({
            "ok": true,
            "writeKey": key,
            "profile": profile,
            "identified": ids.iter().any(|i| i.kind != IdKind::Anonymous),
            "consent": {"current": profile.get("consent"), "log": consent},
            "events": counts,
            "segments": segments,
            "merges": answer["merges"],
            "conflicts": answer["conflicts"],
            // Found only in the graph of an earlier identity shard count: erasable, and
            // read-only otherwise.
            "earlierLayout": earlier,
        }),
    )
}

/// The first answer without an error to `op` (`/profile`, `/unmerge`) from the graphs
/// of a source's earlier shard counts (`identity_layouts`), when the current graphs have
/// none: a person not seen since the count changed. With the count that answered.
async fn earlier_answer(
    db: &D1Database,
    identity: &DoIdentity,
    sources: &Sources,
    write_key: Option<String>,
    op: &str,
    payload: &Value,
) -> Result<Option<(String, Value, Option<u32>)>> {
    let keys = write_key.map_or_else(|| sources.keys(), |k| vec![k]);
    for key in keys {
        for n in earlier_layouts(db, &key).await? {
            if n == identity.shards {
                continue;
            }
            let answer = identity.layout(n).request(&key, op, payload).await?;
            if answer.get("error").is_none() {
                return Ok(Some((key, answer, Some(n))));
            }
        }
    }
    Ok(None)
}

/// Replays quarantined events (by `ids`, or every one with `reason`) through the
/// pipeline, after the plan or the sender was fixed. Each replayed row leaves the
/// quarantine: it is now stored, a duplicate of a stored event, or quarantined again as
/// a new row with today's reasons.
async fn replay(env: &Env, db: &D1Database, sources: &Sources, body: &Value) -> Result<Response> {
    use crate::pipeline::replay;
    let ids: Vec<i64> = body
        .get("ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    if ids.is_empty() && reason.is_none() {
        return fail(400, "missing_selection", "give `ids` or `reason`");
    }
    let ids_json = JsValue::from_str(&serde_json::to_string(&ids).unwrap_or_default());
    let found = rows(
        db,
        "SELECT id, write_key, payload, qkey, edge FROM quarantine WHERE \
         (id IN (SELECT value FROM json_each(?1)) OR reason = ?2) ORDER BY id LIMIT 500",
        &[ids_json, opt(&reason)],
    )
    .await?;
    let parsed: Vec<replay::Row> = found
        .iter()
        .filter_map(|r| {
            let edge: Value = r["edge"]
                .as_str()
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_default();
            Some(replay::Row {
                id: r["id"].as_i64()?,
                write_key: r["write_key"].as_str()?.to_string(),
                payload: r["payload"]
                    .as_str()
                    .and_then(|p| serde_json::from_str(p).ok())?,
                qkey: r["qkey"].as_str().map(str::to_string),
                gpc: edge["gpc"].as_bool().unwrap_or(false),
                country: edge["country"].as_str().map(str::to_string),
            })
        })
        .filter(|r| sources.get(&r.write_key).is_some())
        .collect();
    let mut summary = Vec::new();
    for batch in replay::batches(parsed) {
        let text = batch.body();
        let request_id = super::objects::random_uuid();
        let ireq = crate::pipeline::IngestRequest {
            endpoint: crate::pipeline::Endpoint::Batch,
            body: text.as_bytes(),
            authorization: None,
            write_key_header: None,
            url_write_key: None,
            now_ms: Date::now().as_millis() as i64,
            request_id: &request_id,
            edge: crate::enrich::EdgeInfo {
                gpc: batch.gpc,
                country: batch.country.as_deref(),
                ..Default::default()
            },
        };
        let report = match super::run_pipeline(env, sources, &ireq, &Default::default()).await? {
            Ok(r) => r,
            Err(e) => return reply(e.status(), e.to_json()),
        };
        let done = batch.done(&report);
        db.prepare("DELETE FROM quarantine WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(&[JsValue::from_str(
                &serde_json::to_string(&done).unwrap_or_default(),
            )])?
            .run()
            .await?;
        for (row, v) in batch.rows.iter().zip(&report.results) {
            summary.push(json!({"id": row.id, "status": v.status, "reasons": v.reasons}));
        }
    }
    reply(200, json!({"ok": true, "replayed": summary}))
}

/// The `days` of a report: 30 unless given, from 1 to 3,660.
fn days_param(days: Option<String>) -> i32 {
    days.and_then(|d| d.parse::<i32>().ok())
        .unwrap_or(30)
        .clamp(1, 3660)
}

/// A number column of a D1 row (D1 answers numbers as floats), 0 when absent.
pub(super) fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// A text column of a D1 row, empty when absent.
pub(super) fn text(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn stats(
    db: &D1Database,
    write_key: Option<String>,
    days: Option<String>,
) -> Result<Response> {
    let days = days_param(days);
    let since = format!("-{days} days");
    let wk = opt(&write_key);
    let totals = rows(
        db,
        "SELECT COALESCE(SUM(received),0) AS received, COALESCE(SUM(accepted),0) AS accepted, \
         COALESCE(SUM(duplicates),0) AS duplicates, COALESCE(SUM(quarantined),0) AS quarantined, \
         COALESCE(SUM(refused),0) AS refused, COALESCE(SUM(identified),0) AS identified, \
         COALESCE(SUM(bots),0) AS bots FROM daily_counts \
         WHERE (?1 IS NULL OR write_key = ?1) AND day >= date('now', ?2)",
        &[wk.clone(), since.as_str().into()],
    )
    .await?;
    let by_day = rows(
        db,
        "SELECT day, SUM(received) AS received, SUM(accepted) AS accepted, \
         SUM(quarantined) AS quarantined, SUM(refused) AS refused, SUM(identified) AS identified \
         FROM daily_counts WHERE (?1 IS NULL OR write_key = ?1) AND day >= date('now', ?2) \
         GROUP BY day ORDER BY day",
        &[wk.clone(), since.as_str().into()],
    )
    .await?;
    let reasons = rows(
        db,
        "SELECT reason, COUNT(*) AS count FROM quarantine WHERE (?1 IS NULL OR write_key = ?1) \
         AND received_at >= date('now', ?2) GROUP BY reason ORDER BY count DESC",
        &[wk, since.as_str().into()],
    )
    .await?;
    let t = totals.into_iter().next().unwrap_or(Value::Null);
    let n = |k: &str| t.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let received = n("received");
    let reasons: Vec<Value> = reasons
        .into_iter()
        .map(|r| {
            let c = r.get("count").and_then(Value::as_f64).unwrap_or(0.0);
            json!({"reason": r["reason"], "count": c, "rate": ratio(c, received)})
        })
        .collect();
    reply(
        200,
        json!({
            "ok": true,
            "days": days,
            "totals": t,
            "identifiedShare": ratio(n("identified"), n("accepted")),
            "anonymousShare": if n("accepted") > 0.0 { 1.0 - ratio(n("identified"), n("accepted")) } else { 0.0 },
            "quarantineRate": ratio(n("quarantined"), received),
            "refusedRate": ratio(n("refused"), received),
            "quarantineByReason": reasons,
            "byDay": by_day,
        }),
    )
}

/// The inspector's charts for one source (or all), over the last `days` (default 30)
/// and, by hour, the last 48 hours: each with its data and its SVG (`insights`).
async fn insights(
    db: &D1Database,
    sources: &Sources,
    write_key: Option<String>,
    days: Option<String>,
) -> Result<Response> {
    use crate::insights::{charts, Count, Day, Hour, Input};
    let days = days_param(days);
    let since: JsValue = format!("-{days} days").as_str().into();
    let wk = opt(&write_key);
    let hours_since =
        tracking_plan::time::format_rfc3339(Date::now().as_millis() as i64 - 48 * 3_600_000);
    let num = |v: &Value, k: &str| num(v, k) as u64;
    let counts = |rows: Vec<Value>| -> Vec<Count> {
        rows.iter()
            .map(|r| Count {
                name: text(r, "name"),
                count: num(r, "count"),
            })
            .collect()
    };
    let day_rows = rows(
        db,
        "SELECT day, SUM(received) AS received, SUM(accepted) AS accepted, \
         SUM(duplicates) AS duplicates, SUM(quarantined) AS quarantined, SUM(refused) AS refused, \
         SUM(identified) AS identified FROM daily_counts \
         WHERE (?1 IS NULL OR write_key = ?1) AND day >= date('now', ?2) GROUP BY day ORDER BY day",
        &[wk.clone(), since.clone()],
    )
    .await?;
    let hour_rows = rows(
        db,
        "SELECT substr(received_at, 1, 13) AS hour, 'accepted' AS verdict, COUNT(*) AS count \
         FROM events WHERE (?1 IS NULL OR write_key = ?1) AND received_at >= ?2 GROUP BY hour \
         UNION ALL SELECT substr(received_at, 1, 13) AS hour, 'quarantined' AS verdict, \
         COUNT(*) AS count FROM quarantine WHERE (?1 IS NULL OR write_key = ?1) \
         AND received_at >= ?2 GROUP BY hour",
        &[wk.clone(), hours_since.as_str().into()],
    )
    .await?;
    let reasons = rows(
        db,
        "SELECT reason AS name, COUNT(*) AS count FROM quarantine WHERE (?1 IS NULL OR write_key = ?1) \
         AND received_at >= date('now', ?2) GROUP BY reason ORDER BY count DESC",
        &[wk.clone(), since.clone()],
    )
    .await?;
    let consent = rows(
        db,
        "SELECT categories FROM consent_log WHERE id IN (SELECT MAX(id) FROM consent_log \
         WHERE (?1 IS NULL OR write_key = ?1) AND received_at >= date('now', ?2) \
         GROUP BY COALESCE(anonymous_id, user_id, message_id))",
        &[wk.clone(), since.clone()],
    )
    .await?;
    let events = rows(
        db,
        "SELECT COALESCE(event, type) AS name, COUNT(*) AS count FROM events \
         WHERE (?1 IS NULL OR write_key = ?1) AND received_at >= date('now', ?2) \
         GROUP BY name ORDER BY count DESC LIMIT 1000",
        &[wk, since],
    )
    .await?;
    let planned = write_key
        .as_deref()
        .and_then(|k| sources.get(k))
        .and_then(|s| s.compiled.as_ref())
        .map(|p| p.event_names().into_iter().map(str::to_string).collect());
    let input = Input {
        days: day_rows
            .iter()
            .map(|r| Day {
                day: text(r, "day"),
                received: num(r, "received"),
                accepted: num(r, "accepted"),
                duplicates: num(r, "duplicates"),
                quarantined: num(r, "quarantined"),
                refused: num(r, "refused"),
                identified: num(r, "identified"),
            })
            .collect(),
        hours: hour_rows
            .iter()
            .map(|r| Hour {
                hour: text(r, "hour"),
                verdict: text(r, "verdict"),
                count: num(r, "count"),
            })
            .collect(),
        reasons: counts(reasons),
        consent: consent.iter().map(|r| text(r, "categories")).collect(),
        events: counts(events),
        planned,
    };
    reply(
        200,
        json!({"ok": true, "days": days, "charts": charts(&input)}),
    )
}

/// `POST /admin/v1/costs?writeKey=`: `{"csv": "date,source,medium,campaign,cost,currency\n…",
/// "rates": {"USD": 0.92}}`. Every row is converted to the source's report currency; a
/// row for the same day, source, medium and campaign replaces the earlier one. Nothing
/// is imported when a line is wrong: the answer lists each wrong line.
async fn import_costs(
    db: &D1Database,
    sources: &Sources,
    write_key: Option<String>,
    body: &Value,
) -> Result<Response> {
    let Some((key, source)) = write_key.and_then(|k| sources.get(&k).map(|s| (k, s))) else {
        return fail(
            400,
            "missing_write_key",
            "give a configured source's writeKey",
        );
    };
    let csv = body.get("csv").and_then(Value::as_str).unwrap_or_default();
    let rates = body
        .get("rates")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let currency = source.attribution.currency().to_ascii_uppercase();
    let costs = match crate::attribution::parse_costs(csv, &rates, &currency) {
        Ok(c) => c,
        Err(lines) => {
            return reply(
                400,
                json!({"ok": false, "error": {"code": "invalid_csv",
                "message": "the CSV has wrong lines; nothing was imported"}, "lines": lines}),
            )
        }
    };
    let rows: Vec<Value> = costs
        .iter()
        .map(|c| json!([c.date, c.source, c.medium, c.campaign, c.cost]))
        .collect();
    let rate_rows: Vec<Value> = rates
        .iter()
        .filter_map(|(k, v)| {
            Some(json!([
                k.to_ascii_uppercase(),
                v.as_f64().filter(|r| *r > 0.0)?
            ]))
        })
        .collect();
    let stmts = vec![
        db.prepare(
            "INSERT INTO costs (write_key, day, source, medium, campaign, cost) \
             SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?2) \
             WHERE true ON CONFLICT (write_key, day, source, medium, campaign) DO UPDATE SET cost = excluded.cost",
        )
        .bind(&[key.as_str().into(), serde_json::to_string(&rows).unwrap_or_default().as_str().into()])?,
        db.prepare(
            "INSERT INTO cost_rates (write_key, currency, rate) SELECT ?1, value ->> 0, value ->> 1 \
             FROM json_each(?2) WHERE true ON CONFLICT (write_key, currency) DO UPDATE SET rate = excluded.rate",
        )
        .bind(&[key.as_str().into(), serde_json::to_string(&rate_rows).unwrap_or_default().as_str().into()])?,
    ];
    db.batch(stmts).await?;
    let total: f64 = costs.iter().map(|c| c.cost).sum();
    reply(
        200,
        json!({"ok": true, "imported": costs.len(), "currency": currency, "total": total}),
    )
}

/// `GET /admin/v1/attribution?writeKey=&model=&window=&from=&to=`: conversions, revenue,
/// cost, ROAS and CAC by channel and by campaign (`attribution::report`), in the
/// source's report currency, for conversions and costs in `[from, to)` (days).
async fn attribution_report(
    db: &D1Database,
    sources: &Sources,
    q: impl Fn(&str) -> Option<String>,
) -> Result<Response> {
    use crate::attribution::{report, Cost, CreditRow, Model, WINDOWS};
    let Some((key, source)) = q("writeKey").and_then(|k| sources.get(&k).map(|s| (k, s))) else {
        return fail(
            400,
            "missing_write_key",
            "give a configured source's writeKey",
        );
    };
    let model = q("model").unwrap_or_else(|| "last_non_direct".into());
    let Some(model) = Model::from_name(&model) else {
        return fail(
            400,
            "invalid_model",
            "model is first_touch, last_non_direct, linear or position_based",
        );
    };
    let window: u32 = q("window").and_then(|w| w.parse().ok()).unwrap_or(28);
    if !WINDOWS.contains(&window) {
        return fail(400, "invalid_window", "window is 7 or 28 (days)");
    }
    let from = q("from").unwrap_or_else(|| "0000".into());
    let to = q("to").unwrap_or_else(|| "~".into());
    let currency = source.attribution.currency().to_ascii_uppercase();
    let credits = rows(
        db,
        "SELECT channel, campaign, SUM(credit) AS credit, \
         SUM(revenue * COALESCE(CASE WHEN currency IS NULL OR upper(currency) = ?6 THEN 1.0 ELSE \
         (SELECT rate FROM cost_rates r WHERE r.write_key = c.write_key AND r.currency = upper(c.currency)) END, 0)) \
         AS revenue, SUM(CASE WHEN currency IS NULL OR upper(currency) = ?6 OR EXISTS (SELECT 1 FROM cost_rates r \
         WHERE r.write_key = c.write_key AND r.currency = upper(c.currency)) THEN 0 ELSE credit END) AS unconverted \
         FROM conversion_credits c WHERE write_key = ?1 AND model = ?2 AND window_days = ?3 \
         AND at >= ?4 AND at < ?5 GROUP BY channel, campaign",
        &[key.as_str().into(), model.as_str().into(), window.into(), from.as_str().into(), to.as_str().into(), currency.as_str().into()],
    )
    .await?;
    let costs = rows(
        db,
        "SELECT day, source, medium, campaign, cost FROM costs WHERE write_key = ?1 AND day >= ?2 AND day < ?3",
        &[key.as_str().into(), from.as_str().into(), to.as_str().into()],
    )
    .await?;
    let unconverted: f64 = credits.iter().map(|c| num(c, "unconverted")).sum();
    let credits: Vec<CreditRow> = credits
        .iter()
        .map(|c| CreditRow {
            channel: text(c, "channel"),
            campaign: c
                .get("campaign")
                .and_then(Value::as_str)
                .map(str::to_string),
            credit: num(c, "credit"),
            revenue: num(c, "revenue"),
        })
        .collect();
    let costs: Vec<Cost> = costs
        .iter()
        .map(|c| Cost {
            date: text(c, "day"),
            source: text(c, "source"),
            medium: text(c, "medium"),
            campaign: text(c, "campaign"),
            cost: num(c, "cost"),
        })
        .collect();
    let mut r = report(&credits, &costs, &source.attribution.channels);
    r["ok"] = json!(true);
    r["model"] = json!(model.as_str());
    r["window"] = json!(window);
    r["currency"] = json!(currency);
    r["unconvertedConversions"] = json!(unconverted);
    reply(200, r)
}
