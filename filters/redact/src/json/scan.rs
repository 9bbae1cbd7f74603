//! One strict pass over a JSON document: it checks everything a strict parser checks (UTF-8,
//! control characters and escapes in strings, lone surrogates, the number grammar, structure,
//! trailing bytes, nesting depth) and, in the same pass, tells a visitor where every value is and
//! at which path, without building a tree or decoding a string nobody asked for.
//!
//! It replaces three passes per body and per streamed event (a UTF-8 check, a strict
//! `serde_json` parse that threw everything away, and a walk that found the string ranges),
//! which were most of the per-event cost in Envoy (`docs/benchmarks.md`, chunk cost).
//!
//! Accepts exactly RFC 8259 JSON, as `serde_json` does, with one difference: a number too large
//! for an `f64` (`1e400`) is grammatical JSON and is accepted here, where `serde_json` reports
//! it out of range. Nothing reads such a number as text to redact.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use super::Seg;

/// Nesting this deep is refused (as `serde_json` refuses it), which also bounds the recursion.
pub const MAX_DEPTH: usize = 128;

/// What a value is, as the scanner meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `{`: its members follow.
    Object,
    /// `[`: its elements follow.
    Array,
    /// A string.
    Str {
        /// Its bytes, quotes included.
        raw: Range<usize>,
        /// It holds at least one `\` escape (so it must be decoded to be read).
        escaped: bool,
    },
    /// A number, its bytes.
    Num(Range<usize>),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// Receives the values of a document in order.
pub trait Visit<'a> {
    /// A value at `path` (object keys and array indices from the root); containers are reported
    /// before their contents.
    fn value(&mut self, path: &[Seg<'a>], kind: &Kind);
    /// A container at `path` ended; `raw` spans it from its bracket to its closing bracket.
    fn close(&mut self, _path: &[Seg<'a>], _raw: Range<usize>) {}
}

/// Reads nothing: for callers of a pass that takes a second visitor and have none.
impl Visit<'_> for () {
    fn value(&mut self, _path: &[Seg<'_>], _kind: &Kind) {}
}

/// Two visitors fed by one pass, the first before the second at every value.
impl<'a, A: Visit<'a>, B: Visit<'a>> Visit<'a> for (A, B) {
    fn value(&mut self, path: &[Seg<'a>], kind: &Kind) {
        self.0.value(path, kind);
        self.1.value(path, kind);
    }

    fn close(&mut self, path: &[Seg<'a>], raw: Range<usize>) {
        self.0.close(path, raw.clone());
        self.1.close(path, raw);
    }
}

/// A visitor lent to a pass (so one can be paired without giving it up).
impl<'a, V: Visit<'a> + ?Sized> Visit<'a> for &mut V {
    fn value(&mut self, path: &[Seg<'a>], kind: &Kind) {
        (**self).value(path, kind);
    }

    fn close(&mut self, path: &[Seg<'a>], raw: Range<usize>) {
        (**self).close(path, raw);
    }
}

/// Why a document is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// What was wrong.
    pub what: &'static str,
    /// The byte offset where it was found.
    pub at: usize,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Check `json` strictly and report its values to `v`.
pub fn scan<'a, V: Visit<'a>>(json: &'a [u8], v: &mut V) -> Result<(), ScanError> {
    scan_text(utf8(json)?, v)
}

/// The document as text: the UTF-8 check [`scan`] starts with.
pub fn utf8(json: &[u8]) -> Result<&str, ScanError> {
    // One UTF-8 check of the whole document (bytes >= 0x80 are legal only inside strings, where
    // they must be UTF-8; anywhere else the grammar refuses them anyway) is cheaper than one per
    // string, and gives keys as `&str` without checking each again.
    std::str::from_utf8(json).map_err(|e| ScanError { what: "invalid UTF-8", at: e.valid_up_to() })
}

/// [`scan`] of a document already checked as UTF-8 ([`utf8`]): a caller that keeps the text
/// reads the strings it was told of with [`decode_text`], without checking them again.
pub fn scan_text<'a, V: Visit<'a>>(text: &'a str, v: &mut V) -> Result<(), ScanError> {
    let json = text.as_bytes();
    // Room for the paths of every provider event read (`choices`/0/`delta`/`tool_calls`/0/...)
    // at once, instead of growing on the way down.
    let mut s = Scanner { b: json, text, i: 0, path: Vec::with_capacity(8) };
    s.ws();
    s.value(v, 0)?;
    s.ws();
    if s.i < json.len() {
        return Err(s.err("trailing characters"));
    }
    Ok(())
}

/// Whether `text` is exactly one JSON string, quotes included, as [`scan_text`] checks a string
/// inside a document (control characters, escapes, surrogates).
pub fn is_string(text: &str) -> bool {
    if !text.starts_with('"') {
        return false;
    }
    let mut s = Scanner { b: text.as_bytes(), text, i: 0, path: Vec::new() };
    s.string().is_ok_and(|(raw, _)| raw.end == text.len())
}

/// The text of a string value the scanner accepted (`raw` with its quotes): borrowed when it
/// holds no escapes.
pub fn decode(raw: &[u8]) -> Cow<'_, str> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    if !inner.contains(&b'\\') {
        // The scanner accepted it, so it is UTF-8: the plain check is the fast one (the lossy
        // conversion walks it in chunks).
        return std::str::from_utf8(inner).map_or_else(|_| String::from_utf8_lossy(inner), Cow::Borrowed);
    }
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&c) = inner.get(i) {
        if c != b'\\' {
            let end = inner.get(i..).and_then(|t| t.iter().position(|&b| b == b'\\')).map_or(inner.len(), |p| i + p);
            out.push_str(&String::from_utf8_lossy(inner.get(i..end).unwrap_or_default()));
            i = end;
            continue;
        }
        let e = inner.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let ch = match e {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(inner.get(i..i + 4)).unwrap_or(0xFFFD);
                i += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    let lo = hex4(inner.get(i + 2..i + 6)).unwrap_or(0xFFFD);
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)).unwrap_or('\u{FFFD}')
                } else {
                    char::from_u32(hi).unwrap_or('\u{FFFD}')
                }
            }
            other => char::from(other),
        };
        out.push(ch);
    }
    Cow::Owned(out)
}

