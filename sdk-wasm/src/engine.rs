//! The SDK's decisions, as plain functions over plain data (no browser; tested natively
//! and in Chromium): what an event carries (ids, session, context, campaign, the consent
//! snapshot), whether it may be kept, stored or sent under the visitor's consent, which
//! events form the next batch, what a response means (done, retry after a backoff, or
//! refused), what is shed at the queue's bound, which tab sends which events, and which
//! link clicks are events of their own (`data-track-links`: [`link_kind`]).
//!
//! The rules the collector applies too come from `tracking-plan`: the consent model and
//! its Consent Mode and TCF mappings, the wire limits, raw-PII redaction, soft-login
//! normalization and hashing, campaign fields. The browser adapter (`browser.rs`) applies
//! the storage operations this engine emits ([`Engine::take_ops`]), sends the batches it
//! builds under a cross-tab Web Lock, and reports each response back.

use alloc::borrow::{Cow, ToOwned};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use tracking_plan::campaign;
use tracking_plan::consent::{self, Choice, Decision, Policy};
use tracking_plan::credentials;
use tracking_plan::identifiers::{self as idf, EmailVariant, PhoneVariant};
use tracking_plan::json_text::{self, push_str};
use tracking_plan::limits;
use tracking_plan::pii::{self, FieldKind};
use tracking_plan::time::format_rfc3339;

pub const LIBRARY: &str = "sightline.js";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Events kept at most (queued plus waiting for consent). At the bound the oldest event
/// is shed and counted: recent events describe the visit that is still going on.
pub const MAX_QUEUE: usize = 1000;
/// The consent records kept while they wait for the visitor's answer on an opt-in site
/// (the latest; each is a change of state, so a page that keeps changing it is bounded).
const MAX_HELD_RECORDS: usize = 8;
/// The collector's limits (UTF-8 bytes).
pub const MAX_EVENT_BYTES: usize = limits::MAX_MESSAGE_BYTES;
pub const MAX_BATCH_BYTES: usize = limits::MAX_BATCH_BYTES;
pub const MAX_BATCH_EVENTS: usize = 100;
/// Requests that outlive the page (fetch keepalive) share a 64 KB budget.
pub const UNLOAD_BYTES: usize = 60_000;
/// A burst of calls is gathered this long before it is sent.
pub const FLUSH_DELAY_MS: u32 = 200;
pub const SESSION_MS: u64 = 30 * 60 * 1000;
const MIN_BACKOFF: f64 = 500.0;
const MAX_BACKOFF: f64 = 60_000.0;
/// Storage keys (localStorage). Event chunks: `sl_e:` + time + sequence + tab id.
pub const EVENT_PREFIX: &str = "sl_e:";
pub const K_ANON: &str = "sl_aid";
pub const K_USER: &str = "sl_uid";
pub const K_SESSION: &str = "sl_sess";
pub const K_CONSENT: &str = "sl_consent";
pub const K_FIRST: &str = "sl_ft";
pub const K_LAST: &str = "sl_lt";
/// Length of a tab id (the suffix of its event keys).
const TAB_LEN: usize = 6;
/// Consent category bits an event needs to be kept and sent.
const ANALYTICS: u8 = 1;
const MARKETING: u8 = 2;

/// Random bytes (the browser's CSPRNG; a seeded generator in tests).
pub trait Random {
    fn fill(&mut self, out: &mut [u8]);
}

/// What the site configured, and what the browser says.
#[derive(Debug, Clone)]
pub struct Options {
    pub write_key: String,
    pub policy: Policy,
    /// localStorage works here.
    pub storage: bool,
    /// The browser sends Global Privacy Control: marketing is denied whatever the
    /// visitor or a CMP grants.
    pub gpc: bool,
    /// The default country of national phone numbers.
    pub country: String,
    /// The link clicks recorded without code (`data-track-links`).
    pub links: Links,
}

/// Which link clicks a site has recorded without code (`data-track-links="outbound
/// downloads"`), as GA4's enhanced measurement does: a link to another site, a link to a
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Links {
    pub outbound: bool,
    pub downloads: bool,
}

impl Links {
    /// `data-track-links` (or `init({trackLinks})`): `outbound`, `downloads` or both
    /// (in any case, any separator), or `true` for both; anything else for neither.
    pub fn parse(s: &str) -> Links {
        let s = s.to_ascii_lowercase();
        let has = |w: &[u8]| s.as_bytes().windows(w.len()).any(|x| x == w);
        let all = s.trim() == "true";
        Links {
            outbound: all || has(b"outbound"),
            downloads: all || has(b"download"),
        }
    }
}

/// What a link is to [`Links`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Outbound,
    Download,
}

/// The extensions of files sites link to for download (GA4's list).
const DOWNLOADS: [&str; 29] = [
    "pdf", "xls", "xlsx", "doc", "docx", "txt", "rtf", "csv", "exe", "key", "pps", "ppt", "pptx",
    "7z", "pkg", "rar", "gz", "zip", "avi", "mov", "mp4", "mpe", "mpeg", "wmv", "mid", "midi",
    "mp3", "wav", "wma",
];

/// The host of an http(s) address (lowercase, without its user or a leading `www.`), and
/// its path. Byte loops, not `str` patterns: those brought about 2 KB gzip of core's
/// searchers into the wasm (measured).
fn host_and_path(url: &str) -> Option<(String, &str)> {
    let b = url.as_bytes();
    let scheme = b.iter().position(|c| *c == b':')?;
    if !(url[..scheme].eq_ignore_ascii_case("https") || url[..scheme].eq_ignore_ascii_case("http"))
        || !url[scheme..].starts_with("://")
    {
        return None;
    }
    let from = scheme + 3;
    let end = |at: usize, stops: &[u8]| {
        b[at..]
            .iter()
            .position(|c| stops.contains(c))
            .map_or(b.len(), |i| at + i)
    };
    let host_end = end(from, b"/?#");
    let user = b[from..host_end].iter().rposition(|c| *c == b'@');
    let host = url[user.map_or(from, |i| from + i + 1)..host_end].to_ascii_lowercase();
    let host = match host.strip_prefix("www.") {
        Some(h) => h.to_owned(),
        None => host,
    };
    Some((host, &url[host_end..end(host_end, b"?#")]))
}

/// What a link to `href` clicked on the page at `page` is: a file to download (its
/// extension is one of [`DOWNLOADS`]), a link to another site (another host, `www.`
/// aside), or neither (`None`: this site, or not an http(s) address).
pub fn link_kind(page: &str, href: &str) -> Option<LinkKind> {
    let (host, path) = host_and_path(href)?;
    let dot = path.bytes().rposition(|c| c == b'.' || c == b'/');
    let ext = dot
        .filter(|i| path.as_bytes()[*i] == b'.')
        .map(|i| path[i + 1..].to_ascii_lowercase());
    if ext.is_some_and(|e| DOWNLOADS.contains(&e.as_str())) {
        return Some(LinkKind::Download);
    }
    let own = host_and_path(page).map(|(h, _)| h);
    (own.as_deref() != Some(host.as_str())).then_some(LinkKind::Outbound)
}

/// A storage operation for the adapter to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Set(String, String),
    Remove(String),
}

