//! Data-quality alerts: decides, for one source and one complete day, which of the
//! field's thresholds are crossed, by how much, since when, and which events are
//! affected; and what a webhook receives (Slack-compatible JSON, HMAC-signed).
//!
//! The thresholds:
//! - an event's volume more than 15% below the median of its 7 days before;
//! - the anonymous share of accepted events above 60%;
//! - the quarantine rate above the source's `alerts.quarantineRate` (default 5%), or at
//!   least double the day before's (with at least [`MIN_QUARANTINED`] events, so that 1
//!   becoming 2 is not news);
//! - plan coverage (planned events seen in the last 7 days) below 95%, for a source
//!   that received events in those days;
//! - a channel's share of the day's conversions (last non-direct touch, 28-day window)
//!   more than 20% away from its share over the 28 days before, on a day with at least
//!   [`MIN_CONVERSIONS`] conversions.
//!
//! The day judged is the last complete UTC day, so a morning's partial counts never
//! alert. The adapter (the hourly Cron Trigger) stores each alert once per source, kind,
//! subject and day, and sends a webhook only for new ones.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A source's alert settings (`alerts` in `SOURCES`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertConfig {
    /// A Slack-compatible incoming webhook that receives new alerts.
    #[serde(default)]
    pub webhook: Option<String>,
    /// The name of the secret (`wrangler secret put NAME`) holding the webhook's HMAC key.
    #[serde(default)]
    pub secret: Option<String>,
    /// The quarantine share of received events that alerts.
    #[serde(default = "quarantine_rate_default")]
    pub quarantine_rate: f64,
}

fn quarantine_rate_default() -> f64 {
    0.05
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            webhook: None,
            secret: None,
            quarantine_rate: quarantine_rate_default(),
        }
    }
}

pub const VOLUME_DROP: f64 = 0.15;
pub const ANONYMOUS_SHARE: f64 = 0.60;
pub const PLAN_COVERAGE: f64 = 0.95;
/// Quarantined events a day needs before its rate doubling alerts.
pub const MIN_QUARANTINED: u64 = 10;
/// Days of history an event's volume is judged against.
pub const TRAILING_DAYS: usize = 7;
pub const ATTRIBUTION_SHIFT: f64 = 0.20;
/// Conversions a day needs before its channel mix is judged.
pub const MIN_CONVERSIONS: f64 = 10.0;
/// Days of history a channel's share is judged against.
pub const ATTRIBUTION_DAYS: i64 = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    VolumeDrop,
    AnonymousShare,
    QuarantineRate,
    QuarantineDoubled,
    PlanCoverage,
    AttributionShift,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::VolumeDrop => "volume_drop",
            AlertKind::AnonymousShare => "anonymous_share",
            AlertKind::QuarantineRate => "quarantine_rate",
            AlertKind::QuarantineDoubled => "quarantine_doubled",
            AlertKind::PlanCoverage => "plan_coverage",
            AlertKind::AttributionShift => "attribution_shift",
        }
    }
}

/// One crossed threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub kind: AlertKind,
    /// What moved: an event name, or `source`.
    pub subject: String,
    /// The day judged (`YYYY-MM-DD`).
    pub day: String,
    /// The first day of the run of days on which it held, up to `day`.
    pub since: String,
    pub value: f64,
    /// What `value` is judged against (a median, a threshold, the day before).
    pub baseline: f64,
    /// `value / baseline - 1`.
    pub change: f64,
    pub message: String,
    /// The events affected.
    pub events: Vec<String>,
}

/// A source's totals for one day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayTotals {
    pub day: String,
    pub received: u64,
    pub accepted: u64,
    pub quarantined: u64,
    pub identified: u64,
}

/// How many times one event was seen on one day (accepted, or quarantined).
#[derive(Debug, Clone, PartialEq)]
pub struct EventDay {
    pub event: String,
    pub day: String,
    pub count: u64,
}

/// A channel's credited conversions on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelDay {
    pub channel: String,
    pub day: String,
    pub conversions: f64,
}

