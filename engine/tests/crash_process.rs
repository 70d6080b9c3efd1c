//! A real crash test: a child process appends through the real I/O path
//! (io_uring, O_DIRECT files on a real filesystem) and reports every append
//! whose completion resolved `Ok` (durable) to the parent, which kills it with
//! SIGKILL at a random moment, over and over on the same log directory.
//!
//! The child is this test binary re-executed with only
//! [`child_appends_until_killed`] selected and `SLUICE_CRASH_CHILD_DIR` set;
//! without that variable (a normal test run) that test does nothing. Each
//! child first recovers whatever the previous one left, reports what it
//! found, then appends batches of random shape (1 to 50 records of 10 to
//! 4000 bytes) with a bounded number in flight, printing one
//! `SLUICE-CRASH-ACK <base> <next> <crc>` line per durable append.
//!
//! The child also applies retention by size every few acks, which keeps the
//! log (and the time recovery takes) bounded and lets kills land in the
//! middle of deleting segments.
//!
//! After each kill the parent copies the directory and opens the copy
//! in-process (recovery), then checks: offsets contiguous from the log start
//! (a segment base that never moves back), every batch valid
//! (`batch::validate`), and every batch ever acknowledged present at its
//! offsets with the same CRC unless it lies wholly below the log start
//! (deleted by retention, which must have kept about `retention.bytes`). The
//! next child recovers the original, uncopied directory, and must find the
//! same log start and end as the parent's recovery of the copy. A final
//! check runs on the original.
//!
//! What a kill -9 tests: the kernel keeps everything the process wrote, so
//! this is about the engine's own crash consistency (half-created segments,
//! preallocated tails, unfinished finalization, checkpoint replacement,
//! recovery interrupted by the next kill), not about power loss, which the
//! simulated disk covers (crash_sim.rs).
//!
//! `SLUICE_CRASH_SEED=S` reruns a seed (printed at the start);
//! `SLUICE_CRASH_CYCLES=N` sets the number of kills (default 15).
#![allow(clippy::unwrap_used)]

// The support module re-exports helpers that this crate does not use.
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sluice_engine::batch;
use sluice_engine::io::Io;
use sluice_engine::io::uring::UringIo;
use sluice_engine::{Committer, LeaderEpoch, Log, LogConfig, Offset, ReadLimits, SyncMode};
use support::{RealDir, Rng, batches_of, run_on_uring, spawn_committer, tagged_batch};

const CHILD_TEST_NAME: &str = "child_appends_until_killed";
const CHILD_DIR_ENV: &str = "SLUICE_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "SLUICE_CRASH_CHILD_SEED";
/// Line prefixes of the child's reports. The test harness writes its own
/// lines to the same stdout; only complete lines with these prefixes count.
const ACK_PREFIX: &str = "SLUICE-CRASH-ACK";
const READY_PREFIX: &str = "SLUICE-CRASH-READY";
const KILL_CYCLES_DEFAULT: u64 = 15;
const KILL_DELAY_MS_MIN: u64 = 20;
const KILL_DELAY_MS_MAX: u64 = 400;
/// retention.bytes of the log: ~64 segments.
const RETENTION_BYTES: u64 = 16 << 20;
/// How far below `RETENTION_BYTES` a recovered log may be after retention:
/// retention counted the unflushed tail, which the kill may then lose (at
/// most 16 appends in flight of at most 50 records of 4000 bytes).
const RETENTION_SLACK_BYTES: usize = 4 << 20;
/// The child applies retention after this many acks.
const RETENTION_EVERY_ACKS: u64 = 25;
/// A child that was not killed by then gives up (its parent is gone or
/// stuck); the parent kills after at most `KILL_DELAY_MS_MAX`.
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(60);

/// Small segments so that rolls, finalization and preallocation steps
/// happen many times per child; tiny chunks so flushed chunks are released.
fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        index_interval_bytes: 4096,
        preallocate_step_bytes: 64 << 10,
        chunk_size_bytes: 16 << 10,
        retention_ms: None,
        retention_bytes: Some(RETENTION_BYTES),
        ..LogConfig::default()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

// ---------------------------------------------------------------------------
// The child.

/// Write one whole report line and flush it. A parent that stopped reading
/// means this child is an orphan: exit.
fn report(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| stdout.flush());
    if written.is_err() {
        std::process::exit(3);
    }
}

/// The child's body. Does nothing unless the parent test started this
/// process (see the module docs).
#[test]
fn child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed = env_u64(CHILD_SEED_ENV).unwrap_or(0);
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process; no
    // memory is passed. It kills this child if the parent dies first.
    let result = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    assert_eq!(result, 0, "prctl failed");
    run_on_uring(append_until_killed(PathBuf::from(dir), seed));
}

