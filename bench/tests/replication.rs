//! `sluice-bench replication` on short runs: three real `sluice` processes,
//! one round of the four load runs and one leader failover. The figures
//! are reported, not checked (timing goals live in docs/benchmarks.md); the
//! test checks that every phase ran, nothing acknowledged went missing, the
//! summary parses and the brokers' data is gone.
//!
//! The `sluice` binary comes from the same target directory (`cargo build
//! -p sluice-server` first when running this crate's tests alone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

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

#[test]
fn a_three_broker_cluster_ingests_at_rf3_and_rf1_and_survives_a_leader_kill() {
    let bench = Path::new(env!("CARGO_BIN_EXE_sluice-bench"));
    let sluice = bench.with_file_name("sluice");
    assert!(
        sluice.is_file(),
        "{} is missing: run `cargo build -p sluice-server`",
        sluice.display()
    );
    let dir = scratch("replication");
    let data = dir.join("data");
    let out = dir.join("out");
    let output = Command::new(bench)
        .arg("replication")
        .args(["--rounds", "1", "--duration", "1.5", "--warmup", "0.5"])
        .args(["--latency-rate", "2MB/s", "--failovers", "1"])
        .args(["--failover-steady-ms", "300", "--quiet"])
        .arg("--sluice-bin")
        .arg(&sluice)
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("replication.json")).unwrap())
            .unwrap();
    assert_eq!(summary["mode"], "replication");
    assert_eq!(
        summary["failures"].as_array().unwrap().len(),
        0,
        "{summary}"
    );
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{summary}");
    for run in runs {
        assert!(run["mb_per_sec"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["lost_records"].is_null(), "{run}");
    }
    assert!(summary["ingest"]["ratio_rf3_over_rf1"].as_f64().unwrap() > 0.0);
    assert!(
        summary["latency"]["rf3"]["publish_latency"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );
    let rounds = summary["failover"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{summary}");
    assert_ne!(
        rounds[0]["killed_node"], rounds[0]["new_leader"],
        "{summary}"
    );
    assert!(rounds[0]["kill_to_ack_ms"].as_f64().unwrap() > 0.0);
    assert!(
        summary["failover"]["log_end"].as_i64().unwrap()
            >= summary["failover"]["acknowledged_writes"].as_i64().unwrap(),
        "{summary}"
    );
    for key in ["git_commit", "time", "host"] {
        assert!(summary[key].is_string(), "{key}: {summary}");
    }
    assert!(out.join("replication-latency-rf3.hgrm").is_file());
    assert!(!data.exists(), "{} was left behind", data.display());
}

#[test]
fn nothing_to_measure_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["replication", "--rounds", "0", "--failovers", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nothing to measure"), "{stderr}");
}
