//! Outputs of a broker run: the percentile table, `.hgrm` files in
//! HdrHistogram's percentile-distribution format, the JSON summary (with
//! the commit, time and host it was measured at), and an SVG plot (title,
//! latency by percentile on log axes, throughput over time with the warm-up
//! shaded, round 1/2/5 x 10^n ticks), written by hand to stay
//! dependency-free.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::measure;
use crate::provenance;
use crate::run::RunOutcome;
use crate::stats::{PERCENTILES, Percentiles};

/// Significant digits shown for values in `.hgrm` files (milliseconds with
/// microsecond resolution).
const HGRM_DECIMALS: usize = 3;

/// The `.hgrm` text of `histogram` (values recorded in microseconds, shown
/// in milliseconds), in the format of HdrHistogram's
/// `outputPercentileDistribution` with 5 ticks per half distance: a
/// `Value Percentile TotalCount 1/(1-Percentile)` header, one line per
/// step, and the Mean/StdDeviation, Max/Total count, Buckets/SubBuckets
/// footer. HdrHistogram's plotter and other tools read it.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    let scale = 1000.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0_u64;
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(5) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / scale;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.HGRM_DECIMALS$} {quantile:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(
                    out,
                    "{value:>12.HGRM_DECIMALS$} {quantile:>2.12} {total:>10}"
                );
            }
        }
    }
    let (mean, deviation) = if histogram.is_empty() {
        (0.0, 0.0)
    } else {
        (histogram.mean() / scale, histogram.stdev() / scale)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.HGRM_DECIMALS$}, StdDeviation   = {deviation:>12.HGRM_DECIMALS$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.HGRM_DECIMALS$}, Total count    = {:>12}]",
        histogram.max() as f64 / scale,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        sub_bucket_count(histogram.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count for `sigfig` significant digits: the
/// power of two at or above 2 * 10^sigfig.
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10_u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// The percentile table of a run, in milliseconds.
pub fn table(rows: &[(&str, &Histogram<u64>)]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<12} {:>10}", "latency ms", "count");
    for (label, _) in PERCENTILES {
        let _ = write!(out, " {label:>9}");
    }
    let _ = writeln!(out, " {:>9}", "max");
    for (name, histogram) in rows {
        let percentiles = Percentiles::of(histogram);
        let _ = write!(out, "{name:<12} {:>10}", percentiles.count);
        for value in percentiles.values_us {
            let _ = write!(out, " {:>9.3}", value as f64 / 1000.0);
        }
        let _ = writeln!(out, " {:>9.3}", percentiles.max_us as f64 / 1000.0);
    }
    out
}

/// The human-readable report of one run.
pub fn render(outcome: &RunOutcome) -> String {
    let mut out = String::new();
    let workload = &outcome.workload;
    let _ = writeln!(out, "broker {}: {}", outcome.bootstrap, workload.describe());
    if outcome.interrupted {
        let _ = writeln!(out, "INTERRUPTED (Ctrl-C): figures cover the run so far");
    }
    if let Some(failure) = &outcome.failure {
        let _ = writeln!(out, "FAILED: {failure}");
    }
    let _ = writeln!(
        out,
        "produce  {:>12.0} records/s {:>9.1} MB/s  ({} records acknowledged in the {:.1} s window; {} in all, {} errors)",
        outcome.produce_records_per_sec(),
        outcome.produce_mb_per_sec(),
        outcome.produced.records,
        outcome.produce_window.as_secs_f64(),
        outcome.produced_total.records,
        outcome.produced_total.errors,
    );
    if workload.consumers_per_topic > 0 {
        let _ = writeln!(
            out,
            "consume  {:>12.0} records/s {:>9.1} MB/s  ({} records received in the {:.1} s window; {} in all, {} errors)",
            outcome.consume_records_per_sec(),
            outcome.consume_mb_per_sec(),
            outcome.consumed.records,
            outcome.consume_window.as_secs_f64(),
            outcome.consumed_total.records,
            outcome.consumed_total.errors,
        );
    }
    if let Some(added) = outcome.log_records_added {
        let _ = writeln!(
            out,
            "log      grew by {added} records (ListOffsets), producers saw {} acknowledged",
            outcome.produced_total.records
        );
    }
    let _ = writeln!(out, "bench CPU {}", outcome.bench_cpu.describe_process());
    if let Some(seconds) = outcome.broker_cpu_secs {
        let gigabytes = outcome.produced.bytes as f64 / 1e9;
        let _ = writeln!(
            out,
            "broker CPU {:.2} s in the window ({:.0}% of one core; {:.2} CPU-s per GB produced)",
            seconds,
            seconds / outcome.produce_window.as_secs_f64().max(1e-9) * 100.0,
            seconds / gigabytes.max(1e-9)
        );
    }
    for error in &outcome.first_errors {
        let _ = writeln!(out, "first error: {error}");
    }
    let mut rows = vec![("publish", &outcome.publish)];
    if let Some(end_to_end) = &outcome.end_to_end {
        rows.push(("end-to-end", end_to_end));
    }
    out.push_str(&table(&rows));
    out
}

/// Files written for one run.
#[derive(Clone, Debug)]
pub struct Files {
    pub json: PathBuf,
    pub publish_hgrm: PathBuf,
    pub end_to_end_hgrm: Option<PathBuf>,
    pub plot: PathBuf,
}

