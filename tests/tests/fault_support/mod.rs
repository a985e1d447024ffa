//! Shared checks of the fault-injection tests: the invariant "an allocation is `active` with
//! exactly one working port on the box, or ended with no port", and small waits.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use farmhand_testkit::harness::{curl_via, proxy_urls, within, Api, Origin};
use farmhand_testkit::sim::{SimHandle, SimPort};
use serde_json::Value;
use std::time::Duration;

/// The box's ports named for `allocation_id`.
pub fn ports_of(sim: &SimHandle, allocation_id: &str) -> Vec<SimPort> {
    let name = format!("farmhand-{allocation_id}");
    sim.ports()
        .into_iter()
        .filter(|p| p.port_name == name)
        .collect()
}

/// `GET /v1/allocations/{id}`.
pub async fn allocation(api: &Api, id: &str) -> Value {
    let reply = api.get(&format!("/v1/allocations/{id}")).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

/// Every allocation of `state`.
pub async fn allocations_in(api: &Api, state: &str) -> Vec<Value> {
    let reply = api
        .get(&format!("/v1/allocations?state={state}"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["allocations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the allocation leaves `pending`/`releasing` and the box agrees with it:
/// `active` with exactly one applied port (returned), or `failed`/`released` with none.
pub async fn settles_consistently(
    api: &Api,
    sim: &SimHandle,
    id: &str,
    limit: Duration,
) -> anyhow::Result<(Value, Option<SimPort>)> {
    let settled = within(limit, "the allocation and the box to agree", || async {
        let alloc = allocation(api, id).await;
        let ports = ports_of(sim, id);
        match (alloc["state"].as_str()?, ports.len()) {
            ("active", 1) if ports[0].applied => Some((alloc, ports.into_iter().next())),
            ("failed" | "released", 0) => Some((alloc, None)),
            _ => None,
        }
    })
    .await;
    settled.map_err(|e| {
        let state = allocation_state_now(api, id);
        anyhow::Error::from(e)
            .context(format!("box ports {:?}", ports_of(sim, id)))
            .context(format!("allocation {id}: {state:?}"))
    })
}

fn allocation_state_now(api: &Api, id: &str) -> String {
    let (api, id) = (api.clone(), id.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async { allocation(&api, &id).await.to_string() })
    })
    .join()
    .unwrap_or_default()
}

/// curl through the allocation's HTTP proxy returns the origin's body.
pub async fn proxy_works(alloc: &Value, origin: &Origin) -> bool {
    let (http, _) = proxy_urls(alloc).unwrap();
    curl_via(&http, &origin.url())
        .await
        .map(|o| o.returned(origin.body()))
        .unwrap_or(false)
}

/// The agent as `GET /v1/agents` shows it.
pub async fn agent_view(admin: &Api, agent_id: &str) -> Option<Value> {
    let reply = admin.get("/v1/agents").await.ok()?;
    reply.body["agents"]
        .as_array()?
        .iter()
        .find(|a| a["agent_id"] == agent_id)
        .cloned()
}

/// Waits until the agent's `connected` is `connected`.
pub async fn agent_connected(admin: &Api, agent_id: &str, connected: bool, limit: Duration) {
    within(limit, "the agent's connected flag", || async {
        let agent = agent_view(admin, agent_id).await?;
        (agent["connected"] == connected).then_some(())
    })
    .await
    .unwrap();
}
