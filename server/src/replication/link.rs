//! The leader's side of the data connections: one TCP connection per
//! (leader shard, follower broker), opened on first use and again after a
//! failure, carrying every push of the partitions this shard leads to that
//! broker. Requests are pipelined; answers come back on the same
//! connection, matched by request id. A broken connection cancels every
//! answer still owed (their receivers see `Canceled`): the pushers then
//! sync again over a new one.
//!
//! Why per (shard, broker) and not per broker pair: a shard owns its
//! partitions' logs, so its pushes read and send without crossing cores;
//! one connection per broker pair would hop every push through one shard.
//! On the follower the listener's shard hands each message to the owning
//! shard (one hop), see `replication::follower`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::BufResult;
use compio::io::{AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_channel::oneshot;
use zerocopy::IntoBytes;

use super::messages::{StateReply, ToFollower};
use crate::peer::auth::PeerSecret;
use crate::peer::frame::FrameHeader;
use crate::peer::kind;

/// Frames queued to one connection's writer before senders wait.
const OUTGOING_QUEUE: usize = 256;
/// A connection attempt gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed attempt, the next waits this long.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("broker {broker} has no replication address in the metadata")]
    NoAddress { broker: i32 },
    #[error("connecting to broker {broker} at {address}: {reason}")]
    Connect {
        broker: i32,
        address: SocketAddr,
        reason: String,
    },
    #[error("waiting before reconnecting to broker {broker}")]
    Backoff { broker: i32 },
    #[error("the connection to broker {broker} broke")]
    Broken { broker: i32 },
}

/// One shard's connections, by follower broker id.
#[derive(Default)]
pub struct Links {
    links: RefCell<HashMap<i32, Rc<Link>>>,
    /// The cluster's inter-broker secret: each new connection proves it
    /// and checks the follower's proof before any push (`peer::auth`).
    secret: Option<PeerSecret>,
}

impl Links {
    pub fn new(secret: Option<PeerSecret>) -> Links {
        Links {
            links: RefCell::default(),
            secret,
        }
    }

    /// Send `message` to `broker` at `address` (from the current view);
    /// the receiver resolves with the answer, or is canceled when the
    /// connection breaks first.
    pub async fn send(
        &self,
        broker: i32,
        address: Option<SocketAddr>,
        message: impl FnOnce(u64) -> ToFollower,
    ) -> Result<oneshot::Receiver<StateReply>, LinkError> {
        let link = Rc::clone(
            self.links
                .borrow_mut()
                .entry(broker)
                .or_insert_with(|| Rc::new(Link::new(broker))),
        );
        let address = address.ok_or(LinkError::NoAddress { broker })?;
        let connection = link.connection(address, self.secret.as_ref()).await?;
        let request_id = link.next_request_id.get();
        link.next_request_id.set(request_id + 1);
        let message = message(request_id);
        let (frame_kind, parts) = message.encode();
        let slices: Vec<&[u8]> = parts.iter().map(|part| part.as_ref()).collect();
        let header = FrameHeader::for_parts(frame_kind, 0, &slices)
            .map_err(|_| LinkError::Broken { broker })?;
        let mut frame = Vec::with_capacity(parts.len() + 1);
        frame.push(Bytes::copy_from_slice(header.as_bytes()));
        frame.extend(parts);
        let (answer, receiver) = oneshot::channel();
        connection.pending.borrow_mut().insert(request_id, answer);
        let outgoing = connection.outgoing.borrow().clone();
        let queued = match outgoing {
            Some(outgoing) => outgoing.send_async(frame).await.is_ok(),
            None => false,
        };
        if !queued {
            connection.pending.borrow_mut().remove(&request_id);
            return Err(LinkError::Broken { broker });
        }
        Ok(receiver)
    }
}

