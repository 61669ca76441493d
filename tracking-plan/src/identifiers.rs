//! Identifiers: decides how an email or phone number is normalized before hashing, what
//! its SHA-256 is, which identifier values are too generic to match people on, and where
//! raw emails and phone numbers hide in event values.
//!
//! The browser SDK and the collector both compile this module, so a visitor typing an
//! email on a phone and on a laptop produces the same hash on both sides.
//!
//! Case folding is ASCII-only: Unicode case tables add ~12 KB gzip to the SDK's wasm, and
//! email domains and almost all local parts are ASCII. Non-ASCII letters are kept as typed.
//!
//! Phone numbers are normalized by hand-written rules for the supported default
//! countries (libphonenumber's metadata would add hundreds of KB to the SDK).

use alloc::string::{String, ToString};
#[cfg(feature = "std")]
use alloc::vec::Vec;

/// How an email is normalized. `Standard` (trim, lowercase) is Meta's rule and Sightline's
/// identity key; `Google` additionally removes dots before the `@` of gmail.com and
/// googlemail.com addresses, as Google's Customer Match requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmailVariant {
    #[default]
    Standard,
    Google,
}

/// How a phone number is written before hashing. `E164` (`+16505551212`) is Google's
/// form and Sightline's identity key; `Meta` hashes the digits without the `+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PhoneVariant {
    #[default]
    E164,
    Meta,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifierError {
    Empty,
    /// Not of the form local@domain.tld.
    InvalidEmail,
    /// A character that has no place in a phone number (letters, for example).
    InvalidPhoneCharacter(char),
    /// Too few or too many digits for the country, or a number that cannot be E.164.
    InvalidPhoneLength,
    /// A national number needs a default country, and this one is not supported.
    UnsupportedCountry(String),
    /// A well-known placeholder or test value (see [`is_blocked_value`]).
    Blocked,
}

impl IdentifierError {
    /// A stable snake_case code (for the SDK, which carries no formatter).
    pub fn code(&self) -> &'static str {
        match self {
            IdentifierError::Empty => "empty",
            IdentifierError::InvalidEmail => "invalid_email",
            IdentifierError::InvalidPhoneCharacter(_) => "invalid_phone_character",
            IdentifierError::InvalidPhoneLength => "invalid_phone_length",
            IdentifierError::UnsupportedCountry(_) => "unsupported_country",
            IdentifierError::Blocked => "blocked",
        }
    }
}

impl core::fmt::Display for IdentifierError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IdentifierError::Empty => f.write_str("empty value"),
            IdentifierError::InvalidEmail => f.write_str("not a valid email address"),
            IdentifierError::InvalidPhoneCharacter(c) => {
                write!(f, "invalid character {c:?} in phone number")
            }
            IdentifierError::InvalidPhoneLength => {
                f.write_str("wrong number of digits for a phone number")
            }
            IdentifierError::UnsupportedCountry(c) => {
                write!(f, "unsupported default country {c:?}")
            }
            IdentifierError::Blocked => f.write_str("placeholder or test value"),
        }
    }
}

/// `s[a..b]`, or `""` if that is not a slice of `s`. Every index here comes from a search
/// in the same string, so the empty case never happens; the checked form keeps core's
/// slicing panic and its message formatting (about 3 KB gzip of the SDK's wasm) out of the
/// build.
fn sub(s: &str, a: usize, b: usize) -> &str {
    s.get(a..b).unwrap_or_default()
}

/// SHA-256 as 64 lowercase hex characters.
pub fn sha256_hex(input: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(input.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

/// Whether `s` looks like a SHA-256 hex digest (64 lowercase or uppercase hex digits).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_email_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '\''
                | '*'
                | '+'
                | '/'
                | '='
                | '?'
                | '^'
                | '_'
                | '`'
                | '{'
                | '|'
                | '}'
                | '~'
                | '.'
                | '-'
        )
        || !c.is_ascii()
}

