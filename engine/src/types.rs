//! Newtypes for the numbers the engine must never confuse.
//!
//! Offsets, epochs and positions are all integers on the wire and on disk;
//! inside the engine they are distinct types, converted only through the
//! named functions below.

use std::fmt;

/// A Kafka record offset: the index of a record in its partition's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    pub fn value(self) -> i64 {
        self.0
    }

    /// The offset `count` records after this one.
    pub fn plus(self, count: i64) -> Offset {
        assert!(count >= 0, "offsets only move forward");
        Offset(self.0.checked_add(count).expect("offset overflow"))
    }

    /// Distance from `base` to `self`, for segment-relative index entries.
    pub fn relative_to(self, base: Offset) -> u32 {
        let delta = self.0 - base.0;
        assert!(
            (0..=i64::from(u32::MAX)).contains(&delta),
            "offset {self} not in segment {base}"
        );
        delta as u32
    }

    pub fn from_relative(base: Offset, relative: u32) -> Offset {
        base.plus(i64::from(relative))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The leader epoch a batch was appended under (patched into its header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);

/// A millisecond timestamp since the Unix epoch, as Kafka uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimestampMs(pub i64);

/// A byte position inside one segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    pub fn value(self) -> u64 {
        self.0
    }
}
