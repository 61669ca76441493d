//! Reasons: decides the typed vocabulary of why an event was quarantined, refused or
//! accepted with a remark. Stored and answered as snake_case codes.

use serde::Serialize;
use tracking_plan::ViolationKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// Not stored: the event's consent does not allow analytics.
    ConsentDenied,
    TooLarge,
    NotAnObject,
    /// Well-formed enough to split from its batch, but its JSON cannot be read (nesting
    /// past serde's limit; a number too large for a double is read as `null` first):
    /// its content cannot be scrubbed of PII, so only the reason is kept.
    UnreadableJson,
    InvalidField,
    MissingType,
    /// The shape check's, for a message without a messageId; the pipeline gives such a
    /// message one first (`derived_message_id`), so none is quarantined for it now, but
    /// rows quarantined for it before keep their reason.
    MissingMessageId,
    MissingIdentity,
    MissingRequired,
    RawPii,
    MessageIdConflict,
    /// A tracking-plan violation (its own kind, from `tracking_plan::ViolationKind`).
    Plan(ViolationKind),
}

impl ReasonKind {
    pub fn as_str(self) -> &'static str {
        use ReasonKind::*;
        match self {
            ConsentDenied => "consent_denied",
            TooLarge => "too_large",
            NotAnObject => "not_an_object",
            UnreadableJson => "unreadable_json",
            InvalidField => "invalid_field",
            MissingType => "missing_type",
            MissingMessageId => "missing_message_id",
            MissingIdentity => "missing_identity",
            MissingRequired => "missing_required",
            RawPii => "raw_pii",
            MessageIdConflict => "message_id_conflict",
            Plan(p) => p.as_str(),
        }
    }
}

/// Why an event was quarantined (or a remark on an accepted one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    #[serde(serialize_with = "kind_str")]
    pub kind: ReasonKind,
    /// JSON path inside the message the reason is about (`$` for the whole message).
    pub path: String,
    pub message: String,
}

fn kind_str<S: serde::Serializer>(k: &ReasonKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

impl Reason {
    pub fn new(kind: ReasonKind, path: impl Into<String>, message: impl Into<String>) -> Self {
        Reason {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}
