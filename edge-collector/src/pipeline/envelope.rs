//! Envelope: decides whether a request is readable at all: its encoding and size, its
//! JSON, its write key (HTTP Basic, an `X-Write-Key` header, `writeKey` in the body or
//! in the URL for sendBeacon) and its origin, and which request headers a browser on an
//! allowed origin may send. Refusals are typed [`Error`]s; nothing about the events is
//! decided here.

use crate::enrich::EdgeInfo;
use crate::error::{json_error, Error};
use crate::sources::{Source, Sources};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use tracking_plan::MessageType;

/// Segment's limits, shared with the SDK: 32 KB per message, 500 KB per request.
pub use tracking_plan::limits::{MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};

/// Which ingestion endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Batch,
    Single(MessageType),
    /// Snowplow's tracker protocol (`crate::snowplow`): a batch once read.
    Snowplow,
    /// PostHog's capture API (`crate::posthog`): a batch once read.
    PostHog,
}

impl Endpoint {
    /// `/v1/batch`, `/v1/track`, ... and the short forms `/v1/b`, `/v1/t`, ...;
    /// `/beacon/v1/batch`, where RudderStack's browser SDK sends with sendBeacon;
    /// Jitsu's `/api/s/{type}` and `/api/s/s2s/{type}`, one message each; Snowplow's
    /// `/com.snowplowanalytics.snowplow/tp2`; and PostHog's `/e/` and its kin.
    pub fn from_path(path: &str) -> Option<Self> {
        if path.trim_end_matches('/') == "/beacon/v1/batch" {
            return Some(Endpoint::Batch);
        }
        if [crate::snowplow::PATH, crate::snowplow::PIXEL_PATH]
            .contains(&path.trim_end_matches('/'))
        {
            return Some(Endpoint::Snowplow);
        }
        if crate::posthog::PATHS.contains(&path) {
            return Some(Endpoint::PostHog);
        }
        if let Some(rest) = path.strip_prefix("/api/s/") {
            let name = rest
                .strip_prefix("s2s/")
                .unwrap_or(rest)
                .trim_end_matches('/');
            return MessageType::from_name(name).map(Endpoint::Single);
        }
        let name = path.strip_prefix("/v1/")?.trim_end_matches('/');
        match name {
            "batch" | "b" | "import" => Some(Endpoint::Batch),
            other => MessageType::from_name(other).map(Endpoint::Single),
        }
    }
}

/// The collector's path for a request under the site's configured base path (the
/// `BASE_PATH` variable, e.g. `/data`): `/data/v1/batch` is `/v1/batch`. A site picks
/// a neutral prefix of its own, so a blocker list that one day matches `/v1/batch` on
/// every site does not match its traffic. Paths outside the base stay as they are (the
/// root routes keep working); a base is `/` plus segments, and anything else is none.
pub fn under_base<'a>(path: &'a str, base: &str) -> &'a str {
    let base = base.trim_end_matches('/');
    if !base.starts_with('/') || base.contains("//") {
        return path;
    }
    match path.strip_prefix(base) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// One request as the pipeline sees it: no platform types.
#[derive(Debug, Clone)]
pub struct IngestRequest<'a> {
    pub endpoint: Endpoint,
    pub body: &'a [u8],
    pub authorization: Option<&'a str>,
    /// The `X-Write-Key` header (Jitsu's SDK sends its key there).
    pub write_key_header: Option<&'a str>,
    /// `writeKey` in the URL's query (RudderStack's sendBeacon mode puts it there).
    pub url_write_key: Option<&'a str>,
    /// Server time when the request arrived, in ms since the epoch.
    pub now_ms: i64,
    pub edge: EdgeInfo<'a>,
    /// A random id of this request (from the runtime's CSPRNG): the owner of its
    /// dedup claims.
    pub request_id: &'a str,
}

