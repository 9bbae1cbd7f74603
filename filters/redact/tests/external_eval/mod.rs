//! Recall and false positives on public test vectors written by others (`tests/data/*/`, each
//! with its licence and provenance). Shared by `tests/external.rs` (thresholds) and
//! `examples/external_recall.rs` (the table in docs/benchmarks.md).

use cordon_redact::{Direction, Engine, RedactConfig};
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
        self.sample_part(detector, source, format, positive, claimed, value, value)
    }

    /// Like [`Eval::sample`], where only `secret`, a part of `value`, is to be replaced
    /// (`aws_secret_access_key = '…'`: the key name stays). A private key's body is suppressed to
    /// its END line or the end of the text: a positive counts when the detector fired and no
    /// byte of the body is left.
    #[allow(clippy::too_many_arguments)]
    fn sample_part(
        &mut self,
        detector: &'static str,
        source: &'static str,
        format: &str,
        positive: bool,
        claimed: bool,
        value: &str,
        secret: &str,
    ) {
        let text = format!("please use {value} today");
        let out = self.engine.redact(Direction::Response, text.as_bytes());
        let got = String::from_utf8_lossy(&out.bytes).to_string();
        let fired = out.detections.iter().any(|d| &*d.detector == detector);
        let placeholder = format!("[{}]", detector.to_uppercase());
        let hit = if !positive {
            fired
        } else if detector == "private_key" {
            let body = secret.lines().nth(1).unwrap_or(secret);
            fired && !got.contains(body)
        } else {
            fired && got == text.replacen(secret, &placeholder, 1)
        };
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
    regional_phones(&mut ev, dir);

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
    ssn(&mut ev, dir);
    ips(&mut ev, dir);
    secrets(&mut ev, dir);
    ev.rows
}

/// National formats with the number's region named in `phone_regions`: one engine per region.
fn regional_phones(ev: &mut Eval, dir: &Path) {
    const SRC: &str = "phonenumbers 9.0.43, region named";
    let default_engine = ev.engine.clone();
    let phones = lines(dir, "libphonenumber/phones.tsv");
    let too_short = lines(dir, "libphonenumber/too_short.tsv");
    let mut regions: Vec<&str> = phones.iter().map(|r| r[0].as_str()).collect();
    regions.dedup();
    // `001`: non-geographic numbers (satellite, UIFN), which have no national format.
    regions.retain(|r| r.len() == 2);
    for region in regions {
        let cfg = RedactConfig { phone_regions: vec![region.to_string()], ..RedactConfig::default() };
        ev.engine = Arc::new(Engine::new(&cfg, b"external").expect("region engine"));
        let mut cc = String::new();
        let mut trunk = None;
        for r in phones.iter().filter(|r| r[0] == region) {
            let (kind, intl, national) = (r[1].as_str(), r[3].as_str(), r[4].as_str());
            cc = intl.trim_start_matches('+').split([' ', '-']).next().unwrap_or_default().to_string();
            let digits: String = national.chars().filter(char::is_ascii_digit).collect();
            let nsn: String = intl.chars().filter(char::is_ascii_digit).skip(cc.len()).collect();
            trunk = trunk.or_else(|| digits.strip_suffix(nsn.as_str()).map(str::to_string));
            // Claimed: fixed-line and mobile numbers of 8-17 digits written as the library
            // formats them nationally (its grouping, its trunk prefix).
            let geo = matches!(kind, "fixed_line" | "mobile");
            let (format, claimed) = match (geo, digits.len() >= 8) {
                (true, true) => ("NATIONAL, fixed line or mobile, 8+ digits", true),
                (true, false) => ("NATIONAL, fixed line or mobile, under 8 digits", false),
                (false, _) => ("NATIONAL, other types (toll-free, premium, VoIP, …)", false),
            };
            ev.sample("phone", SRC, format, true, claimed, national);
        }
        // Too-short numbers written nationally (trunk prefix and national digits, no grouping).
        let trunk = trunk.unwrap_or_default();
        for r in too_short.iter().filter(|r| r[0] == region) {
            let nsn: String = r[2].chars().filter(char::is_ascii_digit).skip(cc.len()).collect();
            ev.sample("phone", SRC, "invalid: too short for the country, national", false, true, &format!("{trunk}{nsn}"));
        }
    }
    ev.engine = default_engine;
}

