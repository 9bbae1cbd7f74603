//! Fleet-wide limits: the descriptors sent, answers judged, fail modes, and token settlement,
//! against a small in-test RLS with the control plane's semantics (all-or-nothing fixed window).

use super::*;
use crate::policy::Principal;
use crate::ratelimit::Usage;
use crate::ratelimit::exchange::Exchange;
use crate::ratelimit::schema::{RateLimit, TokenEstimate};
use crate::ratelimit::store::MemoryStore;
use serde_json::json;
use std::collections::HashMap;

const NOW: u64 = 1_800_000_000_000_000_000;

fn service(extra: serde_json::Value) -> RateLimitService {
    let mut v = json!({"cluster": "rls"});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

fn compile(limits: serde_json::Value, svc: Option<RateLimitService>) -> Result<CompiledLimits, PolicyError> {
    let rl: Vec<RateLimit> = serde_json::from_value(limits).unwrap();
    let est: TokenEstimate = serde_json::from_value(json!({"default_completion_tokens": 10})).unwrap();
    CompiledLimits::compile_with_service(&rl, Some(&est), svc.as_ref())
}

fn principal() -> Principal {
    Principal { user: Some("ann".into()), team: Some("ml".into()), app: None }
}

fn who(p: &Principal) -> Caller<'_> {
    Caller { principal: p, key_id: Some("k1"), model: "gpt-4o" }
}

fn body(max_tokens: u64) -> Vec<u8> {
    json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": []}).to_string().into_bytes()
}

fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The control plane's semantics: a check adds every descriptor's hits only if all fit.
#[derive(Default)]
struct FakeRls {
    counts: HashMap<Vec<(String, String)>, u64>,
}

impl FakeRls {
    fn answer(&mut self, req: &RlsRequest) -> RlsResponse {
        let mut over = false;
        let mut ops = Vec::new();
        for d in &req.descriptors {
            let (key, op) = split_op(&d.entries);
            let limit = u64::from(d.limit.unwrap().0);
            let cur = *self.counts.get(&key).unwrap_or(&0);
            if op.is_none() && cur + d.hits > limit {
                over = true;
            }
            ops.push((key, op.map(str::to_owned), d.hits, limit, cur));
        }
        let mut statuses = Vec::new();
        for (key, op, hits, limit, cur) in ops {
            let new = match op.as_deref() {
                Some(OP_RELEASE) => cur.saturating_sub(hits),
                Some(_) => cur + hits,
                None if over => cur,
                None => cur + hits,
            };
            self.counts.insert(key, new);
            let code = if op.is_none() && cur + hits > limit { Code::OverLimit } else { Code::Ok };
            statuses.push(DescriptorStatus { code, has_limit: true, remaining: limit.saturating_sub(new), reset_ns: Some(30_000_000_000) });
        }
        RlsResponse { overall: if over { Code::OverLimit } else { Code::Ok }, statuses }
    }
}

#[test]
fn validation_names_the_field() {
    let req = |scope: &str, extra: serde_json::Value| {
        let mut l = json!({"name": "a", "requests": {"limit": 5, "per": "minute"}, "scope": scope});
        l.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!([l])
    };
    let path = |r: Result<CompiledLimits, PolicyError>| r.unwrap_err().path().to_owned();
    assert_eq!(path(compile(req("fleet", json!({})), None)), "rate_limits[0].scope");
    let weekly = json!([{"name": "b", "budget": {"tokens": 5, "per": "week"}, "scope": "fleet"}]);
    assert_eq!(path(compile(weekly, Some(service(json!({}))))), "rate_limits[0].budget.per");
    let concurrent = json!([{"name": "c", "concurrent": {"limit": 5}, "scope": "fleet"}]);
    assert_eq!(path(compile(concurrent, Some(service(json!({}))))), "rate_limits[0].scope");
    let huge = json!([{"name": "h", "tokens": {"limit": 5_000_000_000u64, "per": "day"}, "scope": "fleet"}]);
    assert_eq!(path(compile(huge, Some(service(json!({}))))), "rate_limits[0].tokens.limit");
    assert_eq!(path(compile(json!([]), Some(service(json!({"timeout_ms": 0}))))), "rate_limit_service.timeout_ms");
    assert_eq!(path(compile(json!([]), Some(service(json!({"cluster": ""}))))), "rate_limit_service.cluster");
    assert_eq!(path(compile(json!([]), Some(service(json!({"domain": "has space"}))))), "rate_limit_service.domain");
    let bad: Result<RateLimitService, _> = serde_json::from_value(json!({"on_unavailable": "maybe"}));
    assert!(bad.is_err());
    assert!(compile(req("fleet", json!({})), Some(service(json!({})))).is_ok());
}

