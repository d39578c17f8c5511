use std::collections::{BTreeMap, VecDeque};

use hearth_crypto::identity::DeviceId;
use rand_core::OsRng;
use serde_json::{Value, json};

use super::*;
use crate::collection::PutMode;
use crate::node::contacts::tests::account;
use crate::node::{Config, Node, Output, Outputs};

/// Accounts that answer queries, driven by hand: every output is
/// performed at once, a `Query` carried to its device and its reply back.
struct Net {
    nodes: Vec<Node>,
    /// Devices that drop every request (a node that is down).
    down: Vec<DeviceId>,
    answers: BTreeMap<String, Value>,
    /// Query exchanges held back instead of carried (to time them out).
    held: Vec<(usize, u64)>,
    rng: OsRng,
    now: Millis,
}

const QUERIER: usize = 0;

fn noisy_policy(min_cohort: u32) -> Value {
    json!({ "queriers": ["Querier"], "aggregates": ["$count", "$sum", "$avg"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
            "exact": false, "min_cohort": min_cohort, "epsilon_per_query": 1.0,
            "budget": { "per_querier_per_day": 1.5, "per_day": 8.0 } })
}

fn exact_policy() -> Value {
    json!({ "queriers": ["Querier"], "aggregates": ["$count", "$sum", "$avg", "$min", "$max"],
            "fields": { "kwh": { "min": 0, "max": 1000 } },
            "group_by": { "month": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
            "exact": true })
}

fn heating(contacts: Option<&[&str]>, selector: Value) -> Value {
    let mut q = json!({ "collection": "energy.readings", "selector": selector,
        "group_by": ["month"], "aggregate": { "kwh": { "$sum": "kwh" }, "n": { "$count": true } },
        "scope": "contacts", "deadline_ms": 4000 });
    if let Some(names) = contacts {
        q["contacts"] = json!(names);
    }
    q
}

impl Net {
    /// A querier and `names.len()` contacts, each established both ways.
    fn new(names: &[&str]) -> Net {
        let mut nodes = vec![account(1, "querier", Config::default())];
        for (i, name) in names.iter().enumerate() {
            nodes.push(account(
                u8::try_from(i).unwrap() + 2,
                name,
                Config::default(),
            ));
        }
        let mut net = Net {
            nodes,
            down: Vec::new(),
            answers: BTreeMap::new(),
            held: Vec::new(),
            rng: OsRng,
            now: 1_780_000_000_000,
        };
        for (i, name) in names.iter().enumerate() {
            net.befriend(QUERIER, i + 1, name, "Querier");
        }
        net
    }

    fn befriend(&mut self, a: usize, b: usize, a_calls_b: &str, b_calls_a: &str) {
        let card_b = self.nodes[b].card().unwrap();
        let card_a = self.nodes[a].card().unwrap();
        let (_, out) = self.nodes[a].add_contact(0, card_b, a_calls_b).unwrap();
        self.shares(a, out);
        let (_, out) = self.nodes[b].add_contact(0, card_a, b_calls_a).unwrap();
        self.shares(b, out);
    }

    /// Carries contact-card deliveries (the share protocol) at once.
    fn shares(&mut self, from: usize, out: Outputs) {
        for o in out.items {
            if let Output::Deliver { peer, frame, .. } = o {
                let to = self.index(peer);
                let sender = self.nodes[from].id();
                let (_, bytes, more) = self.nodes[to].share_request(0, sender, &frame);
                self.shares(to, more);
                let (_, more) = self.nodes[from].share_reply(0, peer, Some(&bytes));
                self.shares(from, more);
            }
        }
    }

    fn index(&self, device: DeviceId) -> usize {
        self.nodes.iter().position(|n| n.id() == device).unwrap()
    }

    fn put(&mut self, at: usize, id: &str, month: u32, kwh: u64) {
        let body = json!({ "year": 2026, "month": month, "kwh": kwh });
        let now = self.now;
        self.nodes[at]
            .put(
                now,
                &mut self.rng,
                "energy.readings",
                Some(id.into()),
                body,
                PutMode::Upsert,
            )
            .unwrap();
    }

    fn consent(&mut self, at: usize, policy: Value) {
        let now = self.now;
        self.nodes[at]
            .set_consent(now, "energy.readings", &policy)
            .unwrap();
    }

    /// Performs `out` of node `from`: queries are carried (their outputs in
    /// turn), answers kept.
    fn perform(&mut self, from: usize, out: Outputs) {
        let mut queue: VecDeque<(usize, Output)> =
            out.items.into_iter().map(|o| (from, o)).collect();
        while let Some((at, output)) = queue.pop_front() {
            match output {
                Output::Query {
                    exchange,
                    peer,
                    frame,
                    ..
                } => {
                    if self.down.contains(&peer) {
                        self.held.push((at, exchange));
                        continue;
                    }
                    let to = self.index(peer);
                    let sender = self.nodes[at].id();
                    let now = self.now;
                    let (bytes, more) =
                        self.nodes[to].query_request(now, &mut self.rng, sender, &frame);
                    queue.extend(more.items.into_iter().map(|o| (to, o)));
                    let more = self.nodes[at].query_reply(now, exchange, Some(&bytes));
                    queue.extend(more.items.into_iter().map(|o| (at, o)));
                }
                Output::Answered { query, result } => {
                    self.answers.insert(query, result);
                }
                _ => {}
            }
        }
    }

    fn query(&mut self, body: Value) -> Value {
        let now = self.now;
        let (id, out) = self.nodes[QUERIER]
            .query(now, &mut self.rng, &body)
            .unwrap();
        self.perform(QUERIER, out);
        if !self.answers.contains_key(&id) {
            // Someone is down: let the deadline pass.
            self.now += 5_000;
            let now = self.now;
            let out = self.nodes[QUERIER].handle(now, &mut self.rng, crate::node::Input::Tick);
            self.perform(QUERIER, out);
            for _ in 0..3 {
                let out = self.nodes[QUERIER].handle(now, &mut self.rng, crate::node::Input::Tick);
                self.perform(QUERIER, out);
            }
        }
        self.answers
            .remove(&id)
            .expect("the query has its answer by its deadline")
    }
}

fn declined(result: &Value) -> Vec<(String, String)> {
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

fn names(result: &Value, key: &str) -> Vec<String> {
    result["completeness"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn group(result: &Value, month: u64) -> &Value {
    result["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"]["month"] == month)
        .unwrap_or_else(|| panic!("no group for month {month}: {result}"))
}

/// Four contacts: A and B exact, C noisy, D without a policy.
fn four() -> Net {
    let mut net = Net::new(&["A", "B", "C", "D"]);
    for (at, kwh) in [(1, 100), (2, 250), (3, 400), (4, 700)] {
        net.put(at, "jan", 1, kwh);
        net.put(at, "feb", 2, kwh + 10);
    }
    net.put(1, "jan-2", 1, 5);
    net.consent(1, exact_policy());
    net.consent(2, exact_policy());
    net
}

#[test]
fn exact_contacts_sum_exactly_and_a_contact_without_policy_is_declined() {
    let mut net = four();
    let result = net.query(heating(Some(&["A", "B", "D"]), json!({ "year": 2026 })));
    assert_eq!(result["exact"], true, "{result}");
    assert_eq!(declined(&result), vec![("D".into(), "no-policy".into())]);
    assert_eq!(names(&result, "answered"), ["A", "B"]);
    // January: A's 100 + 5, B's 250.
    assert_eq!(group(&result, 1)["values"]["kwh"], json!(355));
    assert_eq!(group(&result, 1)["values"]["n"], json!(3));
    assert_eq!(group(&result, 2)["values"]["kwh"], json!(110 + 260));
    // Each contact's audit log has the decision.
    let a = net.nodes[1].audit();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].entry.decision, audit::Decision::Answered);
    assert_eq!(result["query"], a[0].entry.query.as_str(), "the ids match");
    let d = net.nodes[4].audit();
    assert_eq!(d[0].entry.decision, audit::Decision::Declined);
    assert!(
        d[0].entry.reason.starts_with("no-policy"),
        "{:?}",
        d[0].entry
    );
    audit::verify(&a).unwrap();
}

#[test]
fn a_noisy_contact_is_summed_through_two_aggregators_and_charged_once_a_day() {
    let mut net = four();
    net.consent(3, noisy_policy(1));
    let query = heating(None, json!({ "year": 2026 }));
    let result = net.query(query.clone());
    assert_eq!(result["exact"], false, "{result}");
    assert_eq!(names(&result, "answered"), ["A", "B", "C"], "{result}");
    assert_eq!(declined(&result), vec![("D".into(), "no-policy".into())]);
    assert!(result["noise"].is_object(), "{result}");
    // The noisy part hides C's 400 in January under discrete Laplace noise
    // of scale 1000 × 12 (the clamp bound, ε split over the 12 months C
    // can touch): beyond 20 scales has probability e⁻²⁰.
    let jan = group(&result, 1)["values"]["kwh"].as_f64().unwrap();
    assert!((jan - 755.0).abs() < 20.0 * 12_000.0, "{jan}");
    // C spent ε 1 and the aggregators kept a seed; the same query again
    // costs nothing and gets the very same numbers.
    let spent = |net: &Net| {
        net.nodes[3]
            .ledger(net.now)
            .spent("energy.readings", budget::day_of(net.now), None)
    };
    assert_eq!(spent(&net), 1.0);
    let again = net.query(query);
    assert_eq!(again["groups"], result["groups"]);
    assert_eq!(spent(&net), 1.0);
    // A different question is past C's 1.5 for the day.
    let other = net.query(heating(None, json!({ "year": { "$gte": 2026 } })));
    assert!(
        declined(&other).contains(&("C".into(), "budget".into())),
        "{other}"
    );
    // C's audit: contributed, repeat, declined.
    let log = net.nodes[3].audit();
    let reasons: Vec<&str> = log.iter().rev().map(|r| r.entry.reason.as_str()).collect();
    assert_eq!(reasons[..2], ["contributed", "repeat"], "{reasons:?}");
    assert!(reasons[2].starts_with("budget"), "{reasons:?}");
    assert_eq!(log.iter().map(|r| r.entry.epsilon).sum::<f64>(), 1.0);
}

#[test]
fn below_the_cohort_the_noisy_part_is_refused_and_nothing_is_charged() {
    let mut net = four();
    net.consent(3, noisy_policy(3));
    let result = net.query(heating(None, json!({ "year": 2026 })));
    assert!(
        declined(&result).contains(&("C".into(), "cohort".into())),
        "{result}"
    );
    assert_eq!(
        result["exact"], true,
        "only the exact part is answered: {result}"
    );
    assert_eq!(
        net.nodes[3]
            .ledger(net.now)
            .spent("energy.readings", budget::day_of(net.now), None),
        0.0
    );
    let log = net.nodes[3].audit();
    assert!(
        log[0].entry.reason.starts_with("cohort"),
        "{:?}",
        log[0].entry
    );
}

#[test]
fn an_unreachable_contact_and_a_silent_one_are_reported_by_the_deadline() {
    let mut net = four();
    let c = net.nodes[3].id();
    net.down.push(c);
    let result = net.query(heating(Some(&["A", "C"]), json!({})));
    assert_eq!(names(&result, "answered"), ["A"]);
    assert_eq!(names(&result, "timed_out"), ["C"], "{result}");
    // A reply that comes after the deadline changes nothing.
    let (at, exchange) = net.held.pop().unwrap();
    let out = net.nodes[at].query_reply(net.now, exchange, None);
    assert!(out.items.is_empty());
}

#[test]
fn hostile_requests_are_refused_and_audited() {
    let mut net = four();
    let q = net.nodes[QUERIER].id();
    let now = net.now;
    let a = &mut net.nodes[1];
    let refused = |bytes: &[u8]| match Reply::decode(bytes, usize::MAX).unwrap() {
        Reply::Refused { reason } => reason,
        other => panic!("not refused: {other:?}"),
    };
    // Garbage.
    let (bytes, _) = a.query_request(now, &mut net.rng, q, b"\x01garbage");
    assert!(refused(&bytes).contains("does not decode"));
    // A stranger.
    let stranger = hearth_crypto::identity::DeviceKey::from_bytes(&[99; 32]).id();
    let ask = Request::Ask {
        id: "x".into(),
        canonical: "{}".into(),
    }
    .encode();
    let (bytes, _) = a.query_request(now, &mut net.rng, stranger, &ask);
    assert!(refused(&bytes).contains("established contacts"));
    // A query naming a field outside the policy, and a regex bomb.
    for (n, canonical) in [
        json!({ "collection": "energy.readings", "aggregate": { "s": { "$sum": "salary" } } }),
        json!({ "collection": "energy.readings", "selector": { "name": { "$regex": "(a+)+$" } },
                "aggregate": { "n": { "$count": true } } }),
    ]
    .iter()
    .enumerate()
    {
        let ask = Request::Ask {
            id: format!("f{n}"),
            canonical: canonical.to_string(),
        }
        .encode();
        let (bytes, _) = a.query_request(now, &mut net.rng, q, &ask);
        match Reply::decode(&bytes, usize::MAX).unwrap() {
            Reply::Declined { reason, .. } => assert_eq!(reason, "policy"),
            // The exact policy does not restrict operators; the regex
            // engine runs in linear time, so the bomb is just a query.
            Reply::Exact { .. } if n == 1 => {}
            other => panic!("{canonical}: {other:?}"),
        }
    }
    // A replay of the same step.
    let ask = Request::Ask {
        id: "f0".into(),
        canonical: "{}".into(),
    }
    .encode();
    let (bytes, _) = a.query_request(now, &mut net.rng, q, &ask);
    assert!(refused(&bytes).contains("repeat"));
    // A flood: past the limit a minute, refused; B still answers.
    let limit = Config::default().queries.requests_per_minute;
    let mut last = String::new();
    for n in 0..limit {
        let ask = Request::Ask {
            id: format!("flood{n}"),
            canonical: "{}".into(),
        }
        .encode();
        let (bytes, _) = a.query_request(now, &mut net.rng, q, &ask);
        if let Ok(Reply::Refused { reason }) = Reply::decode(&bytes, usize::MAX) {
            last = reason;
        }
    }
    assert!(last.contains("too many requests"), "{last}");
    let result = net.query(heating(Some(&["A", "B"]), json!({})));
    assert_eq!(names(&result, "answered"), ["B"], "{result}");
    assert_eq!(declined(&result), vec![("A".into(), "rate".into())]);
    // Every decision is in A's chain, and the chain holds.
    let log = net.nodes[1].audit();
    assert!(
        log.iter()
            .any(|r| r.entry.decision == audit::Decision::Refused)
    );
    let mut chain = log.clone();
    chain.sort_by_key(|r| r.seq);
    audit::verify(&chain).unwrap();
}

#[test]
fn a_policy_with_unknown_fields_or_queriers_is_refused() {
    let mut net = four();
    let now = net.now;
    let mut bad = exact_policy();
    bad["exactly"] = json!(true);
    assert!(
        net.nodes[1]
            .set_consent(now, "energy.readings", &bad)
            .is_err()
    );
    let mut stranger = exact_policy();
    stranger["queriers"] = json!(["nobody"]);
    let err = net.nodes[1]
        .set_consent(now, "energy.readings", &stranger)
        .unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
    assert!(
        net.nodes[1]
            .set_consent(now, "hearth.audit", &exact_policy())
            .is_err()
    );
    let (n, _) = net.nodes[1].remove_consent(now, "energy.readings").unwrap();
    assert_eq!(n, 1);
    assert!(net.nodes[1].remove_consent(now, "energy.readings").is_err());
}

#[test]
fn a_devices_query_counts_each_record_once_across_the_accounts_devices() {
    use hearth_crypto::identity::DeviceKey;
    use hearth_crypto::membership::Log;
    let laptop = DeviceKey::from_bytes(&[40; 32]);
    let phone = DeviceKey::from_bytes(&[41; 32]);
    let mut log = Log::genesis(&laptop, "laptop", 0);
    log.add_device(&laptop, phone.id(), "phone", 1).unwrap();
    let mut net = Net::new(&[]);
    net.nodes = vec![
        Node::new(laptop, "laptop", log.clone(), Config::default()),
        Node::new(phone, "phone", log, Config::default()),
    ];
    net.put(0, "a", 1, 10);
    net.put(0, "shared", 1, 20);
    net.put(1, "shared", 1, 20);
    net.put(1, "b", 2, 30);
    let mut q = heating(None, json!({}));
    q["scope"] = json!("devices");
    let result = net.query(q);
    assert_eq!(group(&result, 1)["values"]["kwh"], json!(30), "{result}");
    assert_eq!(group(&result, 1)["values"]["n"], json!(2));
    assert_eq!(group(&result, 2)["values"]["kwh"], json!(30));
    assert_eq!(names(&result, "answered"), ["phone"]);
    // The phone's audit has the query; a contact could not have asked it.
    assert_eq!(net.nodes[1].audit()[0].entry.scope, "devices");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Exact answers merge to the single-node aggregate over the union
        /// of the records, whatever order they arrive in.
        #[test]
        fn the_order_answers_arrive_in_never_changes_an_exact_result(
            kwh in proptest::collection::vec((1u32..=12, 0u64..5000), 3..24),
            order in Just((0..3).collect::<Vec<usize>>()).prop_shuffle(),
        ) {
            let mut net = Net::new(&["A", "B", "C"]);
            let mut union = Vec::new();
            for (n, (month, k)) in kwh.iter().enumerate() {
                let at = n % 3 + 1;
                net.put(at, &format!("r{n}"), *month, *k);
                union.push(json!({ "_id": format!("r{n}"), "year": 2026, "month": month, "kwh": k }));
            }
            for at in 1..=3 {
                net.consent(at, exact_policy());
            }
            let body = heating(None, json!({ "year": 2026 }));
            let now = net.now;
            let (id, out) = net.nodes[QUERIER].query(now, &mut net.rng, &body).unwrap();
            let asks: Vec<Output> = out.items.into_iter().filter(|o| matches!(o, Output::Query { .. })).collect();
            prop_assert_eq!(asks.len(), 3);
            let mut asks: Vec<Option<Output>> = asks.into_iter().map(Some).collect();
            for i in order {
                let one = Outputs { items: vec![asks[i].take().unwrap()] };
                net.perform(QUERIER, one);
            }
            let result = net.answers.remove(&id).unwrap();
            let q = FederatedQuery::parse(&body).unwrap();
            let expected = query::aggregate(&q.request, union.iter()).unwrap();
            let expected = answer::assemble(&q.request, Some(&expected), &[]);
            prop_assert_eq!(&result["groups"], &expected["groups"]);
        }

        /// However many distinct queries a querier asks, a contact never
        /// spends more ε in a day than its policy allows.
        #[test]
        fn the_epsilon_charged_never_exceeds_the_policy(
            epsilon in 0.1f64..2.0, per_querier in 0.5f64..5.0, asks in 1usize..8,
        ) {
            let mut net = four();
            let mut policy = noisy_policy(1);
            policy["epsilon_per_query"] = json!(epsilon);
            policy["budget"]["per_querier_per_day"] = json!(per_querier);
            net.consent(3, policy);
            for n in 0..asks {
                net.query(heating(Some(&["A", "C"]), json!({ "year": { "$gte": 2000 + n } })));
            }
            let spent = net.nodes[3].ledger(net.now).spent("energy.readings", budget::day_of(net.now), None);
            prop_assert!(spent <= per_querier * (1.0 + 1e-9), "{} > {}", spent, per_querier);
            let charged = (asks as f64).min((per_querier / epsilon * (1.0 + 1e-9)).floor());
            prop_assert!((spent - charged * epsilon).abs() < 1e-6, "{} vs {}", spent, charged * epsilon);
        }
    }
}
