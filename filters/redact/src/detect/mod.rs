//! Detectors: what they match, how far a match can reach, and how they scan incrementally.
//!
//! Every detector has a *maximum match length* `max_len` (bytes of normalised text) and reads
//! at most [`LOOKAROUND`] bytes around a match. A detector scans the buffer from its own
//! position and reports only *determined* matches: those whose start is below the detector's
//! *determined limit*, a position before which no future input can change what the detector
//! finds. The limit is never below `len - max_len - LOOKAROUND`, and usually much closer to the
//! end (see [`Scanner`]).

pub mod builtin;
pub mod regions;
pub mod validate;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
use regex::bytes::Regex;
use std::sync::Arc;

use crate::config::{Action, Direction};

/// Bytes of context a detector may read around a match (before and after).
pub const LOOKAROUND: usize = 4;

/// A candidate validator: given the haystack and a raw match `[start, end)`, return the span to
/// act on (inside the match) or `None` to reject. Reads at most two bytes before `start` (the
/// phone validator: [`validate::PHONE_LOOKBEHIND`], kept by the engine as context) and two
/// bytes after `end`.
pub type Validator = fn(&[u8], usize, usize) -> Option<(usize, usize)>;

/// Canonical form of a value for pseudonymisation (so `4242 4242 ...` and `4242424242...`
/// get the same token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    /// Use the normalised text as it is.
    Verbatim,
    /// Keep ASCII letters and digits, upper-cased.
    Alnum,
    /// ASCII lower-case.
    Lower,
}

/// A 256-entry byte class.
#[derive(Clone)]
pub struct ByteSet(pub Box<[bool; 256]>);

impl std::fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByteSet")
    }
}

impl ByteSet {
    /// First bytes of `lits` (both ASCII cases if `ci`).
    pub fn firsts(lits: &[Vec<u8>], ci: bool) -> Self {
        let mut t = [false; 256];
        for l in lits {
            if let Some(&b) = l.first() {
                set_byte(&mut t, b);
                if ci {
                    set_byte(&mut t, b.to_ascii_lowercase());
                    set_byte(&mut t, b.to_ascii_uppercase());
                }
            }
        }
        ByteSet(Box::new(t))
    }

    /// Bytes at some position of a literal other than its last (both ASCII cases if `ci`): the
    /// bytes a proper prefix of a literal can end with.
    pub fn inner(lits: &[Vec<u8>], ci: bool) -> Self {
        let mut t = [false; 256];
        for l in lits {
            for &b in l.get(..l.len().saturating_sub(1)).unwrap_or_default() {
                set_byte(&mut t, b);
                if ci {
                    set_byte(&mut t, b.to_ascii_lowercase());
                    set_byte(&mut t, b.to_ascii_uppercase());
                }
            }
        }
        ByteSet(Box::new(t))
    }

    /// Bytes of the ASCII string plus the given ranges.
    pub fn new(chars: &str, ranges: &[(u8, u8)]) -> Self {
        let mut t = [false; 256];
        for &b in chars.as_bytes() {
            set_byte(&mut t, b);
        }
        for &(a, z) in ranges {
            for b in a..=z {
                set_byte(&mut t, b);
            }
        }
        ByteSet(Box::new(t))
    }
    /// All bytes.
    pub fn all() -> Self {
        ByteSet(Box::new([true; 256]))
    }
    /// Membership.
    #[inline]
    pub fn has(&self, b: u8) -> bool {
        // A `u8` is always below 256: the check folds away.
        self.0.get(usize::from(b)).copied().unwrap_or(false)
    }
}

fn set_byte(t: &mut [bool; 256], b: u8) {
    if let Some(x) = t.get_mut(usize::from(b)) {
        *x = true;
    }
}

/// What makes a run worth scanning.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// An ASCII digit; the count is of the longest chain of digits separated by at most this
    /// many other bytes (every accepted match holds such a chain).
    Digits(usize),
    /// This byte.
    Byte(u8),
}

/// How a detector finds candidates.
#[derive(Debug)]
pub enum Scanner {
    /// Matches lie inside maximal runs of `alphabet` bytes that contain a `trigger`; the regex is
    /// run over each such run. Determined limit: the first byte of the trailing alphabet run (it
    /// may still grow) that can start a match, but at least `len - max_len - LOOKAROUND`. A run
    /// ended by a `peek` byte still counts as trailing (its validator reads past the end).
    Run {
        /// Finds the leftmost match from a position.
        re: Matcher,
        /// Bytes a match may consist of.
        alphabet: ByteSet,
        /// Bytes a match may start with: a trailing run with none of these settles at once.
        starts: ByteSet,
        /// Bytes after which the validator rejects a match (a word character before a card).
        not_after: ByteSet,
        /// Terminators the validator reads one byte past.
        peek: ByteSet,
        /// A byte every match contains.
        trigger: Trigger,
        /// Runs shorter than this cannot hold an accepted match and are skipped.
        min_len: usize,
        /// Runs with fewer trigger bytes than this cannot hold an accepted match.
        min_triggers: usize,
        /// Complete dense ranges ([`Dense`]) with fewer digits than this hold no accepted match:
        /// `min_triggers` when the alphabet lies inside the union alphabet (a run of it then
        /// holds no more digits than its dense range), else 0 (IPv4: `/`).
        dense_min: usize,
    },
    /// Matches start with one of `literals` (found by Aho-Corasick); an optional regex anchored
    /// with `\A` is then matched at the literal. Determined limit: the first position in the
    /// last `max_len + LOOKAROUND` bytes where a literal starts or could start.
    Literal {
        /// Literals (lower-cased when case-insensitive); found by the engine's [`LiteralIndex`].
        lits: Vec<Vec<u8>>,
        /// Case-insensitive literals.
        ci: bool,
        /// First bytes of the literals (both cases when case-insensitive).
        firsts: ByteSet,
        /// Length of the longest literal (every streamed step needs it; keyword lists are long).
        longest: usize,
        /// Bytes a proper prefix of a literal can end with ([`ByteSet::inner`]).
        inner: ByteSet,
        /// Anchored matcher run at a literal occurrence; `None` = the literal is the match.
        re: Option<Anchored>,
        /// If set, the byte before a match must not be in this set.
        left_boundary: Option<ByteSet>,
        /// If set, the byte after a match must not be in this set.
        right_boundary: Option<ByteSet>,
    },
    /// A regex over everything (custom patterns). Determined limit: `len - max_len - LOOKAROUND`.
    Full {
        /// Unanchored regex.
        re: Regex,
    },
}

impl Scanner {
    /// A literal scanner over `lits` (already lower-cased when `ci`).
    pub fn literal(
        lits: Vec<Vec<u8>>,
        ci: bool,
        re: Option<Anchored>,
        left_boundary: Option<ByteSet>,
        right_boundary: Option<ByteSet>,
    ) -> Self {
        Scanner::Literal {
            firsts: ByteSet::firsts(&lits, ci),
            longest: lits.iter().map(Vec::len).max().unwrap_or(0),
            inner: ByteSet::inner(&lits, ci),
            lits,
            ci,
            re,
            left_boundary,
            right_boundary,
        }
    }
}

/// A compiled detector.
#[derive(Debug)]
pub struct Detector {
    /// Name used in metrics and audit records (`email`, `card`, custom names).
    pub name: Arc<str>,
    /// Placeholder label (`EMAIL` gives `[EMAIL]`).
    pub label: String,
    /// How it scans.
    pub scanner: Scanner,
    /// Maximum match length in normalised bytes.
    pub max_len: usize,
    /// Validator applied to raw matches.
    pub validate: Option<Validator>,
    /// Canonical form for pseudonymisation.
    pub canon: Canon,
    /// Action on requests.
    pub request: Action,
    /// Action on responses.
    pub response: Action,
    /// Letters/digits left visible by `mask`.
    pub mask_keep: usize,
}

impl Detector {
    /// Action in a direction.
    pub fn action(&self, dir: Direction) -> Action {
        match dir {
            Direction::Request => self.request,
            Direction::Response => self.response,
        }
    }