/// Write the `.hgrm` files, the plot and the JSON summary of `outcome`
/// under `dir`, named after `name`. `extra` is merged into the JSON.
pub fn write_files(
    dir: &Path,
    name: &str,
    outcome: &RunOutcome,
    extra: Value,
) -> anyhow::Result<Files> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
    let files = Files {
        json: dir.join(format!("{name}.json")),
        publish_hgrm: dir.join(format!("{name}-publish.hgrm")),
        end_to_end_hgrm: outcome
            .end_to_end
            .as_ref()
            .map(|_| dir.join(format!("{name}-end-to-end.hgrm"))),
        plot: dir.join(format!("{name}.svg")),
    };
    write(&files.publish_hgrm, &hgrm(&outcome.publish))?;
    if let (Some(path), Some(histogram)) = (&files.end_to_end_hgrm, &outcome.end_to_end) {
        write(path, &hgrm(histogram))?;
    }
    write(
        &files.plot,
        &svg(&run_title(outcome), &[PlotRun::single(outcome)]),
    )?;
    let mut summary = summary_json(outcome);
    if let (Value::Object(summary), Value::Object(extra)) = (&mut summary, extra) {
        summary.extend(extra);
    }
    if let Value::Object(summary) = &mut summary {
        summary.insert(
            "files".into(),
            json!({
                "publish_hgrm": files.publish_hgrm,
                "end_to_end_hgrm": files.end_to_end_hgrm,
                "plot_svg": files.plot,
            }),
        );
    }
    let text = serde_json::to_string_pretty(&summary).context("encoding the JSON summary")?;
    write(&files.json, &text)?;
    Ok(files)
}

pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The JSON summary of a run (see docs/benchmarks.md for the fields).
pub fn summary_json(outcome: &RunOutcome) -> Value {
    let gigabytes = outcome.produced.bytes as f64 / 1e9;
    let mut summary = json!({
        "sluice_bench_version": env!("CARGO_PKG_VERSION"),
        "bootstrap": outcome.bootstrap,
        "client": outcome.workload.client.name(),
        "workload": outcome.workload.to_json(),
        "topics": outcome.topics,
        "interrupted": outcome.interrupted,
        "failure": outcome.failure,
        "errors": outcome.first_errors,
        "produce": {
            "records": outcome.produced.records,
            "bytes": outcome.produced.bytes,
            "window_secs": measure::round(outcome.produce_window.as_secs_f64(), 3),
            "records_per_sec": measure::round(outcome.produce_records_per_sec(), 1),
            "mb_per_sec": measure::round(outcome.produce_mb_per_sec(), 2),
            "acknowledged_records_total": outcome.produced_total.records,
            "errors_total": outcome.produced_total.errors,
        },
        "consume": {
            "records": outcome.consumed.records,
            "bytes": outcome.consumed.bytes,
            "window_secs": measure::round(outcome.consume_window.as_secs_f64(), 3),
            "records_per_sec": measure::round(outcome.consume_records_per_sec(), 1),
            "mb_per_sec": measure::round(outcome.consume_mb_per_sec(), 2),
            "received_records_total": outcome.consumed_total.records,
            "errors_total": outcome.consumed_total.errors,
        },
        "log_records_added": outcome.log_records_added,
        "latency_us": {
            "publish": Percentiles::of(&outcome.publish).to_json(),
            "end_to_end": outcome.end_to_end.as_ref().map(|histogram| Percentiles::of(histogram).to_json()),
        },
        "cpu": {
            "bench": outcome.bench_cpu.to_json(),
            "broker_cpu_secs": outcome.broker_cpu_secs.map(|seconds| measure::round(seconds, 3)),
            "broker_cpu_secs_per_gb_produced": outcome
                .broker_cpu_secs
                .filter(|_| gigabytes > 0.0)
                .map(|seconds| measure::round(seconds / gigabytes, 3)),
        },
        "series": outcome.samples.iter().map(|sample| sample.to_json()).collect::<Vec<_>>(),
    });
    if let (Value::Object(summary), Value::Object(provenance)) =
        (&mut summary, provenance::to_json(outcome.started_at))
    {
        summary.extend(provenance);
    }
    summary
}

/// Plot layout, in SVG user units (pixels). The right panel ends
/// [`RIGHT_MARGIN`] short of the width so that its last x label, centred on
/// the panel's edge, fits.
const WIDTH: f64 = 1000.0;
const PANEL_WIDTH: f64 = 400.0;
const PANEL_HEIGHT: f64 = 300.0;
const LATENCY_LEFT: f64 = 75.0;
const THROUGHPUT_LEFT: f64 = 555.0;
const RIGHT_MARGIN: f64 = WIDTH - THROUGHPUT_LEFT - PANEL_WIDTH;
const _: () = assert!(RIGHT_MARGIN >= 40.0, "room for half of the last x label");
/// Top of the panels: below the title, up to two subtitle lines and the
/// panel titles.
const TOP: f64 = 95.0;
const LEGEND_ROW: f64 = 16.0;
const LEGEND_COLUMN: f64 = 200.0;
/// Longest subtitle line, in characters (about 6 px each at 10 px).
const SUBTITLE_CHARS_MAX: usize = 150;
/// Colours of the two series kinds (publish / produced, end-to-end /
/// consumed), one pair per broker (A, B).
const COLORS: [[&str; 2]; 2] = [["#1f77b4", "#ff7f0e"], ["#2ca02c", "#d62728"]];
/// Dash pattern per round of a comparison, so repeated rounds of one broker
/// can be told apart; a single run is round 0 (solid).
const ROUND_DASHES: [&str; 5] = ["", "9,4", "2,3", "12,3,2,3", "5,2,1,2"];
/// Kind 0 is drawn first, wide and translucent; kind 1 on top of it, thin
/// and opaque: where the two coincide (produced = consumed when consumers
/// keep up) both stay visible.
const KIND_WIDTHS: [f64; 2] = [4.0, 1.5];
const KIND_OPACITIES: [f64; 2] = [0.55, 1.0];
/// The percentile axis ends at 99.999% (1/(1-q) = 10^5).
const NINES_MAX: f64 = 5.0;

