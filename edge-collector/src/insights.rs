//! The inspector's charts: decides what each chart shows from a source's counts (volume
//! by day and hour and verdict, identified share, quarantine rate by reason, consent
//! opt-in rate by category, top events, plan coverage) and draws it as SVG.
//!
//! The charts are drawn here, on the server, as plain SVG text: no charting library is
//! shipped to the admin's browser, the drawing is tested natively like the rest of the
//! core, and an SVG shown through `<img>` runs no script whatever the data holds (every
//! label is XML-escaped as well). Each chart carries its data as JSON beside the SVG.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// One day of a source's counters (`daily_counts`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Day {
    pub day: String,
    #[serde(default)]
    pub received: u64,
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub quarantined: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub identified: u64,
}

/// Events of one hour (`YYYY-MM-DDTHH`) with one verdict.
#[derive(Debug, Clone, Deserialize)]
pub struct Hour {
    pub hour: String,
    pub verdict: String,
    pub count: u64,
}

/// A name and how many times it was seen (reasons, events).
#[derive(Debug, Clone, Deserialize)]
pub struct Count {
    pub name: String,
    pub count: u64,
}

/// What the charts are drawn from.
#[derive(Debug, Default)]
pub struct Input {
    pub days: Vec<Day>,
    pub hours: Vec<Hour>,
    pub reasons: Vec<Count>,
    /// Each visitor's latest consent categories (a JSON object of booleans).
    pub consent: Vec<String>,
    pub events: Vec<Count>,
    /// The track events the source's plan names (`None`: no plan).
    pub planned: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    pub data: Value,
    pub svg: String,
}

/// Every chart of the inspector, in the order shown.
pub fn charts(i: &Input) -> Vec<Chart> {
    vec![
        volume_by_day(&i.days),
        volume_by_hour(&i.hours),
        identified_share(&i.days),
        quarantine_by_reason(&i.reasons, &i.days),
        consent_by_category(&i.consent),
        top_events(&i.events),
        plan_coverage(i.planned.as_deref(), &i.events),
    ]
}

const ACCEPTED: &str = "#2f7d4f";
const QUARANTINED: &str = "#c9791b";
const REFUSED: &str = "#8a8f98";
const DUPLICATE: &str = "#5b7fb8";

fn volume_by_day(days: &[Day]) -> Chart {
    let labels: Vec<String> = days.iter().map(|d| short_day(&d.day)).collect();
    let series = [
        (
            "accepted",
            ACCEPTED,
            days.iter().map(|d| d.accepted).collect(),
        ),
        (
            "quarantined",
            QUARANTINED,
            days.iter().map(|d| d.quarantined).collect(),
        ),
        ("refused", REFUSED, days.iter().map(|d| d.refused).collect()),
        (
            "duplicates",
            DUPLICATE,
            days.iter().map(|d| d.duplicates).collect(),
        ),
    ];
    let data: Vec<Value> = days
        .iter()
        .map(|d| {
            json!({"day": d.day, "received": d.received, "accepted": d.accepted,
                   "quarantined": d.quarantined, "refused": d.refused, "duplicates": d.duplicates})
        })
        .collect();
    Chart {
        id: "volume_by_day",
        title: "Events per day by verdict",
        data: Value::Array(data),
        svg: columns(&labels, &series),
    }
}

