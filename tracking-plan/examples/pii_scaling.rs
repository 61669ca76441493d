//! How the PII walker's cost grows with its input: adversarial strings of 7 KB, 70 KB
//! and 700 KB (a thousand, ten thousand, a hundred thousand emails, then a phone),
//! scrubbed on one core. Linear means each tenfold input takes about ten times longer.
//! Run by `scripts/bench.sh pii`.

fn adversarial(n: usize) -> String {
    let mut s = String::with_capacity(n * 7 + 16);
    for _ in 0..n {
        s.push_str("a@b.co ");
    }
    s.push_str("+1 650 555 0142");
    s
}

fn main() {
    let mut last: Option<f64> = None;
    println!("input bytes\tms per scrub\tgrowth");
    for n in [1_000usize, 10_000, 100_000] {
        let s = adversarial(n);
        let rounds = 5;
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(tracking_plan::pii::scrub_text(
                std::hint::black_box(&s),
                None,
            ));
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
        let growth = last.map_or("-".to_string(), |l| format!("{:.1}x", ms / l));
        println!("{}\t{ms:.2}\t{growth}", s.len());
        last = Some(ms);
    }
}