/// Local-part characters when finding an address inside text: RFC 5322 allows `/ = ? & #`
/// and quotes too, but inside URLs and prose those delimit the address, and real
/// addresses almost never use them.
fn is_found_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '!' | '$' | '%' | '*' | '+' | '^' | '_' | '~' | '.' | '-')
        || !c.is_ascii()
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.' || !c.is_ascii()
}

/// Normalizes an email address: trims white space, lowercases (ASCII), checks its form
/// (one `@`, a local part of at most 64 characters, a dotted domain), and for
/// [`EmailVariant::Google`] removes dots before `@gmail.com` / `@googlemail.com`.
pub fn normalize_email(raw: &str, variant: EmailVariant) -> Result<String, IdentifierError> {
    let s = raw.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err(IdentifierError::Empty);
    }
    let (local, domain) = s.split_once('@').ok_or(IdentifierError::InvalidEmail)?;
    let valid = !local.is_empty()
        && local.len() <= 64
        && s.len() <= 254
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.as_bytes().windows(2).any(|w| w == b"..")
        && local.chars().all(is_email_local_char)
        && domain.contains('.')
        && domain.chars().all(is_domain_char)
        && domain
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
        && domain.rfind('.').is_some_and(|dot| domain.len() - dot > 2);
    if !valid {
        return Err(IdentifierError::InvalidEmail);
    }
    if variant == EmailVariant::Google && matches!(domain, "gmail.com" | "googlemail.com") {
        let mut out: String = local.chars().filter(|&c| c != '.').collect();
        out.push('@');
        out.push_str(domain);
        return Ok(out);
    }
    Ok(s)
}

/// Normalizes then hashes an email; blocked test addresses give [`IdentifierError::Blocked`].
pub fn hash_email(raw: &str, variant: EmailVariant) -> Result<String, IdentifierError> {
    let n = normalize_email(raw, variant)?;
    if is_blocked_value(&n) {
        return Err(IdentifierError::Blocked);
    }
    Ok(sha256_hex(&n))
}

/// Dialling rules of a supported default country.
struct Country {
    code: &'static str,
    calling_code: &'static str,
    /// The national (trunk) prefix dropped before adding the calling code.
    trunk: &'static str,
    /// Allowed lengths of the national significant number.
    nsn: (usize, usize),
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        calling_code: "1",
        trunk: "1",
        nsn: (10, 10),
    },
    Country {
        code: "CA",
        calling_code: "1",
        trunk: "1",
        nsn: (10, 10),
    },
    Country {
        code: "GB",
        calling_code: "44",
        trunk: "0",
        nsn: (9, 10),
    },
    Country {
        code: "DE",
        calling_code: "49",
        trunk: "0",
        nsn: (6, 13),
    },
    Country {
        code: "FR",
        calling_code: "33",
        trunk: "0",
        nsn: (9, 9),
    },
    Country {
        code: "RU",
        calling_code: "7",
        trunk: "8",
        nsn: (10, 10),
    },
    Country {
        code: "KZ",
        calling_code: "7",
        trunk: "8",
        nsn: (10, 10),
    },
    Country {
        code: "UA",
        calling_code: "380",
        trunk: "0",
        nsn: (9, 9),
    },
    Country {
        code: "IN",
        calling_code: "91",
        trunk: "0",
        nsn: (10, 10),
    },
    Country {
        code: "BR",
        calling_code: "55",
        trunk: "0",
        nsn: (10, 11),
    },
];

/// The ISO 3166 codes accepted as a default country for national numbers.
pub fn supported_countries() -> impl Iterator<Item = &'static str> {
    COUNTRIES.iter().map(|c| c.code)
}

/// The first code point of each run of ten decimal digits in another script than ASCII
/// (Arabic-Indic `٣`, Persian `۳`, Devanagari `३`, Bengali, Thai, fullwidth `３`, …): a
/// phone typed on those keyboards is the same number.
const DIGIT_ZEROS: [u32; 23] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0xFF10,
];

