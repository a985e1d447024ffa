//! The fleet view's tests: capacity and seller caps, reservation, outage clocks,
//! contested IMEIs, health limits.

use super::*;
use farmhand_protocol::{BoxCapabilities, HealthResource, HostHealth, Site};

fn modem(imei: &str, carrier: &str, online: bool) -> Modem {
    Modem {
        imei: imei.into(),
        nick: "n".into(),
        carrier: Some(carrier.into()),
        ext_ip: Some("198.51.100.1".into()),
        online,
        rotating: false,
        signal: Some(20),
        model: None,
        ..Modem::default()
    }
}

fn fleet_with(modems: Vec<Modem>) -> Fleet {
    let fleet = Fleet::new(1);
    fleet.connected("a1", "s1", "0.1.0", 1);
    fleet.replace_inventory("a1", inventory(modems, None));
    fleet
}

fn inventory(modems: Vec<Modem>, max_ports_per_modem: Option<u32>) -> Inventory {
    let site = Site {
        public_host: "203.0.113.7".into(),
        country: "DE".into(),
        city: None,
    };
    Inventory {
        site,
        proxysmart_reachable: true,
        modems,
        ports: vec![],
        max_ports_per_modem,
        capabilities: None,
        probes_refused: false,
    }
}

#[test]
fn the_sellers_cap_lowers_capacity_until_an_inventory_lifts_it() {
    let fleet = Fleet::new(3);
    fleet.connected("a1", "s1", "0.1.0", 1);
    let modems = vec![modem("1", "O2", true), modem("2", "O2", true)];
    fleet.replace_inventory("a1", inventory(modems.clone(), Some(1)));
    let any = ModemFilter::default();
    let capacities = |f: &Fleet| -> Vec<(u32, bool)> {
        let views = f.modems(&any);
        views.iter().map(|v| (v.capacity, v.available)).collect()
    };
    assert_eq!(capacities(&fleet), [(1, true), (1, true)]);
    assert_eq!(fleet.reserve(&any).map(|r| r.imei), Some("1".into()));
    assert_eq!(fleet.reserve(&any).map(|r| r.imei), Some("2".into()));
    assert_eq!(
        fleet.reserve(&any),
        None,
        "the seller allows one port per modem"
    );
    assert_eq!(capacities(&fleet), [(1, false), (1, false)]);
    // A cap above the plane's changes nothing; no cap at all gives the plane's back.
    fleet.replace_inventory("a1", inventory(modems.clone(), Some(10)));
    assert_eq!(capacities(&fleet), [(3, true), (3, true)]);
    fleet.replace_inventory("a1", inventory(modems, None));
    assert_eq!(capacities(&fleet), [(3, true), (3, true)]);
    assert_eq!(fleet.reserve(&any).map(|r| r.imei), Some("1".into()));
}

#[test]
fn reservation_takes_capacity_and_respects_filters() {
    let fleet = fleet_with(vec![
        modem("1", "Vodafone", true),
        modem("2", "O2", true),
        modem("3", "O2", false),
    ]);
    let by_carrier = ModemFilter {
        carrier: Some("vodafone".into()),
        ..Default::default()
    };
    assert_eq!(fleet.reserve(&by_carrier).map(|r| r.imei), Some("1".into()));
    assert_eq!(fleet.reserve(&by_carrier), None, "capacity 1 is used up");
    let by_country = ModemFilter {
        country: Some("de".into()),
        ..Default::default()
    };
    assert_eq!(fleet.reserve(&by_country).map(|r| r.imei), Some("2".into()));
    assert_eq!(fleet.reserve(&by_country), None, "modem 3 is offline");
    fleet.release_load("a1", "1");
    assert_eq!(
        fleet.reserve(&ModemFilter::default()).map(|r| r.imei),
        Some("1".into())
    );
}

#[test]
fn disconnected_agents_and_unreachable_proxysmart_offer_nothing() {
    let fleet = fleet_with(vec![modem("1", "Vodafone", true)]);
    fleet.apply_changes(
        "a1",
        ModemsChanged {
            proxysmart_reachable: false,
            changed: vec![],
            removed: vec![],
        },
    );
    assert_eq!(fleet.reserve(&ModemFilter::default()), None);
    fleet.apply_changes(
        "a1",
        ModemsChanged {
            proxysmart_reachable: true,
            changed: vec![],
            removed: vec![],
        },
    );
    fleet.disconnected("a1", "other-session");
    assert_eq!(
        fleet.locate("1"),
        Some(Located::Agent("a1".into(), true)),
        "a stale session id is ignored"
    );
    fleet.disconnected("a1", "s1");
    assert_eq!(fleet.reserve(&ModemFilter::default()), None);
    assert_eq!(
        fleet.modems(&ModemFilter::default()).len(),
        1,
        "last known modems stay listed"
    );
    assert_eq!(fleet.locate("1"), Some(Located::Agent("a1".into(), false)));
}

