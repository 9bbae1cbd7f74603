//! What one provider event means to the redactor (which strings feed which stream, which streams
//! end), read in the same strict pass that validates the event ([`crate::json::scan`]): one read
//! of the event's bytes instead of three (typed fields, strict validation, string walk).
//!
//! Leaf fields are lenient, as the providers' SDKs are: an `index` that is not a non-negative
//! integer reads as 0, a `type` that is not a string reads as `""`. Structure is strict: an event
//! that is not an object, `choices`/`tool_calls` that are not arrays, a choice, tool call,
//! `delta`, `function` or `content_block` that is not an object (or `null` where optional), and
//! a field the redactor reads given twice are errors, so an event whose shape is not understood
//! goes to the failure action instead of passing unscanned. Twice-given text fields that decide
//! nothing (`delta` of a Responses event, `text` of an Anthropic delta) are all redacted.

use std::ops::Range;

use crate::json::Seg;
use crate::json::scan::{self, Kind, Visit};

use super::SseFormat;

/// An index field: absent, or its value (0 when it is not a non-negative integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Index {
    /// Not in the event.
    #[default]
    Absent,
    /// Its value.
    Is(u64),
}

impl Index {
    /// The value, or `default` when absent.
    pub(super) fn or(self, default: u64) -> u64 {
        match self {
            Index::Absent => default,
            Index::Is(n) => n,
        }
    }

    fn of(data: &[u8], kind: &Kind) -> Index {
        let n = match kind {
            Kind::Num(r) => data.get(r.clone()).and_then(scan::as_u64),
            _ => None,
        };
        Index::Is(n.unwrap_or(0))
    }
}

/// One choice of an OpenAI chat chunk.
#[derive(Debug, Default)]
pub(super) struct Choice {
    /// `index`.
    pub index: Index,
    /// `delta.content`, when a string.
    pub content: Option<Range<usize>>,
    /// `delta.tool_calls`.
    pub tools: Vec<Tool>,
    /// `finish_reason` is present and not `null`.
    pub finish: bool,
    seen: u16,
}

/// One streamed tool call.
#[derive(Debug, Default)]
pub(super) struct Tool {
    /// `index`.
    pub index: Index,
    /// `function.arguments`, when a string.
    pub args: Option<Range<usize>>,
    seen: u16,
}

/// What an event holds for the redactor.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// Chat: `choices` is an array.
    pub has_choices: bool,
    /// Chat: the choices, by position.
    pub choices: Vec<Choice>,
    /// Responses and Anthropic: `type`, when a string (raw, quotes included).
    pub ty: Option<Range<usize>>,
    /// Responses: `output_index`; Anthropic: `index`.
    pub index: Index,
    /// Responses: `content_index`.
    pub content_index: Index,
    /// Responses: `item_id` when present and not `null` (raw JSON).
    pub item_id: Option<Range<usize>>,
    /// Responses: `delta` strings; Anthropic: `delta.text` strings.
    pub delta: Vec<Range<usize>>,
    /// Responses: top-level `text` strings.
    pub text: Vec<Range<usize>>,
    /// Responses: top-level `arguments` strings.
    pub arguments: Vec<Range<usize>>,
    /// Responses: strings at the full-text paths of `done`/`completed` events.
    pub full_texts: Vec<Range<usize>>,
    /// Anthropic: `content_block.text`, when a string.
    pub block_text: Option<Range<usize>>,
    /// Anthropic: `delta.type`, when a string (raw).
    pub delta_ty: Option<Range<usize>>,
    /// Anthropic: `delta.partial_json` strings.
    pub partial_json: Vec<Range<usize>>,
    seen: u16,
}

/// Read `data` strictly as an event of `format`; `also` reads it in the same pass (its reading
/// is sound only when this returns `Ok`: the scan then ran over the whole event).
#[cfg(test)]
pub(super) fn read<'d, V: Visit<'d>>(format: SseFormat, data: &'d [u8], also: &mut V) -> Result<Facts, String> {
    let mut facts = Facts::default();
    read_into(format, data, also, &mut facts)?;
    Ok(facts)
}

