//! The admin HTTP port (`--admin-listen`, default 127.0.0.1:9644 like
//! Redpanda's admin API): `GET /metrics` (Prometheus text format 0.0.4),
//! `GET /v1/status/live` (200 while the process serves HTTP) and
//! `GET /v1/status/ready` (200 once this broker is registered and unfenced
//! and its shards serve; 503 with the reason before, while fenced, and
//! while stopping), and the read-only web console (`GET /`, its assets and
//! the JSON it polls: `/v1/cluster`, `/v1/topics`, `/v1/groups`,
//! `/v1/counters`; crate::console).
//!
//! A small HTTP/1.1 server on std threads, never on a shard: one thread
//! accepts, one short-lived thread serves each connection, at most
//! [`CONNECTIONS_MAX`] at once; connections over the limit are answered 503
//! by a single thread, within 300 ms each. One request per connection
//! (`Connection: close`). A client has
//! [`REQUEST_READ_TIMEOUT`] to send a request head of at most
//! [`REQUEST_HEAD_BYTES_MAX`] bytes, [`RESPONSE_WRITE_TIMEOUT`] to take the
//! whole answer, and what it sends after its request is read for at most
//! [`DRAIN_TIME_MAX`]: a slow or hostile client holds one thread for a
//! bounded time and never delays the others (a client trickling bytes
//! after its answer held its slot for hours, and sixteen of them made
//! every probe a 503). A malformed
//! request line is answered 400 as soon as it is complete. Scrapes and the
//! console's topic and group reads are serialized: at most one gathers from
//! the shards at a time.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::console;
use crate::controller::service::ControllerHandle;
use crate::controller::types::BrokerId;
use crate::metadata::Metadata;
use crate::shard::Shards;

/// Connections served at once; more are refused with a 503.
pub const CONNECTIONS_MAX: usize = 16;
/// Time a client has to send its whole request head.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (request line and headers).
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Connections over [`CONNECTIONS_MAX`] waiting for their 503; more are
/// closed unanswered.
pub const REFUSALS_QUEUED_MAX: usize = 64;
/// Time a client has to take the whole answer.
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long what a client sends after its request is read (and dropped)
/// before the connection closes.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(1);
/// How long a scrape waits for each shard's partitions and commit
/// statistics; a shard that has not answered by then is left out.
pub const SCRAPE_SHARD_WAIT: Duration = Duration::from_secs(2);

/// Why the admin port cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum AdminListenError {
    #[error(
        "cannot listen on {address} for the admin HTTP API (--admin-listen): address in use (is \
         another broker running? give each broker its own --admin-listen HOST:PORT, or \
         --admin-listen none)"
    )]
    InUse { address: SocketAddr },
    #[error("cannot listen on {address} for the admin HTTP API (--admin-listen)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind the admin port (no SO_REUSEPORT: one process per address).
pub fn bind(address: SocketAddr) -> Result<TcpListener, AdminListenError> {
    let error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            AdminListenError::InUse { address }
        } else {
            AdminListenError::Bind { address, source }
        }
    };
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(error)?;
    // TIME_WAIT connections of a previous broker are no obstacle.
    socket.set_reuse_address(true).map_err(error)?;
    socket.bind(&address.into()).map_err(error)?;
    socket.listen(128).map_err(error)?;
    Ok(socket.into())
}

/// What the endpoints read, filled in as the broker starts.
pub struct AdminState {
    node_id: i32,
    controller: OnceLock<ControllerHandle>,
    serving: OnceLock<Serving>,
    stopping: AtomicBool,
    scrape: Mutex<()>,
    started: Instant,
}

struct Serving {
    shards: Arc<Shards>,
    metadata: Arc<Metadata>,
    /// For the console's requests to the other brokers (their groups).
    config: Arc<crate::cli::BrokerConfig>,
}

