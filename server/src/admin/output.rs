//! What the admin subcommands write: tables for people (the default) or
//! JSON for programs (`--format json`) on stdout, progress of long
//! operations on stderr.
//!
//! Writes to stdout never panic: a closed pipe (`sluice consume | head`)
//! is [`AdminError::StdoutClosed`], which ends the command quietly.
//! Progress is drawn only when stderr is a terminal, so scripts and tests
//! that capture stderr see only errors there.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::Serialize;

use super::AdminError;

/// Shown for a value that does not exist (no commit, no leader).
pub const NONE: &str = "-";

/// How results are written to stdout.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns, for people.
    #[default]
    Table,
    /// JSON: one document per command (`consume`: one object per line).
    Json,
}

/// Write `text` to stdout and flush it.
pub fn emit(text: &str) -> Result<(), AdminError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// Write `value` as pretty JSON and a newline to stdout.
pub fn emit_json(value: &impl Serialize) -> Result<(), AdminError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|error| AdminError::Io {
        what: "encoding the JSON output".to_string(),
        source: std::io::Error::other(error),
    })?;
    text.push('\n');
    emit(&text)
}

/// A stdout write error: a closed pipe ends the command quietly.
pub fn stdout_error(error: std::io::Error) -> AdminError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        AdminError::StdoutClosed
    } else {
        AdminError::Io {
            what: "writing to stdout".to_string(),
            source: error,
        }
    }
}

/// `headers` and `rows` as columns padded to their widest cell, separated by
/// two spaces, trailing spaces trimmed.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            let width = widths.get(index).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<width$}"));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `value`, or [`NONE`] when there is none.
pub fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| NONE.to_string(), |value| value.to_string())
}

/// `value`, or [`NONE`] when it is empty.
pub fn non_empty(value: &str) -> String {
    if value.is_empty() {
        NONE.to_string()
    } else {
        value.to_string()
    }
}

/// `[1, 2, 3]` as `1,2,3`.
pub fn join(values: &[i32]) -> String {
    values
        .iter()
        .map(|value| value.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Least time between two redraws of a progress line.
const PROGRESS_REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// A one-line progress counter (`creating topics 30/100`) redrawn in place
/// on stderr, only when stderr is a terminal; otherwise it does nothing.
pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    terminal: bool,
    drawn_at: Option<Instant>,
}

impl Progress {
    /// A counter towards `total` (`None`: open-ended).
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Progress {
        Progress {
            label: label.into(),
            total,
            done: 0,
            terminal: std::io::stderr().is_terminal(),
            drawn_at: None,
        }
    }

    /// Like [`Progress::new`], but drawn only when stdout is not the same
    /// terminal: a command that streams its results to stdout (`consume`)
    /// must not interleave a progress line with them.
    pub fn beside_stdout(label: impl Into<String>, total: Option<u64>) -> Progress {
        let mut progress = Progress::new(label, total);
        progress.terminal &= !std::io::stdout().is_terminal();
        progress
    }

    /// Count `count` more units done.
    pub fn advance(&mut self, count: u64) {
        self.done += count;
        self.draw(false);
    }

    fn draw(&mut self, force: bool) {
        if !self.terminal {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .drawn_at
                .is_some_and(|drawn| now.duration_since(drawn) < PROGRESS_REDRAW_INTERVAL)
        {
            return;
        }
        self.drawn_at = Some(now);
        let line = progress_line(&self.label, self.done, self.total);
        let mut stderr = std::io::stderr().lock();
        // Progress is decoration: a failed write to the terminal is ignored.
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }

    /// Erase the progress line (the final counts are the command's output).
    pub fn finish(&mut self) {
        if self.terminal && self.drawn_at.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
        self.drawn_at = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `label 3/10 (30%)`, or `label 3` without a total.
fn progress_line(label: &str, done: u64, total: Option<u64>) -> String {
    match total {
        Some(total) if total > 0 => {
            format!("{label} {done}/{total} ({}%)", done * 100 / total)
        }
        _ => format!("{label} {done}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_are_padded_to_the_widest_cell() {
        let table = render_table(
            &["A", "LONG-HEADER", "C"],
            &[
                vec!["wide-cell".into(), "1".into(), "x".into()],
                vec!["b".into(), "22".into(), "".into()],
            ],
        );
        assert_eq!(
            table,
            "A          LONG-HEADER  C\n\
             wide-cell  1            x\n\
             b          22\n"
        );
    }

    #[test]
    fn progress_lines_show_counts_and_percent() {
        assert_eq!(
            progress_line("creating topics", 3, Some(10)),
            "creating topics 3/10 (30%)"
        );
        assert_eq!(progress_line("consumed", 7, None), "consumed 7");
    }
}