impl Links {
    /// Drop the connection to `broker` that carried request `stuck`
    /// (its answer stopped coming: a cut that TCP has not noticed): every
    /// answer owed on it is canceled, the next send connects again after
    /// the usual pause. If `stuck` went on an earlier connection, one
    /// another pusher already dropped, the one in place now is left alone:
    /// dropping it too canceled the answers of every pusher that had
    /// synced over it.
    pub fn break_connection(&self, broker: i32, stuck: u64) {
        let link = self.links.borrow().get(&broker).cloned();
        let Some(link) = link else {
            return;
        };
        let carried_it = link
            .connection
            .borrow()
            .as_ref()
            .is_some_and(|connection| connection.first_request_id <= stuck);
        if !carried_it {
            tracing::debug!(
                broker,
                stuck,
                "replication connection kept: the request stuck went on an earlier one"
            );
            return;
        }
        if let Some(connection) = link.connection.borrow_mut().take() {
            tracing::info!(broker, address = %connection.address, "replication connection dropped: no answers");
            connection.break_off();
            link.retry_at.set(Some(Instant::now() + RECONNECT_DELAY));
        }
    }
}

struct Link {
    broker: i32,
    next_request_id: Cell<u64>,
    connection: RefCell<Option<Rc<Connection>>>,
    /// Held while one sender connects; others wait on it.
    connecting: futures_util::lock::Mutex<()>,
    retry_at: Cell<Option<Instant>>,
}

struct Connection {
    address: SocketAddr,
    /// The link's first request id sent over this connection: ids below it
    /// went over earlier ones. A link hands out ids in order, and takes
    /// each right after it gets the connection it sends on, with no await
    /// in between (`Links::send`), so every id from this one on goes over
    /// this connection or a later one.
    first_request_id: u64,
    /// The socket both halves use, to shut it down when the connection is
    /// dropped (`break_off`).
    socket: TcpStream,
    /// The queue to the writer; taken when the connection breaks, so that
    /// a writer waiting for frames sees the queue closed and stops.
    outgoing: RefCell<Option<flume::Sender<Vec<Bytes>>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<StateReply>>>,
    broken: Cell<bool>,
}

impl Link {
    fn new(broker: i32) -> Link {
        Link {
            broker,
            next_request_id: Cell::new(1),
            connection: RefCell::new(None),
            connecting: futures_util::lock::Mutex::new(()),
            retry_at: Cell::new(None),
        }
    }

    fn live_connection(&self, address: SocketAddr) -> Option<Rc<Connection>> {
        let connection = self.connection.borrow().clone()?;
        (!connection.broken.get() && connection.address == address).then_some(connection)
    }

    async fn connection(
        self: &Rc<Self>,
        address: SocketAddr,
        secret: Option<&PeerSecret>,
    ) -> Result<Rc<Connection>, LinkError> {
        if let Some(connection) = self.live_connection(address) {
            return Ok(connection);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.live_connection(address) {
            return Ok(connection);
        }
        if let Some(old) = self.connection.borrow_mut().take() {
            old.break_off();
            // A broken connection is replaced only after a pause: a peer
            // (or a proxy in front of a dead one) that accepts and closes
            // at once must not turn into a reconnect loop.
            if self.retry_at.get().is_none() {
                self.retry_at.set(Some(Instant::now() + RECONNECT_DELAY));
            }
        }
        if self.retry_at.get().is_some_and(|at| Instant::now() < at) {
            return Err(LinkError::Backoff {
                broker: self.broker,
            });
        }
        let failed = |reason: String| LinkError::Connect {
            broker: self.broker,
            address,
            reason,
        };
        let mut stream =
            match compio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    self.retry_at.set(Some(Instant::now() + RECONNECT_DELAY));
                    return Err(failed(error.to_string()));
                }
                Err(_) => {
                    self.retry_at.set(Some(Instant::now() + RECONNECT_DELAY));
                    return Err(failed("timed out".to_string()));
                }
            };
        if let Some(secret) = secret
            && let Err(error) = crate::peer::aio::authenticate_client(&mut stream, secret).await
        {
            tracing::warn!(broker = self.broker, %address, %error, "replication peer authentication failed");
            self.retry_at.set(Some(Instant::now() + RECONNECT_DELAY));
            return Err(failed(error.to_string()));
        }
        self.retry_at.set(None);
        let _ = stream.set_nodelay(true);
        let socket = stream.clone();
        let (reader, writer) = stream.into_split();
        let (outgoing, queued) = flume::bounded(OUTGOING_QUEUE);
        let connection = Rc::new(Connection {
            address,
            first_request_id: self.next_request_id.get(),
            socket,
            outgoing: RefCell::new(Some(outgoing)),
            pending: RefCell::new(HashMap::new()),
            broken: Cell::new(false),
        });
        tracing::info!(broker = self.broker, %address, "replication connection opened");
        compio::runtime::spawn(write_frames(Rc::clone(&connection), writer, queued)).detach();
        compio::runtime::spawn(read_answers(Rc::clone(&connection), reader, self.broker)).detach();
        *self.connection.borrow_mut() = Some(Rc::clone(&connection));
        Ok(connection)
    }
}

