//! Validators for built-in detectors (checksums, ranges, boundaries).
//!
//! Each validator gets the normalised haystack and a raw regex match `[s, e)`, reads at most two
//! (phone: [`PHONE_LOOKBEHIND`])
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

/// Luhn checksum over ASCII digits (other bytes fail it).
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let Some(mut v) = d.checked_sub(b'0').map(u32::from).filter(|&v| v < 10) else { return false };
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

/// Lengths of the digit groups of `span` (separated by single spaces or dashes).
fn groups(span: &[u8]) -> impl Iterator<Item = usize> + '_ {
    span.split(|&b| b == b' ' || b == b'-').map(<[u8]>::len)
}

/// The layouts issuers print: compact, 4-4-4-4, 4-6-5 (Amex), 4-6-4 (Diners), 4-5-6 (UATP).
/// Only these may end where the digits go on, since a card followed by a number is common and
/// an odd layout there is more likely two values run together.
fn complete_layout(span: &[u8]) -> bool {
    let g: Vec<usize> = groups(span).collect();
    matches!(g.as_slice(), [_] | [4, 4, 4, 4] | [4, 6, 5] | [4, 6, 4] | [4, 5, 6])
}

/// Any layout of a card on its own: a complete one, 4-4-4-n (13-15 and 17-19 digits, also
/// 4-4-4-4-n), or groups of at least 4 digits.
fn plausible_layout(span: &[u8]) -> bool {
    let g: Vec<usize> = groups(span).collect();
    let fours = g.first() == Some(&4) && g.iter().rev().skip(1).all(|&n| n == 4);
    complete_layout(span) || fours || g.iter().all(|&n| n >= 4)
}

/// A separator then a digit at `i`: the grouped number goes on.
fn group_follows(h: &[u8], i: usize) -> bool {
    matches!(h.get(i), Some(b' ' | b'-')) && h.get(i + 1).is_some_and(u8::is_ascii_digit)
}

/// Issuer prefixes and lengths (ISO/IEC 7812): `1` UATP at 15 digits; `2`-`6` (Mastercard,
/// Amex, Diners, JCB, Visa, Discover, UnionPay, Maestro, Mir, RuPay…) at 13-19; `81`/`82`
/// (UnionPay, RuPay) at 16-19; `9792` (Troy) at 16. Other `7`-`9` numbers are not payment
/// cards (fuel cards, SIM ICCIDs `89…`).
fn issuer_length(digits: &[u8]) -> bool {
    let n = digits.len();
    match digits {
        [b'1', ..] => n == 15,
        [b'2'..=b'6', ..] => (13..=19).contains(&n),
        [b'8', b'1' | b'2', ..] => (16..=19).contains(&n),
        [b'9', b'7', b'9', b'2', ..] => n == 16,
        _ => false,
    }
}

/// A separator after an IBAN head `CCdd` (`DE89 3704 …`): the digits are an IBAN's account
/// number (valid or not), not a card.
fn after_iban_head(h: &[u8], s: usize) -> bool {
    if s < 2 || !matches!(h.get(s - 1), Some(b' ' | b'-')) {
        return false;
    }
    let back = h.get(s.saturating_sub(9)..s - 1).unwrap_or_default();
    let group = back.rsplit(|b| !b.is_ascii_alphanumeric()).next().unwrap_or_default();
    matches!(group, [a, b, c, d] if a.is_ascii_uppercase() && b.is_ascii_uppercase() && c.is_ascii_digit() && d.is_ascii_digit())
}

