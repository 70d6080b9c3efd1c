//! Support for the interop tests: a real `sluice` process per test
//! ([`Broker`]), the external tools the tests drive (kcat, the Python venv)
//! and the rule for when a missing tool skips a test, plus a seeded PRNG.
//!
//! Each test starts its own broker on a free loopback port with a fresh data
//! directory under `CARGO_TARGET_TMPDIR` (the real disk: the broker writes
//! with O_DIRECT, which tmpfs refuses). The broker's stderr goes to a file
//! next to the data directory; a failing test prints its first and last
//! lines and whether the process was still running.
//!
//! A missing external tool skips its test with a loud message, except when
//! the environment variable `CI` is set: `.ci/test` installs every tool, so
//! under CI a missing tool is a failure, never a silent pass.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod certs;
pub mod cluster;
pub mod fault_proxy;
pub mod kafka;
pub mod wire;

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shards (`--cores`) of every test broker.
const SHARD_COUNT: usize = 2;
/// How long a broker may take from spawn to answering ApiVersions.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM (it flushes every log).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the broker's stderr shown when a test fails (first and last).
const STDERR_LINES_SHOWN: usize = 80;

/// Ports handed to brokers by this test binary. A broker refuses to start
/// on an address another process listens on ("address in use"), so two
/// tests given the same port would see one of their brokers fail; this set
/// keeps concurrent tests apart (and keeps a stopped broker's port for its
/// restart).
static PORTS_TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static BROKER_COUNT: AtomicU64 = AtomicU64::new(0);

/// A `sluice` process owned by a test: killed (SIGKILL) when dropped.
pub struct Broker {
    name: String,
    port: u16,
    /// The admin HTTP port (`--admin-listen`), unless the test's own
    /// flags give one.
    admin_port: Option<u16>,
    data_dir: PathBuf,
    log_dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    /// Number of processes started so far; names the stderr files.
    starts: u32,
    /// Where stderr goes instead of this broker's own files (e.g.
    /// /dev/full), opened for writing at each start.
    stderr_to: Option<PathBuf>,
}

impl Broker {
    /// Start a broker with `--cores 2` ([`SHARD_COUNT`]) and otherwise
    /// default settings.
    /// `name` (the test's name) names its directory.
    pub fn start(name: &str) -> Broker {
        Broker::start_with_args(name, &[])
    }

