//! Writes a seed corpus of real inputs for every target (`fuzz/seeds/<target>/`, committed),
//! so the fuzzer starts from valid frames, messages, logs, cards and lists
//! and mutates from there:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::path::Path;

use automerge::sync::{State, SyncDoc as _};
use automerge::transaction::Transactable as _;
use automerge::{AutoCommit, ROOT};
use hearth_crdt::node::contacts::Request;
use hearth_crdt::sync::{Frame, Limits};
use hearth_crypto::acl::{Acl, Level};
use hearth_crypto::card::Card;
use hearth_crypto::identity::DeviceKey;
use hearth_crypto::membership::Log;
use hearth_crypto::ticket::Invitation;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let key = DeviceKey::from_bytes(&[1; 32]);
    let other = DeviceKey::from_bytes(&[2; 32]);
    let mut log = Log::genesis(&key, "laptop", 0);
    log.add_device(&key, other.id(), "phone", 1).expect("add");
    write("membership", "log", &log.encode());
    for (n, entry) in log.entries().iter().enumerate() {
        write("membership", &format!("entry-{n}"), &entry.to_bytes());
    }

    // A shard with a few records, and the sync messages a fresh peer gets.
    let mut doc = AutoCommit::new();
    for n in 0..3 {
        let record = doc
            .put_object(ROOT, format!("r{n}"), automerge::ObjType::Map)
            .expect("map");
        doc.put(&record, "title", format!("note {n}")).expect("put");
        doc.put(&record, "n", n as i64).expect("put");
        doc.commit();
    }
    let mut state = State::new();
    let mut fresh = AutoCommit::new();
    let mut fresh_state = State::new();
    for round in 0..4 {
        if let Some(message) = doc.sync().generate_sync_message(&mut state) {
            let bytes = message.clone().encode();
            write("automerge_merge", &format!("message-{round}"), &bytes);
            let frame = Frame::Sync {
                collection: "io.cozy.notes".into(),
                shards: 1,
                shard: 0,
                message: bytes,
                signatures: Vec::new(),
            };
            write(
                "sync_frame",
                &format!("sync-{round}"),
                &frame.encode(&Limits::default()).expect("frame"),
            );
            fresh
                .sync()
                .receive_sync_message(&mut fresh_state, message)
                .expect("receive");
        }
        if let Some(reply) = fresh.sync().generate_sync_message(&mut fresh_state) {
            doc.sync()
                .receive_sync_message(&mut state, reply)
                .expect("reply");
        }
    }
    let log_frame = Frame::Log {
        bytes: log.encode(),
    };
    write(
        "sync_frame",
        "log",
        &log_frame.encode(&Limits::default()).expect("log frame"),
    );

    let card = Card::new(
        &key,
        "alice",
        log.clone(),
        vec![(key.id(), vec!["/ip4/10.0.0.1/tcp/4001".into()])],
    )
    .expect("card");
    write("tickets", "card-bytes", &card.to_bytes());
    write("tickets", "card-text", card.encode().as_bytes());
    let invitation = Invitation::new(
        log.account_id(),
        key.id(),
        vec!["/ip4/10.0.0.1/tcp/4001".into()],
        [9; 16],
        1,
    )
    .expect("invitation");
    write("tickets", "ticket", invitation.encode().as_bytes());
    write(
        "contact_request",
        "card",
        &Request::Card {
            card: card.to_bytes(),
        }
        .encode(),
    );

    let owner_log = Log::genesis(&key, "owner", 0);
    let mut acl = Acl::create(&key, &owner_log, "notes", 0).expect("acl");
    acl.grant(&key, &owner_log, log.account_id(), Level::Write, 1)
        .expect("grant");
    acl.revoke(&key, &owner_log, log.account_id(), 2)
        .expect("revoke");
    write("acl", "list", &acl.encode());

    write("query", "find", br#"{"selector":{"n":{"$gt":1},"tags":{"$elemMatch":{"$eq":"a"}}},"sort":[{"n":"desc"}],"fields":["_id","o.x"],"limit":2}"#);
    write("query", "aggregate", br#"{"selector":{"n":{"$gte":0}},"group_by":["o.x"],"aggregate":{"s":{"$sum":"n"},"c":{"$count":true},"a":{"$avg":"n"}}}"#);
}
