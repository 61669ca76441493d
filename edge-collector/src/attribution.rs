//! Multi-touch attribution: decides which channel and campaign each visit came from,
//! and how a conversion's credit (and revenue) is split over the visits before it, per
//! model and click window; and the report by channel and campaign with costs.
//!
//! - A *touch* is a visit: the first page view of a session (`context.sessionId`), with
//!   its campaign (`context.campaign`), click ids (`context.clickIds`) and referrer.
//!   Touches are read from the profile's stored page views, so they follow the profile
//!   across its stitched devices, merges, unmerges and erasure like the events do.
//! - *Channels* come from the source's rules (`attribution.channels`, in order), else
//!   the default grouping: paid search (`gclid`, `msclkid`, `yclid`, `gbraid`, `wbraid`
//!   or a `cpc`/`ppc` medium), paid social (`fbclid`, `ttclid` or a paid-social medium),
//!   email, organic search (a search engine's referrer), referral (another site's
//!   referrer), other (a campaign matching no rule) and direct.
//! - *Models*: first touch, last non-direct touch, linear, and position-based (40% first,
//!   40% last, 20% split between the rest), each over click windows of 7 and 28 days.
//!   A conversion with no touch in its window is credited to `direct`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub const WINDOWS: [u32; 2] = [7, 28];
pub const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    FirstTouch,
    LastNonDirect,
    Linear,
    PositionBased,
}

impl Model {
    pub const ALL: [Model; 4] = [
        Model::FirstTouch,
        Model::LastNonDirect,
        Model::Linear,
        Model::PositionBased,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Model::FirstTouch => "first_touch",
            Model::LastNonDirect => "last_non_direct",
            Model::Linear => "linear",
            Model::PositionBased => "position_based",
        }
    }
    pub fn from_name(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A conversion event and where its revenue is (`attribution.conversions`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConversionRule {
    pub event: String,
    /// The property holding the revenue (the example site: `total`).
    #[serde(default)]
    pub revenue: Option<String>,
}

/// One channel rule: a touch matching any of its lists is in the channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelRule {
    pub name: String,
    #[serde(default)]
    pub click_ids: Vec<String>,
    /// `utm_medium` values (lowercase).
    #[serde(default)]
    pub mediums: Vec<String>,
    /// `utm_source` values (lowercase).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Referrer hosts, matched as the host or a subdomain of it; `google.` matches any
    /// Google country domain.
    #[serde(default)]
    pub referrers: Vec<String>,
}

/// A source's attribution settings (`attribution` in `SOURCES`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributionConfig {
    #[serde(default)]
    pub conversions: Vec<ConversionRule>,
    /// Channel rules in order; none: the default grouping.
    #[serde(default)]
    pub channels: Vec<ChannelRule>,
    /// The currency reports are in (costs and revenue are converted to it).
    #[serde(default)]
    pub currency: Option<String>,
}

impl AttributionConfig {
    pub fn conversion(&self, event: Option<&str>) -> Option<&ConversionRule> {
        let e = event?;
        self.conversions.iter().find(|c| c.event == e)
    }
    pub fn currency(&self) -> &str {
        self.currency.as_deref().unwrap_or("USD")
    }
}

const SEARCH_ENGINES: &[&str] = &[
    "google.",
    "bing.com",
    "duckduckgo.com",
    "yahoo.",
    "yandex.",
    "baidu.com",
    "ecosia.org",
    "search.brave.com",
    "qwant.com",
    "startpage.com",
    "naver.com",
    "seznam.cz",
];

fn rule(name: &str, click_ids: &[&str], mediums: &[&str], referrers: &[&str]) -> ChannelRule {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    ChannelRule {
        name: name.into(),
        click_ids: v(click_ids),
        mediums: v(mediums),
        sources: Vec::new(),
        referrers: v(referrers),
    }
}

