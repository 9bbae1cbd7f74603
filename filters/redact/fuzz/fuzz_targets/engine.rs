//! Engine: no panic on any bytes, and any split of the input gives the one-shot output.
//! The first byte picks the split points (a stride), the rest is the input.
#![no_main]

use cordon_redact::{Direction, Engine, Output, StreamRedactor};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| Arc::new(Engine::default_set(b"fuzz").expect("default set"))).clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, input)) = data.split_first() else { return };
    let e = engine();
    let one = e.redact(Direction::Response, input);
    let stride = usize::from(k % 17) + 1;
    let mut s = StreamRedactor::new(e.clone(), Direction::Response);
    let mut acc = Output::default();
    for c in input.chunks(stride) {
        acc.extend(s.push(c));
        assert!(one.bytes.starts_with(&acc.bytes), "emitted prefix diverges");
        assert!(s.held_bytes() <= s.holdback_bound());
    }
    acc.extend(s.finish());
    assert_eq!(acc, one);
});
