//! The engine: compiled detectors, and the streaming redactor with its guarantee.
//!
//! # The streaming guarantee
//!
//! For any split of an input into chunks, the concatenation of the outputs of
//! [`StreamRedactor::push`] for each chunk and [`StreamRedactor::finish`] equals the output of
//! one push of the whole input followed by `finish` (what [`Engine::redact`] does), including
//! the detections and the block verdict. And no emitted byte can later turn out to be part of a
//! match: a byte is emitted only once every detector has *determined* every match that could
//! start at or before it.
//!
//! Each detector reports a *determined limit*: the position before which its matches cannot
//! change whatever input follows (see [`crate::detect`]). The redactor emits up to the smallest
//! limit over all detectors (or the end of the last accepted match, if later), rounded down to a
//! UTF-8 boundary, so output chunks of valid UTF-8 input are valid UTF-8 on their own.
//!
//! The limit is never below `len - window`, where `window` is the largest maximum match length
//! of an enabled detector plus [`crate::detect::LOOKAROUND`]; in practice it is the start of the trailing word
//! or number, so prose streams with a lag of a few bytes. The bound in *original* bytes is
//! `window * EXPANSION + 3 + 3 * MAX_IGNORABLE_RUN` ([`Engine::holdback_bound`]): normalisation
//! can make a normalised byte stand for several original bytes (see [`crate::normalize`]).
//!
//! Overlapping matches are resolved left to right: the earliest start wins, then the longest,
//! then the detector listed first in [`crate::detect::builtin::BUILTINS`] (custom regexes, then
//! keyword lists, come after the built-ins). A match that starts inside an accepted match but
//! extends beyond it is trimmed to the part beyond it and acted on, so nothing leaks.
//!
//! Private-key blocks (`private_key`) have no maximum length: once the `-----BEGIN ... PRIVATE
//! KEY-----` line is accepted, output is suppressed until the matching `-----END ... PRIVATE
//! KEY-----` line (or the end of the stream) and replaced by one placeholder. Memory stays
//! bounded: suppressed bytes are discarded as they arrive. For this detector `mask` and
//! `pseudonymize` behave as `redact`.

use std::collections::VecDeque;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Action, ConfigError, Direction, RedactConfig, Rule};
use crate::detect::builtin::{self, BUILTINS};
use crate::detect::{Anchored, ByteSet, Cand, Canon, Detector, LiteralIndex, Occ, Scanner};
use crate::normalize::{Buffers, EXPANSION, MAX_IGNORABLE_RUN, Normalizer};

/// Context bytes kept before the earliest scan position (look-behind; the phone validator reads
/// up to [`crate::detect::validate::PHONE_LOOKBEHIND`] bytes back).
const CTX: usize = 32;
/// Smallest accepted `max_holdback_bytes`.
pub const MIN_HOLDBACK: usize = 64;
/// Largest accepted `max_holdback_bytes`.
pub const MAX_HOLDBACK: usize = 1 << 20;

/// One accepted match, reported in an [`Output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Detector name.
    pub detector: Arc<str>,
    /// Action taken.
    pub action: Action,
}

/// A block verdict: the caller refuses the request or ends the stream with an error event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Detector whose match caused it.
    pub detector: Arc<str>,
}

/// What one push (or finish) produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Bytes to forward now.
    pub bytes: Vec<u8>,
    /// Matches accepted during this call.
    pub detections: Vec<Detection>,
    /// Set once, when a `block` match is reached; nothing is emitted after it.
    pub block: Option<Block>,
}

impl Output {
    /// Append another output (for collecting a whole stream).
    pub fn extend(&mut self, o: Output) {
        self.bytes.extend_from_slice(&o.bytes);
        self.detections.extend(o.detections);
        if self.block.is_none() {
            self.block = o.block;
        }
    }
}

/// Compiled detectors and settings; immutable and shared by every stream.
#[derive(Debug)]
pub struct Engine {
    detectors: Vec<Detector>,
    pem: Option<usize>,
    pem_end: Detector,
    window: usize,
    mac: Hmac<Sha256>,
    literals: LiteralIndex,
    digit_detectors: bool,
    /// The literal-scanned detectors' shared fast path ([`QuietLiterals`]).
    quiet: QuietLiterals,
    /// The run-scanned detectors' shared fast path ([`QuietRuns`]).
    quiet_runs: QuietRuns,
    /// A bit for every detector (none when there are more than 64: those are always called).
    every: u64,
}

/// The bit of detector `i` in a `u64` mask of detectors (none from 64 on: those are always
/// called).
#[inline]
fn bit(i: usize) -> u64 {
    if i < 64 { 1u64 << i } else { 0 }
}

