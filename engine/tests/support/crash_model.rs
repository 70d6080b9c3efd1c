//! The model of what crash tests appended to a log, and the check of a
//! reopened log against it (shared by the crash simulations).

use std::collections::BTreeMap;

use sluice_engine::batch;
use sluice_engine::io::sim::SimIo;
use sluice_engine::{Log, Offset};

use super::{all, batches_of, block_on};

/// What the test knows about each appended batch, by base offset.
pub struct Appended {
    pub stored: Vec<u8>,
    pub end: Offset,
    pub acknowledged: bool,
}

pub struct Model {
    pub batches: BTreeMap<Offset, Appended>,
    pub log_start: Offset,
}

impl Model {
    pub fn new() -> Model {
        Model {
            batches: BTreeMap::new(),
            log_start: Offset::ZERO,
        }
    }

    /// Forget appends at or beyond `end` (rolled back or truncated: their
    /// offsets will be reused).
    pub fn forget_from(&mut self, end: Offset) {
        self.batches.retain(|base, _| *base < end);
    }
}

/// Check the reopened log against the model; then the model becomes what
/// the log holds (all of it durable now).
pub fn check_and_adopt(log: &Log<SimIo>, model: &mut Model) {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    assert_eq!(
        log.durable_end_offset(),
        end,
        "everything recovered is durable"
    );
    assert!(
        start >= model.log_start,
        "log start went back: {start} < {}",
        model.log_start
    );
    let mut offset = start;
    let mut found = BTreeMap::new();
    while offset < end {
        let result = block_on(log.read(offset, all(end))).unwrap();
        assert!(
            !result.records.is_empty(),
            "no progress reading at {offset} (end {end})"
        );
        for stored in batches_of(&result.records) {
            let header = batch::validate(&stored, usize::MAX)
                .unwrap_or_else(|error| panic!("a batch read back is invalid: {error}"));
            let base = header.base_offset();
            if found.is_empty() {
                assert!(
                    base <= start,
                    "first batch {base} starts after the log start {start}"
                );
            } else {
                assert_eq!(base, offset, "offsets are not contiguous");
            }
            let appended = model
                .batches
                .get(&base)
                .unwrap_or_else(|| panic!("batch at {base} was never appended"));
            assert_eq!(
                stored, appended.stored,
                "batch at {base} differs from what was appended"
            );
            offset = header.next_offset();
            found.insert(base, ());
        }
    }
    assert_eq!(offset, end);
    for (base, appended) in &model.batches {
        if appended.acknowledged && appended.end > start {
            assert!(
                found.contains_key(base),
                "acknowledged batch at {base} is lost (log {start}..{end})"
            );
        }
    }
    model.batches.retain(|base, _| found.contains_key(base));
    for appended in model.batches.values_mut() {
        appended.acknowledged = true;
    }
    model.log_start = start;
}
