//! `sluice acl create|list|delete`: ACL bindings, like kafka-acls.sh
//! (`--add`, `--list`, `--remove`) with its flags: `--allow-principal` /
//! `--deny-principal`, `--operation`, `--host`, `--topic` / `--group` /
//! `--cluster` / `--transactional-id`, `--resource-pattern-type`.
//!
//! Kafka clients (CreateAcls, DescribeAcls, DeleteAcls): they work against
//! any Kafka broker that has an authorizer (without one, Kafka and Sluice
//! answer SECURITY_DISABLED and store nothing). They connect over a
//! PLAINTEXT listener (the admin client does not speak TLS or SASL yet),
//! so with `--authorizer standard` the broker sees them as
//! User:ANONYMOUS, which needs ALTER (create, delete) or DESCRIBE (list)
//! on the cluster, e.g. as a super user.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::{AclCreation, CreateAclsRequest};
use kafka_protocol::messages::delete_acls_request::{DeleteAclsFilter, DeleteAclsRequest};
use kafka_protocol::messages::describe_acls_request::DescribeAclsRequest;
use kafka_protocol::protocol::StrBytes;

use super::args::CommonArgs;
use super::output::{Format, emit, emit_json, render_table};
use super::pool::BrokerPool;
use super::{AdminError, exit, profile};
use crate::auth::acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermission, CLUSTER_NAME, PatternType,
    ResourceType, WILDCARD,
};

/// The ACL APIs' versions this client speaks (1: Kafka 2.0, patterns).
const VERSIONS: std::ops::RangeInclusive<i16> = 1..=3;

/// `sluice acl ...`
#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(subcommand)]
    pub command: AclCommand,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Create bindings: every principal x host x operation x resource.
    Create(BindingArgs),
    /// Bindings, all or those the resource and principal flags select.
    List(BindingArgs),
    /// Delete the bindings the flags select (`--all`: every binding).
    Delete {
        #[command(flatten)]
        selection: BindingArgs,
        /// Delete every binding of the cluster.
        #[arg(long)]
        all: bool,
    },
}

/// The flags of kafka-acls.sh.
#[derive(Args, Debug, Default)]
pub struct BindingArgs {
    /// A principal to allow, `User:name` (`User:*`: everyone). Repeatable.
    #[arg(long)]
    pub allow_principal: Vec<String>,
    /// A principal to deny, `User:name`. Repeatable.
    #[arg(long)]
    pub deny_principal: Vec<String>,
    /// Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All. Repeatable.
    #[arg(long)]
    pub operation: Vec<String>,
    /// A client IP address the binding applies to [default: *, any].
    /// Repeatable.
    #[arg(long)]
    pub host: Vec<String>,
    /// A topic (`*`: every topic). Repeatable.
    #[arg(long)]
    pub topic: Vec<String>,
    /// A consumer group (`*`: every group). Repeatable.
    #[arg(long)]
    pub group: Vec<String>,
    /// The cluster resource (kafka-cluster).
    #[arg(long)]
    pub cluster: bool,
    /// A transactional id (`*`: every id). Repeatable.
    #[arg(long)]
    pub transactional_id: Vec<String>,
    /// literal or prefixed (create); list and delete also take any and
    /// match [default: literal for create, any for list and delete].
    #[arg(long)]
    pub resource_pattern_type: Option<String>,
}