/// What lets a streaming step settle run-scanned detectors without calling them: those with no
/// trigger byte in the bytes they have not scanned yet and a trailing run that holds no byte a
/// match can start with (prose ends in a letter run, or in separators such as `  ` or ` - `).
/// Their determined limit is then the buffer's end and their scan finds no trigger, so their
/// position becomes the end, exactly as the calls would compute (property-tested against them).
/// Per byte value, a mask of the detectors (bit `i` for detector `i`, below 64) whose set holds
/// it.
#[derive(Debug)]
struct QuietRuns {
    /// The run-scanned detectors.
    mask: u64,
    /// Their indexes (the step reads their positions without testing every detector's bit).
    members: Box<[usize]>,
    /// Those triggered by digits (they need the dense digit ranges when called).
    digits: u64,
    /// A digit-triggered detector has no bit (index 64 or more): the ranges are always needed.
    digits_beyond: bool,
    /// `alphabet` or `peek`.
    tail: Box<[u64; 256]>,
    /// `alphabet` only.
    alphabet: Box<[u64; 256]>,
    /// `starts`: a trailing run without one starts no match.
    starts: Box<[u64; 256]>,
    /// The trigger (a byte, or any ASCII digit).
    trigger: Box<[u64; 256]>,
}

/// Unscanned bytes beyond which the fast path gives way to the calls (a detector far behind).
const QUIET_SPAN: usize = 256;

/// Trailing-run bytes the fast path reads before it gives way to the calls (a long run of
/// separators or digits is rare in prose, and the calls bound it by the window).
const QUIET_TAIL: usize = 32;

impl QuietRuns {
    fn new(detectors: &[Detector]) -> Self {
        let mut q = QuietRuns {
            mask: 0,
            members: Box::new([]),
            digits: 0,
            digits_beyond: false,
            tail: Box::new([0; 256]),
            alphabet: Box::new([0; 256]),
            starts: Box::new([0; 256]),
            trigger: Box::new([0; 256]),
        };
        let mut members = Vec::new();
        for (i, d) in detectors.iter().enumerate() {
            let Scanner::Run { alphabet, starts, peek, trigger, .. } = &d.scanner else { continue };
            let is_digits = matches!(trigger, crate::detect::Trigger::Digits(_));
            let b = bit(i);
            if b == 0 {
                q.digits_beyond |= is_digits;
                continue;
            }
            q.mask |= b;
            members.push(i);
            if is_digits {
                q.digits |= b;
            }
            for v in 0..=255u8 {
                let k = usize::from(v);
                let (a, p, s) = (alphabet.has(v), peek.has(v), starts.has(v));
                let t = match trigger {
                    crate::detect::Trigger::Digits(_) => v.is_ascii_digit(),
                    crate::detect::Trigger::Byte(x) => v == *x,
                };
                for (table, on) in [(&mut q.tail, a || p), (&mut q.alphabet, a), (&mut q.starts, s), (&mut q.trigger, t)] {
                    if let Some(e) = table.get_mut(k)
                        && on
                    {
                        *e |= b;
                    }
                }
            }
        }
        q.members = members.into_boxed_slice();
        q
    }

    /// The run-scanned detectors this step can settle at the end of `hay` without calling them.
    fn settled(&self, hay: &[u8], pos: &[usize], last: bool) -> u64 {
        if self.mask == 0 {
            return 0;
        }
        let l = hay.len();
        let low = self.members.iter().fold(l, |low, &i| pos.get(i).map_or(0, |&p| low.min(p)));
        if l - low.min(l) > QUIET_SPAN {
            return 0;
        }
        // No trigger byte at or after each one's position: its scan finds nothing.
        let mut trig = 0;
        for &b in hay.get(low..).unwrap_or_default() {
            trig |= self.trigger.get(usize::from(b)).copied().unwrap_or(u64::MAX);
        }
        let mut ok = self.mask & !trig;
        if !last && let Some((&b1, rest)) = hay.split_last() {
            // Its determined limit is the end when its trailing run holds no `starts` byte: the
            // run `determined_limit` reads is the alphabet run before a last `peek` byte, or
            // ending with the last byte. Reading the last byte as part of every run it can be in
            // reads at least the bytes the calls read, so a detector it settles, they settle.
            let get = |t: &[u64; 256], b: u8| t.get(usize::from(b)).copied().unwrap_or(u64::MAX);
            let mut alive = ok & get(&self.tail, b1);
            let mut found = alive & get(&self.starts, b1);
            for &b in rest.iter().rev().take(QUIET_TAIL) {
                alive &= get(&self.alphabet, b) & !found;
                if alive == 0 {
                    break;
                }
                found |= alive & get(&self.starts, b);
            }
            // Still in a run after `QUIET_TAIL` bytes (or at the buffer's start): the calls decide.
            ok &= !(alive | found);
        }
        ok
    }
}

/// What lets a streaming step settle every literal-scanned detector at once, without calling
/// each one, when no literal occurrence and no literal prefix can be near the end of the buffer
/// (in prose, nearly every step): each detector's determined limit is then the buffer's end and
/// its scan finds nothing, so its position becomes the end. This is exactly what the calls
/// would compute (property-tested against them), in a few instructions instead of two calls
/// per detector.
#[derive(Debug)]
struct QuietLiterals {
    /// Indexes of the literal-scanned detectors (a bit each, below 64; see `mask`).
    mask: u64,
    /// Those indexes, listed.
    members: Box<[usize]>,
    /// Bytes some literal of one of them has before its last byte ([`ByteSet::inner`] of all).
    inner: ByteSet,
    /// Largest window among them.
    window: usize,
}