/// The ASCII space or dash a typographic one between digit groups stands for: no-break,
/// narrow no-break, thin and other fixed-width spaces; hyphens, dashes and the minus.
pub fn phone_separator(c: char) -> Option<char> {
    match c {
        '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => Some(' '),
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' => Some('-'),
        _ => None,
    }
}

/// The ASCII digit `c` stands for, in any script of `DIGIT_ZEROS`.
pub fn ascii_digit(c: char) -> Option<char> {
    if c.is_ascii_digit() {
        return Some(c);
    }
    let u = c as u32;
    let zero = DIGIT_ZEROS.iter().find(|z| (**z..=**z + 9).contains(&u))?;
    char::from_digit(u - zero, 10)
}

/// Normalizes a phone number to E.164 (`+` and 8 to 15 digits). Spaces, dashes, dots,
/// slashes and parentheses are ignored, a bracketed trunk `(0)` is dropped, and digits
/// of other scripts read as their ASCII digits. A number starting with `+` or the international
/// prefix `00` (`011` from US/CA) is taken as international; otherwise the default
/// country's trunk prefix (0, or 8 in RU/KZ, or 1 in US/CA) is dropped and its calling
/// code added. A national number that already starts with the calling code (RU `7…`,
/// US `1…`) is recognised by its length.
pub fn normalize_phone(raw: &str, default_country: &str) -> Result<String, IdentifierError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(IdentifierError::Empty);
    }
    let mut digits = String::with_capacity(s.len());
    let mut plus = false;
    let mut skip = 0;
    for (i, c) in s.char_indices() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        match (c, ascii_digit(c)) {
            (_, Some(d)) => digits.push(d),
            ('+' | '\u{FF0B}', _) if i == 0 => plus = true,
            // `+33 (0)6 12 34 56 78`: the trunk 0 in brackets is dialled only from
            // inside the country, never after the calling code.
            ('(', _) if s.as_bytes().get(i + 1..i + 3) == Some(b"0)") => skip = 2,
            (' ' | '-' | '.' | '(' | ')' | '/', _) => {}
            (c, _) if phone_separator(c).is_some() => {}
            (other, _) => return Err(IdentifierError::InvalidPhoneCharacter(other)),
        }
    }
    let country = COUNTRIES
        .iter()
        .find(|c| c.code.eq_ignore_ascii_case(default_country.trim()));
    let north_american = country.is_some_and(|c| c.calling_code == "1");
    let international = if plus {
        Some(digits.as_str())
    } else {
        digits
            .strip_prefix("00")
            .or_else(|| digits.strip_prefix("011").filter(|_| north_american))
    };
    let e164_digits = match international {
        Some(d) => d.to_string(),
        None => {
            let c = country
                .ok_or_else(|| IdentifierError::UnsupportedCountry(default_country.to_string()))?;
            let (min, max) = c.nsn;
            let nsn = if (min..=max).contains(&digits.len()) && !digits.starts_with(c.trunk) {
                digits.as_str()
            } else if let Some(rest) = digits
                .strip_prefix(c.trunk)
                .filter(|r| (min..=max).contains(&r.len()))
            {
                rest
            } else if let Some(rest) = digits
                .strip_prefix(c.calling_code)
                .filter(|r| (min..=max).contains(&r.len()))
            {
                rest
            } else if (min..=max).contains(&digits.len()) {
                // A trunk digit that is really part of the number (DE/BR lengths vary).
                digits.as_str()
            } else {
                return Err(IdentifierError::InvalidPhoneLength);
            };
            let mut d = String::from(c.calling_code);
            d.push_str(nsn);
            d
        }
    };
    if !(8..=15).contains(&e164_digits.len()) || e164_digits.starts_with('0') {
        return Err(IdentifierError::InvalidPhoneLength);
    }
    let mut out = String::with_capacity(e164_digits.len() + 1);
    out.push('+');
    out.push_str(&e164_digits);
    Ok(out)
}