    /// Window this detector needs: its maximum match length plus look-around.
    pub fn window(&self) -> usize {
        self.max_len + LOOKAROUND
    }
}

/// A candidate match in buffer coordinates (normalised offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cand {
    /// Start of the span to act on.
    pub start: usize,
    /// End of the span to act on.
    pub end: usize,
    /// Index of the detector.
    pub det: usize,
}

/// High bit of every byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;
/// Low bit of every byte of a word.
const LOW: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `x` (little-endian word) that is an ASCII digit, exactly (no
/// borrow crosses bytes: every byte has its high bit set before the subtractions).
#[inline]
fn digit_bits(x: u64) -> u64 {
    let h = x | HIGH;
    !x & h.wrapping_sub(LOW * u64::from(b'0')) & !h.wrapping_sub(LOW * u64::from(b'9' + 1)) & HIGH
}

/// Find the first ASCII digit at or after `from`.
#[inline]
pub fn find_digit(h: &[u8], from: usize) -> Option<usize> {
    let (blocks, rest) = h.get(from..)?.as_chunks::<32>();
    let mut i = from;
    for block in blocks {
        // Four words at a time (SWAR: portable, also to wasm), one test per block.
        let (words, _) = block.as_chunks::<8>();
        let any = words.iter().fold(0, |a, w| a | digit_bits(u64::from_le_bytes(*w)));
        if any != 0 {
            for w in words {
                let d = digit_bits(u64::from_le_bytes(*w));
                if d != 0 {
                    return Some(i + (d.trailing_zeros() / 8) as usize);
                }
                i += 8;
            }
        }
        i += 32;
    }
    rest.iter().position(|b| b.is_ascii_digit()).map(|p| p + i)
}

impl Detector {
    /// The determined limit for a buffer `hay` (not at end of stream), never above `hay.len()`.
    pub fn determined_limit(&self, det: usize, hay: &[u8], occ: &[Occ]) -> usize {
        let l = hay.len();
        let floor = l.saturating_sub(self.window());
        match &self.scanner {
            Scanner::Full { .. } => floor,
            Scanner::Run { alphabet, starts, not_after, peek, .. } => {
                let mut r = l;
                if r > floor && hay.last().is_some_and(|&b| peek.has(b)) {
                    r -= 1;
                }
                let run = hay.get(floor..r).map_or(0, |t| t.iter().rev().take_while(|&&b| alphabet.has(b)).count());
                let q = r.saturating_sub(run);
                // An accepted match starts at a `starts` byte that the validator accepts after
                // its predecessor, inside the trailing run or still to come: `word1 ` ends in
                // the card-alphabet run `1 `, but no card can start there.
                let before = |i: usize| i.checked_sub(1).and_then(|j| hay.get(j)).copied();
                (q..r).find(|&i| hay.get(i).is_some_and(|&b| starts.has(b)) && !before(i).is_some_and(|b| not_after.has(b))).unwrap_or(l)
            }
            Scanner::Literal { lits, ci, firsts, longest, inner, .. } => {
                let mut lim = l;
                let i = occ.partition_point(|o| o.start < floor);
                if let Some(o) = occ.iter().skip(i).find(|o| o.det == det) {
                    lim = o.start;
                }
                // Every tail ends with the buffer's last byte: if no literal has that byte before
                // its end, no tail is a literal's proper prefix (most steps end in a space or a
                // letter no secret prefix holds), and the search below would find nothing.
                let kmax = if hay.last().is_some_and(|&b| inner.has(b)) { longest.saturating_sub(1).min(l) } else { 0 };
                for k in (1..=kmax).rev() {
                    let p = l.saturating_sub(k);
                    if p >= lim {
                        break;
                    }
                    let Some(tail) = hay.get(p..) else { continue };
                    let Some(&t0) = tail.first() else { continue };
                    if !firsts.has(t0) {
                        continue;
                    }
                    let first = t0.to_ascii_lowercase();
                    if lits.iter().any(|lit| match (lit.first(), lit.get(..k)) {
                        (Some(&l0), Some(pre)) if lit.len() > k && (l0 == t0 || (*ci && l0 == first)) => {
                            if *ci {
                                pre.eq_ignore_ascii_case(tail)
                            } else {
                                pre == tail
                            }
                        }
                        _ => false,
                    }) {
                        lim = p;
                        break;
                    }
                }
                lim.max(floor)
            }
        }
    }

    /// Scan `hay` from `pos`, pushing determined candidates (start < `limit`) to `out` with this
    /// detector's index `det`. Returns the new scan position (no match of this detector starts
    /// in `[pos, new_pos)` other than those reported).
    #[allow(clippy::too_many_arguments)]
    pub fn scan(&self, det: usize, hay: &[u8], occ: &[Occ], dense: &[Dense], pos: usize, limit: usize, out: &mut Vec<Cand>) -> usize {
        match &self.scanner {
            Scanner::Full { re } => {
                let (_, at) = self.scan_region(det, &Matcher::Regex(re.clone()), hay, hay.len(), pos, limit, out);
                at.max(limit)
            }
            Scanner::Run { re, alphabet, trigger, min_len, min_triggers, dense_min, .. } => {
                let mut p = pos;
                loop {
                    let t = match trigger {
                        Trigger::Digits(_) => find_dense_digit(hay, dense, p, *dense_min),
                        Trigger::Byte(b) => hay.get(p..).and_then(|t| memchr::memchr(*b, t)).map(|x| x + p),
                    };
                    let Some(t) = t else { return p.max(limit) };
                    let run_start =
                        || t.saturating_sub(hay.get(p..t).map_or(0, |s| s.iter().rev().take_while(|&&b| alphabet.has(b)).count()));
                    // The run starts at or after `p`, so it starts below `limit` if `t` does.
                    if t >= limit && run_start() >= limit {
                        return p.max(limit);
                    }
                    let ahead = hay.get(t + 1..).map_or(0, |s| s.iter().take_while(|&&b| alphabet.has(b)).count());
                    let run_end = t + 1 + ahead;
                    if let Trigger::Byte(b) = trigger {
                        // `t` is the first trigger byte at or after `p`: all the run's trigger
                        // bytes are in `[t, run_end)`. Most runs fail here (`items:` for IPv6),
                        // before their start is looked for.
                        let n = hay.get(t..run_end).map_or(0, |r| memchr::memchr_iter(*b, r).count());
                        if n < *min_triggers {
                            if run_end >= hay.len() {
                                return p.max(limit);
                            }
                            p = run_end + 1;
                            continue;
                        }
                    }
                    let rs = run_start();
                    // Cheap prefilter: every accepted match has at least `min_len` bytes and
                    // `min_triggers` trigger bytes, all inside the run (PikeVM is slow).
                    let run = hay.get(rs..run_end).unwrap_or_default();
                    let n_trig = match trigger {
                        Trigger::Digits(gap) => digit_chain(run, *gap),
                        Trigger::Byte(b) => memchr::memchr_iter(*b, run).count(),
                    };
                    if run.len() < *min_len || n_trig < *min_triggers {
                        if run_end >= hay.len() {
                            return p.max(limit);
                        }
                        p = run_end + 1;
                        continue;
                    }
                    if run_end >= hay.len() {
                        // The run touches the end of the buffer: only determined matches count.
                        let (_, at) = self.scan_region(det, re, hay, hay.len(), rs, limit, out);
                        return at.max(limit);
                    }
                    // A complete run (its terminator is in the buffer).
                    let (ran_out, at) = self.scan_region(det, re, hay, run_end + 1, rs, limit, out);
                    if !ran_out {
                        // Stopped at a match starting at or beyond `limit`.
                        return at.max(limit);
                    }
                    p = (run_end + 1).max(at);
                }
            }
            Scanner::Literal { re, left_boundary, right_boundary, .. } => {
                let mut p = pos;
                let mut i = occ.partition_point(|o| o.start < p);
                loop {
                    let Some(m) = occ.get(i) else { return p.max(limit) };
                    i += 1;
                    if m.det != det || m.start < p {
                        continue;
                    }
                    let s = m.start;
                    if s >= limit {
                        return p.max(limit);
                    }
                    let left_ok = match (left_boundary, s.checked_sub(1).and_then(|j| hay.get(j))) {
                        (Some(set), Some(&b)) => !set.has(b),
                        _ => true,
                    };
                    let mut end = None;
                    if left_ok {
                        end = match re {
                            None => Some(m.end),
                            Some(re) => {
                                let w = (s + self.window()).min(hay.len());
                                hay.get(s..w).and_then(|x| re.find(x)).map(|e| s + e)
                            }
                        };
                        if let (Some(e), Some(set)) = (end, right_boundary)
                            && hay.get(e).is_some_and(|&b| set.has(b))
                        {
                            end = None;
                        }
                    }
                    match end {
                        Some(e) if e > s => {
                            let span = match self.validate {
                                Some(v) => v(hay, s, e),
                                None => Some((s, e)),
                            };
                            match span {
                                Some((a, b)) => {
                                    out.push(Cand { start: a, end: b, det });
                                    p = e;
                                }
                                None => p = s + 1,
                            }
                        }
                        _ => p = s + 1,
                    }
                }
            }
        }
    }

    /// Run `re` over `hay[..hay_end]` from `at`, reporting determined matches (start < `limit`).
    /// Returns whether the search ran out of matches, and the position after the last reported
    /// or rejected match: no further determined match starts in `[at, limit)`.
    #[allow(clippy::too_many_arguments)]
    fn scan_region(
        &self,
        det: usize,
        re: &Matcher,
        hay: &[u8],
        hay_end: usize,
        mut at: usize,
        limit: usize,
        out: &mut Vec<Cand>,
    ) -> (bool, usize) {
        let h = hay.get(..hay_end).unwrap_or(hay);
        while at <= h.len() {
            let Some(m) = re.find_at(h, at) else { return (true, at) };
            let m = Span { start: m.0, end: m.1 };
            if m.start() >= limit {
                return (false, at);
            }
            if m.end() == m.start() {
                at = m.start() + 1;
                continue;
            }
            let span = match self.validate {
                Some(v) => v(hay, m.start(), m.end()),
                None => Some((m.start(), m.end())),
            };
            match span {
                Some((a, b)) => {
                    out.push(Cand { start: a, end: b, det });
                    // Resume where the accepted span ends, not after the raw match: a greedy
                    // match trimmed by its validator (`4111111111111111 555…`, an IBAN cut to its
                    // registry length) may have run into the next value.
                    at = b.max(m.start() + 1);
                }
                None => at = m.start() + 1,
            }
        }
        (true, at)
    }
}

/// A match as start and end.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn start(&self) -> usize {
        self.start
    }
    fn end(&self) -> usize {
        self.end
    }
}

