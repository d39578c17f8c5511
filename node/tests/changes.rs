//! The changes feed pages exactly: whatever the page size, a reader that
//! passes each page's `last_seq` as the next `since` gets every changed
//! record once, at its current revision, in increasing sequence order —
//! after bulk writes, deletes and merges from a peer device.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};

use hearth_crdt::collection::PutMode;
use hearth_crdt::node::{self, Input, Output, SessionId};
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use hearth_node::config::EngineConfig;
use hearth_node::engine::{Engine, Handle};
use hearth_node::home::Home;
use hearth_node::store::Unlock;
use proptest::prelude::*;
use serde_json::json;
use tokio::sync::mpsc;

const C: &str = "io.cozy.notes";
const IDS: u8 = 10;

#[derive(Debug, Clone)]
enum Op {
    /// One bulk upsert of these ids.
    PutMany(Vec<u8>),
    /// One `_bulk_docs` deleting these ids (those that exist).
    BulkDelete(Vec<u8>),
    /// One delete.
    Delete(u8),
    /// The peer device writes these ids and syncs with the engine.
    Merge(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let ids = prop::collection::vec(0..IDS, 1..6);
    prop_oneof![
        3 => ids.clone().prop_map(Op::PutMany),
        1 => ids.clone().prop_map(Op::BulkDelete),
        1 => (0..IDS).prop_map(Op::Delete),
        2 => ids.prop_map(Op::Merge),
    ]
}

fn id(n: u8) -> String {
    format!("r{n}")
}

/// A peer device of the engine's account, as a bare core on a session.
struct Peer {
    core: node::Node,
    session: SessionId,
    outbox: mpsc::Receiver<Vec<u8>>,
    writes: u64,
}

impl Peer {
    async fn connect(handle: &Handle, engine_id: hearth_crypto::identity::DeviceId) -> Peer {
        let key = DeviceKey::from_bytes(&[42; 32]);
        let log = Log::decode(&handle.add_device(key.id(), "peer".into()).await.unwrap()).unwrap();
        let mut core = node::Node::new(key, "peer", log, node::Config::default());
        let (tx, outbox) = mpsc::channel(4096);
        let session = handle.open_session(core.id(), tx).await.unwrap();
        let opened = core.handle(
            0,
            &mut rand::rngs::OsRng,
            Input::Opened {
                session: SessionId(0),
                peer: engine_id,
                states: vec![],
            },
        );
        let mut peer = Peer {
            core,
            session,
            outbox,
            writes: 0,
        };
        peer.pump(handle, opened).await;
        peer
    }

    /// Delivers frames both ways until neither side has more.
    async fn pump(&mut self, handle: &Handle, mut out: node::Outputs) {
        loop {
            let mut sent = false;
            for output in std::mem::take(&mut out.items) {
                if let Output::Send { frame, .. } = output {
                    handle.session_frame(self.session, frame).await.unwrap();
                    sent = true;
                }
            }
            // A round trip: every frame handed over has been handled.
            handle.status().await.unwrap();
            let mut received = false;
            while let Ok(frame) = self.outbox.try_recv() {
                received = true;
                out.extend(self.core.handle(
                    1,
                    &mut rand::rngs::OsRng,
                    Input::Frame {
                        session: SessionId(0),
                        frame,
                    },
                ));
            }
            if !sent && !received {
                return;
            }
        }
    }