/// A batch body with its events still as text.
pub struct RawBatch<'a> {
    pub batch: Option<Vec<&'a str>>,
    /// Whether serde_json read the events while splitting them ([`strict`]); when the
    /// split did (`split`), they are read first by `prepare`.
    pub events_read: bool,
    pub sent_at: Option<Value>,
    pub write_key: Option<Value>,
    pub context: Option<Map<String, Value>>,
}

/// A batch body as serde_json reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StrictBatch<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    sent_at: Option<Value>,
    write_key: Option<Value>,
    context: Option<Map<String, Value>>,
}

/// A body's text.
fn body_text(body: &[u8]) -> Result<&str, Error> {
    let text = std::str::from_utf8(body).map_err(|_| Error::InvalidUtf8)?;
    // A byte-order mark some HTTP clients write before a UTF-8 body is not JSON.
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Whether serde_json reads a batch body as one ([`strict`]), and if not, why.
pub fn check_strict(body: &[u8]) -> Result<(), Error> {
    strict(body_text(body)?).map(drop)
}

/// Reads a batch body with serde_json, which reads every event's JSON (and says where
/// the body is not JSON).
pub fn strict(text: &str) -> Result<RawBatch<'_>, Error> {
    let b: StrictBatch<'_> = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    Ok(RawBatch {
        batch: b.batch.map(|v| v.into_iter().map(RawValue::get).collect()),
        events_read: true,
        sent_at: b.sent_at,
        write_key: b.write_key,
        context: b.context,
    })
}

/// Reads a batch body: split (`split`), the envelope's values read by serde_json, the
/// events left to `prepare`; or, when the split gives up or a value is not what serde
/// expects, [`strict`].
fn read_batch(text: &str) -> Result<RawBatch<'_>, Error> {
    let fast = || -> Option<RawBatch<'_>> {
        let s = super::split::split(text)?;
        for other in &s.others {
            serde_json::from_str::<serde::de::IgnoredAny>(other).ok()?;
        }
        let read = |v: Option<&str>| v.map(serde_json::from_str::<Value>).transpose();
        Some(RawBatch {
            batch: s.batch,
            events_read: false,
            sent_at: read(s.sent_at).ok()?.filter(|v| !v.is_null()),
            write_key: read(s.write_key).ok()?.filter(|v| !v.is_null()),
            context: match s.context {
                Some(c) => serde_json::from_str(c).ok()?,
                None => None,
            },
        })
    };
    fast().map_or_else(|| strict(text), Ok)
}

/// A readable request: its source and its messages, still raw.
pub struct Envelope<'a> {
    pub write_key: String,
    pub source: &'a Source,
    pub batch: RawBatch<'a>,
}

/// Finds the write key: HTTP Basic auth (`base64(writeKey + ":")`, as Segment's libraries
/// send it) first, then the first non-empty of `named`: in the order the callers give,
/// the `X-Write-Key` header (Jitsu's SDK), `writeKey` in the body, and `writeKey` in the
/// URL (sendBeacon cannot set headers; Sightline's SDK and analytics.js put it in the
/// body, RudderStack's SDK in the URL). Jitsu also sends a masked `writeKey` in the
/// body, so its header comes first. A key written `id:secret` (Jitsu's server keys,
/// which its library requires in that form) is its id, as Basic auth's user is: the
/// secret is not checked, as a Basic password is not.
pub fn write_key(authorization: Option<&str>, named: &[Option<&str>]) -> Result<String, Error> {
    if let Some(auth) = authorization {
        let encoded = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
            .ok_or(Error::BadAuthorization)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(Error::BadAuthorization)?;
        let key = decoded.split(':').next().unwrap_or_default();
        if !key.is_empty() {
            return Ok(key.to_string());
        }
    }
    named
        .iter()
        .flatten()
        .map(|k| k.split(':').next().unwrap_or_default())
        .find(|k| !k.is_empty())
        .map(str::to_string)
        .ok_or(Error::MissingWriteKey)
}

