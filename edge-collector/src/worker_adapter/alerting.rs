//! The alerts' adapter: reads one source's counts from D1, has `crate::alerts` judge
//! the last complete day, stores each alert once (source, kind, subject, day) and posts
//! the new ones to the source's webhook, signed. Decides nothing itself.

use super::admin::{rows, text};
use crate::alerts::{self, Alert, ChannelDay, DayTotals, EventDay, Facts};
use crate::sources::Source;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::*;

fn num(v: &Value, k: &str) -> u64 {
    super::admin::num(v, k) as u64
}

fn event_days(rows: Vec<Value>) -> Vec<EventDay> {
    rows.iter()
        .map(|r| EventDay {
            event: text(r, "event"),
            day: text(r, "day"),
            count: num(r, "count"),
        })
        .collect()
}

/// Judges `key`'s day before `now_ms`; returns the alerts new this run.
pub async fn run(
    env: &Env,
    db: &D1Database,
    key: &str,
    source: &Source,
    now_ms: i64,
) -> Result<Vec<Alert>> {
    let today = tracking_plan::time::format_rfc3339(now_ms)[..10].to_string();
    let (Some(day), Some(from)) = (
        alerts::day_before(&today, 1),
        alerts::day_before(&today, 36),
    ) else {
        return Ok(Vec::new());
    };
    let loaded = load(db, key, source, &from, &day, &today).await?;
    let conversions: Vec<String> = source
        .attribution
        .conversions
        .iter()
        .map(|c| c.event.clone())
        .collect();
    let found = alerts::judge(&Facts {
        channels: &loaded.channels,
        conversion_events: &conversions,
        day: &day,
        days: &loaded.days,
        events: &loaded.events,
        quarantined_events: &loaded.quarantined,
        planned: loaded.planned.as_deref(),
        config: source.alerts.clone(),
    });
    let new = store(db, key, found, now_ms).await?;
    deliver(env, db, key, source, now_ms).await?;
    Ok(new)
}

/// What `alerts::judge` reads, as loaded from D1.
struct Loaded {
    days: Vec<DayTotals>,
    events: Vec<EventDay>,
    quarantined: Vec<EventDay>,
    channels: Vec<ChannelDay>,
    planned: Option<Vec<String>>,
}

/// A source's counts from `from` to the day before `today` (quarantined events: `day`).
async fn load(
    db: &D1Database,
    key: &str,
    source: &Source,
    from: &str,
    day: &str,
    today: &str,
) -> Result<Loaded> {
    let args = |a: &str, b: &str| -> Vec<JsValue> { vec![key.into(), a.into(), b.into()] };
    let totals = rows(
        db,
        "SELECT day, SUM(received) AS received, SUM(accepted) AS accepted, \
         SUM(quarantined) AS quarantined, SUM(identified) AS identified FROM daily_counts \
         WHERE write_key = ?1 AND day >= ?2 AND day < ?3 GROUP BY day",
        &args(from, today),
    )
    .await?;
    let days: Vec<DayTotals> = totals
        .iter()
        .map(|r| DayTotals {
            day: text(r, "day"),
            received: num(r, "received"),
            accepted: num(r, "accepted"),
            quarantined: num(r, "quarantined"),
            identified: num(r, "identified"),
        })
        .collect();
    let events = event_days(
        rows(
            db,
            "SELECT COALESCE(event, type) AS event, substr(received_at, 1, 10) AS day, \
             COUNT(*) AS count FROM events WHERE write_key = ?1 AND received_at >= ?2 \
             AND received_at < ?3 GROUP BY 1, 2",
            &args(from, today),
        )
        .await?,
    );
    let quarantined = event_days(
        rows(
            db,
            "SELECT COALESCE(json_extract(payload, '$.event'), json_extract(payload, '$.type'), \
             '(unreadable)') AS event, substr(received_at, 1, 10) AS day, COUNT(*) AS count \
             FROM quarantine WHERE write_key = ?1 AND received_at >= ?2 AND received_at < ?3 \
             GROUP BY 1, 2",
            &args(day, today),
        )
        .await?,
    );
    let channels: Vec<ChannelDay> = rows(
        db,
        "SELECT channel, substr(at, 1, 10) AS day, SUM(credit) AS conversions FROM conversion_credits \
         WHERE write_key = ?1 AND model = 'last_non_direct' AND window_days = 28 AND at >= ?2 \
         AND at < ?3 GROUP BY 1, 2",
        &args(from, today),
    )
    .await?
    .iter()
    .map(|r| ChannelDay {
        channel: text(r, "channel"),
        day: text(r, "day"),
        conversions: r.get("conversions").and_then(Value::as_f64).unwrap_or(0.0),
    })
    .collect();
    let planned: Option<Vec<String>> = source
        .compiled
        .as_ref()
        .map(|p| p.event_names().into_iter().map(str::to_string).collect());
    Ok(Loaded {
        days,
        events,
        quarantined,
        channels,
        planned,
    })
}