fn volume_by_hour(hours: &[Hour]) -> Chart {
    let mut keys: Vec<&str> = hours.iter().map(|h| h.hour.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let of = |verdict: &str| -> Vec<u64> {
        keys.iter()
            .map(|k| {
                hours
                    .iter()
                    .filter(|h| h.hour == *k && h.verdict == verdict)
                    .map(|h| h.count)
                    .sum()
            })
            .collect()
    };
    let (accepted, quarantined) = (of("accepted"), of("quarantined"));
    let data: Vec<Value> = keys
        .iter()
        .zip(accepted.iter().zip(&quarantined))
        .map(|(k, (a, q))| json!({"hour": k, "accepted": a, "quarantined": q}))
        .collect();
    let labels: Vec<String> = keys
        .iter()
        .map(|k| k.get(11..13).unwrap_or(k).to_string() + "h")
        .collect();
    let series = [
        ("accepted", ACCEPTED, accepted),
        ("quarantined", QUARANTINED, quarantined),
    ];
    Chart {
        id: "volume_by_hour",
        title: "Events per hour, last 48 hours",
        data: Value::Array(data),
        svg: columns(&labels, &series),
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn identified_share(days: &[Day]) -> Chart {
    let (identified, accepted) = days
        .iter()
        .fold((0, 0), |(i, a), d| (i + d.identified, a + d.accepted));
    let items = vec![
        ("identified".to_string(), share(identified, accepted)),
        (
            "anonymous".to_string(),
            share(accepted.saturating_sub(identified), accepted),
        ),
    ];
    Chart {
        id: "identified_share",
        title: "Identified vs anonymous events",
        data: json!({"identified": identified, "accepted": accepted,
                     "identifiedShare": share(identified, accepted)}),
        svg: bars(&items, true),
    }
}

fn quarantine_by_reason(reasons: &[Count], days: &[Day]) -> Chart {
    let received: u64 = days.iter().map(|d| d.received).sum();
    let items: Vec<(String, f64)> = reasons
        .iter()
        .map(|r| (r.name.clone(), share(r.count, received)))
        .collect();
    let data: Vec<Value> = reasons
        .iter()
        .map(|r| json!({"reason": r.name, "count": r.count, "rate": share(r.count, received)}))
        .collect();
    Chart {
        id: "quarantine_by_reason",
        title: "Quarantine rate by reason (share of events received)",
        data: json!({"received": received, "reasons": data}),
        svg: bars(&items, true),
    }
}

/// Opt-in rate per category over visitors' latest decisions.
pub fn consent_rates(latest: &[String]) -> Vec<(String, u64, u64)> {
    let mut rates: Vec<(String, u64, u64)> = Vec::new();
    for text in latest {
        let Ok(Value::Object(cats)) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        for (cat, v) in cats {
            let granted = u64::from(v.as_bool() == Some(true));
            match rates.iter_mut().find(|r| r.0 == cat) {
                Some(r) => (r.1, r.2) = (r.1 + granted, r.2 + 1),
                None => rates.push((cat, granted, 1)),
            }
        }
    }
    rates.sort();
    rates
}

fn consent_by_category(latest: &[String]) -> Chart {
    let rates = consent_rates(latest);
    let items: Vec<(String, f64)> = rates
        .iter()
        .map(|(c, g, n)| (c.clone(), share(*g, *n)))
        .collect();
    let data: Vec<Value> = rates
        .iter()
        .map(|(c, g, n)| json!({"category": c, "granted": g, "visitors": n, "rate": share(*g, *n)}))
        .collect();
    Chart {
        id: "consent_by_category",
        title: "Consent opt-in rate by category (visitors' latest choice)",
        data: Value::Array(data),
        svg: bars(&items, true),
    }
}

fn top_events(events: &[Count]) -> Chart {
    let top: Vec<&Count> = events.iter().take(10).collect();
    let items: Vec<(String, f64)> = top
        .iter()
        .map(|e| (e.name.clone(), e.count as f64))
        .collect();
    let data: Vec<Value> = top
        .iter()
        .map(|e| json!({"event": e.name, "count": e.count}))
        .collect();
    Chart {
        id: "top_events",
        title: "Top events",
        data: Value::Array(data),
        svg: bars(&items, false),
    }
}

/// Planned events and how often each was seen; coverage is the share seen at least once.
pub fn coverage(planned: &[String], events: &[Count]) -> (f64, Vec<(String, u64)>) {
    let seen: Vec<(String, u64)> = planned
        .iter()
        .map(|p| {
            let n = events.iter().find(|e| e.name == *p).map_or(0, |e| e.count);
            (p.clone(), n)
        })
        .collect();
    let hit = seen.iter().filter(|(_, n)| *n > 0).count() as u64;
    (share(hit, planned.len() as u64), seen)
}

fn plan_coverage(planned: Option<&[String]>, events: &[Count]) -> Chart {
    let Some(planned) = planned else {
        return Chart {
            id: "plan_coverage",
            title: "Plan coverage",
            data: json!({"plan": false}),
            svg: empty("This source has no tracking plan"),
        };
    };
    let (rate, seen) = coverage(planned, events);
    let never: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(p, _)| p.as_str())
        .collect();
    let items: Vec<(String, f64)> = seen.iter().map(|(p, n)| (p.clone(), *n as f64)).collect();
    let mut counts = Map::new();
    for (p, n) in &seen {
        counts.insert(p.clone(), json!(n));
    }
    Chart {
        id: "plan_coverage",
        title: "Plan coverage: planned events and how often each was seen",
        data: json!({"plan": true, "coverage": rate, "planned": planned.len(),
                     "neverSeen": never, "counts": counts}),
        svg: bars(&items, false),
    }
}

fn short_day(day: &str) -> String {
    day.get(5..).unwrap_or(day).to_string()
}

/// Text for SVG: `&`, `<`, `>` and quotes escaped; control characters dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn truncated(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return escape(s);
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    escape(&(cut + "…"))
}

const W: u32 = 640;
const FONT: &str = "font-family=\"system-ui,sans-serif\" font-size=\"12\"";

fn empty(text: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} 60\" role=\"img\">\
         <text x=\"10\" y=\"35\" {FONT} fill=\"#555\">{}</text></svg>",
        escape(text)
    )
}