/// [`read`] into `facts`, which are cleared first (a redactor keeps one `Facts` for all its
/// events, so their vectors are allocated once per stream, not per event); returns `data` as
/// the text it was checked to be, to read the strings found without checking them again.
pub(super) fn read_into<'d, V: Visit<'d>>(format: SseFormat, data: &'d [u8], also: &mut V, facts: &mut Facts) -> Result<&'d str, String> {
    facts.clear();
    let text = scan::utf8(data).map_err(|e| e.to_string())?;
    let mut r = Reader { format, data, facts, err: None };
    scan::scan_text(text, &mut (&mut r, also)).map_err(|e| e.to_string())?;
    match r.err {
        Some(e) => Err(e.to_owned()),
        None => Ok(text),
    }
}

/// Events longer than this are not remembered (nor their bytes kept for the stream's life).
const REPEAT_MAX: usize = 16 * 1024;

/// The last event read in full, as the bytes around the last string its facts point into.
///
/// An event made of the same bytes around another valid JSON string has the same facts but
/// for that string's range: a strict parser is in the same state on the same bytes, the facts
/// depend on paths and kinds of values, never on a string's content, and a string value is
/// followed by the same bytes whatever it holds. So such an event is read by comparing bytes
/// and checking one string, instead of walking the document (streamed chat and Anthropic
/// deltas differ from the previous event only in their text). Sound only for a pass that
/// reads nothing else of the event: an observer's visitor would miss the values.
#[derive(Debug, Default)]
pub(super) struct Repeat {
    /// The facts hold the last event read in full (or repeated), and these fields describe it.
    armed: bool,
    before: Vec<u8>,
    after: Vec<u8>,
    /// The string's range in that event.
    var: Range<usize>,
}

impl Repeat {
    /// `data`, and the range and checked text of its one new string, when it repeats the last
    /// event around another string; `facts` then hold its facts. `None`: read it in full (and
    /// [`Self::remember`] it).
    pub(super) fn reread<'d>(&mut self, data: &'d [u8], facts: &mut Facts) -> Option<(&'d [u8], Range<usize>, &'d str)> {
        if !self.armed || !data.starts_with(&self.before) || !data.ends_with(&self.after) {
            return None;
        }
        let var = self.before.len()..data.len().checked_sub(self.after.len())?;
        // The bytes around it were valid UTF-8 in the event read in full, and they end before
        // and start after an ASCII quote: the event is valid UTF-8 when the string is.
        let string = std::str::from_utf8(data.get(var.clone())?).ok()?;
        if !scan::is_string(string) {
            return None;
        }
        let slot = facts.ranges_mut().find(|r| **r == self.var)?;
        *slot = var.clone();
        self.var = var.clone();
        Some((data, var, string))
    }

    /// Remembers an event [`read_into`] read in full into `facts`, when the last range its
    /// facts hold is a string after every other one.
    pub(super) fn remember(&mut self, data: &[u8], facts: &mut Facts) {
        self.armed = false;
        if data.len() > REPEAT_MAX {
            // Deltas are small; a large event (a whole text at the end) is not worth keeping.
            return;
        }
        let Some(last) = facts.ranges_mut().max_by_key(|r| r.start).map(|r| r.clone()) else { return };
        // Once among the facts, and after every other range.
        let others_before = facts.ranges_mut().filter(|r| **r != last).all(|r| r.end <= last.start);
        let once = facts.ranges_mut().filter(|r| **r == last).count() == 1;
        let (Some(before), Some(after)) = (data.get(..last.start), data.get(last.end..)) else { return };
        if !others_before || !once || data.get(last.start) != Some(&b'"') {
            return;
        }
        self.before.clear();
        self.before.extend_from_slice(before);
        self.after.clear();
        self.after.extend_from_slice(after);
        self.var = last;
        self.armed = true;
    }

    /// The facts no longer hold what was remembered.
    pub(super) fn forget(&mut self) {
        self.armed = false;
    }
}

impl Facts {
    /// Every range the facts hold.
    fn ranges_mut(&mut self) -> impl Iterator<Item = &mut Range<usize>> {
        // Destructured so that a field added later cannot be forgotten here.
        let Facts {
            has_choices: _,
            choices,
            ty,
            index: _,
            content_index: _,
            item_id,
            delta,
            text,
            arguments,
            full_texts,
            block_text,
            delta_ty,
            partial_json,
            seen: _,
        } = self;
        let chat = choices.iter_mut().flat_map(|Choice { index: _, content, tools, finish: _, seen: _ }| {
            content.iter_mut().chain(tools.iter_mut().flat_map(|Tool { index: _, args, seen: _ }| args.iter_mut()))
        });
        chat.chain(ty.iter_mut())
            .chain(item_id.iter_mut())
            .chain(delta.iter_mut())
            .chain(text.iter_mut())
            .chain(arguments.iter_mut())
            .chain(full_texts.iter_mut())
            .chain(block_text.iter_mut())
            .chain(delta_ty.iter_mut())
            .chain(partial_json.iter_mut())
    }

