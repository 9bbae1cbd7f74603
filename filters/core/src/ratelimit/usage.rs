//! Token usage from the wire: the completion bound a request asks for, the usage a model
//! reports in a JSON response or in its stream (OpenAI chat, OpenAI Responses, Anthropic), and
//! an estimate from the streamed text when it reports none.

use super::Usage;
use cordon_redact::json::Seg;
use cordon_redact::json::scan::{self, Kind};
use cordon_redact::{SseFormat, SseObserver};
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

/// The usage object of a JSON response body (OpenAI chat/embeddings/Responses, Anthropic), read
/// in one pass without building the body's tree (responses can be large).
pub fn from_json_response(body: &[u8]) -> Option<Usage> {
    struct TopUsage<'d>(&'d [u8], UsageSeen);
    impl<'a> scan::Visit<'a> for TopUsage<'_> {
        fn value(&mut self, path: &[Seg<'a>], kind: &Kind) {
            if let [Seg::Key(u), Seg::Key(k)] = path
                && u == "usage"
            {
                self.1.take(k, self.0, kind);
            }
        }
    }
    let mut seen = TopUsage(body, UsageSeen::default());
    scan::scan(body, &mut seen).ok()?;
    seen.1.figures().map(|(prompt, completion)| Usage { prompt, completion, reported: true })
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

/// A usage object's figures as read: each in its two vocabularies (OpenAI's name first, which
/// wins when both are given, as it did when read from a tree).
#[derive(Debug, Default)]
struct UsageSeen {
    present: bool,
    prompt: [Option<u64>; 2],
    completion: [Option<u64>; 2],
}

impl UsageSeen {
    fn figures(&self) -> Option<(u64, u64)> {
        let p = self.prompt[0].or(self.prompt[1]);
        let c = self.completion[0].or(self.completion[1]);
        match (p, c) {
            (None, None) => None,
            (p, c) => Some((p.unwrap_or(0), c.unwrap_or(0))),
        }
    }

    fn take(&mut self, key: &str, data: &[u8], kind: &Kind) {
        let slot = match key {
            "prompt_tokens" => &mut self.prompt[0],
            "input_tokens" => &mut self.prompt[1],
            "completion_tokens" => &mut self.completion[0],
            "output_tokens" => &mut self.completion[1],
            _ => return,
        };
        *slot = match kind {
            Kind::Num(r) => data.get(r.clone()).and_then(scan::as_u64),
            _ => None,
        };
    }
}

/// What one event says about usage, gathered in the pass that checks it is JSON (its own, or
/// redaction's in the combined role).
#[derive(Debug)]
pub struct EventFacts<'d> {
    format: SseFormat,
    data: &'d [u8],
    ty: Option<std::ops::Range<usize>>,
    /// Chat: `usage`; Responses: `response.usage`; Anthropic: `message.usage`.
    usage: UsageSeen,
    /// Anthropic: the top-level `usage` of `message_delta`.
    top_usage: UsageSeen,
    empty_choices: bool,
    text_bytes: u64,
    delta_bytes: Option<u64>,
    delta_text: (bool, u64),
    partial_json: u64,
}

impl Default for EventFacts<'_> {
    fn default() -> Self {
        Self {
            format: SseFormat::OpenAiChat,
            data: &[],
            ty: None,
            usage: UsageSeen::default(),
            top_usage: UsageSeen::default(),
            empty_choices: false,
            text_bytes: 0,
            delta_bytes: None,
            delta_text: (false, 0),
            partial_json: 0,
        }
    }
}

/// The decoded length of a string value.
fn text_len(data: &[u8], kind: &Kind) -> Option<u64> {
    match kind {
        Kind::Str { raw, escaped: false } => Some(raw.len().saturating_sub(2) as u64),
        Kind::Str { raw, escaped: true } => Some(scan::decode(data.get(raw.clone()).unwrap_or_default()).len() as u64),
        _ => None,
    }
}

