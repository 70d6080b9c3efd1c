//! ACL bindings as Kafka defines them (KIP-290 patterns): what a binding
//! names (resource type, pattern, principal, host, operation, permission),
//! the filters DescribeAcls and DeleteAcls match with, and [`AclTable`],
//! the set of bindings the metadata image holds (records
//! `AccessControlEntry` / `RemoveAccessControlEntry`).
//!
//! Pure: no I/O, no locks. Codes are Kafka's wire codes, so the handlers
//! convert nothing but check them.

use std::collections::BTreeMap;
use std::fmt;

use uuid::Uuid;

/// Kafka's ResourceType codes. `Any` only appears in filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Any,
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

impl ResourceType {
    pub fn from_code(code: i8) -> Option<ResourceType> {
        match code {
            1 => Some(ResourceType::Any),
            2 => Some(ResourceType::Topic),
            3 => Some(ResourceType::Group),
            4 => Some(ResourceType::Cluster),
            5 => Some(ResourceType::TransactionalId),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            ResourceType::Any => 1,
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Any => "ANY",
            ResourceType::Topic => "TOPIC",
            ResourceType::Group => "GROUP",
            ResourceType::Cluster => "CLUSTER",
            ResourceType::TransactionalId => "TRANSACTIONAL_ID",
        }
    }
}

/// Kafka's PatternType codes. `Any` and `Match` only appear in filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    Any,
    /// A filter matching every binding that applies to the filter's name
    /// (literal equal, the `*` wildcard, prefixes of it).
    Match,
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn from_code(code: i8) -> Option<PatternType> {
        match code {
            1 => Some(PatternType::Any),
            2 => Some(PatternType::Match),
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            PatternType::Any => 1,
            PatternType::Match => 2,
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PatternType::Any => "ANY",
            PatternType::Match => "MATCH",
            PatternType::Literal => "LITERAL",
            PatternType::Prefixed => "PREFIXED",
        }
    }

    pub fn parse(text: &str) -> Option<PatternType> {
        [
            PatternType::Any,
            PatternType::Match,
            PatternType::Literal,
            PatternType::Prefixed,
        ]
        .into_iter()
        .find(|pattern| pattern.name().eq_ignore_ascii_case(text))
    }
}

/// Kafka's AclOperation codes. `Any` only appears in filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AclOperation {
    Any,
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl AclOperation {
    /// Every operation a binding may name (not `Any`).
    pub const BINDABLE: [AclOperation; 11] = [
        AclOperation::All,
        AclOperation::Read,
        AclOperation::Write,
        AclOperation::Create,
        AclOperation::Delete,
        AclOperation::Alter,
        AclOperation::Describe,
        AclOperation::ClusterAction,
        AclOperation::DescribeConfigs,
        AclOperation::AlterConfigs,
        AclOperation::IdempotentWrite,
    ];

    pub fn from_code(code: i8) -> Option<AclOperation> {
        match code {
            1 => Some(AclOperation::Any),
            2 => Some(AclOperation::All),
            3 => Some(AclOperation::Read),
            4 => Some(AclOperation::Write),
            5 => Some(AclOperation::Create),
            6 => Some(AclOperation::Delete),
            7 => Some(AclOperation::Alter),
            8 => Some(AclOperation::Describe),
            9 => Some(AclOperation::ClusterAction),
            10 => Some(AclOperation::DescribeConfigs),
            11 => Some(AclOperation::AlterConfigs),
            12 => Some(AclOperation::IdempotentWrite),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            AclOperation::Any => 1,
            AclOperation::All => 2,
            AclOperation::Read => 3,
            AclOperation::Write => 4,
            AclOperation::Create => 5,
            AclOperation::Delete => 6,
            AclOperation::Alter => 7,
            AclOperation::Describe => 8,
            AclOperation::ClusterAction => 9,
            AclOperation::DescribeConfigs => 10,
            AclOperation::AlterConfigs => 11,
            AclOperation::IdempotentWrite => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AclOperation::Any => "ANY",
            AclOperation::All => "ALL",
            AclOperation::Read => "READ",
            AclOperation::Write => "WRITE",
            AclOperation::Create => "CREATE",
            AclOperation::Delete => "DELETE",
            AclOperation::Alter => "ALTER",
            AclOperation::Describe => "DESCRIBE",
            AclOperation::ClusterAction => "CLUSTER_ACTION",
            AclOperation::DescribeConfigs => "DESCRIBE_CONFIGS",
            AclOperation::AlterConfigs => "ALTER_CONFIGS",
            AclOperation::IdempotentWrite => "IDEMPOTENT_WRITE",
        }
    }

    /// Kafka's names, case-insensitive, `_` optional (`DescribeConfigs`
    /// as kafka-acls.sh spells it, or `DESCRIBE_CONFIGS`).
    pub fn parse(text: &str) -> Option<AclOperation> {
        let wanted: String = text.chars().filter(|c| *c != '_').collect();
        std::iter::once(AclOperation::Any)
            .chain(AclOperation::BINDABLE)
            .find(|operation| {
                operation
                    .name()
                    .replace('_', "")
                    .eq_ignore_ascii_case(&wanted)
            })
    }
}

