//! What the readers of other libraries' wire formats (`snowplow`, `posthog`) share. Each
//! decides which of its fields says what; this writes what they say about the page, the
//! browser and the library where a Segment message keeps it (`context`), the same way
//! for both.

use serde_json::{json, Map, Value};

/// The page, browser and library an event describes, as its reader found them.
#[derive(Default)]
pub struct Client<'a> {
    pub url: Option<&'a str>,
    /// The page's path when the library sends one; else it is taken from `url`.
    pub path: Option<&'a str>,
    pub title: Option<&'a str>,
    pub referrer: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub timezone: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// Put in `context.ip`, where the collector truncates every event's IP.
    pub ip: Option<&'a str>,
    pub screen: Option<(Value, Value)>,
    pub library: &'a str,
    pub version: Option<&'a str>,
}

/// A Segment `context` of what `c` says. The path and query taken from the URL come from
/// it scrubbed whole (`campaign::path_and_search`), so an address is not cut apart.
pub fn context(c: &Client<'_>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut page = Map::new();
    put(&mut page, "url", c.url);
    put(&mut page, "title", c.title);
    put(&mut page, "referrer", c.referrer);
    put(&mut page, "path", c.path);
    if let Some(url) = c.url {
        let (path, search) = tracking_plan::campaign::path_and_search(url);
        page.entry("path").or_insert(path.into());
        if !search.is_empty() {
            page.insert("search".into(), search.into());
        }
    }
    if !page.is_empty() {
        out.insert("page".into(), Value::Object(page));
    }
    put(&mut out, "locale", c.locale);
    put(&mut out, "timezone", c.timezone);
    put(&mut out, "userAgent", c.user_agent);
    put(&mut out, "ip", c.ip);
    if let Some((w, h)) = &c.screen {
        out.insert("screen".into(), json!({"width": w, "height": h}));
    }
    let mut library = Map::new();
    library.insert("name".into(), c.library.into());
    put(&mut library, "version", c.version);
    out.insert("library".into(), Value::Object(library));
    out
}

/// Sets `key` to `v` when there is one.
pub fn put(m: &mut Map<String, Value>, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        m.insert(key.into(), v.into());
    }
}
