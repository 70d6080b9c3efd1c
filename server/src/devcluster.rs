//! `sluice dev-cluster`: a local cluster for development and tests, one
//! `sluice serve` process per broker on 127.0.0.1, started and stopped by
//! this process.
//!
//! Broker `i` (node ids `1..=nodes`) listens for Kafka clients on
//! `base_port + 10*(i-1)`, for the controller on the port after it, serves
//! its admin HTTP API (metrics, health) on the port after that, and keeps
//! its data in `DATA_DIR/node-i`. The first `--voters` brokers (default
//! `min(nodes, 3)`) are the controller's Raft voters; every broker is started
//! with the same `--controller-voters`.
//!
//! Each child runs in its own process group, so a Ctrl-C in the terminal
//! reaches only this process, which then stops the brokers itself (SIGTERM to
//! each, wait, SIGKILL after [`STOP_TIMEOUT`]). Every line a child writes to
//! stderr is copied to this process's stderr with a `[node-i]` prefix.
//! Runs on the main thread plus one copying thread per child; no async.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::admin::client::Connection;

/// Port distance between two brokers' Kafka listeners.
const PORT_STRIDE: u32 = 10;
/// How long the brokers may take, together, to answer ApiVersions.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a broker may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the supervisor looks at its children and at signals.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A limit that keeps a typo (`--nodes 300`) from forking hundreds of
/// brokers; a development cluster on one machine never needs more.
const NODES_MAX: u32 = 64;

/// `sluice dev-cluster ...`
#[derive(Args, Debug, Clone)]
pub struct DevClusterArgs {
    /// Number of brokers (node ids 1..=N).
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Directory holding each broker's data directory (`node-1`, ...),
    /// created if missing; reused by the next run.
    #[arg(long, default_value = "./dev-cluster")]
    pub data_dir: PathBuf,
    /// Kafka port of broker 1; broker i listens on base-port + 10*(i-1),
    /// its controller endpoint on the port after it, its admin HTTP API on
    /// the port after that.
    #[arg(long, default_value_t = 19092)]
    pub base_port: u16,
    /// Number of controller voters: brokers 1..=V [default: min(nodes, 3)].
    #[arg(long)]
    pub voters: Option<u32>,
    /// Shards (`--cores`) of each broker.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Log level of each broker (as `sluice serve --log-level`).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// One broker of the planned cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub node_id: u32,
    pub kafka: SocketAddr,
    pub controller: SocketAddr,
    /// `--admin-listen`.
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub voter: bool,
}

impl DevClusterArgs {
    /// The brokers these arguments describe, or why they make no sense.
    pub fn plan(&self) -> anyhow::Result<Vec<NodePlan>> {
        anyhow::ensure!(
            (1..=NODES_MAX).contains(&self.nodes),
            "--nodes must be between 1 and {NODES_MAX}, got {}",
            self.nodes
        );
        let voters = self.voters.unwrap_or(self.nodes.min(3));
        anyhow::ensure!(
            (1..=self.nodes).contains(&voters),
            "--voters must be between 1 and --nodes ({}), got {voters}",
            self.nodes
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.cores),
            "--cores must be between 1 and 1024, got {}",
            self.cores
        );
        anyhow::ensure!(self.base_port > 0, "--base-port must not be 0");
        let last_port = u32::from(self.base_port) + PORT_STRIDE * (self.nodes - 1) + 2;
        anyhow::ensure!(
            last_port <= u32::from(u16::MAX),
            "--base-port {} with {} nodes needs ports up to {last_port}, above 65535",
            self.base_port,
            self.nodes
        );
        Ok((1..=self.nodes)
            .map(|node_id| {
                let kafka_port = u32::from(self.base_port) + PORT_STRIDE * (node_id - 1);
                let port = |offset: u32| {
                    // The range was checked above.
                    let port = u16::try_from(kafka_port + offset).unwrap_or(u16::MAX);
                    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
                };
                NodePlan {
                    node_id,
                    kafka: port(0),
                    controller: port(1),
                    admin: port(2),
                    data_dir: self.data_dir.join(format!("node-{node_id}")),
                    voter: node_id <= voters,
                }
            })
            .collect())
    }
}

/// `--controller-voters` of every broker: `ID@HOST:PORT,...`.
pub fn controller_voters(plan: &[NodePlan]) -> String {
    plan.iter()
        .filter(|node| node.voter)
        .map(|node| format!("{}@{}", node.node_id, node.controller))
        .collect::<Vec<_>>()
        .join(",")
}