impl QuietLiterals {
    fn new(detectors: &[Detector]) -> Self {
        let mut mask = 0u64;
        let mut members = Vec::new();
        let mut inner = [false; 256];
        let mut window = 0;
        for (i, d) in detectors.iter().enumerate() {
            if let Scanner::Literal { inner: set, .. } = &d.scanner
                && bit(i) != 0
            {
                mask |= bit(i);
                members.push(i);
                window = window.max(d.window());
                for (t, &s) in inner.iter_mut().zip(set.0.iter()) {
                    *t |= s;
                }
            }
        }
        QuietLiterals { mask, members: members.into_boxed_slice(), inner: ByteSet(Box::new(inner)), window }
    }

    /// Whether every covered detector would find nothing and settle at the end of `hay`: no
    /// occurrence starts at or after the lowest of their positions or the lowest of their
    /// floors (`determined_limit` and `scan` look at no other), and (unless at the end of the
    /// stream) the last byte ends no proper prefix of any of their literals.
    fn applies(&self, hay: &[u8], occ: &[Occ], pos: &[usize], last: bool) -> bool {
        if self.mask == 0 {
            return false;
        }
        let low = self.members.iter().fold(hay.len().saturating_sub(self.window), |low, &i| pos.get(i).map_or(0, |&p| low.min(p)));
        let no_occ = occ.last().is_none_or(|o| o.start < low);
        no_occ && (last || !hay.last().is_some_and(|&b| self.inner.has(b)))
    }
}

fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(()) } else { Err(ConfigError::BadName(name.to_string())) }
}

fn make(name: &str, label: &str, scanner: Scanner, max_len: usize, rule: &Rule) -> Detector {
    Detector {
        name: Arc::from(name),
        label: label.to_string(),
        scanner,
        max_len,
        validate: None,
        canon: Canon::Verbatim,
        request: rule.request,
        response: rule.response,
        mask_keep: rule.mask_keep,
    }
}

