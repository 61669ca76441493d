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

fn hashed_ids(m: &Message, out: &mut Vec<Ident>) {
    let ctx_traits = m.context.as_ref().and_then(|c| c.get("traits"));
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
pub fn identifiers(m: &Message, personalization: bool) -> Vec<Ident> {
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
        hashed_ids(m, &mut ids);
    }
    ids
}

/// What the event brings to the graph.
pub fn observation(
    m: &Message,
    kind: MessageType,
    key: String,
    cookie: Option<&str>,
    decision: &Decision,
    at_ms: i64,
) -> Observation {
    Observation {
        key,
        identifiers: identifiers(m, decision.personalization),
        cookie: cookie.map(|c| Ident::new(IdKind::Anonymous, c)),
        traits: match (&m.traits, kind) {
            (Some(Value::Object(t)), MessageType::Identify) => Some(t.clone()),
            _ => None,
        },
        consent: Some(crate::consent::to_json(decision)),
        at_ms,
        activity: None,
    }
}

/// Every identifier value an event carries, whatever the consent: what erasure looks
/// for in a quarantined copy.
pub fn subjects(m: &Message) -> Vec<String> {
    let mut ids = Vec::new();
    hashed_ids(m, &mut ids);
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
