use super::*;
use crate::audit::shipper::{AckEvent, Bounds, Outgoing, Shipper};
use cordon_audit::batch::NodeKeys;
use cordon_audit::chain::{ChainVerifier, GENESIS};
use cordon_audit::entry::Body;
use cordon_audit::record::Decision;
use proptest::prelude::*;

const SEED: [u8; 32] = [7; 32];

fn node() -> Ident {
    Ident::new("node", "envoy-a").unwrap()
}

fn record(n: u64) -> AuditRecord {
    AuditRecord::new(Ident::escaped(&format!("req-{n}")), Decision::Allow, Ident::escaped("ok"))
}

fn shipper(buffer: usize, batch: usize) -> Shipper {
    Shipper::new(node(), Signer::from_seed(&SEED), Bounds { buffer, batch, linger_ms: 0 })
}

/// The control plane's ingest rules in miniature: signature, chain, idempotent replay.
struct FakeLog {
    keys: NodeKeys,
    verifier: ChainVerifier,
    stored: Vec<Body>,
    /// The last watermark, kept for the node's next run.
    claim: Option<u64>,
}

impl FakeLog {
    fn new() -> Self {
        let mut keys = NodeKeys::default();
        keys.add(node(), &Signer::from_seed(&SEED).public_key()).unwrap();
        Self { keys, verifier: ChainVerifier::genesis(node()), stored: vec![], claim: None }
    }

    fn answer(&mut self, out: &Outgoing) -> (u64, Vec<u8>, String) {
        let error = match out {
            Outgoing::Probe { .. } => String::new(),
            Outgoing::Watermark { claim_through, .. } => {
                self.claim = Some(*claim_through);
                String::new()
            }
            Outgoing::Batch(b) => match self.keys.verify(b) {
                Err(e) => e.to_string(),
                Ok(entries) => {
                    let mut err = String::new();
                    for (e, bytes) in entries.iter().zip(&b.entries) {
                        if e.seq < self.verifier.next_seq() {
                            continue; // a replay: already stored
                        }
                        match self.verifier.check(e, bytes) {
                            Ok(_) => self.stored.push(e.body.clone()),
                            Err(x) => {
                                err = x.to_string();
                                break;
                            }
                        }
                    }
                    err
                }
            },
        };
        (self.verifier.next_seq(), self.verifier.prev().to_vec(), error)
    }

    fn records(&self) -> Vec<String> {
        self.stored
            .iter()
            .map(|b| match b {
                Body::Record(r) => r.request_id.as_str().to_owned(),
                Body::Gap(g) => format!("{} gap {}..={}", g.reason.as_str(), g.from, g.to),
            })
            .collect()
    }
}

/// Runs the stream until nothing is left to send.
fn drain(s: &mut Shipper, log: &mut FakeLog) {
    while let Some(out) = s.next_batch(0) {
        let (n, p, e) = log.answer(&out);
        assert!(matches!(s.on_ack(n, &p, &e), AckEvent::Stored { .. }), "refused: {e}");
    }
}

fn connect(s: &mut Shipper, log: &mut FakeLog) -> AckEvent {
    let probe = s.connected();
    assert!(matches!(probe, Outgoing::Probe { .. }));
    let (n, p, e) = log.answer(&probe);
    if let Some(claim) = log.claim {
        s.note_claim(claim, 0);
    }
    s.on_ack(n, &p, &e)
}

#[test]
fn records_kept_before_the_first_connect_are_sealed_from_the_control_planes_position() {
    let mut s = shipper(100, 2);
    for i in 0..5 {
        s.push(i, record(i));
    }
    assert_eq!(s.buffered(), 5);
    assert!(s.next_batch(0).is_none(), "nothing goes out before the position is known");
    let mut log = FakeLog::new();
    assert_eq!(connect(&mut s, &mut log), AckEvent::Positioned { next_seq: 0 });
    let Some(Outgoing::Batch(b)) = s.next_batch(0) else { panic!("a batch") };
    assert_eq!((b.first_seq, b.entries.len()), (0, 2), "batches are bounded");
    assert!(s.next_batch(0).is_none(), "one batch in flight at a time");
    let (n, p, e) = log.answer(&Outgoing::Batch(b));
    assert_eq!(s.on_ack(n, &p, &e), AckEvent::Stored { next_seq: 2 });
    drain(&mut s, &mut log);
    assert_eq!(log.records(), vec!["req-0", "req-1", "req-2", "req-3", "req-4"]);
    assert_eq!((s.buffered(), s.stored_total()), (0, 5));
}

