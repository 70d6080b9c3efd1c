//! `sluice-bench` against a real `sluice` process (`--embedded`), with both
//! client engines: records are produced, acknowledged, counted by the log
//! (ListOffsets) and consumed back; the output files exist and parse. And
//! the failures users meet first: an unreachable broker, bad arguments.
//!
//! The `sluice` binary comes from the same target directory (cargo builds
//! it for the server's own integration tests under `cargo test
//! --workspace`; alone, run `cargo build -p sluice-server` first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
}

fn sluice_binary() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_sluice-bench"));
    let sluice = bench.with_file_name("sluice");
    assert!(
        sluice.is_file(),
        "{} is missing: run `cargo build -p sluice-server` (cargo test --workspace builds it)",
        sluice.display()
    );
    sluice
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-tests")
        .join(format!("{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run_embedded(name: &str, client: &str) {
    let dir = scratch(name);
    let out = dir.join("out");
    let data = dir.join("data");
    let output = bench()
        .args([
            "--embedded",
            "--preset",
            "smoke",
            "--duration",
            "1.5",
            "--warmup",
            "0.3",
        ])
        .args([
            "--rate",
            "2000",
            "--client",
            client,
            "--broker-cores",
            "1",
            "--quiet",
        ])
        .arg("--sluice-bin")
        .arg(sluice_binary())
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let stem = format!("smoke-{client}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("{stem}.json"))).unwrap())
            .unwrap();
    let acknowledged = summary["produce"]["acknowledged_records_total"]
        .as_u64()
        .unwrap();
    let received = summary["consume"]["received_records_total"]
        .as_u64()
        .unwrap();
    let log_added = summary["log_records_added"].as_u64().unwrap();
    // About 2000 records/s for 1.8 s: far more than a handful, whatever the
    // machine's load.
    assert!(acknowledged > 100, "{summary}");
    assert_eq!(
        log_added, acknowledged,
        "the log grew by what was acknowledged"
    );
    assert_eq!(received, acknowledged, "consumers read back every record");
    assert_eq!(summary["produce"]["errors_total"], 0);
    assert_eq!(summary["consume"]["errors_total"], 0);
    assert_eq!(summary["client"], client);
    assert!(summary["failure"].is_null());
    let publish_count = summary["latency_us"]["publish"]["count"].as_u64().unwrap();
    assert!(publish_count > 0 && publish_count <= acknowledged);
    assert!(
        summary["latency_us"]["end_to_end"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );
    for hgrm in ["publish", "end-to-end"] {
        let text = std::fs::read_to_string(out.join(format!("{stem}-{hgrm}.hgrm"))).unwrap();
        assert!(text.trim_start().starts_with("Value"), "{text}");
        assert!(text.contains("#[Buckets = "), "{text}");
    }
    // Where and when it was measured.
    for key in ["git_commit", "time", "host"] {
        assert!(summary[key].is_string(), "{key}: {summary}");
    }
    assert!(summary["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(summary["workload"]["keys"], "none");
    let plot = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
    assert!(plot.starts_with("<svg"));
    assert!(
        plot.contains("<title>sluice-bench smoke against 127.0.0.1:"),
        "{plot}"
    );
    assert!(plot.contains(r#"class="warm-up""#), "{plot}");
    // The embedded broker's data directory is removed at the end.
    assert!(!data.exists(), "{} was left behind", data.display());
}

#[test]
fn the_native_client_produces_and_consumes_against_an_embedded_sluice() {
    run_embedded("native", "native");
}

#[test]
fn the_rdkafka_client_produces_and_consumes_against_an_embedded_sluice() {
    run_embedded("rdkafka", "rdkafka");
}

#[test]
fn an_unreachable_broker_fails_fast_with_a_readable_error() {
    let port = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let output = bench()
        .args([
            "--bootstrap",
            &format!("127.0.0.1:{port}"),
            "--preset",
            "smoke",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", show(&output));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to broker 127.0.0.1:{port}")),
        "{}",
        show(&output)
    );
    assert!(!stderr.contains("panicked"), "{}", show(&output));
}

#[test]
fn bad_arguments_get_a_clear_message() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--record-size", "4"],
            "--record-size must be between 8 bytes",
        ),
        (&["--rate", "fast"], "invalid rate \"fast\""),
        (&["--preset", "nope"], "unknown preset \"nope\""),
        (
            &["--partitions", "2", "--consumers", "3"],
            "--consumers (3) exceeds --partitions (2)",
        ),
    ];
    for (args, expected) in cases {
        let output = bench().args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}: {}", show(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {}", show(&output));
    }
}

#[test]
fn a_missing_sluice_binary_says_how_to_build_it() {
    let output = bench()
        .args([
            "--embedded",
            "--sluice-bin",
            "/nonexistent/sluice",
            "--preset",
            "smoke",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--sluice-bin /nonexistent/sluice does not exist"),
        "{}",
        show(&output)
    );
}

#[test]
fn ctrl_c_stops_the_run_and_reports_what_was_measured() {
    let dir = scratch("interrupt");
    let out = dir.join("out");
    let child = bench()
        .args([
            "--embedded",
            "--preset",
            "smoke",
            "--duration",
            "60",
            "--warmup",
            "0.2",
        ])
        .args(["--broker-cores", "1", "--quiet"])
        .arg("--sluice-bin")
        .arg(sluice_binary())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until records flow (the summary counts them), then interrupt.
    std::thread::sleep(Duration::from_secs(2));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(130), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("INTERRUPTED (Ctrl-C)"), "{}", show(&output));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("smoke-native.json")).unwrap())
            .unwrap();
    assert_eq!(summary["interrupted"], true);
    let acknowledged = summary["produce"]["acknowledged_records_total"]
        .as_u64()
        .unwrap();
    assert!(acknowledged > 0, "{summary}");
    assert_eq!(summary["log_records_added"].as_u64().unwrap(), acknowledged);
}
