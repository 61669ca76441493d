//! The ingestion pipeline: decides, for one request to the Segment-compatible API,
//! whether it is refused as a whole (a typed [`Error`], mapped to its status in one
//! place) and for each event whether it is accepted, a duplicate, quarantined with typed
//! reasons, or refused for want of consent. Nothing is dropped without a verdict.
//!
//! Stages, one module each, in this order:
//! 1. `envelope`: encoding, size, JSON, write key, origin;
//! 2. `consent_gate`: before anything else reads the event, whether it may be kept at
//!    all (consent records are logged whatever their shape);
//! 3. `pii`: raw emails and phones replaced in every field, key and id;
//! 4. `shape`: the fields its type requires, then the tracking plan;
//! 5. `enrich`: time, edge facts, and what consent allows (ad ids stripped);
//! 6. `dedup`: claim, and answer a repeat (`duplicate`, conflict, or 503 while pending);
//! 7. `identity`: the profile, idempotent per event;
//! 8. `store`: events with their profile moves in one transaction, then commit.
//!
//! Every write is idempotent, and claims are committed only after the store, so a
//! process killed at any point loses nothing: the sender's retry completes the work.

pub mod activate;
pub mod consent_gate;
pub mod dedup;
pub mod enrich;
pub mod envelope;
pub mod identity;
pub mod pii;
pub mod replay;
pub mod shape;
mod split;
pub mod store;

use crate::consent::Decision;
pub use crate::error::Error;
use crate::identity::IdentityService;
pub use crate::reason::{Reason, ReasonKind};
use crate::sources::Source;
use crate::store::{ConsentRecord, Counts, EventStore, QuarantinedEvent, StoredEvent};
use crate::{dedup::Deduplicator, enrich::ParseCache};
pub use envelope::{
    decode_body, Endpoint, IngestRequest, RawBatch, MAX_BATCH_BYTES, MAX_MESSAGE_BYTES,
};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tracking_plan::pii::Scrubber;
use tracking_plan::time::format_rfc3339;
use tracking_plan::Message;

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
    /// The profile the event was resolved to: only for server sources (a browser could
    /// otherwise learn whether the site knows an email hash, and whose profile it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    /// The quarantine row's idempotency key (for replay).
    #[serde(skip)]
    pub qkey: Option<String>,
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
    /// The cookie must be cleared: a browser request whose events deny analytics.
    #[serde(skip)]
    pub clear_cookie: bool,
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

/// The pipeline's effects: where it stores, dedups and resolves identity.
pub struct Services<'s, E, D, I> {
    pub store: &'s E,
    pub dedup: &'s D,
    pub identity: &'s I,
    pub limiter: &'s RateLimiter,
}

/// An anonymous id safe to put in a cookie: short, URL-safe characters only.
pub fn valid_cookie_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 32 hex digits of SHA-256 over `parts`.
pub fn short_digest(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    hex16(&h.finalize())
}

fn hex16(digest: &[u8]) -> String {
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

/// Hash of an event's content as its sender built it, for telling a retry (same
/// content) from a different event reusing a messageId. Fields a sender may change
/// between retries (`sentAt`, `writeKey`, `_metadata`) are left out. Streams the
/// serialization into the hasher: no copy of the message.
///
/// XXH3-128 (`xxhash-rust`), not SHA-256: nothing here needs a cryptographic hash (a
/// sender that forged a collision could only get its own event judged a duplicate of
/// its own earlier one), and the Workers runtime has no SHA instructions: SHA-256 of
/// each message was 18% of the pipeline's instructions (callgrind, soft rounds as in
/// wasm). Written `x` and 32 hex digits; the 32-digit SHA-256 fingerprints stored before
/// are told apart by [`same_content`].
pub fn fingerprint(m: &mut Message) -> String {
    let context = m.context.take();
    let fp = fingerprint_with(m, context.as_ref(), &mut Vec::new());
    m.context = context;
    fp
}

/// [`fingerprint`] of a message with `context` written in place of its own (the
/// pipeline passes the JSON of its scrubbed context, written once per request), writing
/// the JSON into `scratch` (a request's reused buffer) and hashing it in one call: fed
/// token by token, the hasher's per-call cost was most of the fingerprint's instructions
/// (callgrind).
pub fn fingerprint_with<C: Serialize + ?Sized>(
    m: &mut Message,
    context: Option<&C>,
    scratch: &mut Vec<u8>,
) -> String {
    let sent_at = m.sent_at.take();
    let received_at = m.received_at.take();
    let metadata = m.extra.remove("_metadata");
    scratch.clear();
    let _ = m.serialize_with_context(context, &mut serde_json::Serializer::new(&mut *scratch));
    m.sent_at = sent_at;
    m.received_at = received_at;
    if let Some(v) = metadata {
        m.extra.insert("_metadata".into(), v);
    }
    let mut out = String::with_capacity(33);
    out.push('x');
    out.push_str(&hex16(&xxhash_rust::xxh3::xxh3_128(scratch).to_be_bytes()));
    out
}

/// Whether a repeated messageId carries the same content as the stored one, by their
/// fingerprints. A stored row without one (from before fingerprints were kept) counts
/// as the same, and so does a fingerprint of the other kind (SHA-256, from before
/// [`fingerprint`] used XXH3: the two cannot be compared, and the benign reading of a
/// repeated messageId from the same visitor is a retry).
pub fn same_content(stored: &str, new: &str) -> bool {
    stored.is_empty() || stored == new || stored.starts_with('x') != new.starts_with('x')
}

/// What every message of one request shares.
pub struct Shared<'a> {
    pub forced_type: Option<tracking_plan::MessageType>,
    pub batch: &'a RawBatch<'a>,
    pub write_key: &'a str,
    pub source: &'a Source,
    pub req: &'a IngestRequest<'a>,
    pub received_at: &'a str,
    /// What the source's segments read of its events.
    pub spec: crate::activity::Spec,
    /// Whether an event's JSON could not be read ([`prepare`] sets it).
    pub unreadable: std::cell::Cell<bool>,
}

