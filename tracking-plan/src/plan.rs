//! Tracking plans: decides whether an event matches the site's plan, and lists every way
//! it does not, each with a typed kind and the JSON path it is about.
//!
//! A plan is one JSON file per site:
//!
//! ```json
//! {
//!   "version": "3",
//!   "unplanned": "flag",
//!   "rawPii": "hash",
//!   "events": {
//!     "Product Added": {"properties": {"type": "object", "required": ["product_id"],
//!       "properties": {"product_id": {"type": "string"}, "price": {"type": "number", "minimum": 0}}}}
//!   },
//!   "identify": {"traits": {"type": "object", "properties": {"email": {"type": "string", "x-pii": "email"}}}},
//!   "page": {"properties": {"type": "object"}}
//! }
//! ```
//!
//! Schemas are a documented subset of JSON Schema draft 2020-12: `type`, `required`,
//! `properties`, `additionalProperties`, `items`, `minItems`/`maxItems`, `enum`, `const`,
//! `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`/`multipleOf`,
//! `minLength`/`maxLength`, `pattern` (unanchored, like ECMA-262), `format` (`email`,
//! `uri`, `date-time`), plus `x-pii` (`email` or `phone`: the value must arrive as a
//! SHA-256 hex digest). `rawPii` (`hash`, the default, or `quarantine`) tells the collector
//! what to do with a raw email or phone number found in an event. Annotations (`title`, `description`, `$schema`, `$id`, `$comment`,
//! `examples`, `default`, `deprecated`, `readOnly`, `writeOnly`, other `x-` keys) are
//! ignored. Any other keyword is a lint error rather than silently ignored: a plan that
//! validated less than its authors think would let bad data through.
//!
//! The evaluator is our own rather than the `jsonschema` crate: it compiles once per plan
//! and is small enough to ship in the browser SDK (figures in the README).

use crate::identifiers::{is_sha256_hex, normalize_email, PiiKind};
use crate::message::{Message, MessageType};
use crate::path::{render, Seg};
use crate::time::parse_rfc3339;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// What to do with a track event whose name the plan does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnplannedPolicy {
    /// Accept it without a remark.
    Allow,
    /// Accept it and report an `UnplannedEvent` violation.
    Flag,
    /// Report an `UnplannedEvent` violation; the collector quarantines the event.
    Quarantine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    UnplannedEvent,
    MissingRequired,
    TypeMismatch,
    OutOfRange,
    PatternMismatch,
    UnexpectedProperty,
    RawPii,
    TooLarge,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::UnplannedEvent => "unplanned_event",
            ViolationKind::MissingRequired => "missing_required",
            ViolationKind::TypeMismatch => "type_mismatch",
            ViolationKind::OutOfRange => "out_of_range",
            ViolationKind::PatternMismatch => "pattern_mismatch",
            ViolationKind::UnexpectedProperty => "unexpected_property",
            ViolationKind::RawPii => "raw_pii",
            ViolationKind::TooLarge => "too_large",
        }
    }
}

/// One way an event breaks the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub kind: ViolationKind,
    /// JSON path inside the message, e.g. `$.properties.items[2].price`.
    pub path: String,
    pub message: String,
    /// For `RawPii`: what was found.
    pub pii: Option<PiiKind>,
}

/// A problem in the plan file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// JSON path inside the plan file.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub use crate::path::{child_path, push_child};

const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const INTEGER: u8 = 4;
const NUMBER: u8 = 8;
const STRING: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;

fn type_bit(name: &str) -> Option<u8> {
    Some(match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "integer" => INTEGER,
        "number" => NUMBER | INTEGER,
        "string" => STRING,
        "array" => ARRAY,
        "object" => OBJECT,
        _ => return None,
    })
}

fn type_names(bits: u8) -> String {
    let names = [
        "null", "boolean", "integer", "number", "string", "array", "object",
    ];
    let mut out: Vec<&str> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        if bits & (1 << i) != 0 && !(*n == "integer" && bits & NUMBER != 0) {
            out.push(n);
        }
    }
    out.join(" or ")
}

fn value_bits(v: &Value) -> u8 {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Number(n) => {
            let integral = n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0);
            if integral {
                INTEGER
            } else {
                NUMBER
            }
        }
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Email,
    Uri,
    DateTime,
}

#[derive(Debug, Default)]
enum Additional {
    #[default]
    Allow,
    Deny,
    Schema(Box<Schema>),
}