/// Payment card: an issuer prefix at its lengths ([`issuer_length`]), Luhn-valid, not part of a
/// longer number or an IBAN. The span ends where
/// the number does (the longest such, in a plausible layout, not continuing a grouped number to
/// the left), else at the longest group boundary giving a complete layout (`4242 4242 4242 4242
/// 12` finds the card, `4111111111111111 5555555555554444` two cards).
pub fn card(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b'.') {
        return None;
    }
    let m = h.get(s..e)?;
    if after_iban_head(h, s) {
        return None;
    }
    let valid = |end: usize| {
        let span = h.get(s..end).unwrap_or_default();
        let mut digits = [0u8; 19];
        let mut n = 0;
        for &d in span.iter().filter(|b| b.is_ascii_digit()) {
            if let Some(slot) = digits.get_mut(n) {
                *slot = d;
            }
            n += 1;
        }
        let digits = digits.get(..n).unwrap_or_default();
        n <= 19 && issuer_length(digits) && luhn(digits)
    };
    let continues_left = s >= 2 && matches!(h.get(s - 1), Some(b' ' | b'-')) && h.get(s - 2).is_some_and(u8::is_ascii_digit);
    if !continues_number(h, e) && !group_follows(h, e) && valid(e) && (complete_layout(m) || (plausible_layout(m) && !continues_left)) {
        return Some((s, e));
    }
    // Group boundaries inside the match, longest first.
    (1..m.len())
        .rev()
        .filter(|&i| matches!(m.get(i), Some(b' ' | b'-')) && m.get(i - 1).is_some_and(u8::is_ascii_digit))
        .map(|i| s + i)
        .find(|&end| complete_layout(h.get(s..end).unwrap_or_default()) && valid(end))
        .map(|end| (s, end))
}

/// US SSN `AAA-GG-SSSS` (or spaces or dots, same separator twice); area not 000, 666 or
/// 900-999, group not 00, serial not 0000.
pub fn ssn(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b'-' || b == b'.') || continues_number(h, e) {
        return None;
    }
    let m = h.get(s..e)?;
    if m.len() != 11 || m.get(3) != m.get(6) {
        return None;
    }
    let num = |a: Option<&[u8]>| a.unwrap_or_default().iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d.wrapping_sub(b'0') % 10));
    let (area, group, serial) = (num(m.get(0..3)), num(m.get(4..6)), num(m.get(7..11)));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return None;
    }
    Some((s, e))
}