#[test]
fn the_service_defaults_to_the_control_plane_failing_closed() {
    let svc: RateLimitService = serde_json::from_value(json!({})).unwrap();
    assert_eq!((svc.cluster.as_str(), svc.domain.as_str(), svc.timeout_ms), ("cordon_control_plane", "cordon", 250));
    assert_eq!((svc.on_unavailable, svc.protocol), (OnUnavailable::Deny, RlsProtocol::Cordon));
}

#[test]
fn one_descriptor_per_matching_fleet_limit_with_its_key_values_limit_and_cost() {
    let l = compile(
        json!([
            {"name": "local", "requests": {"limit": 100, "per": "minute"}},
            {"name": "team-rpm", "by": ["team", "app"], "requests": {"limit": 50, "per": "minute"}, "scope": "fleet"},
            {"name": "tok", "by": ["user"], "tokens": {"limit": 1000, "per": "hour", "count": "completion"}, "scope": "fleet"},
            {"name": "other-model", "match": {"model": "o1*"}, "requests": {"limit": 1, "per": "day"}, "scope": "fleet"},
        ]),
        Some(service(json!({"domain": "prod"}))),
    )
    .unwrap();
    let p = principal();
    let (x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(64), &MemoryStore::new(), NOW).unwrap().unwrap();
    let req = x.fleet_request().unwrap();
    assert_eq!(req.domain, "prod");
    assert_eq!(req.descriptors.len(), 2, "the local limit and the unmatched one are not sent");
    let d = &req.descriptors[0];
    // `by` is sorted (key fields in a fixed order); a missing app is sent as `-`.
    assert_eq!(d.entries, entries(&[("cordon_limit", "team-rpm"), ("team", "ml"), ("app", "-")]));
    assert_eq!((d.limit, d.hits), (Some((50, Unit::Minute)), 1));
    let t = &req.descriptors[1];
    assert_eq!(t.entries, entries(&[("cordon_limit", "tok"), ("user", "ann")]));
    assert_eq!((t.limit, t.hits), (Some((1000, Unit::Hour)), 64), "the completion reservation is max_tokens");
    assert_eq!(req.hits_addend, 0, "costs differ: per-descriptor hits only");
}

#[test]
fn uniform_costs_are_also_sent_as_the_request_hits_addend() {
    let l = compile(json!([{"name": "a", "requests": {"limit": 5, "per": "second"}, "scope": "fleet"}]), Some(service(json!({})))).unwrap();
    let p = principal();
    let (x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(8), &MemoryStore::new(), NOW).unwrap().unwrap();
    assert_eq!(x.fleet_request().unwrap().hits_addend, 1);
}

#[test]
fn local_only_policies_never_ask_the_service() {
    let l = compile(json!([{"name": "a", "requests": {"limit": 5, "per": "second"}}]), Some(service(json!({})))).unwrap();
    let p = principal();
    let (x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(8), &MemoryStore::new(), NOW).unwrap().unwrap();
    assert!(x.fleet_request().is_none());
    assert!(!l.has_fleet(&who(&p)));
}

#[test]
fn an_over_limit_answer_refuses_naming_the_limit_and_gives_local_reservations_back() {
    let l = compile(
        json!([
            {"name": "local-tokens", "tokens": {"limit": 100, "per": "hour"}},
            {"name": "a", "requests": {"limit": 5, "per": "minute"}, "scope": "fleet"},
            {"name": "b", "requests": {"limit": 5, "per": "minute"}, "scope": "fleet"},
        ]),
        Some(service(json!({}))),
    )
    .unwrap();
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(50), &store, NOW).unwrap().unwrap();
    let ok = DescriptorStatus { code: Code::Ok, has_limit: true, remaining: 3, reset_ns: Some(1) };
    let over = DescriptorStatus { code: Code::OverLimit, has_limit: true, remaining: 0, reset_ns: Some(12_300_000_000) };
    let answer = RlsResponse { overall: Code::OverLimit, statuses: vec![ok, over] };
    let refusal = x.fleet_answer(&l, Ok(answer), &store, NOW).unwrap_err();
    assert_eq!(refusal, Refusal::RateLimited { limit: "b".into(), kind: LimitKind::Requests, retry_after_secs: 13 });
    assert_eq!(refusal.status(), 429);
    // The local token reservation (prompt + 50) was given back: a 100-token request fits.
    let probe = Reservation { prompt: 0, completion: 100, bytes_per_token: 4.0 };
    assert!(l.admit(&who(&p), &probe, &store, NOW).is_ok());
}

