//! The Cloudflare Workers adapter: routes requests, reads configuration, headers and the
//! body, hands them to the pipeline, and sets the first-party cookie. Static files (the
//! example site and the SDK) are served by Workers Static Assets from the same origin.
//! Decides nothing about events itself: requests are routed by a table, and every
//! decision is the core's.

mod activation_admin;
mod admin;
mod alerting;
mod delivery;
mod gzip;
mod maintenance;
mod objects;
mod personal;
mod rescoring;
mod sharded;
mod storage;

use crate::enrich::EdgeInfo;
use crate::error::Error as RequestError;
use crate::pipeline::{
    ingest, valid_cookie_id, Endpoint, IngestRequest, RateLimiter, Services, MAX_BATCH_BYTES,
};
use crate::sources::Sources;
use objects::{DoDedup, DoIdentity};
use serde_json::{json, Value};
use std::rc::Rc;
use storage::CloudStore;
use worker::*;

/// The collector's first-party anonymous-id cookie.
const COOKIE: &str = "sl_aid";
/// 400 days, the longest lifetime browsers honour.
const COOKIE_MAX_AGE: u32 = 400 * 24 * 3600;

fn json_response(status: u16, body: &Value) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

fn error_response(e: &RequestError) -> Result<Response> {
    let resp = json_response(e.status(), &e.to_json())?;
    if let Some(s) = e.retry_after() {
        resp.headers().set("Retry-After", &s.to_string())?;
    }
    Ok(resp)
}

fn config_error(message: String) -> RequestError {
    RequestError::NotConfigured(message)
}

thread_local! {
    /// The parsed `SOURCES` with their compiled plans, kept per isolate and rebuilt only
    /// when the text changes: every request needs them and they do not change between
    /// requests.
    static SOURCES_CACHE: std::cell::RefCell<Option<(String, Rc<Sources>)>> =
        const { std::cell::RefCell::new(None) };
    /// The sources with the segments declared through the admin API, read from D1 at
    /// most every [`DECLARED_TTL_MS`] per isolate: `(read at, base, merged)`.
    static DECLARED: std::cell::RefCell<Option<Declared>> =
        const { std::cell::RefCell::new(None) };
    /// Rate-limit buckets of this isolate.
    static LIMITER: Rc<RateLimiter> = Rc::new(RateLimiter::default());
}

/// When the declared segments were read, the sources they were applied to, the result.
type Declared = (f64, Rc<Sources>, Rc<Sources>);

/// How long an isolate keeps the declared segments before reading them again (a
/// declaration reaches every isolate within this time; the one that took it at once).
const DECLARED_TTL_MS: f64 = 30_000.0;

/// The configured sources, with the segments declared through the admin API.
async fn sources(env: &Env) -> std::result::Result<Rc<Sources>, RequestError> {
    let base = configured(env).await?;
    let now = Date::now().as_millis() as f64;
    let fresh = DECLARED.with_borrow(|d| {
        d.as_ref()
            .filter(|(at, b, _)| now - at < DECLARED_TTL_MS && Rc::ptr_eq(b, &base))
            .map(|(_, _, m)| m.clone())
    });
    if let Some(merged) = fresh {
        return Ok(merged);
    }
    let merged = match declared_segments(env).await {
        Ok(rows) if rows.is_empty() => base.clone(),
        Ok(rows) => {
            let (merged, problems) = base.with_declared_segments(&rows);
            for p in problems {
                console_warn!("sightline: declared segments not applied: {p}");
            }
            Rc::new(merged)
        }
        Err(e) => {
            console_warn!("sightline: declared segments not read: {e}");
            return Ok(base);
        }
    };
    DECLARED.with_borrow_mut(|d| *d = Some((now, base, merged.clone())));
    Ok(merged)
}

/// Forgets this isolate's declared segments, after a declaration changed them.
pub(crate) fn forget_declared() {
    DECLARED.with_borrow_mut(|d| *d = None);
}

async fn declared_segments(env: &Env) -> Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Row {
        write_key: String,
        segments: String,
    }
    let rows = env
        .d1("DB")?
        .prepare("SELECT write_key, segments FROM segment_definitions ORDER BY write_key")
        .all()
        .await?
        .results::<Row>()?;
    Ok(rows
        .into_iter()
        .map(|r| (r.write_key, r.segments))
        .collect())
}