/// An event that passed every check and waits for dedup, identity and storage.
pub struct Candidate {
    /// The row to store; its `fingerprint` is the event's.
    pub event: StoredEvent,
    pub observation: crate::identity::Observation,
    pub warnings: Vec<Reason>,
    /// The message, without its context: that is `context` (enriched, shared with the
    /// request's events that carry the same one) with `context_adds` (what this event
    /// adds to it: `trackingPlan`, `profileId`).
    pub message: Message,
    pub context: Rc<SharedContext>,
    pub context_adds: Map<String, Value>,
}

/// An enriched context shared by the events of a request. When several events write
/// it, the JSON of each of its entries is written once and each payload copies it (the
/// events of a server batch share a context but not a profile, so the context's JSON as
/// a whole differs); written by one event, it is written as it is.
pub struct SharedContext {
    pub value: Value,
    entries: std::cell::OnceCell<Vec<(String, Box<RawValue>)>>,
}

impl SharedContext {
    fn new(value: Value) -> Self {
        SharedContext {
            value,
            entries: std::cell::OnceCell::new(),
        }
    }

    fn entries(&self, map: &Map<String, Value>) -> &[(String, Box<RawValue>)] {
        self.entries.get_or_init(|| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), serde_json::value::to_raw_value(v).ok()?)))
                .collect()
        })
    }
}

impl Candidate {
    /// The event's context as it is stored.
    pub fn context(&self) -> ContextView<'_> {
        ContextView {
            base: &self.context,
            adds: &self.context_adds,
            // The request's memo holds one reference, each event carrying it another.
            shared: Rc::strong_count(&self.context) > 2,
        }
    }

    /// The message with its context in it (for a quarantine row).
    pub fn whole_message(&self) -> Message {
        let mut m = self.message.clone();
        m.context = serde_json::to_value(self.context()).ok();
        m
    }
}

/// A context with keys added to it, written as one object: the same JSON as the object
/// with the keys inserted (`serde_json`'s map keeps its keys sorted), without copying it.
pub struct ContextView<'a> {
    base: &'a SharedContext,
    adds: &'a Map<String, Value>,
    /// Written by more than one event of the request: its entries' JSON is kept.
    shared: bool,
}

impl Serialize for ContextView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Object(whole) = &self.base.value else {
            return self.base.value.serialize(s);
        };
        let new = self.adds.keys().filter(|k| !whole.contains_key(*k)).count();
        let len = whole.len() + new;
        if self.shared {
            let entries = self.base.entries(whole).iter();
            write_merged(s, len, entries.map(|(k, v)| (k, &**v)), self.adds)
        } else {
            write_merged(s, len, whole.iter(), self.adds)
        }
    }
}

