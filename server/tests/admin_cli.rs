//! The admin subcommands (`sluice groups ...`) pointed at something that is
//! not a Kafka broker say so, instead of a number from a misread frame.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;

/// A one-connection server on a free loopback port: reads what the client
/// sends, answers `reply` (nothing: just closes), closes.
fn fake_server(reply: &'static [u8]) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0_u8; 512];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(reply);
    });
    (address, server)
}

fn groups_list(address: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["groups", "list", "--bootstrap", address])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn groups_list_against_an_http_server_says_it_does_not_speak_kafka() {
    let (address, server) = fake_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let (success, stderr) = groups_list(&address);
    server.join().unwrap();
    assert!(!success, "succeeded against an HTTP server");
    assert!(
        stderr.contains(&format!("{address} does not speak the Kafka protocol"))
            && stderr.contains("\"HTTP\""),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("1213486160"), "stderr: {stderr}");
}

#[test]
fn groups_list_against_a_server_that_hangs_up_says_it_does_not_speak_kafka() {
    let (address, server) = fake_server(b"");
    let (success, stderr) = groups_list(&address);
    server.join().unwrap();
    assert!(!success);
    assert!(
        stderr.contains("does not speak the Kafka protocol")
            && stderr.contains("closed the connection without answering"),
        "stderr: {stderr}"
    );
}
