//! raft-rs logs through `slog`; this forwards its records to `tracing`
//! (target `raft`), formatting only when the level is enabled, and offers
//! a discarding logger for the simulation. raft-rs's info lines (every
//! state change of the Raft node, several per start) go to debug: the
//! service logs what an operator needs (active controller, registration)
//! at info itself; `--log-level raft=debug,info` shows them.

use std::fmt::Write as _;

use slog::{Drain, KV, Level, OwnedKVList, Record, Serializer};

/// A logger that drops everything (simulation, tests).
pub fn discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// A logger that forwards to `tracing`, tagged with this node's id.
pub fn tracing_logger(node_id: i32) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => node_id))
}

struct TracingDrain;

struct Collect<'a>(&'a mut String);

impl Serializer for Collect<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

fn enabled(level: Level) -> bool {
    match level {
        Level::Critical | Level::Error => tracing::enabled!(target: "raft", tracing::Level::ERROR),
        Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
        Level::Info => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if !enabled(record.level()) {
            return Ok(());
        }
        let mut line = record.msg().to_string();
        let _ = record.kv().serialize(record, &mut Collect(&mut line));
        let _ = values.serialize(record, &mut Collect(&mut line));
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{line}"),
            Level::Warning => tracing::warn!(target: "raft", "{line}"),
            Level::Info => tracing::debug!(target: "raft", "{line}"),
            Level::Debug => tracing::debug!(target: "raft", "{line}"),
            Level::Trace => tracing::trace!(target: "raft", "{line}"),
        }
        Ok(())
    }
}
