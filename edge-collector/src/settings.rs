//! What Segment's analytics.js (analytics-next) is told when it loads its project
//! settings from the collector, as it does from `cdn.segment.com` by default: a site
//! points its `cdnURL` at its own origin, and `GET /v1/projects/{writeKey}/settings`
//! answers that every event goes to this collector (`Segment.io` with this host as
//! `apiHost`), with no other destination, no remote plugins and no telemetry. Only a
//! configured write key gets settings. Consent, the plan and identity stay the
//! pipeline's to decide when the events arrive.

use serde_json::{json, Value};

/// The write key of a settings path (`/v1/projects/{writeKey}/settings`).
pub fn write_key_of(path: &str) -> Option<&str> {
    let key = path
        .strip_prefix("/v1/projects/")?
        .trim_end_matches('/')
        .strip_suffix("/settings")?;
    (!key.is_empty() && !key.contains('/')).then_some(key)
}

/// Where analytics.js sends events: the collector's host (with its port) and the base
/// path the settings were asked under, plus `/v1` (it appends `/t`, `/p`, ...).
pub fn api_host(host: &str, port: Option<u16>, base: &str) -> String {
    let base = base.trim_end_matches('/');
    match port {
        Some(p) => format!("{host}:{p}{base}/v1"),
        None => format!("{host}{base}/v1"),
    }
}

/// The settings for a write key: events to `{protocol}://{api_host}/t` and its kin.
pub fn for_analytics_js(write_key: &str, api_host: &str, protocol: &str) -> Value {
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {}
            }
        },
        "plan": {"track": {"__default": {"enabled": true, "integrations": {}}},
                 "identify": {"__default": {"enabled": true}},
                 "group": {"__default": {"enabled": true}}},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_send_everything_here_and_nowhere_else() {
        assert_eq!(
            write_key_of("/v1/projects/sl_dev_key/settings"),
            Some("sl_dev_key")
        );
        assert_eq!(
            write_key_of("/v1/projects/sl_dev_key/settings/"),
            Some("sl_dev_key")
        );
        for bad in [
            "/v1/projects//settings",
            "/v1/projects/a/b/settings",
            "/v1/projects/k",
            "/v1/batch",
        ] {
            assert_eq!(write_key_of(bad), None, "{bad}");
        }
        let s = for_analytics_js("k", "shop.example/data/v1", "https");
        let io = &s["integrations"]["Segment.io"];
        assert_eq!(
            (
                io["apiKey"].as_str(),
                io["apiHost"].as_str(),
                io["protocol"].as_str()
            ),
            (Some("k"), Some("shop.example/data/v1"), Some("https"))
        );
        assert_eq!(
            s["integrations"].as_object().map(|o| o.len()),
            Some(1),
            "no other destination"
        );
        assert_eq!(s["remotePlugins"], json!([]));
        assert_eq!(s["metrics"]["sampleRate"], 0);
        assert_eq!(api_host("shop.example", None, ""), "shop.example/v1");
        assert_eq!(
            api_host("127.0.0.1", Some(8787), "/data/"),
            "127.0.0.1:8787/data/v1"
        );
    }
}
