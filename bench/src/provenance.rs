//! Where and when a result was measured, for the JSON summaries and plot
//! titles: the git commit of the source tree, the host name, and UTC times
//! in RFC 3339. Runs on the calling thread; the commit is looked up once per
//! process.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The commit the measured code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitCommit {
    /// Full hash, or "unknown".
    pub hash: String,
    /// Uncommitted changes to tracked files (`None` when not known: the
    /// hash came from the build, or not at all).
    pub dirty: Option<bool>,
    /// How the hash was found: "run time" (`git rev-parse HEAD` in the
    /// source tree the binary was built from), "build time" (recorded by
    /// build.rs), or "unknown".
    pub source: &'static str,
}

/// The commit of the source tree: `git rev-parse HEAD` in the tree this
/// binary was built from when it is still there, else the commit recorded
/// at build time, else "unknown".
pub fn git_commit() -> &'static GitCommit {
    static COMMIT: OnceLock<GitCommit> = OnceLock::new();
    COMMIT.get_or_init(|| {
        let tree = Path::new(env!("CARGO_MANIFEST_DIR"));
        if let Some(hash) = git(tree, &["rev-parse", "HEAD"]) {
            let dirty = git(tree, &["status", "--porcelain", "--untracked-files=no"])
                .map(|changes| !changes.is_empty());
            return GitCommit {
                hash,
                dirty,
                source: "run time",
            };
        }
        match env!("SLUICE_BENCH_BUILD_COMMIT") {
            "" => GitCommit {
                hash: "unknown".to_owned(),
                dirty: None,
                source: "unknown",
            },
            hash => GitCommit {
                hash: hash.to_owned(),
                dirty: None,
                source: "build time",
            },
        }
    })
}

/// Standard output of a successful git command, trimmed.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// The machine's host name, or "unknown".
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `time` as RFC 3339 in UTC, to the second: `2024-12-04T14:30:05Z`.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let (date, (hour, minute, second)) = utc_fields(time);
    format!("{date}T{hour:02}:{minute:02}:{second:02}Z")
}

/// `time` in UTC to the minute, for plot titles: `2024-12-04 14:30 UTC`.
pub fn minute_utc(time: SystemTime) -> String {
    let (date, (hour, minute, _)) = utc_fields(time);
    format!("{date} {hour:02}:{minute:02} UTC")
}

/// `YYYY-MM-DD` and (hour, minute, second) of `time` in UTC; times before
/// 1970 count as 1970.
fn utc_fields(time: SystemTime) -> (String, (u64, u64, u64)) {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        (of_day / 3600, of_day % 3600 / 60, of_day % 60),
    )
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The provenance fields of a JSON summary: `git_commit`, `git_dirty`,
/// `git_commit_source`, `time` (RFC 3339 UTC of `time`), `host`.
pub fn to_json(time: SystemTime) -> Value {
    let commit = git_commit();
    json!({
        "git_commit": commit.hash,
        "git_dirty": commit.dirty,
        "git_commit_source": commit.source,
        "time": rfc3339_utc(time),
        "host": hostname(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let at = |seconds: u64| UNIX_EPOCH + Duration::from_secs(seconds);
        assert_eq!(rfc3339_utc(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(at(1_733_322_605)), "2024-12-04T14:30:05Z");
        assert_eq!(rfc3339_utc(at(4_107_542_399)), "2100-02-28T23:59:59Z");
        assert_eq!(minute_utc(at(1_733_322_605)), "2024-12-04 14:30 UTC");
        // Every day of 400 years round-trips through the calendar in order.
        let mut previous = (1969, 12, 31);
        for days in 0..146_097 {
            let date = civil_from_days(days);
            let next_day = date.2 == previous.2 + 1 && date.1 == previous.1;
            let next_month =
                date.2 == 1 && (date.1 == previous.1 + 1 || (date.1, previous.1) == (1, 12));
            assert!(next_day || next_month, "{previous:?} -> {date:?}");
            previous = date;
        }
        assert_eq!(previous, (2369, 12, 31));
    }

    #[test]
    fn the_commit_is_a_hash_or_unknown() {
        let commit = git_commit();
        let is_hash = commit.hash.len() == 40
            && commit
                .hash
                .chars()
                .all(|character| character.is_ascii_hexdigit());
        assert!(is_hash || commit.hash == "unknown", "{commit:?}");
        assert!(!hostname().is_empty());
    }
}
