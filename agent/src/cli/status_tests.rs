//! Tests of `farmhand-agent status`: locating the file, rendering, staleness, exit codes.

use super::*;
use farmhand_protocol::{ManagedPort, Modem};

fn report(updated_at_ms: u64) -> StatusReport {
    StatusReport {
        updated_at_ms,
        pid: 42,
        agent_version: "0.1.0 (commit abc)".into(),
        agent_id: "ag-7".into(),
        control_plane_url: "https://plane.example".into(),
        connected: true,
        session_id: Some("sess-1".into()),
        last_frame_at_ms: Some(updated_at_ms - 2_000),
        last_error: None,
        proxysmart_reachable: true,
        proxysmart_error: None,
        modems: vec![Modem {
            imei: "356000000000001".into(),
            nick: "m1".into(),
            carrier: Some("Vodafone".into()),
            ext_ip: Some("198.51.100.4".into()),
            online: true,
            rotating: false,
            signal: None,
            model: None,
            ..Modem::default()
        }],
        ports: vec![ManagedPort {
            allocation_id: "al-1".into(),
            imei: "356000000000001".into(),
            port_id: "portA".into(),
            http_port: 8001,
            socks_port: 5001,
        }],
        health: Some(farmhand_protocol::HostHealth {
            measured_at_ms: updated_at_ms,
            load_centi: [57, 40, 30],
            cpus: 4,
            memory_total_bytes: 4_000_000_000,
            memory_available_bytes: 100_000_000,
            disks: vec![farmhand_protocol::DiskHealth {
                role: "state".into(),
                mount: "/".into(),
                total_bytes: 32_000_000_000,
                available_bytes: 20_000_000_000,
            }],
            uptime_s: 7_200,
            os: Some("Debian GNU/Linux 12 (bookworm)".into()),
            kernel: Some("6.1.0-18-arm64".into()),
        }),
        health_limits: Some(farmhand_protocol::HealthLimits::DEFAULT),
    }
}

#[test]
fn renders_the_box_health_and_warns_before_the_plane_s_limit() {
    let now = 1_700_000_000_000;
    let text = render(&report(now), Path::new("/run/x.json"), now);
    for needle in [
        "box health:",
        "load 0.57 0.40 0.30 on 4 CPUs",
        "disk / (state): 20000 MB free of 32000 MB",
        "WARNING: 100 MB of memory available, the limit is 128 MB (doubled)",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
}

#[test]
fn renders_connection_modems_and_ports_with_ages() {
    let now = 1_700_000_000_000;
    let text = render(&report(now - 3_000), Path::new("/run/x.json"), now);
    for needle in [
        "last updated 3 s ago",
        "connected (session sess-1), last sync 5 s ago",
        "https://plane.example",
        "ag-7",
        "356000000000001  Vodafone",
        "198.51.100.4",
        "al-1",
        "8001",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
    assert!(!text.contains("STALE"));
    assert!(healthy(&report(now - 3_000), now));
}

#[test]
fn an_old_or_disconnected_report_is_unhealthy() {
    let now = 1_700_000_000_000;
    let old = report(now - 600_000);
    assert!(render(&old, Path::new("s.json"), now).contains("STALE: not updated for 10 min"));
    assert!(!healthy(&old, now));
    let mut down = report(now);
    down.connected = false;
    down.session_id = None;
    down.last_error = Some("connection refused".into());
    down.proxysmart_reachable = false;
    down.proxysmart_error = Some("unauthorized".into());
    let text = render(&down, Path::new("s.json"), now);
    assert!(text.contains("DISCONNECTED (connection refused)"), "{text}");
    assert!(text.contains("UNREACHABLE: unauthorized"), "{text}");
    assert!(!healthy(&down, now));
}

#[test]
fn locates_the_file_from_flag_or_config() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("flag.json");
    assert_eq!(locate(Some(&flag), None).unwrap(), flag);
    let config = dir.path().join("agent.toml");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/agent.example.toml"
    ))
    .unwrap()
    .replace(
        "/var/lib/farmhand",
        &dir.path().join("st").display().to_string(),
    );
    std::fs::write(&config, example).unwrap();
    assert_eq!(
        locate(None, Some(&config)).unwrap(),
        dir.path().join("st").join(STATUS_FILE)
    );
    let err = locate(None, Some(&dir.path().join("nope.toml"))).unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn missing_file_exits_1_and_a_fresh_one_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATUS_FILE);
    assert_eq!(run(Some(&path), None, false).unwrap(), 1);
    status_file::write_atomic(&path, &report(now_ms())).unwrap();
    assert_eq!(run(Some(&path), None, true).unwrap(), 0);
    std::fs::write(&path, "{not json").unwrap();
    assert!(run(Some(&path), None, false).is_err());
}

#[test]
fn ages_read_naturally() {
    assert_eq!(human(Duration::from_secs(3)), "3 s");
    assert_eq!(human(Duration::from_secs(300)), "5 min");
    assert_eq!(human(Duration::from_secs(3 * 3600)), "3 h");
}
