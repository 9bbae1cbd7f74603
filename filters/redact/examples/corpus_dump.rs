//! Dump the generated labelled corpus as JSON lines (for comparing other tools on exactly the
//! same samples), or time one-shot `Engine::redact` over it.
//!
//! ```text
//! cargo run -p cordon-redact --release --example corpus_dump -- [--n 1000] [--seed 0xC0D0] [--out PATH]
//! cargo run -p cordon-redact --release --example corpus_dump -- --time [--in PATH | --n N --seed S]
//!                                                                [--set default|compared] [--runs 5]
//! ```
//!
//! Dump: one line per sample of `corpus::generate(n, seed)` (n positives + n hard negatives per
//! built-in detector), in generation order:
//!
//! ```json
//! {"i":0,"detector":"email","positive":true,"text":"…",
//!  "label":{"start":8,"end":27},
//!  "cordon":[{"detector":"email","start":8,"end":27}]}
//! ```
//!
//! Offsets are Unicode code points (Python `str` indices), end exclusive. `label` is the span of
//! the generated value inside its context sentence (positives only; `null` for hard negatives).
//! `cordon` lists the default set's detections with their spans, recovered from the redacted
//! output (`[LABEL]` placeholders aligned back onto the input).
//!
//! Time: median of `--runs` passes of `Engine::redact(Direction::Response, text)` over every
//! sample (one call per sample, as the filter does per string), after one warm-up pass; prints
//! one JSON object on stdout. `--set compared` enables only `email card iban ssn phone ipv4 ipv6`.