/// What one source's alerts are judged from.
#[derive(Debug, Default)]
pub struct Facts<'a> {
    /// Credited conversions by channel and day (last non-direct touch, 28 days).
    pub channels: &'a [ChannelDay],
    /// The source's conversion events (what an attribution shift affects).
    pub conversion_events: &'a [String],
    /// The day judged.
    pub day: &'a str,
    /// The days before it: the last [`TRAILING_DAYS`] and more are used when present.
    pub days: &'a [DayTotals],
    pub events: &'a [EventDay],
    pub quarantined_events: &'a [EventDay],
    pub planned: Option<&'a [String]>,
    pub config: AlertConfig,
}

/// `day` minus `n` days (`YYYY-MM-DD`), or `None` for a malformed date.
pub fn day_before(day: &str, n: i64) -> Option<String> {
    let ms = tracking_plan::time::parse_rfc3339(&format!("{day}T00:00:00Z"))?;
    Some(tracking_plan::time::format_rfc3339(ms - n * 86_400_000)[..10].to_string())
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn change(value: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        0.0
    } else {
        value / baseline - 1.0
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn count_on(events: &[EventDay], event: &str, day: &str) -> u64 {
    events
        .iter()
        .filter(|e| e.event == event && e.day == day)
        .map(|e| e.count)
        .sum()
}

fn median(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2] as f64,
        n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
    }
}

/// The earliest day of the run, ending at `day`, on which `holds` is true.
fn since(day: &str, holds: impl Fn(&str) -> bool) -> String {
    let mut first = day.to_string();
    for n in 1..=28 {
        match day_before(day, n) {
            Some(d) if holds(&d) => first = d,
            _ => break,
        }
    }
    first
}

fn totals<'a>(f: &'a Facts<'_>, day: &str) -> Option<&'a DayTotals> {
    f.days.iter().find(|d| d.day == day)
}

/// Every threshold crossed on `f.day`.
pub fn judge(f: &Facts<'_>) -> Vec<Alert> {
    let mut out = volume_drops(f);
    out.extend(anonymous_share(f));
    out.extend(quarantine(f));
    out.extend(coverage(f));
    out.extend(attribution_shift(f));
    out
}

/// Each channel's share of the conversions on `day`, and over the 28 days before.
fn channel_shares(f: &Facts<'_>) -> Option<Vec<(String, f64, f64)>> {
    let from = day_before(f.day, ATTRIBUTION_DAYS)?;
    let on_day = |c: &ChannelDay| c.day == f.day;
    let before = |c: &ChannelDay| c.day.as_str() >= from.as_str() && c.day.as_str() < f.day;
    let total = |keep: &dyn Fn(&ChannelDay) -> bool| -> f64 {
        f.channels
            .iter()
            .filter(|c| keep(c))
            .map(|c| c.conversions)
            .sum()
    };
    let (today, trailing) = (total(&on_day), total(&before));
    if today < MIN_CONVERSIONS || trailing <= 0.0 {
        return None;
    }
    let mut names: Vec<&str> = f.channels.iter().map(|c| c.channel.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let share = |name: &str, keep: &dyn Fn(&ChannelDay) -> bool, of: f64| -> f64 {
        f.channels
            .iter()
            .filter(|c| c.channel == name && keep(c))
            .map(|c| c.conversions)
            .sum::<f64>()
            / of
    };
    Some(
        names
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    share(n, &on_day, today),
                    share(n, &before, trailing),
                )
            })
            .collect(),
    )
}

fn attribution_shift(f: &Facts<'_>) -> Vec<Alert> {
    let Some(shares) = channel_shares(f) else {
        return Vec::new();
    };
    shares
        .into_iter()
        .filter_map(|(channel, now, usual)| {
            let moved = if usual > 0.0 {
                (now / usual - 1.0).abs()
            } else {
                f64::INFINITY
            };
            // A channel absent from both is no news; one new today is, past 20% of the day.
            let news = if usual > 0.0 {
                moved > ATTRIBUTION_SHIFT
            } else {
                now > ATTRIBUTION_SHIFT
            };
            news.then(|| Alert {
                kind: AlertKind::AttributionShift,
                subject: channel.clone(),
                day: f.day.to_string(),
                since: f.day.to_string(),
                value: now,
                baseline: usual,
                change: change(now, usual),
                message: format!(
                    "{channel} took {} of conversions on {} against {} over the 28 days before",
                    pct(now),
                    f.day,
                    pct(usual)
                ),
                events: f.conversion_events.to_vec(),
            })
        })
        .collect()
}

