//! The canonical encoding: round trips, one fixed golden vector, and refusal of every
//! non-canonical form.

mod common;

use common::*;
use cordon_audit::encoding::{DecodeError, decode, decode_record, encode, encode_record};
use cordon_audit::hex;
use proptest::prelude::*;

/// The bytes of the example entry. If this changes, the encoding changed: bump the version
/// and document it in docs/audit.md instead of editing this constant.
const GOLDEN: &str = concat!(
    "01", // version 1
    "01", // kind: record
    "0007",
    "656e766f792d61",                                                   // node "envoy-a"
    "0000000000000007",                                                 // seq 7
    "3333333333333333333333333333333333333333333333333333333333333333", // prev
    "0000019b76daa800",                                                 // time_ms 1767225600000
    "0005",
    "7265712d31", // request_id "req-1"
    "01",
    "0005",
    "616c696365", // user "alice"
    "01",
    "0008",
    "7061796d656e7473", // team "payments"
    "01",
    "0008",
    "636865636b6f7574", // app "checkout"
    "01",
    "0002",
    "6b31", // key_id "k1"
    "01",
    "0006",
    "6770742d346f", // model "gpt-4o"
    "01",
    "0006",
    "6f70656e6169", // upstream "openai"
    "01",
    "0014",
    "2f76312f636861742f636f6d706c6574696f6e73", // route "/v1/chat/completions"
    "01",
    "0002",
    "7637",                                                             // policy version "v7"
    "abababababababababababababababababababababababababababababababab", //   bundle sha256
    "01",                                                               // decision: allow
    "0002",
    "6f6b", // reason "ok"
    "01",
    "00",
    "0018",
    "7465616d3a7061796d656e74732f746f6b656e732f6d696e", // rate limit: not limited, bucket
    "00000000000003e8",
    "00000000000003be", //   limit 1000, remaining 958
    "0002",             // 2 redaction counts
    "0007",
    "6177735f6b6579",
    "02",
    "04",
    "0000000000000001", //   aws_key response block 1
    "0005",
    "656d61696c",
    "01",
    "02",
    "0000000000000002", //   email request mask 2
    "01",
    "000000000000000c",
    "000000000000001e",
    "000000000000002a",
    "01", // usage 12/30/42 reported
    "01",
    "00c8",             // status 200
    "00000000000004d2", // duration_ms 1234
    "00000000000000fa", // bytes_in 250
    "0000000000001000", // bytes_out 4096
    "01",
    "1111111111111111111111111111111111111111111111111111111111111111", // request digest
    "01",
    "2222222222222222222222222222222222222222222222222222222222222222", // response digest
    "0001",
    "0013",
    "6f6e5f756e7363616e6e61626c655f70617373", // fail_open ["on_unscannable_pass"]
);

#[test]
fn golden_vector() {
    let bytes = encode(&example_entry());
    assert_eq!(hex(&bytes), GOLDEN);
    assert_eq!(decode(&bytes).unwrap(), example_entry());
}

#[test]
fn unknown_version_kind_and_trailing_bytes_are_refused() {
    let bytes = encode(&example_entry());
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(decode(&v2), Err(DecodeError::UnknownVersion(2)));
    let mut k = bytes.clone();
    k[1] = 9;
    assert!(matches!(decode(&k), Err(DecodeError::BadTag { field: "kind", value: 9, .. })));
    let mut t = bytes.clone();
    t.push(0);
    assert_eq!(decode(&t), Err(DecodeError::TrailingBytes(1)));
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
    }
}

#[test]
fn unsorted_lists_zero_counts_and_bad_tags_are_refused() {
    let bytes = encode(&example_entry());
    let find = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    // The redaction counts are stored as aws_key < email; swapping the first letters of
    // the two detector names makes the order descending.
    let (a, e) = (find(b"aws_key"), find(b"email"));
    let mut swapped = bytes.clone();
    swapped[a] = b'f';
    assert!(matches!(decode(&swapped), Err(DecodeError::NotCanonical { field: "redactions", .. })), "{:?}", decode(&swapped));
    // email's count is the 8 bytes after name, direction and action.
    let mut zero = bytes.clone();
    zero[e + 5 + 2..e + 5 + 10].copy_from_slice(&0u64.to_be_bytes());
    assert!(matches!(decode(&zero), Err(DecodeError::NotCanonical { field: "redaction.count", .. })));
    // An option tag of 2.
    let m = find(b"gpt-4o") - 3;
    let mut tag = bytes.clone();
    tag[m] = 2;
    assert!(matches!(decode(&tag), Err(DecodeError::BadTag { field: "model", value: 2, .. })));
    // A space inside an identifier.
    let mut space = bytes.clone();
    space[find(b"alice") + 1] = b' ';
    assert!(matches!(decode(&space), Err(DecodeError::BadIdent(_))));
}

proptest! {
    #[test]
    fn round_trip(e in entry()) {
        let bytes = encode(&e);
        prop_assert_eq!(decode(&bytes).unwrap(), e);
    }

    #[test]
    fn decode_then_encode_is_identity_on_accepted_bytes(e in entry(), at in any::<usize>(), byte in any::<u8>()) {
        // Whatever mutated bytes decode must re-encode to themselves: one encoding per entry.
        let mut bytes = encode(&e);
        let i = at % bytes.len();
        bytes[i] = byte;
        if let Ok(d) = decode(&bytes) {
            prop_assert_eq!(encode(&d), bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode(&bytes);
    }

    /// The hand-over form (worker to chain writer) loses nothing and seals to the same entry.
    #[test]
    fn a_handed_over_record_round_trips(e in entry(), time in any::<u64>()) {
        if let cordon_audit::entry::Body::Record(r) = &e.body {
            let bytes = encode_record(time, r);
            prop_assert_eq!(decode_record(&bytes).unwrap(), (time, r.clone()));
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(decode_record(&longer), Err(DecodeError::TrailingBytes(1)));
            prop_assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}