impl<'a> scan::Visit<'a> for EventFacts<'_> {
    fn value(&mut self, path: &[Seg<'a>], kind: &Kind) {
        use Seg::{Idx, Key};
        let key = |s: &Seg, want: &str| matches!(s, Key(k) if k == want);
        match (self.format, path) {
            (_, [Key(k)]) if k == "type" => self.ty = kind_range(kind),
            (SseFormat::OpenAiChat, [u]) if key(u, "usage") => self.usage.present = !matches!(kind, Kind::Null),
            (SseFormat::OpenAiChat, [u, Key(k)]) if key(u, "usage") => self.usage.take(k, self.data, kind),
            (SseFormat::OpenAiChat, [c]) if key(c, "choices") => self.empty_choices = false,
            (SseFormat::OpenAiChat, [c, Idx(_), d, f]) if key(c, "choices") && key(d, "delta") && key(f, "content") => {
                self.text_bytes += text_len(self.data, kind).unwrap_or(0);
            }
            (SseFormat::OpenAiChat, [c, Idx(_), d, t, Idx(_), f, a])
                if key(c, "choices") && key(d, "delta") && key(t, "tool_calls") && key(f, "function") && key(a, "arguments") =>
            {
                self.text_bytes += text_len(self.data, kind).unwrap_or(0);
            }
            (SseFormat::OpenAiResponses, [r, u, Key(k)]) if key(r, "response") && key(u, "usage") => self.usage.take(k, self.data, kind),
            (SseFormat::OpenAiResponses, [d]) if key(d, "delta") => self.delta_bytes = text_len(self.data, kind),
            (SseFormat::Anthropic, [m, u, Key(k)]) if key(m, "message") && key(u, "usage") => self.usage.take(k, self.data, kind),
            (SseFormat::Anthropic, [u, Key(k)]) if key(u, "usage") => self.top_usage.take(k, self.data, kind),
            (SseFormat::Anthropic, [d, t]) if key(d, "delta") && key(t, "text") => {
                self.delta_text = (true, text_len(self.data, kind).unwrap_or(0))
            }
            (SseFormat::Anthropic, [d, t]) if key(d, "delta") && key(t, "partial_json") => {
                self.partial_json = text_len(self.data, kind).unwrap_or(0);
            }
            _ => {}
        }
    }

    fn close(&mut self, path: &[Seg<'a>], raw: std::ops::Range<usize>) {
        // `choices: []` is the usage-only chunk's mark.
        if self.format == SseFormat::OpenAiChat && matches!(path, [Seg::Key(k)] if k == "choices") {
            self.empty_choices = self.data.get(raw.start) == Some(&b'[')
                && self.data.get(raw.start + 1..raw.end.saturating_sub(1)).is_some_and(|t| t.trim_ascii().is_empty());
        }
    }
}

/// What one event says about usage, read before it is applied: the figures it reports (each
/// replacing the one before when given), the text it adds, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    prompt: Option<u64>,
    completion: Option<u64>,
    text_bytes: u64,
    kind: EventKind,
}

impl Reading {
    /// An event that says nothing about usage (no data, not JSON, not of interest).
    pub const NOTHING: Reading = Reading { prompt: None, completion: None, text_bytes: 0, kind: EventKind::Other };
}

/// Reads one event's data in a pass of its own.
fn read_event(format: SseFormat, event: Option<&str>, data: &[u8]) -> Reading {
    let mut seen = EventFacts { format, data, ..EventFacts::default() };
    if scan::scan(data, &mut seen).is_err() {
        return Reading::NOTHING;
    }
    seen.reading(event)
}

impl EventFacts<'_> {
    /// What the event says, once a scan over all of it succeeded.
    fn reading(&self, event: Option<&str>) -> Reading {
        let data = self.data;
        let mut r = Reading::NOTHING;
        let ty = self.ty.as_ref().map(|t| scan::decode(data.get(t.clone()).unwrap_or_default()));
        let ty = ty.as_deref().or(event).unwrap_or_default();
        match self.format {
            SseFormat::OpenAiChat => {
                if let Some((p, c)) = self.usage.figures() {
                    (r.prompt, r.completion) = (Some(p), Some(c));
                }
                if self.text_bytes > 0 {
                    r.text_bytes = self.text_bytes;
                    r.kind = EventKind::Text;
                } else if self.empty_choices && self.usage.present {
                    r.kind = EventKind::UsageOnly;
                }
            }
            SseFormat::OpenAiResponses => {
                if ty == "response.completed" || ty == "response.incomplete" {
                    if let Some((p, c)) = self.usage.figures() {
                        (r.prompt, r.completion) = (Some(p), Some(c));
                    }
                } else if let Some(n) = self.delta_bytes
                    && ty.ends_with(".delta")
                {
                    r.text_bytes = n;
                    r.kind = EventKind::Text;
                }
            }
            SseFormat::Anthropic => match ty {
                "message_start" => (r.prompt, r.completion) = (self.usage.prompt[1], self.usage.completion[1]),
                // Cumulative: the last one is the total.
                "message_delta" => r.completion = self.top_usage.completion[1],
                "content_block_delta" => {
                    // `text` when the delta has one (even if not a string), else `partial_json`.
                    r.text_bytes = if self.delta_text.0 { self.delta_text.1 } else { self.partial_json };
                    if r.text_bytes > 0 {
                        r.kind = EventKind::Text;
                    }
                }
                _ => {}
            },
        }
        r
    }
}