/// IBAN lengths by country: the SWIFT IBAN registry (release 101) as summarised in
/// python-stdnum 2.2's `iban.dat` (BBAN structure lengths + 4). Sorted by country code.
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
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// ISO 7064 mod 97-10 over an IBAN's alphanumerics (already rearranged).
pub fn iban_mod97(chars: &[u8]) -> bool {
    let mut r: u32 = 0;
    let (Some(head), Some(tail)) = (chars.get(..4), chars.get(4..)) else { return false };
    let rearranged = tail.iter().chain(head.iter());
    for &c in rearranged {
        match c {
            b'0'..=b'9' => r = (r * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => r = (r * 100 + u32::from(c - b'A' + 10)) % 97,
            _ => return false,
        }
    }
    r == 1
}

/// Digits every accepted IBAN holds (check digits included): registry formats have far more,
/// and the run scanner's prefilter counts on it (`min_triggers` of `iban` in `builtin`). Without
/// it, a short letter-heavy candidate was accepted when digits *before* it in the same run met
/// the prefilter, so one-shot and streamed scans disagreed (found by the `engine` fuzz target).
pub const IBAN_MIN_DIGITS: usize = 8;

/// IBAN (compact, or grouped with single spaces or dashes): country length from the registry
/// (unknown countries: the whole match), at least [`IBAN_MIN_DIGITS`] digits, mod-97 == 1, not
/// followed by more letters or digits.
pub fn iban(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(is_word) {
        return None;
    }
    let m = h.get(s..e)?;
    let cc = m.get(..2)?;
    let want = IBAN_LEN.binary_search_by(|(c, _)| c.as_slice().cmp(cc)).ok().and_then(|k| IBAN_LEN.get(k)).map(|&(_, n)| n);
    let mut chars = Vec::with_capacity(34);
    let mut end = None;
    for (i, &b) in m.iter().enumerate() {
        if b == b' ' || b == b'-' {
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
    if !(15..=34).contains(&chars.len()) || chars.iter().filter(|b| b.is_ascii_digit()).count() < IBAN_MIN_DIGITS || !iban_mod97(&chars) {
        return None;
    }
    Some((s, end))
}

/// Octets 0-255 without leading zeros.
fn octets_ok(addr: &[u8]) -> bool {
    addr.split(|&b| b == b'.').all(|oct| {
        let v = oct.iter().fold(0u32, |a, &d| a * 10 + u32::from(d.wrapping_sub(b'0') % 10));
        !oct.is_empty() && oct.len() <= 3 && !(oct.len() > 1 && oct.first() == Some(&b'0')) && v <= 255
    })
}

/// IPv4 dotted quad, with its CIDR prefix length (`10.0.0.0/8`, ≤ 32) when it has one: octets
/// 0-255 without leading zeros, not part of a longer dotted number or a word (`v1.2.3.4`,
/// `1.2.3.4.5`). A `/` suffix that is not a prefix length (`10.0.0.1/10.0.0.2`) stays outside.
pub fn ipv4(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b'.' || b == b'-') {
        return None;
    }
    let m = h.get(s..e)?;
    let slash = m.iter().position(|&b| b == b'/');
    let addr_end = slash.map_or(e, |i| s + i);
    if !octets_ok(h.get(s..addr_end)?) {
        return None;
    }
    if let Some(i) = slash {
        let prefix = m.get(i + 1..).unwrap_or_default();
        let v = prefix.iter().fold(0u32, |a, &d| a * 10 + u32::from(d.wrapping_sub(b'0') % 10));
        // Prefix lengths are written without leading zeros: `/020 7946 0958` is a phone number.
        if v <= 32 && !(prefix.len() > 1 && prefix.first() == Some(&b'0')) && !continues_number(h, e) {
            return Some((s, e));
        }
    }
    (!continues_number(h, addr_end)).then_some((s, addr_end))
}

/// An IPv6 address proper: parsed by the standard library, at least two groups with hex digits
/// and one decimal digit, at least 6 characters.
fn ipv6_addr_ok(m: &[u8]) -> bool {
    let parses = std::str::from_utf8(m).ok().is_some_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok());
    // An embedded IPv4 (`::1.2.3.4`, `::ffff:192.0.2.1`) is 32 bits: two groups.
    let groups: usize = m.split(|&b| b == b':').filter(|g| !g.is_empty()).map(|g| if g.contains(&b'.') { 2 } else { 1 }).sum();
    parses && groups >= 2 && m.iter().any(u8::is_ascii_digit) && m.len() >= 6
}

/// `%zone` (1-16 characters) and/or `/prefix` (≤ 128), the whole of `suffix`.
fn ipv6_suffix_ok(suffix: &[u8]) -> bool {
    let (zone, prefix) = match suffix.iter().position(|&b| b == b'/') {
        Some(i) => (suffix.get(..i).unwrap_or_default(), suffix.get(i + 1..)),
        None => (suffix, None),
    };
    let zone_ok = zone.is_empty() || (zone.first() == Some(&b'%') && (2..=17).contains(&zone.len()));
    let prefix_ok = prefix.is_none_or(|p| {
        (1..=3).contains(&p.len())
            && p.iter().all(u8::is_ascii_digit)
            && !(p.len() > 1 && p.first() == Some(&b'0'))
            && p.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')) <= 128
    });
    zone_ok && prefix_ok
}

/// IPv6 with its zone id and prefix length when present (`fe80::1%eth0`, `2001:db8::/32`):
/// the address parsed by the standard library, at least two groups with hex digits and one
/// decimal digit, so `a::b` or `dead::beef` in prose and `std::io` are not addresses.
pub fn ipv6(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || b == b':' || b == b'.') {
        return None;
    }
    let m = h.get(s..e)?;
    let mut e = e;
    if let Some(i) = m.iter().position(|&b| b == b'%' || b == b'/') {
        let addr = m.get(..i)?;
        // With the whole suffix, else without the prefix length (`%eth0/4111…`), else bare.
        let slash = m.iter().rposition(|&b| b == b'/').map(|j| s + j);
        for end in [Some(e), slash].into_iter().flatten() {
            let suffix = h.get(s + i..end).unwrap_or_default();
            if ipv6_addr_ok(addr) && ipv6_suffix_ok(suffix) && !after(h, end, 0).is_some_and(is_word) && !continues_number(h, end) {
                return Some((s, end));
            }
        }
        e = s + i;
    }
    let mut end = e;
    while end > s && (h.get(end - 1) == Some(&b'.') || (h.get(end - 1) == Some(&b':') && end >= s + 2 && h.get(end - 2) != Some(&b':'))) {
        end -= 1;
    }
    if after(h, end, 0).is_some_and(|b| is_word(b) && !b.is_ascii_hexdigit()) {
        return None;
    }
    ipv6_addr_ok(h.get(s..end)?).then_some((s, end))
}

