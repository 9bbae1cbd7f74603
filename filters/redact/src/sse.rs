//! Server-sent events: an incremental framer and per-provider adapters that redact the text of
//! each choice, tool call or content block as one continuous stream across events.
//!
//! * [`SseFramer`] splits bytes into events: lines end in `\n`, `\r\n` or `\r`, an empty line
//!   ends an event, a chunk may end anywhere (inside a line ending, between `data:` and its
//!   payload). Comments (`: ping`), `event:`, `id:` and multi-line `data:` are kept.
//! * [`SseRedactor`] parses each event's JSON, feeds the delta text to a [`StreamRedactor`] per
//!   stream key and re-emits the event with the rewritten delta (the other bytes of the event are
//!   unchanged). Text held back is emitted in later events, or in a synthesized delta event just
//!   before the event that ends its stream (`finish_reason`, `[DONE]`,
//!   `response.output_text.done`, `content_block_stop`). Events without text (ping, usage,
//!   role, finish) pass through byte for byte and in order.
//! * [`SseObserver`] lets another reader ride the pass: its visitor reads each event's data in
//!   the redactor's scan, and it learns which emitted bytes are events passed as they came and
//!   which the redactor wrote (the `cordon.gateway` role's token limits, `cordon_core`).
//!
//! Formats:
//! * OpenAI chat completions: `choices[i].delta.content` per choice `index`,
//!   `choices[i].delta.tool_calls[j].function.arguments` per (choice, tool call `index`).
//! * OpenAI Responses: `response.output_text.delta` per (`output_index`, `content_index`),
//!   `response.function_call_arguments.delta` per `output_index`; the full texts repeated by
//!   `*.done`, `response.output_item.done` and `response.completed` are redacted whole (which
//!   by the streaming guarantee gives the same text as the deltas).
//! * Anthropic messages: `content_block_delta` `text_delta.text` and
//!   `input_json_delta.partial_json` per block `index`. `thinking_delta` is not rewritten (its
//!   signature would break); documented as not scanned.
//!
//! A `block` match ends the stream: [`SseOutput::block`] is set, and the caller appends the
//! provider's error event. Broken SSE or JSON is an
//! [`SseError`]; the filter applies its failure action (default: block).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::Direction;
use crate::engine::{Block, Detection, Engine, Output, StreamRedactor};
use crate::json::scan::{Visit, decode, decode_text};
use crate::json::splice;

mod plan;

/// Default limit on one event's size.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// Why an event stream could not be redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event grew beyond the limit without ending.
    #[error("SSE event exceeds {limit} bytes without a blank line; the stream is not valid SSE")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
    /// An event's data is not the JSON the provider format requires.
    #[error("SSE event data is not valid JSON ({reason}): {snippet}")]
    BadJson {
        /// Parser message.
        reason: String,
        /// Start of the data.
        snippet: String,
    },
    /// The stream ended in the middle of an event.
    #[error("SSE stream ended inside an event ({0} bytes unterminated)")]
    Truncated(usize),
}

/// Wire format of a streamed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseFormat {
    /// OpenAI `chat.completion.chunk` events.
    OpenAiChat,
    /// OpenAI Responses API events.
    OpenAiResponses,
    /// Anthropic Messages events.
    Anthropic,
}

/// One framed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The raw bytes, terminating blank line included.
    pub raw: Vec<u8>,
    /// Lines other than `data:` (comments, `event:`, `id:`, `retry:`), without line endings.
    pub other_lines: Vec<Vec<u8>>,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// Data lines joined with `\n`; `None` if there were none.
    pub data: Option<Vec<u8>>,
}

/// Incremental SSE framer.
#[derive(Debug, Default)]
pub struct SseFramer {
    buf: Vec<u8>,
    scanned: usize,
    line_start: usize,
    max: usize,
}

impl SseFramer {
    /// New framer with an event size limit.
    pub fn new(max_event_bytes: usize) -> Self {
        SseFramer { buf: Vec::new(), scanned: 0, line_start: 0, max: max_event_bytes }
    }