/// The event's volume on `day` and the median of the 7 days before, when it dropped.
fn dropped(events: &[EventDay], event: &str, day: &str) -> Option<(u64, f64)> {
    let history: Option<Vec<u64>> = (1..=TRAILING_DAYS as i64)
        .map(|n| day_before(day, n).map(|d| count_on(events, event, &d)))
        .collect();
    let m = median(history?);
    let v = count_on(events, event, day);
    (m > 0.0 && (v as f64) < m * (1.0 - VOLUME_DROP)).then_some((v, m))
}

fn volume_drops(f: &Facts<'_>) -> Vec<Alert> {
    let mut names: Vec<&str> = f.events.iter().map(|e| e.event.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|event| {
            let (v, m) = dropped(f.events, event, f.day)?;
            let c = change(v as f64, m);
            Some(Alert {
                kind: AlertKind::VolumeDrop,
                subject: event.to_string(),
                day: f.day.to_string(),
                since: since(f.day, |d| dropped(f.events, event, d).is_some()),
                value: v as f64,
                baseline: m,
                change: c,
                message: format!(
                    "{event}: {v} events on {}, {} against the median of the 7 days before ({m})",
                    f.day,
                    pct(c)
                ),
                events: vec![event.to_string()],
            })
        })
        .collect()
}

fn top_events(events: &[EventDay], day: &str, n: usize) -> Vec<String> {
    let mut of_day: Vec<&EventDay> = events.iter().filter(|e| e.day == day).collect();
    of_day.sort_by(|a, b| b.count.cmp(&a.count).then(a.event.cmp(&b.event)));
    of_day
        .into_iter()
        .take(n)
        .map(|e| e.event.clone())
        .collect()
}

fn anonymous(t: &DayTotals) -> Option<f64> {
    let share = 1.0 - ratio(t.identified.min(t.accepted), t.accepted);
    (t.accepted > 0 && share > ANONYMOUS_SHARE).then_some(share)
}

fn anonymous_share(f: &Facts<'_>) -> Option<Alert> {
    let share = anonymous(totals(f, f.day)?)?;
    Some(Alert {
        kind: AlertKind::AnonymousShare,
        subject: "source".into(),
        day: f.day.to_string(),
        since: since(f.day, |d| totals(f, d).and_then(anonymous).is_some()),
        value: share,
        baseline: ANONYMOUS_SHARE,
        change: change(share, ANONYMOUS_SHARE),
        message: format!(
            "{} of accepted events on {} were anonymous (threshold {})",
            pct(share),
            f.day,
            pct(ANONYMOUS_SHARE)
        ),
        events: top_events(f.events, f.day, 5),
    })
}

fn quarantine_rate(t: &DayTotals) -> f64 {
    ratio(t.quarantined, t.received)
}

fn quarantine(f: &Facts<'_>) -> Vec<Alert> {
    let Some(t) = totals(f, f.day) else {
        return Vec::new();
    };
    let rate = quarantine_rate(t);
    let limit = f.config.quarantine_rate;
    let affected = top_events(f.quarantined_events, f.day, 10);
    let mut out = Vec::new();
    let above = |d: &str| totals(f, d).is_some_and(|t| quarantine_rate(t) > limit);
    if rate > limit {
        out.push(Alert {
            kind: AlertKind::QuarantineRate,
            subject: "source".into(),
            day: f.day.to_string(),
            since: since(f.day, above),
            value: rate,
            baseline: limit,
            change: change(rate, limit),
            message: format!(
                "{} of events received on {} were quarantined (threshold {})",
                pct(rate),
                f.day,
                pct(limit)
            ),
            events: affected.clone(),
        });
    }
    let before = day_before(f.day, 1)
        .and_then(|d| totals(f, &d).map(quarantine_rate))
        .unwrap_or(0.0);
    if before > 0.0 && rate >= 2.0 * before && t.quarantined >= MIN_QUARANTINED {
        out.push(Alert {
            kind: AlertKind::QuarantineDoubled,
            subject: "source".into(),
            day: f.day.to_string(),
            since: f.day.to_string(),
            value: rate,
            baseline: before,
            change: change(rate, before),
            message: format!(
                "the quarantine rate went from {} to {} on {}",
                pct(before),
                pct(rate),
                f.day
            ),
            events: affected,
        });
    }
    out
}

