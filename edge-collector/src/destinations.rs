//! Destinations: decides which stored events (and segment changes) go to which
//! destination, what consent each needs, and the exact request each platform gets:
//! Meta's Conversions API, Google's Data Manager API (`events:ingest`, enhanced
//! conversions) and a generic webhook signed with HMAC-SHA256.
//!
//! Configured per source (`destinations` in `SOURCES`):
//!
//! ```json
//! {"id": "meta", "kind": "meta", "events": ["Order Completed"], "pixelId": "123",
//!  "secret": "META_TOKEN", "eventNames": {"Order Completed": "Purchase"}}
//! ```
//!
//! - `consent`: the categories an event must carry (`marketing`, `personalization`,
//!   `analytics`, or Google's `ad_user_data` / `ad_personalization`); by default Meta and
//!   Google need `marketing` (Google also `ad_user_data`), a webhook `analytics`. An event
//!   without them is never sent, and the delivery log says why.
//! - Hashes come from the browser: the SDK's soft login sends `email_sha256` (trimmed,
//!   lowercased), `email_sha256_google` (gmail dots removed, when that differs),
//!   `phone_sha256` (E.164 with `+`, Google's form) and `phone_sha256_meta` (digits with
//!   the country code, Meta's form), so no raw value reaches the collector. Server
//!   sources send the same traits.
//! - Meta never gets an event older than 7 days (the API refuses the whole request).
//! - `secret` names a Worker secret (`wrangler secret put`): Meta's access token,
//!   Google's OAuth bearer token, or the webhook's signing key.
//! - `endpoint` replaces the platform's base URL (for a proxy, or a local stand-in).
//! - `retrySeconds`: the first retry's delay (default 10 s), doubling up to 15 min; the
//!   job is dead after 6 tries.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Meta,
    Google,
    Webhook,
}

/// A consent need, as destinations declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    Analytics,
    Marketing,
    Personalization,
    AdUserData,
    AdPersonalization,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Analytics => "analytics",
            Need::Marketing => "marketing",
            Need::Personalization => "personalization",
            Need::AdUserData => "ad_user_data",
            Need::AdPersonalization => "ad_personalization",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// `[a-z0-9_-]`, unique in the source.
    pub id: String,
    pub kind: Kind,
    /// Event names sent (`Segment Entered` / `Segment Exited` for segment changes).
    pub events: Vec<String>,
    #[serde(default)]
    pub consent: Option<Vec<Need>>,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The name of the Worker secret holding the token or signing key.
    pub secret: String,
    /// Meta: the pixel (dataset) id.
    #[serde(default)]
    pub pixel_id: Option<String>,
    /// Meta: the Graph API version (default v21.0).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Meta: a test event code (events show in Events Manager's test tab).
    #[serde(default)]
    pub test_event_code: Option<String>,
    /// Google: the Google Ads customer id receiving the conversions.
    #[serde(default)]
    pub account_id: Option<String>,
    /// Google: the conversion action id.
    #[serde(default)]
    pub conversion_action: Option<String>,
    /// Platform event names by Sightline event name (Meta: `Purchase`, `Lead`, ...).
    #[serde(default)]
    pub event_names: BTreeMap<String, String>,
    /// The property holding the conversion value (default `total`, then `revenue`, `value`).
    #[serde(default)]
    pub value: Option<String>,
    /// The currency when an event names none.
    #[serde(default)]
    pub currency: Option<String>,
    /// Seconds before the first retry (1 to 60; default 10), doubling after.
    #[serde(default)]
    pub retry_seconds: Option<u32>,
}