/// Matches at the start of a slice (where a literal scanner found its literal).
#[derive(Debug, Clone)]
pub enum Anchored {
    /// A regex starting with `\A`.
    Regex(Regex),
    /// Hand-written equivalent of the JWT pattern ([`jwt_at`]): as a regex its counted
    /// repetitions unroll into 0.9 MB of automaton and a 3.3 MB build peak.
    Jwt,
}

impl Anchored {
    /// End of the match at the start of `x`.
    pub fn find(&self, x: &[u8]) -> Option<usize> {
        match self {
            Anchored::Regex(re) => re.find(x).map(|m| m.end()),
            Anchored::Jwt => jwt_at(x, 0),
        }
    }
}

/// Finds the leftmost match at or after a position.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A regex (PikeVM: keep it to small regions).
    Regex(Regex),
    /// The hand-written e-mail matcher ([`find_email`]).
    Email,
    /// Hand-written equivalent of the card pattern ([`card_at`]).
    Card,
    /// Hand-written equivalent of `[0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{4}` ([`ssn_at`]).
    Ssn,
    /// Hand-written equivalent of the IPv4 pattern ([`ipv4_at`]).
    Ipv4,
    /// Hand-written equivalent of the phone pattern ([`phone_at`]).
    Phone,
    /// Hand-written equivalent of the IBAN pattern ([`iban_at`]).
    Iban,
    /// A regex that only runs on runs holding a decimal digit and a hex digit next to a colon
    /// (every accepted IPv6 address has both; its alphabet takes in whole words for zone ids, so
    /// `std::io::Result` and `https://example.com:8080/x` are runs).
    Ipv6(Regex),
    /// National phone numbers of the regions a policy names (boundaries checked).
    National(Arc<[regions::RegionRule]>),
}

impl Matcher {
    /// Leftmost match in `h` starting at or after `at`.
    pub fn find_at(&self, h: &[u8], at: usize) -> Option<(usize, usize)> {
        match self {
            Matcher::Regex(re) => re.find_at(h, at).map(|m| (m.start(), m.end())),
            Matcher::Email => find_email(h, at),
            Matcher::National(rules) => regions::find_national(h, at, rules),
            Matcher::Card => leftmost(h, at, card_at),
            Matcher::Ssn => leftmost(h, at, ssn_at),
            Matcher::Ipv4 => leftmost(h, at, ipv4_at),
            Matcher::Phone => {
                let mut s = at;
                while s < h.len() {
                    let t = s + h.get(s..)?.iter().position(|&b| b.is_ascii_digit() || b == b'+' || b == b'(')?;
                    if let Some(e) = phone_at(h, t) {
                        return Some((t, e));
                    }
                    s = t + 1;
                }
                None
            }
            Matcher::Ipv6(re) => {
                let tail = h.get(at..)?;
                let hex_colon = tail.windows(2).any(|w| matches!(w, [a, b':'] | [b':', a] if a.is_ascii_hexdigit()));
                if hex_colon && find_digit(tail, 0).is_some() { re.find_at(h, at).map(|m| (m.start(), m.end())) } else { None }
            }
            Matcher::Iban => {
                // Starts are where an IBAN head `AAdd` (country code, check digits) is.
                let head = |w: &[u8]| matches!(w, [a, b, c, d] if a.is_ascii_uppercase() && b.is_ascii_uppercase() && c.is_ascii_digit() && d.is_ascii_digit());
                let mut s = at;
                while let Some(k) = h.get(s..)?.windows(4).position(head) {
                    let t = s + k;
                    if let Some(e) = iban_at(h, t) {
                        return Some((t, e));
                    }
                    s = t + 1;
                }
                None
            }
        }
    }
}

/// Leftmost start `s >= at` where the anchored matcher `f` matches.
fn leftmost(h: &[u8], at: usize, f: fn(&[u8], usize) -> Option<usize>) -> Option<(usize, usize)> {
    let mut s = at;
    while s < h.len() {
        let t = find_digit(h, s)?;
        if let Some(e) = f(h, t) {
            return Some((t, e));
        }
        s = t + 1;
    }
    None
}

/// Anchored `(?:[1-6][0-9]|8[12]|97)(?:[ \-]?[0-9]){11,17}` at `s` (the issuer prefixes the
/// card validator accepts; greedy, and nothing follows, so greedy is final).
pub fn card_at(h: &[u8], s: usize) -> Option<usize> {
    let issuer = match (h.get(s)?, h.get(s + 1)?) {
        (b'1'..=b'6', d) => d.is_ascii_digit(),
        (b'8', b'1' | b'2') | (b'9', b'7') => true,
        _ => false,
    };
    if !issuer {
        return None;
    }
    let mut n = 2;
    let mut i = s + 2;
    while n < 19 {
        match (h.get(i), h.get(i + 1)) {
            (Some(d), _) if d.is_ascii_digit() => i += 1,
            (Some(b' ' | b'-'), Some(d)) if d.is_ascii_digit() => i += 2,
            _ => break,
        }
        n += 1;
    }
    (n >= 13).then_some(i)
}

