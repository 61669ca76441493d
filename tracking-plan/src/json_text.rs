//! Raw PII in JSON text: decides what [`crate::pii`]'s walker would replace in a JSON
//! document, working on the text itself. The browser SDK gets an event's properties as
//! the text `JSON.stringify` made and sends text; this scan gives it the collector's
//! exact rules (key renames, named fields in any format, numbers in phone fields) without
//! a JSON tree in the wasm. Everything that is not a replaced string is copied as it came
//! (numbers keep the browser's formatting).
//!
//! Hand-written rather than `serde_json`: parsing into `serde_json::Value`, walking it
//! with `pii::scrub_value` and writing it back made the SDK's wasm 68.7 KB larger (31.4 KB
//! gzip, measured against this scan in the same build), more than the SDK's whole
//! transfer budget; this scan is 2.3 KB of code. It is one pass, with an
//! explicit stack (no recursion, so no depth limit to hit), and the property test in
//! `tests/json_text.rs` holds it equal to `pii::scrub_value` on random documents.

use crate::pii::{field_kind, scrub_field, scrub_string, scrub_text, FieldKind};
use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;

/// The text is not one JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

struct Frame {
    object: bool,
    /// The kind the container's name says (children inherit it).
    kind: FieldKind,
    /// In an object: the next string is a key.
    key_next: bool,
    /// In an object: the kind of the value after the last key.
    value_kind: FieldKind,
}

/// What object keys say, remembered from one scan to the next: a key's scrubbed form
/// (when it holds raw PII) and the kind of field its name gives its value. Both are
/// functions of the key's text and the country alone, and a site's events repeat their
/// keys: in the SDK's 1,000 track calls of five keys each, the keys' scan and kind were
/// 7.2 of 22.9 million instructions of recording (callgrind, natively). Holds up to
/// [`Keys::MAX`] keys of at most [`Keys::MAX_LEN`] bytes, for one country, and starts
/// again when full.
#[derive(Default)]
pub struct Keys(Vec<(String, Option<String>, FieldKind)>);

impl Keys {
    pub const MAX: usize = 64;
    pub const MAX_LEN: usize = 64;

    fn facts(&mut self, key: &str, country: Option<&str>) -> (Option<String>, FieldKind) {
        if let Some((_, found, kind)) = self.0.iter().find(|(k, _, _)| k == key) {
            return (found.clone(), *kind);
        }
        let found = scrub_text(key, country).map(|(c, _)| c);
        let kind = field_kind(found.as_deref().unwrap_or(key));
        if key.len() <= Self::MAX_LEN {
            if self.0.len() == Self::MAX {
                self.0.clear();
            }
            self.0.push((String::from(key), found.clone(), kind));
        }
        (found, kind)
    }
}

/// `text` (one JSON value, whose field name says `field`) with every raw email and
/// phone number in its keys and strings replaced by its digest, or `None` when it holds
/// none. Also re-encodes strings whose lone surrogate escapes (`\ud800`) another JSON
/// parser would refuse (as U+FFFD).
pub fn scrub(
    text: &str,
    field: FieldKind,
    country: Option<&str>,
) -> Result<Option<String>, Malformed> {
    scrub_with(text, field, country, &mut Keys::default())
}

