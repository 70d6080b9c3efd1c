//! `sluice-bench baseline`: the machine's limits, measured so that broker
//! figures can be quoted as ratios of them taken in the same run.
//!
//! - O_DIRECT sequential write bandwidth and fdatasync latency in the data
//!   directory ([`baseline::measure_raw_disk`], as the engine benchmark
//!   measures them);
//! - O_DIRECT sequential read bandwidth ([`baseline::direct_read_bandwidth`]),
//!   the reference for catch-up reads;
//! - loopback TCP bandwidth: one connection, one sending and one receiving
//!   thread, 1 MiB writes, the reference for anything that crosses the
//!   broker's socket.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use crate::baseline::{self, BandwidthConfig, RawDisk, ReadBandwidth};
use crate::measure::{self, LatencySummary, Machine};

/// Writes (and reads) in flight for the disk baselines: about the bytes the
/// broker keeps in flight at max rate (16 partitions x a few 1 MiB chunks).
const IO_SIZE_BYTES: usize = 1 << 20;
const IO_IN_FLIGHT: usize = 8;
/// File read back by the read baseline (large enough to be worth reading
/// for several seconds' worth of wrap-arounds without being cheap to cache).
const READ_FILE_BYTES: u64 = 2 << 30;
const LOOPBACK_CHUNK_BYTES: usize = 1 << 20;

#[derive(Args, Clone, Debug)]
pub struct BaselineArgs {
    /// Directory on the disk to measure (the broker's data disk).
    #[arg(long, default_value = "target/bench-data")]
    pub dir: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The machine's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub raw: RawDisk,
    pub read: ReadBandwidth,
    pub loopback_mb_per_sec: f64,
    pub machine: Machine,
}

impl Limits {
    pub fn write_mb_per_sec(&self) -> f64 {
        self.raw.bandwidth.mb_per_sec()
    }

    pub fn render(&self) -> String {
        let mut out = format!("machine: {}\n", self.machine.summary());
        out.push_str(&self.raw.render("  "));
        out.push_str(&format!(
            "  sequential read   {:.1} MB/s ({} x {} KiB in flight over a {:.1} GB file)\n",
            self.read.mb_per_sec(),
            self.read.reads_in_flight,
            self.read.read_size_bytes / 1024,
            self.read.file_bytes as f64 / 1e9
        ));
        out.push_str(&format!(
            "  loopback TCP      {:.1} MB/s (one connection)\n",
            self.loopback_mb_per_sec
        ));
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "machine": self.machine.to_json(),
            "disk": self.raw.to_json(),
            "direct_read": self.read.to_json(),
            "loopback_tcp_mb_per_sec": measure::round(self.loopback_mb_per_sec, 1),
            "fdatasync_p99_us": LatencySummary::of(&self.raw.sync_latency.sync).p99_us,
        })
    }
}

/// Measure every limit in `dir` for `seconds` each; `flag` is the option
/// that named `dir`, quoted if the directory is refused.
pub fn measure_limits(dir: &Path, flag: &str, seconds: u64) -> anyhow::Result<Limits> {
    let data_dir = baseline::prepare_data_dir(dir, flag)?;
    let machine = Machine::describe(&data_dir.path);
    let device = machine.filesystem.as_ref().and_then(measure::device_name);
    let duration = Duration::from_secs(seconds.max(1));
    let runtime = compio::runtime::Runtime::new().context("starting the compio runtime")?;
    let (raw, read) = runtime.block_on(async {
        let config = BandwidthConfig {
            write_size_bytes: IO_SIZE_BYTES,
            writes_in_flight: IO_IN_FLIGHT,
            duration,
        };
        let raw =
            baseline::measure_raw_disk(&data_dir.path, "limits", config, device.as_deref(), false)
                .await?;
        eprintln!(
            "baseline: O_DIRECT sequential reads, {IO_IN_FLIGHT} x {} KiB in flight, {} s",
            IO_SIZE_BYTES / 1024,
            duration.as_secs()
        );
        let read = baseline::direct_read_bandwidth(
            &data_dir.path.join("baseline-read.data"),
            READ_FILE_BYTES,
            IO_SIZE_BYTES,
            IO_IN_FLIGHT,
            duration,
        )
        .await?;
        eprintln!("  {:.1} MB/s", read.mb_per_sec());
        anyhow::Ok((raw, read))
    })?;
    if data_dir.created {
        let _ = std::fs::remove_dir(&data_dir.path);
    }
    eprintln!(
        "baseline: loopback TCP, one connection, {} s",
        duration.as_secs()
    );
    let loopback_mb_per_sec = loopback_bandwidth(duration)?;
    eprintln!("  {loopback_mb_per_sec:.1} MB/s");
    Ok(Limits {
        raw,
        read,
        loopback_mb_per_sec,
        machine,
    })
}

/// One TCP connection over loopback: a thread writes 1 MiB chunks for
/// `duration`, the caller reads them; MB/s received.
pub fn loopback_bandwidth(duration: Duration) -> anyhow::Result<f64> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("loopback listener")?;
    let address = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_seen = Arc::clone(&stop);
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(address)?;
        let chunk = vec![0x5a_u8; LOOPBACK_CHUNK_BYTES];
        while !stop_seen.load(Ordering::Relaxed) {
            stream.write_all(&chunk)?;
        }
        Ok(())
    });
    let (mut stream, _) = listener.accept().context("loopback accept")?;
    let mut buffer = vec![0_u8; LOOPBACK_CHUNK_BYTES];
    let mut bytes = 0_u64;
    let started = Instant::now();
    while started.elapsed() < duration {
        let count = stream.read(&mut buffer).context("loopback read")?;
        if count == 0 {
            break;
        }
        bytes += count as u64;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    drop(stream);
    // The sender ends with an error (connection reset) or after its write.
    let _ = sender.join();
    Ok(measure::mb_per_sec(bytes, elapsed))
}

/// `sluice-bench baseline`.
pub fn run(args: &BaselineArgs) -> anyhow::Result<()> {
    let limits = measure_limits(&args.dir, "--dir", args.seconds)?;
    print!("{}", limits.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&limits.to_json())?;
        crate::report::write(path, &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_moves_bytes() {
        let rate = loopback_bandwidth(Duration::from_millis(200)).expect("loopback works");
        assert!(rate > 0.0);
    }
}