/// National significant number lengths by country calling code (bit `n` set: `n` digits are
/// possible), from the `possible_length` of libphonenumber's metadata as shipped in the PyPI
/// `phonenumbers` 9.0.43 (Apache-2.0), union over the regions sharing a code. Sorted by code.
const CC_LENGTHS: &[(u16, u32)] = &[
    (1, 0x00480),   // 7,10
    (7, 0x04400),   // 10,14
    (20, 0x00700),  // 8,9,10
    (27, 0x007e0),  // 5,6,7,8,9,10
    (30, 0x01c00),  // 10,11,12
    (31, 0x00fe0),  // 5,6,7,8,9,10,11
    (32, 0x00300),  // 8,9
    (33, 0x00200),  // 9
    (34, 0x00200),  // 9
    (36, 0x00300),  // 8,9
    (39, 0x01fc0),  // 6,7,8,9,10,11,12
    (40, 0x00240),  // 6,9
    (41, 0x01200),  // 9,12
    (43, 0x03ff0),  // 4,5,6,7,8,9,10,11,12,13
    (44, 0x00680),  // 7,9,10
    (45, 0x00100),  // 8
    (46, 0x017c0),  // 6,7,8,9,10,12
    (47, 0x00120),  // 5,8
    (48, 0x007c0),  // 6,7,8,9,10
    (49, 0x0fff0),  // 4,5,6,7,8,9,10,11,12,13,14,15
    (51, 0x00300),  // 8,9
    (52, 0x00400),  // 10
    (53, 0x005c0),  // 6,7,8,10
    (54, 0x00c00),  // 10,11
    (55, 0x00f00),  // 8,9,10,11
    (56, 0x00e00),  // 9,10,11
    (57, 0x00d00),  // 8,10,11
    (58, 0x00400),  // 10
    (60, 0x00700),  // 8,9,10
    (61, 0x017e0),  // 5,6,7,8,9,10,12
    (62, 0x3ff80),  // 7,8,9,10,11,12,13,14,15,16,17
    (63, 0x03f40),  // 6,8,9,10,11,12,13
    (64, 0x007e0),  // 5,6,7,8,9,10
    (65, 0x00d00),  // 8,10,11
    (66, 0x02700),  // 8,9,10,13
    (81, 0x3ff00),  // 8,9,10,11,12,13,14,15,16,17
    (82, 0x07f60),  // 5,6,8,9,10,11,12,13,14
    (84, 0x00780),  // 7,8,9,10
    (86, 0x01f80),  // 7,8,9,10,11,12
    (90, 0x03480),  // 7,10,12,13
    (91, 0x03f00),  // 8,9,10,11,12,13
    (92, 0x01f00),  // 8,9,10,11,12
    (93, 0x00200),  // 9
    (94, 0x00200),  // 9
    (95, 0x007c0),  // 6,7,8,9,10
    (98, 0x004f0),  // 4,5,6,7,10
    (211, 0x00200), // 9
    (212, 0x00200), // 9
    (213, 0x00300), // 8,9
    (216, 0x00100), // 8
    (218, 0x00200), // 9
    (220, 0x00280), // 7,9
    (221, 0x00200), // 9
    (222, 0x00100), // 8
    (223, 0x00100), // 8
    (224, 0x00300), // 8,9
    (225, 0x00400), // 10
    (226, 0x00100), // 8
    (227, 0x00100), // 8
    (228, 0x00100), // 8
    (229, 0x00400), // 10
    (230, 0x00580), // 7,8,10
    (231, 0x00380), // 7,8,9
    (232, 0x00100), // 8
    (233, 0x00300), // 8,9
    (234, 0x07c00), // 10,11,12,13,14
    (235, 0x00100), // 8
    (236, 0x00100), // 8
    (237, 0x00300), // 8,9
    (238, 0x00080), // 7
    (239, 0x00080), // 7
    (240, 0x00200), // 9
    (241, 0x00180), // 7,8
    (242, 0x00200), // 9
    (243, 0x00780), // 7,8,9,10
    (244, 0x00200), // 9
    (245, 0x00280), // 7,9
    (246, 0x00080), // 7
    (247, 0x00060), // 5,6
    (248, 0x00080), // 7
    (249, 0x00200), // 9
    (250, 0x00300), // 8,9
    (251, 0x00200), // 9
    (252, 0x003c0), // 6,7,8,9
    (253, 0x00100), // 8
    (254, 0x00780), // 7,8,9,10
    (255, 0x00200), // 9
    (256, 0x00200), // 9
    (257, 0x00100), // 8
    (258, 0x00300), // 8,9
    (260, 0x00200), // 9
    (261, 0x00200), // 9
    (262, 0x00200), // 9
    (263, 0x00680), // 7,9,10
    (264, 0x00300), // 8,9
    (265, 0x00280), // 7,9
    (266, 0x00100), // 8
    (267, 0x00580), // 7,8,10
    (268, 0x00300), // 8,9
    (269, 0x00080), // 7
    (290, 0x00030), // 4,5
    (291, 0x00080), // 7
    (297, 0x00080), // 7
    (298, 0x00040), // 6
    (299, 0x00040), // 6
    (350, 0x00100), // 8
    (351, 0x00200), // 9
    (352, 0x00ff0), // 4,5,6,7,8,9,10,11
    (353, 0x00780), // 7,8,9,10
    (354, 0x00280), // 7,9
    (355, 0x003c0), // 6,7,8,9
    (356, 0x00100), // 8
    (357, 0x00100), // 8
    (358, 0x01fe0), // 5,6,7,8,9,10,11,12
    (359, 0x013c0), // 6,7,8,9,12
    (370, 0x00100), // 8
    (371, 0x00100), // 8
    (372, 0x00580), // 7,8,10
    (373, 0x00100), // 8
    (374, 0x00100), // 8
    (375, 0x00fc0), // 6,7,8,9,10,11
    (376, 0x00340), // 6,8,9
    (377, 0x00300), // 8,9
    (378, 0x00500), // 8,10
    (380, 0x00600), // 9,10
    (381, 0x01fc0), // 6,7,8,9,10,11,12
    (382, 0x00300), // 8,9
    (383, 0x01f00), // 8,9,10,11,12
    (385, 0x00380), // 7,8,9
    (386, 0x001e0), // 5,6,7,8
    (387, 0x00300), // 8,9
    (389, 0x00100), // 8
    (420, 0x01e00), // 9,10,11,12
    (421, 0x002c0), // 6,7,9
    (423, 0x00280), // 7,9
    (500, 0x00020), // 5
    (501, 0x00880), // 7,11
    (502, 0x00900), // 8,11
    (503, 0x00980), // 7,8,11
    (504, 0x00900), // 8,11
    (505, 0x00100), // 8
    (506, 0x00500), // 8,10
    (507, 0x00d80), // 7,8,10,11
    (508, 0x00240), // 6,9
    (509, 0x00100), // 8
    (590, 0x00200), // 9
    (591, 0x00300), // 8,9
    (592, 0x00080), // 7
    (593, 0x00f00), // 8,9,10,11
    (594, 0x00200), // 9
    (595, 0x00fc0), // 6,7,8,9,10,11
    (596, 0x00200), // 9
    (597, 0x000c0), // 6,7
    (598, 0x03ff0), // 4,5,6,7,8,9,10,11,12,13
    (599, 0x00180), // 7,8
    (670, 0x00180), // 7,8
    (672, 0x00040), // 6
    (673, 0x00080), // 7
    (674, 0x00080), // 7
    (675, 0x00180), // 7,8
    (676, 0x000a0), // 5,7
    (677, 0x000a0), // 5,7
    (678, 0x000a0), // 5,7
    (679, 0x00880), // 7,11
    (680, 0x00080), // 7
    (681, 0x00240), // 6,9
    (682, 0x00020), // 5
    (683, 0x00090), // 4,7
    (685, 0x004e0), // 5,6,7,10
    (686, 0x00120), // 5,8
    (687, 0x00040), // 6
    (688, 0x000e0), // 5,6,7
    (689, 0x00340), // 6,8,9
    (690, 0x000f0), // 4,5,6,7
    (691, 0x00080), // 7
    (692, 0x00080), // 7
    (800, 0x00100), // 8
    (808, 0x00100), // 8
    (850, 0x00500), // 8,10
    (852, 0x00be0), // 5,6,7,8,9,11
    (853, 0x00180), // 7,8
    (855, 0x00700), // 8,9,10
    (856, 0x00700), // 8,9,10
    (870, 0x01200), // 9,12
    (878, 0x01000), // 12
    (880, 0x007c0), // 6,7,8,9,10
    (881, 0x00600), // 9,10
    (882, 0x01f80), // 7,8,9,10,11,12
    (883, 0x01f00), // 8,9,10,11,12
    (886, 0x00f80), // 7,8,9,10,11
    (888, 0x00800), // 11
    (960, 0x00480), // 7,10
    (961, 0x00180), // 7,8
    (962, 0x00300), // 8,9
    (963, 0x00300), // 8,9
    (964, 0x00700), // 8,9,10
    (965, 0x00180), // 7,8
    (966, 0x00600), // 9,10
    (967, 0x00380), // 7,8,9
    (968, 0x00380), // 7,8,9
    (970, 0x00700), // 8,9,10
    (971, 0x01fe0), // 5,6,7,8,9,10,11,12
    (972, 0x01f80), // 7,8,9,10,11,12
    (973, 0x00100), // 8
    (974, 0x00b80), // 7,8,9,11
    (975, 0x00180), // 7,8
    (976, 0x00700), // 8,9,10
    (977, 0x00d00), // 8,10,11
    (979, 0x00200), // 9
    (992, 0x00200), // 9
    (993, 0x00100), // 8
    (994, 0x00200), // 9
    (995, 0x00200), // 9
    (996, 0x00600), // 9,10
    (998, 0x00200), // 9
];