    /// Start a broker with extra command line flags.
    pub fn start_with_args(name: &str, extra_args: &[&str]) -> Broker {
        let number = BROKER_COUNT.fetch_add(1, Ordering::Relaxed);
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("interop")
            .join(format!("{name}-{}-{number}", std::process::id()));
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("removing an old test directory");
        }
        let data_dir = root.join("data");
        let log_dir = root.join("logs");
        std::fs::create_dir_all(&data_dir).expect("creating the data directory");
        std::fs::create_dir_all(&log_dir).expect("creating the log directory");
        let mut broker = Broker {
            name: name.to_string(),
            port: free_port(),
            admin_port: admin_port_unless_given(extra_args.iter().copied()),
            data_dir,
            log_dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            starts: 0,
            stderr_to: None,
        };
        broker.start_again();
        broker
    }

    /// Spawn a broker whose directory is `root` (data in `root/data`,
    /// stderr files in `root/logs`) on `port`, without waiting for it to
    /// serve: brokers of a cluster cannot serve before a controller quorum
    /// exists, so a [`cluster::Cluster`] spawns all of them, then calls
    /// [`Broker::wait_until_serving`] on each. `port` should come from
    /// [`reserve_port`].
    pub fn spawn_in(name: &str, root: &Path, port: u16, extra_args: &[String]) -> Broker {
        if root.exists() {
            std::fs::remove_dir_all(root).expect("removing an old test directory");
        }
        let data_dir = root.join("data");
        let log_dir = root.join("logs");
        std::fs::create_dir_all(&data_dir).expect("creating the data directory");
        std::fs::create_dir_all(&log_dir).expect("creating the log directory");
        let mut broker = Broker {
            name: name.to_string(),
            port,
            admin_port: admin_port_unless_given(extra_args.iter().map(String::as_str)),
            data_dir,
            log_dir,
            extra_args: extra_args.to_vec(),
            child: None,
            starts: 0,
            stderr_to: None,
        };
        broker.spawn();
        broker
    }

    /// The Kafka listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin HTTP API's address (`/metrics`, `/v1/status/*`).
    pub fn admin_address(&self) -> SocketAddr {
        let port = self
            .admin_port
            .expect("the test gave the broker its own --admin-listen");
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    /// Whether the process is running (spawned and not exited).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// `127.0.0.1:port`, for clients' bootstrap.servers.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is not running").id()
    }

    /// Resident set size of the broker process (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .expect("VmRSS in /proc/<pid>/status");
        let kibibytes: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|number| number.parse().ok())
            .expect("VmRSS value in kB");
        kibibytes * 1024
    }

    /// Replace the flags of the next [`Broker::start_again`] (the harness's
    /// own, such as the port and data directory, stay), e.g. to start the
    /// same data directory with a feature turned on.
    pub fn set_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|arg| arg.to_string()).collect();
    }

    /// Start the process (again) on the same port and data directory, and
    /// wait until it answers ApiVersions.
    pub fn start_again(&mut self) {
        self.spawn();
        self.wait_until_serving();
    }

    /// Start the process (again) on the same port and data directory,
    /// without waiting for it to serve.
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "broker {} is already running",
            self.name
        );
        let stderr = match &self.stderr_to {
            Some(path) => std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap_or_else(|error| panic!("opening {}: {error}", path.display())),
            None => File::create(self.stderr_path(self.starts))
                .expect("creating the broker's stderr file"),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.address().to_string())
            .arg("--cores")
            .arg(SHARD_COUNT.to_string())
            .args(
                self.admin_port
                    .map(|port| ["--admin-listen".to_string(), format!("127.0.0.1:{port}")])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra_args)
            .env("SLUICE_LOG_LEVEL", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawning the sluice binary");
        self.child = Some(child);
        self.starts += 1;
    }

    /// Start a broker (as [`Broker::start`]) whose stderr is `path`, opened
    /// for writing (e.g. /dev/full, where every write fails with ENOSPC).
    /// Its stderr is then not kept: failures show no broker output.
    pub fn start_with_stderr(name: &str, path: &Path) -> Broker {
        let mut broker = Broker::start_with_args(name, &[]);
        broker.stop();
        broker.stderr_to = Some(path.to_path_buf());
        broker.start_again();
        broker
    }

    /// SIGTERM, wait for a clean exit (status 0), start again.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// SIGTERM and wait for the process to exit cleanly.
    pub fn stop(&mut self) {
        let status = self.signal_and_wait(libc::SIGTERM, STOP_TIMEOUT);
        if !status.success() {
            panic!(
                "broker {} exited with {status} after SIGTERM (expected a clean exit)\n{}",
                self.name,
                self.stderr_tail()
            );
        }
    }

    /// SIGKILL (kill -9) and reap the process. `start_again` brings it back.
    pub fn kill9(&mut self) {
        self.signal_and_wait(libc::SIGKILL, STOP_TIMEOUT);
    }

    /// `Some(status)` if the process has exited (it should not have).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().expect("waiting for the broker"))
    }

    /// Panic (with the broker's stderr) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "broker {} is no longer running: {status}\n{}",
                self.name,
                self.stderr_tail()
            );
        }
    }

    /// The first and last lines of every stderr file of this broker, for
    /// failure messages.
    /// Everything the broker wrote to stderr, every start.
    pub fn stderr_all(&self) -> String {
        (0..self.starts)
            .map(|start| std::fs::read_to_string(self.stderr_path(start)).unwrap_or_default())
            .collect()
    }

    pub fn stderr_tail(&self) -> String {
        let mut text = String::new();
        for start in 0..self.starts {
            let path = self.stderr_path(start);
            let contents = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = contents.lines().collect();
            text.push_str(&format!(
                "---- broker stderr, start {start} ({}), {} lines ----\n",
                path.display(),
                lines.len()
            ));
            // The first lines say what happened (a panic or abort message
            // comes before its backtrace); the last ones how it ended.
            let head = STDERR_LINES_SHOWN / 2;
            for (index, line) in lines.iter().enumerate() {
                if index == head && lines.len() > STDERR_LINES_SHOWN {
                    text.push_str("    [...]\n");
                }
                if index < head || index + (STDERR_LINES_SHOWN - head) >= lines.len() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }

    fn stderr_path(&self, start: u32) -> PathBuf {
        self.log_dir.join(format!("stderr-{start}.log"))
    }

    fn signal_and_wait(&mut self, signal: libc::c_int, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        if child.try_wait().expect("waiting for the broker").is_none() {
            // SAFETY: kill(2) with the pid of our own unreaped child.
            let result = unsafe { libc::kill(pid, signal) };
            assert_eq!(result, 0, "kill({pid}, {signal}) failed");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the broker") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker {} did not exit within {timeout:?} of signal {signal}\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the broker answers an ApiVersions request, or fail with
    /// its stderr (early exit, or no answer in time).
    pub fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "broker {} exited during startup with {status}\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            match api_versions_round_trip(self.address()) {
                Ok(()) => {
                    self.assert_alone_on_port();
                    return;
                }
                Err(error) => last_error = error.to_string(),
            }
            if Instant::now() > deadline {
                panic!(
                    "broker {} did not answer ApiVersions on {} within {START_TIMEOUT:?} \
                     (last error: {last_error})\n{}",
                    self.name,
                    self.address(),
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Broker {
    /// The broker binds one SO_REUSEPORT listener per shard and refuses a
    /// port another process listens on; this checks that it did (no other
    /// process, e.g. another test run on this machine, shares the port).
    fn assert_alone_on_port(&self) {
        let listening = listeners_on_port(self.port);
        assert!(
            listening <= SHARD_COUNT,
            "{listening} sockets listen on port {}, more than the broker's {SHARD_COUNT} shards: \
             another process shares the port (SO_REUSEPORT)",
            self.port
        );
    }
}

/// LISTEN sockets on 127.0.0.1:`port`, from /proc/net/tcp.
fn listeners_on_port(port: u16) -> usize {
    const LISTEN: &str = "0A";
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&LISTEN)
        })
        .count()
}

impl Drop for Broker {
    fn drop(&mut self) {
        let state = match self.child.as_mut().map(Child::try_wait) {
            None => "not running (stopped by the test)".to_string(),
            Some(Ok(None)) => "still running".to_string(),
            Some(Ok(Some(status))) => format!("had exited: {status}"),
            Some(Err(error)) => format!("unknown: {error}"),
        };
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "broker {} (data in {}) when the test failed: {state}\n{}",
                self.name,
                self.data_dir.display(),
                self.stderr_tail()
            );
        } else if let Some(root) = self.data_dir.parent() {
            // A passing test leaves nothing behind (some write gigabytes).
            let _ = std::fs::remove_dir_all(root);
        }
        if let Ok(mut ports) = PORTS_TAKEN.lock() {
            let ports = ports.get_or_insert_with(HashSet::new);
            ports.remove(&self.port);
            if let Some(port) = self.admin_port {
                ports.remove(&port);
            }
        }
    }
}

