//! Reading the requested model from a JSON request body, within a size limit.

use crate::refusal::Refusal;
use serde::Deserialize;

#[derive(Deserialize)]
struct ModelField {
    #[serde(default)]
    model: Option<serde_json::Value>,
}

/// Refuses with 413 when a body of `len` bytes exceeds `limit`.
pub fn check_size(len: u64, limit: u64) -> Result<(), Refusal> {
    if len > limit { Err(Refusal::BodyTooLarge { limit }) } else { Ok(()) }
}

/// The `model` of a JSON request body: 400 for invalid UTF-8, malformed JSON, a non-object body,
/// or a missing or non-string model. Fields other than `model` are skipped while validated, so a
/// large prompt costs one validation pass, not a tree of allocations.
pub fn model_of(body: &[u8]) -> Result<String, Refusal> {
    let text = std::str::from_utf8(body).map_err(|e| Refusal::InvalidJson(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(Refusal::MissingModel);
    }
    if !trimmed.starts_with('{') {
        return Err(Refusal::InvalidJson("the body must be a JSON object".into()));
    }
    let parsed: ModelField =
        serde_json::from_str(text).map_err(|e| Refusal::InvalidJson(format!("line {} column {}", e.line(), e.column())))?;
    match parsed.model {
        Some(serde_json::Value::String(model)) if !model.is_empty() => Ok(model),
        _ => Err(Refusal::MissingModel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_model() {
        assert_eq!(model_of(br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#).unwrap(), "gpt-4o");
        assert_eq!(model_of(br#"{"messages":[],"model":"gpt-4\u006f"}"#).unwrap(), "gpt-4o", "escapes are decoded");
    }

    #[test]
    fn malformed_missing_and_wrong_types() {
        assert_eq!(model_of(b"").unwrap_err(), Refusal::MissingModel);
        assert_eq!(model_of(br#"{"messages":[]}"#).unwrap_err(), Refusal::MissingModel);
        assert_eq!(model_of(br#"{"model":42}"#).unwrap_err(), Refusal::MissingModel);
        assert_eq!(model_of(br#"{"model":""}"#).unwrap_err(), Refusal::MissingModel);
        assert_eq!(model_of(br#"{"model":"gpt-4o","#).unwrap_err().code(), "invalid_json");
        assert_eq!(model_of(b"[1,2]").unwrap_err().code(), "invalid_json");
        assert_eq!(model_of(b"{\"model\":\"gpt\xff\"}").unwrap_err().code(), "invalid_json");
        assert_eq!(model_of(br#"{"model":"a"} trailing"#).unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn size_limit() {
        assert!(check_size(10, 10).is_ok());
        assert_eq!(check_size(11, 10), Err(Refusal::BodyTooLarge { limit: 10 }));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = model_of(&bytes);
        }

        #[test]
        fn finds_any_model_name(model in "[a-zA-Z0-9._:/-]{1,40}", prompt in ".{0,40}") {
            let body = serde_json::json!({"messages":[{"role":"user","content":prompt}],"model":model});
            prop_assert_eq!(model_of(&serde_json::to_vec(&body).unwrap()).unwrap(), model);
        }
    }
}
