//! Durable Objects: storage for the dedup table (one object per shard of messageIds) and
//! the identity graph (one object per write key, or `IDENTITY_SHARDS` of them), each on
//! the object's own SQLite. The decisions are made by `dedup`, `identity` and
//! `identity_shards`; these objects only load and save rows (and a graph's shard runs a
//! sharded call's driver, `identity_shards::transact`, for the request that hands it
//! over), and the clients below only move JSON between the worker and them. A storage
//! error is never swallowed: the object answers 500 and the pipeline answers a
//! retryable 503.

use crate::dedup::{self, Claim, Deduplicator, Entry, SeenTable};
use crate::identity::{
    self, Conflict, Erased, Graph, IdKind, Ident, IdentityService, Limits, MergeRecord,
    Observation, Profile, Resolution,
};
use crate::identity_shards::{self as shards, Locks};
use crate::store::StoreError;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use wasm_bindgen::JsValue;
use worker::*;

fn sv(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_string())
}

/// Sends JSON to a Durable Object and reads its JSON answer.
pub(super) async fn call<T: DeserializeOwned>(
    calls: &super::Calls,
    kind: super::Io,
    stub: &Stub,
    path: &str,
    body: &Value,
) -> Result<T> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body.to_string())));
    let req = Request::new_with_init(&format!("https://object{path}"), &init)?;
    calls
        .io(kind, async {
            let mut resp = stub.fetch_with_request(req).await?;
            let header = |name: &str| resp.headers().get(name).ok().flatten();
            let object_ms = header("X-Object-Ms").and_then(|v| v.parse().ok());
            let made = header("X-Object-Subrequests").and_then(|v| v.parse().ok());
            calls.object(kind, object_ms.unwrap_or(0.0), made.unwrap_or(0));
            let driver_ms = header("X-Object-Driver-Ms").and_then(|v| v.parse().ok());
            calls.driven(driver_ms.unwrap_or(0.0));
            if resp.status_code() != 200 {
                let text = resp.text().await.unwrap_or_default();
                return Err(Error::RustError(format!(
                    "{path}: {} {text}",
                    resp.status_code()
                )));
            }
            resp.json().await
        })
        .await
}

/// An object's answer with the time its handler ran (`X-Object-Ms`): the object's own
/// work, without the call's transport or its wait for the object (for the caller's
/// `Server-Timing`). The request's body is read before the clock starts: receiving it
/// is transport (the object serves other calls meanwhile), and took 7 of the 12 ms an
/// identity call of 100 events was charged before (local workerd, measured with
/// `Date.now()` around it).
///
/// The body is parsed by serde_json from its text, not by `Request::json` (a JS parse
/// converted by serde-wasm-bindgen).
async fn timed<B: DeserializeOwned, F: std::future::Future<Output = Result<Response>>>(
    mut req: Request,
    handle: impl FnOnce(String, B) -> F,
) -> Result<Response> {
    let text = req.text().await?;
    let started = Date::now().as_millis();
    let body: B = serde_json::from_str(&text)?;
    let mut resp = handle(req.path(), body).await?;
    // A handler that called other objects says how long it waited for them
    // (`X-Object-Waited`), left out of its own time, and how long their handlers ran
    // (`X-Object-Nested-Ms`), added: the graph's work, wherever it ran.
    let header = |name: &str| -> u64 {
        let v = resp.headers().get(name).ok().flatten();
        v.and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let (waited, nested) = (header("X-Object-Waited"), header("X-Object-Nested-Ms"));
    let ms = Date::now()
        .as_millis()
        .saturating_sub(started)
        .saturating_sub(waited)
        + nested;
    resp.headers_mut().set("X-Object-Ms", &ms.to_string())?;
    Ok(resp)
}

/// Marks an object's answer with what its own calls to other objects cost: the time it
/// waited for them, the time their handlers ran, and the most subrequests one
/// invocation made, its own or one below it (see [`timed`] and [`call`]).
fn with_nested(mut resp: Response, meter: &super::Meter) -> Result<Response> {
    let made = meter.calls().max(meter.nested_calls());
    let h = resp.headers_mut();
    h.set("X-Object-Waited", &(meter.in_flight() as u64).to_string())?;
    h.set(
        "X-Object-Nested-Ms",
        &(meter.objects_ms() as u64).to_string(),
    )?;
    h.set("X-Object-Subrequests", &made.to_string())?;
    Ok(resp)
}

fn err(e: Error) -> StoreError {
    StoreError(e.to_string())
}

/// A random UUID from the runtime's CSPRNG (`crypto.randomUUID()`).
pub fn random_uuid() -> String {
    let global = js_sys::global();
    let uuid = js_sys::Reflect::get(&global, &"crypto".into())
        .and_then(|c| {
            let f = js_sys::Reflect::get(&c, &"randomUUID".into())?;
            js_sys::Function::from(f).call0(&c)
        })
        .ok()
        .and_then(|v| v.as_string());
    uuid.unwrap_or_default()
}

/// A random profile id (`p_` and 24 hex digits) from the runtime's CSPRNG.
pub fn random_profile_id() -> String {
    let hex: String = random_uuid()
        .chars()
        .filter(|c| *c != '-')
        .take(24)
        .collect();
    format!("p_{hex}")
}

/// Runs SQL, remembering the first failure (checked before the object answers).
struct Sql<'a> {
    sql: &'a SqlStorage,
    failed: RefCell<Option<String>>,
}

impl<'a> Sql<'a> {
    fn new(sql: &'a SqlStorage) -> Self {
        Sql {
            sql,
            failed: RefCell::new(None),
        }
    }

    /// Whether `args` fit in one statement. Durable Object SQLite refuses more than
    /// [`MAX_PARAMS`] bound values and local workerd does not: refused here as well, so
    /// the tests see what the platform would do.
    fn fits(&self, args: &[SqlStorageValue]) -> bool {
        let fits = args.len() <= MAX_PARAMS;
        if !fits {
            let e = format!("{} bound values, at most {MAX_PARAMS}", args.len());
            self.failed.borrow_mut().get_or_insert(e);
        }
        fits
    }

    fn run(&self, q: &str, args: Vec<SqlStorageValue>) {
        if !self.fits(&args) {
            return;
        }
        if let Err(e) = self.sql.exec(q, args) {
            self.failed.borrow_mut().get_or_insert(e.to_string());
        }
    }

    fn rows<T: DeserializeOwned>(&self, q: &str, args: Vec<SqlStorageValue>) -> Vec<T> {
        if !self.fits(&args) {
            return Vec::new();
        }
        match self.sql.exec(q, args).and_then(|c| c.to_array()) {
            Ok(rows) => rows,
            Err(e) => {
                self.failed.borrow_mut().get_or_insert(e.to_string());
                Vec::new()
            }
        }
    }

    /// The answer, or a 500 when any statement failed.
    fn answer(&self, body: &Value) -> Result<Response> {
        match self.failed.borrow().as_deref() {
            Some(e) => Response::error(format!("storage: {e}"), 500),
            None => Response::from_json(body),
        }
    }
}

// ---------------------------------------------------------------- dedup shards

#[durable_object]
pub struct DedupShard {
    state: State,
}

struct SqlSeen<'a>(Sql<'a>);