    /// Back to `Facts::default()`, keeping the vectors' capacity.
    fn clear(&mut self) {
        // Destructured so that a field added later cannot be forgotten here.
        let Facts {
            has_choices,
            choices,
            ty,
            index,
            content_index,
            item_id,
            delta,
            text,
            arguments,
            full_texts,
            block_text,
            delta_ty,
            partial_json,
            seen,
        } = self;
        *has_choices = false;
        choices.clear();
        *ty = None;
        *index = Index::Absent;
        *content_index = Index::Absent;
        *item_id = None;
        delta.clear();
        text.clear();
        arguments.clear();
        full_texts.clear();
        *block_text = None;
        *delta_ty = None;
        partial_json.clear();
        *seen = 0;
    }
}

/// Reads facts from paths and kinds of values only, never from a string's content or its
/// escapes: [`Repeat`] relies on it (a string's content is read later, through its range).
struct Reader<'d, 'f> {
    format: SseFormat,
    data: &'d [u8],
    facts: &'f mut Facts,
    err: Option<&'static str>,
}

/// A path step with the key borrowed, so paths can be matched as slice patterns.
#[derive(Clone, Copy)]
enum P<'x> {
    K(&'x str),
    I,
}

/// The path as an array (paths deeper than the deepest one read are of no interest).
fn view<'x>(path: &'x [Seg<'_>]) -> Option<([P<'x>; 7], usize)> {
    if path.len() > 7 {
        return None;
    }
    let mut a = [P::I; 7];
    for (slot, s) in a.iter_mut().zip(path) {
        *slot = match s {
            Seg::Key(k) => P::K(k),
            Seg::Idx(_) => P::I,
        };
    }
    Some((a, path.len()))
}

/// The key of a path segment (`None` for an array index).
fn name<'x>(s: &'x Seg<'_>) -> Option<&'x str> {
    match s {
        Seg::Key(k) => Some(k),
        Seg::Idx(_) => None,
    }
}

/// Marks a field seen; records an error if it was given twice (the event is then refused whole,
/// so which copy the fields hold does not matter).
fn once(err: &mut Option<&'static str>, seen: &mut u16, bit: u16) {
    if *seen & bit != 0 {
        err.get_or_insert("a field the redactor reads is given twice");
    }
    *seen |= bit;
}

/// Records `what` as the error unless the value has the expected shape.
fn expect(err: &mut Option<&'static str>, ok: bool, what: &'static str) {
    if !ok {
        err.get_or_insert(what);
    }
}

fn object_or_null(k: &Kind) -> bool {
    matches!(k, Kind::Object | Kind::Null)
}

fn array_or_null(k: &Kind) -> bool {
    matches!(k, Kind::Array | Kind::Null)
}

fn string(k: &Kind) -> Option<Range<usize>> {
    match k {
        Kind::Str { raw, .. } => Some(raw.clone()),
        _ => None,
    }
}

impl Reader<'_, '_> {
    /// The `type` and the index (named `index_key`) of a Responses or Anthropic event; false
    /// when `p` is neither.
    fn type_and_index(&mut self, p: &[P], kind: &Kind, index_key: &str) -> bool {
        let (f, err) = (&mut *self.facts, &mut self.err);
        match p {
            [P::K("type")] => {
                once(err, &mut f.seen, 1);
                f.ty = string(kind);
            }
            [P::K(k)] if *k == index_key => {
                once(err, &mut f.seen, 2);
                f.index = Index::of(self.data, kind);
            }
            _ => return false,
        }
        true
    }