/// One piece of a chunk as the combined role's redaction emitted it, for the limits to read
/// without framing or scanning it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// An event passed byte for byte (`len` bytes), read in redaction's scan.
    Read {
        /// Its length.
        len: usize,
        /// What it says about usage.
        reading: Reading,
    },
    /// Bytes redaction wrote itself (rebuilt or synthesized events), to be framed and read.
    Written(usize),
}

/// Reads usage in the redactor's own pass over a stream (the `cordon.gateway` role): what
/// each event it emits says, as [`StreamUsage::event`] would read it from the emitted bytes.
#[derive(Debug, Clone)]
pub struct SharedReading {
    format: SseFormat,
    pieces: Vec<Piece>,
    /// The pieces describe the last chunk completely (the redactor's push succeeded).
    whole: bool,
}

impl SharedReading {
    /// A reader of a stream of `format`.
    pub fn new(format: SseFormat) -> Self {
        Self { format, pieces: Vec::new(), whole: false }
    }

    /// A new chunk: forget the last one's pieces.
    pub fn begin(&mut self) {
        self.pieces.clear();
        self.whole = false;
    }

    /// The redactor's pass over this chunk succeeded: every byte it emitted is in the pieces.
    pub fn complete(&mut self) {
        self.whole = true;
    }

    /// The last chunk's pieces, when they describe all of it.
    pub fn pieces(&self) -> Option<&[Piece]> {
        self.whole.then_some(self.pieces.as_slice())
    }
}

impl SseObserver for SharedReading {
    type Visitor<'d> = EventFacts<'d>;

    fn visitor<'d>(&self, data: &'d [u8]) -> EventFacts<'d> {
        EventFacts { format: self.format, data, ..EventFacts::default() }
    }

    fn passed<'d>(&mut self, len: usize, event: Option<&str>, data: Option<&'d [u8]>, read: Option<EventFacts<'d>>) {
        let reading = match (read, data) {
            (Some(seen), _) => seen.reading(event),
            // Not scanned by redaction (`[DONE]`): read as the limits' own reader would.
            (None, Some(d)) => read_event(self.format, event, d),
            (None, None) => Reading::NOTHING,
        };
        self.pieces.push(Piece::Read { len, reading });
    }

    fn written(&mut self, len: usize) {
        self.pieces.push(Piece::Written(len));
    }
}

fn kind_range(kind: &Kind) -> Option<std::ops::Range<usize>> {
    match kind {
        Kind::Str { raw, .. } => Some(raw.clone()),
        _ => None,
    }
}

impl StreamUsage {
    /// A tracker for a stream of `format`, estimating with `bytes_per_token`.
    pub fn new(format: SseFormat, bytes_per_token: f64) -> Self {
        Self { format, bytes_per_token: bytes_per_token.max(0.5), text_bytes: 0, prompt: None, completion: None }
    }

    /// Reads one event's `data` (and `event:` name). Malformed data is ignored here: redaction
    /// (or the client) judges the stream's validity. One pass over the event's bytes, no tree:
    /// this runs for every event of every followed stream.
    pub fn event(&mut self, event: Option<&str>, data: &[u8]) -> EventKind {
        self.apply(read_event(self.format, event, data))
    }

