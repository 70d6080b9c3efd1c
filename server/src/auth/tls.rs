//! TLS settings of the SSL and SASL_SSL listeners: the rustls server
//! configuration built from PEM files (certificate chain, private key,
//! and the CA that client certificates must chain to), and the principal
//! a client certificate stands for.
//!
//! TLS 1.2 and 1.3 with rustls's safe defaults, the `ring` provider.
//! Client certificates follow Kafka's `ssl.client.auth`: `none` (not
//! asked), `requested` (verified when given, else the connection is
//! anonymous), `required` (a connection without a verified certificate
//! fails its handshake). The principal is the subject's distinguished name
//! in RFC 2253 form mapped by `--ssl-principal-mapping-rules`
//! (`auth::principal_mapping`); Kafka's default keeps it whole:
//! `User:CN=alice,O=example`. No I/O after startup (the files are read
//! once, by [`server_config`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Kafka's `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Requested,
    Required,
}

/// Where the TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, the broker's own certificate first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("reading {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("--ssl-client-auth {0:?} needs --ssl-client-ca (the CA client certificates chain to)")]
    NoClientCa(ClientAuth),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem_error = |error: rustls::pki_types::pem::Error| TlsConfigError::Pem {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certificates.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

/// Build the server configuration (reads the files).
pub fn server_config(settings: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|error| TlsConfigError::Pem {
        path: settings.key.clone(),
        message: error.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match (settings.client_auth, &settings.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (wanted, None) => return Err(TlsConfigError::NoClientCa(wanted)),
        (wanted, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates(ca)? {
                roots
                    .add(certificate)
                    .map_err(|error| TlsConfigError::Pem {
                        path: ca.clone(),
                        message: error.to_string(),
                    })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            );
            let verifier = if wanted == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|error| TlsConfigError::Verifier(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_single_cert(chain, key)?))
}

/// The subject of a (verified) client certificate as an RFC 2253 string,
/// which `ssl.principal.mapping.rules` turn into a principal name
/// (`auth::principal_mapping`). `None` when the certificate does not parse.
pub fn subject_of(certificate_der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate_der).ok()?;
    Some(rfc2253(certificate.subject()))
}

/// RFC 2253: the last RDN first, attributes as SHORT=value, commas between
/// RDNs, `+` between the attributes of one RDN, special characters
/// escaped.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type();
                    let key = x509_parser::objects::oid2abbrev(oid, registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                    let value = attribute
                        .as_str()
                        .map(escape_value)
                        .unwrap_or_else(|_| format!("#{}", hex(attribute.attr_value().data)));
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (index, character) in value.chars().enumerate() {
        let special = matches!(character, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && (character == '#' || character == ' '))
            || (index + 1 == value.chars().count() && character == ' ');
        if special {
            out.push('\\');
        }
        out.push(character);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_special_characters_are_escaped() {
        assert_eq!(escape_value("alice"), "alice");
        assert_eq!(escape_value("Smith, John"), "Smith\\, John");
        assert_eq!(escape_value("#1 "), "\\#1\\ ");
    }

    #[test]
    fn a_client_ca_is_needed_to_ask_for_client_certificates() {
        let settings = TlsSettings {
            certificate: PathBuf::from("/nonexistent.pem"),
            key: PathBuf::from("/nonexistent.key"),
            client_ca: None,
            client_auth: ClientAuth::Required,
        };
        assert!(server_config(&settings).is_err());
    }
}