/// Writes `base`'s entries (in key order) with `adds` in their places, as one object.
fn write_merged<'a, S: serde::Serializer, V: Serialize>(
    s: S,
    len: usize,
    base: impl Iterator<Item = (&'a String, V)>,
    adds: &'a Map<String, Value>,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(len))?;
    let mut adds = adds.iter().peekable();
    for (key, value) in base {
        while let Some((k, v)) = adds.next_if(|(k, _)| k.as_str() < key.as_str()) {
            map.serialize_entry(k, v)?;
        }
        match adds.next_if(|(k, _)| *k == key) {
            Some((k, v)) => map.serialize_entry(k, v)?,
            None => map.serialize_entry(key, &value)?,
        }
    }
    for (k, v) in adds {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// What one request's events share and need not work out twice: the parsed user
/// agents and page URLs, and the scrubbed texts (a batch repeats its page and user agent).
pub struct Memo<'c> {
    pub parsed: ParseCache,
    pub scrub: Scrubber<'c>,
    /// A buffer the fingerprints are written into, reused.
    pub scratch: Vec<u8>,
    /// The last consent decision and its categories as JSON ([`crate::consent::to_json`]):
    /// the events of a request mostly share one.
    consent: Option<(Decision, Value)>,
    /// How many messages without a messageId or a time were given one
    /// ([`derived_message_id`]).
    untimed: u32,
}

impl<'c> Memo<'c> {
    pub fn new(country: Option<&'c str>) -> Self {
        Memo {
            parsed: ParseCache::default(),
            scrub: Scrubber::new(country),
            scratch: Vec::new(),
            consent: None,
            untimed: 0,
        }
    }

    /// A decision's categories as JSON.
    fn consent_json(&mut self, d: &Decision) -> Value {
        match &self.consent {
            Some((known, json)) if known == d => json.clone(),
            _ => self
                .consent
                .insert((*d, crate::consent::to_json(d)))
                .1
                .clone(),
        }
    }
}

/// What the checks made of one event.
pub enum Prepared {
    Candidate(Box<Candidate>),
    Quarantine(Box<QuarantinedEvent>, Vec<Reason>),
    /// Not kept for want of consent (only counted).
    Refused {
        message_id: Option<String>,
    },
}

/// The message as JSON with the batch-level context filled in under its own, so the
/// consent gate and the PII walker see what would be stored; `Err` with the column
/// where reading stopped when the JSON cannot be read.
fn with_batch_context(text: &str, batch_ctx: Option<&Map<String, Value>>) -> Result<Value, usize> {
    let mut v: Value = serde_json::from_str(text).map_err(|e| e.column())?;
    if let (Value::Object(obj), Some(_)) = (&mut v, batch_ctx) {
        let ctx = obj.entry("context").or_insert(Value::Null);
        merge_context(ctx, batch_ctx);
    }
    Ok(v)
}

/// Why a message's JSON cannot be read, without quoting it.
fn unreadable(column: usize) -> Reason {
    Reason::new(
        ReasonKind::UnreadableJson,
        "$",
        format!(
            "the message's JSON cannot be read at column {column} (nesting deeper than \
             128 levels, or a token JSON does not allow)"
        ),
    )
}

/// Batch-level context fills in what the message's own context does not say.
fn merge_context(ctx: &mut Value, batch_ctx: Option<&Map<String, Value>>) {
    let Some(shared) = batch_ctx else { return };
    match ctx {
        Value::Object(own) => {
            for (k, val) in shared {
                own.entry(k.clone()).or_insert_with(|| val.clone());
            }
        }
        Value::Null => *ctx = Value::Object(shared.clone()),
        _ => {}
    }
}

/// The context of a request's events by its JSON text: read, merged with the batch's and
/// scrubbed once for the events in a row that carry the same text (a browser batch
/// repeats its page, user agent and consent in every event; analytics.js's, one page's
/// events after another's). The gate, the walker and the checks see what they saw when
/// each event's context was read on its own. Only the last one is kept: a request whose
/// events each carry their own pays one comparison per event, not a table of them all.
/// Such a request still reads each context twice (its text is skipped, then read): in
/// `pipeline_bench` with a distinct context per event, 397.1M instructions against
/// 362.8M before contexts were shared (a table of them all: 404.8M, and 14% slower by
/// the clock, where this is within 5%); with one context per batch, 230.0M against
/// 360.9M.
#[derive(Default)]
pub struct Contexts<'b> {
    last: Option<(&'b str, Known)>,
}

/// One context as the first event that carried it left it. Each form is kept only as
/// long as it is needed, and moved rather than copied.
struct Known {
    /// The part of it the consent gate reads (`consent::part`).
    gate: Option<Value>,
    /// Merged with the batch's, until an event with it passes the gate.
    merged: Option<Value>,
    /// Then scrubbed.
    scrubbed: Option<Scrubbed>,
}

/// A context scrubbed, and what became of it further on. The events that carry it hold
/// no context of their own until they are enriched: the checks between do not read it.
struct Scrubbed {
    /// Until an event with it is enriched (it is moved there); then `json` stands for it.
    value: Option<Value>,
    /// What the walker found in it (paths under `$.context`).
    findings: Vec<pii::Finding>,
    /// Its JSON, as the fingerprint writes it (`None`: the event has no context).
    json: Option<Box<RawValue>>,
    /// Enriched, with what consent allows applied, and the user agent read in it: once
    /// an event carrying it got that far.
    enriched: Option<(Rc<SharedContext>, crate::enrich::Agent)>,
}

impl Scrubbed {
    fn new(value: Option<Value>, findings: &[pii::Finding]) -> Self {
        let in_context = findings
            .iter()
            .filter(|f| tracking_plan::path::is_within(&f.path, "$.context"));
        Scrubbed {
            json: value
                .as_ref()
                .and_then(|c| serde_json::value::to_raw_value(c).ok()),
            value,
            findings: in_context.cloned().collect(),
            enriched: None,
        }
    }

    /// The scrubbed context, taken (to be enriched) while it is here, else read back
    /// from its JSON.
    fn take(&mut self) -> Option<Value> {
        self.value.take().or_else(|| self.read_back())
    }

    /// A copy of the scrubbed context (for a quarantined event).
    fn copy(&self) -> Option<Value> {
        self.value.clone().or_else(|| self.read_back())
    }

    fn read_back(&self) -> Option<Value> {
        serde_json::from_str(self.json.as_ref()?.get()).ok()
    }
}

impl<'b> Contexts<'b> {
    /// The context whose text is `raw` (`None`: the message has none), read and merged
    /// the first time; `None` when it cannot be read.
    fn get(&mut self, raw: Option<&'b str>, sh: &Shared<'_>) -> Option<&mut Known> {
        // No JSON text is empty, so "" stands for a message without a context.
        let key = raw.unwrap_or_default();
        if !matches!(&self.last, Some((last, _)) if *last == key) {
            self.last = Some((key, Self::read(raw, sh)?));
        }
        self.last.as_mut().map(|(_, known)| known)
    }

    /// A context read and merged with the batch's; `None` when it cannot be read.
    fn read(raw: Option<&str>, sh: &Shared<'_>) -> Option<Known> {
        let own = match raw {
            Some(text) => serde_json::from_str::<Option<Value>>(text).ok()?,
            None => None,
        };
        let merged = match sh.batch.context.as_ref() {
            Some(batch) => {
                let mut ctx = own.unwrap_or(Value::Null);
                merge_context(&mut ctx, Some(batch));
                Some(ctx)
            }
            None => own,
        };
        Some(Known {
            gate: crate::consent::part(merged.as_ref()),
            merged,
            scrubbed: None,
        })
    }
}

/// A message read with its `context` left as raw JSON text.
struct RawContext<'b>(Option<&'b RawValue>);

