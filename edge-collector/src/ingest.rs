//! Ingestion: decides, for one HTTP request to the Segment-compatible API, whether the
//! request is refused as a whole (a 4xx with a JSON error naming the cause), and for each
//! event in it whether it is accepted, a duplicate, quarantined with typed reasons, or
//! refused for want of consent. Nothing is dropped without a verdict.
//!
//! Each event goes through: size and parse -> raw PII hashing -> consent (an event
//! without analytics consent is refused here, so not even the quarantine keeps it) ->
//! shape checks -> tracking-plan validation -> enrichment -> consent applied (marketing
//! data dropped when denied) -> dedup -> identity -> storage.

use crate::consent;
use crate::dedup::{self, Claim, Deduplicator, Seen};
use crate::enrich::{self, EdgeInfo};
use crate::identity::{IdKind, Ident, IdentityService, Observation};
use crate::pii;
use crate::sources::{Source, Sources};
use crate::store::{
    ConsentRecord, Counts, EventStore, Insert, QuarantinedEvent, StoreError, StoredEvent,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use tracking_plan::identifiers::is_sha256_hex;
use tracking_plan::time::{format_rfc3339, parse_rfc3339};
use tracking_plan::RawPiiPolicy;
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
    pub edge: EdgeInfo<'a>,
}

/// A refusal of the whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u32>,
}

impl RequestError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            status,
            code,
            message: message.into(),
            retry_after: None,
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
    /// Not stored: the event's consent does not allow analytics. Not to be retried.
    Refused,
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
    /// Accepted with remarks: an unplanned event under the `flag` policy, raw PII that
    /// was hashed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Reason>,
    /// The profile the event was resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
}

/// The 200 answer: one verdict per event, in request order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub accepted: usize,
    pub duplicates: usize,
    pub quarantined: usize,
    pub refused: usize,
    pub results: Vec<Verdict>,
    /// The anonymous id the collector's first-party cookie should hold after this
    /// request (set only for browser requests with an event stored under consent).
    #[serde(skip)]
    pub cookie_id: Option<String>,
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

/// Undoes `Content-Encoding: gzip` (Segment's server libraries may compress), refusing a
/// body that inflates past the batch limit. A body the platform already inflated (no
/// gzip magic) is taken as it is.
pub fn decode_body<'a>(
    body: &'a [u8],
    encoding: Option<&str>,
) -> Result<Cow<'a, [u8]>, RequestError> {
    let too_large = |n: usize| {
        RequestError::new(
            413,
            "batch_too_large",
            format!("request body is {n} bytes or more; the limit is {MAX_BATCH_BYTES}"),
        )
    };
    if body.len() > MAX_BATCH_BYTES {
        return Err(too_large(body.len()));
    }
    let encoding = encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(Cow::Borrowed(body)),
        "gzip" | "x-gzip" if !body.starts_with(&[0x1f, 0x8b]) => Ok(Cow::Borrowed(body)),
        "gzip" | "x-gzip" => {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_BATCH_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    RequestError::new(400, "invalid_gzip", format!("body is not valid gzip: {e}"))
                })?;
            if out.len() > MAX_BATCH_BYTES {
                return Err(too_large(out.len()));
            }
            Ok(Cow::Owned(out))
        }
        other => Err(RequestError::new(
            415,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported: send gzip or no encoding"),
        )),
    }
}

/// Parses and checks the request envelope: JSON, write key, origin.
fn parse_envelope<'a>(
    req: &IngestRequest<'_>,
    body: &'a [u8],
    sources: &'a Sources,
) -> Result<(String, &'a Source, RawBatch<'a>), RequestError> {
    let text = std::str::from_utf8(body)
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
    let Some(source) = sources.get(&key) else {
        return Err(RequestError::new(
            401,
            "unknown_write_key",
            "the write key is not configured",
        ));
    };
    if !source.accepts_origin(req.edge.origin, req.edge.own_origin) {
        return Err(RequestError::new(
            403,
            "origin_not_allowed",
            format!(
                "origin {} may not send events for this write key",
                req.edge.origin.unwrap_or_default()
            ),
        ));
    }
    raw.write_key = None;
    Ok((key, source, raw))
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

/// Per-isolate rate limiting: a token bucket of `rate` events per second per write key,
/// holding up to two seconds' worth. A batch larger than the bucket passes when the
/// bucket is full, so no batch is refused forever.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: RefCell<HashMap<String, (f64, i64)>>,
}