/// The default grouping, in order (referral, other and direct are the fallbacks).
pub fn default_channels() -> Vec<ChannelRule> {
    vec![
        rule(
            "paid_search",
            &["gclid", "msclkid", "yclid", "gbraid", "wbraid", "dclid"],
            &[
                "cpc",
                "ppc",
                "paidsearch",
                "paid_search",
                "paid-search",
                "sem",
            ],
            &[],
        ),
        rule(
            "paid_social",
            &["fbclid", "ttclid", "li_fat_id", "twclid", "scclid", "epik"],
            &[
                "paid_social",
                "paidsocial",
                "paid-social",
                "social_paid",
                "cpm",
            ],
            &[],
        ),
        rule("email", &[], &["email", "e-mail", "newsletter"], &[]),
        rule("organic_search", &[], &["organic"], SEARCH_ENGINES),
    ]
}

/// A visit, as its first page view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Touch {
    pub at_ms: i64,
    pub channel: String,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
}

/// A stored page view, as attribution reads it.
#[derive(Debug, Clone, Default)]
pub struct PageView {
    pub at_ms: i64,
    pub session: Option<String>,
    pub anonymous_id: Option<String>,
    /// `context.campaign` (a JSON object), `context.clickIds`, the referrer and URL.
    pub campaign: Option<Value>,
    pub click_ids: Option<Value>,
    pub referrer: Option<String>,
    pub url: Option<String>,
}

fn host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let h = rest.split(['/', '?', '#']).next()?;
    let h = h.rsplit_once('@').map_or(h, |(_, h)| h);
    let h = h.split(':').next()?.trim_start_matches("www.");
    (!h.is_empty()).then(|| h.to_ascii_lowercase())
}

fn host_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('.') {
        // `google.`: a label of the host other than its last (google.com, google.co.uk,
        // news.google.de; not googlestuff.example).
        Some(label) => {
            let mut labels = host.rsplit('.');
            labels.next();
            labels.any(|l| l == label)
        }
        None => host
            .strip_suffix(pattern)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.')),
    }
}

/// `rules`, or the default grouping when a source gives none (built once).
fn effective(rules: &[ChannelRule]) -> &[ChannelRule] {
    static DEFAULTS: std::sync::OnceLock<Vec<ChannelRule>> = std::sync::OnceLock::new();
    if rules.is_empty() {
        DEFAULTS.get_or_init(default_channels)
    } else {
        rules
    }
}

fn field(v: &Option<Value>, k: &str) -> Option<String> {
    v.as_ref()?
        .get(k)?
        .as_str()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

/// The channel of one visit under `rules` (none: the default grouping).
pub fn channel(p: &PageView, rules: &[ChannelRule]) -> String {
    let rules = effective(rules);
    let medium = field(&p.campaign, "medium");
    let source = field(&p.campaign, "source");
    let clicks: Vec<&str> = p
        .click_ids
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let own = p.url.as_deref().and_then(host);
    let referrer = p
        .referrer
        .as_deref()
        .and_then(host)
        .filter(|r| Some(r) != own.as_ref());
    for r in rules {
        let hit = r.click_ids.iter().any(|c| clicks.contains(&c.as_str()))
            || medium.as_ref().is_some_and(|m| r.mediums.contains(m))
            || source.as_ref().is_some_and(|s| r.sources.contains(s))
            || (medium.is_none()
                && referrer
                    .as_deref()
                    .is_some_and(|h| r.referrers.iter().any(|p| host_matches(h, p))));
        if hit {
            return r.name.clone();
        }
    }
    if medium.is_some() || source.is_some() {
        "other".into()
    } else if referrer.is_some() {
        "referral".into()
    } else {
        "direct".into()
    }
}

/// A profile's visits: the first page view of each session (or of each page view
/// without a session), oldest first.
pub fn touches(mut views: Vec<PageView>, rules: &[ChannelRule]) -> Vec<Touch> {
    views.sort_by_key(|v| v.at_ms);
    let mut seen: Vec<(Option<String>, String)> = Vec::new();
    let mut out = Vec::new();
    for v in views {
        if let Some(s) = &v.session {
            let key = (v.anonymous_id.clone(), s.clone());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
        }
        out.push(Touch {
            at_ms: v.at_ms,
            channel: channel(&v, rules),
            source: field(&v.campaign, "source"),
            medium: field(&v.campaign, "medium"),
            campaign: field(&v.campaign, "name"),
        });
    }
    out
}

/// Each touch's share of one conversion under `model` (touches oldest first, all inside
/// the window); the shares sum to 1.
pub fn weights(touches: &[Touch], model: Model) -> Vec<f64> {
    let n = touches.len();
    let mut w = vec![0.0; n];
    if n == 0 {
        return w;
    }
    match model {
        Model::FirstTouch => w[0] = 1.0,
        Model::LastNonDirect => {
            let i = touches
                .iter()
                .rposition(|t| t.channel != "direct")
                .unwrap_or(n - 1);
            w[i] = 1.0;
        }
        Model::Linear => w.iter_mut().for_each(|x| *x = 1.0 / n as f64),
        Model::PositionBased => match n {
            1 => w[0] = 1.0,
            2 => (w[0], w[1]) = (0.5, 0.5),
            _ => {
                w[0] = 0.4;
                w[n - 1] = 0.4;
                let mid = 0.2 / (n - 2) as f64;
                w[1..n - 1].iter_mut().for_each(|x| *x = mid);
            }
        },
    }
    w
}

/// A conversion to credit.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub message_id: String,
    pub profile_id: String,
    pub at_ms: i64,
    pub revenue: f64,
    pub currency: Option<String>,
    /// The order it completes (its event's name and [`order_id`]): a second conversion
    /// of one order (a thank-you page reloaded, opened in two tabs, sent again by the
    /// shop's server) is not credited again.
    pub order: Option<(String, String)>,
}

