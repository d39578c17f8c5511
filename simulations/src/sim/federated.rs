//! The scenario's federated query (`[federated]`): the records and consent
//! policies of the answering accounts, written at set-up through the
//! cores' own commands (`Node::put`, `Node::set_consent`),
//! the query started at `query_at_s` on a device of the querier
//! ([`World::query`]), and the figures of its result: completeness, the
//! latency in virtual time, and the error of the answer against the exact
//! one the simulator computes from the records it wrote for the accounts
//! the result says answered.

use std::collections::BTreeMap;

use hearth_crdt::collection::PutMode;
use hearth_crdt::federated::FederatedQuery;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Kind, Time, US_PER_S, World, us};
use crate::check::Verdict;

/// The query is tried again this long after no querier device could act.
const RETRY_S: f64 = 1.0;

/// A step of the federated plan.
#[derive(Debug)]
pub(super) enum Step {
    /// The querier starts the query.
    Start,
}

/// The consent an account was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consent {
    Noisy,
    Exact,
    None,
}

/// What the run planned and saw of the query.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Per account: the records written (empty for the querier).
    records: Vec<Vec<Value>>,
    consent: Vec<Option<Consent>>,
    /// Set-up commands a core refused.
    setup_errors: Vec<String>,
    started: Option<(Time, String)>,
    start_error: Option<String>,
    contacts_at_start: u64,
}

/// How far the answer is from the exact one, for one aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ValueError {
    /// The aggregate's name.
    pub name: String,
    /// Groups compared.
    pub groups: u64,
    /// Mean |answer − exact| over the groups.
    pub mean_abs_error: f64,
    /// Largest |answer − exact|.
    pub max_abs_error: f64,
    /// Mean |answer − exact| / |exact| over the groups whose exact value
    /// is not 0.
    pub mean_relative_error: f64,
    /// Mean noise scale over the groups: the half-width of the answer's
    /// 95 % interval divided by ln 20 (the scale of a Laplace noise with
    /// that interval); 0 for an exact answer.
    pub mean_noise_scale: f64,
    /// Largest |answer − exact| in noise scales (0 when there is no noise).
    pub max_error_in_scales: f64,
}

/// One group of the answer next to the exact value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupValue {
    /// The group's key.
    pub key: Value,
    /// The aggregate.
    pub name: String,
    /// The answer's value.
    pub answer: f64,
    /// The exact value over the accounts that answered.
    pub exact: f64,
    /// The half-width of the value's 95 % interval (the widest over the
    /// groups, see [`Figures::errors`]; 0 when exact).
    pub half_width: f64,
}

/// The federated query's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Accounts asked to consent under the noisy policy.
    pub noisy_policies: u64,
    /// Accounts under the exact policy.
    pub exact_policies: u64,
    /// Accounts with no policy.
    pub no_policies: u64,
    /// Records written to the collection.
    pub records: u64,
    /// Set-up commands a core refused (each is a failure of the run).
    pub setup_errors: Vec<String>,
    /// Why the query could not start, if it did not.
    pub start_error: Option<String>,
    /// The querier's established contacts when it started the query.
    pub contacts_at_start: u64,
    /// When the query started, s of virtual time.
    pub started_s: Option<f64>,
    /// Whether its result came.
    pub answered: bool,
    /// Start → `Output::Answered`, ms of virtual time.
    pub latency_ms: Option<f64>,
    /// Whether the result says it is exact.
    pub exact: Option<bool>,
    /// The ε the noise was drawn for.
    pub epsilon: Option<f64>,
    /// Contacts asked.
    pub asked: u64,
    /// Contacts that answered (exact or contributed).
    pub answered_contacts: u64,
    /// Contacts that declined, all reasons.
    pub declined: u64,
    /// Declines by reason.
    pub declined_by_reason: BTreeMap<String, u64>,
    /// Contacts that timed out.
    pub timed_out: u64,
    /// Contacts that could not be reached.
    pub unreachable: u64,
    /// asked = answered + declined + timed out + unreachable.
    pub completeness_adds_up: bool,
    /// Per aggregate: the error against the exact answer.
    pub errors: Vec<ValueError>,
    /// Every group's value next to the exact one.
    pub groups: Vec<GroupValue>,
}

impl Figures {
    /// The run's check of the query: set up without error, started,
    /// answered, with a completeness that adds up.
    pub fn verdict(&self) -> Verdict {
        let failure = if let Some(e) = self.setup_errors.first() {
            Some(e.clone())
        } else if let Some(e) = &self.start_error {
            Some(format!("the query could not start: {e}"))
        } else if self.started_s.is_none() {
            Some("the query never started (no querier device was up)".to_owned())
        } else if !self.answered {
            Some("the query's result never came".to_owned())
        } else if !self.completeness_adds_up {
            Some(format!(
                "asked {} != answered {} + declined {} + timed out {} + unreachable {}",
                self.asked, self.answered_contacts, self.declined, self.timed_out, self.unreachable
            ))
        } else {
            None
        };
        Verdict {
            name: "federated query",
            passed: failure.is_none(),
            detail: failure.unwrap_or_else(|| {
                format!(
                    "answered in {:.1} ms: {} of {} contacts answered",
                    self.latency_ms.unwrap_or(0.0),
                    self.answered_contacts,
                    self.asked
                )
            }),
        }
    }
}

