//! Campaign capture: decides which UTM parameters and ad click ids a landing-page URL
//! carries, and how their values are normalized (trimmed; source and medium lowercased).
//! Shared by the SDK (first- and last-touch capture) and the collector (enrichment).
//!
//! Query parsing is hand-written (percent-decoding and `+`): it is twenty lines, and the
//! SDK must not carry a URL crate.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Ad click ids captured from landing-page URLs.
pub const CLICK_IDS: [&str; 10] = [
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "fbclid",
    "msclkid",
    "ttclid",
    "yclid",
    "li_fat_id",
    "twclid",
];

/// What a URL says about the campaign that brought the visitor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Campaign {
    /// Segment `context.campaign` fields: `source`, `medium`, `name`, `term`, `content`.
    pub utm: Vec<(&'static str, String)>,
    /// Click ids by parameter name.
    pub click_ids: Vec<(&'static str, String)>,
}

impl Campaign {
    pub fn is_empty(&self) -> bool {
        self.utm.is_empty() && self.click_ids.is_empty()
    }
}

/// Decodes `%XX` and `+` in a query component (invalid escapes are kept as they are).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// UTM fields and click ids of a URL (or of a bare `?query`). The URL is scrubbed of raw
/// PII as a whole first: an address written with a character reference
/// (`utm_content=jo&#64;x.io`) would otherwise be cut at its `&` and `#`, and its local
/// part kept as a value no longer recognizable as an address.
pub fn from_url(url: &str) -> Campaign {
    let scrubbed = crate::pii::scrub_text(url, None).map(|(s, _)| s);
    let url = scrubbed.as_deref().unwrap_or(url);
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or_default();
    let mut c = Campaign::default();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match param(&decode(k), &decode(v)) {
            Some(Param::Utm(field, value)) => c.utm.push((field, value)),
            Some(Param::Click(id, value)) => c.click_ids.push((id, value)),
            None => {}
        }
    }
    c
}

/// A URL's path and query (`?…`, empty when none), as Segment's `context.page` keeps
/// them, from the URL scrubbed of raw PII as a whole (as [`from_url`], so an address is
/// not cut apart at a `&` or `#` of a character reference).
pub fn path_and_search(url: &str) -> (String, String) {
    let scrubbed = crate::pii::scrub_text(url, None).map(|(s, _)| s);
    split_path_and_search(scrubbed.as_deref().unwrap_or(url))
}

/// When `url` holds raw PII: its path and query from the URL scrubbed whole, to stand
/// for ones split from it before scrubbing (a browser's `location.search` of
/// `?e=jo&#64;x.io` is `?e=jo&`: the local part alone, no longer an address). `None`
/// when it holds none, so the split ones stand.
pub fn resplit(url: &str) -> Option<(String, String)> {
    let (clean, _) = crate::pii::scrub_text(url, None)?;
    Some(split_path_and_search(&clean))
}

fn split_path_and_search(url: &str) -> (String, String) {
    // By bytes: a `&str` pattern brings the two-way searcher into the SDK's wasm (944
    // bytes gzip, measured).
    let scheme = url.as_bytes().windows(3).position(|w| w == b"://");
    let rest = scheme.map_or(url, |i| &url[i + 3..]);
    let from_path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    let from_path = from_path.split('#').next().unwrap_or_default();
    let (path, query) = from_path.split_once('?').unwrap_or((from_path, ""));
    let path = if path.is_empty() { "/" } else { path };
    // Not `format!`: it brings `core::fmt` into the SDK's wasm (1,277 bytes gzip, measured).
    let mut search = String::new();
    if !query.is_empty() {
        search.push('?');
        search.push_str(query);
    }
    (path.to_string(), search)
}