/// Planned events never seen in the 7 days up to `day`, and the coverage.
fn unseen<'a>(planned: &'a [String], events: &[EventDay], day: &str) -> (f64, Vec<&'a str>) {
    let window: Vec<String> = (0..TRAILING_DAYS as i64)
        .filter_map(|n| day_before(day, n))
        .collect();
    let missing: Vec<&str> = planned
        .iter()
        .filter(|p| !window.iter().any(|d| count_on(events, p, d) > 0))
        .map(String::as_str)
        .collect();
    let seen = planned.len() - missing.len();
    (ratio(seen as u64, planned.len() as u64), missing)
}

fn coverage(f: &Facts<'_>) -> Option<Alert> {
    let planned = f.planned.filter(|p| !p.is_empty())?;
    // A source that received nothing in the window has no coverage to speak of.
    let from = day_before(f.day, TRAILING_DAYS as i64 - 1)?;
    if !f
        .events
        .iter()
        .any(|e| e.day.as_str() >= from.as_str() && e.day.as_str() <= f.day)
    {
        return None;
    }
    let (cov, missing) = unseen(planned, f.events, f.day);
    if cov >= PLAN_COVERAGE {
        return None;
    }
    Some(Alert {
        kind: AlertKind::PlanCoverage,
        subject: "plan".into(),
        day: f.day.to_string(),
        since: since(f.day, |d| unseen(planned, f.events, d).0 < PLAN_COVERAGE),
        value: cov,
        baseline: PLAN_COVERAGE,
        change: change(cov, PLAN_COVERAGE),
        message: format!(
            "{} of planned events were seen in the 7 days to {} (threshold {}); never seen: {}",
            pct(cov),
            f.day,
            pct(PLAN_COVERAGE),
            missing.join(", ")
        ),
        events: missing.into_iter().map(str::to_string).collect(),
    })
}

/// The webhook's body: Slack-compatible (`text` and `blocks`), one section per alert.
pub fn webhook_body(source: &str, alerts: &[Alert]) -> String {
    let blocks: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let events = if a.events.is_empty() {
                String::new()
            } else {
                format!("\nAffected: {}", a.events.join(", "))
            };
            json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
                "*{}* ({}): {} (since {}){}", a.kind.as_str(), a.subject, a.message, a.since, events
            )}})
        })
        .collect();
    json!({
        "text": format!("Sightline: {} data-quality alert{} for {source}", alerts.len(),
                        if alerts.len() == 1 { "" } else { "s" }),
        "blocks": blocks,
    })
    .to_string()
}

