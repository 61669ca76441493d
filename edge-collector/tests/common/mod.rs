//! The native test rig shared by the pipeline tests: the in-memory store, dedup and
//! identity, and one call that runs a request through the pipeline.

use edge_collector::dedup::MemoryDedup;
use edge_collector::enrich::EdgeInfo;
use edge_collector::error::Error;
use edge_collector::identity::MemoryIdentity;
use edge_collector::pipeline::{ingest, Endpoint, IngestRequest, RateLimiter, Report, Services};
use edge_collector::sources::Sources;
use edge_collector::store::MemoryStore;
use std::cell::Cell;

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
}
