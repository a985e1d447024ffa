//! `farmhand-swarm`: a load generator for the control plane. Enrolls N simulated agents with
//! M modems each (real keys, real protocol, one task per agent), reports how long they take
//! to connect and be listed, optionally holds them idle, drives allocations through the REST
//! API, churns connections (agents dropping and reconnecting continuously), and measures a
//! restart storm. See bench/README.md.

use anyhow::{Context, Result};
use clap::Parser;
use farmhand_testkit::harness::Api;
use farmhand_testkit::swarm::{
    churn, drive, enroll_all, wait_modems, Fleet, LoadPlan, Swarm, MAX_BACKOFF,
};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Parser)]
#[command(
    name = "farmhand-swarm",
    about = "Simulated agent fleet and REST load driver"
)]
struct Args {
    /// Control-plane base URL (plain HTTP); repeat it for every node of a cluster: agents
    /// are spread over them and allocations go round-robin.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Admin API key (enrollment tokens, modem listing).
    #[arg(long, env = "FARMHAND_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// Marketplace API key (allocations).
    #[arg(long, env = "FARMHAND_MARKETPLACE_KEY", hide_env_values = true)]
    marketplace_key: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Modems per agent.
    #[arg(long, default_value_t = 8)]
    modems: usize,
    /// Allocations to make (each released right after), 0 = none.
    #[arg(long, default_value_t = 0)]
    allocations: usize,
    /// Offered allocations per second (open loop).
    #[arg(long, conflicts_with = "flat_out")]
    rate: Option<f64>,
    /// As fast as `--concurrency` workers can go (the default).
    #[arg(long)]
    flat_out: bool,
    /// Allocations in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// After the `--allocations` phase, this many more offered at `--offered-rate` per
    /// second (open loop, at most `--offered-concurrency` in flight): the latency phase
    /// (prints `SWARM offered-start` / `SWARM offered-end`; `latency` in the JSON).
    #[arg(long, default_value_t = 0)]
    offered_allocations: usize,
    /// Offered rate of the latency phase, allocations per second.
    #[arg(long, default_value_t = 500.0)]
    offered_rate: f64,
    /// In flight at most during the latency phase.
    #[arg(long, default_value_t = 1024)]
    offered_concurrency: usize,
    /// Milliseconds each agent waits before answering a command.
    #[arg(long, default_value_t = 0)]
    answer_latency_ms: u64,
    /// Enrollments in flight at most.
    #[arg(long, default_value_t = 32)]
    enroll_concurrency: usize,
    /// After connecting, hold the fleet idle this many seconds (prints `SWARM idle-start`).
    #[arg(long, default_value_t = 0)]
    idle_s: u64,
    /// After the allocations, drop this many agent connections per second (round-robin,
    /// abruptly) for `--churn-s` seconds; each dropped agent reconnects at once (prints
    /// `SWARM churn-start` / `SWARM churn-end`).
    #[arg(long, default_value_t = 0.0)]
    churn_per_s: f64,
    /// How long to churn.
    #[arg(long, default_value_t = 20)]
    churn_s: u64,
    /// At the end, print `SWARM storm-ready`, wait for every session to drop (the plane
    /// restarting) and measure how long until all agents are back.
    #[arg(long)]
    storm: bool,
    /// At the end, print `SWARM failover-ready`, wait for sessions to drop (a node of the
    /// cluster killed) and measure how long until every agent is back, on the other nodes.
    #[arg(long, conflicts_with = "storm")]
    failover: bool,
    /// First two IMEI digits; distinct per run against one plane (default: from the clock).
    #[arg(long)]
    imei_prefix: Option<u8>,
    /// Give up on any wait after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    farmhand_agent::install_crypto_provider();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let admin = Api::new(&args.url[0], Some(&args.admin_key));
    let markets: Vec<Api> = args
        .url
        .iter()
        .map(|url| Api::new(url, Some(&args.marketplace_key)))
        .collect();
    let limit = Duration::from_secs(args.timeout_s);
    let mut out = json!({"agents": args.agents, "modems_per_agent": args.modems,
        "max_backoff_s": MAX_BACKOFF.as_secs_f64()});

    let t = Instant::now();
    let ids = enroll_all(&admin, args.agents, args.enroll_concurrency)
        .await
        .context("enrolling the swarm")?;
    say(&format!(
        "enrolled {} agents in {:.1} s",
        args.agents,
        secs(t)
    ));
    out["enroll_s"] = json!(secs(t));

    let prefix = args.imei_prefix.unwrap_or((10 + now.as_secs() % 90) as u8);
    let latency = Duration::from_millis(args.answer_latency_ms);
    let fleet = Arc::new(Fleet::new(&args.url, args.modems, prefix, latency));
    let swarm = Swarm::start(ids, fleet.clone());
    let online = swarm.wait_online(limit, |n| n == args.agents).await?;
    let listed = online
        + wait_modems(
            &admin,
            args.agents * args.modems,
            Duration::from_secs(1),
            limit,
        )
        .await?;
    say(&format!(
        "all {} agents online in {:.1} s, all {} modems listed in {:.1} s ({} connection errors)",
        args.agents,
        online.as_secs_f64(),
        args.agents * args.modems,
        listed.as_secs_f64(),
        fleet.errors()
    ));
    out["connect"] = json!({"online_s": online.as_secs_f64(), "listed_s": listed.as_secs_f64(),
        "connection_errors": fleet.errors(), "refusals": fleet.refusals()});

