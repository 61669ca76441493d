//! The native test rig shared by the pipeline tests: the in-memory store, dedup and
//! identity, and one call that runs a request through the pipeline.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use edge_collector::dedup::MemoryDedup;
use edge_collector::enrich::EdgeInfo;
use edge_collector::error::Error;
use edge_collector::identity::{Graph, MemoryIdentity, Profile};
use edge_collector::pipeline::{ingest, Endpoint, IngestRequest, RateLimiter, Report, Services};
use edge_collector::sources::Sources;
use edge_collector::store::MemoryStore;
use serde_json::Value;
use std::cell::Cell;

/// The test clock: 2026-11-23T22:19:05Z.
pub const NOW: i64 = 1_795_472_345_000;

pub struct Rig {
    pub store: MemoryStore,
    pub dedup: MemoryDedup,
    pub identity: MemoryIdentity,
    pub limiter: RateLimiter,
    pub sources: Sources,
    requests: Cell<u64>,
}

impl Rig {
    pub fn new(sources: Sources) -> Self {
        Rig {
            store: MemoryStore::default(),
            dedup: MemoryDedup::default(),
            identity: MemoryIdentity::default(),
            limiter: RateLimiter::default(),
            sources,
            requests: Cell::new(0),
        }
    }

    /// Runs one request (each with a request id of its own) through the pipeline.
    pub fn request(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        auth: Option<&str>,
        edge: EdgeInfo<'_>,
        now_ms: i64,
    ) -> Result<Report, Error> {
        let id = format!("req-{}", self.requests.replace(self.requests.get() + 1));
        let req = IngestRequest {
            endpoint,
            body,
            authorization: auth,
            write_key_header: None,
            url_write_key: None,
            now_ms,
            edge,
            request_id: &id,
        };
        let svc = Services {
            store: &self.store,
            dedup: &self.dedup,
            identity: &self.identity,
            limiter: &self.limiter,
        };
        pollster::block_on(ingest(&svc, &self.sources, &req))
    }

    /// A JSON batch at [`NOW`].
    pub fn send(&self, body: &Value, edge: EdgeInfo<'_>) -> Result<Report, Error> {
        let bytes = serde_json::to_vec(body).unwrap();
        self.request(Endpoint::Batch, &bytes, None, edge, NOW)
    }

    /// The profile a stored event was resolved to, by its messageId.
    pub fn profile_of(&self, message_id: &str) -> Option<String> {
        let events = self.store.events.borrow();
        let e = events.iter().find(|e| e.message_id == message_id)?;
        e.profile_id.clone()
    }

    pub fn graph_profile(&self, key: &str, id: &str) -> Option<Profile> {
        self.identity.graphs.borrow().get(key)?.profile(id)
    }

    /// Everything kept, as one text: event rows and payloads, quarantine rows, consent
    /// rows, the identity graphs and the dedup keys.
    pub fn at_rest(&self) -> String {
        let mut out = String::new();
        for e in self.store.events.borrow().iter() {
            out += &format!("{e:?}\n");
        }
        for q in self.store.quarantined.borrow().iter() {
            out += &format!("{q:?}\n");
        }
        for c in self.store.consent.borrow().iter() {
            out += &format!("{c:?}\n");
        }
        out += &format!("{:?}\n", self.identity.graphs.borrow());
        for (k, e) in self.dedup.table.borrow().iter() {
            out += &format!("{k} {e:?}\n");
        }
        out
    }
}

/// A property test's configuration: `n` cases, or `PROPTEST_CASES` when it is set
/// (`scripts/fuzz.sh`). `ProptestConfig::with_cases` alone overrides the variable.
pub fn cases(n: u32) -> proptest::test_runner::Config {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    proptest::test_runner::Config::with_cases(n)
}
