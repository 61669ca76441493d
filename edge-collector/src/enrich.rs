//! Enrichment: decides what the collector adds to an accepted event from the edge:
//! the visitor's IP truncated before storage (IPv4 to /24, IPv6 to /48), the country
//! from the edge, the user agent parsed with a bot flag, and UTM parameters and ad click
//! ids normalized from the page URL.

use serde_json::{Map, Value};
use std::net::IpAddr;

/// What the edge knows about the request, independent of the platform.
#[derive(Debug, Clone, Default)]
pub struct EdgeInfo<'a> {
    /// `Origin` header: present for browser requests.
    pub origin: Option<&'a str>,
    /// The collector's own origin (`scheme://host[:port]`).
    pub own_origin: &'a str,
    /// The client IP (`CF-Connecting-IP`).
    pub ip: Option<&'a str>,
    /// ISO country code from the edge.
    pub country: Option<&'a str>,
    /// The request's `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// `Sec-GPC: 1` was sent.
    pub gpc: bool,
    /// The anonymous id in the collector's first-party cookie.
    pub cookie_id: Option<&'a str>,
    /// `Content-Encoding` of the body.
    pub content_encoding: Option<&'a str>,
    /// The site's Meta browser id cookie (`_fbp`), sent with first-party requests.
    pub fbp: Option<&'a str>,
}

/// Whether a value has the form of Meta's browser id, `fb.<subdomain index>.<creation
/// ms>.<random>` (anything else is not passed on).
pub fn valid_fbp(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    v.len() <= 64
        && parts.len() == 4
        && parts[0] == "fb"
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

pub use tracking_plan::campaign::CLICK_IDS;

/// Truncates an IP so it no longer singles out a device: IPv4 keeps /24, IPv6 /48.
/// Anything that is not an IP is dropped.
pub fn truncate_ip(ip: &str) -> Option<String> {
    match ip.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("{a}.{b}.{c}.0"))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}::", s[0], s[1], s[2]))
        }
    }
}

pub use crate::agent::Agent;

/// Parses a user agent (`crate::agent`'s rules).
pub fn parse_agent(ua: &str) -> Agent {
    crate::agent::parse(ua)
}

/// UTM parameters (as a Segment `context.campaign`) and click ids found in a URL's query,
/// by the shared `tracking_plan::campaign` rules.
pub fn campaign_from_url(url: &str) -> (Map<String, Value>, Map<String, Value>) {
    let c = tracking_plan::campaign::from_url(url);
    let map = |pairs: Vec<(&'static str, String)>| {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect::<Map<String, Value>>()
    };
    (map(c.utm), map(c.click_ids))
}

/// User agents and page URLs parsed during one request: a batch nearly always comes
/// from one browser, and its events repeat a few URLs, so each distinct string is parsed
/// once (at most 8 of each kind are kept).
#[derive(Debug, Default)]
pub struct ParseCache {
    agents: Vec<(String, Agent)>,
    campaigns: Vec<(String, Campaign)>,
}

/// A URL's campaign fields and click ids, as [`campaign_from_url`] gives them.
type Campaign = (Map<String, Value>, Map<String, Value>);

impl ParseCache {
    const KEEP: usize = 8;

    pub fn parse(&mut self, ua: &str) -> Agent {
        cached(&mut self.agents, ua, parse_agent)
    }

    /// [`campaign_from_url`] of `url`.
    pub fn campaign(&mut self, url: &str) -> Campaign {
        cached(&mut self.campaigns, url, campaign_from_url)
    }
}

/// `parse(text)`, from `seen` when this request parsed `text` before; kept there while
/// it holds fewer than [`ParseCache::KEEP`].
fn cached<T: Clone>(seen: &mut Vec<(String, T)>, text: &str, parse: fn(&str) -> T) -> T {
    if let Some((_, t)) = seen.iter().find(|(s, _)| s == text) {
        return t.clone();
    }
    let t = parse(text);
    if seen.len() < ParseCache::KEEP {
        seen.push((text.to_string(), t.clone()));
    }
    t
}

/// Adds the edge's facts to a message context (created if absent).
pub fn enrich(context: &mut Option<Value>, edge: &EdgeInfo<'_>, cache: &mut ParseCache) -> Agent {
    if !matches!(context, Some(Value::Object(_))) {
        *context = Some(Value::Object(Map::new()));
    }
    let Some(Value::Object(ctx)) = context else {
        unreachable!("set just above")
    };
    // IP: a server library passes the visitor's IP in context.ip; a browser's is the
    // connection's. Stored truncated either way.
    let ip = ctx
        .get("ip")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| edge.origin.and(edge.ip).map(str::to_string));
    match ip.as_deref().and_then(truncate_ip) {
        Some(t) => ctx.insert("ip".into(), Value::String(t)),
        None => ctx.remove("ip"),
    };
    // Meta's browser id from the site's cookie (a browser's own request only); consent
    // removes it again without marketing.
    if let Some(fbp) = edge.origin.and(edge.fbp).filter(|v| valid_fbp(v)) {
        ctx.insert("fbp".into(), Value::String(fbp.to_string()));
    }
    if let Some(country) = edge.country.filter(|c| c.len() == 2) {
        let loc = ctx
            .entry("location")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(loc) = loc {
            loc.entry("country")
                .or_insert_with(|| Value::String(country.to_string()));
        }
    }
    // The user agent: the event's own, or the browser's that sent it.
    if !ctx.contains_key("userAgent") {
        if let Some(ua) = edge.origin.and(edge.user_agent) {
            ctx.insert("userAgent".into(), Value::String(ua.to_string()));
        }
    }
    // No user agent (a server event): nothing to parse, and not a bot for that.
    let Some(ua) = ctx.get("userAgent").and_then(Value::as_str) else {
        campaign(ctx, cache);
        return Agent::default();
    };
    let agent = cache.parse(ua);
    let mut parsed = Map::new();
    parsed.insert("browser".into(), agent.browser.clone().into());
    parsed.insert("version".into(), agent.version.clone().into());
    parsed.insert("os".into(), agent.os.clone().into());
    parsed.insert("category".into(), agent.category.clone().into());
    parsed.insert("bot".into(), agent.bot.into());
    ctx.insert("userAgentParsed".into(), Value::Object(parsed));
    campaign(ctx, cache);
    agent
}