/// Run `sluice dev-cluster`: exit 0 after a clean stop on SIGINT/SIGTERM,
/// 1 when a broker could not start or did not stop cleanly, 2 for bad
/// arguments.
pub fn run(args: DevClusterArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("sluice dev-cluster: {error:#}");
            return ExitCode::from(2);
        }
    };
    match supervise(&args, &plan) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("sluice dev-cluster: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A running broker process.
struct Node {
    plan: NodePlan,
    child: Child,
    /// Set once the process has exited (and has been reaped).
    status: Option<ExitStatus>,
    copier: Option<JoinHandle<()>>,
}

impl Node {
    fn name(&self) -> String {
        format!("node-{}", self.plan.node_id)
    }

    /// Reap the process if it has exited; `Some(status)` the first time.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                Some(status)
            }
            Ok(None) => None,
            Err(error) => {
                eprintln!(
                    "sluice dev-cluster: cannot wait for {}: {error}",
                    self.name()
                );
                None
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        if self.status.is_some() {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // reaped (status is None), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Start every broker, wait until all serve, print the table, then wait for
/// a signal and stop them. `Ok(true)`: every broker ran until asked to stop
/// and stopped cleanly.
fn supervise(args: &DevClusterArgs, plan: &[NodePlan]) -> anyhow::Result<bool> {
    // Registered before any child exists, so that a Ctrl-C during startup
    // stops the children already started.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("handling SIGINT and SIGTERM")?;
    let executable = std::env::current_exe().context("finding the sluice executable")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let voters = controller_voters(plan);
    let mut nodes: Vec<Node> = Vec::with_capacity(plan.len());
    for node_plan in plan {
        match spawn(&executable, args, node_plan, &voters) {
            Ok(node) => nodes.push(node),
            Err(error) => {
                eprintln!("sluice dev-cluster: {error:#}");
                stop_all(&mut nodes, &mut signals);
                return Ok(false);
            }
        }
    }
    let mut clean = true;
    match wait_until_serving(&mut nodes, &mut signals) {
        Startup::Serving => print_table(&nodes),
        Startup::Signalled => {
            stop_all(&mut nodes, &mut signals);
            return Ok(false);
        }
        Startup::Failed(reason) => {
            eprintln!("sluice dev-cluster: {reason}; stopping the cluster");
            stop_all(&mut nodes, &mut signals);
            return Ok(false);
        }
    }
    'serving: loop {
        if let Some(signal) = signals.pending().next() {
            eprintln!("sluice dev-cluster: signal {signal}, stopping the brokers");
            break 'serving;
        }
        let mut running = 0;
        for node in &mut nodes {
            if let Some(status) = node.poll_exit() {
                clean = false;
                eprintln!(
                    "sluice dev-cluster: {} (pid {}) exited unexpectedly: {status}; \
                     its data stays in {}",
                    node.name(),
                    node.child.id(),
                    node.plan.data_dir.display()
                );
            }
            if node.status.is_none() {
                running += 1;
            }
        }
        if running == 0 {
            eprintln!("sluice dev-cluster: every broker has exited");
            break 'serving;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(stop_all(&mut nodes, &mut signals) && clean)
}

fn spawn(
    executable: &std::path::Path,
    args: &DevClusterArgs,
    plan: &NodePlan,
    voters: &str,
) -> anyhow::Result<Node> {
    std::fs::create_dir_all(&plan.data_dir)
        .with_context(|| format!("creating {}", plan.data_dir.display()))?;
    let mut command = Command::new(executable);
    command
        .arg("serve")
        .arg("--node-id")
        .arg(plan.node_id.to_string())
        .arg("--listen")
        .arg(plan.kafka.to_string())
        .arg("--data-dir")
        .arg(&plan.data_dir)
        .arg("--cores")
        .arg(args.cores.to_string())
        .arg("--log-level")
        .arg(&args.log_level)
        .arg("--controller-voters")
        .arg(voters)
        .arg("--admin-listen")
        .arg(plan.admin.to_string());
    if plan.voter {
        command
            .arg("--controller-listen")
            .arg(plan.controller.to_string());
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches only us, and
        // we stop the brokers in order.
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting node-{}", plan.node_id))?;
    let copier = child.stderr.take().map(|stderr| {
        let prefix = format!("[node-{}] ", plan.node_id);
        std::thread::spawn(move || copy_prefixed(stderr, &prefix))
    });
    Ok(Node {
        plan: plan.clone(),
        child,
        status: None,
        copier,
    })
}

/// Copy `reader`'s lines to our stderr, each behind `prefix`, until EOF.
fn copy_prefixed(reader: impl std::io::Read, prefix: &str) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                let mut stderr = std::io::stderr().lock();
                let _ = stderr.write_all(prefix.as_bytes());
                let _ = stderr.write_all(&line);
            }
        }
    }
}

enum Startup {
    Serving,
    Signalled,
    Failed(String),
}

/// Wait until every broker answers ApiVersions (they cannot before the
/// controller quorum has formed, so all were started first).
fn wait_until_serving(nodes: &mut [Node], signals: &mut Signals) -> Startup {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut serving = vec![false; nodes.len()];
    loop {
        if let Some(signal) = signals.pending().next() {
            eprintln!("sluice dev-cluster: signal {signal} during startup, stopping");
            return Startup::Signalled;
        }
        for (node, serving) in nodes.iter_mut().zip(serving.iter_mut()) {
            if let Some(status) = node.poll_exit() {
                return Startup::Failed(format!("{} exited during startup: {status}", node.name()));
            }
            if !*serving {
                *serving = Connection::open(&node.plan.kafka.to_string()).is_ok();
            }
        }
        if serving.iter().all(|serving| *serving) {
            return Startup::Serving;
        }
        if Instant::now() > deadline {
            let waiting: Vec<String> = nodes
                .iter()
                .zip(&serving)
                .filter(|(_, serving)| !**serving)
                .map(|(node, _)| node.name())
                .collect();
            return Startup::Failed(format!(
                "{} did not answer ApiVersions within {START_TIMEOUT:?}",
                waiting.join(", ")
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn print_table(nodes: &[Node]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<6} {:<6} {:<21} {:<21} {:<8} data dir",
        "node", "role", "kafka", "controller", "pid"
    );
    for node in nodes {
        let controller = if node.plan.voter {
            node.plan.controller.to_string()
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            out,
            "{:<6} {:<6} {:<21} {:<21} {:<8} {}",
            node.plan.node_id,
            if node.plan.voter { "voter" } else { "broker" },
            node.plan.kafka,
            controller,
            node.child.id(),
            node.plan.data_dir.display()
        );
    }
    let bootstrap: Vec<String> = nodes
        .iter()
        .map(|node| node.plan.kafka.to_string())
        .collect();
    let _ = writeln!(out, "bootstrap: {}", bootstrap.join(","));
    let _ = writeln!(out, "Ctrl-C stops the cluster.");
    let _ = out.flush();
}

/// SIGTERM every running broker at once and wait for them to exit; a
/// second signal, or [`STOP_TIMEOUT`], kills the rest. `true` when every
/// broker still running exited with status 0.
fn stop_all(nodes: &mut [Node], signals: &mut Signals) -> bool {
    let mut clean = true;
    for node in nodes.iter() {
        node.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut killing = false;
    loop {
        let mut running = 0;
        for node in nodes.iter_mut() {
            if let Some(status) = node.poll_exit()
                && !status.success()
            {
                clean = false;
                eprintln!("sluice dev-cluster: {} stopped with {status}", node.name());
            }
            if node.status.is_none() {
                running += 1;
            }
        }
        if running == 0 {
            break;
        }
        if !killing && (signals.pending().next().is_some() || Instant::now() > deadline) {
            eprintln!("sluice dev-cluster: killing the {running} brokers still running");
            killing = true;
            clean = false;
            for node in nodes.iter() {
                node.signal(libc::SIGKILL);
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    for node in nodes.iter_mut() {
        if let Some(copier) = node.copier.take() {
            let _ = copier.join();
        }
    }
    if clean {
        eprintln!("sluice dev-cluster: every broker stopped cleanly");
    }
    clean
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(nodes: u32, base_port: u16) -> DevClusterArgs {
        DevClusterArgs {
            nodes,
            data_dir: PathBuf::from("/tmp/dev"),
            base_port,
            voters: None,
            cores: 1,
            log_level: "info".to_string(),
        }
    }

    #[test]
    fn three_nodes_are_three_voters_ten_ports_apart() {
        let plan = args(3, 19092).plan().unwrap();
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[2].kafka.to_string(), "127.0.0.1:19112");
        assert_eq!(plan[2].controller.to_string(), "127.0.0.1:19113");
        assert_eq!(plan[2].admin.to_string(), "127.0.0.1:19114");
        assert_eq!(plan[1].data_dir, PathBuf::from("/tmp/dev/node-2"));
        assert!(plan.iter().all(|node| node.voter));
        assert_eq!(
            controller_voters(&plan),
            "1@127.0.0.1:19093,2@127.0.0.1:19103,3@127.0.0.1:19113"
        );
    }

    #[test]
    fn five_nodes_have_three_voters_unless_told() {
        let plan = args(5, 20000).plan().unwrap();
        assert_eq!(plan.iter().filter(|node| node.voter).count(), 3);
        let mut one_voter = args(5, 20000);
        one_voter.voters = Some(1);
        assert_eq!(
            controller_voters(&one_voter.plan().unwrap()),
            "1@127.0.0.1:20001"
        );
    }

    #[test]
    fn nonsense_is_refused() {
        for (arguments, expected) in [
            (args(0, 19092), "--nodes"),
            (args(NODES_MAX + 1, 1000), "--nodes"),
            (args(3, 0), "--base-port"),
            (args(3, 65520), "above 65535"),
            (
                DevClusterArgs {
                    voters: Some(4),
                    ..args(3, 19092)
                },
                "--voters",
            ),
            (
                DevClusterArgs {
                    voters: Some(0),
                    ..args(3, 19092)
                },
                "--voters",
            ),
        ] {
            let error = format!("{:#}", arguments.plan().unwrap_err());
            assert!(error.contains(expected), "{arguments:?}: {error}");
        }
        // One node uses its base port and the two after it.
        assert!(args(1, 65533).plan().is_ok());
        let error = format!("{:#}", args(1, 65534).plan().unwrap_err());
        assert!(error.contains("above 65535"), "{error}");
    }
}
