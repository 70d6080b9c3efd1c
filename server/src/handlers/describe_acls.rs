//! DescribeAcls (api key 29): the ACL bindings of this broker's metadata
//! image that a filter selects, grouped by resource pattern (Kafka's
//! layout). With the authorizer off the answer is SECURITY_DISABLED
//! (Kafka's AclApis); on, it needs DESCRIBE on the cluster (else
//! CLUSTER_AUTHORIZATION_FAILED); a filter with an unknown code is
//! INVALID_REQUEST.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::describe_acls_request::DescribeAclsRequest;
use kafka_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermission, PatternType, ResourceType,
};
use crate::auth::authorizer::Access;
use crate::handlers::Reply;
use crate::shard::Shard;

/// A filter from its wire fields, or why it is not one.
pub fn filter(
    resource_type: i8,
    resource_name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclBindingFilter, String> {
    Ok(AclBindingFilter {
        resource_type: ResourceType::from_code(resource_type)
            .ok_or_else(|| format!("unknown resource type {resource_type}"))?,
        resource_name: resource_name.map(|name| name.to_string()),
        pattern_type: PatternType::from_code(pattern_type)
            .ok_or_else(|| format!("unknown pattern type {pattern_type}"))?,
        principal: principal.map(|principal| principal.to_string()),
        host: host.map(|host| host.to_string()),
        operation: AclOperation::from_code(operation)
            .ok_or_else(|| format!("unknown operation {operation}"))?,
        permission: AclPermission::from_code(permission)
            .ok_or_else(|| format!("unknown permission type {permission}"))?,
    })
}

/// Bindings grouped as DescribeAclsResponse lays them out.
pub fn resources<'a>(bindings: impl Iterator<Item = &'a AclBinding>) -> Vec<DescribeAclsResource> {
    let mut grouped: BTreeMap<(ResourceType, &str, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for binding in bindings {
        grouped
            .entry((
                binding.resource_type,
                binding.resource_name.as_str(),
                binding.pattern_type,
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(binding.principal.clone()))
                    .with_host(StrBytes::from_string(binding.host.clone()))
                    .with_operation(binding.operation.code())
                    .with_permission_type(binding.permission.code()),
            );
    }
    grouped
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type.code())
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_pattern_type(pattern_type.code())
                .with_acls(acls)
        })
        .collect()
}

pub fn handle(shard: &Shard, access: &Access<'_>, request: DescribeAclsRequest) -> Reply {
    let response = DescribeAclsResponse::default();
    // As Kafka's AclApis: without an authorizer there are no ACLs in
    // force to describe (bindings stored while one was on are not shown
    // as if they were).
    let response = if !access.is_enabled() {
        response
            .with_error_code(ResponseError::SecurityDisabled.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "No Authorizer is configured on the broker",
            )))
    } else if !access.allows_cluster(AclOperation::Describe) {
        response
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "Cluster authorization failed.",
            )))
    } else {
        match filter(
            request.resource_type_filter,
            request.resource_name_filter.as_ref(),
            request.pattern_type_filter,
            request.principal_filter.as_ref(),
            request.host_filter.as_ref(),
            request.operation,
            request.permission_type,
        ) {
            Err(message) => response
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(message))),
            Ok(filter) => {
                let image = shard.metadata.controller().image();
                let acls = image.acls();
                response.with_resources(resources(
                    acls.iter()
                        .map(|(_, binding)| binding)
                        .filter(|binding| filter.matches(binding)),
                ))
            }
        }
    };
    Reply::Body(Box::new(ResponseKind::DescribeAcls(response)))
}