/// One run in a plot.
#[derive(Clone, Debug)]
pub struct PlotRun<'a> {
    /// Legend prefix: empty for a single run, "A round 1" in comparisons.
    pub label: String,
    /// Which broker (0 = A, 1 = B): the colour pair.
    pub broker: usize,
    /// Which round (0 = first): the dash pattern.
    pub round: usize,
    pub outcome: &'a RunOutcome,
}

impl<'a> PlotRun<'a> {
    /// A run plotted on its own.
    pub fn single(outcome: &'a RunOutcome) -> PlotRun<'a> {
        PlotRun {
            label: String::new(),
            broker: 0,
            round: 0,
            outcome,
        }
    }
}

/// One line of a panel.
struct Series {
    name: String,
    /// Row in the legend (the run's index).
    row: usize,
    broker: usize,
    round: usize,
    /// 0 = publish / produced, 1 = end-to-end / consumed.
    kind: usize,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn color(&self) -> &'static str {
        COLORS[self.broker % COLORS.len()][self.kind]
    }

    /// Stroke attributes: colour, width, opacity, dash.
    fn stroke(&self, width: f64) -> String {
        let dash = ROUND_DASHES[self.round % ROUND_DASHES.len()];
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        format!(
            r#"stroke="{}" stroke-width="{width}" stroke-opacity="{}"{dash}"#,
            self.color(),
            KIND_OPACITIES[self.kind]
        )
    }
}

/// The title of a single run's plot: preset, broker, date.
pub fn run_title(outcome: &RunOutcome) -> String {
    format!(
        "sluice-bench {} against {}{}, {}",
        outcome
            .workload
            .preset
            .as_deref()
            .unwrap_or("custom workload"),
        outcome.bootstrap,
        if outcome.embedded {
            " (embedded sluice)"
        } else {
            ""
        },
        provenance::minute_utc(outcome.started_at)
    )
}

