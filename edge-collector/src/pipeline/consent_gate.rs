//! Consent gate, the first stage an event meets: decides from the event's consent
//! snapshot (as raw JSON, before any other check), the source's policy and GPC whether
//! the event may be kept at all. An event without analytics consent on an opt-in source
//! is refused and only counted, whatever else is wrong with it (oversized, off-plan, not
//! even a valid message). A consent record (`Consent Updated`) always reaches the
//! consent log, whatever its shape, with its ids scrubbed of raw PII, and with what it
//! shows of how the choice was made ([`evidence`]).

use crate::consent::{self, Decision};
use crate::sources::Source;
use crate::store::ConsentRecord;
use serde_json::Value;
use std::borrow::Cow;
use tracking_plan::consent::EVIDENCE_KEYS;
use tracking_plan::identifiers::sha256_hex;
use tracking_plan::pii::{scrub_string, scrub_text, FieldKind};
use tracking_plan::Message;

/// What the gate lets through.
pub struct Gate {
    pub decision: Decision,
    /// The consent-log entry this event is, if it records a choice.
    pub record: Option<ConsentRecord>,
}

/// What the gate reads of an event, from a parsed message or from raw JSON.
pub struct View<'a> {
    pub kind: Option<&'a str>,
    pub event: Option<&'a str>,
    pub context: Option<&'a Value>,
    pub properties: Option<&'a Value>,
    pub message_id: Option<Cow<'a, str>>,
    pub anonymous_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub timestamp: Option<&'a str>,
}

impl<'a> View<'a> {
    pub fn of_message(m: &'a Message) -> Self {
        View {
            kind: m.kind.map(|k| k.as_str()),
            event: m.event.as_deref(),
            context: m.context.as_ref(),
            properties: m.properties.as_ref(),
            message_id: m.message_id.as_deref().map(Cow::Borrowed),
            anonymous_id: m.anonymous_id.as_deref().map(Cow::Borrowed),
            user_id: m.user_id.as_deref().map(Cow::Borrowed),
            timestamp: m.timestamp.as_deref(),
        }
    }

    /// JSON that is not a valid message (or too large to be read as one).
    pub fn of_value(v: &'a Value) -> Self {
        let id = |k: &str| match v.get(k)? {
            Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        };
        View {
            kind: v.get("type").and_then(Value::as_str),
            event: v.get("event").and_then(Value::as_str),
            context: v.get("context"),
            properties: v.get("properties"),
            message_id: id("messageId"),
            anonymous_id: id("anonymousId"),
            user_id: id("userId"),
            timestamp: v.get("timestamp").and_then(Value::as_str),
        }
    }
}

/// One event at the gate.
pub struct AtGate<'a> {
    pub view: View<'a>,
    pub write_key: &'a str,
    pub source: &'a Source,
    pub gpc: bool,
    pub country: Option<&'a str>,
    pub received_at: &'a str,
    /// The message's text: a missing messageId is stood in for by its digest.
    pub text: &'a str,
}

pub fn gate(at: &AtGate<'_>) -> Gate {
    let decision = consent::decide(consent::read(at.view.context), at.source.consent, at.gpc);
    let v = &at.view;
    let is_record = matches!(v.kind, Some("track") | None) && consent::is_consent_event(v.event);
    let record = is_record.then(|| record(at, &decision));
    Gate { decision, record }
}

fn clean(s: Option<&str>, country: Option<&str>) -> Option<String> {
    s.map(|v| scrub_text(v, country).map_or_else(|| v.to_string(), |(c, _)| c))
        .map(|v| v.chars().take(200).collect())
}

fn record(at: &AtGate<'_>, decision: &Decision) -> ConsentRecord {
    let v = &at.view;
    let source = v
        .context
        .and_then(|c| c.get("consent"))
        .and_then(|c| c.get("source"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let source = clean(Some(source), at.country).unwrap_or_default();
    ConsentRecord {
        write_key: at.write_key.to_string(),
        message_id: clean(v.message_id.as_deref(), at.country)
            .unwrap_or_else(|| format!("noid-{}", super::short_digest(&[at.write_key, at.text]))),
        anonymous_id: clean(v.anonymous_id.as_deref(), at.country),
        user_id: clean(v.user_id.as_deref(), at.country),
        categories: consent::to_json(decision).to_string(),
        source: source.chars().take(40).collect(),
        gpc: decision.gpc,
        timestamp: clean(v.timestamp, at.country)
            .filter(|t| tracking_plan::time::parse_rfc3339(t).is_some())
            .unwrap_or_else(|| at.received_at.to_string()),
        received_at: at.received_at.to_string(),
        evidence: evidence(v, at.country).to_string(),
    }
}

/// Evidence strings longer than this are kept as their SHA-256 (`<key>Sha256`): a TC
/// string with every vendor's consent runs to a few KB.
const MAX_EVIDENCE_CHARS: usize = 4096;

/// What a consent record shows of how the choice was made, kept with it: the page it
/// was made on (`pageUrl`) and the record's properties named in
/// `tracking_plan::consent::EVIDENCE_KEYS` (an IAB TC, GPP or US Privacy string, the
/// consent manager's id and version, the notice's version and address), strings
/// scrubbed of raw PII and credentials, numbers and booleans as they came.
pub fn evidence(v: &View<'_>, country: Option<&str>) -> Value {
    let mut out = serde_json::Map::new();
    let page = v
        .context
        .and_then(|c| c.get("page"))
        .and_then(|p| p.get("url"));
    if let Some(url) = page.and_then(Value::as_str) {
        evidence_text(&mut out, "pageUrl", url, country);
    }
    let Some(Value::Object(props)) = v.properties else {
        return Value::Object(out);
    };
    for k in EVIDENCE_KEYS {
        match props.get(k) {
            Some(Value::String(s)) => evidence_text(&mut out, k, s, country),
            Some(x @ (Value::Number(_) | Value::Bool(_))) => {
                out.insert(k.to_string(), x.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

fn evidence_text(
    out: &mut serde_json::Map<String, Value>,
    k: &str,
    s: &str,
    country: Option<&str>,
) {
    let clean =
        scrub_string(FieldKind::Other, s, country).map_or_else(|| s.to_string(), |(c, _)| c);
    if clean.chars().count() > MAX_EVIDENCE_CHARS {
        out.insert(format!("{k}Sha256"), sha256_hex(&clean).into());
    } else {
        out.insert(k.to_string(), clean.into());
    }
}
