//! Every path of the redaction session, natively: what a request or response does under each
//! content type, encoding, size and `on_unscannable` setting.

use super::*;
use crate::policy::Policy;
use serde_json::json;

fn policy(redaction: serde_json::Value, limits: serde_json::Value) -> CompiledPolicy {
    let mut doc = json!({"redaction": redaction});
    if !limits.is_null() {
        doc["limits"] = limits;
    }
    let p = Policy::from_json(doc.to_string().as_bytes()).unwrap();
    CompiledPolicy::compile(&p, &|_: &str| None).unwrap()
}

fn blocking() -> CompiledPolicy {
    policy(json!({}), serde_json::Value::Null)
}

fn passing() -> CompiledPolicy {
    policy(json!({"on_unscannable": "pass"}), serde_json::Value::Null)
}

fn post(path: &str) -> Head<'_> {
    Head { method: "POST", path, content_encoding: None, end_of_stream: false }
}

fn start(p: &CompiledPolicy, head: &Head<'_>) -> (Session, HeadStep) {
    Session::start(Some(p), head).unwrap()
}

fn chat_body(text: &str) -> Vec<u8> {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).to_string().into_bytes()
}

fn sse(text: &str) -> Vec<u8> {
    format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": text}}]})).into_bytes()
}

fn sse_head() -> ResponseHead<'static> {
    ResponseHead { content_type: Some("text/event-stream; charset=utf-8"), content_encoding: None, end_of_stream: false }
}

fn json_head() -> ResponseHead<'static> {
    ResponseHead { content_type: Some("application/json"), content_encoding: None, end_of_stream: false }
}

fn text(step: &BodyStep) -> String {
    match step {
        BodyStep::Replace(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("expected Replace, got {other:?}"),
    }
}

fn events(s: &mut Session) -> Vec<Event> {
    s.drain_events().collect()
}

#[test]
fn no_policy_or_no_pseudonym_key_refuses_with_503() {
    let head = post("/v1/chat/completions");
    assert_eq!(Session::start(None, &head).err(), Some(Refusal::PolicyUnavailable));
    let p = policy(
        json!({"rules": {"detectors": {"email": {"request": "pseudonymize"}}}, "pseudonym_secret_env": "K"}),
        serde_json::Value::Null,
    );
    assert_eq!(Session::start(Some(&p), &head).err(), Some(Refusal::RedactionUnavailable));
}

#[test]
fn requests_without_a_body_are_not_held() {
    let p = blocking();
    for head in [
        Head { method: "GET", path: "/v1/models", content_encoding: None, end_of_stream: true },
        Head { method: "POST", path: "/v1/chat/completions", content_encoding: None, end_of_stream: true },
        Head { method: "DELETE", path: "/v1/files/x", content_encoding: None, end_of_stream: false },
    ] {
        let (mut s, step) = start(&p, &head);
        assert_eq!(step, HeadStep::Continue);
        assert_eq!(s.request_body(10, true, || panic!("a body not governed is never read")), BodyStep::Continue);
    }
}

#[test]
fn a_prompt_is_held_then_redacted_with_valid_json() {
    let p = blocking();
    let (mut s, step) = start(&p, &post("/v1/chat/completions"));
    assert_eq!(step, HeadStep::Hold, "nothing reaches the upstream before the prompt is scanned");
    let body = chat_body("mail me at john.doe@example.com please");
    assert_eq!(s.request_body(10, false, || panic!("read only at the end")), BodyStep::Hold);
    let out = text(&s.request_body(body.len(), true, || body.clone()));
    assert!(!out.contains("john.doe@example.com"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["messages"][0]["content"].as_str().unwrap().contains("[EMAIL]"));
    assert_eq!(events(&mut s), vec![Event::Detected { direction: Direction::Request, detector: "email".into(), action: "redact" }]);
    assert_eq!(s.outcomes().get(&(Direction::Request, Arc::from("email"), "redact")), Some(&1));
    assert!(s.failed_open().is_empty());
}

#[test]
fn a_clean_prompt_passes_unchanged() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let body = chat_body("hello");
    assert_eq!(s.request_body(body.len(), true, || body.clone()), BodyStep::Continue);
    assert!(events(&mut s).is_empty());
}

#[test]
fn an_oversized_prompt_is_refused_while_buffering() {
    let p = policy(json!({}), json!({"max_request_body_bytes": 100}));
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    assert_eq!(s.request_body(101, false, Vec::new), BodyStep::Refuse(Refusal::BodyTooLarge { limit: 100 }));
}

#[test]
fn a_block_rule_refuses_the_request() {
    let p = policy(json!({"rules": {"detectors": {"email": {"request": "block"}}}}), serde_json::Value::Null);
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let body = chat_body("john.doe@example.com");
    assert_eq!(
        s.request_body(body.len(), true, || body.clone()),
        BodyStep::Refuse(Refusal::SensitiveDataBlocked { detector: "email".into() })
    );
}

#[test]
fn malformed_or_compressed_requests_are_refused_by_default() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let step = s.request_body(5, true, || b"{\"mo".to_vec());
    assert!(matches!(step, BodyStep::Refuse(Refusal::UnscannableRequest(_))), "{step:?}");

    let gz = Head { content_encoding: Some("gzip"), ..post("/v1/chat/completions") };
    let (s, step) = start(&p, &gz);
    assert_eq!(step, HeadStep::Refuse(Refusal::UnscannableRequest("the body is compressed".into())));
    assert!(s.failed_open().is_empty());
}