impl<'b> tracking_plan::message::ReadContext<'b> for RawContext<'b> {
    fn read<A: serde::de::MapAccess<'b>>(&mut self, a: &mut A) -> Result<Option<Value>, A::Error> {
        self.0 = Some(a.next_value()?);
        Ok(None)
    }
}

/// The message in `text`, and its context's raw JSON text.
fn read_message(text: &str) -> Option<(Message, Option<&str>)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let (m, RawContext(ctx)) = Message::deserialize_with(&mut de, RawContext(None)).ok()?;
    de.end().ok()?;
    Some((m, ctx.map(RawValue::get)))
}

/// Takes one message through the consent gate, PII, shape, plan and enrichment. A valid
/// message is parsed once, straight into the model (its context once per request);
/// anything else is read as JSON.
///
/// A number too large for a double (`1e999`) makes serde_json refuse the whole message,
/// which would then be kept as nothing but its reason (`unreadable_json`); a browser's
/// `JSON.parse` reads it as `Infinity`, which JSON writes `null`. Such a message is read
/// so instead, only once it could not be read as it came: nothing is scanned for it on
/// the way of a readable message.
pub fn prepare<'b>(
    text: &'b str,
    sh: &Shared<'_>,
    memo: &mut Memo<'_>,
    contexts: &mut Contexts<'b>,
    consent_log: &mut Vec<ConsentRecord>,
) -> Prepared {
    if let Some(p) = prepare_read(text, sh, memo, contexts, consent_log) {
        return p;
    }
    let fixed = (text.len() <= MAX_MESSAGE_BYTES)
        .then(|| tracking_plan::json_text::replace_overflowing_numbers(text))
        .flatten();
    let Some(fixed) = fixed else {
        return prepare_other(text, sh, consent_log);
    };
    // Its context is its own: the request's are keyed by their text in the body.
    let mut own = Contexts::default();
    prepare_read(&fixed, sh, memo, &mut own, consent_log)
        .unwrap_or_else(|| prepare_other(&fixed, sh, consent_log))
}

/// [`prepare`] of a message that can be read, with its context; `None` otherwise.
fn prepare_read<'b>(
    text: &'b str,
    sh: &Shared<'_>,
    memo: &mut Memo<'_>,
    contexts: &mut Contexts<'b>,
    consent_log: &mut Vec<ConsentRecord>,
) -> Option<Prepared> {
    if text.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let (m, ctx) = read_message(text)?;
    let known = contexts.get(ctx, sh)?;
    Some(prepare_message(m, known, text, sh, memo, consent_log))
}

fn at_gate<'a>(
    view: consent_gate::View<'a>,
    sh: &'a Shared<'a>,
    text: &'a str,
) -> consent_gate::AtGate<'a> {
    consent_gate::AtGate {
        view,
        write_key: sh.write_key,
        source: sh.source,
        gpc: sh.req.edge.gpc,
        country: sh.req.edge.country,
        received_at: sh.received_at,
        text,
    }
}

fn refused(message_id: Option<&str>, country: Option<&str>) -> Prepared {
    let message_id = message_id.map(|id| {
        tracking_plan::pii::scrub_text(id, country).map_or_else(|| id.to_string(), |(c, _)| c)
    });
    Prepared::Refused { message_id }
}