/// Anchored `eyJ[B]{4,1024}\.(?:[B]{4,4096}\.[B]{0,1024}|eyJ[B]{4,4093})` at `s`, where `B` is
/// the base64url alphabet `[A-Za-z0-9_\-]`. `.` is not in `B`, so a segment before a dot must be
/// the whole run of `B` there; the first alternative wins when it matches, and the last
/// segment of either is greedy with nothing after it, so it takes its run up to its bound.
pub fn jwt_at(h: &[u8], s: usize) -> Option<usize> {
    let b64url = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-');
    let run = |i: usize| h.get(i..).map_or(0, |t| t.iter().take_while(|b| b64url(b)).count());
    let eyj = |i: usize| h.get(i..).is_some_and(|t| t.starts_with(b"eyJ"));
    if !eyj(s) {
        return None;
    }
    let head = run(s + 3);
    if !(4..=1024).contains(&head) || h.get(s + 3 + head) != Some(&b'.') {
        return None;
    }
    let second = s + 3 + head + 1;
    let body = run(second);
    if (4..=4096).contains(&body) && h.get(second + body) == Some(&b'.') {
        let third = second + body + 1;
        return Some(third + run(third).min(1024));
    }
    // Unsigned `header.payload`: the run after the dot starts with `eyJ` (all three in `B`).
    let tail = body.checked_sub(3).filter(|&n| n >= 4 && eyj(second))?;
    Some(second + 3 + tail.min(4093))
}

/// Anchored `[A-Z]{2}[0-9]{2}(?:[ \-]?[A-Z0-9]){11,30}` at `s` (greedy, and nothing follows,
/// so greedy is final; a separator is taken when an upper-case letter or digit follows it, and
/// the group cannot match at a separator otherwise).
pub fn iban_at(h: &[u8], s: usize) -> Option<usize> {
    let head: &[u8; 4] = h.get(s..s + 4)?.try_into().ok()?;
    let [a, b, c, d] = *head;
    if !(a.is_ascii_uppercase() && b.is_ascii_uppercase() && c.is_ascii_digit() && d.is_ascii_digit()) {
        return None;
    }
    let alnum = |x: &u8| x.is_ascii_uppercase() || x.is_ascii_digit();
    let mut n = 0;
    let mut i = s + 4;
    while n < 30 {
        match (h.get(i), h.get(i + 1)) {
            (Some(b' ' | b'-'), Some(x)) if alnum(x) => i += 2,
            (Some(x), _) if alnum(x) => i += 1,
            _ => break,
        }
        n += 1;
    }
    (n >= 11).then_some(i)
}

/// Anchored `[0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{4}` at `s`.
pub fn ssn_at(h: &[u8], s: usize) -> Option<usize> {
    let m: &[u8; 11] = h.get(s..s + 11)?.try_into().ok()?;
    let sep = |b: u8| matches!(b, b' ' | b'-' | b'.');
    let [d0, d1, d2, s3, d4, d5, s6, d7, d8, d9, d10] = *m;
    let digits = [d0, d1, d2, d4, d5, d7, d8, d9, d10].iter().all(u8::is_ascii_digit);
    (digits && sep(s3) && sep(s6)).then_some(s + 11)
}

/// Anchored `[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:/[0-9]{1,2})?` at `s` (greedy
/// octets; a shorter octet never helps, since a digit would then follow where a dot is needed).
pub fn ipv4_at(h: &[u8], s: usize) -> Option<usize> {
    let mut i = s;
    for k in 0..4 {
        let n = digits_at(h, i, 3);
        if n == 0 {
            return None;
        }
        i += n;
        if k < 3 {
            if h.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    if h.get(i) == Some(&b'/') {
        let d = digits_at(h, i + 1, 2);
        if d > 0 {
            i += 1 + d;
        }
    }
    Some(i)
}

/// Number of ASCII digits at `h[i..]`, at most `max`.
fn digits_at(h: &[u8], i: usize, max: usize) -> usize {
    h.get(i..).map_or(0, |t| t.iter().take(max).take_while(|b| b.is_ascii_digit()).count())
}

fn is_phone_sep(b: Option<&u8>) -> bool {
    matches!(b, Some(b' ' | b'.' | b'-'))
}

/// Greedy `(?:[ .\-][0-9]{1,max}){1,4}` at `i` (nothing follows it in the pattern, so the first
/// way to match is the greedy one); `None` below one group.
fn phone_groups(h: &[u8], mut i: usize, max: usize) -> Option<usize> {
    let mut n = 0;
    while n < 4 && is_phone_sep(h.get(i)) {
        let d = digits_at(h, i + 1, max);
        if d < 1 {
            break;
        }
        i += 1 + d;
        n += 1;
    }
    (n >= 1).then_some(i)
}

/// Anchored phone pattern at `s` with the regex's leftmost-first semantics: the alternatives in
/// order, and inside each the backtracking order (greedy counts first, optional items taken
/// before skipped). Equivalence with the regex in [`builtin::BUILTINS`] is property-tested.
pub fn phone_at(h: &[u8], s: usize) -> Option<usize> {
    let d1_9 = |i: usize| h.get(i).is_some_and(|b| (b'1'..=b'9').contains(b));
    let d2_9 = |i: usize| h.get(i).is_some_and(|b| (b'2'..=b'9').contains(b));
    let at = |i: usize, c: u8| h.get(i) == Some(&c);
    if at(s, b'+') && d1_9(s + 1) {
        // `\+[1-9][0-9]{6,14}`
        let n = digits_at(h, s + 2, 14);
        if n >= 6 {
            return Some(s + 2 + n);
        }
        // `\+[1-9][0-9]{0,2}[ .\-]?\(?[0-9]{1,4}\)?(?:[ .\-][0-9]{2,8}){1,4}`
        for k1 in (0..=digits_at(h, s + 2, 2)).rev() {
            let a = s + 2 + k1;
            for sep in [true, false] {
                if sep && !is_phone_sep(h.get(a)) {
                    continue;
                }
                let b = a + usize::from(sep);
                for open in [true, false] {
                    if open && !at(b, b'(') {
                        continue;
                    }
                    let c = b + usize::from(open);
                    for k2 in (1..=digits_at(h, c, 4)).rev() {
                        let d = c + k2;
                        for close in [true, false] {
                            if close && !at(d, b')') {
                                continue;
                            }
                            if let Some(e) = phone_groups(h, d + usize::from(close), 12) {
                                return Some(e);
                            }
                        }
                    }
                }
            }
        }
    }
    // `\(?[2-9][0-9]{2}\)?[ .\-]?[2-9][0-9]{2}[ .\-]?[0-9]{4}`
    for open in [true, false] {
        if open && !at(s, b'(') {
            continue;
        }
        let a = s + usize::from(open);
        if !(d2_9(a) && digits_at(h, a + 1, 2) == 2) {
            continue;
        }
        for close in [true, false] {
            if close && !at(a + 3, b')') {
                continue;
            }
            let b = a + 3 + usize::from(close);
            for sep in [true, false] {
                if sep && !is_phone_sep(h.get(b)) {
                    continue;
                }
                let c = b + usize::from(sep);
                if !(d2_9(c) && digits_at(h, c + 1, 2) == 2) {
                    continue;
                }
                for sep2 in [true, false] {
                    if sep2 && !is_phone_sep(h.get(c + 3)) {
                        continue;
                    }
                    let d = c + 3 + usize::from(sep2);
                    if digits_at(h, d, 4) == 4 {
                        return Some(d + 4);
                    }
                }
            }
        }
    }
    // `\(?0[0-9]{0,5}\)?(?:[ .\-][0-9]{1,8}){1,4}`: a shorter prefix never helps (a digit
    // would then stand where `)` or a separator is needed), so the greedy prefix is the only one
    // to try; the groups are greedy as in the international form.
    for open in [true, false] {
        if open && !at(s, b'(') {
            continue;
        }
        let a = s + usize::from(open);
        if !at(a, b'0') {
            continue;
        }
        let p = a + 1 + digits_at(h, a + 1, 5);
        for close in [true, false] {
            if close && !at(p, b')') {
                continue;
            }
            if let Some(e) = phone_groups(h, p + usize::from(close), 8) {
                return Some(e);
            }
        }
    }
    // `0[1-9][0-9]{8,9}`
    if at(s, b'0') && d1_9(s + 1) {
        let n = digits_at(h, s + 2, 9);
        if n >= 8 {
            return Some(s + 2 + n);
        }
    }
    None
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// RFC 5322 atext characters other than `._%+-` that a local part may hold between two
/// alphanumerics (`o'brien`, `bill&ted=x`, `a!b`); never first or last, so quotes, backticks
/// and braces around an address stay outside it. Not `/`: it separates values
/// (`4111111111111111/john@example.com`) and path segments.
pub(crate) fn is_local_special(b: u8) -> bool {
    matches!(b, b'\'' | b'=' | b'!' | b'#' | b'$' | b'&' | b'*' | b'^' | b'~' | b'{' | b'|' | b'}' | b'`' | b'?')
}

/// URL delimiters: a local part right after one of them is cut after the last one it holds
/// (`https://host/users/john@example.com`, `?email=john@example.com`: `john`).
fn is_url_delimiter(b: u8) -> bool {
    matches!(b, b'/' | b'?' | b'&' | b'=' | b'#' | b':')
}

/// Start of the local part ending at `a` (the `@`), not before `at`: up to 64 local-part
/// characters, specials only between alphanumerics, cut after a URL delimiter when one comes
/// right before it or the limit cut it.
fn local_start(h: &[u8], at: usize, a: usize) -> usize {
    let alnum = |i: usize| h.get(i).is_some_and(u8::is_ascii_alphanumeric);
    let mut s = a;
    while s > at && a - s < 64 {
        let Some(&b) = h.get(s - 1) else { break };
        if is_local(b) || (is_local_special(b) && s < a && alnum(s) && s - 1 > at && alnum(s - 2)) {
            s -= 1;
        } else {
            break;
        }
    }
    // Stopped at a URL delimiter, or at the length limit (the validator would reject a local
    // part with more of it before): keep what follows the last URL delimiter.
    if s > 0
        && h.get(s - 1).is_some_and(|&b| is_url_delimiter(b) || is_local(b))
        && let Some(k) = h.get(s..a).and_then(|l| l.iter().rposition(|&b| is_url_delimiter(b)))
    {
        s += k + 1;
    }
    s
}

/// E-mail: `local@label(.label)*.tld` with a local part of 1-64 `[A-Za-z0-9._%+-]` (and the
/// specials of [`is_local_special`] between alphanumerics), labels of
/// 1-63 `[A-Za-z0-9-]` not starting or ending with `-`, 2-8 labels, and a TLD of 2-24 letters
/// or an internationalised one in punycode (`xn--p1ai`) (the longest such domain). The leftmost match starting at or after `at`.
pub fn find_email(h: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut from = at;
    while let Some(a) = memchr::memchr(b'@', h.get(from..)?).map(|x| x + from) {
        from = a + 1;
        let s = local_start(h, at, a);
        if s == a {
            continue;
        }
        // Domain labels.
        let mut i = a + 1;
        let mut best = None;
        for n in 0..8 {
            let len = h.get(i..).map_or(0, |t| t.iter().take(63).take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-').count());
            let Some(label) = h.get(i..i + len) else { break };
            i += len;
            match (label.first(), label.last()) {
                (Some(&f), Some(&l)) if f != b'-' && l != b'-' => {}
                _ => break,
            }
            let punycode = label.len() > 4 && label.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"xn--"));
            if n >= 1 && (((2..=24).contains(&label.len()) && label.iter().all(u8::is_ascii_alphabetic)) || punycode) {
                best = Some(i);
            }
            if h.get(i) == Some(&b'.') && h.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) {
                i += 1;
            } else {
                break;
            }
        }
        if let Some(e) = best {
            return Some((s, e));
        }
    }
    None
}

/// Longest chain of digits in `run` whose consecutive digits are at most `gap` bytes apart.
fn digit_chain(run: &[u8], gap: usize) -> usize {
    let (mut best, mut cur, mut since) = (0, 0, 0);
    for &b in run {
        if b.is_ascii_digit() {
            cur = if since > gap { 1 } else { cur + 1 };
            since = 0;
            best = best.max(cur);
        } else {
            since += 1;
        }
    }
    best
}

/// Union alphabet of the digit-triggered detectors (card, IBAN, SSN, phone, IPv4).
pub(crate) fn is_numeric_run(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_uppercase() || matches!(b, b' ' | b'(' | b')' | b'+' | b'.' | b'-')
}

/// A run of the union alphabet of the digit-triggered detectors that they look inside (see
/// [`dense_digit_ranges`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dense {
    /// Start.
    pub start: usize,
    /// End (exclusive).
    pub end: usize,
    /// Digits in the run.
    pub digits: usize,
}