impl Connection {
    /// Mark broken, cancel every answer owed and shut the socket down.
    ///
    /// The shutdown ends a write that waits on a full socket buffer (a peer
    /// that stopped reading, or a cut TCP has not noticed: it would wait
    /// for TCP's retransmissions to give up, many minutes) and a read that
    /// waits for answers. The writer then stops and drops the queue, which
    /// releases every sender waiting for room in it with `Broken`: without
    /// it, the pushers of up to `OUTGOING_QUEUE` frames stayed stuck on the
    /// dead connection while the others synced over a new one. Dropping
    /// the queue's sender stops a writer that waits for frames (no sender
    /// is left once the ones in use finish): it held the connection and its
    /// socket for good.
    fn break_off(&self) {
        self.broken.set(true);
        self.pending.borrow_mut().clear();
        self.outgoing.borrow_mut().take();
        let _ = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Both);
    }
}

async fn write_frames<W: AsyncWrite>(
    connection: Rc<Connection>,
    mut writer: W,
    queued: flume::Receiver<Vec<Bytes>>,
) {
    while let Ok(frame) = queued.recv_async().await {
        if connection.broken.get() {
            break;
        }
        let BufResult(result, _) = writer.write_vectored_all(frame).await;
        if let Err(error) = result {
            tracing::debug!(%error, address = %connection.address, "replication write failed");
            break;
        }
    }
    connection.break_off();
    let _ = writer.shutdown().await;
}