/// Latency by percentile (log axes) and throughput over time for one or
/// more runs, under `title`, with the workload as subtitle and the warm-up
/// shaded.
pub fn svg(title: &str, runs: &[PlotRun]) -> String {
    let mut latency_series = Vec::new();
    let mut throughput_series = Vec::new();
    for (row, run) in runs.iter().enumerate() {
        let outcome = run.outcome;
        let series = |name: &str, kind: usize, points: Vec<(f64, f64)>| Series {
            name: if run.label.is_empty() {
                name.to_owned()
            } else {
                format!("{} {name}", run.label)
            },
            row,
            broker: run.broker,
            round: run.round,
            kind,
            points,
        };
        let mut histograms = vec![("publish", 0, &outcome.publish)];
        if let Some(end_to_end) = &outcome.end_to_end {
            histograms.push(("end-to-end", 1, end_to_end));
        }
        for (name, kind, histogram) in histograms {
            if histogram.is_empty() {
                continue;
            }
            let points = histogram
                .iter_quantiles(5)
                .filter(|step| step.quantile_iterated_to() < 1.0)
                .map(|step| {
                    let nines = -(1.0 - step.quantile_iterated_to()).log10();
                    (
                        nines.min(NINES_MAX),
                        step.value_iterated_to() as f64 / 1000.0,
                    )
                })
                .collect();
            latency_series.push(series(name, kind, points));
        }
        let samples = &outcome.samples;
        throughput_series.push(series(
            "produced",
            0,
            samples
                .iter()
                .map(|sample| (sample.at_secs, sample.produced_mb_per_sec()))
                .collect(),
        ));
        if outcome.workload.consumers_per_topic > 0 {
            throughput_series.push(series(
                "consumed",
                1,
                samples
                    .iter()
                    .map(|sample| (sample.at_secs, sample.consumed_mb_per_sec()))
                    .collect(),
            ));
        }
    }
    // Latencies are recorded only after the warm-up (catch-up runs have
    // none): the throughput panel shades it.
    let warmup_secs = runs
        .first()
        .filter(|run| run.outcome.workload.backlog_bytes.is_none())
        .map_or(0.0, |run| run.outcome.workload.warmup.as_secs_f64());
    let legend_rows = runs.len() + usize::from(warmup_secs > 0.0);
    let legend_top = TOP + PANEL_HEIGHT + 40.0;
    let height = legend_top + LEGEND_ROW * legend_rows as f64 + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    if let Some(run) = runs.first() {
        let subtitle = wrap(&run.outcome.workload.describe(), SUBTITLE_CHARS_MAX);
        for (index, line) in subtitle.iter().take(2).enumerate() {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="middle" font-size="10" fill="#555">{}</text>"##,
                WIDTH / 2.0,
                42.0 + 13.0 * index as f64,
                escape(line)
            );
        }
    }
    latency_panel(&mut out, &latency_series, legend_top);
    throughput_panel(&mut out, &throughput_series, warmup_secs, legend_top);
    if warmup_secs > 0.0 {
        let y = legend_top + LEGEND_ROW * runs.len() as f64;
        let _ = writeln!(
            out,
            r##"<rect class="warm-up" x="{THROUGHPUT_LEFT}" y="{}" width="28" height="10" fill="#e8e8e8" stroke="#bbb"/><text x="{}" y="{}">warm-up ({warmup_secs} s): load runs, latencies are not recorded</text>"##,
            y - 5.0,
            THROUGHPUT_LEFT + 33.0,
            y + 4.0,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// `text` split at ", " into as few lines of at most `chars_max`
/// characters as fit it (longer pieces stand alone), of similar lengths.
fn wrap(text: &str, chars_max: usize) -> Vec<String> {
    let greedy = |limit: usize| {
        let mut lines: Vec<String> = Vec::new();
        for piece in text.split(", ") {
            match lines.last_mut() {
                Some(line) if line.len() + 2 + piece.len() <= limit => {
                    line.push_str(", ");
                    line.push_str(piece);
                }
                _ => lines.push(piece.to_owned()),
            }
        }
        lines
    };
    let fewest = greedy(chars_max);
    let even = greedy(text.len().div_ceil(fewest.len().max(1)) + 10);
    if even.len() == fewest.len() {
        even
    } else {
        fewest
    }
}

/// The smallest step of the form 1, 2 or 5 x 10^n that is at least `rough`.
fn round_step(rough: f64) -> f64 {
    let rough = if rough.is_finite() && rough > 0.0 {
        rough
    } else {
        1.0
    };
    let magnitude = 10_f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|mantissa| mantissa * magnitude)
        .find(|step| *step >= rough * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// Ticks of a linear axis from 0 that covers `max` with at most about
/// `intervals_max` round steps: 0, step, 2 step, ..., the first one at or
/// above `max`.
fn linear_ticks(max: f64, intervals_max: u32) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = round_step(max / f64::from(intervals_max));
    let intervals = (max / step - 1e-9).ceil().max(1.0) as u32;
    (0..=intervals)
        .map(|index| to_decimals(f64::from(index) * step, step))
        .collect()
}

/// `value` rounded to the decimals of `step` (3 x 0.1 is 0.3, not
/// 0.30000000000000004).
fn to_decimals(value: f64, step: f64) -> f64 {
    let scale = 10_f64.powi(decimals(step) as i32);
    (value * scale).round() / scale
}

/// Decimals that show `step` (and its multiples) exactly: 0 for steps of 1
/// or more, 1 for 0.2, 2 for 0.05.
fn decimals(step: f64) -> usize {
    if step >= 1.0 || step <= 0.0 || !step.is_finite() {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

/// Ticks of a log axis that covers [low, high] (both positive): the 1, 2, 5
/// x 10^n values, from the largest at or below `low` to the smallest at or
/// above `high`; only the powers of ten when that spans over three decades.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let low = if low.is_finite() && low > 0.0 {
        low
    } else {
        0.001
    };
    let high = if high.is_finite() && high > low {
        high
    } else {
        low
    };
    let decades = high.log10().ceil() - low.log10().floor();
    let mantissas: &[f64] = if decades > 3.0 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ladder = Vec::new();
    let mut exponent = low.log10().floor() - 1.0;
    while exponent <= high.log10().ceil() + 1.0 {
        for mantissa in mantissas {
            let value = mantissa * 10_f64.powf(exponent);
            ladder.push(to_decimals(value, value));
        }
        exponent += 1.0;
    }
    let slack = 1.0 + 1e-9;
    let first = ladder
        .iter()
        .rposition(|value| *value <= low * slack)
        .unwrap_or(0);
    let last = ladder
        .iter()
        .position(|value| *value * slack >= high)
        .unwrap_or(ladder.len() - 1)
        .max(first + 1);
    ladder[first..=last].to_vec()
}

/// A tick label: as many decimals as the value's smallest significant
/// digit needs (0.05, 0.2, 5, 500).
fn tick_label(value: f64, step: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    let decimals = decimals(step);
    format!("{value:.decimals$}")
}

fn latency_panel(out: &mut String, series: &[Series], legend_top: f64) {
    let values = series
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.1));
    let low = values.clone().fold(f64::INFINITY, f64::min).max(0.001);
    let high = values.fold(0.0_f64, f64::max);
    let ticks = log_ticks(low, high);
    let (axis_low, axis_high) = (ticks[0].log10(), ticks[ticks.len() - 1].log10());
    let left = LATENCY_LEFT;
    let x = |nines: f64| left + nines / NINES_MAX * PANEL_WIDTH;
    let y = |ms: f64| {
        TOP + PANEL_HEIGHT
            - (ms.max(1e-9).log10() - axis_low) / (axis_high - axis_low) * PANEL_HEIGHT
    };
    frame(out, left, "Latency by percentile (ms, log scales)");
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        tick_x(out, x(nines), label);
    }
    for value in &ticks {
        tick_y(out, left, y(*value), &tick_label(*value, *value));
    }
    lines(out, series, x, y, left, legend_top);
}