async fn append_until_killed(dir: PathBuf, seed: u64) {
    let started = Instant::now();
    let mut rng = Rng(seed);
    let io = UringIo::new();
    // Children alternate between the broker's default write-through
    // flushes (RWF_DSYNC writes) and write + fdatasync.
    let sync = if seed.is_multiple_of(2) {
        SyncMode::WriteThrough
    } else {
        SyncMode::PerFile
    };
    let committer = Committer::with_sync_mode(io, sync);
    let log = Log::open(io, &dir, crash_config(), &committer)
        .await
        .unwrap_or_else(|error| panic!("the child could not open {}: {error}", dir.display()));
    report(&format!(
        "{READY_PREFIX} {} {} {}",
        log.log_start_offset(),
        log.log_end_offset(),
        started.elapsed().as_millis()
    ));
    let _committer_task = spawn_committer(&committer);
    let in_flight_max = rng.pick(&[1usize, 4, 16]);
    let mut in_flight = FuturesUnordered::new();
    let mut tag = seed;
    let mut acked = 0u64;
    loop {
        while in_flight.len() < in_flight_max {
            tag = tag.wrapping_add(1);
            let count = rng.between(1, 50) as usize;
            // Mostly small values, a quarter up to 4000 bytes: enough large
            // batches to roll often without the log (and the time recovery
            // takes) growing too fast.
            let value_size_max = if rng.below(4) == 0 { 4000 } else { 400 };
            let value_size = rng.between(10, value_size_max) as usize;
            let batch = tagged_batch(tag, count, value_size, io.now_ms());
            let crc = batch::validate(&batch, usize::MAX).unwrap().crc();
            let appended = log
                .append(&batch, LeaderEpoch(0))
                .unwrap_or_else(|error| panic!("the child's append failed: {error}"));
            let base = appended.base_offset;
            let next = appended.last_offset.plus(1);
            in_flight.push(async move { (base, next, crc, appended.completion.await) });
        }
        let Some((base, next, crc, result)) = in_flight.next().await else {
            unreachable!("appends are in flight");
        };
        if let Err(error) = result {
            panic!("the child's append at {base} was not made durable: {error}");
        }
        report(&format!("{ACK_PREFIX} {base} {next} {crc}"));
        acked += 1;
        if acked.is_multiple_of(RETENTION_EVERY_ACKS) {
            log.apply_retention(log.log_end_offset())
                .await
                .unwrap_or_else(|error| panic!("the child's retention failed: {error}"));
        }
        assert!(
            started.elapsed() < CHILD_LIFETIME_MAX,
            "the child was never killed"
        );
    }
}

// ---------------------------------------------------------------------------
// The parent.

/// A durable append as the child reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    next: Offset,
    crc: u32,
}

/// One report line of a child.
#[derive(Debug)]
enum Event {
    /// The child's recovery is done: log start and end it found, and how
    /// long the open took.
    Ready {
        start: Offset,
        end: Offset,
        open_ms: u64,
    },
    Ack(Offset, Ack),
}

/// Parse one complete line; `None` for the harness's own lines. The harness
/// may have written part of a line before a report (`test name ... `), so
/// the report starts at its prefix, wherever that is.
fn parse_event(line: &str) -> Option<Event> {
    let at = line.find(ACK_PREFIX).or_else(|| line.find(READY_PREFIX))?;
    let fields: Vec<&str> = line[at..].split(' ').collect();
    let number = |index: usize| -> i64 { fields[index].parse().unwrap() };
    match fields[0] {
        READY_PREFIX if fields.len() == 4 => Some(Event::Ready {
            start: Offset(number(1)),
            end: Offset(number(2)),
            open_ms: number(3) as u64,
        }),
        ACK_PREFIX if fields.len() == 4 => Some(Event::Ack(
            Offset(number(1)),
            Ack {
                next: Offset(number(2)),
                crc: fields[3].parse().unwrap(),
            },
        )),
        _ => panic!("malformed report line: {line:?}"),
    }
}

/// Forward the child's reports until its stdout ends (the kill). A line cut
/// short by the kill has no newline and is ignored.
fn forward_events(stdout: ChildStdout, events: mpsc::Sender<Event>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            return;
        }
        let Some(complete) = line.strip_suffix('\n') else {
            continue;
        };
        if let Some(event) = parse_event(complete) {
            // The parent stops listening only when it is failing anyway.
            let _ = events.send(event);
        }
    }
}