async fn read_answers<R: compio::io::AsyncRead>(
    connection: Rc<Connection>,
    mut reader: R,
    broker: i32,
) {
    let reason = loop {
        let frame = match crate::peer::aio::read_frame(&mut reader).await {
            Ok(frame) => frame,
            Err(reason) => break reason,
        };
        if frame.kind != kind::REPLICA_STATE {
            break format!("unexpected frame kind {}", frame.kind);
        }
        let reply = match StateReply::decode(&frame.payload) {
            Ok(reply) => reply,
            Err(error) => break error.to_string(),
        };
        if let Some(answer) = connection.pending.borrow_mut().remove(&reply.request_id) {
            let _ = answer.send(reply);
        }
        if connection.broken.get() {
            break "closed".to_string();
        }
    };
    tracing::info!(broker, address = %connection.address, reason, "replication connection closed");
    connection.break_off();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use sluice_engine::{LeaderEpoch, Offset};
    use uuid::Uuid;

    use super::*;
    use crate::replication::messages::LeaderHeader;

    fn push(request_id: u64, records: &Bytes) -> ToFollower {
        ToFollower::Push {
            header: LeaderHeader {
                request_id,
                topic_id: Uuid::from_u128(1),
                partition: 0,
                leader_id: 1,
                leader_epoch: LeaderEpoch(1),
                high_watermark: Offset(0),
                log_start: Offset(0),
            },
            start_offset: Offset(0),
            records: vec![records.clone()],
        }
    }

    /// A follower that accepts and then reads nothing (as a network cut TCP
    /// has not noticed looks from the leader): the socket buffer fills, the
    /// writer waits in a write, the queue behind it fills, and the next
    /// sender waits for room. Dropping the connection (the pushers' answer
    /// timeout) must release that sender at once, so that it syncs again
    /// over a new connection; before, it waited for the write, that is for
    /// TCP to give up.
    #[test]
    fn dropping_a_connection_releases_a_sender_waiting_behind_a_write_that_never_ends() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let silent_peer = std::thread::spawn(move || listener.accept().unwrap().0);
        let records = Bytes::from(vec![0u8; 1 << 20]);
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let links = Links::new(None);
            let mut queued = 0;
            let mut waiting = loop {
                let mut send = Box::pin(links.send(7, Some(address), |id| push(id, &records)));
                match compio::time::timeout(Duration::from_millis(300), &mut send).await {
                    Ok(sent) => {
                        drop(sent.unwrap());
                        queued += 1;
                        assert!(queued < 10 * OUTGOING_QUEUE, "the socket never filled");
                    }
                    Err(_) => break send,
                }
            };
            assert!(queued >= OUTGOING_QUEUE, "{queued} frames queued");
            links.break_connection(7, 1);
            let released = compio::time::timeout(Duration::from_secs(5), &mut waiting)
                .await
                .expect("the waiting sender is released when the connection is dropped");
            assert!(matches!(released, Err(LinkError::Broken { broker: 7 })));
            // The next send waits out the reconnect pause, then connects anew.
            assert!(matches!(
                links.send(7, Some(address), |id| push(id, &records)).await,
                Err(LinkError::Backoff { broker: 7 })
            ));
        });
        drop(silent_peer.join().unwrap());
    }

    /// A connection dropped while its writer waits for frames (the usual
    /// case: nothing queued when the peer goes away or answers stop) lets
    /// go of its tasks, and with them of its socket; before, the writer
    /// waited on its queue for good, holding both.
    #[test]
    fn a_connection_dropped_while_idle_lets_go_of_its_tasks_and_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || listener.accept().unwrap().0);
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let links = Links::new(None);
            let records = Bytes::from_static(b"one small push");
            drop(
                links
                    .send(7, Some(address), |id| push(id, &records))
                    .await
                    .unwrap(),
            );
            let connection = {
                let links = links.links.borrow();
                let held = links[&7].connection.borrow();
                Rc::downgrade(held.as_ref().unwrap())
            };
            // The writer takes the push, writes it and waits for the next.
            while !connection
                .upgrade()
                .unwrap()
                .outgoing
                .borrow()
                .as_ref()
                .unwrap()
                .is_empty()
            {
                compio::time::sleep(Duration::from_millis(5)).await;
            }
            compio::time::sleep(Duration::from_millis(100)).await;
            links.break_connection(7, 1);
            let deadline = Instant::now() + Duration::from_secs(5);
            while connection.strong_count() > 0 {
                assert!(
                    Instant::now() < deadline,
                    "the dropped connection is still held {} times",
                    connection.strong_count()
                );
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        drop(peer.join().unwrap());
    }

    /// Several pushers share a follower's connection, and each drops it
    /// when an answer it waits for is late. One that notices after another
    /// already dropped it (and synced over a new one) must not drop the
    /// new one: its late answer went over the old one.
    #[test]
    fn a_late_answer_drops_only_the_connection_it_went_over() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let peers = std::thread::spawn(move || {
            (0..2)
                .map(|_| listener.accept().unwrap().0)
                .collect::<Vec<_>>()
        });
        let records = Bytes::from_static(b"one small push");
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let links = Links::new(None);
            let current = |links: &Links| {
                let links = links.links.borrow();
                let held = links[&7].connection.borrow();
                held.as_ref()
                    .filter(|connection| !connection.broken.get())
                    .map(|connection| connection.first_request_id)
            };
            // Sends one push; the id it went with.
            let send = || {
                let id = Rc::new(Cell::new(0));
                let sent = links.send(7, Some(address), {
                    let id = Rc::clone(&id);
                    let records = records.clone();
                    move |request_id| {
                        id.set(request_id);
                        push(request_id, &records)
                    }
                });
                async move {
                    drop(sent.await.unwrap());
                    id.get()
                }
            };
            let old_a = send().await;
            let old_b = send().await;
            assert_eq!(current(&links), Some(old_a));
            // The first pusher drops the connection; after the pause the
            // next send opens a new one.
            links.break_connection(7, old_a);
            assert_eq!(current(&links), None);
            compio::time::sleep(RECONNECT_DELAY + Duration::from_millis(50)).await;
            let new_first = send().await;
            assert_eq!(current(&links), Some(new_first));
            // The second pusher's answer went over the old connection.
            links.break_connection(7, old_b);
            assert_eq!(
                current(&links),
                Some(new_first),
                "the new connection was dropped for an answer owed on the old one"
            );
            // A late answer on the new one drops it.
            links.break_connection(7, new_first);
            assert_eq!(current(&links), None);
        });
        drop(peers.join().unwrap());
    }
}
