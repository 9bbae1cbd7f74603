//! A labelled corpus made by our own deterministic generator: positives and hard negatives per
//! built-in detector, embedded in varied contexts, and the precision/recall evaluation.
//!
//! `cargo run -p cordon-redact --example corpus_report` prints the figures; a test holds the
//! structured detectors to recall ≥ 0.99 and precision ≥ 0.98.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Direction;
use crate::engine::Engine;

/// One labelled sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The text.
    pub text: String,
    /// The detector it is a positive or hard negative for.
    pub label: &'static str,
    /// Positive (the detector must fire) or hard negative (no detector may fire).
    pub positive: bool,
}

/// Deterministic xorshift generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// A random element.
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    /// `n` characters from `alphabet`.
    pub fn chars(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| a[self.below(a.len())] as char).collect()
    }
    /// `lo + below(span)` characters from `alphabet`.
    pub fn charsr(&mut self, alphabet: &str, lo: usize, span: usize) -> String {
        let n = lo + self.below(span);
        self.chars(alphabet, n)
    }
    /// `n` decimal digits.
    pub fn digits(&mut self, n: usize) -> String {
        self.chars("0123456789", n)
    }
}

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALNUM: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Sentences each generated value is placed in (`{}` is the value); a positive's label is the
/// text between a template's prefix and suffix.
pub const CONTEXTS: &[&str] = &[
    "{}",
    "Please contact {} for details.",
    "value: {}\n",
    "({})",
    "\"{}\"",
    "The field was set to {}, then saved.",
    "- {}\n- next item",
    "résumé: {} — merci",
    "{}.",
    "log line 42 user={} status=ok",
];

