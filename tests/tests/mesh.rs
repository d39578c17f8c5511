//! The device mesh with real `hearth` processes on loopback: pairing through
//! the QR PNG, live sync, offline edits, restarts, a chain of three devices,
//! device removal, and the pairing refusals.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use hearth_tests::device::{Device, pair, pair_naming, start_join};

#[test]
fn three_devices_pair_by_png_and_sync_live_through_a_chain() {
    let a = Device::new("laptop");
    let b = Device::fresh();
    let _da = a.up();
    pair(&a, &b);
    let _db = b.up();

    // A put on A is readable on B, and the other way round.
    a.home
        .run(&["put", "notes", r#"{"title":"from a"}"#, "--id", "n1"])
        .ok();
    let got = b.wait_for("notes", "n1", |v| v.is_some());
    assert_eq!(got["title"], "from a");
    b.home
        .run(&["put", "notes", r#"{"title":"from b"}"#, "--id", "n2"])
        .ok();
    a.wait_for("notes", "n2", |v| v.is_some());

    // C pairs through B; A and C never meet, yet they converge through B.
    let c = Device::fresh();
    pair(&b, &c);
    let _dc = c.up();
    a.home
        .run(&["put", "notes", r#"{"title":"a to c"}"#, "--id", "n3"])
        .ok();
    c.wait_for("notes", "n3", |v| v.is_some());
    c.home
        .run(&["put", "notes", r#"{"title":"c to a"}"#, "--id", "n4"])
        .ok();
    a.wait_for("notes", "n4", |v| v.is_some());

    // Every device knows all three, and A learned of C from B.
    let devices = a.home.run(&["devices", "--json"]).json();
    let ids: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{devices}");
    assert!(ids.contains(&c.id().as_str()));
    let online_b = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == b.id())
        .unwrap()["online"]
        .as_bool();
    assert_eq!(online_b, Some(true), "{devices}");
}

#[test]
fn offline_edits_converge_and_restarts_pick_up_where_they_were() {
    let a = Device::new("laptop");
    let b = Device::fresh();
    let da = a.up();
    pair(&a, &b);
    let db = b.up();
    a.home
        .run(&["put", "notes", r#"{"title":"shared","n":0}"#, "--id", "r"])
        .ok();
    b.wait_for("notes", "r", |v| v.is_some());
    db.stop().unwrap();

    // Apart: A edits one field through its daemon, B another with no daemon.
    let rev_a = a.get("notes", "r").unwrap()["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    a.home
        .run(&[
            "put",
            "notes",
            &format!(r#"{{"_rev":"{rev_a}","title":"shared","n":0,"from_a":true}}"#),
            "--id",
            "r",
        ])
        .ok();
    b.home
        .run(&[
            "put",
            "notes",
            r#"{"title":"offline on b"}"#,
            "--id",
            "only-b",
        ])
        .ok();
    da.stop().unwrap();

    // Both restart and meet again: everything converges.
    let _da = a.up();
    let _db = b.up();
    b.wait_for("notes", "r", |v| v.is_some_and(|v| v["from_a"] == true));
    a.wait_for("notes", "only-b", |v| v.is_some());
    let on_a = a.get("notes", "r").unwrap();
    let on_b = b.get("notes", "r").unwrap();
    assert_eq!(on_a, on_b);
}

#[test]
fn a_removed_device_is_refused_everywhere() {
    let a = Device::new("laptop");
    let b = Device::fresh();
    let c = Device::fresh();
    let _da = a.up();
    pair(&a, &b);
    let _db = b.up();
    pair(&a, &c);
    let dc = c.up();
    a.home
        .run(&["put", "notes", r#"{"x":1}"#, "--id", "before"])
        .ok();
    c.wait_for("notes", "before", |v| v.is_some());

    let c_id = c.id();
    a.home.run(&["devices", "remove", &c_id]).ok();
    // B learns of the removal from A.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let devices = b.home.run(&["devices", "--json"]).json();
        if devices
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["id"] != c_id.as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never learned of the removal: {devices}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // C's later writes reach nobody, and it gets nothing new.
    c.home
        .run(&["put", "notes", r#"{"x":2}"#, "--id", "after-removal"])
        .ok();
    a.home
        .run(&["put", "notes", r#"{"x":3}"#, "--id", "secret"])
        .ok();
    b.wait_for("notes", "secret", |v| v.is_some());
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.get("notes", "after-removal").is_none());
    assert!(b.get("notes", "after-removal").is_none());
    assert!(c.get("notes", "secret").is_none());
    drop(dc);
}

#[test]
fn pairing_refuses_expired_replayed_and_wrongly_confirmed_invitations() {
    let a = Device::new("laptop");
    let _da = a.up();

    // Expired: the joiner is told, and so is the inviter's status.
    let ticket = a
        .home
        .run(&["pair", "--ttl", "1"])
        .ok()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let late = Device::fresh();
    let run = late.home.run(&["join", &ticket]);
    assert!(run.err().contains("expired"), "{}", run.err());
    assert!(
        !late.home.path().join("store.redb").exists(),
        "a refused join leaves no store"
    );

    // A wrong code burns the invitation on both sides.
    let ticket = a
        .home
        .run(&["pair"])
        .ok()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let joiner = Device::fresh();
    let joining = start_join(&joiner, &[&ticket]);
    let wrong = if joining.code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let run = a.home.run(&["pair", "confirm", wrong]);
    assert!(run.err().contains("does not match"), "{}", run.err());
    let (ok, err) = joining.finish();
    assert!(!ok);
    assert!(err.contains("check code"), "{err}");

    // Replayed: a used ticket is refused.
    let ticket = a
        .home
        .run(&["pair"])
        .ok()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let first = Device::fresh();
    let joining = start_join(&first, &[&ticket]);
    a.home.run(&["pair", "confirm", &joining.code]).ok();
    assert!(joining.finish().0);
    let replay = Device::fresh();
    let run = replay.home.run(&["join", &ticket]);
    assert!(run.err().contains("already used"), "{}", run.err());
}

/// Warnings mean something is wrong: a healthy start of a lone device (no
/// bootstrap peer, the usual case) logs none, not even after Kademlia would
/// have tried to bootstrap.
#[test]
fn a_healthy_start_logs_no_warning() {
    let a = Device::new("laptop");
    let daemon = a.up();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, stderr) = daemon.stop().unwrap();
    assert_eq!(code, 0, "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warnings.is_empty(), "a healthy start warned: {warnings:#?}");
    assert!(
        stderr.contains("listening"),
        "the log is captured: {stderr}"
    );
}

/// Without mDNS, a pair reconnects after either device restarts: each keeps
/// the ports it got at its first start, and each remembers every address it
/// learnt of the other (not only the one in the ticket).
#[test]
fn a_pair_reconnects_after_either_restarts_without_mdns() {
    let a = Device::new("laptop");
    let da = a.home.up_with(&["--no-mdns"]).unwrap();
    let b = Device::fresh();
    pair(&a, &b);
    let db = b.home.up_with(&["--no-mdns"]).unwrap();
    a.home
        .run(&["put", "notes", r#"{"n":1}"#, "--id", "r1"])
        .ok();
    b.wait_for("notes", "r1", |v| v.is_some());
    let ports = std::fs::read_to_string(a.home.path().join("listen.addrs")).unwrap();
    assert!(
        ports.contains("/tcp/") && !ports.contains("/tcp/0\n"),
        "{ports}"
    );

    da.stop().unwrap();
    let da = a.home.up_with(&["--no-mdns"]).unwrap();
    assert_eq!(
        std::fs::read_to_string(a.home.path().join("listen.addrs")).unwrap(),
        ports,
        "the same ports again"
    );
    a.home
        .run(&["put", "notes", r#"{"n":2}"#, "--id", "r2"])
        .ok();
    b.wait_for("notes", "r2", |v| v.is_some());

    db.stop().unwrap();
    let _db = b.home.up_with(&["--no-mdns"]).unwrap();
    b.home
        .run(&["put", "notes", r#"{"n":3}"#, "--id", "r3"])
        .ok();
    a.wait_for("notes", "r3", |v| v.is_some());
    drop(da);
}

/// A port remembered from the last start that another program holds now is
/// given up for a new one, with a warning, rather than failing the start.
#[test]
fn a_remembered_port_taken_since_is_replaced_with_a_warning() {
    let a = Device::new("laptop");
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        a.home.path().join("listen.addrs"),
        format!("/ip4/0.0.0.0/tcp/{port}\n"),
    )
    .unwrap();
    let daemon = a.home.up_with(&["--no-mdns"]).unwrap();
    let ports = std::fs::read_to_string(a.home.path().join("listen.addrs")).unwrap();
    assert!(!ports.contains(&format!("/tcp/{port}\n")), "{ports}");
    let (code, stderr) = daemon.stop().unwrap();
    assert_eq!(code, 0);
    assert!(
        stderr.contains("ports this device used before are taken"),
        "{stderr}"
    );
}

#[test]
fn status_lists_concrete_dialable_addresses() {
    let a = Device::new("laptop");
    let _da = a.up();
    let status = a.home.run(&["status", "--json"]).json();
    let listen = status["network"]["listen"].as_array().unwrap();
    assert!(!listen.is_empty(), "{status}");
    for addr in listen {
        let addr = addr.as_str().unwrap();
        assert!(
            addr.starts_with(&format!("/ip4/127.0.0.1/tcp/{}", a.port)),
            "{addr}"
        );
        assert!(addr.ends_with(&format!("/p2p/{}", a.id())), "{addr}");
    }
}

#[test]
fn a_device_killed_during_sync_reopens_and_catches_up() {
    let a = Device::new("laptop");
    let b = Device::fresh();
    let _da = a.up();
    pair(&a, &b);
    let mut written = Vec::new();
    for round in 0..5 {
        let db = b.up();
        // Writes stream in on A while B syncs them; B dies mid-way.
        for i in 0..20 {
            let id = format!("r{round}-{i}");
            a.home
                .run(&[
                    "put",
                    "notes",
                    &format!(r#"{{"round":{round},"i":{i}}}"#),
                    "--id",
                    &id,
                ])
                .ok();
            written.push(id);
            if i == 10 {
                db.kill9().unwrap();
                break;
            }
        }
    }
    // B opens its store cleanly and gets every acknowledged write.
    let _db = b.up();
    for id in &written {
        b.wait_for("notes", id, |v| v.is_some());
    }
}

#[test]
fn devices_find_each_other_on_the_lan_with_mdns() {
    let a = Device::new("laptop");
    let b = Device::fresh();
    let da = a.up();
    pair(&a, &b);
    da.stop().unwrap();
    // A comes back on a port B has never seen; only mDNS can tell B where.
    // mDNS announces the addresses of the LAN interface, hence 0.0.0.0.
    let _da = a.home.up_with(&["--listen", "/ip4/0.0.0.0/tcp/0"]).unwrap();
    let _db = b.home.up_with(&["--listen", "/ip4/0.0.0.0/tcp/0"]).unwrap();
    a.home
        .run(&["put", "notes", r#"{"via":"mdns"}"#, "--id", "m"])
        .ok();
    b.wait_for("notes", "m", |v| v.is_some());
}

#[test]
fn an_initialised_home_without_data_can_join_and_keeps_its_identity() {
    let a = Device::new("laptop");
    let _da = a.up();
    // B was set up on its own first, but holds no data yet.
    let b = Device::new("desktop");
    let b_id = b.id();
    pair_naming(&a, &b, &[]);
    assert_eq!(b.id(), b_id, "joining keeps the device's identity");
    let devices = a.home.run(&["devices", "--json"]).json();
    let names: Vec<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"desktop"),
        "joining without --name keeps the name `init` gave: {names:?}"
    );
    let status = b.home.run(&["status", "--json"]).json();
    let status_a = a.home.run(&["status", "--json"]).json();
    assert_eq!(status["account_id"], status_a["account_id"]);
    let _db = b.up();
    a.home
        .run(&["put", "notes", r#"{"x":1}"#, "--id", "j"])
        .ok();
    b.wait_for("notes", "j", |v| v.is_some());

    // A home with data of its own is refused, and left as it was.
    let c = Device::new("phone");
    c.home
        .run(&["put", "notes", r#"{"mine":true}"#, "--id", "own"])
        .ok();
    let ticket = a
        .home
        .run(&["pair"])
        .ok()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let run = c.home.run(&["join", &ticket]);
    assert!(run.err().contains("already holds data"), "{}", run.err());
    assert!(c.get("notes", "own").is_some());
}