    /// Applies what one event was read to say; the event's kind.
    pub fn apply(&mut self, r: Reading) -> EventKind {
        if let Some(p) = r.prompt {
            self.prompt = Some(p);
        }
        if let Some(c) = r.completion {
            self.completion = Some(c);
        }
        self.text_bytes += r.text_bytes;
        r.kind
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
    use proptest::prelude::*;
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

    // The tree readers this module had before its one-pass ones: the reference they must agree with.
    fn field(v: &Value, names: &[&str]) -> Option<u64> {
        names.iter().find_map(|n| v.get(*n).and_then(Value::as_u64))
    }

    fn from_usage_object(u: &Value) -> Option<Usage> {
        let prompt = field(u, &["prompt_tokens", "input_tokens"]);
        let completion = field(u, &["completion_tokens", "output_tokens"]);
        match (prompt, completion) {
            (None, None) => None,
            (p, c) => Some(Usage { prompt: p.unwrap_or(0), completion: c.unwrap_or(0), reported: true }),
        }
    }

    fn from_json_response_by_tree(body: &[u8]) -> Option<Usage> {
        let v: Value = serde_json::from_slice(body).ok()?;
        from_usage_object(v.get("usage")?)
    }

    /// The reader this module had before the one-pass one, kept as the reference it must agree
    /// with: it built a `serde_json::Value` per event.
    fn event_by_tree(this: &mut StreamUsage, event: Option<&str>, data: &[u8]) -> EventKind {
        let Ok(v) = serde_json::from_slice::<Value>(data) else { return EventKind::Other };
        match this.format {
            SseFormat::OpenAiChat => {
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()).and_then(from_usage_object) {
                    this.prompt = Some(u.prompt);
                    this.completion = Some(u.completion);
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
                        this.text_bytes += n as u64;
                        kind = EventKind::Text;
                    }
                }
                kind
            }
            SseFormat::OpenAiResponses => {
                let t = v.get("type").and_then(Value::as_str).or(event).unwrap_or_default();
                if t == "response.completed" || t == "response.incomplete" {
                    if let Some(u) = v.get("response").and_then(|r| r.get("usage")).and_then(from_usage_object) {
                        this.prompt = Some(u.prompt);
                        this.completion = Some(u.completion);
                    }
                    return EventKind::Other;
                }
                if t.ends_with(".delta")
                    && let Some(d) = v.get("delta").and_then(Value::as_str)
                {
                    this.text_bytes += d.len() as u64;
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
                            this.prompt = Some(p);
                        }
                        if let Some(c) = u.and_then(|u| field(u, &["output_tokens"])) {
                            this.completion = Some(c);
                        }
                        EventKind::Other
                    }
                    // Cumulative: the last one is the total.
                    "message_delta" => {
                        if let Some(c) = v.get("usage").and_then(|u| field(u, &["output_tokens"])) {
                            this.completion = Some(c);
                        }
                        EventKind::Other
                    }
                    "content_block_delta" => {
                        let d = v.get("delta");
                        let n = d.and_then(|d| d.get("text").or_else(|| d.get("partial_json"))).and_then(Value::as_str).map_or(0, str::len);
                        this.text_bytes += n as u64;
                        if n > 0 { EventKind::Text } else { EventKind::Other }
                    }
                    _ => EventKind::Other,
                }
            }
        }
    }

    fn state(u: &StreamUsage) -> (Option<u64>, Option<u64>, u64) {
        (u.prompt, u.completion, u.text_bytes)
    }

    fn leaf() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!(null)),
            Just(json!(7)),
            Just(json!(-0)),
            Just(json!(-3)),
            Just(json!(2.5)),
            Just(json!(18446744073709551615u64)),
            Just(json!("12")),
            Just(json!("")),
            Just(json!("héllo \"q\" \n")),
            Just(json!([])),
            Just(json!({})),
            Just(json!(true)),
        ]
    }

    fn usage_obj() -> impl Strategy<Value = serde_json::Value> {
        prop::collection::vec(
            (prop::sample::select(&["prompt_tokens", "input_tokens", "completion_tokens", "output_tokens", "total_tokens"][..]), leaf()),
            0..4,
        )
        .prop_map(|kv| serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    fn maybe<T: std::fmt::Debug + Clone + 'static>(s: impl Strategy<Value = T> + 'static) -> impl Strategy<Value = Option<T>> {
        prop_oneof![Just(None), s.prop_map(Some)]
    }

    fn event_value(format: SseFormat) -> BoxedStrategy<serde_json::Value> {
        let text = prop_oneof![leaf(), Just(json!("some text")), Just(json!("é\t"))];
        match format {
            SseFormat::OpenAiChat => {
                let tool = maybe(text.clone()).prop_map(|a| json!({"index": 0, "function": {"arguments": a}}));
                let choice = (maybe(text.clone()), prop::collection::vec(tool, 0..3), maybe(leaf()))
                    .prop_map(|(c, t, d)| json!({"index": 0, "delta": {"content": c, "tool_calls": t}, "odd": d}));
                let choices = prop_oneof![
                    Just(json!(null)),
                    Just(json!([])),
                    Just(json!({})),
                    prop::collection::vec(choice, 0..3).prop_map(|c| json!(c))
                ];
                (maybe(choices), maybe(prop_oneof![usage_obj(), leaf()]))
                    .prop_map(|(c, u)| {
                        let mut m = serde_json::Map::new();
                        if let Some(c) = c {
                            m.insert("choices".into(), c);
                        }
                        if let Some(u) = u {
                            m.insert("usage".into(), u);
                        }
                        serde_json::Value::Object(m)
                    })
                    .boxed()
            }
            SseFormat::OpenAiResponses => (
                prop::sample::select(
                    &[
                        "response.output_text.delta",
                        "response.function_call_arguments.delta",
                        "response.completed",
                        "response.incomplete",
                        "x",
                    ][..],
                ),
                maybe(text),
                maybe(usage_obj()),
                any::<bool>(),
            )
                .prop_map(|(t, d, u, typed)| {
                    let mut v = json!({"delta": d, "response": {"usage": u}});
                    if typed {
                        v["type"] = json!(t);
                    }
                    v
                })
                .boxed(),
            SseFormat::Anthropic => (
                prop::sample::select(&["message_start", "message_delta", "content_block_delta", "ping"][..]),
                maybe(text.clone()),
                maybe(text),
                maybe(usage_obj()),
                maybe(usage_obj()),
            )
                .prop_map(|(t, a, b, mu, u)| {
                    let mut delta = serde_json::Map::new();
                    if let Some(a) = a {
                        delta.insert("text".into(), a);
                    }
                    if let Some(b) = b {
                        delta.insert("partial_json".into(), b);
                    }
                    json!({"type": t, "delta": delta, "message": {"usage": mu}, "usage": u})
                })
                .boxed(),
        }
    }

    fn events() -> impl Strategy<Value = (SseFormat, Vec<(bool, String)>)> {
        prop::sample::select(&[SseFormat::OpenAiChat, SseFormat::OpenAiResponses, SseFormat::Anthropic][..]).prop_flat_map(|f| {
            let one = (event_value(f), any::<bool>(), 0..3u8).prop_map(|(v, pretty, broken)| {
                let s = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
                // Now and then not JSON at all: both readers must ignore it.
                (pretty, if broken == 0 { String::from_utf8_lossy(&s.as_bytes()[..s.len() / 2]).into_owned() } else { s })
            });
            (Just(f), prop::collection::vec(one, 1..6))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The same for non-streamed response bodies.
        #[test]
        fn json_usage_agrees_with_the_tree(u in maybe(prop_oneof![usage_obj(), leaf()]), pretty in any::<bool>(), cut in any::<bool>()) {
            let v = json!({"id": "x", "choices": [{"message": {"content": "hi"}}], "usage": u});
            let s = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
            let body = if cut { &s.as_bytes()[..s.len() - 1] } else { s.as_bytes() };
            prop_assert_eq!(from_json_response(body), from_json_response_by_tree(body), "{}", s);
        }

        /// The one-pass reader agrees with the tree reader on every event: the same kind, the
        /// same reported usage, the same text counted.
        #[test]
        fn one_pass_agrees_with_the_tree(case in events(), named in any::<bool>()) {
            let (format, evs) = case;
            let (mut a, mut b) = (StreamUsage::new(format, 4.0), StreamUsage::new(format, 4.0));
            let name = named.then_some("response.output_text.delta");
            for (_, e) in &evs {
                let ka = a.event(name, e.as_bytes());
                let kb = event_by_tree(&mut b, name, e.as_bytes());
                prop_assert_eq!(ka, kb, "{}", e);
                prop_assert_eq!(state(&a), state(&b), "{}", e);
            }
        }
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
