//! Unit tests for `env`: naming, kinds, `_FILE`, unknown variables, and `load`'s messages.

use super::*;
use serde::Deserialize;

fn schema() -> Schema {
    let keys = [
        ("listen", Kind::Str),
        ("proxysmart.timeout_s", Kind::Int),
        ("proxysmart.password_file", Kind::Str),
        ("policy.allow.rotate_ip", Kind::Bool),
        ("policy.excluded_imeis", Kind::StrList),
        ("limit", Kind::Inline),
    ];
    Schema {
        keys: keys.iter().map(|(p, k)| Key::new(*p, *k)).collect(),
        allowed: &["FARMHAND_ENROLL_TOKEN"],
    }
}

fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    list.iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Proxysmart {
    timeout_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    listen: String,
    proxysmart: Proxysmart,
}

#[test]
fn names_follow_the_dotted_key() {
    assert_eq!(
        var_name("policy.max_ports_per_modem"),
        "FARMHAND_POLICY_MAX_PORTS_PER_MODEM"
    );
    assert_eq!(var_name("listen"), "FARMHAND_LISTEN");
}

#[test]
fn values_are_converted_by_kind_and_sections_created() {
    let mut t = Table::new();
    let applied = apply(
        &mut t,
        &schema(),
        vars(&[
            ("FARMHAND_LISTEN", "0.0.0.0:7000"),
            ("FARMHAND_PROXYSMART_TIMEOUT_S", " 30 "),
            ("FARMHAND_POLICY_ALLOW_ROTATE_IP", "false"),
            ("FARMHAND_POLICY_EXCLUDED_IMEIS", "1, 2,"),
            ("FARMHAND_LIMIT", "{ max = 3, window_s = 5 }"),
            ("FARMHAND_ENROLL_TOKEN", "ignored"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(t["listen"].as_str(), Some("0.0.0.0:7000"));
    assert_eq!(t["proxysmart"]["timeout_s"].as_integer(), Some(30));
    assert_eq!(t["policy"]["allow"]["rotate_ip"].as_bool(), Some(false));
    assert_eq!(t["policy"]["excluded_imeis"].as_array().unwrap().len(), 2);
    assert_eq!(t["limit"]["window_s"].as_integer(), Some(5));
    assert_eq!(applied.var_for("listen"), Some("FARMHAND_LISTEN"));
    assert!(!applied.vars().contains("ENROLL"));
}

#[test]
fn type_errors_and_unknown_variables_name_the_variable() {
    let err = apply(
        &mut Table::new(),
        &schema(),
        vars(&[("FARMHAND_PROXYSMART_TIMEOUT_S", "soon")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("FARMHAND_PROXYSMART_TIMEOUT_S")
            && err.contains("proxysmart.timeout_s")
            && err.contains("integer"),
        "{err}"
    );
    let err = apply(
        &mut Table::new(),
        &schema(),
        vars(&[("FARMHAND_PROXYSMART_TIMEOUT", "3")]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, EnvError::Unknown { var, .. } if var == "FARMHAND_PROXYSMART_TIMEOUT"),
        "{err}"
    );
    let err = apply(
        &mut Table::new(),
        &schema(),
        vars(&[("FARMHAND_LIMIT", "3")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("inline TOML table"), "{err}");
    // A scalar where a section is needed.
    let mut t: Table = toml::from_str("proxysmart = 3").unwrap();
    let err = apply(
        &mut t,
        &schema(),
        vars(&[("FARMHAND_PROXYSMART_TIMEOUT_S", "3")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a section"), "{err}");
}

#[test]
fn file_form_reads_the_value_and_conflicts_with_the_plain_form() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, "45\n").unwrap();
    let path = file.to_str().unwrap();
    let mut t = Table::new();
    apply(
        &mut t,
        &schema(),
        vars(&[("FARMHAND_PROXYSMART_TIMEOUT_S_FILE", path)]),
    )
    .unwrap();
    assert_eq!(t["proxysmart"]["timeout_s"].as_integer(), Some(45));
    // The key `password_file` itself wins over the `_FILE` reading of `password`.
    apply(
        &mut t,
        &schema(),
        vars(&[("FARMHAND_PROXYSMART_PASSWORD_FILE", path)]),
    )
    .unwrap();
    assert_eq!(t["proxysmart"]["password_file"].as_str(), Some(path));
    let both = vars(&[("FARMHAND_LISTEN", "a"), ("FARMHAND_LISTEN_FILE", path)]);
    assert!(apply(&mut Table::new(), &schema(), both)
        .unwrap_err()
        .to_string()
        .contains("set twice"));
    let missing = vars(&[("FARMHAND_LISTEN_FILE", "/nonexistent/x")]);
    let err = apply(&mut Table::new(), &schema(), missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read /nonexistent/x"), "{err}");
}

#[test]
fn load_reports_strict_errors_with_the_variables_applied() {
    let text = "listen = \"a\"\n[proxysmart]\ntimeout_s = 5\n";
    let (c, applied): (Config, _) = load(text, &schema(), vars(&[])).unwrap();
    assert!(applied.is_empty() && c.proxysmart.timeout_s == 5 && c.listen == "a");
    let (c, _): (Config, _) = load(
        text,
        &schema(),
        vars(&[("FARMHAND_PROXYSMART_TIMEOUT_S", "9")]),
    )
    .unwrap();
    assert_eq!(c.proxysmart.timeout_s, 9);
    // Negative where the struct wants u64: serde's message plus the variable's name.
    let err = load::<Config>(
        text,
        &schema(),
        vars(&[("FARMHAND_PROXYSMART_TIMEOUT_S", "-1")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("timeout_s") && err.contains("FARMHAND_PROXYSMART_TIMEOUT_S"),
        "{err}"
    );
    // A key the schema knows but the struct does not: deny_unknown_fields still applies.
    let err = load::<Config>(
        text,
        &schema(),
        vars(&[("FARMHAND_POLICY_ALLOW_ROTATE_IP", "true")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("policy"), "{err}");
}

#[test]
fn documented_keys_reads_commented_and_plain_lines() {
    let example =
        "# top\nlisten = \"x\"\n# [proxysmart]\n# Timeout, seconds.\n# timeout_s = 5\n[limit]\n";
    let keys: Vec<String> = documented_keys(example).into_iter().collect();
    assert_eq!(keys, ["listen", "proxysmart.timeout_s"]);
}
