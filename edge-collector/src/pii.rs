//! Raw PII handling: decides where an event carries a raw email address or phone number
//! and replaces each with the SHA-256 of its normalized form (`redact_str` of the shared
//! `tracking-plan`, the same code the SDK runs on properties and traits before they leave
//! the page), so no raw value is ever stored. Whether the
//! event is then accepted or quarantined is the plan's `rawPii` policy, decided by the
//! pipeline; the stored copy is hashed either way.

use serde_json::Value;
pub use tracking_plan::identifiers::redact_str;
use tracking_plan::identifiers::PiiKind;

/// A raw value that was hashed, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub kind: PiiKind,
}

/// Hashes every raw email and phone in the strings of `v` in place and reports their
/// JSON paths. The path is kept in one growing buffer, so clean values cost no
/// allocation.
pub fn redact_value(v: &mut Value, path: &str, country: Option<&str>, out: &mut Vec<Finding>) {
    let mut buf = path.to_string();
    walk(v, &mut buf, country, out);
}

fn walk(v: &mut Value, path: &mut String, country: Option<&str>, out: &mut Vec<Finding>) {
    use std::fmt::Write as _;
    match v {
        Value::String(s) => {
            if let Some((hashed, kind)) = redact_str(s, country) {
                *s = hashed;
                out.push(Finding {
                    path: path.clone(),
                    kind,
                });
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if needs_walk(item) {
                    let len = path.len();
                    let _ = write!(path, "[{i}]");
                    walk(item, path, country, out);
                    path.truncate(len);
                }
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if needs_walk(item) {
                    let len = path.len();
                    tracking_plan::plan::push_child(path, k);
                    walk(item, path, country, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

/// Whether a value may hold a string at all (numbers and booleans cannot be PII here:
/// bare digit runs are order ids and timestamps more often than phones).
fn needs_walk(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Array(_) | Value::Object(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tracking_plan::identifiers::sha256_hex;

    #[test]
    fn whole_values_become_the_shared_digest() {
        let (h, k) = redact_str(" John_Smith@Gmail.com ", None).unwrap();
        assert_eq!(k, PiiKind::Email);
        assert_eq!(
            h,
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
        );
        let (h, k) = redact_str("+1 (650) 555-1212", None).unwrap();
        assert_eq!(k, PiiKind::Phone);
        assert_eq!(
            h,
            "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"
        );
        // A national number takes the visitor's country.
        let (h, _) = redact_str("(650) 555-1212", Some("US")).unwrap();
        assert_eq!(h, sha256_hex("+16505551212"));
    }

    #[test]
    fn values_inside_text_are_replaced_in_place() {
        let (s, _) = redact_str(
            "https://shop.example/?email=jo@x.io&ref=a, call +44 20 7946 0958 now",
            None,
        )
        .unwrap();
        assert!(!s.contains("jo@x.io") && !s.contains("7946"), "{s}");
        assert!(s.starts_with("https://shop.example/?email="));
        assert!(s.contains(&sha256_hex("jo@x.io")));
        assert!(s.contains(&sha256_hex("+442079460958")));
        assert!(s.ends_with(" now"));
    }

    #[test]
    fn clean_values_and_digests_are_left_alone() {
        for v in [
            "hello",
            "order 12345678",
            "2026-11-23",
            &sha256_hex("a@b.co"),
        ] {
            assert_eq!(redact_str(v, None), None, "{v}");
        }
    }

    #[test]
    fn walks_json_and_reports_paths() {
        let mut v = json!({"a": [1, {"mail": "Ann@Example.com"}], "n": 5, "t": "fine"});
        let mut out = Vec::new();
        redact_value(&mut v, "$.properties", None, &mut out);
        assert_eq!(
            out,
            vec![Finding {
                path: "$.properties.a[1].mail".into(),
                kind: PiiKind::Email
            }]
        );
        assert_eq!(v["a"][1]["mail"], json!(sha256_hex("ann@example.com")));
        assert_eq!(v["t"], json!("fine"));
    }
}
