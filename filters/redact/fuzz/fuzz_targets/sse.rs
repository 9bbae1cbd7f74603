//! SSE adapters: no panic on any bytes; splitting the body anywhere gives the same output or
//! the same error kind. The first byte picks the format and the split stride.
#![no_main]

use cordon_redact::{Engine, SseFormat, SseRedactor};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| Arc::new(Engine::default_set(b"fuzz").expect("default set"))).clone()
}

fn run(fmt: SseFormat, input: &[u8], stride: usize) -> Result<Vec<u8>, String> {
    let mut r = SseRedactor::new(engine(), fmt);
    let mut out = Vec::new();
    for c in input.chunks(stride.max(1)) {
        out.extend(r.push(c).map_err(|e| format!("{e:?}").chars().take(12).collect::<String>())?.bytes);
    }
    out.extend(r.finish().map_err(|e| format!("{e:?}").chars().take(12).collect::<String>())?.bytes);
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, input)) = data.split_first() else { return };
    let fmt = match k % 3 {
        0 => SseFormat::OpenAiChat,
        1 => SseFormat::OpenAiResponses,
        _ => SseFormat::Anthropic,
    };
    let whole = run(fmt, input, input.len() + 1);
    let split = run(fmt, input, usize::from(k / 3) % 23 + 1);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        // An oversized event may be reported before or after a parse error depending on chunking.
        _ => assert!(input.len() > 1 << 20, "{whole:?} vs {split:?}"),
    }
});
