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

/// Answer a SaslHandshake or SaslAuthenticate request. `session` is
/// `None` on a listener without SASL, where both are out of place.
pub fn answer(
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
                Some(session) => {
                    session.authenticate(&request.auth_bytes, false, |user, mechanism| {
                        credentials::lookup(image, user, mechanism)
                    })
                }
                None => Err(not_sasl()),
            };
            let response = match &result {
                Ok(Step::Challenge(token)) | Ok(Step::Complete(token)) => {
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token.clone()))
                }
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
pub fn raw_token(session: &mut SaslSession, token: &[u8], image: &MetadataImage) -> Outcome {
    match session.authenticate(token, true, |user, mechanism| {
        credentials::lookup(image, user, mechanism)
    }) {
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