/// Country calling code at the start of `digits` (codes are prefix-free) and its lengths mask.
fn country_code(digits: &[u8]) -> Option<(usize, u32)> {
    let mut cc: u16 = 0;
    for (i, &d) in digits.iter().take(3).enumerate() {
        cc = cc * 10 + u16::from(d.checked_sub(b'0')?);
        if let Ok(k) = CC_LENGTHS.binary_search_by_key(&cc, |&(c, _)| c) {
            return CC_LENGTHS.get(k).map(|&(_, mask)| (i + 1, mask));
        }
    }
    None
}

/// Whether `span` (a phone pattern match) has a plausible digit count: for `+CC` forms, a
/// national length the metadata allows for that country code; 10 for NANP; 10-11 for national
/// forms with a trunk `0`. Parentheses balanced, at most one pair.
fn phone_digits_ok(span: &[u8]) -> bool {
    let open = span.iter().filter(|&&b| b == b'(').count();
    let close = span.iter().filter(|&&b| b == b')').count();
    if open != close || open > 1 {
        return false;
    }
    let n = span.iter().filter(|b| b.is_ascii_digit()).count();
    match span.iter().find(|&&b| b != b'(') {
        Some(b'+') => {
            let mut head = [0u8; 3];
            for (slot, &d) in head.iter_mut().zip(span.iter().filter(|b| b.is_ascii_digit())) {
                *slot = d;
            }
            match country_code(head.get(..n.min(3)).unwrap_or_default()) {
                Some((cc, mask)) => (8..=15).contains(&n) && (mask >> n.saturating_sub(cc).min(31)) & 1 == 1,
                None => false,
            }
        }
        Some(b'0') => (10..=11).contains(&n),
        _ => n == 10,
    }
}