/// [`decode`] of a string value (`raw` with its quotes) already checked as UTF-8: borrowed,
/// without a second check, when it holds no escapes.
pub fn decode_text(raw: &str) -> Cow<'_, str> {
    match raw.get(1..raw.len().saturating_sub(1)) {
        Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
        _ => decode(raw.as_bytes()),
    }
}

/// A number's value when it is a non-negative integer that fits a `u64`, as `serde_json` reads
/// it (`-0` is 0; `1.0`, `1e2` and `-1` are not).
pub fn as_u64(raw: &[u8]) -> Option<u64> {
    if raw == b"-0" {
        return Some(0);
    }
    if raw.is_empty() {
        return None;
    }
    // What `str::parse::<u64>` gives on ASCII digits (None on overflow), without its UTF-8
    // check and sign handling: an index is read per choice of every streamed event.
    let mut n = 0u64;
    for &b in raw {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Where the first `"`, `\\` or control character of `s` is. Eight bytes at a time (SWAR,
/// portable to wasm): strings here are short (keys, a few words of a delta), too short for
/// memchr's set-up per call to pay off, and a byte-at-a-time loop was a fifth of an event's
/// cost.
fn string_stop(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let (words, tail) = s.as_chunks::<8>();
    for (k, w) in words.iter().enumerate() {
        let w = u64::from_le_bytes(*w);
        let (q, b) = (w ^ (LO * u64::from(b'"')), w ^ (LO * u64::from(b'\\')));
        // A zero byte of q or b, or a byte below 0x20 of w. Borrows can flag bytes after the
        // first hit, never before it, so the lowest flag is exact.
        let hits = (q.wrapping_sub(LO) & !q | b.wrapping_sub(LO) & !b | w.wrapping_sub(LO * 0x20) & !w) & HI;
        if hits != 0 {
            return Some(k * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    let done = words.len() * 8;
    tail.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| done + p)
}

fn hex4(h: Option<&[u8]>) -> Option<u32> {
    let mut n = 0u32;
    for &c in h? {
        n = n * 16 + char::from(c).to_digit(16)?;
    }
    Some(n)
}

struct Scanner<'a> {
    b: &'a [u8],
    /// The same bytes, checked as UTF-8.
    text: &'a str,
    i: usize,
    path: Vec<Seg<'a>>,
}

impl<'a> Scanner<'a> {
    fn err(&self, what: &'static str) -> ScanError {
        ScanError { what, at: self.i }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn value<V: Visit<'a>>(&mut self, v: &mut V, depth: usize) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'{') => self.object(v, depth),
            Some(b'[') => self.array(v, depth),
            Some(b'"') => {
                let (raw, escaped) = self.string()?;
                v.value(&self.path, &Kind::Str { raw, escaped });
                Ok(())
            }
            Some(b't') => self.literal(v, b"true", Kind::Bool(true)),
            Some(b'f') => self.literal(v, b"false", Kind::Bool(false)),
            Some(b'n') => self.literal(v, b"null", Kind::Null),
            Some(b'-' | b'0'..=b'9') => {
                let r = self.number()?;
                v.value(&self.path, &Kind::Num(r));
                Ok(())
            }
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end of input, expected a value")),
        }
    }

    fn literal<V: Visit<'a>>(&mut self, v: &mut V, word: &[u8], kind: Kind) -> Result<(), ScanError> {
        if self.b.get(self.i..self.i + word.len()) != Some(word) {
            return Err(self.err("expected a value"));
        }
        self.i += word.len();
        v.value(&self.path, &kind);
        Ok(())
    }

    fn enter(&self, depth: usize) -> Result<usize, ScanError> {
        // serde_json counts the root container as the first of its 128 levels and refuses the
        // 128th: the same documents pass and fail here.
        if depth + 1 >= MAX_DEPTH { Err(self.err("nesting too deep")) } else { Ok(depth + 1) }
    }

    fn object<V: Visit<'a>>(&mut self, v: &mut V, depth: usize) -> Result<(), ScanError> {
        let depth = self.enter(depth)?;
        let start = self.i;
        v.value(&self.path, &Kind::Object);
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            v.close(&self.path, start..self.i);
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a key"));
            }
            let (raw, escaped) = self.string()?;
            let key = if escaped {
                Cow::Owned(decode(self.b.get(raw).unwrap_or_default()).into_owned())
            } else {
                // Quotes are ASCII, so the range inside them lies on character boundaries.
                Cow::Borrowed(self.text.get(raw.start + 1..raw.end - 1).unwrap_or_default())
            };
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            self.ws();
            self.path.push(Seg::Key(key));
            self.value(v, depth)?;
            self.path.pop();
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.i += 1;
                    v.close(&self.path, start..self.i);
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array<V: Visit<'a>>(&mut self, v: &mut V, depth: usize) -> Result<(), ScanError> {
        let depth = self.enter(depth)?;
        let start = self.i;
        v.value(&self.path, &Kind::Array);
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            v.close(&self.path, start..self.i);
            return Ok(());
        }
        let mut n = 0;
        loop {
            self.path.push(Seg::Idx(n));
            self.value(v, depth)?;
            self.path.pop();
            n += 1;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
                Some(b']') => {
                    self.i += 1;
                    v.close(&self.path, start..self.i);
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    /// A string starting at `"`: its raw range and whether it holds escapes.
    fn string(&mut self) -> Result<(Range<usize>, bool), ScanError> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            let rest = self.b.get(self.i..).unwrap_or_default();
            let Some(n) = string_stop(rest) else {
                return Err(ScanError { what: "unexpected end of input inside a string", at: self.b.len() });
            };
            self.i += n;
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok((start..self.i, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(self.err("control character in a string")),
            }
        }
    }

    /// An escape starting at `\`.
    fn escape(&mut self) -> Result<(), ScanError> {
        let at = self.i;
        match self.b.get(self.i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 2;
                Ok(())
            }
            Some(b'u') => {
                let n = hex4(self.b.get(self.i + 2..self.i + 6)).ok_or(ScanError { what: "invalid \\u escape", at })?;
                self.i += 6;
                match n {
                    0xD800..=0xDBFF => {
                        let lo = match self.b.get(self.i..self.i + 2) {
                            Some(b"\\u") => hex4(self.b.get(self.i + 2..self.i + 6)),
                            _ => None,
                        };
                        match lo {
                            Some(0xDC00..=0xDFFF) => {
                                self.i += 6;
                                Ok(())
                            }
                            _ => Err(ScanError { what: "lone leading surrogate in a \\u escape", at }),
                        }
                    }
                    0xDC00..=0xDFFF => Err(ScanError { what: "lone trailing surrogate in a \\u escape", at }),
                    _ => Ok(()),
                }
            }
            Some(_) => Err(ScanError { what: "invalid escape", at }),
            None => Err(ScanError { what: "unexpected end of input inside a string", at }),
        }
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - s
    }

    fn number(&mut self) -> Result<Range<usize>, ScanError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digit after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digit in the exponent"));
            }
        }
        Ok(start..self.i)
    }
}

#[cfg(test)]
mod tests;
