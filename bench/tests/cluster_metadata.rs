//! `sluice-bench cluster-metadata` on a tiny cluster: three real `sluice`
//! processes, 20 topics, one controller failover. The figures are reported,
//! not checked (timing goals live in docs/benchmarks.md); the test checks
//! that every phase ran, the summary parses and the brokers' data is gone.
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
fn a_three_broker_cluster_creates_topics_propagates_them_and_survives_a_controller_kill() {
    let bench = Path::new(env!("CARGO_BIN_EXE_sluice-bench"));
    let sluice = bench.with_file_name("sluice");
    assert!(
        sluice.is_file(),
        "{} is missing: run `cargo build -p sluice-server`",
        sluice.display()
    );
    let dir = scratch("cluster-metadata");
    let data = dir.join("data");
    let out = dir.join("out");
    let output = Command::new(bench)
        .arg("cluster-metadata")
        .args(["--brokers", "3", "--topics", "20", "--partitions", "3"])
        .args(["--propagation-sample", "5", "--failovers", "1", "--quiet"])
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
        serde_json::from_str(&std::fs::read_to_string(out.join("cluster-metadata.json")).unwrap())
            .unwrap();
    assert_eq!(summary["mode"], "cluster-metadata");
    assert_eq!(summary["create"]["topics"], 20);
    assert_eq!(
        summary["create"]["request_latency"]["count"], 2,
        "{summary}"
    );
    assert!(summary["create"]["topics_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["propagation"]["ack_to_every_broker"]["count"], 5);
    let rounds = summary["failover"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{summary}");
    let killed = rounds[0]["killed_node"].as_i64().unwrap();
    assert!((1..=3).contains(&killed), "{summary}");
    assert!(rounds[0]["kill_to_ack_ms"].as_f64().unwrap() > 0.0);
    assert!(summary["failover"]["median_ms"].is_number());
    for key in ["git_commit", "time", "host"] {
        assert!(summary[key].is_string(), "{key}: {summary}");
    }
    let hgrm = std::fs::read_to_string(out.join("cluster-metadata-create.hgrm")).unwrap();
    assert!(hgrm.contains("#[Buckets = "), "{hgrm}");
    assert!(!data.exists(), "{} was left behind", data.display());
}

#[test]
fn a_failover_on_fewer_than_three_brokers_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["cluster-metadata", "--brokers", "2"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--failovers 0"), "{stderr}");
}