#[derive(Deserialize)]
struct SeenRow {
    fingerprint: String,
    committed: i64,
    at_ms: f64,
    owner: Option<String>,
}

impl SeenTable for SqlSeen<'_> {
    fn get(&self, key: &str) -> Option<Entry> {
        let rows: Vec<SeenRow> = self.0.rows(
            "SELECT fingerprint, committed, at_ms, owner FROM seen WHERE k = ?",
            vec![sv(key)],
        );
        rows.into_iter().next().map(|r| Entry {
            fingerprint: r.fingerprint,
            committed: r.committed != 0,
            at_ms: r.at_ms as i64,
            owner: r.owner.unwrap_or_default(),
        })
    }
    fn put(&mut self, key: &str, e: &Entry) {
        self.0.run(
            "INSERT INTO seen (k, fingerprint, committed, at_ms, owner) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (k) DO UPDATE SET fingerprint = excluded.fingerprint, \
             committed = excluded.committed, at_ms = excluded.at_ms, owner = excluded.owner",
            vec![
                sv(key),
                sv(&e.fingerprint),
                SqlStorageValue::Integer(i64::from(e.committed)),
                SqlStorageValue::Float(e.at_ms as f64),
                sv(&e.owner),
            ],
        );
    }
    fn remove(&mut self, key: &str) {
        self.0.run("DELETE FROM seen WHERE k = ?", vec![sv(key)]);
    }
}

#[derive(Deserialize)]
struct ShardRequest {
    #[serde(default)]
    claims: Vec<Claim>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    owner: String,
    now_ms: i64,
}

impl DurableObject for DedupShard {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        let _ = sql.exec(
            "CREATE TABLE IF NOT EXISTS seen (k TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, \
             committed INTEGER NOT NULL, at_ms REAL NOT NULL)",
            None,
        );
        let _ = sql.exec("CREATE INDEX IF NOT EXISTS seen_at ON seen (at_ms)", None);
        // Objects created before claims had owners: the column is added once.
        let _ = sql.exec("ALTER TABLE seen ADD COLUMN owner TEXT", None);
        DedupShard { state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        timed(req, |path, body| self.handle(path, body)).await
    }

    async fn alarm(&self) -> Result<Response> {
        let cutoff = Date::now().as_millis() as f64 - dedup::WINDOW_MS as f64;
        self.state.storage().sql().exec(
            "DELETE FROM seen WHERE at_ms < ?",
            vec![SqlStorageValue::Float(cutoff)],
        )?;
        self.state
            .storage()
            .set_alarm(std::time::Duration::from_secs(24 * 3600))
            .await?;
        Response::empty()
    }
}

impl DedupShard {
    async fn handle(&self, path: String, body: ShardRequest) -> Result<Response> {
        let sql = self.state.storage().sql();
        let mut table = SqlSeen(Sql::new(&sql));
        let answer = match path.as_str() {
            "/claim" => json!(dedup::claim_in(&mut table, &body.claims, body.now_ms)),
            "/commit" => {
                dedup::commit_in(&mut table, &body.keys, body.now_ms);
                json!(true)
            }
            "/release" => {
                dedup::release_in(&mut table, &body.keys, &body.owner);
                json!(true)
            }
            _ => return Response::error("no such dedup operation", 404),
        };
        if table.0.failed.borrow().is_some() {
            return table.0.answer(&answer);
        }
        // Expired entries are swept daily.
        let storage = self.state.storage();
        if storage.get_alarm().await?.is_none() {
            storage
                .set_alarm(std::time::Duration::from_secs(24 * 3600))
                .await?;
        }
        Response::from_json(&answer)
    }
}

/// The worker's side of the dedup shards.
pub struct DoDedup {
    pub ns: ObjectNamespace,
    pub shards: u32,
    /// Subrequests made, for the request's report.
    pub calls: super::Calls,
}

impl DoDedup {
    fn shard_of_key(&self, key: &str) -> u32 {
        dedup::shard_of_key(key, self.shards)
    }

    /// Groups items by shard and calls each shard once, all shards concurrently.
    async fn per_shard<T: Clone>(
        &self,
        items: &[T],
        key_of: impl Fn(&T) -> &str,
        op: &str,
        body: impl Fn(Vec<T>) -> Value,
    ) -> std::result::Result<Vec<(Vec<usize>, Value)>, StoreError> {
        let mut groups: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for (i, item) in items.iter().enumerate() {
            groups
                .entry(self.shard_of_key(key_of(item)))
                .or_default()
                .push(i);
        }
        let calls = groups.into_iter().map(|(shard, idx)| {
            let payload = body(idx.iter().map(|&i| items[i].clone()).collect());
            async move {
                let stub = self
                    .ns
                    .get_by_name(&format!("dedup-{shard}"))
                    .map_err(err)?;
                let answer: Value = call(&self.calls, super::Io::Dedup, &stub, op, &payload)
                    .await
                    .map_err(err)?;
                Ok::<_, StoreError>((idx, answer))
            }
        });
        futures_util::future::try_join_all(calls).await
    }
}

impl Deduplicator for DoDedup {
    async fn claim(
        &self,
        claims: &[Claim],
        now_ms: i64,
    ) -> std::result::Result<Vec<dedup::Seen>, StoreError> {
        let answers = self
            .per_shard(
                claims,
                |c| c.key.as_str(),
                "/claim",
                |cs| json!({"claims": cs, "now_ms": now_ms}),
            )
            .await?;
        let mut out = vec![dedup::Seen::New; claims.len()];
        for (idx, answer) in answers {
            let seen: Vec<dedup::Seen> = serde_json::from_value(answer)
                .map_err(|e| StoreError(format!("dedup answer: {e}")))?;
            if seen.len() != idx.len() {
                return Err(StoreError("dedup shard answered the wrong count".into()));
            }
            for (i, s) in idx.into_iter().zip(seen) {
                out[i] = s;
            }
        }
        Ok(out)
    }

    async fn commit(&self, keys: &[String], now_ms: i64) -> std::result::Result<(), StoreError> {
        self.per_shard(
            keys,
            |k| k.as_str(),
            "/commit",
            |ks| json!({"keys": ks, "now_ms": now_ms}),
        )
        .await
        .map(|_| ())
    }

    async fn release(&self, keys: &[String], owner: &str) -> std::result::Result<(), StoreError> {
        self.per_shard(
            keys,
            |k| k.as_str(),
            "/release",
            |ks| json!({"keys": ks, "owner": owner, "now_ms": 0}),
        )
        .await
        .map(|_| ())
    }
}

// ---------------------------------------------------------------- identity graph

#[durable_object]
pub struct IdentityGraph {
    state: State,
    env: Env,
    /// Whether an alarm is known to be set (checked once per instance).
    alarm_set: std::cell::Cell<bool>,
}

/// The graph on the object's SQLite: profiles, merge records and resolutions as JSON
/// documents, the identifier index, conflicts and retired cookie ids as rows.
struct SqlGraph<'a>(Sql<'a>);

#[derive(Deserialize)]
struct DataRow {
    data: String,
}

#[derive(Deserialize)]
struct ProfileIdRow {
    profile_id: String,
}

