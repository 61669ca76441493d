//! Consent enforcement: decides, from an event's consent snapshot, the source's policy
//! and the browser's Global Privacy Control signal, whether the event may be stored and
//! which categories it was collected under. Fails closed: under `opt-in`, an event
//! without a snapshot granting analytics is not stored.
//!
//! A snapshot is read from `context.consent`:
//! - `categoryPreferences` (Segment's consent format): its keys as
//!   `tracking_plan::consent::consent_id` reads them: `analytics`, `marketing`,
//!   `personalization` and the names consent managers give them (`statistics`,
//!   `advertisement`, `preferences`, …; case, spaces, `_` and `-` aside), or OneTrust's
//!   group ids, which Segment's OneTrust wrapper stamps (`C0002`, `C0003`, `C0004`). Of
//!   two keys naming one category, a denial wins whatever their order;
//! - `googleConsentMode` (Consent Mode v2): `analytics_storage`, `ad_storage`,
//!   `ad_user_data`, `ad_personalization` as `granted`/`denied`;
//!
//! and from `context.consentManagement` (RudderStack's SDK): the ids of its
//! `allowedConsentIds` are granted and those of its `deniedConsentIds` denied, each id
//! read by `tracking_plan::consent::provider_consent_id` (a category's name, OneTrust's
//! default groups, or iubenda's numbered purposes when `provider` is iubenda). A denial
//! wins over a grant of the same category, and `categoryPreferences` over both.
//!
//! `Sec-GPC: 1` denies marketing whatever the snapshot says. Events named
//! [`CONSENT_EVENTS`](tracking_plan::consent::CONSENT_EVENTS) are consent records:
//! appended to the consent log even when they deny analytics (the log is how a site
//! proves what a visitor chose).

use serde_json::{Map, Value};
use tracking_plan::consent::{
    consent_id, from_gcm, gcm_state, provider_consent_id, stated, stated_number,
};
pub use tracking_plan::consent::{decide, is_consent_event, Choice as Snapshot, Decision};

/// The keys of a context that [`read`] and the consent log read.
const READ: [&str; 2] = ["consent", "consentManagement"];

/// The part of a context that [`read`] and the consent log read (its page's address
/// too, a consent record's evidence), as a context of its own (kept for the events of a
/// request that share a context, instead of all of it).
pub fn part(context: Option<&Value>) -> Option<Value> {
    let Some(Value::Object(c)) = context else {
        return None;
    };
    let mut kept: serde_json::Map<String, Value> = READ
        .iter()
        .filter_map(|k| Some((k.to_string(), c.get(*k)?.clone())))
        .collect();
    if let Some(url) = c.get("page").and_then(|p| p.get("url")) {
        kept.insert("page".into(), serde_json::json!({ "url": url }));
    }
    Some(Value::Object(kept))
}

/// Reads the consent snapshot of a message context (the mappings are tracking-plan's,
/// the SDK's own). It reads the keys in `READ` only.
pub fn read(context: Option<&Value>) -> Snapshot {
    let mut s = Snapshot::default();
    if let Some(Value::Object(cm)) = context.and_then(|c| c.get(READ[1])) {
        let provider = cm.get("provider").and_then(Value::as_str).unwrap_or("");
        consent_ids(&mut s, provider, cm.get("allowedConsentIds"), true);
        consent_ids(&mut s, provider, cm.get("deniedConsentIds"), false);
    }
    let Some(consent) = context.and_then(|c| c.get(READ[0])) else {
        return s;
    };
    if let Some(Value::Object(gcm)) = consent.get("googleConsentMode") {
        let state = |k: &str| gcm.get(k).and_then(Value::as_str).and_then(gcm_state);
        s = from_gcm(
            state("analytics_storage"),
            state("ad_storage"),
            state("ad_user_data"),
            state("ad_personalization"),
        );
    }
    if let Some(Value::Object(prefs)) = consent.get("categoryPreferences") {
        let mut given = Snapshot::default();
        for (k, v) in prefs {
            if let (Some(v), Some(c)) = (value_state(v), consent_id(k)) {
                given.state(c, v);
            }
        }
        s = s.updated(given);
    }
    s
}

/// A `categoryPreferences` value as a grant or a denial: a boolean, a number
/// (`tracking_plan::consent::stated_number`: `1` or `0`), or a manager's word (`stated`:
/// `"DENY"` is a denial). The SDK reads `consent.set`'s values by the same two rules.
fn value_state(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().and_then(stated_number),
        Value::String(w) => stated(w),
        _ => None,
    }
}

/// States the categories a list of `provider`'s consent ids names as `granted`.
fn consent_ids(s: &mut Snapshot, provider: &str, ids: Option<&Value>, granted: bool) {
    let Some(Value::Array(ids)) = ids else {
        return;
    };
    let ids = ids.iter().filter_map(Value::as_str);
    for c in ids.filter_map(|id| provider_consent_id(provider, id)) {
        s.state(c, granted);
    }
}

