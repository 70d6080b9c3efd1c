//! `sluice-bench cluster-metadata`: the control plane of a local cluster
//! (docs/benchmarks.md "Cluster metadata").
//!
//! Starts `--brokers` `sluice` processes on free loopback ports (each in its
//! own process group, so Ctrl-C reaches only the bench, which then stops
//! them), voters = brokers 1..=3 (or broker 1 alone below three brokers),
//! data directories under one directory on a real disk. Then, on one
//! current-thread tokio runtime:
//!
//! 1. creation: `--topics` topics of `--partitions` partitions (replication
//!    factor 1) in CreateTopics requests of `--batch` topics, `--concurrency`
//!    requests in flight (one connection each, spread over the brokers);
//!    total time, topics/s, per-request latency;
//! 2. propagation: `--propagation-sample` more topics created one per
//!    request (round robin over the brokers); from the acknowledgment, every
//!    broker is polled back to back with Metadata for that topic until it
//!    lists every partition with a live leader; the figure is the time until
//!    the last broker does;
//! 3. failover (`--failovers` rounds): the active controller (Metadata's
//!    controller id) is killed with SIGKILL; from the kill, a CreateTopics of
//!    a fresh topic is started every `--failover-attempt-interval-ms` on a
//!    new connection to a surviving broker, until one is acknowledged
//!    (committed); the figure is kill to that acknowledgment. The killed
//!    broker is then restarted and waited for (every broker listed, the
//!    restarted one caught up) before the next round.
//!
//! Every broker is stopped (SIGTERM, then SIGKILL) and its data removed at
//! the end, on an error and on Ctrl-C.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, MetadataRequest, TopicName, create_topics_request::CreatableTopic,
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Request, StrBytes};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::embedded::{log_tail, terminate, wait_or_kill};
use crate::kafka::{self, Connection, Incoming};
use crate::{baseline, embedded, measure, provenance, report, stats};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A typo (`--brokers 300`) must not fork hundreds of brokers.
const BROKERS_MAX: u32 = 9;
/// Voters of a cluster of three brokers or more (Raft groups of 1 or 3).
const VOTERS_MAX: u32 = 3;

