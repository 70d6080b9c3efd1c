//! `sluice`: run a broker (`sluice` or `sluice serve`), or an admin
//! subcommand (`sluice topic|group|cluster|produce|consume`, see
//! `admin/mod.rs`). See `sluice --help`.
//!
//! Exit codes of `sluice serve`: 0 after a clean stop (SIGINT/SIGTERM), 1
//! when the broker cannot start (data directory, listen address, opening
//! partitions), 2 for a configuration error. A panic anywhere is a broken
//! invariant: [`fatal_panic`] logs it and aborts the process (SIGABRT),
//! in every build, so a supervisor restarts the broker and recovery runs.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sluice_server::admin;
use sluice_server::broker::Broker;
use sluice_server::cli::{Cli, Command, LogFormat, LogSettings, ServeConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Topic(args)) => return admin::topic::run(args),
        Some(Command::Group(args)) => return admin::group::run(args),
        Some(Command::Cluster(args)) => return admin::cluster::run(args),
        Some(Command::Transactions(args)) => return admin::transactions::run(args),
        Some(Command::Produce(args)) => return admin::produce::run(args),
        Some(Command::User(args)) => return admin::user::run(args),
        Some(Command::Acl(args)) => return admin::acl::run(args),
        Some(Command::Consume(args)) => return admin::consume::run(args),
        Some(Command::DevCluster(args)) => return sluice_server::devcluster::run(args),
        None => cli.serve,
    };
    let ServeConfig {
        broker: config,
        logging,
    } = match ServeConfig::resolve(args) {
        Ok(config) => config,
        Err(error) => {
            say(format_args!("sluice: {error:#}"));
            return ExitCode::from(2);
        }
    };
    init_logging(&logging);
    std::panic::set_hook(Box::new(fatal_panic));
    sluice_engine::failure::on_storage_failure(storage_failure);
    raise_open_file_limit();
    // Block the signals before any thread starts, so that only the signal
    // iterator receives them.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(error) => {
            say(format_args!("sluice: cannot handle signals: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let listen = config.listen;
    let cores = config.cores;
    let data_dir = config.data_dir.clone();
    let advertised = format!("{}:{}", config.advertised_host, config.advertised_port);
    if listen.ip().is_unspecified() && config.advertised_host == listen.ip().to_string() {
        tracing::warn!(
            %advertised,
            "clients are told to connect to a wildcard address, which only works from this \
             machine; set --advertised to a host name or address that clients can reach"
        );
    }
    // The first signal ends a startup still waiting for the controller
    // quorum, or the serving broker afterwards.
    let (signalled, first_signal) = std::sync::mpsc::channel();
    let watcher = std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                sluice_server::broker::abort_startup();
                if signalled.send(signal).is_err() {
                    return;
                }
            }
        });
    if let Err(error) = watcher {
        say(format_args!("sluice: cannot watch for signals: {error}"));
        return ExitCode::FAILURE;
    }
    let broker = match Broker::start(config) {
        Ok(broker) => broker,
        Err(error) if error.is::<sluice_server::broker::StartupAborted>() => {
            tracing::info!("stopped by a signal before serving");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            say(format_args!("sluice: {error:#}"));
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, %advertised, cores, data_dir = %data_dir.display(), "sluice is serving");
    if let Ok(signal) = first_signal.recv() {
        tracing::info!(signal, "shutting down");
    }
    broker.stop();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Log to stderr: `format` lines filtered by `filter` (checked by
/// `ServeConfig::resolve`); ANSI colours only on a terminal, and not when
/// NO_COLOR is set.
///
/// A line that cannot be written is dropped: stderr may be a file on the
/// data disk when it fills, or a pipe whose reader went away. By default
/// tracing-subscriber reports such an error with `eprintln!`, which panics
/// when stderr fails, and a panic stops the broker (`fatal_panic`): a
/// broker must keep serving, and refuse only the appends it cannot make
/// durable, whether or not its log can be written.
fn init_logging(logging: &LogSettings) {
    let filter = EnvFilter::try_new(&logging.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    match logging.format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .log_internal_errors(false)
                .init();
        }
        LogFormat::Json => {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_thread_names(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .log_internal_errors(false)
                .init();
        }
    }
}

/// Exit status of a halt after a storage failure (sysexits' EX_IOERR).
const EXIT_STORAGE_FAILURE: i32 = 74;

/// A partition's log, or the controller's Raft store, stopped after an I/O
/// error it cannot retry (engine failure.rs): halt, as Kafka halts a broker
/// whose only log directory failed. Serving on, the broker kept leading
/// partitions it could no longer write (every produce KAFKA_STORAGE_ERROR)
/// and the cluster never moved them; halted, its session expires, the
/// controller elects other replicas, and a restart runs recovery, which
/// knows what is on disk. A full disk is not such an error (appends fail
/// with KAFKA_STORAGE_ERROR until space returns).
fn storage_failure(dir: &std::path::Path, reason: &str) {
    const HALTING: &str = "storage failure: halting so that other replicas take over; restart \
                           once the disk is sound (recovery checks the data directory)";
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(target: "sluice::fatal", dir = %dir.display(), reason, "{HALTING}");
    } else {
        say(format_args!(
            "sluice: {HALTING}: {}: {reason}",
            dir.display()
        ));
    }
    std::process::exit(EXIT_STORAGE_FAILURE);
}

/// Raise the soft limit on open files to the hard limit: a broker keeps a
/// file per segment and index open, and a host's default soft limit
/// (often 1,024) is reached at a few hundred partitions, where a segment
/// roll failing with EMFILE would stop a log. Kafka's documentation asks
/// operators to raise it; the hard limit is what the host allows anyway.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::warn!(
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "could not raise the open file limit"
        );
    } else {
        tracing::debug!(
            from = limit.rlim_cur,
            to = limit.rlim_max,
            "raised the open file limit"
        );
    }
}

/// The panic hook, the one fatal path: a panic means an invariant broke,
/// and the process must not serve on with a shard task dead (compio would
/// otherwise catch a task's panic and keep the other tasks running). Log
/// what panicked where, write the backtrace, abort.
fn fatal_panic(info: &std::panic::PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let location = info
        .location()
        .map(|location| location.to_string())
        .unwrap_or_else(|| "an unknown location".to_string());
    let message = info
        .payload_as_str()
        .unwrap_or("(a non-text panic payload)");
    const STOPPING: &str =
        "a panic stops the process; restart it (recovery checks the data directory)";
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(target: "sluice::fatal", thread, %location, panic = message, "{STOPPING}");
    } else {
        // Logging is off: the reason must still reach stderr.
        say(format_args!(
            "sluice: {STOPPING}: panic in thread {thread} at {location}: {message}"
        ));
    }
    say(format_args!(
        "backtrace:\n{}",
        std::backtrace::Backtrace::force_capture()
    ));
    std::process::abort();
}

/// Write one line to stderr, or nothing if stderr cannot be written
/// (`eprintln!` would panic, and a panic here would hide the reason the
/// process stops behind an abort).
fn say(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{message}");
}
