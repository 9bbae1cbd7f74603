//! The limiter on an injected clock and an in-memory store: every matching limit applies,
//! refusals name the limit, reservations are reconciled, contention and eviction.

use super::store::MemoryStore;
use super::*;
use proptest::prelude::*;
use serde_json::json;

const S: u64 = 1_000_000_000;
const NOW: u64 = 1_800_000_000 * S;

fn limits(v: serde_json::Value) -> CompiledLimits {
    let rl: Vec<RateLimit> = serde_json::from_value(v).unwrap();
    CompiledLimits::compile(&rl, None).unwrap()
}

fn principal(team: &str) -> Principal {
    Principal { user: Some("u".into()), team: Some(team.into()), app: None }
}

fn caller<'a>(p: &'a Principal, key: &'a str, model: &'a str) -> Caller<'a> {
    Caller { principal: p, key_id: Some(key), model }
}

const ONE: Reservation = Reservation { prompt: 10, completion: 20, bytes_per_token: 4.0 };

fn code(r: &Refusal) -> (&'static str, u16) {
    (r.code(), r.status())
}

#[test]
fn every_matching_limit_applies_and_the_refusal_names_the_strictest() {
    // A loose limit for everyone and a strict one for gpt-4o: a looser match never hides the
    // stricter one (Limitador gets this wrong).
    let l = limits(json!([
        {"name": "everyone", "by": ["team"], "requests": {"limit": 100, "per": "minute"}},
        {"name": "gpt4o-per-key", "match": {"model": "gpt-4o*"}, "requests": {"limit": 2, "per": "minute"}}
    ]));
    let store = MemoryStore::new();
    let p = principal("research");
    let who = caller(&p, "k1", "gpt-4o-mini");
    assert!(l.admit(&who, &ONE, &store, NOW).is_ok());
    assert!(l.admit(&who, &ONE, &store, NOW).is_ok());
    let r = l.admit(&who, &ONE, &store, NOW).unwrap_err();
    assert_eq!(code(&r), ("rate_limit_exceeded", 429));
    assert!(r.message().contains("gpt4o-per-key"), "{}", r.message());
    assert_eq!(r.headers(), vec![("retry-after", "30".to_owned()), ("x-cordon-limit", "gpt4o-per-key".to_owned())]);
    // Another model is only under the loose limit; the refused request consumed nothing there.
    let other = caller(&p, "k1", "claude-3");
    let a = l.admit(&other, &ONE, &store, NOW).unwrap();
    let h = a.headers().pairs();
    assert!(h.contains(&("x-ratelimit-remaining-requests".into(), "97".into())), "{h:?}: 2 earlier + this one; the refused one was undone");
}

