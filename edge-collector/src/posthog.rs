//! PostHog's capture API: decides how a PostHog library's `POST /e/` (also `/i/v0/e/`,
//! `/batch/` and `/capture/`) payload reads as a Segment batch, so that a site on
//! posthog-js or PostHog's server libraries can point `api_host` at the collector and
//! every other stage (consent, PII, the plan, dedup, identity, storage) applies unchanged.
//!
//! - The body is JSON (`{"api_key", "batch": [...]}`, one event, or a list), gzip
//!   (posthog-js's `gzip-js`), or a form with base64 JSON in `data` (older libraries).
//! - The source is the project token (`api_key`, else each event's `properties.token`):
//!   it is the write key. One request carries one project's events.
//! - `uuid` is the messageId; `$device_id` (else `$anon_distinct_id`) the anonymousId;
//!   `$user_id` the userId, or `distinct_id` when the event names no device (a server
//!   library's events, where it is the site's id of the person; posthog-js writes it in
//!   the properties, posthog-node and posthog-python beside them); `distinct_id` the
//!   anonymousId when the event says its sender is not identified (posthog-js-lite's
//!   before `identify`); an `$identify`'s `distinct_id` its userId; `timestamp` the
//!   timestamp.
//! - `$pageview` is a page call named by the page's title; `$screen` (the mobile
//!   libraries') a screen call named by `$screen_name`; `$identify` and `$set`
//!   identify calls with `$set` as traits, `$set_once` one with `$set_once`;
//!   `$groupidentify` a group call; `$create_alias` an alias call; any other event a
//!   track call of that name. The event's own properties stay its properties; what
//!   PostHog adds (`$`-prefixed, its campaign parameters, the token) goes under
//!   `context.posthog`, and the page, locale, time zone, screen, user agent and library
//!   to their Segment places.

use crate::error::Error;
use crate::foreign::put;
use base64::Engine as _;
use serde_json::{Map, Value};

/// The capture paths PostHog's libraries post to, as they write them (with the slash: a
/// site's own `/batch` page is not one).
pub const PATHS: [&str; 4] = ["/e/", "/i/v0/e/", "/batch/", "/capture/"];

/// Properties posthog-js adds that are not `$`-prefixed: the campaign parameters it
/// copies from the URL into every event (the collector reads them from the page's URL
/// itself) and the project token.
const ADDED: [&str; 27] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "gad_source",
    "mc_cid",
    "gclid",
    "gclsrc",
    "dclid",
    "gbraid",
    "wbraid",
    "fbclid",
    "msclkid",
    "twclid",
    "li_fat_id",
    "igshid",
    "ttclid",
    "rdt_cid",
    "epik",
    "qclid",
    "sccid",
    "oppref",
    "bfcid",
    "irclid",
    "_kx",
    "token",
];

/// A capture request's body as a Segment batch body (`{"writeKey", "batch"}`).
pub fn to_segment(body: &[u8]) -> Result<Vec<u8>, Error> {
    // Decoded from base64 or gzip: read leniently here (`envelope::lenient`).
    let json = crate::pipeline::envelope::lenient(readable(body)?.into());
    let payload: Value = serde_json::from_slice(&json).map_err(|e| crate::error::json_error(&e))?;
    let (mut key, events) = match &payload {
        Value::Array(list) => (None, list.as_slice()),
        Value::Object(o) => match o.get("batch") {
            Some(Value::Array(list)) => (o.get("api_key").and_then(Value::as_str), list.as_slice()),
            Some(_) => return Err(Error::InvalidBody("`batch` is a list of PostHog events")),
            None => (
                o.get("api_key").and_then(Value::as_str),
                std::slice::from_ref(&payload),
            ),
        },
        _ => {
            return Err(Error::InvalidBody(
                "a PostHog payload is an event or a list of them",
            ))
        }
    };
    let mut batch = Vec::with_capacity(events.len());
    for e in events {
        let Value::Object(e) = e else {
            return Err(Error::InvalidBody("each PostHog event is an object"));
        };
        let token = e
            .get("properties")
            .and_then(|p| p.get("token"))
            .and_then(Value::as_str)
            .or_else(|| e.get("api_key").and_then(Value::as_str));
        match (key, token) {
            (Some(k), Some(t)) if k != t => {
                return Err(Error::InvalidBody(
                    "one request carries one project's events",
                ))
            }
            (None, t) => key = t,
            _ => {}
        }
        batch.push(message(e));
    }
    let mut out = Map::new();
    if let Some(k) = key {
        out.insert("writeKey".into(), k.into());
    }
    out.insert("batch".into(), Value::Array(batch));
    serde_json::to_vec(&out).map_err(|_| Error::InvalidBody("unreadable PostHog payload"))
}