    async fn write(&mut self, handle: &Handle, ids: &[u8]) {
        // Catch up first, so these writes follow the engine's: a concurrent
        // write that loses to the engine's changes no record, and this test
        // is about paging, not conflicts.
        self.pump(handle, node::Outputs::default()).await;
        let mut out = node::Outputs::default();
        for &n in ids {
            self.writes += 1;
            let (_, more) = self
                .core
                .put(
                    2,
                    &mut rand::rngs::OsRng,
                    C,
                    Some(id(n)),
                    json!({ "by": "peer", "w": self.writes }),
                    PutMode::Upsert,
                )
                .unwrap();
            out.extend(more);
        }
        self.pump(handle, out).await;
    }
}

async fn apply(handle: &Handle, peer: &mut Peer, op: &Op, changed: &mut BTreeSet<String>) {
    match op {
        Op::PutMany(ids) => {
            let records = ids
                .iter()
                .map(|&n| json!({ "_id": id(n), "n": n }))
                .collect();
            handle.put_many(C, records).await.unwrap();
            changed.extend(ids.iter().map(|&n| id(n)));
        }
        Op::BulkDelete(ids) => {
            let mut docs = Vec::new();
            for &n in ids {
                if let Ok(record) = handle.get(C, &id(n)).await {
                    docs.push(json!({ "_id": id(n), "_rev": record["_rev"], "_deleted": true }));
                }
            }
            for w in handle.bulk(C, docs).await.unwrap().into_iter().flatten() {
                changed.insert(w.id);
            }
        }
        Op::Delete(n) => {
            if handle.delete(C, &id(*n), None).await.is_ok() {
                changed.insert(id(*n));
            }
        }
        Op::Merge(ids) => {
            peer.write(handle, ids).await;
            changed.extend(ids.iter().map(|&n| id(n)));
        }
    }
}

/// Pages from `since` with `limit`; returns what was delivered and the
/// `since` to resume from.
async fn page_all(
    handle: &Handle,
    mut since: u64,
    limit: usize,
) -> (Vec<(u64, String, String, bool)>, u64) {
    let mut delivered: Vec<(u64, String, String, bool)> = Vec::new();
    loop {
        let page = handle.changes(C, since, limit, false).await.unwrap();
        assert!(page.results.len() <= limit);
        for c in &page.results {
            if let Some((last, ..)) = delivered.last() {
                assert!(c.seq > *last, "seq {} after {}", c.seq, last);
            }
            assert!(c.seq > since);
            delivered.push((c.seq, c.id.clone(), c.rev.clone(), c.deleted));
        }
        since = page.last_seq;
        if page.pending == 0 {
            return (delivered, since);
        }
        assert!(
            !page.results.is_empty(),
            "a page with pending changes was empty"
        );
    }
}

async fn check_exactly_once(
    handle: &Handle,
    delivered: &[(u64, String, String, bool)],
    changed: &BTreeSet<String>,
) {
    let mut seen = BTreeMap::new();
    for (_, id, rev, deleted) in delivered {
        assert!(
            seen.insert(id.clone(), (rev.clone(), *deleted)).is_none(),
            "{id} delivered twice"
        );
    }
    let ids: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(&ids, changed, "delivered ids differ from changed ids");
    for (id, (rev, deleted)) in seen {
        match handle.get(C, &id).await {
            Ok(record) => {
                assert!(!deleted, "{id} delivered as deleted but exists");
                assert_eq!(record["_rev"], rev.as_str(), "{id} delivered at an old rev");
            }
            Err(_) => assert!(deleted, "{id} missing but delivered as live"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn paging_with_any_limit_delivers_every_change_exactly_once(
        before in prop::collection::vec(op(), 1..8),
        after in prop::collection::vec(op(), 0..5),
        limit in 1usize..7,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let home = Home::resolve(Some(dir.path())).unwrap();
            home.ensure_dirs().unwrap();
            let engine = Engine::init(&home, Unlock::KeyFile, Default::default(), "t", EngineConfig::default()).unwrap();
            let engine_id = engine.device_key().id();
            let running = engine.spawn().unwrap();
            let handle = running.handle.clone();
            let mut peer = Peer::connect(&handle, engine_id).await;

            let mut changed = BTreeSet::new();
            for op in &before {
                apply(&handle, &mut peer, op, &mut changed).await;
            }
            let (delivered, since) = page_all(&handle, 0, limit).await;
            check_exactly_once(&handle, &delivered, &changed).await;

            // More changes, read on from where the last page ended.
            let mut later = BTreeSet::new();
            for op in &after {
                apply(&handle, &mut peer, op, &mut later).await;
            }
            let (delivered, _) = page_all(&handle, since, limit).await;
            check_exactly_once(&handle, &delivered, &later).await;
            drop(handle);
            drop(peer);
            tokio::task::spawn_blocking(move || running.stop()).await.unwrap();
        });
    }
}

/// A store written with the feed's first layout (`changes-1`: one row per
/// commit, every record of it under one number) is migrated on open: each
/// record gets its own number, so paging one at a time delivers all of them.
#[test]
fn a_store_with_the_old_feed_layout_is_renumbered_on_open() {
    use hearth_node::store::{Store, Table, keys};
    let dir = tempfile::tempdir().unwrap();
    let home = Home::resolve(Some(dir.path())).unwrap();
    home.ensure_dirs().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let running = Engine::init(
        &home,
        Unlock::KeyFile,
        Default::default(),
        "t",
        EngineConfig::default(),
    )
    .unwrap()
    .spawn()
    .unwrap();
    let written = rt
        .block_on(
            running
                .handle
                .put_many(C, (0..3).map(|n| json!({ "_id": id(n), "n": n })).collect()),
        )
        .unwrap();
    running.stop();

    // Rewrite the feed as the first layout stored it.
    let store = Store::open(&home, Unlock::KeyFile).unwrap();
    let mut txn = store.write().unwrap();
    txn.remove_prefix(Table::Changes, &keys::change_prefix(C).unwrap())
        .unwrap();
    let entries: Vec<(String, String, bool)> = written
        .iter()
        .map(|(id, rev)| (id.clone(), rev.clone(), false))
        .collect();
    txn.insert(
        Table::ChangesV1,
        &keys::change_key(C, 1).unwrap(),
        &serde_json::to_vec(&entries).unwrap(),
    )
    .unwrap();
    txn.commit().unwrap();
    drop(store);

    let running = Engine::open(&home, Unlock::KeyFile, EngineConfig::default())
        .unwrap()
        .spawn()
        .unwrap();
    let (delivered, last) = rt.block_on(page_all(&running.handle, 0, 1));
    let seqs: Vec<u64> = delivered.iter().map(|d| d.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(last, 3);
    let ids: BTreeSet<String> = delivered.iter().map(|d| d.1.clone()).collect();
    assert_eq!(ids, (0..3).map(id).collect());
    // A write after the migration numbers on from there.
    rt.block_on(
        running
            .handle
            .put(C, Some(id(7)), json!({}), PutMode::Upsert),
    )
    .unwrap();
    let (delivered, _) = rt.block_on(page_all(&running.handle, 3, 5));
    assert_eq!(delivered.iter().map(|d| d.0).collect::<Vec<_>>(), [4]);
    running.stop();
    // Idempotent: opening again leaves the feed as it is.
    let running = Engine::open(&home, Unlock::KeyFile, EngineConfig::default())
        .unwrap()
        .spawn()
        .unwrap();
    let (delivered, _) = rt.block_on(page_all(&running.handle, 0, 10));
    assert_eq!(delivered.len(), 4);
    running.stop();
}