/// Digit-triggered detectors need at least this many digits in a match, except IPv4.
pub const DENSE_DIGITS: usize = 8;
/// IPv4 needs at least this many digits and a dot.
pub const DENSE_DIGITS_DOTTED: usize = 4;

/// Ranges of `hay[from..]` (maximal runs of the union alphabet of the digit-triggered
/// detectors) holding at least [`DENSE_DIGITS`] digits (or [`DENSE_DIGITS_DOTTED`] and a dot),
/// plus the trailing run whatever its count (it may still grow). Digit-triggered detectors only
/// look inside these.
///
/// Bytes from `[` (0x5B) up (lower-case letters, non-ASCII) are outside that alphabet, so no
/// run crosses one. The text is cut at them into *segments*, and a run holds at least [`DENSE_DIGITS_DOTTED`]
/// digits only if its segment does. Segments are counted 64 bytes at a time with bit masks and
/// no branch per digit (`segment_fourth_digits`); only the few segments with that many digits,
/// and the last segment (its run may still grow), are walked run by run (`runs_in`). In prose
/// most numbers (`42`, `2024`, `1.`) sit alone between words and are never walked.
pub fn dense_digit_ranges(hay: &[u8], from: usize, out: &mut Vec<Dense>) {
    out.clear();
    let Some(tail) = hay.get(from..) else { return };
    if tail.len() < 64 {
        // Less than a block (small chunks): walking it is cheaper than masking a padded block.
        runs_in(hay, from, hay.len(), out);
        return;
    }
    let (blocks, rest) = tail.as_chunks::<64>();
    let mut last = [0u8; 64];
    if let Some(l) = last.get_mut(..rest.len()) {
        // Zero padding: neither a digit nor outside, so it only continues the last segment.
        l.copy_from_slice(rest);
    }
    // Digits (at most 3 counted) of the segment open at the start of the block, and its start.
    let mut carry = 0u32;
    let mut seg = from;
    // Start of a segment to walk whose end is not reached yet.
    let mut open: Option<usize> = None;
    let mut base = from;
    for block in blocks.iter().chain((!rest.is_empty()).then_some(&last)) {
        let (digits, outside) = block_masks(block);
        let mut fourth = segment_fourth_digits(digits, !outside, carry);
        if let Some(a) = open {
            if outside == 0 {
                // The whole block continues the open segment.
                base += 64;
                continue;
            }
            let b = outside.trailing_zeros();
            runs_in(hay, a, base + b as usize, out);
            open = None;
            fourth &= !low_bits(b);
        }
        while fourth != 0 {
            let q = fourth.trailing_zeros();
            let before = outside & low_bits(q);
            let a = if before != 0 { base + 64 - before.leading_zeros() as usize } else { seg };
            let after = outside & !low_bits(q);
            if after == 0 {
                open = Some(a);
                break;
            }
            let b = after.trailing_zeros();
            runs_in(hay, a, base + b as usize, out);
            fourth &= !low_bits(b);
        }
        if outside == 0 {
            carry = (carry + digits.count_ones()).min(3);
        } else {
            let l = 63 - outside.leading_zeros();
            seg = base + l as usize + 1;
            carry = digits.checked_shr(l + 1).unwrap_or(0).count_ones().min(3);
        }
        base += 64;
    }
    // The last segment, walked whatever its count: its last run may still grow. An open segment
    // is this one (nothing ends it).
    runs_in(hay, seg.min(open.unwrap_or(seg)), hay.len(), out);
}