fn luhn_digit(body: &str) -> char {
    let mut sum = 0;
    for (i, c) in body.bytes().rev().enumerate() {
        let mut v = u32::from(c - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    for (k, &n) in sizes.iter().enumerate() {
        if i >= s.len() {
            break;
        }
        if k > 0 {
            out.push_str(sep);
        }
        let e = (i + n).min(s.len());
        out.push_str(&s[i..e]);
        i = e;
    }
    if i < s.len() {
        out.push_str(sep);
        out.push_str(&s[i..]);
    }
    out
}

fn card(r: &mut Rng) -> String {
    let (prefix, len) = match r.below(4) {
        0 => ("4".to_string(), 16),
        1 => (format!("5{}", 1 + r.below(5)), 16),
        2 => (r.pick(&["34", "37"]).to_string(), 15),
        _ => ("6011".to_string(), 16),
    };
    let body = format!("{prefix}{}", r.digits(len - 1 - prefix.len()));
    format!("{body}{}", luhn_digit(&body))
}

fn format_card(r: &mut Rng, c: &str) -> String {
    let sizes: &[usize] = if c.len() == 15 { &[4, 6, 5] } else { &[4, 4, 4, 4] };
    match r.below(3) {
        0 => c.to_string(),
        1 => group(c, sizes, " "),
        _ => group(c, sizes, "-"),
    }
}

fn iban_check(country: &str, bban: &str) -> String {
    let s = format!("{bban}{country}00");
    let mut rem: u32 = 0;
    for c in s.bytes() {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            rem = (rem * 100 + u32::from(c - b'A' + 10)) % 97;
        }
    }
    format!("{:02}", 98 - rem)
}

fn iban(r: &mut Rng) -> String {
    let (cc, bban) = match r.below(4) {
        0 => ("DE", r.digits(18)),
        1 => ("GB", format!("{}{}", r.chars(UPPER, 4), r.digits(14))),
        2 => ("FR", format!("{}{}{}", r.digits(10), r.chars("0123456789ABCDEFGHIJ", 11), r.digits(2))),
        _ => ("NL", format!("{}{}", r.chars(UPPER, 4), r.digits(10))),
    };
    format!("{cc}{}{bban}", iban_check(cc, &bban))
}

fn ssn(r: &mut Rng, sep: &str) -> String {
    let area = loop {
        let a = 1 + r.below(899);
        if a != 666 {
            break a;
        }
    };
    format!("{area:03}{sep}{:02}{sep}{:04}", 1 + r.below(99), 1 + r.below(9999))
}

fn ipv6(r: &mut Rng) -> String {
    let mut segs = [0u16; 8];
    for s in segs.iter_mut() {
        *s = if r.below(3) == 0 { 0 } else { (r.next_u64() & 0xffff) as u16 };
    }
    segs[0] = 0x2001;
    segs[1] = 0x0db8;
    let a = std::net::Ipv6Addr::new(segs[0], segs[1], segs[2], segs[3], segs[4], segs[5], segs[6], segs[7]);
    if r.below(2) == 0 { a.to_string() } else { segs.iter().map(|s| format!("{s:04x}")).collect::<Vec<_>>().join(":") }
}

fn jwt(r: &mut Rng) -> String {
    let enc = |s: &str| -> String {
        // base64url without padding
        let t = B64URL.as_bytes();
        let b = s.as_bytes();
        let mut out = String::new();
        for ch in b.chunks(3) {
            let n = (u32::from(ch[0]) << 16) | (u32::from(*ch.get(1).unwrap_or(&0)) << 8) | u32::from(*ch.get(2).unwrap_or(&0));
            for k in 0..=ch.len() {
                out.push(t[((n >> (18 - 6 * k)) & 63) as usize] as char);
            }
        }
        out
    };
    let header = enc(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = enc(&format!(r#"{{"sub":"{}","iat":{}}}"#, r.digits(8), r.digits(10)));
    format!("{header}.{payload}.{}", r.chars(B64URL, 43))
}

/// Generate `n` positives and `n` hard negatives per built-in detector.
pub fn generate(n: usize, seed: u64) -> Vec<Sample> {
    let mut r = Rng::new(seed);
    let mut out = Vec::new();
    let mut push = |r: &mut Rng, label: &'static str, positive: bool, value: String| {
        let ctx = r.pick(CONTEXTS);
        out.push(Sample { text: ctx.replace("{}", &value), label, positive });
    };
    for _ in 0..n {
        // e-mail
        let local = format!("{}{}{}", r.charsr(LOWER, 1, 8), r.pick(&["", ".", "_", "+", "-"]), r.charsr(ALNUM, 1, 6));
        let domain = format!("{}.{}", r.charsr(LOWER, 2, 10), r.pick(&["com", "org", "io", "co.uk", "de", "example", "dev"]));
        let v = if r.below(5) == 0 { format!("{local}@{domain}").to_uppercase() } else { format!("{local}@{domain}") };
        push(&mut r, "email", true, v);
        let v = match r.below(5) {
            0 => format!("{local}@localhost"),
            1 => format!("{local} at {domain}"),
            2 => format!("@{local}"),
            3 => format!("{local}@{}", r.chars(LOWER, 5)),
            _ => format!("{local}@{}.c", r.chars(LOWER, 5)),
        };
        push(&mut r, "email", false, v);

        // card
        let c = card(&mut r);
        let v = format_card(&mut r, &c);
        push(&mut r, "card", true, v);
        let v = match r.below(3) {
            0 => {
                let last = (c.as_bytes()[c.len() - 1] - b'0' + 1 + r.below(9) as u8) % 10;
                format!("{}{}", &c[..c.len() - 1], last)
            }
            1 => format!("1{}", r.digits(15)),
            // Compact only: grouped, `4242 4242 4242 4242 12345` reads as a card and a number.
            _ => format!("{}{}", c, r.digits(5)),
        };
        let v = if v.len() > 19 { v } else { format_card(&mut r, &v) };
        push(&mut r, "card", false, v);

        // IBAN
        let ib = iban(&mut r);
        let v = if r.below(2) == 0 { ib.clone() } else { group(&ib, &[4; 8], " ") };
        push(&mut r, "iban", true, v);
        let bad = format!("{}{:02}{}", &ib[..2], (ib[2..4].parse::<u32>().unwrap_or(0) + 1 + r.below(90) as u32) % 100, &ib[4..]);
        push(&mut r, "iban", false, bad);

        // SSN
        let sep = r.pick(&["-", " "]);
        let v = ssn(&mut r, sep);
        push(&mut r, "ssn", true, v);
        let v = match r.below(5) {
            0 => format!("000-{:02}-{:04}", 1 + r.below(98), 1 + r.below(9998)),
            1 => format!("666-{:02}-{:04}", 1 + r.below(98), 1 + r.below(9998)),
            2 => format!("9{:02}-{:02}-{:04}", r.below(99), 1 + r.below(98), 1 + r.below(9998)),
            3 => format!("{:03}-00-{:04}", 1 + r.below(600), 1 + r.below(9998)),
            _ => format!("{:03}-{:02}-0000", 1 + r.below(600), 1 + r.below(98)),
        };
        push(&mut r, "ssn", false, v);

        // phone
        let a = format!("{}{}", 2 + r.below(8), r.digits(2));
        let b = format!("{}{}", 2 + r.below(8), r.digits(2));
        let c4 = r.digits(4);
        let v = match r.below(6) {
            0 => format!("({a}) {b}-{c4}"),
            1 => format!("{a}-{b}-{c4}"),
            2 => format!("+1 {a} {b} {c4}"),
            3 => format!("+44{}", r.digits(10)),
            4 => format!("+49 30 {}", r.digits(7)),
            _ => format!("020 {} {}", r.digits(4), r.digits(4)),
        };
        push(&mut r, "phone", true, v);
        let v = match r.below(5) {
            0 => format!("20{:02}-{:02}-{:02}", r.below(30), 1 + r.below(12), 1 + r.below(28)),
            1 => format!("{:02}:{:02}:{:02}", r.below(24), r.below(60), r.below(60)),
            2 => format!("order {}", r.digits(5)),
            3 => format!("{a}-{b}-{c4}{}", r.digits(1)),
            _ => format!("v{}.{}.{}", r.below(10), r.below(30), r.below(100)),
        };
        push(&mut r, "phone", false, v);

        // IPv4
        let v = format!("{}.{}.{}.{}", 1 + r.below(254), r.below(256), r.below(256), 1 + r.below(254));
        push(&mut r, "ipv4", true, v);
        let v = match r.below(4) {
            0 => format!("{}.{}.{}.{}.{}", r.below(10), r.below(10), r.below(10), r.below(10), r.below(10)),
            1 => format!("v{}.{}.{}.{}", r.below(10), r.below(10), r.below(10), r.below(10)),
            2 => format!("{}.{}.{}.{}", 256 + r.below(700), r.below(256), r.below(256), r.below(256)),
            _ => format!("version {}.{}.{}", r.below(10), r.below(30), r.below(100)),
        };
        push(&mut r, "ipv4", false, v);

        // IPv6
        let v = ipv6(&mut r);
        push(&mut r, "ipv6", true, v);
        let v = match r.below(4) {
            0 => format!("{:02}:{:02}:{:02}", r.below(24), r.below(60), r.below(60)),
            1 => (0..6).map(|_| format!("{:02X}", r.below(256))).collect::<Vec<_>>().join(":"),
            2 => format!("std::{}", r.chars(LOWER, 6)),
            _ => format!("{}::{}", r.chars("abcdef", 2), r.chars("abcdef", 3)),
        };
        push(&mut r, "ipv6", false, v);

        // Secrets.
        let ak = format!("{}{}", r.pick(&["AKIA", "ASIA"]), r.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
        push(&mut r, "aws_access_key", true, ak.clone());
        let v = match r.below(3) {
            0 => ak[..19].to_string(),
            1 => ak.to_lowercase(),
            _ => format!("X{ak}"),
        };
        push(&mut r, "aws_access_key", false, v);
        let key = r.chars(B64, 40);
        let name = r.pick(&["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "SecretAccessKey", "aws-secret-access-key"]);
        let sep = r.pick(&[" = ", "=", ": ", "\": \""]);
        push(&mut r, "aws_secret_key", true, format!("{name}{sep}{key}"));
        let v = if r.below(2) == 0 { key.clone() } else { format!("{name}{sep}{}", &key[..39]) };
        push(&mut r, "aws_secret_key", false, v);
        let v = if r.below(2) == 0 {
            format!("{}_{}", r.pick(&["ghp", "gho", "ghs", "ghu"]), r.chars(ALNUM, 36))
        } else {
            format!("github_pat_{}_{}", r.chars(ALNUM, 22), r.chars(ALNUM, 59))
        };
        push(&mut r, "github_token", true, v);
        let v = if r.below(2) == 0 { format!("ghp_{}", r.chars(ALNUM, 12)) } else { format!("ghx_{}", r.chars(ALNUM, 36)) };
        push(&mut r, "github_token", false, v);
        let v = format!("glpat-{}", r.chars(ALNUM, 20));
        push(&mut r, "gitlab_token", true, v);
        let v = format!("glpat-{}", r.chars(ALNUM, 8));
        push(&mut r, "gitlab_token", false, v);
        let v = format!("xox{}-{}-{}-{}", r.pick(&["b", "p", "a"]), r.digits(11), r.digits(12), r.chars(ALNUM, 24));
        push(&mut r, "slack_token", true, v);
        let v = if r.below(2) == 0 { format!("xoxb-{}", r.digits(4)) } else { format!("xoxz-{}-{}", r.digits(11), r.chars(ALNUM, 24)) };
        push(&mut r, "slack_token", false, v);
        let v = if r.below(2) == 0 {
            format!("sk-proj-{}", r.chars("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", 64))
        } else {
            format!("sk-{}", r.chars(ALNUM, 48))
        };
        push(&mut r, "openai_key", true, v);
        let v = match r.below(3) {
            0 => "sk-learn".to_string(),
            1 => format!("task-{}", r.chars(LOWER, 30)),
            _ => format!("disk-{}", r.chars(ALNUM, 30)),
        };
        push(&mut r, "openai_key", false, v);
        let v = format!("sk-ant-api03-{}", r.chars("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", 95));
        push(&mut r, "anthropic_key", true, v);
        let v = format!("sk-ant-{}", r.chars(ALNUM, 6));
        push(&mut r, "anthropic_key", false, v);
        let v = jwt(&mut r);
        push(&mut r, "jwt", true, v.clone());
        let mut parts = v.split('.');
        let v =
            if r.below(2) == 0 { parts.next().unwrap_or_default().to_string() } else { format!("{}.", parts.next().unwrap_or_default()) };
        push(&mut r, "jwt", false, v);
        let kind = r.pick(&["RSA ", "EC ", "", "OPENSSH ", "ENCRYPTED "]);
        let body: Vec<String> = (0..3 + r.below(5)).map(|_| r.chars(B64, 64)).collect();
        let v = format!("-----BEGIN {kind}PRIVATE KEY-----\n{}\n-----END {kind}PRIVATE KEY-----", body.join("\n"));
        push(&mut r, "private_key", true, v);
        let kind = r.pick(&["PUBLIC KEY", "CERTIFICATE", "RSA PUBLIC KEY"]);
        let v = format!("-----BEGIN {kind}-----\n{}\n-----END {kind}-----", body.join("\n"));
        push(&mut r, "private_key", false, v);
    }
    out
}

/// Per-detector counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Score {
    /// True positives.
    pub tp: u64,
    /// False positives (fired on a sample not labelled for it, or on a hard negative).
    pub fp: u64,
    /// False negatives.
    pub fn_: u64,
}

impl Score {
    /// TP / (TP + FP), 1 when nothing fired.
    pub fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 { 1.0 } else { self.tp as f64 / (self.tp + self.fp) as f64 }
    }
    /// TP / (TP + FN), 1 when there were no positives.
    pub fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 { 1.0 } else { self.tp as f64 / (self.tp + self.fn_) as f64 }
    }
}

/// Run the engine over the samples and score each detector.
pub fn evaluate(engine: &Arc<Engine>, samples: &[Sample]) -> BTreeMap<String, Score> {
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    for s in samples {
        let out = engine.redact(Direction::Response, s.text.as_bytes());
        let mut fired: Vec<String> = out.detections.iter().map(|d| d.detector.to_string()).collect();
        fired.sort();
        fired.dedup();
        if s.positive {
            let e = scores.entry(s.label.to_string()).or_default();
            if fired.iter().any(|f| f == s.label) {
                e.tp += 1;
            } else {
                e.fn_ += 1;
            }
        }
        for f in fired {
            if !(s.positive && f == s.label) {
                scores.entry(f).or_default().fp += 1;
            }
        }
    }
    scores
}
