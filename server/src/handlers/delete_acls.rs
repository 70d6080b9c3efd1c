//! DeleteAcls (api key 31): every binding each filter selects (in this
//! broker's image) is removed through the controller
//! (`RemoveAccessControlEntry` records), in one batch for the request;
//! answered once this broker's image no longer holds them, each filter
//! with the bindings it matched. With the authorizer off every filter is
//! SECURITY_DISABLED and nothing is removed (Kafka's AclApis); on, it
//! needs ALTER on the cluster (else CLUSTER_AUTHORIZATION_FAILED per
//! filter); a filter with an unknown code is INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::delete_acls_request::DeleteAclsRequest;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl, DeleteAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::AclBinding;
use crate::auth::authorizer::Access;
use crate::handlers::Reply;
use crate::handlers::describe_acls::filter;
use crate::shard::Shard;

fn matching(binding: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(binding.resource_type.code())
        .with_resource_name(StrBytes::from_string(binding.resource_name.clone()))
        .with_pattern_type(binding.pattern_type.code())
        .with_principal(StrBytes::from_string(binding.principal.clone()))
        .with_host(StrBytes::from_string(binding.host.clone()))
        .with_operation(binding.operation.code())
        .with_permission_type(binding.permission.code())
}

pub async fn handle(shard: &Rc<Shard>, access: &Access<'_>, request: DeleteAclsRequest) -> Reply {
    let failed = |error: ResponseError, message: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let refusal = crate::handlers::create_acls::acl_change_refusal(access);
    let image = shard.metadata.controller().image();
    let mut deletions = Vec::new();
    let mut results: Vec<Result<Vec<AclBinding>, DeleteAclsFilterResult>> = Vec::new();
    for wire in &request.filters {
        if let Some((error, message)) = refusal {
            results.push(Err(failed(error, message.to_string())));
            continue;
        }
        match filter(
            wire.resource_type_filter,
            wire.resource_name_filter.as_ref(),
            wire.pattern_type_filter,
            wire.principal_filter.as_ref(),
            wire.host_filter.as_ref(),
            wire.operation,
            wire.permission_type,
        ) {
            Err(message) => results.push(Err(failed(ResponseError::InvalidRequest, message))),
            Ok(filter) => {
                let mut matched = Vec::new();
                for (id, binding) in image.acls().iter() {
                    if filter.matches(binding) {
                        if !deletions.contains(id) {
                            deletions.push(*id);
                        }
                        matched.push(binding.clone());
                    }
                }
                results.push(Ok(matched));
            }
        }
    }
    drop(image);
    let mut outcome = Ok(());
    if !deletions.is_empty() {
        let controller = shard.metadata.controller().clone();
        outcome = match controller.alter_acls(Vec::new(), deletions).await {
            Ok(offset) => controller.wait_applied(offset).await,
            Err(error) => Err(error),
        };
    }
    let results = results
        .into_iter()
        .map(|result| match (result, &outcome) {
            (Err(result), _) => result,
            (Ok(matched), Ok(())) => DeleteAclsFilterResult::default()
                .with_matching_acls(matched.iter().map(matching).collect()),
            (Ok(_), Err(error)) => failed(
                ResponseError::UnknownServerError,
                format!("controller: {error}"),
            ),
        })
        .collect();
    Reply::Body(Box::new(ResponseKind::DeleteAcls(
        DeleteAclsResponse::default().with_filter_results(results),
    )))
}