/// Bits `0..n` set (`n` ≤ 64).
#[inline]
fn low_bits(n: u32) -> u64 {
    1u64.checked_shl(n).map_or(u64::MAX, |b| b - 1)
}

/// One bit per byte of a 64-byte block: ASCII digits, and bytes from `[` (0x5B) up (lower-case
/// letters, `_`, non-ASCII), which are all outside the union alphabet. Eight bytes at a time
/// (SWAR): portable, also to wasm.
#[inline]
fn block_masks(block: &[u8; 64]) -> (u64, u64) {
    let (words, _) = block.as_chunks::<8>();
    let (mut digits, mut high) = (0u64, 0u64);
    for (k, w) in words.iter().enumerate() {
        let x = u64::from_le_bytes(*w);
        // Low 7 bits of each byte plus `0x80 - c`: the high bit is set iff they are >= `c`, and
        // no carry crosses bytes.
        let y = x & !HIGH;
        let ge = |c: u8| y + LOW * u64::from(0x80 - c);
        let d = ge(b'0') & !ge(b'9' + 1) & !x & HIGH;
        let o = (ge(b'[') | x) & HIGH;
        digits |= gather_high_bits(d) << (8 * k);
        high |= gather_high_bits(o) << (8 * k);
    }
    (digits, high)
}

