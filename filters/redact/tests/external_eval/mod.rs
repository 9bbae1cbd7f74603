//! Recall and false positives on public test vectors written by others (`tests/data/*/`, each
//! with its licence and provenance). Shared by `tests/external.rs` (thresholds) and
//! `examples/external_recall.rs` (the table in docs/benchmarks.md).

use cordon_redact::{Direction, Engine};
use std::path::Path;
use std::sync::Arc;

/// One measured line: a detector on one format (or negative class) of one source.
#[derive(Debug, Clone)]
pub struct Row {
    /// Detector under test.
    pub detector: &'static str,
    /// Where the vectors come from.
    pub source: &'static str,
    /// Format or negative class.
    pub format: String,
    /// Positives (recall) or negatives (false-positive rate).
    pub positive: bool,
    /// Whether docs/redaction.md claims this format (thresholds apply).
    pub claimed: bool,
    /// Samples.
    pub n: usize,
    /// Positives: replaced whole by the detector's placeholder. Negatives: the detector fired.
    pub hits: usize,
    /// A few failing samples, for the report.
    pub misses: Vec<String>,
}

impl Row {
    /// Recall (positives) or false-positive rate (negatives).
    pub fn rate(&self) -> f64 {
        if self.n == 0 { 0.0 } else { self.hits as f64 / self.n as f64 }
    }
    /// Recall ≥ 0.99 on a claimed format, false positives ≤ 1 % on a claimed negative class.
    pub fn meets_goal(&self) -> bool {
        !self.claimed || if self.positive { self.rate() >= 0.99 } else { self.rate() <= 0.01 }
    }
}

fn lines(dir: &Path, file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().filter(char::is_ascii_digit).enumerate() {
        let mut v = c.to_digit(10).unwrap_or(0);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

struct Eval {
    engine: Arc<Engine>,
    rows: Vec<Row>,
}

impl Eval {
    fn row(&mut self, detector: &'static str, source: &'static str, format: &str, positive: bool, claimed: bool) -> &mut Row {
        let i = match self
            .rows
            .iter()
            .position(|r| r.detector == detector && r.source == source && r.format == format && r.positive == positive)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row { detector, source, format: format.to_string(), positive, claimed, n: 0, hits: 0, misses: Vec::new() });
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    /// `value` in a sentence: a positive counts when it comes out as exactly one placeholder of
    /// `detector`, a negative when `detector` fires at all.
    fn sample(&mut self, detector: &'static str, source: &'static str, format: &str, positive: bool, claimed: bool, value: &str) {
        let text = format!("please use {value} today");
        let out = self.engine.redact(Direction::Response, text.as_bytes());
        let got = String::from_utf8_lossy(&out.bytes).to_string();
        let fired = out.detections.iter().any(|d| &*d.detector == detector);
        let hit = if positive { fired && got == format!("please use [{}] today", detector.to_uppercase()) } else { fired };
        let row = self.row(detector, source, format, positive, claimed);
        row.n += 1;
        if hit {
            row.hits += 1;
        }
        if hit != positive && row.misses.len() < std::env::var("MISSES").ok().and_then(|v| v.parse().ok()).unwrap_or(5) {
            row.misses.push(format!("{value:?} -> {got:?}"));
        }
    }
}

/// Is `s` in the e-mail format the docs claim: an ASCII local part of `[A-Za-z0-9._%+-]` and a
/// domain of ASCII labels.
fn claimed_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.is_empty()
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
        && domain.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
}

/// Evaluate every source under `dir` (normally `tests/data`).
pub fn evaluate(dir: &Path) -> Vec<Row> {
    let mut ev = Eval { engine: Arc::new(Engine::default_set(b"external").expect("default set")), rows: Vec::new() };

    for r in lines(dir, "python-stdnum/iban.tsv") {
        let (v, class) = (r[0].as_str(), r[1].as_str());
        match class {
            "valid" => {
                // Claimed: upper case, `CCdd` together, single spaces or dashes between groups.
                let claimed = v.len() > 4
                    && v.bytes().take(4).all(|b| b.is_ascii_alphanumeric())
                    && v.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'-')
                    && !v.contains("  ");
                let format = match (claimed, v.contains(' ')) {
                    (true, true) => "grouped",
                    (true, false) => "compact",
                    (false, _) => "other writings (space after CC, dots, lower case)",
                };
                ev.sample("iban", "python-stdnum 2.2", format, true, claimed, v)
            }
            // We check registry length and mod 97, not the BBAN structure or national rules.
            "structure" | "national" => ev.sample("iban", "python-stdnum 2.2", &format!("invalid: {class}"), false, false, v),
            _ => ev.sample("iban", "python-stdnum 2.2", &format!("invalid: {class}"), false, true, v),
        }
    }

    for r in lines(dir, "card-validator/cards.tsv") {
        let (v, valid, kind) = (r[0].as_str(), r[1] == "true", r[2].as_str());
        if valid {
            let luhn_ok = luhn(v);
            let single = !v.contains("  ") && !v.contains("--");
            let format = match (luhn_ok, single) {
                (true, true) => "valid (Luhn)".to_string(),
                (true, false) => "valid, irregular spacing".to_string(),
                (false, _) => format!("valid {kind} without Luhn"),
            };
            ev.sample("card", "card-validator 10.0.4", &format, true, luhn_ok && single, v);
        } else {
            ev.sample("card", "card-validator 10.0.4", "invalid", false, true, v);
        }
    }

    for r in lines(dir, "libphonenumber/phones.tsv") {
        let (region, e164, intl, national) = (r[0].as_str(), r[2].as_str(), r[3].as_str(), r[4].as_str());
        ev.sample("phone", "phonenumbers 9.0.43", "E.164", true, true, e164);
        ev.sample("phone", "phonenumbers 9.0.43", "INTERNATIONAL", true, true, intl);
        let nanp = e164.starts_with("+1");
        let trunk0 = national.trim_start_matches('(').starts_with('0');
        let digits = national.chars().filter(char::is_ascii_digit).count();
        let (format, claimed) = if nanp {
            ("NATIONAL, NANP", true)
        } else if trunk0 && (10..=11).contains(&digits) {
            ("NATIONAL, trunk 0, 10-11 digits", true)
        } else if trunk0 {
            ("NATIONAL, trunk 0, other lengths", false)
        } else {
            ("NATIONAL, no trunk prefix", false)
        };
        let _ = region;
        ev.sample("phone", "phonenumbers 9.0.43", format, true, claimed, national);
    }
    for r in lines(dir, "libphonenumber/too_short.tsv") {
        ev.sample("phone", "phonenumbers 9.0.43", "invalid: too short for the country", false, true, &r[2]);
    }

    for r in lines(dir, "email-validator/emails.tsv") {
        let (v, test) = (r[0].as_str(), r[1].as_str());
        if test == "test_email_invalid_syntax" {
            // Informational: invalid strings often hold a valid address, which a redactor
            // should replace (`my@example.com.` ends with a dot).
            ev.sample("email", "email-validator 2.4.0", "invalid syntax (informational)", false, false, v);
        } else if claimed_email(v) {
            ev.sample("email", "email-validator 2.4.0", "ASCII dot-atom", true, true, v);
        } else {
            ev.sample("email", "email-validator 2.4.0", "other valid (quoted specials, Unicode)", true, false, v);
        }
    }
    ev.rows
}
