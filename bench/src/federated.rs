//! P9: a federated aggregate across N = 2, 8 and 32 contacts, with real
//! `hearth up` processes on loopback.
//!
//! One querier and 32 contacts, each its own account of one device, its
//! home made as [`crate::mesh`] makes them and its node a child process
//! (`--listen /ip4/127.0.0.1/tcp/0 --no-mdns`). Everything after that
//! goes through the HTTP API, as a user's client would:
//!
//! 1. Each contact imports 10,000 readings into `energy.readings`
//!    (`POST /_hearth/import/…`; half of year 2025, half of 2026, a month
//!    and a whole kWh each, made from the seed).
//! 2. Each contact adds the querier's card (`POST /_hearth/contacts`), the
//!    querier accepts each request under the name `cNN`, and the scenario
//!    waits until both sides list the contact `established`. Contacts that
//!    share nothing keep no link open, so the first question dials every
//!    contact (the cold one); the links it opens stay open for the rounds
//!    after it (warm). The report says how many were connected before and
//!    after.
//! 3. **Exact**: every contact stores an `exact` consent policy for the
//!    querier. For N = 2, 8, 32, the querier asks `{selector: {year: 2026,
//!    kwh: {$gte: -k}}, group_by: [month], aggregate: {kwh: $sum, n:
//!    $count}, scope: contacts, contacts: [the first N]}` (`POST
//!    /_hearth/query`), `k` the round, so that no two questions are the
//!    same. Each answer is checked: every one of the N answered, `exact`,
//!    and each month's sum and count equal to those computed from the
//!    generated readings by a plain loop.
//! 4. **Pull everything** (the baseline, same run): the same question
//!    answered by fetching every record of the N contacts to one place
//!    (`GET /_hearth/export/energy.readings` from each, all at once, one
//!    thread per contact) and aggregating there with the same aggregate
//!    code the node uses (`hearth_crdt::query::aggregate`); the answer is
//!    checked the same way. The bench process stands in for the querier's
//!    node: the records cross loopback HTTP, the cheapest way out of a node
//!    that a puller has.
//! 5. **Secure sum**: every contact replaces its policy with a noisy one
//!    (`exact: false`, `min_cohort: 2`, ε = 1 per query, no budget cap, the
//!    bounds `kwh ∈ [0, 1000]`, one record per month and account), and the
//!    querier asks the same questions again: ask, contribute (shares sealed
//!    to two aggregator accounts, the ε charged durably first), release.
//!    Each answer is checked: every one of the N answered and it carries
//!    noise.
//!
//! The first question of each part is reported apart, as the cold one (no
//! `/hearth/query/1` stream opened yet, caches cold); p50 and p99 are over
//! the rounds after it. Every home's `hearth.toml` raises `[queries]
//! requests_per_minute` (default 120 per device) so that the rounds can
//! follow each other.
//!
//! Targets (TARGETS.md P9): N = 32, p99 ≤ 20 ms exact, ≤ 50 ms through
//! secure sum; cold ≤ 100 ms; ≥ 10 × faster than pulling every record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hearth_bench::stats::Summary;
use hearth_crdt::query::{AggregateRequest, aggregate};
use serde_json::{Value, json};

use crate::Ctx;
use crate::daemon::{self, Daemon};
use crate::mesh::Account;
use crate::report::Outcome;
use hearth_bench::procfs;

/// Contacts at most (the largest N).
const CONTACTS: usize = 32;
/// The N asked.
const SIZES: [usize; 3] = [2, 8, CONTACTS];
/// Readings per contact.
const RECORDS: usize = 10_000;
/// Timed questions per N and part, after the cold one (more with
/// `--rounds`).
const ROUNDS: usize = 30;
/// Pull-everything rounds per N (each moves N × 10k records).
const PULL_ROUNDS: usize = 5;
const COLLECTION: &str = "energy.readings";
/// How long any one setup step may take.
const TIMEOUT: Duration = Duration::from_secs(120);
/// `[queries] requests_per_minute` of every home.
const QUERY_REQUESTS_PER_MINUTE: u32 = 1_000_000;
/// `[contacts] requests_per_minute` of every home.
const CONTACT_REQUESTS_PER_MINUTE: u32 = 10_000;

/// One running device and its account.
struct Dev {
    daemon: Daemon,
    account: String,
}

/// Per month of 2026: (Σ kWh, count), as a plain loop computes them.
type Expected = BTreeMap<u64, (u64, u64)>;

