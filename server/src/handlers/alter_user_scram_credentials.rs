//! AlterUserScramCredentials (KIP-554): create, replace or delete users'
//! salted SCRAM credentials. The client salts the password itself
//! (`salted_password` = PBKDF2 of it), so the password never reaches the
//! broker; the broker derives StoredKey and ServerKey and writes them
//! through the controller into the replicated metadata, then answers once
//! its own image holds the change (so the next authentication here sees
//! it). Per-user errors as Kafka: DUPLICATE_RESOURCE for a user named
//! twice, UNSUPPORTED_SASL_MECHANISM, UNACCEPTABLE_CREDENTIAL (iterations,
//! empty name or salt), RESOURCE_NOT_FOUND for deleting what is not there.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::alter_user_scram_credentials_request::AlterUserScramCredentialsRequest;
use kafka_protocol::messages::alter_user_scram_credentials_response::{
    AlterUserScramCredentialsResponse, AlterUserScramCredentialsResult,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::credentials;
use crate::auth::scram::{ITERATIONS_MAX, ITERATIONS_MIN, ScramCredential, ScramMechanism};
use crate::controller::records::UserScramCredential;
use crate::handlers::Reply;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: AlterUserScramCredentialsRequest) -> Reply {
    let image = shard.metadata.controller().image();
    let mut errors: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for name in request
        .deletions
        .iter()
        .map(|deletion| &deletion.name)
        .chain(request.upsertions.iter().map(|upsertion| &upsertion.name))
    {
        *counts.entry(name.to_string()).or_default() += 1;
    }
    for (name, count) in &counts {
        if *count > 1 {
            errors.insert(
                name.clone(),
                (
                    ResponseError::DuplicateResource,
                    "A user credential cannot be altered twice in the same request".to_string(),
                ),
            );
        }
    }
    let mut deletions = Vec::new();
    for deletion in &request.deletions {
        let name = deletion.name.to_string();
        if errors.contains_key(&name) {
            continue;
        }
        let Some(mechanism) = ScramMechanism::from_code(deletion.mechanism) else {
            errors.insert(
                name,
                (
                    ResponseError::UnsupportedSaslMechanism,
                    "Unknown SCRAM mechanism".to_string(),
                ),
            );
            continue;
        };
        if credentials::lookup(&image, &name, mechanism).is_none() {
            errors.insert(
                name,
                (
                    ResponseError::ResourceNotFound,
                    "Attempt to delete a user credential that does not exist".to_string(),
                ),
            );
            continue;
        }
        deletions.push((name, u8::try_from(mechanism.code()).unwrap_or(0)));
    }
    let mut upsertions: Vec<UserScramCredential> = Vec::new();
    for upsertion in &request.upsertions {
        let name = upsertion.name.to_string();
        if errors.contains_key(&name) {
            continue;
        }
        let Some(mechanism) = ScramMechanism::from_code(upsertion.mechanism) else {
            errors.insert(
                name,
                (
                    ResponseError::UnsupportedSaslMechanism,
                    "Unknown SCRAM mechanism".to_string(),
                ),
            );
            continue;
        };
        let refusal = if name.is_empty() {
            Some("Username must not be empty".to_string())
        } else if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&upsertion.iterations) {
            Some(format!(
                "Iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}"
            ))
        } else if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
            Some("Salt and salted password must not be empty".to_string())
        } else {
            None
        };
        if let Some(message) = refusal {
            errors.insert(name, (ResponseError::UnacceptableCredential, message));
            continue;
        }
        let credential = ScramCredential::from_salted_password(
            mechanism,
            &upsertion.salted_password,
            upsertion.salt.to_vec(),
            upsertion.iterations,
        );
        upsertions.push(credentials::record(&name, mechanism, credential));
    }
    let altered: Vec<String> = deletions
        .iter()
        .map(|(name, _)| name.clone())
        .chain(upsertions.iter().map(|credential| credential.name.clone()))
        .collect();
    if !altered.is_empty() {
        let controller = shard.metadata.controller().clone();
        let outcome = match controller
            .alter_scram_credentials(upsertions, deletions)
            .await
        {
            Ok(offset) => controller.wait_applied(offset).await,
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            for name in altered {
                errors.insert(
                    name,
                    (
                        ResponseError::UnknownServerError,
                        format!("controller: {error}"),
                    ),
                );
            }
        }
    }
    let results = counts
        .keys()
        .map(|name| {
            let mut result = AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(name.clone()));
            if let Some((error, message)) = errors.get(name) {
                result = result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message.clone())));
            }
            result
        })
        .collect();
    Reply::Body(Box::new(ResponseKind::AlterUserScramCredentials(
        AlterUserScramCredentialsResponse::default().with_results(results),
    )))
}