fn prepare_message(
    mut m: Message,
    known: &mut Known,
    text: &str,
    sh: &Shared<'_>,
    memo: &mut Memo<'_>,
    consent_log: &mut Vec<ConsentRecord>,
) -> Prepared {
    let country = sh.req.edge.country;
    if let Some(t) = sh.forced_type {
        m.kind = Some(t);
    }
    let mut view = consent_gate::View::of_message(&m);
    view.context = known.gate.as_ref();
    let gate = consent_gate::gate(&at_gate(view, sh, text));
    consent_log.extend(gate.record);
    if !gate.decision.store() {
        return refused(m.message_id.as_deref(), country);
    }
    // The write key authenticates the request; it is not event data (analytics-next
    // repeats it in every message), so it is not stored with the event.
    m.extra.remove("writeKey");
    let (findings, sc) = match &mut known.scrubbed {
        Some(sc) => (pii::scrub(&mut m, &mut memo.scrub, Some(&sc.findings)), sc),
        None => {
            m.context = known.merged.take();
            let findings = pii::scrub(&mut m, &mut memo.scrub, None);
            let sc = Scrubbed::new(m.context.take(), &findings);
            (findings, known.scrubbed.insert(sc))
        }
    };
    checked(m, &findings, sh, memo, gate.decision, text.len(), sc)
}

/// JSON that is too large or not a valid message: gated, then quarantined scrubbed.
fn prepare_other(text: &str, sh: &Shared<'_>, consent_log: &mut Vec<ConsentRecord>) -> Prepared {
    let (mut v, unreadable_at) = match with_batch_context(text, sh.batch.context.as_ref()) {
        Ok(v) => (v, None),
        // Nothing of it can be read: no consent either, so an opt-in source refuses it.
        Err(column) => {
            sh.unreadable.set(true);
            (Value::Null, Some(column))
        }
    };
    if let (Some(t), Value::Object(obj)) = (sh.forced_type, &mut v) {
        obj.insert("type".into(), t.as_str().into());
    }
    let at = at_gate(consent_gate::View::of_value(&v), sh, text);
    let gate = consent_gate::gate(&at);
    consent_log.extend(gate.record);
    if !gate.decision.store() {
        return refused(at.view.message_id.as_deref(), sh.req.edge.country);
    }
    let reason = if text.len() > MAX_MESSAGE_BYTES {
        Reason::new(
            ReasonKind::TooLarge,
            "$",
            format!(
                "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                text.len()
            ),
        )
    } else if let Some(column) = unreadable_at {
        return quarantine_unreadable(sh, text, unreadable(column));
    } else {
        shape::not_a_message(&v)
    };
    quarantine_value(sh, v, reason, None)
}

/// Quarantines a message nothing of which can be read: kept as its reason alone, keyed
/// by its text with raw PII replaced (the scan has its own stack, so depth does not stop
/// it), so that two such messages are two rows and a retry of one is the same row.
fn quarantine_unreadable(sh: &Shared<'_>, text: &str, reason: Reason) -> Prepared {
    let country = sh.req.edge.country;
    let scrubbed =
        tracking_plan::json_text::scrub(text, tracking_plan::pii::FieldKind::Other, country);
    let content = match &scrubbed {
        Ok(Some(clean)) => clean.as_str(),
        // Clean, or not JSON even to the scan: only its digest is kept.
        Ok(None) | Err(_) => text,
    };
    quarantine_value(sh, Value::Null, reason, Some(content))
}

/// A messageId for a message that has none: Segment's HTTP API takes messages without
/// one (none of its documented examples has one), and so does RudderStack's. With a
/// client time (`timestamp` or `originalTimestamp`) it is derived from the (scrubbed)
/// content, as the fingerprint reads it, so a retry of the message gets the same id and
/// is answered as a duplicate; two events alike to the millisecond are one. Without a
/// time nothing tells a retry from a second event, so the id is the request's (its
/// random id and the message's place among the untimed): each is stored, and a retry of
/// it is stored again, as a sender without ids asks for. `sl-` and 32 hex digits.
fn derived_message_id(
    m: &mut Message,
    sc: &Scrubbed,
    sh: &Shared<'_>,
    memo: &mut Memo<'_>,
) -> String {
    let content = fingerprint_with(m, sc.json.as_deref(), &mut memo.scratch);
    if m.timestamp.is_some() || m.original_timestamp.is_some() {
        return format!("sl-{}", &content[1..]);
    }
    memo.untimed += 1;
    let place = format!("{content}/{}/{}", sh.req.request_id, memo.untimed);
    let digest = xxhash_rust::xxh3::xxh3_128(place.as_bytes()).to_be_bytes();
    format!("sl-{}", hex16(&digest))
}

