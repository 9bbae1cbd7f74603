//! Normalisation applied before matching, and the map back to original bytes.
//!
//! Detectors never see the raw bytes: they see a *normalised* copy in which
//!
//! * zero-width and invisible formatting characters are removed: U+200B ZERO WIDTH SPACE,
//!   U+200C ZERO WIDTH NON-JOINER, U+200D ZERO WIDTH JOINER, U+2060 WORD JOINER,
//!   U+FEFF ZERO WIDTH NO-BREAK SPACE (BOM) and U+00AD SOFT HYPHEN;
//! * fullwidth ASCII forms U+FF01..=U+FF5E (`４２４２`, `ａ＠ｂ．ｃｏｍ`) are folded to ASCII;
//! * JSON `\uXXXX` escapes are decoded by the JSON layer ([`crate::json`], [`crate::sse`])
//!   before the text reaches the engine, so `4\u0032...` is seen as `42...`.
//!
//! A match found in the normalised text is mapped back to the original byte range, so the
//! output replaces the *original* bytes (including any zero-width characters inside the match).
//!
//! To keep memory bounded, a run of more than [`MAX_IGNORABLE_RUN`] consecutive ignorable
//! characters is truncated: the excess invisible characters are dropped from the output. No
//! legitimate text needs three zero-width characters in a row (emoji ZWJ sequences use one).
//!
//! **Not normalised** (each claim is tested in `tests/bypass.rs`):
//! * homoglyphs (Cyrillic `а` for Latin `a`, mathematical alphanumerics, Arabic-Indic digits);
//! * base64, hex or any other encoding of the value;
//! * URL/percent encoding (`%40` for `@`) and HTML entities (`&#64;`);
//! * values spelled out or split by visible characters (`4 2 4 2 ...` beyond a card's
//!   separator rules, `john at example dot com`).
//!
//! Invalid UTF-8 passes through unchanged: the invalid bytes are copied to the output as they
//! are and never match a detector (they act as separators). A UTF-8 sequence split across
//! chunks is held until it completes (or until the end of the stream, where an incomplete
//! sequence is invalid and passes through).

/// At most this many consecutive ignorable characters are kept; the excess is dropped.
pub const MAX_IGNORABLE_RUN: u32 = 2;

/// Worst-case number of original bytes behind one normalised byte (a fullwidth character is
/// 3 bytes for 1, preceded by up to [`MAX_IGNORABLE_RUN`] ignorables of at most 3 bytes each).
pub const EXPANSION: usize = 3 + 3 * MAX_IGNORABLE_RUN as usize;

/// Incremental normaliser: appends normalised bytes and the original bytes they came from.
#[derive(Debug, Default, Clone)]
pub struct Normalizer {
    pending: Vec<u8>,
    ignorable_run: u32,
}

/// The two buffers a normaliser writes into, plus the map between them.
#[derive(Debug, Default, Clone)]
pub struct Buffers {
    /// Original bytes (minus dropped excess ignorables) not yet discarded.
    pub orig: Vec<u8>,
    /// Normalised bytes.
    pub norm: Vec<u8>,
    /// Piecewise-identity map: `(norm_offset, orig_offset)` anchors, sorted, first is `(0, x)`.
    pub anchors: Vec<(usize, usize)>,
}

impl Buffers {
    /// New empty buffers.
    pub fn new() -> Self {
        Buffers { orig: Vec::new(), norm: Vec::new(), anchors: vec![(0, 0)] }
    }

    /// Empty again, as [`Buffers::new`], keeping the capacity.
    pub fn clear(&mut self) {
        self.orig.clear();
        self.norm.clear();
        self.anchors.clear();
        self.anchors.push((0, 0));
    }

    /// Original offset of normalised offset `n` (the first original byte that produced
    /// normalised byte `n`; for `n == norm.len()`, the end of the original bytes).
    pub fn map(&self, n: usize) -> usize {
        let i = self.anchors.partition_point(|a| a.0 <= n);
        // anchors[0].0 == 0 <= n, so i >= 1.
        let (na, oa) = self.anchors.get(i.saturating_sub(1)).copied().unwrap_or((0, 0));
        oa + n.saturating_sub(na)
    }

