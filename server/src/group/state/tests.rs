//! Unit tests of the group state machine (time driven by hand).
#![allow(clippy::unwrap_used)]
