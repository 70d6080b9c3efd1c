//! Mutual authentication of peer connections (controller and replication
//! traffic) with a secret every broker of the cluster holds
//! (`--inter-broker-secret-file`; docs/decisions/0014-inter-broker-auth.md).
//!
//! Before any other frame, the connecting side proves it knows the secret
//! and so does the accepting side, without either sending it:
//!
//! ```text
//! client -> server  AUTH_HELLO      version (1 byte), client nonce (32)
//! server -> client  AUTH_CHALLENGE  server nonce (32), server proof (32)
//! client -> server  AUTH_PROOF      client proof (32)
//! server -> client  AUTH_OK         (empty)
//! proof = HMAC-SHA256(secret, label || client nonce || server nonce)
//! ```
//!
//! Fresh random nonces on both sides make a recorded exchange useless for
//! a later connection; the two labels keep one side's proof from being
//! reflected back as the other's. A side that fails a check closes the
//! connection (the server answers nothing, so a prober learns nothing but
//! the refusal). The handshake authenticates; it does not encrypt, and
//! frames after it carry a CRC, not a MAC: an attacker able to inject into
//! an established TCP connection is out of scope (a private network, as
//! Kafka's PLAINTEXT/SASL_PLAINTEXT inter-broker listeners assume).
//!
//! This file is the sans-I/O core; `io.rs` and `aio.rs` drive it on
//! blocking and compio sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Version byte of AUTH_HELLO.
pub const VERSION: u8 = 1;
/// Bytes of a nonce and of a proof.
pub const NONCE_BYTES: usize = 32;
pub const PROOF_BYTES: usize = 32;
/// Shortest secret accepted (256 bits: `openssl rand -hex 32` gives 64
/// characters, each a byte of secret here).
pub const SECRET_BYTES_MIN: usize = 32;
/// Largest handshake payload; a header announcing more is refused before
/// anything is allocated.
pub const PAYLOAD_BYTES_MAX: usize = 64;
/// Time a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const SERVER_LABEL: &[u8] = b"sluice peer server proof v1";
const CLIENT_LABEL: &[u8] = b"sluice peer client proof v1";

type HmacSha256 = Hmac<Sha256>;

/// The cluster's inter-broker secret. Cheap to clone; never printed.
#[derive(Clone)]
pub struct PeerSecret(Arc<[u8]>);

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PeerSecret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the inter-broker secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the inter-broker secret in {path} is {length} bytes; at least {SECRET_BYTES_MIN} are \
         needed (make one with `openssl rand -hex 32 > FILE`, the same file on every broker)"
    )]
    TooShort { path: PathBuf, length: usize },
}

impl PeerSecret {
    /// The secret in `path`: its bytes with surrounding whitespace (a
    /// trailing newline) removed.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < SECRET_BYTES_MIN {
            return Err(SecretError::TooShort {
                path: path.to_path_buf(),
                length: trimmed.len(),
            });
        }
        Ok(Self(trimmed.into()))
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    fn proof(&self, label: &[u8], client_nonce: &[u8], server_nonce: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label);
        mac.update(client_nonce);
        mac.update(server_nonce);
        mac
    }
}

/// Why a handshake failed; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "the peer did not authenticate (frame kind {kind} first): is --inter-broker-secret-file \
         set on every broker?"
    )]
    NotAuthenticating { kind: u16 },
    #[error("the peer speaks peer-authentication version {0}, this broker {VERSION}")]
    Version(u8),
    #[error("malformed authentication frame (kind {kind}, {length} bytes)")]
    Malformed { kind: u16, length: usize },
    #[error("the peer's proof is wrong: it does not hold this cluster's inter-broker secret")]
    BadProof,
    #[error(
        "the peer refused this broker's proof or closed the connection: is the same \
         --inter-broker-secret-file on every broker?"
    )]
    Refused,
    #[error("the random number generator failed: {0}")]
    Random(String),
}

fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|error| HandshakeError::Random(error.to_string()))?;
    Ok(nonce)
}

/// The connecting side, step by step.
pub struct ClientHandshake {
    secret: PeerSecret,
    nonce: [u8; NONCE_BYTES],
}

