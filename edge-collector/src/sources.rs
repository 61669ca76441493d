//! Sources: decides which site a write key belongs to and what that site allows.
//!
//! Configured as JSON in the `SOURCES` variable (wrangler `[vars]` or a secret), keyed by
//! write key: `{"<writeKey>": {"name": "example", "origins": ["https://shop.example"]}}`.

use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Source {
    /// Human-readable site name.
    pub name: String,
    /// Origins allowed to send from a browser (CORS). Empty: same-origin and servers only.
    #[serde(default)]
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Sources {
    by_key: HashMap<String, Source>,
}

impl Sources {
    /// Parses the `SOURCES` JSON. A configuration error is reported, never ignored: a
    /// collector that silently accepted no key would refuse every event.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let by_key: HashMap<String, Source> =
            serde_json::from_str(json).map_err(|e| format!("SOURCES is not valid: {e}"))?;
        if by_key.keys().any(|k| k.is_empty()) {
            return Err("SOURCES has an empty write key".into());
        }
        Ok(Sources { by_key })
    }

    pub fn get(&self, write_key: &str) -> Option<&Source> {
        self.by_key.get(write_key)
    }

    /// Whether a browser origin may call the API (CORS). A preflight carries no write key,
    /// so any configured source's origin is enough for the preflight itself.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.by_key
            .values()
            .any(|s| s.origins.iter().any(|o| o == origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let s = Sources::from_json(r#"{"k1":{"name":"shop","origins":["https://a.example"]}}"#)
            .unwrap();
        assert_eq!(s.get("k1").unwrap().origins, vec!["https://a.example"]);
        assert!(s.get("k2").is_none());
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Sources::from_json("[]").is_err());
        assert!(Sources::from_json(r#"{"":{"name":"x"}}"#).is_err());
    }
}