/// [`scrub`], with what `keys` remembers of earlier scans (made for the same country).
pub fn scrub_with(
    text: &str,
    field: FieldKind,
    country: Option<&str>,
    keys: &mut Keys,
) -> Result<Option<String>, Malformed> {
    let b = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    let mut values = 0usize;
    let replace = |out: &mut String, copied: &mut usize, start: usize, end: usize, with: &str| {
        out.push_str(text.get(*copied..start).unwrap_or_default());
        push_str(out, with);
        *copied = end;
    };
    while i < b.len() {
        let c = b[i];
        let kind = match stack.last() {
            Some(f) if f.object => f.value_kind,
            Some(f) => f.kind,
            None => field,
        };
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b':' => i += 1,
            b',' => {
                if let Some(f) = stack.last_mut() {
                    f.key_next = f.object;
                }
                i += 1;
            }
            b'{' | b'[' => {
                stack.push(Frame {
                    object: c == b'{',
                    kind,
                    key_next: c == b'{',
                    value_kind: kind,
                });
                i += 1;
            }
            b'}' | b']' => {
                if stack.pop().map(|f| f.object) != Some(c == b'}') {
                    return Err(Malformed);
                }
                values += usize::from(stack.is_empty());
                i += 1;
            }
            b'"' => {
                let (end, s, clean) = string(text, i)?;
                let found = match stack.last_mut().filter(|f| f.key_next) {
                    Some(f) => {
                        let (found, named) = keys.facts(&s, country);
                        f.key_next = false;
                        f.value_kind = match named {
                            FieldKind::Other => f.kind,
                            named => named,
                        };
                        found
                    }
                    None => scrub_string(kind, &s, country).map(|(c, _)| c),
                };
                match found {
                    Some(new) => replace(&mut out, &mut copied, i, end, &new),
                    None if !clean => replace(&mut out, &mut copied, i, end, &s),
                    None => {}
                }
                values += usize::from(stack.is_empty());
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let end = number_end(b, i);
                let num = text.get(i..end).unwrap_or_default();
                if kind == FieldKind::Phone {
                    if let Some((new, _)) = scrub_field(kind, num, country) {
                        replace(&mut out, &mut copied, i, end, &new);
                    }
                }
                values += usize::from(stack.is_empty());
                i = end;
            }
            b't' | b'f' | b'n' => {
                let word: &[u8] = match c {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if !b[i..].starts_with(word) {
                    return Err(Malformed);
                }
                values += usize::from(stack.is_empty());
                i += word.len();
            }
            _ => return Err(Malformed),
        }
    }
    if !stack.is_empty() || values != 1 {
        return Err(Malformed);
    }
    if copied == 0 {
        return Ok(None);
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Ok(Some(out))
}

/// Whether the JSON object `text` has `key` among its own (top-level) keys.
pub fn has_key(text: &str, key: &str) -> bool {
    let b = text.as_bytes();
    let (mut depth, mut key_next, mut i) = (0usize, false, 0);
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => {
                depth += 1;
                key_next = depth == 1 && b[i] == b'{';
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => key_next = depth == 1,
            b'"' => {
                let Ok((end, s, _)) = string(text, i) else {
                    return false;
                };
                if key_next && s == key {
                    return true;
                }
                key_next = false;
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// The JSON string starting at `start` (its opening quote): where it ends (after the
/// closing quote), its value, and whether its text can be kept as it is.
fn string(text: &str, start: usize) -> Result<(usize, Cow<'_, str>, bool), Malformed> {
    let b = text.as_bytes();
    let body = start + 1;
    let mut i = body;
    while i < b.len() && b[i] != b'"' && b[i] != b'\\' {
        i += 1;
    }
    if b.get(i) == Some(&b'"') {
        let s = text.get(body..i).ok_or(Malformed)?;
        return Ok((i + 1, Cow::Borrowed(s), true));
    }
    let mut s = String::from(text.get(body..i).ok_or(Malformed)?);
    let mut clean = true;
    loop {
        match b.get(i) {
            None => return Err(Malformed),
            Some(b'"') => return Ok((i + 1, Cow::Owned(s), clean)),
            Some(b'\\') => {
                let e = *b.get(i + 1).ok_or(Malformed)?;
                i += 2;
                let ch = match e {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let (ch, used, ok) = unicode(b, i)?;
                        clean &= ok;
                        i += used;
                        ch
                    }
                    _ => return Err(Malformed),
                };
                s.push(ch);
            }
            Some(_) => {
                let from = i;
                while i < b.len() && b[i] != b'"' && b[i] != b'\\' {
                    i += 1;
                }
                s.push_str(text.get(from..i).ok_or(Malformed)?);
            }
        }
    }
}

/// `text` (JSON) with each lone surrogate escape (`\ud800`: a high surrogate not
/// followed by a low one, or a low one alone) written `\ufffd`, or `None` when it has
/// none. JavaScript's `JSON.stringify` writes a string cut inside a surrogate pair (a
/// title sliced through an emoji) that way, and serde_json refuses it; the SDK, and the
/// browsers' `TextEncoder`, read it as U+FFFD, and so does the collector with this.
/// Escaped backslashes (`\\ud800`) are text and stay; anything malformed is left for the
/// JSON reader to name.
pub fn replace_lone_surrogates(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        // After an escape of something not ASCII (malformed), `i` may fall inside a
        // character: moved on to the next boundary.
        let Some(rest) = text.get(i..) else {
            i += 1;
            continue;
        };
        let Some(n) = rest.find('\\') else { break };
        i += n;
        if b.get(i + 1) != Some(&b'u') {
            i += 2; // any other escape, `\\` included
            continue;
        }
        match unicode(b, i + 2) {
            Ok((_, used, true)) => i += 2 + used,
            Ok((_, used, false)) => {
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(text.get(copied..i)?);
                o.push_str("\\ufffd");
                i += 2 + used;
                copied = i;
            }
            Err(Malformed) => i += 2,
        }
    }
    let mut o = out?;
    o.push_str(text.get(copied..)?);
    Some(o)
}

/// `text` (JSON, as Python's `json.dumps` writes it by default) with each bare `NaN`,
/// `Infinity` and `-Infinity` outside strings written `null`, as JavaScript's
/// `JSON.stringify` writes a number that is not finite; `None` when it has none. JSON
/// has no such numbers and serde_json refuses them, so a Python library's batch with one
/// (a property divided by zero) would be refused whole. Strings are stepped over (read
/// by `string`); a malformed one ends the scan (the JSON reader names it).
pub fn replace_non_finite(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        let len = match b[i] {
            b'"' => {
                i = string(text, i).ok()?.0;
                continue;
            }
            b'N' if b[i..].starts_with(b"NaN") => 3,
            b'I' if b[i..].starts_with(b"Infinity") => 8,
            b'-' if b[i..].starts_with(b"-Infinity") => 9,
            _ => {
                i += 1;
                continue;
            }
        };
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(text.get(copied..i)?);
        o.push_str("null");
        i += len;
        copied = i;
    }
    let mut o = out?;
    o.push_str(text.get(copied..)?);
    Some(o)
}

/// `text` (JSON) with each number too large for a double (`1e999`, `-2E+400`, or 400
/// digits) outside strings written `null`, as a browser's `JSON.parse` reads it
/// (`Infinity`) and `JSON.stringify` writes it again; `None` when it has none. serde_json
/// refuses such a number, and with it the whole message. Strings are stepped over (read
/// by `string`); a malformed one ends the scan.
pub fn replace_overflowing_numbers(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'"' {
            i = string(text, i).ok()?.0;
            continue;
        }
        if !(b[i].is_ascii_digit() || b[i] == b'-') {
            i += 1;
            continue;
        }
        let start = i;
        i = number_end(b, i);
        let number = text.get(start..i)?;
        if json_number(number) && number.parse::<f64>().is_ok_and(f64::is_infinite) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(text.get(copied..start)?);
            o.push_str("null");
            copied = i;
        }
    }
    let mut o = out?;
    o.push_str(text.get(copied..)?);
    Some(o)
}

