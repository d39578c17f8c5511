//! P14: the accuracy of a noisy federated mean at equal ε, secure sum with
//! the noise added once against every contact noising its own answer.
//!
//! Both sides run the core's own mechanism: each of N accounts judges the
//! query by its policy (the value clamped to [0, 300], ε = 1, one record
//! per account) and computes its bounded contribution with
//! [`contribution::contribute`]. The secure sum splits every contribution
//! into two additive shares ([`secret::split`]), sums each aggregator's
//! shares and adds one geometric half per aggregator ([`noise::half`]), as
//! the aggregators do. The baseline (local differential privacy) adds one
//! whole discrete Laplace sample of the same scale to each account's own
//! vector ([`noise::sample`]) before the querier sums them. The mean comes
//! out of [`answer::assemble`] either way (a noisy count below 1 counted as
//! 1), and its absolute error against
//! the exact mean of the clamped values is averaged over the trials.
//!
//! The transport does not change the numbers, so none is used here; the
//! simulator's federated scenario runs the same query over its virtual
//! network for completeness and latency.

use anyhow::{Context, Result};
use ethnum::{I256, U256};
use hearth_crdt::federated::answer::{self, Release};
use hearth_crdt::federated::contribution::{self, Contribution};
use hearth_crdt::federated::noise::{self, Half};
use hearth_crdt::federated::{FederatedQuery, Policy, secret};
use hearth_crdt::query::SCALE;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::report::Outcome;

/// Trials per N.
const TRIALS: usize = 200;

/// One trial's absolute errors: (secure sum, local noise).
fn trial(n: usize, rng: &mut StdRng) -> Result<(f64, f64)> {
    let query = FederatedQuery::parse(&json!({
        "collection": "energy.readings",
        "aggregate": { "kwh": { "$avg": "kwh" } },
    }))?;
    let policy = Policy::parse(&json!({
        "queriers": "contacts", "aggregates": ["$avg"],
        "fields": { "kwh": { "min": 0, "max": 300 } },
        "exact": false, "min_cohort": 1, "epsilon_per_query": 1.0,
    }))?;
    let terms = policy
        .judge(&query.request, &query.selector)
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    let noise = terms.noise.clone().context("noisy terms carry noise")?;
    let mut exact_sum = 0.0;
    let mut shares = [Vec::new(), Vec::new()];
    let mut local: Vec<I256> = Vec::new();
    for _ in 0..n {
        // Some values fall outside the bounds and are clamped.
        let kwh: f64 = rng.gen_range(-20.0..330.0);
        exact_sum += kwh.clamp(0.0, 300.0);
        let record = json!({ "_id": "r", "kwh": kwh });
        let Contribution::Bounded(vector) =
            contribution::contribute(&query.request, &terms, [&record])?
        else {
            anyhow::bail!("a noisy policy gave an exact contribution");
        };
        for (i, share) in secret::split(&vector, 2, rng).into_iter().enumerate() {
            if shares[i].is_empty() {
                shares[i] = vec![U256::ZERO; share.len()];
            }
            secret::add_into(&mut shares[i], &share);
        }
        if local.is_empty() {
            local = vec![I256::ZERO; vector.len()];
        }
        for (slot, (sum, v)) in local.iter_mut().zip(&vector).enumerate() {
            *sum += *v + noise::sample(&noise[slot % noise.len()], rng);
        }
    }
    let mut central = vec![I256::ZERO; local.len()];
    for (index, sum) in shares.iter_mut().enumerate() {
        let halves: Vec<I256> = (0..sum.len())
            .map(|slot| noise::half(&noise[slot % noise.len()], Half::of(index), rng))
            .collect();
        secret::add_signed(sum, &halves);
        for (c, s) in central.iter_mut().zip(sum.iter()) {
            *c = c.wrapping_add(s.as_i256());
        }
    }
    let exact = exact_sum / n as f64;
    // The mean as the querier's answer gives it, with the one
    // post-processing both sides get: a noisy count below 1 (which local
    // noise produces now and then at small N) counts as 1. The mean is not
    // clamped to the bounds, as the answer does not clamp it.
    let mean_of = |totals: Vec<I256>| -> Result<f64> {
        let release = Release {
            grid: terms.grid.clone(),
            totals: totals.clone(),
            noise: noise.clone(),
            accounts: n,
            epsilon: terms.epsilon,
        };
        let result = answer::assemble(&query.request, None, &[release]);
        if let Some(mean) = result["groups"][0]["values"]["kwh"].as_f64()
            && totals[0] >= I256::ONE
        {
            return Ok(mean);
        }
        let count = totals[0].as_f64().max(1.0);
        Ok(totals[1].as_f64() / SCALE as f64 / count)
    };
    Ok((
        (mean_of(central)? - exact).abs(),
        (mean_of(local)? - exact).abs(),
    ))
}

pub(crate) fn run(seed: u64) -> Result<Outcome> {
    let mut outcome = Outcome::new(
        "P14",
        "noisy federated mean at ε = 1: secure sum vs each contact noising its own answer",
    );
    let mut rng = StdRng::seed_from_u64(seed);
    for n in [32usize, 1000] {
        let (mut central, mut local) = (0.0, 0.0);
        for _ in 0..TRIALS {
            let (c, l) = trial(n, &mut rng)?;
            central += c;
            local += l;
        }
        central /= TRIALS as f64;
        local /= TRIALS as f64;
        outcome.figure(format!("N={n}: mean abs error, secure sum"), central, "kWh");
        outcome.figure(
            format!("N={n}: mean abs error, local noise (baseline)"),
            local,
            "kWh",
        );
        let ratio = central / local;
        outcome.figure(format!("N={n}: secure sum / local"), ratio, "×");
        let bound = 1.0 / (n as f64).sqrt();
        outcome.at_most(
            format!("N={n}: secure-sum error / local error"),
            ratio,
            bound,
            format!("≤ 1/√N = {bound:.4}"),
        );
    }
    outcome.note(format!(
        "{TRIALS} trials per N; values uniform in [-20, 330) kWh, clamped to [0, 300]; one record per account"
    ));
    Ok(outcome)
}
