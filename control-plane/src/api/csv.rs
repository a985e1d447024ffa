//! CSV for the tabular parts of exports (RFC 4180): one row per JSON object, the columns
//! in the order keys first appear. Nested values are written as JSON text. A text cell
//! that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a
//! leading `'`, so an exported label cannot become a formula on the reader's machine.

use serde_json::Value;

/// The rows of `rows` (objects) as CSV with a header line; anything else in `rows` is
/// skipped.
pub fn to_csv(rows: &[Value]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for row in rows.iter().filter_map(Value::as_object) {
        for key in row.keys() {
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    to_csv_in(&columns, rows)
}

/// As [`to_csv`], with these columns in this order (a key not among them is left out).
pub fn to_csv_in(columns: &[&str], rows: &[Value]) -> String {
    let mut out = String::new();
    line(&mut out, columns.iter().map(|c| c.to_string()));
    for row in rows.iter().filter_map(Value::as_object) {
        line(
            &mut out,
            columns
                .iter()
                .map(|c| row.get(*c).map_or_else(String::new, cell)),
        );
    }
    out
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn line(out: &mut String, cells: impl Iterator<Item = String>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&cell);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotes_what_needs_it_and_defuses_formulas() {
        let rows = [
            json!({"a": "plain", "b": 5}),
            json!({"b": null, "c": "x,\"y\"\nz", "a": "=SUM(A1)"}),
            json!({"a": {"nested": [1]}, "b": -3}),
        ];
        assert_eq!(
            to_csv(&rows),
            "a,b,c\r\nplain,5,\r\n'=SUM(A1),,\"x,\"\"y\"\"\nz\"\r\n\"{\"\"nested\"\":[1]}\",-3,\r\n"
        );
        assert_eq!(to_csv(&[]), "\r\n");
    }
}
