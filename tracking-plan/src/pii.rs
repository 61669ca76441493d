//! Raw PII: decides where a message carries a raw email address or phone number, in any
//! string value, object key, id, URL component or encoding, and what replaces it (the
//! SHA-256 of its normalized form, so the digest still matches the visitor's soft login).
//! The one walker both the browser SDK and the collector run.
//!
//! What counts:
//! - an email anywhere in a string, also percent-encoded (`jo%40x.io`, `%2540`) or form
//!   encoded, in a URL component or in free text;
//! - a phone number in international form anywhere (`+33 6 12 34 56 78`), a whole
//!   value that is a grouped national number (`650 555 0142`), and inside text a
//!   national number written as one (`call (650) 555-0142`, `06 12 34 56 78`);
//! - any value of a field whose name says what it holds (`email`, `userEmail`, `phone`,
//!   `mobile`, `tel`, ...) in any format: `650.555.0142`, `6505550143`, the number
//!   6505550143, `JO (at) x.io` is not guessed, but anything with an `@` is;
//! - object keys, the event name, page name and category, ids (`messageId`,
//!   `anonymousId`, `userId`, `previousId`, `groupId`) and timestamps. An id that is an
//!   email or phone becomes its bare digest;
//! - behind the encodings a value can take on its way: HTML character references
//!   (`&#64;`, `&#x40;`, `&commat;`), `\u0040` and `\x40` escapes left in text,
//!   fullwidth and small forms (`＠`, `﹫`, fullwidth digits), and base64 (standard or
//!   URL-safe, padded or not) or hex runs whose decoded text holds one. A decoded run is
//!   written back in its own encoding with the digest inside; folded text is kept
//!   folded.
//!
//! Linear in the input: each scan visits a byte a bounded number of times (an email's
//! local part is looked for at most 64 bytes back from its `@`; phone runs end at the
//! next `+`; a national number is looked for at most 24 bytes from a word's start), and
//! a string is decoded only in the components that hold `%` or `+`.

pub use crate::identifiers::PiiKind;
use crate::identifiers::{
    ascii_digit, is_sha256_hex, looks_like_phone, normalize_email, normalize_phone,
    phone_separator, sha256_hex, EmailVariant,
};
use alloc::string::String;
use alloc::vec::Vec;

/// What a field's name says its value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Email,
    Phone,
    Other,
}

const EMAIL_WORDS: &[&str] = &["email", "mail", "emailaddress", "mailaddress", "courriel"];
const PHONE_WORDS: &[&str] = &[
    "phone",
    "phonenumber",
    "mobile",
    "mobilephone",
    "mobilenumber",
    "tel",
    "telephone",
    "telefon",
    "telefono",
    "cell",
    "cellphone",
    "msisdn",
    "fax",
    "sms",
    "whatsapp",
];
/// Words that mark a field holding a digest of the value, not the value.
const DIGEST_WORDS: &[&str] = &["sha256", "sha", "sha1", "md5", "hash", "hashed", "digest"];

/// The words of a key: split at non-alphanumerics and at lower-to-upper case changes
/// (`userEmail`, `user_email`, `user-email` all give `user`, `email`).
fn words(key: &str) -> impl Iterator<Item = &str> {
    let b = key.as_bytes();
    let mut i = 0;
    core::iter::from_fn(move || {
        while i < b.len() && !b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        i += 1;
        while i < b.len()
            && b[i].is_ascii_alphanumeric()
            && !(b[i].is_ascii_uppercase() && b[i - 1].is_ascii_lowercase())
        {
            i += 1;
        }
        key.get(start..i)
    })
}

/// What a field named `key` holds, by its words.
pub fn field_kind(key: &str) -> FieldKind {
    let mut kind = FieldKind::Other;
    for w in words(key) {
        // Every listed word starts with one of these letters: most keys stop here.
        let first = w.as_bytes().first().map_or(0, u8::to_ascii_lowercase);
        if !b"cdefhmpstw".contains(&first) {
            continue;
        }
        let is = |list: &[&str]| list.iter().any(|x| x.eq_ignore_ascii_case(w));
        if is(DIGEST_WORDS) {
            return FieldKind::Other;
        }
        if is(EMAIL_WORDS) {
            kind = FieldKind::Email;
        } else if is(PHONE_WORDS) && kind == FieldKind::Other {
            kind = FieldKind::Phone;
        }
    }
    kind
}

/// A raw value found in a string: byte range and kind.
#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    kind: PiiKind,
}

/// Bytes of an email's local part when found inside text (non-ASCII bytes count: UTF-8
/// continuation bytes are all >= 0x80, so ranges stay on character boundaries).
fn local_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b"!$%*+^_~.-".contains(&b)
}

fn domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b == b'-' || b == b'.'
}

fn phone_byte(b: u8) -> bool {
    b.is_ascii_digit() || b" -.()".contains(&b)
}

/// Every email in `s`, in order, in one pass.
fn email_hits(s: &str, out: &mut Vec<Hit>) {
    let b = s.as_bytes();
    let mut floor = 0;
    for at in memchr_all(b, b'@') {
        let mut start = at;
        while start > floor && at - start < 64 && local_byte(b[start - 1]) {
            start -= 1;
        }
        while start < at && (!s.is_char_boundary(start) || b[start] == b'.') {
            start += 1;
        }
        let mut end = at + 1;
        while end < b.len() && end - at <= 253 && domain_byte(b[end]) {
            end += 1;
        }
        while end > at + 1 && (b[end - 1] == b'.' || !s.is_char_boundary(end)) {
            end -= 1;
        }
        let Some(candidate) = s.get(start..end) else {
            continue;
        };
        // A digest before an `@` is what an earlier replacement left, not an address.
        let local = s.get(start..at).unwrap_or_default();
        let quoted = quoted_local(b, floor, at).filter(|_| start == at);
        if let Some(q) = quoted.filter(|_| valid_domain(s.get(at + 1..end))) {
            out.push(Hit {
                start: q,
                end,
                kind: PiiKind::Email,
            });
            floor = end;
        } else if start < at
            && !is_sha256_hex(local)
            && normalize_email(candidate, EmailVariant::Standard).is_ok()
        {
            out.push(Hit {
                start,
                end,
                kind: PiiKind::Email,
            });
            floor = end;
        }
    }
}

/// Where a quoted local part (`"john doe"@example.com`, RFC 5321) that ends just before
/// the `@` at `at` opens: printable ASCII between two quotes, at most 64 bytes, after
/// `floor`.
fn quoted_local(b: &[u8], floor: usize, at: usize) -> Option<usize> {
    if at < floor + 3 || b[at - 1] != b'"' {
        return None;
    }
    let mut i = at - 2;
    while i > floor && at - i <= 66 {
        match b[i] {
            b'"' if i + 2 < at => return Some(i),
            0x20..=0x7e if b[i] != b'"' && b[i] != b'\\' => i -= 1,
            _ => return None,
        }
    }
    (b[floor] == b'"' && floor + 2 < at && at - floor <= 66).then_some(floor)
}

/// Whether `domain` is an address's domain (as [`normalize_email`] checks it).
fn valid_domain(domain: Option<&str>) -> bool {
    let Some(d) = domain.filter(|d| d.len() < 250) else {
        return false;
    };
    let mut probe = String::from("x@");
    probe.push_str(d);
    normalize_email(&probe, EmailVariant::Standard).is_ok()
}

fn memchr_all(b: &[u8], needle: u8) -> impl Iterator<Item = usize> + '_ {
    b.iter()
        .enumerate()
        .filter(move |(_, c)| **c == needle)
        .map(|(i, _)| i)
}

/// Where a number in international form may start: a `+`, or at the start of a word
/// the prefix `00` and a country code's first digit (`call 0033 6 12 34 56 78`); the
/// digits after it, and whether they must be grouped to count.
fn phone_anchor(b: &[u8], i: usize) -> Option<(usize, bool)> {
    match b.get(i..i + 3)? {
        [b'+', ..] => Some((i + 1, false)),
        [b'0', b'0', b'1'..=b'9'] => {
            let word_start =
                i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b"+-.".contains(&b[i - 1]));
            // Ungrouped, `00` and digits are as often an order or account number.
            word_start.then_some((i + 2, true))
        }
        _ => None,
    }
}

