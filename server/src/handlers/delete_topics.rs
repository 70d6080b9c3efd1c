//! DeleteTopics: by name (v1..5) or by name or topic id (v6).
//!
//! shard::topics::delete_topic removes the topic from the metadata first
//! (so no new request finds it), then each owning shard closes the logs and
//! removes their directories. Ok means both happened.

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use std::collections::HashMap;
use std::rc::Rc;

use futures_util::future::join_all;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::handlers::create_topics::{AdminError, topic_error};
use crate::metadata::MetadataError;
use crate::shard::Shard;
use crate::shard::topics::{TopicError, delete_topic, delete_topic_with_id};

/// What the client named: a topic name or a topic id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    Name(String),
    Id(uuid::Uuid),
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: DeleteTopicsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    // Each entry: what the client sent (echoed back) and what it names.
    let requested: Vec<(Option<String>, uuid::Uuid, Result<Target, AdminError>)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|topic| {
                let name = topic.name.map(|name| name.0.as_str().to_string());
                let target = match (&name, topic.topic_id.is_nil()) {
                    (Some(name), true) => Ok(Target::Name(name.clone())),
                    (None, false) => Ok(Target::Id(topic.topic_id)),
                    (Some(_), false) => Err((
                        ResponseError::InvalidRequest,
                        "Give either a topic name or a topic id, not both.".to_string(),
                    )),
                    (None, true) => Err((
                        ResponseError::InvalidRequest,
                        "Neither a topic name nor a topic id was given.".to_string(),
                    )),
                };
                (name, topic.topic_id, target)
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| {
                let name = name.0.as_str().to_string();
                (
                    Some(name.clone()),
                    uuid::Uuid::nil(),
                    Ok(Target::Name(name)),
                )
            })
            .collect()
    };
    let mut occurrences: HashMap<Target, usize> = HashMap::new();
    for (_, _, target) in &requested {
        if let Ok(target) = target {
            *occurrences.entry(target.clone()).or_default() += 1;
        }
    }
    // Every topic at once, as CreateTopics (each waits for the controller).
    let outcomes = join_all(requested.iter().map(|(_, _, target)| {
        let occurrences = &occurrences;
        async move {
            match target {
                Ok(target) if occurrences.get(target).copied().unwrap_or(0) > 1 => Err((
                    ResponseError::InvalidRequest,
                    match target {
                        Target::Name(name) => {
                            format!("The topic {name} is listed more than once.")
                        }
                        Target::Id(id) => format!("The topic id {id} is listed more than once."),
                    },
                )),
                Ok(target) => delete_one(shard, target, access).await,
                Err(error) => Err(error.clone()),
            }
        }
    }))
    .await;
    let mut responses = Vec::with_capacity(requested.len());
    for ((name, id, _), outcome) in requested.into_iter().zip(outcomes) {
        let result = DeletableTopicResult::default().with_topic_id(id);
        let result = match outcome {
            Ok((deleted_name, deleted_id)) => result
                .with_name(Some(TopicName(StrBytes::from_string(deleted_name))))
                .with_topic_id(deleted_id),
            Err((error, message)) => result
                .with_name(name.map(|name| TopicName(StrBytes::from_string(name))))
                .with_error_code(error.code())
                .with_error_message((version >= 5).then(|| StrBytes::from_string(message))),
        };
        responses.push(result);
    }
    let response = DeleteTopicsResponse::default().with_responses(responses);
    Ok(Reply::Body(Box::new(ResponseKind::DeleteTopics(response))))
}

/// Delete one topic; returns its name and id.
async fn delete_one(
    shard: &Rc<Shard>,
    target: &Target,
    access: &Access<'_>,
) -> Result<(String, uuid::Uuid), AdminError> {
    let name = match target {
        Target::Name(name) => name.clone(),
        Target::Id(id) => {
            let named = |view: &crate::metadata::ClusterMetadata| {
                view.topics
                    .values()
                    .find(|topic| topic.id == *id)
                    .map(|topic| topic.name.clone())
            };
            // Not in this broker's view yet (created through another):
            // look again once it caught up with the controller.
            let found = match named(&shard.metadata.snapshot()) {
                Some(name) => Some(name),
                None => match shard.metadata.caught_up().await {
                    Ok(view) => named(&view),
                    Err(_) => None,
                },
            };
            match found {
                Some(name) => name,
                None => {
                    return Err((
                        ResponseError::UnknownTopicId,
                        format!("No topic has the id {id}."),
                    ));
                }
            }
        }
    };
    if !access.allows(AclOperation::Delete, ResourceType::Topic, &name) {
        return Err((
            ResponseError::TopicAuthorizationFailed,
            "Authorization failed.".to_string(),
        ));
    }
    if crate::txn::is_internal_topic(&name) {
        return Err((
            ResponseError::InvalidRequest,
            format!("{name} is an internal topic and cannot be deleted."),
        ));
    }
    let deleted = match target {
        Target::Name(_) => delete_topic(shard, &name).await,
        // By id: the controller deletes the topic only while the name is
        // still that id's (this view may lag a deletion and a creation
        // under the same name: the newer topic stays).
        Target::Id(id) => match delete_topic_with_id(shard, &name, *id).await {
            Err(TopicError::Metadata(MetadataError::UnknownTopic(_))) => {
                return Err((
                    ResponseError::UnknownTopicId,
                    format!("No topic has the id {id}."),
                ));
            }
            deleted => deleted,
        },
    }
    .map_err(|error| topic_error(&error))?;
    Ok((deleted.name, deleted.id))
}
