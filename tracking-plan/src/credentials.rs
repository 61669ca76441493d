//! Credentials in URLs: decides which query and fragment parameters of an address carry
//! a credential (a password reset or magic-link token, an OAuth token or client secret,
//! an API key, a signed URL's signature), whose values are then written `redacted`.
//! A page's address travels with every event (`context.page.url`, `search`, `referrer`):
//! a reset link's token stored there lets whoever reads the events reset the password
//! while it is valid. Applied to the page's facts by the SDK and to every string value
//! by the PII scan both sides run (`crate::pii::scrub_string`), so both apply the same
//! names.

use crate::campaign::decode;
use alloc::string::String;

/// Names (lowercase, letters and digits only: `X-Amz-Signature` is `xamzsignature`) that
/// end with one of these carry a credential: `reset_token`, `access_token`,
/// `client_secret`, `new_password`, `X-Amz-Signature`, `api_key`, `X-Amz-Credential`.
const ENDINGS: [&str; 7] = [
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "apikey",
    "credential",
];

/// Names that are a credential whole: `pwd`, `sig`, `auth`, `otp`, `jwt`, a CSRF token.
const WHOLE: [&str; 7] = ["pwd", "sig", "auth", "authorization", "otp", "jwt", "csrf"];

/// Whether a parameter name names a credential (see [`ENDINGS`] and [`WHOLE`]), read
/// percent-decoded.
pub fn is_credential(name: &str) -> bool {
    let mut n = [0u8; 40];
    let mut len = 0;
    for b in decode(name).bytes().filter(u8::is_ascii_alphanumeric) {
        // A name longer than any real one is not one: nothing to redact.
        let Some(slot) = n.get_mut(len) else {
            return false;
        };
        *slot = b.to_ascii_lowercase();
        len += 1;
    }
    let n = &n[..len];
    len > 0
        && (ENDINGS.iter().any(|e| n.ends_with(e.as_bytes()))
            || WHOLE.iter().any(|w| w.as_bytes() == n))
}

/// `url` (an address, or a query or fragment alone) with the value of each parameter
/// after its first `?` or `#` whose name is a credential written `redacted`; `None`
/// when it has none. Parameters are split at `&`, `;`, `?` and `#`, so a hash route's
/// query (`#/reset?token=…`) and an OAuth fragment (`#access_token=…`) are read too.
/// Everything else is kept as it came, byte for byte.
pub fn redact(url: &str) -> Option<String> {
    // Byte loops, not `str` patterns of several characters: those cost the SDK's wasm
    // 124 bytes gzip more (52,422 against 52,298).
    let b = url.as_bytes();
    let delimiter = |c: &u8| matches!(c, b'?' | b'#' | b'&' | b';');
    let mut from = b.iter().position(|c| matches!(c, b'?' | b'#'))? + 1;
    let (mut out, mut copied): (Option<String>, usize) = (None, 0);
    while from <= b.len() {
        let end = b[from..]
            .iter()
            .position(delimiter)
            .map_or(b.len(), |i| from + i);
        let param = &b[from..end];
        if let Some(eq) = param.iter().position(|c| *c == b'=') {
            let (name, value) = (&url[from..from + eq], &url[from + eq + 1..end]);
            if !value.is_empty() && value != "redacted" && is_credential(name) {
                let o = out.get_or_insert_with(|| String::with_capacity(url.len()));
                o.push_str(&url[copied..from + eq + 1]);
                o.push_str("redacted");
                copied = end;
            }
        }
        from = end + 1;
    }
    let mut o = out?;
    o.push_str(&url[copied..]);
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_go_and_the_rest_stays() {
        let cases = [
            (
                "https://shop.example/reset?token=Zx81kQ&utm_source=mail",
                "https://shop.example/reset?token=redacted&utm_source=mail",
            ),
            (
                "/login?email_sent=1&magic_link_token=abc.def&next=%2Fcart",
                "/login?email_sent=1&magic_link_token=redacted&next=%2Fcart",
            ),
            (
                "https://cdn.example/f.pdf?X-Amz-Credential=AK%2F1&X-Amz-Signature=9f0e&X-Amz-Expires=60",
                "https://cdn.example/f.pdf?X-Amz-Credential=redacted&X-Amz-Signature=redacted&X-Amz-Expires=60",
            ),
            (
                "https://app.example/cb#access_token=ya29.x&token_type=Bearer&state=s1",
                "https://app.example/cb#access_token=redacted&token_type=Bearer&state=s1",
            ),
            (
                "https://app.example/#/reset?Password=hunter2;sig=x",
                "https://app.example/#/reset?Password=redacted;sig=redacted",
            ),
            ("?api_key=k1&apiKey=k2&client_secret=s", "?api_key=redacted&apiKey=redacted&client_secret=redacted"),
            ("?new%5Fpassword=p", "?new%5Fpassword=redacted"),
        ];
        for (raw, want) in cases {
            assert_eq!(redact(raw).as_deref(), Some(want), "{raw}");
            assert_eq!(redact(want), None, "a projection: {want}");
        }
    }

    #[test]
    fn addresses_without_credentials_are_left_alone() {
        for url in [
            "https://shop.example/products/guji?utm_source=news&gclid=G1&page=2",
            "https://shop.example/checkout?session_id=cs_test_1&code=SUMMER",
            "https://shop.example/?token=",
            "https://shop.example/token=1/secret?tokenize=yes&passport=FR",
            "no address at all",
            "?=&&==#",
        ] {
            assert_eq!(redact(url), None, "{url}");
        }
        assert!(!is_credential(&"a".repeat(100)));
        assert!(is_credential("Authorization") && is_credential("reset-token"));
        assert!(!is_credential("tokens") && !is_credential("keyword"));
    }
}
