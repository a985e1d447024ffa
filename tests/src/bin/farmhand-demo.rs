//! `farmhand-demo [--once] [--modems N]`: the whole stack in one process — a ProxySmart
//! simulator, a control plane and an enrolled agent on 127.0.0.1 — proven by a real `curl`
//! through the buyer's proxy. With `--once` it releases the port and exits 0 (non-zero if any
//! step failed); without, it keeps the stack up for people and scripts until Ctrl-C.
//! Like every harness plane, the demo allows loopback webhook targets
//! (`harness::LOOPBACK_TARGETS`), so a receiver on this machine can be registered; a
//! plane's default refuses them.

use anyhow::{bail, Context};
use clap::Parser;
use farmhand_testkit::harness::{curl_via, proxy_urls, Origin, Stack, StackOptions};
use std::io::Write;
use std::time::Instant;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Parser)]
#[command(
    version = farmhand_agent::LONG_VERSION,
    about = "Run the Farmhand stack locally and prove it with curl"
)]
struct Cli {
    /// Exit after the proof instead of serving until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Number of simulated modems.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=250))]
    modems: u16,
}

/// The plane's abuse limits from `FARMHAND_REST_AUTH_FAILURE_LIMIT` and
/// `FARMHAND_ENROLL_ATTEMPT_LIMIT` (as `farmhand-control serve` reads them): an API fuzzer
/// (CI's Schemathesis run) sends hundreds of unauthenticated requests on purpose, which the
/// default limits rightly answer with 429.
fn abuse_limits_from_env(config: &mut farmhand_control::ServerConfig) {
    const KEYS: [&str; 2] = [
        "FARMHAND_REST_AUTH_FAILURE_LIMIT",
        "FARMHAND_ENROLL_ATTEMPT_LIMIT",
    ];
    let vars = std::env::vars_os().filter(|(k, _)| KEYS.iter().any(|key| k == key));
    match farmhand_control::config::env::load(None, vars) {
        Ok(env) => {
            config.rest_auth_failure_limit = env.rest_auth_failure_limit;
            config.enroll_attempt_limit = env.enroll_attempt_limit;
        }
        Err(e) => eprintln!("ignoring the abuse limits in the environment: {e}"),
    }
}

fn step(text: &str) {
    println!("==> {text}");
    let _ = std::io::stdout().flush();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    farmhand_ops::logging::text_subscriber(
        farmhand_ops::logging::filter(Some("warn")).map_err(anyhow::Error::msg)?,
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
    .init();
    let modems = usize::from(cli.modems);

    step(&format!("starting a ProxySmart simulator ({modems} modems), a control plane and an agent on 127.0.0.1"));
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        modems,
        configure_plane: abuse_limits_from_env,
        ..StackOptions::default()
    })
    .await
    .context("starting the stack")?;
    println!("    control plane  {}", stack.plane_url);
    println!("    ProxySmart     {}", stack.sim.base_url());
    println!(
        "    agent          {} (enrolled with a one-time token)",
        stack.agent_id
    );
    println!("    up in {} ms", started.elapsed().as_millis());

    step("inventory reported by the agent (GET /v1/modems)");
    stack.wait_until_available(modems).await?;
    let listed = stack.market.get("/v1/modems").await?;
    for m in listed.body["modems"].as_array().into_iter().flatten() {
        println!(
            "    {}  {:<10} {:<16} online={}",
            m["imei"].as_str().unwrap_or("?"),
            m["carrier"].as_str().unwrap_or("?"),
            m["ext_ip"].as_str().unwrap_or("-"),
            m["online"]
        );
    }

    step("allocating a port for order demo-1 (POST /v1/allocations)");
    let t = Instant::now();
    let alloc = stack.allocate("demo-1").await?;
    if alloc.status != 201 {
        bail!("allocation failed: {} {}", alloc.status, alloc.body);
    }
    println!(
        "    201 in {} ms: modem {} on {}:{} (HTTP) / {} (SOCKS5)",
        t.elapsed().as_millis(),
        alloc.body["imei"].as_str().unwrap_or("?"),
        alloc.body["host"].as_str().unwrap_or("?"),
        alloc.body["http_port"],
        alloc.body["socks_port"]
    );
    let (http, socks) = proxy_urls(&alloc.body)?;
    println!("    buyer's proxy: {http}");
    println!("    buyer's proxy: {socks}");

    let origin = Origin::start("Hello from the other side of a Farmhand proxy!").await?;
    for (kind, proxy) in [("HTTP", &http), ("SOCKS5", &socks)] {
        step(&format!(
            "curl through the {kind} proxy to {}",
            origin.url()
        ));
        let out = curl_via(proxy, &origin.url()).await?;
        if !out.returned(origin.body()) {
            bail!(
                "curl through the {kind} proxy failed (exit {:?}): {}",
                out.code,
                out.stderr.trim()
            );
        }
        println!("    {:?}", out.body);
    }

    step("releasing the port (DELETE /v1/allocations/{id})");
    let id = alloc.body["allocation_id"]
        .as_str()
        .context("allocation id")?;
    let released = stack
        .market
        .delete(&format!("/v1/allocations/{id}"))
        .await?;
    if released.status != 200 {
        bail!("release failed: {} {}", released.status, released.body);
    }
    let after = curl_via(&http, &origin.url()).await?;
    if after.code == Some(0) {
        bail!("the proxy still works after release");
    }
    println!(
        "    released; the proxy now refuses (curl exit {:?})",
        after.code
    );

    if cli.once {
        step("demo complete");
        return Ok(());
    }
    step(&format!(
        "the operator console: {}/console/ (sign in with the admin key below)",
        stack.plane_url
    ));
    println!("FARMHAND_URL={}", stack.plane_url);
    println!("FARMHAND_ADMIN_KEY={}", stack.admin_key);
    println!("FARMHAND_MARKETPLACE_KEY={}", stack.market_key);
    println!("PROXYSMART_URL={}", stack.sim.base_url());
    println!("READY");
    let _ = std::io::stdout().flush();
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(stack); // cancels the simulator, the control plane and the agent
    Ok(())
}
