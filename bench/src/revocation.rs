//! P13: revocation latency, with real `hearth up` processes on loopback.
//!
//! Three accounts, five devices: Alice (`alice`, `alice-2`), Bob (`bob`,
//! `bob-2`), Carol (`carol`). The homes are made as a confirmed pairing
//! leaves them (see [`crate::mesh`]: the bench writes each account's
//! membership log and creates every home with `Engine::init_joined` on it),
//! each remembering its own account's other device at its fixed loopback
//! port, so the cards the nodes make name every device of the account. The
//! five nodes run as child processes (`--listen /ip4/127.0.0.1/tcp/PORT
//! --no-mdns`, `HEARTH_LOG=info`). Everything after that goes through the
//! HTTP API, as a user's client would: Bob and Carol add Alice's card
//! (`POST /_hearth/contacts`), Alice accepts both (`POST
//! /_hearth/contacts/{account}/accept`).
//!
//! A share is made as a user makes one: Alice writes a seed record into
//! `p13.<tag>`, grants Bob `write` and Carol `read` (`POST
//! /_hearth/shares`), and both accept (`POST /_hearth/shares/{id}/accept`)
//! once the offer is on every device of their account, and on Bob's two
//! devices alike (an answer given before the account's devices have met
//! can be lost: see the README). Alice accepts the contact requests the
//! same way. Then 25 rounds on one share (`one`; Bob granted `write` again
//! after each revocation, so its list grows by two entries a round), and
//! 25 rounds each on a new share (`rK`; Carol, a reader of every one, is in
//! k+1 shares at round k). Each round:
//!
//! 1. Waits until a record Bob writes is on Alice's two devices and
//!    Carol's, Alice lists both members `active`, and (up to 10 s) until
//!    `alice-2` and `carol` each log an open sync session with both of
//!    Bob's devices.
//! 2. **Baseline**: Alice writes one marker record (`PUT /data/…`); from
//!    the moment the PUT returns, `alice-2` and `carol` are polled (`GET`
//!    of the record every millisecond, one thread per device) until both
//!    hold it.
//! 3. **Revocation**: `DELETE /_hearth/shares/{collection}/Bob` on
//!    `alice`. From the moment it returns (the revocation is durable on
//!    `alice`), `alice-2` and `carol` are polled the same way until each
//!    *refuses Bob*, which here means: the share record the device keeps
//!    in `hearth.shares` (`GET /data/hearth.shares/{id}`: what its share
//!    gate and its admission of Bob's devices are built from, updated in
//!    the same core step) holds an access list that verifies against
//!    Alice's log and in which Bob's account is revoked. From that state on
//!    the device's gate refuses every change by Bob naming it, the device
//!    admits Bob's devices no more as share peers, and its core closes its
//!    sessions with them. The sample is the later of the two devices. The
//!    close itself is read from each device's log afterwards ("sync
//!    session closed … nothing is shared", timestamped by the node), as a
//!    second figure.
//! 4. Checks: Bob's own device reports the share `revoked`, a record Alice
//!    writes after the revocation reaches Carol, and by then it has not
//!    reached Bob's devices.
//!
//! Every home's `hearth.toml` raises `[contacts] requests_per_minute` and
//! shortens the `[net]` redial backoff, so that 50 share cycles can follow
//! each other within a minute; both act between revocations, not inside
//! the timed window.
//!
//! Targets: p50 ≤ 50 ms, p99 ≤ 200 ms.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use hearth_bench::stats::{self, Summary};
use hearth_crypto::acl::Acl;
use hearth_crypto::membership::{AccountId, Log};
use serde_json::{Value, json};

use crate::Ctx;
use crate::daemon::{self, Daemon};
use crate::idle::free_ports;
use crate::mesh::Account;
use crate::report::Outcome;

/// Revocations measured (more when `--rounds` asks for more).
const ROUNDS: usize = 25;
/// Between two polls of the devices.
const POLL: Duration = Duration::from_millis(1);
/// How long any one step may take before the scenario gives up.
const TIMEOUT: Duration = Duration::from_secs(30);
/// `[contacts] requests_per_minute` of every home (default 10).
const REQUESTS_PER_MINUTE: u32 = 10_000;
/// `[net] backoff_min_ms` and `backoff_max_ms` of every home (defaults
/// 1000 and 60 000).
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 1_000;
/// How long a round waits for the sessions with Bob's devices to open.
const SESSION_WAIT: Duration = Duration::from_secs(10);

const ALICE: usize = 0;
const ALICE_2: usize = 1;
const BOB: usize = 2;
const BOB_2: usize = 3;
const CAROL: usize = 4;
/// Device names, in the order above.
const NAMES: [&str; 5] = ["alice", "alice-2", "bob", "bob-2", "carol"];
/// The devices that must refuse Bob: every other online member device
/// (Alice's own device revokes, Bob's are the revoked ones).
const WATCHED: [usize; 2] = [ALICE_2, CAROL];

/// One running device.
struct Dev {
    daemon: Daemon,
    /// Its device id, as its status and its log show it.
    id: String,
    log: LogWatch,
}

