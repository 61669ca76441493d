//! The message model: decides what a Segment-spec message and batch look like on the
//! wire, and which fields a message of each type must carry.
//!
//! One flat struct covers all six types (track, page, identify, alias, group, screen), as
//! the spec shares almost every field between them. Fields that Sightline does not model
//! are kept in `extra` and written back unchanged, so nothing a peer SDK sends is lost.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The six Segment message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Track,
    Page,
    Identify,
    Alias,
    Group,
    Screen,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Identify => "identify",
            MessageType::Alias => "alias",
            MessageType::Group => "group",
            MessageType::Screen => "screen",
        }
    }

    /// Parses a type name, also accepting the one-letter path aliases used by
    /// analytics-next (`/v1/t`, `/v1/p`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "track" | "t" => MessageType::Track,
            "page" | "p" => MessageType::Page,
            "identify" | "i" => MessageType::Identify,
            "alias" | "a" => MessageType::Alias,
            "group" | "g" => MessageType::Group,
            "screen" | "s" => MessageType::Screen,
            _ => return None,
        })
    }
}

/// One Segment-spec message. `type` is kept optional so that a message without one can be
/// reported as such instead of failing the whole batch; [`Message::check_shape`] says
/// whether the required fields for its type are there. Deserialized by hand (below):
/// serde's derive with a `flatten` field buffers the whole message into an
/// intermediate tree and reads it a second time. Serialized by hand too, so that a
/// context can be written in from elsewhere ([`Message::serialize_with_context`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub kind: Option<MessageType>,
    pub message_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    /// Client time of the event (ISO 8601).
    pub timestamp: Option<String>,
    pub original_timestamp: Option<String>,
    pub sent_at: Option<String>,
    pub received_at: Option<String>,
    /// track: the event name.
    pub event: Option<String>,
    /// page / screen: the page name.
    pub name: Option<String>,
    /// page: the page category.
    pub category: Option<String>,
    /// alias: the id being aliased.
    pub previous_id: Option<String>,
    /// group: the group id.
    pub group_id: Option<String>,
    pub properties: Option<Value>,
    pub traits: Option<Value>,
    pub context: Option<Value>,
    pub integrations: Option<Value>,
    /// Every field not modelled above, kept as it came.
    pub extra: Map<String, Value>,
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_with_context(self.context.as_ref(), s)
    }
}

impl Message {
    /// Writes the message with `context` in place of its own: the collector writes the
    /// JSON of a context it read once into each event of a request that carries it. The
    /// fields go in their declared order, absent ones left out, then `extra` (as serde's
    /// derive with a `flatten` field wrote them: stored fingerprints depend on it).
    pub fn serialize_with_context<C, S>(&self, context: Option<&C>, s: S) -> Result<S::Ok, S::Error>
    where
        C: Serialize + ?Sized,
        S: Serializer,
    {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if let Some(kind) = &self.kind {
            map.serialize_entry("type", kind)?;
        }
        let texts = [
            ("messageId", &self.message_id),
            ("anonymousId", &self.anonymous_id),
            ("userId", &self.user_id),
            ("timestamp", &self.timestamp),
            ("originalTimestamp", &self.original_timestamp),
            ("sentAt", &self.sent_at),
            ("receivedAt", &self.received_at),
            ("event", &self.event),
            ("name", &self.name),
            ("category", &self.category),
            ("previousId", &self.previous_id),
            ("groupId", &self.group_id),
        ];
        for (key, value) in texts {
            if let Some(v) = value {
                map.serialize_entry(key, v)?;
            }
        }
        for (key, value) in [("properties", &self.properties), ("traits", &self.traits)] {
            if let Some(v) = value {
                map.serialize_entry(key, v)?;
            }
        }
        if let Some(c) = context {
            map.serialize_entry("context", c)?;
        }
        if let Some(v) = &self.integrations {
            map.serialize_entry("integrations", v)?;
        }
        for (key, value) in &self.extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Message {
    /// Every modelled field read straight into its place and every other one into
    /// `extra`, in one pass (the derive with `flatten` made the pipeline parse each
    /// message twice). A modelled field given twice is an error, as with the derive.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(d.deserialize_map(MessageVisitor(AsValue))?.0)
    }
}

impl Message {
    /// Reads a message with `context` read by `r`, which is handed back: the collector
    /// keeps a context's raw text unread, to reuse one reading of it for the events of a
    /// request that carry the same one.
    pub fn deserialize_with<'de, D, R>(d: D, r: R) -> Result<(Message, R), D::Error>
    where
        D: Deserializer<'de>,
        R: ReadContext<'de>,
    {
        d.deserialize_map(MessageVisitor(r))
    }
}

/// How a message's `context` is read: into the message (`Some`), or by the reader
/// itself (`None` is kept in the message).
pub trait ReadContext<'de> {
    fn read<A: serde::de::MapAccess<'de>>(&mut self, a: &mut A) -> Result<Option<Value>, A::Error>;
}

