//! Fuzz target: recovery of a segment file holding arbitrary bytes.
//!
//! Opening a log whose segment (and optionally checkpoint) is garbage must
//! never panic, must only ever return batches that validate, and must leave
//! a log that takes appends. The stable-Rust twin of this target is
//! engine/tests/recovery_garbage.rs (seeded mutations of real segments).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A first byte of 1 means: the next 36 bytes are a checkpoint file.
    match data.split_first() {
        Some((1, rest)) if rest.len() >= 36 => {
            let (checkpoint, segment) = rest.split_at(36);
            sluice_engine::testing::check_recovery_of(segment, Some(checkpoint));
        }
        Some((_, rest)) => sluice_engine::testing::check_recovery_of(rest, None),
        None => {}
    }
});