#[test]
fn orders_needing_a_limit_skip_boxes_that_drop_it_and_unsellable_modems_are_skipped() {
    let fleet = Fleet::new(5);
    for (agent, imei) in [("a1", "1"), ("a2", "2")] {
        fleet.connected(agent, "s", "0.1.0", 1);
        fleet.replace_inventory(agent, inventory(vec![modem(imei, "O2", true)], None));
    }
    let quota = ModemFilter {
        needs_quota: true,
        ..Default::default()
    };
    assert_eq!(fleet.reserve(&quota).map(|r| r.agent_id), Some("a1".into()));
    fleet.release_load("a1", "1");
    fleet.learn_refusal("a1", "bw_quota");
    assert_eq!(fleet.reserve(&quota).map(|r| r.agent_id), Some("a2".into()));
    fleet.release_load("a2", "2");
    // An order without a quota may still go to a1.
    assert_eq!(
        fleet.reserve(&ModemFilter::default()).map(|r| r.agent_id),
        Some("a1".into())
    );
    fleet.release_load("a1", "1");
    // A box that announces it drops speed limits gets no speed-limited order.
    fleet.set_capabilities(
        "a2",
        BoxCapabilities {
            speed_limit: Some(false),
            ..Default::default()
        },
    );
    let both = ModemFilter {
        needs_quota: true,
        needs_speed_limit: true,
        ..Default::default()
    };
    assert_eq!(fleet.reserve(&both), None);
    // A SIM out of credit: online, but not sellable.
    let mut broke = modem("2", "O2", true);
    broke.redirect_imposed = Some(true);
    fleet.replace_inventory("a2", inventory(vec![broke], None));
    let views = fleet.modems(&ModemFilter::default());
    let view = views.iter().find(|v| v.imei == "2").unwrap();
    assert!(!view.available && view.not_sellable.is_some());
}

#[test]
fn a_box_past_a_health_limit_gets_nothing_new_until_it_recovers() {
    let fleet = fleet_with(vec![modem("1", "O2", true)]);
    let health = |free_mb: u64| HostHealth {
        measured_at_ms: 0,
        load_centi: [0; 3],
        cpus: 1,
        memory_total_bytes: 1_000_000_000,
        memory_available_bytes: 500_000_000,
        disks: vec![farmhand_protocol::DiskHealth {
            role: "state".into(),
            mount: "/".into(),
            total_bytes: 10_000_000_000,
            available_bytes: free_mb * 1_000_000,
        }],
        uptime_s: 1,
        os: None,
        kernel: None,
    };
    assert!(fleet.set_health("a1", health(10_000)).is_empty());
    let crossed = fleet.set_health("a1", health(100));
    assert_eq!(crossed.len(), 1);
    assert!(crossed[0].past && crossed[0].resource == HealthResource::Disk);
    assert!(
        fleet.set_health("a1", health(90)).is_empty(),
        "once per crossing"
    );
    assert_eq!(fleet.reserve(&ModemFilter::default()), None);
    assert_eq!(fleet.held_back_counts()[0].1, 1);
    let back = fleet.set_health("a1", health(5_000));
    assert!(!back[0].past);
    assert!(fleet.reserve(&ModemFilter::default()).is_some());
}

fn changed(modems: Vec<Modem>, removed: Vec<String>) -> ModemsChanged {
    ModemsChanged {
        proxysmart_reachable: true,
        changed: modems,
        removed,
    }
}

