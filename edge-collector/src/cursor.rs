//! Admin list pages: decides where the next page of a newest-first list starts. A
//! cursor is the sort key of the last row a full page returned (events: the received
//! time and row id; the quarantine and the consent log: the row id; profiles: the
//! profile id), encoded opaquely
//! (base64url) so a client passes it back as it came. A page that is not full has no
//! next cursor.

use crate::error::Error;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Where a page of events starts: strictly older than this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsAfter {
    pub received_at: String,
    pub rowid: i64,
}

pub fn encode_events(received_at: &str, rowid: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("e|{rowid}|{received_at}"))
}

pub fn decode_events(cursor: &str) -> Result<EventsAfter, Error> {
    let text = decode(cursor)?;
    let mut parts = text.splitn(3, '|');
    match (
        parts.next(),
        parts.next().and_then(|r| r.parse().ok()),
        parts.next(),
    ) {
        (Some("e"), Some(rowid), Some(at)) if !at.is_empty() => Ok(EventsAfter {
            received_at: at.to_string(),
            rowid,
        }),
        _ => Err(Error::InvalidCursor),
    }
}

/// A cursor over a list ordered by its integer id.
pub fn encode_id(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("i|{id}"))
}

pub fn decode_id(cursor: &str) -> Result<i64, Error> {
    decode(cursor)?
        .strip_prefix("i|")
        .and_then(|id| id.parse().ok())
        .ok_or(Error::InvalidCursor)
}

/// A cursor over a list ordered by a text id (profiles).
pub fn encode_key(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("k|{key}"))
}

pub fn decode_key(cursor: &str) -> Result<String, Error> {
    decode(cursor)?
        .strip_prefix("k|")
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .ok_or(Error::InvalidCursor)
}

fn decode(cursor: &str) -> Result<String, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| Error::InvalidCursor)?;
    String::from_utf8(bytes).map_err(|_| Error::InvalidCursor)
}

/// The next page's cursor: only after a full page (a shorter one is the last).
pub fn next<T>(
    page: &[T],
    limit: usize,
    last_key: impl FnOnce(&T) -> Option<String>,
) -> Option<String> {
    if page.len() < limit {
        return None;
    }
    page.last().and_then(last_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = encode_events("2026-11-24T10:00:00.123Z", 42);
        assert_eq!(
            decode_events(&c).unwrap(),
            EventsAfter {
                received_at: "2026-11-24T10:00:00.123Z".into(),
                rowid: 42
            }
        );
        assert_eq!(decode_id(&encode_id(7)).unwrap(), 7);
        assert_eq!(decode_key(&encode_key("p_1a2b")).unwrap(), "p_1a2b");
        assert_eq!(decode_key(&encode_id(7)), Err(Error::InvalidCursor));
        for bad in ["", "!!", "e3xvbGQ", &encode_id(3)] {
            assert_eq!(decode_events(bad), Err(Error::InvalidCursor), "{bad}");
        }
        assert_eq!(decode_id(&c), Err(Error::InvalidCursor));
        assert!(!c.contains(['+', '/', '=']), "safe in a query string");
    }

    #[test]
    fn only_a_full_page_has_a_next_one() {
        let page = [1, 2, 3];
        assert_eq!(next(&page, 3, |x| Some(x.to_string())), Some("3".into()));
        assert_eq!(next(&page, 4, |x| Some(x.to_string())), None);
        assert_eq!(next::<i32>(&[], 0, |_| None), None);
    }
}