/// `context` read into the message, as any other field.
struct AsValue;

impl<'de> ReadContext<'de> for AsValue {
    fn read<A: serde::de::MapAccess<'de>>(&mut self, a: &mut A) -> Result<Option<Value>, A::Error> {
        a.next_value()
    }
}

struct MessageVisitor<R>(R);

/// An id field: a string, or a number or boolean written as one.
struct Id(Option<String>);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        id(d).map(Id)
    }
}

/// The modelled fields, by wire name, in the order of their bit in `seen`.
const FIELDS: [&str; 17] = [
    "type",
    "messageId",
    "anonymousId",
    "userId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "event",
    "name",
    "category",
    "previousId",
    "groupId",
    "properties",
    "traits",
    "context",
    "integrations",
];

impl<'de, R: ReadContext<'de>> serde::de::Visitor<'de> for MessageVisitor<R> {
    type Value = (Message, R);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        mut self,
        mut a: A,
    ) -> Result<(Message, R), A::Error> {
        let mut m = Message::default();
        let mut seen = 0u32;
        while let Some(key) = a.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(i) = FIELDS.iter().position(|f| *f == key) else {
                // An unmodelled field given twice keeps its last value, as with the derive.
                let v: Value = a.next_value()?;
                m.extra.insert(key.into_owned(), v);
                continue;
            };
            if seen & (1 << i) != 0 {
                return Err(serde::de::Error::duplicate_field(FIELDS[i]));
            }
            seen |= 1 << i;
            match i {
                0 => m.kind = a.next_value()?,
                1 => m.message_id = a.next_value::<Id>()?.0,
                2 => m.anonymous_id = a.next_value::<Id>()?.0,
                3 => m.user_id = a.next_value::<Id>()?.0,
                4 => m.timestamp = a.next_value()?,
                5 => m.original_timestamp = a.next_value()?,
                6 => m.sent_at = a.next_value()?,
                7 => m.received_at = a.next_value()?,
                8 => m.event = a.next_value()?,
                9 => m.name = a.next_value()?,
                10 => m.category = a.next_value()?,
                11 => m.previous_id = a.next_value::<Id>()?.0,
                12 => m.group_id = a.next_value::<Id>()?.0,
                13 => m.properties = a.next_value()?,
                14 => m.traits = a.next_value()?,
                15 => m.context = self.0.read(&mut a)?,
                _ => m.integrations = a.next_value()?,
            }
        }
        Ok((m, self.0))
    }
}

/// The body of `POST /v1/batch`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub batch: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    /// Context shared by every message of the batch (merged under each message's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a message does not have the shape its type requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeError {
    MissingType,
    MissingMessageId,
    /// Neither `anonymousId` nor `userId` (alias: `userId`) is set.
    MissingIdentity,
    /// A field the type requires is absent or empty (for example `event` on track).
    MissingField(&'static str),
}

impl ShapeError {
    pub fn describe(&self) -> String {
        match self {
            ShapeError::MissingType => "missing or unknown `type`".into(),
            ShapeError::MissingMessageId => "missing `messageId`".into(),
            ShapeError::MissingIdentity => "one of `anonymousId` or `userId` is required".into(),
            ShapeError::MissingField(f) => format!("missing `{f}`"),
        }
    }
}

