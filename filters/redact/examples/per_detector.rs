//! Throughput of each built-in detector alone (4 KiB chunks), to find the expensive ones.
//!
//! `cargo run -p cordon-redact --release --example per_detector`

use cordon_redact::detect::builtin::BUILTINS;
use cordon_redact::{Direction, Engine, RedactConfig, Rule, StreamRedactor};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let text = "The model returns 42 items in 2024 (see v1.2.3) and the user john.doe@example.com asked: ok? résumé naïve x = 3; ";
    let data: Vec<u8> = text.as_bytes().iter().copied().cycle().take(4 << 20).collect();
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
