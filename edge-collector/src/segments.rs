//! Segments: decides which profiles belong to which of a source's segments, their RFM
//! scores, and what entering or leaving a segment records.
//!
//! A segment is declared in JSON in the source's `segments` list:
//!
//! ```json
//! {"id": "category-fan", "name": "3+ orders in one category in 90 days",
//!  "rule": {"count": {"event": "Order Completed", "days": 90,
//!                     "groupBy": "products[].category", "atLeast": 3}}}
//! ```
//!
//! A rule is one of:
//! - `{"trait": {"path", "op", "value"}}`: a condition on the profile's traits;
//! - `{"count": Aggregate}` / `{"sum": Aggregate}`: how many matching events (or the sum
//!   of a property, `of`) in a window of `days` or `hours` (none: everything the hot
//!   window holds), optionally `where` conditions on the properties, `groupBy` (the
//!   largest group counts, so "3 orders in one category"), `notFollowedBy` (only
//!   occurrences with no later event of that name: an abandoned cart) and
//!   `olderThanMinutes`; compared with `atLeast` / `atMost` (default: at least 1);
//! - `{"rfm": {"r", "f", "m"}}`: bounds on the profile's RFM scores (1 to 5);
//! - `{"all": [..]}`, `{"any": [..]}`, `{"not": rule}`.
//!
//! RFM: recency (days since the last conversion), frequency (conversions) and monetary
//! value (their revenue) from the source's attribution conversions, scored in quintiles
//! of the source's converting profiles: nearest-rank cut points at 20, 40, 60 and 80 %,
//! a score of 1 plus the cut points a value exceeds (recency reversed: recent is 5).
//!
//! Membership is computed from a profile's facts (traits, and the events its identity
//! graph document keeps: `crate::activity`) as plain data: [`members_of`] for one
//! profile, [`changes`] for what moved since the last time.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A segment as configured.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Segment {
    /// Stable id: `[a-z0-9_-]`, at most 64 characters.
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Trait(Cond),
    Count(Aggregate),
    Sum(Aggregate),
    Rfm(RfmBounds),
}

/// A condition on a value found at `path` (`a.b`, `items[].category`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cond {
    pub path: String,
    pub op: Op,
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
    In,
    Contains,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Aggregate {
    pub event: String,
    #[serde(default, rename = "where")]
    pub filter: Vec<Cond>,
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub hours: Option<u32>,
    /// The property summed (`sum` only).
    #[serde(default)]
    pub of: Option<String>,
    #[serde(default)]
    pub group_by: Option<String>,
    #[serde(default)]
    pub not_followed_by: Option<String>,
    #[serde(default)]
    pub older_than_minutes: Option<u32>,
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub at_most: Option<f64>,
}

/// Inclusive bounds on RFM scores; an absent bound is no constraint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RfmBounds {
    #[serde(default)]
    pub r: Option<Bounds>,
    #[serde(default)]
    pub f: Option<Bounds>,
    #[serde(default)]
    pub m: Option<Bounds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bounds {
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub at_most: Option<f64>,
}

impl Bounds {
    fn holds(&self, x: f64) -> bool {
        self.at_least.is_none_or(|a| x >= a) && self.at_most.is_none_or(|b| x <= b)
    }
}

/// One stored event of a profile, as segments see it (kept on the profile by
/// `crate::activity`, under short names: it is in every profile document).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Fact {
    /// A digest of the event's messageId, or of the order it names
    /// (`crate::activity::fact_key`).
    #[serde(default, rename = "i")]
    pub id: String,
    #[serde(rename = "e")]
    pub event: String,
    #[serde(rename = "t")]
    pub at_ms: i64,
    #[serde(default, rename = "p", skip_serializing_if = "Value::is_null")]
    pub properties: Value,
}

/// A profile's RFM raw values and scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rfm {
    pub recency_days: f64,
    pub frequency: f64,
    pub monetary: f64,
    pub r: u8,
    pub f: u8,
    pub m: u8,
}

