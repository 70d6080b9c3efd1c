//! Authentication: who is on the other end of a client connection.
//!
//! - [`scram`]: SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677): salted
//!   credentials and the server side of the exchange. Pure, no I/O.
//! - [`plain`]: SASL PLAIN (RFC 4616), checked against the same salted
//!   credentials (the broker never holds a password).
//! - [`sasl`]: one connection's SASL state machine (SaslHandshake v0/v1,
//!   SaslAuthenticate v0..v2, Kafka's rules on what may come when). Pure.
//! - [`credentials`]: where credentials come from: the controller's
//!   metadata image (records `UserScramCredential`), and the bootstrap file
//!   `sluice user bootstrap` writes into a stopped node's data directory.
//! - [`tls`]: rustls server configuration from PEM files, client
//!   certificate verification and the principal taken from its subject.
//!
//! The outcome of authentication is a [`Principal`] stored on the
//! connection (`net::Connection`); the authorizer reads it there:
//! - [`acl`]: ACL bindings, filters and the table the metadata image
//!   holds (records `AccessControlEntry`). Pure.
//! - [`authorizer`]: Kafka's StandardAuthorizer rules over that table,
//!   and one request's [`authorizer::Access`]. Pure.
//!
//! Everything here runs on the connection's shard; nothing blocks except PBKDF2 in [`scram::ScramCredential::new`], which
//! runs in admin commands and tests, never per connection.

pub mod acl;
pub mod authorizer;
pub mod credentials;
pub mod plain;
pub mod principal_mapping;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::fmt;

/// An authenticated identity, as Kafka prints it (`User:alice`,
/// `User:CN=alice,O=example`, `User:ANONYMOUS`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Kafka's principal type; always `User` today.
    pub principal_type: &'static str,
    pub name: String,
}

impl Principal {
    /// The principal of a connection that did not authenticate (a
    /// PLAINTEXT listener, or SSL without a client certificate).
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            principal_type: "User",
            name: name.into(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.principal_type, self.name)
    }
}

/// Kafka's listener security protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(text: &str) -> Option<SecurityProtocol> {
        match text.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_print_as_kafka_does() {
        assert_eq!(Principal::user("alice").to_string(), "User:alice");
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
    }

    #[test]
    fn security_protocols_parse_in_any_case() {
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl"),
            Some(SecurityProtocol::SaslSsl)
        );
        assert_eq!(SecurityProtocol::parse("TLS"), None);
        for protocol in [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ] {
            assert_eq!(SecurityProtocol::parse(protocol.name()), Some(protocol));
        }
    }
}