/// What one child reported before it was killed.
#[derive(Debug, Default)]
struct ChildReport {
    /// Log start and end the child's recovery found, and the open time.
    ready: Option<(Offset, Offset, u64)>,
    acks: Vec<(Offset, Ack)>,
}

impl ChildReport {
    fn add(&mut self, event: Event) {
        match event {
            Event::Ready {
                start,
                end,
                open_ms,
            } => self.ready = Some((start, end, open_ms)),
            Event::Ack(base, ack) => self.acks.push((base, ack)),
        }
    }
}

/// What a check of a recovered log found.
struct Recovered {
    /// How long `Log::open` took.
    open_ms: u64,
    start: Offset,
    end: Offset,
    /// Acknowledged batches found (the others were deleted by retention).
    acks_found: usize,
    batches: usize,
    bytes: usize,
    segments: usize,
}

/// Open the log in `dir` (recovery) and check it against every
/// acknowledged batch and the previous log start. See the module docs.
async fn check_log(
    dir: &Path,
    acks: &BTreeMap<Offset, Ack>,
    previous_start: Offset,
    close: bool,
) -> Recovered {
    let io = UringIo::new();
    let committer = Committer::new(io);
    let opening = Instant::now();
    let log = Log::open(io, dir, crash_config(), &committer)
        .await
        .unwrap_or_else(|error| panic!("recovery of {} failed: {error}", dir.display()));
    let open_ms = opening.elapsed().as_millis() as u64;
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    assert!(
        start >= previous_start,
        "the log start went back from {previous_start} to {start}"
    );
    assert_eq!(
        log.durable_end_offset(),
        end,
        "all recovered data is durable"
    );
    let mut found = BTreeMap::new();
    let mut offset = start;
    let mut bytes = 0;
    while offset < end {
        let limits = ReadLimits {
            max_bytes: 1 << 20,
            min_one_batch: true,
            max_offset: end,
        };
        let result = log
            .read(offset, limits)
            .await
            .unwrap_or_else(|error| panic!("read at {offset} failed: {error}"));
        assert!(
            !result.records.is_empty(),
            "no progress reading at {offset} (end {end})"
        );
        for stored in batches_of(&result.records) {
            let header = batch::validate(&stored, usize::MAX)
                .unwrap_or_else(|error| panic!("the batch at {offset} is invalid: {error}"));
            // Retention deletes whole segments: the log starts on a batch.
            assert_eq!(header.base_offset(), offset, "offsets are not contiguous");
            found.insert(
                offset,
                Ack {
                    next: header.next_offset(),
                    crc: header.crc(),
                },
            );
            bytes += stored.len();
            offset = header.next_offset();
        }
        assert_eq!(result.next_offset, offset);
    }
    assert_eq!(offset, end);
    if start > Offset(0) {
        assert!(
            bytes + RETENTION_SLACK_BYTES >= RETENTION_BYTES as usize,
            "retention kept only {bytes} bytes (from {start})"
        );
    }
    let mut acks_found = 0;
    for (base, ack) in acks {
        if ack.next <= start {
            continue;
        }
        assert!(
            *base >= start,
            "the log starts at {start}, inside the batch acknowledged at {base}"
        );
        acks_found += 1;
        match found.get(base) {
            Some(stored) => assert_eq!(
                stored, ack,
                "the batch acknowledged at {base} was replaced by another"
            ),
            None => panic!("the batch acknowledged at {base} ({ack:?}) is lost (log end {end})"),
        }
    }
    let segments = log.segment_count();
    if close {
        log.close().await.unwrap();
    }
    Recovered {
        open_ms,
        start,
        end,
        acks_found,
        batches: found.len(),
        bytes,
        segments,
    }
}