impl RateLimiter {
    /// `Err(seconds to wait)` when the key is over its rate.
    pub fn admit(&self, key: &str, rate: u32, events: usize, now_ms: i64) -> Result<(), u32> {
        if rate == 0 {
            return Ok(());
        }
        let rate = f64::from(rate);
        let cap = rate * 2.0;
        let mut buckets = self.buckets.borrow_mut();
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((cap, now_ms));
        let elapsed = (now_ms - *last).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * rate).min(cap);
        *last = now_ms;
        let need = (events as f64).min(cap);
        if *tokens >= need {
            *tokens -= events as f64;
            Ok(())
        } else {
            Err(((need - *tokens) / rate).ceil().max(1.0) as u32)
        }
    }
}

/// Hash of an event's content as its sender built it, for telling a retry (same
/// content) from a different event reusing a messageId. Fields a sender may change
/// between retries (`sentAt`, `writeKey`, `_metadata`) are left out. Streams the
/// serialization into the hasher: no copy of the message, no intermediate string.
pub fn fingerprint(m: &mut Message) -> String {
    use sha2::Digest as _;
    struct Hasher(sha2::Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sent_at = m.sent_at.take();
    let received_at = m.received_at.take();
    let write_key = m.extra.remove("writeKey");
    let metadata = m.extra.remove("_metadata");
    let mut h = Hasher(sha2::Sha256::new());
    let _ = serde_json::to_writer(&mut h, &*m);
    m.sent_at = sent_at;
    m.received_at = received_at;
    if let Some(v) = write_key {
        m.extra.insert("writeKey".into(), v);
    }
    if let Some(v) = metadata {
        m.extra.insert("_metadata".into(), v);
    }
    let digest = h.0.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

/// What one message turned into before dedup and storage.
enum Prepared {
    Quarantine(QuarantinedEvent, Vec<Reason>),
    Refused {
        message_id: Option<String>,
        consent: Option<ConsentRecord>,
    },
    Candidate(Box<Candidate>),
}

struct Candidate {
    event: StoredEvent,
    fingerprint: String,
    observation: Observation,
    consent: Option<ConsentRecord>,
    warnings: Vec<Reason>,
    /// Parsed message, kept so the profile id can be written into the payload.
    message: Message,
}

fn quarantine(
    write_key: &str,
    message_id: Option<String>,
    anonymous_id: Option<String>,
    reasons: Vec<Reason>,
    payload: String,
    received_at: &str,
) -> Prepared {
    Prepared::Quarantine(
        QuarantinedEvent {
            write_key: write_key.to_string(),
            message_id,
            anonymous_id,
            reason: reasons.first().map_or("unknown", |r| r.kind).to_string(),
            reasons: serde_json::to_string(&reasons).unwrap_or_else(|_| "[]".into()),
            payload,
            received_at: received_at.to_string(),
        },
        reasons,
    )
}

fn shape_reason(e: &tracking_plan::message::ShapeError) -> Reason {
    use tracking_plan::message::ShapeError as E;
    let (kind, path) = match e {
        E::MissingType => ("missing_type", "$.type"),
        E::MissingMessageId => ("missing_message_id", "$.messageId"),
        E::MissingIdentity => ("missing_identity", "$"),
        E::MissingField(_) => ("missing_required", "$"),
    };
    Reason::new(kind, path, e.describe())
}

/// The identifiers an event carries for the identity graph. Hashed emails and phones
/// count only when personalization is allowed.
fn identifiers(m: &Message, cookie_id: Option<&str>, personalization: bool) -> Vec<Ident> {
    let mut ids = Vec::new();
    if let Some(u) = &m.user_id {
        ids.push(Ident::new(IdKind::UserId, u.clone()));
    }
    if let Some(a) = &m.anonymous_id {
        ids.push(Ident::new(IdKind::Anonymous, a.clone()));
    }
    if let Some(c) = cookie_id {
        ids.push(Ident::new(IdKind::Anonymous, c));
    }
    if m.kind == Some(MessageType::Alias) {
        if let Some(p) = &m.previous_id {
            ids.push(Ident::new(IdKind::Anonymous, p.clone()));
        }
    }
    if personalization {
        let ctx_traits = m.context.as_ref().and_then(|c| c.get("traits"));
        for section in [m.traits.as_ref(), ctx_traits, m.properties.as_ref()] {
            let Some(Value::Object(obj)) = section else {
                continue;
            };
            for (key, kind) in [
                ("email_sha256", IdKind::Email),
                ("email", IdKind::Email),
                ("phone_sha256", IdKind::Phone),
                ("phone", IdKind::Phone),
            ] {
                if let Some(v) = obj.get(key).and_then(Value::as_str) {
                    if is_sha256_hex(v) {
                        ids.push(Ident::new(kind, v.to_ascii_lowercase()));
                    }
                }
            }
        }
    }
    ids
}

/// What every message of one request shares.
struct Shared<'a> {
    forced_type: Option<MessageType>,
    batch: &'a RawBatch<'a>,
    write_key: &'a str,
    source: &'a Source,
    req: &'a IngestRequest<'a>,
    received_at: &'a str,
}

/// Takes one message through PII, consent, shape, plan and enrichment.
fn prepare(raw: &RawValue, sh: &Shared<'_>, agents: &mut enrich::AgentCache) -> Prepared {
    let Shared {
        forced_type,
        batch,
        write_key,
        source,
        req,
        received_at,
    } = *sh;
    let text = raw.get();
    let country = req.edge.country;
    let redacted_text = || {
        pii::redact_str(text, country)
            .map(|(s, _)| s)
            .unwrap_or_else(|| text.to_string())
    };
    if text.len() > MAX_MESSAGE_BYTES {
        let m = serde_json::from_str::<Message>(text).ok();
        let msg = format!(
            "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
            text.len()
        );
        let (id, anon) = m.map_or((None, None), |m| (m.message_id, m.anonymous_id));
        let reasons = vec![Reason::new("too_large", "$", msg)];
        return quarantine(write_key, id, anon, reasons, redacted_text(), received_at);
    }
    let mut m: Message = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            let kind = if text.trim_start().starts_with('{') {
                "invalid_field"
            } else {
                "not_an_object"
            };
            let reasons = vec![Reason::new(kind, "$", e.to_string())];
            return quarantine(write_key, None, None, reasons, redacted_text(), received_at);
        }
    };
    if let Some(t) = forced_type {
        m.kind = Some(t);
    }
    // The write key authenticates the request; it is not event data (analytics-next
    // repeats it in every message), so it is not stored with the event.
    m.extra.remove("writeKey");

    // Batch-level context fills in what the message's own context does not say. Merged
    // before anything reads the context, so the PII scan and consent see what is stored.
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

    // Raw PII first, so that nothing stored from here on (quarantine included) holds it.
    let mut found = Vec::new();
    for (section, root) in [
        (&mut m.properties, "$.properties"),
        (&mut m.traits, "$.traits"),
        (&mut m.context, "$.context"),
        (&mut m.integrations, "$.integrations"),
    ] {
        if let Some(v) = section {
            pii::redact_value(v, root, country, &mut found);
        }
    }
    for (k, v) in m.extra.iter_mut() {
        pii::redact_value(
            v,
            &tracking_plan::plan::child_path("$", k),
            country,
            &mut found,
        );
    }
    for (field, path) in [
        (&mut m.user_id, "$.userId"),
        (&mut m.previous_id, "$.previousId"),
    ] {
        if let Some((hashed, kind)) = field.as_deref().and_then(|v| pii::redact_str(v, country)) {
            *field = Some(hashed);
            found.push(pii::Finding {
                path: path.into(),
                kind,
            });
        }
    }
    let serialized = |m: &Message| serde_json::to_string(m).unwrap_or_else(|_| redacted_text());

    // Consent before anything is kept: an event the visitor did not consent to is not
    // stored, not even in the quarantine. (A consent record is let through to the end,
    // where it is logged whatever it says.)
    let decision = consent::decide(
        consent::read(m.context.as_ref()),
        source.consent,
        req.edge.gpc,
    );
    let is_record = m.kind.or(forced_type) == Some(MessageType::Track)
        && consent::is_consent_event(m.event.as_deref());
    if !decision.store() && !is_record {
        return Prepared::Refused {
            message_id: m.message_id.clone(),
            consent: None,
        };
    }

    let kind = match m.check_shape() {
        Ok(k) => k,
        Err(e) => {
            let reasons = vec![shape_reason(&e)];
            let (id, anon) = (m.message_id.clone(), m.anonymous_id.clone());
            return quarantine(write_key, id, anon, reasons, serialized(&m), received_at);
        }
    };
    let message_id = m.message_id.clone().unwrap_or_default();
    if message_id.len() > MAX_MESSAGE_ID_LEN {
        let msg = format!("messageId is longer than {MAX_MESSAGE_ID_LEN} characters");
        let reasons = vec![Reason::new("invalid_field", "$.messageId", msg)];
        let anon = m.anonymous_id.clone();
        return quarantine(write_key, None, anon, reasons, serialized(&m), received_at);
    }

    let fp = fingerprint(&mut m);

    // The tracking plan. Raw PII is already hashed: under `hash` it is a warning, under
    // `quarantine` a reason.
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let pii_policy = source
        .compiled
        .as_ref()
        .map_or(RawPiiPolicy::Hash, |p| p.raw_pii);
    for f in &found {
        let r = Reason::new(
            "raw_pii",
            f.path.clone(),
            format!("raw {} found; stored as its SHA-256", f.kind.as_str()),
        );
        match pii_policy {
            RawPiiPolicy::Hash => warnings.push(r),
            RawPiiPolicy::Quarantine => reasons.push(r),
        }
    }
    let mut violations_seen = Vec::new();
    if let Some(plan) = &source.compiled {
        for v in plan.validate(&m, text.len()) {
            let r = Reason {
                kind: v.kind.as_str(),
                path: v.path.clone(),
                message: v.message.clone(),
            };
            violations_seen.push(v.kind.as_str());
            if plan.is_blocking(&v) {
                reasons.push(r);
            } else {
                warnings.push(r);
            }
        }
    }
    if !reasons.is_empty() {
        let (id, anon) = (m.message_id.clone(), m.anonymous_id.clone());
        return quarantine(write_key, id, anon, reasons, serialized(&m), received_at);
    }

    // Enrichment.
    let sent_at = m.sent_at.clone().or_else(|| batch.sent_at.clone());
    let original = m.original_timestamp.clone().or_else(|| m.timestamp.clone());
    let ts = corrected_timestamp(original.as_deref(), sent_at.as_deref(), req.now_ms);
    m.original_timestamp = original;
    m.sent_at = sent_at;
    m.timestamp = Some(format_rfc3339(ts));
    m.received_at = Some(received_at.to_string());
    let agent = enrich::enrich(&mut m.context, &req.edge, agents);

    // What consent allows, applied to the enriched event.
    if let Some(Value::Object(ctx)) = &mut m.context {
        if !decision.marketing {
            ctx.remove("clickIds"); // ad identifiers need marketing consent
        }
        let c = ctx
            .entry("consent")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(c) = c {
            c.insert("enforced".into(), decision.to_json());
            if decision.gpc {
                c.insert("gpc".into(), true.into());
            }
        }
        if !violations_seen.is_empty() {
            let mut tp = Map::new();
            if let Some(plan) = &source.compiled {
                tp.insert("version".into(), plan.version.clone().into());
            }
            tp.insert("violations".into(), violations_seen.into());
            ctx.insert("trackingPlan".into(), Value::Object(tp));
        }
    }
    let consent_record = (kind == MessageType::Track
        && consent::is_consent_event(m.event.as_deref()))
    .then(|| ConsentRecord {
        write_key: write_key.to_string(),
        message_id: message_id.clone(),
        anonymous_id: m.anonymous_id.clone(),
        user_id: m.user_id.clone(),
        categories: decision.to_json().to_string(),
        source: m
            .context
            .as_ref()
            .and_then(|c| c.get("consent"))
            .and_then(|c| c.get("source"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .chars()
            .take(40)
            .collect(),
        gpc: decision.gpc,
        timestamp: m.timestamp.clone().unwrap_or_default(),
        received_at: received_at.to_string(),
    });
    if !decision.store() {
        return Prepared::Refused {
            message_id: Some(message_id),
            consent: consent_record,
        };
    }

    let cookie_id = req.edge.cookie_id.filter(|c| valid_cookie_id(c));
    let observation = Observation {
        identifiers: identifiers(&m, cookie_id, decision.personalization),
        traits: match (&m.traits, kind) {
            (Some(Value::Object(t)), MessageType::Identify) => Some(t.clone()),
            _ => None,
        },
        consent: Some(decision.to_json()),
        at_ms: ts,
    };
    Prepared::Candidate(Box::new(Candidate {
        event: StoredEvent {
            write_key: write_key.to_string(),
            message_id,
            kind: kind.as_str(),
            event: m.event_name().map(str::to_string),
            anonymous_id: m.anonymous_id.clone(),
            user_id: m.user_id.clone(),
            profile_id: None,
            identified: false,
            bot: agent.bot,
            timestamp: m.timestamp.clone().unwrap_or_default(),
            received_at: received_at.to_string(),
            payload: String::new(),
        },
        fingerprint: fp,
        observation,
        consent: consent_record,
        warnings,
        message: m,
    }))
}

/// An anonymous id safe to put in a cookie: short, URL-safe characters only.
pub fn valid_cookie_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The pipeline's effects: where it stores, dedups and resolves identity.
pub struct Services<'s, E, D, I> {
    pub store: &'s E,
    pub dedup: &'s D,
    pub identity: &'s I,
    pub limiter: &'s RateLimiter,
}

