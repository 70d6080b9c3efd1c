//! `sluice user create|list|delete|bootstrap`: SCRAM users.
//!
//! `create`, `list` and `delete` are Kafka clients (AlterUserScramCredentials
//! and DescribeUserScramCredentials, KIP-554), like
//! `kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]'`:
//! the password is salted here (PBKDF2) and only the salted password
//! travels. They connect like every admin subcommand (PLAINTEXT, SSL,
//! SASL_PLAINTEXT or SASL_SSL: `admin::security`). `bootstrap` works offline on a stopped
//! node's data directory, for the first user of a cluster whose listeners
//! all need authentication (see `auth::credentials`).

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    AlterUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest;
use kafka_protocol::protocol::StrBytes;

use super::args::CommonArgs;
use super::output::{Format, emit, emit_json};
use super::pool::BrokerPool;
use super::{AdminError, exit, profile};
use crate::auth::credentials;
use crate::auth::scram::{ITERATIONS_MIN, ScramCredential, ScramMechanism};

/// `sluice user ...`
#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user, or replace its password, for a SCRAM mechanism.
    Create(CredentialArgs),
    /// Users and the mechanisms they have credentials for.
    List,
    /// Delete a user's credential for a mechanism.
    Delete {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
    },
    /// Offline: add a user to a stopped node's data directory; the broker
    /// writes it into the cluster's metadata when it starts.
    Bootstrap {
        #[command(flatten)]
        credential: CredentialArgs,
        /// The node's data directory (the node must be stopped).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct CredentialArgs {
    pub name: String,
    /// The password (else SLUICE_USER_PASSWORD).
    #[arg(long, env = "SLUICE_USER_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, default_value = "SCRAM-SHA-512")]
    pub mechanism: String,
    /// PBKDF2 iterations (4096..=16384).
    #[arg(long, default_value_t = ITERATIONS_MIN)]
    pub iterations: i32,
}

fn mechanism(name: &str) -> Result<ScramMechanism, AdminError> {
    ScramMechanism::from_name(name).ok_or_else(|| {
        AdminError::Invalid(format!(
            "unknown mechanism {name:?}: SCRAM-SHA-256 or SCRAM-SHA-512"
        ))
    })
}

fn salted(args: &CredentialArgs) -> Result<(ScramMechanism, Vec<u8>, Vec<u8>), AdminError> {
    let mechanism = mechanism(&args.mechanism)?;
    let mut salt = vec![0; 32];
    getrandom::getrandom(&mut salt)
        .map_err(|error| AdminError::Failed(format!("no randomness for a salt: {error}")))?;
    if !(ITERATIONS_MIN..=crate::auth::scram::ITERATIONS_MAX).contains(&args.iterations) {
        return Err(AdminError::Invalid(format!(
            "--iterations must be between {ITERATIONS_MIN} and {}",
            crate::auth::scram::ITERATIONS_MAX
        )));
    }
    let rounds = u32::try_from(args.iterations).unwrap_or(4096);
    let salted = mechanism.salted_password(args.password.as_bytes(), &salt, rounds);
    Ok((mechanism, salt, salted))
}

pub fn run(args: UserArgs) -> ExitCode {
    let format = args.common.format;
    let result = match args.command {
        UserCommand::Bootstrap {
            credential,
            data_dir,
        } => bootstrap(&credential, &data_dir),
        command => profile::target(&args.common).and_then(|bootstrap| {
            let mut pool = BrokerPool::connect(&bootstrap)?;
            match command {
                UserCommand::Create(credential) => create(&mut pool, &credential),
                UserCommand::List => list(&mut pool, format),
                UserCommand::Delete {
                    name,
                    mechanism: text,
                } => delete(&mut pool, &name, mechanism(&text)?),
                UserCommand::Bootstrap { .. } => unreachable!("handled above"),
            }
        }),
    };
    exit("user", result)
}