/// The Segment message types the API records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Track,
    Page,
    Screen,
    Identify,
    Alias,
    Group,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Identify => "identify",
            Kind::Alias => "alias",
            Kind::Group => "group",
        }
    }
    /// The field the call's name argument goes in.
    fn name_field(self) -> &'static str {
        match self {
            Kind::Track => "event",
            Kind::Group => "groupId",
            Kind::Alias => "previousId",
            _ => "name",
        }
    }
    fn body_field(self) -> &'static str {
        match self {
            Kind::Identify | Kind::Group => "traits",
            _ => "properties",
        }
    }
}

/// Counters for the page (`sightline.stats()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub queued: usize,
    pub waiting: usize,
    pub sent: usize,
    pub shed: usize,
    pub rejected: usize,
    pub purged: usize,
    pub not_persisted: usize,
}

/// The consent as applied (`sightline.consent.get()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentState {
    pub analytics: bool,
    pub marketing: bool,
    pub personalization: bool,
    pub decided: bool,
}

/// What a soft login gives: the digests sent as identify traits, or why none could be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftLogin {
    pub email_sha256: Option<String>,
    /// Google's digest (gmail dots removed), only where it differs from the standard one.
    pub email_sha256_google: Option<String>,
    pub phone_sha256: Option<String>,
    pub phone_sha256_meta: Option<String>,
    pub error: Option<String>,
}

/// What to do after a response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Done: go on with the next batch now.
    Now,
    /// Send the same events again after this many ms (same messageIds, so the collector
    /// stores each once).
    Retry(f64),
    /// Refused (a 4xx other than 429: retrying cannot help); the events were dropped and
    /// counted.
    Refused,
}

/// What analytics.js's `options` argument (`track(event, properties, options)`) adds to
/// the next call: its `context` and other keys (JSON object text, merged into the
/// event's context over the SDK's own fields, under the consent snapshot), its
/// `integrations` (JSON object text) and its `timestamp` (ms since the epoch).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallOptions {
    pub context: Option<String>,
    pub integrations: Option<String>,
    pub timestamp: Option<u64>,
}

/// The page's facts, as the adapter read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub path: String,
    pub referrer: String,
    pub search: String,
    pub title: String,
    pub url: String,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub user_agent: String,
    /// Width, height and device pixel ratio (as the browser formats the number).
    pub screen: Option<(u32, u32, String)>,
}

/// A Consent Mode command found in the page's `dataLayer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcmCommand<'a> {
    /// `update` (the visitor's choice) rather than `default`.
    pub update: bool,
    pub analytics_storage: Option<&'a str>,
    pub ad_storage: Option<&'a str>,
    pub ad_user_data: Option<&'a str>,
    pub ad_personalization: Option<&'a str>,
}

/// The choice the page's Consent Mode commands make, in order. `default` is the state
/// before the visitor chooses, not a choice: alone it gives none (events wait as for an
/// undecided visitor; a stored choice stands). The first `update` is the choice; the
/// defaults fill in what it does not say.
/// An email or phone as the inspector looks a profile up: normalized and hashed by the
/// same rules as a soft login (E.164 for phones), or the code of why it cannot be.
pub fn lookup_hash(kind: &str, value: &str, country: &str) -> String {
    let r = match kind {
        "email" => idf::hash_email(value, EmailVariant::Standard),
        _ => idf::hash_phone(value, country, PhoneVariant::E164),
    };
    r.unwrap_or_else(|e| e.code().into())
}

pub fn gcm_choice<'a>(commands: impl IntoIterator<Item = GcmCommand<'a>>) -> Option<Choice> {
    let mut st = GcmCommand::default();
    let mut chosen = false;
    for c in commands {
        chosen |= c.update;
        st.analytics_storage = c.analytics_storage.or(st.analytics_storage);
        st.ad_storage = c.ad_storage.or(st.ad_storage);
        st.ad_user_data = c.ad_user_data.or(st.ad_user_data);
        st.ad_personalization = c.ad_personalization.or(st.ad_personalization);
    }
    let s = |v: Option<&str>| v.and_then(consent::gcm_state);
    chosen.then(|| {
        consent::from_gcm(
            s(st.analytics_storage),
            s(st.ad_storage),
            s(st.ad_user_data),
            s(st.ad_personalization),
        )
    })
}

/// The page's address as events carry it, and as SPA navigation compares it: without
/// its fragment (an anchor, or an OAuth implicit flow's `#access_token=…&id_token=…`,
/// which is a secret), as analytics.js sends it; a hash router's route (`#/cart`,
/// `#!/cart`) is kept, as it names the page.
pub fn page_url(href: &str) -> &str {
    match href.find('#') {
        Some(i) if !(href[i..].starts_with("#/") || href[i..].starts_with("#!/")) => &href[..i],
        _ => href,
    }
}

/// Whether a TCF `addEventListener` callback carries the visitor's state (the CMP has
/// loaded it, or the visitor just acted).
pub fn tcf_ready(event_status: &str) -> bool {
    matches!(event_status, "tcloaded" | "useractioncomplete")
}

/// First or last touch: the campaign fields and click ids of a landing URL, as JSON
/// object texts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Touch {
    campaign: Option<String>,
    clicks: Option<String>,
}

impl Touch {
    fn json(&self) -> String {
        let mut s = String::from("{");
        if let Some(c) = &self.campaign {
            s.push_str("\"campaign\":");
            s.push_str(c);
        }
        if let Some(c) = &self.clicks {
            if s.len() > 1 {
                s.push(',');
            }
            s.push_str("\"clickIds\":");
            s.push_str(c);
        }
        s.push('}');
        s
    }
    /// Storage form: the two texts on two lines (JSON text holds no raw newline).
    fn stored(&self) -> String {
        let mut s = self.campaign.clone().unwrap_or_default();
        s.push('\n');
        s.push_str(self.clicks.as_deref().unwrap_or_default());
        s
    }
    fn restore(v: &str) -> Option<Touch> {
        let (a, b) = v.split_once('\n')?;
        let part = |t: &str| {
            (t.starts_with('{') && json_text::scrub(t, FieldKind::Other, None).is_ok())
                .then(|| t.to_owned())
        };
        let t = Touch {
            campaign: part(a),
            clicks: part(b),
        };
        (t.campaign.is_some() || t.clicks.is_some()).then_some(t)
    }
}

/// A queued event.
#[derive(Debug, Clone)]
struct Item {
    key: Rc<str>,
    /// The tab that created it: only it sends the event while it lives (a closed tab's
    /// events are adopted by one other tab).
    owner: Rc<str>,
    json: String,
    needs: u8,
    /// Its whole context as JSON text (page facts, library, session, campaign, consent
    /// snapshot), shared by consecutive events (compared by pointer).
    ctx: Option<Rc<str>>,
    /// The chunk holding it, once written (events are stored in chunks of up to
    /// MAX_BATCH_EVENTS lines, one write per chunk).
    stored_in: Option<Rc<str>>,
    /// Not written yet (written at the next take_ops).
    pending: bool,
    /// Read back from storage: another tab may have sent it since.
    restored: bool,
    inflight: bool,
}

/// An event recorded before an opt-in decision: never stored or sent until one.
struct Waiting {
    json: String,
    needs: u8,
    ctx: Rc<str>,
}

