//! How the roles of one worker write one record per request. Envoy runs `cordon.identity` and
//! `cordon.redact` of a request on one worker thread in one VM, and calls their log hooks in
//! chain order, so identity's ends before redaction has said what it did. The roles therefore
//! share a draft by a per-stream key (the adapter passes it through Envoy filter state, which
//! the client cannot set): each role that took part *joins* the draft, and the record is
//! finished when the last role that joined leaves. A role absent from a chain never joins, so
//! nothing waits for it.

use super::draft::{Draft, Ending};
use cordon_audit::record::AuditRecord;
use std::collections::BTreeMap;

/// The filter roles that write records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `cordon.identity` (identity, model access, limits).
    Identity,
    /// `cordon.redact`.
    Redact,
}

impl Role {
    fn bit(self) -> u8 {
        match self {
            Role::Identity => 1,
            Role::Redact => 2,
        }
    }
}

struct Pending {
    draft: Draft,
    joined: u8,
}

/// The open drafts of one worker.
pub struct Assembly {
    next_key: u64,
    pending: BTreeMap<u64, Pending>,
    cap: usize,
}

/// What leaving a draft produced.
#[derive(Debug)]
pub enum Left {
    /// Other roles are still in the exchange.
    Waiting,
    /// The last role left: the finished record.
    Finished(Box<AuditRecord>),
    /// No draft under that key (never opened, or already finished).
    Unknown,
}

impl Assembly {
    /// An assembly that holds at most `cap` open drafts (at least one).
    pub fn new(cap: usize) -> Self {
        Self { next_key: 1, pending: BTreeMap::new(), cap: cap.max(1) }
    }

    /// Opens a draft for a request that `role` is first to see; returns its key and, if the
    /// assembly was full, the oldest draft finished early (marked incomplete), which the caller
    /// must still hand over: records are never dropped here.
    pub fn open(&mut self, role: Role, request_id: &str, now_ms: u64) -> (u64, Option<AuditRecord>) {
        let mut evicted = None;
        if self.pending.len() >= self.cap
            && let Some((_, mut oldest)) = self.pending.pop_first()
        {
            oldest.draft.mark_incomplete();
            evicted = Some(oldest.draft.finish(Ending { end_ms: now_ms, ..Ending::default() }));
        }
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1).max(1);
        self.pending.insert(key, Pending { draft: Draft::new(request_id, now_ms), joined: role.bit() });
        (key, evicted)
    }

    /// `role` takes part in the draft `key` (opened by a role before it). False if unknown.
    pub fn join(&mut self, key: u64, role: Role) -> bool {
        match self.pending.get_mut(&key) {
            Some(p) => {
                p.joined |= role.bit();
                true
            }
            None => false,
        }
    }

    /// The draft `key`, to write into.
    pub fn draft(&mut self, key: u64) -> Option<&mut Draft> {
        self.pending.get_mut(&key).map(|p| &mut p.draft)
    }

    /// `role` is done with `key`; the last role out finishes the record with `ending`.
    pub fn leave(&mut self, key: u64, role: Role, ending: impl FnOnce() -> Ending) -> Left {
        let Some(p) = self.pending.get_mut(&key) else { return Left::Unknown };
        p.joined &= !role.bit();
        if p.joined != 0 {
            return Left::Waiting;
        }
        match self.pending.remove(&key) {
            Some(p) => Left::Finished(Box::new(p.draft.finish(ending()))),
            None => Left::Unknown,
        }
    }

    /// Open drafts.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no draft is open.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_audit::record::Decision;

    fn ending() -> Ending {
        Ending { end_ms: 10, status: Some(200), bytes_in: 1, bytes_out: 2 }
    }

    #[test]
    fn identity_leaving_first_waits_for_redaction_which_finishes_the_record() {
        let mut a = Assembly::new(8);
        let (key, evicted) = a.open(Role::Identity, "req-1", 0);
        assert!(evicted.is_none());
        assert!(a.join(key, Role::Redact));
        a.draft(key).unwrap().model("gpt-4o");
        assert!(matches!(a.leave(key, Role::Identity, ending), Left::Waiting));
        let Left::Finished(r) = a.leave(key, Role::Redact, ending) else { panic!("not finished") };
        assert_eq!(r.model.as_ref().map(|m| m.as_str()), Some("gpt-4o"));
        assert_eq!(r.decision, Decision::Allow);
        assert!(a.is_empty());
        assert!(matches!(a.leave(key, Role::Redact, ending), Left::Unknown), "a record is finished once");
    }

    #[test]
    fn a_request_refused_before_redaction_is_finished_by_identity_alone() {
        let mut a = Assembly::new(8);
        let (key, _) = a.open(Role::Identity, "req-2", 0);
        let Left::Finished(_) = a.leave(key, Role::Identity, ending) else { panic!("identity alone must finish") };
    }

    #[test]
    fn either_order_of_leaving_yields_one_record() {
        let mut a = Assembly::new(8);
        let (key, _) = a.open(Role::Redact, "r", 0);
        assert!(a.join(key, Role::Identity));
        assert!(matches!(a.leave(key, Role::Redact, ending), Left::Waiting));
        assert!(matches!(a.leave(key, Role::Identity, ending), Left::Finished(_)));
    }

    #[test]
    fn a_full_assembly_hands_back_its_oldest_draft_marked_incomplete() {
        let mut a = Assembly::new(2);
        let (k1, _) = a.open(Role::Identity, "first", 0);
        let (_, _) = a.open(Role::Identity, "second", 0);
        let (_, evicted) = a.open(Role::Identity, "third", 5);
        let r = evicted.expect("the oldest comes back");
        assert_eq!(r.request_id.as_str(), "first");
        assert!(r.fail_open.iter().any(|p| p.as_str() == "audit_record_incomplete"));
        assert_eq!(a.len(), 2);
        assert!(!a.join(k1, Role::Redact));
    }
}