#[test]
fn counters_are_per_key_and_headers_decrease() {
    let l = limits(json!([{"name": "rpm", "requests": {"limit": 3, "per": "minute"}}]));
    let store = MemoryStore::new();
    let p = principal("t");
    let mut remaining = vec![];
    for _ in 0..3 {
        let a = l.admit(&caller(&p, "k1", "m"), &ONE, &store, NOW).unwrap();
        let h = a.headers().pairs();
        remaining.push(h.iter().find(|(k, _)| k == "x-ratelimit-remaining-requests").unwrap().1.clone());
        assert!(h.contains(&("x-ratelimit-limit-requests".into(), "3".into())));
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    assert!(l.admit(&caller(&p, "k1", "m"), &ONE, &store, NOW).is_err());
    assert!(l.admit(&caller(&p, "k2", "m"), &ONE, &store, NOW).is_ok(), "another key has its own counter");
    assert!(l.admit(&caller(&p, "k1", "m"), &ONE, &store, NOW + 20 * S).is_ok(), "one refills every 20 s");
}

#[test]
fn token_reservations_are_reconciled_with_reported_usage() {
    let l = limits(json!([{"name": "tpm", "by": ["team"], "tokens": {"limit": 100, "per": "minute"}}]));
    let store = MemoryStore::new();
    let p = principal("t");
    let who = caller(&p, "k", "m");
    let big = Reservation { prompt: 30, completion: 50, bytes_per_token: 4.0 };
    let mut a = l.admit(&who, &big, &store, NOW).unwrap();
    assert!(a.holds_tokens(&l));
    assert!(a.headers().pairs().contains(&("x-ratelimit-remaining-tokens".into(), "20".into())));
    // 80 reserved, the model used 25: 55 come back.
    a.reconcile(&l, &Usage { prompt: 20, completion: 5, reported: true }, &store, NOW).unwrap();
    let mid = Reservation { prompt: 30, completion: 30, bytes_per_token: 4.0 };
    let a = l.admit(&who, &mid, &store, NOW).unwrap();
    assert!(a.headers().pairs().contains(&("x-ratelimit-remaining-tokens".into(), "15".into())), "{:?}", a.headers().pairs());
    // 85 in use: another 60 does not fit.
    let r = l.admit(&who, &mid, &store, NOW).unwrap_err();
    assert_eq!(code(&r), ("token_limit_exceeded", 429));
}

#[test]
fn usage_beyond_the_reservation_is_debited_and_refuses_later_requests() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 100, "per": "minute", "count": "completion"}}]));
    let store = MemoryStore::new();
    let p = principal("t");
    let who = caller(&p, "k", "m");
    let r = Reservation { prompt: 0, completion: 10, bytes_per_token: 4.0 };
    let mut a = l.admit(&who, &r, &store, NOW).unwrap();
    a.reconcile(&l, &Usage { prompt: 0, completion: 150, reported: true }, &store, NOW).unwrap();
    let refused = l.admit(&who, &r, &store, NOW).unwrap_err();
    assert_eq!(refused.code(), "token_limit_exceeded");
    // 150 used of 100 per minute: 50 over plus the 10 asked for → 36 s until it fits.
    assert!(refused.headers().contains(&("retry-after", "36".to_owned())), "{:?}", refused.headers());
    // Reconciling twice changes nothing: reservations are consumed.
    a.reconcile(&l, &Usage { prompt: 0, completion: 150, reported: true }, &store, NOW).unwrap();
    assert!(l.admit(&who, &r, &store, NOW + 36 * S).is_ok());
}

#[test]
fn a_request_larger_than_the_whole_limit_is_refused_with_the_window_as_retry() {
    let l = limits(json!([{"name": "tpm", "tokens": {"limit": 100, "per": "minute"}}]));
    let store = MemoryStore::new();
    let p = principal("t");
    let huge = Reservation { prompt: 10, completion: usage::MAX_COMPLETION_BOUND, bytes_per_token: 4.0 };
    let r = l.admit(&caller(&p, "k", "m"), &huge, &store, NOW).unwrap_err();
    assert_eq!(r.code(), "token_limit_exceeded");
    assert!(r.headers().contains(&("retry-after", "60".to_owned())));
}

#[test]
fn a_cut_limit_gives_a_stream_budget() {
    let l = limits(json!([{"name": "tph", "tokens": {"limit": 200, "per": "hour"}, "on_exceed": "cut"}]));
    let store = MemoryStore::new();
    let p = principal("t");
    let r = Reservation { prompt: 50, completion: 20, bytes_per_token: 4.0 };
    let a = l.admit(&caller(&p, "k", "m"), &r, &store, NOW).unwrap();
    // 130 left after the reservation, plus the 20 reserved for the completion itself.
    assert_eq!(a.stream_budget(&l, &r), Some(150));
    let plain = limits(json!([{"name": "tph", "tokens": {"limit": 200, "per": "hour"}}]));
    let a = plain.admit(&caller(&p, "k", "m"), &r, &MemoryStore::new(), NOW).unwrap();
    assert_eq!(a.stream_budget(&plain, &r), None);
}

