//! The admin subcommands connecting with TLS and SASL (issue 13), against a
//! real `sluice` with `--authorizer standard`: only the super users
//! `User:admin` (SCRAM-SHA-512, bootstrapped offline) and `User:CN=admin`
//! (a client certificate) may administer it, so a command that succeeds
//! has really authenticated. Over SASL_SSL and over SSL with a client
//! certificate: `topic create/list`, `user create/list`, `acl create/list`
//! (over SASL_SSL also `produce`, `consume -g`, `group list`, and `user
//! list` with PLAIN over SASL_PLAINTEXT; over SSL also from a profile);
//! a wrong password, an untrusted CA and a missing client certificate fail
//! fast, with a clear message and exit code 1; over PLAINTEXT (ANONYMOUS)
//! the same commands are refused by the authorizer.
//!
//! Certificates are made at test time with the openssl command line tool
//! (as in security.rs); without it the tests skip loudly (fail under CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Broker, certs, require_tool, reserve_port, run_with_timeout};

const TIMEOUT: Duration = Duration::from_secs(120);
/// A refused login or handshake must not take longer than this.
const FAIL_FAST: Duration = Duration::from_secs(10);
const ADMIN: &str = "admin";
const PASSWORD: &str = "admin-test-password";

/// A broker with PLAINTEXT (the harness's), SSL (client certificates
/// required) and SASL_SSL listeners, the standard authorizer, and the
/// super user admin.
struct SecureBroker {
    broker: Broker,
    certificates: PathBuf,
    ssl_port: u16,
    sasl_ssl_port: u16,
    sasl_plaintext_port: u16,
}

impl SecureBroker {
    fn start(name: &str) -> Option<SecureBroker> {
        SecureBroker::start_with(name, &format!("User:{ADMIN};User:CN={ADMIN}"), &[])
    }

    /// [`SecureBroker::start`] with these super users and more flags.
    fn start_with(name: &str, super_users: &str, extra: &[&str]) -> Option<SecureBroker> {
        let openssl = require_tool("openssl")?;
        let certificates = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("admin-security-certificates")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&certificates);
        certs::make_certificates(&openssl, &certificates, ADMIN);
        let (ssl_port, sasl_ssl_port, sasl_plaintext_port) =
            (reserve_port(), reserve_port(), reserve_port());
        let file = |name: &str| certificates.join(name).display().to_string();
        let args = [
            "--listeners".to_string(),
            format!(
                "SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_ssl_port},\
                 SASL_PLAINTEXT://127.0.0.1:{sasl_plaintext_port}"
            ),
            "--ssl-certificate".to_string(),
            file("server.pem"),
            "--ssl-key".to_string(),
            file("server.key"),
            "--ssl-client-ca".to_string(),
            file("ca.pem"),
            "--ssl-client-auth".to_string(),
            "required".to_string(),
            "--authorizer".to_string(),
            "standard".to_string(),
            "--super-users".to_string(),
            super_users.to_string(),
        ];
        let args: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let mut broker = Broker::start_with_args(name, &args);
        // ANONYMOUS may not create users: the first one goes in offline.
        broker.stop();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["user", "bootstrap", ADMIN, "--password", PASSWORD])
            .args(["--mechanism", "SCRAM-SHA-512", "--data-dir"])
            .arg(broker.data_dir());
        let output = run_with_timeout(command, TIMEOUT, "sluice user bootstrap");
        assert!(
            output.status.success(),
            "sluice user bootstrap: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        broker.start_again();
        Some(SecureBroker {
            broker,
            certificates,
            ssl_port,
            sasl_ssl_port,
            sasl_plaintext_port,
        })
    }

    fn file(&self, name: &str) -> String {
        self.certificates.join(name).display().to_string()
    }

    /// `sluice ARGS` with `connection` (flags after the subcommand's).
    fn sluice(&self, args: &[&str], connection: &[String]) -> (Output, Duration) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .args(connection)
            .env_remove("SLUICE_SASL_PASSWORD")
            .env_remove("SLUICE_PROFILE")
            .env("XDG_CONFIG_HOME", &self.certificates);
        let started = Instant::now();
        let output = run_with_timeout(command, TIMEOUT, &format!("sluice {args:?}"));
        (output, started.elapsed())
    }

    fn sasl_ssl(&self, password: &str, ca: &str) -> Vec<String> {
        [
            "--bootstrap",
            &format!("127.0.0.1:{}", self.sasl_ssl_port),
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            ADMIN,
            "--sasl-password",
            password,
            "--ssl-ca-location",
            &self.file(ca),
        ]
        .map(str::to_string)
        .to_vec()
    }

    fn ssl(&self, client: Option<&str>) -> Vec<String> {
        let mut flags = [
            "--bootstrap",
            &format!("127.0.0.1:{}", self.ssl_port),
            "--security-protocol",
            "SSL",
            "--ssl-ca-location",
            &self.file("ca.pem"),
        ]
        .map(str::to_string)
        .to_vec();
        if let Some(client) = client {
            flags.extend([
                "--ssl-certificate-location".to_string(),
                self.file(&format!("{client}.pem")),
                "--ssl-key-location".to_string(),
                self.file(&format!("{client}.key")),
            ]);
        }
        flags
    }

    fn sasl_plaintext_plain(&self) -> Vec<String> {
        [
            "--bootstrap",
            &format!("127.0.0.1:{}", self.sasl_plaintext_port),
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            ADMIN,
            "--sasl-password",
            PASSWORD,
        ]
        .map(str::to_string)
        .to_vec()
    }

    fn plaintext(&self) -> Vec<String> {
        vec!["--bootstrap".to_string(), self.broker.bootstrap()]
    }
}

fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The command failed with exit code 1 within [`FAIL_FAST`], its stderr
/// naming every one of `expected`.
fn refused(result: (Output, Duration), expected: &[&str], what: &str) {
    let (output, elapsed) = result;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{what}: exit code; {stderr}");
    for text in expected {
        assert!(
            stderr.contains(text),
            "{what}: expected {text:?} in:\n{stderr}"
        );
    }
    assert!(elapsed < FAIL_FAST, "{what}: took {elapsed:?}");
    println!("{what}: refused in {elapsed:?}: {}", stderr.trim());
}

/// topic create/list, user create/list, acl create/list as `connection`.
fn administer(secure: &SecureBroker, connection: &[String], suffix: &str) {
    let topic = format!("secured-{suffix}");
    let user = format!("bob-{suffix}");
    let (output, _) = secure.sluice(&["topic", "create", &topic, "-p", "2"], connection);
    succeeded(&output, "topic create");
    let (output, _) = secure.sluice(&["topic", "list"], connection);
    let listing = succeeded(&output, "topic list");
    assert!(listing.contains(&topic), "{listing}");
    let (output, _) = secure.sluice(
        &["user", "create", &user, "--password", "bob-password"],
        connection,
    );
    succeeded(&output, "user create");
    let (output, _) = secure.sluice(&["user", "list"], connection);
    let listing = succeeded(&output, "user list");
    assert!(
        listing.contains(&user) && listing.contains(ADMIN),
        "{listing}"
    );
    let principal = format!("User:{user}");
    let (output, _) = secure.sluice(
        &[
            "acl",
            "create",
            "--allow-principal",
            &principal,
            "--operation",
            "Read",
            "--topic",
            &topic,
        ],
        connection,
    );
    succeeded(&output, "acl create");
    let (output, _) = secure.sluice(&["acl", "list", "--topic", &topic], connection);
    let listing = succeeded(&output, "acl list");
    assert!(listing.contains(&principal), "{listing}");
}