impl ClientHandshake {
    /// Start: the AUTH_HELLO payload to send.
    pub fn start(secret: &PeerSecret) -> Result<(Self, Vec<u8>), HandshakeError> {
        let nonce = nonce()?;
        let mut hello = Vec::with_capacity(1 + NONCE_BYTES);
        hello.push(VERSION);
        hello.extend_from_slice(&nonce);
        Ok((
            Self {
                secret: secret.clone(),
                nonce,
            },
            hello,
        ))
    }

    /// The server's AUTH_CHALLENGE (`kind`, `payload`): checked, and the
    /// AUTH_PROOF payload to send.
    pub fn answer(&self, kind: u16, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if kind != super::kind::AUTH_CHALLENGE {
            return Err(HandshakeError::Refused);
        }
        if payload.len() != NONCE_BYTES + PROOF_BYTES {
            return Err(HandshakeError::Malformed {
                kind,
                length: payload.len(),
            });
        }
        let (server_nonce, server_proof) = payload.split_at(NONCE_BYTES);
        self.secret
            .proof(SERVER_LABEL, &self.nonce, server_nonce)
            .verify_slice(server_proof)
            .map_err(|_| HandshakeError::BadProof)?;
        Ok(self
            .secret
            .proof(CLIENT_LABEL, &self.nonce, server_nonce)
            .finalize()
            .into_bytes()
            .to_vec())
    }

    /// The server's last frame: AUTH_OK, or the connection is refused.
    pub fn finish(kind: u16) -> Result<(), HandshakeError> {
        if kind == super::kind::AUTH_OK {
            Ok(())
        } else {
            Err(HandshakeError::Refused)
        }
    }
}

/// The accepting side, step by step.
pub struct ServerHandshake {
    secret: PeerSecret,
    client_nonce: [u8; NONCE_BYTES],
    nonce: [u8; NONCE_BYTES],
}

impl ServerHandshake {
    /// The client's first frame (`kind`, `payload`): checked, and the
    /// AUTH_CHALLENGE payload to send.
    pub fn challenge(
        secret: &PeerSecret,
        kind: u16,
        payload: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        if kind != super::kind::AUTH_HELLO {
            return Err(HandshakeError::NotAuthenticating { kind });
        }
        let Some((&version, client_nonce)) = payload.split_first() else {
            return Err(HandshakeError::Malformed { kind, length: 0 });
        };
        if version != VERSION {
            return Err(HandshakeError::Version(version));
        }
        let client_nonce: [u8; NONCE_BYTES] =
            client_nonce
                .try_into()
                .map_err(|_| HandshakeError::Malformed {
                    kind,
                    length: payload.len(),
                })?;
        let nonce = nonce()?;
        let proof = secret.proof(SERVER_LABEL, &client_nonce, &nonce).finalize();
        let mut challenge = Vec::with_capacity(NONCE_BYTES + PROOF_BYTES);
        challenge.extend_from_slice(&nonce);
        challenge.extend_from_slice(&proof.into_bytes());
        Ok((
            Self {
                secret: secret.clone(),
                client_nonce,
                nonce,
            },
            challenge,
        ))
    }

    /// The client's AUTH_PROOF: `Ok` when it holds the secret (then send
    /// AUTH_OK).
    pub fn verify(&self, kind: u16, payload: &[u8]) -> Result<(), HandshakeError> {
        if kind != super::kind::AUTH_PROOF || payload.len() != PROOF_BYTES {
            return Err(HandshakeError::Malformed {
                kind,
                length: payload.len(),
            });
        }
        self.secret
            .proof(CLIENT_LABEL, &self.client_nonce, &self.nonce)
            .verify_slice(payload)
            .map_err(|_| HandshakeError::BadProof)
    }
}

