//! Test certificates, made at test time with the openssl command line tool
//! (nothing secret is committed): a CA, a server certificate for
//! 127.0.0.1/localhost, a client certificate with a chosen CN, and a
//! self-signed "rogue" CA that vouches for nothing here. Files in `dir`:
//! `ca.pem`, `rogue.pem`, `server.pem`/`server.key`,
//! `client.pem`/`client.key`.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub fn make_certificates(openssl: &Path, dir: &Path, client_cn: &str) {
    std::fs::create_dir_all(dir).expect("creating the certificates directory");
    let run = |args: &[&str]| {
        let output = Command::new(openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    for (name, subject) in [("ca", "/CN=sluice-test-ca"), ("rogue", "/CN=rogue-ca")] {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", &key, "-out",
            &pem, "-subj", subject,
        ]);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("writing server.ext");
    // X.509 v3 (with extensions): webpki refuses v1 certificates.
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )
    .expect("writing client.ext");
    let client_subject = format!("/CN={client_cn}");
    for (name, subject) in [
        ("server", "/CN=localhost"),
        ("client", client_subject.as_str()),
    ] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        run(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]);
    }
}
