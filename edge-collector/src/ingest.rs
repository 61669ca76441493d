//! Ingestion: decides, for one HTTP request to the Segment-compatible API, whether the
//! request is refused as a whole (a 4xx with a JSON error naming the cause), and for each
//! event in it whether it is accepted, a duplicate, or quarantined with typed reasons.
//! Nothing is dropped without a verdict.

use crate::sources::Sources;
use crate::store::{EventStore, Insert, QuarantinedEvent, StoredEvent};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tracking_plan::time::{format_rfc3339, parse_rfc3339};
use tracking_plan::{Message, MessageType};

/// Segment's limits: 32 KB per message, 500 KB per request.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Longest messageId kept; longer ones are quarantined (they are dedup keys).
pub const MAX_MESSAGE_ID_LEN: usize = 200;

/// Which ingestion endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Batch,
    Single(MessageType),
}

impl Endpoint {
    /// `/v1/batch`, `/v1/track`, ... and the short forms `/v1/b`, `/v1/t`, ...
    pub fn from_path(path: &str) -> Option<Self> {
        let name = path.strip_prefix("/v1/")?.trim_end_matches('/');
        match name {
            "batch" | "b" | "import" => Some(Endpoint::Batch),
            other => MessageType::from_name(other).map(Endpoint::Single),
        }
    }
}

/// One request as the pipeline sees it: no platform types.
#[derive(Debug, Clone)]
pub struct IngestRequest<'a> {
    pub endpoint: Endpoint,
    pub body: &'a [u8],
    pub authorization: Option<&'a str>,
    /// Server time when the request arrived, in ms since the epoch.
    pub now_ms: i64,
}

/// A refusal of the whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl RequestError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body sent with the error status.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"ok": false, "error": {"code": self.code, "message": self.message}})
    }
}

/// Why an event was quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub kind: &'static str,
    /// JSON path inside the message the reason is about (`$` for the whole message).
    pub path: String,
    pub message: String,
}

impl Reason {
    fn new(kind: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Reason {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Accepted,
    Duplicate,
    Quarantined,
}

/// The verdict on one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub status: Status,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// The 200 answer: one verdict per event, in request order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub accepted: usize,
    pub duplicates: usize,
    pub quarantined: usize,
    pub results: Vec<Verdict>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBatch<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    sent_at: Option<String>,
    write_key: Option<String>,
    context: Option<Map<String, Value>>,
}

/// Finds the write key: HTTP Basic auth (`base64(writeKey + ":")`, as Segment's libraries
/// send it) first, then `writeKey` in the body (sendBeacon cannot set headers).
fn write_key(authorization: Option<&str>, body_key: Option<&str>) -> Result<String, RequestError> {
    if let Some(auth) = authorization {
        let encoded = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
            .ok_or_else(|| {
                RequestError::new(401, "bad_authorization", "Authorization must be HTTP Basic")
            })?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                RequestError::new(
                    401,
                    "bad_authorization",
                    "Authorization is not valid base64",
                )
            })?;
        let key = decoded.split(':').next().unwrap_or_default();
        if !key.is_empty() {
            return Ok(key.to_string());
        }
    }
    match body_key {
        Some(k) if !k.is_empty() => Ok(k.to_string()),
        _ => Err(RequestError::new(
            401,
            "missing_write_key",
            "no write key: send HTTP Basic auth or `writeKey` in the body",
        )),
    }
}