/// Every phone number in international form (`+` or `00`, then 8 to 15 digits, grouped
/// by spaces, dashes, dots or parentheses), in one pass: a run ends at the next `+`, and
/// at the start of an email found there (`+33 6 12 34 56 78x@y.io` holds a number and
/// an address; read as one run it had too many digits and the number was left in
/// place). `out` holds the emails, in order, when this is called.
fn phone_hits(s: &str, out: &mut Vec<Hit>) {
    let b = s.as_bytes();
    let (emails, mut next) = (out.len(), 0);
    let mut from = 0;
    for plus in 0..b.len() {
        if plus < from {
            continue;
        }
        let Some((first, grouped)) = phone_anchor(b, plus) else {
            continue;
        };
        while next < emails && out[next].start <= plus {
            next += 1;
        }
        let limit = if next < emails {
            out[next].start
        } else {
            b.len()
        };
        let mut end = first;
        while end < limit && phone_byte(b[end]) {
            end += 1;
        }
        // Anchors inside a scanned run are not read again: linear.
        from = end;
        end = before_digest(s, first, end);
        end = balanced_end(b, first, end);
        let run = &b[first..end];
        let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
        let starts_well = run
            .first()
            .is_some_and(|c| c.is_ascii_digit() || *c == b'(');
        let groups_well = !grouped || run.iter().any(|c| !c.is_ascii_digit());
        if starts_well && groups_well && (8..=15).contains(&digits) {
            out.push(Hit {
                start: plus,
                end,
                kind: PiiKind::Phone,
            });
        }
    }
}

/// `end` moved back past trailing separators, and past a `)` that closes no `(` of
/// `b[from..end]`: `(+33 6 12 34 56 78)` and `(06 12 34 56 78)` keep their closing
/// bracket, `(415) 555-0100` its own. One count, then one step per byte: linear.
fn balanced_end(b: &[u8], from: usize, mut end: usize) -> usize {
    let count = |c: u8| b[from..end].iter().filter(|x| **x == c).count();
    let (opens, mut closes) = (count(b'('), count(b')'));
    while end > from {
        match b[end - 1] {
            b' ' | b'-' | b'.' | b'(' => {}
            b')' if closes > opens => closes -= 1,
            _ => break,
        }
        end -= 1;
    }
    end
}

/// Where a national number may start: a digit or `(` at the start of a word (not after
/// `+`, whose numbers [`phone_hits`] reads, nor inside a word or a dotted or dashed
/// token), and not as the seconds and fraction of a time (`22:19:04.123456789`, Go's
/// and Java's nanoseconds: a trunk `0` and 11 digits; `tel:06…` and `ref1:06…` still
/// start one).
fn national_start(b: &[u8], i: usize) -> bool {
    let seconds = i >= 6
        && i + 2 < b.len()
        && b[i - 1] == b':'
        && b[i - 4] == b':'
        && b[i + 2] == b'.'
        && b[i - 6].is_ascii_digit()
        && b[i - 5].is_ascii_digit()
        && b[i - 3].is_ascii_digit()
        && b[i - 2].is_ascii_digit()
        && b[i + 1].is_ascii_digit();
    (b[i].is_ascii_digit() || b[i] == b'(')
        && !seconds
        && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b"+-._\\".contains(&b[i - 1])))
}

/// The national number ([`is_national`]) that `b[from..scanned]`, a run of phone bytes,
/// starts with, trimmed of what follows it; its end.
fn national_run(b: &[u8], from: usize, scanned: usize) -> Option<usize> {
    let end = balanced_end(b, from, scanned);
    // The word ends with it: digits running into letters, or into a `:` (a time), are
    // something else.
    let ends_word =
        end < scanned || end == b.len() || !(b[end].is_ascii_alphanumeric() || b[end] == b':');
    (ends_word && is_national(&b[from..end])).then_some(end)
}

/// Whether a run of digits, spaces, dashes, dots and parentheses (trimmed) is a national
/// number written as one:
/// - North American: `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `1 800 555 0199`
///   (groups of 3, 3 and 4 digits, an area code from 2 to 9, an optional leading `1`);
/// - a trunk `0` and 10 to 12 digits in two or more groups of at least 2, one separator
///   throughout: `06 12 34 56 78`, `06.12.34.56.78`, `020 7946 0958`, `07700 900123`,
///   `(030) 1234567`.
///
/// Dates stay out: `2026-11-23` has 8 digits, and `01.02.2026 10:30` mixes separators.
fn is_national(run: &[u8]) -> bool {
    // Digits per group, the first two digits, and the separators, in one pass (written
    // with loops: iterator adapters cost the SDK's wasm more).
    let mut groups = [0usize; 8];
    let (mut n, mut digits, mut lead) = (0, 0, [0u8; 2]);
    let (mut sep, mut mixed, mut opened) = (0u8, false, false);
    for (i, &c) in run.iter().enumerate() {
        let prev = if i > 0 { run[i - 1] } else { 0 };
        match c {
            b'0'..=b'9' => {
                if !prev.is_ascii_digit() {
                    n += 1;
                    if n > groups.len() {
                        return false;
                    }
                }
                groups[n - 1] += 1;
                if digits < 2 {
                    lead[digits] = c;
                }
                digits += 1;
            }
            b'(' if i == 0 => opened = true,
            // Closes the first group, opened at the start.
            b')' if opened && n == 1 && prev.is_ascii_digit() => opened = false,
            b' ' | b'-' | b'.' if i > 0 => {
                if prev != b')' {
                    mixed |= sep != 0 && sep != c;
                    sep = c;
                }
            }
            _ => return false,
        }
    }
    let groups = &groups[..n];
    let area = match groups {
        [1, 3, 3, 4] if lead[0] == b'1' => lead[1],
        [3, 3, 4] => lead[0],
        _ => 0,
    };
    let american = !opened && (b'2'..=b'9').contains(&area);
    let trunk = lead[0] == b'0'
        && lead[1] != b'0'
        && (10..=12).contains(&digits)
        && n >= 2
        && !mixed
        && !opened
        && groups.iter().all(|g| *g >= 2)
        && groups[0] <= 5;
    american || trunk
}

/// Every national number written as one ([`is_national`]) in `s`, in order, outside what
/// `taken` (in order) already holds: from every word start, at most [`MAX_NATIONAL`]
/// bytes on.
fn national_hits(s: &str, taken: &[Hit], out: &mut Vec<Hit>) {
    let b = s.as_bytes();
    let (mut next, mut i) = (0, 0);
    while i < b.len() {
        while next < taken.len() && taken[next].end <= i {
            next += 1;
        }
        if next < taken.len() && taken[next].start <= i {
            i = taken[next].end;
            continue;
        }
        if !national_start(b, i) {
            i += 1;
            continue;
        }
        let limit = taken
            .get(next)
            .map_or(b.len(), |h| h.start)
            .min(i + MAX_NATIONAL);
        let mut scanned = i;
        while scanned < limit && phone_byte(b[scanned]) {
            scanned += 1;
        }
        // From its first byte, or inside a bracket: `(06 12 34 56 78)`.
        let inside = b[i] == b'(' && i + 1 < scanned;
        let found = national_run(b, i, scanned).map(|end| (i, end)).or_else(|| {
            inside
                .then(|| national_run(b, i + 1, scanned))
                .flatten()
                .map(|end| (i + 1, end))
        });
        match found {
            Some((start, end)) => {
                out.push(Hit {
                    start,
                    end,
                    kind: PiiKind::Phone,
                });
                i = end;
            }
            None => i += 1,
        }
    }
}

/// Bytes a national number takes at most as written (`1 (650) 555-0142` takes 16): each
/// start looks no further, so the scan stays linear.
const MAX_NATIONAL: usize = 24;

/// `end`, or the start of the word it ends inside when that word is a digest: digits
/// that run into a digest are what an earlier replacement left (`+` then a digest that
/// starts with digits), not a number.
fn before_digest(s: &str, floor: usize, end: usize) -> usize {
    let b = s.as_bytes();
    if end >= b.len() || !b[end].is_ascii_alphanumeric() || end == floor {
        return end;
    }
    let mut start = end;
    while start > floor && b[start - 1].is_ascii_alphanumeric() {
        start -= 1;
    }
    let mut stop = end;
    while stop < b.len() && b[stop].is_ascii_alphanumeric() {
        stop += 1;
    }
    // ASCII bounds, so `get` cannot fail on a character boundary.
    match s.get(start..stop) {
        Some(word) if is_sha256_hex(word) => start,
        _ => end,
    }
}

/// The digest that replaces a raw phone number: of its E.164 form when it can be
/// normalized (national numbers take the visitor's country, then US), else of its digits.
pub fn phone_digest(raw: &str, country: Option<&str>) -> String {
    let normalized = normalize_phone(raw, country.unwrap_or("US"))
        .or_else(|_| normalize_phone(raw, "US"))
        .unwrap_or_else(|_| raw.chars().filter(char::is_ascii_digit).collect());
    sha256_hex(&normalized)
}

/// The digest that replaces a raw email: of its normalized form (trimmed, lowercased).
pub fn email_digest(raw: &str) -> String {
    let raw = raw.trim();
    let raw = raw
        .strip_prefix("mailto:")
        .or_else(|| raw.strip_prefix("MAILTO:"))
        .unwrap_or(raw);
    normalize_email(raw, EmailVariant::Standard)
        .map(|n| sha256_hex(&n))
        .unwrap_or_else(|_| sha256_hex(&raw.to_ascii_lowercase()))
}