/// The request headers a browser on an allowed origin may send (CORS
/// `Access-Control-Allow-Headers`), from what its preflight asks for: the ones every
/// client needs, plus those asked, when each is an HTTP token of sane length (at most 32
/// names of 64 bytes). Client libraries add headers of their own (RudderStack's SDK
/// sends `AnonymousId`, `SentAt` and its retry headers): a preflight refused for one of
/// them loses every event of that site. A malformed request gets the base list only.
pub fn allowed_headers(requested: Option<&str>) -> String {
    const BASE: [&str; 3] = ["Content-Type", "Content-Encoding", "Authorization"];
    let asked: Vec<&str> = requested
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let token = |h: &str| {
        h.len() <= 64
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let mut out = BASE.to_vec();
    if asked.len() <= 32 && asked.iter().all(|h| token(h)) {
        for h in asked {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(h)) {
                out.push(h);
            }
        }
    }
    out.join(", ")
}

/// Undoes `Content-Encoding: gzip` (Segment's server libraries may compress), refusing a
/// body that inflates past the batch limit. A body the platform already inflated (no
/// gzip magic) is taken as it is. Every member of the stream is read (RFC 1952: a gzip
/// body is a series of members; a compressor that flushes as it streams writes several),
/// not only the first.
pub fn decode_body<'a>(body: &'a [u8], encoding: Option<&str>) -> Result<Cow<'a, [u8]>, Error> {
    let too_large = Error::BatchTooLarge {
        limit: MAX_BATCH_BYTES,
    };
    if body.len() > MAX_BATCH_BYTES {
        return Err(too_large);
    }
    let encoding = encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(Cow::Borrowed(body)),
        "gzip" | "x-gzip" if !body.starts_with(&[0x1f, 0x8b]) => Ok(Cow::Borrowed(body)),
        "gzip" | "x-gzip" => {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .take(MAX_BATCH_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| Error::InvalidGzip)?;
            if out.len() > MAX_BATCH_BYTES {
                return Err(too_large);
            }
            Ok(Cow::Owned(out))
        }
        _ => Err(Error::UnsupportedEncoding),
    }
}

/// The body with what other JSON writers put in it and serde_json refuses read as a
/// browser reads it, so the events holding it are kept (each rule is written once, in
/// `tracking_plan::json_text`):
/// - a lone surrogate escape (`\ud83d` alone: `JSON.stringify` writes it for a string
///   cut through an emoji) is U+FFFD, as the SDK and the browsers' `TextEncoder` read it
///   (`replace_lone_surrogates`);
/// - a bare `NaN`, `Infinity` or `-Infinity` (Python's `json.dumps` writes them for a
///   number that is not finite) is `null`, as `JSON.stringify` writes it
///   (`replace_non_finite`);
/// - bytes that are not UTF-8 (a server writing Latin-1 into a JSON body) are U+FFFD
///   each (`String::from_utf8_lossy`), as a browser's `TextDecoder` and Go's
///   `encoding/json` read them: one bad byte no longer refuses a whole batch's events
///   (it answered 400 `invalid_utf8`).
///
/// A body holding none of these (a validation and two substring searches tell) is not
/// copied or read again.
pub fn lenient(body: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    use tracking_plan::json_text::{replace_lone_surrogates, replace_non_finite};
    // Validated first (word-at-a-time over ASCII): `from_utf8_lossy`'s chunked reading
    // of every body was 4% of the pipeline's time (`perf`, `pipeline_bench`).
    let body = match std::str::from_utf8(&body) {
        Ok(_) => body,
        Err(_) => Cow::Owned(String::from_utf8_lossy(&body).into_owned().into_bytes()),
    };
    // By single bytes (`memchr`, which the batch split links already): `memmem`'s
    // searchers cost the worker 6,036 bytes of wasm more (1,944,594 against 1,938,558).
    let surrogate = |b: &[u8]| {
        memchr::memchr_iter(b'\\', b).any(|i| {
            matches!(
                b.get(i + 1..i + 4),
                Some([b'u', b'd' | b'D', b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'])
            )
        })
    };
    let non_finite = |b: &[u8]| {
        memchr::memchr2_iter(b'N', b'I', b)
            .any(|i| b[i..].starts_with(b"NaN") || b[i..].starts_with(b"Infinity"))
    };
    let body = apply(body, surrogate, replace_lone_surrogates);
    apply(body, non_finite, replace_non_finite)
}

/// `rule` applied to `body` when `suspect` says it may change it.
fn apply<'a>(
    body: Cow<'a, [u8]>,
    suspect: impl Fn(&[u8]) -> bool,
    rule: fn(&str) -> Option<String>,
) -> Cow<'a, [u8]> {
    if !suspect(&body) {
        return body;
    }
    match std::str::from_utf8(&body).ok().and_then(rule) {
        Some(text) => Cow::Owned(text.into_bytes()),
        None => body,
    }
}

