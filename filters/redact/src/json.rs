//! JSON bodies: find the text fields of the providers' request and response shapes and rewrite
//! them in place.
//!
//! One strict pass ([`scan`]) validates the body (malformed JSON is a [`JsonError`]) and locates
//! each string value and its path; only the selected strings are replaced
//! (re-encoded with `serde_json`), so every other byte of the body, key order and number
//! formatting included, is unchanged and the result is valid JSON. JSON `\uXXXX` escapes are
//! decoded before the text reaches the engine, so `\u0040` is an `@` to the detectors.
//!
//! Text fields, requests (OpenAI chat completions, `/v1/responses`, `/v1/embeddings`, legacy
//! completions, Anthropic `/v1/messages`):
//! `messages[].content` (string, or parts' `text`; Anthropic `tool_result` blocks' `content`
//! string or blocks' `text`), `messages[].tool_calls[].function.arguments`, `system` (string or
//! blocks' `text`), `instructions`, `prompt` (string or strings), `input` (string, strings,
//! items' `content` string or parts' `text`, `function_call_output` items' `output`).
//!
//! Responses: `choices[].message.content`, `choices[].message.tool_calls[].function.arguments`,
//! `choices[].text`, `output[].content[].text`, `output[].arguments`, `content[].text`, and every
//! string inside `content[].input` (Anthropic `tool_use`).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use crate::config::Direction;
use crate::engine::{Block, Detection, Engine, StreamRedactor};

pub mod scan;

/// A step in a JSON path (keys borrowed from the document unless they hold escapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg<'a> {
    /// Object member.
    Key(Cow<'a, str>),
    /// Array element.
    Idx(usize),
}

/// Why a JSON body could not be redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not valid JSON (or not UTF-8).
    #[error("body is not valid JSON ({0}); refusing to forward text that cannot be scanned")]
    Malformed(String),
}

/// Result of redacting a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonVerdict {
    /// The (possibly unchanged) body to forward; fix up `content-length` if `changed`.
    Forward {
        /// New body.
        body: Vec<u8>,
        /// Whether any byte changed.
        changed: bool,
        /// Accepted matches.
        detections: Vec<Detection>,
    },
    /// A `block` match: refuse the request / replace the response with an error.
    Block {
        /// The verdict.
        block: Block,
        /// Matches accepted before the block.
        detections: Vec<Detection>,
    },
}

/// Calls `f` with the path and raw range of every string value.
struct Strings<F>(F);

impl<'a, F: FnMut(&[Seg<'a>], Range<usize>)> scan::Visit<'a> for Strings<F> {
    fn value(&mut self, path: &[Seg<'a>], kind: &scan::Kind) {
        if let scan::Kind::Str { raw, .. } = kind {
            (self.0)(path, raw.clone());
        }
    }
}

