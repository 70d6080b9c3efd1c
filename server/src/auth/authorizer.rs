//! The authorizer: Kafka's StandardAuthorizer rules over the ACL bindings
//! of the metadata image ([`AclTable`]). Pure: no I/O, no locks.
//!
//! A decision, for a principal connecting from a host, an operation and a
//! resource:
//! 1. a super user (`--super-users`, Kafka's `super.users`) is allowed;
//! 2. no binding applies to the resource at all (whoever it names):
//!    `allow.everyone.if.no.acl.found` decides (default: denied);
//! 3. a DENY binding for the principal (or `User:*`), the host (or `*`)
//!    and the operation (or ALL) denies: deny beats allow;
//! 4. an ALLOW binding likewise allows, where READ, WRITE, DELETE and
//!    ALTER each imply DESCRIBE, and ALTER_CONFIGS implies
//!    DESCRIBE_CONFIGS;
//! 5. otherwise denied.
//!
//! [`Access`] is one request's view: built once per request by the
//! connection's handler (the image's `Arc<AclTable>`, the principal, the
//! host as text); when authorization is off it is a `None` and every
//! check is one branch.

use std::net::IpAddr;
use std::sync::Arc;

use super::Principal;
use super::acl::{AclOperation, AclPermission, AclTable, CLUSTER_NAME, ResourceType, WILDCARD};

/// `--authorizer standard` and what goes with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// Principals allowed everything, as Kafka writes them (`User:admin`).
    pub super_users: Vec<String>,
    /// Kafka's `allow.everyone.if.no.acl.found`: a resource no binding
    /// applies to is open to everyone (default false: closed).
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    /// Parses `User:a;User:b` (Kafka's `super.users` separator; commas are
    /// accepted too). Entries must be `Type:name`.
    pub fn parse_super_users(text: &str) -> Result<Vec<String>, String> {
        text.split([';', ','])
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(entry.to_string()),
                _ => Err(format!(
                    "super user {entry:?} is not a principal of the form User:name"
                )),
            })
            .collect()
    }

    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users
            .iter()
            .any(|super_user| principal_matches(super_user, principal))
    }
}

/// Whether a binding's principal text names `principal` (`User:*` names
/// every user).
fn principal_matches(text: &str, principal: &Principal) -> bool {
    text == super::acl::WILDCARD_PRINCIPAL
        || text
            .split_once(':')
            .is_some_and(|(kind, name)| kind == principal.principal_type && name == principal.name)
}

/// Whether an ALLOW binding for `granted` allows `requested`.
fn implies(granted: AclOperation, requested: AclOperation) -> bool {
    granted == requested
        || granted == AclOperation::All
        || (requested == AclOperation::Describe
            && matches!(
                granted,
                AclOperation::Read
                    | AclOperation::Write
                    | AclOperation::Delete
                    | AclOperation::Alter
            ))
        || (requested == AclOperation::DescribeConfigs && granted == AclOperation::AlterConfigs)
}

/// One decision (the numbered rules of the module docs).
pub fn authorize(
    config: &AuthorizerConfig,
    acls: &AclTable,
    principal: &Principal,
    host: &str,
    operation: AclOperation,
    resource_type: ResourceType,
    resource_name: &str,
) -> bool {
    if config.is_super_user(principal) {
        return true;
    }
    decide(
        config,
        acls,
        principal,
        host,
        operation,
        resource_type,
        resource_name,
    )
}

/// The rules after the super-user check.
fn decide(
    config: &AuthorizerConfig,
    acls: &AclTable,
    principal: &Principal,
    host: &str,
    operation: AclOperation,
    resource_type: ResourceType,
    resource_name: &str,
) -> bool {
    let mut found = false;
    let mut allowed = false;
    for binding in acls.applying_to(resource_type, resource_name) {
        found = true;
        if !principal_matches(&binding.principal, principal)
            || !(binding.host == WILDCARD || binding.host == host)
        {
            continue;
        }
        match binding.permission {
            AclPermission::Deny => {
                if binding.operation == operation || binding.operation == AclOperation::All {
                    return false;
                }
            }
            AclPermission::Allow => allowed |= implies(binding.operation, operation),
            AclPermission::Any => {}
        }
    }
    if !found {
        return config.allow_everyone_if_no_acl_found;
    }
    allowed
}

/// The operations Kafka reports in authorized-operations fields for a
/// resource type (KIP-430).
pub fn supported_operations(resource_type: ResourceType) -> &'static [AclOperation] {
    use AclOperation::*;
    match resource_type {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Describe,
            Delete,
            Alter,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[Read, Describe, Delete],
        ResourceType::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
        ],
        ResourceType::TransactionalId => &[Describe, Write],
        ResourceType::Any => &[],
    }
}