#[test]
fn an_ok_answer_admits_and_its_remainders_become_the_headers() {
    let l = compile(json!([{"name": "a", "requests": {"limit": 5, "per": "minute"}, "scope": "fleet"}]), Some(service(json!({})))).unwrap();
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(8), &store, NOW).unwrap().unwrap();
    let st = DescriptorStatus { code: Code::Ok, has_limit: true, remaining: 4, reset_ns: Some(42_000_000_000) };
    assert_eq!(x.fleet_answer(&l, Ok(RlsResponse { overall: Code::Ok, statuses: vec![st] }), &store, NOW), Ok(FleetOutcome::Admitted));
    let h = x.response_headers();
    assert!(h.contains(&("x-ratelimit-limit-requests".into(), "5".into())));
    assert!(h.contains(&("x-ratelimit-remaining-requests".into(), "4".into())));
    assert!(h.contains(&("x-ratelimit-reset-requests".into(), "42s".into())));
    assert!(x.fleet_request().is_none(), "answered once");
}

#[test]
fn an_unreachable_service_denies_by_default_and_allow_fails_open() {
    let limits = json!([{"name": "a", "requests": {"limit": 5, "per": "minute"}, "scope": "fleet"}]);
    let p = principal();
    let store = MemoryStore::new();
    let deny = compile(limits.clone(), Some(service(json!({})))).unwrap();
    let (mut x, _) = Exchange::begin(&deny, &who(&p), "/v1/chat/completions", &body(8), &store, NOW).unwrap().unwrap();
    let r = x.fleet_answer(&deny, Err("gRPC status 14".into()), &store, NOW).unwrap_err();
    assert_eq!((r.status(), r.code()), (503, "rate_limit_unavailable"));
    assert!(r.message().contains("gRPC status 14"));

    let allow = compile(limits, Some(service(json!({"on_unavailable": "allow"})))).unwrap();
    let (mut x, _) = Exchange::begin(&allow, &who(&p), "/v1/chat/completions", &body(8), &store, NOW).unwrap().unwrap();
    assert_eq!(x.fleet_answer(&allow, Err("timeout".into()), &store, NOW), Ok(FleetOutcome::FailedOpen("timeout".into())));
    // An UNKNOWN verdict is no verdict.
    let (mut x, _) = Exchange::begin(&allow, &who(&p), "/v1/chat/completions", &body(8), &store, NOW).unwrap().unwrap();
    let unknown = RlsResponse { overall: Code::Unknown, statuses: vec![] };
    assert!(matches!(x.fleet_answer(&allow, Ok(unknown), &store, NOW), Ok(FleetOutcome::FailedOpen(_))));
}

fn tokens_policy(protocol: &str) -> CompiledLimits {
    compile(
        json!([{"name": "tok", "by": ["team"], "tokens": {"limit": 100, "per": "hour", "count": "completion"}, "scope": "fleet"}]),
        Some(service(json!({"protocol": protocol}))),
    )
    .unwrap()
}

fn settle(l: &CompiledLimits, rls: &mut FakeRls, max_tokens: u64, used: u64, now: u64) -> Option<RlsRequest> {
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(l, &who(&p), "/v1/chat/completions", &body(max_tokens), &store, NOW).unwrap().unwrap();
    let answer = rls.answer(x.fleet_request().unwrap());
    x.fleet_answer(l, Ok(answer), &store, NOW).unwrap();
    x.response_head(200, Some("application/json"));
    let resp = json!({"usage": {"prompt_tokens": 3, "completion_tokens": used}}).to_string();
    x.response_chunk(resp.as_bytes(), true);
    assert_eq!(x.finish(l, &store, now).unwrap(), Usage { prompt: 3, completion: used, reported: true });
    x.fleet_settlement(l, now)
}