    /// Bytes buffered (an incomplete event).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feed bytes; returns the events completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(chunk);
        self.scan(false)
    }

    fn scan(&mut self, last: bool) -> Result<Vec<SseEvent>, SseError> {
        let mut spans = Vec::new();
        let done = self.frame(last, &mut spans)?;
        let events = spans.iter().map(|r| parse_event(self.buf.get(r.clone()).unwrap_or_default())).collect();
        self.release(done);
        Ok(events)
    }

    /// Frames the buffered bytes in place: pushes the range in the buffer of each complete event
    /// to `spans` and returns how many leading bytes they take, to be given back with
    /// [`Self::release`] once read (the redactor reads events where they lie instead of copying
    /// each out). An event grown past the limit releases them and is an error.
    fn frame(&mut self, last: bool, spans: &mut Vec<Range<usize>>) -> Result<usize, SseError> {
        let mut start = 0;
        let mut line_start = self.line_start;
        let mut i = self.scanned;
        loop {
            let tail = self.buf.get(i..).unwrap_or_default();
            // A line ending right away (the blank line after an event's last) needs no search.
            let at_once = matches!(tail.first(), Some(b'\n' | b'\r')).then_some(0);
            let Some(rel) = at_once.or_else(|| memchr::memchr2(b'\n', b'\r', tail)) else {
                i = i.max(self.buf.len());
                break;
            };
            i += rel;
            // A line ends at i. `\r` at the very end may be the first half of `\r\n`.
            let mut next = i + 1;
            if tail.get(rel) == Some(&b'\r') {
                if next == self.buf.len() && !last {
                    break;
                }
                if self.buf.get(next) == Some(&b'\n') {
                    next += 1;
                }
            }
            if i == line_start {
                // Blank line: dispatch the event (if it has any line).
                if line_start > start {
                    spans.push(start..next);
                }
                start = next;
            }
            line_start = next;
            i = next;
        }
        self.scanned = i;
        self.line_start = line_start;
        if self.buf.len().saturating_sub(start) > self.max {
            self.release(start);
            return Err(SseError::EventTooLarge { limit: self.max });
        }
        Ok(start)
    }

    /// Drops the first `done` bytes (the events [`Self::frame`] returned, read).
    fn release(&mut self, done: usize) {
        let done = done.min(self.buf.len());
        self.buf.drain(..done);
        self.scanned = self.scanned.saturating_sub(done);
        self.line_start = self.line_start.saturating_sub(done);
    }

    /// End of stream: any unterminated event is an error (empty remainder is fine).
    pub fn finish(&mut self) -> Result<Vec<SseEvent>, SseError> {
        let mut events = self.scan(true)?;
        let rest = std::mem::take(&mut self.buf);
        self.scanned = 0;
        self.line_start = 0;
        if rest.iter().all(|b| matches!(b, b'\n' | b'\r')) {
            return Ok(events);
        }
        // A final event missing only its blank line is accepted.
        if rest.ends_with(b"\n") || rest.ends_with(b"\r") {
            let mut raw = rest;
            raw.extend_from_slice(b"\n");
            events.push(parse_event(&raw));
            return Ok(events);
        }
        Err(SseError::Truncated(rest.len()))
    }
}

/// The lines of a framed event as ranges into it, without their line endings (a last line
/// without one included).
fn lines(raw: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = raw.get(at..).filter(|r| !r.is_empty())?;
        let start = at;
        match memchr::memchr2(b'\n', b'\r', rest) {
            Some(p) => {
                let ending = if rest.get(p..p + 2) == Some(b"\r\n") { 2 } else { 1 };
                at += p + ending;
                Some(start..start + p)
            }
            None => {
                at = raw.len();
                Some(start..raw.len())
            }
        }
    })
}

/// Where an event's `data` lies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DataAt {
    /// No `data:` line.
    None,
    /// One `data:` line: its value, a range of the event.
    One(Range<usize>),
    /// Several, joined with `\n` into the caller's buffer.
    Joined,
}

/// Reads the fields of the framed event `raw`: the ranges of its lines other than `data:` go to
/// `other`, data of several lines is joined into `joined` (both cleared first); returns the
/// range of the (last) `event:` field's value and where the data is.
fn fields(raw: &[u8], other: &mut Vec<Range<usize>>, joined: &mut Vec<u8>) -> (Option<Range<usize>>, DataAt) {
    other.clear();
    // Nearly every event a provider streams is one `data:` line and the blank line: read
    // without walking its lines (what `fields_by_line` gives for it, property-tested).
    if let Some(rest) = raw.strip_prefix(b"data:")
        && let Some(p) = memchr::memchr2(b'\n', b'\r', rest)
        && rest.get(p..).is_some_and(|t| t.iter().all(|&b| b == b'\n' || b == b'\r'))
    {
        let end = 5 + p;
        let v = if rest.first() == Some(&b' ') { 6 } else { 5 };
        return (None, DataAt::One(v.min(end)..end));
    }
    fields_by_line(raw, other, joined)
}