/// One request's authorization: every check is `allows`. Cheap to build
/// (an `Arc` clone and the host's text when on; nothing when off).
pub struct Access<'a> {
    enabled: Option<Enabled<'a>>,
}

struct Enabled<'a> {
    config: &'a AuthorizerConfig,
    acls: Arc<AclTable>,
    principal: &'a Principal,
    host: String,
    super_user: bool,
}

impl<'a> Access<'a> {
    /// Authorization is off: everything is allowed.
    pub fn unrestricted() -> Access<'static> {
        Access { enabled: None }
    }

    pub fn new(
        config: &'a AuthorizerConfig,
        acls: Arc<AclTable>,
        principal: &'a Principal,
        host: IpAddr,
    ) -> Access<'a> {
        Access {
            enabled: Some(Enabled {
                config,
                acls,
                principal,
                host: host.to_string(),
                super_user: config.is_super_user(principal),
            }),
        }
    }

    /// Whether authorization is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.is_some()
    }

    pub fn allows(
        &self,
        operation: AclOperation,
        resource_type: ResourceType,
        resource_name: &str,
    ) -> bool {
        match &self.enabled {
            None => true,
            Some(enabled) => {
                enabled.super_user
                    || decide(
                        enabled.config,
                        &enabled.acls,
                        enabled.principal,
                        &enabled.host,
                        operation,
                        resource_type,
                        resource_name,
                    )
            }
        }
    }

    /// An operation on the cluster resource.
    pub fn allows_cluster(&self, operation: AclOperation) -> bool {
        self.allows(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether any binding would let this principal `operation` some
    /// resource of `resource_type` (Kafka's `authorizeByResourceType`,
    /// used for idempotent producers without IDEMPOTENT_WRITE): a
    /// super user, or an ALLOW binding for the principal and host with
    /// that operation (or ALL) that no DENY of the same pattern undoes.
    pub fn allows_any(&self, operation: AclOperation, resource_type: ResourceType) -> bool {
        let Some(enabled) = &self.enabled else {
            return true;
        };
        if enabled.super_user {
            return true;
        }
        let applies = |binding: &super::acl::AclBinding| {
            binding.resource_type == resource_type
                && principal_matches(&binding.principal, enabled.principal)
                && (binding.host == WILDCARD || binding.host == enabled.host)
                && (binding.operation == operation || binding.operation == AclOperation::All)
        };
        let denied = |allow: &super::acl::AclBinding| {
            enabled.acls.iter().any(|(_, deny)| {
                deny.permission == AclPermission::Deny
                    && applies(deny)
                    && deny.pattern_type == allow.pattern_type
                    && deny.resource_name == allow.resource_name
            })
        };
        enabled.acls.iter().any(|(_, binding)| {
            binding.permission == AclPermission::Allow && applies(binding) && !denied(binding)
        })
    }

    /// Kafka's authorized-operations bit field (bit = operation code) for
    /// a resource; with authorization off, every supported operation.
    pub fn authorized_operations(&self, resource_type: ResourceType, resource_name: &str) -> i32 {
        supported_operations(resource_type)
            .iter()
            .filter(|operation| self.allows(**operation, resource_type, resource_name))
            .fold(0, |bits, operation| bits | (1 << operation.code()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use uuid::Uuid;

    use super::*;
    use crate::auth::acl::{AclBinding, PatternType};

    fn table(bindings: &[AclBinding]) -> AclTable {
        let mut table = AclTable::default();
        for (index, binding) in bindings.iter().enumerate() {
            table.insert(Uuid::from_u128(index as u128 + 1), binding.clone());
        }
        table
    }

    fn allow(principal: &str, operation: AclOperation, name: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission: AclPermission::Allow,
        }
    }

    fn deny(principal: &str, operation: AclOperation, name: &str) -> AclBinding {
        AclBinding {
            permission: AclPermission::Deny,
            ..allow(principal, operation, name)
        }
    }

    fn check(
        config: &AuthorizerConfig,
        acls: &AclTable,
        user: &str,
        operation: AclOperation,
        topic: &str,
    ) -> bool {
        authorize(
            config,
            acls,
            &Principal::user(user),
            "10.0.0.1",
            operation,
            ResourceType::Topic,
            topic,
        )
    }

    #[test]
    fn an_allow_grants_only_its_operation_and_the_describe_it_implies() {
        let config = AuthorizerConfig::default();
        let acls = table(&[allow("User:alice", AclOperation::Read, "orders")]);
        assert!(check(&config, &acls, "alice", AclOperation::Read, "orders"));
        assert!(check(
            &config,
            &acls,
            "alice",
            AclOperation::Describe,
            "orders"
        ));
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Write,
            "orders"
        ));
        assert!(!check(&config, &acls, "bob", AclOperation::Read, "orders"));
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Read,
            "payments"
        ));
        let acls = table(&[allow("User:alice", AclOperation::AlterConfigs, "orders")]);
        assert!(check(
            &config,
            &acls,
            "alice",
            AclOperation::DescribeConfigs,
            "orders"
        ));
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Describe,
            "orders"
        ));
        let acls = table(&[allow("User:alice", AclOperation::All, "orders")]);
        for operation in supported_operations(ResourceType::Topic) {
            assert!(check(&config, &acls, "alice", *operation, "orders"));
        }
    }

    #[test]
    fn deny_beats_allow_and_all() {
        let config = AuthorizerConfig::default();
        let acls = table(&[
            allow("User:alice", AclOperation::All, "orders"),
            deny("User:alice", AclOperation::Write, "orders"),
        ]);
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Write,
            "orders"
        ));
        assert!(check(&config, &acls, "alice", AclOperation::Read, "orders"));
        let acls = table(&[
            allow("User:alice", AclOperation::Read, "orders"),
            deny("User:*", AclOperation::All, "orders"),
        ]);
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Read,
            "orders"
        ));
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Describe,
            "orders"
        ));
    }

    #[test]
    fn prefixed_and_wildcard_bindings_apply_to_families_of_names() {
        let config = AuthorizerConfig::default();
        let prefixed = AclBinding {
            pattern_type: PatternType::Prefixed,
            ..allow("User:alice", AclOperation::Write, "orders.")
        };
        let acls = table(&[prefixed]);
        assert!(check(
            &config,
            &acls,
            "alice",
            AclOperation::Write,
            "orders.eu"
        ));
        assert!(check(
            &config,
            &acls,
            "alice",
            AclOperation::Write,
            "orders."
        ));
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Write,
            "orders"
        ));
        let acls = table(&[allow("User:*", AclOperation::Read, "*")]);
        assert!(check(
            &config,
            &acls,
            "anyone",
            AclOperation::Read,
            "anything"
        ));
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard() {
        let config = AuthorizerConfig::default();
        let elsewhere = AclBinding {
            host: "10.0.0.2".into(),
            ..allow("User:alice", AclOperation::Read, "orders")
        };
        let acls = table(std::slice::from_ref(&elsewhere));
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Read,
            "orders"
        ));
        let here = AclBinding {
            host: "10.0.0.1".into(),
            ..elsewhere
        };
        let acls = table(&[here]);
        assert!(check(&config, &acls, "alice", AclOperation::Read, "orders"));
    }

    #[test]
    fn super_users_may_do_anything_and_no_acl_found_is_a_setting() {
        let config = AuthorizerConfig {
            super_users: AuthorizerConfig::parse_super_users("User:admin; User:ops").unwrap(),
            allow_everyone_if_no_acl_found: false,
        };
        let acls = table(&[deny("User:*", AclOperation::All, "orders")]);
        assert!(check(
            &config,
            &acls,
            "admin",
            AclOperation::Write,
            "orders"
        ));
        assert!(check(
            &config,
            &acls,
            "ops",
            AclOperation::Delete,
            "elsewhere"
        ));
        assert!(!check(
            &config,
            &acls,
            "alice",
            AclOperation::Read,
            "elsewhere"
        ));
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..config
        };
        assert!(check(
            &open,
            &acls,
            "alice",
            AclOperation::Read,
            "elsewhere"
        ));
        // A binding for someone else still closes the resource.
        assert!(!check(&open, &acls, "alice", AclOperation::Read, "orders"));
        assert!(AuthorizerConfig::parse_super_users("admin").is_err());
    }

    #[test]
    fn access_off_allows_everything_and_on_reports_operations() {
        let principal = Principal::user("alice");
        assert!(Access::unrestricted().allows_cluster(AclOperation::Alter));
        assert_eq!(
            Access::unrestricted().authorized_operations(ResourceType::Group, "g"),
            (1 << 3) | (1 << 8) | (1 << 6)
        );
        let config = AuthorizerConfig::default();
        let acls = Arc::new(table(&[allow("User:alice", AclOperation::Write, "orders")]));
        let access = Access::new(&config, acls, &principal, "10.0.0.1".parse().unwrap());
        assert!(access.is_enabled());
        assert_eq!(
            access.authorized_operations(ResourceType::Topic, "orders"),
            (1 << 4) | (1 << 8)
        );
        assert!(access.allows_any(AclOperation::Write, ResourceType::Topic));
        assert!(!access.allows_any(AclOperation::Read, ResourceType::Topic));
        assert!(!access.allows_cluster(AclOperation::IdempotentWrite));
    }
}
