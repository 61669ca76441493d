//! Snowplow's tracker protocol: decides how a tracker's `POST
//! /com.snowplowanalytics.snowplow/tp2` payload reads as a Segment batch, so that a site
//! on Snowplow's trackers can point them at the collector and every other stage
//! (consent, PII, the plan, dedup, identity, storage) applies unchanged.
//!
//! - The source is the tracker's `appId` (`aid`): it is the write key. One request
//!   carries one app's events; a request that mixes apps is refused.
//! - `eid` is the messageId; `duid` (the domain user id) the anonymousId, else `nuid`;
//!   `uid` the userId; `dtm` and `stm` (ms) the timestamp and sentAt.
//! - Page views (`pv`) are page calls; structured events (`se`) track calls named by
//!   their action, with `category`, `label`, `property` and `value`; self-describing
//!   events (`ue`) track calls named by their schema's name, with its data as
//!   properties (Snowplow's own `screen_view` a screen call named by its `name`, and its
//!   enhanced-consent `consent_preferences` a consent record, `Consent Updated` with the
//!   categories it states); page pings (`pp`) track calls named `Page Ping`.
//! - Everything else the tracker knows goes to `context`: the page, locale, time zone,
//!   screen, the library, and under `context.snowplow` the session, the platform, the
//!   tracker's namespace, the event's schema and its attached contexts.
//! - Any other event type keeps its parameters and becomes a message of an unknown type,
//!   which the shape stage quarantines with its reason: nothing is dropped unseen.
//! - `GET /i` (a tracker's `eventMethod: 'get'`, and the pixel of an email or of a page
//!   without JavaScript) carries one event's parameters in its query: read as the same
//!   event a POST carries ([`pixel_payload`]), answered with a transparent GIF.

use crate::error::Error;
use crate::foreign::put;
use base64::Engine as _;
use serde_json::{Map, Value};
use tracking_plan::consent::{consent_id, Choice, CONSENT_EVENT};
use tracking_plan::time::format_rfc3339;

/// The tracker protocol's POST path.
pub const PATH: &str = "/com.snowplowanalytics.snowplow/tp2";

/// The tracker protocol's GET path.
pub const PIXEL_PATH: &str = "/i";

/// What `GET /i` answers when its event was taken: a transparent 1x1 GIF.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// A `GET /i` query (one event's parameters, percent-encoded) as the tp2 payload a POST
/// of the same event carries, for [`to_segment`]. A parameter given twice keeps its
/// first value.
pub fn pixel_payload(query: &str) -> Vec<u8> {
    use tracking_plan::campaign::decode;
    let mut event = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        event
            .entry(decode(k))
            .or_insert_with(|| Value::String(decode(v)));
    }
    let mut payload = Map::new();
    payload.insert("data".into(), Value::Array(vec![Value::Object(event)]));
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// A tp2 payload as a Segment batch body (`{"writeKey", "batch"}`).
pub fn to_segment(body: &[u8]) -> Result<Vec<u8>, Error> {
    let payload: Value = serde_json::from_slice(body).map_err(|e| crate::error::json_error(&e))?;
    let Some(Value::Array(items)) = payload.get("data") else {
        return Err(Error::InvalidBody("a Snowplow payload has a `data` array"));
    };
    let mut app: Option<&str> = None;
    let mut batch = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(p) = item else {
            return Err(Error::InvalidBody("each Snowplow event is an object"));
        };
        let aid = p.get("aid").and_then(Value::as_str);
        if i > 0 && aid != app {
            return Err(Error::InvalidBody("one request carries one app's events"));
        }
        app = aid;
        batch.push(message(p));
    }
    let mut out = Map::new();
    if let Some(a) = app {
        out.insert("writeKey".into(), a.into());
    }
    out.insert("batch".into(), Value::Array(batch));
    serde_json::to_vec(&out).map_err(|_| Error::InvalidBody("unreadable Snowplow payload"))
}