/// How far back the phone validator reads (the engine keeps this much context).
pub const PHONE_LOOKBEHIND: usize = 24;

/// A national number with a trunk `0` starting at the third or later space-separated digit
/// group (`DE89 3704 0044 0532 0130 00`, `5106 0330 8910 4479`) reads as the tail of that
/// grouped number, not as a phone number, unless the groups before it are a whole phone or card
/// number (`020 7946 0958 020 7946 0958`). After one group (`room 12 020 7946 0958`, `SD 20241
/// 020 7946 0958`) it is a phone number, unless the whole has a card layout.
fn trunk_tail(h: &[u8], s: usize, e: usize) -> bool {
    if h.get(s) != Some(&b'0') {
        return false;
    }
    let lo = s.saturating_sub(PHONE_LOOKBEHIND);
    let Some(sep) = s.checked_sub(1) else { return false };
    // Starts of the space-separated groups before `s`, nearest first.
    let mut starts = Vec::new();
    let mut i = sep;
    while i > lo && h.get(i) == Some(&b' ') {
        let end = i;
        while i > lo && h.get(i - 1).is_some_and(u8::is_ascii_alphanumeric) {
            i -= 1;
        }
        let group = h.get(i..end).unwrap_or_default();
        if group.is_empty() || !group.iter().any(u8::is_ascii_digit) {
            break;
        }
        starts.push(i);
        i = i.saturating_sub(1);
    }
    if let [g] = starts[..] {
        // One group before: a tail only when the whole is laid out like a card (`3771 057901
        // 55480`, an Amex number failing Luhn).
        let whole = h.get(g..e).unwrap_or_default();
        let digits = whole.iter().filter(|b| b.is_ascii_digit()).count();
        let layout: Vec<usize> = groups(whole).collect();
        return (13..=19).contains(&digits) && matches!(layout.as_slice(), [4, 6, 5] | [4, 6, 4] | [4, 4, 4, 4]);
    }
    if starts.is_empty() {
        return false;
    }
    let whole = |g: usize| {
        let span = h.get(g..sep).unwrap_or_default();
        let digits: Vec<u8> = span.iter().copied().filter(u8::is_ascii_digit).collect();
        let is_phone = h.get(..sep).and_then(|t| crate::detect::phone_at(t, g)) == Some(sep) && phone_digits_ok(span);
        let is_card = (13..=19).contains(&digits.len()) && luhn(&digits) && complete_layout(span);
        is_phone || is_card
    };
    !starts.iter().any(|&g| whole(g) || (g > 0 && h.get(g - 1) == Some(&b'+') && whole(g - 1)))
}