impl AdminState {
    /// Ready, or why not.
    fn readiness(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        let Some(controller) = self.controller.get() else {
            return Err("waiting for the controller to register this broker");
        };
        if self.serving.get().is_none() {
            return Err("shards starting");
        }
        let unfenced = controller
            .image()
            .broker(BrokerId(self.node_id))
            .is_some_and(|broker| !broker.fenced);
        if !unfenced {
            return Err("fenced by the controller");
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        let _serialized = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (shards, shards_missing) = match self.serving.get() {
            Some(serving) => super::gather_shards(&serving.shards, SCRAPE_SHARD_WAIT),
            None => (Vec::new(), 0),
        };
        let groups = match self.serving.get() {
            Some(serving) => {
                let coordinated =
                    crate::group::coordinated_partitions(&serving.metadata.snapshot());
                console::gather_groups(&serving.shards, coordinated, SCRAPE_SHARD_WAIT).0
            }
            None => Vec::new(),
        };
        let controller = self.controller.get();
        let view = super::BrokerView {
            node_id: self.node_id,
            ready: self.readiness().is_ok(),
            active_controller: controller
                .and_then(ControllerHandle::active_controller)
                .map(|id| id.0),
            metadata_offset: controller.map_or(0, |handle| handle.applied_offset().0),
            metadata: self
                .serving
                .get()
                .map(|serving| serving.metadata.snapshot()),
            shards,
            shards_missing,
            groups,
        };
        super::encode(super::registry(), &view)
    }

    fn broker_status(&self) -> console::BrokerStatus {
        let controller = self.controller.get();
        console::BrokerStatus {
            node_id: self.node_id,
            readiness: self.readiness(),
            active_controller: controller
                .and_then(ControllerHandle::active_controller)
                .map(|id| id.0),
            metadata_offset: controller.map_or(0, |handle| handle.applied_offset().0),
        }
    }

    /// A console JSON document for `path` (one of
    /// [`console::JSON_PATHS`]): 200, or 503 before the shards serve.
    fn console_json(&self, path: &str) -> (u16, serde_json::Value) {
        if path == "/v1/counters" {
            let totals = super::counter_totals(super::registry());
            return (
                200,
                console::counters_json(&totals, self.started.elapsed().as_millis()),
            );
        }
        let serving = self.serving.get();
        let view = serving.map(|serving| serving.metadata.snapshot());
        if path == "/v1/cluster" {
            return (
                200,
                console::cluster_json(&self.broker_status(), view.as_deref()),
            );
        }
        let (Some(serving), Some(view)) = (serving, view) else {
            return (
                503,
                serde_json::json!({"error": "the broker's shards are starting"}),
            );
        };
        let _serialized = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (shards, shards_missing) = super::gather_shards(&serving.shards, SCRAPE_SHARD_WAIT);
        if path == "/v1/topics" {
            return (200, console::topics_json(&view, &shards, shards_missing));
        }
        // A cluster: every group, from its coordinator, with the lag from
        // the partitions' leaders, over the Kafka protocol as `sluice group
        // describe` asks (through this broker's inter-broker listener and
        // credentials). Should that fail, this broker's own groups.
        if view.brokers.len() > 1
            && let Some(this) = view.brokers.get(&self.node_id)
        {
            let target = crate::txn::rpc::inter_broker_target(&serving.config, &view, this);
            let admin_target = crate::admin::profile::Target {
                bootstrap: format!("{}:{}", target.host, target.port),
                security: (*target.security).clone(),
            };
            match console::cluster_groups_json(self.node_id, &admin_target) {
                Ok(json) => return (200, json),
                Err(error) => {
                    tracing::warn!(%error, "console: the cluster's groups could not be read; showing this broker's");
                }
            }
        }
        let coordinated = crate::group::coordinated_partitions(&view);
        let (groups, groups_missing) =
            console::gather_groups(&serving.shards, coordinated, SCRAPE_SHARD_WAIT);
        (
            200,
            console::groups_json(
                self.node_id,
                &groups,
                &shards,
                shards_missing.max(groups_missing),
            ),
        )
    }
}

/// The running admin HTTP server.
pub struct AdminServer {
    address: SocketAddr,
    state: Arc<AdminState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serve on `listener` (from [`bind`]) from now on.
    pub fn start(listener: TcpListener, node_id: i32) -> std::io::Result<AdminServer> {
        let address = listener.local_addr()?;
        let state = Arc::new(AdminState {
            node_id,
            controller: OnceLock::new(),
            serving: OnceLock::new(),
            stopping: AtomicBool::new(false),
            scrape: Mutex::new(()),
            started: Instant::now(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("admin-http".to_string())
                .spawn(move || accept_loop(listener, state, stop))?
        };
        tracing::info!(%address, "admin HTTP API listening (/metrics, /v1/status/ready)");
        Ok(AdminServer {
            address,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The controller service runs (this broker is registered).
    pub fn set_controller(&self, controller: ControllerHandle) {
        let _ = self.state.controller.set(controller);
    }

    /// The shards serve clients.
    pub fn set_serving(
        &self,
        shards: Arc<Shards>,
        metadata: Arc<Metadata>,
        config: Arc<crate::cli::BrokerConfig>,
    ) {
        let _ = self.state.serving.set(Serving {
            shards,
            metadata,
            config,
        });
    }

    /// The broker is stopping: not ready any more.
    pub fn set_stopping(&self) {
        self.state.stopping.store(true, Ordering::Relaxed);
    }

    /// Stop accepting and close the port (connections being served finish
    /// within their time limits). Dropping the server does the same.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept call with a connection of our own.
        let mut wake = self.address;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<AdminState>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    // Connections over the limit are answered 503 by one thread, in turn;
    // beyond what it has queued they are closed unanswered.
    let (refusals, refused) = std::sync::mpsc::sync_channel::<TcpStream>(REFUSALS_QUEUED_MAX);
    let refuser = std::thread::Builder::new()
        .name("admin-http-refuse".to_string())
        .spawn(move || {
            for stream in refused {
                refuse(stream);
            }
        });
    if let Err(error) = &refuser {
        tracing::warn!(%error, "admin HTTP: no thread to refuse connections over the limit");
    }
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "admin HTTP accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = refusals.try_send(stream);
            continue;
        }
        let state = Arc::clone(&state);
        let guard = ActiveGuard(Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("admin-http-conn".to_string())
            .spawn(move || {
                let _guard = guard;
                serve(stream, &state);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "admin HTTP: no thread for a connection");
        }
    }
}

/// Answer a connection over the limit 503 within a short time: read what
/// its request sent so far (closing with unread bytes would reset the
/// connection and lose the answer), answer, close.
fn refuse(mut stream: TcpStream) {
    const REFUSAL_WAIT: Duration = Duration::from_millis(100);
    let _ = stream.set_read_timeout(Some(REFUSAL_WAIT));
    let _ = stream.set_write_timeout(Some(REFUSAL_WAIT));
    let mut head = [0_u8; 4096];
    let _ = stream.read(&mut head);
    let answer = response(
        503,
        "text/plain; charset=utf-8",
        b"too many admin connections\n",
        false,
    );
    if stream.write_all(&answer).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + 2 * REFUSAL_WAIT;
        while Instant::now() < deadline {
            match stream.read(&mut head) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Decrements the count of connections served when dropped.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
struct RequestLine {
    head_only: bool,
    path: String,
}

/// Why a request is refused before routing.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    BadRequest(&'static str),
    MethodNotAllowed,
}

/// Parse `METHOD SP TARGET SP HTTP/1.x`.
fn parse_request_line(line: &[u8]) -> Result<RequestLine, Refusal> {
    let line = std::str::from_utf8(line).map_err(|_| Refusal::BadRequest("not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest("malformed request line"));
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(Refusal::BadRequest("not HTTP/1.0 or HTTP/1.1"));
    }
    if !target.starts_with('/') {
        return Err(Refusal::BadRequest("the target is not an absolute path"));
    }
    if method.is_empty() || !method.bytes().all(|byte| byte.is_ascii_uppercase()) {
        return Err(Refusal::BadRequest("malformed method"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Refusal::MethodNotAllowed),
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(RequestLine {
        head_only,
        path: path.to_string(),
    })
}

/// What reading a request head gave.
enum Head {
    Complete(RequestLine),
    Refused(Refusal),
    /// Closed before a complete request, or too slow: nothing to answer.
    Abandoned,
    TimedOut,
    TooLarge,
}

fn read_head(stream: &mut TcpStream) -> Head {
    let deadline = Instant::now() + REQUEST_READ_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0_u8; 1024];
    let mut request_line: Option<RequestLine> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Head::TimedOut;
        }
        if stream.set_read_timeout(Some(deadline - now)).is_err() {
            return Head::Abandoned;
        }
        let read = match stream.read(&mut chunk) {
            Ok(0) => return Head::Abandoned,
            Ok(read) => read,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Head::TimedOut;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Head::Abandoned,
        };
        head.extend_from_slice(&chunk[..read]);
        if request_line.is_none()
            && let Some(end) = head.iter().position(|byte| *byte == b'\n')
        {
            let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
            match parse_request_line(line) {
                Ok(parsed) => request_line = Some(parsed),
                Err(refusal) => return Head::Refused(refusal),
            }
        }
        if let Some(parsed) = request_line.take() {
            if head.windows(4).any(|window| window == b"\r\n\r\n")
                || head.windows(2).any(|window| window == b"\n\n")
            {
                return Head::Complete(parsed);
            }
            request_line = Some(parsed);
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Head::TooLarge;
        }
    }
}

fn serve(mut stream: TcpStream, state: &AdminState) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(RESPONSE_WRITE_TIMEOUT));
    const TEXT: &str = "text/plain; charset=utf-8";
    let answer = match read_head(&mut stream) {
        Head::Complete(request) => route(&request, state),
        Head::Refused(Refusal::BadRequest(reason)) => response(
            400,
            TEXT,
            format!("bad request: {reason}\n").as_bytes(),
            false,
        ),
        Head::Refused(Refusal::MethodNotAllowed) => {
            response(405, TEXT, b"only GET and HEAD are served\n", false)
        }
        Head::TooLarge => response(
            431,
            TEXT,
            format!("request head larger than {REQUEST_HEAD_BYTES_MAX} bytes\n").as_bytes(),
            false,
        ),
        Head::TimedOut => response(
            408,
            TEXT,
            format!("no complete request within {REQUEST_READ_TIMEOUT:?}\n").as_bytes(),
            false,
        ),
        Head::Abandoned => return,
    };
    if write_within(
        &mut stream,
        &answer,
        Instant::now() + RESPONSE_WRITE_TIMEOUT,
    )
    .is_err()
    {
        return;
    }
    // Closing with unread bytes would reset the connection and could
    // destroy the answer at the client: say we are done, then drain what
    // the client still sends for a moment.
    let _ = stream.shutdown(Shutdown::Write);
    let drain_until = Instant::now() + DRAIN_TIME_MAX;
    let mut sink = [0_u8; 1024];
    let mut drained = 0;
    while drained < 64 * 1024 {
        let left = drain_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = stream.set_read_timeout(Some(left.min(Duration::from_millis(200))));
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(read) => drained += read,
        }
    }
}

/// Write `bytes` whole by `deadline` (each write waits at most what is
/// left of it), else an error.
fn write_within(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn route(request: &RequestLine, state: &AdminState) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let head_only = request.head_only;
    match request.path.as_str() {
        "/metrics" => {
            let text = state.metrics();
            response(200, super::encode::CONTENT_TYPE, text.as_bytes(), head_only)
        }
        "/v1/status/live" => response(200, TEXT, b"live\n", head_only),
        path if console::JSON_PATHS.contains(&path) => {
            let (status, body) = state.console_json(path);
            response_with(
                status,
                "application/json",
                body.to_string().as_bytes(),
                head_only,
                &console::HEADERS,
            )
        }
        "/v1/status/ready" => match state.readiness() {
            Ok(()) => response(200, TEXT, b"ready\n", head_only),
            Err(reason) => response(
                503,
                TEXT,
                format!("not ready: {reason}\n").as_bytes(),
                head_only,
            ),
        },
        path => match console::asset(path) {
            Some((content_type, body)) => {
                response_with(200, content_type, body, head_only, &console::HEADERS)
            }
            None => response(404, TEXT, b"not found\n", head_only),
        },
    }
}

fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    response_with(status, content_type, body, head_only, &[])
}

fn response_with(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status == 405 {
        answer.push_str("Allow: GET, HEAD\r\n");
    }
    for (name, value) in headers {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    let mut bytes = answer.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn request_lines_are_parsed_or_refused() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1"),
            Ok(RequestLine {
                head_only: false,
                path: "/metrics".to_string()
            })
        );
        assert!(parse_request_line(b"HEAD / HTTP/1.0").unwrap().head_only);
        assert_eq!(
            parse_request_line(b"POST /metrics HTTP/1.1"),
            Err(Refusal::MethodNotAllowed)
        );
        for garbage in [
            &b"hello"[..],
            b"GET /metrics",
            b"GET metrics HTTP/1.1",
            b"GET /metrics HTTP/2",
            b"GET  /metrics HTTP/1.1",
            b"\xff\xfe /x HTTP/1.1",
            b"get /metrics HTTP/1.1",
        ] {
            assert!(
                matches!(parse_request_line(garbage), Err(Refusal::BadRequest(_))),
                "{garbage:?}"
            );
        }
    }