/// A free port for a broker's admin HTTP API, unless `args` give
/// `--admin-listen` (every broker of a test machine needs its own: the
/// default, 127.0.0.1:9644, can be held by one process only).
fn admin_port_unless_given<'a>(mut args: impl Iterator<Item = &'a str>) -> Option<u16> {
    let given = args.any(|arg| arg == "--admin-listen" || arg.starts_with("--admin-listen="));
    (!given).then(free_port)
}

/// A loopback port nothing listens on, not handed to another broker of
/// this test binary.
///
/// Picked below the kernel's ephemeral range (`ip_local_port_range`): a
/// port the kernel handed out for `bind(0)` is one it may hand out again to
/// any outgoing connection (a client, a broker's peer link) in the moment
/// between our check and the broker's own bind, which failed a CI run with
/// "Address already in use". Ports below the range are only ever taken by
/// an explicit bind. The start point depends on the process id, so test
/// binaries run side by side rarely try the same ports.
fn free_port() -> u16 {
    let (low, high) = pickable_port_range();
    let span = u32::from(high - low);
    let mut next = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut ports = PORTS_TAKEN.lock().expect("port set");
    let ports = ports.get_or_insert_with(HashSet::new);
    for _ in 0..span {
        next = (next + 1) % span;
        let port = low + next as u16;
        if ports.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            ports.insert(port);
            return port;
        }
    }
    panic!("no free port found in {low}..{high}");
}

/// Ports tests may pick: from 20000 up to the start of the kernel's
/// ephemeral range, or above its end when the range starts low (never
/// inside it; see [`free_port`]).
fn pickable_port_range() -> (u16, u16) {
    let range: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map(|text| {
            text.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (first, last) = match range[..] {
        [first, last] => (first, last),
        _ => (32768, 60999),
    };
    if first >= 21_000 {
        (20_000, first)
    } else if last <= 64_000 {
        (last + 1, 65_535)
    } else {
        panic!("the ephemeral port range {first}-{last} leaves no ports for tests");
    }
}

/// A free loopback port, reserved as a [`Broker`]'s is (never handed to
/// another broker of this test binary), for a `sluice` process a test
/// starts itself.
pub fn reserve_port() -> u16 {
    free_port()
}

/// Reserve exactly these loopback ports (for a process that derives its
/// ports from a base, like `sluice dev-cluster`): `true` when none was
/// handed out before in this test binary and each can be bound now.
pub fn reserve_ports(ports: &[u16]) -> bool {
    let mut taken = PORTS_TAKEN.lock().expect("port set");
    let taken = taken.get_or_insert_with(HashSet::new);
    let free = ports.iter().all(|port| {
        !taken.contains(port) && TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).is_ok()
    });
    if free {
        taken.extend(ports.iter().copied());
    }
    free
}

/// Whether a process answers ApiVersions on `address` (one round trip on
/// a new connection).
pub fn answers_api_versions(address: SocketAddr) -> bool {
    api_versions_round_trip(address).is_ok()
}

/// One ApiVersions v0 request and its response on a new connection.
fn api_versions_round_trip(address: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    // size, api key 18, version 0, correlation id 7, client id "" (length 0).
    let request: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0, 0];
    stream.write_all(&request)?;
    let mut size = [0_u8; 4];
    stream.read_exact(&mut size)?;
    let mut body = vec![0_u8; u32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body)?;
    if body.get(..4) != Some(&7_i32.to_be_bytes()[..]) {
        return Err(std::io::Error::other(
            "ApiVersions answer with a wrong correlation id",
        ));
    }
    Ok(())
}