/// The sources `SOURCES` configures, with their plans and segment files loaded.
async fn configured(env: &Env) -> std::result::Result<Rc<Sources>, RequestError> {
    let raw = env
        .var("SOURCES")
        .map(|v| v.to_string())
        .or_else(|_| env.secret("SOURCES").map(|v| v.to_string()))
        .map_err(|_| config_error("the SOURCES variable is not set".into()))?;
    if let Some(cached) = SOURCES_CACHE.with_borrow(|c| {
        c.as_ref()
            .filter(|(text, _)| *text == raw)
            .map(|(_, s)| s.clone())
    }) {
        return Ok(cached);
    }
    let mut parsed = Sources::from_json(&raw).map_err(config_error)?;
    // Plans named by path are files among the static assets (the SDK's debug mode reads
    // the same file).
    let mut texts = std::collections::HashMap::new();
    for path in parsed.plan_paths() {
        let assets = env
            .assets("ASSETS")
            .map_err(|e| config_error(format!("no ASSETS binding for plan {path}: {e}")))?;
        let url = format!("https://assets.invalid{path}");
        if let Ok(mut resp) = assets.fetch(url, None).await {
            if resp.status_code() == 200 {
                if let Ok(text) = resp.text().await {
                    texts.insert(path, text);
                }
            }
        }
    }
    parsed
        .resolve_plans(|p| texts.get(p).cloned())
        .map_err(config_error)?;
    parsed.check_complete().map_err(config_error)?;
    let parsed = Rc::new(parsed);
    SOURCES_CACHE.with_borrow_mut(|c| *c = Some((raw, parsed.clone())));
    Ok(parsed)
}

/// CORS: browsers on a configured origin may call the API; same-origin needs nothing.
/// The headers they may send are `envelope::allowed_headers`'s to decide.
fn cors_headers(req: &Request, sources: &Sources) -> Headers {
    let headers = Headers::new();
    let origin = req.headers().get("Origin").ok().flatten();
    if let Some(o) = origin.filter(|o| sources.origin_allowed(o)) {
        let asked = req
            .headers()
            .get("Access-Control-Request-Headers")
            .ok()
            .flatten();
        let _ = headers.set("Access-Control-Allow-Origin", &o);
        let _ = headers.set("Access-Control-Allow-Credentials", "true");
        let _ = headers.set("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        let _ = headers.set(
            "Access-Control-Allow-Headers",
            &crate::pipeline::envelope::allowed_headers(asked.as_deref()),
        );
        let _ = headers.set("Access-Control-Max-Age", "86400");
        let _ = headers.set("Vary", "Origin");
    }
    headers
}

fn cookie_value(req: &Request, name: &str) -> Option<String> {
    let header = req.headers().get("Cookie").ok().flatten()?;
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then(|| v.trim().to_string())
    })
}

fn clear_cookie(headers: &Headers) -> Result<()> {
    headers.append(
        "Set-Cookie",
        &format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    )
}

/// Reads the body, refusing it as soon as it passes the batch limit (also when no
/// Content-Length was sent: it is read in chunks, never buffered whole first).
async fn read_capped(req: &mut Request) -> Result<std::result::Result<Vec<u8>, RequestError>> {
    use futures_util::StreamExt as _;
    let too_large = RequestError::BatchTooLarge {
        limit: MAX_BATCH_BYTES,
    };
    let declared = req
        .headers()
        .get("Content-Length")?
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES) {
        return Ok(Err(too_large));
    }
    let Ok(mut stream) = req.stream() else {
        return Ok(Ok(Vec::new())); // no body
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() > MAX_BATCH_BYTES {
            return Ok(Err(too_large));
        }
    }
    Ok(Ok(body))
}

fn set_cookie(headers: &Headers, id: &str, secure: bool) -> Result<()> {
    let secure = if secure { "; Secure" } else { "" };
    headers.append(
        "Set-Cookie",
        &format!("{COOKIE}={id}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax{secure}"),
    )
}

fn with_headers(resp: Response, extra: &Headers) -> Result<Response> {
    let headers = resp.headers().clone();
    for (k, v) in extra.entries() {
        headers.set(&k, &v)?;
    }
    Ok(resp.with_headers(headers))
}

/// What an ingestion request is: events in its body, a reset (`POST /v1/reset`), or
/// Snowplow's `GET /i` (one event in its query, answered with a GIF). The route
/// decides, under any base path.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    Events,
    Reset,
    Pixel,
}

