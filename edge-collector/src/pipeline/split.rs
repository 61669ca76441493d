//! Batch splitting: decides where each event of a batch body begins and ends, and where
//! the envelope's other keys' values are, without reading the events' JSON. Each event
//! is then read in full by `prepare`, and the envelope's other values by serde_json
//! (`envelope::parse`), so every byte is still read as JSON once.
//!
//! Hand-written because serde_json reads what it skips (`RawValue`, `IgnoredAny`):
//! splitting the benchmark's batches into raw events that way took 17.4 M of the
//! pipeline's 204 M instructions (callgrind, `pipeline_bench 100`); this split takes
//! 10.2 M, half of it `memchr` finding the ends of strings. (Strings scanned byte by
//! byte took 17.6 M; the first 16 bytes by hand before `memchr`, 11.9 M.)
//!
//! Anything this does not expect (a key with an escape, a key twice, `batch` not an
//! array, a syntax error between events, text after the object) is `None`: the body is
//! then read by serde_json as before, which says what is wrong with it. What it cannot
//! see, an event that is not JSON, `prepare` finds; the body is then read by serde_json
//! again to answer as before (`envelope::strict`).

/// Where a batch body's parts are, as text.
#[derive(Debug, Default, PartialEq)]
pub struct Split<'a> {
    /// The events, each as its text (`None`: no `batch` key, or `null`).
    pub batch: Option<Vec<&'a str>>,
    pub sent_at: Option<&'a str>,
    pub write_key: Option<&'a str>,
    pub context: Option<&'a str>,
    /// The values of the keys the envelope does not read (serde_json checks them).
    pub others: Vec<&'a str>,
}

/// JSON's whitespace, skipped from `i`.
fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the string that starts at `b[i]` (a `"`): just after its closing quote.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[j] == b'"' {
            return Some(j + 1);
        }
        j += 2; // an escape: the byte after the backslash is never the closing quote
    }
}

/// The end of the value that starts at `b[i]`: an object or array by its brackets (the
/// strings inside read as strings), a string by its quote, anything else by the next
/// `,`, `]`, `}` or whitespace.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let end = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                .map_or(b.len(), |n| i + n);
            (end > i).then_some(end)
        }
    }
}

/// The events of the array that starts at `b[i]` (a `[`), and the index after it.
fn events(s: &str, i: usize) -> Option<(Vec<&str>, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b']') {
        return Some((out, j + 1));
    }
    loop {
        let end = value_end(b, j)?;
        out.push(s.get(j..end)?);
        j = ws(b, end);
        match b.get(j)? {
            b',' => j = ws(b, j + 1),
            b']' => return Some((out, j + 1)),
            _ => return None,
        }
    }
}

