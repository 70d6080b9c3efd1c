//! Admin subcommands of the `sluice` binary: Kafka *clients* (like Kafka's
//! kafka-*.sh tools) that talk to a broker over the wire protocol. They run
//! on the CLI's own thread, blocking, with no broker state of their own.
//!
//! | module | owns |
//! |---|---|
//! | `client` | a blocking one-connection Kafka client (ApiVersions negotiation, framing, time limits) |
//! | `groups` | `sluice groups list` / `sluice groups describe GROUP` |

pub mod client;
pub mod groups;