/// Stacked columns, one per label, with a legend.
fn columns(labels: &[String], series: &[(&str, &str, Vec<u64>)]) -> String {
    if labels.is_empty() {
        return empty("No events in this period");
    }
    let (h, top, bottom, left) = (220u32, 28u32, 30u32, 44u32);
    let total = |i: usize| -> u64 {
        series
            .iter()
            .map(|s| s.2.get(i).copied().unwrap_or(0))
            .sum()
    };
    let max = (0..labels.len()).map(total).max().unwrap_or(0).max(1);
    let plot_h = f64::from(h - top - bottom);
    let step = f64::from(W - left - 8) / labels.len() as f64;
    let mut svg =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {h}\" role=\"img\">");
    legend(&mut svg, series.iter().map(|s| (s.0, s.1)));
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"end\" fill=\"#555\">{max}</text>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{W}\" y2=\"{top}\" stroke=\"#eee\"/>\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{W}\" y2=\"{}\" stroke=\"#999\"/>",
        left - 4,
        top + 4,
        h - bottom,
        h - bottom
    );
    let every = (labels.len() / 12).max(1);
    for (i, label) in labels.iter().enumerate() {
        let x = f64::from(left) + step * i as f64;
        // A column is at most 48 units wide, centred in its step.
        let bar = (step * 0.8).min(48.0);
        let mut y = f64::from(h - bottom);
        for (name, color, values) in series {
            let v = values.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let bh = plot_h * v as f64 / max as f64;
            y -= bh;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\">\
                 <title>{} {name}: {v}</title></rect>",
                x + (step - bar) / 2.0,
                bar,
                escape(label)
            );
        }
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" {FONT} text-anchor=\"middle\" fill=\"#555\">{}</text>",
                x + step / 2.0,
                h - bottom + 16,
                truncated(label, 8)
            );
        }
    }
    svg + "</svg>"
}

fn legend<'a>(svg: &mut String, items: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut x = 44;
    for (name, color) in items {
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"6\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"15\" {FONT} fill=\"#333\">{name}</text>",
            x + 14
        );
        x += 24 + 7 * name.len() as u32;
    }
}

