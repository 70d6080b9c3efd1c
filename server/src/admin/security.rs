//! How the admin subcommands connect: Kafka's `security.protocol`
//! (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), the SASL login (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512) and the TLS client configuration (the CA
//! to trust, an optional client certificate).
//!
//! TLS is rustls (ring provider, TLS 1.2 and 1.3) over the blocking
//! `TcpStream`, the broker's certificate verified against
//! `--ssl-ca-location` and the host of the address connected to (an IP
//! address needs an IP subjectAltName). SASL is SaslHandshake v1, then
//! SaslAuthenticate rounds; SCRAM is `auth::scram::client`, the server
//! signature of the last round checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::AdminError;
use super::client::{ClientError, Connection};
use crate::auth::scram::ScramMechanism;
use crate::auth::scram::client::ScramClient;

/// SaslAuthenticate versions this client speaks (v1 adds the session
/// lifetime, v2 is flexible).
const SASL_AUTHENTICATE_VERSIONS: std::ops::RangeInclusive<i16> = 0..=2;

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
pub enum SecurityProtocol {
    #[default]
    #[value(name = "PLAINTEXT")]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[value(name = "SSL")]
    #[serde(rename = "SSL")]
    Ssl,
    #[value(name = "SASL_PLAINTEXT")]
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[value(name = "SASL_SSL")]
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Kafka's `sasl.mechanism`, the ones Sluice serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[default]
    #[value(name = "SCRAM-SHA-512")]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A SASL login.
#[derive(Clone)]
pub struct SaslLogin {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How every connection of a command is secured. The default is
/// PLAINTEXT: no TLS, no SASL.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    pub protocol: SecurityProtocol,
    /// `Some` exactly when `protocol` is SSL or SASL_SSL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `Some` exactly when `protocol` is SASL_PLAINTEXT or SASL_SSL.
    pub sasl: Option<SaslLogin>,
}

/// The TLS files of a [`ClientSecurity`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificates the broker's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and its key.
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientSecurity {
    /// Check the settings and read the TLS files. Errors are the user's:
    /// [`AdminError::Invalid`].
    pub fn new(
        protocol: SecurityProtocol,
        mechanism: SaslMechanism,
        username: Option<String>,
        password: Option<String>,
        files: &TlsFiles,
    ) -> Result<ClientSecurity, AdminError> {
        let invalid = |text: String| AdminError::Invalid(text);
        let sasl = if protocol.sasl() {
            let username = username.filter(|name| !name.is_empty()).ok_or_else(|| {
                invalid(format!(
                    "--security-protocol {} needs --sasl-username",
                    protocol.name()
                ))
            })?;
            let password = password.ok_or_else(|| {
                invalid(format!(
                    "--security-protocol {} needs --sasl-password (or SLUICE_SASL_PASSWORD)",
                    protocol.name()
                ))
            })?;
            Some(SaslLogin {
                mechanism,
                username,
                password,
            })
        } else {
            if username.is_some() {
                return Err(invalid(format!(
                    "--sasl-username is set but --security-protocol is {}: \
                     use SASL_PLAINTEXT or SASL_SSL",
                    protocol.name()
                )));
            }
            None
        };
        let tls = if protocol.tls() {
            Some(tls_config(files)?)
        } else {
            if files.ca.is_some() || files.certificate.is_some() || files.key.is_some() {
                return Err(invalid(format!(
                    "--ssl-* files are set but --security-protocol is {}: use SSL or SASL_SSL",
                    protocol.name()
                )));
            }
            None
        };
        Ok(ClientSecurity {
            protocol,
            tls,
            sasl,
        })
    }
}

fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, AdminError> {
    let pem_error = |error: rustls::pki_types::pem::Error| {
        AdminError::Invalid(format!("{what} {}: {error}", path.display()))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certificates.is_empty() {
        return Err(AdminError::Invalid(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

/// The rustls client configuration of `files`.
fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, AdminError> {
    let Some(ca) = &files.ca else {
        return Err(AdminError::Invalid(
            "TLS needs --ssl-ca-location (the PEM CA that signed the broker's certificate)"
                .to_string(),
        ));
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca, "--ssl-ca-location")? {
        roots.add(certificate).map_err(|error| {
            AdminError::Invalid(format!("--ssl-ca-location {}: {error}", ca.display()))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| AdminError::Invalid(format!("TLS configuration: {error}")))?
        .with_root_certificates(roots);
    let config = match (&files.certificate, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(certificate), Some(key)) => {
            let chain = read_certificates(certificate, "--ssl-certificate-location")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
                AdminError::Invalid(format!("--ssl-key-location {}: {error}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| AdminError::Invalid(format!("client certificate: {error}")))?
        }
        (Some(_), None) => {
            return Err(AdminError::Invalid(
                "--ssl-certificate-location needs --ssl-key-location".to_string(),
            ));
        }
        (None, Some(_)) => {
            return Err(AdminError::Invalid(
                "--ssl-key-location needs --ssl-certificate-location".to_string(),
            ));
        }
    };
    Ok(Arc::new(config))
}

/// The name the broker's certificate must carry: the host of `address`
/// (`host:port`, `[v6]:port`).
pub fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|error| format!("{host:?} is not a valid TLS server name: {error}"))
}

/// A TLS error, told as the user needs it: an unknown issuer is a
/// certificate the CA given does not vouch for.
pub fn describe_tls_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    let hint = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            " (the broker's certificate is not signed by the CA of --ssl-ca-location)"
        }
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => " (the broker's certificate does not name the host of --bootstrap)",
        Some(rustls::Error::AlertReceived(_)) => {
            " (the broker refused the handshake: does its listener need a client \
             certificate, --ssl-certificate-location and --ssl-key-location?)"
        }
        _ if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            " (the broker closed the connection: is this a TLS listener?)"
        }
        _ => "",
    };
    format!("{text}{hint}")
}

/// Log in on `connection` (ApiVersions done): SaslHandshake v1, then
/// SaslAuthenticate rounds until the mechanism completes.
pub fn authenticate(connection: &mut Connection, login: &SaslLogin) -> Result<(), ClientError> {
    let address = connection.address().to_string();
    let failed = |reason: String| ClientError::Authentication {
        address: address.clone(),
        user: login.username.clone(),
        mechanism: login.mechanism.name(),
        reason,
    };
    let handshake = SaslHandshakeRequest::default()
        .with_mechanism(StrBytes::from_static_str(login.mechanism.name()));
    let (response, _) = connection.call(&handshake, 1..=1)?;
    if response.error_code != 0 {
        let enabled: Vec<String> = response
            .mechanisms
            .iter()
            .map(|mechanism| mechanism.to_string())
            .collect();
        return Err(failed(format!(
            "{}: the broker's listener enables {}",
            super::client::describe_code(response.error_code),
            if enabled.is_empty() {
                "no SASL mechanism".to_string()
            } else {
                enabled.join(", ")
            }
        )));
    }
    let mut round = |token: Vec<u8>| -> Result<Bytes, ClientError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let (response, _) = connection.call(&request, SASL_AUTHENTICATE_VERSIONS)?;
        if response.error_code != 0 {
            let message = response
                .error_message
                .as_ref()
                .filter(|message| !message.is_empty())
                .map_or_else(String::new, |message| format!(": {message}"));
            return Err(failed(format!(
                "{}{message}",
                super::client::describe_code(response.error_code)
            )));
        }
        Ok(response.auth_bytes)
    };
    match login.mechanism {
        SaslMechanism::Plain => {
            let mut token = Vec::new();
            token.push(0);
            token.extend_from_slice(login.username.as_bytes());
            token.push(0);
            token.extend_from_slice(login.password.as_bytes());
            round(token)?;
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let mechanism = if login.mechanism == SaslMechanism::ScramSha256 {
                ScramMechanism::Sha256
            } else {
                ScramMechanism::Sha512
            };
            let (client, first) = ScramClient::start(mechanism, &login.username, &login.password)
                .map_err(|error| failed(error.to_string()))?;
            let server_first = round(first)?;
            let (last, signature) = client
                .respond(&server_first)
                .map_err(|error| failed(format!("server-first-message: {error}")))?;
            let server_final = round(last)?;
            let verified = server_final
                .split(|byte| *byte == b',')
                .any(|field| field == signature.as_slice());
            if !verified {
                return Err(failed(format!(
                    "the broker's server-final-message {:?} does not prove it knows the \
                     credential",
                    String::from_utf8_lossy(&server_final)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(
            server_name("127.0.0.1:9093").ok(),
            ServerName::try_from("127.0.0.1").ok()
        );
        assert_eq!(
            server_name("[::1]:9093").ok(),
            ServerName::try_from("::1").ok()
        );
        assert_eq!(
            server_name("broker.example:9093").ok(),
            ServerName::try_from("broker.example").ok()
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let none = TlsFiles::default();
        let sasl = ClientSecurity::new(
            SecurityProtocol::SaslPlaintext,
            SaslMechanism::Plain,
            None,
            Some("x".into()),
            &none,
        );
        assert!(matches!(sasl, Err(AdminError::Invalid(_))));
        let tls = ClientSecurity::new(
            SecurityProtocol::Ssl,
            SaslMechanism::Plain,
            None,
            None,
            &none,
        );
        assert!(
            matches!(tls, Err(AdminError::Invalid(text)) if text.contains("--ssl-ca-location"))
        );
        let stray = ClientSecurity::new(
            SecurityProtocol::Plaintext,
            SaslMechanism::Plain,
            Some("alice".into()),
            None,
            &none,
        );
        assert!(matches!(stray, Err(AdminError::Invalid(_))));
        let plain = ClientSecurity::new(
            SecurityProtocol::Plaintext,
            SaslMechanism::Plain,
            None,
            Some("ignored".into()),
            &none,
        )
        .expect("plaintext");
        assert!(plain.tls.is_none() && plain.sasl.is_none());
    }
}