impl SqlGraph<'_> {
    fn docs<T: DeserializeOwned>(&self, sql: &str, args: Vec<SqlStorageValue>) -> Vec<T> {
        parsed(self.0.rows(sql, args))
    }

    fn run(&self, sql: &str, args: Vec<SqlStorageValue>) {
        self.0.run(sql, args)
    }

    /// Runs `head` + `(?, …), (?, …)` + `tail` over rows of `width` values, as many rows
    /// per statement as the bound-parameter limit allows.
    fn run_rows(&self, head: &str, tail: &str, width: usize, rows: Vec<Vec<SqlStorageValue>>) {
        let row = format!("({})", marks(width));
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<SqlStorageValue>> = rows.by_ref().take(MAX_PARAMS / width).collect();
            let values = vec![row.as_str(); chunk.len()].join(", ");
            self.run(&format!("{head} {values} {tail}"), chunk.concat());
        }
    }

    /// Runs `select` over `ids` one kind at a time, in statements of
    /// `kind = ? AND value IN (…)` (the primary key's order), answering each row with
    /// its kind.
    fn by_kind<T: DeserializeOwned>(&self, select: &str, ids: &[Ident]) -> Vec<(IdKind, T)> {
        let mut out = Vec::new();
        for kind in IdKind::ALL {
            let values: Vec<SqlStorageValue> = ids
                .iter()
                .filter(|i| i.kind == kind)
                .map(|i| sv(&i.value))
                .collect();
            let q = format!("{select} WHERE kind = ? AND value");
            let rows: Vec<T> = self.rows_in(&q, vec![sv(kind.as_str())], &values);
            out.extend(rows.into_iter().map(|r| (kind, r)));
        }
        out
    }

    /// Runs `head IN (…)` over `values`, as many per statement as the bound-parameter
    /// limit allows after the `fixed` ones that come first.
    fn rows_in<T: DeserializeOwned>(
        &self,
        head: &str,
        fixed: Vec<SqlStorageValue>,
        values: &[SqlStorageValue],
    ) -> Vec<T> {
        let mut out = Vec::new();
        for chunk in values.chunks(MAX_PARAMS - fixed.len()) {
            let q = format!("{head} IN ({})", marks(chunk.len()));
            out.extend(self.0.rows(&q, [fixed.clone(), chunk.to_vec()].concat()));
        }
        out
    }
}

/// The JSON documents of `data` rows (a row that does not parse is left out).
fn parsed<T: DeserializeOwned>(rows: Vec<DataRow>) -> Vec<T> {
    rows.into_iter()
        .filter_map(|r| serde_json::from_str(&r.data).ok())
        .collect()
}

/// Bound parameters per statement: Durable Object SQLite allows 100.
const MAX_PARAMS: usize = 100;

/// `?, ?, …`: `n` placeholders.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[derive(Deserialize)]
struct LinkRow {
    value: String,
    #[serde(default)]
    profile_id: String,
}

#[derive(Deserialize)]
struct KeptRow {
    k: String,
    data: String,
}