/// Normalizes then hashes a phone number in the chosen variant.
pub fn hash_phone(
    raw: &str,
    default_country: &str,
    variant: PhoneVariant,
) -> Result<String, IdentifierError> {
    let e164 = normalize_phone(raw, default_country)?;
    if is_blocked_value(&e164) {
        return Err(IdentifierError::Blocked);
    }
    Ok(sha256_hex(match variant {
        PhoneVariant::E164 => &e164,
        PhoneVariant::Meta => sub(&e164, 1, e164.len()),
    }))
}

/// Placeholder values that clients send when they have no real identifier; matching on
/// them would merge unrelated people.
const BLOCKED: &[&str] = &[
    "-1",
    "null",
    "nil",
    "undefined",
    "anonymous",
    "anon",
    "guest",
    "id",
    "user",
    "userid",
    "user_id",
    "email",
    "phone",
    "true",
    "false",
    "nan",
    "none",
    "[object object]",
    "n/a",
    "na",
    "unknown",
    "test",
    "abc123",
    "test@test.com",
    "test@example.com",
    "a@a.com",
    "email@example.com",
    "user@example.com",
    "noemail@noemail.com",
    "none@none.com",
];

/// The blocked placeholder values (lowercase), for documentation and tests.
pub fn blocked_values() -> &'static [&'static str] {
    BLOCKED
}

/// SHA-256 of the blocked test emails, so hashed identifiers are blocked too
/// (checked against [`sha256_hex`] by a test). Only the collector receives hashed
/// identifiers; the browser build (without `std`) hashes plain values itself, so the
/// table stays out of its wasm.
#[cfg(feature = "std")]
const BLOCKED_EMAIL_HASHES: &[&str] = &[
    // test@test.com
    "f660ab912ec121d1b1e928a0bb4bc61b15f5ad44d5efdc4e1c92a25e99b8e44a",
    // test@example.com
    "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b",
    // a@a.com
    "7dcb0cd247aa94896e665c337696a7be18d387a78d6d55b4854b7ff7d5925042",
    // email@example.com
    "2a539d6520266b56c3b0c525b9e6128858baeccb5ee9b694a2906e123c8d6dd3",
    // user@example.com
    "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514",
    // noemail@noemail.com
    "8290b86681ecf225cb89535a606aa740e923a6fb1575c736423288bd1f0b98bd",
    // none@none.com
    "ca871b3caae791a6a4b969195738f187bc7e993d13e98d522153a21885557fb6",
];

/// Whether an identifier value must never be used for matching: empty, all zeros and
/// dashes, `null`/`undefined`/`guest`/… (also quoted), well-known test emails and their
/// hashes. Case and surrounding white space are ignored.
pub fn is_blocked_value(value: &str) -> bool {
    let mut v = value.trim();
    // Quoted variants: "null", 'null', `null`.
    while v.len() >= 2 {
        let (first, last) = (v.as_bytes()[0], v.as_bytes()[v.len() - 1]);
        if first == last && matches!(first, b'"' | b'\'' | b'`') {
            v = sub(v, 1, v.len() - 1).trim();
        } else {
            break;
        }
    }
    if v.bytes().all(|b| b == b'0' || b == b'-') {
        return true; // empty, "0", "000", "---", "0-0"
    }
    let lower = v.to_ascii_lowercase();
    #[cfg(feature = "std")]
    if BLOCKED_EMAIL_HASHES.contains(&lower.as_str()) {
        return true;
    }
    BLOCKED.contains(&lower.as_str())
}

/// What kind of raw personal data a value holds. `Credential` is what the walkers
/// (`crate::pii::scrub_string`) also report: a credential in an address, written
/// `redacted` (`crate::credentials`); [`crate::pii::detect`] never answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiKind {
    Email,
    Phone,
    Credential,
}