/// [`fields`], line by line.
fn fields_by_line(raw: &[u8], other: &mut Vec<Range<usize>>, joined: &mut Vec<u8>) -> (Option<Range<usize>>, DataAt) {
    other.clear();
    let mut data = DataAt::None;
    let mut event = None;
    for line in lines(raw) {
        let text = raw.get(line.clone()).unwrap_or_default();
        if text.is_empty() {
            continue;
        }
        // The field's name and its value's range.
        let (field, value): (&[u8], Range<usize>) = match memchr::memchr(b':', text) {
            Some(0) => (&[], line.start..line.start),
            Some(p) => {
                let v = line.start + p + 1;
                let v = if raw.get(v) == Some(&b' ') { v + 1 } else { v };
                (text.get(..p).unwrap_or_default(), v.min(line.end)..line.end)
            }
            None => (text, line.end..line.end),
        };
        if field == b"data" {
            match &data {
                DataAt::None => data = DataAt::One(value),
                DataAt::One(first) => {
                    joined.clear();
                    joined.extend_from_slice(raw.get(first.clone()).unwrap_or_default());
                    joined.push(b'\n');
                    joined.extend_from_slice(raw.get(value).unwrap_or_default());
                    data = DataAt::Joined;
                }
                DataAt::Joined => {
                    joined.push(b'\n');
                    joined.extend_from_slice(raw.get(value).unwrap_or_default());
                }
            }
            continue;
        }
        if field == b"event" {
            event = Some(value);
        }
        other.push(line);
    }
    (event, data)
}

fn parse_event(raw: &[u8]) -> SseEvent {
    let (mut other, mut joined) = (Vec::new(), Vec::new());
    let (event, data) = fields(raw, &mut other, &mut joined);
    let at = |r: Range<usize>| raw.get(r).unwrap_or_default();
    SseEvent {
        raw: raw.to_vec(),
        other_lines: other.into_iter().map(|l| at(l).to_vec()).collect(),
        event: event.map(|e| String::from_utf8_lossy(at(e)).into_owned()),
        data: match data {
            DataAt::None => None,
            DataAt::One(r) => Some(at(r).to_vec()),
            DataAt::Joined => Some(joined),
        },
    }
}

/// A framed event read where it lies (in the framer's buffer): what [`SseEvent`] holds, without
/// copying it out.
struct Ev<'b> {
    raw: &'b [u8],
    /// Lines other than `data:`, ranges of `raw`.
    other: &'b [Range<usize>],
    event: Option<Cow<'b, str>>,
    data: Option<&'b [u8]>,
}

impl<'b> Ev<'b> {
    fn read(raw: &'b [u8], other: &'b mut Vec<Range<usize>>, joined: &'b mut Vec<u8>) -> Ev<'b> {
        let (event, data) = fields(raw, other, joined);
        let data = match data {
            DataAt::None => None,
            DataAt::One(r) => Some(raw.get(r).unwrap_or_default()),
            DataAt::Joined => Some(joined.as_slice()),
        };
        Ev { raw, other: other.as_slice(), event: event.map(|e| String::from_utf8_lossy(raw.get(e).unwrap_or_default())), data }
    }
}

/// What of an event's bytes was checked as UTF-8 (see [`SseRedactor::event`]).
enum Checked<'d> {
    /// All of it, as this text.
    Whole(&'d str),
    /// One string value (its range, quotes included, and its text).
    One(Range<usize>, &'d str),
}

impl Checked<'_> {
    /// The text of the string value at `r` in `doc`, checked as UTF-8 only if it was not yet.
    fn text<'a>(&'a self, doc: &'a [u8], r: &Range<usize>) -> Cow<'a, str> {
        match self {
            Checked::Whole(t) => decode_text(t.get(r.clone()).unwrap_or_default()),
            Checked::One(var, t) if var == r => decode_text(t),
            Checked::One(..) => decode(doc.get(r.clone()).unwrap_or_default()),
        }
    }
}

/// What a redactor reuses from event to event, so that reading one allocates nothing once the
/// stream has warmed up.
#[derive(Debug, Default)]
struct Room {
    /// The events framed by one push, ranges of the framer's buffer.
    spans: Vec<Range<usize>>,
    /// The current event's lines other than `data:`.
    other: Vec<Range<usize>>,
    /// The current event's data when it has several lines.
    joined: Vec<u8>,
    plan: Plan,
}

/// One event's plan: what its scan found, which strings feed which stream, which streams end
/// here, which strings are full texts to redact whole, and their replacements.
#[derive(Debug, Default)]
struct Plan {
    facts: plan::Facts,
    feed: Vec<(Range<usize>, Key)>,
    ends: Vec<Key>,
    whole: Vec<Range<usize>>,
    reps: Vec<(Range<usize>, String)>,
    /// The last event's replacement strings, whose allocations the next one's texts reuse.
    spare: Vec<String>,
    /// The last event read in full, for the next one that repeats it around another string.
    repeat: plan::Repeat,
}

/// Replacement strings longer than this are not kept for reuse (a whole text redacted once),
/// nor more of them than this (an event with many choices).
const SPARE_MAX: usize = 4096;
const SPARE_COUNT: usize = 8;

/// Stream key: which continuous text a delta belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// Chat choice content.
    Content(u64),
    /// Chat tool call arguments (choice, tool index).
    Tool(u64, u64),
    /// Responses output text (output_index, content_index).
    Text(u64, u64),
    /// Responses function call arguments (output_index).
    Args(u64),
    /// Anthropic block (index), text or JSON.
    BlockText(u64),
    /// Anthropic tool input JSON block.
    BlockJson(u64),
}