#[test]
fn on_unscannable_pass_forwards_unscanned_counts_it_and_marks_the_request_failed_open() {
    let p = passing();
    // A malformed body is forwarded as it is (Continue: the adapter leaves the bytes alone).
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let broken = b"{\"messages\": [\"john.doe@example.com\"".to_vec();
    assert_eq!(s.request_body(broken.len(), true, || broken.clone()), BodyStep::Continue);
    assert_eq!(s.failed_open().len(), 1);
    assert_eq!(s.failed_open()[0].direction, Direction::Request);
    assert!(matches!(&events(&mut s)[..], [Event::PassedUnscanned(FailOpen { direction: Direction::Request, .. })]));

    // A compressed request goes on without being held.
    let gz = Head { content_encoding: Some("br"), ..post("/v1/chat/completions") };
    let (mut s, step) = start(&p, &gz);
    assert_eq!(step, HeadStep::Continue);
    assert_eq!(s.request_body(10, true, || panic!("not read")), BodyStep::Continue);
    assert_eq!(s.failed_open(), &[FailOpen { direction: Direction::Request, why: "the body is compressed".into() }]);

    // A broken stream: what was scanned went out, the rest flows raw, and it is on record.
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    assert_eq!(s.response_head(&sse_head()), HeadStep::ContinueUnsized);
    let ok = sse("hi ");
    assert!(matches!(s.response_body(ok.len(), false, |b| b.extend_from_slice(&ok)), BodyStep::Continue | BodyStep::Replace(_)));
    let bad = b"data: {not json}\n\n".to_vec();
    assert_eq!(s.response_body(bad.len(), false, |b| b.extend_from_slice(&bad)), BodyStep::Continue);
    let later = sse("more");
    assert_eq!(s.response_body(later.len(), true, |_| panic!("raw from here on")), BodyStep::Continue);
    assert_eq!(s.failed_open().len(), 1);
    assert_eq!(s.failed_open()[0].direction, Direction::Response);

    // A malformed JSON response passes unscanned too.
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    assert_eq!(s.response_head(&json_head()), HeadStep::HoldUnsized);
    assert_eq!(s.response_body(3, true, |b| b.extend_from_slice(b"{no")), BodyStep::Continue);
    assert_eq!(s.failed_open().len(), 1);
}

#[test]
fn only_sse_and_json_responses_are_scanned() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let plain = ResponseHead { content_type: Some("text/plain"), content_encoding: None, end_of_stream: false };
    assert_eq!(s.response_head(&plain), HeadStep::Continue);
    assert_eq!(s.response_body(10, true, |_| panic!("not read")), BodyStep::Continue);
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let none = ResponseHead { content_type: None, content_encoding: None, end_of_stream: false };
    assert_eq!(s.response_head(&none), HeadStep::Continue);
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let problem = ResponseHead { content_type: Some("application/problem+json"), content_encoding: None, end_of_stream: false };
    assert_eq!(s.response_head(&problem), HeadStep::HoldUnsized);
}