#[test]
fn outage_clocks_start_when_down_and_reset_when_back() {
    let fleet = fleet_with(vec![modem("1", "O2", true), modem("2", "O2", true)]);
    assert_eq!(fleet.outage("a1", "1"), Outage::default());
    fleet.apply_changes("a1", changed(vec![modem("1", "O2", false)], vec![]));
    let since = fleet
        .outage("a1", "1")
        .modem_offline_since
        .expect("offline");
    // Still offline: the clock keeps its start (a new report does not restart it).
    fleet.apply_changes("a1", changed(vec![modem("1", "O2", false)], vec![]));
    assert_eq!(fleet.outage("a1", "1").modem_offline_since, Some(since));
    // Back online (a flap): the clock is gone; down again, it starts again.
    fleet.apply_changes("a1", changed(vec![modem("1", "O2", true)], vec![]));
    assert_eq!(fleet.outage("a1", "1").modem_offline_since, None);
    fleet.apply_changes("a1", changed(vec![modem("1", "O2", false)], vec![]));
    assert!(fleet.outage("a1", "1").modem_offline_since >= Some(since));
    // A modem the inventory stops listing counts as offline.
    fleet.apply_changes("a1", changed(vec![], vec!["2".into()]));
    assert!(fleet.outage("a1", "2").modem_offline_since.is_some());
    // The agent's absence is its own clock; a returning session clears it.
    fleet.disconnected("a1", "s1");
    let away = fleet.outage("a1", "1");
    assert!(away.agent_away_since.is_some() && away.modem_offline_since.is_some());
    fleet.connected("a1", "s2", "0.1.0", 1);
    assert_eq!(fleet.outage("a1", "1").agent_away_since, None);
    // An agent not seen since the plane started is away since then.
    assert!(fleet.outage("never", "9").agent_away_since.is_some());
}

#[test]
fn an_update_says_when_modems_join_or_leave_or_their_capacity_changes() {
    let fleet = Fleet::new(2);
    fleet.connected("a1", "s1", "0.1.0", 1);
    let modems = vec![modem("1", "O2", true), modem("2", "O2", true)];
    // The first inventory brings modems, none of which went on or offline.
    let first = fleet.replace_inventory("a1", inventory(modems.clone(), None));
    assert!(first.transitions.is_empty());
    assert!(first.modems_changed);
    assert!(
        !fleet
            .replace_inventory("a1", inventory(modems.clone(), None))
            .modems_changed
    );
    assert!(
        fleet
            .replace_inventory("a1", inventory(modems.clone(), Some(1)))
            .modems_changed,
        "the seller's cap changes every modem's capacity"
    );
    let changes = |changed: Vec<Modem>, removed: Vec<String>| ModemsChanged {
        proxysmart_reachable: true,
        changed,
        removed,
    };
    let signal = Modem {
        signal: Some(5),
        ..modem("1", "O2", true)
    };
    assert!(
        !fleet
            .apply_changes("a1", changes(vec![signal], vec![]))
            .modems_changed
    );
    let joined = fleet.apply_changes("a1", changes(vec![modem("3", "O2", true)], vec![]));
    assert!(joined.modems_changed);
    assert!(
        fleet
            .apply_changes("a1", changes(vec![], vec!["2".into()]))
            .modems_changed
    );
    assert!(
        !fleet
            .apply_changes("a1", changes(vec![], vec!["2".into()]))
            .modems_changed,
        "a modem already gone"
    );
}

#[test]
fn a_sim_swap_a_replug_and_a_move_to_another_box_are_news_once() {
    let mut sim = modem("350000000000018", "O2", true);
    sim.iccid = Some("8949020000000001111".into());
    sim.usb_id = Some("1-1.1".into());
    let fleet = fleet_with(vec![sim.clone()]);
    let kinds = |u: Update| -> Vec<IdentityChangeKind> {
        u.identity_changes.into_iter().map(|c| c.kind).collect()
    };
    assert!(kinds(fleet.replace_inventory("a1", inventory(vec![sim.clone()], None))).is_empty());
    sim.iccid = Some("8949020000000002222".into());
    let changes = ModemsChanged {
        proxysmart_reachable: true,
        changed: vec![sim.clone()],
        removed: vec![],
    };
    assert_eq!(
        kinds(fleet.apply_changes("a1", changes)),
        [IdentityChangeKind::SimSwapped]
    );
    sim.usb_id = Some("1-1.3".into());
    let update = fleet.replace_inventory("a1", inventory(vec![sim.clone()], None));
    assert_eq!(kinds(update), [IdentityChangeKind::Replugged]);
    // Another connected box reporting it while a1 is connected: a duplicate, not a move.
    fleet.connected("a2", "s2", "0.1.0", 1);
    let update = fleet.replace_inventory("a2", inventory(vec![sim.clone()], None));
    assert!(kinds(update).is_empty());
    // a1 gone, the modem shows up on a3: it moved.
    fleet.disconnected("a1", "s1");
    fleet.connected("a3", "s3", "0.1.0", 1);
    let update = fleet.replace_inventory("a3", inventory(vec![sim], None));
    let moved: Vec<_> = update.identity_changes;
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].kind, IdentityChangeKind::Moved);
    assert_eq!(moved[0].from.as_deref(), Some("a1"));
    let listed = fleet.modems(&ModemFilter::default());
    assert!(
        listed.iter().all(|m| m.identity_changes.len() == 3),
        "{listed:?}"
    );
}