/// The order an event names in its properties (Segment's e-commerce spec: `order_id`;
/// also `orderId` and `checkout_id`), a string or a number.
pub fn order_id(properties: Option<&Value>) -> Option<String> {
    let p = properties?;
    ["order_id", "orderId", "checkout_id"]
        .iter()
        .find_map(|k| match p.get(*k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// One share of a conversion's credit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credit {
    pub message_id: String,
    pub profile_id: String,
    pub at_ms: i64,
    pub model: Model,
    pub window_days: u32,
    pub channel: String,
    pub campaign: Option<String>,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub credit: f64,
    pub revenue: f64,
    pub currency: Option<String>,
}

/// Every model's and window's credit for one conversion, from the profile's touches.
pub fn credit(c: &Conversion, all: &[Touch]) -> Vec<Credit> {
    let mut out = Vec::new();
    for window in WINDOWS {
        let from = c.at_ms - i64::from(window) * DAY_MS;
        let mut inside: Vec<Touch> = all
            .iter()
            .filter(|t| t.at_ms >= from && t.at_ms <= c.at_ms)
            .cloned()
            .collect();
        if inside.is_empty() {
            inside.push(Touch {
                at_ms: c.at_ms,
                channel: "direct".into(),
                source: None,
                medium: None,
                campaign: None,
            });
        }
        for model in Model::ALL {
            // Shares of one channel and campaign are summed: one row each.
            let mut rows: Vec<Credit> = Vec::new();
            for (t, w) in inside.iter().zip(weights(&inside, model)) {
                if w == 0.0 {
                    continue;
                }
                match rows.iter_mut().find(|r| {
                    r.channel == t.channel && r.campaign == t.campaign && r.source == t.source
                }) {
                    Some(r) => {
                        r.credit += w;
                        r.revenue += w * c.revenue;
                    }
                    None => rows.push(Credit {
                        message_id: c.message_id.clone(),
                        profile_id: c.profile_id.clone(),
                        at_ms: c.at_ms,
                        model,
                        window_days: window,
                        channel: t.channel.clone(),
                        campaign: t.campaign.clone(),
                        source: t.source.clone(),
                        medium: t.medium.clone(),
                        credit: w,
                        revenue: w * c.revenue,
                        currency: c.currency.clone(),
                    }),
                }
            }
            out.extend(rows);
        }
    }
    out
}

/// The stored events attribution reads for some profiles: their page views and their
/// conversions, by profile.
#[derive(Debug, Default)]
pub struct History {
    pub views: Vec<(String, PageView)>,
    pub conversions: Vec<Conversion>,
}

impl History {
    /// Files one stored event: a page view (a visit candidate), a conversion, or neither.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        message_id: &str,
        profile: &str,
        kind: &str,
        event: Option<&str>,
        timestamp: &str,
        anonymous_id: Option<&str>,
        payload: &Value,
        config: &AttributionConfig,
    ) {
        let Some(at_ms) = tracking_plan::time::parse_rfc3339(timestamp) else {
            return;
        };
        let ctx = payload.get("context");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        if kind == "page" {
            let page = ctx.and_then(|c| c.get("page"));
            self.views.push((
                profile.to_string(),
                PageView {
                    at_ms,
                    session: text(ctx.and_then(|c| c.get("sessionId"))),
                    anonymous_id: anonymous_id.map(str::to_string),
                    campaign: ctx.and_then(|c| c.get("campaign")).cloned(),
                    click_ids: ctx.and_then(|c| c.get("clickIds")).cloned(),
                    referrer: text(page.and_then(|p| p.get("referrer"))),
                    url: text(page.and_then(|p| p.get("url"))),
                },
            ));
        } else if let Some(rule) = config.conversion(event) {
            let props = payload.get("properties");
            self.conversions.push(Conversion {
                message_id: message_id.to_string(),
                profile_id: profile.to_string(),
                at_ms,
                revenue: revenue_of(props, rule),
                currency: text(props.and_then(|p| p.get("currency"))),
                order: order_id(props).map(|o| (rule.event.clone(), o)),
            });
        }
    }
}

/// The credit of every conversion in `h`, each from its own profile's visits. An order
/// is credited once, at its first conversion: a later one of the same order (a reload
/// of the thank-you page) is stored but earns no credit or revenue.
pub fn credit_profiles(mut h: History, config: &AttributionConfig) -> Vec<Credit> {
    h.conversions
        .sort_by(|a, b| (a.at_ms, &a.message_id).cmp(&(b.at_ms, &b.message_id)));
    let mut orders = std::collections::HashSet::new();
    h.conversions.retain(|c| {
        c.order
            .as_ref()
            .is_none_or(|o| orders.insert((c.profile_id.clone(), o.clone())))
    });
    let mut out = Vec::new();
    let mut profiles: Vec<&str> = h
        .conversions
        .iter()
        .map(|c| c.profile_id.as_str())
        .collect();
    profiles.sort_unstable();
    profiles.dedup();
    for p in profiles {
        let views: Vec<PageView> = h
            .views
            .iter()
            .filter(|(q, _)| q == p)
            .map(|(_, v)| v.clone())
            .collect();
        let visits = touches(views, &config.channels);
        for c in h.conversions.iter().filter(|c| c.profile_id == p) {
            out.extend(credit(c, &visits));
        }
    }
    out
}

/// The revenue of a conversion event under its rule: a number, or a numeric string.
pub fn revenue_of(properties: Option<&Value>, rule: &ConversionRule) -> f64 {
    let v = rule.revenue.as_deref().and_then(|k| properties?.get(k));
    match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
    .max(0.0)
}

/// One row of an imported cost CSV, converted to the report currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    pub date: String,
    pub source: String,
    pub medium: String,
    pub campaign: String,
    pub cost: f64,
}