/// The source's quintile cut points, per measure (four each, ascending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Cuts {
    pub recency: Vec<f64>,
    pub frequency: Vec<f64>,
    pub monetary: Vec<f64>,
}

/// Everything membership is decided on, for one profile.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub traits: Map<String, Value>,
    /// Oldest first.
    pub events: Vec<Fact>,
    pub rfm: Option<Rfm>,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Segments one source declares at most (each is scored for every profile an event
/// touches).
pub const MAX_SEGMENTS: usize = 100;
/// Rules (every node: all/any/not, trait, count, sum, rfm) one segment has at most, and
/// `where` conditions one aggregate has at most.
pub const MAX_RULES: usize = 32;
pub const MAX_CONDITIONS: usize = 16;

/// Checks a source's segment list: ids well formed and unique, windows within the hot
/// window (`retention_days`) the facts come from, and the sizes within the caps above.
pub fn validate(segments: &[Segment], retention_days: u32) -> Result<(), String> {
    if segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "{} segments: at most {MAX_SEGMENTS} per source",
            segments.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for s in segments {
        if rule_count(&s.rule) > MAX_RULES {
            return Err(format!("segment {}: more than {MAX_RULES} rules", s.id));
        }
        let ok = !s.id.is_empty()
            && s.id.len() <= 64
            && s.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("segment id {:?} must be [a-z0-9_-], 1 to 64", s.id));
        }
        if !seen.insert(s.id.as_str()) {
            return Err(format!("segment id {} appears twice", s.id));
        }
        check_rule(&s.rule, retention_days).map_err(|e| format!("segment {}: {e}", s.id))?;
    }
    Ok(())
}

fn rule_count(r: &Rule) -> usize {
    match r {
        Rule::All(rs) | Rule::Any(rs) => 1 + rs.iter().map(rule_count).sum::<usize>(),
        Rule::Not(r) => 1 + rule_count(r),
        _ => 1,
    }
}

fn check_rule(r: &Rule, retention_days: u32) -> Result<(), String> {
    match r {
        Rule::All(rs) | Rule::Any(rs) => rs.iter().try_for_each(|r| check_rule(r, retention_days)),
        Rule::Not(r) => check_rule(r, retention_days),
        Rule::Count(a) | Rule::Sum(a) => {
            let days = a.days.unwrap_or(0) as u64 + (a.hours.unwrap_or(0) as u64).div_ceil(24);
            if days > retention_days as u64 {
                return Err(format!(
                    "a window of {days} days is longer than the {retention_days} days of events kept"
                ));
            }
            if a.filter.len() > MAX_CONDITIONS {
                return Err(format!("more than {MAX_CONDITIONS} `where` conditions"));
            }
            if matches!(r, Rule::Sum(_)) && a.of.is_none() {
                return Err("sum needs `of`, the property summed".into());
            }
            Ok(())
        }
        Rule::Trait(_) | Rule::Rfm(_) => Ok(()),
    }
}

/// The event names a segment list reads (an event of another name cannot move
/// membership, except through traits or RFM).
pub fn events_read(segments: &[Segment]) -> Vec<&str> {
    fn walk<'a>(r: &'a Rule, out: &mut Vec<&'a str>) {
        match r {
            Rule::All(rs) | Rule::Any(rs) => rs.iter().for_each(|r| walk(r, out)),
            Rule::Not(r) => walk(r, out),
            Rule::Count(a) | Rule::Sum(a) => {
                out.push(&a.event);
                out.extend(a.not_followed_by.as_deref());
            }
            Rule::Trait(_) | Rule::Rfm(_) => {}
        }
    }
    let mut out = Vec::new();
    segments.iter().for_each(|s| walk(&s.rule, &mut out));
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether any segment reads traits (so identify calls move membership).
pub fn reads_traits(segments: &[Segment]) -> bool {
    fn walk(r: &Rule) -> bool {
        match r {
            Rule::All(rs) | Rule::Any(rs) => rs.iter().any(walk),
            Rule::Not(r) => walk(r),
            Rule::Trait(_) => true,
            _ => false,
        }
    }
    segments.iter().any(|s| walk(&s.rule))
}