use cordon_redact::corpus::{CONTEXTS, generate};
use cordon_redact::{Direction, Engine, RedactConfig};
use serde_json::{Value, json};
use std::hint::black_box;
use std::io::{BufRead, BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

/// The built-ins that have a Presidio counterpart (`--set compared`).
const COMPARED: &[&str] = &["email", "card", "iban", "ssn", "phone", "ipv4", "ipv6"];

struct Args {
    n: usize,
    seed: u64,
    out: Option<String>,
    input: Option<String>,
    time: bool,
    set: String,
    runs: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!("corpus_dump: {msg}");
    eprintln!("usage: corpus_dump [--n N] [--seed S] [--out PATH]");
    eprintln!("       corpus_dump --time [--in PATH | --n N --seed S] [--set default|compared] [--runs R]");
    std::process::exit(2)
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn args() -> Args {
    let mut a = Args { n: 1000, seed: 0xC0D0, out: None, input: None, time: false, set: "default".into(), runs: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--n" => a.n = parse_u64(&val()).unwrap_or_else(|| usage("--n: not a number")) as usize,
            "--seed" => a.seed = parse_u64(&val()).unwrap_or_else(|| usage("--seed: not a number")),
            "--out" => a.out = Some(val()),
            "--in" => a.input = Some(val()),
            "--set" => a.set = val(),
            "--runs" => a.runs = parse_u64(&val()).unwrap_or_else(|| usage("--runs: not a number")).max(1) as usize,
            "--time" => a.time = true,
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if !matches!(a.set.as_str(), "default" | "compared") {
        usage("--set is default or compared");
    }
    a
}

/// Code-point offset of byte offset `b` in `s`.
fn chars_at(s: &str, b: usize) -> usize {
    s[..b].chars().count()
}

/// Byte span of the generated value: the longest context template whose prefix and suffix fit.
fn label_span(text: &str) -> Option<(usize, usize)> {
    let mut best: Option<(usize, (usize, usize))> = None;
    for ctx in CONTEXTS {
        let (pre, suf) = ctx.split_once("{}")?;
        if text.len() > pre.len() + suf.len() && text.starts_with(pre) && text.ends_with(suf) {
            let fit = pre.len() + suf.len();
            if best.is_none_or(|(f, _)| fit > f) {
                best = Some((fit, (pre.len(), text.len() - suf.len())));
            }
        }
    }
    best.map(|(_, span)| span)
}

/// Split redacted output into the verbatim segments between `[LABEL]` placeholders.
fn segments(out: &[u8]) -> Vec<&[u8]> {
    let mut segs = Vec::new();
    let mut rest = out;
    loop {
        match rest.iter().position(|&b| b == b'[') {
            None => {
                segs.push(rest);
                return segs;
            }
            Some(open) => {
                segs.push(&rest[..open]);
                let close = rest[open..].iter().position(|&b| b == b']').map(|c| open + c + 1).unwrap_or(rest.len());
                rest = &rest[close..];
            }
        }
    }
}

/// Find byte spans `m[i]` such that `input = segs[0] m[0] segs[1] m[1] … segs[k]`, every match
/// non-empty. Returns the first decomposition (shortest earlier matches) and how many exist (≤ 2).
fn align(input: &[u8], segs: &[&[u8]]) -> (Option<Vec<(usize, usize)>>, usize) {
    /// Match `i` starts at `start`; `segs[i + 1]` follows it.
    fn go(input: &[u8], segs: &[&[u8]], i: usize, start: usize, acc: &mut Vec<(usize, usize)>, found: &mut Vec<Vec<(usize, usize)>>) {
        let next = segs[i + 1];
        if i + 2 == segs.len() {
            // The last segment is the input's suffix.
            if input.len() > start + next.len() && input.ends_with(next) {
                acc.push((start, input.len() - next.len()));
                found.push(acc.clone());
                acc.pop();
            }
            return;
        }
        for end in start + 1..=input.len() {
            if found.len() >= 2 {
                return;
            }
            if input[end..].starts_with(next) {
                acc.push((start, end));
                go(input, segs, i + 1, end + next.len(), acc, found);
                acc.pop();
            }
        }
    }
    if segs.len() < 2 || !input.starts_with(segs[0]) {
        return (None, 0);
    }
    let mut found = Vec::new();
    go(input, segs, 0, segs[0].len(), &mut Vec::new(), &mut found);
    let n = found.len();
    (found.into_iter().next(), n)
}

fn dump(a: &Args) {
    let engine = Arc::new(Engine::default_set(b"corpus").expect("default set"));
    let samples = generate(a.n, a.seed);
    let sink: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::fs::File::create(p).unwrap_or_else(|e| usage(&format!("--out {p}: {e}")))),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::new(sink);
    let (mut ambiguous, mut unaligned) = (0usize, 0usize);
    for (i, s) in samples.iter().enumerate() {
        assert!(!s.text.contains('['), "sample {i} contains '[': placeholders could not be told apart");
        let label = if s.positive {
            let (b0, b1) = label_span(&s.text).unwrap_or_else(|| panic!("sample {i}: no context template fits {:?}", s.text));
            json!({"start": chars_at(&s.text, b0), "end": chars_at(&s.text, b1)})
        } else {
            Value::Null
        };
        let out = engine.redact(Direction::Response, s.text.as_bytes());
        let segs = segments(&out.bytes);
        let mut cordon = Vec::new();
        if segs.len() != out.detections.len() + 1 {
            unaligned += 1;
        } else if !out.detections.is_empty() {
            let (spans, n) = align(s.text.as_bytes(), &segs);
            ambiguous += usize::from(n > 1);
            match spans {
                None => unaligned += 1,
                Some(spans) => {
                    for (d, (b0, b1)) in out.detections.iter().zip(spans) {
                        cordon.push(json!({"detector": &*d.detector, "start": chars_at(&s.text, b0), "end": chars_at(&s.text, b1)}));
                    }
                }
            }
        }
        let line = json!({"i": i, "detector": s.label, "positive": s.positive, "text": s.text, "label": label, "cordon": cordon});
        writeln!(w, "{line}").expect("write");
    }
    w.flush().expect("flush");
    eprintln!(
        "corpus_dump: {} samples (n={}, seed={:#x}); spans: {ambiguous} ambiguous (first taken), {unaligned} not aligned",
        samples.len(),
        a.n,
        a.seed
    );
    if unaligned > 0 {
        std::process::exit(1);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v[v.len() / 2]
}

fn time(a: &Args) {
    let texts: Vec<String> = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p).unwrap_or_else(|e| usage(&format!("--in {p}: {e}")));
            std::io::BufReader::new(f)
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(&l.expect("read")).expect("JSON line");
                    v["text"].as_str().expect("text field").to_string()
                })
                .collect()
        }
        None => generate(a.n, a.seed).into_iter().map(|s| s.text).collect(),
    };
    let engine = if a.set == "compared" {
        let names = Engine::default_set(b"corpus").expect("default set").detector_names();
        let off: serde_json::Map<String, Value> =
            names.iter().filter(|n| !COMPARED.contains(&&***n)).map(|n| (n.to_string(), json!({"enabled": false}))).collect();
        let cfg = RedactConfig::from_json(&json!({ "detectors": off }).to_string()).expect("config");
        Engine::new(&cfg, b"corpus").expect("compared set")
    } else {
        Engine::default_set(b"corpus").expect("default set")
    };
    let engine = Arc::new(engine);
    let bytes: usize = texts.iter().map(String::len).sum();
    let pass = || {
        let t = Instant::now();
        let mut n = 0usize;
        for s in &texts {
            let o = engine.redact(Direction::Response, black_box(s.as_bytes()));
            n += o.bytes.len() + o.detections.len();
        }
        black_box(n);
        t.elapsed().as_secs_f64()
    };
    pass();
    let runs: Vec<f64> = (0..a.runs).map(|_| pass()).collect();
    let med = median(runs.clone());
    let names: Vec<String> = engine.detector_names().iter().map(|n| n.to_string()).collect();
    let out = json!({
        "set": a.set, "detectors": names, "samples": texts.len(), "bytes": bytes,
        "runs_s": runs, "median_s": med, "mb_s": bytes as f64 / med / 1e6,
        "us_per_sample": med * 1e6 / texts.len() as f64,
    });
    println!("{out}");
}

fn main() {
    let a = args();
    if a.time { time(&a) } else { dump(&a) }
}
