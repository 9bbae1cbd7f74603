//! Phone numbers in the national formats of the regions a policy names
//! (`redaction.rules.phone_regions`): a compact rule per region (trunk prefix, national number
//! lengths, leading two digits) instead of libphonenumber's full metadata (see
//! docs/redaction.md, "Phone numbers by region").

/// One region's national format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRule {
    /// ISO 3166-1 alpha-2 code.
    pub region: [u8; 2],
    /// National (trunk) prefix written before the national number (`0`, `8`, `06`, `1`), or
    /// empty.
    pub trunk: &'static [u8],
    /// Whether numbers are also written without the trunk prefix (the national format leaves
    /// it out, as in Brazil, China or NANP).
    pub omits_trunk: bool,
    /// Per national significant number length, the two-digit prefixes it can start with (bit
    /// `p`: prefix `p`).
    pub lengths: &'static [(u8, u128)],
}

/// Fewest digits of a national number this matcher accepts (trunk prefix included): the
/// digit-triggered detectors only look at runs with at least this many digits.
pub const MIN_DIGITS: usize = 8;
/// Most digits the matcher walks from a start (two numbers of up to 17 digits each, and a
/// short number before them): enough to see where a second number ends.
pub const WALK_DIGITS: usize = 40;
/// How far the matcher reads from a start, in bytes (the detector's window): the digits, a
/// separator after each, two parentheses, two bytes of right context.
pub const MAX_LEN: usize = 2 * WALK_DIGITS + 4;

/// The rules of `names` (upper-case ISO codes), or the first unknown name with its index.
pub fn rules(names: &[String]) -> Result<Vec<RegionRule>, (usize, String)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            REGIONS
                .binary_search_by(|(r, ..)| r.as_slice().cmp(n.as_bytes()))
                .ok()
                .and_then(|k| REGIONS.get(k))
                .map(|&(region, trunk, omits_trunk, lengths)| RegionRule { region, trunk: trunk.as_bytes(), omits_trunk, lengths })
                .ok_or_else(|| (i, n.clone()))
        })
        .collect()
}

/// Every region code the table knows, comma-separated (for error messages).
pub fn known() -> String {
    REGIONS.iter().map(|(r, ..)| String::from_utf8_lossy(r).into_owned()).collect::<Vec<_>>().join(", ")
}

fn nsn_ok(nsn: &[u8], lengths: &[(u8, u128)]) -> bool {
    let p = match nsn {
        [a, b, ..] => usize::from(a.wrapping_sub(b'0')) * 10 + usize::from(b.wrapping_sub(b'0')),
        _ => return false,
    };
    p < 100 && lengths.iter().any(|&(len, prefixes)| usize::from(len) == nsn.len() && (prefixes >> p) & 1 == 1)
}