/// Validate `json` and call `f` with the path and raw byte range (quotes included) of every
/// string value (not keys), in one pass.
pub fn walk_strings<'a>(json: &'a [u8], f: impl FnMut(&[Seg<'a>], Range<usize>)) -> Result<(), JsonError> {
    scan::scan(json, &mut Strings(f)).map_err(|e| JsonError::Malformed(e.to_string()))
}

/// Replace raw ranges (sorted, non-overlapping) with new string values, JSON-encoded.
pub fn splice(json: &[u8], reps: &[(Range<usize>, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut at = 0;
    for (r, s) in reps {
        out.extend_from_slice(json.get(at..r.start).unwrap_or_default());
        out.extend_from_slice(serde_json::to_string(s).unwrap_or_default().as_bytes());
        at = r.end;
    }
    out.extend_from_slice(json.get(at..).unwrap_or_default());
    out
}

fn k<'a>(s: &'a Seg<'_>) -> Option<&'a str> {
    match s {
        Seg::Key(k) => Some(k),
        Seg::Idx(_) => None,
    }
}
fn is_idx(s: &Seg) -> bool {
    matches!(s, Seg::Idx(_))
}

/// Longest path the selectors below look at: every exact pattern is shorter, so a longer path
/// cut to this length can only match the prefix patterns (`..`), which it still does.
const SELECT_DEPTH: usize = 8;

/// The path's keys (`None` for an index), at most [`SELECT_DEPTH`] of them, on the stack: the
/// selectors run for every string of every body, where a `Vec` per string was a measurable cost.
fn keys<'p>(path: &'p [Seg<'_>]) -> ([Option<&'p str>; SELECT_DEPTH], usize) {
    let mut out = [None; SELECT_DEPTH];
    let n = path.len().min(SELECT_DEPTH);
    for (slot, seg) in out.iter_mut().zip(path) {
        *slot = k(seg);
    }
    (out, n)
}

/// Whether a string at `path` is prompt text in a request body.
pub fn is_request_text(path: &[Seg]) -> bool {
    let (ks, n) = keys(path);
    match (ks.get(..n).unwrap_or_default(), path) {
        ([Some("messages"), None, Some("content")], _) => true,
        ([Some("messages"), None, Some("content"), None, Some("text")], _) => true,
        ([Some("messages"), None, Some("content"), None, Some("content")], _) => true,
        ([Some("messages"), None, Some("content"), None, Some("content"), None, Some("text")], _) => true,
        ([Some("messages"), None, Some("tool_calls"), None, Some("function"), Some("arguments")], _) => true,
        ([Some("system")], _) | ([Some("system"), None, Some("text")], _) => true,
        ([Some("instructions")], _) | ([Some("prompt")], _) => true,
        ([Some("prompt"), None], [_, i]) => is_idx(i),
        ([Some("input")], _) => true,
        ([Some("input"), None], [_, i]) => is_idx(i),
        ([Some("input"), None, Some("content")], _) => true,
        ([Some("input"), None, Some("content"), None, Some("text")], _) => true,
        ([Some("input"), None, Some("output")], _) => true,
        _ => false,
    }
}

/// Whether a string at `path` is generated text in a non-streamed response body.
pub fn is_response_text(path: &[Seg]) -> bool {
    let (ks, n) = keys(path);
    matches!(
        ks.get(..n).unwrap_or_default(),
        [Some("choices"), None, Some("message"), Some("content")]
            | [Some("choices"), None, Some("message"), Some("refusal")]
            | [Some("choices"), None, Some("message"), Some("tool_calls"), None, Some("function"), Some("arguments")]
            | [Some("choices"), None, Some("text")]
            | [Some("output"), None, Some("content"), None, Some("text")]
            | [Some("output"), None, Some("arguments")]
            | [Some("output_text")]
            | [Some("content"), None, Some("text")]
            | [Some("content"), None, Some("input"), ..]
    )
}

/// Redact the selected string fields of a JSON body, each as its own text.
pub fn redact_fields(engine: &Arc<Engine>, dir: Direction, body: &[u8], select: impl Fn(&[Seg]) -> bool) -> Result<JsonVerdict, JsonError> {
    let mut ranges = Vec::new();
    walk_strings(body, |p, r| {
        if select(p) {
            ranges.push(r);
        }
    })?;
    let mut reps = Vec::new();
    let mut detections = Vec::new();
    // One redactor for every field of the body, reset between them: setting one up and dropping
    // it per string was a measurable part of a short prompt's cost.
    let mut redactor: Option<StreamRedactor> = None;
    for r in ranges {
        let text = scan::decode(body.get(r.clone()).unwrap_or_default());
        let out = redactor.get_or_insert_with(|| StreamRedactor::new(engine.clone(), dir)).redact_whole(text.as_bytes());
        detections.extend(out.detections);
        if let Some(block) = out.block {
            return Ok(JsonVerdict::Block { block, detections });
        }
        if out.bytes != text.as_bytes() {
            reps.push((r, String::from_utf8_lossy(&out.bytes).into_owned()));
        }
    }
    let changed = !reps.is_empty();
    let body = if changed { splice(body, &reps) } else { body.to_vec() };
    Ok(JsonVerdict::Forward { body, changed, detections })
}

/// Redact the prompt text of a request body (any supported API shape).
pub fn redact_request(engine: &Arc<Engine>, body: &[u8]) -> Result<JsonVerdict, JsonError> {
    redact_fields(engine, Direction::Request, body, is_request_text)
}

/// Redact the generated text of a non-streamed response body.
pub fn redact_response(engine: &Arc<Engine>, body: &[u8]) -> Result<JsonVerdict, JsonError> {
    redact_fields(engine, Direction::Response, body, is_response_text)
}