/// A compiled schema node.
#[derive(Debug, Default)]
struct Schema {
    types: u8,
    required: Vec<String>,
    properties: Vec<(String, Schema)>,
    additional: Additional,
    items: Option<Box<Schema>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    enum_values: Option<Vec<Value>>,
    const_value: Option<Value>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    multiple_of: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<(String, crate::pattern::Pattern)>,
    format: Option<Format>,
    pii: Option<PiiKind>,
}

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

struct Compiler {
    errors: Vec<PlanError>,
}

impl Compiler {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(PlanError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn number(&mut self, path: &str, key: &str, v: &Value) -> Option<f64> {
        match v.as_f64() {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.err(&child_path(path, key), "must be a number");
                None
            }
        }
    }

    fn count(&mut self, path: &str, key: &str, v: &Value) -> Option<usize> {
        match v.as_u64() {
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => {
                self.err(&child_path(path, key), "must be a non-negative integer");
                None
            }
        }
    }

    fn schema(&mut self, v: &Value, path: &str) -> Schema {
        let mut s = Schema::default();
        let obj = match v {
            Value::Object(o) => o,
            Value::Bool(true) => return s,
            _ => {
                self.err(path, "a schema must be a JSON object");
                return s;
            }
        };
        for (key, val) in obj {
            let kp = child_path(path, key);
            match key.as_str() {
                "type" => {
                    let names: Vec<&Value> = match val {
                        Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for n in names {
                        match n.as_str().and_then(type_bit) {
                            Some(bit) => s.types |= bit,
                            None => self.err(&kp, format!("unknown type {n}")),
                        }
                    }
                }
                "required" => match val.as_array() {
                    Some(a) if a.iter().all(Value::is_string) => {
                        s.required = a
                            .iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect();
                    }
                    _ => self.err(&kp, "must be an array of property names"),
                },
                "properties" => match val.as_object() {
                    Some(props) => {
                        for (name, sub) in props {
                            let sub = self.schema(sub, &child_path(&kp, name));
                            s.properties.push((name.clone(), sub));
                        }
                    }
                    None => self.err(&kp, "must be an object of schemas"),
                },
                "additionalProperties" => {
                    s.additional = match val {
                        Value::Bool(true) => Additional::Allow,
                        Value::Bool(false) => Additional::Deny,
                        other => Additional::Schema(Box::new(self.schema(other, &kp))),
                    }
                }
                "items" => s.items = Some(Box::new(self.schema(val, &kp))),
                "minItems" => s.min_items = self.count(path, key, val),
                "maxItems" => s.max_items = self.count(path, key, val),
                "minLength" => s.min_length = self.count(path, key, val),
                "maxLength" => s.max_length = self.count(path, key, val),
                "minimum" => s.minimum = self.number(path, key, val),
                "maximum" => s.maximum = self.number(path, key, val),
                "exclusiveMinimum" => s.exclusive_minimum = self.number(path, key, val),
                "exclusiveMaximum" => s.exclusive_maximum = self.number(path, key, val),
                "multipleOf" => {
                    s.multiple_of = self.number(path, key, val).filter(|n| *n > 0.0);
                    if s.multiple_of.is_none() {
                        self.err(&kp, "must be a number greater than 0");
                    }
                }
                "enum" => match val.as_array() {
                    Some(a) if !a.is_empty() => s.enum_values = Some(a.clone()),
                    _ => self.err(&kp, "must be a non-empty array"),
                },
                "const" => s.const_value = Some(val.clone()),
                "pattern" => match val.as_str().map(|p| (p, crate::pattern::Pattern::new(p))) {
                    Some((p, Ok(re))) => s.pattern = Some((p.to_string(), re)),
                    Some((_, Err(e))) => self.err(&kp, format!("invalid pattern: {e}")),
                    None => self.err(&kp, "must be a string"),
                },
                "format" => {
                    s.format = match val.as_str() {
                        Some("email") => Some(Format::Email),
                        Some("uri") => Some(Format::Uri),
                        Some("date-time") => Some(Format::DateTime),
                        _ => {
                            self.err(&kp, "supported formats: email, uri, date-time");
                            None
                        }
                    }
                }
                "x-pii" => {
                    s.pii = match val.as_str() {
                        Some("email") => Some(PiiKind::Email),
                        Some("phone") => Some(PiiKind::Phone),
                        _ => {
                            self.err(&kp, "x-pii must be \"email\" or \"phone\"");
                            None
                        }
                    }
                }
                k if ANNOTATIONS.contains(&k) || k.starts_with("x-") => {}
                k => self.err(&kp, format!("unsupported keyword `{k}`")),
            }
        }
        if s.pii.is_some() && s.types & !(STRING | NULL) != 0 {
            self.err(
                path,
                "a property with x-pii must be a string (its SHA-256 hex)",
            );
        }
        s
    }
}

/// What the collector does with a raw email or phone number found in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawPiiPolicy {
    /// Replace it with the SHA-256 of its normalized form and accept the event.
    Hash,
    /// Quarantine the event (its stored copy has the value hashed all the same).
    Quarantine,
}