pub(crate) fn run(ctx: &mut Ctx) -> Result<Outcome> {
    let rounds = ROUNDS.max(ctx.rounds);
    let started = Instant::now();
    let devs = start(ctx)?;
    let result = (|| {
        let (querier, contacts) = devs.split_first().context("no querier")?;
        let mut expected = Vec::new();
        for (c, dev) in contacts.iter().enumerate() {
            expected.push(import(dev, c, ctx.seed)?);
        }
        for (c, dev) in contacts.iter().enumerate() {
            befriend(querier, dev, &name(c))?;
        }
        eprintln!("P9: {CONTACTS} contacts established, {RECORDS} readings each");
        let setup = started.elapsed();
        for dev in contacts {
            consent(dev, &exact_policy())?;
        }
        let mut k = 0;
        let alone = local(&contacts[0], rounds, &mut k, &expected[0])?;
        let mut exact = Vec::new();
        for n in SIZES {
            let want = sum_of(&expected[..n]);
            exact.push(part(querier, contacts, n, rounds, &mut k, |answer| {
                check_exact(answer, n, &want)
            })?);
            eprintln!("P9: N = {n}, exact: done");
        }
        let mut pulls = Vec::new();
        for n in SIZES {
            let want = sum_of(&expected[..n]);
            let mut samples = Vec::new();
            for _ in 0..PULL_ROUNDS {
                k += 1;
                samples.push(pull(&contacts[..n], k, &want)?);
            }
            pulls.push(samples);
            eprintln!("P9: N = {n}, pull everything: done");
        }
        for dev in contacts {
            consent(dev, &noisy_policy())?;
        }
        let mut noisy = Vec::new();
        for n in SIZES {
            noisy.push(part(querier, contacts, n, rounds, &mut k, |answer| {
                check_noisy(answer, n)
            })?);
            eprintln!("P9: N = {n}, secure sum: done");
        }
        anyhow::Ok((setup, exact, pulls, noisy, alone))
    })();
    let stopped: Vec<Result<()>> = devs.into_iter().map(|d| d.daemon.stop()).collect();
    let (setup, exact, pulls, noisy, alone) = result?;
    for s in stopped {
        s?;
    }
    report(setup, &exact, &pulls, &noisy, rounds, &alone)
}

/// The querier's name for contact `c`.
fn name(c: usize) -> String {
    format!("c{c:02}")
}

/// Makes the querier's and the contacts' homes and starts their nodes.
fn start(ctx: &mut Ctx) -> Result<Vec<Dev>> {
    let mut devs = Vec::new();
    for at in 0..=CONTACTS {
        let device = if at == 0 {
            "querier".to_owned()
        } else {
            name(at - 1)
        };
        let account = Account::named(&[&device])?;
        let dir = ctx.fresh_dir(&format!("p9-{device}"))?;
        let (home, engine) = account.create(0, &dir)?;
        drop(engine);
        std::fs::write(
            home.config_path(),
            format!(
                "[contacts]\nrequests_per_minute = {CONTACT_REQUESTS_PER_MINUTE}\n\n\
                 [queries]\nrequests_per_minute = {QUERY_REQUESTS_PER_MINUTE}\n"
            ),
        )?;
        // A port the node picks: the card carries where it listens.
        let listen = "/ip4/127.0.0.1/tcp/0";
        let daemon = Daemon::start_logging(
            &ctx.launcher,
            &home,
            &dir.join("node.log"),
            Some(listen),
            "warn",
        )?;
        let status = daemon.get("/_hearth/status")?;
        let field = |key: &str| -> Result<String> {
            Ok(status[key]
                .as_str()
                .with_context(|| format!("a status without {key}"))?
                .to_owned())
        };
        devs.push(Dev {
            account: field("account_id")?,
            daemon,
        });
    }
    eprintln!("P9: {} nodes up", devs.len());
    Ok(devs)
}