impl Graph for SqlGraph<'_> {
    fn reads_in_batches(&self) -> bool {
        true
    }
    fn profile_of(&self, id: &Ident) -> Option<String> {
        let rows: Vec<ProfileIdRow> = self.0.rows(
            "SELECT profile_id FROM idents WHERE kind = ? AND value = ?",
            vec![sv(id.kind.as_str()), sv(&id.value)],
        );
        rows.into_iter().next().map(|r| r.profile_id)
    }
    fn profile(&self, id: &str) -> Option<Profile> {
        self.docs("SELECT data FROM profiles WHERE id = ?", vec![sv(id)])
            .into_iter()
            .next()
    }
    fn save_profile(&mut self, p: Profile) {
        let data = serde_json::to_string(&p).unwrap_or_default();
        self.run(
            "INSERT INTO profiles (id, data) VALUES (?, ?) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            vec![sv(&p.id), sv(&data)],
        );
    }
    fn delete_profile(&mut self, id: &str) {
        self.run("DELETE FROM profiles WHERE id = ?", vec![sv(id)]);
    }
    fn link(&mut self, id: &Ident, profile: &str) {
        self.run(
            "INSERT INTO idents (kind, value, profile_id) VALUES (?, ?, ?) \
             ON CONFLICT (kind, value) DO UPDATE SET profile_id = excluded.profile_id",
            vec![sv(id.kind.as_str()), sv(&id.value), sv(profile)],
        );
    }
    fn unlink(&mut self, id: &Ident) {
        self.run(
            "DELETE FROM idents WHERE kind = ? AND value = ?",
            vec![sv(id.kind.as_str()), sv(&id.value)],
        );
    }
    fn save_merge(&mut self, m: &MergeRecord) {
        let data = serde_json::to_string(m).unwrap_or_default();
        self.run(
            "INSERT INTO merges (id, into_id, at_ms, data, absorbed_id) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            vec![
                sv(&m.id),
                sv(&m.into),
                SqlStorageValue::Float(m.at_ms as f64),
                sv(&data),
                sv(&m.absorbed.id),
            ],
        );
    }
    fn merges_into(&self, profile: &str) -> Vec<MergeRecord> {
        self.docs(
            "SELECT data FROM merges WHERE into_id = ? ORDER BY at_ms DESC, rowid DESC",
            vec![sv(profile)],
        )
    }
    fn delete_merges_into(&mut self, profile: &str) {
        self.run("DELETE FROM merges WHERE into_id = ?", vec![sv(profile)]);
    }
    fn save_conflict(&mut self, c: &Conflict) {
        let data = serde_json::to_string(c).unwrap_or_default();
        self.run(
            "INSERT INTO conflicts (profile_id, other_id, at_ms, data) VALUES (?, ?, ?, ?)",
            vec![
                sv(&c.profile),
                sv(c.other_profile.as_deref().unwrap_or("")),
                SqlStorageValue::Float(c.at_ms as f64),
                sv(&data),
            ],
        );
    }
    fn conflicts(&self, profile: &str) -> Vec<Conflict> {
        self.docs(
            "SELECT data FROM conflicts WHERE profile_id = ?1 OR other_id = ?1 \
             ORDER BY rowid DESC LIMIT 100",
            vec![sv(profile)],
        )
    }
    fn delete_conflicts(&mut self, profile: &str) {
        self.run(
            "DELETE FROM conflicts WHERE profile_id = ?1 OR other_id = ?1",
            vec![sv(profile)],
        );
    }
    fn merges_of(&self, profile: &str) -> Vec<MergeRecord> {
        self.docs(
            "SELECT data FROM merges WHERE absorbed_id = ?",
            vec![sv(profile)],
        )
    }
    fn delete_merge(&mut self, id: &str) {
        self.run("DELETE FROM merges WHERE id = ?", vec![sv(id)]);
    }
    fn resolution(&self, key: &str) -> Option<Resolution> {
        self.docs("SELECT data FROM resolutions WHERE k = ?", vec![sv(key)])
            .into_iter()
            .next()
    }
    fn save_resolution(&mut self, key: &str, r: &Resolution, at_ms: i64) {
        self.save_resolutions(&[(key.to_string(), r.clone(), at_ms)]);
    }
    fn delete_resolutions_of(&mut self, profile: &str) {
        // Two statements, each on an index: `OR` across them read every row.
        self.run(
            "DELETE FROM resolutions WHERE profile_id = ?",
            vec![sv(profile)],
        );
        self.run(
            "DELETE FROM resolutions WHERE absorbed IS NOT NULL AND EXISTS \
             (SELECT 1 FROM json_each(absorbed) WHERE value = ?)",
            vec![sv(profile)],
        );
    }
    fn new_profile_id(&mut self) -> String {
        random_profile_id()
    }
    fn is_retired(&self, id: &Ident) -> bool {
        let rows: Vec<ProfileIdRow> = self.0.rows(
            "SELECT value AS profile_id FROM retired WHERE kind = ? AND value = ?",
            vec![sv(id.kind.as_str()), sv(&id.value)],
        );
        !rows.is_empty()
    }
    fn profiles_of(&self, ids: &[Ident]) -> Vec<(Ident, String)> {
        let rows: Vec<(IdKind, LinkRow)> =
            self.by_kind("SELECT value, profile_id FROM idents", ids);
        rows.into_iter()
            .map(|(kind, r)| (Ident::new(kind, r.value), r.profile_id))
            .collect()
    }
    fn profiles(&self, ids: &[String]) -> Vec<Profile> {
        let ids: Vec<SqlStorageValue> = ids.iter().map(|i| sv(i)).collect();
        parsed(self.rows_in("SELECT data FROM profiles WHERE id", vec![], &ids))
    }
    fn resolutions(&self, keys: &[String]) -> Vec<(String, Resolution)> {
        let keys: Vec<SqlStorageValue> = keys.iter().map(|k| sv(k)).collect();
        let rows: Vec<KeptRow> =
            self.rows_in("SELECT k, data FROM resolutions WHERE k", vec![], &keys);
        rows.into_iter()
            .filter_map(|r| serde_json::from_str(&r.data).ok().map(|d| (r.k, d)))
            .collect()
    }
    fn retired_among(&self, ids: &[Ident]) -> Vec<Ident> {
        let rows: Vec<(IdKind, LinkRow)> = self.by_kind("SELECT value FROM retired", ids);
        rows.into_iter()
            .map(|(kind, r)| Ident::new(kind, r.value))
            .collect()
    }
    fn link_all(&mut self, links: &[(Ident, Option<String>)]) {
        let linked = links.iter().filter_map(|(i, p)| {
            let p = p.as_deref()?;
            Some(vec![sv(i.kind.as_str()), sv(&i.value), sv(p)])
        });
        self.run_rows(
            "INSERT INTO idents (kind, value, profile_id) VALUES",
            "ON CONFLICT (kind, value) DO UPDATE SET profile_id = excluded.profile_id",
            3,
            linked.collect(),
        );
        for (id, _) in links.iter().filter(|(_, p)| p.is_none()) {
            self.unlink(id);
        }
    }
    fn save_profiles(&mut self, profiles: Vec<Profile>) {
        let rows = profiles.iter().map(|p| {
            let data = serde_json::to_string(p).unwrap_or_default();
            vec![sv(&p.id), sv(&data)]
        });
        self.run_rows(
            "INSERT INTO profiles (id, data) VALUES",
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            2,
            rows.collect(),
        );
    }
    fn save_resolutions(&mut self, resolutions: &[(String, Resolution, i64)]) {
        let rows = resolutions.iter().map(|(k, r, at)| {
            let data = serde_json::to_string(r).unwrap_or_default();
            let absorbed = match r.absorbed.is_empty() {
                true => SqlStorageValue::Null,
                false => sv(&serde_json::to_string(&r.absorbed).unwrap_or_default()),
            };
            vec![
                sv(k),
                sv(&r.profile_id),
                sv(&data),
                SqlStorageValue::Float(*at as f64),
                absorbed,
            ]
        });
        self.run_rows(
            "INSERT INTO resolutions (k, profile_id, data, at_ms, absorbed) VALUES",
            "ON CONFLICT (k) DO UPDATE SET data = excluded.data, absorbed = excluded.absorbed",
            5,
            rows.collect(),
        );
    }
    fn retire(&mut self, id: &Ident, at_ms: i64) {
        self.run(
            "INSERT INTO retired (kind, value, at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (kind, value) DO NOTHING",
            vec![
                sv(id.kind.as_str()),
                sv(&id.value),
                SqlStorageValue::Float(at_ms as f64),
            ],
        );
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphRequest {
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    observations: Vec<Observation>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    merge_id: Option<String>,
    #[serde(default)]
    identifier: Option<Ident>,
    #[serde(default)]
    plan: Option<Erased>,
    #[serde(default)]
    now_ms: i64,
    /// Listing profiles: after this id, at most `limit`.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    activity: Option<identity::ActivityRequest>,
}

impl DurableObject for IdentityGraph {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in [
            "CREATE TABLE IF NOT EXISTS profiles (id TEXT PRIMARY KEY, data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS idents (kind TEXT NOT NULL, value TEXT NOT NULL, \
             profile_id TEXT NOT NULL, PRIMARY KEY (kind, value))",
            "CREATE INDEX IF NOT EXISTS idents_profile ON idents (profile_id)",
            "CREATE TABLE IF NOT EXISTS merges (id TEXT PRIMARY KEY, into_id TEXT NOT NULL, \
             at_ms REAL NOT NULL, data TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS merges_into ON merges (into_id)",
            "CREATE TABLE IF NOT EXISTS conflicts (profile_id TEXT NOT NULL, other_id TEXT NOT NULL, \
             at_ms REAL NOT NULL, data TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS conflicts_profile ON conflicts (profile_id)",
            "CREATE TABLE IF NOT EXISTS resolutions (k TEXT PRIMARY KEY, profile_id TEXT NOT NULL, \
             data TEXT NOT NULL, at_ms REAL NOT NULL, absorbed TEXT)",
            "CREATE INDEX IF NOT EXISTS resolutions_at ON resolutions (at_ms)",
            "CREATE INDEX IF NOT EXISTS resolutions_profile ON resolutions (profile_id)",
            "CREATE TABLE IF NOT EXISTS retired (kind TEXT NOT NULL, value TEXT NOT NULL, \
             at_ms REAL NOT NULL, PRIMARY KEY (kind, value))",
            // As one shard of a sharded graph (`identity_shards`): its locks, the calls
            // it keeps as a primary, the calls it applied, and what it is.
            "CREATE TABLE IF NOT EXISTS shard_locks (k TEXT PRIMARY KEY, txn TEXT NOT NULL, \
             primary_shard REAL NOT NULL, until_ms REAL NOT NULL, since_ms REAL)",
            "CREATE INDEX IF NOT EXISTS shard_locks_txn ON shard_locks (txn)",
            "CREATE INDEX IF NOT EXISTS shard_locks_until ON shard_locks (until_ms)",
            "CREATE TABLE IF NOT EXISTS shard_fates (txn TEXT PRIMARY KEY, data TEXT NOT NULL, \
             committed INTEGER NOT NULL, at_ms REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS shard_applied (txn TEXT PRIMARY KEY, at_ms REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS shard_meta (k TEXT PRIMARY KEY, data TEXT NOT NULL)",
        ] {
            if let Err(e) = sql.exec(ddl, None) {
                console_error!("identity schema: {e}");
            }
        }
        // The profiles an event's merge absorbed have a column of their own, on a partial
        // index (most resolutions absorb nothing), so an erasure finds them without
        // reading every resolution. A graph from before it gets the column, filled once
        // from the documents (the `ALTER` fails on a graph that has it).
        let mut ddl = Vec::new();
        if sql
            .exec("ALTER TABLE resolutions ADD COLUMN absorbed TEXT", None)
            .is_ok()
        {
            ddl.push(
                "UPDATE resolutions SET absorbed = json_extract(data, '$.absorbed') \
                 WHERE json_extract(data, '$.absorbed') IS NOT NULL",
            );
        }
        ddl.push(
            "CREATE INDEX IF NOT EXISTS resolutions_absorbed ON resolutions (absorbed) \
             WHERE absorbed IS NOT NULL",
        );
        // Merge records name their absorbed profile in a column of their own too, so an
        // erasure (and a shard reading a profile's records) finds them on an index, not
        // by reading every record; filled once from the documents on a graph from before.
        if sql
            .exec("ALTER TABLE merges ADD COLUMN absorbed_id TEXT", None)
            .is_ok()
        {
            ddl.push("UPDATE merges SET absorbed_id = json_extract(data, '$.absorbed.id')");
        }
        ddl.push("CREATE INDEX IF NOT EXISTS merges_absorbed ON merges (absorbed_id)");
        for q in ddl {
            if let Err(e) = sql.exec(q, None) {
                console_error!("identity schema: {e}");
            }
        }
        IdentityGraph {
            state,
            env,
            alarm_set: std::cell::Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        if req.path() == "/shard-drive" {
            return timed(req, |_, body| self.drive(body)).await;
        }
        if req.path().starts_with("/shard-") {
            return timed(req, |path, body| self.shard(path, body)).await;
        }
        timed(req, |path, body| self.handle(path, body)).await
    }

    /// As a shard: settles what outlived its lease, finishes what it committed as a
    /// primary ([`shards::sweep`]), and drops expired resolutions and old marks.
    async fn alarm(&self) -> Result<Response> {
        let now = Date::now().as_millis() as i64;
        let sql = self.state.storage().sql();
        let t = SqlLocks(SqlGraph(Sql::new(&sql)));
        let meta: Option<ShardMeta> =
            t.0.docs("SELECT data FROM shard_meta WHERE k = 'shard'", vec![])
                .into_iter()
                .next();
        let stale = t.stale_before(now);
        let due = t.committed_before(now - shards::LEASE_MS);
        if let Some(m) = meta.filter(|_| !stale.is_empty() || !due.is_empty()) {
            let ns = self.env.durable_object("IDENTITY")?;
            let client =
                super::sharded::ShardClient::new(&ns, &m.write_key, m.n, super::Meter::start());
            if let Err(e) = shards::sweep(&client, m.shard, stale, due).await {
                console_error!("identity shard sweep: {e:?}");
            }
        }
        let day = 24 * 3600 * 1000;
        for (q, at) in [
            (
                "DELETE FROM resolutions WHERE at_ms < ?",
                now - dedup::WINDOW_MS,
            ),
            // A late apply of a finished call comes within a lease or two of it.
            (
                "DELETE FROM shard_applied WHERE at_ms < ?",
                now - 3600 * 1000,
            ),
            (
                "DELETE FROM shard_fates WHERE committed = 0 AND at_ms < ?",
                now - day,
            ),
        ] {
            sql.exec(q, vec![SqlStorageValue::Float(at as f64)])?;
        }
        let open: Vec<CountRow> = t.0 .0.rows(
            "SELECT (SELECT COUNT(*) FROM shard_locks) + \
             (SELECT COUNT(*) FROM shard_fates WHERE committed = 1) AS n",
            vec![],
        );
        let busy = open.first().is_some_and(|r| r.n > 0.0);
        let next = if busy {
            2 * shards::LEASE_MS as u64
        } else {
            day as u64
        };
        self.state
            .storage()
            .set_alarm(std::time::Duration::from_millis(next))
            .await?;
        self.alarm_set.set(true);
        Response::empty()
    }
}

/// What a shard object is: kept for its alarm, which has no request to say it.
#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ShardMeta {
    write_key: String,
    shard: u32,
    n: u32,
}