/// A compiled tracking plan.
#[derive(Debug)]
pub struct Plan {
    pub version: String,
    pub unplanned: UnplannedPolicy,
    pub raw_pii: RawPiiPolicy,
    /// Largest accepted message in bytes (default 32 KB, Segment's limit).
    pub max_event_bytes: usize,
    events: HashMap<String, Option<Schema>>,
    identify_traits: Option<Schema>,
    page_properties: Option<Schema>,
}

/// Default and upper bound of `maxEventBytes`: the wire limit of one message.
pub const MAX_EVENT_BYTES: usize = crate::limits::MAX_MESSAGE_BYTES;

impl Plan {
    /// Parses and compiles a plan, or lists every problem in it with its path.
    pub fn from_json(text: &str) -> Result<Plan, Vec<PlanError>> {
        let root: Value = serde_json::from_str(text).map_err(|e| {
            vec![PlanError {
                path: "$".into(),
                message: format!("not JSON: {e}"),
            }]
        })?;
        Self::from_value(&root)
    }

    pub fn from_value(root: &Value) -> Result<Plan, Vec<PlanError>> {
        let mut c = Compiler { errors: Vec::new() };
        let Some(obj) = root.as_object() else {
            return Err(vec![PlanError {
                path: "$".into(),
                message: "a plan is a JSON object".into(),
            }]);
        };
        let version = match obj.get("version") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                c.err(
                    "$.version",
                    "required: a string or number naming the plan's version",
                );
                String::new()
            }
        };
        let unplanned = match obj.get("unplanned").map(|v| v.as_str()) {
            None | Some(Some("flag")) => UnplannedPolicy::Flag,
            Some(Some("allow")) => UnplannedPolicy::Allow,
            Some(Some("quarantine")) => UnplannedPolicy::Quarantine,
            _ => {
                c.err(
                    "$.unplanned",
                    "must be \"allow\", \"flag\" or \"quarantine\"",
                );
                UnplannedPolicy::Flag
            }
        };
        let raw_pii = match obj.get("rawPii").map(|v| v.as_str()) {
            None | Some(Some("hash")) => RawPiiPolicy::Hash,
            Some(Some("quarantine")) => RawPiiPolicy::Quarantine,
            _ => {
                c.err("$.rawPii", "must be \"hash\" or \"quarantine\"");
                RawPiiPolicy::Hash
            }
        };
        let max_event_bytes = match obj.get("maxEventBytes") {
            None => MAX_EVENT_BYTES,
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if (1..=MAX_EVENT_BYTES).contains(&n) => n,
                _ => {
                    c.err(
                        "$.maxEventBytes",
                        format!("must be an integer from 1 to {MAX_EVENT_BYTES}"),
                    );
                    MAX_EVENT_BYTES
                }
            },
        };
        let mut events = HashMap::new();
        match obj.get("events") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, def) in map {
                    let p = child_path("$.events", name);
                    events.insert(name.clone(), c.section(def, &p, "properties"));
                }
            }
            Some(_) => c.err("$.events", "must be an object keyed by event name"),
        }
        let identify_traits = obj
            .get("identify")
            .and_then(|d| c.section(d, "$.identify", "traits"));
        let page_properties = obj
            .get("page")
            .and_then(|d| c.section(d, "$.page", "properties"));
        for key in obj.keys() {
            let known = [
                "version",
                "unplanned",
                "rawPii",
                "maxEventBytes",
                "events",
                "identify",
                "page",
            ];
            if !known.contains(&key.as_str())
                && !ANNOTATIONS.contains(&key.as_str())
                && !key.starts_with("x-")
            {
                c.err(&child_path("$", key), "unknown plan field");
            }
        }
        if c.errors.is_empty() {
            Ok(Plan {
                version,
                unplanned,
                raw_pii,
                max_event_bytes,
                events,
                identify_traits,
                page_properties,
            })
        } else {
            Err(c.errors)
        }
    }

    /// Whether a violation keeps the event out of clean storage. Everything does except
    /// an unplanned event under the `allow` or `flag` policy, which is stored flagged.
    pub fn is_blocking(&self, v: &Violation) -> bool {
        v.kind != ViolationKind::UnplannedEvent || self.unplanned == UnplannedPolicy::Quarantine
    }

    /// The track events the plan names, sorted.
    pub fn event_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.events.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether the plan lists this track event.
    pub fn is_planned(&self, event: &str) -> bool {
        self.events.contains_key(event)
    }

    /// Every violation of the plan by `m`, whose JSON text is `size_bytes` long. Raw
    /// emails and phone numbers in properties and traits are reported whatever the plan.
    pub fn validate(&self, m: &Message, size_bytes: usize) -> Vec<Violation> {
        self.validate_with(m, size_bytes, true)
    }

    /// [`validate`](Self::validate) of a message the PII walker has already scrubbed:
    /// the raw-PII scan of properties and traits is left out, as it finds nothing in
    /// what the walker leaves (a property test holds this, whatever the country), and
    /// it was 3% of the collector pipeline's instructions.
    pub fn validate_scrubbed(&self, m: &Message, size_bytes: usize) -> Vec<Violation> {
        self.validate_with(m, size_bytes, false)
    }

    fn validate_with(&self, m: &Message, size_bytes: usize, scan_pii: bool) -> Vec<Violation> {
        let mut out = Vec::new();
        if size_bytes > self.max_event_bytes {
            out.push(Violation {
                kind: ViolationKind::TooLarge,
                path: "$".into(),
                message: format!(
                    "message is {size_bytes} bytes; the limit is {}",
                    self.max_event_bytes
                ),
                pii: None,
            });
        }
        let (schema, value, root) = match m.kind {
            Some(MessageType::Track) => {
                let name = m.event.as_deref().unwrap_or_default();
                match self.events.get(name) {
                    Some(schema) => (schema.as_ref(), m.properties.as_ref(), "$.properties"),
                    None => {
                        if self.unplanned != UnplannedPolicy::Allow {
                            out.push(Violation {
                                kind: ViolationKind::UnplannedEvent,
                                path: "$.event".into(),
                                message: format!(
                                    "event {name:?} is not in tracking plan {}",
                                    self.version
                                ),
                                pii: None,
                            });
                        }
                        (None, m.properties.as_ref(), "$.properties")
                    }
                }
            }
            Some(MessageType::Identify | MessageType::Group) => {
                let s = if m.kind == Some(MessageType::Identify) {
                    self.identify_traits.as_ref()
                } else {
                    None
                };
                (s, m.traits.as_ref(), "$.traits")
            }
            Some(MessageType::Page | MessageType::Screen) => (
                self.page_properties.as_ref(),
                m.properties.as_ref(),
                "$.properties",
            ),
            _ => (None, None, "$"),
        };
        let empty = Value::Object(Map::new());
        if let Some(schema) = schema {
            let v = value.unwrap_or(&empty);
            let mut path = Vec::new();
            check(schema, v, root, &mut path, &mut out);
        }
        // Raw PII anywhere in properties or traits (x-pii values were checked above).
        if !scan_pii {
            return out;
        }
        for (section, root) in [(&m.properties, "$.properties"), (&m.traits, "$.traits")] {
            if let Some(v) = section {
                let mut found = Vec::new();
                crate::pii::find_pii(v, root, &mut found);
                for (path, kind) in found {
                    if !out
                        .iter()
                        .any(|x| x.kind == ViolationKind::RawPii && x.path == path)
                    {
                        out.push(raw_pii(path, kind));
                    }
                }
            }
        }
        out
    }
}