    if args.idle_s > 0 {
        say("SWARM idle-start");
        tokio::time::sleep(Duration::from_secs(args.idle_s)).await;
        say(&format!("SWARM idle-end ({} online)", fleet.online()));
    }
    if args.allocations > 0 {
        say("SWARM alloc-start");
        let plan = LoadPlan {
            allocations: args.allocations,
            rate: args.rate,
            concurrency: args.concurrency,
            order_prefix: format!("swarm-{}", now.as_millis()),
        };
        out["allocations"] = allocations("allocations", &markets, &plan).await?;
        say("SWARM alloc-end");
    }
    if args.offered_allocations > 0 {
        say("SWARM offered-start");
        let plan = LoadPlan {
            allocations: args.offered_allocations,
            rate: Some(args.offered_rate),
            concurrency: args.offered_concurrency,
            order_prefix: format!("swarm-{}-offered", now.as_millis()),
        };
        out["latency"] = allocations("latency", &markets, &plan).await?;
        say("SWARM offered-end");
    }
    if args.churn_per_s > 0.0 {
        say("SWARM churn-start");
        let window = Duration::from_secs(args.churn_s);
        let report = churn(&swarm, args.churn_per_s, window, limit).await?;
        say("SWARM churn-end");
        say(&format!(
            "churn: {} dropped in {:.1} s ({:.0}/s offered, {} skipped), all back; reconnect \
             p50/p90/p99/max {}/{}/{}/{} ms; fewest online {}; refusals {:?}",
            report.dropped,
            report.window_s,
            report.offered_per_s,
            report.skipped,
            report.reconnect.p50_ms,
            report.reconnect.p90_ms,
            report.reconnect.p99_ms,
            report.reconnect.max_ms,
            report.min_online,
            report.refusals
        ));
        out["churn"] = serde_json::to_value(&report)?;
    }
    if args.storm {
        out["storm"] = storm(&swarm, &admin, args.modems, limit).await?;
    }
    if args.failover {
        out["failover"] = failover(&swarm, &admin, args.modems, limit).await?;
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    swarm.shutdown().await;
    Ok(())
}

/// Runs `plan`, prints a line starting with `label:`, returns the report as JSON.
async fn allocations(label: &str, markets: &[Api], plan: &LoadPlan) -> Result<Value> {
    let report = drive(markets, plan).await;
    say(&format!(
        "{label}: {} ok, failures {:?}, {:.1} s, {:.0}/s; allocate p50/p90/p99/max \
         {}/{}/{}/{} ms; release {}/{}/{}/{} ms",
        report.succeeded,
        report.failures,
        report.elapsed_s,
        report.throughput_per_s,
        report.allocate.p50_ms,
        report.allocate.p90_ms,
        report.allocate.p99_ms,
        report.allocate.max_ms,
        report.release.p50_ms,
        report.release.p90_ms,
        report.release.p99_ms,
        report.release.max_ms
    ));
    let mut value = serde_json::to_value(&report)?;
    value["concurrency"] = json!(plan.concurrency);
    Ok(value)
}

/// Waits for the plane to drop every session, then times the reconnection.
async fn storm(swarm: &Swarm, admin: &Api, modems: usize, limit: Duration) -> Result<Value> {
    let agents = swarm.agents();
    say("SWARM storm-ready");
    swarm.wait_online(limit, |n| n == 0).await?;
    say("all sessions dropped; waiting for the plane to come back");
    let errors_before = swarm.fleet.errors();
    let refusals_before = swarm.fleet.refusals();
    let first = swarm.wait_online(limit, |n| n > 0).await?;
    let back = first + swarm.wait_online(limit, |n| n == agents).await?;
    let listed = back + wait_modems(admin, agents * modems, Duration::from_secs(1), limit).await?;
    let mut refusals = swarm.fleet.refusals();
    for (kind, n) in refusals_before {
        if let Some(count) = refusals.get_mut(&kind) {
            *count -= n;
        }
    }
    refusals.retain(|_, n| *n > 0);
    say(&format!(
        "storm: all {agents} agents back {:.1} s after the drop ({:.1} s after the first one \
         was), modems listed after {:.1} s; refusals {refusals:?}",
        back.as_secs_f64(),
        (back - first).as_secs_f64(),
        listed.as_secs_f64()
    ));
    Ok(json!({"reconnected_s": back.as_secs_f64(),
        "first_back_s": first.as_secs_f64(),
        "after_first_s": (back - first).as_secs_f64(),
        "listed_s": listed.as_secs_f64(),
        "connection_errors": swarm.fleet.errors() - errors_before,
        "refusals": refusals}))
}

/// Waits for some sessions to drop (a node killed), then times until every agent is back
/// (on the nodes left: each tries the next URL) and every modem is listed again by the
/// first URL's node.
async fn failover(swarm: &Swarm, admin: &Api, modems: usize, limit: Duration) -> Result<Value> {
    let agents = swarm.agents();
    say("SWARM failover-ready");
    swarm.wait_online(limit, |n| n < agents).await?;
    let errors_before = swarm.fleet.errors();
    let fewest = AtomicUsize::new(agents);
    let back = swarm
        .wait_online(limit, |n| {
            fewest.fetch_min(n, Ordering::Relaxed);
            n == agents
        })
        .await?;
    let listed = back + wait_modems(admin, agents * modems, Duration::from_secs(1), limit).await?;
    let fewest = fewest.into_inner();
    say(&format!(
        "failover: all {agents} agents back {:.1} s after the first session dropped \
         (at most {} were away), modems listed after {:.1} s",
        back.as_secs_f64(),
        agents - fewest,
        listed.as_secs_f64()
    ));
    Ok(json!({"reconnected_s": back.as_secs_f64(),
        "listed_s": listed.as_secs_f64(),
        "most_away": agents - fewest,
        "connection_errors": swarm.fleet.errors() - errors_before}))
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// Progress on stdout, flushed at once: bench/run watches for the `SWARM …` markers.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