/// Replaces raw emails and phones in plain (not URL-decoded) text.
fn scrub_plain(s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    let t = s.trim();
    if t.is_empty() || is_sha256_hex(t) {
        return None;
    }
    if looks_like_phone(t) && !t.get(1..).unwrap_or_default().contains('+') {
        return Some((phone_digest(t, country), PiiKind::Phone));
    }
    let mut hits = Vec::new();
    if s.as_bytes().contains(&b'@') {
        email_hits(s, &mut hits);
    }
    let emails = hits.len();
    let b = s.as_bytes();
    if b.contains(&b'+') || (1..b.len()).any(|i| b[i] == b'0' && b[i - 1] == b'0') {
        phone_hits(s, &mut hits);
    }
    if emails > 0 && emails < hits.len() {
        let phones = hits.split_off(emails);
        hits = in_order(hits, phones);
    }
    if b.iter().filter(|c| c.is_ascii_digit()).count() >= 10 {
        let mut national = Vec::new();
        national_hits(s, &hits, &mut national);
        if !national.is_empty() {
            hits = in_order(hits, national);
        }
    }
    if hits.is_empty() {
        return None;
    }
    let first = hits[0];
    if hits.len() == 1 && s.get(first.start..first.end) == Some(t) {
        let raw = s.get(first.start..first.end).unwrap_or_default();
        return Some((digest(raw, first.kind, country), first.kind));
    }
    let mut out = String::with_capacity(s.len() + 64);
    let mut at = 0;
    let mut i = 0;
    while i < hits.len() {
        // Overlapping findings (`+33 6 12 34 56 78g@x.io`) are replaced as one run, so
        // no part of either is left.
        let (start, mut end, kind) = (hits[i].start, hits[i].end, hits[i].kind);
        let mut merged = false;
        while i + 1 < hits.len() && hits[i + 1].start < end {
            i += 1;
            end = end.max(hits[i].end);
            merged = true;
        }
        i += 1;
        let raw = s.get(start..end).unwrap_or_default();
        out.push_str(s.get(at..start).unwrap_or_default());
        out.push_str(&if merged {
            sha256_hex(&raw.to_ascii_lowercase())
        } else {
            digest(raw, kind, country)
        });
        at = end;
    }
    out.push_str(s.get(at..).unwrap_or_default());
    Some((out, first.kind))
}

/// Two lists of hits, each in order, as one: a linear merge (a sort brought 3 KB of
/// core's sorts into the SDK's wasm).
fn in_order(a: Vec<Hit>, b: Vec<Hit>) -> Vec<Hit> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        let next = if x.start <= y.start {
            a.next()
        } else {
            b.next()
        };
        merged.extend(next);
    }
    merged.extend(a);
    merged.extend(b);
    merged
}

fn digest(raw: &str, kind: PiiKind, country: Option<&str>) -> String {
    match kind {
        PiiKind::Email => email_digest(raw),
        PiiKind::Phone => phone_digest(raw, country),
        // Never a hit: the scans find emails and phones (credentials are the walkers').
        PiiKind::Credential => String::from("redacted"),
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `form`); `None` when nothing changed.
fn percent_decode(s: &str, form: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    changed = true;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if form => {
                out.push(b' ');
                changed = true;
            }
            c => out.push(c),
        }
        i += 1;
    }
    changed.then(|| String::from_utf8_lossy(&out).into_owned())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(c >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(c & 15)]));
        }
    }
    out
}

/// Bytes that separate URL components and words.
fn delimiter(b: u8) -> bool {
    b.is_ascii_whitespace() || b"&?#=/;,:\"'<>|".contains(&b)
}

/// Looks for raw values in one component after decoding it (up to three rounds, for
/// double encoding), first as a path (`+` kept), then as a form value (`+` is a space);
/// in its text, then in the base64 and hex runs of it.
/// Returns the component re-encoded with the findings replaced.
fn scrub_component(c: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    for form in [false, true] {
        let mut decoded = percent_decode(c, form);
        let mut rounds = 1;
        while rounds < 3 {
            let Some(more) = decoded.as_deref().and_then(|d| percent_decode(d, false)) else {
                break;
            };
            decoded = Some(more);
            rounds += 1;
        }
        let Some(d) = decoded else { continue };
        // Runs inside a component (`%5A%47%49…`, base64 written percent-encoded) are read
        // one level deep: each cycle through a run decodes to 3/4 the length or less.
        let found = scrub_plain(&d, country).or_else(|| runs_at(&d, country, MAX_NESTED_RUNS - 1));
        if let Some((clean, kind)) = found {
            return Some((percent_encode(&clean), kind));
        }
    }
    None
}

/// `s` with every raw email and phone number replaced by its digest, or `None` when it
/// holds none. A whole value that is one becomes the bare digest; inside text or a URL
/// the digest takes its place (percent-encoded components are decoded to look, and the
/// component is written back encoded; base64 and hex runs likewise).
pub fn scrub_text(s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    let (mut out, kind) = scrub_once(s, country)?;
    // A digest can join what was beside it into something new (`x@` + digest + `.com`
    // is an address): scrubbed again until nothing is found, so scrubbing is a
    // projection. Each pass replaces a finding with a digest, which holds neither `@`
    // nor `+`; four more passes are more than any input found needs.
    for _ in 0..4 {
        match scrub_once(&out, country) {
            Some((again, _)) => out = again,
            None => break,
        }
    }
    Some((out, kind))
}

fn scrub_once(s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    if is_sha256_hex(s) {
        // A digest, or the hex of a 32-byte address: only decoding tells them apart.
        return scrub_runs(s, country);
    }
    // Then the runs are looked into as well (a value can hold both).
    let found = scrub_folded(s, country);
    let base = found.as_ref().map_or(s, |(t, _)| t.as_str());
    match scrub_runs(base, country) {
        Some((t, k)) => Some((t, found.map_or(k, |(_, k0)| k0))),
        None => found,
    }
}

/// The plain and percent passes over `s` folded (`fold`) when that finds a raw value,
/// else over `s` as it is: folded text is kept only when it held one.
fn scrub_folded(s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    fold(s)
        .and_then(|f| scrub_decoded(&f, country))
        .or_else(|| scrub_decoded(s, country))
}

/// Characters that start something `fold` rewrites: a reference or escape, a fullwidth
/// or small form, a digit of another script, or a space or dash that groups digits.
fn foldable(c: char) -> bool {
    matches!(
        c,
        '&' | '\\' | '\u{FF01}'..='\u{FF5E}' | '\u{FE6B}' | '\u{3002}' | '\u{FF61}'
    ) || (c > '\u{7F}' && (ascii_digit(c).is_some() || phone_separator(c).is_some()))
}

/// A character reference, escape or compatibility form that may stand for `@`, `.`,
/// `+` or a digit, as text: `&#64;`, `&#x40;`, `&commat;`, `\u0040`, `\x40`, `\@`, `＠`; the
/// digits of other scripts (`+٣٣ ٦…`) as ASCII digits; and the spaces and dashes
/// typography puts between digit groups (`+33\u{202F}6\u{202F}12…`, `650–555–0142`) as
/// ASCII ones.
fn fold(s: &str) -> Option<String> {
    // Checked before anything is copied: most text (any script) has none of them.
    if !s.chars().any(foldable) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some((ch, len)) = reference(rest) {
            out.push(ch);
            rest = rest.get(len..).unwrap_or_default();
            changed = true;
            continue;
        }
        let folded = match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{FE6B}' => '@',
            '\u{3002}' | '\u{FF61}' => '.',
            _ => ascii_digit(c).or_else(|| phone_separator(c)).unwrap_or(c),
        };
        changed |= folded != c;
        out.push(folded);
        rest = rest.get(c.len_utf8()..).unwrap_or_default();
    }
    changed.then_some(out)
}

/// The character a reference or escape at the start of `s` stands for, and its length.
fn reference(s: &str) -> Option<(char, usize)> {
    let b = s.as_bytes();
    let named = [("&commat;", '@'), ("&period;", '.'), ("&plus;", '+')];
    for (name, ch) in named {
        if b.len() >= name.len() && b[..name.len()].eq_ignore_ascii_case(name.as_bytes()) {
            return Some((ch, name.len()));
        }
    }
    // `&#64;`, `&#x40;` (the `;` optional, as browsers read them); `\u0040` and `\x40`
    // with exactly their digits, also with their backslash escaped once or more
    // (`\\u0040`: an escape inside JSON text kept as a string). At most four backslashes
    // are counted, so a long run of them is read in linear time.
    let slashes = b.iter().take(4).take_while(|c| **c == b'\\').count();
    // `\@`, `\.` and `\+`: punctuation escaped for a regular expression or a shell.
    if let (1.., Some(c @ (b'@' | b'.' | b'+'))) = (slashes, b.get(slashes)) {
        return Some((char::from(*c), slashes + 1));
    }
    let (digits, radix, skip, exact) = match (b, b.get(slashes)) {
        ([b'&', b'#', b'x' | b'X', ..], _) => (&b[3..], 16, 3, None),
        ([b'&', b'#', ..], _) => (&b[2..], 10, 2, None),
        (_, Some(b'u')) if slashes > 0 => (&b[slashes + 1..], 16, slashes + 1, Some(4)),
        (_, Some(b'x')) if slashes > 0 => (&b[slashes + 1..], 16, slashes + 1, Some(2)),
        _ => return None,
    };
    let n = digits
        .iter()
        .take(exact.unwrap_or(7))
        .take_while(|d| char::from(**d).is_digit(radix))
        .count();
    if n == 0 || exact.is_some_and(|e| n != e) {
        return None;
    }
    let value = core::str::from_utf8(&digits[..n]).ok()?;
    let ch = char::from_u32(u32::from_str_radix(value, radix).ok()?)?;
    let semi = usize::from(exact.is_none() && b.get(skip + n) == Some(&b';'));
    Some((ch, skip + n + semi))
}

