//! One broker process per data directory and per listen address, and a
//! panic stops the process: real `sluice` processes.
//!
//! A second process on a data directory in use would assign the same
//! offsets as the first and lose acknowledged records; a second process on
//! an address in use would take part of its connections (SO_REUSEPORT).
//! Both must exit at once with a message, and the first must keep serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::kafka::{Record, assert_serves_metadata, consume_partition, produce_all};
use support::{Broker, reserve_port, run_with_timeout};

/// How long a refused process may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

fn records(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|index| Record {
            key: Some(format!("{prefix}-{index}").into_bytes()),
            value: Some(format!("value {prefix}-{index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

fn values(consumed: &[support::kafka::Consumed]) -> Vec<Vec<u8>> {
    consumed
        .iter()
        .map(|record| record.record.value.clone().unwrap_or_default())
        .collect()
}

/// A fresh directory for a process the test starts itself.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("process_exclusion")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

fn sluice(data_dir: &std::path::Path, listen: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen, "--cores", "2"])
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", reserve_port()))
        .env("NO_COLOR", "1");
    command
}

#[test]
fn a_second_broker_on_a_data_dir_in_use_exits_and_the_first_keeps_serving() {
    let mut first = Broker::start("exclusion_data_dir");
    let topic = "exclusion";
    let before = records("before", 20);
    produce_all(
        &first.bootstrap(),
        topic,
        Some(0),
        &before,
        &[("acks", "all")],
    );

    let listen = format!("127.0.0.1:{}", reserve_port());
    let started = Instant::now();
    let second = run_with_timeout(
        sluice(first.data_dir(), &listen),
        REFUSAL_TIMEOUT,
        "a second sluice on the same data directory",
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second broker must refuse the data directory; it exited with {}\n{stderr}",
        second.status
    );
    let holder = format!("pid {}", first.pid());
    let data_dir = first.data_dir().display().to_string();
    assert!(
        stderr.contains(&data_dir) && stderr.contains(&holder) && stderr.contains("in use"),
        "the refusal must name the directory ({data_dir}) and the holder ({holder}):\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusal took {:?}, it must come at once",
        started.elapsed()
    );

    // The first broker never noticed: it takes writes and serves them.
    first.assert_running();
    let after = records("after", 20);
    produce_all(
        &first.bootstrap(),
        topic,
        Some(0),
        &after,
        &[("acks", "all")],
    );
    let expected: Vec<Vec<u8>> = before
        .iter()
        .chain(&after)
        .map(|record| record.value.clone().unwrap_or_default())
        .collect();
    let consumed = consume_partition(&first.bootstrap(), topic, 0, 0, 40);
    assert_eq!(values(&consumed), expected, "the first broker's records");

    // kill -9 leaves no stale lock: a new process takes the directory at
    // once and has every acknowledged record.
    first.kill9();
    let restarted = Instant::now();
    first.start_again();
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "the restart after kill -9 took {:?}",
        restarted.elapsed()
    );
    let consumed = consume_partition(&first.bootstrap(), topic, 0, 0, 40);
    assert_eq!(
        values(&consumed),
        expected,
        "records after kill -9 and restart"
    );
}

#[test]
fn a_second_broker_on_an_address_in_use_exits_with_address_in_use() {
    let mut first = Broker::start("exclusion_address");
    // The same address, and the wildcard address of the same port.
    for listen in [
        first.address().to_string(),
        format!("0.0.0.0:{}", first.address().port()),
    ] {
        let data_dir = scratch_dir("address");
        let second = run_with_timeout(
            sluice(&data_dir, &listen),
            REFUSAL_TIMEOUT,
            "a second sluice on the same address",
        );
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(
            !second.status.success(),
            "a second broker on {listen} must fail; it exited with {}\n{stderr}",
            second.status
        );
        assert!(
            stderr.contains("address in use") && stderr.contains(&listen),
            "the error must say that {listen} is in use:\n{stderr}"
        );
        std::fs::remove_dir_all(&data_dir).expect("removing the scratch directory");
    }
    assert_serves_metadata(&mut first);
}

/// The fault hook `SLUICE_DEBUG_PANIC_IN_COMMITTER` exists in debug builds
/// only (server/src/broker.rs).
#[test]
fn a_panic_in_a_detached_shard_task_stops_the_whole_process() {
    if !cfg!(debug_assertions) {
        eprintln!(
            "SKIPPED a_panic_in_a_detached_shard_task_stops_the_whole_process: \
             release builds have no fault hook"
        );
        return;
    }
    // Logged as an error; with logging off, written to stderr anyway.
    for log_level in ["info", "off"] {
        let data_dir = scratch_dir(&format!("panic-{log_level}"));
        let listen = format!("127.0.0.1:{}", reserve_port());
        let mut command = sluice(&data_dir, &listen);
        command.args(["--log-level", log_level]);
        // Late enough that the broker is serving, as in a real failure.
        command.env("SLUICE_DEBUG_PANIC_IN_COMMITTER", "2000");
        let started = Instant::now();
        let output = run_with_timeout(
            command,
            REFUSAL_TIMEOUT,
            "sluice with a panicking committer",
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "the process must stop on a panic; it exited with {}\n{stderr}",
            output.status
        );
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "the panic hook aborts the process:\n{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stopping took {:?}",
            started.elapsed()
        );
        if log_level == "info" {
            assert!(
                stderr.contains("sluice is serving"),
                "the broker served before the panic:\n{stderr}"
            );
        }
        assert!(
            stderr.contains("a panic stops the process")
                && stderr.contains("shard-0")
                && stderr.contains("SLUICE_DEBUG_PANIC_IN_COMMITTER is set")
                && stderr.contains("broker.rs"),
            "stderr must name the panic, its thread and its location:\n{stderr}"
        );
        std::fs::remove_dir_all(&data_dir).expect("removing the scratch directory");
    }
}

/// A broker killed with SIGKILL leaves its listening sockets alive for a
/// moment after it is reaped (io_uring tears the dead process's rings down
/// asynchronously; a pending accept holds its listener). A restart on the
/// same port must wait for them rather than fail with "address in use":
/// a supervisor restarting a crashed broker at once depends on it.
#[test]
fn a_broker_restarted_at_once_after_kill_9_takes_its_port_back() {
    let mut broker = Broker::start("exclusion_restart");
    for round in 0..10 {
        // A client connection open at the kill: its accepted socket and
        // the shards' pending accepts are what linger.
        let client = std::net::TcpStream::connect(broker.address()).expect("connecting");
        broker.kill9();
        drop(client);
        broker.start_again();
        assert_serves_metadata(&mut broker);
        println!("round {round}: restarted on {}", broker.address());
    }
}