/// Why an event is not sent to a destination (recorded in the delivery log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// The event lacks a consent category the destination needs.
    Consent(Need),
    /// Older than the platform accepts (Meta: 7 days).
    TooOld,
    /// Nothing to match the event on (no hash, click id or browser id).
    NoMatchKeys,
    /// Google: a conversion needs an order id.
    NoOrderId,
    /// The destination's secret is not set.
    NoSecret,
    /// The destination was removed from the source while the job waited.
    Removed,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Consent(Need::Analytics) => "consent_analytics",
            Skip::Consent(Need::Marketing) => "consent_marketing",
            Skip::Consent(Need::Personalization) => "consent_personalization",
            Skip::Consent(Need::AdUserData) => "consent_ad_user_data",
            Skip::Consent(Need::AdPersonalization) => "consent_ad_personalization",
            Skip::TooOld => "too_old",
            Skip::NoMatchKeys => "no_match_keys",
            Skip::NoOrderId => "no_order_id",
            Skip::NoSecret => "no_secret",
            Skip::Removed => "destination_removed",
        }
    }
}

/// Meta refuses a request holding an event older than this.
pub const META_MAX_AGE_MS: i64 = 7 * 86_400_000;

/// The hashed identifiers of the person an event belongs to (the profile's traits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hashes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_google: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_e164: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_meta: Vec<String>,
}

impl Hashes {
    /// The digests in a profile's traits (only well-formed SHA-256 hex).
    pub fn from_traits(traits: &Map<String, Value>) -> Hashes {
        let get = |k: &str| -> Vec<String> {
            traits
                .get(k)
                .and_then(Value::as_str)
                .filter(|h| tracking_plan::identifiers::is_sha256_hex(h))
                .map(|h| vec![h.to_ascii_lowercase()])
                .unwrap_or_default()
        };
        Hashes {
            email: get("email_sha256"),
            email_google: get("email_sha256_google"),
            phone_e164: get("phone_sha256"),
            phone_meta: get("phone_sha256_meta"),
        }
    }

    /// Google's email digests: the gmail form where it differs, else the standard one.
    pub fn google_emails(&self) -> &[String] {
        if self.email_google.is_empty() {
            &self.email
        } else {
            &self.email_google
        }
    }
}

/// One delivery to make: an event for a destination, as queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub write_key: String,
    pub destination: String,
    pub message_id: String,
    pub profile_id: Option<String>,
    /// The stored event (raw PII already hashed by the pipeline).
    pub event: Value,
    pub hashes: Hashes,
}

impl Destination {
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("destination id {:?} must be [a-z0-9_-]", self.id));
        }
        if self.events.is_empty() {
            return Err(format!("destination {} sends no events", self.id));
        }
        match self.kind {
            Kind::Meta if self.pixel_id.is_none() => {
                Err(format!("destination {}: meta needs pixelId", self.id))
            }
            Kind::Google if self.account_id.is_none() || self.conversion_action.is_none() => {
                Err(format!(
                    "destination {}: google needs accountId and conversionAction",
                    self.id
                ))
            }
            _ => Ok(()),
        }
    }

    /// The consent an event needs to go here.
    pub fn needs(&self) -> Vec<Need> {
        match (&self.consent, self.kind) {
            (Some(n), _) => n.clone(),
            (None, Kind::Meta) => vec![Need::Marketing],
            (None, Kind::Google) => vec![Need::Marketing, Need::AdUserData],
            (None, Kind::Webhook) => vec![Need::Analytics],
        }
    }

    pub fn sends(&self, event: Option<&str>) -> bool {
        event.is_some_and(|e| self.events.iter().any(|x| x == e))
    }

    /// Whether the event may go here now: its consent, its age, what it can be matched
    /// on. Checked when queued and again when sent (a retried job ages).
    pub fn check(&self, event: &Value, hashes: &Hashes, now_ms: i64) -> Result<(), Skip> {
        if let Some(n) = self.needs().into_iter().find(|n| !granted(event, *n)) {
            return Err(Skip::Consent(n));
        }
        match self.kind {
            Kind::Meta => {
                if now_ms - event_ms(event).unwrap_or(0) > META_MAX_AGE_MS {
                    return Err(Skip::TooOld);
                }
                let ctx = event.get("context");
                let browser_ids =
                    ctx.and_then(|c| c.get("fbp")).is_some() || fbclid(event).is_some();
                if hashes.email.is_empty() && hashes.phone_meta.is_empty() && !browser_ids {
                    return Err(Skip::NoMatchKeys);
                }
                Ok(())
            }
            Kind::Google => {
                if order_id(event).is_none() {
                    return Err(Skip::NoOrderId);
                }
                if hashes.email.is_empty()
                    && hashes.phone_e164.is_empty()
                    && click_id(event, "gclid").is_none()
                {
                    return Err(Skip::NoMatchKeys);
                }
                Ok(())
            }
            Kind::Webhook => Ok(()),
        }
    }
}