#[test]
fn released_reservations_come_back() {
    let l = limits(json!([{"name": "rpm", "requests": {"limit": 1, "per": "minute"}}]));
    let store = MemoryStore::new();
    let p = principal("t");
    let mut a = l.admit(&caller(&p, "k", "m"), &ONE, &store, NOW).unwrap();
    a.release(&l, &store, NOW);
    assert!(l.admit(&caller(&p, "k", "m"), &ONE, &store, NOW).is_ok(), "a request that never reached the model does not count");
}

#[test]
fn a_contended_store_is_retried_and_a_dead_one_fails_closed() {
    let l = limits(json!([{"name": "rpm", "requests": {"limit": 5, "per": "minute"}}]));
    let store = MemoryStore::new();
    let p = principal("t");
    l.admit(&caller(&p, "k", "m"), &ONE, &store, NOW).unwrap();
    store.contend(3);
    assert!(l.admit(&caller(&p, "k", "m"), &ONE, &store, NOW).is_ok());
    store.contend(10_000);
    let r = l.admit(&caller(&p, "k", "m"), &ONE, &store, NOW).unwrap_err();
    assert_eq!(code(&r), ("rate_limit_unavailable", 503));
}

#[test]
fn validation_names_the_field() {
    let bad = |v: serde_json::Value| {
        let rl: Vec<RateLimit> = serde_json::from_value(v).unwrap();
        CompiledLimits::compile(&rl, None).unwrap_err().path().to_owned()
    };
    assert_eq!(bad(json!([{"name": "Bad Name", "requests": {"limit": 1, "per": "second"}}])), "rate_limits[0].name");
    assert_eq!(bad(json!([{"name": "a", "requests": {"limit": 0, "per": "second"}}])), "rate_limits[0].requests.limit");
    assert_eq!(bad(json!([{"name": "a"}])), "rate_limits[0].requests");
    assert_eq!(
        bad(json!([{"name": "a", "requests": {"limit": 1, "per": "second"}, "tokens": {"limit": 1, "per": "second"}}])),
        "rate_limits[0].requests"
    );
    assert_eq!(bad(json!([{"name": "a", "requests": {"limit": 1, "per": "second"}, "on_exceed": "cut"}])), "rate_limits[0].on_exceed");
    assert_eq!(
        bad(json!([{"name": "a", "requests": {"limit": 1, "per": "second"}}, {"name": "a", "requests": {"limit": 1, "per": "second"}}])),
        "rate_limits[1].name"
    );
    assert_eq!(bad(json!([{"name": "a", "requests": {"limit": 1, "per": "second"}, "slots": 0}])), "rate_limits[0].slots");
    let est: TokenEstimate = serde_json::from_value(json!({"bytes_per_token": 0.0})).unwrap();
    assert_eq!(CompiledLimits::compile(&[], Some(&est)).unwrap_err().path(), "token_estimate.bytes_per_token");
}