/// A call to one shard of a sharded graph.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ShardCall {
    #[serde(default)]
    read: Option<shards::ReadRequest>,
    #[serde(default)]
    txn: String,
    #[serde(default)]
    ops: Vec<shards::Op>,
    #[serde(default)]
    fate: Option<shards::Fate>,
    shard: u32,
    n: u32,
    write_key: String,
}

/// A sharded call for its driver: the request's whole identity operation, run here
/// over the source's shards, this one answered in place ([`IdentityGraph::drive`]).
#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DriveCall<'a> {
    shard: u32,
    n: u32,
    write_key: Cow<'a, str>,
    op: Drive<'a>,
}

/// The identity operations of the event path, the ones a request runs over shards
/// (borrowed where the worker sends them: not copied; owned where the object reads them).
#[derive(Deserialize, serde::Serialize)]
enum Drive<'a> {
    Observe {
        limits: Limits,
        observations: Cow<'a, [Observation]>,
    },
    Activity(Cow<'a, identity::ActivityRequest>),
}

/// Why a shard operation has no answer.
pub(super) enum ShardFault {
    /// The call is malformed or names no operation (answered 400).
    BadCall(&'static str),
    /// A statement failed (answered 500: retryable).
    Storage(String),
}

impl std::fmt::Display for ShardFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardFault::BadCall(why) => f.write_str(why),
            ShardFault::Storage(e) => write!(f, "storage: {e}"),
        }
    }
}

impl IdentityGraph {
    /// One shard operation called by another worker or object.
    async fn shard(&self, path: String, body: ShardCall) -> Result<Response> {
        let meter = super::Meter::start();
        let resp = match self.shard_op(&path, &body, &meter).await {
            Ok(answer) => Response::from_json(&answer)?,
            Err(f @ ShardFault::BadCall(_)) => Response::error(f.to_string(), 400)?,
            Err(f @ ShardFault::Storage(_)) => Response::error(f.to_string(), 500)?,
        };
        with_nested(resp, &meter)
    }