fn same(a: &Option<Rc<str>>, b: &Option<Rc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Rc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

/// `n` in base 36, its last `width` digits, zero-padded.
fn b36(mut n: u64, width: usize) -> String {
    let mut d = vec![b'0'; width];
    for slot in d.iter_mut().rev() {
        *slot = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(d).unwrap_or_default()
}

fn push_u64(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(core::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// A JSON object of string fields.
fn object<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = String::from("{");
    for (k, v) in fields {
        if s.len() > 1 {
            s.push(',');
        }
        push_str(&mut s, k);
        s.push(':');
        push_str(&mut s, v);
    }
    s.push('}');
    s
}

fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

/// A string field: `,"key":"value"` with raw PII in `value` replaced.
fn push_field(out: &mut String, key: &str, value: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    let clean = pii::scrub_string(pii::field_kind(key), value, None);
    push_str(out, clean.as_ref().map_or(value, |(c, _)| c.as_str()));
}

fn tri(c: Option<char>) -> Option<bool> {
    match c {
        Some('1') => Some(true),
        Some('0') => Some(false),
        _ => None,
    }
}

fn tri_char(v: Option<bool>) -> char {
    match v {
        Some(true) => '1',
        Some(false) => '0',
        None => '-',
    }
}

/// A number as the browser formatted it (`1.25`), or nothing.
fn is_number(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"-+.eE".contains(&b))
}

/// The page's facts and the library as a JSON object text, raw PII redacted.
pub fn facts_json(f: &Facts) -> String {
    let mut s = String::from("{\"page\":{");
    push_field(&mut s, "path", &f.path);
    s.push(',');
    push_field(&mut s, "referrer", &f.referrer);
    s.push(',');
    push_field(&mut s, "search", &f.search);
    s.push(',');
    push_field(&mut s, "title", &f.title);
    s.push(',');
    push_field(&mut s, "url", &f.url);
    s.push('}');
    if let Some(l) = &f.locale {
        s.push(',');
        push_field(&mut s, "locale", l);
    }
    if let Some((w, h, density)) = &f.screen {
        s.push_str(",\"screen\":{\"width\":");
        push_u64(&mut s, u64::from(*w));
        s.push_str(",\"height\":");
        push_u64(&mut s, u64::from(*h));
        if is_number(density) {
            s.push_str(",\"density\":");
            s.push_str(density);
        }
        s.push('}');
    }
    s.push(',');
    push_field(&mut s, "userAgent", &f.user_agent);
    if let Some(tz) = &f.timezone {
        s.push(',');
        push_field(&mut s, "timezone", tz);
    }
    s.push_str(",\"library\":{\"name\":\"");
    s.push_str(LIBRARY);
    s.push_str("\",\"version\":\"");
    s.push_str(VERSION);
    s.push_str("\"}}");
    s
}

/// The engine: one per page.
pub struct Engine<R: Random> {
    o: Options,
    rng: R,
    /// This tab's id (the suffix of its event keys).
    pub tab: Rc<str>,
    anon: String,
    user: Option<String>,
    session: String,
    last_activity: u64,
    session_saved: u64,
    /// What the visitor chose.
    choice: Choice,
    source: String,
    first: Option<Touch>,
    last: Option<Touch>,
    click_ids: Option<String>,
    touched_url: Option<String>,
    queue: Vec<Item>,
    waiting: Vec<Waiting>,
    /// Consent records made before the visitor's answer on an opt-in site (a US opt-out
    /// read at start), each stamped as it was made: sent with the answer.
    held_records: Vec<Waiting>,
    inflight: usize,
    seq: u64,
    ops: Vec<Op>,
    backoff: f64,
    stats: Stats,
    /// The page facts (JSON text; empty until the first event needs it) and URL events
    /// are recorded under.
    page: Rc<str>,
    facts: Facts,
    /// The consent snapshot's text, built again when the consent changes.
    snap: Option<Rc<str>>,
    /// The last contexts built, so consecutive events share one string: (page, own
    /// fields) → context, and (context, snapshot) → stamped context.
    unstamped: Option<(Rc<str>, String, Rc<str>)>,
    stamped: Option<(Rc<str>, Rc<str>, Rc<str>)>,
    /// What the properties' and traits' keys say, kept from call to call
    /// ([`json_text::Keys`]).
    keys: json_text::Keys,
    /// The last name field written (its key, its value, its scrubbed form): a page's
    /// calls repeat their event names, and scanning the same name again was 2.9 of 22.9
    /// million instructions of 1,000 track calls (callgrind, natively).
    last_name: Option<(&'static str, String, Option<String>)>,
    /// The next call's options ([`Engine::call_options`]); taken by it.
    options: CallOptions,
    /// What the next consent decision's record states of how it was made (see
    /// [`Engine::consent_evidence`]).
    evidence: Vec<(&'static str, String)>,
}

impl<R: Random> Engine<R> {
    /// An engine before its restore: call [`Engine::restore`] for every stored `sl_*`
    /// key in sorted (time) order, then [`Engine::start`].
    pub fn new(o: Options, mut rng: R) -> Engine<R> {
        let mut b = [0u8; TAB_LEN];
        rng.fill(&mut b);
        let tab: String = b
            .iter()
            .map(|x| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[usize::from(*x % 36)]))
            .collect();
        Engine {
            o,
            rng,
            tab: Rc::from(tab),
            anon: String::new(),
            user: None,
            session: String::new(),
            last_activity: 0,
            session_saved: 0,
            choice: Choice::default(),
            source: String::new(),
            first: None,
            last: None,
            click_ids: None,
            touched_url: None,
            queue: Vec::new(),
            waiting: Vec::new(),
            held_records: Vec::new(),
            inflight: 0,
            seq: 0,
            ops: Vec::new(),
            backoff: 0.0,
            stats: Stats::default(),
            page: Rc::from(""),
            facts: Facts::default(),
            snap: None,
            unstamped: None,
            stamped: None,
            keys: json_text::Keys::default(),
            last_name: None,
            options: CallOptions::default(),
            evidence: Vec::new(),
        }
    }

    /// A UUID v4 from the random source.
    pub fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b);
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid::Builder::from_random_bytes(b)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut buf)
            .to_owned()
    }

    fn random(&mut self) -> f64 {
        let mut b = [0u8; 4];
        self.rng.fill(&mut b);
        f64::from(u32::from_le_bytes(b)) / 4_294_967_296.0
    }

    /// The consent as applied (the policy, GPC).
    pub fn decision(&self) -> Decision {
        consent::decide(self.choice, self.o.policy, self.o.gpc)
    }

    fn decided(&self) -> bool {
        self.o.policy == Policy::OptOut || self.choice.decided()
    }

    fn may_store(&self) -> bool {
        self.o.storage && self.decision().analytics
    }

    fn set(&mut self, k: &str, v: String) {
        self.ops.push(Op::Set(k.to_owned(), v));
    }

    fn remove(&mut self, k: &str) {
        self.ops.push(Op::Remove(k.to_owned()));
    }

    /// Writes an identifier or campaign value, when consent allows storage.
    fn save(&mut self, k: &str, v: String) {
        if self.may_store() {
            self.set(k, v);
        }
    }

    /// The page the next events are recorded on (call again when its facts change).
    pub fn set_page(&mut self, facts: &Facts) {
        self.facts = facts.clone();
        // A credential in the address (a reset link's token) is not sent with it.
        let f = &mut self.facts;
        for text in [&mut f.url, &mut f.search, &mut f.referrer] {
            if let Some(clean) = credentials::redact(text) {
                *text = clean;
            }
        }
        // The browser split path and query from the URL before any scrubbing: when the URL
        // holds raw PII, they are taken again from it scrubbed whole.
        if let Some((path, search)) = campaign::resplit(&self.facts.url) {
            self.facts.path = path;
            self.facts.search = search;
        }
        self.page = Rc::from(facts_json(&self.facts));
    }

    /// A page view: the page's facts (path, referrer, search, title, url) and its
    /// `category`, if given, as its properties, with the call's own (`own`, JSON text of
    /// an object) over them.
    pub fn page(
        &mut self,
        category: Option<&str>,
        name: Option<&str>,
        own: Option<&str>,
        now: u64,
    ) -> bool {
        let own = match own {
            Some(o) if !o.starts_with('{') => return self.record(Kind::Page, name, Some(o), now),
            o => o.unwrap_or("{}"),
        };
        let f = &self.facts;
        let facts = [
            ("category", category.unwrap_or_default()),
            ("path", f.path.as_str()),
            ("referrer", &f.referrer),
            ("search", &f.search),
            ("title", &f.title),
            ("url", &f.url),
        ];
        let mut props =
            object(facts.into_iter().filter(|(k, v)| {
                !json_text::has_key(own, k) && (*k != "category" || !v.is_empty())
            }));
        let inner = own.get(1..own.len() - 1).unwrap_or_default().trim();
        if !inner.is_empty() {
            props.pop();
            if props.len() > 1 {
                props.push(',');
            }
            props.push_str(inner);
            props.push('}');
        }
        self.record(Kind::Page, name, Some(&props), now)
    }

    /// Writes a chunk with the events still in it, or removes it when none is left. A
    /// chunk is lines: `c` and the shared context of the events after it, then per event
    /// its consent needs (a digit) and its JSON.
    fn write_chunk(&mut self, chunk: &Rc<str>) {
        let mut text = String::new();
        let mut ctx: Option<Rc<str>> = None;
        for i in self
            .queue
            .iter()
            .filter(|i| i.stored_in.as_ref() == Some(chunk))
        {
            if !text.is_empty() {
                text.push('\n');
            }
            if !same(&i.ctx, &ctx) {
                ctx = i.ctx.clone();
                text.push('c');
                text.push_str(ctx.as_deref().unwrap_or("{}"));
                text.push('\n');
            }
            text.push(char::from(b'0' + i.needs));
            text.push_str(&i.json);
        }
        if text.is_empty() {
            self.remove(chunk);
        } else {
            self.set(chunk, text);
        }
    }

    /// Rewrites the chunks that held events just removed from the queue.
    fn rewrite(&mut self, chunks: Vec<Rc<str>>) {
        let mut done: Vec<Rc<str>> = Vec::new();
        for c in chunks {
            if !done.contains(&c) {
                self.write_chunk(&c);
                done.push(c);
            }
        }
    }

    /// Sheds the oldest events past MAX_QUEUE (never one being sent).
    fn bound(&mut self) {
        while self.queue.len() + self.waiting.len() > MAX_QUEUE {
            if !self.waiting.is_empty() {
                self.waiting.remove(0);
            } else {
                let Some(at) = self.queue.iter().position(|i| !i.inflight) else {
                    break;
                };
                let item = self.queue.remove(at);
                self.rewrite(item.stored_in.into_iter().collect());
            }
            self.stats.shed += 1;
        }
    }

    fn touch_session(&mut self, now: u64) {
        if self.session.is_empty() || now.saturating_sub(self.last_activity) > SESSION_MS {
            self.session = self.uuid();
            self.session_saved = 0;
        }
        self.last_activity = now;
        // Written at most once a minute: the 30-minute rule does not need more.
        if now.saturating_sub(self.session_saved) > 60_000 {
            self.session_saved = now;
            let mut v = self.session.clone();
            v.push('.');
            push_u64(&mut v, now);
            self.save(K_SESSION, v);
        }
    }

    /// First and last touch from the page URL, kept only under consent (click ids under
    /// marketing consent). Once per URL: the same landing page does not touch again.
    fn touch_campaign(&mut self) {
        if self.touched_url.as_deref() == Some(self.facts.url.as_str()) {
            return;
        }
        self.touched_url = Some(self.facts.url.clone());
        let c = campaign::from_url(&self.facts.url);
        if c.is_empty() {
            return;
        }
        let object = |pairs: &[(&str, String)]| object(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        let clicks = (!c.click_ids.is_empty()).then(|| object(&c.click_ids));
        let touch = Touch {
            campaign: (!c.utm.is_empty()).then(|| object(&c.utm)),
            clicks: clicks.clone().filter(|_| self.decision().marketing),
        };
        if self.first.is_none() {
            self.first = Some(touch.clone());
            self.save(K_FIRST, touch.stored());
        }
        self.save(K_LAST, touch.stored());
        self.last = Some(touch);
        self.click_ids = clicks;
    }

    /// The consent snapshot an event carries (Segment's `context.consent` format).
    fn snapshot(&mut self) -> Rc<str> {
        if let Some(s) = &self.snap {
            return s.clone();
        }
        let d = self.decision();
        let mut s = String::from("{\"categoryPreferences\":{\"necessary\":true,\"analytics\":");
        push_bool(&mut s, d.analytics);
        s.push_str(",\"marketing\":");
        push_bool(&mut s, d.marketing);
        s.push_str(",\"personalization\":");
        push_bool(&mut s, d.personalization);
        s.push('}');
        if !self.source.is_empty() {
            s.push_str(",\"source\":");
            push_str(&mut s, &self.source);
        }
        if d.gpc {
            s.push_str(",\"gpc\":true");
        }
        s.push('}');
        let s: Rc<str> = Rc::from(s);
        self.snap = Some(s.clone());
        s
    }

    /// A context (page facts and own fields, without the snapshot) with the consent
    /// snapshot added. Built again only when an input changed.
    fn stamp(&mut self, ctx: &Rc<str>) -> Rc<str> {
        let snap = self.snapshot();
        if let Some((c, s, out)) = &self.stamped {
            if Rc::ptr_eq(c, ctx) && Rc::ptr_eq(s, &snap) {
                return out.clone();
            }
        }
        let mut t = String::with_capacity(ctx.len() + snap.len() + 12);
        t.push_str(ctx.get(..ctx.len() - 1).unwrap_or_default());
        t.push_str(",\"consent\":");
        t.push_str(&snap);
        t.push('}');
        let out: Rc<str> = Rc::from(t);
        self.stamped = Some((ctx.clone(), snap, out.clone()));
        out
    }

    /// The context before the snapshot: the page's facts and the event's own fields,
    /// one shared string while neither changes.
    fn context(&mut self, own: String) -> Rc<str> {
        if self.page.is_empty() {
            // Built when first needed, not at start (about 1 ms of a page load's main
            // thread in Chromium, measured): the adapter sets the page's facts before
            // its first event anyway.
            self.page = Rc::from(facts_json(&self.facts));
        }
        if let Some(prev) = &self.unstamped {
            if Rc::ptr_eq(&prev.0, &self.page) && prev.1 == own {
                return prev.2.clone();
            }
        }
        let mut t = String::with_capacity(self.page.len() + own.len());
        t.push_str(self.page.get(..self.page.len() - 1).unwrap_or_default());
        t.push(',');
        t.push_str(own.get(1..).unwrap_or_default());
        let out: Rc<str> = Rc::from(t);
        self.unstamped = Some((self.page.clone(), own, out.clone()));
        out
    }

    fn enqueue(&mut self, json: String, needs: u8, now: u64, ctx: Rc<str>) {
        self.seq = (self.seq + 1) % 36u64.pow(4);
        let mut key = String::from(EVENT_PREFIX);
        key.push_str(&b36(now, 9));
        key.push_str(&b36(self.seq, 4));
        key.push_str(&self.tab);
        let pending = self.may_store();
        self.queue.push(Item {
            key: Rc::from(key),
            owner: self.tab.clone(),
            json,
            needs,
            ctx: Some(ctx),
            stored_in: None,
            pending,
            restored: false,
            inflight: false,
        });
        self.bound();
    }

    /// Records an event: `name` the event, page or screen name, group id or previous
    /// id; `body` the properties or traits as the JSON text of an object (what
    /// `JSON.stringify` made of the page's object). Returns false when it was not kept
    /// (over 32 KB, not a JSON object, or analytics denied).
    pub fn record(&mut self, kind: Kind, name: Option<&str>, body: Option<&str>, now: u64) -> bool {
        self.record_as(kind, name, body, now, false)
    }

    /// Options for the next call only (analytics.js's `options` argument).
    pub fn call_options(&mut self, o: CallOptions) {
        self.options = o;
    }

    fn record_as(
        &mut self,
        kind: Kind,
        name: Option<&str>,
        body: Option<&str>,
        now: u64,
        consent_record: bool,
    ) -> bool {
        let options = core::mem::take(&mut self.options);
        if !consent_record && self.choice.analytics == Some(false) {
            return false; // not collected
        }
        let d = self.decision();
        self.touch_session(now);
        // Before a decision the campaign is kept in memory only; events that wait carry it.
        let collect = d.analytics || !self.decided();
        if collect {
            self.touch_campaign();
        }
        let Some(json) = self.event_json(kind, name, body, &options, now) else {
            self.stats.rejected += 1;
            return false;
        };
        let mut needs = if consent_record { 0 } else { ANALYTICS };
        let mut own = String::with_capacity(64 + self.session.len());
        own.push_str("{\"sessionId\":");
        push_str(&mut own, &self.session);
        if collect {
            if let Some(c) = self.last.as_ref().and_then(|t| t.campaign.as_ref()) {
                own.push_str(",\"campaign\":");
                own.push_str(c);
            }
            if let Some(f) = &self.first {
                own.push_str(",\"firstTouch\":");
                own.push_str(&f.json());
            }
            if let Some(c) = self.click_ids.as_ref().filter(|_| d.marketing) {
                own.push_str(",\"clickIds\":");
                own.push_str(c);
                needs |= MARKETING;
            }
        }
        if let Some(c) = &options.context {
            let Some(clean) = self.scrubbed(c) else {
                self.stats.rejected += 1;
                return false;
            };
            let inner = clean.get(1..clean.len() - 1).unwrap_or_default().trim();
            if !inner.is_empty() {
                own.push(',');
                own.push_str(inner);
            }
        }
        own.push('}');
        // The context (page facts, library, session, campaign, then the consent snapshot)
        // is kept beside the event: events that share it, nearly all of a page's, send it
        // once per batch as Segment's batch-level `context` and store it once per chunk.
        let ctx = self.context(own);
        if json.len() + ctx.len() > MAX_EVENT_BYTES {
            self.stats.rejected += 1;
            return false;
        }
        if self.decided() {
            let stamped = self.stamp(&ctx);
            self.enqueue(json, needs, now, stamped);
        } else if consent_record {
            // Before the visitor's answer on an opt-in site nothing is sent or written: a
            // statement that leaves analytics undecided (a US opt-out) waits for it.
            let ctx = self.stamp(&ctx);
            if self.held_records.len() == MAX_HELD_RECORDS {
                self.held_records.remove(0);
                self.stats.shed += 1;
            }
            self.held_records.push(Waiting { json, needs, ctx });
        } else {
            self.waiting.push(Waiting { json, needs, ctx });
            self.bound();
        }
        true
    }

    /// The event's JSON, raw PII in every key and string replaced by its digest (the
    /// shared rules), or `None` when the body is not JSON.
    fn event_json(
        &mut self,
        kind: Kind,
        name: Option<&str>,
        body: Option<&str>,
        options: &CallOptions,
        now: u64,
    ) -> Option<String> {
        // Sized for the whole event: growing it was a copy per event.
        let mut e = String::with_capacity(
            192 + self.anon.len()
                + self.user.as_ref().map_or(0, String::len)
                + name.map_or(0, str::len)
                + body.map_or(0, str::len),
        );
        e.push_str("{\"type\":\"");
        e.push_str(kind.name());
        e.push_str("\",\"messageId\":\"");
        e.push_str(&self.uuid());
        e.push_str("\",\"anonymousId\":");
        push_str(&mut e, &self.anon);
        if let Some(u) = &self.user {
            e.push_str(",\"userId\":");
            push_str(&mut e, u);
        }
        if let Some(n) = name {
            e.push(',');
            self.push_name(&mut e, kind.name_field(), n);
        }
        if let Some(b) = body {
            let clean = self.scrubbed(b)?;
            e.push_str(",\"");
            e.push_str(kind.body_field());
            e.push_str("\":");
            e.push_str(&clean);
        }
        if let Some(i) = &options.integrations {
            e.push_str(",\"integrations\":");
            e.push_str(&self.scrubbed(i)?);
        }
        e.push_str(",\"timestamp\":\"");
        e.push_str(&format_rfc3339(options.timestamp.unwrap_or(now) as i64));
        e.push_str("\"}");
        Some(e)
    }

    /// A JSON object's text with raw PII in every key and string replaced by its
    /// digest (the shared rules), or `None` when it is not an object's text.
    #[inline(never)]
    fn scrubbed<'t>(&mut self, text: &'t str) -> Option<Cow<'t, str>> {
        if !text.starts_with('{') {
            return None;
        }
        let country = Some(self.o.country.as_str());
        let clean = json_text::scrub_with(text, FieldKind::Other, country, &mut self.keys).ok()?;
        Some(clean.map_or(Cow::Borrowed(text), Cow::Owned))
    }

    /// [`push_field`] through [`Engine::last_name`].
    fn push_name(&mut self, out: &mut String, key: &'static str, value: &str) {
        let (k, v, clean) = match &mut self.last_name {
            Some(last) if last.0 == key && last.1 == value => last,
            last => {
                let clean = pii::scrub_string(pii::field_kind(key), value, None).map(|(c, _)| c);
                last.insert((key, value.into(), clean))
            }
        };
        out.push('"');
        out.push_str(k);
        out.push_str("\":");
        push_str(out, clean.as_deref().unwrap_or(v));
    }

    /// Drops queued events the current consent no longer allows (never one in flight).
    fn purge(&mut self) {
        let d = self.decision();
        let ok = |i: &Item| {
            (i.needs & ANALYTICS == 0 || d.analytics) && (i.needs & MARKETING == 0 || d.marketing)
        };
        let mut gone = Vec::new();
        let (mut inflight, mut purged) = (self.inflight, 0);
        self.queue.retain(|i| {
            if ok(i) {
                return true;
            }
            inflight -= usize::from(i.inflight);
            purged += 1;
            gone.extend(i.stored_in.clone());
            false
        });
        self.stats.purged += purged;
        self.inflight = inflight;
        self.rewrite(gone);
    }

    /// Applies a consent decision (`None` leaves a category as it is). Events that
    /// waited for it are stamped and queued, or dropped; queued events the new state no
    /// longer allows are purged; the decision itself is sent as a `Consent Updated`
    /// record.
    pub fn set_consent(&mut self, c: Choice, source: &str, now: u64) {
        let evidence = core::mem::take(&mut self.evidence);
        let before = self.may_store();
        let next = self.choice.updated(c);
        if next == self.choice {
            // A CMP repeating its state on every page (a US opt-out read at each start,
            // the visitor undecided on the rest) is not a new decision.
            return;
        }
        self.choice = next;
        self.touched_url = None; // the landing URL is read again under the new consent
        self.source = source.chars().take(40).collect();
        self.snap = None;
        let d = self.decision();
        // The choice itself is necessary: kept once the visitor has answered (before, on
        // an opt-in site, nothing is written).
        if self.o.storage && self.decided() {
            let mut v: String = [next.analytics, next.marketing, next.personalization]
                .into_iter()
                .map(tri_char)
                .collect();
            v.push('.');
            v.push_str(&self.source);
            self.set(K_CONSENT, v);
        }
        if self.may_store() && !before {
            // Storage just became allowed: keep the identifiers from now on.
            self.set(K_ANON, self.anon.clone());
            if let Some(u) = self.user.clone() {
                self.set(K_USER, u);
            }
            if let Some(t) = self.first.as_ref().map(Touch::stored) {
                self.set(K_FIRST, t);
            }
            if let Some(t) = self.last.as_ref().map(Touch::stored) {
                self.set(K_LAST, t);
            }
            self.session_saved = 0;
        }
        if !d.analytics && before {
            for k in [K_ANON, K_USER, K_SESSION, K_FIRST, K_LAST] {
                self.remove(k);
            }
        }
        if !d.marketing {
            // Click ids are ad identifiers: gone from memory and storage with marketing.
            self.click_ids = None;
            self.first = self.strip_clicks(self.first.clone(), K_FIRST);
            self.last = self.strip_clicks(self.last.clone(), K_LAST);
        }
        // A statement that leaves analytics undecided (a US opt-out of sale, a manager's
        // marketing-only answer) is no answer to what the waiting events wait for: they
        // stay, neither sent nor dropped.
        let held = if next.decided() {
            for r in core::mem::take(&mut self.held_records) {
                self.enqueue(r.json, r.needs, now, r.ctx);
            }
            core::mem::take(&mut self.waiting)
        } else {
            Vec::new()
        };
        if d.analytics {
            for w in held {
                let stamped = self.stamp(&w.ctx);
                self.enqueue(w.json, w.needs, now, stamped);
            }
        } else {
            self.stats.purged += held.len();
        }
        self.purge();
        let mut body = String::from("{\"analytics\":");
        push_bool(&mut body, d.analytics);
        body.push_str(",\"marketing\":");
        push_bool(&mut body, d.marketing);
        body.push_str(",\"personalization\":");
        push_bool(&mut body, d.personalization);
        for (k, v) in &evidence {
            if v.len() <= 16 * 1024 {
                body.push(',');
                push_field(&mut body, k, v);
            }
        }
        body.push('}');
        self.record_as(
            Kind::Track,
            Some(consent::CONSENT_EVENT),
            Some(&body),
            now,
            true,
        );
    }

    fn strip_clicks(&mut self, t: Option<Touch>, key: &str) -> Option<Touch> {
        let t = t?;
        let kept = t.campaign.clone().map(|c| Touch {
            campaign: Some(c),
            clicks: None,
        });
        match &kept {
            Some(k) => self.save(key, k.stored()),
            None if self.may_store() => self.remove(key),
            None => {}
        }
        kept
    }

    /// What the next decision's record states of how it was made, kept with it in the
    /// collector's consent log: the consent manager's TC, GPP or US Privacy string and
    /// its id and version, or the version of the site's own notice
    /// (keys of `tracking_plan::consent::EVIDENCE_KEYS`, the adapter's constants). A value
    /// over 16 KB is left out (it would take the record past the event limit, and so lose
    /// it); a decision that changes nothing takes it and records nothing.
    pub fn consent_evidence(&mut self, evidence: Vec<(&'static str, String)>) {
        self.evidence = evidence;
    }

    /// Consent Mode's choice (see [`gcm_choice`]).
    pub fn consent_gcm(&mut self, c: Choice, now: u64) {
        self.set_consent(c, "gcm", now);
    }

    /// IAB TCF v2.2 purpose consents (`granted(n)`: purpose n has consent).
    pub fn consent_tcf(&mut self, granted: impl Fn(u8) -> bool, now: u64) {
        self.set_consent(consent::from_tcf(granted), "tcf", now);
    }

    /// A US privacy signal (GPP's US sections, the US Privacy string): an opt-out denies
    /// marketing; none states nothing (`tracking_plan::consent::from_us_opt_out`).
    pub fn consent_us(&mut self, opted_out: bool, source: &str, now: u64) {
        self.set_consent(consent::from_us_opt_out(opted_out), source, now);
    }

    pub fn consent(&self) -> ConsentState {
        let d = self.decision();
        ConsentState {
            analytics: d.analytics,
            marketing: d.marketing,
            personalization: d.personalization,
            decided: self.decided(),
        }
    }

    /// Takes back what an earlier page stored.
    pub fn restore(&mut self, key: &str, value: &str) {
        match key {
            K_ANON if !value.is_empty() => self.anon = value.to_owned(),
            K_USER if !value.is_empty() => self.user = Some(value.to_owned()),
            K_SESSION => {
                let (id, last) = value.split_once('.').unwrap_or((value, ""));
                if !id.is_empty() {
                    self.session = id.to_owned();
                    self.last_activity = last.parse().unwrap_or(0);
                    self.session_saved = self.last_activity;
                }
            }
            K_CONSENT if value.len() >= 3 => {
                let mut c = value.chars();
                self.choice = Choice {
                    analytics: tri(c.next()),
                    marketing: tri(c.next()),
                    personalization: tri(c.next()),
                };
                self.source = value
                    .get(4..)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("stored")
                    .to_owned();
            }
            K_FIRST => self.first = Touch::restore(value),
            K_LAST => self.last = Touch::restore(value),
            _ if key.starts_with(EVENT_PREFIX) && key.len() > EVENT_PREFIX.len() + TAB_LEN => {
                self.restore_chunk(key, value)
            }
            _ => {}
        }
    }

    /// A chunk (see write_chunk). Events stored without a context line carry their
    /// whole context themselves.
    fn restore_chunk(&mut self, key: &str, value: &str) {
        let chunk: Rc<str> = Rc::from(key);
        let owner: Rc<str> = Rc::from(key.get(key.len() - TAB_LEN..).unwrap_or_default());
        let mut ctx: Option<Rc<str>> = None;
        for (n, line) in value.split('\n').enumerate() {
            let json = line.get(1..).unwrap_or_default();
            if !json.starts_with('{') || !json.ends_with('}') {
                continue;
            }
            match line.as_bytes()[0] {
                b'c' => ctx = Some(Rc::from(json)),
                d @ b'0'..=b'3' => {
                    let mut k = String::from(key);
                    k.push('#');
                    push_u64(&mut k, n as u64);
                    self.queue.push(Item {
                        key: Rc::from(k),
                        owner: owner.clone(),
                        json: json.to_owned(),
                        needs: d - b'0',
                        ctx: ctx.clone(),
                        stored_in: Some(chunk.clone()),
                        pending: false,
                        restored: true,
                        inflight: false,
                    });
                }
                _ => {}
            }
        }
    }

    /// Finishes the restore: a fresh anonymous id if none was stored, and nothing kept
    /// that the stored consent no longer allows.
    pub fn start(&mut self) {
        if self.anon.is_empty() {
            self.anon = self.uuid();
            self.save(K_ANON, self.anon.clone());
        }
        self.purge();
    }

    /// Adopts the anonymous id of the collector's first-party cookie.
    pub fn adopt(&mut self, id: &str) {
        if !id.is_empty() && id != self.anon {
            self.anon = id.to_owned();
            self.save(K_ANON, self.anon.clone());
        }
    }

    /// A click on a link to `href` (as the page resolved it), whose text is `text`: an
    /// `Outbound Link Clicked` or `File Downloaded` event when the site asked for that
    /// kind ([`Options::links`], [`link_kind`]), with the address and the text (its first
    /// 100 characters), raw PII and credentials in them replaced as in any field.
    pub fn link_clicked(&mut self, href: &str, text: &str, now: u64) -> bool {
        let name = match link_kind(&self.facts.url, href) {
            Some(LinkKind::Download) if self.o.links.downloads => "File Downloaded",
            Some(LinkKind::Outbound) if self.o.links.outbound => "Outbound Link Clicked",
            _ => return false,
        };
        // Its white space collapsed, as the page shows it; the first 100 characters.
        let (mut label, mut n) = (String::new(), 0);
        for c in text.chars() {
            let c = if c.is_ascii_whitespace() { ' ' } else { c };
            if n == 100 {
                break;
            }
            if c != ' ' || !(label.is_empty() || label.ends_with(' ')) {
                label.push(c);
                n += 1;
            }
        }
        let text = label.trim_end();
        let mut body = String::from("{");
        push_field(&mut body, "url", href);
        if !text.is_empty() {
            body.push(',');
            push_field(&mut body, "text", text);
        }
        body.push('}');
        self.record(Kind::Track, Some(name), Some(&body), now)
    }

    /// analytics.js's `setAnonymousId`: the page's own id for this visitor (a server's,
    /// or another domain's, to join the two), from the next event on. Refused (false)
    /// when empty, over 200 characters, or a placeholder every visitor would share
    /// (`undefined`, `null`, `0`: the identity graph's blocked values, which would merge
    /// strangers); an email or phone number becomes its digest.
    pub fn set_anonymous_id(&mut self, id: &str) -> bool {
        let id = id.trim();
        if id.chars().count() > 200 || idf::is_blocked_value(id) {
            return false;
        }
        let id = self.clean_id(id);
        self.adopt(&id);
        true
    }

    pub fn anon(&self) -> &str {
        &self.anon
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// `s`, or its digest when it is an email or phone number (an id never carries raw
    /// PII).
    fn clean_id(&self, s: &str) -> String {
        pii::scrub_text(s, Some(&self.o.country)).map_or_else(|| s.to_owned(), |(c, _)| c)
    }

    pub fn identify(&mut self, user: Option<&str>, traits: Option<&str>, now: u64) -> bool {
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            let u = self.clean_id(u);
            self.save(K_USER, u.clone());
            self.user = Some(u);
        }
        self.record(Kind::Identify, None, traits, now)
    }

    pub fn alias(&mut self, user: &str, previous: Option<&str>, now: u64) -> bool {
        let prev = previous
            .map(str::to_owned)
            .or_else(|| self.user.clone())
            .unwrap_or_else(|| self.anon.clone());
        let u = self.clean_id(user);
        self.save(K_USER, u.clone());
        self.user = Some(u);
        self.record(Kind::Alias, Some(&prev), None, now)
    }

    /// Soft login: the email and/or phone normalized and hashed by the shared rules (the
    /// raw values are neither stored nor sent), sent as identify traits. Returns the
    /// digests, or the error when neither value could be used.
    pub fn soft_login(&mut self, email: &str, phone: &str, now: u64) -> SoftLogin {
        let mut r = SoftLogin::default();
        let mut errors = Vec::new();
        if !email.trim().is_empty() {
            match idf::hash_email(email, EmailVariant::Standard) {
                Ok(h) => {
                    let google = idf::hash_email(email, EmailVariant::Google).ok();
                    r.email_sha256_google = google.filter(|g| *g != h);
                    r.email_sha256 = Some(h);
                }
                Err(e) => errors.push(String::from("email: ") + e.code()),
            }
        }
        if !phone.trim().is_empty() {
            let c = self.o.country.as_str();
            match (
                idf::hash_phone(phone, c, PhoneVariant::E164),
                idf::hash_phone(phone, c, PhoneVariant::Meta),
            ) {
                (Ok(h), Ok(meta)) => {
                    r.phone_sha256 = Some(h);
                    r.phone_sha256_meta = Some(meta);
                }
                (Err(e), _) | (_, Err(e)) => errors.push(String::from("phone: ") + e.code()),
            }
        }
        if r.email_sha256.is_none() && r.phone_sha256.is_none() {
            return SoftLogin {
                error: Some(
                    errors
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| "nothing to hash".into()),
                ),
                ..SoftLogin::default()
            };
        }
        let traits = object(
            [
                ("email_sha256", &r.email_sha256),
                ("email_sha256_google", &r.email_sha256_google),
                ("phone_sha256", &r.phone_sha256),
                ("phone_sha256_meta", &r.phone_sha256_meta),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_deref()?))),
        );
        self.record(Kind::Identify, None, Some(&traits), now);
        r
    }

    /// A new visitor on this browser: new anonymous and session ids, no user id.
    pub fn reset(&mut self) {
        self.anon = self.uuid();
        self.user = None;
        self.session.clear();
        self.save(K_ANON, self.anon.clone());
        if self.o.storage {
            self.remove(K_USER);
            self.remove(K_SESSION);
        }
    }

    /// Storage operations to perform, in order. Events recorded since the last call are
    /// written here, in chunks: the adapter calls this once per task, so a burst of calls
    /// costs a few writes, not one per event.
    pub fn take_ops(&mut self) -> Vec<Op> {
        let mut start = None;
        let mut n = 0;
        let mut chunks = Vec::new();
        for at in 0..self.queue.len() {
            if !self.queue[at].pending {
                continue;
            }
            let chunk = start
                .get_or_insert_with(|| self.queue[at].key.clone())
                .clone();
            let item = &mut self.queue[at];
            item.pending = false;
            item.stored_in = Some(chunk.clone());
            n += 1;
            if n == MAX_BATCH_EVENTS {
                chunks.push(chunk);
                start = None;
                n = 0;
            }
        }
        chunks.extend(start);
        for c in &chunks {
            self.write_chunk(c);
        }
        core::mem::take(&mut self.ops)
    }

    /// The adapter could not write chunk `key` (quota): its events live in this tab only.
    pub fn not_persisted(&mut self, key: &str) {
        self.stats.not_persisted += 1;
        for i in &mut self.queue {
            if i.stored_in.as_deref() == Some(key) {
                i.stored_in = None;
            }
        }
    }

    /// Milliseconds until the queue should be sent: 0 when a full batch is ready, the
    /// gathering delay otherwise, `None` when there is nothing to send.
    pub fn delay(&self) -> Option<u32> {
        if self.inflight > 0 {
            return None;
        }
        let (mut n, mut bytes) = (0, 0);
        for i in self.queue.iter().filter(|i| self.mine(i)) {
            bytes += i.json.len();
            n += 1;
            if n >= MAX_BATCH_EVENTS {
                break;
            }
        }
        match n {
            0 => None,
            _ if n >= MAX_BATCH_EVENTS || bytes >= MAX_BATCH_BYTES / 2 => Some(0),
            _ => Some(FLUSH_DELAY_MS),
        }
    }

    /// Whether this tab owns `i`: by pointer for the events it made or adopted, by text
    /// otherwise. Asked of queued events at every call: comparing the ids' text first
    /// took `schedule` from 0.9 to 6.9 ms of the 1,000 track calls of `scripts/bench.sh
    /// sdk` (a Chromium profile).
    fn mine(&self, i: &Item) -> bool {
        Rc::ptr_eq(&i.owner, &self.tab) || i.owner == self.tab
    }

    /// Tabs whose stored events this tab restored: the adapter adopts those whose tab is
    /// gone (by taking their lock) and lets go of the others.
    pub fn foreign_tabs(&self) -> Vec<Rc<str>> {
        let mut out: Vec<Rc<str>> = Vec::new();
        for i in self.queue.iter().filter(|i| !self.mine(i)) {
            if !out.contains(&i.owner) {
                out.push(i.owner.clone());
            }
        }
        out
    }

    /// This tab now sends the events of `t` (a closed tab whose lock it took).
    pub fn adopt_tab(&mut self, t: &str) {
        for i in self.queue.iter_mut().filter(|i| &*i.owner == t) {
            i.owner = self.tab.clone();
        }
    }

    /// Another live tab owns these restored events and will send them: this tab lets go
    /// of them (storage keeps them for whichever tab outlives the owner).
    pub fn forget_tab(&mut self, t: &str) {
        self.queue.retain(|i| &*i.owner != t);
    }

    /// Whether [`Engine::batch`] needs the stored keys: only events read back from
    /// storage can have been sent by another tab (a live tab's own events are its alone).
    pub fn needs_present(&self) -> bool {
        self.queue.iter().any(|i| i.restored && self.mine(i))
    }

    /// Builds the next batch's body, at most `max_bytes` long, and marks its events in
    /// flight. Only this tab's own (and adopted) events go. `present`: the event keys now
    /// in storage (read under the cross-tab lock); a restored event whose chunk is gone
    /// was sent by another tab.
    pub fn batch(
        &mut self,
        now: u64,
        max_bytes: usize,
        present: Option<&[String]>,
    ) -> Option<String> {
        if self.inflight > 0 {
            return None;
        }
        if let Some(p) = present {
            self.queue.retain(|i| {
                !i.restored
                    || i.stored_in
                        .as_ref()
                        .is_none_or(|c| p.iter().any(|k| **k == **c))
            });
        }
        let (body, picked) = self.build(now, max_bytes, false)?;
        for at in &picked {
            self.queue[*at].inflight = true;
        }
        self.inflight = picked.len();
        Some(body)
    }

    /// A batch of one context (one page, session and consent state), sent once beside
    /// its events: its body and the queue positions of its events.
    fn build(&self, now: u64, max_bytes: usize, inflight: bool) -> Option<(String, Vec<usize>)> {
        let mut picked = Vec::new();
        let mut ctx: Option<Rc<str>> = None;
        let mut size = 120 + self.o.write_key.len();
        for (at, i) in self.queue.iter().enumerate() {
            if !self.mine(i) || (i.inflight && !inflight) {
                continue;
            }
            if picked.is_empty() {
                ctx = i.ctx.clone();
                size += ctx.as_ref().map_or(0, |c| c.len());
            } else if !same(&i.ctx, &ctx) {
                break;
            }
            if picked.len() >= MAX_BATCH_EVENTS || size + i.json.len() + 1 > max_bytes {
                break;
            }
            size += i.json.len() + 1;
            picked.push(at);
        }
        if picked.is_empty() {
            return None;
        }
        let mut body = String::with_capacity(size);
        body.push_str("{\"batch\":[");
        for (n, at) in picked.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&self.queue[*at].json);
        }
        body.push(']');
        if let Some(c) = &ctx {
            body.push_str(",\"context\":");
            body.push_str(c);
        }
        body.push_str(",\"sentAt\":\"");
        body.push_str(&format_rfc3339(now as i64));
        body.push_str("\",\"writeKey\":");
        push_str(&mut body, &self.o.write_key);
        body.push('}');
        Some((body, picked))
    }

    /// What the collector answered for the batch in flight: `status` 0 for a network
    /// failure, `retry_after` in seconds.
    pub fn done(&mut self, status: u16, retry_after: u32) -> Next {
        if self.inflight == 0 {
            return Next::Now;
        }
        self.inflight = 0;
        if status == 0 || status == 429 || status >= 500 {
            for i in &mut self.queue {
                i.inflight = false;
            }
            self.backoff = (self.backoff * 2.0).clamp(MIN_BACKOFF, MAX_BACKOFF);
            let jitter = self.backoff * (0.9 + 0.2 * self.random());
            return Next::Retry(jitter.max(f64::from(retry_after) * 1000.0));
        }
        self.backoff = 0.0;
        let mut gone = Vec::new();
        let mut n = 0;
        self.queue.retain(|i| {
            if !i.inflight {
                return true;
            }
            n += 1;
            gone.extend(i.stored_in.clone());
            false
        });
        self.rewrite(gone);
        if status < 300 {
            self.stats.sent += n;
            Next::Now
        } else {
            self.stats.rejected += n;
            Next::Refused
        }
    }

    /// The page is going away: a last batch, within the 64 KB budget of requests that
    /// outlive the page, of the oldest events, those in flight included: a request the
    /// page made without `keepalive` is cancelled with it, and one still waiting for the
    /// send lock never starts. Its events stay queued and stored: nobody learns whether
    /// a request made at unload arrived, so they are sent again (by the next page, or by
    /// this one if it comes back from the back/forward cache) and the collector answers
    /// `duplicate` for those that did (at least once, never lost).
    pub fn unload_batch(&mut self, now: u64) -> Option<String> {
        self.build(now, UNLOAD_BYTES, true).map(|(body, _)| body)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            queued: self.queue.len(),
            waiting: self.waiting.len(),
            ..self.stats
        }
    }
}
