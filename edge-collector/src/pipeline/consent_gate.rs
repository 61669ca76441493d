//! Consent gate, the first stage an event meets: decides from the event's consent
//! snapshot (as raw JSON, before any other check), the source's policy and GPC whether
//! the event may be kept at all. An event without analytics consent on an opt-in source
//! is refused and only counted, whatever else is wrong with it (oversized, off-plan, not
//! even a valid message). A consent record (`Consent Updated`) always reaches the
//! consent log, whatever its shape, with its ids scrubbed of raw PII.

use crate::consent::{self, Decision};
use crate::sources::Source;
use crate::store::ConsentRecord;
use serde_json::Value;
use tracking_plan::pii::scrub_text;

/// What the gate lets through.
pub struct Gate {
    pub decision: Decision,
    /// The consent-log entry this event is, if it records a choice.
    pub record: Option<ConsentRecord>,
}

/// One event at the gate: `msg` is the message as parsed JSON (batch context merged).
pub struct AtGate<'a> {
    pub msg: &'a Value,
    pub write_key: &'a str,
    pub source: &'a Source,
    pub gpc: bool,
    pub country: Option<&'a str>,
    pub received_at: &'a str,
    /// A stable stand-in for a missing messageId (a digest of the message's text).
    pub fallback_id: &'a str,
}

pub fn gate(at: &AtGate<'_>) -> Gate {
    let decision = consent::decide(
        consent::read(at.msg.get("context")),
        at.source.consent,
        at.gpc,
    );
    let record = is_record(at.msg).then(|| record(at, &decision));
    Gate { decision, record }
}

fn is_record(msg: &Value) -> bool {
    let kind = msg.get("type").and_then(Value::as_str);
    matches!(kind, Some("track") | None) && consent::is_consent_event(text(msg, "event").as_deref())
}

/// A string field, scrubbed of raw PII; numbers are taken as their text.
fn text(msg: &Value, key: &str) -> Option<String> {
    match msg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn clean(s: Option<String>, country: Option<&str>) -> Option<String> {
    s.map(|v| scrub_text(&v, country).map_or(v, |(c, _)| c))
        .map(|v| v.chars().take(200).collect())
}

fn record(at: &AtGate<'_>, decision: &Decision) -> ConsentRecord {
    let msg = at.msg;
    let source = msg
        .get("context")
        .and_then(|c| c.get("consent"))
        .and_then(|c| c.get("source"))
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let source = clean(Some(source.to_string()), at.country).unwrap_or_default();
    ConsentRecord {
        write_key: at.write_key.to_string(),
        message_id: clean(text(msg, "messageId"), at.country)
            .unwrap_or_else(|| at.fallback_id.to_string()),
        anonymous_id: clean(text(msg, "anonymousId"), at.country),
        user_id: clean(text(msg, "userId"), at.country),
        categories: decision.to_json().to_string(),
        source: source.chars().take(40).collect(),
        gpc: decision.gpc,
        timestamp: clean(text(msg, "timestamp"), at.country)
            .filter(|t| tracking_plan::time::parse_rfc3339(t).is_some())
            .unwrap_or_else(|| at.received_at.to_string()),
        received_at: at.received_at.to_string(),
    }
}
