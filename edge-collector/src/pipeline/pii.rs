//! PII stage: decides nothing new. It runs the shared walker (`tracking_plan::pii`) over
//! a message, or over a value that is not a message, so that nothing kept from here on
//! (quarantine included) holds a raw email or phone number in any field, key or id, nor
//! a credential in an address (the walker applies `tracking_plan::credentials` to every
//! string value it scans).

use serde_json::{Map, Value};
pub use tracking_plan::pii::{scrub_message, Finding, PiiKind, Scrubber};
use tracking_plan::pii::{scrub_message_known_context, scrub_message_with, scrub_value, FieldKind};
use tracking_plan::Message;

/// Scrubs a message in place with the request's scrubber; the findings say where raw
/// values were. When a page URL held one, the path and query beside it are taken again
/// from the clean URL: split from the URL before (a browser's `location.search` of
/// `?e=jo&#64;x.io` is `?e=jo&`), they may hold part of an address that no longer reads
/// as one. `known_context`: the message's context is a copy of one scrubbed already, and
/// these are the findings made in it.
pub fn scrub(
    m: &mut Message,
    sc: &mut Scrubber<'_>,
    known_context: Option<&[Finding]>,
) -> Vec<Finding> {
    let findings = match known_context {
        Some(found) => scrub_message_known_context(m, sc, found),
        None => scrub_message_with(m, sc),
    };
    // A credential's value is redacted in place, in the URL and in the query beside it
    // alike: nothing to take again.
    let held = |at: &str| {
        findings
            .iter()
            .any(|f| f.path == at && f.kind != PiiKind::Credential)
    };
    if held("$.context.page.url") {
        if let Some(Value::Object(c)) = &mut m.context {
            if let Some(Value::Object(page)) = c.get_mut("page") {
                resplit(page);
            }
        }
    }
    if held("$.properties.url") {
        if let Some(Value::Object(props)) = &mut m.properties {
            resplit(props);
        }
    }
    findings
}

/// Sets the `path` and `search` an object has from its (clean) `url`.
fn resplit(page: &mut Map<String, Value>) {
    let Some(url) = page.get("url").and_then(Value::as_str) else {
        return;
    };
    let (path, search) = tracking_plan::campaign::path_and_search(url);
    for (k, v) in [("path", path), ("search", search)] {
        if let Some(slot) = page.get_mut(k) {
            *slot = Value::String(v);
        }
    }
}

/// Scrubs any JSON (an event that is not a valid message) in place.
pub fn scrub_any(v: &mut Value, country: Option<&str>) -> Vec<Finding> {
    let mut out = Vec::new();
    scrub_value(v, "$", FieldKind::Other, country, &mut out);
    out
}