impl Engine {
    /// Compile a configuration. `pseudonym_key` keys the HMAC used by `pseudonymize` (take it
    /// from a runtime secret; the same key gives the same tokens across restarts and replicas).
    pub fn new(cfg: &RedactConfig, pseudonym_key: &[u8]) -> Result<Engine, ConfigError> {
        if !(MIN_HOLDBACK..=MAX_HOLDBACK).contains(&cfg.max_holdback_bytes) {
            return Err(ConfigError::HoldbackRange { got: cfg.max_holdback_bytes, min: MIN_HOLDBACK, max: MAX_HOLDBACK });
        }
        for name in cfg.detectors.keys() {
            if !BUILTINS.iter().any(|b| b.name == name) {
                let known: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
                return Err(ConfigError::UnknownDetector { name: name.clone(), known: known.join(", ") });
            }
        }
        let internal = |name: &str, e: String| ConfigError::BadRegex { name: name.to_string(), reason: e };
        let mut detectors = Vec::new();
        let mut pem = None;
        for b in BUILTINS {
            let rule = cfg.detectors.get(b.name).cloned().unwrap_or_default();
            if !rule.enabled {
                continue;
            }
            let scanner = builtin::scanner(b).map_err(|e| internal(b.name, e))?;
            let (max, _) = builtin::max_len(b.pattern, false).map_err(|e| internal(b.name, e))?;
            let max = max.ok_or_else(|| ConfigError::Unbounded { name: b.name.to_string() })?;
            let mut d = make(b.name, b.label, scanner, max, &rule);
            d.validate = b.validate;
            d.canon = b.canon;
            if b.name == "private_key" {
                pem = Some(detectors.len());
            }
            detectors.push(d);
        }
        let regions = crate::detect::regions::rules(&cfg.phone_regions).map_err(|(index, region)| ConfigError::UnknownPhoneRegion {
            index,
            region,
            known: crate::detect::regions::known(),
        })?;
        if let Some((index, r)) =
            cfg.phone_regions.iter().enumerate().find(|(i, r)| cfg.phone_regions.get(..*i).is_some_and(|b| b.contains(r)))
        {
            return Err(ConfigError::DuplicatePhoneRegion { index, region: r.clone() });
        }
        let phone_rule = cfg.detectors.get("phone").cloned().unwrap_or_default();
        if !regions.is_empty() && phone_rule.enabled {
            // The named regions' national formats replace the broad national default (NANP,
            // trunk 0 with 10-11 digits); the `+CC` forms stay for every country.
            for d in detectors.iter_mut().filter(|d| &*d.name == "phone") {
                d.validate = Some(crate::detect::validate::phone_international);
            }
            // A second scanner under the same name: national formats of the named regions.
            let mut d = make("phone", "PHONE", builtin::national_scanner(regions), crate::detect::regions::MAX_LEN, &phone_rule);
            d.canon = Canon::Alnum;
            detectors.push(d);
        }
        let mut names: Vec<String> = detectors.iter().map(|d| d.name.to_string()).collect();
        let mut add_name = |n: &str| -> Result<(), ConfigError> {
            check_name(n)?;
            if names.iter().any(|x| x == n) || BUILTINS.iter().any(|b| b.name == n) {
                return Err(ConfigError::DuplicateName(n.to_string()));
            }
            names.push(n.to_string());
            Ok(())
        };
        for c in &cfg.custom_regexes {
            add_name(&c.name)?;
            if !c.rule.enabled {
                continue;
            }
            let bad = |reason: String| ConfigError::BadRegex { name: c.name.clone(), reason };
            let re = regex::bytes::RegexBuilder::new(&c.pattern).build().map_err(|e| bad(e.to_string()))?;
            let (max, empty) = builtin::max_len(&c.pattern, true).map_err(bad)?;
            let max = max.ok_or_else(|| ConfigError::Unbounded { name: c.name.clone() })?;
            if empty {
                return Err(ConfigError::EmptyMatch { name: c.name.clone() });
            }
            detectors.push(make(&c.name, &c.name.to_ascii_uppercase(), Scanner::Full { re }, max, &c.rule));
        }
        for k in &cfg.keyword_lists {
            add_name(&k.name)?;
            if !k.rule.enabled {
                continue;
            }
            if k.words.is_empty() || k.words.iter().any(|w| w.is_empty()) {
                return Err(ConfigError::EmptyKeywords { name: k.name.clone() });
            }
            // Keywords are matched against normalised text, so normalise them too.
            let lits: Vec<Vec<u8>> = k
                .words
                .iter()
                .map(|w| {
                    let n = crate::normalize::normalize_all(w.as_bytes()).norm;
                    if k.case_insensitive { n.to_ascii_lowercase() } else { n }
                })
                .collect();
            let max = lits.iter().map(|l| l.len()).max().unwrap_or(0);
            let word = || ByteSet::new("_", &[(b'a', b'z'), (b'A', b'Z'), (b'0', b'9')]);
            let scanner = Scanner::literal(lits, k.case_insensitive, None, k.whole_word.then(word), k.whole_word.then(word));
            let mut d = make(&k.name, &k.name.to_ascii_uppercase(), scanner, max, &k.rule);
            d.canon = if k.case_insensitive { Canon::Lower } else { Canon::Verbatim };
            detectors.push(d);
        }
        for d in &detectors {
            if d.window() > cfg.max_holdback_bytes {
                return Err(ConfigError::TooLong { name: d.name.to_string(), needed: d.window(), limit: cfg.max_holdback_bytes });
            }
        }
        let end_lits = vec![b"-----END ".to_vec()];
        let end_re = builtin::compile(builtin::PEM_END).map_err(|e| internal("private_key", e))?;
        let (end_max, _) = builtin::max_len(builtin::PEM_END, false).map_err(|e| internal("private_key", e))?;
        let pem_end = make(
            "private_key",
            "PRIVATE_KEY",
            Scanner::literal(end_lits, false, Some(Anchored::Regex(end_re)), None, None),
            end_max.unwrap_or(128),
            &Rule::default(),
        );
        let window = detectors.iter().map(Detector::window).max().unwrap_or(0).max(pem_end.window());
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(pseudonym_key).map_err(|e| ConfigError::Json(format!("pseudonym key: {e}")))?;
        let mut entries: Vec<(usize, &[Vec<u8>], bool)> = Vec::new();
        let end_iter = pem.map(|_| &pem_end);
        for (i, d) in detectors.iter().chain(end_iter).enumerate() {
            if let Scanner::Literal { lits, ci, .. } = &d.scanner {
                entries.push((i, lits, *ci));
            }
        }
        let literals = LiteralIndex::new(&entries).map_err(|e| internal("literals", e))?;
        let digit_detectors =
            detectors.iter().any(|d| matches!(d.scanner, Scanner::Run { trigger: crate::detect::Trigger::Digits(_), .. }));
        let quiet = QuietLiterals::new(&detectors);
        let quiet_runs = QuietRuns::new(&detectors);
        let every = match detectors.len() {
            0 | 65.. => 0,
            n => u64::MAX >> (64 - n),
        };
        Ok(Engine { detectors, pem, pem_end, window, mac, literals, digit_detectors, quiet, quiet_runs, every })
    }

    /// The default detector set (every built-in, redact both ways).
    pub fn default_set(pseudonym_key: &[u8]) -> Result<Engine, ConfigError> {
        Engine::new(&RedactConfig::default(), pseudonym_key)
    }

    /// Names of the enabled detectors, in priority order.
    pub fn detector_names(&self) -> Vec<Arc<str>> {
        self.detectors.iter().map(|d| d.name.clone()).collect()
    }

    /// Detection window in normalised bytes (largest maximum match length plus look-around).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Worst-case number of original bytes a stream holds back (for metrics and sizing).
    pub fn holdback_bound(&self) -> usize {
        self.window * EXPANSION + 3 + 3 * MAX_IGNORABLE_RUN as usize
    }

