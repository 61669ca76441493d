//! `GET /v1/segments`: the first-party personalization endpoint behind
//! `sightline.segments()`. Reads the visitor's latest consent decision from the consent
//! log, the profile their anonymous id belongs to from the identity graph, and that
//! profile's membership and traits; `crate::activation` decides whether anything is
//! shown (`personalization_granted`) and what (`personal_view`: segment ids and the
//! source's shareable traits, coarsened).

use super::storage::CloudStore;
use crate::activation;
use crate::error::Error as RequestError;
use crate::sources::Sources;
use serde_json::{json, Value};
use worker::*;

pub async fn handle(req: &Request, env: &Env, sources: &Sources) -> Result<Response> {
    let origin = req.headers().get("Origin")?;
    let cors = super::cors_headers(req, sources);
    let url = req.url()?;
    let q = |k: &str| super::query_value(&url, k);
    let key = q("writeKey").unwrap_or_default();
    let Some(source) = sources.get(&key) else {
        return super::with_headers(super::error_response(&RequestError::NotFound)?, &cors);
    };
    let own = url.origin().ascii_serialization();
    if !source.accepts_origin(origin.as_deref(), &own) {
        return super::with_headers(
            super::error_response(&RequestError::OriginNotAllowed)?,
            &cors,
        );
    }
    let aid = q("anonymousId")
        .or_else(|| super::cookie_value(req, super::COOKIE))
        .filter(|a| crate::pipeline::valid_cookie_id(a));
    let view = match aid {
        Some(aid) => view(env, &key, source, &aid).await?,
        None => activation::personal_view(source, None, false),
    };
    let resp = Response::from_json(
        &json!({"ok": true, "segments": view["segments"], "traits": view["traits"]}),
    )?;
    resp.headers().set("Cache-Control", "private, no-store")?;
    super::with_headers(resp, &cors)
}

async fn view(env: &Env, key: &str, source: &crate::sources::Source, aid: &str) -> Result<Value> {
    let db = env.d1("DB")?;
    let latest: Option<Value> = db
        .prepare(
            "SELECT categories FROM consent_log WHERE write_key = ?1 AND anonymous_id = ?2 \
             ORDER BY received_at DESC, id DESC LIMIT 1",
        )
        .bind(&[key.into(), aid.into()])?
        .first::<Value>(None)
        .await?
        .and_then(|r| {
            r["categories"]
                .as_str()
                .and_then(|c| serde_json::from_str(c).ok())
        });
    if !activation::personalization_granted(latest.as_ref()) {
        return Ok(activation::personal_view(source, None, false));
    }
    let identity = super::objects::DoIdentity::metered(env, super::Meter::start())?;
    let body = json!({"identifier": {"kind": "anonymous_id", "value": aid}});
    let profile = identity
        .request(key, "/profile", &body)
        .await
        .ok()
        .and_then(|a| {
            a.pointer("/profile/id")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let Some(profile) = profile else {
        return Ok(activation::personal_view(source, None, true));
    };
    let store = CloudStore::new(env)?;
    let io = crate::pipeline::activate::Io {
        store: &store,
        identity: &identity,
    };
    let now = Date::now().as_millis() as i64;
    let states =
        crate::pipeline::activate::states(&io, key, source, std::slice::from_ref(&profile), now)
            .await
            .map_err(|e| Error::RustError(e.0))?;
    Ok(activation::personal_view(
        source,
        states.get(&profile),
        true,
    ))
}
