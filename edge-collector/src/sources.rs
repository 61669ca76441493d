//! Sources: decides which site a write key belongs to and what that site allows: the
//! browser origins it may send from, its tracking plan, its consent policy, its identity
//! limits, how long D1 keeps its events (the R2 lake keeps them all) and how fast it
//! may send.
//!
//! Configured as JSON in the `SOURCES` variable (wrangler `[vars]` or a secret), keyed by
//! write key:
//!
//! ```json
//! {"<writeKey>": {
//!   "name": "shop",
//!   "origins": ["https://shop.example"],
//!   "plan": "/sl/tracking-plan.json",
//!   "consent": "opt-in",
//!   "identityLimits": {"userId": 1, "email": 5, "phone": 5, "anonymousId": 5},
//!   "retentionDays": 30,
//!   "rateLimit": 1000
//! }}
//! ```
//!
//! `plan` is either the plan itself (a JSON object) or the path of a plan file among the
//! worker's static assets; the adapter loads it. Every field but `name` is optional.

use crate::identity::Limits;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::rc::Rc;
use tracking_plan::Plan;

/// How a source treats an event that carries no consent snapshot (`opt-in`, the
/// default, or `opt-out`): the rule the SDK applies too.
pub use tracking_plan::consent::Policy as ConsentPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Human-readable site name.
    pub name: String,
    /// Origins allowed to send from a browser (CORS). Same-origin requests and servers
    /// (no `Origin` header) need no entry.
    #[serde(default)]
    pub origins: Vec<String>,
    /// The plan: an inline object or the path of a plan file among the static assets.
    #[serde(default)]
    pub plan: Option<Value>,
    #[serde(default)]
    pub consent: ConsentPolicy,
    #[serde(default)]
    pub identity_limits: Limits,
    /// Days D1's hot window keeps this source's events and quarantine rows (default
    /// 30); the lake in R2 keeps every event.
    #[serde(default = "retention_default")]
    pub retention_days: u32,
    /// Events per second one collector instance accepts for this key before answering
    /// 429 (0: no limit).
    #[serde(default)]
    pub rate_limit: u32,
    /// Data-quality alerts: the quarantine-rate threshold and a webhook for new alerts.
    #[serde(default)]
    pub alerts: crate::alerts::AlertConfig,
    /// Attribution: the conversion events and their revenue field, channel rules, the
    /// report currency.
    #[serde(default)]
    pub attribution: crate::attribution::AttributionConfig,
    /// Segments (`crate::segments`): a list, or the path of a JSON file among the static
    /// assets holding one.
    #[serde(default)]
    pub segments: Option<Value>,
    /// Where events and segment changes are sent (`crate::destinations`).
    #[serde(default)]
    pub destinations: Vec<crate::destinations::Destination>,
    /// What `GET /v1/segments` may show the visitor's own page.
    #[serde(default)]
    pub personalization: Personalization,
    /// The compiled plan, filled in by [`Sources::resolve_plans`].
    #[serde(skip)]
    pub compiled: Option<Rc<Plan>>,
    /// The parsed segments, filled in by [`Sources::resolve_plans`].
    #[serde(skip)]
    pub compiled_segments: Option<Rc<Vec<crate::segments::Segment>>>,
}

/// On-site personalization: the traits a page may read back (coarse values only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Personalization {
    #[serde(default)]
    pub traits: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Sources {
    by_key: HashMap<String, Source>,
}

impl Sources {
    /// Parses the `SOURCES` JSON. A configuration error is reported, never ignored: a
    /// collector that silently accepted no key would refuse every event. Inline plans
    /// are compiled here; plan paths wait for [`Sources::resolve_plans`].
    pub fn from_json(json: &str) -> Result<Self, String> {
        let by_key: HashMap<String, Source> =
            serde_json::from_str(json).map_err(|e| format!("SOURCES is not valid: {e}"))?;
        if by_key.keys().any(|k| k.is_empty()) {
            return Err("SOURCES has an empty write key".into());
        }
        for (key, source) in &by_key {
            let mut ids = std::collections::HashSet::new();
            for d in &source.destinations {
                d.validate()
                    .map_err(|e| format!("SOURCES[{key}].destinations: {e}"))?;
                if !ids.insert(d.id.as_str()) {
                    return Err(format!(
                        "SOURCES[{key}].destinations: {} appears twice",
                        d.id
                    ));
                }
            }
        }
        let mut sources = Sources { by_key };
        sources.resolve_plans(|_| None)?;
        Ok(sources)
    }

