//! Consent: decides which categories an event may be kept and used under, from what the
//! visitor stated, the site's policy (opt-in or opt-out) and Global Privacy Control, and
//! how the signals a page already has map to categories: Google Consent Mode v2 states
//! and IAB TCF v2.2 purposes. The browser SDK and the collector both apply these rules,
//! compiled from here. Fails closed: under opt-in, an unstated category is denied.

/// What the visitor stated per category (`None`: not stated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Choice {
    pub analytics: Option<bool>,
    pub marketing: Option<bool>,
    pub personalization: Option<bool>,
}

/// How an unstated category is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub enum Policy {
    /// Fail closed: nothing is kept until the visitor grants analytics. The default, and
    /// the only lawful choice for browsers in the EU.
    #[default]
    #[cfg_attr(feature = "std", serde(rename = "opt-in"))]
    OptIn,
    /// Consent is assumed unless denied (servers, or regions without prior-consent
    /// rules). A stated denial is still enforced.
    #[cfg_attr(feature = "std", serde(rename = "opt-out"))]
    OptOut,
}

/// The categories as applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
pub struct Decision {
    pub analytics: bool,
    pub marketing: bool,
    pub personalization: bool,
    /// The browser sent Global Privacy Control (marketing is denied whatever was stated).
    pub gpc: bool,
}

impl Decision {
    /// Whether an event may be kept at all (stored, queued, sent).
    pub fn store(&self) -> bool {
        self.analytics
    }
}

/// Applies the policy and GPC to what the visitor stated.
pub fn decide(c: Choice, policy: Policy, gpc: bool) -> Decision {
    let default = policy == Policy::OptOut;
    Decision {
        analytics: c.analytics.unwrap_or(default),
        marketing: !gpc && c.marketing.unwrap_or(default),
        personalization: c.personalization.unwrap_or(default),
        gpc,
    }
}

impl Choice {
    /// This choice with what `next` states laid over it (unstated categories stay).
    pub fn updated(self, next: Choice) -> Choice {
        Choice {
            analytics: next.analytics.or(self.analytics),
            marketing: next.marketing.or(self.marketing),
            personalization: next.personalization.or(self.personalization),
        }
    }

    /// Whether the visitor has decided: analytics is the category that gates collection.
    pub fn decided(&self) -> bool {
        self.analytics.is_some()
    }
}

/// The category a `categoryPreferences` key names (Segment's consent format and its
/// usual aliases; case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Analytics,
    Marketing,
    Personalization,
}

/// The names consent managers give each category, as [`category`] compares them
/// (lowercase, letters only). Segment's consent wrappers stamp a manager's own names
/// into `categoryPreferences`: Cookiebot and Complianz say `statistics` and
/// `preferences`, CookieYes `advertisement` and `performance`, OneTrust's groups are
/// named `performance`, `functional` and `targeting`, c15t's `measurement` and
/// `experience`, Ketch's purposes `behavioral_advertising` and `targeted_advertising`
/// (RudderStack's SDK sends them as ids), and Segment's own example has `DataSharing`
/// (a denial of sale or sharing, read as GPC is: no marketing).
const NAMES: [(&str, Category); 18] = [
    ("analytics", Category::Analytics),
    ("statistics", Category::Analytics),
    ("performance", Category::Analytics),
    ("measurement", Category::Analytics),
    ("marketing", Category::Marketing),
    ("advertising", Category::Marketing),
    ("advertisement", Category::Marketing),
    ("ads", Category::Marketing),
    ("targeting", Category::Marketing),
    ("datasharing", Category::Marketing),
    ("behavioraladvertising", Category::Marketing),
    ("targetedadvertising", Category::Marketing),
    ("personalization", Category::Personalization),
    ("personalisation", Category::Personalization),
    ("functional", Category::Personalization),
    ("functionality", Category::Personalization),
    ("preferences", Category::Personalization),
    ("experience", Category::Personalization),
];

