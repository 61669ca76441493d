//! The Cloudflare Workers adapter: routes requests, reads configuration and the body,
//! hands them to the pipeline, and implements the store on D1. Static files (the example
//! site and the SDK) are served by Workers Static Assets from the same origin. Decides
//! nothing about events itself.

use crate::ingest::{ingest, Endpoint, IngestRequest, RequestError, MAX_BATCH_BYTES};
use crate::sources::Sources;
use crate::store::{EventStore, Insert, QuarantinedEvent, StoreError, StoredEvent};
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::*;

fn opt(v: &Option<String>) -> JsValue {
    v.as_deref().map(JsValue::from_str).unwrap_or(JsValue::NULL)
}

struct D1Store {
    db: D1Database,
}

impl D1Store {
    /// Runs one statement per row in a single D1 batch (one round trip, one transaction).
    async fn run_batch(
        &self,
        sql: &str,
        rows: impl Iterator<Item = Vec<JsValue>>,
    ) -> std::result::Result<Vec<D1Result>, StoreError> {
        let err = |e: Error| StoreError(e.to_string());
        let stmts = rows
            .map(|args| self.db.prepare(sql).bind(&args))
            .collect::<Result<Vec<_>>>()
            .map_err(err)?;
        self.db.batch(stmts).await.map_err(err)
    }
}

impl EventStore for D1Store {
    async fn insert_events(
        &self,
        events: &[StoredEvent],
    ) -> std::result::Result<Vec<Insert>, StoreError> {
        let rows = events.iter().map(|e| {
            vec![
                e.write_key.as_str().into(),
                e.message_id.as_str().into(),
                e.kind.into(),
                opt(&e.event),
                opt(&e.anonymous_id),
                opt(&e.user_id),
                e.timestamp.as_str().into(),
                e.received_at.as_str().into(),
                e.payload.as_str().into(),
            ]
        });
        let results = self
            .run_batch(
                "INSERT INTO events (write_key, message_id, type, event, anonymous_id, user_id, \
                 timestamp, received_at, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (write_key, message_id) DO NOTHING",
                rows,
            )
            .await?;
        results
            .iter()
            .map(|r| {
                let meta = r.meta().map_err(|e| StoreError(e.to_string()))?;
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
                q.reasons.as_str().into(),
                q.payload.as_str().into(),
                q.received_at.as_str().into(),
            ]
        });
        self.run_batch(
            "INSERT INTO quarantine (write_key, message_id, reasons, payload, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rows,
        )
        .await?;
        Ok(())
    }
}

fn json_response(status: u16, body: &Value) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

fn error_response(e: &RequestError) -> Result<Response> {
    json_response(e.status, &e.to_json())
}

thread_local! {
    /// The parsed `SOURCES`, kept per isolate and re-parsed only when the text changes:
    /// every request needs it, and its JSON does not change between requests.
    static SOURCES_CACHE: std::cell::RefCell<Option<(String, std::rc::Rc<Sources>)>> =
        const { std::cell::RefCell::new(None) };
}

fn sources(env: &Env) -> std::result::Result<std::rc::Rc<Sources>, RequestError> {
    let raw = env
        .var("SOURCES")
        .map(|v| v.to_string())
        .or_else(|_| env.secret("SOURCES").map(|v| v.to_string()));
    let raw = raw.map_err(|_| RequestError {
        status: 500,
        code: "not_configured",
        message: "the SOURCES variable is not set".into(),
    })?;
    if let Some(cached) = SOURCES_CACHE.with_borrow(|c| {
        c.as_ref()
            .filter(|(text, _)| *text == raw)
            .map(|(_, s)| s.clone())
    }) {
        return Ok(cached);
    }
    let parsed = std::rc::Rc::new(Sources::from_json(&raw).map_err(|m| RequestError {
        status: 500,
        code: "not_configured",
        message: m,
    })?);
    SOURCES_CACHE.with_borrow_mut(|c| *c = Some((raw, parsed.clone())));
    Ok(parsed)
}

/// CORS: browsers on a configured origin may call the API; same-origin needs nothing.
fn cors_headers(origin: Option<&str>, sources: &Sources) -> Headers {
    let headers = Headers::new();
    if let Some(o) = origin.filter(|o| sources.origin_allowed(o)) {
        let _ = headers.set("Access-Control-Allow-Origin", o);
        let _ = headers.set("Access-Control-Allow-Credentials", "true");
        let _ = headers.set("Access-Control-Allow-Methods", "POST, OPTIONS");
        let _ = headers.set(
            "Access-Control-Allow-Headers",
            "Content-Type, Authorization",
        );
        let _ = headers.set("Access-Control-Max-Age", "86400");
        let _ = headers.set("Vary", "Origin");
    }
    headers
}

