//! JSON text building: decides how strings are quoted in the events the SDK writes.
//!
//! Hand-written instead of serde_json: the SDK only ever writes JSON (properties and
//! traits arrive as text from the page's own `JSON.stringify`), and serde_json's `Value`
//! with its formatter is about 30 KB of the browser download.

use alloc::string::String;

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s); // the common case: nothing to escape
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `"key":"value"` (with a leading comma unless `first`).
pub fn field_str(out: &mut String, key: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    push_str(out, key);
    out.push(':');
    push_str(out, value);
}

/// `"key":<raw JSON>`.
pub fn field_raw(out: &mut String, key: &str, raw: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    push_str(out, key);
    out.push(':');
    out.push_str(raw);
}

/// Whether `s` is a JSON object's text as `JSON.stringify` makes it (a cheap shape check:
/// the page gives the text, the SDK embeds it as it is).
pub fn is_object(s: &str) -> bool {
    let t = s.trim();
    t.starts_with('{') && t.ends_with('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_json() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let mut o = String::from("{");
        field_str(&mut o, "k", "v");
        field_raw(&mut o, "n", "1");
        o.push('}');
        assert_eq!(o, r#"{"k":"v","n":1}"#);
    }
}