/// Shape, plan and enrichment of a scrubbed message whose context is `sc`.
fn checked(
    mut m: Message,
    findings: &[pii::Finding],
    sh: &Shared<'_>,
    memo: &mut Memo<'_>,
    decision: Decision,
    size: usize,
    sc: &mut Scrubbed,
) -> Prepared {
    if m.message_id.as_deref().is_none_or(str::is_empty) {
        m.message_id = Some(derived_message_id(&mut m, sc, sh, memo));
    }
    let kind = match shape::shape(&m) {
        Ok(k) => k,
        Err(reason) => return quarantine_scrubbed(sh, m, sc, vec![reason]),
    };
    let fp = fingerprint_with(&mut m, sc.json.as_deref(), &mut memo.scratch);
    let judged = shape::judge(&m, sh.source, findings, size);
    if !judged.reasons.is_empty() {
        return quarantine_scrubbed(sh, m, sc, judged.reasons);
    }
    let batch_sent_at = sh.batch.sent_at.as_ref().and_then(Value::as_str);
    let ts = enrich::stamp(&mut m, batch_sent_at, sh.req.now_ms, sh.received_at);
    let (context, agent) = match &sc.enriched {
        Some((context, agent)) => (Rc::clone(context), agent.clone()),
        None => {
            let mut context = sc.take();
            let agent = enrich::context(&mut context, &sh.req.edge, memo, &decision);
            let context = Rc::new(SharedContext::new(context.unwrap_or_default()));
            sc.enriched = Some((Rc::clone(&context), agent.clone()));
            (context, agent)
        }
    };
    enrich::apply_consent(&mut m.properties, &decision);
    let version = sh.source.compiled.as_ref().map(|p| p.version.clone());
    let mut context_adds = Map::new();
    enrich::note_violations(&mut context_adds, version.as_deref(), judged.violations);
    let cookie = sh.req.edge.cookie_id.filter(|c| valid_cookie_id(c));
    let message_id = m.message_id.as_deref().unwrap_or_default();
    let visitor =
        crate::dedup::visitor(m.anonymous_id.as_deref(), m.user_id.as_deref(), message_id);
    let key = crate::dedup::key(sh.write_key, visitor, message_id);
    let mut observation =
        identity::observation(&m, &context.value, kind, key, cookie, &decision, ts);
    observation.consent = Some(memo.consent_json(&decision));
    observation.activity = kept_activity(&m, &context.value, kind, sh, ts);
    Prepared::Candidate(Box::new(Candidate {
        event: StoredEvent {
            write_key: sh.write_key.to_string(),
            message_id: m.message_id.clone().unwrap_or_default(),
            kind: kind.as_str(),
            event: m.event_name().map(str::to_string),
            anonymous_id: m.anonymous_id.clone(),
            user_id: m.user_id.clone(),
            profile_id: None,
            identified: false,
            bot: agent.bot,
            timestamp: m.timestamp.clone().unwrap_or_default(),
            received_at: sh.received_at.to_string(),
            // The stored JSON is about the size of the message's: allocated once, not
            // grown by doubling while it is written.
            payload: String::with_capacity(size + size / 4 + 256),
            fingerprint: fp,
        },
        observation,
        warnings: judged.warnings,
        message: m,
        context,
        context_adds,
    }))
}

/// What the event leaves on its profile's activity, if the source activates anything.
fn kept_activity(
    m: &Message,
    context: &Value,
    kind: tracking_plan::MessageType,
    sh: &Shared<'_>,
    at_ms: i64,
) -> Option<crate::activity::Observed> {
    let consent = context.get("consent");
    crate::activity::observed(
        sh.source,
        &sh.spec,
        &crate::activity::Event {
            message_id: m.message_id.as_deref().unwrap_or_default(),
            kind: kind.as_str(),
            name: m.event_name(),
            at_ms,
            properties: m.properties.as_ref().unwrap_or(&Value::Null),
            consent: consent.unwrap_or(&Value::Null),
            now_ms: sh.req.now_ms,
        },
    )
}

fn edge_json(sh: &Shared<'_>) -> String {
    serde_json::json!({"gpc": sh.req.edge.gpc, "country": sh.req.edge.country}).to_string()
}

/// Quarantines a scrubbed message whose context is `sc`.
fn quarantine_scrubbed(
    sh: &Shared<'_>,
    mut m: Message,
    sc: &Scrubbed,
    reasons: Vec<Reason>,
) -> Prepared {
    m.context = sc.copy();
    quarantine_message(sh, &m, reasons)
}

/// Quarantines a scrubbed message.
pub fn quarantine_message(sh: &Shared<'_>, m: &Message, reasons: Vec<Reason>) -> Prepared {
    let payload = match m.context.as_ref().and_then(|c| c.get("ip")) {
        Some(_) => {
            let mut m = m.clone();
            truncate_context_ip(m.context.as_mut());
            serde_json::to_string(&m)
        }
        None => serde_json::to_string(m),
    }
    .unwrap_or_default();
    let subjects = identity::subjects(m);
    let row = quarantine_row(
        sh,
        m.message_id.clone(),
        m.anonymous_id.clone(),
        m.user_id.clone(),
        &reasons,
        payload,
        subjects,
    );
    Prepared::Quarantine(Box::new(row), reasons)
}

