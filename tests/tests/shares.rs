//! Shares with real `hearth` processes on loopback: three accounts become
//! contacts, Alice shares `notes` with Bob (write) and Carol (read), both
//! accept under local names, everyone converges, Carol's write is refused,
//! Bob is revoked while all are connected and a marker Alice writes
//! afterwards reaches Carol but never Bob, and the shares survive a
//! restart. With Alice stopped, Bob's write reaches Carol directly. A member's phone, paired after accepting, holds the share and
//! writes to it; removed from its account, it gets nothing more, and
//! neither does the revoked account's remaining device.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use hearth_tests::device::Device;
use serde_json::Value;

/// Polls `get` until `check` holds, failing with `what` after 30 s.
fn wait<T: std::fmt::Debug>(what: &str, get: impl Fn() -> T, check: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = get();
        if check(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: last {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn contact_state(device: &Device, who: &str) -> Option<String> {
    let list = device.home.run(&["contacts", "--json"]).json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(who) || c["card_name"] == who)
        .map(|c| c["state"].as_str().unwrap().to_string())
}

/// Makes `a` and `b` established contacts: `b` adds `a`'s card, read
/// from the QR code `a` drew, under `a_name`; `a` accepts the request
/// under `b_name`.
fn befriend(a: &Device, a_name: &str, b: &Device, b_name: &str, b_card_name: &str) {
    let png = a.home.path().join("card.png");
    let png = png.to_str().unwrap();
    let card = a.home.run(&["contact", "card", "--qr", png]).first_line();
    assert!(card.starts_with("hearthc1"), "{card}");
    b.home
        .run(&["contact", "add", "--qr", png, "--name", a_name])
        .ok();
    wait(
        "the request",
        || contact_state(a, b_card_name),
        |s| s.is_some(),
    );
    a.home
        .run(&["contact", "accept", b_card_name, "--name", b_name])
        .ok();
    for (device, who) in [(a, b_name), (b, a_name)] {
        wait(
            "an established contact",
            || contact_state(device, who),
            |s| s.as_deref() == Some("established"),
        );
    }
}

fn shares(device: &Device) -> Vec<Value> {
    device
        .home
        .run(&["shares", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `device` (Bob's) knows its access to `shared.alice.notes`
/// revoked, then checks that the owner's `marker`, written after the
/// revocation, never arrived and that a write under `late` is refused.
fn assert_revoked(device: &Device, marker: &str, late: &str) {
    wait(
        "the revocation known to Bob",
        || shares(device),
        |s| s.first().is_some_and(|s| s["state"] == "revoked"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        device.get("shared.alice.notes", marker).is_none(),
        "a change written after the revocation reached the revoked contact"
    );
    let run = device.home.run(&[
        "put",
        "shared.alice.notes",
        r#"{"title":"late"}"#,
        "--id",
        late,
    ]);
    assert!(run.err().contains("read-only"), "{}", run.err());
}

/// Puts `body` under `id` in `collection` on `device`.
fn put(device: &Device, collection: &str, id: &str, body: &str) {
    device.home.run(&["put", collection, body, "--id", id]).ok();
}

#[test]
fn a_collection_shared_read_and_write_converges_refuses_the_reader_and_is_revoked() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let carol = Device::new("carol");
    let da = alice.up();
    let _db = bob.up();
    let _dc = carol.up();
    befriend(&alice, "Alice", &bob, "Bob", "bob");
    befriend(&alice, "Alice", &carol, "Carol", "carol");

    put(&alice, "notes", "n1", r#"{"title":"before sharing"}"#);
    // Sharing a collection that does not exist is a clear error.
    let run = alice.home.run(&["share", "nothing-here", "Bob", "--write"]);
    assert!(run.err().contains("nothing-here"), "{}", run.err());

    let id = alice
        .home
        .run(&["share", "notes", "Bob", "--write"])
        .first_line();
    assert_eq!(id.len(), 64, "the share's id: {id}");
    let again = alice
        .home
        .run(&["share", "notes", "Carol", "--read"])
        .first_line();
    assert_eq!(again, id, "one share per collection");

    // The offers arrive; nothing syncs before acceptance.
    for device in [&bob, &carol] {
        let offer = wait(
            "the offer",
            || shares(device),
            |s| s.iter().any(|s| s["id"] == id.as_str()),
        );
        assert_eq!(offer[0]["state"], "offered", "{offer:?}");
        assert!(offer[0]["local"].is_null());
    }
    assert!(bob.get("shared.alice.notes", "n1").is_none());

    let run = bob.home.run(&["shares", "accept", &id[..12]]);
    assert!(run.ok().contains("shared.alice.notes"), "{}", run.ok());
    carol
        .home
        .run(&["shares", "accept", &id, "--as", "alice-notes"])
        .ok();

    // Everyone converges, and the owner sees both active.
    bob.wait_for("shared.alice.notes", "n1", |r| r.is_some());
    carol.wait_for("alice-notes", "n1", |r| r.is_some());
    put(&bob, "shared.alice.notes", "b1", r#"{"title":"from bob"}"#);
    alice.wait_for("notes", "b1", |r| r.is_some());
    carol.wait_for("alice-notes", "b1", |r| r.is_some());
    let outgoing = wait(
        "both members active on the owner",
        || shares(&alice),
        |s| {
            s.first().is_some_and(|s| {
                s["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["state"] == "active")
            })
        },
    );
    assert_eq!(outgoing[0]["members"].as_array().unwrap().len(), 2);
    // The contact list shows the shares both ways.
    let listed = |device: &Device, who: &str| {
        let list = device.home.run(&["contacts", "--json"]).json();
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == who)
            .map(|c| c["shares"].clone())
            .unwrap()
    };
    let ours = listed(&alice, "Bob");
    assert_eq!(ours[0]["direction"], "outgoing", "{ours}");
    assert_eq!(ours[0]["level"], "write", "{ours}");
    let theirs = listed(&carol, "Alice");
    assert_eq!(theirs[0]["direction"], "incoming", "{theirs}");
    assert_eq!(theirs[0]["level"], "read", "{theirs}");
    assert_eq!(theirs[0]["state"], "active", "{theirs}");
    assert!(
        alice
            .home
            .run(&["contacts"])
            .ok()
            .contains("we share notes")
    );

    // The reader's write is refused with a clear message.
    let run = carol
        .home
        .run(&["put", "alice-notes", r#"{"title":"no"}"#, "--id", "c1"]);
    assert!(run.err().contains("read-only"), "{}", run.err());

    // With the owner away, the members sync with each other: Carol admits
    // and dials Bob's device from the card that came with the list.
    drop(da);
    put(
        &bob,
        "shared.alice.notes",
        "b-away",
        r#"{"title":"owner away"}"#,
    );
    carol.wait_for("alice-notes", "b-away", |r| r.is_some());
    let da = alice.up();
    alice.wait_for("notes", "b-away", |r| r.is_some());

    // Bob is revoked while everyone is connected.
    let run = alice.home.run(&["unshare", "notes", "Bob"]);
    assert!(run.ok().contains("Bob"), "{}", run.ok());
    put(&alice, "notes", "m1", r#"{"title":"after the revocation"}"#);
    carol.wait_for("alice-notes", "m1", |r| r.is_some());
    // His later write is refused where he is, and never reaches anyone.
    assert_revoked(&bob, "m1", "b2");
    std::thread::sleep(Duration::from_secs(1));
    assert!(alice.get("notes", "b2").is_none());

    // A restart keeps every share.
    drop(da);
    let _da = alice.up();
    let after = shares(&alice);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], id.as_str());
    let bob_member = after[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["contact"] == "Bob")
        .cloned()
        .unwrap();
    assert_eq!(bob_member["state"], "revoked");
    put(&alice, "notes", "m2", r#"{"title":"after the restart"}"#);
    carol.wait_for("alice-notes", "m2", |r| r.is_some());
}

#[test]
fn a_members_devices_hold_the_share_until_removed_or_revoked() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let _da = alice.up();
    let _db = bob.up();
    befriend(&alice, "Alice", &bob, "Bob", "bob");
    put(&alice, "notes", "n1", r#"{"title":"before the phone"}"#);
    let id = alice
        .home
        .run(&["share", "notes", "Bob", "--write"])
        .first_line();
    wait(
        "the offer",
        || shares(&bob),
        |s| s.iter().any(|s| s["id"] == id.as_str()),
    );
    bob.home.run(&["shares", "accept", &id]).ok();
    bob.wait_for("shared.alice.notes", "n1", |r| r.is_some());

    // Bob pairs a phone after accepting: it holds the share (from Bob's
    // laptop or from Alice, whose node follows Bob's log), and its writes
    // are Bob's.
    let phone = Device::fresh();
    hearth_tests::device::pair(&bob, &phone);
    let _dp = phone.up();
    phone.wait_for("shared.alice.notes", "n1", |r| r.is_some());
    put(&alice, "notes", "n2", r#"{"title":"after the phone"}"#);
    phone.wait_for("shared.alice.notes", "n2", |r| r.is_some());
    put(
        &phone,
        "shared.alice.notes",
        "p1",
        r#"{"title":"from the phone"}"#,
    );
    alice.wait_for("notes", "p1", |r| r.is_some());

    // Bob removes the phone from his account: Alice's devices refuse it
    // from then on, while Bob's laptop keeps the share.
    bob.home.run(&["devices", "remove", &phone.id()]).ok();
    wait(
        "Alice's node following Bob's log",
        || alice.home.run(&["contacts", "--json"]).json(),
        |list| {
            list.as_array().unwrap().iter().any(|c| {
                c["name"] == "Bob" && c["devices"].as_array().is_some_and(|d| d.len() == 1)
            })
        },
    );
    put(&alice, "notes", "n3", r#"{"title":"after the phone left"}"#);
    bob.wait_for("shared.alice.notes", "n3", |r| r.is_some());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        phone.get("shared.alice.notes", "n3").is_none(),
        "a device removed from its account still received the share"
    );

    // Revoked: Bob's laptop receives nothing Alice writes after, and his
    // later write is refused where he makes it.
    alice.home.run(&["unshare", "notes", "Bob"]).ok();
    put(&alice, "notes", "m1", r#"{"title":"after the revocation"}"#);
    assert_revoked(&bob, "m1", "late");
    assert!(
        phone.get("shared.alice.notes", "m1").is_none(),
        "a change written after the revocation reached a removed device"
    );
}
