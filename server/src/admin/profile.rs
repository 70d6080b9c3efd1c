//! Which broker the admin subcommands ask first: `--bootstrap`, else
//! `SLUICE_BOOTSTRAP` (both through clap), else the profile file's
//! `bootstrap`, else 127.0.0.1:9092.
//!
//! The profile file is TOML:
//!
//! ```toml
//! bootstrap = "broker1:9092,broker2:9092"
//! ```
//!
//! How to connect comes the same way, each setting on its own: the flag
//! (or its environment variable) wins over the profile file, which wins
//! over the default (PLAINTEXT). The profile's names are Kafka's client
//! settings with underscores:
//!
//! ```toml
//! security_protocol = "SASL_SSL"        # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
//! sasl_mechanism = "SCRAM-SHA-512"      # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
//! sasl_username = "admin"
//! sasl_password = "..."                 # or SLUICE_SASL_PASSWORD
//! ssl_ca_location = "/etc/sluice/ca.pem"
//! ssl_certificate_location = "/etc/sluice/admin.pem"   # client certificate, optional
//! ssl_key_location = "/etc/sluice/admin.key"
//! ```
//!
//! Profile settings the chosen protocol does not use are ignored (the SASL
//! user under `--security-protocol PLAINTEXT`); as flags they are refused.
//!
//! It is `--profile PATH` (or `SLUICE_PROFILE`), which must exist, else
//! `$XDG_CONFIG_HOME/sluice/profile.toml`, else
//! `~/.config/sluice/profile.toml`; a default location that does not exist
//! is simply not used.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::AdminError;
use super::args::CommonArgs;
use super::security::{ClientSecurity, SaslMechanism, SecurityProtocol, TlsFiles};

/// The bootstrap when neither flag, environment nor profile gives one.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Profile {
    bootstrap: Option<String>,
    security_protocol: Option<SecurityProtocol>,
    sasl_mechanism: Option<SaslMechanism>,
    sasl_username: Option<String>,
    sasl_password: Option<String>,
    ssl_ca_location: Option<PathBuf>,
    ssl_certificate_location: Option<PathBuf>,
    ssl_key_location: Option<PathBuf>,
}

/// Where and how the admin subcommands connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// Comma-separated `host:port` list.
    pub bootstrap: String,
    pub security: ClientSecurity,
}

/// The bootstrap and security settings of `common`: each from its flag
/// (or environment variable), else the profile file, else the default.
pub fn target(common: &CommonArgs) -> Result<Target, AdminError> {
    let (mut profile, path) = load(common)?;
    let bootstrap = match (&common.bootstrap, &profile.bootstrap, &path) {
        (Some(bootstrap), _, _) => checked(bootstrap, "--bootstrap (or SLUICE_BOOTSTRAP)")?,
        (None, Some(bootstrap), Some(path)) => {
            checked(bootstrap, &format!("bootstrap in {}", path.display()))?
        }
        _ => DEFAULT_BOOTSTRAP.to_string(),
    };
    let protocol = common
        .security_protocol
        .or(profile.security_protocol)
        .unwrap_or_default();
    // The profile's settings the protocol does not use are ignored (a
    // profile for SASL_SSL, --security-protocol PLAINTEXT for a loopback
    // listener); the same settings as flags are refused as a mistake.
    if !protocol.sasl() {
        profile.sasl_username = None;
    }
    if !protocol.tls() {
        profile.ssl_ca_location = None;
        profile.ssl_certificate_location = None;
        profile.ssl_key_location = None;
    }
    let mechanism = common
        .sasl_mechanism
        .or(profile.sasl_mechanism)
        .unwrap_or_default();
    let files = TlsFiles {
        ca: common.ssl_ca_location.clone().or(profile.ssl_ca_location),
        certificate: common
            .ssl_certificate_location
            .clone()
            .or(profile.ssl_certificate_location),
        key: common.ssl_key_location.clone().or(profile.ssl_key_location),
    };
    let security = ClientSecurity::new(
        protocol,
        mechanism,
        common.sasl_username.clone().or(profile.sasl_username),
        common.sasl_password.clone().or(profile.sasl_password),
        &files,
    )?;
    Ok(Target {
        bootstrap,
        security,
    })
}

/// The bootstrap address list of `common`.
pub fn bootstrap(common: &CommonArgs) -> Result<String, AdminError> {
    target(common).map(|target| target.bootstrap)
}

/// The profile file of `common` (empty when there is none) and its path.
fn load(common: &CommonArgs) -> Result<(Profile, Option<PathBuf>), AdminError> {
    let (path, required) = match &common.profile {
        Some(path) => (Some(path.clone()), true),
        None => (default_profile_path(), false),
    };
    let Some(path) = path else {
        return Ok((Profile::default(), None));
    };
    if !required && !path.exists() {
        return Ok((Profile::default(), None));
    }
    Ok((read_profile(&path)?, Some(path)))
}

