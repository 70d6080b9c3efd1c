//! `--embedded`: start a local `sluice` on a free loopback port with a
//! fresh data directory, run against it, stop it (SIGTERM, then SIGKILL
//! after a grace period) and remove the directory.
//!
//! The binary is looked up next to `sluice-bench` (same cargo target
//! directory) unless `--sluice-bin` names it.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::baseline;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of the embedded broker.
#[derive(Args, Clone, Debug, Default)]
pub struct EmbeddedArgs {
    /// Start a local sluice in a temporary data directory, run against it,
    /// then stop it and delete the directory.
    #[arg(long)]
    pub embedded: bool,
    /// The sluice binary for --embedded [default: `sluice` next to sluice-bench].
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Data directory for --embedded (must be on a real disk: the broker
    /// uses O_DIRECT) [default: bench-data/embedded-<pid> next to sluice-bench].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Shards (cores) of the embedded broker [default: the broker's own default, all cores].
    #[arg(long)]
    pub broker_cores: Option<usize>,
    /// Keep the embedded broker's data directory.
    #[arg(long)]
    pub keep_data: bool,
}

/// A running embedded broker; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct EmbeddedBroker {
    child: Option<Child>,
    pub bootstrap: String,
    /// The broker's admin HTTP API (`/metrics`), host:port.
    pub admin_address: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    remove_data: bool,
}

/// Where `sluice` should be: `explicit`, or next to the running executable
/// (or its parent, for test harnesses under target/*/deps).
pub fn find_sluice(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!(
            "--sluice-bin {} does not exist or is not a file",
            path.display()
        );
    }
    let exe = std::env::current_exe().context("cannot locate the sluice-bench executable")?;
    let dir = exe
        .parent()
        .context("the sluice-bench executable has no parent directory")?;
    let mut candidates = vec![dir.join("sluice")];
    if dir.file_name().is_some_and(|name| name == "deps")
        && let Some(parent) = dir.parent()
    {
        candidates.push(parent.join("sluice"));
    }
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
    }
    bail!(
        "the sluice binary was not found at {}: build it with `cargo build --release -p \
         sluice-server` (same profile as sluice-bench), or pass --sluice-bin PATH",
        candidates[0].display()
    )
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free loopback port for the embedded broker")?;
    Ok(listener.local_addr()?.port())
}

impl EmbeddedBroker {
    /// Start the broker and wait until it answers ApiVersions. Its stderr
    /// goes to `log_dir/sluice-embedded.log`.
    pub fn start(args: &EmbeddedArgs, log_dir: &Path) -> anyhow::Result<EmbeddedBroker> {
        let binary = find_sluice(args.sluice_bin.as_deref())?;
        let data_dir = empty_data_dir(
            args.data_dir.as_deref(),
            &binary,
            "embedded",
            "the embedded broker",
        )?;
        let prepared = baseline::prepare_data_dir(&data_dir, "--data-dir")?;
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        let log_path = log_dir.join("sluice-embedded.log");
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let bootstrap = format!("127.0.0.1:{}", free_port()?);
        // Its own admin port: the default one may be another broker's.
        let admin_address = format!("127.0.0.1:{}", free_port()?);
        let mut command = Command::new(&binary);
        command
            .arg("--data-dir")
            .arg(&prepared.path)
            .arg("--listen")
            .arg(&bootstrap)
            .arg("--admin-listen")
            .arg(&admin_address)
            .env("SLUICE_LOG_LEVEL", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            // Its own process group: Ctrl-C in the terminal reaches the
            // bench (which stops, drains and reports) but not the broker,
            // which the bench stops afterwards.
            .process_group(0);
        if let Some(cores) = args.broker_cores {
            command.arg("--cores").arg(cores.to_string());
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut broker = EmbeddedBroker {
            child: Some(child),
            bootstrap,
            admin_address,
            data_dir: prepared.path,
            log_path,
            remove_data: !args.keep_data,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "the embedded sluice exited during start-up ({status}); its log {}:\n{}",
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            if crate::run::check_broker(&self.bootstrap, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the embedded sluice did not answer on {} within {START_TIMEOUT:?}; its log {}:\n{}",
                    self.bootstrap,
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait, SIGKILL if needed; remove the data directory.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            wait_or_kill(
                &mut child,
                Instant::now() + STOP_TIMEOUT,
                "the embedded sluice",
            )?;
        }
        if self.remove_data && self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir)
                .with_context(|| format!("cannot remove {}", self.data_dir.display()))?;
            self.remove_data = false;
        }
        Ok(())
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("sluice-bench: stopping the embedded broker: {error:#}");
        }
    }
}

/// The data directory of a broker run: `given`, or a fresh one under
/// `bench-data/` beside the `sluice` binary (on the build's disk, not in
/// /tmp); refused when it is not empty (`owner` names whose it is).
pub(crate) fn empty_data_dir(
    given: Option<&Path>,
    binary: &Path,
    prefix: &str,
    owner: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => binary
            .parent()
            .unwrap_or(Path::new("."))
            .join("bench-data")
            .join(format!("{prefix}-{}", std::process::id())),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{owner}'s data directory {} is not empty; remove it or pass another --data-dir",
            dir.display()
        );
    }
    Ok(dir)
}

/// SIGTERM a child this process spawned.
pub(crate) fn terminate(child: &std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child this process spawned and
        // has not reaped yet (so the pid cannot be reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// Wait for `child` to exit until `deadline`, then SIGKILL and reap it
/// (`what` names it in the message).
pub(crate) fn wait_or_kill(
    child: &mut std::process::Child,
    deadline: Instant,
    what: &str,
) -> std::io::Result<()> {
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            eprintln!("sluice-bench: {what} did not stop in time; killing it");
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