/// Kafka's AclPermissionType codes. `Any` only appears in filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AclPermission {
    Any,
    Deny,
    Allow,
}

impl AclPermission {
    pub fn from_code(code: i8) -> Option<AclPermission> {
        match code {
            1 => Some(AclPermission::Any),
            2 => Some(AclPermission::Deny),
            3 => Some(AclPermission::Allow),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            AclPermission::Any => 1,
            AclPermission::Deny => 2,
            AclPermission::Allow => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AclPermission::Any => "ANY",
            AclPermission::Deny => "DENY",
            AclPermission::Allow => "ALLOW",
        }
    }
}

/// The name of the cluster resource (Kafka's `kafka-cluster`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The literal resource name and host that match everything.
pub const WILDCARD: &str = "*";
/// The principal that matches every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// One ACL binding: `principal` from `host` is allowed (or denied)
/// `operation` on the resources `pattern_type` + `resource_name` select.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// An IP address as the client connects from, or `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// Why a binding cannot be stored (CreateAcls answers INVALID_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclBindingError {
    #[error("resource type {0} cannot be bound")]
    ResourceType(&'static str),
    #[error("pattern type {0} cannot be bound (LITERAL or PREFIXED)")]
    PatternType(&'static str),
    #[error("operation {0} cannot be bound")]
    Operation(&'static str),
    #[error("permission type {0} cannot be bound (ALLOW or DENY)")]
    Permission(&'static str),
    #[error("the resource name must not be empty")]
    EmptyName,
    #[error("the cluster resource is named kafka-cluster, not {0:?}")]
    ClusterName(String),
    #[error("principal {0:?} is not of the form Type:name")]
    Principal(String),
    #[error("the host must not be empty")]
    EmptyHost,
}

impl AclBinding {
    /// Kafka's checks before a binding is created.
    pub fn validate(&self) -> Result<(), AclBindingError> {
        if self.resource_type == ResourceType::Any {
            return Err(AclBindingError::ResourceType(self.resource_type.name()));
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Err(AclBindingError::PatternType(self.pattern_type.name()));
        }
        if self.operation == AclOperation::Any {
            return Err(AclBindingError::Operation(self.operation.name()));
        }
        if self.permission == AclPermission::Any {
            return Err(AclBindingError::Permission(self.permission.name()));
        }
        if self.resource_name.is_empty() {
            return Err(AclBindingError::EmptyName);
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(AclBindingError::ClusterName(self.resource_name.clone()));
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Err(AclBindingError::Principal(self.principal.clone())),
        }
        if self.host.is_empty() {
            return Err(AclBindingError::EmptyHost);
        }
        Ok(())
    }

    /// Whether this binding's pattern selects resource `name` (of the
    /// binding's resource type).
    pub fn applies_to(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.resource_name == name || self.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
            PatternType::Any | PatternType::Match => false,
        }
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {} from {} {} {}:{}:{}",
            self.principal,
            self.permission.name(),
            self.host,
            self.operation.name(),
            self.resource_type.name(),
            self.pattern_type.name(),
            self.resource_name
        )
    }
}

/// What DescribeAcls and DeleteAcls select: `None` and the `Any` values
/// match everything; `PatternType::Match` with a name matches the
/// bindings that would apply to that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclBindingFilter {
    /// Matches every binding.
    pub fn any() -> AclBindingFilter {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    pub fn matches(&self, binding: &AclBinding) -> bool {
        let resource_type =
            self.resource_type == ResourceType::Any || self.resource_type == binding.resource_type;
        let pattern = match (self.pattern_type, &self.resource_name) {
            (PatternType::Any, None) => true,
            (PatternType::Any, Some(name)) => binding.resource_name == *name,
            (PatternType::Match, None) => true,
            (PatternType::Match, Some(name)) => binding.applies_to(name),
            (pattern_type, name) => {
                pattern_type == binding.pattern_type
                    && name
                        .as_ref()
                        .is_none_or(|name| binding.resource_name == *name)
            }
        };
        let principal = self
            .principal
            .as_ref()
            .is_none_or(|principal| *principal == binding.principal);
        let host = self.host.as_ref().is_none_or(|host| *host == binding.host);
        let operation = self.operation == AclOperation::Any || self.operation == binding.operation;
        let permission =
            self.permission == AclPermission::Any || self.permission == binding.permission;
        resource_type && pattern && principal && host && operation && permission
    }
}

/// The bindings the metadata holds, each under the id its
/// `AccessControlEntry` record gave it, indexed by resource for the
/// authorizer: literal bindings by (type, name), prefixed ones by type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclTable {
    by_id: BTreeMap<Uuid, AclBinding>,
    literal: BTreeMap<(ResourceType, String), Vec<Uuid>>,
    prefixed: BTreeMap<ResourceType, Vec<Uuid>>,
}