/// Copy the regular files of `from` into a fresh `to` (through the page
/// cache: the copy holds what the kernel holds, preallocated space as zeros).
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn spawn_child(log_dir: &Path, seed: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            CHILD_TEST_NAME,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, log_dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[test]
fn acknowledged_batches_survive_repeated_kill_9_of_the_appending_process() {
    let seed = env_u64("SLUICE_CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let cycles = env_u64("SLUICE_CRASH_CYCLES").unwrap_or(KILL_CYCLES_DEFAULT);
    eprintln!("crash_process: seed {seed} (rerun with SLUICE_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = RealDir::new("crash-process");
    let log_dir = dir.log_dir();
    let copy = dir.path.join("copy");
    let started = Instant::now();

    let mut acks: BTreeMap<Offset, Ack> = BTreeMap::new();
    // Log start and end as the parent's last recovery found them.
    let mut recovered: Option<(Offset, Offset)> = None;
    let mut kills_before_ready = 0;
    let mut child_open_ms_max = 0;
    let mut cycles_with_acks = 0;
    for cycle in 0..cycles {
        // A third of the kills count from the spawn and may land in the
        // child's recovery; the others count from the end of its recovery
        // and land among appends, flushes, rolls and finalizations.
        let from_spawn = rng.below(3) == 0;
        let delay = Duration::from_millis(rng.between(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX));
        let mut child = spawn_child(&log_dir, rng.next());
        let stdout = child.stdout.take().unwrap();
        let (sender, events) = mpsc::channel();
        let forwarder = std::thread::spawn(move || forward_events(stdout, sender));
        let mut report = ChildReport::default();
        if !from_spawn {
            while report.ready.is_none() {
                match events.recv_timeout(CHILD_LIFETIME_MAX) {
                    Ok(event) => report.add(event),
                    // The child ended (the status below says how) or hung.
                    Err(_) => break,
                }
            }
        }
        std::thread::sleep(delay);
        // Child::kill sends SIGKILL.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        forwarder.join().unwrap();
        events.try_iter().for_each(|event| report.add(event));
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "cycle {cycle}: the child ended on its own ({status}); seed {seed}"
        );

        // The child's recovery of the original found what the parent's
        // recovery of the copy found.
        match report.ready {
            Some((start, end, open_ms)) => {
                child_open_ms_max = child_open_ms_max.max(open_ms);
                let expected = recovered.unwrap_or((Offset(0), Offset(0)));
                assert_eq!(
                    (start, end),
                    expected,
                    "cycle {cycle}: the child recovered another log than the parent; seed {seed}"
                );
            }
            None => kills_before_ready += 1,
        }
        if !report.acks.is_empty() {
            cycles_with_acks += 1;
        }
        for (base, ack) in &report.acks {
            if let Some(known) = acks.insert(*base, *ack) {
                assert_eq!(
                    known, *ack,
                    "cycle {cycle}: offset {base} was acknowledged twice for different \
                     batches: an acknowledged batch was lost; seed {seed}"
                );
            }
        }

        // Recover a copy, so that the next child recovers the original.
        let checked = if log_dir.exists() {
            copy_dir(&log_dir, &copy);
            let previous_start = recovered.map_or(Offset(0), |(start, _)| start);
            run_on_uring(check_log(&copy, &acks, previous_start, false))
        } else {
            assert!(acks.is_empty());
            Recovered {
                open_ms: 0,
                start: Offset(0),
                end: Offset(0),
                acks_found: 0,
                batches: 0,
                bytes: 0,
                segments: 0,
            }
        };
        let acked_end = acks.last_key_value().map_or(Offset(0), |(_, ack)| ack.next);
        assert!(checked.end >= acked_end);
        eprintln!(
            "crash_process: cycle {cycle}: killed {} ms after {}, {} acks, child open {:?} ms, \
             parent open {} ms, recovered {} batches ({} acknowledged), {} bytes, {} segments, \
             offsets {}..{}",
            delay.as_millis(),
            if from_spawn { "spawn" } else { "ready" },
            report.acks.len(),
            report.ready.map(|(_, _, open_ms)| open_ms),
            checked.open_ms,
            checked.batches,
            checked.acks_found,
            checked.bytes,
            checked.segments,
            checked.start,
            checked.end
        );
        recovered = Some((checked.start, checked.end));
    }

    // The original, as the last child left it; then once more after a clean
    // close.
    let previous_start = recovered.map_or(Offset(0), |(start, _)| start);
    let last = run_on_uring(check_log(&log_dir, &acks, previous_start, true));
    assert_eq!(Some((last.start, last.end)), recovered);
    let reopened = run_on_uring(check_log(&log_dir, &acks, last.start, false));
    assert_eq!((reopened.start, reopened.end), (last.start, last.end));
    eprintln!(
        "crash_process: {cycles} kills ({kills_before_ready} before the child was ready, \
         child open <= {child_open_ms_max} ms), \
         {} acknowledged batches ({cycles_with_acks} cycles with acks), final log {} batches \
         ({} acknowledged, the others deleted by retention or never acknowledged), {} bytes, \
         {} segments, in {:.1} s",
        acks.len(),
        last.batches,
        last.acks_found,
        last.bytes,
        last.segments,
        started.elapsed().as_secs_f64()
    );
    // Kills counted from the spawn may land before the first ack; most
    // others do not. Too few acks would make this test prove nothing.
    assert!(
        acks.len() >= 50 && cycles_with_acks * 4 >= cycles,
        "too few acknowledged appends to prove anything: {} acks in {cycles_with_acks} of \
         {cycles} cycles; seed {seed}",
        acks.len()
    );
}