#[test]
fn a_full_buffer_drops_records_into_a_gap_that_names_them() {
    let mut s = shipper(3, 10);
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    for i in 0..7 {
        s.push(i, record(i));
    }
    assert_eq!(s.state(), DeliveryState::Full);
    assert_eq!(s.dropped_total(), 4);
    drain(&mut s, &mut log);
    assert_eq!(s.state(), DeliveryState::Open);
    s.push(8, record(8));
    drain(&mut s, &mut log);
    assert_eq!(log.records(), vec!["req-0", "req-1", "req-2", "buffer_full gap 3..=6", "req-8"]);
}

#[test]
fn a_gap_is_delivered_even_if_no_record_follows() {
    let mut s = shipper(1, 10);
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    s.push(0, record(0));
    s.push(1, record(1));
    drain(&mut s, &mut log);
    drain(&mut s, &mut log);
    assert_eq!(log.records(), vec!["req-0", "buffer_full gap 1..=1"]);
}

#[test]
fn drops_before_the_first_connect_are_numbered_once_the_position_is_known() {
    let mut s = shipper(2, 10);
    for i in 0..4 {
        s.push(i, record(i));
    }
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    drain(&mut s, &mut log);
    drain(&mut s, &mut log);
    assert_eq!(log.records(), vec!["buffer_full gap 0..=1", "req-0", "req-1"]);
}

#[test]
fn an_ack_lost_with_the_stream_is_resent_and_stored_once() {
    let mut s = shipper(100, 10);
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    s.push(0, record(0));
    s.push(1, record(1));
    let out = s.next_batch(0).unwrap();
    let _ = log.answer(&out); // stored, but the ack never arrives
    s.disconnected();
    s.push(2, record(2));
    assert_eq!(connect(&mut s, &mut log), AckEvent::Positioned { next_seq: 2 });
    assert_eq!(s.buffered(), 1, "the position releases what the control plane already holds");
    drain(&mut s, &mut log);
    assert_eq!(log.records(), vec!["req-0", "req-1", "req-2"]);
}

#[test]
fn a_restarted_node_continues_its_chain_instead_of_forking_it() {
    let mut log = FakeLog::new();
    let mut first = shipper(100, 10);
    connect(&mut first, &mut log);
    first.push(0, record(0));
    drain(&mut first, &mut log);
    let mut second = shipper(100, 10);
    second.push(5, record(5));
    assert_eq!(connect(&mut second, &mut log), AckEvent::Positioned { next_seq: 1 });
    drain(&mut second, &mut log);
    assert_eq!(log.records(), vec!["req-0", "req-5"]);
}

#[test]
fn a_control_plane_that_lost_acknowledged_entries_is_refused_not_overwritten() {
    let mut s = shipper(100, 10);
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    s.push(0, record(0));
    drain(&mut s, &mut log);
    s.disconnected();
    let mut wiped = FakeLog::new();
    assert!(matches!(connect(&mut s, &mut wiped), AckEvent::Refused(e) if e.contains("expects seq 0")));
    assert!(s.next_batch(0).is_none());
}

#[test]
fn a_refused_batch_keeps_its_entries() {
    let mut s = shipper(100, 10);
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    s.push(0, record(0));
    let _ = s.next_batch(0).unwrap();
    assert!(matches!(s.on_ack(0, &GENESIS, "control plane store: disk full"), AckEvent::Refused(e) if e.contains("disk full")));
    assert_eq!(s.buffered(), 1);
    s.disconnected();
    connect(&mut s, &mut log);
    drain(&mut s, &mut log);
    assert_eq!(log.records(), vec!["req-0"]);
}

#[test]
fn a_batch_lingers_for_company_unless_it_is_full() {
    let mut s = Shipper::new(node(), Signer::from_seed(&SEED), Bounds { buffer: 100, batch: 3, linger_ms: 200 });
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    s.push(1_000, record(0));
    assert!(s.next_batch(1_100).is_none(), "one record waits for others");
    s.push(1_150, record(1));
    let Some(Outgoing::Batch(b)) = s.next_batch(1_200) else { panic!("the oldest waited 200 ms: it goes") };
    assert_eq!(b.entries.len(), 2);
    let (n, p, e) = log.answer(&Outgoing::Batch(b));
    s.on_ack(n, &p, &e);
    for i in 2..5 {
        s.push(2_000, record(i));
    }
    let Some(Outgoing::Batch(b)) = s.next_batch(2_000) else { panic!("a full batch goes at once") };
    assert_eq!(b.entries.len(), 3);
}

#[test]
fn unexpected_acks_change_nothing() {
    let mut s = shipper(100, 10);
    assert_eq!(s.on_ack(3, &GENESIS, ""), AckEvent::Unexpected);
    let mut log = FakeLog::new();
    connect(&mut s, &mut log);
    assert_eq!(s.on_ack(3, &GENESIS, ""), AckEvent::Unexpected);
}

