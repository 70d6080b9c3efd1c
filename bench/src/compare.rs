//! `sluice-bench compare`: medians per broker over alternating runs (A B A
//! B, so that drift of a shared machine hits both alike) and the ratio B/A
//! of every figure.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::measure;
use crate::run::RunOutcome;
use crate::stats::Percentiles;

/// One figure: its name, unit, A's and B's medians, B/A.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
}

impl Figure {
    pub fn ratio(&self) -> Option<f64> {
        match (self.a, self.b) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a),
            _ => None,
        }
    }
}

type Extract = fn(&RunOutcome) -> Option<f64>;

fn latency(histogram: Option<&hdrhistogram::Histogram<u64>>, name: &str) -> Option<f64> {
    let histogram = histogram.filter(|histogram| !histogram.is_empty())?;
    Percentiles::of(histogram)
        .value_us(name)
        .map(|microseconds| microseconds as f64 / 1000.0)
}

const FIGURES: &[(&str, &str, Extract)] = &[
    ("produce", "MB/s", |run| Some(run.produce_mb_per_sec())),
    ("produce", "records/s", |run| {
        Some(run.produce_records_per_sec())
    }),
    ("consume", "MB/s", |run| {
        (run.workload.consumers_per_topic > 0).then(|| run.consume_mb_per_sec())
    }),
    ("publish p50", "ms", |run| {
        latency(Some(&run.publish), "p50")
    }),
    ("publish p99", "ms", |run| {
        latency(Some(&run.publish), "p99")
    }),
    ("publish p99.9", "ms", |run| {
        latency(Some(&run.publish), "p99.9")
    }),
    ("publish max", "ms", |run| {
        latency(Some(&run.publish), "max")
    }),
    ("end-to-end p50", "ms", |run| {
        latency(run.end_to_end.as_ref(), "p50")
    }),
    ("end-to-end p99", "ms", |run| {
        latency(run.end_to_end.as_ref(), "p99")
    }),
    ("end-to-end p99.9", "ms", |run| {
        latency(run.end_to_end.as_ref(), "p99.9")
    }),
];

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

/// Medians per figure of the runs labelled `A*` and `B*`.
pub fn compare(outcomes: &[(String, RunOutcome)]) -> Vec<Figure> {
    FIGURES
        .iter()
        .map(|(name, unit, extract)| {
            let side = |prefix: &str| {
                median(
                    outcomes
                        .iter()
                        .filter(|(label, _)| label.starts_with(prefix))
                        .filter_map(|(_, outcome)| extract(outcome))
                        .collect(),
                )
            };
            Figure {
                name,
                unit,
                a: side("A"),
                b: side("B"),
            }
        })
        .collect()
}

pub fn render(figures: &[Figure], a: &str, b: &str) -> String {
    let mut out = format!("comparison (medians over rounds): A = {a}, B = {b}\n");
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>14} {:>14} {:>8}",
        "figure", "unit", "A", "B", "B/A"
    );
    let show = |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.3}"));
    for figure in figures {
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>14} {:>14} {:>8}",
            figure.name,
            figure.unit,
            show(figure.a),
            show(figure.b),
            show(figure.ratio())
        );
    }
    out
}

pub fn to_json(figures: &[Figure]) -> Value {
    Value::Array(
        figures
            .iter()
            .map(|figure| {
                json!({
                    "figure": figure.name,
                    "unit": figure.unit,
                    "a_median": figure.a.map(|value| measure::round(value, 3)),
                    "b_median": figure.b.map(|value| measure::round(value, 3)),
                    "b_over_a": figure.ratio().map(|value| measure::round(value, 3)),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
        let figure = Figure {
            name: "produce",
            unit: "MB/s",
            a: Some(100.0),
            b: Some(50.0),
        };
        assert_eq!(figure.ratio(), Some(0.5));
        let missing = Figure { a: None, ..figure };
        assert_eq!(missing.ratio(), None);
    }
}
