//! Validators for built-in detectors (checksums, ranges, boundaries).
//!
//! Each validator gets the normalised haystack and a raw regex match `[s, e)`, reads at most two
//! bytes before `s` and two bytes after `e`, and returns the span to act on or `None`.

fn before(h: &[u8], s: usize) -> Option<u8> {
    if s == 0 { None } else { h.get(s - 1).copied() }
}

fn after(h: &[u8], e: usize, k: usize) -> Option<u8> {
    h.get(e + k).copied()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `.`/`-` followed by a digit right after the match: the number continues.
fn continues_number(h: &[u8], e: usize) -> bool {
    match after(h, e, 0) {
        Some(b) if b.is_ascii_digit() => true,
        Some(b'.') | Some(b'-') => after(h, e, 1).is_some_and(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// Luhn checksum over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Payment card: 13-19 digits, Luhn-valid, not part of a longer number. Tries the longest
/// group-aligned prefix first, so `4242 4242 4242 4242 12` still finds the card.
pub fn card(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b'.') {
        return None;
    }
    // Candidate ends: the match end (if the number stops there) and every separator position.
    let m = &h[s..e];
    let mut ends: Vec<usize> = Vec::new();
    if !continues_number(h, e) {
        ends.push(e);
    }
    for (i, &b) in m.iter().enumerate().rev() {
        if (b == b' ' || b == b'-') && i > 0 && m[i - 1].is_ascii_digit() {
            ends.push(s + i);
        }
    }
    for end in ends {
        let digits: Vec<u8> = h[s..end].iter().copied().filter(u8::is_ascii_digit).collect();
        if (13..=19).contains(&digits.len()) && luhn(&digits) {
            return Some((s, end));
        }
    }
    None
}

/// US SSN `AAA-GG-SSSS` (or spaces, same separator twice); area not 000, 666 or 900-999, group
/// not 00, serial not 0000.
pub fn ssn(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b'-' || b == b'.') || continues_number(h, e) {
        return None;
    }
    let m = &h[s..e];
    if m.len() != 11 || m[3] != m[6] {
        return None;
    }
    let num = |a: &[u8]| a.iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    let (area, group, serial) = (num(&m[0..3]), num(&m[4..6]), num(&m[7..11]));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return None;
    }
    Some((s, e))
}

/// IBAN lengths by country (ISO 13616 registry, common countries).
const IBAN_LEN: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VG", 24),
    (b"XK", 20),
];

/// ISO 7064 mod 97-10 over an IBAN's alphanumerics (already rearranged).
pub fn iban_mod97(chars: &[u8]) -> bool {
    let mut r: u32 = 0;
    let rearranged = chars[4..].iter().chain(chars[..4].iter());
    for &c in rearranged {
        match c {
            b'0'..=b'9' => r = (r * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => r = (r * 100 + u32::from(c - b'A' + 10)) % 97,
            _ => return false,
        }
    }
    r == 1
}

/// IBAN: country length from the registry (unknown countries: the whole match), mod-97 == 1,
/// not followed by more letters or digits.
pub fn iban(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(is_word) {
        return None;
    }
    let m = &h[s..e];
    let want = IBAN_LEN.iter().find(|(cc, _)| &m[..2] == *cc).map(|&(_, n)| n);
    let mut chars = Vec::with_capacity(34);
    let mut end = None;
    for (i, &b) in m.iter().enumerate() {
        if b == b' ' {
            continue;
        }
        chars.push(b);
        if Some(chars.len()) == want {
            end = Some(s + i + 1);
            break;
        }
    }
    let end = match want {
        Some(_) => end?,
        None => e,
    };
    if h.get(end).is_some_and(|&b| is_word(b)) {
        return None;
    }
    if !(15..=34).contains(&chars.len()) || !iban_mod97(&chars) {
        return None;
    }
    Some((s, end))
}

/// IPv4 dotted quad: octets 0-255 without leading zeros, not part of a longer dotted number or
/// a word (`v1.2.3.4`, `1.2.3.4.5`).
pub fn ipv4(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b'.' || b == b'-') || continues_number(h, e) {
        return None;
    }
    for oct in h[s..e].split(|&b| b == b'.') {
        if oct.is_empty() || oct.len() > 3 || (oct.len() > 1 && oct[0] == b'0') {
            return None;
        }
        let v = oct.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
        if v > 255 {
            return None;
        }
    }
    Some((s, e))
}

