//! The whole journal as JSON, table by table (`farmhand-agent export`): every row of every
//! tree, so an export is complete by construction — a table added later is exported too.

use super::{Journal, JournalError};
use serde_json::{json, Map, Value};

impl Journal {
    /// Every table (named as [`Journal::table_names`]) → its rows, `{"key", "value"}`:
    /// keys as text, values as the JSON they are stored as; the few binary values (8-byte
    /// times and offsets) as numbers.
    pub fn dump(&self) -> Result<Map<String, Value>, JournalError> {
        let mut tables = Map::new();
        for name in self.table_names() {
            let tree = if name == "default" {
                (*self.db).clone()
            } else {
                self.db.open_tree(&name)?
            };
            let mut rows = Vec::new();
            for row in tree.iter() {
                let (key, value) = row?;
                rows.push(json!({
                    "key": String::from_utf8_lossy(&key),
                    "value": readable(&value),
                }));
            }
            tables.insert(name, Value::Array(rows));
        }
        Ok(tables)
    }
}

fn readable(bytes: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return value;
    }
    match <[u8; 8]>::try_from(bytes) {
        Ok(be) => json!(i64::from_be_bytes(be)),
        Err(_) => json!(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}