/// One tracker event as a Segment message.
fn message(p: &Map<String, Value>) -> Value {
    let s = |k: &str| p.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let mut m = Map::new();
    let mut props = Map::new();
    let mut snowplow = Map::new();
    let kind = s("e").unwrap_or_default();
    let mut consent = None;
    match kind {
        "pv" => {
            m.insert("type".into(), "page".into());
            put(&mut m, "name", s("page"));
            put(&mut props, "url", s("url"));
            put(&mut props, "title", s("page"));
            put(&mut props, "referrer", s("refr"));
        }
        "se" => {
            m.insert("type".into(), "track".into());
            put(&mut m, "event", s("se_ac"));
            put(&mut props, "category", s("se_ca"));
            put(&mut props, "label", s("se_la"));
            put(&mut props, "property", s("se_pr"));
            if let Some(v) = s("se_va") {
                props.insert("value".into(), number(v));
            }
        }
        "ue" => {
            let event = self_describing(p, "ue_pr", "ue_px");
            let data = event.get("data");
            let schema = data.and_then(|d| d.get("schema")).and_then(Value::as_str);
            let fields = data.and_then(|d| d.get("data"));
            consent = schema
                .filter(|s| is_snowplow(s, "consent_preferences"))
                .and_then(|_| consent_preferences(fields?));
            if schema.is_some_and(is_screen_view) {
                m.insert("type".into(), "screen".into());
                let name = fields.and_then(|d| d.get("name")).and_then(Value::as_str);
                put(&mut m, "name", name);
            } else if consent.is_some() {
                m.insert("type".into(), "track".into());
                m.insert("event".into(), CONSENT_EVENT.into());
            } else {
                m.insert("type".into(), "track".into());
                put(&mut m, "event", schema.and_then(schema_name));
            }
            put(&mut snowplow, "schema", schema);
            if let Some(Value::Object(d)) = fields {
                props.extend(d.clone());
            }
        }
        "pp" => {
            m.insert("type".into(), "track".into());
            m.insert("event".into(), "Page Ping".into());
            for (k, name) in [
                ("pp_mix", "minXOffset"),
                ("pp_max", "maxXOffset"),
                ("pp_miy", "minYOffset"),
                ("pp_may", "maxYOffset"),
            ] {
                if let Some(v) = s(k) {
                    props.insert(name.into(), number(v));
                }
            }
        }
        other => {
            // Kept whole, under a type the shape stage quarantines with its reason.
            m.insert("type".into(), format!("snowplow:{other}").into());
            props.extend(p.clone());
        }
    }
    put(&mut m, "messageId", s("eid"));
    put(&mut m, "anonymousId", s("duid").or_else(|| s("nuid")));
    put(&mut m, "userId", s("uid"));
    put(&mut m, "timestamp", s("dtm").and_then(ms_time).as_deref());
    put(&mut m, "sentAt", s("stm").and_then(ms_time).as_deref());
    if !props.is_empty() {
        m.insert("properties".into(), Value::Object(props));
    }
    let mut context = context(p, snowplow);
    if let (Some(c), Value::Object(ctx)) = (consent, &mut context) {
        ctx.insert("consent".into(), c);
    }
    m.insert("context".into(), context);
    Value::Object(m)
}

/// Snowplow's enhanced-consent event (`consent_preferences`) as a consent snapshot, so
/// that it is a consent record (`Consent Updated`): `allow_all` grants every category;
/// `deny_all`, `withdrawn` and `expired` deny them; `allow_selected` and
/// `implicit_consent` grant the categories its `consentScopes` name (by
/// `tracking_plan::consent::consent_id`: `statistics`, `analytics`, `advertisement`, …)
/// and deny the others. `pending` (a banner shown, nothing chosen), or anything else,
/// states nothing: the event stays a track of its own name.
fn consent_preferences(fields: &Value) -> Option<Value> {
    let all = |v: bool| Choice {
        analytics: Some(v),
        marketing: Some(v),
        personalization: Some(v),
    };
    let choice = match fields.get("eventType")?.as_str()? {
        "allow_all" => all(true),
        "deny_all" | "withdrawn" | "expired" => all(false),
        "allow_selected" | "implicit_consent" => {
            let mut c = Choice::default();
            let scopes = fields.get("consentScopes").and_then(Value::as_array);
            for cat in scopes
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(consent_id)
            {
                c.state(cat, true);
            }
            c
        }
        _ => return None,
    };
    let granted = |v: Option<bool>| Value::Bool(v.unwrap_or(false));
    let prefs = serde_json::json!({
        "analytics": granted(choice.analytics),
        "marketing": granted(choice.marketing),
        "personalization": granted(choice.personalization),
    });
    Some(serde_json::json!({ "categoryPreferences": prefs, "source": "snowplow" }))
}

