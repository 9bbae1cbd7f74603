//! Engine throughput at chunk sizes 16 B..64 KiB with the default detector set, printed as a
//! ratio to a plain Aho-Corasick + memchr pass over the same bytes, measured in the same run.
//! A second baseline does the same pass with Teddy (SIMD literal search, as the engine uses for
//! its literals where available); it is the stricter ceiling.
//!
//! `cargo run -p cordon-redact --release --example bench [-- MiB]` (`CHUNKS=4096,65536` to pick sizes)

use aho_corasick::AhoCorasick;
use cordon_redact::{Direction, Engine, StreamRedactor};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// Deterministic LLM-like text: prose, some numbers and code, PII about every 2 KiB.
pub fn corpus(bytes: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "answer",
        "request",
        "policy",
        "stream",
        "token",
        "value",
        "server",
        "mesh",
        "Envoy",
        "returns",
        "and",
        "of",
        "to",
        "in",
        "is",
        "for",
        "with",
        "that",
        "configuration",
        "latency",
        "42",
        "2024",
        "v1.2.3",
        "user",
        "data",
        "response",
        "function",
        "error",
        "(see",
        "below)",
        "e.g.",
        "x = 3;",
        "ok:",
        "step",
        "1.",
        "2.",
        "items:",
        "-",
        "résumé",
        "naïve",
    ];
    const PII: &[&str] = &[
        "john.doe@example.com",
        "4242 4242 4242 4242",
        "+1 415 555 2671",
        "192.168.10.20",
        "AKIAIOSFODNN7EXAMPLE",
        "DE89 3704 0044 0532 0130 00",
        "123-45-6789",
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    ];
    let mut out = Vec::with_capacity(bytes + 64);
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut since = 0;
    while out.len() < bytes {
        let r = next();
        if since > 2048 {
            out.extend_from_slice(PII[(r % PII.len() as u64) as usize].as_bytes());
            since = 0;
        } else {
            let w = WORDS[(r % WORDS.len() as u64) as usize];
            out.extend_from_slice(w.as_bytes());
            since += w.len();
        }
        out.push(if r % 13 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(bytes);
    out
}

/// MB/s of the plain pass: literal hits, `:` and digits counted, the bytes copied out (as the
/// engine copies them).
fn baseline(data: &[u8], chunk: usize, literals: impl Fn(&[u8]) -> usize) -> f64 {
    let t = Instant::now();
    let mut hits = 0usize;
    for c in data.chunks(chunk) {
        hits += literals(c);
        hits += memchr::memchr_iter(b':', c).count();
        hits += c.iter().filter(|b| b.is_ascii_digit()).count();
        black_box(c.to_vec());
    }
    black_box(hits);
    data.len() as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    let data = corpus(mib << 20);
    // `PHONE_REGIONS=US,GB,DE` adds those regions' national phone formats (`phone_regions`).
    let regions: Vec<String> =
        std::env::var("PHONE_REGIONS").map(|v| v.split(',').map(|r| r.trim().to_string()).collect()).unwrap_or_default();
    let cfg = cordon_redact::RedactConfig { phone_regions: regions.clone(), ..Default::default() };
    let engine = Arc::new(Engine::new(&cfg, b"bench-key").expect("configuration compiles"));
    if !regions.is_empty() {
        println!("phone_regions {regions:?}");
    }
    let lits = ["@", "AKIA", "sk-", "eyJ", "ghp_", "xox", "glpat-", "-----BEGIN"];
    let ac = AhoCorasick::new(lits).expect("ac");
    let teddy = aho_corasick::packed::Config::new().only_teddy(true).builder().extend(lits).build();
    let runs = 5;
    println!("corpus {} MiB, default detector set ({} detectors), median of {runs} runs", mib, engine.detector_names().len());
    println!("detection window {} normalised bytes, worst-case holdback bound {} bytes", engine.window(), engine.holdback_bound());
    println!("{:>8} {:>12} {:>12} {:>8} {:>12} {:>8}", "chunk", "engine MB/s", "AC base MB/s", "ratio", "Teddy MB/s", "ratio");
    let sizes: Vec<usize> = match std::env::var("CHUNKS") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![16, 64, 256, 1024, 4096, 16384, 65536],
    };
    for &chunk in &sizes {
        let mut eng = Vec::new();
        let mut base = Vec::new();
        let mut tbase = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let mut s = StreamRedactor::new(engine.clone(), Direction::Response);
            let mut n = 0usize;
            for c in data.chunks(chunk) {
                n += s.push(c).bytes.len();
            }
            n += s.finish().bytes.len();
            black_box(n);
            eng.push(data.len() as f64 / t.elapsed().as_secs_f64() / 1e6);

            base.push(baseline(&data, chunk, |c| ac.find_iter(c).count()));
            if let Some(t) = &teddy {
                tbase.push(baseline(&data, chunk, |c| t.find_iter(c).count()));
            }
        }
        let (e, b) = (median(eng), median(base));
        let teddy_cols = if tbase.is_empty() {
            format!("{:>12} {:>8}", "n/a", "")
        } else {
            let t = median(tbase);
            format!("{t:>12.1} {:>8.3}", e / t)
        };
        println!("{:>8} {:>12.1} {:>12.1} {:>8.3} {teddy_cols}", chunk, e, b, e / b);
    }
}
