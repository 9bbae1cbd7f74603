//! Detectors: what they match, how far a match can reach, and how they scan incrementally.
//!
//! Every detector has a *maximum match length* `max_len` (bytes of normalised text) and reads
//! at most [`LOOKAROUND`] bytes around a match. A detector scans the buffer from its own
//! position and reports only *determined* matches: those whose start is below the detector's
//! *determined limit*, a position before which no future input can change what the detector
//! finds. The limit is never below `len - max_len - LOOKAROUND`, and usually much closer to the
//! end (see [`Scanner`]).

pub mod builtin;
pub mod validate;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Input, MatchKind};
use regex::bytes::Regex;
use std::sync::Arc;

use crate::config::{Action, Direction};

/// Bytes of context a detector may read around a match (before and after).
pub const LOOKAROUND: usize = 4;

/// A candidate validator: given the haystack and a raw match `[start, end)`, return the span to
/// act on (inside the match) or `None` to reject. Reads at most one byte before `start` and two
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
    /// Bytes of the ASCII string plus the given ranges.
    pub fn new(chars: &str, ranges: &[(u8, u8)]) -> Self {
        let mut t = [false; 256];
        for &b in chars.as_bytes() {
            t[b as usize] = true;
        }
        for &(a, z) in ranges {
            for b in a..=z {
                t[b as usize] = true;
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
        self.0[b as usize]
    }
}

/// What makes a run worth scanning.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// An ASCII digit.
    Digit,
    /// This byte.
    Byte(u8),
}

/// How a detector finds candidates.
#[derive(Debug)]
pub enum Scanner {
    /// Matches lie inside maximal runs of `alphabet` bytes that contain a `trigger`; the regex is
    /// run over each such run. Determined limit: the start of the trailing alphabet run (it may
    /// still grow), but at least `len - max_len - LOOKAROUND`.
    Run {
        /// Unanchored regex.
        re: Regex,
        /// Bytes a match may consist of.
        alphabet: ByteSet,
        /// A byte every match contains.
        trigger: Trigger,
    },
    /// Matches start with one of `literals` (found by Aho-Corasick); an optional regex anchored
    /// with `\A` is then matched at the literal. Determined limit: the first position in the
    /// last `max_len + LOOKAROUND` bytes where a literal starts or could start.
    Literal {
        /// Literal finder.
        ac: AhoCorasick,
        /// Lower-cased literals when `ac` is case-insensitive (for the partial-suffix check).
        lits: Vec<Vec<u8>>,
        /// Case-insensitive literals.
        ci: bool,
        /// Anchored regex run at a literal occurrence; `None` = the literal is the match.
        re: Option<Regex>,
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

/// Find the first ASCII digit at or after `from`.
#[inline]
pub fn find_digit(h: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 32 <= h.len() {
        let c = &h[i..i + 32];
        if c.iter().fold(false, |a, &b| a | (b.wrapping_sub(b'0') < 10)) {
            break;
        }
        i += 32;
    }
    h.get(i..)?.iter().position(|b| b.is_ascii_digit()).map(|p| p + i)
}

impl Detector {
    /// The determined limit for a buffer `hay` (not at end of stream), never above `hay.len()`.
    pub fn determined_limit(&self, hay: &[u8]) -> usize {
        let l = hay.len();
        let floor = l.saturating_sub(self.window());
        match &self.scanner {
            Scanner::Full { .. } => floor,
            Scanner::Run { alphabet, .. } => {
                // The last two bytes count as part of the trailing run whatever they are: a
                // validator may read two bytes past a match that ends at a run's terminator.
                let mut r = l.saturating_sub(2).max(floor);
                while r > floor && alphabet.has(hay[r - 1]) {
                    r -= 1;
                }
                r
            }
            Scanner::Literal { ac, lits, ci, .. } => {
                let mut lim = l;
                if let Ok(Some(m)) = ac.try_find(Input::new(hay).range(floor..l)) {
                    lim = m.start();
                }
                let maxlit = lits.iter().map(|x| x.len()).max().unwrap_or(0);
                let kmax = maxlit.saturating_sub(1).min(l);
                for k in (1..=kmax).rev() {
                    let p = l - k;
                    if p >= lim {
                        break;
                    }
                    let tail = &hay[p..];
                    if lits.iter().any(|lit| lit.len() > k && if *ci { lit[..k].eq_ignore_ascii_case(tail) } else { &lit[..k] == tail }) {
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
    pub fn scan(&self, det: usize, hay: &[u8], pos: usize, limit: usize, out: &mut Vec<Cand>) -> usize {
        match &self.scanner {
            Scanner::Full { re } => {
                let (_, at) = self.scan_region(det, re, hay, hay.len(), pos, limit, out);
                at.max(limit)
            }
            Scanner::Run { re, alphabet, trigger } => {
                let mut p = pos;
                loop {
                    let t = match trigger {
                        Trigger::Digit => find_digit(hay, p),
                        Trigger::Byte(b) => memchr::memchr(*b, &hay[p.min(hay.len())..]).map(|x| x + p),
                    };
                    let Some(t) = t else { return p.max(limit) };
                    let mut rs = t;
                    while rs > p && alphabet.has(hay[rs - 1]) {
                        rs -= 1;
                    }
                    if rs >= limit {
                        return p.max(limit);
                    }
                    let mut run_end = t + 1;
                    while run_end < hay.len() && alphabet.has(hay[run_end]) {
                        run_end += 1;
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
            Scanner::Literal { ac, re, left_boundary, right_boundary, .. } => {
                let mut p = pos;
                loop {
                    if p >= hay.len() {
                        return p.max(limit);
                    }
                    let m = match ac.try_find(Input::new(hay).range(p..)) {
                        Ok(Some(m)) => m,
                        _ => return p.max(limit),
                    };
                    let s = m.start();
                    if s >= limit {
                        return p.max(limit);
                    }
                    let left_ok = match (left_boundary, s) {
                        (Some(set), s) if s > 0 => !set.has(hay[s - 1]),
                        _ => true,
                    };
                    let mut end = None;
                    if left_ok {
                        end = match re {
                            None => Some(m.end()),
                            Some(re) => {
                                let w = (s + self.window()).min(hay.len());
                                re.find(&hay[s..w]).map(|x| s + x.end())
                            }
                        };
                        if let (Some(e), Some(set)) = (end, right_boundary)
                            && e < hay.len()
                            && set.has(hay[e])
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
        re: &Regex,
        hay: &[u8],
        hay_end: usize,
        mut at: usize,
        limit: usize,
        out: &mut Vec<Cand>,
    ) -> (bool, usize) {
        let h = &hay[..hay_end];
        while at <= h.len() {
            let Some(m) = re.find_at(h, at) else { return (true, at) };
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
                    at = m.end();
                }
                None => at = m.start() + 1,
            }
        }
        (true, at)
    }
}

/// Build an Aho-Corasick automaton for literals.
pub fn build_ac(lits: &[Vec<u8>], ci: bool) -> Result<AhoCorasick, String> {
    AhoCorasickBuilder::new().match_kind(MatchKind::LeftmostLongest).ascii_case_insensitive(ci).build(lits).map_err(|e| e.to_string())
}
