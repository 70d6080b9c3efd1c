//! Security (issue 13, part 1) against a real `sluice`: named listeners,
//! TLS with and without client certificates, SASL SCRAM-SHA-512 and PLAIN,
//! users created over the wire (`sluice user create`) and offline
//! (`sluice user bootstrap`), driven by kcat, confluent-kafka and
//! kafka-python; hostile input on the secured listeners.
//!
//! Certificates are made at test time with the openssl command line tool
//! (a throwaway CA, a server certificate for 127.0.0.1, a client
//! certificate CN=alice, and a self-signed "rogue" one the CA does not
//! vouch for); nothing secret is committed. Without openssl, kcat or the
//! Python venv the tests skip loudly (fail under CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    Broker, certs, require_python, require_tool, reserve_port, run_with_input, run_with_timeout,
};

const TIMEOUT: Duration = Duration::from_secs(120);
const USER: &str = "alice";
const PASSWORD: &str = "alice-test-password";

/// A broker with PLAINTEXT (the harness's --listen), SSL (client
/// certificates required, verified against the test CA), SASL_SSL
/// listeners, and the user alice (SCRAM-SHA-512, created over the wire).
struct SecureBroker {
    broker: Broker,
    certificates: PathBuf,
    ssl_port: u16,
    sasl_ssl_port: u16,
    sasl_plaintext_port: u16,
}

impl SecureBroker {
    fn start(name: &str) -> Option<SecureBroker> {
        let openssl = require_tool("openssl")?;
        let certificates = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("security-certificates")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&certificates);
        certs::make_certificates(&openssl, &certificates, "alice");
        let (ssl_port, sasl_ssl_port, sasl_plaintext_port) =
            (reserve_port(), reserve_port(), reserve_port());
        let listeners = format!(
            "SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_ssl_port},\
             SASL_PLAINTEXT://127.0.0.1:{sasl_plaintext_port}"
        );
        let file = |name: &str| certificates.join(name).display().to_string();
        let args = [
            "--listeners".to_string(),
            listeners,
            "--ssl-certificate".to_string(),
            file("server.pem"),
            "--ssl-key".to_string(),
            file("server.key"),
            "--ssl-client-ca".to_string(),
            file("ca.pem"),
            "--ssl-client-auth".to_string(),
            "required".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let broker = Broker::start_with_args(name, &args);
        let secure = SecureBroker {
            broker,
            certificates,
            ssl_port,
            sasl_ssl_port,
            sasl_plaintext_port,
        };
        let output = secure.sluice(&["user", "create", USER, "--password", PASSWORD]);
        assert!(
            output.status.success(),
            "sluice user create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(secure)
    }

    fn sluice(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .arg("--bootstrap")
            .arg(self.broker.bootstrap());
        run_with_timeout(command, TIMEOUT, "sluice user")
    }

    fn file(&self, name: &str) -> String {
        self.certificates.join(name).display().to_string()
    }

    fn kcat_sasl_ssl(&self, kcat: &Path, password: &str) -> Command {
        let mut command = kcat_command(kcat);
        command.args([
            "-b",
            &format!("127.0.0.1:{}", self.sasl_ssl_port),
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-512",
            "-X",
            &format!("sasl.username={USER}"),
            "-X",
            &format!("sasl.password={password}"),
            "-X",
            &format!("ssl.ca.location={}", self.file("ca.pem")),
        ]);
        command
    }

    fn kcat_ssl(&self, kcat: &Path, key: &str) -> Command {
        let mut command = kcat_command(kcat);
        command.args([
            "-b",
            &format!("127.0.0.1:{}", self.ssl_port),
            "-X",
            "security.protocol=SSL",
            "-X",
            &format!("ssl.ca.location={}", self.file("ca.pem")),
            "-X",
            &format!(
                "ssl.certificate.location={}",
                self.file(&format!("{key}.pem"))
            ),
            "-X",
            &format!("ssl.key.location={}", self.file(&format!("{key}.key"))),
        ]);
        command
    }
}

/// kcat, with the system's librdkafka: `cargo test` puts the build
/// directories of rdkafka-sys on LD_LIBRARY_PATH, and the librdkafka built
/// there has no TLS and no SCRAM.
fn kcat_command(kcat: &Path) -> Command {
    let mut command = Command::new(kcat);
    command.env_remove("LD_LIBRARY_PATH");
    command
}

fn round_trip(mut produce: Command, mut consume: Command, topic: &str, what: &str) {
    let lines: Vec<String> = (0..200)
        .map(|index| format!("{what} line {index}"))
        .collect();
    produce.args(["-P", "-t", topic, "-p", "0"]);
    let output = run_with_input(produce, Some(lines.join("\n").into_bytes()), TIMEOUT, what);
    assert!(
        output.status.success(),
        "{what}: produce failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    consume.args(["-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q"]);
    let output = run_with_timeout(consume, TIMEOUT, what);
    assert!(
        output.status.success(),
        "{what}: consume failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let consumed: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(consumed, lines, "{what}: records read back");
}

/// kcat -L with these settings fails quickly, naming `expected`.
fn assert_refused(mut command: Command, expected: &[&str], what: &str) {
    command.args(["-L", "-m", "5"]);
    let started = Instant::now();
    let output = run_with_timeout(command, TIMEOUT, what);
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what}: kcat -L succeeded");
    assert!(
        expected.iter().any(|text| stderr.contains(text)),
        "{what}: expected one of {expected:?} in:\n{stderr}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "{what}: took {elapsed:?}"
    );
    println!("{what}: refused in {elapsed:?}");
}

#[test]
fn kcat_over_sasl_ssl_with_scram_sha_512_round_trips_and_a_wrong_password_is_refused() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let Some(mut secure) = SecureBroker::start("security_kcat_scram") else {
        return;
    };
    round_trip(
        secure.kcat_sasl_ssl(&kcat, PASSWORD),
        secure.kcat_sasl_ssl(&kcat, PASSWORD),
        "kcat-scram",
        "kcat SASL_SSL SCRAM-SHA-512",
    );
    assert_refused(
        secure.kcat_sasl_ssl(&kcat, "wrong-password"),
        &["Authentication failed", "SASL authentication error"],
        "kcat with a wrong password",
    );
    // PLAIN over SASL_PLAINTEXT checks the same salted credential.
    let plain = |password: &str| {
        let mut command = kcat_command(&kcat);
        command.args([
            "-b",
            &format!("127.0.0.1:{}", secure.sasl_plaintext_port),
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            &format!("sasl.username={USER}"),
            "-X",
            &format!("sasl.password={password}"),
        ]);
        command
    };
    round_trip(
        plain(PASSWORD),
        plain(PASSWORD),
        "kcat-plain",
        "kcat SASL_PLAINTEXT PLAIN",
    );
    assert_refused(
        plain("wrong-password"),
        &["Authentication failed", "SASL authentication error"],
        "kcat PLAIN with a wrong password",
    );
    secure.broker.assert_running();
}

#[test]
fn kcat_over_ssl_with_a_client_certificate_round_trips_and_an_untrusted_one_is_refused() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let Some(mut secure) = SecureBroker::start("security_kcat_ssl") else {
        return;
    };
    round_trip(
        secure.kcat_ssl(&kcat, "client"),
        secure.kcat_ssl(&kcat, "client"),
        "kcat-ssl",
        "kcat SSL client certificate",
    );
    assert_refused(
        secure.kcat_ssl(&kcat, "rogue"),
        &["SSL", "ssl", "Disconnected", "transport"],
        "kcat with an untrusted certificate",
    );
    // Metadata on the SSL listener names the SSL listener's port.
    let mut command = secure.kcat_ssl(&kcat, "client");
    command.arg("-L");
    let output = run_with_timeout(command, TIMEOUT, "kcat -L over SSL");
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains(&format!("broker 0 at 127.0.0.1:{}", secure.ssl_port)),
        "{listing}"
    );
    secure.broker.assert_running();
}