#[test]
fn a_surplus_is_released_and_a_shortfall_debited_with_the_cordon_op() {
    let l = tokens_policy("cordon");
    let mut rls = FakeRls::default();
    let release = settle(&l, &mut rls, 60, 5, NOW).unwrap();
    let d = &release.descriptors[0];
    assert_eq!(d.entries, entries(&[("cordon_limit", "tok"), ("team", "ml"), ("cordon_op", "release")]));
    assert_eq!((d.hits, release.hits_addend), (55, 55));
    rls.answer(&release);
    let key = entries(&[("cordon_limit", "tok"), ("team", "ml")]);
    assert_eq!(rls.counts[&key], 5, "only what was used stays counted");

    let debit = settle(&l, &mut rls, 10, 30, NOW).unwrap();
    assert_eq!(debit.descriptors[0].entries.last().unwrap(), &("cordon_op".to_string(), "debit".to_string()));
    assert_eq!(debit.descriptors[0].hits, 20);
    rls.answer(&debit);
    assert_eq!(rls.counts[&key], 35);
    assert!(settle(&l, &mut rls, 12, 12, NOW).is_none(), "nothing owed");
}

#[test]
fn a_standard_service_gets_plain_debits_and_no_releases() {
    let l = tokens_policy("standard");
    let mut rls = FakeRls::default();
    assert!(settle(&l, &mut rls, 60, 5, NOW).is_none(), "no release: the reservation stays counted");
    let debit = settle(&l, &mut rls, 10, 30, NOW).unwrap();
    assert_eq!(debit.descriptors[0].entries, entries(&[("cordon_limit", "tok"), ("team", "ml")]));
    assert_eq!(debit.descriptors[0].hits, 20);
}

#[test]
fn no_release_once_the_counted_window_has_ended() {
    let l = tokens_policy("cordon");
    let mut rls = FakeRls::default();
    // The fake RLS says its window resets 30 s after admission.
    assert!(settle(&l, &mut rls, 60, 5, NOW + 31_000_000_000).is_none());
}

#[test]
fn concurrent_reservations_cannot_overshoot_the_limit() {
    // Ten streams start before any ends, each reserving 40 of 100 completion tokens: exactly two
    // fit. Each then uses 35: what stays counted is what was used, never more than the limit.
    let l = tokens_policy("cordon");
    let mut rls = FakeRls::default();
    let p = principal();
    let store = MemoryStore::new();
    let mut admitted = Vec::new();
    for _ in 0..10 {
        let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(40), &store, NOW).unwrap().unwrap();
        let answer = rls.answer(x.fleet_request().unwrap());
        if x.fleet_answer(&l, Ok(answer), &store, NOW).is_ok() {
            admitted.push(x);
        }
    }
    assert_eq!(admitted.len(), 2);
    for mut x in admitted {
        x.response_head(200, Some("application/json"));
        x.response_chunk(json!({"usage": {"prompt_tokens": 1, "completion_tokens": 35}}).to_string().as_bytes(), true);
        x.finish(&l, &store, NOW).unwrap();
        let settlement = x.fleet_settlement(&l, NOW).unwrap();
        rls.answer(&settlement);
    }
    assert_eq!(rls.counts.values().sum::<u64>(), 70);
}

#[test]
fn service_ops_are_split_from_the_counter_identity() {
    let all = entries(&[("cordon_limit", "a"), ("cordon_op", "release"), ("team", "x")]);
    let (key, op) = split_op(&all);
    assert_eq!((key, op), (entries(&[("cordon_limit", "a"), ("team", "x")]), Some("release")));
    assert_eq!(split_op(&entries(&[("cordon_limit", "a")])).1, None);
}

#[test]
fn a_fleet_token_limit_that_cuts_bounds_the_stream_by_what_the_service_had_left() {
    let l = compile(
        json!([{"name": "tok", "tokens": {"limit": 100, "per": "hour", "count": "completion"}, "on_exceed": "cut", "scope": "fleet"}]),
        Some(service(json!({}))),
    )
    .unwrap();
    let p = principal();
    let store = MemoryStore::new();
    let body = json!({"model": "gpt-4o", "max_tokens": 10, "stream": true, "messages": []}).to_string().into_bytes();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body, &store, NOW).unwrap().unwrap();
    // 10 reserved, 5 left after it: the stream may produce 15 completion tokens.
    let st = DescriptorStatus { code: Code::Ok, has_limit: true, remaining: 5, reset_ns: Some(1_000_000_000) };
    x.fleet_answer(&l, Ok(RlsResponse { overall: Code::Ok, statuses: vec![st] }), &store, NOW).unwrap();
    assert!(x.response_head(200, Some("text/event-stream")));
    let delta = |t: &str| format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": t}}]}));
    let mut out = String::new();
    for _ in 0..10 {
        let c = delta(&"x".repeat(16)); // 4 tokens each at 4 bytes per token
        match x.response_chunk(c.as_bytes(), false) {
            crate::ratelimit::exchange::ChunkStep::Continue => out.push_str(&c),
            crate::ratelimit::exchange::ChunkStep::Replace(b) => out.push_str(&String::from_utf8(b).unwrap()),
        }
    }
    assert!(x.was_cut());
    assert!(out.contains("tok"), "the final error event names the limit: {out}");
    assert_eq!(out.matches(&"x".repeat(16)).count(), 3, "12 tokens sent; the 4th delta would pass 15");
}