    /// One shard operation ([`crate::identity_shards`]): decided there, stored here.
    /// Called through [`Self::shard`], or in place by the call's driver when it runs in
    /// this object (`/shard-drive`); `meter` counts the calls it makes to other shards.
    pub(super) async fn shard_op(
        &self,
        path: &str,
        body: &ShardCall,
        meter: &super::Calls,
    ) -> std::result::Result<Value, ShardFault> {
        let now = Date::now().as_millis() as i64;
        let sql = self.state.storage().sql();
        let mut g = SqlGraph(Sql::new(&sql));
        let mut t = SqlLocks(SqlGraph(Sql::new(&sql)));
        let refused = |e: shards::ShardError| json!({ "error": format!("{e:?}") });
        let answer = match path {
            "/shard-read" => match &body.read {
                Some(r) => json!(shards::read(&g, &mut t, r, now)),
                None => return Err(ShardFault::BadCall("no read")),
            },
            "/shard-apply" => match shards::apply(&mut g, &mut t, &body.txn, &body.ops, now) {
                Ok(()) => json!({"ok": true}),
                Err(e) => refused(e),
            },
            "/shard-apply-alone" => match shards::apply_alone(&mut g, &mut t, &body.txn, &body.ops)
            {
                Ok(()) => json!({"ok": true}),
                Err(e) => refused(e),
            },
            "/shard-commit" => {
                let Some(fate) = &body.fate else {
                    return Err(ShardFault::BadCall("no fate"));
                };
                match shards::commit_primary(&mut g, &mut t, &body.txn, body.shard, fate, now) {
                    Ok(()) => {
                        self.finish(body, fate, meter).await;
                        json!({"ok": true})
                    }
                    Err(e) => refused(e),
                }
            }
            "/shard-recover" => json!(shards::recover(&mut t, &body.txn, now)),
            "/shard-release" => {
                t.unlock(&body.txn);
                json!({"ok": true})
            }
            "/shard-forget" => {
                t.forget(&body.txn);
                json!({"ok": true})
            }
            _ => return Err(ShardFault::BadCall("no such shard operation")),
        };
        if let Some(e) = t.0 .0.failed.borrow_mut().take() {
            g.0.failed.borrow_mut().get_or_insert(e);
        }
        if g.0.failed.borrow().is_none() && !self.alarm_set.get() {
            self.keep_alarm(&g, body)
                .await
                .map_err(|e| ShardFault::Storage(e.to_string()))?;
        }
        let failed = g.0.failed.borrow_mut().take();
        match failed {
            Some(e) => Err(ShardFault::Storage(e)),
            None => Ok(answer),
        }
    }

    /// Drives one sharded call from this shard, its primary: the request makes one
    /// subrequest, and this object's own calls (to the other shards only: this one is
    /// answered in place) are counted in its answer (`X-Object-Subrequests`).
    async fn drive(&self, body: DriveCall<'static>) -> Result<Response> {
        let started = Date::now().as_millis();
        let ns = self.env.durable_object("IDENTITY")?;
        let meter = super::Meter::start();
        let client = super::sharded::ShardClient::new(
            &ns,
            &body.write_key,
            body.n,
            std::rc::Rc::clone(&meter),
        )
        .in_place(body.shard, self)
        .with_budget(subrequest_limit(&self.env));
        let answer = match &body.op {
            Drive::Observe {
                limits,
                observations,
            } => client.observe(limits, observations).await.map(|o| json!(o)),
            Drive::Activity(req) => client
                .activity(Some(body.shard), req)
                .await
                .map(|p| json!(p)),
        };
        let mut resp = match answer {
            Ok(v) => Response::from_json(&v)?,
            Err(e) => Response::error(format!("identity shards: {e:?}"), 503)?,
        };
        // The driving alone: this handler's time but for its waits and its own shard's
        // operations (`timed` counts both in the object's time).
        let elapsed = Date::now().as_millis().saturating_sub(started) as f64;
        let driving = elapsed - meter.in_flight() - client.in_place_ms();
        resp.headers_mut()
            .set("X-Object-Driver-Ms", &(driving.max(0.0) as u64).to_string())?;
        with_nested(resp, &meter)
    }

    /// Notes what this object is and sets its alarm, once per instance.
    async fn keep_alarm(&self, g: &SqlGraph<'_>, body: &ShardCall) -> Result<()> {
        self.keep_meta(g, body)?;
        let storage = self.state.storage();
        if storage.get_alarm().await?.is_none() {
            storage
                .set_alarm(std::time::Duration::from_millis(
                    2 * shards::LEASE_MS as u64,
                ))
                .await?;
        }
        self.alarm_set.set(true);
        Ok(())
    }

    /// The rest of a commit, from here: the other shards' parts and the forgetting are
    /// this object's subrequests, not the request's. What fails is left to the alarm's
    /// sweep (or to the next call that meets the locks).
    async fn finish(&self, body: &ShardCall, fate: &shards::Fate, meter: &super::Calls) {
        let shards::Fate::Committed { changes, locked } = fate else {
            return;
        };
        let Ok(ns) = self.env.durable_object("IDENTITY") else {
            return;
        };
        let client = super::sharded::ShardClient::new(
            &ns,
            &body.write_key,
            body.n,
            std::rc::Rc::clone(meter),
        );
        if let Err(e) = shards::finish(&client, &body.txn, body.shard, changes, locked).await {
            console_error!("identity shard commit, finished later: {e:?}");
        }
    }

    fn keep_meta(&self, g: &SqlGraph, body: &ShardCall) -> Result<()> {
        let meta = ShardMeta {
            write_key: body.write_key.clone(),
            shard: body.shard,
            n: body.n,
        };
        g.run(
            "INSERT OR REPLACE INTO shard_meta (k, data) VALUES ('shard', ?)",
            vec![sv(&serde_json::to_string(&meta)?)],
        );
        Ok(())
    }
}

/// A shard's locks, fates and applied marks, as rows.
struct SqlLocks<'a>(SqlGraph<'a>);

#[derive(Deserialize)]
struct LockRow {
    k: String,
    txn: String,
    primary_shard: f64,
    until_ms: f64,
    #[serde(default)]
    since_ms: Option<f64>,
}

#[derive(Deserialize)]
struct CountRow {
    n: f64,
}

#[derive(Deserialize)]
struct FateRow {
    txn: String,
    data: String,
}

impl shards::Locks for SqlLocks<'_> {
    fn locks(&self, keys: &[String]) -> Vec<(String, shards::Lock)> {
        let keys: Vec<SqlStorageValue> = keys.iter().map(|k| sv(k)).collect();
        let rows: Vec<LockRow> = self.0.rows_in(
            "SELECT k, txn, primary_shard, until_ms, since_ms FROM shard_locks WHERE k",
            vec![],
            &keys,
        );
        rows.into_iter()
            .map(|r| {
                let l = shards::Lock {
                    txn: r.txn,
                    primary: r.primary_shard as u32,
                    until_ms: r.until_ms as i64,
                    since_ms: r.since_ms.unwrap_or_default() as i64,
                };
                (r.k, l)
            })
            .collect()
    }
    fn put_locks(&mut self, keys: &[String], l: &shards::Lock) {
        let row = |k: &String| {
            vec![
                sv(k),
                sv(&l.txn),
                SqlStorageValue::Float(f64::from(l.primary)),
                SqlStorageValue::Float(l.until_ms as f64),
                SqlStorageValue::Float(l.since_ms as f64),
            ]
        };
        self.0.run_rows(
            "INSERT INTO shard_locks (k, txn, primary_shard, until_ms, since_ms) VALUES",
            "ON CONFLICT (k) DO UPDATE SET txn = excluded.txn, \
             primary_shard = excluded.primary_shard, until_ms = excluded.until_ms, \
             since_ms = excluded.since_ms",
            5,
            keys.iter().map(row).collect(),
        );
    }
    fn unlock(&mut self, txn: &str) {
        self.0
            .run("DELETE FROM shard_locks WHERE txn = ?", vec![sv(txn)]);
    }
    fn fate(&self, txn: &str) -> Option<shards::Fate> {
        self.0
            .docs("SELECT data FROM shard_fates WHERE txn = ?", vec![sv(txn)])
            .into_iter()
            .next()
    }
    fn put_fate(&mut self, txn: &str, f: &shards::Fate, at_ms: i64) {
        let committed = matches!(f, shards::Fate::Committed { .. });
        self.0.run(
            "INSERT OR REPLACE INTO shard_fates (txn, data, committed, at_ms) VALUES (?, ?, ?, ?)",
            vec![
                sv(txn),
                sv(&serde_json::to_string(f).unwrap_or_default()),
                SqlStorageValue::Float(if committed { 1.0 } else { 0.0 }),
                SqlStorageValue::Float(at_ms as f64),
            ],
        );
    }
    fn forget(&mut self, txn: &str) {
        self.0
            .run("DELETE FROM shard_fates WHERE txn = ?", vec![sv(txn)]);
    }
    fn committed_before(&self, at_ms: i64) -> Vec<(String, shards::Fate)> {
        let rows: Vec<FateRow> = self.0 .0.rows(
            "SELECT txn, data FROM shard_fates WHERE committed = 1 AND at_ms < ?",
            vec![SqlStorageValue::Float(at_ms as f64)],
        );
        let fate = |r: FateRow| Some((r.txn, serde_json::from_str(&r.data).ok()?));
        rows.into_iter().filter_map(fate).collect()
    }
    fn stale_before(&self, at_ms: i64) -> Vec<(String, u32)> {
        let rows: Vec<LockRow> = self.0 .0.rows(
            "SELECT '' AS k, txn, MIN(primary_shard) AS primary_shard, MAX(until_ms) AS until_ms \
             FROM shard_locks WHERE until_ms < ? GROUP BY txn",
            vec![SqlStorageValue::Float(at_ms as f64)],
        );
        rows.into_iter()
            .map(|r| (r.txn, r.primary_shard as u32))
            .collect()
    }
    fn applied(&self, txn: &str) -> bool {
        let rows: Vec<FateRow> = self.0 .0.rows(
            "SELECT txn, '' AS data FROM shard_applied WHERE txn = ?",
            vec![sv(txn)],
        );
        !rows.is_empty()
    }
    fn mark_applied(&mut self, txn: &str, at_ms: i64) {
        self.0.run(
            "INSERT OR IGNORE INTO shard_applied (txn, at_ms) VALUES (?, ?)",
            vec![sv(txn), SqlStorageValue::Float(at_ms as f64)],
        );
    }
}

