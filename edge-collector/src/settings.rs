//! What client libraries are told when they load their configuration from the
//! collector instead of their vendor's servers. Segment's analytics.js (analytics-next)
//! loads its project settings from `cdn.segment.com` by default: a site points its
//! `cdnURL` at its own origin, and `GET /v1/projects/{writeKey}/settings` answers that
//! every event goes to this collector (`Segment.io` with this host as `apiHost`), with no
//! other destination, no remote plugins and no telemetry. RudderStack's browser SDK
//! loads its source config from `api.rudderstack.com/sourceConfig`: a site points its
//! `configUrl` here, and `GET /sourceConfig` answers an enabled source with no
//! device-mode destination and no error or metrics reporting (its events go to its
//! `dataPlaneUrl`). posthog-js loads its remote config from its `api_host`
//! (`/array/{token}/config.js`, else `/array/{token}/config`) and asks for its feature
//! flags (`POST /flags/`, `/decide/` before): a site whose `api_host` is the collector is
//! told there are no flags, and that session recording, heatmaps and the other features
//! whose data the collector does not take are off. Only a configured write key
//! gets a configuration (the flags' answer, which says nothing of any source, is
//! anyone's). Consent, the plan and identity stay the pipeline's to decide when the
//! events arrive.

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

/// The write key of a source-config request: HTTP Basic auth (as RudderStack's SDK
/// sends it), else `writeKey` in the URL's query.
pub fn source_config_key(authorization: Option<&str>, url_key: Option<&str>) -> Option<String> {
    crate::pipeline::envelope::write_key(authorization, &[url_key]).ok()
}

/// RudderStack's source config for a write key: enabled, no device-mode destinations
/// (nothing loaded from RudderStack's CDN), no error or metrics reports to RudderStack.
pub fn for_rudderstack(write_key: &str) -> Value {
    json!({
        "isHosted": false,
        "source": {
            "id": "sightline",
            "name": "sightline",
            "writeKey": write_key,
            "workspaceId": "sightline",
            "enabled": true,
            "config": {"statsCollection": {"errors": {"enabled": false},
                                           "metrics": {"enabled": false}}},
            "destinations": []
        }
    })
}

/// The token of a posthog-js remote-config path, and whether it asks for the script
/// (`/array/{token}/config.js`) rather than the JSON (`/array/{token}/config`).
pub fn posthog_config_token(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/array/")?;
    let (token, script) = match rest.strip_suffix("/config.js") {
        Some(t) => (t, true),
        None => (rest.strip_suffix("/config")?, false),
    };
    (!token.is_empty() && !token.contains('/')).then_some((token, script))
}

/// posthog-js's remote config for a token: no feature flags, and off what sends data
/// the collector does not take (recordings, heatmaps, dead clicks, web vitals,
/// exceptions, site apps). `surveys` is left out: posthog-js 1.449 loads its surveys
/// script for any value given, `false` included (the e2e test saw it asked for), and
/// none when there is none. Autocapture stays the site's own setting.
pub fn for_posthog(token: &str) -> Value {
    with_posthog_switches(json!({"token": token, "hasFeatureFlags": false}))
}

/// `answer` with the switches of what posthog-js may not turn on here.
fn with_posthog_switches(mut answer: Value) -> Value {
    if let Value::Object(o) = &mut answer {
        for off in [
            "sessionRecording",
            "heatmaps",
            "captureDeadClicks",
            "capturePerformance",
            "autocaptureExceptions",
        ] {
            o.insert(off.into(), Value::Bool(false));
        }
        o.insert("defaultIdentifiedOnly".into(), Value::Bool(true));
        o.insert("siteApps".into(), json!([]));
    }
    answer
}

/// The same as the script posthog-js loads first: it sets the config where the library
/// reads it (`window._POSTHOG_REMOTE_CONFIG[token]`). The token is written as a JSON
/// string, so no text of it runs.
pub fn for_posthog_script(token: &str) -> String {
    let entry = json!({"config": for_posthog(token), "siteApps": []});
    let key = Value::String(token.to_string());
    format!(
        "(function(){{var c=window._POSTHOG_REMOTE_CONFIG=window._POSTHOG_REMOTE_CONFIG||{{}};c[{key}]={entry};}})();"
    )
}

/// Whether a path is posthog-js's feature-flag request (`/flags/`, and `/decide/` of
/// older versions).
pub fn is_posthog_flags(path: &str) -> bool {
    matches!(path.trim_end_matches('/'), "/flags" | "/decide")
}

/// The answer to a feature-flag request: none, and no error (the library then runs
/// without flags, and does not retry), with the remote config's switches (older
/// versions read them here).
pub fn posthog_flags() -> Value {
    with_posthog_switches(json!({
        "flags": {},
        "featureFlags": {},
        "featureFlagPayloads": {},
        "errorsWhileComputingFlags": false
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posthog_is_told_there_are_no_flags_and_nothing_to_record() {
        assert_eq!(
            posthog_config_token("/array/sl_dev_key/config.js"),
            Some(("sl_dev_key", true))
        );
        assert_eq!(
            posthog_config_token("/array/sl_dev_key/config"),
            Some(("sl_dev_key", false))
        );
        for bad in ["/array//config", "/array/a/b/config", "/array/k", "/e/"] {
            assert_eq!(posthog_config_token(bad), None, "{bad}");
        }
        let c = for_posthog("k");
        assert_eq!(c["hasFeatureFlags"], false);
        assert_eq!(c["sessionRecording"], false);
        // A token that is not a plain word stays a string in the script.
        let script = for_posthog_script("k\"];alert(1);//</script>");
        assert!(
            script.contains(r#"c["k\"];alert(1);//</script>"]="#),
            "{script}"
        );
        assert!(is_posthog_flags("/flags/") && is_posthog_flags("/decide"));
        assert!(!is_posthog_flags("/flagship"));
        assert_eq!(posthog_flags()["flags"], json!({}));
    }

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

    #[test]
    fn rudderstack_gets_an_enabled_source_with_nothing_else_to_load_or_report() {
        let c = for_rudderstack("k");
        assert_eq!(c["source"]["enabled"], true);
        assert_eq!(c["source"]["writeKey"], "k");
        assert_eq!(c["source"]["destinations"], json!([]));
        let stats = &c["source"]["config"]["statsCollection"];
        assert_eq!(
            (&stats["errors"]["enabled"], &stats["metrics"]["enabled"]),
            (&json!(false), &json!(false))
        );
        // Basic auth (`base64("k:")`) first, then the query; neither is no key.
        assert_eq!(
            source_config_key(Some("Basic azo="), Some("q")).as_deref(),
            Some("k")
        );
        assert_eq!(source_config_key(None, Some("q")).as_deref(), Some("q"));
        assert_eq!(source_config_key(None, None), None);
        assert_eq!(source_config_key(None, Some("")), None);
        assert_eq!(
            source_config_key(Some("Bearer x"), Some("q")),
            None,
            "a malformed header is no key"
        );
    }
}
