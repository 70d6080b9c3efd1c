//! CreateAcls (api key 30): new ACL bindings, written through the
//! controller into the replicated metadata (`AccessControlEntry` records);
//! answered once this broker's image holds them, so the next request here
//! is checked against them. A binding already stored is not stored twice
//! (success, as Kafka). With the authorizer off every creation is
//! SECURITY_DISABLED and nothing is stored (Kafka's AclApis); on, it needs
//! ALTER on the cluster (else CLUSTER_AUTHORIZATION_FAILED for every
//! creation); a binding
//! that cannot be stored (ANY or MATCH codes, an unknown code, a principal
//! not `Type:name`) is INVALID_REQUEST with Kafka's reason.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::create_acls_request::{AclCreation, CreateAclsRequest};
use kafka_protocol::messages::create_acls_response::{AclCreationResult, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
use crate::auth::authorizer::Access;
use crate::handlers::Reply;
use crate::shard::Shard;

/// The binding a creation asks for, or why it cannot be stored.
pub fn binding(creation: &AclCreation) -> Result<AclBinding, String> {
    let resource_type = ResourceType::from_code(creation.resource_type)
        .ok_or_else(|| format!("unknown resource type {}", creation.resource_type))?;
    let pattern_type = PatternType::from_code(creation.resource_pattern_type)
        .ok_or_else(|| format!("unknown pattern type {}", creation.resource_pattern_type))?;
    let operation = AclOperation::from_code(creation.operation)
        .ok_or_else(|| format!("unknown operation {}", creation.operation))?;
    let permission = AclPermission::from_code(creation.permission_type)
        .ok_or_else(|| format!("unknown permission type {}", creation.permission_type))?;
    let binding = AclBinding {
        resource_type,
        resource_name: creation.resource_name.to_string(),
        pattern_type,
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation,
        permission,
    };
    binding.validate().map_err(|error| error.to_string())?;
    Ok(binding)
}

/// Why a CreateAcls or DeleteAcls changes nothing, if it does not. Without
/// an authorizer nothing would enforce a binding: Kafka answers
/// SECURITY_DISABLED and changes nothing, so that no operator believes the
/// cluster is guarded by ACLs it ignores (and no unauthenticated client
/// plants ACLs that bind once the authorizer is turned on); with one, both
/// need ALTER on the cluster.
pub(crate) fn acl_change_refusal(access: &Access<'_>) -> Option<(ResponseError, &'static str)> {
    if !access.is_enabled() {
        Some((
            ResponseError::SecurityDisabled,
            "No Authorizer is configured.",
        ))
    } else if !access.allows_cluster(AclOperation::Alter) {
        Some((
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        ))
    } else {
        None
    }
}

pub async fn handle(shard: &Rc<Shard>, access: &Access<'_>, request: CreateAclsRequest) -> Reply {
    let failed = |error: ResponseError, message: String| {
        AclCreationResult::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let mut results: Vec<Option<AclCreationResult>> = Vec::new();
    let mut creations = Vec::new();
    let refusal = acl_change_refusal(access);
    for creation in &request.creations {
        if let Some((error, message)) = refusal {
            results.push(Some(failed(error, message.to_string())));
            continue;
        }
        match binding(creation) {
            Ok(binding) => {
                creations.push(binding);
                results.push(None);
            }
            Err(message) => results.push(Some(failed(ResponseError::InvalidRequest, message))),
        }
    }
    let mut outcome = Ok(());
    if !creations.is_empty() {
        let controller = shard.metadata.controller().clone();
        outcome = match controller.alter_acls(creations, Vec::new()).await {
            Ok(offset) => controller.wait_applied(offset).await,
            Err(error) => Err(error),
        };
    }
    let results = results
        .into_iter()
        .map(|result| match (result, &outcome) {
            (Some(result), _) => result,
            (None, Ok(())) => AclCreationResult::default(),
            (None, Err(error)) => failed(
                ResponseError::UnknownServerError,
                format!("controller: {error}"),
            ),
        })
        .collect();
    Reply::Body(Box::new(ResponseKind::CreateAcls(
        CreateAclsResponse::default().with_results(results),
    )))
}
