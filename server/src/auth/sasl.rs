//! One connection's SASL exchange, as Kafka's SaslServerAuthenticator
//! runs it. Pure: the connection loop (`net::sasl`) feeds it the
//! decoded requests and writes what it answers.
//!
//! Order: ApiVersions (any number), then SaslHandshake naming a mechanism,
//! then tokens until the mechanism completes. After a SaslHandshake v0 the
//! tokens come raw (a 4-byte size and the bytes, no Kafka header); after
//! v1 they come in SaslAuthenticate requests. Anything out of order is
//! ILLEGAL_SASL_STATE; a failed authentication is
//! SASL_AUTHENTICATION_FAILED; both end the connection, as in Kafka.
//! Re-authentication (KIP-368) is not offered: the session lifetime
//! answered is 0.

use super::Principal;
use super::plain;
use super::scram::{self, ScramCredential, ScramMechanism, ScramServerFirst};

/// A SASL mechanism the broker serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(scram) => scram.name(),
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name().eq_ignore_ascii_case(name))
    }
}

/// Why an exchange stops; the connection is closed after the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslFailure {
    /// ILLEGAL_SASL_STATE (34): a request out of order.
    IllegalState(String),
    /// UNSUPPORTED_SASL_MECHANISM (33), from SaslHandshake.
    UnsupportedMechanism(String),
    /// SASL_AUTHENTICATION_FAILED (58).
    AuthenticationFailed(String),
}

impl SaslFailure {
    pub fn error_code(&self) -> i16 {
        match self {
            SaslFailure::IllegalState(_) => 34,
            SaslFailure::UnsupportedMechanism(_) => 33,
            SaslFailure::AuthenticationFailed(_) => 58,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            SaslFailure::IllegalState(message)
            | SaslFailure::UnsupportedMechanism(message)
            | SaslFailure::AuthenticationFailed(message) => message,
        }
    }
}

/// Kafka's answer to a wrong password or an unknown user.
fn invalid_credentials(mechanism: &str) -> SaslFailure {
    SaslFailure::AuthenticationFailed(format!(
        "Authentication failed during authentication due to invalid credentials with SASL \
         mechanism {mechanism}"
    ))
}

/// What a token led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge; more tokens follow.
    Challenge(Vec<u8>),
    /// Authenticated: send this last token (possibly empty).
    Complete(Vec<u8>),
    /// PLAIN: run this check (`PasswordCheck::run`, PBKDF2) and give its
    /// outcome to [`SaslSession::finish_password`]; nothing is answered
    /// until then.
    CheckPassword(plain::PasswordCheck),
}

#[derive(Debug)]
enum State {
    AwaitingHandshake,
    Handshaken {
        mechanism: Mechanism,
        raw: bool,
    },
    ScramFirstSent {
        state: Box<ScramServerFirst>,
        raw: bool,
    },
    /// A PLAIN token whose password is being checked.
    PasswordPending,
    Authenticated(Principal),
    Failed,
}

/// The SASL state of one connection on a SASL listener.
#[derive(Debug)]
pub struct SaslSession {
    enabled: Vec<Mechanism>,
    state: State,
}

impl SaslSession {
    pub fn new(enabled: Vec<Mechanism>) -> SaslSession {
        SaslSession {
            enabled,
            state: State::AwaitingHandshake,
        }
    }

