//! ACLs (issue 13, part 2) against a real `sluice` started with
//! `--authorizer standard`: real clients (confluent-kafka, kcat) see
//! Kafka's authorization errors, and `sluice acl` creates, lists and
//! deletes bindings.
//!
//! The broker has a SASL_PLAINTEXT listener (SCRAM-SHA-512 users alice and
//! admin, admin a super user) and the harness's PLAINTEXT listener, where
//! the unauthenticated principal User:ANONYMOUS is made a super user: the
//! admin subcommands do not authenticate yet, so that is how the test (and
//! an operator on a loopback listener) grants the first ACLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Broker, require_python, reserve_port, run_with_timeout};

const TIMEOUT: Duration = Duration::from_secs(180);
const PASSWORD: &str = "acl-test-password";

struct AclBroker {
    broker: Broker,
    sasl_port: u16,
}

impl AclBroker {
    fn start(name: &str) -> AclBroker {
        let sasl_port = reserve_port();
        let listeners = format!("SASL_PLAINTEXT://127.0.0.1:{sasl_port}");
        let broker = Broker::start_with_args(
            name,
            &[
                "--listeners",
                &listeners,
                "--authorizer",
                "standard",
                "--super-users",
                "User:admin;User:ANONYMOUS",
                "--group-initial-rebalance-delay-ms",
                "0",
            ],
        );
        let acl_broker = AclBroker { broker, sasl_port };
        for user in ["alice", "admin"] {
            let output = acl_broker.sluice(&["user", "create", user, "--password", PASSWORD]);
            assert!(
                output.status.success(),
                "sluice user create {user}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        acl_broker
    }

    fn sluice(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .arg("--bootstrap")
            .arg(self.broker.bootstrap());
        run_with_timeout(command, TIMEOUT, "sluice")
    }

    fn sasl_address(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }
}

#[test]
fn confluent_kafka_sees_topic_and_group_authorization_prefixed_grants_deny_wins_and_super_users() {
    let Some(python) = require_python() else {
        return;
    };
    let mut acl_broker = AclBroker::start("acls_confluent");
    let script = support::repo_root().join("server/tests/python/acl_clients.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .arg(acl_broker.sasl_address())
        .arg(acl_broker.broker.bootstrap())
        .arg(PASSWORD)
        .current_dir(script.parent().unwrap());
    let output = run_with_timeout(command, TIMEOUT, "acl_clients.py");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "acl_clients.py failed:\n{}\n{}\nbroker:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        acl_broker.broker.stderr_tail()
    );
    acl_broker.broker.assert_running();
}