/// Flags of `sluice-bench cluster-metadata`.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Brokers of the local cluster (node ids 1..=N; voters 1..=3, or 1
    /// alone below three brokers).
    #[arg(long, default_value_t = 3)]
    pub brokers: u32,
    /// Topics created in the creation phase.
    #[arg(long, default_value_t = 1000)]
    pub topics: u32,
    /// Partitions per topic (replication factor 1).
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Topics per CreateTopics request in the creation phase.
    #[arg(long, default_value_t = 10)]
    pub batch: u32,
    /// CreateTopics requests in flight in the creation phase.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Topics whose propagation to every broker is timed.
    #[arg(long, default_value_t = 100)]
    pub propagation_sample: u32,
    /// Rounds of killing the active controller (needs 3 brokers or more).
    #[arg(long, default_value_t = 3)]
    pub failovers: u32,
    /// During a failover, start a new CreateTopics this often until one is
    /// acknowledged.
    #[arg(long, default_value_t = 50)]
    pub failover_attempt_interval_ms: u64,
    /// Shards (`--cores`) of each broker.
    #[arg(long, default_value_t = 1)]
    pub broker_cores: usize,
    /// The sluice binary [default: `sluice` next to sluice-bench].
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Directory holding the brokers' data directories (must be on a real
    /// disk) [default: bench-data/cluster-<pid> next to sluice-bench].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the brokers' data directories.
    #[arg(long)]
    pub keep_data: bool,
    /// Directory for the JSON summary, .hgrm files and broker logs.
    #[arg(long, default_value = "target/bench-results")]
    pub out: PathBuf,
    /// Give up on a request (or a wait) after this many ms.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl ClusterArgs {
    /// The argument checks clap cannot make.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.brokers == 0 || self.brokers > BROKERS_MAX {
            bail!("--brokers must be 1 to {BROKERS_MAX}");
        }
        if self.topics == 0 {
            bail!("--topics must be at least 1");
        }
        if self.partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if self.failovers > 0 && self.brokers < VOTERS_MAX {
            bail!(
                "--failovers needs --brokers {VOTERS_MAX} or more (a controller quorum that \
                 survives one voter); pass --failovers 0"
            );
        }
        if self.failover_attempt_interval_ms == 0 {
            bail!("--failover-attempt-interval-ms must be at least 1");
        }
        if self.broker_cores == 0 {
            bail!("--broker-cores must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            bail!("--request-timeout-ms must be at least 1");
        }
        Ok(())
    }

    fn voters(&self) -> u32 {
        if self.brokers >= VOTERS_MAX {
            VOTERS_MAX
        } else {
            1
        }
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// `1@127.0.0.1:P1,2@...`: the `--controller-voters` of every broker.
fn voters_flag(controller_ports: &[u16], voters: u32) -> String {
    controller_ports
        .iter()
        .take(voters as usize)
        .enumerate()
        .map(|(index, port)| format!("{}@127.0.0.1:{port}", index + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// `count` topics of the creation phase in requests of `batch`.
fn batches(count: u32, batch: u32) -> Vec<Vec<String>> {
    (0..count)
        .map(|index| format!("bench-{index:06}"))
        .collect::<Vec<_>>()
        .chunks(batch as usize)
        .map(<[String]>::to_vec)
        .collect()
}

/// The median of `values` (the lower middle one for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// What a Metadata answer says about one topic and the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TopicView {
    controller_id: i32,
    brokers: Vec<i32>,
    /// (topic error code, leader of each partition listed)
    topic: Option<(i16, Vec<(i16, i32)>)>,
}

impl TopicView {
    /// The topic is listed, without error, with `partitions` partitions,
    /// each led by a listed broker.
    fn ready(&self, partitions: i32) -> bool {
        self.topic.as_ref().is_some_and(|(error, leaders)| {
            *error == 0
                && leaders.len() == usize::try_from(partitions).unwrap_or(usize::MAX)
                && leaders
                    .iter()
                    .all(|(error, leader)| *error == 0 && self.brokers.contains(leader))
        })
    }
}

/// One connection used one request at a time, with fixed API versions.
pub(crate) struct Link {
    pub(crate) connection: Connection,
    responses: mpsc::UnboundedReceiver<Incoming>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Versions {
    pub(crate) metadata: i16,
    pub(crate) create_topics: i16,
    pub(crate) produce: i16,
}

impl Link {
    pub(crate) async fn connect(address: &str, timeout: Duration) -> anyhow::Result<Link> {
        let (sink, responses) = mpsc::unbounded_channel();
        let connection = Connection::connect(address, timeout, 0, sink).await?;
        Ok(Link {
            connection,
            responses,
        })
    }

    pub(crate) async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> anyhow::Result<R::Response> {
        let correlation_id = self.connection.send(request, version)?;
        let address = &self.connection.address;
        let incoming = match tokio::time::timeout(timeout, self.responses.recv()).await {
            Ok(Some(incoming)) => incoming,
            Ok(None) => bail!("connection to {address} closed"),
            Err(_) => bail!(
                "{address} did not answer API key {} within {} ms",
                R::KEY,
                timeout.as_millis()
            ),
        };
        let frame = incoming
            .frame
            .with_context(|| format!("reading from {address}"))?;
        let (answered, response) = kafka::decode_response::<R>(frame, version)?;
        if answered != correlation_id {
            bail!("{address} answered correlation id {answered}, expected {correlation_id}");
        }
        Ok(response)
    }

    /// Metadata for `topic` (none: brokers and controller only), never
    /// creating it.
    async fn view(
        &mut self,
        topic: Option<&str>,
        versions: Versions,
        timeout: Duration,
    ) -> anyhow::Result<TopicView> {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topic
                    .map(|name| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned()))))
                    })
                    .into_iter()
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let response = self.call(&request, versions.metadata, timeout).await?;
        let mut view = TopicView {
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .iter()
                .map(|broker| broker.node_id.0)
                .collect(),
            topic: None,
        };
        if let Some(listed) = response
            .topics
            .iter()
            .find(|listed| listed.name.as_ref().map(|name| name.0.as_str()) == topic)
        {
            view.topic = Some((
                listed.error_code,
                listed
                    .partitions
                    .iter()
                    .map(|partition| (partition.error_code, partition.leader_id.0))
                    .collect(),
            ));
        }
        Ok(view)
    }

    /// CreateTopics of `names`; the first error of a topic, if any.
    async fn create(
        &mut self,
        names: &[String],
        partitions: i32,
        versions: Versions,
        timeout: Duration,
    ) -> anyhow::Result<Result<(), (String, i16)>> {
        let request = CreateTopicsRequest::default()
            .with_topics(
                names
                    .iter()
                    .map(|name| {
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.clone())))
                            .with_num_partitions(partitions)
                            .with_replication_factor(1)
                    })
                    .collect(),
            )
            .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX));
        let response = self.call(&request, versions.create_topics, timeout).await?;
        if response.topics.len() != names.len() {
            bail!(
                "{} answered {} topics for a CreateTopics of {}",
                self.connection.address,
                response.topics.len(),
                names.len()
            );
        }
        Ok(response
            .topics
            .iter()
            .find(|result| result.error_code != 0)
            .map_or(Ok(()), |result| {
                Err((result.name.0.to_string(), result.error_code))
            }))
    }
}