/// Quarantines JSON that is not a valid message, scrubbed first; its row is keyed by what
/// is kept of it, or by `content` when that says more.
fn quarantine_value(
    sh: &Shared<'_>,
    mut v: Value,
    reason: Reason,
    content: Option<&str>,
) -> Prepared {
    pii::scrub_any(&mut v, sh.req.edge.country);
    truncate_context_ip(v.get_mut("context"));
    let id = |k: &str| match v.get(k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (mid, anon, user) = (id("messageId"), id("anonymousId"), id("userId"));
    let subjects: Vec<String> = [anon.clone(), user.clone()].into_iter().flatten().collect();
    let reasons = vec![reason];
    let mut row = quarantine_row(sh, mid, anon, user, &reasons, v.to_string(), subjects);
    if let Some(content) = content {
        row.qkey = short_digest(&[sh.write_key, content, &row.reasons]);
    }
    Prepared::Quarantine(Box::new(row), reasons)
}

/// A quarantined event keeps the visitor's IP as a stored one does: truncated
/// (`enrich::truncate_ip`), or left out when it is not an address. A replay truncates it
/// again, to the same.
fn truncate_context_ip(context: Option<&mut Value>) {
    let Some(Value::Object(ctx)) = context else {
        return;
    };
    let Some(ip) = ctx.get("ip") else {
        return;
    };
    match ip.as_str().and_then(crate::enrich::truncate_ip) {
        Some(t) => ctx.insert("ip".into(), Value::String(t)),
        None => ctx.remove("ip"),
    };
}

fn quarantine_row(
    sh: &Shared<'_>,
    message_id: Option<String>,
    anonymous_id: Option<String>,
    user_id: Option<String>,
    reasons: &[Reason],
    payload: String,
    subjects: Vec<String>,
) -> QuarantinedEvent {
    let reasons_json = serde_json::to_string(reasons).unwrap_or_else(|_| "[]".into());
    QuarantinedEvent {
        write_key: sh.write_key.to_string(),
        qkey: short_digest(&[sh.write_key, &payload, &reasons_json]),
        message_id,
        anonymous_id,
        user_id,
        subjects: serde_json::to_string(&subjects).unwrap_or_else(|_| "[]".into()),
        edge: edge_json(sh),
        reason: reasons
            .first()
            .map_or("unknown", |r| r.kind.as_str())
            .to_string(),
        reasons: reasons_json,
        payload,
        received_at: sh.received_at.to_string(),
    }
}

pub(crate) fn verdict(message_id: Option<String>, status: Status, reasons: Vec<Reason>) -> Verdict {
    Verdict {
        message_id,
        status,
        reasons,
        warnings: vec![],
        profile_id: None,
        qkey: None,
    }
}

/// Runs one request through the pipeline and writes its events.
pub async fn ingest<E: EventStore, D: Deduplicator, I: IdentityService>(
    svc: &Services<'_, E, D, I>,
    sources: &crate::sources::Sources,
    req: &IngestRequest<'_>,
) -> Result<Report, Error> {
    let body = envelope::decode_body(req.body, req.edge.content_encoding)?;
    // Read leniently once, as the client wrote it: PostHog's reader does so after
    // undoing its base64 or gzip, and the converted bodies are serde's own JSON.
    let body = match req.endpoint {
        Endpoint::Snowplow => Cow::Owned(crate::snowplow::to_segment(&envelope::lenient(body))?),
        Endpoint::PostHog => Cow::Owned(crate::posthog::to_segment(&body)?),
        Endpoint::Batch | Endpoint::Single(_) => envelope::lenient(body),
    };
    let env = envelope::parse(req, &body, sources)?;
    let messages = env.batch.batch.as_deref().unwrap_or_default();
    let received_at = format_rfc3339(req.now_ms);
    let shared = Shared {
        forced_type: match req.endpoint {
            Endpoint::Single(t) => Some(t),
            Endpoint::Batch | Endpoint::Snowplow | Endpoint::PostHog => None,
        },
        batch: &env.batch,
        write_key: &env.write_key,
        source: env.source,
        req,
        received_at: &received_at,
        spec: crate::activity::Spec::of(env.source),
        unreadable: std::cell::Cell::new(false),
    };
    let mut run = store::Run::new(messages.len());
    let mut memo = Memo::new(req.edge.country);
    let mut contexts = Contexts::default();
    for (i, text) in messages.iter().enumerate() {
        let p = prepare(
            text,
            &shared,
            &mut memo,
            &mut contexts,
            &mut run.consent_log,
        );
        run.sort(i, p);
    }
    if shared.unreadable.get() && !env.batch.events_read {
        // The events were split without being read: serde_json says whether the body is
        // JSON (a 400, as before), or holds JSON it reads but a value cannot (nesting
        // too deep: kept, as before).
        envelope::check_strict(&body)?;
    }
    // Admitted once known to be JSON, as before the events were split unread.
    svc.limiter
        .admit(
            &env.write_key,
            env.source.rate_limit,
            messages.len(),
            req.now_ms,
        )
        .map_err(|wait| Error::RateLimited {
            rate: env.source.rate_limit,
            retry_after: wait,
        })?;
    // Idempotent writes first: a crash after them loses nothing, a retry repeats them.
    run.write_side_records(svc.store).await?;
    let owner = req.request_id;
    let fresh = dedup::claim(svc.dedup, &mut run, &shared, owner).await?;
    run.write_side_records(svc.store).await?; // conflicts found by dedup
    let outcomes = store::store(svc, &shared, fresh, &mut run, owner, req.now_ms).await?;
    let browser = req.edge.origin.is_some();
    let (identified, bots) = (run.identified, run.bots);
    let report = run.report(outcomes, browser, req.edge.cookie_id);
    let counts = Counts {
        write_key: env.write_key.clone(),
        day: received_at.get(..10).unwrap_or_default().to_string(),
        received: messages.len() as u32,
        accepted: report.accepted as u32,
        duplicates: report.duplicates as u32,
        quarantined: report.quarantined as u32,
        refused: report.refused as u32,
        identified,
        bots,
    };
    svc.store.add_counts(&counts).await?;
    Ok(report)
}

/// `reset()` from a browser: the collector's cookie id no longer links events (a shared
/// browser's next visitor starts apart); the adapter clears the cookie.
pub async fn reset<I: IdentityService>(
    identity: &I,
    sources: &crate::sources::Sources,
    req: &IngestRequest<'_>,
) -> Result<(), Error> {
    let key_in_body = serde_json::from_slice::<Value>(req.body)
        .ok()
        .and_then(|v| v.get("writeKey")?.as_str().map(str::to_string));
    let key = envelope::write_key(
        req.authorization,
        &[
            req.write_key_header,
            key_in_body.as_deref(),
            req.url_write_key,
        ],
    )?;
    let source = sources.get(&key).ok_or(Error::UnknownWriteKey)?;
    if !source.accepts_origin(req.edge.origin, req.edge.own_origin) {
        return Err(Error::OriginNotAllowed);
    }
    if let Some(c) = req.edge.cookie_id.filter(|c| valid_cookie_id(c)) {
        let id = crate::identity::Ident::new(crate::identity::IdKind::Anonymous, c);
        identity.retire(&key, &id, req.now_ms).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> Message {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_fingerprint_ignores_what_a_retry_may_change_and_nothing_else() {
        let a = r#"{"type":"track","messageId":"m1","anonymousId":"a","event":"E","properties":{"x":1},"sentAt":"2026-01-01T00:00:00Z"}"#;
        let retry = r#"{"type":"track","messageId":"m1","anonymousId":"a","event":"E","properties":{"x":1},"sentAt":"2026-01-01T00:00:09Z","_metadata":{"n":2}}"#;
        let other = r#"{"type":"track","messageId":"m1","anonymousId":"a","event":"E","properties":{"x":2}}"#;
        let fp = fingerprint(&mut message(a));
        assert_eq!(fp.len(), 33);
        assert!(fp.starts_with('x') && fp[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fp, fingerprint(&mut message(retry)));
        assert_ne!(fp, fingerprint(&mut message(other)));
        // The fingerprints stored by earlier versions of the collector stay valid: the
        // same message, the same bytes hashed (the hand-written serialization and the
        // context written in from its own JSON keep the derive's output).
        assert_eq!(fp, "x79529c8fd9cb65474a92fdd15952bdb7");
        let with_context = r#"{"type":"page","messageId":"m2","anonymousId":"a","context":{"page":{"url":"https://s.example/p"},"ip":"1.2.3.0"},"integrations":{"All":true},"zz":[1]}"#;
        assert_eq!(
            fingerprint(&mut message(with_context)),
            "xe5ced7cb3fd0fa2b7ec118c69089a329"
        );
        // The message is left as it was.
        let mut m = message(retry);
        fingerprint(&mut m);
        assert_eq!(m, message(retry));
    }

    #[test]
    fn a_context_with_keys_added_is_written_as_the_object_with_them_inserted() {
        let base =
            serde_json::json!({"b": 1, "consent": {"x": true}, "page": {"url": "u"}, "zz": null});
        let adds_list = [
            vec![],
            vec![("profileId", "p_1")],
            vec![("a", "first"), ("trackingPlan", "t")],
            vec![("b", "replaced"), ("zzz", "last"), ("profileId", "p")],
            vec![("", "empty"), ("Z", "upper sorts first")],
        ];
        for adds in adds_list {
            let adds: Map<String, Value> = adds
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect();
            let mut inserted = base.clone();
            for (k, v) in &adds {
                inserted[k] = v.clone();
            }
            let context = SharedContext::new(base.clone());
            for shared in [false, true, false] {
                let view = ContextView {
                    base: &context,
                    adds: &adds,
                    shared,
                };
                assert_eq!(
                    serde_json::to_string(&view).unwrap(),
                    inserted.to_string(),
                    "{adds:?}"
                );
            }
        }
        let not_an_object = SharedContext::new(Value::from("x"));
        let adds = Map::new();
        let view = ContextView {
            base: &not_an_object,
            adds: &adds,
            shared: true,
        };
        assert_eq!(serde_json::to_string(&view).unwrap(), "\"x\"");
    }

    #[test]
    fn same_content_by_fingerprints_of_either_kind() {
        let x1 = format!("x{}", "1".repeat(32));
        let x2 = format!("x{}", "2".repeat(32));
        let sha = "a".repeat(32);
        assert!(same_content(&x1, &x1));
        assert!(!same_content(&x1, &x2));
        assert!(same_content(&sha, &sha));
        assert!(!same_content(&sha, &"b".repeat(32)));
        // Not comparable: a row stored without one, or with a SHA-256 one.
        assert!(same_content("", &x1));
        assert!(same_content(&sha, &x1));
        assert!(same_content(&x1, &sha));
    }
}
