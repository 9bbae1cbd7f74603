use super::*;

/// The plan alone (no second visitor).
fn read(format: SseFormat, data: &[u8]) -> Result<Facts, String> {
    super::read(format, data, &mut ())
}

fn chat(doc: &str) -> Result<Facts, String> {
    read(SseFormat::OpenAiChat, doc.as_bytes())
}

fn text<'d>(doc: &'d str, r: &Option<Range<usize>>) -> &'d str {
    r.as_ref().map_or("<none>", |r| &doc[r.clone()])
}

#[test]
fn chat_leaves_are_lenient() {
    let doc = r#"{"id":"x","choices":[{"index":"7","delta":{"content":"hi","tool_calls":[{"index":2,"function":{"arguments":""}}]},"finish_reason":null},{"delta":{"content":null},"finish_reason":"stop"},{"index":-3,"delta":null},{"index":1.0}]}"#;
    let f = chat(doc).unwrap();
    assert!(f.has_choices);
    let c = &f.choices;
    assert_eq!(c.len(), 4);
    assert_eq!(c[0].index, Index::Is(0), "a string index reads as 0");
    assert_eq!(c[1].index.or(1), 1, "an absent index takes the default");
    assert_eq!((c[2].index, c[3].index), (Index::Is(0), Index::Is(0)), "negative and fractional indices read as 0");
    assert_eq!(text(doc, &c[0].content), r#""hi""#);
    assert_eq!((c[0].tools[0].index, text(doc, &c[0].tools[0].args)), (Index::Is(2), r#""""#));
    assert!(!c[0].finish && c[1].finish);
    assert!(c[1].content.is_none(), "a null content feeds nothing");
    assert!(!chat(r#"{"choices":null}"#).unwrap().has_choices);
}

#[test]
fn structure_that_is_not_the_providers_is_an_error() {
    for doc in [
        r#"[]"#,
        r#""text""#,
        r#"{"choices":{"0":{}}}"#,
        r#"{"choices":[{"delta":"text"}]}"#,
        r#"{"choices":[null]}"#,
        r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"function":"f"}]}}]}"#,
        // A field the redactor reads, given twice: which one would the app's parser take?
        r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        r#"{"choices":[],"choices":[]}"#,
        r#"{"choices":[{"index":0,"index":1}]}"#,
    ] {
        assert!(chat(doc).is_err(), "{doc}");
    }
    assert!(read(SseFormat::Anthropic, br#"{"type":"content_block_delta","delta":"x"}"#).is_err());
    assert!(read(SseFormat::Anthropic, br#"{"type":"a","type":"b"}"#).is_err());
    assert!(read(SseFormat::OpenAiResponses, br#"{"type":"a","type":"b"}"#).is_err());
    // Not JSON at all: the scanner's message, with the byte.
    assert_eq!(chat(r#"{"choices":[}"#).unwrap_err(), "expected a value at byte 12");
}

#[test]
fn responses_and_anthropic_fields() {
    let doc = r#"{"type":"response.output_text.delta","item_id":{"a":[1]},"output_index":3,"delta":"x","delta":"y","part":{"text":"p"}}"#;
    let f = read(SseFormat::OpenAiResponses, doc.as_bytes()).unwrap();
    assert_eq!(text(doc, &f.ty), r#""response.output_text.delta""#);
    assert_eq!((f.index, f.content_index), (Index::Is(3), Index::Absent));
    assert_eq!(text(doc, &f.item_id), r#"{"a":[1]}"#);
    assert_eq!(f.delta.len(), 2, "a repeated text field is redacted in every copy");
    assert_eq!(f.full_texts.len(), 1);
    let f = read(SseFormat::OpenAiResponses, br#"{"type":5,"item_id":null,"output_index":-1}"#).unwrap();
    assert!(f.item_id.is_none());
    assert_eq!(f.index, Index::Is(0));
    let doc = r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a\nb"}}"#;
    let f = read(SseFormat::Anthropic, doc.as_bytes()).unwrap();
    assert_eq!((text(doc, &f.ty), f.index, text(doc, &f.delta_ty)), (r#""content_block_delta""#, Index::Is(1), r#""text_delta""#));
    assert_eq!(&doc[f.delta[0].clone()], r#""a\nb""#);
}

#[test]
fn repeat_reads_the_same_facts_around_another_string() {
    let (a, b) = (
        r#"{"choices":[{"index":3,"delta":{"content":"one"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":3,"delta":{"content":"three"},"finish_reason":null}]}"#,
    );
    let mut facts = Facts::default();
    read_into(SseFormat::OpenAiChat, a.as_bytes(), &mut (), &mut facts).unwrap();
    let mut repeat = Repeat::default();
    repeat.remember(a.as_bytes(), &mut facts);
    let var = b.find("\"three\"").unwrap();
    assert_eq!(repeat.reread(b.as_bytes(), &mut facts), Some((b.as_bytes(), var..var + 7, "\"three\"")));
    let full = chat(b).unwrap();
    assert_eq!((text(b, &facts.choices[0].content), facts.choices[0].index), (text(b, &full.choices[0].content), Index::Is(3)));
    assert_eq!(
        repeat.reread(br#"{"choices":[{"index":3,"delta":{"content":"x"},"finish_reason":"stop"}]}"#, &mut facts),
        None,
        "other bytes after the string"
    );
    assert_eq!(
        repeat.reread(br#"{"choices":[{"index":3,"delta":{"content":"x" ,"y":"z"},"finish_reason":null}]}"#, &mut facts),
        None,
        "more than one string"
    );
}

#[test]
fn repeat_is_not_armed_when_a_range_lies_around_the_last_one() {
    // No provider event gives facts like these (their ranges are values at distinct paths, none
    // inside another), but a later format could: the guard keeps the repeat path sound then.
    let data = br#"{"item_id":{"x":"ab"}}"#;
    let mut facts = Facts { item_id: Some(11..21), delta: std::iter::once(16..20).collect(), ..Facts::default() };
    let mut repeat = Repeat::default();
    repeat.remember(data, &mut facts);
    assert_eq!(repeat.reread(br#"{"item_id":{"x":"abcd"}}"#, &mut facts), None);
    // Nor when two facts hold the last range (only one would be moved).
    let data = br#"{"delta":"ab"}"#;
    let mut facts = Facts { delta: std::iter::once(9..13).collect(), text: std::iter::once(9..13).collect(), ..Facts::default() };
    repeat.remember(data, &mut facts);
    assert_eq!(repeat.reread(br#"{"delta":"abcd"}"#, &mut facts), None);
}