/// An ingestion request, as `call` says.
async fn handle_ingest(
    mut req: Request,
    env: &Env,
    endpoint: Endpoint,
    call: Call,
) -> Result<Response> {
    let sources = match sources(env).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let origin = req.headers().get("Origin")?;
    let cors = cors_headers(&req, &sources);
    let method = req.method();
    if method == Method::Options {
        return Ok(Response::empty()?.with_status(204).with_headers(cors));
    }
    let url = req.url()?;
    let body = match (call, method) {
        (Call::Pixel, Method::Get) => {
            crate::snowplow::pixel_payload(url.query().unwrap_or_default())
        }
        (_, Method::Post) => match read_capped(&mut req).await? {
            Ok(b) => b,
            Err(e) => return with_headers(error_response(&e)?, &cors),
        },
        _ => return with_headers(error_response(&RequestError::MethodNotAllowed)?, &cors),
    };
    let own_origin = url.origin().ascii_serialization();
    let url_write_key = query_value(&url, "writeKey");
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let (authorization, write_key_header, ip, user_agent, encoding) = (
        header("Authorization"),
        header("X-Write-Key"),
        header("CF-Connecting-IP"),
        header("User-Agent"),
        header("Content-Encoding"),
    );
    let gpc = header("Sec-GPC").is_some_and(|v| v.trim() == "1");
    let country = req
        .cf()
        .and_then(|cf| cf.country())
        .or_else(|| header("CF-IPCountry"))
        .filter(|c| c != "XX" && c != "T1");
    let cookie_id = cookie_value(&req, COOKIE);
    let fbp = cookie_value(&req, "_fbp");
    let request_id = objects::random_uuid();
    let ireq = IngestRequest {
        request_id: &request_id,
        endpoint,
        body: &body,
        authorization: authorization.as_deref(),
        write_key_header: write_key_header.as_deref(),
        url_write_key: url_write_key.as_deref(),
        now_ms: Date::now().as_millis() as i64,
        edge: EdgeInfo {
            origin: origin.as_deref(),
            own_origin: &own_origin,
            ip: ip.as_deref(),
            country: country.as_deref(),
            user_agent: user_agent.as_deref(),
            gpc,
            cookie_id: cookie_id.as_deref(),
            content_encoding: encoding.as_deref(),
            fbp: fbp.as_deref(),
        },
    };
    if call == Call::Reset {
        let identity = DoIdentity::metered(env, Meter::start())?;
        let resp = match crate::pipeline::reset(&identity, &sources, &ireq).await {
            Ok(()) => json_response(200, &json!({"ok": true}))?,
            Err(e) => error_response(&e)?,
        };
        clear_cookie(resp.headers())?;
        return with_headers(resp, &cors);
    }
    let calls = Meter::start();
    let resp = match run_pipeline(env, &sources, &ireq, &calls).await? {
        Ok(report) => {
            let resp = match call {
                Call::Pixel => pixel()?,
                Call::Events | Call::Reset => Response::from_json(&report)?,
            };
            if report.clear_cookie {
                clear_cookie(resp.headers())?;
            } else if let Some(id) = &report.cookie_id {
                set_cookie(resp.headers(), id, url.scheme() == "https")?;
            }
            resp
        }
        Err(e) => error_response(&e)?,
    };
    resp.headers()
        .set("X-Subrequests", &calls.calls().to_string())?;
    resp.headers()
        .set("X-Object-Subrequests", &calls.nested_calls().to_string())?;
    resp.headers()
        .set("Server-Timing", &calls.server_timing())?;
    with_headers(resp, &cors)
}

/// Snowplow's pixel: a transparent GIF, never cached (each load is an event).
fn pixel() -> Result<Response> {
    let resp = Response::from_bytes(crate::snowplow::PIXEL_GIF.to_vec())?;
    resp.headers().set("Content-Type", "image/gif")?;
    resp.headers().set("Cache-Control", "no-store")?;
    Ok(resp)
}

