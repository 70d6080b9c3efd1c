//! What a new user sees from the `sluice` binary: each startup error says
//! what is wrong once, log settings do what they say, a host name is a
//! valid listen address. Real processes; each test starts its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use support::{answers_api_versions, reserve_port, run_with_timeout};

/// How long a process that must refuse to start may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh directory for one test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cli_errors")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// `sluice` with `args`, one shard, on a port nobody uses unless `args`
/// give `--listen`.
fn sluice(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(["--cores", "1"]);
    if !args.contains(&"--listen") {
        command.args(["--listen", &format!("127.0.0.1:{}", reserve_port())]);
    }
    // Tests run side by side: none may hold the default admin port.
    if !args.contains(&"--admin-listen") {
        command.args(["--admin-listen", &format!("127.0.0.1:{}", reserve_port())]);
    }
    command
        .args(args)
        .env_remove("SLUICE_LOG_LEVEL")
        .env_remove("SLUICE_LOG_FORMAT");
    command
}

/// Run a `sluice` that must exit at once; returns its output and stderr.
fn run_refused(command: Command, what: &str) -> (Output, String) {
    let output = run_with_timeout(command, EXIT_TIMEOUT, what);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "{what}: sluice must refuse to start, it exited with {}\n{stderr}",
        output.status
    );
    (output, stderr)
}

fn assert_says_once(stderr: &str, text: &str) {
    assert_eq!(
        stderr.matches(text).count(),
        1,
        "stderr must say {text:?} exactly once:\n{stderr}"
    );
}

/// A broker process with its stderr in a file (not a terminal); killed
/// when dropped.
struct Running {
    child: Child,
    stderr_path: PathBuf,
}