/// `sha256=` and the hex HMAC-SHA256 of `timestamp.body` under `key`: what the receiver
/// recomputes (with the `X-Sightline-Timestamp` header) to trust a delivery.
pub fn signature(key: &[u8], timestamp: &str, body: &str) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut mac = SimpleHmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(list: &[(&str, u64, u64, u64, u64)]) -> Vec<DayTotals> {
        list.iter()
            .map(|(d, r, a, q, i)| DayTotals {
                day: d.to_string(),
                received: *r,
                accepted: *a,
                quarantined: *q,
                identified: *i,
            })
            .collect()
    }

    fn series(event: &str, counts: &[(&str, u64)]) -> Vec<EventDay> {
        counts
            .iter()
            .map(|(d, c)| EventDay {
                event: event.into(),
                day: d.to_string(),
                count: *c,
            })
            .collect()
    }

    const WEEK: [&str; 9] = [
        "2026-11-23",
        "2026-11-24",
        "2026-11-25",
        "2026-11-26",
        "2026-11-27",
        "2026-11-28",
        "2026-11-29",
        "2026-11-30",
        "2026-12-01",
    ];

    #[test]
    fn a_volume_drop_past_15_percent_of_the_trailing_median_alerts_with_its_start() {
        // 100 a day for a week, then 90 (-10%: no alert), then 80 (-20%).
        let mut e: Vec<(&str, u64)> = WEEK[..7].iter().map(|d| (*d, 100)).collect();
        e.push((WEEK[7], 84));
        e.push((WEEK[8], 80));
        let events = series("Order Completed", &e);
        let f = Facts {
            day: WEEK[8],
            events: &events,
            ..Facts::default()
        };
        let a = judge(&f);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].kind, AlertKind::VolumeDrop);
        assert_eq!(a[0].subject, "Order Completed");
        assert_eq!((a[0].value, a[0].baseline), (80.0, 100.0));
        assert!((a[0].change + 0.2).abs() < 1e-9);
        assert_eq!(a[0].since, WEEK[7], "84 was already 16% below");
        assert_eq!(a[0].events, ["Order Completed"]);
        // 86 is 14% below: no alert.
        let mut e2 = e.clone();
        e2[8].1 = 86;
        e2[7].1 = 100;
        let events = series("Order Completed", &e2);
        assert!(judge(&Facts {
            day: WEEK[8],
            events: &events,
            ..Facts::default()
        })
        .is_empty());
    }

    #[test]
    fn the_anonymous_share_above_60_percent_alerts() {
        let d = days(&[(WEEK[7], 100, 100, 0, 50), (WEEK[8], 100, 100, 0, 39)]);
        let f = Facts {
            day: WEEK[8],
            days: &d,
            ..Facts::default()
        };
        let a = judge(&f);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].kind, AlertKind::AnonymousShare);
        assert!((a[0].value - 0.61).abs() < 1e-9);
        assert_eq!(a[0].since, WEEK[8]);
        let d = days(&[(WEEK[8], 100, 100, 0, 40)]);
        assert!(
            judge(&Facts {
                day: WEEK[8],
                days: &d,
                ..Facts::default()
            })
            .is_empty(),
            "60% is not above"
        );
    }

    #[test]
    fn the_quarantine_rate_alerts_above_its_threshold_and_when_it_doubles() {
        let q = series("Checkout Started", &[(WEEK[8], 12)]);
        // 3% then 6%: above 5%, and doubled with 12 quarantined.
        let d = days(&[(WEEK[7], 200, 200, 6, 200), (WEEK[8], 200, 188, 12, 188)]);
        let f = Facts {
            day: WEEK[8],
            days: &d,
            quarantined_events: &q,
            ..Facts::default()
        };
        let kinds: Vec<AlertKind> = judge(&f).iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [AlertKind::QuarantineRate, AlertKind::QuarantineDoubled]
        );
        assert_eq!(judge(&f)[0].events, ["Checkout Started"]);
        // A configured threshold of 10%: only the doubling.
        let f = Facts {
            config: AlertConfig {
                quarantine_rate: 0.10,
                ..AlertConfig::default()
            },
            ..f
        };
        let kinds: Vec<AlertKind> = judge(&f).iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [AlertKind::QuarantineDoubled]);
        // 1 to 2 quarantined doubles the rate but is below the minimum.
        let d = days(&[(WEEK[7], 1000, 999, 1, 999), (WEEK[8], 1000, 998, 2, 998)]);
        assert!(judge(&Facts {
            day: WEEK[8],
            days: &d,
            ..Facts::default()
        })
        .is_empty());
    }

    #[test]
    fn plan_coverage_below_95_percent_names_the_events_never_seen() {
        let planned: Vec<String> = (0..20).map(|i| format!("E{i:02}")).collect();
        let mut events = Vec::new();
        for p in &planned[..19] {
            events.extend(series(p, &[(WEEK[3], 1)]));
        }
        let f = Facts {
            day: WEEK[8],
            events: &events,
            planned: Some(&planned),
            ..Facts::default()
        };
        assert!(
            judge(&f).iter().all(|a| a.kind != AlertKind::PlanCoverage),
            "19 of 20 is 95%"
        );
        let f = Facts {
            planned: Some(&planned[..]),
            events: &events[..18],
            ..f
        };
        let a: Vec<Alert> = judge(&f)
            .into_iter()
            .filter(|a| a.kind == AlertKind::PlanCoverage)
            .collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].events, ["E18", "E19"]);
        assert_eq!(a[0].value, 0.9);
        // Nothing received in the window: no coverage alert.
        let f = Facts { events: &[], ..f };
        assert!(judge(&f).is_empty());
    }

    #[test]
    fn the_webhook_body_is_slack_compatible_and_signed() {
        let d = days(&[(WEEK[8], 100, 100, 0, 10)]);
        let alerts = judge(&Facts {
            day: WEEK[8],
            days: &d,
            ..Facts::default()
        });
        let body = webhook_body("shop", &alerts);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["text"], "Sightline: 1 data-quality alert for shop");
        assert_eq!(v["blocks"][0]["type"], "section");
        assert!(v["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("anonymous_share"));
        // HMAC by its definition (RFC 2104), written out here with SHA-256 over
        // `timestamp.body`; first checked against RFC 4231's test case 2.
        let hmac = |key: &[u8], msg: &[u8]| -> String {
            use sha2::{Digest, Sha256};
            let mut k = [0u8; 64];
            k[..key.len()].copy_from_slice(key);
            let inner = Sha256::new()
                .chain_update(k.map(|b| b ^ 0x36))
                .chain_update(msg)
                .finalize();
            let outer = Sha256::new()
                .chain_update(k.map(|b| b ^ 0x5c))
                .chain_update(inner)
                .finalize();
            outer.iter().map(|b| format!("{b:02x}")).collect()
        };
        assert_eq!(
            hmac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = signature(b"s3cret", "1796227200", &body);
        assert_eq!(
            sig,
            format!(
                "sha256={}",
                hmac(b"s3cret", format!("1796227200.{body}").as_bytes())
            )
        );
    }

    #[test]
    fn a_channel_whose_share_of_conversions_moves_past_20_percent_alerts() {
        let conversions = vec!["Order Completed".to_string()];
        let mut c = Vec::new();
        for n in 1..=28 {
            let d = day_before(WEEK[8], n).unwrap();
            for (ch, v) in [("email", 5.0), ("paid_search", 5.0)] {
                c.push(ChannelDay {
                    channel: ch.into(),
                    day: d.clone(),
                    conversions: v,
                });
            }
        }
        let today = |email: f64, paid: f64| {
            let mut all = c.clone();
            all.push(ChannelDay {
                channel: "email".into(),
                day: WEEK[8].into(),
                conversions: email,
            });
            all.push(ChannelDay {
                channel: "paid_search".into(),
                day: WEEK[8].into(),
                conversions: paid,
            });
            all
        };
        let judged = |all: &[ChannelDay]| -> Vec<(String, f64)> {
            judge(&Facts {
                day: WEEK[8],
                channels: all,
                conversion_events: &conversions,
                ..Facts::default()
            })
            .into_iter()
            .map(|a| (a.subject, (a.change * 100.0).round() / 100.0))
            .collect()
        };
        let shifted = judge(&Facts {
            day: WEEK[8],
            channels: &today(7.0, 3.0),
            conversion_events: &conversions,
            ..Facts::default()
        });
        assert_eq!(shifted[0].events, ["Order Completed"]);
        // 50/50 as usual, then 70/30: email +40%, paid search -40%.
        assert_eq!(
            judged(&today(7.0, 3.0)),
            [
                ("email".to_string(), 0.4),
                ("paid_search".to_string(), -0.4)
            ]
        );
        // 55/45 is a 10% move: nothing.
        assert!(judged(&today(5.5, 4.5)).is_empty());
        // Too few conversions that day to judge.
        assert!(judged(&today(4.0, 1.0)).is_empty());
    }

    #[test]
    fn dates_step_back_across_months_and_years() {
        assert_eq!(day_before("2026-03-01", 1).as_deref(), Some("2026-02-28"));
        assert_eq!(day_before("2027-01-01", 7).as_deref(), Some("2026-12-25"));
        assert_eq!(day_before("nonsense", 1), None);
    }
}
