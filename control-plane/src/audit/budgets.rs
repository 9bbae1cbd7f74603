//! Where each token budget of the policy stands in its current window, fleet-wide, from the
//! usage ledger (verified audit records): what `cordonctl budgets` shows.
//!
//! Selection and keying are the filter's own (`LimitMatch::matches`, the budget's `by` fields),
//! and windows are the filter's calendar (`Calendar::bounds`), so a row here is the counter a
//! filter keeps, summed over every Envoy that recorded it.

use super::ledger::{Ledger, LedgerCounts, LedgerKey};
use cordon_core::ratelimit::schema::{Budget, BudgetPer, KeyField, RateLimit, TokenCount};
use cordon_core::ratelimit::window::{Calendar, utc_date};
use std::collections::BTreeMap;

/// One budget counter in its current window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The limit's name.
    pub limit: String,
    /// The counter: the budget's `by` fields and their values (`team=research`).
    pub counter: String,
    /// The calendar window.
    pub per: BudgetPer,
    /// First day of the window (`YYYY-MM-DD`).
    pub window_start_day: String,
    /// The day it resets (the next window's first day).
    pub resets_day: String,
    /// Which tokens count.
    pub count: TokenCount,
    /// The budget.
    pub tokens: u64,
    /// Used in this window.
    pub used: u64,
    /// Exchanges whose tokens were estimated (the model reported none).
    pub estimated: u64,
}

impl Standing {
    /// What is left of the budget.
    pub fn remaining(&self) -> u64 {
        self.tokens.saturating_sub(self.used)
    }
}

fn opt(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn value(k: &LedgerKey, f: KeyField) -> &str {
    match f {
        KeyField::Key => &k.key_id,
        KeyField::User => &k.user,
        KeyField::Team => &k.team,
        KeyField::App => &k.app,
        KeyField::Model => &k.model,
    }
}

fn counted(count: TokenCount, c: &LedgerCounts) -> u64 {
    match count {
        TokenCount::Prompt => c.prompt,
        TokenCount::Completion => c.completion,
        TokenCount::Total => c.total,
    }
}

/// Every budget among `limits` at `now_ms`, one row per counter that has usage in the window
/// (a budget nobody used yet gets one row with an empty counter and nothing used).
pub fn standings(limits: &[RateLimit], ledger: &Ledger, now_ms: u64) -> Vec<Standing> {
    let mut out = Vec::new();
    for l in limits {
        let Some(Budget { tokens, per, count }) = l.budget else { continue };
        let (start_ns, end_ns) = Calendar::from(per).bounds(now_ms.saturating_mul(1_000_000));
        let day = |ns: u64| utc_date(i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX));
        let (first, resets) = (day(start_ns), day(end_ns));
        let last = day(end_ns.saturating_sub(1));
        let mut by = l.by.clone();
        by.sort();
        by.dedup();
        let mut counters: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (k, c) in ledger.rows(&first, &last) {
            if !l.selector.matches(opt(&k.user), opt(&k.team), opt(&k.app), opt(&k.key_id), opt(&k.model)) {
                continue;
            }
            if !by.is_empty() && by.iter().all(|f| value(k, *f).is_empty()) {
                // Records of callers with none of the keying values (refused before identity
                // resolved): no counter of the filter's holds them.
                continue;
            }
            let counter = by.iter().map(|f| format!("{}={}", f.as_str(), value(k, *f))).collect::<Vec<_>>().join(",");
            let e = counters.entry(counter).or_default();
            e.0 += counted(count, c);
            e.1 += c.estimated;
        }
        if counters.is_empty() {
            counters.insert(String::new(), (0, 0));
        }
        for (counter, (used, estimated)) in counters {
            out.push(Standing {
                limit: l.name.clone(),
                counter,
                per,
                window_start_day: first.clone(),
                resets_day: resets.clone(),
                count,
                tokens,
                used,
                estimated,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_audit::entry::{Body, Entry};
    use cordon_audit::record::{AuditRecord, Decision, Ident, TokenUsage, UsageSource};

    const NOV_30: u64 = 1_796_036_400_000; // 2026-11-30, 11:00 UTC
    const DAY: u64 = 86_400_000;

    fn entry(time_ms: u64, team: &str, key: &str, model: &str, prompt: u64, completion: u64) -> Entry {
        let mut r = AuditRecord::new(Ident::escaped("r"), Decision::Allow, Ident::escaped("ok"));
        r.principal.team = Some(Ident::escaped(team));
        r.principal.key_id = Some(Ident::escaped(key));
        r.model = Some(Ident::escaped(model));
        r.usage = Some(TokenUsage { prompt, completion, total: prompt + completion, source: UsageSource::Reported });
        Entry { node: Ident::escaped("n"), seq: 0, prev: [0; 32], time_ms, body: Body::Record(r) }
    }

    fn limits(v: serde_json::Value) -> Vec<RateLimit> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_budget_counts_its_window_its_selection_and_its_counters_only() {
        let mut l = Ledger::default();
        l.add(&entry(NOV_30, "research", "k1", "gpt-4o", 10, 30));
        l.add(&entry(NOV_30 - 5 * DAY, "research", "k2", "gpt-4o", 100, 0)); // earlier in November
        l.add(&entry(NOV_30 - 31 * DAY, "research", "k1", "gpt-4o", 1_000, 0)); // October: another window
        l.add(&entry(NOV_30, "support", "k3", "gpt-4o", 7, 0));
        l.add(&entry(NOV_30, "research", "k1", "claude-3", 50, 50)); // not selected
        let mut anonymous = entry(NOV_30, "x", "x", "gpt-4o", 0, 0); // an unauthenticated refusal:
        if let Body::Record(r) = &mut anonymous.body {
            (r.principal.team, r.principal.key_id) = (None, None); // no counter holds it
        }
        l.add(&anonymous);
        let rl = limits(serde_json::json!([
            {"name": "team-monthly", "match": {"model": "gpt-*"}, "by": ["team"], "budget": {"tokens": 500, "per": "month"}},
            {"name": "key-daily", "by": ["key"], "budget": {"tokens": 60, "per": "day", "count": "completion"}},
            {"name": "rpm", "requests": {"limit": 5, "per": "minute"}},
            {"name": "unused", "match": {"team": "nobody"}, "budget": {"tokens": 9, "per": "week"}}
        ]));
        let s = standings(&rl, &l, NOV_30);
        let rows: Vec<(&str, &str, u64, u64)> = s.iter().map(|r| (r.limit.as_str(), r.counter.as_str(), r.used, r.remaining())).collect();
        assert_eq!(
            rows,
            vec![
                ("team-monthly", "team=research", 140, 360),
                ("team-monthly", "team=support", 7, 493),
                ("key-daily", "key=k1", 80, 0),
                ("key-daily", "key=k3", 0, 60),
                ("unused", "", 0, 9),
            ]
        );
        assert_eq!((s[0].window_start_day.as_str(), s[0].resets_day.as_str()), ("2026-11-01", "2026-12-01"));
        assert_eq!((s[2].window_start_day.as_str(), s[2].resets_day.as_str()), ("2026-11-30", "2026-12-01"));
        assert_eq!(s[4].resets_day, "2026-12-07", "ISO weeks reset on Monday");
    }
}