/// Campaign and click ids from the page URL fill in what the context does not say.
fn campaign(ctx: &mut Map<String, Value>, cache: &mut ParseCache) {
    let url = ctx
        .get("page")
        .and_then(|p| p.get("url").or_else(|| p.get("search")))
        .and_then(Value::as_str);
    let (from_url, clicks) = url.map(|u| cache.campaign(u)).unwrap_or_default();
    let campaign = ctx
        .entry("campaign")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(c) = campaign {
        for (k, v) in c.iter_mut() {
            if let Value::String(s) = v {
                *s = tracking_plan::campaign::normalize(k, s);
            }
        }
        for (k, v) in from_url {
            c.entry(k).or_insert(v);
        }
        if c.is_empty() {
            ctx.remove("campaign");
        }
    }
    if !clicks.is_empty() {
        let entry = ctx
            .entry("clickIds")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(e) = entry {
            for (k, v) in clicks {
                e.entry(k).or_insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ips_are_truncated() {
        assert_eq!(truncate_ip("203.0.113.77").as_deref(), Some("203.0.113.0"));
        assert_eq!(
            truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348").as_deref(),
            Some("2001:db8:85a3::")
        );
        assert_eq!(truncate_ip("not an ip"), None);
    }

    #[test]
    fn agents_and_bots() {
        let chrome = parse_agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36");
        assert_eq!((chrome.browser.as_str(), chrome.bot), ("Chrome", false));
        assert_eq!(chrome.category, "pc");
        let google =
            parse_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        assert!(google.bot);
        assert!(parse_agent("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36").bot);
        assert!(parse_agent("curl/8.5.0").bot);
    }

    #[test]
    fn the_parse_cache_answers_as_a_fresh_parse() {
        // More distinct URLs and agents than it keeps, each asked twice, interleaved: a
        // cache that mixed its entries up, or kept answering past its bound, fails here.
        let urls: Vec<String> = (0..12)
            .map(|i| format!("https://s.example/p?utm_source=s{i}&gclid=g{i}&q=jo{i}%40x.io"))
            .collect();
        let agents: Vec<String> = (0..12).map(|i| format!("curl/8.{i}.0")).collect();
        let mut cache = ParseCache::default();
        for round in 0..2 {
            for (u, a) in urls.iter().zip(&agents) {
                assert_eq!(cache.campaign(u), campaign_from_url(u), "{u} round {round}");
                assert_eq!(cache.parse(a), parse_agent(a), "{a} round {round}");
            }
        }
        assert_eq!(cache.campaigns.len(), ParseCache::KEEP);
        assert_eq!(cache.agents.len(), ParseCache::KEEP);
        let (utm, clicks) = cache.campaign(&urls[3]);
        assert_eq!(utm.get("source"), Some(&json!("s3")));
        assert_eq!(clicks.get("gclid"), Some(&json!("g3")));
    }

    #[test]
    fn campaign_and_click_ids_from_url() {
        let (c, k) = campaign_from_url(
            "https://shop.example/landing?utm_source=%20Google%20&utm_medium=CPC&utm_campaign=Winter%20Sale&gclid=Cj0abc&x=1#top",
        );
        assert_eq!(
            Value::Object(c),
            json!({"source": "google", "medium": "cpc", "name": "Winter Sale"})
        );
        assert_eq!(Value::Object(k), json!({"gclid": "Cj0abc"}));
        let (c, k) = campaign_from_url("https://shop.example/");
        assert!(c.is_empty() && k.is_empty());
    }

    #[test]
    fn enrich_fills_the_context() {
        let mut ctx = Some(json!({
            "page": {"url": "https://s.example/?utm_source=News&fbclid=F1"},
            "campaign": {"medium": " Email "}
        }));
        let edge = EdgeInfo {
            origin: Some("https://s.example"),
            ip: Some("198.51.100.23"),
            country: Some("DE"),
            user_agent: Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15"),
            ..EdgeInfo::default()
        };
        let agent = enrich(&mut ctx, &edge, &mut ParseCache::default());
        let ctx = ctx.unwrap();
        assert_eq!(ctx["ip"], "198.51.100.0");
        assert_eq!(ctx["location"]["country"], "DE");
        assert_eq!(
            ctx["campaign"],
            json!({"medium": "email", "source": "news"})
        );
        assert_eq!(ctx["clickIds"], json!({"fbclid": "F1"}));
        assert_eq!(ctx["userAgentParsed"]["browser"], "Safari");
        assert!(!agent.bot);
    }

    #[test]
    fn server_events_keep_their_own_ip_truncated() {
        let mut ctx = Some(json!({"ip": "203.0.113.9"}));
        let edge = EdgeInfo {
            ip: Some("10.0.0.1"),
            ..EdgeInfo::default()
        };
        enrich(&mut ctx, &edge, &mut ParseCache::default());
        assert_eq!(ctx.unwrap()["ip"], "203.0.113.0");
        let mut none = None;
        enrich(&mut none, &edge, &mut ParseCache::default());
        assert!(
            none.unwrap().get("ip").is_none(),
            "a server's own IP is not the visitor's"
        );
    }
}