/// Horizontal bars with their values (`percent`: values are shares of 1).
fn bars(items: &[(String, f64)], percent: bool) -> String {
    if items.is_empty() {
        return empty("Nothing to show in this period");
    }
    let row = 24u32;
    let h = row * items.len() as u32 + 12;
    let (label_w, value_w) = (190u32, 70u32);
    let max = if percent {
        1.0
    } else {
        items.iter().map(|i| i.1).fold(0.0, f64::max).max(1.0)
    };
    let span = f64::from(W - label_w - value_w);
    let mut svg =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {h}\" role=\"img\">");
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 6 + row * i as u32;
        let w = span * (v / max).clamp(0.0, 1.0);
        let shown = if percent {
            format!("{:.1}%", v * 100.0)
        } else {
            format!("{}", *v as u64)
        };
        let color = if !percent && *v == 0.0 {
            "#c0392b"
        } else {
            ACCEPTED
        };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" {FONT} text-anchor=\"end\" fill=\"#333\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"{color}\">\
             <title>{}: {shown}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" {FONT} fill=\"#333\">{shown}</text>",
            label_w - 6,
            y + 12,
            truncated(label, 28),
            escape(label),
            f64::from(label_w) + w + 6.0,
            y + 12
        );
    }
    svg + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: &str, accepted: u64, quarantined: u64, identified: u64) -> Day {
        Day {
            day: d.into(),
            received: accepted + quarantined,
            accepted,
            quarantined,
            identified,
            ..Day::default()
        }
    }

    #[test]
    fn every_chart_is_drawn_with_its_data() {
        let input = Input {
            days: vec![day("2026-12-01", 90, 10, 30), day("2026-12-02", 50, 0, 20)],
            hours: vec![
                Hour {
                    hour: "2026-12-02T10".into(),
                    verdict: "accepted".into(),
                    count: 4,
                },
                Hour {
                    hour: "2026-12-02T10".into(),
                    verdict: "quarantined".into(),
                    count: 1,
                },
            ],
            reasons: vec![Count {
                name: "pii_detected".into(),
                count: 10,
            }],
            consent: vec![
                r#"{"analytics":true,"marketing":false}"#.into(),
                r#"{"analytics":true,"marketing":true}"#.into(),
                "not json".into(),
            ],
            events: vec![Count {
                name: "Order Completed".into(),
                count: 3,
            }],
            planned: Some(vec!["Order Completed".into(), "Product Added".into()]),
        };
        let c = charts(&input);
        let ids: Vec<&str> = c.iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [
                "volume_by_day",
                "volume_by_hour",
                "identified_share",
                "quarantine_by_reason",
                "consent_by_category",
                "top_events",
                "plan_coverage"
            ]
        );
        assert!(c
            .iter()
            .all(|c| c.svg.starts_with("<svg") && c.svg.ends_with("</svg>")));
        assert_eq!(c[2].data["identifiedShare"], json!(50.0 / 140.0));
        assert_eq!(c[3].data["reasons"][0]["rate"], json!(10.0 / 150.0));
        assert_eq!(
            c[4].data[0],
            json!({"category": "analytics", "granted": 2, "visitors": 2, "rate": 1.0})
        );
        assert_eq!(c[4].data[1]["rate"], json!(0.5));
        assert_eq!(c[6].data["coverage"], json!(0.5));
        assert_eq!(c[6].data["neverSeen"], json!(["Product Added"]));
        assert_eq!(
            c[1].data[0],
            json!({"hour": "2026-12-02T10", "accepted": 4, "quarantined": 1})
        );
    }

    #[test]
    fn labels_from_event_data_cannot_inject_markup() {
        let hostile = "</text><script>alert(1)</script><a href=\"javascript:x\">&";
        let input = Input {
            events: vec![Count {
                name: hostile.into(),
                count: 2,
            }],
            reasons: vec![Count {
                name: hostile.into(),
                count: 1,
            }],
            planned: Some(vec![hostile.into()]),
            ..Input::default()
        };
        for c in charts(&input) {
            assert!(!c.svg.contains("<script"), "{}", c.id);
            assert!(!c.svg.contains("<a "), "{}", c.id);
            assert!(!c.svg.contains("\"javascript"), "{}", c.id);
        }
    }

    #[test]
    fn empty_periods_and_a_source_without_a_plan_say_so() {
        let c = charts(&Input::default());
        assert!(c[0].svg.contains("No events"));
        assert_eq!(c[6].data, json!({"plan": false}));
        assert_eq!(coverage(&[], &[]).0, 0.0);
    }
}
