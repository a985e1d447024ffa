//! The reservation index's tests: pools by country and carrier, load order, and the
//! index kept in step with every change to an agent.

use super::*;
use crate::fleet::{Fleet, ModemFilter};
use farmhand_protocol::{Inventory, Modem, ModemsChanged, Site};

#[test]
fn holders_stay_compact_and_correct() {
    let mut index = Index::default();
    let (a, b) = (index.number("a"), index.number("b"));
    assert_eq!(index.number("a"), a, "numbers are stable");
    index.hold("1", a);
    index.hold("1", a);
    assert!(matches!(index.holders.get("1"), Some(Holders::One(_))));
    index.hold("1", b);
    assert_eq!(index.holders_of("1"), [a, b]);
    index.unhold("1", a);
    assert!(matches!(index.holders.get("1"), Some(Holders::One(n)) if *n == b));
    index.unhold("1", b);
    assert!(index.holders.is_empty());
}

/// A tiny deterministic generator (no `rand` in this crate).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn random_modem(rng: &mut Lcg, imei: u64) -> Modem {
    Modem {
        imei: format!("{imei:015}"),
        nick: "n".into(),
        carrier: [None, Some("O2"), Some("vodafone"), Some("Vodafone")][rng.below(4) as usize]
            .map(String::from),
        ext_ip: (rng.below(8) != 0).then(|| "198.51.100.1".to_string()),
        online: rng.below(5) != 0,
        rotating: false,
        signal: None,
        model: None,
        ..Modem::default()
    }
}

/// What `reserve` must pick, as (load, IMEI): the old full scan over `Fleet::modems`
/// (which agent wins a tie on a duplicate IMEI is not specified).
fn brute_force(fleet: &Fleet, filter: &ModemFilter) -> Option<(u32, String)> {
    let filter = ModemFilter {
        available: Some(true),
        ..filter.clone()
    };
    fleet
        .modems(&filter)
        .into_iter()
        .map(|v| (v.active_allocations, v.imei))
        .min()
}

/// Capacities vary per agent too: each inventory announces a random seller cap (none,
/// below, equal to or above the plane's 2), so an agent's modems change capacity when its
/// next inventory arrives.
#[test]
fn reserve_picks_what_a_full_scan_would_through_random_changes() {
    let fleet = Fleet::new(2);
    let mut rng = Lcg(7);
    let agents = ["a", "b", "c", "d"];
    let filters = [
        ModemFilter::default(),
        ModemFilter {
            country: Some("de".into()),
            ..Default::default()
        },
        ModemFilter {
            carrier: Some("VODAFONE".into()),
            ..Default::default()
        },
        ModemFilter {
            country: Some("FR".into()),
            carrier: Some("o2".into()),
            ..Default::default()
        },
        ModemFilter {
            imei: Some(format!("{:015}", 3)),
            ..Default::default()
        },
    ];
    let mut reserved = Vec::new();
    let mut filled_by_cap = 0;
    for step in 0..3000 {
        let agent = agents[rng.below(4) as usize];
        match rng.below(8) {
            0 => fleet.connected(agent, &format!("s{step}"), "v", 1),
            1 => fleet.disconnected(agent, &format!("s{}", step - 1)),
            2 => {
                let modems = (0..rng.below(6))
                    .map(|_| {
                        let imei = rng.below(12);
                        random_modem(&mut rng, imei)
                    })
                    .collect();
                let country = if rng.below(2) == 0 { "DE" } else { "fr" };
                let inventory = Inventory {
                    site: Site {
                        public_host: "203.0.113.7".into(),
                        country: country.into(),
                        city: None,
                    },
                    proxysmart_reachable: rng.below(6) != 0,
                    modems,
                    ports: vec![],
                    max_ports_per_modem: [None, Some(1), Some(2), Some(5)][rng.below(4) as usize],
                    capabilities: None,
                    probes_refused: false,
                };
                fleet.replace_inventory(agent, inventory);
            }
            3 => {
                let imei = rng.below(12);
                let changes = ModemsChanged {
                    proxysmart_reachable: rng.below(6) != 0,
                    changed: vec![random_modem(&mut rng, imei)],
                    removed: vec![format!("{:015}", rng.below(12))],
                };
                fleet.apply_changes(agent, changes);
            }
            4 if !reserved.is_empty() => {
                let (agent, imei): (String, String) =
                    reserved.swap_remove(rng.below(reserved.len() as u64) as usize);
                fleet.release_load(&agent, &imei);
            }
            5 if step % 97 == 0 => fleet.forget(agent),
            _ => {
                let filter = &filters[rng.below(filters.len() as u64) as usize];
                let expected = brute_force(&fleet, filter);
                let got = fleet.reserve(filter).map(|r| {
                    let views = fleet.modems(&ModemFilter {
                        imei: Some(r.imei.clone()),
                        ..Default::default()
                    });
                    let view = views.iter().find(|v| v.agent_id == r.agent_id);
                    let (load, capacity) =
                        view.map_or((0, 0), |v| (v.active_allocations, v.capacity));
                    assert!(load <= capacity, "step {step}: {load} > {capacity}");
                    filled_by_cap += usize::from(load == capacity && capacity < 2);
                    (load - 1, r.imei, r.agent_id)
                });
                let picked = got.clone().map(|(load, imei, _)| (load, imei));
                assert_eq!(picked, expected, "step {step}, filter {filter:?}");
                reserved.extend(got.map(|(_, imei, agent)| (agent, imei)));
            }
        }
    }
    assert!(reserved.len() > 10, "the test reserved something");
    assert!(
        filled_by_cap > 0,
        "some modem was filled up to a seller cap"
    );
}
