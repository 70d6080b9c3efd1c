//! Transactions (issue 12): the transaction coordinator on the leaders of
//! `__transaction_state`, and the hooks the data path calls into.
//! docs/internals/transactions.md describes the design.

pub mod hooks;

/// The internal topic holding the transaction coordinators' state (Kafka's
/// name).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