fn present(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

impl Message {
    /// The event name (track) or page/screen name, for display and storage.
    pub fn event_name(&self) -> Option<&str> {
        match self.kind {
            Some(MessageType::Track) => self.event.as_deref(),
            // Jitsu's library names a page in its properties only (analytics.js in both).
            Some(MessageType::Page | MessageType::Screen) => self
                .name
                .as_deref()
                .or_else(|| self.properties.as_ref()?.get("name")?.as_str()),
            _ => None,
        }
    }

    /// Checks the fields the Segment spec requires for the message's type.
    pub fn check_shape(&self) -> Result<MessageType, ShapeError> {
        let kind = self.kind.ok_or(ShapeError::MissingType)?;
        if !present(&self.message_id) {
            return Err(ShapeError::MissingMessageId);
        }
        if !present(&self.anonymous_id) && !present(&self.user_id) {
            return Err(ShapeError::MissingIdentity);
        }
        match kind {
            MessageType::Track if !present(&self.event) => Err(ShapeError::MissingField("event")),
            MessageType::Alias if !present(&self.previous_id) => {
                Err(ShapeError::MissingField("previousId"))
            }
            MessageType::Alias if !present(&self.user_id) => {
                Err(ShapeError::MissingField("userId"))
            }
            MessageType::Group if !present(&self.group_id) => {
                Err(ShapeError::MissingField("groupId"))
            }
            _ => Ok(kind),
        }
    }
}

/// Ids are strings in the spec, but server libraries and hand-written clients send numbers
/// too; accept both (and null), so that a numeric userId is not a lost event.
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "an id must be a string or a number, not {}",
                json_kind(&other)
            )))
        }
    })
}

