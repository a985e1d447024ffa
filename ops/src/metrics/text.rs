//! The Prometheus text exposition format (0.0.4): `# HELP`/`# TYPE` once per family, then
//! one `name{labels} value` line per series, label values escaped.

use super::histogram::Histogram;
use super::{Counter, CounterVec, HistogramVec};
use std::fmt::Write;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A gauge family: `(label values, value)` per series, all with `labels`.
    pub fn gauge_vec<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        labels: [&str; N],
        series: &[([&str; N], f64)],
    ) {
        self.header(name, "gauge", help);
        for (values, value) in series {
            let _ = writeln!(self.out, "{name}{} {value}", label_set(&labels, values));
        }
    }

    /// A counter without labels (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, counter: &Counter) {
        self.header(name, "counter", help);
        let _ = writeln!(self.out, "{name} {}", counter.get());
    }

    /// A labelled counter family.
    pub fn counter_vec<const N: usize>(&mut self, name: &str, help: &str, family: &CounterVec<N>) {
        self.header(name, "counter", help);
        let labels = family.label_names();
        for (values, count) in family.snapshot() {
            let values = values.each_ref().map(String::as_str);
            let _ = writeln!(self.out, "{name}{} {count}", label_set(&labels, &values));
        }
    }

    /// A histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, "histogram", help);
        self.histogram_series(name, None, histogram);
    }

    /// A histogram family labelled by one label.
    pub fn histogram_vec(&mut self, name: &str, help: &str, family: &HistogramVec) {
        self.header(name, "histogram", help);
        for (value, histogram) in family.snapshot() {
            self.histogram_series(name, Some((family.label(), &value)), &histogram);
        }
    }

    fn histogram_series(&mut self, name: &str, label: Option<(&str, &str)>, h: &Histogram) {
        let prefix = match label {
            Some((k, v)) => format!("{k}=\"{}\",", escape(v)),
            None => String::new(),
        };
        for (bound, count) in h.cumulative() {
            let _ = writeln!(self.out, "{name}_bucket{{{prefix}le=\"{bound}\"}} {count}");
        }
        let count = h.count();
        let _ = writeln!(self.out, "{name}_bucket{{{prefix}le=\"+Inf\"}} {count}");
        let bare = match label {
            Some((k, v)) => format!("{{{k}=\"{}\"}}", escape(v)),
            None => String::new(),
        };
        let _ = writeln!(self.out, "{name}_sum{bare} {}", h.sum_seconds());
        let _ = writeln!(self.out, "{name}_count{bare} {count}");
    }
}

fn label_set(names: &[&str], values: &[&str]) -> String {
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_families_with_help_type_and_escaped_labels() {
        let mut t = Text::new();
        let c = CounterVec::new(["route"]);
        c.inc(["/a\"b"]);
        t.counter_vec("x_total", "Xs.", &c);
        t.gauge("up", "Up.", 1.0);
        let h = Histogram::new(&[0.5]);
        h.observe(Duration::from_millis(100));
        t.histogram("d_seconds", "D.", &h);
        let out = t.finish();
        assert!(out.contains("# TYPE x_total counter\nx_total{route=\"/a\\\"b\"} 1\n"));
        assert!(out.contains("up 1\n"));
        assert!(out.contains("d_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(out.contains("d_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(out.contains("d_seconds_count 1\n"));
    }
}