/// The category a consent manager's category name states: one of [`NAMES`], compared
/// without case, spaces, `_` or `-` (`Data Sharing`, `data_sharing`); any other name
/// states nothing. Several names of one category in one snapshot are read together by
/// [`Choice::state`]: a denial of any of them denies it.
pub fn category(key: &str) -> Option<Category> {
    let mut letters = [0u8; 24];
    let mut n = 0;
    for b in key.bytes().filter(|b| !matches!(b, b' ' | b'_' | b'-')) {
        *letters.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    let key = &letters[..n];
    NAMES
        .iter()
        .find(|(name, _)| name.as_bytes() == key)
        .map(|(_, c)| *c)
}

/// A consent manager's category id as a category (RudderStack's SDK sends the ids the
/// site's consent manager gave, in `context.consentManagement`; Segment's OneTrust
/// wrapper stamps them as `categoryPreferences` keys): a name [`category`] knows (a
/// custom manager's own ids), or one of OneTrust's default groups: `C0002` performance
/// (analytics), `C0003` functional (personalization), `C0004` targeting (marketing).
/// Any other id states nothing.
pub fn consent_id(id: &str) -> Option<Category> {
    match id.trim() {
        "C0002" => Some(Category::Analytics),
        "C0003" => Some(Category::Personalization),
        "C0004" => Some(Category::Marketing),
        other => category(other),
    }
}

/// An id from a named consent manager (RudderStack's `consentManagement.provider`):
/// iubenda's purposes are numbers (RudderStack's SDK sends their ids: `3` experience
/// enhancement, `4` measurement, `5` marketing; `1` necessary and `2` basic
/// interactions state nothing); every other manager's ids are read by [`consent_id`].
pub fn provider_consent_id(provider: &str, id: &str) -> Option<Category> {
    if !provider.eq_ignore_ascii_case("iubenda") {
        return consent_id(id);
    }
    match id.trim() {
        "3" => Some(Category::Personalization),
        "4" => Some(Category::Analytics),
        "5" => Some(Category::Marketing),
        other => consent_id(other),
    }
}

/// A consent manager's word for a category's state, as a grant or a denial: the words
/// managers write (Osano's `ACCEPT` and `DENY`, Consent Mode's `granted` and `denied`,
/// `true`, `yes`, `1` and their opposites; case aside). Any other word states nothing, so
/// under opt-in it is no consent: `"DENY"` is a denial, not a truthy string.
pub fn stated(word: &str) -> Option<bool> {
    const GRANTS: [&str; 6] = ["true", "granted", "accept", "accepted", "yes", "1"];
    const DENIALS: [&str; 7] = ["false", "denied", "deny", "declined", "no", "0", "rejected"];
    let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(word.trim()));
    if is(&GRANTS) {
        Some(true)
    } else if is(&DENIALS) {
        Some(false)
    } else {
        None
    }
}

/// A number as a category's state: `1` a grant, `0` a denial, any other states nothing.
pub fn stated_number(n: f64) -> Option<bool> {
    (n == 0.0 || n == 1.0).then_some(n == 1.0)
}

impl Choice {
    /// States one category as one of several signals of one snapshot: a denial wins
    /// over a grant, whichever comes first (a manager's `analytics: true` beside its
    /// `performance: false` denies analytics; the keys' order decides nothing).
    pub fn state(&mut self, c: Category, v: bool) {
        let slot = match c {
            Category::Analytics => &mut self.analytics,
            Category::Marketing => &mut self.marketing,
            Category::Personalization => &mut self.personalization,
        };
        *slot = Some(slot.unwrap_or(true) && v);
    }
}

/// A Consent Mode state: `granted`, `denied`, or anything else (not stated).
pub fn gcm_state(s: &str) -> Option<bool> {
    match s {
        "granted" => Some(true),
        "denied" => Some(false),
        _ => None,
    }
}

/// Google Consent Mode v2 signals as categories: analytics from `analytics_storage`;
/// marketing from `ad_storage` and `ad_user_data` (both when both are stated, else the
/// one stated); personalization from `ad_personalization`.
pub fn from_gcm(
    analytics_storage: Option<bool>,
    ad_storage: Option<bool>,
    ad_user_data: Option<bool>,
    ad_personalization: Option<bool>,
) -> Choice {
    Choice {
        analytics: analytics_storage,
        marketing: match (ad_storage, ad_user_data) {
            (Some(a), Some(b)) => Some(a && b),
            (a, b) => a.or(b),
        },
        personalization: ad_personalization,
    }
}

/// IAB TCF v2.2 purpose consents as categories (`granted(n)`: purpose n has consent).
/// Analytics: purposes 1 (store/access on a device) and 8 (measure content); marketing:
/// 1, 3, 4 and 7 (ad profile, personalized ads, ad measurement); personalization: 1, 5
/// and 6. A TCF signal always states every category.
pub fn from_tcf(granted: impl Fn(u8) -> bool) -> Choice {
    let all = |ps: &[u8]| ps.iter().all(|p| granted(*p));
    Choice {
        analytics: Some(all(&[1, 8])),
        marketing: Some(all(&[1, 3, 4, 7])),
        personalization: Some(all(&[1, 5, 6])),
    }
}