    /// The plan and segment files the sources name by path, which the caller must load.
    pub fn plan_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .by_key
            .values()
            .flat_map(|s| [&s.plan, &s.segments])
            .filter_map(|v| v.as_ref()?.as_str().map(str::to_string))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Compiles every plan; `load` returns the text of a plan file named by path. A plan
    /// that is missing or does not compile is an error naming the source and the problem.
    pub fn resolve_plans(&mut self, load: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        for (key, source) in self.by_key.iter_mut() {
            resolve_segments(key, source, &load)?;
            let compiled = match &source.plan {
                None => None,
                Some(Value::String(path)) => match load(path) {
                    Some(text) => Some(Plan::from_json(&text)),
                    None => continue, // loaded later, or reported by `check_complete`
                },
                Some(v @ Value::Object(_)) => Some(Plan::from_value(v)),
                Some(_) => {
                    return Err(format!(
                        "SOURCES[{key}].plan must be a plan object or a path"
                    ))
                }
            };
            if let Some(result) = compiled {
                let plan = result.map_err(|errs| {
                    let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                    format!("SOURCES[{key}].plan: {}", list.join("; "))
                })?;
                source.compiled = Some(Rc::new(plan));
            }
        }
        Ok(())
    }

    /// Fails when a source names a plan or segments file that was never loaded.
    pub fn check_complete(&self) -> Result<(), String> {
        for (key, s) in &self.by_key {
            if let (Some(Value::String(path)), None) = (&s.plan, &s.compiled) {
                return Err(format!("SOURCES[{key}].plan: cannot load {path}"));
            }
            if let (Some(Value::String(path)), None) = (&s.segments, &s.compiled_segments) {
                return Err(format!("SOURCES[{key}].segments: cannot load {path}"));
            }
        }
        Ok(())
    }

    /// Every configured write key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.by_key.keys().cloned().collect();
        k.sort();
        k
    }

    pub fn get(&self, write_key: &str) -> Option<&Source> {
        self.by_key.get(write_key)
    }

    /// Every source with its write key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Source)> {
        let mut all: Vec<_> = self.by_key.iter().map(|(k, s)| (k.as_str(), s)).collect();
        all.sort_unstable_by_key(|(k, _)| *k);
        all.into_iter()
    }

    /// Whether a browser origin may call the API at all (for a CORS preflight, which
    /// carries no write key): any configured source's origin is enough.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.by_key
            .values()
            .any(|s| s.origins.iter().any(|o| o == origin))
    }
}

impl Sources {
    /// The sources with the segments declared through the admin API (`PUT
    /// /admin/v1/segments`) in place of those `SOURCES` gives; `declared` are `(write
    /// key, JSON list)`. A declaration for a key no longer configured, or no longer
    /// valid (the source's retention shrank), is left out and reported.
    pub fn with_declared_segments(&self, declared: &[(String, String)]) -> (Sources, Vec<String>) {
        let mut out = self.clone();
        let mut problems = Vec::new();
        for (key, text) in declared {
            let Some(source) = out.by_key.get_mut(key) else {
                problems.push(format!(
                    "segments declared for {key}, which SOURCES no longer has"
                ));
                continue;
            };
            match parse_segments(source, text) {
                Ok(list) => source.compiled_segments = Some(Rc::new(list)),
                Err(e) => problems.push(format!("{key}: {e}")),
            }
        }
        (out, problems)
    }
}

/// A segment list as the admin API takes it, checked against the source's retention.
pub fn parse_segments(
    source: &Source,
    text: &str,
) -> Result<Vec<crate::segments::Segment>, String> {
    let list: Vec<crate::segments::Segment> =
        serde_json::from_str(text).map_err(|e| format!("segments: {e}"))?;
    crate::segments::validate(&list, source.retention_days)
        .map_err(|e| format!("segments: {e}"))?;
    Ok(list)
}