/// The five devices and what the bench knows of their accounts.
struct Mesh {
    devs: Vec<Dev>,
    alice_log: Log,
    bob: AccountId,
}

/// One round's samples.
struct Round {
    /// Marker write on Alice → held by each watched device.
    write: [Duration; 2],
    /// `unshare` returned → each watched device refuses Bob.
    revoke: [Duration; 2],
    /// How long the request that first saw it took.
    revoke_request: [Duration; 2],
    /// The `DELETE` call itself.
    call: Duration,
    /// `unshare` returned → each watched device's log shows its sessions
    /// with both of Bob's devices closed (the later of the two); `None` when
    /// a session was not open before or no close was logged.
    closed: [Option<f64>; 2],
    /// Alice's own device: `unshare` returned → its sessions with Bob's
    /// devices closed (negative: before the call returned).
    closed_owner: Option<f64>,
    /// Sessions with Bob's devices open on the watched devices before the
    /// revocation (of 4).
    sessions_before: usize,
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let rounds = ROUNDS.max(ctx.rounds);
    let started = Instant::now();
    let mut mesh = start(ctx)?;
    let setup = started.elapsed();
    let result = (|| {
        let mut lost = 0;
        befriend(&mesh, BOB, "Bob", &mut lost)?;
        befriend(&mesh, CAROL, "Carol", &mut lost)?;
        // Bob's second device knows the contact too (through his account's
        // own sync of `hearth.contacts`).
        wait("a contact known on the account's other device", || {
            Ok(contact_state(&mesh.devs[BOB_2], "Alice")?.as_deref() == Some("established"))
        })?;
        // One share, Bob granted again after each revocation: the mesh
        // stays the same from round to round (Carol is in one share).
        let one = new_share(&mesh, "one")?;
        lost += one.lost;
        let mut steady = Vec::new();
        for k in 1..=rounds {
            if k > 1 {
                regrant(&mesh, &one, k)?;
            }
            steady.push(round(&mut mesh, &one, k)?);
            if k % 5 == 0 {
                eprintln!("P13: {k}/{rounds} revocations on one share");
            }
        }
        // A new share each round: Carol is in one more share every round.
        let mut growing = Vec::new();
        for k in 1..=rounds {
            let share = new_share(&mesh, &format!("r{k}"))?;
            lost += share.lost;
            growing.push(round(&mut mesh, &share, rounds + k)?);
            if k % 5 == 0 {
                eprintln!("P13: {k}/{rounds} revocations, one new share each");
            }
        }
        anyhow::Ok((steady, growing, lost))
    })();
    if result.is_err() {
        // What the nodes were doing: their logs go with the scratch dir.
        for (dev, name) in mesh.devs.iter().zip(NAMES) {
            let text = std::fs::read_to_string(&dev.log.path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- the last lines of {name}'s log ({}):", dev.id);
            for line in &lines[lines.len().saturating_sub(12)..] {
                eprintln!("{line}");
            }
        }
    }
    let stopped: Vec<Result<()>> = mesh.devs.into_iter().map(|d| d.daemon.stop()).collect();
    let samples = result?;
    for s in stopped {
        s?;
    }
    report(ctx, &samples.0, &samples.1, samples.2, setup)
}

/// Makes the five homes and starts their nodes.
fn start(ctx: &mut Ctx) -> Result<Mesh> {
    let alice = Account::named(&NAMES[0..2])?;
    let bob = Account::named(&NAMES[2..4])?;
    let carol = Account::named(&NAMES[4..5])?;
    let ports = free_ports(NAMES.len())?;
    let listen: Vec<String> = ports
        .iter()
        .map(|p| format!("/ip4/127.0.0.1/tcp/{p}"))
        .collect();
    // (account, index in it, index in NAMES)
    let places = [
        (&alice, 0, ALICE),
        (&alice, 1, ALICE_2),
        (&bob, 0, BOB),
        (&bob, 1, BOB_2),
        (&carol, 0, CAROL),
    ];
    let mut homes = Vec::new();
    for &(account, i, at) in &places {
        let dir = ctx.fresh_dir(&format!("p13-{}", NAMES[at]))?;
        let (home, mut engine) = account.create(i, &dir)?;
        for &(other, j, there) in &places {
            if std::ptr::eq(other, account) && j != i {
                engine.remember_address(account.id(j), listen[there].clone())?;
            }
        }
        drop(engine);
        // 50 share cycles in two minutes is far more than a person makes.
        // At the default of 10 `/hearth/share/1` requests per device and
        // minute, offers from the fourth round on are refused and retried
        // 30 s later; with the default redial backoff (1 s doubling to
        // 60 s), the sessions of a contact granted again right after a
        // revocation can take longer than a round's 30 s to come back. Both
        // are set so that the rounds can follow each other; they act before
        // a revocation, never during one.
        std::fs::write(
            home.config_path(),
            format!(
                "[contacts]\nrequests_per_minute = {REQUESTS_PER_MINUTE}\n\n\
                 [net]\nbackoff_min_ms = {BACKOFF_MIN_MS}\nbackoff_max_ms = {BACKOFF_MAX_MS}\n"
            ),
        )?;
        homes.push((home, dir));
    }
    let mut devs = Vec::new();
    for (at, (home, dir)) in homes.iter().enumerate() {
        let log_path = dir.join("node.log");
        let daemon =
            Daemon::start_logging(&ctx.launcher, home, &log_path, Some(&listen[at]), "info")?;
        let status = daemon.get("/_hearth/status")?;
        let id = status["device_id"]
            .as_str()
            .context("a status without device_id")?
            .to_owned();
        devs.push(Dev {
            daemon,
            id,
            log: LogWatch::new(log_path),
        });
    }
    let mesh = Mesh {
        devs,
        alice_log: alice.log().clone(),
        bob: bob.log().account_id(),
    };
    for (a, b) in [(ALICE, ALICE_2), (BOB, BOB_2)] {
        let other = mesh.devs[b].id.clone();
        wait("the account's two devices connected", || {
            let status = mesh.devs[a].daemon.get("/_hearth/status")?;
            Ok(status["network"]["connected"]
                .as_array()
                .is_some_and(|c| c.iter().any(|d| d.as_str() == Some(other.as_str()))))
        })?;
    }
    Ok(mesh)
}

/// [`daemon::wait_for`] with this scenario's [`TIMEOUT`].
fn wait(what: &str, check: impl FnMut() -> Result<bool>) -> Result<()> {
    daemon::wait_for(what, TIMEOUT, check)
}

/// The state of the contact `who` (petname, card name or account id) on
/// `dev`, if it is listed.
fn contact_state(dev: &Dev, who: &str) -> Result<Option<String>> {
    let list = dev.daemon.get("/_hearth/contacts")?;
    Ok(list
        .as_array()
        .context("contacts is not a list")?
        .iter()
        .find(|c| c["name"] == who || c["card_name"] == who || c["account_id"] == who)
        .and_then(|c| c["state"].as_str().map(str::to_owned)))
}

/// `member` (Bob or Carol) adds Alice's card under "Alice"; Alice accepts
/// the request under `name` once both of her devices hold it alike, and
/// again if her account's record of it falls back to "pending" (counted in
/// `lost`).
fn befriend(mesh: &Mesh, member: usize, name: &str, lost: &mut usize) -> Result<()> {
    let card = mesh.devs[ALICE].daemon.get("/_hearth/contacts/card")?;
    let card = card["card"].as_str().context("no card")?.to_owned();
    mesh.devs[member].daemon.send(
        "POST",
        "/_hearth/contacts",
        Some(&json!({"card": card, "name": "Alice"})),
    )?;
    let account = mesh.devs[member].daemon.get("/_hearth/status")?["account_id"]
        .as_str()
        .context("a status without account_id")?
        .to_owned();
    // The request reaches both of Alice's devices, and each stores it.
    wait(
        &format!("{name}'s request alike on Alice's devices"),
        || {
            let a = record(&mesh.devs[ALICE], "hearth.contacts", &account)?;
            let b = record(&mesh.devs[ALICE_2], "hearth.contacts", &account)?;
            Ok(a.is_some() && a == b)
        },
    )?;
    for _ in 0..3 {
        mesh.devs[ALICE].daemon.send(
            "POST",
            &format!("/_hearth/contacts/{account}/accept"),
            Some(&json!({"name": name})),
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ours = [ALICE, ALICE_2]
                .iter()
                .map(|&d| contact_state(&mesh.devs[d], name))
                .collect::<Result<Vec<_>>>()?;
            let theirs = contact_state(&mesh.devs[member], "Alice")?;
            if ours.iter().all(|s| s.as_deref() == Some("established"))
                && theirs.as_deref() == Some("established")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        *lost += 1;
    }
    bail!("Alice's acceptance of {name} does not hold")
}

/// A record on `dev`, if it is there.
fn record(dev: &Dev, collection: &str, id: &str) -> Result<Option<Value>> {
    let (status, value) = dev
        .daemon
        .call("GET", &format!("/data/{collection}/{id}"), None)?;
    match status {
        200 => Ok(Some(value)),
        404 => Ok(None),
        other => bail!("GET /data/{collection}/{id}: {other}: {value}"),
    }
}

fn put(dev: &Dev, collection: &str, id: &str, body: &Value) -> Result<()> {
    dev.daemon
        .send("PUT", &format!("/data/{collection}/{id}"), Some(body))?;
    Ok(())
}

/// The shares `dev` lists.
fn shares(dev: &Dev) -> Result<Vec<Value>> {
    Ok(dev
        .daemon
        .get("/_hearth/shares")?
        .as_array()
        .context("shares is not a list")?
        .clone())
}

fn share_with_id<'v>(list: &'v [Value], id: &str) -> Option<&'v Value> {
    list.iter().find(|s| s["id"] == id)
}