/// What one request spent: its subrequests (Durable Object calls, D1 batches, Queue
/// sends), sent back in `X-Subrequests` so load tests see the fan-out (Workers allow 50
/// per request on the free plan, 1,000 on paid ones; an object's invocation has its own
/// 50, and the most any called object made is `X-Object-Subrequests`), and its time,
/// sent back in `Server-Timing`: the wall time, the time some subrequest was in flight
/// (overlapping ones counted once), per kind of subrequest, and `cpu` = wall minus in
/// flight (an upper bound of the CPU time: it includes waiting for the isolate's other
/// requests).
#[derive(Default)]
pub(crate) struct Meter {
    calls: std::cell::Cell<u32>,
    started: std::cell::Cell<f64>,
    /// In flight across all kinds, then per [`Io`] kind.
    spans: [Span; 5],
    /// Time the called objects' handlers ran, per [`Io`] kind (summed).
    objects: [std::cell::Cell<f64>; 5],
    /// The most subrequests one called object made in its own invocation (each
    /// invocation has its own allowance of 50 on the free plan).
    nested: std::cell::Cell<u32>,
    /// Of the identity objects' handler time, what driving sharded calls took (the
    /// rules' rounds and the calls' JSON), as against the shards' own operations.
    driver: std::cell::Cell<f64>,
}

/// The kinds of subrequest the meter tells apart.
#[derive(Clone, Copy)]
pub(crate) enum Io {
    Dedup = 1,
    Identity = 2,
    D1 = 3,
    Queue = 4,
}

const IO_NAMES: [&str; 5] = ["io", "dedup", "identity", "d1", "queue"];

/// The union of the intervals some subrequests of one kind were in flight.
#[derive(Default)]
struct Span {
    open: std::cell::Cell<u32>,
    since: std::cell::Cell<f64>,
    total: std::cell::Cell<f64>,
}

impl Span {
    fn begin(&self, now: f64) {
        if self.open.get() == 0 {
            self.since.set(now);
        }
        self.open.set(self.open.get() + 1);
    }
    fn end(&self, now: f64) {
        self.open.set(self.open.get().saturating_sub(1));
        if self.open.get() == 0 {
            self.total.set(self.total.get() + (now - self.since.get()));
        }
    }
}

pub(crate) type Calls = Rc<Meter>;

impl Meter {
    pub fn start() -> Calls {
        let m = Meter::default();
        m.started.set(js_sys::Date::now());
        Rc::new(m)
    }

    /// Awaits one subrequest, counted and timed.
    pub async fn io<T>(&self, kind: Io, f: impl std::future::Future<Output = T>) -> T {
        self.calls.set(self.calls.get() + 1);
        let now = js_sys::Date::now();
        self.spans[0].begin(now);
        self.spans[kind as usize].begin(now);
        let out = f.await;
        let now = js_sys::Date::now();
        self.spans[0].end(now);
        self.spans[kind as usize].end(now);
        out
    }

    /// Awaits a pause (a backoff): time in flight, as a subrequest's, but no call.
    pub async fn wait<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.spans[0].begin(js_sys::Date::now());
        let out = f.await;
        self.spans[0].end(js_sys::Date::now());
        out
    }

    /// Adds the handler time a Durable Object reported, and the subrequests it made.
    pub fn object(&self, kind: Io, ms: f64, subrequests: u32) {
        let c = &self.objects[kind as usize];
        c.set(c.get() + ms);
        self.nested.set(self.nested.get().max(subrequests));
    }

    /// Adds the time an object spent driving a sharded call (part of its handler time).
    pub fn driven(&self, ms: f64) {
        self.driver.set(self.driver.get() + ms);
    }

    pub fn calls(&self) -> u32 {
        self.calls.get()
    }

    /// The most subrequests any one invocation below this one made (0: none called).
    pub fn nested_calls(&self) -> u32 {
        self.nested.get()
    }

    /// Time some subrequest or pause was in flight (ms).
    pub fn in_flight(&self) -> f64 {
        self.spans[0].total.get()
    }

    /// The called objects' handler time, all kinds (ms).
    pub fn objects_ms(&self) -> f64 {
        self.objects.iter().map(std::cell::Cell::get).sum()
    }

    /// The `Server-Timing` value: `total`, `cpu`, then the in-flight times (ms).
    pub fn server_timing(&self) -> String {
        let total = js_sys::Date::now() - self.started.get();
        let io = self.spans[0].total.get();
        let mut out = format!(
            "total;dur={}, cpu;dur={}",
            total as u64,
            (total - io).max(0.0) as u64
        );
        for (name, span) in IO_NAMES.iter().zip(&self.spans) {
            out.push_str(&format!(", {name};dur={}", span.total.get() as u64));
        }
        for kind in [Io::Dedup, Io::Identity] {
            let ms = self.objects[kind as usize].get();
            out.push_str(&format!(
                ", {}-object;dur={}",
                IO_NAMES[kind as usize], ms as u64
            ));
        }
        out.push_str(&format!(
            ", identity-driver;dur={}",
            self.driver.get() as u64
        ));
        out
    }
}

