//! The engine over a real store: what a stop leaves on disk.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use hearth_node::config::EngineConfig;
use hearth_node::engine::Engine;
use hearth_node::home::Home;
use hearth_node::store::{Store, Table, Unlock, keys};
use serde_json::json;

fn chunks_per_shard(home: &Home, collection: &str, shards: u16) -> Vec<usize> {
    let store = Store::open(home, Unlock::KeyFile).unwrap();
    let txn = store.read().unwrap();
    (0..shards)
        .map(|s| {
            txn.scan_prefix(Table::Chunks, &keys::shard_prefix(collection, s).unwrap())
                .unwrap()
                .len()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_compacts_shards_with_many_changes_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::resolve(Some(dir.path())).unwrap();
    home.ensure_dirs().unwrap();
    Engine::init(
        &home,
        Unlock::KeyFile,
        Default::default(),
        "t",
        EngineConfig::default(),
    )
    .unwrap();
    let config = EngineConfig {
        shards: 4,
        // Never compact while writing; only the stop may.
        compact_after_chunks: 1_000,
        compact_min_bytes: 1 << 40,
        ..EngineConfig::default()
    };
    let running = Engine::open(&home, Unlock::KeyFile, config.clone())
        .unwrap()
        .spawn()
        .unwrap();
    for batch in 0..5 {
        let records = (0..200)
            .map(|i| json!({ "_id": format!("r{batch}-{i}"), "n": i }))
            .collect();
        running.handle.put_many("c", records).await.unwrap();
    }
    running.stop();
    assert_eq!(chunks_per_shard(&home, "c", 4), vec![5, 5, 5, 5]);

    // Now let the stop compact: every shard gathered far more than 1 KiB.
    let config = EngineConfig {
        compact_min_bytes: 1024,
        ..config
    };
    let size = |home: &Home| std::fs::metadata(home.store_path()).unwrap().len();
    let before = size(&home);
    let running = Engine::open(&home, Unlock::KeyFile, config.clone())
        .unwrap()
        .spawn()
        .unwrap();
    running.stop();
    assert_eq!(chunks_per_shard(&home, "c", 4), vec![1, 1, 1, 1]);
    assert!(
        size(&home) < before,
        "the freed pages go back: {} then {}",
        before,
        size(&home)
    );

    let running = Engine::open(&home, Unlock::KeyFile, config)
        .unwrap()
        .spawn()
        .unwrap();
    let (records, total) = running.handle.list("c", 0, usize::MAX).await.unwrap();
    assert_eq!(total, 1000);
    assert_eq!(records[0]["_id"], "r0-0");
    running.stop();
}