/// A decision as the `categoryPreferences` object stored beside an event.
pub fn to_json(d: &Decision) -> Value {
    let mut m = Map::new();
    m.insert("necessary".into(), true.into());
    m.insert("analytics".into(), d.analytics.into());
    m.insert("marketing".into(), d.marketing.into());
    m.insert("personalization".into(), d.personalization.into());
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ConsentPolicy;
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
    fn rudderstack_consent_ids() {
        let read_cm = |cm: Value| read(Some(&json!({ "consentManagement": cm })));
        let s = read_cm(
            json!({"provider": "custom", "allowedConsentIds": ["analytics", "Marketing"],
                               "deniedConsentIds": ["marketing", "unknown"]}),
        );
        assert_eq!(
            (s.analytics, s.marketing, s.personalization),
            (Some(true), Some(false), None),
            "a denial wins"
        );
        let one_trust = read_cm(
            json!({"provider": "oneTrust", "allowedConsentIds": ["C0001", "C0002", "C0003"],
                                       "deniedConsentIds": ["C0004"]}),
        );
        assert!(decide(one_trust, ConsentPolicy::OptIn, false).store());
        assert!(!decide(one_trust, ConsentPolicy::OptIn, false).marketing);
        // iubenda's purposes as RudderStack's SDK sends them: numbers.
        let iubenda = read_cm(json!({"provider": "iubenda", "resolutionStrategy": "and",
            "allowedConsentIds": ["1", "2", "3", "4"], "deniedConsentIds": ["5"]}));
        let d = decide(iubenda, ConsentPolicy::OptIn, false);
        assert!(d.store() && d.personalization && !d.marketing);
        let custom = read_cm(json!({"provider": "custom", "allowedConsentIds": ["4"]}));
        assert!(
            !decide(custom, ConsentPolicy::OptIn, false).store(),
            "numbers name nothing elsewhere"
        );
        // Nothing granted, or ids of the wrong shape: still closed under opt-in.
        for closed in [
            json!({"allowedConsentIds": []}),
            json!({"allowedConsentIds": "analytics"}),
            json!({"allowedConsentIds": [1, null, {"analytics": true}]}),
            json!(["analytics"]),
        ] {
            assert!(
                !decide(read_cm(closed.clone()), ConsentPolicy::OptIn, false).store(),
                "{closed}"
            );
        }
        // Segment's format, when both are sent, has the last word.
        let both = read(Some(
            &json!({"consentManagement": {"allowedConsentIds": ["analytics"]},
                                     "consent": {"categoryPreferences": {"analytics": false}}}),
        ));
        assert_eq!(both.analytics, Some(false));
    }

    #[test]
    fn consent_managers_category_names_and_onetrust_groups() {
        // Segment's OneTrust wrapper stamps every OneTrust group by its id.
        let one_trust = snap(json!({"categoryPreferences":
            {"C0001": true, "C0002": true, "C0003": false, "C0004": false, "C0005": true}}));
        let d = decide(one_trust, ConsentPolicy::OptIn, false);
        assert!(d.store() && !d.marketing && !d.personalization);
        // Cookiebot's and CookieYes's names: a denial there is a denial here.
        let cookiebot = snap(json!({"categoryPreferences":
            {"necessary": true, "statistics": true, "preferences": true, "marketing": false}}));
        let d = decide(cookiebot, ConsentPolicy::OptIn, false);
        assert!(d.store() && d.personalization && !d.marketing);
        let cookie_yes = snap(json!({"categoryPreferences":
            {"analytics": true, "performance": true, "functional": true, "advertisement": false}}));
        assert!(!decide(cookie_yes, ConsentPolicy::OptOut, false).marketing);
        // Segment's documented example: a denial of data sharing is no marketing.
        let segment = snap(json!({"categoryPreferences":
            {"Advertising": true, "Analytics": true, "Functional": true, "DataSharing": false}}));
        assert!(!decide(segment, ConsentPolicy::OptOut, false).marketing);
        // Two names of one category: a denial wins, whichever key comes first.
        for prefs in [
            json!({"analytics": true, "performance": false}),
            json!({"performance": true, "statistics": false}),
            json!({"Statistics": false, "analytics": true}),
            json!({"C0002": false, "analytics": true}),
        ] {
            let s = snap(json!({ "categoryPreferences": prefs }));
            assert_eq!(s.analytics, Some(false), "{prefs}");
            assert!(!decide(s, ConsentPolicy::OptOut, false).store(), "{prefs}");
        }
        // Osano's words, and values of other kinds: "DENY" is a denial, not a truthy string.
        let osano = snap(json!({"categoryPreferences":
            {"ESSENTIAL": "ACCEPT", "ANALYTICS": "ACCEPT", "MARKETING": "DENY", "PERSONALIZATION": 0}}));
        let d = decide(osano, ConsentPolicy::OptOut, false);
        assert!(d.store() && !d.marketing && !d.personalization);
        for unread in [
            json!("maybe"),
            json!(2),
            json!(null),
            json!({"v": true}),
            json!([true]),
        ] {
            let s = snap(json!({"categoryPreferences": {"analytics": unread.clone()}}));
            assert!(!decide(s, ConsentPolicy::OptIn, false).store(), "{unread}");
        }
        // A number is read as the SDK reads it: 1.0 is 1.
        let one = snap(json!({"categoryPreferences": {"analytics": 1.0}}));
        assert!(decide(one, ConsentPolicy::OptIn, false).store());
        // Unknown groups and names state nothing: opt-in stays closed.
        let unknown =
            snap(json!({"categoryPreferences": {"C0001": true, "C0005": true, "stats": true}}));
        assert!(!decide(unknown, ConsentPolicy::OptIn, false).store());
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
