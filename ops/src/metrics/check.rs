//! A strict checker of the Prometheus text format, written independently of [`super::Text`]
//! so tests can prove what `/metrics` serves is valid: line syntax, names, label escaping,
//! values, `# TYPE` before samples and once per family, no duplicate series, and histogram
//! buckets that are cumulative and end in `+Inf` = `_count`.

use std::collections::{BTreeMap, BTreeSet};

/// `Ok` when `text` is valid exposition text; else the first problem, with its line.
pub fn validate(text: &str) -> Result<(), String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeSet::new();
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the text must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let name = name
                .filter(|n| is_name(n))
                .ok_or_else(|| fail("bad metric name"))?;
            match (kw, arg) {
                (Some("HELP"), _) => {}
                (Some("TYPE"), Some(t)) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(fail("unknown type"));
                    }
                    if types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(fail("TYPE given twice"));
                    }
                }
                _ => return Err(fail("comment is neither HELP nor TYPE")),
            }
            continue;
        }
        let (name, labels, value) = parse_sample(line).map_err(|e| fail(&e))?;
        let family = family_of(&name, &types).ok_or_else(|| fail("sample before its TYPE"))?;
        if !series.insert((name.clone(), labels.clone())) {
            return Err(fail("duplicate series"));
        }
        if types.get(&family).map(String::as_str) == Some("histogram") {
            let others: Vec<&(String, String)> = labels.iter().filter(|(k, _)| k != "le").collect();
            let key = format!("{family}{others:?}");
            if name.ends_with("_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or_else(|| fail("bucket without le"))?;
                let bound = parse_value(&le.1).ok_or_else(|| fail("bad le"))?;
                buckets.entry(key).or_default().push((bound, value));
            } else if name.ends_with("_count") {
                counts.insert(key, value);
            }
        }
    }
    for (key, list) in &buckets {
        let ordered = list.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let last = list.last().copied().unwrap_or((0.0, 0.0));
        if !ordered || last.0 != f64::INFINITY || counts.get(key) != Some(&last.1) {
            return Err(format!(
                "histogram {key}: buckets not cumulative or +Inf != _count"
            ));
        }
    }
    Ok(())
}

type Labels = Vec<(String, String)>;

fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = parse_value(value).ok_or("bad value")?;
    Ok((name.to_owned(), labels, value))
}

/// Parses `k="v",…}` and returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find("=\"").ok_or("label without =\"")?;
        let key = &s[..eq];
        if !is_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = s[eq + 2..].char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break eq + 2 + i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("bad escape in a label value".into()),
                },
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        s = &s[end..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The declared family a sample belongs to (`x_bucket` → `x` for histograms).
fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| {
            types
                .get(*base)
                .is_some_and(|t| t == "histogram" || t == "summary")
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_text_and_names_the_first_problem() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n\
                  # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
        assert_eq!(validate(ok), Ok(()));
        for bad in [
            "a 1\n",                                                    // no TYPE
            "# TYPE a gauge\na{k=v} 1\n",                               // unquoted label
            "# TYPE a gauge\na one\n",                                  // bad value
            "# TYPE a gauge\na 1\na 2\n",                               // duplicate
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n", // +Inf != count
            "# TYPE a gauge\na 1",                                      // no final newline
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_text_writes_is_valid() {
        let mut t = super::super::Text::new();
        let h = super::super::HistogramVec::new("op", super::super::LATENCY_BUCKETS_S);
        h.observe("provision", std::time::Duration::from_millis(3));
        t.histogram_vec("rt_seconds", "RT.", &h);
        t.gauge_vec("m", "M.", ["state"], &[(["a"], 1.0), (["b"], 0.0)]);
        let out = t.finish();
        assert_eq!(validate(&out), Ok(()), "{out}");
    }
}
