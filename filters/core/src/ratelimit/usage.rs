//! Token usage from the wire: the completion bound a request asks for, the usage a model
//! reports in a JSON response or in its stream (OpenAI chat, OpenAI Responses, Anthropic), and
//! an estimate from the streamed text when it reports none.

use super::Usage;
use cordon_redact::SseFormat;
use serde::Deserialize;
use serde_json::Value;

/// Largest completion bound taken from a request: beyond it the number is nonsense, and the
/// reservation would only overflow.
pub const MAX_COMPLETION_BOUND: u64 = 1 << 32;

#[derive(Deserialize)]
struct Bounds {
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<Value>,
}

/// The completion bound of a request (`max_tokens`, `max_completion_tokens` or
/// `max_output_tokens`), if it sets a non-negative integer one; absurd values are capped at
/// [`MAX_COMPLETION_BOUND`]. A negative or non-integer bound is ignored (the provider refuses it).
pub fn max_output_tokens(body: &[u8]) -> Option<u64> {
    let b: Bounds = serde_json::from_slice(body).ok()?;
    [b.max_completion_tokens, b.max_tokens, b.max_output_tokens]
        .into_iter()
        .flatten()
        .find_map(|v| v.as_u64())
        .map(|n| n.min(MAX_COMPLETION_BOUND))
}

/// Whether a chat request asked for a usage chunk at the end of its stream.
pub fn asks_for_stream_usage(body: &Value) -> bool {
    body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false)
}

fn field(v: &Value, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| v.get(*n).and_then(Value::as_u64))
}

/// The usage object of a JSON response body (OpenAI chat/embeddings/Responses, Anthropic).
pub fn from_json_response(body: &[u8]) -> Option<Usage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    from_usage_object(v.get("usage")?)
}

fn from_usage_object(u: &Value) -> Option<Usage> {
    let prompt = field(u, &["prompt_tokens", "input_tokens"]);
    let completion = field(u, &["completion_tokens", "output_tokens"]);
    match (prompt, completion) {
        (None, None) => None,
        (p, c) => Some(Usage { prompt: p.unwrap_or(0), completion: c.unwrap_or(0), reported: true }),
    }
}

/// Follows one response stream: the usage the model reports, and the text it streamed (to
/// estimate usage when none is reported, and to know when a budget runs out mid-stream).
#[derive(Debug, Clone)]
pub struct StreamUsage {
    format: SseFormat,
    bytes_per_token: f64,
    text_bytes: u64,
    prompt: Option<u64>,
    completion: Option<u64>,
}

/// What one event was, for the caller's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Carries generated text (or tool-call arguments).
    Text,
    /// OpenAI chat's trailing usage chunk (`choices` empty, `usage` set).
    UsageOnly,
    /// Anything else (start, stop, ping, metadata).
    Other,
}

impl StreamUsage {
    /// A tracker for a stream of `format`, estimating with `bytes_per_token`.
    pub fn new(format: SseFormat, bytes_per_token: f64) -> Self {
        Self { format, bytes_per_token: bytes_per_token.max(0.5), text_bytes: 0, prompt: None, completion: None }
    }

