//! Where SCRAM credentials live: the controller's replicated metadata
//! (records `UserScramCredential` / `RemoveUserScramCredential`, so every
//! broker's image holds them), and the bootstrap file that creates the
//! first users.
//!
//! Bootstrap: `sluice user bootstrap --data-dir DIR ...` (run while the node
//! is stopped: it takes the data directory's lock) salts the password and
//! writes the credential to `DIR/scram-bootstrap.json`; the broker, once
//! registered with the controller, proposes every credential of that file
//! that the metadata does not hold yet, then deletes the file. The file
//! never holds a password.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::scram::{ScramCredential, ScramMechanism};
use crate::controller::MetadataImage;
use crate::controller::records::UserScramCredential;

/// The bootstrap file's name in the data directory.
pub const BOOTSTRAP_FILE: &str = "scram-bootstrap.json";

/// A user's credential for `mechanism`, from the metadata image.
pub fn lookup(
    image: &MetadataImage,
    name: &str,
    mechanism: ScramMechanism,
) -> Option<ScramCredential> {
    let mechanism_code = u8::try_from(mechanism.code()).ok()?;
    image
        .scram_credential(name, mechanism_code)
        .map(|record| ScramCredential {
            salt: record.salt.clone(),
            stored_key: record.stored_key.clone(),
            server_key: record.server_key.clone(),
            iterations: record.iterations,
        })
}

/// The metadata record for a user's credential.
pub fn record(
    name: &str,
    mechanism: ScramMechanism,
    credential: ScramCredential,
) -> UserScramCredential {
    UserScramCredential {
        name: name.to_string(),
        mechanism: u8::try_from(mechanism.code()).unwrap_or(0),
        salt: credential.salt,
        stored_key: credential.stored_key,
        server_key: credential.server_key,
        iterations: credential.iterations,
    }
}

/// One entry of the bootstrap file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BootstrapEntry {
    name: String,
    mechanism: String,
    salt: String,
    stored_key: String,
    server_key: String,
    iterations: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not parse: {message}")]
    Parse { path: PathBuf, message: String },
}

fn bootstrap_path(data_dir: &Path) -> PathBuf {
    data_dir.join(BOOTSTRAP_FILE)
}

/// Add (or replace) a credential in the bootstrap file of `data_dir`.
pub fn add_bootstrap(
    data_dir: &Path,
    credential: &UserScramCredential,
) -> Result<(), BootstrapError> {
    let path = bootstrap_path(data_dir);
    let mut entries = read_bootstrap(data_dir)?;
    entries.retain(|entry| {
        !(entry.name == credential.name && entry.mechanism == credential.mechanism)
    });
    entries.push(credential.clone());
    let file: Vec<BootstrapEntry> = entries
        .iter()
        .map(|entry| BootstrapEntry {
            name: entry.name.clone(),
            mechanism: ScramMechanism::from_code(i8::try_from(entry.mechanism).unwrap_or(0))
                .map_or("unknown", ScramMechanism::name)
                .to_string(),
            salt: BASE64.encode(&entry.salt),
            stored_key: BASE64.encode(&entry.stored_key),
            server_key: BASE64.encode(&entry.server_key),
            iterations: entry.iterations,
        })
        .collect();
    let text = serde_json::to_string_pretty(&file).map_err(|error| BootstrapError::Parse {
        path: path.clone(),
        message: error.to_string(),
    })?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|source| BootstrapError::Io { path, source })
}

/// The credentials of the bootstrap file (none when there is no file).
pub fn read_bootstrap(data_dir: &Path) -> Result<Vec<UserScramCredential>, BootstrapError> {
    let path = bootstrap_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(BootstrapError::Io { path, source }),
    };
    let parse_error = |message: String| BootstrapError::Parse {
        path: path.clone(),
        message,
    };
    let entries: Vec<BootstrapEntry> =
        serde_json::from_str(&text).map_err(|error| parse_error(error.to_string()))?;
    entries
        .into_iter()
        .map(|entry| {
            let decode = |field: &str| {
                BASE64
                    .decode(field)
                    .map_err(|error| parse_error(format!("{}: {error}", entry.name)))
            };
            let mechanism = ScramMechanism::from_name(&entry.mechanism)
                .ok_or_else(|| parse_error(format!("unknown mechanism {}", entry.mechanism)))?;
            Ok(UserScramCredential {
                name: entry.name.clone(),
                mechanism: u8::try_from(mechanism.code()).unwrap_or(0),
                salt: decode(&entry.salt)?,
                stored_key: decode(&entry.stored_key)?,
                server_key: decode(&entry.server_key)?,
                iterations: entry.iterations,
            })
        })
        .collect()
}

/// Remove the bootstrap file once its credentials are in the metadata.
pub fn remove_bootstrap(data_dir: &Path) -> Result<(), BootstrapError> {
    let path = bootstrap_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BootstrapError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_bootstrap_file_round_trips_and_replaces_a_users_credential() {
        let dir = std::env::temp_dir().join(format!("sluice-bootstrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = record(
            "admin",
            ScramMechanism::Sha512,
            ScramCredential::new(ScramMechanism::Sha512, "one", 4096).unwrap(),
        );
        let second = record(
            "admin",
            ScramMechanism::Sha512,
            ScramCredential::new(
                ScramMechanism::Sha512,
                "very-secret-bootstrap-password",
                4096,
            )
            .unwrap(),
        );
        add_bootstrap(&dir, &first).unwrap();
        add_bootstrap(&dir, &second).unwrap();
        assert_eq!(read_bootstrap(&dir).unwrap(), vec![second]);
        let text = std::fs::read_to_string(dir.join(BOOTSTRAP_FILE)).unwrap();
        assert!(
            !text.contains("very-secret"),
            "the password is never written"
        );
        remove_bootstrap(&dir).unwrap();
        assert!(read_bootstrap(&dir).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