/// The high bits of the 8 bytes of `m` (nothing else set) as an 8-bit mask, byte `j` to bit `j`.
#[inline]
fn gather_high_bits(m: u64) -> u64 {
    // Byte j's bit lands at 8j + 7i + 7 for each magic bit i: at 56 + j for i = 7 - j, and no
    // two products share a position, so there are no carries.
    (m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// The digits (bits of `digits`) that are at least the fourth in their segment, a segment being
/// a maximal run of `inside` bits; `carry` (≤ 3) digits precede bit 0 in the segment open there.
/// Three rounds of "has an earlier one in the same segment".
#[inline]
fn segment_fourth_digits(digits: u64, inside: u64, carry: u32) -> u64 {
    let mut r = digits;
    for k in 1..=3 {
        // The carried digits, seen from bit 0 when it continues their segment.
        let c = u64::from(carry >= k) & inside;
        let seeds = r | c;
        // Adding a segment's seeds to its bits clears them from its first seed to its end (the
        // carry runs out at the byte after it, outside), later seeds aside: with the seeds put
        // back, that is every position from the first seed on.
        let from_first = (inside & !inside.wrapping_add(seeds)) | seeds;
        r &= ((from_first << 1) | c) & inside;
    }
    r
}

/// The dense ranges among the runs of the segment `hay[a..b)` (`a` is `from` or follows a byte
/// outside the union alphabet; `hay[b]` is one, or `b` is the end), run by run.
fn runs_in(hay: &[u8], a: usize, b: usize, out: &mut Vec<Dense>) {
    let Some(seg) = hay.get(..b) else { return };
    let mut p = a;
    while let Some(t) = find_digit(seg, p) {
        let back = hay.get(a..t).map_or(0, |s| s.iter().rev().take_while(|&&b| is_numeric_run(b)).count());
        let rs = t.saturating_sub(back);
        let mut re = t;
        let (mut digits, mut dots) = (0, 0);
        for &b in hay.get(t..).unwrap_or_default() {
            if !is_numeric_run(b) {
                break;
            }
            digits += usize::from(b.is_ascii_digit());
            dots += usize::from(b == b'.');
            re += 1;
        }
        if digits >= DENSE_DIGITS || (digits >= DENSE_DIGITS_DOTTED && dots > 0) || re == hay.len() {
            out.push(Dense { start: rs, end: re, digits });
        }
        p = re;
    }
}

/// The first digit at or after `p` in a dense range, skipping the ranges other than the last
/// (at the end of `hay`, it may still grow) with fewer than `min_digits` digits.
fn find_dense_digit(hay: &[u8], dense: &[Dense], p: usize, min_digits: usize) -> Option<usize> {
    let i = dense.partition_point(|r| r.end <= p);
    for r in dense.iter().skip(i) {
        if r.digits < min_digits && r.end < hay.len() {
            continue;
        }
        if let Some(t) = hay.get(..r.end).and_then(|h| find_digit(h, p.max(r.start))) {
            return Some(t);
        }
    }
    None
}

/// An occurrence of a detector's literal in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occ {
    /// Start.
    pub start: usize,
    /// End.
    pub end: usize,
    /// Detector index.
    pub det: usize,
}

/// How one set of literals is searched.
#[derive(Debug)]
enum LiteralSearch {
    /// Teddy (SIMD) finds the next position where some literal starts; the literals starting
    /// there are then checked one by one. Much faster than the automaton's own prefilter on
    /// prose, where the literals' first bytes (`s`, `a`, `e`) are common.
    Packed {
        /// Leftmost-first searcher over the literals.
        searcher: aho_corasick::packed::Searcher,
        /// Literal indexes by first byte.
        by_first: Box<[Vec<u32>; 256]>,
    },
    /// Overlapping Aho-Corasick (case-insensitive sets, targets without Teddy, large sets).
    Automaton(AhoCorasick),
}

/// One literal set: its search, its literals and which detectors own each.
#[derive(Debug)]
struct LiteralSet {
    search: LiteralSearch,
    pats: Vec<Vec<u8>>,
    owners: Vec<Vec<usize>>,
    /// The short-span search, when every literal has two bytes or more.
    short: Option<ShortSearch>,
    /// Whether the literals match in either ASCII case.
    ci: bool,
}

/// The search for a short span (what one streaming step adds: a few bytes and the literals'
/// overlap with the previous step). Teddy and the automaton pay a start-up cost per call that
/// is most of a step's literal search; testing each position's first two bytes against a
/// table costs a few instructions a byte.
#[derive(Debug)]
struct ShortSearch {
    /// A bit per byte pair that begins some literal (in both ASCII cases for a
    /// case-insensitive set).
    pairs: Box<[u64; 1024]>,
    /// Literal indexes by first byte (under both cases for a case-insensitive set).
    by_first: Box<[Vec<u32>; 256]>,
}

/// Spans up to this length take the short-span search.
const SHORT_SPAN: usize = 64;

impl ShortSearch {
    fn new(pats: &[Vec<u8>], ci: bool) -> Option<Self> {
        let mut pairs = Box::new([0u64; 1024]);
        let mut by_first: Box<[Vec<u32>; 256]> = Box::new(std::array::from_fn(|_| Vec::new()));
        for (i, p) in pats.iter().enumerate() {
            let [a, b, ..] = p.as_slice() else { return None };
            let cases = |x: u8| if ci { [x.to_ascii_lowercase(), x.to_ascii_uppercase()] } else { [x, x] };
            for x in cases(*a) {
                for y in cases(*b) {
                    let k = usize::from(x) << 8 | usize::from(y);
                    if let Some(w) = pairs.get_mut(k >> 6) {
                        *w |= 1 << (k & 63);
                    }
                }
                let v = by_first.get_mut(usize::from(x))?;
                if v.last() != Some(&(i as u32)) {
                    v.push(i as u32);
                }
            }
        }
        Some(ShortSearch { pairs, by_first })
    }

    /// Calls `found(start, literal index)` for every literal occurring at a start in
    /// `from..`, in order of start.
    fn find(&self, hay: &[u8], from: usize, pats: &[Vec<u8>], ci: bool, mut found: impl FnMut(usize, usize)) {
        for (j, w) in hay.get(from..).unwrap_or_default().windows(2).enumerate() {
            let &[a, b] = w else { continue };
            let k = usize::from(a) << 8 | usize::from(b);
            if self.pairs.get(k >> 6).is_none_or(|x| x >> (k & 63) & 1 == 0) {
                continue;
            }
            let st = from + j;
            let tail = hay.get(st..).unwrap_or_default();
            for &i in self.by_first.get(usize::from(a)).into_iter().flatten() {
                let Some(p) = pats.get(i as usize) else { continue };
                let hit = match tail.get(..p.len()) {
                    Some(t) if ci => t.eq_ignore_ascii_case(p),
                    Some(t) => t == p.as_slice(),
                    None => false,
                };
                if hit {
                    found(st, i as usize);
                }
            }
        }
    }
}

/// One search pass finds the literals of every literal-scanned detector at once.
#[derive(Debug)]
pub struct LiteralIndex {
    sets: Vec<LiteralSet>,
    maxlit: usize,
    /// Bytes some literal has before its last byte, in both ASCII cases ([`ByteSet::inner`] of
    /// every literal): an occurrence that began before the previous call's end holds that
    /// end's last byte at such a position.
    inner: ByteSet,
    /// Spans up to this length take the short-span search ([`SHORT_SPAN`]; the tests move it
    /// to compare the searches).
    short_span: usize,
}

impl LiteralIndex {
    /// Build from `(detector index, literals, case-insensitive)`.
    pub fn new(entries: &[(usize, &[Vec<u8>], bool)]) -> Result<Self, String> {
        Self::build(entries, true)
    }

    fn build(entries: &[(usize, &[Vec<u8>], bool)], allow_packed: bool) -> Result<Self, String> {
        let mut sets = Vec::new();
        let mut maxlit = 0;
        let mut inner = [false; 256];
        for ci in [false, true] {
            let mut pats: Vec<Vec<u8>> = Vec::new();
            let mut owners: Vec<Vec<usize>> = Vec::new();
            for (det, lits, c) in entries {
                if *c != ci {
                    continue;
                }
                for l in lits.iter() {
                    maxlit = maxlit.max(l.len());
                    match pats.iter().position(|p| p == l) {
                        Some(i) => owners.get_mut(i).into_iter().for_each(|o| o.push(*det)),
                        None => {
                            pats.push(l.clone());
                            owners.push(vec![*det]);
                        }
                    }
                }
            }
            if pats.is_empty() {
                continue;
            }
            let packed = if ci || !allow_packed || pats.iter().any(|p| p.is_empty()) {
                None
            } else {
                aho_corasick::packed::Config::new().only_teddy(true).builder().extend(&pats).build()
            };
            let search = match packed {
                Some(searcher) => {
                    let mut by_first: Box<[Vec<u32>; 256]> = Box::new(std::array::from_fn(|_| Vec::new()));
                    for (i, p) in pats.iter().enumerate() {
                        // Non-empty: checked above.
                        if let Some(v) = p.first().and_then(|&b| by_first.get_mut(usize::from(b))) {
                            v.push(i as u32);
                        }
                    }
                    LiteralSearch::Packed { searcher, by_first }
                }
                None => LiteralSearch::Automaton(
                    AhoCorasickBuilder::new()
                        .match_kind(MatchKind::Standard)
                        .ascii_case_insensitive(ci)
                        .build(&pats)
                        .map_err(|e| e.to_string())?,
                ),
            };
            let inner_here = ByteSet::inner(&pats, true);
            for (t, &b) in inner.iter_mut().zip(inner_here.0.iter()) {
                *t |= b;
            }
            let short = ShortSearch::new(&pats, ci);
            sets.push(LiteralSet { search, pats, owners, short, ci });
        }
        Ok(LiteralIndex { sets, maxlit, inner: ByteSet(Box::new(inner)), short_span: SHORT_SPAN })
    }

    /// Append the occurrences that end after `done` (the buffer length at the previous call),
    /// keeping `occ` sorted by start, then longest first.
    pub fn collect(&self, hay: &[u8], done: usize, occ: &mut Vec<Occ>) {
        // An occurrence ending after `done` that started before it has `hay[..done]` end with a
        // proper prefix of its literal; if the last byte there is in no literal but as its last
        // byte (prose: a space, mostly), every occurrence still to find starts at `done`.
        let straddles = done.checked_sub(1).and_then(|i| hay.get(i)).is_some_and(|&b| self.inner.has(b));
        let from = if straddles { done.saturating_sub(self.maxlit.saturating_sub(1)) } else { done };
        let first_new = occ.len();
        for set in &self.sets {
            let mut push = |start: usize, end: usize, pat: usize| {
                if end > done {
                    for &det in set.owners.get(pat).into_iter().flatten() {
                        occ.push(Occ { start, end, det });
                    }
                }
            };
            if let Some(short) = &set.short
                && hay.len().saturating_sub(from) <= self.short_span
            {
                short.find(hay, from, &set.pats, set.ci, |st, i| {
                    if let Some(p) = set.pats.get(i) {
                        push(st, st + p.len(), i);
                    }
                });
                continue;
            }
            match &set.search {
                LiteralSearch::Packed { searcher, by_first } => {
                    // Every start position with some literal, and every literal there: the
                    // overlapping set (`sk-` inside `sk-ant-`, `secret_access` inside
                    // `aws_secret_access`).
                    let mut at = from;
                    while at < hay.len() {
                        let Some(m) = searcher.find_in(hay, aho_corasick::Span::from(at..hay.len())) else { break };
                        let st = m.start();
                        let Some(tail) = hay.get(st..) else { break };
                        let firsts = tail.first().and_then(|&b| by_first.get(usize::from(b)));
                        for &i in firsts.into_iter().flatten() {
                            if let Some(p) = set.pats.get(i as usize)
                                && tail.starts_with(p)
                            {
                                push(st, st + p.len(), i as usize);
                            }
                        }
                        at = st + 1;
                    }
                }
                LiteralSearch::Automaton(ac) => {
                    let Ok(iter) = ac.try_find_overlapping_iter(Input::new(hay).range(from..)) else { continue };
                    for m in iter {
                        push(m.start(), m.end(), m.pattern().as_usize());
                    }
                }
            }
        }
        if occ.len() > first_new {
            // New occurrences start at or after `from`; sort the tail they may interleave with.
            let i = occ.get(..first_new).map_or(0, |o| o.partition_point(|o| o.start < from));
            occ.get_mut(i..).unwrap_or_default().sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)).then(a.det.cmp(&b.det)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The determined limit of a literal detector by its definition: the first position in the
    /// last `longest - 1` bytes (and before `occ_start`) where the rest of the buffer is a proper
    /// prefix of one of the literals; never below the window's floor.
    fn literal_limit_by_definition(d: &Detector, hay: &[u8], occ_start: usize) -> usize {
        let Scanner::Literal { lits, ci, longest, .. } = &d.scanner else { unreachable!() };
        let l = hay.len();
        let floor = l.saturating_sub(d.window());
        let first = (l.saturating_sub(longest.saturating_sub(1))..l.min(occ_start)).find(|&p| {
            let tail = &hay[p..];
            lits.iter().any(|lit| {
                lit.len() > tail.len() && if *ci { lit[..tail.len()].eq_ignore_ascii_case(tail) } else { &lit[..tail.len()] == tail }
            })
        });
        first.unwrap_or(occ_start.min(l)).max(floor)
    }

    proptest! {
        /// Skipping the search when the buffer's last byte ends no literal prefix changes no
        /// limit.
        #[test]
        fn literal_limit_matches_its_definition(parts in prop::collection::vec(prop::sample::select(&[
            "s", "k", "-", "sk", "sk-", "A", "AK", "AKI", "akia", "x", "xox", "b", " ", "word", "-----", "BEGIN", "e", "eyJ", "\n", "é"][..]), 0..24),
            ci in any::<bool>(), occ_at in prop::option::of(0usize..40)) {
            let hay = parts.concat().into_bytes();
            let lits: Vec<Vec<u8>> = ["sk-proj-", "AKIA", "xoxb-", "-----BEGIN ", "eyJ"].iter()
                .map(|l| if ci { l.to_ascii_lowercase().into_bytes() } else { l.as_bytes().to_vec() }).collect();
            let d = Detector {
                name: Arc::from("t"), label: "T".into(), scanner: Scanner::literal(lits, ci, None, None, None), max_len: 40,
                validate: None, canon: Canon::Verbatim, request: Action::Redact, response: Action::Redact, mask_keep: 0,
            };
            let occ: Vec<Occ> = occ_at.filter(|&a| a < hay.len()).map(|a| Occ { start: a, end: a + 1, det: 0 }).into_iter().collect();
            let occ_start = occ.first().map_or(usize::MAX, |o| if o.start >= hay.len().saturating_sub(d.window()) { o.start } else { usize::MAX });
            prop_assert_eq!(d.determined_limit(0, &hay, &occ), literal_limit_by_definition(&d, &hay, occ_start), "{:?}", String::from_utf8_lossy(&hay));
        }
        /// The word-at-a-time digit search finds the first digit, from any start.
        #[test]
        fn find_digit_finds_the_first(hay in prop::collection::vec(prop::sample::select(&b"abcdefghijk09/:\x80\xff\xb0\xb9 -."[..]), 0..200), from in 0usize..210) {
            let want = hay.get(from..).and_then(|t| t.iter().position(u8::is_ascii_digit)).map(|p| p + from);
            prop_assert_eq!(find_digit(&hay, from), want);
        }
    }

    /// The byte-at-a-time version the segment version replaced.
    fn dense_digit_ranges_ref(hay: &[u8], from: usize, out: &mut Vec<Dense>) {
        out.clear();
        let mut p = from;
        while let Some(t) = find_digit(hay, p) {
            let back = hay.get(from..t).map_or(0, |s| s.iter().rev().take_while(|&&b| is_numeric_run(b)).count());
            let rs = t.saturating_sub(back);
            let mut re = t;
            let (mut digits, mut dots) = (0, 0);
            for &b in hay.get(t..).unwrap_or_default() {
                if !is_numeric_run(b) {
                    break;
                }
                digits += usize::from(b.is_ascii_digit());
                dots += usize::from(b == b'.');
                re += 1;
            }
            if digits >= DENSE_DIGITS || (digits >= DENSE_DIGITS_DOTTED && dots > 0) || re == hay.len() {
                out.push(Dense { start: rs, end: re, digits });
            }
            p = re;
        }
    }

    const LITS: &[&str] = &["sk-", "sk-ant-", "aws_secret", "secret_access", "AKIA", "eyJ", "-----BEGIN ", "xoxb-"];

    proptest! {
        /// The segment version finds the same ranges as the run-by-run one, from any start.
        #[test]
        fn dense_ranges_segments_equal_runs(parts in prop::collection::vec(prop::sample::select(
            &["1", "2024", "4242 4242", "1.2.3.4", "12", ".", " ", "-", "(", ")", "+", "A", "DE89", "a", "word", "x", "\n", "é", "\0", "_", "{", "Z["][..]), 0..120),
            from in any::<usize>()) {
            let hay = parts.concat().into_bytes();
            let from = from % (hay.len() + 2);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            dense_digit_ranges(&hay, from, &mut a);
            dense_digit_ranges_ref(&hay, from, &mut b);
            prop_assert_eq!(a, b);
        }

        /// Skipping the complete dense ranges with too few digits for a detector changes
        /// neither its candidates nor the position it returns, at its determined limit or at
        /// the end of the stream.
        #[test]
        fn skipping_sparse_dense_ranges_changes_nothing(parts in prop::collection::vec(prop::sample::select(
            &["4242 4242 4242 4242", "123-45-6789", "+1 415 555 2671", "DE89 3704 0044 0532 0130 00", "1.2.3.4", "2024", "12",
              ".", " ", "-", "(", ")", "+", "/", "A", "word", "\n", "4111", "0"][..]), 0..40), from in 0usize..64) {
            let hay = parts.concat().into_bytes();
            let mut dense = Vec::new();
            dense_digit_ranges(&hay, from.min(hay.len()), &mut dense);
            for b in builtin::BUILTINS {
                let Ok(scanner) = builtin::scanner(b) else { continue };
                let Scanner::Run { dense_min, .. } = &scanner else { continue };
                let dense_min = *dense_min;
                let max_len = builtin::max_len(b.pattern, false).unwrap().0.unwrap();
                let make = |scanner| Detector {
                    name: Arc::from(b.name), label: b.label.to_string(), scanner, max_len, validate: b.validate,
                    canon: b.canon, request: Action::Redact, response: Action::Redact, mask_keep: 0,
                };
                let skipping = make(scanner);
                let mut all = make(builtin::scanner(b).unwrap());
                if let Scanner::Run { dense_min, .. } = &mut all.scanner {
                    *dense_min = 0;
                }
                for limit in [skipping.determined_limit(0, &hay, &[]), hay.len()] {
                    let (mut c1, mut c2) = (Vec::new(), Vec::new());
                    let p1 = skipping.scan(0, &hay, &[], &dense, from.min(hay.len()), limit, &mut c1);
                    let p2 = all.scan(0, &hay, &[], &dense, from.min(hay.len()), limit, &mut c2);
                    prop_assert_eq!((p1, c1), (p2, c2), "{} (dense_min {}) in {:?}", b.name, dense_min, String::from_utf8_lossy(&hay));
                }
            }
        }

        /// The Teddy path, the short-span search and the automaton find exactly the same
        /// overlapping occurrences (case-insensitive ones too), also when collected
        /// incrementally.
        #[test]
        fn packed_short_and_automaton_find_the_same(parts in prop::collection::vec(prop::sample::select(
            &["sk-", "ant-", "aws_", "secret", "_access", "AKIA", "eyJ", "-----BEGIN ", "xoxb-", "x", " ", "s", "k", "S",
              "PROJECT", "Falcon", "fal"][..]), 0..30),
            cut in any::<usize>()) {
            let hay = parts.concat().into_bytes();
            let lits: Vec<Vec<u8>> = LITS.iter().map(|l| l.as_bytes().to_vec()).collect();
            let ci: Vec<Vec<u8>> = ["project", "sk", "FALCON"].iter().map(|l| l.as_bytes().to_vec()).collect();
            let entries = [(0, &lits[..3], false), (1, &lits[3..], false), (2, &ci[..], true)];
            let cut = cut % (hay.len() + 1);
            let mut found = Vec::new();
            for (allow_packed, short_span) in [(true, 0), (false, 0), (true, usize::MAX), (false, SHORT_SPAN)] {
                let mut idx = LiteralIndex::build(&entries, allow_packed).unwrap();
                idx.short_span = short_span;
                let mut occ = Vec::new();
                idx.collect(&hay[..cut], 0, &mut occ);
                idx.collect(&hay, cut, &mut occ);
                found.push(occ);
            }
            // All at once, by the automaton.
            let mut occ = Vec::new();
            LiteralIndex::build(&entries, false).unwrap().collect(&hay, 0, &mut occ);
            found.push(occ);
            let packed = matches!(LiteralIndex::build(&entries, true).unwrap().sets[0].search, LiteralSearch::Packed { .. });
            prop_assert!(packed || !cfg!(target_arch = "x86_64"), "Teddy is used on x86_64");
            prop_assert!(found[0].iter().any(|o| o.det == 2) || !hay.windows(2).any(|w| w.eq_ignore_ascii_case(b"sk")));
            for f in &found[1..] {
                prop_assert_eq!(&found[0], f);
            }
        }

        /// A literal of one byte leaves its set to the other searches (the pair table needs
        /// two).
        #[test]
        fn a_one_byte_literal_is_still_found(parts in prop::collection::vec(prop::sample::select(&["a", "b", "ab", " "][..]), 0..20)) {
            let hay = parts.concat().into_bytes();
            let lits = [b"a".to_vec(), b"ab".to_vec()];
            let idx = LiteralIndex::build(&[(0, &lits[..], false)], true).unwrap();
            prop_assert!(idx.sets[0].short.is_none());
            let mut occ = Vec::new();
            idx.collect(&hay, 0, &mut occ);
            prop_assert_eq!(occ.iter().filter(|o| o.end - o.start == 1).count(), hay.iter().filter(|&&b| b == b'a').count());
        }
    }
}
