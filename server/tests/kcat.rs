//! Interop with kcat (Debian's package: kcat 1.7.1 on librdkafka 2.0.2, an
//! old client that has caught brokers out before, see KAFKA-BEHAVIOUR.md).
//! Skips loudly without kcat, fails under CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Broker, assert_success, kcat, require_tool, run_with_input, run_with_timeout};

const KCAT_TIMEOUT: Duration = Duration::from_secs(120);
const LINE_COUNT: usize = 5000;

#[test]
fn kcat_lists_the_broker_and_its_topics() {
    let Some(kcat_path) = require_tool("kcat") else {
        return;
    };
    let broker = Broker::start("kcat_metadata");
    let mut command = kcat(&kcat_path, &broker);
    command.arg("-L");
    let output = run_with_timeout(command, KCAT_TIMEOUT, "kcat -L");
    assert_success(&output, "kcat -L", &broker);
    let listing = String::from_utf8_lossy(&output.stdout);
    println!("{listing}");
    assert!(listing.contains("1 brokers:"), "one broker listed");
    assert!(
        listing.contains(&format!("broker 0 at {}", broker.bootstrap())),
        "broker 0 advertised at its listen address"
    );
}

#[test]
fn kcat_produces_five_thousand_lines_and_consumes_them_back_in_order() {
    let Some(kcat_path) = require_tool("kcat") else {
        return;
    };
    let broker = Broker::start("kcat_round_trip");
    let topic = "kcat-lines";
    let lines: Vec<String> = (0..LINE_COUNT)
        .map(|index| format!("line {index:05} {}", "x".repeat(index % 97)))
        .collect();
    let mut input = lines.join("\n").into_bytes();
    input.push(b'\n');

    let mut produce = kcat(&kcat_path, &broker);
    produce.args(["-P", "-t", topic, "-p", "0"]).args([
        "-X",
        "acks=all",
        "-X",
        "message.timeout.ms=30000",
    ]);
    let output = run_with_input(produce, Some(input), KCAT_TIMEOUT, "kcat -P");
    assert_success(&output, "kcat -P", &broker);

    let mut listing = kcat(&kcat_path, &broker);
    listing.args(["-L", "-t", topic]);
    let output = run_with_timeout(listing, KCAT_TIMEOUT, "kcat -L -t");
    assert_success(&output, "kcat -L -t", &broker);
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains(&format!("topic \"{topic}\" with 1 partitions")),
        "the produced-to topic is listed with one partition:\n{listing}"
    );

    let mut consume = kcat(&kcat_path, &broker);
    consume.args(["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q"]);
    let output = run_with_timeout(consume, KCAT_TIMEOUT, "kcat -C -e");
    assert_success(&output, "kcat -C -e", &broker);
    let consumed = String::from_utf8_lossy(&output.stdout);
    let consumed: Vec<&str> = consumed.lines().collect();
    assert_eq!(
        consumed.len(),
        LINE_COUNT,
        "kcat consumed {} lines, produced {LINE_COUNT}",
        consumed.len()
    );
    for (index, (got, sent)) in consumed.iter().zip(&lines).enumerate() {
        assert_eq!(got, sent, "line {index} differs");
    }
}
