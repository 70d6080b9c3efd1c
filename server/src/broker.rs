//! Broker lifecycle: lock the data directory, load metadata, bind the
//! listeners, start one pinned shard thread per core, shut down cleanly
//! (every log flushed and closed, so the next start scans nothing).
//!
//! The data directory's lock is taken before anything reads or writes the
//! directory and released only after every shard has stopped.

use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use futures_channel::oneshot;
use sluice_engine::Committer;
use sluice_engine::io::uring::UringIo;

use crate::cli::BrokerConfig;
use crate::datadir::DataDirLock;
use crate::metadata::{FileMetadataStore, MetadataStore};
use crate::net;
use crate::shard::{Shard, ShardId, Shards};

/// A running broker: its shard threads and how to stop them.
pub struct Broker {
    threads: Vec<JoinHandle<()>>,
    stops: Vec<oneshot::Sender<()>>,
    /// Held until the shards have stopped (see [`crate::datadir`]).
    data_dir_lock: DataDirLock,
}

impl Broker {
    /// Start every shard; returns once all listen and have opened their
    /// partitions, or with the first shard's startup error.
    /// Errors name what is wrong: the data directory (missing, not a
    /// directory, not writable, in use by another process: a
    /// [`crate::datadir::DataDirError`]), the listen address (in use: a
    /// [`net::ListenError`]), or a shard that could not open its partitions.
    pub fn start(config: BrokerConfig) -> anyhow::Result<Broker> {
        let config = Arc::new(config);
        let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
        let lock_fd = data_dir_lock.raw_fd();
        let metadata: Arc<dyn MetadataStore> = Arc::new(
            FileMetadataStore::open(&config.data_dir, config.cores)
                .with_context(|| format!("loading metadata from {}", config.data_dir.display()))?,
        );
        let mut listeners = net::bind_shards(config.listen, config.cores)?.into_iter();
        let (shards, inboxes) = Shards::new(config.cores);
        let core_ids = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_sender, ready_receiver) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let mut threads = Vec::new();
        let mut stops = Vec::new();
        let mut gos = Vec::new();
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let listener = listeners
                .next()
                .context("bind_shards returned fewer listeners than shards")?;
            let (stop_sender, stop_receiver) = oneshot::channel();
            stops.push(stop_sender);
            let (go_sender, go_receiver) = oneshot::channel::<()>();
            gos.push(go_sender);
            let config = Arc::clone(&config);
            let shards = Arc::clone(&shards);
            let metadata = Arc::clone(&metadata);
            let ready = ready_sender.clone();
            let core = core_ids.get(index % core_ids.len().max(1)).copied();
            let thread = std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let runtime = match compio::runtime::Runtime::new() {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = ready.send(Err(anyhow::anyhow!(
                                "shard {index}: io_uring runtime: {error}"
                            )));
                            return;
                        }
                    };
                    // The ring keeps the data directory's lock until its
                    // last request has completed, even after a kill -9
                    // (see crate::datadir).
                    if let Err(error) = runtime.register_files(&[lock_fd]) {
                        let _ = ready.send(Err(anyhow::anyhow!(
                            "shard {index}: registering the data directory lock in io_uring: \
                             {error}"
                        )));
                        return;
                    }
                    runtime.block_on(async move {
                        let io = UringIo::new();
                        let shard = Rc::new(Shard {
                            id: ShardId(index),
                            io,
                            committer: Committer::new(io),
                            config,
                            shards,
                            metadata,
                            partitions: Default::default(),
                            groups: Default::default(),
                        });
                        let committer = shard.committer.clone();
                        compio::runtime::spawn(async move {
                            #[cfg(debug_assertions)]
                            debug_fault::panic_in_committer_if_asked(index).await;
                            committer.run().await
                        })
                        .detach();
                        compio::runtime::spawn(crate::shard::cleaner::run(Rc::clone(&shard))).detach();
                        let inbox_shard = Rc::clone(&shard);
                        compio::runtime::spawn(async move {
                            while let Ok(job) = inbox.recv_async().await {
                                compio::runtime::spawn(job(Rc::clone(&inbox_shard))).detach();
                            }
                        })
                        .detach();
                        if let Err(error) = shard.open_assigned_partitions().await {
                            let _ = ready.send(Err(
                                error.context(format!("shard {index}: opening partitions"))
                            ));
                            return;
                        }
                        // Serve only once every shard has opened its
                        // partitions: a request routed to a shard still
                        // opening would find its partition missing (Kafka
                        // also loads every log before serving).
                        let _ = ready.send(Ok(()));
                        if go_receiver.await.is_err() {
                            shard.close_all().await;
                            return;
                        }
                        let listener = match compio::net::TcpListener::from_std(listener) {
                            Ok(listener) => listener,
                            Err(error) => {
                                tracing::error!(shard = index, %error, "registering the listener failed");
                                shard.close_all().await;
                                return;
                            }
                        };
                        compio::runtime::spawn(net::accept_loop(Rc::clone(&shard), listener))
                            .detach();
                        let _ = stop_receiver.await;
                        shard.close_all().await;
                        tracing::debug!(shard = index, "shard stopped");
                    });
                })?;
            threads.push(thread);
        }
        drop(ready_sender);
        for _ in 0..threads.len() {
            let failure = match ready_receiver.recv() {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(_) => anyhow::anyhow!("a shard thread died during startup"),
            };
            // Dropping the go signals stops the shards that did start.
            drop(gos);
            Broker {
                threads,
                stops,
                data_dir_lock,
            }
            .stop();
            return Err(failure);
        }
        for go in gos {
            let _ = go.send(());
        }
        Ok(Broker {
            threads,
            stops,
            data_dir_lock,
        })
    }

    /// Stop every shard (closing its logs) and wait for the threads.
    pub fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        // Only now may another process use the directory.
        drop(self.data_dir_lock);
    }
}

/// A fault hook for the test that shows a panic in a detached shard task
/// stops the whole process (`server/tests/process_exclusion.rs`). Compiled
/// into debug builds only: release binaries do not read the variable.
#[cfg(debug_assertions)]
mod debug_fault {
    /// `SLUICE_DEBUG_PANIC_IN_COMMITTER=<ms>`: shard 0's group-commit task
    /// panics that many milliseconds after the shard starts (0 if the value
    /// is not a number).
    pub const PANIC_IN_COMMITTER: &str = "SLUICE_DEBUG_PANIC_IN_COMMITTER";

    pub async fn panic_in_committer_if_asked(shard_index: usize) {
        let Some(value) = std::env::var_os(PANIC_IN_COMMITTER) else {
            return;
        };
        if shard_index != 0 {
            return;
        }
        let delay_ms = value
            .to_str()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0);
        compio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        panic!("{PANIC_IN_COMMITTER} is set: the group-commit task of shard 0 panics");
    }
}
