//! PII stage: decides nothing new. It runs the shared walker (`tracking_plan::pii`) over
//! a message, or over a value that is not a message, so that nothing kept from here on
//! (quarantine included) holds a raw email or phone number in any field, key or id.

use serde_json::Value;
pub use tracking_plan::pii::{scrub_message, Finding, Scrubber};
use tracking_plan::pii::{scrub_message_with, scrub_value, FieldKind};
use tracking_plan::Message;

/// Scrubs a message in place with the request's scrubber; the findings say where raw
/// values were.
pub fn scrub(m: &mut Message, sc: &mut Scrubber<'_>) -> Vec<Finding> {
    scrub_message_with(m, sc)
}

/// Scrubs any JSON (an event that is not a valid message) in place.
pub fn scrub_any(v: &mut Value, country: Option<&str>) -> Vec<Finding> {
    let mut out = Vec::new();
    scrub_value(v, "$", FieldKind::Other, country, &mut out);
    out
}
