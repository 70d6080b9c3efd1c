//! A fault-injecting TCP proxy on loopback for the replication tests: put
//! it in front of a broker's replication listener (the broker listens on
//! P and advertises the proxy's port) and the test decides what the
//! network between the brokers does.
//!
//! Modes ([`FaultProxy::pass`], [`FaultProxy::blackhole`],
//! [`FaultProxy::reset`]):
//! - pass: bytes are forwarded both ways as they come;
//! - blackhole: a network cut. Connections stay open, nothing is delivered
//!   in either direction: the proxy stops reading, so bytes are held (in
//!   the proxy or the kernel's buffers, like TCP retransmitting into a cut
//!   link) and delivered in order if the cut heals while the endpoints
//!   still hold the connection. A connection accepted during the cut is
//!   held too and reaches the target only after `pass()`;
//! - reset: every current connection is closed (RST where the kernel
//!   allows) and new ones are accepted and reset at once, until `pass()`.
//!
//! Threads: one acceptor, and per connection one thread that waits out a
//! cut before connecting upstream plus one thread per direction. They all
//! poll the mode every few milliseconds and end when the proxy is dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a waiting thread looks at the mode again.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Read timeout of a forwarding thread, so it notices a mode change or
/// the proxy's drop while its source is quiet.
const READ_TIMEOUT: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BUFFER_SIZE_BYTES: usize = 64 * 1024;

/// What the proxy does with traffic; see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Blackhole,
    Reset,
}

impl Mode {
    fn from_u8(value: u8) -> Mode {
        match value {
            0 => Mode::Pass,
            1 => Mode::Blackhole,
            _ => Mode::Reset,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Mode::Pass => 0,
            Mode::Blackhole => 1,
            Mode::Reset => 2,
        }
    }
}

struct Shared {
    target: SocketAddr,
    mode: AtomicU8,
    closing: AtomicBool,
    /// Both sockets of every live connection by connection number, so
    /// that `reset()` and the drop can close them.
    connections: Mutex<HashMap<u64, Vec<TcpStream>>>,
    next_connection: AtomicU64,
    accepted_count: AtomicU64,
    upstream_count: AtomicU64,
    forwarded_bytes: AtomicU64,
}

impl Shared {
    fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    fn register(&self, connection: u64, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            self.connections
                .lock()
                .expect("connections")
                .entry(connection)
                .or_default()
                .push(clone);
        }
    }

    fn forget(&self, connection: u64) {
        self.connections
            .lock()
            .expect("connections")
            .remove(&connection);
    }

    fn close_all(&self) {
        let connections = std::mem::take(&mut *self.connections.lock().expect("connections"));
        for stream in connections.into_values().flatten() {
            abort(&stream);
        }
    }
}