fn bootstrap(args: &CredentialArgs, data_dir: &std::path::Path) -> Result<(), AdminError> {
    let mechanism = mechanism(&args.mechanism)?;
    // The node must be stopped: its lock is free.
    let lock = crate::datadir::DataDirLock::acquire(data_dir)
        .map_err(|error| AdminError::Failed(format!("{error:#}")))?;
    let credential = ScramCredential::new(mechanism, &args.password, args.iterations)
        .map_err(|error| AdminError::Invalid(error.to_string()))?;
    credentials::add_bootstrap(
        data_dir,
        &credentials::record(&args.name, mechanism, credential),
    )
    .map_err(|error| AdminError::Failed(error.to_string()))?;
    drop(lock);
    emit(&format!(
        "user {} ({}) will be created when the node starts\n",
        args.name,
        mechanism.name()
    ))
}

fn check_results(
    results: impl IntoIterator<Item = (String, i16, Option<String>)>,
) -> Result<(), AdminError> {
    for (user, code, message) in results {
        if code != 0 {
            return Err(AdminError::Failed(format!(
                "user {user}: error {code}: {}",
                message.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

fn create(pool: &mut BrokerPool, args: &CredentialArgs) -> Result<(), AdminError> {
    let (mechanism, salt, salted_password) = salted(args)?;
    let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(args.name.clone()))
            .with_mechanism(mechanism.code())
            .with_iterations(args.iterations)
            .with_salt(Bytes::from(salt))
            .with_salted_password(Bytes::from(salted_password)),
    ]);
    let (response, _) = pool.any().call(&request, 0..=0)?;
    check_results(response.results.into_iter().map(|result| {
        (
            result.user.to_string(),
            result.error_code,
            result.error_message.map(|message| message.to_string()),
        )
    }))?;
    emit(&format!(
        "user {} ({}) created\n",
        args.name,
        mechanism.name()
    ))
}

fn delete(pool: &mut BrokerPool, name: &str, mechanism: ScramMechanism) -> Result<(), AdminError> {
    let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        ScramCredentialDeletion::default()
            .with_name(StrBytes::from_string(name.to_string()))
            .with_mechanism(mechanism.code()),
    ]);
    let (response, _) = pool.any().call(&request, 0..=0)?;
    check_results(response.results.into_iter().map(|result| {
        (
            result.user.to_string(),
            result.error_code,
            result.error_message.map(|message| message.to_string()),
        )
    }))?;
    emit(&format!("user {name} ({}) deleted\n", mechanism.name()))
}

fn list(pool: &mut BrokerPool, format: Format) -> Result<(), AdminError> {
    let request = DescribeUserScramCredentialsRequest::default().with_users(None);
    let (response, _) = pool.any().call(&request, 0..=0)?;
    if response.error_code != 0 {
        return Err(AdminError::Failed(format!(
            "error {}: {}",
            response.error_code,
            response
                .error_message
                .map(|message| message.to_string())
                .unwrap_or_default()
        )));
    }
    let users: Vec<(String, Vec<(String, i32)>)> = response
        .results
        .into_iter()
        .map(|result| {
            let mechanisms = result
                .credential_infos
                .iter()
                .map(|info| {
                    (
                        ScramMechanism::from_code(info.mechanism)
                            .map_or("unknown", ScramMechanism::name)
                            .to_string(),
                        info.iterations,
                    )
                })
                .collect();
            (result.user.to_string(), mechanisms)
        })
        .collect();
    match format {
        Format::Json => emit_json(&serde_json::json!(users
            .iter()
            .map(|(user, mechanisms)| serde_json::json!({
                "user": user,
                "mechanisms": mechanisms
                    .iter()
                    .map(|(name, iterations)| serde_json::json!({"mechanism": name, "iterations": iterations}))
                    .collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            let mut text = String::from("USER\tMECHANISM\tITERATIONS\n");
            for (user, mechanisms) in &users {
                for (name, iterations) in mechanisms {
                    text.push_str(&format!("{user}\t{name}\t{iterations}\n"));
                }
            }
            emit(&text)
        }
    }
}
