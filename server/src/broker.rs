//! Broker lifecycle: lock the data directory, open the admin HTTP port
//! (metrics/server.rs: live at once, ready once the shards serve), start
//! the controller service (controller/: the Raft voter or observer,
//! registration, heartbeats) and wait until this broker is registered and
//! caught up, migrate a data
//! directory of the single-node version (metadata/migrate.rs), bind the
//! listeners, start one pinned shard thread per core, start the metadata
//! follower (shard/follower.rs), which opens every local replica before the
//! first view is published, then serve. Shut down cleanly: controlled
//! shutdown at the controller, shards stopped (every log flushed and
//! closed, so the next start scans nothing), the controller stopped.
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
use crate::controller::records::Listener;
use crate::controller::service::{self, ControllerHandle, ServiceConfig};
use crate::controller::types::{BrokerId, DirectoryId};
use crate::datadir::DataDirLock;
use crate::metadata::{Metadata, migrate};
use crate::metrics::server::AdminServer;
use crate::net;
use crate::shard::follower::Follower;
use crate::shard::{Shard, ShardId, Shards};

/// How long startup waits for this broker to be registered with the
/// controller and caught up (a cluster's first start waits for a quorum of
/// voters to come up).
const CONTROLLER_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Set (by the binary's signal thread) when SIGINT/SIGTERM arrives while
/// [`Broker::start`] waits for the controller: the wait ends, the start
/// fails with [`StartupAborted`], and nothing was served.
static STARTUP_ABORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ask a [`Broker::start`] in progress to give up waiting for the
/// controller quorum (a stop signal during startup).
pub fn abort_startup() {
    STARTUP_ABORTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// [`Broker::start`] gave up because of [`abort_startup`].
#[derive(Debug, thiserror::Error)]
#[error("stopped before this broker was registered with the controller")]
pub struct StartupAborted;

/// A running broker: its shard threads and how to stop them.
pub struct Broker {
    threads: Vec<JoinHandle<()>>,
    stops: Vec<oneshot::Sender<()>>,
    controller: ControllerHandle,
    follower: Option<Follower>,
    /// Held until the shards have stopped (see [`crate::datadir`]).
    data_dir_lock: DataDirLock,
    /// The admin HTTP API (metrics, health), unless `--admin-listen none`.
    admin: Option<AdminServer>,
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
        // Registered with the controller: another id than before means a
        // replaced disk (crate::datadir). None: adopted at this start.
        let directory_id = crate::datadir::directory_id(&config.data_dir)?
            .registered()
            .map(DirectoryId);
        // Bound before registering, so the registration carries its port.
        let replication_listener = std::net::TcpListener::bind(config.replication_listen)
            .with_context(|| {
                format!(
                    "binding the replication listener {}",
                    config.replication_listen
                )
            })?;
        replication_listener.set_nonblocking(true)?;
        let replication_address = match &config.replication_advertised {
            Some(address) => address.clone(),
            None => replication_listener.local_addr()?.to_string(),
        };
        let mut replication_listener = Some(replication_listener);
        // The admin API answers from here on: live at once, ready once the
        // shards serve (it says why not until then).
        let admin = match config.admin_listen {
            Some(address) => {
                let listener = crate::metrics::server::bind(address)?;
                Some(
                    AdminServer::start(listener, config.node_id)
                        .context("starting the admin HTTP thread")?,
                )
            }
            None => None,
        };
        let controller = start_controller(&config, &replication_address, directory_id)?;
        if let Some(admin) = &admin {
            admin.set_controller(controller.clone());
        }
        let cluster_id = migrate::cluster_id(&config.data_dir, &config.controller_voters)
            .with_context(|| format!("reading the cluster id in {}", config.data_dir.display()))?;
        migrate::from_single_node_json(&config.data_dir, &controller)
            .context("migrating the single-node metadata (cluster-metadata.json)")?;
        let metadata = Arc::new(Metadata::new(
            controller.clone(),
            config.node_id,
            cluster_id,
            config.cores,
        ));
        // Partition directories of topics the metadata no longer has (a
        // deletion cut short by a crash) are removed, those of the previous
        // version adopted, before any partition opens.
        let initial_view = metadata.build_view(&controller.image());
        crate::shard::orphans::remove_orphan_partition_dirs(&config.data_dir, &initial_view)
            .context("sweeping the data directory's partition directories")?;
        // Users of `sluice user bootstrap`, once: into the metadata.
        bootstrap_credentials(&config, &controller)?;
        // SSL listeners ask for client certificates as --ssl-client-auth
        // says; SASL_SSL listeners authenticate with SASL and ask for none
        // (Kafka's rule since KIP-684: the broker-wide ssl.client.auth does
        // not apply to SASL_SSL listeners).
        let tls_configs = match &config.tls {
            Some(settings) => {
                let ssl = crate::auth::tls::server_config(settings)
                    .context("loading the TLS certificate and key")?;
                let sasl_ssl = crate::auth::tls::server_config(&crate::auth::tls::TlsSettings {
                    client_auth: crate::auth::tls::ClientAuth::None,
                    ..settings.clone()
                })
                .context("loading the TLS certificate and key")?;
                Some((ssl, sasl_ssl))
            }
            None => None,
        };
        // Every client listener: one SO_REUSEPORT socket per shard each.
        let mut listener_sets = Vec::new();
        for spec in &config.listeners {
            listener_sets.push(net::bind_shards(spec.address, config.cores)?.into_iter());
        }
        let (shards, inboxes) = Shards::new(config.cores);
        sluice_engine::readahead::set_enabled(config.read_ahead);
        sluice_engine::tail_cache::set_shard_budget_bytes(config.tail_cache_bytes);
        let core_ids = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_sender, ready_receiver) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let mut threads = Vec::new();
        let mut stops = Vec::new();
        let mut gos = Vec::new();
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let mut listeners = Vec::new();
            for (set, spec) in listener_sets.iter_mut().zip(&config.listeners) {
                let socket = set
                    .next()
                    .context("bind_shards returned fewer listeners than shards")?;
                listeners.push((socket, spec.clone()));
            }
            let tls_configs = tls_configs.clone();
            let (stop_sender, stop_receiver) = oneshot::channel();
            stops.push(stop_sender);
            let (go_sender, go_receiver) = oneshot::channel::<()>();
            gos.push(go_sender);
            let config = Arc::clone(&config);
            // Shard 0 accepts the leaders' replication connections.
            let replication_listener = replication_listener.take();
            let shards = Arc::clone(&shards);
            let metadata = Arc::clone(&metadata);
            let ready = ready_sender.clone();
            // Pinned one shard per core, unless the host's cores are shared
            // (--overprovisioned): then the kernel places the threads.
            let core = if config.overprovisioned {
                None
            } else {
                core_ids.get(index % core_ids.len().max(1)).copied()
            };
            let thread = std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let runtime = match shard_runtime() {
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
                        let replication_links =
                            crate::replication::link::Links::new(config.peer_secret.clone());
                        let shard = Rc::new(Shard {
                            id: ShardId(index),
                            io,
                            committer: Committer::with_sync_mode(io, config.sync_mode),
                            config,
                            shards,
                            metadata,
                            partitions: Default::default(),
                            groups: Default::default(),
                            replication_links,
                        });
                        let committer = shard.committer.clone();
                        compio::runtime::spawn(async move {
                            #[cfg(debug_assertions)]
                            debug_fault::panic_in_committer_if_asked(index).await;
                            committer.run().await
                        })
                        .detach();
                        compio::runtime::spawn(crate::shard::cleaner::run(Rc::clone(&shard))).detach();
                        crate::shard::serve_inbox(&shard, inbox);
                        // The follower opens the partitions once every
                        // shard runs; serving waits for that (Kafka also
                        // loads every log before serving).
                        let _ = ready.send(Ok(()));
                        if go_receiver.await.is_err() {
                            shard.close_all().await;
                            return;
                        }
                        for (socket, spec) in listeners {
                            let listener = match compio::net::TcpListener::from_std(socket) {
                                Ok(listener) => listener,
                                Err(error) => {
                                    tracing::error!(shard = index, %error, "registering the listener failed");
                                    shard.close_all().await;
                                    return;
                                }
                            };
                            let spec = Rc::new(net::ListenerSpec {
                                name: Arc::from(spec.name.as_str()),
                                protocol: spec.protocol,
                                tls: match (spec.protocol, &tls_configs) {
                                    (crate::auth::SecurityProtocol::Ssl, Some((ssl, _))) => {
                                        Some(Arc::clone(ssl))
                                    }
                                    (
                                        crate::auth::SecurityProtocol::SaslSsl,
                                        Some((_, sasl_ssl)),
                                    ) => Some(Arc::clone(sasl_ssl)),
                                    _ => None,
                                },
                                sasl_mechanisms: shard.config.sasl_mechanisms.clone(),
                            });
                            compio::runtime::spawn(net::accept_loop(
                                Rc::clone(&shard),
                                listener,
                                spec,
                            ))
                            .detach();
                        }
                        if let Some(replication_listener) = replication_listener {
                            match compio::net::TcpListener::from_std(replication_listener) {
                                Ok(listener) => compio::runtime::spawn(
                                    crate::replication::follower::accept_loop(
                                        Rc::clone(&shard),
                                        listener,
                                    ),
                                )
                                .detach(),
                                Err(error) => {
                                    tracing::error!(%error, "registering the replication listener failed");
                                }
                            }
                        }
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
            return Err(Broker::abandon(
                threads,
                stops,
                controller,
                data_dir_lock,
                admin,
                failure,
            ));
        }
        // Every local replica of the current image opens before the first
        // view is published, and before any client is served.
        let follower = match Follower::start(Arc::clone(&metadata), Arc::clone(&shards)) {
            Ok(follower) => follower,
            Err(error) => {
                drop(gos);
                let error = error.context("starting the metadata follower");
                return Err(Broker::abandon(
                    threads,
                    stops,
                    controller,
                    data_dir_lock,
                    admin,
                    error,
                ));
            }
        };
        for go in gos {
            let _ = go.send(());
        }
        if let Some(admin) = &admin {
            admin.set_serving(
                Arc::clone(&shards),
                Arc::clone(&metadata),
                Arc::clone(&config),
            );
        }
        Ok(Broker {
            threads,
            stops,
            controller,
            follower: Some(follower),
            data_dir_lock,
            admin,
        })
    }

    /// Stop what a failed start had started; returns `error` to pass on.
    fn abandon(
        threads: Vec<JoinHandle<()>>,
        stops: Vec<oneshot::Sender<()>>,
        controller: ControllerHandle,
        data_dir_lock: DataDirLock,
        admin: Option<AdminServer>,
        error: anyhow::Error,
    ) -> anyhow::Error {
        Broker {
            threads,
            stops,
            controller,
            follower: None,
            data_dir_lock,
            admin,
        }
        .stop();
        error
    }

    /// Stop cleanly: the follower stopped (the published view stays), a
    /// controlled shutdown at the controller (leaderships move away, the
    /// broker is fenced), every shard stopped (closing its logs), the
    /// controller service stopped.
    pub fn stop(mut self) {
        // Not ready from now on: load balancers stop sending clients.
        if let Some(admin) = &self.admin {
            admin.set_stopping();
        }
        // The follower first: the shards keep the view they serve while
        // they close (the group coordinator's timers write until then).
        if let Some(follower) = self.follower.take() {
            follower.stop();
        }
        self.controller.shutdown();
        for stop in self.stops {
            let _ = stop.send(());
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        self.controller.stop();
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        // Only now may another process use the directory.
        drop(self.data_dir_lock);
    }
}

/// Wait until the committed image shows this broker unfenced (the
/// controller unfences a registered broker once its heartbeat says it has
/// caught up): before that its partitions have no leader, and serving
/// would only answer NOT_LEADER_OR_FOLLOWER.
pub(crate) fn wait_unfenced(
    controller: &ControllerHandle,
    node_id: i32,
    timeout: std::time::Duration,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let unfenced = controller
            .image()
            .broker(BrokerId(node_id))
            .is_some_and(|broker| !broker.fenced);
        if unfenced {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Start the controller service for this broker and wait until it is
/// registered, caught up with the metadata log and unfenced.
fn start_controller(
    config: &BrokerConfig,
    replication_address: &str,
    directory_id: Option<DirectoryId>,
) -> anyhow::Result<ControllerHandle> {
    // Every client listener with its advertised address; the first is
    // where clients of an unknown listener are sent.
    let mut listeners = Vec::new();
    for spec in &config.listeners {
        listeners.push(Listener {
            name: spec.name.clone(),
            host: spec.advertised_host.clone(),
            port: u16::try_from(spec.advertised_port)
                .context("the advertised port does not fit a port number")?,
        });
    }
    let (replication_host, replication_port) = replication_address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
        .with_context(|| format!("replication address {replication_address} is not host:port"))?;
    let replication = Listener {
        name: crate::metadata::REPLICATION_LISTENER.to_string(),
        host: replication_host,
        port: replication_port,
    };
    let mut service_config = ServiceConfig::single_node(
        BrokerId(config.node_id),
        config.data_dir.clone(),
        listeners.into_iter().chain([replication]).collect(),
        u32::try_from(config.cores).unwrap_or(u32::MAX),
    );
    service_config.voters = config
        .controller_voters
        .iter()
        .map(|(id, endpoint)| (BrokerId(*id), endpoint.clone()))
        .collect();
    service_config.listen = config.controller_listen;
    service_config.directory_id = directory_id;
    service_config.session_timeout_ms = config.broker_session_timeout_ms;
    service_config.heartbeat_interval_ms = config.broker_heartbeat_interval_ms;
    service_config.leader_imbalance_check_interval_ms = config.leader_imbalance_check_interval_ms;
    service_config.peer_secret = config.peer_secret.clone();
    let controller = service::start(service_config).context("starting the controller")?;
    let started = std::time::Instant::now();
    let mut reported = started;
    loop {
        if controller.wait_ready(std::time::Duration::from_secs(1))
            && wait_unfenced(
                &controller,
                config.node_id,
                std::time::Duration::from_secs(1),
            )
        {
            return Ok(controller);
        }
        if STARTUP_ABORTED.load(std::sync::atomic::Ordering::SeqCst) {
            controller.stop();
            return Err(StartupAborted.into());
        }
        if started.elapsed() > CONTROLLER_READY_WAIT {
            controller.stop();
            anyhow::bail!(
                "not registered with the controller after {CONTROLLER_READY_WAIT:?}: are a \
                 majority of the --controller-voters running and reachable?"
            );
        }
        if reported.elapsed() >= std::time::Duration::from_secs(5) {
            reported = std::time::Instant::now();
            tracing::info!(
                voters = ?config.controller_voters,
                "waiting for the controller quorum to register this broker"
            );
        }
    }
}

/// Propose the credentials of the data directory's bootstrap file that
/// the metadata does not hold yet, wait until they are applied, then
/// remove the file (see `auth::credentials`).
fn bootstrap_credentials(
    config: &BrokerConfig,
    controller: &ControllerHandle,
) -> anyhow::Result<()> {
    let pending = crate::auth::credentials::read_bootstrap(&config.data_dir)?;
    if pending.is_empty() {
        return Ok(());
    }
    let image = controller.image();
    let missing: Vec<_> = pending
        .into_iter()
        .filter(|credential| {
            image
                .scram_credential(&credential.name, credential.mechanism)
                .is_none()
        })
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|credential| credential.name.clone())
            .collect();
        let handle = controller.clone();
        let runtime = compio::runtime::Runtime::new()
            .context("a runtime for creating the bootstrap users")?;
        let offset = runtime
            .block_on(async move { handle.alter_scram_credentials(missing, Vec::new()).await })
            .context("creating the bootstrap users")?;
        anyhow::ensure!(
            controller.wait_applied_timeout(offset, std::time::Duration::from_secs(30)),
            "the bootstrap users were not applied within 30 s"
        );
        tracing::info!(users = ?names, "bootstrap SCRAM users created");
    }
    crate::auth::credentials::remove_bootstrap(&config.data_dir)?;
    Ok(())
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

/// A shard's compio runtime. Its ring is set up with COOP_TASKRUN and
/// TASKRUN_FLAG: the kernel no longer interrupts the shard thread to run
/// completion work (an inter-processor interrupt per io-wq completion), the
/// thread runs it when it next enters the ring, and the flag tells compio
/// there is some so it does not block. The ring has one issuer, its shard.
/// Broker CPU per GB at 50 MB/s -3 to -5 % in three of three same-run
/// rounds, latency unchanged (docs/benchmarks.md, "Ring setup and
/// cross-shard wakes"). DEFER_TASKRUN was measured too and not kept: a
/// little less CPU, a higher publish median. A kernel without these flags
/// (before 5.19) gets a plain ring.
fn shard_runtime() -> std::io::Result<compio::runtime::Runtime> {
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor.coop_taskrun(true).taskrun_flag(true);
    match compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
    {
        Ok(runtime) => Ok(runtime),
        Err(error) => {
            tracing::warn!(%error, "io_uring without COOP_TASKRUN: a plain ring");
            compio::runtime::Runtime::new()
        }
    }
}