/// One broker process of the cluster.
pub(crate) struct Broker {
    pub(crate) node_id: u32,
    pub(crate) kafka: String,
    controller_port: u16,
    /// `--admin-listen` (each broker its own: the default port is one).
    admin_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// The running local cluster; stopped and cleaned up on drop.
pub(crate) struct Cluster {
    binary: PathBuf,
    voters: String,
    cores: usize,
    /// Flags every broker gets after the ones the cluster sets.
    extra_flags: Vec<String>,
    pub(crate) brokers: Vec<Broker>,
    root: PathBuf,
    remove_data: bool,
}

/// What [`Cluster::launch`] starts.
pub(crate) struct ClusterSpec<'a> {
    pub(crate) brokers: u32,
    pub(crate) voters: u32,
    pub(crate) cores: usize,
    pub(crate) sluice_bin: Option<&'a std::path::Path>,
    pub(crate) data_dir: Option<&'a std::path::Path>,
    pub(crate) keep_data: bool,
    /// Where the broker logs go (`<name>-node-<id>.log`).
    pub(crate) out: &'a std::path::Path,
    /// The subcommand: names the logs and the default data directory.
    pub(crate) name: &'a str,
    pub(crate) extra_flags: Vec<String>,
}

/// How long after starting a broker a lost port race shows (it binds its
/// listeners first thing), and how many times a cluster start is tried.
const PORT_RACE_WINDOW: Duration = Duration::from_millis(1500);
const PORT_ATTEMPTS: u32 = 3;

/// `count` distinct free loopback ports (all bound at once, then released).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free loopback ports for the cluster")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// Whether a broker log says one of its listeners found its address taken:
/// the operating system's words ("Address already in use", the controller
/// port) or the broker's own ("address in use", the Kafka and admin ports).
fn says_address_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address in use") || log.contains("address already in use")
}

impl Cluster {
    fn start(args: &ClusterArgs) -> anyhow::Result<Cluster> {
        Cluster::launch(&ClusterSpec {
            brokers: args.brokers,
            voters: args.voters(),
            cores: args.broker_cores,
            sluice_bin: args.sluice_bin.as_deref(),
            data_dir: args.data_dir.as_deref(),
            keep_data: args.keep_data,
            out: &args.out,
            name: "cluster-metadata",
            extra_flags: Vec::new(),
        })
    }

