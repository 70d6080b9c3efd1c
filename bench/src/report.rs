//! Outputs of a broker run: the percentile table, `.hgrm` files in
//! HdrHistogram's percentile-distribution format, the JSON summary, and an
//! SVG plot (latency by percentile on a log axis, throughput over time),
//! written by hand to stay dependency-free.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::measure;
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
    write(&files.plot, &svg(&[(String::new(), outcome)]))?;
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
    json!({
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
    })
}

const WIDTH: f64 = 1000.0;
const PANEL_WIDTH: f64 = 420.0;
const PANEL_HEIGHT: f64 = 300.0;
const TOP: f64 = 50.0;
const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
/// The percentile axis ends at 99.999% (1/(1-q) = 10^5).
const NINES_MAX: f64 = 5.0;

/// Latency by percentile (log axes) and throughput over time for one or
/// more runs, labelled by the first tuple field.
pub fn svg(runs: &[(String, &RunOutcome)]) -> String {
    let mut latency_series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut throughput_series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (label, outcome) in runs {
        let prefix = if label.is_empty() {
            String::new()
        } else {
            format!("{label} ")
        };
        let mut histograms = vec![("publish", &outcome.publish)];
        if let Some(end_to_end) = &outcome.end_to_end {
            histograms.push(("end-to-end", end_to_end));
        }
        for (name, histogram) in histograms {
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
            latency_series.push((format!("{prefix}{name}"), points));
        }
        throughput_series.push((
            format!("{prefix}produced"),
            outcome
                .samples
                .iter()
                .map(|sample| (sample.at_secs, sample.produced_mb_per_sec()))
                .collect(),
        ));
        if outcome.workload.consumers_per_topic > 0 {
            throughput_series.push((
                format!("{prefix}consumed"),
                outcome
                    .samples
                    .iter()
                    .map(|sample| (sample.at_secs, sample.consumed_mb_per_sec()))
                    .collect(),
            ));
        }
    }
    // Room under the panels for one legend line per series.
    let legend_lines = latency_series.len().max(throughput_series.len());
    let height = TOP + PANEL_HEIGHT + 45.0 + 14.0 * legend_lines as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    latency_panel(&mut out, 70.0, &latency_series);
    throughput_panel(&mut out, 570.0, &throughput_series);
    out.push_str("</svg>\n");
    out
}

fn latency_panel(out: &mut String, left: f64, series: &[(String, Vec<(f64, f64)>)]) {
    let values = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|point| point.1));
    let low = values.clone().fold(f64::INFINITY, f64::min).max(0.001);
    let high = values.fold(0.0_f64, f64::max).max(low * 10.0);
    let (low_exp, high_exp) = (low.log10().floor(), high.log10().ceil());
    let x = |nines: f64| left + nines / NINES_MAX * PANEL_WIDTH;
    let y = |ms: f64| {
        TOP + PANEL_HEIGHT - (ms.max(1e-9).log10() - low_exp) / (high_exp - low_exp) * PANEL_HEIGHT
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
    let mut exponent = low_exp;
    while exponent <= high_exp {
        let value = 10_f64.powf(exponent);
        tick_y(out, left, y(value), &format_ms(value));
        exponent += 1.0;
    }
    lines(out, series, x, y, left);
}

fn format_ms(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

fn throughput_panel(out: &mut String, left: f64, series: &[(String, Vec<(f64, f64)>)]) {
    let time_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|point| point.0))
        .fold(1.0_f64, f64::max);
    let rate_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|point| point.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let x = |seconds: f64| left + seconds / time_max * PANEL_WIDTH;
    let y = |rate: f64| TOP + PANEL_HEIGHT - rate / rate_max * PANEL_HEIGHT;
    frame(out, left, "Throughput per second (MB/s)");
    for step in 0..=5 {
        let seconds = time_max * f64::from(step) / 5.0;
        tick_x(out, x(seconds), &format!("{seconds:.0} s"));
        let rate = rate_max * f64::from(step) / 5.0;
        tick_y(out, left, y(rate), &format!("{rate:.0}"));
    }
    lines(out, series, x, y, left);
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
        TOP - 15.0,
        escape(title)
    );
}

fn tick_x(out: &mut String, x: f64, label: &str) {
    let bottom = TOP + PANEL_HEIGHT;
    let _ = writeln!(
        out,
        r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
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

fn lines(
    out: &mut String,
    series: &[(String, Vec<(f64, f64)>)],
    x: impl Fn(f64) -> f64,
    y: impl Fn(f64) -> f64,
    left: f64,
) {
    for (index, (name, points)) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let dash = if index >= COLORS.len() {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"/>"#,
                path.join(" ")
            );
        }
        let legend_y = TOP + PANEL_HEIGHT + 35.0 + 14.0 * index as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{left}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            left + 20.0,
            left + 25.0,
            legend_y + 4.0,
            escape(name)
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

    fn outcome() -> RunOutcome {
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
            topics: vec!["t".into()],
            samples: vec![Sample {
                at_secs: 1.0,
                produced: counts,
                consumed: counts,
                interval_secs: 1.0,
                publish_p99_us: Some(990),
                end_to_end_p99_us: Some(1040),
            }],
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
        ] {
            assert!(summary.get(key).is_some(), "missing {key}: {summary}");
        }
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