    /// The mechanisms SaslHandshake lists.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        self.enabled
            .iter()
            .map(|mechanism| mechanism.name())
            .collect()
    }

    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            State::Authenticated(principal) => Some(principal),
            _ => None,
        }
    }

    /// After a SaslHandshake v0: the next frame is a raw token.
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.state,
            State::Handshaken { raw: true, .. } | State::ScramFirstSent { raw: true, .. }
        )
    }

    /// SaslHandshake (v0: raw tokens follow; v1: SaslAuthenticate).
    pub fn handshake(&mut self, version: i16, mechanism: &str) -> Result<(), SaslFailure> {
        if !matches!(self.state, State::AwaitingHandshake) {
            self.state = State::Failed;
            return Err(SaslFailure::IllegalState(
                "SaslHandshake is accepted only once, before authenticating".to_string(),
            ));
        }
        match Mechanism::from_name(mechanism).filter(|known| self.enabled.contains(known)) {
            Some(mechanism) => {
                self.state = State::Handshaken {
                    mechanism,
                    raw: version == 0,
                };
                Ok(())
            }
            None => {
                self.state = State::Failed;
                Err(SaslFailure::UnsupportedMechanism(format!(
                    "unsupported SASL mechanism {:?}; enabled: {}",
                    mechanism.chars().take(64).collect::<String>(),
                    self.enabled_names().join(", ")
                )))
            }
        }
    }

    /// One token (raw, or from a SaslAuthenticate request when `raw` is
    /// false). `lookup` finds a user's credential for a mechanism.
    pub fn authenticate(
        &mut self,
        token: &[u8],
        raw: bool,
        lookup: impl Fn(&str, ScramMechanism) -> Option<ScramCredential>,
    ) -> Result<Step, SaslFailure> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let expected_raw = match &state {
            State::Handshaken { raw, .. } | State::ScramFirstSent { raw, .. } => *raw,
            _ => {
                return Err(SaslFailure::IllegalState(
                    "SaslAuthenticate before SaslHandshake, or after authentication".to_string(),
                ));
            }
        };
        if raw != expected_raw {
            return Err(SaslFailure::IllegalState(
                "SaslAuthenticate after a SaslHandshake v0 (raw tokens expected)".to_string(),
            ));
        }
        match state {
            State::Handshaken {
                mechanism: Mechanism::Plain,
                ..
            } => match plain::prepare(token, lookup) {
                Ok(check) => {
                    self.state = State::PasswordPending;
                    Ok(Step::CheckPassword(check))
                }
                Err(error) => Err(SaslFailure::AuthenticationFailed(format!(
                    "Authentication failed: {error}"
                ))),
            },
            State::Handshaken {
                mechanism: Mechanism::Scram(mechanism),
                raw,
            } => match scram::server_first(mechanism, token, |user| lookup(user, mechanism)) {
                Ok((state, message)) => {
                    self.state = State::ScramFirstSent {
                        state: Box::new(state),
                        raw,
                    };
                    Ok(Step::Challenge(message))
                }
                Err(error) => Err(SaslFailure::AuthenticationFailed(format!(
                    "Authentication failed: {error}"
                ))),
            },
            State::ScramFirstSent { state, .. } => match scram::server_final(&state, token) {
                Ok(message) => {
                    self.state = State::Authenticated(Principal::user(state.username.clone()));
                    Ok(Step::Complete(message))
                }
                Err(scram::ScramError::InvalidCredentials) => {
                    Err(invalid_credentials(state.mechanism.name()))
                }
                Err(error) => Err(SaslFailure::AuthenticationFailed(format!(
                    "Authentication failed: {error}"
                ))),
            },
            State::AwaitingHandshake
            | State::PasswordPending
            | State::Authenticated(_)
            | State::Failed => {
                unreachable!("refused above")
            }
        }
    }

    /// The outcome of a [`Step::CheckPassword`]: authenticated as its user
    /// if `matched`.
    pub fn finish_password(
        &mut self,
        check: &plain::PasswordCheck,
        matched: bool,
    ) -> Result<Step, SaslFailure> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        if !matches!(state, State::PasswordPending) {
            return Err(SaslFailure::IllegalState(
                "no PLAIN password is being checked".to_string(),
            ));
        }
        if !matched {
            return Err(invalid_credentials("PLAIN"));
        }
        self.state = State::Authenticated(Principal::user(check.username.clone()));
        Ok(Step::Complete(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::auth::scram::client::ScramClient;

    fn lookup(user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (user == "alice").then(|| ScramCredential::new(mechanism, "pw", 4096).unwrap())
    }

    #[test]
    fn scram_sha_512_over_sasl_authenticate_gives_the_user_principal() {
        let mut session = SaslSession::new(Mechanism::ALL.to_vec());
        session.handshake(1, "SCRAM-SHA-512").unwrap();
        assert!(!session.expects_raw_token());
        // One credential for the whole exchange (each lookup salts anew).
        let credential = lookup("alice", ScramMechanism::Sha512).unwrap();
        let fixed = |user: &str, _| (user == "alice").then(|| credential.clone());
        let (client, first) = ScramClient::start(ScramMechanism::Sha512, "alice", "pw").unwrap();
        let Step::Challenge(challenge) = session.authenticate(&first, false, fixed).unwrap() else {
            panic!("expected a challenge");
        };
        let (last, expected) = client.respond(&challenge).unwrap();
        assert_eq!(
            session.authenticate(&last, false, fixed).unwrap(),
            Step::Complete(expected)
        );
        assert_eq!(session.principal(), Some(&Principal::user("alice")));
        // Nothing more is accepted.
        assert!(matches!(
            session.handshake(1, "PLAIN"),
            Err(SaslFailure::IllegalState(_))
        ));
    }

    /// `authenticate`, with a PLAIN password check run at once.
    fn authenticate_now(
        session: &mut SaslSession,
        token: &[u8],
        raw: bool,
    ) -> Result<Step, SaslFailure> {
        match session.authenticate(token, raw, lookup)? {
            Step::CheckPassword(check) => {
                assert!(
                    session.principal().is_none() && !session.expects_raw_token(),
                    "nothing is decided while the password is checked"
                );
                let matched = check.run();
                session.finish_password(&check, matched)
            }
            step => Ok(step),
        }
    }

    #[test]
    fn a_v0_handshake_expects_raw_tokens() {
        let mut session = SaslSession::new(Mechanism::ALL.to_vec());
        session.handshake(0, "PLAIN").unwrap();
        assert!(session.expects_raw_token());
        assert_eq!(
            authenticate_now(&mut session, b"\0alice\0pw", true),
            Ok(Step::Complete(Vec::new()))
        );
        assert_eq!(session.principal(), Some(&Principal::user("alice")));
        assert!(!session.expects_raw_token());
    }

    #[test]
    fn a_wrong_password_fails_with_kafkas_message() {
        let mut session = SaslSession::new(Mechanism::ALL.to_vec());
        session.handshake(1, "PLAIN").unwrap();
        let failure = authenticate_now(&mut session, b"\0alice\0nope", false).unwrap_err();
        assert_eq!(failure.error_code(), 58);
        assert!(failure.message().contains("invalid credentials"));
        assert_eq!(session.principal(), None);
    }

    #[test]
    fn out_of_order_requests_are_illegal_and_unknown_mechanisms_unsupported() {
        let mut session = SaslSession::new(vec![Mechanism::Scram(ScramMechanism::Sha512)]);
        assert_eq!(
            session
                .authenticate(b"x", false, lookup)
                .unwrap_err()
                .error_code(),
            34
        );
        let mut session = SaslSession::new(vec![Mechanism::Scram(ScramMechanism::Sha512)]);
        assert_eq!(session.handshake(1, "PLAIN").unwrap_err().error_code(), 33);
        let mut session = SaslSession::new(Mechanism::ALL.to_vec());
        session.handshake(0, "PLAIN").unwrap();
        assert_eq!(
            session
                .authenticate(b"\0alice\0pw", false, lookup)
                .unwrap_err()
                .error_code(),
            34
        );
    }
}
