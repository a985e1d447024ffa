//! Environment overrides for a TOML config: every key `section.key` can be set with
//! `FARMHAND_SECTION_KEY` (the dotted key, `.` → `_`, upper case), and every key can take
//! its value from a file with `FARMHAND_SECTION_KEY_FILE` (contents, surrounding whitespace
//! trimmed) — for secrets that must not sit in the config or in the process list.
//!
//! Overrides are applied to the parsed TOML table *before* the strict structs see it, so a
//! type error or a bad value is reported the way a bad file value is. A `FARMHAND_…`
//! variable that names no key is an error (a typo must not be silently ignored), except
//! the few a binary lists in [`Schema::allowed`]. Each binary declares its keys and their
//! kinds in a [`Schema`]; its tests check the schema against its example config.

use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::ffi::OsString;
use toml::{Table, Value};

/// Every override variable starts with this.
pub const PREFIX: &str = "FARMHAND_";
/// A variable ending with this reads the key's value from the file it names.
pub const FILE_SUFFIX: &str = "_FILE";

/// What a key holds, so that an environment string becomes the right TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (also paths, URLs, addresses).
    Str,
    /// An integer, e.g. `30`.
    Int,
    /// `true` or `false`.
    Bool,
    /// A list of strings, comma-separated: `a,b`.
    StrList,
    /// An inline TOML table, written as in the file: `{ max = 10, window_s = 60 }`.
    Inline,
}

/// One config key: its dotted path and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Dotted path, e.g. `proxysmart.url`.
    pub path: String,
    /// What it holds.
    pub kind: Kind,
}

impl Key {
    /// A key.
    pub fn new(path: impl Into<String>, kind: Kind) -> Self {
        Key {
            path: path.into(),
            kind,
        }
    }

    /// Its variable: `FARMHAND_` + the path with `.` as `_`, upper case.
    pub fn var(&self) -> String {
        var_name(&self.path)
    }
}

/// The keys a binary accepts, and the `FARMHAND_…` variables it uses for other things.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Every config key.
    pub keys: Vec<Key>,
    /// Variables that are not config keys (e.g. `FARMHAND_ENROLL_TOKEN`); never errors.
    pub allowed: &'static [&'static str],
}

impl Schema {
    /// The keys of the config type `T`, read from its `Deserialize` impl
    /// ([`crate::config_keys`]); structs named in `inline` are set whole, as inline tables.
    pub fn of<T: for<'de> serde::Deserialize<'de>>(inline: &[&str]) -> Self {
        Schema {
            keys: crate::config_keys::keys_of::<T>(inline),
            allowed: NON_CONFIG_VARIABLES,
        }
    }
}

/// The `FARMHAND_…` variables that are not config keys, the same for every binary: the
/// agent's enrollment token, the build-time commit, what `farmhand-demo` prints for
/// scripts, and the test suites' knobs (CI exports them for every process it starts). A
/// shell that exports them for one program must not trip a binary's check.
pub const NON_CONFIG_VARIABLES: &[&str] = &[
    "FARMHAND_ENROLL_TOKEN",
    "FARMHAND_ENROLL_TOKEN_FILE",
    "FARMHAND_GIT_COMMIT",
    "FARMHAND_URL",
    "FARMHAND_ADMIN_KEY",
    "FARMHAND_MARKETPLACE_KEY",
    "FARMHAND_TEST_PATIENCE",
    "FARMHAND_REQUIRE_POSTGRES",
    "FARMHAND_REQUIRE_BROWSER",
    "FARMHAND_TEST_STORE",
];

/// `FARMHAND_` + `path` with `.` as `_`, upper case.
pub fn var_name(path: &str) -> String {
    format!("{PREFIX}{}", path.replace('.', "_").to_ascii_uppercase())
}

/// A variable that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The variable names a key but its value is unusable.
    #[error("environment variable {var} (config key `{key}`): {problem}")]
    Invalid {
        /// The variable.
        var: String,
        /// The key it sets.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A `FARMHAND_…` variable that names no config key.
    #[error(
        "unknown environment variable {var}: no config key is named like it (the rule: \
         FARMHAND_ + the dotted key with `.` as `_`, upper case, e.g. FARMHAND_{example}; \
         see docs/operations.md)"
    )]
    Unknown {
        /// The variable.
        var: String,
        /// A real variable, for the message.
        example: String,
    },
}

/// The overrides that were applied, in variable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied(Vec<(String, String)>);

impl Applied {
    /// Whether nothing was overridden.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The variable that set `key`, if one did.
    pub fn var_for(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(v, _)| v.as_str())
    }

    /// The variables, comma-separated (for messages; never their values).
    pub fn vars(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(v, _)| v.as_str()).collect();
        names.join(", ")
    }
}