mod property {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// A request reserving this many completion tokens.
        Start(u64),
        /// The n-th in-flight exchange ends having used this fraction (per mille) of its reservation.
        End(usize, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![(1u64..80).prop_map(Step::Start), (0usize..16, 0u64..=1000).prop_map(|(i, f)| Step::End(i, f))]
    }

    proptest! {
        /// Over any interleaving of reservations and settlements against the service: what is
        /// counted never passes the limit when a request is admitted, and once every exchange
        /// has ended what stays counted is exactly what was used (nothing leaks either way).
        #[test]
        fn reservations_never_overshoot_and_settle_to_usage(steps in proptest::collection::vec(step(), 1..60)) {
            let l = tokens_policy("cordon");
            let mut rls = FakeRls::default();
            let p = principal();
            let store = MemoryStore::new();
            let mut live: Vec<(Exchange, u64)> = Vec::new();
            let mut used_total = 0;
            let key = entries(&[("cordon_limit", "tok"), ("team", "ml")]);
            for s in steps {
                match s {
                    Step::Start(max) => {
                        let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(max), &store, NOW).unwrap().unwrap();
                        let answer = rls.answer(x.fleet_request().unwrap());
                        if x.fleet_answer(&l, Ok(answer), &store, NOW).is_ok() {
                            prop_assert!(rls.counts[&key] <= 100);
                            live.push((x, max));
                        }
                    }
                    Step::End(i, per_mille) if !live.is_empty() => {
                        let (mut x, max) = live.remove(i % live.len());
                        let used = max * per_mille / 1000;
                        used_total += used;
                        x.response_head(200, Some("application/json"));
                        x.response_chunk(json!({"usage": {"prompt_tokens": 1, "completion_tokens": used}}).to_string().as_bytes(), true);
                        x.finish(&l, &store, NOW).unwrap();
                        if let Some(settle) = x.fleet_settlement(&l, NOW) {
                            rls.answer(&settle);
                        }
                    }
                    Step::End(..) => {}
                }
            }
            let in_flight: u64 = live.iter().map(|(_, max)| *max).sum();
            prop_assert_eq!(rls.counts.get(&key).copied().unwrap_or(0), used_total + in_flight);
        }
    }
}

#[test]
fn a_fleet_budget_is_a_calendar_month_descriptor_and_refuses_with_budget_exceeded() {
    let l = compile(
        json!([{"name": "team-monthly", "by": ["team"], "budget": {"tokens": 1000, "per": "month"}, "scope": "fleet"}]),
        Some(service(json!({}))),
    )
    .unwrap();
    let p = principal();
    let store = MemoryStore::new();
    let (mut x, _) = Exchange::begin(&l, &who(&p), "/v1/chat/completions", &body(50), &store, NOW).unwrap().unwrap();
    let req = x.fleet_request().expect("a fleet budget is asked of the service").clone();
    let d = &req.descriptors[0];
    assert_eq!(d.limit, Some((1000, Unit::Month)), "the budget travels as a MONTH limit override");
    let over = DescriptorStatus { code: Code::OverLimit, has_limit: true, remaining: 0, reset_ns: Some(86_400_000_000_000) };
    let refusal = x.fleet_answer(&l, Ok(RlsResponse { overall: Code::OverLimit, statuses: vec![over] }), &store, NOW).unwrap_err();
    assert_eq!(refusal.code(), "budget_exceeded");
    assert_eq!(refusal.headers()[0], ("retry-after", "86400".to_owned()));
}

#[test]
fn a_month_window_is_the_calendar_month() {
    // 2026-11-30 11:00 UTC: the month ends on 2026-12-01 00:00, 13 hours later.
    let now = 1_796_036_400;
    let (index, reset) = Unit::Month.window(now);
    assert_eq!(reset, 13 * 3_600);
    assert_eq!(index, (2026 - 1970) * 12 + 10, "months since January 1970");
    assert_eq!(Unit::from_wire(5), Some(Unit::Month));
    assert_eq!(Unit::Day.window(now), (now / 86_400, 86_400 - now % 86_400));
}
