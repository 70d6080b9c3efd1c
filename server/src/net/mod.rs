//! Network edge: one SO_REUSEPORT listener per shard, one task per
//! connection, length-prefixed Kafka frames.
//!
//! A connection's requests are handled in order and answered in order
//! (Kafka requires responses in request order), by two tasks: the reader
//! decodes and handles each request, the writer writes the answers. Produce
//! is pipelined: the reader waits only until the request's batches are
//! appended ([`produce::dispatch`], so appends keep arrival order), then
//! reads the next request while the writer waits for durability (the
//! group-commit fsync) and writes the answer. That lets clients with several
//! requests in flight share one fsync between them instead of paying one
//! each. Every other API is handled only once every earlier answer has been
//! written, and is itself written before the next request is handled, as
//! before: at most one large answer (a Fetch) is buffered per connection.
//!
//! Limits against hostile input: a frame larger than `request_bytes_max` or
//! with a negative size closes the connection before any allocation; a
//! frame that does not decode closes it; at most [`PIPELINE_DEPTH`] answers
//! are owed at once, so a client that never reads only blocks its own
//! connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use futures_channel::{mpsc, oneshot};
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, StreamExt};
use kafka_protocol::messages::RequestKind;

use crate::handlers::api_versions::unsupported_version_response;
use crate::handlers::{self, Reply, produce};
use crate::protocol::{DecodeError, Request, ResponseFrame, decode_request, encode_response};
use crate::shard::Shard;

/// Answers a connection may owe at once (requests read ahead while earlier
/// Produce requests wait for their fsync). Kafka clients send at most 5 by
/// default (max.in.flight.requests.per.connection).
const PIPELINE_DEPTH: usize = 16;

/// An answer still to be written: resolves to the frame (`None`: nothing
/// to send, acks=0) or to the error that closes the connection.
type Answer = LocalBoxFuture<'static, anyhow::Result<Option<ResponseFrame>>>;

/// An answer and the signal the writer gives once it is written (or
/// skipped).
type Queued = (Answer, oneshot::Sender<()>);

/// Bytes of stored records copied in user space on the way to a socket.
/// Fetch responses hand record buffers to the kernel as their own iovecs, so
/// this stays 0; anything that coalesces buffers must add what it copies.
pub static FETCH_RECORD_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);

/// Bind a listener socket on the shared address (SO_REUSEPORT), one per
/// shard. Returned as a std socket; the shard registers it with its runtime.
pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Accept connections forever, one task each.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shard = Rc::clone(&shard);
                compio::runtime::spawn(async move { serve(shard, stream, peer).await }).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                compio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, shard = shard.id.0, "connection opened");
    let (mut stream, writer) = stream.into_split();
    let (mut answers, queued) = mpsc::channel::<Queued>(PIPELINE_DEPTH);
    let writing = compio::runtime::spawn(write_answers(writer, queued));
    // Resolves once the last queued answer is written.
    let mut last_written: Option<oneshot::Receiver<()>> = None;
    let reason = loop {
        let BufResult(result, size) = stream.read_exact(Vec::with_capacity(4)).await;
        if let Err(error) = result {
            break format!("read: {error}");
        }
        let size = i32::from_be_bytes([size[0], size[1], size[2], size[3]]);
        let Ok(size) = usize::try_from(size) else {
            break format!("negative frame size {size}");
        };
        if size > shard.config.request_bytes_max {
            break format!(
                "frame of {size} bytes exceeds the {} byte limit",
                shard.config.request_bytes_max
            );
        }
        let BufResult(result, frame) = stream.read_exact(Vec::with_capacity(size)).await;
        if let Err(error) = result {
            break format!("read: {error}");
        }
        let answer: Answer = match decode_request(Bytes::from(frame)) {
            Ok(Request {
                api_key,
                version,
                header,
                body: RequestKind::Produce(body),
            }) => {
                let completion = produce::dispatch(&shard, version, body).await;
                let correlation_id = header.correlation_id;
                async move {
                    Ok(match completion.await? {
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
                match handlers::handle(&shard, request, peer).await {
                    Ok(response) => futures_util::future::ready(Ok(response)).boxed_local(),
                    Err(error) => break format!("handler failed: {error:#}"),
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
            Err(error) => break error.to_string(),
        };
        let (done, written) = oneshot::channel();
        let ready = futures_util::future::poll_fn(|context| answers.poll_ready(context)).await;
        if ready.is_err() || answers.start_send((answer, done)).is_err() {
            break "the connection's writer stopped".to_string();
        }
        last_written = Some(written);
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
async fn write_answers(mut stream: TcpStream, mut queued: mpsc::Receiver<Queued>) {
    while let Some((answer, done)) = queued.next().await {
        match answer.await {
            Ok(Some(frame)) => {
                if let Err(error) = write_frame(&mut stream, frame.parts).await {
                    tracing::debug!(%error, "write failed");
                    break;
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "closing the connection");
                break;
            }
        }
        let _ = done.send(());
    }
    let _ = stream.shutdown().await;
}

/// The kernel takes at most IOV_MAX (1024) buffers per vectored write.
const IOVECS_PER_WRITE_MAX: usize = 1024;

/// Write a frame's buffers in order, at most `IOVECS_PER_WRITE_MAX` per
/// system call, without copying them.
async fn write_frame(stream: &mut TcpStream, mut parts: Vec<Bytes>) -> std::io::Result<()> {
    while !parts.is_empty() {
        let rest = parts.split_off(parts.len().min(IOVECS_PER_WRITE_MAX));
        let BufResult(result, _) = stream.write_vectored_all(parts).await;
        result?;
        parts = rest;
    }
    Ok(())
}

/// Add to the copy counter (see [`FETCH_RECORD_BYTES_COPIED`]).
pub fn count_copied(bytes: u64) {
    FETCH_RECORD_BYTES_COPIED.fetch_add(bytes, Ordering::Relaxed);
}