/// Plain text and percent-encoded components (the passes before runs).
fn scrub_decoded(s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    let suspect = s
        .bytes()
        .any(|b| b == b'@' || b == b'%' || b.is_ascii_digit());
    if !suspect {
        return None;
    }
    let plain = scrub_plain(s, country);
    let base = plain.as_ref().map_or(s, |(t, _)| t.as_str());
    if !base.bytes().any(|b| b == b'%' || b == b'+') {
        return plain;
    }
    let mut kind = plain.as_ref().map(|(_, k)| *k);
    let mut out = String::new();
    let mut changed = false;
    let bytes = base.as_bytes();
    let mut start = 0;
    for i in 0..=bytes.len() {
        if i < bytes.len() && !delimiter(bytes[i]) {
            continue;
        }
        let comp = base.get(start..i).unwrap_or_default();
        let found = comp
            .bytes()
            .any(|b| b == b'%' || b == b'+')
            .then(|| scrub_component(comp, country))
            .flatten();
        match found {
            Some((clean, k)) => {
                out.push_str(&clean);
                kind.get_or_insert(k);
                changed = true;
            }
            None => out.push_str(comp),
        }
        if let Some(d) = base.get(i..i + 1) {
            out.push_str(d);
        }
        start = i + 1;
    }
    match (changed, plain) {
        (true, _) => Some((out, kind.unwrap_or(PiiKind::Email))),
        (false, plain) => plain,
    }
}

/// Shortest base64 run looked into: an address of 8 bytes (`jo@x.io` has 7) is 12
/// characters; shorter runs are words and ids.
const MIN_BASE64_RUN: usize = 12;
/// Shortest hex run looked into (7 bytes); digest lengths included, as an address can
/// have 20 or 32 bytes.
const MIN_HEX_RUN: usize = 14;

fn base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/-_".contains(&b)
}

/// Base64 and hex runs of `s` whose decoded text holds a raw value, written back in
/// their own encoding with the digests inside. `/` is a base64 character, so a path's
/// segments (`/p/KzMzIDYg…`) join into one run that decodes to nothing: when the runs
/// read whole hold nothing and one of them has a `/`-separated part long enough to be
/// read, they are read again cut at every `/`. (A value holding both kinds is found
/// over [`scrub_text`]'s repeated passes.)
fn scrub_runs(s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    runs_at(s, country, 0)
}

/// Levels of encoding read inside one another (base64 of base64, hex of base64, …):
/// each level is at most 3/4 the length of the one around it, so the reading stays
/// linear.
const MAX_NESTED_RUNS: u8 = 3;

/// [`scrub_runs`] for runs `depth` levels inside other runs.
fn runs_at(s: &str, country: Option<&str>, depth: u8) -> Option<(String, PiiKind)> {
    match runs(s, country, true, depth) {
        (Some(found), _) => Some(found),
        (None, true) => runs(s, country, false, depth).0,
        (None, false) => None,
    }
}

/// [`scrub_runs`] with `/` read as part of a run (`slash`) or as a boundary; and whether
/// a run read as nothing has a `/`-separated part of a length that can be read.
fn runs(
    s: &str,
    country: Option<&str>,
    slash: bool,
    depth: u8,
) -> (Option<(String, PiiKind)>, bool) {
    let b = s.as_bytes();
    let in_run = |c: u8| base64_byte(c) && (slash || c != b'/');
    let mut out = String::new();
    let (mut at, mut i, mut kind, mut parts) = (0, 0, None, false);
    while i < b.len() {
        if !in_run(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && in_run(b[i]) {
            i += 1;
        }
        let pad = b[i..].iter().take(2).take_while(|c| **c == b'=').count();
        // Runs are ASCII, so their ends are character boundaries (`get` never fails).
        let run = s.get(start..i).unwrap_or_default();
        if let Some((clean, k)) = decode_run(run, pad > 0, country, depth) {
            out.push_str(s.get(at..start).unwrap_or_default());
            out.push_str(&clean);
            at = i + pad;
            kind.get_or_insert(k);
        } else if slash && !parts && run.contains('/') {
            parts = run.split('/').any(|p| p.len() >= MIN_BASE64_RUN);
        }
        i += pad;
    }
    let Some(kind) = kind else {
        return (None, parts);
    };
    out.push_str(s.get(at..).unwrap_or_default());
    (Some((out, kind)), parts)
}

/// A run decoded as hex or base64 and scrubbed (what it decodes to is read for runs in
/// turn, up to [`MAX_NESTED_RUNS`] levels), re-encoded as it came; `None` when it is not
/// text or holds nothing.
fn decode_run(
    run: &str,
    padded: bool,
    country: Option<&str>,
    depth: u8,
) -> Option<(String, PiiKind)> {
    let hexy = run.len() % 2 == 0 && run.bytes().all(|c| c.is_ascii_hexdigit());
    // Digests are hex too (sha-1's 40, sha-256's 64): they decode to bytes that are not
    // text, and are left as they are.
    if hexy && run.len() >= MIN_HEX_RUN {
        let bytes: Option<Vec<u8>> = run
            .as_bytes()
            .chunks(2)
            .map(|p| Some(hex(p[0])? * 16 + hex(p[1])?))
            .collect();
        if let Some((clean, k)) = bytes.and_then(|d| scrub_bytes(d, country, depth)) {
            let upper = run.bytes().any(|c| c.is_ascii_uppercase());
            return Some((hex_encode(&clean, upper), k));
        }
    }
    if run.len() < MIN_BASE64_RUN || run.len() % 4 == 1 {
        return None;
    }
    let (clean, k) = scrub_bytes(base64_decode(run)?, country, depth)?;
    let url = run.bytes().any(|c| c == b'-' || c == b'_');
    // Padded as the run was (its `=` are outside it; the caller writes from after them).
    Some((base64_encode(&clean, url, padded), k))
}

// Base64 by hand, both alphabets at once, padding optional: with the `base64` crate's
// engine in their place the SDK's wasm was 57,908 bytes gzip against 53,076 (measured,
// `scripts/build.sh sdk`); these are a few hundred bytes of code.
fn base64_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    }))
}

