//! JSON bodies: find the text fields of the providers' request and response shapes and rewrite
//! them in place.
//!
//! The body is validated with `serde_json` first (malformed JSON is a [`JsonError`]), then a
//! small scanner locates each string value and its path; only the selected strings are replaced
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
use crate::engine::{Block, Detection, Engine};

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

struct Walker<'a, F: FnMut(&[Seg<'a>], Range<usize>)> {
    b: &'a [u8],
    i: usize,
    path: Vec<Seg<'a>>,
    f: F,
}

impl<'a, F: FnMut(&[Seg<'a>], Range<usize>)> Walker<'a, F> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Range<usize> {
        let s = self.i;
        self.i += 1;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        s..self.i.min(self.b.len())
    }

    fn value(&mut self) {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b'}') | None => {
                            self.i += 1;
                            return;
                        }
                        Some(b',') => self.i += 1,
                        Some(b'"') => {
                            let r = self.string();
                            let raw = self.b.get(r.start + 1..r.end.saturating_sub(1).max(r.start + 1)).unwrap_or_default();
                            // The document is valid UTF-8 (checked first): a key without
                            // escapes is borrowed as it is.
                            let key = match std::str::from_utf8(raw) {
                                Ok(k) if !raw.contains(&b'\\') => Cow::Borrowed(k),
                                _ => Cow::Owned(serde_json::from_slice::<String>(self.b.get(r).unwrap_or_default()).unwrap_or_default()),
                            };
                            self.ws();
                            self.i += 1; // ':'
                            self.path.push(Seg::Key(key));
                            self.value();
                            self.path.pop();
                        }
                        Some(_) => self.i += 1,
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut n = 0;
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b']') | None => {
                            self.i += 1;
                            return;
                        }
                        Some(b',') => self.i += 1,
                        Some(_) => {
                            self.path.push(Seg::Idx(n));
                            self.value();
                            self.path.pop();
                            n += 1;
                        }
                    }
                }
            }
            Some(b'"') => {
                let r = self.string();
                (self.f)(&self.path, r);
            }
            Some(_) => {
                while self.b.get(self.i).is_some_and(|c| !matches!(c, b',' | b']' | b'}')) {
                    self.i += 1;
                }
            }
            None => {}
        }
    }
}

/// Accepts any JSON value and checks all of it, strings (escapes, surrogates) included, without
/// building a tree: strings are decoded into serde_json's scratch buffer and dropped.
struct Strict;

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
        while a.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
        while a.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

/// Validate `json` and call `f` with the path and raw byte range (quotes included) of every
/// string value (not keys).
pub fn walk_strings<'a>(json: &'a [u8], f: impl FnMut(&[Seg<'a>], Range<usize>)) -> Result<(), JsonError> {
    if let Err(e) = std::str::from_utf8(json) {
        return Err(JsonError::Malformed(format!("invalid UTF-8 at byte {}", e.valid_up_to())));
    }
    // Strict: skipping with `IgnoredAny` does not decode `\u` escapes, so a lone surrogate in a
    // field nobody reads let a body that is not JSON be forwarded unchanged (found by fuzzing).
    serde_json::from_slice::<Strict>(json).map_err(|e| JsonError::Malformed(e.to_string()))?;
    let mut w = Walker { b: json, i: 0, path: Vec::new(), f };
    w.value();
    Ok(())
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

/// Whether a string at `path` is prompt text in a request body.
pub fn is_request_text(path: &[Seg]) -> bool {
    let ks: Vec<Option<&str>> = path.iter().map(k).collect();
    match (ks.as_slice(), path) {
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
    let ks: Vec<Option<&str>> = path.iter().map(k).collect();
    matches!(
        ks.as_slice(),
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
    for r in ranges {
        let text: String =
            serde_json::from_slice(body.get(r.clone()).unwrap_or_default()).map_err(|e| JsonError::Malformed(e.to_string()))?;
        let out = engine.redact(dir, text.as_bytes());
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