    /// Chat paths are matched segment by segment on the scanner's own path (no copy of it):
    /// every path outside `choices` is dropped at its first segment.
    fn chat(&mut self, path: &[Seg<'_>], kind: &Kind) {
        let [first, rest @ ..] = path else { return };
        if name(first) != Some("choices") {
            return;
        }
        let f = &mut *self.facts;
        let err = &mut self.err;
        let [at, rest @ ..] = rest else {
            // `choices`
            once(err, &mut f.seen, 1);
            f.has_choices = matches!(kind, Kind::Array);
            expect(err, array_or_null(kind), "`choices` is not an array");
            return;
        };
        if !matches!(at, Seg::Idx(_)) {
            return;
        }
        let [field, rest @ ..] = rest else {
            // `choices[i]`
            if matches!(kind, Kind::Object) {
                f.choices.push(Choice::default());
            } else {
                err.get_or_insert("a choice is not an object");
            }
            return;
        };
        let Some(c) = f.choices.last_mut() else { return };
        match (name(field), rest) {
            (Some("index"), []) => {
                once(err, &mut c.seen, 1);
                c.index = Index::of(self.data, kind);
            }
            (Some("finish_reason"), []) => {
                once(err, &mut c.seen, 2);
                c.finish = !matches!(kind, Kind::Null);
            }
            (Some("delta"), []) => {
                once(err, &mut c.seen, 4);
                expect(err, object_or_null(kind), "`delta` is not an object");
            }
            (Some("delta"), [sub, rest @ ..]) => match (name(sub), rest) {
                (Some("content"), []) => {
                    once(err, &mut c.seen, 8);
                    c.content = string(kind);
                }
                (Some("tool_calls"), []) => {
                    once(err, &mut c.seen, 16);
                    expect(err, array_or_null(kind), "`tool_calls` is not an array");
                }
                (Some("tool_calls"), [Seg::Idx(_)]) => {
                    if matches!(kind, Kind::Object) {
                        c.tools.push(Tool::default());
                    } else {
                        err.get_or_insert("a tool call is not an object");
                    }
                }
                (Some("tool_calls"), [Seg::Idx(_), field, rest @ ..]) => {
                    let Some(t) = c.tools.last_mut() else { return };
                    match (name(field), rest) {
                        (Some("index"), []) => {
                            once(err, &mut t.seen, 1);
                            t.index = Index::of(self.data, kind);
                        }
                        (Some("function"), []) => {
                            once(err, &mut t.seen, 2);
                            expect(err, object_or_null(kind), "`function` is not an object");
                        }
                        (Some("function"), [arg]) if name(arg) == Some("arguments") => {
                            once(err, &mut t.seen, 4);
                            t.args = string(kind);
                        }
                        _ => {}
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn responses(&mut self, p: &[P], kind: &Kind) {
        if self.type_and_index(p, kind, "output_index") {
            return;
        }
        let f = &mut *self.facts;
        let err = &mut self.err;
        match p {
            [P::K("content_index")] => {
                once(err, &mut f.seen, 4);
                f.content_index = Index::of(self.data, kind);
            }
            [P::K("item_id")] => {
                // A container's span is known at its close; scalars have theirs now.
                once(err, &mut f.seen, 8);
                // Ids are strings; a `true` id is not copied into synthesized events.
                f.item_id = match kind {
                    Kind::Str { raw, .. } | Kind::Num(raw) => Some(raw.clone()),
                    Kind::Object | Kind::Array | Kind::Null | Kind::Bool(_) => None,
                };
            }
            [P::K("delta")] => f.delta.extend(string(kind)),
            [P::K("text")] => f.text.extend(string(kind)),
            [P::K("arguments")] => f.arguments.extend(string(kind)),
            [P::K("part"), P::K("text")]
            | [P::K("item"), P::K("content"), P::I, P::K("text")]
            | [P::K("item"), P::K("arguments")]
            | [P::K("response"), P::K("output"), P::I, P::K("content"), P::I, P::K("text")]
            | [P::K("response"), P::K("output"), P::I, P::K("arguments")] => f.full_texts.extend(string(kind)),
            _ => {}
        }
    }

    fn anthropic(&mut self, p: &[P], kind: &Kind) {
        if self.type_and_index(p, kind, "index") {
            return;
        }
        let f = &mut *self.facts;
        let err = &mut self.err;
        match p {
            [P::K("content_block")] => {
                once(err, &mut f.seen, 4);
                expect(err, object_or_null(kind), "`content_block` is not an object");
            }
            [P::K("content_block"), P::K("text")] => {
                once(err, &mut f.seen, 8);
                f.block_text = string(kind);
            }
            [P::K("delta")] => {
                once(err, &mut f.seen, 16);
                expect(err, object_or_null(kind), "`delta` is not an object");
            }
            [P::K("delta"), P::K("type")] => {
                once(err, &mut f.seen, 32);
                f.delta_ty = string(kind);
            }
            [P::K("delta"), P::K("text")] => f.delta.extend(string(kind)),
            [P::K("delta"), P::K("partial_json")] => f.partial_json.extend(string(kind)),
            _ => {}
        }
    }
}

impl<'a> Visit<'a> for Reader<'_, '_> {
    fn value(&mut self, path: &[Seg<'a>], kind: &Kind) {
        if path.is_empty() {
            expect(&mut self.err, matches!(kind, Kind::Object), "an event's data is not a JSON object");
            return;
        }
        if self.format == SseFormat::OpenAiChat {
            self.chat(path, kind);
            return;
        }
        let Some((a, n)) = view(path) else { return };
        let p = a.get(..n).unwrap_or_default();
        match self.format {
            SseFormat::OpenAiChat => {}
            SseFormat::OpenAiResponses => self.responses(p, kind),
            SseFormat::Anthropic => self.anthropic(p, kind),
        }
    }

    fn close(&mut self, path: &[Seg<'a>], raw: Range<usize>) {
        if self.format == SseFormat::OpenAiResponses && matches!(path, [Seg::Key(k)] if k == "item_id") && self.facts.item_id.is_none() {
            self.facts.item_id = Some(raw);
        }
    }
}

#[cfg(test)]
mod tests;