/// What the tracker knows about the page, the browser and its session.
fn context(p: &Map<String, Value>, mut snowplow: Map<String, Value>) -> Value {
    let s = |k: &str| p.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let screen = s("res")
        .and_then(|r| r.split_once('x'))
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?.into(), h.parse::<u32>().ok()?.into())));
    let mut c = crate::foreign::context(&crate::foreign::Client {
        url: s("url"),
        title: s("page"),
        referrer: s("refr"),
        locale: s("lang"),
        timezone: s("tz"),
        user_agent: s("ua"),
        ip: s("ip"),
        screen,
        library: "snowplow",
        version: s("tv"),
        ..Default::default()
    });
    put(&mut snowplow, "sessionId", s("sid"));
    if let Some(v) = s("vid") {
        snowplow.insert("sessionIndex".into(), number(v));
    }
    put(&mut snowplow, "platform", s("p"));
    put(&mut snowplow, "namespace", s("tna"));
    if let Some(Value::Array(contexts)) = self_describing(p, "co", "cx").get("data") {
        snowplow.insert("contexts".into(), Value::Array(contexts.clone()));
    }
    c.insert("snowplow".into(), Value::Object(snowplow));
    Value::Object(c)
}

/// A self-describing JSON the tracker sends as text (`plain`) or as base64 (`encoded`,
/// URL-safe, padded or not); `Null` when neither reads.
fn self_describing(p: &Map<String, Value>, plain: &str, encoded: &str) -> Value {
    if let Some(text) = p.get(plain).and_then(Value::as_str) {
        return serde_json::from_str(text).unwrap_or(Value::Null);
    }
    let Some(b64) = p.get(encoded).and_then(Value::as_str) else {
        return Value::Null;
    };
    let b64 = b64.trim_end_matches('=');
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(b64).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// The name of an Iglu schema URI: `iglu:com.acme/checkout_started/jsonschema/1-0-0` is
/// `checkout_started`.
fn schema_name(schema: &str) -> Option<&str> {
    let path = schema.strip_prefix("iglu:")?;
    let name = path.split('/').nth(1)?;
    (!name.is_empty()).then_some(name)
}

/// Whether `schema` is Snowplow's own (`com.snowplowanalytics.snowplow`) schema `name`.
fn is_snowplow(schema: &str, name: &str) -> bool {
    schema.starts_with("iglu:com.snowplowanalytics.snowplow/") && schema_name(schema) == Some(name)
}

/// Whether a self-describing event is Snowplow's screen view: the mobile trackers'
/// (`com.snowplowanalytics.mobile`) or the older one the JavaScript and server trackers
/// build (`com.snowplowanalytics.snowplow`).
fn is_screen_view(schema: &str) -> bool {
    [
        "iglu:com.snowplowanalytics.mobile/",
        "iglu:com.snowplowanalytics.snowplow/",
    ]
    .iter()
    .any(|vendor| schema.starts_with(vendor))
        && schema_name(schema) == Some("screen_view")
}

/// Milliseconds since the epoch, as the tracker sends them, in RFC 3339.
fn ms_time(v: &str) -> Option<String> {
    v.parse::<i64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(format_rfc3339)
}

/// A number the tracker sent as text, as a JSON number when it is one.
fn number(v: &str) -> Value {
    v.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or_else(|| v.into(), Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(items: Value) -> Value {
        let body = json!({"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
                          "data": items});
        serde_json::from_slice(&to_segment(body.to_string().as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn page_views_structured_and_self_describing_events_read_as_segment_calls() {
        let ue = json!({"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                        "data": {"schema": "iglu:com.acme/product_added/jsonschema/1-0-0",
                                 "data": {"sku": "ETH-GUJI", "price": 14.5}}});
        let co = json!({"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
                        "data": [{"schema": "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0",
                                  "data": {"id": "w1"}}]});
        let b = convert(json!([
            {"e": "pv", "eid": "e1", "aid": "wk", "duid": "d1", "dtm": "1796594207000", "stm": "1796594208000",
             "url": "https://shop.example/p/guji?utm_source=sp#top", "page": "Guji", "refr": "https://ref.example/",
             "res": "1920x1080", "lang": "en-GB", "tz": "Europe/London", "tv": "js-4.10.1", "sid": "s1", "vid": "3",
             "p": "web", "tna": "sp", "co": co.to_string(), "ip": "203.0.113.77"},
            {"e": "se", "eid": "e2", "aid": "wk", "duid": "d1", "uid": "u1", "se_ca": "shop", "se_ac": "add",
             "se_la": "guji", "se_va": "2.5"},
            {"e": "ue", "eid": "e3", "aid": "wk", "nuid": "n1",
             "ue_px": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ue.to_string())},
            {"e": "pp", "eid": "e4", "aid": "wk", "duid": "d1", "pp_may": "400"},
        ]));
        assert_eq!(b["writeKey"], "wk");
        let [pv, se, ue, pp] = [
            &b["batch"][0],
            &b["batch"][1],
            &b["batch"][2],
            &b["batch"][3],
        ];
        assert_eq!(
            (
                pv["type"].as_str(),
                pv["messageId"].as_str(),
                pv["anonymousId"].as_str()
            ),
            (Some("page"), Some("e1"), Some("d1"))
        );
        assert_eq!(pv["timestamp"], "2026-12-06T21:56:47.000Z");
        assert_eq!(pv["sentAt"], "2026-12-06T21:56:48.000Z");
        assert_eq!(pv["context"]["page"]["path"], "/p/guji");
        assert_eq!(pv["context"]["page"]["search"], "?utm_source=sp");
        assert_eq!(
            pv["context"]["screen"],
            json!({"width": 1920, "height": 1080})
        );
        assert_eq!(
            pv["context"]["library"],
            json!({"name": "snowplow", "version": "js-4.10.1"})
        );
        assert_eq!(pv["context"]["snowplow"]["sessionIndex"], 3.0);
        assert_eq!(
            pv["context"]["ip"], "203.0.113.77",
            "where the collector truncates it"
        );
        assert_eq!(pv["context"]["snowplow"]["contexts"][0]["data"]["id"], "w1");
        assert_eq!(
            (
                se["type"].as_str(),
                se["event"].as_str(),
                se["userId"].as_str()
            ),
            (Some("track"), Some("add"), Some("u1"))
        );
        assert_eq!(
            se["properties"],
            json!({"category": "shop", "label": "guji", "value": 2.5})
        );
        assert_eq!(
            (ue["event"].as_str(), ue["anonymousId"].as_str()),
            (Some("product_added"), Some("n1"))
        );
        assert_eq!(ue["properties"], json!({"sku": "ETH-GUJI", "price": 14.5}));
        assert_eq!(
            ue["context"]["snowplow"]["schema"],
            "iglu:com.acme/product_added/jsonschema/1-0-0"
        );
        assert_eq!(
            (pp["event"].as_str(), &pp["properties"]["maxYOffset"]),
            (Some("Page Ping"), &json!(400.0))
        );
    }

    #[test]
    fn snowplow_s_screen_views_are_screen_calls_and_look_alikes_are_not() {
        let ue = |schema: &str| {
            json!({"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                   "data": {"schema": schema, "data": {"name": "Cart", "id": "s-1"}}})
            .to_string()
        };
        let b = convert(json!([
            {"e": "ue", "eid": "m", "aid": "wk", "uid": "u", "ue_pr": ue("iglu:com.snowplowanalytics.mobile/screen_view/jsonschema/1-0-0")},
            {"e": "ue", "eid": "n", "aid": "wk", "uid": "u", "ue_pr": ue("iglu:com.snowplowanalytics.snowplow/screen_view/jsonschema/1-0-0")},
            {"e": "ue", "eid": "o", "aid": "wk", "uid": "u", "ue_pr": ue("iglu:com.acme/screen_view/jsonschema/1-0-0")},
        ]));
        for i in 0..2 {
            let m = &b["batch"][i];
            assert_eq!(
                (&m["type"], &m["name"]),
                (&json!("screen"), &json!("Cart")),
                "{m}"
            );
            assert_eq!(m["properties"], json!({"name": "Cart", "id": "s-1"}));
        }
        let other = &b["batch"][2];
        assert_eq!(
            (&other["type"], &other["event"]),
            (&json!("track"), &json!("screen_view")),
            "another vendor's schema"
        );
    }

    #[test]
    fn enhanced_consent_events_are_consent_records() {
        const SCHEMA: &str =
            "iglu:com.snowplowanalytics.snowplow/consent_preferences/jsonschema/1-0-0";
        let ue = |schema: &str, event_type: &str, scopes: Value| {
            json!({"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                   "data": {"schema": schema, "data": {"eventType": event_type, "consentScopes": scopes,
                     "basisForProcessing": "consent", "consentUrl": "https://s.example/privacy",
                     "consentVersion": "1", "domainsApplied": ["s.example"]}}})
            .to_string()
        };
        let ev = |eid: &str, schema: &str, t: &str, scopes: Value| json!({"e": "ue", "eid": eid, "aid": "wk", "duid": "d", "ue_pr": ue(schema, t, scopes)});
        let b = convert(json!([
            ev(
                "a",
                SCHEMA,
                "allow_selected",
                json!(["necessary", "statistics", "preferences"])
            ),
            ev("b", SCHEMA, "allow_all", json!([])),
            ev("c", SCHEMA, "deny_all", json!(["necessary"])),
            ev("d", SCHEMA, "withdrawn", json!(["analytics"])),
            ev("e", SCHEMA, "pending", json!(["analytics"])),
            ev(
                "f",
                "iglu:com.acme/consent_preferences/jsonschema/1-0-0",
                "allow_all",
                json!([])
            ),
        ]));
        let prefs = |i: usize| b["batch"][i]["context"]["consent"]["categoryPreferences"].clone();
        let cats = |a, m, p| json!({"analytics": a, "marketing": m, "personalization": p});
        for i in 0..4 {
            assert_eq!(
                b["batch"][i]["event"],
                json!(CONSENT_EVENT),
                "{}",
                b["batch"][i]
            );
            assert_eq!(
                b["batch"][i]["context"]["consent"]["source"],
                json!("snowplow")
            );
            assert_eq!(
                b["batch"][i]["properties"]["basisForProcessing"],
                json!("consent")
            );
        }
        assert_eq!(
            prefs(0),
            cats(true, false, true),
            "the scopes it names, the others denied"
        );
        assert_eq!(prefs(1), cats(true, true, true));
        assert_eq!(
            (prefs(2), prefs(3)),
            (cats(false, false, false), cats(false, false, false))
        );
        // Pending states nothing, and another vendor's look-alike is its own event.
        for i in 4..6 {
            let m = &b["batch"][i];
            assert_eq!(m["event"], json!("consent_preferences"), "{m}");
            assert!(m["context"].get("consent").is_none(), "{m}");
        }
    }

    #[test]
    fn what_does_not_read_is_refused_or_kept_for_the_quarantine() {
        for bad in [
            &b"not json"[..],
            br#"{"data": {}}"#,
            br#"{"data": [1]}"#,
            br#"{"data": [{"e": "pv", "aid": "a"}, {"e": "pv", "aid": "b"}]}"#,
            br#"{"data": [{"e": "pv"}, {"e": "pv", "aid": "b"}]}"#,
        ] {
            assert!(to_segment(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // An event type it does not map keeps its parameters under a type no stage knows.
        let b = convert(json!([{"e": "tr", "eid": "t1", "aid": "wk", "tr_id": "o-1"}]));
        assert_eq!(b["batch"][0]["type"], "snowplow:tr");
        assert_eq!(b["batch"][0]["properties"]["tr_id"], "o-1");
        // Unreadable parts are left out, not guessed: no schema, no time, no screen.
        let b = convert(
            json!([{"e": "ue", "eid": "u", "aid": "wk", "ue_px": "%%%", "dtm": "soon", "res": "big"}]),
        );
        let m = &b["batch"][0];
        assert!(m.get("event").is_none() && m.get("timestamp").is_none());
        assert!(m["context"].get("screen").is_none());
        assert_eq!(schema_name("iglu:com.acme//jsonschema/1-0-0"), None);
        assert_eq!(schema_name("com.acme/x/jsonschema/1-0-0"), None);
    }
}