/// `POST /v1/reset`: the SDK's `reset()` and consent revocation call it.
const RESET_PATH: &str = "/v1/reset";

/// Runs the pipeline with the Cloudflare services: D1 (or the queue to R2), the dedup
/// shards and the identity graphs.
pub(crate) async fn run_pipeline(
    env: &Env,
    sources: &Sources,
    ireq: &IngestRequest<'_>,
    calls: &Calls,
) -> Result<std::result::Result<crate::pipeline::Report, RequestError>> {
    let mut store = CloudStore::new(env)?;
    store.calls = Rc::clone(calls);
    let dedup = DoDedup {
        calls: Rc::clone(calls),
        ns: env.durable_object("DEDUP")?,
        shards: env
            .var("DEDUP_SHARDS")
            .ok()
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(crate::dedup::DEFAULT_SHARDS),
    };
    let identity = DoIdentity::metered(env, Rc::clone(calls))?;
    let limiter = LIMITER.with(Rc::clone);
    let svc = Services {
        store: &store,
        dedup: &dedup,
        identity: &identity,
        limiter: &limiter,
    };
    Ok(ingest(&svc, sources, ireq).await)
}

/// `GET /v1/id`: the anonymous id in the collector's cookie, for the SDK to adopt when
/// its own storage was cleared (Safari caps script-written storage at 7 days; this
/// HttpOnly cookie, set by the site's own server, is not capped).
fn handle_id(req: &Request) -> Result<Response> {
    let id = cookie_value(req, COOKIE).filter(|c| valid_cookie_id(c));
    let resp = json_response(200, &json!({"ok": true, "anonymousId": id}))?;
    resp.headers().set("Cache-Control", "no-store")?;
    Ok(resp)
}

/// `GET /v1/projects/{writeKey}/settings`: analytics.js's settings, for a site that
/// points its `cdnURL` here (`crate::settings`). `base` is the collector's base path.
async fn handle_settings(req: &Request, env: &Env, path: &str, base: &str) -> Result<Response> {
    let sources = match sources(env).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let cors = cors_headers(req, &sources);
    let key = crate::settings::write_key_of(path).filter(|k| sources.get(k).is_some());
    let Some(key) = key else {
        return with_headers(error_response(&RequestError::NotFound)?, &cors);
    };
    let url = req.url()?;
    let api_host = crate::settings::api_host(url.host_str().unwrap_or_default(), url.port(), base);
    let body = crate::settings::for_analytics_js(key, &api_host, url.scheme());
    with_headers(json_response(200, &body)?, &cors)
}

/// posthog-js's remote config (`GET /array/{token}/config.js` and `/config`, for a
/// configured token) and feature flags (`POST /flags/`, `/decide/`), as
/// `crate::settings` words them; any other request on these paths is the site's own.
async fn handle_posthog(req: Request, env: &Env, path: &str) -> Result<Response> {
    let sources = match sources(env).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let cors = cors_headers(&req, &sources);
    let method = req.method();
    if method == Method::Options {
        return Ok(Response::empty()?.with_status(204).with_headers(cors));
    }
    let config = crate::settings::posthog_config_token(path)
        .filter(|(token, _)| method == Method::Get && sources.get(token).is_some());
    let resp = match config {
        Some((token, true)) => {
            let resp = Response::ok(crate::settings::for_posthog_script(token))?;
            resp.headers()
                .set("Content-Type", "application/javascript")?;
            resp
        }
        Some((token, false)) => json_response(200, &crate::settings::for_posthog(token))?,
        None if method == Method::Post && crate::settings::is_posthog_flags(path) => {
            json_response(200, &crate::settings::posthog_flags())?
        }
        None => return env.assets("ASSETS")?.fetch_request(req).await,
    };
    with_headers(resp, &cors)
}

/// `GET /sourceConfig`: RudderStack's source config, for a site whose browser SDK points
/// its `configUrl` here (`crate::settings`). Its preflight (the SDK sends
/// `Authorization`) is answered too.
async fn handle_source_config(req: &Request, env: &Env) -> Result<Response> {
    let sources = match sources(env).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let cors = cors_headers(req, &sources);
    if req.method() == Method::Options {
        return Ok(Response::empty()?.with_status(204).with_headers(cors));
    }
    let authorization = req.headers().get("Authorization")?;
    let url = req.url()?;
    let asked = query_value(&url, "writeKey");
    let key = crate::settings::source_config_key(authorization.as_deref(), asked.as_deref())
        .filter(|k| sources.get(k).is_some());
    let Some(key) = key else {
        return with_headers(error_response(&RequestError::NotFound)?, &cors);
    };
    with_headers(
        json_response(200, &crate::settings::for_rudderstack(&key))?,
        &cors,
    )
}