/// US privacy signals: the IAB Global Privacy Platform's US sections (`usnat` and the
/// states', as `__gpp` parses them) and the US Privacy string before it (`__uspapi`).
/// An opt-out of the sale or sharing of personal data, or of targeted advertising (or
/// the section's own GPC flag), denies marketing, as GPC does. They never grant: the US
/// laws are opt-out regimes, and "did not opt out" states nothing.
pub const US_OPT_OUTS: [&str; 4] = [
    "SaleOptOut",
    "SharingOptOut",
    "TargetedAdvertisingOptOut",
    "Gpc",
];

/// Whether a GPP US section's opt-out field says the visitor opted out: `1` (its
/// values: 0 not applicable, 1 opted out, 2 did not), or `true` for its `Gpc` flag.
pub fn gpp_opted_out(number: Option<f64>, flag: Option<bool>) -> bool {
    number == Some(1.0) || flag == Some(true)
}

/// Whether a US Privacy string (`1YYN`: version, notice given, opted out of sale,
/// LSPA covered) says the visitor opted out of sale.
pub fn usp_opted_out(usp: &str) -> bool {
    usp.starts_with('1') && matches!(usp.as_bytes().get(2), Some(b'Y' | b'y'))
}

/// What a US opt-out states: marketing denied; nothing when there was none.
pub fn from_us_opt_out(opted_out: bool) -> Choice {
    Choice {
        marketing: opted_out.then_some(false),
        ..Choice::default()
    }
}

/// The track event the SDK sends for a decision.
pub const CONSENT_EVENT: &str = "Consent Updated";
/// Track events that record a consent change (ours, Segment's consent wrapper's, and
/// RudderStack's SDK's after a `consent()` call with `trackConsent`): kept in the
/// consent log even when they deny analytics (the log is how a site proves what a
/// visitor chose).
pub const CONSENT_EVENTS: [&str; 3] = [
    CONSENT_EVENT,
    "Segment Consent Preference Updated",
    "Consent Management Interaction",
];

/// What a consent record's properties may state of how the choice was made, kept with
/// it in the consent log as its evidence (with the page it was made on): the IAB TCF's
/// TC string and its consent manager's id and version, the IAB GPP and US Privacy
/// strings, the version and address of the notice the visitor saw (`version`, as
/// `consent.set` takes it; `consentVersion` and `consentUrl`, Snowplow's names), the
/// legal basis and the kind of answer (Snowplow's `basisForProcessing`, `eventType`).
/// The SDK writes the first five; the collector keeps these keys of any sender's record.
pub const EVIDENCE_KEYS: [&str; 10] = [
    "tcString",
    "cmpId",
    "cmpVersion",
    "gppString",
    "uspString",
    "version",
    "consentVersion",
    "consentUrl",
    "basisForProcessing",
    "eventType",
];