    /// Redact a whole text at once (same as one push and finish of a stream).
    pub fn redact(self: &Arc<Self>, dir: Direction, text: &[u8]) -> Output {
        // The whole text is here, so one final step: a streaming `push` first works out, per
        // detector, how much of the buffer is already determined, which a final step never
        // needs. Any split of a stream gives this same output (tests/streaming.rs).
        StreamRedactor::new(self.clone(), dir).redact_whole(text)
    }

    /// The placeholder [`Action::Redact`] writes for detector index `det` (a generic one for an
    /// index that names no detector, which the engine never produces).
    fn redacted(&self, det: usize) -> Option<Vec<u8>> {
        match self.detectors.get(det) {
            Some(d) => self.replacement(d, Action::Redact, b""),
            None => Some(b"[REDACTED]".to_vec()),
        }
    }

    fn replacement(&self, det: &Detector, action: Action, text: &[u8]) -> Option<Vec<u8>> {
        match action {
            Action::Allow | Action::Block => None,
            Action::Redact => Some(format!("[{}]", det.label).into_bytes()),
            Action::Mask => Some(mask(text, det.mask_keep)),
            Action::Pseudonymize => {
                let canon: Vec<u8> = match det.canon {
                    Canon::Verbatim => text.to_vec(),
                    Canon::Lower => text.to_ascii_lowercase(),
                    Canon::Alnum => text.iter().filter(|b| b.is_ascii_alphanumeric()).map(u8::to_ascii_uppercase).collect(),
                };
                let mut mac = self.mac.clone();
                mac.update(det.name.as_bytes());
                mac.update(&[0]);
                mac.update(&canon);
                let tag = mac.finalize().into_bytes();
                let hex: String = tag.iter().take(4).map(|b| format!("{b:02x}")).collect();
                Some(format!("[{}_{}]", det.label, hex).into_bytes())
            }
        }
    }
}

/// Mask: keep the last `keep` letters/digits and every ASCII separator; other characters
/// become `*` (one per character).
pub fn mask(text: &[u8], keep: usize) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    let total = s.chars().filter(|c| c.is_alphanumeric()).count();
    let mut seen = 0;
    let mut out = String::with_capacity(text.len());
    for c in s.chars() {
        if c.is_alphanumeric() {
            seen += 1;
            if seen + keep > total && c.is_ascii() {
                out.push(c);
            } else {
                out.push('*');
            }
        } else if c.is_ascii() {
            out.push(c);
        } else {
            out.push('*');
        }
    }
    out.into_bytes()
}

#[derive(Debug)]
struct Ready {
    start: usize,
    end: usize,
    det: usize,
    block: bool,
    repl: Option<Vec<u8>>,
    /// The rest of a suppressed block whose start was already passed: it begins right after
    /// the last emitted original byte, so bytes the normaliser dropped since are inside it.
    cont: bool,
}

#[derive(Debug)]
struct Suppress {
    start: usize,
    det: usize,
    end_pos: usize,
}

/// A streaming redactor for one direction of one request.
#[derive(Debug)]
pub struct StreamRedactor {
    engine: Arc<Engine>,
    dir: Direction,
    normalizer: Normalizer,
    buf: Buffers,
    pos: Vec<usize>,
    occ: Vec<Occ>,
    occ_done: usize,
    dense: Vec<crate::detect::Dense>,
    pending: Vec<Cand>,
    ready: VecDeque<Ready>,
    covered_end: usize,
    norm_emitted: usize,
    orig_emitted: usize,
    suppress: Option<Suppress>,
    blocking: bool,
    blocked: bool,
    finished: bool,
    /// Whether steps take the fast paths (always, but for the tests comparing them with the
    /// calls they stand for).
    fast: bool,
}

impl StreamRedactor {
    /// Start a stream.
    pub fn new(engine: Arc<Engine>, dir: Direction) -> Self {
        let n = engine.detectors.len();
        StreamRedactor {
            engine,
            dir,
            normalizer: Normalizer::default(),
            buf: Buffers::new(),
            pos: vec![0; n],
            occ: Vec::new(),
            occ_done: 0,
            dense: Vec::new(),
            pending: Vec::new(),
            ready: VecDeque::new(),
            covered_end: 0,
            norm_emitted: 0,
            orig_emitted: 0,
            suppress: None,
            blocking: false,
            blocked: false,
            finished: false,
            fast: true,
        }
    }

    /// Feed the next chunk; returns what can be forwarded now.
    pub fn push(&mut self, chunk: &[u8]) -> Output {
        let mut out = Output::default();
        self.push_into(chunk, &mut out);
        out
    }

    /// [`Self::push`], appending to `out`: a caller feeding one piece per streamed event lends
    /// the same room each time instead of allocating an output per event.
    pub(crate) fn push_into(&mut self, chunk: &[u8], out: &mut Output) {
        if self.blocked || self.finished {
            return;
        }
        self.normalizer.push(chunk, false, &mut self.buf);
        self.step(false, out);
    }

    /// End of stream: flush everything held back.
    pub fn finish(&mut self) -> Output {
        let mut out = Output::default();
        if self.blocked || self.finished {
            return out;
        }
        self.normalizer.push(&[], true, &mut self.buf);
        self.step(true, &mut out);
        self.finished = true;
        out
    }