/// Splits a batch body (an object with `batch`, `sentAt`, `writeKey`, `context` and
/// any other keys), or `None` when serde_json should read it.
pub fn split(s: &str) -> Option<Split<'_>> {
    let b = s.as_bytes();
    let mut out = Split::default();
    let mut seen = [false; 4];
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = s.get(i + 1..key_end - 1)?;
        if key.bytes().any(|c| c == b'\\' || c < 0x20) {
            return None;
        }
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let slot = ["batch", "sentAt", "writeKey", "context"]
            .iter()
            .position(|k| *k == key);
        if let Some(n) = slot {
            if std::mem::replace(&mut seen[n], true) {
                return None; // serde_json names the duplicate key
            }
        }
        let end = match (slot, b.get(i)?) {
            (Some(0), b'[') => {
                let (events, end) = events(s, i)?;
                out.batch = Some(events);
                end
            }
            (Some(0), b'n') => {
                let end = value_end(b, i)?;
                (s.get(i..end)? == "null").then_some(end)?
            }
            (Some(0), _) => return None,
            _ => {
                let end = value_end(b, i)?;
                let text = s.get(i..end)?;
                match slot {
                    Some(1) => out.sent_at = Some(text),
                    Some(2) => out.write_key = Some(text),
                    Some(3) => out.context = Some(text),
                    _ => out.others.push(text),
                }
                end
            }
        };
        i = ws(b, end);
        match b.get(i)? {
            b',' => i = ws(b, i + 1),
            b'}' => return (ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    /// Where serde_json reads a batch's parts.
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        batch: Option<Vec<&'a RawValue>>,
        #[serde(borrow)]
        context: &'a RawValue,
        #[serde(borrow)]
        other: &'a RawValue,
    }

    #[test]
    fn finds_the_events_and_the_envelope() {
        let body = r#" { "writeKey" : "wk", "batch": [ {"a": "x,]}\"{["}, 1 ,"s", [2, {"b": []}], null ],
            "sentAt":"2026-01-01T00:00:00Z", "context": {"ip": "1.2.3.4"}, "x": {"y": [1]} } "#;
        let s = split(body).unwrap();
        assert_eq!(
            s.batch.unwrap(),
            vec![
                r#"{"a": "x,]}\"{["}"#,
                "1",
                r#""s""#,
                r#"[2, {"b": []}]"#,
                "null"
            ]
        );
        assert_eq!(s.write_key, Some(r#""wk""#));
        assert_eq!(s.sent_at, Some(r#""2026-01-01T00:00:00Z""#));
        assert_eq!(s.context, Some(r#"{"ip": "1.2.3.4"}"#));
        assert_eq!(s.others, vec![r#"{"y": [1]}"#]);
        assert_eq!(split(r#"{"batch":[]}"#).unwrap().batch, Some(vec![]));
        assert_eq!(split(r#"{"batch":null}"#).unwrap().batch, None);
        assert_eq!(split("{}"), Some(Split::default()));
    }

    #[test]
    fn leaves_what_it_does_not_expect_to_serde_json() {
        for body in [
            "",
            "[]",
            r#"{"batch":[{}] {}"#,
            r#"{"batch":[{} {}]}"#,
            r#"{"batch":[{},]}"#,
            r#"{"batch":[{}],}"#,
            r#"{"batch":[{}]} x"#,
            r#"{"batch":{}}"#,
            r#"{"batch":nul}"#,
            r#"{"batch":[],"batch":[]}"#,
            r#"{"b\u0061tch":[]}"#,
            r#"{"batch":[{"a":"unterminated}]}"#,
            r#"{"batch":[{"a":[}]}"#,
            r#"{"batch" [] }"#,
            r#"{batch: []}"#,
            r#"{"batch":[1,]}"#,
            r#"{"batch":[,1]}"#,
        ] {
            assert_eq!(split(body), None, "{body}");
        }
    }

    fn value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[\\PC\"\\\\{}\\[\\],: ]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[\\PC\"\\\\]{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON batch, written compactly or with whitespace: the events are where
        /// serde_json reads them, and so are the envelope's values.
        #[test]
        fn splits_any_batch_where_serde_json_reads_it(
            events in proptest::collection::vec(value(), 0..5),
            context in value(),
            other in value(),
            pretty in proptest::bool::ANY,
        ) {
            let body = serde_json::json!({"batch": events, "context": context, "other": other,
                                          "sentAt": "2026-01-01T00:00:00Z"});
            let text = if pretty { serde_json::to_string_pretty(&body) } else { serde_json::to_string(&body) }.unwrap();
            let s = split(&text).unwrap();
            let theirs: Raw = serde_json::from_str(&text).unwrap();
            let events: Vec<&str> = theirs.batch.unwrap().into_iter().map(RawValue::get).collect();
            proptest::prop_assert_eq!(s.batch.unwrap(), events);
            proptest::prop_assert_eq!(s.context, Some(theirs.context.get()));
            proptest::prop_assert_eq!(s.others, vec![theirs.other.get()]);
        }
    }

    #[test]
    fn agrees_with_serde_json_on_what_it_reads() {
        #[derive(serde::Deserialize)]
        struct Raw<'a> {
            #[serde(borrow)]
            batch: Option<Vec<&'a RawValue>>,
        }
        for body in [
            r#"{"batch":[{"type":"track","properties":{"q":"a\\\"b","n":[1,2,{"c":"]"}]}},{"x":"\u00e9"}]}"#,
            "{\"batch\":[\t{ }\n,\r[ ]]}",
            r#"{"batch":["\\",-1.5e3,true,false]}"#,
        ] {
            let ours = split(body).unwrap().batch.unwrap();
            let theirs: Vec<&str> = serde_json::from_str::<Raw>(body)
                .unwrap()
                .batch
                .unwrap()
                .into_iter()
                .map(RawValue::get)
                .collect();
            assert_eq!(ours, theirs, "{body}");
        }
    }
}