/// Whether any segment reads RFM scores.
pub fn reads_rfm(segments: &[Segment]) -> bool {
    fn walk(r: &Rule) -> bool {
        match r {
            Rule::All(rs) | Rule::Any(rs) => rs.iter().any(walk),
            Rule::Not(r) => walk(r),
            Rule::Rfm(_) => true,
            _ => false,
        }
    }
    segments.iter().any(|s| walk(&s.rule))
}

/// The ids of the segments this profile belongs to now, in configuration order.
pub fn members_of<'s>(segments: &'s [Segment], facts: &Facts, now_ms: i64) -> Vec<&'s str> {
    segments
        .iter()
        .filter(|s| holds(&s.rule, facts, now_ms))
        .map(|s| s.id.as_str())
        .collect()
}

fn holds(r: &Rule, f: &Facts, now_ms: i64) -> bool {
    match r {
        Rule::All(rs) => rs.iter().all(|r| holds(r, f, now_ms)),
        Rule::Any(rs) => rs.iter().any(|r| holds(r, f, now_ms)),
        Rule::Not(r) => !holds(r, f, now_ms),
        Rule::Trait(c) => {
            let traits = Value::Object(f.traits.clone());
            cond_holds(c, &traits)
        }
        Rule::Count(a) => compare(a, aggregate(a, f, now_ms, false)),
        Rule::Sum(a) => compare(a, aggregate(a, f, now_ms, true)),
        Rule::Rfm(b) => f.rfm.is_some_and(|s| {
            let ok =
                |bound: &Option<Bounds>, score: u8| bound.is_none_or(|b| b.holds(score as f64));
            ok(&b.r, s.r) && ok(&b.f, s.f) && ok(&b.m, s.m)
        }),
    }
}

fn compare(a: &Aggregate, x: f64) -> bool {
    let at_least = match (a.at_least, a.at_most) {
        (None, None) => Some(1.0),
        (l, _) => l,
    };
    at_least.is_none_or(|l| x >= l) && a.at_most.is_none_or(|m| x <= m)
}

/// The count (or sum) of an aggregate over the profile's matching events; with
/// `groupBy`, the largest group's.
fn aggregate(a: &Aggregate, f: &Facts, now_ms: i64, sum: bool) -> f64 {
    let window = a.days.map(|d| d as i64 * DAY_MS).unwrap_or(0)
        + a.hours.map(|h| h as i64 * HOUR_MS).unwrap_or(0);
    let since = if window > 0 {
        now_ms - window
    } else {
        i64::MIN
    };
    let min_age = a.older_than_minutes.map_or(0, |m| m as i64 * 60_000);
    let mut groups: Vec<(String, f64)> = Vec::new();
    let mut total = 0.0;
    for (i, e) in f.events.iter().enumerate() {
        let counts = e.event == a.event
            && e.at_ms >= since
            && e.at_ms <= now_ms - min_age
            && a.filter.iter().all(|c| cond_holds(c, &e.properties))
            && a.not_followed_by.as_deref().is_none_or(|next| {
                !f.events[i + 1..]
                    .iter()
                    .chain(&f.events[..i])
                    .any(|x| x.event == next && x.at_ms >= e.at_ms)
            });
        if !counts {
            continue;
        }
        let amount = if sum {
            a.of.as_deref()
                .and_then(|p| values_at(&e.properties, p).first().and_then(|v| number(v)))
                .unwrap_or(0.0)
        } else {
            1.0
        };
        match &a.group_by {
            None => total += amount,
            Some(path) => {
                let mut keys: Vec<String> = values_at(&e.properties, path)
                    .into_iter()
                    .filter_map(group_key)
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                for k in keys {
                    match groups.iter_mut().find(|(g, _)| *g == k) {
                        Some((_, n)) => *n += amount,
                        None => groups.push((k, amount)),
                    }
                }
            }
        }
    }
    match &a.group_by {
        None => total,
        Some(_) => groups.iter().map(|(_, n)| *n).fold(0.0, f64::max),
    }
}