/// The JSON text of a body: inflated when gzip, decoded when a `data=` form.
fn readable(body: &[u8]) -> Result<Vec<u8>, Error> {
    if body.starts_with(&[0x1f, 0x8b]) {
        return crate::pipeline::envelope::decode_body(body, Some("gzip")).map(|b| b.into_owned());
    }
    let Some(form) = body.strip_prefix(b"data=") else {
        return Ok(body.to_vec());
    };
    let field = form.split(|b| *b == b'&').next().unwrap_or_default();
    let text = tracking_plan::campaign::decode(&String::from_utf8_lossy(field));
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(text.trim()).ok())
        .ok_or(Error::InvalidBody("`data` is base64 JSON"))
}

/// One PostHog event as a Segment message.
fn message(e: &Map<String, Value>) -> Value {
    let no_props = Map::new();
    let props = match e.get("properties") {
        Some(Value::Object(p)) => p,
        _ => &no_props,
    };
    let s = |k: &str| {
        props
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let name = e.get("event").and_then(Value::as_str).unwrap_or_default();
    let mut m = Map::new();
    let mut own: Map<String, Value> = props
        .iter()
        .filter(|(k, _)| !k.starts_with('$') && !ADDED.contains(&k.as_str()) && *k != "distinct_id")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match name {
        "$pageview" => {
            m.insert("type".into(), "page".into());
            put(&mut m, "name", s("title"));
            own.remove("title");
            put(&mut own, "url", s("$current_url"));
            put(&mut own, "path", s("$pathname"));
            put(&mut own, "title", s("title"));
            put(
                &mut own,
                "referrer",
                s("$referrer").filter(|r| *r != "$direct"),
            );
        }
        "$screen" => {
            // PostHog's mobile libraries' screen views.
            m.insert("type".into(), "screen".into());
            put(&mut m, "name", s("$screen_name"));
        }
        "$identify" | "$set" | "$set_once" => {
            m.insert("type".into(), "identify".into());
            m.insert(
                "traits".into(),
                Value::Object(person_traits(name, e, props)),
            );
        }
        "$groupidentify" => {
            m.insert("type".into(), "group".into());
            put(&mut m, "groupId", s("$group_key"));
            let mut traits = match props.get("$group_set") {
                Some(Value::Object(t)) => t.clone(),
                _ => Map::new(),
            };
            put(&mut traits, "groupType", s("$group_type"));
            m.insert("traits".into(), Value::Object(traits));
        }
        "$create_alias" => {
            m.insert("type".into(), "alias".into());
            put(&mut m, "previousId", s("alias"));
            own.remove("alias");
        }
        _ => {
            m.insert("type".into(), "track".into());
            put(&mut m, "event", Some(name).filter(|n| !n.is_empty()));
        }
    }
    put(&mut m, "messageId", e.get("uuid").and_then(Value::as_str));
    put(
        &mut m,
        "timestamp",
        e.get("timestamp").and_then(Value::as_str),
    );
    // posthog-js's events carry its device id; a server library's only the distinct id,
    // which is then the site's id of the person, unless the event says its sender is not
    // identified (posthog-js-lite names no device: its distinct id is then anonymous).
    // posthog-js writes the distinct id in the properties, the other libraries beside.
    let device = id(props.get("$device_id")).or_else(|| id(props.get("$anon_distinct_id")));
    let distinct = id(e.get("distinct_id")).or_else(|| id(props.get("distinct_id")));
    let unidentified = props.get("$is_identified") == Some(&Value::Bool(false));
    let anon = device.or_else(|| distinct.filter(|_| unidentified));
    let user = match name {
        "$create_alias" => distinct,
        // The id the visitor is identified as, whatever came before.
        "$identify" => id(props.get("$user_id")).or(distinct),
        _ => id(props.get("$user_id")).or_else(|| distinct.filter(|_| anon.is_none())),
    };
    for (key, v) in [("anonymousId", anon), ("userId", user)] {
        if let Some(v) = v {
            m.insert(key.into(), v.clone());
        }
    }
    if !own.is_empty() {
        m.insert("properties".into(), Value::Object(own));
    }
    m.insert("context".into(), context(props));
    Value::Object(m)
}

/// An id as given: a non-empty string, or a number (posthog-node sends a site's numeric
/// id as one), as the Segment spec takes ids.
fn id(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| v.is_number() || v.as_str().is_some_and(|s| !s.is_empty()))
}