    fn exchange(address: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn endpoints_answer_and_a_silent_client_does_not_block_others() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = AdminServer::start(listener, 1).unwrap();
        let address = server.address();
        // A client that connects and sends nothing holds one thread only.
        let _silent = TcpStream::connect(address).unwrap();
        let live = exchange(address, b"GET /v1/status/live HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(live.starts_with("HTTP/1.1 200 OK\r\n"), "{live}");
        assert!(live.ends_with("\r\n\r\nlive\n"), "{live}");
        let ready = exchange(address, b"GET /v1/status/ready HTTP/1.1\r\n\r\n");
        assert!(ready.starts_with("HTTP/1.1 503 "), "{ready}");
        assert!(
            ready.contains("not ready: waiting for the controller"),
            "{ready}"
        );
        let metrics = exchange(address, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(metrics.contains("# TYPE sluice_broker_ready gauge\nsluice_broker_ready 0\n"));
        let missing = exchange(address, b"GET /nothing HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let garbage = exchange(address, b"\x16\x03\x01 garbage\r\n\r\n");
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        let huge = [b"GET / HTTP/1.1\r\nX: ".to_vec(), vec![b'a'; 10_000]].concat();
        let too_large = exchange(address, &huge);
        assert!(too_large.starts_with("HTTP/1.1 431 "), "{too_large}");
        let head = exchange(address, b"HEAD /v1/status/live HTTP/1.0\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        server.stop();
        assert!(TcpStream::connect(address).is_err(), "the port is closed");
    }

    #[test]
    fn the_console_is_served_and_its_data_waits_for_the_shards() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = AdminServer::start(listener, 3).unwrap();
        let address = server.address();
        let page = exchange(address, b"GET / HTTP/1.1\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("Content-Type: text/html"), "{page}");
        assert!(page.contains("Content-Security-Policy: "), "{page}");
        assert!(
            page.contains("<script src=\"/console/console.js\""),
            "{page}"
        );
        let script = exchange(address, b"HEAD /console/console.js HTTP/1.1\r\n\r\n");
        assert!(script.starts_with("HTTP/1.1 200 OK\r\n"), "{script}");
        assert!(script.ends_with("\r\n\r\n"), "HEAD has no body: {script}");
        // Before the shards serve: the cluster says why, the rest 503.
        let cluster = exchange(address, b"GET /v1/cluster HTTP/1.1\r\n\r\n");
        assert!(cluster.starts_with("HTTP/1.1 200 OK\r\n"), "{cluster}");
        let body = cluster.split_once("\r\n\r\n").unwrap().1;
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["node_id"], 3);
        assert_eq!(json["ready"], false);
        for path in ["/v1/topics", "/v1/groups"] {
            let answer = exchange(address, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
            assert!(answer.starts_with("HTTP/1.1 503 "), "{path}: {answer}");
            assert!(answer.contains("application/json"), "{path}: {answer}");
        }
        let counters = exchange(address, b"GET /v1/counters HTTP/1.1\r\n\r\n");
        assert!(counters.starts_with("HTTP/1.1 200 OK\r\n"), "{counters}");
        assert!(
            counters.contains("\"latency_bounds_seconds\""),
            "{counters}"
        );
        server.stop();
    }

    #[test]
    fn connections_beyond_the_limit_are_answered_503_at_once() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = AdminServer::start(listener, 1).unwrap();
        let address = server.address();
        let silent: Vec<TcpStream> = (0..CONNECTIONS_MAX)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        let started = Instant::now();
        // The accept thread counts the silent ones first (it accepts in
        // order), so this one is over the limit.
        let refused = exchange(address, b"GET /v1/status/live HTTP/1.1\r\n\r\n");
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
        assert!(started.elapsed() < REQUEST_READ_TIMEOUT);
        drop(silent);
        // Once they are gone (closed: their threads end), it serves again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = exchange(address, b"GET /v1/status/live HTTP/1.1\r\n\r\n");
            if answer.starts_with("HTTP/1.1 200 ") {
                break;
            }
            assert!(Instant::now() < deadline, "{answer}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Clients that keep sending after their answer, a byte at a time,
    /// hold their connections at most DRAIN_TIME_MAX: a probe made while
    /// sixteen of them trickle on is answered.
    #[test]
    fn clients_trickling_after_their_answer_do_not_hold_their_slots() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = AdminServer::start(listener, 1).unwrap();
        let address = server.address();
        let stop = Arc::new(AtomicBool::new(false));
        let tricklers: Vec<_> = (0..CONNECTIONS_MAX)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut stream = TcpStream::connect(address).unwrap();
                    stream
                        .write_all(b"GET /v1/status/live HTTP/1.1\r\n\r\n")
                        .unwrap();
                    let mut answer = [0_u8; 256];
                    let _ = stream.read(&mut answer);
                    let until = Instant::now() + Duration::from_secs(12);
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        if stream.write_all(b"x").is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(150));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let answer = exchange(address, b"GET /v1/status/live HTTP/1.1\r\n\r\n");
            if answer.starts_with("HTTP/1.1 200 ") {
                break;
            }
            assert!(Instant::now() < deadline, "still refused: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        for trickler in tricklers {
            trickler.join().unwrap();
        }
        server.stop();
    }

    #[test]
    fn a_taken_port_is_refused_with_a_clear_message() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = first.local_addr().unwrap();
        let error = bind(address).unwrap_err();
        assert!(matches!(error, AdminListenError::InUse { .. }), "{error:?}");
        assert!(error.to_string().contains("--admin-listen"), "{error}");
    }
}