/// The first value of a query parameter.
fn query_value(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// Where each path goes.
#[derive(Clone, Copy)]
enum Route {
    Id,
    Settings,
    SourceConfig,
    Reset,
    Segments,
    Ingest,
    Admin,
    PostHog,
    Assets,
}

/// The routing table: exact paths first, then prefixes.
const ROUTES: &[(&str, bool, Route)] = &[
    ("/v1/id", true, Route::Id),
    ("/v1/projects/", false, Route::Settings),
    ("/sourceConfig", true, Route::SourceConfig),
    ("/sourceConfig/", true, Route::SourceConfig),
    (RESET_PATH, true, Route::Reset),
    ("/v1/segments", true, Route::Segments),
    ("/v1/", false, Route::Ingest),
    ("/admin", true, Route::Admin),
    ("/admin/", false, Route::Admin),
];

fn route(path: &str) -> Route {
    // Other libraries' ingestion paths (RudderStack's beacon, Jitsu's, Snowplow's,
    // PostHog's): only the exact paths they send to, so a site's own pages keep theirs.
    if !path.starts_with("/v1/") && Endpoint::from_path(path).is_some() {
        return Route::Ingest;
    }
    if crate::settings::posthog_config_token(path).is_some()
        || crate::settings::is_posthog_flags(path)
    {
        return Route::PostHog;
    }
    ROUTES
        .iter()
        .find(|(p, exact, _)| {
            if *exact {
                path == *p
            } else {
                path.starts_with(p)
            }
        })
        .map_or(Route::Assets, |(_, _, r)| *r)
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let full = req.path();
    let base = env
        .var("BASE_PATH")
        .map(|v| v.to_string())
        .unwrap_or_default();
    let path = crate::pipeline::envelope::under_base(&full, &base).to_string();
    let result = match route(&path) {
        Route::Id => handle_id(&req),
        // The base this request came under (none at the root).
        Route::Settings => {
            let base = full.strip_suffix(path.as_str()).unwrap_or_default();
            handle_settings(&req, &env, &path, base).await
        }
        Route::SourceConfig => handle_source_config(&req, &env).await,
        Route::Reset => handle_ingest(req, &env, Endpoint::Batch, Call::Reset).await,
        Route::Segments => match sources(&env).await {
            Ok(s) => personal::handle(&req, &env, &s).await,
            Err(e) => error_response(&e),
        },
        Route::Ingest => match Endpoint::from_path(&path) {
            Some(endpoint) => {
                let call = match path.trim_end_matches('/') {
                    crate::snowplow::PIXEL_PATH => Call::Pixel,
                    _ => Call::Events,
                };
                handle_ingest(req, &env, endpoint, call).await
            }
            None => error_response(&RequestError::NotFound),
        },
        Route::Admin => match sources(&env).await {
            Ok(s) => admin::handle(req, &path, &env, &s).await,
            Err(e) => error_response(&e),
        },
        Route::PostHog => handle_posthog(req, &env, &path).await,
        Route::Assets => env.assets("ASSETS")?.fetch_request(req).await,
    };
    // Nothing escapes as an opaque 500 from the runtime: the client gets a JSON cause.
    result.or_else(|e| {
        json_response(
            500,
            &json!({"ok": false, "error": {"code": "internal", "message": e.to_string()}}),
        )
    })
}

/// The hourly maintenance: the hot window's retention and the database's size.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let outcome = match sources(&env).await {
        Ok(s) => maintenance::run(&env, &s, Date::now().as_millis() as i64)
            .await
            .map(|_| ()),
        Err(e) => Err(Error::RustError(e.to_string())),
    };
    if let Err(e) = outcome {
        console_error!("sightline maintenance: {e}");
    }
}

/// The queues' consumers, told apart by the queue's name.
#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> Result<()> {
    match batch.queue().as_str() {
        delivery::QUEUE => {
            let sources = sources(&env)
                .await
                .map_err(|e| Error::RustError(e.to_string()))?;
            delivery::consume(batch, &env, &sources).await
        }
        delivery::DEAD_LETTERS => delivery::bury(batch, &env).await,
        _ => storage::archive(batch, &env).await,
    }
}
