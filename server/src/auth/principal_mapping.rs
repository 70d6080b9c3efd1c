//! Kafka's `ssl.principal.mapping.rules` (KIP-371): how a client
//! certificate's subject (RFC 2253, e.g. `CN=alice,OU=apps,O=example`)
//! becomes a principal name. Pure; parsed once at startup.
//!
//! A comma-separated list of rules, the first that applies wins:
//! - `DEFAULT`: the whole distinguished name;
//! - `RULE:pattern/replacement/` with an optional `L` or `U` after the last
//!   slash (lower- or upper-case the result): applies when `pattern`
//!   matches the whole name; the result is the name with the match
//!   replaced by `replacement` (`$1`, `$2`: the pattern's groups).
//!
//! As in Kafka, a subject no rule applies to cannot log in (the TLS
//! connection is closed), and neither pattern nor replacement may contain
//! `/`. Example: `RULE:^CN=(.*?),OU=apps,.*$/$1/L,DEFAULT`.

use regex::Regex;

/// One parsed rule.
#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// The parsed rules; [`PrincipalMapping::default`] is Kafka's default
/// (`DEFAULT`: the name as it is).
#[derive(Debug, Clone)]
pub struct PrincipalMapping {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapping {
    fn default() -> Self {
        Self {
            rules: vec![Rule::Default],
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error(
        "--ssl-principal-mapping-rules: {0:?} is not DEFAULT or RULE:pattern/replacement/[L|U]"
    )]
    Syntax(String),
    #[error(
        "--ssl-principal-mapping-rules: the pattern of {rule:?} is not a regular expression: {reason}"
    )]
    Pattern { rule: String, reason: String },
    #[error("--ssl-principal-mapping-rules is empty")]
    Empty,
}

impl PrincipalMapping {
    /// Parse Kafka's rule list.
    pub fn parse(text: &str) -> Result<PrincipalMapping, MappingError> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let (rule, after) = if let Some(after) = rest.strip_prefix("DEFAULT") {
                (Rule::Default, after)
            } else if let Some(body) = rest.strip_prefix("RULE:") {
                // pattern/replacement/ then an optional L or U.
                let mut parts = body.splitn(3, '/');
                let (Some(pattern), Some(replacement), Some(tail)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(MappingError::Syntax(rest.to_string()));
                };
                let (case, after) = match tail.chars().next() {
                    Some('L') => (Case::Lower, &tail[1..]),
                    Some('U') => (Case::Upper, &tail[1..]),
                    _ => (Case::Keep, tail),
                };
                let anchored = format!("^(?:{pattern})$");
                let compiled = Regex::new(&anchored).map_err(|error| MappingError::Pattern {
                    rule: format!("RULE:{pattern}/{replacement}/"),
                    reason: error.to_string(),
                })?;
                // Kafka's replacement syntax is Java's: $1; Rust's regex
                // reads `$1x` as a group named "1x", so groups are braced.
                let replacement = brace_group_references(replacement);
                (
                    Rule::Replace {
                        pattern: compiled,
                        replacement,
                        case,
                    },
                    after,
                )
            } else {
                return Err(MappingError::Syntax(rest.to_string()));
            };
            rules.push(rule);
            let after = after.trim_start();
            rest = match after.strip_prefix(',') {
                Some(next) => next.trim_start(),
                None if after.is_empty() => after,
                None => return Err(MappingError::Syntax(after.to_string())),
            };
        }
        if rules.is_empty() {
            return Err(MappingError::Empty);
        }
        Ok(PrincipalMapping { rules })
    }

    /// The principal name for the subject `distinguished_name`; `None`
    /// when no rule applies (the client may not log in).
    pub fn apply(&self, distinguished_name: &str) -> Option<String> {
        self.rules.iter().find_map(|rule| match rule {
            Rule::Default => Some(distinguished_name.to_string()),
            Rule::Replace {
                pattern,
                replacement,
                case,
            } => {
                if !pattern.is_match(distinguished_name) {
                    return None;
                }
                let name = pattern
                    .replace(distinguished_name, replacement.as_str())
                    .into_owned();
                Some(match case {
                    Case::Keep => name,
                    Case::Lower => name.to_lowercase(),
                    Case::Upper => name.to_uppercase(),
                })
            }
        })
    }
}

/// `$1` -> `${1}` (digits only), leaving `$$` and everything else alone.
fn brace_group_references(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len() + 4);
    let mut characters = replacement.chars().peekable();
    while let Some(character) = characters.next() {
        if character != '$' {
            out.push(character);
            continue;
        }
        match characters.peek() {
            Some('$') => {
                characters.next();
                out.push_str("$$");
            }
            Some(digit) if digit.is_ascii_digit() => {
                let mut group = String::new();
                while let Some(digit) = characters.peek().filter(|next| next.is_ascii_digit()) {
                    group.push(*digit);
                    characters.next();
                }
                out.push_str(&format!("${{{group}}}"));
            }
            _ => out.push('$'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DN: &str = "CN=Alice,OU=apps,O=example,C=DE";

    #[test]
    fn the_default_is_the_whole_name() {
        assert_eq!(PrincipalMapping::default().apply(DN).as_deref(), Some(DN));
        assert_eq!(
            PrincipalMapping::parse("DEFAULT")
                .unwrap()
                .apply(DN)
                .as_deref(),
            Some(DN)
        );
    }

    #[test]
    fn kafkas_documented_examples() {
        // KIP-371 / Kafka's documentation.
        let mapping = PrincipalMapping::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,\
             DEFAULT",
        )
        .unwrap();
        assert_eq!(
            mapping
                .apply("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown")
                .as_deref(),
            Some("serviceuser")
        );
        assert_eq!(
            mapping
                .apply("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown")
                .as_deref(),
            Some("adminuser@admin")
        );
        assert_eq!(mapping.apply(DN).as_deref(), Some("alice"));
        assert_eq!(mapping.apply("OU=none").as_deref(), Some("OU=none"));
    }

    #[test]
    fn upper_case_groups_and_no_match() {
        let mapping = PrincipalMapping::parse("RULE:^CN=([a-z]+)1,.*$/$1x/U").unwrap();
        assert_eq!(mapping.apply("CN=bob1,O=example").as_deref(), Some("BOBX"));
        // No DEFAULT: a subject no rule applies to has no principal.
        assert_eq!(mapping.apply("CN=carol,O=example"), None);
        // The pattern must match the whole name.
        let partial = PrincipalMapping::parse("RULE:CN=([a-z]+)/$1/").unwrap();
        assert_eq!(partial.apply("CN=bob,O=x"), None);
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in [
            "",
            "NOPE",
            "RULE:only-pattern",
            "RULE:a/b",
            "DEFAULT DEFAULT",
            "RULE:a/b/X",
        ] {
            assert!(PrincipalMapping::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            PrincipalMapping::parse("RULE:(unclosed/x/"),
            Err(MappingError::Pattern { .. })
        ));
    }
}