fn throughput_panel(out: &mut String, series: &[Series], warmup_secs: f64, legend_top: f64) {
    // The time axis ends with the data (its round ticks stop at or before
    // the end); the rate axis starts at zero and ends on a round tick.
    let time_end = series
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.0))
        .fold(warmup_secs, f64::max)
        .max(1.0);
    let rate_max = series
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.1))
        .fold(0.0_f64, f64::max);
    let mut time_ticks = linear_ticks(time_end, 7);
    time_ticks.retain(|seconds| *seconds <= time_end * (1.0 + 1e-9));
    let rate_ticks = linear_ticks(rate_max, 6);
    let rate_top = rate_ticks[rate_ticks.len() - 1];
    let left = THROUGHPUT_LEFT;
    let x = |seconds: f64| left + seconds / time_end * PANEL_WIDTH;
    let y = |rate: f64| TOP + PANEL_HEIGHT - rate / rate_top * PANEL_HEIGHT;
    if warmup_secs > 0.0 {
        let _ = writeln!(
            out,
            r##"<rect class="warm-up" x="{left}" y="{TOP}" width="{:.1}" height="{PANEL_HEIGHT}" fill="#e8e8e8"/>"##,
            x(warmup_secs.min(time_end)) - left
        );
        if x(warmup_secs) - left >= 50.0 {
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#777">warm-up</text>"##,
                (left + x(warmup_secs)) / 2.0,
                TOP + 14.0
            );
        }
    }
    frame(out, left, "Throughput per second (MB/s)");
    let time_step = time_ticks.get(1).copied().unwrap_or(1.0);
    for seconds in &time_ticks {
        tick_x(
            out,
            x(*seconds),
            &format!("{} s", tick_label(*seconds, time_step)),
        );
    }
    let rate_step = rate_ticks.get(1).copied().unwrap_or(1.0);
    for rate in &rate_ticks {
        tick_y(out, left, y(*rate), &tick_label(*rate, rate_step));
    }
    lines(out, series, x, y, left, legend_top);
}

fn frame(out: &mut String, left: f64, title: &str) {
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{TOP}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
        left + PANEL_WIDTH / 2.0,
        TOP - 10.0,
        escape(title)
    );
}

fn tick_x(out: &mut String, x: f64, label: &str) {
    let bottom = TOP + PANEL_HEIGHT;
    let _ = writeln!(
        out,
        r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text class="x-label" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        bottom + 15.0,
        escape(label)
    );
}

fn tick_y(out: &mut String, left: f64, y: f64, label: &str) {
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
        left + PANEL_WIDTH,
        left - 5.0,
        y + 4.0,
        escape(label)
    );
}

/// The series' lines (every kind-0 line before any kind-1 line) and their
/// legend: one row per run, one column per kind.
fn lines(
    out: &mut String,
    series: &[Series],
    x: impl Fn(f64) -> f64,
    y: impl Fn(f64) -> f64,
    left: f64,
    legend_top: f64,
) {
    let mut ordered: Vec<&Series> = series.iter().collect();
    ordered.sort_by_key(|series| series.kind);
    for series in ordered {
        let path: Vec<String> = series
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke-linejoin="round" {} points="{}"/>"#,
                series.stroke(KIND_WIDTHS[series.kind]),
                path.join(" ")
            );
        }
    }
    for series in series {
        let legend_x = left + LEGEND_COLUMN * series.kind as f64;
        let legend_y = legend_top + LEGEND_ROW * series.row as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" {}/><text x="{}" y="{}">{}</text>"#,
            legend_x + 28.0,
            series.stroke(KIND_WIDTHS[series.kind].max(2.0)),
            legend_x + 33.0,
            legend_y + 4.0,
            escape(&series.name)
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_histogram() -> Histogram<u64> {
        let mut histogram = measure::latency_histogram();
        for microseconds in 1..=10_000_u64 {
            histogram.saturating_record(microseconds);
        }
        histogram
    }

    /// The format HdrHistogram's `outputPercentileDistribution` writes and
    /// its plotter parses.
    #[test]
    fn hgrm_has_the_hdrhistogram_layout() {
        let histogram = sample_histogram();
        let text = hgrm(&histogram);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines[0].len(), 12 + 1 + 14 + 1 + 10 + 1 + 16);
        assert_eq!(lines[1], "");
        let body: Vec<Vec<f64>> = lines[2..]
            .iter()
            .take_while(|line| !line.starts_with('#'))
            .map(|line| {
                line.split_whitespace()
                    .map(|field| field.parse::<f64>().expect("a number"))
                    .collect()
            })
            .collect();
        assert!(body.len() > 20, "{} lines", body.len());
        for row in &body[..body.len() - 1] {
            assert_eq!(row.len(), 4, "{row:?}");
            let expected = 1.0 / (1.0 - row[1]);
            assert!(
                (row[3] - expected).abs() <= expected * 0.01 + 0.01,
                "{row:?}"
            );
        }
        // Values, percentiles and counts never decrease; the last line is
        // the 100th percentile with the total count and no 1/(1-p).
        for pair in body.windows(2) {
            assert!(
                pair[1][0] >= pair[0][0] && pair[1][1] >= pair[0][1] && pair[1][2] >= pair[0][2]
            );
        }
        let last = body.last().expect("a last line");
        assert_eq!(last.len(), 3);
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 10_000.0);
        assert!((last[0] - 10.0).abs() < 0.01, "max is 10 ms: {last:?}");
        let footer: Vec<&str> = lines
            .iter()
            .filter(|line| line.starts_with("#["))
            .copied()
            .collect();
        assert_eq!(footer.len(), 3);
        assert!(footer[0].starts_with("#[Mean    = ") && footer[0].contains(", StdDeviation   = "));
        assert!(footer[1].starts_with("#[Max     = ") && footer[1].contains(", Total count    = "));
        assert!(footer[1].trim_end_matches(']').ends_with("10000"));
        assert!(footer[2].starts_with("#[Buckets = ") && footer[2].contains(", SubBuckets     = "));
        assert!(footer[2].trim_end_matches(']').ends_with("2048"));
        let mean: f64 = footer[0]["#[Mean    = ".len()..]
            .split(',')
            .next()
            .expect("mean")
            .trim()
            .parse()
            .expect("a number");
        assert!((mean - 5.0).abs() < 0.01, "{mean}");
    }

    #[test]
    fn an_empty_histogram_still_has_header_and_footer() {
        let text = hgrm(&measure::latency_histogram());
        assert!(
            text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n#[Mean")
        );
        assert!(text.contains("Total count    =            0]"));
    }

    #[test]
    fn the_table_lists_every_percentile() {
        let mut histogram = measure::latency_histogram();
        for microseconds in 1..=1000_u64 {
            histogram.saturating_record(microseconds);
        }
        let text = table(&[("publish", &histogram)]);
        let header: Vec<&str> = text
            .lines()
            .next()
            .expect("a header")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "latency", "ms", "count", "p50", "p75", "p90", "p99", "p99.9", "p99.99", "max"
            ]
        );
        let row: Vec<&str> = text
            .lines()
            .nth(1)
            .expect("a row")
            .split_whitespace()
            .collect();
        assert_eq!(row[0], "publish");
        assert_eq!(row[1], "1000");
        assert_eq!(row[2], "0.500");
        assert_eq!(row[5], "0.990");
        assert_eq!(row[6], "0.999");
        assert_eq!(row[8], "1.000");
    }
}

