//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as
//! Kafka speaks them (KIP-84): salted credentials, the two-round exchange,
//! and the checks. Pure: no I/O, no clock; randomness (salts, nonces) comes
//! from the operating system's generator.
//!
//! The broker stores only `(salt, iterations, StoredKey, ServerKey)`: the
//! password cannot be recovered from them, and a stolen credential does not
//! let its holder authenticate (that needs the ClientKey, which the client
//! proves it knows without sending it).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's bounds on a credential's PBKDF2 iterations
/// (ScramMechanism.minIterations / maxIterations).
pub const ITERATIONS_MIN: i32 = 4096;
pub const ITERATIONS_MAX: i32 = 16384;

/// Length of the random salt of a new credential.
const SALT_BYTES: usize = 32;
/// Length of the server's random nonce part.
const NONCE_BYTES: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name().eq_ignore_ascii_case(name))
    }

    /// Kafka's wire code (ScramMechanism in AlterUserScramCredentials).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.code() == code)
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac =
                    Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes keys of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with this HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramMechanism::Sha512 => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// What the broker keeps of a user's password for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    /// A credential for `password` with a fresh random salt.
    pub fn new(
        mechanism: ScramMechanism,
        password: &str,
        iterations: i32,
    ) -> Result<ScramCredential, ScramError> {
        let mut salt = vec![0; SALT_BYTES];
        getrandom::getrandom(&mut salt).map_err(|_| ScramError::NoRandomness)?;
        ScramCredential::with_salt(mechanism, password, salt, iterations)
    }

    pub fn with_salt(
        mechanism: ScramMechanism,
        password: &str,
        salt: Vec<u8>,
        iterations: i32,
    ) -> Result<ScramCredential, ScramError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let rounds = u32::try_from(iterations).map_err(|_| ScramError::Iterations(iterations))?;
        let salted = mechanism.salted_password(password.as_bytes(), &salt, rounds);
        Ok(ScramCredential::from_salted_password(
            mechanism, &salted, salt, iterations,
        ))
    }

    /// From a SaltedPassword (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: i32,
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// Whether `password` is the one this credential was made from (SASL
    /// PLAIN against SCRAM credentials). Costs one PBKDF2.
    pub fn matches_password(&self, mechanism: ScramMechanism, password: &str) -> bool {
        let Ok(rounds) = u32::try_from(self.iterations) else {
            return false;
        };
        let salted = mechanism.salted_password(password.as_bytes(), &self.salt, rounds);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        constant_time_eq(&mechanism.hash(&client_key), &self.stored_key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}, got {0}")]
    Iterations(i32),
    #[error("the operating system's random generator failed")]
    NoRandomness,
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM extensions are not supported ({0})")]
    UnsupportedExtension(String),
    #[error("the client's nonce does not match")]
    NonceMismatch,
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// Wrong password or unknown user (the two are not told apart).
    #[error("invalid credentials")]
    InvalidCredentials,
}

