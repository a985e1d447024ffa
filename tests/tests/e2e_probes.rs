//! End to end: verified delivery. The plane probes every sold port THROUGH the buyer's
//! endpoint (HTTP and SOCKS5, the buyer's credentials) to its own echo endpoint, and
//! catches what the box's API does not show — a port that accepts and never answers, a
//! proxy that died while the modem shows online, slow first bytes, traffic leaving from
//! another IP than the modem reports — each within the configured number of probes, with
//! its reason, one `allocation.degraded`, and (with replacement on) a move to another
//! modem where the buyer's same credentials work (real curl), then
//! `allocation.recovered`. When the plane cannot reach its probe target, judging pauses
//! and nobody is blamed. Real simulator (its proxies leave from the modem's loopback IP),
//! plane, agent, sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{
    curl_via, metric, proxy_urls, start_receiver, within, Inbox, Origin, Stack, StackOptions,
};
use farmhand_testkit::sim::PathFault;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

/// The port of the pause test's own probe target (a `fn` cannot capture), what it saw,
/// and whether it is broken (it closes without an answer).
static PAUSE_TARGET_PORT: AtomicU16 = AtomicU16::new(0);
static PAUSE_ARRIVALS: Arrivals = Arrivals::new(Vec::new());
static PAUSE_BROKEN: AtomicBool = AtomicBool::new(false);
/// An echo that always answers.
static NEVER_BROKEN: AtomicBool = AtomicBool::new(false);

/// Probes every 2 s, two failures in a row degrade, 800 ms is slow (far from both a
/// loaded machine's loopback and the 2 s timeout).
fn probing(c: &mut farmhand_control::ServerConfig) {
    c.probe.enabled = true;
    c.probe.listen = Some("127.0.0.1:0".parse().unwrap());
    c.probe.interval_s = 2;
    c.probe.timeout_s = 2;
    c.probe.slow_ms = 800;
    c.probe.failures_to_degrade = 2;
    c.probe.max_per_second = 50;
}

