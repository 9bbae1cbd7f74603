//! The few fields of provider stream events that the SSE redactor reads, parsed straight from
//! the event's bytes without building a JSON tree: a `serde_json::Value` per event (maps, keys,
//! strings allocated and freed) was half of the per-event cost.
//!
//! Leaf fields are lenient (a field of an unexpected type reads as absent or 0, as the tree
//! lookups did); structural fields (`choices` not an array, `delta` not an object) are a parse
//! error, so an event whose shape is not understood goes to the failure action instead of
//! passing unscanned.

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Any JSON value, remembering only whether it was a string and whether that string was empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A string.
    Str {
        /// It was `""`.
        empty: bool,
    },
    /// Anything else.
    Other,
}

impl Probe {
    /// It is a string.
    pub fn is_str(p: &Option<Probe>) -> bool {
        matches!(p, Some(Probe::Str { .. }))
    }

    /// It is a non-empty string.
    pub fn is_nonempty_str(p: &Option<Probe>) -> bool {
        matches!(p, Some(Probe::Str { empty: false }))
    }
}

/// Visits any JSON value and keeps what `F` makes of a string, a `u64` or nothing else.
struct Lenient<'de, T>(fn(Seen<'de>) -> T);

/// What a lenient visitor saw.
enum Seen<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    Other,
}

impl<'de, T> Visitor<'de> for Lenient<'de, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok((self.0)(u64::try_from(v).map_or(Seen::Other, Seen::U64)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok((self.0)(Seen::U64(v)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(Seen::Str(Cow::Owned(v.to_owned()))))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
        Ok((self.0)(Seen::Str(Cow::Borrowed(v))))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok((self.0)(Seen::Other))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<T, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok((self.0)(Seen::Other))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<T, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok((self.0)(Seen::Other))
    }
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The string's length is known without copying it only when it is borrowed; an escaped
        // string is copied once here, which is rare in deltas.
        d.deserialize_any(Lenient(|s| match s {
            Seen::Str(t) => Probe::Str { empty: t.is_empty() },
            _ => Probe::Other,
        }))
    }
}

/// An index field: a non-negative integer, anything else reads as 0 (`null` too), absent is
/// told apart so the caller can default it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Index {
    /// The field is absent.
    #[default]
    Absent,
    /// The field's value (0 if it is not a non-negative integer).
    Is(u64),
}

impl Index {
    /// The value, or `default` when absent.
    pub fn or(self, default: u64) -> u64 {
        match self {
            Index::Absent => default,
            Index::Is(n) => n,
        }
    }
}

impl<'de> Deserialize<'de> for Index {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient(|s| match s {
            Seen::U64(n) => Index::Is(n),
            _ => Index::Is(0),
        }))
    }
}

/// A name field (`type`): its string, or `""` for anything else.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Name<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient(|s| match s {
            Seen::Str(t) => Name(t),
            _ => Name(Cow::Borrowed("")),
        }))
    }
}

/// OpenAI `chat.completion.chunk`.
#[derive(Debug, Deserialize)]
pub struct ChatChunk {
    /// `choices` (absent in some usage-only chunks).
    #[serde(default)]
    pub choices: Option<Vec<ChatChoice>>,
}

/// One choice of a chat chunk.
#[derive(Debug, Deserialize)]
pub struct ChatChoice {
    /// `index`.
    #[serde(default)]
    pub index: Index,
    /// `delta`.
    #[serde(default)]
    pub delta: Option<ChatDelta>,
    /// `finish_reason` (`None` when absent or `null`).
    #[serde(default)]
    pub finish_reason: Option<Probe>,
}

/// A chat delta.
#[derive(Debug, Deserialize)]
pub struct ChatDelta {
    /// `content`.
    #[serde(default)]
    pub content: Option<Probe>,
    /// `tool_calls`.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A streamed tool call.
#[derive(Debug, Deserialize)]
pub struct ToolCall {
    /// `index`.
    #[serde(default)]
    pub index: Index,
    /// `function`.
    #[serde(default)]
    pub function: Option<ToolFunction>,
}

/// A streamed tool call's function.
#[derive(Debug, Deserialize)]
pub struct ToolFunction {
    /// `arguments`.
    #[serde(default)]
    pub arguments: Option<Probe>,
}

/// An OpenAI Responses stream event.
#[derive(Debug, Deserialize)]
pub struct ResponsesEvent<'a> {
    /// `type`.
    #[serde(rename = "type", default, borrow)]
    pub ty: Name<'a>,
    /// `output_index`.
    #[serde(default)]
    pub output_index: Index,
    /// `content_index`.
    #[serde(default)]
    pub content_index: Index,
    /// `item_id`, kept as JSON for synthesized events.
    #[serde(default)]
    pub item_id: Option<serde_json::Value>,
}

/// An Anthropic messages stream event.
#[derive(Debug, Deserialize)]
pub struct AnthropicEvent<'a> {
    /// `type`.
    #[serde(rename = "type", default, borrow)]
    pub ty: Name<'a>,
    /// `index`.
    #[serde(default)]
    pub index: Index,
    /// `content_block` (on `content_block_start`).
    #[serde(default)]
    pub content_block: Option<AnthropicBlock>,
    /// `delta` (on `content_block_delta`).
    #[serde(default, borrow)]
    pub delta: Option<AnthropicDelta<'a>>,
}

/// An Anthropic content block.
#[derive(Debug, Deserialize)]
pub struct AnthropicBlock {
    /// `text`.
    #[serde(default)]
    pub text: Option<Probe>,
}

/// An Anthropic delta.
#[derive(Debug, Deserialize)]
pub struct AnthropicDelta<'a> {
    /// `type`.
    #[serde(rename = "type", default, borrow)]
    pub ty: Name<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_leaves_strict_structure() {
        let c: ChatChunk = serde_json::from_str(
            r#"{"id":"x","choices":[{"index":"7","delta":{"content":"hi","tool_calls":[{"index":2,"function":{"arguments":""}}]},"finish_reason":null},{"delta":{"content":null},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        let ch = c.choices.unwrap();
        assert_eq!(ch[0].index, Index::Is(0), "a string index reads as 0");
        assert_eq!(ch[1].index.or(1), 1, "an absent index takes the default");
        let d = ch[0].delta.as_ref().unwrap();
        assert!(
            Probe::is_str(&d.content) && !Probe::is_nonempty_str(&d.tool_calls.as_ref().unwrap()[0].function.as_ref().unwrap().arguments)
        );
        assert!(ch[0].finish_reason.is_none() && ch[1].finish_reason.is_some());
        assert!(!Probe::is_str(&ch[1].delta.as_ref().unwrap().content));
        // A structure that is not the provider's is an error, not a silent pass.
        assert!(serde_json::from_str::<ChatChunk>(r#"{"choices":{"0":{}}}"#).is_err());
        assert!(serde_json::from_str::<ChatChunk>(r#"{"choices":[{"delta":"text"}]}"#).is_err());
        let a: AnthropicEvent =
            serde_json::from_str(r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a\nb"}}"#).unwrap();
        assert_eq!((a.ty.0.as_ref(), a.index, a.delta.unwrap().ty.0.as_ref()), ("content_block_delta", Index::Is(1), "text_delta"));
        let r: ResponsesEvent = serde_json::from_str(r#"{"type":5,"item_id":"msg_1","output_index":-1}"#).unwrap();
        assert_eq!((r.ty.0.as_ref(), r.output_index, r.content_index), ("", Index::Is(0), Index::Absent));
    }
}
