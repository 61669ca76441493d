//! Consent enforcement: decides, from an event's consent snapshot, the source's policy
//! and the browser's Global Privacy Control signal, whether the event may be stored and
//! which categories it was collected under. Fails closed: under `opt-in`, an event
//! without a snapshot granting analytics is not stored.
//!
//! A snapshot is read from `context.consent`:
//! - `categoryPreferences` (Segment's consent format): keys `analytics`, `marketing`
//!   (or `advertising`), `personalization` (or `functional`), case-insensitive;
//! - `googleConsentMode` (Consent Mode v2): `analytics_storage`, `ad_storage`,
//!   `ad_user_data`, `ad_personalization` as `granted`/`denied`.
//!
//! `Sec-GPC: 1` denies marketing whatever the snapshot says. Events named
//! [`CONSENT_EVENTS`] are consent records: appended to the consent log even when they
//! deny analytics (the log is how a site proves what a visitor chose).

use crate::sources::ConsentPolicy;
use serde::Serialize;
use serde_json::{Map, Value};

/// Track events that record a consent change (ours and Segment's consent integration).
pub const CONSENT_EVENTS: [&str; 2] = ["Consent Updated", "Segment Consent Preference Updated"];

/// What the event says about each category (`None`: not stated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub analytics: Option<bool>,
    pub marketing: Option<bool>,
    pub personalization: Option<bool>,
}

/// Reads the consent snapshot of a message context.
pub fn read(context: Option<&Value>) -> Snapshot {
    let mut s = Snapshot::default();
    let Some(consent) = context.and_then(|c| c.get("consent")) else {
        return s;
    };
    if let Some(Value::Object(gcm)) = consent.get("googleConsentMode") {
        let granted = |k: &str| gcm.get(k).and_then(Value::as_str).map(|v| v == "granted");
        s.analytics = granted("analytics_storage");
        s.marketing = match (granted("ad_storage"), granted("ad_user_data")) {
            (Some(a), Some(b)) => Some(a && b),
            (a, b) => a.or(b),
        };
        s.personalization = granted("ad_personalization");
    }
    if let Some(Value::Object(prefs)) = consent.get("categoryPreferences") {
        for (k, v) in prefs {
            let Some(v) = v.as_bool() else { continue };
            match k.to_ascii_lowercase().as_str() {
                "analytics" => s.analytics = Some(v),
                "marketing" | "advertising" => s.marketing = Some(v),
                "personalization" | "functional" => s.personalization = Some(v),
                _ => {}
            }
        }
    }
    s
}

/// The categories an event is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub analytics: bool,
    pub marketing: bool,
    pub personalization: bool,
    pub gpc: bool,
}

impl Decision {
    /// Whether the event may be stored at all.
    pub fn store(&self) -> bool {
        self.analytics
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("necessary".into(), true.into());
        m.insert("analytics".into(), self.analytics.into());
        m.insert("marketing".into(), self.marketing.into());
        m.insert("personalization".into(), self.personalization.into());
        Value::Object(m)
    }
}

/// Applies the source's policy and GPC to a snapshot.
pub fn decide(s: Snapshot, policy: ConsentPolicy, gpc: bool) -> Decision {
    let default = policy == ConsentPolicy::OptOut;
    Decision {
        analytics: s.analytics.unwrap_or(default),
        marketing: !gpc && s.marketing.unwrap_or(default),
        personalization: s.personalization.unwrap_or(default),
        gpc,
    }
}

/// Whether a track event is a consent record.
pub fn is_consent_event(event: Option<&str>) -> bool {
    event.is_some_and(|e| CONSENT_EVENTS.contains(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(v: Value) -> Snapshot {
        read(Some(&json!({ "consent": v })))
    }

    #[test]
    fn opt_in_fails_closed() {
        let none = decide(read(None), ConsentPolicy::OptIn, false);
        assert!(!none.store() && !none.marketing && !none.personalization);
        let granted = decide(
            snap(json!({"categoryPreferences": {"Analytics": true}})),
            ConsentPolicy::OptIn,
            false,
        );
        assert!(granted.store() && !granted.marketing);
    }

    #[test]
    fn opt_out_assumes_consent_unless_denied() {
        assert!(decide(read(None), ConsentPolicy::OptOut, false).store());
        let denied = snap(json!({"categoryPreferences": {"analytics": false}}));
        assert!(!decide(denied, ConsentPolicy::OptOut, false).store());
    }

    #[test]
    fn gpc_denies_marketing() {
        let all = snap(
            json!({"categoryPreferences": {"analytics": true, "advertising": true, "functional": true}}),
        );
        assert!(decide(all, ConsentPolicy::OptIn, false).marketing);
        let d = decide(all, ConsentPolicy::OptIn, true);
        assert!(d.store() && !d.marketing && d.personalization && d.gpc);
    }

    #[test]
    fn google_consent_mode() {
        let s = snap(json!({"googleConsentMode": {
            "analytics_storage": "granted", "ad_storage": "granted",
            "ad_user_data": "denied", "ad_personalization": "granted"}}));
        assert_eq!(
            s,
            Snapshot {
                analytics: Some(true),
                marketing: Some(false),
                personalization: Some(true)
            }
        );
    }
}
