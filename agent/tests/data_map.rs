//! The privacy data map cannot drift: while a real agent runs (enrolled, connected, a port
//! provisioned on the simulator) and after it stops, every file of its state directory and
//! every table of its journal is listed in `docs/privacy.md`, and every journal table the
//! map lists exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::local::journal::Journal;
use farmhand_test_support::data_map;
use std::collections::BTreeSet;
use std::path::Path;
use support::plane::{running_with_a_port, Stage};

fn unmapped_files(dir: &Path, map: &BTreeSet<String>) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| format!("file {}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| !map.contains(f))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_and_table_of_the_agent_is_in_the_data_map() {
    let map = data_map("Agent");
    assert!(map.len() > 10, "the map was not read: {map:?}");
    let stage = Stage::start().await;
    let (agent, _session) = running_with_a_port(&stage).await;
    let dir = &stage.dir;
    let running = unmapped_files(dir.path(), &map);
    assert!(
        running.is_empty(),
        "files the data map does not list: {running:?}"
    );

    agent.stop().await;
    let stopped = unmapped_files(dir.path(), &map);
    assert!(
        stopped.is_empty(),
        "files the data map does not list: {stopped:?}"
    );
    let journal = Journal::open(dir.path()).unwrap();
    let tables: BTreeSet<String> = journal
        .table_names()
        .into_iter()
        .map(|t| format!("tree {t}"))
        .collect();
    assert!(tables.contains("tree ports"), "{tables:?}");
    let unmapped: Vec<&String> = tables.iter().filter(|t| !map.contains(*t)).collect();
    assert!(
        unmapped.is_empty(),
        "journal tables the map does not list: {unmapped:?}"
    );
    let missing: Vec<&String> = map
        .iter()
        .filter(|m| m.starts_with("tree ") && *m != "tree default" && !tables.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "the map lists tables the journal lacks: {missing:?}"
    );
}
