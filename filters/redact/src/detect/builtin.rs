//! Built-in detectors: patterns, alphabets, validators.
//!
//! | name | matches | validation | max length |
//! | --- | --- | --- | --- |
//! | `private_key` | `-----BEGIN ... PRIVATE KEY-----` header, then suppress-until-end | END line | header ≤ 81, body unbounded |
//! | `anthropic_key` | `sk-ant-` + 20-250 `[A-Za-z0-9_-]` | left boundary | 257 |
//! | `openai_key` | `sk-` (`proj-`, `svcacct-`, `admin-`) + 20-250 | left boundary | 261 |
//! | `aws_access_key` | `AKIA`/`ASIA`/`ABIA`/`ACCA` + 16 `[0-9A-Z]` | both boundaries | 20 |
//! | `aws_secret_key` | 40 `[A-Za-z0-9/+=]` after `aws_secret_access_key =`-like context | the value only | ≈80 |
//! | `github_token` | `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36, `github_pat_` + 22-255 | left boundary | 266 |
//! | `gitlab_token` | `glpat-` (and `gldt- glsoat- glcbt- glimt- glptt- glagent- gloas- glrt- glft-`, `GR1348941`) + 20-255 | left boundary | 264 |
//! | `slack_token` | `xox[baprsoe]-` + 10-200, `hooks.slack.com/services/` + 20-200 | left boundary | 225 |
//! | `jwt` | `eyJ…` `.` `…` `.` `…` (base64url segments ≤ 1024/4096/1024), or unsigned `eyJ…` `.` `eyJ…` | left boundary | 6149 |
//! | `email` | `local@domain.tld` (TLD letters or punycode) | boundaries, no leading/trailing dot in local part | 576 |
//! | `card` | 13-19 digits starting 1-6, 81, 82 or 97, spaces/dashes between | issuer lengths, Luhn, not inside a longer number or after an IBAN head | 37 |
//! | `iban` | `CCdd` + 11-30 alphanumerics, optional single spaces or dashes | registry length, at least 8 digits, mod 97 | 64 |
//! | `ssn` | `AAA-GG-SSSS` / `AAA GG SSSS` / `AAA.GG.SSSS` | area ≠ 000/666/9xx, group ≠ 00, serial ≠ 0000 | 11 |
//! | `phone` | E.164 `+…`, `+CC …` grouped or one block, NANP `(415) 555-2671` / `4155552671`, trunk-0 national `020 7946 0958` / `(020) 7946-0958` / `02079460958` | national length per country code (libphonenumber), 10 NANP, 10-11 trunk-0; not inside a longer number | 63 |
//! | `ipv6` | hex/colon groups, `%zone`, `/prefix` | parsed by `std::net::Ipv6Addr`, ≥2 groups, a digit | 66 |
//! | `ipv4` | dotted quad, `/prefix` | octets ≤ 255, no leading zeros, not `1.2.3.4.5` / `v1.2.3.4` | 18 |

use regex::bytes::{Regex, RegexBuilder};

use super::{Anchored, ByteSet, Canon, Matcher, Scanner, Trigger, Validator, validate};

/// Specification of a built-in detector before configuration is applied.
pub struct Builtin {
    /// Name.
    pub name: &'static str,
    /// Placeholder label.
    pub label: &'static str,
    /// Pattern (bytes regex, Unicode off).
    pub pattern: &'static str,
    /// Scanner kind.
    pub kind: Kind,
    /// Validator.
    pub validate: Option<Validator>,
    /// Canonical form for pseudonyms.
    pub canon: Canon,
}

/// How a built-in scans.
pub enum Kind {
    /// Run scanner (see [`RunSpec`]).
    Run(RunSpec),
    /// Like `Run`, with the hand-written e-mail matcher instead of the pattern.
    Email(RunSpec),
    /// Literal scanner: literals, case-insensitive, left boundary, right boundary.
    Literal(&'static [&'static str], bool, Option<&'static str>, Option<&'static str>),
}

