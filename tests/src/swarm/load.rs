//! Drives allocations through the REST API, flat out (a fixed number of workers) or at an
//! offered rate, releasing each one right after its 201, and measures both calls.

use super::stats::Summary;
use crate::harness::Api;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What to drive.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Allocations to make (each released afterwards).
    pub allocations: usize,
    /// Offered allocations per second; `None` = flat out.
    pub rate: Option<f64>,
    /// Allocations in flight at most.
    pub concurrency: usize,
    /// Prefix of the order ids (unique per run).
    pub order_prefix: String,
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Allocations that got 201 and then released with 200.
    pub succeeded: usize,
    /// Failures by kind (`allocate 409 no_capacity`, `release 202`, `allocate transport`…).
    pub failures: BTreeMap<String, usize>,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
    /// Allocate+release cycles completed per second.
    pub throughput_per_s: f64,
    /// The rate asked for, if any.
    pub offered_per_s: Option<f64>,
    /// `POST /v1/allocations` → 201.
    pub allocate: Summary,
    /// `DELETE /v1/allocations/{id}` → 200.
    pub release: Summary,
}

#[derive(Default)]
struct Samples {
    allocate: Vec<Duration>,
    release: Vec<Duration>,
    failures: BTreeMap<String, usize>,
    succeeded: usize,
}

/// Runs `plan` with the marketplace clients `markets` (one per node of a cluster: the
/// requests go round-robin).
pub async fn drive(markets: &[Api], plan: &LoadPlan) -> LoadReport {
    let samples = Arc::new(Mutex::new(Samples::default()));
    let started = Instant::now();
    match plan.rate {
        Some(rate) => offered(markets, plan, rate, &samples).await,
        None => flat_out(markets, plan, &samples).await,
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    LoadReport {
        succeeded: s.succeeded,
        failures: s.failures,
        elapsed_s: elapsed,
        throughput_per_s: s.succeeded as f64 / elapsed.max(1e-9),
        offered_per_s: plan.rate,
        allocate: Summary::of(s.allocate),
        release: Summary::of(s.release),
    }
}

async fn flat_out(markets: &[Api], plan: &LoadPlan, samples: &Arc<Mutex<Samples>>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for (_, market) in (0..plan.concurrency.max(1)).zip(markets.iter().cycle()) {
        let (market, next, samples, plan) =
            (market.clone(), next.clone(), samples.clone(), plan.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= plan.allocations {
                    return;
                }
                cycle(&market, &format!("{}-{i}", plan.order_prefix), &samples).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Open loop: one start every 1/rate s; when `concurrency` are in flight the next waits
/// (and the achieved rate drops, visible as a longer `elapsed_s`).
async fn offered(markets: &[Api], plan: &LoadPlan, rate: f64, samples: &Arc<Mutex<Samples>>) {
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut running = JoinSet::new();
    for (i, market) in (0..plan.allocations).zip(markets.iter().cycle()) {
        tick.tick().await;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (market, samples) = (market.clone(), samples.clone());
        let order = format!("{}-{i}", plan.order_prefix);
        running.spawn(async move {
            cycle(&market, &order, &samples).await;
            drop(permit);
        });
    }
    while running.join_next().await.is_some() {}
}

/// One allocate → release cycle.
async fn cycle(market: &Api, order_id: &str, samples: &Mutex<Samples>) {
    let body = json!({"order_id": order_id, "duration_s": 3600, "country": "DE"});
    let t0 = Instant::now();
    let reply = market.post("/v1/allocations", body).await;
    let took = t0.elapsed();
    let id = match reply {
        Ok(r) if r.status == StatusCode::CREATED => match r.str("/allocation_id") {
            Some(id) => {
                record(samples, |s| s.allocate.push(took));
                id.to_owned()
            }
            None => return fail(samples, "allocate 201 without id".into()),
        },
        Ok(r) => {
            let code = r.error_code().unwrap_or("").to_owned();
            return fail(samples, format!("allocate {} {code}", r.status.as_u16()));
        }
        Err(_) => return fail(samples, "allocate transport".into()),
    };
    let t1 = Instant::now();
    match market.delete(&format!("/v1/allocations/{id}")).await {
        Ok(r) if r.status == StatusCode::OK => {
            let took = t1.elapsed();
            record(samples, |s| {
                s.release.push(took);
                s.succeeded += 1;
            });
        }
        Ok(r) => fail(samples, format!("release {}", r.status.as_u16())),
        Err(_) => fail(samples, "release transport".into()),
    }
}

fn fail(samples: &Mutex<Samples>, kind: String) {
    record(samples, |s| *s.failures.entry(kind).or_default() += 1);
}

fn record(samples: &Mutex<Samples>, f: impl FnOnce(&mut Samples)) {
    f(&mut samples.lock().unwrap_or_else(|p| p.into_inner()));
}
