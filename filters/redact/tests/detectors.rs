//! Per-detector positives and hard negatives (default set, redact).

use cordon_redact::{Direction, Engine};
use std::sync::Arc;

fn engine() -> Arc<Engine> {
    Arc::new(Engine::default_set(b"test-key").unwrap())
}

fn red(s: &str) -> String {
    let o = engine().redact(Direction::Response, s.as_bytes());
    String::from_utf8(o.bytes).unwrap()
}

fn hits(s: &str) -> Vec<String> {
    engine().redact(Direction::Response, s.as_bytes()).detections.iter().map(|d| d.detector.to_string()).collect()
}

#[track_caller]
fn pos(s: &str, det: &str) {
    let h = hits(s);
    assert!(h.iter().any(|x| x == det), "{s:?}: expected {det}, got {h:?} -> {:?}", red(s));
}

#[track_caller]
fn neg(s: &str, det: &str) {
    let h = hits(s);
    assert!(!h.iter().any(|x| x == det), "{s:?}: unexpected {det} -> {:?}", red(s));
}

#[test]
fn email() {
    assert_eq!(red("mail john.doe+x@example.co.uk now"), "mail [EMAIL] now");
    assert_eq!(red("<a@b.io>."), "<[EMAIL]>.");
    pos("ALICE_1@Mail-Server.Example.ORG", "email");
    neg("user@localhost", "email");
    neg("foo@bar", "email");
    neg("@handle and x@ y", "email");
    neg(".a@b.com", "email_nonexistent");
}

#[test]
fn cards() {
    assert_eq!(red("card 4242 4242 4242 4242 ok"), "card [CARD] ok");
    assert_eq!(red("4242-4242-4242-4242"), "[CARD]");
    assert_eq!(red("4111111111111111."), "[CARD].");
    pos("amex 378282246310005", "card");
    pos("mc 5555555555554444", "card");
    pos("4242 4242 4242 4242 12 items", "card");
    neg("4242 4242 4242 4241", "card"); // Luhn-invalid
    neg("1234567890123456", "card");
    neg("order 42424242424242424242", "card"); // 20 digits
    neg("v4242424242424242", "card");
}

#[test]
fn iban() {
    assert_eq!(red("IBAN DE89 3704 0044 0532 0130 00 thanks"), "IBAN [IBAN] thanks");
    pos("GB82WEST12345698765432", "iban");
    pos("FR1420041010050500013M02606", "iban");
    neg("DE89 3704 0044 0532 0130 01", "iban"); // bad checksum
    neg("GB82WEST1234569876543", "iban"); // wrong length
}

#[test]
fn ssn() {
    assert_eq!(red("ssn 123-45-6789."), "ssn [SSN].");
    pos("078 05 1120", "ssn");
    neg("000-12-3456", "ssn");
    neg("666-12-3456", "ssn");
    neg("900-12-3456", "ssn");
    neg("123-00-4567", "ssn");
    neg("123-45-0000", "ssn");
    neg("123-45 6789", "ssn");
    neg("1123-45-6789", "ssn");
}

#[test]
fn phones() {
    pos("call +14155552671 now", "phone");
    pos("call +44 20 7946 0958", "phone");
    pos("(415) 555-2671", "phone");
    pos("415-555-2671", "phone");
    pos("020 7946 0958", "phone");
    neg("2024-01-15", "phone");
    neg("version 1.2.3", "phone");
    neg("12345", "phone");
    neg("415-555-26711", "phone");
}

#[test]
fn ips() {
    assert_eq!(red("host 192.168.1.20:8080"), "host [IPV4]:8080");
    pos("10.0.0.1", "ipv4");
    neg("1.2.3.4.5", "ipv4");
    neg("v1.2.3.4", "ipv4");
    neg("256.1.1.1", "ipv4");
    neg("01.2.3.4", "ipv4");
    neg("version 1.2.3", "ipv4");
    pos("addr 2001:db8::8a2e:370:7334 up", "ipv6");
    pos("fe80::1ff:fe23:4567:890a", "ipv6");
    pos("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6");
    neg("at 12:30:45 today", "ipv6");
    neg("std::vector", "ipv6");
    neg("mac 00:1A:2B:3C:4D:5E", "ipv6");
}

