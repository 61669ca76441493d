//! Enrich stage: decides the event's corrected time and adds what the edge knows
//! (`crate::enrich`), then applies what consent allows: without marketing consent every
//! ad identifier goes (`context.clickIds`, click ids kept in first/last touch objects,
//! ad platforms' browser ids such as `fbp` wherever a key names one, and click-id
//! parameters of every URL in the context and the properties).

use crate::consent::Decision;
use crate::enrich::{self, Agent, EdgeInfo};
use serde_json::{Map, Value};
use tracking_plan::campaign::{is_ad_id, strip_click_ids};
use tracking_plan::time::{format_rfc3339, parse_rfc3339};
use tracking_plan::Message;

/// Corrects the client clock: `timestamp = receivedAt - (sentAt - originalTimestamp)`.
pub fn corrected_timestamp(original: Option<&str>, sent_at: Option<&str>, now_ms: i64) -> i64 {
    match (
        original.and_then(parse_rfc3339),
        sent_at.and_then(parse_rfc3339),
    ) {
        (Some(t), Some(s)) => now_ms.saturating_sub(s.saturating_sub(t)),
        (Some(t), None) => t,
        _ => now_ms,
    }
}

/// Stamps the event's times; returns its time (ms).
pub fn stamp(m: &mut Message, batch_sent_at: Option<&str>, now_ms: i64, received_at: &str) -> i64 {
    let sent_at = m
        .sent_at
        .clone()
        .or_else(|| batch_sent_at.map(str::to_string));
    let original = m.original_timestamp.clone().or_else(|| m.timestamp.clone());
    let ts = corrected_timestamp(original.as_deref(), sent_at.as_deref(), now_ms);
    m.original_timestamp = original;
    m.sent_at = sent_at;
    m.timestamp = Some(format_rfc3339(ts));
    m.received_at = Some(received_at.to_string());
    ts
}

/// Adds what the edge knows to a (scrubbed) context and applies the consent decision to
/// it; returns the parsed agent. A function of the context and the request alone: done
/// once for all the events of a request that carry the same context.
pub fn context(
    context: &mut Option<Value>,
    edge: &EdgeInfo<'_>,
    memo: &mut super::Memo<'_>,
    decision: &Decision,
) -> Agent {
    let agent = enrich::enrich(context, edge, &mut memo.parsed);
    // The edge's user agent is input too.
    if let Some(Value::Object(ctx)) = context {
        if let Some(Value::String(ua)) = ctx.get_mut("userAgent") {
            if let Some((clean, _)) = memo.scrub.text(ua) {
                *ua = clean;
            }
        }
    }
    if let Some(ctx) = context {
        context_consent(ctx, decision);
    }
    agent
}

/// What consent allows of an event's properties: without marketing consent, no ad ids.
pub fn apply_consent(properties: &mut Option<Value>, decision: &Decision) {
    if let (false, Some(props)) = (decision.marketing, properties) {
        strip_ad_ids(props);
    }
}

/// Applies the decision to an enriched context and records it in `context.consent`.
fn context_consent(ctx: &mut Value, decision: &Decision) {
    if !decision.marketing {
        strip_ad_ids(ctx);
    }
    let Value::Object(ctx) = ctx else {
        return;
    };
    let c = ctx
        .entry("consent")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(c) = c {
        c.insert("enforced".into(), crate::consent::to_json(decision));
        if decision.gpc {
            c.insert("gpc".into(), true.into());
        }
    }
}

/// Removes ad identifiers anywhere in `v`: `clickIds` objects, keys that name a click id
/// or an ad platform's browser id, and click-id parameters of URL strings.
pub fn strip_ad_ids(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| k != "clickIds" && !is_ad_id(k));
            for item in map.values_mut() {
                strip_ad_ids(item);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_ad_ids),
        Value::String(s) if s.contains('?') => {
            if let Some(clean) = strip_click_ids(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// Notes plan warnings on an accepted event (`context.trackingPlan`, among what the
/// event adds to its shared context).
pub fn note_violations(
    ctx: &mut Map<String, Value>,
    version: Option<&str>,
    violations: Vec<&'static str>,
) {
    if violations.is_empty() {
        return;
    }
    let mut tp = Map::new();
    if let Some(v) = version {
        tp.insert("version".into(), v.into());
    }
    tp.insert("violations".into(), violations.into());
    ctx.insert("trackingPlan".into(), Value::Object(tp));
}