/// The server's state between the two rounds.
#[derive(Clone, Debug)]
pub struct ScramServerFirst {
    pub mechanism: ScramMechanism,
    pub username: String,
    /// `None`: unknown user; the exchange goes on with a made-up salt so
    /// that it fails only at the proof, as for a wrong password.
    credential: Option<ScramCredential>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Reverse RFC 5802's username escaping (`=2C` is `,`, `=3D` is `=`).
fn unescape_username(text: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('=') {
        out.push_str(&rest[..position]);
        match rest.get(position..position + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        }
        rest = &rest[position + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Round 1: the client-first-message (`n,,n=user,r=nonce`). `lookup`
/// finds the user's credential for this mechanism. Returns the state and
/// the server-first-message (`r=nonce,s=salt,i=iterations`).
pub fn server_first(
    mechanism: ScramMechanism,
    client_first: &[u8],
    lookup: impl FnOnce(&str) -> Option<ScramCredential>,
) -> Result<(ScramServerFirst, Vec<u8>), ScramError> {
    let text = std::str::from_utf8(client_first)
        .map_err(|_| ScramError::Malformed("client-first-message is not UTF-8"))?;
    // gs2-header: a channel-binding flag, an optional authzid, then the
    // bare message.
    let (flag, rest) = text
        .split_once(',')
        .ok_or(ScramError::Malformed("no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("no gs2 header"))?;
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(ScramError::Malformed("bad authorization id"));
    }
    let mut attributes = bare.split(',');
    let username = attributes
        .next()
        .and_then(|field| field.strip_prefix("n="))
        .ok_or(ScramError::Malformed("no user name"))?;
    let username = unescape_username(username)?;
    let client_nonce = attributes
        .next()
        .and_then(|field| field.strip_prefix("r="))
        .ok_or(ScramError::Malformed("no nonce"))?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    // Kafka's delegation tokens (tokenauth=true) are the one extension
    // clients send; tokens do not exist here.
    if let Some(extension) = attributes.next() {
        return Err(ScramError::UnsupportedExtension(
            extension.chars().take(40).collect(),
        ));
    }
    if !authzid.is_empty() && authzid != format!("a={}", escape_username(&username)) {
        return Err(ScramError::Malformed(
            "the authorization id differs from the user name",
        ));
    }
    let credential = lookup(&username);
    let (salt, iterations) = match &credential {
        Some(credential) => (credential.salt.clone(), credential.iterations),
        None => {
            let mut salt = vec![0; SALT_BYTES];
            getrandom::getrandom(&mut salt).map_err(|_| ScramError::NoRandomness)?;
            (salt, ITERATIONS_MIN)
        }
    };
    let mut random = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut random).map_err(|_| ScramError::NoRandomness)?;
    let nonce = format!(
        "{client_nonce}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(&salt));
    let state = ScramServerFirst {
        mechanism,
        username,
        credential,
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
        nonce,
    };
    Ok((state, server_first.into_bytes()))
}

fn escape_username(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Round 2: the client-final-message (`c=biws,r=nonce,p=proof`). `Ok` is
/// the server-final-message (`v=signature`): the user is authenticated.
pub fn server_final(state: &ScramServerFirst, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
    let text = std::str::from_utf8(client_final)
        .map_err(|_| ScramError::Malformed("client-final-message is not UTF-8"))?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or(ScramError::Malformed("no proof"))?;
    let mut attributes = without_proof.split(',');
    let binding = attributes
        .next()
        .and_then(|field| field.strip_prefix("c="))
        .ok_or(ScramError::Malformed("no channel binding"))?;
    // Without channel binding the client sends its gs2 header back,
    // base64: "biws" is "n,,".
    let binding = BASE64
        .decode(binding)
        .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
    if !(binding.starts_with(b"n,") || binding.starts_with(b"y,")) {
        return Err(ScramError::ChannelBinding);
    }
    let nonce = attributes
        .next()
        .and_then(|field| field.strip_prefix("r="))
        .ok_or(ScramError::Malformed("no nonce"))?;
    // Kafka checks that the nonce *ends with* the server's (its
    // ScramSaslServer.verifyClientProof): librdkafka before 2.1 sends the
    // client nonce once more in front of it. The proof covers the message
    // as sent, so this accepts nothing the proof would not.
    if !nonce.ends_with(&state.nonce) {
        return Err(ScramError::NonceMismatch);
    }
    if attributes.next().is_some() {
        return Err(ScramError::Malformed("unexpected attributes"));
    }
    let proof = BASE64
        .decode(proof)
        .map_err(|_| ScramError::Malformed("proof is not base64"))?;
    let Some(credential) = &state.credential else {
        return Err(ScramError::InvalidCredentials);
    };
    let mechanism = state.mechanism;
    let auth_message = format!(
        "{},{},{}",
        state.client_first_bare, state.server_first, without_proof
    );
    let client_signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Err(ScramError::InvalidCredentials);
    }
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(proof, signature)| proof ^ signature)
        .collect();
    if !constant_time_eq(&mechanism.hash(&client_key), &credential.stored_key) {
        return Err(ScramError::InvalidCredentials);
    }
    let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// The client side, for `sluice` admin commands and tests.
pub mod client {
    use super::*;

    /// A client's state after its first message.
    pub struct ScramClient {
        mechanism: ScramMechanism,
        password: String,
        client_first_bare: String,
        nonce: String,
    }

    impl ScramClient {
        /// The client-first-message for `username`.
        pub fn start(
            mechanism: ScramMechanism,
            username: &str,
            password: &str,
        ) -> Result<(ScramClient, Vec<u8>), ScramError> {
            let mut random = [0u8; NONCE_BYTES];
            getrandom::getrandom(&mut random).map_err(|_| ScramError::NoRandomness)?;
            let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
            let client_first_bare = format!("n={},r={nonce}", escape_username(username));
            let message = format!("n,,{client_first_bare}").into_bytes();
            Ok((
                ScramClient {
                    mechanism,
                    password: password.to_string(),
                    client_first_bare,
                    nonce,
                },
                message,
            ))
        }

        /// The client-final-message for the server-first-message, and the
        /// server signature the server-final-message must carry.
        pub fn respond(&self, server_first: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ScramError> {
            let text = std::str::from_utf8(server_first)
                .map_err(|_| ScramError::Malformed("server-first-message is not UTF-8"))?;
            let mut nonce = None;
            let mut salt = None;
            let mut iterations = None;
            for field in text.split(',') {
                if let Some(value) = field.strip_prefix("r=") {
                    nonce = Some(value);
                } else if let Some(value) = field.strip_prefix("s=") {
                    salt = BASE64.decode(value).ok();
                } else if let Some(value) = field.strip_prefix("i=") {
                    iterations = value.parse::<i32>().ok();
                }
            }
            let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
                return Err(ScramError::Malformed("server-first-message"));
            };
            // The server's nonce is ours with its own part after it (RFC
            // 5802): one that only repeats ours adds no freshness of the
            // server's, so a replayed exchange would verify.
            if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
                return Err(ScramError::NonceMismatch);
            }
            // The iteration count is the server's to choose, and the client
            // pays for it: below Kafka's minimum (Kafka's ScramSaslClient
            // refuses it too) the password is cheap to guess from a
            // captured exchange; above Kafka's maximum a hostile broker
            // keeps the admin command hashing for as long as it likes.
            if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
                return Err(ScramError::Iterations(iterations));
            }
            let iterations = iterations.unsigned_abs();
            let mechanism = self.mechanism;
            let salted = mechanism.salted_password(self.password.as_bytes(), &salt, iterations);
            let client_key = mechanism.hmac(&salted, b"Client Key");
            let stored_key = mechanism.hash(&client_key);
            let without_proof = format!("c=biws,r={nonce}");
            let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
            let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(key, signature)| key ^ signature)
                .collect();
            let server_key = mechanism.hmac(&salted, b"Server Key");
            let server_signature = mechanism.hmac(&server_key, auth_message.as_bytes());
            let message = format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes();
            Ok((
                message,
                format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::client::ScramClient;
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, with its fixed nonces.
    #[test]
    fn rfc_7677_example_verifies() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential =
            ScramCredential::with_salt(ScramMechanism::Sha256, "pencil", salt, 4096).unwrap();
        let state = ScramServerFirst {
            mechanism: ScramMechanism::Sha256,
            username: "user".into(),
            credential: Some(credential),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                           s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let final_message = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            server_final(&state, final_message).unwrap(),
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    fn exchange(
        mechanism: ScramMechanism,
        stored_password: &str,
        given_password: &str,
    ) -> Result<(), ScramError> {
        let credential = ScramCredential::new(mechanism, stored_password, 4096).unwrap();
        let (client, first) = ScramClient::start(mechanism, "al,i=ce", given_password).unwrap();
        let (state, server_first_message) = server_first(mechanism, &first, |user| {
            (user == "al,i=ce").then(|| credential.clone())
        })?;
        assert_eq!(state.username, "al,i=ce");
        let (final_message, expected) = client.respond(&server_first_message).unwrap();
        let server_final_message = server_final(&state, &final_message)?;
        assert_eq!(server_final_message, expected);
        Ok(())
    }

    #[test]
    fn the_right_password_authenticates_with_both_mechanisms() {
        for mechanism in ScramMechanism::ALL {
            exchange(mechanism, "s3cret", "s3cret").unwrap();
        }
    }

    #[test]
    fn a_wrong_password_is_refused() {
        for mechanism in ScramMechanism::ALL {
            assert_eq!(
                exchange(mechanism, "s3cret", "guess"),
                Err(ScramError::InvalidCredentials)
            );
        }
    }

    #[test]
    fn an_unknown_user_fails_only_at_the_proof() {
        let mechanism = ScramMechanism::Sha512;
        let (client, first) = ScramClient::start(mechanism, "nobody", "x").unwrap();
        let (state, message) = server_first(mechanism, &first, |_| None).unwrap();
        let (final_message, _) = client.respond(&message).unwrap();
        assert_eq!(
            server_final(&state, &final_message),
            Err(ScramError::InvalidCredentials)
        );
    }

    #[test]
    fn malformed_messages_and_extensions_are_refused() {
        let lookup = |_: &str| None;
        for message in [
            &b""[..],
            b"n",
            b"x,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=,r=b",
            b"p=tls-unique,,n=a,r=b",
            b"\xff\xfe",
        ] {
            assert!(
                server_first(ScramMechanism::Sha256, message, lookup).is_err(),
                "{message:?}"
            );
        }
        assert!(matches!(
            server_first(ScramMechanism::Sha256, b"n,,n=a,r=b,tokenauth=true", lookup),
            Err(ScramError::UnsupportedExtension(_))
        ));
    }

    #[test]
    fn a_replayed_or_foreign_nonce_is_refused() {
        let mechanism = ScramMechanism::Sha256;
        let credential = ScramCredential::new(mechanism, "pw", 4096).unwrap();
        let (_, first) = ScramClient::start(mechanism, "u", "pw").unwrap();
        let (state, _) = server_first(mechanism, &first, |_| Some(credential.clone())).unwrap();
        assert_eq!(
            server_final(&state, b"c=biws,r=other,p=AAAA"),
            Err(ScramError::NonceMismatch)
        );
        // librdkafka before 2.1 repeats its own nonce in front; Kafka
        // accepts that (the nonce ends with the server's).
        let repeated = format!("c=biws,r=xyz{},p=AAAA", state.nonce);
        assert_eq!(
            server_final(&state, repeated.as_bytes()),
            Err(ScramError::InvalidCredentials)
        );
    }

    /// The client refuses a server-first-message whose nonce does not
    /// extend its own (a foreign one, or its own repeated with nothing
    /// of the server's) and an iteration count outside Kafka's bounds
    /// (too few: cheap to guess; too many: a hostile broker keeps the
    /// client hashing), before it computes anything.
    #[test]
    fn the_client_refuses_a_server_nonce_without_the_servers_part_and_bad_iterations() {
        let (client, first) = ScramClient::start(ScramMechanism::Sha512, "u", "pw").unwrap();
        let first = String::from_utf8(first).unwrap();
        let (_, client_nonce) = first.rsplit_once("r=").unwrap();
        let salt = BASE64.encode(b"salt");
        let answer = |nonce: &str, iterations: &str| {
            let server_first = format!("r={nonce},s={salt},i={iterations}");
            client.respond(server_first.as_bytes()).map(|_| ())
        };

        let good = format!("{client_nonce}server");
        assert_eq!(answer(&good, "4096"), Ok(()));
        assert_eq!(answer(&good, "16384"), Ok(()));
        for nonce in [client_nonce, "other", &format!("x{client_nonce}")] {
            assert_eq!(
                answer(nonce, "4096"),
                Err(ScramError::NonceMismatch),
                "{nonce}"
            );
        }
        for (iterations, refused) in [("4095", 4095), ("16385", 16385), ("0", 0), ("-1", -1)] {
            assert_eq!(
                answer(&good, iterations),
                Err(ScramError::Iterations(refused))
            );
        }
        assert_eq!(
            answer(&good, "4294967295"),
            Err(ScramError::Malformed("server-first-message"))
        );
    }

    #[test]
    fn plain_passwords_are_checked_against_the_salted_credential() {
        let credential = ScramCredential::new(ScramMechanism::Sha512, "pw", 4096).unwrap();
        assert!(credential.matches_password(ScramMechanism::Sha512, "pw"));
        assert!(!credential.matches_password(ScramMechanism::Sha512, "pW"));
    }

    #[test]
    fn iterations_outside_kafkas_bounds_are_refused() {
        assert_eq!(
            ScramCredential::new(ScramMechanism::Sha256, "pw", 100),
            Err(ScramError::Iterations(100))
        );
    }
}