#[test]
fn admin_commands_work_over_sasl_ssl_with_scram_sha_512_and_refuse_bad_credentials_fast() {
    let Some(secure) = SecureBroker::start("admin_security_sasl_ssl") else {
        return;
    };
    administer(&secure, &secure.sasl_ssl(PASSWORD, "ca.pem"), "sasl");
    // The password from the environment, not the command line.
    let mut connection = secure.sasl_ssl(PASSWORD, "ca.pem");
    connection.truncate(connection.len() - 4);
    connection.extend(["--ssl-ca-location".to_string(), secure.file("ca.pem")]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["cluster", "info"])
        .args(&connection)
        .env("SLUICE_SASL_PASSWORD", PASSWORD)
        .env("XDG_CONFIG_HOME", &secure.certificates);
    let output = run_with_timeout(command, TIMEOUT, "cluster info");
    succeeded(&output, "cluster info with SLUICE_SASL_PASSWORD");

    // produce and consume (leaders, Fetch) and groups over SASL_SSL.
    let connection = secure.sasl_ssl(PASSWORD, "ca.pem");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(["produce", "secured-sasl", "-p", "1"])
        .args(&connection)
        .env("XDG_CONFIG_HOME", &secure.certificates);
    let output = support::run_with_input(
        command,
        Some(b"one\ntwo\nthree\n".to_vec()),
        TIMEOUT,
        "produce",
    );
    succeeded(&output, "produce");
    let (output, _) = secure.sluice(
        &[
            "consume",
            "secured-sasl",
            "-p",
            "1",
            "-e",
            "-g",
            "secured-readers",
        ],
        &connection,
    );
    assert_eq!(succeeded(&output, "consume"), "one\ntwo\nthree\n");
    let (output, _) = secure.sluice(&["group", "list"], &connection);
    let listing = succeeded(&output, "group list");
    assert!(listing.contains("secured-readers"), "{listing}");
    // PLAIN over SASL_PLAINTEXT.
    let (output, _) = secure.sluice(&["user", "list"], &secure.sasl_plaintext_plain());
    let listing = succeeded(&output, "user list over SASL_PLAINTEXT with PLAIN");
    assert!(listing.contains("bob-sasl"), "{listing}");

    refused(
        secure.sluice(
            &["topic", "list"],
            &secure.sasl_ssl("wrong-password", "ca.pem"),
        ),
        &[
            "authentication failed for User:admin: ",
            "SASL_AUTHENTICATION_FAILED",
        ],
        "a wrong password",
    );
    refused(
        secure.sluice(&["user", "list"], &secure.sasl_ssl(PASSWORD, "rogue.pem")),
        &[
            "TLS with broker",
            "not signed by the CA of --ssl-ca-location",
        ],
        "an untrusted CA",
    );
    // PLAINTEXT is ANONYMOUS, which the authorizer refuses.
    let (output, _) = secure.sluice(&["acl", "list"], &secure.plaintext());
    assert!(!output.status.success(), "acl list as ANONYMOUS");
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .to_lowercase()
            .contains("authorization"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn admin_commands_work_over_ssl_with_a_client_certificate_and_from_a_profile() {
    let Some(secure) = SecureBroker::start("admin_security_ssl") else {
        return;
    };
    administer(&secure, &secure.ssl(Some("client")), "ssl");
    // A listener that requires a client certificate, none given.
    refused(
        secure.sluice(&["topic", "list"], &secure.ssl(None)),
        &["TLS with broker"],
        "no client certificate",
    );
    // The same settings from the default profile file
    // ($XDG_CONFIG_HOME/sluice/profile.toml).
    std::fs::create_dir_all(secure.certificates.join("sluice")).unwrap();
    std::fs::write(
        secure.certificates.join("sluice/profile.toml"),
        format!(
            "bootstrap = \"127.0.0.1:{}\"\nsecurity_protocol = \"SSL\"\n\
             ssl_ca_location = {:?}\nssl_certificate_location = {:?}\n\
             ssl_key_location = {:?}\n",
            secure.ssl_port,
            secure.file("ca.pem"),
            secure.file("client.pem"),
            secure.file("client.key"),
        ),
    )
    .unwrap();
    let (output, _) = secure.sluice(&["topic", "list"], &[]);
    let listing = succeeded(&output, "topic list from the profile");
    assert!(listing.contains("secured-ssl"), "{listing}");
    // A flag wins over the profile: an untrusted CA.
    refused(
        secure.sluice(
            &["topic", "list"],
            &["--ssl-ca-location".to_string(), secure.file("rogue.pem")],
        ),
        &["not signed by the CA of --ssl-ca-location"],
        "a flag over the profile",
    );
}

#[test]
fn ssl_principal_mapping_rules_name_the_certificate_principal() {
    // CN=admin becomes User:ADMIN@SSL, the only super user: what the
    // command may do depends on the mapping having happened.
    let Some(secure) = SecureBroker::start_with(
        "admin_principal_mapping",
        "User:ADMIN@SSL",
        &[
            "--ssl-principal-mapping-rules",
            "RULE:^CN=([a-z]+),OU=none$/$1/,RULE:^CN=([a-z]+)$/$1@ssl/U,DEFAULT",
        ],
    ) else {
        return;
    };
    let (output, _) = secure.sluice(
        &["topic", "create", "mapped", "--partitions", "1"],
        &secure.ssl(Some("client")),
    );
    succeeded(&output, "topic create as the mapped principal");
    // SASL users are not mapped: admin is no super user here.
    let (output, _) = secure.sluice(
        &["topic", "create", "unmapped", "--partitions", "1"],
        &secure.sasl_ssl(PASSWORD, "ca.pem"),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success() && said.to_lowercase().contains("authoriz"),
        "admin over SASL_SSL, no super user here, created a topic: {said}"
    );
}