fn unavailable(e: StoreError) -> RequestError {
    RequestError::new(
        503,
        "storage_unavailable",
        format!("storage failed, retry: {}", e.0),
    )
}

/// Runs one request through the pipeline and writes its events.
pub async fn ingest<E: EventStore, D: Deduplicator, I: IdentityService>(
    svc: &Services<'_, E, D, I>,
    sources: &Sources,
    req: &IngestRequest<'_>,
) -> Result<Report, RequestError> {
    let body = decode_body(req.body, req.edge.content_encoding)?;
    let (key, source, batch) = parse_envelope(req, &body, sources)?;
    let forced = match req.endpoint {
        Endpoint::Single(t) => Some(t),
        Endpoint::Batch => None,
    };
    let messages = batch.batch.as_deref().unwrap_or_default();
    if let Err(wait) = svc
        .limiter
        .admit(&key, source.rate_limit, messages.len(), req.now_ms)
    {
        let mut e = RequestError::new(
            429,
            "rate_limited",
            format!(
                "this write key is over {} events/s; retry in {wait} s",
                source.rate_limit
            ),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    let received_at = format_rfc3339(req.now_ms);
    let mut results: Vec<Option<Verdict>> = vec![None; messages.len()];
    let mut quarantined = Vec::new();
    let mut consent_log = Vec::new();
    let mut candidates: Vec<(usize, Candidate)> = Vec::new();
    let mut agents = enrich::AgentCache::default();
    let shared = Shared {
        forced_type: forced,
        batch: &batch,
        write_key: &key,
        source,
        req,
        received_at: &received_at,
    };

    for (i, raw) in messages.iter().enumerate() {
        match prepare(raw, &shared, &mut agents) {
            Prepared::Quarantine(q, reasons) => {
                results[i] = Some(verdict(q.message_id.clone(), Status::Quarantined, reasons));
                quarantined.push(q);
            }
            Prepared::Refused {
                message_id,
                consent,
            } => {
                let why = Reason::new(
                    "consent_denied",
                    "$.context.consent",
                    "no analytics consent: the event is not stored",
                );
                results[i] = Some(verdict(message_id, Status::Refused, vec![why]));
                consent_log.extend(consent);
            }
            Prepared::Candidate(c) => candidates.push((i, *c)),
        }
    }
    consent_log.extend(candidates.iter().filter_map(|(_, c)| c.consent.clone()));

    // Dedup: claim every candidate in the sharded table.
    let claims: Vec<Claim> = candidates
        .iter()
        .map(|(_, c)| Claim {
            key: dedup::key(&key, &c.event.message_id),
            fingerprint: c.fingerprint.clone(),
        })
        .collect();
    let seen = if claims.is_empty() {
        Vec::new()
    } else {
        svc.dedup
            .claim(&claims, req.now_ms)
            .await
            .map_err(unavailable)?
    };
    if seen.len() != claims.len() {
        return Err(unavailable(StoreError(
            "dedup answered the wrong count".into(),
        )));
    }
    let mut fresh: Vec<(usize, Candidate)> = Vec::new();
    for ((i, c), s) in candidates.into_iter().zip(seen) {
        match s {
            Seen::New => fresh.push((i, c)),
            Seen::Duplicate => {
                results[i] = Some(verdict(Some(c.event.message_id), Status::Duplicate, vec![]));
            }
            Seen::Conflict { first } => {
                let reasons = vec![Reason::new(
                    "message_id_conflict",
                    "$.messageId",
                    format!(
                        "messageId already received with different content (fingerprint {first}, this one {})",
                        c.fingerprint
                    ),
                )];
                let payload = serde_json::to_string(&c.message).unwrap_or_default();
                let id = Some(c.event.message_id.clone());
                if let Prepared::Quarantine(q, reasons) = quarantine(
                    &key,
                    id.clone(),
                    c.event.anonymous_id.clone(),
                    reasons,
                    payload,
                    &received_at,
                ) {
                    results[i] = Some(verdict(id, Status::Quarantined, reasons));
                    quarantined.push(q);
                }
            }
        }
    }
    let claimed: Vec<String> = fresh
        .iter()
        .map(|(_, c)| dedup::key(&key, &c.event.message_id))
        .collect();

    // Identity, storage, then commit the claims; on failure release them so the
    // sender's retry is new again.
    let stored = store_fresh(svc, source, &key, &mut fresh).await;
    let outcomes = match stored {
        Ok(o) => o,
        Err(e) => {
            let _ = svc.dedup.release(&claimed).await;
            return Err(unavailable(e));
        }
    };
    svc.dedup
        .commit(&claimed, req.now_ms)
        .await
        .map_err(unavailable)?;
    if !quarantined.is_empty() {
        svc.store
            .quarantine(&quarantined)
            .await
            .map_err(unavailable)?;
    }
    if !consent_log.is_empty() {
        svc.store
            .append_consent(&consent_log)
            .await
            .map_err(unavailable)?;
    }

    let mut cookie_id = None;
    let mut counts = Counts {
        write_key: key.clone(),
        day: received_at[..10].to_string(),
        received: messages.len() as u32,
        ..Counts::default()
    };
    for ((i, c), outcome) in fresh.into_iter().zip(outcomes) {
        let status = match outcome {
            Insert::Stored => Status::Accepted,
            Insert::Duplicate => Status::Duplicate,
        };
        if status == Status::Accepted {
            counts.identified += u32::from(c.event.identified);
            counts.bots += u32::from(c.event.bot);
        }
        if cookie_id.is_none() && req.edge.origin.is_some() {
            cookie_id = req
                .edge
                .cookie_id
                .filter(|id| valid_cookie_id(id))
                .map(str::to_string)
                .or_else(|| c.event.anonymous_id.clone().filter(|a| valid_cookie_id(a)));
        }
        let mut v = verdict(Some(c.event.message_id), status, vec![]);
        v.warnings = c.warnings;
        v.profile_id = c.event.profile_id;
        results[i] = Some(v);
    }

    let results: Vec<Verdict> = results.into_iter().flatten().collect();
    let count = |s: Status| results.iter().filter(|v| v.status == s).count();
    let report = Report {
        ok: true,
        accepted: count(Status::Accepted),
        duplicates: count(Status::Duplicate),
        quarantined: count(Status::Quarantined),
        refused: count(Status::Refused),
        results,
        cookie_id,
    };
    counts.accepted = report.accepted as u32;
    counts.duplicates = report.duplicates as u32;
    counts.quarantined = report.quarantined as u32;
    counts.refused = report.refused as u32;
    svc.store.add_counts(&counts).await.map_err(unavailable)?;
    Ok(report)
}

fn verdict(message_id: Option<String>, status: Status, reasons: Vec<Reason>) -> Verdict {
    Verdict {
        message_id,
        status,
        reasons,
        warnings: vec![],
        profile_id: None,
    }
}

/// Resolves identity for the new events, writes the profile into each payload and
/// stores them.
async fn store_fresh<E: EventStore, D: Deduplicator, I: IdentityService>(
    svc: &Services<'_, E, D, I>,
    source: &Source,
    key: &str,
    fresh: &mut [(usize, Candidate)],
) -> Result<Vec<Insert>, StoreError> {
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let observations: Vec<Observation> = fresh.iter().map(|(_, c)| c.observation.clone()).collect();
    let resolved = svc
        .identity
        .observe(key, &source.identity_limits, &observations)
        .await?;
    if resolved.len() != fresh.len() {
        return Err(StoreError("identity answered the wrong count".into()));
    }
    let mut moves = Vec::new();
    for ((_, c), r) in fresh.iter_mut().zip(resolved) {
        if let Some(r) = r {
            moves.extend(
                r.absorbed
                    .iter()
                    .map(|from| (from.clone(), r.profile_id.clone())),
            );
            c.event.identified = r.identified;
            if let Some(Value::Object(ctx)) = &mut c.message.context {
                ctx.insert("profileId".into(), Value::String(r.profile_id.clone()));
            }
            c.event.profile_id = Some(r.profile_id);
        }
        c.event.payload = serde_json::to_string(&c.message)
            .map_err(|e| StoreError(format!("cannot serialize event: {e}")))?;
    }
    // Moved out for the store and back afterwards: payloads are not copied.
    let events: Vec<StoredEvent> = fresh
        .iter_mut()
        .map(|(_, c)| std::mem::replace(&mut c.event, placeholder()))
        .collect();
    let result = svc.store.insert_events(&events).await;
    for ((_, c), e) in fresh.iter_mut().zip(events) {
        c.event = e;
    }
    let outcomes = result?;
    if !moves.is_empty() {
        svc.store.repoint_profiles(key, &moves).await?;
    }
    if outcomes.len() != fresh.len() {
        return Err(StoreError(format!(
            "store answered {} outcomes for {} events",
            outcomes.len(),
            fresh.len()
        )));
    }
    Ok(outcomes)
}

fn placeholder() -> StoredEvent {
    StoredEvent {
        write_key: String::new(),
        message_id: String::new(),
        kind: "",
        event: None,
        anonymous_id: None,
        user_id: None,
        profile_id: None,
        identified: false,
        bot: false,
        timestamp: String::new(),
        received_at: String::new(),
        payload: String::new(),
    }
}