/// Parses and checks the request envelope: size, JSON, write key.
fn parse_envelope<'a>(
    req: &IngestRequest<'a>,
    sources: &Sources,
) -> Result<(String, RawBatch<'a>), RequestError> {
    if req.body.len() > MAX_BATCH_BYTES {
        return Err(RequestError::new(
            413,
            "batch_too_large",
            format!(
                "request body is {} bytes; the limit is {MAX_BATCH_BYTES}",
                req.body.len()
            ),
        ));
    }
    let text = std::str::from_utf8(req.body)
        .map_err(|_| RequestError::new(400, "invalid_utf8", "request body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(RequestError::new(
            400,
            "empty_body",
            "request body is empty",
        ));
    }
    let mut raw: RawBatch<'a> = match req.endpoint {
        Endpoint::Batch => serde_json::from_str(text).map_err(|e| invalid_json(&e))?,
        Endpoint::Single(_) => {
            // A single message is its own envelope: keep it whole as the only batch entry.
            let one: &'a RawValue = serde_json::from_str(text).map_err(|e| invalid_json(&e))?;
            let mut env: RawBatch<'a> = serde_json::from_str(text).map_err(|e| invalid_json(&e))?;
            env.batch = Some(vec![one]);
            env.context = None; // already inside the message
            env
        }
    };
    if raw.batch.is_none() {
        return Err(RequestError::new(
            400,
            "missing_batch",
            "body has no `batch` array",
        ));
    }
    let key = write_key(req.authorization, raw.write_key.as_deref())?;
    if sources.get(&key).is_none() {
        return Err(RequestError::new(
            401,
            "unknown_write_key",
            "the write key is not configured",
        ));
    }
    raw.write_key = None;
    Ok((key, raw))
}

fn invalid_json(e: &serde_json::Error) -> RequestError {
    let code = if e.is_data() {
        "invalid_body"
    } else {
        "invalid_json"
    };
    RequestError::new(
        400,
        code,
        format!("body is not a valid Segment request: {e}"),
    )
}

/// Corrects the client clock: `timestamp = receivedAt - (sentAt - originalTimestamp)`.
fn corrected_timestamp(original: Option<&str>, sent_at: Option<&str>, now_ms: i64) -> i64 {
    match (
        original.and_then(parse_rfc3339),
        sent_at.and_then(parse_rfc3339),
    ) {
        (Some(t), Some(s)) => now_ms.saturating_sub(s.saturating_sub(t)),
        (Some(t), None) => t,
        _ => now_ms,
    }
}