#[derive(Debug, Clone)]
enum Step {
    Push,
    Send,
    Ack,
    LoseAck,
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![4 => Just(Step::Push), 3 => Just(Step::Send), 3 => Just(Step::Ack), 1 => Just(Step::LoseAck), 1 => Just(Step::Reconnect)]
}

proptest! {
    // Each case signs dozens of batches (slow in a debug build); 64 interleavings suffice.
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the interleaving of records, sends, lost acks and reconnects: every record is
    /// stored exactly once or covered by a gap entry, in order, and the chain verifies.
    #[test]
    fn every_record_is_stored_once_or_named_by_a_gap(steps in prop::collection::vec(step(), 1..120), buffer in 1usize..6) {
        let mut s = shipper(buffer, 3);
        let mut log = FakeLog::new();
        let mut pushed = 0u64;
        let mut pending: Option<Outgoing> = None;
        for st in steps {
            match st {
                Step::Push => { s.push(pushed, record(pushed)); pushed += 1; }
                Step::Send => if pending.is_none() { pending = s.next_batch(0); },
                Step::Ack => if let Some(out) = pending.take() {
                    let (n, p, e) = log.answer(&out);
                    s.on_ack(n, &p, &e);
                },
                Step::LoseAck => if let Some(out) = pending.take() { let _ = log.answer(&out); },
                Step::Reconnect => { pending = None; s.disconnected(); connect(&mut s, &mut log); }
            }
        }
        pending = None;
        let _ = pending;
        s.disconnected();
        connect(&mut s, &mut log);
        for _ in 0..3 { drain(&mut s, &mut log); }
        // Each record's seq is either a stored record or inside a gap, exactly once.
        let mut covered = 0u64;
        let mut names = vec![];
        for b in &log.stored {
            match b {
                Body::Record(r) => { covered += 1; names.push(r.request_id.as_str().to_owned()); }
                Body::Gap(g) => covered += g.to - g.from + 1,
            }
        }
        prop_assert_eq!(covered, pushed, "stored {:?}", log.records());
        let mut sorted = names.clone();
        sorted.sort_by_key(|n| n.trim_start_matches("req-").parse::<u64>().unwrap());
        sorted.dedup();
        prop_assert_eq!(sorted, names, "records in order, none twice");
        prop_assert_eq!(s.dropped_total() + s.stored_total() - log.stored.iter().filter(|b| matches!(b, Body::Gap(_))).count() as u64, pushed);
    }
}

#[test]
fn a_killed_run_leaves_a_restart_gap_for_what_it_sealed_or_had_in_flight() {
    let mut log = FakeLog::new();
    let mut first = shipper(100, 2);
    connect(&mut first, &mut log);
    for n in 0..3 {
        first.push(0, record(n));
    }
    drain(&mut first, &mut log); // 0..=2 stored
    for n in 3..6 {
        first.push(0, record(n)); // sealed as 3..=5, never delivered
    }
    let Some(wm) = first.watermark(1_000, 2) else { panic!("a changed claim is sent") };
    assert!(matches!(wm, Outgoing::Watermark { claim_through: 7, .. }), "{wm:?}: 6 used + 2 in flight");
    log.answer(&wm);
    assert_eq!(first.watermark(1_000 + WATERMARK_MS, 2), None, "unchanged: not repeated");
    assert_eq!(first.watermark(1_001, 3), None, "at most every WATERMARK_MS");
    drop(first); // killed: the buffer and the two exchanges in flight are gone

    let mut second = shipper(100, 8);
    second.push(0, record(100));
    assert!(matches!(connect(&mut second, &mut log), AckEvent::Positioned { next_seq: 3 }));
    drain(&mut second, &mut log);
    let got = log.records();
    assert_eq!(got[3..], ["restart gap 3..=7".to_owned(), "req-100".to_owned()], "{got:?}");
    // A claim the control plane has already stored past makes no gap.
    let mut third = shipper(100, 8);
    assert!(matches!(connect(&mut third, &mut log), AckEvent::Positioned { next_seq: 10 }));
    third.push(0, record(200));
    drain(&mut third, &mut log);
    assert_eq!(log.records().last().map(String::as_str), Some("req-200"));
    assert_eq!(log.records().iter().filter(|r| r.contains("gap")).count(), 1);
}

#[test]
fn a_reconnect_within_one_run_ignores_claims() {
    let mut log = FakeLog::new();
    let mut s = shipper(100, 8);
    connect(&mut s, &mut log);
    s.push(0, record(1));
    drain(&mut s, &mut log);
    log.claim = Some(50); // whatever the control plane says, this run knows its own chain
    s.disconnected();
    assert!(matches!(connect(&mut s, &mut log), AckEvent::Positioned { next_seq: 1 }));
    s.push(0, record(2));
    drain(&mut s, &mut log);
    assert_eq!(log.records(), vec!["req-1".to_owned(), "req-2".to_owned()]);
}