/// A proxy from a free port on 127.0.0.1 to one target address.
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `target` (which need
    /// not listen yet: a connection that cannot reach it is closed).
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the proxy's port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            mode: AtomicU8::new(Mode::Pass.as_u8()),
            closing: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            accepted_count: AtomicU64::new(0),
            upstream_count: AtomicU64::new(0),
            forwarded_bytes: AtomicU64::new(0),
        });
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", address.port()))
            .spawn(move || accept_loop(listener, acceptor_shared))
            .expect("spawning the proxy's acceptor");
        FaultProxy {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.address
    }

    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Forward everything again (held bytes of open connections first).
    pub fn pass(&self) {
        self.shared.mode.store(Mode::Pass.as_u8(), Ordering::SeqCst);
    }

    /// Cut the link: keep connections, deliver nothing either way.
    pub fn blackhole(&self) {
        self.shared
            .mode
            .store(Mode::Blackhole.as_u8(), Ordering::SeqCst);
    }

    /// Close every current connection and refuse new ones until `pass()`.
    pub fn reset(&self) {
        self.shared
            .mode
            .store(Mode::Reset.as_u8(), Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Connections accepted so far (including ones held or refused).
    pub fn accepted_count(&self) -> u64 {
        self.shared.accepted_count.load(Ordering::SeqCst)
    }

    /// Connections that reached the target so far.
    pub fn upstream_count(&self) -> u64 {
        self.shared.upstream_count.load(Ordering::SeqCst)
    }

    /// Bytes delivered so far, both directions together.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.close_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.closing.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted_count.fetch_add(1, Ordering::SeqCst);
                if client.set_nonblocking(false).is_err() || shared.mode() == Mode::Reset {
                    abort(&client);
                    continue;
                }
                let connection = shared.next_connection.fetch_add(1, Ordering::SeqCst);
                shared.register(connection, &client);
                let shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("fault-proxy-connection-{connection}"))
                    .spawn(move || serve(connection, client, shared));
                if let Err(error) = spawned {
                    eprintln!("fault proxy: spawning a connection thread failed: {error}");
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL_INTERVAL);
            }
            Err(error) => {
                eprintln!("fault proxy: accept failed: {error}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// One accepted connection: wait out a cut, connect upstream, forward both
/// ways until either side ends.
fn serve(connection: u64, client: TcpStream, shared: Arc<Shared>) {
    // A connection made during a cut does not reach the target until it heals.
    loop {
        if shared.closing.load(Ordering::SeqCst) {
            abort(&client);
            return;
        }
        match shared.mode() {
            Mode::Pass => break,
            Mode::Blackhole => std::thread::sleep(POLL_INTERVAL),
            Mode::Reset => {
                abort(&client);
                shared.forget(connection);
                return;
            }
        }
    }
    let upstream = match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
        Ok(upstream) => upstream,
        Err(_) => {
            abort(&client);
            shared.forget(connection);
            return;
        }
    };
    shared.upstream_count.fetch_add(1, Ordering::SeqCst);
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    shared.register(connection, &upstream);
    // A reset between the mode check and the registration missed this one.
    if shared.mode() == Mode::Reset {
        abort(&client);
        abort(&upstream);
        shared.forget(connection);
        return;
    }
    let (Ok(client_reader), Ok(upstream_reader)) = (client.try_clone(), upstream.try_clone())
    else {
        abort(&client);
        abort(&upstream);
        shared.forget(connection);
        return;
    };
    let backward_shared = Arc::clone(&shared);
    let backward = std::thread::Builder::new()
        .name(format!("fault-proxy-back-{connection}"))
        .spawn(move || forward(upstream_reader, client, &backward_shared));
    forward(client_reader, upstream, &shared);
    if let Ok(backward) = backward {
        let _ = backward.join();
    }
    shared.forget(connection);
}

/// Copy `source` to `destination` while the mode allows; on the source's
/// end of stream, pass the end on; on an error, close both.
fn forward(mut source: TcpStream, mut destination: TcpStream, shared: &Shared) {
    let _ = source.set_read_timeout(Some(READ_TIMEOUT));
    let mut buffer = vec![0_u8; BUFFER_SIZE_BYTES];
    loop {
        if !wait_for_pass(shared) {
            abort(&source);
            abort(&destination);
            return;
        }
        let count = match source.read(&mut buffer) {
            Ok(0) => {
                let _ = destination.shutdown(Shutdown::Write);
                return;
            }
            Ok(count) => count,
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => {
                abort(&source);
                abort(&destination);
                return;
            }
        };
        // The cut may have begun while these bytes were read: hold them.
        if !wait_for_pass(shared) || destination.write_all(&buffer[..count]).is_err() {
            abort(&source);
            abort(&destination);
            return;
        }
        shared
            .forwarded_bytes
            .fetch_add(count as u64, Ordering::SeqCst);
    }
}

/// Wait while the link is cut: `true` once it passes, `false` when the
/// connection must end (reset, or the proxy is dropped).
fn wait_for_pass(shared: &Shared) -> bool {
    loop {
        if shared.closing.load(Ordering::SeqCst) {
            return false;
        }
        match shared.mode() {
            Mode::Pass => return true,
            Mode::Blackhole => std::thread::sleep(POLL_INTERVAL),
            Mode::Reset => return false,
        }
    }
}

/// Close `stream` abortively: SO_LINGER 0 makes the last close send an RST,
/// and the shutdown wakes any thread blocked on it now.
fn abort(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a socket this process owns, with a pointer
    // to a live `linger` and its exact size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}
