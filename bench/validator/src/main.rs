//! Native throughput of the validator compiled in (see lib.rs): validates a mix of valid
//! and invalid events on one core and prints events per second.
use std::time::Instant;

fn events() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let e = match i % 4 {
            0 => format!(r#"{{"type":"track","messageId":"m{i}","anonymousId":"a","event":"Product Added","properties":{{"product_id":"ETH-GUJI","name":"Ethiopia Guji","price":14.5,"currency":"EUR","quantity":{}}}}}"#, 1 + i % 9),
            1 => format!(r#"{{"type":"track","messageId":"m{i}","anonymousId":"a","event":"Product Added","properties":{{"product_id":"bad id","price":-1,"currency":"JPY","extra":true}}}}"#),
            2 => format!(r#"{{"type":"track","messageId":"m{i}","anonymousId":"a","event":"Order Completed","properties":{{"order_id":"o{i}","total":27.4,"currency":"EUR","products":[{{"product_id":"ETH-GUJI","quantity":2}},{{"product_id":"COL-HUILA","quantity":1}}],"completed_at":"2026-11-23T10:00:00Z"}}}}"#),
            _ => format!(r#"{{"type":"track","messageId":"m{i}","anonymousId":"a","event":"Order Completed","properties":{{"order_id":"","total":"27.4","products":[]}}}}"#),
        };
        out.push(e);
    }
    out
}

fn main() {
    let variant = if cfg!(any(feature = "compact", feature = "compact-regex-lite")) {
        "sightline"
    } else if cfg!(feature = "jsonschema") {
        "jsonschema"
    } else {
        "parse-only"
    };
    let evs = events();
    let mut checksum = 0u64;
    for e in &evs {
        checksum += u64::from(validator_bench::count_violations(e)); // warm-up, compiles the plan
    }
    let rounds = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        for e in &evs {
            checksum = checksum.wrapping_add(u64::from(validator_bench::count_violations(e)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (rounds * evs.len()) as f64;
    println!("{variant}\t{:.0} events/s\t(checksum {checksum})", n / secs);
}