#[test]
fn secrets() {
    assert_eq!(red("key AKIAIOSFODNN7EXAMPLE end"), "key [AWS_ACCESS_KEY] end");
    neg("AKIAIOSFODNN7EXAMPLEX", "aws_access_key");
    neg("xAKIAIOSFODNN7EXAMPLE", "aws_access_key");
    assert_eq!(red("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"), "aws_secret_access_key = [AWS_SECRET_KEY]\n");
    neg("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key");
    pos("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "github_token");
    pos("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_token");
    neg("ghp_short", "github_token");
    pos("glpat-abcdefghijklmnopqrst", "gitlab_token");
    pos("xoxb-1234567890-abcdefghij", "slack_token");
    pos("sk-proj-abcdefghijklmnopqrstuvwxyz012345", "openai_key");
    neg("task-abcdefghijklmnopqrstuvwxyz012345", "openai_key");
    neg("sk-learn", "openai_key");
    let h = hits("sk-ant-api03-abcdefghijklmnopqrstuvwxyz");
    assert_eq!(h, vec!["anthropic_key"]);
    pos("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt");
    neg("eyJhbGciOiJIUzI1NiJ9 only a header", "jwt");
}

#[test]
fn private_key_block_is_suppressed() {
    let s = "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----\nafter";
    assert_eq!(red(s), "before\n[PRIVATE_KEY]\nafter");
    let s = "x -----BEGIN PRIVATE KEY-----\nMIIE never ends";
    assert_eq!(red(s), "x [PRIVATE_KEY]");
    neg("-----BEGIN PUBLIC KEY-----", "private_key");
}

#[test]
fn normalisation_catches_obfuscation() {
    assert_eq!(red("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ!"), "[EMAIL]!");
    assert_eq!(red("4242\u{200B}4242\u{200B}4242\u{00AD}4242 x"), "[CARD] x");
    assert_eq!(red("AKIA\u{200D}IOSFODNN7EXAMPLE"), "[AWS_ACCESS_KEY]");
}

/// Formats added for issue #13: each one caught, as one span.
#[test]
fn formats_people_write() {
    assert_eq!(red("+30 2101234567"), "[PHONE]");
    assert_eq!(red("call 4155550132 now"), "call [PHONE] now");
    assert_eq!(red("020-7946-0958 / 020.7946.0958 / (020) 7946 0958 / 02079460958"), "[PHONE] / [PHONE] / [PHONE] / [PHONE]");
    assert_eq!(red("07700 900123"), "[PHONE]");
    assert_eq!(red("ssn 123.45.6789"), "ssn [SSN]");
    assert_eq!(red("DE89-3704-0044-0532-0130-00"), "[IBAN]");
    // Non-ASCII local parts and Unicode TLDs are not matched (documented).
    assert_eq!(red("mail иван@пример.рф"), "mail иван@пример.рф");
    assert_eq!(red("mail ivan@example.xn--p1ai."), "mail [EMAIL].");
    assert_eq!(red("uatp 135000000000008"), "uatp [CARD]");
    assert_eq!(red("net 10.0.0.0/8 and 192.168.1.7"), "net [IPV4] and [IPV4]");
    assert_eq!(red("10.0.0.1/10.0.0.2"), "[IPV4]/[IPV4]");
    assert_eq!(red("ll fe80::1ff:fe23:4567:890a%eth0 and 2001:db8::/32"), "ll [IPV6] and [IPV6]");
    // An Amex-shaped number failing Luhn is not a phone number in its tail.
    assert_eq!(red("(3771 057901 55480)"), "(3771 057901 55480)");
    // A broken IBAN checksum: left whole, not `DE88 [CARD]`.
    assert_eq!(red("DE88 3704 0044 0532 0130 00"), "DE88 3704 0044 0532 0130 00");
    assert_eq!(red("DE12 4111 1111 1111 1111 00"), "DE12 4111 1111 1111 1111 00");
}

/// Misses found by the external vectors (tests/data/python-ipaddress, detect-secrets), each
/// named after its source.
#[test]
fn ipaddress_tests_ipv4_compatible_ipv6_is_one_ipv6() {
    // Was `::[IPV4]`: the embedded IPv4 counted as one group of the two required.
    assert_eq!(red("a ::1.2.3.42 b"), "a [IPV6] b");
    assert_eq!(red("a ::1.2.3.4/24 b"), "a [IPV6] b");
    assert_eq!(red("a ::1.2.3.4%scope/24 b"), "a [IPV6] b");
    // One group is still not an address (`std::`-like text, range names).
    assert_eq!(red("a 2001:: b"), "a 2001:: b");
}

#[test]
fn detect_secrets_unsigned_jwt() {
    let unsigned = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJuYW1lIjoiSm9lIiwKInN0YXR1cyI6ImVtcGxveWVlIgp9";
    assert_eq!(red(&format!("t {unsigned} x")), "t [JWT] x");
    // Two segments whose second is not a JSON object's base64 are not a JWT.
    neg("eyJhbGciOiJIUzI1NiJ9.notjsonatall", "jwt");
}

#[test]
fn detect_secrets_slack_tokens_and_webhooks() {
    assert_eq!(red("t xoxo-523423-234243-234233-e039d02840a0b9379c x"), "t [SLACK_TOKEN] x");
    assert_eq!(
        red("post to https://hooks.slack.com/services/Txxxxxxxx/Bxxxxxxxx/xxxxxxxxxxxxxxxxxxxxxxxx now"),
        "post to https://[SLACK_TOKEN] now"
    );
}

#[test]
fn detect_secrets_gitlab_token_kinds() {
    for t in [
        "gldt-HwllOuhfw-wu0rlD_yep",
        "glsoat-PREfix_helloworld380_testin_pretty_long_token_long",
        "GR1348941PREfix_helloworld380",
        "glcbt-helloworld380_testin",
        "glimt-my-tokens_are-correctAB38",
        "glptt-Need5_T00-be-exactly-40-chars--ELse_fail",
        "glagent-Need5_T00-bee-longer-than-50_chars-or-else-failING-still_OK",
    ] {
        assert_eq!(red(&format!("t {t} x")), "t [GITLAB_TOKEN] x", "{t}");
    }
    neg("glpat_hellOworld380_testin", "gitlab_token");
    neg("GR1348941helloWord0", "gitlab_token");
}

/// Local parts with RFC 5322 specials people use; quoted local parts are not matched.
#[test]
fn email_local_part_specials() {
    assert_eq!(red("mail o'brien@example.com now"), "mail [EMAIL] now");
    assert_eq!(red("mail first+tag@example.com now"), "mail [EMAIL] now");
    assert_eq!(red("bill&ted=friends!x@example.tld"), "[EMAIL]");
    // `/` separates values; after it, the URL rule keeps what precedes `=` (a query key).
    assert_eq!(red("4111111111111111/john.doe@example.com"), "[CARD]/[EMAIL]");
    assert_eq!(red("user+mailbox/department=shipping@example.tld"), "user+mailbox/department=[EMAIL]");
    assert_eq!(red("a&b@example.com x~y@example.com"), "[EMAIL] [EMAIL]");
    // Quotes, backticks and braces around an address stay outside it.
    assert_eq!(red("'john@example.com'"), "'[EMAIL]'");
    assert_eq!(red("`john@example.com`"), "`[EMAIL]`");
    assert_eq!(red("{john@example.com}"), "{[EMAIL]}");
    assert_eq!(red("don't write to 'o'brien@example.com'"), "don't write to '[EMAIL]'");
    // In a URL the path or query key before the address is kept.
    assert_eq!(red("https://app.example.com/users/john@example.com"), "https://app.example.com/users/[EMAIL]");
    assert_eq!(red("https://app.example.com/invite?email=john@example.com&x=1"), "https://app.example.com/invite?email=[EMAIL]&x=1");
    assert_eq!(red("mailto:john@example.com"), "mailto:[EMAIL]");
    assert_eq!(red("GET /users/jane.doe@example.com HTTP/1.1"), "GET /users/[EMAIL] HTTP/1.1");
    // Quoted local parts: only the part after the quote could be matched, and there is none.
    assert_eq!(red(r#""john doe"@example.com"#), r#""john doe"@example.com"#);
}