    /// Original bytes `[a, b)`, empty if that is not a range of them.
    pub fn orig_range(&self, a: usize, b: usize) -> &[u8] {
        self.orig.get(a..b).unwrap_or_default()
    }

    fn set_anchor(&mut self, n: usize, o: usize) {
        if let Some(last) = self.anchors.last_mut() {
            if last.0 == n {
                last.1 = o;
                return;
            }
            if n.checked_sub(last.0).is_some_and(|d| last.1 + d == o) {
                return;
            }
        }
        self.anchors.push((n, o));
    }

    /// Drop everything before normalised offset `k` (and the original bytes before `map(k)`).
    /// Returns the number of original bytes dropped.
    pub fn trim_front(&mut self, k: usize) -> usize {
        if k == 0 {
            return 0;
        }
        let k = k.min(self.norm.len());
        let o = self.map(k).min(self.orig.len());
        let i = self.anchors.partition_point(|a| a.0 <= k);
        let mut anchors = Vec::with_capacity(self.anchors.len().saturating_sub(i) + 1);
        anchors.push((0, 0));
        for &(na, oa) in self.anchors.iter().skip(i) {
            anchors.push((na.saturating_sub(k), oa.saturating_sub(o)));
        }
        self.anchors = anchors;
        self.norm.drain(..k);
        self.orig.drain(..o);
        o
    }
}

fn incomplete_suffix_len(c: &[u8]) -> usize {
    for (k, &b) in (1..).zip(c.iter().rev().take(3)) {
        if b & 0xC0 == 0x80 {
            continue;
        }
        let suffix = c.get(c.len().saturating_sub(k)..).unwrap_or_default();
        return match std::str::from_utf8(suffix) {
            Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => k,
            _ => 0,
        };
    }
    0
}

impl Normalizer {
    /// Back to the state of a new normaliser, keeping the capacity.
    pub fn reset(&mut self) {
        let Normalizer { pending, ignorable_run } = self;
        pending.clear();
        *ignorable_run = 0;
    }

    /// Bytes of an incomplete UTF-8 sequence held from the previous chunk.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Normalise `chunk` into `buf`. With `last`, a trailing incomplete sequence is flushed as
    /// invalid bytes; otherwise it is held until the next chunk.
    pub fn push(&mut self, chunk: &[u8], last: bool, buf: &mut Buffers) {
        if self.pending.is_empty() {
            self.push_inner(chunk, last, buf);
        } else {
            let mut owned = std::mem::take(&mut self.pending);
            owned.extend_from_slice(chunk);
            self.push_inner(&owned, last, buf);
        }
    }

    fn push_inner(&mut self, input: &[u8], last: bool, buf: &mut Buffers) {
        if input.is_ascii() {
            // No lead byte of anything folded or dropped, and no character cut at the end:
            // what the loop below does with it, without its searches (most deltas).
            self.copy(input, buf);
            return;
        }
        let keep = if last { 0 } else { incomplete_suffix_len(input) };
        let (mut body, tail) = split(input, input.len().saturating_sub(keep));
        self.pending.extend_from_slice(tail);
        while !body.is_empty() {
            let Some(rel) = memchr::memchr3(0xC2, 0xE2, 0xEF, body) else {
                self.copy(body, buf);
                break;
            };
            let (plain, rest) = split(body, rel);
            self.copy(plain, buf);
            let (special, n) = classify(rest);
            let (seq, after) = split(rest, n);
            match special {
                Special::Ignorable => {
                    if self.ignorable_run < MAX_IGNORABLE_RUN {
                        buf.orig.extend_from_slice(seq);
                        let (nl, ol) = (buf.norm.len(), buf.orig.len());
                        buf.set_anchor(nl, ol);
                    }
                    self.ignorable_run = self.ignorable_run.saturating_add(1);
                }
                Special::Fold(a) => {
                    let (nl, ol) = (buf.norm.len(), buf.orig.len());
                    buf.set_anchor(nl, ol);
                    buf.orig.extend_from_slice(seq);
                    buf.norm.push(a);
                    let (nl, ol) = (buf.norm.len(), buf.orig.len());
                    buf.set_anchor(nl, ol);
                    self.ignorable_run = 0;
                }
                Special::None => self.copy(seq, buf),
            }
            body = after;
        }
    }

