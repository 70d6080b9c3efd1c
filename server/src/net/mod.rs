//! Network edge: one SO_REUSEPORT listener per shard (the port shared by
//! this process's shards only, see [`bind_shards`]), one task per
//! connection, length-prefixed Kafka frames.
//!
//! A connection's requests are handled in order and answered in order
//! (Kafka requires responses in request order), by two tasks: the reader
//! decodes and handles each request, the writer writes the answers. Produce
//! is pipelined: the reader waits only until the request's batches are
//! appended or queued in order on their owning shards ([`produce::dispatch`],
//! so appends keep arrival order), then
//! reads the next request while the writer waits for durability (the
//! group-commit fsync) and writes the answer. That lets clients with several
//! requests in flight share one fsync between them instead of paying one
//! each. Every other API is handled only once every earlier answer has been
//! written, and is itself written before the next request is handled, as
//! before: at most one large answer (a Fetch) is buffered per connection.
//!
//! Limits against hostile input: a frame larger than `request_bytes_max` or
//! with a negative size closes the connection before anything is allocated
//! for it (plain connections receive into one small buffer, [`PlainReader`]); a
//! frame that does not decode closes it; at most [`PIPELINE_DEPTH`] answers
//! are owed at once, so a client that never reads only blocks its own
//! connection.

pub mod sasl;
pub mod tls;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use futures_channel::{mpsc, oneshot};
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, StreamExt};
use kafka_protocol::messages::RequestKind;

use crate::auth::sasl::{Mechanism, SaslSession};
use crate::auth::{Principal, SecurityProtocol};
use crate::handlers::api_versions::unsupported_version_response;
use crate::handlers::{self, Reply, produce};
use crate::metrics::{self, RecordCounts, ShardCounters};
use crate::protocol::{DecodeError, Request, ResponseFrame, decode_request, encode_response};
use crate::shard::Shard;

/// Answers a connection may owe at once (requests read ahead while earlier
/// Produce requests wait for their fsync). Kafka clients send at most 5 by
/// default (max.in.flight.requests.per.connection).
const PIPELINE_DEPTH: usize = 16;

/// An answer still to be written: resolves to the frame (`None`: nothing
/// to send, acks=0) or to the error that closes the connection.
type Answer = LocalBoxFuture<'static, anyhow::Result<Option<ResponseFrame>>>;

/// An answer, the signal the writer gives once it is written (or
/// skipped), and what the metrics need to know of its request (`None`:
/// not a Kafka request, a raw SASL token).
type Queued = (Answer, oneshot::Sender<()>, Option<Timed>);

/// A request's counter slot ([`metrics::api_slot`]) and when it was read.
#[derive(Clone, Copy)]
struct Timed {
    slot: usize,
    read_at: Instant,
}

/// Bytes of stored records copied in user space on the way to a socket.
/// Fetch responses hand record buffers to the kernel as their own iovecs, so
/// this stays 0; anything that coalesces buffers must add what it copies.
pub static FETCH_RECORD_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);

/// Why the broker cannot listen on its address.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot listen on {address}: address in use by process {pid} (is another broker \
         running?)"
    )]
    InUseBy { address: SocketAddr, pid: u32 },
    #[error(
        "cannot listen on {address}: address in use (another process listens on it, or its \
         sockets did not close within {LINGER_WAIT:?}; is another broker running?)"
    )]
    InUse { address: SocketAddr },
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// How long startup waits for listening sockets that no running process
/// holds. A broker killed with SIGKILL leaves its listeners alive for a
/// moment after it is reaped: io_uring tears a dead process's rings down
/// asynchronously, and a pending accept keeps its listener open until then.
const LINGER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const LINGER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Bind `count` listeners on `address`, one per shard, shared among
/// themselves with SO_REUSEPORT (the kernel spreads connections over the
/// shards) but not with any other process. Returned as std sockets; each
/// shard registers its own with its runtime. Port 0 picks one free port for
/// every shard.
///
/// SO_REUSEPORT would let another process join the port and take part of
/// its connections, so two checks keep the port to this process: a probe
/// bind without SO_REUSEPORT first, which fails with EADDRINUSE while any
/// socket listens on the address; and, once the shards' sockets are bound,
/// a look at the kernel's table of listening sockets for any that are not
/// ours (two processes starting at the same moment both pass the probe;
/// the later one, at least, finds the other's sockets).
///
/// A listener held by a running process fails at once, naming it. One that
/// no process holds (a killed broker's, still closing) is waited for, up to
/// [`LINGER_WAIT`].
pub fn bind_shards(
    address: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, ListenError> {
    let deadline = std::time::Instant::now() + LINGER_WAIT;
    let mut waiting = false;
    loop {
        match try_bind_shards(address, count) {
            Err(ListenError::InUse { .. }) => {}
            other => return other,
        }
        let holders = listeners_on(address, &[], Match::Overlapping);
        if let Some(pid) = holders.iter().find_map(|inode| socket_owner(*inode)) {
            return Err(ListenError::InUseBy { address, pid });
        }
        if std::time::Instant::now() >= deadline {
            return Err(ListenError::InUse { address });
        }
        if !waiting {
            waiting = true;
            tracing::warn!(
                %address,
                "address in use by sockets no running process holds (a stopped broker's, \
                 still closing): waiting up to {LINGER_WAIT:?}"
            );
        }
        std::thread::sleep(LINGER_POLL);
    }
}

fn try_bind_shards(
    address: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, ListenError> {
    let address = probe(address)?;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = bind_shared(address).map_err(|source| bind_error(address, source))?;
        listeners.push(listener);
    }
    let own: Vec<u64> = listeners.iter().filter_map(socket_inode).collect();
    if own.len() == listeners.len() && !listeners_on(address, &own, Match::Exact).is_empty() {
        return Err(ListenError::InUse { address });
    }
    Ok(listeners)
}

/// The process holding the socket with this inode open, if any can be seen
/// (scans /proc/<pid>/fd; processes we may not inspect are not seen).
fn socket_owner(inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    let processes = std::fs::read_dir("/proc").ok()?;
    processes.flatten().find_map(|process| {
        let pid: u32 = process.file_name().to_str()?.parse().ok()?;
        let descriptors = std::fs::read_dir(process.path().join("fd")).ok()?;
        descriptors
            .flatten()
            .any(|descriptor| {
                std::fs::read_link(descriptor.path())
                    .is_ok_and(|link| link.as_os_str() == target.as_str())
            })
            .then_some(pid)
    })
}

/// Bind `address` without SO_REUSEPORT and release it; returns the address
/// with the port the kernel chose when `address` asked for port 0.
fn probe(address: SocketAddr) -> Result<SocketAddr, ListenError> {
    let socket = new_socket(address).map_err(|source| bind_error(address, source))?;
    // SO_REUSEADDR ignores the TIME_WAIT connections of a previous broker
    // on this port, never a listening socket.
    socket
        .set_reuse_address(true)
        .and_then(|()| socket.bind(&address.into()))
        .map_err(|source| bind_error(address, source))?;
    let bound = socket
        .local_addr()
        .ok()
        .and_then(|local| local.as_socket())
        .unwrap_or(address);
    Ok(bound)
}

fn new_socket(address: SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(address);
    socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
}

fn bind_shared(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = new_socket(address)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn bind_error(address: SocketAddr, source: std::io::Error) -> ListenError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        ListenError::InUse { address }
    } else {
        ListenError::Bind { address, source }
    }
}