impl Compiler {
    /// An event/identify/page definition: `{"properties": schema}` (or `traits`).
    fn section(&mut self, def: &Value, path: &str, field: &str) -> Option<Schema> {
        let Some(obj) = def.as_object() else {
            self.err(path, "must be an object");
            return None;
        };
        for key in obj.keys() {
            if key != field && !ANNOTATIONS.contains(&key.as_str()) && !key.starts_with("x-") {
                self.err(
                    &child_path(path, key),
                    format!("unknown field (expected `{field}`)"),
                );
            }
        }
        obj.get(field)
            .map(|s| self.schema(s, &child_path(path, field)))
    }
}

fn raw_pii(path: String, kind: PiiKind) -> Violation {
    Violation {
        kind: ViolationKind::RawPii,
        message: format!("raw {} found: send its SHA-256 instead", kind.as_str()),
        path,
        pii: Some(kind),
    }
}

fn violation(kind: ViolationKind, root: &str, segs: &[Seg<'_>], message: String) -> Violation {
    Violation {
        kind,
        path: render(root, segs),
        message,
        pii: None,
    }
}

fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check<'a>(
    s: &'a Schema,
    v: &'a Value,
    root: &str,
    path: &mut Vec<Seg<'a>>,
    out: &mut Vec<Violation>,
) {
    use ViolationKind::*;
    let bits = value_bits(v);
    if s.types != 0 && s.types & bits == 0 {
        let got = crate::message::json_kind(v);
        out.push(violation(
            TypeMismatch,
            root,
            path,
            format!("expected {}, got {got}", type_names(s.types)),
        ));
        return;
    }
    if let Some(c) = &s.const_value {
        if c != v {
            out.push(violation(OutOfRange, root, path, format!("must be {c}")));
        }
    }
    if let Some(allowed) = &s.enum_values {
        if !allowed.contains(v) {
            out.push(violation(
                OutOfRange,
                root,
                path,
                format!("must be one of {}", Value::Array(allowed.clone())),
            ));
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let bad = s.minimum.is_some_and(|m| x < m)
                || s.maximum.is_some_and(|m| x > m)
                || s.exclusive_minimum.is_some_and(|m| x <= m)
                || s.exclusive_maximum.is_some_and(|m| x >= m)
                || s.multiple_of
                    .is_some_and(|m| ((x / m).round() * m - x).abs() > 1e-9 * x.abs().max(1.0));
            if bad {
                out.push(violation(
                    OutOfRange,
                    root,
                    path,
                    format!("{n} is out of the allowed range"),
                ));
            }
        }
        Value::String(text) => {
            if let Some(kind) = s.pii {
                if !is_sha256_hex(text) {
                    let p = render(root, path);
                    out.push(raw_pii(p, kind));
                }
                return;
            }
            if s.min_length.is_some() || s.max_length.is_some() {
                let n = text.chars().count();
                if s.min_length.is_some_and(|m| n < m) || s.max_length.is_some_and(|m| n > m) {
                    out.push(violation(
                        OutOfRange,
                        root,
                        path,
                        format!("length {n} is out of the allowed range"),
                    ));
                }
            }
            if let Some((p, re)) = &s.pattern {
                if !re.is_match(text) {
                    out.push(violation(
                        PatternMismatch,
                        root,
                        path,
                        format!("does not match /{p}/"),
                    ));
                }
            }
            if let Some(f) = s.format {
                let ok = match f {
                    Format::Email => normalize_email(text, Default::default()).is_ok(),
                    Format::Uri => is_uri(text),
                    Format::DateTime => parse_rfc3339(text).is_some(),
                };
                if !ok {
                    let name = match f {
                        Format::Email => "email",
                        Format::Uri => "uri",
                        Format::DateTime => "date-time",
                    };
                    out.push(violation(
                        PatternMismatch,
                        root,
                        path,
                        format!("not a valid {name}"),
                    ));
                }
            }
        }
        Value::Array(items) => {
            let n = items.len();
            if s.min_items.is_some_and(|m| n < m) || s.max_items.is_some_and(|m| n > m) {
                out.push(violation(
                    OutOfRange,
                    root,
                    path,
                    format!("{n} items is out of the allowed range"),
                ));
            }
            if let Some(item_schema) = &s.items {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    check(item_schema, item, root, path, out);
                    path.pop();
                }
            }
        }
        Value::Object(map) => {
            for name in &s.required {
                if !map.contains_key(name) {
                    path.push(Seg::Key(name));
                    out.push(violation(
                        MissingRequired,
                        root,
                        path,
                        format!("required property {name:?} is missing"),
                    ));
                    path.pop();
                }
            }
            for (key, val) in map {
                path.push(Seg::Key(key));
                match s.properties.iter().find(|(n, _)| n == key) {
                    Some((_, sub)) => check(sub, val, root, path, out),
                    None => match &s.additional {
                        Additional::Allow => {}
                        Additional::Deny => out.push(violation(
                            UnexpectedProperty,
                            root,
                            path,
                            format!("property {key:?} is not in the plan"),
                        )),
                        Additional::Schema(sub) => check(sub, val, root, path, out),
                    },
                }
                path.pop();
            }
        }
        _ => {}
    }
}