fn group_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.trim().to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok().filter(|x: &f64| x.is_finite()),
        _ => None,
    }
}

/// The values at a path: `a.b` walks objects, `a[].b` every element of an array.
pub fn values_at<'v>(root: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut cur = vec![root];
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (key, each) = match seg.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (seg, false),
        };
        let mut next = Vec::new();
        for v in cur {
            let Some(child) = v.as_object().and_then(|o| o.get(key)) else {
                continue;
            };
            match (each, child) {
                (true, Value::Array(items)) => next.extend(items.iter()),
                (true, _) => {}
                (false, c) => next.push(c),
            }
        }
        cur = next;
    }
    cur
}

fn cond_holds(c: &Cond, root: &Value) -> bool {
    let found = values_at(root, &c.path);
    match c.op {
        Op::Exists => found.iter().any(|v| !v.is_null()),
        // `ne`: no value equals (an absent value is not equal).
        Op::Ne => !found.iter().any(|v| equal(v, &c.value)),
        _ => found.iter().any(|v| one_holds(c.op, v, &c.value)),
    }
}

fn one_holds(op: Op, v: &Value, want: &Value) -> bool {
    match op {
        Op::Eq => equal(v, want),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match (number(v), number(want)) {
            (Some(x), Some(y)) => match op {
                Op::Gt => x > y,
                Op::Gte => x >= y,
                Op::Lt => x < y,
                _ => x <= y,
            },
            _ => false,
        },
        Op::In => want
            .as_array()
            .is_some_and(|a| a.iter().any(|w| equal(v, w))),
        Op::Contains => match (v, want) {
            (Value::String(s), Value::String(w)) => s.to_lowercase().contains(&w.to_lowercase()),
            (Value::Array(a), w) => a.iter().any(|x| equal(x, w)),
            _ => false,
        },
        Op::Exists | Op::Ne => false,
    }
}

/// Equality as a marketer means it: numbers by value, strings without case.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) if !a.is_string() || !b.is_string() => x == y,
            _ => a == b,
        },
    }
}

/// The nearest-rank cut points at 20, 40, 60 and 80 % of some values.
pub fn quintile_cuts(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    (1..=4).map(|k| v[(k * n).div_ceil(5) - 1]).collect()
}

/// 1 plus the number of cut points `x` exceeds (1 to 5).
pub fn score(x: f64, cuts: &[f64]) -> u8 {
    1 + cuts.iter().filter(|c| x > **c).count() as u8
}

/// One converting profile's raw RFM values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawRfm {
    pub last_ms: i64,
    pub frequency: f64,
    pub monetary: f64,
}

impl RawRfm {
    pub fn recency_days(&self, now_ms: i64) -> f64 {
        ((now_ms - self.last_ms).max(0) / DAY_MS) as f64
    }
}

/// The source's cut points from all its converting profiles.
pub fn cuts(all: &[RawRfm], now_ms: i64) -> Cuts {
    let col = |f: &dyn Fn(&RawRfm) -> f64| quintile_cuts(&all.iter().map(f).collect::<Vec<_>>());
    Cuts {
        recency: col(&|r| r.recency_days(now_ms)),
        frequency: col(&|r| r.frequency),
        monetary: col(&|r| r.monetary),
    }
}