/// Whether `digits` (trunk prefix included) is a national number of one of `rules`.
fn valid(digits: &[u8], rules: &[RegionRule]) -> bool {
    digits.len() >= MIN_DIGITS
        && rules.iter().any(|r| {
            let with_trunk = !r.trunk.is_empty() && digits.strip_prefix(r.trunk).is_some_and(|nsn| nsn_ok(nsn, r.lengths));
            let without = (r.trunk.is_empty() || r.omits_trunk) && nsn_ok(digits, r.lengths);
            with_trunk || without
        })
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A national number starting at `i`: digit groups, each two separated by a space, dash or dot,
/// one pair of parentheses around some groups (`(020) 7946 0958`, `8 (301) 123-45-67`,
/// `(0-312) 34567`). Ends where the groups do if the digits there fit a region; else at the
/// longest group boundary that fits, preferring one after which the rest is a number too, then
/// one where the next group starts with a trunk prefix (a second number begins there).
fn national_at(h: &[u8], i: usize, rules: &[RegionRule]) -> Option<usize> {
    let digit = |k: usize| h.get(k).is_some_and(u8::is_ascii_digit);
    let mut p = i;
    let (mut open, mut closed) = (false, false);
    if h.get(p) == Some(&b'(') {
        open = true;
        p += 1;
    }
    let mut digits = [0u8; WALK_DIGITS + 1];
    let mut n = 0;
    // (end, digits so far, dots so far)
    let mut ends = [(0usize, 0usize, 0usize); WALK_DIGITS + 1];
    let mut dots = 0;
    let mut k = 0;
    loop {
        let start = p;
        while digit(p) && n <= WALK_DIGITS {
            if let (Some(slot), Some(&d)) = (digits.get_mut(n), h.get(p)) {
                *slot = d;
            }
            n += 1;
            p += 1;
        }
        if p == start {
            return None;
        }
        if n > WALK_DIGITS {
            // Too long to see the end: a number may still end at an earlier group boundary.
            return pick(h, &digits, ends.get(..k)?, rules, false);
        }
        // The token to the next group: `)`? then one separator? then `(`?
        let close = open && !closed && h.get(p) == Some(&b')');
        let mut q = p + usize::from(close);
        let sep = matches!(h.get(q), Some(b' ' | b'.' | b'-'));
        q += usize::from(sep);
        let reopen = !open && h.get(q) == Some(&b'(');
        q += usize::from(reopen);
        let balanced = !open || closed || close;
        if (close || sep || reopen) && digit(q) {
            if balanced && let Some(slot) = ends.get_mut(k) {
                *slot = (p + usize::from(close), n, dots);
                k += 1;
            }
            dots += usize::from(h.get(p + usize::from(close)) == Some(&b'.'));
            closed |= close;
            open |= reopen;
            p = q;
            continue;
        }
        // The groups stop here.
        if !balanced {
            return None;
        }
        if let Some(slot) = ends.get_mut(k) {
            *slot = (p + usize::from(close), n, dots);
            k += 1;
        }
        break;
    }
    pick(h, &digits, ends.get(..k)?, rules, true)
}

/// The end among group `ends` (position, digits so far, dots so far) to take; `complete`: the
/// last end is where the groups stop. One dot between groups is a decimal number, not a phone
/// number (`3.1415926535`); dotted phone numbers have two or more (`415.555.2671`).
fn pick(h: &[u8], digits: &[u8], ends: &[(usize, usize, usize)], rules: &[RegionRule], complete: bool) -> Option<usize> {
    let fits = |&(_, n, dots): &(usize, usize, usize)| dots != 1 && digits.get(..n).is_some_and(|d| valid(d, rules));
    if let Some(&(e, n, dots)) = ends.last().filter(|_| complete) {
        // Not followed by a word, a time or ratio (`:`, `/`), or a decimal or list continuing
        // the number.
        let word_after = h.get(e).is_some_and(|&b| is_word(b) || b == b':' || b == b'/');
        let continues = matches!(h.get(e), Some(b'.' | b'-' | b',')) && h.get(e + 1).is_some_and(u8::is_ascii_digit);
        let right_ok = !word_after && !continues;
        if !right_ok {
            return None;
        }
        if fits(&(e, n, dots)) {
            return Some(e);
        }
    }
    let inner = if complete { ends.get(..ends.len().saturating_sub(1)).unwrap_or_default() } else { ends };
    let next_trunk = |n: usize| rules.iter().any(|r| !r.trunk.is_empty() && digits.get(n..).is_some_and(|t| t.starts_with(r.trunk)));
    // Best: the rest is a number too (`030 1234567 030 1234567`); then: a trunk prefix starts
    // the rest; then the longest.
    let total = ends.last().map_or(0, |e| e.1);
    let rest_fits = |n: usize| complete && digits.get(n..total).is_some_and(|d| valid(d, rules));
    inner
        .iter()
        .rev()
        .find(|end| fits(end) && rest_fits(end.1))
        .or_else(|| inner.iter().rev().find(|end| fits(end) && next_trunk(end.1)))
        .or_else(|| inner.iter().rev().find(|end| fits(end)))
        .map(|&(e, ..)| e)
}

/// Leftmost national number of `rules` in `h` starting at or after `at`, with its boundaries
/// checked: not after a word character, `+`, `-`, `.`, `)`, `(`, `/` or `:`.
pub fn find_national(h: &[u8], at: usize, rules: &[RegionRule]) -> Option<(usize, usize)> {
    let mut t = at;
    while t < h.len() {
        let i = t + h.get(t..)?.iter().position(|&b| b.is_ascii_digit() || b == b'(')?;
        t = i + 1;
        let left_ok = i == 0 || !h.get(i - 1).is_some_and(|&b| is_word(b) || matches!(b, b'+' | b'-' | b'.' | b')' | b'(' | b'/' | b':'));
        if left_ok && let Some(e) = national_at(h, i, rules) {
            return Some((i, e));
        }
    }
    None
}

/// Region, trunk prefix, trunk left out, per length the leading-two-digit set.
type RegionRow = ([u8; 2], &'static str, bool, &'static [(u8, u128)]);

/// National number rules per region, from libphonenumber's metadata as shipped in the PyPI
/// `phonenumbers` 9.0.43 (Apache-2.0): region, national (trunk) prefix as the region writes it,
/// whether the national format leaves the trunk prefix out, and per national significant
/// number length of fixed-line and mobile numbers the two-digit prefixes such numbers start
/// with (bit `p`: prefix `p`, `00`-`99`). Generated by the script in `docs/redaction.md`
/// ("Phone numbers by region"); sorted by region.
#[rustfmt::skip]
pub(crate) const REGIONS: &[RegionRow] = &[
    (*b"AC", "", false, &[(5, 0xfffff003fffffff00000)]),
    (*b"AD", "", false, &[(6, 0x3fffffffffc00ffc0000000), (9, 0x200000000000000000)]),
    (*b"AE", "0", false, &[(8, 0x7f0007f1fc001fc7f1fc00000), (9, 0x5f4000000000000)]),
    (*b"AF", "0", false, &[(9, 0xffc3f7fc1f07dff00000)]),
    (*b"AG", "1", true, &[(10, 0x4000000)]),
    (*b"AI", "1", true, &[(10, 0x4000000)]),
    (*b"AL", "0", false, &[(8, 0x3fe00000ffbfcffbfe00000), (9, 0x380000000000000000)]),
    (*b"AM", "0", false, &[(8, 0xfe900200000829a0397c09c00)]),
    (*b"AO", "", false, &[(9, 0xbf8000000000000003ff00000)]),
    (*b"AR", "0", false, &[(10, 0x80000007e35c00800), (11, 0x380000000000000000000000)]),
    (*b"AS", "1", true, &[(10, 0x100000000000000000)]),
    (*b"AT", "0", false, &[(4, 0x800), (5, 0xff000), (6, 0x20400084000800ff000), (7, 0xbf3f61f9cc5ebe6ff000), (8, 0xbf3f61f9cc5ebe6ff000), (9, 0xbf3f61f9cc5ebe6ff000), (10, 0xbf3f61f9cc5ebe6ff000), (11, 0xbf3f61f9cc5ebe6ff000), (12, 0xbf3f61f9cc5ebe6ff000), (13, 0xbf3f61f9cc5ebe6ff000)]),
    (*b"AU", "0", false, &[(9, 0x3e0efc00003fffffff00000)]),
    (*b"AW", "", false, &[(7, 0x900002625dd10000020000000)]),
    (*b"AX", "0", false, &[(6, 0x5ff0000040000), (7, 0x5ff0000040000), (8, 0x5ff0000040000), (9, 0x5ff0000040000), (10, 0x5ff0000000000)]),
    (*b"AZ", "0", false, &[(9, 0x800002040108c511007f41400)]),
    (*b"BA", "0", false, &[(8, 0x6effe00ffc0000000), (9, 0x91000000000000000)]),
    (*b"BB", "1", true, &[(10, 0x1000000)]),
    (*b"BD", "0", false, &[(6, 0xa00202000100000000000000), (7, 0x45cf300800018754d40000000), (8, 0x50e8de77dff3ff7ff8000000), (9, 0x404213bd7f75c47c3000000), (10, 0x50000186000cfe800)]),
    (*b"BE", "0", false, &[(8, 0x72ff00bbbffc0c7f1fc9fc00), (9, 0x3e00000000000)]),
    (*b"BF", "", false, &[(8, 0xfffff7fc7000031000fe)]),
    (*b"BG", "0", false, &[(6, 0x3ff00000), (7, 0x3f87efffffff8fefffff00000), (8, 0x3f87efffffff8fefffff00000), (9, 0xc038000000000000000000000)]),
    (*b"BH", "", false, &[(8, 0x20e7a00000ffc0032000)]),
    (*b"BI", "", false, &[(8, 0xf9bfe0000000a0400000)]),
    (*b"BJ", "", false, &[(10, 0x2)]),
    (*b"BL", "0", false, &[(9, 0x100600800000000000000)]),
    (*b"BM", "1", true, &[(10, 0x100000000000)]),
    (*b"BN", "", false, &[(7, 0x3ffffc00f9ffffffff00000)]),
    (*b"BO", "0", true, &[(8, 0xfffff20050c616400000)]),
    (*b"BQ", "", false, &[(7, 0xe9c00000020080000000)]),
    (*b"BR", "0", true, &[(10, 0xffbfeaebfe0ebfe6f996ff800), (11, 0xffbfeaebfe0ebfe6f996ff800)]),
    (*b"BS", "1", true, &[(10, 0x1000000)]),
    (*b"BT", "", false, &[(7, 0x1c1505c130e03807800000), (8, 0x8020000000000000030000)]),
    (*b"BW", "", false, &[(7, 0x17dffff8fdbfa00000), (8, 0xff800000000000000000)]),
    (*b"BY", "80", false, &[(9, 0x100222e38000)]),
    (*b"BZ", "", false, &[(7, 0x145534ef515455154d00000)]),
    (*b"CA", "1", true, &[(10, 0x44c76c59b64cef5c5fd00000)]),
    (*b"CC", "0", false, &[(9, 0x20000000003ff0000000000)]),
    (*b"CD", "0", false, &[(7, 0x100003ffffffffffffffc00), (8, 0x8000000), (9, 0xf0eff00000000000000001000), (10, 0x200000000000000)]),
    (*b"CF", "", false, &[(8, 0x3f402000000000600000)]),
    (*b"CG", "", false, &[(9, 0x400076)]),
    (*b"CH", "0", false, &[(9, 0x802fbb061901a078d600000)]),
    (*b"CI", "", false, &[(10, 0xa2000a2)]),
    (*b"CK", "", false, &[(5, 0x3ffffc00ffc3e3ebff00000)]),
    (*b"CL", "", false, &[(9, 0xffbff0b8bb6b82e0f04e00000)]),
    (*b"CM", "", false, &[(9, 0x3f4000000001c00000)]),
    (*b"CN", "0", true, &[(7, 0x880a80000020880003bf00400), (8, 0xaafaabf040bb8aaa8b9f00400), (9, 0xaae8eac848b78eea880000000), (10, 0xaefaebfe48fe1eeaebbf00400), (11, 0x2a09a000ab82a20800fe000)]),
    (*b"CO", "0", true, &[(8, 0x400000000000), (10, 0x400000001000002bc0000000)]),
    (*b"CR", "", false, &[(8, 0x3f803c3f20400000f600000)]),
    (*b"CU", "0", false, &[(6, 0x3000300000000), (7, 0xffc00003a60301e00000), (8, 0xffc1cfffee0381e00000), (10, 0x8100000000000000000000)]),
    (*b"CV", "", false, &[(7, 0xffc0000000e3800101fc00000)]),
    (*b"CW", "", false, &[(8, 0x7c00000000000000000000000)]),
    (*b"CX", "0", false, &[(9, 0x20000000003ff0000000000)]),
    (*b"CY", "", false, &[(8, 0xbc80000000000000007c00000)]),
    (*b"CZ", "", false, &[(9, 0xa3c01febc2e9bff00000)]),
    (*b"DE", "0", false, &[(5, 0x20000200000010040000000), (6, 0xffffffffffffffffe7ff00000), (7, 0xffffffffffffffffe7ff00000), (8, 0xffffffffffffffffe7ff00000), (9, 0xfffffffffffffffff7ff00000), (10, 0xffffffffffffffffe7ff30000), (11, 0xfffffffffffffffff7ff38000), (12, 0xfffffffffffffffff7ff00000), (13, 0xfffffffffffffffff7ff00000), (14, 0xffffffffffffdfffe7ff00000), (15, 0xffffffffffffdfffe7ff00000)]),
    (*b"DJ", "", false, &[(8, 0x20000000000008200000)]),
    (*b"DK", "", false, &[(8, 0xf7bc6ffffffffffdffff00000)]),
    (*b"DM", "1", true, &[(10, 0x10000000000000000000)]),
    (*b"DO", "1", true, &[(10, 0x1500000000000000000000)]),
    (*b"DZ", "0", false, &[(8, 0x37bfffffffc00), (9, 0x10000e03ff1c0000000000000)]),
    (*b"EC", "0", false, &[(8, 0x3f0fc3f0fc3f0fc00000), (9, 0xfa00000000000000000000000)]),
    (*b"EE", "", false, &[(7, 0x100ffbff19df8cb00000000), (8, 0x21e00000ffc000000000000)]),
    (*b"EG", "0", false, &[(8, 0x20000ffc0008000), (9, 0x3b15400374285e1003ff0a000), (10, 0x9c00)]),
    (*b"EH", "0", false, &[(9, 0x7bfff010000000000000)]),
    (*b"ER", "0", false, &[(7, 0x3ffffc0000000000003d800)]),
    (*b"ES", "", false, &[(9, 0x7f9fe47bff000010000000000)]),
    (*b"ET", "0", false, &[(9, 0xffc03e3c00600c00602400800)]),
    (*b"FI", "0", false, &[(5, 0x7fdfe001fe7f8007f9fe80000), (6, 0x7fdfe001fe7fdff7f9febe000), (7, 0x7fdfe001fe7fdff7f9febe000), (8, 0x7fdfe001fe7fdff7f9febe000), (9, 0x7fdfe001fe7fdff7f9febe000), (10, 0x5ff0000000000)]),
    (*b"FJ", "", false, &[(7, 0xffff9ffce558c201ffff00000)]),
    (*b"FK", "", false, &[(5, 0xfffffffffffffff00000)]),
    (*b"FM", "", false, &[(7, 0x3f0040000000000fb80000000)]),
    (*b"FO", "", false, &[(6, 0x10a02ff800ffffffffff00000)]),
    (*b"FR", "0", false, &[(9, 0xfe3ffffffefffffffc00)]),
    (*b"GA", "", false, &[(7, 0xfffffffffffffff00000), (8, 0x340670000000000008fe)]),
    (*b"GB", "0", false, &[(9, 0x77000), (10, 0xef8000000000319ff800)]),
    (*b"GD", "1", true, &[(10, 0x800000000000)]),
    (*b"GE", "0", true, &[(9, 0x80000ffe9e3d00000000)]),
    (*b"GF", "0", false, &[(9, 0x100200800000000000000)]),
    (*b"GG", "0", false, &[(10, 0x60000000000000004000)]),
    (*b"GH", "0", false, &[(9, 0xbe400ffff900000)]),
    (*b"GI", "", false, &[(8, 0x1758000000700000)]),
    (*b"GL", "", false, &[(6, 0xffffe007fefffff3fbff80000)]),
    (*b"GM", "", false, &[(7, 0xffffffffffffc3ffffff00000), (9, 0x2c800000000100000000000)]),
    (*b"GN", "", false, &[(8, 0xc0000000), (9, 0x6f000000000000000)]),
    (*b"GP", "0", false, &[(9, 0x100600800000000000000)]),
    (*b"GQ", "", false, &[(9, 0x80000a00400000)]),
    (*b"GR", "", false, &[(10, 0x40000030000000001fe00000)]),
    (*b"GT", "", false, &[(8, 0x1ff3fcfffffffffc00000)]),
    (*b"GU", "1", true, &[(10, 0x80000000000000000)]),
    (*b"GW", "", false, &[(9, 0x3800000000000100000000000)]),
    (*b"GY", "", false, &[(7, 0x7ffff00c30030ee00000)]),
    (*b"HK", "", false, &[(8, 0x7fc1000fffff8d5fcbfe00000)]),
    (*b"HN", "", false, &[(8, 0xfffffffc0000000ffdf400000)]),
    (*b"HR", "0", false, &[(8, 0x400000000003b9d0f80fffc00), (9, 0xe9c000000003b9d0f80f00000)]),
    (*b"HT", "", false, &[(8, 0x583fffff2400000)]),
    (*b"HU", "06", false, &[(8, 0x9f3bcff34cbf3f43f3fcffc00), (9, 0x4000040000c0100000)]),
    (*b"ID", "0", false, &[(7, 0x2000000080200000), (8, 0x79c003fc3e1f9ff7fbec00000), (9, 0x79fee3fc3e1f9ff7fbfe00000), (10, 0x79fee3fc3e1f9ff7fbfe00000), (11, 0x79fee3fc3e1f9ff7f3e800000), (12, 0x3ee00000000000000000000)]),
    (*b"IE", "0", false, &[(7, 0xfa0000038c40080003f400000), (8, 0x8000000200c2100002ffc00), (9, 0x47ec04870b325e0000affc00), (10, 0x1000000000000)]),
    (*b"IL", "0", false, &[(8, 0xfffff00000003fffffff00000), (9, 0xdfc000000000000), (11, 0x8000), (12, 0x8000)]),
    (*b"IM", "0", false, &[(10, 0x9c000000000000010000)]),
    (*b"IN", "0", false, &[(10, 0xffffffffffffbff7ffffff800)]),
    (*b"IO", "", false, &[(7, 0x6000000000)]),
    (*b"IQ", "0", false, &[(8, 0x450240d3343affc00), (9, 0x450240d3343a00000), (10, 0xfe000000000000000000)]),
    (*b"IR", "0", false, &[(6, 0xda34842548324c97a22800), (7, 0xda34842548324c97a22800), (10, 0x87cda34842548324c97a22800)]),
    (*b"IS", "", false, &[(7, 0x3fcf83feffdfe0000000000), (9, 0x4000000000)]),
    (*b"IT", "", false, &[(6, 0x3fe), (7, 0x3fe), (8, 0x3fe), (9, 0xff000003fe), (10, 0x8ff800003fe), (11, 0x3fe), (12, 0x100)]),
    (*b"JE", "0", false, &[(10, 0xe8000000000000008000)]),
    (*b"JM", "1", true, &[(10, 0x8000020000000000000000)]),
    (*b"JO", "0", false, &[(8, 0x800003c02000010c000000), (9, 0xe1800000040000000000)]),
    (*b"JP", "0", false, &[(9, 0xff3fcff3feff3fcffbfcff800), (10, 0x40100401000000000000000)]),
    (*b"KE", "0", false, &[(7, 0x3b3bf8340000000000), (8, 0x3f3bf8350000100000), (9, 0xffff7ffc7f0000147c00)]),
    (*b"KG", "0", false, &[(9, 0x80900284073dc00bd80500000)]),
    (*b"KH", "0", false, &[(8, 0xefefbef7ff0f01c1f078ffc00), (9, 0x301001f83c0f01c5f87841000)]),
    (*b"KI", "0", true, &[(5, 0x3f00000007ffffbff00000), (8, 0xffc0c000000000000000)]),
    (*b"KM", "", false, &[(7, 0x3c000003ffffc0000000)]),
    (*b"KN", "1", true, &[(10, 0x4000000000000000000000)]),
    (*b"KP", "0", false, &[(8, 0x20820822222280bff00000), (10, 0x80000)]),
    (*b"KR", "0", false, &[(5, 0x1e0f81e0380000000), (6, 0x1e0f81e0380000000), (8, 0x3fe00000), (9, 0x1e0f81e03bfef1c00), (10, 0x1e0f81e03800f1c00)]),
    (*b"KW", "", false, &[(8, 0xffc00003fff9c020003c00000)]),
    (*b"KY", "1", true, &[(10, 0x400000000)]),
    (*b"KZ", "8", false, &[(10, 0x75c00000000000000000)]),
    (*b"LA", "0", false, &[(8, 0x15204812048020480a00000), (9, 0x40000000), (10, 0x100000)]),
    (*b"LB", "0", true, &[(7, 0xffffdff3fffffffffc00ffc00), (8, 0x2d0c0000000003f200000)]),
    (*b"LC", "1", true, &[(10, 0x8000000000000000000)]),
    (*b"LI", "0", true, &[(7, 0xee00000000e724f00000), (9, 0x70000000000000000)]),
    (*b"LK", "0", false, &[(9, 0x818067dce92d8a27f8fa01800)]),
    (*b"LR", "0", false, &[(7, 0x3ffffcc00000000000), (8, 0x3ff00000), (9, 0x10030000080040200400000)]),
    (*b"LS", "", false, &[(8, 0x3ffffc00003ff00000)]),
    (*b"LT", "0", false, &[(8, 0x3ff010766480000000)]),
    (*b"LU", "", false, &[(4, 0xaf7fbffc00fffffffffc00000), (5, 0xaf7fbffc00fffffffffc00000), (6, 0xaf7fbffc00fffffffffc00000), (7, 0xaf7fbffc00fffffffffc00000), (8, 0xaf7fbffc00fffffffffc00000), (9, 0xaf7fbfffe4fffffffffc00000), (10, 0xaf7fbffc00fffffffffc00000), (11, 0xaf7fbffc00fffffffffc00000)]),
    (*b"LV", "", false, &[(8, 0x3ff00000003ff00000)]),
    (*b"LY", "0", false, &[(9, 0x1f93603bbe6f9a6019ff00000)]),
    (*b"MA", "0", false, &[(9, 0x7bfff0f8000000000000)]),
    (*b"MC", "0", true, &[(8, 0xe70800000000070ffc0000000), (9, 0xfffff000000000000000)]),
    (*b"MD", "0", false, &[(8, 0xf0bff1a000bfbfe00000)]),
    (*b"ME", "0", false, &[(8, 0x3c901c0303c0100000)]),
    (*b"MF", "0", false, &[(9, 0x100200800000000000000)]),
    (*b"MG", "0", false, &[(9, 0xff00100000)]),
    (*b"MH", "1", true, &[(7, 0x4050200101800000)]),
    (*b"MK", "0", false, &[(8, 0xffc00001fc0796f00000)]),
    (*b"ML", "", false, &[(8, 0xffe3cfffff03c110000300000)]),
    (*b"MM", "0", false, &[(6, 0x3fc10000), (7, 0x7e0ffffff07c000203f000), (8, 0xd906e00ab20502800034e7800), (9, 0xb602e0c8fbf901c0002000000), (10, 0xf700000000000000000000000)]),
    (*b"MN", "0", true, &[(8, 0xfffeb41e415a4000004601800), (9, 0x3c0f000), (10, 0x380e000)]),
    (*b"MO", "", false, &[(8, 0x3be0016c000000010000000)]),
    (*b"MP", "1", true, &[(10, 0x80000000000000000)]),
    (*b"MQ", "0", false, &[(9, 0x2400100600800000000000000)]),
    (*b"MR", "", false, &[(8, 0x3fffffff00000)]),
    (*b"MS", "1", true, &[(10, 0x40000000000000000)]),
    (*b"MT", "", false, &[(8, 0xd1000a100000000000ef00000)]),
    (*b"MU", "", false, &[(7, 0xa003ff003ef001db00000), (8, 0x2400ed0000000000000)]),
    (*b"MV", "", false, &[(7, 0xffc00ffde0000400240000000)]),
    (*b"MW", "0", false, &[(7, 0xff000), (9, 0xc030020000000000080600800)]),
    (*b"MX", "", false, &[(10, 0xfbadeffbfed83feefb9d00000)]),
    (*b"MY", "0", false, &[(8, 0xffffcff3fcff3fc0000000000), (9, 0xff000ff400), (10, 0xc8800)]),
    (*b"MZ", "", false, &[(8, 0x3fa00000), (9, 0x3fc00000000000000000000)]),
    (*b"NA", "0", false, &[(8, 0xfe000000000000000), (9, 0x36000ff000000000000000)]),
    (*b"NC", "", false, &[(6, 0xfffffffc00ffcfe0fff900000)]),
    (*b"NE", "", false, &[(8, 0xfffff34400000000000b00000)]),
    (*b"NF", "", false, &[(6, 0x49c0007c00)]),
    (*b"NG", "0", false, &[(10, 0xc0301c00000000000100000)]),
    (*b"NI", "", false, &[(8, 0x3ff783bc68000003ff00000)]),
    (*b"NL", "0", false, &[(9, 0xffd3efffeb5fe7d7ac00), (11, 0x2000000000000000000000000)]),
    (*b"NO", "", false, &[(8, 0xffc007ffde3b9e36b81e00000)]),
    (*b"NP", "0", true, &[(8, 0xbfbdef8bfa3abd27aafa1fc00), (10, 0x7040000000000000000000000)]),
    (*b"NR", "", false, &[(7, 0x803ff20040080100000400000)]),
    (*b"NU", "", false, &[(4, 0xffffffffff0000000000), (7, 0x10000000000000000000000)]),
    (*b"NZ", "0", false, &[(8, 0xff000ef3ec003fcbf0d200000), (9, 0x3c700000), (10, 0x38700000)]),
    (*b"OM", "", false, &[(8, 0xffc00fd800000000007e08000)]),
    (*b"PA", "", false, &[(7, 0xffdbfff40039c99fffffffc00), (8, 0x3ff000000000000000)]),
    (*b"PE", "0", true, &[(8, 0xde1f9fe1781e00000ffc00), (9, 0xffc0000000000000000000000)]),
    (*b"PF", "", false, &[(8, 0x38000000002010000000000)]),
    (*b"PG", "", false, &[(7, 0x6002000010060a401c0000000), (8, 0x13effc00000000000000000)]),
    (*b"PH", "0", false, &[(6, 0x3ff00000), (8, 0x10000000000000000000000), (9, 0x1fc6d13c1f3fc5f1f800000), (10, 0xfff0200000000000000000000)]),
    (*b"PK", "0", false, &[(9, 0x9787e059ff3fbf30023c00000), (10, 0x9787e059ff7fbf73fe3e00000)]),
    (*b"PL", "", false, &[(7, 0xcafe3c9aadd15e0767c7f000), (9, 0xcbfeffbefffdfe0727e7f000)]),
    (*b"PM", "0", false, &[(6, 0xffffffffffffffffffff00000), (9, 0x100400000000000000000)]),
    (*b"PR", "1", true, &[(10, 0x200040000000000000000000)]),
    (*b"PS", "0", false, &[(8, 0x100400000000040000400000), (9, 0x900000000000000)]),
    (*b"PT", "", false, &[(9, 0x178000006900000003fe10000)]),
    (*b"PW", "", false, &[(7, 0x5ac663fc46160040a000000)]),
    (*b"PY", "0", false, &[(7, 0x4e03802001d4c100000000), (8, 0x6e7f89a0fbfeffbf600000), (9, 0xf806e7f89a0fbfeffbf600000)]),
    (*b"QA", "", false, &[(8, 0xfffffffe13ffc0000000)]),
    (*b"RE", "0", false, &[(9, 0x600000000004000000)]),
    (*b"RO", "0", false, &[(6, 0x87a00000), (9, 0xffc00000001e87a00000)]),
    (*b"RS", "0", false, &[(7, 0xfffffffc00), (8, 0x37f00000fffffffc00), (9, 0x3ff00000fffffffc00), (10, 0x8000000fffffffc00), (11, 0xfffffffc00), (12, 0xfffffffc00)]),
    (*b"RU", "8", false, &[(10, 0xffcfe0000000387de40000000)]),
    (*b"RW", "0", true, &[(8, 0x40), (9, 0xe3000000000016c00000)]),
    (*b"SA", "0", false, &[(9, 0xfec000000037800)]),
    (*b"SB", "", false, &[(5, 0x8f02507fffffbc000), (7, 0xffff0ffb00000000000000000)]),
    (*b"SC", "", false, &[(7, 0x5c001e600000)]),
    (*b"SD", "0", false, &[(9, 0x9bc0000000000000000049c00)]),
    (*b"SE", "0", false, &[(7, 0x7ff00009000551a04a12800), (8, 0x7ffff003fffffffffffeff800), (9, 0x7ffffd37fffffffffffeff800)]),
    (*b"SG", "", false, &[(8, 0x7ffff003ff000000000000000)]),
    (*b"SH", "", false, &[(5, 0xffc00003ffffc00003ff00000)]),
    (*b"SI", "0", false, &[(8, 0x7ff307f9ff7fdfc7f000)]),
    (*b"SJ", "", false, &[(8, 0xffc0080000001e30000000000)]),
    (*b"SK", "0", false, &[(6, 0x7f9fe7780200000), (7, 0x7f9fe7f80200000), (9, 0xcc02000017f9fe7fbfc00000)]),
    (*b"SL", "0", false, &[(8, 0x80501ffc40000000fc2400000)]),
    (*b"SM", "", false, &[(8, 0x42000000000000000), (10, 0x20)]),
    (*b"SN", "", false, &[(9, 0xf9c00000001340000000)]),
    (*b"SO", "0", true, &[(6, 0x2600000003ffffc00ffc00), (7, 0xe80ff77fffffc00), (8, 0xff400fffff000000001008000), (9, 0x501fbfff003008800000000)]),
    (*b"SR", "", false, &[(6, 0x6f3ff3fc0e00000), (7, 0x3febf901000000000000000)]),
    (*b"SS", "0", false, &[(9, 0xe9800000000000000000c1000)]),
    (*b"ST", "", false, &[(7, 0xc040000000000000000400000)]),
    (*b"SV", "", false, &[(8, 0xfffffffc00003fe00000)]),
    (*b"SX", "1", true, &[(10, 0x1000000000000000000)]),
    (*b"SY", "0", false, &[(8, 0x381a0403e1b000), (9, 0xde40000000004000280264800)]),
    (*b"SZ", "", false, &[(8, 0xf8000000000f03c00000)]),
    (*b"TA", "", false, &[(4, 0x3ff00000000000000000000)]),
    (*b"TC", "1", true, &[(10, 0x10000000000000000)]),
    (*b"TD", "", false, &[(8, 0xffce0203ff0000000c0400000)]),
    (*b"TG", "", false, &[(8, 0xf3c00c3c0000000000fc00000)]),
    (*b"TH", "0", false, &[(8, 0x3e0001f03cff3ffd0400), (9, 0xfffff000fe000000000004000)]),
    (*b"TJ", "", false, &[(9, 0xfff83e8c40085936fc87e1fff)]),
    (*b"TK", "", false, &[(4, 0x7000003ffffc1c00000), (5, 0x7000003ffffc1c00000), (6, 0x7000003ffffc1c00000), (7, 0x7000003ffffc1c00000)]),
    (*b"TL", "", false, &[(7, 0x1eff83e00000), (8, 0x7f000000000000000000)]),
    (*b"TM", "8", false, &[(8, 0x1bff1905c0501403000)]),
    (*b"TN", "", false, &[(8, 0xffc00ffc00ffdff91fff00000)]),
    (*b"TO", "", false, &[(5, 0x219de010041f7ffff00000), (7, 0x803d0fff090c0000000000000)]),
    (*b"TR", "0", false, &[(10, 0xffdfeff9fe00000)]),
    (*b"TT", "1", true, &[(10, 0x4000000000000000000000)]),
    (*b"TV", "", false, &[(5, 0x3fd00000), (6, 0x40000000000000000000000), (7, 0xc00000000000000000)]),
    (*b"TW", "0", false, &[(8, 0x39cffaff7f38fff0fc00000), (9, 0x7fe10000130821f201fc00000)]),
    (*b"TZ", "0", false, &[(9, 0xfffef00000001fc00000)]),
    (*b"UA", "0", false, &[(9, 0xff800abbfe3fdfaff80000000)]),
    (*b"UG", "0", false, &[(9, 0xffc00003ffffc0100000)]),
    (*b"US", "1", true, &[(10, 0x6fcff7fdff7fdff5fdff00000)]),
    (*b"UY", "0", true, &[(8, 0xff80000000000fc003ffa0000)]),
    (*b"UZ", "", false, &[(9, 0xefd81ffee6084000200100000)]),
    (*b"VA", "", false, &[(6, 0x40), (9, 0xff00000000), (10, 0xff80000040)]),
    (*b"VC", "1", true, &[(10, 0x40000000000000000000)]),
    (*b"VE", "0", false, &[(10, 0x100407003fa00000)]),
    (*b"VG", "1", true, &[(10, 0x10000000)]),
    (*b"VI", "1", true, &[(10, 0x400000000)]),
    (*b"VN", "0", false, &[(9, 0xffffef0400d9800ffc0015000), (10, 0x3ff00000)]),
    (*b"VU", "", false, &[(5, 0x10000000001007c3fd00000), (7, 0x3ff3fc00ffc000000000000)]),
    (*b"WF", "", false, &[(6, 0xc01000000000000000000)]),
    (*b"WS", "", false, &[(5, 0x3feffffffffff00000), (6, 0x1000000000000000), (7, 0xf87b800000000000000000), (10, 0x20000000000000000000000)]),
    (*b"XK", "0", false, &[(8, 0x3f8c030000000), (9, 0xc030000000), (10, 0x4000000000), (11, 0x4000000000), (12, 0x4000000000)]),
    (*b"YE", "0", false, &[(7, 0x5d1381f13c4b17c5f000), (8, 0x20000), (9, 0x62c00000000000000000)]),
    (*b"YT", "0", false, &[(9, 0x8000000004000000)]),
    (*b"ZA", "0", false, &[(5, 0x1e00000000000000000000), (6, 0x1e00000000000000000000), (7, 0x1e00000000000000000000), (8, 0x1e00000000000000000000), (9, 0xbefffff76fff9f98effc00)]),
    (*b"ZM", "0", false, &[(9, 0x78000f8000780000000200000)]),
    (*b"ZW", "0", false, &[(9, 0x23aeb9e20c00080ab100000)]),
];
