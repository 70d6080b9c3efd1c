//! The connection loop's SASL glue: SaslHandshake and SaslAuthenticate
//! requests (and the raw tokens after a SaslHandshake v0) fed to the
//! connection's `auth::sasl::SaslSession`, answered as Kafka does. The
//! credentials come from the controller image this broker has applied.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::auth::credentials;
use crate::auth::plain::PasswordCheck;
use crate::auth::sasl::{SaslFailure, SaslSession, Step};
use crate::controller::MetadataImage;
use crate::protocol::{Request, ResponseFrame, encode_response};

/// Largest frame read from a connection that has not authenticated yet
/// (Kafka's sasl.server.max.receive.size): a larger size prefix closes the
/// connection before anything is allocated.
pub const UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 512 * 1024;

/// What the connection does after a SASL request.
pub struct Outcome {
    pub answer: ResponseFrame,
    /// `Some(reason)`: close the connection once the answer is written.
    pub close: Option<String>,
}

/// Whether a request may come before authentication completes.
pub fn allowed_before_authentication(api_key: ApiKey) -> bool {
    matches!(
        api_key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

thread_local! {
    /// This shard's PLAIN password checks, one at a time (`check_password`).
    static PASSWORD_CHECKS: std::rc::Rc<futures_util::lock::Mutex<()>> =
        std::rc::Rc::new(futures_util::lock::Mutex::new(()));
}

/// Run a PLAIN password check (PBKDF2 over the user's credential: up to
/// 16,384 rounds of HMAC-SHA-512, milliseconds) on the runtime's blocking
/// pool, one check at a time per shard: the shard serves its other
/// connections meanwhile, and a flood of logins takes one blocking thread
/// per shard, not one per connection. Kafka checks PLAIN against plain
/// passwords; Sluice keeps only salted credentials, so this cost is ours.
async fn check_password(check: &PasswordCheck) -> bool {
    let turn = PASSWORD_CHECKS.with(std::rc::Rc::clone);
    let _turn = turn.lock().await;
    let check = check.clone();
    match compio::runtime::spawn_blocking(move || check.run()).await {
        Ok(matched) => matched,
        Err(_) => {
            tracing::error!("a PLAIN password check panicked; the login is refused");
            false
        }
    }
}

/// `session.authenticate`, with a PLAIN password checked off the shard
/// thread (`check_password`).
async fn authenticate(
    session: &mut SaslSession,
    token: &[u8],
    raw: bool,
    image: &MetadataImage,
) -> Result<Step, SaslFailure> {
    match session.authenticate(token, raw, |user, mechanism| {
        credentials::lookup(image, user, mechanism)
    })? {
        Step::CheckPassword(check) => {
            let matched = check_password(&check).await;
            session.finish_password(&check, matched)
        }
        step => Ok(step),
    }
}

/// Answer a SaslHandshake or SaslAuthenticate request. `session` is
/// `None` on a listener without SASL, where both are out of place.
pub async fn answer(
    session: Option<&mut SaslSession>,
    request: Request,
    image: &MetadataImage,
) -> anyhow::Result<Outcome> {
    let Request {
        api_key,
        version,
        header,
        body,
    } = request;
    let correlation_id = header.correlation_id;
    let not_sasl = || SaslFailure::IllegalState("this listener does not use SASL".to_string());
    let (body, failure) = match body {
        RequestKind::SaslHandshake(request) => {
            let (mechanisms, result) = match session {
                Some(session) => {
                    let result = session.handshake(version, request.mechanism.as_str());
                    (session.enabled_names(), result)
                }
                None => (Vec::new(), Err(not_sasl())),
            };
            let response = SaslHandshakeResponse::default()
                .with_error_code(result.as_ref().err().map_or(0, SaslFailure::error_code))
                .with_mechanisms(
                    mechanisms
                        .into_iter()
                        .map(StrBytes::from_static_str)
                        .collect(),
                );
            (ResponseKind::SaslHandshake(response), result.err())
        }
        RequestKind::SaslAuthenticate(request) => {
            let result = match session {
                Some(session) => authenticate(session, &request.auth_bytes, false, image).await,
                None => Err(not_sasl()),
            };
            let response = match &result {
                Ok(Step::Challenge(token)) | Ok(Step::Complete(token)) => {
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token.clone()))
                }
                Ok(Step::CheckPassword(_)) => unreachable!("checked by authenticate"),
                Err(failure) => SaslAuthenticateResponse::default()
                    .with_error_code(failure.error_code())
                    .with_error_message(Some(StrBytes::from_string(failure.message().to_string()))),
            };
            (ResponseKind::SaslAuthenticate(response), result.err())
        }
        other => anyhow::bail!("not a SASL request: {other:?}"),
    };
    Ok(Outcome {
        answer: encode_response(api_key, version, correlation_id, &body)?,
        close: failure.map(|failure| failure.message().to_string()),
    })
}

/// A raw token after SaslHandshake v0: the answer is a raw token too (its
/// size, then its bytes). Kafka closes the connection on failure without
/// an answer; so does this.
pub async fn raw_token(session: &mut SaslSession, token: &[u8], image: &MetadataImage) -> Outcome {
    match authenticate(session, token, true, image).await {
        Ok(Step::CheckPassword(_)) => unreachable!("checked by authenticate"),
        Ok(Step::Challenge(token)) | Ok(Step::Complete(token)) => {
            let mut frame = BytesMut::with_capacity(4 + token.len());
            frame.put_u32(u32::try_from(token.len()).unwrap_or(0));
            frame.put_slice(&token);
            Outcome {
                answer: ResponseFrame {
                    parts: vec![frame.freeze()],
                },
                close: None,
            }
        }
        Err(failure) => Outcome {
            answer: ResponseFrame { parts: Vec::new() },
            close: Some(failure.message().to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::auth::plain;
    use crate::auth::scram::{ITERATIONS_MAX, ScramCredential};

    /// The largest PBKDF2 a login can ask for: the shard keeps running its
    /// other tasks while it is computed (elsewhere), and the answer is the
    /// check's.
    #[test]
    fn a_password_check_leaves_the_shard_to_its_other_work() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let lookup = |user: &str, mechanism| {
                (user == "alice")
                    .then(|| ScramCredential::new(mechanism, "pw", ITERATIONS_MAX).unwrap())
            };
            for (token, expected) in [(&b"\0alice\0pw"[..], true), (b"\0alice\0nope", false)] {
                let check = plain::prepare(token, lookup).unwrap();
                let other_ran = Rc::new(Cell::new(false));
                let other = compio::runtime::spawn({
                    let other_ran = Rc::clone(&other_ran);
                    async move { other_ran.set(true) }
                });
                assert_eq!(check_password(&check).await, expected);
                assert!(
                    other_ran.get(),
                    "another task of the shard ran while the password was checked"
                );
                other.await.unwrap();
            }
        });
    }
}