/// Where the number token starting at `b[i]` ends: the bytes a JSON number is made of
/// (checked for its syntax by [`json_number`] where that matters).
fn number_end(b: &[u8], i: usize) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    i + rest
        .iter()
        .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(rest.len())
}

/// Whether `t` is a number as JSON writes one: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`
/// (Rust's float parser takes more: `01`, `1.`, `+1`).
fn json_number(t: &str) -> bool {
    let b = t.strip_prefix('-').unwrap_or(t).as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int = digits(0);
    if int == 0 || (b[0] == b'0' && int > 1) {
        return false;
    }
    let mut i = int;
    if b.get(i) == Some(&b'.') {
        let frac = digits(i + 1);
        if frac == 0 {
            return false;
        }
        i += 1 + frac;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = digits(i);
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// A `\u` escape's character (its four hex digits at `at`, and a low surrogate's escape
/// after a high one): the character, the bytes used, and false for a lone surrogate
/// (read as U+FFFD).
fn unicode(b: &[u8], at: usize) -> Result<(char, usize, bool), Malformed> {
    let hex = |at: usize| -> Result<u32, Malformed> {
        let digits = b.get(at..at + 4).ok_or(Malformed)?;
        digits.iter().try_fold(0u32, |n, d| {
            let v = (*d as char).to_digit(16).ok_or(Malformed)?;
            Ok(n * 16 + v)
        })
    };
    let hi = hex(at)?;
    if !(0xd800..0xe000).contains(&hi) {
        return Ok((char::from_u32(hi).unwrap_or('\u{fffd}'), 4, true));
    }
    if hi < 0xdc00 && b.get(at + 4..at + 6) == Some(b"\\u") {
        let lo = hex(at + 6)?;
        if (0xdc00..0xe000).contains(&lo) {
            let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
            return Ok((char::from_u32(c).unwrap_or('\u{fffd}'), 10, true));
        }
    }
    Ok(('\u{fffd}', 4, false))
}

/// Appends `s` as a JSON string (quoted and escaped).
pub fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    // Most strings need no escape: copied whole after one test per byte.
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut from = 0;
    for (i, c) in s.bytes().enumerate() {
        let esc = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(s.get(from..i).unwrap_or_default());
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        } else {
            out.push_str(esc);
        }
        from = i + 1;
    }
    out.push_str(s.get(from..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str) -> Option<String> {
        scrub(t, FieldKind::Other, Some("DE")).expect("valid JSON")
    }

    #[test]
    fn keeps_clean_text_and_replaces_in_place() {
        assert_eq!(run(r#"{"a":1,"b":[true,null,"x"],"c":{"d":-1.5e3}}"#), None);
        let out = run(r#"{ "note" : "mail ann@example.com" , "n": 2 }"#).expect("a change");
        assert!(out.starts_with(r#"{ "note" : "mail "#) && out.ends_with(r#"" , "n": 2 }"#));
        assert!(!out.contains("ann@"));
        let phone = run(r#"{"user":{"mobile":3012345678,"id":3012345678}}"#).expect("phone");
        assert!(phone.contains(r#""id":3012345678"#), "{phone}");
        assert!(!phone.contains(r#""mobile":3012345678"#), "{phone}");
        let key = run(r#"{"bob@example.org":1}"#).expect("key");
        assert!(!key.contains("bob@"));
    }

    #[test]
    fn escapes_and_surrogates() {
        assert_eq!(run(r#"["a\"b\\c\u00e9\ud83d\ude00"]"#), None);
        assert_eq!(run(r#"["x\ud800y"]"#).as_deref(), Some("[\"x\u{fffd}y\"]"));
        let esc = run(r#"{"e":"ann\u0040example.com"}"#).expect("escaped @");
        assert!(!esc.contains("ann"));
    }

    #[test]
    fn refuses_what_is_not_one_value() {
        for bad in [
            "",
            "{",
            "[}",
            r#"{"a":"#,
            "tru",
            r#""abc"#,
            "1 2",
            r#"{"a":"\q"}"#,
            "[]]",
        ] {
            assert_eq!(scrub(bad, FieldKind::Other, None), Err(Malformed), "{bad}");
        }
        assert_eq!(scrub("\"x\"", FieldKind::Other, None), Ok(None));
    }

    #[test]
    fn top_level_keys_only() {
        let t = r#"{"a":{"path":1},"b":"path","c\"":[{"path":2}],"path":3}"#;
        assert!(has_key(t, "path") && has_key(t, "a") && has_key(t, "c\""));
        assert!(!has_key(r#"{"a":{"path":1},"b":"path"}"#, "path"));
        assert!(!has_key("{", "a") && !has_key("", "a"));
    }

    #[test]
    fn push_str_escapes_what_json_needs() {
        let mut s = String::new();
        push_str(&mut s, "a\"\\\n\u{1}é");
        assert_eq!(s, "\"a\\\"\\\\\\n\\u0001é\"");
    }
}