/// What an SSE push produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseOutput {
    /// Bytes to forward.
    pub bytes: Vec<u8>,
    /// Matches accepted.
    pub detections: Vec<Detection>,
    /// Set when a `block` match ended the stream: nothing after it is emitted, and the caller
    /// must end the response with the provider's error event.
    pub block: Option<Block>,
}

/// Reads a stream's events as the redactor emits them, in the redactor's own pass: its visitor
/// reads an event's data during redaction's scan of it, so an event that passes unchanged is
/// framed and scanned once for both (the `cordon.gateway` role's token limits read the redacted
/// stream this way). Every emitted byte is reported, in order, as a passed event or as written.
pub trait SseObserver {
    /// Its visitor reads values: every event must then be scanned in full (an event that repeats
    /// the last one around another string is otherwise read by comparing bytes).
    const READS: bool = true;
    /// What reads one event's data alongside redaction's scan.
    type Visitor<'d>: Visit<'d>;
    /// A visitor for one event's data.
    fn visitor<'d>(&self, data: &'d [u8]) -> Self::Visitor<'d>;
    /// An event was emitted byte for byte as it was framed (`raw_len` bytes): its `event:` name,
    /// its data, and the visitor that read the data in a scan that succeeded (`None` when
    /// redaction did not scan it: no data, or `[DONE]`).
    fn passed<'d>(&mut self, raw_len: usize, event: Option<&str>, data: Option<&'d [u8]>, read: Option<Self::Visitor<'d>>);
    /// `len` bytes the redactor wrote itself (rebuilt or synthesized events) were emitted.
    fn written(&mut self, len: usize);
}

/// Observes nothing: the redactor alone.
impl SseObserver for () {
    const READS: bool = false;
    type Visitor<'d> = ();
    fn visitor<'d>(&self, _data: &'d [u8]) -> Self::Visitor<'d> {}
    fn passed(&mut self, _raw_len: usize, _event: Option<&str>, _data: Option<&[u8]>, _read: Option<()>) {}
    fn written(&mut self, _len: usize) {}
}

/// Tells an observer what one push emitted: the bytes written since the last passed event are
/// reported as written just before the next passed event, and at the end.
struct Tally<'o, O> {
    observer: &'o mut O,
    covered: usize,
}

impl<O: SseObserver> Tally<'_, O> {
    /// Emits `ev` as it came.
    fn pass<'d>(&mut self, out: &mut SseOutput, ev: &Ev<'d>, read: Option<O::Visitor<'d>>) {
        self.close(out);
        out.bytes.extend_from_slice(ev.raw);
        self.covered = out.bytes.len();
        self.observer.passed(ev.raw.len(), ev.event.as_deref(), ev.data, read);
    }

    /// Reports the bytes written since the last passed event.
    fn close(&mut self, out: &SseOutput) {
        let gap = out.bytes.len().saturating_sub(self.covered);
        if gap > 0 {
            self.observer.written(gap);
            self.covered = out.bytes.len();
        }
    }
}

/// Redacts one streamed response.
#[derive(Debug)]
pub struct SseRedactor {
    engine: Arc<Engine>,
    format: SseFormat,
    framer: SseFramer,
    streams: BTreeMap<Key, StreamRedactor>,
    /// The first chat chunk with `choices`, as sent (parsed only to synthesize a delta).
    template: Option<Vec<u8>>,
    item_ids: BTreeMap<u64, Value>,
    pending_block: Option<(Block, String)>,
    blocked: bool,
    /// Lent to each push (boxed: lending moves a pointer, not the plan's many fields).
    room: Option<Box<Room>>,
}