/// A run-scanned built-in: where its matches live and how early a trailing run is settled.
pub struct RunSpec {
    /// Alphabet: these characters plus these ranges.
    pub alphabet: (&'static str, &'static [(u8, u8)]),
    /// Bytes a match can start with (characters plus ranges).
    pub starts: (&'static str, &'static [(u8, u8)]),
    /// Bytes the validator rejects right before a match (characters plus ranges).
    pub not_after: (&'static str, &'static [(u8, u8)]),
    /// Run terminators after which the validator reads one more byte (e.g. `.` in
    /// `4242...4242.5`, where the card validator checks whether a digit follows the dot).
    pub peek: &'static str,
    /// What makes a run worth scanning.
    pub trigger: Trigger,
    /// Minimum run length of an accepted match.
    pub min_len: usize,
    /// Minimum number of trigger bytes in an accepted match.
    pub min_triggers: usize,
}

const DIGITS: &[(u8, u8)] = &[(b'0', b'9')];
const ALNUM: &[(u8, u8)] = &[(b'a', b'z'), (b'A', b'Z'), (b'0', b'9')];
const HEX: &[(u8, u8)] = &[(b'0', b'9'), (b'a', b'f'), (b'A', b'F')];
const TOKEN_CHARS: &str = "_-";

/// Built-ins in priority order (earlier wins a tie between equal spans).
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        label: "PRIVATE_KEY",
        pattern: r"\A-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----",
        kind: Kind::Literal(&["-----BEGIN "], false, None, None),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "anthropic_key",
        label: "ANTHROPIC_KEY",
        pattern: r"\Ask-ant-[A-Za-z0-9_\-]{20,250}",
        kind: Kind::Literal(&["sk-ant-"], false, Some(TOKEN_CHARS), None),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "openai_key",
        label: "OPENAI_KEY",
        pattern: r"\Ask-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,250}",
        kind: Kind::Literal(&["sk-"], false, Some(TOKEN_CHARS), None),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "aws_access_key",
        label: "AWS_ACCESS_KEY",
        pattern: r"\A(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",
        kind: Kind::Literal(&["AKIA", "ASIA", "ABIA", "ACCA"], false, Some(""), Some("")),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "aws_secret_key",
        label: "AWS_SECRET_KEY",
        pattern: r#"(?i)\A(?:aws[_\-]?)?secret[_\-]?access[_\-]?key["']?[ \t]{0,4}(?:=|:|=>|:=)[ \t]{0,4}["']?[A-Za-z0-9/+=]{40}"#,
        kind: Kind::Literal(
            &[
                "aws_secret",
                "AWS_SECRET",
                "aws-secret",
                "AWS-SECRET",
                "awsSecret",
                "AwsSecret",
                "AWSSecret",
                "secret_access",
                "SECRET_ACCESS",
                "secret-access",
                "secretAccess",
                "SecretAccess",
            ],
            false,
            Some(""),
            Some("/+="),
        ),
        validate: Some(validate::aws_secret),
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "github_token",
        label: "GITHUB_TOKEN",
        pattern: r"\A(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})",
        kind: Kind::Literal(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"], false, Some(TOKEN_CHARS), None),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "gitlab_token",
        label: "GITLAB_TOKEN",
        pattern: r"\A(?:(?:glpat|gldt|glsoat|glcbt|glimt|glptt|glagent|gloas|glrt|glft)-|GR1348941)[A-Za-z0-9_\-]{20,255}",
        kind: Kind::Literal(
            &["glpat-", "gldt-", "glsoat-", "glcbt-", "glimt-", "glptt-", "glagent-", "gloas-", "glrt-", "glft-", "GR1348941"],
            false,
            Some(TOKEN_CHARS),
            None,
        ),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "slack_token",
        label: "SLACK_TOKEN",
        pattern: r"\A(?:xox[baprsoe]-[A-Za-z0-9\-]{10,200}|hooks\.slack\.com/services/[A-Za-z0-9_/\-]{20,200})",
        kind: Kind::Literal(
            &["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-", "xoxo-", "xoxe-", "hooks.slack.com/services/"],
            false,
            Some(TOKEN_CHARS),
            None,
        ),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "jwt",
        label: "JWT",
        pattern: r"\AeyJ[A-Za-z0-9_\-]{4,1024}\.(?:[A-Za-z0-9_\-]{4,4096}\.[A-Za-z0-9_\-]{0,1024}|eyJ[A-Za-z0-9_\-]{4,4093})",
        kind: Kind::Literal(&["eyJ"], false, Some(TOKEN_CHARS), None),
        validate: None,
        canon: Canon::Verbatim,
    },
    Builtin {
        name: "email",
        label: "EMAIL",
        pattern: r"[A-Za-z0-9._%+\-'=!#$&*^~{|}`?]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?){0,6}\.(?:[A-Za-z]{2,24}|[Xx][Nn]--[A-Za-z0-9\-]{0,58}[A-Za-z0-9])",
        kind: Kind::Email(RunSpec {
            alphabet: ("._%+-@'=!#$&*^~{|}`?", ALNUM),
            starts: ("._%+-", ALNUM),
            not_after: ("_.%+-@", ALNUM),
            peek: "",
            trigger: Trigger::Byte(b'@'),
            min_len: 6,
            min_triggers: 1,
        }),
        validate: Some(validate::email),
        canon: Canon::Lower,
    },
    Builtin {
        name: "card",
        label: "CARD",
        pattern: r"(?:[1-6][0-9]|8[12]|97)(?:[ \-]?[0-9]){11,17}",
        kind: Kind::Run(RunSpec {
            alphabet: (" -", DIGITS),
            starts: ("", &[(b'1', b'6'), (b'8', b'9')]),
            not_after: ("_.", ALNUM),
            peek: ".",
            trigger: Trigger::Digits(1),
            min_len: 13,
            min_triggers: 13,
        }),
        validate: Some(validate::card),
        canon: Canon::Alnum,
    },
    Builtin {
        name: "iban",
        label: "IBAN",
        pattern: r"[A-Z]{2}[0-9]{2}(?:[ \-]?[A-Z0-9]){11,30}",
        kind: Kind::Run(RunSpec {
            alphabet: (" -", &[(b'A', b'Z'), (b'0', b'9')]),
            starts: ("", &[(b'A', b'Z')]),
            not_after: ("_", ALNUM),
            peek: "",
            trigger: Trigger::Digits(40),
            min_len: 15,
            min_triggers: validate::IBAN_MIN_DIGITS,
        }),
        validate: Some(validate::iban),
        canon: Canon::Alnum,
    },
    Builtin {
        name: "ssn",
        label: "SSN",
        pattern: r"[0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{4}",
        kind: Kind::Run(RunSpec {
            alphabet: (" -.", DIGITS),
            starts: ("", DIGITS),
            not_after: ("_-.", ALNUM),
            peek: ".",
            trigger: Trigger::Digits(1),
            min_len: 11,
            min_triggers: 9,
        }),
        validate: Some(validate::ssn),
        canon: Canon::Alnum,
    },
    Builtin {
        name: "phone",
        label: "PHONE",
        pattern: r"\+[1-9][0-9]{6,14}|\+[1-9][0-9]{0,2}[ .\-]?\(?[0-9]{1,4}\)?(?:[ .\-][0-9]{1,12}){1,4}|\(?[2-9][0-9]{2}\)?[ .\-]?[2-9][0-9]{2}[ .\-]?[0-9]{4}|\(?0[0-9]{0,5}\)?(?:[ .\-][0-9]{1,8}){1,4}|0[1-9][0-9]{8,9}",
        kind: Kind::Run(RunSpec {
            alphabet: (" ()+.-", DIGITS),
            starts: ("+(0", &[(b'2', b'9')]),
            not_after: ("_+-.)", ALNUM),
            peek: "",
            trigger: Trigger::Digits(2),
            min_len: 8,
            min_triggers: 8,
        }),
        validate: Some(validate::phone),
        canon: Canon::Alnum,
    },
    Builtin {
        name: "ipv6",
        label: "IPV6",
        pattern: r"[0-9A-Fa-f:][0-9A-Fa-f:.]{1,44}(?:%[0-9A-Za-z_.\-]{1,16})?(?:/[0-9]{1,3})?",
        kind: Kind::Run(RunSpec {
            alphabet: (":.%/_-", ALNUM),
            starts: (":", HEX),
            not_after: ("_:.", ALNUM),
            peek: "",
            trigger: Trigger::Byte(b':'),
            min_len: 6,
            min_triggers: 2,
        }),
        validate: Some(validate::ipv6),
        canon: Canon::Lower,
    },
    Builtin {
        name: "ipv4",
        label: "IPV4",
        pattern: r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:/[0-9]{1,2})?",
        kind: Kind::Run(RunSpec {
            alphabet: ("./", DIGITS),
            starts: ("", DIGITS),
            not_after: ("_.-", ALNUM),
            peek: "-",
            trigger: Trigger::Digits(1),
            min_len: 7,
            min_triggers: 4,
        }),
        validate: Some(validate::ipv4),
        canon: Canon::Verbatim,
    },
];