async fn handle_ingest(mut req: Request, env: &Env, endpoint: Endpoint) -> Result<Response> {
    let sources = match sources(env) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let origin = req.headers().get("Origin")?;
    let cors = cors_headers(origin.as_deref(), &sources);
    let method = req.method();
    if method == Method::Options {
        return Ok(Response::empty()?.with_status(204).with_headers(cors));
    }
    if method != Method::Post {
        let e = RequestError {
            status: 405,
            code: "method_not_allowed",
            message: "use POST".into(),
        };
        return Ok(error_response(&e)?.with_headers(cors));
    }
    // Refuse an oversized body before reading it, when its length is declared.
    let declared = req
        .headers()
        .get("Content-Length")?
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES) {
        let e = RequestError {
            status: 413,
            code: "batch_too_large",
            message: format!("request body is larger than {MAX_BATCH_BYTES} bytes"),
        };
        return Ok(error_response(&e)?.with_headers(cors));
    }
    let body = req.bytes().await?;
    let authorization = req.headers().get("Authorization")?;
    let ireq = IngestRequest {
        endpoint,
        body: &body,
        authorization: authorization.as_deref(),
        now_ms: Date::now().as_millis() as i64,
    };
    let store = D1Store { db: env.d1("DB")? };
    let resp = match ingest(&store, &sources, &ireq).await {
        Ok(report) => Response::from_json(&report)?,
        Err(e) => error_response(&e)?,
    };
    let headers = resp.headers().clone();
    for (k, v) in cors.entries() {
        headers.set(&k, &v)?;
    }
    Ok(resp.with_headers(headers))
}

/// Constant-time comparison for the admin token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle_admin(req: Request, env: &Env) -> Result<Response> {
    let token = env
        .secret("ADMIN_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("ADMIN_TOKEN").map(|s| s.to_string()));
    let Ok(token) = token else {
        return json_response(
            500,
            &json!({"ok": false, "error": {"code": "not_configured", "message": "ADMIN_TOKEN is not set"}}),
        );
    };
    let given = req.headers().get("Authorization")?.unwrap_or_default();
    let given = given.strip_prefix("Bearer ").unwrap_or_default();
    if token.is_empty() || !same(given.as_bytes(), token.as_bytes()) {
        return json_response(
            401,
            &json!({"ok": false, "error": {"code": "unauthorized", "message": "a valid Bearer admin token is required"}}),
        );
    }
    let url = req.url()?;
    let q = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    match (req.method(), req.path().as_str()) {
        (Method::Get, "/admin/v1/events") => {
            let limit = q("limit")
                .and_then(|l| l.parse::<i32>().ok())
                .unwrap_or(100)
                .clamp(1, 1000);
            let db = env.d1("DB")?;
            let stmt = db
                .prepare(
                    "SELECT write_key AS writeKey, message_id AS messageId, type, event, \
                     anonymous_id AS anonymousId, user_id AS userId, timestamp, \
                     received_at AS receivedAt, payload FROM events \
                     WHERE (?1 IS NULL OR anonymous_id = ?1) AND (?2 IS NULL OR event = ?2) \
                     ORDER BY received_at DESC, rowid DESC LIMIT ?3",
                )
                .bind(&[opt(&q("anonymousId")), opt(&q("event")), limit.into()])?;
            let rows: Vec<Value> = stmt.all().await?.results()?;
            json_response(200, &json!({"ok": true, "events": rows}))
        }
        (Method::Get, "/admin/v1/quarantine") => {
            let db = env.d1("DB")?;
            let rows: Vec<Value> = db
                .prepare(
                    "SELECT id, write_key AS writeKey, message_id AS messageId, reasons, payload, \
                     received_at AS receivedAt FROM quarantine ORDER BY id DESC LIMIT 1000",
                )
                .all()
                .await?
                .results()?;
            json_response(200, &json!({"ok": true, "quarantine": rows}))
        }
        _ => json_response(
            404,
            &json!({"ok": false, "error": {"code": "not_found", "message": "no such admin endpoint"}}),
        ),
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let result = if path.starts_with("/v1/") {
        match Endpoint::from_path(&path) {
            Some(endpoint) => handle_ingest(req, &env, endpoint).await,
            None => json_response(
                404,
                &json!({"ok": false, "error": {"code": "not_found", "message": format!("no endpoint {path}")}}),
            ),
        }
    } else if path.starts_with("/admin/") {
        handle_admin(req, &env).await
    } else {
        env.assets("ASSETS")?.fetch_request(req).await
    };
    // Nothing escapes as an opaque 500 from the runtime: the client gets a JSON cause.
    result.or_else(|e| {
        json_response(
            500,
            &json!({"ok": false, "error": {"code": "internal", "message": e.to_string()}}),
        )
    })
}