#[test]
fn python_clients_over_sasl_ssl_and_ssl_produce_consume_commit_and_are_refused_bad_credentials() {
    let Some(python) = require_python() else {
        return;
    };
    let Some(mut secure) = SecureBroker::start("security_python") else {
        return;
    };
    let script = support::repo_root().join("server/tests/python/security_clients.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(format!("127.0.0.1:{}", secure.sasl_ssl_port))
        .arg(format!("127.0.0.1:{}", secure.ssl_port))
        .arg(&secure.certificates)
        .arg(USER)
        .arg(PASSWORD)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run_with_timeout(command, Duration::from_secs(300), "security_clients.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "security_clients.py failed:\n{stderr}"
    );
    secure.broker.assert_running();
}

/// Read until the broker closes the connection; how long that took.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    stream.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return started.elapsed();
            }
            Err(error) => panic!("the connection was not closed within {limit:?}: {error}"),
        }
    }
}

/// A Kafka request frame: size, api key, version, correlation id, client id.
fn request(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

#[test]
fn hostile_clients_on_secured_listeners_lose_only_their_own_connection() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let Some(mut secure) = SecureBroker::start("security_hostile") else {
        return;
    };
    let rss_before = secure.broker.rss_bytes();
    // A 100 MB SASL token, announced by its size: refused before any of it
    // is read or allocated.
    let mut stream = TcpStream::connect(("127.0.0.1", secure.sasl_plaintext_port)).unwrap();
    let mut handshake = Vec::new();
    handshake.extend_from_slice(&(5i16).to_be_bytes());
    handshake.extend_from_slice(b"PLAIN");
    stream.write_all(&request(17, 1, &handshake)).unwrap();
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).unwrap();
    let size = i32::from_be_bytes(answer) as usize;
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body).unwrap();
    stream
        .write_all(&(100_000_000i32 + 10).to_be_bytes())
        .unwrap();
    stream.write_all(&[0, 36, 0, 1]).unwrap();
    let elapsed = closed_within(&mut stream, Duration::from_secs(5));
    println!("100 MB SASL token: closed after {elapsed:?}");
    // A request before authentication closes the connection.
    let mut stream = TcpStream::connect(("127.0.0.1", secure.sasl_plaintext_port)).unwrap();
    stream.write_all(&request(3, 1, &[0, 0, 0, 0])).unwrap();
    closed_within(&mut stream, Duration::from_secs(5));
    // Garbage during the TLS handshake, on both TLS listeners.
    for port in [secure.ssl_port, secure.sasl_ssl_port] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|index| (index * 7919 % 251) as u8)
            .collect();
        let _ = stream.write_all(&garbage);
        let elapsed = closed_within(&mut stream, Duration::from_secs(5));
        println!("TLS garbage on port {port}: closed after {elapsed:?}");
    }
    // Wrong passwords in a tight loop: each refused, nobody else slowed.
    let started = Instant::now();
    for attempt in 0..20 {
        let mut stream = TcpStream::connect(("127.0.0.1", secure.sasl_plaintext_port)).unwrap();
        stream.write_all(&request(17, 1, &handshake)).unwrap();
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).unwrap();
        let token = format!("\0{USER}\0wrong-{attempt}");
        let mut authenticate = (token.len() as i32).to_be_bytes().to_vec();
        authenticate.extend_from_slice(token.as_bytes());
        stream.write_all(&request(36, 1, &authenticate)).unwrap();
        stream.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).unwrap();
        // Correlation id, then the error code: SASL_AUTHENTICATION_FAILED.
        assert_eq!(
            i16::from_be_bytes([body[4], body[5]]),
            58,
            "attempt {attempt}"
        );
        closed_within(&mut stream, Duration::from_secs(5));
    }
    println!("20 failed authentications took {:?}", started.elapsed());
    // SaslHandshake v0 (raw tokens, as old clients do), then a request.
    let mut stream = TcpStream::connect(("127.0.0.1", secure.sasl_plaintext_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let read_frame = |stream: &mut TcpStream| {
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).unwrap();
        body
    };
    stream.write_all(&request(17, 0, &handshake)).unwrap();
    let answer = read_frame(&mut stream);
    assert_eq!(
        i16::from_be_bytes([answer[4], answer[5]]),
        0,
        "handshake v0"
    );
    let token = format!("\0{USER}\0{PASSWORD}");
    let mut raw = (token.len() as i32).to_be_bytes().to_vec();
    raw.extend_from_slice(token.as_bytes());
    stream.write_all(&raw).unwrap();
    assert!(
        read_frame(&mut stream).is_empty(),
        "PLAIN's empty raw answer"
    );
    stream.write_all(&request(3, 1, &[0, 0, 0, 0])).unwrap();
    let metadata = read_frame(&mut stream);
    assert_eq!(
        i32::from_be_bytes([metadata[0], metadata[1], metadata[2], metadata[3]]),
        7
    );
    round_trip(
        secure.kcat_sasl_ssl(&kcat, PASSWORD),
        secure.kcat_sasl_ssl(&kcat, PASSWORD),
        "after-hostile",
        "kcat after the hostile clients",
    );
    let rss_after = secure.broker.rss_bytes();
    assert!(
        rss_after < rss_before + 64 * 1024 * 1024,
        "resident memory grew from {rss_before} to {rss_after} bytes"
    );
    secure.broker.assert_running();
}