/// What a server without a secret says of a client's AUTH_HELLO.
pub fn unexpected_hello_reason() -> &'static str {
    "the peer authenticates with an inter-broker secret but this broker has no \
     --inter-broker-secret-file"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::peer::kind;

    fn secret(byte: u8) -> PeerSecret {
        PeerSecret::from_bytes(&[byte; 32])
    }

    /// Run a whole handshake between a client holding `client` and a
    /// server holding `server`; the first error.
    fn run(client: &PeerSecret, server: &PeerSecret) -> Result<(), HandshakeError> {
        let (client, hello) = ClientHandshake::start(client)?;
        let (server, challenge) = ServerHandshake::challenge(server, kind::AUTH_HELLO, &hello)?;
        let proof = client.answer(kind::AUTH_CHALLENGE, &challenge)?;
        server.verify(kind::AUTH_PROOF, &proof)?;
        ClientHandshake::finish(kind::AUTH_OK)
    }

    #[test]
    fn both_sides_holding_the_secret_authenticate() {
        assert_eq!(run(&secret(7), &secret(7)), Ok(()));
    }

    #[test]
    fn a_client_with_another_secret_refuses_the_server_before_proving_anything() {
        assert_eq!(run(&secret(1), &secret(2)), Err(HandshakeError::BadProof));
    }

    #[test]
    fn a_client_that_cannot_prove_is_refused_by_the_server() {
        let (_client, hello) = ClientHandshake::start(&secret(1)).unwrap();
        let (server, challenge) =
            ServerHandshake::challenge(&secret(1), kind::AUTH_HELLO, &hello).unwrap();
        // A prober without the secret guesses, or replays the server's own
        // proof (reflection): both refused.
        assert_eq!(
            server.verify(kind::AUTH_PROOF, &[0u8; PROOF_BYTES]),
            Err(HandshakeError::BadProof)
        );
        assert_eq!(
            server.verify(kind::AUTH_PROOF, &challenge[NONCE_BYTES..]),
            Err(HandshakeError::BadProof)
        );
    }

    #[test]
    fn a_recorded_proof_does_not_open_a_second_connection() {
        let shared = secret(3);
        let (client, hello) = ClientHandshake::start(&shared).unwrap();
        let (first, challenge) =
            ServerHandshake::challenge(&shared, kind::AUTH_HELLO, &hello).unwrap();
        let proof = client.answer(kind::AUTH_CHALLENGE, &challenge).unwrap();
        first.verify(kind::AUTH_PROOF, &proof).unwrap();
        // An eavesdropper replays hello and proof: the server's fresh nonce
        // makes the old proof wrong.
        let (second, _) = ServerHandshake::challenge(&shared, kind::AUTH_HELLO, &hello).unwrap();
        assert_eq!(
            second.verify(kind::AUTH_PROOF, &proof),
            Err(HandshakeError::BadProof)
        );
    }

    #[test]
    fn other_first_frames_and_malformed_payloads_are_refused() {
        let shared = secret(4);
        assert_eq!(
            ServerHandshake::challenge(&shared, kind::RAFT_MESSAGE, b"x").err(),
            Some(HandshakeError::NotAuthenticating {
                kind: kind::RAFT_MESSAGE
            })
        );
        assert_eq!(
            ServerHandshake::challenge(&shared, kind::AUTH_HELLO, &[]).err(),
            Some(HandshakeError::Malformed {
                kind: kind::AUTH_HELLO,
                length: 0
            })
        );
        assert_eq!(
            ServerHandshake::challenge(&shared, kind::AUTH_HELLO, &[9; 33]).err(),
            Some(HandshakeError::Version(9))
        );
        assert!(matches!(
            ServerHandshake::challenge(&shared, kind::AUTH_HELLO, &[VERSION; 5]),
            Err(HandshakeError::Malformed { .. })
        ));
        let (client, _) = ClientHandshake::start(&shared).unwrap();
        assert!(matches!(
            client.answer(kind::AUTH_CHALLENGE, &[0; 10]),
            Err(HandshakeError::Malformed { .. })
        ));
        assert_eq!(
            client.answer(kind::CONTROLLER_RESPONSE, &[0; 64]),
            Err(HandshakeError::Refused)
        );
        assert_eq!(
            ClientHandshake::finish(kind::REPLICA_STATE),
            Err(HandshakeError::Refused)
        );
    }

    #[test]
    fn secrets_are_read_trimmed_and_short_ones_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-peer-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        let loaded = PeerSecret::load(&good).unwrap();
        assert_eq!(loaded.0.len(), 64);
        assert_eq!(format!("{loaded:?}"), "PeerSecret(..)");
        let short = dir.join("short");
        std::fs::write(&short, "hunter2\n").unwrap();
        assert!(matches!(
            PeerSecret::load(&short),
            Err(SecretError::TooShort { length: 7, .. })
        ));
        assert!(matches!(
            PeerSecret::load(&dir.join("missing")),
            Err(SecretError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
