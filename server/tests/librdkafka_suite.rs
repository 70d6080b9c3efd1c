//! librdkafka's own tests against a real sluice: `librdkafka/run.sh` builds
//! the librdkafka that the rdkafka crate vendors with its test runner (under
//! `target/librdkafka-suite`, reused by later runs) and runs the selection
//! of its README (the transactional, idempotent and consumer group tests
//! 0061-0137) against a single broker and a three-broker dev-cluster.
//!
//! About a minute to build the C code the first time, then about three
//! minutes of tests. Skips loudly without a C/C++ compiler and make, fails
//! under CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{repo_root, require_tool, run_with_timeout};

/// The build (about a minute on two cores) and both test runners (about
/// three minutes), with room for a slow machine; the script limits each
/// runner to 15 minutes itself.
const SUITE_TIMEOUT: Duration = Duration::from_secs(25 * 60);

#[test]
fn librdkafka_transaction_and_group_tests_pass_against_sluice() {
    for tool in ["bash", "cc", "c++", "make", "flock", "timeout", "stdbuf"] {
        if require_tool(tool).is_none() {
            return;
        }
    }
    let script = repo_root().join("server/tests/librdkafka/run.sh");
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .current_dir(repo_root());
    let output = run_with_timeout(command, SUITE_TIMEOUT, "librdkafka/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The runner's whole output: the harness shows it when the test fails.
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "librdkafka's tests failed against sluice ({}); the summary is at the end \
         of the output above, the logs are under target/librdkafka-suite/run-*",
        output.status
    );
}
