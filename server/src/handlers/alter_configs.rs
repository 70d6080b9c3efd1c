//! AlterConfigs (the legacy, non-incremental API): replace every explicit
//! config of a topic, or every dynamic config of a BROKER resource (`""`
//! the cluster-wide default, `"<id>"` one broker), with the given set;
//! configs left out return to their defaults.
//!
//! The new set is validated as a whole (unknown name or bad value ->
//! INVALID_CONFIG, a static broker config -> INVALID_REQUEST, nothing
//! changed), persisted in the metadata, and applied to the open logs on
//! their shards by the metadata follower (shard::topics::set_configs,
//! Metadata::set_broker_configs; which broker configs are dynamic:
//! metadata/broker_config.rs).

use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Access;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::handlers::create_topics::{AdminError, topic_error};
use crate::handlers::describe_configs::{is_static_broker_config, resource_type};
use crate::shard::Shard;
use crate::shard::topics::{TopicError, set_configs};

/// Why a resource that is not a topic cannot be altered.
pub fn not_alterable(resource_type: i8, name: &str) -> AdminError {
    let message = match resource_type {
        resource_type::BROKER_LOGGER => format!(
            "Broker {name:?}: Sluice's log levels are set at start (RUST_LOG) and cannot be \
             altered at runtime."
        ),
        resource_type::GROUP => format!(
            "Group {name:?}: group configs tune KIP-848 consumer and share groups, which \
             Sluice does not serve; they keep their defaults."
        ),
        other => format!(
            "Resource type {other} is not supported; only topics (2) and brokers (4) can be \
             altered."
        ),
    };
    (ResponseError::InvalidRequest, message)
}

/// Count each (resource type, name): Kafka refuses a resource listed twice.
pub fn duplicates<'a>(
    resources: impl Iterator<Item = (i8, &'a StrBytes)>,
) -> HashMap<(i8, String), usize> {
    let mut counts = HashMap::new();
    for (kind, name) in resources {
        *counts.entry((kind, name.as_str().to_string())).or_default() += 1;
    }
    counts
}

/// UNKNOWN_TOPIC_OR_PARTITION unless the topic exists (checked before the
/// configs, as Kafka does), in a view caught up with the controller when
/// this broker's does not have it yet (`Metadata::current_topic`).
pub async fn require_topic(shard: &Shard, name: &str) -> Result<(), AdminError> {
    match shard.metadata.current_topic(name).await {
        Ok(_) => Ok(()),
        Err(_) => Err((
            ResponseError::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        )),
    }
}

pub fn duplicate_error(name: &str) -> AdminError {
    (
        ResponseError::InvalidRequest,
        format!("Resource {name} is listed more than once in the request."),
    )
}

/// The authorizer's check of a config resource (Kafka's): `operation`
/// (DESCRIBE_CONFIGS or ALTER_CONFIGS) on the topic, on the group for
/// group resources, or on the cluster for broker resources.
pub fn config_access_error(
    access: &Access<'_>,
    operation: AclOperation,
    resource_type: i8,
    name: &str,
) -> Option<AdminError> {
    use crate::auth::acl::ResourceType;
    if resource_type == resource_type::TOPIC {
        (!access.allows(operation, ResourceType::Topic, name)).then(|| {
            (
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".to_string(),
            )
        })
    } else if resource_type == resource_type::GROUP {
        (!access.allows(operation, ResourceType::Group, name)).then(|| {
            (
                ResponseError::GroupAuthorizationFailed,
                "Authorization failed.".to_string(),
            )
        })
    } else {
        (!access.allows_cluster(operation)).then(|| {
            (
                ResponseError::ClusterAuthorizationFailed,
                "Cluster authorization failed.".to_string(),
            )
        })
    }
}

/// The checks both AlterConfigs APIs make before touching a resource: listed
/// once, and a topic or a broker.
pub fn check_resource(
    counts: &HashMap<(i8, String), usize>,
    resource_type: i8,
    name: &str,
) -> Result<(), AdminError> {
    if counts
        .get(&(resource_type, name.to_string()))
        .copied()
        .unwrap_or(0)
        > 1
    {
        return Err(duplicate_error(name));
    }
    if resource_type != resource_type::TOPIC && resource_type != resource_type::BROKER {
        return Err(not_alterable(resource_type, name));
    }
    Ok(())
}

/// The broker a BROKER resource names: `None` for `""` (the cluster-wide
/// default), else the broker id.
pub fn broker_of(name: &str) -> Result<Option<i32>, AdminError> {
    if name.is_empty() {
        return Ok(None);
    }
    match name.parse::<i32>() {
        Ok(id) if id >= 0 => Ok(Some(id)),
        _ => Err((
            ResponseError::InvalidRequest,
            format!(
                "Broker resource name must be a broker id or empty (the cluster-wide \
                 default), got {name:?}"
            ),
        )),
    }
}

/// Replace the dynamic configs of the BROKER resource `name` with
/// `configs` (Metadata::set_broker_configs).
pub async fn set_broker_configs(
    shard: &Rc<Shard>,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), AdminError> {
    let broker = broker_of(name)?;
    let config = &shard.config;
    shard
        .metadata
        .set_broker_configs(
            broker,
            configs,
            &|name| is_static_broker_config(config, name),
            validate_only,
        )
        .await
        .map_err(|error| topic_error(&TopicError::Metadata(error)))
}

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: AlterConfigsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let counts = duplicates(
        request
            .resources
            .iter()
            .map(|resource| (resource.resource_type, &resource.resource_name)),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_string();
        let outcome = if let Some(error) = config_access_error(
            access,
            AclOperation::AlterConfigs,
            resource.resource_type,
            &name,
        ) {
            Err(error)
        } else if let Err(error) = check_resource(&counts, resource.resource_type, &name) {
            Err(error)
        } else {
            let configs = resource
                .configs
                .iter()
                .map(|config| (&config.name, config.value.as_ref()));
            if resource.resource_type == resource_type::BROKER {
                match config_map(configs, "broker") {
                    Ok(map) => set_broker_configs(shard, &name, map, request.validate_only).await,
                    Err(error) => Err(error),
                }
            } else {
                replace_topic_configs(shard, &name, configs, request.validate_only).await
            }
        };
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match outcome {
            Ok(()) => response.with_error_message(None),
            Err((error, message)) => response
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    let response = AlterConfigsResponse::default().with_responses(responses);
    Ok(Reply::Body(Box::new(ResponseKind::AlterConfigs(response))))
}

async fn replace_topic_configs<'a>(
    shard: &Rc<Shard>,
    name: &str,
    configs: impl Iterator<Item = (&'a StrBytes, Option<&'a StrBytes>)>,
    validate_only: bool,
) -> Result<(), AdminError> {
    require_topic(shard, name).await?;
    let map = config_map(configs, "topic")?;
    set_configs(shard, name, map, validate_only)
        .await
        .map_err(|error| topic_error(&error))?;
    Ok(())
}

/// The requested set as a map: no null value, no name twice.
fn config_map<'a>(
    configs: impl Iterator<Item = (&'a StrBytes, Option<&'a StrBytes>)>,
    kind: &str,
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut map = BTreeMap::new();
    for (config, value) in configs {
        let Some(value) = value else {
            return Err((
                ResponseError::InvalidRequest,
                format!(
                    "Null value not supported for {kind} config {}",
                    config.as_str()
                ),
            ));
        };
        if map
            .insert(config.as_str().to_string(), value.as_str().to_string())
            .is_some()
        {
            return Err((
                ResponseError::InvalidRequest,
                format!("Config {} is given more than once", config.as_str()),
            ));
        }
    }
    Ok(map)
}