/// US SSNs: python-stdnum's doctests and Presidio's recognizer tests.
fn ssn(ev: &mut Eval, dir: &Path) {
    // Claimed: `AAA-GG-SSSS` with one separator kind (dash, space or dot) and valid ranges.
    let claimed_shape = |v: &str| {
        let b = v.as_bytes();
        b.len() == 11 && matches!(b[3], b'-' | b' ' | b'.') && b[6] == b[3] && v.chars().filter(char::is_ascii_digit).count() == 9
    };
    for r in lines(dir, "python-stdnum/ssn.tsv") {
        let (v, class) = (r[0].as_str(), r[1].as_str());
        match class {
            "valid" => ev.sample("ssn", "python-stdnum 2.2", "valid, dashes", true, claimed_shape(v), v),
            // Not SSNs, but not claimed negatives either: an ITIN has area 9xx (not matched);
            // the advertised 078-05-1120 has a valid shape and ranges (matched).
            "itin" | "invalid: blacklisted (advertised)" => {
                ev.sample("ssn", "python-stdnum 2.2", &format!("not an SSN: {class}"), false, false, v)
            }
            _ => ev.sample("ssn", "python-stdnum 2.2", "invalid", false, true, v),
        }
    }
    for r in lines(dir, "presidio/ssn.tsv") {
        let (v, found) = (r[0].as_str(), r[1] == "1");
        if found {
            let format = if claimed_shape(v) { "valid, dashes / dots / spaces" } else { "valid, bare 9 digits" };
            ev.sample("ssn", "presidio tests", format, true, claimed_shape(v), v);
        } else {
            ev.sample("ssn", "presidio tests", "invalid", false, true, v);
        }
    }
}

/// IP addresses: CPython's ipaddress tests.
fn ips(ev: &mut Eval, dir: &Path) {
    const SRC: &str = "CPython 3.13 ipaddress";
    for r in lines(dir, "python-ipaddress/ips.tsv") {
        let (v, class) = (r[0].as_str(), r[1].as_str());
        let (addr, prefix) = v.split_once('/').map_or((v, None), |(a, p)| (a, Some(p)));
        let numeric_prefix =
            prefix.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0')));
        let bare = addr.split('%').next().unwrap_or(addr);
        match class {
            "ipv4" | "ipv4 cidr" => {
                let format = match (prefix, numeric_prefix) {
                    (None, _) => "IPv4",
                    (Some(_), true) => "IPv4 CIDR",
                    (Some(_), false) => "IPv4 with a netmask suffix",
                };
                ev.sample("ipv4", SRC, format, true, numeric_prefix, v)
            }
            "ipv6" | "ipv6 zone" | "ipv6 cidr" => {
                // Claimed (docs/redaction.md): at least 6 characters, a decimal digit and two
                // groups in the address (an embedded IPv4 counts as two); `::1`, `1::`, `fe80::/10`
                // are not matched by design.
                let groups: usize = bare.split(':').filter(|g| !g.is_empty()).map(|g| if g.contains('.') { 2 } else { 1 }).sum();
                let shaped = bare.len() >= 6 && bare.bytes().any(|b| b.is_ascii_digit()) && groups >= 2;
                let format = match (shaped, addr.contains('%'), prefix.is_some()) {
                    (false, _, _) => "IPv6 of one group, under 6 characters or no digit (`::1`, `2001::`)",
                    (true, false, false) => "IPv6",
                    (true, true, false) => "IPv6 with zone id",
                    (true, false, true) => "IPv6 CIDR",
                    (true, true, true) => "IPv6 with zone id and prefix",
                };
                ev.sample("ipv6", SRC, format, true, shaped && numeric_prefix, v)
            }
            _ => {
                // Malformed: many hold a valid address (`1.2.3.4/32/24`, `::1%`), which a
                // redactor should replace; those with none are the claimed negatives.
                let det = if v.contains(':') { "ipv6" } else { "ipv4" };
                let holds_valid = holds_valid_ip(v);
                let format = if holds_valid { "malformed, holding a valid address (informational)" } else { "malformed" };
                ev.sample(det, SRC, format, false, !holds_valid, v)
            }
        }
    }
}