/// `$XDG_CONFIG_HOME/sluice/profile.toml`, else
/// `$HOME/.config/sluice/profile.toml`.
fn default_profile_path() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(config_home) = non_empty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(config_home).join("sluice/profile.toml"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".config/sluice/profile.toml"))
}

fn read_profile(path: &Path) -> Result<Profile, AdminError> {
    let text = std::fs::read_to_string(path).map_err(|error| AdminError::Io {
        what: format!("reading profile file {}", path.display()),
        source: error,
    })?;
    toml::from_str(&text).map_err(|error| {
        AdminError::Invalid(format!(
            "profile file {}: {}",
            path.display(),
            error.message()
        ))
    })
}

/// Refuse a bootstrap list with an entry that is not host:port, naming
/// where it came from.
fn checked(bootstrap: &str, source: &str) -> Result<String, AdminError> {
    let entries: Vec<&str> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(AdminError::Invalid(format!("{source} is empty")));
    }
    for entry in &entries {
        let port_ok = entry
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(AdminError::Invalid(format!(
                "{source}: {entry:?} is not host:port"
            )));
        }
    }
    Ok(entries.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_entries_must_be_host_and_port() {
        assert_eq!(checked("a:1, b:2", "x").ok(), Some("a:1,b:2".to_string()));
        assert_eq!(checked("[::1]:9092", "x").ok(), Some("[::1]:9092".into()));
        for bad in ["", "localhost", "host:port", ":9092", "a:1,b", "h:70000"] {
            assert!(checked(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_flag_wins_over_the_profile() {
        let directory = std::env::temp_dir().join(format!("sluice-profile-{}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("creating a temporary directory");
        let path = directory.join("profile.toml");
        std::fs::write(&path, "bootstrap = \"profile-host:9999\"\n").expect("writing a profile");
        let from_profile = bootstrap(&CommonArgs {
            profile: Some(path.clone()),
            ..CommonArgs::default()
        });
        assert_eq!(from_profile.ok(), Some("profile-host:9999".to_string()));
        let from_flag = bootstrap(&CommonArgs {
            bootstrap: Some("flag-host:1".into()),
            profile: Some(path.clone()),
            ..CommonArgs::default()
        });
        assert_eq!(from_flag.ok(), Some("flag-host:1".to_string()));
        std::fs::write(&path, "bootstrap_servers = \"x:1\"\n").expect("writing a profile");
        let typo = bootstrap(&CommonArgs {
            profile: Some(path),
            ..CommonArgs::default()
        });
        assert!(matches!(typo, Err(AdminError::Invalid(_))), "{typo:?}");
        let _ = std::fs::remove_dir_all(&directory);
    }

    #[test]
    fn security_settings_come_from_the_flag_else_the_profile_else_plaintext() {
        use crate::admin::security::{SaslMechanism, SecurityProtocol};
        let directory =
            std::env::temp_dir().join(format!("sluice-profile-security-{}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("creating a temporary directory");
        let path = directory.join("profile.toml");
        std::fs::write(
            &path,
            "security_protocol = \"SASL_PLAINTEXT\"\nsasl_mechanism = \"PLAIN\"\n\
             sasl_username = \"alice\"\nsasl_password = \"from-profile\"\n",
        )
        .expect("writing a profile");
        let from_profile = target(&CommonArgs {
            profile: Some(path.clone()),
            ..CommonArgs::default()
        })
        .expect("profile settings");
        assert_eq!(from_profile.bootstrap, DEFAULT_BOOTSTRAP);
        assert_eq!(
            from_profile.security.protocol,
            SecurityProtocol::SaslPlaintext
        );
        let login = from_profile.security.sasl.expect("a SASL login");
        assert_eq!(login.mechanism, SaslMechanism::Plain);
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("alice", "from-profile")
        );
        assert!(from_profile.security.tls.is_none());
        // Each flag wins over its profile setting alone.
        let flags = target(&CommonArgs {
            profile: Some(path.clone()),
            sasl_mechanism: Some(SaslMechanism::ScramSha256),
            sasl_password: Some("from-flag".into()),
            ..CommonArgs::default()
        })
        .expect("flag settings");
        let login = flags.security.sasl.expect("a SASL login");
        assert_eq!(login.mechanism, SaslMechanism::ScramSha256);
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("alice", "from-flag")
        );
        // The profile's SASL settings do not apply to PLAINTEXT.
        let plaintext = target(&CommonArgs {
            profile: Some(path.clone()),
            security_protocol: Some(SecurityProtocol::Plaintext),
            ..CommonArgs::default()
        })
        .expect("PLAINTEXT over a SASL profile");
        assert!(plaintext.security.sasl.is_none());
        // TLS without a CA is the user's mistake, named.
        let no_ca = target(&CommonArgs {
            profile: Some(path),
            security_protocol: Some(SecurityProtocol::SaslSsl),
            ..CommonArgs::default()
        });
        assert!(
            matches!(&no_ca, Err(AdminError::Invalid(text)) if text.contains("--ssl-ca-location")),
            "{no_ca:?}"
        );
        let _ = std::fs::remove_dir_all(&directory);
    }
}
