//! The usage ledger: requests and tokens per day, team, user, API key and model, derived from
//! verified audit records only (what nodes signed and the control plane checked), so what
//! `cordonctl usage` shows is backed by the trail. Kept in memory: rebuilt from the stored
//! entries at start-up (like the Merkle tree) and extended as batches are stored.

use cordon_audit::entry::{Body, Entry};
use cordon_audit::record::{Decision, Ident, UsageSource};
use cordon_core::ratelimit::window::utc_date;
use std::collections::BTreeMap;

/// What a ledger row is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LedgerKey {
    /// UTC date, `YYYY-MM-DD`.
    pub day: String,
    /// Team ("" when unknown).
    pub team: String,
    /// User.
    pub user: String,
    /// App.
    pub app: String,
    /// API key id.
    pub key_id: String,
    /// Model.
    pub model: String,
}

/// Counts under one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerCounts {
    /// Exchanges recorded.
    pub requests: u64,
    /// Of which refused by Cordon.
    pub refused: u64,
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Total tokens.
    pub total: u64,
    /// Exchanges whose token figures Cordon estimated (the model reported none).
    pub estimated: u64,
}

impl LedgerCounts {
    fn add(&mut self, o: &LedgerCounts) {
        self.requests += o.requests;
        self.refused += o.refused;
        self.prompt += o.prompt;
        self.completion += o.completion;
        self.total += o.total;
        self.estimated += o.estimated;
    }
}

/// Which fields a usage report groups by (the others are summed over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupBy {
    /// By day.
    pub day: bool,
    /// By team.
    pub team: bool,
    /// By user.
    pub user: bool,
    /// By app.
    pub app: bool,
    /// By API key id.
    pub key: bool,
    /// By model.
    pub model: bool,
}

impl GroupBy {
    /// Parses `day,team,user,app,key,model` (any subset); empty means `day,team,key,model`.
    pub fn parse(fields: &[String]) -> Result<Self, String> {
        if fields.is_empty() {
            return Ok(Self { day: true, team: true, user: false, app: false, key: true, model: true });
        }
        let mut g = Self::default();
        for f in fields.iter().flat_map(|f| f.split(',')).map(str::trim).filter(|f| !f.is_empty()) {
            match f {
                "day" => g.day = true,
                "team" => g.team = true,
                "user" => g.user = true,
                "app" => g.app = true,
                "key" => g.key = true,
                "model" => g.model = true,
                other => return Err(format!("--by: unknown field `{other}` (day, team, user, app, key, model)")),
            }
        }
        Ok(g)
    }
}

/// The ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    rows: BTreeMap<LedgerKey, LedgerCounts>,
}

fn s(v: &Option<Ident>) -> String {
    v.as_ref().map(|i| i.as_str().to_owned()).unwrap_or_default()
}

impl Ledger {
    /// Counts one verified entry (gap entries count nothing).
    pub fn add(&mut self, entry: &Entry) {
        let Body::Record(r) = &entry.body else { return };
        let key = LedgerKey {
            day: utc_date(i64::try_from(entry.time_ms).unwrap_or(i64::MAX)),
            team: s(&r.principal.team),
            user: s(&r.principal.user),
            app: s(&r.principal.app),
            key_id: s(&r.principal.key_id),
            model: s(&r.model),
        };
        let mut c = LedgerCounts { requests: 1, refused: u64::from(r.decision == Decision::Refuse), ..Default::default() };
        if let Some(u) = &r.usage {
            c.prompt = u.prompt;
            c.completion = u.completion;
            c.total = u.total;
            c.estimated = u64::from(u.source == UsageSource::Estimated);
        }
        self.rows.entry(key).or_default().add(&c);
    }

    /// Every row of days `since..=until` (`YYYY-MM-DD`, inclusive), ungrouped.
    pub fn rows(&self, since: &str, until: &str) -> impl Iterator<Item = (&LedgerKey, &LedgerCounts)> {
        self.rows.iter().filter(move |(k, _)| k.day.as_str() >= since && k.day.as_str() <= until)
    }