/// Why a cost CSV was refused, by line (1 is the header).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CsvError {
    pub line: usize,
    pub message: String,
}

/// Parses `date,source,medium,campaign,cost,currency` (a header first; quoted fields
/// allowed) and converts each cost with `rates` (units of the report currency per unit
/// of the row's currency; the report currency itself is 1).
pub fn parse_costs(
    csv: &str,
    rates: &Map<String, Value>,
    currency: &str,
) -> Result<Vec<Cost>, Vec<CsvError>> {
    let mut lines = csv
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<String> = match lines.next() {
        Some((_, h)) => split_csv(h)
            .iter()
            .map(|c| c.trim().to_ascii_lowercase())
            .collect(),
        None => return Ok(Vec::new()),
    };
    let want = ["date", "source", "medium", "campaign", "cost", "currency"];
    if header != want {
        return Err(vec![CsvError {
            line: 1,
            message: format!("the header must be {}", want.join(",")),
        }]);
    }
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    for (i, line) in lines {
        let err = |m: String| CsvError {
            line: i + 1,
            message: m,
        };
        let f = split_csv(line);
        if f.len() != 6 {
            errors.push(err(format!("{} fields, not 6", f.len())));
            continue;
        }
        let date = f[0].trim();
        if tracking_plan::time::parse_rfc3339(&format!("{date}T00:00:00Z")).is_none() {
            errors.push(err(format!("date {date:?} is not YYYY-MM-DD")));
            continue;
        }
        let Ok(cost) = f[4].trim().parse::<f64>() else {
            errors.push(err(format!("cost {:?} is not a number", f[4])));
            continue;
        };
        let cur = f[5].trim().to_ascii_uppercase();
        let rate = if cur == currency.to_ascii_uppercase() {
            Some(1.0)
        } else {
            rates.get(&cur).and_then(Value::as_f64)
        };
        let Some(rate) = rate.filter(|r| r.is_finite() && *r > 0.0) else {
            errors.push(err(format!("no rate from {cur} to {currency}")));
            continue;
        };
        if !cost.is_finite() || cost < 0.0 {
            errors.push(err(format!("cost {cost} is negative")));
            continue;
        }
        out.push(Cost {
            date: date.to_string(),
            source: f[1].trim().to_ascii_lowercase(),
            medium: f[2].trim().to_ascii_lowercase(),
            campaign: f[3].trim().to_ascii_lowercase(),
            cost: cost * rate,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A CSV line's fields (RFC 4180 quoting: `"a,b"`, `""` for a quote). Written here:
/// the `csv` crate doing the same measured 10,468 bytes more of worker wasm (4,858 gzip),
/// paid at every cold start, for a six-column file.
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The channel a cost row's source and medium belong to, by the same rules as touches.
pub fn cost_channel(c: &Cost, rules: &[ChannelRule]) -> String {
    let p = PageView {
        campaign: Some(json!({"source": c.source, "medium": c.medium})),
        ..PageView::default()
    };
    channel(&p, rules)
}

/// A credited row as the report reads it back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreditRow {
    pub channel: String,
    #[serde(default)]
    pub campaign: Option<String>,
    pub credit: f64,
    pub revenue: f64,
}

/// Conversions, revenue, cost, ROAS and CAC by channel and by campaign.
pub fn report(credits: &[CreditRow], costs: &[Cost], rules: &[ChannelRule]) -> Value {
    #[derive(Default)]
    struct Line {
        conversions: f64,
        revenue: f64,
        cost: f64,
    }
    let mut channels: Vec<(String, Line)> = Vec::new();
    let mut campaigns: Vec<((String, String), Line)> = Vec::new();
    fn at<'a, K: PartialEq + Clone>(v: &'a mut Vec<(K, Line)>, k: &K) -> &'a mut Line {
        if let Some(i) = v.iter().position(|(x, _)| x == k) {
            return &mut v[i].1;
        }
        v.push((k.clone(), Line::default()));
        &mut v.last_mut().expect("just pushed").1
    }
    for c in credits {
        let camp = c.campaign.clone().unwrap_or_default();
        let l = at(&mut channels, &c.channel);
        l.conversions += c.credit;
        l.revenue += c.revenue;
        let l = at(&mut campaigns, &(c.channel.clone(), camp));
        l.conversions += c.credit;
        l.revenue += c.revenue;
    }
    for k in costs {
        let ch = cost_channel(k, rules);
        at(&mut channels, &ch).cost += k.cost;
        at(&mut campaigns, &(ch, k.campaign.clone())).cost += k.cost;
    }
    let row = |l: &Line| {
        let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
        json!({"conversions": round(l.conversions), "revenue": round(l.revenue), "cost": round(l.cost),
               "roas": ratio(l.revenue, l.cost).map(round), "cac": ratio(l.cost, l.conversions).map(round)})
    };
    let mut by_channel: Vec<Value> = channels
        .iter()
        .map(|(ch, l)| {
            let mut v = row(l);
            v["channel"] = json!(ch);
            v
        })
        .collect();
    by_channel.sort_by(|a, b| {
        b["revenue"]
            .as_f64()
            .partial_cmp(&a["revenue"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let by_campaign: Vec<Value> = campaigns
        .iter()
        .map(|((ch, camp), l)| {
            let mut v = row(l);
            v["channel"] = json!(ch);
            v["campaign"] = json!(if camp.is_empty() { None } else { Some(camp) });
            v
        })
        .collect();
    json!({"byChannel": by_channel, "byCampaign": by_campaign})
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(at: i64, session: &str, campaign: Value, clicks: Value, referrer: &str) -> PageView {
        PageView {
            at_ms: at,
            session: Some(session.into()),
            anonymous_id: Some("a".into()),
            campaign: (!campaign.is_null()).then_some(campaign),
            click_ids: (!clicks.is_null()).then_some(clicks),
            referrer: (!referrer.is_empty()).then(|| referrer.to_string()),
            url: Some("https://shop.example/p".into()),
        }
    }

    #[test]
    fn the_default_channels() {
        let c = |campaign: Value, clicks: Value, referrer: &str| {
            channel(&view(0, "s", campaign, clicks, referrer), &[])
        };
        assert_eq!(c(Value::Null, json!({"gclid": "x"}), ""), "paid_search");
        assert_eq!(c(Value::Null, json!({"msclkid": "x"}), ""), "paid_search");
        assert_eq!(c(Value::Null, json!({"yclid": "x"}), ""), "paid_search");
        assert_eq!(
            c(
                json!({"source": "google", "medium": "CPC"}),
                Value::Null,
                ""
            ),
            "paid_search"
        );
        assert_eq!(
            c(
                Value::Null,
                json!({"fbclid": "x"}),
                "https://l.facebook.com/"
            ),
            "paid_social"
        );
        assert_eq!(c(Value::Null, json!({"ttclid": "x"}), ""), "paid_social");
        assert_eq!(
            c(
                json!({"source": "news", "medium": "email"}),
                Value::Null,
                ""
            ),
            "email"
        );
        assert_eq!(
            c(Value::Null, Value::Null, "https://www.google.co.uk/"),
            "organic_search"
        );
        assert_eq!(
            c(Value::Null, Value::Null, "https://duckduckgo.com/?q=x"),
            "organic_search"
        );
        assert_eq!(
            c(Value::Null, Value::Null, "https://blog.example.org/post"),
            "referral"
        );
        assert_eq!(
            c(Value::Null, Value::Null, "https://shop.example/cart"),
            "direct",
            "own site"
        );
        assert_eq!(c(Value::Null, Value::Null, ""), "direct");
        assert_eq!(
            c(
                json!({"source": "partner", "medium": "banner"}),
                Value::Null,
                ""
            ),
            "other"
        );
        assert_eq!(
            c(Value::Null, Value::Null, "https://googlestuff.example/"),
            "referral",
            "not a Google domain"
        );
    }

    #[test]
    fn a_source_may_group_channels_its_own_way() {
        let rules = vec![ChannelRule {
            name: "affiliates".into(),
            click_ids: vec![],
            mediums: vec!["affiliate".into()],
            sources: vec!["awin".into()],
            referrers: vec!["partner.example".into()],
        }];
        let c = |campaign: Value, referrer: &str| {
            channel(&view(0, "s", campaign, Value::Null, referrer), &rules)
        };
        assert_eq!(c(json!({"source": "awin"}), ""), "affiliates");
        assert_eq!(
            c(Value::Null, "https://shop.partner.example/"),
            "affiliates"
        );
        assert_eq!(
            c(Value::Null, "https://www.google.com/"),
            "referral",
            "own rules replace the defaults"
        );
    }

    fn t(at: i64, ch: &str) -> Touch {
        Touch {
            at_ms: at,
            channel: ch.into(),
            source: None,
            medium: None,
            campaign: Some(ch.into()),
        }
    }

    #[test]
    fn the_models_split_credit_as_documented() {
        let four = [
            t(1, "email"),
            t(2, "direct"),
            t(3, "paid_search"),
            t(4, "direct"),
        ];
        assert_eq!(weights(&four, Model::FirstTouch), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(weights(&four, Model::LastNonDirect), [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(weights(&four, Model::Linear), [0.25; 4]);
        assert_eq!(weights(&four, Model::PositionBased), [0.4, 0.1, 0.1, 0.4]);
        assert_eq!(weights(&four[..2], Model::PositionBased), [0.5, 0.5]);
        assert_eq!(weights(&four[..1], Model::PositionBased), [1.0]);
        let direct = [t(1, "direct"), t(2, "direct")];
        assert_eq!(
            weights(&direct, Model::LastNonDirect),
            [0.0, 1.0],
            "all direct: the last"
        );
        for m in Model::ALL {
            for n in 1..6 {
                let s: f64 = weights(&vec![t(0, "email"); n], m).iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{m:?} {n}");
            }
        }
    }

    #[test]
    fn credit_respects_the_click_windows_and_sums_to_the_revenue() {
        let now = 40 * DAY_MS;
        let touches = [
            t(now - 20 * DAY_MS, "email"),
            t(now - 2 * DAY_MS, "paid_search"),
        ];
        let c = Conversion {
            message_id: "m".into(),
            profile_id: "p".into(),
            at_ms: now,
            revenue: 100.0,
            currency: Some("EUR".into()),
            order: None,
        };
        let credits = credit(&c, &touches);
        let of = |m: Model, w: u32| -> Vec<(String, f64)> {
            credits
                .iter()
                .filter(|x| x.model == m && x.window_days == w)
                .map(|x| (x.channel.clone(), x.revenue))
                .collect()
        };
        // 7 days: only the paid search visit is inside.
        assert_eq!(
            of(Model::FirstTouch, 7),
            [("paid_search".to_string(), 100.0)]
        );
        assert_eq!(of(Model::FirstTouch, 28), [("email".to_string(), 100.0)]);
        assert_eq!(
            of(Model::Linear, 28),
            [
                ("email".to_string(), 50.0),
                ("paid_search".to_string(), 50.0)
            ]
        );
        for m in Model::ALL {
            for w in WINDOWS {
                let total: f64 = credits
                    .iter()
                    .filter(|x| x.model == m && x.window_days == w)
                    .map(|x| x.credit)
                    .sum();
                assert!((total - 1.0).abs() < 1e-12);
            }
        }
        // No touch in the window: direct.
        let lonely = credit(&c, &[]);
        assert!(lonely
            .iter()
            .all(|x| x.channel == "direct" && x.credit == 1.0));
    }

    #[test]
    fn an_order_is_credited_once_however_often_it_is_sent() {
        let config: AttributionConfig = serde_json::from_value(json!({
            "conversions": [{"event": "Order Completed", "revenue": "total"}]
        }))
        .unwrap();
        // The thank-you page, reloaded (a new messageId), its order id a string or a
        // number; another order; the same order id under another profile; none.
        let sent = [
            ("m2", "p", "10:05", json!({"order_id": "o1", "total": 30})),
            ("m1", "p", "10:00", json!({"order_id": "o1", "total": 30})),
            ("m3", "p", "11:00", json!({"orderId": 7, "total": 5})),
            ("m4", "p", "11:01", json!({"order_id": 7, "total": 5})),
            ("m5", "p", "12:00", json!({"order_id": "o2", "total": 10})),
            ("m6", "q", "12:00", json!({"order_id": "o1", "total": 30})),
            ("m7", "p", "13:00", json!({"total": 1})),
            ("m8", "p", "13:01", json!({"total": 1})),
        ];
        let mut h = History::default();
        for (id, p, at, props) in sent {
            let payload = json!({"properties": props});
            let at = format!("2026-12-01T{at}:00Z");
            let event = Some("Order Completed");
            h.add(id, p, "track", event, &at, None, &payload, &config);
        }
        let credits = credit_profiles(h, &config);
        let mut credited: Vec<&str> = credits.iter().map(|c| c.message_id.as_str()).collect();
        credited.sort_unstable();
        credited.dedup();
        assert_eq!(credited, ["m1", "m3", "m5", "m6", "m7", "m8"]);
        let revenue: f64 = credits
            .iter()
            .filter(|c| c.model == Model::Linear && c.window_days == 28 && c.profile_id == "p")
            .map(|c| c.revenue)
            .sum();
        assert!((revenue - 47.0).abs() < 1e-9, "{revenue}");
        assert_eq!(
            order_id(Some(&json!({"checkout_id": "c9"}))).as_deref(),
            Some("c9")
        );
        assert_eq!(order_id(Some(&json!({"order_id": ""}))), None);
    }

    #[test]
    fn a_visit_is_the_first_page_view_of_its_session() {
        let views = vec![
            view(3, "s2", Value::Null, Value::Null, ""),
            view(
                1,
                "s1",
                json!({"source": "news", "medium": "email", "name": "Launch"}),
                Value::Null,
                "",
            ),
            view(2, "s1", Value::Null, Value::Null, "https://www.google.com/"),
        ];
        let ts = touches(views, &[]);
        assert_eq!(ts.len(), 2);
        assert_eq!(
            (ts[0].channel.as_str(), ts[0].campaign.as_deref()),
            ("email", Some("launch"))
        );
        assert_eq!(ts[1].channel, "direct");
    }

    #[test]
    fn costs_import_with_currency_conversion_and_line_errors() {
        let rates = json!({"USD": 0.5}).as_object().cloned().unwrap();
        let csv = "date,source,medium,campaign,cost,currency\n2026-11-01,google,cpc,Brand,10,USD\n\"2026-11-01\",news,email,\"Launch, 2\",3.5,EUR\n";
        let costs = parse_costs(csv, &rates, "EUR").unwrap();
        assert_eq!(costs[0].cost, 5.0);
        assert_eq!(costs[1].campaign, "launch, 2");
        assert_eq!(cost_channel(&costs[0], &[]), "paid_search");
        let bad = "date,source,medium,campaign,cost,currency\n2026-13-45,a,b,c,1,EUR\n2026-11-01,a,b,c,x,EUR\n2026-11-01,a,b,c,1,JPY\n";
        let e = parse_costs(bad, &rates, "EUR").unwrap_err();
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(parse_costs("a,b\n", &rates, "EUR").is_err());
    }

    #[test]
    fn the_report_gives_roas_and_cac_by_channel_and_campaign() {
        let credits = vec![
            CreditRow {
                channel: "paid_search".into(),
                campaign: Some("brand".into()),
                credit: 1.0,
                revenue: 120.0,
            },
            CreditRow {
                channel: "paid_search".into(),
                campaign: Some("brand".into()),
                credit: 0.5,
                revenue: 30.0,
            },
            CreditRow {
                channel: "email".into(),
                campaign: Some("launch".into()),
                credit: 0.5,
                revenue: 30.0,
            },
        ];
        let costs = vec![Cost {
            date: "2026-11-01".into(),
            source: "google".into(),
            medium: "cpc".into(),
            campaign: "brand".into(),
            cost: 50.0,
        }];
        let r = report(&credits, &costs, &[]);
        let ps = r["byChannel"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "paid_search")
            .unwrap();
        assert_eq!(ps["conversions"], json!(1.5));
        assert_eq!(ps["revenue"], json!(150.0));
        assert_eq!(ps["roas"], json!(3.0));
        assert!((ps["cac"].as_f64().unwrap() - 33.333333).abs() < 1e-6);
        let email = r["byChannel"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "email")
            .unwrap();
        assert_eq!(email["roas"], Value::Null, "no cost: no ROAS");
        assert!(r["byCampaign"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["campaign"] == "brand" && c["cost"] == json!(50.0)));
    }
}