fn base64_decode(run: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(run.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in run.bytes() {
        acc = (acc << 6) | base64_value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn base64_encode(b: &[u8], url: bool, padded: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let at = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let v = (at(0) << 16) | (at(1) << 8) | at(2);
        for i in 0..=chunk.len() {
            out.push(char::from(table[((v >> (18 - 6 * i)) & 63) as usize]));
        }
        if padded {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Decoded bytes that are text, scrubbed, as bytes in the same form: UTF-8, or UTF-16
/// (either byte order) when every other byte is zero, as `Encoding.Unicode` and
/// `TextEncoder`-less code write text before encoding it. (By hand, with loops: with
/// `String::from_utf16`, `encode_utf16` and iterator adapters the SDK's wasm was 1.0 KB
/// gzip larger: 47,496 bytes against 46,465, measured with `scripts/build.sh sdk`.)
fn scrub_bytes(bytes: Vec<u8>, country: Option<&str>, depth: u8) -> Option<(Vec<u8>, PiiKind)> {
    let Some(low) = utf16_low_byte(&bytes) else {
        let (clean, k) = scrub_decoded_text(bytes, country, depth)?;
        return Some((clean.into_bytes(), k));
    };
    // Units below U+0100: each is the Latin-1 character of its low byte.
    let mut text = Vec::with_capacity(bytes.len());
    let mut i = low;
    while i < bytes.len() {
        let mut utf8 = [0; 2];
        text.extend_from_slice(char::from(bytes[i]).encode_utf8(&mut utf8).as_bytes());
        i += 2;
    }
    let (clean, k) = scrub_decoded_text(text, country, depth)?;
    let mut wide = Vec::with_capacity(clean.len() * 2);
    for c in clean.chars() {
        for unit in c.encode_utf16(&mut [0; 2]) {
            let [hi, lo] = unit.to_be_bytes();
            wide.extend_from_slice(&if low == 1 { [hi, lo] } else { [lo, hi] });
        }
    }
    Some((wide, k))
}

/// Where the low byte of each unit is when `b` reads as UTF-16 text below U+0100 (every
/// other byte zero): 1 big-endian (zeros first), 0 little-endian; `None` otherwise.
fn utf16_low_byte(b: &[u8]) -> Option<usize> {
    if b.len() < 4 || b.len() % 2 != 0 {
        return None;
    }
    let mut nonzero = [false; 2];
    for (i, c) in b.iter().enumerate() {
        nonzero[i % 2] |= *c != 0;
    }
    match nonzero {
        [false, true] => Some(1),
        [true, false] => Some(0),
        _ => None,
    }
}

/// Decoded text scrubbed by the plain and percent passes, else read for runs of another
/// encoding inside it.
fn scrub_decoded_text(
    bytes: Vec<u8>,
    country: Option<&str>,
    depth: u8,
) -> Option<(String, PiiKind)> {
    let text = String::from_utf8(bytes).ok()?;
    if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return None;
    }
    let found = scrub_folded(&text, country);
    if found.is_some() || depth + 1 >= MAX_NESTED_RUNS {
        return found;
    }
    runs_at(&text, country, depth + 1)
}

fn hex_encode(b: &[u8], upper: bool) -> String {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = String::with_capacity(b.len() * 2);
    for c in b {
        out.push(char::from(digits[usize::from(c >> 4)]));
        out.push(char::from(digits[usize::from(c & 15)]));
    }
    out
}

fn letters(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_alphabetic).count()
}

/// A string value of a field named as holding `kind`: an email field's value with an
/// `@` (also encoded, or as a reference, escape or compatibility form) is hashed whole;
/// a phone field's value with 6 to 20 digits and few letters (`tel:`, `ext`) is hashed
/// as a phone in whatever format it came.
pub fn scrub_field(kind: FieldKind, s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    if is_sha256_hex(s.trim()) {
        return scrub_runs(s, country);
    }
    match kind {
        FieldKind::Email => {
            let decoded = percent_decode(s, false);
            let text = decoded.as_deref().unwrap_or(s);
            // Its `@` also as a reference, an escape or a compatibility form (`﹫`).
            let folded = fold(text);
            let text = folded.as_deref().unwrap_or(text);
            if text.contains('@') {
                return Some((email_digest(text), PiiKind::Email));
            }
        }
        FieldKind::Phone => {
            let digits = s.bytes().filter(u8::is_ascii_digit).count();
            if (6..=20).contains(&digits) && letters(s) <= 4 {
                let t = s.trim();
                let t = t.strip_prefix("tel:").unwrap_or(t);
                return Some((phone_digest(t, country), PiiKind::Phone));
            }
        }
        FieldKind::Other => {}
    }
    scrub_text(s, country)
}

/// What both walkers (the SDK's over JSON text, the collector's over values) make of a
/// string value: [`scrub_field`], then the value of any credential parameter of an
/// address in it written `redacted` ([`crate::credentials`]). A value that held only a
/// credential is reported as [`PiiKind::Credential`].
pub fn scrub_string(kind: FieldKind, s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    redact_credentials(scrub_field(kind, s, country), s)
}

/// `found` (what a PII scan made of `s`, if anything) with its credentials redacted.
fn redact_credentials(found: Option<(String, PiiKind)>, s: &str) -> Option<(String, PiiKind)> {
    let text = found.as_ref().map_or(s, |(t, _)| t.as_str());
    match crate::credentials::redact(text) {
        Some(clean) => Some((clean, found.map_or(PiiKind::Credential, |(_, k)| k))),
        None => found,
    }
}

/// Whether a string holds raw PII (as [`scrub_field`] would replace).
pub fn detect(kind: FieldKind, s: &str) -> Option<PiiKind> {
    scrub_field(kind, s, None).map(|(_, k)| k)
}

#[cfg(feature = "std")]
pub use walk::*;

#[cfg(feature = "std")]
mod walk {
    use super::*;
    use crate::message::Message;
    use crate::path::{push_child, push_index, render, Seg};
    use serde_json::{Map, Value};
    /// The memos' hasher: foldhash instead of std's SipHash, which was 4.8% of the
    /// pipeline's instructions (callgrind, `pipeline_bench 100`) for the short texts
    /// and keys looked up here. In the worker neither is keyed by real randomness (on
    /// wasm32-unknown-unknown both seed from memory addresses, which wasm does not
    /// randomize); what bounds a crafted batch's collisions is that a memo lives for one
    /// request and holds at most [`Scrubber::MAX_BYTES`] of text.
    type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

    /// Scrubbed texts by what they were: `None` when nothing was found.
    type Memo = HashMap<Box<str>, Option<(String, PiiKind)>>;

    /// One request's scrubbing. [`scrub_field`] is a function of the text, the kind of
    /// field and the country alone, so a text already scrubbed in this request (the
    /// page URL, title, referrer and user agent that every event of a batch repeats) is
    /// looked up instead of scanned again. The memo stops growing at
    /// [`Scrubber::MAX_BYTES`] of text. Measured with `scripts/bench.sh pipeline` (20-event
    /// batches that share their context): the walk was about a third of the pipeline's
    /// time, and the memo took 11% off the pipeline's instructions (callgrind).
    pub struct Scrubber<'c> {
        country: Option<&'c str>,
        /// One map per field kind given to [`scrub_field`] (email, phone, other), and
        /// one for [`scrub_text`].
        seen: [Memo; 4],
        /// Object keys: what [`scrub_text`] and [`field_kind`] say of each, found with one
        /// lookup (asked of every key of every object, the kind was 3% of the pipeline's
        /// instructions).
        keys: HashMap<Box<str>, KeyFacts>,
        /// The field kinds of the keys of the objects being walked, a run per object.
        kinds: Vec<FieldKind>,
        bytes: usize,
        cap: usize,
    }

    /// What a key says: its scrubbed form when it holds PII, and the kind of its field.
    type KeyFacts = (Option<(String, PiiKind)>, FieldKind);

    impl<'c> Scrubber<'c> {
        /// Texts shorter than this are scanned every time (a lookup costs what their
        /// scan does).
        pub const MIN_LEN: usize = 4;
        /// Text bytes the memo holds at most.
        pub const MAX_BYTES: usize = 256 * 1024;

        pub fn new(country: Option<&'c str>) -> Self {
            Self::with_cap(country, Self::MAX_BYTES)
        }

        /// A scrubber whose memo holds at most `cap` bytes of text.
        pub fn with_cap(country: Option<&'c str>, cap: usize) -> Self {
            Scrubber {
                country,
                seen: Default::default(),
                keys: HashMap::default(),
                kinds: Vec::new(),
                bytes: 0,
                cap,
            }
        }

        pub fn country(&self) -> Option<&'c str> {
            self.country
        }

        /// [`scrub_string`] of `s`, from the memo when this request saw `s` before.
        pub fn field(&mut self, kind: FieldKind, s: &str) -> Option<(String, PiiKind)> {
            self.memo(Some(kind), s)
        }

        /// [`scrub_text`] of `s` with its credentials redacted (as [`scrub_string`]),
        /// from the memo when this request saw `s` before.
        pub fn text(&mut self, s: &str) -> Option<(String, PiiKind)> {
            self.memo(None, s)
        }

        /// The [`KeyFacts`] of object key `k`, from the memo when this request saw it.
        fn key(&mut self, k: &str) -> KeyFacts {
            let facts = |k: &str| (scrub_text(k, self.country), field_kind(k));
            if k.len() < Self::MIN_LEN {
                return facts(k);
            }
            if let Some(hit) = self.keys.get(k) {
                return hit.clone();
            }
            let out = facts(k);
            if self.bytes + k.len() <= self.cap {
                self.bytes += k.len();
                self.keys.insert(Box::from(k), out.clone());
            }
            out
        }

        fn memo(&mut self, kind: Option<FieldKind>, s: &str) -> Option<(String, PiiKind)> {
            let scan = |s: &str| match kind {
                Some(k) => scrub_string(k, s, self.country),
                None => redact_credentials(scrub_text(s, self.country), s),
            };
            if s.len() < Self::MIN_LEN {
                return scan(s);
            }
            let map = match kind {
                Some(FieldKind::Email) => 0,
                Some(FieldKind::Phone) => 1,
                Some(FieldKind::Other) => 2,
                None => 3,
            };
            if let Some(hit) = self.seen[map].get(s) {
                return hit.clone();
            }
            let out = scan(s);
            if self.bytes + s.len() <= self.cap {
                self.bytes += s.len();
                self.seen[map].insert(Box::from(s), out.clone());
            }
            out
        }
    }

    /// A raw value that was replaced, and where.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Finding {
        pub path: String,
        pub kind: PiiKind,
    }

    /// Replaces every raw email and phone in the keys and strings of `v` (and the numbers
    /// of phone-named fields) in place, reporting their paths. `field` is what the name
    /// of the field holding `v` says (children inherit it unless their own name says).
    pub fn scrub_value(
        v: &mut Value,
        root: &str,
        field: FieldKind,
        country: Option<&str>,
        out: &mut Vec<Finding>,
    ) {
        scrub_value_with(v, root, field, &mut Scrubber::new(country), out);
    }

    /// [`scrub_value`] with a request's [`Scrubber`].
    pub fn scrub_value_with(
        v: &mut Value,
        root: &str,
        field: FieldKind,
        sc: &mut Scrubber<'_>,
        out: &mut Vec<Finding>,
    ) {
        let mut path = String::from(root);
        walk(v, &mut path, field, sc, out);
    }

    fn walk(
        v: &mut Value,
        path: &mut String,
        field: FieldKind,
        sc: &mut Scrubber<'_>,
        out: &mut Vec<Finding>,
    ) {
        match v {
            Value::String(s) => {
                if let Some((clean, kind)) = sc.field(field, s) {
                    *s = clean;
                    out.push(Finding {
                        path: path.clone(),
                        kind,
                    });
                }
            }
            Value::Number(n) if field == FieldKind::Phone => {
                let text = n.to_string();
                if let Some((clean, kind)) = sc.field(field, &text) {
                    *v = Value::String(clean);
                    out.push(Finding {
                        path: path.clone(),
                        kind,
                    });
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if needs_walk(item, field) {
                        let len = path.len();
                        push_index(path, i);
                        walk(item, path, field, sc, out);
                        path.truncate(len);
                    }
                }
            }
            Value::Object(map) => walk_map_with(map, path, field, sc, out),
            _ => {}
        }
    }

    /// Walks an object: keys first (a key holding PII is renamed to its scrubbed form),
    /// then each value under the kind its name says.
    pub fn walk_map(
        map: &mut Map<String, Value>,
        path: &mut String,
        field: FieldKind,
        country: Option<&str>,
        out: &mut Vec<Finding>,
    ) {
        walk_map_with(map, path, field, &mut Scrubber::new(country), out);
    }

    fn walk_map_with(
        map: &mut Map<String, Value>,
        path: &mut String,
        field: FieldKind,
        sc: &mut Scrubber<'_>,
        out: &mut Vec<Finding>,
    ) {
        // The keys' kinds go on `sc.kinds` from `base` on, in the map's order; the walks
        // below push theirs after them and take them off again.
        let base = sc.kinds.len();
        let mut renames: Vec<(String, String, PiiKind)> = Vec::new();
        for k in map.keys() {
            let (rename, kind) = sc.key(k);
            if let Some((c, pii)) = rename {
                renames.push((k.clone(), c, pii));
            }
            sc.kinds.push(kind);
        }
        if !renames.is_empty() {
            // Renamed keys move in the map: the kinds are taken again, in the new order.
            sc.kinds.truncate(base);
            rename_keys(map, renames, path, out);
            sc.kinds.extend(map.keys().map(|k| field_kind(k)));
        }
        for (i, (k, item)) in map.iter_mut().enumerate() {
            let kind = match sc.kinds.get(base + i).copied().unwrap_or(FieldKind::Other) {
                FieldKind::Other => field,
                named => named,
            };
            if needs_walk(item, kind) {
                let len = path.len();
                push_child(path, k);
                walk(item, path, kind, sc, out);
                path.truncate(len);
            }
        }
        sc.kinds.truncate(base);
    }

    /// Renames each key holding PII to its scrubbed form, reporting where.
    fn rename_keys(
        map: &mut Map<String, Value>,
        renames: Vec<(String, String, PiiKind)>,
        path: &mut String,
        out: &mut Vec<Finding>,
    ) {
        for (old, new, kind) in renames {
            if let Some(v) = map.remove(&old) {
                let len = path.len();
                push_child(path, &new);
                out.push(Finding {
                    path: path.clone(),
                    kind,
                });
                path.truncate(len);
                map.insert(new, v);
            }
        }
    }

    /// Booleans and null cannot hold PII; numbers only in a phone field (elsewhere bare
    /// digit runs are order ids and timestamps).
    fn needs_walk(v: &Value, field: FieldKind) -> bool {
        match v {
            Value::String(_) | Value::Array(_) | Value::Object(_) => true,
            Value::Number(_) => field == FieldKind::Phone,
            _ => false,
        }
    }

    /// Scrubs a whole message: ids, names, timestamps, every section and every unmodelled
    /// field, keys included.
    pub fn scrub_message(m: &mut Message, country: Option<&str>) -> Vec<Finding> {
        scrub_message_with(m, &mut Scrubber::new(country))
    }

    /// [`scrub_message`] with a request's [`Scrubber`].
    pub fn scrub_message_with(m: &mut Message, sc: &mut Scrubber<'_>) -> Vec<Finding> {
        scrub_message_in(m, sc, None)
    }

    /// [`scrub_message_with`] for a message whose `context` is scrubbed already (a copy
    /// of one scrubbed for another event of the request): `context` is left as it is and
    /// the findings made in it are given, to be reported in their place.
    pub fn scrub_message_known_context(
        m: &mut Message,
        sc: &mut Scrubber<'_>,
        context: &[Finding],
    ) -> Vec<Finding> {
        scrub_message_in(m, sc, Some(context))
    }

    fn scrub_message_in(
        m: &mut Message,
        sc: &mut Scrubber<'_>,
        known_context: Option<&[Finding]>,
    ) -> Vec<Finding> {
        let country = sc.country();
        let mut out = Vec::new();
        for (field, path) in [
            (&mut m.message_id, "$.messageId"),
            (&mut m.anonymous_id, "$.anonymousId"),
            (&mut m.user_id, "$.userId"),
            (&mut m.previous_id, "$.previousId"),
            (&mut m.group_id, "$.groupId"),
            (&mut m.event, "$.event"),
            (&mut m.name, "$.name"),
            (&mut m.category, "$.category"),
            (&mut m.timestamp, "$.timestamp"),
            (&mut m.original_timestamp, "$.originalTimestamp"),
            (&mut m.sent_at, "$.sentAt"),
            (&mut m.received_at, "$.receivedAt"),
        ] {
            // A request's events repeat their visitor ids, times and names (the memo);
            // each has a messageId of its own.
            let scrub = |v: &str| match path {
                "$.messageId" => scrub_text(v, country),
                _ => sc.text(v),
            };
            if let Some((clean, kind)) = field.as_deref().and_then(scrub) {
                *field = Some(clean);
                out.push(Finding {
                    path: path.into(),
                    kind,
                });
            }
        }
        for (section, root) in [
            (&mut m.properties, "$.properties"),
            (&mut m.traits, "$.traits"),
            (&mut m.context, "$.context"),
            (&mut m.integrations, "$.integrations"),
        ] {
            match (known_context, section) {
                (Some(found), _) if root == "$.context" => out.extend_from_slice(found),
                (_, Some(v)) => scrub_value_with(v, root, FieldKind::Other, sc, &mut out),
                (_, None) => {}
            }
        }
        let mut path = String::from("$");
        walk_map_with(&mut m.extra, &mut path, FieldKind::Other, sc, &mut out);
        out
    }

    /// Reports the path and kind of every raw value in `value` without changing it.
    pub fn find_pii(value: &Value, root: &str, out: &mut Vec<(String, PiiKind)>) {
        let mut segs = Vec::new();
        find(value, root, FieldKind::Other, &mut segs, out);
    }

    fn find<'a>(
        value: &'a Value,
        root: &str,
        field: FieldKind,
        segs: &mut Vec<Seg<'a>>,
        out: &mut Vec<(String, PiiKind)>,
    ) {
        match value {
            Value::String(s) => {
                if let Some(kind) = detect(field, s) {
                    out.push((render(root, segs), kind));
                }
            }
            Value::Number(n) if field == FieldKind::Phone => {
                if let Some(kind) = detect(field, &n.to_string()) {
                    out.push((render(root, segs), kind));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    segs.push(Seg::Index(i));
                    find(v, root, field, segs, out);
                    segs.pop();
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    segs.push(Seg::Key(k));
                    if let Some(kind) = scrub_text(k, None).map(|(_, k)| k) {
                        out.push((render(root, segs), kind));
                    }
                    let kind = match field_kind(k) {
                        FieldKind::Other => field,
                        named => named,
                    };
                    find(v, root, kind, segs, out);
                    segs.pop();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(s: &str) -> Option<String> {
        scrub_text(s, Some("US")).map(|(t, _)| t)
    }

    #[test]
    fn field_names() {
        for k in [
            "email",
            "userEmail",
            "user_email",
            "E-Mail",
            "emailAddress",
            "mail",
        ] {
            assert_eq!(field_kind(k), FieldKind::Email, "{k}");
        }
        for k in [
            "phone",
            "mobile",
            "tel",
            "phoneNumber",
            "mobile_phone",
            "cellPhone",
            "fax",
        ] {
            assert_eq!(field_kind(k), FieldKind::Phone, "{k}");
        }
        for k in [
            "email_sha256",
            "phoneSha256",
            "telemetry",
            "hotel",
            "emailHash",
            "name",
        ] {
            assert_eq!(field_kind(k), FieldKind::Other, "{k}");
        }
    }

    #[test]
    fn encoded_emails_in_urls() {
        let h = sha256_hex("jo@x.io");
        for s in [
            "https://s.example/?email=jo%40x.io",
            "?email=jo%40x.io&a=1",
            "https://s.example/?email=jo%2540x.io",
            "/p?e=JO%40X.IO#top",
        ] {
            let out = scrub(s).unwrap_or_else(|| panic!("{s}"));
            assert!(out.contains(&h), "{s} -> {out}");
            assert!(!out.to_ascii_lowercase().contains("jo%40"), "{out}");
        }
        assert_eq!(
            scrub("https://s.example/?email=jo%40x.io&a=1").unwrap(),
            format!("https://s.example/?email={h}&a=1")
        );
    }

    #[test]
    fn a_phone_in_brackets_keeps_the_brackets() {
        let fr = sha256_hex("+33612345678");
        let us = sha256_hex("+14155550100");
        let cases = [
            ("(+33 6 12 34 56 78) demain", format!("({fr}) demain")),
            ("call (+1 415-555-0100).", format!("call ({us}).")),
            ("(+33 (0)6 12 34 56 78)", format!("({fr})")),
            ("call (06 12 34 56 78).", format!("call ({fr}).")),
            ("tel (415) 555-0100) x", format!("tel {us}) x")),
            ("+1 (415) 555-0100", us.clone()),
        ];
        for (raw, want) in cases {
            let got = scrub_text(raw, Some("FR")).map(|(s, _)| s);
            assert_eq!(got.as_deref(), Some(want.as_str()), "{raw}");
        }
    }

    #[test]
    fn phones_grouped_and_encoded() {
        let h = sha256_hex("+33612345678");
        assert_eq!(scrub("+33 6 12 34 56 78").unwrap(), h);
        assert!(scrub("call +33 6 12 34 56 78 now").unwrap().contains(&h));
        assert!(scrub("?tel=%2B33%206%2012%2034%2056%2078")
            .unwrap()
            .contains(&h));
        assert!(scrub("?tel=%2B33+6+12+34+56+78").unwrap().contains(&h));
        // Typographic spaces and dashes between the groups, and the `00` prefix.
        assert_eq!(
            scrub("+33\u{202F}6\u{202F}12\u{202F}34\u{202F}56\u{202F}78").unwrap(),
            h
        );
        assert_eq!(
            scrub("+33\u{A0}6\u{A0}12\u{A0}34\u{A0}56\u{A0}78").unwrap(),
            h
        );
        assert!(scrub("appelez le 0033 6 12 34 56 78 svp")
            .unwrap()
            .contains(&h));
        assert_eq!(
            scrub("+1 650\u{2013}555\u{2212}0142").unwrap(),
            sha256_hex("+16505550142")
        );
        for ordinary in [
            "order 0012345678",
            "ref 00123456789",
            "100.00 EUR",
            "at 00:00:00",
            "v1.0012 3456 7890",
        ] {
            assert_eq!(scrub(ordinary), None, "{ordinary}");
        }
        assert_eq!(scrub("order 12345678"), None);
        assert_eq!(scrub("2026-11-23"), None);
        assert_eq!(scrub("50% off, 20+ items"), None);
    }

    #[test]
    fn national_numbers_in_text() {
        // The text scrubbed for a visitor of `country`, asserted to hold each digest.
        let holds = |text: &str, country: &str, numbers: &[&str]| {
            let out = scrub_text(text, Some(country))
                .unwrap_or_else(|| panic!("{text}"))
                .0;
            for n in numbers {
                assert!(out.contains(&sha256_hex(n)), "{text} -> {out}");
            }
            out
        };
        let us = "+16505550142";
        for text in [
            "call me at (650) 555-0142 tonight",
            "call me at 650-555-0142",
            "650.555.0142 is my cell",
            "tel 1-650-555-0142.",
            "mobile:650 555 0142",
            "tel:650-555-0142",
            "ref1:650-555-0142",
            "(650)555-0142",
            "電話650-555-0142",
            "/contact/(650) 555-0142",
            "(call 650-555-0142)",
            "Mozilla/5.0 (650) 555-0142",
        ] {
            let out = holds(text, "US", &[us]);
            assert!(!out.contains("0142"), "{text} -> {out}");
        }
        for text in [
            "rappelez-moi au 06 12 34 56 78 svp",
            "06.12.34.56.78",
            "tél. 06-12-34-56-78, merci",
            "(06 12 34 56 78)",
        ] {
            holds(text, "FR", &["+33612345678"]);
        }
        let uk = "ring 020 7946 0958 or 07700 900123";
        holds(uk, "GB", &["+442079460958", "+447700900123"]);
        let de = holds("Tel. (030) 1234567", "DE", &[]);
        assert!(!de.contains("1234567"), "{de}");
        // Dates, times, amounts, card and account numbers, versions, ids and digits
        // that run into words stay as they are.
        for ordinary in [
            "on 2026-11-23 at 22:19",
            "Bestellung vom 01.02.2026 10:30",
            "01.02.2026 - 05.02.2026",
            "total 1.234.567,89 EUR",
            "card 4111 1111 1111 1111",
            "SSN-like 078-05-1120",
            "build 10.0.19045.3803",
            "ip 192.168.100.200",
            "sku 650-555-0142x",
            "id ab650-555-0142",
            "code 00 12 34 56 78 90",
            "0123456789",
            "order 12 345 678",
            "between 10:30 and 11:45",
            "2026-11-23T22:19:04.123456789+01:00",
            "2026-11-23 22:19:04.123456789",
            "at 22:19:04.12345678 -",
            "ISBN 978-3-16-148410-0",
            "FR76 3000 6000 0112 3456 7890 189",
        ] {
            assert_eq!(scrub(ordinary), None, "{ordinary}");
        }
    }

    #[test]
    fn quoted_local_parts_are_addresses() {
        for (text, raw) in [
            ("\"john\"@example.com", "\"john\"@example.com"),
            (
                "mail \"john doe\"@example.com now",
                "\"john doe\"@example.com",
            ),
        ] {
            let out = scrub(text).unwrap_or_else(|| panic!("{text}"));
            assert!(!out.contains("example.com"), "{text} -> {out}");
            assert!(
                out.contains(&sha256_hex(&raw.to_ascii_lowercase())),
                "{out}"
            );
        }
        for ordinary in ["say \"hi\"@x", "\"\"@example.com", "a \"quote\" @ noon"] {
            assert_eq!(scrub(ordinary), None, "{ordinary}");
        }
    }

    #[test]
    fn named_fields_take_any_format() {
        let h = sha256_hex("+16505550142");
        for v in [
            "650.555.0142",
            "6505550142",
            "tel:+1-650-555-0142",
            "(650) 555 0142",
        ] {
            assert_eq!(
                scrub_field(FieldKind::Phone, v, Some("US")).map(|x| x.0),
                Some(h.clone()),
                "{v}"
            );
        }
        assert_eq!(scrub_field(FieldKind::Phone, "yes", None), None);
        assert_eq!(
            scrub_field(FieldKind::Email, "Jo%40X.io", None).map(|x| x.0),
            Some(sha256_hex("jo@x.io"))
        );
        assert_eq!(scrub_field(FieldKind::Email, "opted in", None), None);
    }

    #[test]
    fn adjacent_and_overlapping_findings_scrub_once() {
        for s in [
            "a@aa.ioa@aa.io",
            "+33 6 12 34 56 78g@aa.io",
            "+33 6 12 34 56 7800000a@aa.io",
        ] {
            let (out, _) = scrub_text(s, None).unwrap();
            assert_eq!(scrub_text(&out, None), None, "{s} -> {out}");
            assert!(
                !out.contains("a@aa") && !out.contains("78g") && !out.contains("34 56"),
                "{out}"
            );
        }
    }

    #[test]
    fn a_digest_never_joins_its_neighbours_into_a_new_finding() {
        // Each digest here starts with digits, so `+` or `+33 ` before it looked like a
        // number on a second pass; or it joined the text around it into an address.
        for s in [
            "++33 6 12 34 56 78.u@zqy.io",
            "+33 a@zqy.io",
            "+1 (650) c@zqy.io",
            // The digest becomes a domain label, then a second address: `a@` + it + `.aa`.
            "a@aa.io.a@aa.io+33 6 12 34 56 78.aa.@aa.io",
            "x@+33 6 12 34 56 78.com",
        ] {
            let (out, _) = scrub_text(s, None).unwrap();
            assert_eq!(scrub_text(&out, None), None, "{s} -> {out}");
        }
        // A real number glued to a word is still one.
        assert!(scrub_text("call +33612345678now", None).is_some());
    }

    #[test]
    fn raw_values_are_found_behind_every_encoding_and_written_back_in_it() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        let email = "probe.person@example.org";
        let phone = "+16505550142";
        let hexed = |s: &str| {
            s.bytes()
                .map(|b| alloc::format!("{b:02x}"))
                .collect::<String>()
        };
        let cases: Vec<(String, &str)> = alloc::vec![
            (STANDARD.encode(email), email),
            (URL_SAFE_NO_PAD.encode(email), email),
            (
                alloc::format!("https://shop.example/x?d={}&n=1", STANDARD.encode(email)),
                email
            ),
            (
                STANDARD.encode(alloc::format!("{{\"email\":\"{email}\"}}")),
                email
            ),
            (STANDARD.encode(phone), phone),
            (hexed(email), email),
            (hexed(email).to_uppercase(), email),
            // 20 and 32 bytes: the hex has a sha-1's and a sha-256's length.
            (hexed("jmlsez.vhxp@fblcl.io"), "jmlsez.vhxp@fblcl.io"),
            (
                hexed("a.longer.address.name@example.io"),
                "a.longer.address.name@example.io"
            ),
            (
                alloc::format!("https://shop.example/p?q={}", hexed("jmlsez.vhxp@fblcl.io")),
                "jmlsez.vhxp@fblcl.io"
            ),
            // In a path: `/` is base64 too, so the segments are read apart.
            (
                alloc::format!("https://shop.example/p/{}", STANDARD.encode(email)),
                email
            ),
            (alloc::format!("/u/{}/x", hexed(email)), email),
            ("probe.person&#64;example.org".into(), email),
            ("probe.person&#x40;example.org".into(), email),
            ("probe.person&commat;example&period;org".into(), email),
            ("probe.person\\u0040example.org".into(), email),
            ("probe.person\\x40example.org".into(), email),
            // The escape's backslash escaped again (JSON text kept in a string).
            ("probe.person\\\\u0040example.org".into(), email),
            ("probe.person\\\\\\\\x40example.org".into(), email),
            // Punctuation escaped for a regular expression or a shell.
            ("probe.person\\@example.org".into(), email),
            ("probe\\.person\\@example\\.org".into(), email),
            ("call \\+1 650 555 0142".into(), phone),
            ("probe.person＠example.org".into(), email),
            ("probe.person﹫example．org".into(), email),
            ("call ＋１６５０５５５０１４２".into(), phone),
            // Two encodings in one value: both are found.
            (
                alloc::format!("jo＠x.io or {}", STANDARD.encode(email)),
                email
            ),
        ];
        let lenient = |url: bool| {
            use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode};
            let c = base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(DecodePaddingMode::Indifferent);
            let a = if url {
                &base64::alphabet::URL_SAFE
            } else {
                &base64::alphabet::STANDARD
            };
            GeneralPurpose::new(a, c)
        };
        for (value, raw) in &cases {
            let (out, _) = scrub_text(value, None).unwrap_or_else(|| panic!("{value} not found"));
            let digest = if raw.contains('@') {
                email_digest(raw)
            } else {
                phone_digest(raw, None)
            };
            // The digest is there, in the text or inside the re-encoded run.
            let in_run = out.split(['=', '&', '?', ' ', '/']).any(|run| {
                [false, true].iter().any(|url| {
                    lenient(*url)
                        .decode(run)
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .is_some_and(|t| t.contains(&digest))
                })
            });
            let visible =
                out.contains(&digest) || in_run || out.to_lowercase().contains(&hexed(&digest));
            assert!(visible, "{value} -> {out}");
            assert_eq!(scrub_text(&out, None), None, "{value} -> {out} scrubs once");
            for enc in [
                STANDARD.encode(raw),
                URL_SAFE_NO_PAD.encode(raw),
                hexed(raw),
            ] {
                assert!(
                    !out.contains(&enc[..enc.len() - 4]),
                    "{out} holds {raw} encoded"
                );
            }
        }
    }

    #[test]
    fn encodings_inside_encodings_and_other_digits_are_read() {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let email = "probe.person@example.org";
        let phone = "+33612345678";
        let b64 = |s: &[u8]| STANDARD.encode(s);
        let hexed = |s: &[u8]| {
            s.iter()
                .map(|b| alloc::format!("{b:02x}"))
                .collect::<String>()
        };
        let pct = |s: &str| {
            s.bytes()
                .map(|b| alloc::format!("%{b:02X}"))
                .collect::<String>()
        };
        let wide = |s: &str, be: bool| {
            s.encode_utf16()
                .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() })
                .collect::<Vec<u8>>()
        };
        let cases: Vec<(String, &str)> = alloc::vec![
            (b64(b64(email.as_bytes()).as_bytes()), email),
            (b64(b64(b64(email.as_bytes()).as_bytes()).as_bytes()), email),
            (hexed(b64(email.as_bytes()).as_bytes()), email),
            (b64(hexed(email.as_bytes()).as_bytes()), email),
            (pct(&b64(email.as_bytes())), email),
            (
                alloc::format!("https://s.example/?d={}", pct(&b64(email.as_bytes()))),
                email
            ),
            (b64(&wide(email, false)), email),
            (hexed(&wide(email, true)), email),
            (b64(b64(phone.as_bytes()).as_bytes()), phone),
            ("+٣٣ ٦ ١٢ ٣٤ ٥٦ ٧٨".into(), phone),
            ("tel: +३३ ६ १२ ३४ ५६ ७८ !".into(), phone),
            ("+33 (0)6 12 34 56 78".into(), phone),
        ];
        // Every level of the output, decoded as base64, hex or percent-encoding.
        fn levels(s: &str, out: &mut Vec<String>) {
            out.push(s.into());
            if out.len() > 8 {
                return;
            }
            let unhex = |s: &str| -> Option<Vec<u8>> {
                (s.len() % 2 == 0)
                    .then(|| {
                        s.as_bytes()
                            .chunks(2)
                            .map(|p| Some(hex(p[0])? * 16 + hex(p[1])?))
                            .collect()
                    })
                    .flatten()
            };
            let text = |b: Vec<u8>| {
                let utf16 = |be: bool| {
                    let u: Vec<u16> = b
                        .chunks(2)
                        .map(|p| {
                            let pair = [p[0], *p.get(1).unwrap_or(&0)];
                            if be {
                                u16::from_be_bytes(pair)
                            } else {
                                u16::from_le_bytes(pair)
                            }
                        })
                        .collect();
                    String::from_utf16(&u).ok().filter(|t| !t.contains('\0'))
                };
                String::from_utf8(b.clone())
                    .ok()
                    .filter(|t| !t.contains('\0'))
                    .or_else(|| utf16(b.first() == Some(&0)))
            };
            let tail = s.rsplit(['=', '?']).find(|p| !p.is_empty()).unwrap_or(s);
            for d in [
                unhex(tail),
                base64_decode(tail.trim_end_matches('=')),
                percent_decode(tail, false).map(String::into_bytes),
            ]
            .into_iter()
            .flatten()
            .filter_map(text)
            {
                if d != s && !d.is_empty() {
                    levels(&d, out);
                }
            }
        }
        for (value, raw) in &cases {
            let (out, _) =
                scrub_text(value, Some("FR")).unwrap_or_else(|| panic!("{value} not found"));
            assert_eq!(
                scrub_text(&out, Some("FR")),
                None,
                "{value} -> {out} scrubs once"
            );
            let digest = if raw.contains('@') {
                email_digest(raw)
            } else {
                phone_digest(raw, None)
            };
            let mut seen = Vec::new();
            levels(&out, &mut seen);
            assert!(
                seen.iter().any(|l| l.contains(&digest)),
                "{value} -> {out}: {seen:?}"
            );
            assert!(
                !seen.iter().any(|l| l.contains(raw)),
                "{value} -> {out}: {seen:?}"
            );
        }
    }

    #[test]
    fn ordinary_encoded_values_are_left_alone() {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        for v in [
            "a3f1c2d4-5b6e-4f70-8a9b-0c1d2e3f4a5b".to_string(),
            sha256_hex("x"),
            "5d41402abc4b2a76b9719d911017c592".into(),
            STANDARD.encode("just some words, no address"),
            STANDARD.encode([0u8, 159, 146, 150, 255, 64, 1, 2, 3, 4, 5, 6]),
            "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7".into(),
            "Fish &amp; chips &#8364;5 at the caf&eacute;".into(),
            "https://shop.example/products/ethiopia-guji?utm_source=newsletter".into(),
            "C:\\Users\\xavier\\unicode".into(),
            // Encoded twice, UTF-16, other scripts' digits: nothing to find in them.
            STANDARD.encode(STANDARD.encode("just some words, no address")),
            STANDARD.encode(
                "plain words here"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<u8>>(),
            ),
            "مرحبا ٢٠٢٦ — ١٢ ٣٤".into(),
            "अध्याय १२, पृष्ठ ३४".into(),
        ] {
            assert_eq!(scrub_text(&v, None), None, "{v}");
        }
    }

    #[test]
    fn scanning_is_linear() {
        // Many findings followed by a phone: the old rescanning was quadratic here.
        let mut s = String::new();
        for _ in 0..5000 {
            s.push_str("a@b.co ");
        }
        s.push_str("+1 650 555 0142 ");
        for _ in 0..20000 {
            s.push_str("@+");
        }
        let (out, _) = scrub_text(&s, None).unwrap();
        assert!(!out.contains("a@b.co"));
    }
}