#[cfg(test)]
mod summary_tests {
    use std::time::Duration;

    use super::*;
    use crate::measure::CpuUsage;
    use crate::stats::{Counts, Sample};
    use crate::workload::WorkloadArgs;

    pub(super) fn outcome() -> RunOutcome {
        let mut publish = measure::latency_histogram();
        let mut end_to_end = measure::latency_histogram();
        for microseconds in 100..1100 {
            publish.saturating_record(microseconds);
            end_to_end.saturating_record(microseconds + 50);
        }
        let counts = Counts {
            records: 1000,
            bytes: 1_024_000,
            errors: 0,
        };
        RunOutcome {
            workload: WorkloadArgs::default()
                .resolve()
                .expect("defaults are valid"),
            bootstrap: "127.0.0.1:9092".into(),
            embedded: true,
            // 2024-12-04T14:30:05Z
            started_at: std::time::UNIX_EPOCH + Duration::from_secs(1_733_322_605),
            topics: vec!["t".into()],
            // 2 s of warm-up and 10 measured, as the default workload;
            // consumers keep up, so produced and consumed coincide.
            samples: (1..=12)
                .map(|second| Sample {
                    at_secs: f64::from(second),
                    produced: counts,
                    consumed: counts,
                    interval_secs: 1.0,
                    publish_p99_us: Some(990),
                    end_to_end_p99_us: Some(1040),
                })
                .collect(),
            publish,
            end_to_end: Some(end_to_end),
            produced: counts,
            consumed: counts,
            produced_total: counts,
            consumed_total: counts,
            produce_window: Duration::from_secs(2),
            consume_window: Duration::from_secs(2),
            log_records_added: Some(1000),
            interrupted: false,
            failure: None,
            first_errors: Vec::new(),
            bench_cpu: CpuUsage::default(),
            broker_cpu_secs: Some(0.5),
        }
    }

    #[test]
    fn the_json_summary_has_its_documented_shape() {
        let summary = summary_json(&outcome());
        for key in [
            "bootstrap",
            "client",
            "workload",
            "produce",
            "consume",
            "latency_us",
            "cpu",
            "series",
            "log_records_added",
            "interrupted",
            "failure",
            "errors",
            "git_commit",
            "git_dirty",
            "git_commit_source",
            "time",
            "host",
        ] {
            assert!(summary.get(key).is_some(), "missing {key}: {summary}");
        }
        assert_eq!(summary["time"], "2024-12-04T14:30:05Z");
        let commit = summary["git_commit"].as_str().expect("a string");
        assert!(
            commit == "unknown" || commit.len() == 40,
            "a full hash or unknown: {commit}"
        );
        assert!(!summary["host"].as_str().expect("a string").is_empty());
        assert_eq!(summary["produce"]["records"], 1000);
        assert_eq!(summary["produce"]["records_per_sec"], 500.0);
        assert_eq!(summary["produce"]["mb_per_sec"], 0.51);
        let publish = &summary["latency_us"]["publish"];
        for key in [
            "count",
            "p50_us",
            "p75_us",
            "p90_us",
            "p99_us",
            "p99_9_us",
            "p99_99_us",
            "max_us",
            "mean_us",
        ] {
            assert!(
                publish.get(key).is_some(),
                "missing latency_us.publish.{key}"
            );
        }
        assert_eq!(publish["count"], 1000);
        assert_eq!(summary["latency_us"]["end_to_end"]["count"], 1000);
        assert_eq!(summary["workload"]["partitions"], 16);
        assert_eq!(summary["series"][0]["produced_records"], 1000);
        assert_eq!(summary["cpu"]["broker_cpu_secs_per_gb_produced"], 488.281);
    }