/// The inode number of a socket, as /proc/net/tcp lists it.
fn socket_inode(listener: &std::net::TcpListener) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: stat is plain old data; all zeroes is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor owned by `listener`, into a stat we own.
    let result = unsafe { libc::fstat(listener.as_raw_fd(), &mut stat) };
    (result == 0).then_some(stat.st_ino)
}

/// Which listening sockets [`listeners_on`] reports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    /// Bound to exactly this address.
    Exact,
    /// Bound to this port on this address or a wildcard one (either side),
    /// that is, in the way of a bind.
    Overlapping,
}

/// The inodes of the listening sockets on `address` that are not in `own`,
/// from /proc/net/tcp or tcp6 (none when the table cannot be read).
fn listeners_on(address: SocketAddr, own: &[u64], matching: Match) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let (table, local) = match address {
        SocketAddr::V4(v4) => (
            "/proc/net/tcp",
            format!("{:08X}", u32::from_ne_bytes(v4.ip().octets())),
        ),
        SocketAddr::V6(v6) => (
            "/proc/net/tcp6",
            v6.ip()
                .octets()
                .chunks_exact(4)
                .map(|word| {
                    format!(
                        "{:08X}",
                        u32::from_ne_bytes([word[0], word[1], word[2], word[3]])
                    )
                })
                .collect(),
        ),
    };
    let port = format!("{:04X}", address.port());
    let wildcard_wanted = matching == Match::Overlapping && address.ip().is_unspecified();
    let Ok(text) = std::fs::read_to_string(table) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode = fields.get(9).and_then(|inode| inode.parse::<u64>().ok())?;
            let (ip, bound_port) = fields.get(1)?.split_once(':')?;
            let wildcard_bound = ip.bytes().all(|digit| digit == b'0');
            let address_matches = ip == local
                || (matching == Match::Overlapping && (wildcard_bound || wildcard_wanted));
            (bound_port == port
                && address_matches
                && fields.get(3) == Some(&LISTEN)
                && !own.contains(&inode))
            .then_some(inode)
        })
        .collect()
}

/// A client listener as its connections need it.
pub struct ListenerSpec {
    /// The listener's name (Metadata answers with endpoints of this name).
    pub name: Arc<str>,
    pub protocol: SecurityProtocol,
    /// The TLS configuration of an SSL or SASL_SSL listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The SASL mechanisms of a SASL listener.
    pub sasl_mechanisms: Vec<Mechanism>,
}

/// A client connection as handlers see it: where it comes from, on which
/// listener, and who it authenticated as (the authorizer's input).
#[derive(Clone, Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub principal: Principal,
}

/// The reading side of a connection.
enum Reader {
    Plain(PlainReader),
    Tls(tls::TlsReader),
}

/// Bytes a plain connection asks the socket for at a time, unless the
/// frame being read needs more.
const READ_CHUNK_BYTES: usize = 8 << 10;

/// A plain connection's reading side: receives up to [`READ_CHUNK_BYTES`]
/// (or the rest of a larger frame) into one buffer and cuts frames out of
/// it, so a request costs one receive, not two (its size prefix, then its
/// body), and requests pipelined behind it in the same receive none (issue
/// 11). Small frames are copied out of it, larger ones are slices of it
/// ([`PlainReader::take`]); an idle connection holds one chunk for its
/// next receive.
struct PlainReader {
    stream: TcpStream,
    /// Received bytes not yet cut into frames.
    buffer: BytesMut,
}

