//! Shape and plan: decides whether a scrubbed message has what its type requires and
//! what the source's tracking plan says of it: reasons that quarantine it, and warnings
//! it is accepted with (an unplanned event under `flag`, raw PII that was hashed).

use crate::reason::{Reason, ReasonKind};
use crate::sources::Source;
use serde_json::Value;
use tracking_plan::message::ShapeError;
use tracking_plan::pii::{Finding, PiiKind};
use tracking_plan::{Message, MessageType, RawPiiPolicy};

/// Longest messageId kept; longer ones are quarantined (they are dedup keys).
pub use tracking_plan::limits::MAX_MESSAGE_ID_LEN;

pub fn shape(m: &Message) -> Result<MessageType, Reason> {
    let kind = m.check_shape().map_err(|e| shape_reason(&e))?;
    if m.message_id.as_deref().unwrap_or_default().len() > MAX_MESSAGE_ID_LEN {
        return Err(Reason::new(
            ReasonKind::InvalidField,
            "$.messageId",
            format!("messageId is longer than {MAX_MESSAGE_ID_LEN} characters"),
        ));
    }
    Ok(kind)
}

fn shape_reason(e: &ShapeError) -> Reason {
    let (kind, path) = match e {
        ShapeError::MissingType => (ReasonKind::MissingType, "$.type"),
        ShapeError::MissingMessageId => (ReasonKind::MissingMessageId, "$.messageId"),
        ShapeError::MissingIdentity => (ReasonKind::MissingIdentity, "$"),
        ShapeError::MissingField(_) => (ReasonKind::MissingRequired, "$"),
    };
    Reason::new(kind, path, e.describe())
}

/// What the plan makes of a message.
#[derive(Default)]
pub struct Judged {
    pub reasons: Vec<Reason>,
    pub warnings: Vec<Reason>,
    /// Violation codes, kept in `context.trackingPlan` of an accepted event.
    pub violations: Vec<&'static str>,
}

pub fn judge(m: &Message, source: &Source, findings: &[Finding], size: usize) -> Judged {
    let mut j = Judged::default();
    let policy = source
        .compiled
        .as_ref()
        .map_or(RawPiiPolicy::Hash, |p| p.raw_pii);
    for f in findings {
        let r = |what: &str| Reason::new(ReasonKind::RawPii, f.path.clone(), what);
        match (f.kind, policy) {
            // Not personal data: the event is kept whatever the policy (a page view
            // whose address carried a reset link's token is still a page view).
            (PiiKind::Credential, _) => j.warnings.push(r(
                "a credential in an address (a token, secret or signature parameter); \
                 its value stored as 'redacted'",
            )),
            (kind, policy) => {
                let r = r(&format!(
                    "raw {} found; stored as its SHA-256",
                    kind.as_str()
                ));
                match policy {
                    RawPiiPolicy::Hash => j.warnings.push(r),
                    RawPiiPolicy::Quarantine => j.reasons.push(r),
                }
            }
        }
    }
    let Some(plan) = &source.compiled else {
        return j;
    };
    // The message was scrubbed before it got here: the findings above are its raw PII.
    for v in plan.validate_scrubbed(m, size) {
        let r = Reason::new(ReasonKind::Plan(v.kind), v.path.clone(), v.message.clone());
        j.violations.push(v.kind.as_str());
        if plan.is_blocking(&v) {
            j.reasons.push(r);
        } else {
            j.warnings.push(r);
        }
    }
    j
}

/// Why a JSON value is not a message, without quoting it (serde's errors name values:
/// "unknown variant `jo@x.io`"), by checking the modelled fields' types.
pub fn not_a_message(v: &Value) -> Reason {
    let Some(obj) = v.as_object() else {
        return Reason::new(
            ReasonKind::NotAnObject,
            "$",
            "a message must be a JSON object",
        );
    };
    if let Some(t) = obj.get("type") {
        if t.as_str()
            .is_none_or(|s| MessageType::from_name(s).is_none())
        {
            return Reason::new(
                ReasonKind::MissingType,
                "$.type",
                "`type` must be one of track, page, identify, alias, group, screen",
            );
        }
    }
    for key in [
        "messageId",
        "anonymousId",
        "userId",
        "previousId",
        "groupId",
    ] {
        if obj
            .get(key)
            .is_some_and(|x| !matches!(x, Value::String(_) | Value::Number(_) | Value::Null))
        {
            return Reason::new(
                ReasonKind::InvalidField,
                format!("$.{key}"),
                "an id must be a string or a number",
            );
        }
    }
    for key in [
        "event",
        "name",
        "category",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
    ] {
        if obj
            .get(key)
            .is_some_and(|x| !matches!(x, Value::String(_) | Value::Null))
        {
            return Reason::new(
                ReasonKind::InvalidField,
                format!("$.{key}"),
                "must be a string",
            );
        }
    }
    Reason::new(ReasonKind::InvalidField, "$", "a field has the wrong type")
}