#[test]
fn a_stream_is_redacted_across_chunks_with_a_value_split_between_them() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    assert_eq!(s.response_head(&sse_head()), HeadStep::ContinueUnsized);
    let mut out = String::new();
    for (i, piece) in ["write to john.d", "oe@example.com now"].iter().enumerate() {
        let chunk = sse(piece);
        match s.response_body(chunk.len(), i == 1, |b| b.extend_from_slice(&chunk)) {
            BodyStep::Replace(b) => out.push_str(&String::from_utf8(b).unwrap()),
            BodyStep::Continue => out.push_str(&String::from_utf8(chunk).unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert!(!out.replace("\\", "").contains("john.doe"), "{out}");
    assert!(out.contains("[EMAIL]"), "{out}");
}

#[test]
fn chunks_that_pass_and_chunks_that_are_redacted_alternate_without_leaking_into_each_other() {
    // The session keeps one room for the chunk it reads and the output it writes: a chunk that
    // passes unchanged must not carry the previous chunk's bytes, nor a replaced one lose its own.
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    s.response_head(&sse_head());
    let pieces = ["hello ", "mail john.doe@example.com ", "plain words ", "and jane@example.org ", "bye "];
    let mut out = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        let chunk = sse(piece);
        let got = match s.response_body(chunk.len(), i + 1 == pieces.len(), |b| {
            assert!(b.is_empty(), "the room is empty when lent");
            b.extend_from_slice(&chunk);
        }) {
            BodyStep::Replace(b) => String::from_utf8(b).unwrap(),
            BodyStep::Continue => String::from_utf8(chunk).unwrap(),
            other => panic!("{other:?}"),
        };
        out.push_str(&got);
    }
    let content: String = out
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(content, "hello mail [EMAIL] plain words and [EMAIL] bye ", "{out}");
}

#[test]
fn a_broken_stream_is_ended_with_an_error_event_in_the_provider_format() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/messages"));
    assert_eq!(s.response_head(&sse_head()), HeadStep::ContinueUnsized);
    let bad = b"event: message_start\ndata: {oops}\n\n".to_vec();
    let end = text(&s.response_body(bad.len(), false, |b| b.extend_from_slice(&bad)));
    assert!(end.starts_with("event: error\ndata: {\"type\":\"error\""), "{end}");
    assert!(matches!(&events(&mut s)[..], [Event::StreamEnded(Refusal::UnscannableResponse(_))]));
    // Whatever the upstream still sends is dropped.
    assert_eq!(s.response_body(5, true, |_| panic!("not read")), BodyStep::Replace(Vec::new()));
}

#[test]
fn a_block_rule_in_a_stream_ends_it_after_the_settled_text() {
    let p = policy(json!({"rules": {"detectors": {"email": {"response": "block"}}}}), serde_json::Value::Null);
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    s.response_head(&sse_head());
    let chunk = sse("hello there john.doe@example.com and more");
    let end = text(&s.response_body(chunk.len(), false, |b| b.extend_from_slice(&chunk)));
    assert!(!end.contains("john.doe"));
    assert!(end.contains("response_blocked"), "{end}");
    assert!(events(&mut s).iter().any(|e| matches!(e, Event::StreamEnded(Refusal::ResponseBlocked { .. }))));
}

#[test]
fn an_unknown_path_streams_in_the_openai_chat_format() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/custom/generate"));
    s.response_head(&sse_head());
    let chunk = sse("john.doe@example.com ");
    let out = match s.response_body(chunk.len(), true, |b| b.extend_from_slice(&chunk)) {
        BodyStep::Replace(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(out.contains("[EMAIL]"), "{out}");
}

#[test]
fn a_json_response_is_held_whole_and_redacted() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    assert_eq!(s.response_head(&json_head()), HeadStep::HoldUnsized);
    let body = json!({"choices": [{"message": {"role": "assistant", "content": "mail john.doe@example.com"}}]}).to_string().into_bytes();
    assert_eq!(s.response_body(10, false, |_| panic!("read only at the end")), BodyStep::Hold);
    let out = text(&s.response_body(body.len(), true, |b| b.extend_from_slice(&body)));
    assert!(out.contains("[EMAIL]") && !out.contains("john.doe"));
}