    /// Rows for days in `since..=until` (`YYYY-MM-DD`, empty = unbounded), grouped by `by`.
    pub fn report(&self, since: &str, until: &str, by: GroupBy) -> Vec<(LedgerKey, LedgerCounts)> {
        let mut out: BTreeMap<LedgerKey, LedgerCounts> = BTreeMap::new();
        for (k, c) in &self.rows {
            if (!since.is_empty() && k.day.as_str() < since) || (!until.is_empty() && k.day.as_str() > until) {
                continue;
            }
            let pick = |on: bool, v: &str| if on { v.to_owned() } else { String::new() };
            let g = LedgerKey {
                day: pick(by.day, &k.day),
                team: pick(by.team, &k.team),
                user: pick(by.user, &k.user),
                app: pick(by.app, &k.app),
                key_id: pick(by.key, &k.key_id),
                model: pick(by.model, &k.model),
            };
            out.entry(g).or_default().add(c);
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_audit::entry::{Gap, GapReason};
    use cordon_audit::record::{AuditRecord, TokenUsage};

    fn entry(time_ms: u64, team: &str, key: &str, model: &str, usage: Option<(u64, u64, bool)>, decision: Decision) -> Entry {
        let mut r = AuditRecord::new(Ident::escaped("r"), decision, Ident::escaped("ok"));
        r.principal.team = Some(Ident::escaped(team));
        r.principal.key_id = Some(Ident::escaped(key));
        r.model = Some(Ident::escaped(model));
        r.usage = usage.map(|(p, c, reported)| TokenUsage {
            prompt: p,
            completion: c,
            total: p + c,
            source: if reported { UsageSource::Reported } else { UsageSource::Estimated },
        });
        Entry { node: Ident::escaped("n"), seq: 0, prev: [0; 32], time_ms, body: Body::Record(r) }
    }

    const DAY1: u64 = 1_796_036_400_000; // 2026-11-30
    const DAY2: u64 = DAY1 + 86_400_000;

    #[test]
    fn usage_is_summed_per_day_team_key_and_model_and_regrouped_on_request() {
        let mut l = Ledger::default();
        l.add(&entry(DAY1, "research", "k1", "gpt-4o", Some((10, 20, true)), Decision::Allow));
        l.add(&entry(DAY1 + 5, "research", "k1", "gpt-4o", Some((1, 2, false)), Decision::Allow));
        l.add(&entry(DAY1, "research", "k2", "gpt-4o", None, Decision::Refuse));
        l.add(&entry(DAY2, "support", "k3", "claude", Some((5, 5, true)), Decision::Allow));
        l.add(&Entry {
            node: Ident::escaped("n"),
            seq: 9,
            prev: [0; 32],
            time_ms: DAY1,
            body: Body::Gap(Gap { from: 7, to: 8, reason: GapReason::BufferFull }),
        });
        let rows = l.report("", "", GroupBy::parse(&[]).unwrap());
        assert_eq!(rows.len(), 3);
        let (k, c) = &rows[0];
        assert_eq!((k.day.as_str(), k.team.as_str(), k.key_id.as_str(), k.model.as_str()), ("2026-11-30", "research", "k1", "gpt-4o"));
        assert_eq!((c.requests, c.prompt, c.completion, c.total, c.estimated), (2, 11, 22, 33, 1));
        assert_eq!((rows[1].1.requests, rows[1].1.refused, rows[1].1.total), (1, 1, 0));
        let by_team = l.report("", "", GroupBy::parse(&["team".into()]).unwrap());
        assert_eq!(by_team.iter().map(|(k, c)| (k.team.as_str(), c.total)).collect::<Vec<_>>(), vec![("research", 33), ("support", 10)]);
        let one_day = l.report("2026-12-01", "2026-12-01", GroupBy::parse(&["model".into()]).unwrap());
        assert_eq!(one_day.len(), 1);
        assert_eq!(one_day[0].0.model, "claude");
        assert!(GroupBy::parse(&["team,colour".into()]).unwrap_err().contains("colour"));
    }
}
