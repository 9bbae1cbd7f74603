use super::*;
use crate::identity::Identity;
use crate::policy::Principal;

fn end(status: Option<u16>) -> Ending {
    Ending { end_ms: 1_250, status, bytes_in: 300, bytes_out: 900 }
}

fn alice() -> Identity {
    Identity {
        principal: Principal { user: Some("alice".into()), team: Some("payments".into()), app: None },
        methods: vec![],
        key_id: Some("k-1".into()),
    }
}

#[test]
fn an_allowed_exchange_records_who_what_and_how_much() {
    let mut d = Draft::new("req-1", 1_000);
    d.identity(&alice());
    d.model("gpt-4o");
    d.route("chat");
    d.policy("v7", &"ab".repeat(32));
    d.rate_limit("per-key", 60, 59);
    d.usage(&Usage { prompt: 12, completion: 30, reported: true });
    let r = d.finish(end(Some(200)));
    assert_eq!((r.decision, r.reason.as_str(), r.status), (Decision::Allow, "ok", Some(200)));
    assert_eq!(r.principal.user.as_ref().map(Ident::as_str), Some("alice"));
    assert_eq!(r.principal.key_id.as_ref().map(Ident::as_str), Some("k-1"));
    assert_eq!(r.principal.app, None);
    assert_eq!(r.model.as_ref().map(Ident::as_str), Some("gpt-4o"));
    assert_eq!(r.policy.as_ref().map(|p| (p.version.as_str(), p.bundle_sha256)), Some(("v7", [0xab; 32])));
    let rl = r.rate_limit.unwrap();
    assert_eq!((rl.limited, rl.bucket.as_str(), rl.limit, rl.remaining), (false, "per-key", 60, 59));
    let u = r.usage.unwrap();
    assert_eq!((u.prompt, u.completion, u.total, u.source), (12, 30, 42, UsageSource::Reported));
    assert_eq!((r.duration_ms, r.bytes_in, r.bytes_out), (250, 300, 900));
    assert!(r.fail_open.is_empty());
    assert_eq!((r.request_digest, r.response_digest), (None, None), "no digest unless redaction computed one");
}

#[test]
fn content_digests_reach_the_record() {
    let mut d = Draft::new("req-d", 0);
    d.digests(Some([1; 32]), None);
    let r = d.finish(end(Some(200)));
    assert_eq!((r.request_digest, r.response_digest), (Some([1; 32]), None));
}

#[test]
fn the_first_refusal_decides_and_its_status_is_the_apps() {
    let mut d = Draft::new("req-2", 0);
    d.refused(&Refusal::InvalidApiKey);
    d.refused(&Refusal::PolicyUnavailable);
    let r = d.finish(end(None));
    assert_eq!((r.decision, r.reason.as_str(), r.status), (Decision::Refuse, "invalid_api_key", Some(401)));
}

#[test]
fn a_refused_model_is_named() {
    let mut d = Draft::new("req-m", 0);
    d.refused(&Refusal::ModelNotAllowed { model: "gpt-4o".into() });
    let r = d.finish(end(Some(403)));
    assert_eq!((r.reason.as_str(), r.model.as_ref().map(Ident::as_str)), ("model_not_allowed", Some("gpt-4o")));
}

#[test]
fn a_rate_limit_refusal_names_the_limit() {
    let mut d = Draft::new("req-3", 0);
    d.refused(&Refusal::RateLimited { limit: "team-rpm".into(), kind: crate::ratelimit::LimitKind::Requests, retry_after_secs: 3 });
    let r = d.finish(end(Some(429)));
    assert_eq!(r.reason.as_str(), "rate_limit_exceeded");
    let rl = r.rate_limit.unwrap();
    assert!(rl.limited);
    assert_eq!(rl.bucket.as_str(), "team-rpm");
}

#[test]
fn a_stream_cut_mid_way_keeps_its_200_and_says_why() {
    let mut d = Draft::new("req-4", 0);
    d.status(200);
    d.ended("token_limit_exceeded");
    let r = d.finish(end(Some(200)));
    assert_eq!((r.decision, r.reason.as_str(), r.status), (Decision::Refuse, "token_limit_exceeded", Some(200)));
}

#[test]
fn no_response_is_a_client_abort_and_5xx_an_upstream_error() {
    let r = Draft::new("a", 0).finish(end(None));
    assert_eq!((r.decision, r.reason.as_str()), (Decision::Fail, "client_abort"));
    let r = Draft::new("b", 0).finish(end(Some(503)));
    assert_eq!((r.decision, r.reason.as_str()), (Decision::Fail, "upstream_error"));
    let r = Draft::new("c", 0).finish(end(Some(404)));
    assert_eq!((r.decision, r.reason.as_str()), (Decision::Allow, "ok"));
}

#[test]
fn redaction_counts_and_fail_open_paths_are_recorded_without_content() {
    let mut outcomes = BTreeMap::new();
    outcomes.insert((RedactDirection::Request, Arc::from("email"), "redact"), 2);
    outcomes.insert((RedactDirection::Response, Arc::from("card"), "pseudonymize"), 1);
    let mut d = Draft::new("r", 0);
    d.redactions(&outcomes);
    d.failed_open(&[FailOpen { direction: RedactDirection::Response, why: "gzip body".into() }]);
    let r = d.finish(end(Some(200)));
    let counts: Vec<_> = r.redactions.iter().map(|(det, dir, a, n)| (det.as_str().to_owned(), dir, a, n)).collect();
    assert_eq!(
        counts,
        vec![("card".into(), Direction::Response, Action::Pseudonymize, 1), ("email".into(), Direction::Request, Action::Redact, 2)]
    );
    let paths: Vec<_> = r.fail_open.iter().map(Ident::as_str).collect();
    assert_eq!(paths, vec!["on_unscannable_pass:response"]);
}

#[test]
fn identifiers_from_callers_are_escaped_not_dropped() {
    let mut d = Draft::new("id with space", 0);
    let mut who = alice();
    who.principal.user = Some("José".into());
    d.identity(&who);
    d.policy("v1", "not-a-hash");
    let r = d.finish(end(Some(200)));
    assert_eq!(r.request_id.as_str(), "id%20with%20space");
    assert_eq!(r.principal.user.as_ref().map(Ident::as_str), Some("Jos%C3%A9"));
    assert_eq!(r.policy, None, "an unparseable bundle hash is not invented");
}

#[test]
fn an_incomplete_record_says_so() {
    let mut d = Draft::new("r", 0);
    d.mark_incomplete();
    let r = d.finish(end(Some(200)));
    assert_eq!(r.fail_open.iter().map(Ident::as_str).collect::<Vec<_>>(), vec!["audit_record_incomplete"]);
}

#[test]
fn a_request_admitted_without_a_fleet_verdict_is_flagged() {
    let mut d = Draft::new("r", 0);
    d.rate_limit_failed_open();
    let r = d.finish(end(Some(200)));
    let paths: Vec<_> = r.fail_open.iter().map(Ident::as_str).collect();
    assert_eq!(paths, vec!["rate_limit_unavailable:allow"]);
    assert_eq!(r.decision, Decision::Allow);
}
