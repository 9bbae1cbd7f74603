//! Throughput of each built-in detector alone (4 KiB chunks), to find the expensive ones.
//!
//! `cargo run -p cordon-redact --release --example per_detector`

use cordon_redact::detect::builtin::BUILTINS;
use cordon_redact::{Direction, Engine, RedactConfig, Rule, StreamRedactor};
use std::sync::Arc;
use std::time::Instant;

#[path = "bench.rs"]
#[allow(dead_code)]
mod bench_corpus;

fn main() {
    let data = bench_corpus::corpus(8 << 20);
    for only in std::iter::once("none").chain(BUILTINS.iter().map(|b| b.name)) {
        let mut cfg = RedactConfig::default();
        for b in BUILTINS {
            if b.name != only {
                cfg.detectors.insert(b.name.into(), Rule { enabled: false, ..Rule::default() });
            }
        }
        let e = Arc::new(Engine::new(&cfg, b"k").expect("config"));
        let t = Instant::now();
        let mut s = StreamRedactor::new(e, Direction::Response);
        let mut n = 0;
        for c in data.chunks(4096) {
            n += s.push(c).bytes.len();
        }
        n += s.finish().bytes.len();
        println!("{only:>16} {:>8.1} MB/s ({n})", data.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
}
