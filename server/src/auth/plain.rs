//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL password`, checked
//! against the user's salted SCRAM credentials (Kafka's PLAIN reads
//! passwords from a JAAS file; Sluice keeps no passwords, so a user
//! created for SCRAM logs in with PLAIN too). PLAIN sends the password
//! itself: use it over TLS (SASL_SSL) only. Pure; the password check is
//! a value the caller runs where it chooses (`PasswordCheck::run`).

use super::scram::{ScramCredential, ScramMechanism};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("malformed PLAIN token")]
    Malformed,
    #[error("the authorization id differs from the user name")]
    AuthorizationId,
    /// Wrong password or unknown user (not told apart).
    #[error("invalid credentials")]
    InvalidCredentials,
}

/// A parsed PLAIN token and the credential to check it against: the
/// expensive half (PBKDF2 over the credential's iterations, milliseconds
/// at the largest), kept apart so the connection can run it off the shard
/// thread (`net::sasl`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordCheck {
    pub username: String,
    password: String,
    credential: Option<(ScramMechanism, ScramCredential)>,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        formatter
            .debug_struct("PasswordCheck")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl PasswordCheck {
    /// Whether the password matches (an unknown user never does, after a
    /// check as long as a real one: the time taken does not tell whether
    /// the user exists, as SCRAM's made-up salt does not).
    pub fn run(&self) -> bool {
        match &self.credential {
            Some((mechanism, credential)) => {
                credential.matches_password(*mechanism, &self.password)
            }
            None => {
                if let Some(stand_in) = unknown_user_credential() {
                    let _ = stand_in.matches_password(ScramMechanism::Sha512, &self.password);
                }
                false
            }
        }
    }
}

/// A credential no password is checked against for real, at the usual
/// iteration count (made once per process).
fn unknown_user_credential() -> Option<&'static ScramCredential> {
    static STAND_IN: std::sync::OnceLock<Option<ScramCredential>> = std::sync::OnceLock::new();
    STAND_IN
        .get_or_init(|| {
            ScramCredential::new(
                ScramMechanism::Sha512,
                "no user has this password",
                super::scram::ITERATIONS_MIN,
            )
            .ok()
        })
        .as_ref()
}

/// Parse a PLAIN token and find the user's credential (`lookup`: a user's
/// credential for a mechanism; SHA-512 is tried first).
pub fn prepare(
    token: &[u8],
    lookup: impl Fn(&str, ScramMechanism) -> Option<ScramCredential>,
) -> Result<PasswordCheck, PlainError> {
    let text = std::str::from_utf8(token).map_err(|_| PlainError::Malformed)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed);
    };
    if username.is_empty() || password.is_empty() {
        return Err(PlainError::Malformed);
    }
    if !authzid.is_empty() && authzid != username {
        return Err(PlainError::AuthorizationId);
    }
    let credential = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|mechanism| Some((mechanism, lookup(username, mechanism)?)));
    Ok(PasswordCheck {
        username: username.to_string(),
        password: password.to_string(),
        credential,
    })
}

/// Check a PLAIN token at once; `Ok` is the user name.
#[cfg(test)]
pub fn authenticate(
    token: &[u8],
    lookup: impl Fn(&str, ScramMechanism) -> Option<ScramCredential>,
) -> Result<String, PlainError> {
    let check = prepare(token, lookup)?;
    if check.run() {
        Ok(check.username)
    } else {
        Err(PlainError::InvalidCredentials)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn lookup(user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (user == "alice" && mechanism == ScramMechanism::Sha256)
            .then(|| ScramCredential::new(mechanism, "wonderland", 4096).unwrap())
    }

    #[test]
    fn the_right_password_authenticates() {
        assert_eq!(
            authenticate(b"\0alice\0wonderland", lookup),
            Ok("alice".to_string())
        );
        assert_eq!(
            authenticate(b"alice\0alice\0wonderland", lookup),
            Ok("alice".to_string())
        );
    }

    #[test]
    fn a_check_never_shows_the_password() {
        let check = prepare(b"\0alice\0wonderland", lookup).unwrap();
        assert!(!format!("{check:?}").contains("wonderland"));
    }

    #[test]
    fn wrong_passwords_unknown_users_and_garbage_are_refused() {
        assert_eq!(
            authenticate(b"\0alice\0looking-glass", lookup),
            Err(PlainError::InvalidCredentials)
        );
        assert_eq!(
            authenticate(b"\0bob\0wonderland", lookup),
            Err(PlainError::InvalidCredentials)
        );
        assert_eq!(
            authenticate(b"bob\0alice\0wonderland", lookup),
            Err(PlainError::AuthorizationId)
        );
        for token in [&b""[..], b"alice", b"\0alice", b"\0\0pw", b"a\0b\0c\0d"] {
            assert_eq!(authenticate(token, lookup), Err(PlainError::Malformed));
        }
    }
}
