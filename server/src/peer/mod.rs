//! The peer protocol: compact framed messages over long-lived TCP
//! connections between brokers. The controller's Raft messages and its
//! broker RPCs use it today (`controller::service`); data replication
//! will share the framing with its own frame kinds.
//!
//! | module | owns |
//! |---|---|
//! | `frame` | the frame header layout and a sans-I/O encoder/decoder (unit and garbage tested) |
//! | `io` | blocking `std::io` reads and writes of whole frames |
//! | `aio` | async (compio) reads of whole frames, for the data shards |
//! | `auth` | mutual authentication of a connection with the cluster's inter-broker secret (sans-I/O; driven by `io` and `aio`) |
//!
//! A frame is a fixed 20-byte little-endian header (magic, version, kind,
//! flags, payload size, CRC-32C of the payload), then the payload. A reader
//! checks the magic, the version, the size bound and the CRC before it hands
//! out a payload; any failure is a [`frame::FrameError`], and the connection
//! it came from is closed (a peer that sends one bad frame cannot be
//! resynchronised: the next header's position is unknown).
//!
//! Threads: the codec has none; the blocking helpers in `io` run on whatever
//! thread owns the socket (the controller's connection threads, never a data
//! shard).

pub mod aio;
pub mod auth;
pub mod frame;
pub mod io;

pub use frame::{Frame, FrameDecoder, FrameError, FrameHeader, HEADER_SIZE};
pub use io::{PeerError, read_frame, write_frame};

/// Frame kinds, one registry for every user of the protocol so that two
/// users never reuse a number. Unknown kinds are the receiver's error.
pub mod kind {
    /// A raft-rs message between controller voters (protobuf payload);
    /// one-way, never answered.
    pub const RAFT_MESSAGE: u16 = 1;
    /// A broker's request to a controller (`controller::rpc::Request`).
    pub const CONTROLLER_REQUEST: u16 = 2;
    /// The answer to the request before it on the same connection.
    pub const CONTROLLER_RESPONSE: u16 = 3;
    // 8..=11: peer authentication (`auth`), the first frames of a
    // connection when the cluster has an inter-broker secret.
    /// Client to server: version and client nonce.
    pub const AUTH_HELLO: u16 = 8;
    /// Server to client: server nonce and the server's proof.
    pub const AUTH_CHALLENGE: u16 = 9;
    /// Client to server: the client's proof.
    pub const AUTH_PROOF: u16 = 10;
    /// Server to client: authenticated; the connection's own traffic follows.
    pub const AUTH_OK: u16 = 11;
    // 16..=63: data replication (`replication::messages`).
    /// Leader to follower: batches to append at an offset (none: a
    /// heartbeat carrying the high watermark).
    pub const REPLICA_PUSH: u16 = 16;
    /// Leader to follower: report your log's state (start of a session).
    pub const REPLICA_PROBE: u16 = 17;
    /// Leader to follower: cut your divergent tail (KIP-279 step).
    pub const REPLICA_TRUNCATE: u16 = 18;
    /// Follower to leader: the answer to any of the three, tagged with the
    /// request's id.
    pub const REPLICA_STATE: u16 = 19;
}