/// IPv6: parsed by the standard library; at least two groups with hex digits and one decimal
/// digit, so `a::b` or `dead::beef` in prose and `std::io` are not addresses.
pub fn ipv6(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b':' || b == b'.') {
        return None;
    }
    let mut end = e;
    while end > s && (h[end - 1] == b'.' || (h[end - 1] == b':' && end >= s + 2 && h[end - 2] != b':')) {
        end -= 1;
    }
    if after(h, end, 0).is_some_and(|b| is_word(b) && !b.is_ascii_hexdigit()) {
        return None;
    }
    let m = &h[s..end];
    let text = std::str::from_utf8(m).ok()?;
    text.parse::<std::net::Ipv6Addr>().ok()?;
    let groups = m.split(|&b| b == b':').filter(|g| !g.is_empty()).count();
    if groups < 2 || !m.iter().any(u8::is_ascii_digit) || m.len() < 6 {
        return None;
    }
    Some((s, end))
}

/// Phone number: boundaries (not inside a longer number or word, not the tail of a grouped
/// number) and digit count (8-15 for international forms, 10 for NANP, 10-11 for national forms
/// with a trunk `0`). Reads two bytes before the match.
pub fn phone(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || matches!(b, b'+' | b'-' | b'.' | b'/' | b')'))
        || continues_number(h, e)
        || after(h, e, 0).is_some_and(|b| is_word(b) || b == b'/')
    {
        return None;
    }
    // Not the tail of a longer grouped number (`5106 0330 8910 4479`).
    if s >= 2 && matches!(h[s - 1], b' ' | b'-' | b'.') && h[s - 2].is_ascii_digit() {
        return None;
    }
    let m = &h[s..e];
    // Balanced parentheses only.
    let open = m.iter().filter(|&&b| b == b'(').count();
    let close = m.iter().filter(|&&b| b == b')').count();
    if open != close || open > 1 {
        return None;
    }
    let digits = m.iter().filter(|b| b.is_ascii_digit()).count();
    let ok = match m[0] {
        b'+' => (8..=15).contains(&digits),
        b'0' => (10..=11).contains(&digits),
        _ => digits == 10,
    };
    ok.then_some((s, e))
}

/// E-mail: the local part starts at a boundary and the domain is not followed by more name
/// characters.
pub fn email(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || matches!(b, b'.' | b'%' | b'+' | b'-' | b'@')) {
        return None;
    }
    if after(h, e, 0).is_some_and(|b| is_word(b) || b == b'-' || b == b'@') {
        return None;
    }
    let local_end = h[s..e].iter().position(|&b| b == b'@')? + s;
    if h[s] == b'.' || h[local_end - 1] == b'.' {
        return None;
    }
    Some((s, e))
}

/// AWS secret key in context: the span is the 40-character value after the key name.
pub fn aws_secret(_h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    (e >= s + 40).then(|| (e - 40, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_values() {
        assert!(luhn(b"4242424242424242"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4242424242424241"));
    }

    #[test]
    fn iban_known_values() {
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(!iban_mod97(b"DE89370400440532013001"));
    }
}

#[cfg(test)]
mod matcher_equivalence {
    use crate::detect::builtin::{BUILTINS, compile};
    use crate::detect::{card_at, ipv4_at, phone_at, ssn_at};
    use proptest::prelude::*;

    /// Pieces of phone numbers and near misses: dense enough that most strings hold a match.
    const PHONE_PARTS: &[&str] = &[
        "+",
        "(",
        ")",
        " ",
        "-",
        ".",
        "a",
        "0",
        "1",
        "2",
        "5",
        "9",
        "12",
        "44",
        "415",
        "555",
        "2671",
        "7946",
        "0958",
        "020",
        "+44",
        "+1",
        "(415)",
        "12345678",
        "123456789012345",
    ];

    fn anchored(name: &str) -> regex::bytes::Regex {
        let b = BUILTINS.iter().find(|b| b.name == name).unwrap();
        compile(&format!(r"\A(?:{})", b.pattern)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The hand-written matchers agree with the documented regexes at every start.
        #[test]
        fn hand_written_matchers_equal_regexes(s in "[0-9 .\\-a]{0,30}") {
            let h = s.as_bytes();
            for (name, f) in [("card", card_at as fn(&[u8], usize) -> Option<usize>), ("ssn", ssn_at), ("ipv4", ipv4_at)] {
                let re = anchored(name);
                for st in 0..=h.len() {
                    let want = re.find(&h[st..]).map(|m| st + m.end());
                    prop_assert_eq!(f(h, st), want, "{} at {} in {:?}", name, st, s);
                }
            }
        }

        /// The phone matcher agrees with the phone regex (backtracking order included) at
        /// every start, on strings made of the bytes its pattern cares about.
        #[test]
        fn phone_matcher_equals_regex(parts in prop::collection::vec(prop::sample::select(PHONE_PARTS), 0..16)) {
            let s = parts.concat();
            let h = s.as_bytes();
            let re = anchored("phone");
            for st in 0..=h.len() {
                let want = re.find(&h[st..]).map(|m| st + m.end());
                prop_assert_eq!(phone_at(h, st), want, "phone at {} in {:?}", st, s);
            }
        }
    }
}