impl PlainReader {
    fn new(stream: TcpStream) -> PlainReader {
        PlainReader {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Receive until `wanted` bytes are buffered. `Ok(false)`: the peer
    /// closed the connection first.
    async fn fill(&mut self, wanted: usize) -> std::io::Result<bool> {
        while self.buffer.len() < wanted {
            self.buffer
                .reserve((wanted - self.buffer.len()).max(READ_CHUNK_BYTES));
            let buffer = std::mem::take(&mut self.buffer);
            let filled = buffer.len();
            let BufResult(result, slice) = self.stream.read(buffer.slice(filled..)).await;
            self.buffer = slice.into_inner();
            if result? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next `size` buffered bytes, as their own `Bytes`. A frame
    /// smaller than [`READ_CHUNK_BYTES`] is copied into an allocation of its
    /// own size: what a request keeps after it is handled (a group member's
    /// metadata, ids) then pins only its own bytes, as before, and the
    /// buffer stays this connection's to receive into again. A larger frame
    /// is a slice of the buffer (no copy), and a buffer it used up is let
    /// go with it.
    fn take(&mut self, size: usize) -> Bytes {
        if size < READ_CHUNK_BYTES {
            let frame = Bytes::copy_from_slice(&self.buffer[..size]);
            self.buffer.advance(size);
            return frame;
        }
        let frame = self.buffer.split_to(size).freeze();
        if self.buffer.is_empty() {
            self.buffer = BytesMut::new();
        }
        frame
    }

    /// Read a frame's 4-byte size prefix. `Ok(None)`: the client closed the
    /// connection between requests, which is how clients normally leave.
    /// `Err` says why the connection ends otherwise (closed within the
    /// prefix, or a read error).
    async fn read_frame_size(&mut self) -> Result<Option<i32>, String> {
        match self.fill(4).await {
            Ok(true) => {}
            Ok(false) if self.buffer.is_empty() => return Ok(None),
            Ok(false) => {
                return Err(
                    "the client closed the connection in the middle of a request's size"
                        .to_string(),
                );
            }
            Err(error) => return Err(format!("reading a request: {error}")),
        }
        Ok(Some(self.buffer.get_i32()))
    }

    async fn read_frame(&mut self, size: usize) -> std::io::Result<Bytes> {
        if !self.fill(size).await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(self.take(size))
    }
}

impl Reader {
    async fn read_frame_size(&mut self) -> Result<Option<i32>, String> {
        match self {
            Reader::Plain(reader) => reader.read_frame_size().await,
            Reader::Tls(reader) => match reader.read_exact(4).await {
                Ok(Some(prefix)) => Ok(Some(i32::from_be_bytes([
                    prefix[0], prefix[1], prefix[2], prefix[3],
                ]))),
                Ok(None) => Ok(None),
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(
                    "the client closed the connection in the middle of a request's size"
                        .to_string(),
                ),
                Err(error) => Err(format!("reading a request: {error}")),
            },
        }
    }

    async fn read_frame(&mut self, size: usize) -> std::io::Result<Bytes> {
        match self {
            Reader::Plain(reader) => reader.read_frame(size).await,
            Reader::Tls(reader) => match reader.read_exact(size).await? {
                Some(frame) => Ok(Bytes::from(frame)),
                None if size == 0 => Ok(Bytes::new()),
                None => Err(std::io::ErrorKind::UnexpectedEof.into()),
            },
        }
    }
}

/// The writing side of a connection.
enum Writer {
    Plain(TcpStream),
    Tls(tls::TlsWriter),
}

impl Writer {
    async fn write_frame(&mut self, parts: Vec<Bytes>, activity: &Activity) -> std::io::Result<()> {
        match self {
            Writer::Plain(stream) => write_frame(stream, parts, activity).await,
            Writer::Tls(writer) => {
                // In the same bounded groups as a plain connection, so that
                // a slow reader's progress counts as activity.
                let mut parts = std::collections::VecDeque::from(parts);
                while !parts.is_empty() {
                    writer.write_all(next_write(&mut parts)).await?;
                    activity.note();
                }
                Ok(())
            }
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Writer::Plain(stream) => stream.shutdown().await,
            Writer::Tls(writer) => writer.shutdown().await,
        };
    }
}

/// When a connection last did something: read a request, or wrote some
/// of an answer (a group of [`write_frame`]). Shared by its reader,
/// writer and [`watch_idle`] on the connection's shard.
#[derive(Clone)]
struct Activity(Rc<std::cell::Cell<Instant>>);

impl Activity {
    fn new() -> Activity {
        Activity(Rc::new(std::cell::Cell::new(Instant::now())))
    }

    fn note(&self) {
        self.0.set(Instant::now());
    }

    fn idle_for(&self) -> std::time::Duration {
        self.0.get().elapsed()
    }
}

/// Shut a connection down once it has been idle for `idle_max` (Kafka's
/// connections.max.idle.ms): no request read and no answer bytes taken.
/// Its pending read then ends and its pending write fails, so the reader
/// and writer stop by their own paths (no operation is cancelled under
/// them). A client that stopped reading its answers held them, and the
/// cache chunks their zero-copy record buffers keep alive, for as long as
/// it stayed connected. `open` turns false when the connection ends,
/// before its socket closes: the descriptor is never touched after.
async fn watch_idle(
    fd: std::os::fd::RawFd,
    open: Rc<std::cell::Cell<bool>>,
    activity: Activity,
    idle_max: std::time::Duration,
    peer: SocketAddr,
) {
    let check = (idle_max / 4).max(std::time::Duration::from_millis(50));
    loop {
        compio::time::sleep(check).await;
        if !open.get() {
            return;
        }
        let idle = activity.idle_for();
        if idle >= idle_max {
            tracing::debug!(%peer, idle_ms = idle.as_millis() as u64, "closing an idle connection (--connections-max-idle-ms)");
            // SAFETY: `fd` is the connection's socket, still open (`open`
            // is checked in this same poll, on the thread that closes it);
            // shutdown(2) only changes the socket's state.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
            return;
        }
    }
}

/// Accept connections forever, one task each.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, spec: Rc<ListenerSpec>) {
    let connections = metrics::registry().listener(&spec.name);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shard = Rc::clone(&shard);
                let spec = Rc::clone(&spec);
                let open = connections.opened();
                compio::runtime::spawn(async move {
                    serve(shard, stream, peer, spec).await;
                    drop(open);
                })
                .detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                compio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// The address a client connection is known by from `peer`, the one the
/// socket reported. An IPv4 client of a dual-stack listener (`[::]`)
/// arrives as an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`); Java's
/// sockets hand Kafka such a peer as the IPv4 address itself
/// (`Inet4Address`), and ACL hosts, the broker-address check of
/// inter-broker calls and a group member's client host all use that form.
/// Kept as reported, an ACL for host 10.0.0.1 never matched such a client.
pub fn client_address(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr, spec: Rc<ListenerSpec>) {
    let peer = client_address(peer);
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let open = Rc::new(std::cell::Cell::new(true));
    compio::runtime::spawn(watch_idle(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        Rc::clone(&open),
        activity.clone(),
        shard.config.connections_max_idle,
        peer,
    ))
    .detach();
    serve_connection(shard, stream, peer, spec, activity).await;
    open.set(false);
}

/// [`serve`] once the connection is watched for idleness.
async fn serve_connection(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    spec: Rc<ListenerSpec>,
    activity: Activity,
) {
    tracing::debug!(%peer, shard = shard.id.0, listener = %spec.name, "connection opened");
    let (mut stream, writer, certificate_principal) = match &spec.tls {
        Some(config) => match tls::accept(stream, Arc::clone(config)).await {
            Ok((reader, writer, principal)) => {
                (Reader::Tls(reader), Writer::Tls(writer), principal)
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "TLS handshake failed: connection closed");
                return;
            }
        },
        None => {
            let (reader, writer) = stream.into_split();
            (
                Reader::Plain(PlainReader::new(reader)),
                Writer::Plain(writer),
                None,
            )
        }
    };
    // The certificate's subject becomes a principal through
    // --ssl-principal-mapping-rules; a subject no rule maps may not log in.
    let certificate_principal = match certificate_principal {
        None => None,
        Some(subject) => match shard.config.ssl_principal_mapping.apply(&subject) {
            Some(name) => {
                let principal = Principal::user(name);
                tracing::debug!(%peer, %subject, %principal, "authenticated by its TLS client certificate");
                Some(principal)
            }
            None => {
                tracing::info!(%peer, %subject, "no --ssl-principal-mapping-rules rule maps this client certificate's subject: connection closed");
                return;
            }
        },
    };
    let mut connection = Connection {
        peer,
        listener: Arc::clone(&spec.name),
        principal: certificate_principal.unwrap_or_else(Principal::anonymous),
    };
    let mut sasl = spec
        .protocol
        .uses_sasl()
        .then(|| SaslSession::new(spec.sasl_mechanisms.clone()));
    let counters = metrics::registry().shard(shard.id);
    let (mut answers, queued) = mpsc::channel::<Queued>(PIPELINE_DEPTH);
    let writing = compio::runtime::spawn(write_answers(writer, queued, counters, activity.clone()));
    // Resolves once the last queued answer is written.
    let mut last_written: Option<oneshot::Receiver<()>> = None;
    let reason = loop {
        let size = match stream.read_frame_size().await {
            Ok(Some(size)) => {
                activity.note();
                size
            }
            Ok(None) => break "the client closed the connection".to_string(),
            Err(error) => break error,
        };
        let Ok(size) = usize::try_from(size) else {
            break format!("negative frame size {size}");
        };
        let unauthenticated = sasl
            .as_ref()
            .is_some_and(|session| session.principal().is_none());
        let limit = if unauthenticated {
            sasl::UNAUTHENTICATED_FRAME_BYTES_MAX
        } else {
            shard.config.request_bytes_max
        };
        if size > limit {
            break format!(
                "frame of {size} bytes exceeds the {limit} byte limit{}",
                if unauthenticated {
                    " before authentication"
                } else {
                    ""
                }
            );
        }
        let frame = match stream.read_frame(size).await {
            Ok(frame) => {
                activity.note();
                frame
            }
            Err(error) => {
                break if error.kind() == std::io::ErrorKind::UnexpectedEof {
                    format!(
                        "the client closed the connection in the middle of a {size}-byte request"
                    )
                } else {
                    format!("reading a request: {error}")
                };
            }
        };
        // After a SaslHandshake v0 the tokens come raw.
        if let Some(session) = sasl.as_mut().filter(|session| session.expects_raw_token()) {
            if let Some(written) = last_written.take() {
                let _ = written.await;
            }
            let image = shard.metadata.controller().image();
            let outcome = sasl::raw_token(session, &frame, &image).await;
            if let Some(reason) = outcome.close {
                break format!("SASL authentication failed: {reason}");
            }
            if let Some(principal) = session.principal() {
                connection.principal = principal.clone();
            }
            let answer: Answer =
                futures_util::future::ready(Ok(Some(outcome.answer))).boxed_local();
            let (done, written) = oneshot::channel();
            let ready = futures_util::future::poll_fn(|context| answers.poll_ready(context)).await;
            if ready.is_err() || answers.start_send((answer, done, None)).is_err() {
                break "the connection's writer stopped".to_string();
            }
            last_written = Some(written);
            continue;
        }
        // Counted by the API key in the frame's first two bytes, whether
        // or not the request decodes.
        let timed = Timed {
            slot: metrics::api_slot(
                frame
                    .get(..2)
                    .map_or(-1, |key| i16::from_be_bytes([key[0], key[1]])),
            ),
            read_at: Instant::now(),
        };
        counters.request_read(timed.slot, size + 4);
        let decoded = decode_request(frame);
        if unauthenticated
            && let Ok(request) = &decoded
            && !sasl::allowed_before_authentication(request.api_key)
        {
            // As Kafka: a request before authentication ends the connection.
            counters.request_done(timed.slot, timed.read_at.elapsed(), 0, true);
            break format!("{:?} before SASL authentication completed", request.api_key);
        }
        let mut close_after = None;
        let answer: Answer = match decoded {
            Ok(
                request @ Request {
                    api_key:
                        kafka_protocol::messages::ApiKey::SaslHandshake
                        | kafka_protocol::messages::ApiKey::SaslAuthenticate,
                    ..
                },
            ) => {
                if let Some(written) = last_written.take() {
                    let _ = written.await;
                }
                let image = shard.metadata.controller().image();
                match sasl::answer(sasl.as_mut(), request, &image).await {
                    Ok(outcome) => {
                        if let Some(principal) = sasl.as_ref().and_then(SaslSession::principal) {
                            connection.principal = principal.clone();
                            tracing::debug!(%peer, principal = %connection.principal, "authenticated");
                        }
                        close_after = outcome.close;
                        futures_util::future::ready(Ok(Some(outcome.answer))).boxed_local()
                    }
                    Err(error) => break format!("SASL: {error:#}"),
                }
            }
            Ok(Request {
                api_key,
                version,
                header,
                body: RequestKind::Produce(body),
            }) => {
                let sent = produce_counts(&body);
                let access = handlers::access(&shard, &connection);
                let completion =
                    produce::dispatch(&shard, version, body, &connection.listener, &access).await;
                drop(access);
                let correlation_id = header.correlation_id;
                async move {
                    let reply = completion.await?;
                    let (appended, partition_errors) = appended_counts(&sent, &reply);
                    counters.produced(appended, partition_errors);
                    Ok(match reply {
                        Reply::Body(body) => {
                            Some(encode_response(api_key, version, correlation_id, &body)?)
                        }
                        Reply::Frame(frame) => Some(frame),
                        Reply::Nothing => None,
                    })
                }
                .boxed_local()
            }
            Ok(request) => {
                if let Some(written) = last_written.take() {
                    // Err: the writer stopped; the send below notices.
                    let _ = written.await;
                }
                match handlers::handle(&shard, request, &connection).await {
                    Ok(response) => futures_util::future::ready(Ok(response)).boxed_local(),
                    Err(error) => {
                        counters.request_done(timed.slot, timed.read_at.elapsed(), 0, true);
                        break format!("handler failed: {error:#}");
                    }
                }
            }
            Err(DecodeError::Unsupported {
                api_key: 18,
                correlation_id,
                ..
            }) => match unsupported_version_response(correlation_id) {
                Ok(frame) => futures_util::future::ready(Ok(Some(frame))).boxed_local(),
                Err(error) => break format!("encoding ApiVersions: {error}"),
            },
            Err(error) => {
                counters.request_done(timed.slot, timed.read_at.elapsed(), 0, true);
                break error.to_string();
            }
        };
        let (done, written) = oneshot::channel();
        let ready = futures_util::future::poll_fn(|context| answers.poll_ready(context)).await;
        if ready.is_err() || answers.start_send((answer, done, Some(timed))).is_err() {
            break "the connection's writer stopped".to_string();
        }
        last_written = Some(written);
        if let Some(reason) = close_after {
            break format!("SASL authentication failed: {reason}");
        }
    };
    // Answers already owed are still written (the writer ends when the
    // queue is empty and closed).
    drop(answers);
    let _ = writing.await;
    tracing::debug!(%peer, reason, "connection closed");
}

/// Write answers in the order they were queued; stop at the first error
/// (a failed acks=0 produce, a handler failure or a write error), shutting
/// the connection down so the client notices.
///
/// Answers that are ready together go out in one write: once an answer
/// resolves, the ones queued behind it that have resolved too (pipelined
/// produce requests whose durable writes completed together) join it, up
/// to [`ANSWERS_PER_WRITE_MAX`]. Each send over loopback also runs the
/// client's receive path on this thread, so one send for several answers
/// saves a round of both (issue 11).
async fn write_answers(
    mut stream: Writer,
    mut queued: mpsc::Receiver<Queued>,
    counters: &'static ShardCounters,
    activity: Activity,
) {
    // An answer taken from the queue while gathering, not ready yet.
    let mut next: Option<Queued> = None;
    'answers: loop {
        let (answer, done, timed) = match next.take() {
            Some(queued) => queued,
            None => match queued.next().await {
                Some(queued) => queued,
                None => break,
            },
        };
        let mut parts = Vec::new();
        let mut written = Vec::new();
        let mut failed = false;
        let mut resolved = Some((answer.await, done, timed));
        while let Some((answer, done, timed)) = resolved.take() {
            if let Some(timed) = timed {
                let response_bytes = match &answer {
                    Ok(Some(frame)) => frame.parts.iter().map(|part| part.len() as u64).sum(),
                    _ => 0,
                };
                counters.request_done(
                    timed.slot,
                    timed.read_at.elapsed(),
                    response_bytes,
                    answer.is_err(),
                );
            }
            match answer {
                Ok(Some(frame)) => parts.extend(frame.parts),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(error = format!("{error:#}"), "closing the connection");
                    failed = true;
                    break;
                }
            }
            written.push(done);
            if written.len() >= ANSWERS_PER_WRITE_MAX {
                break;
            }
            if let Ok((mut answer, done, timed)) = queued.try_recv() {
                match (&mut answer).now_or_never() {
                    Some(answer) => resolved = Some((answer, done, timed)),
                    None => next = Some((answer, done, timed)),
                }
            }
        }
        if !parts.is_empty()
            && let Err(error) = stream.write_frame(parts, &activity).await
        {
            tracing::debug!(%error, "write failed");
            break 'answers;
        }
        for done in written {
            let _ = done.send(());
        }
        if failed {
            break;
        }
    }
    stream.shutdown().await;
}

/// Most answers one write carries ([`write_answers`]): as many as a
/// connection may owe.
const ANSWERS_PER_WRITE_MAX: usize = PIPELINE_DEPTH;

/// Records and bytes of each partition of a produce request, in request
/// order (the order of the answer's partitions).
fn produce_counts(request: &kafka_protocol::messages::ProduceRequest) -> Vec<(i32, RecordCounts)> {
    request
        .topic_data
        .iter()
        .flat_map(|topic| &topic.partition_data)
        .map(|partition| {
            let counts = partition
                .records
                .as_ref()
                .map(RecordCounts::of_batches)
                .unwrap_or_default();
            (partition.index, counts)
        })
        .collect()
}

/// What a produce request appended: every partition of an acks=0 request
/// that was not refused (a refusal closes the connection), else the
/// partitions answered without an error; and how many partitions were
/// answered with one.
fn appended_counts(sent: &[(i32, RecordCounts)], reply: &Reply) -> (RecordCounts, u64) {
    let mut total = RecordCounts::default();
    let mut partition_errors = 0;
    match reply {
        Reply::Nothing => {
            for (_, counts) in sent {
                total.add(*counts);
            }
        }
        Reply::Body(body) => {
            if let kafka_protocol::messages::ResponseKind::Produce(response) = body.as_ref() {
                let answered = response
                    .responses
                    .iter()
                    .flat_map(|topic| &topic.partition_responses);
                for ((index, counts), answer) in sent.iter().zip(answered) {
                    if answer.error_code != 0 {
                        partition_errors += 1;
                    } else if answer.index == *index {
                        total.add(*counts);
                    }
                }
            }
        }
        Reply::Frame(_) => {}
    }
    (total, partition_errors)
}

/// The kernel takes at most IOV_MAX (1024) buffers per vectored write.
const IOVECS_PER_WRITE_MAX: usize = 1024;

/// Bytes per vectored write at most. The kernel copies a write's bytes
/// into the socket on the calling thread, as far as the send buffer takes
/// them (megabytes on loopback): one write of a catch-up's 16 MiB fetch
/// answer held the shard thread, and every produce request waiting on it,
/// for milliseconds. Between two writes of this size the shard runs its
/// other tasks.
const BYTES_PER_WRITE_MAX: usize = 256 << 10;

/// Write a frame's buffers in order, at most `IOVECS_PER_WRITE_MAX` buffers
/// and `BYTES_PER_WRITE_MAX` bytes per system call, without copying them.
async fn write_frame(
    stream: &mut TcpStream,
    parts: Vec<Bytes>,
    activity: &Activity,
) -> std::io::Result<()> {
    let mut parts = std::collections::VecDeque::from(parts);
    while !parts.is_empty() {
        let BufResult(result, _) = stream.write_vectored_all(next_write(&mut parts)).await;
        result?;
        activity.note();
    }
    Ok(())
}

/// The buffers of the next vectored write of [`write_frame`], taken from
/// the front of `parts`: at most `IOVECS_PER_WRITE_MAX` buffers and
/// `BYTES_PER_WRITE_MAX` bytes, a longer buffer split (a view, not a copy).
/// A frame that fits in one write (every produce answer) is handed back
/// whole, without a new allocation.
fn next_write(parts: &mut std::collections::VecDeque<Bytes>) -> Vec<Bytes> {
    let mut count = 0;
    let mut bytes = 0;
    for part in parts.iter() {
        if count == IOVECS_PER_WRITE_MAX || bytes + part.len() > BYTES_PER_WRITE_MAX {
            break;
        }
        count += 1;
        bytes += part.len();
    }
    if count == parts.len() {
        return Vec::from(std::mem::take(parts));
    }
    let mut write: Vec<Bytes> = parts.drain(..count).collect();
    if count < IOVECS_PER_WRITE_MAX && bytes < BYTES_PER_WRITE_MAX {
        // The next buffer is longer than the room left: its head goes now,
        // the rest with the next write.
        if let Some(part) = parts.front_mut() {
            write.push(part.split_to(BYTES_PER_WRITE_MAX - bytes));
        }
    }
    write
}

/// Add to the copy counter (see [`FETCH_RECORD_BYTES_COPIED`]).
pub fn count_copied(bytes: u64) {
    FETCH_RECORD_BYTES_COPIED.fetch_add(bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An IPv4 client of a dual-stack listener is known by its IPv4
    /// address, as Java reports it to Kafka: the ACL host string (the
    /// address's text, auth/authorizer.rs) is then `127.0.0.1`, not
    /// `::ffff:127.0.0.1`. Real IPv6 peers are kept as they are.
    #[test]
    fn an_ipv4_mapped_peer_is_known_by_its_ipv4_address() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(
            client_address(mapped),
            "127.0.0.1:40000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(client_address(mapped).ip().to_string(), "127.0.0.1");
        for kept in ["10.1.2.3:9092", "[::1]:9092", "[fd00::2]:9092"] {
            let peer: SocketAddr = kept.parse().unwrap();
            assert_eq!(client_address(peer), peer);
        }
        let loopback: SocketAddr = "[::1]:9092".parse().unwrap();
        assert_eq!(client_address(loopback).ip().to_string(), "::1");
    }

    /// A frame goes out in writes of bounded size and buffer count, in
    /// order, whole: a catch-up's long fetch answer no longer holds the
    /// shard thread in one long copy.
    #[test]
    fn a_frame_goes_out_in_bounded_writes_in_order() {
        let byte = |index: usize| (index % 251) as u8;
        let buffer = |len: usize, seed: usize| -> Bytes {
            (0..len)
                .map(|index| byte(index + seed))
                .collect::<Vec<u8>>()
                .into()
        };
        let mut parts = vec![
            buffer(4, 1),
            buffer(0, 0),
            buffer(3 * BYTES_PER_WRITE_MAX + 17, 2),
        ];
        parts.extend((0..3000).map(|index| buffer(7, index)));
        parts.push(buffer(BYTES_PER_WRITE_MAX, 5));
        let expected: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();

        let mut rest = std::collections::VecDeque::from(parts.clone());
        let mut groups = Vec::new();
        while !rest.is_empty() {
            groups.push(next_write(&mut rest));
        }
        for group in &groups {
            assert!(!group.is_empty() && group.len() <= IOVECS_PER_WRITE_MAX);
            assert!(group.iter().map(Bytes::len).sum::<usize>() <= BYTES_PER_WRITE_MAX);
        }
        let joined: Vec<u8> = groups
            .iter()
            .flatten()
            .flat_map(|part| part.iter().copied())
            .collect();
        assert!(joined == expected);
        // 3 full writes of the long buffer, the 1024-buffer limit among
        // the small ones, and the last buffer.
        assert!(groups.len() >= 6, "{}", groups.len());
        // A frame that fits goes out as one write of its own buffers.
        let small = vec![buffer(80, 3), buffer(4, 4)];
        let mut rest = std::collections::VecDeque::from(small.clone());
        assert_eq!(next_write(&mut rest), small);
        assert!(rest.is_empty());

        // Over a real socket.
        compio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap();
                let reader = compio::runtime::spawn(async move {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    let BufResult(result, received) = compio::io::AsyncReadExt::read_exact(
                        &mut stream,
                        Vec::with_capacity(expected.len()),
                    )
                    .await;
                    result.unwrap();
                    assert!(received == expected);
                });
                let mut stream = TcpStream::connect(address).await.unwrap();
                write_frame(&mut stream, parts, &Activity::new())
                    .await
                    .unwrap();
                reader.await.unwrap();
            });
    }