/// Pattern of the line that ends a suppressed private-key block.
pub const PEM_END: &str = r"\A-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----";

/// Compile a built-in pattern (Unicode off: ASCII classes, fast DFA).
pub fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern).unicode(false).build().map_err(|e| e.to_string())
}

/// Maximum match length of a pattern in bytes (`None` if unbounded), and whether it can match
/// the empty string.
pub fn max_len(pattern: &str, unicode: bool) -> Result<(Option<usize>, bool), String> {
    let hir = regex_syntax::ParserBuilder::new().unicode(unicode).utf8(false).build().parse(pattern).map_err(|e| e.to_string())?;
    let p = hir.properties();
    Ok((p.maximum_len(), p.minimum_len() == Some(0)))
}

/// Build the scanner of a built-in. Patterns with a hand-written matcher are not compiled (the
/// engine's build peak is what the allocator keeps; tests hold each matcher to its pattern).
pub fn scanner(b: &Builtin) -> Result<Scanner, String> {
    Ok(match &b.kind {
        Kind::Email(spec) => run_scanner(spec, Matcher::Email),
        // Hand-written matchers for the hot digit patterns (the lazy DFA is not compiled in;
        // PikeVM costs microseconds per candidate).
        Kind::Run(spec) => run_scanner(
            spec,
            match b.name {
                "card" => Matcher::Card,
                "ssn" => Matcher::Ssn,
                "ipv4" => Matcher::Ipv4,
                "phone" => Matcher::Phone,
                "iban" => Matcher::Iban,
                "ipv6" => Matcher::Ipv6(compile(b.pattern)?),
                _ => Matcher::Regex(compile(b.pattern)?),
            },
        ),
        Kind::Literal(lits, ci, left, right) => {
            let lits: Vec<Vec<u8>> =
                lits.iter().map(|l| if *ci { l.to_ascii_lowercase().into_bytes() } else { l.as_bytes().to_vec() }).collect();
            let re = if b.name == "jwt" { Anchored::Jwt } else { Anchored::Regex(compile(b.pattern)?) };
            Scanner::literal(lits, *ci, Some(re), left.map(|c| ByteSet::new(c, ALNUM)), right.map(|c| ByteSet::new(c, ALNUM)))
        }
    })
}