/// A small deterministic mixer (splitmix64) for the readings.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Imports contact `c`'s readings and returns what 2026 sums to per month.
fn import(dev: &Dev, c: usize, seed: u64) -> Result<Expected> {
    let mut expected = Expected::new();
    let records: Vec<Value> = (0..RECORDS)
        .map(|i| {
            let h = mix(seed ^ ((c as u64) << 32) ^ i as u64);
            let year = 2025 + (h % 2);
            let month = 1 + (h >> 8) % 12;
            let kwh = (h >> 16) % 1000;
            if year == 2026 {
                let slot = expected.entry(month).or_default();
                slot.0 += kwh;
                slot.1 += 1;
            }
            json!({ "_id": format!("r{i:05}"), "year": year, "month": month,
                    "kwh": kwh, "meter": format!("m{}", i % 4) })
        })
        .collect();
    let reply = dev.daemon.send(
        "POST",
        &format!("/_hearth/import/{COLLECTION}"),
        Some(&Value::Array(records)),
    )?;
    ensure!(
        reply["imported"] == RECORDS,
        "the import wrote {} of {RECORDS} readings",
        reply["imported"]
    );
    Ok(expected)
}

/// The sums of several contacts' expectations.
fn sum_of(parts: &[Expected]) -> Expected {
    let mut total = Expected::new();
    for part in parts {
        for (month, (kwh, n)) in part {
            let slot = total.entry(*month).or_default();
            slot.0 += kwh;
            slot.1 += n;
        }
    }
    total
}

/// [`daemon::wait_for`] with this scenario's [`TIMEOUT`].
fn wait(what: &str, check: impl FnMut() -> Result<bool>) -> Result<()> {
    daemon::wait_for(what, TIMEOUT, check)
}

/// The state of the contact with account `account` on `dev`, if listed.
fn contact_state(dev: &Dev, account: &str) -> Result<Option<String>> {
    let list = dev.daemon.get("/_hearth/contacts")?;
    Ok(list
        .as_array()
        .context("contacts is not a list")?
        .iter()
        .find(|c| c["account_id"] == account)
        .and_then(|c| c["state"].as_str().map(str::to_owned)))
}

/// `contact` adds the querier's card, the querier accepts it as `name`.
fn befriend(querier: &Dev, contact: &Dev, name: &str) -> Result<()> {
    let card = querier.daemon.get("/_hearth/contacts/card")?;
    let card = card["card"].as_str().context("no card")?.to_owned();
    contact.daemon.send(
        "POST",
        "/_hearth/contacts",
        Some(&json!({ "card": card, "name": "Querier" })),
    )?;
    wait(&format!("{name}'s request on the querier"), || {
        Ok(contact_state(querier, &contact.account)?.is_some())
    })?;
    querier.daemon.send(
        "POST",
        &format!("/_hearth/contacts/{}/accept", contact.account),
        Some(&json!({ "name": name })),
    )?;
    wait(&format!("{name} established on both sides"), || {
        Ok(
            contact_state(querier, &contact.account)?.as_deref() == Some("established")
                && contact_state(contact, &querier.account)?.as_deref() == Some("established"),
        )
    })
}