/// Whether a track event is a consent record.
pub fn is_consent_event(event: Option<&str>) -> bool {
    event.is_some_and(|e| CONSENT_EVENTS.contains(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_opt_outs_deny_marketing_and_never_grant() {
        assert!(gpp_opted_out(Some(1.0), None));
        assert!(gpp_opted_out(None, Some(true)));
        for (n, f) in [
            (Some(0.0), None),
            (Some(2.0), None),
            (None, Some(false)),
            (None, None),
        ] {
            assert!(!gpp_opted_out(n, f), "{n:?} {f:?}");
        }
        assert!(usp_opted_out("1YYN") && usp_opted_out("1NYY") && usp_opted_out("1-y-"));
        for s in ["1YNN", "1---", "", "1", "2YYN", "YYYY"] {
            assert!(!usp_opted_out(s), "{s}");
        }
        let denied = from_us_opt_out(true);
        assert_eq!(denied.marketing, Some(false));
        assert_eq!((denied.analytics, denied.personalization), (None, None));
        assert_eq!(from_us_opt_out(false), Choice::default());
    }

    #[test]
    fn opt_in_fails_closed_and_gpc_denies_marketing() {
        let none = decide(Choice::default(), Policy::OptIn, false);
        assert!(!none.store() && !none.marketing && !none.personalization);
        let out = decide(Choice::default(), Policy::OptOut, false);
        assert!(out.store() && out.marketing);
        let denied = Choice {
            analytics: Some(false),
            ..Choice::default()
        };
        assert!(!decide(denied, Policy::OptOut, false).store());
        let gpc = decide(Choice::default(), Policy::OptOut, true);
        assert!(gpc.store() && !gpc.marketing && gpc.personalization && gpc.gpc);
    }

    #[test]
    fn consent_manager_ids_name_categories() {
        assert_eq!(consent_id("C0002"), Some(Category::Analytics));
        assert_eq!(consent_id("C0003"), Some(Category::Personalization));
        assert_eq!(consent_id("C0004"), Some(Category::Marketing));
        assert_eq!(consent_id(" Marketing "), Some(Category::Marketing));
        for none in ["C0001", "C0005", "", "c0002x", "necessary"] {
            assert_eq!(consent_id(none), None, "{none:?}");
        }
    }

    #[test]
    fn gcm_and_tcf() {
        let g = from_gcm(Some(true), Some(true), Some(false), Some(true));
        assert_eq!(
            (g.analytics, g.marketing, g.personalization),
            (Some(true), Some(false), Some(true))
        );
        assert_eq!(from_gcm(None, None, Some(true), None).marketing, Some(true));
        assert_eq!(from_gcm(None, None, None, None), Choice::default());
        assert_eq!(gcm_state("granted"), Some(true));
        assert_eq!(gcm_state("Granted"), None);
        let t = from_tcf(|p| [1, 8, 5, 6].contains(&p));
        assert_eq!(
            (t.analytics, t.marketing, t.personalization),
            (Some(true), Some(false), Some(true))
        );
        assert_eq!(
            from_tcf(|p| p != 1),
            Choice {
                analytics: Some(false),
                marketing: Some(false),
                personalization: Some(false)
            }
        );
    }

    #[test]
    fn categories_and_updates() {
        assert_eq!(category("Advertising"), Some(Category::Marketing));
        assert_eq!(category("functional"), Some(Category::Personalization));
        assert_eq!(category("necessary"), None);
        // Consent managers' names for the categories, spelt as they spell them.
        for (name, c) in [
            ("Statistics", Category::Analytics),
            ("performance", Category::Analytics),
            ("advertisement", Category::Marketing),
            ("Targeting", Category::Marketing),
            ("DataSharing", Category::Marketing),
            ("data_sharing", Category::Marketing),
            ("Data Sharing", Category::Marketing),
            ("preferences", Category::Personalization),
            ("Personalisation", Category::Personalization),
            ("measurement", Category::Analytics),
            ("experience", Category::Personalization),
            ("behavioral_advertising", Category::Marketing),
            ("targeted_advertising", Category::Marketing),
        ] {
            assert_eq!(category(name), Some(c), "{name}");
            assert_eq!(consent_id(name), Some(c), "{name}");
        }
        for none in [
            "",
            "analytic",
            "analyticss",
            "personalisationandmore",
            "unclassified",
            "é",
        ] {
            assert_eq!(category(none), None, "{none:?}");
        }
        // Managers' words for a state.
        for (w, v) in [
            ("ACCEPT", Some(true)),
            ("DENY", Some(false)),
            ("granted", Some(true)),
        ] {
            assert_eq!(stated(w), v, "{w}");
        }
        for w in [" False ", "denied", "no", "0", "rejected"] {
            assert_eq!(stated(w), Some(false), "{w}");
        }
        for w in ["", "maybe", "2", "truthy", "ACCEPT_ALL"] {
            assert_eq!(stated(w), None, "{w}");
        }
        assert_eq!(
            (stated_number(1.0), stated_number(0.0)),
            (Some(true), Some(false))
        );
        for n in [2.0, -1.0, 0.5, f64::NAN] {
            assert_eq!(stated_number(n), None, "{n}");
        }
        // iubenda's numbered purposes, from it only.
        assert_eq!(
            provider_consent_id("iubenda", "4"),
            Some(Category::Analytics)
        );
        assert_eq!(
            provider_consent_id("iubenda", "5"),
            Some(Category::Marketing)
        );
        assert_eq!(
            provider_consent_id("iubenda", "3"),
            Some(Category::Personalization)
        );
        assert_eq!(provider_consent_id("iubenda", "1"), None);
        assert_eq!(provider_consent_id("custom", "4"), None);
        assert_eq!(
            provider_consent_id("oneTrust", "C0004"),
            Some(Category::Marketing)
        );
        assert_eq!(category("behavioral_advertising_and_more"), None);
        // A denial wins among one snapshot's signals, in either order.
        for order in [[true, false], [false, true]] {
            let mut c = Choice::default();
            order.iter().for_each(|v| c.state(Category::Analytics, *v));
            assert_eq!(c.analytics, Some(false));
        }
        let mut c = Choice::default();
        c.state(Category::Marketing, true);
        assert_eq!((c.marketing, c.analytics), (Some(true), None));
        let a = Choice {
            analytics: Some(true),
            marketing: Some(true),
            personalization: None,
        };
        let b = a.updated(Choice {
            marketing: Some(false),
            ..Choice::default()
        });
        assert_eq!(b.analytics, Some(true));
        assert_eq!(b.marketing, Some(false));
        assert!(b.decided() && !Choice::default().decided());
        assert!(is_consent_event(Some("Consent Updated")) && !is_consent_event(None));
        assert!(is_consent_event(Some("Consent Management Interaction")));
        assert!(!is_consent_event(Some("consent management interaction")));
    }
}