#[test]
fn an_oversized_json_response_is_a_clear_error_even_when_unscannable_bodies_pass() {
    for redaction in [json!({}), json!({"on_unscannable": "pass"})] {
        let p = policy(redaction, json!({"max_response_body_bytes": 64}));
        let (mut s, _) = start(&p, &post("/v1/chat/completions"));
        s.response_head(&json_head());
        assert_eq!(s.response_body(64, false, |_| panic!("not yet")), BodyStep::Hold);
        let step = s.response_body(65, false, |_| panic!("never read: refused on size"));
        assert_eq!(step, BodyStep::Refuse(Refusal::ResponseTooLarge { limit: 64 }));
        assert_eq!(Refusal::ResponseTooLarge { limit: 64 }.code(), "response_too_large");
        assert!(s.failed_open().is_empty(), "a size refusal is not a fail-open path");
    }
}

#[test]
fn a_compressed_response_is_refused_by_default() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    let gz = ResponseHead { content_encoding: Some("gzip"), ..sse_head() };
    assert_eq!(s.response_head(&gz), HeadStep::Refuse(Refusal::UnscannableResponse("the response is compressed".into())));
    let p = passing();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    assert_eq!(s.response_head(&gz), HeadStep::Continue);
    assert_eq!(s.response_body(10, true, |_| panic!("not read")), BodyStep::Continue);
    assert_eq!(s.failed_open().len(), 1);
}

#[test]
fn our_own_refusal_flows_back_unscanned() {
    let p = blocking();
    let (mut s, _) = start(&p, &post("/v1/chat/completions"));
    assert!(matches!(s.request_body(3, true, || b"{no".to_vec()), BodyStep::Refuse(_)));
    // The local reply is JSON; it must not be held or rewritten.
    assert_eq!(s.response_head(&json_head()), HeadStep::Continue);
    assert_eq!(s.response_body(100, true, |_| panic!("not read")), BodyStep::Continue);
}

mod content_digests {
    //! The audit record's keyed digests cover exactly the bytes the session let through.
    use super::*;
    use cordon_audit::digest::ContentKey;
    use cordon_audit::record::Direction as D;

    fn key() -> ContentKey {
        ContentKey::new(&[42u8; 32]).unwrap()
    }

    fn digesting(p: &CompiledPolicy, head: &Head<'_>) -> Session {
        let (mut s, _) = start(p, head);
        s.digest_content(&key());
        s
    }

    #[test]
    fn a_redacted_prompt_is_digested_as_sent_upstream_not_as_written() {
        let p = blocking();
        let mut s = digesting(&p, &post("/v1/chat/completions"));
        let body = chat_body("mail me at john.doe@example.com please");
        let sent = text(&s.request_body(body.len(), true, || body.clone())).into_bytes();
        let resp = br#"{"choices":[]}"#.to_vec();
        assert_eq!(s.response_head(&json_head()), HeadStep::HoldUnsized);
        assert_eq!(s.response_body(resp.len(), true, |b| b.extend_from_slice(&resp)), BodyStep::Continue);
        let (req, res) = s.content_digests();
        assert_eq!(req, Some(key().digest(D::Request, &sent)));
        assert_ne!(req, Some(key().digest(D::Request, &body)), "the original prompt never left");
        assert_eq!(res, Some(key().digest(D::Response, &resp)));
    }

    #[test]
    fn a_stream_is_digested_as_passed_on_whatever_its_chunking() {
        let p = blocking();
        let whole: Vec<u8> = [sse("my mail is john.doe@"), sse("example.com ok"), b"data: [DONE]\n\n".to_vec()].concat();
        let mut digests = Vec::new();
        for split in [1, 7, 30, whole.len() / 2, whole.len() - 1] {
            let mut s = digesting(&p, &post("/v1/chat/completions"));
            let body = chat_body("hi");
            assert_eq!(s.request_body(body.len(), true, || body.clone()), BodyStep::Continue);
            assert_eq!(s.response_head(&sse_head()), HeadStep::ContinueUnsized);
            let mut passed = Vec::new();
            for (i, part) in [&whole[..split], &whole[split..]].into_iter().enumerate() {
                match s.response_body(part.len(), i == 1, |b| b.extend_from_slice(part)) {
                    BodyStep::Continue => passed.extend_from_slice(part),
                    BodyStep::Replace(b) => passed.extend_from_slice(&b),
                    other => panic!("{other:?}"),
                }
            }
            assert!(!String::from_utf8_lossy(&passed).contains("john.doe@example.com"));
            let (_, res) = s.content_digests();
            assert_eq!(res, Some(key().digest(D::Response, &passed)), "split at {split}");
            digests.push(res);
        }
        digests.dedup();
        assert_eq!(digests.len(), 1, "the same stream digests the same at every split");
    }