fn data_event(event: Option<&str>, v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

impl SseRedactor {
    /// New redactor for a response stream of `format`.
    pub fn new(engine: Arc<Engine>, format: SseFormat) -> Self {
        SseRedactor {
            engine,
            format,
            framer: SseFramer::new(DEFAULT_MAX_EVENT_BYTES),
            streams: BTreeMap::new(),
            template: None,
            item_ids: BTreeMap::new(),
            pending_block: None,
            blocked: false,
            room: None,
        }
    }

    /// Bytes held back: incomplete event plus text held by every stream.
    pub fn held_bytes(&self) -> usize {
        self.framer.buffered() + self.streams.values().map(StreamRedactor::held_bytes).sum::<usize>()
    }

    /// Feed a chunk of the response body.
    pub fn push(&mut self, chunk: &[u8]) -> Result<SseOutput, SseError> {
        self.push_observed(chunk, &mut ())
    }

    /// End of the response body: flush held text.
    pub fn finish(&mut self) -> Result<SseOutput, SseError> {
        self.finish_observed(&mut ())
    }

    /// [`Self::push`], telling `observer` what was emitted (its report is complete only when
    /// this returns `Ok`).
    pub fn push_observed<O: SseObserver>(&mut self, chunk: &[u8], observer: &mut O) -> Result<SseOutput, SseError> {
        let mut out = SseOutput::default();
        self.push_observed_into(chunk, observer, &mut out)?;
        Ok(out)
    }

    /// [`Self::push_observed`], writing into `out` (emptied first): a caller that keeps `out`
    /// between chunks keeps its room, so a stream allocates no output per chunk.
    pub fn push_observed_into<O: SseObserver>(&mut self, chunk: &[u8], observer: &mut O, out: &mut SseOutput) -> Result<(), SseError> {
        out.bytes.clear();
        out.detections.clear();
        out.block = None;
        if self.blocked {
            return Ok(());
        }
        let mut tally = Tally { observer, covered: 0 };
        self.framer.buf.extend_from_slice(chunk);
        // The events are read where the framer holds them: its buffer and the room are lent to
        // the pass over them and given back after it.
        let mut framer = std::mem::take(&mut self.framer);
        let mut room = self.room.take().unwrap_or_default();
        room.spans.clear();
        let result = framer.frame(false, &mut room.spans).and_then(|done| {
            let Room { spans, other, joined, plan } = &mut *room;
            let mut result = Ok(());
            for span in spans.iter() {
                let ev = Ev::read(framer.buf.get(span.clone()).unwrap_or_default(), other, joined);
                result = self.event(&ev, plan, out, &mut tally);
                if result.is_err() || self.blocked {
                    break;
                }
            }
            framer.release(done);
            result
        });
        self.framer = framer;
        self.room = Some(room);
        result?;
        tally.close(out);
        Ok(())
    }

    /// [`Self::finish`], telling `observer` what was emitted.
    pub fn finish_observed<O: SseObserver>(&mut self, observer: &mut O) -> Result<SseOutput, SseError> {
        let mut out = SseOutput::default();
        if self.blocked {
            return Ok(out);
        }
        let mut tally = Tally { observer, covered: 0 };
        let events = self.framer.finish()?;
        let mut room = self.room.take().unwrap_or_default();
        let Room { other, joined, plan, .. } = &mut *room;
        let mut result = Ok(());
        for ev in events {
            result = self.event(&Ev::read(&ev.raw, other, joined), plan, &mut out, &mut tally);
            if result.is_err() || self.blocked {
                break;
            }
        }
        self.room = Some(room);
        result?;
        if self.blocked {
            tally.close(&out);
            return Ok(out);
        }
        let keys: Vec<Key> = self.streams.keys().copied().collect();
        for k in keys {
            self.flush(k, &mut out);
            if self.blocked {
                break;
            }
        }
        tally.close(&out);
        Ok(out)
    }

    /// Stop at a `block` match. The caller appends the provider-format error event (one source
    /// for every way Cordon ends a stream: `cordon_core::redaction::stream_error_event`).
    fn block(&mut self, b: Block, out: &mut SseOutput) {
        out.block = Some(b);
        self.blocked = true;
    }

    /// Feed text to a stream; returns the text to emit now (None if the stream blocked).
    /// `room` is a spare string whose allocation the text reuses.
    fn feed(&mut self, key: Key, text: &str, out: &mut SseOutput, room: Option<String>) -> Option<String> {
        let engine = &self.engine;
        let s = self.streams.entry(key).or_insert_with(|| StreamRedactor::new(engine.clone(), Direction::Response));
        let mut bytes = room.map(String::into_bytes).unwrap_or_default();
        bytes.clear();
        let mut o = Output { bytes, ..Output::default() };
        s.push_into(text.as_bytes(), &mut o);
        self.take(o, out)
    }

    /// Finish a stream; returns held text (None if it blocked or had no stream).
    fn finish_stream(&mut self, key: Key, out: &mut SseOutput) -> Option<String> {
        let o = self.streams.remove(&key)?.finish();
        self.take(o, out)
    }

    /// Records a stream's detections; returns its text, or None after parking a block verdict
    /// (with the text before the match) for the caller to emit.
    fn take(&mut self, o: Output, out: &mut SseOutput) -> Option<String> {
        out.detections.extend(o.detections);
        // The bytes are the text's own (valid UTF-8 in, valid UTF-8 out): no copy.
        let txt = String::from_utf8(o.bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if let Some(b) = o.block {
            self.pending_block = Some((b, txt));
            return None;
        }
        Some(txt)
    }

    /// Flush a stream into a synthesized delta event.
    fn flush(&mut self, key: Key, out: &mut SseOutput) {
        let Some(txt) = self.finish_stream(key, out) else {
            self.emit_pending_block(key, out);
            return;
        };
        if !txt.is_empty() {
            let ev = self.synth(key, &txt);
            out.bytes.extend_from_slice(&ev);
        }
    }

    fn emit_pending_block(&mut self, key: Key, out: &mut SseOutput) {
        if let Some((b, txt)) = self.pending_block.take() {
            if !txt.is_empty() {
                let ev = self.synth(key, &txt);
                out.bytes.extend_from_slice(&ev);
            }
            self.block(b, out);
        }
    }

    fn synth(&self, key: Key, text: &str) -> Vec<u8> {
        match key {
            Key::Content(c) | Key::Tool(c, _) => {
                let template = self.template.as_deref().and_then(|t| serde_json::from_slice::<Value>(t).ok());
                let mut v = template.unwrap_or_else(|| json!({"object": "chat.completion.chunk"}));
                let delta = match key {
                    Key::Tool(_, t) => json!({"tool_calls": [{"index": t, "function": {"arguments": text}}]}),
                    _ => json!({"content": text}),
                };
                if let Some(o) = v.as_object_mut() {
                    o.remove("usage");
                    o.remove("choices");
                    o.insert("choices".into(), json!([{"index": c, "delta": delta, "finish_reason": null}]));
                }
                data_event(None, &v)
            }
            Key::Text(o, c) => {
                let mut v = json!({"type": "response.output_text.delta", "output_index": o, "content_index": c, "delta": text});
                if let (Some(id), Some(m)) = (self.item_ids.get(&o), v.as_object_mut()) {
                    m.insert("item_id".into(), id.clone());
                }
                data_event(Some("response.output_text.delta"), &v)
            }
            Key::Args(o) => {
                let mut v = json!({"type": "response.function_call_arguments.delta", "output_index": o, "delta": text});
                if let (Some(id), Some(m)) = (self.item_ids.get(&o), v.as_object_mut()) {
                    m.insert("item_id".into(), id.clone());
                }
                data_event(Some("response.function_call_arguments.delta"), &v)
            }
            Key::BlockText(i) => data_event(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": text}}),
            ),
            Key::BlockJson(i) => data_event(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": text}}),
            ),
        }
    }

    fn event<'d, O: SseObserver>(
        &mut self,
        ev: &Ev<'d>,
        plan: &mut Plan,
        out: &mut SseOutput,
        tally: &mut Tally<'_, O>,
    ) -> Result<(), SseError> {
        let Some(data) = ev.data else {
            tally.pass(out, ev, None);
            return Ok(());
        };
        if data.trim_ascii() == b"[DONE]" {
            let keys: Vec<Key> = self.streams.keys().copied().collect();
            for k in keys {
                self.flush(k, out);
                if self.blocked {
                    return Ok(());
                }
            }
            tally.pass(out, ev, None);
            return Ok(());
        }
        let mut seen = tally.observer.visitor(data);
        let Plan { facts, feed: feed_ranges, ends, whole: whole_ranges, reps, spare, repeat } = plan;
        // The event's bytes, valid UTF-8, and what was checked as such: the whole event (the
        // strict read), or its one new string (the repeat check; the bytes around it were
        // checked with the event read in full). Checked text is decoded without a second check.
        let (doc, checked): (&[u8], Checked<'_>) = match if O::READS { None } else { repeat.reread(data, facts) } {
            Some((doc, var, string)) => (doc, Checked::One(var, string)),
            None => {
                repeat.forget();
                let doc = plan::read_into(self.format, data, &mut seen, facts).map_err(|reason| SseError::BadJson {
                    reason,
                    snippet: String::from_utf8_lossy(data.get(..data.len().min(80)).unwrap_or_default()).into_owned(),
                })?;
                if !O::READS {
                    repeat.remember(data, facts);
                }
                (doc.as_bytes(), Checked::Whole(doc))
            }
        };
        let text_at = |r: &Range<usize>| checked.text(doc, r);
        // Plan: which strings feed which stream, which streams end here, which strings are full
        // texts to redact whole (OpenAI Responses `done`/`completed` events).
        feed_ranges.clear();
        ends.clear();
        whole_ranges.clear();
        let room = SPARE_COUNT.saturating_sub(spare.len());
        spare.extend(reps.drain(..).map(|(_, s)| s).filter(|s| s.capacity() <= SPARE_MAX).take(room));
        let name = |r: &Option<Range<usize>>| r.as_ref().map_or(Cow::Borrowed(""), text_at);
        match self.format {
            SseFormat::OpenAiChat => {
                if facts.has_choices && self.template.is_none() {
                    // Synthesized deltas copy the stream's id, model, created, ... from here.
                    self.template = Some(data.to_vec());
                }
                for (ci, ch) in facts.choices.iter().enumerate() {
                    let idx = ch.index.or(ci as u64);
                    if let Some(r) = &ch.content {
                        feed_ranges.push((r.clone(), Key::Content(idx)));
                    }
                    for (ti, tc) in ch.tools.iter().enumerate() {
                        if let Some(r) = &tc.args {
                            feed_ranges.push((r.clone(), Key::Tool(idx, tc.index.or(ti as u64))));
                        }
                    }
                    if ch.finish {
                        for k in self.streams.keys() {
                            if matches!(k, Key::Content(c) | Key::Tool(c, _) if *c == idx) {
                                ends.push(*k);
                            }
                        }
                        for (_, k) in feed_ranges.iter() {
                            if matches!(k, Key::Content(c) | Key::Tool(c, _) if *c == idx) && !ends.contains(k) {
                                ends.push(*k);
                            }
                        }
                    }
                }
            }
            SseFormat::OpenAiResponses => {
                let (oi, ci) = (facts.index.or(0), facts.content_index.or(0));
                if let Some(id) = facts.item_id.as_ref().and_then(|r| data.get(r.clone())).and_then(|t| serde_json::from_slice(t).ok()) {
                    self.item_ids.insert(oi, id);
                }
                match name(&facts.ty).as_ref() {
                    "response.output_text.delta" => feed_ranges.extend(facts.delta.iter().map(|r| (r.clone(), Key::Text(oi, ci)))),
                    "response.function_call_arguments.delta" => feed_ranges.extend(facts.delta.iter().map(|r| (r.clone(), Key::Args(oi)))),
                    "response.output_text.done" => {
                        ends.push(Key::Text(oi, ci));
                        whole_ranges.extend(facts.text.iter().cloned());
                    }
                    "response.function_call_arguments.done" => {
                        ends.push(Key::Args(oi));
                        whole_ranges.extend(facts.arguments.iter().cloned());
                    }
                    _ => {}
                }
                whole_ranges.extend(facts.full_texts.iter().cloned());
            }
            SseFormat::Anthropic => {
                let idx = facts.index.or(0);
                match name(&facts.ty).as_ref() {
                    "content_block_start" => {
                        if let Some(r) = facts.block_text.as_ref().filter(|r| r.len() > 2) {
                            feed_ranges.push((r.clone(), Key::BlockText(idx)));
                        }
                    }
                    "content_block_delta" => match name(&facts.delta_ty).as_ref() {
                        "text_delta" => feed_ranges.extend(facts.delta.iter().map(|r| (r.clone(), Key::BlockText(idx)))),
                        "input_json_delta" => feed_ranges.extend(facts.partial_json.iter().map(|r| (r.clone(), Key::BlockJson(idx)))),
                        _ => {}
                    },
                    "content_block_stop" => {
                        ends.push(Key::BlockText(idx));
                        ends.push(Key::BlockJson(idx));
                    }
                    "message_stop" => ends.extend(self.streams.keys().copied()),
                    _ => {}
                }
            }
        }
        // Streams are fed in the order their text appears in the event.
        feed_ranges.sort_by_key(|(r, _)| r.start);
        whole_ranges.sort_by_key(|r| r.start);
        if feed_ranges.is_empty() && whole_ranges.is_empty() && ends.is_empty() {
            tally.pass(out, ev, Some(seen));
            return Ok(());
        }
        let mut changed = false;
        for (r, k) in feed_ranges.iter() {
            let text = text_at(r);
            let Some(mut txt) = self.feed(*k, &text, out, spare.pop()) else {
                // Block: emit what came before the match in this event, then the error.
                let (b, before) = self.pending_block.take().unwrap_or_else(|| (Block { detector: Arc::from("unknown") }, String::new()));
                if !before.is_empty() {
                    reps.push((r.clone(), before));
                    out.bytes.extend_from_slice(&rebuild(ev, &splice(data, reps)));
                }
                self.block(b, out);
                return Ok(());
            };
            if ends.contains(k) {
                ends.retain(|e| e != k);
                match self.finish_stream(*k, out) {
                    Some(rest) => txt.push_str(&rest),
                    None => {
                        let (b, before) =
                            self.pending_block.take().unwrap_or_else(|| (Block { detector: Arc::from("unknown") }, String::new()));
                        txt.push_str(&before);
                        reps.push((r.clone(), txt));
                        out.bytes.extend_from_slice(&rebuild(ev, &splice(data, reps)));
                        self.block(b, out);
                        return Ok(());
                    }
                }
            }
            changed |= txt != text;
            reps.push((r.clone(), txt));
        }
        for r in whole_ranges.iter() {
            let text = text_at(r);
            let o = self.engine.redact(Direction::Response, text.as_bytes());
            if let Some(b) = o.block {
                self.block(b, out);
                return Ok(());
            }
            let new = String::from_utf8_lossy(&o.bytes).into_owned();
            if new != text {
                changed = true;
                reps.push((r.clone(), new));
            }
        }
        // Streams ending at this event without a delta in it: flush into synthesized events first.
        for &k in ends.iter() {
            if self.streams.contains_key(&k) {
                self.flush(k, out);
                if self.blocked {
                    return Ok(());
                }
            }
        }
        if changed {
            reps.sort_by_key(|(r, _)| r.start);
            out.bytes.extend_from_slice(&rebuild(ev, &splice(data, reps)));
        } else {
            tally.pass(out, ev, Some(seen));
        }
        Ok(())
    }
}

/// Re-serialize an event with new data: other lines kept, then one `data:` line per line of the
/// data (an event's `data:` lines were joined with `\n`; a line without its field name would be
/// dropped by the client, and the JSON with it).
fn rebuild(ev: &Ev<'_>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for l in ev.other {
        out.extend_from_slice(ev.raw.get(l.clone()).unwrap_or_default());
        out.push(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The one-line fast path reads every framed event as the line-by-line reading does.
        #[test]
        fn fields_equal_fields_by_line(
            events in prop::collection::vec(prop::collection::vec(prop::sample::select(&[
                "data: {\"a\":1}", "data:x", "data:", "data: ", "data:  two", "data:a:b", "event: delta", "event:", ": keep-alive",
                "id: 3", "retry: 10", "dat", "datax: 1", "DATA: no",
            ][..]), 1..4), 1..6),
            ends in prop::collection::vec(prop::sample::select(&["\n", "\r\n", "\r"][..]), 1..40),
        ) {
            let mut stream = Vec::new();
            let mut k = 0;
            let mut end = || { k += 1; ends[k % ends.len()] };
            for lines in &events {
                for l in lines {
                    stream.extend_from_slice(l.as_bytes());
                    stream.extend_from_slice(end().as_bytes());
                }
                stream.extend_from_slice(end().as_bytes());
            }
            let mut framer = SseFramer::new(1 << 20);
            let mut framed = framer.push(&stream).unwrap();
            framed.extend(framer.finish().unwrap());
            prop_assert!(!framed.is_empty());
            for ev in framed {
                let (mut o1, mut j1, mut o2, mut j2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let fast = fields(&ev.raw, &mut o1, &mut j1);
                let slow = fields_by_line(&ev.raw, &mut o2, &mut j2);
                prop_assert_eq!(&fast, &slow, "{:?}", String::from_utf8_lossy(&ev.raw));
                prop_assert_eq!(&o1, &o2);
                if fast.1 == DataAt::Joined {
                    prop_assert_eq!(&j1, &j2);
                }
            }
        }
    }
}
