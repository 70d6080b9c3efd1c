//! IncrementalAlterConfigs: change some configs of a topic, or some
//! dynamic configs of a BROKER resource (`""` the cluster-wide default,
//! `"<id>"` one broker: metadata/broker_config.rs), leaving the others as
//! they are. Operations: SET (0), DELETE (1, back to the default), APPEND
//! (2) and SUBTRACT (3), the last two only for LIST configs (from the
//! current value, or the default when unset), as Kafka does.
//!
//! The merged set is validated as a whole (INVALID_CONFIG; a static broker
//! config INVALID_REQUEST; nothing changed), persisted and applied to the
//! open logs (shard::topics::set_configs, Metadata::set_broker_configs).
//! The read-merge-write is not atomic against a concurrent change of the
//! same resource's configs from another connection: the later write wins.

use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Access;
use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::handlers::alter_configs::{
    broker_of, check_resource, duplicates, require_topic, set_broker_configs,
};
use crate::handlers::create_topics::{AdminError, topic_error};
use crate::handlers::describe_configs::{is_static_broker_config, resource_type};
use crate::metadata::MetadataError;
use crate::metadata::broker_config::{check_name, dynamic_spec};
use crate::metadata::topic_config::{ConfigKind, TopicConfigSpec, spec_of};
use crate::shard::Shard;
use crate::shard::topics::TopicError;
use crate::shard::topics::set_configs;

/// Kafka's `AlterConfigOp.OpType` codes.
mod operation {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
}

/// One requested change: config name, operation code, value.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub name: &'a str,
    pub operation: i8,
    pub value: Option<&'a str>,
}

impl<'a> From<&'a AlterableConfig> for Change<'a> {
    fn from(config: &'a AlterableConfig) -> Change<'a> {
        Change {
            name: config.name.as_str(),
            operation: config.config_operation,
            value: config.value.as_ref().map(StrBytes::as_str),
        }
    }
}

/// Apply `changes` to the explicit configs `current` of a topic. Checks the
/// names and operations; the values are validated afterwards, on the whole
/// result.
pub fn merge(
    current: &BTreeMap<String, String>,
    changes: &[Change<'_>],
) -> Result<BTreeMap<String, String>, AdminError> {
    merge_with(current, changes, &spec_of)
}

/// [`merge`] for configs whose spec `lookup` finds (topic configs by their
/// name, dynamic broker configs by theirs).
fn merge_with(
    current: &BTreeMap<String, String>,
    changes: &[Change<'_>],
    lookup: &dyn Fn(&str) -> Option<&'static TopicConfigSpec>,
) -> Result<BTreeMap<String, String>, AdminError> {
    // Linear, as Kafka's groupBy: a request may carry many names, and a
    // comparison of each with every earlier one stalled the shard.
    let mut seen = std::collections::HashSet::with_capacity(changes.len());
    for change in changes {
        if !seen.insert(change.name) {
            return Err((
                ResponseError::InvalidRequest,
                format!("Error due to duplicate config keys: {}", change.name),
            ));
        }
    }
    let mut merged = current.clone();
    for change in changes {
        // Kafka validates the resulting set: deleting a name that is not
        // set (known or not) changes nothing and is no error.
        if change.operation == operation::DELETE {
            merged.remove(change.name);
            continue;
        }
        let Some(spec) = lookup(change.name) else {
            return Err((
                ResponseError::InvalidConfig,
                format!("Unknown or unsupported topic config {:?}", change.name),
            ));
        };
        let value = || {
            change.value.ok_or_else(|| {
                (
                    ResponseError::InvalidRequest,
                    format!("Null value not supported for : {}", change.name),
                )
            })
        };
        match change.operation {
            operation::SET => {
                merged.insert(change.name.to_string(), value()?.to_string());
            }
            operation::APPEND | operation::SUBTRACT => {
                if spec.kind != ConfigKind::List {
                    let verb = if change.operation == operation::APPEND {
                        "append"
                    } else {
                        "subtract"
                    };
                    return Err((
                        ResponseError::InvalidConfig,
                        format!(
                            "Config value {verb} is not allowed for config key: {} (not a list)",
                            change.name
                        ),
                    ));
                }
                let old = merged.get(change.name).map_or(spec.default, String::as_str);
                let mut items = list_items(old);
                let given = list_items(value()?);
                if change.operation == operation::APPEND {
                    let mut present: std::collections::HashSet<&str> =
                        items.iter().copied().collect();
                    for item in given {
                        if present.insert(item) {
                            items.push(item);
                        }
                    }
                } else {
                    let given: std::collections::HashSet<&str> = given.into_iter().collect();
                    items.retain(|item| !given.contains(item));
                }
                merged.insert(change.name.to_string(), items.join(","));
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Unknown config operation {other} for {}", change.name),
                ));
            }
        }
    }
    Ok(merged)
}

