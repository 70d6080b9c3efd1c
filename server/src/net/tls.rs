//! TLS on a client connection: rustls's sans-I/O `ServerConnection` driven
//! over compio's completion-based socket.
//!
//! compio-tls's stream needs a lock around the whole stream to split it
//! into halves, held for the length of a read: a reader waiting for the
//! next request would then block the writer from sending the answers the
//! client waits for. Here the socket itself is split (compio's `TcpStream`
//! halves are independent) and only the rustls state is shared, borrowed
//! for the CPU work and never across an await. The ciphertext a write
//! produces goes out under `socket_writer`, an async lock held by whoever
//! drained rustls's output, so TLS records reach the socket in the order
//! rustls made them (the reader also sends, rarely: alerts and key-update
//! answers).
//!
//! Limits: the handshake must finish within [`HANDSHAKE_TIMEOUT`]; any
//! protocol error (garbage, a certificate the CA does not vouch for) ends
//! this connection only. Plaintext is produced only as far as the caller
//! asks, so a peer cannot make the broker buffer more than one TLS record
//! ahead. Stored record bytes are encrypted in user space (kTLS offload is
//! not used): the zero-copy Fetch path applies to plaintext listeners.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compio::BufResult;
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::lock::Mutex;
use rustls::ServerConnection;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 32 * 1024;
/// Plaintext handed to rustls at once when writing; its ciphertext is
/// sent before the next chunk is encrypted.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// Why a TLS connection ends.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS handshake: {0}")]
    Handshake(rustls::Error),
    #[error("TLS: {0}")]
    Protocol(rustls::Error),
    #[error("the TLS handshake did not finish within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("the client closed the connection during the TLS handshake")]
    ClosedInHandshake,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

struct Shared {
    session: RefCell<ServerConnection>,
    socket_writer: Mutex<TcpStream>,
}

impl Shared {
    /// Send whatever rustls has to send (handshake messages, alerts).
    async fn flush(&self) -> std::io::Result<()> {
        let mut socket = self.socket_writer.lock().await;
        let out = drain(&mut self.session.borrow_mut())?;
        if !out.is_empty() {
            let BufResult(result, _) = socket.write_all(out).await;
            result?;
        }
        Ok(())
    }
}

/// rustls's pending ciphertext.
fn drain(session: &mut ServerConnection) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut out)?;
    }
    Ok(out)
}

/// The reading half of a TLS connection.
pub struct TlsReader {
    shared: Rc<Shared>,
    socket: TcpStream,
    /// Ciphertext read from the socket that rustls has not taken yet.
    pending: Vec<u8>,
    pending_start: usize,
}

/// The writing half of a TLS connection.
pub struct TlsWriter {
    shared: Rc<Shared>,
}

/// Run the server side of the handshake on `stream`. `Ok` gives the two
/// halves and, when the client presented a certificate (verified by the
/// config's verifier), its subject (RFC 2253), which the caller maps to a
/// principal (`--ssl-principal-mapping-rules`).
pub async fn accept(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<(TlsReader, TlsWriter, Option<String>), TlsError> {
    match compio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, config)).await {
        Ok(result) => result,
        Err(_) => Err(TlsError::HandshakeTimeout),
    }
}

async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<(TlsReader, TlsWriter, Option<String>), TlsError> {
    let session = ServerConnection::new(config).map_err(TlsError::Handshake)?;
    let (socket, socket_writer) = stream.into_split();
    let shared = Rc::new(Shared {
        session: RefCell::new(session),
        socket_writer: Mutex::new(socket_writer),
    });
    let mut reader = TlsReader {
        shared: Rc::clone(&shared),
        socket,
        pending: Vec::new(),
        pending_start: 0,
    };
    loop {
        shared.flush().await?;
        if !shared.session.borrow().is_handshaking() {
            break;
        }
        if reader.pending_start == reader.pending.len() && !reader.fill().await? {
            return Err(TlsError::ClosedInHandshake);
        }
        if let Err(error) = reader.feed() {
            // Tell the client why (an alert), then give up.
            let _ = shared.flush().await;
            return Err(TlsError::Handshake(error));
        }
    }
    let principal = shared
        .session
        .borrow()
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|certificate| crate::auth::tls::subject_of(certificate.as_ref()));
    Ok((reader, TlsWriter { shared }, principal))
}

impl TlsReader {
    /// Read more ciphertext from the socket; `false` at end of stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let BufResult(result, buffer) =
            self.socket.read(Vec::with_capacity(READ_CHUNK_BYTES)).await;
        let count = result?;
        self.pending = buffer;
        self.pending_start = 0;
        Ok(count > 0)
    }

    /// Hand pending ciphertext to rustls and process it.
    fn feed(&mut self) -> Result<(), rustls::Error> {
        let mut session = self.shared.session.borrow_mut();
        let mut slice = &self.pending[self.pending_start..];
        let before = slice.len();
        // An error here is rustls's received-plaintext buffer being full;
        // the caller reads plaintext before feeding more.
        let _ = session.read_tls(&mut slice);
        self.pending_start += before - slice.len();
        session.process_new_packets().map(|_| ())
    }

    /// Read exactly `size` plaintext bytes. `Ok(None)`: the stream ended
    /// (close_notify or the socket closed) before the first byte; an end
    /// in the middle is `UnexpectedEof`.
    pub async fn read_exact(&mut self, size: usize) -> std::io::Result<Option<Vec<u8>>> {
        // The buffer grows with the bytes that arrive, so a size prefix
        // alone does not make the broker touch that much memory.
        let mut out = Vec::with_capacity(size.min(READ_CHUNK_BYTES));
        while out.len() < size {
            let start = out.len();
            out.resize(size.min(start + READ_CHUNK_BYTES), 0);
            let read = self
                .shared
                .session
                .borrow_mut()
                .reader()
                .read(&mut out[start..]);
            match read {
                Ok(0) => {
                    out.truncate(start);
                    return self.ended(out);
                }
                Ok(count) => {
                    out.truncate(start + count);
                    continue;
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    out.truncate(start);
                }
                Err(error) => {
                    out.truncate(start);
                    if error.kind() == std::io::ErrorKind::UnexpectedEof {
                        return self.ended(out);
                    }
                    return Err(error);
                }
            }
            if self.pending_start == self.pending.len() && !self.fill().await? {
                return self.ended(out);
            }
            let fed = self.feed();
            if self.shared.session.borrow().wants_write() {
                self.shared.flush().await?;
            }
            fed.map_err(|error| std::io::Error::other(TlsError::Protocol(error)))?;
        }
        Ok(Some(out))
    }

    fn ended(&self, partial: Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
        if partial.is_empty() {
            Ok(None)
        } else {
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
    }
}

impl TlsWriter {
    /// Encrypt and send `parts` in order.
    pub async fn write_all(&mut self, parts: Vec<Bytes>) -> std::io::Result<()> {
        let mut socket = self.shared.socket_writer.lock().await;
        for part in parts {
            for chunk in part.chunks(WRITE_CHUNK_BYTES) {
                let out = {
                    let mut session = self.shared.session.borrow_mut();
                    session.set_buffer_limit(None);
                    session.writer().write_all(chunk)?;
                    drain(&mut session)?
                };
                let BufResult(result, _) = socket.write_all(out).await;
                result?;
            }
        }
        Ok(())
    }

    /// Send close_notify and shut the socket's sending side.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.shared.session.borrow_mut().send_close_notify();
        self.shared.flush().await?;
        self.shared.socket_writer.lock().await.shutdown().await
    }
}
