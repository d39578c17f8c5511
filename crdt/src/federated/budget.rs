//! The ε ledger: what each querier has spent on each collection today.
//!
//! Every noisy answer is charged before it leaves. A [`Charge`] names the
//! collection, the querier account, the canonical query's key and the UTC
//! day; the node keeps the charges in a reserved collection, so the
//! ledger is one for the account and replicates to all its devices, and
//! writes a charge durably before the contribution it pays for is sent.
//!
//! The same canonical query from the same querier on the same day costs
//! nothing again: the charge holds the contribution it paid for, and a
//! repeat is answered with exactly that contribution ([`Ledger::prior`]),
//! so asking again cannot average the noise away.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Decline;
use super::policy::Policy;
use crate::node::Millis;

const DAY_MS: Millis = 86_400_000;

/// The UTC day of `now`: the budget window.
pub fn day_of(now: Millis) -> i64 {
    now.div_euclid(DAY_MS)
}

/// One noisy answer's cost, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// The collection answered from.
    pub collection: String,
    /// The querier's account id.
    pub querier: String,
    /// The canonical query's key ([`super::FederatedQuery::key`]).
    pub key: String,
    /// The UTC day charged ([`day_of`]).
    pub day: i64,
    /// The ε spent.
    pub epsilon: f64,
    /// When, in the node's time.
    pub at: Millis,
    /// The device that answered.
    pub device: String,
    /// The bounded contribution this charge paid for, as decimal integers,
    /// so a repeat sends the very same numbers.
    pub contribution: Vec<String>,
}

impl Charge {
    /// The ledger key of this charge: one per collection, querier, query and
    /// day.
    pub fn id(&self) -> String {
        ledger_id(&self.collection, &self.querier, &self.key, self.day)
    }
}

fn ledger_id(collection: &str, querier: &str, key: &str, day: i64) -> String {
    let hash = blake3::hash(format!("{collection}\n{querier}\n{key}\n{day}").as_bytes());
    hash.to_hex()[..32].to_owned()
}

/// The charges an account has made, by [`Charge::id`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    charges: BTreeMap<String, Charge>,
}

impl Ledger {
    /// A ledger of these charges (a repeated id keeps the earliest).
    pub fn new(charges: impl IntoIterator<Item = Charge>) -> Ledger {
        let mut ledger = Ledger::default();
        for charge in charges {
            ledger.record(charge);
        }
        ledger
    }

    /// Adds a charge; of two charges with one id (two devices answering the
    /// same repeat apart) the earlier stands.
    pub fn record(&mut self, charge: Charge) {
        let id = charge.id();
        match self.charges.get(&id) {
            Some(old) if (old.at, &old.device) <= (charge.at, &charge.device) => {}
            _ => {
                self.charges.insert(id, charge);
            }
        }
    }

    /// Every charge, by id.
    pub fn charges(&self) -> impl Iterator<Item = &Charge> {
        self.charges.values()
    }

    /// ε spent on `collection` on `day`, by `querier` or by everyone.
    pub fn spent(&self, collection: &str, day: i64, querier: Option<&str>) -> f64 {
        self.charges
            .values()
            .filter(|c| c.collection == collection && c.day == day)
            .filter(|c| querier.is_none_or(|q| c.querier == q))
            .map(|c| c.epsilon)
            .sum()
    }

    /// The charge already paid for this query today, if any.
    pub fn prior(
        &self,
        collection: &str,
        querier: &str,
        key: &str,
        now: Millis,
    ) -> Option<&Charge> {
        self.charges
            .get(&ledger_id(collection, querier, key, day_of(now)))
    }