/// A profile's scores against the source's cut points; none without a conversion or
/// before any cut points exist.
pub fn rfm(raw: Option<RawRfm>, cuts: &Cuts, now_ms: i64) -> Option<Rfm> {
    let raw = raw?;
    if cuts.frequency.is_empty() {
        return None;
    }
    let recency_days = raw.recency_days(now_ms);
    Some(Rfm {
        recency_days,
        frequency: raw.frequency,
        monetary: raw.monetary,
        r: 6 - score(recency_days, &cuts.recency),
        f: score(raw.frequency, &cuts.frequency),
        m: score(raw.monetary, &cuts.monetary),
    })
}

/// A profile's conversions summed into raw RFM values (`(at_ms, revenue)` pairs).
pub fn raw_rfm(conversions: impl IntoIterator<Item = (i64, f64)>) -> Option<RawRfm> {
    let mut out: Option<RawRfm> = None;
    for (at, revenue) in conversions {
        let r = out.get_or_insert(RawRfm {
            last_ms: at,
            frequency: 0.0,
            monetary: 0.0,
        });
        r.last_ms = r.last_ms.max(at);
        r.frequency += 1.0;
        r.monetary += if revenue.is_finite() { revenue } else { 0.0 };
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Enter,
    Exit,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Enter => "enter",
            ChangeKind::Exit => "exit",
        }
    }
    /// The name of the event a change is recorded as.
    pub fn event_name(self) -> &'static str {
        match self {
            ChangeKind::Enter => "Segment Entered",
            ChangeKind::Exit => "Segment Exited",
        }
    }
}

/// One profile entering or leaving one segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub message_id: String,
    pub segment: String,
    pub profile_id: String,
    pub kind: ChangeKind,
    pub at_ms: i64,
}

impl Change {
    /// The change as a Segment-spec track message, which destinations receive like any
    /// other event.
    pub fn message(&self, segment_name: &str) -> Value {
        serde_json::json!({
            "type": "track",
            "messageId": self.message_id,
            "event": self.kind.event_name(),
            "timestamp": tracking_plan::time::format_rfc3339(self.at_ms),
            "properties": {"segmentId": self.segment, "segmentName": segment_name},
            "context": {"profileId": self.profile_id},
        })
    }
}

/// What moved between the stored membership (`before`) and the computed one (`now`),
/// for one profile. A change's id is derived from the profile, segment, kind and time,
/// so the same change computed twice is one record.
pub fn changes(
    write_key: &str,
    profile_id: &str,
    before: &[&str],
    now: &[&str],
    at_ms: i64,
) -> Vec<Change> {
    let make = |segment: &str, kind: ChangeKind| Change {
        message_id: format!(
            "seg_{}",
            crate::pipeline::short_digest(&[
                write_key,
                profile_id,
                segment,
                kind.as_str(),
                &at_ms.to_string()
            ])
        ),
        segment: segment.to_string(),
        profile_id: profile_id.to_string(),
        kind,
        at_ms,
    };
    let entered = now
        .iter()
        .filter(|s| !before.contains(s))
        .map(|s| make(s, ChangeKind::Enter));
    let left = before
        .iter()
        .filter(|s| !now.contains(s))
        .map(|s| make(s, ChangeKind::Exit));
    entered.chain(left).collect()
}

/// The coarse view of a profile's standing that a page may show: segment ids only, and
/// traits only where the source marks them shareable (strings cut to 64 characters,
/// numbers rounded, nothing else).
pub fn shareable_traits(traits: &Map<String, Value>, shareable: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in shareable {
        let coarse = match traits.get(k) {
            Some(Value::String(s)) if tracking_plan::identifiers::detect_pii(s).is_none() => {
                Value::String(s.chars().take(64).collect())
            }
            Some(Value::Bool(b)) => Value::Bool(*b),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(|x| serde_json::json!(x.round() as i64))
                .unwrap_or(Value::Null),
            _ => continue,
        };
        if !coarse.is_null() {
            out.insert(k.clone(), coarse);
        }
    }
    out
}
