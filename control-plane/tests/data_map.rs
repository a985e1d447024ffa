//! The privacy data map cannot drift: after a plane has enrolled an agent, sold, released
//! and purged, every table of its store and every file of its data directory is listed in
//! `docs/privacy.md`, and every table the map lists exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_test_support::data_map;
use std::collections::BTreeSet;
use std::sync::Arc;
use support::flows::{allocate, release};
use support::TestPlane;

const IMEI: &str = "350000000000018";

#[tokio::test]
async fn every_table_and_file_of_the_plane_is_in_the_data_map() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-map").await;
    release(&plane, &mut agent, a["allocation_id"].as_str().unwrap()).await;

    let map = data_map("Control plane");
    assert!(map.len() > 15, "the map was not read: {map:?}");
    let tables: BTreeSet<String> = plane
        .store()
        .table_names()
        .await
        .unwrap()
        .into_iter()
        .map(|t| format!("tree {t}"))
        .collect();
    let mapped_tables: BTreeSet<String> = map
        .iter()
        .filter(|m| m.starts_with("tree "))
        .cloned()
        .collect();
    assert_eq!(
        tables, mapped_tables,
        "docs/privacy.md and the store's tables disagree"
    );
    let files: Vec<String> = std::fs::read_dir(plane.dir.path())
        .unwrap()
        .map(|e| format!("file {}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    let unmapped: Vec<&String> = files.iter().filter(|f| !map.contains(*f)).collect();
    assert!(
        unmapped.is_empty(),
        "files the data map does not list: {unmapped:?}"
    );
}
