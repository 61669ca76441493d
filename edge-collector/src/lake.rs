//! The lake and the hot window: decides where a clean event lives for good and for how
//! long D1 keeps it. R2 is every source's system of record: gzip NDJSON objects under
//! `lake/source=<write key>/date=<YYYY-MM-DD>/hour=<HH>/`, so DuckDB, ClickHouse or
//! Spark read them with Hive partitioning. An object's name is a hash of its sorted
//! lines, so a queue batch delivered again rewrites the same object. The adapter gzips
//! the text with the runtime's `CompressionStream`: flate2's encoder made the worker
//! 49 KB larger (1,070,005 against 1,021,198 bytes of wasm, measured), paid at every
//! cold start. D1 keeps each
//! source's last `retentionDays` (default 30) for the admin API and the profile views;
//! the scheduled maintenance prunes older rows and warns well before D1's size limit.
//! D1 is also the lake's outbox: a row stays unarchived until its line is in R2, the
//! maintenance sweeps rows the queue did not archive in time, and only archived rows are
//! pruned, so a lost queue message never loses an event.

use crate::store::StoredEvent;
use std::collections::BTreeMap;

/// How long D1 keeps a source's events unless the source says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// D1's database size limit (10 GB).
pub const D1_LIMIT_BYTES: u64 = 10_000_000_000;
/// The share of the limit at which maintenance warns: at 70% a site still has weeks to
/// shorten its window or move sources to another database.
pub const WARN_SHARE: f64 = 0.7;
/// Rows one prune statement deletes (a D1 statement must stay short).
pub const PRUNE_CHUNK: u32 = 5_000;
/// Statements one maintenance run spends per source and table; the rest waits an hour.
pub const PRUNE_ROUNDS: u32 = 20;
/// How long a row may wait for the queue before the sweep archives it itself. A queue
/// delivers in seconds; waiting far longer means the sweep rarely writes a line the
/// queue writes too (the lake's readers key lines by messageId either way).
pub const SWEEP_GRACE_MS: i64 = 15 * 60_000;
/// Rows one sweep statement reads: at 1.5–3 KB a row, about 1 MB of text per object.
pub const SWEEP_CHUNK: u32 = 500;
/// Sweep statements one maintenance run spends per source; the rest waits an hour.
pub const SWEEP_ROUNDS: u32 = 20;

/// The prefix of a source's objects.
pub fn prefix(write_key: &str) -> String {
    format!("lake/source={}/", part(write_key))
}

/// The prefix of a source's objects written before the lake's layout (plain NDJSON
/// by day); erasure still covers them.
pub fn legacy_prefix(write_key: &str) -> String {
    format!("events/{write_key}/")
}

/// A write key as a path segment: the characters a key may hold, others as `_` (a
/// key with `/` must not open another source's prefix).
fn part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One line on its way to the lake, as the queue carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub write_key: &'a str,
    pub received_at: &'a str,
    pub line: &'a str,
}

/// Groups lines by source, day and hour (of their receipt) and names each group's
/// object; the text is to be gzipped. Lines are sorted within an object, so the same
/// lines give the same name.
pub fn objects<'a>(lines: impl IntoIterator<Item = Line<'a>>) -> Vec<(String, String)> {
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for l in lines {
        let day = l.received_at.get(..10).unwrap_or("unknown");
        let hour = l.received_at.get(11..13).unwrap_or("00");
        let dir = format!(
            "{}date={}/hour={}/",
            prefix(l.write_key),
            part(day),
            part(hour)
        );
        groups.entry(dir).or_default().push(l.line);
    }
    groups
        .into_iter()
        .map(|(dir, mut lines)| {
            lines.sort_unstable();
            lines.dedup();
            let body = lines.join("\n") + "\n";
            let name = tracking_plan::identifiers::sha256_hex(&body);
            (format!("{dir}{}.ndjson.gz", &name[..32]), body)
        })
        .collect()
}

/// The newest `received_at` the sweep takes at `now_ms`: rows the queue had time to
/// archive.
pub fn sweep_before(now_ms: i64) -> String {
    tracking_plan::time::format_rfc3339(now_ms - SWEEP_GRACE_MS)
}

/// A hot-window row the queue has not archived, as the sweep reads it back from D1
/// (the columns the lake's line is made of).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct HotRow {
    pub write_key: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub profile_id: Option<String>,
    pub identified: i64,
    pub bot: i64,
    pub timestamp: String,
    pub received_at: String,
    pub payload: String,
}

impl HotRow {
    /// The event the row was written from, so the sweep writes the line the queue would
    /// have. A type the pipeline never writes reads as `unknown`.
    pub fn into_stored(self) -> StoredEvent {
        let kind = tracking_plan::message::MessageType::from_name(&self.kind)
            .map_or("unknown", |k| k.as_str());
        StoredEvent {
            write_key: self.write_key,
            message_id: self.message_id,
            kind,
            event: self.event,
            anonymous_id: self.anonymous_id,
            user_id: self.user_id,
            profile_id: self.profile_id,
            identified: self.identified != 0,
            bot: self.bot != 0,
            timestamp: self.timestamp,
            received_at: self.received_at,
            payload: self.payload,
            fingerprint: String::new(),
        }
    }
}

