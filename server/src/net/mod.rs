//! Network edge: one SO_REUSEPORT listener per shard, one task per
//! connection, length-prefixed Kafka frames.
//!
//! A connection's requests are handled one at a time, in order (Kafka
//! requires responses in request order). Limits against hostile input: a
//! frame larger than `request_bytes_max` or with a negative size closes the
//! connection before any allocation; a frame that does not decode closes it;
//! a client that never reads only blocks its own task (responses are written
//! one at a time, so at most one response is buffered per connection).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};

use crate::handlers;
use crate::handlers::api_versions::unsupported_version_response;
use crate::protocol::{DecodeError, decode_request};
use crate::shard::Shard;

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

async fn serve(shard: Rc<Shard>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(%peer, shard = shard.id.0, "connection opened");
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
        let response = match decode_request(Bytes::from(frame)) {
            Ok(request) => match handlers::handle(&shard, request, peer).await {
                Ok(response) => response,
                Err(error) => break format!("handler failed: {error:#}"),
            },
            Err(DecodeError::Unsupported {
                api_key: 18,
                correlation_id,
                ..
            }) => match unsupported_version_response(correlation_id) {
                Ok(frame) => Some(frame),
                Err(error) => break format!("encoding ApiVersions: {error}"),
            },
            Err(error) => break error.to_string(),
        };
        let Some(response) = response else { continue };
        if let Err(error) = write_frame(&mut stream, response.parts).await {
            break format!("write: {error}");
        }
    };
    tracing::debug!(%peer, reason, "connection closed");
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