impl Running {
    fn spawn(mut command: Command, dir: &Path) -> Running {
        let stderr_path = dir.join("stderr.log");
        let stderr = File::create(&stderr_path).expect("creating the stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawning sluice");
        Running { child, stderr_path }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn wait_until_serving(&mut self, address: SocketAddr) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers_api_versions(address) {
            if let Some(status) = self.child.try_wait().expect("waiting for sluice") {
                panic!("sluice exited during startup: {status}\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not answer on {address} within {START_TIMEOUT:?}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until stderr contains `text`.
    fn wait_for_stderr(&mut self, text: &str) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let stderr = self.stderr();
            if stderr.contains(text) {
                return stderr;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not log {text:?} within {START_TIMEOUT:?}:\n{stderr}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM and wait for the clean stop; returns stderr.
    fn stop(mut self) -> String {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with the pid of our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for sluice") {
                assert!(
                    status.success(),
                    "sluice exited with {status}\n{}",
                    self.stderr()
                );
                return self.stderr();
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not stop\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_data_dir_that_cannot_be_created_says_so_once() {
    let (output, stderr) = run_refused(sluice(&["--data-dir", "/proc/x"]), "--data-dir /proc/x");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot create data directory /proc/x: "),
        "the error must say the directory cannot be created:\n{stderr}"
    );
    assert_says_once(&stderr, "No such file or directory");
    assert!(
        !stderr.contains("metadata"),
        "nothing about metadata:\n{stderr}"
    );
}

#[test]
fn a_file_given_as_data_dir_is_not_a_directory() {
    let dir = scratch_dir("file");
    let file = dir.join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let file_text = file.display().to_string();
    let (output, stderr) = run_refused(sluice(&["--data-dir", &file_text]), "a file as data dir");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("data directory {file_text} is not a directory")),
        "the error must say the path is not a directory:\n{stderr}"
    );
    assert!(!stderr.contains("File exists"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Root ignores mode bits, so as root the directory is made read-only by a
/// read-only bind mount in a private mount namespace (`unshare -m`), which
/// leaves nothing behind; other users get mode 0555.
#[test]
fn a_read_only_data_dir_is_not_writable() {
    let dir = scratch_dir("read_only");
    let data_dir = dir.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let data_dir_text = data_dir.display().to_string();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (command, cause) = if root {
        let probe = Command::new("unshare")
            .args(["-m", "true"])
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|status| status.success()) {
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED a_read_only_data_dir_is_not_writable: running as root without \
                 `unshare -m` (no mount namespaces), so no read-only directory can be made\n"
            );
            return;
        }
        let mut command = Command::new("unshare");
        command.args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" && exec \"$@\"",
            &data_dir_text,
        ]);
        let inner = sluice(&["--data-dir", &data_dir_text]);
        command.arg(inner.get_program()).args(inner.get_args());
        (command, "Read-only file system")
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        (sluice(&["--data-dir", &data_dir_text]), "Permission denied")
    };
    let (output, stderr) = run_refused(command, "a read-only data dir");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("data directory {data_dir_text} is not writable")),
        "the error must say the directory is not writable:\n{stderr}"
    );
    assert_says_once(&stderr, cause);
    if !root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unknown_log_level_is_a_configuration_error_from_flag_environment_and_file() {
    let dir = scratch_dir("log_level");
    let data_dir = dir.join("data").display().to_string();
    let config = dir.join("sluice.toml");
    std::fs::write(&config, "log_level = \"loud\"\n").unwrap();
    let config = config.display().to_string();

    let flag = sluice(&["--data-dir", &data_dir, "--log-level", "verbose"]);
    let mut environment = sluice(&["--data-dir", &data_dir]);
    environment.env("SLUICE_LOG_LEVEL", "sluice=chatty,info");
    let file = sluice(&["--data-dir", &data_dir, "--config", &config]);
    for (command, level) in [(flag, "verbose"), (environment, "chatty"), (file, "loud")] {
        let (output, stderr) = run_refused(command, "an unknown log level");
        assert_eq!(
            output.status.code(),
            Some(2),
            "a configuration error:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("unknown log level \"{level}\"")),
            "the error must name the level {level:?}:\n{stderr}"
        );
    }
    assert!(
        !dir.join("data").exists(),
        "a configuration error must stop before the data directory is touched"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_filter_enables_debug_lines_and_a_client_leaving_is_not_an_error() {
    let dir = scratch_dir("filter");
    let port = reserve_port();
    let listen = format!("127.0.0.1:{port}");
    let data_dir = dir.join("data").display().to_string();
    let mut command = sluice(&["--data-dir", &data_dir, "--listen", &listen]);
    command.args(["--log-level", "sluice=debug,info"]);
    let mut broker = Running::spawn(command, &dir);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    broker.wait_until_serving(address);
    // answers_api_versions closed its connection after the answer.
    broker.wait_for_stderr("the client closed the connection");
    // Two bytes of a size prefix, then gone.
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(&[0, 0]).unwrap();
    drop(stream);
    broker.wait_for_stderr("in the middle of a request");
    let stderr = broker.stop();
    assert!(stderr.contains("DEBUG"), "debug lines of sluice:\n{stderr}");
    assert!(
        !stderr.contains("failed to fill whole buffer"),
        "a disconnect is reported in words:\n{stderr}"
    );
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("WARN"),
        "a client leaving is neither an error nor a warning:\n{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_host_name_listen_address_is_resolved_and_advertised_as_written() {
    let dir = scratch_dir("host_name");
    let port = reserve_port();
    let listen = format!("localhost:{port}");
    let data_dir = dir.join("data").display().to_string();
    let mut broker = Running::spawn(
        sluice(&["--data-dir", &data_dir, "--listen", &listen]),
        &dir,
    );
    broker.wait_until_serving(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let consumer: BaseConsumer = support::kafka::config(&listen)
        .create()
        .expect("creating a consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(20))
        .unwrap_or_else(|error| panic!("metadata via {listen}: {error}\n{}", broker.stderr()));
    let brokers: Vec<(String, i32)> = metadata
        .brokers()
        .iter()
        .map(|broker| (broker.host().to_string(), broker.port()))
        .collect();
    assert_eq!(brokers, vec![("localhost".to_string(), i32::from(port))]);
    broker.stop();

    let (output, stderr) = run_refused(
        sluice(&[
            "--data-dir",
            &data_dir,
            "--listen",
            "no-such-host.invalid:9092",
        ]),
        "an unresolvable listen host",
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "a configuration error:\n{stderr}"
    );
    assert!(
        stderr.contains("cannot resolve host name \"no-such-host.invalid\""),
        "the error must name the host:\n{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = scratch_dir("no_ansi");
    let port = reserve_port();
    let listen = format!("127.0.0.1:{port}");
    let data_dir = dir.join("data").display().to_string();
    let mut command = sluice(&["--data-dir", &data_dir, "--listen", &listen]);
    command.env_remove("NO_COLOR");
    let mut broker = Running::spawn(command, &dir);
    broker.wait_until_serving(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let stderr = broker.stop();
    assert!(stderr.contains("sluice is serving"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no escape codes in a file:\n{stderr:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_log_lines_parse_as_json() {
    let dir = scratch_dir("json");
    let port = reserve_port();
    let listen = format!("127.0.0.1:{port}");
    let data_dir = dir.join("data").display().to_string();
    let mut command = sluice(&["--data-dir", &data_dir, "--listen", &listen]);
    command.env("SLUICE_LOG_FORMAT", "json");
    let mut broker = Running::spawn(command, &dir);
    broker.wait_until_serving(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let stderr = broker.stop();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line:?}\n{stderr}"))
        })
        .collect();
    let serving = lines
        .iter()
        .find(|line| line["message"] == "sluice is serving")
        .unwrap_or_else(|| panic!("no \"sluice is serving\" line:\n{stderr}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert_eq!(serving["listen"], listen, "{serving}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_dir_on_tmpfs_is_warned_about() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED a_data_dir_on_tmpfs_is_warned_about: no /dev/shm\n"
        );
        return;
    }
    let dir = scratch_dir("tmpfs");
    let data_dir = shm.join(format!("sluice-cli-errors-tmpfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let data_dir_text = data_dir.display().to_string();
    let mut broker = Running::spawn(sluice(&["--data-dir", &data_dir_text]), &dir);
    // Whether or not the broker can run there (O_DIRECT), it warns first.
    let stderr = broker.wait_for_stderr("tmpfs");
    drop(broker);
    assert!(
        stderr.contains("WARN") && stderr.contains("will not survive a reboot"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::remove_dir_all(&dir).unwrap();
}