impl IdentityGraph {
    async fn handle(&self, path: String, body: GraphRequest) -> Result<Response> {
        let sql = self.state.storage().sql();
        let mut g = SqlGraph(Sql::new(&sql));
        let profile = body.profile.as_deref().unwrap_or_default();
        let not_found = |m: String| Response::from_json(&json!({"error": m}));
        match path.as_str() {
            "/observe" => {
                let resolutions = identity::observe_all(&mut g, &body.observations, &body.limits);
                let profiles = identity::wanted_profiles(&g, &body.observations, &resolutions);
                // Resolutions are kept as long as dedup remembers an event.
                let cutoff = body.observations.first().map_or(0, |o| o.at_ms) - dedup::WINDOW_MS;
                g.run(
                    "DELETE FROM resolutions WHERE at_ms < ?",
                    vec![SqlStorageValue::Float(cutoff as f64)],
                );
                g.0.answer(&json!(identity::Observed {
                    resolutions,
                    profiles
                }))
            }
            "/activity" => {
                let req = body.activity.unwrap_or_default();
                let profiles = identity::activity(&mut g, &req);
                g.0.answer(&json!({ "profiles": profiles }))
            }
            "/erasure-plan" => {
                g.0.answer(&json!({"plan": identity::erasure_plan(&g, profile)}))
            }
            "/erase-graph" => {
                if let Some(plan) = &body.plan {
                    identity::erase(&mut g, plan);
                }
                g.0.answer(&json!({"ok": true}))
            }
            "/retire" => {
                if let Some(id) = &body.identifier {
                    g.retire(id, body.now_ms);
                }
                g.0.answer(&json!({"ok": true}))
            }
            "/profile" => {
                let id = match (&body.identifier, profile) {
                    (Some(i), _) => g.profile_of(i),
                    (None, p) => Some(p.to_string()),
                };
                let Some(p) = id.and_then(|id| g.profile(&id)) else {
                    return not_found("no such profile".into());
                };
                let merges = g.merges_into(&p.id);
                let conflicts = g.conflicts(&p.id);
                Response::from_json(
                    &json!({"profile": p, "merges": merges, "conflicts": conflicts}),
                )
            }
            "/profiles" => {
                let limit = body.limit.unwrap_or(100).clamp(1, 1000);
                let profiles: Vec<Profile> = g.docs(
                    "SELECT data FROM profiles WHERE id > ?1 ORDER BY id LIMIT ?2",
                    vec![
                        sv(body.after.as_deref().unwrap_or_default()),
                        SqlStorageValue::Float(limit as f64),
                    ],
                );
                g.0.answer(&json!({ "profiles": profiles }))
            }
            "/unmerge" => {
                match identity::unmerge(&mut g, profile, body.merge_id.as_deref(), body.now_ms) {
                    Ok(u) => Response::from_json(&json!({"unmerged": u})),
                    Err(m) => not_found(m),
                }
            }

            _ => Response::error("no such identity operation", 404),
        }
    }
}

/// The worker's side of the identity graphs: one object per write key, or
/// `IDENTITY_SHARDS` of them ([`super::sharded`]).
pub struct DoIdentity {
    pub ns: ObjectNamespace,
    /// Subrequests made, for the request's report.
    pub calls: super::Calls,
    /// Objects per source's graph (1: one object, the default).
    pub shards: u32,
    /// The subrequests one invocation may make (`SUBREQUEST_LIMIT`).
    pub budget: u32,
    /// The source's graph under the other shard counts it has used
    /// ([`DoIdentity::with_earlier`]).
    pub earlier: Vec<u32>,
}

/// Objects per source's identity graph (`IDENTITY_SHARDS`; 1, the default: one object).
pub fn identity_shards(env: &Env) -> u32 {
    env.var("IDENTITY_SHARDS")
        .ok()
        .and_then(|v| v.to_string().parse().ok())
        .unwrap_or(1u32)
        .clamp(1, 256)
}

/// The subrequests one invocation may make on the account's Workers plan
/// (`SUBREQUEST_LIMIT`: 50 on the free plan, the default; 1,000 on paid plans): the
/// budget of a sharded identity call ([`shards::Call::budget`]).
fn subrequest_limit(env: &Env) -> u32 {
    env.var("SUBREQUEST_LIMIT")
        .ok()
        .and_then(|v| v.to_string().parse().ok())
        .unwrap_or(shards::FREE_PLAN_SUBREQUESTS)
        .clamp(10, 10_000)
}

/// An identity object's answer (or a field of it) read as `T`.
fn identity_answer<T: DeserializeOwned>(v: Value) -> std::result::Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError(format!("identity answer: {e}")))
}

/// A sharded call's failure, as the pipeline's storage error (a retryable 503).
fn shard_err(e: shards::ShardError) -> StoreError {
    StoreError(format!("identity shards: {e:?}"))
}

impl DoIdentity {
    /// The client, metering its calls apart from any request's.
    pub fn of(env: &Env) -> Result<Self> {
        Self::metered(env, super::Meter::start())
    }

    /// The client, counting its calls in `calls`.
    pub fn metered(env: &Env, calls: super::Calls) -> Result<Self> {
        Ok(DoIdentity {
            ns: env.durable_object("IDENTITY")?,
            calls,
            shards: identity_shards(env),
            budget: subrequest_limit(env),
            earlier: Vec::new(),
        })
    }

