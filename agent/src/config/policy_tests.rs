//! Unit tests for `policy`: defaults, parsing through the real config loader, and each
//! rule's denial.

use super::*;
use crate::base::masked::Masked;
use crate::config::FileConfig;
use farmhand_protocol::{DesiredPort, Provision, Reconcile, Release, RotateIp, Secret, UpdatePort};
use std::path::Path;

const IMEI: &str = "356000000000001";
const OWN: &str = "356000000000009";

const BASE: &str = r#"
state_dir = "/tmp/fh"
[control_plane]
url = "http://127.0.0.1:7000"
insecure_plaintext = true
[proxysmart]
url = "http://127.0.0.1:8080"
username = "proxy"
password_file = "/nonexistent"
[site]
public_host = "203.0.113.7"
country = "DE"
"#;

fn load(policy: &str) -> Result<Policy, String> {
    let text = format!("{BASE}{policy}");
    let path = Path::new("agent.toml");
    FileConfig::parse(path, &text)
        .and_then(|f| f.into_config(path, Masked::new("pw")))
        .map(|c| c.policy)
        .map_err(|e| e.to_string())
}

fn bodies(imei: &str) -> Vec<CommandBody> {
    vec![
        CommandBody::Provision(Provision {
            allocation_id: "a".into(),
            imei: imei.into(),
            login: "l".into(),
            password: Secret::new("password"),
            expires_at_ms: 1,
            bandwidth_kbit: None,
            traffic_quota_mb: None,
            rotate_every_s: None,
        }),
        CommandBody::Release(Release {
            allocation_id: "a".into(),
        }),
        CommandBody::RotateIp(RotateIp { imei: imei.into() }),
        CommandBody::UpdatePort(UpdatePort {
            allocation_id: "a".into(),
            expires_at_ms: 1,
        }),
        CommandBody::Reconcile(Reconcile {
            ports: vec![DesiredPort {
                allocation_id: "a".into(),
                imei: imei.into(),
            }],
        }),
    ]
}

#[test]
fn defaults_allow_everything_and_limit_nothing() {
    let p = load("").unwrap();
    assert_eq!(p, Policy::default());
    assert_eq!(load("[policy]\n").unwrap(), Policy::default());
    assert!(bodies(IMEI).iter().all(|b| p.check(b).is_ok()));
    assert!(p.check_port_count(IMEI, 10_000).is_ok());
    assert_eq!(p.min_rotation_interval, Duration::ZERO);
    assert!(
        !p.refuse_probes,
        "probes are allowed unless the seller says no"
    );
}

#[test]
fn full_section_parses() {
    let p = load(
        r#"[policy]
excluded_imeis = [" 356000000000009 "]
max_ports_per_modem = 2
min_rotation_interval_s = 120
probes = false
[policy.allow]
provision = false
rotate_ip = false
"#,
    )
    .unwrap();
    assert!(!p.allow.provision && !p.allow.rotate_ip);
    assert!(p.allow.release && p.allow.reconcile && p.allow.update_port);
    assert!(p.excludes(OWN), "IMEIs are trimmed");
    assert_eq!(p.max_ports_per_modem, Some(2));
    assert_eq!(p.min_rotation_interval, Duration::from_secs(120));
    assert!(p.refuse_probes);
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        (
            "[policy]\nexcluded_imeis = [\"123\"]",
            "policy.excluded_imeis",
        ),
        (
            "[policy]\nmax_ports_per_modem = 1001",
            "policy.max_ports_per_modem",
        ),
        (
            "[policy]\nmin_rotation_interval_s = 86401",
            "policy.min_rotation_interval_s",
        ),
        ("[policy]\nmax_ports_per_modem = -1", "max_ports_per_modem"),
        ("[policy]\nexclude_imeis = []", "exclude_imeis"),
        ("[policy.allow]\nrotate = false", "rotate"),
    ] {
        let err = load(text).unwrap_err();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn each_switch_denies_only_its_own_command() {
    let ops = [
        "provision",
        "release",
        "rotate_ip",
        "update_port",
        "reconcile",
    ];
    for (i, op) in ops.iter().enumerate() {
        let mut p = Policy::default();
        let switch = match i {
            0 => &mut p.allow.provision,
            1 => &mut p.allow.release,
            2 => &mut p.allow.rotate_ip,
            3 => &mut p.allow.update_port,
            _ => &mut p.allow.reconcile,
        };
        *switch = false;
        for body in bodies(IMEI) {
            let result = p.check(&body);
            if body.op() == *op {
                let e = result.unwrap_err();
                assert_eq!(e.code, CommandErrorCode::PolicyDenied);
                assert!(e.message.contains(op), "{e:?}");
            } else {
                assert!(result.is_ok(), "{op} off must not deny {}", body.op());
            }
        }
    }
}

#[test]
fn excluded_imeis_deny_the_commands_that_name_them() {
    let p = Policy {
        excluded_imeis: [OWN.to_string()].into(),
        ..Policy::default()
    };
    let denied_ops: Vec<&str> = bodies(OWN)
        .iter()
        .filter(|b| p.check(b).is_err())
        .map(|b| b.op())
        .collect();
    assert_eq!(denied_ops, ["provision", "rotate_ip"]);
    assert!(bodies(IMEI).iter().all(|b| p.check(b).is_ok()));
}

#[test]
fn port_cap_counts_existing_ports() {
    let p = Policy {
        max_ports_per_modem: Some(2),
        ..Policy::default()
    };
    assert!(p.check_port_count(IMEI, 1).is_ok());
    let e = p.check_port_count(IMEI, 2).unwrap_err();
    assert_eq!(e.code, CommandErrorCode::PolicyDenied);
    assert!(e.message.contains("allows 2"), "{e:?}");
}

#[test]
fn every_policy_key_documented_in_the_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.example.toml");
    let example = std::fs::read_to_string(path).unwrap();
    let section = &example[example.find("[policy]").unwrap()..];
    // Uncomment the example settings (`# key = value`, `# [policy.allow]`), keep the prose.
    let is_setting = |l: &str| {
        l.starts_with("[policy")
            || l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    };
    let uncommented: String = section
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let p = load(&uncommented).unwrap();
    assert!(p.excludes("356000000000001"));
    assert_eq!(p.max_ports_per_modem, Some(1));
    assert_eq!(p.min_rotation_interval, Duration::from_secs(300));
    assert_eq!(p.allow, AllowedCommands::default());
}