/// Where national phone numbers of named regions live (see [`super::regions`]).
const NATIONAL: RunSpec = RunSpec {
    alphabet: (" ()-.", DIGITS),
    starts: ("(", DIGITS),
    not_after: ("_+-.)(/:", ALNUM),
    peek: ",",
    trigger: Trigger::Digits(2),
    min_len: super::regions::MIN_DIGITS,
    min_triggers: super::regions::MIN_DIGITS,
};

/// The scanner of the national phone formats of `rules` (reported as `phone`).
pub fn national_scanner(rules: Vec<super::regions::RegionRule>) -> Scanner {
    run_scanner(&NATIONAL, Matcher::National(rules.into()))
}

fn run_scanner(spec: &RunSpec, re: Matcher) -> Scanner {
    let alphabet = ByteSet::new(spec.alphabet.0, spec.alphabet.1);
    let in_union = (0..=255u8).all(|b| !alphabet.has(b) || super::is_numeric_run(b));
    let dense_min = match spec.trigger {
        Trigger::Digits(_) if in_union => spec.min_triggers,
        _ => 0,
    };
    Scanner::Run {
        re,
        alphabet,
        starts: ByteSet::new(spec.starts.0, spec.starts.1),
        not_after: ByteSet::new(spec.not_after.0, spec.not_after.1),
        peek: ByteSet::new(spec.peek, &[]),
        trigger: spec.trigger,
        min_len: spec.min_len,
        min_triggers: spec.min_triggers,
        dense_min,
    }
}