/// Decides what happens to one message: a stored event or the reasons it was quarantined.
fn prepare(
    raw: &RawValue,
    forced_type: Option<MessageType>,
    batch: &RawBatch<'_>,
    write_key: &str,
    now_ms: i64,
) -> Result<StoredEvent, (Option<String>, Vec<Reason>)> {
    let text = raw.get();
    if text.len() > MAX_MESSAGE_BYTES {
        let id = serde_json::from_str::<Message>(text)
            .ok()
            .and_then(|m| m.message_id);
        let msg = format!(
            "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
            text.len()
        );
        return Err((id, vec![Reason::new("too_large", "$", msg)]));
    }
    let mut m: Message = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            let kind = if text.trim_start().starts_with('{') {
                "invalid_field"
            } else {
                "not_an_object"
            };
            return Err((None, vec![Reason::new(kind, "$", e.to_string())]));
        }
    };
    if let Some(t) = forced_type {
        m.kind = Some(t);
    }
    // The write key authenticates the request; it is not event data (analytics-next
    // repeats it in every message), so it is not stored with the event.
    m.extra.remove("writeKey");
    let kind = m.check_shape().map_err(|e| {
        let (kind, path) = match e {
            tracking_plan::message::ShapeError::MissingType => ("missing_type", "$.type"),
            tracking_plan::message::ShapeError::MissingMessageId => {
                ("missing_message_id", "$.messageId")
            }
            tracking_plan::message::ShapeError::MissingIdentity => ("missing_identity", "$"),
            tracking_plan::message::ShapeError::MissingField(_) => ("missing_required", "$"),
        };
        (
            m.message_id.clone(),
            vec![Reason::new(kind, path, e.describe())],
        )
    })?;
    let message_id = m.message_id.clone().unwrap_or_default();
    if message_id.len() > MAX_MESSAGE_ID_LEN {
        let msg = format!("messageId is longer than {MAX_MESSAGE_ID_LEN} characters");
        return Err((None, vec![Reason::new("invalid_field", "$.messageId", msg)]));
    }

    // Batch-level context fills in what the message's own context does not say.
    if let Some(shared) = &batch.context {
        match &mut m.context {
            Some(Value::Object(own)) => {
                for (k, v) in shared {
                    own.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            None => m.context = Some(Value::Object(shared.clone())),
            Some(_) => {}
        }
    }
    let sent_at = m.sent_at.clone().or_else(|| batch.sent_at.clone());
    let original = m.original_timestamp.clone().or_else(|| m.timestamp.clone());
    let ts = corrected_timestamp(original.as_deref(), sent_at.as_deref(), now_ms);
    let received_at = format_rfc3339(now_ms);
    m.original_timestamp = original;
    m.sent_at = sent_at;
    m.timestamp = Some(format_rfc3339(ts));
    m.received_at = Some(received_at.clone());

    let payload = serde_json::to_string(&m).map_err(|e| {
        (
            Some(message_id.clone()),
            vec![Reason::new("invalid_field", "$", e.to_string())],
        )
    })?;
    Ok(StoredEvent {
        write_key: write_key.to_string(),
        message_id,
        kind: kind.as_str(),
        event: m.event_name().map(str::to_string),
        anonymous_id: m.anonymous_id,
        user_id: m.user_id,
        timestamp: m.timestamp.unwrap_or_default(),
        received_at,
        payload,
    })
}

/// Runs one request through the pipeline and writes its events to `store`.
pub async fn ingest<S: EventStore>(
    store: &S,
    sources: &Sources,
    req: &IngestRequest<'_>,
) -> Result<Report, RequestError> {
    let (key, batch) = parse_envelope(req, sources)?;
    let forced = match req.endpoint {
        Endpoint::Single(t) => Some(t),
        Endpoint::Batch => None,
    };
    let messages = batch.batch.as_deref().unwrap_or_default();
    let mut results: Vec<Option<Verdict>> = vec![None; messages.len()];
    let mut accepted = Vec::new();
    let mut accepted_at = Vec::new();
    let mut quarantined = Vec::new();
    let received_at = format_rfc3339(req.now_ms);

    for (i, raw) in messages.iter().enumerate() {
        match prepare(raw, forced, &batch, &key, req.now_ms) {
            Ok(ev) => {
                accepted_at.push(i);
                accepted.push(ev);
            }
            Err((message_id, reasons)) => {
                quarantined.push(QuarantinedEvent {
                    write_key: key.clone(),
                    message_id: message_id.clone(),
                    reasons: serde_json::to_string(&reasons).unwrap_or_else(|_| "[]".into()),
                    payload: raw.get().to_string(),
                    received_at: received_at.clone(),
                });
                results[i] = Some(Verdict {
                    message_id,
                    status: Status::Quarantined,
                    reasons,
                });
            }
        }
    }

    let unavailable = |e: crate::store::StoreError| {
        RequestError::new(
            503,
            "storage_unavailable",
            format!("storage failed, retry: {}", e.0),
        )
    };
    if !quarantined.is_empty() {
        store.quarantine(&quarantined).await.map_err(unavailable)?;
    }
    if !accepted.is_empty() {
        let outcomes = store.insert_events(&accepted).await.map_err(unavailable)?;
        if outcomes.len() != accepted.len() {
            return Err(unavailable(crate::store::StoreError(format!(
                "store answered {} outcomes for {} events",
                outcomes.len(),
                accepted.len()
            ))));
        }
        for ((i, ev), outcome) in accepted_at.iter().zip(&accepted).zip(outcomes) {
            let status = match outcome {
                Insert::Stored => Status::Accepted,
                Insert::Duplicate => Status::Duplicate,
            };
            results[*i] = Some(Verdict {
                message_id: Some(ev.message_id.clone()),
                status,
                reasons: vec![],
            });
        }
    }

    let results: Vec<Verdict> = results.into_iter().flatten().collect();
    let count = |s: Status| results.iter().filter(|v| v.status == s).count();
    Ok(Report {
        ok: true,
        accepted: count(Status::Accepted),
        duplicates: count(Status::Duplicate),
        quarantined: count(Status::Quarantined),
        results,
    })
}
