//! The identity graph over `IDENTITY_SHARDS` objects per source: the calls to each
//! shard ([`ShardClient`]), and each identity operation run as one call over them
//! ([`crate::identity_shards::transact`]). Decides nothing: the rules are
//! `identity`'s, the protocol `identity_shards`'.

use super::objects::{random_uuid, IdentityGraph};
use super::{Calls, Io};
use crate::identity::{self, Erased, Graph, Ident, Limits, Observation, Observed, Profile};
use crate::identity_shards::{
    self as shards, Call, Fate, Op, ReadAnswer, ReadRequest, Reads, ShardError, Shards, Snapshot,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::*;

/// The object of shard `shard` of `n` of a source's graph. The count is in the name: a
/// graph over another count is another graph (see the README, "Identity at scale").
pub fn object_name(write_key: &str, shard: u32, n: u32) -> String {
    format!("identity-{write_key}-{shard}of{n}")
}

/// One source's shards, as the worker, a shard's alarm or a call's driver calls them.
pub struct ShardClient<'a> {
    ns: &'a ObjectNamespace,
    write_key: &'a str,
    n: u32,
    calls: Calls,
    /// The shard whose object runs this client, answered in place: an object's call to
    /// itself would be a subrequest for nothing.
    here: Option<(u32, &'a IdentityGraph)>,
    /// Time spent in `here`'s operations, but for their own waits (ms).
    here_ms: std::cell::Cell<f64>,
    /// The subrequests one invocation may make ([`Call::budget`]).
    budget: u32,
}

impl<'a> ShardClient<'a> {
    pub fn new(ns: &'a ObjectNamespace, write_key: &'a str, n: u32, calls: Calls) -> Self {
        ShardClient {
            ns,
            write_key,
            n,
            calls,
            here: None,
            here_ms: std::cell::Cell::new(0.0),
            budget: shards::FREE_PLAN_SUBREQUESTS,
        }
    }

    /// This client with the plan's subrequests per invocation (`SUBREQUEST_LIMIT`).
    pub fn with_budget(mut self, budget: u32) -> Self {
        self.budget = budget;
        self
    }

    /// Time spent answering this object's own shard in place (ms), its waits left out.
    pub fn in_place_ms(&self) -> f64 {
        self.here_ms.get()
    }

    /// This client running in shard `shard`'s own object.
    pub fn in_place(mut self, shard: u32, object: &'a IdentityGraph) -> Self {
        self.here = Some((shard, object));
        self
    }

    async fn post<T: DeserializeOwned>(
        &self,
        shard: u32,
        path: &str,
        mut body: Value,
    ) -> std::result::Result<T, ShardError> {
        let unavailable = |e: Error| ShardError::Unavailable(e.to_string());
        body["shard"] = json!(shard);
        body["n"] = json!(self.n);
        body["writeKey"] = json!(self.write_key);
        let answer: Value = match self.here {
            Some((here, object)) if here == shard => {
                // Read from its text, as the object reads a call sent to it: the same
                // instances of serde_json's code (from the `Value`: 9 KB more wasm).
                let call = serde_json::from_str(&body.to_string())
                    .map_err(|e| ShardError::Unavailable(e.to_string()))?;
                let (from, waited) = (Date::now().as_millis(), self.calls.in_flight());
                // Boxed: a commit in place finishes through a client of this type.
                let answer = Box::pin(object.shard_op(path, &call, &self.calls)).await;
                let took = Date::now().as_millis().saturating_sub(from) as f64;
                let own = took - (self.calls.in_flight() - waited);
                self.here_ms.set(self.here_ms.get() + own);
                answer.map_err(|f| ShardError::Unavailable(f.to_string()))?
            }
            _ => {
                let name = object_name(self.write_key, shard, self.n);
                let stub = self.ns.get_by_name(&name).map_err(unavailable)?;
                super::objects::call(&self.calls, Io::Identity, &stub, path, &body)
                    .await
                    .map_err(unavailable)?
            }
        };
        if answer.get("error").and_then(Value::as_str) == Some("Aborted") {
            return Err(ShardError::Aborted);
        }
        serde_json::from_value(answer).map_err(|e| ShardError::Unavailable(e.to_string()))
    }

    async fn done(
        &self,
        shard: u32,
        path: &str,
        body: Value,
    ) -> std::result::Result<(), ShardError> {
        self.post::<Value>(shard, path, body).await.map(|_| ())
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::new(self.n, Box::new(super::objects::random_profile_id))
    }

    /// Runs `rules` as one call over this source's shards (`lock` false: a view).
    pub async fn run<T>(
        &self,
        lock: bool,
        primary: Option<u32>,
        first: Reads,
        rules: impl FnMut(&mut Snapshot) -> T,
    ) -> std::result::Result<T, ShardError> {
        self.run_on(&mut self.snapshot(), lock, primary, first, rules)
            .await
    }

    async fn run_on<T>(
        &self,
        snap: &mut Snapshot,
        lock: bool,
        primary: Option<u32>,
        first: Reads,
        rules: impl FnMut(&mut Snapshot) -> T,
    ) -> std::result::Result<T, ShardError> {
        let call = Call {
            txn: random_uuid(),
            since_ms: Date::now().as_millis() as i64,
            n: self.n,
            lock,
            primary,
            budget: self.budget,
        };
        shards::transact(self, &call, first, snap, rules).await
    }

    pub async fn observe(
        &self,
        limits: &Limits,
        observations: &[Observation],
    ) -> std::result::Result<Observed, ShardError> {
        let mut snap = self.snapshot();
        let (primary, first) = shards::observe_start(&mut snap, observations);
        self.run_on(&mut snap, true, primary, first, |g| {
            let resolutions = shards::observe_each(g, observations, limits);
            let profiles = identity::wanted_profiles(g, observations, &resolutions);
            Observed {
                resolutions,
                profiles,
            }
        })
        .await
    }

    /// The admin and personalization reads and the unmerge, answered as the single
    /// object answers them (`/profile`, `/profiles`, `/unmerge`).
    pub async fn request(&self, op: &str, body: &Value) -> std::result::Result<Value, ShardError> {
        let profile = body["profile"].as_str().unwrap_or_default().to_string();
        match op {
            "/profile" => {
                let ident: Option<Ident> = serde_json::from_value(body["identifier"].clone()).ok();
                let view = self
                    .run(false, None, Reads::default(), |g| {
                        let id = match &ident {
                            Some(i) => g.profile_of(i),
                            None => Some(profile.clone()),
                        };
                        let p = id.and_then(|id| g.profile(&id))?;
                        Some((g.merges_into(&p.id), g.conflicts(&p.id), p))
                    })
                    .await?;
                Ok(match view {
                    Some((merges, conflicts, p)) => {
                        json!({"profile": p, "merges": merges, "conflicts": conflicts})
                    }
                    None => json!({"error": "no such profile"}),
                })
            }
            "/profiles" => self.list(body).await,
            "/unmerge" => {
                let merge_id = body["mergeId"].as_str().map(str::to_string);
                let now = body["nowMs"].as_i64().unwrap_or_default();
                let done = self
                    .run(true, None, Reads::default(), |g| {
                        identity::unmerge(g, &profile, merge_id.as_deref(), now)
                    })
                    .await?;
                Ok(match done {
                    Ok(u) => json!({"unmerged": u}),
                    Err(m) => json!({"error": m}),
                })
            }
            _ => Err(ShardError::Unavailable(format!(
                "no identity operation {op}"
            ))),
        }
    }

    /// Profiles by id after a cursor: each shard's first page, merged in id order.
    async fn list(&self, body: &Value) -> std::result::Result<Value, ShardError> {
        let limit = body["limit"].as_u64().unwrap_or(100).clamp(1, 1000) as usize;
        let mut all: Vec<Profile> = Vec::new();
        for shard in 0..self.n {
            let answer: Value = self.post(shard, "/profiles", body.clone()).await?;
            let page: Vec<Profile> =
                serde_json::from_value(answer["profiles"].clone()).unwrap_or_default();
            all.extend(page);
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.truncate(limit);
        Ok(json!({ "profiles": all }))
    }

    pub async fn activity(
        &self,
        primary: Option<u32>,
        req: &identity::ActivityRequest,
    ) -> std::result::Result<Vec<Profile>, ShardError> {
        self.run(true, primary, Reads::default(), |g| {
            identity::activity(g, req)
        })
        .await
    }

    pub async fn erasure_plan(
        &self,
        profile: &str,
    ) -> std::result::Result<Option<Erased>, ShardError> {
        self.run(false, None, Reads::default(), |g| {
            identity::erasure_plan(g, profile)
        })
        .await
    }

    pub async fn erase(&self, plan: &Erased) -> std::result::Result<(), ShardError> {
        self.run(true, None, Reads::default(), |g| identity::erase(g, plan))
            .await
    }

    pub async fn retire(&self, id: &Ident, at_ms: i64) -> std::result::Result<(), ShardError> {
        let first = Reads {
            idents: vec![id.clone()],
            ..Reads::default()
        };
        self.run(true, None, first, |g| g.retire(id, at_ms)).await
    }
}

impl Shards for ShardClient<'_> {
    async fn read(
        &self,
        shard: u32,
        req: &ReadRequest,
    ) -> std::result::Result<ReadAnswer, ShardError> {
        self.post(shard, "/shard-read", json!({ "read": req }))
            .await
    }
    async fn apply(
        &self,
        shard: u32,
        txn: &str,
        ops: &[Op],
    ) -> std::result::Result<(), ShardError> {
        self.done(shard, "/shard-apply", json!({"txn": txn, "ops": ops}))
            .await
    }
    async fn apply_alone(
        &self,
        shard: u32,
        txn: &str,
        ops: &[Op],
    ) -> std::result::Result<(), ShardError> {
        self.done(shard, "/shard-apply-alone", json!({"txn": txn, "ops": ops}))
            .await
    }
    async fn commit_primary(
        &self,
        shard: u32,
        txn: &str,
        fate: &Fate,
    ) -> std::result::Result<(), ShardError> {
        self.done(shard, "/shard-commit", json!({"txn": txn, "fate": fate}))
            .await
    }
    async fn recover(&self, shard: u32, txn: &str) -> std::result::Result<Fate, ShardError> {
        self.post(shard, "/shard-recover", json!({ "txn": txn }))
            .await
    }
    async fn release(&self, shard: u32, txn: &str) -> std::result::Result<(), ShardError> {
        self.done(shard, "/shard-release", json!({ "txn": txn }))
            .await
    }
    fn primary_finishes(&self) -> bool {
        true
    }
    /// This invocation's subrequests so far (the calls answered in place are none).
    fn made(&self) -> u32 {
        self.calls.calls()
    }
    async fn pause(&self, attempt: u32) {
        let ms = shards::backoff_ms(attempt, js_sys::Math::random());
        let pause = Delay::from(std::time::Duration::from_millis(ms));
        self.calls.wait(pause).await;
    }
    async fn forget(&self, shard: u32, txn: &str) -> std::result::Result<(), ShardError> {
        self.done(shard, "/shard-forget", json!({ "txn": txn }))
            .await
    }
}