/// What one decoded query parameter says about the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// A UTM parameter: its Segment `context.campaign` field and normalized value.
    Utm(&'static str, String),
    /// An ad click id: its parameter name and trimmed value.
    Click(&'static str, String),
}

/// Classifies a decoded query parameter (`None`: not a campaign parameter, or empty).
/// [`from_url`] applies it to every parameter of a URL it has scrubbed whole; the value
/// is scrubbed again after its own decoding, as a second check.
pub fn param(key: &str, value: &str) -> Option<Param> {
    let field = match key {
        "utm_source" => Some("source"),
        "utm_medium" => Some("medium"),
        "utm_campaign" => Some("name"),
        "utm_term" => Some("term"),
        "utm_content" => Some("content"),
        _ => None,
    };
    // Only then the value: the other parameters of a URL are not read, so not scanned.
    let click = match field {
        Some(_) => None,
        None => Some(*CLICK_IDS.iter().find(|c| **c == key)?),
    };
    // Values are checked for raw PII after decoding (`utm_content=jo%40x.io`).
    let scrubbed = crate::pii::scrub_text(value, None).map(|(s, _)| s);
    let value = scrubbed.as_deref().unwrap_or(value).trim();
    if value.is_empty() {
        return None;
    }
    Some(match field {
        Some(field) => Param::Utm(field, normalize(field, value)),
        None => Param::Click(click?, value.to_string()),
    })
}

/// Whether a query parameter name is an ad click id.
pub fn is_click_id(name: &str) -> bool {
    CLICK_IDS.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// Ad platforms' browser and click cookies, as client libraries copy them into events
/// (Jitsu's `context.clientIds.fbp`, a site's own `_gcl_au`): Meta (`_fbp`, `_fbc`),
/// Google Ads (`_gcl_au`, `_gcl_aw`, `_gcl_dc`), TikTok (`_ttp`), Microsoft UET
/// (`_uetsid`, `_uetvid`), Snap (`_scid`), Reddit (`_rdt_uuid`) and Pinterest
/// (`_pin_unauth`), each also without its leading underscore. Ad identifiers as much as
/// click ids are: without marketing consent they go too.
pub const AD_BROWSER_IDS: [&str; 11] = [
    "_fbp",
    "_fbc",
    "_gcl_au",
    "_gcl_aw",
    "_gcl_dc",
    "_ttp",
    "_uetsid",
    "_uetvid",
    "_scid",
    "_rdt_uuid",
    "_pin_unauth",
];

/// Whether a key names an ad identifier: a click id or an ad platform's browser id.
pub fn is_ad_id(name: &str) -> bool {
    let bare = name.strip_prefix('_').unwrap_or(name);
    is_click_id(name)
        || AD_BROWSER_IDS
            .iter()
            .any(|c| c[1..].eq_ignore_ascii_case(bare))
}

/// `url` without its click-id query parameters (`gclid=...`), or `None` when it has
/// none. Used when marketing consent is missing: a click id in a page URL is an ad
/// identifier as much as one in `context.clickIds`.
pub fn strip_click_ids(url: &str) -> Option<String> {
    let (head, rest) = url.split_once('?')?;
    let (query, frag) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut dropped = false;
    for pair in query.split('&') {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if is_click_id(decode(name).trim()) {
            dropped = true;
        } else {
            kept.push(pair);
        }
    }
    if !dropped {
        return None;
    }
    let mut out = head.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = frag {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// Trims a campaign value; lowercases `source` and `medium` (ASCII letters only: source
/// and medium names are ASCII in practice, and Unicode case tables would add about 10 KB
/// to the SDK).
pub fn normalize(field: &str, value: &str) -> String {
    let v = value.trim();
    if field == "source" || field == "medium" {
        v.to_ascii_lowercase()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_search_of_urls() {
        let ps = |u: &str| path_and_search(u);
        assert_eq!(
            ps("https://s.example/p/q?a=1#top"),
            ("/p/q".into(), "?a=1".into())
        );
        assert_eq!(ps("https://s.example"), ("/".into(), String::new()));
        assert_eq!(ps("https://s.example?a=1"), ("/".into(), "?a=1".into()));
        assert_eq!(ps("/local/path"), ("/local/path".into(), String::new()));
        let (path, search) = ps("https://s.example/u/jo.smith&#64;x.io?e=jo.smith&#64;x.io");
        assert!(
            !path.contains("jo.smith") && !search.contains("jo.smith"),
            "{path} {search}"
        );
        assert_eq!(resplit("https://s.example/p?utm_source=news"), None);
        let (path, search) = resplit("https://s.example/p?utm_content=jo.smith&#64;x.io").unwrap();
        assert_eq!(path, "/p");
        assert!(
            search.starts_with("?utm_content=") && !search.contains("jo.smith"),
            "{search}"
        );
    }

    #[test]
    fn an_address_cut_by_the_query_syntax_is_not_kept_in_part() {
        for url in [
            "https://s.example/?utm_content=jo.smith&#64;x.io&utm_source=news",
            "https://s.example/?utm_content=jo.smith&#x40;x.io",
            "https://s.example/?utm_term=jo.smith&commat;x.io#top",
            "https://s.example/?gclid=jo.smith&#64;x.io",
        ] {
            let c = from_url(url);
            let values: Vec<&String> = c
                .utm
                .iter()
                .map(|(_, v)| v)
                .chain(c.click_ids.iter().map(|(_, v)| v))
                .collect();
            assert!(
                values
                    .iter()
                    .all(|v| !v.contains("jo.smith") && !v.contains("x.io")),
                "{url}: {values:?}"
            );
            assert!(
                !values.is_empty(),
                "{url}: the parameter is still captured, as a digest"
            );
        }
        assert_eq!(
            from_url("https://s.example/?utm_content=jo.smith&#64;x.io&utm_source=news").utm[1],
            ("source", "news".to_string())
        );
    }

    #[test]
    fn ad_ids_are_click_ids_and_ad_platforms_browser_ids() {
        for id in [
            "gclid",
            "FBCLID",
            "fbp",
            "_fbp",
            "FBC",
            "_gcl_au",
            "gcl_aw",
            "_ttp",
            "ttp",
            "uetvid",
            "_rdt_uuid",
        ] {
            assert!(is_ad_id(id), "{id}");
        }
        for not in [
            "",
            "_",
            "ga4",
            "_ga",
            "clientId",
            "fbpx",
            "__fbp",
            "utm_source",
            "fb",
        ] {
            assert!(!is_ad_id(not), "{not}");
        }
    }

    #[test]
    fn utm_and_click_ids() {
        let c = from_url(
            "https://shop.example/landing?utm_source=%20Google%20&utm_medium=CPC&utm_campaign=Winter+Sale&gclid=Cj0abc&x=1#top",
        );
        assert_eq!(
            c.utm,
            vec![
                ("source", "google".to_string()),
                ("medium", "cpc".to_string()),
                ("name", "Winter Sale".to_string())
            ]
        );
        assert_eq!(c.click_ids, vec![("gclid", "Cj0abc".to_string())]);
        assert!(from_url("https://shop.example/").is_empty());
        assert!(from_url("?utm_source=").is_empty());
        assert_eq!(
            param("gclid", " G1 "),
            Some(Param::Click("gclid", "G1".into()))
        );
        assert_eq!(
            param("utm_medium", "CPC"),
            Some(Param::Utm("medium", "cpc".into()))
        );
        assert_eq!(param("utm_term", " "), None);
        assert_eq!(param("ref", "x"), None);
        // Decoded values are redacted: a raw email never becomes a campaign field.
        assert_eq!(
            param("utm_content", "jo@x.io"),
            Some(Param::Utm(
                "content",
                crate::identifiers::sha256_hex("jo@x.io")
            ))
        );
        assert!(
            matches!(param("fbclid", "jo@x.io"), Some(Param::Click("fbclid", v)) if !v.contains('@'))
        );
        let c = from_url("https://s.example/?utm_content=jo%40x.io");
        assert!(!c.utm[0].1.contains('@'));
    }

    #[test]
    fn click_ids_are_stripped_from_urls() {
        assert_eq!(
            strip_click_ids("https://s.example/p?a=1&gclid=G&fbclid=F#x").as_deref(),
            Some("https://s.example/p?a=1#x")
        );
        assert_eq!(strip_click_ids("/p?gclid=G").as_deref(), Some("/p"));
        assert_eq!(strip_click_ids("/p?a=1"), None);
        assert_eq!(strip_click_ids("?MSCLKID=x&b=2").as_deref(), Some("?b=2"));
    }

    #[test]
    fn decoding_is_total() {
        assert_eq!(decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(decode("%E2%82%AC"), "€");
        assert_eq!(decode("%"), "%");
    }
}