fn exact_policy() -> Value {
    json!({ "queriers": ["Querier"], "aggregates": ["$count", "$sum"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
            "exact": true })
}

fn noisy_policy() -> Value {
    json!({ "queriers": ["Querier"], "aggregates": ["$count", "$sum"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
            "exact": false, "min_cohort": 2, "epsilon_per_query": 1.0 })
}

fn consent(dev: &Dev, policy: &Value) -> Result<()> {
    dev.daemon.send(
        "PUT",
        &format!("/_hearth/consent/{COLLECTION}"),
        Some(policy),
    )?;
    Ok(())
}

/// Question `k`: 2026's monthly sum and count, of the first `n` contacts
/// (all of them when `n` is `None`: the pull's local request).
fn question(k: usize, n: Option<usize>) -> Value {
    let mut q = json!({ "collection": COLLECTION,
        "selector": { "year": 2026, "kwh": { "$gte": -(k as i64) } },
        "group_by": ["month"],
        "aggregate": { "kwh": { "$sum": "kwh" }, "n": { "$count": true } } });
    if let Some(n) = n {
        q["scope"] = json!("contacts");
        q["contacts"] = json!((0..n).map(name).collect::<Vec<_>>());
        q["deadline_ms"] = json!(10_000);
    }
    q
}

/// One part (exact or secure sum) at one N: the cold question, then the
/// timed rounds, every answer checked by `check`.
struct Part {
    n: usize,
    cold: Duration,
    warm: Vec<Duration>,
    /// The querier's CPU time per warm question.
    querier_cpu_ms: f64,
    /// Each asked contact's CPU time per warm question (their mean).
    contact_cpu_ms: f64,
}

fn part(
    querier: &Dev,
    contacts: &[Dev],
    n: usize,
    rounds: usize,
    k: &mut usize,
    check: impl Fn(&Value) -> Result<()>,
) -> Result<Part> {
    let mut samples = Vec::new();
    let mut ticks = (0, 0);
    for round in 0..=rounds {
        if round == 1 {
            ticks = (cpu(std::slice::from_ref(querier))?, cpu(&contacts[..n])?);
        }
        *k += 1;
        let q = question(*k, Some(n));
        let asked = Instant::now();
        let answer = querier.daemon.send("POST", "/_hearth/query", Some(&q))?;
        samples.push(asked.elapsed());
        check(&answer).with_context(|| format!("N = {n}, question {k}: {answer}"))?;
    }
    let per_tick = 1e3 / procfs::ticks_per_second() as f64;
    let querier_ms = (cpu(std::slice::from_ref(querier))? - ticks.0) as f64 * per_tick;
    let contacts_ms = (cpu(&contacts[..n])? - ticks.1) as f64 * per_tick;
    let cold = samples.remove(0);
    Ok(Part {
        n,
        cold,
        warm: samples,
        querier_cpu_ms: querier_ms / rounds as f64,
        contact_cpu_ms: contacts_ms / (rounds * n) as f64,
    })
}

/// CPU time (user + system) of `devs`' processes so far, in clock ticks.
fn cpu(devs: &[Dev]) -> Result<u64> {
    devs.iter()
        .map(|d| Ok(procfs::cpu_ticks(d.daemon.pid())?))
        .sum()
}

/// One contact's own answer to the same questions, asked of its node with
/// `scope: local` (the aggregate alone, with the HTTP round trip).
fn local(contact: &Dev, rounds: usize, k: &mut usize, want: &Expected) -> Result<Vec<Duration>> {
    let mut samples = Vec::new();
    for _ in 0..rounds {
        *k += 1;
        let mut q = question(*k, None);
        q["scope"] = json!("local");
        let asked = Instant::now();
        let answer = contact.daemon.send("POST", "/_hearth/query", Some(&q))?;
        samples.push(asked.elapsed());
        check_groups(&answer, want)?;
    }
    Ok(samples)
}

fn answered(answer: &Value) -> usize {
    answer["completeness"]["answered"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Every one of the N answered exactly, and each month's figures are the
/// generated readings'.
fn check_exact(answer: &Value, n: usize, want: &Expected) -> Result<()> {
    ensure!(
        answered(answer) == n,
        "{} of {n} answered",
        answered(answer)
    );
    ensure!(answer["exact"] == true, "the answer is not exact");
    check_groups(answer, want)
}

fn check_groups(answer: &Value, want: &Expected) -> Result<()> {
    let groups = answer["groups"].as_array().context("no groups")?;
    let mut got = Expected::new();
    for g in groups {
        let month = g["key"]["month"]
            .as_u64()
            .context("a group without a month")?;
        let kwh = g["values"]["kwh"].as_f64().context("no kwh")?;
        let count = g["values"]["n"].as_u64().context("no n")?;
        got.insert(month, (kwh.round() as u64, count));
    }
    ensure!(&got == want, "groups {got:?}, expected {want:?}");
    Ok(())
}

/// Every one of the N answered, through the noisy secure sum.
fn check_noisy(answer: &Value, n: usize) -> Result<()> {
    ensure!(
        answered(answer) == n,
        "{} of {n} answered",
        answered(answer)
    );
    ensure!(answer["exact"] == false, "a noisy answer says exact");
    ensure!(
        answer["noise"]["accounts"] == n,
        "noise over {} accounts, not {n}",
        answer["noise"]["accounts"]
    );
    ensure!(
        answer["groups"].as_array().is_some_and(|g| g.len() == 12),
        "not 12 monthly groups"
    );
    Ok(())
}

/// The baseline: every record of `contacts` fetched at once, then
/// aggregated in one place; the time of both, the answer checked.
fn pull(contacts: &[Dev], k: usize, want: &Expected) -> Result<Duration> {
    let request = AggregateRequest::parse(&question(k, None))?;
    let started = Instant::now();
    let bodies: Vec<Result<String>> = std::thread::scope(|s| {
        let threads: Vec<_> = contacts
            .iter()
            .map(|dev| {
                s.spawn(move || -> Result<String> {
                    let mut response = dev
                        .daemon
                        .agent()
                        .get(dev.daemon.url(&format!("/_hearth/export/{COLLECTION}")))
                        .header("Authorization", &dev.daemon.auth())
                        .call()?;
                    ensure!(
                        response.status().is_success(),
                        "export: {}",
                        response.status()
                    );
                    Ok(response
                        .body_mut()
                        .with_config()
                        .limit(256 << 20)
                        .read_to_string()?)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a pulling thread panicked")))
            })
            .collect()
    });
    let mut records = Vec::with_capacity(contacts.len() * RECORDS);
    for body in bodies {
        for line in body?.lines().filter(|l| !l.is_empty()) {
            records.push(serde_json::from_str::<Value>(line)?);
        }
    }
    let result = aggregate(&request, &records)?.to_json();
    let took = started.elapsed();
    ensure!(
        records.len() == contacts.len() * RECORDS,
        "pulled {} records",
        records.len()
    );
    check_groups(&result, want)?;
    Ok(took)
}

fn report(
    setup: Duration,
    exact: &[Part],
    pulls: &[Vec<Duration>],
    noisy: &[Part],
    rounds: usize,
    alone: &[Duration],
) -> Result<Outcome> {
    let mut outcome = Outcome::new(
        "P9",
        "federated aggregate over N contacts (10k records each), exact and secure sum, vs pulling every record",
    );
    let summary = |s: &[Duration]| Summary::of(s).context("no samples");
    let wl = summary(alone)?;
    outcome.figure(
        "one contact's own local answer (scope local, HTTP) p50",
        wl.p50_us / 1e3,
        "ms",
    );
    let mut exact32 = None;
    for ((e, p), s) in exact.iter().zip(pulls).zip(noisy) {
        let n = e.n;
        let we = summary(&e.warm)?;
        let ws = summary(&s.warm)?;
        let wp = summary(p)?;
        outcome.figure(format!("N={n}: exact p50"), we.p50_us / 1e3, "ms");
        outcome.figure(format!("N={n}: exact p99"), we.p99_us / 1e3, "ms");
        outcome.figure(format!("N={n}: secure sum p50"), ws.p50_us / 1e3, "ms");
        outcome.figure(format!("N={n}: secure sum p99"), ws.p99_us / 1e3, "ms");
        outcome.figure(
            format!("N={n}: cold exact"),
            e.cold.as_secs_f64() * 1e3,
            "ms",
        );
        outcome.figure(
            format!("N={n}: cold secure sum"),
            s.cold.as_secs_f64() * 1e3,
            "ms",
        );
        outcome.figure(
            format!("N={n}: pull every record + aggregate p50 (baseline)"),
            wp.p50_us / 1e3,
            "ms",
        );
        outcome.figure(
            format!("N={n}: CPU per contact per question, exact"),
            e.contact_cpu_ms,
            "ms",
        );
        outcome.figure(
            format!("N={n}: CPU per contact per question, secure sum"),
            s.contact_cpu_ms,
            "ms",
        );
        outcome.figure(
            format!("N={n}: querier CPU per question, exact"),
            e.querier_cpu_ms,
            "ms",
        );
        outcome.figure(
            format!("N={n}: querier CPU per question, secure sum"),
            s.querier_cpu_ms,
            "ms",
        );
        let speedup = wp.p50_us / we.p50_us;
        outcome.figure(format!("N={n}: pull / exact (p50)"), speedup, "×");
        if n == CONTACTS {
            exact32 = Some((we, ws, e.cold, s.cold, speedup));
        }
    }
    let (we, ws, cold_e, cold_s, speedup) = exact32.context("no N = 32 part")?;
    outcome.at_most("N=32 exact p99", we.p99_us / 1e3, 20.0, "≤ 20 ms".into());
    outcome.at_most(
        "N=32 secure sum p99",
        ws.p99_us / 1e3,
        50.0,
        "≤ 50 ms".into(),
    );
    let cold = cold_e.max(cold_s).as_secs_f64() * 1e3;
    outcome.at_most(
        "N=32 cold (the slower part)",
        cold,
        100.0,
        "≤ 100 ms".into(),
    );
    outcome.at_least(
        "N=32 pull every record / exact federated",
        speedup,
        10.0,
        "≥ 10×".into(),
    );
    outcome.note(format!(
        "{rounds} timed questions per N and part after a cold one, {PULL_ROUNDS} pulls per N; \
         33 real `hearth up` processes on loopback TCP; setup took {:.0} s",
        setup.as_secs_f64()
    ));
    outcome.note(
        "a contact with nothing shared keeps no sync session, so the first question dials; \
         the connection stays open for `[net] idle_timeout_secs` after it"
            .to_owned(),
    );
    Ok(outcome)
}