/// Whether the stored event carries a consent category. The collector's enforced
/// decision (`context.consent.enforced`) is the record; Google's own signals are read
/// from `googleConsentMode`, and without them follow marketing.
pub fn granted(event: &Value, need: Need) -> bool {
    let consent = event.pointer("/context/consent");
    let enforced = |k: &str| {
        consent
            .and_then(|c| c.pointer(&format!("/enforced/{k}")))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let gcm = |k: &str| {
        consent
            .and_then(|c| c.pointer(&format!("/googleConsentMode/{k}")))
            .and_then(Value::as_str)
            .map(|s| s == "granted")
    };
    match need {
        Need::Analytics => enforced("analytics"),
        Need::Marketing => enforced("marketing"),
        Need::Personalization => enforced("personalization"),
        Need::AdUserData => enforced("marketing") && gcm("ad_user_data").unwrap_or(true),
        Need::AdPersonalization => {
            enforced("marketing") && gcm("ad_personalization").unwrap_or(true)
        }
    }
}

/// Whether the visitor's latest consent decision (the consent log's categories, as
/// decided by the collector) still allows this destination when a queued job is sent:
/// a revocation after the event was stored stops what is still waiting.
pub fn still_granted(d: &Destination, latest: Option<&Value>) -> Result<(), Skip> {
    let Some(c) = latest else { return Ok(()) };
    let has = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
    let lacking = d.needs().into_iter().find(|n| match n {
        Need::Analytics => !has("analytics"),
        Need::Personalization => !has("personalization"),
        Need::Marketing | Need::AdUserData | Need::AdPersonalization => !has("marketing"),
    });
    lacking.map_or(Ok(()), |n| Err(Skip::Consent(n)))
}

fn event_ms(event: &Value) -> Option<i64> {
    event
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(tracking_plan::time::parse_rfc3339)
}

fn click_id<'v>(event: &'v Value, name: &str) -> Option<&'v str> {
    event
        .pointer(&format!("/context/clickIds/{name}"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn fbclid(event: &Value) -> Option<&str> {
    click_id(event, "fbclid")
}

fn order_id(event: &Value) -> Option<String> {
    crate::attribution::order_id(event.get("properties"))
}

impl Destination {
    fn value_of(&self, event: &Value) -> Option<f64> {
        let p = event.get("properties")?;
        let keys: Vec<&str> = match &self.value {
            Some(v) => vec![v.as_str()],
            None => vec!["total", "revenue", "value"],
        };
        keys.iter()
            .find_map(|k| p.get(*k)?.as_f64())
            .filter(|v| v.is_finite())
    }

    fn currency_of(&self, event: &Value) -> Option<String> {
        event
            .pointer("/properties/currency")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
            .or_else(|| self.currency.clone())
    }

    fn platform_name(&self, event: &Value) -> String {
        let name = event
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.event_names
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

/// An HTTP request to make (the adapter sends it as it is).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The platform request for one job. `secret` is the destination's secret's value.
pub fn request(d: &Destination, job: &Job, secret: &str, now_ms: i64) -> Result<Outgoing, Skip> {
    if secret.is_empty() {
        return Err(Skip::NoSecret);
    }
    d.check(&job.event, &job.hashes, now_ms)?;
    let json_headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    match d.kind {
        Kind::Meta => {
            let base = d
                .endpoint
                .as_deref()
                .unwrap_or("https://graph.facebook.com");
            let url = format!(
                "{}/{}/{}/events",
                base.trim_end_matches('/'),
                d.api_version.as_deref().unwrap_or("v21.0"),
                d.pixel_id.as_deref().unwrap_or_default()
            );
            let mut body = json!({"data": [meta_event(d, job)], "access_token": secret});
            if let Some(code) = &d.test_event_code {
                body["test_event_code"] = code.clone().into();
            }
            Ok(Outgoing {
                url,
                headers: json_headers,
                body: body.to_string(),
            })
        }
        Kind::Google => {
            let base = d
                .endpoint
                .as_deref()
                .unwrap_or("https://datamanager.googleapis.com");
            let mut headers = json_headers;
            headers.push(("Authorization".into(), format!("Bearer {secret}")));
            Ok(Outgoing {
                url: format!("{}/v1/events:ingest", base.trim_end_matches('/')),
                headers,
                body: google_request(d, job).to_string(),
            })
        }
        Kind::Webhook => {
            let body = json!({
                "destination": d.id,
                "messageId": job.message_id,
                "profileId": job.profile_id,
                "event": job.event,
                "hashes": job.hashes,
            })
            .to_string();
            let ts = (now_ms / 1000).to_string();
            let signature = crate::alerts::signature(secret.as_bytes(), &ts, &body);
            let mut headers = json_headers;
            headers.push(("X-Sightline-Timestamp".into(), ts));
            headers.push(("X-Sightline-Signature".into(), signature));
            Ok(Outgoing {
                url: d.endpoint.clone().unwrap_or_default(),
                headers,
                body,
            })
        }
    }
}

/// One event of Meta's `data` array. `event_id` is the event's order id when it names
/// one (Meta's documented choice for purchases: the Pixel's `eventID` is the order
/// number in the usual setup, and a thank-you page sent again, with a new messageId,
/// is the same order), else its messageId: Meta keeps one event per `event_name` and
/// `event_id` within 48 hours.
fn meta_event(d: &Destination, job: &Job) -> Value {
    let e = &job.event;
    let mut user = Map::new();
    if !job.hashes.email.is_empty() {
        user.insert("em".into(), json!(job.hashes.email));
    }
    if !job.hashes.phone_meta.is_empty() {
        user.insert("ph".into(), json!(job.hashes.phone_meta));
    }
    if let Some(p) = &job.profile_id {
        user.insert(
            "external_id".into(),
            json!([tracking_plan::identifiers::sha256_hex(p)]),
        );
    }
    if let Some(fbp) = e.pointer("/context/fbp").and_then(Value::as_str) {
        user.insert("fbp".into(), fbp.into());
    }
    if let Some(click) = fbclid(e) {
        // fbc: `fb.1.<ms of the click>.<fbclid>`; the event time stands for the click's.
        user.insert(
            "fbc".into(),
            format!("fb.1.{}.{click}", event_ms(e).unwrap_or(0)).into(),
        );
    }
    if let Some(ua) = e.pointer("/context/userAgent").and_then(Value::as_str) {
        user.insert("client_user_agent".into(), ua.into());
    }
    let mut custom = Map::new();
    if let Some(v) = d.value_of(e) {
        custom.insert("value".into(), json!(v));
    }
    if let Some(c) = d.currency_of(e) {
        custom.insert("currency".into(), c.into());
    }
    if let Some(o) = order_id(e) {
        custom.insert("order_id".into(), o.into());
    }
    let mut out = json!({
        "event_name": d.platform_name(e),
        "event_time": event_ms(e).unwrap_or(0) / 1000,
        "event_id": order_id(e).unwrap_or_else(|| job.message_id.clone()),
        "action_source": "website",
        "user_data": user,
    });
    if let Some(url) = e.pointer("/context/page/url").and_then(Value::as_str) {
        out["event_source_url"] = url.into();
    }
    if !custom.is_empty() {
        out["custom_data"] = Value::Object(custom);
    }
    out
}

/// A Data Manager API `IngestEventsRequest` with one event.
fn google_request(d: &Destination, job: &Job) -> Value {
    let e = &job.event;
    let mut ids: Vec<Value> = Vec::new();
    for h in job.hashes.google_emails() {
        ids.push(json!({"emailAddress": h}));
    }
    for h in &job.hashes.phone_e164 {
        ids.push(json!({"phoneNumber": h}));
    }
    ids.truncate(5); // the API takes at most five user identifiers
    let mut event = json!({
        "eventTimestamp": tracking_plan::time::format_rfc3339(event_ms(e).unwrap_or(0)),
        "transactionId": order_id(e),
        "eventSource": "WEB",
        "userData": {"userIdentifiers": ids},
    });
    if let Some(v) = d.value_of(e) {
        event["conversionValue"] = json!(v);
    }
    if let Some(c) = d.currency_of(e) {
        event["currency"] = c.into();
    }
    if let Some(g) = click_id(e, "gclid") {
        event["adIdentifiers"] = json!({"gclid": g});
    }
    let state = |n: Need| {
        if granted(e, n) {
            "CONSENT_GRANTED"
        } else {
            "CONSENT_DENIED"
        }
    };
    json!({
        "destinations": [{
            "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": d.account_id},
            "productDestinationId": d.conversion_action,
        }],
        "encoding": "HEX",
        "consent": {
            "adUserData": state(Need::AdUserData),
            "adPersonalization": state(Need::AdPersonalization),
        },
        "events": [event],
    })
}

/// How a platform's answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// Worth another try (network, 429, 5xx).
    Retry,
    /// The platform refused the request itself (4xx): trying again changes nothing.
    Rejected,
}

pub fn answer(status: Option<u16>) -> Answer {
    match status {
        Some(200..=299) => Answer::Delivered,
        Some(408 | 425 | 429) | Some(500..=599) | None => Answer::Retry,
        Some(_) => Answer::Rejected,
    }
}

/// The first retry's delay unless the destination sets `retrySeconds`.
pub const FIRST_RETRY_SECONDS: u32 = 10;

/// Seconds before attempt `n` (1-based) is tried again: `first` (1 to 60 s), doubling,
/// at most 15 min.
pub fn backoff_seconds(attempt: u32, first: u32) -> u32 {
    (first.clamp(1, 60) << attempt.saturating_sub(1).min(7)).min(900)
}

/// The jobs and skips of a destination list for stored events and segment changes.
pub struct Plan {
    pub jobs: Vec<Job>,
    /// `(destination, message_id, profile_id, reason)`.
    pub skipped: Vec<(String, String, Option<String>, Skip)>,
}

/// Which of the request's events go where. `events` are `(message_id, profile_id,
/// stored payload)`; `hashes_of` gives a profile's hashes.
pub fn plan(
    write_key: &str,
    destinations: &[Destination],
    events: &[(String, Option<String>, Value)],
    hashes_of: impl Fn(Option<&str>) -> Hashes,
    now_ms: i64,
) -> Plan {
    let mut out = Plan {
        jobs: Vec::new(),
        skipped: Vec::new(),
    };
    for (id, profile, event) in events {
        let name = event.get("event").and_then(Value::as_str);
        for d in destinations.iter().filter(|d| d.sends(name)) {
            let hashes = hashes_of(profile.as_deref());
            match d.check(event, &hashes, now_ms) {
                Ok(()) => out.jobs.push(Job {
                    write_key: write_key.to_string(),
                    destination: d.id.clone(),
                    message_id: id.clone(),
                    profile_id: profile.clone(),
                    event: event.clone(),
                    hashes,
                }),
                Err(skip) => out
                    .skipped
                    .push((d.id.clone(), id.clone(), profile.clone(), skip)),
            }
        }
    }
    out
}