/// A JSON value's kind, as named in error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The derives the hand-written `Deserialize` and `Serialize` replaced, as the
    /// reference they must match.
    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Derived {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        kind: Option<MessageType>,
        #[serde(
            default,
            deserialize_with = "id",
            skip_serializing_if = "Option::is_none"
        )]
        message_id: Option<String>,
        #[serde(
            default,
            deserialize_with = "id",
            skip_serializing_if = "Option::is_none"
        )]
        anonymous_id: Option<String>,
        #[serde(
            default,
            deserialize_with = "id",
            skip_serializing_if = "Option::is_none"
        )]
        user_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        original_timestamp: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_at: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        received_at: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        #[serde(
            default,
            deserialize_with = "id",
            skip_serializing_if = "Option::is_none"
        )]
        previous_id: Option<String>,
        #[serde(
            default,
            deserialize_with = "id",
            skip_serializing_if = "Option::is_none"
        )]
        group_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        properties: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traits: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        integrations: Option<Value>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    }

    impl From<Derived> for Message {
        fn from(d: Derived) -> Self {
            Message {
                kind: d.kind,
                message_id: d.message_id,
                anonymous_id: d.anonymous_id,
                user_id: d.user_id,
                timestamp: d.timestamp,
                original_timestamp: d.original_timestamp,
                sent_at: d.sent_at,
                received_at: d.received_at,
                event: d.event,
                name: d.name,
                category: d.category,
                previous_id: d.previous_id,
                group_id: d.group_id,
                properties: d.properties,
                traits: d.traits,
                context: d.context,
                integrations: d.integrations,
                extra: d.extra,
            }
        }
    }

    #[test]
    fn the_hand_written_parse_matches_the_derive() {
        let cases = [
            r#"{"type":"track","messageId":"m1","anonymousId":"a","userId":"u","event":"E","properties":{"x":[1,{"y":null}]},"context":{"page":{}},"integrations":{"All":true},"timestamp":"t","originalTimestamp":"o","sentAt":"s","receivedAt":"r","_metadata":{"v":1},"extra":"kept"}"#,
            r#"{"type":"page","messageId":42,"anonymousId":true,"name":"Home","category":"c","previousId":7,"groupId":"g","traits":{"plan":"pro"}}"#,
            r#"{"messageId":null,"anonymousId":null,"type":null}"#,
            r#"{"t\u0079pe":"identify","user\u0049d":"u1","caf\u00e9":1}"#,
            r#"{}"#,
            r#"{"type":"purchase"}"#,
            r#"{"type":"track","type":"page"}"#,
            r#"{"messageId":{"no":"object"}}"#,
            r#"{"event":1}"#,
            r#"{"x":1,"x":2}"#,
            r#"[]"#,
            r#""text""#,
        ];
        for c in cases {
            let ours = serde_json::from_str::<Message>(c).ok();
            let derived = serde_json::from_str::<Derived>(c).ok().map(Message::from);
            assert_eq!(ours, derived, "{c}");
            // Written back, byte for byte as the derive wrote it (fingerprints hash it).
            if let (Some(m), Ok(d)) = (&ours, serde_json::from_str::<Derived>(c)) {
                let want = serde_json::to_string(&d).unwrap();
                assert_eq!(serde_json::to_string(m).unwrap(), want, "{c}");
                let other = json!({"page": {"url": "u"}, "ip": "1.2.3.0"});
                let mut swapped = m.clone();
                swapped.context = Some(other.clone());
                let raw = serde_json::value::to_raw_value(&other).unwrap();
                let mut out = Vec::new();
                m.serialize_with_context(Some(&*raw), &mut serde_json::Serializer::new(&mut out))
                    .unwrap();
                assert_eq!(out, serde_json::to_vec(&swapped).unwrap(), "{c}");
            }
        }
    }

    #[test]
    fn a_page_is_named_by_its_name_else_by_its_properties_name() {
        let page = |json: &str| serde_json::from_str::<Message>(json).unwrap();
        assert_eq!(
            page(r#"{"type":"page","name":"Home","properties":{"name":"Other"}}"#).event_name(),
            Some("Home")
        );
        assert_eq!(
            page(r#"{"type":"page","properties":{"name":"Docs"}}"#).event_name(),
            Some("Docs"),
            "Jitsu's page names itself in its properties only"
        );
        assert_eq!(
            page(r#"{"type":"track","properties":{"name":"Docs"}}"#).event_name(),
            None
        );
        assert_eq!(
            page(r#"{"type":"screen","properties":{"name":7}}"#).event_name(),
            None
        );
    }

    #[test]
    fn track_round_trips_and_keeps_unknown_fields() {
        let raw = json!({
            "type": "track", "messageId": "m1", "anonymousId": "a1",
            "event": "Signed Up", "properties": {"plan": "pro"},
            "timestamp": "2026-01-01T00:00:00.000Z",
            "context": {"library": {"name": "analytics.js", "version": "x"}},
            "_metadata": {"bundled": ["Segment.io"]}, "version": 2
        });
        let m: Message = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(m.kind, Some(MessageType::Track));
        assert_eq!(m.event_name(), Some("Signed Up"));
        assert_eq!(m.extra.get("version"), Some(&json!(2)));
        assert_eq!(serde_json::to_value(&m).unwrap(), raw);
        assert_eq!(m.check_shape(), Ok(MessageType::Track));
    }

    #[test]
    fn numeric_user_id_is_accepted_as_a_string() {
        let m: Message =
            serde_json::from_value(json!({"type":"identify","messageId":"m","userId":42})).unwrap();
        assert_eq!(m.user_id.as_deref(), Some("42"));
        assert_eq!(m.check_shape(), Ok(MessageType::Identify));
    }

    #[test]
    fn object_as_id_is_an_error() {
        let r: Result<Message, _> =
            serde_json::from_value(json!({"type":"track","messageId":{"a":1}}));
        assert!(r.unwrap_err().to_string().contains("string or a number"));
    }

    #[test]
    fn shape_rules_per_type() {
        let base = |v: Value| serde_json::from_value::<Message>(v).unwrap().check_shape();
        assert_eq!(
            base(json!({"messageId":"m","anonymousId":"a"})),
            Err(ShapeError::MissingType)
        );
        assert_eq!(
            base(json!({"type":"page","anonymousId":"a"})),
            Err(ShapeError::MissingMessageId)
        );
        assert_eq!(
            base(json!({"type":"page","messageId":"m"})),
            Err(ShapeError::MissingIdentity)
        );
        assert_eq!(
            base(json!({"type":"track","messageId":"m","anonymousId":"a"})),
            Err(ShapeError::MissingField("event"))
        );
        assert_eq!(
            base(json!({"type":"alias","messageId":"m","userId":"u"})),
            Err(ShapeError::MissingField("previousId"))
        );
        assert_eq!(
            base(json!({"type":"group","messageId":"m","userId":"u"})),
            Err(ShapeError::MissingField("groupId"))
        );
        assert_eq!(
            base(json!({"type":"page","messageId":"m","userId":"u"})),
            Ok(MessageType::Page)
        );
    }

    #[test]
    fn short_type_names() {
        assert_eq!(MessageType::from_name("t"), Some(MessageType::Track));
        assert_eq!(MessageType::from_name("b"), None);
        assert_eq!(MessageType::from_name("screen"), Some(MessageType::Screen));
    }
}
