//! DescribeUserScramCredentials (KIP-554): which SCRAM mechanisms (and
//! iterations) each user has credentials for, from this broker's metadata
//! image. Never salts or keys. No users asked (null or empty): every user
//! with a credential. A user asked for twice is DUPLICATE_RESOURCE; one
//! without credentials RESOURCE_NOT_FOUND.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResponse, DescribeUserScramCredentialsResult,
};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::shard::Shard;

pub fn handle(shard: &Shard, request: DescribeUserScramCredentialsRequest) -> Reply {
    let image = shard.metadata.controller().image();
    let mut by_user: BTreeMap<&str, Vec<CredentialInfo>> = BTreeMap::new();
    for credential in image.scram_credentials() {
        by_user.entry(&credential.name).or_default().push(
            CredentialInfo::default()
                .with_mechanism(i8::try_from(credential.mechanism).unwrap_or(0))
                .with_iterations(credential.iterations),
        );
    }
    let asked: Vec<String> = request
        .users
        .unwrap_or_default()
        .into_iter()
        .map(|user| user.name.to_string())
        .collect();
    let results = if asked.is_empty() {
        by_user
            .into_iter()
            .map(|(user, infos)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user.to_string()))
                    .with_credential_infos(infos)
            })
            .collect()
    } else {
        let mut seen = std::collections::BTreeSet::new();
        let duplicates: std::collections::BTreeSet<&String> =
            asked.iter().filter(|user| !seen.insert(*user)).collect();
        let mut answered = std::collections::BTreeSet::new();
        asked
            .iter()
            .filter(|user| answered.insert(*user))
            .map(|user| {
                let result = DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user.clone()));
                if duplicates.contains(user) {
                    result
                        .with_error_code(ResponseError::DuplicateResource.code())
                        .with_error_message(Some(StrBytes::from_static_str(
                            "Cannot describe SCRAM credentials for the same user twice in a \
                             single request",
                        )))
                } else {
                    match by_user.get(user.as_str()) {
                        Some(infos) => result.with_credential_infos(infos.clone()),
                        None => result
                            .with_error_code(ResponseError::ResourceNotFound.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "Attempt to describe a user credential that does not exist",
                            ))),
                    }
                }
            })
            .collect()
    };
    Reply::Body(Box::new(ResponseKind::DescribeUserScramCredentials(
        DescribeUserScramCredentialsResponse::default().with_results(results),
    )))
}