/// Stores each alert once (one D1 batch); returns those new this run.
async fn store(db: &D1Database, key: &str, found: Vec<Alert>, now_ms: i64) -> Result<Vec<Alert>> {
    if found.is_empty() {
        return Ok(found);
    }
    let at = tracking_plan::time::format_rfc3339(now_ms);
    let stmts = found
        .iter()
        .map(|a| {
            let detail = serde_json::to_string(a).unwrap_or_default();
            db.prepare(
                "INSERT INTO alerts (write_key, kind, subject, day, since, detail, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (write_key, kind, subject, day) DO NOTHING",
            )
            .bind(&[
                key.into(),
                a.kind.as_str().into(),
                a.subject.as_str().into(),
                a.day.as_str().into(),
                a.since.as_str().into(),
                detail.as_str().into(),
                at.as_str().into(),
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    let results = db.batch(stmts).await?;
    let mut new = Vec::new();
    for (a, r) in found.into_iter().zip(results) {
        if r.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0 {
            new.push(a);
        }
    }
    Ok(new)
}

/// Posts the source's undelivered alerts (oldest first, at most 50) to its webhook,
/// signed, and marks them delivered on a 2xx. A failed delivery is tried again by the
/// next run; the alerts are kept either way.
async fn deliver(
    env: &Env,
    db: &D1Database,
    key: &str,
    source: &Source,
    now_ms: i64,
) -> Result<()> {
    let Some(url) = source.alerts.webhook.as_deref() else {
        return Ok(());
    };
    let pending = rows(
        db,
        "SELECT id, detail FROM alerts WHERE write_key = ?1 AND delivered IS NULL ORDER BY id LIMIT 50",
        &[key.into()],
    )
    .await?;
    let ids: Vec<i64> = pending.iter().filter_map(|r| r["id"].as_i64()).collect();
    let alerts: Vec<Alert> = pending
        .iter()
        .filter_map(|r| serde_json::from_str(r["detail"].as_str()?).ok())
        .collect();
    if alerts.is_empty() {
        return Ok(());
    }
    let body = alerts::webhook_body(&source.name, &alerts);
    let ts = (now_ms / 1000).to_string();
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    headers.set("X-Sightline-Timestamp", &ts)?;
    if let Some(name) = source.alerts.secret.as_deref() {
        let secret = env
            .secret(name)
            .map(|s| s.to_string())
            .or_else(|_| env.var(name).map(|s| s.to_string()));
        match secret {
            Ok(k) => headers.set(
                "X-Sightline-Signature",
                &alerts::signature(k.as_bytes(), &ts, &body),
            )?,
            Err(_) => console_warn!("sightline alerts: secret {name} is not set; sent unsigned"),
        }
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&body)));
    let ok = match Fetch::Request(Request::new_with_init(url, &init)?)
        .send()
        .await
    {
        Ok(r) => (200..300).contains(&r.status_code()),
        Err(e) => {
            console_warn!("sightline alerts: webhook for {key}: {e}");
            false
        }
    };
    if ok {
        db.prepare(
            "UPDATE alerts SET delivered = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
        )
        .bind(&[
            tracking_plan::time::format_rfc3339(now_ms).as_str().into(),
            serde_json::to_string(&ids)
                .unwrap_or_default()
                .as_str()
                .into(),
        ])?
        .run()
        .await?;
    }
    Ok(())
}