/// Parses and checks the request envelope: JSON, write key, origin.
pub fn parse<'a>(
    req: &IngestRequest<'_>,
    body: &'a [u8],
    sources: &'a Sources,
) -> Result<Envelope<'a>, Error> {
    let text = body_text(body)?;
    if text.trim().is_empty() {
        return Err(Error::EmptyBody);
    }
    let raw: RawBatch<'a> = match req.endpoint {
        Endpoint::Batch | Endpoint::Snowplow | Endpoint::PostHog => {
            // Its events were split, not read: a body serde_json does not read is
            // answered as it says, whatever else is wrong with it.
            let raw = read_batch(text)?;
            return checked(req, raw, sources).map_err(|e| match strict(text) {
                Err(not_json) => not_json,
                Ok(_) => e,
            });
        }
        Endpoint::Single(_) => {
            // A single message is its own envelope: keep it whole as the only batch entry.
            let one: &'a RawValue = serde_json::from_str(text).map_err(|e| json_error(&e))?;
            let mut env = strict(text)?;
            env.batch = Some(vec![one.get()]);
            env.context = None; // already inside the message
            env
        }
    };
    checked(req, raw, sources)
}

/// Checks a read envelope: its events, write key and origin.
fn checked<'a>(
    req: &IngestRequest<'_>,
    mut raw: RawBatch<'a>,
    sources: &'a Sources,
) -> Result<Envelope<'a>, Error> {
    if raw.batch.is_none() {
        return Err(Error::MissingBatch);
    }
    let body_key = raw.write_key.take();
    let key = write_key(
        req.authorization,
        &[
            req.write_key_header,
            body_key.as_ref().and_then(Value::as_str),
            req.url_write_key,
        ],
    )?;
    let source = sources.get(&key).ok_or(Error::UnknownWriteKey)?;
    if !source.accepts_origin(req.edge.origin, req.edge.own_origin) {
        return Err(Error::OriginNotAllowed);
    }
    Ok(Envelope {
        write_key: key,
        source,
        batch: raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_path_maps_onto_the_collector_routes() {
        assert_eq!(under_base("/data/v1/batch", "/data"), "/v1/batch");
        assert_eq!(under_base("/data/v1/batch", "/data/"), "/v1/batch");
        assert_eq!(
            under_base("/a/b/admin/v1/events", "/a/b"),
            "/admin/v1/events"
        );
        assert_eq!(
            under_base("/v1/batch", "/data"),
            "/v1/batch",
            "the root still works"
        );
        assert_eq!(
            under_base("/database/v1/batch", "/data"),
            "/database/v1/batch",
            "a segment, not a prefix"
        );
        assert_eq!(under_base("/data", "/data"), "/data");
        for none in ["", "/", "data", "//x"] {
            assert_eq!(
                under_base("/data/v1/batch", none),
                "/data/v1/batch",
                "{none:?}"
            );
        }
        assert_eq!(
            Endpoint::from_path(under_base("/x/v1/t", "/x")),
            Some(Endpoint::Single(MessageType::Track))
        );
    }

    #[test]
    fn other_libraries_paths_are_exact() {
        for (path, want) in [
            ("/e/", Some(Endpoint::PostHog)),
            ("/batch/", Some(Endpoint::PostHog)),
            ("/e", None),
            ("/batch", None),
            ("/track", None),
            ("/api/s/orders", None),
            ("/api/s/s2s/page", Some(Endpoint::Single(MessageType::Page))),
            ("/beacon/v1/batch", Some(Endpoint::Batch)),
            ("/beacon/v1/other", None),
            (
                "/com.snowplowanalytics.snowplow/tp2",
                Some(Endpoint::Snowplow),
            ),
        ] {
            assert_eq!(Endpoint::from_path(path), want, "{path}");
        }
    }

    #[test]
    fn jitsu_names_its_key_in_a_header_before_its_masked_body_key() {
        assert_eq!(
            write_key(None, &[Some("sl_key"), Some("***"), None])
                .ok()
                .as_deref(),
            Some("sl_key")
        );
        assert_eq!(
            Endpoint::from_path("/api/s/track"),
            Some(Endpoint::Single(MessageType::Track))
        );
        assert_eq!(
            Endpoint::from_path("/api/s/s2s/identify"),
            Some(Endpoint::Single(MessageType::Identify))
        );
        assert_eq!(
            write_key(None, &[Some("sl_key:s3cret"), Some("***"), None])
                .ok()
                .as_deref(),
            Some("sl_key"),
            "a server key's id"
        );
        assert_eq!(
            write_key(None, &[Some(":s3cret"), None, Some("u")])
                .ok()
                .as_deref(),
            Some("u"),
            "no id is no key"
        );
        assert_eq!(Endpoint::from_path("/api/s/batch"), None);
        assert_eq!(Endpoint::from_path("/api/s/nothing"), None);
    }

    #[test]
    fn rudderstack_beacons_name_their_key_in_the_url() {
        assert_eq!(
            Endpoint::from_path("/beacon/v1/batch"),
            Some(Endpoint::Batch)
        );
        assert_eq!(
            Endpoint::from_path("/beacon/v1/batch/"),
            Some(Endpoint::Batch)
        );
        assert_eq!(
            Endpoint::from_path("/beacon/v1/track"),
            None,
            "beacons are batches"
        );
        assert_eq!(
            write_key(None, &[None, None, Some("u")]).ok().as_deref(),
            Some("u")
        );
        assert_eq!(
            write_key(None, &[None, Some("b"), Some("u")])
                .ok()
                .as_deref(),
            Some("b"),
            "the body first"
        );
        assert_eq!(
            write_key(None, &[None, Some(""), Some("u")])
                .ok()
                .as_deref(),
            Some("u")
        );
        assert_eq!(
            write_key(Some("Basic azo="), &[Some("h"), Some("b"), Some("u")])
                .ok()
                .as_deref(),
            Some("k")
        );
        assert!(matches!(
            write_key(None, &[None, None, Some("")]),
            Err(Error::MissingWriteKey)
        ));
    }

    #[test]
    fn a_preflight_may_ask_for_the_headers_client_libraries_send_and_nothing_malformed() {
        let base = "Content-Type, Content-Encoding, Authorization";
        assert_eq!(allowed_headers(None), base);
        assert_eq!(allowed_headers(Some("")), base);
        assert_eq!(
            allowed_headers(Some(
                "authorization,anonymousid, content-type,sentat,rsa-retry-attempt"
            )),
            format!("{base}, anonymousid, sentat, rsa-retry-attempt")
        );
        for hostile in [
            "x-ok, bad header",
            "x\r\nset-cookie: a=b",
            "x-ok,\u{e9}t\u{e9}",
            "x(y)",
        ] {
            assert_eq!(allowed_headers(Some(hostile)), base, "{hostile:?}");
        }
        let long = "x".repeat(65);
        assert_eq!(allowed_headers(Some(&long)), base);
        let many = (0..33)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(allowed_headers(Some(&many)), base);
        let enough = (0..32)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(allowed_headers(Some(&enough)).ends_with("x-31"));
    }
}