impl BindingArgs {
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let mut resources: Vec<(ResourceType, String)> = Vec::new();
        resources.extend(
            self.topic
                .iter()
                .map(|name| (ResourceType::Topic, name.clone())),
        );
        resources.extend(
            self.group
                .iter()
                .map(|name| (ResourceType::Group, name.clone())),
        );
        if self.cluster {
            resources.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
        }
        resources.extend(
            self.transactional_id
                .iter()
                .map(|name| (ResourceType::TransactionalId, name.clone())),
        );
        resources
    }

    fn principals(&self) -> Result<Vec<(String, AclPermission)>, AdminError> {
        let principals: Vec<(String, AclPermission)> = self
            .allow_principal
            .iter()
            .map(|principal| (principal.clone(), AclPermission::Allow))
            .chain(
                self.deny_principal
                    .iter()
                    .map(|principal| (principal.clone(), AclPermission::Deny)),
            )
            .collect();
        for (principal, _) in &principals {
            match principal.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
                _ => {
                    return Err(AdminError::Invalid(format!(
                        "principal {principal:?} is not of the form User:name"
                    )));
                }
            }
        }
        Ok(principals)
    }

    fn operations(&self) -> Result<Vec<AclOperation>, AdminError> {
        self.operation
            .iter()
            .map(|text| {
                AclOperation::parse(text)
                    .filter(|operation| *operation != AclOperation::Any)
                    .ok_or_else(|| {
                        let known: Vec<&str> = AclOperation::BINDABLE
                            .iter()
                            .map(|operation| operation.name())
                            .collect();
                        AdminError::Invalid(format!(
                            "unknown operation {text:?} (one of {})",
                            known.join(", ")
                        ))
                    })
            })
            .collect()
    }

    fn pattern_type(&self, default: PatternType) -> Result<PatternType, AdminError> {
        match &self.resource_pattern_type {
            None => Ok(default),
            Some(text) => PatternType::parse(text).ok_or_else(|| {
                AdminError::Invalid(format!(
                    "unknown resource pattern type {text:?} (literal, prefixed, any or match)"
                ))
            }),
        }
    }

    /// The bindings `create` makes.
    fn bindings(&self) -> Result<Vec<AclBinding>, AdminError> {
        let principals = self.principals()?;
        if principals.is_empty() {
            return Err(AdminError::Invalid(
                "name a principal: --allow-principal or --deny-principal User:name".to_string(),
            ));
        }
        let operations = self.operations()?;
        if operations.is_empty() {
            return Err(AdminError::Invalid(
                "name at least one --operation (Read, Write, Describe, ...)".to_string(),
            ));
        }
        let resources = self.resources();
        if resources.is_empty() {
            return Err(AdminError::Invalid(
                "name a resource: --topic, --group, --cluster or --transactional-id".to_string(),
            ));
        }
        let pattern_type = self.pattern_type(PatternType::Literal)?;
        if !matches!(pattern_type, PatternType::Literal | PatternType::Prefixed) {
            return Err(AdminError::Invalid(
                "bindings are created with pattern type literal or prefixed".to_string(),
            ));
        }
        let hosts = if self.host.is_empty() {
            vec![WILDCARD.to_string()]
        } else {
            self.host.clone()
        };
        let mut bindings = Vec::new();
        for (principal, permission) in &principals {
            for host in &hosts {
                for operation in &operations {
                    for (resource_type, name) in &resources {
                        let binding = AclBinding {
                            resource_type: *resource_type,
                            resource_name: name.clone(),
                            pattern_type: if *resource_type == ResourceType::Cluster {
                                PatternType::Literal
                            } else {
                                pattern_type
                            },
                            principal: principal.clone(),
                            host: host.clone(),
                            operation: *operation,
                            permission: *permission,
                        };
                        binding
                            .validate()
                            .map_err(|error| AdminError::Invalid(error.to_string()))?;
                        bindings.push(binding);
                    }
                }
            }
        }
        Ok(bindings)
    }

    /// The filters `list` and `delete` send: one per resource named (or one
    /// for every resource), narrowed by the principals, hosts and
    /// operations given.
    fn filters(&self) -> Result<Vec<AclBindingFilter>, AdminError> {
        let pattern_type = self.pattern_type(PatternType::Any)?;
        let resources: Vec<(ResourceType, Option<String>)> = match self.resources() {
            resources if resources.is_empty() => vec![(ResourceType::Any, None)],
            resources => resources
                .into_iter()
                .map(|(kind, name)| (kind, Some(name)))
                .collect(),
        };
        let principals: Vec<(Option<String>, AclPermission)> = match self.principals()? {
            principals if principals.is_empty() => vec![(None, AclPermission::Any)],
            principals => principals
                .into_iter()
                .map(|(principal, permission)| (Some(principal), permission))
                .collect(),
        };
        let hosts: Vec<Option<String>> = if self.host.is_empty() {
            vec![None]
        } else {
            self.host.iter().cloned().map(Some).collect()
        };
        let operations = match self.operations()? {
            operations if operations.is_empty() => vec![AclOperation::Any],
            operations => operations,
        };
        let mut filters = Vec::new();
        for (resource_type, name) in &resources {
            for (principal, permission) in &principals {
                for host in &hosts {
                    for operation in &operations {
                        filters.push(AclBindingFilter {
                            resource_type: *resource_type,
                            resource_name: name.clone(),
                            pattern_type,
                            principal: principal.clone(),
                            host: host.clone(),
                            operation: *operation,
                            permission: *permission,
                        });
                    }
                }
            }
        }
        Ok(filters)
    }
}