/// The person properties an `$identify`, `$set` or `$set_once` event sets, from the
/// event (posthog-python's `set`) or its properties (posthog-js, posthog-node). An
/// `$identify`'s `$set_once` (posthog-js's first-visit facts, sent again and again) is
/// left out; a `$set_once` call's own properties are its traits.
fn person_traits(
    name: &str,
    e: &Map<String, Value>,
    props: &Map<String, Value>,
) -> Map<String, Value> {
    let key = if name == "$set_once" {
        "$set_once"
    } else {
        "$set"
    };
    match e.get(key).or_else(|| props.get(key)) {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    }
}

/// The page, browser and library PostHog describes, in their Segment places; the rest of
/// what it adds under `context.posthog`.
fn context(props: &Map<String, Value>) -> Value {
    let s = |k: &str| {
        props
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let screen = match (props.get("$screen_width"), props.get("$screen_height")) {
        (Some(w), Some(h)) => Some((w.clone(), h.clone())),
        _ => None,
    };
    let mut c = crate::foreign::context(&crate::foreign::Client {
        url: s("$current_url"),
        path: s("$pathname"),
        title: s("title"),
        referrer: s("$referrer").filter(|r| *r != "$direct"),
        locale: s("$browser_language"),
        timezone: s("$timezone"),
        user_agent: s("$raw_user_agent"),
        ip: s("$ip"),
        screen,
        library: match s("$lib") {
            Some("web") | None => "posthog-js",
            Some(other) => other,
        },
        version: s("$lib_version"),
    });
    let posthog: Map<String, Value> = props
        .iter()
        .filter(|(k, v)| (k.starts_with('$') || ADDED.contains(&k.as_str())) && !v.is_null())
        .filter(|(k, _)| !matches!(k.as_str(), "$set" | "$set_once" | "$group_set" | "$ip"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    c.insert("posthog".into(), Value::Object(posthog));
    Value::Object(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(body: Value) -> Value {
        serde_json::from_slice(&to_segment(body.to_string().as_bytes()).unwrap()).unwrap()
    }

    fn props(extra: Value) -> Value {
        let mut p = json!({"distinct_id": "u-1", "$device_id": "dev-1", "$user_id": "u-1", "token": "wk",
            "$current_url": "https://shop.example/p?utm_source=ph#x", "$pathname": "/p",
            "$referrer": "$direct", "$lib": "web", "$lib_version": "1.449.2",
            "$screen_width": 1280, "$screen_height": 720, "utm_source": "ph", "gclid": null,
            "$ip": "203.0.113.77"});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    }

    #[test]
    fn every_call_reads_as_its_segment_kin() {
        let b = convert(json!({"api_key": "wk", "batch": [
            {"uuid": "e1", "event": "$pageview", "timestamp": "2026-12-06T22:27:32.424Z", "properties": props(json!({"title": "Shop"}))},
            {"uuid": "e2", "event": "$identify", "$set": {"plan": "pro"}, "properties": props(json!({"$anon_distinct_id": "dev-1"}))},
            {"uuid": "e3", "event": "$groupidentify", "properties": props(json!({"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}}))},
            {"uuid": "e4", "event": "$create_alias", "properties": props(json!({"alias": "old-id"}))},
            {"uuid": "e5", "event": "Product Added", "properties": props(json!({"price": 14.5, "$user_id": null, "distinct_id": "dev-1"}))},
        ]}));
        assert_eq!(b["writeKey"], "wk");
        let m = |i: usize| &b["batch"][i];
        assert_eq!(
            (
                m(0)["type"].as_str(),
                m(0)["name"].as_str(),
                m(0)["messageId"].as_str()
            ),
            (Some("page"), Some("Shop"), Some("e1"))
        );
        assert_eq!(
            (m(0)["anonymousId"].as_str(), m(0)["userId"].as_str()),
            (Some("dev-1"), Some("u-1"))
        );
        assert_eq!(
            m(0)["properties"],
            json!({"url": "https://shop.example/p?utm_source=ph#x", "path": "/p", "title": "Shop"})
        );
        assert_eq!(m(0)["context"]["page"]["search"], "?utm_source=ph");
        assert_eq!(
            m(0)["context"]["library"],
            json!({"name": "posthog-js", "version": "1.449.2"})
        );
        assert_eq!(m(0)["context"]["posthog"]["utm_source"], "ph");
        assert_eq!(
            m(0)["context"]["ip"],
            "203.0.113.77",
            "where the collector truncates it"
        );
        assert!(m(0)["context"]["posthog"].get("$ip").is_none());
        assert!(
            m(0)["context"]["posthog"].get("gclid").is_none(),
            "nulls are left out"
        );
        assert_eq!(
            (m(1)["type"].as_str(), &m(1)["traits"]),
            (Some("identify"), &json!({"plan": "pro"}))
        );
        assert_eq!(
            (m(2)["type"].as_str(), m(2)["groupId"].as_str()),
            (Some("group"), Some("acme"))
        );
        assert_eq!(
            m(2)["traits"],
            json!({"name": "Acme", "groupType": "company"})
        );
        assert_eq!(
            (
                m(3)["type"].as_str(),
                m(3)["previousId"].as_str(),
                m(3)["userId"].as_str()
            ),
            (Some("alias"), Some("old-id"), Some("u-1"))
        );
        assert_eq!(
            (m(4)["event"].as_str(), &m(4)["properties"]),
            (Some("Product Added"), &json!({"price": 14.5}))
        );
        assert!(m(4).get("userId").is_none());
    }

    /// posthog-node 5 and posthog-python 7 write `distinct_id` beside the properties, and
    /// python's `set` and `set_once` are events of their own with the traits beside them.
    #[test]
    fn server_libraries_name_the_person_beside_the_properties() {
        let lib = json!({"$lib": "posthog-python", "$is_server": true});
        let b = convert(
            json!({"api_key": "wk", "historical_migration": false, "batch": [
                {"uuid": "s1", "event": "Order Completed", "distinct_id": "u-9", "properties": {"total": 3, "$lib": "posthog-node"}},
                {"uuid": "s2", "event": "$identify", "distinct_id": "u-9", "properties": {"$set": {"plan": "pro"}, "$set_once": {"first": "x"}}},
                {"uuid": "s3", "event": "$set", "distinct_id": "u-9", "$set": {"plan": "max"}, "properties": lib},
                {"uuid": "s4", "event": "$set_once", "distinct_id": "u-9", "$set_once": {"first_seen": "2026-01-02"}, "properties": lib},
                {"uuid": "s5", "event": "$create_alias", "distinct_id": "u-9", "properties": {"distinct_id": "u-9", "alias": "old"}},
                {"uuid": "s6", "event": "E", "distinct_id": "", "properties": {"distinct_id": "from-props"}},
                {"uuid": "s7", "event": "E", "distinct_id": 42, "properties": {}},
                {"uuid": "s8", "event": "E", "distinct_id": {"id": 1}, "properties": {"distinct_id": null}},
                {"uuid": "s9", "event": "$screen", "distinct_id": "u-9", "properties": {"$screen_name": "Cart", "items": 2}},
            ]}),
        );
        let m = |i: usize| &b["batch"][i];
        for i in 0..5 {
            assert_eq!(m(i)["userId"], "u-9", "{}", m(i));
            assert!(m(i).get("anonymousId").is_none());
        }
        assert_eq!(m(0)["properties"], json!({"total": 3}));
        assert_eq!(m(0)["context"]["library"]["name"], "posthog-node");
        assert_eq!(
            (&m(1)["type"], &m(1)["traits"]),
            (&json!("identify"), &json!({"plan": "pro"}))
        );
        assert_eq!(
            (&m(2)["type"], &m(2)["traits"]),
            (&json!("identify"), &json!({"plan": "max"}))
        );
        assert_eq!(m(3)["traits"], json!({"first_seen": "2026-01-02"}));
        assert_eq!(m(4)["previousId"], "old");
        assert_eq!(m(5)["userId"], "from-props", "an empty one names no one");
        assert_eq!(m(6)["userId"], 42, "a numeric id, as posthog-node sends it");
        assert!(m(7).get("userId").is_none() && m(7).get("anonymousId").is_none());
        assert_eq!(
            (&m(8)["type"], &m(8)["name"], &m(8)["properties"]),
            (&json!("screen"), &json!("Cart"), &json!({"items": 2})),
            "a mobile library's screen view"
        );
        assert_eq!(m(8)["context"]["posthog"]["$screen_name"], "Cart");
    }

    /// posthog-js-lite names no device: before `identify` its distinct id is an
    /// anonymous one (`$is_identified: false`), and its `$identify` names the new id in
    /// `distinct_id` and the old in `$anon_distinct_id`.
    #[test]
    fn the_lite_library_s_anonymous_and_identified_ids_are_told_apart() {
        let b = convert(json!({"api_key": "wk", "batch": [
            {"uuid": "l1", "event": "E", "distinct_id": "anon-1", "properties": {"$lib": "js", "$is_identified": false}},
            {"uuid": "l2", "event": "$identify", "distinct_id": "u-1", "properties": {"$lib": "js", "$anon_distinct_id": "anon-1", "$set": {"plan": "pro"}}},
            {"uuid": "l3", "event": "E", "distinct_id": "u-1", "properties": {"$lib": "js", "$is_identified": true}},
        ]}));
        let ids = |i: usize| {
            let m = &b["batch"][i];
            (m["anonymousId"].as_str(), m["userId"].as_str())
        };
        assert_eq!(ids(0), (Some("anon-1"), None));
        assert_eq!(ids(1), (Some("anon-1"), Some("u-1")), "stitched");
        assert_eq!(ids(2), (None, Some("u-1")));
    }

    #[test]
    fn single_events_lists_gzip_and_forms_read_alike_and_the_rest_is_refused() {
        let one =
            json!({"event": "E", "uuid": "x", "properties": {"token": "wk", "distinct_id": "d"}});
        let expect = convert(json!([one.clone()]));
        assert_eq!(convert(one.clone()), expect);
        assert_eq!(
            expect["batch"][0]["userId"], "d",
            "no device: the distinct id is the person's"
        );
        assert!(expect["batch"][0].get("anonymousId").is_none());
        let gz = {
            use std::io::Write as _;
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(one.to_string().as_bytes()).unwrap();
            w.finish().unwrap()
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&to_segment(&gz).unwrap()).unwrap(),
            expect
        );
        let form = format!(
            "data={}",
            base64::engine::general_purpose::STANDARD
                .encode(one.to_string())
                .replace('+', "%2B")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&to_segment(form.as_bytes()).unwrap()).unwrap(),
            expect
        );
        for bad in [
            &b"not json"[..],
            b"7",
            br#"{"batch": 3}"#,
            b"[1]",
            b"data=%%%",
            br#"{"api_key": "a", "batch": [{"event": "E", "properties": {"token": "b"}}]}"#,
        ] {
            assert!(to_segment(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