    /// Whether `policy`'s budgets leave room for `epsilon` more from
    /// `querier` today; declined with [`Decline::Budget`] otherwise.
    pub fn allows(
        &self,
        policy: &Policy,
        collection: &str,
        querier: &str,
        now: Millis,
        epsilon: f64,
    ) -> Result<(), Decline> {
        let Some(budget) = &policy.budget else {
            return Ok(());
        };
        let day = day_of(now);
        // A tolerance for the float sum of equal charges (8 × 0.1 ≤ 0.8).
        let fits = |spent: f64, limit: f64| spent + epsilon <= limit * (1.0 + 1e-9);
        if !fits(
            self.spent(collection, day, Some(querier)),
            budget.per_querier_per_day,
        ) {
            return Err(Decline::Budget {
                detail: format!(
                    "this querier's ε for today ({} of {}) is spent",
                    self.spent(collection, day, Some(querier)),
                    budget.per_querier_per_day
                ),
            });
        }
        if !fits(self.spent(collection, day, None), budget.per_day) {
            return Err(Decline::Budget {
                detail: format!(
                    "today's ε for {collection} ({} of {}) is spent",
                    self.spent(collection, day, None),
                    budget.per_day
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn policy(per_querier: f64, per_day: f64, epsilon: f64) -> Policy {
        Policy::parse(&json!({
            "queriers": "contacts", "aggregates": ["$count"], "epsilon_per_query": epsilon,
            "budget": { "per_querier_per_day": per_querier, "per_day": per_day }
        }))
        .unwrap()
    }

    fn charge(querier: &str, key: &str, at: Millis, epsilon: f64) -> Charge {
        Charge {
            collection: "energy".into(),
            querier: querier.into(),
            key: key.into(),
            day: day_of(at),
            epsilon,
            at,
            device: "d1".into(),
            contribution: vec!["1".into()],
        }
    }

    #[test]
    fn budgets_hold_per_querier_and_per_day_and_reset_at_midnight() {
        let p = policy(2.0, 3.0, 1.0);
        let mut ledger = Ledger::default();
        let noon = 12 * 3_600_000;
        for key in ["q1", "q2"] {
            ledger.allows(&p, "energy", "alice", noon, 1.0).unwrap();
            ledger.record(charge("alice", key, noon, 1.0));
        }
        let err = ledger.allows(&p, "energy", "alice", noon, 1.0).unwrap_err();
        assert_eq!(err.reason(), "budget");
        ledger.allows(&p, "energy", "bob", noon, 1.0).unwrap();
        ledger.record(charge("bob", "q1", noon, 1.0));
        let err = ledger.allows(&p, "energy", "carol", noon, 1.0).unwrap_err();
        assert!(err.to_string().contains("today's ε for energy"), "{err}");
        ledger
            .allows(&p, "energy", "alice", DAY_MS + 1, 1.0)
            .unwrap();
        assert!(ledger.prior("energy", "alice", "q1", noon + 1).is_some());
        assert!(ledger.prior("energy", "alice", "q1", DAY_MS).is_none());
    }

    #[test]
    fn of_two_charges_for_one_repeat_the_earlier_stands() {
        let mut ledger = Ledger::default();
        let mut late = charge("alice", "q", 20, 1.0);
        late.contribution = vec!["2".into()];
        ledger.record(late);
        ledger.record(charge("alice", "q", 10, 1.0));
        assert_eq!(ledger.charges().count(), 1);
        assert_eq!(
            ledger
                .prior("energy", "alice", "q", 30)
                .unwrap()
                .contribution,
            vec!["1"]
        );
    }

    proptest! {
        /// However queries arrive, a ledger that charges only what
        /// `allows` lets through never spends more than the policy.
        #[test]
        fn charged_never_exceeds_the_policy(
            asks in proptest::collection::vec((0usize..3, 0u8..6, 0u32..3), 1..80),
            epsilon in 0.1f64..2.0,
            per_querier in 0.0f64..5.0,
            per_day in 0.0f64..8.0,
        ) {
            let p = policy(per_querier, per_day, epsilon);
            let mut ledger = Ledger::default();
            let queriers = ["alice", "bob", "carol"];
            for (q, key, day) in asks {
                let at = Millis::from(day) * DAY_MS + 1000;
                let key = format!("q{key}");
                if ledger.prior("energy", queriers[q], &key, at).is_some() {
                    continue;
                }
                if ledger.allows(&p, "energy", queriers[q], at, epsilon).is_ok() {
                    ledger.record(charge(queriers[q], &key, at, epsilon));
                }
            }
            for day in 0..3 {
                let total = ledger.spent("energy", day, None);
                prop_assert!(total <= per_day * (1.0 + 1e-9), "day {day}: {total} > {per_day}");
                for q in queriers {
                    let spent = ledger.spent("energy", day, Some(q));
                    prop_assert!(spent <= per_querier * (1.0 + 1e-9));
                }
            }
        }
    }
}