    /// This client with the other layouts a source's graph has had (`identity_layouts`):
    /// an erasure visits them too.
    pub fn with_earlier(mut self, earlier: Vec<u32>) -> Self {
        self.earlier = earlier.into_iter().filter(|n| *n != self.shards).collect();
        self
    }

    /// The same objects under another layout.
    pub fn layout(&self, shards: u32) -> DoIdentity {
        DoIdentity {
            ns: self.ns.clone(),
            calls: std::rc::Rc::clone(&self.calls),
            shards,
            budget: self.budget,
            earlier: Vec::new(),
        }
    }

    /// The profile `id` links to in this layout's graph.
    async fn profile_of(
        &self,
        write_key: &str,
        id: &Ident,
    ) -> std::result::Result<Option<String>, StoreError> {
        let answer = self
            .request(write_key, "/profile", &json!({ "identifier": id }))
            .await
            .map_err(err)?;
        Ok(answer["profile"]["id"].as_str().map(str::to_string))
    }

    /// What erasing `profile` covers in this layout's graph alone.
    async fn plan_here(
        &self,
        write_key: &str,
        profile: &str,
    ) -> std::result::Result<Option<Erased>, StoreError> {
        if let Some(c) = self.sharded(write_key) {
            return c.erasure_plan(profile).await.map_err(shard_err);
        }
        let answer = self
            .request(write_key, "/erasure-plan", &json!({"profile": profile}))
            .await
            .map_err(err)?;
        identity_answer(answer["plan"].clone())
    }

    async fn erase_here(
        &self,
        write_key: &str,
        plan: &Erased,
    ) -> std::result::Result<(), StoreError> {
        if let Some(c) = self.sharded(write_key) {
            return c.erase(plan).await.map_err(shard_err);
        }
        self.request(write_key, "/erase-graph", &json!({"plan": plan}))
            .await
            .map(|_| ())
            .map_err(err)
    }

    /// Hands a sharded call of the event path to its primary shard, which drives it:
    /// one subrequest for the request, whatever the shard count.
    async fn drive<T: DeserializeOwned>(
        &self,
        write_key: &str,
        primary: u32,
        op: Drive<'_>,
    ) -> std::result::Result<T, StoreError> {
        let n = self.shards;
        let name = super::sharded::object_name(write_key, primary, n);
        let stub = self.ns.get_by_name(&name).map_err(err)?;
        let body = json!(DriveCall {
            shard: primary,
            n,
            write_key: write_key.into(),
            op,
        });
        // Read as a `Value` first, as the other calls' answers are: the same instances
        // of serde_json's code.
        let answer: Value = call(
            &self.calls,
            super::Io::Identity,
            &stub,
            "/shard-drive",
            &body,
        )
        .await
        .map_err(err)?;
        identity_answer(answer)
    }

    fn sharded<'a>(&'a self, write_key: &'a str) -> Option<super::sharded::ShardClient<'a>> {
        let calls = std::rc::Rc::clone(&self.calls);
        (self.shards > 1).then(|| {
            super::sharded::ShardClient::new(&self.ns, write_key, self.shards, calls)
                .with_budget(self.budget)
        })
    }

    pub async fn request(&self, write_key: &str, op: &str, body: &Value) -> Result<Value> {
        if let Some(c) = self.sharded(write_key) {
            return c
                .request(op, body)
                .await
                .map_err(|e| Error::RustError(shard_err(e).0));
        }
        let stub = self.ns.get_by_name(&format!("identity-{write_key}"))?;
        call(&self.calls, super::Io::Identity, &stub, op, body).await
    }
}

impl IdentityService for DoIdentity {
    async fn observe(
        &self,
        write_key: &str,
        limits: &Limits,
        observations: &[Observation],
    ) -> std::result::Result<identity::Observed, StoreError> {
        if self.shards > 1 {
            let primary = shards::primary_of(observations, self.shards).unwrap_or(0);
            let op = Drive::Observe {
                limits: *limits,
                observations: observations.into(),
            };
            return self.drive(write_key, primary, op).await;
        }
        let answer = self
            .request(
                write_key,
                "/observe",
                &json!({"limits": limits, "observations": observations}),
            )
            .await
            .map_err(err)?;
        identity_answer(answer)
    }

    async fn activity(
        &self,
        write_key: &str,
        req: &identity::ActivityRequest,
    ) -> std::result::Result<Vec<Profile>, StoreError> {
        if self.shards > 1 {
            let first = req.profiles.first().map(String::as_str).unwrap_or_default();
            let primary = shards::shard_of_profile(first, self.shards);
            return self
                .drive(write_key, primary, Drive::Activity(Cow::Borrowed(req)))
                .await;
        }
        let answer = self
            .request(write_key, "/activity", &json!({ "activity": req }))
            .await
            .map_err(err)?;
        identity_answer(answer["profiles"].clone())
    }

    /// The plan in the graph that holds `profile`, with what the source's other graphs
    /// (current and earlier layouts) link to its identifiers ([`Erased::absorb`]).
    async fn erasure_plan(
        &self,
        write_key: &str,
        profile: &str,
    ) -> std::result::Result<Option<Erased>, StoreError> {
        // The profile in the current graph, else in an earlier one (a person not seen
        // since the count changed); then what every other graph links to its identifiers.
        let mut found = None;
        for n in std::iter::once(self.shards).chain(self.earlier.iter().copied()) {
            if let Some(plan) = self.layout(n).plan_here(write_key, profile).await? {
                found = Some((n, plan));
                break;
            }
        }
        let Some((home, mut plan)) = found else {
            return Ok(None);
        };
        let others = std::iter::once(self.shards).chain(self.earlier.iter().copied());
        for n in others.filter(|n| *n != home).collect::<Vec<_>>() {
            let other = self.layout(n);
            let mut seen: Vec<String> = Vec::new();
            for id in plan.identifiers.clone() {
                let Some(p) = other.profile_of(write_key, &id).await? else {
                    continue;
                };
                if seen.contains(&p) {
                    continue;
                }
                if let Some(found) = other.plan_here(write_key, &p).await? {
                    plan.absorb(found);
                }
                seen.push(p);
            }
        }
        Ok(Some(plan))
    }

    /// Erases the plan in the current graph and in those of earlier layouts (each
    /// erases what it holds of it).
    async fn erase(&self, write_key: &str, plan: &Erased) -> std::result::Result<(), StoreError> {
        self.erase_here(write_key, plan).await?;
        for n in &self.earlier {
            self.layout(*n).erase_here(write_key, plan).await?;
        }
        Ok(())
    }

    async fn retire(
        &self,
        write_key: &str,
        id: &Ident,
        at_ms: i64,
    ) -> std::result::Result<(), StoreError> {
        if let Some(c) = self.sharded(write_key) {
            return c.retire(id, at_ms).await.map_err(shard_err);
        }
        self.request(
            write_key,
            "/retire",
            &json!({"identifier": id, "nowMs": at_ms}),
        )
        .await
        .map(|_| ())
        .map_err(err)
    }
}

/// Identifier kinds as admin query parameters name them.
pub fn ident_from_query(name: &str, value: &str) -> Option<Ident> {
    IdKind::from_name(name).map(|k| Ident::new(k, value))
}