/// Whether some substring of `v` between separators parses as an IP address (std's parsers).
fn holds_valid_ip(v: &str) -> bool {
    let b = v.as_bytes();
    (0..b.len()).any(|i| {
        (i + 1..=b.len()).any(|j| {
            let Some(t) = v.get(i..j) else { return false };
            let t = t.split('%').next().unwrap_or(t);
            t.len() >= 7 && (t.parse::<std::net::Ipv4Addr>().is_ok() || (t.len() >= 6 && t.parse::<std::net::Ipv6Addr>().is_ok()))
        })
    })
}

/// Secrets: detect-secrets' plugin tests.
fn secrets(ev: &mut Eval, dir: &Path) {
    const SRC: &str = "detect-secrets tests";
    for r in lines(dir, "detect-secrets/secrets.tsv") {
        let v = r[0].replace("\\n", "\n");
        let (flag, test) = (r[1] == "True", r[2].as_str());
        let v = v.as_str();
        let starts = |ps: &[&str]| ps.iter().any(|p| v.starts_with(p));
        match test {
            "aws_key_test" => {
                let claimed = starts(&["AKIA", "ASIA", "ABIA", "ACCA"]);
                let format = if !flag {
                    "near miss: lower case or short"
                } else if claimed {
                    "AKIA/ASIA/ABIA/ACCA key id"
                } else {
                    "other key id prefix (A3T…)"
                };
                ev.sample("aws_access_key", SRC, format, flag, claimed || !flag, v)
            }
            "each_secret" => {
                let (_, val) = v.split_once(" = '").unwrap_or(("", v));
                let val = val.trim_end_matches('\'');
                if v.starts_with("aws_secret_access_key") {
                    ev.sample_part("aws_secret_key", SRC, "secret key after its name", true, true, v, val)
                } else {
                    ev.sample_part("aws_access_key", SRC, "AKIA/ASIA/ABIA/ACCA key id", true, true, v, val)
                }
            }
            "github_token_test" => {
                ev.sample("github_token", SRC, if flag { "ghp_ token" } else { "near miss: other prefix" }, flag, true, v)
            }
            "gitlab_token_test" => {
                // detect-secrets' length bounds per token kind are not ours (20-255 for every
                // kind): its too-long and too-short near misses are informational; the
                // wrong-prefix and split ones are claimed negatives.
                let wrong_prefix = v.contains(' ')
                    || !starts(&["glpat-", "gldt-", "glsoat-", "glcbt-", "glimt-", "glptt-", "glagent-", "gloas-", "GR1348941"]);
                let (format, claimed) = match (flag, wrong_prefix) {
                    (true, _) => ("GitLab token (glpat-, gldt-, glsoat-, …)", true),
                    (false, true) => ("near miss: wrong prefix or split", true),
                    (false, false) => ("near miss: length outside detect-secrets' bound (informational)", false),
                };
                ev.sample("gitlab_token", SRC, format, flag, claimed, v)
            }
            "jwt_test" => {
                let segments = v.split('.').count();
                // We match the shape (`eyJ` + base64url segments), not the decoded JSON: only
                // the near misses without that shape are claimed negatives.
                let shaped = v.starts_with("eyJ") && segments >= 2;
                let format = match (flag, shaped) {
                    (true, _) if segments == 3 => "signed (3 segments)",
                    (true, _) => "unsigned (2 segments)",
                    (false, true) => "near miss: JWT-shaped, header or payload not JSON (informational)",
                    (false, false) => "near miss: not JWT-shaped",
                };
                ev.sample("jwt", SRC, format, flag, flag || !shaped, v)
            }
            "openai_test" => {
                let format = if flag { "sk- / sk-proj- key" } else { "near miss (no T3BlbkFJ marker)" };
                ev.sample("openai_key", SRC, format, flag, flag, v)
            }
            "slack_test" => match v.strip_prefix("https://") {
                // The webhook's path is the secret; the scheme stays.
                Some(path) => ev.sample_part("slack_token", SRC, "webhook URL", true, true, v, path),
                None => ev.sample("slack_token", SRC, "xox?- token", true, true, v),
            },
            "private_key_test" => {
                let begin = v.find("-----BEGIN").unwrap_or(0);
                let secret = v.get(begin..).unwrap_or(v);
                ev.sample_part("private_key", SRC, "PEM block", true, true, v, secret)
            }
            _ => {}
        }
    }
}