    #[test]
    fn files_are_written_and_the_plot_is_svg() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-report-{}", std::process::id()));
        let files = write_files(&dir, "unit", &outcome(), json!({ "extra": 1 })).expect("written");
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(&files.json).expect("json"))
                .expect("valid JSON");
        assert_eq!(summary["extra"], 1);
        assert!(summary["files"]["plot_svg"].is_string());
        let plot = std::fs::read_to_string(&files.plot).expect("svg");
        assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
        assert_eq!(
            plot.matches("<polyline").count(),
            4,
            "2 latency + 2 throughput lines"
        );
        assert!(plot.contains("99.99%"));
        let hgrm = std::fs::read_to_string(&files.publish_hgrm).expect("hgrm");
        assert!(hgrm.contains("Total count    =         1000]"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

#[cfg(test)]
mod plot_tests {
    use super::summary_tests::outcome;
    use super::*;

    /// Text elements of an SVG: (x, anchor, font size, text).
    fn texts(svg: &str) -> Vec<(f64, String, f64, String)> {
        svg.split("<text")
            .skip(1)
            .map(|element| {
                let tag = element.split_once('>').map_or(element, |(tag, _)| tag);
                let attribute = |name: &str| {
                    tag.split_once(&format!(" {name}=\""))
                        .and_then(|(_, rest)| rest.split_once('"'))
                        .map(|(value, _)| value.to_owned())
                };
                let x = attribute("x").and_then(|x| x.parse().ok()).expect("an x");
                let anchor = attribute("text-anchor").unwrap_or_else(|| "start".into());
                let size = attribute("font-size")
                    .and_then(|size| size.parse().ok())
                    .unwrap_or(11.0);
                let text = element
                    .split_once('>')
                    .and_then(|(_, rest)| rest.split_once("</text>"))
                    .map(|(text, _)| text.replace("&amp;", "&"))
                    .expect("text content");
                (x, anchor, size, text)
            })
            .collect()
    }

    /// Horizontal extent of a text, at a generous 0.62 em per character
    /// (sans-serif digits are 0.56 em).
    fn extent(x: f64, anchor: &str, size: f64, text: &str) -> (f64, f64) {
        let width = text.chars().count() as f64 * size * 0.62;
        match anchor {
            "middle" => (x - width / 2.0, x + width / 2.0),
            "end" => (x - width, x),
            _ => (x, x + width),
        }
    }

    #[test]
    fn the_plot_has_a_title_with_preset_broker_and_date() {
        let mut run = outcome();
        run.workload.preset = Some("16p-1k".into());
        let plot = svg(&run_title(&run), &[PlotRun::single(&run)]);
        let title = "sluice-bench 16p-1k against 127.0.0.1:9092 (embedded sluice), \
                     2024-12-04 14:30 UTC";
        assert!(plot.contains(&format!("<title>{title}</title>")), "{plot}");
        assert!(
            texts(&plot).iter().any(|(_, _, _, text)| text == title),
            "the title is drawn"
        );
        // The workload is the subtitle, in the flags' spelling.
        assert!(plot.contains("keys none"), "{plot}");
    }

    #[test]
    fn the_subtitle_wraps_into_even_lines() {
        let text = outcome().workload.describe();
        let lines = wrap(&text, SUBTITLE_CHARS_MAX);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines.join(", "), text);
        let (first, second) = (lines[0].len(), lines[1].len());
        assert!(first <= SUBTITLE_CHARS_MAX && second <= SUBTITLE_CHARS_MAX);
        assert!(first.abs_diff(second) <= 30, "{lines:?}");
        assert_eq!(wrap("short, text", 150), ["short, text"]);
    }

    #[test]
    fn every_label_lies_within_the_width() {
        let run = outcome();
        let plot = svg(&run_title(&run), &[PlotRun::single(&run)]);
        let labels = texts(&plot);
        let x_labels: Vec<_> = plot
            .split(r#"class="x-label""#)
            .skip(1)
            .map(|rest| {
                rest.split('>')
                    .nth(1)
                    .expect("a label")
                    .replace("</text", "")
            })
            .collect();
        assert!(x_labels.contains(&"12 s".to_owned()), "{x_labels:?}");
        assert!(x_labels.contains(&"99.999%".to_owned()), "{x_labels:?}");
        for (x, anchor, size, text) in labels {
            let (start, end) = extent(x, &anchor, size, &text);
            assert!(
                start >= 0.0 && end <= WIDTH,
                "{text:?} spans {start:.0}..{end:.0}, outside 0..{WIDTH}"
            );
        }
    }

    #[test]
    fn the_warm_up_is_shaded_and_named() {
        let run = outcome();
        let plot = svg(&run_title(&run), &[PlotRun::single(&run)]);
        assert_eq!(
            plot.matches(r#"class="warm-up""#).count(),
            2,
            "band and legend"
        );
        assert!(plot.contains(">warm-up</text>"), "{plot}");
        assert!(plot.contains("warm-up (2 s)"), "{plot}");
        // A catch-up run has no warm-up: nothing is shaded.
        let mut catch_up = outcome();
        catch_up.workload.backlog_bytes = Some(1 << 30);
        let plot = svg(&run_title(&catch_up), &[PlotRun::single(&catch_up)]);
        assert!(!plot.contains(r#"class="warm-up""#), "{plot}");
        assert!(!plot.contains(">warm-up</text>"), "{plot}");
    }

    /// Produced and consumed often coincide: the first is drawn first,
    /// wider and translucent, the second on top of it, thin.
    #[test]
    fn coinciding_lines_stay_visible() {
        let run = outcome();
        let plot = svg(&run_title(&run), &[PlotRun::single(&run)]);
        let polylines: Vec<&str> = plot
            .lines()
            .filter(|line| line.starts_with("<polyline"))
            .collect();
        assert_eq!(polylines.len(), 4, "2 latency + 2 throughput lines");
        let width = |line: &str| {
            line.split_once(r#"stroke-width=""#)
                .and_then(|(_, rest)| rest.split_once('"'))
                .and_then(|(width, _)| width.parse::<f64>().ok())
                .expect("a width")
        };
        // Per panel: the wide line before the thin one, in other colours.
        for pair in [&polylines[0..2], &polylines[2..4]] {
            assert!(width(pair[0]) >= 2.0 * width(pair[1]), "{pair:?}");
            assert_ne!(
                pair[0].split("stroke=").nth(1).map(|rest| &rest[..9]),
                pair[1].split("stroke=").nth(1).map(|rest| &rest[..9])
            );
        }
    }

    #[test]
    fn the_axes_fit_the_data() {
        // 0.256 MB/s (the smoke preset): the axis ends at 0.3, not at 1.1.
        assert_eq!(linear_ticks(0.256, 6).last().copied(), Some(0.3));
        // Latencies between 0.1 and 1.1 ms: 0.1 .. 2 ms, not 0.1 .. 10.
        let ticks = log_ticks(0.1, 1.1);
        assert_eq!(ticks.first().copied(), Some(0.1));
        assert!((ticks.last().copied().expect("a tick") - 2.0).abs() < 1e-12);
        let run = outcome();
        let plot = svg(&run_title(&run), &[PlotRun::single(&run)]);
        // 1.024 MB/s in every sample: the top tick is 1.2.
        assert!(plot.contains(">1.2</text>") && !plot.contains(">1.4</text>"));
    }

    /// Every tick is a multiple of a 1, 2 or 5 x 10^n step (linear) or
    /// itself 1, 2 or 5 x 10^n (log), and its label says exactly that.
    #[test]
    fn ticks_are_round_numbers() {
        let is_round = |value: f64| {
            let mantissa = value / 10_f64.powf(value.log10().floor());
            [1.0, 2.0, 5.0, 10.0]
                .iter()
                .any(|round| (mantissa - round).abs() < 1e-9)
        };
        let mut maximum = 0.003;
        while maximum < 5e6 {
            let ticks = linear_ticks(maximum, 5);
            let step = ticks[1];
            assert!(is_round(step), "step {step} for max {maximum}");
            assert!(
                ticks.len() <= 7 && ticks.len() >= 3,
                "{ticks:?} for {maximum}"
            );
            assert!(*ticks.last().expect("a tick") >= maximum);
            assert!(ticks[ticks.len() - 2] < maximum, "{ticks:?} for {maximum}");
            for (index, tick) in ticks.iter().enumerate() {
                let label = tick_label(*tick, step);
                let parsed: f64 = label.parse().expect("a number");
                assert!(
                    (parsed - index as f64 * step).abs() <= step * 1e-6,
                    "{label}"
                );
            }
            maximum *= 1.37;
        }
        let mut low = 0.0011;
        while low < 1e4 {
            for spread in [1.01, 3.0, 40.0, 9000.0] {
                let ticks = log_ticks(low, low * spread);
                assert!(ticks.iter().all(|tick| is_round(*tick)), "{ticks:?}");
                assert!(ticks[0] <= low * (1.0 + 1e-9), "{ticks:?} for {low}");
                assert!(*ticks.last().expect("a tick") >= low * spread * (1.0 - 1e-9));
                for tick in &ticks {
                    let parsed: f64 = tick_label(*tick, *tick).parse().expect("a number");
                    assert!((parsed - tick).abs() <= tick * 1e-6, "{tick}");
                }
            }
            low *= 2.3;
        }
    }

    /// In a comparison each round of a broker has its own dash pattern and
    /// its own legend label.
    #[test]
    fn compare_rounds_can_be_told_apart() {
        let runs: Vec<RunOutcome> = (0..6).map(|_| outcome()).collect();
        let plot_runs: Vec<PlotRun> = runs
            .iter()
            .enumerate()
            .map(|(index, run)| PlotRun {
                label: format!("{} round {}", ["A", "B"][index % 2], index / 2 + 1),
                broker: index % 2,
                round: index / 2,
                outcome: run,
            })
            .collect();
        let plot = svg("compare", &plot_runs);
        for round in 1..=3 {
            for broker in ["A", "B"] {
                assert!(plot.contains(&format!(">{broker} round {round} produced<")));
            }
        }
        // The produced lines of A (same colour) differ in dash pattern.
        let a_produced: Vec<String> = plot
            .lines()
            .filter(|line| line.starts_with("<polyline") && line.contains(COLORS[0][0]))
            .map(|line| {
                line.split_once("stroke-dasharray=\"")
                    .map_or(String::new(), |(_, rest)| {
                        rest[..rest.find('"').unwrap_or(0)].to_owned()
                    })
            })
            .collect();
        assert_eq!(a_produced.len(), 6, "publish and produced, 3 rounds");
        let mut patterns = a_produced[3..].to_vec();
        patterns.sort();
        patterns.dedup();
        assert_eq!(patterns.len(), 3, "{a_produced:?}");
        for (_, _, _, text) in texts(&plot) {
            assert!(!text.contains("round 0"), "rounds count from 1");
        }
    }
}