#[test]
fn a_user_bootstrapped_into_a_stopped_nodes_data_directory_can_authenticate() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let Some(mut secure) = SecureBroker::start("security_bootstrap") else {
        return;
    };
    secure.broker.stop();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args([
            "user",
            "bootstrap",
            "bob",
            "--password",
            "bob-test-password",
        ])
        .args(["--mechanism", "SCRAM-SHA-256", "--data-dir"])
        .arg(secure.broker.data_dir());
    let output = run_with_timeout(command, TIMEOUT, "sluice user bootstrap");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file =
        std::fs::read_to_string(secure.broker.data_dir().join("scram-bootstrap.json")).unwrap();
    assert!(!file.contains("bob-test-password"), "no password on disk");
    secure.broker.start_again();
    let listing = secure.sluice(&["user", "list"]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("bob\tSCRAM-SHA-256\t4096"), "{listing}");
    assert!(listing.contains("alice\tSCRAM-SHA-512\t4096"), "{listing}");
    let mut command = kcat_command(&kcat);
    command.args([
        "-b",
        &format!("127.0.0.1:{}", secure.sasl_plaintext_port),
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-256",
        "-X",
        "sasl.username=bob",
        "-X",
        "sasl.password=bob-test-password",
        "-L",
    ]);
    let output = run_with_timeout(command, TIMEOUT, "kcat as bob");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Deleted users cannot authenticate any more.
    let deleted = secure.sluice(&["user", "delete", "bob", "--mechanism", "SCRAM-SHA-256"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let mut command = kcat_command(&kcat);
    command.args([
        "-b",
        &format!("127.0.0.1:{}", secure.sasl_plaintext_port),
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-256",
        "-X",
        "sasl.username=bob",
        "-X",
        "sasl.password=bob-test-password",
    ]);
    assert_refused(
        command,
        &["Authentication failed"],
        "kcat as a deleted user",
    );
    secure.broker.assert_running();
}