    /// Start every broker of `spec` (without waiting for them to serve).
    /// The ports are picked free, then released for the brokers to bind:
    /// another process may take one in between (an outgoing connection's
    /// ephemeral port). A broker that exits at once because its address is
    /// in use is started again, with every broker on new ports.
    pub(crate) fn launch(spec: &ClusterSpec) -> anyhow::Result<Cluster> {
        let mut attempt = 1;
        loop {
            let mut cluster = Cluster::launch_once(spec)?;
            match cluster.lost_a_port(PORT_RACE_WINDOW) {
                Some(node) if attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "broker {node} found its port taken (attempt {attempt}); starting the \
                         cluster again on other ports"
                    );
                    cluster.stop()?;
                    attempt += 1;
                }
                _ => return Ok(cluster),
            }
        }
    }

    /// Whether a broker exited within `window` because an address it was
    /// given was in use: its node id.
    fn lost_a_port(&mut self, window: Duration) -> Option<u32> {
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            for broker in &mut self.brokers {
                let exited = broker
                    .child
                    .as_mut()
                    .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
                if exited
                    && std::fs::read_to_string(&broker.log_path)
                        .is_ok_and(|log| says_address_in_use(&log))
                {
                    broker.child = None;
                    return Some(broker.node_id);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn launch_once(spec: &ClusterSpec) -> anyhow::Result<Cluster> {
        let binary = embedded::find_sluice(spec.sluice_bin)?;
        let prefix = if spec.name == "cluster-metadata" {
            "cluster"
        } else {
            spec.name
        };
        let root = embedded::empty_data_dir(spec.data_dir, &binary, prefix, "the cluster")?;
        let prepared = baseline::prepare_data_dir(&root, "--data-dir")?;
        std::fs::create_dir_all(spec.out)
            .with_context(|| format!("cannot create {}", spec.out.display()))?;
        let count = spec.brokers as usize;
        let ports = free_ports(3 * count)?;
        let (kafka_ports, rest) = ports.split_at(count);
        let (controller_ports, admin_ports) = rest.split_at(count);
        let mut cluster = Cluster {
            binary,
            voters: voters_flag(controller_ports, spec.voters),
            cores: spec.cores,
            extra_flags: spec.extra_flags.clone(),
            brokers: Vec::new(),
            root: prepared.path.clone(),
            remove_data: !spec.keep_data,
        };
        for index in 0..count {
            let node_id = u32::try_from(index + 1)?;
            let log_path = spec.out.join(format!("{}-node-{node_id}.log", spec.name));
            File::create(&log_path)
                .with_context(|| format!("cannot create {}", log_path.display()))?;
            cluster.brokers.push(Broker {
                node_id,
                kafka: format!("127.0.0.1:{}", kafka_ports[index]),
                controller_port: controller_ports[index],
                admin_port: admin_ports[index],
                data_dir: prepared.path.join(format!("node-{node_id}")),
                log_path,
                child: None,
            });
        }
        // All before waiting for any: none serves before a quorum formed.
        for index in 0..count {
            cluster.spawn(index)?;
        }
        Ok(cluster)
    }

    pub(crate) fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let voter = index < self.voters.split(',').count();
        let broker = &mut self.brokers[index];
        std::fs::create_dir_all(&broker.data_dir)
            .with_context(|| format!("cannot create {}", broker.data_dir.display()))?;
        let log = OpenOptions::new()
            .append(true)
            .open(&broker.log_path)
            .with_context(|| format!("cannot open {}", broker.log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--node-id")
            .arg(broker.node_id.to_string())
            .arg("--listen")
            .arg(&broker.kafka)
            .arg("--data-dir")
            .arg(&broker.data_dir)
            .arg("--cores")
            .arg(self.cores.to_string())
            .arg("--controller-voters")
            .arg(&self.voters)
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", broker.admin_port))
            .args(&self.extra_flags)
            .env("SLUICE_LOG_LEVEL", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            // Its own process group: Ctrl-C reaches the bench only, which
            // then stops the brokers.
            .process_group(0);
        if voter {
            command
                .arg("--controller-listen")
                .arg(format!("127.0.0.1:{}", broker.controller_port));
        }
        broker.child = Some(
            command
                .spawn()
                .with_context(|| format!("cannot start {}", self.binary.display()))?,
        );
        Ok(())
    }

    /// The directory holding every broker's data directory.
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The process id of broker `index`, while it runs.
    pub(crate) fn pid(&self, index: usize) -> Option<u32> {
        self.brokers[index].child.as_ref().map(Child::id)
    }

    /// SIGKILL broker `index` and reap it.
    pub(crate) fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let Some(mut child) = self.brokers[index].child.take() else {
            bail!("broker {} is not running", index + 1);
        };
        child.kill().context("SIGKILL")?;
        child.wait().context("reaping a killed broker")?;
        Ok(())
    }

    /// An error if a broker that should run has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        for broker in &mut self.brokers {
            if let Some(child) = &mut broker.child
                && let Some(status) = child.try_wait()?
            {
                broker.child = None;
                bail!(
                    "broker {} exited ({status}); its log {}:\n{}",
                    broker.node_id,
                    broker.log_path.display(),
                    log_tail(&broker.log_path)
                );
            }
        }
        Ok(())
    }

    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        for broker in &self.brokers {
            if let Some(child) = &broker.child {
                terminate(child);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for broker in &mut self.brokers {
            if let Some(mut child) = broker.child.take() {
                wait_or_kill(&mut child, deadline, &format!("broker {}", broker.node_id))?;
            }
        }
        if self.remove_data && self.root.exists() {
            std::fs::remove_dir_all(&self.root)
                .with_context(|| format!("cannot remove {}", self.root.display()))?;
            self.remove_data = false;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("sluice-bench: stopping the cluster: {error:#}");
        }
    }
}

/// One failover round's figures.
#[derive(Clone, Debug)]
struct Failover {
    killed_node: i32,
    kill_to_ack: Duration,
    attempts: u32,
    /// Errors of the attempts that failed, by text, with counts.
    errors: BTreeMap<String, u32>,
    rejoin: Duration,
}

/// Everything a run measured.
struct Outcome {
    create_total: Duration,
    create_requests: Histogram<u64>,
    propagation: Histogram<u64>,
    failovers: Vec<Failover>,
}

/// `sluice-bench cluster-metadata`.
pub fn run(args: &ClusterArgs, interrupted: &AtomicBool) -> anyhow::Result<ExitCode> {
    args.check()?;
    let started_at = SystemTime::now();
    eprintln!(
        "starting a {}-broker cluster ({} voter(s), {} shard(s) each)...",
        args.brokers,
        args.voters(),
        args.broker_cores
    );
    let mut cluster = Cluster::start(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(measure_cluster(args, &mut cluster, interrupted));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) if interrupted.load(Ordering::Relaxed) => {
            eprintln!("sluice-bench: interrupted ({error:#}); stopping the cluster");
            cluster.stop()?;
            return Ok(ExitCode::from(130));
        }
        Err(error) => {
            // Show what the brokers said before their logs are left behind.
            let _ = cluster.check_alive();
            return Err(error);
        }
    };
    cluster.stop()?;
    print!("{}", render(args, &outcome));
    let summary = summary_json(args, &outcome, started_at);
    let stem = "cluster-metadata";
    let json_path = args.out.join(format!("{stem}.json"));
    report::write(&json_path, &serde_json::to_string_pretty(&summary)?)?;
    let create_path = args.out.join(format!("{stem}-create.hgrm"));
    report::write(&create_path, &report::hgrm(&outcome.create_requests))?;
    let propagation_path = args.out.join(format!("{stem}-propagation.hgrm"));
    report::write(&propagation_path, &report::hgrm(&outcome.propagation))?;
    println!(
        "wrote {}, {}, {}",
        json_path.display(),
        create_path.display(),
        propagation_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn stop_if_interrupted(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

async fn measure_cluster(
    args: &ClusterArgs,
    cluster: &mut Cluster,
    interrupted: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let timeout = args.request_timeout();
    let addresses: Vec<String> = cluster
        .brokers
        .iter()
        .map(|broker| broker.kafka.clone())
        .collect();
    let versions = negotiate(cluster, &addresses[0], interrupted).await?;
    wait_until_serving(cluster, &addresses, versions, None, interrupted).await?;
    if !args.quiet {
        eprintln!("cluster serving on {}", addresses.join(", "));
    }

    // 1. Creation.
    let work = batches(args.topics, args.batch);
    let next = std::cell::Cell::new(0_usize);
    let mut create_requests = measure::latency_histogram();
    let started = Instant::now();
    let workers = (0..args.concurrency as usize).map(|worker| {
        let address = addresses[worker % addresses.len()].clone();
        let (work, next) = (&work, &next);
        async move {
            let mut link = Link::connect(&address, timeout).await?;
            let mut latencies = measure::latency_histogram();
            loop {
                stop_if_interrupted(interrupted)?;
                let index = next.get();
                let Some(names) = work.get(index) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                next.set(index + 1);
                let sent = Instant::now();
                if let Err((name, code)) = link
                    .create(names, args.partitions, versions, timeout)
                    .await?
                {
                    bail!(
                        "{address} could not create {name}: {}",
                        kafka::error_name(code)
                    );
                }
                measure::record_latency(&mut latencies, sent.elapsed());
            }
        }
    });
    for latencies in futures_util::future::join_all(workers).await {
        create_requests.add(latencies?)?;
    }
    let create_total = started.elapsed();
    if !args.quiet {
        eprintln!(
            "created {} topics in {:.3} s ({:.0} topics/s)",
            args.topics,
            create_total.as_secs_f64(),
            f64::from(args.topics) / create_total.as_secs_f64()
        );
    }

    // 2. Propagation.
    let mut propagation = measure::latency_histogram();
    let mut pollers = Vec::new();
    for address in &addresses {
        pollers.push(Link::connect(address, timeout).await?);
    }
    for index in 0..args.propagation_sample as usize {
        stop_if_interrupted(interrupted)?;
        let name = format!("propagation-{index:06}");
        let creator = &mut pollers[index % addresses.len()];
        if let Err((_, code)) = creator
            .create(
                std::slice::from_ref(&name),
                args.partitions,
                versions,
                timeout,
            )
            .await?
        {
            bail!("could not create {name}: {}", kafka::error_name(code));
        }
        let acknowledged = Instant::now();
        let deadline = acknowledged + timeout;
        let polls = pollers.iter_mut().map(|link| {
            let name = &name;
            async move {
                loop {
                    let view = link.view(Some(name), versions, timeout).await?;
                    if view.ready(args.partitions) {
                        return Ok::<_, anyhow::Error>(acknowledged.elapsed());
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "{} does not list {name} with leaders {timeout:?} after its creation",
                            link.connection.address
                        );
                    }
                }
            }
        });
        let mut slowest = Duration::ZERO;
        for elapsed in futures_util::future::join_all(polls).await {
            slowest = slowest.max(elapsed?);
        }
        measure::record_latency(&mut propagation, slowest);
    }
    drop(pollers);
    if !args.quiet && args.propagation_sample > 0 {
        let percentiles = stats::Percentiles::of(&propagation);
        eprintln!(
            "propagation of {} topics: p50 {:.3} ms, max {:.3} ms",
            args.propagation_sample,
            percentiles.value_us("p50").unwrap_or(0) as f64 / 1000.0,
            percentiles.max_us as f64 / 1000.0
        );
    }

    // 3. Failover.
    let mut failovers = Vec::new();
    for round in 0..args.failovers {
        stop_if_interrupted(interrupted)?;
        cluster.check_alive()?;
        let failover = failover_round(args, cluster, &addresses, versions, round, interrupted)
            .await
            .with_context(|| format!("failover round {}", round + 1))?;
        if !args.quiet {
            eprintln!(
                "failover {}: killed node {}, next creation acknowledged after {:.3} ms \
                 ({} attempts); it rejoined in {:.3} s",
                round + 1,
                failover.killed_node,
                failover.kill_to_ack.as_secs_f64() * 1000.0,
                failover.attempts,
                failover.rejoin.as_secs_f64()
            );
        }
        failovers.push(failover);
    }
    Ok(Outcome {
        create_total,
        create_requests,
        propagation,
        failovers,
    })
}

/// The API versions of `address` once it answers ApiVersions (it does not
/// before the controller quorum has formed).
pub(crate) async fn negotiate(
    cluster: &mut Cluster,
    address: &str,
    interrupted: &AtomicBool,
) -> anyhow::Result<Versions> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        stop_if_interrupted(interrupted)?;
        cluster.check_alive()?;
        match kafka::Client::connect(address, Duration::from_millis(500)).await {
            Ok(client) => {
                return Ok(Versions {
                    metadata: client.versions.pick(ApiKey::Metadata)?,
                    create_topics: client.versions.pick(ApiKey::CreateTopics)?,
                    produce: client.versions.pick(ApiKey::Produce)?,
                });
            }
            Err(error) if Instant::now() > deadline => {
                return Err(error.context(format!(
                    "{address} did not answer ApiVersions within {START_TIMEOUT:?}"
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Wait until every running broker answers Metadata listing every broker
/// and a controller (and `topic` with leaders, when given).
pub(crate) async fn wait_until_serving(
    cluster: &mut Cluster,
    addresses: &[String],
    versions: Versions,
    topic: Option<(&str, i32)>,
    interrupted: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let probe_timeout = Duration::from_millis(500);
    for address in addresses {
        loop {
            stop_if_interrupted(interrupted)?;
            cluster.check_alive()?;
            let view = async {
                let mut link = Link::connect(address, probe_timeout).await?;
                link.view(topic.map(|(name, _)| name), versions, probe_timeout)
                    .await
            }
            .await;
            if let Ok(view) = view {
                let complete = view.brokers.len() == addresses.len()
                    && view.controller_id >= 0
                    && topic.is_none_or(|(_, partitions)| view.ready(partitions));
                if complete {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{address} did not list all {} brokers and a controller{} within \
                     {START_TIMEOUT:?}",
                    addresses.len(),
                    topic
                        .map(|(name, _)| format!(" and {name}"))
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

async fn failover_round(
    args: &ClusterArgs,
    cluster: &mut Cluster,
    addresses: &[String],
    versions: Versions,
    round: u32,
    interrupted: &AtomicBool,
) -> anyhow::Result<Failover> {
    let timeout = args.request_timeout();
    let controller_id = Link::connect(&addresses[0], timeout)
        .await?
        .view(None, versions, timeout)
        .await?
        .controller_id;
    let index = usize::try_from(controller_id - 1)
        .ok()
        .filter(|index| *index < cluster.brokers.len())
        .ok_or_else(|| anyhow!("Metadata names controller {controller_id}, not a broker here"))?;
    let survivors: Vec<&String> = addresses
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(_, address)| address)
        .collect();
    cluster.kill(index)?;
    let killed = Instant::now();
    let deadline = killed + timeout;
    let interval = Duration::from_millis(args.failover_attempt_interval_ms);
    let mut attempts = 0_u32;
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut next_attempt = killed;
    let kill_to_ack = loop {
        stop_if_interrupted(interrupted)?;
        if Instant::now() > deadline {
            bail!("no CreateTopics was acknowledged within {timeout:?} of killing the controller");
        }
        if Instant::now() >= next_attempt {
            let address = survivors[attempts as usize % survivors.len()].clone();
            let name = format!("failover-{round}-{attempts:04}");
            in_flight.push(async move {
                let mut link = Link::connect(&address, timeout).await?;
                let answer = link
                    .create(
                        std::slice::from_ref(&name),
                        args.partitions,
                        versions,
                        timeout,
                    )
                    .await?;
                Ok::<_, anyhow::Error>((answer, Instant::now()))
            });
            attempts += 1;
            next_attempt += interval;
        }
        let wait = tokio::time::sleep_until(next_attempt.into());
        tokio::select! {
            () = wait => {}
            Some(result) = in_flight.next() => match result {
                // TOPIC_ALREADY_EXISTS on a fresh name: this attempt's own
                // creation, committed and retried by the broker.
                Ok((Ok(()) | Err((_, 36)), acknowledged)) => break acknowledged - killed,
                Ok((Err((_, code)), _)) => {
                    *errors.entry(kafka::error_name(code)).or_default() += 1;
                }
                Err(error) => *errors.entry(format!("{error:#}")).or_default() += 1,
            },
        }
    };
    drop(in_flight);
    let restarted = Instant::now();
    cluster.spawn(index)?;
    let last = format!("failover-{round}-rejoined");
    let mut link = Link::connect(survivors[0], timeout).await?;
    if let Err((_, code)) = link
        .create(
            std::slice::from_ref(&last),
            args.partitions,
            versions,
            timeout,
        )
        .await?
    {
        bail!("could not create {last}: {}", kafka::error_name(code));
    }
    wait_until_serving(
        cluster,
        addresses,
        versions,
        Some((last.as_str(), args.partitions)),
        interrupted,
    )
    .await?;
    Ok(Failover {
        killed_node: controller_id,
        kill_to_ack,
        attempts,
        errors,
        rejoin: restarted.elapsed(),
    })
}

fn render(args: &ClusterArgs, outcome: &Outcome) -> String {
    let total_secs = outcome.create_total.as_secs_f64();
    let mut out = format!(
        "cluster-metadata: {} brokers ({} voters, {} shard(s) each)\n\
         creation: {} topics x {} partitions (RF 1), {} per request, {} in flight: \
         {:.3} s, {:.0} topics/s, {:.0} partitions/s\n",
        args.brokers,
        args.voters(),
        args.broker_cores,
        args.topics,
        args.partitions,
        args.batch,
        args.concurrency,
        total_secs,
        f64::from(args.topics) / total_secs,
        f64::from(args.topics) * f64::from(args.partitions) / total_secs,
    );
    out.push_str(&report::table(&[
        ("create req", &outcome.create_requests),
        ("propagation", &outcome.propagation),
    ]));
    for (round, failover) in outcome.failovers.iter().enumerate() {
        out.push_str(&format!(
            "failover {}: killed controller {}, kill -> next acknowledged creation {:.3} ms \
             ({} attempts{}), rejoined in {:.3} s\n",
            round + 1,
            failover.killed_node,
            failover.kill_to_ack.as_secs_f64() * 1000.0,
            failover.attempts,
            if failover.errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; errors: {}",
                    failover
                        .errors
                        .iter()
                        .map(|(error, count)| format!("{count} x {error}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            failover.rejoin.as_secs_f64()
        ));
    }
    if let Some(median) = median(&failover_ms(outcome)) {
        out.push_str(&format!("failover median: {median:.3} ms\n"));
    }
    out
}

fn failover_ms(outcome: &Outcome) -> Vec<f64> {
    outcome
        .failovers
        .iter()
        .map(|failover| failover.kill_to_ack.as_secs_f64() * 1000.0)
        .collect()
}

fn summary_json(args: &ClusterArgs, outcome: &Outcome, started_at: SystemTime) -> Value {
    let total_secs = outcome.create_total.as_secs_f64();
    let mut summary = json!({
        "mode": "cluster-metadata",
        "brokers": args.brokers,
        "voters": args.voters(),
        "broker_cores": args.broker_cores,
        "create": {
            "topics": args.topics,
            "partitions": args.partitions,
            "replication_factor": 1,
            "topics_per_request": args.batch,
            "concurrency": args.concurrency,
            "total_secs": measure::round(total_secs, 6),
            "topics_per_sec": measure::round(f64::from(args.topics) / total_secs, 1),
            "request_latency": stats::Percentiles::of(&outcome.create_requests).to_json(),
        },
        "propagation": {
            "sample": args.propagation_sample,
            "ack_to_every_broker": stats::Percentiles::of(&outcome.propagation).to_json(),
        },
        "failover": {
            "attempt_interval_ms": args.failover_attempt_interval_ms,
            "rounds": outcome.failovers.iter().map(|failover| json!({
                "killed_node": failover.killed_node,
                "kill_to_ack_ms": measure::round(failover.kill_to_ack.as_secs_f64() * 1000.0, 3),
                "attempts": failover.attempts,
                "errors": failover.errors,
                "rejoin_secs": measure::round(failover.rejoin.as_secs_f64(), 3),
            })).collect::<Vec<_>>(),
            "median_ms": median(&failover_ms(outcome)).map(|median| measure::round(median, 3)),
        },
    });
    if let (Value::Object(summary), Value::Object(provenance)) =
        (&mut summary, provenance::to_json(started_at))
    {
        summary.extend(provenance);
    }
    summary
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ClusterArgs,
    }

    #[test]
    fn every_listener_s_lost_port_is_recognised_in_the_broker_log() {
        for log in [
            "sluice: cannot listen on 127.0.0.1:33987 for the admin HTTP API (--admin-listen): \
             address in use (is another broker running?)",
            "sluice: cannot listen on 127.0.0.1:9092: address in use by process 12",
            "sluice: controller: cannot bind 127.0.0.1:9093: Address already in use (os error 98)",
        ] {
            assert!(says_address_in_use(log), "{log}");
        }
        assert!(!says_address_in_use(
            "sluice: data directory /x is in use by another sluice process"
        ));
    }

    fn parse(flags: &[&str]) -> ClusterArgs {
        let mut argv = vec!["cluster-metadata"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    #[test]
    fn the_defaults_are_issue_9s_benchmark() {
        let args = parse(&[]);
        args.check().expect("defaults are valid");
        assert_eq!((args.brokers, args.topics, args.partitions), (3, 1000, 3));
        assert_eq!(args.voters(), 3);
    }

    #[test]
    fn bad_counts_are_refused() {
        for flags in [
            &["--brokers", "0"][..],
            &["--brokers", "10"],
            &["--topics", "0"],
            &["--partitions", "0"],
            &["--batch", "0"],
            &["--concurrency", "0"],
            &["--broker-cores", "0"],
            &["--failover-attempt-interval-ms", "0"],
            &["--request-timeout-ms", "0"],
        ] {
            assert!(parse(flags).check().is_err(), "{flags:?} accepted");
        }
    }

    #[test]
    fn failover_needs_three_voters() {
        let error = parse(&["--brokers", "2"]).check().expect_err("refused");
        assert!(error.to_string().contains("--failovers 0"), "{error}");
        let args = parse(&["--brokers", "2", "--failovers", "0"]);
        args.check().expect("no failover on two brokers is valid");
        assert_eq!(args.voters(), 1);
        assert_eq!(parse(&["--brokers", "5"]).voters(), 3);
    }

    #[test]
    fn voters_are_the_first_brokers() {
        assert_eq!(
            voters_flag(&[7001, 7011, 7021, 7031], 3),
            "1@127.0.0.1:7001,2@127.0.0.1:7011,3@127.0.0.1:7021"
        );
        assert_eq!(voters_flag(&[7001, 7011], 1), "1@127.0.0.1:7001");
    }

    #[test]
    fn batches_cover_every_topic_once() {
        let split = batches(25, 10);
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        let mut names: Vec<&String> = split.iter().flatten().collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 25);
        assert_eq!(
            batches(3, 10),
            vec![vec!["bench-000000", "bench-000001", "bench-000002"]]
        );
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
    }

    #[test]
    fn a_topic_is_ready_when_every_partition_has_a_listed_leader() {
        let view = |topic| TopicView {
            controller_id: 1,
            brokers: vec![1, 2, 3],
            topic,
        };
        assert!(view(Some((0, vec![(0, 1), (0, 2), (0, 3)]))).ready(3));
        assert!(!view(None).ready(3));
        assert!(!view(Some((3, vec![]))).ready(3), "unknown topic");
        assert!(
            !view(Some((0, vec![(0, 1), (0, 2)]))).ready(3),
            "a partition missing"
        );
        assert!(
            !view(Some((0, vec![(0, 1), (5, -1), (0, 3)]))).ready(3),
            "no leader"
        );
        assert!(
            !view(Some((0, vec![(0, 1), (0, 4), (0, 3)]))).ready(3),
            "unlisted leader"
        );
    }
}