pub fn run(args: AclArgs) -> ExitCode {
    let format = args.common.format;
    let result = profile::target(&args.common).and_then(|bootstrap| match args.command {
        AclCommand::Create(selection) => {
            let bindings = selection.bindings()?;
            let mut pool = BrokerPool::connect(&bootstrap)?;
            create(&mut pool, &bindings)
        }
        AclCommand::List(selection) => {
            let filters = selection.filters()?;
            let mut pool = BrokerPool::connect(&bootstrap)?;
            list(&mut pool, &filters, format)
        }
        AclCommand::Delete { selection, all } => {
            if !all && selection.resources().is_empty() {
                return Err(AdminError::Invalid(
                    "name the resources whose bindings to delete (--topic, --group, --cluster, \
                     --transactional-id), or --all for every binding"
                        .to_string(),
                ));
            }
            let filters = selection.filters()?;
            let mut pool = BrokerPool::connect(&bootstrap)?;
            delete(&mut pool, &filters, format)
        }
    });
    exit("acl", result)
}

fn code_error(code: i16, message: Option<StrBytes>) -> String {
    let error = kafka_protocol::error::ResponseError::try_from_code(code);
    let name = error.map_or_else(|| format!("error {code}"), |error| format!("{error:?}"));
    let text = match message {
        Some(message) if !message.is_empty() => format!("{name}: {message}"),
        _ => name,
    };
    // What to do about it: the broker has no authorizer (as Kafka, it
    // then neither stores nor lists ACLs).
    if error == Some(kafka_protocol::error::ResponseError::SecurityDisabled) {
        format!("{text} (start the brokers with --authorizer standard to use ACLs)")
    } else {
        text
    }
}

fn create(pool: &mut BrokerPool, bindings: &[AclBinding]) -> Result<(), AdminError> {
    let creations = bindings
        .iter()
        .map(|binding| {
            AclCreation::default()
                .with_resource_type(binding.resource_type.code())
                .with_resource_name(StrBytes::from_string(binding.resource_name.clone()))
                .with_resource_pattern_type(binding.pattern_type.code())
                .with_principal(StrBytes::from_string(binding.principal.clone()))
                .with_host(StrBytes::from_string(binding.host.clone()))
                .with_operation(binding.operation.code())
                .with_permission_type(binding.permission.code())
        })
        .collect();
    let request = CreateAclsRequest::default().with_creations(creations);
    let (response, _) = pool.any().call(&request, VERSIONS)?;
    let mut failed = 0;
    let mut text = String::new();
    for (binding, result) in bindings.iter().zip(&response.results) {
        if result.error_code == 0 {
            text.push_str(&format!("created {binding}\n"));
        } else {
            failed += 1;
            eprintln!(
                "sluice acl: {binding}: {}",
                code_error(result.error_code, result.error_message.clone())
            );
        }
    }
    emit(&text)?;
    if failed > 0 {
        return Err(AdminError::Failed(format!(
            "{failed} of {} bindings not created",
            bindings.len()
        )));
    }
    Ok(())
}