fn petname_account(name: &str) -> Option<u32> {
    name.strip_prefix("acct-")?.parse().ok()
}

impl World {
    /// Writes every answering account's records and policy, and schedules
    /// the query.
    pub(super) fn schedule_federated(&mut self) {
        let Some(f) = self.scenario.federated.clone() else {
            return;
        };
        let t = &self.scenario.topology;
        let (accounts, per) = (t.accounts, t.devices_per_account);
        let mut plan = Plan {
            records: vec![Vec::new(); accounts as usize],
            consent: vec![None; accounts as usize],
            ..Plan::default()
        };
        let now = self.core_now();
        for a in (0..accounts).filter(|&a| a != f.querier) {
            let me = a * per;
            let mut months: Vec<i64> = (1..=12).collect();
            months.shuffle(&mut self.rng);
            for (i, &month) in months
                .iter()
                .take(f.records_per_account as usize)
                .enumerate()
            {
                let kwh = self.rng.gen_range(f.kwh.min..=f.kwh.max).round() as i64;
                let body = json!({ "year": f.year, "month": month, "kwh": kwh });
                let put = self.nodes[me as usize].core.put(
                    now,
                    &mut self.rng,
                    &f.collection,
                    Some(format!("e{a}-{i}")),
                    body.clone(),
                    PutMode::Upsert,
                );
                match put {
                    Ok((_, out)) => {
                        self.perform(me, None, out);
                        plan.records[a as usize].push(body);
                    }
                    Err(e) => plan.setup_errors.push(format!("put on account {a}: {e}")),
                }
            }
            let draw: f64 = self.rng.r#gen();
            let (consent, policy) = if draw < f.no_policy_fraction {
                (Consent::None, None)
            } else if draw < f.no_policy_fraction + f.exact_fraction {
                (Consent::Exact, f.exact_policy.clone())
            } else {
                (Consent::Noisy, Some(f.policy.clone()))
            };
            plan.consent[a as usize] = Some(consent);
            if let Some(policy) = policy {
                match self.nodes[me as usize]
                    .core
                    .set_consent(now, &f.collection, &policy)
                {
                    Ok((_, out)) => self.perform(me, None, out),
                    Err(e) => plan
                        .setup_errors
                        .push(format!("set_consent on account {a}: {e}")),
                }
            }
        }
        self.federated = plan;
        self.push(us(f.query_at_s), Kind::Federated(Step::Start));
    }

    pub(super) fn federated_step(&mut self, step: Step) {
        match step {
            Step::Start => self.federated_start(),
        }
    }

    fn federated_start(&mut self) {
        let Some(f) = self.scenario.federated.clone() else {
            return;
        };
        let per = self.scenario.topology.devices_per_account;
        let device = (f.querier * per..(f.querier + 1) * per).find(|&d| {
            let n = &self.nodes[d as usize];
            n.online && !n.crashed && n.member && !n.removed
        });
        let Some(device) = device else {
            self.push(us(RETRY_S), Kind::Federated(Step::Start));
            return;
        };
        let start = self.now;
        self.federated.contacts_at_start = self.nodes[device as usize]
            .core
            .contacts()
            .values()
            .filter(|c| c.state() == hearth_crdt::node::contacts::State::Established)
            .count() as u64;
        match self.query(device, &f.query) {
            Ok(id) => self.federated.started = Some((start, id)),
            Err(e) => self.federated.start_error = Some(e.to_string()),
        }
    }

    /// Whether device `node` belongs to the querier (which neither churns
    /// nor crashes).
    pub(super) fn is_querier_device(&self, node: u32) -> bool {
        self.scenario.federated.as_ref().is_some_and(|f| {
            node / self.scenario.topology.devices_per_account == f.querier
                && node
                    < self.scenario.topology.accounts * self.scenario.topology.devices_per_account
        })
    }