    fn copy(&mut self, s: &[u8], buf: &mut Buffers) {
        if s.is_empty() {
            return;
        }
        self.ignorable_run = 0;
        buf.orig.extend_from_slice(s);
        buf.norm.extend_from_slice(s);
    }
}

/// `s` split at `at`, or all of `s` and nothing if `at` is past its end.
fn split(s: &[u8], at: usize) -> (&[u8], &[u8]) {
    s.split_at_checked(at).unwrap_or((s, &[]))
}

enum Special {
    Ignorable,
    Fold(u8),
    None,
}

/// What `s` starts with, and that sequence's length in bytes (at most `s.len()`, at least 1
/// unless `s` is empty).
fn classify(s: &[u8]) -> (Special, usize) {
    match s {
        [0xC2, 0xAD, ..] => (Special::Ignorable, 2),
        [0xE2, 0x80, 0x8B..=0x8D, ..] | [0xE2, 0x81, 0xA0, ..] | [0xEF, 0xBB, 0xBF, ..] => (Special::Ignorable, 3),
        [0xEF, 0xBC, b @ 0x81..=0xBF, ..] => (Special::Fold(0x21 + (b - 0x81)), 3),
        [0xEF, 0xBD, b @ 0x80..=0x9E, ..] => (Special::Fold(0x60 + (b - 0x80)), 3),
        _ => (Special::None, 1),
    }
}

/// Normalise a whole text at once (for tests and one-shot callers).
pub fn normalize_all(s: &[u8]) -> Buffers {
    let mut b = Buffers::new();
    Normalizer::default().push(s, true, &mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_fullwidth_and_removes_zero_width() {
        let b = normalize_all("４２\u{200B}4\u{00AD}2ｘ".as_bytes());
        assert_eq!(b.norm, b"4242x");
        assert_eq!(b.orig, "４２\u{200B}4\u{00AD}2ｘ".as_bytes());
        assert_eq!(b.map(0), 0);
        assert_eq!(b.map(1), 3);
        assert_eq!(b.map(2), 9); // after the ZWSP
        assert_eq!(b.map(3), 12); // after the soft hyphen
        assert_eq!(b.map(4), 13);
        assert_eq!(b.map(5), b.orig.len());
    }

    #[test]
    fn truncates_long_ignorable_runs() {
        let s = "a\u{200B}\u{200B}\u{200B}\u{200B}b";
        let b = normalize_all(s.as_bytes());
        assert_eq!(b.norm, b"ab");
        assert_eq!(b.orig, "a\u{200B}\u{200B}b".as_bytes());
    }

    #[test]
    fn split_sequences_are_held() {
        let s = "x\u{200B}y４".as_bytes();
        for cut in 0..=s.len() {
            let mut b = Buffers::new();
            let mut n = Normalizer::default();
            n.push(&s[..cut], false, &mut b);
            n.push(&s[cut..], true, &mut b);
            assert_eq!(b.norm, b"xy4", "cut {cut}");
        }
    }

    #[test]
    fn invalid_bytes_pass_through() {
        let b = normalize_all(&[b'a', 0xFF, 0xE2, 0x80, b'b', 0xEF]);
        assert_eq!(b.norm, vec![b'a', 0xFF, 0xE2, 0x80, b'b', 0xEF]);
        assert_eq!(b.orig, b.norm);
    }

    #[test]
    fn trim_keeps_map() {
        let mut b = normalize_all("ab４\u{200B}cd".as_bytes());
        assert_eq!(b.norm, b"ab4cd");
        let dropped = b.trim_front(3);
        assert_eq!(dropped, 8);
        assert_eq!(b.norm, b"cd");
        assert_eq!(b.map(0), 0);
        assert_eq!(b.map(2), 2);
        assert_eq!(b.orig, b"cd");
    }
}
