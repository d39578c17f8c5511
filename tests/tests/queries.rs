//! Federated queries with real `hearth` processes on loopback: a querier
//! and four contacts holding `energy.readings`. Alice and Bob answer the
//! querier exactly, Carol through a noisy secure sum (two aggregator
//! accounts among those that answered), Dave has no policy. The test
//! checks who answered and who declined and why, the exact sums to the
//! record, the noisy ones to within their noise, Carol's cohort refusal
//! charging nothing, her budget holding across a restart, a repeated
//! question costing nothing and giving the same numbers, and every
//! contact's audit log.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hearth_tests::device::Device;
use serde_json::{Value, json};

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

/// Makes `a` and `b` established contacts: `b` adds `a`'s card under
/// `a_name`, `a` accepts the request under `b_name`.
fn befriend(a: &Device, a_name: &str, b: &Device, b_name: &str, b_card_name: &str) {
    let card = a.home.run(&["contact", "card"]).first_line();
    b.home
        .run(&["contact", "add", &card, "--name", a_name])
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

fn put(device: &Device, id: &str, year: u32, month: u32, kwh: u32) {
    let body = json!({ "year": year, "month": month, "kwh": kwh }).to_string();
    device
        .home
        .run(&["put", "energy.readings", &body, "--id", id])
        .ok();
}

fn exact_policy() -> Value {
    json!({ "queriers": ["Querier"], "aggregates": ["$count", "$sum", "$avg"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
            "exact": true })
}

fn noisy_policy(min_cohort: u32) -> Value {
    json!({ "queriers": ["Querier"], "aggregates": ["$count", "$sum", "$avg"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
            "exact": false, "min_cohort": min_cohort, "epsilon_per_query": 1.0,
            "budget": { "per_querier_per_day": 1.5, "per_day": 8 } })
}

fn consent(device: &Device, policy: &Value) -> Value {
    device
        .home
        .run(&[
            "consent",
            "set",
            "energy.readings",
            &policy.to_string(),
            "--json",
        ])
        .json()
}

/// The monthly heating question, optionally to named contacts only.
fn heating(year: u32, contacts: Option<&[&str]>) -> Value {
    let mut q = json!({ "collection": "energy.readings", "selector": { "year": year },
        "group_by": ["month"], "aggregate": { "kwh": { "$sum": "kwh" }, "n": { "$count": true } },
        "scope": "contacts", "deadline_ms": 8000 });
    if let Some(names) = contacts {
        q["contacts"] = json!(names);
    }
    q
}

fn ask(querier: &Device, q: &Value) -> Value {
    querier
        .home
        .run(&["query", &q.to_string(), "--json"])
        .json()
}

fn names(result: &Value, key: &str) -> BTreeSet<String> {
    result["completeness"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no completeness.{key} in {result}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn declined(result: &Value) -> BTreeMap<String, String> {
    result["completeness"]["declined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["contact"].as_str().unwrap().to_owned(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Each group's values by month.
fn by_month(result: &Value) -> BTreeMap<u64, Value> {
    result["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"]["month"].as_u64().unwrap(), g["values"].clone()))
        .collect()
}

/// Each group's 95 % intervals by month.
fn intervals(result: &Value) -> BTreeMap<u64, Value> {
    result["noise"]["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"]["month"].as_u64().unwrap(), g["values"].clone()))
        .collect()
}

/// The audit log of `device`, oldest first.
fn audit(device: &Device) -> Vec<Value> {
    let mut records = device
        .home
        .run(&["audit", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone();
    records.reverse();
    records
}

/// `(decision, reason up to its first colon, ε)` of every audit record.
fn decisions(records: &[Value]) -> Vec<(String, String, f64)> {
    records
        .iter()
        .map(|r| {
            let reason = r["reason"].as_str().unwrap();
            (
                r["decision"].as_str().unwrap().to_owned(),
                reason.split(':').next().unwrap().to_owned(),
                r["epsilon"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Asks `q` until Carol's device is reachable again after her restart
/// (the querier redials her at her card's address); the result and how
/// many times it was asked.
fn ask_once_reachable(querier: &Device, q: &Value) -> (Value, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = ask(querier, q);
        let lost = names(&result, "unreachable").contains("C")
            || names(&result, "timed_out").contains("C");
        if !lost {
            return (result, attempts);
        }
        assert!(
            Instant::now() < deadline,
            "Carol never became reachable again: {result}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn contacts_answer_by_their_consent_with_noise_cohort_budget_and_audit() {
    let querier = Device::new("quentin");
    let alice = Device::new("alice");
    let bob = Device::new("bob");
    let carol = Device::new("carol");
    let dave = Device::new("dave");
    let _dq = querier.up();
    let _da = alice.up();
    let _db = bob.up();
    let dc = carol.up();
    let _dd = dave.up();
    for (device, name, card_name) in [
        (&alice, "A", "alice"),
        (&bob, "B", "bob"),
        (&carol, "C", "carol"),
        (&dave, "D", "dave"),
    ] {
        befriend(&querier, "Querier", device, name, card_name);
    }

    // 2026 readings by month; Carol has none for March. One 2025 reading
    // each, for a second, distinct question.
    let readings: [Readings<'_>; 4] = [
        (&alice, "a", &[(1, 100), (2, 150), (3, 90)]),
        (&bob, "b", &[(1, 200), (2, 120), (3, 60)]),
        (&carol, "c", &[(1, 300), (2, 310)]),
        (&dave, "d", &[(1, 50), (2, 50), (3, 50)]),
    ];
    for (device, prefix, months) in readings {
        for (month, kwh) in months {
            put(device, &format!("{prefix}{month}"), 2026, *month, *kwh);
        }
        put(device, &format!("{prefix}-old"), 2025, 1, 10);
    }
    let kwh_of = |who: &str, month: u64| -> f64 {
        readings
            .iter()
            .filter(|(_, p, _)| *p == who)
            .flat_map(|(_, _, m)| m.iter())
            .filter(|(m, _)| u64::from(*m) == month)
            .map(|(_, k)| f64::from(*k))
            .sum()
    };
    let has = |who: &str, month: u64| kwh_of(who, month) > 0.0;

    let stored = consent(&alice, &exact_policy());
    assert_eq!(stored["collection"], "energy.readings", "{stored}");
    assert_eq!(stored["policy"]["exact"], true, "{stored}");
    consent(&bob, &exact_policy());
    consent(&carol, &noisy_policy(3));

    // Carol asks for a cohort of 3: with her the only noisy account, she
    // is dismissed, and nothing is charged for it.
    let named = ["A", "B", "C"];
    let result = ask(&querier, &heating(2026, Some(&named)));
    assert_eq!(
        declined(&result).get("C").map(String::as_str),
        Some("cohort"),
        "{result}"
    );
    assert_eq!(names(&result, "answered"), set(&["A", "B"]), "{result}");
    assert_eq!(result["exact"], true, "{result}");

    // Cohort 1: Carol contributes, noised once through the secure sum.
    consent(&carol, &noisy_policy(1));
    let on_carol = carol.home.run(&["consent", "list", "--json"]).json();
    assert_eq!(
        on_carol.as_array().unwrap().len(),
        1,
        "replaced: {on_carol}"
    );
    assert_eq!(on_carol[0]["policy"]["min_cohort"], 1, "{on_carol}");
    let first = ask(&querier, &heating(2026, None));
    assert_eq!(
        declined(&first),
        BTreeMap::from([("D".to_owned(), "no-policy".to_owned())]),
        "{first}"
    );
    assert_eq!(names(&first, "answered"), set(&["A", "B", "C"]), "{first}");
    assert_eq!(
        names(&first, "asked"),
        set(&["A", "B", "C", "D"]),
        "{first}"
    );
    assert_eq!(first["exact"], false, "{first}");
    assert_eq!(first["noise"]["epsilon"], 1.0, "{first}");
    assert_eq!(first["noise"]["accounts"], 1, "{first}");
    let values = by_month(&first);
    let ranges = intervals(&first);
    assert_eq!(
        values.keys().copied().collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>(),
        "every cell of Carol's grid is released: {first}"
    );
    let mut noised = 0;
    for (month, v) in &values {
        let truth_kwh = kwh_of("a", *month) + kwh_of("b", *month) + kwh_of("c", *month);
        let truth_n = ["a", "b", "c"].iter().filter(|w| has(w, *month)).count() as f64;
        for (name, truth) in [("kwh", truth_kwh), ("n", truth_n)] {
            let got = v[name].as_f64().unwrap();
            let hi = ranges[month][name][1].as_f64().unwrap();
            // Ten times the 95 % half-width: missed with probability ~e^-30.
            let spread = (hi - got).max(0.0);
            assert!(
                (got - truth).abs() <= 10.0 * spread,
                "month {month} {name}: {got} is not {truth} plus noise of ±{spread}: {first}"
            );
            if name == "kwh" && got != truth {
                noised += 1;
            }
        }
    }
    assert!(noised > 0, "no noise was added: {first}");
    let march = values[&3]["kwh"].as_f64().unwrap();
    assert!(
        (march - 150.0).abs() <= 10.0 * (ranges[&3]["kwh"][1].as_f64().unwrap() - march),
        "March, where Carol has nothing, is Alice's and Bob's 150 plus noise: {first}"
    );

    // Alice and Bob alone: exact to the record.
    let exact = ask(&querier, &heating(2026, Some(&["A", "B"])));
    assert_eq!(exact["exact"], true, "{exact}");
    assert!(exact.get("noise").is_none(), "{exact}");
    assert_eq!(names(&exact, "answered"), set(&["A", "B"]), "{exact}");
    let values = by_month(&exact);
    assert_eq!(values.len(), 3, "{exact}");
    for (month, v) in &values {
        let sum = kwh_of("a", *month) + kwh_of("b", *month);
        assert_eq!(v["kwh"].as_f64(), Some(sum), "month {month}: {exact}");
        assert_eq!(v["n"], 2, "month {month}: {exact}");
    }

    // A different question: Carol's ε for today is spent (1 of 1.5, and it
    // costs 1), so she declines; Alice and Bob still answer.
    let other = ask(&querier, &heating(2025, None));
    assert_eq!(
        declined(&other).get("C").map(String::as_str),
        Some("budget"),
        "{other}"
    );
    assert_eq!(names(&other, "answered"), set(&["A", "B"]), "{other}");
    assert_eq!(by_month(&other)[&1]["kwh"].as_f64(), Some(20.0), "{other}");

    // The ledger is durable: after a restart Carol still declines.
    dc.stop().unwrap();
    let _dc = carol.up();
    let (again, attempts) = ask_once_reachable(&querier, &heating(2025, None));
    assert_eq!(
        declined(&again).get("C").map(String::as_str),
        Some("budget"),
        "after Carol's restart: {again}"
    );

    // The first question again: free, and the same numbers.
    let repeat = ask(&querier, &heating(2026, None));
    assert_eq!(
        names(&repeat, "answered"),
        set(&["A", "B", "C"]),
        "{repeat}"
    );
    assert_eq!(
        repeat["groups"], first["groups"],
        "a repeat gets the same numbers"
    );

    // The human form says the same.
    let text = querier
        .home
        .run(&["query", &heating(2026, None).to_string()])
        .ok()
        .to_owned();
    assert!(text.contains("exact        no (noisy)"), "{text}");
    assert!(text.contains("declined     D (no-policy)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("month=3  ")), "{text}");

    // Every contact's audit log, oldest first.
    let on_carol = decisions(&audit(&carol));
    let expected = [
        ("declined", "cohort", 0.0),
        ("answered", "contributed", 1.0),
        ("declined", "budget", 0.0),
        ("declined", "budget", 0.0),
        ("answered", "repeat", 0.0),
        ("answered", "repeat", 0.0),
    ];
    let on_carol_contributions: Vec<_> = on_carol
        .iter()
        .filter(|(_, reason, _)| reason != "aggregated")
        .cloned()
        .collect();
    assert_eq!(
        on_carol_contributions,
        expected
            .iter()
            .map(|(d, r, e)| (d.to_string(), r.to_string(), *e))
            .collect::<Vec<_>>(),
        "Carol's audit"
    );
    let on_dave = audit(&dave);
    // Every question to all contacts: two before the restart, the attempts
    // after it, the repeat and its human form.
    assert_eq!(on_dave.len(), 4 + attempts, "{on_dave:?}");
    for r in &on_dave {
        assert_eq!(r["decision"], "declined", "{r}");
        assert!(
            r["reason"].as_str().unwrap().starts_with("no-policy"),
            "{r}"
        );
        assert_eq!(r["collection"], "energy.readings", "{r}");
    }
    let mut aggregated = on_carol.len() - on_carol_contributions.len();
    for device in [&alice, &bob] {
        let records = decisions(&audit(device));
        assert!(
            records.iter().all(|(d, r, e)| d == "answered"
                && (r == "exact" || r == "aggregated")
                && *e == 0.0),
            "{records:?}"
        );
        assert_eq!(
            records.iter().filter(|(_, r, _)| r == "exact").count(),
            6 + attempts,
            "{records:?}"
        );
        aggregated += records.iter().filter(|(_, r, _)| r == "aggregated").count();
    }
    assert_eq!(
        aggregated, 6,
        "two aggregators released each of the three noisy answers"
    );
    let text = carol.home.run(&["audit"]).ok().to_owned();
    assert!(
        text.lines()
            .any(|l| l.contains("Querier") && l.contains("declined") && l.contains("budget")),
        "{text}"
    );
}

/// A device, the prefix of its record ids, and its 2026 (month, kWh).
type Readings<'a> = (&'a Device, &'a str, &'a [(u32, u32)]);

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn bad_queries_and_policies_get_clear_errors() {
    let alice = Device::new("alice");
    let run = alice.home.run(&["query", "not json"]);
    assert!(run.err().contains("bad JSON in the query"), "{}", run.err());
    let run = alice.home.run(&["query", "[1]"]);
    assert!(run.err().contains("must be a JSON object"), "{}", run.err());
    let run = alice.home.run(&[
        "query",
        r#"{"collection": "energy.readings", "aggregate": {"n": {"$count": true}}, "scope": "world"}"#,
    ]);
    assert!(run.err().contains("scope"), "{}", run.err());
    // Without the daemon, only a local query runs.
    let run = alice.home.run(&[
        "query",
        r#"{"collection": "energy.readings", "aggregate": {"n": {"$count": true}}, "scope": "contacts"}"#,
    ]);
    assert!(run.err().contains("hearth up"), "{}", run.err());
    put(&alice, "a1", 2026, 1, 7);
    let local = alice
        .home
        .run(&[
            "query",
            r#"{"collection": "energy.readings", "aggregate": {"n": {"$count": true}, "s": {"$sum": "kwh"}}}"#,
            "--json",
        ])
        .json();
    assert_eq!(
        local["groups"][0]["values"]["s"].as_f64(),
        Some(7.0),
        "{local}"
    );
    assert_eq!(local["exact"], true, "{local}");

    let run = alice.home.run(&[
        "consent",
        "set",
        "energy.readings",
        r#"{"queriers": "contacts", "aggregates": ["$sum"], "bogus": 1}"#,
    ]);
    assert!(run.err().contains("bad policy"), "{}", run.err());
    let run = alice.home.run(&[
        "consent",
        "set",
        "energy.readings",
        r#"{"queriers": ["Nobody"], "aggregates": ["$sum"]}"#,
    ]);
    assert!(run.err().contains("Nobody"), "{}", run.err());
    let run = alice.home.run(&[
        "consent",
        "set",
        "hearth.contacts",
        r#"{"queriers": "contacts", "aggregates": ["$sum"]}"#,
    ]);
    assert!(run.err().contains("kept by hearth"), "{}", run.err());
    let run = alice.home.run(&["consent", "remove", "energy.readings"]);
    assert!(run.err().contains("no consent policy"), "{}", run.err());
    let stored = alice.home.run(&[
        "consent",
        "set",
        "energy.readings",
        r#"{"queriers": "contacts", "aggregates": ["$sum"], "fields": {"kwh": {"min": 0, "max": 10}}}"#,
    ]);
    assert!(
        stored
            .ok()
            .starts_with("energy.readings  for all contacts  noisy"),
        "{}",
        stored.ok()
    );
    let run = alice.home.run(&["consent", "remove", "energy.readings"]);
    assert!(
        run.ok().contains("removed 1 consent policy"),
        "{}",
        run.ok()
    );
    let run = alice.home.run(&["audit"]);
    assert!(run.ok().contains("no query was answered"), "{}", run.ok());
}