    #[test]
    fn a_blocked_stream_digests_what_the_app_got_and_a_refused_request_has_none() {
        let p = policy(json!({"rules": {"detectors": {"card": {"response": "block"}}}}), serde_json::Value::Null);
        let mut s = digesting(&p, &post("/v1/chat/completions"));
        let body = chat_body("hi");
        s.request_body(body.len(), true, || body.clone());
        s.response_head(&sse_head());
        let chunk = sse("card 4111111111111111 done");
        let got = text(&s.response_body(chunk.len(), false, |b| b.extend_from_slice(&chunk))).into_bytes();
        assert_eq!(s.response_body(5, true, |b| b.extend_from_slice(b"later")), BodyStep::Replace(Vec::new()));
        let (req, res) = s.content_digests();
        assert_eq!(req, Some(key().digest(D::Request, &body)));
        assert_eq!(res, Some(key().digest(D::Response, &got)), "the error event is part of what the app got");

        let p = policy(json!({"rules": {"detectors": {"email": {"request": "block"}}}}), serde_json::Value::Null);
        let mut s = digesting(&p, &post("/v1/chat/completions"));
        let body = chat_body("a@example.com");
        assert!(matches!(s.request_body(body.len(), true, || body.clone()), BodyStep::Refuse(_)));
        assert_eq!(s.content_digests(), (None, None), "nothing of a refused request went on");
    }

    #[test]
    fn bodies_not_read_whole_have_no_digest_and_no_body_is_the_empty_digest() {
        let p = passing();
        let get = Head { method: "GET", path: "/v1/models", content_encoding: None, end_of_stream: true };
        let mut s = digesting(&p, &get);
        assert_eq!(s.response_head(&ResponseHead { end_of_stream: true, ..json_head() }), HeadStep::Continue);
        assert_eq!(s.content_digests(), (Some(key().digest(D::Request, b"")), Some(key().digest(D::Response, b""))));

        let gz = Head { content_encoding: Some("gzip"), ..post("/v1/chat/completions") };
        let mut s = digesting(&p, &gz);
        s.response_head(&ResponseHead { content_type: Some("text/plain"), ..json_head() });
        assert_eq!(s.content_digests(), (None, None), "a compressed prompt and a text/plain answer pass unread");

        // Unscannable JSON passed as it is under `pass`: what went upstream is still exact.
        let mut s = digesting(&p, &post("/v1/chat/completions"));
        let junk = b"{not json".to_vec();
        assert_eq!(s.request_body(junk.len(), true, || junk.clone()), BodyStep::Continue);
        assert_eq!(s.content_digests().0, Some(key().digest(D::Request, &junk)));
    }

    #[test]
    fn an_app_that_leaves_mid_stream_gets_the_digest_of_what_it_was_sent() {
        let p = blocking();
        let mut s = digesting(&p, &post("/v1/chat/completions"));
        let body = chat_body("hi");
        s.request_body(body.len(), true, || body.clone());
        s.response_head(&sse_head());
        let first = sse("hello there");
        // Redaction may hold back the tail it has not settled: only what it passed on counts.
        let passed = match s.response_body(first.len(), false, |b| b.extend_from_slice(&first)) {
            BodyStep::Continue => first.clone(),
            BodyStep::Replace(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(s.content_digests().1, Some(key().digest(D::Response, &passed)));
        let mut never = digesting(&p, &post("/v1/chat/completions"));
        assert_eq!(never.content_digests(), (None, None), "a prompt never completed went nowhere; no response began");
    }

    #[test]
    fn without_a_key_there_are_no_digests() {
        let p = blocking();
        let (mut s, _) = start(&p, &post("/v1/chat/completions"));
        let body = chat_body("hi");
        s.request_body(body.len(), true, || body.clone());
        assert_eq!(s.content_digests(), (None, None));
    }
}