/// Why a config could not be built from its text and the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not TOML, an unknown key or a mistyped value (the parser's message names the key).
    #[error("{0}")]
    Toml(String),
    /// An environment variable cannot be applied.
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// Parses `text`, applies the `FARMHAND_…` variables among `vars`, and deserializes into
/// `T`. Without overrides the text is deserialized directly, so errors keep line numbers;
/// with overrides, an error lists the variables that were applied.
pub fn load<T: DeserializeOwned>(
    text: &str,
    schema: &Schema,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<(T, Applied), LoadError> {
    let mut table: Table = toml::from_str(text).map_err(|e| LoadError::Toml(e.to_string()))?;
    let applied = apply(&mut table, schema, vars)?;
    if applied.is_empty() {
        let value = toml::from_str(text).map_err(|e| LoadError::Toml(e.to_string()))?;
        return Ok((value, applied));
    }
    match table.try_into() {
        Ok(value) => Ok((value, applied)),
        Err(e) => Err(LoadError::Toml(format!(
            "{} (with overrides from the environment: {})",
            e.to_string().trim_end(),
            applied.vars()
        ))),
    }
}

/// Applies every `FARMHAND_…` variable among `vars` to `table`.
pub fn apply(
    table: &mut Table,
    schema: &Schema,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Applied, EnvError> {
    let mut ours: Vec<(String, OsString)> = vars
        .into_iter()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v))
        .filter(|(k, _)| k.starts_with(PREFIX) && !schema.allowed.contains(&k.as_str()))
        .collect();
    ours.sort();
    let mut applied = Applied::default();
    let mut seen = BTreeSet::new();
    for (var, raw) in ours {
        let (key, from_file) = resolve(schema, &var)?;
        if !seen.insert(key.path.as_str()) {
            return Err(invalid(
                &var,
                key,
                "set twice (by the variable and its _FILE form)",
            ));
        }
        let raw = raw
            .into_string()
            .map_err(|_| invalid(&var, key, "value is not UTF-8"))?;
        let text = if from_file { read_file(&raw) } else { Ok(raw) };
        let value = text.and_then(|t| convert(key.kind, &t));
        let value = value.map_err(|problem| invalid(&var, key, problem))?;
        set(table, &key.path, value).map_err(|problem| invalid(&var, key, problem))?;
        applied.0.push((var, key.path.clone()));
    }
    Ok(applied)
}

/// The key `var` sets, and whether through its `_FILE` form.
fn resolve<'s>(schema: &'s Schema, var: &str) -> Result<(&'s Key, bool), EnvError> {
    let find = |name: &str| schema.keys.iter().find(|k| k.var() == name);
    if let Some(key) = find(var) {
        return Ok((key, false));
    }
    if let Some(key) = var.strip_suffix(FILE_SUFFIX).and_then(find) {
        return Ok((key, true));
    }
    Err(EnvError::Unknown {
        var: var.to_owned(),
        example: schema
            .keys
            .first()
            .map(|k| k.var()[PREFIX.len()..].to_owned())
            .unwrap_or_default(),
    })
}

fn invalid(var: &str, key: &Key, problem: impl Into<String>) -> EnvError {
    EnvError::Invalid {
        var: var.to_owned(),
        key: key.path.clone(),
        problem: problem.into(),
    }
}

fn read_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(text.trim().to_owned())
}

/// The TOML value of `raw` for a key of `kind`.
fn convert(kind: Kind, raw: &str) -> Result<Value, String> {
    match kind {
        Kind::Str => Ok(Value::String(raw.to_owned())),
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        Kind::Bool => match raw.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Kind::StrList => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )),
        Kind::Inline => {
            let doc: Table = toml::from_str(&format!("v = {raw}")).map_err(|_| {
                format!(
                    "expected an inline TOML table like {{ max = 10, window_s = 60 }}, got {raw:?}"
                )
            })?;
            doc.get("v")
                .filter(|v| v.is_table())
                .cloned()
                .ok_or_else(|| format!("expected an inline TOML table, got {raw:?}"))
        }
    }
}

/// Sets the dotted `path` in `table`, creating the sections on the way.
fn set(table: &mut Table, path: &str, value: Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(leaf) = parts.pop() else {
        return Err("empty key".into());
    };
    let mut current = table;
    for section in parts {
        let entry = current
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{section}` in the config file is not a section"))?;
    }
    current.insert(leaf.to_owned(), value);
    Ok(())
}

/// The dotted keys an example config documents: every `key = value` line, commented or not,
/// under its `[section]` (what the binaries' tests compare their [`Schema`] with). Inline
/// tables count as one key.
pub fn documented_keys(example: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            keys.insert(format!("{section}{key}"));
        }
    }
    keys
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
