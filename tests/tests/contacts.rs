//! Contacts with real `hearth` processes on loopback: two accounts exchange
//! cards through the QR PNG (read back by an outside scanner too), the
//! request and its acceptance, contacts known on every device of an
//! account, a contact's device list following its membership log, a
//! restart, removal, and the refusals a person can run into.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use hearth_tests::device::{Device, pair};
use serde_json::Value;

/// The contact named `who` (petname, else card name) on `device`.
fn contact(device: &Device, who: &str) -> Option<Value> {
    let list = device.home.run(&["contacts", "--json"]).json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(who) || (c["name"].is_null() && c["card_name"] == who))
        .cloned()
}

/// Waits until `check` holds for `who` on `device`.
fn wait_contact(device: &Device, who: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = contact(device, who);
        if let Some(c) = got.as_ref().filter(|c| check(c)) {
            return c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "contact {who} never became {what} on {}: last seen {got:?}",
            device.home.path().display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn device_ids(contact: &Value) -> Vec<String> {
    contact["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

/// What an outside QR scanner (zbar's `zbarimg`) reads in `png`; `None`
/// when zbar is not installed, which fails under CI.
fn scan(png: &Path) -> Option<String> {
    match std::process::Command::new("zbarimg")
        .args(["--quiet", "--raw"])
        .arg(png)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "zbarimg could not read {}",
                png.display()
            );
            Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
        }
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "zbarimg (Debian zbar-tools) is needed under CI"
            );
            eprintln!("skipping the outside scanner check: zbarimg (zbar-tools) is not installed");
            None
        }
    }
}

#[test]
fn two_accounts_become_contacts_through_the_png_and_follow_each_others_devices() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let _da = alice.up();
    let db = bob.up();

    // Alice's card: the first line, drawn into a PNG any scanner reads back.
    let png = alice.home.path().join("card.png");
    let run = alice
        .home
        .run(&["contact", "card", "--qr", png.to_str().unwrap()]);
    let card = run.first_line();
    assert!(
        card.starts_with("hearthc1"),
        "first line is the card: {card}"
    );
    if let Some(scanned) = scan(&png) {
        assert_eq!(scanned, card, "the PNG holds the card as printed");
    }

    // Bob adds it from the PNG: pending until Alice adds his.
    let run = bob.home.run(&[
        "contact",
        "add",
        "--qr",
        png.to_str().unwrap(),
        "--name",
        "Alice",
    ]);
    assert!(run.ok().contains("added Alice"), "{}", run.ok());
    let on_bob = contact(&bob, "Alice").unwrap();
    assert_eq!(on_bob["state"], "pending");
    assert_eq!(on_bob["direction"], "outgoing");

    // Bob's card reached Alice as a request.
    let request = wait_contact(&alice, "bob", "an incoming request", |c| {
        c["direction"] == "incoming"
    });
    assert_eq!(request["state"], "pending");
    assert!(
        request["name"].is_null(),
        "a request has no petname until accepted"
    );
    let run = alice
        .home
        .run(&["contact", "accept", "bob", "--name", "Bob"]);
    assert!(run.ok().contains("accepted Bob"), "{}", run.ok());
    wait_contact(&alice, "Bob", "established", |c| {
        c["state"] == "established"
    });
    let on_bob = wait_contact(&bob, "Alice", "established", |c| {
        c["state"] == "established"
    });
    assert_eq!(device_ids(&on_bob), vec![alice.id()]);
    assert_eq!(on_bob["devices"][0]["online"], true, "{on_bob}");

    // Bob pairs a phone: it knows Alice too, and Alice's node follows Bob's log.
    let phone = Device::fresh();
    pair(&bob, &phone);
    let _dp = phone.up();
    let phone_id = phone.id();
    let on_alice = wait_contact(&alice, "Bob", "two devices", |c| {
        device_ids(c).contains(&phone_id)
    });
    assert_eq!(device_ids(&on_alice).len(), 2);
    wait_contact(&phone, "Alice", "known on Bob's phone", |c| {
        c["state"] == "established"
    });

    // Bob removes the phone: Alice's node drops it.
    bob.home.run(&["devices", "remove", &phone_id]).ok();
    wait_contact(&alice, "Bob", "back to one device", |c| {
        !device_ids(c).contains(&phone_id)
    });

    // Every contact survives a restart.
    drop(db);
    let _db = bob.up();
    assert_eq!(contact(&bob, "Alice").unwrap()["state"], "established");

    // Removing a contact: gone from the list.
    let run = alice.home.run(&["contact", "remove", "Bob"]);
    assert!(run.ok().contains("removed Bob"), "{}", run.ok());
    assert!(contact(&alice, "Bob").is_none());
}

#[test]
fn bad_cards_and_writes_to_the_contacts_collection_get_clear_errors() {
    let alice = Device::new("alice");
    let bob = Device::new("bob");

    let run = alice
        .home
        .run(&["contact", "add", "hearthc1notacard", "--name", "x"]);
    assert!(!run.success());
    assert!(run.err().contains("card"), "{}", run.err());

    let own = alice.home.run(&["contact", "card"]).first_line();
    let run = alice.home.run(&["contact", "add", &own, "--name", "me"]);
    assert!(run.err().contains("own card"), "{}", run.err());

    // A pairing ticket pasted where a card belongs says what it is.
    let _da = alice.up();
    let ticket = alice.home.run(&["pair"]).first_line();
    let run = bob.home.run(&["contact", "add", &ticket, "--name", "x"]);
    assert!(run.err().contains("pairing ticket"), "{}", run.err());

    // A mistyped card fails its checksum. The last character may carry
    // only padding bits, so the typo goes three from the end, inside the
    // checksum.
    let mut chars: Vec<char> = own.chars().collect();
    let at = chars.len() - 3;
    chars[at] = if chars[at] == 'a' { 'b' } else { 'a' };
    let typo: String = chars.into_iter().collect();
    let run = bob.home.run(&["contact", "add", &typo, "--name", "x"]);
    assert!(
        run.err().contains("checksum") || run.err().contains("mistyped"),
        "{}",
        run.err()
    );

    // Nobody writes the contacts collection by hand.
    let run = bob.home.run(&["put", "hearth.contacts", r#"{"name":"x"}"#]);
    assert!(!run.success());
    assert!(run.err().contains("kept by hearth itself"), "{}", run.err());

    // Accepting a request nobody sent, and two contacts of one name.
    let run = bob
        .home
        .run(&["contact", "accept", "carol", "--name", "Carol"]);
    assert!(run.err().contains("no contact named"), "{}", run.err());
    bob.home
        .run(&["contact", "add", &own, "--name", "Alice"])
        .ok();
    let carol = Device::new("carol");
    let carol_card = carol.home.run(&["contact", "card"]).first_line();
    let run = bob
        .home
        .run(&["contact", "add", &carol_card, "--name", "Alice"]);
    assert!(run.err().contains("already named"), "{}", run.err());
}