/// The rows of archived lines, as the consumer marks them in D1: a JSON array of
/// `[writeKey, messageId]` pairs (one statement for every source of a batch). Lines
/// queued before the outbox carry no messageId; their rows count as archived already.
pub fn archived_rows<'a>(lines: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let pairs: Vec<[&str; 2]> = lines
        .into_iter()
        .filter(|(_, id)| !id.is_empty())
        .map(|(key, id)| [key, id])
        .collect();
    serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
}

/// The bytes one queue message of lines may take: a message takes 128 KB, and a
/// `sendBatch` 256 KB; what is left is the envelope's.
pub const PACK_BYTES: usize = 120 * 1024;

/// What a line takes in a queue message: its text as a JSON string (each quote and
/// backslash escaped) and its fields' names and values around it.
pub fn queued_size(line: &str, write_key: &str, message_id: &str) -> usize {
    let escapes = line.bytes().filter(|b| matches!(b, b'"' | b'\\')).count();
    line.len() + escapes + write_key.len() + message_id.len() + 128
}

/// The identifiers of a queued line an erasure's tombstones name: its profile id,
/// anonymous id and user id.
pub fn subjects(line: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    ["profileId", "anonymousId", "userId"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(|x| x.as_str()))
        .map(str::to_string)
        .collect()
}

/// Whether a queued line belongs to a person erased after it was received: one of its
/// subjects' tombstones (`digests`, by `latest`: a digest's latest erasure time) is at
/// or after `received_at`. An event received after the erasure is a new one, and kept.
pub fn erased_after(
    digests: &[String],
    received_at: &str,
    latest: &BTreeMap<String, String>,
) -> bool {
    digests.iter().any(|d| {
        latest
            .get(d)
            .is_some_and(|erased| erased.as_str() >= received_at)
    })
}

/// The object's lines without the ones `drop` matches (an erasure), and how many went;
/// `None` when nothing matched (the object stays as it is). An empty text means the
/// object goes.
pub fn without(text: &str, drop: impl Fn(&str) -> bool) -> Option<(String, u64)> {
    let (kept, dropped): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter(|l| !l.is_empty())
        .partition(|l| !drop(l));
    if dropped.is_empty() {
        return None;
    }
    let body = if kept.is_empty() {
        String::new()
    } else {
        kept.join("\n") + "\n"
    };
    Some((body, dropped.len() as u64))
}

/// The oldest `received_at` D1 keeps for a source at `now_ms`.
pub fn cutoff(now_ms: i64, retention_days: u32) -> String {
    let days = i64::from(retention_days.max(1));
    tracking_plan::time::format_rfc3339(now_ms - days * 86_400_000)
}

/// What the database's size says, measured after a maintenance run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SizeCheck {
    pub bytes: u64,
    pub limit_bytes: u64,
    pub share: f64,
    /// Set when the share is at or above [`WARN_SHARE`].
    pub warning: Option<String>,
}