    /// Frames come out whole and in order however the bytes arrive: several
    /// in one receive, one split over many (a prefix cut in two, a frame
    /// larger than a receive), and the reader says how the peer left:
    /// between frames (`None`), inside a size prefix or inside a frame
    /// (errors). Small frames own their bytes; a buffer a large frame used
    /// up is let go.
    #[test]
    fn a_plain_reader_cuts_frames_out_of_whatever_the_socket_delivers() {
        let frame = |len: usize, seed: u8| -> Vec<u8> {
            let mut framed = u32::try_from(len).unwrap().to_be_bytes().to_vec();
            framed.extend((0..len).map(|index| (index as u8).wrapping_add(seed)));
            framed
        };
        let sizes = [0, 5, 3 * READ_CHUNK_BYTES + 11, 1, 40_000, 7];
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(index, &len)| frame(len, index as u8))
            .collect();
        // All in one write, then the same again in 5-byte pieces.
        let mut stream_bytes: Vec<u8> = frames.concat();
        let pieces: Vec<Vec<u8>> = stream_bytes.chunks(5).map(<[u8]>::to_vec).collect();
        stream_bytes.clear();
        let ends: [&[u8]; 3] = [b"", &[0, 0], &[0, 0, 0, 9, 1, 2]];
        for (end, expected_end) in ends.into_iter().zip(["between", "prefix", "frame"]) {
            let frames = frames.clone();
            let pieces = pieces.clone();
            compio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let address = listener.local_addr().unwrap();
                    let whole = frames.concat();
                    let writer = compio::runtime::spawn(async move {
                        let mut stream = TcpStream::connect(address).await.unwrap();
                        let BufResult(result, _) = stream.write_all(whole).await;
                        result.unwrap();
                        for piece in pieces {
                            let BufResult(result, _) = stream.write_all(piece).await;
                            result.unwrap();
                            compio::time::sleep(std::time::Duration::from_micros(50)).await;
                        }
                        let BufResult(result, _) = stream.write_all(end.to_vec()).await;
                        result.unwrap();
                        stream.shutdown().await.unwrap();
                    });
                    let (stream, _) = listener.accept().await.unwrap();
                    let mut reader = PlainReader::new(stream);
                    for round in 0..2 {
                        for (index, expected) in frames.iter().enumerate() {
                            let size = reader.read_frame_size().await.unwrap().unwrap();
                            assert_eq!(size as usize, sizes[index], "round {round}");
                            let body = reader.read_frame(size as usize).await.unwrap();
                            assert!(body[..] == expected[4..], "round {round} frame {index}");
                            // A small frame owns its bytes: kept after its
                            // request (group metadata), it pins nothing else.
                            if body.len() < READ_CHUNK_BYTES {
                                assert!(
                                    body.is_empty() || body.is_unique(),
                                    "round {round} frame {index}"
                                );
                            }
                            if body.len() >= READ_CHUNK_BYTES && reader.buffer.is_empty() {
                                assert_eq!(
                                    reader.buffer.capacity(),
                                    0,
                                    "a used-up buffer is let go"
                                );
                            }
                        }
                    }
                    match expected_end {
                        "between" => {
                            assert_eq!(reader.read_frame_size().await, Ok(None));
                        }
                        "prefix" => {
                            let error = reader.read_frame_size().await.unwrap_err();
                            assert!(error.contains("middle of a request's size"), "{error}");
                        }
                        _ => {
                            let size = reader.read_frame_size().await.unwrap().unwrap();
                            assert_eq!(size, 9);
                            let error = reader.read_frame(9).await.unwrap_err();
                            assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
                        }
                    }
                    writer.await.unwrap();
                });
        }
    }

    async fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        let BufResult(result, buffer) =
            compio::io::AsyncReadExt::read_exact(client, Vec::with_capacity(len)).await;
        result.unwrap();
        buffer
    }

    /// The writer sends answers in queue order whatever order they resolve
    /// in, gathering ready ones: one not ready yet, met while gathering, is
    /// waited for (and the ready ones behind it then follow), every written
    /// answer is signalled, and a failed answer ends the connection after
    /// the ones before it, with nothing after it written.
    #[test]
    fn answers_go_out_in_order_whenever_they_resolve_and_a_failure_ends_the_connection() {
        compio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let address = listener.local_addr().unwrap();
                let mut client = TcpStream::connect(address).await.unwrap();
                let (server, _) = listener.accept().await.unwrap();
                let (_, writer) = server.into_split();
                let counters = metrics::registry().shard(crate::shard::ShardId(0));
                let (mut answers, queued) = mpsc::channel::<Queued>(PIPELINE_DEPTH);
                let writing = compio::runtime::spawn(write_answers(
                    Writer::Plain(writer),
                    queued,
                    counters,
                    Activity::new(),
                ));
                let frame = |text: &'static str| -> Answer {
                    futures_util::future::ready(Ok(Some(ResponseFrame {
                        parts: vec![Bytes::from_static(text.as_bytes())],
                    })))
                    .boxed_local()
                };
                let (release, released) = oneshot::channel::<()>();
                let late: Answer = async move {
                    let _ = released.await;
                    Ok(Some(ResponseFrame {
                        parts: vec![Bytes::from_static(b"ccc")],
                    }))
                }
                .boxed_local();
                let failed: Answer =
                    futures_util::future::ready(Err(anyhow::anyhow!("acks=0 failed")))
                        .boxed_local();
                let mut written = Vec::new();
                for answer in [
                    frame("a"),
                    frame("bb"),
                    late,
                    frame("dddd"),
                    failed,
                    frame("x"),
                ] {
                    let (done, signalled) = oneshot::channel();
                    answers.try_send((answer, done, None)).unwrap();
                    written.push(signalled);
                }
                assert_eq!(read_exactly(&mut client, 3).await, b"abb");
                release.send(()).unwrap();
                assert_eq!(read_exactly(&mut client, 7).await, b"cccdddd");
                let BufResult(result, rest) =
                    compio::io::AsyncRead::read(&mut client, Vec::with_capacity(16)).await;
                assert_eq!(result.unwrap(), 0, "closed after the failure: {rest:?}");
                writing.await.unwrap();
                let mut written = written.into_iter();
                for _ in 0..4 {
                    assert_eq!(written.next().unwrap().await, Ok(()));
                }
                for _ in 0..2 {
                    assert!(written.next().unwrap().await.is_err(), "not written");
                }
            });
    }

    #[test]
    fn the_shards_share_one_port_and_a_second_set_is_refused() {
        let listeners = bind_shards("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let address = listeners[0].local_addr().unwrap();
        assert_ne!(address.port(), 0);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), address);
        }
        // Held by a running process (this one): refused at once, naming it.
        let error = bind_shards(address, 3).unwrap_err();
        assert!(
            matches!(error, ListenError::InUseBy { pid, .. } if pid == std::process::id()),
            "{error:?}"
        );
        assert!(error.to_string().contains("address in use"), "{error}");
    }

    #[test]
    fn the_owner_of_a_socket_is_found_by_its_inode() {
        let listener = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let inode = socket_inode(&listener).unwrap();
        assert_eq!(socket_owner(inode), Some(std::process::id()));
        drop(listener);
        assert_eq!(socket_owner(inode), None);
    }

    /// The check that catches a process that passed its probe at the same
    /// moment as this one: SO_REUSEPORT sockets that are not ours.
    #[test]
    fn listeners_that_are_not_ours_are_found() {
        for unspecified in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(first) = bind_shared(unspecified.parse().unwrap()) else {
                continue; // No IPv6 on this machine.
            };
            let address = first.local_addr().unwrap();
            let second = bind_shared(address).unwrap();
            let ours = [socket_inode(&first).unwrap()];
            assert_eq!(
                listeners_on(address, &ours, Match::Exact),
                [socket_inode(&second).unwrap()],
                "{address}"
            );
            let both = [ours[0], socket_inode(&second).unwrap()];
            assert!(
                listeners_on(address, &both, Match::Exact).is_empty(),
                "{address}"
            );
            let wildcard = SocketAddr::new(
                if address.is_ipv4() { "0.0.0.0" } else { "::" }
                    .parse()
                    .unwrap(),
                address.port(),
            );
            assert_eq!(listeners_on(wildcard, &[], Match::Overlapping).len(), 2);
            assert!(listeners_on(wildcard, &[], Match::Exact).is_empty());
        }
    }
}