#[test]
fn estimates_use_the_model_family_and_the_requested_bound() {
    let rl: Vec<RateLimit> = vec![];
    let est: TokenEstimate = serde_json::from_value(
        json!({"bytes_per_token": 4, "families": [{"model": "claude-*", "bytes_per_token": 2}], "default_completion_tokens": 7}),
    )
    .unwrap();
    let l = CompiledLimits::compile(&rl, Some(&est)).unwrap();
    let body = br#"{"model":"claude-3","max_tokens":30,"messages":[]}"#;
    let r = l.estimate("claude-3", body);
    assert_eq!((r.prompt, r.completion), ((body.len() as u64).div_ceil(2), 30));
    let r = l.estimate("gpt-4o", br#"{"model":"gpt-4o"}"#);
    assert_eq!((r.prompt, r.completion), (5, 7));
}

#[test]
fn durations_read_like_openais() {
    assert_eq!(duration(0), "0s");
    assert_eq!(duration(850_000_000), "850ms");
    assert_eq!(duration(6 * S), "6s");
    assert_eq!(duration(90 * S), "1m30s");
    assert_eq!(duration(7200 * S), "2h0m0s");
}

proptest! {
    /// Any interleaving of admits (with contention injected at random) over any number of keys
    /// never admits more per key than one burst plus what refills.
    #[test]
    fn admitted_never_exceeds_the_limit_plus_refill(
        limit in 1u64..20,
        ops in proptest::collection::vec((0usize..3, 0u64..200_000_000, 0usize..3), 1..150),
    ) {
        let l = limits(json!([{"name": "rps", "requests": {"limit": limit, "per": "second"}, "slots": 4}]));
        let store = MemoryStore::new();
        let p = principal("t");
        let keys = ["a", "b", "c"];
        let mut now = NOW;
        let mut admitted = [0u64; 3];
        for (key, gap, contention) in &ops {
            now += gap;
            store.contend(*contention);
            if l.admit(&caller(&p, keys[*key], "m"), &ONE, &store, now).is_ok() {
                admitted[*key] += 1;
            }
        }
        let elapsed = now - NOW;
        for n in admitted {
            // Burst of `limit`, plus one per interval elapsed.
            prop_assert!(n <= limit + elapsed * limit / S + 1, "{n} admitted, limit {limit}/s over {elapsed} ns");
        }
    }
}

/// 2027-01-31 23:00:00 UTC: an hour before a month ends.
const END_OF_JANUARY: u64 = 1_801_436_400 * S;

#[test]
fn a_monthly_budget_refuses_with_its_own_code_until_the_month_turns() {
    let l = limits(json!([{"name": "team-monthly", "by": ["team"], "budget": {"tokens": 100, "per": "month"}}]));
    let store = MemoryStore::new();
    let p = principal("research");
    let who = caller(&p, "k", "m");
    let mut a = l.admit(&who, &ONE, &store, END_OF_JANUARY).unwrap();
    let h = a.headers().pairs();
    assert!(h.contains(&("x-ratelimit-remaining-tokens".into(), "70".into())), "{h:?}");
    assert!(h.contains(&("x-ratelimit-reset-tokens".into(), "1h0m0s".into())), "resets at the month's end: {h:?}");
    // The model used more than reserved: the budget is debited what was used.
    a.reconcile(&l, &Usage { prompt: 10, completion: 85, reported: true }, &store, END_OF_JANUARY).unwrap();
    let r = l.admit(&who, &ONE, &store, END_OF_JANUARY + 60 * S).unwrap_err();
    assert_eq!(code(&r), ("budget_exceeded", 429));
    assert!(r.message().contains("Token budget 'team-monthly'"), "{}", r.message());
    assert_eq!(r.headers().first(), Some(&("retry-after", "3540".to_owned())), "until 1 February 00:00");
    // Another team has its own budget; February starts afresh.
    assert!(l.admit(&caller(&principal("support"), "k", "m"), &ONE, &store, END_OF_JANUARY).is_ok());
    assert!(l.admit(&who, &ONE, &store, END_OF_JANUARY + 3600 * S).is_ok());
}

#[test]
fn a_budget_and_a_rate_both_apply_and_a_budget_can_cut_a_stream() {
    let l = limits(json!([
        {"name": "tpm", "tokens": {"limit": 1000, "per": "minute"}},
        {"name": "daily", "by": ["team"], "budget": {"tokens": 50, "per": "day", "count": "completion"}, "on_exceed": "cut"}
    ]));
    let store = MemoryStore::new();
    let p = principal("t");
    let a = l.admit(&caller(&p, "k", "m"), &ONE, &store, NOW).unwrap();
    let (budget, name, kind) = a.cut_budget(&l, &ONE).unwrap();
    assert_eq!((budget, name.as_str(), kind), (50, "daily", LimitKind::Budget), "reserved 20 + 30 left");
}

#[test]
fn budget_fields_are_validated_by_name() {
    let bad = |v: serde_json::Value| {
        let rl: Vec<RateLimit> = serde_json::from_value(v).unwrap();
        CompiledLimits::compile(&rl, None).unwrap_err().to_string()
    };
    assert!(bad(json!([{"name": "b", "budget": {"tokens": 0, "per": "month"}}])).contains("rate_limits[0].budget.tokens"));
    let e = bad(json!([{"name": "b", "budget": {"tokens": 5, "per": "month"}, "tokens": {"limit": 5, "per": "day"}}]));
    assert!(e.contains("exactly one of `requests`, `tokens`, `budget` or `concurrent`"), "{e}");
    let rl: Result<Vec<RateLimit>, _> = serde_json::from_value(json!([{"name": "b", "budget": {"tokens": 5, "per": "year"}}]));
    assert!(rl.is_err(), "only day, week and month");
}

#[test]
fn contention_between_workers_is_retried_and_counted() {
    let l = limits(json!([{"name": "rpm", "requests": {"limit": 10, "per": "minute"}}]));
    let store = MemoryStore::new();
    l.prepare(&store).unwrap();
    let p = principal("t");
    store.contend(3);
    let a = l.admit(&caller(&p, "k", "m"), &ONE, &store, NOW).unwrap();
    assert_eq!(a.retries, 3, "each lost compare-and-swap is retried and counted (cordon_ratelimit_cas_retries)");
    let h = a.headers().pairs();
    assert!(h.contains(&("x-ratelimit-remaining-requests".into(), "9".into())), "admitted once despite the retries: {h:?}");
}

#[test]
fn a_concurrency_limit_counts_exchanges_in_flight_and_their_end_gives_the_place_back() {
    let l = limits(json!([
        {"name": "two-at-once", "by": ["key"], "concurrent": {"limit": 2}},
        {"name": "rpm", "requests": {"limit": 100, "per": "minute"}}
    ]));
    let store = MemoryStore::new();
    let p = principal("t");
    let who = caller(&p, "k", "m");
    let mut first = l.admit(&who, &ONE, &store, NOW).unwrap();
    let _second = l.admit(&who, &ONE, &store, NOW + S).unwrap();
    let r = l.admit(&who, &ONE, &store, NOW + 2 * S).unwrap_err();
    assert_eq!(code(&r), ("concurrency_limit_exceeded", 429));
    assert!(r.message().contains("two-at-once"), "{}", r.message());
    assert_eq!(r.headers().first(), Some(&("retry-after", "1".to_owned())));
    assert!(l.admit(&caller(&p, "other-key", "m"), &ONE, &store, NOW).is_ok(), "per key");
    // The first exchange ends (usage settled): its place is free again.
    first.reconcile(&l, &Usage { prompt: 1, completion: 1, reported: true }, &store, NOW + 3 * S).unwrap();
    let mut third = l.admit(&who, &ONE, &store, NOW + 3 * S).unwrap();
    // A request refused further down the chain (or never sent) gives its place back too.
    third.release(&l, &store, NOW + 4 * S);
    assert!(l.admit(&who, &ONE, &store, NOW + 4 * S).is_ok());
    // No OpenAI header speaks of concurrency: the requests figures come from the rate limit.
    let h = l.admit(&caller(&p, "k3", "m"), &ONE, &store, NOW + 5 * S).unwrap().headers().pairs();
    assert!(h.contains(&("x-ratelimit-limit-requests".into(), "100".into())), "{h:?}");
}

#[test]
fn concurrency_fields_are_validated_by_name() {
    let bad = |v: serde_json::Value| {
        let rl: Vec<RateLimit> = serde_json::from_value(v).unwrap();
        CompiledLimits::compile(&rl, None).unwrap_err().to_string()
    };
    assert!(bad(json!([{"name": "c", "concurrent": {"limit": 0}}])).contains("rate_limits[0].concurrent.limit"));
    assert!(bad(json!([{"name": "c", "concurrent": {"limit": 2_000_000}}])).contains("rate_limits[0].concurrent.limit"));
    assert!(bad(json!([{"name": "c", "concurrent": {"limit": 2, "stale_after_s": 0}}])).contains("concurrent.stale_after_s"));
    assert!(bad(json!([{"name": "c", "concurrent": {"limit": 2}, "on_exceed": "cut"}])).contains("on_exceed"));
}

proptest! {
    /// Over any interleaving of starts and ends across keys, no key ever has more exchanges
    /// admitted and not yet ended than its limit, and every refusal happened at the limit.
    #[test]
    fn in_flight_never_exceeds_the_limit(ops in proptest::collection::vec((0u8..3, any::<bool>(), 0u64..5), 1..200)) {
        let l = limits(json!([{"name": "c", "concurrent": {"limit": 3}}]));
        let store = MemoryStore::new();
        let p = principal("t");
        let keys = ["a", "b", "c"];
        let mut open: Vec<Vec<Admission>> = vec![Vec::new(), Vec::new(), Vec::new()];
        let mut now = NOW;
        for (k, start, dt) in ops {
            now += dt * S;
            let k = usize::from(k);
            if start {
                match l.admit(&caller(&p, keys[k], "m"), &ONE, &store, now) {
                    Ok(a) => open[k].push(a),
                    Err(r) => {
                        prop_assert_eq!(r.code(), "concurrency_limit_exceeded");
                        prop_assert_eq!(open[k].len(), 3, "refused below the limit");
                    }
                }
                prop_assert!(open[k].len() <= 3);
            } else if let Some(mut a) = open[k].pop() {
                a.reconcile(&l, &Usage::default(), &store, now).unwrap();
            }
        }
    }
}

#[test]
fn giving_back_a_place_whose_counter_was_evicted_evicts_nobody() {
    // One slot: the second key evicts the first's busy counter (counted), and the first
    // exchange's end must not take the slot back from the second.
    let l = limits(json!([{"name": "c", "concurrent": {"limit": 1}, "slots": 1}]));
    let store = MemoryStore::new();
    let p = principal("t");
    let mut a = l.admit(&caller(&p, "a", "m"), &ONE, &store, NOW).unwrap();
    let b = l.admit(&caller(&p, "b", "m"), &ONE, &store, NOW).unwrap();
    assert_eq!(b.evictions, 1, "bounded state: the busy counter of 'a' was evicted");
    a.reconcile(&l, &Usage::default(), &store, NOW + S).unwrap();
    let r = l.admit(&caller(&p, "b", "m"), &ONE, &store, NOW + S).unwrap_err();
    assert_eq!(r.code(), "concurrency_limit_exceeded", "b's exchange still holds its place");
}

#[test]
fn calendar_bounds_hold_now_and_begin_at_the_boundary() {
    use window::{Calendar, utc_date};
    // 2026-11-30 is a Monday.
    let now = 1_796_036_400 * S + 3_600 * S;
    let day = |ns: u64| utc_date(i64::try_from(ns / 1_000_000).unwrap());
    for (cal, start, end) in [
        (Calendar::Day, "2026-11-30", "2026-12-01"),
        (Calendar::Week, "2026-11-30", "2026-12-07"),
        (Calendar::Month, "2026-11-01", "2026-12-01"),
    ] {
        let (s, e) = cal.bounds(now);
        assert!(s <= now && now < e, "{cal:?}");
        assert_eq!((day(s).as_str(), day(e).as_str()), (start, end), "{cal:?}");
        assert_eq!(s % (86_400 * S), 0, "starts at midnight");
    }
}

#[test]
fn a_concurrency_limit_cannot_be_fleet_wide() {
    let rl: Vec<RateLimit> = serde_json::from_value(json!([{"name": "c", "concurrent": {"limit": 2}, "scope": "fleet"}])).unwrap();
    let service: schema::RateLimitService = serde_json::from_value(json!({})).unwrap();
    let e = CompiledLimits::compile_with_service(&rl, None, Some(&service)).unwrap_err().to_string();
    assert!(e.contains("rate_limits[0].scope") && e.contains("concurrency limits are local"), "{e}");
}