pub fn size_check(bytes: u64, limit_bytes: u64) -> SizeCheck {
    let share = bytes as f64 / limit_bytes.max(1) as f64;
    let warning = (share >= WARN_SHARE).then(|| {
        format!(
            "D1 holds {bytes} bytes, {}% of its {limit_bytes}-byte limit: shorten the sources' \
             retentionDays or move sources to another database (the lake keeps everything)",
            // Whole percent as an integer: float formatting costs 14 KB of wasm.
            (share * 100.0).round() as u64
        )
    });
    SizeCheck {
        bytes,
        limit_bytes,
        share,
        warning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(k: &'a str, at: &'a str, l: &'a str) -> Line<'a> {
        Line {
            write_key: k,
            received_at: at,
            line: l,
        }
    }

    /// A queue message's size is never under-counted: the line escaped as a JSON string,
    /// with its fields, as serde writes the message.
    #[test]
    fn a_queued_line_s_size_covers_its_message() {
        let lines = [
            r#"{"a":"b"}"#.to_string(),
            serde_json::json!({"t": "quote \" back \\ slash \n ünïcödé 🙂", "n": [1, 2]})
                .to_string(),
            "\"".repeat(5_000),
            "x".repeat(40_000),
        ];
        for l in &lines {
            let message = serde_json::json!({"events": [{"write_key": "sl_server_key",
                "message_id": "m-1", "received_at": "2026-12-07T15:00:00.000Z", "line": l}]});
            let actual = serde_json::to_string(&message).unwrap().len();
            assert!(
                queued_size(l, "sl_server_key", "m-1") >= actual,
                "{actual} for {l:.40}"
            );
        }
    }

    #[test]
    fn a_line_queued_before_its_person_s_erasure_is_dropped_and_one_after_kept() {
        let l = r#"{"profileId":"p_1","anonymousId":"a-1","userId":null,"event":"E"}"#;
        assert_eq!(subjects(l), ["p_1", "a-1"]);
        assert!(subjects("not json").is_empty());
        let latest: BTreeMap<String, String> =
            [("d-a".to_string(), "2026-12-07T10:00:00.000Z".to_string())].into();
        let ds = ["d-p".to_string(), "d-a".to_string()];
        assert!(erased_after(&ds, "2026-12-07T09:59:59.999Z", &latest));
        assert!(erased_after(&ds, "2026-12-07T10:00:00.000Z", &latest));
        assert!(
            !erased_after(&ds, "2026-12-07T10:00:00.001Z", &latest),
            "received after"
        );
        assert!(!erased_after(
            &["d-x".to_string()],
            "2026-01-01T00:00:00.000Z",
            &latest
        ));
    }

    #[test]
    fn objects_are_partitioned_by_source_day_and_hour_and_named_by_content() {
        let a = objects([
            line("wk", "2026-12-02T10:15:00.000Z", "{\"m\":2}"),
            line("wk", "2026-12-02T10:59:00.000Z", "{\"m\":1}"),
            line("wk", "2026-12-02T11:00:00.000Z", "{\"m\":3}"),
            line("other/../wk", "2026-12-02T10:00:00.000Z", "{\"m\":4}"),
        ]);
        let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].starts_with("lake/source=other____wk/date=2026-12-02/hour=10/"));
        assert!(names[1].starts_with("lake/source=wk/date=2026-12-02/hour=10/"));
        assert!(names[2].starts_with("lake/source=wk/date=2026-12-02/hour=11/"));
        assert!(names.iter().all(|n| n.ends_with(".ndjson.gz")));
        assert_eq!(a[1].1, "{\"m\":1}\n{\"m\":2}\n");
        // The same lines in another order: the same object.
        let b = objects([
            line("wk", "2026-12-02T10:59:00.000Z", "{\"m\":1}"),
            line("wk", "2026-12-02T10:15:00.000Z", "{\"m\":2}"),
        ]);
        assert_eq!(b[0].0, a[1].0);
    }

    #[test]
    fn a_swept_row_gives_the_line_the_queue_would_have_written() {
        let e = StoredEvent {
            write_key: "wk".into(),
            message_id: "m1".into(),
            kind: "page",
            event: None,
            anonymous_id: Some("a1".into()),
            user_id: Some("u1".into()),
            profile_id: Some("p_1".into()),
            identified: true,
            bot: false,
            timestamp: "2026-12-02T10:00:00.000Z".into(),
            received_at: "2026-12-02T10:00:01.000Z".into(),
            payload: r#"{"type":"page","properties":{"path":"/"}}"#.into(),
            fingerprint: "f".into(),
        };
        // The row as D1 answers it: integers for the flags, the payload as text.
        let row = serde_json::json!({
            "write_key": "wk", "message_id": "m1", "type": "page", "event": null,
            "anonymous_id": "a1", "user_id": "u1", "profile_id": "p_1", "identified": 1,
            "bot": 0, "timestamp": e.timestamp, "received_at": e.received_at,
            "payload": e.payload,
        });
        let back: HotRow = serde_json::from_value(row).unwrap();
        assert_eq!(back.clone().into_stored().archive_line(), e.archive_line());
        let odd = HotRow {
            kind: "nonsense".into(),
            ..back
        };
        assert_eq!(odd.into_stored().kind, "unknown");
    }

    #[test]
    fn the_sweep_waits_for_the_queue_and_the_consumer_marks_what_it_wrote() {
        let now = tracking_plan::time::parse_rfc3339("2026-12-02T10:15:00.000Z").unwrap();
        assert_eq!(sweep_before(now), "2026-12-02T10:00:00.000Z");
        let rows = archived_rows([("a", "m1"), ("b", "m\"2"), ("a", "")]);
        assert_eq!(
            rows, r#"[["a","m1"],["b","m\"2"]]"#,
            "an old message without an id marks nothing"
        );
    }

    #[test]
    fn erasure_rewrites_only_what_it_matches() {
        let text = "{\"a\":\"x\"}\n{\"a\":\"y\"}\n";
        assert_eq!(without(text, |l| l.contains("z")), None);
        let (body, n) = without(text, |l| l.contains("x")).unwrap();
        assert_eq!((body.as_str(), n), ("{\"a\":\"y\"}\n", 1));
        let (body, n) = without(text, |_| true).unwrap();
        assert_eq!((body.len(), n), (0, 2));
    }

    #[test]
    fn the_window_and_the_size_warning() {
        let now = tracking_plan::time::parse_rfc3339("2026-12-31T00:00:00.000Z").unwrap();
        assert_eq!(cutoff(now, 30), "2026-12-01T00:00:00.000Z");
        assert_eq!(cutoff(now, 0), "2026-12-30T00:00:00.000Z", "at least a day");
        assert_eq!(size_check(6_999, 10_000).warning, None);
        let w = size_check(7_000, 10_000);
        assert!(w.warning.unwrap().contains("70%"));
        assert_eq!(size_check(1, 0).share, 1.0);
    }
}
