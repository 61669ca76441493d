//! Throughput of the collector's core pipeline on one core: 20-event batches through
//! every step (parse, PII scan, consent, shape, plan, enrichment, dedup, identity,
//! serialization) against in-memory services, next to a bare serde_json parse and
//! serialize of the same batches. Run by `scripts/bench.sh pipeline`.

use edge_collector::dedup::MemoryDedup;
use edge_collector::enrich::EdgeInfo;
use edge_collector::identity::MemoryIdentity;
use edge_collector::pipeline::{ingest, Endpoint, IngestRequest, RateLimiter, Services};
use edge_collector::sources::Sources;
use edge_collector::store::{
    ConsentRecord, Counts, EventStore, Insert, QuarantinedEvent, StoreError, StoredEvent,
};
use serde_json::{json, Value};
use std::cell::Cell;
use std::time::Instant;

/// A store that only counts: the benchmark measures the pipeline, not a database.
#[derive(Default)]
struct Counting {
    stored: Cell<usize>,
}

impl EventStore for Counting {
    async fn insert_events(
        &self,
        e: &[StoredEvent],
        _: &[(String, String)],
    ) -> Result<Vec<Insert>, StoreError> {
        self.stored.set(self.stored.get() + e.len());
        Ok(vec![Insert::Stored; e.len()])
    }
    async fn quarantine(&self, _: &[QuarantinedEvent]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn append_consent(&self, _: &[ConsentRecord]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn add_counts(&self, _: &Counts) -> Result<(), StoreError> {
        Ok(())
    }
    // The bench's source names no conversions, so the pipeline never asks for credit.
    async fn recredit(
        &self,
        _: &str,
        _: &edge_collector::attribution::AttributionConfig,
        _: &[String],
    ) -> Result<usize, StoreError> {
        Ok(0)
    }
    // Nor segments or destinations, so activation never runs.
    async fn profile_facts(
        &self,
        _: &str,
        _: &[String],
        _: &[String],
        _: &[String],
    ) -> Result<edge_collector::activation::ProfileFacts, StoreError> {
        Ok(Default::default())
    }
    async fn save_activation(
        &self,
        _: &str,
        _: &edge_collector::activation::Outcome,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn queue_jobs(&self, _: &[edge_collector::destinations::Job]) -> Result<(), StoreError> {
        Ok(())
    }
}

fn batch(n: usize, b: usize) -> Vec<u8> {
    let events: Vec<Value> = (0..20)
        .map(|i| {
            let anon = format!("anon-{:06}", (b * 7 + i) % 5000);
            let ctx = json!({
                "consent": {"categoryPreferences": {"analytics": true, "marketing": true, "personalization": true}},
                "page": {"path": "/products/guji", "url": "https://shop.example/products/guji?utm_source=News&utm_medium=Email",
                         "title": "Ethiopia Guji", "referrer": "https://www.google.com/", "search": "?utm_source=News"},
                "library": {"name": "sightline.js", "version": "0.1.0"},
                "locale": "en-GB", "timezone": "Europe/London",
                "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "screen": {"width": 1920, "height": 1080}
            });
            let id = format!("m-{n}-{b}-{i}");
            match i % 4 {
                0 => json!({"type": "page", "messageId": id, "anonymousId": anon, "name": "Product",
                            "properties": {"path": "/products/guji"}, "timestamp": "2026-11-23T22:19:04.000Z", "context": ctx}),
                1 => json!({"type": "track", "messageId": id, "anonymousId": anon, "event": "Product Added",
                            "properties": {"product_id": "ETH-GUJI", "name": "Ethiopia Guji", "price": 14.5, "currency": "EUR", "quantity": 1},
                            "timestamp": "2026-11-23T22:19:04.100Z", "context": ctx}),
                2 => json!({"type": "track", "messageId": id, "anonymousId": anon, "event": "Order Completed",
                            "properties": {"order_id": format!("o-{b}"), "total": 29.0, "currency": "EUR",
                                           "products": [{"product_id": "ETH-GUJI", "quantity": 2}]},
                            "timestamp": "2026-11-23T22:19:04.200Z", "context": ctx}),
                _ => json!({"type": "identify", "messageId": id, "anonymousId": anon,
                            "traits": {"email_sha256": tracking_plan::identifiers::sha256_hex(&format!("{anon}@example.com")), "plan": "pro"},
                            "timestamp": "2026-11-23T22:19:04.300Z", "context": ctx}),
            }
        })
        .collect();
    serde_json::to_vec(
        &json!({"batch": events, "writeKey": "wk", "sentAt": "2026-11-23T22:19:05.000Z"}),
    )
    .unwrap()
}

fn main() {
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let plan = include_str!("../../example-site/tracking-plan.json");
    let sources = Sources::from_json(&format!(
        r#"{{"wk":{{"name":"bench","origins":["https://shop.example"],"plan":{plan}}}}}"#
    ))
    .unwrap();
    let bodies: Vec<Vec<u8>> = (0..batches).map(|b| batch(0, b)).collect();
    let events = batches * 20;
    // Rounds alternate the two loops, each round with fresh in-memory services (the
    // same events again would be duplicates); the fastest round of each is kept, so a
    // busy moment of the machine does not decide the ratio.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // PROFILE=1 runs the pipeline alone, for a profiler's view of it (no ratio).
    let profile = std::env::var_os("PROFILE").is_some();
    let (mut base, mut pipeline) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        if !profile {
            base = base.min(bare(&bodies));
        }
        pipeline = pipeline.min(run_pipeline(&bodies, &sources, events));
    }
    println!("events\t{events} ({rounds} rounds, fastest of each)");
    println!(
        "serde_json parse+serialize\t{:.0} events/s",
        events as f64 / base
    );
    println!(
        "sightline pipeline\t{:.0} events/s",
        events as f64 / pipeline
    );
    println!("ratio (pipeline / bare serde)\t{:.2}", base / pipeline);
}

/// Parses each batch and serializes each message, nothing else: seconds.
#[inline(never)]
fn bare(bodies: &[Vec<u8>]) -> f64 {
    let start = Instant::now();
    let mut bytes = 0usize;
    for body in bodies {
        let v: tracking_plan::Batch = serde_json::from_slice(body).unwrap();
        for m in &v.batch {
            bytes += serde_json::to_string(m).unwrap().len();
        }
    }
    assert!(bytes > 0);
    start.elapsed().as_secs_f64()
}

/// Every batch through the pipeline against fresh in-memory services: seconds.
#[inline(never)]
fn run_pipeline(bodies: &[Vec<u8>], sources: &Sources, events: usize) -> f64 {
    let (store, dedup, identity, limiter) = (
        Counting::default(),
        MemoryDedup::default(),
        MemoryIdentity::default(),
        RateLimiter::default(),
    );
    let svc = Services {
        store: &store,
        dedup: &dedup,
        identity: &identity,
        limiter: &limiter,
    };
    let start = Instant::now();
    for body in bodies {
        let req = IngestRequest {
            endpoint: Endpoint::Batch,
            body,
            authorization: None,
            write_key_header: None,
            url_write_key: None,
            now_ms: 1_795_472_345_000,
            request_id: "bench",
            edge: EdgeInfo {
                origin: Some("https://shop.example"),
                own_origin: "https://shop.example",
                ip: Some("203.0.113.77"),
                country: Some("GB"),
                ..EdgeInfo::default()
            },
        };
        let r = pollster::block_on(ingest(&svc, sources, &req)).unwrap();
        assert_eq!(
            r.accepted,
            20,
            "{:?}",
            r.results
                .iter()
                .find(|v| v.status != edge_collector::pipeline::Status::Accepted)
        );
    }
    let took = start.elapsed().as_secs_f64();
    assert_eq!(store.stored.get(), events);
    took
}