impl Source {
    /// The source's segments (none configured: empty).
    pub fn segments(&self) -> &[crate::segments::Segment] {
        self.compiled_segments
            .as_deref()
            .map_or(&[], |v| v.as_slice())
    }

    pub fn destination(&self, id: &str) -> Option<&crate::destinations::Destination> {
        self.destinations.iter().find(|d| d.id == id)
    }

    /// Whether a request from `origin` may send events with this source's key: no origin
    /// (a server), the collector's own origin (first-party), or a configured one.
    pub fn accepts_origin(&self, origin: Option<&str>, own_origin: &str) -> bool {
        match origin {
            None => true,
            Some(o) => o == own_origin || self.origins.iter().any(|x| x == o),
        }
    }
}

/// Parses a source's segments (inline, or from a loaded file) and checks them against
/// its retention; a file not yet loaded waits.
fn resolve_segments(
    key: &str,
    source: &mut Source,
    load: &impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let list: Vec<crate::segments::Segment> = match &source.segments {
        None => return Ok(()),
        Some(Value::String(path)) => match load(path) {
            Some(text) => serde_json::from_str(&text),
            None => return Ok(()),
        },
        Some(v @ Value::Array(_)) => serde_json::from_value(v.clone()),
        Some(_) => return Err(format!("SOURCES[{key}].segments must be a list or a path")),
    }
    .map_err(|e| format!("SOURCES[{key}].segments: {e}"))?;
    crate::segments::validate(&list, source.retention_days)
        .map_err(|e| format!("SOURCES[{key}].segments: {e}"))?;
    source.compiled_segments = Some(Rc::new(list));
    Ok(())
}

fn retention_default() -> u32 {
    crate::lake::DEFAULT_RETENTION_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let s = Sources::from_json(r#"{"k1":{"name":"shop","origins":["https://a.example"]}}"#)
            .unwrap();
        let k1 = s.get("k1").unwrap();
        assert_eq!(k1.origins, vec!["https://a.example"]);
        assert_eq!(k1.consent, ConsentPolicy::OptIn);
        assert_eq!(k1.retention_days, crate::lake::DEFAULT_RETENTION_DAYS);
        assert_eq!(k1.identity_limits, Limits::default());
        assert!(s.get("k2").is_none());
        assert!(k1.accepts_origin(None, "https://c.example"));
        assert!(k1.accepts_origin(Some("https://c.example"), "https://c.example"));
        assert!(k1.accepts_origin(Some("https://a.example"), "https://c.example"));
        assert!(!k1.accepts_origin(Some("https://evil.example"), "https://c.example"));
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Sources::from_json("[]").is_err());
        assert!(Sources::from_json(r#"{"":{"name":"x"}}"#).is_err());
        assert!(Sources::from_json(r#"{"k":{"name":"x","consent":"maybe"}}"#).is_err());
        assert!(Sources::from_json(r#"{"k":{"name":"x","typo":1}}"#).is_err());
        let bad_plan = Sources::from_json(r#"{"k":{"name":"x","plan":{"version":1,"bogus":2}}}"#);
        assert!(bad_plan.unwrap_err().contains("$.bogus"));
    }

    #[test]
    fn plans_inline_and_by_path() {
        let mut s = Sources::from_json(
            r#"{"a":{"name":"a","plan":{"version":"7"}},"b":{"name":"b","plan":"/p.json"}}"#,
        )
        .unwrap();
        assert_eq!(s.get("a").unwrap().compiled.as_ref().unwrap().version, "7");
        assert_eq!(s.plan_paths(), vec!["/p.json"]);
        assert!(s.check_complete().is_err());
        s.resolve_plans(|p| (p == "/p.json").then(|| r#"{"version":"9"}"#.into()))
            .unwrap();
        s.check_complete().unwrap();
        assert_eq!(s.get("b").unwrap().compiled.as_ref().unwrap().version, "9");
    }
}