/// Phone number: boundaries (not inside a longer number or word) and digit count (see
/// [`phone_digits_ok`]). The span ends where the number does, or else at the longest space
/// between groups that gives a valid count, preferring one whose last group does not start with
/// the trunk `0` (that group more likely starts the next number), so a phone number followed by another number (`+1 415 555 0132 020 7946 0958`, and
/// `+49 30 1234567 020 7946 0958` though German numbers have 4-15 digits) is found, and so is
/// the one after it.
pub fn phone(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if before(h, s).is_some_and(|b| is_word(b) || matches!(b, b'+' | b'-' | b'.' | b')')) {
        return None;
    }
    // The look-behind last: it is the costly check, and most candidates fail the count.
    phone_span(h, s, e).filter(|_| !trunk_tail(h, s, e))
}

/// [`phone`] for the `+CC` forms only (the policy names regions, whose national formats
/// another scanner finds).
pub fn phone_international(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if h.get(s) != Some(&b'+') {
        return None;
    }
    phone(h, s, e)
}

/// The span of a phone match whose left boundary is checked (see [`phone`]).
fn phone_span(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let m = h.get(s..e)?;
    if !continues_number(h, e) && !after(h, e, 0).is_some_and(is_word) && phone_digits_ok(m) {
        return Some((s, e));
    }
    let zero_last = |span: &[u8]| span.iter().rposition(|&b| b == b' ').and_then(|i| span.get(i + 1)) == Some(&b'0');
    let mut first_valid = None;
    for i in (1..m.len()).rev().filter(|&i| m.get(i) == Some(&b' ') && m.get(i - 1).is_some_and(u8::is_ascii_digit)) {
        let span = m.get(..i).unwrap_or_default();
        if phone_digits_ok(span) {
            if !zero_last(span) {
                return Some((s, s + i));
            }
            first_valid.get_or_insert(s + i);
        }
    }
    first_valid.map(|end| (s, end))
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
    let m = h.get(s..e)?;
    let local = m.get(..m.iter().position(|&b| b == b'@')?)?;
    if local.first() == Some(&b'.') || local.last() == Some(&b'.') {
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
    use crate::detect::{Matcher, card_at, iban_at, ipv4_at, jwt_at, phone_at, ssn_at};
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
        "(020)",
        "(0",
        "-7946",
        ".0958",
        "4155550132",
        "02079460958",
        "07700",
        "900123",
        "020",
        "+44",
        "+1",
        "(415)",
        "12345678",
        "123456789012345",
    ];

    /// Pieces of card numbers, issuer prefixes and separators.
    const CARD_PARTS: &[&str] = &["4111", "1111", "5555", "8112", "9792", "7777", "0", "1", "8", "9", "3", " ", "-", "  ", "a"];

    /// Pieces of IBANs, country codes, check digits and separators.
    const IBAN_PARTS: &[&str] = &["DE", "GB", "89", "3704", "0044", "WEST", "A", "Z", "0", "9", " ", "-", "  ", "a", "DE89", "GB82"];

    /// Segment lengths at and around the JWT pattern's bounds.
    const JWT_LENS: &[usize] = &[0, 1, 3, 4, 5, 6, 7, 8, 1023, 1024, 1025, 4089, 4090, 4091, 4092, 4093, 4094, 4095, 4096, 4097];

    /// A JWT-like string: optional `eyJ`, three runs of base64url bytes of lengths around the
    /// bounds, separators that are or are not dots, the second run optionally starting `eyJ`,
    /// cut short anywhere (the scanner hands the matcher a window-long slice).
    fn jwt_like() -> impl Strategy<Value = String> {
        let len = || prop::sample::select(JWT_LENS);
        // Weighted towards what matches: dots, an `eyJ` head, the whole string.
        let sep = || prop::sample::select(&[".", ".", ".", "", " ", "..", "="][..]);
        let head = prop::sample::select(&[true, true, true, false][..]);
        let cut = prop_oneof![Just(1.0), 0.0..=1.0f64];
        (head, len(), sep(), any::<bool>(), len(), sep(), len(), cut).prop_map(|(head_eyj, a, s1, body_eyj, b, s2, c, cut)| {
            let run = |n: usize, fill: &str| fill.repeat(n / fill.len() + 1)[..n].to_string();
            let body = if body_eyj { format!("eyJ{}", run(b.saturating_sub(3), "Zz9_")) } else { run(b, "a-Q") };
            let s = format!("{}{}{s1}{body}{s2}{} tail", if head_eyj { "eyJ" } else { "" }, run(a, "Ab1-"), run(c, "k_7"));
            let keep = (s.len() as f64 * cut) as usize;
            s[..keep].to_string()
        })
    }

    fn anchored(name: &str) -> regex::bytes::Regex {
        let b = BUILTINS.iter().find(|b| b.name == name).unwrap();
        compile(&format!(r"\A(?:{})", b.pattern)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The hand-written matchers agree with the documented regexes at every start.
        #[test]
        fn hand_written_matchers_equal_regexes(s in "[0-9 .\\-a/]{0,30}") {
            let h = s.as_bytes();
            for (name, f) in [("card", card_at as fn(&[u8], usize) -> Option<usize>), ("ssn", ssn_at), ("ipv4", ipv4_at)] {
                let re = anchored(name);
                for st in 0..=h.len() {
                    let want = re.find(&h[st..]).map(|m| st + m.end());
                    prop_assert_eq!(f(h, st), want, "{} at {} in {:?}", name, st, s);
                }
            }
        }

        /// The card matcher agrees with the card regex at every start, on strings dense in
        /// card-like digit groups (the generic strings above rarely hold 13 digits).
        #[test]
        fn card_matcher_equals_regex(parts in prop::collection::vec(prop::sample::select(CARD_PARTS), 0..12)) {
            let s = parts.concat();
            let h = s.as_bytes();
            let re = anchored("card");
            for st in 0..=h.len() {
                let want = re.find(&h[st..]).map(|m| st + m.end());
                prop_assert_eq!(card_at(h, st), want, "card at {} in {:?}", st, s);
            }
        }

        /// The IBAN matcher agrees with the IBAN regex at every start, and its leftmost search
        /// with the regex's search from every position.
        #[test]
        fn iban_matcher_equals_regex(parts in prop::collection::vec(prop::sample::select(IBAN_PARTS), 0..16)) {
            let s = parts.concat();
            let h = s.as_bytes();
            let re = anchored("iban");
            let unanchored = compile(BUILTINS.iter().find(|b| b.name == "iban").unwrap().pattern).unwrap();
            for st in 0..=h.len() {
                let want = re.find(&h[st..]).map(|m| st + m.end());
                prop_assert_eq!(iban_at(h, st), want, "iban at {} in {:?}", st, s);
                let want = unanchored.find_at(h, st).map(|m| (m.start(), m.end()));
                prop_assert_eq!(Matcher::Iban.find_at(h, st), want, "iban from {} in {:?}", st, s);
            }
        }

        /// The JWT matcher agrees with the JWT regex at every start, around every segment bound
        /// and wherever the slice ends (the scanner hands it a window-long slice).
        #[test]
        fn jwt_matcher_equals_regex(s in jwt_like()) {
            let h = s.as_bytes();
            let re = anchored("jwt");
            for st in 0..=h.len() {
                let want = re.find(&h[st..]).map(|m| st + m.end());
                prop_assert_eq!(jwt_at(h, st), want, "jwt at {} in a string of {} bytes", st, h.len());
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