    /// Reads one event's `data` (and `event:` name). Malformed data is ignored here: redaction
    /// (or the client) judges the stream's validity.
    pub fn event(&mut self, event: Option<&str>, data: &[u8]) -> EventKind {
        let Ok(v) = serde_json::from_slice::<Value>(data) else { return EventKind::Other };
        match self.format {
            SseFormat::OpenAiChat => {
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()).and_then(from_usage_object) {
                    self.prompt = Some(u.prompt);
                    self.completion = Some(u.completion);
                }
                let choices = v.get("choices").and_then(Value::as_array);
                let mut kind = if choices.is_some_and(|c| c.is_empty()) && v.get("usage").is_some_and(|u| !u.is_null()) {
                    EventKind::UsageOnly
                } else {
                    EventKind::Other
                };
                for c in choices.into_iter().flatten() {
                    let Some(delta) = c.get("delta") else { continue };
                    let mut n = delta.get("content").and_then(Value::as_str).map_or(0, str::len);
                    for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                        n += call.get("function").and_then(|f| f.get("arguments")).and_then(Value::as_str).map_or(0, str::len);
                    }
                    if n > 0 {
                        self.text_bytes += n as u64;
                        kind = EventKind::Text;
                    }
                }
                kind
            }
            SseFormat::OpenAiResponses => {
                let t = v.get("type").and_then(Value::as_str).or(event).unwrap_or_default();
                if t == "response.completed" || t == "response.incomplete" {
                    if let Some(u) = v.get("response").and_then(|r| r.get("usage")).and_then(from_usage_object) {
                        self.prompt = Some(u.prompt);
                        self.completion = Some(u.completion);
                    }
                    return EventKind::Other;
                }
                if t.ends_with(".delta")
                    && let Some(d) = v.get("delta").and_then(Value::as_str)
                {
                    self.text_bytes += d.len() as u64;
                    return EventKind::Text;
                }
                EventKind::Other
            }
            SseFormat::Anthropic => {
                let t = v.get("type").and_then(Value::as_str).or(event).unwrap_or_default();
                match t {
                    "message_start" => {
                        let u = v.get("message").and_then(|m| m.get("usage"));
                        if let Some(p) = u.and_then(|u| field(u, &["input_tokens"])) {
                            self.prompt = Some(p);
                        }
                        if let Some(c) = u.and_then(|u| field(u, &["output_tokens"])) {
                            self.completion = Some(c);
                        }
                        EventKind::Other
                    }
                    // Cumulative: the last one is the total.
                    "message_delta" => {
                        if let Some(c) = v.get("usage").and_then(|u| field(u, &["output_tokens"])) {
                            self.completion = Some(c);
                        }
                        EventKind::Other
                    }
                    "content_block_delta" => {
                        let d = v.get("delta");
                        let n = d.and_then(|d| d.get("text").or_else(|| d.get("partial_json"))).and_then(Value::as_str).map_or(0, str::len);
                        self.text_bytes += n as u64;
                        if n > 0 { EventKind::Text } else { EventKind::Other }
                    }
                    _ => EventKind::Other,
                }
            }
        }
    }

    /// Completion tokens so far: reported if the model said, else estimated from the text.
    pub fn completion_so_far(&self) -> u64 {
        self.completion.unwrap_or_else(|| self.estimated_completion())
    }

    fn estimated_completion(&self) -> u64 {
        (self.text_bytes as f64 / self.bytes_per_token).ceil() as u64
    }

    /// The usage of the whole stream: reported when the model reported both figures; otherwise
    /// the reported parts and an estimate for the rest, marked as estimated.
    pub fn usage(&self, estimated_prompt: u64) -> Usage {
        Usage {
            prompt: self.prompt.unwrap_or(estimated_prompt),
            completion: self.completion.unwrap_or_else(|| self.estimated_completion()),
            reported: self.prompt.is_some() && self.completion.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn completion_bounds_absurd_negative_and_missing() {
        assert_eq!(max_output_tokens(br#"{"max_tokens": 256}"#), Some(256));
        assert_eq!(max_output_tokens(br#"{"max_completion_tokens": 64, "max_tokens": 256}"#), Some(64));
        assert_eq!(max_output_tokens(br#"{"max_output_tokens": 9}"#), Some(9));
        assert_eq!(max_output_tokens(br#"{"max_tokens": 1e300}"#), None, "not an integer");
        assert_eq!(max_output_tokens(br#"{"max_tokens": 18446744073709551615}"#), Some(MAX_COMPLETION_BOUND));
        assert_eq!(max_output_tokens(br#"{"max_tokens": -5}"#), None);
        assert_eq!(max_output_tokens(br#"{"max_tokens": "12"}"#), None);
        assert_eq!(max_output_tokens(br#"{}"#), None);
        assert_eq!(max_output_tokens(b"not json"), None);
    }

    #[test]
    fn json_usage_in_both_vocabularies() {
        let openai = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}}).to_string();
        assert_eq!(from_json_response(openai.as_bytes()), Some(Usage { prompt: 12, completion: 30, reported: true }));
        let anthropic = json!({"usage": {"input_tokens": 5, "output_tokens": 7}}).to_string();
        assert_eq!(from_json_response(anthropic.as_bytes()), Some(Usage { prompt: 5, completion: 7, reported: true }));
        assert_eq!(from_json_response(br#"{"usage": {"total_tokens": "lots"}}"#), None, "lying fields are not usage");
        assert_eq!(from_json_response(br#"{"choices": []}"#), None);
    }

    fn ev(u: &mut StreamUsage, event: Option<&str>, v: serde_json::Value) -> EventKind {
        u.event(event, v.to_string().as_bytes())
    }

    #[test]
    fn openai_chat_stream_usage_chunk_and_estimate() {
        let mut u = StreamUsage::new(SseFormat::OpenAiChat, 4.0);
        assert_eq!(ev(&mut u, None, json!({"choices": [{"index": 0, "delta": {"content": "Hello world!"}}]})), EventKind::Text);
        assert_eq!(u.completion_so_far(), 3, "12 bytes at 4 bytes per token");
        assert_eq!(ev(&mut u, None, json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})), EventKind::UsageOnly);
        assert_eq!(u.usage(100), Usage { prompt: 9, completion: 2, reported: true });
        // No usage chunk (the client did not ask, the stream broke): estimated and marked so.
        let mut u = StreamUsage::new(SseFormat::OpenAiChat, 4.0);
        ev(&mut u, None, json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{\"a\":1}"}}]}}]}));
        assert_eq!(u.usage(50), Usage { prompt: 50, completion: 2, reported: false });
        assert_eq!(u.event(None, b"[DONE]"), EventKind::Other);
    }

    #[test]
    fn responses_stream_usage_from_completed() {
        let mut u = StreamUsage::new(SseFormat::OpenAiResponses, 4.0);
        ev(&mut u, Some("response.output_text.delta"), json!({"type": "response.output_text.delta", "delta": "abcdefgh"}));
        assert_eq!(u.completion_so_far(), 2);
        ev(&mut u, None, json!({"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 3}}}));
        assert_eq!(u.usage(0), Usage { prompt: 4, completion: 3, reported: true });
    }

    #[test]
    fn anthropic_usage_is_cumulative() {
        let mut u = StreamUsage::new(SseFormat::Anthropic, 4.0);
        ev(&mut u, None, json!({"type": "message_start", "message": {"usage": {"input_tokens": 11, "output_tokens": 1}}}));
        ev(&mut u, None, json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hey there"}}));
        ev(&mut u, None, json!({"type": "message_delta", "usage": {"output_tokens": 8}}));
        ev(&mut u, None, json!({"type": "message_delta", "usage": {"output_tokens": 15}}));
        assert_eq!(u.usage(0), Usage { prompt: 11, completion: 15, reported: true });
        // Lying fields (a string count) are ignored, not trusted.
        ev(&mut u, None, json!({"type": "message_delta", "usage": {"output_tokens": "999"}}));
        assert_eq!(u.usage(0).completion, 15);
    }
}
