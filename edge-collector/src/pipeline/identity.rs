//! Identity stage: decides which identifiers of a scrubbed, consented event the graph
//! may see. userId, anonymousId (and alias's previousId) always; hashed emails and
//! phones (`email_sha256`/`phone_sha256`, or `email`/`phone` already hashed) from
//! traits, context traits and properties only under personalization consent; the
//! collector's cookie id apart, so the graph can ignore a retired one.

use crate::consent::Decision;
use crate::identity::{IdKind, Ident, Observation};
use serde_json::Value;
use tracking_plan::identifiers::is_sha256_hex;
use tracking_plan::{Message, MessageType};

const HASHED: [(&str, IdKind); 4] = [
    ("email_sha256", IdKind::Email),
    ("email", IdKind::Email),
    ("phone_sha256", IdKind::Phone),
    ("phone", IdKind::Phone),
];

fn hashed_ids(m: &Message, context: Option<&Value>, out: &mut Vec<Ident>) {
    let ctx_traits = context.and_then(|c| c.get("traits"));
    for section in [m.traits.as_ref(), ctx_traits, m.properties.as_ref()] {
        let Some(Value::Object(obj)) = section else {
            continue;
        };
        for (key, kind) in HASHED {
            if let Some(v) = obj.get(key).and_then(Value::as_str) {
                if is_sha256_hex(v) {
                    out.push(Ident::new(kind, v.to_ascii_lowercase()));
                }
            }
        }
    }
}

/// The identifiers an event carries for the graph.
pub fn identifiers(m: &Message, context: Option<&Value>, personalization: bool) -> Vec<Ident> {
    let mut ids = Vec::new();
    if let Some(u) = &m.user_id {
        ids.push(Ident::new(IdKind::UserId, u.clone()));
    }
    if let Some(a) = &m.anonymous_id {
        ids.push(Ident::new(IdKind::Anonymous, a.clone()));
    }
    if m.kind == Some(MessageType::Alias) {
        if let Some(p) = &m.previous_id {
            ids.push(Ident::new(IdKind::Anonymous, p.clone()));
        }
    }
    if personalization {
        hashed_ids(m, context, &mut ids);
    }
    ids
}

/// The traits an identify call sets on its profile: its `traits`, or, when it has
/// none, its `context.traits` (where RudderStack's browser SDK sends them).
fn identify_traits<'a>(
    m: &'a Message,
    context: &'a Value,
    kind: MessageType,
) -> Option<&'a serde_json::Map<String, Value>> {
    if kind != MessageType::Identify {
        return None;
    }
    let in_context = || context.get("traits");
    match m.traits.as_ref().or_else(in_context) {
        Some(Value::Object(t)) => Some(t),
        _ => None,
    }
}

/// What the event brings to the graph. Its `consent` (the decision's categories as JSON,
/// [`crate::consent::to_json`]) is the caller's to set: a request builds it once.
pub fn observation(
    m: &Message,
    context: &Value,
    kind: MessageType,
    key: String,
    cookie: Option<&str>,
    decision: &Decision,
    at_ms: i64,
) -> Observation {
    Observation {
        key,
        identifiers: identifiers(m, Some(context), decision.personalization),
        cookie: cookie.map(|c| Ident::new(IdKind::Anonymous, c)),
        traits: identify_traits(m, context, kind).cloned(),
        consent: None,
        at_ms,
        activity: None,
    }
}

/// Every identifier value an event carries, whatever the consent: what erasure looks
/// for in a quarantined copy.
pub fn subjects(m: &Message) -> Vec<String> {
    let mut ids = Vec::new();
    hashed_ids(m, m.context.as_ref(), &mut ids);
    let mut out: Vec<String> = [&m.anonymous_id, &m.user_id, &m.previous_id]
        .into_iter()
        .flatten()
        .cloned()
        .chain(ids.into_iter().map(|i| i.value))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: Value) -> Message {
        serde_json::from_value(v).unwrap()
    }

    /// `identify_traits` of a message, its context passed apart as the pipeline does.
    fn traits_of(m: &Message, kind: MessageType) -> Option<&serde_json::Map<String, Value>> {
        static NONE: Value = Value::Null;
        identify_traits(m, m.context.as_ref().unwrap_or(&NONE), kind)
    }

    #[test]
    fn an_identify_call_sets_its_traits_or_else_its_context_traits() {
        let top = message(
            json!({"type": "identify", "userId": "u", "traits": {"plan": "pro"},
                                 "context": {"traits": {"plan": "free"}}}),
        );
        assert_eq!(
            traits_of(&top, MessageType::Identify).map(|t| &t["plan"]),
            Some(&json!("pro"))
        );
        let rudder = message(
            json!({"type": "identify", "userId": "u", "context": {"traits": {"plan": "free"}}}),
        );
        assert_eq!(
            traits_of(&rudder, MessageType::Identify).map(|t| &t["plan"]),
            Some(&json!("free"))
        );
        let track = message(
            json!({"type": "track", "event": "e", "userId": "u", "context": {"traits": {"plan": "free"}}}),
        );
        assert_eq!(
            traits_of(&track, MessageType::Track),
            None,
            "only identify calls set traits"
        );
        let not_an_object = message(json!({"type": "identify", "userId": "u", "traits": "x"}));
        assert_eq!(traits_of(&not_an_object, MessageType::Identify), None);
    }
}
