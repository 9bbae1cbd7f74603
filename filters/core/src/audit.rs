//! The audit trail's filter side, host-free: what each role contributes to a request's record
//! ([`draft`]), how the roles of one worker put one record together ([`assembly`]), and how the
//! node seals, signs and delivers records to the control plane ([`shipper`]). The record, its
//! encoding, the chain and the signatures are `cordon-audit`'s, the one definition the control
//! plane and the offline verifier use too.

pub mod assembly;
pub mod draft;
pub mod in_flight;
pub mod shipper;

use serde::{Deserialize, Serialize};

/// The policy's `audit` section: what requests do when they cannot be audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPolicy {
    /// What happens once the node's audit buffer is full (or audit delivery is not set up).
    #[serde(default)]
    pub on_unavailable: OnAuditUnavailable,
}

/// What requests do when the audit trail cannot take their record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAuditUnavailable {
    /// Keep serving; the dropped records become a gap entry that names them.
    #[default]
    Accept,
    /// Refuse new requests with 503 `audit_unavailable` until the buffer drains (fail closed).
    Refuse,
}

/// The node's audit delivery state as the singleton publishes it to the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Records are accepted.
    Open,
    /// The buffer is full: new records are dropped into a gap.
    Full,
}

impl DeliveryState {
    /// The bytes published in shared data.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            DeliveryState::Open => b"open",
            DeliveryState::Full => b"full",
        }
    }

    /// Reads published bytes; anything else (nothing published) is `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes {
            b"open" => Some(DeliveryState::Open),
            b"full" => Some(DeliveryState::Full),
            _ => None,
        }
    }
}

/// Whether a request may go on under `policy` given the published delivery state: with
/// `refuse`, only while records are accepted; a node with no audit delivery (nothing
/// published) refuses too, since its records would go nowhere.
pub fn admits(policy: AuditPolicy, state: Option<DeliveryState>) -> bool {
    match policy.on_unavailable {
        OnAuditUnavailable::Accept => true,
        OnAuditUnavailable::Refuse => state == Some(DeliveryState::Open),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuse_fails_closed_when_full_or_not_set_up() {
        let refuse = AuditPolicy { on_unavailable: OnAuditUnavailable::Refuse };
        assert!(admits(refuse, Some(DeliveryState::Open)));
        assert!(!admits(refuse, Some(DeliveryState::Full)));
        assert!(!admits(refuse, None));
        let accept = AuditPolicy::default();
        assert!(admits(accept, Some(DeliveryState::Full)));
        assert!(admits(accept, None));
    }

    #[test]
    fn delivery_state_round_trips_and_rejects_garbage() {
        for s in [DeliveryState::Open, DeliveryState::Full] {
            assert_eq!(DeliveryState::from_bytes(s.as_bytes()), Some(s));
        }
        assert_eq!(DeliveryState::from_bytes(b""), None);
        assert_eq!(DeliveryState::from_bytes(b"FULL"), None);
    }
}