/// Starts a stack whose modems' IPs are loopback addresses (127.0.7.N), so the echo sees
/// the modem's IP as a real box's traffic would show it, and waits until the plane does.
async fn stack(modems: usize, configure_plane: fn(&mut farmhand_control::ServerConfig)) -> Stack {
    let stack = Stack::start(StackOptions {
        modems,
        configure_plane,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    for (i, imei) in stack.sim.imeis().iter().enumerate() {
        stack
            .sim
            .set_ext_ip(imei, &format!("127.0.7.{}", i + 1))
            .unwrap();
    }
    within(PATIENCE, "the modems' loopback IPs", || async {
        let modems = stack.admin.get("/v1/modems").await.ok()?.body;
        let modems = modems["modems"].as_array()?.clone();
        let loopback = modems.iter().filter(|m| {
            m["ext_ip"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("127.0.7."))
                && m["available"] == true
        });
        (loopback.count() == modems.len() && modems.len() == stack.sim.imeis().len()).then_some(())
    })
    .await
    .unwrap();
    stack
}

async fn subscribe(stack: &Stack, stop: &CancellationToken) -> Arc<Inbox> {
    subscribe_to(
        stack,
        stop,
        &["allocation.degraded", "allocation.recovered"],
    )
    .await
}

async fn subscribe_to(stack: &Stack, stop: &CancellationToken, events: &[&str]) -> Arc<Inbox> {
    let (url, inbox) = start_receiver(stop).await.unwrap();
    let reply = stack
        .admin
        .post("/v1/webhooks", json!({"url": url, "events": events}))
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    inbox
}

async fn allocate(stack: &Stack, order_id: &str, imei: &str) -> Value {
    let body = json!({"order_id": order_id, "duration_s": 86_400, "imei": imei});
    let reply = stack.market.post("/v1/allocations", body).await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body
}

async fn probes(stack: &Stack, id: &str) -> Value {
    let path = format!("/v1/allocations/{id}/probes");
    stack.market.get_ok(&path).await.unwrap()
}

/// The allocation's probes once they show `health` (`ok`, `degraded`).
async fn health(stack: &Stack, id: &str, health: &str) -> Value {
    within(PATIENCE, &format!("allocation {id} {health}"), || async {
        let p = probes(stack, id).await;
        (p["health"] == health).then_some(p)
    })
    .await
    .unwrap()
}

fn events_for(inbox: &Inbox, kind: &str, id: &str) -> Vec<Value> {
    inbox
        .of(kind)
        .iter()
        .map(|r| r.json())
        .filter(|e| e["object"]["allocation_id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_port_passes_its_probes_from_the_modems_own_ip() {
    let stack = stack(1, probing).await;
    let imei = stack.sim.imeis()[0].clone();
    let id = allocate(&stack, "probe-healthy", &imei).await["allocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = within(PATIENCE, "three successful probes", || async {
        let p = probes(&stack, &id).await;
        (p["summary"]["ok"].as_u64()? >= 3).then_some(p)
    })
    .await
    .unwrap();
    assert_eq!(view["health"], "ok", "{view}");
    assert_eq!(view["judging"], "active");
    assert_eq!(view["summary"]["availability_pct"], 100.0, "{view}");
    assert!(view["summary"]["p50_ms"].is_u64(), "{view}");
    let last = &view["results"][0];
    assert_eq!(last["ok"], true, "{view}");
    assert_eq!(
        last["egress_ip"], "127.0.7.1",
        "the echo saw the modem's IP: {view}"
    );
    assert_eq!(last["modem_ip"], "127.0.7.1");
    // What a probe costs the buyer's port, as the box meters it (documented per day).
    let after = probes(&stack, &id).await["summary"]["probes"]
        .as_u64()
        .unwrap();
    let metered: u64 = stack
        .sim
        .ports()
        .iter()
        .map(|p| p.bytes_in + p.bytes_out)
        .sum();
    let per_probe = metered / after.max(1);
    eprintln!("one probe (HTTP + SOCKS5) costs the port {per_probe} bytes");
    assert!(
        metered > 0 && per_probe <= 1024,
        "{metered} bytes for {after} probes"
    );
    let metrics = stack.admin.metrics().await.unwrap();
    assert!(
        metrics.contains("farmhand_probes_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("farmhand_probe_first_byte_seconds_bucket{protocol=\"socks5\""));
    assert!(metrics.contains("farmhand_probe_judging_paused{reason=\"echo_unreachable\"} 0"));
    // Another tenant's key (or none) learns nothing about it.
    let stranger = stack.market.with_key(Some("fh_not_a_key"));
    let refused = stranger
        .get(&format!("/v1/allocations/{id}/probes"))
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    let unknown = stack
        .market
        .get("/v1/allocations/al_nope/probes")
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
}

/// Replacement off: each broken path stays where it is, judged with its own reason, one
/// `allocation.degraded` each; healing one sends `allocation.recovered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_path_is_caught_with_its_reason_and_reported_once() {
    fn config(c: &mut farmhand_control::ServerConfig) {
        probing(c);
        c.replacement_grace_s = 0;
    }
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let stack = stack(4, config).await;
    let inbox = subscribe(&stack, &stop).await;
    let imeis = stack.sim.imeis();
    let mut ids = Vec::new();
    for (i, imei) in imeis.iter().enumerate() {
        let a = allocate(&stack, &format!("probe-broken-{i}"), imei).await;
        ids.push(a["allocation_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        health(&stack, id, "ok").await;
    }
    let sim = &stack.sim;
    sim.set_proxy_fault(&imeis[0], PathFault::Blackhole)
        .unwrap();
    sim.set_proxy_fault(&imeis[1], PathFault::Dead).unwrap();
    sim.set_first_byte_delay(&imeis[2], Duration::from_millis(1400))
        .unwrap();
    sim.set_egress_ip(&imeis[3], Some("127.0.9.9")).unwrap();
    let expected = ["timeout", "proxy_error", "slow", "ip_mismatch"];
    for (id, reason) in ids.iter().zip(expected) {
        let view = health(&stack, id, "degraded").await;
        assert_eq!(view["reason"], reason, "{view}");
        assert!(view["summary"]["ok"].as_u64().unwrap() >= 1, "{view}");
        // Within the configured number of probes: the failures that degraded it are the
        // newest results, and no success came between them.
        let failed: Vec<_> = view["results"].as_array().unwrap()[..2].to_vec();
        assert!(failed.iter().all(|r| r["ok"] == false), "{view}");
        let event = within(PATIENCE, "allocation.degraded", || async {
            events_for(&inbox, "allocation.degraded", id).pop()
        })
        .await
        .unwrap();
        assert_eq!(event["object"]["reason"], reason, "{event}");
    }
    let mismatch = probes(&stack, &ids[3]).await;
    assert_eq!(
        mismatch["results"][0]["egress_ip"], "127.0.9.9",
        "{mismatch}"
    );
    assert_eq!(mismatch["results"][0]["modem_ip"], "127.0.7.4");

    // More failures do not repeat the event.
    within(PATIENCE, "more failed probes", || async {
        let view = probes(&stack, &ids[0]).await;
        (view["failures_in_a_row"].as_u64()? >= 5).then_some(())
    })
    .await
    .unwrap();
    for id in &ids {
        assert_eq!(events_for(&inbox, "allocation.degraded", id).len(), 1);
    }
    // Healed, it recovers: once.
    sim.set_proxy_fault(&imeis[1], PathFault::Ok).unwrap();
    health(&stack, &ids[1], "ok").await;
    within(PATIENCE, "allocation.recovered", || async {
        events_for(&inbox, "allocation.recovered", &ids[1]).pop()
    })
    .await
    .unwrap();
    assert!(events_for(&inbox, "allocation.recovered", &ids[0]).is_empty());
    let audit = stack.admin.get("/v1/audit?limit=1000").await.unwrap().body;
    let audited = |action: &str| {
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    };
    assert_eq!(audited("allocation_degraded"), 4, "{audit}");
    assert_eq!(audited("allocation_recovered"), 1, "{audit}");
}

/// Replacement on: a port whose traffic leaves from the wrong IP moves to another modem,
/// the buyer's same credentials work there, and the allocation recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_leaving_from_the_wrong_ip_moves_and_the_buyers_credentials_work_there() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let stack = stack(2, probing).await;
    let inbox = subscribe(&stack, &stop).await;
    let imeis = stack.sim.imeis();
    let sold = allocate(&stack, "probe-move", &imeis[0]).await;
    let id = sold["allocation_id"].as_str().unwrap().to_string();
    health(&stack, &id, "ok").await;

    stack
        .sim
        .set_egress_ip(&imeis[0], Some("127.0.9.9"))
        .unwrap();
    let moved = within(PATIENCE, "the allocation to move", || async {
        let a = stack
            .market
            .get(&format!("/v1/allocations/{id}"))
            .await
            .ok()?
            .body;
        (a["replacements"].as_array()?.len() == 1).then_some(a)
    })
    .await
    .unwrap();
    assert_eq!(moved["imei"], imeis[1].as_str(), "{moved}");
    assert_eq!(
        moved["replacements"][0]["reason"], "probe_failed",
        "{moved}"
    );
    assert_eq!(moved["login"], sold["login"]);
    assert_eq!(moved["password"], sold["password"]);
    let origin = Origin::start("probed and moved").await.unwrap();
    let (http, socks) = proxy_urls(&moved).unwrap();
    for proxy in [http, socks] {
        let out = curl_via(&proxy, &origin.url()).await.unwrap();
        assert!(out.returned("probed and moved"), "{proxy}: {out:?}");
    }
    let view = health(&stack, &id, "ok").await;
    assert_eq!(view["results"][0]["egress_ip"], "127.0.7.2", "{view}");
    let degraded = events_for(&inbox, "allocation.degraded", &id);
    assert_eq!(degraded.len(), 1);
    assert_eq!(degraded[0]["object"]["reason"], "ip_mismatch");
    within(PATIENCE, "allocation.recovered", || async {
        events_for(&inbox, "allocation.recovered", &id).pop()
    })
    .await
    .unwrap();
}

/// The plane's own path to its probe target broken: no port is blamed, judging pauses
/// and says why, and resumes when the target answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_probe_target_pauses_judging_instead_of_blaming_sellers() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    PAUSE_TARGET_PORT.store(port, Ordering::SeqCst);
    fn config(c: &mut farmhand_control::ServerConfig) {
        probing(c);
        c.probe.listen = None;
        let port = PAUSE_TARGET_PORT.load(Ordering::SeqCst);
        c.probe.target = Some(format!("http://127.0.0.1:{port}/ip"));
    }
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    tokio::spawn(own_echo(echo, stop.clone(), &PAUSE_ARRIVALS, &PAUSE_BROKEN));
    let stack = stack(1, config).await;
    let inbox = subscribe(&stack, &stop).await;
    let imei = stack.sim.imeis()[0].clone();
    let id = allocate(&stack, "probe-own-target", &imei).await["allocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = health(&stack, &id, "ok").await;
    assert_eq!(before["results"][0]["egress_ip"], "127.0.7.1", "{before}");

    PAUSE_BROKEN.store(true, Ordering::SeqCst);
    let paused = within(PATIENCE, "judging to pause", || async {
        let p = probes(&stack, &id).await;
        (p["judging"] == "paused").then_some(p)
    })
    .await
    .unwrap();
    let metrics = stack.admin.metrics().await.unwrap();
    assert!(
        metrics.contains("farmhand_probe_judging_paused{reason=\"echo_unreachable\"} 1"),
        "{metrics}"
    );
    // Paused while the plane tries its own path three more times (once an interval):
    // nothing is judged, nobody is degraded.
    let results = paused["summary"]["probes"].as_u64().unwrap();
    let tries = || PAUSE_ARRIVALS.lock().unwrap().len();
    let seen = tries();
    within(
        PATIENCE,
        "three more tries of the plane's own path",
        || async { (tries() >= seen + 3).then_some(()) },
    )
    .await
    .unwrap();
    let later = probes(&stack, &id).await;
    assert_ne!(later["health"], "degraded", "{later}");
    assert_eq!(later["judging"], "paused", "{later}");
    assert!(
        later["summary"]["probes"].as_u64().unwrap() <= results + 1,
        "{later}"
    );
    assert!(inbox.of("allocation.degraded").is_empty());

    // Back: judging resumes on its own.
    PAUSE_BROKEN.store(false, Ordering::SeqCst);
    within(PATIENCE, "judging to resume", || async {
        let p = probes(&stack, &id).await;
        (p["judging"] == "active" && p["summary"]["probes"].as_u64()? > results + 1).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(probes(&stack, &id).await["health"], "ok");
}

/// A minimal echo on `listener` until `stop`: the caller's IP as JSON, noting when each
/// request arrived in `arrivals`; while `broken`, it closes without an answer.
async fn own_echo(
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
    arrivals: &'static Arrivals,
    broken: &'static AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, peer)) = accepted else {
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut chunk = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => head.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            arrivals.lock().unwrap().push(std::time::Instant::now());
            if broken.load(Ordering::SeqCst) {
                return;
            }
            let body = format!("{{\"ip\": \"{}\"}}", peer.ip());
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}

type Arrivals = std::sync::Mutex<Vec<std::time::Instant>>;

/// Arrival times at the fleet test's own echo, and its port.
static FLEET_ARRIVALS: Arrivals = Arrivals::new(Vec::new());
static FLEET_TARGET_PORT: AtomicU16 = AtomicU16::new(0);

/// A healthy fleet of 200 allocations probed for a while: nobody is degraded, and the
/// probes' rate at the echo never exceeds the cap (two fetches per probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_fleet_of_200_is_never_degraded_and_probes_stay_under_the_cap() {
    const CAP: u32 = 10;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    FLEET_TARGET_PORT.store(echo.local_addr().unwrap().port(), Ordering::SeqCst);
    fn config(c: &mut farmhand_control::ServerConfig) {
        c.probe.enabled = true;
        c.probe.interval_s = 2;
        c.probe.timeout_s = 2;
        c.probe.max_per_second = CAP;
        c.modem_capacity = 10;
        let port = FLEET_TARGET_PORT.load(Ordering::SeqCst);
        c.probe.target = Some(format!("http://127.0.0.1:{port}/"));
    }
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    tokio::spawn(own_echo(echo, stop.clone(), &FLEET_ARRIVALS, &NEVER_BROKEN));
    let stack = stack(20, config).await;
    let inbox = subscribe(&stack, &stop).await;
    let mut ids = Vec::new();
    for batch in 0..25 {
        let orders = (0..8).map(|i| {
            let body = json!({"order_id": format!("fleet-{batch}-{i}"), "duration_s": 86_400});
            let market = stack.market.clone();
            async move { market.post("/v1/allocations", body).await.unwrap() }
        });
        for reply in futures_util::future::join_all(orders).await {
            assert_eq!(reply.status, 201, "{:?}", reply.body);
            ids.push(reply.str("/allocation_id").unwrap().to_string());
        }
    }
    assert_eq!(ids.len(), 200);
    // Every allocation probed at least twice (the cap makes that ~40 s of probing).
    let started = std::time::Instant::now();
    within(
        Duration::from_secs(120),
        "every allocation probed twice",
        || async {
            for id in &ids {
                if probes(&stack, id).await["summary"]["probes"].as_u64()? < 2 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
    for id in &ids {
        let view = probes(&stack, id).await;
        assert_ne!(view["health"], "degraded", "{view}");
    }
    assert!(inbox.of("allocation.degraded").is_empty());
    let arrivals = FLEET_ARRIVALS.lock().unwrap().clone();
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    assert!(first >= started - Duration::from_secs(60) && arrivals.len() >= 800);
    // In any one second, at most CAP probes' two fetches, plus the plane's own checks
    // and the fetches of probes started just before the window.
    let busiest = arrivals
        .iter()
        .map(|t| {
            let end = *t + Duration::from_secs(1);
            arrivals.iter().filter(|a| **a >= *t && **a < end).count()
        })
        .max()
        .unwrap();
    let mean = arrivals.len() as f64 / (last - first).as_secs_f64();
    eprintln!(
        "{} echo requests, {mean:.1}/s on average, {busiest} in the busiest second",
        arrivals.len()
    );
    assert!(busiest <= 2 * CAP as usize + 4, "{busiest} in one second");
    assert!(mean <= 2.0 * f64::from(CAP) + 1.0, "{mean}/s");
}

/// A SIM swapped under a sold modem: `modem.identity_changed` once, the modem view shows
/// it, and the allocation is probed at once (its interval here is an hour). A re-plug is
/// told too, and probes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_swap_under_a_sold_modem_is_told_once_and_probed_at_once() {
    fn hourly(c: &mut farmhand_control::ServerConfig) {
        probing(c);
        c.probe.interval_s = 3600;
    }
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let stack = stack(1, hourly).await;
    let inbox = subscribe_to(&stack, &stop, &["modem.identity_changed"]).await;
    let imei = stack.sim.imeis()[0].clone();
    let id = allocate(&stack, "probe-sim-swap", &imei).await["allocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(probes(&stack, &id).await["summary"]["probes"], 0);

    stack.sim.set_iccid(&imei, "8949020000000009999").unwrap();
    let swapped = within(PATIENCE, "modem.identity_changed", || async {
        inbox.of("modem.identity_changed").first().map(|r| r.json())
    })
    .await
    .unwrap();
    assert_eq!(swapped["object"]["kind"], "sim_swapped", "{swapped}");
    assert_eq!(swapped["object"]["imei"], imei.as_str());
    assert_eq!(
        swapped["object"]["to"], "…9999",
        "ICCIDs by their last four digits"
    );
    let probed = within(PATIENCE, "a probe at once", || async {
        let p = probes(&stack, &id).await;
        (p["summary"]["probes"].as_u64()? >= 1).then_some(p)
    })
    .await
    .unwrap();
    assert_eq!(probed["results"][0]["ok"], true, "{probed}");

    stack.sim.set_usb_id(&imei, "1-1.9").unwrap();
    within(PATIENCE, "the re-plug told", || async {
        (inbox.of("modem.identity_changed").len() == 2).then_some(())
    })
    .await
    .unwrap();
    let kinds: Vec<String> = inbox
        .of("modem.identity_changed")
        .iter()
        .map(|r| r.json()["object"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["sim_swapped", "replugged"], "each told once");
    let modems = stack.admin.get("/v1/modems").await.unwrap().body;
    let changes = &modems["modems"][0]["identity_changes"];
    assert_eq!(changes.as_array().unwrap().len(), 2, "{modems}");
    assert_eq!(changes[1]["to"], "1-1.9");
}

/// Two sellers' agents, one with a slow path: its quality score drops below the other's,
/// the ranking says so (per agent and per seller label), and with `prefer = "quality"` a
/// new order goes to the better seller although it is the more loaded. The plane's own
/// rotations count as receipts (success, time to the new IP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_ranks_sellers_by_what_their_ports_deliver_and_orders_can_prefer_it() {
    let imeis: Vec<String> = (1..=2).map(farmhand_testkit::sim::imei).collect();
    let mut options = StackOptions {
        modems: 2,
        configure_plane: |c| {
            probing(c);
            c.replacement_grace_s = 0;
            c.modem_capacity = 5;
            c.prefer = farmhand_control::config::Prefer::Quality;
            c.rotation_cooldown_s = 0;
        },
        ..StackOptions::default()
    };
    options.quirks.odd_imeis = false;
    options.agent_policy.excluded_imeis = [imeis[1].clone()].into();
    let stack = Stack::start(options).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (slow_agent, mut second) = farmhand_testkit::harness::enroll_agent(
        &stack.admin,
        &stack.plane_url,
        &stack.sim.base_url(),
        dir.path(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    second.policy.excluded_imeis = [imeis[0].clone()].into();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    tokio::spawn(farmhand_agent::run(second, stop.child_token()));
    for (i, imei) in imeis.iter().enumerate() {
        stack
            .sim
            .set_ext_ip(imei, &format!("127.0.7.{}", i + 1))
            .unwrap();
    }
    stack.wait_until_available(2).await.unwrap();
    let good_agent = stack.agent_id.clone();

    // The good seller carries two orders, the slow one one.
    allocate(&stack, "quality-1", &imeis[0]).await;
    allocate(&stack, "quality-2", &imeis[0]).await;
    allocate(&stack, "quality-3", &imeis[1]).await;
    stack
        .sim
        .set_first_byte_delay(&imeis[1], Duration::from_millis(1400))
        .unwrap();
    let ranking = within(PATIENCE, "the slow seller ranked last", || async {
        let r = stack.market.get("/v1/quality?window=1h").await.ok()?.body;
        let agents = r["agents"].as_array()?;
        let scores: Vec<u64> = agents.iter().filter_map(|a| a["score"].as_u64()).collect();
        (agents.len() == 2
            && scores.len() == 2
            && agents[0]["agent_id"] == good_agent.as_str()
            && scores[0] == 100
            && scores[1] < 100
            && agents[1]["probes"].as_u64()? >= 2)
            .then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(ranking["window"], "1h");
    assert_eq!(ranking["sort"], "score");
    assert_eq!(ranking["agents"][1]["agent_id"], slow_agent.as_str());
    let labels = ranking["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 2, "{ranking}");
    assert_eq!(labels[0]["label"], "harness-seller", "{ranking}");
    let by_latency = stack
        .market
        .get("/v1/quality?sort=latency&window=7d")
        .await
        .unwrap();
    assert_eq!(
        by_latency.body["agents"][0]["agent_id"],
        good_agent.as_str()
    );
    let bad = stack.market.get("/v1/quality?sort=price").await.unwrap();
    assert_eq!(bad.status, 422, "{:?}", bad.body);

    // The better seller gets the order, although least-loaded would pick the other.
    let placed = stack
        .market
        .post(
            "/v1/allocations",
            json!({"order_id": "quality-4", "duration_s": 3600}),
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    assert_eq!(placed.body["agent_id"], good_agent.as_str());

    // A rotation the plane asked for is a timed receipt.
    let rotated = stack
        .market
        .post(&format!("/v1/modems/{}/rotate", imeis[0]), json!({}))
        .await
        .unwrap();
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let good = within(PATIENCE, "the rotation counted", || async {
        let q = stack
            .market
            .get(&format!("/v1/agents/{good_agent}/quality"))
            .await
            .ok()?
            .body;
        (q["1h"]["rotations"] == 1).then_some(q)
    })
    .await
    .unwrap();
    assert_eq!(good["label"], "harness-seller");
    assert_eq!(good["1h"]["rotation_success_pct"], 100.0, "{good}");
    assert!(
        good["1h"]["time_to_new_ip_ms"].as_u64().unwrap() > 0,
        "{good}"
    );
    assert!(good["24h"]["probes"].as_u64().unwrap() >= good["1h"]["probes"].as_u64().unwrap());
    let unknown = stack
        .market
        .get("/v1/agents/ag_nope/quality")
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
}

/// A seller whose policy says `probes = false`: its ports are neither probed nor judged,
/// and `/probes` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_who_refuses_probes_is_not_probed() {
    let mut options = StackOptions {
        modems: 1,
        configure_plane: probing,
        ..StackOptions::default()
    };
    options.agent_policy.refuse_probes = true;
    let stack = Stack::start(options).await.unwrap();
    stack.wait_until_available(1).await.unwrap();
    let imei = stack.sim.imeis()[0].clone();
    // A wrong egress IP that would fail every probe, were one run.
    stack.sim.set_egress_ip(&imei, Some("127.0.9.9")).unwrap();
    let id = allocate(&stack, "probe-refused", &imei).await["allocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let echoed = || async {
        let text = stack.admin.metrics().await.ok()?;
        metric(&text, "farmhand_probe_echo_requests_total")
    };
    let before = echoed().await.unwrap();
    // The plane checks its own path at every refresh (each interval): three of them are
    // more than the allocation's first probe would have waited.
    within(PATIENCE, "three refreshes", || async {
        (echoed().await? >= before + 3.0).then_some(())
    })
    .await
    .unwrap();
    let view = probes(&stack, &id).await;
    assert_eq!(view["judging"], "refused_by_seller", "{view}");
    assert_eq!(view["summary"]["probes"], 0, "{view}");
    assert_eq!(view["health"], "unknown");
}