fn describe(
    pool: &mut BrokerPool,
    filter: &AclBindingFilter,
) -> Result<Vec<AclBinding>, AdminError> {
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(filter.resource_type.code())
        .with_resource_name_filter(filter.resource_name.clone().map(StrBytes::from_string))
        .with_pattern_type_filter(filter.pattern_type.code())
        .with_principal_filter(filter.principal.clone().map(StrBytes::from_string))
        .with_host_filter(filter.host.clone().map(StrBytes::from_string))
        .with_operation(filter.operation.code())
        .with_permission_type(filter.permission.code());
    let (response, _) = pool.any().call(&request, VERSIONS)?;
    if response.error_code != 0 {
        return Err(AdminError::Failed(code_error(
            response.error_code,
            response.error_message,
        )));
    }
    let mut bindings = Vec::new();
    for resource in response.resources {
        for acl in resource.acls {
            let binding = (|| {
                Some(AclBinding {
                    resource_type: ResourceType::from_code(resource.resource_type)?,
                    resource_name: resource.resource_name.to_string(),
                    pattern_type: PatternType::from_code(resource.pattern_type)?,
                    principal: acl.principal.to_string(),
                    host: acl.host.to_string(),
                    operation: AclOperation::from_code(acl.operation)?,
                    permission: AclPermission::from_code(acl.permission_type)?,
                })
            })();
            match binding {
                Some(binding) => bindings.push(binding),
                None => eprintln!(
                    "sluice acl: skipped a binding with codes this client does not know \
                     (resource type {}, pattern type {}, operation {}, permission {})",
                    resource.resource_type,
                    resource.pattern_type,
                    acl.operation,
                    acl.permission_type
                ),
            }
        }
    }
    Ok(bindings)
}

fn show(bindings: &[AclBinding], format: Format) -> Result<(), AdminError> {
    match format {
        Format::Json => emit_json(&serde_json::json!(
            bindings
                .iter()
                .map(|binding| serde_json::json!({
                    "resource_type": binding.resource_type.name(),
                    "resource_name": binding.resource_name,
                    "pattern_type": binding.pattern_type.name(),
                    "principal": binding.principal,
                    "host": binding.host,
                    "operation": binding.operation.name(),
                    "permission": binding.permission.name(),
                }))
                .collect::<Vec<_>>()
        )),
        Format::Table => {
            let rows: Vec<Vec<String>> = bindings
                .iter()
                .map(|binding| {
                    vec![
                        binding.principal.clone(),
                        binding.permission.name().to_string(),
                        binding.operation.name().to_string(),
                        binding.host.clone(),
                        binding.resource_type.name().to_string(),
                        binding.pattern_type.name().to_string(),
                        binding.resource_name.clone(),
                    ]
                })
                .collect();
            emit(&render_table(
                &[
                    "PRINCIPAL",
                    "PERMISSION",
                    "OPERATION",
                    "HOST",
                    "RESOURCE_TYPE",
                    "PATTERN",
                    "NAME",
                ],
                &rows,
            ))
        }
    }
}

fn list(
    pool: &mut BrokerPool,
    filters: &[AclBindingFilter],
    format: Format,
) -> Result<(), AdminError> {
    let mut bindings: Vec<AclBinding> = Vec::new();
    for filter in filters {
        for binding in describe(pool, filter)? {
            if !bindings.contains(&binding) {
                bindings.push(binding);
            }
        }
    }
    bindings.sort();
    show(&bindings, format)
}

