//! The federated scenario (`[federated]`) at a small size: one querier and
//! 30 contacts, with churn and loss. The answer must arrive, its
//! completeness must add up, and the noisy values must lie within 20 noise
//! scales of the exact answer the simulator computes from the records of
//! the accounts that answered; with exact policies only, they must equal it.

use std::path::Path;

use hearth_sim::scenario::Scenario;
use hearth_sim::sim::{FederatedFigures, World};

fn federated(accounts: u32) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/federated-1k.toml");
    let mut s = Scenario::load(&path).expect("a valid scenario");
    s.topology.accounts = accounts;
    s.validate().expect("the smaller scenario is valid");
    s
}

fn run(s: &Scenario, seed: u64) -> FederatedFigures {
    let outcome = World::new(s, seed).expect("the world builds").run();
    for v in &outcome.verdicts {
        assert!(v.passed, "check {} failed: {}", v.name, v.detail);
    }
    let f = outcome.federated.clone().expect("the scenario has a query");
    // The figures come from the result itself.
    assert_eq!(outcome.answers.len(), 1);
    let result = outcome.answers.values().next().expect("one result");
    let c = &result["completeness"];
    let len = |k: &str| c[k].as_array().expect("a list").len() as u64;
    assert_eq!(f.asked, len("asked"), "{result}");
    assert_eq!(f.answered_contacts, len("answered"), "{result}");
    assert_eq!(
        len("asked"),
        len("answered") + len("declined") + len("timed_out") + len("unreachable"),
        "completeness adds up: {result}"
    );
    f
}

#[test]
fn a_noisy_query_over_30_contacts_arrives_complete_and_close_to_the_exact_answer() {
    let s = federated(31);
    for seed in [1, 2, 3] {
        let f = run(&s, seed);
        assert!(f.answered, "seed {seed}: {f:?}");
        assert!(f.completeness_adds_up, "seed {seed}: {f:?}");
        assert_eq!(
            f.asked, f.contacts_at_start,
            "seed {seed}: every contact is asked"
        );
        assert!(f.asked >= 20, "seed {seed}: most contacts were made: {f:?}");
        assert!(
            f.answered_contacts >= 10,
            "seed {seed}: the cohort is met: {f:?}"
        );
        assert_eq!(f.exact, Some(false), "seed {seed}: the answer is noisy");
        let latency = f.latency_ms.unwrap();
        assert!(
            latency > 0.0 && latency <= 30_000.0,
            "seed {seed}: answered within the deadline, {latency} ms"
        );
        assert_eq!(f.errors.len(), 2, "seed {seed}: kwh and n: {f:?}");
        assert_eq!(f.groups.len(), 24, "seed {seed}: 12 months × 2 values");
        for g in &f.groups {
            assert!(g.half_width > 0.0, "seed {seed}: noisy groups: {g:?}");
            let scale = g.half_width / 20f64.ln();
            assert!(
                (g.answer - g.exact).abs() <= 20.0 * scale,
                "seed {seed}: {g:?} is more than 20 noise scales off"
            );
        }
        // Sums over the answering accounts: never more than all records.
        let n_exact: f64 = f
            .groups
            .iter()
            .filter(|g| g.name == "n")
            .map(|g| g.exact)
            .sum();
        assert!(n_exact > 0.0 && n_exact <= f.records as f64, "{f:?}");
    }
}

#[test]
fn with_exact_policies_only_the_answer_is_the_simulators_exact_one() {
    let mut s = federated(31);
    let f = s.federated.as_mut().unwrap();
    f.exact_fraction = 1.0;
    f.no_policy_fraction = 0.0;
    let f = run(&s, 4);
    assert!(f.answered, "{f:?}");
    assert_eq!(f.exact, Some(true), "{f:?}");
    assert_eq!(f.exact_policies, 30);
    assert!(f.answered_contacts >= 10, "{f:?}");
    assert!(!f.groups.is_empty());
    for g in &f.groups {
        assert_eq!(g.answer, g.exact, "{g:?}");
    }
    for e in &f.errors {
        assert_eq!(e.max_abs_error, 0.0, "{e:?}");
    }
}

#[test]
fn accounts_without_a_policy_decline_and_are_counted() {
    let mut s = federated(31);
    s.federated.as_mut().unwrap().no_policy_fraction = 0.5;
    let f = run(&s, 5);
    assert!(f.answered, "{f:?}");
    assert!(f.no_policies > 0, "{f:?}");
    let declined = f.declined_by_reason.get("no-policy").copied().unwrap_or(0);
    assert!(
        declined > 0 && declined <= f.no_policies,
        "declined {declined} of {} without a policy: {f:?}",
        f.no_policies
    );
}

#[test]
fn bad_federated_fields_are_refused_with_the_field_named() {
    let field_of = |s: &Scenario| match s.validate() {
        Err(hearth_sim::scenario::Error::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    let mut s = federated(31);
    s.federated.as_mut().unwrap().querier = 31;
    assert_eq!(field_of(&s), "federated.querier");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().query["scope"] = "devices".into();
    assert_eq!(field_of(&s), "federated.query");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().query["collection"] = "other.readings".into();
    assert_eq!(field_of(&s), "federated.query");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().exact_policy = None;
    assert_eq!(field_of(&s), "federated.exact_policy");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().policy["exact"] = true.into();
    assert_eq!(field_of(&s), "federated.policy");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().policy["min_cohort"] = "ten".into();
    assert_eq!(field_of(&s), "federated.policy");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().query_at_s = 5.0;
    assert_eq!(field_of(&s), "federated.query_at_s");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().records_per_account = 13;
    assert_eq!(field_of(&s), "federated.records_per_account");
    let mut s = federated(31);
    s.federated.as_mut().unwrap().exact_fraction = 0.8;
    s.federated.as_mut().unwrap().no_policy_fraction = 0.5;
    assert_eq!(field_of(&s), "federated.exact_fraction");
    let mut s = federated(31);
    s.workload.collections = vec!["energy.readings".into()];
    assert_eq!(field_of(&s), "federated.collection");
    // Unknown fields are a parse error.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/federated-1k.toml");
    let text = std::fs::read_to_string(path).unwrap() + "\n[federated.extra]\n";
    let text = text.replace("query_at_s = 40", "query_at_s = 40\nbogus = 1");
    assert!(toml::from_str::<Scenario>(&text).is_err());
}