/// The access list `dev` keeps for share `id` (its `hearth.shares`
/// record), base64 as stored.
fn stored_acl(dev: &Dev, id: &str) -> Result<Option<String>> {
    Ok(record(dev, "hearth.shares", id)?.and_then(|r| r["acl"].as_str().map(str::to_owned)))
}

/// Whether the stored list `b64` verifies against Alice's log and revokes
/// Bob.
fn revokes_bob(mesh: &Mesh, b64: &str) -> Result<bool> {
    let bytes = base64_decode(b64).context("a stored access list that is not base64")?;
    let acl = Acl::decode(&bytes, &mesh.alice_log)?;
    Ok(acl.state(&mesh.alice_log).is_revoked(&mesh.bob))
}

/// When a watched device was seen there: the end of the request that saw
/// it, and how long that request took (a long one waited for a busy node).
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Duration,
    request: Duration,
}

/// Polls every watched device every [`POLL`] until `check` holds on each,
/// each device from its own thread (so that a slow answer from one does not
/// delay the other's polls); each one's time since `from`.
fn race(
    mesh: &Mesh,
    from: Instant,
    check: impl Fn(&Mesh, usize) -> Result<bool> + Sync,
) -> Result<[Seen; 2]> {
    let poll = |dev: usize| -> Result<Seen> {
        loop {
            let asked = Instant::now();
            if check(mesh, dev)? {
                return Ok(Seen {
                    at: from.elapsed(),
                    request: asked.elapsed(),
                });
            }
            if from.elapsed() > TIMEOUT {
                bail!("{} did not get there within {TIMEOUT:?}", NAMES[dev]);
            }
            std::thread::sleep(POLL);
        }
    };
    std::thread::scope(|s| {
        let threads = WATCHED.map(|dev| s.spawn(move || poll(dev)));
        let [a, b] = threads.map(|t| {
            t.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a polling thread panicked")))
        });
        Ok([a?, b?])
    })
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One share of the rounds: Alice's collection and its names on the
/// members' devices.
struct Shared {
    coll: String,
    id: String,
    bob_local: String,
    carol_local: String,
    /// Acceptances that fell back to "offered" and were made again.
    lost: usize,
}

/// Alice writes a seed into a new collection `p13.<tag>`, shares it with
/// Bob (write) and Carol (read), both accept; returns once the seed is on
/// Bob's two devices and Carol's.
fn new_share(mesh: &Mesh, tag: &str) -> Result<Shared> {
    let coll = format!("p13.{tag}");
    let (bob_local, carol_local) = (format!("from-alice.{tag}"), format!("alice.{tag}"));
    put(&mesh.devs[ALICE], &coll, "seed", &json!({"tag": tag}))?;
    let id = grant(mesh, &coll, "Bob", "write")?;
    grant(mesh, &coll, "Carol", "read")?;
    for dev in [BOB, BOB_2, CAROL] {
        wait(&format!("{tag}: the offer on {}", NAMES[dev]), || {
            Ok(share_with_id(&shares(&mesh.devs[dev])?, &id).is_some())
        })?;
    }
    // Both of Bob's devices store the offer they receive; Bob accepts once
    // the two records have met, so that his acceptance comes after both.
    wait(
        &format!("{tag}: the offer's record alike on Bob's devices"),
        || {
            let a = record(&mesh.devs[BOB], "hearth.shares", &id)?;
            let b = record(&mesh.devs[BOB_2], "hearth.shares", &id)?;
            Ok(a.is_some() && a == b)
        },
    )?;
    let mut lost = 0;
    for (dev, local) in [(BOB, &bob_local), (CAROL, &carol_local)] {
        accept(mesh, dev, &id, local, tag, &mut lost)?;
    }
    if lost > 0 {
        eprintln!("P13: {tag}: an acceptance was lost {lost} time(s) and made again");
    }
    for (dev, local) in [
        (BOB, &bob_local),
        (BOB_2, &bob_local),
        (CAROL, &carol_local),
    ] {
        wait(&format!("{tag}: the seed on {}", NAMES[dev]), || {
            Ok(record(&mesh.devs[dev], local, "seed")?.is_some())
        })?;
    }
    Ok(Shared {
        coll,
        id,
        bob_local,
        carol_local,
        lost,
    })
}

/// `dev` accepts share `id` as `local`, and again if its account's record
/// of the share falls back to "offered" (counted in `lost`).
fn accept(
    mesh: &Mesh,
    dev: usize,
    id: &str,
    local: &str,
    tag: &str,
    lost: &mut usize,
) -> Result<()> {
    let devices: &[usize] = if dev == BOB { &[BOB, BOB_2] } else { &[dev] };
    for _ in 0..3 {
        mesh.devs[dev].daemon.send(
            "POST",
            &format!("/_hearth/shares/{id}/accept"),
            Some(&json!({"as": local})),
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut states = Vec::new();
            for &d in devices {
                let list = shares(&mesh.devs[d])?;
                let s = share_with_id(&list, id).context("the share vanished")?;
                states.push((s["state"].clone(), s["local"].clone()));
            }
            if states.iter().all(|(st, l)| *st == "active" && *l == local) {
                return Ok(());
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        *lost += 1;
    }
    bail!("{tag}: {}'s acceptance does not hold", NAMES[dev])
}

/// Alice grants `who` `level` on `coll`; the share's id.
fn grant(mesh: &Mesh, coll: &str, who: &str, level: &str) -> Result<String> {
    let granted = mesh.devs[ALICE].daemon.send(
        "POST",
        "/_hearth/shares",
        Some(&json!({"collection": coll, "contact": who, "level": level})),
    )?;
    Ok(granted["id"]
        .as_str()
        .context("a share without id")?
        .to_owned())
}

/// Alice grants Bob `write` again on a share she revoked him from; returns
/// once Bob's device stands active in it again.
fn regrant(mesh: &Mesh, share: &Shared, k: usize) -> Result<()> {
    let id = grant(mesh, &share.coll, "Bob", "write")?;
    ensure!(id == share.id, "a grant again made another share");
    wait(&format!("round {k}: Bob active again"), || {
        let list = shares(&mesh.devs[BOB])?;
        Ok(share_with_id(&list, &share.id).is_some_and(|s| s["state"] == "active"))
    })
}

/// One revocation of Bob from `share`, with its baseline and checks.
fn round(mesh: &mut Mesh, share: &Shared, k: usize) -> Result<Round> {
    let Shared {
        coll,
        id,
        bob_local,
        carol_local,
        ..
    } = share;
    // Converged: a write of Bob's on Alice's two devices and Carol's, both
    // members active on the owner.
    let by_bob = format!("from-bob-{k}");
    put(&mesh.devs[BOB], bob_local, &by_bob, &json!({"by": "bob"}))?;
    for (dev, local) in [(ALICE, coll), (ALICE_2, coll), (CAROL, carol_local)] {
        wait(&format!("round {k}: Bob's write on {}", NAMES[dev]), || {
            Ok(record(&mesh.devs[dev], local, &by_bob)?.is_some())
        })?;
    }
    wait("both members active on Alice's device", || {
        let list = shares(&mesh.devs[ALICE])?;
        Ok(share_with_id(&list, id).is_some_and(|s| {
            s["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["state"] == "active"))
        }))
    })?;
    // The sessions with Bob's devices, as the watched devices log them.
    let bobs = [mesh.devs[BOB].id.clone(), mesh.devs[BOB_2].id.clone()];
    let deadline = Instant::now() + SESSION_WAIT;
    let sessions_before = loop {
        let mut open = 0;
        for &dev in &WATCHED {
            mesh.devs[dev].log.poll()?;
            open += bobs
                .iter()
                .filter(|b| mesh.devs[dev].log.is_open(b))
                .count();
        }
        if open == 4 || Instant::now() > deadline {
            break open;
        }
        std::thread::sleep(Duration::from_millis(5));
    };

    // Baseline: one write on Alice until both watched devices hold it.
    let mark = format!("mark-{k}");
    put(&mesh.devs[ALICE], coll, &mark, &json!({"mark": k}))?;
    let from = Instant::now();
    let write = race(mesh, from, |m, dev| {
        let local = if dev == CAROL { carol_local } else { coll };
        Ok(record(&m.devs[dev], local, &mark)?.is_some())
    })?;

    // The revocation.
    let mut before = BTreeMap::new();
    for &dev in &WATCHED {
        let acl = stored_acl(&mesh.devs[dev], id)?.context("no share record before")?;
        ensure!(
            !revokes_bob(mesh, &acl)?,
            "Bob is revoked before the revocation"
        );
        before.insert(dev, acl);
    }
    let call_wall = unix_us(SystemTime::now());
    let call_started = Instant::now();
    mesh.devs[ALICE]
        .daemon
        .send("DELETE", &format!("/_hearth/shares/{coll}/Bob"), None)?;
    let from = Instant::now();
    let returned_wall = unix_us(SystemTime::now());
    let call = from - call_started;
    let seen = race(mesh, from, |m, dev| {
        let Some(acl) = stored_acl(&m.devs[dev], id)? else {
            bail!("the share record vanished");
        };
        Ok(acl != before[&dev] && revokes_bob(m, &acl)?)
    })?;
    let revoke = seen.map(|s| s.at);
    let revoke_request = seen.map(|s| s.request);

    // Checks: Bob's device knows; a write after the revocation reaches
    // Carol and, by then, none of Bob's devices.
    wait("the revocation known on Bob's device", || {
        let list = shares(&mesh.devs[BOB])?;
        Ok(share_with_id(&list, id).is_some_and(|s| s["state"] == "revoked"))
    })?;
    let after = format!("after-{k}");
    put(&mesh.devs[ALICE], coll, &after, &json!({"after": k}))?;
    wait("a write after the revocation on Carol's device", || {
        Ok(record(&mesh.devs[CAROL], carol_local, &after)?.is_some())
    })?;
    for dev in [BOB, BOB_2] {
        ensure!(
            record(&mesh.devs[dev], bob_local, &after)?.is_none(),
            "a write made after the revocation reached {}",
            NAMES[dev]
        );
    }

    // The session closes, from the logs (they are written by now).
    let mut closed = [None, None];
    for (slot, &dev) in WATCHED.iter().enumerate() {
        mesh.devs[dev].log.poll()?;
        closed[slot] = mesh.devs[dev]
            .log
            .all_closed_after(&bobs, call_wall)
            .map(|at| (at - returned_wall) as f64 / 1000.0);
    }
    mesh.devs[ALICE].log.poll()?;
    let closed_owner = mesh.devs[ALICE]
        .log
        .all_closed_after(&bobs, call_wall)
        .map(|at| (at - returned_wall) as f64 / 1000.0);
    for dev in &mut mesh.devs {
        dev.log.forget_before(call_wall);
    }
    let write = write.map(|s| s.at);
    Ok(Round {
        write,
        revoke,
        revoke_request,
        call,
        closed,
        closed_owner,
        sessions_before,
    })
}

/// The later of the two watched devices.
fn later(pair: &[Duration; 2]) -> Duration {
    pair[0].max(pair[1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &[Duration]) -> Result<Summary> {
    Summary::of(v).context("no samples")
}

/// Least-squares slope of `y` against `x`.
fn slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let var: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    cov / var
}

fn report(
    ctx: &Ctx,
    steady: &[Round],
    growing: &[Round],
    lost: usize,
    setup: Duration,
) -> Result<Outcome> {
    let revoke: Vec<Duration> = steady.iter().map(|r| later(&r.revoke)).collect();
    let write: Vec<Duration> = steady.iter().map(|r| later(&r.write)).collect();
    let per = |rounds: &[Round], slot: usize, f: &dyn Fn(&Round) -> [Duration; 2]| {
        rounds.iter().map(|r| f(r)[slot]).collect::<Vec<Duration>>()
    };
    let (r, w) = (summary(&revoke)?, summary(&write)?);
    let c = summary(&steady.iter().map(|r| r.call).collect::<Vec<_>>())?;

    let mut o = Outcome::new(
        "P13",
        "revocation: unshare until every other member device refuses the revoked contact",
    );
    o.figure(
        "unshare returned → alice-2 and carol refuse Bob, p50",
        r.p50_us / 1000.0,
        "ms",
    );
    o.figure(
        "unshare returned → alice-2 and carol refuse Bob, p99",
        r.p99_us / 1000.0,
        "ms",
    );
    o.figure(
        "unshare returned → alice-2 and carol refuse Bob, min",
        r.min_us / 1000.0,
        "ms",
    );
    for (slot, name) in [(0, "alice-2"), (1, "carol")] {
        let s = summary(&per(steady, slot, &|r| r.revoke))?;
        o.figure(format!("  {name} alone, p50"), s.p50_us / 1000.0, "ms");
        o.figure(format!("  {name} alone, p99"), s.p99_us / 1000.0, "ms");
    }
    o.figure(
        "baseline: write on alice → on alice-2 and carol, p50",
        w.p50_us / 1000.0,
        "ms",
    );
    o.figure(
        "baseline: write on alice → on alice-2 and carol, p99",
        w.p99_us / 1000.0,
        "ms",
    );
    for (slot, name) in [(0, "alice-2"), (1, "carol")] {
        let s = summary(&per(steady, slot, &|r| r.write))?;
        o.figure(
            format!("  baseline, {name} alone, p50"),
            s.p50_us / 1000.0,
            "ms",
        );
    }
    o.figure("revocation p50 / write p50", r.p50_us / w.p50_us, "×");
    for (slot, name) in [(0, "alice-2"), (1, "carol")] {
        let s = summary(&per(steady, slot, &|r| r.revoke_request))?;
        o.figure(
            format!("the GET that first saw it on {name} took, p50"),
            s.p50_us / 1000.0,
            "ms",
        );
    }
    o.figure(
        "the unshare call itself (DELETE), p50",
        c.p50_us / 1000.0,
        "ms",
    );
    o.figure(
        "the unshare call itself (DELETE), p99",
        c.p99_us / 1000.0,
        "ms",
    );
    let closes = |rounds: &[Round], slot: usize| -> Vec<f64> {
        rounds.iter().filter_map(|r| r.closed[slot]).collect()
    };
    for (slot, name) in [(0, "alice-2"), (1, "carol")] {
        let v = closes(steady, slot);
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        o.figure(
            format!("log: unshare returned → {name}'s core closes its sessions with both of Bob's devices, p50"),
            stats::percentile(&sorted, 50.0),
            "ms",
        );
        o.figure(
            format!("log: … {name}, p99"),
            stats::percentile(&sorted, 99.0),
            "ms",
        );
        o.figure(
            format!("log: … {name}, rounds with both closes logged"),
            v.len() as f64,
            "",
        );
    }
    let owner: Vec<f64> = steady.iter().filter_map(|r| r.closed_owner).collect();
    o.figure(
        "log: alice's own sessions with Bob closed, relative to the call's return, p50",
        stats::median(&owner),
        "ms",
    );
    o.figure(
        "log: … alice, rounds with both closes logged",
        owner.len() as f64,
        "",
    );
    let open: usize = steady.iter().map(|r| r.sessions_before).sum();
    o.figure(
        "sessions with Bob's devices open before the unshare (alice-2 and carol)",
        open as f64 / steady.len() as f64,
        "of 4",
    );
    o.figure(
        "rounds (one share, Bob granted again each round)",
        steady.len() as f64,
        "",
    );
    // Each round adds a grant and a revocation to the one share's list: at
    // round k's revocation the list holds 2k + 2 entries.
    let later_ms =
        |rounds: &[Round]| -> Vec<f64> { rounds.iter().map(|r| ms(later(&r.revoke))).collect() };
    let ns = steady.len();
    let (first, last) = (&steady[..5.min(ns)], &steady[ns.saturating_sub(5)..]);
    o.figure(
        format!(
            "one share: refuse Bob, p50 of rounds 1–{} (list of 4–{} entries)",
            first.len(),
            2 * first.len() + 2
        ),
        stats::median(&later_ms(first)),
        "ms",
    );
    o.figure(
        format!(
            "one share: refuse Bob, p50 of the last {} rounds (list of {}–{} entries)",
            last.len(),
            2 * (ns - last.len() + 1) + 2,
            2 * ns + 2
        ),
        stats::median(&later_ms(last)),
        "ms",
    );
    let entries: Vec<f64> = (1..=ns).map(|k| (2 * k + 2) as f64).collect();
    o.figure(
        "one share: refuse Bob, growth per list entry (least squares)",
        slope(&entries, &later_ms(steady)),
        "ms",
    );

    // A new share each round: round k's share is Carol's (k+1)th.
    let n = growing.len();
    let head = &growing[..5.min(n)];
    let tail = &growing[n.saturating_sub(5)..];
    let carol_ms =
        |rounds: &[Round]| -> Vec<f64> { rounds.iter().map(|r| ms(r.revoke[1])).collect() };
    let shares_with_carol: Vec<f64> = (0..n).map(|k| (k + 2) as f64).collect();
    let g = summary(&growing.iter().map(|r| later(&r.revoke)).collect::<Vec<_>>())?;
    o.figure(
        "new share each round: refuse Bob (later of two), p50",
        g.p50_us / 1000.0,
        "ms",
    );
    o.figure(
        "new share each round: refuse Bob (later of two), p99",
        g.p99_us / 1000.0,
        "ms",
    );
    o.figure(
        format!(
            "new share each round: carol refuses Bob, p50 of rounds 1–{} (2–{} shares with Carol)",
            head.len(),
            head.len() + 1
        ),
        stats::median(&carol_ms(head)),
        "ms",
    );
    o.figure(
        format!(
            "new share each round: carol refuses Bob, p50 of the last {} rounds ({}–{} shares)",
            tail.len(),
            n - tail.len() + 2,
            n + 1
        ),
        stats::median(&carol_ms(tail)),
        "ms",
    );
    o.figure(
        "new share each round: carol refuses Bob, growth per share with Carol (least squares)",
        slope(&shares_with_carol, &carol_ms(growing)),
        "ms",
    );
    o.figure(
        format!("new share each round: log: carol's core closes Bob's sessions, p50 of the last {} rounds", tail.len()),
        stats::median(&closes(tail, 1)),
        "ms",
    );
    o.figure(
        format!(
            "new share each round: baseline write → carol, p50 of the last {} rounds",
            tail.len()
        ),
        stats::median(&tail.iter().map(|r| ms(r.write[1])).collect::<Vec<_>>()),
        "ms",
    );
    o.figure("five nodes spawned → all ready", ms(setup), "ms");
    o.figure(
        "acceptances (2 contacts, 26 shares) that fell back and were made again",
        lost as f64,
        "",
    );
    o.at_most(
        "revocation p50 (one share)",
        r.p50_us / 1000.0,
        50.0,
        "≤ 50 ms".into(),
    );
    o.at_most(
        "revocation p99 (one share)",
        r.p99_us / 1000.0,
        200.0,
        "≤ 200 ms".into(),
    );
    o.at_most(
        "revocation p50 (a new share each round)",
        g.p50_us / 1000.0,
        50.0,
        "≤ 50 ms".into(),
    );
    o.at_most(
        "revocation p99 (a new share each round)",
        g.p99_us / 1000.0,
        200.0,
        "≤ 200 ms".into(),
    );
    o.note(format!(
        "node: {}; 5 nodes (alice, alice-2, bob, bob-2, carol) on 127.0.0.1 TCP, no mDNS, [contacts] requests_per_minute = \
         {REQUESTS_PER_MINUTE}, [net] backoff {BACKOFF_MIN_MS}–{BACKOFF_MAX_MS} ms; {} rounds on one share (Bob granted write again after each revocation), then {n} rounds each on \
         a new share (Carol, a reader of every one, is in k+1 shares at round k); devices polled every {} ms over HTTP (a \
         sample's resolution is one poll plus one GET)",
        ctx.launcher.describe(),
        steady.len(),
        POLL.as_millis()
    ));
    o.note(
        "refuses Bob = the device's own share record (GET /data/hearth.shares/<id>) holds an access list that verifies \
         against Alice's log and revokes Bob's account; its gate, its admission and its session closes follow from that \
         state in the same core step. 'log:' figures are the nodes' own timestamps of the core closing the sessions \
         (\"sync session closed … nothing is shared\"), against the bench's clock at the call's return",
    );
    Ok(o)
}

/// A node's log, read as it grows: when its sync sessions with which
/// devices opened and closed.
struct LogWatch {
    path: PathBuf,
    offset: u64,
    rest: Vec<u8>,
    events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A sync stream started (the mesh's "sync session open").
    Open,
    /// A sync stream ended (the mesh's "sync session closed").
    Ended,
    /// The core closed the session because nothing is shared with the
    /// peer's account any more (the engine performing its `Close`).
    Unshared,
}

#[derive(Debug, Clone)]
struct Event {
    /// The node's timestamp, µs since the Unix epoch.
    at_us: i64,
    kind: Kind,
    peer: String,
}

impl LogWatch {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            rest: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Reads what was appended since the last call.
    fn poll(&mut self) -> Result<()> {
        let mut file = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.rest.extend_from_slice(&buf);
        while let Some(nl) = self.rest.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.rest.drain(..=nl).collect();
            if let Some(event) = parse_line(&String::from_utf8_lossy(&line)) {
                self.events.push(event);
            }
        }
        Ok(())
    }

    /// Whether a sync stream with `peer` is running: more started than
    /// ended (the mesh logs one of each per stream).
    fn is_open(&self, peer: &str) -> bool {
        let mut open = 0i64;
        for e in self.events.iter().filter(|e| e.peer == peer) {
            match e.kind {
                Kind::Open => open += 1,
                Kind::Ended => open -= 1,
                Kind::Unshared => {}
            }
        }
        open > 0
    }

    /// The time by which the core had closed its sessions with every one
    /// of `peers` for sharing nothing any more, after `after_us` (the latest
    /// of their first such closes), if it did for each.
    fn all_closed_after(&self, peers: &[String], after_us: i64) -> Option<i64> {
        peers
            .iter()
            .map(|p| {
                self.events
                    .iter()
                    .filter(|e| e.at_us >= after_us && e.kind == Kind::Unshared && e.peer == *p)
                    .map(|e| e.at_us)
                    .min()
            })
            .try_fold(i64::MIN, |acc, at| at.map(|at| acc.max(at)))
    }

    /// Drops the closes logged before `us`; the stream counts stay.
    fn forget_before(&mut self, us: i64) {
        self.events
            .retain(|e| e.at_us >= us || e.kind != Kind::Unshared);
    }
}

/// A session event of a node's log line (tracing's default format:
/// `2026-12-03T12:55:01.123456Z  INFO target: message key=value …`).
fn parse_line(line: &str) -> Option<Event> {
    let (stamp, rest) = line.trim_start().split_once(' ')?;
    let mesh = rest.contains("hearth_node::mesh:");
    let kind = if mesh && rest.contains("sync session open") {
        Kind::Open
    } else if mesh && rest.contains("sync session closed") {
        Kind::Ended
    } else if rest.contains("hearth_node::engine:")
        && rest.contains("sync session closed")
        && rest.contains("nothing is shared")
    {
        Kind::Unshared
    } else {
        return None;
    };
    let peer = field(rest, "device=").or_else(|| field(rest, "peer="))?;
    Some(Event {
        at_us: parse_stamp(stamp)?,
        kind,
        peer,
    })
}

fn field(text: &str, key: &str) -> Option<String> {
    let start = text.find(key)? + key.len();
    let value: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!value.is_empty()).then_some(value)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` to µs since the Unix epoch.
fn parse_stamp(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take(6).collect();
    let micros = digits.parse::<i64>().ok()? * 10_i64.pow(6 - digits.len() as u32);
    let days = days_from_civil(y, m, day);
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Standard base64 (with or without padding), as the share record stores
/// its access list.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_become_session_events() {
        let open = parse_line(
            "2026-12-03T12:55:01.123456Z  INFO hearth_node::mesh: sync session open device=12D3KooWabc",
        )
        .expect("an event");
        assert_eq!(open.kind, Kind::Open);
        assert_eq!(open.peer, "12D3KooWabc");
        assert_eq!(open.at_us % 1_000_000, 123_456);
        let closed = parse_line(
            "2026-12-03T12:55:01.200000Z  INFO hearth_node::engine: sync session closed peer=12D3KooWabc why=nothing is shared with the peer's account now",
        )
        .expect("an event");
        assert_eq!(closed.kind, Kind::Unshared);
        assert_eq!(closed.at_us - open.at_us, 76_544);
        let ended = parse_line(
            "2026-12-03T12:55:01.300000Z  INFO hearth_node::mesh: sync session closed device=12D3KooWabc",
        )
        .expect("an event");
        assert_eq!(ended.kind, Kind::Ended);
        assert!(
            parse_line(
                "2026-12-03T12:55:01.2Z  INFO hearth_node::engine: sync session closed peer=x why=stream closed"
            )
            .is_none()
        );
        assert!(parse_line("2026-12-03T12:55:01.2Z  INFO x: something else").is_none());
    }

    #[test]
    fn stamps_and_base64() {
        assert_eq!(parse_stamp("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(base64_decode("aGVhcnRo").as_deref(), Some(&b"hearth"[..]));
        assert_eq!(base64_decode("aGk=").as_deref(), Some(&b"hi"[..]));
        assert!(base64_decode("a*b").is_none());
    }
}