    /// Redact a whole text as [`Engine::redact`] does, on this redactor's engine and direction,
    /// reusing its buffers: a body with several text fields sets one redactor up, not one per
    /// field. Whatever the redactor held before is discarded first ([`StreamRedactor::reset`]).
    pub fn redact_whole(&mut self, text: &[u8]) -> Output {
        self.reset();
        // The whole text is here, so one final step: a streaming `push` first works out, per
        // detector, how much of the buffer is already determined, which a final step never
        // needs. Any split of a stream gives this same output (tests/streaming.rs).
        self.normalizer.push(text, true, &mut self.buf);
        let mut out = Output::default();
        self.step(true, &mut out);
        self.finished = true;
        out
    }

    /// Back to the state of a new stream (same engine and direction), keeping the buffers'
    /// capacity.
    pub fn reset(&mut self) {
        // Destructured so that a field added later cannot be forgotten here.
        let StreamRedactor {
            engine: _,
            dir: _,
            normalizer,
            buf,
            pos,
            occ,
            occ_done,
            dense,
            pending,
            ready,
            covered_end,
            norm_emitted,
            orig_emitted,
            suppress,
            blocking,
            blocked,
            finished,
            // A switch for the tests, not stream state.
            fast: _,
        } = self;
        normalizer.reset();
        buf.clear();
        pos.fill(0);
        occ.clear();
        *occ_done = 0;
        dense.clear();
        pending.clear();
        ready.clear();
        *covered_end = 0;
        *norm_emitted = 0;
        *orig_emitted = 0;
        *suppress = None;
        *blocking = false;
        *blocked = false;
        *finished = false;
    }

    /// Original bytes currently held back (not yet emitted).
    pub fn held_bytes(&self) -> usize {
        self.buf.orig.len().saturating_sub(self.orig_emitted) + self.normalizer.pending_len()
    }

    /// Worst-case holdback of this stream's engine, in original bytes.
    pub fn holdback_bound(&self) -> usize {
        self.engine.holdback_bound()
    }