impl AclTable {
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every binding with its id, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &AclBinding)> {
        self.by_id.iter()
    }

    pub fn get(&self, id: &Uuid) -> Option<&AclBinding> {
        self.by_id.get(id)
    }

    /// The id of a binding equal to `binding`, if one is stored.
    pub fn find(&self, binding: &AclBinding) -> Option<Uuid> {
        let ids = match binding.pattern_type {
            PatternType::Literal => self
                .literal
                .get(&(binding.resource_type, binding.resource_name.clone())),
            _ => self.prefixed.get(&binding.resource_type),
        }?;
        ids.iter()
            .copied()
            .find(|id| self.by_id.get(id) == Some(binding))
    }

    /// Stores `binding` under `id` (replacing what `id` held).
    pub fn insert(&mut self, id: Uuid, binding: AclBinding) {
        self.remove(&id);
        match binding.pattern_type {
            PatternType::Prefixed => self
                .prefixed
                .entry(binding.resource_type)
                .or_default()
                .push(id),
            _ => self
                .literal
                .entry((binding.resource_type, binding.resource_name.clone()))
                .or_default()
                .push(id),
        }
        self.by_id.insert(id, binding);
    }

    /// Removes the binding `id`; removing what is not there changes
    /// nothing (a retried deletion).
    pub fn remove(&mut self, id: &Uuid) -> Option<AclBinding> {
        let binding = self.by_id.remove(id)?;
        let (ids, emptied) = match binding.pattern_type {
            PatternType::Prefixed => {
                let ids = self.prefixed.get_mut(&binding.resource_type);
                (ids, None)
            }
            _ => {
                let key = (binding.resource_type, binding.resource_name.clone());
                (self.literal.get_mut(&key), Some(key))
            }
        };
        if let Some(ids) = ids {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                match emptied {
                    Some(key) => {
                        self.literal.remove(&key);
                    }
                    None => {
                        self.prefixed.remove(&binding.resource_type);
                    }
                }
            }
        }
        Some(binding)
    }

    /// The bindings that apply to resource `name` of `resource_type`:
    /// literal ones naming it, the literal `*`, and the prefixed ones it
    /// starts with.
    pub fn applying_to<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let literal = self
            .literal
            .get(&(resource_type, name.to_string()))
            .into_iter()
            .flatten();
        let wildcard = (name != WILDCARD)
            .then(|| self.literal.get(&(resource_type, WILDCARD.to_string())))
            .flatten()
            .into_iter()
            .flatten();
        let prefixed = self
            .prefixed
            .get(&resource_type)
            .into_iter()
            .flatten()
            .filter(move |id| {
                self.by_id
                    .get(id)
                    .is_some_and(|binding| name.starts_with(binding.resource_name.as_str()))
            });
        literal
            .chain(wildcard)
            .chain(prefixed)
            .filter_map(|id| self.by_id.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn binding(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        operation: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    #[test]
    fn codes_and_names_round_trip() {
        for code in 1..=5 {
            assert_eq!(
                ResourceType::from_code(code).map(ResourceType::code),
                Some(code)
            );
        }
        for code in 1..=4 {
            assert_eq!(
                PatternType::from_code(code).map(PatternType::code),
                Some(code)
            );
        }
        for code in 1..=12 {
            let operation = AclOperation::from_code(code).map(AclOperation::code);
            assert_eq!(operation, Some(code));
        }
        assert_eq!(AclOperation::from_code(0), None);
        assert_eq!(AclOperation::from_code(13), None);
        assert_eq!(
            AclOperation::parse("DescribeConfigs"),
            Some(AclOperation::DescribeConfigs)
        );
        assert_eq!(
            AclOperation::parse("describe_configs"),
            Some(AclOperation::DescribeConfigs)
        );
        assert_eq!(
            AclOperation::parse("IdempotentWrite"),
            Some(AclOperation::IdempotentWrite)
        );
        assert_eq!(AclOperation::parse("fly"), None);
        assert_eq!(PatternType::parse("prefixed"), Some(PatternType::Prefixed));
    }

    #[test]
    fn bindings_are_validated_as_kafka_does() {
        let good = binding(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            "User:alice",
            AclOperation::Read,
            AclPermission::Allow,
        );
        assert_eq!(good.validate(), Ok(()));
        let cases = [
            AclBinding {
                resource_type: ResourceType::Any,
                ..good.clone()
            },
            AclBinding {
                pattern_type: PatternType::Match,
                ..good.clone()
            },
            AclBinding {
                operation: AclOperation::Any,
                ..good.clone()
            },
            AclBinding {
                permission: AclPermission::Any,
                ..good.clone()
            },
            AclBinding {
                resource_name: String::new(),
                ..good.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            AclBinding {
                host: String::new(),
                ..good.clone()
            },
            AclBinding {
                resource_type: ResourceType::Cluster,
                ..good.clone()
            },
        ];
        for case in cases {
            assert!(case.validate().is_err(), "{case:?}");
        }
    }

    #[test]
    fn the_table_finds_literal_wildcard_and_prefixed_bindings() {
        let mut table = AclTable::default();
        let literal = binding(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            "User:alice",
            AclOperation::Read,
            AclPermission::Allow,
        );
        let wildcard = AclBinding {
            resource_name: "*".into(),
            ..literal.clone()
        };
        let prefixed = AclBinding {
            resource_name: "ord".into(),
            pattern_type: PatternType::Prefixed,
            ..literal.clone()
        };
        let group = AclBinding {
            resource_type: ResourceType::Group,
            ..literal.clone()
        };
        let ids: Vec<Uuid> = (1..=4).map(|n| Uuid::from_bytes([n; 16])).collect();
        table.insert(ids[0], literal.clone());
        table.insert(ids[1], wildcard.clone());
        table.insert(ids[2], prefixed.clone());
        table.insert(ids[3], group);
        let found: Vec<&AclBinding> = table.applying_to(ResourceType::Topic, "orders").collect();
        assert_eq!(found, vec![&literal, &wildcard, &prefixed]);
        let found: Vec<&AclBinding> = table.applying_to(ResourceType::Topic, "other").collect();
        assert_eq!(found, vec![&wildcard]);
        assert_eq!(table.find(&prefixed), Some(ids[2]));
        assert_eq!(table.remove(&ids[2]), Some(prefixed.clone()));
        assert_eq!(table.remove(&ids[2]), None);
        assert_eq!(table.find(&prefixed), None);
        assert_eq!(table.applying_to(ResourceType::Topic, "orders").count(), 2);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn filters_match_as_kafka_filters_do() {
        let prefixed = binding(
            ResourceType::Topic,
            "ord",
            PatternType::Prefixed,
            "User:alice",
            AclOperation::Write,
            AclPermission::Deny,
        );
        assert!(AclBindingFilter::any().matches(&prefixed));
        let mut filter = AclBindingFilter::any();
        filter.resource_name = Some("orders".into());
        assert!(!filter.matches(&prefixed), "ANY with a name is exact");
        filter.pattern_type = PatternType::Match;
        assert!(filter.matches(&prefixed), "MATCH selects what applies");
        filter.pattern_type = PatternType::Literal;
        assert!(!filter.matches(&prefixed));
        let mut filter = AclBindingFilter::any();
        filter.pattern_type = PatternType::Prefixed;
        filter.principal = Some("User:alice".into());
        filter.permission = AclPermission::Deny;
        filter.operation = AclOperation::Write;
        assert!(filter.matches(&prefixed));
        filter.host = Some("10.0.0.1".into());
        assert!(!filter.matches(&prefixed));
    }
}