fn delete(
    pool: &mut BrokerPool,
    filters: &[AclBindingFilter],
    format: Format,
) -> Result<(), AdminError> {
    let wire = filters
        .iter()
        .map(|filter| {
            DeleteAclsFilter::default()
                .with_resource_type_filter(filter.resource_type.code())
                .with_resource_name_filter(filter.resource_name.clone().map(StrBytes::from_string))
                .with_pattern_type_filter(filter.pattern_type.code())
                .with_principal_filter(filter.principal.clone().map(StrBytes::from_string))
                .with_host_filter(filter.host.clone().map(StrBytes::from_string))
                .with_operation(filter.operation.code())
                .with_permission_type(filter.permission.code())
        })
        .collect();
    let request = DeleteAclsRequest::default().with_filters(wire);
    let (response, _) = pool.any().call(&request, VERSIONS)?;
    let mut deleted: Vec<AclBinding> = Vec::new();
    let mut errors = Vec::new();
    for result in response.filter_results {
        if result.error_code != 0 {
            errors.push(code_error(result.error_code, result.error_message));
            continue;
        }
        for acl in result.matching_acls {
            if acl.error_code != 0 {
                errors.push(code_error(acl.error_code, acl.error_message));
                continue;
            }
            let binding = (|| {
                Some(AclBinding {
                    resource_type: ResourceType::from_code(acl.resource_type)?,
                    resource_name: acl.resource_name.to_string(),
                    pattern_type: PatternType::from_code(acl.pattern_type)?,
                    principal: acl.principal.to_string(),
                    host: acl.host.to_string(),
                    operation: AclOperation::from_code(acl.operation)?,
                    permission: AclPermission::from_code(acl.permission_type)?,
                })
            })();
            if let Some(binding) = binding
                && !deleted.contains(&binding)
            {
                deleted.push(binding);
            }
        }
    }
    deleted.sort();
    match format {
        Format::Json => show(&deleted, format)?,
        Format::Table => {
            let mut text = String::new();
            for binding in &deleted {
                text.push_str(&format!("deleted {binding}\n"));
            }
            text.push_str(&format!("{} bindings deleted\n", deleted.len()));
            emit(&text)?;
        }
    }
    if !errors.is_empty() {
        return Err(AdminError::Failed(errors.join("; ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn create_makes_every_principal_host_operation_and_resource() {
        let args = BindingArgs {
            allow_principal: vec!["User:alice".into(), "User:bob".into()],
            deny_principal: vec!["User:eve".into()],
            operation: vec!["Read".into(), "describe".into()],
            topic: vec!["orders".into()],
            cluster: true,
            resource_pattern_type: Some("prefixed".into()),
            ..BindingArgs::default()
        };
        let bindings = args.bindings().unwrap();
        assert_eq!(bindings.len(), 3 * 2 * 2);
        assert!(bindings.iter().all(|binding| binding.host == "*"));
        // The cluster is always literal.
        assert!(
            bindings
                .iter()
                .filter(|binding| binding.resource_type == ResourceType::Cluster)
                .all(|binding| binding.pattern_type == PatternType::Literal)
        );
        assert!(
            bindings
                .iter()
                .filter(|binding| binding.resource_type == ResourceType::Topic)
                .all(|binding| binding.pattern_type == PatternType::Prefixed)
        );
    }

    #[test]
    fn bad_flags_are_refused_with_what_to_do() {
        let base = || BindingArgs {
            allow_principal: vec!["User:alice".into()],
            operation: vec!["Read".into()],
            topic: vec!["t".into()],
            ..BindingArgs::default()
        };
        let message = |args: BindingArgs| args.bindings().unwrap_err().to_string();
        assert!(
            message(BindingArgs {
                operation: vec!["Fly".into()],
                ..base()
            })
            .contains("unknown operation")
        );
        assert!(
            message(BindingArgs {
                operation: vec![],
                ..base()
            })
            .contains("--operation")
        );
        assert!(
            message(BindingArgs {
                allow_principal: vec!["alice".into()],
                ..base()
            })
            .contains("User:name")
        );
        assert!(
            message(BindingArgs {
                topic: vec![],
                ..base()
            })
            .contains("--topic")
        );
        assert!(
            message(BindingArgs {
                resource_pattern_type: Some("match".into()),
                ..base()
            })
            .contains("literal or prefixed")
        );
        assert!(
            message(BindingArgs {
                resource_pattern_type: Some("fuzzy".into()),
                ..base()
            })
            .contains("pattern type")
        );
    }

    #[test]
    fn list_without_flags_is_one_filter_for_everything() {
        assert_eq!(
            BindingArgs::default().filters().unwrap(),
            vec![AclBindingFilter::any()]
        );
    }
}