/// Whether missing tools fail (under CI) rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "0" && value != "false")
}

/// Skip (return `None` after a loud message) or, under CI, fail: `tool` is
/// missing for `reason`.
pub fn missing_tool<T>(tool: &str, reason: &str) -> Option<T> {
    if in_ci() {
        panic!("{tool} is missing ({reason}), and CI is set: .ci/test must install it");
    }
    // Straight to stderr: the test harness captures eprintln! of passing
    // tests, and a skip must not pass unnoticed.
    let banner = "!".repeat(77);
    let test = std::thread::current()
        .name()
        .unwrap_or("an interop test")
        .to_string();
    let _ = write!(
        std::io::stderr(),
        "\n{banner}\n!!! SKIPPED {test}: {tool} is missing ({reason}).\n\
         !!! Run `bash .ci/test` (which installs it) or install it yourself.\n{banner}\n"
    );
    None
}

/// The executable `name` on PATH, or `None` (skip) / panic (CI).
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for directory in std::env::split_paths(&path) {
        let candidate = directory.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    missing_tool(name, "not on PATH")
}

/// The Python interpreter of the test venv (`$SLUICE_TEST_VENV`, default
/// `<repo>/target/test-venv`) with confluent-kafka and kafka-python, or
/// `None` (skip) / panic (CI).
pub fn require_python() -> Option<PathBuf> {
    let venv = std::env::var_os("SLUICE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("test-venv"));
    let python = venv.join("bin").join("python");
    let reason = format!(
        "the test venv {} with confluent-kafka and kafka-python",
        venv.display()
    );
    if !python.is_file() {
        return missing_tool("python", &reason);
    }
    let imports = Command::new(&python)
        .args(["-c", "import confluent_kafka, kafka"])
        .output();
    match imports {
        Ok(output) if output.status.success() => Some(python),
        Ok(output) => missing_tool(
            "python modules",
            &format!(
                "{reason}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ),
        Err(error) => missing_tool("python", &format!("{reason}: {error}")),
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the server crate lives in the repository")
        .to_path_buf()
}

/// Run `command` with a time limit; returns its output, or panics naming
/// `what` when it does not finish in time.
pub fn run_with_timeout(command: Command, timeout: Duration, what: &str) -> std::process::Output {
    run_with_input(command, None, timeout, what)
}

/// [`run_with_timeout`], writing `input` (when given) to the child's stdin
/// and then closing it.
pub fn run_with_input(
    mut command: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    what: &str,
) -> std::process::Output {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("{what}: spawn failed: {error}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout_reader = std::thread::spawn(move || read_all(stdout));
    let stderr_reader = std::thread::spawn(move || read_all(stderr));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = stdout_reader.join().unwrap_or_default();
            let stderr = stderr_reader.join().unwrap_or_default();
            panic!(
                "{what}: no exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout_reader.join().unwrap_or_default(),
        stderr: stderr_reader.join().unwrap_or_default(),
    }
}

fn read_all(mut reader: impl Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = reader.read_to_end(&mut bytes);
    bytes
}

/// A small seeded PRNG (xorshift64*), so that failures can be replayed from
/// the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The seed from environment variable `name`, or one from the clock.
    pub fn seed_from_env(name: &str) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_nanos() as u64)
                    .unwrap_or(1)
            })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next_u64() as u8).collect()
    }
}

/// A kcat command aimed at `broker` (IPv4: the broker listens on 127.0.0.1).
pub fn kcat(kcat: &Path, broker: &Broker) -> Command {
    let mut command = Command::new(kcat);
    command
        .arg("-b")
        .arg(broker.bootstrap())
        .args(["-X", "broker.address.family=v4"]);
    command
}

/// Fail with the command's output and the broker's log unless it succeeded.
pub fn assert_success(output: &std::process::Output, what: &str, broker: &Broker) {
    assert!(
        output.status.success(),
        "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        broker.stderr_tail()
    );
}
