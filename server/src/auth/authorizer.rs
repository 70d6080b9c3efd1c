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
use super::acl::{
    AclOperation, AclPermission, AclTable, CLUSTER_NAME, PatternType, ResourceType, WILDCARD,
};

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

    /// Whether this principal may `operation` some resource of
    /// `resource_type`, as Kafka's `Authorizer.authorizeByResourceType`
    /// (used for idempotent producers without IDEMPOTENT_WRITE, KIP-679):
    /// 1. allowed if a made-up literal name ("hardcode", Kafka's) is: a
    ///    super user, `allow.everyone.if.no.acl.found` with no binding
    ///    applying to it, or a binding that covers every name;
    /// 2. else, over the bindings for the principal (or `User:*`), the
    ///    host (or `*`) and the operation (or ALL), exactly, with no
    ///    implied operations: a DENY of the literal `*` denies; an ALLOW
    ///    of the literal `*` allows; else an ALLOW allows unless a DENY
    ///    dominates it: a literal DENY of the same name (literal ALLOWs
    ///    only), or a prefixed DENY that is a prefix of (or equal to) the
    ///    ALLOW's name.
    pub fn allows_any(&self, operation: AclOperation, resource_type: ResourceType) -> bool {
        const MADE_UP_NAME: &str = "hardcode";
        let Some(enabled) = &self.enabled else {
            return true;
        };
        if self.allows(operation, resource_type, MADE_UP_NAME) {
            return true;
        }
        let mut denied_literal = std::collections::HashSet::new();
        let mut denied_prefixed = std::collections::HashSet::new();
        let mut allowed: Vec<(PatternType, &str)> = Vec::new();
        for (_, binding) in enabled.acls.iter() {
            if binding.resource_type != resource_type
                || !(binding.host == WILDCARD || binding.host == enabled.host)
                || !principal_matches(&binding.principal, enabled.principal)
                || !(binding.operation == operation || binding.operation == AclOperation::All)
            {
                continue;
            }
            let name = binding.resource_name.as_str();
            match (binding.permission, binding.pattern_type) {
                (AclPermission::Deny, PatternType::Literal) if name == WILDCARD => return false,
                (AclPermission::Deny, PatternType::Literal) => {
                    denied_literal.insert(name);
                }
                (AclPermission::Deny, PatternType::Prefixed) => {
                    denied_prefixed.insert(name);
                }
                (AclPermission::Allow, PatternType::Literal | PatternType::Prefixed) => {
                    allowed.push((binding.pattern_type, name));
                }
                _ => {}
            }
        }
        if allowed
            .iter()
            .any(|(pattern, name)| *pattern == PatternType::Literal && *name == WILDCARD)
        {
            return true;
        }
        allowed.iter().any(|(pattern, name)| {
            let literal_denied = *pattern == PatternType::Literal && denied_literal.contains(name);
            let prefix_denied = name
                .char_indices()
                .map(|(index, character)| &name[..index + character.len_utf8()])
                .any(|prefix| denied_prefixed.contains(prefix));
            !literal_denied && !prefix_denied
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

    /// Kafka's authorizeByResourceType (KIP-679's idempotent producer
    /// check): `allow.everyone.if.no.acl.found` and super users through a
    /// made-up name; a DENY of `*` beats everything; a literal DENY undoes
    /// only the literal ALLOW of its name; a prefixed DENY undoes every
    /// ALLOW whose name it is a prefix of; only exact operations (or ALL)
    /// count, not implied ones.
    #[test]
    fn allows_any_follows_kafkas_authorize_by_resource_type() {
        let alice = Principal::user("alice");
        let closed = AuthorizerConfig::default();
        let any_write = |config: &AuthorizerConfig, bindings: &[AclBinding]| {
            let access = Access::new(
                config,
                Arc::new(table(bindings)),
                &alice,
                "10.0.0.1".parse().unwrap(),
            );
            access.allows_any(AclOperation::Write, ResourceType::Topic)
        };
        let prefixed = |binding: AclBinding| AclBinding {
            pattern_type: PatternType::Prefixed,
            ..binding
        };
        let write = AclOperation::Write;

        // No binding at all: the setting decides; super users always may.
        assert!(!any_write(&closed, &[]));
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..AuthorizerConfig::default()
        };
        assert!(any_write(&open, &[]));
        assert!(any_write(&open, &[allow("User:bob", write, "orders")]));
        let super_alice = AuthorizerConfig {
            super_users: vec!["User:alice".into()],
            ..AuthorizerConfig::default()
        };
        assert!(any_write(&super_alice, &[deny("User:alice", write, "*")]));

        // A DENY of every name beats any ALLOW, even with the setting.
        assert!(!any_write(
            &open,
            &[
                allow("User:alice", write, "orders"),
                deny("User:*", write, "*")
            ]
        ));
        assert!(any_write(
            &closed,
            &[allow("User:*", AclOperation::All, "*")]
        ));

        // A literal DENY undoes the literal ALLOW of its name only.
        assert!(!any_write(
            &closed,
            &[
                allow("User:alice", write, "orders"),
                deny("User:alice", write, "orders")
            ]
        ));
        assert!(any_write(
            &closed,
            &[
                prefixed(allow("User:alice", write, "ord")),
                deny("User:alice", write, "ord")
            ]
        ));
        // A prefixed DENY undoes the ALLOWs it covers, not the others.
        assert!(!any_write(
            &closed,
            &[
                allow("User:alice", write, "orders"),
                prefixed(allow("User:alice", write, "order")),
                prefixed(deny("User:alice", write, "ord")),
            ]
        ));
        assert!(any_write(
            &closed,
            &[
                prefixed(allow("User:alice", write, "or")),
                prefixed(deny("User:alice", write, "ord")),
            ]
        ));

        // Someone else's bindings, and implied operations, do not count.
        assert!(!any_write(&closed, &[allow("User:bob", write, "orders")]));
        assert!(!any_write(
            &closed,
            &[allow("User:alice", AclOperation::Read, "orders")]
        ));
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