    /// Whether a block verdict was reached.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Direction of this stream.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    fn step(&mut self, last: bool, out: &mut Output) {
        let engine = self.engine.clone();
        let hay_len = self.buf.norm.len();
        // 1. Scan every detector up to its determined limit.
        engine.literals.collect(&self.buf.norm, self.occ_done, &mut self.occ);
        self.occ_done = hay_len;
        // Detectors the fast paths settle at the end of the buffer (exactly what calling them
        // would do; see `QuietLiterals` and `QuietRuns`).
        let mut settled = 0;
        if self.fast {
            if engine.quiet.applies(&self.buf.norm, &self.occ, &self.pos, last) {
                settled |= engine.quiet.mask;
            }
            settled |= engine.quiet_runs.settled(&self.buf.norm, &self.pos, last);
        }
        let mut d_min = hay_len;
        if settled == engine.every && engine.every != 0 {
            // Every detector settled at the end (prose, nearly every step): no position is
            // beyond the buffer, so each becomes its end.
            self.pos.fill(hay_len);
        } else {
            self.scan_unsettled(&engine, settled, last, &mut d_min);
        }
        // 2. Resolve candidates that start before every detector's limit.
        self.resolve(&engine, d_min, last, out);
        // 3. Emit.
        self.emit(&engine, d_min, last, out);
        // 4. Trim (`d_min` is the lowest position).
        self.trim(d_min);
    }

    /// Calls the detectors the fast paths did not settle; lowers `d_min` to the lowest position.
    fn scan_unsettled(&mut self, engine: &Engine, settled: u64, last: bool, d_min: &mut usize) {
        let hay_len = self.buf.norm.len();
        let runs = &engine.quiet_runs;
        if engine.digit_detectors && (runs.digits_beyond || runs.digits & !settled != 0) {
            // Only the digit-triggered detectors read these, and only when called.
            let from = self.pos.iter().copied().min().unwrap_or(hay_len);
            crate::detect::dense_digit_ranges(&self.buf.norm, from, &mut self.dense);
        }
        for (i, (det, pos)) in engine.detectors.iter().zip(self.pos.iter_mut()).enumerate() {
            if settled & bit(i) != 0 {
                *pos = (*pos).max(hay_len);
                *d_min = (*d_min).min(*pos);
                continue;
            }
            let limit = if last { hay_len } else { det.determined_limit(i, &self.buf.norm, &self.occ) };
            let p = det.scan(i, &self.buf.norm, &self.occ, &self.dense, *pos, limit, &mut self.pending);
            *pos = p;
            *d_min = (*d_min).min(p);
        }
    }

    fn resolve(&mut self, engine: &Engine, d_min: usize, last: bool, out: &mut Output) {
        self.pending.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)).then(a.det.cmp(&b.det)));
        let mut i = 0;
        let hay_len = self.buf.norm.len();
        loop {
            if self.blocking {
                self.pending.clear();
                return;
            }
            if let Some(sup) = &mut self.suppress {
                let end_id = engine.detectors.len();
                let limit = if last { hay_len } else { engine.pem_end.determined_limit(end_id, &self.buf.norm, &self.occ) };
                let mut ends = Vec::new();
                let p = engine.pem_end.scan(end_id, &self.buf.norm, &self.occ, &[], sup.end_pos, limit, &mut ends);
                if let Some(e) = ends.first() {
                    let (start, det, cont) = (sup.start.max(self.norm_emitted), sup.det, sup.start < self.norm_emitted);
                    let repl = engine.redacted(det);
                    self.ready.push_back(Ready { start, end: e.end, det, block: false, repl, cont });
                    self.covered_end = e.end;
                    self.suppress = None;
                } else if last {
                    let (start, det, cont) = (sup.start.max(self.norm_emitted), sup.det, sup.start < self.norm_emitted);
                    let repl = engine.redacted(det);
                    self.ready.push_back(Ready { start, end: hay_len, det, block: false, repl, cont });
                    self.covered_end = hay_len;
                    self.suppress = None;
                } else {
                    sup.end_pos = p;
                    // Everything before min(d_min, p) is inside the suppressed block.
                    let bound = d_min.min(p);
                    while self.pending.get(i).is_some_and(|c| c.start < bound) {
                        i += 1;
                    }
                    break;
                }
            }
            let Some(c) = self.pending.get(i).copied() else { break };
            if c.start >= d_min {
                break;
            }
            i += 1;
            if c.end <= self.covered_end {
                continue;
            }
            let start = c.start.max(self.covered_end);
            let Some(det) = engine.detectors.get(c.det) else {
                // Unreachable: a candidate carries the index of the detector that found it.
                // Fail closed all the same.
                self.ready.push_back(Ready { start, end: c.end, det: c.det, block: true, repl: None, cont: false });
                self.blocking = true;
                continue;
            };
            let action = det.action(self.dir);
            out.detections.push(Detection { detector: det.name.clone(), action });
            if action == Action::Block {
                self.ready.push_back(Ready { start, end: c.end, det: c.det, block: true, repl: None, cont: false });
                self.blocking = true;
                continue;
            }
            if Some(c.det) == engine.pem && action != Action::Allow {
                self.suppress = Some(Suppress { start, det: c.det, end_pos: c.end });
                self.covered_end = usize::MAX;
                continue;
            }
            let repl = engine.replacement(det, action, self.buf.norm.get(start..c.end).unwrap_or_default());
            self.ready.push_back(Ready { start, end: c.end, det: c.det, block: false, repl, cont: false });
            self.covered_end = c.end;
        }
        self.pending.drain(..i);
    }

    fn emit(&mut self, engine: &Engine, d_min: usize, last: bool, out: &mut Output) {
        let hay_len = self.buf.norm.len();
        let mut e = if let Some(s) = &self.suppress {
            s.start
        } else if last {
            hay_len
        } else {
            let c = if self.covered_end == usize::MAX { d_min } else { self.covered_end };
            d_min.max(c).min(hay_len)
        };
        if e < hay_len {
            while e > self.norm_emitted && self.buf.norm.get(e).is_some_and(|&b| (b & 0xC0) == 0x80) {
                e -= 1;
            }
        }
        let e = e.max(self.norm_emitted);
        while let Some(r) = self.ready.front() {
            if !r.block && r.end > e {
                break;
            }
            let o_start = if r.cont { self.orig_emitted } else { self.buf.map(r.start) };
            out.bytes.extend_from_slice(self.buf.orig_range(self.orig_emitted, o_start));
            if r.block {
                let detector = engine.detectors.get(r.det).map_or_else(|| Arc::from("unknown"), |d| d.name.clone());
                out.block = Some(Block { detector });
                self.blocked = true;
                self.ready.clear();
                self.pending.clear();
                return;
            }
            let o_end = self.buf.map(r.end);
            match &r.repl {
                Some(b) => out.bytes.extend_from_slice(b),
                None => out.bytes.extend_from_slice(self.buf.orig_range(o_start, o_end)),
            }
            self.orig_emitted = o_end;
            self.norm_emitted = r.end;
            self.ready.pop_front();
        }
        let upto = match self.ready.front() {
            Some(r) => r.start.min(e),
            None => e,
        };
        if upto > self.norm_emitted || (upto == self.norm_emitted && self.suppress.is_none()) {
            // Also at `==`: bytes the normaliser dropped after the last emitted byte (a trailing
            // zero-width space) belong before whatever comes next, as in the one-shot output
            // (unless a suppressed block swallows them).
            let o = self.buf.map(upto);
            if o > self.orig_emitted {
                out.bytes.extend_from_slice(self.buf.orig_range(self.orig_emitted, o));
                self.orig_emitted = o;
            }
            self.norm_emitted = upto;
        }
        // Inside a suppressed block: discard what is known to be suppressed.
        if let Some(s) = &self.suppress
            && self.norm_emitted >= s.start
            && self.ready.is_empty()
        {
            // Bytes the normaliser dropped just before the block (e.g. a zero-width space) are
            // outside it: emit them as the one-shot path does, then skip the block.
            let before = self.buf.map(s.start);
            if before > self.orig_emitted {
                out.bytes.extend_from_slice(self.buf.orig_range(self.orig_emitted, before));
                self.orig_emitted = before;
            }
            let x = s.end_pos.min(hay_len).max(self.norm_emitted);
            self.orig_emitted = self.buf.map(x);
            self.norm_emitted = x;
        }
    }

    fn trim(&mut self, low_pos: usize) {
        let mut k = self.norm_emitted.min(low_pos);
        if let Some(s) = &self.suppress {
            k = k.min(s.end_pos);
        }
        let k = k.saturating_sub(CTX);
        if k == 0 || (k < 4096 && k < self.buf.norm.len() / 2) {
            // Trim in batches to keep the per-push cost low.
            return;
        }
        // Every position is at or after `k` (its minimum above), so nothing saturates.
        let dropped = self.buf.trim_front(k);
        self.orig_emitted = self.orig_emitted.saturating_sub(dropped);
        self.norm_emitted = self.norm_emitted.saturating_sub(k);
        for p in &mut self.pos {
            *p = p.saturating_sub(k);
        }
        for c in &mut self.pending {
            c.start = c.start.saturating_sub(k);
            c.end = c.end.saturating_sub(k);
        }
        self.occ.retain(|o| o.start >= k);
        for o in &mut self.occ {
            o.start = o.start.saturating_sub(k);
            o.end = o.end.saturating_sub(k);
        }
        self.occ_done = self.occ_done.saturating_sub(k);
        for r in &mut self.ready {
            r.start = r.start.saturating_sub(k);
            r.end = r.end.saturating_sub(k);
        }
        if self.covered_end != usize::MAX {
            self.covered_end = self.covered_end.saturating_sub(k);
        }
        if let Some(s) = &mut self.suppress {
            s.start = s.start.saturating_sub(k);
            s.end_pos = s.end_pos.saturating_sub(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pieces that reach every branch of the fast paths: literals and their prefixes (`sk`,
    /// `-----BEG`), bytes inside literals at the end of a push, occurrences that stay pending
    /// (an unfinished PEM header), and plain prose.
    const PIECES: &[&[u8]] = &[
        b"word ",
        b"hello",
        b" ",
        b"s",
        b"sk",
        b"sk-",
        b"sk-proj-abcdefghijklmnopqrstuvwxyz012345 ",
        b"sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        b"ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        b"AKIA",
        b"AKIAIOSFODNN7EXAMPLE ",
        b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        b"eyJ",
        b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        b"-----BEG",
        b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n",
        b"-----END RSA PRIVATE KEY-----\n",
        b"xoxb-1234567890-abcdefghij",
        b"glpat-",
        b"john@example.com",
        b"4242 4242 4242 4242",
        b"-",
        b"_",
        b"\n",
        b"1",
        b"42",
        b"7",
        b".",
        b",",
        b":",
        b"+",
        b"(",
        b"A",
        b"DE89 3704 0044 0532 0130 00",
        b"123-45-6789",
        b"192.168.1.20",
        b"2001:db8::8a2e:370:7334",
        b"(415) 555-2671",
        b"+44 20 7946 0958",
        b"020 7946 0958,",
        b"a.b@c",
        // Trailing runs of several bytes in the run detectors' alphabets, with and without a
        // byte a match starts with.
        b"answer  ",
        b" - ",
        b"  (",
        b"4 ",
        b"07 -.",
        b") ",
        b"AB ",
    ];

    /// Built once: compiling an engine costs more than a case.
    static ENGINES: std::sync::LazyLock<Vec<Arc<Engine>>> = std::sync::LazyLock::new(engines);

    fn engines() -> Vec<Arc<Engine>> {
        let mut custom = RedactConfig::default();
        custom.keyword_lists.push(crate::config::KeywordList {
            name: "codename".into(),
            words: vec!["Project Falcon".into(), "sk".into()],
            case_insensitive: true,
            whole_word: false,
            rule: Rule::default(),
        });
        custom.phone_regions = vec!["GB".into()];
        [Engine::default_set(b"k"), Engine::new(&custom, b"k")].into_iter().filter_map(Result::ok).map(Arc::new).collect()
    }

    #[test]
    fn both_engines_compile() {
        assert_eq!(ENGINES.len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Each push (and the finish) gives exactly what it gives without the fast paths:
        /// the same bytes at the same time, the same detections and verdict.
        #[test]
        fn fast_paths_equal_the_calls(parts in prop::collection::vec(prop::sample::select(PIECES), 1..24)) {
            for engine in ENGINES.iter().cloned() {
                let mut fast = StreamRedactor::new(engine.clone(), Direction::Response);
                let mut slow = StreamRedactor::new(engine, Direction::Response);
                slow.fast = false;
                for p in &parts {
                    prop_assert_eq!(fast.push(p), slow.push(p));
                    prop_assert_eq!(&fast.pos, &slow.pos);
                }
                prop_assert_eq!(fast.finish(), slow.finish());
            }
        }
    }
}
