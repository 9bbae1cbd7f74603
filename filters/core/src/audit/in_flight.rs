//! How the node knows how many exchanges its workers hold open (for the shipper's watermark):
//! each worker keeps its count of open drafts under its own shared-data key and announces the
//! key once, through the record queue, with a message no record encoding can start with.

/// Prefix of a worker's announcement on the record queue (records begin with their version
/// byte, never 0).
const HELLO: &[u8] = b"\0cordon.audit.worker\0";

/// The shared-data key under which the worker VM `nonce` keeps its open-draft count.
pub fn worker_key(nonce: u64) -> String {
    format!("cordon.audit.open.{nonce:016x}")
}

/// The queue message announcing `key`.
pub fn hello(key: &str) -> Vec<u8> {
    [HELLO, key.as_bytes()].concat()
}

/// The announced key, if `message` is an announcement (else it is a record).
pub fn announced(message: &[u8]) -> Option<&str> {
    std::str::from_utf8(message.strip_prefix(HELLO)?).ok().filter(|k| k.starts_with("cordon.audit.open."))
}

/// The count as a worker stores it.
pub fn encode_count(open: usize) -> [u8; 8] {
    (open as u64).to_le_bytes()
}

/// A stored count (anything unreadable counts as none open).
pub fn decode_count(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_told_from_records_and_counts_round_trip() {
        let key = worker_key(0xabc);
        assert_eq!(announced(&hello(&key)), Some(key.as_str()));
        let record = cordon_audit::encoding::encode_record(
            1,
            &cordon_audit::record::AuditRecord::new(
                cordon_audit::record::Ident::escaped("r"),
                cordon_audit::record::Decision::Allow,
                cordon_audit::record::Ident::escaped("ok"),
            ),
        );
        assert_eq!(announced(&record), None, "a record is never taken for an announcement");
        assert_eq!(announced(&hello("other.key")), None);
        assert_eq!(decode_count(&encode_count(7)), 7);
        assert_eq!(decode_count(b"junk"), 0);
    }
}
