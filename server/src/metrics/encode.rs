//! The Prometheus text exposition format, version 0.0.4 (what
//! `Content-Type: text/plain; version=0.0.4` promises): `# HELP` and
//! `# TYPE` lines, then the family's samples, every sample of a family
//! together. Pure: no I/O, no clock; runs on the admin HTTP thread.
//!
//! Label values and help texts are escaped as the format says (backslash,
//! double quote and line feed in label values; backslash and line feed in
//! help). Metric and label names are this crate's own constants and are
//! checked with an assertion.

use std::fmt::Write;

/// The `Content-Type` of [`TextEncoder::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type, as `# TYPE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds one exposition. Call [`TextEncoder::family`] once per family,
/// then its samples, before the next family.
#[derive(Default)]
pub struct TextEncoder {
    text: String,
    family: String,
}

impl TextEncoder {
    pub fn new() -> TextEncoder {
        TextEncoder::default()
    }

    /// Start family `name`: its help and type lines.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        assert!(valid_name(name), "metric name {name:?}");
        self.family.clear();
        self.family.push_str(name);
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    /// One sample of the current family (a counter or gauge value).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = std::mem::take(&mut self.family);
        self.line(&name, "", labels, None, value);
        self.family = name;
    }

    /// One histogram of the current family: `bucket_counts[i]` observations
    /// fell at or below `bounds[i]` and above the bound before (not
    /// cumulative); `bucket_counts` has one more entry than `bounds`, the
    /// observations above the last bound. Written cumulative, as the
    /// format wants, with the `+Inf` bucket equal to `_count`.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        bounds: &[f64],
        bucket_counts: &[u64],
        sum: f64,
    ) {
        assert_eq!(bucket_counts.len(), bounds.len() + 1);
        let name = std::mem::take(&mut self.family);
        let mut cumulative = 0_u64;
        for (bound, count) in bounds.iter().zip(bucket_counts) {
            cumulative += count;
            self.line(
                &name,
                "_bucket",
                labels,
                Some(&format_value(*bound)),
                cumulative as f64,
            );
        }
        cumulative += bucket_counts[bounds.len()];
        self.line(&name, "_bucket", labels, Some("+Inf"), cumulative as f64);
        self.line(&name, "_sum", labels, None, sum);
        self.line(&name, "_count", labels, None, cumulative as f64);
        self.family = name;
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.text
    }

    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        bucket_bound: Option<&str>,
        value: f64,
    ) {
        self.text.push_str(name);
        self.text.push_str(suffix);
        if !labels.is_empty() || bucket_bound.is_some() {
            self.text.push('{');
            let mut first = true;
            let le = bucket_bound.map(|bound| ("le", bound));
            for (label, label_value) in labels.iter().copied().chain(le) {
                assert!(valid_name(label), "label name {label:?}");
                if !first {
                    self.text.push(',');
                }
                first = false;
                let _ = write!(self.text, "{label}=\"{}\"", escape_label_value(label_value));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&format_value(value));
        self.text.push('\n');
    }
}

/// A sample value: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':')
}

fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_are_written_as_the_format_says() {
        let mut encoder = TextEncoder::new();
        encoder.family(
            "sluice_kafka_requests_total",
            "Requests.\nBy API.",
            Kind::Counter,
        );
        encoder.sample(&[("api", "Produce")], 3.0);
        encoder.sample(&[("api", "a\"b\\c\nd")], 1.0);
        encoder.family("sluice_up", "Up.", Kind::Gauge);
        encoder.sample(&[], 1.5);
        encoder.family(
            "sluice_kafka_request_duration_seconds",
            "Latency.",
            Kind::Histogram,
        );
        encoder.histogram(&[("api", "Fetch")], &[0.001, 0.01], &[2, 0, 1], 0.5);
        let text = encoder.finish();
        let expected = "\
# HELP sluice_kafka_requests_total Requests.\\nBy API.
# TYPE sluice_kafka_requests_total counter
sluice_kafka_requests_total{api=\"Produce\"} 3
sluice_kafka_requests_total{api=\"a\\\"b\\\\c\\nd\"} 1
# HELP sluice_up Up.
# TYPE sluice_up gauge
sluice_up 1.5
# HELP sluice_kafka_request_duration_seconds Latency.
# TYPE sluice_kafka_request_duration_seconds histogram
sluice_kafka_request_duration_seconds_bucket{api=\"Fetch\",le=\"0.001\"} 2
sluice_kafka_request_duration_seconds_bucket{api=\"Fetch\",le=\"0.01\"} 2
sluice_kafka_request_duration_seconds_bucket{api=\"Fetch\",le=\"+Inf\"} 3
sluice_kafka_request_duration_seconds_sum{api=\"Fetch\"} 0.5
sluice_kafka_request_duration_seconds_count{api=\"Fetch\"} 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn special_values_are_spelled_as_the_format_says() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e20), "100000000000000000000");
    }

    #[test]
    #[should_panic(expected = "metric name")]
    fn a_bad_metric_name_is_a_bug() {
        TextEncoder::new().family("sluice-bad", "", Kind::Gauge);
    }
}