impl PiiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Credential => "credential",
        }
    }
}

/// Finds an email address inside free text: the first `local@domain.tld` run that
/// normalizes as an email.
pub fn find_email(text: &str) -> Option<&str> {
    for (at, _) in text.match_indices('@') {
        let start = sub(text, 0, at)
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_found_local_char(*c))
            .last()
            .map_or(at, |(i, _)| i);
        let end = sub(text, at + 1, text.len())
            .char_indices()
            .take_while(|(_, c)| is_domain_char(*c))
            .last()
            .map_or(at + 1, |(i, c)| at + 1 + i + c.len_utf8());
        let candidate = sub(text, start, end).trim_end_matches('.');
        if start < at && normalize_email(candidate, EmailVariant::Standard).is_ok() {
            return Some(candidate);
        }
    }
    None
}

/// Whether a whole value is a phone number: phone characters only, and either an
/// explicit international form (`+…`, `00…`, 8 to 15 digits) or a national number
/// grouped like one (separators, at least 9 digits). Bare digit runs are not flagged: order ids and timestamps look
/// the same.
pub fn looks_like_phone(value: &str) -> bool {
    let v = value.trim();
    let digits = v.bytes().filter(u8::is_ascii_digit).count();
    if !(8..=15).contains(&digits) {
        return false;
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')' | '+' | '/'))
    {
        return false;
    }
    // `00` and a country code's first digit, as `pii::phone_anchor` reads it: `00.00
    // 0000` (the seconds and offset of a time, `+` read as a space) is not one.
    let international = v.starts_with('+')
        || (v.starts_with("00")
            && v.as_bytes()
                .get(2)
                .is_some_and(|c| (b'1'..=b'9').contains(c)));
    // National numbers have at least 9 digits in the supported countries; 8-digit
    // groups are more often dates (2026-11-23).
    let grouped = v.contains(' ') || v.contains('-') || v.contains('(');
    international || (grouped && digits >= 9 && !v.contains('.'))
}

/// Classifies a string value as raw PII: an email anywhere in it, or a value that is a
/// phone number. Hex digests are never PII findings.
pub fn detect_pii(value: &str) -> Option<PiiKind> {
    crate::pii::detect(crate::pii::FieldKind::Other, value)
}

/// Finds a phone number in international form (`+` then 8 to 15 digits, grouped with
/// spaces, dashes, dots or parentheses) inside free text. (National forms inside text
/// are found by the PII walker when written as one: `crate::pii`.)
pub fn find_international_phone(text: &str) -> Option<&str> {
    for (plus, _) in text.match_indices('+') {
        let rest = sub(text, plus, text.len());
        let end = rest
            .char_indices()
            .skip(1)
            .find(|(_, c)| !(c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')')))
            .map_or(rest.len(), |(i, _)| i);
        let candidate = sub(rest, 0, end).trim_end_matches([' ', '-', '.', '(']);
        let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
        if (8..=15).contains(&digits)
            && sub(candidate, 1, candidate.len())
                .starts_with(|c: char| c.is_ascii_digit() || c == '(')
        {
            return Some(candidate);
        }
    }
    None
}

/// Walks a JSON value and reports the JSON path and kind of every raw email or phone
/// number in its keys and strings (see [`crate::pii`]).
#[cfg(feature = "std")]
pub fn find_pii(value: &serde_json::Value, path: &str, out: &mut Vec<(String, PiiKind)>) {
    crate::pii::find_pii(value, path, out)
}

/// Returns `s` with every raw email and phone number replaced by its digest, or `None`
/// when there is none ([`crate::pii::scrub_text`]).
pub fn redact_str(s: &str, country: Option<&str>) -> Option<(String, PiiKind)> {
    crate::pii::scrub_text(s, country)
}
