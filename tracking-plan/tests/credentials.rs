//! The credential rule on hostile addresses: it never panics, what it leaves holds no
//! credential's value, it is a projection, and it changes nothing but those values.

use proptest::prelude::*;
use tracking_plan::credentials::redact;

proptest! {
    #[test]
    fn redaction_leaves_no_credential_and_nothing_else_changed(
        parts in proptest::collection::vec(
            "(token|access_token|X-Amz-Signature|pass%77ord|api-key|utm_source|page|q|\\PC{0,3})(=|)(s3cr3t|[a-z0-9%]{0,6}|\\PC{0,4})",
            0..8,
        ),
        seps in proptest::collection::vec("[?&#;/]", 8),
        head in "(https://s\\.example/p|/p|\\PC{0,6})",
    ) {
        let mut url = head;
        for (p, s) in parts.iter().zip(&seps) {
            url.push_str(s);
            url.push_str(p);
        }
        let clean = redact(&url).unwrap_or_else(|| url.clone());
        prop_assert_eq!(redact(&clean), None, "a projection: {}", clean);
        // No credential's value is left as a parameter of its own after a `?` or `#` (one
        // inside another's value, `next=/reset/token=x`, is that parameter's text).
        let tail = clean.find(['?', '#']).map_or("", |i| &clean[i..]);
        for name in ["token", "access_token", "X-Amz-Signature", "pass%77ord", "api-key"] {
            for sep in ['?', '&', '#', ';'] {
                let planted = format!("{sep}{name}=s3cr3t");
                prop_assert!(!tail.contains(&planted), "{} left in {}", planted, clean);
            }
        }
        // Only values were replaced: taking every `redacted` out of both leaves the same
        // text on the parts around them.
        let head_len = url.find(['?', '#']).unwrap_or(url.len());
        prop_assert_eq!(&url[..head_len], &clean[..head_len]);
    }
}