fn list_items(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: IncrementalAlterConfigsRequest,
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
        let outcome = if let Some(error) = crate::handlers::alter_configs::config_access_error(
            access,
            AclOperation::AlterConfigs,
            resource.resource_type,
            &name,
        ) {
            Err(error)
        } else if let Err(error) = check_resource(&counts, resource.resource_type, &name) {
            Err(error)
        } else {
            let changes: Vec<Change<'_>> = resource.configs.iter().map(Change::from).collect();
            if resource.resource_type == resource_type::BROKER {
                alter_broker(shard, &name, &changes, request.validate_only).await
            } else {
                alter_topic(shard, &name, &changes, request.validate_only).await
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
    let response = IncrementalAlterConfigsResponse::default().with_responses(responses);
    Ok(Reply::Body(Box::new(
        ResponseKind::IncrementalAlterConfigs(response),
    )))
}

async fn alter_topic(
    shard: &Rc<Shard>,
    name: &str,
    changes: &[Change<'_>],
    validate_only: bool,
) -> Result<(), AdminError> {
    require_topic(shard, name).await?;
    let current = match shard.metadata.snapshot().topics.get(name) {
        Some(topic) => topic.configs.clone(),
        None => BTreeMap::new(),
    };
    let merged = merge(&current, changes)?;
    set_configs(shard, name, merged, validate_only)
        .await
        .map_err(|error| topic_error(&error))?;
    Ok(())
}

/// The changes to a BROKER resource's dynamic configs: every name must be
/// a dynamic broker config (even to DELETE it), then merged as for topics.
async fn alter_broker(
    shard: &Rc<Shard>,
    name: &str,
    changes: &[Change<'_>],
    validate_only: bool,
) -> Result<(), AdminError> {
    let broker = broker_of(name)?;
    for change in changes {
        check_name(
            change.name,
            &|name| is_static_broker_config(&shard.config, name),
            broker.is_some(),
        )
        .map_err(|error| topic_error(&TopicError::Metadata(MetadataError::from(error))))?;
    }
    let current = shard.metadata.snapshot().broker_configs.of(broker).clone();
    let merged = merge_with(&current, changes, &dynamic_spec)?;
    set_broker_configs(shard, name, merged, validate_only).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn change<'a>(name: &'a str, operation: i8, value: Option<&'a str>) -> Change<'a> {
        Change {
            name,
            operation,
            value,
        }
    }

    #[test]
    fn set_and_delete_change_only_the_named_configs() {
        let current = map(&[("retention.ms", "1000"), ("segment.bytes", "4096")]);
        let merged = merge(
            &current,
            &[
                change("retention.ms", operation::SET, Some("2000")),
                change("segment.bytes", operation::DELETE, None),
                change("max.message.bytes", operation::SET, Some("500")),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            map(&[("max.message.bytes", "500"), ("retention.ms", "2000")])
        );
    }

    #[test]
    fn deleting_an_unset_config_is_a_no_op() {
        let current = map(&[("retention.ms", "1000")]);
        let merged = merge(&current, &[change("segment.ms", operation::DELETE, None)]).unwrap();
        assert_eq!(merged, current);
        // Kafka validates the result: deleting a name it does not know is
        // no error either.
        let merged = merge(
            &current,
            &[change("no.such.config", operation::DELETE, None)],
        )
        .unwrap();
        assert_eq!(merged, current);
    }

    #[test]
    fn append_and_subtract_work_on_lists_starting_from_the_default() {
        let empty = BTreeMap::new();
        let appended = merge(
            &empty,
            &[change("cleanup.policy", operation::APPEND, Some("compact"))],
        )
        .unwrap();
        assert_eq!(appended, map(&[("cleanup.policy", "delete,compact")]));
        let again = merge(
            &appended,
            &[change("cleanup.policy", operation::APPEND, Some("delete"))],
        )
        .unwrap();
        assert_eq!(again, appended, "appending a present item changes nothing");
        let subtracted = merge(
            &appended,
            &[change(
                "cleanup.policy",
                operation::SUBTRACT,
                Some("delete"),
            )],
        )
        .unwrap();
        assert_eq!(subtracted, map(&[("cleanup.policy", "compact")]));
    }

    #[test]
    fn append_to_a_non_list_config_is_invalid_config() {
        let (error, _) = merge(
            &BTreeMap::new(),
            &[change("retention.ms", operation::APPEND, Some("5"))],
        )
        .unwrap_err();
        assert_eq!(error, ResponseError::InvalidConfig);
        let (error, _) = merge(
            &BTreeMap::new(),
            &[change("segment.bytes", operation::SUBTRACT, Some("5"))],
        )
        .unwrap_err();
        assert_eq!(error, ResponseError::InvalidConfig);
    }

    #[test]
    fn bad_requests_are_refused() {
        let empty = BTreeMap::new();
        let cases = [
            (
                vec![change("retention.mss", operation::SET, Some("1"))],
                ResponseError::InvalidConfig,
            ),
            (
                vec![change("retention.ms", operation::SET, None)],
                ResponseError::InvalidRequest,
            ),
            (
                vec![change("retention.ms", 7, Some("1"))],
                ResponseError::InvalidRequest,
            ),
            (
                vec![
                    change("retention.ms", operation::SET, Some("1")),
                    change("retention.ms", operation::DELETE, None),
                ],
                ResponseError::InvalidRequest,
            ),
        ];
        for (changes, expected) in cases {
            let (error, message) = merge(&empty, &changes).unwrap_err();
            assert_eq!(error, expected, "{changes:?}: {message}");
        }
    }
}