    /// The figures of the query, if the scenario has one.
    pub(super) fn federated_figures(&self) -> Option<Figures> {
        let f = self.scenario.federated.as_ref()?;
        let plan = &self.federated;
        let count = |c: Consent| plan.consent.iter().filter(|x| **x == Some(c)).count() as u64;
        let mut fig = Figures {
            noisy_policies: count(Consent::Noisy),
            exact_policies: count(Consent::Exact),
            no_policies: count(Consent::None),
            records: plan.records.iter().map(|r| r.len() as u64).sum(),
            setup_errors: plan.setup_errors.clone(),
            start_error: plan.start_error.clone(),
            contacts_at_start: plan.contacts_at_start,
            ..Figures::default()
        };
        let Some((start, id)) = &plan.started else {
            return Some(fig);
        };
        fig.started_s = Some(*start as f64 / US_PER_S);
        let (Some(result), Some(at)) = (
            self.queries.answers.get(id),
            self.queries.answered_at.get(id),
        ) else {
            return Some(fig);
        };
        fig.answered = true;
        fig.latency_ms = Some((at - start) as f64 / 1_000.0);
        fig.exact = result["exact"].as_bool();
        fig.epsilon = result["noise"]["epsilon"].as_f64();
        let c = &result["completeness"];
        let len = |k: &str| c[k].as_array().map_or(0, Vec::len) as u64;
        fig.asked = len("asked");
        fig.answered_contacts = len("answered");
        fig.declined = len("declined");
        fig.timed_out = len("timed_out");
        fig.unreachable = len("unreachable");
        for d in c["declined"].as_array().into_iter().flatten() {
            let reason = d["reason"].as_str().unwrap_or("?").to_owned();
            *fig.declined_by_reason.entry(reason).or_default() += 1;
        }
        fig.completeness_adds_up =
            fig.asked == fig.answered_contacts + fig.declined + fig.timed_out + fig.unreachable;
        // The exact answer over the records of the accounts that answered.
        let mut records = Vec::new();
        for name in c["answered"].as_array().into_iter().flatten() {
            match name.as_str().and_then(petname_account) {
                Some(a) if (a as usize) < plan.records.len() => {
                    records.extend(plan.records[a as usize].iter());
                }
                _ => fig
                    .setup_errors
                    .push(format!("the result names an unknown contact {name}")),
            }
        }
        let truth = FederatedQuery::parse(&f.query)
            .map_err(|e| e.to_string())
            .and_then(|q| {
                hearth_crdt::query::aggregate(&q.request, records)
                    .map(|a| a.to_json())
                    .map_err(|e| e.to_string())
            });
        let truth = match truth {
            Ok(t) => t,
            Err(e) => {
                fig.setup_errors.push(format!("the exact answer: {e}"));
                return Some(fig);
            }
        };
        let exact_groups: BTreeMap<String, &Value> = truth["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| (g["key"].to_string(), &g["values"]))
            .collect();
        let intervals: BTreeMap<String, &Value> = result["noise"]["intervals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| (g["key"].to_string(), &g["values"]))
            .collect();
        let mut per_value: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
        for g in result["groups"].as_array().into_iter().flatten() {
            let key = g["key"].to_string();
            let Some(values) = g["values"].as_object() else {
                continue;
            };
            for (name, v) in values {
                let Some(answer) = v.as_f64() else {
                    continue;
                };
                // A group no answering account holds is 0 (count, sum).
                let exact = exact_groups
                    .get(&key)
                    .and_then(|e| e[name.as_str()].as_f64())
                    .unwrap_or(0.0);
                let half_width = intervals
                    .get(&key)
                    .and_then(|i| {
                        let r = &i[name.as_str()];
                        Some((r[1].as_f64()? - r[0].as_f64()?) / 2.0)
                    })
                    .unwrap_or(0.0);
                per_value
                    .entry(name.clone())
                    .or_default()
                    .push((answer, exact, half_width));
                fig.groups.push(GroupValue {
                    key: g["key"].clone(),
                    name: name.clone(),
                    answer,
                    exact,
                    half_width,
                });
            }
        }
        // The noise of a value is the same in every cell, but the core
        // clamps a count's interval at 0 (and a noisy count below 0 gives
        // an interval [0, n + k] with n + k < 0): each value's half-width
        // is the widest over its groups.
        for rows in per_value.values_mut() {
            let widest = rows.iter().map(|r| r.2).fold(0.0, f64::max);
            for r in rows.iter_mut() {
                r.2 = widest;
            }
        }
        for g in &mut fig.groups {
            if let Some(rows) = per_value.get(&g.name) {
                g.half_width = rows.first().map_or(0.0, |r| r.2);
            }
        }
        for (name, rows) in per_value {
            let n = rows.len() as f64;
            let abs: Vec<f64> = rows.iter().map(|(a, e, _)| (a - e).abs()).collect();
            let rel: Vec<f64> = rows
                .iter()
                .filter(|(_, e, _)| *e != 0.0)
                .map(|(a, e, _)| (a - e).abs() / e.abs())
                .collect();
            let scales: Vec<f64> = rows.iter().map(|(_, _, h)| h / 20f64.ln()).collect();
            let in_scales = abs
                .iter()
                .zip(&scales)
                .filter(|(_, s)| **s > 0.0)
                .map(|(a, s)| a / s)
                .fold(0.0, f64::max);
            fig.errors.push(ValueError {
                name,
                groups: rows.len() as u64,
                mean_abs_error: abs.iter().sum::<f64>() / n,
                max_abs_error: abs.iter().copied().fold(0.0, f64::max),
                mean_relative_error: if rel.is_empty() {
                    0.0
                } else {
                    rel.iter().sum::<f64>() / rel.len() as f64
                },
                mean_noise_scale: scales.iter().sum::<f64>() / n,
                max_error_in_scales: in_scales,
            });
        }
        Some(fig)
    }
}
